//! The broken control.

use vmsa::plan::{Invalidator, Purpose, Space};
use vmsa::report::Change;
use vmsa::Effects;

/// No invalidation at all: a broken control the checkers must catch.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInvalidation;

impl Invalidator for NoInvalidation {
    fn name(&self) -> &'static str {
        "none"
    }
    fn invalidate(
        &self,
        _space: &Space,
        _purpose: Purpose,
        _changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        _fx: &mut dyn Effects,
    ) -> bool {
        false
    }
}
