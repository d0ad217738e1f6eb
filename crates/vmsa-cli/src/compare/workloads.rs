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
use vmsa_model::{Event, Key, Machine, ModelEffects, Origin, Reg};

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
    /// Deterministic choices.
    pub rng: Rng,
    oracle: bool,
    seq: u64,
}

const VMID: u16 = 1;
const ASID: u16 = 1;

impl Env {
    /// A stage 2 (`stage2`) or host-managed guest stage 1 table on a model
    /// of `pes` PEs, live on every PE, with `policy` deciding the
    /// invalidation (`oracle`: the model cleans at each DSB ISH).
    pub fn new(stage2: bool, pes: usize, policy: Box<dyn Invalidator>, oracle: bool) -> Env {
        let mut e = Env {
            m: Machine::new(vmsa_model::Config {
                pes,
                ..Default::default()
            }),
            t: None,
            pes,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            oracle,
            seq: 0,
        };
        let arena = Arena::new(Pa(0x8000_0000), 8192);
        // PE 0 and the vCPUs run VMID 1.
        for pe in 0..pes {
            e.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VttbrEl2,
                    value: (VMID as u64) << 48,
                },
            );
        }
        let t = if stage2 {
            let mut fx = ModelEffects::new(&mut e.m, 0);
            let mut t = Table::new(
                Stage2::new(Vmid(VMID)),
                Geometry::stage2(Granule::K4, 40).expect("40-bit IPA"),
                arena,
                &mut fx,
            )
            .expect("root");
            t.set_invalidator(policy);
            t.activate(&mut fx);
            let regs = t.registers();
            for pe in 1..pes {
                for (reg, value) in regs {
                    e.ev(
                        pe,
                        Event::SysReg {
                            reg: reg.into(),
                            value,
                        },
                    );
                }
            }
            AnyTable::S2(t)
        } else {
            let mut fx = ModelEffects::new(&mut e.m, 0);
            let mut t = Table::new(
                El1Stage1::new(Asid(ASID)),
                Geometry::stage1(Granule::K4, 48).expect("48-bit VA"),
                arena,
                &mut fx,
            )
            .expect("root");
            t.set_invalidator(policy);
            t.activate(&mut fx);
            let regs = t.registers();
            for pe in 1..pes {
                for (reg, value) in regs {
                    e.ev(
                        pe,
                        Event::SysReg {
                            reg: reg.into(),
                            value,
                        },
                    );
                }
            }
            AnyTable::S1(t)
        };
        e.t = Some(t);
        e
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

    /// Runs `f` on the table with effects issued by PE 0.
    fn with<T>(&mut self, f: impl FnOnce(&mut AnyTable, &mut ModelEffects<'_>) -> T) -> T {
        let mut t = self.t.take().expect("table");
        let r = {
            let mut fx = if self.oracle {
                ModelEffects::oracle(&mut self.m, 0)
            } else {
                ModelEffects::new(&mut self.m, 0)
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

    /// Flushes what the operations left outstanding (the policy decides).
    pub fn flush(&mut self) {
        self.with(|t, fx| match t {
            AnyTable::S2(t) => t.flush(fx),
            AnyTable::S1(t) => t.flush(fx),
        });
    }

    /// Every vCPU reads (or writes) each address; a spurious fault is taken
    /// and counted by the model where a stale stricter entry is used.
    pub fn touch(&mut self, addrs: &[u64], write: bool) {
        let key = self.key();
        let need = if write { grant::WRITE } else { grant::READ };
        for pe in 1..self.pes.max(2) {
            for &a in addrs {
                let _ = self.m.access(pe.min(self.pes - 1), key, a, need);
            }
        }
    }

    /// Every vCPU executes at each address.
    pub fn exec(&mut self, addrs: &[u64]) {
        let key = self.key();
        for pe in 1..self.pes.max(2) {
            for &a in addrs {
                let _ = self.m.access(pe.min(self.pes - 1), key, a, grant::EXEC);
            }
        }
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

    /// vCPU on PE `from` moves to PE `to`: `to` installs the VM's stage 2.
    pub fn migrate(&mut self, from: usize, to: usize) {
        let regs = match &self.t {
            Some(AnyTable::S2(t)) => t.registers(),
            _ => return,
        };
        let _ = from;
        for (reg, value) in regs {
            self.ev(
                to,
                Event::SysReg {
                    reg: reg.into(),
                    value,
                },
            );
        }
    }

    /// PEs in the model.
    pub fn pes(&self) -> usize {
        self.pes
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
    }
}

/// Guest memory base (IPA / VA) and host frames.
const BASE: u64 = G1;
const FRAMES: u64 = 0x10_0000_0000;

/// Runs workload `name` on a fresh environment made by `env`.
pub fn run(name: &str, mk: &mut dyn FnMut(bool) -> Env, dead_aware: bool) -> Env {
    let stage2 = NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .is_some_and(|(_, r)| *r == "stage 2");
    let mut e = mk(stage2);
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
            // Xen-style: a backend unmaps foreign pages one by one.
            e.map(BASE, BASE + 16384 * K, FRAMES, Perm::Rw, false);
            e.flush();
            for _ in 0..256 {
                let p = BASE + e.rng.below(16384) * K;
                e.unmap(p, p + K);
                e.flush();
                e.touch(&[p + K], false);
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
            let pes = e.pes().max(2);
            for i in 0..64u64 {
                let from = 1 + (i as usize % (pes - 1).max(1));
                let to = 1 + ((i as usize + 1) % (pes - 1).max(1));
                e.migrate(from, to);
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
