//! Fault mode (`nrlab.mode=fault`): fail-nth sweeps inside the export ioctl
//! and the importer's map, their failing points repeated with a clean probe
//! map after each, the kprobe overrides of `nrlab_fault.ko`, and kmemleak at
//! the end. See `kernel_lab::fault`.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::*;
use kernel_lab::fault::{
    fault_stack, is_sanitizer_line, FaultGuestReport, FaultOp, FdFullRun, OpSweep, OverrideKind, OverrideRun, Repeat,
    Round, SanitizerLine, SweepPoint, FAIL_NTH, MAX_N, MODULE_FILE, PARAMS, REPEATS_FULL, STOP_AFTER_MISSES,
};
use kernel_lab::importer::abi::{
    NrlabAttach, NrlabMap, NrlabStatus, NRLAB_IOCTL_ATTACH, NRLAB_IOCTL_DETACH, NRLAB_IOCTL_MAP,
};
use kernel_lab::importer::{DEV_NODE, MODULE_FILE as IMPORTER_FILE};
use zerocopy::{FromZeros, IntoBytes};

const DEBUGFS: &str = "/sys/kernel/debug";
/// Kernel log lines kept per attempt (a fault-injection report is ~25).
const KLOG_LINES: usize = 80;

/// Runs fault mode, sends the report and powers off.
pub fn main(kernel: String) {
    let mut rep = FaultGuestReport { kernel, ..Default::default() };
    if let Err(e) = run(&mut rep) {
        println!("nr-ranges-guest: error: {e}");
        rep.error = Some(e);
    }
    send_report_and_power_off(&rep);
}

/// The kernel log from here on, one record per line (`/dev/kmsg`, non
/// blocking, its own read position).
struct Kmsg(File);

impl Kmsg {
    fn open() -> GResult<Self> {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(|e| format!("open /dev/kmsg: {e}"))?;
        f.seek(SeekFrom::End(0)).map_err(|e| format!("seek /dev/kmsg: {e}"))?;
        Ok(Self(f))
    }

    /// Every record since the last call (EPIPE: records were overwritten,
    /// go on; EAGAIN: none left).
    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let msg = rec.split_once(';').map_or(&*rec, |x| x.1).lines().next().unwrap_or("").to_string();
                    out.push(msg);
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// `/proc/thread-self/fail-nth`: written before the call, read after.
struct FailNth(File);

impl FailNth {
    fn open() -> std::io::Result<Self> {
        fs::OpenOptions::new().read(true).write(true).open(FAIL_NTH).map(Self)
    }

    /// Arms the `n`-th fault point from now. `text` is `n` formatted
    /// beforehand: nothing between this write and the call may enter the
    /// kernel (an allocation there would take the count).
    fn arm(&self, text: &[u8]) -> bool {
        self.0.write_at(text, 0).is_ok()
    }

    /// Whether the armed point was reached (fail-nth reads back 0), and
    /// disarms.
    fn fired_then_disarm(&self) -> bool {
        let mut b = [0u8; 16];
        let n = self.0.read_at(&mut b, 0).unwrap_or(0);
        let left: i64 = String::from_utf8_lossy(&b[..n]).trim().parse().unwrap_or(-1);
        let _ = self.0.write_at(b"0", 0);
        left == 0
    }
}

/// The importer fixture, with its one attachment and one reused map
/// argument (touched before every call, so that the kernel's copy does not
/// fault in a fresh page while a fault is armed).
struct Fixture {
    dev: File,
    map: Box<NrlabMap>,
}

/// A map's answer: 0 or -errno, whether the ioctl itself failed, and the
/// first DMA address.
struct MapAnswer {
    err: i32,
    ioctl_failed: bool,
    iova: Option<u64>,
}

impl Fixture {
    fn open() -> GResult<Self> {
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_NODE)
            .map_err(|e| format!("open {DEV_NODE}: {e}"))?;
        Ok(Self { dev, map: Box::new(NrlabMap::new_zeroed()) })
    }

    fn attach(&self, fd: i32) -> GResult<()> {
        match self.attach_raw(fd) {
            (0, _) => Ok(()),
            (e, true) => Err(format!("NRLAB_IOCTL_ATTACH: {}", kernel_lab::proto::KernelErrno(-e))),
            (e, false) => Err(format!("attach: {}", kernel_lab::proto::KernelErrno(-e))),
        }
    }

    /// The attach's answer (0 or -errno) and whether the ioctl itself
    /// failed.
    fn attach_raw(&self, fd: i32) -> (i32, bool) {
        let mut a = NrlabAttach { fd, ..Default::default() };
        match uapi::ioctl::ioctl_iowr(self.dev.as_fd(), NRLAB_IOCTL_ATTACH, a.as_mut_bytes()) {
            Err(e) => (-(e as i32), true),
            Ok(_) => (a.st.err, false),
        }
    }

    fn detach(&self) {
        let mut s = NrlabStatus::default();
        let _ = uapi::ioctl::ioctl_iowr(self.dev.as_fd(), NRLAB_IOCTL_DETACH, s.as_mut_bytes());
    }

    fn prepare(&mut self) {
        self.map.as_mut_bytes().fill(0);
    }

    /// One map (not kept) with the argument [`Fixture::prepare`]d.
    fn map_now(&mut self) -> MapAnswer {
        match uapi::ioctl::ioctl_iowr(self.dev.as_fd(), NRLAB_IOCTL_MAP, self.map.as_mut_bytes()) {
            Err(e) => MapAnswer { err: -(e as i32), ioctl_failed: true, iova: None },
            Ok(_) if self.map.st.err != 0 => MapAnswer { err: self.map.st.err, ioctl_failed: false, iova: None },
            Ok(_) => {
                MapAnswer { err: 0, ioctl_failed: false, iova: (self.map.count > 0).then(|| self.map.ent[0].addr) }
            }
        }
    }
}

/// Everything one sweep needs.
struct Lab {
    kmsg: Kmsg,
    fail: FailNth,
    dev: Device,
    fx: Option<Fixture>,
    /// The maps' dma-bufs, by operation.
    bufs: Vec<(FaultOp, OwnedFd)>,
    /// Their probes' dma-bufs ([`FaultOp::probe_ranges`]).
    probe_bufs: Vec<(FaultOp, OwnedFd)>,
    sanitizer: Vec<SanitizerLine>,
    repeats: u32,
}

impl Lab {
    /// The new kernel log lines; sanitizer lines are also kept with
    /// `context`.
    fn klog(&mut self, context: &str) -> Vec<String> {
        let mut lines = self.kmsg.drain();
        for l in lines.iter().filter(|l| is_sanitizer_line(l)) {
            self.sanitizer.push(SanitizerLine { context: context.to_string(), line: l.clone() });
        }
        lines.truncate(KLOG_LINES);
        lines
    }

    fn buf_fd(&self, op: FaultOp) -> i32 {
        let want = match op {
            FaultOp::Export => FaultOp::Map2,
            FaultOp::Attach => FaultOp::Map1,
            _ => op,
        };
        self.bufs.iter().find(|b| b.0 == want).map_or(-1, |b| b.1.as_raw_fd())
    }

    /// A clean map of `op`'s probe dma-buf: its answer and IOVA.
    fn probe(&mut self, op: FaultOp) -> (Option<i32>, Option<u64>) {
        let fd = self.probe_bufs.iter().find(|b| b.0 == op).map_or(-1, |b| b.1.as_raw_fd());
        let Some(fx) = self.fx.as_mut() else { return (None, None) };
        if fx.attach(fd).is_err() {
            return (None, None);
        }
        fx.prepare();
        let a = fx.map_now();
        fx.detach();
        (Some(a.err), a.iova)
    }

    /// `op` once with fail-nth armed at `n` (0: not armed): (fired, err,
    /// ioctl failed, kernel log).
    fn attempt(&mut self, op: FaultOp, n: u32, context: &str) -> GResult<(bool, i32, bool, Vec<String>)> {
        let text = n.to_string().into_bytes();
        let _ = self.klog("before");
        let (fired, err, ioctl_failed) = if op == FaultOp::Export {
            let ranges: Vec<uapi::DmaRange> = op.ranges().iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
            let req = uapi::OwnedRequest::well_formed(2, O_RDWR_CLOEXEC, &ranges).map_err(|e| e.to_string())?;
            let mut buf = req.encode().map_err(|e| e.to_string())?;
            if n > 0 && !self.fail.arm(&text) {
                return Err(format!("write {FAIL_NTH} failed"));
            }
            let r = self.dev.feature(&mut buf);
            let fired = n > 0 && self.fail.fired_then_disarm();
            let err = match r {
                Ok(FeatureReply::DmaBuf(fd)) => {
                    drop(fd);
                    0
                }
                Ok(FeatureReply::Done) => -(nix::libc::EPROTO),
                Err(IoctlError::Kernel(e)) => -(e as i32),
                Err(e) => return Err(e.to_string()),
            };
            (fired, err, false)
        } else if op == FaultOp::Attach {
            let fd = self.buf_fd(op);
            let fx = self.fx.as_mut().ok_or("no importer fixture")?;
            if n > 0 && !self.fail.arm(&text) {
                return Err(format!("write {FAIL_NTH} failed"));
            }
            let (err, ioctl_failed) = fx.attach_raw(fd);
            let fired = n > 0 && self.fail.fired_then_disarm();
            if err == 0 {
                fx.detach();
            }
            (fired, err, ioctl_failed)
        } else {
            let fd = self.buf_fd(op);
            let fx = self.fx.as_mut().ok_or("no importer fixture")?;
            fx.attach(fd)?;
            fx.prepare();
            if n > 0 && !self.fail.arm(&text) {
                return Err(format!("write {FAIL_NTH} failed"));
            }
            let a = fx.map_now();
            let fired = n > 0 && self.fail.fired_then_disarm();
            fx.detach();
            (fired, a.err, a.ioctl_failed)
        };
        let klog = self.klog(context);
        Ok((fired, err, ioctl_failed, klog))
    }

    /// N = 1.. until [`STOP_AFTER_MISSES`] in a row do not fire; then every
    /// failing N of a map, repeated. `filter`: the function required on the
    /// stack (already set in debugfs), for the report.
    fn sweep(&mut self, op: FaultOp, filter: Option<String>) -> GResult<OpSweep> {
        let (_, baseline_err, _, _) = self.attempt(op, 0, &format!("{op}: baseline"))?;
        let baseline_iova = if op.maps() { self.probe(op).1 } else { None };
        let mut baseline_rounds = Vec::new();
        if op.maps() && baseline_err != 0 {
            for r in 0..self.repeats {
                let (_, err, _, klog) = self.attempt(op, 0, &format!("{op}: baseline, round {r}"))?;
                let (probe_err, probe_iova) = self.probe(op);
                let sanitizer = klog.iter().filter(|l| is_sanitizer_line(l)).cloned().collect();
                baseline_rounds.push(Round { fired: false, err, probe_err, probe_iova, frames: vec![], sanitizer });
            }
        }
        let mut s = OpSweep {
            op,
            filter,
            baseline_err,
            baseline_iova,
            baseline_rounds,
            points: vec![],
            repeats: vec![],
            note: None,
        };
        let mut misses = 0;
        for n in 1..=MAX_N {
            let (fired, err, ioctl_failed, klog) = self.attempt(op, n, &format!("{op}: fail-nth {n}"))?;
            let (probe_err, probe_iova) = if op.maps() { self.probe(op) } else { (None, None) };
            println!("nr-ranges-guest: {op} N={n} fired={fired} err={err} probe={probe_iova:x?}");
            s.points.push(SweepPoint { n, fired, err, ioctl_failed, klog, probe_err, probe_iova });
            misses = if fired { 0 } else { misses + 1 };
            if misses >= STOP_AFTER_MISSES {
                break;
            }
        }
        if misses < STOP_AFTER_MISSES {
            s.note = Some(format!("stopped at N = {MAX_N} while points still fired"));
        }
        if op.maps() {
            // The points where the fault changed the answer.
            let failing: Vec<u32> = s.points.iter().filter(|p| p.fired && p.err != baseline_err).map(|p| p.n).collect();
            for n in failing {
                let before = self.probe(op).1;
                let mut rounds = Vec::new();
                for r in 0..self.repeats {
                    let (fired, err, _, klog) = self.attempt(op, n, &format!("{op}: fail-nth {n}, repeat {r}"))?;
                    let (probe_err, probe_iova) = self.probe(op);
                    let frames = fault_stack(&klog).into_iter().map(|f| f.func).collect();
                    let sanitizer = klog.iter().filter(|l| is_sanitizer_line(l)).cloned().collect();
                    rounds.push(Round { fired, err, probe_err, probe_iova, frames, sanitizer });
                }
                s.repeats.push(Repeat { n, before, rounds });
            }
        }
        Ok(s)
    }

    /// One override, [`Lab::repeats`] rounds, a probe after each.
    fn override_run(&mut self, kind: OverrideKind) -> GResult<OverrideRun> {
        let before = self.probe(kind.op()).1;
        let mut run = OverrideRun { kind, before, rounds: vec![], fired: 0, klog: vec![] };
        let fd = self.buf_fd(kind.op());
        for r in 0..self.repeats {
            let _ = self.klog("before");
            let start = read_fired();
            let fx = self.fx.as_mut().ok_or("no importer fixture")?;
            fx.attach(fd)?;
            fx.prepare();
            for (p, v) in kind.params() {
                fs::write(format!("{PARAMS}/{p}"), v).map_err(|e| format!("{PARAMS}/{p}: {e}"))?;
            }
            let a = fx.map_now();
            for p in ["link_fail", "try_fail", "map_pass", "map_fail"] {
                let _ = fs::write(format!("{PARAMS}/{p}"), "0");
            }
            fx.detach();
            let klog = self.klog(&format!("override {kind}, round {r}"));
            let (probe_err, probe_iova) = self.probe(kind.op());
            println!("nr-ranges-guest: override {kind} #{r}: err={} probe={probe_iova:x?}", a.err);
            let sanitizer = klog.iter().filter(|l| is_sanitizer_line(l)).cloned().collect();
            rounds_push(
                &mut run,
                r,
                klog,
                Round { fired: read_fired() > start, err: a.err, probe_err, probe_iova, frames: vec![], sanitizer },
            );
        }
        run.fired = read_fired();
        Ok(run)
    }
}

impl Lab {
    /// The export with every descriptor taken: `dma_buf_fd()` fails
    /// (EMFILE) after `dma_buf_export()` made the dma-buf, so the error
    /// path releases it (defect 5's path). The table is filled with
    /// `/dev/null` up to the limit and emptied again.
    fn fd_full(&mut self) -> GResult<FdFullRun> {
        let mut run = FdFullRun::default();
        let mut held = Vec::new();
        while held.len() < 1 << 20 {
            match File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => break,
                Err(e) => return Err(format!("open /dev/null: {e}")),
            }
        }
        run.filled = held.len() as u32;
        let _ = self.klog("before");
        for _ in 0..self.repeats.min(3) {
            let (_, err, _, klog) = self.attempt(FaultOp::Export, 0, "export with the fd table full")?;
            run.errs.push(err);
            run.klog.extend(klog);
        }
        drop(held);
        // The release was deferred to the return to user space; give it
        // (and a KASAN report) time to reach the log.
        std::thread::sleep(Duration::from_secs(1));
        run.klog.extend(self.klog("export with the fd table full, after"));
        Ok(run)
    }
}

fn rounds_push(run: &mut OverrideRun, r: u32, klog: Vec<String>, round: Round) {
    if r == 0 {
        run.klog = klog;
    }
    run.rounds.push(round);
}

fn read_fired() -> u32 {
    sysfs(&format!("{PARAMS}/fired")).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn load(file: &str) -> GResult<()> {
    let path = format!("/lib/modules/{file}");
    let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty())
        .map_err(|e| format!("finit_module({file}): {e}"))
}

/// Text symbols of `/proc/kallsyms`: every start address, sorted, and the
/// wanted names' starts.
///
/// # Invariants
/// `starts` is sorted and without duplicates, so the symbol after a start
/// is the first greater entry.
struct Kallsyms {
    starts: Vec<u64>,
    named: Vec<(String, u64)>,
}

impl Kallsyms {
    fn read() -> Self {
        let wanted = [
            "__alloc_object",
            "mem_pool_alloc",
            "dma_buf_phys_vec_to_sgt",
            "vfio_pci_core_feature_dma_buf",
            "dma_buf_dynamic_attach",
        ];
        let text = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let (mut starts, mut named) = (Vec::new(), Vec::new());
        for l in text.lines() {
            let mut w = l.split_whitespace();
            let (Some(a), Some(t), Some(n)) = (w.next(), w.next(), w.next()) else { continue };
            if !matches!(t, "t" | "T") {
                continue;
            }
            let Ok(a) = u64::from_str_radix(a, 16) else { continue };
            starts.push(a);
            if wanted.contains(&n) && !named.iter().any(|(m, _)| m == n) {
                named.push((n.to_string(), a));
            }
        }
        starts.sort_unstable();
        starts.dedup();
        // INVARIANT: sorted and deduplicated just above.
        Self { starts, named }
    }

    /// `[start, next symbol)` of `name` (0 addresses: kallsyms hidden).
    fn range(&self, name: &str) -> Option<(u64, u64)> {
        let start = self.named.iter().find(|(n, _)| n == name)?.1;
        let end = *self.starts.iter().find(|&&a| a > start)?;
        (start != 0).then_some((start, end))
    }
}

/// The stack filter of both injectors: an allocation counts only with an
/// address of `require` on its stack and none of `reject`; `None` lifts
/// each.
fn set_filter(require: Option<(u64, u64)>, reject: Option<(u64, u64)>) -> GResult<()> {
    let (rs, re) = require.unwrap_or((0, u64::MAX));
    let (js, je) = reject.unwrap_or((0, 0));
    for inj in ["failslab", "fail_page_alloc"] {
        for (attr, v) in [
            ("require-start", rs),
            ("require-end", re),
            ("reject-start", js),
            ("reject-end", je),
            ("stacktrace-depth", 32),
        ] {
            let path = format!("{DEBUGFS}/{inj}/{attr}");
            fs::write(&path, format!("{v:#x}")).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    Ok(())
}

/// `echo <cmd> > /sys/kernel/debug/kmemleak`.
fn kmemleak(cmd: &str) -> GResult<()> {
    fs::write(format!("{DEBUGFS}/kmemleak"), cmd).map_err(|e| format!("kmemleak {cmd}: {e}"))
}

fn run(rep: &mut FaultGuestReport) -> GResult<()> {
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("read /proc/cmdline: {e}"))?;
    rep.cmdline = cmdline.trim().to_string();
    rep.repeats = cmdline_u64(&cmdline, "repeats", u64::from(REPEATS_FULL))? as u32;
    // fail-nth is the one interface the sweep needs: without it the kernel
    // has no fault injection (CONFIG_FAULT_INJECTION, Debian's kernels).
    if fs::metadata(FAIL_NTH).is_err() {
        rep.unavailable = Some(format!("no {FAIL_NTH} (kernel without CONFIG_FAULT_INJECTION)"));
        return Ok(());
    }
    let _ = fs::create_dir_all(DEBUGFS);
    nix::mount::mount(Some("debugfs"), DEBUGFS, Some("debugfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|e| format!("mount debugfs: {e}"))?;
    for inj in ["failslab", "fail_page_alloc"] {
        let d = format!("{DEBUGFS}/{inj}");
        if fs::metadata(&d).is_err() {
            rep.unavailable = Some(format!("no {d} (kernel without CONFIG_FAULT_INJECTION_DEBUG_FS or {inj})"));
            return Ok(());
        }
        // Sleeping allocations too (the default skips them), and a stack
        // for every forced failure: not rate-limited (by default 10 per
        // 5 s, which a sweep exceeds).
        for (attr, v) in [("ignore-gfp-wait", "N"), ("verbose", "2"), ("verbose_ratelimit_burst", "1000000")] {
            fs::write(format!("{d}/{attr}"), v).map_err(|e| format!("{d}/{attr}: {e}"))?;
        }
    }
    load_modules()?;
    let ivs = find_pci("0x1af4", "0x1110").ok_or("no ivshmem-plain")?;
    bind_vfio_pci(&ivs)?;
    let link = fs::read_link(format!("/sys/bus/pci/devices/{ivs}/iommu_group"))
        .map_err(|e| format!("{ivs} has no iommu group: {e}"))?;
    let g: u32 = link.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).ok_or("bad iommu group")?;
    let container = Container::open().map_err(|e| format!("open /dev/vfio/vfio: {e}"))?;
    let (_group, dev) = open_vfio_device(&container, &ivs, g, true).map_err(|e| e.describe(&ivs))?;
    let bars =
        parse_resource(&sysfs(&format!("/sys/bus/pci/devices/{ivs}/resource"))?).map_err(|e| format!("{ivs}: {e}"))?;
    rep.ivshmem = Some(DeviceInfo { name: "ivshmem-plain".into(), bdf: ivs.clone(), group: g, page_size: 4096, bars });

    let fx = match load(IMPORTER_FILE) {
        Ok(()) => Some(Fixture::open()?),
        Err(e) => {
            rep.notes.push(format!("map sweeps and overrides skipped: {e}"));
            None
        }
    };
    let faultmod = fx.is_some() && {
        match load(MODULE_FILE) {
            Ok(()) => true,
            Err(e) => {
                rep.notes.push(format!("overrides skipped: {e}"));
                false
            }
        }
    };
    let (mut bufs, mut probe_bufs) = (Vec::new(), Vec::new());
    for op in [FaultOp::Map1, FaultOp::Map2] {
        let get = |r: &[(u64, u64)]| {
            let ranges: Vec<uapi::DmaRange> = r.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
            crate::export(&dev, 2, O_RDWR_CLOEXEC, &ranges).map_err(|e| format!("export for {op}: {e}"))
        };
        bufs.push((op, get(op.ranges())?));
        probe_bufs.push((op, get(op.probe_ranges())?));
    }
    let fail = FailNth::open().map_err(|e| format!("open {FAIL_NTH}: {e}"))?;
    let has_kmemleak = fs::metadata(format!("{DEBUGFS}/kmemleak")).is_ok();
    // Reports from before the sweep are not the sweep's.
    if has_kmemleak {
        if let Err(e) = kmemleak("scan").and_then(|()| kmemleak("clear")) {
            rep.notes.push(e);
        }
    } else {
        rep.notes.push("no kmemleak in debugfs".into());
    }
    let mut lab = Lab {
        kmsg: Kmsg::open()?,
        fail,
        dev,
        fx,
        bufs,
        probe_bufs,
        sanitizer: Vec::new(),
        repeats: rep.repeats.max(1),
    };
    let syms = Kallsyms::read();
    let reject = syms.range("__alloc_object").or_else(|| syms.range("mem_pool_alloc"));
    for op in FaultOp::ALL {
        if op.needs_importer() && lab.fx.is_none() {
            continue;
        }
        set_filter(None, None)?;
        rep.ops.push(lab.sweep(op, None)?);
        match syms.range(op.filter_function()) {
            Some(range) => {
                set_filter(Some(range), reject)?;
                let swept = lab.sweep(op, Some(op.filter_function().to_string()));
                set_filter(None, None)?;
                rep.ops.push(swept?);
            }
            None => rep.notes.push(format!("{op}: no {} in /proc/kallsyms, no filtered sweep", op.filter_function())),
        }
    }
    if reject.is_none() {
        rep.notes
            .push("kmemleak's __alloc_object not in /proc/kallsyms: its allocations count in filtered sweeps".into());
    }
    if faultmod {
        for kind in OverrideKind::ALL {
            rep.overrides.push(lab.override_run(kind)?);
        }
    }
    rep.fd_full = Some(lab.fd_full()?);
    if has_kmemleak {
        // kmemleak leaves objects younger than 5 s alone; scan twice, as
        // its documentation suggests, a few seconds apart.
        std::thread::sleep(Duration::from_secs(6));
        let scans = kmemleak("scan").and_then(|()| {
            std::thread::sleep(Duration::from_secs(3));
            kmemleak("scan")
        });
        if let Err(e) = scans {
            rep.notes.push(e);
        }
        let text = fs::read_to_string(format!("{DEBUGFS}/kmemleak")).unwrap_or_default();
        rep.kmemleak = text.lines().map(String::from).take(20_000).collect();
        for l in rep.kmemleak.iter().filter(|l| l.contains("unreferenced object")) {
            lab.sanitizer.push(SanitizerLine { context: "kmemleak scan".into(), line: l.clone() });
        }
    }
    let _ = lab.klog("end of run");
    rep.sanitizer = std::mem::take(&mut lab.sanitizer);
    Ok(())
}
