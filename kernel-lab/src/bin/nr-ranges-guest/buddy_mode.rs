//! Buddy mode (`nrlab.mode=buddy`): the packed plans of the initramfs
//! replayed on the kernel's own GPU buddy allocator through the lab module
//! `nrlab_buddy.ko`. See `kernel_lab::buddy`.

use std::collections::BTreeSet;

use crate::*;
use kernel_lab::buddy::abi::{
    NrlabBuddyBatch, NrlabBuddyBlock, NrlabBuddyBlocks, NrlabBuddyInit, NrlabBuddyOp, NrlabBuddyStats, MAX_BATCH,
    NRLAB_BUDDY_BATCH, NRLAB_BUDDY_BLOCKS, NRLAB_BUDDY_INIT, NRLAB_BUDDY_STATS, OP_FREE,
};
use kernel_lab::buddy::{
    decode_plans, GuestObject, GuestPlan, GuestReport, GuestRun, Snapshot, DEV_NODE, MODULE_FILE, PLANS_FILE,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The module's device node.
struct Allocator(File);

impl Allocator {
    fn call<T: IntoBytes + FromBytes>(&self, code: u32, name: &str, arg: &mut T) -> GResult<()> {
        uapi::ioctl::ioctl_iowr(self.0.as_fd(), code, arg.as_mut_bytes())
            .map(|_| ())
            .map_err(|e| format!("{name}: {}", errno_text(e)))
    }

    fn init(&self, p: &GuestPlan) -> GResult<()> {
        let mut a = NrlabBuddyInit { size: p.bar, chunk: p.chunk, max_objects: p.objects.max(1), err: 0 };
        self.call(NRLAB_BUDDY_INIT, "NRLAB_BUDDY_INIT", &mut a)?;
        match a.err {
            0 => Ok(()),
            e => Err(format!("gpu_buddy_init({:#x}, {:#x}): {}", p.bar, p.chunk, kernel_lab::proto::KernelErrno(-e))),
        }
    }

    /// Runs `ops`; one result per op.
    fn batch(&self, ops: &[NrlabBuddyOp]) -> GResult<Vec<i32>> {
        let mut results = vec![0i32; ops.len()];
        let mut a = NrlabBuddyBatch {
            ops: ops.as_ptr() as u64,
            results: results.as_mut_ptr() as u64,
            count: ops.len() as u32,
            done: 0,
        };
        self.call(NRLAB_BUDDY_BATCH, "NRLAB_BUDDY_BATCH", &mut a)?;
        if a.done as usize != ops.len() {
            return Err(format!("NRLAB_BUDDY_BATCH ran {} of {} ops", a.done, ops.len()));
        }
        Ok(results)
    }

    /// A live object's blocks, in list order.
    fn blocks(&self, id: u32) -> GResult<Vec<(u64, u64)>> {
        let mut room = 1 << 15;
        loop {
            let mut out = vec![NrlabBuddyBlock::default(); room];
            let mut a = NrlabBuddyBlocks { id, count: 0, max: room as u64, out: out.as_mut_ptr() as u64 };
            self.call(NRLAB_BUDDY_BLOCKS, "NRLAB_BUDDY_BLOCKS", &mut a)?;
            if a.count as usize <= room {
                return Ok(out.iter().take(a.count as usize).map(|b| (b.offset, b.size)).collect());
            }
            room = a.count as usize;
        }
    }

    fn snapshot(&self) -> GResult<Snapshot> {
        let mut s = NrlabBuddyStats::new_zeroed();
        self.call(NRLAB_BUDDY_STATS, "NRLAB_BUDDY_STATS", &mut s)?;
        let orders = (s.max_order as usize + 1).min(s.free_blocks.len());
        Ok(Snapshot {
            avail: s.avail,
            live: s.live,
            free_blocks: s.free_blocks.get(..orders).unwrap_or_default().to_vec(),
        })
    }
}

/// The mode's whole life: replay, report on the stream, power off.
pub(crate) fn main(kernel: String) {
    let mut rep = GuestReport { kernel, ..Default::default() };
    if let Err(e) = run(&mut rep) {
        println!("nr-ranges-guest: error: {e}");
        rep.error = Some(e);
    }
    send_report_and_power_off(&rep);
}

/// Loads the module, replays every plan, and fills `rep`.
pub(crate) fn run(rep: &mut GuestReport) -> GResult<()> {
    let path = format!("/lib/modules/{MODULE_FILE}");
    let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("finit_module({MODULE_FILE}): {} (GPU_BUDDY built in?)", errno_text(e))),
    }
    let plans_path = format!("/lib/modules/{PLANS_FILE}");
    let bytes = fs::read(&plans_path).map_err(|e| format!("read {plans_path}: {e}"))?;
    let plans = decode_plans(&bytes).map_err(|e| format!("{plans_path}: {e}"))?;
    drop(bytes);
    let dev = open_dev()?;
    for (i, p) in plans.iter().enumerate() {
        let mut r = GuestRun::default();
        let t = Instant::now();
        if let Err(e) = replay(&dev, p, &mut r) {
            println!("nr-ranges-guest: buddy plan {i}: {e}");
            r.error = Some(e);
        }
        r.seconds = t.elapsed().as_secs_f64();
        // Progress on the console: a long sweep's only sign of life.
        println!("nr-ranges-guest: buddy plan {}/{}: {} ops in {:.1} s", i + 1, plans.len(), p.ops.len(), r.seconds);
        rep.runs.push(r);
    }
    Ok(())
}

/// The device node appears once the misc device is registered; devtmpfs
/// may lag behind by a moment.
fn open_dev() -> GResult<Allocator> {
    let mut last = String::new();
    for _ in 0..50 {
        match fs::OpenOptions::new().read(true).write(true).open(DEV_NODE) {
            Ok(f) => return Ok(Allocator(f)),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(format!("open {DEV_NODE}: {last}"))
}

/// Replays one plan in batches that end where the host wants to look: at
/// the end of the pressure part (free blocks per order) and after each
/// reported allocation (its blocks, before the trace frees it).
fn replay(dev: &Allocator, p: &GuestPlan, r: &mut GuestRun) -> GResult<()> {
    dev.init(p)?;
    let report: BTreeSet<u32> = p.report.iter().copied().collect();
    let mut i = 0;
    loop {
        if i == p.snapshot_after && r.snapshot.is_none() {
            r.snapshot = Some(dev.snapshot()?);
        }
        if i >= p.ops.len() {
            return Ok(());
        }
        let mut end = (i + MAX_BATCH).min(p.ops.len());
        if i < p.snapshot_after {
            end = end.min(p.snapshot_after);
        }
        let window = p.ops.get(i..end).unwrap_or_default();
        let watched = window.iter().position(|o| o.flags & OP_FREE == 0 && report.contains(&o.id));
        if let Some(k) = watched {
            end = i + k + 1;
        }
        let ops = p.ops.get(i..end).unwrap_or_default();
        let results = dev.batch(ops)?;
        for (k, (op, &res)) in ops.iter().zip(&results).enumerate() {
            tally(r, (i + k) as u32, op, res);
        }
        if let (Some(_), Some(op), Some(&res)) = (watched, ops.last(), results.last()) {
            let blocks = if res == 0 { dev.blocks(op.id)? } else { Vec::new() };
            r.objects.push(GuestObject { id: op.id, err: res, blocks });
        }
        i = end;
    }
}

fn tally(r: &mut GuestRun, index: u32, op: &NrlabBuddyOp, res: i32) {
    let free = op.flags & OP_FREE != 0;
    match (free, res) {
        (true, 0) => r.frees += 1,
        (true, e) if e == -(Errno::ENOENT as i32) => r.frees_not_live += 1,
        (false, 0) => r.allocs += 1,
        (false, e) if e == -(Errno::ENOSPC as i32) => {
            r.enospc += 1;
            r.failed_allocs.push(index);
        }
        (false, e) => {
            *r.other_errors.entry(kernel_lab::proto::KernelErrno(-e).to_string()).or_default() += 1;
            r.failed_allocs.push(index);
        }
        (true, e) => *r.other_errors.entry(format!("free: {}", kernel_lab::proto::KernelErrno(-e))).or_default() += 1,
    }
}
