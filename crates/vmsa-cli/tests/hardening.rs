//! Bad input and bad options: every case ends with the right exit status
//! and a clear message, never a hang or a blow-up. Each command runs under
//! a watchdog (killed after two minutes: a generous bound, not a timing
//! assertion) and a 4 GiB address-space limit.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(120);
/// `ulimit -v`, KiB.
const MEMORY_KIB: u64 = 4 << 20;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `vmsa args` with `stdin`, bounded in time and memory, calling
/// `watch` with its pid every few milliseconds while it runs.
fn watched(args: &[&str], stdin: &[u8], mut watch: impl FnMut(u32)) -> Run {
    // `exec` keeps the pid: the limit and `watch` apply to vmsa itself.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_vmsa"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmsa runs");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    // Drained while it runs, so that a full pipe never stalls it.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = r.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("vmsa {args:?} still running after {WATCHDOG:?}: it hangs");
        }
        watch(child.id());
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `vmsa args` with `stdin`, bounded in time and memory.
fn vmsa(args: &[&str], stdin: &[u8]) -> Run {
    watched(args, stdin, |_| {})
}

fn fixture(rel: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", rel]
        .iter()
        .collect();
    p.to_str().unwrap().to_string()
}

#[test]
fn replay_touch_is_bounded() {
    let r = vmsa(
        &["replay", "--touch", "1000000000", "-"],
        b"1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not in 0..=1024"), "{}", r.stderr);
}

#[test]
fn replay_eager_limit_is_bounded() {
    let r = vmsa(&["replay", "--eager-limit", "5000", "-"], b"");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not in 0..=4096"), "{}", r.stderr);
}

#[test]
fn an_unwritable_chart_fails_before_the_work() {
    let capture = fixture("tests/fixtures/strace/python3-startup.strace");
    for cmd in [
        vec!["compare", "--svg", "/nonexistent/chart.svg"],
        vec!["replay", "--svg", "/nonexistent/chart.svg", &capture],
    ] {
        let r = vmsa(&cmd, b"");
        assert_eq!(r.code, 2, "{cmd:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("cannot write /nonexistent/chart.svg"),
            "{cmd:?}: {}",
            r.stderr
        );
        // Nothing was run: no table.
        assert!(r.stdout.is_empty(), "{cmd:?}: {}", r.stdout);
    }
}

#[test]
fn a_chart_that_cannot_be_written_still_leaves_the_table() {
    if !std::path::Path::new("/dev/full").exists() {
        panic!("this test needs /dev/full (Linux)");
    }
    let r = vmsa(
        &[
            "replay",
            "--svg",
            "/dev/full",
            "--policy",
            "vmsa",
            &fixture("tests/fixtures/strace/python3-startup.strace"),
        ],
        b"",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot write /dev/full"), "{}", r.stderr);
    assert!(r.stdout.contains("cheapest correct: vmsa"), "{}", r.stdout);
}

/// The peak resident set (KiB) of `vmsa args` fed `stdin`, read from
/// /proc while it runs.
fn peak_kib(args: &[&str], stdin: Vec<u8>) -> u64 {
    let mut peak = 0;
    let r = watched(args, &stdin, |pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
    });
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(peak > 0, "no VmHWM read for vmsa {args:?}");
    peak
}

/// `lines` lines of a program mapping and unmapping a page over and over.
fn churn(lines: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..lines / 2 {
        let a = 0x7f00_0000_0000u64 + (i as u64 % 64) * 0x10000;
        s.push_str(&format!(
            "100 mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = {a:#x}\n\
             100 munmap({a:#x}, 4096) = 0\n"
        ));
    }
    s.into_bytes()
}

#[test]
fn replay_memory_does_not_grow_with_the_capture() {
    let args = [
        "replay",
        "--policy",
        "vmsa",
        "--profile",
        "native",
        "--touch",
        "0",
        "-",
    ];
    let short = peak_kib(&args, churn(10_000));
    let long = peak_kib(&args, churn(80_000));
    // Eight times the lines (about 5 MB more text, 70,000 more events):
    // held in memory they would add megabytes; streamed, nothing.
    assert!(
        long < short + 2048,
        "peak {short} KiB for 10,000 lines, {long} KiB for 80,000"
    );
}

#[test]
fn check_refuses_a_region_that_wraps() {
    let r = vmsa(
        &["check", "-"],
        b"(mem-init (id 0) (tid 0) (address 0x1000) (size 0xffffffffffffffff) (src \"x.c:1\"))\n",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 1")
            && r.stderr
                .contains("wraps past the top of the 64-bit address space"),
        "{}",
        r.stderr
    );
}

#[test]
fn check_judges_huge_regions_without_visiting_every_page() {
    // Not wrapping, but 2^60 bytes: judged, in bounded time and memory.
    let r = vmsa(
        &["check", "-"],
        b"(mem-init (id 0) (tid 0) (address 0x0) (size 0x1000000000000000))\n\
          (mem-free (id 1) (tid 0) (address 0x0) (size 0x1000000000000000))\n\
          (mem-set (id 2) (tid 0) (address 0x0) (size 0x1000000000000000) (value 0x0))\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("3 records, 0 violations"), "{}", r.stdout);
}

#[test]
fn check_says_an_empty_trace_had_no_records() {
    let r = vmsa(&["check", "-"], b"");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no records"), "{}", r.stderr);
}

#[test]
fn errors_quote_only_a_short_excerpt_of_the_input() {
    let mut line = b"(mem-frob ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 10 << 20));
    line.extend(b")\n");
    let r = vmsa(&["check", "-"], &line);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("line 1"), "{}", r.stderr);
    assert!(r.stderr.len() < 1000, "{} bytes of message", r.stderr.len());
}

#[test]
fn every_command_that_reads_a_file_takes_standard_input() {
    let file = |rel: &str| std::fs::read(fixture(rel)).unwrap();
    let trace = file("crates/vmsa-model/tests/data/casemate/good_write.log");
    let r = vmsa(&["check", "-"], &trace);
    assert_eq!(r.code, 0, "check: {}", r.stderr);
    let capture = file("tests/fixtures/strace/python3-startup.strace");
    let r = vmsa(&["replay", "--policy", "vmsa", "-"], &capture);
    assert_eq!(r.code, 0, "replay: {}", r.stderr);
    assert!(r.stdout.contains("stdin"), "{}", r.stdout);
    let test = file("tests/litmus/pgtable/HAND/CoWTf.inv+dsb-isb.litmus.toml");
    let r = vmsa(&["litmus", "-"], &test);
    assert_eq!(r.code, 0, "litmus: {}", r.stderr);
    assert!(
        r.stdout.contains("CoWTf.inv+dsb-isb: forbidden"),
        "{}",
        r.stdout
    );
    let dir = fixture("tests/fixtures/oplog");
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ops"))
        .expect("an operation log");
    let r = vmsa(
        &["replay-ops", "--policy", "vmsa", "-"],
        &std::fs::read(log).unwrap(),
    );
    assert_eq!(r.code, 0, "replay-ops: {}", r.stderr);
}

#[test]
fn counts_from_the_command_line_are_bounded() {
    let r = vmsa(
        &["trace-gen", "bbm-stress", "--cycles", "1000000000000"],
        b"",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not in 0..=100000000"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let r = vmsa(&["litmus", "--max-states", "0", "-"], b"");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not in 1..=10000000"), "{}", r.stderr);
}

#[test]
fn a_generated_trace_to_a_bad_path_names_the_file() {
    let r = vmsa(
        &[
            "trace-gen",
            "bbm-stress",
            "--cycles",
            "10",
            "-o",
            "/nonexistent/t.log",
        ],
        b"",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot write /nonexistent/t.log"),
        "{}",
        r.stderr
    );
}
