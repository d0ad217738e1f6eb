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
