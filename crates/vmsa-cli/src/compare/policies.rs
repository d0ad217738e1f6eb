//! The policies `vmsa compare` and `vmsa replay` run: every policy of the
//! `vmsa-baselines` crate (vmsa's planner and the reproductions of other
//! systems, each citing its source there), and the model's oracle.

use vmsa::plan::{Invalidator, Purpose, Space};
use vmsa::report::Change;
use vmsa::{Barrier, Capabilities, Effects};
use vmsa_baselines::Baseline;

/// The oracle: a `DSB ISH` at which the model removes exactly the stale
/// entries (`ModelEffects::oracle`). Not realizable: the floor. It exists
/// only in the model, so it is not in `vmsa-baselines`.
pub const ORACLE: Baseline = Baseline {
    name: "oracle",
    source: "the model: ModelEffects::oracle removes exactly the stale entries at each DSB",
    gathers: true,
    skips_dead: false,
    stage2: true,
    stage1: true,
    faithful: true,
    build: |_, _| Box::new(Oracle),
};

/// Names, in display order (`vmsa` first, the controls last).
pub const NAMES: &[&str] = &[
    "vmsa",
    "broadcast",
    "elfuse-pr24",
    "elfuse-pr65",
    "linux",
    "kvm",
    "hafnium",
    "freebsd",
    "xen",
    "aarch64-paging",
    "none",
    "oracle",
];

/// The policy called `name` (a name of [`NAMES`]).
pub fn policy(name: &str) -> &'static Baseline {
    if name == ORACLE.name {
        return &ORACLE;
    }
    vmsa_baselines::get(name).unwrap_or_else(|| panic!("unknown policy {name}"))
}

/// Whether the policy called `name` gathers a batch into one flush
/// ([`Baseline::gathers`]).
pub fn gathers(name: &str) -> bool {
    policy(name).gathers
}

/// The policy called `name` for a CPU with `caps`, priced (where it prices
/// anything) with the model's profile `p` for `pes` PEs.
pub fn make(
    name: &str,
    caps: Capabilities,
    p: &vmsa_model::cost::Profile,
    pes: usize,
) -> Box<dyn Invalidator> {
    policy(name).make(caps, p.planner(pes))
}

struct Oracle;

impl Invalidator for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        if !changes
            .iter()
            .any(|c| purpose == Purpose::BreakBeforeMake || vmsa::plan::may_be_stale(c))
        {
            return false;
        }
        fx.barrier(if space.local {
            Barrier::DsbNsh
        } else {
            Barrier::DsbIsh
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_policy_and_every_baseline_is_named() {
        for &n in NAMES {
            assert_eq!(policy(n).name, n);
        }
        for b in vmsa_baselines::ALL {
            assert!(NAMES.contains(&b.name), "{}", b.name);
        }
        assert_eq!(NAMES.len(), vmsa_baselines::ALL.len() + 1);
    }
}
