//! Compiles the C baseline (`c/linux_checks.c`) at -O2, the kernel's optimisation level.
#![forbid(unsafe_code)]

fn main() {
    println!("cargo:rerun-if-changed=c/linux_checks.c");
    cc::Build::new()
        .file("c/linux_checks.c")
        .std("gnu11")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("linux_checks");
}
