//! `kernel-lab replay`: explicit requests (fuzz corpora, or any directory
//! of target inputs) through the real kernel, every answer diffed with
//! `validator::validate(.., Policy::Linux)` by the same [`Diff`] as the
//! seeded batch.
//!
//! Every file under the given paths is one input. Its format says how it
//! becomes a request:
//!
//! - [`InputFormat::Bytes`]: the `bytes` fuzz target's input, the raw ioctl
//!   argument (`uapi::Request::decode`: exactly these bytes are readable).
//! - [`InputFormat::Requests`]: a request file ([`REQUEST_MAGIC`], then one
//!   request in the kernel corpus's request encoding,
//!   [`corpus::encode_request`]). `nr-ranges-proptests`'s example
//!   `structured-requests` writes one per `structured` fuzz input (the
//!   scenario's request; its device, topology and fault plan are the
//!   model's and are not sent), since this crate cannot depend on the
//!   property crate that defines the scenario.
//!
//! `lifecycle` inputs are operation sequences against the model, not
//! requests: naming that format is an error ([`ReplayError::Lifecycle`]).
//!
//! The host sends the requests that can be sent to the guest in one file of
//! the initramfs ([`CASES_FILE`], [`encode_cases`]); the guest runs each on
//! every device it opened, in device order, through the batch's `observe()`
//! (guard pages for windows the kernel reads past), and streams the answers
//! as the batch does. An input that cannot be sent is counted under its
//! [`Unsendable`] reason and listed, never dropped silently: fewer than 8
//! bytes, a window too large to write out, or a feature index other than
//! DMA_BUF (outside the validator's model, and a handler that may write
//! back or change the device's state).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uapi::{OwnedRequest, Request, MAX_ENCODED_WINDOW, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_MASK};

use crate::conformance::corpus;
use crate::conformance::diff::{Diff, DiffSummary};
use crate::conformance::gen::Case;
use crate::proto::{DeviceInfo, Observed};

/// The guest's mode word on the kernel command line.
pub const MODE: &str = "nrlab.mode=replay";

/// The case list's path in the initramfs (the guest reads `/` + this).
pub const CASES_FILE: &str = "replay.cases";

/// The first bytes of the case list ([`encode_cases`]).
pub const CASES_MAGIC: &[u8] = b"nr-ranges-replay-cases/1\n";

/// The first bytes of a request file ([`encode_request_file`]).
pub const REQUEST_MAGIC: &[u8] = b"nr-ranges-request/1\n";

/// How the files under a path become requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// The `bytes` fuzz target's input: the raw ioctl argument.
    Bytes,
    /// A request file ([`REQUEST_MAGIC`]).
    Requests,
}

impl InputFormat {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Bytes => "bytes",
            InputFormat::Requests => "requests",
        }
    }

    /// Parses a `--format` value; the fuzz targets whose inputs are not
    /// (yet) requests get an error that says what to do instead.
    pub fn parse(s: &str) -> Result<Self, ReplayError> {
        match s {
            "bytes" => Ok(InputFormat::Bytes),
            "requests" => Ok(InputFormat::Requests),
            "structured" => Err(ReplayError::Structured),
            "lifecycle" => Err(ReplayError::Lifecycle),
            other => Err(ReplayError::UnknownFormat(other.to_string())),
        }
    }
}

/// Why a replay could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// `--format structured`: the scenario type lives in the property crate.
    Structured,
    /// `--format lifecycle`: operation sequences, not requests.
    Lifecycle,
    /// A `--format` that is none of the above.
    UnknownFormat(String),
    /// Neither one format for all paths nor one per path.
    FormatCount {
        /// Formats given.
        formats: usize,
        /// Paths given.
        paths: usize,
    },
    /// The paths hold no file at all.
    NoInputs,
    /// A path could not be read.
    Io(String),
    /// The guest's case list is malformed.
    BadCases(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Structured => write!(
                f,
                "structured inputs are props::scenario::Scenario values, defined in nr-ranges-proptests, which \
                 kernel-lab cannot depend on: convert them first with `cargo run -p nr-ranges-proptests --features \
                 lab-seeds --example structured-requests -- OUT IN...` and replay OUT with --format requests \
                 (scripts/lab-replay.sh does both)"
            ),
            ReplayError::Lifecycle => write!(
                f,
                "lifecycle inputs are operation sequences against the model (export, attach, map, revoke, ...), \
                 not VFIO_DEVICE_FEATURE requests: there is nothing to send to the kernel"
            ),
            ReplayError::UnknownFormat(s) => {
                write!(f, "unknown input format {s:?}; known: bytes, requests (structured after conversion)")
            }
            ReplayError::FormatCount { formats, paths } => {
                write!(f, "{formats} --format values for {paths} paths: give one for all paths, or one per path")
            }
            ReplayError::NoInputs => write!(f, "no input file under the given paths"),
            ReplayError::Io(e) => write!(f, "{e}"),
            ReplayError::BadCases(e) => write!(f, "replay case list: {e}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Why an input cannot be sent to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unsendable {
    /// Fewer than 8 bytes: no `struct vfio_device_feature` header, which
    /// `uapi::ioctl` refuses to send (the `bytes` target stops there too).
    NoFeatureHeader,
    /// A readable window larger than `uapi::MAX_ENCODED_WINDOW`: its bytes
    /// are not written out.
    WindowTooLarge,
    /// A feature index other than DMA_BUF (`flags & VFIO_DEVICE_FEATURE_MASK`):
    /// the validator stops at `Outcome::OtherFeature` (outside its model),
    /// `uapi::ioctl` refuses such an argument shorter than its argsz (the
    /// handler may write argsz bytes back), and a handler such as
    /// LOW_POWER_ENTRY would change the device under the later cases.
    OtherFeature,
    /// A `requests` input that is not a request file.
    NotARequestFile,
}

impl Unsendable {
    /// The reason as reports spell it.
    pub fn label(self) -> &'static str {
        match self {
            Unsendable::NoFeatureHeader => "fewer than 8 bytes (no vfio_device_feature header)",
            Unsendable::WindowTooLarge => "readable window larger than uapi::MAX_ENCODED_WINDOW",
            Unsendable::OtherFeature => "feature index other than DMA_BUF (outside the validator's model)",
            Unsendable::NotARequestFile => "not a request file (nr-ranges-request/1)",
        }
    }
}

/// The request a `bytes` input is: what `Request::decode` reads, owned.
/// Sent as `OwnedRequest::encode_into` writes it, which is the input
/// itself except that the bytes of a partial dma-buf header or of a partial
/// trailing range read as zero: the kernel reads those only inside a copy
/// that faults (the header or the whole range array), so their values
/// cannot change its answer.
pub fn request_from_bytes(data: &[u8]) -> Result<OwnedRequest, Unsendable> {
    sendable(owned_from_bytes(data)?)
}

/// `Request::decode(data)`, owned.
fn owned_from_bytes(data: &[u8]) -> Result<OwnedRequest, Unsendable> {
    let r = Request::decode(data).map_err(|_| Unsendable::NoFeatureHeader)?;
    Ok(OwnedRequest { feature: r.feature, dma_buf: r.dma_buf, ranges: r.ranges.iter().collect(), readable: r.readable })
}

/// The request of a request file.
pub fn request_from_file(data: &[u8]) -> Result<OwnedRequest, Unsendable> {
    let body = data.strip_prefix(REQUEST_MAGIC).ok_or(Unsendable::NotARequestFile)?;
    match corpus::decode_request(body) {
        Some((q, [])) => sendable(q),
        _ => Err(Unsendable::NotARequestFile),
    }
}

fn sendable(q: OwnedRequest) -> Result<OwnedRequest, Unsendable> {
    if q.feature.flags & VFIO_DEVICE_FEATURE_MASK != VFIO_DEVICE_FEATURE_DMA_BUF {
        return Err(Unsendable::OtherFeature);
    }
    if q.readable > MAX_ENCODED_WINDOW {
        return Err(Unsendable::WindowTooLarge);
    }
    Ok(q)
}

/// A request file: [`REQUEST_MAGIC`] and the request.
pub fn encode_request_file(q: &OwnedRequest) -> Vec<u8> {
    let mut out = REQUEST_MAGIC.to_vec();
    corpus::encode_request(q, &mut out);
    out
}

/// The guest's case list: [`CASES_MAGIC`], a little-endian `u32` count,
/// the requests ([`corpus::encode_request`]).
pub fn encode_cases(reqs: &[&OwnedRequest]) -> Result<Vec<u8>, ReplayError> {
    let n = u32::try_from(reqs.len()).map_err(|_| ReplayError::BadCases(format!("{} requests", reqs.len())))?;
    let mut out = CASES_MAGIC.to_vec();
    out.extend_from_slice(&n.to_le_bytes());
    for q in reqs {
        corpus::encode_request(q, &mut out);
    }
    Ok(out)
}

/// Reads [`encode_cases`] back.
pub fn decode_cases(bytes: &[u8]) -> Result<Vec<OwnedRequest>, ReplayError> {
    let body = bytes.strip_prefix(CASES_MAGIC).ok_or_else(|| ReplayError::BadCases("no magic line".into()))?;
    let (n, mut rest) = body.split_first_chunk::<4>().ok_or_else(|| ReplayError::BadCases("no count".into()))?;
    let n = u32::from_le_bytes(*n);
    let mut out = Vec::new();
    for i in 0..n {
        let (q, r) =
            corpus::decode_request(rest).ok_or_else(|| ReplayError::BadCases(format!("request {i} of {n}")))?;
        out.push(q);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(ReplayError::BadCases(format!("{} bytes after {n} requests", rest.len())));
    }
    Ok(out)
}

/// One input that can be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The file (as found under the path given).
    pub name: String,
    /// Its request.
    pub request: OwnedRequest,
}

/// A path given and what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The path as given.
    pub path: String,
    /// Its format.
    pub format: InputFormat,
    /// Files found under it.
    pub files: u64,
}

/// Every input under the paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The paths, in the order given.
    pub sources: Vec<Source>,
    /// The inputs that can be sent, in path order, each path's files sorted.
    pub sendable: Vec<Input>,
    /// The others: reason label to file names.
    pub unsendable: BTreeMap<String, Vec<String>>,
}

impl Inputs {
    /// Files read.
    pub fn files(&self) -> u64 {
        self.sources.iter().map(|s| s.files).sum()
    }
}

/// Pairs paths with formats: one format for all, or one per path.
pub fn pair_formats(paths: &[PathBuf], formats: &[InputFormat]) -> Result<Vec<(PathBuf, InputFormat)>, ReplayError> {
    match formats.len() {
        0 => Ok(paths.iter().map(|p| (p.clone(), InputFormat::Bytes)).collect()),
        1 => Ok(paths.iter().map(|p| (p.clone(), formats[0])).collect()),
        n if n == paths.len() => Ok(paths.iter().cloned().zip(formats.iter().copied()).collect()),
        n => Err(ReplayError::FormatCount { formats: n, paths: paths.len() }),
    }
}

/// Every regular file under `path` (itself if it is one), sorted by path.
fn files_under(path: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    let meta = std::fs::metadata(path).map_err(|e| ReplayError::Io(format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| ReplayError::Io(format!("read {}: {e}", d.display())))?;
        for e in rd {
            let p = e.map_err(|e| ReplayError::Io(format!("read {}: {e}", d.display())))?.path();
            let m = std::fs::metadata(&p).map_err(|e| ReplayError::Io(format!("{}: {e}", p.display())))?;
            if m.is_dir() {
                dirs.push(p);
            } else if m.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every input under `paths`.
pub fn collect(paths: &[(PathBuf, InputFormat)]) -> Result<Inputs, ReplayError> {
    let mut inputs = Inputs::default();
    for (path, format) in paths {
        let files = files_under(path)?;
        inputs.sources.push(Source { path: path.display().to_string(), format: *format, files: files.len() as u64 });
        for f in files {
            let data = std::fs::read(&f).map_err(|e| ReplayError::Io(format!("read {}: {e}", f.display())))?;
            let name = f.display().to_string();
            let req = match format {
                InputFormat::Bytes => request_from_bytes(&data),
                InputFormat::Requests => request_from_file(&data),
            };
            match req {
                Ok(request) => inputs.sendable.push(Input { name, request }),
                Err(why) => inputs.unsendable.entry(why.label().to_string()).or_default().push(name),
            }
        }
    }
    if inputs.files() == 0 {
        return Err(ReplayError::NoInputs);
    }
    Ok(inputs)
}

/// Compares the guest's answers with the validator: answer `i` is input
/// `i / devices.len()` on device `i % devices.len()`, as the guest runs
/// them. `None` when the answers are not one per input and device.
pub fn diff_inputs(devices: &[DeviceInfo], inputs: &[Input], observed: &[Observed]) -> Option<DiffSummary> {
    let nd = devices.len();
    if nd == 0 || observed.len() != inputs.len().checked_mul(nd)? {
        return None;
    }
    let mut d = Diff::new(devices);
    for (k, (input, answers)) in inputs.iter().zip(observed.chunks_exact(nd)).enumerate() {
        let mut case = Case { device: 0, request: input.request.clone() };
        for (dev, &got) in answers.iter().enumerate() {
            case.device = dev;
            d.add((k * nd + dev) as u64, &case, got, || Some(input.name.clone()));
        }
    }
    Some(d.finish())
}

/// `kernel-lab replay --report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// `uname -r` in the guest.
    pub kernel: String,
    /// The Debian package (ABI, version, suite) or the lab kernel.
    pub kernel_package: String,
    /// Why this kernel was picked when it is not the one asked for.
    pub kernel_note: Option<String>,
    /// When the replay ran, UTC.
    pub date: String,
    /// The paths and what they held.
    pub sources: Vec<Source>,
    /// Files read.
    pub inputs: u64,
    /// Inputs sent (each to every device).
    pub sent: u64,
    /// Inputs that could not be sent: reason to file names.
    pub unsendable: BTreeMap<String, Vec<String>>,
    /// The devices the guest opened, in case order.
    pub devices: Vec<DeviceInfo>,
    /// Cases run: inputs sent x devices.
    pub cases: u64,
    /// Cases where the kernel and `validate(.., Policy::Linux)` disagreed.
    pub disagreements: u64,
    /// How often each kernel answer occurred.
    pub kernel_answers: BTreeMap<String, u64>,
    /// How often each validator check decided a case.
    pub predicted_checks: BTreeMap<String, u64>,
    /// Disagreements by class, with the input file of the first example.
    pub disagreement_classes: Vec<crate::conformance::diff::DisagreementClass>,
    /// Seconds in the guest's case loop.
    pub guest_loop_seconds: f64,
    /// Seconds from QEMU's start to its exit.
    pub boot_and_run_seconds: f64,
    /// Seconds of the whole command.
    pub wall_seconds: f64,
    /// Set when the kernel does not offer the feature (the probe's errno).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_absent: Option<String>,
    /// The kernel's sanitizer report lines at the end of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sanitizer: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::diff::predict;
    use crate::conformance::diff::tests::devices;
    use crate::conformance::gen::Gen;
    use uapi::{DMA_BUF_HEADER_SIZE, DMA_RANGE_SIZE, FEATURE_HEADER_SIZE};

    fn repo_corpus(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
    }

    /// The input with the bytes the kernel can only meet inside a faulting
    /// copy set to zero: a partial dma-buf header, a partial trailing range.
    fn zero_unreadable_parts(data: &[u8]) -> Vec<u8> {
        let mut want = data.to_vec();
        let data_len = data.len() - FEATURE_HEADER_SIZE;
        if data_len < DMA_BUF_HEADER_SIZE {
            want[FEATURE_HEADER_SIZE..].fill(0);
        } else {
            let partial = (data_len - DMA_BUF_HEADER_SIZE) % DMA_RANGE_SIZE;
            let n = want.len();
            want[n - partial..].fill(0);
        }
        want
    }

    #[test]
    fn a_bytes_input_is_sent_as_itself_and_judged_as_the_bytes_target_decodes_it() {
        let mut inputs: Vec<Vec<u8>> =
            files_under(&repo_corpus("bytes")).unwrap().iter().map(|f| std::fs::read(f).unwrap()).collect();
        assert!(inputs.len() > 50, "the committed bytes corpus");
        // Cut points: no dma-buf header, a partial one, a partial range.
        let long = inputs.iter().find(|d| d.len() >= 8 + 16 + 32).unwrap().clone();
        for cut in [8, 8 + 5, 8 + 16 + 7, 8 + 16 + 16 + 3] {
            inputs.push(long[..cut].to_vec());
        }
        // The same with feature index 3 (LOW_POWER_ENTRY): not sent.
        let mut low_power = long.clone();
        low_power[4..6].copy_from_slice(&3u16.to_ne_bytes());
        inputs.push(low_power);
        let mut other = 0;
        let mut short = 0;
        for data in &inputs {
            // The campaign keeps inputs shorter than the feature header (they reach
            // the decoder's first check); the kernel never sees them.
            if data.len() < FEATURE_HEADER_SIZE {
                assert_eq!(request_from_bytes(data), Err(Unsendable::NoFeatureHeader));
                short += 1;
                continue;
            }
            let q = owned_from_bytes(data).unwrap();
            assert_eq!(q.request(), Request::decode(data).unwrap(), "validator sees what the target sees");
            let index = u32::from_ne_bytes(data[4..8].try_into().unwrap()) & 0xffff;
            if index == 11 {
                assert_eq!(request_from_bytes(data), Ok(q.clone()));
            } else {
                assert_eq!(request_from_bytes(data), Err(Unsendable::OtherFeature));
                other += 1;
            }
            let mut sent = Vec::new();
            q.encode_into(&mut sent).unwrap();
            assert_eq!(sent, zero_unreadable_parts(data));
            // The request file and the case list carry it unchanged.
            assert_eq!(request_from_file(&encode_request_file(&q)), request_from_bytes(data));
        }
        // The campaign's corpus holds inputs with other feature indices too; the
        // LOW_POWER_ENTRY copy is one of the refused ones whatever the corpus holds.
        assert_eq!(request_from_bytes(inputs.last().unwrap()), Err(Unsendable::OtherFeature));
        assert!((1..inputs.len() / 10).contains(&other), "{other} of {} inputs ask for another feature", inputs.len());
        assert!(short < inputs.len() / 10, "{short} of {} inputs are shorter than the feature header", inputs.len());
        for n in 0..8 {
            assert_eq!(request_from_bytes(&long[..n]), Err(Unsendable::NoFeatureHeader));
        }
    }

    #[test]
    fn the_case_list_round_trips_and_refuses_damage() {
        let devs = devices();
        let mut gen = Gen::new(3, vec![devs[0].bar_lens()]);
        let mut reqs: Vec<OwnedRequest> = (0..500).map(|_| gen.next_case().request).collect();
        reqs.push(OwnedRequest::default());
        let refs: Vec<&OwnedRequest> = reqs.iter().collect();
        let bytes = encode_cases(&refs).unwrap();
        assert_eq!(decode_cases(&bytes).unwrap(), reqs);
        assert!(decode_cases(&bytes[..bytes.len() - 1]).is_err(), "cut short");
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_cases(&extra).is_err(), "trailing bytes");
        assert!(decode_cases(&bytes[1..]).is_err(), "no magic");

        // A request file: one request, nothing after it; a window too
        // large to write out is refused, not cut.
        let q = &reqs[7];
        let mut f = encode_request_file(q);
        assert_eq!(request_from_file(&f), Ok(q.clone()));
        f.push(0);
        assert_eq!(request_from_file(&f), Err(Unsendable::NotARequestFile));
        assert_eq!(request_from_file(b"nr-ranges-request/1\n\x01"), Err(Unsendable::NotARequestFile));
        let wide = OwnedRequest { readable: MAX_ENCODED_WINDOW + 1, ..q.clone() };
        assert_eq!(request_from_file(&encode_request_file(&wide)), Err(Unsendable::WindowTooLarge));
        // A run length that would expand to more ranges than any window holds.
        let mut huge = REQUEST_MAGIC.to_vec();
        corpus::encode_request(&OwnedRequest::default(), &mut huge);
        let runs_at = huge.len() - 4;
        huge.truncate(runs_at);
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 16]);
        assert_eq!(request_from_file(&huge), Err(Unsendable::NotARequestFile));
    }

    #[test]
    fn collect_reads_every_file_sorted_and_lists_what_cannot_be_sent() {
        let dir = std::env::temp_dir().join(format!("nr-ranges-replay-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b/sub")).unwrap();
        let q = OwnedRequest::well_formed(2, 2, &[uapi::DmaRange::new(0, 4096)]).unwrap();
        std::fs::write(dir.join("b/z"), q.encode().unwrap()).unwrap();
        std::fs::write(dir.join("b/sub/a"), q.encode().unwrap()).unwrap();
        std::fs::write(dir.join("b/short"), [1, 2, 3]).unwrap();
        std::fs::create_dir_all(dir.join("r")).unwrap();
        std::fs::write(dir.join("r/one"), encode_request_file(&q)).unwrap();
        std::fs::write(dir.join("r/junk"), b"junk").unwrap();
        let paths = [dir.join("b"), dir.join("r")];
        let pairs = pair_formats(&paths, &[InputFormat::Bytes, InputFormat::Requests]).unwrap();
        let got = collect(&pairs).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.files(), 5);
        let names: Vec<String> = got.sendable.iter().map(|i| i.name.clone()).collect();
        let d = dir.display();
        assert_eq!(names, [format!("{d}/b/sub/a"), format!("{d}/b/z"), format!("{d}/r/one")]);
        assert!(got.sendable.iter().all(|i| i.request == q));
        assert_eq!(got.unsendable[Unsendable::NoFeatureHeader.label()], [format!("{d}/b/short")]);
        assert_eq!(got.unsendable[Unsendable::NotARequestFile.label()], [format!("{d}/r/junk")]);
        assert_eq!(
            pair_formats(&paths, &[InputFormat::Bytes; 3]),
            Err(ReplayError::FormatCount { formats: 3, paths: 2 })
        );
        assert_eq!(InputFormat::parse("lifecycle"), Err(ReplayError::Lifecycle));
        assert_eq!(InputFormat::parse("structured"), Err(ReplayError::Structured));
        assert!(ReplayError::Lifecycle.to_string().contains("not VFIO_DEVICE_FEATURE requests"));
    }

    #[test]
    fn explicit_cases_that_agree_have_no_disagreements_and_a_kernel_that_lies_is_classified() {
        let mut devs = devices();
        let mut second = devs[0].clone();
        second.name = "pci-testdev".into();
        second.bdf = "0000:00:02.0".into();
        second.bars[1].start = 0xf_e000_0000;
        devs.push(second);
        let models: Vec<validator::Device> = devs.iter().map(DeviceInfo::to_validator).collect();
        let inputs: Vec<Input> = files_under(&repo_corpus("bytes"))
            .unwrap()
            .iter()
            .filter_map(|f| {
                let request = request_from_bytes(&std::fs::read(f).ok()?).ok()?;
                Some(Input { name: f.display().to_string(), request })
            })
            .collect();
        // The answers an honest kernel gives, input-major, device-minor.
        let mut answers = Vec::new();
        for i in &inputs {
            for (d, m) in models.iter().enumerate() {
                answers.push(predict(&Case { device: d, request: i.request.clone() }, m).0);
            }
        }
        let s = diff_inputs(&devs, &inputs, &answers).unwrap();
        assert_eq!((s.cases, s.disagreements), (2 * inputs.len() as u64, 0));
        assert!(s.kernel_answers.contains_key("ok dma-buf") && s.kernel_answers.contains_key("EINVAL"));
        assert!(diff_inputs(&devs, &inputs, &answers[1..]).is_none(), "one answer short");

        // A kernel that answers ENOTTY whatever the second device exports.
        let lied: Vec<usize> =
            (0..answers.len()).filter(|k| k % 2 == 1 && matches!(answers[*k], Observed::DmaBuf(_))).collect();
        assert!(!lied.is_empty(), "the corpus exports something from the second device");
        for &k in &lied {
            answers[k] = Observed::Errno(25);
        }
        let s = diff_inputs(&devs, &inputs, &answers).unwrap();
        assert_eq!((s.disagreements, s.classes.len()), (lied.len() as u64, 1));
        let c = &s.classes[0];
        assert_eq!(
            (c.predicted_check.as_str(), c.kernel.as_str(), c.device_name.as_str()),
            ("DmaBuf", "ENOTTY", "pci-testdev 0000:00:02.0")
        );
        let first = &inputs[lied[0] / 2];
        assert_eq!((c.first_case, c.first_input.as_deref()), (lied[0] as u64, Some(first.name.as_str())));
        assert_eq!(c.request, Case { device: 1, request: first.request.clone() }.to_json());
    }
}
