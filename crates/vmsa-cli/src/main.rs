//! `vmsa`: build, change and inspect AArch64 translation tables, and show
//! the exact hardware effects each change needs.

use vmsa_cli::{check, compare, example, litmus, replay, replay_ops};

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// AArch64 translation tables and the TLB maintenance they need.
#[derive(Parser)]
#[command(name = "vmsa", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a small stage 2 table for a guest, change it while it is live,
    /// and print the tables and every effect (descriptor stores, barriers,
    /// TLBIs) each change produced.
    Example {
        /// Print every effect instead of folding runs of stores into one
        /// table page and runs of one TLBI.
        #[arg(long)]
        all_stores: bool,
    },
    /// Check a Casemate trace against the model: print every violation and
    /// a summary. Exit status 0 when clean, 1 when there are violations, 2
    /// when the trace cannot be opened or read or has no records.
    Check {
        /// The trace file (`-` for standard input).
        file: PathBuf,
        /// Print one JSON object instead: file, records, violations (each
        /// with kind, kind_name, line, event, pes, address, message), costs
        /// (tlbi_ops, broadcast_ops, tlbi by mnemonic, dsb, dsb_light, isb,
        /// writes, collateral, refill_walks, spurious_faults) and estimates
        /// (profile, cycles, parts) for the native and nested profiles.
        #[arg(long)]
        json: bool,
        /// Number of PEs in the model (walkers that may cache entries); a
        /// higher `tid` in the trace adds PEs, up to 64.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
        pes: u8,
        /// Also check Casemate's lock discipline: every write to a table's
        /// memory made holding the lock associated with its root
        /// (`set_root_lock`), and every root written to associated with a
        /// lock. Off by default: a software convention, not an
        /// architectural rule.
        #[arg(long)]
        locks: bool,
    },
    /// Run every workload under every policy (vmsa and the baselines) and
    /// cost profile on the model, and print a table of TLBIs, broadcast
    /// TLBIs, DSBs, collateral entries, spurious faults, estimated cycles
    /// and violations. Exit status 0 when the comparison ran (baselines may
    /// well have violations), 2 for an unknown name.
    Compare {
        /// Only this workload (repeatable, or comma-separated; all by
        /// default). `--list` prints the names.
        #[arg(long = "workload", value_name = "NAME", value_delimiter = ',')]
        workloads: Vec<String>,
        /// Only this policy (repeatable, or comma-separated; all by default).
        #[arg(long = "policy", value_name = "NAME", value_delimiter = ',')]
        policies: Vec<String>,
        /// Only this cost profile (repeatable, or comma-separated; all by
        /// default).
        #[arg(long = "profile", value_name = "NAME", value_delimiter = ',')]
        profiles: Vec<String>,
        /// Number of PEs in the model.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
        pes: u8,
        /// Print one JSON array of objects (workload, policy, profile,
        /// tlbi_ops, broadcast_ops, dsb, collateral, spurious_faults, cycles,
        /// violations) instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write an SVG chart of the cycles (first profile selected).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Print the workload, policy and profile names and exit.
        #[arg(long, conflicts_with_all = ["json", "svg"])]
        list: bool,
    },
    /// Replay a real strace capture's memory system calls through
    /// host-managed guest stage 1 tables (each call one batch served for
    /// the calling thread's vCPU, each thread a vCPU) under every policy
    /// and cost profile, and print the mix of calls and the same table as
    /// `compare`. Capture with `strace -f -tt -e
    /// trace=memory,clone,clone3,execve,exit_group -o FILE PROGRAM`
    /// (scripts/capture-strace). Exit status 0 when the replays ran, 2 for
    /// an unknown name or a capture that cannot be read or is malformed
    /// (with the line).
    Replay {
        /// The captures (`-` for standard input); each is a workload named
        /// after its file.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Only this policy (repeatable, or comma-separated; all by default).
        #[arg(long = "policy", value_name = "NAME", value_delimiter = ',')]
        policies: Vec<String>,
        /// Only this cost profile (repeatable, or comma-separated; all by
        /// default).
        #[arg(long = "profile", value_name = "NAME", value_delimiter = ',')]
        profiles: Vec<String>,
        /// Number of PEs in the model: PE 0 is the host, threads run on
        /// PEs 1 and up (sharing them when there are more threads).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=64))]
        pes: u8,
        /// When pages are mapped: `eager` at the call that makes them
        /// accessible (as elfuse does; ranges over --eager-limit are
        /// mapped as touched), `lazy` when first touched.
        #[arg(long, value_name = "WHEN", default_value = "eager", value_parser = ["eager", "lazy"])]
        populate: String,
        /// Under eager population, ranges larger than this many MiB (at
        /// most 4096) are mapped as touched (PROT_NONE ranges are never
        /// mapped).
        #[arg(long, value_name = "MIB", default_value_t = 8,
              value_parser = clap::value_parser!(u64).range(0..=replay::MAX_EAGER_LIMIT_MIB))]
        eager_limit: u64,
        /// Pages each vCPU touches (reads; writes where writable;
        /// executes where executable) after each of its calls, from the
        /// ranges it mapped or changed last. 0: none; at most 1024 (each
        /// touch is a model access on every policy).
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u64).range(0..=replay::MAX_TOUCH))]
        touch: u64,
        /// Only the first N lines of each capture.
        #[arg(long, value_name = "N")]
        max_lines: Option<u64>,
        /// Print one JSON array of objects (workload, policy, profile,
        /// tlbi_ops, broadcast_ops, dsb, collateral, spurious_faults,
        /// cycles, violations) instead of the table; the mix of calls goes
        /// to standard error.
        #[arg(long)]
        json: bool,
        /// Also write an SVG chart of the cycles (first profile selected).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Replay a hypervisor's operation log (`vmsa::oplog`, recorded by
    /// vmsa-hyp with `oplog=PATH`: stage 2 maps, unmaps, protections,
    /// splits, collapses, flush points and the issuing PEs, vCPU loads,
    /// guest stage 2 faults, released frames) through the model under
    /// every stage 2 policy and cost profile, and print the log's counts
    /// and the same table as `compare`. The operations are replayed as logged;
    /// each flush point is the policy's invalidation; at each logged fault
    /// (and at its retry once the handler is done) the faulting vCPU's PE
    /// accesses the page, so spurious faults on stale stricter entries are
    /// charged and accesses a stale entry lets through are violations;
    /// each released frame is checked for translations that still reach
    /// it. The log's own spurious-fault records (the recording policy's)
    /// are counted, not priced. The model has as many PEs as the log
    /// names. Exit status 0 when every faithful policy (all but `none` and
    /// `aarch64-paging`) is violation-free, 1 when one is not, 2 for an
    /// unknown name or a log that cannot be read or decoded (with the byte
    /// offset).
    ReplayOps {
        /// The log (`-` for standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Only this policy (repeatable, or comma-separated; by default the
        /// stage 2 policies and the oracle; any of `compare`'s may be named).
        #[arg(long = "policy", value_name = "NAME", value_delimiter = ',')]
        policies: Vec<String>,
        /// Only this cost profile (repeatable, or comma-separated; all by
        /// default).
        #[arg(long = "profile", value_name = "NAME", value_delimiter = ',')]
        profiles: Vec<String>,
        /// Print one JSON array of objects (workload, policy, profile,
        /// tlbi_ops, broadcast_ops, dsb, collateral, spurious_faults,
        /// cycles, violations) instead of the table; the log's counts go to
        /// standard error.
        #[arg(long)]
        json: bool,
    },
    /// Run VMSA litmus tests (isla TOML, as in the ESOP 2022 paper
    /// "Relaxed virtual memory in Armv8-A") on the model and print, per
    /// test, whether its final condition is allowed or forbidden (with a
    /// witness execution when allowed), or `unsupported: <why>`, then a
    /// summary. Exit status 0 when every input was read, 2 when some file
    /// could not be read or is not a test.
    Litmus {
        /// Test files, or directories searched for `*.litmus.toml` (`-`: one
        /// test on standard input).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print one JSON object instead: tests (file, name, verdict,
        /// reason, witness, states), the counts, and errors.
        #[arg(long)]
        json: bool,
        /// At most this many states per search (1 to 10,000,000: each
        /// remembered state costs memory); beyond it the test is reported
        /// unsupported (too many interleavings).
        #[arg(long, default_value_t = 200_000,
              value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        max_states: u64,
    },
    /// Write a generated Casemate trace.
    TraceGen {
        #[command(subcommand)]
        kind: TraceKind,
    },
}

#[derive(Subcommand)]
enum TraceKind {
    /// The break-before-make benchmark: a four-level stage 2 tree, then
    /// CYCLES correct break-before-make sequences on random level 3
    /// entries (about 9 records each).
    BbmStress {
        /// Number of break-before-make cycles (at most 100,000,000: about
        /// 900 million records, 60 GB of text).
        #[arg(long, default_value_t = 100_000,
              value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
        cycles: u64,
        /// Seed of the entry choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (standard output by default).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Example { all_stores } => example::run(all_stores, &mut std::io::stdout().lock()),
        Command::Check {
            file,
            pes,
            json,
            locks,
        } => std::process::exit(check::run(
            &file,
            pes as usize,
            locks,
            json,
            &mut std::io::stdout().lock(),
        )),
        Command::Compare {
            workloads,
            policies,
            profiles,
            pes,
            json,
            svg,
            list,
        } => {
            let out = &mut std::io::stdout().lock();
            let args = compare::Args {
                workloads,
                policies,
                profiles,
                pes: pes as usize,
            };
            let status = if list {
                compare::list(out).map(|()| 0)
            } else {
                compare::run(&args, json, svg.as_deref(), out)
            };
            status
                .map(|code| {
                    if code != 0 {
                        std::process::exit(code)
                    }
                })
                .map_err(Into::into)
        }
        Command::Replay {
            files,
            policies,
            profiles,
            pes,
            populate,
            eager_limit,
            touch,
            max_lines,
            json,
            svg,
        } => {
            let args = replay::Args {
                files,
                policies,
                profiles,
                pes: pes as usize,
                eager: populate == "eager",
                eager_limit_mib: eager_limit,
                touch: touch as usize,
                max_lines,
            };
            let out = &mut std::io::stdout().lock();
            replay::run(&args, json, svg.as_deref(), out)
                .map(|code| {
                    if code != 0 {
                        std::process::exit(code)
                    }
                })
                .map_err(Into::into)
        }
        Command::ReplayOps {
            file,
            policies,
            profiles,
            json,
        } => {
            let args = replay_ops::Args {
                file,
                policies,
                profiles,
            };
            let out = &mut std::io::stdout().lock();
            replay_ops::run(&args, json, out)
                .map(|code| {
                    if code != 0 {
                        std::process::exit(code)
                    }
                })
                .map_err(Into::into)
        }
        Command::Litmus {
            paths,
            json,
            max_states,
        } => litmus::run(
            &paths,
            max_states as usize,
            json,
            &mut std::io::stdout().lock(),
        )
        .map(|code| {
            if code != 0 {
                std::process::exit(code)
            }
        })
        .map_err(Into::into),
        Command::TraceGen {
            kind:
                TraceKind::BbmStress {
                    cycles,
                    seed,
                    output,
                },
        } => check::generate_bbm_stress(
            cycles,
            seed,
            output.as_deref(),
            &mut std::io::stdout().lock(),
        )
        .map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("vmsa: {e}");
        std::process::exit(2);
    }
}
