//! The litmus test reader and runner on any input: every input is judged,
//! reported unsupported or refused with an error, never a panic; the
//! state bound keeps every search finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsa_model::litmus::{run_source, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits {
        states: 2000,
        variants: 8,
    };
    let _ = run_source(src, limits);
});
