//! Plugin runtime benchmarks: registration compile, load from the on-disk
//! compiled cache, and a warm `plan-training` call with a fresh store.
//!
//! `cargo bench -p legion --bench plugin` (after `scripts/build-plugins.sh`).
//! Besides criterion's report, prints the median and p99 of the warm call
//! and the cached load over many single measurements, as `docs/benchmarks.md`
//! records them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::Criterion;
use legion::plan::{ModelId, TrainingRequest};
use legion::plugin::{Limits, Plugin, Runtime};
use wasmtime::component::Component;

fn plugin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/release/deps/plugin-… -> target
            let exe = std::env::current_exe().expect("exe");
            exe.ancestors().nth(3).expect("target dir").to_path_buf()
        });
    let path = target.join("plugins").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run scripts/build-plugins.sh",
        path.display()
    );
    path
}

struct Fixture {
    runtime: Runtime,
    bytes: Vec<u8>,
    cwasm: PathBuf,
    source: tempfile::TempDir,
    request: TrainingRequest,
    _cache: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let bytes = std::fs::read(plugin_path("hello-toolchain")).expect("read plugin");
    let cache = tempfile::tempdir().expect("tempdir");
    let cwasm = cache.path().join("hello.cwasm");
    let component = Component::new(runtime.engine(), &bytes).expect("compile");
    std::fs::write(&cwasm, component.serialize().expect("serialize")).expect("write cwasm");
    let source = tempfile::tempdir().expect("tempdir");
    std::fs::write(source.path().join("train.py"), "print('hi')\n").expect("write");
    let request = TrainingRequest {
        model: ModelId {
            name: "bench".into(),
            version: "1".into(),
        },
        hyper_parameters: [("alpha".to_string(), "0.5".to_string())].into(),
        ..TrainingRequest::default()
    };
    Fixture {
        runtime,
        bytes,
        cwasm,
        source,
        request,
        _cache: cache,
    }
}

fn load_cached(f: &Fixture) -> Plugin {
    // SAFETY: the file was written by this process from `Component::serialize`.
    let component =
        unsafe { Component::deserialize_file(f.runtime.engine(), &f.cwasm) }.expect("deserialize");
    Plugin::new(&f.runtime, "hello", &component, Default::default()).expect("link")
}

fn benches(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("plugin");
    g.sample_size(20);
    g.bench_function("compile (registration)", |b| {
        b.iter(|| Component::new(f.runtime.engine(), black_box(&f.bytes)).expect("compile"))
    });
    g.sample_size(100);
    g.bench_function("load from compiled cache", |b| b.iter(|| load_cached(f)));
    let plugin = load_cached(f);
    g.bench_function("warm plan-training, fresh store", |b| {
        b.iter(|| {
            plugin
                .plan_training(black_box(&f.request), f.source.path())
                .expect("plan")
        })
    });
    g.finish();
}

fn percentiles(name: &str, n: usize, mut run: impl FnMut()) {
    for _ in 0..n / 10 {
        run();
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<36} n={n:<6} median {:>10.1?}  p99 {:>10.1?}",
        at(0.5),
        at(0.99)
    );
}

fn main() {
    let f = fixture();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test; the
    // percentile runs are for `cargo bench` only.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test") {
        println!("\nsingle-measurement percentiles:");
        percentiles("compile (registration)", 30, || {
            black_box(Component::new(f.runtime.engine(), &f.bytes).expect("compile"));
        });
        percentiles("load from compiled cache", 1_000, || {
            black_box(load_cached(&f));
        });
        let plugin = load_cached(&f);
        percentiles("warm plan-training, fresh store", 100_000, || {
            black_box(
                plugin
                    .plan_training(&f.request, f.source.path())
                    .expect("plan"),
            );
        });
    }
}
