//! The `nr-ranges` binary, end to end: formats, verdicts, errors and exit
//! statuses as `docs/cli-formats.md` documents them.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nr-ranges");

/// The spike's ivshmem-plain device: BAR0 256 B MMIO at 0xfe800000, BAR2
/// 16 MiB MMIO at 0xfd000000 (`validator::Device::ivshmem_example()`).
const IVSHMEM: &str = r#"{"page_size":4096,"bars":[
  {"index":0,"kind":"mem","start":"0xfe800000","len":256},
  {"index":2,"kind":"mem","start":"0xfd000000","len":"0x1000000"}
]}"#;

/// Writes `text` to a fresh file under the test tmpdir.
fn file(text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "nr-ranges-cli-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `args`, feeding `stdin` from a thread (inputs can be
/// megabytes).
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    let writer = thread::spawn(move || {
        // The child may exit before reading everything (bad device file).
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn check_with(device: &str, policy: &str, stdin: &str) -> Run {
    let dev = file(device);
    let out = run(&["check", "--device", dev.to_str().unwrap(), "--policy", policy], stdin);
    std::fs::remove_file(dev).unwrap();
    to_run(out)
}

fn to_run(out: Output) -> Run {
    Run {
        status: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `check` on the ivshmem device under `policy`; expects success and no
/// stderr, returns the verdict lines.
fn verdicts(policy: &str, stdin: &str) -> Vec<String> {
    let r = check_with(IVSHMEM, policy, stdin);
    assert_eq!((r.status, r.stderr.as_str()), (0, ""), "stdout: {}", r.stdout);
    r.stdout.lines().map(str::to_owned).collect()
}

fn verdict(policy: &str, line: &str) -> String {
    let v = verdicts(policy, &format!("{line}\n"));
    assert_eq!(v.len(), 1, "{line}: {v:?}");
    v.into_iter().next().unwrap()
}

fn encode(stdin: &str) -> Run {
    to_run(run(&["encode"], stdin))
}

/// `n` copies of `[offset, length]` as a JSON array body.
fn ranges(n: usize, offset: u64, length: u64) -> String {
    vec![format!("[{offset},{length}]"); n].join(",")
}

const FD_4K: &str = r#"{"result":"fd","size":4096}"#;

#[test]
fn every_verdict_kind() {
    let lines = [
        r#"{"region_index":2,"ranges":[[0,4096]]}"#,
        r#"{"feature_flags":"0x5000b"}"#,
        r#"{"feature_flags":"0x10005"}"#,
        r#"{"region_index":2}"#,
        r#"{"region_index":2,"ranges":[[0,4096],[4096,0]]}"#,
    ];
    assert_eq!(
        verdicts("linux", &lines.join("\n")),
        [
            FD_4K,
            r#"{"result":"probe"}"#,
            r#"{"result":"other-feature","feature":5}"#,
            r#"{"errno":"EINVAL","check":"NoRanges"}"#,
            r#"{"errno":"EINVAL","check":"RangeZeroLength","index":1}"#,
        ]
    );
}

#[test]
fn defaults() {
    // {} is GET|DMA_BUF on region 0 with no ranges: nr_ranges = 0.
    assert_eq!(verdict("linux", "{}"), r#"{"errno":"EINVAL","check":"NoRanges"}"#);
    // nr_ranges defaults to len(ranges), argsz to the exact size, region to 0 (BAR0: 256 B).
    assert_eq!(
        verdict("linux", r#"{"ranges":[[0,4096]]}"#),
        r#"{"errno":"EINVAL","check":"RangeBeyondBar","index":0}"#
    );
    let r = encode("{}\n{\"ranges\":[[1,2]]}\n");
    assert_eq!(r.status, 0);
    assert_eq!(
        r.stdout,
        concat!(
            "18000000",
            "0b000100",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "\n",
            "28000000",
            "0b000100",
            "00000000",
            "00000000",
            "00000000",
            "01000000",
            "0100000000000000",
            "0200000000000000",
            "\n",
        )
    );
}

#[test]
fn blank_lines_crlf_and_a_missing_final_newline() {
    let r = check_with(
        IVSHMEM,
        "linux",
        "\n   \n\t\r\n{\"region_index\":2,\"ranges\":[[0,4096]]}\r\n\n{\"feature_flags\":\"0x5000b\"}",
    );
    assert_eq!((r.status, r.stderr.as_str()), (0, ""));
    assert_eq!(r.stdout, format!("{FD_4K}\n{{\"result\":\"probe\"}}\n"));
    let r = check_with(IVSHMEM, "linux", "");
    assert_eq!((r.status, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
}

#[test]
fn hex_strings() {
    let v = verdicts(
        "linux",
        concat!(
            r#"{"region_index":"0x2","ranges":[["0x0","0x1000"],["0X1000","0XfFf"]]}"#,
            "\n",
            r#"{"region_index":"0x2","ranges":[["0x0000000000000000000","0x2000"]],"argsz":"0x18","feature_flags":"0x1000B"}"#,
        ),
    );
    assert_eq!(v, [r#"{"errno":"EINVAL","check":"RangeUnaligned","index":1}"#, r#"{"result":"fd","size":8192}"#]);
    let r = encode(r#"{"flags":"0xDEADbeef","ranges":[["0xffffffffffffffff","0x0123456789ABCDEF"]]}"#);
    assert_eq!(r.status, 0);
    assert_eq!(r.stdout, "280000000b0001000000000000000000efbeadde01000000ffffffffffffffffefcdab8967452301\n");
}

#[test]
fn u64_max() {
    let r = encode(r#"{"ranges":[[18446744073709551615,18446744073709551615]]}"#);
    assert_eq!((r.status, r.stderr.as_str()), (0, ""));
    assert!(r.stdout.ends_with(&format!("{}\n", "f".repeat(32))), "{}", r.stdout);
    assert_eq!(
        verdict("linux", r#"{"region_index":2,"ranges":[[0,18446744073709551615]]}"#),
        r#"{"errno":"EINVAL","check":"RangeUnaligned","index":0}"#
    );
    let r = encode(r#"{"ranges":[[18446744073709551616,0]]}"#);
    assert_eq!((r.status, r.stdout.as_str()), (1, ""));
    assert!(r.stderr.starts_with("line 1: field \"ranges\", range 0, offset: 1.8446744073709552e19 is not an integer"));
}

#[test]
fn u32_overflow_names_line_field_and_value_and_processing_continues() {
    let input = [
        r#"{"region_index":2,"ranges":[[0,4096]]}"#,
        "",
        r#"{"region_index":2,"ranges":[[0,4096]],"argsz":4294967296}"#,
        r#"{"region_index":2,"ranges":[[0,4096]],"open_flags":"0x100000000"}"#,
        r#"{"region_index":2,"ranges":[[0,4096]],"argsz":4294967295}"#,
    ]
    .join("\n");
    for (args, answer) in [(vec!["check"], FD_4K), (vec!["encode"], "")] {
        let dev = file(IVSHMEM);
        let mut args = args.clone();
        if args[0] == "check" {
            args.extend(["--device", dev.to_str().unwrap()]);
        }
        let r = to_run(run(&args, &input));
        std::fs::remove_file(&dev).unwrap();
        assert_eq!(r.status, 1, "{args:?}");
        assert_eq!(
            r.stderr,
            "line 3: field \"argsz\": 4294967296 does not fit in u32\n\
             line 4: field \"open_flags\": 0x100000000 (4294967296) does not fit in u32\n"
        );
        let out: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(out.len(), 2, "one answer per well-formed line: {out:?}");
        if !answer.is_empty() {
            assert_eq!(out, [answer, answer]);
        }
    }
}

#[test]
fn malformed_lines() {
    let input = [
        r#"{"region_index":2,"ranges":[[0,4096]],"colour":"blue"}"#,
        r#"{"region_index":-2}"#,
        r#"{"region_index":2.5}"#,
        r#"{"region_index":"2"}"#,
        r#"{"region_index":2,"region_index":2}"#,
        r#"{"ranges":[[0]]}"#,
        r#"not json"#,
        r#"{"region_index":2,"ranges":[[0,4096]]}"#,
    ]
    .join("\n");
    let r = check_with(IVSHMEM, "linux", &input);
    assert_eq!(r.status, 1);
    assert_eq!(r.stdout, format!("{FD_4K}\n"));
    let errs: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(errs.len(), 7, "{}", r.stderr);
    for (i, want) in [
        "line 1: unknown field \"colour\" (the fields are feature_flags, argsz, region_index, open_flags, flags, nr_ranges, ranges, readable_ranges)",
        "line 2: field \"region_index\": -2 is negative",
        "line 3: field \"region_index\": 2.5 is not an integer",
        "line 4: field \"region_index\": \"2\" is a decimal string, which is not accepted",
        "line 5: field \"region_index\" appears twice",
        "line 6: field \"ranges\", range 0: expected [offset, length], got an array of 1 element",
        "line 7: invalid JSON: expected ident at column 2",
    ]
    .iter()
    .enumerate()
    {
        assert!(errs[i].starts_with(want), "got {:?}\nwant {want:?}", errs[i]);
    }
}

#[test]
fn device_file_errors_exit_2_and_name_the_file() {
    for (text, want) in [
        (r#"{"bars":[{"index":6,"kind":"mem","start":0,"len":4096}]}"#, "BAR index 6 is out of range"),
        (
            r#"{"bars":[{"index":2,"kind":"mem","start":0,"len":4096},{"index":2,"kind":"mem","start":0,"len":4096}]}"#,
            "BAR 2 is given twice",
        ),
        (r#"{"bars":[{"index":2,"kind":"mem","start":0,"len":0}]}"#, "BAR 2 has len 0"),
        (
            r#"{"bars":[{"index":2,"kind":"mem","start":"0xffffffffffffffff","len":1}]}"#,
            "BAR 2: start 0xffffffffffffffff + len 0x1 overflows u64",
        ),
        (r#"{"bars":[{"index":2,"kind":"prefetchable","start":0,"len":1}]}"#, "unknown variant `prefetchable`"),
        (r#"{"bars":[],"vendor":"0x1af4"}"#, "unknown field `vendor`"),
        (r#"{"page_size":8192}"#, "page_size 8192 is not supported"),
        (r#"{"page_size":4096"#, "EOF while parsing an object"),
        ("[]", "invalid type: sequence, expected a JSON object"),
        (r#"{"bars":[[2,"mem",0,4096]]}"#, "invalid type: sequence, expected a JSON object"),
    ] {
        let dev = file(text);
        let r = to_run(run(&["check", "--device", dev.to_str().unwrap()], "{}\n"));
        let name = dev.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::remove_file(dev).unwrap();
        assert_eq!((r.status, r.stdout.as_str()), (2, ""), "{text}");
        assert!(r.stderr.starts_with("nr-ranges: device file \""), "{}", r.stderr);
        assert!(r.stderr.contains(&name) && r.stderr.contains(want), "{text}: {}", r.stderr);
    }
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-device.json");
    let r = to_run(run(&["check", "--device", missing.to_str().unwrap()], ""));
    assert_eq!(r.status, 2);
    assert!(r.stderr.starts_with("nr-ranges: cannot read device file \"") && r.stderr.contains("no-such-device.json"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["check"][..], &["check", "--device", "x.json", "--policy", "lenient"], &["frobnicate"], &[]] {
        let r = to_run(run(args, ""));
        assert_eq!(r.status, 2, "{args:?}");
        assert!(r.stdout.is_empty() && !r.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn io_bar_and_other_page_sizes() {
    let dev =
        r#"{"page_size":65536,"kmalloc_max":32,"bars":[{"index":4,"kind":"io","start":"0xc000","len":"0x10000"}]}"#;
    let r = check_with(
        dev,
        "linux",
        "{\"region_index\":4,\"ranges\":[[0,65536]]}\n{\"region_index\":4,\"ranges\":[[0,4096]]}\n\
         {\"region_index\":4,\"ranges\":[[0,65536],[0,65536],[0,65536]]}\n",
    );
    assert_eq!((r.status, r.stderr.as_str()), (0, ""));
    assert_eq!(
        r.stdout,
        "{\"errno\":\"EINVAL\",\"check\":\"BarNotMmio\"}\n\
         {\"errno\":\"EINVAL\",\"check\":\"RangeUnaligned\",\"index\":0}\n\
         {\"errno\":\"ENOMEM\",\"check\":\"RangeArrayTooLarge\"}\n"
    );
}

#[test]
fn readable_ranges() {
    let two = r#""region_index":2,"ranges":[[0,4096],[4096,4096]]"#;
    let v = verdicts(
        "linux",
        &[
            format!("{{{two}}}"),
            format!("{{{two},\"readable_ranges\":2}}"),
            // The second written range lies in unreadable memory.
            format!("{{{two},\"readable_ranges\":1}}"),
            format!("{{{two},\"readable_ranges\":0}}"),
            // nr_ranges (default: 2) ranges are read, whatever is readable after them.
            format!("{{{two},\"readable_ranges\":3}}"),
            // A third range is readable but was never written: it reads as zero.
            format!("{{{two},\"nr_ranges\":3,\"readable_ranges\":3}}"),
            format!("{{{two},\"nr_ranges\":3,\"readable_ranges\":18446744073709551615}}"),
            // ... and if it is not readable either, the copy faults first.
            format!("{{{two},\"nr_ranges\":3}}"),
            // nr_ranges = 1 reads only the first range, whatever is readable after it.
            format!("{{{two},\"nr_ranges\":1,\"readable_ranges\":1}}"),
        ]
        .join("\n"),
    );
    assert_eq!(
        v,
        [
            r#"{"result":"fd","size":8192}"#,
            r#"{"result":"fd","size":8192}"#,
            r#"{"errno":"EFAULT","check":"RangeArrayFault"}"#,
            r#"{"errno":"EFAULT","check":"RangeArrayFault"}"#,
            r#"{"result":"fd","size":8192}"#,
            r#"{"errno":"EINVAL","check":"RangeZeroLength","index":2}"#,
            r#"{"errno":"EINVAL","check":"RangeZeroLength","index":2}"#,
            r#"{"errno":"EFAULT","check":"RangeArrayFault"}"#,
            FD_4K,
        ]
    );
    // Encoding ignores readable_ranges: the bytes are the written ranges.
    let a = encode(&format!("{{{two}}}\n{{{two},\"readable_ranges\":0}}\n{{{two},\"readable_ranges\":9}}\n"));
    let lines: Vec<&str> = a.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| *l == lines[0] && l.len() == 2 * (8 + 16 + 32)));
}

#[test]
fn strict_and_linux_differ() {
    let lines = [
        r#"{"region_index":2,"ranges":[[0,4096]],"open_flags":"0xffffffff"}"#,
        r#"{"region_index":2,"ranges":[[0,4096]],"open_flags":"0x80002"}"#,
        r#"{"region_index":2,"ranges":[[0,4096]],"argsz":24}"#,
        r#"{"region_index":2,"ranges":[[0,4096]],"nr_ranges":65537,"readable_ranges":65537}"#,
        r#"{"region_index":2,"ranges":[["0xfffffffffffff000",4096]]}"#,
    ]
    .join("\n");
    assert_eq!(
        verdicts("linux", &lines),
        [
            FD_4K,
            FD_4K,
            FD_4K,
            r#"{"errno":"EINVAL","check":"RangeZeroLength","index":1}"#,
            r#"{"errno":"EOVERFLOW","check":"PhysAddrOverflow","index":0}"#,
        ]
    );
    assert_eq!(
        verdicts("strict", &lines),
        [
            r#"{"errno":"EINVAL","check":"StrictOpenFlags"}"#,
            FD_4K,
            r#"{"errno":"EINVAL","check":"StrictArgszShort"}"#,
            r#"{"errno":"E2BIG","check":"StrictTooManyRanges"}"#,
            r#"{"errno":"EINVAL","check":"StrictRangeOutsideBar","index":0}"#,
        ]
    );
    // --policy defaults to linux.
    let dev = file(IVSHMEM);
    let r = to_run(run(&["check", "--device", dev.to_str().unwrap()], &lines));
    std::fs::remove_file(dev).unwrap();
    assert_eq!(r.stdout.lines().next(), Some(FD_4K));
}

#[test]
fn encode_known_request() {
    // GET|DMA_BUF, argsz 8+16+32 = 56, region 2, open_flags O_RDWR|O_CLOEXEC,
    // two ranges; every field little-endian (x86-64, arm64).
    let r = encode(r#"{"region_index":2,"open_flags":"0x80002","ranges":[[4096,8192],["0x100000","0x1000"]]}"#);
    assert_eq!((r.status, r.stderr.as_str()), (0, ""));
    let want = concat!(
        "38000000", // argsz = 56
        "0b000100", // flags = 0x1000b
        "02000000", // region_index = 2
        "02000800", // open_flags = 0x80002
        "00000000", // flags = 0
        "02000000", // nr_ranges = 2
        "0010000000000000",
        "0020000000000000",
        "0000100000000000",
        "0010000000000000",
        "\n"
    );
    assert_eq!(r.stdout, want);
    // Overrides: nr_ranges and argsz as given, the ranges as written.
    let r = encode(r#"{"nr_ranges":"0xffffffff","argsz":0,"feature_flags":"0x2000b","flags":1,"ranges":[[1,2]]}"#);
    assert_eq!(
        r.stdout,
        concat!(
            "00000000", // argsz = 0
            "0b000200", // flags = SET | DMA_BUF
            "00000000", // region_index
            "00000000", // open_flags
            "01000000", // flags = 1
            "ffffffff", // nr_ranges = 0xffffffff
            "0100000000000000",
            "0200000000000000",
            "\n"
        )
    );
}

/// The facts the kernel spike measured on Linux 7.2.13 with ivshmem-plain
/// (`errno-table-ivshmem.txt`), through the CLI.
#[test]
fn spike_facts() {
    let bar2 = r#""region_index":2,"ranges":[[0,4096]]"#;
    let all_valid = format!(r#"{{"region_index":2,"ranges":[{}]}}"#, ranges(262_144, 0, 4096));
    let cases: Vec<(&str, String, &str)> = vec![
        ("PROBE|GET", r#"{"feature_flags":"0x5000b"}"#.into(), r#"{"result":"probe"}"#),
        ("SET", format!(r#"{{"feature_flags":"0x2000b",{bar2}}}"#), r#"{"errno":"EINVAL","check":"SetNotSupported"}"#),
        (
            "GET|SET",
            format!(r#"{{"feature_flags":"0x3000b",{bar2}}}"#),
            r#"{"errno":"EINVAL","check":"GetAndSetWithoutProbe"}"#,
        ),
        ("no GET/SET", format!(r#"{{"feature_flags":"0xb",{bar2}}}"#), r#"{"errno":"EINVAL","check":"NoGetOrSet"}"#),
        (
            "unknown flag bit 19",
            format!(r#"{{"feature_flags":"0x9000b",{bar2}}}"#),
            r#"{"errno":"EINVAL","check":"UnknownFeatureFlags"}"#,
        ),
        ("one range [0,4096) on BAR2", format!("{{{bar2}}}"), FD_4K),
        (
            "two identical overlapping ranges",
            r#"{"region_index":2,"ranges":[[0,4096],[0,4096]]}"#.into(),
            r#"{"result":"fd","size":8192}"#,
        ),
        ("open_flags 0xffffffff", format!(r#"{{"open_flags":"0xffffffff",{bar2}}}"#), FD_4K),
        ("nr_ranges=0", format!(r#"{{"nr_ranges":0,{bar2}}}"#), r#"{"errno":"EINVAL","check":"NoRanges"}"#),
        ("flags=1", format!(r#"{{"flags":1,{bar2}}}"#), r#"{"errno":"EINVAL","check":"NonZeroFlags"}"#),
        (
            "region 6",
            r#"{"region_index":6,"ranges":[[0,4096]]}"#.into(),
            r#"{"errno":"ENODEV","check":"RegionNotBar"}"#,
        ),
        ("region 1", r#"{"region_index":1,"ranges":[[0,4096]]}"#.into(), r#"{"errno":"ENODEV","check":"BarAbsent"}"#),
        (
            "BAR0 [0,4096)",
            r#"{"region_index":0,"ranges":[[0,4096]]}"#.into(),
            r#"{"errno":"EINVAL","check":"RangeBeyondBar","index":0}"#,
        ),
        (
            "offset 2^64-4096 length 4096",
            r#"{"region_index":2,"ranges":[[18446744073709547520,4096]]}"#.into(),
            r#"{"errno":"EOVERFLOW","check":"PhysAddrOverflow","index":0}"#,
        ),
        (
            "nr_ranges=262145",
            format!(r#"{{"nr_ranges":262145,{bar2}}}"#),
            r#"{"errno":"ENOMEM","check":"RangeArrayTooLarge"}"#,
        ),
        ("nr_ranges=262144 all valid", all_valid, r#"{"result":"fd","size":1073741824}"#),
        ("argsz=0xffffffff", format!(r#"{{"argsz":"0xffffffff",{bar2}}}"#), FD_4K),
        ("argsz=8+16 with 1 range", format!(r#"{{"argsz":24,{bar2}}}"#), FD_4K),
        ("argsz=8+15", format!(r#"{{"argsz":23,{bar2}}}"#), r#"{"errno":"EINVAL","check":"ArgszBelowDmaBufHeader"}"#),
    ];
    let input: Vec<&str> = cases.iter().map(|(_, line, _)| line.as_str()).collect();
    let got = verdicts("linux", &input.join("\n"));
    assert_eq!(got.len(), cases.len());
    for ((name, _, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "spike case {name:?}");
    }
}

/// A coprocess writes one request and waits for its answer before writing
/// the next: the answer must come without end of input.
#[test]
fn answers_come_before_end_of_input() {
    let dev = file(IVSHMEM);
    let mut child = Command::new(BIN)
        .args(["check", "--device", dev.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let mut answers = vec![];
    for req in [r#"{"region_index":2,"ranges":[[0,4096]]}"#, r#"{"feature_flags":"0x5000b"}"#] {
        writeln!(stdin, "{req}").unwrap();
        stdin.flush().unwrap();
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => answers.push(a),
            Err(_) => {
                let _ = child.kill();
                panic!("no answer to {req} while stdin is open");
            }
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    std::fs::remove_file(dev).unwrap();
    assert_eq!(answers, [format!("{FD_4K}\n"), "{\"result\":\"probe\"}\n".to_owned()]);
}
