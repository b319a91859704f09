//! Debian's kernel packages: the mirror from the machine's apt
//! configuration, a private apt (own sources, lists, cache and empty dpkg
//! status; nothing installed), the kernel cache, and `linux-libc-dev`'s
//! headers for `kernel-lab fetch-header`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::{io_err, progress, run_bounded, tempdir, LabError};
use crate::{GUEST_MODULES, GUEST_MODULE_PATHS};

/// The oldest kernel with `VFIO_DEVICE_FEATURE_DMA_BUF`.
pub const MIN_KERNEL: (u32, u32) = (6, 19);
/// The flavour the lab boots: small, and built with `VFIO_PCI_DMABUF=y`.
pub const FLAVOUR: &str = "cloud-amd64";
/// Suites searched for kernels: unstable has 7.2.x, trixie-backports 7.3.x,
/// trixie 6.12 (without the feature: asked for by name only, to show that
/// the lab reports it absent).
pub const DEFAULT_SUITES: &[&str] = &["sid", "trixie-backports", "trixie"];
/// Marks a complete cache entry (written last, then the entry is renamed
/// into place, so a half-extracted tree is never used).
pub(crate) const MARKER: &str = ".nr-ranges-complete";

/// The suites to look for kernels in: `NR_RANGES_KERNEL_SUITES`
/// (whitespace-separated) if set and not blank, else [`DEFAULT_SUITES`].
pub fn kernel_suites() -> Vec<String> {
    std::env::var("NR_RANGES_KERNEL_SUITES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_else(|| DEFAULT_SUITES.iter().map(|s| s.to_string()).collect())
}

/// A kernel package in the archive: `linux-binary-<abi>` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPkg {
    /// `uname -r`, e.g. `7.2.13+deb14-cloud-amd64`.
    pub abi: String,
    /// The Debian package version, e.g. `7.2.13-1`.
    pub version: String,
    /// The suite it came from.
    pub suite: String,
}

/// The upstream version of an ABI string: `7.2.13+deb14-cloud-amd64` ->
/// (7, 2, 13).
pub fn upstream_version(abi: &str) -> Option<(u32, u32, u32)> {
    let core = abi.split(['+', '-']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>());
    let major = it.next()?.ok()?;
    let minor = it.next()?.ok()?;
    let patch = match it.next() {
        Some(p) => p.ok()?,
        None => 0,
    };
    Some((major, minor, patch))
}

/// Whether `abi` is what the user asked for: `7.2`, `7.2.13`,
/// `7.2.13+deb14` and the full ABI all match `7.2.13+deb14-cloud-amd64`.
pub fn kernel_matches(abi: &str, wanted: &str) -> bool {
    abi == wanted
        || abi.strip_prefix(wanted).is_some_and(|rest| rest.starts_with(['.', '+', '-']))
        || abi == format!("{wanted}-{FLAVOUR}")
}

/// The newest kernel matching `wanted`, or without `wanted` the newest
/// from 6.19 on (older kernels only when asked for by name: they lack the
/// feature, which the lab then reports).
pub fn pick_kernel<'a>(pkgs: &'a [KernelPkg], wanted: Option<&str>) -> Option<&'a KernelPkg> {
    pkgs.iter()
        .filter(|p| {
            upstream_version(&p.abi)
                .is_some_and(|(a, b, _)| wanted.is_some_and(|w| kernel_matches(&p.abi, w)) || (a, b) >= MIN_KERNEL)
        })
        .filter(|p| wanted.is_none_or(|w| kernel_matches(&p.abi, w)))
        .max_by(|a, b| upstream_version(&a.abi).cmp(&upstream_version(&b.abi)).then_with(|| a.abi.cmp(&b.abi)))
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package it came from.
    pub pkg: KernelPkg,
    /// The cache entry.
    pub dir: PathBuf,
    /// Set when the requested kernel was not available and another was taken.
    pub note: Option<String>,
    /// A lab build's source and build trees (`None` for Debian's kernels,
    /// whose modules are built in a chroot against `linux-headers`).
    pub build: Option<crate::lab_kernel::BuildTree>,
}

impl Kernel {
    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        vmlinuz_in(&self.dir.join("root"), &self.pkg.abi)
    }

    /// The decompressed vfio module `name`.
    pub fn module(&self, name: &str) -> PathBuf {
        self.dir.join("vfio-modules").join(format!("{name}.ko"))
    }

    /// linux-libc-dev's include directory (when it was available).
    pub fn include_dir(&self) -> PathBuf {
        self.dir.join("root/usr/include")
    }
}

/// Debian's kernel packages put the image in `/usr/lib/modules/<abi>/vmlinuz`
/// (newer) or `/boot/vmlinuz-<abi>` (older).
fn vmlinuz_in(rootfs: &Path, abi: &str) -> PathBuf {
    let modules = rootfs.join(format!("usr/lib/modules/{abi}/vmlinuz"));
    if modules.is_file() {
        modules
    } else {
        rootfs.join(format!("boot/vmlinuz-{abi}"))
    }
}

fn read_marker(dir: &Path) -> Option<KernelPkg> {
    let text = fs::read_to_string(dir.join(MARKER)).ok()?;
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_string);
    Some(KernelPkg { abi: get("abi")?, version: get("version")?, suite: get("suite")? })
}

/// Kernels already in the cache.
pub fn cached_kernels(root: &Path) -> Vec<(KernelPkg, PathBuf)> {
    let Ok(rd) = fs::read_dir(root.join("kernels")) else { return vec![] };
    rd.flatten()
        .filter_map(|e| {
            let p = e.path();
            let pkg = read_marker(&p)?;
            (p.file_name()? == pkg.abi.as_str()).then_some((pkg, p))
        })
        .collect()
}

/// A private apt: own sources, lists, cache and empty dpkg status; the
/// system's apt configuration and state are never read or written, nothing
/// is installed. Shared by the kernel fetch and `kernel-lab fetch-header`.
pub struct PrivateApt {
    dir: PathBuf,
    mirror: String,
}

/// The Debian mirror: `NR_RANGES_DEBIAN_MIRROR` if set, else the first
/// Debian archive in the machine's apt sources (`/etc/apt/sources.list`
/// and `sources.list.d/*.{list,sources}`), so that whatever local mirror or proxy the
/// machine uses is the one asked. No host name is built in.
pub fn debian_mirror() -> Result<String, LabError> {
    if let Ok(m) = std::env::var("NR_RANGES_DEBIAN_MIRROR") {
        if !m.is_empty() {
            return Ok(m.trim_end_matches('/').to_string());
        }
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        // What apt itself reads there: `*.list` and `*.sources`.
        let mut parts: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        parts.sort();
        files.extend(parts);
    }
    files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .find_map(|text| mirror_in_sources(&text))
        .ok_or(LabError::NoMirror)
}

/// The first Debian archive URI (ending in `/debian`) of an apt sources
/// file, one-line (`deb [opts] URI suite ...`) or deb822 (`URIs: ...`).
pub fn mirror_in_sources(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let uris: Vec<&str> = match words.first() {
            Some(&"URIs:") => words.get(1..).unwrap_or_default().to_vec(),
            Some(&"deb") => words.iter().skip(1).find(|w| w.contains("://")).copied().into_iter().collect(),
            _ => vec![],
        };
        uris.into_iter().map(|u| u.trim_end_matches('/')).find(|u| u.ends_with("/debian")).map(str::to_string)
    })
}

impl PrivateApt {
    /// Writes the configuration for `suites` of `mirror` under `dir`.
    pub fn new(dir: &Path, mirror: &str, suites: &[String]) -> Result<Self, LabError> {
        for sub in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "lists/partial",
            "cache/archives/partial",
            "log",
            "dl",
        ] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(format!("create {}", dir.display())))?;
        }
        fs::write(dir.join("status"), "").map_err(io_err("write apt status"))?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let opts = if Path::new(keyring).exists() { format!("signed-by={keyring}") } else { "trusted=yes".into() };
        let sources: String = suites.iter().map(|s| format!("deb [{opts} arch=amd64] {mirror} {s} main\n")).collect();
        fs::write(dir.join("sources.list"), sources).map_err(io_err("write sources.list"))?;
        let d = dir.display();
        let conf = format!(
            "Dir::Etc \"{d}/etc\";\nDir::Etc::main \"/dev/null\";\nDir::Etc::parts \"{d}/etc/apt.conf.d\";\n\
             Dir::Etc::preferences \"/dev/null\";\nDir::Etc::preferencesparts \"{d}/etc/preferences.d\";\n\
             Dir::Etc::trusted \"/dev/null\";\nDir::Etc::trustedparts \"{d}/etc/trusted.gpg.d\";\n\
             Dir::Etc::sourcelist \"{d}/sources.list\";\nDir::Etc::sourceparts \"-\";\n\
             Dir::State \"{d}\";\nDir::State::Lists \"{d}/lists\";\nDir::State::status \"{d}/status\";\n\
             Dir::State::extended_states \"{d}/extended_states\";\nDir::Cache \"{d}/cache\";\n\
             Dir::Cache::archives \"{d}/cache/archives\";\nDir::Cache::pkgcache \"{d}/cache/pkgcache.bin\";\n\
             Dir::Cache::srcpkgcache \"{d}/cache/srcpkgcache.bin\";\nDir::Log \"{d}/log\";\n\
             APT::Architecture \"amd64\";\nAPT::Architectures {{ \"amd64\"; }};\nAcquire::Languages \"none\";\n\
             Acquire::Check-Valid-Until \"false\";\nAcquire::PDiffs \"false\";\nAcquire::Retries \"2\";\n\
             Acquire::http::Timeout \"30\";\nAcquire::https::Timeout \"30\";\nAPT::Sandbox::User \"root\";\n"
        );
        fs::write(dir.join("apt.conf"), conf).map_err(io_err("write apt.conf"))?;
        Ok(Self { dir: dir.into(), mirror: mirror.into() })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("APT_CONFIG", self.dir.join("apt.conf")).env("LC_ALL", "C");
        c
    }

    /// `apt-get update` of the private index.
    pub fn update(&self) -> Result<(), LabError> {
        let log = self.dir.join("update.log");
        let mut c = self.cmd("apt-get");
        c.args(["-q", "-y", "update"]);
        let r = run_bounded(c, "apt-get update (private index)", 300, &log);
        // apt-get update exits 0 when a suite fails with a warning: a
        // failed fetch shows as `Err:`/`W: Failed to fetch` in the log.
        let text = fs::read_to_string(&log).unwrap_or_default();
        let failed: Vec<&str> =
            text.lines().filter(|l| l.starts_with("Err:") || l.contains("Failed to fetch")).take(2).collect();
        match r {
            Err(e @ LabError::Timeout { .. }) => Err(LabError::Registry(e.to_string())),
            Err(e) => Err(LabError::Registry(format!("{e} (mirror {})", self.mirror))),
            Ok(()) if !failed.is_empty() && !text.contains("Get:") && !text.contains("Hit:") => {
                Err(LabError::Registry(format!("{} ({})", failed.join(" | "), self.mirror)))
            }
            Ok(()) => Ok(()),
        }
    }

    fn query(&self, args: &[&str]) -> Result<String, LabError> {
        let log = self.dir.join("query.log");
        let mut c = self.cmd("apt-cache");
        c.args(args);
        run_bounded(c, &format!("apt-cache {}", args[0]), 120, &log)?;
        fs::read_to_string(&log).map_err(io_err("read apt-cache output"))
    }

    /// Every `linux-binary-*-cloud-amd64` (7.x naming) and
    /// `linux-image-*-cloud-amd64` (6.x naming, image and modules in one
    /// package) in the index, with version and suite.
    pub fn kernels(&self) -> Result<Vec<KernelPkg>, LabError> {
        let mut names = self.query(&["pkgnames", "linux-binary-"])?;
        names.push('\n');
        names.push_str(&self.query(&["pkgnames", "linux-image-"])?);
        let pkgs: Vec<&str> = names
            .lines()
            .map(str::trim)
            .filter(|n| n.ends_with(&format!("-{FLAVOUR}")) && !n.contains("-dbg") && !n.contains("-unsigned"))
            .filter(|n| n.split('-').nth(2).is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())))
            .collect();
        if pkgs.is_empty() {
            return Ok(vec![]);
        }
        let mut args = vec!["madison"];
        args.extend(pkgs.iter().copied());
        Ok(parse_madison(&self.query(&args)?))
    }

    /// Every version of `pkg` in the index.
    pub fn versions(&self, pkg: &str) -> Result<Vec<String>, LabError> {
        Ok(parse_madison_versions(&self.query(&["madison", pkg])?))
    }

    /// Whether `pkg=version` exists in the index.
    pub fn has(&self, pkg: &str, version: &str) -> bool {
        self.query(&["madison", pkg]).map(|m| parse_madison_versions(&m).iter().any(|v| v == version)).unwrap_or(false)
    }

    /// `apt-get download` into the private `dl/` directory.
    pub fn download(&self, pkgs: &[String]) -> Result<Vec<PathBuf>, LabError> {
        let dl = self.dir.join("dl");
        let mut c = self.cmd("apt-get");
        c.args(["-q", "-y", "download"]).args(pkgs).current_dir(&dl);
        run_bounded(c, &format!("apt-get download {}", pkgs.join(" ")), 600, &self.dir.join("download.log")).map_err(
            |e| match e {
                LabError::Timeout { .. } => LabError::Registry(e.to_string()),
                other => other,
            },
        )?;
        let debs: Vec<PathBuf> = fs::read_dir(&dl)
            .map_err(io_err("list downloads"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        Ok(debs)
    }
}

/// `apt-cache madison` lines `pkg | version | mirror suite/main amd64
/// Packages` -> kernel packages (the ABI is the package name minus
/// `linux-binary-`).
pub fn parse_madison(text: &str) -> Vec<KernelPkg> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let [pkg, version, src] = cols[..] else { return None };
            let abi = pkg.strip_prefix("linux-binary-").or_else(|| pkg.strip_prefix("linux-image-"))?;
            let suite = src.split_whitespace().nth(1)?.split('/').next()?;
            Some(KernelPkg { abi: abi.into(), version: version.into(), suite: suite.into() })
        })
        .collect()
}

fn parse_madison_versions(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string())).collect()
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct KernelRequest {
    /// `--kernel`: a version prefix or full ABI.
    pub wanted: Option<String>,
    /// `--refresh`: ask the mirror even when a cached kernel fits.
    pub refresh: bool,
    /// Suites to search.
    pub suites: Vec<String>,
}

/// A cached kernel that fits the request, else the mirror's newest fit
/// (downloaded and extracted into the cache).
///
/// A lab build's name ([`crate::lab_kernel::LabVariant::NAMES`]) gives that
/// build, built first when the cache has none for the current inputs.
pub fn resolve_kernel(root: &Path, req: &KernelRequest) -> Result<Kernel, LabError> {
    if let Some(v) = req.wanted.as_deref().and_then(crate::lab_kernel::LabVariant::from_name) {
        return crate::lab_kernel::ensure(root, v, &crate::lab_kernel::series_dir()).map(|k| k.kernel);
    }
    let cached = cached_kernels(root);
    if !req.refresh {
        let pkgs: Vec<KernelPkg> = cached.iter().map(|c| c.0.clone()).collect();
        if let Some(p) = pick_kernel(&pkgs, req.wanted.as_deref()) {
            let dir = cached.iter().find(|c| &c.0 == p).map(|c| c.1.clone()).unwrap_or_default();
            return Ok(Kernel { pkg: p.clone(), dir, note: None, build: None });
        }
    }
    let mirror = debian_mirror()?;
    let work = tempdir(&root.join("tmp"), "apt")?;
    let apt = PrivateApt::new(&work.0, &mirror, &req.suites)?;
    progress(format!(
        "fetching the {} package index from {mirror} (private apt, nothing is installed)",
        req.suites.join(", ")
    ));
    apt.update()?;
    let available = apt.kernels()?;
    let mut note = None;
    let pick = match pick_kernel(&available, req.wanted.as_deref()) {
        Some(p) => p,
        None => {
            let newest = pick_kernel(&available, None).ok_or_else(|| {
                LabError::NoKernel(format!(
                    "no linux-binary-*-{FLAVOUR} >= {}.{} in {} at {mirror}; set NR_RANGES_KERNEL_SUITES \
                     (space-separated) to suites that have one",
                    MIN_KERNEL.0,
                    MIN_KERNEL.1,
                    req.suites.join(", ")
                ))
            })?;
            let w = req.wanted.as_deref().unwrap_or("?");
            let n = format!(
                "kernel {w} is not (or no longer) in {}; testing the newest instead: {}",
                req.suites.join(", "),
                newest.abi
            );
            progress(&n);
            note = Some(n);
            newest
        }
    };
    let dir = root.join("kernels").join(&pick.abi);
    if let Some(p) = read_marker(&dir) {
        if p == *pick {
            return Ok(Kernel { pkg: p, dir, note, build: None });
        }
    }
    let mut pkgs = if apt.has(&format!("linux-binary-{}", pick.abi), &pick.version) {
        vec![
            format!("linux-binary-{}={}", pick.abi, pick.version),
            format!("linux-modules-{}={}", pick.abi, pick.version),
        ]
    } else {
        vec![format!("linux-image-{}={}", pick.abi, pick.version)]
    };
    let libc_dev = apt.has("linux-libc-dev", &pick.version);
    if libc_dev {
        pkgs.push(format!("linux-libc-dev={}", pick.version));
    } else {
        progress(format!("note: linux-libc-dev {} is not in the index; continuing without its headers", pick.version));
    }
    progress(format!("downloading {}", pkgs.join(" ")));
    let debs = apt.download(&pkgs)?;
    if debs.len() != pkgs.len() {
        return Err(LabError::BadPackage(format!(
            "apt-get download left {} .deb files for {} packages",
            debs.len(),
            pkgs.len()
        )));
    }
    let stage = tempdir(&root.join("kernels"), &format!(".staging.{}", pick.abi))?;
    let rootfs = stage.0.join("root");
    for deb in &debs {
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(deb).arg(&rootfs);
        run_bounded(c, &format!("dpkg-deb -x {}", deb.display()), 300, &stage.0.join("extract.log"))?;
    }
    let usr = rootfs.join(format!("usr/lib/modules/{}", pick.abi));
    let moddir = if usr.is_dir() { usr } else { rootfs.join(format!("lib/modules/{}", pick.abi)) };
    decompress_modules(&moddir, &stage.0.join("vfio-modules"))?;
    let vmlinuz = vmlinuz_in(&rootfs, &pick.abi);
    if !vmlinuz.is_file() {
        return Err(LabError::BadPackage(format!("linux-binary-{} has no {}", pick.abi, vmlinuz.display())));
    }
    let marker = format!(
        "abi={}\nversion={}\nsuite={}\nmirror={mirror}\nlibc_dev={libc_dev}\n",
        pick.abi, pick.version, pick.suite
    );
    fs::write(stage.0.join(MARKER), marker).map_err(io_err("write cache marker"))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&stage.0, &dir).map_err(io_err(format!("publish {}", dir.display())))?;
    Ok(Kernel { pkg: pick.clone(), dir, note, build: None })
}

/// Decompresses the vfio modules (`.ko.xz`, or plain `.ko`) on the host:
/// the guest has no modprobe and no decompressor.
fn decompress_modules(moddir: &Path, out: &Path) -> Result<(), LabError> {
    fs::create_dir_all(out).map_err(io_err(format!("create {}", out.display())))?;
    for ((name, _), rel) in GUEST_MODULES.iter().zip(GUEST_MODULE_PATHS) {
        let base = moddir.join("kernel").join(rel);
        let dest = out.join(format!("{name}.ko"));
        let xz = base.with_extension("ko.xz");
        let plain = base.with_extension("ko");
        if xz.is_file() {
            let f = fs::File::create(&dest).map_err(io_err(format!("create {}", dest.display())))?;
            let status = Command::new("xz")
                .arg("-dc")
                .arg(&xz)
                .stdout(f)
                .status()
                .map_err(|e| LabError::Command { what: "xz -dc".into(), detail: e.to_string() })?;
            if !status.success() {
                return Err(LabError::BadPackage(format!("xz -dc {} failed ({status})", xz.display())));
            }
        } else if plain.is_file() {
            fs::copy(&plain, &dest).map_err(io_err(format!("copy {}", plain.display())))?;
        } else {
            return Err(LabError::BadPackage(format!(
                "the modules package lacks {} (is vfio-pci built as a module in this kernel?)",
                xz.display()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// linux-libc-dev: the UAPI headers for `uapi/tests/kernel_header.rs`.

/// The package holding `<linux/vfio.h>`.
pub const LIBC_DEV: &str = "linux-libc-dev";

/// What `kernel-lab fetch-header` is asked for.
#[derive(Debug, Clone, Default)]
pub struct HeaderRequest {
    /// An exact version (`NR_RANGES_LIBC_DEV_VERSION`); default the newest
    /// cached, else the suite's newest.
    pub version: Option<String>,
    /// Ask the mirror even when a cached version fits.
    pub refresh: bool,
    /// The suite (`NR_RANGES_DEBIAN_SUITE`, default `sid`).
    pub suite: String,
}

impl HeaderRequest {
    /// The request the environment describes (`NR_RANGES_LIBC_DEV_VERSION`,
    /// `NR_RANGES_DEBIAN_SUITE`, `NR_RANGES_REFRESH=1`).
    pub fn from_env(refresh: bool) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            version: var("NR_RANGES_LIBC_DEV_VERSION"),
            refresh: refresh || var("NR_RANGES_REFRESH").as_deref() == Some("1"),
            suite: var("NR_RANGES_DEBIAN_SUITE").unwrap_or_else(|| "sid".into()),
        }
    }
}

/// A cache directory name for a version (an epoch's `:` is awkward in
/// include paths).
fn version_dir(version: &str) -> String {
    version.replace([':', '/'], "_")
}

/// Why an extracted `linux-libc-dev` cannot serve, if it cannot.
fn headers_unusable(pkg_root: &Path) -> Option<String> {
    let inc = pkg_root.join("usr/include");
    let vfio = fs::read_to_string(inc.join("linux/vfio.h")).unwrap_or_default();
    if vfio.is_empty() {
        return Some("linux/vfio.h is missing".into());
    }
    if !vfio.contains("VFIO_DEVICE_FEATURE_DMA_BUF") || !vfio.contains("struct vfio_region_dma_range") {
        return Some(
            "linux/vfio.h lacks VFIO_DEVICE_FEATURE_DMA_BUF / struct vfio_region_dma_range (headers older than \
             Linux 6.19)"
                .into(),
        );
    }
    let needed =
        ["x86_64-linux-gnu/asm/types.h", "x86_64-linux-gnu/asm/ioctl.h", "linux/types.h", "asm-generic/ioctl.h"];
    needed.iter().find(|f| !inc.join(f).exists()).map(|f| format!("{f} is missing"))
}

/// `dpkg --compare-versions a gt b` (string order where dpkg is absent).
fn version_newer(a: &str, b: &str) -> bool {
    match Command::new("dpkg").args(["--compare-versions", a, "gt", b]).status() {
        Ok(s) => s.success(),
        Err(_) => a > b,
    }
}

/// The versions of `linux-libc-dev` complete in the cache, usable ones only.
fn cached_headers(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else { return vec![] };
    rd.flatten()
        .filter_map(|e| {
            let p = e.path();
            let marker = fs::read_to_string(p.join(MARKER)).ok()?;
            let v = marker.lines().find_map(|l| l.strip_prefix("version="))?.to_string();
            let ok = p.file_name()? == version_dir(&v).as_str() && headers_unusable(&p).is_none();
            ok.then_some((v, p))
        })
        .collect()
}

/// The include directory of a `linux-libc-dev` >= 6.19 (its `usr/include`;
/// the x86-64 `asm/` is in `x86_64-linux-gnu/` below it): the newest cached
/// one (or the pinned version), else downloaded from the mirror with a
/// private apt and extracted into `root/linux-libc-dev/<version>/`.
pub fn fetch_headers(root: &Path, req: &HeaderRequest) -> Result<PathBuf, LabError> {
    let dir = root.join(LIBC_DEV);
    let cached = cached_headers(&dir);
    let hit = match &req.version {
        Some(v) => cached.iter().find(|c| &c.0 == v),
        None if req.refresh => None,
        None => cached.iter().reduce(|best, c| if version_newer(&c.0, &best.0) { c } else { best }),
    };
    if let Some((v, p)) = hit {
        progress(format!("using {LIBC_DEV} {v} from {}", p.display()));
        return Ok(p.join("usr/include"));
    }

    let mirror = debian_mirror()?;
    let work = tempdir(&root.join("tmp"), "apt")?;
    let apt = PrivateApt::new(&work.0, &mirror, std::slice::from_ref(&req.suite))?;
    progress(format!("fetching the {} package index from {mirror} (private apt, nothing is installed)", req.suite));
    apt.update()?;
    let available = apt.versions(LIBC_DEV)?;
    let version = match &req.version {
        Some(v) if available.contains(v) => v.clone(),
        Some(v) => {
            return Err(LabError::NoKernel(format!(
                "{LIBC_DEV} {v} (NR_RANGES_LIBC_DEV_VERSION) is not in {} at {mirror} (available: {}); unset it \
                 or pin an available version",
                req.suite,
                available.join(" ")
            )))
        }
        None => {
            available.iter().cloned().reduce(|a, b| if version_newer(&b, &a) { b } else { a }).ok_or_else(|| {
                LabError::NoKernel(format!(
                    "{LIBC_DEV} is not in {} main at {mirror}; check NR_RANGES_DEBIAN_SUITE",
                    req.suite
                ))
            })?
        }
    };
    progress(format!("downloading {LIBC_DEV} {version}"));
    let debs = apt.download(&[format!("{LIBC_DEV}={version}")])?;
    let [deb] = &debs[..] else {
        return Err(LabError::BadPackage(format!("apt-get download left {} .deb files for {LIBC_DEV}", debs.len())));
    };
    let stage = tempdir(&dir, &format!(".staging.{}", version_dir(&version)))?;
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(deb).arg(&stage.0);
    run_bounded(c, &format!("dpkg-deb -x {}", deb.display()), 300, &work.0.join("extract.log"))?;
    if let Some(why) = headers_unusable(&stage.0) {
        return Err(LabError::BadPackage(format!(
            "{LIBC_DEV} {version} from {} is not usable: {why}; Linux >= 6.19 headers are required (try \
             NR_RANGES_DEBIAN_SUITE=experimental)",
            req.suite
        )));
    }
    let marker = format!("version={version}\npackage={LIBC_DEV}\nsource={mirror} {} main amd64\n", req.suite);
    fs::write(stage.0.join(MARKER), marker).map_err(io_err("write cache marker"))?;
    let fin = dir.join(version_dir(&version));
    let _ = fs::remove_dir_all(&fin);
    fs::rename(&stage.0, &fin).map_err(io_err(format!("publish {}", fin.display())))?;
    Ok(fin.join("usr/include"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_and_matching() {
        assert_eq!(upstream_version("7.2.13+deb14-cloud-amd64"), Some((7, 2, 13)));
        assert_eq!(upstream_version("6.19-rc3-cloud-amd64"), Some((6, 19, 0)));
        assert_eq!(upstream_version("cloud"), None);
        let abi = "7.2.13+deb14-cloud-amd64";
        for w in ["7.2", "7.2.13", "7.2.13+deb14", abi, "7"] {
            assert!(kernel_matches(abi, w), "{w}");
        }
        for w in ["7.2.1", "7.3", "7.2.13+deb1"] {
            assert!(!kernel_matches(abi, w), "{w}");
        }
    }

    #[test]
    fn madison_and_pick() {
        let text =
            " linux-binary-7.2.13+deb14-cloud-amd64 |   7.2.13-1 | http://mirror.invalid/debian sid/main amd64 Packages
linux-binary-7.3.2+bpo-cloud-amd64 | 7.3.2-1~bpo13+1 | http://mirror.invalid/debian trixie-backports/main amd64 Packages
linux-image-6.12.9+deb13-cloud-amd64 | 6.12.9-1 | http://mirror.invalid/debian trixie/main amd64 Packages
garbage line
";
        let pkgs = parse_madison(text);
        assert_eq!(pkgs.len(), 3);
        assert_eq!(pkgs[2].abi, "6.12.9+deb13-cloud-amd64");
        assert_eq!(
            pkgs[0],
            KernelPkg { abi: "7.2.13+deb14-cloud-amd64".into(), version: "7.2.13-1".into(), suite: "sid".into() }
        );
        assert_eq!(pkgs[1].suite, "trixie-backports");
        assert_eq!(pick_kernel(&pkgs, None).unwrap().abi, "7.3.2+bpo-cloud-amd64");
        assert_eq!(pick_kernel(&pkgs, Some("7.2")).unwrap().version, "7.2.13-1");
        // Older than 6.19: only by name (the feature-absent run).
        assert_eq!(pick_kernel(&pkgs, Some("6.12")).unwrap().abi, "6.12.9+deb13-cloud-amd64");
        assert!(pick_kernel(&pkgs[2..], None).is_none());
        assert!(pick_kernel(&pkgs, Some("8.0")).is_none());
    }

    #[test]
    fn mirror_from_apt_sources() {
        let deb822 = "Types: deb\n# http://old.invalid/debian\nURIs: http://mirror.invalid/debian/\nSuites: sid\n";
        assert_eq!(mirror_in_sources(deb822).as_deref(), Some("http://mirror.invalid/debian"));
        let one_line = "deb [signed-by=/k.gpg] http://mirror.invalid/debian sid main\n";
        assert_eq!(mirror_in_sources(one_line).as_deref(), Some("http://mirror.invalid/debian"));
        let security = "URIs: http://mirror.invalid/debian-security\n";
        assert_eq!(mirror_in_sources(security), None);
        let proxy = "URIs: http://proxy.invalid:3142/ubuntu http://proxy.invalid:3142/debian\n";
        assert_eq!(mirror_in_sources(proxy).as_deref(), Some("http://proxy.invalid:3142/debian"));
    }
}
