//! `vmsa check`: run a Casemate trace through the model; `vmsa trace-gen`:
//! write generated traces.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use vmsa_model::trace;
use vmsa_model::{Config, ViolationKind};

/// Exit status: the trace is clean.
pub const CLEAN: i32 = 0;
/// Exit status: the model found violations.
pub const VIOLATIONS: i32 = 1;
/// Exit status: the trace could not be opened or read, or had no records.
pub const UNREADABLE: i32 = 2;

/// Checks the trace in `file` on a model of `pes` PEs (with `locks`,
/// Casemate's lock discipline too), printing each
/// violation and a summary to `out` (with `json`, one JSON object: see
/// [`JsonReport`]) and errors to standard error. Returns the exit status.
pub fn run(file: &Path, pes: usize, locks: bool, json: bool, out: &mut impl Write) -> i32 {
    let name = file.display();
    let input: Box<dyn io::BufRead> = if file == Path::new("-") {
        Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
    } else {
        match File::open(file) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 20, f)),
            Err(e) => {
                eprintln!("vmsa check: {name}: {e}");
                return UNREADABLE;
            }
        }
    };
    let config = Config {
        pes,
        locks,
        ..Config::default()
    };
    let start = Instant::now();
    let report = match trace::check(input, config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmsa check: {name}: {e}");
            return UNREADABLE;
        }
    };
    let elapsed = start.elapsed();
    if report.records == 0 {
        // Nothing was judged: saying "0 violations" would pass an empty
        // (or wrong) file as clean.
        eprintln!("vmsa check: {name}: no records: the trace is empty");
        return UNREADABLE;
    }
    let printed = if json {
        (|| -> io::Result<()> {
            serde_json::to_writer_pretty(&mut *out, &JsonReport::new(&name.to_string(), &report))?;
            writeln!(out)?;
            out.flush()
        })()
    } else {
        print_text(&name.to_string(), &report, elapsed, out)
    };
    if let Err(e) = printed {
        eprintln!("vmsa check: {e}");
        return UNREADABLE;
    }
    if report.violations.is_empty() {
        CLEAN
    } else {
        VIOLATIONS
    }
}

/// The text report: each violation, the costs, an estimate per profile and
/// a summary line.
fn print_text(
    name: &str,
    report: &trace::CheckReport,
    elapsed: std::time::Duration,
    out: &mut impl Write,
) -> io::Result<()> {
    {
        for v in &report.violations {
            writeln!(out, "{v}")?;
        }
        writeln!(out, "costs: {}", report.costs)?;
        for p in vmsa_model::cost::PROFILES {
            writeln!(out, "estimate ({}): {}", p.name, report.costs.estimate(p))?;
        }
        writeln!(
            out,
            "{name}: {} records, {} violation{}, {elapsed:.3?}, {:.0} records/s",
            report.records,
            report.violations.len(),
            if report.violations.len() == 1 {
                ""
            } else {
                "s"
            },
            report.records as f64 / elapsed.as_secs_f64().max(1e-9)
        )?;
        out.flush()
    }
}

/// `vmsa check --json`: the whole report as one object.
#[derive(Serialize)]
pub struct JsonReport {
    /// The trace file.
    pub file: String,
    /// Records read.
    pub records: u64,
    /// The violations, in the order found.
    pub violations: Vec<JsonViolation>,
    /// What the maintenance in the trace counts.
    pub costs: JsonCosts,
    /// The counts priced under each cost profile (`native`, `nested`).
    pub estimates: Vec<JsonEstimate>,
}

/// One violation.
#[derive(Serialize)]
pub struct JsonViolation {
    /// What went wrong: `stale_translation`, `bbm_valid_to_valid`,
    /// `bbm_unclean_to_valid`, `use_after_free`, `id_reuse`, `double_use`,
    /// `register_programming`, `lock_discipline`.
    pub kind: &'static str,
    /// The same, as the text report names it.
    pub kind_name: &'static str,
    /// The trace line of the record at which it was found (`null` when not
    /// known).
    pub line: Option<u64>,
    /// The record's event number (Casemate `id`).
    pub event: u64,
    /// The PEs that may hold the offending entry.
    pub pes: Vec<u32>,
    /// The descriptor (table slot) or page concerned, in hex.
    pub address: String,
    /// What happened and what should have prevented it.
    pub message: String,
}

/// The trace's maintenance counts.
#[derive(Serialize)]
pub struct JsonCosts {
    /// TLBI instructions.
    pub tlbi_ops: u64,
    /// Broadcast (Inner Shareable) TLBIs.
    pub broadcast_ops: u64,
    /// TLBIs by mnemonic.
    pub tlbi: std::collections::BTreeMap<&'static str, u64>,
    /// DSBs that waited for TLB maintenance.
    pub dsb: u64,
    /// `DSB ST` / `DSB NSH`.
    pub dsb_light: u64,
    /// ISBs.
    pub isb: u64,
    /// Descriptor stores that changed a value.
    pub writes: u64,
    /// Correct entries invalidated.
    pub collateral: u64,
    /// Refill walks.
    pub refill_walks: u64,
    /// Spurious faults.
    pub spurious_faults: u64,
}

/// The counts priced under one profile.
#[derive(Serialize)]
pub struct JsonEstimate {
    /// Profile name.
    pub profile: &'static str,
    /// Total cycles.
    pub cycles: u64,
    /// Cycles by item.
    pub parts: std::collections::BTreeMap<&'static str, u64>,
}

fn kind_id(kind: ViolationKind) -> &'static str {
    match kind {
        ViolationKind::StaleTranslation => "stale_translation",
        ViolationKind::BbmValidToValid => "bbm_valid_to_valid",
        ViolationKind::BbmUncleanToValid => "bbm_unclean_to_valid",
        ViolationKind::UseAfterFree => "use_after_free",
        ViolationKind::IdReuse => "id_reuse",
        ViolationKind::DoubleUse => "double_use",
        ViolationKind::RegisterProgramming => "register_programming",
        ViolationKind::LockDiscipline => "lock_discipline",
    }
}

impl JsonReport {
    /// The report of checking `file`.
    pub fn new(file: &str, report: &trace::CheckReport) -> Self {
        let c = &report.costs;
        JsonReport {
            file: file.to_string(),
            records: report.records,
            violations: report
                .violations
                .iter()
                .map(|v| JsonViolation {
                    kind: kind_id(v.kind),
                    kind_name: v.kind.name(),
                    line: (v.at.line != 0).then_some(v.at.line),
                    event: v.at.seq,
                    pes: (0..64).filter(|i| v.pes >> i & 1 == 1).collect(),
                    address: format!("{:#x}", v.location),
                    message: v.explanation.clone(),
                })
                .collect(),
            costs: JsonCosts {
                tlbi_ops: c.tlbis(),
                broadcast_ops: c.broadcast_tlbis(),
                tlbi: c.tlbi.iter().map(|(op, &n)| (op.mnemonic(), n)).collect(),
                dsb: c.dsb,
                dsb_light: c.dsb_light,
                isb: c.isb,
                writes: c.writes,
                collateral: c.collateral,
                refill_walks: c.refill_walks,
                spurious_faults: c.spurious_faults,
            },
            estimates: vmsa_model::cost::PROFILES
                .iter()
                .map(|p| {
                    let e = c.estimate(p);
                    JsonEstimate {
                        profile: p.name,
                        cycles: e.cycles,
                        parts: e.parts.into_iter().collect(),
                    }
                })
                .collect(),
        }
    }
}

/// Writes the `bbm_stress` trace to `output`, or to `out` if there is none.
pub fn generate_bbm_stress(
    cycles: u64,
    seed: u64,
    output: Option<&Path>,
    out: &mut impl Write,
) -> io::Result<()> {
    match output {
        Some(path) => {
            let named = |e: io::Error| {
                io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            };
            let file = File::create(path).map_err(named)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let records = trace::bbm_stress(&mut w, cycles, seed).map_err(named)?;
            w.flush().map_err(named)?;
            eprintln!(
                "vmsa trace-gen: wrote {records} records to {}",
                path.display()
            );
        }
        None => {
            let mut w = BufWriter::with_capacity(1 << 20, out);
            trace::bbm_stress(&mut w, cycles, seed)?;
            w.flush()?;
        }
    }
    Ok(())
}
