//! `vmsa replay-ops`: a hypervisor's operation log ([`vmsa::oplog`], as
//! vmsa-hyp records it with `oplog=PATH`) replayed through the model under
//! every policy and cost profile, printed as `vmsa compare` prints its
//! workloads (the same table, the same `--json` fields), the log's name
//! standing for the workload.
//!
//! The stream of operations is the live run's; what differs between
//! policies is only the invalidation at each flush point and what the
//! stale entries it leaves do to the guest's faults (see [`sim`]). A
//! baseline's choices do not depend on the profile, so it is replayed
//! once; vmsa's planner looks at the prices, so it is replayed once per
//! profile.
//!
//! Table pages come from the replay's own arena (their addresses are not
//! the live ones); the IPA -> PA outputs are the log's.
//!
//! No access is sampled: the model is asked at each logged fault and at
//! its retry. A release build replays a million records under the nine
//! stage 2 policies (and vmsa's second profile) in about 20 s on two
//! cores; policies that are not faithful are replayed with a bounded
//! number of stale entries per PE ([`sim::UNFAITHFUL_CAPACITY`]), which
//! keeps them from slowing down quadratically.
//!
//! By default the policies whose source manages stage 2 tables are
//! replayed (`vmsa_baselines::Baseline::stage2`) and the oracle; `--policy`
//! may name any of `vmsa compare`'s.

pub mod sim;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use vmsa::oplog::{DecodeError, Decoder, FaultKind, Op};
use vmsa_model::cost::PROFILES;

use crate::compare::{self, policies, Names, Row, Selection};
use sim::Outcome;

/// Exit status: every faithful policy replayed without violations.
pub const CLEAN: i32 = 0;
/// Exit status: a faithful policy has violations (any but `none` and, on
/// stage 2, `aarch64-paging`: `vmsa_baselines::Baseline::faithful`).
pub const VIOLATIONS: i32 = 1;
/// Exit status: unreadable input or an unknown name.
pub const UNREADABLE: i32 = 2;

/// Options of `vmsa replay-ops`.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// The log (`-` for standard input).
    pub file: PathBuf,
    /// Only these policies (all when empty).
    pub policies: Vec<String>,
    /// Only these cost profiles (all when empty).
    pub profiles: Vec<String>,
}

/// What a log holds, counted once (the same for every policy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes.
    pub bytes: usize,
    /// Records (with `End`).
    pub records: u64,
    /// `Map` records.
    pub map: u64,
    /// `Unmap` records.
    pub unmap: u64,
    /// `Protect` records.
    pub protect: u64,
    /// `Split` records.
    pub split: u64,
    /// `Collapse` records.
    pub collapse: u64,
    /// `Flush` records.
    pub flush: u64,
    /// `Activate` records.
    pub activate: u64,
    /// `VcpuLoad` records.
    pub vcpu_load: u64,
    /// Faults by kind: translation, permission, access flag.
    pub faults: [u64; 3],
    /// Faults on writes.
    pub write_faults: u64,
    /// Faults on the guest's stage 1 walk.
    pub s1ptw_faults: u64,
    /// `Spurious` records: what the recording policy's fault path found.
    pub spurious: u64,
    /// `ReleaseFrame` records.
    pub release_frames: u64,
    /// The log ends with `End`.
    pub complete: bool,
    /// PEs named (highest + 1).
    pub pes: usize,
    /// PEs that ran a vCPU (`Activate`, `VcpuLoad`), in order.
    pub vcpu_pes: Vec<u8>,
}

impl Counts {
    /// Every fault.
    pub fn all_faults(&self) -> u64 {
        self.faults.iter().sum()
    }
}

/// Reads the whole log in `bytes` and counts its records.
///
/// # Errors
/// The first record that does not decode (its [`DecodeError`] names the
/// byte offset).
pub fn count(bytes: &[u8]) -> Result<Counts, DecodeError> {
    let mut c = Counts {
        bytes: bytes.len(),
        ..Counts::default()
    };
    let mut pes = 0u8;
    for op in Decoder::new(bytes)? {
        let op = op?;
        c.records += 1;
        let pe = match op {
            Op::Map { pe, .. } => {
                c.map += 1;
                pe
            }
            Op::Unmap { pe, .. } => {
                c.unmap += 1;
                pe
            }
            Op::Protect { pe, .. } => {
                c.protect += 1;
                pe
            }
            Op::Split { pe, .. } => {
                c.split += 1;
                pe
            }
            Op::Collapse { pe, .. } => {
                c.collapse += 1;
                pe
            }
            Op::Flush { pe } => {
                c.flush += 1;
                pe
            }
            Op::Activate { pe } | Op::VcpuLoad { pe } => {
                if matches!(op, Op::Activate { .. }) {
                    c.activate += 1;
                } else {
                    c.vcpu_load += 1;
                }
                if !c.vcpu_pes.contains(&pe) {
                    c.vcpu_pes.push(pe);
                }
                pe
            }
            Op::Fault {
                pe,
                kind,
                write,
                s1ptw,
                ..
            } => {
                c.faults[match kind {
                    FaultKind::Translation => 0,
                    FaultKind::Permission => 1,
                    FaultKind::AccessFlag => 2,
                }] += 1;
                c.write_faults += u64::from(write);
                c.s1ptw_faults += u64::from(s1ptw);
                pe
            }
            Op::Spurious { pe, .. } => {
                c.spurious += 1;
                pe
            }
            Op::ReleaseFrame { pe, .. } => {
                c.release_frames += 1;
                pe
            }
            Op::End => {
                c.complete = true;
                0
            }
        };
        pes = pes.max(pe);
    }
    c.pes = usize::from(pes) + 1;
    Ok(c)
}

/// The name a log's rows carry: the file name without `.ops`.
pub fn workload_name(path: &Path) -> String {
    if path == Path::new("-") {
        return "stdin".into();
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    name.strip_suffix(".ops")
        .map_or(name.clone(), str::to_string)
}

use compare::profile;

/// The row of one replay.
pub fn row(workload: &str, policy: &str, profile_name: &str, o: &Outcome) -> Row {
    Row::priced(
        workload,
        policy,
        profile(profile_name),
        &o.costs,
        o.violations(),
    )
}

/// The rows of `bytes` (a log that [`count`] read) replayed under every
/// selected policy and profile (profiles outermost, then policies), and
/// each policy's outcome (under the first profile that priced it).
pub fn replay_all(
    name: &str,
    bytes: &[u8],
    counts: &Counts,
    selection: &Selection,
) -> (Vec<Row>, Vec<(&'static str, Outcome)>) {
    let key = |policy: &'static str, profile: &'static str| {
        if policy == "vmsa" {
            profile
        } else {
            ""
        }
    };
    let mut runs: Vec<(&'static str, &'static str)> = Vec::new();
    for &profile in &selection.profiles {
        for &policy in &selection.policies {
            let run = (policy, key(policy, profile));
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    // The policies that are not faithful take longest (their stale entries
    // pile up): start them first, so that the threads finish together.
    runs.sort_by_key(|&(policy, _)| policies::policy(policy).faithful);
    let results: Mutex<HashMap<(&str, &str), Outcome>> = Mutex::new(HashMap::new());
    let next = AtomicUsize::new(0);
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
        .min(runs.len().max(1));
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(policy, priced)) = runs.get(i) else {
                    break;
                };
                let p = if priced.is_empty() {
                    PROFILES[0]
                } else {
                    profile(priced)
                };
                let o = sim::replay(bytes, policy, p, counts.pes, counts.complete);
                if std::env::var_os("VMSA_REPLAY_DEBUG").is_some() {
                    for v in &o.first_violations {
                        eprintln!("{name}/{policy}: {v}");
                    }
                }
                if let Ok(mut r) = results.lock() {
                    r.insert((policy, priced), o);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let mut rows = Vec::new();
    let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();
    for &profile in &selection.profiles {
        for &policy in &selection.policies {
            if let Some(o) = results.get(&(policy, key(policy, profile))) {
                rows.push(row(name, policy, profile, o));
                if !outcomes.iter().any(|(p, _)| *p == policy) {
                    outcomes.push((policy, o.clone()));
                }
            }
        }
    }
    (rows, outcomes)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The log's counts and what the replays saw, as text.
pub fn describe(name: &str, c: &Counts, outcomes: &[(&str, Outcome)]) -> String {
    let mut s = String::new();
    let pes: Vec<String> = c.vcpu_pes.iter().map(u8::to_string).collect();
    let _ = writeln!(
        s,
        "{name}: {} records, {} bytes{}; {} (vCPUs on {})",
        c.records,
        c.bytes,
        if c.complete {
            ""
        } else {
            " (no End record: truncated)"
        },
        plural(c.pes as u64, "PE", "PEs"),
        if pes.is_empty() {
            "none".to_string()
        } else {
            pes.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "  operations: {} map, {} unmap, {} protect, {} split, {} collapse, {} flush, {} activate, \
         {} vcpu_load, {} release_frame",
        c.map,
        c.unmap,
        c.protect,
        c.split,
        c.collapse,
        c.flush,
        c.activate,
        c.vcpu_load,
        c.release_frames
    );
    let _ = writeln!(
        s,
        "  faults: {} ({} translation, {} permission, {} access flag; {} on writes, {} on stage 1 \
         walks); live: {} spurious (the recording policy's, not priced)",
        c.all_faults(),
        c.faults[0],
        c.faults[1],
        c.faults[2],
        c.write_faults,
        c.s1ptw_faults,
        c.spurious
    );
    for (policy, o) in outcomes {
        let mut notes = Vec::new();
        if o.stale_accesses > 0 {
            notes.push(format!(
                "{} let through by stale translations (counted as violations)",
                plural(o.stale_accesses, "access", "accesses")
            ));
        }
        if o.mapped_releases > 0 {
            notes.push(format!(
                "{} released while the table still mapped {} (the log's own bug)",
                plural(o.mapped_releases, "frame", "frames"),
                if o.mapped_releases == 1 { "it" } else { "them" }
            ));
        }
        if o.op_errors > 0 {
            notes.push(format!(
                "{} refused by the table",
                plural(o.op_errors, "operation", "operations")
            ));
        }
        if !notes.is_empty() {
            let _ = writeln!(s, "  note: {policy}: {}", notes.join("; "));
        }
    }
    s
}

/// Reads `path` (`-`: standard input) whole.
fn read_input(path: &Path) -> io::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(path)
    }
}

/// Runs `vmsa replay-ops`: reads the log, replays it under every selected
/// policy and profile, and prints the log's counts and the table (with
/// `json`, the JSON array, the counts going to standard error).
///
/// Returns the exit status: [`CLEAN`], [`VIOLATIONS`] when a faithful
/// policy (any but `none`) has violations, [`UNREADABLE`] for an unknown
/// name or a log that cannot be read or decoded (the message names the
/// byte offset).
pub fn run(args: &Args, json: bool, out: &mut impl Write) -> io::Result<i32> {
    let cargs = compare::Args {
        workloads: Vec::new(),
        policies: args.policies.clone(),
        profiles: args.profiles.clone(),
        pes: 4,
    };
    let mut names = Names::all();
    if args.policies.is_empty() {
        // By default the policies whose source manages stage 2 tables (and
        // the oracle); any of `vmsa compare`'s may be named.
        names.policies.retain(|&p| policies::policy(p).stage2);
    }
    let selection = match Selection::new(&cargs, &names) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vmsa replay-ops: {e}");
            return Ok(UNREADABLE);
        }
    };
    let path = &args.file;
    let bytes = match read_input(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("vmsa replay-ops: cannot read {}: {e}", path.display());
            return Ok(UNREADABLE);
        }
    };
    let counts = match count(&bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmsa replay-ops: {}: {e}", path.display());
            return Ok(UNREADABLE);
        }
    };
    let name = workload_name(path);
    let start = Instant::now();
    let (rows, outcomes) = replay_all(&name, &bytes, &counts, &selection);
    let mut text = describe(&name, &counts, &outcomes);
    let _ = writeln!(
        text,
        "  replayed under {} in {:.2} s",
        plural(outcomes.len() as u64, "policy", "policies"),
        start.elapsed().as_secs_f64()
    );
    let pes = counts.pes.max(2);
    if json {
        eprint!("{text}");
        compare::write_json(&rows, out)?;
    } else {
        writeln!(out, "{text}")?;
        compare::write_table(&rows, pes, out)?;
    }
    out.flush()?;
    let broken = rows
        .iter()
        .any(|r| policies::policy(&r.policy).faithful && r.violations > 0);
    Ok(if broken { VIOLATIONS } else { CLEAN })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmsa::oplog::Encoder;
    use vmsa::{Ipa, Pa, Stage2Attrs};

    #[test]
    fn counts_every_kind_of_record() {
        let mut bytes = Vec::new();
        let mut log = Encoder::new(&mut bytes);
        let page = Ipa(0x4000_0000)..Ipa(0x4000_1000);
        for op in [
            Op::Map {
                pe: 0,
                range: page.clone(),
                pa: Pa(0x4000_0000),
                attrs: Stage2Attrs::RAM,
                blocks: false,
            },
            Op::Activate { pe: 0 },
            Op::VcpuLoad { pe: 0 },
            Op::VcpuLoad { pe: 1 },
            Op::Fault {
                pe: 1,
                ipa: page.start,
                kind: FaultKind::Permission,
                write: true,
                s1ptw: true,
            },
            Op::Spurious {
                pe: 1,
                ipa: page.start,
            },
            Op::Unmap {
                pe: 2,
                range: page.clone(),
            },
            Op::Flush { pe: 2 },
            Op::ReleaseFrame {
                pe: 2,
                pa: Pa(0x4000_0000),
            },
            Op::End,
        ] {
            log.push(&op);
        }
        let c = count(&bytes).unwrap();
        assert_eq!(c.records, 10);
        assert_eq!((c.map, c.unmap, c.flush), (1, 1, 1));
        assert_eq!((c.activate, c.vcpu_load), (1, 2));
        assert_eq!(c.faults, [0, 1, 0]);
        assert_eq!((c.write_faults, c.s1ptw_faults, c.spurious), (1, 1, 1));
        assert_eq!(c.release_frames, 1);
        assert!(c.complete);
        // PE 2 (a worker) issues but never runs the guest.
        assert_eq!(c.pes, 3);
        assert_eq!(c.vcpu_pes, [0, 1]);
        assert_eq!(
            count(&bytes[..bytes.len() - 1]).map(|c| c.complete),
            Ok(false)
        );
        assert_eq!(count(b"VMSA"), Err(DecodeError::NotALog));
    }

    #[test]
    fn names_drop_the_extension() {
        assert_eq!(workload_name(Path::new("a/linux-2vcpu.ops")), "linux-2vcpu");
        assert_eq!(workload_name(Path::new("run.log")), "run.log");
        assert_eq!(workload_name(Path::new("-")), "stdin");
    }
}
