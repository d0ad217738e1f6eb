//! `vmsa replay` end to end: every fixture under every policy, what it
//! prints, malformed input, and input that must not make it panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proptest::prelude::*;
use serde_json::Value;

fn vmsa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmsa"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/strace")
        .join(format!("{name}.strace"))
}

/// The captures `scripts/capture-strace` made.
const FIXTURES: [&str; 4] = [
    "python3-startup",
    "gcc-compile",
    "threads8-alloc",
    "node-startup",
];

/// The real systems the policies reproduce (not the broken control or the
/// oracle).
const BASELINES: [&str; 9] = [
    "broadcast",
    "elfuse-pr24",
    "elfuse-pr65",
    "linux",
    "kvm",
    "hafnium",
    "freebsd",
    "xen",
    "aarch64-paging",
];

fn run(args: &[&str]) -> Output {
    vmsa()
        .arg("replay")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("vmsa runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_rows(args: &[&str]) -> Vec<BTreeMap<String, Value>> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON array of objects")
}

fn num(row: &BTreeMap<String, Value>, key: &str) -> u64 {
    row[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {row:?}"))
}

fn find<'a>(
    rows: &'a [BTreeMap<String, Value>],
    policy: &str,
    profile: &str,
) -> &'a BTreeMap<String, Value> {
    rows.iter()
        .find(|r| r["policy"] == policy && r["profile"] == profile)
        .unwrap_or_else(|| panic!("no row for {policy} {profile}"))
}

/// Every fixture under every policy and profile: the rows `vmsa compare`
/// prints, vmsa violation-free and cheaper than every violation-free
/// baseline, the broken control caught.
#[test]
fn every_fixture_replays_with_vmsa_clean_and_cheapest() {
    for name in FIXTURES {
        let path = fixture(name);
        let rows = json_rows(&[path.to_str().unwrap()]);
        assert_eq!(rows.len(), 12 * 2, "{name}");
        let fields = [
            "broadcast_ops",
            "collateral",
            "cycles",
            "dsb",
            "policy",
            "profile",
            "spurious_faults",
            "tlbi_ops",
            "violations",
            "workload",
        ];
        for r in &rows {
            assert_eq!(r.keys().map(String::as_str).collect::<Vec<_>>(), fields);
            assert_eq!(r["workload"], name);
        }
        // vmsa comes first in each profile's rows.
        assert_eq!(rows[0]["policy"], "vmsa");
        for profile in ["native", "nested"] {
            let v = find(&rows, "vmsa", profile);
            assert_eq!(num(v, "violations"), 0, "{name} {profile}: {v:?}");
            for b in BASELINES {
                let r = find(&rows, b, profile);
                if num(r, "violations") == 0 {
                    assert!(
                        num(r, "cycles") > num(v, "cycles"),
                        "{name} {profile}: {b} {} cycles, vmsa {}",
                        num(r, "cycles"),
                        num(v, "cycles")
                    );
                }
            }
            assert!(num(find(&rows, "none", profile), "violations") > 0);
            assert_eq!(num(find(&rows, "oracle", profile), "violations"), 0);
        }
        // Single-threaded programs: a fifth of elfuse's broadcasts at most.
        if name == "python3-startup" || name == "gcc-compile" {
            let v = num(find(&rows, "vmsa", "native"), "broadcast_ops");
            let e = num(find(&rows, "elfuse-pr24", "native"), "broadcast_ops");
            assert!(e > 0 && v * 5 <= e, "{name}: vmsa {v}, elfuse-pr24 {e}");
        }
    }
}

#[test]
fn the_table_comes_with_the_mix_of_calls() {
    let path = fixture("python3-startup");
    let out = run(&[path.to_str().unwrap(), "--profile", "native"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.starts_with("python3-startup: 48 lines, 1 address space, 1 thread"),
        "{s}"
    );
    for want in [
        "syscall",
        "calls",
        "failed",
        "skipped",
        "  mmap ",
        "  mprotect ",
        "  total ",
        "other lines: 0 unknown",
        "python3-startup (native profile, 4 PEs)",
        "policy",
        "broadcast",
        "spurious faults",
        "vs best",
        "violations",
    ] {
        assert!(s.contains(want), "no `{want}` in\n{s}");
    }
    assert!(!s.contains("nested profile"));
    let mmap = s
        .lines()
        .find(|l| l.trim_start().starts_with("mmap "))
        .unwrap();
    assert_eq!(
        mmap.split_whitespace().collect::<Vec<_>>(),
        ["mmap", "27", "0", "0"]
    );
    // With --json the mix goes to standard error.
    let out = run(&[path.to_str().unwrap(), "--json", "--policy", "vmsa"]);
    assert!(text(&out.stderr).contains("syscall"));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
}

#[test]
fn options_select_and_change_the_replay() {
    let path = fixture("threads8-alloc");
    let rows = json_rows(&[
        path.to_str().unwrap(),
        "--policy",
        "vmsa,linux",
        "--profile",
        "nested",
        "--pes",
        "8",
        "--populate",
        "lazy",
        "--touch",
        "2",
        "--max-lines",
        "400",
    ]);
    let policies: Vec<&Value> = rows.iter().map(|r| &r["policy"]).collect();
    assert_eq!(policies, ["vmsa", "linux"]);
    assert!(rows.iter().all(|r| r["profile"] == "nested"));
    assert_eq!(num(&rows[0], "violations"), 0);
    let out = run(&[path.to_str().unwrap(), "--policy", "vmsa", "--pes", "8"]);
    assert!(text(&out.stdout).contains("(native profile, 8 PEs)"));
    assert!(text(&out.stdout).contains("at most 7 vCPUs at once"));
}

#[test]
fn svg_chart_is_written() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let svg = dir.join("replay-chart.svg");
    let _ = std::fs::remove_file(&svg);
    let path = fixture("python3-startup");
    let out = run(&[
        path.to_str().unwrap(),
        "--policy",
        "vmsa,linux,elfuse-pr24",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"));
    assert!(chart.contains("python3-startup"));
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn malformed_captures_name_the_line() {
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "unbalanced.strace",
            b"1 brk(NULL) = 0x1000\n1 mmap(NULL, 4096, PROT_READ = 0x7f0000000000\n",
            "line 2: unbalanced parentheses in mmap call",
        ),
        (
            "arguments.strace",
            b"1 brk(NULL) = 0x1000\n\n1 munmap(0x1000) = 0\n",
            "line 3: munmap call: 1 argument(s), expected 2",
        ),
        (
            "binary.strace",
            b"1 brk(NULL) = 0x1000\n\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0",
            "line 2: binary data",
        ),
        (
            "gzip.strace.gz",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            "gzip-compressed",
        ),
        (
            "number.strace",
            b"mprotect(0x1000, many, PROT_READ) = 0\n",
            "line 1: mprotect call: argument 2 (length) `many` is not a number",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = write(name, bytes);
        let out = run(&[p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn unknown_names_and_missing_files_are_refused() {
    let path = fixture("python3-startup");
    let out = run(&[path.to_str().unwrap(), "--policy", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown policy `nope`; valid policies: vmsa"));
    let out = run(&[path.to_str().unwrap(), "--profile", "fast"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["/nonexistent/capture.strace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot open /nonexistent/capture.strace"));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "a file is required");
}

#[test]
fn unknown_lines_and_failed_calls_are_counted() {
    let p = write(
        "mixed.strace",
        b"1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory)\n\
          1 openat(AT_FDCWD, \"/x\", O_RDONLY) = 3\n\
          some text strace did not write\n\
          1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n\
          1 munmap(0x7f0000000000, 4096) = 0\n",
    );
    let out = run(&[
        p.to_str().unwrap(),
        "--policy",
        "vmsa",
        "--profile",
        "native",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let cells = |name: &str| -> Vec<String> {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{s}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(cells("mmap"), ["mmap", "2", "1", "0"]);
    assert_eq!(cells("openat"), ["openat", "1", "0", "1"]);
    assert!(s.contains("other lines: 1 unknown"), "{s}");
}

/// Input from standard input, `-`.
#[test]
fn reads_standard_input() {
    use std::io::Write;
    let mut child = vmsa()
        .args(["replay", "-", "--policy", "vmsa", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["workload"], "stdin");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Cut, spliced or byte-flipped captures: read or refused (status 0
    /// or 2), never a panic (101).
    #[test]
    fn mutated_captures_never_crash_the_command(
        which in 0..2usize,
        cut in any::<prop::sample::Index>(),
        len in 0..400usize,
        at in any::<prop::sample::Index>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
        flip in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let name = ["python3-startup", "gcc-compile"][which];
        let mut b = std::fs::read(fixture(name)).unwrap();
        let start = cut.index(b.len());
        let end = (start + len).min(b.len());
        b.drain(start..end);
        let at = at.index(b.len() + 1);
        b.splice(at..at, bytes);
        if !b.is_empty() {
            let i = flip.index(b.len());
            b[i] = value;
        }
        let p = write(&format!("mutated-{which}.strace"), &b);
        let out = run(&[p.to_str().unwrap(), "--policy", "vmsa,linux", "--profile", "native"]);
        let code = out.status.code();
        prop_assert!(code == Some(0) || code == Some(2), "{:?}: {}", code, text(&out.stderr));
        if code == Some(2) {
            prop_assert!(text(&out.stderr).contains("line "), "{}", text(&out.stderr));
        }
    }
}
