//! Criterion benchmarks: the Rust validator (both policies), the C baseline
//! and a plain read of the same bytes, on valid scattered requests of 1 to
//! 262,144 ranges on a 16 GiB MMIO BAR.
//!
//! Every group reports `Throughput::Bytes` of the range array (16 bytes per
//! range), so that GiB/s compares directly with `plain_read`. Groups:
//! - `rust_linux`, `rust_strict`: `validator::validate` on a request decoded
//!   once (validate only; the physical vectors are not materialised).
//!   `rust_strict` at 262,144 is an O(1) E2BIG by design (above
//!   `STRICT_MAX_NR_RANGES`); it is also measured at 65,536, the largest
//!   request Strict accepts.
//! - `c_linux`: the C checks, both kernel loops, phys vectors computed but
//!   not stored.
//! - `rust_linux_fill`, `c_linux_fill`: the same, with the physical vectors
//!   written into a preallocated array (the kernel's `priv->phys_vec`).
//! - `plain_read`: xor of every `u64` of the range array.
#![allow(missing_docs, reason = "criterion_group! defines a pub fn in a bench harness, which has no API to document")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nr_ranges_bench::c_baseline::{self, CDevice, CPhysVec};
use nr_ranges_bench::{bench_device, bench_request_bytes, plain_read, range_array, validate_and_fill, BENCH_NR_RANGES};
use uapi::Request;
use validator::{Outcome, PhysVec, Policy, STRICT_MAX_NR_RANGES};

struct Input {
    nr: u32,
    bytes: Vec<u8>,
}

fn inputs(nrs: &[u32]) -> Vec<Input> {
    nrs.iter().map(|&nr| Input { nr, bytes: bench_request_bytes(nr) }).collect()
}

fn throughput(input: &Input) -> Throughput {
    Throughput::Bytes(range_array(&input.bytes).len() as u64)
}

fn bench_rust(c: &mut Criterion, name: &str, policy: Policy, nrs: &[u32]) {
    let dev = bench_device();
    let mut g = c.benchmark_group(name);
    for input in inputs(nrs) {
        let req = Request::decode(&input.bytes).expect("a whole feature header");
        let expect_export = policy == Policy::Linux || input.nr <= STRICT_MAX_NR_RANGES;
        assert_eq!(matches!(validator::validate(&req, &dev, policy), Ok(Outcome::DmaBuf(_))), expect_export);
        g.throughput(throughput(&input));
        g.bench_with_input(BenchmarkId::from_parameter(input.nr), &req, |b, req| {
            b.iter(|| validator::validate(black_box(req), black_box(&dev), policy).is_ok())
        });
    }
    g.finish();
}

fn rust_linux(c: &mut Criterion) {
    bench_rust(c, "rust_linux", Policy::Linux, &BENCH_NR_RANGES);
}

fn rust_strict(c: &mut Criterion) {
    let mut nrs = BENCH_NR_RANGES.to_vec();
    nrs.push(STRICT_MAX_NR_RANGES);
    nrs.sort_unstable();
    bench_rust(c, "rust_strict", Policy::Strict, &nrs);
}

fn c_linux(c: &mut Criterion) {
    let dev = CDevice::from(&bench_device());
    let mut g = c.benchmark_group("c_linux");
    for input in inputs(&BENCH_NR_RANGES) {
        assert!(matches!(c_baseline::check(&input.bytes, &dev), Some(nr_ranges_bench::Answer::Export { .. })));
        g.throughput(throughput(&input));
        g.bench_with_input(BenchmarkId::from_parameter(input.nr), &input.bytes, |b, bytes| {
            b.iter(|| c_baseline::check(black_box(bytes), black_box(&dev)))
        });
    }
    g.finish();
}

fn rust_linux_fill(c: &mut Criterion) {
    let dev = bench_device();
    let mut g = c.benchmark_group("rust_linux_fill");
    for input in inputs(&BENCH_NR_RANGES) {
        let req = Request::decode(&input.bytes).expect("a whole feature header");
        let mut out = vec![PhysVec::default(); input.nr as usize];
        assert!(validate_and_fill(&req, &dev, Policy::Linux, &mut out).is_ok());
        g.throughput(throughput(&input));
        g.bench_with_input(BenchmarkId::from_parameter(input.nr), &req, |b, req| {
            b.iter(|| validate_and_fill(black_box(req), black_box(&dev), Policy::Linux, black_box(&mut out)).is_ok())
        });
    }
    g.finish();
}

fn c_linux_fill(c: &mut Criterion) {
    let dev = CDevice::from(&bench_device());
    let mut g = c.benchmark_group("c_linux_fill");
    for input in inputs(&BENCH_NR_RANGES) {
        let mut out = vec![CPhysVec::default(); input.nr as usize];
        assert!(matches!(c_baseline::fill(&input.bytes, &dev, &mut out), Some(nr_ranges_bench::Answer::Export { .. })));
        g.throughput(throughput(&input));
        g.bench_with_input(BenchmarkId::from_parameter(input.nr), &input.bytes, |b, bytes| {
            b.iter(|| c_baseline::fill(black_box(bytes), black_box(&dev), black_box(&mut out)))
        });
    }
    g.finish();
}

fn plain(c: &mut Criterion) {
    let mut g = c.benchmark_group("plain_read");
    for input in inputs(&BENCH_NR_RANGES) {
        g.throughput(throughput(&input));
        g.bench_with_input(BenchmarkId::from_parameter(input.nr), &input.bytes, |b, bytes| {
            b.iter(|| plain_read(range_array(black_box(bytes))))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = rust_linux, rust_strict, c_linux, plain, rust_linux_fill, c_linux_fill
}
criterion_main!(benches);
