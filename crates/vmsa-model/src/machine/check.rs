//! What the checker reports, and how it explains it.

use core::fmt;

use crate::event::Origin;

/// The kinds of violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// After a completion point a PE may still use an entry that grants
    /// more than the tables do (another output, or a permission the tables
    /// no longer grant).
    StaleTranslation,
    /// A valid descriptor replaced by a different valid one where the Arm
    /// ARM requires break-before-make (D8.17.1).
    BbmValidToValid,
    /// A descriptor made valid while an entry from an earlier value, which
    /// conflicts with it, may still be cached ("invalid unclean -> valid").
    BbmUncleanToValid,
    /// A table or data page released while a PE may still walk through it
    /// or translate to it.
    UseAfterFree,
    /// A VMID or ASID shared by two live trees, moved, or handed to a new
    /// owner while entries of the old owner may remain.
    IdReuse,
    /// One table page linked into two trees (or twice into one).
    DoubleUse,
    /// A system register programmed against the architecture's rules for
    /// it, as far as the input shows the registers: a RES0 field set (an
    /// ASID in TTBR0_EL2 while HCR_EL2.E2H is 0, VMID bits beyond the
    /// VMID size, BADDR bits below the root's alignment), or a stage 2
    /// geometry (VTCR_EL2) that is not a consistent configuration.
    RegisterProgramming,
    /// Casemate's lock discipline, checked only on request
    /// ([`Config::locks`](crate::Config::locks)): a write to a table's
    /// memory by a PE that does not hold the lock of its tree's root, or to
    /// a tree whose root has no lock.
    LockDiscipline,
}

impl ViolationKind {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::StaleTranslation => "stale translation",
            ViolationKind::BbmValidToValid => "BBM valid->valid",
            ViolationKind::BbmUncleanToValid => "BBM invalid unclean->valid",
            ViolationKind::UseAfterFree => "use after free",
            ViolationKind::IdReuse => "VMID/ASID reuse",
            ViolationKind::DoubleUse => "table page used twice",
            ViolationKind::RegisterProgramming => "register programming",
            ViolationKind::LockDiscipline => "lock discipline",
        }
    }
}

/// One violation, with what a person needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What went wrong.
    pub kind: ViolationKind,
    /// The event at which it was detected.
    pub at: Origin,
    /// The descriptor (table slot) or page concerned.
    pub location: u64,
    /// The PEs that may hold the offending entry (bit i: PE i), if any.
    pub pes: u64,
    /// What happened, in words: which entry, since when, what should have
    /// removed it.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {:#x}", self.kind.name(), self.location)?;
        if self.at.line != 0 {
            write!(f, " (line {}, event {})", self.at.line, self.at.seq)?;
        } else {
            write!(f, " (event {})", self.at.seq)?;
        }
        if self.pes != 0 {
            write!(f, " on {}", pe_list(self.pes))?;
        }
        write!(f, ": {}", self.explanation)
    }
}

/// "PE 0, PE 2" for a mask.
pub fn pe_list(mask: u64) -> String {
    let pes: Vec<String> = (0..64)
        .filter(|i| mask >> i & 1 == 1)
        .map(|i| format!("PE {i}"))
        .collect();
    pes.join(", ")
}
