//! `tools/testing/selftests/vfio/vfio_pci_dmabuf_test.c` (the kselftest of
//! `kernel-patches/0007`) in the lab: built statically from the lab-patched
//! source (Debian's 7.2.13 with the whole series), booted with its own `/init` (`kernel-lab/selftest/stinit.c`)
//! against ivshmem-plain (memory BARs) and pci-testdev (an I/O BAR) in one
//! boot per kernel, its TAP output read by [`tap`] and judged per kernel, and
//! three deliberate breakages of `drivers/vfio/pci/vfio_pci_dmabuf.c`
//! (`kernel-lab/selftest/breaks/`), each of which the test named after the
//! broken rule must catch (`kernel-lab selftest`).

pub mod tap;

use std::fmt;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::debian::{self, Kernel};
use crate::host::{io_err, progress, run_bounded, tempdir, LabError};
use crate::initramfs::{self, CpioEntry};
use crate::lab_kernel::{self, BuildTree};
use crate::patches;
use crate::qemu::{self, Qemu};
use crate::report::{
    SelftestBreakageRun, SelftestDevice, SelftestFailure, SelftestKernelRun, SelftestMode, SelftestReport, SelftestTest,
};
use tap::{Counts, GuestLog, Outcome, RunEnd};

/// The test binary, and its path in the initramfs (`/`).
pub const BINARY: &str = "vfio_pci_dmabuf_test";
/// The guest's `/init`.
pub const STINIT: &str = include_str!("../../selftest/stinit.c");
/// The devices the guest runs the test against, in its run order.
pub const DEVICES: [&str; 2] = ["ivshmem-plain", "pci-testdev"];
/// The fixture variants (the test's `FIXTURE_VARIANT_ADD`s, the library's
/// `iommu_modes[]`), in TAP order.
pub const IOMMU_MODES: [&str; 5] =
    ["vfio_type1_iommu", "vfio_type1v2_iommu", "iommufd_compat_type1", "iommufd_compat_type1v2", "iommufd"];
/// The start of every case's skip reason when the probe gets ENOTTY.
pub const FEATURE_ABSENT: &str = "VFIO_DEVICE_FEATURE_DMA_BUF not supported";
/// What `--kernel all` runs: Debian's 7.2 and 7.3 cloud kernels, both lab
/// builds, and trixie's 6.12 (no feature: every case must skip).
pub const ALL_KERNELS: [&str; 5] = ["7.2.13", "7.3.4", "lab-shipped", "lab-patched", "6.12"];
/// Bumped when the build steps below change what they produce.
const RECIPE: &str = "SOURCE_PARTS; make headers O=; make -C tools/testing/selftests/vfio EXTRA_CFLAGS=-static; v2";
/// The top directory of Debian's source tarball.
const TARBALL_TOP: &str = "linux-source-7.2";
/// What the test's build reads of the tree: `make headers` (the top
/// Makefile, scripts/, the uapi headers), tools/, and the two DMA engine
/// register headers that libvfio's drivers link to. A seventh of the tree,
/// which is what makes unpacking and removing it cheap.
const SOURCE_PARTS: &[&str] = &[
    "Makefile",
    "Kbuild",
    "Kconfig",
    "scripts",
    "include",
    "arch/x86",
    "tools",
    "drivers/dma/idxd",
    "drivers/dma/ioat",
];
/// Bumped when the breakage module's build changes.
const MODULE_RECIPE: &str = "copy drivers/vfio/pci; git apply; Kbuild from its Makefile; M= modules; v1";

/// One deliberate breakage: a throw-away patch that removes one check of
/// `drivers/vfio/pci/vfio_pci_dmabuf.c` (never in the series), and the
/// tests that must fail because of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breakage {
    /// Its name (the patch file's stem).
    pub name: &'static str,
    /// The rule it breaks.
    pub rule: &'static str,
    /// The patch (`None`: the module rebuilt unchanged, the control).
    pub patch: Option<&'static str>,
    /// The `TEST_F`s that must fail; no other may.
    pub must_fail: &'static [&'static str],
}

/// The breakages, the control first: it shows that an out-of-tree rebuild
/// of `vfio-pci-core.ko` alone fails nothing.
pub const BREAKAGES: &[Breakage] = &[
    Breakage {
        name: "control",
        rule: "none: vfio-pci-core.ko rebuilt out of tree, unchanged",
        patch: None,
        must_fail: &[],
    },
    Breakage {
        name: "no-flags-check",
        rule: "flags must be 0 (vfio_pci_core_feature_dma_buf(), checked before the region)",
        patch: Some(include_str!("../../selftest/breaks/no-flags-check.patch")),
        must_fail: &["flags_nonzero", "precedence"],
    },
    Breakage {
        name: "no-iomap-check",
        rule: "a BAR without resources is -ENODEV (vfio_pci_core_get_iomap() in the region check)",
        patch: Some(include_str!("../../selftest/breaks/no-iomap-check.patch")),
        must_fail: &["absent_bar"],
    },
    Breakage {
        name: "no-align-check",
        rule: "range offset and length page aligned (validate_dmabuf_input())",
        patch: Some(include_str!("../../selftest/breaks/no-align-check.patch")),
        must_fail: &["range_unaligned"],
    },
];

/// Whether the feature answered the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// `probe` passed in some mode.
    Present,
    /// Every `probe` case skipped with [`FEATURE_ABSENT`].
    Absent,
    /// Neither (no probe ran, or it failed).
    Unknown,
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Present => "present",
            Feature::Absent => "absent",
            Feature::Unknown => "unknown",
        })
    }
}

/// What makes a kernel's run fail: one variant per check of [`judge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The guest's output has no `STINIT: done` (it crashed or hung).
    GuestUnfinished,
    /// The guest never ran the test on this device.
    DeviceMissing {
        /// The device.
        device: String,
    },
    /// The run stopped before its plan was done, or did not exit.
    RunIncomplete {
        /// The device.
        device: String,
        /// `1..N`.
        planned: Option<u32>,
        /// Cases printed.
        seen: u32,
        /// How it ended.
        end: RunEnd,
    },
    /// A case failed.
    CaseFailed {
        /// The device.
        device: String,
        /// The IOMMU mode.
        mode: String,
        /// The test.
        test: String,
        /// Its assertion lines.
        diagnostics: Vec<String>,
    },
    /// The probe disagrees with the kernel's version (the feature exists
    /// from [`debian::MIN_KERNEL`] on).
    FeatureMismatch {
        /// Whether the version says it exists.
        expected: bool,
        /// What the probe found.
        observed: Feature,
    },
    /// The feature is absent, yet a case did not skip.
    NotSkipped {
        /// The device.
        device: String,
        /// The IOMMU mode.
        mode: String,
        /// The test.
        test: String,
    },
    /// The kernel log reports a problem (KASAN, lockdep, a WARNING, ...).
    KernelReport {
        /// The line.
        line: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::GuestUnfinished => write!(f, "the guest did not finish (no STINIT: done)"),
            Problem::DeviceMissing { device } => write!(f, "{device}: the test did not run"),
            Problem::RunIncomplete { device, planned, seen, end } => {
                write!(f, "{device}: {seen} of {planned:?} cases, then {end:?}")
            }
            Problem::CaseFailed { device, mode, test, diagnostics } => {
                write!(f, "{device}: {test} failed under {mode}: {}", diagnostics.join(" / "))
            }
            Problem::FeatureMismatch { expected, observed } => {
                write!(
                    f,
                    "the feature should be {}, the probe says {observed}",
                    if *expected { "present" } else { "absent" }
                )
            }
            Problem::NotSkipped { device, mode, test } => {
                write!(f, "{device}: {test} under {mode} did not skip although the feature is absent")
            }
            Problem::KernelReport { line } => write!(f, "kernel log: {line}"),
        }
    }
}

/// Whether the kernel's version has `VFIO_DEVICE_FEATURE_DMA_BUF`.
pub fn feature_expected(release: &str) -> bool {
    debian::upstream_version(release).is_some_and(|(a, b, _)| (a, b) >= debian::MIN_KERNEL)
}

/// What the probe cases say.
pub fn observed_feature(log: &GuestLog) -> Feature {
    let probes: Vec<&Outcome> =
        log.runs.iter().flat_map(|r| &r.cases).filter(|c| c.test == "probe").map(|c| &c.outcome).collect();
    if probes.contains(&&Outcome::Pass) {
        Feature::Present
    } else if probes.iter().any(|o| matches!(o, Outcome::Skip { reason } if reason.starts_with(FEATURE_ABSENT))) {
        // The modes that could open the device found no feature (the
        // others skip for their own reason: no iommufd).
        Feature::Absent
    } else {
        Feature::Unknown
    }
}

/// Markers of a report whatever its log level.
const REPORT_MARKERS: &[&str] = &["BUG:", "KASAN:", "Oops", "suspected memory leak", "circular locking"];

/// The relayed kernel log lines that report a problem: the guest relays
/// every line with one of its words, which includes the debug options'
/// start-up notices ("RCU lockdep checking is enabled", kmemleak's and
/// DMA-API's); a problem is a line at `KERN_WARNING` or worse (`<0>` to
/// `<4>`, as `klogctl` prefixes them), or one with a report's marker.
pub fn kernel_reports(log: &GuestLog) -> Vec<String> {
    log.dmesg
        .iter()
        .filter(|l| {
            let level = l.strip_prefix('<').and_then(|r| r.split_once('>')).and_then(|(n, _)| n.parse::<u32>().ok());
            level.is_none_or(|n| n <= 4) || REPORT_MARKERS.iter().any(|m| l.contains(m))
        })
        .cloned()
        .collect()
}

/// Every check of a kernel's run: the guest finished, both devices ran to
/// the end, no case failed, the probe agrees with the version, a kernel
/// without the feature skips everything, the kernel log is clean.
pub fn judge(release: &str, log: &GuestLog) -> Vec<Problem> {
    let mut p = Vec::new();
    if !log.done {
        p.push(Problem::GuestUnfinished);
    }
    for d in DEVICES {
        if !log.runs.iter().any(|r| r.device == d) {
            p.push(Problem::DeviceMissing { device: d.into() });
        }
    }
    let expected = feature_expected(release);
    let observed = observed_feature(log);
    if (expected && observed != Feature::Present) || (!expected && observed != Feature::Absent) {
        p.push(Problem::FeatureMismatch { expected, observed });
    }
    for r in &log.runs {
        if !r.complete() {
            p.push(Problem::RunIncomplete {
                device: r.device.clone(),
                planned: r.plan,
                seen: r.cases.len() as u32,
                end: r.end,
            });
        }
        for c in &r.cases {
            if let Outcome::Fail { diagnostics } = &c.outcome {
                p.push(Problem::CaseFailed {
                    device: r.device.clone(),
                    mode: c.mode.clone(),
                    test: c.test.clone(),
                    diagnostics: diagnostics.clone(),
                });
            } else if !expected && !matches!(c.outcome, Outcome::Skip { .. }) {
                p.push(Problem::NotSkipped { device: r.device.clone(), mode: c.mode.clone(), test: c.test.clone() });
            }
        }
    }
    p.extend(kernel_reports(log).into_iter().map(|line| Problem::KernelReport { line }));
    p
}

/// A breakage's verdict: which tests failed where, which of the declared
/// ones did not, which undeclared ones did.
pub fn judge_breakage(b: &Breakage, log: &GuestLog) -> (Vec<SelftestFailure>, Vec<String>, Vec<String>) {
    let mut failed: Vec<SelftestFailure> = Vec::new();
    for r in &log.runs {
        for (test, cases) in r.by_test() {
            let modes: Vec<String> =
                cases.iter().filter(|c| matches!(c.outcome, Outcome::Fail { .. })).map(|c| c.mode.clone()).collect();
            if !modes.is_empty() {
                failed.push(SelftestFailure { device: r.device.clone(), test: test.into(), modes });
            }
        }
    }
    let missed = b.must_fail.iter().filter(|t| !failed.iter().any(|f| f.test == **t)).map(|t| t.to_string()).collect();
    let mut collateral: Vec<String> =
        failed.iter().filter(|f| !b.must_fail.contains(&f.test.as_str())).map(|f| f.test.clone()).collect();
    collateral.sort();
    collateral.dedup();
    (failed, missed, collateral)
}

/// The run record of one kernel (or breakage) boot.
pub fn kernel_run(
    asked: &str,
    kernel: Option<&Kernel>,
    log: Option<&GuestLog>,
    boot_seconds: f64,
    error: Option<String>,
) -> SelftestKernelRun {
    let release = log.and_then(|l| l.release.clone()).or_else(|| kernel.map(|k| k.pkg.abi.clone())).unwrap_or_default();
    let feature_expected = feature_expected(&release);
    let devices = log
        .map(|l| {
            l.runs
                .iter()
                .map(|r| SelftestDevice {
                    device: r.device.clone(),
                    bdf: r.bdf.clone(),
                    planned: r.plan,
                    end: r.end,
                    counts: r.counts(),
                    tests: r
                        .by_test()
                        .into_iter()
                        .map(|(test, cases)| {
                            let mut counts = Counts::default();
                            cases.iter().for_each(|c| counts.add(&c.outcome));
                            SelftestTest {
                                test: test.into(),
                                counts,
                                modes: cases
                                    .iter()
                                    .map(|c| SelftestMode { mode: c.mode.clone(), outcome: c.outcome.clone() })
                                    .collect(),
                            }
                        })
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    SelftestKernelRun {
        asked: asked.into(),
        kernel: release.clone(),
        kernel_package: kernel
            .map(|k| format!("{} {} ({})", k.pkg.abi, k.pkg.version, k.pkg.suite))
            .unwrap_or_default(),
        feature_expected,
        feature: log.map(observed_feature).unwrap_or(Feature::Unknown),
        boot_seconds,
        error,
        devices,
        kernel_reports: log.map(kernel_reports).unwrap_or_default(),
        problems: log.map(|l| judge(&release, l)).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// Building.

/// The static test binary, built from a lab tree.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// Its path in the cache.
    pub path: PathBuf,
    /// Its cache key.
    pub key: String,
    /// `true` when this call built it.
    pub built_now: bool,
    /// Seconds the build took (0 when cached).
    pub build_seconds: f64,
}

/// FNV-1a, 64 bits: a short name for a recipe or a patch in a cache key.
fn fnv(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn selftest_root(root: &Path) -> PathBuf {
    root.join("selftest")
}

/// A `make` that cannot pick up a git repository above the tree.
fn make() -> Command {
    let mut c = Command::new("make");
    c.env("GIT_DIR", "/nonexistent");
    c
}

/// The test binary, built first when the cache has none for the current
/// inputs: Debian's 7.2.13 source (the lab kernels' tarball), the parts of
/// it the build reads (`SOURCE_PARTS`) unpacked with the patches of
/// `series_dir` applied (the lab-patched source; made here because the lab
/// builds share one tree that stays in the state of the last variant
/// built, and so that the test needs no kernel build), `make headers` into
/// an `O=` directory, then only
/// [`BINARY`] of `tools/testing/selftests/vfio`, static. Cached by a key
/// over the source version, the patches, the compiler and `RECIPE`; the
/// tree is removed afterwards.
pub fn ensure_test_binary(root: &Path, series_dir: &Path) -> Result<TestBinary, LabError> {
    let gcc = lab_kernel::gcc_version()?;
    let series = patches::series(series_dir)?;
    let mut parts: Vec<Vec<u8>> = vec![RECIPE.into(), patches::SOURCE_VERSION.into(), gcc.into()];
    for p in &series {
        parts.push(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().into());
        parts.push(fs::read(p).map_err(io_err(format!("read {}", p.display())))?);
    }
    let key = fnv(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let dir = selftest_root(root).join(format!("bin-{key}"));
    let path = dir.join(BINARY);
    if dir.join(debian::MARKER).is_file() && path.is_file() {
        return Ok(TestBinary { path, key, built_now: false, build_seconds: 0.0 });
    }
    let t = Instant::now();
    let tarball = patches::fetch_source(root)?;
    let stage = tempdir(&selftest_root(root), ".staging-bin")?;
    let (src, hdr, out, logs) = (stage.0.join("src"), stage.0.join("hdr"), stage.0.join("out"), stage.0.join("logs"));
    for d in [&src, &logs] {
        fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    }
    progress(format!("unpacking {} and applying {} patches for {BINARY}", tarball.display(), series.len()));
    let mut c = Command::new("tar");
    c.arg("-xJf").arg(&tarball).arg("-C").arg(&src).arg("--strip-components=1");
    c.args(SOURCE_PARTS.iter().map(|p| format!("{TARBALL_TOP}/{p}")));
    run_bounded(c, "tar -xJf linux-source", 1800, &logs.join("unpack.log"))?;
    for p in &series {
        // The fixes' hunks fall outside SOURCE_PARTS and are left out:
        // they change no file the test's build reads.
        let mut c = Command::new("git");
        c.arg("apply").args(SOURCE_PARTS.iter().map(|p| format!("--include={p}*"))).arg(p);
        c.current_dir(&src).env("GIT_DIR", "/nonexistent");
        run_bounded(c, &format!("git apply {}", p.display()), 120, &logs.join("patch.log"))?;
    }
    progress(format!("building {BINARY} (make headers, then the static test)"));
    let mut c = make();
    c.arg("-C").arg(&src).arg(format!("O={}", hdr.display())).arg("headers");
    run_bounded(c, "make headers", 900, &logs.join("headers.log"))?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut c = make();
    c.arg("-C")
        .arg(src.join("tools/testing/selftests/vfio"))
        .arg(format!("-j{jobs}"))
        .arg(format!("OUTPUT={}", out.display()))
        .arg("EXTRA_CFLAGS=-static")
        .arg(format!("KHDR_INCLUDES=-isystem {}", hdr.join("usr/include").display()))
        .arg(out.join(BINARY));
    run_bounded(c, &format!("make {BINARY}"), 900, &logs.join("build.log"))?;
    fs::copy(out.join(BINARY), stage.0.join(BINARY)).map_err(io_err(format!("copy {BINARY}")))?;
    for d in [&src, &hdr, &out] {
        let _ = fs::remove_dir_all(d);
    }
    let build_seconds = t.elapsed().as_secs_f64();
    let names: Vec<String> =
        series.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    fs::write(
        stage.0.join(debian::MARKER),
        format!(
            "key={key}\nsource={} {}\npatches={}\nseconds={build_seconds:.1}\n",
            patches::SOURCE_PKG,
            patches::SOURCE_VERSION,
            names.join(" ")
        ),
    )
    .map_err(io_err("write marker"))?;
    publish(&stage.0, &dir)?;
    Ok(TestBinary { path, key, built_now: true, build_seconds })
}

/// Moves a finished staging directory into place; another run that got
/// there first wins.
fn publish(stage: &Path, dir: &Path) -> Result<(), LabError> {
    if dir.join(debian::MARKER).is_file() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    fs::rename(stage, dir).map_err(io_err(format!("publish {}", dir.display())))
}

/// `vfio-pci-core.ko` for the lab build `tree` (cache key `tree_key`) with
/// `b`'s patch applied to a copy of `drivers/vfio/pci/`; cached. Returns
/// the module and the seconds it took (0 when cached).
pub fn ensure_breakage_module(
    root: &Path,
    tree: &BuildTree,
    tree_key: &str,
    b: &Breakage,
) -> Result<(PathBuf, f64), LabError> {
    let key = fnv(&[MODULE_RECIPE.as_bytes(), tree_key.as_bytes(), b.patch.unwrap_or("").as_bytes()]);
    let dir = selftest_root(root).join(format!("breaks/{}-{key}", b.name));
    let ko = dir.join("vfio-pci-core.ko");
    if dir.join(debian::MARKER).is_file() && ko.is_file() {
        return Ok((ko, 0.0));
    }
    let t = Instant::now();
    fs::create_dir_all(selftest_root(root).join("breaks")).map_err(io_err("create breaks"))?;
    let stage = tempdir(&selftest_root(root).join("breaks"), &format!(".staging-{}", b.name))?;
    let pci = stage.0.join("drivers/vfio/pci");
    fs::create_dir_all(&pci).map_err(io_err("create drivers/vfio/pci"))?;
    let from = tree.src.join("drivers/vfio/pci");
    for e in fs::read_dir(&from).map_err(io_err(format!("read {}", from.display())))?.flatten() {
        let p = e.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "c" || x == "h") {
            fs::copy(&p, pci.join(e.file_name())).map_err(io_err(format!("copy {}", p.display())))?;
        }
    }
    // The module's object list, from the tree's own Makefile.
    let makefile = fs::read_to_string(from.join("Makefile")).map_err(io_err("read drivers/vfio/pci/Makefile"))?;
    let objs: Vec<&str> = makefile.lines().filter(|l| l.starts_with("vfio-pci-core-")).collect();
    if objs.is_empty() {
        return Err(LabError::BadPackage(format!(
            "{} names no vfio-pci-core objects",
            from.join("Makefile").display()
        )));
    }
    fs::write(pci.join("Kbuild"), format!("obj-m := vfio-pci-core.o\n{}\n", objs.join("\n")))
        .map_err(io_err("write Kbuild"))?;
    if let Some(patch) = b.patch {
        let pf = stage.0.join(format!("{}.patch", b.name));
        fs::write(&pf, patch).map_err(io_err("write patch"))?;
        let mut c = Command::new("git");
        c.arg("apply").arg(&pf).current_dir(&stage.0).env("GIT_DIR", "/nonexistent");
        run_bounded(c, &format!("git apply {}", b.name), 60, &stage.0.join("apply.log"))?;
    }
    progress(format!("building vfio-pci-core.ko with breakage {} against {}", b.name, tree.obj.display()));
    lab_kernel::build_external_module(tree, &pci, &stage.0.join("build.log"))?;
    let mut c = Command::new("strip");
    c.arg("--strip-debug").arg("-o").arg(stage.0.join("vfio-pci-core.ko")).arg(pci.join("vfio-pci-core.ko"));
    run_bounded(c, "strip vfio-pci-core.ko", 60, &stage.0.join("strip.log"))?;
    let _ = fs::remove_dir_all(stage.0.join("drivers"));
    let secs = t.elapsed().as_secs_f64();
    fs::write(stage.0.join(debian::MARKER), format!("breakage={}\nkey={key}\nseconds={secs:.1}\n", b.name))
        .map_err(io_err("write marker"))?;
    publish(&stage.0, &dir)?;
    Ok((ko, secs))
}

/// Compiles [`STINIT`] statically into `work/stinit`.
pub fn build_init(work: &Path) -> Result<PathBuf, LabError> {
    let src = work.join("stinit.c");
    let out = work.join("stinit");
    fs::write(&src, STINIT).map_err(io_err("write stinit.c"))?;
    let mut c = Command::new("gcc");
    c.args(["-static", "-O2", "-Wall", "-Werror", "-o"]).arg(&out).arg(&src);
    run_bounded(c, "gcc -static stinit.c", 120, &work.join("stinit.log"))?;
    Ok(out)
}

/// The initramfs: `/init`, `/vfio_pci_dmabuf_test` and the kernel's vfio
/// modules, `vfio-pci-core.ko` replaced by `core_override` when given.
pub fn build_initramfs(
    kernel: &Kernel,
    init: &Path,
    test: &Path,
    core_override: Option<&Path>,
    out: &Path,
) -> Result<(), LabError> {
    let mut entries = initramfs::base_entries(kernel, init, core_override)?;
    let test = fs::read(test).map_err(io_err(format!("read {}", test.display())))?;
    entries.push(CpioEntry::File(BINARY.into(), 0o755, test));
    initramfs::write_initramfs(&entries, out)
}

/// The selftest's machine: the conformance lab's devices (ivshmem-plain
/// behind a root port, pci-testdev and edu on the root complex), so the
/// addresses are the same: 0000:01:00.0 and 0000:00:02.0.
pub fn machine(vmlinuz: &Path, initramfs: &Path, run_dir: &Path) -> Qemu {
    Qemu::new(vmlinuz, initramfs, run_dir)
        .append("intel_iommu=on")
        .device("pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1")
        .device("ivshmem-plain,memdev=hostmem,bus=rp1")
        .device("pci-testdev")
        .device("edu")
}

/// One boot: the guest's output (what it got to write, also when the boot
/// failed), the boot error if any, and the seconds it took.
pub fn boot(machine: &Qemu, timeout: Duration) -> (String, Option<LabError>, f64) {
    let t = Instant::now();
    let res = qemu::boot_with(machine, timeout);
    let secs = t.elapsed().as_secs_f64();
    match res {
        Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), None, secs),
        Err(e) => {
            let partial = fs::read(machine.run_dir().join("guest.out")).unwrap_or_default();
            (String::from_utf8_lossy(&partial).into_owned(), Some(e), secs)
        }
    }
}

// ---------------------------------------------------------------------------
// The markdown.

/// Whether the lab could not get an answer from this kernel (an error and
/// no guest output to judge).
pub fn not_run(r: &SelftestKernelRun) -> bool {
    r.problems.is_empty() && r.error.is_some()
}

/// A kernel run's one-line verdict.
pub fn verdict(r: &SelftestKernelRun) -> String {
    match (&r.error, r.problems.is_empty()) {
        (_, false) => format!("**FAIL** ({} problems)", r.problems.len()),
        (Some(e), true) => format!("not run: {}", e.lines().next().unwrap_or("")),
        (None, true) => "ok".into(),
    }
}

fn device_cell(r: &SelftestKernelRun, device: &str) -> String {
    r.devices.iter().find(|d| d.device == device).map(|d| d.counts.to_string()).unwrap_or_else(|| "-".into())
}

/// The report as markdown: per kernel, per breakage, then per kernel the
/// per-test table (one letter per IOMMU mode) and the skip reasons.
pub fn markdown(rep: &SelftestReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# kselftest {BINARY}: {}\n", rep.date);
    let b = &rep.test_binary;
    let _ = writeln!(
        s,
        "Test binary: {} (key {}, {}).\n",
        b.source,
        b.key,
        if b.built_now { format!("built now in {:.0} s", b.build_seconds) } else { "cached".into() }
    );
    let _ = writeln!(s, "| kernel | feature | {} | {} | boot | verdict |", DEVICES[0], DEVICES[1]);
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
    for r in &rep.kernels {
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {} | {:.0} s | {} |",
            r.asked,
            if r.kernel_package.is_empty() { &r.kernel } else { &r.kernel_package },
            r.feature,
            device_cell(r, DEVICES[0]),
            device_cell(r, DEVICES[1]),
            r.boot_seconds,
            verdict(r)
        );
    }
    if !rep.breakages.is_empty() {
        let _ = writeln!(s, "\n## Breakages\n");
        let _ = writeln!(s, "| breakage | kernel | rule | must fail | failed (device: test x modes) | verdict |");
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
        for x in &rep.breakages {
            let failed: Vec<String> =
                x.failed.iter().map(|f| format!("{}: {} x{}", f.device, f.test, f.modes.len())).collect();
            let v = match (&x.run.error, x.as_declared) {
                (Some(e), _) if not_run(&x.run) => format!("not run: {}", e.lines().next().unwrap_or("")),
                (_, true) if x.must_fail.is_empty() => "ok: nothing fails".into(),
                (_, true) => "caught".into(),
                _ => format!("**NOT AS DECLARED** (missed: {:?}, also failed: {:?})", x.missed, x.collateral),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                x.name,
                x.run.asked,
                x.rule,
                if x.must_fail.is_empty() { "nothing".into() } else { x.must_fail.join(", ") },
                if failed.is_empty() { "none".into() } else { failed.join("; ") },
                v
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Per test\n\nOne letter per IOMMU mode, in the order {}: P pass, F fail, s skip.",
        IOMMU_MODES.join(", ")
    );
    for r in rep.kernels.iter().chain(rep.breakages.iter().map(|b| &b.run)) {
        if r.devices.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n### {} ({})\n", r.asked, r.kernel);
        let names: Vec<&str> = r.devices.iter().map(|d| d.device.as_str()).collect();
        let _ = writeln!(s, "| test | {} |", names.join(" | "));
        let _ = writeln!(s, "| --- |{}", " --- |".repeat(names.len()));
        let mut tests: Vec<&str> = Vec::new();
        for d in &r.devices {
            for t in &d.tests {
                if !tests.contains(&t.test.as_str()) {
                    tests.push(&t.test);
                }
            }
        }
        let mut reasons: Vec<(String, u32)> = Vec::new();
        for t in &tests {
            let cells: Vec<String> = r
                .devices
                .iter()
                .map(|d| {
                    d.tests
                        .iter()
                        .find(|x| x.test == *t)
                        .map(|x| x.modes.iter().map(|m| m.outcome.letter()).collect::<String>())
                        .unwrap_or_else(|| "-".into())
                })
                .collect();
            let _ = writeln!(s, "| {t} | {} |", cells.join(" | "));
        }
        for d in &r.devices {
            for m in d.tests.iter().flat_map(|t| &t.modes) {
                if let Outcome::Skip { reason } = &m.outcome {
                    let key = format!("{}: {reason}", d.device);
                    match reasons.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, n)) => *n += 1,
                        None => reasons.push((key, 1)),
                    }
                }
            }
        }
        if !reasons.is_empty() {
            let _ = writeln!(s, "\nSkip reasons:");
            for (k, n) in &reasons {
                let _ = writeln!(s, "- {k} (x{n})");
            }
        }
        if !r.problems.is_empty() {
            let _ = writeln!(s, "\nProblems:");
            for p in &r.problems {
                let _ = writeln!(s, "- {p}");
            }
        }
    }
    s
}

/// The breakage run record.
pub fn breakage_run(
    b: &Breakage,
    run: SelftestKernelRun,
    log: Option<&GuestLog>,
    module_seconds: f64,
) -> SelftestBreakageRun {
    let (failed, missed, collateral) = log.map(|l| judge_breakage(b, l)).unwrap_or_default();
    let complete =
        log.is_some_and(|l| l.done && DEVICES.iter().all(|d| l.runs.iter().any(|r| r.device == *d && r.complete())));
    SelftestBreakageRun {
        name: b.name.into(),
        rule: b.rule.into(),
        must_fail: b.must_fail.iter().map(|t| t.to_string()).collect(),
        module_seconds,
        as_declared: complete && missed.is_empty() && collateral.is_empty(),
        failed,
        missed,
        collateral,
        run,
    }
}

#[cfg(test)]
mod tests {
    use super::tap::parse;
    use super::*;

    fn run(device: &str, cases: &[(&str, &str, &str)]) -> String {
        let mut s = format!("STINIT: ===== run {device} 0000:00:02.0\n1..{}\n", cases.len());
        for (i, (mode, test, res)) in cases.iter().enumerate() {
            let n = i + 1;
            match *res {
                "P" => s += &format!("ok {n} {BINARY}.{mode}.{test}\n"),
                "F" => {
                    s += &format!(
                        "# {BINARY}.c:1:{test}:Expected -EINVAL (-22) == x (6)\nnot ok {n} {BINARY}.{mode}.{test}\n"
                    )
                }
                r => s += &format!("ok {n} {BINARY}.{mode}.{test} # SKIP {r}\n"),
            }
        }
        s + &format!("STINIT: ===== exit {device} 0\n")
    }

    fn both(cases: &[(&str, &str, &str)]) -> GuestLog {
        let text =
            format!("STINIT: release 7.2.13-nrlab\n{}{}STINIT: done\n", run(DEVICES[0], cases), run(DEVICES[1], cases));
        parse(&text).unwrap()
    }

    #[test]
    fn a_clean_run_has_no_problem() {
        let log = both(&[("vfio_type1_iommu", "probe", "P"), ("iommufd", "probe", "IOMMU mode iommufd not available")]);
        assert_eq!(judge("7.2.13-nrlab", &log), vec![]);
        assert_eq!(observed_feature(&log), Feature::Present);
    }

    #[test]
    fn a_failure_a_missing_feature_and_a_kernel_report_are_problems() {
        let mut log = both(&[("vfio_type1_iommu", "probe", &format!("{FEATURE_ABSENT}: -25")), ("m", "set", "F")]);
        log.dmesg.push("<4>WARNING: CPU: 0 PID: 1 at drivers/vfio/pci/vfio_pci_dmabuf.c:1".into());
        log.dmesg.push("<6>DMA-API: preallocated 65536 debug entries".into());
        log.dmesg.push("<6>rcu: \tRCU lockdep checking is enabled.".into());
        log.dmesg.push("<6>kmemleak: Kernel memory leak detector initialized (mem pool available: 14922)".into());
        let p = judge("7.2.13+deb14-cloud-amd64", &log);
        assert_eq!(p[0], Problem::FeatureMismatch { expected: true, observed: Feature::Absent });
        assert!(matches!(&p[1], Problem::CaseFailed { test, .. } if test == "set"), "{p:?}");
        assert!(matches!(p.last(), Some(Problem::KernelReport { line }) if line.contains("WARNING")), "{p:?}");
        assert_eq!(p.len(), 4, "one failure per device, one report (the start-up notices are not reports): {p:?}");
    }

    #[test]
    fn without_the_feature_everything_must_skip() {
        let absent = format!("{FEATURE_ABSENT}: -25");
        let log = both(&[("vfio_type1_iommu", "probe", &absent), ("vfio_type1_iommu", "set", &absent)]);
        assert_eq!(judge("6.12.117+deb13-cloud-amd64", &log), vec![]);
        let log = both(&[("vfio_type1_iommu", "probe", &absent), ("vfio_type1_iommu", "set", "P")]);
        assert!(
            matches!(&judge("6.12.117+deb13-cloud-amd64", &log)[0], Problem::NotSkipped { test, .. } if test == "set")
        );
        assert!(!feature_expected("6.12.117+deb13-cloud-amd64"));
        assert!(feature_expected("7.2.13-nrlab") && feature_expected("6.19.1+deb14-cloud-amd64"));
    }

    #[test]
    fn a_missing_device_and_an_unfinished_guest_are_problems() {
        let text = run(DEVICES[0], &[("vfio_type1_iommu", "probe", "P")]);
        let p = judge("7.2.13-nrlab", &parse(&text).unwrap());
        assert_eq!(p, vec![Problem::GuestUnfinished, Problem::DeviceMissing { device: DEVICES[1].into() }]);
    }

    #[test]
    fn a_breakage_is_caught_only_by_its_own_tests() {
        let no_flags = BREAKAGES.iter().find(|b| b.name == "no-flags-check").unwrap();
        let log = both(&[
            ("vfio_type1_iommu", "flags_nonzero", "F"),
            ("vfio_type1v2_iommu", "flags_nonzero", "F"),
            ("vfio_type1_iommu", "precedence", "F"),
        ]);
        let (failed, missed, collateral) = judge_breakage(no_flags, &log);
        assert_eq!(failed.len(), 4, "two tests on two devices: {failed:?}");
        assert_eq!(failed[0].modes, vec!["vfio_type1_iommu".to_string(), "vfio_type1v2_iommu".to_string()]);
        assert!(missed.is_empty() && collateral.is_empty());
        let run = breakage_run(no_flags, kernel_run("lab-shipped", None, Some(&log), 1.0, None), Some(&log), 0.0);
        assert!(run.as_declared);

        let log = both(&[("vfio_type1_iommu", "flags_nonzero", "F"), ("vfio_type1_iommu", "set", "F")]);
        let (_, missed, collateral) = judge_breakage(no_flags, &log);
        assert_eq!((missed, collateral), (vec!["precedence".to_string()], vec!["set".to_string()]));
        let control = &BREAKAGES[0];
        assert!(
            breakage_run(control, kernel_run("x", None, Some(&log), 1.0, None), Some(&log), 0.0).collateral.len() == 2
        );
    }

    #[test]
    fn every_breakage_patch_touches_the_dmabuf_file_and_names_tests_of_0007() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches");
        let test_patch = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("0007-"))
            .map(|e| fs::read_to_string(e.path()).unwrap())
            .unwrap();
        for b in BREAKAGES.iter().filter(|b| b.patch.is_some()) {
            let p = b.patch.unwrap_or_default();
            assert!(p.starts_with("--- a/drivers/vfio/pci/vfio_pci_dmabuf.c\n"), "{}", b.name);
            assert!(!b.must_fail.is_empty(), "{}", b.name);
            for t in b.must_fail {
                assert!(
                    test_patch.contains(&format!("+TEST_F({BINARY}, {t})")),
                    "{}: {t} is not a test of 0007",
                    b.name
                );
            }
        }
    }

    #[test]
    fn the_markdown_has_a_row_per_kernel_and_a_letter_per_mode() {
        let log = both(&[("vfio_type1_iommu", "probe", "P"), ("iommufd", "probe", "IOMMU mode iommufd not available")]);
        let rep = SelftestReport {
            date: "2026-12-01T00:00:00Z".into(),
            test_binary: crate::report::SelftestBinary {
                path: "/b".into(),
                source: "lab-patched".into(),
                key: "k".into(),
                built_now: false,
                build_seconds: 0.0,
            },
            kernels: vec![
                kernel_run("lab-patched", None, Some(&log), 70.0, None),
                kernel_run("6.12", None, None, 0.0, Some("no kernel".into())),
            ],
            breakages: vec![],
            failures: 0,
            not_run: 1,
            wall_seconds: 1.0,
        };
        let md = markdown(&rep);
        assert!(md.contains("| lab-patched (7.2.13-nrlab) | present | 1 pass, 0 fail, 1 skip | 1 pass, 0 fail, 1 skip | 70 s | ok |"), "{md}");
        assert!(md.contains("| 6.12 () | unknown | - | - | 0 s | not run: no kernel |"), "{md}");
        assert!(md.contains("| probe | Ps | Ps |"), "{md}");
        assert!(md.contains("- ivshmem-plain: IOMMU mode iommufd not available (x1)"), "{md}");
    }
}
