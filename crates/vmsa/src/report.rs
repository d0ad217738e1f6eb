//! What an operation changed, precisely enough that the invalidation
//! planner can decide from the report alone.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

bitflags::bitflags! {
    /// How the descriptors of one [`Change`] changed.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ChangeFlags: u16 {
        /// The old descriptor was valid: a TLB or walk cache may hold it.
        const WAS_VALID = 1 << 0;
        /// The new descriptor is valid.
        const IS_VALID = 1 << 1;
        /// A table descriptor on the walk for this range was removed or
        /// replaced: walk-cache entries for it may remain, so the
        /// invalidation must cover all levels, not only the leaves. Leaves
        /// removed with a table are reported at their own level with this
        /// flag; a table removed empty is reported at its own level.
        const TABLE_REMOVED = 1 << 2;
        /// The output address changed (or the mapping was removed).
        const OUTPUT_CHANGED = 1 << 3;
        /// Some right was added (a stale entry is only stricter).
        const RELAXED = 1 << 4;
        /// Some right was removed (a stale entry grants too much).
        const RESTRICTED = 1 << 5;
        /// Memory type or shareability changed.
        const ATTRS_CHANGED = 1 << 6;
        /// The size of the translation changed (block <-> table).
        const SIZE_CHANGED = 1 << 7;
        /// Done with break-before-make inside the operation: the old
        /// translation has already been invalidated and nothing stale can
        /// remain.
        const BBM_DONE = 1 << 8;
    }
}

/// A set of lookup levels, bit `n` for level `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LevelSet(pub u8);

impl LevelSet {
    /// No level.
    pub const EMPTY: LevelSet = LevelSet(0);

    /// The set holding only `level`.
    pub const fn only(level: u8) -> Self {
        LevelSet(1 << level)
    }

    /// Whether `level` is in the set.
    pub const fn contains(self, level: u8) -> bool {
        self.0 & (1 << level) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The deepest level in the set (the smallest entries).
    pub fn deepest(self) -> Option<u8> {
        (self.0 != 0).then(|| 7 - self.0.leading_zeros() as u8)
    }

    /// Union.
    pub const fn with(self, other: LevelSet) -> Self {
        LevelSet(self.0 | other.0)
    }
}

/// One run of consecutive descriptors at one level that changed the same
/// way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Input addresses covered by the changed descriptors (for a table of
    /// the upper VA range that ends at the top of the 64-bit space, `end`
    /// is 0).
    pub range: Range<u64>,
    /// Level of the changed descriptors.
    pub level: u8,
    /// How they changed.
    pub flags: ChangeFlags,
    /// Levels at which leaf entries translating `range` may have been cached
    /// before the change: the descriptors' own level for a leaf, the levels
    /// of the leaves below a removed table.
    pub cached_leaf_levels: LevelSet,
}

impl Change {
    /// Whether something a PE may have cached can be stale after this
    /// change until it is invalidated (the planner's starting point).
    pub fn may_leave_stale(&self) -> bool {
        self.flags.contains(ChangeFlags::WAS_VALID) && !self.flags.contains(ChangeFlags::BBM_DONE)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (
            self.flags.contains(ChangeFlags::WAS_VALID),
            self.flags.contains(ChangeFlags::IS_VALID),
        ) {
            (false, _) => "mapped",
            (true, false) if self.flags.contains(ChangeFlags::TABLE_REMOVED) => "table removed",
            (true, false) => "unmapped",
            (true, true) if self.flags.contains(ChangeFlags::TABLE_REMOVED) => "table -> block",
            (true, true) if self.flags.contains(ChangeFlags::SIZE_CHANGED) => "block -> table",
            (true, true) if self.flags.contains(ChangeFlags::OUTPUT_CHANGED) => "remapped",
            (true, true) => "changed",
        };
        write!(
            f,
            "L{} {:#x}..{:#x} {what}",
            self.level, self.range.start, self.range.end
        )?;
        let notes = [
            (ChangeFlags::RESTRICTED, "restricted"),
            (ChangeFlags::RELAXED, "relaxed"),
            (ChangeFlags::ATTRS_CHANGED, "attributes"),
            (ChangeFlags::BBM_DONE, "break-before-make done"),
        ];
        for (flag, note) in notes {
            if self.flags.contains(flag) {
                write!(f, ", {note}")?;
            }
        }
        Ok(())
    }
}

/// Everything one operation changed, in walk order; runs of identical
/// changes at one level are merged. Writing a descriptor's own value again
/// is not a change and does not appear.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeReport {
    /// The changes.
    pub changes: Vec<Change>,
    /// Table pages allocated by the operation.
    pub tables_allocated: usize,
    /// Table pages detached by the operation (released once the
    /// invalidation covering them has completed).
    pub tables_detached: usize,
}

impl ChangeReport {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Records a change, merging it with the previous one when it continues
    /// the same run.
    pub(crate) fn push(&mut self, change: Change) {
        if let Some(last) = self.changes.last_mut() {
            if last.range.end == change.range.start
                && last.level == change.level
                && last.flags == change.flags
                && last.cached_leaf_levels == change.cached_leaf_levels
            {
                last.range.end = change.range.end;
                return;
            }
        }
        self.changes.push(change);
    }

    /// The changes that may leave stale entries until invalidated.
    pub fn needing_invalidation(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.may_leave_stale())
    }
}
