//! The host side's common ground: the lab's errors, child processes under a
//! deadline that are always killed, host tools, temporary directories and
//! the cache root. Debian packages live in [`crate::debian`], the guest and
//! initramfs in [`crate::initramfs`], QEMU in [`crate::qemu`].

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    /// Neither `NR_RANGES_DEBIAN_MIRROR` nor the machine's apt sources name
    /// a Debian archive.
    NoMirror,
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
            LabError::NoMirror => write!(
                f,
                "no Debian archive (a URI ending in /debian) in /etc/apt/sources.list or /etc/apt/sources.list.d; \
                 set NR_RANGES_DEBIAN_MIRROR to a Debian mirror's URL"
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

pub(crate) fn io_err(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |e| LabError::Io(format!("{what}: {e}"))
}

/// Prints a progress line on stderr (stdout is for results).
pub fn progress(msg: impl fmt::Display) {
    eprintln!("kernel-lab: {msg}");
}

/// The cache root: `$NR_RANGES_CACHE`, else `$XDG_CACHE_HOME/nr-ranges`, else
/// `~/.cache/nr-ranges` (kernels and `linux-libc-dev` headers).
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

/// Whether `tool` is a file in one of `$PATH`'s directories, or, for an
/// absolute path (a header that has no command), whether that file exists.
pub fn present(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// Makes sure QEMU and xz exist, installing bookworm's packages when
/// missing (the initramfs is written by [`crate::initramfs::write_cpio`], and the guest is
/// its own /init, so neither cpio nor busybox is needed).
pub fn ensure_host_tools(work: &Path) -> Result<(), LabError> {
    ensure_tools(&[("qemu-system-x86_64", "qemu-system-x86"), ("xz", "xz-utils")], work)
}

/// Makes sure each (command or absolute file, Debian package) is present,
/// installing the missing packages with apt when running as root.
pub fn ensure_tools(needed: &[(&'static str, &'static str)], work: &Path) -> Result<(), LabError> {
    let missing: Vec<(&str, &str)> = needed.iter().copied().filter(|(t, _)| !present(t)).collect();
    let Some(&(tool, package)) = missing.first() else {
        return Ok(());
    };
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
    match missing.iter().find(|(t, _)| !present(t)) {
        Some(&(tool, package)) => Err(LabError::ToolMissing {
            tool,
            package,
            why: "apt-get install succeeded but it is still missing".into(),
        }),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
