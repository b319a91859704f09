//! QEMU: one command builder for both labs (q35 under TCG with
//! intel-iommu, the console and the guest's virtio-serial port), to which a
//! lab adds its devices, and the boot under a deadline that is always killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::host::{io_err, log_reason, wait_until, KillOnDrop, LabError};
use crate::OUTPUT_PORT_NAME;

/// A QEMU command line under construction: the machine both labs share,
/// to which a lab adds kernel command-line words and devices.
///
/// The machine: `qemu-system-x86_64` under TCG, q35, one CPU, 1 GiB, no
/// default devices, the serial console in `run_dir/console.log`,
/// `-device intel-iommu`, a 16 MiB shared memory backend `hostmem`
/// (`run_dir/ivshmem`) for ivshmem-plain, then the lab's devices, then a
/// virtio-serial port named [`OUTPUT_PORT_NAME`] into `run_dir/guest.out`.
#[derive(Debug, Clone)]
pub struct Qemu {
    vmlinuz: PathBuf,
    initramfs: PathBuf,
    run_dir: PathBuf,
    cpu: String,
    append: Vec<String>,
    ivshmem_size: String,
    devices: Vec<String>,
}

impl Qemu {
    /// The lab machine booting `vmlinuz` with `initramfs`, its files in
    /// `run_dir`; `-cpu max`, no devices yet.
    pub fn new(vmlinuz: &Path, initramfs: &Path, run_dir: &Path) -> Self {
        Self {
            vmlinuz: vmlinuz.into(),
            initramfs: initramfs.into(),
            run_dir: run_dir.into(),
            cpu: "max".into(),
            append: ["console=ttyS0", "panic=-1", "quiet", "loglevel=4"].map(String::from).to_vec(),
            ivshmem_size: "16M".into(),
            devices: Vec::new(),
        }
    }

    /// `-cpu` (the p2pdma host-bridge whitelist depends on it).
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.into();
        self
    }

    /// Appends whitespace-separated words to the kernel command line.
    pub fn append(mut self, words: &str) -> Self {
        self.append.extend(words.split_whitespace().map(String::from));
        self
    }

    /// The size of `hostmem` (ivshmem-plain's BAR2), as QEMU spells it.
    pub fn ivshmem_size(mut self, size: &str) -> Self {
        self.ivshmem_size = size.into();
        self
    }

    /// Adds `-device spec`.
    pub fn device(mut self, spec: impl Into<String>) -> Self {
        self.devices.push(spec.into());
        self
    }

    /// The directory of the console log and the guest's output.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The command.
    pub fn command(&self) -> Command {
        let d = &self.run_dir;
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-machine", "q35", "-cpu", &self.cpu, "-smp", "1", "-m", "1G"])
            .args(["-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", d.join("console.log").display()))
            .arg("-kernel")
            .arg(&self.vmlinuz)
            .arg("-initrd")
            .arg(&self.initramfs)
            .args(["-append", &self.append.join(" ")])
            .args(["-device", "intel-iommu"])
            .arg("-object")
            .arg(format!(
                "memory-backend-file,size={},share=on,mem-path={},id=hostmem",
                self.ivshmem_size,
                d.join("ivshmem").display()
            ));
        for dev in &self.devices {
            c.arg("-device").arg(dev);
        }
        c.args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!("file,id=vout,path={}", d.join("guest.out").display()))
            .args(["-device", &format!("virtserialport,chardev=vout,name={OUTPUT_PORT_NAME}")]);
        c
    }
}

/// What a conformance boot needs.
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

/// The conformance lab's machine: ivshmem-plain behind a root port,
/// pci-testdev and edu on the root complex.
pub fn conformance_machine(spec: &BootSpec) -> Qemu {
    Qemu::new(&spec.vmlinuz, &spec.initramfs, &spec.run_dir)
        .append(&format!(
            "intel_iommu=on nrlab.cases={} nrlab.seed={} nrlab.scenarios={}",
            spec.cases, spec.seed, spec.scenarios as u8
        ))
        .device("pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1")
        .device("ivshmem-plain,memdev=hostmem,bus=rp1")
        .device("pci-testdev")
        .device("edu")
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

/// Boots the conformance machine, waits for the guest to power off
/// (killing QEMU at the deadline), and returns the guest's stream.
pub fn boot(spec: &BootSpec) -> Result<Vec<u8>, LabError> {
    boot_with(&conformance_machine(spec), spec.timeout)
}

/// Runs `machine` until it powers off or `timeout` passes; returns what the
/// guest wrote to its output port.
pub fn boot_with(machine: &Qemu, timeout: Duration) -> Result<Vec<u8>, LabError> {
    let run_dir = machine.run_dir();
    let qlog = run_dir.join("qemu.log");
    let err = fs::File::create(&qlog).map_err(io_err("create qemu.log"))?;
    let mut cmd = machine.command();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
    let child = cmd.spawn().map_err(|e| LabError::Command {
        what: "qemu-system-x86_64".into(),
        detail: format!("cannot start: {e}; install qemu-system-x86"),
    })?;
    let mut child = KillOnDrop(child);
    let status = wait_until(&mut child, timeout)?;
    drop(child);
    let Some(status) = status else {
        return Err(LabError::BootTimeout { secs: timeout.as_secs(), console_tail: console_tail(run_dir, 15) });
    };
    if !status.success() {
        return Err(LabError::Command {
            what: "qemu-system-x86_64".into(),
            detail: format!("{status}: {}", log_reason(&qlog)),
        });
    }
    let out = fs::read(run_dir.join("guest.out")).unwrap_or_default();
    if out.is_empty() {
        return Err(LabError::GuestCrashed { console_tail: console_tail(run_dir, 15) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let args: Vec<String> =
            conformance_machine(&spec).command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let line = args.join(" ");
        for want in
            ["-accel tcg", "-machine q35", "-device intel-iommu", "ivshmem-plain", "pci-testdev", "edu", "name=nrlab"]
        {
            assert!(line.contains(want), "{want} missing from {line}");
        }
        assert!(line.contains("intel_iommu=on") && line.contains("nrlab.cases=5 nrlab.seed=9 nrlab.scenarios=1"));
        // QEMU numbers the devices in this order; the guest's device
        // indices and the cases' meaning follow it.
        let want = "-accel tcg -machine q35 -cpu max -smp 1 -m 1G -nodefaults -display none -no-reboot -monitor none \
                    -serial file:/r/console.log -kernel /k -initrd /i -append console=ttyS0 panic=-1 quiet loglevel=4 \
                    intel_iommu=on nrlab.cases=5 nrlab.seed=9 nrlab.scenarios=1 -device intel-iommu -object \
                    memory-backend-file,size=16M,share=on,mem-path=/r/ivshmem,id=hostmem -device \
                    pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 -device ivshmem-plain,memdev=hostmem,bus=rp1 \
                    -device pci-testdev -device edu -device virtio-serial-pci -chardev file,id=vout,path=/r/guest.out \
                    -device virtserialport,chardev=vout,name=nrlab";
        assert_eq!(line, want.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}

/// Whether the console shows a kernel oops before the guest agent ran.
pub fn early_oops(run_dir: &Path) -> bool {
    let text = fs::read_to_string(run_dir.join("console.log")).unwrap_or_default();
    let before = text.split("nr-ranges-guest").next().unwrap_or("");
    ["Oops", "BUG:", "Kernel panic", "general protection fault"].iter().any(|k| before.contains(k))
}

/// What [`boot_retrying`] gave.
#[derive(Debug)]
pub struct Boot {
    /// What the guest wrote to its output port, or why it did not.
    pub stream: Result<Vec<u8>, LabError>,
    /// Booted twice because the first boot died before the guest agent ran.
    pub retried_after_oops: bool,
    /// Seconds, both boots included.
    pub seconds: f64,
}

/// Boots the machine `machine_for(run_dir)` builds, in a fresh directory
/// under `parent`. TCG on a loaded host sometimes panics the kernel before
/// `/init` runs (seen in `setup_IO_APIC()`: `panic_if_irq_remap()` when the
/// timer check times out); that says nothing about the lab, so such a boot
/// is retried once. The run directory is kept as
/// `$TMPDIR/nr-ranges-<lab>-<dir>.kept` (without ivshmem's backing file)
/// when `keep` or when the boot failed.
pub fn boot_retrying(
    parent: &Path,
    lab: &str,
    timeout: Duration,
    keep: bool,
    machine_for: impl Fn(&Path) -> Qemu,
) -> Result<Boot, LabError> {
    let t = std::time::Instant::now();
    let mut retried_after_oops = false;
    loop {
        let dir = crate::host::tempdir(parent, lab)?;
        let stream = boot_with(&machine_for(&dir.0), timeout);
        let oops = early_oops(&dir.0);
        if keep || stream.is_err() {
            // Out of `parent`, which may go when the command ends.
            let _ = fs::remove_file(dir.0.join("ivshmem"));
            let name = dir.0.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let kept = std::env::temp_dir().join(format!("nr-ranges-{lab}-{name}.kept"));
            if fs::rename(&dir.0, &kept).is_ok() {
                crate::host::progress(format!("run directory kept: {}", kept.display()));
            }
        }
        if stream.is_err() && oops && !retried_after_oops {
            crate::host::progress("early kernel oops under TCG, before the guest agent ran; retrying once");
            retried_after_oops = true;
            continue;
        }
        return Ok(Boot { stream, retried_after_oops, seconds: t.elapsed().as_secs_f64() });
    }
}

/// The guest's report: the first line of its output stream, as JSON. The
/// error names what could not be read.
pub fn guest_report<T: serde::de::DeserializeOwned>(stream: &[u8]) -> Result<T, String> {
    let line = stream.split(|&b| b == b'\n').next().unwrap_or(&[]);
    serde_json::from_slice(line).map_err(|e| format!("cannot read the guest's report: {e}"))
}
