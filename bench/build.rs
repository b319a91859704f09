//! Compiles the C baseline (`c/linux_checks.c`) at -O2, the kernel's
//! optimisation level, with the errno numbers it returns taken from
//! `validator::Errno` (so that no errno is written as a number in C either).

use validator::Errno;

fn main() {
    println!("cargo:rerun-if-changed=c/linux_checks.c");
    let mut build = cc::Build::new();
    build
        .file("c/linux_checks.c")
        .std("gnu11")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true);
    for e in [Errno::ENOMEM, Errno::EFAULT, Errno::ENODEV, Errno::EINVAL, Errno::EOVERFLOW] {
        build.define(&format!("LC_{}", e.name()), e.code().to_string().as_str());
    }
    build.compile("linux_checks");
}
