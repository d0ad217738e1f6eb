//! The Casemate trace reader and the checker on any input: every input is
//! either judged or refused with a parse error, never a panic, a hang or
//! unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsa_model::{trace, Config};

fuzz_target!(|data: &[u8]| {
    let config = Config {
        pes: 4,
        ..Config::default()
    };
    let _ = trace::check(data, config);
});
