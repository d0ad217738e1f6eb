//! host-check: the firmware's vmsa sequences (`firmware/src/seq.rs`, the
//! same source) run on the host into vmsa's model. The model answers the
//! guest reads between the operations with its adversarial TLB (any
//! translation an invalidation has not provably removed may be used) and
//! counts the TLBIs; its checker reports stale entries, break-before-make
//! violations and use of freed table pages.
//!
//! For each sequence it prints, in the firmware's format,
//!
//!     tlbi-log <name>: <op> <operand>, ...
//!     tlbi counts <name>: <op>=<n> ...
//!     model <name>: ok ... | FAIL ...
//!
//! `scripts/qemu-test` compares the first two lines with the firmware's.
//!
//! Usage: vmsa-host-check tlbi_range=<bool> ttl=<bool> code=<start>..<end>
//! (the words of the firmware's `seq config:` line).

extern crate alloc;

#[path = "../../src/seq.rs"]
mod seq;

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::ExitCode;

use vmsa::{Arena, Capabilities, Effect, Pa, Recorder, TlbiOp};
use vmsa_model::desc::grant;
use vmsa_model::{Access, Config, Key, Machine, Origin};

use seq::{Host, Seen};

/// Table memory: one arena per table, 2 MiB apart from 4 GiB up (no data
/// page or guest code is there).
const ARENA_BASE: u64 = 0x1_0000_0000;
const ARENA_PAGES: usize = 512;

struct Model {
    machine: Machine,
    rec: Recorder,
    caps: Capabilities,
    code: Range<u64>,
    arenas: u64,
    /// Every TLBI the sequence issued, in order.
    tlbis: Vec<(TlbiOp, u64)>,
    /// Stale entry runs the model had PEs hold after the last read.
    stale_at_last_read: usize,
}

impl Model {
    fn new(caps: Capabilities, code: Range<u64>) -> Model {
        Model {
            // Two PEs, as the firmware's QEMU machine (-smp 2).
            machine: Machine::new(Config {
                pes: 2,
                ..Config::default()
            }),
            rec: Recorder::new(),
            caps,
            code,
            arenas: 0,
            tlbis: Vec::new(),
            stale_at_last_read: 0,
        }
    }

    /// Feeds what the operations did since the last call to the model, as
    /// PE 0's.
    fn sync(&mut self) {
        let effects = self.rec.take();
        for e in &effects {
            if let Effect::Tlbi { op, operand } = *e {
                self.tlbis.push((op, operand));
            }
        }
        self.machine.replay(0, &effects);
    }
}

impl Host for Model {
    type Fx = Recorder;
    type Alloc = Arena;

    fn fx(&mut self) -> &mut Recorder {
        &mut self.rec
    }

    fn table_memory(&mut self) -> Arena {
        let base = ARENA_BASE + self.arenas * (ARENA_PAGES as u64) * 4096;
        self.arenas += 1;
        Arena::new(Pa(base), ARENA_PAGES)
    }

    fn caps(&self) -> Capabilities {
        self.caps
    }

    fn code(&self) -> Range<u64> {
        self.code.clone()
    }

    fn fill(&mut self, _pa: u64, _len: u64) {}

    fn read(&mut self, vmid: u16, ipa: u64) -> Seen {
        self.sync();
        let access = self.machine.access(0, Key::Vmid(vmid), ipa, grant::READ);
        self.stale_at_last_read = self.machine.stale_runs();
        match access {
            Access::Ok { pa } => Seen::Page(pa),
            Access::Fault => Seen::Fault,
            Access::Stale { pa } => Seen::Other(format!("a stale entry may lead to {pa:#x}")),
            Access::SpuriousFault => Seen::Other("a spurious fault (stricter stale entry)".into()),
        }
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("not a boolean: {v}")),
    }
}

fn parse_hex(v: &str) -> Result<u64, String> {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|e| format!("{v}: {e}"))
}

fn parse_args() -> Result<(Capabilities, Range<u64>), String> {
    let mut caps = Capabilities::default();
    let mut code = None;
    for arg in std::env::args().skip(1) {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {arg}"))?;
        match k {
            "tlbi_range" => caps.tlbi_range = parse_bool(v)?,
            "ttl" => caps.ttl = parse_bool(v)?,
            "code" => {
                let (s, e) = v
                    .split_once("..")
                    .ok_or_else(|| format!("code: expected start..end, got {v}"))?;
                code = Some(parse_hex(s)?..parse_hex(e)?);
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    let code = code.ok_or("missing code=<start>..<end>")?;
    Ok((caps, code))
}

fn main() -> ExitCode {
    let (caps, code) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmsa-host-check: {e}");
            eprintln!("usage: vmsa-host-check tlbi_range=<bool> ttl=<bool> code=<start>..<end>");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for name in seq::NAMES {
        let mut m = Model::new(caps, code.clone());
        let result = seq::run(name, &mut m);
        m.sync();
        m.machine.finish(Origin::default());
        // What the model counted, per kind, in TlbiOp::ALL order.
        let counted: BTreeMap<TlbiOp, u64> = m.machine.costs().tlbi.clone();
        let mut by_model = Vec::new();
        for op in TlbiOp::ALL {
            for _ in 0..counted.get(&op).copied().unwrap_or(0) {
                by_model.push((op, 0));
            }
        }
        println!("tlbi-log {name}: {}", seq::format_log(&m.tlbis));
        println!("tlbi counts {name}: {}", seq::format_counts(&by_model));
        let violations = m.machine.violations();
        let verdict = match result {
            _ if seq::format_counts(&by_model) != seq::format_counts(&m.tlbis) => Err(format!(
                "the model counted {} but the sequence issued {}",
                seq::format_counts(&by_model),
                seq::format_counts(&m.tlbis)
            )),
            Err(e) => Err(format!("the model's answers differ from the sequence's expectations: {e}")),
            Ok(_) if !violations.is_empty() => Err(format!(
                "{} violation(s): {}",
                violations.len(),
                violations
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Ok(note) => Ok(format!(
                "{note}; every read as expected, no violation; stale entry runs held: {} at the last read, {} after the teardown (retired VMID, no TLBI)",
                m.stale_at_last_read,
                m.machine.stale_runs()
            )),
        };
        match verdict {
            Ok(s) => println!("model {name}: ok: {s}"),
            Err(s) => {
                failed = true;
                println!("model {name}: FAIL: {s}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
