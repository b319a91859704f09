//! The allocator lab: an allocation trace replayed on the kernel's own GPU
//! buddy allocator (drivers/gpu/buddy.c) through the lab module
//! `kernel-lab/buddy/nrlab_buddy.c`, so that the RFC's framebuffer
//! workload runs on the real allocator beside its Rust model.
//!
//! The flow: the RFC generator writes one trace per pressure run in its
//! text format (`rfc/src/trace.rs`: `alloc ID SIZE [contiguous]`,
//! `free ID`) and a [`Manifest`] naming each trace's (BAR, chunk), where
//! the pressure part ends ([`RunSpec::snapshot_after`]) and which objects'
//! blocks to return ([`RunSpec::report`]). The host lowers each trace to
//! the module's ops ([`Plan`], ids interned to `u32`), packs the plans into
//! one file of the initramfs ([`encode_plans`]), and the guest replays them
//! ([`decode_plans`], `nr-ranges-guest`'s buddy mode) and answers with a
//! [`GuestReport`]; [`host`] turns it into the [`BuddyLabReport`] the RFC
//! generator reads back.
//!
//! - [`abi`]: the module's ioctl ABI (`nrlab_buddy.h`).
//! - [`host`]: the module build (cached per lab kernel) and the machine.

pub mod abi;
pub mod host;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use abi::{NrlabBuddyOp, OP_CONTIGUOUS, OP_FREE};

/// The module's file name in the initramfs (`/lib/modules/`).
pub const MODULE_FILE: &str = "nrlab_buddy.ko";
/// Its device node.
pub const DEV_NODE: &str = "/dev/nrlab_buddy";
/// The packed plans' file name in the initramfs (`/lib/modules/`).
pub const PLANS_FILE: &str = "nrlab-buddy-plans.bin";
/// The manifest's file name in a traces directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One pressure run's trace and what to measure in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The run's name (unique in the manifest).
    pub name: String,
    /// The trace's file name, relative to the manifest.
    pub trace: String,
    /// Bytes the allocator manages (the BAR).
    pub bar: u64,
    /// `chunk_size`.
    pub chunk: u64,
    /// Ops (trace lines with an operation) in the pressure part: the
    /// allocator's free blocks are read after that many.
    pub snapshot_after: usize,
    /// Objects whose block lists come back (the framebuffers).
    pub report: Vec<String>,
}

/// A traces directory's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The runs, in order.
    pub runs: Vec<RunSpec>,
}

/// Why a trace cannot be lowered to the module's ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A line that is not `alloc ID SIZE [contiguous]` or `free ID`.
    Syntax {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// More distinct ids than the module takes ([`abi::MAX_OBJECTS`]).
    TooManyObjects,
    /// A reported object the trace never allocates.
    UnknownReport(String),
    /// `snapshot_after` is past the trace's end.
    SnapshotPastEnd {
        /// The manifest's value.
        snapshot_after: usize,
        /// Ops in the trace.
        ops: usize,
    },
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Syntax { line, what } => write!(f, "line {line}: {what}"),
            PlanError::TooManyObjects => write!(f, "more than {} object ids", abi::MAX_OBJECTS),
            PlanError::UnknownReport(id) => write!(f, "reported object {id:?} is never allocated"),
            PlanError::SnapshotPastEnd { snapshot_after, ops } => {
                write!(f, "snapshot after op {snapshot_after}, but the trace has {ops} ops")
            }
        }
    }
}

impl std::error::Error for PlanError {}

/// A run lowered to the module's ops.
///
/// # Invariants
/// Every op's id is below `names.len()`; `report` ids too;
/// `snapshot_after <= ops.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Bytes managed.
    pub bar: u64,
    /// `chunk_size`.
    pub chunk: u64,
    /// The ops.
    pub ops: Vec<NrlabBuddyOp>,
    /// The pressure part's length.
    pub snapshot_after: usize,
    /// Ids whose blocks come back.
    pub report: Vec<u32>,
    /// Id -> the trace's name for it.
    pub names: Vec<String>,
}

/// A trace size: decimal, `0x` hex, or with a K/M/G suffix (binary units),
/// as `rfc/src/trace.rs` reads them.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.find(|c: char| c.is_ascii_alphabetic() && !s.starts_with("0x")) {
        Some(i) => {
            let m = match &s[i..] {
                "K" | "KiB" | "k" => 1u64 << 10,
                "M" | "MiB" => 1 << 20,
                "G" | "GiB" => 1 << 30,
                _ => return None,
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n = match digits.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    n.checked_mul(mult).filter(|&v| v != 0)
}

/// Lowers the text of one trace for `spec`.
pub fn plan(spec: &RunSpec, text: &str) -> Result<Plan, PlanError> {
    let mut ids: BTreeMap<String, u32> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut ops = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let syntax = |what: &str| PlanError::Syntax { line, what: what.to_string() };
        let body = raw.split('#').next().unwrap_or("");
        let f: Vec<&str> = body.split_whitespace().collect();
        let (op, id, size, flags) = match f.as_slice() {
            [] => continue,
            ["alloc", id, size] => ("alloc", *id, *size, 0),
            ["alloc", id, size, "contiguous"] => ("alloc", *id, *size, OP_CONTIGUOUS),
            ["free", id] => ("free", *id, "", OP_FREE),
            _ => return Err(syntax("expected `alloc ID SIZE [contiguous]` or `free ID`")),
        };
        let next = names.len() as u32;
        let n = *ids.entry(id.to_string()).or_insert(next);
        if n == next {
            if next >= abi::MAX_OBJECTS {
                return Err(PlanError::TooManyObjects);
            }
            names.push(id.to_string());
        }
        let size = if op == "alloc" { parse_size(size).ok_or_else(|| syntax("bad size"))? } else { 0 };
        ops.push(NrlabBuddyOp { id: n, flags, size });
    }
    if spec.snapshot_after > ops.len() {
        return Err(PlanError::SnapshotPastEnd { snapshot_after: spec.snapshot_after, ops: ops.len() });
    }
    let report = spec
        .report
        .iter()
        .map(|r| ids.get(r).copied().ok_or_else(|| PlanError::UnknownReport(r.clone())))
        .collect::<Result<_, _>>()?;
    // INVARIANT: ids are interned from `names`; the snapshot was checked.
    Ok(Plan { bar: spec.bar, chunk: spec.chunk, ops, snapshot_after: spec.snapshot_after, report, names })
}

/// What the guest replays for one run: a [`Plan`] without the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlan {
    /// Bytes managed.
    pub bar: u64,
    /// `chunk_size`.
    pub chunk: u64,
    /// Distinct ids.
    pub objects: u32,
    /// The pressure part's length.
    pub snapshot_after: usize,
    /// Ids whose blocks come back.
    pub report: Vec<u32>,
    /// The ops.
    pub ops: Vec<NrlabBuddyOp>,
}

const MAGIC: &[u8; 8] = b"NRBUDDY1";

/// Packs plans for the guest: `MAGIC`, then per plan `bar, chunk` (u64),
/// `objects, snapshot_after, report count, op count` (u32), the report ids
/// (u32) and the ops (16 bytes each, `struct nrlab_buddy_op`), little-endian.
pub fn encode_plans(plans: &[Plan]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for p in plans {
        out.extend(p.bar.to_le_bytes());
        out.extend(p.chunk.to_le_bytes());
        for n in [p.names.len(), p.snapshot_after, p.report.len(), p.ops.len()] {
            out.extend((n as u32).to_le_bytes());
        }
        for r in &p.report {
            out.extend(r.to_le_bytes());
        }
        for o in &p.ops {
            out.extend(o.id.to_le_bytes());
            out.extend(o.flags.to_le_bytes());
            out.extend(o.size.to_le_bytes());
        }
    }
    out
}

/// Why packed plans cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The file does not start with the magic.
    BadMagic,
    /// It ends inside a plan.
    Truncated {
        /// Byte offset where more was needed.
        at: usize,
    },
    /// An id at or above the plan's object count, or a snapshot past the end.
    Inconsistent {
        /// The plan (0-based).
        plan: usize,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic => f.write_str("not a plans file (bad magic)"),
            DecodeError::Truncated { at } => write!(f, "plans file truncated at byte {at}"),
            DecodeError::Inconsistent { plan } => write!(f, "plan {plan}: id or snapshot out of range"),
        }
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.b.get(self.at..self.at + N).ok_or(DecodeError::Truncated { at: self.at })?;
        self.at += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

/// Reads what [`encode_plans`] wrote, checking every id.
pub fn decode_plans(bytes: &[u8]) -> Result<Vec<GuestPlan>, DecodeError> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(DecodeError::BadMagic);
    }
    let mut r = Reader { b: bytes, at: MAGIC.len() };
    let mut plans = Vec::new();
    while r.at < bytes.len() {
        let (bar, chunk) = (r.u64()?, r.u64()?);
        let (objects, snapshot_after, nrep, nops) = (r.u32()?, r.u32()? as usize, r.u32()?, r.u32()?);
        // Bounded by the file's length before anything is reserved.
        if (nrep as usize * 4).saturating_add(nops as usize * 16) > bytes.len() - r.at {
            return Err(DecodeError::Truncated { at: bytes.len() });
        }
        let report = (0..nrep).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        let mut ops = Vec::with_capacity(nops as usize);
        for _ in 0..nops {
            ops.push(NrlabBuddyOp { id: r.u32()?, flags: r.u32()?, size: r.u64()? });
        }
        let bad = ops.iter().any(|o| o.id >= objects) || report.iter().any(|&i| i >= objects);
        if bad || snapshot_after > ops.len() {
            return Err(DecodeError::Inconsistent { plan: plans.len() });
        }
        plans.push(GuestPlan { bar, chunk, objects, snapshot_after, report, ops });
    }
    Ok(plans)
}

/// The allocator's free blocks after the pressure part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// `mm->avail`: free bytes.
    pub avail: u64,
    /// Live objects.
    pub live: u32,
    /// Free blocks per order, up to `mm->max_order`.
    pub free_blocks: Vec<u64>,
}

/// A reported object as the guest found it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GuestObject {
    /// The plan's id.
    pub id: u32,
    /// 0 or -errno of its allocation.
    pub err: i32,
    /// Its blocks (offset, bytes) in list order.
    pub blocks: Vec<(u64, u64)>,
}

/// One run as the guest replayed it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GuestRun {
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// Allocations that succeeded.
    pub allocs: u64,
    /// Allocations refused with ENOSPC.
    pub enospc: u64,
    /// Other allocation errors, by errno name.
    pub other_errors: BTreeMap<String, u64>,
    /// Frees.
    pub frees: u64,
    /// Frees of an id that was not live (its allocation had failed).
    pub frees_not_live: u64,
    /// Op indices of the allocations that failed.
    pub failed_allocs: Vec<u32>,
    /// The state after the pressure part.
    pub snapshot: Option<Snapshot>,
    /// The reported objects, in the order they were allocated.
    pub objects: Vec<GuestObject>,
    /// Wall time in the guest, seconds.
    pub seconds: f64,
}

/// The guest's whole answer (one JSON line).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GuestReport {
    /// `uname -r`.
    pub kernel: String,
    /// Why the guest stopped before the runs, if it did.
    pub error: Option<String>,
    /// One per plan, in order.
    pub runs: Vec<GuestRun>,
}

/// A reported object, by the trace's name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RealObject {
    /// The trace's id.
    pub id: String,
    /// `None`, or the errno's name of the failed allocation.
    pub err: Option<String>,
    /// Blocks (offset, bytes) in list order: the buffer's linear order.
    pub blocks: Vec<(u64, u64)>,
}

/// One run on the real allocator.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RealRun {
    /// The manifest's name.
    pub name: String,
    /// BAR bytes.
    pub bar: u64,
    /// `chunk_size`.
    pub chunk: u64,
    /// Ops replayed.
    pub ops: usize,
    /// As the guest counted them.
    pub guest: GuestRun,
    /// The reported objects by name.
    pub objects: Vec<RealObject>,
}

/// `kernel-lab buddy --out`: every run on the real allocator.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BuddyLabReport {
    /// The guest's `uname -r`.
    pub kernel: String,
    /// The kernel asked for (`--kernel`).
    pub kernel_request: String,
    /// The module's source hash.
    pub module_hash: String,
    /// Guest boots it took.
    pub boots: usize,
    /// Seconds in the guests (sum of boots).
    pub boot_seconds: f64,
    /// Wall seconds, all included.
    pub wall_seconds: f64,
    /// Errors of boots that failed.
    pub errors: Vec<String>,
    /// The runs, in manifest order (missing ones left out).
    pub runs: Vec<RealRun>,
}

/// The guest's answer for `plan`, by name.
pub fn name_objects(plan: &Plan, run: &GuestRun) -> Vec<RealObject> {
    run.objects
        .iter()
        .map(|o| RealObject {
            id: plan.names.get(o.id as usize).cloned().unwrap_or_else(|| format!("#{}", o.id)),
            err: (o.err != 0).then(|| crate::proto::KernelErrno(-o.err).to_string()),
            blocks: o.blocks.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(report: &[&str], snapshot_after: usize) -> RunSpec {
        RunSpec {
            name: "r".into(),
            trace: "r.trace".into(),
            bar: 1 << 28,
            chunk: 4096,
            snapshot_after,
            report: report.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn lowers_a_trace_and_interns_ids() {
        let t = "# pressure\nalloc a 4K\nalloc b 0x2000\nfree a\n\nalloc fb 33177600 contiguous # fb\nfree fb\n";
        let p = plan(&spec(&["fb"], 3), t).unwrap();
        assert_eq!(p.names, vec!["a", "b", "fb"]);
        assert_eq!(
            p.ops,
            vec![
                NrlabBuddyOp { id: 0, flags: 0, size: 4096 },
                NrlabBuddyOp { id: 1, flags: 0, size: 0x2000 },
                NrlabBuddyOp { id: 0, flags: OP_FREE, size: 0 },
                NrlabBuddyOp { id: 2, flags: OP_CONTIGUOUS, size: 33_177_600 },
                NrlabBuddyOp { id: 2, flags: OP_FREE, size: 0 },
            ]
        );
        assert_eq!(p.report, vec![2]);
    }

    #[test]
    fn bad_traces_are_typed_errors() {
        let e = plan(&spec(&[], 0), "alloc a\n").unwrap_err();
        assert_eq!(e, PlanError::Syntax { line: 1, what: "expected `alloc ID SIZE [contiguous]` or `free ID`".into() });
        assert!(matches!(plan(&spec(&[], 0), "\nalloc a 12Q"), Err(PlanError::Syntax { line: 2, .. })));
        assert!(matches!(plan(&spec(&[], 0), "alloc a 0"), Err(PlanError::Syntax { line: 1, .. })));
        assert_eq!(plan(&spec(&["x"], 0), "alloc a 4K"), Err(PlanError::UnknownReport("x".into())));
        assert_eq!(plan(&spec(&[], 2), "alloc a 4K"), Err(PlanError::SnapshotPastEnd { snapshot_after: 2, ops: 1 }));
    }

    #[test]
    fn plans_round_trip_and_bad_files_are_refused() {
        let a = plan(&spec(&["b"], 1), "alloc a 4K\nalloc b 1M contiguous\nfree a\n").unwrap();
        let b = plan(&RunSpec { bar: 1 << 30, chunk: 65536, ..spec(&[], 0) }, "alloc z 64K\n").unwrap();
        let bytes = encode_plans(&[a.clone(), b]);
        // 8 magic + (16 + 16 + 4 + 3 * 16) + (16 + 16 + 16).
        assert_eq!(bytes.len(), 8 + 84 + 48);
        let d = decode_plans(&bytes).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            GuestPlan { bar: 1 << 28, chunk: 4096, objects: 2, snapshot_after: 1, report: vec![1], ops: a.ops }
        );
        assert_eq!((d[1].chunk, d[1].ops[0].size), (65536, 65536));
        assert_eq!(decode_plans(b"NRBUDDY0"), Err(DecodeError::BadMagic));
        assert_eq!(decode_plans(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated { at: bytes.len() - 1 }));
        let mut bad = bytes.clone();
        bad[8 + 16] = 1; // objects = 1: id 1 is out of range.
        assert_eq!(decode_plans(&bad), Err(DecodeError::Inconsistent { plan: 0 }));
    }
}
