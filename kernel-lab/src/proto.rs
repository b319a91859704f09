//! What the guest sends back over virtio-serial, and the device facts it
//! reads from sysfs.
//!
//! The stream is one JSON line ([`GuestReport`]: kernel, device table,
//! timing, scenario facts) followed by exactly `results_len` bytes of
//! compact per-case answers ([`Observed`], in case order). The requests
//! themselves are not sent: the host regenerates them from the seed and the
//! device table (`gen::Gen` is deterministic).

use serde::{Deserialize, Serialize};
use validator::{Bar, BarKind, Device, PageSize};

/// Bumped whenever the stream layout changes, so that a stale guest binary
/// in an old initramfs is refused instead of misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// `IORESOURCE_IO` in a sysfs `resource` line's flags.
pub const IORESOURCE_IO: u64 = 0x100;
/// `IORESOURCE_MEM`.
pub const IORESOURCE_MEM: u64 = 0x200;

/// One BAR as sysfs shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarInfo {
    /// BAR number 0..=5 (= vfio-pci region index).
    pub index: u32,
    /// `"mem"` or `"io"`.
    pub kind: BarType,
    /// `pci_resource_start()`.
    pub start: u64,
    /// `pci_resource_len()`.
    pub len: u64,
}

/// The kind of a present BAR, spelled as in the device JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarType {
    /// `IORESOURCE_MEM`.
    #[serde(rename = "mem")]
    Mem,
    /// `IORESOURCE_IO`.
    #[serde(rename = "io")]
    Io,
}

/// A device the guest bound to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// QEMU device model (`ivshmem-plain`, `pci-testdev`, `edu`).
    pub name: String,
    /// PCI address, e.g. `0000:01:00.0`.
    pub bdf: String,
    /// IOMMU group number.
    pub group: u32,
    /// The kernel's page size.
    pub page_size: u64,
    /// Present BARs, by index.
    pub bars: Vec<BarInfo>,
}

impl DeviceInfo {
    /// The validator's view of the device.
    pub fn to_validator(&self) -> Device {
        let page = PageSize::from_bytes(self.page_size).unwrap_or_default();
        let mut d = Device::new(page);
        for b in &self.bars {
            let kind = match b.kind {
                BarType::Mem => BarKind::Mmio,
                BarType::Io => BarKind::Io,
            };
            d = d.with_bar(b.index as usize, Bar { kind, start: b.start, len: b.len });
        }
        d
    }

    /// BAR lengths for the generator (0 = absent).
    pub fn bar_lens(&self) -> [u64; 6] {
        let mut l = [0; 6];
        for b in &self.bars {
            if let Some(s) = l.get_mut(b.index as usize) {
                *s = b.len;
            }
        }
        l
    }

    /// The device JSON `nr-ranges check --device` reads.
    pub fn check_json(&self) -> String {
        #[derive(Serialize)]
        struct D<'a> {
            page_size: u64,
            bars: &'a [BarInfo],
        }
        serde_json::to_string(&D { page_size: self.page_size, bars: &self.bars }).unwrap_or_default()
    }
}

/// Why a sysfs `resource` file could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceError {
    /// Line `line` (1-based) is not three hex numbers.
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
}

impl std::fmt::Display for ResourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceError::BadLine { line, text } => {
                write!(f, "sysfs resource line {line} is not `start end flags` in hex: {text:?}")
            }
        }
    }
}

impl std::error::Error for ResourceError {}

/// Parses `/sys/bus/pci/devices/*/resource` (`resource_show()`: one
/// `0x%016llx 0x%016llx 0x%016llx` line per resource, BARs first) into the
/// present BARs among the first six lines. Length follows
/// `pci_resource_len()`: 0 when `end` is 0, else `end - start + 1`.
pub fn parse_resource(text: &str) -> Result<Vec<BarInfo>, ResourceError> {
    let mut bars = Vec::new();
    for (i, line) in text.lines().take(6).enumerate() {
        let bad = || ResourceError::BadLine { line: i + 1, text: line.to_string() };
        let mut nums = line.split_whitespace().map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16));
        let (Some(Ok(start)), Some(Ok(end)), Some(Ok(flags)), None) =
            (nums.next(), nums.next(), nums.next(), nums.next())
        else {
            return Err(bad());
        };
        if end == 0 {
            continue;
        }
        let kind = if flags & IORESOURCE_IO != 0 {
            BarType::Io
        } else if flags & IORESOURCE_MEM != 0 {
            BarType::Mem
        } else {
            continue;
        };
        let len = end.checked_sub(start).and_then(|l| l.checked_add(1)).ok_or_else(bad)?;
        bars.push(BarInfo { index: i as u32, kind, start, len });
    }
    Ok(bars)
}

/// One scenario fact: what was done and what the kernel answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// Scenario name.
    pub scenario: String,
    /// The step within it.
    pub step: String,
    /// What happened, e.g. `ok size=4096` or `EINVAL`.
    pub result: String,
}

/// The JSON line the guest sends first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GuestReport {
    /// [`PROTOCOL_VERSION`] of the guest that wrote it.
    pub protocol: u32,
    /// `uname -r` in the guest.
    pub kernel: String,
    /// Set when the guest could not run the batch; everything else may be empty.
    pub error: Option<String>,
    /// The devices, in the order the generator indexes them.
    pub devices: Vec<DeviceInfo>,
    /// Seed the batch used.
    pub seed: u64,
    /// Cases run.
    pub cases: u64,
    /// Nanoseconds spent in the case loop (generation, encoding, ioctl,
    /// lseek, close), measured by the guest's monotonic clock.
    pub loop_ns: u64,
    /// Nanoseconds from kernel start to the first case (`/proc/uptime`).
    pub setup_ns: u64,
    /// Scenario facts.
    pub facts: Vec<Fact>,
    /// Bytes of per-case answers after this line.
    pub results_len: u64,
    /// The errno of `VFIO_DEVICE_FEATURE(PROBE | GET | DMA_BUF)` on the
    /// first device when the kernel does not offer the feature (ENOTTY from
    /// `vfio_ioctl_device_feature()` on kernels before 6.19); the batch and
    /// the scenarios are then skipped. `None`: the probe succeeded.
    #[serde(default)]
    pub feature_absent: Option<i32>,
}

/// What the kernel answered to one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// 0 without an fd (PROBE).
    Ok,
    /// A dma-buf fd whose `lseek(SEEK_END)` answered this size.
    DmaBuf(u64),
    /// The ioctl failed with this errno.
    Errno(i32),
    /// A dma-buf fd came back but `lseek(SEEK_END)` failed with this errno.
    LseekFailed(i32),
    /// `uapi::ioctl::device_feature()` refused to send the argument.
    NotSent,
}

impl Observed {
    /// Appends the compact encoding: a tag byte, then a little-endian u64
    /// (dma-buf size) or u16 (errno).
    pub fn encode(self, out: &mut Vec<u8>) {
        match self {
            Observed::Ok => out.push(0),
            Observed::DmaBuf(size) => {
                out.push(1);
                out.extend_from_slice(&size.to_le_bytes());
            }
            Observed::Errno(e) => {
                out.push(2);
                out.extend_from_slice(&(e as u16).to_le_bytes());
            }
            Observed::LseekFailed(e) => {
                out.push(3);
                out.extend_from_slice(&(e as u16).to_le_bytes());
            }
            Observed::NotSent => out.push(4),
        }
    }

    /// Decodes one answer from the front of `bytes`, returning it and the rest.
    pub fn decode(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let u16_at = |r: &[u8]| Some(u16::from_le_bytes(r.get(..2)?.try_into().ok()?) as i32);
        Some(match tag {
            0 => (Observed::Ok, rest),
            1 => (Observed::DmaBuf(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)), &rest[8..]),
            2 => (Observed::Errno(u16_at(rest)?), &rest[2..]),
            3 => (Observed::LseekFailed(u16_at(rest)?), &rest[2..]),
            4 => (Observed::NotSent, rest),
            _ => return None,
        })
    }

    /// Human form: `ok`, `ok size=N`, or the errno's name.
    pub fn describe(self) -> String {
        match self {
            Observed::Ok => "ok (no fd)".into(),
            Observed::DmaBuf(s) => format!("ok dma-buf size={s}"),
            Observed::Errno(e) => KernelErrno(e).to_string(),
            Observed::LseekFailed(e) => format!("ok dma-buf, lseek failed {}", KernelErrno(e)),
            Observed::NotSent => "not sent".into(),
        }
    }
}

/// An errno as the kernel returned it, printed as its [`validator::Errno`]
/// name, or as `errno N` for a number the workspace does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelErrno(pub i32);

impl std::fmt::Display for KernelErrno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match validator::Errno::from_code(self.0) {
            Some(e) => write!(f, "{e}"),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// Why the guest's stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// Nothing arrived at all.
    Empty,
    /// The first line is missing or not a [`GuestReport`].
    BadHeader(String),
    /// The guest speaks another protocol version.
    Protocol {
        /// What the guest sent.
        got: u32,
    },
    /// Fewer answer bytes than announced (the guest died while writing).
    Truncated {
        /// Announced.
        want: u64,
        /// Received.
        got: u64,
    },
    /// An answer could not be decoded, or there were not `cases` of them.
    BadResults {
        /// Answers decoded before the problem.
        decoded: u64,
    },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Empty => write!(f, "the guest sent nothing"),
            StreamError::BadHeader(e) => write!(f, "the guest's report line is unreadable: {e}"),
            StreamError::Protocol { got } => {
                write!(
                    f,
                    "the guest speaks protocol {got}, this host {PROTOCOL_VERSION}: rebuild (the initramfs is stale)"
                )
            }
            StreamError::Truncated { want, got } => {
                write!(f, "the guest announced {want} bytes of results but only {got} arrived")
            }
            StreamError::BadResults { decoded } => write!(f, "the guest's results are corrupt after {decoded} cases"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Splits the guest's stream into its report and per-case answers.
pub fn parse_stream(bytes: &[u8]) -> Result<(GuestReport, Vec<Observed>), StreamError> {
    if bytes.is_empty() {
        return Err(StreamError::Empty);
    }
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| StreamError::BadHeader("no newline".into()))?;
    let report: GuestReport =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| StreamError::BadHeader(e.to_string()))?;
    if report.protocol != PROTOCOL_VERSION {
        return Err(StreamError::Protocol { got: report.protocol });
    }
    let body = &bytes[nl + 1..];
    if (body.len() as u64) < report.results_len {
        return Err(StreamError::Truncated { want: report.results_len, got: body.len() as u64 });
    }
    let mut rest = &body[..report.results_len as usize];
    let mut out = Vec::with_capacity(report.cases as usize);
    while !rest.is_empty() {
        let (o, r) = Observed::decode(rest).ok_or(StreamError::BadResults { decoded: out.len() as u64 })?;
        out.push(o);
        rest = r;
    }
    if report.error.is_none() && out.len() as u64 != report.cases {
        return Err(StreamError::BadResults { decoded: out.len() as u64 });
    }
    Ok((report, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IVSHMEM_RESOURCE: &str = "0x00000000fe800000 0x00000000fe8000ff 0x0000000000040200
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000fd0000000 0x0000000fd0ffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
";

    #[test]
    fn resource_parsing_follows_pci_resource_len() {
        let bars = parse_resource(IVSHMEM_RESOURCE).unwrap();
        assert_eq!(
            bars,
            vec![
                BarInfo { index: 0, kind: BarType::Mem, start: 0xfe80_0000, len: 0x100 },
                BarInfo { index: 2, kind: BarType::Mem, start: 0xf_d000_0000, len: 16 << 20 },
            ]
        );
        let io = parse_resource("0x000000000000c000 0x000000000000c0ff 0x0000000000040101\n").unwrap();
        assert_eq!(io, vec![BarInfo { index: 0, kind: BarType::Io, start: 0xc000, len: 0x100 }]);
        assert!(matches!(parse_resource("0x0 0x1\n"), Err(ResourceError::BadLine { line: 1, .. })));
        assert!(matches!(parse_resource("zz 0x1 0x2\n"), Err(ResourceError::BadLine { line: 1, .. })));
        assert!(parse_resource("0x10 0x0 0x200\n").unwrap().is_empty(), "end 0 is an absent BAR");
        assert!(matches!(parse_resource("0x10 0x0f 0x200\n"), Err(ResourceError::BadLine { line: 1, .. })));
    }

    #[test]
    fn device_maps_to_validator_and_check_json() {
        let d = DeviceInfo {
            name: "ivshmem-plain".into(),
            bdf: "0000:01:00.0".into(),
            group: 8,
            page_size: 4096,
            bars: parse_resource(IVSHMEM_RESOURCE).unwrap(),
        };
        let v = d.to_validator();
        assert_eq!(v.bars[2], Bar::mmio(0xf_d000_0000, 16 << 20));
        assert!(v.bars[1].is_absent());
        assert_eq!(d.bar_lens(), [0x100, 0, 16 << 20, 0, 0, 0]);
        assert_eq!(
            d.check_json(),
            r#"{"page_size":4096,"bars":[{"index":0,"kind":"mem","start":4269801472,"len":256},{"index":2,"kind":"mem","start":67914170368,"len":16777216}]}"#
        );
    }

    #[test]
    fn stream_round_trip_and_damage() {
        let answers =
            [Observed::Ok, Observed::DmaBuf(1 << 40), Observed::Errno(22), Observed::LseekFailed(9), Observed::NotSent];
        let mut body = Vec::new();
        for a in answers {
            a.encode(&mut body);
        }
        let report = GuestReport {
            protocol: PROTOCOL_VERSION,
            kernel: "7.2.13+deb14-cloud-amd64".into(),
            cases: answers.len() as u64,
            results_len: body.len() as u64,
            ..Default::default()
        };
        let mut stream = serde_json::to_vec(&report).unwrap();
        stream.push(b'\n');
        stream.extend_from_slice(&body);
        let (r, got) = parse_stream(&stream).unwrap();
        assert_eq!(r, report);
        assert_eq!(got, answers);

        assert_eq!(parse_stream(b""), Err(StreamError::Empty));
        assert!(matches!(parse_stream(b"garbage\n"), Err(StreamError::BadHeader(_))));
        assert!(matches!(parse_stream(&stream[..stream.len() - 1]), Err(StreamError::Truncated { .. })));
        let old = GuestReport { protocol: 0, ..report.clone() };
        let mut s = serde_json::to_vec(&old).unwrap();
        s.push(b'\n');
        assert_eq!(parse_stream(&s), Err(StreamError::Protocol { got: 0 }));
        let short = GuestReport { cases: 6, ..report };
        let mut s = serde_json::to_vec(&short).unwrap();
        s.push(b'\n');
        s.extend_from_slice(&body);
        assert_eq!(parse_stream(&s), Err(StreamError::BadResults { decoded: 5 }));
    }

    #[test]
    fn errno_names() {
        use validator::Errno;
        assert_eq!(KernelErrno(Errno::EINVAL.code()).to_string(), "EINVAL");
        assert_eq!(KernelErrno(Errno::EOVERFLOW.code()).to_string(), "EOVERFLOW");
        assert_eq!(KernelErrno(Errno::EBADF.code()).to_string(), "EBADF");
        let unnamed = (1..200).find(|&c| Errno::from_code(c).is_none()).unwrap();
        assert_eq!(KernelErrno(unnamed).to_string(), format!("errno {unnamed}"));
    }
}
