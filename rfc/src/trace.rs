//! Replay of an allocation trace, so that experimenters can feed the VRAM
//! state of their own workload into the framebuffer experiment.
//!
//! # Format
//!
//! UTF-8 text, one operation per line; `#` starts a comment; blank lines are
//! ignored; fields are separated by whitespace:
//!
//! ```text
//! # id is any token; size is bytes: decimal, 0x hex, or with K/M/G (KiB, MiB, GiB)
//! alloc fb0 33177600 contiguous
//! alloc tex1 4M
//! free fb0
//! ```
//!
//! - `alloc ID SIZE [contiguous]`: allocates `SIZE` bytes under `ID`
//!   (non-contiguous unless the flag is given).
//! - `free ID`: frees the object `ID`.
//!
//! Parse errors carry the line number ([`TraceError`]). At replay, an
//! allocation that does not fit is counted, not fatal (a driver would evict;
//! the trace's later `free` of that ID is then ignored); reusing a live ID
//! or freeing an unknown one is an error ([`ReplayError`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::buddy::{Block, Buddy};

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `alloc ID SIZE [contiguous]`.
    Alloc {
        /// The object's name.
        id: String,
        /// Bytes.
        size: u64,
        /// Whether `contiguous` was given.
        contiguous: bool,
    },
    /// `free ID`.
    Free {
        /// The object's name.
        id: String,
    },
}

/// A parsed trace line: the operation and its line number (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Line number in the file.
    pub line: usize,
    /// The operation.
    pub op: Op,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceErrorKind {
    /// The first field is not `alloc` or `free`.
    UnknownOp(String),
    /// A required field is missing.
    Missing(&'static str),
    /// The size is not a number, or overflows 64 bits.
    BadSize(String),
    /// The size is zero.
    ZeroSize,
    /// A field after the last one the operation takes (or an unknown flag).
    Unexpected(String),
}

/// A parse error at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: TraceErrorKind,
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            TraceErrorKind::UnknownOp(s) => write!(f, "unknown operation {s:?} (expected alloc or free)"),
            TraceErrorKind::Missing(what) => write!(f, "missing {what}"),
            TraceErrorKind::BadSize(s) => write!(f, "bad size {s:?} (bytes: decimal, 0x hex, or K/M/G suffix)"),
            TraceErrorKind::ZeroSize => f.write_str("size 0"),
            TraceErrorKind::Unexpected(s) => write!(f, "unexpected {s:?}"),
        }
    }
}

impl std::error::Error for TraceError {}

/// Why a replay stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// `alloc` of an ID that is live.
    DuplicateId {
        /// Line.
        line: usize,
        /// The ID.
        id: String,
    },
    /// `free` of an ID never allocated (or already freed).
    UnknownId {
        /// Line.
        line: usize,
        /// The ID.
        id: String,
    },
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::DuplicateId { line, id } => write!(f, "line {line}: alloc of {id:?}, which is live"),
            ReplayError::UnknownId { line, id } => write!(f, "line {line}: free of {id:?}, which is not allocated"),
        }
    }
}

impl std::error::Error for ReplayError {}

fn parse_size(s: &str) -> Result<u64, TraceErrorKind> {
    let bad = || TraceErrorKind::BadSize(s.to_string());
    let (digits, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic() && !s.starts_with("0x")) {
        Some((i, _)) => {
            let m = match &s[i..] {
                "K" | "KiB" | "k" => 1u64 << 10,
                "M" | "MiB" => 1 << 20,
                "G" | "GiB" => 1 << 30,
                _ => return Err(bad()),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n = match digits.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => digits.parse::<u64>(),
    }
    .map_err(|_| bad())?;
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v == 0 {
        return Err(TraceErrorKind::ZeroSize);
    }
    Ok(v)
}

/// Parses a whole trace.
pub fn parse(text: &str) -> Result<Vec<Line>, TraceError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |kind| TraceError { line, kind };
        let body = raw.split('#').next().unwrap_or("");
        let mut f = body.split_whitespace();
        let Some(op) = f.next() else { continue };
        let op = match op {
            "alloc" => {
                let id = f.next().ok_or(err(TraceErrorKind::Missing("object ID")))?.to_string();
                let size = parse_size(f.next().ok_or(err(TraceErrorKind::Missing("size")))?).map_err(err)?;
                let contiguous = match f.next() {
                    None => false,
                    Some("contiguous") => true,
                    Some(x) => return Err(err(TraceErrorKind::Unexpected(x.to_string()))),
                };
                Op::Alloc { id, size, contiguous }
            }
            "free" => Op::Free { id: f.next().ok_or(err(TraceErrorKind::Missing("object ID")))?.to_string() },
            other => return Err(err(TraceErrorKind::UnknownOp(other.to_string()))),
        };
        if let Some(x) = f.next() {
            return Err(err(TraceErrorKind::Unexpected(x.to_string())));
        }
        out.push(Line { line, op });
    }
    Ok(out)
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReplayStats {
    /// Allocations that succeeded.
    pub allocs: u64,
    /// Allocations refused (ENOSPC).
    pub enospc: u64,
    /// Frees.
    pub frees: u64,
    /// Objects live at the end.
    pub live: u64,
}

/// Replays `ops` on `buddy`; the objects still live stay allocated.
pub fn replay(buddy: &mut Buddy, ops: &[Line]) -> Result<ReplayStats, ReplayError> {
    let mut live: BTreeMap<&str, Vec<Block>> = BTreeMap::new();
    let mut failed: BTreeSet<&str> = BTreeSet::new();
    let mut st = ReplayStats::default();
    for l in ops {
        match &l.op {
            Op::Alloc { id, size, contiguous } => {
                if live.contains_key(id.as_str()) {
                    return Err(ReplayError::DuplicateId { line: l.line, id: id.clone() });
                }
                failed.remove(id.as_str());
                match buddy.alloc(*size, *contiguous) {
                    Ok(b) => {
                        live.insert(id, b);
                        st.allocs += 1;
                    }
                    Err(_) => {
                        failed.insert(id);
                        st.enospc += 1;
                    }
                }
            }
            Op::Free { id } => match live.remove(id.as_str()) {
                Some(b) => {
                    buddy.free_blocks(&b).expect("live object's blocks are allocated");
                    st.frees += 1;
                }
                None if failed.remove(id.as_str()) => {}
                None => return Err(ReplayError::UnknownId { line: l.line, id: id.clone() }),
            },
        }
    }
    st.live = live.len() as u64;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::Chunk;

    #[test]
    fn parses_the_documented_example() {
        let t = "# comment\n\nalloc fb0 33177600 contiguous\nalloc tex1 4M # trailing\nalloc x 0x1000\nfree fb0\n";
        let ops = parse(t).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0], Line { line: 3, op: Op::Alloc { id: "fb0".into(), size: 33_177_600, contiguous: true } });
        assert_eq!(ops[1].op, Op::Alloc { id: "tex1".into(), size: 4 << 20, contiguous: false });
        assert_eq!(ops[2].op, Op::Alloc { id: "x".into(), size: 4096, contiguous: false });
        assert_eq!(ops[3], Line { line: 6, op: Op::Free { id: "fb0".into() } });
    }

    #[test]
    fn bad_input_is_a_typed_error_with_its_line() {
        let e = |t: &str| parse(t).unwrap_err();
        assert_eq!(
            e("alloc a 1\nmalloc b 2"),
            TraceError { line: 2, kind: TraceErrorKind::UnknownOp("malloc".into()) }
        );
        assert_eq!(e("\n\nalloc a"), TraceError { line: 3, kind: TraceErrorKind::Missing("size") });
        assert_eq!(e("alloc"), TraceError { line: 1, kind: TraceErrorKind::Missing("object ID") });
        assert_eq!(e("alloc a 12Q"), TraceError { line: 1, kind: TraceErrorKind::BadSize("12Q".into()) });
        assert_eq!(e("alloc a 0"), TraceError { line: 1, kind: TraceErrorKind::ZeroSize });
        assert_eq!(e("alloc a 99999999999G").kind, TraceErrorKind::BadSize("99999999999G".into()));
        assert_eq!(e("alloc a 4K pinned").kind, TraceErrorKind::Unexpected("pinned".into()));
        assert_eq!(e("free a b").kind, TraceErrorKind::Unexpected("b".into()));
        assert_eq!(e("free").to_string(), "line 1: missing object ID");
    }

    #[test]
    fn replay_tracks_ids_and_tolerates_enospc() {
        let mut b = Buddy::new(1 << 20, Chunk::K4).unwrap();
        let ops = parse("alloc a 512K\nalloc big 1M\nfree big\nalloc c 4K\nfree a\n").unwrap();
        let st = replay(&mut b, &ops).unwrap();
        assert_eq!(st, ReplayStats { allocs: 2, enospc: 1, frees: 1, live: 1 });
        assert_eq!(b.free_bytes(), (1 << 20) - 4096);
        let dup = parse("alloc a 4K\nalloc a 4K").unwrap();
        assert_eq!(replay(&mut b, &dup), Err(ReplayError::DuplicateId { line: 2, id: "a".into() }));
        let unk = parse("free zz").unwrap();
        assert_eq!(replay(&mut b, &unk), Err(ReplayError::UnknownId { line: 1, id: "zz".into() }));
    }
}
