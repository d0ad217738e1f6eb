//! The litmus runner against the outcomes the ESOP 2022 paper's strong
//! model gives (`tests/litmus/esop22-outcomes-dev.csv`): every test the
//! runner supports must agree, except the disagreements listed below with
//! their architectural reason. The test fails if that set changes, if
//! fewer than 30 of the decided tests are supported, or if agreement on
//! the supported ones falls below 95%.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use vmsa_model::litmus::{run_file, Limits, Verdict};

/// Tests where the runner's verdict differs from the strong model's, and
/// why.
const DISAGREEMENTS: &[(&str, &str)] = &[(
    "RDW.alias",
    "w and x are two virtual addresses of one physical location. The strong \
     model allows thread 1 to read w = 0 and then x = 1 with the \
     address-dependent reads of y before and z after seeing the DMB-ordered \
     writes out of order: the reads through the two aliases are not kept in \
     order the way two reads of one virtual address are, so the read of x \
     (and the read of z that depends on it) may be satisfied before the \
     read of y. Sequentially consistent interleavings cannot produce it, and \
     the runner's reorderings keep every access to one physical location in \
     program order, so it says forbidden.",
)];

/// Bound for the tests the strong model did not finish (DNF).
const DNF_LIMITS: Limits = Limits {
    states: 20_000,
    variants: 50,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/litmus")
}

fn file_of(name: &str) -> PathBuf {
    let hand = root()
        .join("pgtable/HAND")
        .join(format!("{name}.litmus.toml"));
    if hand.exists() {
        hand
    } else {
        root()
            .join("pgtable/HAND_PKVM")
            .join(format!("{name}.litmus.toml"))
    }
}

fn expected() -> Vec<(String, String)> {
    let csv = std::fs::read_to_string(root().join("esop22-outcomes-dev.csv"))
        .expect("the vendored outcomes csv");
    csv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (t, o) = l.split_once(',').expect("test,outcome");
            (t.trim().to_string(), o.trim().to_string())
        })
        .collect()
}

#[test]
fn agrees_with_the_strong_model_on_the_dev_outcomes() {
    let start = Instant::now();
    let mut decided = 0;
    let mut supported = 0;
    let mut agree = 0;
    let mut disagreements = BTreeMap::new();
    let mut unsupported = Vec::new();
    for (name, want) in expected() {
        let dnf = want == "DNF";
        let limits = if dnf { DNF_LIMITS } else { Limits::default() };
        let out = run_file(&file_of(&name), limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.name, name, "the file's name field");
        if dnf {
            // The strong model did not finish: report what the runner does
            // within its bound.
            eprintln!("DNF {name}: {:?} ({} states)", out.verdict, out.states);
            continue;
        }
        decided += 1;
        match &out.verdict {
            Verdict::Unsupported(why) => unsupported.push(format!("{name}: {why}")),
            v => {
                supported += 1;
                if v.word() == want {
                    agree += 1;
                } else {
                    disagreements.insert(name.clone(), (want.clone(), v.word()));
                }
            }
        }
    }
    for u in &unsupported {
        eprintln!("unsupported {u}");
    }
    eprintln!(
        "{supported} of {decided} decided tests supported, {agree} agree; {:?}",
        start.elapsed()
    );
    for (name, (want, got)) in &disagreements {
        eprintln!("disagreement {name}: strong model {want}, runner {got}");
    }
    let listed: Vec<&str> = DISAGREEMENTS.iter().map(|d| d.0).collect();
    let found: Vec<&str> = disagreements.keys().map(String::as_str).collect();
    assert_eq!(found, listed, "the set of disagreements changed");
    assert!(supported >= 30, "only {supported} decided tests supported");
    assert!(
        agree * 100 >= supported * 95,
        "agreement {agree}/{supported} is below 95%"
    );
}

#[test]
fn the_dev_csv_names_vendored_tests() {
    for (name, _) in expected() {
        assert!(file_of(&name).exists(), "{name} is not vendored");
    }
}

#[test]
fn context_synchronization_expectations() {
    // The expectations of the brief, one by one, with their reasons.
    let cases = [
        // DSB waits for the PTE store; ISB makes the next walk see it.
        ("CoWTf.inv+dsb-isb", "forbidden"),
        // No DSB before the exception entry: the walk may read the old
        // (invalid) descriptor.
        ("CoWTf.inv+svc", "allowed"),
        ("CoWTf.inv.EL1+dsb-svc", "forbidden"),
        ("CoWTf.inv.EL1+eret", "allowed"),
    ];
    for (name, want) in cases {
        let out = run_file(&file_of(name), Limits::default()).expect("runs");
        assert_eq!(out.verdict.word(), want, "{name}: {:?}", out.verdict);
        if want == "allowed" {
            assert!(!out.witness.is_empty(), "{name} has a witness");
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    use vmsa_model::litmus::{run_source, Error};
    assert!(matches!(
        run_file(&root().join("no-such.litmus.toml"), Limits::default()),
        Err(Error::Io(_))
    ));
    assert!(matches!(
        run_source("this is = = not toml", Limits::default()),
        Err(Error::Parse(_))
    ));
    let odd = r#"
        name = "odd"
        page_table_setup = "physical pa1; x |-> pa1;"
        symbolic = ["x"]
        [thread.0]
        code = "FROB X0"
        [final]
        assertion = "0:X0 = 1"
    "#;
    let out = run_source(odd, Limits::default()).expect("a readable test");
    assert!(matches!(out.verdict, Verdict::Unsupported(ref w) if w.contains("FROB")));
}
