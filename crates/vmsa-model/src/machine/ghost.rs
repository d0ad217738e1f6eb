//! Entries that PEs may still hold although the tables no longer contain
//! them ("ghosts"), and how invalidations remove them.
//!
//! Entries still in the tables are not stored: the model assumes every PE
//! has cached every one of them (speculatively, at any time), and refills
//! them the moment an invalidation removes them. Only what differs from the
//! tables needs remembering, and that is what a checker judges.

use crate::desc::{entry_size, Leaf, Stage};
use crate::event::Origin;
use crate::scope::{kinds, AsidMatch, Scope, Target};

use super::memory::{Key, TreeId};

/// What a ghost caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// A run of leaf entries at one level with contiguous output addresses
    /// and the same attributes; `leaf.oa` is the output of `start`.
    Leaf(Leaf),
    /// A walk-cache entry: the table descriptor pointing at `next`.
    Walk {
        /// The next-level table it points to.
        next: u64,
    },
}

/// Entries a PE may hold for `[start, end)` at `level`, no longer in the
/// tables.
#[derive(Clone, Debug)]
pub struct Ghost {
    /// Tree the entries were walked from.
    pub tree: TreeId,
    /// Their tag.
    pub key: Key,
    /// Their stage.
    pub stage: Stage,
    /// Level of the descriptor(s).
    pub level: u8,
    /// First input address.
    pub start: u64,
    /// End of the input range (exclusive).
    pub end: u64,
    /// What is cached.
    pub cached: Cached,
    /// For each entry kind ([`kinds`] bit i), the PEs that may hold it.
    pub holders: [u64; 3],
    /// The descriptor it came from (for runs, the first one).
    pub slot: u64,
    /// The descriptor value (for runs, of the first one).
    pub value: u64,
    /// When that descriptor was written.
    pub since: u64,
    /// The event that removed it from the tables.
    pub removed: Origin,
    /// The PE whose write removed it.
    pub writer: usize,
    /// The `DSB` of `writer` that made the removal visible to every walker;
    /// until then walkers may still read the old descriptor and refill.
    pub visible: Option<u64>,
    /// When the last stage-2-only part was removed (the completing `DSB`).
    /// Until then a walk may rebuild a combined entry from it, so an
    /// invalidation of combined entries only counts if issued after this
    /// (KVM's `__kvm_tlb_flush_vmid_ipa` completes the IPA invalidation
    /// with a DSB before `TLBI VMALLE1IS` for that reason).
    pub s2_clear: Option<u64>,
    /// The PEs whose stage-2-only part has been removed (each can no
    /// longer rebuild a combined entry from it).
    pub s2_gone: u64,
    /// Already reported as a stale translation.
    pub reported: bool,
    /// The completion point (its number, 0 for none) at which this leaf
    /// run was last found to grant nothing the tables do not: while no
    /// descriptor of its range is written, later completion points need
    /// not walk the tables again to know.
    pub clean_at: u64,
}

impl Ghost {
    /// Some PE may still hold some part of it.
    pub fn held(&self) -> bool {
        self.holders.iter().any(|&m| m != 0)
    }

    /// PEs holding any kind.
    pub fn holder_mask(&self) -> u64 {
        self.holders.iter().fold(0, |a, &m| a | m)
    }

    /// Global (matches every ASID).
    pub fn global(&self) -> bool {
        match self.cached {
            Cached::Leaf(l) => l.global,
            Cached::Walk { .. } => false,
        }
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }

    /// Whether `scope` addresses this ghost's tree, ASID, level and form.
    pub fn in_scope(&self, scope: &Scope) -> bool {
        if scope.void {
            return false;
        }
        if !target_hits(scope.target, self.key) {
            return false;
        }
        if let Some(asid) = self.key.asid() {
            let ok = match scope.asid {
                AsidMatch::Any => true,
                AsidMatch::OrGlobal(a) => self.global() || a == asid,
                AsidMatch::Only(a) => !self.global() && a == asid,
            };
            if !ok {
                return false;
            }
        }
        if scope.leaf_only && matches!(self.cached, Cached::Walk { .. }) {
            return false;
        }
        if scope.level.is_some_and(|l| l != self.level) {
            return false;
        }
        // A TLBI by VA names a VA of one range: stage 1 entries of the
        // other range's table are not at that VA.
        if let Some(upper) = scope.upper {
            if !matches!(self.key, Key::Vmid(_)) && upper != self.key.upper() {
                return false;
            }
        }
        match scope.range {
            None => true,
            Some((a, b)) => self.overlaps(a, b),
        }
    }

    /// Copy of this ghost restricted to `[start, end)` (within it).
    fn piece(&self, start: u64, end: u64) -> Ghost {
        let mut g = self.clone();
        g.start_at(start);
        g.end = end;
        g
    }

    /// Drops the part before `start` (within it), in place.
    fn start_at(&mut self, start: u64) {
        let off = start - self.start;
        self.start = start;
        if let Cached::Leaf(ref mut l) = self.cached {
            l.oa += off;
        }
        self.slot += off / entry_size(self.level) * 8;
    }
}

/// The entries of a run that an invalidation of `[a, b)` reaches: every
/// entry translating some address in the range.
fn reach(g: &Ghost, range: Option<(u64, u64)>) -> (u64, u64) {
    match range {
        None => (g.start, g.end),
        Some((a, b)) => {
            let size = entry_size(g.level);
            let lo = (a - a % size).max(g.start);
            let hi = b.div_ceil(size).saturating_mul(size).min(g.end).max(lo);
            (lo, hi)
        }
    }
}

/// One completed invalidation: what it removes, from which PEs, and when
/// it was issued.
#[derive(Clone, Copy, Debug)]
pub struct Applied {
    /// Its scope.
    pub scope: Scope,
    /// The PEs it acts on.
    pub pes: u64,
    /// When it executed.
    pub issued: u64,
}

/// Whether `a` acts on `g` at all: the removal was visible to walkers
/// before `a` was issued, and `a` addresses it.
fn eligible(g: &Ghost, a: &Applied) -> bool {
    g.visible.is_some_and(|v| v < a.issued) && g.in_scope(&a.scope)
}

/// Applies one invalidation to one ghost: the pieces that remain (up to
/// three, in address order).
fn apply_one(g: Ghost, a: &Applied, now: u64, out: &mut Vec<Ghost>) {
    if !eligible(&g, a) {
        out.push(g);
        return;
    }
    let (lo, hi) = reach(&g, a.scope.range);
    if g.start < lo {
        out.push(g.piece(g.start, lo));
    }
    let mut mid = if lo == g.start && hi == g.end {
        g.clone()
    } else {
        g.piece(lo, hi)
    };
    const S2: usize = 1; // kinds::STAGE2_ONLY
    let s2_before = mid.holders[S2];
    mid.holders = left_holding(&mid, a);
    let gone = s2_before & !mid.holders[S2];
    if gone != 0 {
        mid.s2_gone |= gone;
        mid.s2_clear = Some(now);
    }
    if mid.held() && mid.start < mid.end {
        out.push(mid);
    }
    if hi < g.end {
        out.push(g.piece(hi, g.end));
    }
}

/// The holders of the entries of `g` that `a` reaches (and is eligible to
/// remove) once it has removed them.
fn left_holding(g: &Ghost, a: &Applied) -> [u64; 3] {
    const S2: usize = 1; // kinds::STAGE2_ONLY
    const COMBINED: usize = 2; // kinds::COMBINED
                               // PEs that cannot rebuild a combined entry: those whose stage-2-only
                               // entry was removed by an invalidation completed before this one was
                               // issued (KVM's `__kvm_tlb_flush_vmid_ipa` completes the IPA
                               // invalidation with a DSB before `TLBI VMALLE1IS` for that reason).
                               // Entries of stage 1 tables have no stage 2 part to rebuild from.
    let settled = if g.stage != crate::desc::Stage::Stage2 {
        u64::MAX
    } else if g.s2_clear.is_some_and(|c| c < a.issued) {
        g.s2_gone
    } else {
        0
    };
    let mut holders = g.holders;
    for (k, m) in holders.iter_mut().enumerate() {
        if a.scope.kinds & (1 << k) == 0 {
            continue;
        }
        if k == COMBINED && a.scope.kinds & (1 << S2) == 0 {
            *m &= !(a.pes & settled);
        } else {
            *m &= !a.pes;
        }
    }
    holders
}

/// What [`trim`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trim {
    /// The ghost is what [`apply_one`] leaves of it (perhaps shortened).
    Kept,
    /// Nothing is left of it.
    Gone,
    /// It does not end as one piece or none: use [`apply_one`].
    Split,
}

/// [`apply_one`] in place for the common cases, without copying the
/// ghost: `a` does not apply to it, or removes all it reaches from every
/// holder and what it reaches is the whole ghost, its start or its end (a
/// per-page TLBI walking along an unmapped run).
fn trim(g: &mut Ghost, a: &Applied) -> Trim {
    if !eligible(g, a) {
        return Trim::Kept;
    }
    let (lo, hi) = reach(g, a.scope.range);
    if lo >= hi || left_holding(g, a).iter().any(|&m| m != 0) {
        return Trim::Split;
    }
    match (lo == g.start, hi == g.end) {
        (true, true) => Trim::Gone,
        (true, false) => {
            g.start_at(hi);
            Trim::Kept
        }
        (false, true) => {
            g.end = lo;
            Trim::Kept
        }
        (false, false) => Trim::Split,
    }
}

/// Whether two pieces of one run can be one again.
fn joinable(a: &Ghost, b: &Ghost) -> bool {
    a.end == b.start
        && a.tree == b.tree
        && a.key == b.key
        && a.level == b.level
        && a.holders == b.holders
        && a.s2_clear == b.s2_clear
        && a.s2_gone == b.s2_gone
        && a.visible == b.visible
        && a.writer == b.writer
        && a.reported == b.reported
        && match (a.cached, b.cached) {
            (Cached::Leaf(x), Cached::Leaf(y)) => {
                x.oa + (a.end - a.start) == y.oa
                    && x.grants == y.grants
                    && x.attrs == y.attrs
                    && x.global == y.global
            }
            _ => false,
        }
}

/// Bytes above which an address-scoped invalidation is checked against
/// every ghost rather than looked up by address.
const SMALL: u64 = 1 << 21;

/// `batch` with each run of consecutive invalidations that differ only in
/// naming the next range (the per-page TLBIs of an unmap) made one, where
/// that removes exactly what the run removes: the same PEs, and no ghost
/// made visible (or its stage 2 part cleared) between the first's issue
/// and the last's, so that each ghost is eligible for all of them or for
/// none. Applying the run one by one splits a ghost run page by page and
/// joins the pieces again; applying it at once gives the same pieces.
fn coalesce(ghosts: &[Ghost], batch: &[Applied]) -> Vec<Applied> {
    // The times at which a ghost's eligibility changes.
    let mut times: Vec<u64> = ghosts
        .iter()
        .flat_map(|g| [g.visible, g.s2_clear])
        .flatten()
        .collect();
    times.sort_unstable();
    let any_in = |from: u64, to: u64| {
        let i = times.partition_point(|&t| t < from);
        times.get(i).is_some_and(|&t| t < to)
    };
    let mut out: Vec<Applied> = Vec::with_capacity(batch.len());
    for a in batch {
        if let Some(m) = out.last_mut() {
            if let (Some((ms, me)), Some((s, e))) = (m.scope.range, a.scope.range) {
                let same = Scope {
                    range: a.scope.range,
                    ..m.scope
                } == a.scope;
                if same && me == s && m.pes == a.pes && !any_in(m.issued, a.issued) {
                    m.scope.range = Some((ms, e));
                    continue;
                }
            }
        }
        out.push(*a);
    }
    out
}

/// Applies completed invalidations, in issue order, to every ghost they
/// reach. Address-scoped ones are looked up by address, so that a batch
/// of per-page TLBIs over a large unmap costs per page, not per page per
/// ghost. Returns whether some ghost was reached (and so may have moved,
/// shrunk, split or gone).
pub fn invalidate_batch(
    ghosts: &mut Vec<Ghost>,
    batch: &[Applied],
    now: u64,
    scratch: &mut Scratch,
) -> bool {
    if batch.is_empty() || ghosts.is_empty() {
        return false;
    }
    if batch.len() > 1 {
        apply_batch(ghosts, &coalesce(ghosts, batch), now, scratch)
    } else {
        apply_batch(ghosts, batch, now, scratch)
    }
}

/// Room [`invalidate_batch`] works in, kept from one batch to the next (a
/// policy that completes every TLBI with its own DSB runs a batch per
/// page).
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    small: Vec<(u64, usize)>,
    big: Vec<usize>,
    cands: Vec<usize>,
    pieces: Vec<Ghost>,
    next: Vec<Ghost>,
}

/// [`invalidate_batch`] without [`coalesce`].
fn apply_batch(ghosts: &mut Vec<Ghost>, batch: &[Applied], now: u64, s: &mut Scratch) -> bool {
    let mut reached = false;
    let Scratch {
        small,
        big,
        cands,
        pieces,
        next,
    } = s;
    small.clear();
    big.clear();
    for (i, a) in batch.iter().enumerate() {
        if a.scope.void {
            continue;
        }
        match a.scope.range {
            Some((s, e)) if e.saturating_sub(s) <= SMALL => small.push((s, i)),
            _ => big.push(i),
        }
    }
    small.sort_unstable();
    // Ghosts no scope reaches, and those left as one piece, stay in place;
    // the vector is rebuilt (in order) only when some ghost went away or
    // was split.
    let mut changed: Vec<(usize, Vec<Ghost>)> = Vec::new();
    for (gi, g) in ghosts.iter_mut().enumerate() {
        cands.clear();
        cands.extend(big.iter().copied());
        // Small scopes start within SMALL below the ghost's start at most.
        let from = small.partition_point(|&(s, _)| s < g.start.saturating_sub(SMALL));
        for &(s, i) in &small[from..] {
            if s >= g.end {
                break;
            }
            cands.push(i);
        }
        if cands.is_empty() {
            continue;
        }
        reached = true;
        if let [i] = cands[..] {
            match trim(g, &batch[i]) {
                Trim::Kept => continue,
                Trim::Gone => {
                    changed.push((gi, Vec::new()));
                    continue;
                }
                Trim::Split => {}
            }
        }
        cands.sort_unstable();
        pieces.clear();
        pieces.push(g.clone());
        for &i in cands.iter() {
            next.clear();
            for p in pieces.drain(..) {
                apply_one(p, &batch[i], now, next);
            }
            // Rejoin neighbours that ended up alike.
            for p in next.drain(..) {
                match pieces.last_mut() {
                    Some(last) if joinable(last, &p) => {
                        last.end = p.end;
                        last.clean_at = last.clean_at.min(p.clean_at);
                    }
                    _ => pieces.push(p),
                }
            }
            if pieces.is_empty() {
                break;
            }
        }
        if pieces.len() == 1 {
            *g = pieces.pop().expect("one piece");
        } else {
            changed.push((gi, core::mem::take(pieces)));
        }
    }
    let Some(&(first, _)) = changed.first() else {
        return reached;
    };
    // Rebuild from the first ghost that went away or was split (usually
    // among the newest, at the end).
    let tail: Vec<Ghost> = ghosts.drain(first..).collect();
    let mut changed = changed.into_iter().peekable();
    for (gi, g) in tail.into_iter().enumerate() {
        match changed.next_if(|(i, _)| *i == first + gi) {
            Some((_, ps)) => ghosts.extend(ps),
            None => ghosts.push(g),
        }
    }
    true
}

/// The kinds of cached entry a stage's descriptors produce: stage 2 leaves
/// give stage-2-only and combined entries, stage 2 tables stage-2-only walk
/// entries, stage 1 descriptors stage 1 entries.
pub fn kinds_of(stage: Stage, leaf: bool) -> u8 {
    match (stage, leaf) {
        (Stage::Stage2, true) => kinds::STAGE2_ONLY | kinds::COMBINED,
        (Stage::Stage2, false) => kinds::STAGE2_ONLY,
        _ => kinds::STAGE1,
    }
}

/// Whether an operation on `target` acts on entries tagged `key` (the
/// regime and VMID; ASIDs and addresses are matched apart).
pub fn target_hits(target: Target, key: Key) -> bool {
    match (target, key) {
        (Target::El2, Key::El2 | Key::El20 { .. }) => true,
        (Target::AllVmids, Key::Vmid(_) | Key::Asid { .. } | Key::Asid1 { .. }) => true,
        (Target::Vmid(v), Key::Vmid(w)) => v == w,
        (Target::Vmid(v), Key::Asid { vmid, .. } | Key::Asid1 { vmid, .. }) => v == vmid,
        _ => false,
    }
}

/// Holders array with `pes` holding every kind in `k`.
pub fn holders(k: u8, pes: u64) -> [u64; 3] {
    let mut h = [0; 3];
    for (i, m) in h.iter_mut().enumerate() {
        if k & (1 << i) != 0 {
            *m = pes;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vmsa::tlbi::TlbiOp;

    const P: u64 = 4096;

    fn leaf_run(start: u64, pages: u64, holders: [u64; 3], visible: Option<u64>) -> Ghost {
        Ghost {
            tree: 0,
            key: Key::Vmid(1),
            stage: Stage::Stage2,
            level: 3,
            start: start * P,
            end: (start + pages) * P,
            cached: Cached::Leaf(Leaf {
                oa: 0x4000_0000 + start * P,
                grants: 3,
                attrs: 0,
                global: true,
            }),
            holders,
            slot: 0x9000_0000 + start * 8,
            value: 0,
            since: 0,
            removed: Origin { seq: 0, line: 0 },
            writer: 0,
            visible,
            s2_clear: None,
            s2_gone: 0,
            reported: false,
            clean_at: 0,
        }
    }

    /// Up to six leaf runs: (first page / 8, pages, PEs of one kind, of
    /// another, when visible).
    fn leaf_runs() -> impl Strategy<Value = Vec<(u64, u64, u64, u64, Option<u64>)>> {
        proptest::collection::vec(
            (
                0..8u64,
                1..12u64,
                0..16u64,
                0..16u64,
                prop_oneof![Just(Some(0u64)), proptest::option::of(0..40u64)],
            ),
            1..6,
        )
    }

    /// [`apply_batch`] the plain way: every invalidation, in order, to
    /// every piece of every ghost, neighbours rejoined after each.
    fn apply_each(ghosts: &[Ghost], batch: &[Applied], now: u64) -> Vec<Ghost> {
        let mut out = Vec::new();
        for g in ghosts {
            let mut pieces = vec![g.clone()];
            for a in batch {
                let mut next = Vec::new();
                for p in pieces.drain(..) {
                    apply_one(p, a, now, &mut next);
                }
                for p in next {
                    match pieces.last_mut() {
                        Some(last) if joinable(last, &p) => {
                            last.end = p.end;
                            last.clean_at = last.clean_at.min(p.clean_at);
                        }
                        _ => pieces.push(p),
                    }
                }
            }
            out.extend(pieces);
        }
        out
    }

    proptest! {
        /// Looking invalidations up by address and trimming ghosts in
        /// place removes what applying each invalidation to every ghost
        /// does.
        #[test]
        fn the_batch_removes_what_each_invalidation_does(
            runs in leaf_runs(),
            // (first page, pages, PEs, kinds, whole-VMID instead)
            tlbis in proptest::collection::vec(
                (0..70u64, 1..4u64, prop_oneof![Just(15u64), 1..16u64],
                    0..3u8, proptest::bool::weighted(0.1)),
                1..4,
            ),
        ) {
            // Stage 1 runs where both `a` and `b` are even: by-VA TLBIs
            // remove all their entries, so runs shrink from either end.
            let ghosts: Vec<Ghost> = runs
                .iter()
                .map(|&(s, n, a, b, v)| {
                    let mut g = leaf_run(s * 8, n, [a, b, a | b], v);
                    if a % 2 == 0 && b % 2 == 0 {
                        g.key = Key::Asid { vmid: 1, asid: 0 };
                        g.stage = Stage::El1Stage1;
                        g.holders = holders(kinds::STAGE1, a | b | 1);
                    }
                    g
                })
                .collect();
            let batch: Vec<Applied> = tlbis
                .iter()
                .enumerate()
                .map(|(i, &(first, pages, pes, kind, whole))| {
                    let op = match (whole, kind) {
                        (true, _) => TlbiOp::Vmalls12e1is,
                        (false, 0) => TlbiOp::Ipas2e1is,
                        (false, 1) => TlbiOp::Vmalle1is,
                        _ => TlbiOp::Vae1is,
                    };
                    let mut scope = Scope::of(op, first, 1);
                    if let Some((s, _)) = scope.range {
                        scope.range = Some((s, s + pages * P));
                    }
                    Applied { scope, pes, issued: 1 + 2 * i as u64 }
                })
                .collect();
            let each = apply_each(&ghosts, &batch, 1000);
            let mut batched = ghosts.clone();
            apply_batch(&mut batched, &batch, 1000, &mut Scratch::default());
            prop_assert_eq!(format!("{batched:?}"), format!("{each:?}"));
        }

        /// Coalescing a batch changes nothing: the ghosts left are the same
        /// as when each invalidation is applied on its own.
        #[test]
        fn coalescing_removes_what_the_invalidations_do(
            runs in leaf_runs(),
            // (first page, pages, PEs, PEs alternating with all, whole-VMID instead)
            tlbis in proptest::collection::vec(
                (0..70u64, 1..12u64, prop_oneof![Just(15u64), 1..16u64],
                    any::<bool>(), proptest::bool::weighted(0.1)),
                1..8,
            ),
        ) {
            let mut ghosts: Vec<Ghost> = runs
                .iter()
                .map(|&(s, n, a, b, v)| leaf_run(s * 8, n, [a, b, a | b], v))
                .collect();
            // Runs of consecutive pages, as an unmap issues them; issued
            // at odd times, so that a ghost made visible at an even one
            // lies between two of them.
            let mut batch = Vec::new();
            for &(first, pages, pes, mixed, whole) in &tlbis {
                if whole {
                    batch.push((TlbiOp::Vmalls12e1is, 0, pes));
                } else {
                    batch.extend((first..first + pages).map(|p| {
                        (TlbiOp::Ipas2e1is, p, if mixed && p % 2 == 1 { 15 } else { pes })
                    }));
                }
            }
            let batch: Vec<Applied> = batch
                .into_iter()
                .enumerate()
                .map(|(i, (op, operand, pes))| Applied {
                    scope: Scope::of(op, operand, 1),
                    pes,
                    issued: 1 + 2 * i as u64,
                })
                .collect();
            let mut each = ghosts.clone();
            let mut scratch = Scratch::default();
            apply_batch(&mut each, &batch, 1000, &mut scratch);
            invalidate_batch(&mut ghosts, &batch, 1000, &mut scratch);
            prop_assert_eq!(format!("{ghosts:?}"), format!("{each:?}"));
        }
    }
}
