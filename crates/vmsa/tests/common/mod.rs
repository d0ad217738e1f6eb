//! Test helpers: a plain reference map, a break-before-make discipline
//! checker over recorded effects, and snapshots of table memory.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use vmsa::descriptor::{stage1, stage2};
use vmsa::{Effect, PageEvent, Regime, Table, TableAllocator};

/// One reference mapping: `len` bytes at input `start` go to `oa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run<T> {
    pub len: u64,
    pub oa: u64,
    pub attrs: T,
}

/// The reference: input start -> run, non-overlapping.
#[derive(Clone, Debug)]
pub struct Reference<T: Copy + PartialEq> {
    pub runs: BTreeMap<u64, Run<T>>,
}

impl<T: Copy + PartialEq> Default for Reference<T> {
    fn default() -> Self {
        Reference {
            runs: BTreeMap::new(),
        }
    }
}

impl<T: Copy + PartialEq + std::fmt::Debug> Reference<T> {
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.runs
            .range(..end)
            .next_back()
            .is_some_and(|(s, r)| s + r.len > start)
    }

    /// Removes [start, end), splitting runs at the edges.
    pub fn remove(&mut self, start: u64, end: u64) {
        let hits: Vec<(u64, Run<T>)> = self
            .runs
            .range(..end)
            .filter(|(s, r)| *s + r.len > start)
            .map(|(s, r)| (*s, *r))
            .collect();
        for (s, r) in hits {
            self.runs.remove(&s);
            if s < start {
                self.runs.insert(
                    s,
                    Run {
                        len: start - s,
                        ..r
                    },
                );
            }
            if s + r.len > end {
                self.runs.insert(
                    end,
                    Run {
                        len: s + r.len - end,
                        oa: r.oa + (end - s),
                        attrs: r.attrs,
                    },
                );
            }
        }
    }

    pub fn insert(&mut self, start: u64, end: u64, oa: u64, attrs: T) {
        self.remove(start, end);
        self.runs.insert(
            start,
            Run {
                len: end - start,
                oa,
                attrs,
            },
        );
    }

    /// Gives the mapped parts of [start, end) new attributes.
    pub fn protect(&mut self, start: u64, end: u64, attrs: T) {
        let hits: Vec<(u64, Run<T>)> = self
            .runs
            .range(..end)
            .filter(|(s, r)| *s + r.len > start)
            .map(|(s, r)| (*s, *r))
            .collect();
        for (s, r) in hits {
            let (a, b) = (s.max(start), (s + r.len).min(end));
            self.remove(a, b);
            self.runs.insert(
                a,
                Run {
                    len: b - a,
                    oa: r.oa + (a - s),
                    attrs,
                },
            );
        }
    }

    pub fn lookup(&self, addr: u64) -> Option<(u64, T)> {
        let (s, r) = self.runs.range(..=addr).next_back()?;
        (addr < s + r.len).then(|| (r.oa + (addr - s), r.attrs))
    }

    /// Runs merged where input and output continue with equal attributes.
    pub fn normalized(&self) -> Vec<(u64, u64, u64, T)> {
        normalize(self.runs.iter().map(|(s, r)| (*s, r.len, r.oa, r.attrs)))
    }
}

pub fn normalize<T: Copy + PartialEq>(
    it: impl Iterator<Item = (u64, u64, u64, T)>,
) -> Vec<(u64, u64, u64, T)> {
    let mut out: Vec<(u64, u64, u64, T)> = Vec::new();
    for (s, len, oa, a) in it {
        if let Some(last) = out.last_mut() {
            if last.0 + last.1 == s && last.2 + last.1 == oa && last.3 == a {
                last.1 += len;
                continue;
            }
        }
        out.push((s, len, oa, a));
    }
    out
}

/// The table's mappings in the same normalized form.
pub fn table_runs<R: Regime, A: TableAllocator>(t: &Table<R, A>) -> Vec<(u64, u64, u64, R::Attrs)>
where
    R::Attrs: PartialEq,
{
    use vmsa::Address;
    normalize(
        t.mappings()
            .map(|m| (m.input.get(), m.size, m.output.get(), m.attrs)),
    )
}

/// Every descriptor of every reachable table page.
pub fn snapshot<R: Regime, A: TableAllocator>(t: &Table<R, A>) -> Vec<(u64, Vec<u64>)> {
    t.table_pages()
        .into_iter()
        .map(|pa| {
            let ptr = t.allocator().to_ptr(pa);
            // SAFETY: reading a page the table owns, single-threaded test.
            let words = (0..512)
                .map(|i| unsafe {
                    (*ptr.as_ptr().add(i)).load(std::sync::atomic::Ordering::Relaxed)
                })
                .collect();
            (pa.0, words)
        })
        .collect()
}

/// Fields whose change on a valid leaf needs break-before-make, for the
/// stage: OA, the table/page bit, memory type, shareability, contiguous
/// (and nG for stage 1).
pub fn bbm_mask(stage2: bool) -> u64 {
    let common = 0x0000_ffff_ffff_f000 | 0b10;
    if stage2 {
        common | stage2::MEMATTR_MASK | stage2::SH_MASK | stage2::CONTIGUOUS
    } else {
        common | stage1::ATTR_INDX_MASK | stage1::SH_MASK | stage1::CONTIGUOUS | stage1::NG
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    /// Valid, or invalid with nothing cached from it.
    Clean,
    /// Made invalid at log index; how far the DSB; TLBI; DSB sequence
    /// after it has got (0 none, 1 DSB ISH, 2 TLBI, 3 DSB ISH).
    Unclean(u8),
}

/// Checks break-before-make discipline over a log of effects on a live
/// table: no valid descriptor is replaced by a different valid one when
/// `mask` bits differ, and a descriptor made invalid is only made valid
/// again after a `DSB ISH`, a TLBI and a `DSB ISH`. Returns the violations.
///
/// Table pages are "offline" from their `Init` until a table descriptor
/// pointing at them is stored: stores into them are not checked (no walker
/// can see them).
pub fn bbm_violations(log: &[Effect], mask: u64) -> Vec<String> {
    let mut slots: HashMap<u64, Slot> = HashMap::new();
    let mut offline: std::collections::HashSet<u64> = Default::default();
    // Links stored inside offline pages: they come online with their parent.
    let mut links: HashMap<u64, Vec<u64>> = HashMap::new();
    // Every initialized allocation, so that a root (possibly several
    // concatenated pages) comes online whole when a base register points
    // at it.
    let mut allocations: HashMap<u64, u64> = HashMap::new();
    let mut out = Vec::new();
    for (i, e) in log.iter().enumerate() {
        match *e {
            Effect::Page(PageEvent::Init { pa, bytes }) => {
                allocations.insert(pa.0, bytes);
                for a in (pa.0..pa.0 + bytes).step_by(8) {
                    slots.remove(&a);
                }
                for p in (pa.0..pa.0 + bytes).step_by(4096) {
                    offline.insert(p);
                }
            }
            // A link from an offline page: the child comes online with it.
            Effect::Store { pa, new, .. }
                if offline.contains(&(pa.0 & !0xfff)) && new & 0b11 == 0b11 =>
            {
                links
                    .entry(pa.0 & !0xfff)
                    .or_default()
                    .push(new & 0x0000_ffff_ffff_f000);
            }
            Effect::Store { pa, .. } if offline.contains(&(pa.0 & !0xfff)) => {}
            Effect::Store { pa, old, new } => {
                if new & 0b11 == 0b11 {
                    let mut todo = vec![new & 0x0000_ffff_ffff_f000];
                    while let Some(p) = todo.pop() {
                        if offline.remove(&p) {
                            todo.extend(links.remove(&p).unwrap_or_default());
                        }
                    }
                }
                let (ov, nv) = (old & 1 == 1, new & 1 == 1);
                let state = slots.get(&pa.0).copied().unwrap_or(Slot::Clean);
                if ov && nv && (old ^ new) & mask != 0 {
                    out.push(format!(
                        "#{i}: valid {old:#x} -> valid {new:#x} at {:#x} without break-before-make",
                        pa.0
                    ));
                }
                if !ov && nv {
                    if let Slot::Unclean(stage) = state {
                        if stage < 3 {
                            out.push(format!(
                                "#{i}: {:#x} made valid ({new:#x}) while unclean",
                                pa.0
                            ));
                        }
                    }
                    slots.insert(pa.0, Slot::Clean);
                }
                if ov && !nv {
                    slots.insert(pa.0, Slot::Unclean(0));
                }
            }
            // A DSB that completes stores (ISHST is enough) makes the
            // invalid descriptor visible before the TLBI; only a full one
            // completes the TLBI.
            Effect::Barrier(
                b @ (vmsa::Barrier::DsbIsh | vmsa::Barrier::DsbSy | vmsa::Barrier::DsbIshst),
            ) => {
                let completes_tlbi = b != vmsa::Barrier::DsbIshst;
                for s in slots.values_mut() {
                    *s = match *s {
                        Slot::Unclean(0) => Slot::Unclean(1),
                        Slot::Unclean(2) if completes_tlbi => Slot::Unclean(3),
                        other => other,
                    };
                }
            }
            // A base register pointing at a root: the root and everything
            // linked below it are now reachable by walkers.
            Effect::SysReg {
                reg:
                    vmsa::SysReg::VttbrEl2
                    | vmsa::SysReg::Ttbr0El1
                    | vmsa::SysReg::Ttbr1El1
                    | vmsa::SysReg::Ttbr0El2,
                value,
            } => {
                let root = value & 0x0000_ffff_ffff_f000;
                let bytes = allocations.get(&root).copied().unwrap_or(4096);
                let mut todo: Vec<u64> = (root..root + bytes).step_by(4096).collect();
                while let Some(p) = todo.pop() {
                    if offline.remove(&p) {
                        todo.extend(links.remove(&p).unwrap_or_default());
                    }
                }
            }
            Effect::Tlbi { .. } => {
                for s in slots.values_mut() {
                    if *s == Slot::Unclean(1) {
                        *s = Slot::Unclean(2);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A table allocator that counts the table pages software reaches: the
/// library reads or writes a table page only through
/// [`TableAllocator::to_ptr`], so no call between two [`reset`](Self::reset)s
/// means no table page was touched.
pub struct CountingReads<A> {
    pub inner: A,
    reads: std::sync::atomic::AtomicUsize,
}

impl<A> CountingReads<A> {
    pub fn new(inner: A) -> Self {
        CountingReads {
            inner,
            reads: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// `to_ptr` calls since the last reset.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.reads.store(0, std::sync::atomic::Ordering::Relaxed)
    }
}

// SAFETY: every call is passed to `inner`, which upholds the contract.
unsafe impl<A: TableAllocator> TableAllocator for CountingReads<A> {
    fn allocate_zeroed(
        &mut self,
        granule: vmsa::Granule,
        pages: usize,
    ) -> Result<vmsa::Pa, vmsa::Error> {
        self.inner.allocate_zeroed(granule, pages)
    }

    unsafe fn deallocate(&mut self, pa: vmsa::Pa, granule: vmsa::Granule, pages: usize) {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.inner.deallocate(pa, granule, pages) }
    }

    fn to_ptr(&self, pa: vmsa::Pa) -> std::ptr::NonNull<vmsa::Slot> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.to_ptr(pa)
    }
}
