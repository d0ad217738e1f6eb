//! Runs of descriptor writes: the library's stores of a map's or an
//! unmap's leaves in one table, taken at once where the writes would
//! only continue one another.

use super::{memory, Decoded, Machine, Origin};
use crate::desc::entry_size;

/// What a run of descriptor writes is, for
/// [`Machine::step_write_run`]'s shortcuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunShape {
    /// Invalid entries made alike, neighbouring leaves (a map).
    Made,
    /// Alike, neighbouring leaves made invalid (an unmap).
    Removed,
    /// Anything else: write by write.
    Mixed,
}

impl Machine {
    /// [`step_write`](Self::step_write) for `n` consecutive descriptors from
    /// `pa` holding `first`, `first + step`, ... (wrapping): `n` write
    /// events, in order, the same as `n` calls. The library's runs of
    /// leaves come this way
    /// ([`Effects::store_descriptors`](vmsa::Effects::store_descriptors));
    /// a run of leaf or invalid descriptors in one table page costs one
    /// look-up of the page.
    pub fn step_write_run(&mut self, pe: usize, pa: u64, n: usize, first: u64, step: u64) {
        let pa = pa & !7;
        let run = if self.config.locks || n == 0 {
            // The lock check reads the tables between writes.
            None
        } else {
            self.mem.leaf_run(pa, n, first, step)
        };
        let Some(slot) = run else {
            let mut value = first;
            for i in 0..n {
                let seq = self.seq + 1;
                self.step_write(pe, pa + 8 * i as u64, value, Origin { seq, line: 0 });
                value = value.wrapping_add(step);
            }
            return;
        };
        let pe = self.begin_event(pe);
        let mut olds = core::mem::take(&mut self.run_olds);
        olds.clear();
        self.mem
            .store_run(pa, n, (first, step), self.seq, &mut olds);
        let size = entry_size(slot.level);
        let shape = self.run_shape(slot, size, &olds, first, step);
        if shape == RunShape::Made {
            // A map's leaves over invalid entries, with no ghost anywhere:
            // invalid entries leave none and nothing can conflict, so the
            // writes only count and add leaves.
            let n = n as u64;
            self.seq += n - 1;
            self.costs.events += n - 1;
            self.costs.writes += n;
            self.note_written(slot.tree, slot.ia, slot.ia + size);
            self.note_written(slot.tree, slot.ia + size, slot.ia + n * size);
            self.mem.trees[slot.tree].leaves += n;
            self.run_olds = olds;
            return;
        }
        let mut value = first;
        for (i, &(old, since)) in olds.iter().enumerate() {
            if i == 1 && shape == RunShape::Removed {
                self.removed_run(slot, size, n as u64);
                break;
            }
            if i > 0 {
                // `begin_event` for the same PE.
                self.seq += 1;
                self.costs.events += 1;
            }
            let at = Origin {
                seq: self.seq,
                line: 0,
            };
            if old != value {
                self.costs.writes += 1;
                let slot = memory::Slot {
                    ia: slot.ia.wrapping_add(i as u64 * size),
                    ..slot
                };
                // No table is linked or unlinked along the run, so what
                // a write checks does not read the entries written after
                // it, already stored.
                self.changed(pe, pa + 8 * i as u64, slot, old, since, value, at);
            }
            value = value.wrapping_add(step);
        }
        self.run_olds = olds;
    }

    /// Which shortcut, if any, a run of `olds.len()` writes of `first`,
    /// `first + step`, ... from descriptor `slot` (entries of `size`)
    /// may take. Only runs whose leaves differ in nothing but their output
    /// address, each the next one's neighbour, qualify: those decode alike
    /// but for the address, so what the first write does the others
    /// continue. Capacity eviction, which could take a ghost between two
    /// writes, rules both out.
    fn run_shape(
        &self,
        slot: memory::Slot,
        size: u64,
        olds: &[(u64, u64)],
        first: u64,
        step: u64,
    ) -> RunShape {
        let n = olds.len() as u64;
        if n < 2 || self.config.capacity.is_some() {
            return RunShape::Mixed;
        }
        // Same bits but the output address, first to last, with no carry
        // out of it: every descriptor between has them too.
        let alike = |a: u64, b: u64| b > a && (a ^ b) & !crate::desc::OA_MASK == 0;
        let is_leaf =
            |v: u64| matches!(self.mem.decode(slot.tree, slot.level, v), Decoded::Leaf(_));
        let last = first.wrapping_add(step.wrapping_mul(n - 1));
        if step == size
            && alike(first, last)
            && self.ghosts.is_empty()
            && olds.iter().all(|&(o, _)| o == 0)
            && is_leaf(first)
        {
            return RunShape::Made;
        }
        let (old0, old_last) = (olds[0].0, olds[olds.len() - 1].0);
        if first == 0
            && step == 0
            && alike(old0, old_last)
            && olds
                .iter()
                .zip(0..)
                .all(|(&(o, _), k)| o == old0.wrapping_add(k * size))
            && is_leaf(old0)
        {
            return RunShape::Removed;
        }
        RunShape::Mixed
    }

    /// Writes 2.. of an unmap's run of `n` neighbouring, alike leaves from
    /// descriptor `slot` made invalid (see [`run_shape`](Self::run_shape)),
    /// the first already applied: each would extend the ghost the first
    /// left last, so the run extends it once.
    fn removed_run(&mut self, slot: memory::Slot, size: u64, n: u64) {
        self.seq += n - 1;
        self.costs.events += n - 1;
        self.costs.writes += n - 1;
        let (tree, next, end) = (slot.tree, slot.ia + size, slot.ia + n * size);
        self.note_written(tree, next, end);
        if self.mem.trees[tree].live() {
            debug_assert_eq!(
                self.ghosts.last().map(|g| g.end),
                Some(next),
                "the first write's ghost is last"
            );
            self.grow_last_ghost(end);
        }
        let t = &mut self.mem.trees[tree];
        t.leaves = t.leaves.saturating_sub(n - 1);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vmsa::{
        Arena, Capabilities, Geometry, Granule, Ipa, MapOptions, Pa, Planner, Profile, Stage2,
        Stage2Attrs, Table, Vmid,
    };

    use crate::desc::{grant, OA_MASK};
    use crate::event::Origin;
    use crate::{Config, Key, Machine, ModelEffects};

    const K: u64 = 4096;
    const ARENA: u64 = 0x8000_0000;

    /// A machine with a live stage 2 table mapping 2 MiB from IPA 0 as
    /// pages, warm on PE 1; then pages `[hole, hole + len)` unmapped (never
    /// the last, so the table stays),
    /// flushed or not (leaving ghosts). Returns it with the table's leaf
    /// pages and a leaf descriptor of it.
    fn machine(hole: u64, len: u64, flushed: bool) -> (Machine, Vec<u64>, u64) {
        let mut m = Machine::new(Config {
            pes: 3,
            ..Config::default()
        });
        let mut fx = ModelEffects::new(&mut m, 0);
        let mut t = Table::new(
            Stage2::new(Vmid(5)),
            Geometry::stage2(Granule::K4, 40).unwrap(),
            Arena::new(Pa(ARENA), 64),
            &mut fx,
        )
        .unwrap();
        t.set_invalidator(Box::new(Planner::new(
            Capabilities::armv8_4(),
            Profile::NATIVE,
        )));
        t.activate(&mut fx);
        t.map(
            Ipa(0)..Ipa(512 * K),
            Pa(0x4000_0000),
            Stage2Attrs::RAM,
            MapOptions::PAGES,
            &mut fx,
        )
        .unwrap();
        t.flush(&mut fx);
        for a in (0..512 * K).step_by(64 * K as usize) {
            let _ = m.access(1, Key::Vmid(5), a, grant::READ);
        }
        let mut fx = ModelEffects::new(&mut m, 0);
        // The last page stays: an emptied table would be removed.
        let (s, e) = (hole * K, (hole + len).min(511) * K);
        if s < e {
            t.unmap(Ipa(s)..Ipa(e), &mut fx).unwrap();
            if flushed {
                t.flush(&mut fx);
            }
        }
        let leaves: Vec<u64> = (0..64)
            .map(|i| ARENA + i * K)
            .filter(|&p| m.mem.slot(p).is_some_and(|s| s.level == 3))
            .collect();
        let template = (0..512)
            .map(|i| m.read(leaves[0] + 8 * i))
            .find(|&d| d != 0)
            .unwrap_or(0x4000_0000 | 0x7c3);
        drop(t);
        (m, leaves, template)
    }

    /// What two machines must agree on after the same writes.
    fn state(m: &Machine, page: u64) -> String {
        let words: Vec<u64> = (0..512).map(|i| m.read(page + 8 * i)).collect();
        format!(
            "{:?}\n{:?}\n{:?}\n{}\n{:?}\n{:?}",
            m.costs(),
            m.violations(),
            m.ghosts,
            m.seq,
            words,
            m.mem.trees.iter().map(|t| t.leaves).collect::<Vec<_>>()
        )
    }

    proptest! {
        /// A run of writes leaves the machine as the same writes one by
        /// one: memory, costs, ghosts (with their sequence numbers),
        /// leaf counts and reports; and so do the next completion point
        /// and accesses.
        #[test]
        fn a_run_is_its_writes(
            hole in 0..512u64,
            len in 0..600u64,
            flushed: bool,
            start in 0..512u64,
            n in 1..600usize,
            kind in 0..4u8,
            oa in 0..(1u64 << 28),
            raw: u64,
            raw_step: u64,
        ) {
            let (m, leaves, template) = machine(hole, len, flushed);
            let page = leaves[0];
            let n = n.min(512 - start as usize);
            let (first, step) = match kind {
                // A map's: a leaf like the table's, another address.
                0 => ((template & !OA_MASK) | ((oa * K) & OA_MASK), K),
                // An unmap's.
                1 => (0, 0),
                // The same leaf everywhere.
                2 => (template, 0),
                _ => (raw, raw_step),
            };
            let pa = page + 8 * start;
            let mut run = m.clone();
            run.step_write_run(2, pa, n, first, step);
            let mut each = m;
            let mut value = first;
            for i in 0..n {
                let seq = each.seq + 1;
                each.step_write(2, pa + 8 * i as u64, value, Origin { seq, line: 0 });
                value = value.wrapping_add(step);
            }
            prop_assert_eq!(state(&run, page), state(&each, page));
            for m in [&mut run, &mut each] {
                for a in (0..512 * K).step_by(16 * K as usize) {
                    let _ = m.access(1, Key::Vmid(5), a, grant::READ);
                }
                let seq = m.seq + 1;
                m.completion_point(Origin { seq, line: 0 });
            }
            prop_assert_eq!(state(&run, page), state(&each, page));
        }
    }
}
