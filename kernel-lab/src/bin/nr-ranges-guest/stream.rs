//! The report to the host: one JSON line and the answers, over the
//! virtio-serial port named `OUTPUT_PORT_NAME`.

use crate::*;

pub(crate) fn send(report: &GuestReport, results: &[u8]) -> GResult<()> {
    let port = find_port()?;
    let mut out = fs::OpenOptions::new().write(true).open(&port).map_err(|e| format!("open {port}: {e}"))?;
    let mut line = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    line.push(b'\n');
    out.write_all(&line).map_err(|e| format!("write {port}: {e}"))?;
    out.write_all(results).map_err(|e| format!("write {port}: {e}"))?;
    out.flush().map_err(|e| format!("flush {port}: {e}"))
}

/// The end of every mode: `report` as one JSON line on the port, the disks
/// synced, power off (returning from `/init` would panic the kernel).
pub(crate) fn send_report_and_power_off<T: serde::Serialize>(report: &T) {
    let line = serde_json::to_vec(report).unwrap_or_default();
    if let Err(e) = send_raw(&line) {
        println!("nr-ranges-guest: cannot send the report: {e}");
    }
    power_off();
}

/// Syncs and powers the machine off.
pub(crate) fn power_off() {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

pub(crate) fn send_raw(bytes: &[u8]) -> GResult<()> {
    let port = find_port()?;
    let mut out = fs::OpenOptions::new().write(true).open(&port).map_err(|e| format!("open {port}: {e}"))?;
    out.write_all(bytes).and_then(|()| out.write_all(b"\n")).map_err(|e| format!("write {port}: {e}"))?;
    out.flush().map_err(|e| format!("flush {port}: {e}"))
}

/// `/dev/vportNpM` whose port name is [`OUTPUT_PORT_NAME`] (no udev here to
/// make the /dev/virtio-ports/ symlinks).
pub(crate) fn find_port() -> GResult<String> {
    let dir = fs::read_dir("/sys/class/virtio-ports").map_err(|e| format!("no virtio-ports in sysfs: {e}"))?;
    for e in dir.flatten() {
        let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == OUTPUT_PORT_NAME {
            return Ok(format!("/dev/{}", e.file_name().to_string_lossy()));
        }
    }
    Err(format!("no virtio-serial port named {OUTPUT_PORT_NAME}"))
}
