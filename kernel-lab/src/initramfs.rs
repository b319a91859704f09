//! What QEMU boots besides the kernel: the static guest agent
//! (`nr-ranges-guest`, built for [`GUEST_TARGET`]) and the `newc` initramfs
//! that holds it as `/init` with the vfio modules.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::debian::Kernel;
use crate::host::{io_err, log_reason, wait_until, KillOnDrop, LabError};
use crate::GUEST_MODULES;

/// The guest's target: the host's own (no other target is installable),
/// statically linked so that the initramfs needs no libc.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

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
    let mut entries = base_entries(kernel, guest, None)?;
    for (name, bytes) in extra {
        entries.push(CpioEntry::File(format!("lib/modules/{name}"), 0o644, bytes.clone()));
    }
    write_initramfs(&entries, out)
}

/// What every lab initramfs holds: `/dev/console` (init has a console
/// before devtmpfs is mounted), the mount points, `init` as `/init`, and
/// the kernel's vfio modules under `lib/modules/`, `vfio-pci-core.ko`
/// replaced by `core_override` when given (the selftest's breakages).
pub fn base_entries(kernel: &Kernel, init: &Path, core_override: Option<&Path>) -> Result<Vec<CpioEntry>, LabError> {
    let read = |p: &Path| fs::read(p).map_err(io_err(format!("read {}", p.display())));
    let mut entries = vec![
        CpioEntry::Dir("dev".into()),
        CpioEntry::CharDev("dev/console".into(), 5, 1),
        CpioEntry::Dir("proc".into()),
        CpioEntry::Dir("sys".into()),
        CpioEntry::Dir("tmp".into()),
        CpioEntry::Dir("lib".into()),
        CpioEntry::Dir("lib/modules".into()),
        CpioEntry::File("init".into(), 0o755, read(init)?),
    ];
    for (name, _) in GUEST_MODULES {
        let path = match core_override {
            Some(p) if *name == "vfio-pci-core" => p.to_path_buf(),
            _ => kernel.module(name),
        };
        entries.push(CpioEntry::File(format!("lib/modules/{name}.ko"), 0o644, read(&path)?));
    }
    Ok(entries)
}

/// Writes `entries` as a newc archive to `out`.
pub fn write_initramfs(entries: &[CpioEntry], out: &Path) -> Result<(), LabError> {
    let f = fs::File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    let mut w = std::io::BufWriter::new(f);
    write_cpio(entries, &mut w).and_then(|()| w.flush()).map_err(io_err(format!("write {}", out.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
