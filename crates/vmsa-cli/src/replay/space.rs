//! One process's address space with Linux's semantics: the VMA list, the
//! pages that have contents (frames), and what the translation table must
//! hold, reconciled into table operations after every call.
//!
//! Nothing here touches a table: each call edits the VMAs and frames and
//! marks what it changed; [`Space::ops`] then compares the result with what
//! the table holds (a shadow kept here) and returns the operations that
//! make the table match, fewest first: one unmap across holes, one protect
//! per permission, one map per run of consecutive frames.
//!
//! Contents and table are kept as [`Runs`] of pages, not page by page: a
//! call costs in proportion to the ranges it names and meets, not to their
//! size (a replay's time goes to the tables and the model, not here).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::parse::{mremap, prot};
use super::runs::{Runs, Shift};
use crate::compare::workloads::Perm;

/// The page size (4 KiB granule).
pub const PAGE: u64 = 4096;

/// Addresses at or above this (beyond a 48-bit lower VA range) are not
/// replayed.
pub const VA_LIMIT: u64 = 1 << 48;

/// Where fake frames start (IPA), and the most there are.
const FRAMES: u64 = 0x10_0000_0000;
const FRAME_LIMIT: u64 = 1 << 47;

/// When pages get contents (and a table entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Populate {
    /// At the call that makes them accessible (mmap, mprotect, brk,
    /// mremap), as elfuse does, for ranges of at most this many bytes;
    /// larger ranges are populated as they are touched.
    Eager {
        /// The largest range populated at once.
        limit: u64,
    },
    /// Only when first touched.
    Lazy,
}

/// A table operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Map `[start, end)` to consecutive frames from `frame`.
    Map {
        /// First VA.
        start: u64,
        /// End VA.
        end: u64,
        /// Frame of `start`.
        frame: u64,
        /// Permissions.
        perm: Perm,
    },
    /// Unmap `[start, end)` (holes included).
    Unmap {
        /// First VA.
        start: u64,
        /// End VA.
        end: u64,
    },
    /// Change the permissions of what `[start, end)` maps.
    Protect {
        /// First VA.
        start: u64,
        /// End VA.
        end: u64,
        /// New permissions.
        perm: Perm,
    },
}

/// Why a call is not replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Its addresses reach beyond [`VA_LIMIT`] (or wrap).
    OutOfRange,
    /// A form the replay does not model (mremap of a zero-length shared
    /// mapping).
    Unsupported,
}

/// A VMA: end and `PROT_*` bits, keyed by its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Vma {
    end: u64,
    prot: u8,
}

/// The table permissions `PROT_*` bits give (`None`: no access, no entry).
pub fn perm_of(p: u8) -> Option<Perm> {
    let (r, w, x) = (
        p & prot::READ != 0,
        p & prot::WRITE != 0,
        p & prot::EXEC != 0,
    );
    match (r || w || x, w, x) {
        (false, _, _) => None,
        (true, true, true) => Some(Perm::Rwx),
        (true, true, false) => Some(Perm::Rw),
        (true, false, true) => Some(Perm::Rx),
        (true, false, false) => Some(Perm::Ro),
    }
}

/// `[addr, addr + len)` widened to pages, or why not.
pub fn pages(addr: u64, len: u64) -> Result<(u64, u64), Skip> {
    let s = addr & !(PAGE - 1);
    let e = addr
        .checked_add(len)
        .and_then(|e| e.checked_add(PAGE - 1))
        .ok_or(Skip::OutOfRange)?
        & !(PAGE - 1);
    if e > VA_LIMIT {
        return Err(Skip::OutOfRange);
    }
    Ok((s, e))
}

/// An address space.
#[derive(Clone, Debug)]
pub struct Space {
    vmas: BTreeMap<u64, Vma>,
    /// Pages with contents -> their frames.
    frames: Runs<u64>,
    /// Pages the table maps -> (frame, permissions).
    table: Runs<(u64, Perm)>,
    next_frame: u64,
    /// (start, current) of the heap, once known.
    brk: Option<(u64, u64)>,
    populate: Populate,
    /// Ranges changed since the last [`ops`](Self::ops).
    dirty: Vec<(u64, u64)>,
}

impl Space {
    /// An empty space.
    pub fn new(populate: Populate) -> Self {
        Space {
            vmas: BTreeMap::new(),
            frames: Runs::default(),
            table: Runs::default(),
            next_frame: FRAMES,
            brk: None,
            populate,
            dirty: Vec::new(),
        }
    }

    /// The VMAs, as `(start, end, prot)`, in address order.
    #[cfg(test)]
    pub fn vmas(&self) -> Vec<(u64, u64, u8)> {
        self.vmas.iter().map(|(&s, v)| (s, v.end, v.prot)).collect()
    }

    /// Pages with contents.
    #[cfg(test)]
    pub fn populated(&self) -> usize {
        (self.frames.covered() / PAGE) as usize
    }

    /// Pages the table maps.
    #[cfg(test)]
    pub fn mapped(&self) -> usize {
        (self.table.covered() / PAGE) as usize
    }

    /// What the table maps at page `va`.
    pub fn entry(&self, va: u64) -> Option<(u64, Perm)> {
        self.table.get(va & !(PAGE - 1))
    }

    /// The `PROT_*` bits of the VMA holding `va`.
    pub fn prot_at(&self, va: u64) -> Option<u8> {
        self.vma_at(va).map(|(_, v)| v.prot)
    }

    fn vma_at(&self, va: u64) -> Option<(u64, Vma)> {
        self.vmas
            .range(..=va)
            .next_back()
            .filter(|(_, v)| v.end > va)
            .map(|(&s, &v)| (s, v))
    }

    fn mark(&mut self, s: u64, e: u64) {
        if s < e {
            self.dirty.push((s, e));
        }
    }

    /// Splits the VMA straddling `at`, if any.
    fn split_at(&mut self, at: u64) {
        if let Some((s, v)) = self.vma_at(at) {
            if s < at {
                self.vmas.insert(s, Vma { end: at, ..v });
                self.vmas.insert(at, v);
            }
        }
    }

    /// The VMAs inside `[s, e)` after splitting at both ends.
    fn carve(&mut self, s: u64, e: u64) -> Vec<(u64, Vma)> {
        self.split_at(s);
        self.split_at(e);
        self.vmas
            .range(s..e)
            .map(|(&start, &v)| (start, v))
            .collect()
    }

    fn remove_vmas(&mut self, s: u64, e: u64) {
        for (start, _) in self.carve(s, e) {
            self.vmas.remove(&start);
        }
    }

    /// Removes the frames of `[s, e)` and returns them (start, end, frame
    /// of start).
    fn drop_frames(&mut self, s: u64, e: u64) -> Vec<(u64, u64, u64)> {
        self.frames.remove(s, e)
    }

    /// Gives every page of `[s, e)` without contents a fresh frame, in
    /// address order, while frames last.
    fn fill(&mut self, s: u64, e: u64) {
        for (gs, ge) in self.frames.gaps(s, e) {
            let left = FRAME_LIMIT.saturating_sub(self.next_frame);
            let take = (ge - gs).min(left);
            if take > 0 {
                self.frames.insert(gs, gs + take, self.next_frame);
                self.next_frame += take;
            }
            if take < ge - gs {
                return;
            }
        }
    }

    /// Populates `[s, e)` now if the policy says so for a range of that
    /// size made accessible with `p`.
    fn populate_new(&mut self, s: u64, e: u64, p: u8) {
        if perm_of(p).is_none() {
            return;
        }
        if let Populate::Eager { limit } = self.populate {
            if e - s <= limit {
                self.fill(s, e);
            }
        }
    }

    /// Gaps of `[s, e)` no VMA covers.
    fn gaps(&self, s: u64, e: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = s;
        if let Some((_, v)) = self.vma_at(s) {
            at = v.end.min(e);
        }
        for (&start, v) in self.vmas.range((Bound::Excluded(s), Bound::Excluded(e))) {
            if start > at {
                out.push((at, start));
            }
            at = at.max(v.end);
        }
        if at < e {
            out.push((at, e));
        }
        out
    }

    /// A successful call on `[addr, addr + len)` says it is mapped: the
    /// parts no VMA covers were mapped before the trace saw them (the
    /// program image and stack the kernel set up at execve). They become
    /// read/write VMAs, populated as any new mapping. Returns the pages
    /// added.
    pub fn cover(&mut self, addr: u64, len: u64) -> Result<u64, Skip> {
        let (s, e) = pages(addr, len)?;
        let mut added = 0;
        for (gs, ge) in self.gaps(s, e) {
            let p = prot::READ | prot::WRITE;
            self.vmas.insert(gs, Vma { end: ge, prot: p });
            self.populate_new(gs, ge, p);
            self.mark(gs, ge);
            added += (ge - gs) / PAGE;
        }
        Ok(added)
    }

    /// `mmap` returned `at` for `len` bytes with `p`: whatever was there is
    /// replaced (MAP_FIXED, or a hint the kernel took).
    pub fn mmap(&mut self, at: u64, len: u64, p: u8) -> Result<(), Skip> {
        let (s, e) = pages(at, len)?;
        if s == e {
            return Ok(());
        }
        self.remove_vmas(s, e);
        self.drop_frames(s, e);
        self.vmas.insert(s, Vma { end: e, prot: p });
        self.populate_new(s, e, p);
        self.mark(s, e);
        Ok(())
    }

    /// `munmap`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Skip> {
        let (s, e) = pages(addr, len)?;
        self.remove_vmas(s, e);
        self.drop_frames(s, e);
        self.mark(s, e);
        Ok(())
    }

    /// `mprotect` (call [`cover`](Self::cover) first for the parts the
    /// trace has not seen mapped).
    pub fn mprotect(&mut self, addr: u64, len: u64, p: u8) -> Result<(), Skip> {
        let (s, e) = pages(addr, len)?;
        let pieces = self.carve(s, e);
        for (start, v) in &pieces {
            self.vmas.insert(*start, Vma { prot: p, ..*v });
        }
        // Pages made accessible get contents now under eager population.
        for (start, v) in pieces {
            if perm_of(v.prot).is_none() {
                self.populate_new(start, v.end, p);
            }
        }
        self.mark(s, e);
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)`: the pages lose their contents (zero-filled
    /// again when next touched).
    pub fn dontneed(&mut self, addr: u64, len: u64) -> Result<(), Skip> {
        let (s, e) = pages(addr, len)?;
        self.drop_frames(s, e);
        self.mark(s, e);
        Ok(())
    }

    /// `brk` returned `result`; returns the range the heap grew by.
    pub fn brk(&mut self, result: u64) -> Result<Option<(u64, u64)>, Skip> {
        if result >= VA_LIMIT {
            return Err(Skip::OutOfRange);
        }
        let Some((start, cur)) = self.brk else {
            self.brk = Some((result, result));
            return Ok(None);
        };
        if result < start {
            // A failed brk returns the current break; below the start is
            // not a break at all.
            return Ok(None);
        }
        let mut grown = None;
        let (old_end, new_end) = (cur.next_multiple_of(PAGE), result.next_multiple_of(PAGE));
        if new_end > old_end {
            let p = prot::READ | prot::WRITE;
            self.remove_vmas(old_end, new_end);
            self.drop_frames(old_end, new_end);
            self.vmas.insert(
                old_end,
                Vma {
                    end: new_end,
                    prot: p,
                },
            );
            self.populate_new(old_end, new_end, p);
            self.mark(old_end, new_end);
            grown = Some((old_end, new_end));
        } else if new_end < old_end {
            self.remove_vmas(new_end, old_end);
            self.drop_frames(new_end, old_end);
            self.mark(new_end, old_end);
        }
        self.brk = Some((start, result));
        Ok(grown)
    }

    /// `mremap` of `[old, old + old_len)` to `new_len` bytes returned
    /// `result` (call [`cover`](Self::cover) first for the old range).
    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        result: u64,
    ) -> Result<(), Skip> {
        let (os, oe) = pages(old, old_len)?;
        let (ns, ne) = pages(result, new_len)?;
        if os == oe {
            return Err(Skip::Unsupported);
        }
        let (ol, nl) = (oe - os, ne - ns);
        // The extension takes the permissions of the old range's last page.
        let last = self
            .vma_at(oe - PAGE)
            .map_or(prot::READ | prot::WRITE, |(_, v)| v.prot);
        if ns == os {
            if nl < ol {
                self.remove_vmas(os + nl, oe);
                self.drop_frames(os + nl, oe);
            } else if nl > ol {
                self.remove_vmas(oe, ne);
                self.drop_frames(oe, ne);
                self.vmas.insert(
                    oe,
                    Vma {
                        end: ne,
                        prot: last,
                    },
                );
                self.populate_new(oe, ne, last);
            }
            self.mark(os, oe.max(ne));
            return Ok(());
        }
        let keep = ol.min(nl);
        let pieces = self.carve(os, os + keep);
        let moved = if flags & mremap::DONTUNMAP != 0 {
            let moved = self.drop_frames(os, oe);
            // Pages past the kept length are unmapped all the same.
            self.remove_vmas(os + keep, oe);
            moved
        } else {
            self.remove_vmas(os, oe);
            self.drop_frames(os, oe)
        };
        self.remove_vmas(ns, ne);
        self.drop_frames(ns, ne);
        for (start, v) in pieces {
            self.vmas.insert(
                start - os + ns,
                Vma {
                    end: v.end - os + ns,
                    ..v
                },
            );
        }
        for (ps, pe, frame) in moved {
            let pe = pe.min(os + keep);
            if ps < pe {
                self.frames.insert(ps - os + ns, pe - os + ns, frame);
            }
        }
        if nl > ol {
            self.vmas.insert(
                ns + ol,
                Vma {
                    end: ne,
                    prot: last,
                },
            );
            self.populate_new(ns + ol, ne, last);
        }
        self.mark(os, oe);
        self.mark(ns, ne);
        Ok(())
    }

    /// `execve`: the space is emptied (the heap's start is learnt again).
    pub fn reset(&mut self) {
        self.vmas.clear();
        self.frames.clear();
        self.brk = None;
        if let Some((s, e)) = self.table.span() {
            self.mark(s, e);
        }
    }

    /// A forked child's space: the same VMAs and contents, and a table
    /// still to fill.
    pub fn fork(&self) -> Space {
        let mut child = Space {
            table: Runs::default(),
            dirty: Vec::new(),
            ..self.clone()
        };
        if let (Some((&s, _)), Some((_, v))) =
            (child.vmas.first_key_value(), child.vmas.last_key_value())
        {
            let e = v.end;
            child.mark(s, e);
        }
        child
    }

    /// A touch of `va` found no contents: if a VMA allows access, the page
    /// gets a frame (the fault is served). Returns whether it did.
    pub fn fault(&mut self, va: u64) -> bool {
        let page = va & !(PAGE - 1);
        let Some((_, v)) = self.vma_at(page) else {
            return false;
        };
        if perm_of(v.prot).is_none() || self.frames.get(page).is_some() {
            return false;
        }
        self.fill(page, page + PAGE);
        self.mark(page, page + PAGE);
        self.frames.get(page).is_some()
    }

    /// The table operations that make the table match the VMAs and
    /// frames, for everything changed since the last call.
    pub fn ops(&mut self) -> Vec<Op> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in dirty {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut ops = Vec::new();
        for (s, e) in merged {
            self.reconcile(s, e, &mut ops);
        }
        ops
    }

    /// What the table should hold for `page` (the tests' view of what
    /// [`reconcile`](Self::reconcile) computes in one pass).
    #[cfg(test)]
    fn want(&self, page: u64) -> Option<(u64, Perm)> {
        let frame = self.frames.get(page)?;
        let perm = perm_of(self.vma_at(page)?.1.prot)?;
        Some((frame, perm))
    }

    fn reconcile(&mut self, s: u64, e: u64, ops: &mut Vec<Op>) {
        // One pass over the range in pieces: the table's runs, the frames'
        // runs and the VMAs, cut wherever one of them starts or ends, so
        // that within a piece every page is alike (same change, frames
        // consecutive) and a piece is decided as its first page would be.
        let old = self.table.within(s, e);
        let frames = self.frames.within(s, e);
        let mut vmas: Vec<(u64, u64, Option<Perm>)> = Vec::new();
        if let Some((vs, v)) = self.vma_at(s) {
            vmas.push((vs, v.end, perm_of(v.prot)));
        }
        for (&vs, v) in self.vmas.range((Bound::Excluded(s), Bound::Excluded(e))) {
            vmas.push((vs, v.end, perm_of(v.prot)));
        }
        let mut cuts: Vec<u64> = Vec::with_capacity(2 * (old.len() + frames.len() + vmas.len()));
        for &(a, b, _) in &old {
            cuts.extend([a, b]);
        }
        for &(a, b, _) in &frames {
            cuts.extend([a, b]);
        }
        for &(a, b, _) in &vmas {
            cuts.extend([a.max(s), b.min(e)]);
        }
        cuts.sort_unstable();
        cuts.dedup();
        // A cursor over each list (in order, pieces visited in order): the
        // entry holding `a`, as (its start, its value).
        fn holding<V: Copy>(list: &[(u64, u64, V)], i: &mut usize, a: u64) -> Option<(u64, V)> {
            while *i < list.len() && list[*i].1 <= a {
                *i += 1;
            }
            list.get(*i).filter(|r| r.0 <= a).map(|r| (r.0, r.2))
        }
        let (mut i, mut j, mut vi) = (0, 0, 0);
        let mut wanted: Vec<(u64, u64, (u64, Perm))> = Vec::new();
        let mut run: Option<Op> = None;
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let was = holding(&old, &mut i, a).map(|(rs, v)| v.shift(a - rs));
            let frame = holding(&frames, &mut j, a).map(|(rs, f)| f.shift(a - rs));
            let perm = holding(&vmas, &mut vi, a).and_then(|(_, p)| p);
            // What `want` gives: a frame, in a VMA that allows access.
            let new = frame.and_then(|f| perm.map(|perm| (f, perm)));
            if let Some(n) = new {
                wanted.push((a, b, n));
            }
            let next = match (was, new) {
                (None, None) => continue,
                (Some(_), None) => Op::Unmap { start: a, end: b },
                (None, Some((frame, perm))) => Op::Map {
                    start: a,
                    end: b,
                    frame,
                    perm,
                },
                (Some((f0, p0)), Some((frame, perm))) => {
                    if f0 != frame {
                        Op::Map {
                            start: a,
                            end: b,
                            frame,
                            perm,
                        }
                    } else if p0 != perm {
                        Op::Protect {
                            start: a,
                            end: b,
                            perm,
                        }
                    } else {
                        // Unchanged: a protect to the same permissions may
                        // run over it; anything else ends here.
                        match &mut run {
                            Some(Op::Protect { end, perm: rp, .. }) if *rp == perm => {
                                *end = b;
                            }
                            _ => ops.extend(run.take()),
                        }
                        continue;
                    }
                }
            };
            run = match (run, next) {
                (Some(Op::Unmap { start, .. }), Op::Unmap { end, .. }) => {
                    Some(Op::Unmap { start, end })
                }
                (
                    Some(Op::Protect {
                        start, perm: rp, ..
                    }),
                    Op::Protect { end, perm, .. },
                ) if rp == perm => Some(Op::Protect { start, end, perm }),
                (
                    Some(Op::Map {
                        start,
                        end: re,
                        frame: rf,
                        perm: rp,
                    }),
                    Op::Map {
                        start: ns,
                        end,
                        frame,
                        perm,
                    },
                ) if re == ns && rf + (ns - start) == frame && rp == perm => Some(Op::Map {
                    start,
                    end,
                    frame: rf,
                    perm,
                }),
                (prev, next) => {
                    ops.extend(prev);
                    Some(next)
                }
            };
        }
        ops.extend(run);
        // The table now holds what is wanted over the range, and nothing
        // else there.
        self.table.remove(s, e);
        for (a, b, v) in wanted {
            self.table.insert(a, b, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RW: u8 = prot::READ | prot::WRITE;
    const R: u8 = prot::READ;
    const RX: u8 = prot::READ | prot::EXEC;
    const B: u64 = 0x7f00_0000_0000;
    const K: u64 = PAGE;

    impl Space {
        /// The table, page by page.
        fn table_pages(&self) -> BTreeMap<u64, (u64, Perm)> {
            let mut out = BTreeMap::new();
            for (s, e, (f, perm)) in self.table.iter() {
                for p in (s..e).step_by(PAGE as usize) {
                    out.insert(p, (f + (p - s), perm));
                }
            }
            out
        }

        /// The contents, page by page (page -> frame).
        fn frame_pages(&self) -> BTreeMap<u64, u64> {
            let mut out = BTreeMap::new();
            for (s, e, f) in self.frames.iter() {
                for p in (s..e).step_by(PAGE as usize) {
                    out.insert(p, f + (p - s));
                }
            }
            out
        }
    }

    fn eager() -> Space {
        Space::new(Populate::Eager { limit: 1 << 20 })
    }

    #[test]
    fn mmap_populates_and_maps_one_run() {
        let mut s = eager();
        s.mmap(B, 3 * K - 100, RW).unwrap();
        let ops = s.ops();
        assert_eq!(
            ops,
            [Op::Map {
                start: B,
                end: B + 3 * K,
                frame: FRAMES,
                perm: Perm::Rw
            }]
        );
        assert_eq!(s.vmas(), [(B, B + 3 * K, RW)]);
        assert!(s.ops().is_empty());
    }

    #[test]
    fn map_fixed_replaces_what_was_there() {
        let mut s = eager();
        s.mmap(B, 8 * K, R).unwrap();
        s.ops();
        // ld.so: the text segment over the middle of the reservation.
        s.mmap(B + 2 * K, 3 * K, RX).unwrap();
        assert_eq!(
            s.vmas(),
            [
                (B, B + 2 * K, R),
                (B + 2 * K, B + 5 * K, RX),
                (B + 5 * K, B + 8 * K, R)
            ]
        );
        assert_eq!(
            s.ops(),
            [Op::Map {
                start: B + 2 * K,
                end: B + 5 * K,
                frame: FRAMES + 8 * K,
                perm: Perm::Rx
            }]
        );
        assert_eq!(s.entry(B + 4 * K), Some((FRAMES + 10 * K, Perm::Rx)));
        assert_eq!(s.entry(B + 5 * K), Some((FRAMES + 5 * K, Perm::Ro)));
    }

    #[test]
    fn partial_munmap_and_mprotect_split_areas() {
        let mut s = eager();
        s.mmap(B, 10 * K, RW).unwrap();
        s.ops();
        s.munmap(B + 2 * K, 2 * K).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: B + 2 * K,
                end: B + 4 * K
            }]
        );
        s.mprotect(B + 5 * K, 2 * K, R).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Protect {
                start: B + 5 * K,
                end: B + 7 * K,
                perm: Perm::Ro
            }]
        );
        assert_eq!(
            s.vmas(),
            [
                (B, B + 2 * K, RW),
                (B + 4 * K, B + 5 * K, RW),
                (B + 5 * K, B + 7 * K, R),
                (B + 7 * K, B + 10 * K, RW)
            ]
        );
        // One munmap over everything: one unmap across the hole.
        s.munmap(B, 10 * K).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: B,
                end: B + 10 * K
            }]
        );
        assert!(s.vmas().is_empty());
        assert_eq!(s.mapped(), 0);
    }

    #[test]
    fn prot_none_keeps_contents() {
        let mut s = eager();
        s.mmap(B, 4 * K, RW).unwrap();
        s.ops();
        s.mprotect(B, 4 * K, 0).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: B,
                end: B + 4 * K
            }]
        );
        assert_eq!(s.populated(), 4);
        s.mprotect(B, 4 * K, RW).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Map {
                start: B,
                end: B + 4 * K,
                frame: FRAMES,
                perm: Perm::Rw
            }]
        );
    }

    #[test]
    fn reservations_and_large_mappings_are_lazy() {
        let mut s = eager();
        // A PROT_NONE reservation: nothing populated.
        s.mmap(B, 64 << 20, 0).unwrap();
        assert!(s.ops().is_empty());
        // Part of it made accessible: populated (small).
        s.mprotect(B, 33 * K, RW).unwrap();
        assert_eq!(s.ops().len(), 1);
        assert_eq!(s.populated(), 33);
        // Over the limit: populated as touched.
        s.mprotect(B + (1 << 21), 2 << 20, RW).unwrap();
        assert!(s.ops().is_empty());
        assert!(s.fault(B + (1 << 21) + 5));
        assert!(!s.fault(B + (1 << 21) + 7));
        assert_eq!(s.ops().len(), 1);
        // Not accessible: no fault served.
        assert!(!s.fault(B + (8 << 20)));
        let mut lazy = Space::new(Populate::Lazy);
        lazy.mmap(B, 4 * K, RW).unwrap();
        assert!(lazy.ops().is_empty());
    }

    #[test]
    fn mremap_moves_grows_and_shrinks() {
        let mut s = eager();
        s.mmap(B, 4 * K, RW).unwrap();
        s.ops();
        // Shrink in place.
        s.mremap(B, 4 * K, 2 * K, 0, B).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: B + 2 * K,
                end: B + 4 * K
            }]
        );
        // Grow in place: the extension is new.
        s.mremap(B, 2 * K, 3 * K, 0, B).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Map {
                start: B + 2 * K,
                end: B + 3 * K,
                frame: FRAMES + 4 * K,
                perm: Perm::Rw
            }]
        );
        // Move (MREMAP_MAYMOVE) and grow: the frames follow.
        let to = B + 0x10_0000;
        s.mremap(B, 3 * K, 5 * K, mremap::MAYMOVE, to).unwrap();
        let ops = s.ops();
        assert_eq!(
            ops[0],
            Op::Unmap {
                start: B,
                end: B + 3 * K
            }
        );
        assert_eq!(
            ops[1],
            Op::Map {
                start: to,
                end: to + 2 * K,
                frame: FRAMES,
                perm: Perm::Rw
            }
        );
        assert_eq!(s.entry(to + 2 * K), Some((FRAMES + 4 * K, Perm::Rw)));
        // (Areas are not merged.)
        assert_eq!(
            s.vmas(),
            [
                (to, to + 2 * K, RW),
                (to + 2 * K, to + 3 * K, RW),
                (to + 3 * K, to + 5 * K, RW)
            ]
        );
        assert_eq!(s.mapped(), 5);
        // MREMAP_FIXED over an existing mapping replaces it.
        let fixed = B + 0x20_0000;
        s.mmap(fixed, 2 * K, R).unwrap();
        s.ops();
        s.mremap(to, K, K, mremap::MAYMOVE | mremap::FIXED, fixed)
            .unwrap();
        s.ops();
        assert_eq!(s.entry(fixed), Some((FRAMES, Perm::Rw)));
        assert_eq!(s.prot_at(fixed + K), Some(R));
        assert_eq!(s.entry(to), None);
    }

    #[test]
    fn brk_grows_and_shrinks_the_heap() {
        let mut s = eager();
        let h = 0x55_0000_0000;
        s.brk(h).unwrap();
        assert!(s.ops().is_empty());
        s.brk(h + 0x21000).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Map {
                start: h,
                end: h + 0x21000,
                frame: FRAMES,
                perm: Perm::Rw
            }]
        );
        s.brk(h + 0x800).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: h + K,
                end: h + 0x21000
            }]
        );
        // A failed brk reports the current break: no change.
        s.brk(h + 0x800).unwrap();
        assert!(s.ops().is_empty());
    }

    #[test]
    fn dontneed_drops_pages_and_faults_bring_new_ones() {
        let mut s = eager();
        s.mmap(B, 4 * K, RW).unwrap();
        s.ops();
        s.dontneed(B + K, 2 * K).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: B + K,
                end: B + 3 * K
            }]
        );
        assert!(s.fault(B + K));
        assert_eq!(
            s.ops(),
            [Op::Map {
                start: B + K,
                end: B + 2 * K,
                frame: FRAMES + 4 * K,
                perm: Perm::Rw
            }]
        );
    }

    #[test]
    fn cover_adds_what_the_kernel_mapped_at_execve() {
        let mut s = eager();
        s.mmap(B + 2 * K, K, R).unwrap();
        s.ops();
        assert_eq!(s.cover(B, 4 * K).unwrap(), 3);
        assert_eq!(
            s.vmas(),
            [
                (B, B + 2 * K, RW),
                (B + 2 * K, B + 3 * K, R),
                (B + 3 * K, B + 4 * K, RW)
            ]
        );
        assert_eq!(s.ops().len(), 2);
        s.mprotect(B, 4 * K, R).unwrap();
        assert_eq!(
            s.ops(),
            [Op::Protect {
                start: B,
                end: B + 4 * K,
                perm: Perm::Ro
            }]
        );
    }

    #[test]
    fn out_of_range_and_reset_and_fork() {
        let mut s = eager();
        assert_eq!(s.mmap(VA_LIMIT - K, 2 * K, RW), Err(Skip::OutOfRange));
        assert_eq!(s.munmap(u64::MAX - 10, 100), Err(Skip::OutOfRange));
        s.mmap(B, 2 * K, RW).unwrap();
        s.mmap(B + 8 * K, 2 * K, RW).unwrap();
        s.ops();
        let mut child = s.fork();
        assert_eq!(child.ops().len(), 2);
        assert_eq!(child.mapped(), 4);
        s.reset();
        assert_eq!(
            s.ops(),
            [Op::Unmap {
                start: B,
                end: B + 10 * K
            }]
        );
        assert!(s.vmas().is_empty());
    }

    /// One call on a 64-page window.
    #[derive(Clone, Debug)]
    enum Call {
        Mmap(u64, u64, u8),
        Munmap(u64, u64),
        Mprotect(u64, u64, u8),
        Mremap(u64, u64, u64, u64),
        DontNeed(u64, u64),
        Brk(u64),
        Fault(u64),
        Cover(u64, u64),
    }

    fn call() -> impl Strategy<Value = Call> {
        let page = 0..64u64;
        let len = 1..12u64;
        let p = 0..8u8;
        prop_oneof![
            (page.clone(), len.clone(), p.clone()).prop_map(|(a, l, p)| Call::Mmap(a, l, p)),
            (page.clone(), len.clone()).prop_map(|(a, l)| Call::Munmap(a, l)),
            (page.clone(), len.clone(), p).prop_map(|(a, l, p)| Call::Mprotect(a, l, p)),
            (page.clone(), len.clone(), len.clone(), page.clone())
                .prop_map(|(a, l, n, t)| Call::Mremap(a, l, n, t)),
            (page.clone(), len.clone()).prop_map(|(a, l)| Call::DontNeed(a, l)),
            (0..16u64).prop_map(Call::Brk),
            page.clone().prop_map(Call::Fault),
            (page, len).prop_map(|(a, l)| Call::Cover(a, l)),
        ]
    }

    proptest! {
        /// After any calls, the operations leave the table exactly as the
        /// areas and contents say, areas never overlap, and contents lie
        /// inside areas.
        #[test]
        fn the_table_follows_the_areas(
            calls in proptest::collection::vec(call(), 1..40),
            lazy in any::<bool>(),
        ) {
            let mut s = Space::new(if lazy { Populate::Lazy } else { Populate::Eager { limit: 8 * K } });
            let heap = B + 256 * K;
            s.brk(heap).unwrap();
            for c in calls {
                match c {
                    Call::Mmap(a, l, p) => s.mmap(B + a * K, l * K, p).unwrap(),
                    Call::Munmap(a, l) => s.munmap(B + a * K, l * K).unwrap(),
                    Call::Mprotect(a, l, p) => s.mprotect(B + a * K, l * K, p).unwrap(),
                    Call::Mremap(a, l, n, t) => {
                        let to = if t % 2 == 0 { B + a * K } else { B + 128 * K + t * K };
                        s.mremap(B + a * K, l * K, n * K, mremap::MAYMOVE, to).unwrap();
                    }
                    Call::DontNeed(a, l) => s.dontneed(B + a * K, l * K).unwrap(),
                    Call::Brk(n) => {
                        s.brk(heap + n * K).unwrap();
                    }
                    Call::Fault(a) => {
                        s.fault(B + a * K);
                    }
                    Call::Cover(a, l) => {
                        s.cover(B + a * K, l * K).unwrap();
                    }
                }
                // The table as it was, to apply the operations to.
                let mut table = s.table_pages();
                let ops = s.ops();
                let mut end = 0;
                for (start, v) in &s.vmas {
                    prop_assert!(*start >= end && v.end > *start);
                    end = v.end;
                }
                let frames = s.frame_pages();
                for &p in frames.keys() {
                    prop_assert!(s.vma_at(p).is_some(), "contents outside areas at {p:#x}");
                }
                // Frames are never shared.
                let mut used: Vec<u64> = frames.values().copied().collect();
                used.sort_unstable();
                used.dedup();
                prop_assert_eq!(used.len(), frames.len());
                let want: BTreeMap<u64, (u64, Perm)> = frames
                    .keys()
                    .filter_map(|&p| s.want(p).map(|w| (p, w)))
                    .collect();
                prop_assert_eq!(&s.table_pages(), &want);
                for op in ops {
                    match op {
                        Op::Map { start, end, frame, perm } => {
                            prop_assert!(start < end);
                            for p in (start..end).step_by(PAGE as usize) {
                                table.insert(p, (frame + (p - start), perm));
                            }
                        }
                        Op::Unmap { start, end } => {
                            prop_assert!(start < end);
                            for p in (start..end).step_by(PAGE as usize) {
                                table.remove(&p);
                            }
                        }
                        Op::Protect { start, end, perm } => {
                            prop_assert!(start < end);
                            for p in (start..end).step_by(PAGE as usize) {
                                if let Some(e) = table.get_mut(&p) {
                                    e.1 = perm;
                                }
                            }
                        }
                    }
                }
                prop_assert_eq!(&table, &want);
            }
        }
    }
}
