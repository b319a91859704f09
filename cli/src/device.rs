//! The device file: `{"page_size":4096,"kmalloc_max":N,"bars":[{"index":2,
//! "kind":"mem","start":N,"len":N}, ...]}`, as a [`validator::Device`].

use core::fmt;
use core::marker::PhantomData;
use std::path::Path;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use uapi::PCI_STD_NUM_BARS;
use validator::{Bar, Device, PageSize};

use crate::num::U64;

/// A `T` that must be written as a JSON object: serde's derived structs
/// also accept an array of their fields in order, which the device file
/// does not allow.
#[derive(Debug)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    #[serde(default)]
    page_size: Option<U64>,
    #[serde(default)]
    kmalloc_max: Option<U64>,
    #[serde(default)]
    bars: Vec<Object<BarFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BarFile {
    index: U64,
    kind: KindFile,
    start: U64,
    len: U64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindFile {
    Mem,
    Io,
}

/// Parses the text of a device file. The error says what is wrong, and
/// where for JSON errors, but not which file.
pub fn parse_device(text: &str) -> Result<Device, String> {
    let Object(file): Object<DeviceFile> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let page_size = match file.page_size {
        None => PageSize::default(),
        Some(U64(bytes)) => PageSize::from_bytes(bytes)
            .ok_or_else(|| format!("page_size {bytes} is not supported (4096, 16384 or 65536)"))?,
    };
    let mut dev = Device::new(page_size);
    if let Some(U64(max)) = file.kmalloc_max {
        dev.kmalloc_max = max;
    }
    let mut seen = [false; PCI_STD_NUM_BARS];
    for Object(b) in &file.bars {
        let U64(index) = b.index;
        let i = match usize::try_from(index) {
            Ok(i) if i < PCI_STD_NUM_BARS => i,
            _ => return Err(format!("BAR index {index} is out of range: BARs are 0..=5")),
        };
        if seen[i] {
            return Err(format!("BAR {i} is given twice"));
        }
        seen[i] = true;
        let (U64(start), U64(len)) = (b.start, b.len);
        if len == 0 {
            return Err(format!("BAR {i} has len 0: leave absent BARs out of \"bars\""));
        }
        if start.checked_add(len).is_none() {
            return Err(format!("BAR {i}: start {start:#x} + len {len:#x} overflows u64"));
        }
        dev.bars[i] = match b.kind {
            KindFile::Mem => Bar::mmio(start, len),
            KindFile::Io => Bar::io(start, len),
        };
    }
    Ok(dev)
}

/// Reads and parses the device file at `path`. The error names the file.
pub fn load_device(path: &Path) -> Result<Device, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read device file {:?}: {e}", path.display().to_string()))?;
    parse_device(&text).map_err(|e| format!("device file {:?}: {e}", path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use validator::BarKind;

    #[test]
    fn ivshmem_file_is_the_spike_device() {
        let dev = parse_device(
            r#"{"page_size":4096,"bars":[
                {"index":0,"kind":"mem","start":"0xfe800000","len":256},
                {"index":2,"kind":"mem","start":4244635648,"len":"0x1000000"}]}"#,
        )
        .unwrap();
        assert_eq!(dev, Device::ivshmem_example());
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse_device("{}").unwrap(), Device::new(PageSize::K4));
        let dev = parse_device(
            r#"{"page_size":65536,"kmalloc_max":"0x1000","bars":[{"index":5,"kind":"io","start":0,"len":1}]}"#,
        )
        .unwrap();
        assert_eq!(dev.page_size, PageSize::K64);
        assert_eq!(dev.kmalloc_max, 0x1000);
        assert_eq!(dev.bars[5], Bar { kind: BarKind::Io, start: 0, len: 1 });
        assert_eq!(parse_device(r#"{"page_size":16384}"#).unwrap().kmalloc_max, PageSize::K16.default_kmalloc_max());
    }

    #[test]
    fn bad_files_say_why() {
        for (text, want) in [
            (r#"{"bars":[{"index":6,"kind":"mem","start":0,"len":4096}]}"#, "BAR index 6 is out of range"),
            (
                r#"{"bars":[{"index":1,"kind":"mem","start":0,"len":4096},{"index":1,"kind":"io","start":0,"len":4}]}"#,
                "BAR 1 is given twice",
            ),
            (r#"{"bars":[{"index":1,"kind":"mem","start":0,"len":0}]}"#, "BAR 1 has len 0"),
            (
                r#"{"bars":[{"index":3,"kind":"mem","start":"0xfffffffffffff000","len":"0x1000"}]}"#,
                "BAR 3: start 0xfffffffffffff000 + len 0x1000 overflows u64",
            ),
            (
                r#"{"bars":[{"index":1,"kind":"rom","start":0,"len":1}]}"#,
                "unknown variant `rom`, expected `mem` or `io`",
            ),
            (r#"{"bars":[{"index":1,"kind":"mem","start":0,"len":1,"prefetch":true}]}"#, "unknown field `prefetch`"),
            (r#"{"bars":[{"index":1,"kind":"mem","start":0}]}"#, "missing field `len`"),
            (r#"{"page":4096}"#, "unknown field `page`"),
            (r#"{"page_size":8192}"#, "page_size 8192 is not supported"),
            (r#"{"page_size":-1}"#, "-1 is negative"),
            (r#"{"bars":[}"#, "expected value at line 1 column 10"),
            ("", "EOF while parsing a value"),
            ("[]", "invalid type: sequence, expected a JSON object"),
            (r#"{"bars":[[2,"mem",0,4096]]}"#, "invalid type: sequence, expected a JSON object at line 1 column 9"),
        ] {
            let e = parse_device(text).unwrap_err();
            assert!(e.contains(want), "{text}: got {e:?}, want {want:?}");
        }
    }
}
