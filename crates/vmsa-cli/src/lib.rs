//! The `vmsa` command's subcommands, as a library: the `vmsa` binary is
//! their command line, and the fuzz targets (`fuzz/`) drive the readers
//! (strace captures, operation logs) directly.

pub mod check;
pub mod compare;
pub mod example;
pub mod litmus;
pub mod replay;
pub mod replay_ops;
