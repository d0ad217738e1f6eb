//! What a run counts, shared by every PE (relaxed atomics: totals only).

use core::sync::atomic::{AtomicU64, Ordering};

/// A counter.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    /// Adds one.
    pub fn bump(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Raises the value to at least `n`.
    pub fn max(&self, n: u64) {
        self.0.fetch_max(n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter of the run.
pub struct Stats {
    /// Stage 2 translation faults on guest RAM.
    pub translation_faults: Counter,
    /// Stage 2 permission faults on guest RAM.
    pub permission_faults: Counter,
    /// Stage 2 access flag faults.
    pub access_flag_faults: Counter,
    /// Stage 2 faults taken on the guest's stage 1 walk (S1PTW), included above.
    pub s1ptw_faults: Counter,
    /// Faults the tables already allowed (a stale, stricter TLB entry).
    pub spurious_faults: Counter,
    /// Translation faults on a page mapped again by the time the lock was
    /// held (touched during a migration or swap-in window).
    pub window_retries: Counter,
    /// Faults on guest RAM handled entirely under the read side of the VM
    /// lock (`Vm::fault_shared`).
    pub shared_faults: Counter,
    /// Faults on guest RAM handled under the write side (`Vm::fault`).
    pub exclusive_faults: Counter,
    /// Faults whose read-side handling began while another PE's was
    /// under way (both vCPUs in the fault path at once).
    pub shared_overlaps: Counter,
    /// Accesses outside the guest's IPA map, answered with an external abort.
    pub injected_aborts: Counter,
    /// Traps the hypervisor does not handle, answered with UNDEF.
    pub injected_undefs: Counter,
    /// HVCs and non-PSCI SMCs answered NOT_SUPPORTED.
    pub not_supported_calls: Counter,
    /// SMCs trapped (PSCI proxy).
    pub smcs: Counter,
    /// WFI traps.
    pub wfi_traps: Counter,
    /// Permission faults where HPFAR_EL2 and `AT S1E1R` were both read.
    pub hpfar_checked: Counter,
    /// ... and disagreed.
    pub hpfar_mismatch: Counter,
    /// Dirty-logging rounds.
    pub rounds: Counter,
    /// Pages write-protected by rounds.
    pub protected: Counter,
    /// Pages relaxed on write faults.
    pub relaxed: Counter,
    /// Most pages dirtied in one round.
    pub max_dirty: Counter,
    /// Pages migrated to new frames.
    pub migrations: Counter,
    /// Live 2 MiB blocks split.
    pub splits: Counter,
    /// Split regions collapsed back into blocks.
    pub collapses: Counter,
    /// Pages swapped out.
    pub swap_outs: Counter,
    /// Pages swapped back in.
    pub swap_ins: Counter,
    /// Rounds that found the swap pool full.
    pub swap_full: Counter,
    /// Rounds whose dirty log was verified by checksums.
    pub verify_rounds: Counter,
    /// Pages checksummed by verification.
    pub verify_pages: Counter,
    /// Pages changed although not logged dirty.
    pub missed_dirty: Counter,
    /// Flushes of the stage 2.
    pub flushes: Counter,
    /// TLBIs a negative control dropped or weakened.
    pub control_tlbis: Counter,
    /// Counter ticks spent in rounds and migrations.
    pub live_ticks: Counter,
}

/// The run's counters.
pub static STATS: Stats = Stats {
    translation_faults: Counter::new(),
    permission_faults: Counter::new(),
    access_flag_faults: Counter::new(),
    s1ptw_faults: Counter::new(),
    spurious_faults: Counter::new(),
    window_retries: Counter::new(),
    shared_faults: Counter::new(),
    exclusive_faults: Counter::new(),
    shared_overlaps: Counter::new(),
    injected_aborts: Counter::new(),
    injected_undefs: Counter::new(),
    not_supported_calls: Counter::new(),
    smcs: Counter::new(),
    wfi_traps: Counter::new(),
    hpfar_checked: Counter::new(),
    hpfar_mismatch: Counter::new(),
    rounds: Counter::new(),
    protected: Counter::new(),
    relaxed: Counter::new(),
    max_dirty: Counter::new(),
    migrations: Counter::new(),
    splits: Counter::new(),
    collapses: Counter::new(),
    swap_outs: Counter::new(),
    swap_ins: Counter::new(),
    swap_full: Counter::new(),
    verify_rounds: Counter::new(),
    verify_pages: Counter::new(),
    missed_dirty: Counter::new(),
    flushes: Counter::new(),
    control_tlbis: Counter::new(),
    live_ticks: Counter::new(),
};
