//! One replay of an operation log under one policy on the model.
//!
//! The table is driven through [`Env`] exactly as the log says: the same
//! operations in the same order, each issued by the logged PE, with the
//! table built inactive and made live at `Activate`. The policy decides
//! the invalidation at each flush point (policies that do not gather a
//! batch flush after every operation, as in `vmsa compare`), and the
//! guest's stage 2 faults become accesses by the faulting vCPU's PE, so
//! that the model says what the stale entries this policy left behind do
//! to them:
//!
//! - at a `Fault` record the PE accesses the page (a write if the fault
//!   was, a read otherwise: the log does not tell instruction fetches);
//!   under this policy the access may go through (no fault: a spurious
//!   fault the recording policy took that this one avoids), fault for
//!   real (the handler's operations follow), fault spuriously on a stale
//!   stricter entry (charged by the model, which applies the handler's
//!   local invalidation) or be let through by a stale entry granting more
//!   than the tables (counted as a violation);
//! - once the handler is over (at the next record from another PE, the
//!   next fault, or a vCPU load or the end) the guest retries the access,
//!   judged the same way, which is where a relaxation left uninvalidated
//!   costs its spurious fault.
//!
//! `Spurious` records say what the recording policy's fault path found:
//! they are counted, not priced. `ReleaseFrame` becomes the model's
//! data-page release, so a frame given back while the table or a stale
//! entry may still translate to it is a use-after-free (see
//! `Sim::release` for how the table part is checked cheaply).
//!
//! Nothing is sampled: every logged fault is an access and a retry. A
//! policy that is not faithful keeps at most [`UNFAITHFUL_CAPACITY`]
//! stale runs per PE.
//!
//! The log does not say which accesses succeeded, only which faulted, so
//! a stale stricter entry costs a spurious fault only where the guest
//! faulted (or retried) under the recording policy; accesses the log does
//! not show are not replayed.

use std::collections::HashMap;

use vmsa::oplog::{Decoder, Op};
use vmsa::MapOptions;
use vmsa_model::cost::{Costs, Profile};
use vmsa_model::desc::grant;
use vmsa_model::Access;

use crate::compare::workloads::Env;
use crate::compare::{driver, policies};

/// Bytes of one data frame.
const FRAME: u64 = 4096;

/// What one replay produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The model's counts.
    pub costs: Costs,
    /// The model's violations.
    pub model_violations: u64,
    /// Guest accesses a stale translation let through (more than the
    /// tables grant, or to another frame).
    pub stale_accesses: u64,
    /// Operations the table refused (the live table would have too).
    pub op_errors: u64,
    /// Frames released while the table still mapped them (a bug of the
    /// log's hypervisor, the same under every policy).
    pub mapped_releases: u64,
    /// The first few violations, for `VMSA_REPLAY_DEBUG`.
    pub first_violations: Vec<String>,
}

impl Outcome {
    /// What the violations column shows: the model's findings plus the
    /// accesses stale translations let through.
    pub fn violations(&self) -> u64 {
        self.model_violations + self.stale_accesses
    }
}

/// A fault whose retry is due once its handler is over.
#[derive(Clone, Copy)]
struct Retry {
    pe: usize,
    ipa: u64,
    need: u8,
}

struct Sim {
    env: Env,
    out: Outcome,
    retry: Option<Retry>,
    /// The policy gathers a batch into one flush.
    gather: bool,
    /// Frame -> the IPAs small maps mapped to it since it was last
    /// released.
    origins: HashMap<u64, Vec<u64>>,
    /// Large maps (the initial identity map): frames, first IPA.
    large: Vec<(u64, u64, u64)>,
}

/// Stale runs a PE may hold under a policy that is not faithful (`none`,
/// and `aarch64-paging` on stage 2): such a policy leaves stale entries it
/// never invalidates, every later step of the model looks at each of
/// them, and a replay of a long log would slow down quadratically. They
/// are evicted oldest first beyond this many per PE, as a real TLB's
/// capacity would; each is judged at the flush point after its change,
/// so violations are still found as they happen (fewer repeats of them
/// later, and the spurious-fault count is a lower bound).
pub const UNFAITHFUL_CAPACITY: usize = 1024;

/// Maps of at most this many pages note each frame; larger ones (the
/// initial map) are kept as ranges.
const SMALL_MAP: u64 = 512;

impl Sim {
    /// The vCPU on `pe` accesses `ipa`; the model charges a spurious
    /// fault (and applies its handler's local invalidation) itself.
    fn access(&mut self, pe: usize, ipa: u64, need: u8) {
        if let Access::Stale { .. } = self.env.access_on(pe, ipa, need) {
            self.out.stale_accesses += 1;
        }
    }

    fn op<E>(&mut self, r: Result<(), E>) {
        if r.is_err() {
            self.out.op_errors += 1;
        }
        // A policy that does not gather flushes each operation; the
        // hypervisor claims completion only at its flush points.
        if !self.gather {
            self.env.invalidate();
        }
    }

    /// Notes the frames a `Map` of `pages` pages at `ipa` to `pa` reaches.
    fn mapped(&mut self, ipa: u64, pa: u64, pages: u64) {
        if pages <= SMALL_MAP {
            for i in 0..pages {
                self.origins
                    .entry(pa + i * FRAME)
                    .or_default()
                    .push(ipa + i * FRAME);
            }
        } else {
            self.large.push((pa, pa + pages * FRAME, ipa));
        }
    }

    /// `pe` gives frame `pa` back: the model's data-page release, which
    /// reports a use-after-free if the tables still map the frame or a PE
    /// may still hold a stale translation to it. Its check of the tables
    /// walks every descriptor, so the replay does that part itself: a
    /// frame is mapped only at IPAs a `Map` mapped to it (protections,
    /// splits and collapses keep outputs), so the table is asked about
    /// those since the frame was last released (a mapping older than that
    /// was found, and reported at the frame, then). Only when one still
    /// maps it does the model walk; otherwise it checks the stale entries
    /// alone.
    fn release(&mut self, pe: usize, pa: u64) {
        let mut ipas = self.origins.remove(&pa).unwrap_or_default();
        ipas.extend(
            self.large
                .iter()
                .filter(|&&(s, e, _)| (s..e).contains(&pa))
                .map(|&(s, _, ipa)| ipa + (pa - s)),
        );
        if ipas.iter().any(|&ipa| self.env.maps_to(ipa, pa)) {
            self.out.mapped_releases += 1;
            self.env.release_data(pe, pa, FRAME);
        } else {
            self.env.release_unmapped_data(pe, pa, FRAME);
        }
    }

    /// Whether `op` is still part of the handling of a fault taken on `pe`
    /// (the hypervisor handles it under its lock, so the handler's records
    /// are contiguous and issued by the faulting PE).
    fn continues(op: &Op, pe: usize) -> bool {
        let by = match *op {
            Op::Map { pe, .. }
            | Op::Unmap { pe, .. }
            | Op::Protect { pe, .. }
            | Op::Split { pe, .. }
            | Op::Collapse { pe, .. }
            | Op::Flush { pe }
            | Op::Spurious { pe, .. }
            | Op::ReleaseFrame { pe, .. } => pe,
            Op::Fault { .. } | Op::Activate { .. } | Op::VcpuLoad { .. } | Op::End => return false,
        };
        usize::from(by) == pe
    }

    fn do_retry(&mut self) {
        if let Some(r) = self.retry.take() {
            self.access(r.pe, r.ipa, r.need);
        }
    }

    fn step(&mut self, op: &Op) {
        if self.retry.is_some_and(|r| !Self::continues(op, r.pe)) {
            self.do_retry();
        }
        match op {
            Op::Map {
                pe,
                range,
                pa,
                attrs,
                blocks,
            } => {
                self.env.set_issuer(usize::from(*pe));
                let opts = MapOptions {
                    blocks: *blocks,
                    ..MapOptions::default()
                };
                let r = self
                    .env
                    .map_stage2(range.start.0..range.end.0, pa.0, *attrs, opts);
                if r.is_ok() {
                    let pages = (range.end.0 - range.start.0) / FRAME;
                    self.mapped(range.start.0, pa.0, pages);
                }
                self.op(r);
            }
            Op::Unmap { pe, range } => {
                self.env.set_issuer(usize::from(*pe));
                let r = self.env.try_unmap(range.start.0, range.end.0);
                self.op(r);
            }
            Op::Protect { pe, range, attrs } => {
                self.env.set_issuer(usize::from(*pe));
                let r = self.env.protect_stage2(range.start.0..range.end.0, *attrs);
                self.op(r);
            }
            Op::Split { pe, addr } => {
                self.env.set_issuer(usize::from(*pe));
                let r = self.env.split(addr.0);
                self.op(r);
            }
            Op::Collapse { pe, range } => {
                self.env.set_issuer(usize::from(*pe));
                let r = self.env.collapse(range.start.0, range.end.0).map(|_| ());
                self.op(r);
            }
            Op::Flush { pe } => {
                self.env.set_issuer(usize::from(*pe));
                self.env.flush();
            }
            Op::Activate { pe } => self.env.activate(usize::from(*pe)),
            Op::VcpuLoad { pe } => self.env.vcpu_load(usize::from(*pe)),
            Op::Fault { pe, ipa, write, .. } => {
                let pe = usize::from(*pe);
                let need = if *write { grant::WRITE } else { grant::READ };
                self.access(pe, ipa.0, need);
                self.retry = Some(Retry {
                    pe,
                    ipa: ipa.0,
                    need,
                });
            }
            Op::Spurious { .. } => {}
            Op::ReleaseFrame { pe, pa } => self.release(usize::from(*pe), pa.0),
            Op::End => {}
        }
    }
}

/// Replays the log in `bytes` (already checked to decode) under `policy`,
/// priced by `profile` where the policy looks at prices (vmsa's planner),
/// on a model of `pes` PEs. `complete`: the log is complete (ends with
/// `End`, at a flush), so its end is a completion point.
pub fn replay(
    bytes: &[u8],
    policy: &str,
    profile: &Profile,
    pes: usize,
    complete: bool,
) -> Outcome {
    let pes = pes.max(2);
    let inv = policies::make(policy, driver::capabilities(), profile, pes);
    let capacity = (!policies::policy(policy).faithful).then_some(UNFAITHFUL_CAPACITY);
    let env = Env::stage2_inactive(
        pes,
        inv,
        policy == "oracle",
        policies::gathers(policy),
        capacity,
    );
    let mut sim = Sim {
        env,
        out: Outcome::default(),
        retry: None,
        gather: policies::gathers(policy),
        origins: HashMap::new(),
        large: Vec::new(),
    };
    let Ok(records) = Decoder::new(bytes) else {
        return sim.out;
    };
    let mut last_pe = 0;
    for op in records {
        let Ok(op) = op else { break };
        if let Op::Flush { pe } = op {
            last_pe = usize::from(pe);
        }
        sim.step(&op);
    }
    sim.do_retry();
    if complete {
        sim.env.complete(last_pe);
    }
    let v = sim.env.m.violations();
    sim.out.model_violations = v.len() as u64;
    sim.out.first_violations = v.iter().take(3).map(|v| v.to_string()).collect();
    sim.out.costs = sim.env.m.costs().clone();
    sim.out
}
