//! vmsa-hyp: a thin EL2 hypervisor for QEMU's virt machine that boots an
//! SMP Linux guest at EL1 on a stage 2 built by vmsa, and changes that
//! stage 2 while Linux runs (dirty logging, page migration, 2 MiB block
//! split / collapse, swap), then powers off with a verdict.
//!
//! Loaded by QEMU as the `-kernel` ELF and entered at EL2 with the MMU
//! off; the guest's kernel `Image`, DTB and initramfs, and this run's
//! configuration text ([`config`]), are put in RAM by `-device loader`
//! (`scripts/qemu-linux-test` does it all). PE 0 builds the EL2 stage 1
//! and turns the MMU and caches on, builds the guest's stage 2, and enters
//! Linux; the guest's PSCI CPU_ON brings up its other vCPUs through the
//! hypervisor; with `worker=1` one more PE runs the live changes on a
//! clock. The guest's PSCI SYSTEM_OFF ends the run: the report, the
//! verdict line, and the semihosting exit status (0 = ok).

#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod config;
mod guest;
mod layout;
mod pool;
mod stats;
mod trap;
mod vm;

use core::alloc::Layout;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vmsa::arch::aarch64;
use vmsa_el2::heap::Heap;
use vmsa_el2::mmu::{self, Memory, Region};
use vmsa_el2::spin::Once;
use vmsa_el2::sysreg::{counter, ticks_to_ms};
use vmsa_el2::{mrs, println, psci, semihost};

use config::Config;
use layout::*;
use stats::STATS;
use vm::{vm_write, Vm, VM};

#[global_allocator]
static HEAP: Heap = Heap::empty();

static CONFIG: Once<Config> = Once::new();
static BOOT_T0: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
static ONLINE: AtomicU64 = AtomicU64::new(0);

/// The run's configuration (read by PE 0 before any other PE starts).
pub fn cfg() -> &'static Config {
    CONFIG.get().expect("configuration read at boot")
}

/// This PE's index (TPIDR_EL2, set at entry).
pub fn this_pe() -> usize {
    mrs!("tpidr_el2") as usize
}

#[no_mangle]
extern "C" fn pe_main(pe: u64) -> ! {
    if pe == 0 {
        primary()
    } else {
        secondary(pe as usize)
    }
}

fn heap_exhausted(layout: Layout, used: usize, size: usize) -> ! {
    println!(
        "[hyp] heap exhausted: {} bytes asked, {} of {} in use",
        layout.size(),
        used,
        size
    );
    finish(Some("out of heap"))
}

fn primary() -> ! {
    BOOT_T0.store(counter(), Ordering::Relaxed);
    // SAFETY: HEAP_BASE..+HEAP_SIZE is RAM reserved for the heap
    // (layout.rs), given to it once, before anything allocates.
    unsafe { HEAP.init(HEAP_BASE as *mut u8, HEAP_SIZE as usize) };
    HEAP.on_exhausted(heap_exhausted);
    println!("[hyp] vmsa-hyp at EL2 on PE 0");
    let c = match Config::read() {
        Ok(c) => c,
        Err(e) => {
            println!("[hyp] bad configuration: {e}");
            println!("[hyp] verdict: FAIL bad configuration: {e}");
            semihost::exit(2)
        }
    };
    CONFIG.call_once(|| c);
    println!(
        "[hyp] run {}: policy {} vcpus {} worker {} dirty {} verify {} migrate {} blocks {} swap {} control {} shared {} guest_s {}",
        c.name(),
        c.policy(),
        c.vcpus,
        c.worker as u8,
        c.dirty as u8,
        c.verify as u8,
        c.migrate,
        c.blocks as u8,
        c.swap,
        c.control.name(),
        c.shared as u8,
        c.guest_s
    );
    // SAFETY: the DTB and Image addresses are guest RAM QEMU's loader filled.
    let (dtb_magic, image_magic) = unsafe {
        (
            core::ptr::read_volatile(DTB as *const u32),
            core::ptr::read_volatile((KERNEL + 0x38) as *const u32),
        )
    };
    if dtb_magic != 0xedfe_0dd0 || image_magic != 0x644d_5241 {
        fail(&alloc::format!(
            "no DTB at {DTB:#x} (magic {dtb_magic:#x}) or no arm64 Image at {KERNEL:#x} (magic {image_magic:#x})"
        ));
    }

    // EL2 stage 1: RAM Normal write-back (the image text read-only and
    // executable), the GIC and UART as Device memory.
    let text = boot::text();
    let regions = [
        Region {
            range: EL2_DEVICES.0..EL2_DEVICES.1,
            memory: Memory::Device,
        },
        Region {
            range: RAM_BASE..text.start,
            memory: Memory::Data,
        },
        Region {
            range: text.clone(),
            memory: Memory::Code,
        },
        Region {
            range: text.end..MEM_END,
            memory: Memory::Data,
        },
    ];
    // SAFETY: at EL2 (QEMU enters the image there) with HCR_EL2.E2H == 0;
    // the EL2 stage 1 built through it maps the image and RAM at their
    // physical addresses (identity) and is only loaded by `mmu::enable`.
    let mut hw = unsafe { aarch64::Cpu::new() };
    match mmu::build(&regions, pool::pool(), &mut hw) {
        Ok(el2) => {
            mmu::enable(&el2);
            // The map lives as long as the hypervisor.
            core::mem::forget(el2);
        }
        Err(e) => fail(&alloc::format!("EL2 stage 1: {e:?}")),
    }
    println!(
        "[hyp] EL2 MMU and caches on (SCTLR_EL2 {:#x}, TCR_EL2 {:#x}); text {:#x}..{:#x}",
        mrs!("sctlr_el2"),
        mrs!("tcr_el2"),
        text.start,
        text.end
    );

    let mut vm = match Vm::new(c, pool::pool()) {
        Ok(vm) => vm,
        Err(e) => fail(&alloc::format!("{}: {:?}", e.0, e.1)),
    };
    vm.activate(0);
    if c.dirty {
        if let Err(e) = vm.start_dirty_logging(0) {
            fail(&alloc::format!("{}: {:?}", e.0, e.1));
        }
    }
    vm.vcpu_load(0);
    let (vtcr, vttbr) = vm.registers();
    println!(
        "[hyp] stage 2 by vmsa: VTCR_EL2 {:#x} VTTBR_EL2 {:#x}; guest RAM {:#x}..{:#x} as {}; {} leaves, {} table pages",
        vtcr,
        vttbr,
        RAM_BASE,
        RAM_BASE + RAM_SIZE,
        if c.blocks { "2 MiB blocks" } else { "4 KiB pages" },
        vm.mapped_leaves(),
        pool::pool().live_pages()
    );
    *vm_write() = Some(vm);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    if let Some(w) = c.worker_pe() {
        let mpidr = (w as u64 % 8) | ((w as u64 / 8) << 8);
        let status = psci::cpu_on(mpidr, boot::_start_secondary as *const () as u64, w as u64);
        println!("[hyp] worker PE {w} started, PSCI status {status}");
    }
    guest::setup_el2(vtcr, vttbr, trap_wfi());
    println!("[hyp] entering Linux at {KERNEL:#x} (EL1h), x0 = DTB {DTB:#x}");
    // SAFETY: the stage 2 is live and maps the kernel; this PE's stack
    // top is where every later exit starts.
    unsafe { boot::enter_guest(KERNEL, DTB, boot::stack_top(0)) }
}

/// WFI traps are ticks when no worker runs the live changes.
fn trap_wfi() -> bool {
    cfg().live() && cfg().worker_pe().is_none()
}

fn secondary(pe: usize) -> ! {
    mmu::enable_secondary();
    if cfg().worker_pe() == Some(pe) {
        worker(pe)
    }
    let (vtcr, vttbr) = {
        let mut g = vm_write();
        let Some(vm) = g.as_mut() else {
            fail("a vCPU started before the VM")
        };
        vm.vcpu_load(pe);
        vm.registers()
    };
    guest::setup_el2(vtcr, vttbr, trap_wfi());
    ONLINE.fetch_add(1, Ordering::AcqRel);
    let pc = trap::GUEST_PC[pe].load(Ordering::Acquire);
    let ctx = trap::GUEST_CTX[pe].load(Ordering::Acquire);
    // SAFETY: as for PE 0; the entry point is the guest's, from its CPU_ON.
    unsafe { boot::enter_guest(pc, ctx, boot::stack_top(pe)) }
}

/// The worker PE: never runs the guest; runs rounds and migrations on a
/// clock, concurrently with the vCPUs (they meet at the VM lock: the
/// worker takes its write side when something is due).
fn worker(pe: usize) -> ! {
    let (vtcr, vttbr) = VM
        .read()
        .as_ref()
        .map(|vm| vm.registers())
        .unwrap_or((0, 0));
    // Stage 2 TLBIs act on the VMID in VTTBR_EL2: load the guest's (HCR_EL2.VM
    // stays 0: EL2's own accesses are not translated by it).
    vmsa_el2::msr!("vtcr_el2", vtcr);
    vmsa_el2::msr!("vttbr_el2", vttbr);
    vmsa_el2::sysreg::isb();
    println!("[hyp] worker on PE {pe}: rounds and migrations on a clock");
    loop {
        if DONE.load(Ordering::Acquire) {
            park();
        }
        check_deadline();
        let r = if trap::tick_due() {
            trap::tick_exclusive(pe)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            fail(&alloc::format!("{}: {:?}", e.0, e.1));
        }
        let until = counter() + vmsa_el2::sysreg::ms_to_ticks(1);
        while counter() < until {
            core::hint::spin_loop();
        }
    }
}

fn park() -> ! {
    loop {
        // SAFETY: waiting for an event has no memory effects.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}

/// Fails the run when the guest has not powered off in time.
pub fn check_deadline() {
    let t = ticks_to_ms(counter().wrapping_sub(BOOT_T0.load(Ordering::Relaxed)));
    if t > cfg().guest_s * 1000 {
        fail(&alloc::format!(
            "hang: the guest did not power off within {} s",
            cfg().guest_s
        ));
    }
}

/// Ends the run with a FAIL verdict.
pub fn fail(reason: &str) -> ! {
    finish(Some(reason))
}

/// Ends the run: report, verdict line, semihosting exit (0 iff ok). Only
/// the first PE to get here reports; the others park.
pub fn finish(failure: Option<&str>) -> ! {
    if DONE.swap(true, Ordering::AcqRel) {
        park();
    }
    let missed = STATS.missed_dirty.get();
    let hpfar = STATS.hpfar_mismatch.get();
    report();
    match failure {
        Some(reason) => println!("[hyp] verdict: FAIL {reason}"),
        None if missed > 0 => println!("[hyp] verdict: FAIL missed dirty pages: {missed}"),
        None if hpfar > 0 => {
            println!("[hyp] verdict: FAIL HPFAR_EL2 and AT S1E1R disagreed {hpfar} times")
        }
        None => println!("[hyp] verdict: ok"),
    }
    let ok = failure.is_none() && missed == 0 && hpfar == 0;
    semihost::exit(if ok { 0 } else { 1 })
}

/// The run's report: `[hyp] report: ...` lines.
fn report() {
    let s = &STATS;
    let ms = ticks_to_ms(counter().wrapping_sub(BOOT_T0.load(Ordering::Relaxed)));
    let c = CONFIG.get();
    println!(
        "[hyp] report: run {} policy {} after {} ms, vcpus {}, worker {}, control {}, PEs online {}",
        c.map(|c| c.name()).unwrap_or("?"),
        c.map(|c| c.policy()).unwrap_or("?"),
        ms,
        c.map(|c| c.vcpus).unwrap_or(0),
        c.map(|c| c.worker as u8).unwrap_or(0),
        c.map(|c| c.control.name()).unwrap_or("?"),
        ONLINE.load(Ordering::Relaxed)
    );
    // The worker may hold the lock in a long round: wait a while, no more.
    let mut guard = None;
    for _ in 0..2000 {
        if let Some(g) = VM.try_write() {
            guard = Some(g);
            break;
        }
        let until = counter() + vmsa_el2::sysreg::ms_to_ticks(1);
        while counter() < until {}
    }
    if let Some(vm) = guard.as_mut().and_then(|g| g.as_mut()) {
        // Every change was flushed before the lock was let go: the logs end
        // on a complete batch.
        vm.exec.end_oplog();
        let hw = vm.executed();
        vmsa_el2::print!(
            "[hyp] report: tlbi {} broadcast {} by kind:",
            hw.tlbis(),
            hw.broadcast_tlbis()
        );
        for (op, n) in hw.tlbis_issued() {
            vmsa_el2::print!(" {}={}", op, n);
        }
        vmsa_el2::print!("\n");
        println!(
            "[hyp] report: dsb {} barriers {} descriptor-stores {} flushes {} control-tlbis {}",
            hw.completing_dsbs,
            hw.barriers(),
            hw.stores,
            s.flushes.get(),
            s.control_tlbis.get()
        );
        println!(
            "[hyp] report: state now: leaves {} migrated-away {} split-regions {} swapped {}",
            vm.mapped_leaves(),
            vm.migrated_now(),
            vm.split_now(),
            vm.swapped_now()
        );
    } else {
        println!("[hyp] report: the VM lock is held: no TLBI totals");
    }
    println!(
        "[hyp] report: stage2-faults translation {} permission {} access-flag {} s1ptw {} spurious {} window-retries {} shared-faults {} exclusive-faults {} shared-overlaps {}",
        s.translation_faults.get(),
        s.permission_faults.get(),
        s.access_flag_faults.get(),
        s.s1ptw_faults.get(),
        s.spurious_faults.get(),
        s.window_retries.get(),
        s.shared_faults.get(),
        s.exclusive_faults.get(),
        s.shared_overlaps.get()
    );
    println!(
        "[hyp] report: injected-aborts {} injected-undefs {} not-supported-calls {} smcs {} wfi-traps {}",
        s.injected_aborts.get(),
        s.injected_undefs.get(),
        s.not_supported_calls.get(),
        s.smcs.get(),
        s.wfi_traps.get()
    );
    println!(
        "[hyp] report: rounds {} protected {} relaxed {} max-dirty {} migrations {} splits {} collapses {} swap-outs {} swap-ins {} swap-full {}",
        s.rounds.get(),
        s.protected.get(),
        s.relaxed.get(),
        s.max_dirty.get(),
        s.migrations.get(),
        s.splits.get(),
        s.collapses.get(),
        s.swap_outs.get(),
        s.swap_ins.get(),
        s.swap_full.get()
    );
    println!(
        "[hyp] report: verify-rounds {} verify-pages {} missed-dirty {} hpfar-checked {} hpfar-mismatch {}",
        s.verify_rounds.get(),
        s.verify_pages.get(),
        s.missed_dirty.get(),
        s.hpfar_checked.get(),
        s.hpfar_mismatch.get()
    );
    println!(
        "[hyp] report: table-pages {} (peak {}) heap {} KiB (peak {} KiB of {} KiB) live-change-time {} ms",
        pool::pool().live_pages(),
        pool::pool().peak_pages(),
        HEAP.used() / 1024,
        HEAP.peak() / 1024,
        HEAP.size() / 1024,
        ticks_to_ms(s.live_ticks.get())
    );
}

#[no_mangle]
extern "C" fn el2_fatal_rust(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    println!(
        "[hyp] EL2 exception (vector {vector}) on PE {}: ESR {esr:#x} ELR {elr:#x} FAR {far:#x}",
        this_pe()
    );
    finish(Some("an exception at EL2 (a hypervisor bug)"))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("[hyp] panic on PE {}: {info}", this_pe());
    finish(Some("hypervisor panic"))
}
