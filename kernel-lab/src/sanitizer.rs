//! What the kernel's sanitizers said during a lab run: the kernel log lines
//! of KASAN, kmemleak, lockdep, DMA-API debugging, `WARN()` and `BUG()`,
//! read by the guest from `/dev/kmsg` after a kmemleak scan
//! (`/sys/kernel/debug/kmemleak`, on kernels built with it: the lab
//! kernels). Debian's kernels have none of KASAN, kmemleak or lockdep, so
//! there only WARN/BUG lines can appear.

/// The message prefixes and fragments that make a kernel log line a
/// sanitizer report (matched case-sensitively, as the kernel prints them).
pub const REPORT_MARKERS: &[&str] = &[
    "BUG: KASAN",
    "KASAN:",
    "kmemleak: ",
    "unreferenced object",
    "WARNING: ",
    "BUG: ",
    "Oops",
    "general protection fault",
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "DEBUG_LOCKS_WARN_ON",
    "DMA-API: ",
    "UBSAN:",
    "kernel BUG at",
    "refcount_t: ",
    "list_add corruption",
    "list_del corruption",
];

/// Lines that contain a marker but are not a report: kmemleak and the
/// DMA-API debug code announce themselves at boot.
const BENIGN: &[&str] = &[
    "kmemleak: Kernel memory leak detector initialized",
    "kmemleak: Automatic memory scanning thread started",
    "DMA-API: preallocated",
    "DMA-API: debugging enabled by kernel config",
    "kmemleak: 0 new suspected memory leaks",
    "RCU lockdep checking is enabled",
];

/// Whether a kernel log message (without the `/dev/kmsg` prefix) is a
/// sanitizer report.
pub fn is_report(msg: &str) -> bool {
    REPORT_MARKERS.iter().any(|m| msg.contains(m)) && !BENIGN.iter().any(|b| msg.contains(b))
}

/// The kmemleak scan's result: `unreferenced object` blocks from
/// `/sys/kernel/debug/kmemleak`, one line per object.
pub fn kmemleak_objects(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.starts_with("unreferenced object")).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_from_the_hand_runs_are_recognised() {
        // Lines as the 7.2.13 lab build printed them (kernel-lab/lab-kernel-runs/).
        for l in [
            "DMA-API: nrlab_importer 0000:00:02.0: device driver tries to free DMA memory it has not allocated \
             [device address=0x0000000000000000] [size=0 bytes]",
            "WARNING: kernel/dma/debug.c:1004 at check_unmap+0x967/0x2d90, CPU#0: init/1",
            "BUG: KASAN: slab-use-after-free in vfio_pci_dma_buf_release+0x2c/0x90",
            "kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
            "WARNING: possible circular locking dependency detected",
        ] {
            assert!(is_report(l), "{l}");
        }
        for l in [
            "kmemleak: Kernel memory leak detector initialized (mem pool available: 15732)",
            "DMA-API: preallocated 65536 debug entries",
            "vfio-pci 0000:01:00.0: resetting",
            "kmemleak: 0 new suspected memory leaks",
            // Boot lines of the lab kernels (7.2.13-nrlab).
            "rcu: \tRCU lockdep checking is enabled.",
            "Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar",
        ] {
            assert!(!is_report(l), "{l}");
        }
    }

    #[test]
    fn kmemleak_objects_are_listed() {
        let t = "unreferenced object 0xffff888003a1b000 (size 64):\n  comm \"init\", pid 1\n  backtrace:\n\
                 unreferenced object 0xffff888003a1c000 (size 128):\n";
        assert_eq!(kmemleak_objects(t).len(), 2);
    }
}
