//! Queries for drivers that explore many executions of the machine (the
//! litmus runner): a fingerprint of the state that decides what the
//! machine will allow from here on.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::ghost::Ghost;
use super::Machine;

impl Machine {
    /// PE `pe` has read the value a write by another PE left in the
    /// descriptor at `pa`, and has since completed a `DSB`: the write is
    /// visible to every observer (Armv8-A is other-multi-copy atomic), so
    /// walkers can no longer refill the entries it removed, and an
    /// invalidation issued from here on removes them. Returns how many
    /// stale entry runs became so.
    pub fn observed(&mut self, pe: usize, pa: u64) -> usize {
        let seq = self.seq;
        let mut n = 0;
        for g in &mut self.ghosts {
            let runs = (g.end - g.start) / crate::desc::entry_size(g.level);
            let covers = (g.slot..g.slot + 8 * runs.max(1)).contains(&(pa & !7));
            if covers && g.writer != pe && g.visible.is_none() {
                g.visible = Some(seq);
                n += 1;
            }
        }
        n
    }

    /// Feeds `h` with what decides the machine's future answers: each PE's
    /// base and control registers and pending invalidations, and every
    /// stale entry with its holders. Sequence numbers are left out; what
    /// they decide (whether a removal was visible before an invalidation
    /// was issued) is fed instead, and stale entries are fed as a set, not
    /// in the order they were made. Two machines reached by different
    /// orders of the same events with equal fingerprints answer alike.
    /// Table memory is not included (drivers hash their own copy).
    pub fn fingerprint<H: Hasher>(&self, h: &mut H) {
        for pe in &self.pes {
            (
                pe.vttbr,
                pe.vtcr,
                pe.ttbr0_el1,
                pe.tcr_el1,
                pe.ttbr0_el2,
                pe.tcr_el2,
            )
                .hash(h);
            pe.pending.len().hash(h);
            for p in &pe.pending {
                format!("{:?}", p.scope).hash(h);
                let mut before: Vec<u64> = self
                    .ghosts
                    .iter()
                    .filter(|g| {
                        g.visible.is_some_and(|v| v <= p.issued)
                            || g.s2_clear.is_some_and(|v| v <= p.issued)
                    })
                    .map(ghost_hash)
                    .collect();
                before.sort_unstable();
                before.hash(h);
            }
        }
        let mut ghosts: Vec<u64> = self.ghosts.iter().map(ghost_hash).collect();
        ghosts.sort_unstable();
        ghosts.hash(h);
        let mut ran: Vec<_> = self.ran_on.iter().map(|(k, v)| (*k, *v)).collect();
        ran.sort_by_key(|(k, _)| format!("{k:?}"));
        ran.hash(h);
        let mut owners: Vec<_> = self.owners.iter().map(|(k, v)| (*k, *v)).collect();
        owners.sort_by_key(|(k, _)| format!("{k:?}"));
        owners.hash(h);
    }
}

/// A stale entry's hash, without sequence numbers.
fn ghost_hash(g: &Ghost) -> u64 {
    let mut h = DefaultHasher::new();
    (
        g.tree,
        g.key,
        g.level,
        g.start,
        g.end,
        g.holders,
        g.slot,
        g.value,
        g.writer,
        g.visible.is_some(),
        g.s2_clear.is_some(),
        g.s2_gone,
    )
        .hash(&mut h);
    format!("{:?}", g.cached).hash(&mut h);
    h.finish()
}
