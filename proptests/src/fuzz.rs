//! The fuzz targets' bodies (`../fuzz/fuzz_targets/*.rs` are one-line
//! wrappers), kept here so that a crash input replays under `cargo test`
//! (`tests/props.rs`, `fuzz_regressions_replay`) without the nightly toolchain.

use kmod_shim::{Fidelity, Policy};
use uapi::{DeviceFeatureDmaBufSingle, Request, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET};

use kmod_shim::{ExportError, ImporterId};
use validator::Outcome;

use crate::fixtures::{config, edge_device, path_importers, shim_with, PAGE_SIZES};
use crate::lifecycle::{run, Op};
use crate::oracle::{
    decomposition_given, fault_leaves_state, kernel_links_at_offset_zero_given, map_on_every_path, ok, predict_map,
    shim_agrees_with_validator, single_range_equivalence, strict_within_linux, Perturb,
};
use crate::scenario::Scenario;

/// Target `bytes`: decode arbitrary bytes (never panics), judge them under
/// both policies on a device with every BAR kind (Strict within Linux), check
/// the shim exports exactly what Linux accepts, map an accepted dma-buf on
/// every path (predicted path or error) with the invariant checker, revoke.
pub fn bytes(data: &[u8]) {
    let Ok(req) = Request::decode(data) else {
        assert!(data.len() < 8, "decode refused {} bytes", data.len());
        return;
    };
    // Page size from bits of open_flags, so the shim sees all three.
    let dev = edge_device(PAGE_SIZES[(req.dma_buf.open_flags >> 8) as usize % 3]);
    strict_within_linux(&req, &dev);
    let linux = validator::validate(&req, &dev, Policy::Linux);
    assert_eq!(linux, validator::validate(&req, &dev, Policy::Linux), "validate is deterministic");
    // Export through the shim; on acceptance attach and map through every
    // path, then run the invariant checker once over all the mappings.
    let imps = path_importers();
    let mut s = shim_with(dev, config(Policy::Linux, Fidelity::Fixed), &imps);
    match (s.export(&req), linux) {
        (Ok(buf), Ok(Outcome::DmaBuf(e))) => {
            assert_eq!(s.dma_buf(buf).map(|b| b.size), Some(e.size), "size");
            for (i, d) in imps.iter().enumerate() {
                let att = s.attach(buf, ImporterId(i)).expect("path importers attach");
                let want = predict_map(&s, buf, d);
                let got = s.map(att).map(|m| s.mapping(m).expect("live").path());
                assert_eq!(got, want, "map through {d:?}");
            }
            ok(&s, "after maps");
            s.set_memory_enabled(false);
            assert_eq!(s.counters().mappings, 0, "revoke left mappings");
            ok(&s, "after revoke");
        }
        (Err(ExportError::Rejected(r)), Err(v)) => assert_eq!(r, v),
        (Err(ExportError::NotAnExport), Ok(o)) => assert!(!matches!(o, Outcome::DmaBuf(_))),
        (got, want) => panic!("shim {got:?}, validator {want:?}"),
    }
}

/// Target `structured`: every differential oracle on one scenario.
pub fn structured(s: &Scenario) {
    let dev = s.device();
    let owned = s.request();
    let req = owned.request();
    let policy = s.policy();
    strict_within_linux(&req, &dev);
    shim_agrees_with_validator(&req, &dev, policy);
    let imps = s.importer_descs();
    let paths = path_importers();
    // The Fixed-mode maps through the path importers, shared by the
    // offset-0 and decomposition claims (one deterministic run, not two).
    let mut multi_paths = None;
    match s.fault_plan() {
        Some(plan) => {
            for &d in imps.iter().take(3) {
                fault_leaves_state(&dev, &req, policy, d, plan);
            }
        }
        None => {
            let fixed = map_on_every_path(&dev, &req, policy, Fidelity::Fixed, &paths);
            if imps[..] != paths[..] {
                map_on_every_path(&dev, &req, policy, Fidelity::Fixed, &imps);
            }
            kernel_links_at_offset_zero_given(&dev, &req, policy, &fixed);
            multi_paths = Some(fixed);
        }
    }
    let h = owned.dma_buf;
    if h.nr_ranges == 1
        && !owned.ranges.is_empty()
        && owned.feature.flags == VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF
    {
        let r = owned.ranges[0];
        let single = DeviceFeatureDmaBufSingle {
            region_index: h.region_index,
            open_flags: h.open_flags,
            offset: r.offset,
            length: r.length,
        };
        let p = Perturb { argsz: owned.feature.argsz, flags: h.flags, readable: owned.readable };
        single_range_equivalence(&dev, &single, policy, p);
    }
    // `Scenario::well_formed()` without building the request again.
    let well_formed = crate::well_formed(h.region_index, h.open_flags, &owned.ranges) == owned;
    if well_formed && !owned.ranges.is_empty() && owned.ranges.len() <= 64 {
        // A well-formed request is the decomposition's multi-range request.
        decomposition_given(&dev, policy, h.region_index, h.open_flags, &owned.ranges, multi_paths);
    }
}

/// Target `lifecycle`: three bytes per operation ([`Op::from_bytes`]), at
/// most 256 operations.
pub fn lifecycle(data: &[u8]) {
    let ops: Vec<Op> = data.chunks_exact(3).take(256).map(|c| Op::from_bytes(c[0], c[1], c[2])).collect();
    run(&ops);
}
