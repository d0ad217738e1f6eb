//! `vmsa compare`: every workload under every policy on the model.

pub mod driver;

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
