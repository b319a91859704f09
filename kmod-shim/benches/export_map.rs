//! Export + map of nr_ranges scattered 4 KiB ranges on each P2P path:
//! time per call, and model memory per range (printed once per case).
#![allow(missing_docs, reason = "criterion_group! defines a pub fn in a bench harness, which has no API to document")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kmod_shim::{Bar, Config, Device, ImporterDesc, PageSize, Shim};
use uapi::{RangeList, Request};

const BAR0: u64 = 0x40_0000_0000;

fn device() -> Device {
    Device::new(PageSize::K4).with_bar(0, Bar::mmio(BAR0, 16 << 30))
}

fn paths() -> [(&'static str, ImporterDesc); 3] {
    let io = ImporterDesc::iommu_peer(0x1_0000_0000, 1 << 48);
    [("bus_addr", ImporterDesc::bus_peer()), ("iova_span", io), ("per_range", io.without_iova_api())]
}

/// Every other page, so no two ranges are physically adjacent.
fn ranges(n: usize) -> Vec<uapi::DmaRange> {
    (0..n as u64).map(|i| uapi::DmaRange::new(i * 0x2000, 0x1000)).collect()
}

fn request(r: &[uapi::DmaRange]) -> Request<'_> {
    let bytes = uapi::DeviceFeatureDmaBuf::size_for_ranges(r.len()).unwrap() + uapi::FEATURE_HEADER_SIZE;
    let feature = uapi::FeatureHeader {
        argsz: bytes as u32,
        flags: uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_DMA_BUF,
    };
    let hdr = uapi::DmaBufHeader { region_index: 0, open_flags: 2, flags: 0, nr_ranges: r.len() as u32 };
    Request::new(feature, hdr, RangeList::from_ranges(r))
}

/// Export and map once; the shim (for memory accounting).
fn export_map(req: &Request<'_>, desc: ImporterDesc) -> Shim {
    let mut s = Shim::new(device(), Config::default());
    let imp = s.add_importer(desc);
    let buf = s.export(req).expect("export");
    let att = s.attach(buf, imp).expect("attach");
    s.map(att).expect("map");
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("export_map");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in [1usize, 64, 4096, 262_144] {
        let r = ranges(n);
        let req = request(&r);
        g.throughput(Throughput::Elements(n as u64));
        for (name, desc) in paths() {
            let s = export_map(&req, desc);
            let empty = Shim::new(device(), Config::default()).model_bytes();
            println!(
                "model_bytes {name} nr_ranges={n}: {} total, {:.1} per range",
                s.model_bytes(),
                (s.model_bytes() - empty) as f64 / n as f64
            );
            g.bench_with_input(BenchmarkId::new(name, n), &req, |b, req| {
                b.iter(|| black_box(export_map(req, desc)));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
