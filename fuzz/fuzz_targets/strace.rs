//! The strace capture reader and the replay on any input: every input is
//! replayed (under vmsa and the kvm baseline) or refused with a parse
//! error, never a panic or a hang. Under vmsa the replay must also be
//! correct: no violation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsa_cli::compare::{Args, Names, Selection};
use vmsa_cli::replay::{self, replay_stream};

fuzz_target!(|data: &[u8]| {
    let args = Args {
        workloads: Vec::new(),
        policies: vec!["vmsa".into(), "kvm".into()],
        profiles: vec!["native".into()],
        pes: 4,
    };
    let selection = Selection::new(&args, &Names::all()).expect("known names");
    let opts = replay::options(&replay::Args {
        touch: 2,
        ..replay::Args::default()
    });
    if let Ok(r) = replay_stream("fuzz", data, Some(2000), &selection, opts) {
        for row in &r.rows {
            assert!(
                row.policy != "vmsa" || row.violations == 0,
                "vmsa has {} violations",
                row.violations
            );
        }
    }
});
