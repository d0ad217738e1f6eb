//! Driving the machine with the library's effects.

use core::sync::atomic::{AtomicU64, Ordering};

use vmsa::effects::{Barrier, CacheOp, Effect, Effects, PageEvent, SysReg};
use vmsa::tlbi::TlbiOp;
use vmsa::Pa;

use super::Machine;
use crate::event::{Event, Origin};

/// An [`Effects`] implementation that performs descriptor stores (so the
/// library's tables work as usual) and feeds every effect to a
/// [`Machine`] as issued by one PE.
///
/// ```
/// use vmsa_model::{Config, Machine, ModelEffects};
/// let mut machine = Machine::new(Config::default());
/// let mut fx = ModelEffects::new(&mut machine, 0);
/// // ... pass `&mut fx` to vmsa table operations ...
/// # let _ = &mut fx;
/// ```
pub struct ModelEffects<'m> {
    machine: &'m mut Machine,
    pe: usize,
    oracle: bool,
}

impl<'m> ModelEffects<'m> {
    /// Effects issued by PE `pe` of `machine`.
    pub fn new(machine: &'m mut Machine, pe: usize) -> Self {
        ModelEffects {
            machine,
            pe,
            oracle: false,
        }
    }

    /// Like [`new`](Self::new), but every `DSB ISH` or `DSB NSH` also removes every
    /// stale entry from every PE ([`Machine::oracle_clean`]): the
    /// unrealizable perfect invalidation, a lower bound for comparisons.
    pub fn oracle(machine: &'m mut Machine, pe: usize) -> Self {
        ModelEffects {
            machine,
            pe,
            oracle: true,
        }
    }

    /// The machine.
    pub fn machine(&mut self) -> &mut Machine {
        self.machine
    }

    fn step(&mut self, event: Event) {
        let seq = self.machine.seq + 1;
        self.machine.step(self.pe, &event, Origin { seq, line: 0 });
    }
}

/// The model event for one recorded library effect (`None` for effects the
/// model does not track: cache maintenance).
pub fn event_of(effect: &Effect) -> Option<Event> {
    Some(match *effect {
        Effect::Store { pa, new, .. } => Event::Write {
            pa: pa.0,
            value: new,
            release: false,
        },
        Effect::Barrier(b) => Event::Barrier(b.into()),
        Effect::Tlbi { op, operand } => Event::Tlbi { op, operand },
        Effect::SysReg { reg, value } => Event::SysReg {
            reg: reg.into(),
            value,
        },
        Effect::Cache { .. } => return None,
        Effect::Page(PageEvent::Init { pa, bytes }) => Event::MemInit {
            pa: pa.0,
            size: bytes,
        },
        Effect::Page(PageEvent::Release { pa, bytes }) => Event::Release {
            pa: pa.0,
            size: bytes,
        },
    })
}

impl Machine {
    /// Feeds a recorded effect log to the machine as issued by PE `pe`.
    pub fn replay(&mut self, pe: usize, effects: &[Effect]) {
        for e in effects {
            if let Some(ev) = event_of(e) {
                let seq = self.seq + 1;
                self.step(pe, &ev, Origin { seq, line: 0 });
            }
        }
    }
}

impl Effects for ModelEffects<'_> {
    fn store_descriptor(&mut self, slot: &AtomicU64, at: Pa, new: u64) {
        slot.store(new, Ordering::Release);
        // `Event::Write { pa: at.0, value: new, release: false }`, by the
        // short path.
        let seq = self.machine.seq + 1;
        self.machine
            .step_write(self.pe, at.0, new, Origin { seq, line: 0 });
    }

    fn store_descriptors(&mut self, slots: &[AtomicU64], at: Pa, first: u64, step: u64) {
        let mut value = first;
        for slot in slots {
            slot.store(value, Ordering::Release);
            value = value.wrapping_add(step);
        }
        self.machine
            .step_write_run(self.pe, at.0, slots.len(), first, step);
    }

    fn compare_exchange_descriptor(
        &mut self,
        slot: &AtomicU64,
        at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        slot.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)?;
        // `Event::Write { pa: at.0, value: new, release: true }`.
        let seq = self.machine.seq + 1;
        self.machine
            .step_write(self.pe, at.0, new, Origin { seq, line: 0 });
        Ok(())
    }

    fn barrier(&mut self, barrier: Barrier) {
        self.step(Event::Barrier(barrier.into()));
        if self.oracle && matches!(barrier, Barrier::DsbIsh | Barrier::DsbNsh) {
            self.machine.oracle_clean();
        }
    }

    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        self.step(Event::Tlbi { op, operand });
    }

    fn write_sysreg(&mut self, reg: SysReg, value: u64) {
        self.step(Event::SysReg {
            reg: reg.into(),
            value,
        });
    }

    fn cache(&mut self, _op: CacheOp, _addr: u64) {}

    fn page_event(&mut self, event: PageEvent) {
        self.step(match event {
            PageEvent::Init { pa, bytes } => Event::MemInit {
                pa: pa.0,
                size: bytes,
            },
            PageEvent::Release { pa, bytes } => Event::Release {
                pa: pa.0,
                size: bytes,
            },
        });
    }
}
