//! vmsa on an emulated AArch64 CPU: a bare-metal image for QEMU's virt
//! machine that runs at EL2, builds stage 2 tables with vmsa, runs a guest
//! at EL1 under them, changes them between guest runs and checks what the
//! guest sees. Results go to the PL011 UART; the exit status (semihosting)
//! is 0 when every check passed.

#![no_std]
#![no_main]

extern crate alloc;
#[macro_use]
extern crate vmsa_el2;

mod boot;
mod guest;
mod pool;
mod scenarios;
mod seq;
mod sequences;
mod smp;
mod stage1;
mod vmids;

use core::panic::PanicInfo;

use scenarios::{Cpu, Runner};
use vmsa_el2::heap::Heap;
use vmsa_el2::semihost;

/// The heap vmsa's `alloc` uses: 16 MiB inside the image.
#[global_allocator]
static HEAP: Heap = Heap::empty();
const HEAP_SIZE: usize = 16 << 20;

#[repr(C, align(4096))]
struct HeapMemory([u8; HEAP_SIZE]);
static mut HEAP_MEMORY: HeapMemory = HeapMemory([0; HEAP_SIZE]);

#[no_mangle]
extern "C" fn rust_main(el: u64) -> ! {
    // SAFETY: the region is a static used for nothing else, given to the
    // heap once, before anything allocates.
    unsafe { HEAP.init(core::ptr::addr_of_mut!(HEAP_MEMORY).cast(), HEAP_SIZE) };
    println!("vmsa firmware: running at EL{el}");
    if el != 2 {
        println!("FATAL: started at EL{el}, need EL2 (qemu -machine virt,virtualization=on)");
        semihost::exit(3);
    }
    let cpu = Cpu::detect();
    println!(
        "cpu: MIDR {:#x}, PARange {}, FEAT_TLBIRANGE {}, FEAT_TTL {}, nTLBPA {}, VMID bits {}",
        cpu.midr,
        cpu.pa_range,
        cpu.caps.tlbi_range,
        cpu.caps.ttl,
        cpu.caps.ntlbpa,
        cpu.caps.vmid_bits
    );
    let (gs, ge) = boot::guest_code();
    println!(
        "memory: guest code {gs:#x}..{ge:#x}, table pool {:#x} ({} pages)",
        pool::PoolAlloc::base(),
        pool::PAGES
    );
    guest::setup_el2();
    match smp::start(1) {
        Ok(el) => println!("PE 1 started by PSCI CPU_ON (SMC), at EL{el}"),
        Err(e) => println!("PE 1 not started: PSCI CPU_ON returned {e}"),
    }

    let mut r = Runner::new(cpu);
    r.check("read-through-mapping", scenarios::read_through_mapping);
    r.check("unmap-then-fault", scenarios::unmap_then_fault);
    r.check("remap", scenarios::remap);
    r.check("protect-and-relax", scenarios::protect_and_relax);
    r.check("split-and-collapse", scenarios::split_and_collapse);
    r.check("two-vms", scenarios::two_vms);
    r.check("invalidate-other-vmid", scenarios::invalidate_other_vmid);
    r.check("big-unmap", scenarios::big_unmap);
    r.control("control-no-tlbi", scenarios::control_no_tlbi);
    r.control(
        "control-ipas2-without-vmalle1",
        scenarios::control_ipas2_without_vmalle1,
    );
    r.check("two-pe-broadcast", scenarios::two_pe);
    r.control(
        "control-two-pe-local-only",
        scenarios::control_two_pe_local_only,
    );
    r.control(
        "control-two-pe-local-vmalls12e1",
        scenarios::control_two_pe_local_vmalls12e1,
    );
    r.control("control-wrong-vmid", scenarios::control_wrong_vmid);
    sequences::print_config(&r);
    for name in seq::NAMES {
        r.check(&alloc::format!("seq-{name}"), |r| sequences::run(r, name));
    }
    r.check("guest-stage1", stage1::guest_stage1);
    r.check("host-managed-stage1", stage1::host_managed_stage1);
    r.control("control-shim-request-dropped", stage1::control_shim_dropped);
    r.check("vmid-rollover-reuse", vmids::vmid_rollover_reuse);
    r.control(
        "control-vmid-reuse-no-rollover-flush",
        vmids::control_vmid_reuse_no_flush,
    );

    println!(
        "guest runs {}, table pages peak {}, heap peak {} KiB, descriptor stores {}, barriers {}",
        guest::runs(),
        pool::PoolAlloc::peak(),
        HEAP.peak() / 1024,
        r.hw.counts().stores,
        r.hw.counts().barriers()
    );
    print!("tlbi totals:");
    for (op, n) in r.hw.counts().tlbis_issued() {
        print!(" {op}={n}");
    }
    println!();
    println!(
        "controls: {} caught, {} not caught (never counted as passed)",
        r.caught, r.not_caught
    );
    println!("{} passed, {} failed", r.passed, r.failed);
    semihost::exit(if r.failed == 0 { 0 } else { 1 })
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("PANIC: {info}");
    semihost::exit(101)
}
