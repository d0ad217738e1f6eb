//! `vmsa replay`: real strace captures replayed through host-managed guest
//! stage 1 tables under every policy (see [`sim`] for the model of the
//! system, [`space`] for the address-space semantics, [`parse`] for what
//! the reader accepts).
//!
//! Population: eager by default (every page of a range is mapped at the
//! call that makes it accessible, as elfuse does), except that ranges over
//! `--eager-limit` MiB (8 by default, so 8 MiB thread stacks are still
//! mapped at once, but not glibc's 64 MiB arena reservations or JIT and GC
//! heaps) are populated as they are touched, and `PROT_NONE` ranges never
//! are (they keep their contents: made accessible again, the same frames
//! come back); `--populate lazy` populates every page as it is touched.
//! That keeps replays fast (well under a second per capture for every
//! policy) and the tables near what a program really uses. Pages dropped
//! by `MADV_DONTNEED` come back, zero-filled, when touched.
//!
//! What the trace cannot show is assumed: ranges a successful `mprotect`
//! or `mremap` names that no traced call mapped were mapped by execve (the
//! program image, its stack) and are added as read/write mappings first,
//! in a batch of their own; addresses beyond the 48-bit range are skipped
//! and counted. A forked child gets a copy of its parent's space (fork's
//! write-protection of the parent for copy on write is not replayed); an
//! execve empties the space with one unmap, or gives a vfork child a space
//! of its own.

pub mod parse;
mod pool;
pub mod runs;
pub mod sim;
pub mod space;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::thread;

use vmsa_model::cost::PROFILES;

use crate::compare::{self, Names, Row, Selection, MAX_PES};
use parse::{Mix, ParseError, Parser};
use sim::{Options, Outcome, Stats};
use space::Populate;

/// Options of `vmsa replay`.
#[derive(Clone, Debug)]
pub struct Args {
    /// The captures (`-` for standard input).
    pub files: Vec<PathBuf>,
    /// Only these policies (all when empty).
    pub policies: Vec<String>,
    /// Only these cost profiles (all when empty).
    pub profiles: Vec<String>,
    /// PEs in each model.
    pub pes: usize,
    /// Eager (`false`: lazy) population.
    pub eager: bool,
    /// Ranges over this many MiB are populated lazily under eager
    /// population.
    pub eager_limit_mib: u64,
    /// Pages each vCPU touches after each of its calls.
    pub touch: usize,
    /// Only the first this many lines of each capture.
    pub max_lines: Option<u64>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            files: Vec::new(),
            policies: Vec::new(),
            profiles: Vec::new(),
            pes: 4,
            eager: true,
            eager_limit_mib: 8,
            touch: 4,
            max_lines: None,
        }
    }
}

/// A capture read into events (the tests' view; `vmsa replay` streams).
#[cfg(test)]
pub struct Trace {
    /// The events.
    pub events: Vec<parse::Event>,
    /// The mix of calls.
    pub mix: Mix,
}

/// The name a capture's rows carry.
pub fn workload_name(path: &Path) -> String {
    if path == Path::new("-") {
        return "stdin".into();
    }
    let mut name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    for ext in [".strace", ".txt", ".log", ".out"] {
        if let Some(stem) = name.strip_suffix(ext) {
            name = stem.to_string();
            break;
        }
    }
    name
}

/// Reads a capture from `reader` (stopping after `max_lines` lines).
#[cfg(test)]
pub fn read_trace(reader: impl BufRead, max_lines: Option<u64>) -> Result<Trace, ParseError> {
    let mut parser = Parser::new(lines(reader, max_lines)?);
    let mut events = Vec::new();
    for ev in parser.by_ref() {
        events.push(ev?);
    }
    Ok(Trace {
        events,
        mix: parser.mix().clone(),
    })
}

/// The text of a capture: `reader` as it is, or decompressed when it is
/// gzip data (strace captures compress about tenfold), stopping after
/// `max_lines` lines.
fn lines<'a>(
    reader: impl BufRead + 'a,
    max_lines: Option<u64>,
) -> Result<Box<dyn BufRead + 'a>, ParseError> {
    let mut reader = reader;
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let text: Box<dyn BufRead + 'a> = if gzip {
        Box::new(BufReader::new(Gunzip(
            flate2::bufread::MultiGzDecoder::new(reader),
        )))
    } else {
        Box::new(reader)
    };
    Ok(match max_lines {
        Some(n) => Box::new(BufReader::new(LineLimit {
            inner: text,
            left: n,
        })),
        None => text,
    })
}

/// A gzip decoder whose errors say that the data was gzip.
struct Gunzip<R>(R);

impl<R: Read> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("gzip-compressed data: {e}")))
    }
}

/// A reader that ends after `left` lines.
struct LineLimit<R> {
    inner: R,
    left: u64,
}

impl<R: BufRead> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let chunk = self.inner.fill_buf()?;
        let n = chunk.len().min(buf.len());
        let n = match chunk[..n].iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.left -= 1;
                i + 1
            }
            None => n,
        };
        buf[..n].copy_from_slice(&chunk[..n]);
        self.inner.consume(n);
        Ok(n)
    }
}

/// The capture at `path` (`-`: standard input), opened.
fn open(path: &Path) -> Result<Box<dyn BufRead>, String> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
}

/// The largest `--touch`: each touch is a model access per policy after
/// every call, so a larger count only makes the replay slower.
pub const MAX_TOUCH: u64 = 1024;

/// The largest `--eager-limit` accepted (MiB): one call never maps more
/// than this many pages at once (a replay stays within memory).
pub const MAX_EAGER_LIMIT_MIB: u64 = 4096;

/// The options a replay runs with.
pub fn options(args: &Args) -> Options {
    Options {
        pes: args.pes.max(2),
        populate: if args.eager {
            Populate::Eager {
                limit: args.eager_limit_mib.min(MAX_EAGER_LIMIT_MIB) << 20,
            }
        } else {
            Populate::Lazy
        },
        touch: args.touch.min(MAX_TOUCH as usize),
    }
}

use compare::profile;

/// The row of one replay.
pub fn row(workload: &str, policy: &str, profile_name: &str, o: &Outcome) -> Row {
    Row::priced(
        workload,
        policy,
        profile(profile_name),
        &o.costs,
        o.violations,
    )
}

/// The replay that gives `policy`'s row for `profile`: (policy, the profile
/// it is priced with, or "" for a baseline, whose choices do not depend on
/// the profile, so that it is replayed once).
fn run_for(policy: &'static str, profile: &'static str) -> (&'static str, &'static str) {
    (policy, if policy == "vmsa" { profile } else { "" })
}

/// The distinct replays a selection asks for (see [`run_for`]).
fn runs(selection: &Selection) -> Vec<(&'static str, &'static str)> {
    let mut runs = Vec::new();
    for &profile in &selection.profiles {
        for &policy in &selection.policies {
            let run = run_for(policy, profile);
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    runs
}

/// Commands handed to the policies' models at a time: memory stays
/// bounded by this (and by the live address spaces), not by the capture's
/// length.
const CHUNK: usize = 4096;

/// Replays the capture `name` read from `reader` under every selected
/// policy and profile, streaming: one pass over the input. This thread
/// parses it and works out what it asks ([`sim::Driver`]: the same for
/// every policy); the policies' models carry that out a chunk of commands
/// at a time on up to two threads, each taking whichever policy is
/// furthest behind (see `replay/pool.rs`).
///
/// # Errors
/// The first line that cannot be parsed (nothing is returned for it).
pub fn replay_stream(
    name: &str,
    reader: impl BufRead,
    max_lines: Option<u64>,
    selection: &Selection,
    opts: Options,
) -> Result<Replayed, ParseError> {
    let runs = runs(selection);
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
        .min(runs.len().max(1));
    let mut parser = Parser::new(lines(reader, max_lines)?);
    let mut failed = None;
    let mut driver = sim::Driver::new(opts);
    let models: Vec<sim::Models> = runs
        .iter()
        .map(|&(policy, priced)| {
            let p = if priced.is_empty() {
                PROFILES[0]
            } else {
                profile(priced)
            };
            sim::Models::new(policy, p, opts)
        })
        .collect();
    let models = pool::run(
        models,
        threads,
        |send| {
            for ev in parser.by_ref() {
                match ev {
                    Ok(ev) => driver.event(&ev),
                    Err(e) => {
                        failed = Some(e);
                        return;
                    }
                }
                if driver.commands().len() >= CHUNK {
                    // An event makes a few commands: room for a chunk and
                    // them.
                    let next = Vec::with_capacity(CHUNK + CHUNK / 4);
                    send(std::mem::replace(driver.commands(), next));
                }
            }
            driver.finish();
            send(std::mem::take(driver.commands()));
        },
        |m, chunk| {
            for c in chunk {
                m.run(c);
            }
        },
    );
    let outcomes: HashMap<(&str, &str), Outcome> = runs
        .iter()
        .copied()
        .zip(models.into_iter().map(|m| m.finish(driver.stats())))
        .collect();
    if let Some(e) = failed {
        return Err(e);
    }
    let mix = parser.mix().clone();
    let mut r = Replayed {
        name: name.to_string(),
        mix,
        rows: Vec::new(),
        stats: Stats::default(),
        notes: Vec::new(),
    };
    for &profile in &selection.profiles {
        for &policy in &selection.policies {
            let (_, k) = run_for(policy, profile);
            if let Some(o) = outcomes.get(&(policy, k)) {
                r.rows.push(row(name, policy, profile, o));
                r.stats = o.stats.clone();
                let first = (profile == selection.profiles[0]) || !k.is_empty();
                if o.capped > 0 && first {
                    r.notes.push(format!(
                        "{policy}: {} flush{} naming over {} pages one by one (an emptied \
                         page-table page's whole region) replayed as one whole-ASID TLBI",
                        o.capped,
                        if o.capped == 1 { "" } else { "es" },
                        sim::FREEBSD_PAGE_CAP
                    ));
                }
            }
        }
    }
    Ok(r)
}

/// What [`replay_stream`] returns for one capture.
pub struct Replayed {
    /// The workload name.
    pub name: String,
    /// The mix of calls.
    pub mix: Mix,
    /// The rows.
    pub rows: Vec<Row>,
    /// What the replay did.
    pub stats: Stats,
    /// Notes on the replay of some policies.
    pub notes: Vec<String>,
}

/// The mix of calls of a capture and what its replay did, as text.
pub fn describe(name: &str, mix: &Mix, stats: &Stats) -> String {
    let mut mix = mix.clone();
    for (&name, &n) in &stats.skipped {
        for _ in 0..n {
            mix.skip(name);
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} lines, {} address space{}, {} thread{} (at most {} vCPU{} at once)",
        name,
        mix.lines,
        stats.spaces,
        if stats.spaces == 1 { "" } else { "s" },
        stats.threads,
        if stats.threads == 1 { "" } else { "s" },
        stats.max_vcpus,
        if stats.max_vcpus == 1 { "" } else { "s" },
    );
    let width = mix.calls.keys().map(String::len).max().unwrap_or(0).max(7);
    let _ = writeln!(
        s,
        "  {:<width$}  {:>7}  {:>7}  {:>7}",
        "syscall", "calls", "failed", "skipped"
    );
    for (name, c) in &mix.calls {
        let _ = writeln!(
            s,
            "  {name:<width$}  {:>7}  {:>7}  {:>7}",
            c.calls, c.failed, c.skipped
        );
    }
    let total = mix.total();
    let _ = writeln!(
        s,
        "  {:<width$}  {:>7}  {:>7}  {:>7}",
        "total", total.calls, total.failed, total.skipped
    );
    let _ = writeln!(
        s,
        "  other lines: {} unknown, {} signal, {} exit, {} unmatched unfinished/resumed",
        mix.unknown_lines, mix.signals, mix.exits, mix.unmatched
    );
    let _ = writeln!(
        s,
        "  replayed: {} batches, {} table operations, {} page accesses, {} pages faulted in, \
         {} pages found mapped before the trace{}",
        stats.batches,
        stats.table_ops,
        stats.accesses,
        stats.faulted_pages,
        stats.implicit_pages,
        if stats.untraced_pids > 0 {
            format!(", {} pids with no clone in the trace", stats.untraced_pids)
        } else {
            String::new()
        }
    );
    s
}

/// Runs `vmsa replay`: reads every capture, replays it under every
/// selected policy and profile, prints the mix of calls and the table (or
/// with `json` the JSON array, the mix going to standard error), and with
/// `svg` writes a chart.
///
/// Returns the exit status: 0 when the replays ran, 2 for an unknown name,
/// an out-of-range PE count or a capture that cannot be read (with a
/// message on standard error).
pub fn run(args: &Args, json: bool, svg: Option<&Path>, out: &mut impl Write) -> io::Result<i32> {
    if !(1..=MAX_PES).contains(&args.pes) {
        eprintln!(
            "vmsa replay: --pes must be between 1 and {MAX_PES}, not {}",
            args.pes
        );
        return Ok(2);
    }
    let cargs = compare::Args {
        workloads: Vec::new(),
        policies: args.policies.clone(),
        profiles: args.profiles.clone(),
        pes: args.pes,
    };
    let selection = match Selection::new(&cargs, &Names::all()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vmsa replay: {e}");
            return Ok(2);
        }
    };
    // Checked before the work, not after it.
    let chart_file = match svg.map(compare::Output::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vmsa replay: {e}");
            return Ok(2);
        }
    };
    let opts = options(args);
    let pes = opts.pes;
    let mut rows = Vec::new();
    let mut mixes = Vec::new();
    for f in &args.files {
        let name = workload_name(f);
        let replayed = open(f).and_then(|input| {
            replay_stream(&name, input, args.max_lines, &selection, opts)
                .map_err(|e| format!("{}: {e}", f.display()))
        });
        let r = match replayed {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vmsa replay: {e}");
                return Ok(2);
            }
        };
        let mut d = describe(&r.name, &r.mix, &r.stats);
        for note in &r.notes {
            d.push_str(&format!("  note: {note}\n"));
        }
        mixes.push(d);
        rows.extend(r.rows);
    }
    let mixes = mixes.join("\n");
    if json {
        eprint!("{mixes}");
        compare::write_json(&rows, out)?;
    } else {
        writeln!(out, "{mixes}")?;
        compare::write_table(&rows, pes, out)?;
    }
    out.flush()?;
    if let Some(file) = chart_file {
        let profile = selection.profiles.first().copied().unwrap_or_default();
        let chart = compare::svg_chart(&rows, profile, pes)?;
        if let Err(e) = file.write(chart.as_bytes()) {
            eprintln!("vmsa replay: {e}");
            return Ok(2);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests;
