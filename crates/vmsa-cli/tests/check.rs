//! `vmsa check` and `vmsa trace-gen`: exit status and messages.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vmsa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .args(args)
        .output()
        .expect("run vmsa")
}

fn sample(name: &str) -> String {
    sample_in("casemate", name)
}

fn sample_in(dir: &str, name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "../vmsa-model/tests/data",
        dir,
        name,
    ]
    .iter()
    .collect();
    path.to_str().unwrap().to_string()
}

/// A path in the temporary directory no other test run uses.
fn temp_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "vmsa-cli-test-{}-{nanos}-{name}",
        std::process::id()
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn malformed_trace_exits_2_naming_the_line() {
    let path = temp_path("malformed.log");
    std::fs::write(
        &path,
        "(lock (id 0) (tid 0) (address 42))\n\
         (mem-write (id 1) (tid 0) (mem-order plain)\n  (address 0x1000) (value 0xzz))\n",
    )
    .unwrap();
    let out = vmsa(&["check", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("vmsa check: {}: line 3: ", path.display())),
        "{err}"
    );
    assert!(err.contains("0xzz"), "{err}");
}

#[test]
fn missing_file_exits_2() {
    let path = temp_path("does-not-exist.log");
    let out = vmsa(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("vmsa check: "));
}

#[test]
fn clean_trace_exits_0() {
    let out = vmsa(&["check", &sample("good_free_tree.log")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("13 records, 0 violations"), "{stdout}");
}

/// Casemate's `good_bbm` programs VTCR_EL2 = 0x10 (T0SZ 16 with SL0 0):
/// not a consistent stage 2 geometry, which is a violation (exit 1), the
/// only one.
#[test]
fn inconsistent_vtcr_exits_1() {
    let out = vmsa(&["check", &sample("good_bbm.log")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("21 records, 1 violation,"), "{stdout}");
    assert!(
        stdout.contains("register programming at 0x23f000") && stdout.contains("VTCR_EL2 = 0x10"),
        "{stdout}"
    );
}

/// Lock discipline is judged with `--locks` only.
#[test]
fn locks_flag_adds_casemates_lock_discipline() {
    for name in ["bad_unlocked_write.log", "bad_no_assoc_lock.log"] {
        let trace = sample_in("casemate-more", name);
        let plain = vmsa(&["check", &trace]);
        assert_eq!(
            plain.status.code(),
            Some(0),
            "{name}: {}",
            text(&plain.stdout)
        );
        let locks = vmsa(&["check", "--locks", &trace]);
        let stdout = text(&locks.stdout);
        assert_eq!(locks.status.code(), Some(1), "{name}: {stdout}");
        assert!(stdout.contains("lock discipline at "), "{name}: {stdout}");
    }
    // A trace that keeps the discipline is clean with it too.
    let out = vmsa(&["check", "--locks", &sample("good_free_tree.log")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn violation_exits_1() {
    // Needs the machine to find the missing TLBI.
    let out = vmsa(&["check", &sample("bad_bbm_missing_tlbi.log")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("0xaaaadccc5000"), "{stdout}");
}

#[test]
fn tids_add_pes_up_to_64() {
    let path = temp_path("tid.log");
    std::fs::write(&path, "(lock (id 0) (tid 5) (address 42))\n").unwrap();
    let ok = vmsa(&["check", "--pes", "2", path.to_str().unwrap()]);
    std::fs::write(&path, "(lock (id 0) (tid 64) (address 42))\n").unwrap();
    let out = vmsa(&["check", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 1: tid 64"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn generated_trace_checks_clean() {
    let path = temp_path("bbm-stress.log");
    let gen = vmsa(&[
        "trace-gen",
        "bbm-stress",
        "--cycles",
        "100",
        "--seed",
        "3",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert_eq!(gen.status.code(), Some(0), "{}", text(&gen.stderr));
    let out = vmsa(&["check", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let stdout = text(&out.stdout);
    // 525 setup records and 9 per cycle.
    assert!(stdout.contains("1425 records"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // Standard output by default, the same trace.
    let to_stdout = vmsa(&["trace-gen", "bbm-stress", "--cycles", "1", "--seed", "3"]);
    assert_eq!(to_stdout.status.code(), Some(0));
    assert_eq!(text(&to_stdout.stdout).lines().count(), 534);
}

fn json(args: &[&str]) -> (Output, serde_json::Value) {
    let out = vmsa(args);
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&out.stdout), text(&out.stderr)));
    (out, value)
}

/// The estimates of a `--json` report: one per profile, native and nested.
fn assert_estimates(report: &serde_json::Value) {
    let estimates = report["estimates"].as_array().unwrap();
    let profiles: Vec<&str> = estimates
        .iter()
        .map(|e| e["profile"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["native", "nested"]);
    for e in estimates {
        let parts: u64 = e["parts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(e["cycles"].as_u64(), Some(parts), "{e}");
        assert!(e["parts"]["DSB (TLBI completion)"].as_u64().unwrap() > 0);
    }
}

#[test]
fn json_of_good_bbm_has_only_the_register_violation_and_both_estimates() {
    let (out, report) = json(&["check", "--json", &sample("good_bbm.log")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(report["records"], 21);
    let violations = report["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{report}");
    assert_eq!(violations[0]["kind"], "register_programming");
    assert!(report["file"].as_str().unwrap().ends_with("good_bbm.log"));
    let costs = &report["costs"];
    assert_eq!(costs["tlbi_ops"], 1);
    assert_eq!(costs["broadcast_ops"], 1);
    assert_eq!(costs["tlbi"]["alle1is"], 1);
    assert_eq!(costs["dsb"], 2);
    assert_eq!(costs["writes"], 3);
    for field in [
        "dsb_light",
        "isb",
        "collateral",
        "refill_walks",
        "spurious_faults",
    ] {
        assert!(costs[field].is_u64(), "{field}: {costs}");
    }
    assert_estimates(&report);
}

#[test]
fn json_of_a_violating_trace_lists_each_violation_with_its_fields() {
    let (out, report) = json(&["check", "--json", &sample("bad_bbm_missing_tlbi.log")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let violations = report["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{report}");
    let v = &violations[0];
    assert_eq!(v["kind"], "bbm_unclean_to_valid");
    assert_eq!(v["kind_name"], "BBM invalid unclean->valid");
    assert_eq!(v["line"], 13);
    assert_eq!(v["event"], 12);
    assert_eq!(v["pes"], serde_json::json!([0]));
    assert_eq!(v["address"], "0xaaaadccc5000");
    assert!(
        v["message"].as_str().unwrap().contains("TLBI IPAS2E1IS"),
        "{v}"
    );
    // The same findings as the text report.
    let plain = text(&vmsa(&["check", &sample("bad_bbm_missing_tlbi.log")]).stdout);
    assert!(plain.contains(v["message"].as_str().unwrap()), "{plain}");
    assert_estimates(&report);
}

#[test]
fn json_errors_still_exit_2_with_a_message() {
    let out = vmsa(&["check", "--json", temp_path("nope.log").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).starts_with("vmsa check: "));
}
