//! The firmware's side of `seq`: the sequences run on the CPU, the guest
//! reading between operations, and the TLBIs they executed printed for
//! `scripts/qemu-test` to compare with host-check's run in the model.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use vmsa::{Capabilities, TlbiOp};

use crate::guest::{self, Outcome};
use crate::pool::PoolAlloc;
use crate::scenarios::{fill, Runner};
use crate::seq::{self, Host, Seen};
use vmsa::arch::aarch64;

struct Cpu<'a> {
    hw: &'a mut aarch64::Cpu,
    caps: Capabilities,
}

/// The planner's capabilities for the sequences: what the CPU reports of
/// FEAT_TLBIRANGE and FEAT_TTL, nothing else.
fn caps(r: &Runner) -> Capabilities {
    Capabilities {
        tlbi_range: r.cpu.caps.tlbi_range,
        ttl: r.cpu.caps.ttl,
        ..Default::default()
    }
}

impl Host for Cpu<'_> {
    type Fx = aarch64::Cpu;
    type Alloc = PoolAlloc;

    fn fx(&mut self) -> &mut aarch64::Cpu {
        self.hw
    }

    fn table_memory(&mut self) -> PoolAlloc {
        PoolAlloc
    }

    fn caps(&self) -> Capabilities {
        self.caps
    }

    fn code(&self) -> Range<u64> {
        let (start, end) = crate::boot::guest_code();
        start..end
    }

    fn fill(&mut self, pa: u64, len: u64) {
        fill(pa, len);
    }

    fn read(&mut self, _vmid: u16, ipa: u64) -> Seen {
        match guest::read(ipa) {
            Outcome::Value(v) if v >> 48 == 0x5a5a => Seen::Page(v & 0xffff_ffff_ffff),
            Outcome::Value(v) => Seen::Other(format!("value {v:#x}")),
            Outcome::Fault(a) if a.is_translation() && a.ipa == ipa && !a.s1ptw() => Seen::Fault,
            o => Seen::Other(format!("{o}")),
        }
    }
}

/// Prints what host-check is given: the capabilities and the guest
/// program's pages.
pub fn print_config(r: &Runner) {
    let c = caps(r);
    let (start, end) = crate::boot::guest_code();
    println!(
        "seq config: tlbi_range={} ttl={} code={start:#x}..{end:#x}",
        c.tlbi_range, c.ttl
    );
}

/// Runs sequence `name` (one of `seq::NAMES`) and prints the TLBIs it
/// executed (`tlbi-log`, `tlbi counts`).
pub fn run(r: &mut Runner, name: &str) -> Result<String, String> {
    r.hw.take_tlbi_log();
    let caps = caps(r);
    let result = seq::run(
        name,
        &mut Cpu {
            hw: &mut r.hw,
            caps,
        },
    );
    let ops: Vec<(TlbiOp, u64)> =
        r.hw.take_tlbi_log()
            .iter()
            .map(|e| (e.op, e.operand))
            .collect();
    println!("tlbi-log {name}: {}", seq::format_log(&ops));
    println!("tlbi counts {name}: {}", seq::format_counts(&ops));
    result.map(|note| {
        format!(
            "{note}; {} TLBI(s), compared with the model by scripts/qemu-test",
            ops.len()
        )
    })
}
