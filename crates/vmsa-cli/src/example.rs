//! `vmsa example`: a guest's stage 2 table, changed while live.

use std::error::Error;
use std::io::Write;

use vmsa::{
    Arena, ChangeReport, Effect, Geometry, Granule, Ipa, MapOptions, Pa, Recorder, S2ap, Stage2,
    Stage2Attrs, Table, Vmid,
};

const K: u64 = 4096;
const RAM_IPA: u64 = 0x4000_0000;
const RAM_PA: u64 = 0x1_0000_0000;
const UART: u64 = 0x0900_0000;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Prints effects, folding runs of stores into one table page into one
/// line unless `all` is set.
fn print_effects(out: &mut impl Write, log: &[Effect], all: bool) -> Result<()> {
    let mut i = 0;
    while i < log.len() {
        if let (false, Effect::Store { pa, .. }) = (all, log[i]) {
            let page = pa.0 & !(K - 1);
            let run = log[i..]
                .iter()
                .take_while(|e| matches!(e, Effect::Store { pa, .. } if pa.0 & !(K - 1) == page))
                .count();
            if run > 4 {
                writeln!(out, "    {}", log[i])?;
                writeln!(
                    out,
                    "    ... {} more stores filling table page {page:#x}",
                    run - 1
                )?;
                i += run;
                continue;
            }
        }
        if let (false, Effect::Tlbi { op, .. }) = (all, log[i]) {
            let run = log[i..]
                .iter()
                .take_while(|e| matches!(e, Effect::Tlbi { op: o, .. } if *o == op))
                .count();
            if run > 4 {
                writeln!(out, "    {}", log[i])?;
                let last = match log[i + run - 1] {
                    Effect::Tlbi { operand, .. } => operand,
                    _ => 0,
                };
                writeln!(
                    out,
                    "    ... {} more tlbi {op}, the last {last:#x}",
                    run - 1
                )?;
                i += run;
                continue;
            }
        }
        writeln!(out, "    {}", log[i])?;
        i += 1;
    }
    Ok(())
}

fn print_report(out: &mut impl Write, r: &ChangeReport) -> Result<()> {
    if r.is_empty() {
        writeln!(out, "  report: no change")?;
    }
    for c in &r.changes {
        writeln!(out, "  report: {c}")?;
    }
    Ok(())
}

struct Session<'o, O: Write> {
    out: &'o mut O,
    fx: Recorder,
    all: bool,
    step: usize,
}

impl<O: Write> Session<'_, O> {
    fn show(
        &mut self,
        title: &str,
        report: Option<&ChangeReport>,
        table: &Table<Stage2, Arena>,
    ) -> Result<()> {
        self.step += 1;
        writeln!(self.out, "\n== {}. {title}", self.step)?;
        if let Some(r) = report {
            print_report(self.out, r)?;
        }
        let log = self.fx.take();
        writeln!(self.out, "  effects ({}):", log.len())?;
        print_effects(self.out, &log, self.all)?;
        write!(self.out, "  tables:\n{}", indent(&table.dump().to_string()))?;
        Ok(())
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Runs the example, writing to `out`.
pub fn run(all_stores: bool, out: &mut impl Write) -> Result<()> {
    let mut s = Session {
        out,
        fx: Recorder::new(),
        all: all_stores,
        step: 0,
    };
    writeln!(
        s.out,
        "vmsa example: the stage 2 table of one guest (VMID 1, 40-bit IPA, 4 KiB granule)"
    )?;
    let geometry = Geometry::stage2(Granule::K4, 40)?;
    let mut t = Table::new(
        Stage2::new(Vmid(1)),
        geometry,
        Arena::new(Pa(0x8000_0000), 64),
        &mut s.fx,
    )?;

    let ram = Ipa(RAM_IPA)..Ipa(RAM_IPA + (4 << 20));
    let r = t.map(
        ram,
        Pa(RAM_PA),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut s.fx,
    )?;
    s.show(
        "map 4 MiB of guest RAM (two 2 MiB blocks; the table is not live yet)",
        Some(&r),
        &t,
    )?;
    let r = t.map(
        Ipa(UART)..Ipa(UART + K),
        Pa(UART),
        Stage2Attrs::DEVICE,
        MapOptions::default(),
        &mut s.fx,
    )?;
    s.show("map the UART page as Device-nGnRE", Some(&r), &t)?;

    t.activate(&mut s.fx);
    s.show(
        "activate: VTCR_EL2 and VTTBR_EL2; from now on vCPUs may walk it",
        None,
        &t,
    )?;

    let page = |n: u64| Ipa(RAM_IPA + n * K)..Ipa(RAM_IPA + (n + 1) * K);
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    let r = t.protect(page(3), ro, &mut s.fx)?;
    s.show(
        "write-protect one page (dirty logging): the live block is split with break-before-make",
        Some(&r),
        &t,
    )?;
    let replace = MapOptions {
        blocks: true,
        replace: true,
    };
    let r = t.map(
        page(5),
        Pa(0x2_0000_0000),
        Stage2Attrs::RAM,
        replace,
        &mut s.fx,
    )?;
    s.show(
        "move one page to another frame: the output changes, so break-before-make",
        Some(&r),
        &t,
    )?;
    let r = t.unmap(page(7), &mut s.fx)?;
    s.show(
        "balloon out one page: written invalid, left for the flush to invalidate",
        Some(&r),
        &t,
    )?;
    t.flush(&mut s.fx);
    s.show(
        "flush: invalidate what the unmap may have left in the TLBs",
        None,
        &t,
    )?;

    t.protect(page(3), Stage2Attrs::RAM, &mut s.fx)?;
    t.map(
        page(5),
        Pa(RAM_PA + 5 * K),
        Stage2Attrs::RAM,
        replace,
        &mut s.fx,
    )?;
    t.map(
        page(7),
        Pa(RAM_PA + 7 * K),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut s.fx,
    )?;
    t.flush(&mut s.fx);
    s.show("put the three pages back as they were, and flush", None, &t)?;
    let r = t.collapse(Ipa(RAM_IPA)..Ipa(RAM_IPA + (2 << 20)), &mut s.fx)?;
    s.show(
        "collapse the uniform table back into a 2 MiB block (break-before-make; the table page is released after the TLBI)",
        Some(&r),
        &t,
    )?;
    let r = t.unmap(Ipa(UART)..Ipa(UART + K), &mut s.fx)?;
    t.flush(&mut s.fx);
    s.show(
        "unmap the UART and flush: its empty tables are released after the invalidation",
        Some(&r),
        &t,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn example_shows_break_before_make_and_releases() {
        let mut out = Vec::new();
        super::run(false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // The split of the live block: invalid, DSB, the planner's TLBIs
        // (by IPA then VMALLE1IS, or VMALLS12E1IS when cheaper), DSB, then
        // the table descriptor.
        assert!(
            text.contains("tlbi    ipas2le1is, 0x40000") || text.contains("tlbi    vmalls12e1is"),
            "{text}"
        );
        assert!(text.contains("tlbi    vmalle1is"));
        assert!(text.contains("msr     vttbr_el2, 0x1000080000000"));
        assert!(text.contains("page    release"));
        assert!(text.contains("break-before-make done"));
        assert!(
            text.contains("L2[  0..  1] 0x000040000000 2 blocks"),
            "blocks back after collapse:\n{text}"
        );
    }
}
