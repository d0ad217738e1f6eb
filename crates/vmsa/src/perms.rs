//! What a translation lets software do, for deciding whether a change only
//! relaxed permissions (a stale stricter entry causes at worst a spurious
//! fault) or also restricted them (a stale entry is a security hole).

bitflags::bitflags! {
    /// Rights a leaf descriptor grants. Stage 1 and stage 2 map their own
    /// fields onto these.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Grants: u16 {
        /// Read (stage 1: privileged read; stage 2: S2AP\[0\]).
        const READ = 1 << 0;
        /// Write (stage 1: privileged write; stage 2: S2AP\[1\]).
        const WRITE = 1 << 1;
        /// Unprivileged (EL0) read, stage 1.
        const UNPRIV_READ = 1 << 2;
        /// Unprivileged (EL0) write, stage 1.
        const UNPRIV_WRITE = 1 << 3;
        /// Privileged (EL1, or EL2 in the EL2 regime) execution.
        const EXEC = 1 << 4;
        /// Unprivileged (EL0) execution.
        const UNPRIV_EXEC = 1 << 5;
        /// The Access Flag is set: the entry may be used and cached.
        const ACCESS = 1 << 6;
        /// DBM: hardware may make the entry writable by itself.
        const DIRTY = 1 << 7;
    }
}

/// How the rights of a leaf changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantChange {
    /// Some right was added.
    pub relaxed: bool,
    /// Some right was removed.
    pub restricted: bool,
}

impl GrantChange {
    /// Compares the rights before and after a change.
    pub fn between(old: Grants, new: Grants) -> Self {
        GrantChange {
            relaxed: !(new - old).is_empty(),
            restricted: !(old - new).is_empty(),
        }
    }
}
