//! Checking a Casemate trace: the 100,000-cycle `bbm_stress` trace (900,525
//! records), streamed from a file, through the reader alone and through the
//! reader and the machine.
//!
//! Reference: Casemate's own offline checker takes about 7.6 s on this
//! trace, about 118,000 events per second.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmsa_model::trace::{bbm_stress, check, Reader};
use vmsa_model::Config;

const CYCLES: u64 = 100_000;
const SEED: u64 = 1;

fn trace_file() -> (PathBuf, u64) {
    let path = std::env::temp_dir().join(format!(
        "vmsa-bench-bbm-stress-{CYCLES}-{SEED}-{}.log",
        std::process::id()
    ));
    let mut w = BufWriter::new(File::create(&path).expect("create the trace file"));
    let records = bbm_stress(&mut w, CYCLES, SEED).expect("write the trace");
    w.flush().expect("write the trace");
    (path, records)
}

fn open(path: &Path) -> BufReader<File> {
    BufReader::with_capacity(1 << 20, File::open(path).expect("open the trace"))
}

/// Runs `f` a few times and prints records per second once.
fn report(what: &str, records: u64, mut f: impl FnMut()) {
    let runs = 3;
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    let mean = start.elapsed() / runs;
    eprintln!(
        "{what}: {records} records in {mean:.2?}: {:.0} records/s",
        records as f64 / mean.as_secs_f64()
    );
}

fn bench(c: &mut Criterion) {
    let (path, records) = trace_file();

    let parse = || {
        let mut n = 0u64;
        for r in Reader::new(open(&path)) {
            black_box(r.expect("the generated trace parses"));
            n += 1;
        }
        assert_eq!(n, records);
    };
    let check_it = || {
        let report = check(open(&path), Config::default()).expect("the generated trace parses");
        assert_eq!(report.records, records);
        report
    };
    report("parse only", records, parse);
    report("check", records, || {
        check_it();
    });

    let mut g = c.benchmark_group("bbm_stress_100k");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(records));
    g.bench_function("parse", |b| b.iter(parse));
    g.bench_function("check", |b| b.iter(check_it));
    g.finish();

    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, bench);
criterion_main!(benches);
