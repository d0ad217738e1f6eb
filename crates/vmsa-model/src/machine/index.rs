//! Where the ghosts are, for the lookups that would otherwise read every
//! one of them on every event.
//!
//! A correct invalidation policy leaves few ghosts: every flush removes
//! them, and below [`LINEAR`] a scan is cheapest. Without invalidation (the
//! `none` control, or a buggy policy) they pile up by the thousand, many
//! over the same addresses, and a scan per descriptor write, per access
//! and per completion point makes a replay quadratic in its length. So:
//!
//! - by address: each ghost at most [`SPAN`] long is filed under every
//!   [`BUCKET`]-sized piece of the address space it covers, in order;
//!   longer ones are listed apart. A write or an access reads the ghosts
//!   filed where it is, oldest first, and stops at the first that decides;
//! - prefixes: the leading ghosts a completion point can no longer report
//!   (already reported, or held by no PE), and those a DSB can no longer
//!   make visible (already visible), which those scans skip.
//!
//! The ghost vector stays the one truth, in its order (the first match
//! decides which ghost a message names). New ghosts are appended, and the
//! index catches up with them when asked; anything else that moves ghosts
//! (removals, splits) must call [`GhostIndex::reshaped`], which drops the
//! index to be rebuilt. Debug builds check every answer against a scan.

use std::collections::BTreeSet;

use super::ghost::Ghost;

/// Below this many ghosts, lookups scan.
pub const LINEAR: usize = 64;

/// Ghosts at most this long are filed by address.
pub const SPAN: u64 = 1 << 21;

/// The piece of address space ghosts are filed under (`log2`).
const BUCKET: u32 = 16;

/// The index. See the [module documentation](self).
#[derive(Clone, Debug, Default)]
pub struct GhostIndex {
    /// (bucket, position) for every bucket an indexed ghost at most
    /// [`SPAN`] long covers.
    small: BTreeSet<(u64, usize)>,
    /// Positions of the indexed ghosts longer than that, ascending.
    wide: Vec<usize>,
    /// Ghosts `[0, indexed)` are filed.
    indexed: usize,
    /// Ghosts `[0, settled)` are reported or held by no PE.
    pub settled: usize,
    /// Ghosts `[0, visible)` are visible to every walker.
    pub visible: usize,
}

/// The first position `ok` takes from two ascending sequences, merged.
fn merged_first(
    mut a: impl Iterator<Item = usize>,
    wide: &[usize],
    mut ok: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let mut w = wide.iter().copied().peekable();
    let mut x = a.next();
    loop {
        let i = match (x, w.peek().copied()) {
            (None, None) => return None,
            (Some(i), Some(j)) if j < i => {
                w.next();
                j
            }
            (Some(i), _) => {
                x = a.next();
                i
            }
            (None, Some(j)) => {
                w.next();
                j
            }
        };
        if ok(i) {
            return Some(i);
        }
    }
}

fn buckets(start: u64, end: u64) -> core::ops::RangeInclusive<u64> {
    (start >> BUCKET)..=((end - 1) >> BUCKET)
}

impl GhostIndex {
    /// The ghosts were removed, reordered or split: forget everything.
    pub fn reshaped(&mut self) {
        *self = GhostIndex::default();
    }

    /// The ghost at `at` (the last) covering `[start, old_end)` grew to
    /// end at `end`.
    pub fn extended(&mut self, at: usize, start: u64, old_end: u64, end: u64) {
        if at >= self.indexed || self.wide.last() == Some(&at) {
            return;
        }
        if end - start > SPAN {
            for b in buckets(start, old_end) {
                self.small.remove(&(b, at));
            }
            self.wide.push(at);
        } else {
            for b in buckets(old_end, end) {
                self.small.insert((b, at));
            }
        }
    }

    /// Files the ghosts appended since the last call.
    pub fn catch_up(&mut self, ghosts: &[Ghost]) {
        if ghosts.len() < LINEAR {
            return;
        }
        if self.indexed > ghosts.len() {
            // Fewer ghosts than filed: a removal nobody announced.
            debug_assert!(false, "ghosts removed without GhostIndex::reshaped");
            self.reshaped();
        }
        for (i, g) in ghosts.iter().enumerate().skip(self.indexed) {
            if g.end - g.start <= SPAN {
                for b in buckets(g.start, g.end) {
                    self.small.insert((b, i));
                }
            } else {
                self.wide.push(i);
            }
        }
        self.indexed = ghosts.len();
    }

    /// The first ghost (in order) overlapping `[start, end)` for which
    /// `pick` holds. [`catch_up`](Self::catch_up) first.
    pub fn first(
        &self,
        ghosts: &[Ghost],
        start: u64,
        end: u64,
        pick: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        #[cfg(debug_assertions)]
        let mut pick = pick;
        // Debug builds: what a scan finds, first (so that the last call of
        // a `pick` that notes something is the index's own).
        #[cfg(debug_assertions)]
        let scan =
            (0..ghosts.len()).find(|&i| ghosts[i].start < end && start < ghosts[i].end && pick(i));
        let found = self.find(ghosts, start, end, pick);
        #[cfg(debug_assertions)]
        assert_eq!(
            found, scan,
            "ghost index out of date for [{start:#x}, {end:#x})"
        );
        found
    }

    fn find(
        &self,
        ghosts: &[Ghost],
        start: u64,
        end: u64,
        mut pick: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let meets = |i: usize| ghosts[i].start < end && start < ghosts[i].end;
        let mut ok = |i: usize| meets(i) && pick(i);
        let found = if ghosts.len() < LINEAR || self.indexed != ghosts.len() {
            debug_assert!(ghosts.len() < LINEAR, "GhostIndex::catch_up not called");
            (0..ghosts.len()).find(|&i| ok(i))
        } else {
            let bs = buckets(start, end);
            let filed = |b: u64| self.small.range((b, 0)..(b + 1, 0)).map(|&(_, i)| i);
            if bs.start() == bs.end() {
                merged_first(filed(*bs.start()), &self.wide, ok)
            } else {
                let mut all: Vec<usize> = bs.flat_map(filed).collect();
                all.sort_unstable();
                all.dedup();
                merged_first(all.into_iter(), &self.wide, ok)
            }
        };
        found
    }

    /// Every ghost overlapping `[start, end)`, in order, into `out`.
    /// [`catch_up`](Self::catch_up) first.
    pub fn all(&self, ghosts: &[Ghost], start: u64, end: u64, out: &mut Vec<usize>) {
        out.clear();
        self.find(ghosts, start, end, |i| {
            out.push(i);
            false
        });
        #[cfg(debug_assertions)]
        {
            let scan: Vec<usize> = (0..ghosts.len())
                .filter(|&i| ghosts[i].start < end && start < ghosts[i].end)
                .collect();
            assert_eq!(
                *out, scan,
                "ghost index out of date for [{start:#x}, {end:#x})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::Stage;
    use crate::event::Origin;
    use crate::machine::ghost::Cached;
    use crate::machine::memory::Key;
    use proptest::prelude::*;

    const P: u64 = 4096;

    fn ghost(start: u64, end: u64) -> Ghost {
        Ghost {
            tree: 0,
            key: Key::Vmid(1),
            stage: Stage::Stage2,
            level: 3,
            start,
            end,
            cached: Cached::Walk { next: 0 },
            holders: [1, 0, 0],
            slot: 0,
            value: 0,
            since: 0,
            removed: Origin { seq: 0, line: 0 },
            writer: 0,
            visible: None,
            s2_clear: None,
            s2_gone: 0,
            reported: false,
            clean_at: 0,
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// A ghost of `len` pages at page `at`.
        Push(u64, u64),
        /// The last ghost grows by `len` pages.
        Extend(u64),
        /// Every `n`th ghost goes.
        Remove(usize),
        /// Which ghosts meet pages `[at, at + len)`, and the first whose
        /// position is `r` modulo `m`.
        Query(u64, u64, usize, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..2048u64, prop_oneof![1..64u64, 500..1200u64])
                .prop_map(|(a, l)| Step::Push(a, l)),
            1 => (1..700u64).prop_map(Step::Extend),
            1 => (8..40usize).prop_map(Step::Remove),
            4 => (0..2100u64, 1..40u64, 1..5usize, 0..5usize)
                .prop_map(|(a, l, m, r)| Step::Query(a, l, m, r)),
        ]
    }

    proptest! {
        /// The index answers as a scan of the ghosts does, through
        /// appends, growth of the last ghost and announced removals.
        #[test]
        fn answers_as_a_scan(
            first in proptest::collection::vec((0..2048u64, 1..64u64), LINEAR..LINEAR + 40),
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            // At least LINEAR ghosts to begin with, so that the index works.
            let mut ghosts: Vec<Ghost> =
                first.iter().map(|&(a, l)| ghost(a * P, (a + l) * P)).collect();
            let mut index = GhostIndex::default();
            for s in steps {
                match s {
                    Step::Push(a, l) => ghosts.push(ghost(a * P, (a + l) * P)),
                    Step::Extend(l) => {
                        if let Some(g) = ghosts.last_mut() {
                            let old = g.end;
                            g.end += l * P;
                            let (start, end) = (g.start, g.end);
                            index.extended(ghosts.len() - 1, start, old, end);
                        }
                    }
                    Step::Remove(n) => {
                        let mut i = 0;
                        ghosts.retain(|_| {
                            i += 1;
                            i % n != 0
                        });
                        index.reshaped();
                    }
                    Step::Query(a, l, m, r) => {
                        index.catch_up(&ghosts);
                        let (s, e) = (a * P, (a + l) * P);
                        let meets: Vec<usize> = (0..ghosts.len())
                            .filter(|&i| ghosts[i].start < e && s < ghosts[i].end)
                            .collect();
                        let mut all = Vec::new();
                        index.all(&ghosts, s, e, &mut all);
                        prop_assert_eq!(&all, &meets);
                        let first = index.first(&ghosts, s, e, |i| i % m == r);
                        prop_assert_eq!(first, meets.iter().copied().find(|&i| i % m == r));
                    }
                }
            }
        }
    }
}
