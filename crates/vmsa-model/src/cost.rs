//! What TLB maintenance costs: counters kept by the machine, and named
//! profiles that turn them into estimated cycles.

use core::fmt;
use std::collections::BTreeMap;

use vmsa::tlbi::TlbiOp;

/// Counters for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    /// Events processed.
    pub events: u64,
    /// Descriptor stores that changed a value.
    pub writes: u64,
    /// TLBIs by operation (the operation names the shareability).
    pub tlbi: BTreeMap<TlbiOp, u64>,
    /// `DSB`s of a shareable domain that waited for TLB maintenance
    /// (`DSB ISH`, `DSB SY`, ...).
    pub dsb: u64,
    /// `DSB`s that wait for stores only (`DSB ISHST`) or the local PE only
    /// (`DSB NSH`).
    pub dsb_light: u64,
    /// `ISB`s.
    pub isb: u64,
    /// Entries removed from a PE's TLB that were still correct (the tables
    /// still held them), counted per PE and per entry kind: each is a
    /// refill walk later if the PE uses it again.
    pub collateral: u64,
    /// Faults taken on an entry stricter than the tables (a permission was
    /// relaxed without invalidation), each costing an exception and a local
    /// TLBI.
    pub spurious_faults: u64,
    /// Table walks to refill entries that an invalidation removed although
    /// they were correct. Under the model's adversarial caching every
    /// collateral entry is assumed used again, so this equals
    /// [`collateral`](Self::collateral) unless guests drive the model.
    pub refill_walks: u64,
}

impl Costs {
    /// Total TLBIs.
    pub fn tlbis(&self) -> u64 {
        self.tlbi.values().sum()
    }

    /// Broadcast TLBIs.
    pub fn broadcast_tlbis(&self) -> u64 {
        self.tlbi
            .iter()
            .filter(|(op, _)| op.is_broadcast())
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for Costs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TLBI", self.tlbis())?;
        if !self.tlbi.is_empty() {
            let ops: Vec<String> = self
                .tlbi
                .iter()
                .map(|(op, n)| format!("{} {}", n, op.mnemonic()))
                .collect();
            write!(f, " ({})", ops.join(", "))?;
        }
        write!(
            f,
            ", {} DSB (+{} ST/NSH), {} ISB, {} stores, {} collateral entries, {} refill walks, {} spurious faults",
            self.dsb,
            self.dsb_light,
            self.isb,
            self.writes,
            self.collateral,
            self.refill_walks,
            self.spurious_faults
        )
    }
}
