//! Cost accounting (being written).
/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    /// Events processed.
    pub events: u64,
}
