//! `vmsa compare`: every workload under every policy on the model.

pub mod driver;
pub mod policies;
mod report;
pub mod workloads;

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use driver::Job;
pub(crate) use report::{svg_chart, write_json, write_table};

/// Options of `vmsa compare`.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// Only these workloads (all when empty).
    pub workloads: Vec<String>,
    /// Only these policies (all when empty).
    pub policies: Vec<String>,
    /// Only these cost profiles (all when empty).
    pub profiles: Vec<String>,
    /// PEs in the model.
    pub pes: usize,
}

/// One result line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// Policy name.
    pub policy: String,
    /// Cost profile name.
    pub profile: String,
    /// TLBI instructions.
    pub tlbi_ops: u64,
    /// Broadcast (Inner Shareable) TLBIs.
    pub broadcast_ops: u64,
    /// DSBs.
    pub dsb: u64,
    /// Correct entries removed (to be refilled).
    pub collateral: u64,
    /// Spurious faults taken.
    pub spurious_faults: u64,
    /// Estimated cycles under the profile.
    pub cycles: u64,
    /// Violations the checker found.
    pub violations: u64,
}

impl Row {
    /// The row of one run: `costs` priced under `profile`, with the
    /// checker's `violations` (compare, replay and replay-ops all report
    /// their runs this way).
    pub fn priced(
        workload: &str,
        policy: &str,
        profile: &'static vmsa_model::cost::Profile,
        costs: &vmsa_model::cost::Costs,
        violations: u64,
    ) -> Row {
        Row {
            workload: workload.to_string(),
            policy: policy.to_string(),
            profile: profile.name.to_string(),
            tlbi_ops: costs.tlbis(),
            broadcast_ops: costs.broadcast_tlbis(),
            dsb: costs.dsb + costs.dsb_light,
            collateral: costs.collateral,
            spurious_faults: costs.spurious_faults,
            cycles: costs.estimate(profile).cycles,
            violations,
        }
    }
}

/// The cost profile called `name` (the native one for an unknown name:
/// callers validated names already).
pub fn profile(name: &str) -> &'static vmsa_model::cost::Profile {
    vmsa_model::cost::profile(name).unwrap_or(vmsa_model::cost::PROFILES[0])
}

/// How many PEs `--pes` accepts at most (the model's limit).
pub const MAX_PES: usize = 64;

/// The names `vmsa compare` knows: workloads, policies (`vmsa` first) and
/// cost profiles, each in display order.
#[derive(Clone, Debug)]
pub struct Names {
    /// Workload names.
    pub workloads: Vec<&'static str>,
    /// Policy names.
    pub policies: Vec<&'static str>,
    /// Cost profile names.
    pub profiles: Vec<&'static str>,
}

impl Names {
    /// The names the driver and the cost model provide.
    pub fn all() -> Self {
        Names {
            workloads: driver::workloads(),
            policies: driver::policies(),
            profiles: vmsa_model::cost::PROFILES.iter().map(|p| p.name).collect(),
        }
    }
}

/// Prints the names `vmsa compare --workload`, `--policy` and `--profile`
/// accept: one line each, `workloads: a b c` and so on.
pub fn list(out: &mut impl Write) -> io::Result<()> {
    let names = Names::all();
    for (what, list) in [
        ("workloads", &names.workloads),
        ("policies", &names.policies),
        ("profiles", &names.profiles),
    ] {
        write!(out, "{what}:")?;
        for name in list.iter() {
            write!(out, " {name}")?;
        }
        writeln!(out)?;
    }
    out.flush()
}

/// A name given to `--workload`, `--policy` or `--profile` that is not one
/// of the valid ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// `workload`, `policy` or `profile`.
    pub kind: &'static str,
    /// The name as given.
    pub name: String,
    /// The valid names.
    pub valid: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} `{}`; valid {}: ",
            self.kind,
            self.name,
            plural(self.kind)
        )?;
        if self.valid.is_empty() {
            write!(f, "(none)")
        } else {
            write!(f, "{}", self.valid.join(", "))
        }
    }
}

fn plural(kind: &str) -> String {
    match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    }
}

/// The valid names `wanted` selects, in the order of `valid`, each once;
/// all of them when `wanted` is empty. Entries may be comma-separated
/// lists; names match case-insensitively; empty entries are ignored.
fn select(
    kind: &'static str,
    wanted: &[String],
    valid: &[&'static str],
) -> Result<Vec<&'static str>, UnknownName> {
    let mut picked = vec![false; valid.len()];
    let mut any = false;
    for name in wanted.iter().flat_map(|w| w.split(',')).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        any = true;
        match valid.iter().position(|v| v.eq_ignore_ascii_case(name)) {
            Some(i) => picked[i] = true,
            None => {
                return Err(UnknownName {
                    kind,
                    name: name.to_string(),
                    valid: valid.to_vec(),
                })
            }
        }
    }
    Ok(valid
        .iter()
        .zip(&picked)
        .filter(|&(_, &p)| p || !any)
        .map(|(&v, _)| v)
        .collect())
}

/// The names `args` selects, each list in display order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Selected workloads.
    pub workloads: Vec<&'static str>,
    /// Selected policies.
    pub policies: Vec<&'static str>,
    /// Selected cost profiles.
    pub profiles: Vec<&'static str>,
}

impl Selection {
    /// The names of `names` that `args` selects: the ones named by
    /// `--workload`, `--policy` and `--profile`, or all of a kind that is
    /// not named.
    pub fn new(args: &Args, names: &Names) -> Result<Self, UnknownName> {
        Ok(Selection {
            workloads: select("workload", &args.workloads, &names.workloads)?,
            policies: select("policy", &args.policies, &names.policies)?,
            profiles: select("profile", &args.profiles, &names.profiles)?,
        })
    }

    /// Every combination, workloads outermost, then profiles, then
    /// policies, so that the rows of one workload and profile are adjacent
    /// with `vmsa` first.
    pub fn jobs(&self) -> Vec<Job> {
        let mut jobs =
            Vec::with_capacity(self.workloads.len() * self.policies.len() * self.profiles.len());
        for workload in &self.workloads {
            for profile in &self.profiles {
                for policy in &self.policies {
                    jobs.push(Job {
                        workload: workload.to_string(),
                        policy: policy.to_string(),
                        profile: profile.to_string(),
                    });
                }
            }
        }
        jobs
    }
}

/// Runs `vmsa compare`: every selected workload under every selected policy
/// and profile on the model, then prints a table (or, with `json`, a JSON
/// array) to `out`, and with `svg` also writes a chart there.
///
/// Returns the exit status: 0 when the comparison ran (violations of the
/// baselines are part of the report, not a failure), 2 for an unknown name
/// or an out-of-range PE count (with a message on standard error).
pub fn run(args: &Args, json: bool, svg: Option<&Path>, out: &mut impl Write) -> io::Result<i32> {
    if !(1..=MAX_PES).contains(&args.pes) {
        eprintln!(
            "vmsa compare: --pes must be between 1 and {MAX_PES}, not {}",
            args.pes
        );
        return Ok(2);
    }
    let selection = match Selection::new(args, &Names::all()) {
        Ok(selection) => selection,
        Err(e) => {
            eprintln!("vmsa compare: {e}");
            return Ok(2);
        }
    };
    // Checked before the work, not after it.
    let chart_file = match svg.map(Output::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vmsa compare: {e}");
            return Ok(2);
        }
    };
    let jobs = selection.jobs();
    let rows = run_jobs(&jobs, args, driver::run_job, io::stderr().is_terminal());
    if json {
        report::write_json(&rows, out)?;
    } else {
        report::write_table(&rows, args.pes, out)?;
    }
    out.flush()?;
    if let Some(file) = chart_file {
        // The chart shows the first selected profile.
        let profile = selection.profiles.first().copied().unwrap_or_default();
        let chart = report::svg_chart(&rows, profile, args.pes)?;
        if let Err(e) = file.write(chart.as_bytes()) {
            eprintln!("vmsa compare: {e}");
            return Ok(2);
        }
    }
    Ok(0)
}

/// An output file given on the command line, created (so checked
/// writable) before any work is done.
pub(crate) struct Output {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl Output {
    /// Creates (or truncates) `path`.
    ///
    /// # Errors
    /// A message naming the file when it cannot be created.
    pub(crate) fn create(path: &Path) -> Result<Output, String> {
        std::fs::File::create(path)
            .map(|file| Output {
                path: path.to_path_buf(),
                file,
            })
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Writes `bytes` to it, and says so on standard error.
    ///
    /// # Errors
    /// A message naming the file when writing fails.
    pub(crate) fn write(mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        eprintln!("wrote {}", self.path.display());
        Ok(())
    }
}

/// How long a run may take before the progress bar appears.
const QUIET_PERIOD: Duration = Duration::from_secs(1);

/// Runs `jobs` with `run_job` on up to two threads and returns their rows
/// in job order. When `may_show`, a progress bar appears on standard error
/// once the run has taken [`QUIET_PERIOD`].
fn run_jobs(
    jobs: &[Job],
    args: &Args,
    run_job: impl Fn(&Job, &Args) -> Row + Sync,
    may_show: bool,
) -> Vec<Row> {
    let bar = ProgressBar::with_draw_target(Some(jobs.len() as u64), ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} jobs {elapsed} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("compare");
    let start = Instant::now();
    let mut shown = false;

    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    let mut rows: Vec<Option<Row>> = vec![None; jobs.len()];
    thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads {
            let (tx, next, run_job) = (tx.clone(), &next, &run_job);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                if tx.send((i, run_job(job, args))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        while done < jobs.len() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((i, row)) => {
                    bar.set_message(format!("{} {} {}", row.workload, row.policy, row.profile));
                    rows[i] = Some(row);
                    done += 1;
                    bar.inc(1);
                }
                Err(RecvTimeoutError::Timeout) => {}
                // A worker panicked; the scope passes the panic on.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if may_show && !shown && start.elapsed() >= QUIET_PERIOD {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(200));
                shown = true;
            }
        }
        bar.finish_and_clear();
    });
    rows.into_iter()
        .map(|r| r.expect("every job produced a row"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            workloads: vec!["map", "remap", "unmap"],
            policies: vec!["vmsa", "linux", "lazy"],
            profiles: vec!["native", "nested"],
        }
    }

    fn args(workloads: &[&str], policies: &[&str], profiles: &[&str]) -> Args {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Args {
            workloads: strings(workloads),
            policies: strings(policies),
            profiles: strings(profiles),
            pes: 4,
        }
    }

    #[test]
    fn everything_by_default() {
        let s = Selection::new(&Args::default(), &names()).unwrap();
        assert_eq!(s.workloads, names().workloads);
        assert_eq!(s.policies, names().policies);
        assert_eq!(s.profiles, names().profiles);
        let jobs = s.jobs();
        assert_eq!(jobs.len(), 3 * 3 * 2);
        let first: Vec<_> = jobs[..4]
            .iter()
            .map(|j| (j.workload.as_str(), j.profile.as_str(), j.policy.as_str()))
            .collect();
        assert_eq!(
            first,
            [
                ("map", "native", "vmsa"),
                ("map", "native", "linux"),
                ("map", "native", "lazy"),
                ("map", "nested", "vmsa"),
            ]
        );
    }

    #[test]
    fn filters_keep_display_order_and_accept_lists() {
        let a = args(&["unmap", "MAP,unmap"], &["lazy", "", "vmsa"], &["nested"]);
        let s = Selection::new(&a, &names()).unwrap();
        assert_eq!(s.workloads, ["map", "unmap"]);
        assert_eq!(s.policies, ["vmsa", "lazy"]);
        assert_eq!(s.profiles, ["nested"]);
        assert_eq!(s.jobs().len(), 4);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = Selection::new(&args(&["map"], &["nope"], &[]), &names()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown policy `nope`; valid policies: vmsa, linux, lazy"
        );
        let e = Selection::new(&args(&["x"], &[], &[]), &names()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown workload `x`; valid workloads: map, remap, unmap"
        );
        let none = Names {
            workloads: vec![],
            ..names()
        };
        let e = Selection::new(&args(&["x"], &[], &[]), &none).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown workload `x`; valid workloads: (none)"
        );
    }

    #[test]
    fn rows_come_back_in_job_order() {
        let jobs = Selection::new(&Args::default(), &names()).unwrap().jobs();
        // Uneven durations so that the threads finish out of order.
        let rows = run_jobs(
            &jobs,
            &Args::default(),
            |job, _| {
                let n = job.workload.len() + job.policy.len();
                thread::sleep(Duration::from_millis((n % 3) as u64 * 5));
                Row {
                    workload: job.workload.clone(),
                    policy: job.policy.clone(),
                    profile: job.profile.clone(),
                    cycles: n as u64,
                    ..Row::default()
                }
            },
            false,
        );
        assert_eq!(rows.len(), jobs.len());
        for (row, job) in rows.iter().zip(&jobs) {
            assert_eq!(
                (&row.workload, &row.policy, &row.profile),
                (&job.workload, &job.policy, &job.profile)
            );
        }
        assert!(run_jobs(&[], &Args::default(), |_, _| unreachable!(), false).is_empty());
    }
}
