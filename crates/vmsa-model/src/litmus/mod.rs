//! A runner for the VMSA litmus tests of the ESOP 2022 paper "Relaxed
//! virtual memory in Armv8-A" (isla's TOML format, litmus-tests-armv8a-
//! system-vmsa `tests/pgtable`), with [`Machine`](crate::Machine) as the
//! judge of which translations a PE may use.
//!
//! A test is parsed ([`parse`]: its page-table setup, per-thread AArch64
//! code, reset registers, handlers and final condition), then every
//! interleaving of its threads is explored ([`explore`]), instructions
//! running under sequentially consistent memory ([`exec`]); at each access
//! every translation the model allows is tried: the tables' current entry,
//! each stale entry [`Machine::may_translate`](crate::Machine::may_translate)
//! says the PE may still hold, and walks satisfied early from table memory
//! as it was since the PE's last context synchronization. The final
//! condition is `allowed` when some execution satisfies it.
//!
//! A TLB model says nothing about the relaxed ordering of ordinary loads
//! and stores, so a test whose outcome depends on it is reported
//! unsupported: when the sequentially consistent run forbids the outcome,
//! the test is run again with every reordering Arm permits within a
//! thread ([`reorder`]), and if one of them allows it the verdict is
//! [`Verdict::Unsupported`].

pub mod asm;
pub mod cond;
pub mod exec;
pub mod explore;
pub mod parse;
pub mod reorder;
pub mod setup;

use std::path::Path;

/// Why a test could not be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The file could not be read.
    Io(String),
    /// The file is not a well-formed test.
    Parse(String),
    /// An instruction the assembler does not understand.
    Asm(String),
    /// A feature the runner does not model.
    Unsupported(String),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Io(s) => write!(f, "cannot read: {s}"),
            Error::Parse(s) => write!(f, "malformed test: {s}"),
            Error::Asm(s) => write!(f, "cannot assemble: {s}"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// The outcome of a test's final condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some execution satisfies it.
    Allowed,
    /// None does.
    Forbidden,
    /// The runner cannot judge it, and why.
    Unsupported(String),
}

impl Verdict {
    /// `allowed`, `forbidden` or `unsupported`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Forbidden => "forbidden",
            Verdict::Unsupported(_) => "unsupported",
        }
    }
}

/// What running one test gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The test's name.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// For an allowed outcome, the execution that shows it: the steps in
    /// interleaving order, with the translation each access used.
    pub witness: Vec<String>,
    /// States visited.
    pub states: usize,
}

/// Bounds of a run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// States per search.
    pub states: usize,
    /// Combinations of thread reorderings tried.
    pub variants: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            states: 200_000,
            variants: 400,
        }
    }
}

/// Runs the test in the TOML text `src`.
pub fn run_source(src: &str, limits: Limits) -> Result<Outcome, Error> {
    let test = match parse::parse(src) {
        Ok(t) => t,
        Err(e @ (Error::Io(_) | Error::Parse(_))) => return Err(e),
        Err(Error::Asm(why) | Error::Unsupported(why)) => {
            let name = src
                .parse::<toml::Table>()
                .ok()
                .and_then(|t| t.get("name").and_then(|n| n.as_str().map(String::from)))
                .unwrap_or_default();
            return Ok(Outcome {
                name,
                verdict: Verdict::Unsupported(why),
                witness: Vec::new(),
                states: 0,
            });
        }
    };
    Ok(run_test(&test, limits))
}

/// Runs the test in the file at `path`.
pub fn run_file(path: &Path, limits: Limits) -> Result<Outcome, Error> {
    let src =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    run_source(&src, limits).map_err(|e| match e {
        Error::Parse(s) => Error::Parse(format!("{}: {s}", path.display())),
        e => e,
    })
}

/// Runs a parsed test.
pub fn run_test(test: &parse::Test, limits: Limits) -> Outcome {
    let mut out = Outcome {
        name: test.name.clone(),
        verdict: Verdict::Forbidden,
        witness: Vec::new(),
        states: 0,
    };
    match judge(test, limits, &mut out) {
        Ok(v) => out.verdict = v,
        Err(e) => {
            out.verdict = Verdict::Unsupported(match e {
                Error::Unsupported(s) => s,
                e => e.to_string(),
            })
        }
    }
    out
}

fn judge(test: &parse::Test, limits: Limits, out: &mut Outcome) -> Result<Verdict, Error> {
    let original: Vec<asm::Block> = test.threads.iter().map(|t| t.block.clone()).collect();
    let sc = explore::search(test, &original, limits.states)?;
    out.states += sc.states;
    if let Some(w) = sc.found {
        out.witness = w;
        return Ok(Verdict::Allowed);
    }
    if sc.over {
        return Err(Error::Unsupported(format!(
            "too many interleavings (>{} states)",
            limits.states
        )));
    }
    if sc.cut {
        return Err(Error::Unsupported(format!(
            "a thread runs more than {} instructions (bounded, no execution within the bound satisfies the condition)",
            exec::MAX_STEPS
        )));
    }
    // Forbidden under sequential consistency: would a permitted reordering
    // of ordinary accesses allow it?
    if test
        .threads
        .iter()
        .any(|t| reorder::handler_reorderable(t, &test.sections, &test.layout))
    {
        return Err(Error::Unsupported(
            "depends on relaxed ordering of ordinary accesses (an access before an exception and one in its handler)".into(),
        ));
    }
    let mut per_thread = Vec::new();
    for t in &test.threads {
        per_thread.push(reorder::variants(t, &test.layout)?);
    }
    let combos: usize = per_thread
        .iter()
        .map(Vec::len)
        .try_fold(1usize, |a, n| a.checked_mul(n))
        .unwrap_or(usize::MAX);
    if combos == 1 {
        return Ok(Verdict::Forbidden);
    }
    if combos > limits.variants {
        return Err(Error::Unsupported(format!(
            "too many reorderings to check ({combos} > {})",
            limits.variants
        )));
    }
    let mut idx = vec![0usize; per_thread.len()];
    loop {
        // Next combination (the all-zero one, the original, is done).
        let mut i = 0;
        loop {
            if i == idx.len() {
                return Ok(Verdict::Forbidden);
            }
            idx[i] += 1;
            if idx[i] < per_thread[i].len() {
                break;
            }
            idx[i] = 0;
            i += 1;
        }
        let programs: Vec<asm::Block> = idx
            .iter()
            .zip(&per_thread)
            .map(|(&i, v)| v[i].clone())
            .collect();
        let r = explore::search(test, &programs, limits.states)?;
        out.states += r.states;
        if r.found.is_some() || r.over {
            return Err(Error::Unsupported(
                "depends on relaxed ordering of ordinary accesses".into(),
            ));
        }
    }
}
