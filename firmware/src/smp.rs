//! A second PE: started with PSCI CPU_ON (SMC conduit: QEMU's virt machine
//! with virtualization=on implements PSCI itself at "EL3"), it runs guest
//! accesses that PE 0 asks for through a mailbox, with its own VTCR_EL2 /
//! VTTBR_EL2, while PE 0 edits the tables and invalidates.
//!
//! PE 1 never allocates or prints: it only reads and writes the mailbox
//! (load-acquire / store-release, no read-modify-write: both PEs run with
//! their MMU off, so memory is Device and exclusives are best avoided).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::guest::{self, Outcome};
use vmsa_el2::msr;

/// PSCI 0.2+ CPU_ON, SMC64 calling convention.
const PSCI_CPU_ON_64: u64 = 0xc400_0003;

/// The mailbox. PE 0 fills the request and bumps `REQ`; PE 1 runs it,
/// fills the reply and sets `DONE` to the same number.
static REQ: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);
/// PE 1 is about to enter the guest for request `STARTED`.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Request: VTCR_EL2, VTTBR_EL2 to run with, guest x0-x3.
static ARGS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// Reply: 0 value / 1 fault / 2 other, then x0 (value) or ESR, IPA.
static REPLY: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// PE 1's exception level when it started (0: not started).
static ONLINE: AtomicU64 = AtomicU64::new(0);

extern "C" {
    fn _start_secondary();
}

/// Starts PE `index` (MPIDR Aff0 on virt); returns the PSCI status and
/// whether it came up at EL2.
pub fn start(index: u64) -> Result<u64, i64> {
    let status: i64;
    // SAFETY: a PSCI call; it returns in x0 and, per SMCCC, may clobber
    // x0-x17 only.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") PSCI_CPU_ON_64 => status,
            inout("x1") index => _,
            inout("x2") _start_secondary as *const () as u64 => _,
            inout("x3") index => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    if status != 0 {
        return Err(status);
    }
    // Wait for it to report in.
    for _ in 0..100_000_000u64 {
        let el = ONLINE.load(Ordering::Acquire);
        if el != 0 {
            return Ok(el);
        }
        core::hint::spin_loop();
    }
    Err(-1000)
}

/// Whether PE 1 is running the mailbox loop.
pub fn online() -> bool {
    ONLINE.load(Ordering::Acquire) == 2
}

/// A request in flight.
pub struct Pending(u64);

/// Asks PE 1 to run the guest with `x` under the stage 2 `vtcr`/`vttbr`.
pub fn submit(vtcr: u64, vttbr: u64, x: [u64; 4]) -> Pending {
    let n = REQ.load(Ordering::Relaxed) + 1;
    ARGS[0].store(vtcr, Ordering::Relaxed);
    ARGS[1].store(vttbr, Ordering::Relaxed);
    for (i, v) in x.iter().enumerate() {
        ARGS[2 + i].store(*v, Ordering::Relaxed);
    }
    REQ.store(n, Ordering::Release);
    Pending(n)
}

impl Pending {
    /// Waits until PE 1 is about to enter the guest for this request.
    pub fn wait_started(&self) {
        while STARTED.load(Ordering::Acquire) != self.0 {
            core::hint::spin_loop();
        }
    }

    /// Waits for the reply.
    pub fn wait(self) -> Outcome {
        while DONE.load(Ordering::Acquire) != self.0 {
            core::hint::spin_loop();
        }
        let (kind, a, b) = (
            REPLY[0].load(Ordering::Relaxed),
            REPLY[1].load(Ordering::Relaxed),
            REPLY[2].load(Ordering::Relaxed),
        );
        match kind {
            0 => Outcome::Value(a),
            1 => Outcome::Fault(guest::Abort {
                ec: a >> 26,
                esr: a,
                ipa: b,
                far: b,
            }),
            _ => Outcome::Other {
                kind: 0,
                esr: a,
                elr: b,
            },
        }
    }
}

/// PE 1's main loop.
#[no_mangle]
extern "C" fn secondary_main(index: u64, el: u64) -> ! {
    let _ = index;
    if el == 2 {
        guest::setup_el2();
    }
    ONLINE.store(el, Ordering::Release);
    if el != 2 {
        loop {
            core::hint::spin_loop();
        }
    }
    let mut seen = 0;
    let mut loaded = (u64::MAX, u64::MAX);
    loop {
        let n = REQ.load(Ordering::Acquire);
        if n == seen {
            core::hint::spin_loop();
            continue;
        }
        seen = n;
        let vtcr = ARGS[0].load(Ordering::Relaxed);
        let vttbr = ARGS[1].load(Ordering::Relaxed);
        let x = [
            ARGS[2].load(Ordering::Relaxed),
            ARGS[3].load(Ordering::Relaxed),
            ARGS[4].load(Ordering::Relaxed),
            ARGS[5].load(Ordering::Relaxed),
        ];
        if loaded != (vtcr, vttbr) {
            msr!("vtcr_el2", vtcr);
            msr!("vttbr_el2", vttbr);
            // SAFETY: context synchronization only.
            unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
            loaded = (vtcr, vttbr);
        }
        STARTED.store(n, Ordering::Release);
        let (kind, a, b) = match guest::run(x) {
            Outcome::Value(v) => (0, v, 0),
            Outcome::Fault(f) => (1, f.esr, f.ipa),
            Outcome::Other { esr, elr, .. } => (2, esr, elr),
            Outcome::El1 { esr, elr, .. } => (2, esr, elr),
            Outcome::ShimRefused(x8) => (2, 0, x8),
        };
        REPLY[0].store(kind, Ordering::Relaxed);
        REPLY[1].store(a, Ordering::Relaxed);
        REPLY[2].store(b, Ordering::Relaxed);
        DONE.store(n, Ordering::Release);
    }
}
