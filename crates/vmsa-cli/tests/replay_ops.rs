//! `vmsa replay-ops` end to end: synthetic operation logs written here the
//! way vmsa-hyp writes them (identity map, activation, vCPU loads, dirty
//! logging, migrations, block splits and collapses, swap), bad input, and
//! the committed logs of live runs in `tests/fixtures/oplog/`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use vmsa::oplog::{Encoder, FaultKind, Op};
use vmsa::{Ipa, Pa, S2ap, Stage2Attrs};

const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const RAM_BASE: u64 = 0x4000_0000;

fn ro() -> Stage2Attrs {
    Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly)
}

/// A guest RAM page as the generator's hypervisor knows it.
#[derive(Clone, Copy)]
struct Page {
    /// Its frame, or `None` while swapped out.
    frame: Option<u64>,
    /// Writable (logged dirty this round).
    dirty: bool,
}

/// How a synthetic run goes.
#[derive(Clone, Copy)]
struct Run {
    /// Guest RAM in MiB (at `RAM_BASE`).
    ram_mib: u64,
    /// RAM as 2 MiB blocks (split on demand) instead of 4 KiB pages.
    blocks: bool,
    /// vCPUs (on PEs 0 and up).
    vcpus: u8,
    /// A worker PE (after the vCPUs) runs the rounds.
    worker: bool,
    /// Dirty-logging rounds.
    rounds: u32,
    /// Write faults per round.
    faults: u32,
    /// Migrations per round.
    migrations: u32,
    /// Swap-outs per round.
    swaps: u32,
    /// Seed.
    seed: u64,
}

impl Run {
    fn small() -> Run {
        Run {
            ram_mib: 32,
            blocks: true,
            vcpus: 2,
            worker: false,
            rounds: 12,
            faults: 48,
            migrations: 4,
            swaps: 16,
            seed: 7,
        }
    }
}

/// Writes a log like vmsa-hyp's for `run` (the hypervisor's side: it
/// tracks what the table maps and only gives back frames no longer
/// mapped).
struct Gen {
    log: Encoder<Vec<u8>>,
    run: Run,
    pages: Vec<Page>,
    /// 2 MiB regions split into pages (blocks mode).
    split: Vec<bool>,
    /// Free frames (after guest RAM).
    free: Vec<u64>,
    rng: u64,
}

impl Gen {
    fn new(run: Run) -> Gen {
        let n = (run.ram_mib << 20) / PAGE;
        let frames = RAM_BASE + (run.ram_mib << 20);
        Gen {
            log: Encoder::new(Vec::new()),
            run,
            pages: (0..n)
                .map(|i| Page {
                    frame: Some(RAM_BASE + i * PAGE),
                    dirty: false,
                })
                .collect(),
            split: vec![!run.blocks; (n * PAGE / BLOCK) as usize],
            // 16 MiB of frames to migrate and swap into.
            free: (0..4096).rev().map(|i| frames + i * PAGE).collect(),
            rng: run.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    fn push(&mut self, op: Op) {
        self.log.push(&op);
    }

    fn ipa(page: usize) -> u64 {
        RAM_BASE + page as u64 * PAGE
    }

    fn range(page: usize) -> std::ops::Range<Ipa> {
        Ipa(Self::ipa(page))..Ipa(Self::ipa(page) + PAGE)
    }

    fn attrs(&self, page: usize) -> Stage2Attrs {
        if self.pages[page].dirty {
            Stage2Attrs::RAM
        } else {
            ro()
        }
    }

    /// The region of `page` is made of pages (split now if it was a block).
    fn ensure_page(&mut self, pe: u8, page: usize) {
        let r = page * PAGE as usize / BLOCK as usize;
        if !self.split[r] {
            self.push(Op::Split {
                pe,
                addr: Ipa(Self::ipa(page)),
            });
            self.push(Op::Flush { pe });
            self.split[r] = true;
        }
    }

    fn start(&mut self) {
        let ram = self.run.ram_mib << 20;
        for (s, e) in [(0, GIB), (256 * GIB, 257 * GIB)] {
            self.push(Op::Map {
                pe: 0,
                range: Ipa(s)..Ipa(e),
                pa: Pa(s),
                attrs: Stage2Attrs::DEVICE,
                blocks: true,
            });
        }
        self.push(Op::Map {
            pe: 0,
            range: Ipa(RAM_BASE)..Ipa(RAM_BASE + ram),
            pa: Pa(RAM_BASE),
            attrs: Stage2Attrs::RAM,
            blocks: self.run.blocks,
        });
        self.push(Op::Activate { pe: 0 });
        // Dirty logging starts before the guest runs.
        self.push(Op::Protect {
            pe: 0,
            range: Ipa(RAM_BASE)..Ipa(RAM_BASE + ram),
            attrs: ro(),
        });
        self.push(Op::Flush { pe: 0 });
        for pe in 0..self.run.vcpus {
            self.push(Op::VcpuLoad { pe });
        }
    }

    /// A guest write to `page` from the vCPU on `pe`, and its handling.
    fn write_fault(&mut self, pe: u8, page: usize) {
        let ipa = Ipa(Self::ipa(page));
        let Some(_) = self.pages[page].frame else {
            // Swapped out: a translation fault, swapped in read-only; the
            // retried write faults again.
            self.push(Op::Fault {
                pe,
                ipa,
                kind: FaultKind::Translation,
                write: true,
                s1ptw: false,
            });
            let Some(frame) = self.free.pop() else { return };
            self.push(Op::Map {
                pe,
                range: Self::range(page),
                pa: Pa(frame),
                attrs: ro(),
                blocks: false,
            });
            self.push(Op::Flush { pe });
            self.pages[page] = Page {
                frame: Some(frame),
                dirty: false,
            };
            return self.write_fault(pe, page);
        };
        let s1ptw = self.rand(16) == 0;
        self.push(Op::Fault {
            pe,
            ipa,
            kind: FaultKind::Permission,
            write: true,
            s1ptw,
        });
        if self.pages[page].dirty {
            // The live policy left a stale read-only entry: its fault path
            // found the tables allow the write.
            self.push(Op::Spurious { pe, ipa });
            return;
        }
        if self.run.blocks {
            self.ensure_page(pe, page);
        }
        self.push(Op::Protect {
            pe,
            range: Self::range(page),
            attrs: Stage2Attrs::RAM,
        });
        self.push(Op::Flush { pe });
        self.pages[page].dirty = true;
    }

    /// Moves `page` to a new frame with break-before-make.
    fn migrate(&mut self, pe: u8, page: usize) {
        let Some(old) = self.pages[page].frame else {
            return;
        };
        if self.free.is_empty() {
            return;
        }
        if self.run.blocks {
            self.ensure_page(pe, page);
        }
        let new = self.free.remove(0);
        let attrs = self.attrs(page);
        self.push(Op::Unmap {
            pe,
            range: Self::range(page),
        });
        self.push(Op::Flush { pe });
        self.push(Op::ReleaseFrame { pe, pa: Pa(old) });
        self.free.push(old);
        self.push(Op::Map {
            pe,
            range: Self::range(page),
            pa: Pa(new),
            attrs,
            blocks: false,
        });
        self.push(Op::Flush { pe });
        self.pages[page].frame = Some(new);
    }

    /// Whether the table can collapse region `r` into one block: every
    /// page mapped, to one aligned run of frames, with one set of
    /// attributes.
    fn collapsible(&self, r: usize) -> bool {
        let per = (BLOCK / PAGE) as usize;
        let first = &self.pages[r * per];
        let Some(base) = first.frame else {
            return false;
        };
        base % BLOCK == 0
            && (0..per).all(|i| {
                let p = &self.pages[r * per + i];
                p.frame == Some(base + i as u64 * PAGE) && p.dirty == first.dirty
            })
    }

    /// A dirty-logging round on `pe`: collapse clean split regions,
    /// write-protect the dirty pages, swap some clean pages out.
    fn round(&mut self, pe: u8) {
        let per = (BLOCK / PAGE) as usize;
        if self.run.blocks {
            let mut any = false;
            for r in 0..self.split.len() {
                let busy = (0..per).any(|i| self.pages[r * per + i].dirty);
                if !self.split[r] || busy {
                    continue;
                }
                let a = RAM_BASE + r as u64 * BLOCK;
                self.push(Op::Collapse {
                    pe,
                    range: Ipa(a)..Ipa(a + BLOCK),
                });
                if self.collapsible(r) {
                    self.split[r] = false;
                    any = true;
                }
            }
            if any {
                self.push(Op::Flush { pe });
            }
        }
        let dirty: Vec<usize> = (0..self.pages.len())
            .filter(|&p| self.pages[p].dirty)
            .collect();
        let mut i = 0;
        while i < dirty.len() {
            let mut j = i + 1;
            while j < dirty.len() && dirty[j] == dirty[j - 1] + 1 {
                j += 1;
            }
            self.push(Op::Protect {
                pe,
                range: Ipa(Self::ipa(dirty[i]))..Ipa(Self::ipa(dirty[j - 1]) + PAGE),
                attrs: ro(),
            });
            i = j;
        }
        self.push(Op::Flush { pe });
        for &p in &dirty {
            self.pages[p].dirty = false;
        }
        // Swap out clean pages mapped as pages.
        let mut victims = Vec::new();
        for _ in 0..self.run.swaps * 4 {
            if victims.len() == self.run.swaps as usize {
                break;
            }
            let p = self.rand(self.pages.len() as u64) as usize;
            let level3 = self.split[p / per];
            if level3 && self.pages[p].frame.is_some() && !victims.contains(&p) {
                victims.push(p);
            }
        }
        if victims.is_empty() {
            return;
        }
        for &p in &victims {
            self.push(Op::Unmap {
                pe,
                range: Self::range(p),
            });
        }
        self.push(Op::Flush { pe });
        for p in victims {
            let frame = self.pages[p].frame.take().expect("mapped");
            self.push(Op::ReleaseFrame { pe, pa: Pa(frame) });
            self.free.push(frame);
        }
    }

    fn generate(mut self) -> Vec<u8> {
        self.start();
        let worker = self.run.worker.then_some(self.run.vcpus);
        let n = self.pages.len() as u64;
        for _ in 0..self.run.rounds {
            for _ in 0..self.run.faults {
                let pe = self.rand(u64::from(self.run.vcpus)) as u8;
                // Writes cluster: half of them in the first 2 MiB.
                let page = if self.rand(2) == 0 {
                    self.rand(BLOCK / PAGE)
                } else {
                    self.rand(n)
                } as usize;
                self.write_fault(pe, page);
                if self.rand(8) == 0 {
                    // A read of a swapped-out page.
                    let q = self.rand(n) as usize;
                    if self.pages[q].frame.is_none() {
                        self.push(Op::Fault {
                            pe,
                            ipa: Ipa(Self::ipa(q)),
                            kind: FaultKind::Translation,
                            write: false,
                            s1ptw: false,
                        });
                        let Some(frame) = self.free.pop() else {
                            continue;
                        };
                        self.push(Op::Map {
                            pe,
                            range: Self::range(q),
                            pa: Pa(frame),
                            attrs: ro(),
                            blocks: false,
                        });
                        self.push(Op::Flush { pe });
                        self.pages[q].frame = Some(frame);
                    }
                }
            }
            // Rounds and migrations run on the worker, or on the vCPU whose
            // exit found them due.
            let pe = worker.unwrap_or_else(|| self.rand(u64::from(self.run.vcpus)) as u8);
            for _ in 0..self.run.migrations {
                let page = self.rand(n) as usize;
                self.migrate(pe, page);
            }
            self.round(pe);
        }
        self.push(Op::End);
        self.log.sink().clone()
    }
}

fn synthetic(run: Run) -> Vec<u8> {
    Gen::new(run).generate()
}

/// A path in the temporary directory no other test run uses.
fn temp_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "vmsa-replay-ops-{}-{nanos}-{name}",
        std::process::id()
    ))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn replay_ops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .arg("replay-ops")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("vmsa runs")
}

/// Replays `bytes` (written to a file) with `--json` and `args`.
fn json_of(name: &str, bytes: &[u8], args: &[&str]) -> (Output, Vec<BTreeMap<String, Value>>) {
    let path = temp_path(name);
    std::fs::write(&path, bytes).unwrap();
    let mut all = vec!["--json", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = replay_ops(&all);
    let _ = std::fs::remove_file(&path);
    let rows =
        serde_json::from_slice::<Vec<BTreeMap<String, Value>>>(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
    (out, rows)
}

fn num(row: &BTreeMap<String, Value>, field: &str) -> u64 {
    row[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {row:?}"))
}

fn faithful(policy: &str) -> bool {
    policy == "oracle" || vmsa_baselines::get(policy).is_some_and(|b| b.faithful)
}

/// Every faithful policy's rows show no violation.
fn assert_faithful_clean(rows: &[BTreeMap<String, Value>], what: &str) {
    for r in rows {
        let policy = r["policy"].as_str().unwrap();
        if faithful(policy) {
            assert_eq!(num(r, "violations"), 0, "{what}: {policy}: {r:?}");
        }
    }
}

#[test]
fn synthetic_log_is_clean_under_every_faithful_policy_and_caught_under_none() {
    for (i, run) in [
        Run::small(),
        Run {
            blocks: false,
            worker: true,
            seed: 11,
            ..Run::small()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = synthetic(run);
        let (out, rows) = json_of(&format!("synthetic-{i}.ops"), &bytes, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        // The stage 2 policies and the oracle, under both profiles.
        let policies: Vec<&str> = rows
            .iter()
            .filter(|r| r["profile"] == "native")
            .map(|r| r["policy"].as_str().unwrap())
            .collect();
        assert_eq!(
            policies,
            [
                "vmsa",
                "broadcast",
                "kvm",
                "hafnium",
                "freebsd",
                "xen",
                "aarch64-paging",
                "none",
                "oracle"
            ]
        );
        assert_eq!(rows.len(), 2 * policies.len());
        assert_faithful_clean(&rows, &format!("run {i}"));
        for profile in ["native", "nested"] {
            let row = |p: &str| {
                rows.iter()
                    .find(|r| r["policy"] == p && r["profile"] == profile)
                    .unwrap()
            };
            assert!(num(row("none"), "violations") > 0, "run {i} {profile}");
            // Policies that invalidate do; the oracle invalidates nothing
            // it need not.
            assert!(num(row("vmsa"), "tlbi_ops") > 0);
            assert!(num(row("broadcast"), "broadcast_ops") > 0);
            assert_eq!(num(row("oracle"), "tlbi_ops"), 0);
            // vmsa leaves relaxations to the fault path: their retries take
            // spurious faults; broadcast invalidates them.
            assert!(num(row("vmsa"), "spurious_faults") > 0, "run {i}");
            assert_eq!(num(row("broadcast"), "spurious_faults"), 0, "run {i}");
        }
        // The counts go to standard error with --json.
        let err = text(&out.stderr);
        assert!(err.contains(" records, "), "{err}");
        assert!(err.contains("release_frame"), "{err}");
    }
}

#[test]
fn table_has_both_profiles_and_the_log_counts() {
    let path = temp_path("table.ops");
    std::fs::write(&path, synthetic(Run::small())).unwrap();
    let out = replay_ops(&[path.to_str().unwrap(), "--policy", "vmsa,kvm,none"]);
    let _ = std::fs::remove_file(&path);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let name = path.file_name().unwrap().to_str().unwrap();
    let name = name.strip_suffix(".ops").unwrap();
    for want in [
        format!("{name}: "),
        "  operations: ".to_string(),
        "  faults: ".to_string(),
        "live: ".to_string(),
        format!("{name} (native profile, 2 PEs)"),
        format!("{name} (nested profile, 2 PEs)"),
        "vs best".to_string(),
    ] {
        assert!(stdout.contains(&want), "no {want:?} in\n{stdout}");
    }
    let policies: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "policy")
        .collect();
    assert_eq!(policies, ["vmsa", "kvm", "none", "vmsa", "kvm", "none"]);
}

#[test]
fn json_has_compare_fields_and_reads_standard_input() {
    let bytes = synthetic(Run {
        rounds: 3,
        ..Run::small()
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .args(["replay-ops", "--json", "-", "--profile", "native"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<BTreeMap<String, Value>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 9);
    let keys: Vec<&str> = rows[0].keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "broadcast_ops",
            "collateral",
            "cycles",
            "dsb",
            "policy",
            "profile",
            "spurious_faults",
            "tlbi_ops",
            "violations",
            "workload"
        ]
    );
    assert_eq!(rows[0]["workload"], "stdin");
    assert_eq!(rows[0]["policy"], "vmsa");
    assert!(rows.iter().all(|r| r["profile"] == "native"));
}

#[test]
fn a_frame_released_while_mapped_is_a_violation_of_every_policy_exit_1() {
    let mut log = Encoder::new(Vec::new());
    let ram = Ipa(RAM_BASE)..Ipa(RAM_BASE + BLOCK);
    log.push(&Op::Map {
        pe: 0,
        range: ram.clone(),
        pa: Pa(RAM_BASE),
        attrs: Stage2Attrs::RAM,
        blocks: false,
    });
    log.push(&Op::Activate { pe: 0 });
    log.push(&Op::VcpuLoad { pe: 0 });
    log.push(&Op::VcpuLoad { pe: 1 });
    // Given back with no unmap: the guest still reaches it.
    log.push(&Op::ReleaseFrame {
        pe: 0,
        pa: Pa(RAM_BASE + 5 * PAGE),
    });
    log.push(&Op::End);
    let (out, rows) = json_of("uaf.ops", log.sink(), &["--policy", "vmsa,none"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(rows.iter().all(|r| num(r, "violations") > 0), "{rows:?}");
}

#[test]
fn unreadable_input_exits_2_naming_the_byte_offset() {
    let good = synthetic(Run {
        rounds: 1,
        ..Run::small()
    });
    // Cut inside a record: a Map record's fields need more than its tag.
    let mut cut = good[..8].to_vec();
    cut.extend_from_slice(&[1, 0, 0x80]);
    let mut unknown = good[..good.len() - 1].to_vec();
    let at = unknown.len();
    unknown.push(0x42);
    for (name, bytes, want) in [
        (
            "cut.ops",
            cut,
            "the log ends inside the record at byte 8".to_string(),
        ),
        (
            "unknown.ops",
            unknown,
            format!("unknown record tag 0x42 at byte {at}"),
        ),
        (
            "text.ops",
            b"not a log at all".to_vec(),
            "not an operation log".to_string(),
        ),
    ] {
        let path = temp_path(name);
        std::fs::write(&path, &bytes).unwrap();
        let out = replay_ops(&[path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("vmsa replay-ops: {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains(&want), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}");
    }
    let missing = replay_ops(&[temp_path("missing.ops").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    let unknown_policy = replay_ops(&["-", "--policy", "nope"]);
    assert_eq!(unknown_policy.status.code(), Some(2));
    assert!(text(&unknown_policy.stderr).contains("unknown policy `nope`"));
}

/// The committed logs of live runs.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/oplog")
}

#[test]
fn committed_logs_replay_clean_under_every_faithful_policy() {
    let dir = fixtures();
    assert!(dir.is_dir(), "no {}", dir.display());
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ops"))
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no .ops file in {}", dir.display());
    for log in logs {
        let out = replay_ops(&["--json", log.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            log.display(),
            text(&out.stderr)
        );
        let rows: Vec<BTreeMap<String, Value>> = serde_json::from_slice(&out.stdout).unwrap();
        assert_faithful_clean(&rows, &log.display().to_string());
        let none = rows.iter().find(|r| r["policy"] == "none").unwrap();
        assert!(num(none, "violations") > 0, "{}", log.display());
    }
}

/// The size a replay must handle quickly: run with
/// `cargo test --release -p vmsa-cli --test replay_ops -- --ignored`.
#[test]
#[ignore = "timing: a million records, meaningful in a release build only"]
fn a_million_records_replay_in_under_a_minute() {
    let run = Run {
        ram_mib: 512,
        blocks: true,
        vcpus: 2,
        worker: true,
        rounds: 420,
        faults: 600,
        migrations: 8,
        swaps: 64,
        seed: 3,
    };
    let bytes = synthetic(run);
    let records = vmsa::oplog::Decoder::new(&bytes).unwrap().count();
    assert!(records >= 1_000_000, "{records} records");
    let path = temp_path("million.ops");
    std::fs::write(&path, &bytes).unwrap();
    let start = std::time::Instant::now();
    let out = replay_ops(&["--json", path.to_str().unwrap()]);
    let took = start.elapsed();
    let _ = std::fs::remove_file(&path);
    eprintln!("{records} records replayed in {took:.1?}");
    eprint!("{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(took.as_secs() < 60, "{took:?}");
}
