//! The model's verdicts on Casemate's example traces
//! (`tests/data/casemate/`, see the README there) match Casemate's.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use vmsa_model::trace::{check, CheckReport};
use vmsa_model::Config;

fn run(name: &str) -> CheckReport {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/data/casemate", name]
        .iter()
        .collect();
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    check(BufReader::new(file), Config::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn clean(name: &str) {
    let report = run(name);
    assert!(report.records > 0);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.violations.is_empty(),
        "{name} is clean, but:\n{}",
        all.join("\n")
    );
}

/// The trace has a violation whose explanation names `address`.
fn violation(name: &str, address: &str) {
    let report = run(name);
    assert!(report.records > 0);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(!all.is_empty(), "{name} has a violation, none found");
    assert!(
        all.iter().any(|v| v.contains(address)),
        "{name}: no violation mentions {address}:\n{}",
        all.join("\n")
    );
}

#[test]
fn good_bbm() {
    clean("good_bbm.log");
}

#[test]
fn good_bbm_by_vmid() {
    clean("good_bbm_by_VMID.log");
}

#[test]
fn good_write() {
    clean("good_write.log");
}

#[test]
fn good_free_tree() {
    clean("good_free_tree.log");
}

#[test]
fn bad_bbm_missing_tlbi() {
    // Invalid, then valid again with no TLBI in between.
    violation("bad_bbm_missing_tlbi.log", "0xaaaadccc5000");
}

#[test]
fn bad_no_bbm() {
    // A live entry replaced without break-before-make.
    violation("bad_no_bbm.log", "0xaaaabad05000");
}

#[test]
fn bad_bbm_by_wrong_vmid() {
    // The TLBI ran with another VMID current, so it did not clean the entry.
    violation("bad_bbm_by_wrong_VMID.log", "0xaaaab9385000");
}

#[test]
fn bad_reuse_page() {
    // Table page 0xaaaac6c46000 linked into two trees.
    violation("bad_reuse_page.log", "0xaaaac6c46000");
}

#[test]
fn generated_bbm_stress_is_clean() {
    let mut trace = Vec::new();
    let records = vmsa_model::trace::bbm_stress(&mut trace, 2000, 7).unwrap();
    let report = check(&trace[..], Config::default()).unwrap();
    assert_eq!(report.records, records);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(all.is_empty(), "{}", all.join("\n"));
}

/// Casemate examples beyond the eight samples (`tests/data/casemate-more/`):
/// the same verdicts as Casemate, and the violation of the kind it reports.
#[test]
fn more_casemate_examples() {
    use vmsa_model::ViolationKind::*;
    let cases = [
        ("good_bbm_stage1.log", None),
        ("good_release_table.log", None),
        ("good_switch.log", None),
        ("good_write_child.log", None),
        ("bad_free_page_without_clean.log", Some(UseAfterFree)),
        ("bad_overlap_VMID.log", Some(IdReuse)),
        ("bad_overlap_ASID.log", Some(IdReuse)),
        ("bad_switch_wrong_vmid.log", Some(IdReuse)),
    ];
    for (name, want) in cases {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/data/casemate-more", name]
            .iter()
            .collect();
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = check(BufReader::new(file), Config::default()).unwrap();
        let kinds: Vec<_> = report.violations.iter().map(|v| v.kind).collect();
        match want {
            None => assert!(kinds.is_empty(), "{name}: {:?}", report.violations),
            Some(k) => assert_eq!(kinds, vec![k], "{name}: {:?}", report.violations),
        }
    }
}
