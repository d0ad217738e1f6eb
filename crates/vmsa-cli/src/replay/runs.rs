//! Runs of pages: a map from disjoint page ranges `[start, end)` to a
//! value that moves along the run (a frame, a frame and permissions), so
//! that an address space's contents and table cost one entry per run, not
//! one per page: an 80-page `mmap` is one insertion, its `munmap` one
//! removal.

use std::collections::BTreeMap;

/// A value carried by a run: what it is at `offset` bytes into the run.
pub trait Shift: Copy + PartialEq {
    /// The value `offset` bytes (a multiple of the page size) on.
    fn shift(self, offset: u64) -> Self;
}

/// A frame: consecutive pages, consecutive frames.
impl Shift for u64 {
    fn shift(self, offset: u64) -> Self {
        self + offset
    }
}

/// A frame and what goes with every page of the run.
impl<T: Copy + PartialEq> Shift for (u64, T) {
    fn shift(self, offset: u64) -> Self {
        (self.0 + offset, self.1)
    }
}

/// Disjoint runs keyed by their start: `start -> (end, value at start)`.
/// Adjacent runs that continue each other are merged, so the map stays as
/// small as the ranges it describes.
#[derive(Clone, Debug)]
pub struct Runs<V> {
    map: BTreeMap<u64, (u64, V)>,
}

impl<V> Default for Runs<V> {
    fn default() -> Self {
        Runs {
            map: BTreeMap::new(),
        }
    }
}

impl<V: Shift> Runs<V> {
    /// The run holding `at`, as `(start, end, value at start)`.
    fn holding(&self, at: u64) -> Option<(u64, u64, V)> {
        self.map
            .range(..=at)
            .next_back()
            .filter(|(_, &(end, _))| end > at)
            .map(|(&s, &(e, v))| (s, e, v))
    }

    /// The value at `at`.
    pub fn get(&self, at: u64) -> Option<V> {
        self.holding(at).map(|(s, _, v)| v.shift(at - s))
    }

    /// Splits the run straddling `at`, if any, so that a run starts there.
    fn split_at(&mut self, at: u64) {
        if let Some((s, e, v)) = self.holding(at) {
            if s < at {
                self.map.insert(s, (at, v));
                self.map.insert(at, (e, v.shift(at - s)));
            }
        }
    }

    /// The parts of runs inside `[s, e)`, clipped to it, in order.
    pub fn within(&self, s: u64, e: u64) -> Vec<(u64, u64, V)> {
        let mut out = Vec::new();
        if s >= e {
            return out;
        }
        if let Some((rs, re, v)) = self.holding(s) {
            if rs < s {
                out.push((s, re.min(e), v.shift(s - rs)));
            }
        }
        for (&rs, &(re, v)) in self.map.range(s..e) {
            out.push((rs, re.min(e), v));
        }
        out
    }

    /// Removes `[s, e)` and returns what was there, clipped, in order.
    pub fn remove(&mut self, s: u64, e: u64) -> Vec<(u64, u64, V)> {
        if s >= e {
            return Vec::new();
        }
        self.split_at(s);
        self.split_at(e);
        let gone: Vec<(u64, u64, V)> = self
            .map
            .range(s..e)
            .map(|(&rs, &(re, v))| (rs, re, v))
            .collect();
        for &(rs, _, _) in &gone {
            self.map.remove(&rs);
        }
        gone
    }

    /// Sets `[s, e)`, which no run overlaps, to start at `v`, merged with
    /// a neighbour it continues.
    pub fn insert(&mut self, s: u64, e: u64, v: V) {
        debug_assert!(s < e && self.within(s, e).is_empty());
        let (mut start, mut end, mut value) = (s, e, v);
        if let Some((&ps, &(pe, pv))) = self.map.range(..s).next_back() {
            if pe == s && pv.shift(s - ps) == v {
                start = ps;
                value = pv;
            }
        }
        if let Some(&(ne, nv)) = self.map.get(&e) {
            if value.shift(e - start) == nv {
                self.map.remove(&e);
                end = ne;
            }
        }
        self.map.insert(start, (end, value));
    }

    /// The parts of `[s, e)` no run covers, in order.
    pub fn gaps(&self, s: u64, e: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = s;
        for (rs, re, _) in self.within(s, e) {
            if rs > at {
                out.push((at, rs));
            }
            at = re;
        }
        if at < e {
            out.push((at, e));
        }
        out
    }

    /// The first start and the last end, when there are runs.
    pub fn span(&self) -> Option<(u64, u64)> {
        let (&s, _) = self.map.first_key_value()?;
        let (_, &(e, _)) = self.map.last_key_value()?;
        Some((s, e))
    }

    /// Empties the map.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// The bytes the runs cover.
    #[cfg(test)]
    pub fn covered(&self) -> u64 {
        self.iter().map(|(s, e, _)| e - s).sum()
    }

    /// Every run, in order, as `(start, end, value at start)`.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, V)> + '_ {
        self.map.iter().map(|(&s, &(e, v))| (s, e, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Pages;

    const P: u64 = 4096;

    /// The page-by-page view of a map.
    fn pages(r: &Runs<u64>) -> Pages<u64, u64> {
        let mut out = Pages::new();
        for (s, e, v) in r.iter() {
            assert!(s < e, "empty run at {s:#x}");
            for p in (s..e).step_by(P as usize) {
                assert!(out.insert(p, v + (p - s)).is_none(), "overlap at {p:#x}");
            }
        }
        out
    }

    #[test]
    fn adjacent_runs_that_continue_each_other_merge() {
        let mut r = Runs::default();
        r.insert(0, 2 * P, 100 * P);
        r.insert(4 * P, 5 * P, 104 * P);
        r.insert(2 * P, 4 * P, 102 * P);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 5 * P, 100 * P)]);
        // A run that does not continue stays on its own.
        r.insert(5 * P, 6 * P, 7 * P);
        assert_eq!(r.iter().count(), 2);
        assert_eq!(r.get(3 * P), Some(103 * P));
        assert_eq!(r.get(6 * P), None);
        assert_eq!(r.remove(P, 3 * P), [(P, 3 * P, 101 * P)]);
        assert_eq!(r.gaps(0, 7 * P), [(P, 3 * P), (6 * P, 7 * P)]);
        assert_eq!(r.span(), Some((0, 6 * P)));
    }

    #[derive(Clone, Debug)]
    enum Call {
        Insert(u64, u64, u64),
        Remove(u64, u64),
    }

    proptest! {
        /// Runs hold exactly what a page-by-page map holds after the same
        /// insertions (into gaps) and removals, and answer queries alike.
        #[test]
        fn runs_match_a_page_map(
            calls in proptest::collection::vec(
                prop_oneof![
                    (0..48u64, 1..10u64, 0..64u64).prop_map(|(a, l, f)| Call::Insert(a, l, f)),
                    (0..48u64, 1..16u64).prop_map(|(a, l)| Call::Remove(a, l)),
                ],
                1..40,
            ),
        ) {
            let mut r = Runs::default();
            let mut want: Pages<u64, u64> = Pages::new();
            for c in calls {
                match c {
                    Call::Insert(a, l, f) => {
                        // Into the gaps only, as the space does.
                        for (gs, ge) in r.gaps(a * P, (a + l) * P) {
                            let v = f * P + (gs - a * P);
                            r.insert(gs, ge, v);
                            for p in (gs..ge).step_by(P as usize) {
                                want.insert(p, v + (p - gs));
                            }
                        }
                    }
                    Call::Remove(a, l) => {
                        let (s, e) = (a * P, (a + l) * P);
                        let gone = r.remove(s, e);
                        let mut expect = Vec::new();
                        for p in (s..e).step_by(P as usize) {
                            if let Some(v) = want.remove(&p) {
                                expect.push((p, v));
                            }
                        }
                        let mut got = Vec::new();
                        for (gs, ge, v) in gone {
                            for p in (gs..ge).step_by(P as usize) {
                                got.push((p, v + (p - gs)));
                            }
                        }
                        prop_assert_eq!(got, expect);
                    }
                }
                prop_assert_eq!(&pages(&r), &want);
                for p in 0..64u64 {
                    prop_assert_eq!(r.get(p * P), want.get(&(p * P)).copied());
                }
                // No two neighbours that continue each other are left apart.
                let runs: Vec<_> = r.iter().collect();
                for w in runs.windows(2) {
                    prop_assert!(!(w[0].1 == w[1].0 && w[0].2 + (w[0].1 - w[0].0) == w[1].2));
                }
            }
        }
    }
}
