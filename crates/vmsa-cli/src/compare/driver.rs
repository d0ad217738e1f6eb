//! Runs workloads under policies on the model.
//!
//! A baseline's choices do not depend on the cost profile, so its model
//! run is shared by every profile; vmsa's planner prices its choices with
//! the profile, so it runs once per profile.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use vmsa::Capabilities;
use vmsa_model::cost::{Costs, Profile};

use super::{policies, workloads, Args, Row};

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
    workloads::NAMES.iter().map(|(n, _)| *n).collect()
}

/// The names of the policies, in display order (`vmsa` first).
pub fn policies() -> Vec<&'static str> {
    policies::NAMES.to_vec()
}

/// The CPU the comparison assumes: an Armv8.4 server core (FEAT_TLBIRANGE,
/// FEAT_TTL), as the systems compared use those features when present.
pub fn capabilities() -> Capabilities {
    Capabilities::armv8_4()
}

/// What one model run produced.
#[derive(Clone, Debug)]
struct Outcome {
    costs: Costs,
    violations: u64,
}

type Cache = Mutex<HashMap<(String, String, String, usize), Outcome>>;

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

fn simulate(workload: &str, policy: &str, p: &Profile, pes: usize) -> Outcome {
    let caps = capabilities();
    let oracle = policy == policies::ORACLE.name;
    let baseline = policies::policy(policy);
    let mut mk = |stage2: bool, place: workloads::Placement| {
        workloads::Env::new(
            stage2,
            pes,
            place,
            baseline.make(caps, p.planner(pes)),
            oracle,
            baseline.gathers,
        )
    };
    let env = workloads::run(workload, &mut mk, baseline.skips_dead);
    if std::env::var_os("VMSA_COMPARE_DEBUG").is_some() {
        for v in env.m.violations().iter().take(3) {
            eprintln!("{workload}/{policy}: {v}");
        }
    }
    Outcome {
        costs: env.m.costs().clone(),
        violations: env.m.violations().len() as u64,
    }
}

/// Runs one job on `args.pes` PEs.
pub fn run_job(job: &Job, args: &Args) -> Row {
    let p = super::profile(&job.profile);
    let pes = args.pes.clamp(1, 64);
    // Only vmsa's choices depend on the profile.
    let key_profile = if job.policy == "vmsa" {
        job.profile.clone()
    } else {
        String::new()
    };
    let key = (job.workload.clone(), job.policy.clone(), key_profile, pes);
    let cached = cache().lock().ok().and_then(|c| c.get(&key).cloned());
    let out = match cached {
        Some(o) => o,
        None => {
            let o = simulate(&job.workload, &job.policy, p, pes);
            if let Ok(mut c) = cache().lock() {
                c.insert(key, o.clone());
            }
            o
        }
    };
    Row::priced(&job.workload, &job.policy, p, &out.costs, out.violations)
}
