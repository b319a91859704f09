//! Turns `structured` fuzz inputs into request files for `kernel-lab
//! replay --format requests`: each input is read as the fuzz target reads
//! it (`Scenario::arbitrary_take_rest`), and its request
//! (`Scenario::request`) is written under OUT at the input's path relative
//! to its IN directory. Only the request goes to the kernel: the scenario's
//! device, topology, fault plan and policy are the model's (the lab's
//! devices are the guest's). kernel-lab cannot read scenarios itself (it
//! would depend on this crate, which depends on it for `lab-seeds`).
//!
//!     cargo run -p nr-ranges-proptests --features lab-seeds --example structured-requests -- OUT IN...
//!
//! OUT is emptied first. Prints how many inputs each IN held; an input the
//! scenario cannot be read from (the `Arbitrary` impl is total, so none
//! today) is listed and makes the exit status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arbitrary::{Arbitrary, Unstructured};
use kernel_lab::conformance::replay::encode_request_file;
use props::scenario::Scenario;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files_under(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out, ins @ ..] = &args[..] else {
        eprintln!("usage: structured-requests OUT IN...");
        return ExitCode::from(2);
    };
    if ins.is_empty() {
        eprintln!("usage: structured-requests OUT IN...");
        return ExitCode::from(2);
    }
    let _ = std::fs::remove_dir_all(out);
    let mut unreadable = Vec::new();
    for (k, input) in ins.iter().enumerate() {
        let mut files = Vec::new();
        if let Err(e) = files_under(input, &mut files) {
            eprintln!("structured-requests: {}: {e}", input.display());
            return ExitCode::from(2);
        }
        files.sort();
        // One subdirectory per IN, so that equal names in two INs stay apart.
        let base = out.join(format!("{k}"));
        for f in &files {
            let data = match std::fs::read(f) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("structured-requests: read {}: {e}", f.display());
                    return ExitCode::from(2);
                }
            };
            let s = match Scenario::arbitrary_take_rest(Unstructured::new(&data)) {
                Ok(s) => s,
                Err(e) => {
                    unreadable.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            let rel = f.strip_prefix(input).ok().filter(|r| !r.as_os_str().is_empty());
            let dest = base.join(rel.unwrap_or_else(|| Path::new(f.file_name().unwrap_or_default())));
            let written = dest
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&dest, encode_request_file(&s.request())));
            if let Err(e) = written {
                eprintln!("structured-requests: write {}: {e}", dest.display());
                return ExitCode::from(2);
            }
        }
        println!("{}: {} structured inputs -> {}", input.display(), files.len(), base.display());
    }
    for u in &unreadable {
        println!("not a scenario: {u}");
    }
    if unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
