//! `vmsa litmus`: verdicts, witnesses, the summary, JSON, and exit status.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vmsa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .args(args)
        .output()
        .expect("run vmsa")
}

fn test_file(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "../../tests/litmus/pgtable/HAND",
        &format!("{name}.litmus.toml"),
    ]
    .iter()
    .collect();
    path.to_str().unwrap().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn verdicts_witness_and_summary() {
    let out = vmsa(&[
        "litmus",
        &test_file("CoWTf.inv+svc"),
        &test_file("CoWTf.inv+dsb-isb"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("CoWTf.inv+svc: allowed"), "{s}");
    assert!(s.contains("CoWTf.inv+dsb-isb: forbidden"), "{s}");
    // The witness: the interleaving and the translation each access used.
    assert!(s.contains("    T0: SVC"), "{s}");
    assert!(s.contains("translation fault"), "{s}");
    assert!(
        s.trim_end()
            .ends_with("2 tests: 1 allowed, 1 forbidden, 0 unsupported"),
        "{s}"
    );
}

#[test]
fn json_output() {
    let out = vmsa(&["litmus", "--json", &test_file("CoWTf.inv+svc")]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["allowed"], 1);
    assert_eq!(v["tests"][0]["name"], "CoWTf.inv+svc");
    assert_eq!(v["tests"][0]["verdict"], "allowed");
    assert!(!v["tests"][0]["witness"].as_array().unwrap().is_empty());
}

#[test]
fn unsupported_tests_say_why() {
    let out = vmsa(&["litmus", &test_file("RDW.alias"), &test_file("ETS")]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(
        s.contains("ETS: unsupported: depends on relaxed ordering of ordinary accesses"),
        "{s}"
    );
}

#[test]
fn unreadable_input_exits_2_with_a_message() {
    let out = vmsa(&["litmus", "/no/such/dir/x.litmus.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains("no such file"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}
