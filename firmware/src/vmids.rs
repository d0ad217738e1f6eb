//! VMIDs from vmsa's `TagAllocator`: a VM torn down with no TLBI at all
//! (its VMID retired until the next rollover), VMs created until the
//! allocator rolls over, the rollover flush, and the old VMID reused by a
//! VM whose IPA maps different data.

use alloc::format;
use alloc::string::String;

use vmsa::vmid::{TagAllocator, TagSlot};
use vmsa::Effects;
use vmsa::{
    Barrier, Geometry, Granule, MapOptions, Pa, S2ap, Stage2, Stage2Attrs, Stage2Config, SysReg,
    Table, TlbiOp, Vmid,
};

use crate::guest;
use crate::pool::PoolAlloc;
use crate::scenarios::{
    data, ensure, expect_value, fill, ipa, marker, ok, window, Control, Runner, K4, S2,
};

/// A VM with an 8-bit VMID (VTCR_EL2.VS = 0, as the allocator's width)
/// mapping the guest program, and `ip` -> `pa` (one page).
fn vm8(r: &mut Runner, vmid: u16, ip: u64, pa: u64) -> Result<S2, String> {
    let geometry = ok(Geometry::stage2(Granule::K4, 40), "geometry")?;
    let regime = Stage2 {
        vmid: Vmid(vmid),
        config: Stage2Config {
            vmid16: false,
            ..Stage2Config::default()
        },
    };
    let mut t = ok(
        Table::new(regime, geometry, PoolAlloc, &mut r.hw),
        "Table::new",
    )?;
    let (start, end) = crate::boot::guest_code();
    ok(
        t.map(
            ipa(start..end),
            Pa(start),
            Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
            MapOptions::PAGES,
            &mut r.hw,
        ),
        "map guest code",
    )?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map data",
    )?;
    Ok(t)
}

/// Parks PE 0: VTTBR_EL2 = 0 (VMID 0, no table).
fn park(r: &mut Runner) {
    r.hw.write_sysreg(SysReg::VttbrEl2, 0);
    r.hw.barrier(Barrier::Isb);
}

/// Tears a VM down the allocator's way: PE 0 stops running it (`park`:
/// also VTTBR_EL2 = 0; otherwise the register keeps its value and only no
/// guest runs), its VMID is retired, and the table freed with no TLBI.
/// Returns the TLBIs that issued (none, if vmsa is right).
fn teardown(
    r: &mut Runner,
    vmids: &mut TagAllocator,
    slot: &mut TagSlot,
    mut t: S2,
    park_register: bool,
) -> Result<usize, String> {
    r.hw.take_tlbi_log();
    if park_register {
        park(r);
    }
    vmids
        .clear_active(0)
        .map_err(|e| format!("clear_active: {e}"))?;
    let tag = vmids.retire(slot).map_err(|e| format!("retire: {e}"))?;
    ensure!(
        tag == Some(t.regime().vmid.0),
        "retire returned {tag:?}, the VM ran VMID {}",
        t.regime().vmid.0
    );
    t.retire();
    t.destroy(&mut r.hw);
    Ok(r.hw.take_tlbi_log().len())
}

/// Allocates VMIDs for VMs that never run until the allocator rolls over;
/// returns how many it allocated and the new VM's slot and tag (the one
/// whose allocation rolled over).
fn fill_generation(vmids: &mut TagAllocator) -> (u32, TagSlot, u16) {
    let mut n = 0;
    loop {
        let mut s = TagSlot::new();
        let got = vmids.alloc(&mut s);
        if got.rollover {
            return (n, s, got.tag);
        }
        n += 1;
    }
}

/// (18) VM teardown with no TLBI, VMID reuse after a rollover.
///
/// Phase 1, as a hypervisor does it: VM A (VMID 1) runs, PE 0 parks
/// (VTTBR_EL2 = 0), A is torn down with no TLBI; VMs are created and run,
/// each torn down the same way, until the allocator rolls over; the
/// rollover flush (TLBI ALLE1IS) runs and VMID 1 goes to VM N, whose IPA
/// maps another page: its guest reads that page. QEMU flushes its TLB on
/// every VTTBR_EL2 write that changes the value (parking does), so this
/// phase would pass on QEMU without the rollover flush too.
///
/// Phase 2 keeps VTTBR_EL2 unchanged, so that on QEMU only the rollover
/// flush can remove the dead VM's entries: N runs, is torn down without
/// parking the register, the other VMIDs of the generation are allocated
/// (no VM runs them), and at the rollover VMID 1 goes to VM M, whose root
/// table is N's (the pool gives the same pages back), so VTTBR_EL2 does not
/// change; after the rollover flush M's guest reads M's page.
/// (`control-vmid-reuse-no-rollover-flush` is phase 2 without the flush.)
pub fn vmid_rollover_reuse(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(18), window(18));
    fill(pa, 8 * K4);
    let mut vmids = TagAllocator::vmids(8, 2).map_err(|e| format!("TagAllocator: {e}"))?;

    // Phase 1.
    let mut slot_a = TagSlot::new();
    let got = vmids
        .activate(0, &mut slot_a)
        .map_err(|e| format!("activate: {e}"))?;
    ensure!(!got.rollover, "the first VMID rolled over");
    let tag = got.tag;
    let mut a = vm8(r, tag, ip, pa)?;
    a.activate(&mut r.hw);
    a.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "VM A")?;
    let vttbr_a = a.registers()[1].1;
    let teardown_tlbis = teardown(r, &mut vmids, &mut slot_a, a, true)?;
    ensure!(
        teardown_tlbis == 0,
        "tearing VM A down issued {teardown_tlbis} TLBI(s)"
    );

    // VMs until the allocator rolls over, each run and torn down.
    let filler = pa + K4;
    let mut created = 0u32;
    let mut filler_tlbis = 0;
    let (mut slot_n, tag_n) = loop {
        let mut s = TagSlot::new();
        let got = vmids
            .activate(0, &mut s)
            .map_err(|e| format!("activate: {e}"))?;
        if got.rollover {
            break (s, got.tag);
        }
        ensure!(
            got.tag != tag,
            "VMID {tag} handed out again before the rollover"
        );
        r.hw.take_tlbi_log();
        let mut f = vm8(r, got.tag, ip, filler)?;
        f.activate(&mut r.hw);
        f.flush(&mut r.hw);
        filler_tlbis += r.hw.take_tlbi_log().len();
        expect_value(
            guest::read(ip),
            marker(filler),
            &format!("VM {created} (VMID {})", got.tag),
        )?;
        filler_tlbis += teardown(r, &mut vmids, &mut s, f, true)?;
        created += 1;
    };
    ensure!(
        filler_tlbis == 0,
        "creating, running and tearing down {created} VMs issued {filler_tlbis} TLBI(s)"
    );
    ensure!(
        tag_n == tag,
        "after the rollover the new VM got VMID {tag_n}, not the retired {tag}"
    );
    r.hw.take_tlbi_log();
    vmids.rollover_flush(&r.cpu.caps, &mut r.hw);
    let flush = r.hw.take_tlbi_log();
    ensure!(
        flush.len() == 1 && flush[0].op == TlbiOp::Alle1is,
        "the rollover flush was not one TLBI ALLE1IS"
    );
    let page_n = pa + 2 * K4;
    let mut n = vm8(r, tag_n, ip, page_n)?;
    n.activate(&mut r.hw);
    n.flush(&mut r.hw);
    let same_a = n.registers()[1].1 == vttbr_a;
    expect_value(guest::read(ip), marker(page_n), "VM N (VMID reused)")?;

    // Phase 2: VTTBR_EL2 keeps N's value from here on.
    let vttbr_n = n.registers()[1].1;
    let t = teardown(r, &mut vmids, &mut slot_n, n, false)?;
    ensure!(t == 0, "tearing VM N down issued {t} TLBI(s)");
    let (allocated, mut slot_m, tag_m) = fill_generation(&mut vmids);
    ensure!(
        tag_m == tag_n,
        "the second rollover gave VMID {tag_m}, not {tag_n}"
    );
    vmids.rollover_flush(&r.cpu.caps, &mut r.hw);
    let page_m = pa + 3 * K4;
    let mut m = vm8(r, tag_m, ip, page_m)?;
    ensure!(
        m.registers()[1].1 == vttbr_n,
        "VM M's VTTBR_EL2 {:#x} differs from N's {vttbr_n:#x} (the pool did not give the root back)",
        m.registers()[1].1
    );
    vmids
        .set_active(0, &slot_m)
        .map_err(|e| format!("set_active: {e}"))?;
    m.activate(&mut r.hw);
    m.flush(&mut r.hw);
    expect_value(
        guest::read(ip),
        marker(page_m),
        "VM M (VMID reused, VTTBR_EL2 unchanged)",
    )?;
    let t = teardown(r, &mut vmids, &mut slot_m, m, true)?;
    ensure!(t == 0, "tearing VM M down issued {t} TLBI(s)");
    Ok(format!(
        "VMID {tag}: VM A torn down with 0 TLBIs; {created} more VMs created, run and torn down with 0 TLBIs; rollover: 1 TLBI ALLE1IS; VMID {tag} reused by VM N{}, which read its own page (QEMU also flushed on phase 1's VTTBR_EL2 writes); phase 2 (VTTBR_EL2 never changed, {allocated} VMIDs allocated): VM M read its own page after the rollover flush; generation {}, {} rollovers",
        if same_a { " (same VTTBR_EL2 as A, root table reused)" } else { "" },
        vmids.generation(),
        vmids.rollovers()
    ))
}

/// (19) Control: phase 2 of `vmid-rollover-reuse` without the rollover
/// flush. VM A runs and is torn down (VTTBR_EL2 left as it was), the
/// generation's other VMIDs are allocated, and VMID 1 goes to VM M, whose
/// root table is A's: VTTBR_EL2 does not change, and nothing removed A's
/// entries.
pub fn control_vmid_reuse_no_flush(r: &mut Runner) -> Result<Control, String> {
    let (pa, ip) = (data(19), window(19));
    fill(pa, 2 * K4);
    let mut vmids = TagAllocator::vmids(8, 2).map_err(|e| format!("TagAllocator: {e}"))?;
    let mut slot_a = TagSlot::new();
    let tag = vmids
        .activate(0, &mut slot_a)
        .map_err(|e| format!("activate: {e}"))?
        .tag;
    let mut a = vm8(r, tag, ip, pa)?;
    a.activate(&mut r.hw);
    a.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "VM A")?;
    let vttbr_a = a.registers()[1].1;
    teardown(r, &mut vmids, &mut slot_a, a, false)?;
    let (_, mut slot_m, tag_m) = fill_generation(&mut vmids);
    ensure!(tag_m == tag, "the rollover gave VMID {tag_m}, not {tag}");
    // No rollover_flush here.
    let mut m = vm8(r, tag_m, ip, pa + K4)?;
    let same = m.registers()[1].1 == vttbr_a;
    vmids
        .set_active(0, &slot_m)
        .map_err(|e| format!("set_active: {e}"))?;
    m.activate(&mut r.hw);
    m.flush(&mut r.hw);
    let seen = guest::read(ip);
    r.hw.tlbi(TlbiOp::Alle1is, 0);
    r.hw.barrier(Barrier::DsbIsh);
    teardown(r, &mut vmids, &mut slot_m, m, true)?;
    Ok(match seen {
        guest::Outcome::Value(v) if v == marker(pa) => Control::Caught(format!(
            "VM M (VMID {tag_m}) read the dead VM A's page {pa:#x} through A's stale entry{}",
            if same { " (VTTBR_EL2 unchanged)" } else { "" }
        )),
        guest::Outcome::Value(v) if v == marker(pa + K4) => Control::NotCaught(format!(
            "VM M read its own page: {}",
            if same {
                "the CPU kept no entry of VM A although VTTBR_EL2 never changed"
            } else {
                "VTTBR_EL2 changed (M's root moved), and QEMU flushes its TLB on that"
            }
        )),
        o => return Err(format!("VM M's read: {o}")),
    })
}
