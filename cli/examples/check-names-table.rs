//! Prints the "check names" table of `docs/cli-formats.md`: every
//! `validator::Reject` variant with its errno, generated from `Reject::ALL`.
#![forbid(unsafe_code)]

fn main() {
    print!("{}", nr_ranges::check_names_table());
}
