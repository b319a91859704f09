//! The kernel lab: real Debian kernels as the oracle for the validator.
//!
//! - [`conformance`]: the conformance lab: [`conformance::gen`], request
//!   generators biased to the edges, and [`conformance::diff`], predictions
//!   with `validator::validate(.., Policy::Linux)` and disagreement classes;
//!   [`conformance::replay`], explicit inputs (fuzz corpora) through the
//!   same diff.
//! - [`proto`]: what the guest sends back, and sysfs parsing (both labs).
//! - [`host`]: the lab's errors, deadline-bounded child processes, host
//!   tools, temporary directories, the cache root.
//! - [`debian`]: Debian's packages (mirror from the machine's apt
//!   configuration, private apt, kernel and header cache).
//! - [`initramfs`]: the static guest and the initramfs.
//! - [`lab_kernel`]: lab kernels built from Debian's 7.2.13 source, as
//!   shipped and with `kernel-patches/` (`--kernel lab-shipped`, `lab-patched`).
//! - [`qemu`]: one QEMU command builder; each lab adds its devices.
//! - [`importer`]: the importer lab (a real dma-buf importer module on edu,
//!   per QEMU topology, against kmod-shim): [`importer::host`] builds and
//!   compares, [`importer::abi`] is its ioctl ABI (`importer/nrlab_importer.h`);
//!   [`revocation`]: the revocation sequence, run on the guest and on
//!   kmod-shim through one trait.
//! - [`fault`]: the fault sweep (fail-nth and kprobe overrides inside the
//!   export and the importer's map, on lab kernels) against kmod-shim.
//! - [`framebuffer`]: scattered framebuffers placed by the kernel's
//!   gpu_buddy, written through the vfio mmap, shared as one dma-buf (and
//!   as one per range) and read back by edu, per map path, against kmod-shim.
//! - [`iommufd`]: the iommufd lab (the vfio cdev bound to an iommufd,
//!   dma-bufs mapped with `IOMMU_IOAS_MAP_FILE`, QEMU's requests), its cases
//!   run on the guest and on kmod-shim's iommufd model through one trait.
//! - [`patches`]: the kernel patch series against Debian's 7.2.13 source
//!   (applies, checkpatch-clean).
//! - [`matrix`]: `kernel-lab matrix`'s report: every part on every kernel.
//! - [`sanitizer`]: which kernel log lines are KASAN, kmemleak, lockdep,
//!   DMA-API, WARN or BUG reports.
//! - [`report`]: the `--report` JSON of both labs, one schema, read back
//!   by the RFC generator.
//! - [`selftest`]: the kselftest of `kernel-patches/0007`, built from the
//!   lab-patched tree and run per kernel, its TAP output read by
//!   [`selftest::tap`], and the deliberate breakages it must catch.

pub mod buddy;
pub mod conformance;
pub mod debian;
pub mod fault;
pub mod framebuffer;
pub mod host;
pub mod importer;
pub mod initramfs;
pub mod iommufd;
pub mod lab_kernel;
pub mod matrix;
pub mod patches;
pub mod proto;
pub mod qemu;
pub mod report;
pub mod revocation;
pub mod sanitizer;
pub mod selftest;

/// The vfio modules in load order, with their parameters. Without
/// modules.dep there is no modprobe: the order is the dependency order.
/// `allow_unsafe_interrupts`: QEMU's intel-iommu without interrupt remapping.
pub const GUEST_MODULES: &[(&str, &str)] = &[
    ("irqbypass", ""),
    ("vfio", ""),
    ("vfio_iommu_type1", "allow_unsafe_interrupts=1"),
    ("vfio-pci-core", ""),
    ("vfio-pci", ""),
];

/// Where each module lives under `/lib/modules/<abi>/kernel/`.
pub const GUEST_MODULE_PATHS: &[&str] = &[
    "virt/lib/irqbypass",
    "drivers/vfio/vfio",
    "drivers/vfio/vfio_iommu_type1",
    "drivers/vfio/pci/vfio-pci-core",
    "drivers/vfio/pci/vfio-pci",
];

/// The lab's devices in generator order: name, sysfs vendor, sysfs device.
pub const LAB_DEVICES: &[(&str, &str, &str)] =
    &[("ivshmem-plain", "0x1af4", "0x1110"), ("pci-testdev", "0x1b36", "0x0005"), ("edu", "0x1234", "0x11e8")];

/// The virtio-serial port name the guest writes its report to.
pub const OUTPUT_PORT_NAME: &str = "nrlab";
