//! The uapi layout checked against the real kernel header.
//!
//! `tests/c/layout_probe.c` is compiled against a `<linux/vfio.h>` that has
//! `VFIO_DEVICE_FEATURE_DMA_BUF` (Linux >= 6.19), with its `<linux/iommufd.h>`
//! (the vfio cdev and IOAS arguments), and prints, one `NAME VALUE`
//! line each, the sizes, offsets and alignments of the structs, the values of
//! the constants and ioctl codes, and the bytes of sample requests built with
//! the C structs. This test computes the same lines from the Rust types and
//! `RequestBuilder` and reports every line on which the two disagree.
//!
//! The samples are defined once, in [`SAMPLES`]: the test writes them into a
//! generated `layout_samples.h` that the C program includes, and C fills in
//! the defaults (flags, `argsz`, `nr_ranges`) itself.
//!
//! Where the header comes from: `$NR_RANGES_KERNEL_INCLUDE` if set (a
//! directory holding `linux/vfio.h`), else whatever
//! `kernel-lab fetch-header` prints (Debian sid's `linux-libc-dev`,
//! downloaded once into a cache, with the lab's Debian fetcher). If neither works, the test fails and says
//! how to get one; it never skips. The C compiler is `$CC`, else `cc`.
#![cfg(all(target_os = "linux", feature = "std"))]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::{Display, Write as _};
use std::mem::{align_of, align_of_val, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use uapi::ioctl::codes;
use uapi::iommufd::{self, IommuDestroy, IommuIoasAlloc, IommuIoasMapFile, IommuIoasUnmap};
use uapi::{
    DeviceAttachIommufdPt, DeviceBindIommufd, DeviceDetachIommufdPt, DeviceFeature, DeviceFeatureDmaBuf, DeviceInfo,
    DmaBufHeader, DmaRange, FeatureHeader, GroupStatus, InfoCapHeader, RegionInfo, RegionInfoCapSparseMmap,
    RequestBuilder, SparseMmapArea, DMA_BUF_HEADER_SIZE, DMA_RANGE_SIZE, FEATURE_HEADER_SIZE,
    VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET,
};
use zerocopy::{FromBytes, IntoBytes, KnownLayout};

const ENV_INCLUDE: &str = "NR_RANGES_KERNEL_INCLUDE";
const PROBE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/layout_probe.c");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// How the header is fetched, for messages.
const FETCH_COMMAND: &str = "cargo run --release -p kernel-lab -- fetch-header";

/// One `VFIO_DEVICE_FEATURE(DMA_BUF)` argument, built by both sides. `None`
/// means "the default": `GET | DMA_BUF`, `argsz` covering everything written,
/// `nr_ranges` the number of ranges written.
struct Sample {
    name: &'static str,
    feature_flags: Option<u32>,
    argsz: Option<u32>,
    region_index: u32,
    open_flags: u32,
    flags: u32,
    nr_ranges: Option<u32>,
    ranges: &'static [(u64, u64)],
}

const DEFAULT: Sample = Sample {
    name: "",
    feature_flags: None,
    argsz: None,
    region_index: 0,
    open_flags: 0,
    flags: 0,
    nr_ranges: None,
    ranges: &[],
};

const O_RDWR: u32 = nix::libc::O_RDWR as u32;
const O_CLOEXEC: u32 = nix::libc::O_CLOEXEC as u32;
const TOP: u64 = 1 << 63;

/// The one list of samples: the C side gets it through `layout_samples.h`.
const SAMPLES: &[Sample] = &[
    Sample { name: "one_range", region_index: 2, open_flags: O_RDWR, ranges: &[(0x1000, 0x2000)], ..DEFAULT },
    Sample {
        name: "three_scattered_rdwr_cloexec",
        region_index: 4,
        open_flags: O_RDWR | O_CLOEXEC,
        ranges: &[(0x0, 0x1000), (0x10_0000, 0x2_0000), (0x7fff_f000, 0x1000)],
        ..DEFAULT
    },
    Sample {
        name: "hostile",
        argsz: Some(0xffff_ffff),
        nr_ranges: Some(0xffff_ffff),
        flags: 1,
        ranges: &[(u64::MAX, TOP), (TOP, u64::MAX), (u64::MAX, u64::MAX)],
        ..DEFAULT
    },
    Sample {
        name: "probe_get_no_ranges",
        feature_flags: Some(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF),
        ..DEFAULT
    },
    Sample { name: "rom_region", region_index: 6, ranges: &[(0, 0x800)], ..DEFAULT },
    Sample {
        name: "set_unknown_bits_short_argsz",
        feature_flags: Some(VFIO_DEVICE_FEATURE_SET | (1 << 19) | VFIO_DEVICE_FEATURE_DMA_BUF),
        argsz: Some(8),
        region_index: 0xffff_ffff,
        open_flags: 0xffff_ffff,
        nr_ranges: Some(0),
        ranges: &[(0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321)],
        ..DEFAULT
    },
];

#[test]
fn layout_matches_the_kernel_header() {
    let header = kernel_header();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kernel_header-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("cannot create {}: {e}", work.display()));

    let c_lines = run_probe(&header, &work);
    let c = parse_probe_output(&c_lines, &header, &work);
    let rust = rust_facts();

    let mut mismatches = Vec::new();
    for fact in &rust {
        match c.get(&fact.name) {
            None => mismatches.push(format!(
                "{}: Rust {} = {}, but the C probe printed no such line",
                fact.name, fact.rust, fact.value
            )),
            Some(cv) if *cv != fact.value => mismatches.push(describe_mismatch(fact, cv)),
            Some(_) => {}
        }
    }
    for name in c.keys().filter(|n| !n.starts_with("info.")) {
        if !rust.iter().any(|f| &f.name == name) {
            mismatches.push(format!("{name}: printed by the C probe ({}) but not computed on the Rust side", c[name]));
        }
    }
    if !mismatches.is_empty() {
        panic!(
            "uapi disagrees with the kernel header on {} line(s)\n  header: {}\n  work dir (probe, generated \
             layout_samples.h, output): {}\n  {}",
            mismatches.len(),
            header.describe(c.get("info.LINUX_VERSION_CODE").map(String::as_str)),
            work.display(),
            mismatches.join("\n  ")
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

// ---------------------------------------------------------------------------
// The Rust side.

/// One line the C probe must print identically.
struct Fact {
    name: String,
    /// How the Rust side computed it, for the failure message.
    rust: String,
    value: String,
}

#[derive(Default)]
struct Facts(Vec<Fact>);

impl Facts {
    fn add(&mut self, name: impl Into<String>, rust: impl Into<String>, value: impl Display) {
        self.0.push(Fact { name: name.into(), rust: rust.into(), value: value.to_string() });
    }
}

/// Size and alignment of a field's type, from a projection `|s| &s.field`.
fn field_size<T: ?Sized, F>(_: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}
fn field_align<T: ?Sized, F>(_: impl Fn(&T) -> &F) -> usize {
    align_of::<F>()
}
/// Size and alignment of the element of a trailing slice field.
fn elem_size<T: ?Sized, E>(_: impl Fn(&T) -> &[E]) -> usize {
    size_of::<E>()
}
fn elem_align<T: ?Sized, E>(_: impl Fn(&T) -> &[E]) -> usize {
    align_of::<E>()
}
/// Byte offset of `field` within `base`.
fn offset_in<T: ?Sized, F: ?Sized>(base: &T, field: &F) -> usize {
    (field as *const F).cast::<u8>() as usize - (base as *const T).cast::<u8>() as usize
}

/// `offsetof`, `sizeof` and `alignof` of sized fields whose Rust name is the
/// C name: `fields!(facts, c_struct: RustType { a, b })`.
macro_rules! fields {
    ($facts:ident, $c:ident : $t:ty { $($f:ident),+ $(,)? }) => {$(
        $facts.add(
            concat!("offsetof(", stringify!($c), ",", stringify!($f), ")"),
            concat!("offset_of!(", stringify!($t), ", ", stringify!($f), ")"),
            offset_of!($t, $f),
        );
        $facts.add(
            concat!("sizeof(", stringify!($c), ".", stringify!($f), ")"),
            concat!("size_of type of ", stringify!($t), "::", stringify!($f)),
            field_size(|s: &$t| &s.$f),
        );
        $facts.add(
            concat!("alignof(", stringify!($c), ".", stringify!($f), ")"),
            concat!("align_of type of ", stringify!($t), "::", stringify!($f)),
            field_align(|s: &$t| &s.$f),
        );
    )+};
}

/// `sizeof` and `alignof` of a sized struct.
macro_rules! sized_struct {
    ($facts:ident, $c:ident : $t:ty) => {
        $facts.add(
            concat!("sizeof(", stringify!($c), ")"),
            concat!("size_of::<", stringify!($t), ">()"),
            size_of::<$t>(),
        );
        $facts.add(
            concat!("alignof(", stringify!($c), ")"),
            concat!("align_of::<", stringify!($t), ">()"),
            align_of::<$t>(),
        );
    };
}

/// Constants whose Rust name is the C name.
macro_rules! consts {
    ($facts:ident, $module:ident : $($name:ident),+ $(,)?) => {$(
        $facts.add(stringify!($name), concat!(stringify!($module), "::", stringify!($name)), $module::$name);
    )+};
}

fn rust_facts() -> Vec<Fact> {
    let mut facts = Facts::default();
    let f = &mut facts;

    // struct vfio_device_feature: the DST DeviceFeature, and its fixed part
    // FeatureHeader, must both be the C struct.
    let words = [0u64; 16];
    let dev_feature_size = <DeviceFeature as KnownLayout>::size_for_metadata(0).expect("size_for_metadata(0)");
    let dev_feature = DeviceFeature::ref_from_bytes(&words.as_bytes()[..dev_feature_size + 4])
        .expect("DeviceFeature with 4 bytes of data");
    f.add("sizeof(vfio_device_feature)", "<DeviceFeature as KnownLayout>::size_for_metadata(0)", dev_feature_size);
    f.add("sizeof(vfio_device_feature)", "size_of::<FeatureHeader>()", size_of::<FeatureHeader>());
    f.add("sizeof(vfio_device_feature)", "FEATURE_HEADER_SIZE", FEATURE_HEADER_SIZE);
    f.add("alignof(vfio_device_feature)", "align_of_val(&DeviceFeature)", align_of_val(dev_feature));
    f.add("alignof(vfio_device_feature)", "align_of::<FeatureHeader>()", align_of::<FeatureHeader>());
    fields!(f, vfio_device_feature: DeviceFeature { argsz, flags });
    fields!(f, vfio_device_feature: FeatureHeader { argsz, flags });
    f.add(
        "offsetof(vfio_device_feature,data)",
        "DeviceFeature: &data[0] - &self (zerocopy ref)",
        offset_in(dev_feature, &dev_feature.data),
    );
    f.add(
        "offsetof(vfio_device_feature,data)",
        "<DeviceFeature as KnownLayout>::size_for_metadata(0)",
        dev_feature_size,
    );
    f.add(
        "offsetof(vfio_device_feature,data)",
        "FEATURE_HEADER_SIZE (where encoder/decoder start data)",
        FEATURE_HEADER_SIZE,
    );
    f.add(
        "sizeof(vfio_device_feature.data[0])",
        "size_of element of DeviceFeature::data",
        elem_size(|s: &DeviceFeature| &s.data),
    );
    f.add(
        "alignof(vfio_device_feature.data[0])",
        "align_of element of DeviceFeature::data",
        elem_align(|s: &DeviceFeature| &s.data),
    );

    // struct vfio_device_feature_dma_buf: the DST DeviceFeatureDmaBuf, and
    // its fixed part DmaBufHeader (the `minsz` the kernel copies first).
    let dma_buf_size = DeviceFeatureDmaBuf::size_for_ranges(0).expect("size_for_ranges(0)");
    let dma_buf = DeviceFeatureDmaBuf::ref_from_bytes(&words.as_bytes()[..dma_buf_size + 2 * DMA_RANGE_SIZE])
        .expect("DeviceFeatureDmaBuf with 2 ranges");
    f.add("sizeof(vfio_device_feature_dma_buf)", "DeviceFeatureDmaBuf::size_for_ranges(0)", dma_buf_size);
    f.add("sizeof(vfio_device_feature_dma_buf)", "size_of::<DmaBufHeader>()", size_of::<DmaBufHeader>());
    f.add("sizeof(vfio_device_feature_dma_buf)", "DMA_BUF_HEADER_SIZE", DMA_BUF_HEADER_SIZE);
    f.add("alignof(vfio_device_feature_dma_buf)", "align_of_val(&DeviceFeatureDmaBuf)", align_of_val(dma_buf));
    fields!(f, vfio_device_feature_dma_buf: DeviceFeatureDmaBuf { region_index, open_flags, flags, nr_ranges });
    fields!(f, vfio_device_feature_dma_buf: DmaBufHeader { region_index, open_flags, flags, nr_ranges });
    f.add(
        "offsetof(vfio_device_feature_dma_buf,dma_ranges)",
        "DeviceFeatureDmaBuf: &dma_ranges[0] - &self (zerocopy ref)",
        offset_in(dma_buf, &dma_buf.dma_ranges),
    );
    f.add("offsetof(vfio_device_feature_dma_buf,dma_ranges)", "DeviceFeatureDmaBuf::size_for_ranges(0)", dma_buf_size);
    f.add(
        "offsetof(vfio_device_feature_dma_buf,dma_ranges)",
        "DMA_BUF_HEADER_SIZE (where encoder/decoder put the ranges)",
        DMA_BUF_HEADER_SIZE,
    );
    f.add(
        "sizeof(vfio_device_feature_dma_buf.dma_ranges[0])",
        "size_of element of DeviceFeatureDmaBuf::dma_ranges",
        elem_size(|s: &DeviceFeatureDmaBuf| &s.dma_ranges),
    );
    f.add(
        "sizeof(vfio_device_feature_dma_buf.dma_ranges[0])",
        "size_for_ranges(1) - size_for_ranges(0)",
        DeviceFeatureDmaBuf::size_for_ranges(1).expect("size_for_ranges(1)") - dma_buf_size,
    );
    f.add(
        "alignof(vfio_device_feature_dma_buf.dma_ranges[0])",
        "align_of element of DeviceFeatureDmaBuf::dma_ranges",
        elem_align(|s: &DeviceFeatureDmaBuf| &s.dma_ranges),
    );

    sized_struct!(f, vfio_region_dma_range: DmaRange);
    f.add("sizeof(vfio_region_dma_range)", "DMA_RANGE_SIZE", DMA_RANGE_SIZE);
    fields!(f, vfio_region_dma_range: DmaRange { offset, length });

    sized_struct!(f, vfio_group_status: GroupStatus);
    fields!(f, vfio_group_status: GroupStatus { argsz, flags });
    sized_struct!(f, vfio_device_info: DeviceInfo);
    fields!(f, vfio_device_info: DeviceInfo { argsz, flags, num_regions, num_irqs, cap_offset, pad });
    sized_struct!(f, vfio_region_info: RegionInfo);
    fields!(f, vfio_region_info: RegionInfo { argsz, flags, index, cap_offset, size, offset });

    // The region-info capability chain QEMU reads to count sparse-mmap
    // areas, and the cdev/iommufd arguments the lab's iommufd mode sends.
    sized_struct!(f, vfio_info_cap_header: InfoCapHeader);
    fields!(f, vfio_info_cap_header: InfoCapHeader { id, version, next });
    sized_struct!(f, vfio_region_sparse_mmap_area: SparseMmapArea);
    fields!(f, vfio_region_sparse_mmap_area: SparseMmapArea { offset, size });
    sized_struct!(f, vfio_region_info_cap_sparse_mmap: RegionInfoCapSparseMmap);
    fields!(f, vfio_region_info_cap_sparse_mmap: RegionInfoCapSparseMmap { header, nr_areas, reserved });
    f.add(
        "offsetof(vfio_region_info_cap_sparse_mmap,areas)",
        "size_of::<RegionInfoCapSparseMmap>() (areas follow the fixed part)",
        size_of::<RegionInfoCapSparseMmap>(),
    );
    f.add(
        "sizeof(vfio_region_info_cap_sparse_mmap.areas[0])",
        "size_of::<SparseMmapArea>()",
        size_of::<SparseMmapArea>(),
    );
    f.add(
        "alignof(vfio_region_info_cap_sparse_mmap.areas[0])",
        "align_of::<SparseMmapArea>()",
        align_of::<SparseMmapArea>(),
    );
    sized_struct!(f, vfio_device_bind_iommufd: DeviceBindIommufd);
    fields!(f, vfio_device_bind_iommufd: DeviceBindIommufd { argsz, flags, iommufd, out_devid, token_uuid_ptr });
    sized_struct!(f, vfio_device_attach_iommufd_pt: DeviceAttachIommufdPt);
    fields!(f, vfio_device_attach_iommufd_pt: DeviceAttachIommufdPt { argsz, flags, pt_id, pasid });
    sized_struct!(f, vfio_device_detach_iommufd_pt: DeviceDetachIommufdPt);
    fields!(f, vfio_device_detach_iommufd_pt: DeviceDetachIommufdPt { argsz, flags, pasid });
    sized_struct!(f, iommu_destroy: IommuDestroy);
    fields!(f, iommu_destroy: IommuDestroy { size, id });
    sized_struct!(f, iommu_ioas_alloc: IommuIoasAlloc);
    fields!(f, iommu_ioas_alloc: IommuIoasAlloc { size, flags, out_ioas_id });
    sized_struct!(f, iommu_ioas_map_file: IommuIoasMapFile);
    fields!(f, iommu_ioas_map_file: IommuIoasMapFile { size, flags, ioas_id, fd, start, length, iova });
    sized_struct!(f, iommu_ioas_unmap: IommuIoasUnmap);
    fields!(f, iommu_ioas_unmap: IommuIoasUnmap { size, ioas_id, iova, length });
    consts!(
        f,
        uapi: VFIO_REGION_INFO_FLAG_CAPS,
        VFIO_REGION_INFO_CAP_SPARSE_MMAP,
        VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
        VFIO_DEVICE_BIND_FLAG_TOKEN,
    );
    consts!(
        f,
        iommufd: IOMMUFD_TYPE,
        IOMMUFD_CMD_DESTROY,
        IOMMUFD_CMD_IOAS_ALLOC,
        IOMMUFD_CMD_IOAS_UNMAP,
        IOMMUFD_CMD_IOAS_MAP_FILE,
        IOMMU_IOAS_MAP_FIXED_IOVA,
        IOMMU_IOAS_MAP_WRITEABLE,
        IOMMU_IOAS_MAP_READABLE,
    );

    consts!(f, uapi: VFIO_TYPE, VFIO_BASE, VFIO_API_VERSION);
    f.add("VFIO_TYPE1v2_IOMMU", "uapi::VFIO_TYPE1V2_IOMMU", uapi::VFIO_TYPE1V2_IOMMU);
    consts!(
        f,
        uapi: VFIO_GROUP_FLAGS_VIABLE,
        VFIO_DEVICE_FLAGS_RESET,
        VFIO_REGION_INFO_FLAG_MMAP,
        VFIO_PCI_ROM_REGION_INDEX,
        VFIO_PCI_CONFIG_REGION_INDEX,
        VFIO_DEVICE_FEATURE_MASK,
        VFIO_DEVICE_FEATURE_GET,
        VFIO_DEVICE_FEATURE_SET,
        VFIO_DEVICE_FEATURE_PROBE,
        VFIO_DEVICE_FEATURE_DMA_BUF,
    );
    consts!(
        f,
        codes: VFIO_GET_API_VERSION,
        VFIO_CHECK_EXTENSION,
        VFIO_SET_IOMMU,
        VFIO_GROUP_GET_STATUS,
        VFIO_GROUP_SET_CONTAINER,
        VFIO_GROUP_GET_DEVICE_FD,
        VFIO_DEVICE_GET_INFO,
        VFIO_DEVICE_GET_REGION_INFO,
        VFIO_DEVICE_RESET,
        VFIO_DEVICE_FEATURE,
        VFIO_DEVICE_BIND_IOMMUFD,
        VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        VFIO_DEVICE_DETACH_IOMMUFD_PT,
        IOMMU_DESTROY,
        IOMMU_IOAS_ALLOC,
        IOMMU_IOAS_UNMAP,
        IOMMU_IOAS_MAP_FILE,
    );

    for s in SAMPLES {
        let (rust, value) = match encode_sample(s) {
            Ok(bytes) => ("RequestBuilder::encode()".to_string(), hex(&bytes)),
            Err(e) => (format!("RequestBuilder::encode() failed: {e}"), "<none>".to_string()),
        };
        f.add(format!("sample({})", s.name), rust, value);
    }
    facts.0
}

fn encode_sample(s: &Sample) -> Result<Vec<u8>, uapi::EncodeError> {
    let mut b = RequestBuilder::new()
        .region_index(s.region_index)
        .open_flags(s.open_flags)
        .flags(s.flags)
        .ranges(s.ranges.iter().map(|&(offset, length)| DmaRange::new(offset, length)));
    if let Some(v) = s.feature_flags {
        b = b.feature_flags(v);
    }
    if let Some(v) = s.argsz {
        b = b.argsz(v);
    }
    if let Some(v) = s.nr_ranges {
        b = b.nr_ranges(v);
    }
    b.encode()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn describe_mismatch(fact: &Fact, c: &str) -> String {
    let mut msg = format!("{}: C {}, Rust {} = {}", fact.name, c, fact.rust, fact.value);
    if fact.name.starts_with("sample(") {
        // Hex strings: say where they part, in bytes.
        let first =
            c.bytes().zip(fact.value.bytes()).position(|(a, b)| a != b).unwrap_or(c.len().min(fact.value.len()));
        let _ = write!(
            msg,
            " (C {} bytes, Rust {} bytes, first difference at byte {})",
            c.len() / 2,
            fact.value.len() / 2,
            first / 2
        );
    }
    msg
}

/// The generated C half of [`SAMPLES`].
fn samples_header() -> String {
    let mut h = String::from(
        "/* Generated by uapi/tests/kernel_header.rs from its SAMPLES; do not edit. */\n\
         static const struct sample samples[] = {\n",
    );
    for s in SAMPLES {
        assert!(
            !s.name.is_empty() && s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "sample name {:?} must be a non-empty C identifier",
            s.name
        );
        let ranges = if s.ranges.is_empty() {
            "NULL".to_string()
        } else {
            let items: Vec<String> = s.ranges.iter().map(|(o, l)| format!("{{ {o:#x}ull, {l:#x}ull }}")).collect();
            format!("(const struct sample_range[]){{ {} }}", items.join(", "))
        };
        let opt = |v: Option<u32>| (u8::from(v.is_some()), v.unwrap_or(0));
        let (has_ff, ff) = opt(s.feature_flags);
        let (has_argsz, argsz) = opt(s.argsz);
        let (has_nr, nr) = opt(s.nr_ranges);
        let _ = writeln!(
            h,
            "\t{{ .name = \"{}\", .has_feature_flags = {has_ff}, .feature_flags = {ff:#x}u, .has_argsz = {has_argsz}, \
             .argsz = {argsz:#x}u, .region_index = {:#x}u, .open_flags = {:#x}u, .flags = {:#x}u, \
             .has_nr_ranges = {has_nr}, .nr_ranges = {nr:#x}u, .n_ranges = {}, .ranges = {ranges} }},",
            s.name,
            s.region_index,
            s.open_flags,
            s.flags,
            s.ranges.len(),
        );
    }
    h.push_str("};\n");
    h
}

// ---------------------------------------------------------------------------
// The C side.

struct KernelHeader {
    include: PathBuf,
    /// How it was found, for messages.
    origin: String,
}

impl KernelHeader {
    fn describe(&self, version_code: Option<&str>) -> String {
        let mut s = format!("{} ({})", self.include.display(), self.origin);
        if let Some(code) = version_code.and_then(|c| c.parse::<u32>().ok()) {
            let _ = write!(s, ", LINUX_VERSION_CODE {}.{}.{}", code >> 16, (code >> 8) & 0xff, code & 0xff);
        }
        s
    }
}

const HOW_TO_GET_A_HEADER: &str = "How to get the header this test needs (<linux/vfio.h> of Linux >= 6.19, with \
VFIO_DEVICE_FEATURE_DMA_BUF):\n  - run `cargo run --release -p kernel-lab -- fetch-header` (see its --help): it \
downloads Debian sid's linux-libc-dev into a cache (needs apt-get/dpkg-deb and network access to the Debian mirror \
of the machine's apt sources; NR_RANGES_CACHE, NR_RANGES_DEBIAN_MIRROR etc. adjust it) and prints the include \
directory; the test runs it itself when NR_RANGES_KERNEL_INCLUDE is unset, so a working command is enough;\n  - or set NR_RANGES_KERNEL_INCLUDE to an include \
directory that has linux/vfio.h (e.g. the `usr/include` of an extracted linux-libc-dev >= 6.19, or of `make \
headers_install` from a kernel tree).";

fn kernel_header() -> KernelHeader {
    if let Some(dir) = std::env::var_os(ENV_INCLUDE).filter(|d| !d.is_empty()) {
        let include = PathBuf::from(&dir);
        if let Err(why) = usable(&include) {
            panic!("{ENV_INCLUDE}={}: {why}.\n{HOW_TO_GET_A_HEADER}", include.display());
        }
        return KernelHeader { include, origin: format!("from {ENV_INCLUDE}") };
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(WORKSPACE)
        .args(["run", "--quiet", "--release", "-p", "kernel-lab", "--", "fetch-header"])
        .output()
        .unwrap_or_else(|e| {
            panic!("{ENV_INCLUDE} is unset and `{FETCH_COMMAND}` could not be run: {e}\n{HOW_TO_GET_A_HEADER}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = stdout.trim_end_matches('\n');
    if !out.status.success() || dir.is_empty() || dir.contains('\n') {
        panic!(
            "{ENV_INCLUDE} is unset and `{FETCH_COMMAND}` failed ({}), so there is no kernel header to check the \
             layout against.\nIts stderr:\n{}\nIts stdout:\n{}\n{HOW_TO_GET_A_HEADER}",
            out.status,
            indent(&stderr),
            indent(&stdout)
        );
    }
    let include = PathBuf::from(dir);
    if let Err(why) = usable(&include) {
        panic!(
            "`{FETCH_COMMAND}` printed {}: {why}.\nIts stderr:\n{}\n{HOW_TO_GET_A_HEADER}",
            include.display(),
            indent(&stderr)
        );
    }
    // .../linux-libc-dev/<version>/usr/include, with a marker naming the version.
    let root = include.parent().and_then(Path::parent);
    let version = root
        .and_then(|r| std::fs::read_to_string(r.join(".nr-ranges-complete")).ok())
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("version=").map(str::to_owned)))
        .or_else(|| root.and_then(|r| r.file_name()).map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "of unknown version".to_string());
    KernelHeader { include, origin: format!("linux-libc-dev {version} via `{FETCH_COMMAND}`") }
}

/// Whether `include` has a `linux/vfio.h` new enough to check against.
fn usable(include: &Path) -> Result<(), String> {
    let vfio_h = include.join("linux/vfio.h");
    let text = std::fs::read_to_string(&vfio_h).map_err(|e| format!("cannot read {}: {e}", vfio_h.display()))?;
    if !text.contains("VFIO_DEVICE_FEATURE_DMA_BUF") || !text.contains("struct vfio_region_dma_range") {
        return Err(format!(
            "{} has no VFIO_DEVICE_FEATURE_DMA_BUF / struct vfio_region_dma_range: it is older than Linux 6.19",
            vfio_h.display()
        ));
    }
    let iommufd_h = include.join("linux/iommufd.h");
    let text = std::fs::read_to_string(&iommufd_h).map_err(|e| format!("cannot read {}: {e}", iommufd_h.display()))?;
    if !text.contains("struct iommu_ioas_map_file") {
        return Err(format!("{} has no struct iommu_ioas_map_file: it is older than Linux 6.14", iommufd_h.display()));
    }
    Ok(())
}

/// The Debian multiarch directory holding `asm/` for the target being tested.
fn multiarch_triplet() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "x86" => "i386-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "powerpc64" => "powerpc64le-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "loongarch64" => "loongarch64-linux-gnu",
        other => other,
    }
}

/// Compiles and runs the probe; returns its stdout.
fn run_probe(header: &KernelHeader, work: &Path) -> String {
    let samples = work.join("layout_samples.h");
    std::fs::write(&samples, samples_header()).unwrap_or_else(|e| panic!("cannot write {}: {e}", samples.display()));

    let cc: Vec<OsString> = match std::env::var("CC") {
        Ok(cc) if !cc.trim().is_empty() => cc.split_whitespace().map(OsString::from).collect(),
        _ => vec![OsString::from("cc")],
    };
    let exe = work.join("layout_probe");
    let mut cmd = Command::new(&cc[0]);
    cmd.args(&cc[1..]).args(["-std=c11", "-Wall", "-Wextra", "-Werror"]).arg("-I").arg(&header.include);
    let arch_dir = header.include.join(multiarch_triplet());
    if arch_dir.is_dir() {
        cmd.arg("-I").arg(&arch_dir);
    }
    cmd.arg("-I").arg(work).arg("-o").arg(&exe).arg(PROBE_SOURCE);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?} ({e}); install gcc or clang, or set CC", cc[0]));
    if !out.status.success() {
        panic!(
            "compiling the layout probe against {} failed ({}):\n  {:?}\n{}",
            header.describe(None),
            out.status,
            cmd,
            indent(&head(&String::from_utf8_lossy(&out.stderr), 60))
        );
    }

    let out = Command::new(&exe).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    if !out.status.success() {
        panic!(
            "{} (built against {}) failed ({}):\n{}",
            exe.display(),
            header.describe(None),
            out.status,
            indent(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let stdout = String::from_utf8(out.stdout).expect("the probe prints ASCII");
    let _ = std::fs::write(work.join("layout_probe.out"), &stdout);
    stdout
}

fn parse_probe_output(out: &str, header: &KernelHeader, work: &Path) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            panic!("malformed probe line {line:?} (header {}, work dir {})", header.describe(None), work.display());
        };
        if map.insert(name.to_string(), value.to_string()).is_some() {
            panic!("the probe printed {name} twice (header {}, work dir {})", header.describe(None), work.display());
        }
    }
    map
}

/// The first `n` lines of `text`, saying how many were left out.
fn head(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return text.to_string();
    }
    format!("{}\n... ({} more lines)", lines[..n].join("\n"), lines.len() - n)
}

fn indent(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return "    (nothing)".to_string();
    }
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
