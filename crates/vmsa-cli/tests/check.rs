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
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "../vmsa-model/tests/data/casemate",
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
    let out = vmsa(&["check", &sample("good_bbm.log")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("21 records, 0 violations"), "{stdout}");
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
