//! Tests of the replay as a whole: traces through the simulation, and
//! inputs that must never make it panic.

use proptest::prelude::*;

use super::parse::{Event, Parser};
use super::sim::{replay, Options, Outcome};
use super::space::Populate;
use super::*;

const PYTHON: &str = include_str!("../../../../tests/fixtures/strace/python3-startup.strace");
const GCC: &str = include_str!("../../../../tests/fixtures/strace/gcc-compile.strace");

fn events(text: &str) -> Vec<Event> {
    Parser::new(text.as_bytes()).map(|e| e.unwrap()).collect()
}

fn opts() -> Options {
    Options {
        pes: 4,
        populate: Populate::Eager { limit: 8 << 20 },
        touch: 4,
    }
}

fn run(text: &str, policy: &str) -> Outcome {
    replay(&events(text), policy, &vmsa_model::cost::NATIVE, opts())
}

/// A process that maps, splits, protects, remaps and unmaps, and a second
/// thread that joins it for a while.
const SMALL: &str = "\
100 execve(\"/bin/x\", [\"x\"], 0x7ffd /* 1 var */) = 0
100 brk(NULL) = 0x5555000
100 brk(0x5576000) = 0x5576000
100 mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
100 mprotect(0x7f0000004000, 8192, PROT_READ) = 0
100 mmap(0x7f0000008000, 8192, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED, 3, 0) = 0x7f0000008000
100 clone3({flags=CLONE_VM|CLONE_FS|CLONE_THREAD, exit_signal=0} => {parent_tid=[101]}, 88) = 101
101 mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000
100 munmap(0x7f0000002000, 4096 <unfinished ...>
101 mprotect(0x7f0000100000, 4096, PROT_NONE) = 0
100 <... munmap resumed>) = 0
101 mremap(0x7f0000100000, 16384, 32768, MREMAP_MAYMOVE) = 0x7f0000200000
101 madvise(0x7f0000201000, 8192, MADV_DONTNEED) = 0
101 +++ exited with 0 +++
100 mprotect(0x7f0000000000, 16384, PROT_READ) = 0
100 mprotect(0x7f0000000000, 16384, PROT_READ|PROT_WRITE) = 0
100 brk(0x5565000) = 0x5565000
100 munmap(0x7f0000000000, 65536) = 0
100 exit_group(0) = ?
100 +++ exited with 0 +++
";

#[test]
fn every_faithful_policy_replays_cleanly_and_the_broken_control_is_caught() {
    for &policy in compare::policies::NAMES {
        let o = run(SMALL, policy);
        if policy == "none" {
            assert!(o.violations > 0, "the control must be caught");
        } else {
            assert_eq!(o.violations, 0, "{policy}: {:?}", o.first_violations);
        }
        assert_eq!(o.stats.spaces, 1);
        assert_eq!(o.stats.threads, 2);
        assert_eq!(o.stats.max_vcpus, 2);
        assert!(o.stats.skipped.is_empty(), "{:?}", o.stats.skipped);
    }
}

#[test]
fn one_vcpu_is_invalidated_locally_and_two_need_broadcasts() {
    // While the second thread runs, vmsa broadcasts; alone, it does not.
    let single: String = SMALL
        .lines()
        .filter(|l| !l.starts_with("101") && !l.contains("clone3"))
        .map(|l| format!("{l}\n"))
        .collect();
    let o = run(&single, "vmsa");
    assert_eq!(o.violations, 0);
    assert!(o.costs.tlbis() > 0);
    assert_eq!(o.costs.broadcast_tlbis(), 0, "{}", o.costs);
    let o = run(SMALL, "vmsa");
    assert!(o.costs.broadcast_tlbis() > 0, "{}", o.costs);
    // A baseline broadcasts either way.
    let o = run(&single, "elfuse-pr24");
    assert!(o.costs.broadcast_tlbis() > 0);
}

#[test]
fn vfork_children_share_a_vcpu_until_execve() {
    let text = "\
1 execve(\"/usr/bin/gcc\", [\"gcc\"], 0x7ffd /* 1 var */) = 0
1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
1 vfork( <unfinished ...>
2 execve(\"/usr/lib/cc1\", [\"cc1\"], 0x7ffd /* 1 var */) = 0
1 <... vfork resumed>) = 2
2 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
2 munmap(0x7f0000000000, 8192) = 0
2 exit_group(0) = ?
2 +++ exited with 0 +++
1 munmap(0x7f0000000000, 8192) = 0
3 execve(\"/usr/bin/as\", [\"as\"], 0x7ffd /* 1 var */) = 0
3 brk(NULL) = 0x1000000
1 exit_group(0) = ?
";
    let o = run(text, "vmsa");
    assert_eq!(o.violations, 0);
    // gcc, cc1, and as (a pid no clone names, exec'ing).
    assert_eq!(o.stats.spaces, 3);
    assert_eq!(o.stats.max_vcpus, 1);
    assert_eq!(o.costs.broadcast_tlbis(), 0);
    // A vfork child that has not exec'd yet shares its parent's space.
    let shared = "\
1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
1 vfork() = 2
2 munmap(0x7f0000000000, 4096) = 0
2 execve(\"/bin/true\", [\"true\"], 0x7ffd /* 1 var */) = 0
1 mprotect(0x7f0000001000, 4096, PROT_READ) = 0
";
    let o = run(shared, "vmsa");
    assert_eq!(o.violations, 0);
    assert_eq!(o.stats.spaces, 2);
    assert_eq!(o.stats.implicit_pages, 0);
}

#[test]
fn forked_children_get_a_copy() {
    let text = "\
1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
1 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 2
2 mprotect(0x7f0000000000, 8192, PROT_READ) = 0
1 munmap(0x7f0000000000, 8192) = 0
";
    for policy in ["vmsa", "linux", "elfuse-pr65"] {
        let o = run(text, policy);
        assert_eq!(o.violations, 0, "{policy}");
        assert_eq!(o.stats.spaces, 2);
        // The child found its copy: nothing implicit.
        assert_eq!(o.stats.implicit_pages, 0);
    }
}

#[test]
fn plain_strace_f_pids_are_joined() {
    // The first process's lines have no pid until a second one exists.
    let text = "\
mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0}strace: Process 11 attached
 <unfinished ...>
[pid    11] mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000
[pid    10] <... clone3 resumed> => {parent_tid=[11]}, 88) = 11
[pid    10] munmap(0x7f0000000000, 8192) = 0
[pid    11] +++ exited with 0 +++
";
    let o = run(text, "vmsa");
    assert_eq!(o.violations, 0);
    assert_eq!(o.stats.spaces, 1);
    assert_eq!(o.stats.threads, 2);
    assert_eq!(o.stats.untraced_pids, 0);
    let t = read_trace(text.as_bytes(), None).unwrap();
    assert_eq!(t.mix.unmatched, 0);
    assert_eq!(t.mix.calls["clone3"].calls, 1);
}

#[test]
fn out_of_range_calls_are_skipped_and_counted() {
    let text = "\
mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0xffff800000000000
munmap(0xfffffffffffff000, 8192) = 0
mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
";
    let o = run(text, "vmsa");
    assert_eq!(o.stats.skipped.get("mmap"), Some(&1));
    assert_eq!(o.stats.skipped.get("munmap"), Some(&1));
    assert_eq!(o.stats.batches, 1);
}

#[test]
fn lazy_population_maps_on_touch() {
    let lazy = Options {
        populate: Populate::Lazy,
        ..opts()
    };
    let o = replay(&events(SMALL), "vmsa", &vmsa_model::cost::NATIVE, lazy);
    assert_eq!(o.violations, 0);
    assert!(o.stats.faulted_pages > 0);
    let eager = run(SMALL, "vmsa");
    assert!(eager.stats.faulted_pages < o.stats.faulted_pages);
    let untouched = Options { touch: 0, ..lazy };
    let o = replay(&events(SMALL), "vmsa", &vmsa_model::cost::NATIVE, untouched);
    assert_eq!(o.stats.faulted_pages, 0);
    assert_eq!(o.stats.accesses, 0);
}

#[test]
fn max_lines_truncates() {
    let all = read_trace(PYTHON.as_bytes(), None).unwrap();
    let some = read_trace(PYTHON.as_bytes(), Some(10)).unwrap();
    assert_eq!(some.mix.lines, 10);
    assert!(some.events.len() < all.events.len());
    assert_eq!(all.mix.lines, PYTHON.lines().count() as u64);
}

#[test]
fn gzip_captures_read_as_their_text() {
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(PYTHON.as_bytes()).unwrap();
    let z = z.finish().unwrap();
    let plain = read_trace(PYTHON.as_bytes(), None).unwrap();
    let unzipped = read_trace(&z[..], None).unwrap();
    assert_eq!(plain.events, unzipped.events);
    assert_eq!(plain.mix.lines, unzipped.mix.lines);
    // Cut short: an error that says what the data was.
    let Err(e) = read_trace(&z[..z.len() / 2], None) else {
        panic!("a truncated gzip capture was accepted");
    };
    assert!(e.to_string().contains("gzip"), "{e}");
}

#[test]
fn workload_names() {
    assert_eq!(
        workload_name(Path::new("a/b/gcc-compile.strace")),
        "gcc-compile"
    );
    assert_eq!(workload_name(Path::new("x.txt")), "x");
    assert_eq!(workload_name(Path::new("x.y")), "x.y");
    assert_eq!(workload_name(Path::new("-")), "stdin");
}

/// Parses and replays whatever `bytes` holds; it may be refused, never
/// panic.
fn survive(bytes: &[u8]) {
    let Ok(t) = read_trace(bytes, None) else {
        return;
    };
    let o = replay(
        &t.events,
        "vmsa",
        &vmsa_model::cost::NATIVE,
        Options { touch: 2, ..opts() },
    );
    let _ = o.costs.estimate(&vmsa_model::cost::NATIVE);
}

/// One mutation of a capture.
#[derive(Clone, Debug)]
enum Mutation {
    /// Delete bytes [at, at + len).
    Delete(usize, usize),
    /// Insert these bytes at.
    Insert(usize, Vec<u8>),
    /// Replace the byte at.
    Set(usize, u8),
    /// Copy line i over line j.
    CopyLine(usize, usize),
    /// Swap lines i and j.
    SwapLines(usize, usize),
    /// Replace a digit.
    Digit(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        Just(b"(".to_vec()),
        Just(b")".to_vec()),
        Just(b"\"".to_vec()),
        Just(b" <unfinished ...>\n".to_vec()),
        Just(b"<... mmap resumed>) = 0x7f0000000000\n".to_vec()),
        Just(b"MAP_FIXED|".to_vec()),
        Just(b"0xffffffffffff".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\x00\xff".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), 1..200usize).prop_map(|(a, l)| Mutation::Delete(a, l)),
        (any::<usize>(), token).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::CopyLine(i, j)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::SwapLines(i, j)),
        (any::<usize>(), b'0'..=b'9').prop_map(|(a, d)| Mutation::Digit(a, d)),
    ]
}

fn mutate(text: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for m in ms {
        let n = b.len().max(1);
        match m {
            Mutation::Delete(at, len) => {
                let at = at % n;
                let end = (at + len).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Insert(at, t) => {
                let at = at % (b.len() + 1);
                b.splice(at..at, t.iter().copied());
            }
            Mutation::Set(at, v) => {
                if !b.is_empty() {
                    b[at % n] = *v;
                }
            }
            Mutation::Digit(at, d) => {
                let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    b[digits[at % digits.len()]] = *d;
                }
            }
            Mutation::CopyLine(i, j) | Mutation::SwapLines(i, j) => {
                let mut lines: Vec<Vec<u8>> =
                    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                let k = lines.len();
                let (i, j) = (i % k, j % k);
                if matches!(m, Mutation::CopyLine(..)) {
                    lines[j] = lines[i].clone();
                } else {
                    lines.swap(i, j);
                }
                b = lines.join(&b'\n');
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        survive(&bytes);
    }

    #[test]
    fn random_text_never_panics(lines in proptest::collection::vec(
        "[0-9]{0,5} ?(mmap|munmap|mprotect|mremap|brk|madvise|clone3?|vfork|execve|exit_group|<\\.\\.\\. mmap resumed>)\\(?[-0-9a-fx, A-Z_|(){}\\[\\]=\"<>.]{0,60}( = (-1 ENOMEM|\\?|0x[0-9a-f]{1,13}|[0-9]{1,6}))?",
        0..40,
    )) {
        survive(lines.join("\n").as_bytes());
    }

    #[test]
    fn mutated_captures_never_panic(
        gcc in any::<bool>(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        // The python capture whole, or the first part of the gcc one.
        let text = if gcc { &GCC[..GCC.len().min(12_000)] } else { PYTHON };
        survive(&mutate(text, &ms));
    }
}

/// A random call by one of three threads on a 96-page window, as strace
/// prints it.
fn random_line() -> impl Strategy<Value = String> {
    const B: u64 = 0x7f00_0000_0000;
    let tid = 1..=3u32;
    let page = 0..96u64;
    let len = 1..20u64;
    let prots = prop_oneof![
        Just("PROT_NONE"),
        Just("PROT_READ"),
        Just("PROT_READ|PROT_WRITE"),
        Just("PROT_READ|PROT_EXEC"),
        Just("PROT_READ|PROT_WRITE|PROT_EXEC"),
    ];
    prop_oneof![
        (tid.clone(), page.clone(), len.clone(), prots.clone()).prop_map(|(t, a, l, p)| format!(
            "{t} mmap({:#x}, {}, {p}, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = {:#x}",
            B + a * 4096,
            l * 4096,
            B + a * 4096
        )),
        (tid.clone(), page.clone(), len.clone()).prop_map(|(t, a, l)| format!(
            "{t} munmap({:#x}, {}) = 0",
            B + a * 4096,
            l * 4096
        )),
        (tid.clone(), page.clone(), len.clone(), prots).prop_map(|(t, a, l, p)| format!(
            "{t} mprotect({:#x}, {}, {p}) = 0",
            B + a * 4096,
            l * 4096
        )),
        (
            tid.clone(),
            page.clone(),
            len.clone(),
            len.clone(),
            page.clone()
        )
            .prop_map(|(t, a, l, n, to)| format!(
                "{t} mremap({:#x}, {}, {}, MREMAP_MAYMOVE|MREMAP_FIXED, {:#x}) = {:#x}",
                B + a * 4096,
                l * 4096,
                n * 4096,
                B + to * 4096,
                B + to * 4096
            )),
        (tid.clone(), page, len).prop_map(|(t, a, l)| format!(
            "{t} madvise({:#x}, {}, MADV_DONTNEED) = 0",
            B + a * 4096,
            l * 4096
        )),
        (tid, 0..64u64).prop_map(|(t, n)| format!(
            "{t} brk({:#x}) = {:#x}",
            0x5000_0000 + n * 4096,
            0x5000_0000 + n * 4096
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Random calls by three threads: every faithful policy replays them
    /// with no violation.
    #[test]
    fn random_calls_replay_cleanly(lines in proptest::collection::vec(random_line(), 1..40)) {
        let mut text = String::from(
            "1 brk(NULL) = 0x50000000\n\
             1 clone3({flags=CLONE_VM|CLONE_THREAD} => {parent_tid=[2]}, 88) = 2\n\
             1 clone3({flags=CLONE_VM|CLONE_THREAD} => {parent_tid=[3]}, 88) = 3\n",
        );
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        let evs = events(&text);
        for &policy in compare::policies::NAMES {
            // (freebsd names every page of an emptied table's region, up to
            // 2^18 TLBIs a flush here: too slow for this test.)
            if policy == "none" || policy == "freebsd" {
                continue;
            }
            let o = replay(&evs, policy, &vmsa_model::cost::NATIVE, opts());
            prop_assert_eq!(o.violations, 0, "{}: {:?}\n{}", policy, o.first_violations, text);
        }
    }
}

/// After two threads exit, the remaining thread's changes are invalidated
/// locally; an unmap that empties a table frees the table page and it is
/// linked again. The put PEs could still hold the old table descriptor, so
/// the table invalidates table removals on every PE (not locally) and the
/// model reports nothing.
#[test]
fn table_reuse_after_the_other_threads_exit() {
    let text = "\
1 clone3({flags=CLONE_VM|CLONE_THREAD} => {parent_tid=[2]}, 88) = 2
1 clone3({flags=CLONE_VM|CLONE_THREAD} => {parent_tid=[3]}, 88) = 3
2 +++ exited with 0 +++
1 +++ exited with 0 +++
3 mprotect(0x7f0000000000, 4096, PROT_NONE) = 0
3 mprotect(0x7f0000000000, 8192, PROT_READ|PROT_EXEC) = 0
";
    let o = run(text, "vmsa");
    assert_eq!(o.violations, 0, "{:?}", o.first_violations);
}

const THREADS: &str = include_str!("../../../../tests/fixtures/strace/threads8-alloc.strace");

/// The streamed replay (the driver on the parsing thread, the policies'
/// models on two others, a chunk of commands at a time) gives every policy
/// the rows a replay of the whole trace in one thread gives.
#[test]
fn the_stream_gives_the_rows_of_the_whole_replay() {
    let selection = Selection {
        workloads: vec!["threads8"],
        policies: compare::policies::NAMES.to_vec(),
        profiles: vec!["native"],
    };
    let streamed = replay_stream("threads8", THREADS.as_bytes(), None, &selection, opts()).unwrap();
    let evs = events(THREADS);
    let mut driver = sim::Driver::new(opts());
    for ev in &evs {
        driver.event(ev);
    }
    driver.finish();
    let commands = driver.commands().len();
    assert!(
        commands > CHUNK,
        "{commands} commands: the trace should span chunks"
    );
    let whole: Vec<Row> = selection
        .policies
        .iter()
        .map(|&p| {
            let o = replay(&evs, p, &vmsa_model::cost::NATIVE, opts());
            row("threads8", p, "native", &o)
        })
        .collect();
    assert_eq!(streamed.rows, whole);
    assert_eq!(&streamed.stats, driver.stats());
    assert!(streamed.stats.max_vcpus > 1);
}
