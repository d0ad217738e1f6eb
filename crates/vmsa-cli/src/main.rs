//! `vmsa`: build, change and inspect AArch64 translation tables, and show
//! the exact hardware effects each change needs.

mod example;

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Example { all_stores } => example::run(all_stores, &mut std::io::stdout().lock()),
    };
    if let Err(e) = result {
        eprintln!("vmsa: {e}");
        std::process::exit(2);
    }
}
