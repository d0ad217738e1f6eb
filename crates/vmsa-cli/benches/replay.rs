//! `vmsa replay`'s throughput: the first 20,000 lines of the committed
//! capture `tests/fixtures/strace/python3-alloc.strace.gz` (python3
//! allocating and freeing byte arrays, each its own mmap: `scripts/
//! capture-strace` made it), replayed under vmsa (native profile) with the
//! default options. Criterion reports lines per second.

use std::hint::black_box;
use std::io::Read;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmsa_cli::compare::{Args, Names, Selection};
use vmsa_cli::replay::{self, replay_stream};

const LINES: usize = 20_000;

fn slice() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/strace/python3-alloc.strace.gz"
    );
    let file = std::fs::File::open(path).expect("the committed capture");
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gzip text");
    let mut out: String = text.lines().take(LINES).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out.into_bytes()
}

fn replay_slice(c: &mut Criterion) {
    let input = slice();
    let args = Args {
        workloads: Vec::new(),
        policies: vec!["vmsa".into()],
        profiles: vec!["native".into()],
        pes: 4,
    };
    let selection = Selection::new(&args, &Names::all()).expect("known names");
    let opts = replay::options(&replay::Args::default());
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(LINES as u64));
    g.bench_function("python3-alloc-20k-vmsa", |b| {
        b.iter(|| {
            let r = replay_stream("bench", &input[..], None, &selection, opts).expect("parses");
            black_box(r.rows.len())
        })
    });
    g.finish();
}

criterion_group!(benches, replay_slice);
criterion_main!(benches);
