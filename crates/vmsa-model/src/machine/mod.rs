//! The machine: table memory, the trees in it, PEs with their registers,
//! and what the PEs may have cached.
//!
//! # Caching, adversarially
//!
//! Every valid descriptor reachable from a root that has been installed in
//! a translation table base register is assumed cached by every PE, as a
//! leaf entry or a walk-cache entry, tagged with the tree's VMID / ASID.
//! The architecture allows exactly this (a PE may walk and cache any
//! translation the tables hold, speculatively, at any time). When a
//! descriptor changes, the entries made from its old value (and, for a
//! table descriptor, from everything below it) become *ghosts*: cached on
//! every PE, no longer in the tables. A ghost goes away only when an
//! invalidation covering it has completed on that PE, or capacity evicts
//! it. Ordering follows the architecture's rules:
//!
//! - the removal of a descriptor is visible to every walker only after the
//!   writer's `DSB` (any but `NSH`); a TLBI executed before that does not
//!   remove the ghost, since a walker may refill it from the old value;
//! - a TLBI has taken effect once its issuer completes a `DSB` that waits
//!   for TLB maintenance (not `ST`): for broadcast forms one of the Inner
//!   Shareable domain or wider, on every PE; for local forms any, on the
//!   issuer only;
//! - a TLBI acts on the VMID in its issuer's VTTBR_EL2 when it executes.

pub mod check;
mod effects;
mod ghost;
mod index;
mod memory;
mod query;
mod run;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use vmsa::tlbi::TlbiOp;

use crate::cost::Costs;
use crate::desc::{entry_size, needs_bbm, Decoded, Leaf, Stage};
use crate::event::{Barrier, Domain, Event, Hint, Origin, Reg};
use crate::scope::{kinds, Scope, Target};
use check::{pe_list, Violation, ViolationKind};
pub use effects::ModelEffects;
use ghost::{Cached, Ghost};
use index::GhostIndex;
pub use memory::Key;
use memory::{Link, Memory, Tree, TreeId, PAGE};

/// How the model is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of PEs (1 to 64). Records from a higher PE number add PEs.
    pub pes: usize,
    /// At most this many stale runs per PE; beyond it the oldest are
    /// evicted. `None` (the default): entries stay until invalidated,
    /// which is the strictest judge.
    pub capacity: Option<usize>,
    /// Check Casemate's lock discipline too ([`ViolationKind::LockDiscipline`]):
    /// a table's memory written only by a PE holding the lock associated
    /// with its root (`set_root_lock`), and no such write to a tree whose
    /// root has no lock. Off by default: it is a convention of the software
    /// Casemate was written for, not an architectural rule.
    pub locks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pes: 4,
            capacity: None,
            locks: false,
        }
    }
}

/// One PE's registers and the TLB maintenance it has issued but not yet
/// completed.
#[derive(Clone, Debug, Default)]
struct Pe {
    vttbr: u64,
    vtcr: u64,
    ttbr0_el1: u64,
    ttbr1_el1: u64,
    tcr_el1: u64,
    ttbr0_el2: u64,
    ttbr1_el2: u64,
    tcr_el2: u64,
    /// HCR_EL2, once the input has written it: register rules that depend
    /// on it (E2H) are only judged on a value the software gave.
    hcr: Option<u64>,
    /// VTCR_EL2 was written (a geometry never programmed is not judged:
    /// the model then walks from level 0, one root page).
    vtcr_written: bool,
    /// The current VTCR_EL2 value has been reported inconsistent (once per
    /// value written).
    vtcr_reported: bool,
    pending: Vec<PendingTlbi>,
}

/// TTBR BADDR field bits \[47:12\] (roots are 4 KiB aligned in the model).
const BADDR: u64 = 0x0000_ffff_ffff_f000;

impl Pe {
    fn vmid(&self) -> u16 {
        (self.vttbr >> 48) as u16
    }

    /// HCR_EL2.E2H (bit 34): the EL2&0 regime, with ASIDs and TTBR1_EL2.
    fn e2h(&self) -> bool {
        self.hcr.is_some_and(|h| h >> 34 & 1 == 1)
    }

    /// The ASID of the EL1&0 regime: TTBR1_EL1's when TCR_EL1.A1 (bit 22)
    /// is 1, else TTBR0_EL1's.
    fn el1_asid(&self) -> u16 {
        let ttbr = if self.tcr_el1 >> 22 & 1 == 1 {
            self.ttbr1_el1
        } else {
            self.ttbr0_el1
        };
        (ttbr >> 48) as u16
    }

    /// The ASID of the EL2&0 regime: TTBR1_EL2's when TCR_EL2.A1 (bit 22,
    /// E2H 1 layout) is 1, else TTBR0_EL2's.
    fn el20_asid(&self) -> u16 {
        let ttbr = if self.tcr_el2 >> 22 & 1 == 1 {
            self.ttbr1_el2
        } else {
            self.ttbr0_el2
        };
        (ttbr >> 48) as u16
    }

    /// The key the table in TTBR0_EL1 (`upper` false) or TTBR1_EL1 runs
    /// with.
    fn el1_key(&self, upper: bool) -> Key {
        let (vmid, asid) = (self.vmid(), self.el1_asid());
        if upper {
            Key::Asid1 { vmid, asid }
        } else {
            Key::Asid { vmid, asid }
        }
    }

    /// The key the table in TTBR0_EL2 or TTBR1_EL2 runs with.
    fn el2_key(&self, upper: bool) -> Key {
        if self.e2h() {
            Key::El20 {
                asid: self.el20_asid(),
                upper,
            }
        } else {
            Key::El2
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct PendingTlbi {
    scope: Scope,
    issued: u64,
}

/// What a guest access may do, in the worst case the architecture allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Translated as the tables say.
    Ok {
        /// Output address.
        pa: u64,
    },
    /// The tables do not allow it: a translation or permission fault.
    Fault,
    /// The tables allow it, but a stricter stale entry made it fault; the
    /// handler's local invalidation has been applied.
    SpuriousFault,
    /// A stale entry lets it through to `pa`, which the tables do not allow.
    Stale {
        /// Where the stale entry leads.
        pa: u64,
    },
}

/// The model. See the [module documentation](self).
#[derive(Clone)]
pub struct Machine {
    config: Config,
    pes: Vec<Pe>,
    mem: Memory,
    /// Key -> the tree that owns it (it may since have been released).
    owners: HashMap<Key, TreeId>,
    ghosts: Vec<Ghost>,
    /// Where the ghosts are (kept in step with `ghosts`: see
    /// [`index`]).
    ghost_index: GhostIndex,
    /// Scratch for index lookups.
    found: Vec<usize>,
    /// Scratch for invalidations.
    scratch: ghost::Scratch,
    /// Scratch for runs of writes: each old value and when it was written.
    run_olds: Vec<(u64, u64)>,
    violations: Vec<Violation>,
    costs: Costs,
    seq: u64,
    /// The PE whose event is being applied.
    current_pe: usize,
    /// Key -> internal sequence number of the last completed invalidation
    /// of everything it tags (VMALLS12E1IS, ALLE1IS, ALLE2IS).
    flushed_at: HashMap<Key, u64>,
    /// Key -> PEs that have run with it (had it in their base registers):
    /// only they can have walked and cached its entries.
    ran_on: HashMap<Key, u64>,
    /// (kind, location) of every violation reported (one report each).
    reported: HashSet<(ViolationKind, u64)>,
    /// Completion points so far (ghosts note the last one that found
    /// them clean).
    completions: u64,
    /// Input ranges of the descriptors of linked tables written since the
    /// last completion point, per tree (`None`: too many, or memory
    /// changed under the tables otherwise: treat every range as written).
    written: Option<Vec<(TreeId, u64, u64)>>,
    /// Casemate's lock bookkeeping, kept always, judged only with
    /// [`Config::locks`]: root -> its lock (`set_root_lock`),
    root_locks: HashMap<u64, u64>,
    /// lock -> the PE holding it,
    held: HashMap<u64, usize>,
    /// descriptor -> the PE that owns it alone (`set_pte_thread_owner`).
    thread_owner: HashMap<u64, usize>,
}

/// At most this many written ranges are kept between completion points.
const MAX_WRITTEN_RANGES: usize = 4096;

/// Regions of memory (`mem-init`, `mem-set`, release) up to this many pages
/// are handled page by page; larger ones (their size comes from the input)
/// touch only the pages the model keeps, so that no size can make the
/// model loop or grow.
const MAX_PAGES_ONE_BY_ONE: u64 = 4096;

/// What a region's memory becomes once its tables are released.
#[derive(Clone, Copy)]
enum Reuse {
    /// Zeroed table memory again (`mem-init`).
    Zeroed,
    /// Given back to its allocator (the library's page release).
    Released,
    /// Freed (`mem-free`).
    Freed,
}

/// The pages `[start, end)` that `[pa, pa + size)` covers, clipped at the
/// top of the address space.
fn page_span(pa: u64, size: u64) -> (u64, u64) {
    let start = pa & !(PAGE - 1);
    let end = pa.saturating_add(size);
    let end = end
        .checked_add(PAGE - 1)
        .map_or(!(PAGE - 1), |e| e & !(PAGE - 1));
    (start, end.max(start))
}

/// Mask of the first `n` PEs.
fn mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

/// Why a VTCR_EL2 value gives no stage 2 geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum VtcrProblem {
    /// Architecturally valid, but not what the model walks (another
    /// granule): not a violation; the model then walks from level 0.
    Unsupported(&'static str),
    /// Not a consistent configuration: the Arm ARM's VTCR_EL2.T0SZ and SL0
    /// field descriptions say that values inconsistent with each other (and
    /// the granule) make stage 2 walks generate a level 0 Translation fault,
    /// and an out-of-range T0SZ is CONSTRAINED UNPREDICTABLE with that fault
    /// among the permitted outcomes. Either way the tables are not what the
    /// guest gets, so software relying on them is broken. Says what is
    /// wrong.
    Inconsistent(String),
}

/// Start level, concatenated root pages for stage 2 from VTCR_EL2 (T0SZ
/// \[5:0\], SL0 \[7:6\], TG0 \[15:14\]; D24.2.224).
fn vtcr_geometry(vtcr: u64) -> Result<(u8, u8), VtcrProblem> {
    if vtcr >> 14 & 0b11 != 0 {
        return Err(VtcrProblem::Unsupported(
            "a granule other than 4 KiB (TG0 != 0)",
        ));
    }
    let t0sz = (vtcr & 0x3f) as u32;
    let ia_bits = 64 - t0sz;
    if !(16..=48).contains(&ia_bits) {
        return Err(VtcrProblem::Inconsistent(format!(
            "T0SZ {t0sz} gives a {ia_bits}-bit IPA space, outside the 16 to 48 bits a 4 KiB \
             granule translates"
        )));
    }
    let level = match vtcr >> 6 & 0b11 {
        0 => 2,
        1 => 1,
        2 => 0,
        _ => {
            return Err(VtcrProblem::Inconsistent(
                "SL0 0b11 is reserved with the 4 KiB granule (without FEAT_LPA2)".to_string(),
            ))
        }
    };
    // Bits one root page translates at that level.
    let page_bits = 12 + 9 * (4 - level as u32);
    let pages = 1u64 << ia_bits.saturating_sub(page_bits);
    // Too many concatenated pages, or so few bits that a lower start level
    // was required (D8.2.2): not a valid configuration.
    if pages > 16 {
        return Err(VtcrProblem::Inconsistent(format!(
            "T0SZ {t0sz} ({ia_bits}-bit IPA) with SL0 starting at level {level} needs {pages} \
             concatenated root tables, more than the 16 allowed: SL0 must start the walk at a \
             lower level"
        )));
    }
    if ia_bits + 9 < page_bits && level < 2 {
        return Err(VtcrProblem::Inconsistent(format!(
            "T0SZ {t0sz} ({ia_bits}-bit IPA) is too small for a walk starting at level {level} \
             (SL0): it must start at a higher level"
        )));
    }
    Ok((level, pages as u8))
}

/// Start level for a stage 1 regime from TCR_ELx.T0SZ.
fn tcr_geometry(tcr: u64) -> Option<(u8, u8)> {
    let t0sz = (tcr & 0x3f) as u32;
    let ia_bits = 64u32.checked_sub(t0sz)?;
    if !(16..=48).contains(&ia_bits) {
        return None;
    }
    let levels = (ia_bits - 12).div_ceil(9);
    Some(((4 - levels) as u8, 1))
}

impl Machine {
    /// A machine with no tables.
    pub fn new(config: Config) -> Self {
        let pes = config.pes.clamp(1, 64);
        Machine {
            config: Config { pes, ..config },
            pes: vec![Pe::default(); pes],
            mem: Memory::default(),
            owners: HashMap::default(),
            ghosts: Vec::new(),
            ghost_index: GhostIndex::default(),
            found: Vec::new(),
            scratch: ghost::Scratch::default(),
            run_olds: Vec::new(),
            violations: Vec::new(),
            costs: Costs::default(),
            seq: 0,
            current_pe: 0,
            flushed_at: HashMap::default(),
            ran_on: HashMap::default(),
            reported: HashSet::default(),
            completions: 0,
            written: Some(Vec::new()),
            root_locks: HashMap::default(),
            held: HashMap::default(),
            thread_owner: HashMap::default(),
        }
    }

    /// Violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Costs counted so far.
    pub fn costs(&self) -> &Costs {
        &self.costs
    }

    /// Number of PEs.
    pub fn pes(&self) -> usize {
        self.pes.len()
    }

    /// Number of stale entry runs some PE may still hold.
    pub fn stale_runs(&self) -> usize {
        self.ghosts.iter().filter(|g| g.held()).count()
    }

    /// The descriptor the model's memory holds at `pa`.
    pub fn read(&self, pa: u64) -> u64 {
        self.mem.read(pa)
    }

    fn all_pes(&self) -> u64 {
        mask(self.pes.len())
    }

    /// Whether a violation of `kind` at `location` was reported: a second
    /// [`report`](Self::report) of it would be dropped, so callers need
    /// not look for it (nor format its explanation).
    fn is_reported(&self, kind: ViolationKind, location: u64) -> bool {
        self.reported.contains(&(kind, location))
    }

    fn report(&mut self, kind: ViolationKind, at: Origin, location: u64, pes: u64, why: String) {
        // One report per kind and location: the first is the one to fix.
        if !self.reported.insert((kind, location)) {
            return;
        }
        self.violations.push(Violation {
            kind,
            at,
            location,
            pes,
            explanation: why,
        });
    }

    /// Applies one event issued by PE `pe`. Events are numbered by the
    /// machine in the order they arrive; `origin` names them in reports.
    pub fn step(&mut self, pe: usize, event: &Event, origin: Origin) {
        let pe = self.begin_event(pe);
        if matches!(
            event,
            Event::MemInit { .. }
                | Event::Release { .. }
                | Event::MemFree { .. }
                | Event::Hint(Hint::ReleaseTable { .. })
        ) {
            // Table memory may change without descriptor writes.
            self.written = None;
        }
        match *event {
            Event::MemInit { pa, size } => self.release_region(pa, size, origin, Reuse::Zeroed),
            Event::MemSet { pa, size, byte } => {
                let value = u64::from_ne_bytes([byte; 8]);
                let (start, end) = (pa & !7, pa.saturating_add(size));
                if size / PAGE > MAX_PAGES_ONE_BY_ONE {
                    // Too large to write word by word: only memory the
                    // model keeps can hold tables, so only it is written
                    // (elsewhere a zero byte changes nothing).
                    let (first, last) = page_span(start, end - start);
                    for page in self.mem.pages_in(first, last) {
                        for a in (page.max(start)..(page + PAGE).min(end)).step_by(8) {
                            self.write(pe, a, value, origin);
                        }
                    }
                } else {
                    for a in (start..end).step_by(8) {
                        self.write(pe, a, value, origin);
                    }
                }
            }
            Event::Write { pa, value, .. } => self.write(pe, pa & !7, value, origin),
            Event::Read { .. } => {}
            Event::Lock { addr } => self.lock(pe, addr, origin),
            Event::Barrier(b) => self.barrier(pe, b),
            Event::Tlbi { op, operand } => self.tlbi(pe, op, operand),
            Event::SysReg { reg, value } => self.sysreg(pe, reg, value, origin),
            Event::Hint(h) => match h {
                Hint::SetRootLock { root, lock } => {
                    let t = self.tree_at(root & !(PAGE - 1));
                    self.mem.trees[t].declared = true;
                    self.root_locks.insert(root & !(PAGE - 1), lock);
                }
                Hint::ReleaseTable { page } => {
                    self.root_locks.remove(&(page & !(PAGE - 1)));
                    self.release_page(page, origin, "released")
                }
                Hint::SetPteThreadOwner { location, value } => {
                    // Casemate takes the value as a thread id; a negative
                    // one (all ones) gives the descriptor back to its lock.
                    match usize::try_from(value) {
                        Ok(owner) if (value as i64) >= 0 => {
                            self.thread_owner.insert(location & !7, owner);
                        }
                        _ => {
                            self.thread_owner.remove(&(location & !7));
                        }
                    }
                }
                Hint::SetOwnerRoot { .. } => {}
            },
            Event::Release { pa, size } => self.release_region(pa, size, origin, Reuse::Released),
            Event::MemFree { pa, size } => {
                // Tables in it die; then nothing may translate to it.
                self.release_region(pa, size, origin, Reuse::Freed);
                self.release_data(pa, size, origin);
            }
            Event::ReleaseData { pa, size } => self.release_data(pa, size, origin),
            Event::Unlock { addr } => {
                self.unlock(pe, addr, origin);
                self.completion_point(origin)
            }
            Event::Complete => self.completion_point(origin),
        }
    }

    /// What every event does first: counts it and makes PE `pe` (at most
    /// 63, returned) the current one, adding it if it is new.
    #[inline(always)]
    fn begin_event(&mut self, pe: usize) -> usize {
        self.seq += 1;
        self.costs.events += 1;
        let pe = pe.min(63);
        self.current_pe = pe;
        if pe >= self.pes.len() {
            self.add_pes(pe);
        }
        pe
    }

    /// A PE seen for the first time was there all along: it may hold
    /// whatever any PE may still hold (it saw every broadcast invalidation
    /// the others saw, and no local one).
    #[cold]
    fn add_pes(&mut self, pe: usize) {
        let new = mask(pe + 1) & !self.all_pes();
        for g in &mut self.ghosts {
            for m in g.holders.iter_mut() {
                if *m != 0 {
                    *m |= new;
                }
            }
        }
        self.pes.resize(pe + 1, Pe::default());
    }

    /// [`step`](Self::step) with `Event::Write { pa, value, .. }`: the
    /// library's descriptor stores, most of the events a replay makes,
    /// without matching on the event.
    pub fn step_write(&mut self, pe: usize, pa: u64, value: u64, origin: Origin) {
        let pe = self.begin_event(pe);
        self.write(pe, pa & !7, value, origin);
    }

    /// The end of the input: a completion point.
    pub fn finish(&mut self, origin: Origin) {
        self.completion_point(origin);
    }

    /// The current (not released) tree rooted at `root`, created with a
    /// default geometry (level 0, one page) if none.
    fn tree_at(&mut self, root: u64) -> TreeId {
        if let Some(&t) = self.mem.roots.get(&root) {
            return t;
        }
        let id = self.mem.trees.len();
        self.mem.trees.push(Tree {
            root,
            stage: Stage::Stage2,
            key: None,
            start_level: 0,
            root_pages: 1,
            installed: false,
            released: false,
            installed_at: 0,
            leaves: 0,
            left_at: 0,
            declared: false,
        });
        self.mem.roots.insert(root, id);
        self.mem.link_root(id);
        id
    }

    // ----- descriptor writes -------------------------------------------

    fn write(&mut self, pe: usize, pa: u64, value: u64, at: Origin) {
        // One look-up of the page: the slot (the store does not move the
        // page's link), the old value and when it was written.
        let (old, since, slot) = self.mem.store(pa, value, at.seq);
        if self.config.locks {
            if let Some(slot) = slot {
                self.check_locked(pe, pa, slot.tree, at);
            }
        }
        if old == value {
            return;
        }
        self.costs.writes += 1;
        let Some(slot) = slot else { return };
        self.changed(pe, pa, slot, old, since, value, at);
    }

    /// What a write by `pe` of `value` over `old` (written by event
    /// `since`) at `pa`, descriptor `slot` of a tree, changes: ghosts of
    /// what the old value let PEs cache, break-before-make checks, links
    /// and leaf counts.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn changed(
        &mut self,
        pe: usize,
        pa: u64,
        slot: memory::Slot,
        old: u64,
        since: u64,
        value: u64,
        at: Origin,
    ) {
        let tree = slot.tree;
        self.note_written(tree, slot.ia, slot.ia + entry_size(slot.level));
        let live = self.mem.trees[tree].live();
        let oldd = self.mem.decode(tree, slot.level, old);
        let newd = self.mem.decode(tree, slot.level, value);
        let key = self.mem.trees[tree].key;
        let stage = self.mem.trees[tree].stage;

        // The old value's entries (and for a table, everything below it)
        // may stay cached: they become ghosts.
        if live && !matches!(oldd, Decoded::Fault) {
            let key = key.expect("live trees have a key");
            let since = since.max(self.mem.trees[tree].installed_at);
            self.ghosts_of(
                tree, key, stage, pa, slot.level, slot.ia, old, since, &oldd, pe, at,
            );
        }
        if let Decoded::Table { next } = oldd {
            let ours = self
                .mem
                .page(next)
                .and_then(|p| p.link)
                .is_some_and(|l| l.parent == Some(pa));
            if ours {
                let gone = self.mem.unlink(next);
                let t = &mut self.mem.trees[tree];
                t.leaves = t.leaves.saturating_sub(gone);
            }
        }
        if let Decoded::Leaf(_) = oldd {
            self.mem.trees[tree].leaves = self.mem.trees[tree].leaves.saturating_sub(1);
        }

        if live {
            let key = key.expect("live trees have a key");
            if needs_bbm(&oldd, &newd) {
                // Once reported, not worth formatting again (`report`
                // would drop it).
                if !self.is_reported(ViolationKind::BbmValidToValid, pa) {
                    self.report(
                        ViolationKind::BbmValidToValid,
                        at,
                        pa,
                        self.all_pes(),
                        format!(
                            "level {} descriptor for {} {:#x} of {} changed from {:#x} to {:#x} while valid; \
                             the change needs break-before-make (Arm ARM D8.17.1): write an invalid \
                             descriptor, DSB, TLBI covering {:#x}, DSB, then the new one",
                            slot.level,
                            addr_name(stage),
                            slot.ia,
                            key,
                            old,
                            value,
                            slot.ia
                        ),
                    );
                }
            } else if !matches!(newd, Decoded::Fault) && !self.ghosts.is_empty() {
                self.check_unclean(key, pa, slot.level, slot.ia, value, &newd, at);
            }
        }

        match newd {
            Decoded::Table { next } => self.link_child(pa, tree, slot.level, slot.ia, next, at),
            Decoded::Leaf(_) => self.mem.trees[tree].leaves += 1,
            Decoded::Fault => {}
        }
        self.evict();
    }

    /// Records ghosts for the entries made from descriptor `value` at
    /// `slot_pa` (level `level`, input address `ia`) and, for a table,
    /// from every descriptor below it.
    #[allow(clippy::too_many_arguments)]
    fn ghosts_of(
        &mut self,
        tree: TreeId,
        key: Key,
        stage: Stage,
        slot_pa: u64,
        level: u8,
        ia: u64,
        value: u64,
        since: u64,
        d: &Decoded,
        writer: usize,
        at: Origin,
    ) {
        let pes = self.all_pes() & self.ran(key);
        if let Decoded::Leaf(l) = d {
            // An unmap removes descriptors in order: the next one of the
            // last run extends it, without a ghost built first.
            let holders = ghost::holders(ghost::kinds_of(stage, true), pes);
            let end = ia + entry_size(level);
            if self.extend_last_run(tree, writer, None, &holders, level, ia, end, slot_pa, l) {
                return;
            }
        }
        let base = Ghost {
            tree,
            key,
            stage,
            level,
            start: ia,
            end: ia + entry_size(level),
            cached: Cached::Walk { next: 0 },
            holders: [0; 3],
            slot: slot_pa,
            value,
            since,
            removed: at,
            writer,
            visible: None,
            s2_clear: None,
            s2_gone: 0,
            reported: false,
            clean_at: 0,
        };
        match *d {
            Decoded::Fault => {}
            Decoded::Leaf(l) => self.push_ghost(Ghost {
                cached: Cached::Leaf(l),
                holders: ghost::holders(ghost::kinds_of(stage, true), pes),
                ..base
            }),
            Decoded::Table { next } => {
                self.push_ghost(Ghost {
                    cached: Cached::Walk { next },
                    holders: ghost::holders(ghost::kinds_of(stage, false), pes),
                    ..base.clone()
                });
                self.ghosts_below(&base, next, level + 1, ia);
            }
        }
    }

    /// Ghosts for everything reachable from table `page` (at `level`, first
    /// input address `ia`) as memory holds it now: walk entries, and runs
    /// of leaves merged per page. `proto` gives the tree, key and removal.
    fn ghosts_below(&mut self, proto: &Ghost, page: u64, level: u8, ia: u64) {
        let pes = self.all_pes() & self.ran(proto.key);
        let stage = proto.stage;
        let mut found = Vec::new();
        self.mem
            .visit(stage, page, level, ia, &mut |pa, lvl, a, d| {
                found.push((pa, lvl, a, *d));
            });
        let mut run: Option<Ghost> = None;
        for (pa, lvl, a, d) in found {
            let written = self
                .mem
                .page(pa)
                .map(|p| p.written[(pa as usize & 0xfff) >> 3])
                .unwrap_or(0);
            let g = Ghost {
                level: lvl,
                start: a,
                end: a + entry_size(lvl),
                slot: pa,
                value: self.mem.read(pa),
                since: written.max(proto.since),
                ..proto.clone()
            };
            match d {
                Decoded::Table { next } => self.push_ghost(Ghost {
                    cached: Cached::Walk { next },
                    holders: ghost::holders(ghost::kinds_of(stage, false), pes),
                    ..g
                }),
                Decoded::Leaf(l) => {
                    let g = Ghost {
                        cached: Cached::Leaf(l),
                        holders: ghost::holders(ghost::kinds_of(stage, true), pes),
                        ..g
                    };
                    if let Some(r) = run.as_mut() {
                        if extends(r, &g) {
                            r.end = g.end;
                            continue;
                        }
                    }
                    if let Some(r) = run.replace(g) {
                        self.push_ghost(r);
                    }
                }
                Decoded::Fault => {}
            }
        }
        if let Some(r) = run {
            self.push_ghost(r);
        }
    }

    fn push_ghost(&mut self, g: Ghost) {
        if let Cached::Leaf(l) = &g.cached {
            let (tree, writer, visible) = (g.tree, g.writer, g.visible);
            if self.extend_last_run(
                tree, writer, visible, &g.holders, g.level, g.start, g.end, g.slot, l,
            ) {
                return;
            }
        }
        self.ghosts.push(g);
    }

    /// Consecutive removals (an unmap walks a table in order) extend the
    /// last run instead of adding one per descriptor: extends the last
    /// ghost to `end` when the leaves of `[start, end)` (descriptors from
    /// `slot` on, at `level`, the first being `leaf`), removed by `writer`
    /// and held by `holders`, continue it. Returns whether it did.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn extend_last_run(
        &mut self,
        tree: TreeId,
        writer: usize,
        visible: Option<u64>,
        holders: &[u64; 3],
        level: u8,
        start: u64,
        end: u64,
        slot: u64,
        leaf: &Leaf,
    ) -> bool {
        let Some(last) = self.ghosts.last_mut() else {
            return false;
        };
        if !(last.tree == tree
            && last.writer == writer
            && last.visible == visible
            && last.holders == *holders
            && !last.reported
            && extends_leaf(last, level, start, slot, leaf))
        {
            return false;
        }
        self.grow_last_ghost(end);
        true
    }

    /// The last ghost grows to end at `end` (the entries after it continue
    /// it), and is filed for what it now covers.
    fn grow_last_ghost(&mut self, end: u64) {
        let at = self.ghosts.len() - 1;
        let last = &mut self.ghosts[at];
        let (first, old_end) = (last.start, last.end);
        last.end = end;
        last.clean_at = 0;
        self.ghost_index.extended(at, first, old_end, end);
    }

    /// The oracle: removes exactly the entries that are stale (every
    /// ghost), as no real instruction can. Returns how many runs it
    /// removed. For `vmsa compare`'s lower bound.
    pub fn oracle_clean(&mut self) -> usize {
        let n = self.ghosts.len();
        self.ghosts.clear();
        self.ghost_index.reshaped();
        n
    }

    /// Capacity eviction: beyond `capacity` runs on a PE, the oldest go.
    fn evict(&mut self) {
        let Some(cap) = self.config.capacity else {
            return;
        };
        if self.ghosts.len() <= cap {
            // No PE can hold more runs than there are.
            return;
        }
        let mut held = vec![0usize; self.pes.len()];
        for g in &self.ghosts {
            let mut m = g.holder_mask();
            while m != 0 {
                let pe = m.trailing_zeros() as usize;
                if let Some(n) = held.get_mut(pe) {
                    *n += 1;
                }
                m &= m - 1;
            }
        }
        let mut any = false;
        for (pe, &n) in held.iter().enumerate() {
            let bit = 1u64 << pe;
            let mut excess = n.saturating_sub(cap);
            for g in self.ghosts.iter_mut() {
                if excess == 0 {
                    break;
                }
                if g.holder_mask() & bit != 0 {
                    for m in g.holders.iter_mut() {
                        *m &= !bit;
                    }
                    excess -= 1;
                    any = true;
                }
            }
        }
        if any {
            self.ghosts.retain(Ghost::held);
            self.ghost_index.reshaped();
        }
    }

    /// Break-before-make, second half: making a descriptor valid while a
    /// conflicting entry from an earlier value may still be cached.
    #[allow(clippy::too_many_arguments)]
    fn check_unclean(
        &mut self,
        key: Key,
        pa: u64,
        level: u8,
        ia: u64,
        value: u64,
        newd: &Decoded,
        at: Origin,
    ) {
        if self.ghosts.is_empty() {
            // Nothing may be cached but what the tables hold (the usual
            // case right after a completed invalidation).
            return;
        }
        if self.is_reported(ViolationKind::BbmUncleanToValid, pa) {
            // The first report stands (see `report`): what the scan could
            // find would not be reported.
            return;
        }
        let end = ia + entry_size(level);
        let stage = key.stage();
        // Entries held by PEs that do not run the tag now cannot meet the
        // new one: they must flush before running it again.
        let running = self.running(key);
        self.ghost_index.catch_up(&self.ghosts);
        let conflict = self
            .ghost_index
            .first(&self.ghosts, ia, end, |i| {
                let g = &self.ghosts[i];
                g.holder_mask() & running != 0
                    && tag_matches(g, key)
                    && !self.compatible(g, stage, level, ia, newd)
            })
            .map(|i| &self.ghosts[i]);
        if let Some(g) = conflict {
            let why = format!(
                "{:#x} written at level {level} for {} {:#x} of {key}, but {} may still hold {} \
                 (from {:#x} at {:#x}, cached since event {}, removed at event {}{}); \
                 it needed {} completed by a DSB ISH before this write",
                value,
                addr_name(key.stage()),
                key.full_address(ia),
                pe_list(g.holder_mask()),
                describe(g),
                g.value,
                g.slot,
                g.since,
                g.removed.seq,
                line_of(g.removed),
                needed_tlbi(g),
            );
            let pes = g.holder_mask();
            self.report(ViolationKind::BbmUncleanToValid, at, pa, pes, why);
        }
    }

    /// Whether a PE holding ghost `g` and walking the new descriptor
    /// `newd` (at `level`, input address `ia`) sees no two entries that
    /// disagree for one address: the ghost is at the same level and agrees
    /// with the new entry (or, under a new table, with what that table
    /// maps, and the new table maps nothing where the ghost is).
    fn compatible(&self, g: &Ghost, stage: Stage, level: u8, ia: u64, newd: &Decoded) -> bool {
        match (g.cached, newd) {
            (Cached::Walk { next: a }, Decoded::Table { next: b }) if g.level == level => a == *b,
            (Cached::Leaf(old), Decoded::Leaf(new)) if g.level == level => {
                let off = ia.max(g.start) - g.start;
                let old = Leaf {
                    oa: old.oa + off,
                    ..old
                };
                !crate::desc::leaf_change_needs_bbm(&old, new)
            }
            // Below a new table: compare with what the new subtree holds
            // where the ghost is.
            (_, Decoded::Table { next }) if g.level > level => {
                let mut ok = true;
                let (s, e) = (g.start.max(ia), g.end.min(ia + entry_size(level)));
                match g.cached {
                    Cached::Leaf(old) => {
                        self.mem.translate_in(
                            stage,
                            *next,
                            level + 1,
                            ia,
                            s,
                            e,
                            &mut |a, _, now| {
                                if let Some((l, at)) = now {
                                    let same_size =
                                        self.leaf_level_at(stage, *next, level + 1, ia, a)
                                            == Some(g.level);
                                    let old = Leaf {
                                        oa: old.oa + (a - g.start),
                                        ..old
                                    };
                                    let new = Leaf {
                                        oa: l.oa + (a - at),
                                        ..l
                                    };
                                    if !same_size || crate::desc::leaf_change_needs_bbm(&old, &new)
                                    {
                                        ok = false;
                                    }
                                }
                            },
                        );
                    }
                    Cached::Walk { next: old_next } => {
                        // The new subtree's table descriptor at the ghost's
                        // level, if any, must point where the ghost does.
                        if let Some(d) = self.desc_at(stage, *next, level + 1, ia, g.level, g.start)
                        {
                            if let Decoded::Table { next: n } = d {
                                ok = n == old_next;
                            } else if !matches!(d, Decoded::Fault) {
                                ok = false;
                            }
                        }
                    }
                }
                ok
            }
            _ => false,
        }
    }

    /// The level of the leaf translating `addr` below table `page` (at
    /// `level`, first input address `base`).
    fn leaf_level_at(
        &self,
        stage: Stage,
        page: u64,
        level: u8,
        base: u64,
        addr: u64,
    ) -> Option<u8> {
        let mut d = (page, level, base);
        loop {
            let (p, l, b) = d;
            let size = entry_size(l);
            let i = (addr - b) / size;
            if i >= 512 {
                return None;
            }
            match crate::desc::decode(stage, l, self.mem.read(p + 8 * i)) {
                Decoded::Leaf(_) => return Some(l),
                Decoded::Table { next } if l < 3 => d = (next, l + 1, b + i * size),
                _ => return None,
            }
        }
    }

    /// The descriptor at `want_level` for `addr` below table `page` (at
    /// `level`, first input address `base`), if the walk gets there.
    #[allow(clippy::too_many_arguments)]
    fn desc_at(
        &self,
        stage: Stage,
        page: u64,
        level: u8,
        base: u64,
        want_level: u8,
        addr: u64,
    ) -> Option<Decoded> {
        let (mut p, mut l, mut b) = (page, level, base);
        loop {
            let size = entry_size(l);
            let i = (addr - b) / size;
            if i >= 512 {
                return None;
            }
            let d = crate::desc::decode(stage, l, self.mem.read(p + 8 * i));
            if l == want_level {
                return Some(d);
            }
            match d {
                Decoded::Table { next } if l < 3 => {
                    p = next;
                    l += 1;
                    b += i * size;
                }
                _ => return None,
            }
        }
    }

    /// A table descriptor at `slot` now points at `child`.
    fn link_child(&mut self, slot: u64, tree: TreeId, level: u8, ia: u64, child: u64, at: Origin) {
        let existing = self.mem.page(child).and_then(|p| p.link);
        if let Some(l) = existing {
            if l.parent != Some(slot) {
                let other = &self.mem.trees[l.tree];
                let why = format!(
                    "table page {child:#x} linked at {slot:#x} while it is already {} of the tree at {:#x}",
                    match l.parent {
                        Some(p) => format!("linked at {p:#x}"),
                        None => "the root".to_string(),
                    },
                    other.root
                );
                self.report(ViolationKind::DoubleUse, at, slot, 0, why);
                return;
            }
        }
        // Walk-cache entries of a live owner still pointing at the page:
        // walkers may reach it through the old path too.
        let stale = self.ghosts.iter().find(|g| {
            g.held()
                && matches!(g.cached, Cached::Walk { next } if next == child)
                && g.slot != slot
                && self.owner_live(g)
        });
        if let Some(g) = stale {
            let why = format!(
                "table page {child:#x} linked at {slot:#x} while {} may still walk it through the \
                 cached table descriptor at {:#x} of {} (removed at event {}{} without a completed {})",
                pe_list(g.holder_mask()),
                g.slot,
                g.key,
                g.removed.seq,
                line_of(g.removed),
                needed_tlbi(g)
            );
            let pes = g.holder_mask();
            self.report(ViolationKind::DoubleUse, at, slot, pes, why);
        }
        let leaves = self.mem.link(
            child,
            Link {
                tree,
                level: level + 1,
                base: ia,
                parent: Some(slot),
            },
        );
        self.mem.trees[tree].leaves += leaves;
    }

    /// Whether a tree's root holds no valid descriptor.
    fn empty_tree(&self, id: TreeId) -> bool {
        let t = &self.mem.trees[id];
        (0..t.root_pages as u64).all(|p| {
            self.mem
                .page(t.root + p * PAGE)
                .map_or(true, |page| page.words.iter().all(|w| w & 1 == 0))
        })
    }

    /// PEs that have run with `key` (only they may have cached its
    /// entries).
    fn ran(&self, key: Key) -> u64 {
        self.ran_on.get(&key).copied().unwrap_or(0)
    }

    /// PEs that have `key` in their base registers now.
    fn running(&self, key: Key) -> u64 {
        let mut m = 0;
        for (i, pe) in self.pes.iter().enumerate() {
            let on = match key {
                Key::Vmid(v) => pe.vttbr & BADDR != 0 && pe.vmid() == v,
                Key::Asid { .. } => pe.ttbr0_el1 & BADDR != 0 && pe.el1_key(false) == key,
                Key::Asid1 { .. } => pe.ttbr1_el1 & BADDR != 0 && pe.el1_key(true) == key,
                Key::El2 => !pe.e2h() && pe.ttbr0_el2 & BADDR != 0,
                Key::El20 { upper, .. } => {
                    let ttbr = if upper { pe.ttbr1_el2 } else { pe.ttbr0_el2 };
                    ttbr & BADDR != 0 && pe.el2_key(upper) == key
                }
            };
            if on {
                m |= 1 << i;
            }
        }
        m
    }

    /// Whether the tree a ghost came from still owns its key and is live:
    /// only then can a PE run with that tag and use the ghost.
    fn owner_live(&self, g: &Ghost) -> bool {
        self.owners.get(&g.key) == Some(&g.tree) && self.mem.trees[g.tree].live()
    }

    // ----- Casemate's lock discipline (Config::locks) ------------------

    /// PE `pe` takes `lock` (a `lock`, or a `trylock` that succeeded).
    fn lock(&mut self, pe: usize, lock: u64, at: Origin) {
        if let Some(&other) = self.held.get(&lock) {
            if self.config.locks {
                let why = format!(
                    "PE {pe} takes lock {lock:#x}, which PE {other} already holds: two PEs in \
                     one critical section"
                );
                self.report(ViolationKind::LockDiscipline, at, lock, 1 << pe, why);
            }
        }
        self.held.insert(lock, pe);
    }

    /// PE `pe` releases `lock`.
    fn unlock(&mut self, pe: usize, lock: u64, at: Origin) {
        let holder = self.held.get(&lock).copied();
        if holder == Some(pe) {
            self.held.remove(&lock);
            return;
        }
        if self.config.locks {
            let why = match holder {
                Some(other) => format!("PE {pe} releases lock {lock:#x}, which PE {other} holds"),
                None => format!("PE {pe} releases lock {lock:#x}, which no PE holds"),
            };
            self.report(ViolationKind::LockDiscipline, at, lock, 1 << pe, why);
        }
    }

    /// Casemate's rule for a write by `pe` to descriptor `pa` of `tree`: a
    /// descriptor of an installed tree is written only by the PE that owns
    /// it alone (`set_pte_thread_owner`) or, else, by a PE holding the lock
    /// associated with the tree's root, and that root must have one.
    fn check_locked(&mut self, pe: usize, pa: u64, tree: TreeId, at: Origin) {
        let t = &self.mem.trees[tree];
        if !t.live() {
            // Not yet (or no longer) walked: Casemate tracks a tree from
            // the write of its root to a TTBR.
            return;
        }
        let root = t.root;
        let why = if let Some(&owner) = self.thread_owner.get(&pa) {
            (owner != pe)
                .then(|| format!("PE {pe} writes descriptor {pa:#x}, which PE {owner} owns alone"))
        } else {
            match self.root_locks.get(&root) {
                None => Some(format!(
                    "PE {pe} writes descriptor {pa:#x} of the tree at {root:#x}, whose root has \
                     no lock associated with it (set_root_lock)"
                )),
                Some(&lock) => match self.held.get(&lock) {
                    Some(&h) if h == pe => None,
                    Some(&h) => Some(format!(
                        "PE {pe} writes descriptor {pa:#x} of the tree at {root:#x} while PE {h} \
                         holds its lock {lock:#x}"
                    )),
                    None => Some(format!(
                        "PE {pe} writes descriptor {pa:#x} of the tree at {root:#x} without \
                         holding its lock {lock:#x}"
                    )),
                },
            }
        };
        if let Some(why) = why {
            self.report(ViolationKind::LockDiscipline, at, pa, 1 << pe, why);
        }
    }

    // ----- barriers and TLBIs ------------------------------------------

    fn barrier(&mut self, pe: usize, b: Barrier) {
        match b {
            Barrier::Isb => self.costs.isb += 1,
            Barrier::Dmb => {}
            Barrier::Dsb {
                domain,
                stores_only,
            } => {
                let shareable = domain != Domain::NonShareable || self.pes.len() == 1;
                // The writer's removals are now visible to every walker; a
                // DSB NSH makes them visible to its own PE's walker, which
                // is every walker that matters for an entry only this PE
                // may hold (its tag ran nowhere else).
                let seq = self.seq;
                let own = 1u64 << pe;
                let from = self.ghost_index.visible;
                for g in self.ghosts.iter_mut().skip(from) {
                    if g.writer == pe
                        && g.visible.is_none()
                        && (shareable || g.holder_mask() & !own == 0)
                    {
                        g.visible = Some(seq);
                    }
                }
                // Visible stays visible: the next DSB starts past these.
                debug_assert!(from <= self.ghosts.len(), "ghosts moved without reshaped");
                self.ghost_index.visible += self
                    .ghosts
                    .iter()
                    .skip(from)
                    .take_while(|g| g.visible.is_some())
                    .count();
                if stores_only || domain == Domain::NonShareable {
                    self.costs.dsb_light += 1;
                } else {
                    self.costs.dsb += 1;
                }
                if stores_only {
                    return;
                }
                let pending = core::mem::take(&mut self.pes[pe].pending);
                let mut keep = Vec::new();
                let mut batch = Vec::new();
                for p in pending {
                    if p.scope.broadcast && domain == Domain::NonShareable {
                        keep.push(p);
                        continue;
                    }
                    let pes = if p.scope.broadcast {
                        self.all_pes()
                    } else {
                        1 << pe
                    };
                    batch.push(ghost::Applied {
                        scope: p.scope,
                        pes,
                        issued: p.issued,
                    });
                }
                let now = self.seq;
                if ghost::invalidate_batch(&mut self.ghosts, &batch, now, &mut self.scratch) {
                    self.ghost_index.reshaped();
                }
                for a in &batch {
                    if a.scope.broadcast {
                        self.note_flush(&a.scope);
                    }
                }
                self.pes[pe].pending = keep;
            }
        }
    }

    fn tlbi(&mut self, pe: usize, op: TlbiOp, operand: u64) {
        *self.costs.tlbi.entry(op).or_insert(0) += 1;
        let scope = Scope::of(op, operand, self.pes[pe].vmid());
        let pes = if scope.broadcast {
            self.pes.len() as u64
        } else {
            1
        };
        let removed = self.collateral(&scope) * pes;
        self.costs.collateral += removed;
        self.costs.refill_walks += removed;
        self.pes[pe].pending.push(PendingTlbi {
            scope,
            issued: self.seq,
        });
    }

    /// Entries still in the tables that `scope` removes from one PE (and
    /// that the PE will refill).
    fn collateral(&self, scope: &Scope) -> u64 {
        if scope.void {
            return 0;
        }
        let mut total = 0;
        for (id, t) in self.mem.trees.iter().enumerate() {
            if !t.live() {
                continue;
            }
            let Some(key) = t.key else { continue };
            if !ghost::target_hits(scope.target, key) {
                continue;
            }
            let kinds_here = scope.kinds & ghost::kinds_of(t.stage, true);
            let per_leaf = kinds_here.count_ones() as u64;
            if per_leaf == 0 {
                continue;
            }
            match scope.range {
                None => total += t.leaves * per_leaf,
                // One page (a by-address TLBI): no leaf is smaller, so the
                // one translating its first address is the only one.
                Some((a, b)) if a % PAGE == 0 && b.wrapping_sub(a) <= PAGE => {
                    if self
                        .mem
                        .translate_at(id, a)
                        .is_some_and(|(l, _)| l.grants != 0)
                    {
                        total += per_leaf;
                    }
                }
                Some((a, b)) => {
                    let mut n = 0;
                    let mut last = None;
                    self.mem
                        .translate_range(id, a, b.max(a + 1), &mut |_, _, l| {
                            if let Some((leaf, at)) = l {
                                if last != Some(at) && leaf.grants != 0 {
                                    n += 1;
                                    last = Some(at);
                                }
                            }
                        });
                    total += n * per_leaf;
                }
            }
        }
        total
    }

    // ----- registers, trees, keys --------------------------------------

    fn sysreg(&mut self, pe: usize, reg: Reg, value: u64, at: Origin) {
        match reg {
            Reg::VtcrEl2 => {
                let p = &mut self.pes[pe];
                p.vtcr = value;
                p.vtcr_written = true;
                p.vtcr_reported = false;
            }
            Reg::TcrEl1 => self.pes[pe].tcr_el1 = value,
            Reg::TcrEl2 => self.pes[pe].tcr_el2 = value,
            // E2H is taken as the EL2 TTBRs are written (software sets it
            // at boot, before it installs EL2 tables): tables installed
            // before a change keep the key they were installed with.
            Reg::HcrEl2 => self.pes[pe].hcr = Some(value),
            Reg::VttbrEl2 => {
                let geometry = self.check_vttbr(pe, value, at);
                self.leave(self.pes[pe].vttbr, value);
                self.pes[pe].vttbr = value;
                self.install(
                    value & BADDR,
                    Stage::Stage2,
                    Key::Vmid((value >> 48) as u16),
                    geometry,
                    at,
                );
            }
            Reg::Ttbr0El2 => {
                let p = &self.pes[pe];
                if value >> 48 != 0 && p.hcr.is_some() && !p.e2h() {
                    let why = format!(
                        "TTBR0_EL2 = {value:#x} has ASID {:#x} in bits [63:48], but HCR_EL2 = \
                         {:#x} has E2H 0: without the EL2&0 regime those bits are RES0 (TTBR0_EL2 \
                         field descriptions); the EL2 regime has no ASIDs",
                        value >> 48,
                        p.hcr.unwrap_or(0)
                    );
                    self.report(
                        ViolationKind::RegisterProgramming,
                        at,
                        value & BADDR,
                        1 << pe,
                        why,
                    );
                }
                self.leave(self.pes[pe].ttbr0_el2, value);
                self.pes[pe].ttbr0_el2 = value;
                self.install_el2(pe, false, at);
            }
            Reg::Ttbr1El2 => {
                self.leave(self.pes[pe].ttbr1_el2, value);
                self.pes[pe].ttbr1_el2 = value;
                // Without E2H no walk uses TTBR1_EL2 (the EL2 regime has
                // one VA range).
                if self.pes[pe].e2h() {
                    self.install_el2(pe, true, at);
                    if self.pes[pe].tcr_el2 >> 22 & 1 == 1 {
                        // A1: TTBR1_EL2 holds the ASID of both tables.
                        self.install_el2(pe, false, at);
                    }
                }
            }
            Reg::Ttbr0El1 => {
                self.leave(self.pes[pe].ttbr0_el1, value);
                self.pes[pe].ttbr0_el1 = value;
                self.install_el1(pe, false, at);
            }
            Reg::Ttbr1El1 => {
                self.leave(self.pes[pe].ttbr1_el1, value);
                self.pes[pe].ttbr1_el1 = value;
                self.install_el1(pe, true, at);
                if self.pes[pe].tcr_el1 >> 22 & 1 == 1 {
                    // A1: TTBR1_EL1 holds the ASID of both tables.
                    self.install_el1(pe, false, at);
                }
            }
            Reg::Other(_) => {}
        }
    }

    /// The table in TTBR0_EL1 (`upper` false) or TTBR1_EL1 of `pe` may now
    /// be walked, with TCR_EL1.T0SZ or T1SZ \[21:16\] giving its size.
    fn install_el1(&mut self, pe: usize, upper: bool, at: Origin) {
        let p = &self.pes[pe];
        let (ttbr, tsz) = if upper {
            (p.ttbr1_el1, p.tcr_el1 >> 16)
        } else {
            (p.ttbr0_el1, p.tcr_el1)
        };
        let key = p.el1_key(upper);
        self.install(ttbr & BADDR, key.stage(), key, tcr_geometry(tsz), at);
    }

    /// The table in TTBR0_EL2 or (EL2&0 regime) TTBR1_EL2 of `pe` may now
    /// be walked; TCR_EL2 has the TCR_EL1 layout (T1SZ \[21:16\]) with E2H.
    fn install_el2(&mut self, pe: usize, upper: bool, at: Origin) {
        let p = &self.pes[pe];
        let (ttbr, tsz) = if upper {
            (p.ttbr1_el2, p.tcr_el2 >> 16)
        } else {
            (p.ttbr0_el2, p.tcr_el2)
        };
        let key = p.el2_key(upper);
        self.install(ttbr & BADDR, key.stage(), key, tcr_geometry(tsz), at);
    }

    /// The register rules of a VTTBR_EL2 write on `pe` with the VTCR_EL2
    /// it has (reported as [`ViolationKind::RegisterProgramming`] when the
    /// trace gave VTCR_EL2), and the stage 2 geometry to walk with (`None`:
    /// from level 0, one page, as the model always did for a VTCR_EL2 it
    /// cannot use; that keeps checking the tables' own discipline).
    fn check_vttbr(&mut self, pe: usize, value: u64, at: Origin) -> Option<(u8, u8)> {
        let p = &self.pes[pe];
        let (vtcr, written) = (p.vtcr, p.vtcr_written);
        let root = value & BADDR;
        if root == 0 {
            return vtcr_geometry(vtcr).ok();
        }
        let mut problems = Vec::new();
        if written && vtcr >> 19 & 1 == 0 && value >> 56 != 0 {
            problems.push(format!(
                "VTTBR_EL2 = {value:#x} has VMID bits [63:56] set, but VTCR_EL2 = {vtcr:#x} has \
                 VS 0 (8-bit VMIDs): those bits are RES0 (VTTBR_EL2 field descriptions)"
            ));
        }
        let geometry = vtcr_geometry(vtcr);
        // BADDR[x-1:1] are RES0, x being the root table's alignment; the
        // model's stage 2 roots are at least one page (VTTBR_EL2.BADDR).
        let pages = geometry.as_ref().map_or(1, |&(_, pages)| pages as u64);
        let res0 = (pages * PAGE - 1) & !1;
        if value & res0 != 0 {
            problems.push(format!(
                "VTTBR_EL2 = {value:#x} has bits [{}:1] set, below the {} KiB alignment of its \
                 root table: BADDR's low bits are RES0 (VTTBR_EL2.BADDR)",
                (pages * PAGE).trailing_zeros() - 1,
                pages * 4
            ));
        }
        if !problems.is_empty() {
            let why = problems.join("; ");
            self.report(ViolationKind::RegisterProgramming, at, root, 1 << pe, why);
        }
        match geometry {
            Ok(g) => Some(g),
            Err(VtcrProblem::Unsupported(_)) => None,
            Err(VtcrProblem::Inconsistent(what)) => {
                if written && !self.pes[pe].vtcr_reported {
                    self.pes[pe].vtcr_reported = true;
                    let why = format!(
                        "VTTBR_EL2 = {value:#x} starts stage 2 walks with VTCR_EL2 = {vtcr:#x}, \
                         which is not a consistent configuration: {what}. Stage 2 walks with it \
                         may give a level 0 Translation fault instead of the tables' \
                         translations (VTCR_EL2.T0SZ and SL0 field descriptions); the model goes \
                         on checking the tables as walked from level 0 with one root page"
                    );
                    self.report(ViolationKind::RegisterProgramming, at, root, 1 << pe, why);
                }
                None
            }
        }
    }

    /// A PE's base register changes from `old` to `new`: note when it
    /// left the tree it held.
    fn leave(&mut self, old: u64, new: u64) {
        if old == new || old & BADDR == 0 {
            return;
        }
        if let Some(&t) = self.mem.roots.get(&(old & BADDR)) {
            self.mem.trees[t].left_at = self.seq;
        }
    }

    /// A completed broadcast invalidation of everything a key tags.
    fn note_flush(&mut self, scope: &Scope) {
        if scope.void || scope.range.is_some() {
            return;
        }
        let seq = self.seq;
        let keys: Vec<Key> = self.owners.keys().copied().collect();
        for k in keys {
            let hit = match (scope.target, k) {
                // Stage 2 keys need stage-2-only entries gone too.
                (Target::AllVmids, Key::Vmid(_)) => scope.kinds == kinds::ALL,
                (Target::Vmid(v), Key::Vmid(w)) => v == w && scope.kinds == kinds::ALL,
                // Stage 1 keys: every stage 1 entry of the VMID (and the ASID).
                (Target::AllVmids, Key::Asid { .. } | Key::Asid1 { .. }) => {
                    scope.kinds & kinds::STAGE1 != 0
                }
                (Target::Vmid(v), Key::Asid { vmid, asid } | Key::Asid1 { vmid, asid }) => {
                    v == vmid
                        && scope.kinds & kinds::STAGE1 != 0
                        && match scope.asid {
                            crate::scope::AsidMatch::Any => true,
                            crate::scope::AsidMatch::Only(a)
                            | crate::scope::AsidMatch::OrGlobal(a) => a == asid,
                        }
                }
                (Target::El2, Key::El2) => true,
                (Target::El2, Key::El20 { asid, .. }) => match scope.asid {
                    crate::scope::AsidMatch::Any => true,
                    crate::scope::AsidMatch::Only(a) | crate::scope::AsidMatch::OrGlobal(a) => {
                        a == asid
                    }
                },
                _ => false,
            };
            if hit {
                self.flushed_at.insert(k, seq);
            }
        }
    }

    /// A PE may now walk the tree at `root` with tag `key`.
    fn install(
        &mut self,
        root: u64,
        stage: Stage,
        key: Key,
        geometry: Option<(u8, u8)>,
        at: Origin,
    ) {
        if root == 0 {
            // VTTBR_EL2 = 0 and the like: no table (KVM parks VTTBR so).
            return;
        }
        let id = self.tree_at(root);
        *self.ran_on.entry(key).or_insert(0) |= 1 << self.current_pe;
        let t = self.mem.trees[id].clone();
        if t.live() && t.key == Some(key) {
            return;
        }
        if let Some(old) = t.key.filter(|&k| k != key && t.live()) {
            // A new tag for a live tree (a VMID rollover does this) is safe
            // once no PE runs it with the old tag and an invalidation of
            // everything tagged so has completed since the last one left.
            let running = self.installed_on(&t) & !(1 << self.current_pe);
            let flushed = self.flushed_at.get(&old).is_some_and(|&f| f > t.left_at);
            if running != 0 || !flushed {
                let why = format!(
                    "the tree at {root:#x} is installed with {key}, but it is live with {old}{}: \
                     entries tagged {old} stay cached and {old} is left without an owner that \
                     could invalidate them; invalidate {old} (TLBI VMALLS12E1IS or ALLE1IS, DSB \
                     ISH) once no PE runs it, or release the tree, before giving it another tag",
                    if running != 0 {
                        format!(" and {} still run it", pe_list(running))
                    } else {
                        String::new()
                    }
                );
                self.report(ViolationKind::IdReuse, at, root, running, why);
            }
        }
        let prev = self.owners.get(&key).copied();
        if prev.is_some_and(|o| o != id && self.mem.trees[o].live())
            && !self.mem.trees[id].declared
            && self.empty_tree(id)
        {
            // An empty root with a live tree's tag, not declared as a table
            // (loaded only to issue TLBIs, as speculative AT errata require):
            // it caches nothing, so nothing mixes, and the owner keeps the
            // tag. (A declared root is a tree of its own: Casemate's
            // "duplicate (VM/AS)ID".)
            return;
        }
        let mut duplicate = false;
        if let Some(other) = prev.filter(|&o| o != id && self.mem.trees[o].live()) {
            // A live owner may lose its tag (a rollover gives it another
            // later) once no PE runs it and the tag has been invalidated
            // since the last one left.
            let o = &self.mem.trees[other];
            let running = self.installed_on(o);
            let flushed = self.flushed_at.get(&key).is_some_and(|&f| f > o.left_at);
            if running != 0 || !flushed {
                duplicate = true;
                let why = format!(
                    "{key} is installed for the tree at {root:#x} while the live tree at {:#x} \
                     owns it{}: the two trees' cached entries would be mixed",
                    o.root,
                    if running != 0 {
                        format!(" and {} run it", pe_list(running))
                    } else {
                        " and the tag was not invalidated since it last ran".to_string()
                    }
                );
                self.report(ViolationKind::IdReuse, at, root, running, why);
            }
        }
        if !duplicate && prev != Some(id) {
            // Entries another tree left under this tag (or global entries of
            // the same VMID) would be used by this one.
            let left = self
                .ghosts
                .iter()
                .find(|g| g.held() && tag_matches(g, key) && g.tree != id);
            if let Some(g) = left {
                let flush = if g.global() {
                    "TLBI VMALLE1IS (global entries match every ASID)".to_string()
                } else {
                    format!("{key} (e.g. TLBI VMALLS12E1IS with that VMID, or ALLE1IS)")
                };
                let why = format!(
                    "{key} handed to the tree at {root:#x} while {} may still hold entries of \
                     another tree (at {:#x}): {} from {:#x}; invalidate {flush} and complete \
                     it with DSB ISH first",
                    pe_list(g.holder_mask()),
                    self.mem.trees[g.tree].root,
                    describe(g),
                    g.slot
                );
                let pes = g.holder_mask();
                self.report(ViolationKind::IdReuse, at, root, pes, why);
            }
        }
        self.owners.insert(key, id);
        let first = !t.installed;
        let tree = &mut self.mem.trees[id];
        tree.key = Some(key);
        tree.stage = stage;
        tree.installed = true;
        if first {
            tree.installed_at = at.seq;
            // Re-link from the root with the geometry and stage now known
            // (a hint may have created the tree with defaults).
            let (level, pages) = geometry.unwrap_or((0, 1));
            let (root, old_pages) = (tree.root, tree.root_pages);
            tree.start_level = level;
            tree.root_pages = pages;
            for i in 0..old_pages as u64 {
                self.mem.unlink(root + i * PAGE);
            }
            self.mem.link_root(id);
        }
    }

    // ----- releases ----------------------------------------------------

    /// Whether a PE has the tree in a base register now.
    fn installed_on(&self, tree: &Tree) -> u64 {
        let mut m = 0;
        for (i, pe) in self.pes.iter().enumerate() {
            let regs = [
                pe.vttbr,
                pe.ttbr0_el2,
                pe.ttbr1_el2,
                pe.ttbr0_el1,
                pe.ttbr1_el1,
            ];
            if regs.iter().any(|&r| r & BADDR == tree.root) {
                m |= 1 << i;
            }
        }
        m
    }

    /// Table memory in `[pa, pa + size)` stops being what it was: every
    /// table page in it is released (nothing may still walk it), then the
    /// memory is zeroed table memory again or gone. Any size: beyond
    /// [`MAX_PAGES_ONE_BY_ONE`] pages only the pages the model keeps and
    /// those cached walks lead to are visited, and a zeroed region is kept
    /// as a range.
    fn release_region(&mut self, pa: u64, size: u64, origin: Origin, reuse: Reuse) {
        let (start, end) = page_span(pa, size);
        let what = match reuse {
            Reuse::Zeroed => "re-initialised",
            Reuse::Released => "released",
            Reuse::Freed => "freed",
        };
        for page in self.pages_touched(start, end) {
            self.release_page(page, origin, what);
            match reuse {
                Reuse::Zeroed => self.mem.init_page(page),
                Reuse::Released | Reuse::Freed => self.mem.free_page(page),
            }
        }
        if (end - start) / PAGE > MAX_PAGES_ONE_BY_ONE {
            match reuse {
                Reuse::Zeroed => self.mem.add_zeroed(start, end),
                Reuse::Released | Reuse::Freed => self.mem.forget_zeroed(start, end),
            }
        }
    }

    /// The pages of `[start, end)` that something may refer to: all of them
    /// when there are few, else the pages the model keeps there and those
    /// cached walks lead to.
    fn pages_touched(&self, start: u64, end: u64) -> Vec<u64> {
        if (end - start) / PAGE <= MAX_PAGES_ONE_BY_ONE {
            return (start..end).step_by(PAGE as usize).collect();
        }
        let mut v = self.mem.pages_in(start, end);
        v.extend(self.ghosts.iter().filter_map(|g| match g.cached {
            Cached::Walk { next } if start <= next && next < end => Some(next),
            _ => None,
        }));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Table memory at `page` stops being a table (released or
    /// re-initialised): nothing may still walk it.
    fn release_page(&mut self, page: u64, at: Origin, what: &str) {
        let page = page & !(PAGE - 1);
        if let Some(&id) = self.mem.roots.get(&page) {
            let t = self.mem.trees[id].clone();
            let on = self.installed_on(&t);
            if t.live() && on != 0 {
                let why = format!(
                    "root table {page:#x} {what} while {} still {} it in a translation table base \
                     register",
                    pe_list(on),
                    if on.count_ones() > 1 { "have" } else { "has" }
                );
                self.report(ViolationKind::UseAfterFree, at, page, on, why);
            }
            if t.live() {
                // The tree dies: everything it held stays cached under its
                // key until that key is invalidated.
                let key = t.key.expect("live trees have a key");
                let span = 512 * entry_size(t.start_level);
                let first = t.root_base();
                let before = self.ghosts.len();
                for i in 0..t.root_pages as u64 {
                    let proto = Ghost {
                        tree: id,
                        key,
                        stage: t.stage,
                        level: t.start_level,
                        start: first + i * span,
                        end: first + (i + 1) * span,
                        cached: Cached::Walk { next: 0 },
                        holders: [0; 3],
                        slot: t.root + i * PAGE,
                        value: 0,
                        since: t.installed_at,
                        removed: at,
                        writer: 0,
                        // The tree is gone for walkers at once.
                        visible: Some(self.seq),
                        s2_clear: None,
                        s2_gone: 0,
                        reported: false,
                        clean_at: 0,
                    };
                    self.ghosts_below(&proto, t.root + i * PAGE, t.start_level, first + i * span);
                }
                let _ = before;
            }
            for i in 0..t.root_pages as u64 {
                self.mem.unlink(t.root + i * PAGE);
            }
            self.mem.trees[id].released = true;
            self.mem.roots.remove(&page);
            return;
        }
        let link = self.mem.page(page).and_then(|p| p.link);
        if let Some(l) = link {
            if self.mem.trees[l.tree].live() {
                let why = format!(
                    "table page {page:#x} {what} while it is still linked{} in the live tree at {:#x}",
                    match l.parent {
                        Some(p) => format!(" at {p:#x}"),
                        None => String::new(),
                    },
                    self.mem.trees[l.tree].root
                );
                self.report(ViolationKind::UseAfterFree, at, page, self.all_pes(), why);
            }
            self.mem.unlink(page);
        }
        // Walk-cache entries of live owners that lead into this page.
        let mut culprit = None;
        for g in self.ghosts.iter() {
            if g.holder_mask() & self.running(g.key) == 0 || !self.owner_live(g) {
                continue;
            }
            if let Cached::Walk { next } = g.cached {
                let mut reach = next == page;
                if !reach {
                    self.mem
                        .visit(g.stage, next, g.level + 1, g.start, &mut |_, _, _, d| {
                            if let Decoded::Table { next } = d {
                                reach |= *next == page;
                            }
                        });
                }
                if reach {
                    culprit = Some(g.clone());
                    break;
                }
            }
        }
        if let Some(g) = culprit {
            let why = format!(
                "table page {page:#x} {what} while {} may still walk into it through the cached \
                 table descriptor at {:#x} ({:#x} for {} {:#x} of {}, removed at event {}{}): it \
                 needed {} completed by a DSB ISH first",
                pe_list(g.holder_mask()),
                g.slot,
                g.value,
                addr_name(g.stage),
                g.start,
                g.key,
                g.removed.seq,
                line_of(g.removed),
                needed_tlbi(&g)
            );
            self.report(ViolationKind::UseAfterFree, at, page, g.holder_mask(), why);
        }
    }

    /// [`Event::ReleaseData`] issued by `pe` for data that the caller
    /// knows no live table maps any more (a replay that tracks where each
    /// frame was mapped): only the entries PEs may still hold are checked,
    /// not every descriptor of every live tree. If the caller is wrong, a
    /// use-after-free through the tables themselves goes unreported.
    pub fn release_unmapped_data(&mut self, pe: usize, pa: u64, size: u64, origin: Origin) {
        self.seq += 1;
        self.costs.events += 1;
        self.current_pe = pe.min(self.pes.len() - 1);
        self.release_data_checked(pa, size, origin, false);
    }

    /// A data page stops belonging to its mapper.
    fn release_data(&mut self, pa: u64, size: u64, at: Origin) {
        self.release_data_checked(pa, size, at, true);
    }

    /// [`release_data`](Self::release_data), walking the live trees for
    /// descriptors still mapping the page only with `tables`.
    fn release_data_checked(&mut self, pa: u64, size: u64, at: Origin, tables: bool) {
        if self.reported.contains(&(ViolationKind::UseAfterFree, pa)) {
            // Both findings below would be reports at `pa`, one already is.
            return;
        }
        let end = pa.saturating_add(size);
        for id in 0..self.mem.trees.len() {
            if !tables {
                break;
            }
            let t = &self.mem.trees[id];
            if !t.live() {
                continue;
            }
            let span = 512 * entry_size(t.start_level) * t.root_pages as u64;
            let first = t.root_base();
            let stage = t.stage;
            let root_pages = t.root_pages;
            let (root, level) = (t.root, t.start_level);
            let hit = (0..root_pages as u64).find_map(|i| {
                self.mem.leaf_reaching(
                    stage,
                    root + i * PAGE,
                    level,
                    first + i * span / root_pages as u64,
                    pa,
                    end,
                )
            });
            if let Some((s, ia)) = hit {
                let why = format!(
                    "data page {pa:#x} released while the descriptor at {s:#x} still maps it (at {} {ia:#x} of the tree at {root:#x})",
                    addr_name(stage)
                );
                self.report(ViolationKind::UseAfterFree, at, pa, self.all_pes(), why);
            }
        }
        let culprit = self.ghosts.iter().find(|g| {
            g.held()
                && self.owner_live(g)
                && matches!(g.cached, Cached::Leaf(l) if l.oa < end && pa < l.oa + (g.end - g.start))
        });
        if let Some(g) = culprit {
            let why = format!(
                "data page {pa:#x} released while {} may still translate to it with {} (from {:#x} \
                 at {:#x}, removed at event {}{}): it needed {} completed by a DSB ISH first",
                pe_list(g.holder_mask()),
                describe(g),
                g.value,
                g.slot,
                g.removed.seq,
                line_of(g.removed),
                needed_tlbi(g)
            );
            let pes = g.holder_mask();
            self.report(ViolationKind::UseAfterFree, at, pa, pes, why);
        }
    }

    // ----- what a guest on a PE may see ---------------------------------

    /// Every translation PE `pe`, running with tag `key`, may use for input
    /// address `addr` now: the tables' own (if mapped) and those of stale
    /// entries it may still hold. Each is `(output address, grants)` with
    /// [`crate::desc::grant`] bits. A guest access may use any of them.
    pub fn may_translate(&self, pe: usize, key: Key, addr: u64) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        let Some(&tree) = self.owners.get(&key) else {
            return out;
        };
        if !self.mem.trees[tree].live() {
            return out;
        }
        if let Some((l, at)) = self.mem.translate_at(tree, addr) {
            out.push((l.oa + (addr - at), l.grants));
        }
        let bit = 1u64 << pe.min(63);
        for g in &self.ghosts {
            if g.holder_mask() & bit == 0 || !tag_matches(g, key) || addr < g.start || addr >= g.end
            {
                continue;
            }
            match g.cached {
                Cached::Leaf(l) => out.push((l.oa + (addr - g.start), l.grants)),
                Cached::Walk { next } => {
                    self.mem.translate_in(
                        g.stage,
                        next,
                        g.level + 1,
                        g.start,
                        addr,
                        addr + 1,
                        &mut |_, _, t| {
                            if let Some((l, at)) = t {
                                out.push((l.oa + (addr - at), l.grants));
                            }
                        },
                    );
                }
            }
        }
        out.dedup();
        out
    }

    /// A guest on PE `pe`, running with tag `key`, accesses `addr` needing
    /// the permissions `need` ([`crate::desc::grant`] bits), and the model
    /// picks the worst case the architecture allows:
    ///
    /// - [`Access::Stale`] when a stale entry the PE may hold grants the
    ///   access with another output or a permission the tables no longer
    ///   give (the checker reports such entries at completion points);
    /// - [`Access::SpuriousFault`] when the tables allow the access but a
    ///   stricter stale entry may be used: counted as a cost, and the
    ///   fault handler's local invalidation of that address is applied;
    /// - otherwise what the tables say.
    pub fn access(&mut self, pe: usize, key: Key, addr: u64, need: u8) -> Access {
        let now = self
            .may_translate_tables(key, addr)
            .filter(|&(_, g)| g & need == need);
        let bit = 1u64 << pe.min(63);
        let mut stricter = Vec::new();
        self.ghost_index.catch_up(&self.ghosts);
        let mine = |g: &Ghost| g.holder_mask() & bit != 0 && tag_matches(g, key);
        // The first (in order) stale entry is what the access uses ...
        let mut stale_pa = 0;
        let stale = self.ghost_index.first(&self.ghosts, addr, addr + 1, |i| {
            let g = &self.ghosts[i];
            match g.cached {
                Cached::Leaf(l) if mine(g) && l.grants & need == need => {
                    stale_pa = l.oa + (addr - g.start);
                    !matches!(now, Some((o, _)) if o == stale_pa)
                }
                _ => false,
            }
        });
        if stale.is_some() {
            return Access::Stale { pa: stale_pa };
        }
        // ... else entries stricter than the tables make it fault.
        if now.is_some() {
            let mut near = core::mem::take(&mut self.found);
            self.ghost_index
                .all(&self.ghosts, addr, addr + 1, &mut near);
            stricter.extend(near.iter().copied().filter(|&i| {
                let g = &self.ghosts[i];
                matches!(g.cached, Cached::Leaf(l) if mine(g) && l.grants & need != need)
            }));
            self.found = near;
        }
        if !stricter.is_empty() {
            self.costs.spurious_faults += 1;
            for i in stricter {
                for m in self.ghosts[i].holders.iter_mut() {
                    *m &= !bit;
                }
            }
            self.ghosts.retain(Ghost::held);
            self.ghost_index.reshaped();
            return Access::SpuriousFault;
        }
        match now {
            Some((pa, _)) => Access::Ok { pa },
            None => Access::Fault,
        }
    }

    fn may_translate_tables(&self, key: Key, addr: u64) -> Option<(u64, u8)> {
        let &tree = self.owners.get(&key)?;
        if !self.mem.trees[tree].live() {
            return None;
        }
        let (l, at) = self.mem.translate_at(tree, addr)?;
        Some((l.oa + (addr - at), l.grants))
    }

    // ----- completion points -------------------------------------------

    /// The descriptors of `tree` for `[start, end)` were written.
    fn note_written(&mut self, tree: TreeId, start: u64, end: u64) {
        let Some(w) = self.written.as_mut() else {
            return;
        };
        if let Some(last) = w.last_mut() {
            if last.0 == tree && last.1 <= end && start <= last.2 {
                last.1 = last.1.min(start);
                last.2 = last.2.max(end);
                return;
            }
        }
        if w.len() >= MAX_WRITTEN_RANGES {
            self.written = None;
        } else {
            w.push((tree, start, end));
        }
    }

    /// Every operation so far claims to be complete: no PE may hold an
    /// entry granting more than the tables.
    pub fn completion_point(&mut self, at: Origin) {
        let previous = self.completions;
        self.completions += 1;
        let now = self.completions;
        let written = self.written.replace(Vec::new());
        let mut found = Vec::new();
        let mut clean = Vec::new();
        // Ghosts mostly share one tree and tag: its liveness and where it
        // runs, looked up once per run of ghosts.
        let mut last: Option<(TreeId, Key, bool, u64)> = None;
        let settled = self.ghost_index.settled;
        for (i, g) in self.ghosts.iter().enumerate().skip(settled) {
            if g.reported || !g.held() {
                continue;
            }
            let (live, running) = match last {
                Some((t, k, live, running)) if t == g.tree && k == g.key => (live, running),
                _ => {
                    let (live, running) = (self.owner_live(g), self.running(g.key));
                    last = Some((g.tree, g.key, live, running));
                    (live, running)
                }
            };
            // Entries only a PE that does not run the tag now holds cannot
            // be used until it installs the tag again; the completion point
            // after that judges them.
            if !live || g.holder_mask() & running == 0 {
                continue;
            }
            // A leaf run found clean at the last completion point is clean
            // still if no descriptor of its range was written since.
            let leaf = matches!(g.cached, Cached::Leaf(_));
            if leaf
                && g.clean_at == previous
                && previous != 0
                && written.as_ref().is_some_and(|w| {
                    !w.iter()
                        .any(|&(t, s, e)| t == g.tree && s < g.end && g.start < e)
                })
            {
                clean.push(i);
                continue;
            }
            match self.grants_more(g) {
                Some(why) => found.push((i, why)),
                None if leaf => clean.push(i),
                None => {}
            }
        }
        for i in clean {
            self.ghosts[i].clean_at = now;
        }
        for (i, why) in found {
            self.ghosts[i].reported = true;
            if self.is_reported(ViolationKind::StaleTranslation, self.ghosts[i].slot) {
                // Reported there already: the message would be dropped.
                continue;
            }
            let g = self.ghosts[i].clone();
            let text = format!(
                "{} may still hold {} (from {:#x} at {:#x}, cached since event {}, removed at event {}{}), \
                 but {why}; it needed {} completed by a DSB ISH before this point",
                pe_list(g.holder_mask()),
                describe(&g),
                g.value,
                g.slot,
                g.since,
                g.removed.seq,
                line_of(g.removed),
                needed_tlbi(&g)
            );
            self.report(
                ViolationKind::StaleTranslation,
                at,
                g.slot,
                g.holder_mask(),
                text,
            );
        }
        // Reported or held by no PE stays so: later points start past these.
        debug_assert!(
            settled <= self.ghosts.len(),
            "ghosts moved without reshaped"
        );
        self.ghost_index.settled += self
            .ghosts
            .iter()
            .skip(settled)
            .take_while(|g| g.reported || !g.held())
            .count();
    }

    /// Whether the entries of ghost `g` grant something the tables of its
    /// tree do not now: returns why.
    fn grants_more(&self, g: &Ghost) -> Option<String> {
        let mut why = None;
        match g.cached {
            Cached::Leaf(l) => {
                if l.grants == 0 {
                    return None;
                }
                self.mem
                    .translate_range(g.tree, g.start, g.end, &mut |s, _e, now| {
                        if why.is_some() {
                            return;
                        }
                        let old_out = l.oa + (s - g.start);
                        why = match now {
                            None => Some(format!(
                                "the tables no longer map {} {s:#x}",
                                addr_name(g.stage)
                            )),
                            Some((n, at)) => {
                                let new_out = n.oa + (s - at);
                                if new_out != old_out {
                                    Some(format!(
                                        "the tables map {} {s:#x} to {new_out:#x}, not {old_out:#x}",
                                        addr_name(g.stage)
                                    ))
                                } else if l.grants & !n.grants != 0 {
                                    Some(format!(
                                        "the tables no longer grant {} at {} {s:#x}",
                                        grants_name(l.grants & !n.grants),
                                        addr_name(g.stage)
                                    ))
                                } else {
                                    None
                                }
                            }
                        };
                    });
            }
            Cached::Walk { next } => {
                // Still the same table at the same place: nothing stale.
                let here = self.mem.slot(g.slot);
                let same = here.is_some_and(|s| s.tree == g.tree && s.level == g.level)
                    && matches!(self.mem.decode(g.tree, g.level, self.mem.read(g.slot)),
                        Decoded::Table { next: n } if n == next);
                if same {
                    return None;
                }
                if !self.mem.exists(next) {
                    return Some(format!(
                        "the table page {next:#x} it points to has been freed"
                    ));
                }
                // Whatever the cached walk reaches now, compared with the
                // tables.
                self.mem
                    .translate_in(g.stage, next, g.level + 1, g.start, g.start, g.end, &mut |s,
                                                                                     e,
                                                                                     through| {
                        if why.is_some() {
                            return;
                        }
                        let Some((l, at)) = through else { return };
                        if l.grants == 0 {
                            return;
                        }
                        self.mem.translate_range(g.tree, s, e, &mut |s2, _, now| {
                            if why.is_some() {
                                return;
                            }
                            let out = l.oa + (s2 - at);
                            why = match now {
                                None => Some(format!(
                                    "through the old table {next:#x} it still translates {} {s2:#x}, which the tables no longer map",
                                    addr_name(g.stage)
                                )),
                                Some((n, at2)) if n.oa + (s2 - at2) != out || l.grants & !n.grants != 0 => {
                                    Some(format!(
                                        "through the old table {next:#x} it translates {} {s2:#x} to {out:#x}, which the tables do not allow",
                                        addr_name(g.stage)
                                    ))
                                }
                                _ => None,
                            };
                        });
                    });
            }
        }
        why
    }
}

/// Whether ghost `g` would be used by a PE running with tag `k` (global
/// stage 1 entries match every ASID of their VMID).
fn tag_matches(g: &Ghost, k: Key) -> bool {
    match (g.key.asid(), k.asid()) {
        (Some(x), Some(y)) if g.key.same_space(k) => x == y || g.global(),
        _ => g.key == k,
    }
}

/// Whether leaf ghost `g` (a run) continues with the leaf ghost `n`.
fn extends(r: &Ghost, n: &Ghost) -> bool {
    match n.cached {
        Cached::Leaf(b) => extends_leaf(r, n.level, n.start, n.slot, &b),
        Cached::Walk { .. } => false,
    }
}

/// Whether leaf ghost `r` (a run) continues with leaf `b` of the descriptor
/// at `slot` (at `level`, input address `start`).
fn extends_leaf(r: &Ghost, level: u8, start: u64, slot: u64, b: &Leaf) -> bool {
    match r.cached {
        Cached::Leaf(a) => {
            r.level == level
                && r.end == start
                && slot == r.slot + (r.end - r.start) / entry_size(r.level) * 8
                && a.oa + (r.end - r.start) == b.oa
                && a.grants == b.grants
                && a.attrs == b.attrs
                && a.global == b.global
        }
        Cached::Walk { .. } => false,
    }
}

fn addr_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Stage2 => "IPA",
        _ => "VA",
    }
}

fn line_of(o: Origin) -> String {
    if o.line != 0 {
        format!(", line {}", o.line)
    } else {
        String::new()
    }
}

fn grants_name(g: u8) -> String {
    use crate::desc::grant::*;
    let names = [
        (READ, "read"),
        (WRITE, "write"),
        (EL0_READ, "EL0 read"),
        (EL0_WRITE, "EL0 write"),
        (EXEC, "execute"),
        (EL0_EXEC, "EL0 execute"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| g & b != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join("/")
}

/// "a level 3 entry for IPA 0x1000..0x3000 -> 0x8000" and the like.
fn describe(g: &Ghost) -> String {
    let what = match g.cached {
        Cached::Leaf(l) => format!(
            "{} level {} {} for {} {:#x}..{:#x} -> {:#x}",
            if g.end - g.start > entry_size(g.level) {
                "the"
            } else {
                "a"
            },
            g.level,
            if g.end - g.start > entry_size(g.level) {
                "entries"
            } else {
                "entry"
            },
            addr_name(g.stage),
            g.start,
            g.end,
            l.oa
        ),
        Cached::Walk { next } => format!(
            "a level {} walk-cache entry for {} {:#x}..{:#x} -> table {next:#x}",
            g.level,
            addr_name(g.stage),
            g.start,
            g.end
        ),
    };
    let kinds: Vec<&str> = [
        (kinds::STAGE1, "stage 1"),
        (kinds::STAGE2_ONLY, "stage-2-only"),
        (kinds::COMBINED, "combined stage 1+2"),
    ]
    .iter()
    .enumerate()
    .filter(|(i, _)| g.holders[*i] != 0)
    .map(|(_, (_, n))| *n)
    .collect();
    format!("{what} ({}, {})", kinds.join(" and "), g.key)
}

/// The invalidation that would have removed `g`.
fn needed_tlbi(g: &Ghost) -> String {
    let walk = matches!(g.cached, Cached::Walk { .. });
    match g.key {
        Key::Vmid(v) => {
            let mut parts = Vec::new();
            if g.holders[1] != 0 {
                parts.push(format!(
                    "TLBI {} for IPA {:#x} (VMID {v} in VTTBR_EL2)",
                    if walk { "IPAS2E1IS" } else { "IPAS2(L)E1IS" },
                    g.start
                ));
            }
            if g.holders[2] != 0 {
                parts.push(format!("TLBI VMALLE1IS (VMID {v}) after it"));
            }
            parts.join(", then ")
        }
        Key::Asid { asid, vmid } | Key::Asid1 { asid, vmid } => format!(
            "TLBI {} for VA {:#x} (ASID {asid}, VMID {vmid})",
            if walk { "VAE1IS" } else { "VA(L)E1IS" },
            g.key.full_address(g.start)
        ),
        Key::El2 => format!(
            "TLBI {} for VA {:#x}",
            if walk { "VAE2IS" } else { "VA(L)E2IS" },
            g.start
        ),
        Key::El20 { asid, .. } => format!(
            "TLBI {} for VA {:#x} (ASID {asid} in the operand)",
            if walk { "VAE2IS" } else { "VA(L)E2IS" },
            g.key.full_address(g.start)
        ),
    }
}
