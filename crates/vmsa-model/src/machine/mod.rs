//! The machine: memory, table trees, PEs and what they may have cached.
//! (Being written: this is the API the trace reader and CLI drive.)

pub mod check;

use crate::cost::Costs;
use crate::event::{Event, Origin};
use check::Violation;

/// How the model is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of PEs (at most 64).
    pub pes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { pes: 4 }
    }
}

/// The model.
pub struct Machine {
    violations: Vec<Violation>,
    costs: Costs,
}

impl Machine {
    /// A machine with no tables.
    pub fn new(_config: Config) -> Self {
        Machine { violations: Vec::new(), costs: Costs::default() }
    }
    /// Applies one event issued by PE `pe`.
    pub fn step(&mut self, _pe: usize, _event: &Event, _origin: Origin) {}
    /// End of input: a completion point.
    pub fn finish(&mut self, _origin: Origin) {}
    /// Violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }
    /// Costs counted so far.
    pub fn costs(&self) -> &Costs {
        &self.costs
    }
}

/// Feeds library effects into a machine.
pub struct ModelEffects;
