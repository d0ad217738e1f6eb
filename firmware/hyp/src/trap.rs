//! Guest exits: stage 2 aborts, SMCs (the PSCI proxy), HVCs, WFI, and
//! everything else (reported and answered with UNDEF). Nothing the guest
//! does can crash or hang the hypervisor: every exit ends in a return to
//! the guest or in the run's verdict.

use core::sync::atomic::{AtomicU64, Ordering};

use vmsa_el2::psci;
use vmsa_el2::{mrs, msr};

use crate::boot::Frame;
use crate::guest::{inject_external_abort, inject_undef};
use crate::layout::{is_ram, RAM_BASE};
use crate::stats::STATS;
use crate::vm::{vm_write, Fatal, Handled, VM};
use crate::{cfg, fail, finish, this_pe};

/// Exception classes (ESR_EL2.EC).
const EC_WFX: u64 = 0x01;
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_IABT_LOW: u64 = 0x20;
const EC_DABT_LOW: u64 = 0x24;

/// Guest entry point and context id per PE, from the guest's CPU_ON.
pub static GUEST_PC: [AtomicU64; crate::layout::MAX_PES] =
    [const { AtomicU64::new(0) }; crate::layout::MAX_PES];
pub static GUEST_CTX: [AtomicU64; crate::layout::MAX_PES] =
    [const { AtomicU64::new(0) }; crate::layout::MAX_PES];

/// Unexpected traps reported so far (only the first few are printed).
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// PEs in the read side of the fault path now.
static IN_SHARED: AtomicU64 = AtomicU64::new(0);

#[no_mangle]
extern "C" fn handle_lower_sync(frame: &mut Frame) {
    let esr = mrs!("esr_el2");
    match esr >> 26 {
        EC_SMC64 => {
            STATS.smcs.bump();
            smc(frame);
            // ELR_EL2 points at the trapped SMC itself.
            msr!("elr_el2", mrs!("elr_el2") + 4);
        }
        EC_HVC64 => {
            // No hypercalls are offered (ELR_EL2 is already past the HVC).
            STATS.not_supported_calls.bump();
            frame.x[0] = psci::NOT_SUPPORTED;
        }
        EC_WFX => {
            // HCR_EL2.TWI: a tick for the live changes, then wait as the
            // guest asked (an interrupt pending for EL1 ends the WFI).
            STATS.wfi_traps.bump();
            tick(this_pe());
            // SAFETY: waiting for an interrupt has no memory effects.
            unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
            msr!("elr_el2", mrs!("elr_el2") + 4);
        }
        EC_IABT_LOW | EC_DABT_LOW => abort(esr),
        ec => {
            let n = UNEXPECTED.fetch_add(1, Ordering::Relaxed);
            if n < 8 {
                vmsa_el2::println!(
                    "[hyp] unexpected trap on PE {}: EC {:#x} ESR {:#x} ELR {:#x}; injecting UNDEF",
                    this_pe(),
                    ec,
                    esr,
                    mrs!("elr_el2")
                );
            }
            STATS.injected_undefs.bump();
            inject_undef();
        }
    }
}

/// The faulting IPA: from HPFAR_EL2 when the architecture says it is valid
/// (translation and access flag faults, and any fault on a stage 1 walk),
/// else from `AT S1E1R` on FAR_EL2 (a permission fault: HPFAR_EL2 may be
/// UNKNOWN on hardware, though QEMU always fills it). `None`: the guest's
/// stage 1 changed under us; the access is simply retried.
fn fault_ipa(esr: u64, far: u64) -> Option<u64> {
    let hpfar = mrs!("hpfar_el2");
    let from_hpfar = (((hpfar >> 4) & ((1 << 40) - 1)) << 12) | (far & 0xfff);
    let fsc = esr & 0x3f;
    let s1ptw = esr & (1 << 7) != 0;
    let permission = fsc & 0x3c == 0x0c;
    if !permission || s1ptw {
        return Some(from_hpfar);
    }
    let saved_par = mrs!("par_el1");
    // SAFETY: an address translation of the guest's VA with its own EL1
    // stage 1 (and our stage 2); it only writes PAR_EL1, restored below.
    unsafe {
        core::arch::asm!("at s1e1r, {va}", "isb", va = in(reg) far, options(nostack, preserves_flags))
    };
    let par = mrs!("par_el1");
    msr!("par_el1", saved_par);
    if par & 1 != 0 {
        return None;
    }
    let ipa = (par & 0x000f_ffff_ffff_f000) | (far & 0xfff);
    STATS.hpfar_checked.bump();
    if ipa != from_hpfar {
        STATS.hpfar_mismatch.bump();
    }
    Some(ipa)
}

fn abort(esr: u64) {
    let pe = this_pe();
    let far = mrs!("far_el2");
    let instruction = esr >> 26 == EC_IABT_LOW;
    let fsc = esr & 0x3f;
    let translation = fsc & 0x3c == 0x04;
    let permission = fsc & 0x3c == 0x0c;
    let access_flag = fsc & 0x3c == 0x08;
    let s1ptw = esr & (1 << 7) != 0;
    // A write, or a fault on the stage 1 walk (of a data access or of an
    // instruction fetch): a walk's reads are allowed on every mapped page,
    // so it faulted writing the hardware AF/DBM update of a descriptor.
    let write = s1ptw || (!instruction && esr & (1 << 6) != 0);
    let fetch = instruction && !s1ptw;
    let Some(ipa) = fault_ipa(esr, far) else {
        STATS.window_retries.bump();
        return;
    };
    if !is_ram(ipa) || !(translation || permission || access_flag) {
        // Outside the guest's IPA map (or a fault kind it cannot fix):
        // what a real machine does for an address with nothing behind it.
        STATS.injected_aborts.bump();
        if STATS.injected_aborts.get() <= 4 {
            vmsa_el2::println!(
                "[hyp] PE {}: guest {} at IPA {:#x} (VA {:#x}, ESR {:#x}) is outside its map: injecting a synchronous external abort",
                pe,
                if instruction { "instruction fetch" } else if write { "write" } else { "read" },
                ipa,
                far,
                esr
            );
        }
        inject_external_abort(instruction, far, esr);
        return;
    }
    if translation {
        STATS.translation_faults.bump();
    } else if permission {
        STATS.permission_faults.bump();
    } else {
        STATS.access_flag_faults.bump();
    }
    if s1ptw {
        STATS.s1ptw_faults.bump();
    }
    let page = ((ipa - RAM_BASE) >> 12) as usize;
    let kind = if translation {
        vmsa::oplog::FaultKind::Translation
    } else if permission {
        vmsa::oplog::FaultKind::Permission
    } else {
        vmsa::oplog::FaultKind::AccessFlag
    };
    let Some(outcome) = stage2_fault(pe, page, kind, write, fetch, s1ptw) else {
        return;
    };
    match outcome {
        Ok(Handled::Retry) => {}
        Ok(Handled::Lost) => fail(&alloc::format!(
            "stage 2 fault on IPA {ipa:#x} (ESR {esr:#x}) that the tables cannot explain: the page is neither mapped nor swapped out"
        )),
        Err(e) => fail(&alloc::format!("{}: {:?}", e.0, e.1)),
    }
    crate::check_deadline();
}

/// A stage 2 fault on guest RAM `page`: first under the read side of the
/// VM lock, concurrently with the other vCPUs' ([`Vm::fault_shared`]);
/// what that declines under the write side ([`Vm::fault`], which looks
/// again). `None`: there is no VM yet.
///
/// [`Vm::fault_shared`]: crate::vm::Vm::fault_shared
/// [`Vm::fault`]: crate::vm::Vm::fault
fn stage2_fault(
    pe: usize,
    page: usize,
    kind: vmsa::oplog::FaultKind,
    write: bool,
    fetch: bool,
    s1ptw: bool,
) -> Option<Result<Handled, Fatal>> {
    // No worker PE: a busy guest rarely idles, but it keeps writing pages
    // the last round protected: a fault is a tick.
    let ticks = cfg().worker_pe().is_none();
    {
        let guard = VM.read();
        let vm = guard.as_ref()?;
        if IN_SHARED.fetch_add(1, Ordering::Relaxed) > 0 {
            STATS.shared_overlaps.bump();
        }
        let shared = vm.fault_shared(pe, page, kind, write, fetch, s1ptw);
        IN_SHARED.fetch_sub(1, Ordering::Relaxed);
        if let Some(h) = shared {
            STATS.shared_faults.bump();
            let due = ticks && vm.due(vmsa_el2::sysreg::counter());
            drop(guard);
            if due {
                if let Err(e) = tick_exclusive(pe) {
                    return Some(Err(e));
                }
            }
            return Some(Ok(h));
        }
    }
    let mut vm = vm_write();
    let vm = vm.as_mut()?;
    STATS.exclusive_faults.bump();
    let r = vm.fault(pe, page, kind, write, fetch, s1ptw);
    Some(
        if matches!(r, Ok(Handled::Retry)) && ticks && vm.due(vmsa_el2::sysreg::counter()) {
            vm.tick(pe).map(|()| Handled::Retry)
        } else {
            r
        },
    )
}

/// Runs what is due (rounds, migrations) under the write side, if it is
/// still due once the lock is held.
pub fn tick_exclusive(pe: usize) -> Result<(), Fatal> {
    match vm_write().as_mut() {
        Some(vm) if vm.due(vmsa_el2::sysreg::counter()) => vm.tick(pe),
        _ => Ok(()),
    }
}

/// Whether a VM exists and has something due (the read side: the PEs that
/// poll do not hold up the fault path).
pub fn tick_due() -> bool {
    VM.read()
        .as_ref()
        .is_some_and(|vm| vm.due(vmsa_el2::sysreg::counter()))
}

/// A tick from a vCPU (no worker PE): rounds and migrations when due.
fn tick(pe: usize) {
    if cfg().worker_pe().is_none() && cfg().live() && tick_due() {
        if let Err(e) = tick_exclusive(pe) {
            fail(&alloc::format!("{}: {:?}", e.0, e.1));
        }
    }
    crate::check_deadline();
}

/// The PSCI proxy (HCR_EL2.TSC): CPU_ON starts the PE here at EL2 and then
/// enters the guest's entry point; SYSTEM_OFF ends the run with its
/// verdict; the rest of PSCI is forwarded; anything else is NOT_SUPPORTED.
fn smc(frame: &mut Frame) {
    let fid = (frame.x[0] & 0xffff_ffff) as u32;
    match fid {
        psci::CPU_ON | 0x8400_0003 => {
            let mpidr = frame.x[1];
            let idx = ((mpidr & 0xff) + ((mpidr >> 8) & 0xff) * 8) as usize;
            if idx >= cfg().vcpus || mpidr >> 16 & 0xff != 0 {
                frame.x[0] = psci::INVALID_PARAMETERS;
                return;
            }
            GUEST_PC[idx].store(frame.x[2], Ordering::Release);
            GUEST_CTX[idx].store(frame.x[3], Ordering::Release);
            let status = psci::cpu_on(
                mpidr,
                crate::boot::_start_secondary as *const () as u64,
                idx as u64,
            );
            vmsa_el2::println!(
                "[hyp] guest CPU_ON mpidr {:#x} entry {:#x}: PE {} started at EL2, status {}",
                mpidr,
                frame.x[2],
                idx,
                status
            );
            frame.x[0] = status as u64;
        }
        psci::SYSTEM_OFF => {
            vmsa_el2::println!("[hyp] guest PSCI SYSTEM_OFF on PE {}", this_pe());
            finish(None);
        }
        psci::SYSTEM_RESET => {
            vmsa_el2::println!("[hyp] guest PSCI SYSTEM_RESET on PE {}", this_pe());
            finish(Some(
                "the guest reset the system (a guest panic with panic=-1?)",
            ));
        }
        psci::VERSION
        | psci::CPU_SUSPEND
        | 0x8400_0001
        | psci::CPU_OFF
        | psci::AFFINITY_INFO
        | 0x8400_0004
        | psci::MIGRATE_INFO_TYPE
        | psci::FEATURES => {
            let r = psci::call([frame.x[0], frame.x[1], frame.x[2], frame.x[3]]);
            frame.x[..4].copy_from_slice(&r);
        }
        _ => {
            STATS.not_supported_calls.bump();
            frame.x[0] = psci::NOT_SUPPORTED;
        }
    }
}
