//! `importer/nrlab_importer.h` compiled and compared with
//! `kernel_lab::importer::abi`: every struct's size and alignment, every
//! field's offset and size, every constant and ioctl code.
//!
//! The header needs the kernel's UAPI `<linux/types.h>` and
//! `<linux/ioctl.h>`: from `$NR_RANGES_KERNEL_INCLUDE` if set, else from
//! the lab's Debian fetcher (`kernel-lab fetch-header`'s cache). The C
//! compiler is `$CC`, else `cc`. The test fails, and says how to get a
//! header, when neither works; it never skips.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use kernel_lab::importer::abi::*;

const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/importer");

/// Field size through a projection, without a value.
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// `(C expression, Rust value)` for every fact the header pins.
fn facts() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    macro_rules! structs {
        ($( $c:literal => $t:ty { $($f:ident),* } ),* $(,)?) => {
            $(
                v.push((format!("sizeof(struct {})", $c), size_of::<$t>() as u64));
                v.push((format!("_Alignof(struct {})", $c), align_of::<$t>() as u64));
                $(
                    v.push((format!("offsetof(struct {}, {})", $c, stringify!($f)), offset_of!($t, $f) as u64));
                    v.push((
                        format!("sizeof(((struct {} *)0)->{})", $c, stringify!($f)),
                        field_size::<$t, _>(|x| &x.$f) as u64,
                    ));
                )*
            )*
        };
    }
    structs! {
        "nrlab_status" => NrlabStatus { err, invalidations, mapped, unmapped_in_cb },
        "nrlab_entry" => NrlabEntry { addr, len },
        "nrlab_attach" => NrlabAttach { fd, pad, st },
        "nrlab_map" => NrlabMap { keep, nents, orig_nents, total_entries, count, pad, st, ent },
        "nrlab_dma" => NrlabDma { addr, len, pad, st, data },
        "nrlab_gather" => NrlabGather { count, pad, st, src, data },
        "nrlab_distance" => NrlabDistance { provider, distance, pad, st },
        "nrlab_iova" => NrlabIova { provider, bar, corrected, nr_ranges, failed_range, iova, linked, st, ranges, data },
    }
    for (name, value) in [
        ("NRLAB_MAX_ENTRIES", MAX_ENTRIES),
        ("NRLAB_MAX_DMA", MAX_DMA),
        ("NRLAB_MAX_IOVA_RANGES", MAX_IOVA_RANGES),
        ("NRLAB_IOVA_READ", IOVA_READ),
        ("NRLAB_GATHER_MAX", GATHER_MAX),
        ("NRLAB_GATHER_BYTES", GATHER_BYTES),
    ] {
        v.push((name.into(), value as u64));
    }
    for (name, code) in IOCTLS {
        v.push((name.into(), u64::from(code)));
    }
    v
}

const HOW_TO_GET_A_HEADER: &str = "The header needs Linux UAPI headers (<linux/types.h>, <linux/ioctl.h>): set \
NR_RANGES_KERNEL_INCLUDE to an include directory that has them (e.g. the `usr/include` of an extracted \
linux-libc-dev), or let the lab's Debian fetcher get one (`cargo run --release -p kernel-lab -- fetch-header`, \
which needs apt-get/dpkg-deb and network access to the Debian mirror of the machine's apt sources).";

fn kernel_include() -> PathBuf {
    if let Some(dir) = std::env::var_os("NR_RANGES_KERNEL_INCLUDE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let req = kernel_lab::debian::HeaderRequest::from_env(false);
    kernel_lab::host::cache_root()
        .and_then(|root| kernel_lab::debian::fetch_headers(&root, &req))
        .unwrap_or_else(|e| panic!("no kernel UAPI headers: {e}\n{HOW_TO_GET_A_HEADER}"))
}

#[test]
fn header_matches_the_rust_mirror() {
    let facts = facts();
    let mut c =
        String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"nrlab_importer.h\"\nint main(void)\n{\n");
    for (expr, _) in &facts {
        let _ = writeln!(c, "\tprintf(\"%s %llu\\n\", \"{expr}\", (unsigned long long)({expr}));");
    }
    c.push_str("\treturn 0;\n}\n");
    let work = std::env::temp_dir().join(format!("nrlab-header-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("probe.c"), c).unwrap();
    let include = kernel_include();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-std=gnu11")
        .arg("-I")
        .arg(HEADER_DIR)
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg(include.join("x86_64-linux-gnu"))
        .arg("-o")
        .arg(work.join("probe"))
        .arg(work.join("probe.c"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} could not compile the header against {}:\n{}\n{HOW_TO_GET_A_HEADER}",
        include.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(work.join("probe")).output().unwrap();
    let text = String::from_utf8(run.stdout).unwrap();
    let c_facts: BTreeMap<&str, u64> =
        text.lines().filter_map(|l| l.rsplit_once(' ')).map(|(k, v)| (k, v.parse().unwrap())).collect();
    let _ = std::fs::remove_dir_all(&work);
    let wrong: Vec<String> = facts
        .iter()
        .filter(|(expr, rust)| c_facts.get(expr.as_str()) != Some(rust))
        .map(|(expr, rust)| format!("{expr}: C {:?}, Rust {rust}", c_facts.get(expr.as_str())))
        .collect();
    assert!(wrong.is_empty(), "the header and importer::abi disagree:\n{}", wrong.join("\n"));
    assert_eq!(c_facts.len(), facts.len());
}
