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
