//! The allocator lab's host side: the module built against a lab kernel's
//! own tree (cached in the kernel's entry by source hash), the plans split
//! over boots, the machine, and the guest's answer by name.

use std::path::{Path, PathBuf};

use crate::debian::Kernel;
use crate::host::LabError;
use crate::qemu::Qemu;

use super::{encode_plans, name_objects, GuestReport, Plan, RealRun, MODULE_FILE};

/// The module's source, built into the lab so that the cache key is the
/// source itself.
pub const SOURCE: &str = include_str!("../../buddy/nrlab_buddy.c");
/// Its ABI header (mirrored by [`super::abi`]).
pub const HEADER: &str = include_str!("../../buddy/nrlab_buddy.h");
/// Its Kbuild file.
pub const KBUILD: &str = include_str!("../../buddy/Kbuild");

/// The plans one boot carries at most, bytes: the initramfs lives in the
/// guest's 1 GiB next to the allocator's bookkeeping.
pub const BOOT_PLAN_BYTES: usize = 48 << 20;

/// FNV-1a, 64 bits, of source, Kbuild and header: the module's cache key.
pub fn source_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SOURCE.bytes().chain(KBUILD.bytes()).chain(HEADER.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The module built against `kernel`'s lab build tree with the host's make
/// and gcc: `<entry>/buddy/module-<hash>/nrlab_buddy.ko`. Only lab kernels
/// carry `GPU_BUDDY` (the lab's config fragment selects it; Debian's cloud
/// flavour has no DRM).
pub fn ensure_module(root: &Path, kernel: &Kernel) -> Result<PathBuf, LabError> {
    let Some(tree) = &kernel.build else {
        return Err(LabError::BadPackage(format!(
            "{} is a Debian package without GPU_BUDDY: the allocator lab needs --kernel lab-shipped or lab-patched",
            kernel.pkg.abi
        )));
    };
    let hash = source_hash();
    let files = [("nrlab_buddy.c", SOURCE), ("Kbuild", KBUILD), ("nrlab_buddy.h", HEADER)];
    let m = crate::lab_kernel::ExternalModule { cache: "buddy", hash: &hash, files: &files, ko: MODULE_FILE };
    crate::lab_kernel::ensure_external_module(root, kernel, tree, &m)
}

/// Splits plans into boots of at most `limit` packed bytes each (a plan
/// larger than `limit` gets a boot of its own); returns index ranges.
pub fn boots(plans: &[Plan], limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, p) in plans.iter().enumerate() {
        let b = 32 + p.report.len() * 4 + p.ops.len() * 16;
        if i > start && bytes + b > limit {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < plans.len() {
        out.push(start..plans.len());
    }
    out
}

/// The packed plans of one boot.
pub fn boot_file(plans: &[Plan]) -> Vec<u8> {
    encode_plans(plans)
}

/// The allocator lab's machine: the lab's q35 with no device of its own.
pub fn machine(vmlinuz: &Path, initramfs: &Path, run_dir: &Path) -> Qemu {
    Qemu::new(vmlinuz, initramfs, run_dir).append("nrlab.mode=buddy")
}

/// The guest's answer for `plans` (one boot), named: one [`RealRun`] per
/// plan the guest answered, with the manifest's `names`.
pub fn name_runs(plans: &[(String, &Plan)], rep: &GuestReport) -> Vec<RealRun> {
    plans
        .iter()
        .zip(&rep.runs)
        .map(|((name, p), g)| RealRun {
            name: name.clone(),
            bar: p.bar,
            chunk: p.chunk,
            ops: p.ops.len(),
            guest: g.clone(),
            objects: name_objects(p, g),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::{plan, GuestObject, GuestRun, RunSpec};

    fn p(ops: usize) -> Plan {
        let text = "alloc a 4K\nfree a\n".repeat(ops / 2);
        let spec = RunSpec {
            name: "x".into(),
            trace: "x".into(),
            bar: 1 << 28,
            chunk: 4096,
            snapshot_after: 0,
            report: vec![],
        };
        plan(&spec, &text).unwrap()
    }

    #[test]
    fn plans_are_split_by_bytes() {
        // 32 + 16 * ops bytes each: 10 ops = 192 bytes.
        let plans = vec![p(10), p(10), p(10), p(100)];
        assert_eq!(boots(&plans, 400), vec![0..2, 2..3, 3..4]);
        assert_eq!(boots(&plans, 1 << 20), vec![0..4]);
        assert!(boots(&[], 10).is_empty());
    }

    #[test]
    fn objects_get_their_trace_names() {
        let spec = RunSpec {
            name: "r".into(),
            trace: "r".into(),
            bar: 1 << 28,
            chunk: 4096,
            snapshot_after: 1,
            report: vec!["fb".into()],
        };
        let pl = plan(&spec, "alloc a 4K\nalloc fb 8K\nfree fb\n").unwrap();
        let g = GuestRun {
            objects: vec![GuestObject { id: 1, err: 0, blocks: vec![(0x3000, 0x1000), (0x2000, 0x1000)] }],
            ..Default::default()
        };
        let rep = GuestReport { runs: vec![g], ..Default::default() };
        let runs = name_runs(&[("r".into(), &pl)], &rep);
        assert_eq!(runs[0].objects[0].id, "fb");
        assert_eq!(runs[0].objects[0].err, None);
        assert_eq!(runs[0].ops, 3);
        let failed = GuestRun { objects: vec![GuestObject { id: 1, err: -28, blocks: vec![] }], ..Default::default() };
        let named = name_objects(&pl, &failed);
        assert_eq!(named[0].err.as_deref(), Some("ENOSPC"));
    }
}
