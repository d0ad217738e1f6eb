//! Violations.
use core::fmt;

/// What kind of violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// Stale translation after a completion point.
    StaleTranslation,
    /// Break-before-make: valid replaced by valid.
    BbmValidToValid,
    /// Break-before-make: made valid while an old entry may remain cached.
    BbmUncleanToValid,
    /// Page released while walkable or mapped.
    UseAfterFree,
    /// VMID/ASID handed over while old entries may remain, or shared.
    IdReuse,
    /// Table page linked into two trees.
    DoubleUse,
}

/// One violation with its explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Kind.
    pub kind: ViolationKind,
    /// Explanation.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}
