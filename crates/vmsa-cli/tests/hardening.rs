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

/// Runs `vmsa args` with `stdin`, bounded in time and memory.
fn vmsa(args: &[&str], stdin: &[u8]) -> Run {
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
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("vmsa {args:?} still running after {WATCHDOG:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = feeder.join();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmsa runs");
    let status = format!("/proc/{}/status", child.id());
    let mut input = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (start, mut peak) = (Instant::now(), 0);
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < WATCHDOG, "vmsa {args:?} hangs");
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
