//! Lab kernels: Debian's own `linux-source-7.2` 7.2.13-1, configured with
//! `kernel-lab/config/lab.config` (KASAN, kmemleak, lockdep, fault
//! injection, IOMMUFD and the vfio cdev, DMA-API debug, the GPU buddy
//! allocator) and built on the host, as shipped and with the fix series of
//! `kernel-patches/` applied (`kernel-lab build-kernel`, and the `--kernel`
//! values [`LabVariant::NAMES`] of every lab command).
//!
//! A build is cached by a key over everything that decides its bytes (the
//! source version, the fragment, the patches, the compiler and this
//! recipe), so CI rebuilds only when one of them changes. The cache entry
//! has the layout of a Debian kernel's ([`crate::debian::Kernel`]: the image
//! under `root/usr/lib/modules/<release>/vmlinuz`, the vfio modules under
//! `vfio-modules/`), plus the source tree and the `O=` build directory,
//! which the importer and the selftest build against.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::debian::{Kernel, KernelPkg, MARKER};
use crate::host::{io_err, progress, run_bounded, tempdir, LabError};
use crate::patches::{self, SOURCE_VERSION};
use crate::{GUEST_MODULES, GUEST_MODULE_PATHS};

/// `uname -r` of both lab builds: the source's version plus
/// `LOCALVERSION`. Both variants share it, because a different
/// `LOCALVERSION` for the patched build would change every module's
/// vermagic; the lab tells them apart by [`LabVariant`] and the cache key.
pub const RELEASE: &str = "7.2.13-nrlab";
/// `make LOCALVERSION=`.
const LOCALVERSION: &str = "-nrlab";
/// The configuration fragment, merged on top of `allnoconfig`.
pub const FRAGMENT: &str = include_str!("../config/lab.config");
/// Bumped when the steps below change what a build produces.
const RECIPE: &str = "allnoconfig+lab.config+olddefconfig; make bzImage modules; v1";
/// Deadline for `make bzImage modules`: a cold build took 4 min 17 s on
/// an idle machine of CI's kind and 49 min when its two cores were shared
/// with three Rust builds.
const BUILD_SECS: u64 = 3 * 3600;

/// Which lab build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabVariant {
    /// Debian's source untouched (debug configuration only).
    Shipped,
    /// With every patch of `kernel-patches/` applied (the fixes, and the
    /// selftest, which does not change the kernel image).
    Patched,
}

impl LabVariant {
    /// The `--kernel` names, in [`LabVariant::ALL`] order.
    pub const NAMES: [&'static str; 2] = ["lab-shipped", "lab-patched"];
    /// Both variants.
    pub const ALL: [LabVariant; 2] = [LabVariant::Shipped, LabVariant::Patched];

    /// Its `--kernel` name.
    pub const fn name(self) -> &'static str {
        match self {
            LabVariant::Shipped => Self::NAMES[0],
            LabVariant::Patched => Self::NAMES[1],
        }
    }

    /// The variant a `--kernel` value names, if it names one.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl std::fmt::Display for LabVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a lab build's trees are, for modules built against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTree {
    /// The variant.
    pub variant: LabVariant,
    /// The source tree (`make -C`).
    pub src: PathBuf,
    /// The build directory (`make O=`).
    pub obj: PathBuf,
}

/// What `build-report.json` in a cache entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The variant.
    pub variant: LabVariant,
    /// The cache key.
    pub key: String,
    /// `uname -r`.
    pub release: String,
    /// Debian's source package version.
    pub source_version: String,
    /// `gcc --version`'s first line.
    pub gcc: String,
    /// The patches applied, in order (empty for [`LabVariant::Shipped`]).
    pub patches: Vec<String>,
    /// Seconds to unpack the source tarball (and apply the patches).
    pub unpack_seconds: f64,
    /// Seconds for allnoconfig, the merge and olddefconfig.
    pub configure_seconds: f64,
    /// Seconds for `make -jN bzImage modules`.
    pub build_seconds: f64,
    /// `N` of `-jN`.
    pub jobs: usize,
    /// When it finished (UTC).
    pub date: String,
}

/// A lab kernel ready to boot: the cache entry as a [`Kernel`], and its
/// trees.
#[derive(Debug, Clone)]
pub struct LabKernel {
    /// Bootable like a Debian kernel.
    pub kernel: Kernel,
    /// What the build recorded.
    pub record: BuildRecord,
    /// `true` when this call built it, `false` when it came from the cache.
    pub built_now: bool,
}

/// FNV-1a, 64 bits, over the inputs of a build: enough to tell builds
/// apart (nothing here is adversarial).
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
    // A separator, so that ("ab", "c") and ("a", "bc") differ.
    *h ^= 0xff;
    *h = h.wrapping_mul(0x100_0000_01b3);
}

/// The patch files a variant applies.
pub fn variant_patches(variant: LabVariant, series_dir: &Path) -> Result<Vec<PathBuf>, LabError> {
    match variant {
        LabVariant::Shipped => Ok(Vec::new()),
        LabVariant::Patched => patches::series(series_dir),
    }
}

/// The cache key of a build from these inputs.
pub fn cache_key(variant: LabVariant, gcc: &str, patch_texts: &[(String, Vec<u8>)]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    fnv(&mut h, RECIPE.as_bytes());
    fnv(&mut h, SOURCE_VERSION.as_bytes());
    fnv(&mut h, FRAGMENT.as_bytes());
    fnv(&mut h, gcc.as_bytes());
    fnv(&mut h, variant.name().as_bytes());
    for (name, text) in patch_texts {
        fnv(&mut h, name.as_bytes());
        fnv(&mut h, text);
    }
    format!("{h:016x}")
}

/// `gcc --version`'s first line (the compiler is part of the key).
pub fn gcc_version() -> Result<String, LabError> {
    let out = Command::new("gcc")
        .arg("--version")
        .output()
        .map_err(|e| LabError::Command { what: "gcc --version".into(), detail: e.to_string() })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| LabError::Command { what: "gcc --version".into(), detail: "no output".into() })
}

/// The fragment's `CONFIG_X=v` and `# CONFIG_X is not set` lines that the
/// final `.config` does not have: `merge_config.sh` drops an option whose
/// dependencies are unmet without failing, so the lab checks every line.
pub fn lost_fragment_lines(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set")))
        .filter(|l| !have.contains(l))
        // `=n` is written back as "is not set".
        .filter(|l| l.strip_suffix("=n").is_none_or(|name| !have.contains(format!("# {name} is not set").as_str())))
        .map(str::to_string)
        .collect()
}

/// The kmod-shim mode that models `kernel`: the fixed code on the patched
/// lab build, the kernel's own code everywhere else.
pub fn fidelity_for(kernel: &Kernel) -> kmod_shim::Fidelity {
    match kernel.build.as_ref().map(|b| b.variant) {
        Some(LabVariant::Patched) => kmod_shim::Fidelity::Fixed,
        Some(LabVariant::Shipped) | None => kmod_shim::Fidelity::Kernel,
    }
}

/// `kernel-patches/` of the tree this binary was built from.
pub fn series_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches")
}

/// The directory of every lab build.
fn builds_root(root: &Path) -> PathBuf {
    root.join("lab-kernels")
}

/// The cached lab kernel for `variant`, built first if the cache has none
/// for the current key. `series_dir` is `kernel-patches/`.
pub fn ensure(root: &Path, variant: LabVariant, series_dir: &Path) -> Result<LabKernel, LabError> {
    fs::create_dir_all(builds_root(root)).map_err(io_err("create lab-kernels"))?;
    crate::host::ensure_tools(BUILD_TOOLS, &builds_root(root))?;
    let gcc = gcc_version()?;
    let patch_files = variant_patches(variant, series_dir)?;
    let patch_texts = patch_files
        .iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            fs::read(p).map(|t| (name, t)).map_err(io_err(format!("read {}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key = cache_key(variant, &gcc, &patch_texts);
    let dir = builds_root(root).join(format!("{}-{key}", variant.name()));
    if let Some(record) = read_record(&dir) {
        progress(format!("lab kernel {variant}: cached ({}, key {key})", dir.display()));
        return Ok(LabKernel { kernel: as_kernel(&dir, &record), record, built_now: false });
    }
    progress(format!(
        "lab kernel {variant}: building {} {SOURCE_VERSION} (key {key}) in {}; a cold build is minutes on an idle \
         2-core machine, much longer on a loaded one",
        patches::SOURCE_PKG,
        dir.display()
    ));
    let tarball = patches::fetch_source(root)?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    let record = build(&dir, variant, &tarball, &patch_files, &key, &gcc)?;
    Ok(LabKernel { kernel: as_kernel(&dir, &record), record, built_now: true })
}

/// The cache entry's record, when the entry is complete.
fn read_record(dir: &Path) -> Option<BuildRecord> {
    if !dir.join(MARKER).is_file() {
        return None;
    }
    let text = fs::read_to_string(dir.join("build-report.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn as_kernel(dir: &Path, record: &BuildRecord) -> Kernel {
    Kernel {
        pkg: KernelPkg {
            abi: record.release.clone(),
            version: format!("{} {} ({})", record.source_version, record.variant, record.key),
            suite: format!("lab build of {}", patches::SOURCE_PKG),
        },
        dir: dir.to_path_buf(),
        note: None,
        build: Some(BuildTree { variant: record.variant, src: dir.join("src"), obj: dir.join("build") }),
    }
}

/// What a kernel build needs on the host beyond the lab's own tools
/// (command or file, Debian package): libelf's header is for objtool.
const BUILD_TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("strip", "binutils"),
    ("/usr/include/gelf.h", "libelf-dev"),
];

/// A `make` in the source tree for the build directory `obj`.
fn make(src: &Path, obj: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", obj.display()))
        .arg(format!("LOCALVERSION={LOCALVERSION}"))
        // No scratch git repository above the tree may add "+" to the
        // release, and the build's identity stays constant.
        .env("GIT_DIR", "/nonexistent")
        .env("KBUILD_BUILD_USER", "nr-ranges")
        .env("KBUILD_BUILD_HOST", "kernel-lab");
    c
}

fn build(
    dir: &Path,
    variant: LabVariant,
    tarball: &Path,
    patch_files: &[PathBuf],
    key: &str,
    gcc: &str,
) -> Result<BuildRecord, LabError> {
    let src = dir.join("src");
    let obj = dir.join("build");
    let logs = dir.join("logs");
    for d in [&src, &obj, &logs] {
        fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    }
    let t = Instant::now();
    progress(format!("unpacking {}", tarball.display()));
    let mut c = Command::new("tar");
    c.arg("-xJf").arg(tarball).arg("-C").arg(&src).arg("--strip-components=1");
    run_bounded(c, "tar -xJf linux-source", 1800, &logs.join("unpack.log"))?;
    for p in patch_files {
        let mut c = Command::new("git");
        c.arg("apply").arg(p).current_dir(&src).env("GIT_DIR", "/nonexistent");
        run_bounded(c, &format!("git apply {}", p.display()), 120, &logs.join("patch.log"))?;
    }
    let unpack_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut c = make(&src, &obj);
    c.arg("allnoconfig");
    run_bounded(c, "make allnoconfig", 600, &logs.join("config.log"))?;
    let frag = dir.join("lab.config");
    fs::write(&frag, FRAGMENT).map_err(io_err("write lab.config"))?;
    let mut c = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    c.arg("-m").arg("-O").arg(&obj).arg(obj.join(".config")).arg(&frag).current_dir(&src);
    run_bounded(c, "merge_config.sh", 600, &logs.join("merge.log"))?;
    let mut c = make(&src, &obj);
    c.arg("olddefconfig");
    run_bounded(c, "make olddefconfig", 600, &logs.join("config.log"))?;
    let config = fs::read_to_string(obj.join(".config")).map_err(io_err("read .config"))?;
    let lost = lost_fragment_lines(FRAGMENT, &config);
    if !lost.is_empty() {
        return Err(LabError::BadPackage(format!(
            "kernel-lab/config/lab.config lines the configured kernel lacks (unmet dependencies): {}",
            lost.join(", ")
        )));
    }
    let configure_seconds = t.elapsed().as_secs_f64();

    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    progress(format!("make -j{jobs} bzImage modules (log: {})", logs.join("build.log").display()));
    let t = Instant::now();
    let mut c = make(&src, &obj);
    c.arg(format!("-j{jobs}")).arg("bzImage").arg("modules");
    run_bounded(c, "make bzImage modules", BUILD_SECS, &logs.join("build.log"))?;
    let build_seconds = t.elapsed().as_secs_f64();
    progress(format!("lab kernel {variant} built in {build_seconds:.0} s"));

    // The Debian kernel layout, so that the boot code needs no second path.
    let image_dir = dir.join("root/usr/lib/modules").join(RELEASE);
    fs::create_dir_all(&image_dir).map_err(io_err("create image dir"))?;
    fs::copy(obj.join("arch/x86/boot/bzImage"), image_dir.join("vmlinuz")).map_err(io_err("copy bzImage"))?;
    let mods = dir.join("vfio-modules");
    fs::create_dir_all(&mods).map_err(io_err("create vfio-modules"))?;
    for ((name, _), rel) in GUEST_MODULES.iter().zip(GUEST_MODULE_PATHS) {
        // Debug sections only make the initramfs bigger (there is no
        // DEBUG_INFO, but KASAN builds carry large symbol tables).
        let from = obj.join(format!("{rel}.ko"));
        let to = mods.join(format!("{name}.ko"));
        let mut c = Command::new("strip");
        c.arg("--strip-debug").arg("-o").arg(&to).arg(&from);
        run_bounded(c, &format!("strip {}", from.display()), 60, &logs.join("strip.log"))?;
    }
    let record = BuildRecord {
        variant,
        key: key.to_string(),
        release: RELEASE.to_string(),
        source_version: SOURCE_VERSION.to_string(),
        gcc: gcc.to_string(),
        patches: patch_files
            .iter()
            .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .collect(),
        unpack_seconds,
        configure_seconds,
        build_seconds,
        jobs,
        date: crate::conformance::corpus::utc_now(),
    };
    let json = serde_json::to_string_pretty(&record).map_err(|e| LabError::Io(format!("build record: {e}")))?;
    fs::write(dir.join("build-report.json"), json + "\n").map_err(io_err("write build-report.json"))?;
    let mut marker = String::new();
    let _ = writeln!(marker, "abi={RELEASE}\nversion={SOURCE_VERSION}\nsuite=lab\nvariant={variant}\nkey={key}");
    fs::write(dir.join(MARKER), marker).map_err(io_err("write cache marker"))?;
    Ok(record)
}

/// Builds the external module in `module_dir` (a Kbuild directory) against
/// a lab build with the host's make and gcc; returns `module_dir`.
pub fn build_external_module(tree: &BuildTree, module_dir: &Path, log: &Path) -> Result<(), LabError> {
    let mut c = make(&tree.src, &tree.obj);
    c.arg(format!("M={}", module_dir.display())).arg("modules");
    run_bounded(c, &format!("make M={} modules", module_dir.display()), 600, log)
}

/// A scratch directory under the cache for module builds.
pub fn scratch(root: &Path, prefix: &str) -> Result<crate::host::TempDir, LabError> {
    let base = builds_root(root).join("tmp");
    fs::create_dir_all(&base).map_err(io_err(format!("create {}", base.display())))?;
    tempdir(&base, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for v in LabVariant::ALL {
            assert_eq!(LabVariant::from_name(v.name()), Some(v));
        }
        assert_eq!(LabVariant::from_name("7.2.13"), None);
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let p = vec![("0001-x.patch".to_string(), b"diff".to_vec())];
        let base = cache_key(LabVariant::Patched, "gcc 12", &p);
        assert_ne!(base, cache_key(LabVariant::Shipped, "gcc 12", &p));
        assert_ne!(base, cache_key(LabVariant::Patched, "gcc 13", &p));
        assert_ne!(base, cache_key(LabVariant::Patched, "gcc 12", &[]));
        let q = vec![("0001-x.patch".to_string(), b"diff2".to_vec())];
        assert_ne!(base, cache_key(LabVariant::Patched, "gcc 12", &q));
        assert_eq!(base, cache_key(LabVariant::Patched, "gcc 12", &p));
    }

    #[test]
    fn lost_lines_are_found() {
        let frag = "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=n\n";
        let cfg = "CONFIG_A=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_B=y\n";
        assert_eq!(lost_fragment_lines(frag, cfg), vec!["CONFIG_B=m".to_string()]);
    }

    #[test]
    fn the_fragment_asks_for_what_the_lab_uses() {
        for want in ["CONFIG_KASAN=y", "CONFIG_FAULT_INJECTION=y", "CONFIG_IOMMUFD=", "CONFIG_VFIO_PCI="] {
            assert!(FRAGMENT.lines().any(|l| l.starts_with(want)), "{want}");
        }
    }
}
