//! Sequences of vmsa operations that run twice: in the firmware, on the
//! CPU (QEMU) with a guest reading between the operations, and in
//! `firmware/host-check`, on the host, into vmsa's model (`vmsa-model`),
//! whose adversarial TLB answers the same reads. Both sides print the TLBIs
//! the sequence issued, in order with their operands, and their counts per
//! kind; `scripts/qemu-test` compares the two.
//!
//! This file is compiled into both programs (host-check includes it by
//! path), so it uses nothing but `core`, `alloc` and `vmsa`. What differs
//! between the two sides is behind [`Host`]. Addresses, VMIDs and the
//! order of operations are fixed here; the capabilities the planner is
//! given (FEAT_TLBIRANGE, FEAT_TTL) and the guest program's pages are the
//! firmware's, which it prints and host-check is given.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use vmsa::{
    Barrier, Capabilities, Effects, Geometry, Granule, Ipa, MapOptions, Pa, Planner, Profile, S2ap,
    Stage2, Stage2Attrs, SysReg, Table, TableAllocator, TlbiOp, Vmid,
};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;

/// What a guest read reached.
#[derive(Clone, PartialEq, Eq)]
pub enum Seen {
    /// The page at this PA (the firmware: the marker the host wrote there;
    /// the model: the translation it picked).
    Page(u64),
    /// A stage 2 translation fault.
    Fault,
    /// Anything else, described.
    Other(String),
}

impl core::fmt::Debug for Seen {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Seen::Page(pa) => write!(f, "the page at PA {pa:#x}"),
            Seen::Fault => write!(f, "a stage 2 translation fault"),
            Seen::Other(what) => write!(f, "{what}"),
        }
    }
}

/// One side: the CPU or the model.
pub trait Host {
    /// Where the effects go.
    type Fx: Effects;
    /// Table memory.
    type Alloc: TableAllocator;
    /// The effects of the operations.
    fn fx(&mut self) -> &mut Self::Fx;
    /// Memory for a new table.
    fn table_memory(&mut self) -> Self::Alloc;
    /// What the planner may use: FEAT_TLBIRANGE and FEAT_TTL only.
    fn caps(&self) -> Capabilities;
    /// The guest program's pages, mapped read-only at IPA == PA in each VM.
    fn code(&self) -> Range<u64>;
    /// Prepares the data pages `pa..pa + len` (the firmware writes each
    /// page's marker).
    fn fill(&mut self, pa: u64, len: u64);
    /// The guest of VM `vmid`, whose stage 2 is loaded, reads `ipa`.
    fn read(&mut self, vmid: u16, ipa: u64) -> Seen;
}

/// The sequences, by name.
pub const NAMES: [&str; 3] = ["unmap", "remap", "big-unmap"];

/// Runs sequence `name` on `h`; `Ok` carries a short description.
pub fn run<H: Host>(name: &str, h: &mut H) -> Result<String, String> {
    match name {
        "unmap" => unmap(h),
        "remap" => remap(h),
        "big-unmap" => big_unmap(h),
        _ => Err(format!("no sequence {name}")),
    }
}

/// The TLBIs of a run, in order: `op operand, ...`, or `none`.
pub fn format_log(ops: &[(TlbiOp, u64)]) -> String {
    if ops.is_empty() {
        return "none".into();
    }
    ops.iter()
        .map(|(op, x)| format!("{op} {x:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Their counts per kind, in `TlbiOp::ALL` order: `op=n ...`, or `none`.
pub fn format_counts(ops: &[(TlbiOp, u64)]) -> String {
    let counts: Vec<String> = TlbiOp::ALL
        .iter()
        .filter_map(|k| {
            let n = ops.iter().filter(|(op, _)| op == k).count();
            (n > 0).then(|| format!("{k}={n}"))
        })
        .collect();
    if counts.is_empty() {
        "none".into()
    } else {
        counts.join(" ")
    }
}

/// The firmware's data regions 20.. (`scenarios::data`) and IPA windows.
fn data(n: u64) -> u64 {
    0x4800_0000 + n * (16 << 20)
}

fn window(n: u64) -> u64 {
    0x8000_0000 + n * (256 << 20)
}

fn ipa(r: Range<u64>) -> Range<Ipa> {
    Ipa(r.start)..Ipa(r.end)
}

fn ok<T>(r: Result<T, vmsa::Error>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e:?}"))
}

fn expect<H: Host>(h: &mut H, vmid: u16, at: u64, want: Seen) -> Result<(), String> {
    let seen = h.read(vmid, at);
    if seen == want {
        Ok(())
    } else {
        Err(format!(
            "read of IPA {at:#x}: expected {want:?}, got {seen:?}"
        ))
    }
}

type Vm<H> = Table<Stage2, <H as Host>::Alloc>;

/// A VM (40-bit IPA, 4 KiB granule) with the planner given the host's
/// capabilities, mapping the guest program.
fn vm<H: Host>(h: &mut H, vmid: u16) -> Result<Vm<H>, String> {
    let geometry = ok(Geometry::stage2(Granule::K4, 40), "geometry")?;
    let mem = h.table_memory();
    let mut t = ok(
        Table::new(Stage2::new(Vmid(vmid)), geometry, mem, h.fx()),
        "Table::new",
    )?;
    t.set_invalidator(Box::new(Planner::new(h.caps(), Profile::NATIVE)));
    let code = h.code();
    ok(
        t.map(
            ipa(code.clone()),
            Pa(code.start),
            Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
            MapOptions::PAGES,
            h.fx(),
        ),
        "map guest code",
    )?;
    Ok(t)
}

/// The end of a VM: PE 0 parks (VTTBR_EL2 = 0), the VMID is retired (the
/// firmware's checks end with TLBI ALLE1IS, the model's with a new
/// machine) and the tables go, with no TLBI.
fn finish<H: Host>(h: &mut H, mut t: Vm<H>) {
    h.fx().write_sysreg(SysReg::VttbrEl2, 0);
    h.fx().barrier(Barrier::Isb);
    t.retire();
    t.destroy(h.fx());
}

const REPLACE: MapOptions = MapOptions {
    blocks: false,
    replace: true,
};

/// 64 pages; the guest reads five; three unmap operations (one page, two
/// pages, one page) and one flush; the unmapped pages fault, their
/// neighbours do not.
fn unmap<H: Host>(h: &mut H) -> Result<String, String> {
    const VMID: u16 = 201;
    let (pa, ip) = (data(20), window(20));
    h.fill(pa, 64 * K4);
    let mut t = vm(h, VMID)?;
    ok(
        t.map(
            ipa(ip..ip + 64 * K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::PAGES,
            h.fx(),
        ),
        "map",
    )?;
    t.activate(h.fx());
    t.flush(h.fx());
    for i in [0, 5, 6, 7, 40] {
        expect(h, VMID, ip + i * K4, Seen::Page(pa + i * K4))?;
    }
    for (a, b) in [(5, 6), (6, 8), (40, 41)] {
        ok(t.unmap(ipa(ip + a * K4..ip + b * K4), h.fx()), "unmap")?;
    }
    t.flush(h.fx());
    for i in [5, 6, 7, 40] {
        expect(h, VMID, ip + i * K4, Seen::Fault)?;
    }
    for i in [4, 8, 39, 41] {
        expect(h, VMID, ip + i * K4, Seen::Page(pa + i * K4))?;
    }
    finish(h, t);
    Ok("64 pages, 4 unmapped in 3 operations, 1 flush".into())
}

/// 16 pages; the guest reads them; two pages remapped elsewhere (break-
/// before-make inside the operation), one page made read-only (left to the
/// flush); the guest sees the new pages and can still read the protected
/// one.
fn remap<H: Host>(h: &mut H) -> Result<String, String> {
    const VMID: u16 = 202;
    let (pa, ip) = (data(21), window(21));
    h.fill(pa, 64 * K4);
    let mut t = vm(h, VMID)?;
    ok(
        t.map(
            ipa(ip..ip + 16 * K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::PAGES,
            h.fx(),
        ),
        "map",
    )?;
    t.activate(h.fx());
    t.flush(h.fx());
    for i in 0..16 {
        expect(h, VMID, ip + i * K4, Seen::Page(pa + i * K4))?;
    }
    ok(
        t.map(
            ipa(ip + 3 * K4..ip + 5 * K4),
            Pa(pa + 32 * K4),
            Stage2Attrs::RAM,
            REPLACE,
            h.fx(),
        ),
        "remap",
    )?;
    t.flush(h.fx());
    ok(
        t.protect(
            ipa(ip + 9 * K4..ip + 10 * K4),
            Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
            h.fx(),
        ),
        "protect",
    )?;
    t.flush(h.fx());
    expect(h, VMID, ip + 3 * K4, Seen::Page(pa + 32 * K4))?;
    expect(h, VMID, ip + 4 * K4, Seen::Page(pa + 33 * K4))?;
    expect(h, VMID, ip + 2 * K4, Seen::Page(pa + 2 * K4))?;
    expect(h, VMID, ip + 5 * K4, Seen::Page(pa + 5 * K4))?;
    expect(h, VMID, ip + 9 * K4, Seen::Page(pa + 9 * K4))?;
    finish(h, t);
    Ok("16 pages, 2 remapped, 1 made read-only".into())
}

/// 4 MiB of pages and a 2 MiB block; the guest reads a sample; most of
/// each 2 MiB of pages is unmapped (one page kept in each, so the leaf
/// tables stay: range TLBIs when the CPU has them), then the block, then
/// everything (the leaf tables go).
fn big_unmap<H: Host>(h: &mut H) -> Result<String, String> {
    const VMID: u16 = 203;
    let (pa, ip) = (data(22), window(22));
    h.fill(pa, 3 * M2);
    let mut t = vm(h, VMID)?;
    ok(
        t.map(
            ipa(ip..ip + 2 * M2),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::PAGES,
            h.fx(),
        ),
        "map pages",
    )?;
    ok(
        t.map(
            ipa(ip + 2 * M2..ip + 3 * M2),
            Pa(pa + 2 * M2),
            Stage2Attrs::RAM,
            MapOptions::default(),
            h.fx(),
        ),
        "map block",
    )?;
    t.activate(h.fx());
    t.flush(h.fx());
    let page = |i: u64| (ip + i * K4, pa + i * K4);
    for i in [0, 100, 511, 512, 1000, 1023, 1024, 1300, 1535] {
        let (at, to) = page(i);
        expect(h, VMID, at, Seen::Page(to))?;
    }
    ok(
        t.unmap(ipa(ip..ip + M2 - K4), h.fx()),
        "unmap first 2 MiB but its last page",
    )?;
    ok(
        t.unmap(ipa(ip + M2..ip + 2 * M2 - K4), h.fx()),
        "unmap second 2 MiB but its last page",
    )?;
    t.flush(h.fx());
    for i in [0, 100, 510, 512, 1000, 1022] {
        expect(h, VMID, page(i).0, Seen::Fault)?;
    }
    for i in [511, 1023, 1024, 1535] {
        let (at, to) = page(i);
        expect(h, VMID, at, Seen::Page(to))?;
    }
    ok(
        t.unmap(ipa(ip + 2 * M2..ip + 3 * M2), h.fx()),
        "unmap the block",
    )?;
    t.flush(h.fx());
    for i in [1024, 1300, 1535] {
        expect(h, VMID, page(i).0, Seen::Fault)?;
    }
    expect(h, VMID, page(511).0, Seen::Page(page(511).1))?;
    ok(t.unmap(ipa(ip..ip + 3 * M2), h.fx()), "unmap everything")?;
    t.flush(h.fx());
    for i in [511, 1023] {
        expect(h, VMID, page(i).0, Seen::Fault)?;
    }
    finish(h, t);
    Ok("4 MiB of pages and a 2 MiB block: 2 ranges, the block, then everything".into())
}
