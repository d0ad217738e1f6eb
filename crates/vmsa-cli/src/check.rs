//! `vmsa check`: run a Casemate trace through the model; `vmsa trace-gen`:
//! write generated traces.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use vmsa_model::trace;
use vmsa_model::Config;

/// Exit status: the trace is clean.
pub const CLEAN: i32 = 0;
/// Exit status: the model found violations.
pub const VIOLATIONS: i32 = 1;
/// Exit status: the trace could not be opened or read.
pub const UNREADABLE: i32 = 2;

/// Checks the trace in `file` on a model of `pes` PEs, printing each
/// violation and a summary to `out` and errors to standard error. Returns
/// the exit status.
pub fn run(file: &Path, pes: usize, out: &mut impl Write) -> i32 {
    let name = file.display();
    let input = match File::open(file) {
        Ok(f) => BufReader::with_capacity(1 << 20, f),
        Err(e) => {
            eprintln!("vmsa check: {name}: {e}");
            return UNREADABLE;
        }
    };
    let config = Config {
        pes,
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
    let printed = (|| -> io::Result<()> {
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
    })();
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

/// Writes the `bbm_stress` trace to `output`, or to `out` if there is none.
pub fn generate_bbm_stress(
    cycles: u64,
    seed: u64,
    output: Option<&Path>,
    out: &mut impl Write,
) -> io::Result<()> {
    match output {
        Some(path) => {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
            let records = trace::bbm_stress(&mut w, cycles, seed)?;
            w.flush()?;
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
