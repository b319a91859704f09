//! Parsing, attribution, the leak rule and the comparison, on kernel log
//! snippets of the hand runs (`lab-kernel-runs/2026-12-01-kernel-track.md`,
//! consoles in the kernel-track scratch directory) and of the first lab run.

use super::*;

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// fail-nth N=7 of the hand run's shipped, strict sweep: `sg_alloc_table()`
/// in `dma_buf_phys_vec_to_sgt()` (defect 3's point). The first line is as
/// `/dev/kmsg` hands it over (its newline escaped).
const SG_ALLOC_TABLE: &str =
    "FAULT_INJECTION: forcing a failure.\\x0aname failslab, interval 1, probability 0, space 0, times 0
CPU: 0 UID: 0 PID: 1 Comm: init Tainted: G           O        7.2.13-nrlab #2 PREEMPTLAZY
Call Trace:
 <TASK>
<4> dump_stack_lvl+0x8e/0xa0
<4> dump_stack+0x14/0x20
<4> should_fail_ex+0x4f4/0x600
<4> should_failslab+0xbe/0x110
<4> __kmalloc_noprof+0xb5/0x600
<4> sg_kmalloc+0x22/0x60
<4> __sg_alloc_table+0x22f/0x3f0
<4> sg_alloc_table+0x2b/0x170
<4> dma_buf_phys_vec_to_sgt+0x242/0xd90
<4> vfio_pci_dma_buf_map+0x17f/0x2f0 [vfio_pci_core]
<4> dma_buf_map_attachment+0x125/0x660
<4> nrlab_ioctl+0x791/0x14a0 [nrlab_importer]
<4> __x64_sys_ioctl+0x739/0x1390
 </TASK>";

/// A direct `kzalloc()` of `dma_buf_phys_vec_to_sgt()` at `off`.
fn sgt_kzalloc(off: &str) -> String {
    format!(
        "FAULT_INJECTION: forcing a failure.\\x0aname failslab, interval 1, probability 0, space 0, times 0
Call Trace:
 dump_stack_lvl+0x8e/0xa0
 should_fail_ex+0x4f4/0x600
 should_failslab+0xbe/0x110
 __kmalloc_cache_noprof+0x5f/0x520
 dma_buf_phys_vec_to_sgt+{off}/0xd90
 ? mutex_lock_interruptible_nested+0x20/0x20
 vfio_pci_dma_buf_map+0x17f/0x2f0 [vfio_pci_core]
 dma_buf_map_attachment+0x125/0x660
 </TASK>"
    )
}

/// The importer fixture's own argument copy (the first point of its MAP).
const IMPORTER_KVMALLOC: &str =
    "FAULT_INJECTION: forcing a failure.\\x0aname failslab, interval 1, probability 0, space 0, times 0
 should_failslab+0xbe/0x110
 __kvmalloc_node_noprof+0x107/0x6a0
 nrlab_ioctl+0xe3b/0x1ff0 [nrlab_importer]
 __x64_sys_ioctl+0x739/0x1390";

/// The export's `alloc_file_pseudo()` inside `dma_buf_export()`.
const DMA_BUF_EXPORT: &str =
    "FAULT_INJECTION: forcing a failure.\\x0aname failslab, interval 1, probability 0, space 0, times 0
 should_failslab+0xbe/0x110
 kmem_cache_alloc_lru_noprof+0x5b/0x4c0
 __d_alloc+0x32/0x9f0
 d_alloc_pseudo+0x11/0x20
 alloc_file_pseudo+0xe7/0x220
 dma_buf_export+0x2e0/0xb40
 vfio_pci_core_feature_dma_buf+0x506/0x8c0 [vfio_pci_core]";

fn feature_kmalloc(alloc: &str, off: &str) -> String {
    format!(
        "FAULT_INJECTION: forcing a failure.\\x0aname failslab, interval 1, probability 0, space 0, times 0
 should_failslab+0xbe/0x110
 {alloc}+0x5f/0x520
 vfio_pci_core_feature_dma_buf+{off}/0x8c0 [vfio_pci_core]
 vfio_pci_core_ioctl_feature+0x87/0x140 [vfio_pci_core]"
    )
}

/// Defect 4's DMA-API report on the shipped lab kernel (hand run).
const DMA_API: &str = "<4>DMA-API: nrlab_importer 0000:00:02.0: device driver tries to free DMA memory it has not allocated [device address=0x0000000000000000] [size=0 bytes]
<4>WARNING: kernel/dma/debug.c:1004 at check_unmap+0x967/0x2d90, CPU#0: init/1
<4>RIP: 0010:check_unmap+0x970/0x2d90
<4> ? add_dma_entry+0x240/0x3f0
<4> debug_dma_unmap_phys+0xd9/0xe0";

/// Two of the first lab run's kmemleak objects (successful maps'
/// scatterlists, never freed).
const KMEMLEAK: &str = "unreferenced object 0xffff888007861f40 (size 32):
  comm \"init\", pid 1, jiffies 4294894572
  hex dump (first 32 bytes):
    02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
    00 e0 ff ff 00 00 00 00 00 10 00 00 00 00 00 00  ................
  backtrace (crc 51c44074):
    kmemleak_alloc+0x28/0x30
    __kmalloc_noprof+0x2ec/0x600
    sg_kmalloc+0x22/0x60
    __sg_alloc_table+0x22f/0x3f0
    sg_alloc_table+0x2b/0x170
    dma_buf_phys_vec_to_sgt+0x242/0xd90
    vfio_pci_dma_buf_map+0x17f/0x2f0 [vfio_pci_core]
    dma_buf_map_attachment+0x125/0x660
unreferenced object 0xffff888007861e80 (size 32):
  comm \"init\", pid 1, jiffies 4294894572
  hex dump (first 32 bytes):
    02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
    00 e0 ff ff 00 00 00 00 00 10 00 00 00 00 00 00  ................
  backtrace (crc 51c44074):
    kmemleak_alloc+0x28/0x30
    __kmalloc_noprof+0x2ec/0x600
    sg_kmalloc+0x22/0x60
    __sg_alloc_table+0x22f/0x3f0
    sg_alloc_table+0x2b/0x170
    dma_buf_phys_vec_to_sgt+0x242/0xd90
    vfio_pci_dma_buf_map+0x17f/0x2f0 [vfio_pci_core]
    dma_buf_map_attachment+0x125/0x660";

/// ivshmem with its 16 MiB BAR2, as the guest reports it.
fn ivshmem() -> DeviceInfo {
    use crate::proto::{BarInfo, BarType};
    DeviceInfo {
        name: "ivshmem-plain".into(),
        bdf: "0000:00:04.0".into(),
        group: 1,
        page_size: 4096,
        bars: vec![BarInfo { index: 2, kind: BarType::Mem, start: 0x80_0000_0000, len: 16 << 20 }],
    }
}

#[test]
fn frames_parse_with_and_without_prefixes() {
    let f = parse_frame("<4> dma_buf_phys_vec_to_sgt+0xd6/0xd90").unwrap();
    assert_eq!((f.func.as_str(), f.off, f.module), ("dma_buf_phys_vec_to_sgt", 0xd6, None));
    let f = parse_frame(" vfio_pci_dma_buf_map+0x17f/0x2f0 [vfio_pci_core]").unwrap();
    assert_eq!((f.func.as_str(), f.module.as_deref()), ("vfio_pci_dma_buf_map", Some("vfio_pci_core")));
    let f = parse_frame("[   12.345678]  ioctl_get_fs_sysfs_path.isra.0+0x200/0x200").unwrap();
    assert_eq!(f.func, "ioctl_get_fs_sysfs_path.isra.0");
    // Guessed frames, register dumps and headers are not frames.
    assert_eq!(parse_frame("<4> ? add_dma_entry+0x240/0x3f0"), None);
    assert_eq!(parse_frame("<4>RIP: 0010:check_unmap+0x970/0x2d90"), None);
    assert_eq!(parse_frame("Call Trace:"), None);
    assert_eq!(parse_frame("foo+0xzz/0x10"), None);
}

#[test]
fn the_fault_stack_is_the_trace_after_the_banner() {
    let klog = lines(SG_ALLOC_TABLE);
    let s = fault_stack(&klog);
    assert_eq!(s.len(), 13);
    assert_eq!(s[0].func, "dump_stack_lvl");
    assert_eq!(s[8].func, "dma_buf_phys_vec_to_sgt");
    assert_eq!(injector(&klog).as_deref(), Some("failslab"));
    // No banner (a __GFP_NOWARN point): no stack, whatever else was logged.
    assert!(fault_stack(&lines(DMA_API)).is_empty());
    assert_eq!(attribute(&[]), KernelSite::Unattributed);
}

#[test]
fn stacks_are_attributed_to_the_calls_kmod_shim_models() {
    let site = |t: &str| attribute(&fault_stack(&lines(t)));
    assert_eq!(site(SG_ALLOC_TABLE), KernelSite::SgTable);
    assert_eq!(site(DMA_BUF_EXPORT), KernelSite::DmaBufExport);
    assert_eq!(site(IMPORTER_KVMALLOC), KernelSite::NotModelled("the importer fixture: nrlab_ioctl".into()));
    let attach = "FAULT_INJECTION: forcing a failure.
 __kmalloc_cache_noprof+0x5f/0x520
 dma_buf_dynamic_attach+0x9a/0x7a0
 nrlab_ioctl+0x4d2/0x1ff0 [nrlab_importer]";
    assert_eq!(site(attach), KernelSite::Attachment);
    assert_eq!(KernelSite::Attachment.shim_plan(FaultOp::Attach), Some(FaultPlan::new(FaultSite::Alloc, 0)));
    // The direct kzalloc()s are only told apart by offset, per operation.
    let ranked = attribute_op(&[
        fault_stack(&lines(&sgt_kzalloc("0x15b"))),
        fault_stack(&lines(SG_ALLOC_TABLE)),
        fault_stack(&lines(&sgt_kzalloc("0xd6"))),
        vec![],
    ]);
    assert_eq!(
        ranked,
        vec![KernelSite::IovaState, KernelSite::SgTable, KernelSite::DmaBufDma, KernelSite::Unattributed]
    );
    // The hand run's shipped sweep: two ENOMEM points at the same offset
    // are the same call twice, not dma then state.
    let same = attribute_op(&[fault_stack(&lines(&sgt_kzalloc("0xd6"))), fault_stack(&lines(&sgt_kzalloc("0xd6")))]);
    assert_eq!(same, vec![KernelSite::DmaBufDma, KernelSite::DmaBufDma]);
    let export = attribute_op(&[
        fault_stack(&lines(&feature_kmalloc("__kmalloc_cache_noprof", "0x306"))),
        fault_stack(&lines(&feature_kmalloc("__kmalloc_noprof", "0x32f"))),
        fault_stack(&lines(&feature_kmalloc("__kmalloc_noprof", "0x400"))),
    ]);
    assert_eq!(export[..2], [KernelSite::Priv, KernelSite::PhysVec]);
    assert!(matches!(&export[2], KernelSite::NotModelled(w) if w.contains("third allocation")));
}

#[test]
fn sanitizer_lines_are_recognised() {
    let klog = lines(DMA_API);
    assert!(is_sanitizer_line(&klog[0]) && is_sanitizer_line(&klog[1]));
    assert!(!is_sanitizer_line(&klog[3]));
    assert!(!is_sanitizer_line("FAULT_INJECTION: forcing a failure."));
    assert!(is_sanitizer_line("kmemleak: 110 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"));
}

fn round(err: i32, probe: u64) -> Round {
    Round { fired: true, err, probe_err: Some(0), probe_iova: Some(probe), ..Default::default() }
}

#[test]
fn the_leak_rule_reads_the_hand_runs_probes() {
    let all = |_: &Round| true;
    // Defect 2, shipped, the decisive run: one page lower after each of 12.
    let rounds: Vec<Round> = (1..=12).map(|i| round(-12, 0xffff_3000 - i * PAGE)).collect();
    assert_eq!(iova_leak(Some(0xffff_3000), &rounds, all), IovaVerdict::Leaks { pages: 12, fails: 12 });
    // Patched: constant.
    let rounds: Vec<Round> = (0..12).map(|_| round(-12, 0xffff_e000)).collect();
    assert_eq!(iova_leak(Some(0xffff_e000), &rounds, all), IovaVerdict::Returned { fails: 12 });
    // Defect 3, shipped, the 12 blind repeats of N=7: three rounds kept
    // their address, so unfiltered they decide nothing...
    let probes = [
        0xffffb000u64,
        0xffffa000,
        0xffffa000,
        0xffff9000,
        0xffff8000,
        0xffff7000,
        0xffff7000,
        0xffff6000,
        0xffff5000,
        0xffff4000,
        0xffff4000,
        0xffff3000,
    ];
    let rounds: Vec<Round> = probes.iter().map(|&p| round(-12, p)).collect();
    assert!(matches!(iova_leak(Some(0xffffe000), &rounds, all), IovaVerdict::Undecided(_)));
    // ...and with those three known to have failed elsewhere (a stack that
    // is not sg_alloc_table()'s), the other nine leak.
    let mut rounds = rounds;
    for i in [2, 6, 10] {
        rounds[i].frames = vec!["elsewhere".into()];
    }
    let v = iova_leak(Some(0xffffe000), &rounds, |r| r.frames.is_empty());
    assert_eq!(v, IovaVerdict::Leaks { pages: 11, fails: 9 });
    assert_eq!(v.leaks(), Some(true));
    // Nothing to weigh, or a failed probe: undecided.
    assert!(matches!(iova_leak(None, &rounds, all), IovaVerdict::Undecided(_)));
    assert_eq!(iova_leak(Some(1), &rounds, |_| false).leaks(), None);
}

#[test]
fn the_shim_counts_allocations_in_the_order_assumed() {
    let dev = ivshmem();
    for op in FaultOp::ALL {
        let mut s = shim_for(&dev, Fidelity::Kernel);
        let imp = s.add_importer(crate::importer::host::importer_desc(crate::importer::Expect::IovaPath));
        let bytes = export_request(op.ranges());
        let req = uapi::Request::decode(&bytes).unwrap();
        if op == FaultOp::Export {
            s.arm_fault(None);
            s.export(&req).unwrap();
        } else if op == FaultOp::Attach {
            let buf = s.export(&req).unwrap();
            s.arm_fault(None);
            s.attach(buf, imp).unwrap();
        } else {
            let buf = s.export(&req).unwrap();
            let att = s.attach(buf, imp).unwrap();
            s.arm_fault(None);
            let _ = s.map(att);
        }
        assert_eq!(s.fault_calls(FaultSite::Alloc), shim_alloc_order(op).len() as u64, "{op}");
    }
}

#[test]
fn the_shim_predicts_each_defect_in_kernel_mode_only() {
    let dev = ivshmem();
    let plan = KernelSite::SgTable.shim_plan(FaultOp::Map1);
    assert_eq!(plan, Some(FaultPlan::new(FaultSite::Alloc, 2)));
    let enomem = -validator::Errno::ENOMEM.code();
    // Defect 3.
    let k = shim_outcome(&dev, Fidelity::Kernel, FaultOp::Map1, plan, false).unwrap();
    assert!(k.fired && k.iova_leak && k.err == enomem);
    let f = shim_outcome(&dev, Fidelity::Fixed, FaultOp::Map1, plan, false).unwrap();
    assert!(f.fired && !f.iova_leak && f.err == enomem && f.violations.is_empty());
    // Defect 2.
    let link = Some(FaultPlan::new(FaultSite::IovaLink, 0));
    assert!(shim_outcome(&dev, Fidelity::Kernel, FaultOp::Map1, link, false).unwrap().iova_leak);
    assert!(!shim_outcome(&dev, Fidelity::Fixed, FaultOp::Map1, link, false).unwrap().iova_leak);
    // Defect 4: per range, the second map fails.
    let map = Some(FaultPlan::new(FaultSite::MapPhys, 1));
    let k = shim_outcome(&dev, Fidelity::Kernel, FaultOp::Map2, map, true).unwrap();
    assert!(k.fired && k.spurious_unmaps > 0 && !k.iova_leak);
    assert_eq!(shim_outcome(&dev, Fidelity::Fixed, FaultOp::Map2, map, true).unwrap().spurious_unmaps, 0);
    // The attachment: ENOMEM, nothing left behind.
    let a =
        shim_outcome(&dev, Fidelity::Kernel, FaultOp::Attach, KernelSite::Attachment.shim_plan(FaultOp::Attach), false);
    let a = a.unwrap();
    assert!(a.fired && a.err == enomem && a.violations.is_empty());
    // An export allocation: ENOMEM, nothing left behind.
    let priv_ = KernelSite::Priv.shim_plan(FaultOp::Export);
    let e = shim_outcome(&dev, Fidelity::Kernel, FaultOp::Export, priv_, false).unwrap();
    assert!(e.fired && e.err == enomem && e.violations.is_empty());
    // Calls the shim never makes in an operation have no plan there.
    assert_eq!(KernelSite::IovaLink.shim_plan(FaultOp::Export), None);
    assert_eq!(KernelSite::NotModelled("x".into()).shim_plan(FaultOp::Map1), None);
}

/// A filtered Map1 sweep whose N=3 is `sg_alloc_table()`, repeated with
/// the probe moving one page per failure.
fn leaking_report() -> FaultGuestReport {
    let sg = lines(SG_ALLOC_TABLE);
    let frames: Vec<String> = fault_stack(&sg).into_iter().map(|f| f.func).collect();
    let point = |n: u32, klog: Vec<String>| SweepPoint { n, fired: true, err: -12, klog, ..Default::default() };
    let rounds = (1..=3).map(|i| Round { frames: frames.clone(), ..round(-12, 0xffff_e000 - i * PAGE) }).collect();
    FaultGuestReport {
        ivshmem: Some(ivshmem()),
        ops: vec![OpSweep {
            op: FaultOp::Map1,
            filter: Some("dma_buf_phys_vec_to_sgt".into()),
            baseline_err: 0,
            baseline_iova: Some(0xffff_e000),
            baseline_rounds: vec![],
            points: vec![
                point(1, lines(&sgt_kzalloc("0xd6"))),
                point(2, lines(&sgt_kzalloc("0x15b"))),
                point(3, sg),
                SweepPoint { n: 4, ..Default::default() },
            ],
            repeats: vec![Repeat { n: 3, before: Some(0xffff_e000), rounds }],
            note: None,
        }],
        ..Default::default()
    }
}

#[test]
fn a_leak_agrees_with_kernel_mode_and_is_a_finding_against_fixed_mode() {
    let rep = leaking_report();
    let (ops, _, defects) = compare(&rep, Variant::Shipped).unwrap();
    let pts = &ops[0].points;
    assert_eq!(pts.len(), 3, "the point that did not fire is not compared");
    let sites: Vec<&str> = pts.iter().map(|p| p.site.as_str()).collect();
    assert_eq!(sites, ["kzalloc(dma)", "kzalloc(dma->state)", "sg_alloc_table()"]);
    assert!(pts.iter().all(|p| p.agree == Some(true)), "{pts:?}");
    assert_eq!(pts[2].shim_iova_leak, Some(true));
    let d3 = defects.iter().find(|d| d.defect == 3).unwrap();
    assert_eq!((d3.observed, d3.as_expected, d3.verdict.as_str()), (Some(true), true, "confirmed on lab-shipped"));
    // Nothing observed for 2 and 4: not decided, not a failure.
    assert!(defects.iter().filter(|d| d.defect != 3).all(|d| d.observed.is_none() && d.as_expected));

    // The same observation on lab-patched: kmod-shim (Fixed) frees the span.
    let (ops, _, defects) = compare(&rep, Variant::Patched).unwrap();
    let sg = &ops[0].points[2];
    assert_eq!(sg.agree, Some(false));
    assert!(sg.notes.iter().any(|n| n == "IOVA leak: kernel true, kmod-shim false"), "{:?}", sg.notes);
    let d3 = defects.iter().find(|d| d.defect == 3).unwrap();
    assert_eq!((d3.as_expected, d3.verdict.as_str()), (false, "STILL PRESENT on lab-patched"));
}

#[test]
fn a_silent_enomem_before_priv_is_the_range_copy() {
    let point = |n: u32, err: i32, klog: Vec<String>| SweepPoint { n, fired: true, err, klog, ..Default::default() };
    let sweep = OpSweep {
        op: FaultOp::Export,
        filter: None,
        baseline_err: 0,
        baseline_iova: None,
        baseline_rounds: vec![],
        points: vec![
            point(1, -12, vec![]),
            point(2, 0, vec![]),
            point(3, -12, lines(&feature_kmalloc("__kmalloc_cache_noprof", "0x306"))),
            point(4, -12, vec![]),
        ],
        repeats: vec![],
        note: None,
    };
    let stacks: Vec<Vec<Frame>> = sweep.points.iter().map(|p| fault_stack(&p.klog)).collect();
    let mut sites = attribute_op(&stacks);
    assert_eq!(infer_range_copy(&sweep, &mut sites), vec![1]);
    assert_eq!(sites[0], KernelSite::RangeCopy);
    // Absorbed, or after priv: left unattributed.
    assert_eq!((&sites[1], &sites[3]), (&KernelSite::Unattributed, &KernelSite::Unattributed));
}

#[test]
fn kmemleak_objects_are_grouped_attributed_and_checked_against_the_ledger() {
    let objs = parse_kmemleak(&lines(KMEMLEAK));
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0].size, 32);
    assert_eq!(objs[0].dump.len(), 2);
    assert_eq!(objs[0].frames[5].func, "dma_buf_phys_vec_to_sgt");
    let g = kmemleak_groups(&lines(KMEMLEAK), Some(&ivshmem()), Variant::Patched);
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].count, g[0].size, g[0].site.as_str()), (2, 32, "sg_alloc_table()"));
    assert_eq!(g[0].backtrace[0], "__kmalloc_noprof");
    // The fixed mode (kernel-patches/0008) frees the sg table on unmap: a
    // leak on the patched kernel is a finding.
    assert!(g[0].shim.as_deref().unwrap().starts_with("kmod-shim frees dma->sgt"), "{:?}", g[0].shim);
    assert_eq!(sg_table_verdict(&g, Variant::Patched).verdict, "STILL PRESENT on lab-patched");
    // The kernel-faithful mode leaks it, as 7.2.13 does (defect 6).
    let g = kmemleak_groups(&lines(KMEMLEAK), Some(&ivshmem()), Variant::Shipped);
    assert!(g[0].shim.as_deref().unwrap().starts_with("kmod-shim leaks dma->sgt"), "{:?}", g[0].shim);
    assert_eq!(sg_table_verdict(&g, Variant::Shipped).verdict, "confirmed on lab-shipped");
    assert_eq!(sg_table_verdict(&[], Variant::Patched).verdict, "gone on lab-patched");
}

#[test]
fn guest_reports_round_trip_through_json() {
    let rep = leaking_report();
    let text = serde_json::to_string(&rep).unwrap();
    let back: FaultGuestReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rep);
    assert_eq!(FaultOp::Map2.probe_ranges(), &PROBE_TWO_PAGES);
    assert_eq!(OverrideKind::PerRangeSecondMapPhys.op(), FaultOp::Map2);
    assert_eq!(source_hash().len(), 16);
}

/// The 2-range map fails without any fault on `lab-shipped` (defect 1,
/// EADDRINUSE at the second link). Its unwind, `dma_iova_destroy(mapped_len)`,
/// decides whether the span comes back; the probe after each round says.
#[test]
fn an_unfaulted_failure_is_compared_too() {
    let eaddrinuse = -validator::Errno::EADDRINUSE.code();
    let mut rep = leaking_report();
    let sweep = &mut rep.ops[0];
    sweep.op = FaultOp::Map2;
    sweep.baseline_err = eaddrinuse;
    sweep.baseline_rounds = (1..=4).map(|i| round(eaddrinuse, 0xffff_e000 - 2 * i * PAGE)).collect();
    let (ops, _, _) = compare(&rep, Variant::Shipped).unwrap();
    let o = &ops[0];
    assert_eq!(o.shim_baseline_err.as_deref(), Some("EADDRINUSE"));
    assert!(o.baseline_iova_verdict.as_deref().unwrap().starts_with("leaks"), "{o:?}");
    // kmod-shim frees the whole span on this path: a finding.
    assert_eq!((o.baseline_shim_iova_leak, o.baseline_agree), (Some(false), Some(false)));
    // FINDINGS F10 explains it, so it does not fail the sweep.
    assert!(o.baseline_explained.as_deref().is_some_and(|e| e.starts_with("F10")), "{o:?}");
    // Constant probes: returned, and then the two agree.
    rep.ops[0].baseline_rounds = (0..4).map(|_| round(eaddrinuse, 0xffff_e000)).collect();
    let (ops, _, _) = compare(&rep, Variant::Shipped).unwrap();
    assert_eq!(ops[0].baseline_agree, Some(true));
}

/// Defect 5's path with the fd table full: 7.2.13 has the fix, so a clean
/// EMFILE is expected on both builds; kmod-shim's `Fidelity::Kernel` still
/// models the code before the fix, which is a disagreement to report.
#[test]
fn the_full_fd_table_checks_defect_5() {
    let emfile = -validator::Errno::EMFILE.code();
    let mut rep = leaking_report();
    rep.fd_full = Some(FdFullRun { filled: 1017, errs: vec![emfile; 3], klog: vec![] });
    let (_, overrides, defects) = compare(&rep, Variant::Shipped).unwrap();
    let d5 = defects.iter().find(|d| d.defect == 5).unwrap();
    assert_eq!((d5.observed, d5.as_expected, d5.verdict.as_str()), (Some(false), true, "absent: fixed in 7.2.13"));
    let o = overrides.last().unwrap();
    assert_eq!(o.kernel_errs, ["EMFILE"; 3]);
    // kmod-shim's `Fidelity::Kernel` is 7.2.13, which has the fix: it agrees
    // (the pre-fix code is `Fidelity::KernelPre70Rc6`).
    assert_eq!((o.shim_err.as_deref(), o.agree), (Some("EMFILE"), Some(true)));
    assert!(!o.notes.iter().any(|n| n.starts_with("memory safety")), "{:?}", o.notes);
    let (_, overrides, _) = compare(&rep, Variant::Patched).unwrap();
    assert_eq!(overrides.last().unwrap().agree, Some(true));
    // A KASAN report there would be the defect, and unexpected.
    rep.fd_full = Some(FdFullRun {
        filled: 1017,
        errs: vec![emfile],
        klog: vec!["BUG: KASAN: slab-use-after-free in vfio_pci_dma_buf_release+0x2c/0x1a0".into()],
    });
    let (_, _, defects) = compare(&rep, Variant::Patched).unwrap();
    let d5 = defects.iter().find(|d| d.defect == 5).unwrap();
    assert_eq!((d5.observed, d5.as_expected), (Some(true), false));
}
