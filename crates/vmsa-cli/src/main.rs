//! `vmsa`: build, change and inspect AArch64 translation tables, and show
//! the exact hardware effects each change needs.

mod check;
mod compare;
mod example;

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
    /// when the trace cannot be opened or read.
    Check {
        /// The trace file.
        file: PathBuf,
        /// Number of PEs in the model (walkers that may cache entries); a
        /// higher `tid` in the trace adds PEs, up to 64.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
        pes: u8,
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
        /// Number of break-before-make cycles.
        #[arg(long, default_value_t = 100_000)]
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
        Command::Check { file, pes } => std::process::exit(check::run(
            &file,
            pes as usize,
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
