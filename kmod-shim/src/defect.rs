//! The kernel defects the kernel-faithful modes reproduce, as data: the
//! crate docs, the RFC generator (`rfc`, `defects_md`) and the tests read
//! [`DEFECTS`].

use std::fmt;

use crate::{Errno, Fidelity};

/// How the kernel lab made a defect show on a running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Nothing injected: the request alone reaches it.
    None,
    /// A kprobe at the entry of `function` overriding its return value
    /// (`override_function_with_return()`, with a dummy `post_handler` so
    /// that `OPTPROBES` does not optimise the probe and ignore the
    /// override).
    KprobeOverride {
        /// The functions forced, and what they were made to return.
        functions: &'static str,
    },
    /// `/proc/thread-self/fail-nth` (failslab and fail_page_alloc) at the
    /// call whose stack shows `function`.
    FailNth {
        /// The failing allocation's caller.
        function: &'static str,
    },
}

/// What the kernel lab saw: the kind of trace a lab report can be compared
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabTrace {
    /// `dma_buf_map_attachment()` returned this errno.
    MapErrno(Errno),
    /// Under `iommu.strict=1`, the IOVA of a clean map made after each
    /// failure moved down: IOVA space never given back.
    IovaDrift {
        /// Failures in the run.
        failures: u32,
        /// Pages the probe IOVA moved down over the run.
        pages: u32,
    },
    /// kmemleak reports unreferenced objects after a scan.
    Kmemleak {
        /// Objects reported.
        objects: u32,
        /// Bytes each.
        size: u32,
        /// The kernel call that allocated them.
        from: &'static str,
        /// Map/unmap cycles of the run.
        cycles: u32,
    },
    /// A `CONFIG_DMA_API_DEBUG` report in the kernel log.
    DmaApiDebug {
        /// The report's text.
        report: &'static str,
        /// The function whose call is in the trace.
        from: &'static str,
    },
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injection::None => f.write_str("no injection"),
            Injection::KprobeOverride { functions } => write!(f, "kprobe return override of {functions}"),
            Injection::FailNth { function } => write!(f, "fail-nth at `{function}`"),
        }
    }
}

impl fmt::Display for LabTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabTrace::MapErrno(e) => write!(f, "the map fails with {e} ({})", -e.code()),
            LabTrace::IovaDrift { failures, pages } => {
                write!(f, "under iommu.strict=1 the next map's IOVA is {pages} pages lower after {failures} failures")
            }
            LabTrace::DmaApiDebug { report, from } => write!(f, "DMA-API debug: \"{report}\" from `{from}`"),
            LabTrace::Kmemleak { objects, size, from, cycles } => write!(
                f,
                "a kmemleak scan reports {objects} unreferenced {size}-byte objects from `{from}` after about \
                 {cycles} map/unmap cycles"
            ),
        }
    }
}

/// Where a defect stands on real kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefectStatus {
    /// Read from the source only; no running kernel has exercised it (error
    /// paths that need error injection).
    Unconfirmed,
    /// Measured on running kernels by the kernel lab, shaped so that a lab
    /// report (a fault sweep) can be compared with it field by field.
    Confirmed {
        /// The as-shipped kernels it was seen on (`uname -r`).
        kernels: &'static [&'static str],
        /// How it was reached.
        injection: Injection,
        /// What was seen.
        trace: LabTrace,
        /// The kernel the fix was tried on.
        patched: &'static str,
        /// Whether the trace was gone there.
        gone_on_patched: bool,
        /// What the patched kernel did instead.
        patched_trace: &'static str,
        /// The findings in `kernel-lab/FINDINGS.md`.
        finding: &'static str,
    },
    /// Fixed upstream: not a defect of current kernels.
    FixedUpstream {
        /// The first release with the fix.
        version: &'static str,
        /// The fix's commit (abbreviated hash).
        commit: &'static str,
        /// The fix's subject line.
        subject: &'static str,
        /// Its CVE.
        cve: &'static str,
        /// What the kernel lab saw on a kernel with the fix.
        lab: &'static str,
    },
}

/// One kernel defect a kernel-faithful mode models.
///
/// # Invariants
/// `id`s are 1, 2, ... in [`DEFECTS`] order; every `evidence` entry names
/// a test function `file::name` of this crate (checked by a unit test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defect {
    /// Its number (the RFC and `kernel-lab/FINDINGS.md` cite it).
    pub id: u8,
    /// A short title.
    pub title: &'static str,
    /// The C function holding it.
    pub c_function: &'static str,
    /// The C file holding it.
    pub c_file: &'static str,
    /// What the kernel does, hence what [`Defect::fidelity`] does.
    pub faithful: &'static str,
    /// What [`Fidelity::Fixed`] does instead.
    pub fixed: &'static str,
    /// The tests (`tests/FILE.rs::FN`) that show both modes.
    pub evidence: &'static [&'static str],
    /// The kernel trees the code was read from.
    pub read_from: &'static str,
    /// The mode that reproduces it: [`Fidelity::Kernel`] (Linux
    /// [`Fidelity::KERNEL_VERSION`]) for a current defect,
    /// [`Fidelity::KernelPre70Rc6`] for one fixed before it.
    pub fidelity: Fidelity,
    /// Which kernels that mode's behaviour for this defect reproduces.
    pub faithful_models: &'static str,
    /// Where the code stands in each kernel source read: (version,
    /// `file:line` in that version's tree).
    pub source: &'static [(&'static str, &'static str)],
    /// The patch of `kernel-patches/` that fixes it, if any.
    pub patch: Option<&'static str>,
    /// Where it stands on real kernels.
    pub status: DefectStatus,
}

impl Defect {
    /// Whether current kernels still have it.
    pub const fn is_current(&self) -> bool {
        !matches!(self.status, DefectStatus::FixedUpstream { .. })
    }
}

impl fmt::Display for DefectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefectStatus::Unconfirmed => f.write_str("unconfirmed on a running kernel (needs error injection)"),
            DefectStatus::Confirmed { kernels, injection, trace, patched, gone_on_patched, patched_trace, finding } => {
                let gone = if *gone_on_patched { "gone" } else { "still there" };
                write!(
                    f,
                    "confirmed by the kernel lab on {} ({injection}: {trace}); {gone} on {patched} ({patched_trace}) \
                     (kernel-lab/FINDINGS.md {finding})",
                    kernels.join(", ")
                )
            }
            DefectStatus::FixedUpstream { version, commit, subject, cve, lab } => {
                write!(f, "fixed upstream in {version} (commit {commit}, \"{subject}\", {cve}); {lab}")
            }
        }
    }
}

impl fmt::Display for Defect {
    /// One markdown list item.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. **{}** (`{}`, {}). ", self.id, self.title, self.c_function, self.c_file)?;
        write!(f, "Kernel {} (`Fidelity::{:?}`): ", self.faithful_models, self.fidelity)?;
        write!(f, "{} Fixed: {} Status: {}. Read from {}", self.faithful, self.fixed, self.status, self.read_from)?;
        for (version, line) in self.source {
            write!(f, "; {version}: `{line}`")?;
        }
        if let Some(p) = self.patch {
            write!(f, "; fix: `kernel-patches/{p}`")?;
        }
        let tests: Vec<String> = self.evidence.iter().map(|e| format!("`kmod-shim/{e}`")).collect();
        write!(f, "; tests: {}.", tests.join(", "))
    }
}

/// The trees every defect was read from.
const READ_FROM: &str = "6.19-7.0 torvalds/linux and Debian's 7.2.13 and 7.3.4 sources";

/// What the current defects' faithful behaviour models.
const CURRENT: &str = "7.2.13 and 7.3.4 (whose dma-buf-mapping.c is byte-identical), as in 6.19-7.0";

/// The lab build of Debian's 7.2.13 source (allnoconfig plus
/// `kernel-lab/config/lab.config`), as shipped.
const LAB_BUILD: &str = "7.2.13-nrlab";

/// The same build with the series.
const LAB_PATCHED: &str = "7.2.13-nrlab with kernel-patches/";

/// Builds [`DEFECTS`] and its documentation from one list, so the rendered
/// docs cannot drift from the data.
macro_rules! defects {
    ($({
        id: $id:literal,
        title: $title:literal,
        c_function: $cf:literal,
        c_file: $file:literal,
        faithful: $faithful:literal,
        fixed: $fixed:literal,
        evidence: [$($ev:literal),* $(,)?],
        fidelity: $fidelity:expr,
        faithful_models: $models:expr,
        source: [$(($ver:literal, $line:literal)),* $(,)?],
        patch: $patch:expr,
        status: $status:expr $(,)?
    }),* $(,)?) => {
        /// The defects, in the order the RFC numbers them:
        ///
        $(
            #[doc = concat!(stringify!($id), ". **", $title, "** (`", $cf, "`): ", $faithful, " Fixed: ", $fixed)]
            ///
        )*
        /// Each entry's [`Defect::status`] says whether real kernels still
        /// have it.
        pub const DEFECTS: &[Defect] = &[$(
            Defect {
                id: $id,
                title: $title,
                c_function: $cf,
                c_file: $file,
                faithful: $faithful,
                fixed: $fixed,
                evidence: &[$($ev),*],
                read_from: READ_FROM,
                fidelity: $fidelity,
                faithful_models: $models,
                source: &[$(($ver, $line)),*],
                patch: $patch,
                status: $status,
            }
        ),*];
    };
}

defects! {
    {
        id: 1,
        title: "IOVA link offset",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "every range is passed to `dma_iova_link()` with offset 0, and `dma_iova_link()` maps at \
                   `state->addr + offset`, so with two or more ranges on the IOVA path range 1 is mapped over \
                   range 0 and `iommu_map()` finds a present PTE. The answer is the IOMMU driver's \
                   (`IommuModel`): EADDRINUSE on Intel VT-d's generic page table (the default), \
                   EEXIST on io-pgtable-arm; the map fails and unwinds.",
        fixed: "range i is linked at the bytes linked so far (`mapped_len`), as `kernel-patches/0001` does.",
        evidence: [
            "tests/paths.rs::kernel_links_every_range_at_offset_zero",
            "tests/lab_findings.rs::f1_iova_collision_errno_is_the_iommu_drivers",
        ],
        fidelity: Fidelity::Kernel,
        faithful_models: CURRENT,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:158-161 (the 0 on :159)"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:158-161 (file identical to 7.2.13)"),
        ],
        patch: Some("0001-dma-buf-link-each-range-at-its-own-offset-in-the-IOV.patch"),
        status: DefectStatus::Confirmed {
            kernels: &["7.2.13+deb14-cloud-amd64", "7.3.4+deb13-cloud-amd64", LAB_BUILD],
            injection: Injection::None,
            trace: LabTrace::MapErrno(Errno::EADDRINUSE),
            patched: LAB_PATCHED,
            gone_on_patched: true,
            patched_trace: "the two-range dma-buf maps as one entry and edu reads both ranges' bytes in order",
            finding: "F1, F7",
        },
    },
    {
        id: 2,
        title: "IOVA leak when the first link fails",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "`err_unmap_dma` skips `dma_iova_destroy()` when `i == 0`, so a `dma_iova_link()` failure \
                   at range 0 never gives back the span `dma_iova_try_alloc()` reserved.",
        fixed: "`dma_iova_destroy(mapped_len = 0)`, which is `dma_iova_free()` of the span \
                (`kernel-patches/0002`).",
        evidence: ["tests/faults.rs::kernel_mode_leaks_iova_when_the_first_link_fails"],
        fidelity: Fidelity::Kernel,
        faithful_models: CURRENT,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:204-206 (the !i on :205)"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:204-206 (file identical to 7.2.13)"),
        ],
        patch: Some("0002-dma-buf-free-the-IOVA-span-when-linking-the-first-ra.patch"),
        status: DefectStatus::Confirmed {
            kernels: &[LAB_BUILD],
            injection: Injection::KprobeOverride { functions: "`dma_iova_link()` (-ENOMEM on the first link)" },
            trace: LabTrace::IovaDrift { failures: 12, pages: 12 },
            patched: LAB_PATCHED,
            gone_on_patched: true,
            patched_trace: "the IOVA stays the same over the 12 failures",
            finding: "F7",
        },
    },
    {
        id: 3,
        title: "IOVA leak when sg_alloc_table() fails",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "after a successful `dma_iova_try_alloc()`, `err_free_state` only `kfree()`s the state: \
                   the IOVA span is never given back.",
        fixed: "`dma_iova_free()` before freeing the state (`kernel-patches/0003`).",
        evidence: ["tests/faults.rs::kernel_mode_leaks_iova_when_sg_alloc_table_fails"],
        fidelity: Fidelity::Kernel,
        faithful_models: CURRENT,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:147-149, 216-217"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:147-149, 216-217 (file identical to 7.2.13)"),
        ],
        patch: Some("0003-dma-buf-free-the-IOVA-span-when-sg_alloc_table-fails.patch"),
        status: DefectStatus::Confirmed {
            kernels: &[LAB_BUILD],
            injection: Injection::FailNth { function: "sg_alloc_table()" },
            trace: LabTrace::IovaDrift { failures: 12, pages: 11 },
            patched: LAB_PATCHED,
            gone_on_patched: true,
            patched_trace: "the IOVA stays the same over the 12 failures",
            finding: "F7",
        },
    },
    {
        id: 4,
        title: "Unmapping never-filled sg entries",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "when `dma_map_phys()` fails at range `i > 0`, the unwind walks all `nents` entries with \
                   `for_each_sgtable_dma_sg()`, the zeroed ones never filled included, and calls \
                   `dma_unmap_phys(dev, 0, 0, ...)` for each of those (counted in \
                   `Events::spurious_unmaps`).",
        fixed: "what `kernel-patches/0004` does: the walk stops at the first entry never filled, so one \
                `dma_unmap_phys()` per filled sg entry, as `dma_buf_free_sgt()` unmaps a mapping. That differs \
                from one unmap per mapped range only for a range longer than `MAX_SG_ENT_SZ` (4 GiB - 4 KiB \
                with 4 KiB pages), which one `dma_map_phys()` mapped and the unwind unmaps in pieces, one per \
                entry.",
        evidence: [
            "tests/faults.rs::kernel_mode_unmaps_never_filled_entries",
            "tests/faults.rs::fixed_mode_unwinds_per_filled_sg_entry_like_patch_0004",
        ],
        fidelity: Fidelity::Kernel,
        faithful_models: CURRENT,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:210-213"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:210-213 (file identical to 7.2.13)"),
        ],
        patch: Some("0004-dma-buf-unmap-only-the-filled-sg-entries-when-a-rang.patch"),
        status: DefectStatus::Confirmed {
            kernels: &[LAB_BUILD],
            injection: Injection::KprobeOverride {
                functions: "`dma_iova_try_alloc()` (false) and the second `dma_map_phys()` (DMA_MAPPING_ERROR)",
            },
            trace: LabTrace::DmaApiDebug {
                report: "device driver tries to free DMA memory it has not allocated [device \
                         address=0x0000000000000000] [size=0 bytes]",
                from: "dma_buf_phys_vec_to_sgt()",
            },
            patched: LAB_PATCHED,
            gone_on_patched: true,
            patched_trace: "no kernel report",
            finding: "F7",
        },
    },
    {
        id: 5,
        title: "Double release when dma_buf_fd() fails",
        c_function: "vfio_pci_core_feature_dma_buf()",
        c_file: "drivers/vfio/pci/vfio_pci_dmabuf.c",
        faithful: "`err_dma_buf` calls `dma_buf_put()`, whose release (`vfio_pci_dma_buf_release()`) already \
                   puts the registration and frees `phys_vec` and `priv`; the code then falls through \
                   `err_dev_put` and `err_free_phys` and does all three again, and the deferred release reads \
                   the freed `priv`. Reachable with a full fd table (EMFILE). The model records each as an \
                   `Anomaly`.",
        fixed: "return right after `dma_buf_put()`, as the upstream fix and 7.2.13 do (so `Fidelity::Kernel` \
                does the same).",
        evidence: [
            "tests/faults.rs::kernel_pre_70_rc6_dma_buf_fd_failure_double_releases",
            "tests/faults.rs::kernel_7_2_13_dma_buf_fd_failure_releases_once",
        ],
        fidelity: Fidelity::KernelPre70Rc6,
        faithful_models: "6.19 to 7.0-rc5, before the upstream fix",
        source: [
            ("7.2.13", "drivers/vfio/pci/vfio_pci_dmabuf.c:319-323 (fixed: dma_buf_put() and return)"),
            ("7.3.4", "drivers/vfio/pci/vfio_pci_dmabuf.c:319-323 (file identical to 7.2.13; fixed)"),
        ],
        patch: None,
        status: DefectStatus::FixedUpstream {
            version: "v7.0-rc6",
            commit: "e98137f0a874",
            subject: "vfio/pci: Fix double free in dma-buf feature",
            cve: "CVE-2026-31468",
            lab: "an EMFILE run on Debian 7.2.13 answered EMFILE with no kernel report (kernel-lab/FINDINGS.md F6)",
        },
    },
    {
        id: 6,
        title: "The sg table of every mapping is never freed",
        c_function: "dma_buf_free_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "`dma_buf_phys_vec_to_sgt()` sets `dma->sgt.orig_nents = 0` before returning (no CPU list), \
                   and `dma_buf_free_sgt()` passes the table to `sg_free_table()`, which frees `orig_nents` \
                   entries: none. Every map/unmap cycle leaks the scatterlist array, on every P2P path \
                   (counted in `Events::sg_table_leaks`).",
        fixed: "`dma_buf_free_sgt()` sets `orig_nents` back to `nents` (what `sg_alloc_table()` allocated) \
                before `sg_free_table()` (`kernel-patches/0008`).",
        evidence: ["tests/faults.rs::kernel_mode_leaks_the_sg_table_of_every_mapping"],
        fidelity: Fidelity::Kernel,
        faithful_models: CURRENT,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:197 (orig_nents = 0), :263 (sg_free_table())"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:197, :263 (file identical to 7.2.13)"),
        ],
        patch: Some("0008-dma-buf-free-the-sg-table-of-a-mapping-in-dma_buf_fr.patch"),
        status: DefectStatus::Confirmed {
            kernels: &[LAB_BUILD],
            injection: Injection::None,
            trace: LabTrace::Kmemleak {
                objects: 287,
                size: 32,
                from: "sg_alloc_table() <- dma_buf_phys_vec_to_sgt() <- vfio_pci_dma_buf_map()",
                cycles: 300,
            },
            patched: LAB_PATCHED,
            gone_on_patched: true,
            patched_trace: "the same fault sweep's kmemleak scan reports no object (with 0001-0007 only: 280)",
            finding: "F9",
        },
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test files the evidence names, as the compiler sees them.
    const TESTS: [(&str, &str); 3] = [
        ("tests/faults.rs", include_str!("../tests/faults.rs")),
        ("tests/paths.rs", include_str!("../tests/paths.rs")),
        ("tests/lab_findings.rs", include_str!("../tests/lab_findings.rs")),
    ];

    #[test]
    fn ids_count_up_from_one() {
        for (i, d) in DEFECTS.iter().enumerate() {
            assert_eq!(usize::from(d.id), i + 1, "{}", d.title);
        }
    }

    #[test]
    fn every_evidence_names_an_existing_test() {
        for d in DEFECTS {
            assert!(!d.evidence.is_empty(), "defect {} has no test", d.id);
            for e in d.evidence {
                let (file, func) = e.split_once("::").expect("file::fn");
                let (_, src) = TESTS.iter().find(|(f, _)| *f == file).unwrap_or_else(|| panic!("{e}: unknown file"));
                assert!(src.contains(&format!("fn {func}()")), "{e}: no such test");
            }
        }
    }

    #[test]
    fn every_named_patch_is_in_the_series() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches");
        for p in DEFECTS.iter().filter_map(|d| d.patch) {
            assert!(dir.join(p).is_file(), "kernel-patches/{p} is missing");
        }
    }

    #[test]
    fn current_defects_are_the_7_2_13_mode_and_confirmed_on_the_lab_build() {
        for d in &DEFECTS[..4] {
            assert_eq!(d.fidelity, Fidelity::Kernel, "defect {}", d.id);
            assert!(d.faithful_models.starts_with(Fidelity::KERNEL_VERSION), "defect {}", d.id);
            let versions: Vec<&str> = d.source.iter().map(|s| s.0).collect();
            assert_eq!(versions, ["7.2.13", "7.3.4"], "defect {}", d.id);
            match d.status {
                DefectStatus::Confirmed { kernels, gone_on_patched, .. } => {
                    assert!(kernels.contains(&LAB_BUILD) && gone_on_patched, "defect {}", d.id);
                }
                s => panic!("defect {}: {s:?}", d.id),
            }
        }
        assert_eq!(DEFECTS[4].fidelity, Fidelity::KernelPre70Rc6);
        assert!(!DEFECTS[4].faithful_models.contains(Fidelity::KERNEL_VERSION));
    }

    #[test]
    fn defect_5_is_recorded_as_fixed_upstream() {
        let d = &DEFECTS[4];
        assert!(!d.is_current());
        assert!(DEFECTS[..4].iter().all(Defect::is_current));
        assert!(DEFECTS[..4].iter().all(|d| d.patch.is_some()) && d.patch.is_none());
        assert!(d.to_string().contains("v7.0-rc6"));
    }
}
