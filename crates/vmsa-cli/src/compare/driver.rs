//! Runs workloads under policies on the model (being written).

use super::{Args, Row};

/// One (workload, policy, profile) combination to run.
#[derive(Clone, Debug)]
pub struct Job {
    /// Workload name.
    pub workload: String,
    /// Policy name.
    pub policy: String,
    /// Cost profile name.
    pub profile: String,
}

/// The names of the built-in workloads, in display order.
pub fn workloads() -> Vec<&'static str> {
    vec![]
}

/// The names of the policies, in display order (`vmsa` first).
pub fn policies() -> Vec<&'static str> {
    vec![]
}

/// Runs one job with `args.pes` PEs.
pub fn run_job(job: &Job, _args: &Args) -> Row {
    Row {
        workload: job.workload.clone(),
        policy: job.policy.clone(),
        profile: job.profile.clone(),
        ..Row::default()
    }
}
