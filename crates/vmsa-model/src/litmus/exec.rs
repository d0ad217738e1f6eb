//! One PE executing one instruction: registers, memory, exceptions, and
//! the translations the model allows at each access.
//!
//! Memory is sequentially consistent (the interleaving is the order);
//! translation is where the model's freedom is:
//!
//! - every entry [`Machine::may_translate`] says the PE may still hold
//!   (the tables' own, and stale ones not yet invalidated by a completed
//!   TLBI);
//! - a walk satisfied early, from table memory as it was at any point
//!   since the PE's last context synchronization event (ISB, exception
//!   entry, ERET), but not before the values its address depends on were
//!   read. A context synchronization event makes the PE's own earlier
//!   stores visible to its later walks only if a DSB came between them;
//!   without it the walk may still read the old descriptor.
//!
//! A valid entry from such an early walk that the model no longer lets the
//! PE hold was removed by a completed TLBI: only the TLBI's own PE may
//! still use it (the access can be ordered before the TLBI completes); an
//! access of another PE performed after the completion cannot.
//!
//! With stage 2 enabled an EL0/EL1 access is translated at stage 1 and the
//! IPA at stage 2, each with the choices above; the stage 1 walk's own
//! table reads are not translated at stage 2 (the tables are mapped at the
//! same IPA). EL2 runs with its MMU off.

use std::collections::BTreeMap;

use super::asm::{AluOp, Cond, Instr, Offset, Operand, SysReg, ZR};
use super::parse::Test;
use super::Error;
use crate::desc::{decode, entry_size, grant, Decoded, Stage};
use crate::event::{Barrier, Event, Reg};
use crate::{Key, Machine, Origin};

/// A store in the order memory saw it.
#[derive(Clone, Copy, Debug, Hash)]
pub struct Store {
    /// Location.
    pub pa: u64,
    /// The value it replaced.
    pub old: u64,
    /// The storing PE.
    pub pe: usize,
}

/// One thread's architectural state.
#[derive(Clone, Debug, Hash)]
pub struct Thread {
    /// Next instruction (`None`: finished).
    pub pc: Option<u64>,
    /// X0 to X30.
    pub x: [u64; 31],
    /// For each register, the length of the store log when the loads its
    /// value depends on were performed (0: no load).
    pub dep: [usize; 31],
    /// NZCV.
    pub nzcv: u8,
    /// Current exception level.
    pub el: u8,
    /// `PSTATE.SP`.
    pub sp: bool,
    /// System registers, indexed by [`SysReg`] as `usize`.
    pub sys: [u64; SysReg::ALL.len()],
    /// Walks may read table memory as it was from this point of the store
    /// log on.
    pub walk_lb: usize,
    /// The store log's length at the PE's last DSB.
    pub dsb_mark: usize,
    /// Instructions executed.
    pub steps: u32,
    /// A TLBI issued and not yet completed by a DSB.
    pub tlbi_pending: bool,
    /// The store log's length when the PE last completed its own TLBI.
    pub tlbi_done: Option<usize>,
    /// Table descriptors it read as another PE wrote them, since its last
    /// DSB.
    pub observed: Vec<u64>,
}

/// The whole machine at one point of an interleaving.
#[derive(Clone)]
pub struct State {
    /// The TLB model.
    pub machine: Machine,
    /// Memory (64-bit words by physical address).
    pub mem: BTreeMap<u64, u64>,
    /// Every store, in memory order.
    pub log: Vec<Store>,
    /// The threads.
    pub threads: Vec<Thread>,
    /// Events given to the machine.
    pub events: u64,
    /// Stage 2 translation is enabled.
    pub stage2: bool,
    /// The table pages.
    pub tables: std::rc::Rc<std::collections::BTreeSet<u64>>,
    /// What happened, for witnesses.
    pub trace: Vec<String>,
}

/// A translation choice.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Choice {
    /// Output address and grants, or a fault.
    out: Option<(u64, u8)>,
    /// Level of the leaf or of the faulting descriptor (3 for TLB
    /// entries, whose level the fault status does not need).
    level: u8,
    /// Where it came from.
    why: String,
}

/// Where an access goes.
#[derive(Clone, Debug)]
enum Resolved {
    /// To memory at `pa`.
    Access {
        /// Physical address.
        pa: u64,
        /// The translations used.
        why: String,
    },
    /// A fault (at stage 2 with the faulting IPA).
    Fault {
        /// Which fault.
        what: &'static str,
        /// The fault status code (ESR_ELx.ISS.DFSC).
        dfsc: u64,
        /// For a stage 2 fault, the IPA.
        ipa: Option<u64>,
        /// The translations used.
        why: String,
    },
}

impl Resolved {
    fn same(&self, o: &Resolved) -> bool {
        match (self, o) {
            (Resolved::Access { pa: a, .. }, Resolved::Access { pa: b, .. }) => a == b,
            (
                Resolved::Fault {
                    dfsc: a, ipa: x, ..
                },
                Resolved::Fault {
                    dfsc: b, ipa: y, ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

/// The code of a run: every instruction by address.
pub struct Code {
    /// Instruction and its text by address.
    pub at: BTreeMap<u64, (Instr, String)>,
}

impl Code {
    /// The code of `test` with thread programs replaced by `programs`.
    pub fn new(test: &Test, programs: &[super::asm::Block]) -> Code {
        let mut at = BTreeMap::new();
        for b in test.sections.iter().chain(programs) {
            for (i, (ins, text)) in b.code.iter().zip(&b.text).enumerate() {
                at.insert(b.base + 4 * i as u64, (*ins, text.clone()));
            }
        }
        Code { at }
    }
}

/// DFSC of a translation fault (the level in the low bits).
const TRANSLATION_FAULT: u64 = 0b00_0100;
/// DFSC of a permission fault.
const PERMISSION_FAULT: u64 = 0b00_1100;

/// At most this many instructions per thread; a longer run is cut.
pub const MAX_STEPS: u32 = 80;

impl State {
    /// The initial state of `test`: tables written and installed on every
    /// PE, registers from the reset values.
    pub fn initial(test: &Test) -> State {
        let pes = test.threads.len();
        let mut s = State {
            machine: Machine::new(crate::Config {
                pes,
                ..crate::Config::default()
            }),
            mem: test.layout.mem.clone(),
            log: Vec::new(),
            threads: Vec::new(),
            events: 0,
            stage2: test.layout.stage2,
            tables: std::rc::Rc::new(test.layout.tables.clone()),
            trace: Vec::new(),
        };
        for &page in &test.layout.tables {
            s.event(
                0,
                Event::MemInit {
                    pa: page,
                    size: 4096,
                },
            );
        }
        let writes: Vec<(u64, u64)> = test
            .layout
            .mem
            .iter()
            .filter(|(pa, v)| test.layout.tables.contains(&(**pa & !0xfff)) && **v != 0)
            .map(|(a, v)| (*a, *v))
            .collect();
        for (pa, value) in writes {
            s.event(
                0,
                Event::Write {
                    pa,
                    value,
                    release: false,
                },
            );
        }
        for (n, spec) in test.threads.iter().enumerate() {
            let mut sys = [0; SysReg::ALL.len()];
            sys[SysReg::Ttbr0El1 as usize] = super::setup::ROOT;
            if s.stage2 {
                sys[SysReg::VttbrEl2 as usize] = super::setup::S2_ROOT;
            }
            for &(r, v) in &spec.sys {
                sys[r as usize] = v;
            }
            if s.stage2 {
                // VTCR_EL2: T0SZ 16 (48-bit IPA), SL0 2 (start at level 0).
                s.event(
                    n,
                    Event::SysReg {
                        reg: Reg::VtcrEl2,
                        value: 16 | 2 << 6,
                    },
                );
                s.event(
                    n,
                    Event::SysReg {
                        reg: Reg::VttbrEl2,
                        value: sys[SysReg::VttbrEl2 as usize],
                    },
                );
            }
            s.event(
                n,
                Event::SysReg {
                    reg: Reg::TcrEl1,
                    value: 16,
                },
            );
            s.event(
                n,
                Event::SysReg {
                    reg: Reg::Ttbr0El1,
                    value: sys[SysReg::Ttbr0El1 as usize],
                },
            );
            s.threads.push(Thread {
                pc: Some(spec.block.base),
                x: spec.regs,
                dep: [0; 31],
                nzcv: 0,
                el: spec.el,
                sp: spec.sp,
                sys,
                walk_lb: 0,
                dsb_mark: 0,
                steps: 0,
                tlbi_pending: false,
                tlbi_done: None,
                observed: Vec::new(),
            });
        }
        s
    }

    /// A hash of everything that decides what can happen from here on
    /// (not the trace, nor the machine's sequence numbers).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.mem.hash(&mut h);
        self.log.hash(&mut h);
        self.threads.hash(&mut h);
        self.machine.fingerprint(&mut h);
        h.finish()
    }

    fn event(&mut self, pe: usize, e: Event) {
        self.events += 1;
        self.machine.step(
            pe,
            &e,
            Origin {
                seq: self.events,
                line: 0,
            },
        );
    }

    fn read(&self, pa: u64) -> u64 {
        self.mem.get(&pa).copied().unwrap_or(0)
    }

    /// The word at `pa` as memory held it when the log had `k` stores.
    fn read_at(&self, k: usize, pa: u64) -> u64 {
        self.log[k..]
            .iter()
            .find(|s| s.pa == pa)
            .map_or_else(|| self.read(pa), |s| s.old)
    }

    /// A walk of `va` from `root` (tables of `stage`) in memory as of `k`
    /// stores.
    /// Returns the output and grants (`None`: a translation fault) and the
    /// level where the walk ended.
    fn walk_at(&self, k: usize, stage: Stage, root: u64, va: u64) -> (Option<(u64, u8)>, u8) {
        let mut table = root;
        for level in 0..=3u8 {
            let shift = 12 + 9 * (3 - level as u32);
            let d = self.read_at(k, table + ((va >> shift) & 0x1ff) * 8);
            match decode(stage, level, d) {
                Decoded::Fault => return (None, level),
                Decoded::Table { next } => table = next,
                Decoded::Leaf(l) => {
                    return (
                        Some((l.oa + (va & (entry_size(level) - 1)), l.grants)),
                        level,
                    )
                }
            }
        }
        (None, 3)
    }

    /// Every translation PE `t` may use for `va` in the EL1&0 stage 1
    /// regime (`stage` [`Stage::El1Stage1`]) or for the IPA `va` at stage 2
    /// ([`Stage::Stage2`]), walks not earlier than store `lb`.
    fn translations(&self, t: usize, stage: Stage, va: u64, lb: usize) -> Vec<Choice> {
        let th = &self.threads[t];
        let vttbr = th.sys[SysReg::VttbrEl2 as usize];
        let vmid = (vttbr >> 48) as u16;
        let (key, ttbr) = if stage == Stage::Stage2 {
            (Key::Vmid(vmid), vttbr)
        } else {
            let ttbr = th.sys[SysReg::Ttbr0El1 as usize];
            let asid = (ttbr >> 48) as u16;
            (Key::Asid { vmid, asid }, ttbr)
        };
        let root = ttbr & 0x0000_ffff_ffff_f000;
        let mut out: Vec<Choice> = Vec::new();
        let add = |out: &mut Vec<Choice>, (c, level): (Option<(u64, u8)>, u8), why: String| {
            // Faults at different levels differ in their syndrome.
            if !out
                .iter()
                .any(|o| o.out == c && (c.is_some() || o.level == level))
            {
                out.push(Choice { out: c, level, why });
            }
        };
        let now = self.walk_at(self.log.len(), stage, root, va);
        add(&mut out, now, "the tables".into());
        let held = self.machine.may_translate(t, key, va);
        for &(pa, g) in &held {
            add(
                &mut out,
                (Some((pa, g)), 3),
                format!("a TLB entry the model says it may hold (-> {pa:#x})"),
            );
        }
        for k in (lb.min(self.log.len())..self.log.len()).rev() {
            let early = self.walk_at(k, stage, root, va);
            // A valid entry the model no longer lets the PE hold was
            // removed by a completed TLBI. A TLBI completes only once every
            // access translated by the entries it removes has been
            // performed, so this access (performed now) cannot use it,
            // unless the TLBI was this PE's own and the walk came before it
            // in program order.
            if let (Some(e), _) = early {
                let own = th.tlbi_done.is_some_and(|d| d >= k);
                if !held.contains(&e) && !own {
                    continue;
                }
            }
            add(
                &mut out,
                early,
                format!("a walk that read the tables before store {}", k + 1),
            );
        }
        out
    }

    /// Every way PE `t`'s access to `va` may go: through stage 1 and, when
    /// enabled, stage 2 (EL2 runs with its MMU off: the VA is the PA).
    fn resolve(&self, t: usize, va: u64, lb: usize, store: bool) -> Vec<Resolved> {
        let el = self.threads[t].el;
        if el == 2 {
            return vec![Resolved::Access {
                pa: va,
                why: "EL2, MMU off".into(),
            }];
        }
        let need = match (store, el) {
            (false, 0) => grant::EL0_READ,
            (true, 0) => grant::EL0_WRITE,
            (false, _) => grant::READ,
            (true, _) => grant::WRITE,
        };
        let need2 = if store { grant::WRITE } else { grant::READ };
        let mut out: Vec<Resolved> = Vec::new();
        let mut add = |r: Resolved| {
            if !out.iter().any(|o| o.same(&r)) {
                out.push(r);
            }
        };
        for c1 in self.translations(t, Stage::El1Stage1, va, lb) {
            let Some((ipa, g)) = c1.out else {
                add(Resolved::Fault {
                    what: "stage 1 translation",
                    dfsc: TRANSLATION_FAULT | c1.level as u64,
                    ipa: None,
                    why: c1.why,
                });
                continue;
            };
            if g & need != need {
                add(Resolved::Fault {
                    what: "stage 1 permission",
                    dfsc: PERMISSION_FAULT | c1.level as u64,
                    ipa: None,
                    why: c1.why,
                });
                continue;
            }
            if !self.stage2 {
                add(Resolved::Access {
                    pa: ipa,
                    why: c1.why,
                });
                continue;
            }
            for c2 in self.translations(t, Stage::Stage2, ipa, lb) {
                let why = format!("{}, then at stage 2 {}", c1.why, c2.why);
                match c2.out {
                    Some((pa, g2)) if g2 & need2 == need2 => add(Resolved::Access { pa, why }),
                    other => add(Resolved::Fault {
                        what: if other.is_some() {
                            "stage 2 permission"
                        } else {
                            "stage 2 translation"
                        },
                        dfsc: c2.level as u64
                            | if other.is_some() {
                                PERMISSION_FAULT
                            } else {
                                TRANSLATION_FAULT
                            },
                        ipa: Some(ipa),
                        why,
                    }),
                }
            }
        }
        out
    }

    /// Context synchronization on PE `t`.
    fn context_sync(&mut self, t: usize) {
        let th = &self.threads[t];
        let first_own = self.log[th.dsb_mark.min(self.log.len())..]
            .iter()
            .position(|s| s.pe == t)
            .map(|i| i + th.dsb_mark);
        let lb = first_own.unwrap_or(self.log.len());
        let th = &mut self.threads[t];
        th.walk_lb = th.walk_lb.max(lb);
    }

    /// Takes an exception on PE `t` to EL `target` with return address
    /// `elr` and syndrome `esr` (EC and ISS; IL is added); when there is no
    /// handler code at the vector the thread stops.
    fn exception(&mut self, code: &Code, t: usize, target: u8, elr: u64, esr: u64, far: u64) {
        let th = &mut self.threads[t];
        let (elr_r, spsr_r, esr_r, far_r, vbar_r) = if target == 2 {
            (
                SysReg::ElrEl2,
                SysReg::SpsrEl2,
                SysReg::EsrEl2,
                SysReg::FarEl2,
                SysReg::VbarEl2,
            )
        } else {
            (
                SysReg::ElrEl1,
                SysReg::SpsrEl1,
                SysReg::EsrEl1,
                SysReg::FarEl1,
                SysReg::VbarEl1,
            )
        };
        let offset = if th.el < target {
            0x400
        } else if th.sp {
            0x200
        } else {
            0
        };
        th.sys[elr_r as usize] = elr;
        th.sys[spsr_r as usize] = (th.el as u64) << 2 | th.sp as u64;
        th.sys[esr_r as usize] = esr | 1 << 25;
        th.sys[far_r as usize] = far;
        th.el = target;
        th.sp = true;
        let vector = th.sys[vbar_r as usize].wrapping_add(offset);
        th.pc = Some(vector);
        if !code.at.contains_key(&vector) {
            self.trace
                .push(format!("T{t}: no handler at {vector:#x}: the thread stops"));
            self.threads[t].pc = None;
        }
        self.context_sync(t);
    }

    fn op2(&self, t: usize, o: Operand) -> (u64, usize) {
        match o {
            Operand::Imm(v) => (v, 0),
            Operand::Reg(r, sh) => {
                let (v, d) = self.reg(t, r);
                (v << sh, d)
            }
        }
    }

    fn reg(&self, t: usize, r: u8) -> (u64, usize) {
        if r == ZR {
            (0, 0)
        } else {
            (
                self.threads[t].x[r as usize],
                self.threads[t].dep[r as usize],
            )
        }
    }

    fn set(&mut self, t: usize, r: u8, v: u64, dep: usize) {
        if r != ZR {
            self.threads[t].x[r as usize] = v;
            self.threads[t].dep[r as usize] = dep;
        }
    }

    fn cond(&self, t: usize, c: Cond) -> bool {
        let f = self.threads[t].nzcv;
        let (n, z, cf, v) = (f & 8 != 0, f & 4 != 0, f & 2 != 0, f & 1 != 0);
        match c {
            Cond::Eq => z,
            Cond::Ne => !z,
            Cond::Hs => cf,
            Cond::Lo => !cf,
            Cond::Hi => cf && !z,
            Cond::Ls => !cf || z,
            Cond::Ge => n == v,
            Cond::Lt => n != v,
            Cond::Gt => !z && n == v,
            Cond::Le => z || n != v,
        }
    }

    /// Whether thread `t`'s next instruction only touches its own
    /// registers (so it commutes with every other thread's steps).
    pub fn next_is_local(&self, code: &Code, t: usize) -> bool {
        let Some(pc) = self.threads[t].pc else {
            return false;
        };
        match code.at.get(&pc) {
            None => true,
            Some((i, _)) => {
                matches!(
                    i,
                    Instr::Alu { .. }
                        | Instr::Mov { .. }
                        | Instr::Ubfx { .. }
                        | Instr::Csel { .. }
                        | Instr::Cbz { .. }
                        | Instr::BCond { .. }
                        | Instr::B { .. }
                        | Instr::Nop
                        | Instr::Mrs { .. }
                ) || matches!(i, Instr::Msr { reg, .. } if !matches!(reg, SysReg::Ttbr0El1 | SysReg::Ttbr0El2 | SysReg::VttbrEl2))
                    || matches!(i, Instr::Dmb(_) | Instr::Barrier(Barrier::Dmb))
                    || matches!(i, Instr::Barrier(Barrier::Dsb { .. }) if self.dsb_is_idle(t))
            }
        }
    }

    /// Whether a DSB on thread `t` would change nothing: no TLBI of its
    /// own to complete, no store of its own since its last DSB.
    fn dsb_is_idle(&self, t: usize) -> bool {
        let th = &self.threads[t];
        th.observed.is_empty()
            && !th.tlbi_pending
            && !self.log[th.dsb_mark.min(self.log.len())..]
                .iter()
                .any(|s| s.pe == t)
    }

    /// Executes thread `t`'s next instruction: the successor states, one
    /// per translation the model allows (one for most instructions).
    pub fn step(&self, code: &Code, t: usize) -> Result<Vec<State>, Error> {
        let Some(pc) = self.threads[t].pc else {
            return Ok(Vec::new());
        };
        let mut s = self.clone();
        s.threads[t].steps += 1;
        let Some((ins, text)) = code.at.get(&pc).cloned() else {
            s.threads[t].pc = None;
            return Ok(vec![s]);
        };
        s.threads[t].pc = Some(pc.wrapping_add(4));
        match ins {
            Instr::Ldr {
                rt, base, offset, ..
            }
            | Instr::Str {
                rt, base, offset, ..
            } => {
                let store = matches!(ins, Instr::Str { .. });
                let (b, bd) = s.reg(t, base);
                let (o, od) = match offset {
                    Offset::Imm(v) => (v, 0),
                    Offset::Reg(r, sh) => {
                        let (v, d) = s.reg(t, r);
                        (v << sh, d)
                    }
                };
                let va = b.wrapping_add(o);
                let lb = s.threads[t].walk_lb.max(bd).max(od);
                let el = s.threads[t].el;
                let mut out = Vec::new();
                for r in s.resolve(t, va, lb, store) {
                    let mut n = s.clone();
                    match r {
                        Resolved::Access { pa, why } => {
                            if store {
                                let (v, _) = n.reg(t, rt);
                                let old = n.read(pa);
                                n.mem.insert(pa, v);
                                n.log.push(Store { pa, old, pe: t });
                                let release = matches!(ins, Instr::Str { release: true, .. });
                                n.event(
                                    t,
                                    Event::Write {
                                        pa,
                                        value: v,
                                        release,
                                    },
                                );
                                n.trace.push(format!(
                                    "T{t}: {text}: store {v:#x} to VA {va:#x} = PA {pa:#x} (via {why})"
                                ));
                            } else {
                                let v = n.read(pa);
                                let d = n.log.len();
                                n.set(t, rt, v, d);
                                let by_other = n
                                    .log
                                    .iter()
                                    .rev()
                                    .find(|s| s.pa == pa)
                                    .is_some_and(|s| s.pe != t);
                                if by_other && n.tables.contains(&(pa & !0xfff)) {
                                    n.threads[t].observed.push(pa);
                                }
                                n.trace.push(format!(
                                    "T{t}: {text}: read {v:#x} from VA {va:#x} = PA {pa:#x} (via {why})"
                                ));
                            }
                        }
                        Resolved::Fault {
                            what,
                            dfsc,
                            ipa,
                            why,
                        } => {
                            let iss = dfsc | (store as u64) << 6;
                            n.trace.push(format!(
                                "T{t}: {text}: {what} fault on VA {va:#x} (via {why})"
                            ));
                            match ipa {
                                Some(ipa) => {
                                    n.threads[t].sys[SysReg::HpfarEl2 as usize] = ipa >> 12 << 4;
                                    n.exception(code, t, 2, pc, 0x24 << 26 | iss, va);
                                }
                                None => {
                                    let ec: u64 = if el == 0 { 0x24 } else { 0x25 };
                                    n.exception(code, t, el.max(1), pc, ec << 26 | iss, va);
                                }
                            }
                        }
                    }
                    out.push(n);
                }
                return Ok(out);
            }
            Instr::Alu {
                op,
                rd,
                rn,
                op2,
                flags,
            } => {
                let (a, da) = s.reg(t, rn);
                let (b, db) = s.op2(t, op2);
                let v = match op {
                    AluOp::Add => a.wrapping_add(b),
                    AluOp::Sub => a.wrapping_sub(b),
                    AluOp::And => a & b,
                    AluOp::Orr => a | b,
                    AluOp::Eor => a ^ b,
                    AluOp::Lsl => a.wrapping_shl(b as u32 & 63),
                    AluOp::Lsr => a.wrapping_shr(b as u32 & 63),
                };
                if flags {
                    let n = (v >> 63) & 1;
                    let z = (v == 0) as u64;
                    let c = (a >= b) as u64;
                    let ov = (((a ^ b) & (a ^ v)) >> 63) & 1;
                    s.threads[t].nzcv = (n << 3 | z << 2 | c << 1 | ov) as u8;
                }
                s.set(t, rd, v, da.max(db));
            }
            Instr::Mov { rd, src } => {
                let (v, d) = s.op2(t, src);
                s.set(t, rd, v, d);
            }
            Instr::Ubfx { rd, rn, lsb, width } => {
                let (a, d) = s.reg(t, rn);
                let m = if width >= 64 {
                    u64::MAX
                } else {
                    (1 << width) - 1
                };
                s.set(t, rd, a.wrapping_shr(lsb) & m, d);
            }
            Instr::Csel { rd, rn, rm, cond } => {
                let (v, d) = if s.cond(t, cond) {
                    s.reg(t, rn)
                } else {
                    s.reg(t, rm)
                };
                s.set(t, rd, v, d);
            }
            Instr::Cbz {
                rt,
                nonzero,
                target,
            } => {
                let (v, _) = s.reg(t, rt);
                if (v != 0) == nonzero {
                    s.threads[t].pc = Some(target);
                }
            }
            Instr::BCond { cond, target } => {
                if s.cond(t, cond) {
                    s.threads[t].pc = Some(target);
                }
            }
            Instr::B { target } => s.threads[t].pc = Some(target),
            Instr::Barrier(Barrier::Dsb { .. }) if s.dsb_is_idle(t) => {
                // Nothing to wait for: the same in every interleaving (the
                // mark stays, no store of its own lies after it).
                s.trace.push(format!("T{t}: {text} (nothing to wait for)"));
            }
            Instr::Barrier(b) => {
                s.trace.push(format!("T{t}: {text}"));
                s.event(t, Event::Barrier(b));
                match b {
                    Barrier::Dsb { stores_only, .. } => {
                        for pa in std::mem::take(&mut s.threads[t].observed) {
                            s.machine.observed(t, pa);
                        }
                        let th = &mut s.threads[t];
                        th.dsb_mark = s.log.len();
                        if th.tlbi_pending && !stores_only {
                            th.tlbi_pending = false;
                            th.tlbi_done = Some(s.log.len());
                        }
                    }
                    Barrier::Isb => s.context_sync(t),
                    Barrier::Dmb => {}
                }
            }
            Instr::Dmb(_) => s.event(t, Event::Barrier(Barrier::Dmb)),
            Instr::Tlbi { op, rt } => {
                let (v, _) = s.reg(t, rt);
                s.event(t, Event::Tlbi { op, operand: v });
                s.threads[t].tlbi_pending = true;
                s.trace.push(format!("T{t}: {text}"));
            }
            Instr::Msr { reg, rt } => {
                let (v, _) = s.reg(t, rt);
                let old = s.threads[t].sys[reg as usize];
                if matches!(reg, SysReg::Ttbr0El1 | SysReg::VttbrEl2) && old >> 48 != v >> 48 {
                    // The test may mean the PE to have run that tag before
                    // (TLB entries from the initial tables); the model only
                    // holds entries for tags PEs ran in the test.
                    return Err(Error::Unsupported(format!(
                        "MSR {} switches to {} {}, whose TLB entries from before the test the model does not track",
                        reg.name(),
                        if reg == SysReg::Ttbr0El1 { "ASID" } else { "VMID" },
                        v >> 48
                    )));
                }
                s.threads[t].sys[reg as usize] = v;
                match reg {
                    SysReg::Ttbr0El1 => s.event(
                        t,
                        Event::SysReg {
                            reg: Reg::Ttbr0El1,
                            value: v,
                        },
                    ),
                    SysReg::VttbrEl2 if s.stage2 => s.event(
                        t,
                        Event::SysReg {
                            reg: Reg::VttbrEl2,
                            value: v,
                        },
                    ),
                    SysReg::Ttbr0El2 | SysReg::VttbrEl2 => {
                        return Err(Error::Unsupported(format!(
                            "MSR {} (the EL2 stage 1 regime, or stage 2 in a test without it)",
                            reg.name()
                        )))
                    }
                    _ => {}
                }
            }
            Instr::Mrs { rt, reg } => {
                let v = s.threads[t].sys[reg as usize];
                s.set(t, rt, v, 0);
            }
            Instr::Svc => {
                s.trace.push(format!("T{t}: {text}"));
                s.exception(code, t, 1, pc.wrapping_add(4), 0x15 << 26, 0);
            }
            Instr::Hvc => {
                if s.threads[t].el == 0 {
                    return Err(Error::Unsupported("HVC at EL0 (UNDEFINED)".into()));
                }
                s.trace.push(format!("T{t}: {text}"));
                s.exception(code, t, 2, pc.wrapping_add(4), 0x16 << 26, 0);
            }
            Instr::Eret => {
                let el = s.threads[t].el;
                let (spsr_r, elr_r) = match el {
                    1 => (SysReg::SpsrEl1, SysReg::ElrEl1),
                    2 => (SysReg::SpsrEl2, SysReg::ElrEl2),
                    _ => return Err(Error::Unsupported("ERET at EL0 (UNDEFINED)".into())),
                };
                let th = &mut s.threads[t];
                let spsr = th.sys[spsr_r as usize];
                th.el = (spsr >> 2 & 3) as u8;
                th.sp = spsr & 1 == 1;
                th.pc = Some(th.sys[elr_r as usize]);
                if th.el > el {
                    return Err(Error::Unsupported(format!(
                        "ERET from EL{el} to EL{}",
                        th.el
                    )));
                }
                s.trace
                    .push(format!("T{t}: {text} to EL{}", s.threads[t].el));
                s.context_sync(t);
            }
            Instr::Nop => {}
        }
        Ok(vec![s])
    }
}
