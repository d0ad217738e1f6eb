//! `vmsa litmus`: run ESOP'22 VMSA litmus tests (isla TOML) on the model
//! and print each final condition's verdict.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use vmsa_model::litmus::{run_file, Limits, Outcome, Verdict};

/// Exit status: every test ran (whatever the verdicts).
pub const RAN: i32 = 0;
/// Exit status: some input could not be read or is not a test.
pub const UNREADABLE: i32 = 2;

/// One test in `--json` output.
#[derive(Serialize)]
struct JsonTest {
    file: String,
    name: String,
    verdict: &'static str,
    reason: Option<String>,
    witness: Vec<String>,
    states: usize,
}

/// The `--json` output.
#[derive(Serialize)]
struct JsonReport {
    tests: Vec<JsonTest>,
    allowed: usize,
    forbidden: usize,
    unsupported: usize,
    errors: Vec<String>,
}

/// The `*.litmus.toml` files under `path` (itself if a file), sorted.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if path == Path::new("-") {
        // One test on standard input.
        out.push(path.to_path_buf());
        return Ok(());
    }
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        entries.sort();
        for e in entries {
            if e.is_dir() || e.to_string_lossy().ends_with(".litmus.toml") {
                collect(&e, out)?;
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no such file or directory",
        ))
    }
}

/// Runs every test in `paths` (directories searched for `*.litmus.toml`)
/// with state budget `states`, printing verdicts and a summary to `out`
/// (one JSON object with `json`). Returns the exit status.
pub fn run(paths: &[PathBuf], states: usize, json: bool, out: &mut impl Write) -> io::Result<i32> {
    let limits = Limits {
        states,
        ..Limits::default()
    };
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if let Err(e) = collect(p, &mut files) {
            errors.push(format!("{}: {e}", p.display()));
        }
    }
    let mut tests = Vec::new();
    let (mut allowed, mut forbidden, mut unsupported) = (0, 0, 0);
    for f in &files {
        let result = if f == Path::new("-") {
            let mut src = String::new();
            io::Read::read_to_string(&mut io::stdin(), &mut src)
                .map_err(|e| vmsa_model::litmus::Error::Io(format!("-: {e}")))
                .and_then(|_| vmsa_model::litmus::run_source(&src, limits))
        } else {
            run_file(f, limits)
        };
        let outcome: Outcome = match result {
            Ok(o) => o,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let reason = match &outcome.verdict {
            Verdict::Allowed => {
                allowed += 1;
                None
            }
            Verdict::Forbidden => {
                forbidden += 1;
                None
            }
            Verdict::Unsupported(why) => {
                unsupported += 1;
                Some(why.clone())
            }
        };
        if !json {
            match &reason {
                Some(why) => writeln!(out, "{}: unsupported: {why}", outcome.name)?,
                None => writeln!(out, "{}: {}", outcome.name, outcome.verdict.word())?,
            }
            for w in &outcome.witness {
                writeln!(out, "    {w}")?;
            }
        }
        tests.push(JsonTest {
            file: f.display().to_string(),
            name: outcome.name,
            verdict: outcome.verdict.word(),
            reason,
            witness: outcome.witness,
            states: outcome.states,
        });
    }
    for e in &errors {
        eprintln!("vmsa litmus: {e}");
    }
    if json {
        let report = JsonReport {
            tests,
            allowed,
            forbidden,
            unsupported,
            errors: errors.clone(),
        };
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} tests: {allowed} allowed, {forbidden} forbidden, {unsupported} unsupported{}",
            allowed + forbidden + unsupported,
            if errors.is_empty() {
                String::new()
            } else {
                format!(", {} unreadable", errors.len())
            }
        )?;
    }
    Ok(if errors.is_empty() { RAN } else { UNREADABLE })
}
