//! The host side: kernels from Debian's archive (private apt, nothing
//! installed), host tools, the static guest, the initramfs, and QEMU under a
//! deadline that is always killed.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{GUEST_MODULES, GUEST_MODULE_PATHS, OUTPUT_PORT_NAME};

/// The oldest kernel with `VFIO_DEVICE_FEATURE_DMA_BUF`.
pub const MIN_KERNEL: (u32, u32) = (6, 19);
/// The flavour the lab boots: small, and built with `VFIO_PCI_DMABUF=y`.
pub const FLAVOUR: &str = "cloud-amd64";
/// Suites searched for kernels: unstable has 7.2.x, trixie-backports 7.3.x.
pub const DEFAULT_SUITES: &[&str] = &["sid", "trixie-backports"];
/// Marks a complete cache entry (written last, then the entry is renamed
/// into place, so a half-extracted tree is never used).
const MARKER: &str = ".nr-ranges-complete";
/// The guest's target: the host's own (no other target is installable),
/// statically linked so that the initramfs needs no libc.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The suites to look for kernels in: `NR_RANGES_KERNEL_SUITES`
/// (whitespace-separated) if set and not blank, else [`DEFAULT_SUITES`].
pub fn kernel_suites() -> Vec<String> {
    std::env::var("NR_RANGES_KERNEL_SUITES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_else(|| DEFAULT_SUITES.iter().map(|s| s.to_string()).collect())
}

/// Everything that can stop the lab before it has an answer. Each message
/// names the cause and what to do.
#[derive(Debug)]
pub enum LabError {
    /// No cache directory can be determined or written.
    Cache(String),
    /// A host tool is missing and could not be installed.
    ToolMissing {
        /// The command.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Why installing failed.
        why: String,
    },
    /// A command ran past its deadline and was killed.
    Timeout {
        /// What was running.
        what: String,
        /// The deadline.
        secs: u64,
        /// Where its output is.
        log: PathBuf,
    },
    /// A command failed.
    Command {
        /// What was running.
        what: String,
        /// How it ended, plus the interesting part of its output.
        detail: String,
    },
    /// The Debian mirror could not be reached or had no index.
    Registry(String),
    /// No kernel package >= 6.19 in the suites.
    NoKernel(String),
    /// The extracted packages lack something the lab needs.
    BadPackage(String),
    /// QEMU ran past the deadline.
    BootTimeout {
        /// The deadline.
        secs: u64,
        /// The last console lines.
        console_tail: String,
    },
    /// The guest stopped without sending its report.
    GuestCrashed {
        /// The last console lines.
        console_tail: String,
    },
    /// The guest reported an error.
    GuestFailed(String),
    /// The guest's report could not be read.
    Stream(crate::proto::StreamError),
    /// A local file operation failed.
    Io(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Cache(m) => write!(f, "cache directory: {m}; set NR_RANGES_CACHE to a writable directory"),
            LabError::ToolMissing { tool, package, why } => write!(
                f,
                "`{tool}` is not installed and could not be installed ({why}); run as root: \
                 apt-get update && apt-get install --no-install-recommends {package}"
            ),
            LabError::Timeout { what, secs, log } => {
                write!(f, "{what} did not finish within {secs} s and was killed; see {}", log.display())
            }
            LabError::Command { what, detail } => write!(f, "{what} failed: {detail}"),
            LabError::Registry(m) => write!(
                f,
                "the Debian mirror is not reachable: {m}; check network access to the mirror, or set \
                 NR_RANGES_DEBIAN_MIRROR to a reachable Debian mirror"
            ),
            LabError::NoKernel(m) => write!(f, "no usable kernel package: {m}"),
            LabError::BadPackage(m) => {
                write!(f, "{m}; remove the cache entry (or pass --refresh) and retry, or pick another --kernel")
            }
            LabError::BootTimeout { secs, console_tail } => write!(
                f,
                "the guest did not finish within {secs} s (QEMU killed); raise --timeout for large --cases, \
                 or read the console:\n{console_tail}"
            ),
            LabError::GuestCrashed { console_tail } => write!(
                f,
                "the guest stopped without sending its report (crash or kernel panic); console tail:\n{console_tail}"
            ),
            LabError::GuestFailed(m) => write!(f, "the guest could not run the batch: {m}"),
            LabError::Stream(e) => write!(f, "{e}"),
            LabError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for LabError {}

fn io_err(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |e| LabError::Io(format!("{what}: {e}"))
}

/// Prints a progress line on stderr (stdout is for results).
pub fn progress(msg: impl fmt::Display) {
    eprintln!("kernel-lab: {msg}");
}

/// The cache root: `$NR_RANGES_CACHE`, else `$XDG_CACHE_HOME/nr-ranges`, else
/// `~/.cache/nr-ranges` (shared with `scripts/fetch-kernel-header.sh`).
pub fn cache_root() -> Result<PathBuf, LabError> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = env("NR_RANGES_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("nr-ranges")))
        .or_else(|| env("HOME").map(|p| p.join(".cache/nr-ranges")))
        .ok_or_else(|| LabError::Cache("neither NR_RANGES_CACHE, XDG_CACHE_HOME nor HOME is set".into()))?;
    fs::create_dir_all(&root).map_err(|e| LabError::Cache(format!("cannot create {}: {e}", root.display())))?;
    Ok(root)
}

/// A child process that is killed (and reaped) when dropped: no early return,
/// panic or timeout can leave it behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits for `child` until `deadline`; `None` when it timed out (the caller
/// drops the guard, which kills it).
pub fn wait_until(child: &mut KillOnDrop, timeout: Duration) -> Result<Option<ExitStatus>, LabError> {
    let start = Instant::now();
    loop {
        match child.0.try_wait() {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) if start.elapsed() >= timeout => return Ok(None),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(LabError::Io(format!("waiting for a child process: {e}"))),
        }
    }
}

/// Runs `cmd` with stdout and stderr to `log`, killed after `secs`.
pub fn run_bounded(mut cmd: Command, what: &str, secs: u64, log: &Path) -> Result<(), LabError> {
    let out = fs::File::create(log).map_err(io_err(format!("create {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("dup log fd"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child =
        cmd.spawn().map_err(|e| LabError::Command { what: what.into(), detail: format!("cannot start: {e}") })?;
    let mut child = KillOnDrop(child);
    match wait_until(&mut child, Duration::from_secs(secs))? {
        None => Err(LabError::Timeout { what: what.into(), secs, log: log.into() }),
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(LabError::Command { what: what.into(), detail: format!("{s}: {}", log_reason(log)) }),
    }
}

/// The first error lines of a log (apt's `E:`/`Err:`), else its last line.
pub fn log_reason(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let errs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("Err:") || l.starts_with("error"))
        .take(3)
        .collect();
    if !errs.is_empty() {
        return errs.join(" | ");
    }
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_string()
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// Makes sure QEMU and xz exist, installing bookworm's packages when
/// missing (the initramfs is written by [`write_cpio`], and the guest is
/// its own /init, so neither cpio nor busybox is needed).
pub fn ensure_host_tools(work: &Path) -> Result<(), LabError> {
    let needed: &[(&str, &str)] = &[("qemu-system-x86_64", "qemu-system-x86"), ("xz", "xz-utils")];
    let missing: Vec<(&str, &str)> = needed.iter().copied().filter(|(t, _)| !in_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (tool, package) = missing[0];
    let packages: Vec<&str> = missing.iter().map(|m| m.1).collect();
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::ToolMissing { tool, package, why: "not root, so apt-get cannot install it".into() });
    }
    progress(format!("installing {} with apt (host tools)", packages.join(" ")));
    let log = work.join("apt-install.log");
    let mut up = Command::new("apt-get");
    up.args(["-q", "update"]);
    run_bounded(up, "apt-get update", 600, &log).map_err(|e| LabError::ToolMissing {
        tool,
        package,
        why: e.to_string(),
    })?;
    let mut inst = Command::new("apt-get");
    inst.args(["-q", "-y", "install", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_bounded(inst, "apt-get install", 900, &log).map_err(|e| LabError::ToolMissing {
        tool,
        package,
        why: e.to_string(),
    })?;
    match missing.iter().find(|(t, _)| !in_path(t)) {
        Some(&(tool, package)) => Err(LabError::ToolMissing {
            tool,
            package,
            why: "apt-get install succeeded but it is still missing".into(),
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Kernels.

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

/// The newest kernel >= 6.19 among `pkgs` matching `wanted` (if given).
pub fn pick_kernel<'a>(pkgs: &'a [KernelPkg], wanted: Option<&str>) -> Option<&'a KernelPkg> {
    pkgs.iter()
        .filter(|p| upstream_version(&p.abi).is_some_and(|(a, b, _)| (a, b) >= MIN_KERNEL))
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
/// is installed (the approach of `scripts/fetch-kernel-header.sh`).
pub struct PrivateApt {
    dir: PathBuf,
    mirror: String,
}

/// The Debian mirror the system's apt uses (so it is reachable), unless
/// `NR_RANGES_DEBIAN_MIRROR` says otherwise.
pub fn debian_mirror() -> String {
    if let Ok(m) = std::env::var("NR_RANGES_DEBIAN_MIRROR") {
        if !m.is_empty() {
            return m.trim_end_matches('/').to_string();
        }
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else { continue };
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let uri = match words.first() {
                Some(&"URIs:") => words.get(1).copied(),
                Some(&"deb") => words.iter().skip(1).find(|w| w.contains("://")).copied(),
                _ => None,
            };
            if let Some(u) = uri.filter(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return u.trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
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

    /// Every `linux-binary-*-cloud-amd64` in the index, with version and suite.
    pub fn kernels(&self) -> Result<Vec<KernelPkg>, LabError> {
        let names = self.query(&["pkgnames", "linux-binary-"])?;
        let pkgs: Vec<&str> = names
            .lines()
            .map(str::trim)
            .filter(|n| n.ends_with(&format!("-{FLAVOUR}")) && !n.contains("-dbg") && !n.contains("-unsigned"))
            .collect();
        if pkgs.is_empty() {
            return Ok(vec![]);
        }
        let mut args = vec!["madison"];
        args.extend(pkgs.iter().copied());
        Ok(parse_madison(&self.query(&args)?))
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
            let abi = pkg.strip_prefix("linux-binary-")?;
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
pub fn resolve_kernel(root: &Path, req: &KernelRequest) -> Result<Kernel, LabError> {
    let cached = cached_kernels(root);
    if !req.refresh {
        let pkgs: Vec<KernelPkg> = cached.iter().map(|c| c.0.clone()).collect();
        if let Some(p) = pick_kernel(&pkgs, req.wanted.as_deref()) {
            let dir = cached.iter().find(|c| &c.0 == p).map(|c| c.1.clone()).unwrap_or_default();
            return Ok(Kernel { pkg: p.clone(), dir, note: None });
        }
    }
    let mirror = debian_mirror();
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
            return Ok(Kernel { pkg: p, dir, note });
        }
    }
    let mut pkgs = vec![
        format!("linux-binary-{}={}", pick.abi, pick.version),
        format!("linux-modules-{}={}", pick.abi, pick.version),
    ];
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
    decompress_modules(&rootfs.join(format!("usr/lib/modules/{}", pick.abi)), &stage.0.join("vfio-modules"))?;
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
    Ok(Kernel { pkg: pick.clone(), dir, note })
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

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory `parent/prefix.<pid>.<n>`.
pub fn tempdir(parent: &Path, prefix: &str) -> Result<TempDir, LabError> {
    fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
    for n in 0..1000 {
        let p = parent.join(format!("{prefix}.{}.{n}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => {
                // apt's download method may drop privileges; let it reach in.
                let _ = fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755));
                return Ok(TempDir(p));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::Io(format!("create {}: {e}", p.display()))),
        }
    }
    Err(LabError::Io(format!("cannot create a temporary directory in {}", parent.display())))
}

// ---------------------------------------------------------------------------
// The guest binary and the initramfs.

/// Builds `nr-ranges-guest` statically for [`GUEST_TARGET`]; returns its path.
pub fn build_guest(work: &Path) -> Result<PathBuf, LabError> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    rustflags.push_str(" -C target-feature=+crt-static -C strip=debuginfo");
    let mut c = Command::new(cargo);
    c.args(["build", "--release", "-p", "kernel-lab", "--bin", "nr-ranges-guest", "--target", GUEST_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(&workspace)
        .env("RUSTFLAGS", rustflags.trim())
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let log = work.join("guest-build.log");
    let json = work.join("guest-build.json");
    let out = fs::File::create(&json).map_err(io_err("create build log"))?;
    let err = fs::File::create(&log).map_err(io_err("create build log"))?;
    c.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = KillOnDrop(
        c.spawn().map_err(|e| LabError::Command { what: "cargo build (guest)".into(), detail: e.to_string() })?,
    );
    match wait_until(&mut child, Duration::from_secs(1200))? {
        None => return Err(LabError::Timeout { what: "cargo build (guest)".into(), secs: 1200, log }),
        Some(s) if !s.success() => {
            return Err(LabError::Command {
                what: "cargo build of the static guest".into(),
                detail: format!("{s}: {} (full log: {})", log_reason(&log), log.display()),
            })
        }
        Some(_) => {}
    }
    let text = fs::read_to_string(&json).map_err(io_err("read build output"))?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "nr-ranges-guest")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| LabError::Command {
            what: "cargo build (guest)".into(),
            detail: "no executable reported".into(),
        })
}

/// One initramfs entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpioEntry {
    /// A directory.
    Dir(String),
    /// A file with mode bits and contents.
    File(String, u32, Vec<u8>),
    /// A character device node (major, minor).
    CharDev(String, u32, u32),
}

/// Writes a `newc` cpio archive (what the kernel unpacks as initramfs,
/// uncompressed: compression would only cost boot time under TCG).
pub fn write_cpio(entries: &[CpioEntry], out: &mut impl Write) -> std::io::Result<()> {
    fn pad(out: &mut impl Write, len: usize) -> std::io::Result<()> {
        out.write_all(&[0u8; 3][..(4 - len % 4) % 4])
    }
    let header = |out: &mut dyn Write, ino: u32, name: &str, mode: u32, size: usize, rdev: (u32, u32)| {
        let namesize = name.len() + 1;
        write!(
            out,
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 1, 0, 0, 0, rdev.0, rdev.1, 0
        )?;
        out.write_all(name.as_bytes())?;
        out.write_all(&[0])?;
        Ok::<_, std::io::Error>(110 + namesize)
    };
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            CpioEntry::Dir(n) => {
                let h = header(out, ino, n, 0o040755, 0, (0, 0))?;
                pad(out, h)?;
            }
            CpioEntry::File(n, mode, data) => {
                let h = header(out, ino, n, 0o100000 | mode, data.len(), (0, 0))?;
                pad(out, h)?;
                out.write_all(data)?;
                pad(out, data.len())?;
            }
            CpioEntry::CharDev(n, major, minor) => {
                let h = header(out, ino, n, 0o020600, 0, (*major, *minor))?;
                pad(out, h)?;
            }
        }
    }
    let h = header(out, 0, "TRAILER!!!", 0, 0, (0, 0))?;
    pad(out, h)
}

/// The initramfs: the guest as `/init`, the decompressed vfio modules, and
/// `/dev/console` so that init has a console before devtmpfs is mounted.
pub fn build_initramfs(kernel: &Kernel, guest: &Path, out: &Path) -> Result<(), LabError> {
    build_initramfs_with(kernel, guest, &[], out)
}

/// [`build_initramfs`] plus `extra` files (name under `lib/modules/`, bytes).
pub fn build_initramfs_with(
    kernel: &Kernel,
    guest: &Path,
    extra: &[(String, Vec<u8>)],
    out: &Path,
) -> Result<(), LabError> {
    let read = |p: &Path| fs::read(p).map_err(io_err(format!("read {}", p.display())));
    let mut entries = vec![
        CpioEntry::Dir("dev".into()),
        CpioEntry::CharDev("dev/console".into(), 5, 1),
        CpioEntry::Dir("proc".into()),
        CpioEntry::Dir("sys".into()),
        CpioEntry::Dir("lib".into()),
        CpioEntry::Dir("lib/modules".into()),
        CpioEntry::File("init".into(), 0o755, read(guest)?),
    ];
    for (name, _) in GUEST_MODULES {
        entries.push(CpioEntry::File(format!("lib/modules/{name}.ko"), 0o644, read(&kernel.module(name))?));
    }
    for (name, bytes) in extra {
        entries.push(CpioEntry::File(format!("lib/modules/{name}"), 0o644, bytes.clone()));
    }
    let f = fs::File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    let mut w = std::io::BufWriter::new(f);
    write_cpio(&entries, &mut w).and_then(|()| w.flush()).map_err(io_err(format!("write {}", out.display())))
}

// ---------------------------------------------------------------------------
// QEMU.

/// What a boot needs.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// Cases for the guest.
    pub cases: u64,
    /// Seed for the guest.
    pub seed: u64,
    /// Run the scenarios after the batch.
    pub scenarios: bool,
    /// Deadline for the whole boot.
    pub timeout: Duration,
    /// Directory for the console log, the output port file and ivshmem's
    /// backing file.
    pub run_dir: PathBuf,
}

/// The QEMU command line.
pub fn qemu_command(spec: &BootSpec) -> Command {
    let d = &spec.run_dir;
    let append = format!(
        "console=ttyS0 intel_iommu=on panic=-1 quiet loglevel=4 nrlab.cases={} nrlab.seed={} nrlab.scenarios={}",
        spec.cases, spec.seed, spec.scenarios as u8
    );
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "1", "-m", "1G"])
        .args(["-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", d.join("console.log").display()))
        .arg("-kernel")
        .arg(&spec.vmlinuz)
        .arg("-initrd")
        .arg(&spec.initramfs)
        .args(["-append", &append])
        .args(["-device", "intel-iommu"])
        .arg("-object")
        .arg(format!("memory-backend-file,size=16M,share=on,mem-path={},id=hostmem", d.join("ivshmem").display()))
        .args(["-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"])
        .args(["-device", "ivshmem-plain,memdev=hostmem,bus=rp1"])
        .args(["-device", "pci-testdev", "-device", "edu", "-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!("file,id=vout,path={}", d.join("guest.out").display()))
        .args(["-device", &format!("virtserialport,chardev=vout,name={OUTPUT_PORT_NAME}")]);
    c
}

/// The last `lines` lines of a run's console log, for error messages.
pub fn console_tail(run_dir: &Path, lines: usize) -> String {
    let text = fs::read_to_string(run_dir.join("console.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "  (console is empty: the kernel did not start)".into()
    } else {
        tail.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
    }
}

struct BootSpecView<'a> {
    run_dir: &'a Path,
    timeout: Duration,
}

/// Boots, waits for the guest to power off (killing QEMU at the deadline),
/// and returns the guest's stream.
pub fn boot(spec: &BootSpec) -> Result<Vec<u8>, LabError> {
    boot_with(qemu_command(spec), &spec.run_dir, spec.timeout)
}

/// Runs the QEMU command `cmd` (console in `run_dir/console.log`, output
/// port in `run_dir/guest.out`) until it powers off or `timeout` passes.
pub fn boot_with(mut cmd: Command, run_dir: &Path, timeout: Duration) -> Result<Vec<u8>, LabError> {
    let spec = BootSpecView { run_dir, timeout };
    let qlog = spec.run_dir.join("qemu.log");
    let err = fs::File::create(&qlog).map_err(io_err("create qemu.log"))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
    let child = cmd.spawn().map_err(|e| LabError::Command {
        what: "qemu-system-x86_64".into(),
        detail: format!("cannot start: {e}; install qemu-system-x86"),
    })?;
    let mut child = KillOnDrop(child);
    let status = wait_until(&mut child, spec.timeout)?;
    drop(child);
    let Some(status) = status else {
        return Err(LabError::BootTimeout {
            secs: spec.timeout.as_secs(),
            console_tail: console_tail(spec.run_dir, 15),
        });
    };
    if !status.success() {
        return Err(LabError::Command {
            what: "qemu-system-x86_64".into(),
            detail: format!("{status}: {}", log_reason(&qlog)),
        });
    }
    let out = fs::read(spec.run_dir.join("guest.out")).unwrap_or_default();
    if out.is_empty() {
        return Err(LabError::GuestCrashed { console_tail: console_tail(spec.run_dir, 15) });
    }
    Ok(out)
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
            " linux-binary-7.2.13+deb14-cloud-amd64 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages
linux-binary-7.3.2+bpo-cloud-amd64 | 7.3.2-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-binary-6.12.9+deb13-cloud-amd64 | 6.12.9-1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
garbage line
";
        let pkgs = parse_madison(text);
        assert_eq!(pkgs.len(), 3);
        assert_eq!(
            pkgs[0],
            KernelPkg { abi: "7.2.13+deb14-cloud-amd64".into(), version: "7.2.13-1".into(), suite: "sid".into() }
        );
        assert_eq!(pkgs[1].suite, "trixie-backports");
        assert_eq!(pick_kernel(&pkgs, None).unwrap().abi, "7.3.2+bpo-cloud-amd64");
        assert_eq!(pick_kernel(&pkgs, Some("7.2")).unwrap().version, "7.2.13-1");
        assert!(pick_kernel(&pkgs, Some("6.12")).is_none(), "older than 6.19");
        assert!(pick_kernel(&pkgs, Some("8.0")).is_none());
    }

    #[test]
    fn cpio_is_newc() {
        let entries = vec![
            CpioEntry::Dir("dev".into()),
            CpioEntry::CharDev("dev/console".into(), 5, 1),
            CpioEntry::File("init".into(), 0o755, b"hello".to_vec()),
        ];
        let mut out = Vec::new();
        write_cpio(&entries, &mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        // Walk the archive back.
        let mut pos = 0;
        let mut seen = vec![];
        loop {
            let h = std::str::from_utf8(&out[pos..pos + 110]).unwrap();
            assert_eq!(&h[..6], "070701");
            let field = |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6) as usize, field(9), field(10), field(11) as usize);
            let name = std::str::from_utf8(&out[pos + 110..pos + 110 + namesize - 1]).unwrap().to_string();
            pos += (110 + namesize).div_ceil(4) * 4;
            let data = out[pos..pos + size].to_vec();
            pos += size.div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                break;
            }
            seen.push((name, mode, data, rmaj, rmin));
        }
        assert_eq!(pos, out.len());
        assert_eq!(seen[0], ("dev".into(), 0o040755, vec![], 0, 0));
        assert_eq!(seen[1], ("dev/console".into(), 0o020600, vec![], 5, 1));
        assert_eq!(seen[2], ("init".into(), 0o100755, b"hello".to_vec(), 0, 0));
    }

    #[test]
    fn killed_on_timeout_and_drop() {
        let d = tempdir(&std::env::temp_dir(), "kernel-lab-test").unwrap();
        let mut c = Command::new("sleep");
        c.arg("30");
        let t = Instant::now();
        let e = run_bounded(c, "sleep", 1, &d.0.join("log")).unwrap_err();
        assert!(matches!(e, LabError::Timeout { secs: 1, .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut c = Command::new("false");
        c.stdout(Stdio::null());
        assert!(matches!(run_bounded(c, "false", 5, &d.0.join("log")), Err(LabError::Command { .. })));
    }

    #[test]
    fn qemu_command_has_the_lab_devices() {
        let spec = BootSpec {
            vmlinuz: "/k".into(),
            initramfs: "/i".into(),
            cases: 5,
            seed: 9,
            scenarios: true,
            timeout: Duration::from_secs(1),
            run_dir: "/r".into(),
        };
        let args: Vec<String> = qemu_command(&spec).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let line = args.join(" ");
        for want in
            ["-accel tcg", "-machine q35", "-device intel-iommu", "ivshmem-plain", "pci-testdev", "edu", "name=nrlab"]
        {
            assert!(line.contains(want), "{want} missing from {line}");
        }
        assert!(line.contains("intel_iommu=on") && line.contains("nrlab.cases=5 nrlab.seed=9 nrlab.scenarios=1"));
    }
}
