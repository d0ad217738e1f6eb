//! The guest's own stage 1 on, with tables vmsa builds: changed by the
//! host with vmsa's planner (EL1 TLBIs issued at EL2 under the guest's
//! VMID), or host-managed in elfuse's design (the host changes them with no
//! TLBI and the guest's shim runs the maintenance from X8..X11).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vmsa::request::{
    shim_execute, Regs, RequestSlot, X8_BROADCAST, X8_NONE, X8_RANGE, X8_SELECTIVE,
};
use vmsa::Effects;
use vmsa::{
    Asid, Capabilities, El1Stage1, Geometry, Granule, Ipa, MapOptions, Pa, Planner, Profile,
    Recorder, S2ap, Stage1Attrs, Stage2Attrs, Table, TlbiOp, Va,
};

use crate::guest::{self, Outcome};
use crate::pool::{self, PoolAlloc};
use crate::scenarios::{
    data, describe, ensure, expect_value, fill, ipa, marker, ok, window, Control, NoTlbi, Runner,
    K4, S2,
};

type S1 = Table<El1Stage1, PoolAlloc>;

/// MAIR_EL1: attribute 0 = Normal, Inner/Outer Write-Back (0xff).
const MAIR: u64 = 0xff;
/// Where the guest's stage 1 maps data: VA 0x10_0000_0000.. (39-bit VA
/// space; a level 3 table of its own).
const VA_DATA: u64 = 0x10_0000_0000;
/// Data pages the stage 2 of these scenarios maps (IPA window -> PA).
const DATA_PAGES: u64 = 128;

/// The guest's data at stage 1: Normal (MAIR index 0), EL1 read/write,
/// never executable, non-global.
const DATA: Stage1Attrs = Stage1Attrs::normal_rw(0);

fn sum_markers(pas: impl Iterator<Item = u64>) -> u64 {
    pas.map(marker).fold(0u64, |a, b| a.wrapping_add(b))
}

/// A VM whose guest runs with its own stage 1 on: the stage 2 table maps
/// the guest program, the table pool (where the stage 1 tables live, at
/// IPA == PA, read-only) and `DATA_PAGES` pages of data at `window(n)`;
/// the stage 1 table maps the guest program at VA == IPA (executable,
/// read-only) and, from `VA_DATA`, what the scenario maps.
struct Guest {
    s2: S2,
    s1: S1,
    asid: u16,
    ip: u64,
    pa: u64,
}

impl Guest {
    fn new(r: &mut Runner, n: u64, asid: u16) -> Result<Guest, String> {
        ensure!(
            r.cpu.caps.asid_bits == 16,
            "the CPU has {}-bit ASIDs; these scenarios use 16-bit ones",
            r.cpu.caps.asid_bits
        );
        let (pa, ip) = (data(n), window(n));
        fill(pa, DATA_PAGES * K4);
        let mut s2 = r.vm(n as u16)?;
        let pool = PoolAlloc::base();
        let pool_end = pool + (pool::PAGES as u64) * K4;
        ok(
            s2.map(
                ipa(pool..pool_end),
                Pa(pool),
                Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
                MapOptions::default(),
                &mut r.hw,
            ),
            "stage 2: map the table pool",
        )?;
        ok(
            s2.map(
                ipa(ip..ip + DATA_PAGES * K4),
                Pa(pa),
                Stage2Attrs::RAM,
                MapOptions::PAGES,
                &mut r.hw,
            ),
            "stage 2: map data",
        )?;
        s2.activate(&mut r.hw);
        s2.flush(&mut r.hw);

        let geometry = ok(Geometry::stage1(Granule::K4, 39), "stage 1 geometry")?;
        let mut s1 = ok(
            Table::new(El1Stage1::new(Asid(asid)), geometry, PoolAlloc, &mut r.hw),
            "stage 1 Table::new",
        )?;
        let (start, end) = crate::boot::guest_code();
        let code = Stage1Attrs {
            pxn: false,
            ..DATA.read_only()
        };
        ok(
            s1.map(
                Va(start)..Va(end),
                Ipa(start),
                code,
                MapOptions::PAGES,
                &mut r.hw,
            ),
            "stage 1: map the guest program",
        )?;
        Ok(Guest {
            s2,
            s1,
            asid,
            ip,
            pa,
        })
    }

    /// Maps `pages` pages from `VA_DATA + first * 4K` to the data pages
    /// from `ipa_page` (an index into the window).
    fn map(
        &mut self,
        r: &mut Runner,
        first: u64,
        pages: u64,
        ipa_page: u64,
        replace: bool,
    ) -> Result<(), String> {
        let va = VA_DATA + first * K4;
        ok(
            self.s1.map(
                Va(va)..Va(va + pages * K4),
                Ipa(self.ip + ipa_page * K4),
                DATA,
                MapOptions {
                    blocks: false,
                    replace,
                },
                &mut r.hw,
            ),
            "stage 1 map",
        )
        .map(|_| ())
    }

    /// Loads TCR_EL1 / TTBR0_EL1 (the stage 1 table's `activate`) and turns
    /// the guest's MMU on.
    fn start(&mut self, r: &mut Runner) {
        self.s1.activate(&mut r.hw);
        self.s1.flush(&mut r.hw);
        guest::stage1_on(MAIR);
    }

    /// The PA the guest reaches through data page `ipa_page` of the window.
    fn pa_of(&self, ipa_page: u64) -> u64 {
        self.pa + ipa_page * K4
    }

    /// Turns the guest's MMU off and tears both tables down.
    fn finish(self, r: &mut Runner) {
        guest::stage1_off();
        // Whatever the scenario left cached, before the pages go.
        r.hw.tlbi(TlbiOp::Vmalls12e1is, 0);
        r.hw.barrier(vmsa::Barrier::DsbIsh);
        let Guest { s2, mut s1, .. } = self;
        s1.set_invalidator(Box::new(Planner::default()));
        s1.destroy(&mut r.hw);
        r.destroy(s2);
    }
}

/// Runs `body` on a new `Guest` and tears it down whatever the result.
fn with_guest<T>(
    r: &mut Runner,
    n: u64,
    asid: u16,
    body: impl FnOnce(&mut Runner, &mut Guest) -> Result<T, String>,
) -> Result<T, String> {
    let mut g = Guest::new(r, n, asid)?;
    let result = body(r, &mut g);
    g.finish(r);
    result
}

/// (15) The guest runs with stage 1 on, through tables vmsa built: it reads
/// a VA; the host remaps that VA to another IPA with vmsa's planner (the
/// EL1 by-VA TLBIs, with the ASID, issued at EL2 with the guest's VMID in
/// VTTBR_EL2) and the guest reads the new data; the host unmaps a VA and
/// the guest takes a stage 1 translation fault at EL1; the host remaps the
/// IPA underneath at stage 2 (vmsa's by-IPA sequence, which must also
/// remove the combined stage 1+2 entry) and the guest reads the new page
/// through the same VA.
pub fn guest_stage1(r: &mut Runner) -> Result<String, String> {
    let caps = Capabilities {
        tlbi_range: r.cpu.caps.tlbi_range,
        ttl: r.cpu.caps.ttl,
        ..Default::default()
    };
    with_guest(r, 15, 0x35, |r, g| {
        g.s1.set_invalidator(Box::new(Planner::new(caps, Profile::NATIVE)));
        g.map(r, 0, 4, 0, false)?;
        g.start(r);
        for i in 0..4 {
            expect_value(
                guest::read(VA_DATA + i * K4),
                marker(g.pa_of(i)),
                "read through stage 1 + 2",
            )?;
        }
        // Remap VA page 0 from IPA page 0 to IPA page 8.
        r.hw.take_tlbi_log();
        g.map(r, 0, 1, 8, true)?;
        g.s1.flush(&mut r.hw);
        let remap_log = r.hw.take_tlbi_log();
        ensure!(
            !remap_log.is_empty(),
            "no TLBI for a stage 1 remap of a page the guest read"
        );
        for e in &remap_log {
            ensure!(
                matches!(
                    e.op,
                    TlbiOp::Vae1is
                        | TlbiOp::Vale1is
                        | TlbiOp::Rvae1is
                        | TlbiOp::Rvale1is
                        | TlbiOp::Vmalle1is
                ),
                "stage 1 remap issued tlbi {}",
                e.op
            );
            ensure!(
                e.op == TlbiOp::Vmalle1is || e.operand >> 48 == u64::from(g.asid),
                "tlbi {} {:#x} does not name ASID {:#x}",
                e.op,
                e.operand,
                g.asid
            );
            ensure!(
                e.vttbr == g.s2.registers()[1].1,
                "tlbi {} issued with VTTBR_EL2 {:#x}, not the guest's",
                e.op,
                e.vttbr
            );
        }
        expect_value(
            guest::read(VA_DATA),
            marker(g.pa_of(8)),
            "read after the stage 1 remap",
        )?;
        expect_value(
            guest::read(VA_DATA + K4),
            marker(g.pa_of(1)),
            "its neighbour",
        )?;

        // Unmap VA page 1: a stage 1 translation fault, taken to EL1.
        r.hw.take_tlbi_log();
        ok(
            g.s1.unmap(Va(VA_DATA + K4)..Va(VA_DATA + 2 * K4), &mut r.hw),
            "stage 1 unmap",
        )?;
        g.s1.flush(&mut r.hw);
        let unmap_log = r.hw.take_tlbi_log();
        let fault = match guest::read(VA_DATA + K4) {
            // EC 0x25: data abort from the current EL; DFSC 0b0001LL:
            // translation fault at level LL.
            o @ Outcome::El1 { esr, far, .. }
                if esr >> 26 == 0x25 && esr & 0x3c == 0x04 && far == VA_DATA + K4 =>
            {
                o
            }
            o => return Err(format!("read after the stage 1 unmap: expected a stage 1 translation fault at EL1, got {o}")),
        };

        // Stage 2 remaps IPA page 8 (under VA page 0) to PA page 9, with the
        // by-IPA sequence (IPAS2E1IS, DSB, VMALLE1IS).
        g.s2.set_invalidator(Box::new(vmsa::Basic::default()));
        r.hw.take_tlbi_log();
        ok(
            g.s2.map(
                ipa(g.ip + 8 * K4..g.ip + 9 * K4),
                Pa(g.pa_of(9)),
                Stage2Attrs::RAM,
                MapOptions {
                    blocks: false,
                    replace: true,
                },
                &mut r.hw,
            ),
            "stage 2 remap",
        )?;
        g.s2.flush(&mut r.hw);
        let s2_log = r.hw.take_tlbi_log();
        expect_value(
            guest::read(VA_DATA),
            marker(g.pa_of(9)),
            "read through stage 1 after the stage 2 remap",
        )?;
        g.s2.set_invalidator(Box::new(Planner::default()));
        Ok(format!(
            "ASID {:#x} VMID {}: stage 1 remap ({}) seen; unmap ({}) -> {fault}; stage 2 remap under it ({}) seen",
            g.asid,
            g.s2.regime().vmid.0,
            describe(&remap_log),
            describe(&unmap_log),
            describe(&s2_log)
        ))
    })
}

/// One round of the host-managed scenario: the guest has read `pages`
/// pages from VA page `first` (mapped to IPA pages `old..`); it calls the
/// host, which remaps them to IPA pages `new..` without any TLBI, adds the
/// change to the vCPU's request slot and returns the request in X8..X11
/// (`drop`: returns X8 = 0 instead); the guest's shim runs it and the guest
/// reads the pages again.
struct Round {
    first: u64,
    pages: u64,
    old: u64,
    new: u64,
    /// The capabilities the host encodes for (`take`).
    range: bool,
    /// X11: ask the shim for `IC IALLU` too.
    exec: bool,
    /// The X8 the slot must produce.
    want_x8: u64,
}

struct RoundResult {
    /// The sum of what the guest read after the call.
    seen: u64,
    old_sum: u64,
    new_sum: u64,
    regs: Regs,
    host_tlbis: usize,
    shim: String,
}

fn host_managed_round(
    r: &mut Runner,
    g: &mut Guest,
    slot: &mut RequestSlot,
    round: &Round,
    drop: bool,
) -> Result<RoundResult, String> {
    let va = VA_DATA + round.first * K4;
    let old_sum = sum_markers((0..round.pages).map(|i| g.pa_of(round.old + i)));
    let new_sum = sum_markers((0..round.pages).map(|i| g.pa_of(round.new + i)));
    // The guest uses the pages: their translations are cached.
    expect_value(
        guest::read_many(va, round.pages, K4),
        old_sum,
        "read before the call",
    )?;

    let caps = Capabilities {
        tlbi_range: round.range,
        ..Default::default()
    };
    let mut failure: Option<String> = None;
    let mut regs = Regs::default();
    let mut host_tlbis = 0;
    r.hw.take_tlbi_log();
    let o = guest::run_with_calls([va, 4, round.pages, K4], |_x| {
        // The host serves the call: unmap, then map to the new IPA pages
        // (the second operation writes into entries the first left invalid
        // and unflushed; the table's invalidator emits nothing for either).
        let step = |r: &mut Runner, g: &mut Guest, slot: &mut RequestSlot| -> Result<(), String> {
            let report = ok(
                g.s1.unmap(Va(va)..Va(va + round.pages * K4), &mut r.hw),
                "host unmap",
            )?;
            slot.add_changes(&report.changes, round.exec);
            let report = ok(
                g.s1.map(
                    Va(va)..Va(va + round.pages * K4),
                    Ipa(g.ip + round.new * K4),
                    DATA,
                    MapOptions::PAGES,
                    &mut r.hw,
                ),
                "host map",
            )?;
            slot.add_changes(&report.changes, round.exec);
            // The host's exit path: its stores complete before the vCPU
            // runs again.
            r.hw.barrier(vmsa::Barrier::DsbIsh);
            Ok(())
        };
        if let Err(e) = step(r, g, slot) {
            failure = Some(e);
            return None;
        }
        host_tlbis = r.hw.take_tlbi_log().len();
        regs = slot.take(&caps, g.asid);
        Some(if drop {
            [X8_NONE, 0, 0, 0]
        } else {
            [regs.x8, regs.x9, regs.x10, regs.x11]
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    // Back in the host after the shim ran: what the table kept outstanding
    // is done (its invalidator emits nothing) and detached pages go.
    g.s1.flush(&mut r.hw);
    let after = r.hw.take_tlbi_log();
    ensure!(
        after.is_empty(),
        "the host's flush issued TLBIs: {}",
        describe(&after)
    );
    let seen = match o {
        Outcome::Value(v) => v,
        o => return Err(format!("the guest's run with the call: {o}")),
    };
    // What the shim runs for these registers, as vmsa describes it.
    let mut rec = Recorder::new();
    shim_execute(&regs, &caps, g.asid, &mut rec).map_err(|e| format!("shim_execute: {e}"))?;
    let shim = rec
        .log()
        .iter()
        .map(|e| {
            format!("{e}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| s.starts_with("tlbi") || s.starts_with("ic"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(RoundResult {
        seen,
        old_sum,
        new_sum,
        regs,
        host_tlbis,
        shim,
    })
}

const ROUNDS: [Round; 4] = [
    // One page: X8 = 3, X10 = 1.
    Round {
        first: 0,
        pages: 1,
        old: 0,
        new: 32,
        range: false,
        exec: false,
        want_x8: X8_SELECTIVE,
    },
    // Three pages without range operations: X8 = 3, X10 = 3.
    Round {
        first: 4,
        pages: 3,
        old: 4,
        new: 36,
        range: false,
        exec: false,
        want_x8: X8_SELECTIVE,
    },
    // Eight pages with FEAT_TLBIRANGE: X8 = 4 (one TLBI RVAE1IS).
    Round {
        first: 8,
        pages: 8,
        old: 8,
        new: 40,
        range: true,
        exec: false,
        want_x8: X8_RANGE,
    },
    // Twenty pages without ranges: over 16, X8 = 1 (TLBI VMALLE1IS); X11 = 1
    // (set by the host here to run the shim's IC IALLU path).
    Round {
        first: 16,
        pages: 20,
        old: 16,
        new: 64,
        range: false,
        exec: true,
        want_x8: X8_BROADCAST,
    },
];

/// The stage 1 of the host-managed scenarios: the guest program and 36
/// data pages from VA_DATA (IPA pages 0..36), plus an anchor page at VA
/// page 100 so that the level 3 table stays when the rounds unmap.
fn host_managed_guest(r: &mut Runner, g: &mut Guest) -> Result<(), String> {
    g.s1.set_invalidator(Box::new(NoTlbi));
    g.map(r, 0, 36, 0, false)?;
    g.map(r, 100, 1, 100, false)?;
    g.start(r);
    Ok(())
}

/// (16) Host-managed guest stage 1 (elfuse's design): the host changes the
/// guest's stage 1 with no TLBI of its own (the table's invalidator emits
/// nothing), records the change in the vCPU's `RequestSlot`, and hands the
/// request to the guest in X8..X11 when the call returns; the guest's shim
/// runs it (TLBI VAE1IS / RVAE1IS / VMALLE1IS, DSB ISH, IC IALLU when X11,
/// ISB) and the guest then reads the new pages.
pub fn host_managed_stage1(r: &mut Runner) -> Result<String, String> {
    if !r.cpu.caps.tlbi_range {
        return Err("FEAT_TLBIRANGE missing: the range round cannot run".into());
    }
    with_guest(r, 16, 0x61, |r, g| {
        host_managed_guest(r, g)?;
        let mut slot = RequestSlot::new();
        let mut notes = Vec::new();
        for round in &ROUNDS {
            let res = host_managed_round(r, g, &mut slot, round, false)?;
            ensure!(
                res.host_tlbis == 0,
                "the host issued {} TLBI(s) while serving the call",
                res.host_tlbis
            );
            ensure!(
                res.regs.x8 == round.want_x8 && res.regs.x11 == round.exec as u64,
                "{} page(s): the slot gave {:?}, expected X8 = {}, X11 = {}",
                round.pages,
                res.regs,
                round.want_x8,
                round.exec as u64
            );
            if res.seen != res.new_sum {
                return Err(format!(
                    "{} page(s), X8..X11 = {:?}: the guest read sum {:#x} after its shim ran, new pages {:#x}, old {:#x}",
                    round.pages, res.regs, res.seen, res.new_sum, res.old_sum
                ));
            }
            notes.push(format!(
                "{} page(s): X8={} X9={:#x} X10={} X11={} ({})",
                round.pages, res.regs.x8, res.regs.x9, res.regs.x10, res.regs.x11, res.shim
            ));
        }
        Ok(format!(
            "no host TLBI; each remap seen after the guest's shim: {}",
            notes.join("; ")
        ))
    })
}

/// (17) Control: the host drops the request (X8 = 0). The guest's shim does
/// nothing and the guest reads the stale stage 1 translation.
pub fn control_shim_dropped(r: &mut Runner) -> Result<Control, String> {
    with_guest(r, 17, 0x62, |r, g| {
        host_managed_guest(r, g)?;
        let mut slot = RequestSlot::new();
        let res = host_managed_round(r, g, &mut slot, &ROUNDS[0], true)?;
        let x8 = res.regs.x8;
        Ok(if res.seen == res.old_sum {
            Control::Caught(format!(
                "the request (X8={x8}) was dropped: the guest read the old page ({:#x}) after the host remapped it",
                res.seen
            ))
        } else if res.seen == res.new_sum {
            Control::NotCaught(
                "the guest read the new page although no TLBI ran: the CPU kept no stale stage 1 entry".into(),
            )
        } else {
            Control::NotCaught(format!("the guest read {:#x}, neither page", res.seen))
        })
    })
}
