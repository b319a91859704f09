//! The `nr-ranges` command-line tool, as a library: request-line and
//! device-file parsing, verdict formatting, and the line loops of
//! `nr-ranges check` and `nr-ranges encode`. The formats are documented in
//! `docs/cli-formats.md`.

mod device;
mod num;
mod request;

use core::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

pub use device::{load_device, parse_device};
pub use num::{parse_hex, NUMBER_FORMS};
pub use request::{RequestLine, FIELDS};
use validator::{Device, Outcome, Policy, Reject, Stage};

/// One verdict line of `nr-ranges check`, owned (it outlives the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The ioctl returns a dma-buf fd of `size` bytes: `{"result":"fd","size":N}`.
    Fd {
        /// The dma-buf's size.
        size: u64,
    },
    /// A PROBE that succeeds: `{"result":"probe"}`.
    Probe,
    /// A feature other than DMA_BUF, outside the model:
    /// `{"result":"other-feature","feature":N}`.
    OtherFeature {
        /// The feature index.
        feature: u16,
    },
    /// A refusal: `{"errno":"EINVAL","check":"NoRanges"}`, plus `"index":N`
    /// for the per-range checks.
    Reject(Reject),
}

impl From<validator::Verdict<'_>> for Verdict {
    fn from(v: validator::Verdict<'_>) -> Self {
        match v {
            Ok(Outcome::DmaBuf(export)) => Verdict::Fd { size: export.size },
            Ok(Outcome::Probe) => Verdict::Probe,
            Ok(Outcome::OtherFeature { feature }) => Verdict::OtherFeature { feature },
            Err(r) => Verdict::Reject(r),
        }
    }
}

impl fmt::Display for Verdict {
    /// The verdict as one line of JSON, without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Fd { size } => write!(f, r#"{{"result":"fd","size":{size}}}"#),
            Verdict::Probe => f.write_str(r#"{"result":"probe"}"#),
            Verdict::OtherFeature { feature } => write!(f, r#"{{"result":"other-feature","feature":{feature}}}"#),
            Verdict::Reject(r) => {
                write!(f, r#"{{"errno":"{}","check":"{}""#, r.errno().name(), r.name())?;
                if let Some(index) = r.range_index() {
                    write!(f, r#","index":{index}"#)?;
                }
                f.write_str("}")
            }
        }
    }
}

/// The verdict for one parsed request line. Fails only where the line's
/// headers cannot be encoded (more than 2^32-1 ranges without explicit
/// `nr_ranges`/`argsz`).
pub fn check_line(line: RequestLine, device: &Device, policy: Policy) -> Result<Verdict, uapi::EncodeError> {
    let owned = line.into_request()?;
    Ok(validator::validate(&owned.request(), device, policy).into())
}

/// Appends `bytes` to `out` as lowercase hex.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

/// The message of a serde_json error, without serde_json's " at line L
/// column C" (a request line is always line 1 of its own document); syntax
/// errors keep the column and say "invalid JSON".
pub(crate) fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    match e.classify() {
        serde_json::error::Category::Data => msg.to_owned(),
        _ => format!("invalid JSON: {msg} at column {}", e.column()),
    }
}

/// What to do with each request line.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// Print the verdict of `device` under `policy`.
    Check {
        /// The device the requests are made on.
        device: &'a Device,
        /// The rules.
        policy: Policy,
    },
    /// Print the ioctl argument's bytes as hex.
    Encode,
}

/// What a run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Lines read, blank ones included (the number of the last line).
    pub lines: u64,
    /// Lines answered with an output line.
    pub answered: u64,
    /// Malformed lines: reported on the error stream, not answered.
    pub malformed: u64,
}

impl Summary {
    /// The exit status: 1 if any line was malformed, else 0.
    pub fn exit_status(&self) -> u8 {
        u8::from(self.malformed > 0)
    }
}

/// Reads request lines from `input` until end of input; writes one output
/// line per well-formed, non-blank line to `output` and one `line N: ...`
/// message per malformed line to `errors`.
///
/// `output` is buffered and flushed whenever the input has no more data
/// ready (so an interactive or coprocess user gets each answer before it
/// sends the next request) and at the end. An `Err` is an I/O error on one
/// of the streams.
pub fn run(mode: Mode<'_>, input: impl Read, output: impl Write, mut errors: impl Write) -> io::Result<Summary> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = BufWriter::with_capacity(1 << 16, output);
    let mut summary = Summary::default();
    let mut buf = Vec::new();
    let mut hex = Vec::new();
    let mut text = String::new();
    loop {
        if input.buffer().is_empty() {
            // The next read may block: hand over what is answered so far.
            output.flush()?;
        }
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        summary.lines += 1;
        let line = trim_line_end(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = RequestLine::parse(line).and_then(|req| match mode {
            Mode::Check { device, policy } => {
                check_line(req, device, policy).map(Answer::Verdict).map_err(|e| e.to_string())
            }
            Mode::Encode => req.into_request().map(|r| Answer::Bytes(r.written_bytes())).map_err(|e| e.to_string()),
        });
        match answer {
            Ok(Answer::Verdict(v)) => writeln!(output, "{v}")?,
            Ok(Answer::Bytes(bytes)) => {
                hex.clear();
                push_hex(&mut hex, &bytes);
                hex.push(b'\n');
                output.write_all(&hex)?;
            }
            Err(msg) => {
                summary.malformed += 1;
                text.clear();
                use fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = writeln!(text, "line {}: {msg}", summary.lines);
                errors.write_all(text.as_bytes())?;
                continue;
            }
        }
        summary.answered += 1;
    }
    output.flush()?;
    errors.flush()?;
    Ok(summary)
}

enum Answer {
    Verdict(Verdict),
    Bytes(Vec<u8>),
}

/// The line without its `\n` or `\r\n`.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The "check names" table of `docs/cli-formats.md`: every [`Reject`]
/// variant with its errno, in check order, as Markdown.
pub fn check_names_table() -> String {
    let mut t = String::from(
        "| # | check | errno | per-range (`index`) | policy | kernel function / origin |\n\
         |---|-------|-------|---------------------|--------|--------------------------|\n",
    );
    for (i, r) in Reject::ALL.iter().enumerate() {
        use fmt::Write as _;
        let _ = writeln!(
            t,
            "| {} | `{}` | {} ({}) | {} | {} | {} |",
            i + 1,
            r.name(),
            r.errno().name(),
            r.errno().code(),
            if r.range_index().is_some() { "yes" } else { "no" },
            if r.is_strict_only() { "strict only" } else { "linux, strict" },
            r.kernel_function(),
        );
    }
    t
}

/// The line that opens the generated part of the README's "What Linux 7.2
/// checks, in order".
pub const README_CHECKS_BEGIN: &str =
    "<!-- generated from validator/src/reject.rs by `cargo run -p nr-ranges --example check-names-table -- --write` -->";
/// The line that closes it.
pub const README_CHECKS_END: &str = "<!-- end of generated check list -->";

/// The check list of the README ("What Linux 7.2 checks, in order"), from
/// the validator's check table: one numbered step per [`Stage`] that has
/// Linux checks, each check as `summary: ERRNO`, then the Strict rules and
/// where they run. Delimited by [`README_CHECKS_BEGIN`] and
/// [`README_CHECKS_END`], both included.
pub fn readme_checks_list() -> String {
    let mut out = format!("{README_CHECKS_BEGIN}\n");
    // The step number of each stage with Linux checks.
    let mut steps: Vec<(Stage, usize)> = Vec::new();
    for stage in Stage::ALL {
        let checks: Vec<&Reject> = Reject::ALL.iter().filter(|r| r.stage() == stage && !r.is_strict_only()).collect();
        if checks.is_empty() {
            continue;
        }
        steps.push((stage, steps.len() + 1));
        let clauses: Vec<String> = checks.iter().map(|r| format!("{}: {}", r.summary(), r.errno())).collect();
        let mut text = format!("{}. {}: {}.", steps.len(), stage.title(), clauses.join("; "));
        if !stage.note().is_empty() {
            text.push(' ');
            text.push_str(stage.note());
        }
        out.push_str(&wrap(&text, "   "));
    }
    out.push_str(&wrap(
        &format!(
            "{}. Success: a dma-buf whose size is the sum of the lengths. `open_flags` are not validated; \
             overlapping and unordered ranges are accepted.",
            steps.len() + 1
        ),
        "   ",
    ));
    let strict: Vec<&Reject> = Reject::ALL.iter().filter(|r| r.is_strict_only()).collect();
    out.push_str(&wrap(
        &format!(
            "\n`Policy::Strict` adds {} rules, each documented with its rationale on `validator::Policy::Strict`; \
             it makes every check above too, so it never accepts what Linux rejects:",
            strict.len()
        ),
        "",
    ));
    for r in strict {
        // The first Linux check after this rule in the table's order.
        let next = Reject::ALL.iter().skip_while(|x| x.name() != r.name()).find(|x| !x.is_strict_only());
        let place = match next.and_then(|n| steps.iter().find(|(s, _)| *s == n.stage()).map(|(s, i)| (*s, *i))) {
            Some((s, i)) if s == r.stage() && r.range_index().is_some() => format!("in step {i}, first for each range"),
            Some((s, i)) if s == r.stage() => format!("in step {i}, first"),
            Some((_, i)) => format!("before step {i}"),
            None => "last".to_owned(),
        };
        out.push_str(&wrap(&format!("- {}: {} ({place}).", r.summary(), r.errno()), "  "));
    }
    out.push_str(README_CHECKS_END);
    out.push('\n');
    out
}

/// `text` wrapped at 80 columns, continuation lines indented by `indent`,
/// with a final newline; a leading newline is kept as an empty line.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let text = match text.strip_prefix('\n') {
        Some(rest) => {
            out.push('\n');
            rest
        }
        None => text,
    };
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 80 {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_owned();
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `doc` with its generated parts replaced by what the check table says
/// now: the part of the README between [`README_CHECKS_BEGIN`] and
/// [`README_CHECKS_END`], or the table of `docs/cli-formats.md` (from its
/// header line to its last row). `None` if `doc` has no such part.
pub fn regenerate(doc: &str) -> Option<String> {
    if let (Some(begin), Some(end)) = (doc.find(README_CHECKS_BEGIN), doc.find(README_CHECKS_END)) {
        let end = end + README_CHECKS_END.len() + usize::from(doc[end + README_CHECKS_END.len()..].starts_with('\n'));
        return Some(format!("{}{}{}", doc.get(..begin)?, readme_checks_list(), doc.get(end..)?));
    }
    let table = check_names_table();
    let header = table.lines().next()?;
    let begin = doc.find(header)?;
    let mut end = begin;
    for line in doc.get(begin..)?.split_inclusive('\n') {
        if !line.starts_with('|') {
            break;
        }
        end += line.len();
    }
    Some(format!("{}{}{}", doc.get(..begin)?, table, doc.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use validator::Errno;

    #[test]
    fn verdict_lines() {
        assert_eq!(Verdict::Fd { size: 4096 }.to_string(), r#"{"result":"fd","size":4096}"#);
        assert_eq!(Verdict::Probe.to_string(), r#"{"result":"probe"}"#);
        assert_eq!(Verdict::OtherFeature { feature: 5 }.to_string(), r#"{"result":"other-feature","feature":5}"#);
        assert_eq!(Verdict::Reject(Reject::NoRanges).to_string(), r#"{"errno":"EINVAL","check":"NoRanges"}"#);
        assert_eq!(
            Verdict::Reject(Reject::PhysAddrOverflow { index: 7 }).to_string(),
            r#"{"errno":"EOVERFLOW","check":"PhysAddrOverflow","index":7}"#
        );
    }

    #[test]
    fn every_reject_prints_as_valid_json_with_its_name_and_errno() {
        for r in Reject::ALL {
            let line = Verdict::Reject(r).to_string();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["check"], r.name());
            assert_eq!(v["errno"], r.errno().name());
            assert_eq!(Errno::from_code(r.errno().code()), Some(r.errno()));
            assert_eq!(v.get("index").and_then(|i| i.as_u64()), r.range_index().map(u64::from), "{line}");
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let mut out = b"x".to_vec();
        push_hex(&mut out, &[0x00, 0x0b, 0xa0, 0xff]);
        assert_eq!(out, b"x000ba0ff");
    }

    #[test]
    fn run_answers_skips_and_reports() {
        let dev = Device::ivshmem_example();
        let input = "{\"region_index\":2,\"ranges\":[[0,4096]]}\r\n\n  \t\n{\"argsz\":4294967296}\n{}";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let s = run(Mode::Check { device: &dev, policy: Policy::Linux }, input.as_bytes(), &mut out, &mut err).unwrap();
        assert_eq!(s, Summary { lines: 5, answered: 2, malformed: 1 });
        assert_eq!(s.exit_status(), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"result\":\"fd\",\"size\":4096}\n{\"errno\":\"EINVAL\",\"check\":\"NoRanges\"}\n"
        );
        assert_eq!(String::from_utf8(err).unwrap(), "line 4: field \"argsz\": 4294967296 does not fit in u32\n");
    }

    #[test]
    fn run_encode() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let s = run(Mode::Encode, &b"{}\n"[..], &mut out, &mut err).unwrap();
        assert_eq!(s.exit_status(), 0);
        assert_eq!(out, b"180000000b00010000000000000000000000000000000000\n");
        assert!(err.is_empty());
    }

    #[test]
    fn check_table_lists_every_variant_once() {
        let t = check_names_table();
        assert_eq!(t.lines().count(), 2 + Reject::ALL.len());
        for r in Reject::ALL {
            assert_eq!(t.matches(&format!("`{}`", r.name())).count(), 1);
        }
    }

    #[test]
    fn readme_check_list_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        assert!(
            readme.contains(&readme_checks_list()),
            "README.md: the check list of \"What Linux 7.2 checks, in order\" is stale; regenerate it with \
             `cargo run -p nr-ranges --example check-names-table -- --write`"
        );
        assert_eq!(regenerate(&readme).as_deref(), Some(readme.as_str()));
    }

    #[test]
    fn readme_check_list_names_every_linux_check_and_strict_rule() {
        // Wrapped at 80 columns: compare with the line breaks undone.
        let list = readme_checks_list().split_whitespace().collect::<Vec<_>>().join(" ");
        for r in Reject::ALL {
            assert!(list.contains(&format!("{}: {}", r.summary(), r.errno())), "{} is not in the list", r.name());
        }
        // The summaries that quote a limit quote the one the validator uses.
        let cap = validator::STRICT_MAX_NR_RANGES;
        assert!(list.contains(&format!("above {},{:03}: E2BIG", cap / 1000, cap % 1000)), "{list}");
        let kmalloc_ranges = validator::PageSize::K4.default_kmalloc_max() / 16;
        assert!(list.contains(&format!("({},{:03} ranges): ENOMEM", kmalloc_ranges / 1000, kmalloc_ranges % 1000)));
    }

    #[test]
    fn regenerate_replaces_only_the_generated_part() {
        let stale = format!("intro\n{README_CHECKS_BEGIN}\nold\n{README_CHECKS_END}\nrest\n");
        assert_eq!(regenerate(&stale), Some(format!("intro\n{}rest\n", readme_checks_list())));
        let header = check_names_table().lines().next().unwrap().to_owned();
        let stale = format!("intro\n\n{header}\n|---|\n| old |\n\nrest\n");
        assert_eq!(regenerate(&stale), Some(format!("intro\n\n{}\nrest\n", check_names_table())));
        assert_eq!(regenerate("nothing generated here"), None);
    }

    #[test]
    fn docs_check_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli-formats.md");
        let docs = std::fs::read_to_string(path).unwrap();
        assert!(
            docs.contains(&check_names_table()),
            "docs/cli-formats.md: the check names table is stale; regenerate it with \
             `cargo run -p nr-ranges --example check-names-table -- --write`"
        );
    }
}
