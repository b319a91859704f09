//! Prints the "check names" table of `docs/cli-formats.md`: every
//! `validator::Reject` variant with its errno, generated from `Reject::ALL`.
//!
//! With `--write`, rewrites the generated parts of `docs/cli-formats.md` (that
//! table) and of `README.md` (the check list of "What Linux 7.2 checks, in
//! order") in place, from the validator's check table.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {
            print!("{}", nr_ranges::check_names_table());
            ExitCode::SUCCESS
        }
        Some("--write") => {
            for doc in ["README.md", "docs/cli-formats.md"] {
                let path = format!("{}/../{doc}", env!("CARGO_MANIFEST_DIR"));
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("{doc}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let Some(new) = nr_ranges::regenerate(&text) else {
                    eprintln!("{doc}: no generated part found");
                    return ExitCode::FAILURE;
                };
                if new != text {
                    if let Err(e) = std::fs::write(&path, new) {
                        eprintln!("{doc}: {e}");
                        return ExitCode::FAILURE;
                    }
                    eprintln!("{doc}: regenerated");
                }
            }
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("usage: check-names-table [--write] (unknown argument {other:?})");
            ExitCode::from(2)
        }
    }
}
