//! `vmsa replay`'s throughput: the first 20,000 lines of the committed
//! capture `tests/fixtures/strace/python3-alloc.strace.gz` (python3
//! allocating and freeing byte arrays, each its own mmap: `scripts/
//! capture-strace` made it), replayed with the default options and the
//! native profile: under vmsa alone (the per-call work of one replay), and
//! under every policy at once as `vmsa replay` runs them (split over two
//! threads). Criterion reports lines per second per policy.

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
    let opts = replay::options(&replay::Args::default());
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    for (name, policies) in [("vmsa", vec!["vmsa".to_string()]), ("all", Vec::new())] {
        let args = Args {
            workloads: Vec::new(),
            policies,
            profiles: vec!["native".into()],
            pes: 4,
        };
        let selection = Selection::new(&args, &Names::all()).expect("known names");
        g.throughput(Throughput::Elements(
            (LINES * selection.policies.len()) as u64,
        ));
        g.bench_function(format!("python3-alloc-20k-{name}"), |b| {
            b.iter(|| {
                let r = replay_stream("bench", &input[..], None, &selection, opts).expect("parses");
                assert_eq!(r.rows.len(), selection.policies.len());
                black_box(r.rows.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, replay_slice);
criterion_main!(benches);
