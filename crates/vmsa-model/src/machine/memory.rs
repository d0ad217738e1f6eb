//! Physical memory holding tables, and the trees the roots span.

use rustc_hash::FxHashMap as HashMap;

use crate::desc::{decode, entry_size, Decoded, Leaf, Stage, OA_MASK};

/// Bytes per table page (4 KiB granule).
pub const PAGE: u64 = 4096;
/// Descriptors per table page.
pub const ENTRIES: usize = 512;

/// Index of a tree in [`Memory::trees`].
pub type TreeId = usize;

/// Who a tree's cached entries are tagged with: the key that must not be
/// shared by two live trees, nor handed to a new tree while entries of an
/// old one remain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A stage 2 table: its VMID.
    Vmid(u16),
    /// An EL1&0 stage 1 table in TTBR0_EL1 (the lower VA range): the VMID
    /// it runs under and its ASID.
    Asid {
        /// VMID (from VTTBR_EL2 when the table was installed).
        vmid: u16,
        /// ASID (TTBR0_EL1\[63:48\], or TTBR1_EL1's when TCR_EL1.A1 is 1).
        asid: u16,
    },
    /// An EL1&0 stage 1 table in TTBR1_EL1 (the upper VA range). A key of
    /// its own: TTBR0 and TTBR1 tables share the ASID (TCR_EL1.A1 picks
    /// whose), so entries of both carry it and ASID-based invalidation
    /// removes both, but they translate disjoint VA ranges and are two
    /// trees, not one tag handed between trees.
    Asid1 {
        /// VMID (from VTTBR_EL2 when the table was installed).
        vmid: u16,
        /// ASID (TTBR0_EL1\[63:48\] by default, TTBR1_EL1's when A1 is 1).
        asid: u16,
    },
    /// The EL2 regime with HCR_EL2.E2H 0 (no ASID, only TTBR0_EL2): one key
    /// for every EL2 table.
    El2,
    /// The EL2&0 regime (HCR_EL2.E2H 1): TTBR0_EL2 (`upper` false) or
    /// TTBR1_EL2 (`upper` true), with the ASID of TTBR0_EL2 (TTBR1_EL2's
    /// when TCR_EL2.A1 is 1).
    El20 {
        /// ASID.
        asid: u16,
        /// The TTBR1_EL2 (upper VA range) table.
        upper: bool,
    },
}

impl Key {
    /// The stage (descriptor format) this key's trees translate. The
    /// EL2&0 regime uses the EL1&0 stage 1 format (two privilege levels,
    /// nG).
    pub fn stage(self) -> Stage {
        match self {
            Key::Vmid(_) => Stage::Stage2,
            Key::Asid { .. } | Key::Asid1 { .. } | Key::El20 { .. } => Stage::El1Stage1,
            Key::El2 => Stage::El2Stage1,
        }
    }

    /// Whether the tables translate the upper VA range (TTBR1). Their input
    /// addresses in the model are VA\[47:0\]: the upper range of a 48-bit
    /// space is `0xffff_0000_0000_0000 + IA`, and a smaller one ends at the
    /// same place (its root sits at the top of the 48-bit index space).
    pub fn upper(self) -> bool {
        matches!(self, Key::Asid1 { .. } | Key::El20 { upper: true, .. })
    }

    /// The ASID the entries are tagged with, for keys that have one.
    pub fn asid(self) -> Option<u16> {
        match self {
            Key::Asid { asid, .. } | Key::Asid1 { asid, .. } | Key::El20 { asid, .. } => Some(asid),
            Key::Vmid(_) | Key::El2 => None,
        }
    }

    /// The same regime and VA range as `other` (tags of one space).
    pub fn same_space(self, other: Key) -> bool {
        match (self, other) {
            (Key::Asid { vmid: a, .. }, Key::Asid { vmid: b, .. })
            | (Key::Asid1 { vmid: a, .. }, Key::Asid1 { vmid: b, .. }) => a == b,
            (Key::El20 { upper: a, .. }, Key::El20 { upper: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }

    /// An input address of this key's trees as software writes it: the
    /// upper range's VAs have bits \[63:48\] set.
    pub fn full_address(self, ia: u64) -> u64 {
        if self.upper() {
            ia | 0xffff_0000_0000_0000
        } else {
            ia
        }
    }
}

impl core::fmt::Display for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Key::Vmid(v) => write!(f, "VMID {v}"),
            Key::Asid { vmid, asid } => write!(f, "ASID {asid} (VMID {vmid})"),
            Key::Asid1 { vmid, asid } => write!(f, "ASID {asid} (VMID {vmid}, TTBR1_EL1)"),
            Key::El2 => write!(f, "the EL2 regime"),
            Key::El20 { asid, upper } => write!(
                f,
                "ASID {asid} of the EL2&0 regime ({})",
                if *upper { "TTBR1_EL2" } else { "TTBR0_EL2" }
            ),
        }
    }
}

/// Where a table page sits: its tree, level and the first input address it
/// translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The tree.
    pub tree: TreeId,
    /// Level of the descriptors in this page.
    pub level: u8,
    /// Input address of entry 0.
    pub base: u64,
    /// The descriptor pointing at this page (`None` for root pages).
    pub parent: Option<u64>,
}

/// One 4 KiB page of table memory.
#[derive(Clone)]
pub struct Page {
    /// The descriptors.
    pub words: Box<[u64; ENTRIES]>,
    /// Sequence number of the last write to each descriptor.
    pub written: Box<[u64; ENTRIES]>,
    /// Where the page is linked, if it is reachable from a root.
    pub link: Option<Link>,
}

impl Page {
    fn zeroed() -> Self {
        Page {
            words: Box::new([0; ENTRIES]),
            written: Box::new([0; ENTRIES]),
            link: None,
        }
    }
}

/// A tree of tables, from its root.
#[derive(Clone, Debug)]
pub struct Tree {
    /// Root table address.
    pub root: u64,
    /// The stage, known once the root is installed in a register.
    pub stage: Stage,
    /// The key it was installed with.
    pub key: Option<Key>,
    /// Level of the root table.
    pub start_level: u8,
    /// Concatenated root pages (1 to 16).
    pub root_pages: u8,
    /// Installed in a translation table base register at least once: PEs
    /// may walk it from then on.
    pub installed: bool,
    /// Released: the tree is dead (Casemate `release_table` on the root,
    /// or the library releasing the root page).
    pub released: bool,
    /// Sequence number of the first installation.
    pub installed_at: u64,
    /// Valid leaf descriptors reachable from the root (for collateral
    /// counts).
    pub leaves: u64,
    /// Internal sequence number of the last time a PE switched a base
    /// register away from this tree.
    pub left_at: u64,
    /// Declared a root of page tables (Casemate `set_root_lock`).
    pub declared: bool,
}

impl Tree {
    /// PEs may walk it: installed and not released.
    pub fn live(&self) -> bool {
        self.installed && !self.released
    }

    /// Input address of the first entry of the first root page: 0, except
    /// for a TTBR1 table whose root covers less than the 48-bit space,
    /// which sits at the top of it (see [`Key::upper`]).
    pub fn root_base(&self) -> u64 {
        if self.key.is_some_and(Key::upper) {
            let span = ENTRIES as u64 * entry_size(self.start_level) * self.root_pages as u64;
            (1u64 << 48).saturating_sub(span)
        } else {
            0
        }
    }
}

/// The last walk of [`Memory::translate_at`] that reached a last-level
/// table: the table and the pages it read above it. A translation in the
/// same 2 MiB of the same tree then reads one page, not four, until one
/// of those pages is written or memory changes in another way.
#[derive(Clone, Copy, Debug)]
struct LastWalk {
    tree: TreeId,
    /// What the walk started from: root, start level, root pages, stage
    /// and the first input address.
    from: (u64, u8, u8, Stage, u64),
    /// `addr >> 21` of the addresses the table translates.
    region: u64,
    /// The last-level table and its first input address.
    table: u64,
    base: u64,
}

/// Table memory and the trees in it.
#[derive(Clone, Default)]
pub struct Memory {
    pages: HashMap<u64, Page>,
    /// See [`LastWalk`].
    last_walk: core::cell::Cell<Option<LastWalk>>,
    /// The pages the last walk read above the last level (`u64::MAX`
    /// where unused): a store to one of them drops it.
    walk_uppers: core::cell::Cell<[u64; 3]>,
    /// Regions initialised as a whole, sorted and disjoint: a `mem-init`
    /// of more pages than are worth keeping one by one (its size comes
    /// from the input and may be anything). Their pages exist and read as
    /// zero until written.
    zeroed: Vec<(u64, u64)>,
    /// Every tree ever seen (released ones stay, for explanations).
    pub trees: Vec<Tree>,
    /// Root address -> the current (not released) tree rooted there.
    pub roots: HashMap<u64, TreeId>,
}

/// One descriptor slot in a linked page, resolved.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The tree.
    pub tree: TreeId,
    /// Level of the descriptor.
    pub level: u8,
    /// First input address it translates.
    pub ia: u64,
}

impl Memory {
    /// The page containing `pa`, if table memory was ever initialised or
    /// written there.
    pub fn page(&self, pa: u64) -> Option<&Page> {
        self.pages.get(&(pa & !(PAGE - 1)))
    }

    /// The descriptor at `pa` (0 where memory was never written).
    pub fn read(&self, pa: u64) -> u64 {
        self.page(pa)
            .map(|p| p.words[(pa as usize & 0xfff) >> 3])
            .unwrap_or(0)
    }

    /// Stores `value` at `pa` (written by event `seq`), with one look-up of
    /// the page: returns the old value, the sequence number of the write it
    /// replaces (0 if none) and the descriptor's [`slot`](Self::slot).
    #[inline]
    pub fn store(&mut self, pa: u64, value: u64, seq: u64) -> (u64, u64, Option<Slot>) {
        self.written_page(pa & !(PAGE - 1));
        let page = self
            .pages
            .entry(pa & !(PAGE - 1))
            .or_insert_with(Page::zeroed);
        let i = (pa as usize & 0xfff) >> 3;
        let since = core::mem::replace(&mut page.written[i], seq);
        let old = core::mem::replace(&mut page.words[i], value);
        let slot = page.link.map(|link| Slot {
            tree: link.tree,
            level: link.level,
            ia: link.base.wrapping_add(i as u64 * entry_size(link.level)),
        });
        (old, since, slot)
    }

    /// The first of `n` consecutive descriptors from `pa` (all in one page
    /// of `tree`'s tables at `level`, a leaf level) if every one of them
    /// and of the values `first`, `first + step`, ... is a leaf or invalid
    /// there: a run of stores that links or unlinks no table.
    pub fn leaf_run(&self, pa: u64, n: usize, first: u64, step: u64) -> Option<Slot> {
        let i = (pa as usize & 0xfff) >> 3;
        let page = self.page(pa)?;
        let link = page.link?;
        let words = page.words.get(i..i.checked_add(n)?)?;
        if !crate::desc::is_leaf_level(link.level) {
            let mut value = first;
            for &old in words {
                if crate::desc::is_table(link.level, old)
                    || crate::desc::is_table(link.level, value)
                {
                    return None;
                }
                value = value.wrapping_add(step);
            }
        }
        Some(Slot {
            tree: link.tree,
            level: link.level,
            ia: link.base.wrapping_add(i as u64 * entry_size(link.level)),
        })
    }

    /// [`store`](Self::store) of `first`, `first + step`, ... at the `n`
    /// descriptors from `pa` (in one existing page), written by events
    /// `seq`, `seq + 1`, ...: pushes each old value and the sequence number
    /// of the write it replaces onto `olds`.
    pub fn store_run(
        &mut self,
        pa: u64,
        n: usize,
        (first, step): (u64, u64),
        seq: u64,
        olds: &mut Vec<(u64, u64)>,
    ) {
        let i = (pa as usize & 0xfff) >> 3;
        self.written_page(pa & !(PAGE - 1));
        let Some(page) = self.pages.get_mut(&(pa & !(PAGE - 1))) else {
            return;
        };
        let mut value = first;
        for k in 0..n {
            let since = core::mem::replace(&mut page.written[i + k], seq + k as u64);
            let old = core::mem::replace(&mut page.words[i + k], value);
            olds.push((old, since));
            value = value.wrapping_add(step);
        }
    }

    /// A store into `page` is coming: the last walk goes if it read it
    /// above the last level.
    #[inline(always)]
    fn written_page(&mut self, page: u64) {
        if self.walk_uppers.get().contains(&page) {
            self.last_walk.set(None);
        }
    }

    /// Zeroes the page at `pa` and forgets its link.
    pub fn init_page(&mut self, pa: u64) {
        self.last_walk.set(None);
        self.pages.insert(pa & !(PAGE - 1), Page::zeroed());
    }

    /// Forgets the page at `pa` (freed memory reads as zero).
    pub fn free_page(&mut self, pa: u64) {
        self.last_walk.set(None);
        let page = pa & !(PAGE - 1);
        self.pages.remove(&page);
        self.forget_zeroed(page, page.saturating_add(PAGE));
    }

    /// The pages of table memory in `[start, end)`, in address order: the
    /// pages a release of that range touches, found without stepping
    /// through a huge range page by page.
    pub fn pages_in(&self, start: u64, end: u64) -> Vec<u64> {
        let first = start & !(PAGE - 1);
        let mut v: Vec<u64> = self
            .pages
            .keys()
            .copied()
            .filter(|&p| p >= first && p < end)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether memory at `pa` exists.
    pub fn exists(&self, pa: u64) -> bool {
        let page = pa & !(PAGE - 1);
        self.pages.contains_key(&page) || self.zeroed.iter().any(|&(s, e)| s <= page && page < e)
    }

    /// `[start, end)` (page aligned, however large) is zeroed table memory:
    /// recorded as one region (the caller zeroes the pages kept in it).
    pub fn add_zeroed(&mut self, start: u64, end: u64) {
        self.last_walk.set(None);
        self.forget_zeroed(start, end);
        let at = self.zeroed.partition_point(|&(s, _)| s < start);
        self.zeroed.insert(at, (start, end));
    }

    /// Cuts `[start, end)` out of the zeroed regions (the caller frees the
    /// pages kept in it).
    pub fn forget_zeroed(&mut self, start: u64, end: u64) {
        self.last_walk.set(None);
        if self.zeroed.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(self.zeroed.len() + 1);
        for &(s, e) in &self.zeroed {
            if e <= start || end <= s {
                kept.push((s, e));
                continue;
            }
            if s < start {
                kept.push((s, start));
            }
            if end < e {
                kept.push((end, e));
            }
        }
        self.zeroed = kept;
    }

    /// Resolves the descriptor at `pa`: its tree, level and input address,
    /// when its page is linked.
    pub fn slot(&self, pa: u64) -> Option<Slot> {
        let link = self.page(pa)?.link?;
        let i = (pa & 0xfff) >> 3;
        Some(Slot {
            tree: link.tree,
            level: link.level,
            ia: link.base.wrapping_add(i * entry_size(link.level)),
        })
    }

    /// Decodes a descriptor value as `tree` would see it at `level`.
    pub fn decode(&self, tree: TreeId, level: u8, value: u64) -> Decoded {
        decode(self.trees[tree].stage, level, value)
    }

    /// Links the pages of `tree`'s root with its geometry.
    pub fn link_root(&mut self, tree: TreeId) {
        self.last_walk.set(None);
        let t = &self.trees[tree];
        let (root, level, pages, first) = (t.root, t.start_level, t.root_pages, t.root_base());
        let span = ENTRIES as u64 * entry_size(level);
        let mut leaves = 0;
        for i in 0..pages as u64 {
            let pa = root + i * PAGE;
            self.pages.entry(pa).or_insert_with(Page::zeroed);
            leaves += self.link(
                pa,
                Link {
                    tree,
                    level,
                    base: first + i * span,
                    parent: None,
                },
            );
        }
        self.trees[tree].leaves = leaves;
    }

    /// Links `page` (and, recursively, the tables it points to) at `link`.
    /// Returns the number of valid leaves now reachable through it. Pages
    /// already linked somewhere else are left alone (the caller reports
    /// the double use).
    pub fn link(&mut self, page: u64, link: Link) -> u64 {
        self.last_walk.set(None);
        let mut leaves = 0;
        let mut stack = vec![(page, link)];
        let stage = self.trees[link.tree].stage;
        while let Some((pa, link)) = stack.pop() {
            let p = self.pages.entry(pa).or_insert_with(Page::zeroed);
            p.link = Some(link);
            let words = *p.words;
            for (i, &w) in words.iter().enumerate() {
                match decode(stage, link.level, w) {
                    Decoded::Table { next } => {
                        let slot = pa + 8 * i as u64;
                        let linked_elsewhere = self
                            .pages
                            .get(&next)
                            .and_then(|c| c.link)
                            .is_some_and(|l| l.parent != Some(slot));
                        if !linked_elsewhere && next != pa {
                            stack.push((
                                next,
                                Link {
                                    tree: link.tree,
                                    level: link.level + 1,
                                    base: link.base + i as u64 * entry_size(link.level),
                                    parent: Some(slot),
                                },
                            ));
                        }
                    }
                    Decoded::Leaf(_) => leaves += 1,
                    Decoded::Fault => {}
                }
            }
        }
        leaves
    }

    /// Unlinks `page` and every page below it that was linked through it.
    /// Returns the number of valid leaves that were reachable.
    pub fn unlink(&mut self, page: u64) -> u64 {
        self.last_walk.set(None);
        let mut leaves = 0;
        let mut stack = vec![page];
        while let Some(pa) = stack.pop() {
            let Some(p) = self.pages.get_mut(&pa) else {
                continue;
            };
            let Some(link) = p.link.take() else { continue };
            let words = *p.words;
            let stage = self.trees[link.tree].stage;
            for (i, &w) in words.iter().enumerate() {
                match decode(stage, link.level, w) {
                    Decoded::Table { next } => {
                        let slot = pa + 8 * i as u64;
                        if self
                            .pages
                            .get(&next)
                            .and_then(|c| c.link)
                            .is_some_and(|l| l.parent == Some(slot))
                        {
                            stack.push(next);
                        }
                    }
                    Decoded::Leaf(_) => leaves += 1,
                    Decoded::Fault => {}
                }
            }
        }
        leaves
    }

    /// Calls `f(slot address, level, input address, decoded)` for every
    /// valid descriptor reachable from `page` (at `level`, first input
    /// address `base`) through current memory, tables before their
    /// contents. `stage` decodes.
    pub fn visit(
        &self,
        stage: Stage,
        page: u64,
        level: u8,
        base: u64,
        f: &mut dyn FnMut(u64, u8, u64, &Decoded),
    ) {
        let mut stack = vec![(page, level, base, 0u8)];
        while let Some((pa, level, base, depth)) = stack.pop() {
            let Some(p) = self.page(pa) else { continue };
            for (i, &w) in p.words.iter().enumerate() {
                let d = decode(stage, level, w);
                if matches!(d, Decoded::Fault) {
                    continue;
                }
                let ia = base + i as u64 * entry_size(level);
                f(pa + 8 * i as u64, level, ia, &d);
                if let Decoded::Table { next } = d {
                    // A loop in the tables cannot be deeper than 4 levels.
                    if depth < 4 && level < 3 {
                        stack.push((next, level + 1, ia, depth + 1));
                    }
                }
            }
        }
    }

    /// The first valid leaf reachable from `page` (at `level`, first input
    /// address `base`) whose output overlaps `[pa, end)`, in the order
    /// [`visit`](Self::visit) reaches descriptors: its slot and input
    /// address. Faster than a visit: only overlapping leaves are decoded.
    pub fn leaf_reaching(
        &self,
        stage: Stage,
        page: u64,
        level: u8,
        base: u64,
        pa: u64,
        end: u64,
    ) -> Option<(u64, u64)> {
        let mut stack = vec![(page, level, base, 0u8)];
        while let Some((tpa, level, base, depth)) = stack.pop() {
            let Some(p) = self.page(tpa) else { continue };
            let size = entry_size(level);
            for (i, &w) in p.words.iter().enumerate() {
                let ia = base + i as u64 * size;
                if w & 1 == 0 {
                    continue;
                }
                if w & 0b10 != 0 && level < 3 {
                    // A table descriptor (as `decode` reads it); a loop in
                    // the tables cannot be deeper than 4 levels.
                    if depth < 4 {
                        stack.push((w & OA_MASK, level + 1, ia, depth + 1));
                    }
                    continue;
                }
                let oa = w & OA_MASK & !(size - 1);
                if oa < end && pa < oa + size && matches!(decode(stage, level, w), Decoded::Leaf(_))
                {
                    return Some((tpa + 8 * i as u64, ia));
                }
            }
        }
        None
    }

    /// Calls `f(start, end, leaf)` for the translation of every part of
    /// `[start, end)` in `tree` (`None` where it faults), in address order
    /// only within each table.
    pub fn translate_range<F: FnMut(u64, u64, Option<(Leaf, u64)>) + ?Sized>(
        &self,
        tree: TreeId,
        start: u64,
        end: u64,
        f: &mut F,
    ) {
        let t = &self.trees[tree];
        let span = ENTRIES as u64 * entry_size(t.start_level);
        let first = t.root_base();
        if start < first {
            f(start, end.min(first), None);
        }
        for i in 0..t.root_pages as u64 {
            let base = first + i * span;
            let (s, e) = (start.max(base), end.min(base.saturating_add(span)));
            if s < e {
                self.translate_in(t.stage, t.root + i * PAGE, t.start_level, base, s, e, f);
            }
        }
        let top = first + t.root_pages as u64 * span;
        if end > top {
            f(start.max(top), end, None);
        }
    }

    /// The translation of the single address `addr` in `tree`: the leaf and
    /// the input address it starts at, or `None` where it faults. What
    /// [`translate_range`](Self::translate_range) reports for
    /// `[addr, addr + 1)`, with one walk and no callback.
    pub fn translate_at(&self, tree: TreeId, addr: u64) -> Option<(Leaf, u64)> {
        let t = &self.trees[tree];
        let span = ENTRIES as u64 * entry_size(t.start_level);
        let first = t.root_base();
        if addr < first {
            return None;
        }
        let i = (addr - first) / span;
        if i >= t.root_pages as u64 {
            return None;
        }
        let from = (t.root, t.start_level, t.root_pages, t.stage, first);
        let region = addr >> 21;
        if let Some(w) = self.last_walk.get() {
            if w.tree == tree && w.region == region && w.from == from {
                let idx = (addr - w.base) / PAGE;
                return match decode(t.stage, 3, self.read(w.table + 8 * idx)) {
                    Decoded::Leaf(l) => Some((l, w.base + idx * PAGE)),
                    _ => None,
                };
            }
        }
        let (mut page, mut level, mut base) = (t.root + i * PAGE, t.start_level, first + i * span);
        let mut uppers = [u64::MAX; 3];
        loop {
            let size = entry_size(level);
            let idx = (addr - base) / size;
            let ia = base + idx * size;
            match decode(t.stage, level, self.read(page + 8 * idx)) {
                Decoded::Leaf(l) => return Some((l, ia)),
                Decoded::Table { next } if level < 3 => {
                    uppers[level as usize % 3] = page & !(PAGE - 1);
                    if level == 2 {
                        self.last_walk.set(Some(LastWalk {
                            tree,
                            from,
                            region,
                            table: next,
                            base: ia,
                        }));
                        self.walk_uppers.set(uppers);
                    }
                    (page, level, base) = (next, level + 1, ia);
                }
                Decoded::Table { .. } | Decoded::Fault => return None,
            }
        }
    }

    /// Like [`translate_range`](Self::translate_range), from a given table.
    #[allow(clippy::too_many_arguments)]
    pub fn translate_in<F: FnMut(u64, u64, Option<(Leaf, u64)>) + ?Sized>(
        &self,
        stage: Stage,
        page: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        f: &mut F,
    ) {
        let size = entry_size(level);
        let first = (start - base) / size;
        let mut ia = base + first * size;
        let mut i = first;
        // A table page is looked up once, not per entry (as `read` of each
        // would; an unaligned `page`, which no descriptor gives, still is).
        let aligned = page & (PAGE - 1) == 0;
        let words = if aligned { self.page(page) } else { None }.map(|p| &p.words);
        while ia < end && i < ENTRIES as u64 {
            let (s, e) = (start.max(ia), end.min(ia + size));
            let w = match words {
                Some(words) => words[i as usize],
                None if aligned => 0,
                None => self.read(page + 8 * i),
            };
            match decode(stage, level, w) {
                Decoded::Fault => f(s, e, None),
                Decoded::Leaf(l) => f(s, e, Some((l, ia))),
                Decoded::Table { next } if level < 3 => {
                    self.translate_in(stage, next, level + 1, ia, s, e, f)
                }
                Decoded::Table { .. } => f(s, e, None),
            }
            ia += size;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An installed tree rooted at `root`.
    fn live_tree(root: u64, key: Key, start_level: u8, root_pages: u8) -> Tree {
        Tree {
            root,
            stage: key.stage(),
            key: Some(key),
            start_level,
            root_pages,
            installed: true,
            released: false,
            installed_at: 0,
            leaves: 0,
            left_at: 0,
            declared: false,
        }
    }

    /// `translate_at` agrees with `translate_range` over one address.
    #[test]
    fn translate_at_is_translate_range_of_one_address() {
        for (key, start_level, root_pages) in [
            (Key::Asid { vmid: 0, asid: 1 }, 0, 1),
            (Key::Asid1 { vmid: 0, asid: 1 }, 1, 1),
            (Key::Vmid(3), 1, 2),
        ] {
            let mut m = Memory::default();
            m.trees
                .push(live_tree(0x10_0000, key, start_level, root_pages));
            let first = m.trees[0].root_base();
            let span = ENTRIES as u64 * entry_size(start_level);
            let af = 1 << 10;
            // Root entry 1 -> a table with a block at 3 and a table at 5
            // holding pages at 0, 7 (AF clear: faults) and 511; the last
            // root page's entry 0 is a block where blocks exist.
            let mut w = |pa: u64, v: u64| {
                m.store(pa, v, 1);
            };
            w(0x10_0000 + 8, 0x20_0000 | 0b11);
            w(0x20_0000 + 8 * 3, 0x4000_0000 | af | 0b01);
            w(0x20_0000 + 8 * 5, 0x30_0000 | 0b11);
            // (Pages at level 3, blocks above.)
            let leaf = if start_level + 2 == 3 { 0b11 } else { 0b01 };
            w(0x30_0000, 0x5000_0000 | af | leaf);
            w(0x30_0000 + 8 * 7, 0x5000_7000 | leaf);
            w(0x30_0000 + 8 * 511, 0x5001_f000 | af | leaf);
            let last_root = 0x10_0000 + (root_pages as u64 - 1) * PAGE;
            w(last_root, 0x6000_0000 | af | 0b01);
            let s1 = entry_size(start_level);
            let s2 = entry_size(start_level + 1);
            let s3 = entry_size((start_level + 2).min(3));
            let mut addrs = vec![0, first.saturating_sub(1), u64::MAX - 1];
            for base in [first, first + (root_pages as u64 - 1) * span] {
                for a in [
                    0,
                    s1,
                    s1 + 3 * s2 + 17,
                    s1 + 5 * s2,
                    s1 + 5 * s2 + 7 * s3 + 5,
                    s1 + 5 * s2 + 511 * s3 + s3 - 1,
                    s1 + 6 * s2,
                    span - 1,
                    span,
                ] {
                    addrs.push(base.wrapping_add(a));
                }
            }
            let mut mapped = 0;
            for addr in addrs {
                let mut by_range = None;
                m.translate_range(0, addr, addr + 1, &mut |_, _, now| {
                    if now.is_some() {
                        by_range = now;
                    }
                });
                assert_eq!(m.translate_at(0, addr), by_range, "{key} {addr:#x}");
                mapped += by_range.is_some() as u32;
            }
            assert!(mapped >= 4, "{key}: only {mapped} addresses mapped");
        }
    }

    proptest::proptest! {
        /// `translate_at`'s remembered walk never answers for tables that
        /// changed: after any stores (tables pointing anywhere among a few
        /// pages, leaves, invalid entries) and page resets, it agrees with
        /// `translate_range`, which walks afresh.
        #[test]
        fn the_remembered_walk_follows_the_tables(
            ops in proptest::collection::vec(
                (0..6u64, 0..4u64, 0..4u8, 0..6u64, proptest::bool::weighted(0.15)),
                1..60,
            ),
            probes in proptest::collection::vec((0..4u64, 0..4u64), 1..6),
        ) {
            // Root at level 0; pages 1..6 are tables or leaves' homes.
            let page = |i: u64| 0x10_0000 + i * PAGE;
            let mut m = Memory::default();
            m.trees.push(live_tree(page(0), Key::Vmid(1), 0, 1));
            let af = 1 << 10;
            // Addresses in the first two entries of each level.
            let addr = |a: u64, b: u64| a * entry_size(1) + b * entry_size(2) + (a ^ b) * PAGE;
            // Start with every probe mapped: root -> 1 -> 2 -> 3 -> pages.
            m.store(page(0), page(1) | 0b11, 1);
            for i in 0..4 {
                m.store(page(1) + 8 * i, page(2) | 0b11, 1);
                m.store(page(2) + 8 * i, page(3) | 0b11, 1);
                m.store(page(3) + 8 * i, (0x4000_0000 + i * PAGE) | af | 0b11, 1);
            }
            for (at, slot, kind, target, reset) in ops {
                if reset {
                    m.init_page(page(at));
                } else {
                    let value = match kind {
                        0 => 0,
                        1 => page(target) | 0b11,
                        2 => (0x4000_0000 + target * PAGE) | af | 0b11,
                        _ => 0x8000_0000 | af | 0b01,
                    };
                    m.store(page(at) + 8 * slot, value, 1);
                }
                for &(a, b) in &probes {
                    let x = addr(a, b);
                    let mut by_range = None;
                    m.translate_range(0, x, x + 1, &mut |_, _, now| {
                        if now.is_some() {
                            by_range = now;
                        }
                    });
                    proptest::prop_assert_eq!(m.translate_at(0, x), by_range, "{:#x}", x);
                }
            }
        }
    }
}
