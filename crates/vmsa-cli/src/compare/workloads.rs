//! The built-in workloads: what real systems do to live translation
//! tables, with vCPUs on several PEs touching memory between changes.
//!
//! PE 0 is the hypervisor (or the host editing a guest's stage 1); PEs 1
//! and up run vCPUs with the table installed. Each workload drives a
//! library [`Table`] through the model, flushing where the system it
//! mirrors would.

use vmsa::{
    Arena, Asid, El1Stage1, Geometry, Granule, Invalidator, Ipa, MapOptions, Pa, S2ap, S2xn,
    Stage1Attrs, Stage2, Stage2Attrs, Table, Va, Vmid,
};
use vmsa_model::desc::grant;
use vmsa_model::{Access, Event, Key, Machine, ModelEffects, Origin, Reg};

const K: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// Workload names, in display order, with the regime each runs on.
pub const NAMES: &[(&str, &str)] = &[
    ("relro", "stage 1"),
    ("munmap-small", "stage 1"),
    ("mmap-churn", "stage 1"),
    ("jit-wx", "stage 1"),
    ("fork-cow", "stage 1"),
    ("vm-teardown", "stage 2"),
    ("foreign-unmap", "stage 2"),
    ("dirty-log", "stage 2"),
    ("vcpu-migrate", "stage 2"),
    ("balloon", "stage 2"),
    ("huge-unmap", "stage 2"),
];

/// Access permissions a workload asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Read/write, not executable.
    Rw,
    /// Read-only, not executable.
    Ro,
    /// Read and execute.
    Rx,
    /// Read, write and execute (a JIT's RWX pages).
    Rwx,
}

enum AnyTable {
    S2(Table<Stage2, Arena>),
    S1(Table<El1Stage1, Arena>),
}

/// xorshift64*: deterministic choices.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One run: the model, the table, the vCPUs.
pub struct Env {
    /// The model.
    pub m: Machine,
    t: Option<AnyTable>,
    pes: usize,
    /// PEs running the address space (vCPUs).
    vcpus: Vec<usize>,
    /// The PE issuing the table's effects.
    issuer: usize,
    /// Deterministic choices.
    pub rng: Rng,
    oracle: bool,
    seq: u64,
    /// The policy gathers a batch of operations into one flush.
    gather: bool,
}

const VMID: u16 = 1;
const ASID: u16 = 1;

/// Where a workload's address space runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On every PE but 0; PE 0 (the hypervisor) changes the tables and
    /// runs the VMID too.
    Everywhere,
    /// On these PEs only, changes made from the first (a process on one or
    /// two vCPUs, the TLBIs run by its EL1 shim); the table tracks where it
    /// runs.
    On(Vec<usize>),
}

impl Env {
    /// A stage 2 (`stage2`) or host-managed guest stage 1 table on a model
    /// of `pes` PEs, live where `place` says, with `policy` deciding the
    /// invalidation (`oracle`: the model cleans at each DSB ISH).
    pub fn new(
        stage2: bool,
        pes: usize,
        place: Placement,
        policy: Box<dyn Invalidator>,
        oracle: bool,
        gather: bool,
    ) -> Env {
        let pes = pes.max(2);
        let (vcpus, issuer, tracked): (Vec<usize>, usize, bool) = match place {
            Placement::Everywhere => ((1..pes).collect(), 0, false),
            Placement::On(ref list) => {
                let v: Vec<usize> = list.iter().map(|&p| p.min(pes - 1)).collect();
                let first = v[0];
                (v, first, true)
            }
        };
        let mut e = Env {
            m: Machine::new(vmsa_model::Config {
                pes,
                ..Default::default()
            }),
            t: None,
            pes,
            vcpus: vcpus.clone(),
            issuer,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            oracle,
            seq: 0,
            gather,
        };
        let arena = Arena::lazy(Pa(0x8000_0000), 8192);
        // Every PE runs VMID 1 (for stage 1 spaces the VM they belong to).
        for pe in 0..pes {
            e.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VttbrEl2,
                    value: (VMID as u64) << 48,
                },
            );
        }
        let mut fx = ModelEffects::new(&mut e.m, issuer);
        let mut t = if stage2 {
            let mut t = Table::new(
                Stage2::new(Vmid(VMID)),
                Geometry::stage2(Granule::K4, 40).expect("40-bit IPA"),
                arena,
                &mut fx,
            )
            .expect("root");
            t.set_invalidator(policy);
            t.set_issuer(issuer);
            t.activate(&mut fx);
            AnyTable::S2(t)
        } else {
            let mut t = Table::new(
                El1Stage1::new(Asid(ASID)),
                Geometry::stage1(Granule::K4, 48).expect("48-bit VA"),
                arena,
                &mut fx,
            )
            .expect("root");
            t.set_invalidator(policy);
            t.set_issuer(issuer);
            t.activate(&mut fx);
            AnyTable::S1(t)
        };
        if tracked {
            match &mut t {
                AnyTable::S2(t) => t.vcpu_load(issuer, &mut fx),
                AnyTable::S1(t) => t.vcpu_load(issuer, &mut fx),
            }
        }
        let regs = match &t {
            AnyTable::S2(t) => t.registers(),
            AnyTable::S1(t) => t.registers(),
        };
        for &pe in &vcpus {
            if pe == issuer {
                continue;
            }
            for (reg, value) in regs {
                e.ev(
                    pe,
                    Event::SysReg {
                        reg: reg.into(),
                        value,
                    },
                );
            }
            if tracked {
                let mut fx = ModelEffects::new(&mut e.m, pe);
                match &mut t {
                    AnyTable::S2(t) => t.vcpu_load(pe, &mut fx),
                    AnyTable::S1(t) => t.vcpu_load(pe, &mut fx),
                }
            }
        }
        e.t = Some(t);
        e
    }

    /// A stage 2 table on a model of `pes` PEs that is not live yet (for
    /// replaying a hypervisor's log, which builds the table first): every
    /// PE has the VMID in VTTBR_EL2 with no table (so its TLBIs act on the
    /// VM, but it caches nothing), no vCPU runs it, PE 0 issues. Then
    /// [`activate`](Self::activate) and [`vcpu_load`](Self::vcpu_load) as
    /// the log says.
    /// `capacity`: at most this many stale runs per PE in the model (the
    /// oldest evicted), or as many as the policy leaves.
    pub fn stage2_inactive(
        pes: usize,
        policy: Box<dyn Invalidator>,
        oracle: bool,
        gather: bool,
        capacity: Option<usize>,
    ) -> Env {
        let pes = pes.max(2);
        let mut e = Env {
            m: Machine::new(vmsa_model::Config {
                pes,
                capacity,
                ..vmsa_model::Config::default()
            }),
            t: None,
            pes,
            vcpus: Vec::new(),
            issuer: 0,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            oracle,
            seq: 0,
            gather,
        };
        for pe in 0..pes {
            e.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VttbrEl2,
                    value: (VMID as u64) << 48,
                },
            );
        }
        let mut fx = ModelEffects::new(&mut e.m, 0);
        let mut t = Table::new(
            Stage2::new(Vmid(VMID)),
            Geometry::stage2(Granule::K4, 40).expect("40-bit IPA"),
            Arena::lazy(Pa(0x8000_0000), 8192),
            &mut fx,
        )
        .expect("root");
        t.set_invalidator(policy);
        t.set_issuer(0);
        e.t = Some(AnyTable::S2(t));
        e
    }

    /// The table goes live, first run on `pe` (which writes its registers
    /// and issues from now on). A [`vcpu_load`](Self::vcpu_load) on `pe`
    /// still follows (it makes the table track where it runs).
    pub fn activate(&mut self, pe: usize) {
        self.set_issuer(pe);
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.activate(fx),
            AnyTable::S1(t) => t.activate(fx),
        });
    }

    fn stage2_table<T>(
        &mut self,
        f: impl FnOnce(&mut Table<Stage2, Arena>, &mut ModelEffects<'_>) -> T,
    ) -> T {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => f(t, fx),
            AnyTable::S1(_) => panic!("a stage 2 operation on a stage 1 table"),
        })
    }

    /// Stage 2 only: `Table::map` of `[s, e)` to `out` with `attrs`.
    ///
    /// # Errors
    /// What the table returns.
    pub fn map_stage2(
        &mut self,
        range: core::ops::Range<u64>,
        out: u64,
        attrs: Stage2Attrs,
        opts: MapOptions,
    ) -> Result<(), vmsa::Error> {
        self.stage2_table(|t, fx| {
            t.map(Ipa(range.start)..Ipa(range.end), Pa(out), attrs, opts, fx)
                .map(|_| ())
        })
    }

    /// Stage 2 only: `Table::protect` of `[s, e)` to `attrs`.
    ///
    /// # Errors
    /// What the table returns.
    pub fn protect_stage2(
        &mut self,
        range: core::ops::Range<u64>,
        attrs: Stage2Attrs,
    ) -> Result<(), vmsa::Error> {
        self.stage2_table(|t, fx| {
            t.protect(Ipa(range.start)..Ipa(range.end), attrs, fx)
                .map(|_| ())
        })
    }

    /// `Table::unmap` of `[s, e)`, with the table's error.
    ///
    /// # Errors
    /// What the table returns.
    pub fn try_unmap(&mut self, s: u64, e: u64) -> Result<(), vmsa::Error> {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.unmap(Ipa(s)..Ipa(e), fx).map(|_| ()),
            AnyTable::S1(t) => t.unmap(Va(s)..Va(e), fx).map(|_| ()),
        })
    }

    /// Splits the block mapping `addr` into a table one level down.
    ///
    /// # Errors
    /// What the table returns ([`vmsa::Error::NotABlock`], ...).
    pub fn split(&mut self, addr: u64) -> Result<(), vmsa::Error> {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.split_block(Ipa(addr), fx).map(|_| ()),
            AnyTable::S1(t) => t.split_block(Va(addr), fx).map(|_| ()),
        })
    }

    /// Collapses the tables in `[s, e)` that map one uniform run into
    /// blocks; returns whether anything changed.
    ///
    /// # Errors
    /// What the table returns.
    pub fn collapse(&mut self, s: u64, e: u64) -> Result<bool, vmsa::Error> {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.collapse(Ipa(s)..Ipa(e), fx),
            AnyTable::S1(t) => t.collapse(Va(s)..Va(e), fx),
        })
        .map(|r| !r.changes.is_empty())
    }

    /// The data page(s) `[pa, pa + size)` are given back by `pe` (after a
    /// migration or a swap-out): the model reports any PE that may still
    /// translate to them.
    pub fn release_data(&mut self, pe: usize, pa: u64, size: u64) {
        let pe = pe.min(self.pes - 1);
        self.ev(pe, Event::ReleaseData { pa, size });
    }

    /// Invalidates what the operations left outstanding (the policy
    /// decides) without claiming they are complete: a policy's own flush
    /// inside a batch whose end is the completion point.
    pub fn invalidate(&mut self) {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.flush(fx),
            AnyTable::S1(t) => t.flush(fx),
        });
    }

    /// Like [`release_data`](Self::release_data) for pages the caller
    /// knows the table no longer maps: the model checks only the stale
    /// entries PEs may hold ([`Machine::release_unmapped_data`]).
    pub fn release_unmapped_data(&mut self, pe: usize, pa: u64, size: u64) {
        let pe = pe.min(self.pes - 1);
        self.seq += 1;
        let origin = Origin {
            seq: self.seq,
            line: 0,
        };
        self.m.release_unmapped_data(pe, pa, size, origin);
    }

    /// Whether the table itself translates `addr` into the page at `pa`.
    pub fn maps_to(&self, addr: u64, pa: u64) -> bool {
        let page = pa & !(K - 1);
        match &self.t {
            Some(AnyTable::S2(t)) => t
                .translate(Ipa(addr))
                .is_some_and(|tr| tr.output.0 & !(K - 1) == page),
            Some(AnyTable::S1(t)) => t
                .translate(Va(addr))
                .is_some_and(|tr| tr.output.0 & !(K - 1) == page),
            None => false,
        }
    }

    /// An explicit completion point issued by `pe`.
    pub fn complete(&mut self, pe: usize) {
        let pe = pe.min(self.pes - 1);
        self.ev(pe, Event::Complete);
    }

    /// The vCPU on PE `pe` accesses `addr` needing `need`
    /// ([`grant`] bits): what the model lets happen (a spurious fault is
    /// counted by the model and its local invalidation applied).
    pub fn access_on(&mut self, pe: usize, addr: u64, need: u8) -> Access {
        let key = self.key();
        self.m.access(pe, key, addr, need)
    }

    fn ev(&mut self, pe: usize, event: Event) {
        self.seq += 1;
        self.m.step(
            pe,
            &event,
            Origin {
                seq: self.seq,
                line: 0,
            },
        );
    }

    fn key(&self) -> Key {
        match self.t {
            Some(AnyTable::S2(_)) | None => Key::Vmid(VMID),
            Some(AnyTable::S1(_)) => Key::Asid {
                vmid: VMID,
                asid: ASID,
            },
        }
    }

    /// Runs `f` on the table with effects issued by the issuer.
    fn with<T>(&mut self, f: impl FnOnce(&mut AnyTable, &mut ModelEffects<'_>) -> T) -> T {
        let mut t = self.t.take().expect("table");
        let r = {
            let mut fx = if self.oracle {
                ModelEffects::oracle(&mut self.m, self.issuer)
            } else {
                ModelEffects::new(&mut self.m, self.issuer)
            };
            f(&mut t, &mut fx)
        };
        self.t = Some(t);
        r
    }

    /// Maps `[s, e)` to `out` (blocks where they fit, or pages only).
    pub fn map(&mut self, s: u64, e: u64, out: u64, perm: Perm, blocks: bool) {
        let opts = MapOptions {
            blocks,
            replace: true,
        };
        self.with(|t, fx| match t {
            AnyTable::S2(t) => {
                let _ = t.map(Ipa(s)..Ipa(e), Pa(out), s2_attrs(perm), opts, fx);
            }
            AnyTable::S1(t) => {
                let _ = t.map(Va(s)..Va(e), Ipa(out), s1_attrs(perm), opts, fx);
            }
        });
    }

    /// Unmaps `[s, e)`.
    pub fn unmap(&mut self, s: u64, e: u64) {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => {
                let _ = t.unmap(Ipa(s)..Ipa(e), fx);
            }
            AnyTable::S1(t) => {
                let _ = t.unmap(Va(s)..Va(e), fx);
            }
        });
    }

    /// Changes the permissions of `[s, e)`.
    pub fn protect(&mut self, s: u64, e: u64, perm: Perm) {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => {
                let _ = t.protect(Ipa(s)..Ipa(e), s2_attrs(perm), fx);
            }
            AnyTable::S1(t) => {
                let _ = t.protect(Va(s)..Va(e), s1_attrs(perm), fx);
            }
        });
    }

    /// Flushes what the operations left outstanding (the policy decides);
    /// the operations are complete from then on, and the checker judges
    /// every PE running the space.
    pub fn flush(&mut self) {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.flush(fx),
            AnyTable::S1(t) => t.flush(fx),
        });
        let issuer = self.issuer;
        self.ev(issuer, Event::Complete);
    }

    /// The end of one operation inside a batch: policies that gather wait
    /// for [`end_batch`](Self::end_batch), the others flush now.
    pub fn end_op(&mut self) {
        if !self.gather {
            self.flush();
        }
    }

    /// The end of a batch (a hypercall, a syscall): everything is flushed.
    pub fn end_batch(&mut self) {
        self.flush();
    }

    fn access(&mut self, addrs: &[u64], need: u8) {
        let key = self.key();
        for pe in self.vcpus.clone() {
            for &a in addrs {
                let _ = self.m.access(pe, key, a, need);
            }
        }
    }

    /// Every vCPU reads (or writes) each address; a spurious fault is taken
    /// and counted by the model where a stale stricter entry is used.
    pub fn touch(&mut self, addrs: &[u64], write: bool) {
        self.access(addrs, if write { grant::WRITE } else { grant::READ });
    }

    /// Every vCPU executes at each address.
    pub fn exec(&mut self, addrs: &[u64]) {
        self.access(addrs, grant::EXEC);
    }

    /// The vCPUs stop running the VM (VTTBR_EL2 parked at 0); without
    /// `dead` the hypervisor (PE 0, still on the VM's VMID so that its TLBIs
    /// act on it) unmaps everything and flushes; then it parks too and
    /// destroys the table. With `dead` the VMID is retired first, so no
    /// TLBI is needed at all.
    pub fn teardown(&mut self, dead: bool) {
        for pe in 1..self.pes {
            self.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VttbrEl2,
                    value: 0,
                },
            );
        }
        if !dead {
            self.unmap(0, 1 << 40);
            self.flush();
        }
        self.ev(
            0,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 0,
            },
        );
        let t = self.t.take().expect("table");
        let mut fx = if self.oracle {
            ModelEffects::oracle(&mut self.m, 0)
        } else {
            ModelEffects::new(&mut self.m, 0)
        };
        match t {
            AnyTable::S2(mut t) => {
                if dead {
                    t.retire();
                }
                t.destroy(&mut fx);
            }
            AnyTable::S1(mut t) => {
                if dead {
                    t.retire();
                }
                t.destroy(&mut fx);
            }
        }
    }

    /// The (single) vCPU moves to PE `to`: its old PE switches to another
    /// context, `to` installs the registers and loads the space (flushing
    /// it locally if it missed local invalidations), and changes are then
    /// made from `to`.
    pub fn migrate(&mut self, to: usize) {
        let from = self.issuer;
        let to = to.min(self.pes - 1);
        if from == to {
            return;
        }
        let regs = match &mut self.t {
            Some(AnyTable::S2(t)) => {
                t.vcpu_put(from);
                t.registers()
            }
            Some(AnyTable::S1(t)) => {
                t.vcpu_put(from);
                t.registers()
            }
            None => return,
        };
        self.ev(
            from,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 2 << 48,
            },
        );
        for (reg, value) in regs {
            self.ev(
                to,
                Event::SysReg {
                    reg: reg.into(),
                    value,
                },
            );
        }
        self.issuer = to;
        self.vcpus = vec![to];
        self.with(|t, fx| match t {
            AnyTable::S2(t) => {
                t.set_issuer(to);
                t.vcpu_load(to, fx);
            }
            AnyTable::S1(t) => {
                t.set_issuer(to);
                t.vcpu_load(to, fx);
            }
        });
    }

    /// PEs in the model.
    pub fn pes(&self) -> usize {
        self.pes
    }

    /// The PE that issues the table's effects from now on (the vCPU whose
    /// call is being served: with host-managed guest stage 1, its shim runs
    /// the TLBIs the request asks for).
    pub fn set_issuer(&mut self, pe: usize) {
        let pe = pe.min(self.pes - 1);
        self.issuer = pe;
        match &mut self.t {
            Some(AnyTable::S2(t)) => t.set_issuer(pe),
            Some(AnyTable::S1(t)) => t.set_issuer(pe),
            None => {}
        }
    }

    /// A vCPU starts running the space on PE `pe`: the PE installs the
    /// VMID and the table's registers, and the table records that it runs
    /// there (flushing the PE locally if it missed local invalidations).
    /// Nothing happens if the space already runs there.
    pub fn vcpu_load(&mut self, pe: usize) {
        let pe = pe.min(self.pes - 1);
        if self.vcpus.contains(&pe) || self.t.is_none() {
            return;
        }
        self.ev(
            pe,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: (VMID as u64) << 48,
            },
        );
        let regs = match &self.t {
            Some(AnyTable::S2(t)) => t.registers(),
            Some(AnyTable::S1(t)) => t.registers(),
            None => return,
        };
        for (reg, value) in regs {
            self.ev(
                pe,
                Event::SysReg {
                    reg: reg.into(),
                    value,
                },
            );
        }
        let mut fx = ModelEffects::new(&mut self.m, pe);
        match &mut self.t {
            Some(AnyTable::S2(t)) => t.vcpu_load(pe, &mut fx),
            Some(AnyTable::S1(t)) => t.vcpu_load(pe, &mut fx),
            None => {}
        }
        self.vcpus.push(pe);
    }

    /// The vCPU on PE `pe` stops running the space: the PE switches to
    /// another VM's context (its TLB keeps what it cached) and the table
    /// records that it no longer runs there.
    pub fn vcpu_put(&mut self, pe: usize) {
        if !self.vcpus.contains(&pe) {
            return;
        }
        match &mut self.t {
            Some(AnyTable::S2(t)) => t.vcpu_put(pe),
            Some(AnyTable::S1(t)) => t.vcpu_put(pe),
            None => return,
        }
        self.ev(
            pe,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 2 << 48,
            },
        );
        self.vcpus.retain(|&p| p != pe);
    }

    /// The vCPU on PE `pe` reads (or writes) each address.
    pub fn touch_on(&mut self, pe: usize, addrs: &[u64], write: bool) {
        let need = if write { grant::WRITE } else { grant::READ };
        let key = self.key();
        for &a in addrs {
            let _ = self.m.access(pe, key, a, need);
        }
    }

    /// The vCPU on PE `pe` executes at each address.
    pub fn exec_on(&mut self, pe: usize, addrs: &[u64]) {
        let key = self.key();
        for &a in addrs {
            let _ = self.m.access(pe, key, a, grant::EXEC);
        }
    }
}

fn s2_attrs(perm: Perm) -> Stage2Attrs {
    match perm {
        Perm::Rw => Stage2Attrs {
            xn: S2xn::Never,
            ..Stage2Attrs::RAM
        },
        Perm::Ro => Stage2Attrs {
            xn: S2xn::Never,
            ..Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly)
        },
        Perm::Rx => Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
        Perm::Rwx => Stage2Attrs::RAM,
    }
}

fn s1_attrs(perm: Perm) -> Stage1Attrs {
    let rw = Stage1Attrs::normal_rw(0);
    match perm {
        Perm::Rw => rw,
        Perm::Ro => rw.read_only(),
        Perm::Rx => Stage1Attrs {
            pxn: false,
            ..rw.read_only()
        },
        Perm::Rwx => Stage1Attrs { pxn: false, ..rw },
    }
}

/// Guest memory base (IPA / VA) and host frames.
const BASE: u64 = G1;
const FRAMES: u64 = 0x10_0000_0000;

/// Runs workload `name` on a fresh environment made by `env`.
pub fn run(name: &str, mk: &mut dyn FnMut(bool, Placement) -> Env, dead_aware: bool) -> Env {
    let stage2 = NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .is_some_and(|(_, r)| *r == "stage 2");
    let place = match name {
        // A single-threaded process on one vCPU (elfuse's case).
        "relro" | "munmap-small" | "mmap-churn" | "jit-wx" => Placement::On(vec![1]),
        // Parent and child of a fork on two vCPUs.
        "fork-cow" => Placement::On(vec![1, 2]),
        // A single-vCPU VM that moves between PEs.
        "vcpu-migrate" => Placement::On(vec![1]),
        _ => Placement::Everywhere,
    };
    let mut e = mk(stage2, place);
    match name {
        "relro" => {
            // A dynamic linker's RELRO storm: mprotect(PROT_READ) on small
            // ranges of the relocated data, over and over; most calls find
            // the pages already read-only and change nothing.
            e.map(BASE, BASE + 512 * K, FRAMES, Perm::Rw, false);
            e.flush();
            e.touch(&[BASE, BASE + 32 * K], false);
            for _ in 0..300 {
                let p = e.rng.below(60);
                let n = 1 + e.rng.below(4);
                e.protect(BASE + p * K, BASE + (p + n) * K, Perm::Ro);
                e.flush();
                e.touch(&[BASE + p * K], false);
            }
        }
        "munmap-small" => {
            e.map(BASE, BASE + 8192 * K, FRAMES, Perm::Rw, false);
            e.flush();
            for _ in 0..300 {
                let p = e.rng.below(8184);
                let n = 1 + e.rng.below(8);
                e.unmap(BASE + p * K, BASE + (p + n) * K);
                e.flush();
                e.touch(&[BASE + (p + n) * K], false);
            }
        }
        "mmap-churn" => {
            e.map(BASE, BASE + 1024 * K, FRAMES, Perm::Rw, false);
            e.flush();
            for i in 0..150 {
                let at = BASE + (2048 + (i % 64) * 16) * K;
                e.map(at, at + 16 * K, FRAMES + (i + 1) * M2, Perm::Rw, false);
                e.flush();
                e.touch(&[at, at + 8 * K], true);
                e.unmap(at, at + 16 * K);
                e.flush();
            }
        }
        "jit-wx" => {
            // W^X: a JIT flips pages between writable and executable.
            e.map(BASE, BASE + 64 * K, FRAMES, Perm::Rw, false);
            e.flush();
            for _ in 0..300 {
                let p = BASE + e.rng.below(64) * K;
                e.protect(p, p + K, Perm::Rx);
                e.flush();
                e.exec(&[p]);
                e.protect(p, p + K, Perm::Rw);
                e.flush();
                e.touch(&[p], true);
            }
        }
        "fork-cow" => {
            // fork(): write-protect the whole address space, then copy on
            // write the pages the child touches.
            e.map(BASE, BASE + 4096 * K, FRAMES, Perm::Rw, false);
            e.flush();
            e.touch(&[BASE, BASE + 100 * K], true);
            e.protect(BASE, BASE + 4096 * K, Perm::Ro);
            e.flush();
            for i in 0..64 {
                let p = BASE + e.rng.below(4096) * K;
                e.map(p, p + K, FRAMES + G1 + i * K, Perm::Rw, false);
                e.flush();
                e.touch(&[p], true);
            }
        }
        "vm-teardown" => {
            e.map(BASE, BASE + G1, FRAMES, Perm::Rw, false);
            e.flush();
            e.touch(&[BASE, BASE + G1 / 2], true);
            e.teardown(dead_aware);
        }
        "foreign-unmap" => {
            // Xen-style: a backend's unmap hypercall removes 16 contiguous
            // grant pages, one p2m operation per page. Policies that gather
            // flush once per hypercall, the others once per page.
            e.map(BASE, BASE + 16384 * K, FRAMES, Perm::Rw, false);
            e.flush();
            for _ in 0..32 {
                let first = BASE + e.rng.below(16384 / 16) * 16 * K;
                for i in 0..16 {
                    let p = first + i * K;
                    e.unmap(p, p + K);
                    e.end_op();
                }
                e.end_batch();
                e.touch(&[first + 16 * K], false);
            }
        }
        "dirty-log" => {
            // Live migration: write-protect all guest memory, then relax
            // each page the guest writes.
            e.map(BASE, BASE + 16384 * K, FRAMES, Perm::Rw, false);
            e.flush();
            e.protect(BASE, BASE + 16384 * K, Perm::Ro);
            e.flush();
            for _ in 0..256 {
                let p = BASE + e.rng.below(16384) * K;
                e.protect(p, p + K, Perm::Rw);
                e.flush();
                e.touch(&[p], true);
            }
        }
        "vcpu-migrate" => {
            e.map(BASE, BASE + 4096 * K, FRAMES, Perm::Rw, false);
            e.flush();
            let pes = e.pes();
            for i in 0..64u64 {
                // Every fourth change the vCPU moves to the next PE.
                if i % 4 == 3 {
                    let to = 1 + (i as usize / 4) % (pes - 1).max(1);
                    e.migrate(to);
                }
                let p = BASE + e.rng.below(4096) * K;
                e.unmap(p, p + K);
                e.flush();
                e.touch(&[p + K], false);
            }
        }
        "balloon" => {
            // Balloon inflation: split 2 MiB blocks, give pages back.
            e.map(BASE, BASE + 32 * M2, FRAMES, Perm::Rw, true);
            e.flush();
            for _ in 0..32 {
                let b = BASE + e.rng.below(32) * M2;
                let p = b + e.rng.below(512) * K;
                e.unmap(p, p + K);
                e.flush();
                e.touch(&[b], false);
            }
        }
        "huge-unmap" => {
            e.map(BASE, BASE + G1, FRAMES, Perm::Rw, false);
            e.flush();
            e.touch(&[BASE, BASE + G1 - K], false);
            e.unmap(BASE, BASE + G1);
            e.flush();
        }
        other => panic!("unknown workload {other}"),
    }
    e.ev(0, Event::Complete);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::policies;

    /// Random maps, unmaps, protections and block splits on a live table,
    /// flushed at random points, with vCPUs touching memory.
    fn random(e: &mut Env, steps: u32) {
        e.map(BASE, BASE + 8 * M2, FRAMES, Perm::Rw, true);
        e.flush();
        for _ in 0..steps {
            let s = BASE + e.rng.below(8 * 512) * K;
            let len = (1 + e.rng.below(24)) * K;
            match e.rng.below(4) {
                0 => {
                    let blocks = e.rng.below(2) == 0;
                    let out = FRAMES + e.rng.below(64) * M2;
                    e.map(s, s + len, out, Perm::Rw, blocks)
                }
                1 => e.unmap(s, s + len),
                2 => {
                    let perm = [Perm::Ro, Perm::Rw, Perm::Rx][e.rng.below(3) as usize];
                    e.protect(s, s + len, perm)
                }
                _ => e.unmap(s, s + K),
            }
            if e.rng.below(3) != 0 {
                e.flush();
            }
            let write = e.rng.below(2) == 0;
            e.touch(&[s, s + len / 2], write);
        }
        e.flush();
    }

    #[test]
    fn every_faithful_policy_is_clean_on_random_runs() {
        let profile = &vmsa_model::cost::NATIVE;
        for &policy in policies::NAMES {
            if matches!(policy, "none" | "aarch64-paging") {
                continue;
            }
            for (stage2, place) in [
                (true, Placement::Everywhere),
                (false, Placement::Everywhere),
                (false, Placement::On(vec![1])),
            ] {
                for seed in 1..=3u64 {
                    let inv = policies::make(policy, vmsa::Capabilities::armv8_4(), profile, 4);
                    let oracle = policy == "oracle";
                    let mut e = Env::new(
                        stage2,
                        4,
                        place.clone(),
                        inv,
                        oracle,
                        policies::gathers(policy),
                    );
                    e.rng = Rng(seed * 0x9e37_79b9);
                    random(&mut e, 60);
                    assert!(
                        e.m.violations().is_empty(),
                        "{policy} stage2={stage2} {place:?} seed {seed}: {}",
                        e.m.violations()[0]
                    );
                }
            }
        }
    }

    #[test]
    fn the_broken_control_is_caught_on_random_runs() {
        let profile = &vmsa_model::cost::NATIVE;
        let inv = policies::make("none", vmsa::Capabilities::armv8_4(), profile, 4);
        let mut e = Env::new(true, 4, Placement::Everywhere, inv, false, false);
        random(&mut e, 60);
        assert!(!e.m.violations().is_empty());
    }
}
