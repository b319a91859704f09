//! Lab kernels: Debian's own `linux-source-7.2` 7.2.13-1, configured with
//! `kernel-lab/config/lab.config` (KASAN, kmemleak, lockdep, fault
//! injection, IOMMUFD and the vfio cdev, DMA-API debug, the GPU buddy
//! allocator) and built on the host, as shipped and with the fix series of
//! `kernel-patches/` applied (`kernel-lab build-kernel`, and the `--kernel`
//! values [`LabVariant::NAMES`] of every lab command).
//!
//! One build tree per (source version, fragment, compiler, recipe), cached
//! under `$CACHE/lab-kernels/tree-<key>/` (`src/`, `build/` = `O=`,
//! `logs/`): built cold once as shipped. A variant brings the tree to its
//! patches (reverting another variant's) and rebuilds incrementally, then
//! copies image and modules to `tree-<key>/variants/<variant>-<key>/` in a
//! Debian kernel's layout ([`crate::debian::Kernel`]: the image under
//! `root/usr/lib/modules/<release>/vmlinuz`, the vfio modules under
//! `vfio-modules/`). The importer and the selftest build against the tree.
//! A variant's key adds its patches, so CI rebuilds only what changed: a
//! change to the series costs an incremental build, not a cold one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::debian::{Kernel, KernelPkg, MARKER};
use crate::host::{io_err, progress, run_bounded, tempdir, LabError};
use crate::patches::{self, SOURCE_VERSION};

/// The source package the lab kernels are built from.
pub const SOURCE_PKG_NAME: &str = patches::SOURCE_PKG;
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

/// What a build tree's `build-report.json` records: the cold build of
/// Debian's source as shipped, which every variant starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Always [`LabVariant::Shipped`]: the state the tree was first built in.
    pub variant: LabVariant,
    /// The tree's cache key (source, fragment, compiler, recipe).
    pub key: String,
    /// `uname -r`.
    pub release: String,
    /// Debian's source package version.
    pub source_version: String,
    /// `gcc --version`'s first line.
    pub gcc: String,
    /// Empty: the cold build applies no patch.
    pub patches: Vec<String>,
    /// Seconds to unpack the source tarball.
    pub unpack_seconds: f64,
    /// Seconds for allnoconfig, the merge and olddefconfig.
    pub configure_seconds: f64,
    /// Seconds for the cold `make -jN bzImage modules`.
    pub build_seconds: f64,
    /// `N` of `-jN`.
    pub jobs: usize,
    /// When it finished (UTC).
    pub date: String,
}

/// What a variant's `variant.json` records: the tree brought to the
/// variant's patches and rebuilt incrementally, its image and modules
/// copied out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRecord {
    /// The variant.
    pub variant: LabVariant,
    /// Its cache key (the tree's inputs plus the patches).
    pub key: String,
    /// The tree it was built in ([`BuildRecord::key`]).
    pub tree_key: String,
    /// The patches applied, in order (empty for [`LabVariant::Shipped`]).
    pub patches: Vec<String>,
    /// Seconds for the incremental `make -jN bzImage modules` after the
    /// patches changed (a no-op make for a tree already in this state).
    pub rebuild_seconds: f64,
    /// When it finished (UTC).
    pub date: String,
}

/// The lab builds a run used: the tree's cold build and each variant's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LabBuilds {
    /// The tree (`None` when no lab kernel was used).
    pub tree: Option<BuildRecord>,
    /// The variants, in the order asked for.
    pub variants: Vec<VariantRecord>,
}

impl LabBuilds {
    /// Adds a lab kernel's records.
    pub fn push(&mut self, k: &LabKernel) {
        self.tree = Some(k.tree.clone());
        self.variants.push(k.record.clone());
    }
}

/// A lab kernel ready to boot: the cache entry as a [`Kernel`], and its
/// trees.
#[derive(Debug, Clone)]
pub struct LabKernel {
    /// Bootable like a Debian kernel.
    pub kernel: Kernel,
    /// The tree's cold build.
    pub tree: BuildRecord,
    /// The variant's build.
    pub record: VariantRecord,
    /// `true` when this call built the variant, `false` when it was cached.
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
/// for the current inputs. `series_dir` is `kernel-patches/`.
///
/// Both variants come from one build tree per (source, fragment, compiler):
/// the tree is built cold once, as shipped; a variant applies its patches
/// to the tree (reverting another variant's first) and rebuilds
/// incrementally, which for the fix series is one object and the relink
/// (under a minute, against minutes to an hour for a cold build). The tree
/// stays in the state of the last variant built; a lock serialises builds
/// of one tree between processes.
pub fn ensure(root: &Path, variant: LabVariant, series_dir: &Path) -> Result<LabKernel, LabError> {
    let builds = builds_root(root);
    fs::create_dir_all(&builds).map_err(io_err("create lab-kernels"))?;
    crate::host::ensure_tools(BUILD_TOOLS, &builds)?;
    let gcc = gcc_version()?;
    let patch_files = variant_patches(variant, series_dir)?;
    let patch_texts = patch_files
        .iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            fs::read(p).map(|t| (name, t)).map_err(io_err(format!("read {}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tree_key = cache_key(LabVariant::Shipped, &gcc, &[]);
    let key = cache_key(variant, &gcc, &patch_texts);
    let tree = builds.join(format!("tree-{tree_key}"));
    let var_dir = tree.join("variants").join(format!("{}-{key}", variant.name()));
    if let (Some(t), Some(v)) = (read_json::<BuildRecord>(&tree), read_json::<VariantRecord>(&var_dir)) {
        progress(format!("lab kernel {variant}: cached ({}, key {key})", var_dir.display()));
        return Ok(LabKernel { kernel: as_kernel(&tree, &var_dir, variant), tree: t, record: v, built_now: false });
    }
    let _lock = lock(&builds.join(format!("tree-{tree_key}.lock")))?;
    let tree_record = match read_json::<BuildRecord>(&tree) {
        Some(t) => t,
        None => {
            progress(format!(
                "lab kernel tree {tree_key}: building {} {SOURCE_VERSION} cold in {}; minutes on an idle 2-core \
                 machine, much longer on a loaded one",
                patches::SOURCE_PKG,
                tree.display()
            ));
            let tarball = patches::fetch_source(root)?;
            let _ = fs::remove_dir_all(&tree);
            fs::create_dir_all(&tree).map_err(io_err(format!("create {}", tree.display())))?;
            build_tree(&tree, &tarball, &tree_key, &gcc)?
        }
    };
    // Another process may have built the variant while this one waited.
    if let Some(v) = read_json::<VariantRecord>(&var_dir) {
        return Ok(LabKernel {
            kernel: as_kernel(&tree, &var_dir, variant),
            tree: tree_record,
            record: v,
            built_now: false,
        });
    }
    progress(format!("lab kernel {variant}: bringing the tree to its {} patches and rebuilding", patch_texts.len()));
    set_patches(&tree, &patch_texts)?;
    let t = Instant::now();
    make_image(&tree, "rebuild.log")?;
    let rebuild_seconds = t.elapsed().as_secs_f64();
    progress(format!("lab kernel {variant}: rebuilt in {rebuild_seconds:.0} s"));
    let record = VariantRecord {
        variant,
        key: key.clone(),
        tree_key,
        patches: patch_texts.iter().map(|(n, _)| n.clone()).collect(),
        rebuild_seconds,
        date: crate::conformance::corpus::utc_now(),
    };
    publish_variant(&tree, &var_dir, &record)?;
    Ok(LabKernel { kernel: as_kernel(&tree, &var_dir, variant), tree: tree_record, record, built_now: true })
}

/// An exclusive `flock(2)` on `path`, held until the value is dropped.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<fs::File>, LabError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))?;
    progress(format!("waiting for the lock {} (another lab build may hold it)", path.display()));
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| LabError::Io(format!("flock {}: {e}", path.display())))
}

/// `dir/build-report.json` or `dir/variant.json`, when `dir`'s marker says
/// the entry is complete.
fn read_json<T: serde::de::DeserializeOwned>(dir: &Path) -> Option<T> {
    let text = fs::read_to_string(dir.join(MARKER)).ok()?;
    if text.contains("placeholder") {
        return None;
    }
    let name = if dir.join("variant.json").is_file() { "variant.json" } else { "build-report.json" };
    serde_json::from_str(&fs::read_to_string(dir.join(name)).ok()?).ok()
}

fn as_kernel(tree: &Path, var_dir: &Path, variant: LabVariant) -> Kernel {
    Kernel {
        pkg: KernelPkg {
            abi: RELEASE.to_string(),
            version: format!(
                "{SOURCE_VERSION} {variant} ({})",
                var_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ),
            suite: format!("lab build of {}", patches::SOURCE_PKG),
        },
        dir: var_dir.to_path_buf(),
        note: None,
        build: Some(BuildTree { variant, src: tree.join("src"), obj: tree.join("build") }),
    }
}

/// The patches the tree's source currently has (name, text), in order.
const APPLIED: &str = "applied-patches.json";

/// Brings the source to exactly `wanted`: the patches applied now are
/// reverted in reverse order (from their recorded text), then `wanted` is
/// applied in order. make then rebuilds what changed.
fn set_patches(tree: &Path, wanted: &[(String, Vec<u8>)]) -> Result<(), LabError> {
    let src = tree.join("src");
    let logs = tree.join("logs");
    let state = tree.join(APPLIED);
    let applied: Vec<(String, Vec<u8>)> =
        fs::read_to_string(&state).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    if applied == wanted {
        return Ok(());
    }
    let apply = |name: &str, text: &[u8], reverse: bool| -> Result<(), LabError> {
        let file = logs.join("patch.tmp");
        fs::write(&file, text).map_err(io_err("write patch"))?;
        let mut c = Command::new("git");
        c.arg("apply");
        if reverse {
            c.arg("-R");
        }
        c.arg(&file).current_dir(&src).env("GIT_DIR", "/nonexistent");
        let what = format!("git apply {}{name}", if reverse { "-R " } else { "" });
        run_bounded(c, &what, 120, &logs.join("patch.log"))
    };
    for (name, text) in applied.iter().rev() {
        apply(name, text, true)?;
    }
    // Recorded before applying: a failure half-way leaves a state the next
    // run can revert (it reverts what the record names, in reverse order).
    let _ = fs::write(&state, "[]");
    for (i, (name, text)) in wanted.iter().enumerate() {
        apply(name, text, false)?;
        let done = wanted.get(..=i).unwrap_or_default();
        let json = serde_json::to_string(done).map_err(|e| LabError::Io(format!("patch state: {e}")))?;
        fs::write(&state, json).map_err(io_err("write patch state"))?;
    }
    Ok(())
}

/// `make -jN bzImage modules` in the tree; its log in `logs/<log>`.
fn make_image(tree: &Path, log: &str) -> Result<usize, LabError> {
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let logp = tree.join("logs").join(log);
    progress(format!("make -j{jobs} bzImage modules (log: {})", logp.display()));
    let mut c = make(&tree.join("src"), &tree.join("build"));
    c.arg(format!("-j{jobs}")).arg("bzImage").arg("modules");
    run_bounded(c, "make bzImage modules", BUILD_SECS, &logp)?;
    Ok(jobs)
}

/// Copies the image and the vfio modules out of the tree into `var_dir`
/// (staged, then renamed into place).
fn publish_variant(tree: &Path, var_dir: &Path, record: &VariantRecord) -> Result<(), LabError> {
    let obj = tree.join("build");
    let stage = var_dir.with_extension("staging");
    let _ = fs::remove_dir_all(&stage);
    // The Debian kernel layout, so that the boot code needs no second path.
    let image_dir = stage.join("root/usr/lib/modules").join(RELEASE);
    fs::create_dir_all(&image_dir).map_err(io_err("create image dir"))?;
    fs::copy(obj.join("arch/x86/boot/bzImage"), image_dir.join("vmlinuz")).map_err(io_err("copy bzImage"))?;
    let mods = stage.join("vfio-modules");
    fs::create_dir_all(&mods).map_err(io_err("create vfio-modules"))?;
    for ((name, _), rel) in GUEST_MODULES.iter().zip(GUEST_MODULE_PATHS) {
        // Debug sections only make the initramfs bigger.
        let from = obj.join(format!("{rel}.ko"));
        let mut c = Command::new("strip");
        c.arg("--strip-debug").arg("-o").arg(mods.join(format!("{name}.ko"))).arg(&from);
        run_bounded(c, &format!("strip {}", from.display()), 60, &tree.join("logs/strip.log"))?;
    }
    let json = serde_json::to_string_pretty(record).map_err(|e| LabError::Io(format!("variant record: {e}")))?;
    fs::write(stage.join("variant.json"), json + "\n").map_err(io_err("write variant.json"))?;
    fs::write(stage.join(MARKER), format!("variant={}\nkey={}\n", record.variant, record.key))
        .map_err(io_err("write cache marker"))?;
    let _ = fs::remove_dir_all(var_dir);
    if let Some(p) = var_dir.parent() {
        fs::create_dir_all(p).map_err(io_err("create variants"))?;
    }
    fs::rename(&stage, var_dir).map_err(io_err(format!("publish {}", var_dir.display())))
}

/// The cold build: unpack, configure, make; the tree's record and marker.
fn build_tree(tree: &Path, tarball: &Path, key: &str, gcc: &str) -> Result<BuildRecord, LabError> {
    let src = tree.join("src");
    let obj = tree.join("build");
    let logs = tree.join("logs");
    for d in [&src, &obj, &logs] {
        fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    }
    let t = Instant::now();
    progress(format!("unpacking {}", tarball.display()));
    let mut c = Command::new("tar");
    c.arg("-xJf").arg(tarball).arg("-C").arg(&src).arg("--strip-components=1");
    run_bounded(c, "tar -xJf linux-source", 1800, &logs.join("unpack.log"))?;
    let unpack_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut c = make(&src, &obj);
    c.arg("allnoconfig");
    run_bounded(c, "make allnoconfig", 600, &logs.join("config.log"))?;
    let frag = tree.join("lab.config");
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
    let t = Instant::now();
    let jobs = make_image(tree, "build.log")?;
    let build_seconds = t.elapsed().as_secs_f64();
    progress(format!("lab kernel tree {key}: cold build {build_seconds:.0} s"));
    let record = BuildRecord {
        variant: LabVariant::Shipped,
        key: key.to_string(),
        release: RELEASE.to_string(),
        source_version: SOURCE_VERSION.to_string(),
        gcc: gcc.to_string(),
        patches: Vec::new(),
        unpack_seconds,
        configure_seconds,
        build_seconds,
        jobs,
        date: crate::conformance::corpus::utc_now(),
    };
    let json = serde_json::to_string_pretty(&record).map_err(|e| LabError::Io(format!("build record: {e}")))?;
    fs::write(tree.join("build-report.json"), json + "\n").map_err(io_err("write build-report.json"))?;
    fs::write(tree.join(APPLIED), "[]").map_err(io_err("write patch state"))?;
    fs::write(tree.join(MARKER), format!("tree={key}\n")).map_err(io_err("write cache marker"))?;
    Ok(record)
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
        // No git repository above the tree may add "+" to the release, and
        // the build's identity stays constant.
        .env("GIT_DIR", "/nonexistent")
        .env("KBUILD_BUILD_USER", "nr-ranges")
        .env("KBUILD_BUILD_HOST", "kernel-lab");
    c
}

/// Builds the external module in `module_dir` (a Kbuild directory) against
/// a lab build with the host's make and gcc; returns `module_dir`.
pub fn build_external_module(tree: &BuildTree, module_dir: &Path, log: &Path) -> Result<(), LabError> {
    let mut c = make(&tree.src, &tree.obj);
    c.arg(format!("M={}", module_dir.display())).arg("modules");
    run_bounded(c, &format!("make M={} modules", module_dir.display()), 600, log)
}

/// A lab fixture: one out-of-tree module, its sources compiled into the lab.
#[derive(Debug, Clone, Copy)]
pub struct ExternalModule<'a> {
    /// The cache directory in a lab kernel's entry (`importer`, `faultmod`, ...).
    pub cache: &'a str,
    /// The source hash that keys the cache.
    pub hash: &'a str,
    /// The files of the Kbuild directory: (name, contents).
    pub files: &'a [(&'a str, &'a str)],
    /// The `.ko` it builds.
    pub ko: &'a str,
}

/// `m` built against the lab kernel `kernel` (whose build tree is `tree`)
/// with the host's make and gcc, cached in the kernel's entry:
/// `<entry>/<cache>/module-<hash>/<ko>`, published by a rename so a
/// half-built module is never used.
pub fn ensure_external_module(
    root: &Path,
    kernel: &Kernel,
    tree: &BuildTree,
    m: &ExternalModule<'_>,
) -> Result<PathBuf, LabError> {
    let base = kernel.dir.join(m.cache);
    let out = base.join(format!("module-{}", m.hash));
    let ko = out.join(m.ko);
    if ko.is_file() {
        return Ok(ko);
    }
    let build = scratch(root, m.cache)?;
    for (name, text) in m.files {
        fs::write(build.0.join(name), text).map_err(io_err(format!("write {name}")))?;
    }
    progress(format!("building {} against the lab kernel {}", m.ko, tree.variant));
    fs::create_dir_all(&base).map_err(io_err(format!("create {}", base.display())))?;
    build_external_module(tree, &build.0, &base.join("module-build.log"))?;
    let stage = base.join(format!(".staging.module.{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage).map_err(io_err("create module staging"))?;
    fs::copy(build.0.join(m.ko), stage.join(m.ko)).map_err(io_err(format!("copy {}", m.ko)))?;
    let _ = fs::remove_dir_all(&out);
    fs::rename(&stage, &out).map_err(io_err(format!("publish {}", out.display())))?;
    Ok(ko)
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
    fn the_tree_moves_between_patch_sets() {
        let t = crate::host::tempdir(&std::env::temp_dir(), "lab-kernel-test").unwrap();
        for d in ["src", "logs"] {
            fs::create_dir_all(t.0.join(d)).unwrap();
        }
        let file = t.0.join("src/f.c");
        fs::write(&file, "a\nb\nc\n").unwrap();
        let p1 = b"--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n".to_vec();
        let p2 = b"--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n a\n B\n-c\n+C\n".to_vec();
        let both = vec![("1.patch".to_string(), p1.clone()), ("2.patch".to_string(), p2)];
        set_patches(&t.0, &both).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\nB\nC\n");
        set_patches(&t.0, &both).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\nB\nC\n", "already in that state: nothing applied twice");
        set_patches(&t.0, &[("1.patch".to_string(), p1)]).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\nB\nc\n");
        set_patches(&t.0, &[]).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\nb\nc\n", "back to the source as shipped");
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
