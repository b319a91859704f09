//! The kernel defects [`crate::Fidelity::Kernel`] reproduces, as data: the
//! crate docs, the RFC generator (`rfc`, `defects_md`) and the tests read
//! [`DEFECTS`].

use std::fmt;

/// Where a defect stands on real kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefectStatus {
    /// Read from the source only; no running kernel has exercised it (error
    /// paths that need error injection).
    Unconfirmed,
    /// Measured on running kernels by the kernel lab.
    Confirmed {
        /// The kernels it was measured on.
        kernels: &'static [&'static str],
        /// The finding in `kernel-lab/FINDINGS.md`.
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

/// One kernel defect the kernel-faithful mode models.
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
    /// What the kernel does, hence what [`crate::Fidelity::Kernel`] does.
    pub faithful: &'static str,
    /// What [`crate::Fidelity::Fixed`] does instead.
    pub fixed: &'static str,
    /// The tests (`tests/FILE.rs::FN`) that show both modes.
    pub evidence: &'static [&'static str],
    /// The kernel trees the code was read from.
    pub read_from: &'static str,
    /// Which kernels the faithful mode's behaviour for this defect
    /// reproduces (narrower than `read_from` once a fix landed).
    pub faithful_models: &'static str,
    /// Where the code stands in each kernel source read since: (version,
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
            DefectStatus::Confirmed { kernels, finding } => {
                write!(f, "confirmed on {} by the kernel lab (kernel-lab/FINDINGS.md {finding})", kernels.join(" and "))
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
        if self.faithful_models == self.read_from {
            f.write_str("Kernel: ")?;
        } else {
            // A fix landed: say which kernels the faithful mode is.
            write!(f, "Kernel {}: ", self.faithful_models)?;
        }
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
const READ_FROM: &str = "6.19-7.0 torvalds/linux";

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
        fixed: "range i is linked at the bytes linked so far (`mapped_len`).",
        evidence: [
            "tests/paths.rs::kernel_links_every_range_at_offset_zero",
            "tests/lab_findings.rs::f1_iova_collision_errno_is_the_iommu_drivers",
        ],
        faithful_models: READ_FROM,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:159"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:159 (file identical to 7.2.13)"),
        ],
        patch: Some("0001-dma-buf-link-each-range-at-its-own-offset-in-the-IOV.patch"),
        status: DefectStatus::Confirmed { kernels: &["7.2.13", "7.3.4", "the 7.2.13 lab build"], finding: "F1, F7" },
    },
    {
        id: 2,
        title: "IOVA leak when the first link fails",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "`err_unmap_dma` skips `dma_iova_destroy()` when `i == 0`, so a `dma_iova_link()` failure \
                   at range 0 never gives back the span `dma_iova_try_alloc()` reserved.",
        fixed: "`dma_iova_free()` the span.",
        evidence: ["tests/faults.rs::kernel_mode_leaks_iova_when_the_first_link_fails"],
        faithful_models: READ_FROM,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:205"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:205 (file identical to 7.2.13)"),
        ],
        patch: Some("0002-dma-buf-free-the-IOVA-span-when-linking-the-first-ra.patch"),
        status: DefectStatus::Confirmed { kernels: &["the 7.2.13 lab build"], finding: "F7" },
    },
    {
        id: 3,
        title: "IOVA leak when sg_alloc_table() fails",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "after a successful `dma_iova_try_alloc()`, `err_free_state` only `kfree()`s the state: \
                   the IOVA span is never given back.",
        fixed: "`dma_iova_free()` before freeing the state.",
        evidence: ["tests/faults.rs::kernel_mode_leaks_iova_when_sg_alloc_table_fails"],
        faithful_models: READ_FROM,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:147-149, 216-217"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:147-149, 216-217 (file identical to 7.2.13)"),
        ],
        patch: Some("0003-dma-buf-free-the-IOVA-span-when-sg_alloc_table-fails.patch"),
        status: DefectStatus::Confirmed { kernels: &["the 7.2.13 lab build"], finding: "F7" },
    },
    {
        id: 4,
        title: "Unmapping never-filled sg entries",
        c_function: "dma_buf_phys_vec_to_sgt()",
        c_file: "drivers/dma-buf/dma-buf-mapping.c",
        faithful: "when `dma_map_phys()` fails at range `i > 0`, the unwind walks all `nents` entries with \
                   `for_each_sgtable_dma_sg()`, the zeroed ones never filled included, and calls \
                   `dma_unmap_phys(dev, 0, 0, ...)` for each of those (counted in \
                   `Events::spurious_unmaps`; what dma-iommu does with them was not verified).",
        fixed: "one `dma_unmap_phys()` for each of the `i` ranges mapped.",
        evidence: ["tests/faults.rs::kernel_mode_unmaps_never_filled_entries"],
        faithful_models: READ_FROM,
        source: [
            ("7.2.13", "drivers/dma-buf/dma-buf-mapping.c:210-213"),
            ("7.3.4", "drivers/dma-buf/dma-buf-mapping.c:210-213 (file identical to 7.2.13)"),
        ],
        patch: Some("0004-dma-buf-unmap-only-the-filled-sg-entries-when-a-rang.patch"),
        status: DefectStatus::Confirmed { kernels: &["the 7.2.13 lab build"], finding: "F7" },
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
        fixed: "return right after `dma_buf_put()`.",
        evidence: ["tests/faults.rs::kernel_mode_dma_buf_fd_failure_double_releases"],
        faithful_models: "6.19 to 7.0-rc5, before the upstream fix",
        source: [("7.2.13", "drivers/vfio/pci/vfio_pci_dmabuf.c:319-323 (fixed: dma_buf_put() and return)")],
        patch: None,
        status: DefectStatus::FixedUpstream {
            version: "v7.0-rc6",
            commit: "e98137f0a874",
            subject: "vfio/pci: Fix double free in dma-buf feature",
            cve: "CVE-2026-31468",
            lab: "an EMFILE run on Debian 7.2.13 answered EMFILE with no kernel report (kernel-lab/FINDINGS.md F6)",
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
    fn defect_5_is_recorded_as_fixed_upstream() {
        let d = &DEFECTS[4];
        assert!(!d.is_current());
        assert!(DEFECTS[..4].iter().all(Defect::is_current));
        assert!(DEFECTS[..4].iter().all(|d| d.patch.is_some()) && d.patch.is_none());
        assert!(d.to_string().contains("v7.0-rc6"));
    }
}
