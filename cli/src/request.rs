//! A request line: one JSON object describing a `VFIO_DEVICE_FEATURE(DMA_BUF)`
//! argument, and how it becomes a [`uapi::OwnedRequest`] (through
//! [`uapi::RequestBuilder`]): its bytes, or the [`uapi::Request`] the
//! validator decides.

use core::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use uapi::{DmaRange, EncodeError, OwnedRequest, RequestBuilder};

use crate::num::{count_rest, Ctx, NumSeed};

/// The fields of a request line, in documentation order.
pub const FIELDS: [&str; 8] =
    ["feature_flags", "argsz", "region_index", "open_flags", "flags", "nr_ranges", "ranges", "readable_ranges"];

/// One request line, parsed. `None` means "absent: use the default".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestLine {
    /// `vfio_device_feature.flags`; default `GET | DMA_BUF` (0x1000b).
    pub feature_flags: Option<u32>,
    /// `vfio_device_feature.argsz`; default `8 + 16 + 16 * ranges.len()`.
    pub argsz: Option<u32>,
    /// `region_index`; default 0.
    pub region_index: Option<u32>,
    /// `open_flags`; default 0.
    pub open_flags: Option<u32>,
    /// The dma-buf header's `flags`; default 0.
    pub flags: Option<u32>,
    /// `nr_ranges`; default `ranges.len()`.
    pub nr_ranges: Option<u32>,
    /// The ranges written after the dma-buf header, `[offset, length]` each.
    pub ranges: Vec<DmaRange>,
    /// How many ranges' worth of memory after the dma-buf header the kernel
    /// can read; default `ranges.len()`.
    pub readable_ranges: Option<u64>,
}

impl RequestLine {
    /// Parses one line (without its line terminator). The error is a
    /// one-line message without position: the caller adds the line number.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(line).map_err(|e| crate::json_error_message(&e))
    }

    /// The builder of the line's request: every field that is given
    /// overrides the builder's default (`readable_ranges` sets the readable
    /// window, saturating: 2^64-1 means everything is readable).
    pub fn into_builder(self) -> RequestBuilder {
        let mut b = RequestBuilder::new().ranges(self.ranges);
        if let Some(v) = self.feature_flags {
            b = b.feature_flags(v);
        }
        if let Some(v) = self.argsz {
            b = b.argsz(v);
        }
        if let Some(v) = self.region_index {
            b = b.region_index(v);
        }
        if let Some(v) = self.open_flags {
            b = b.open_flags(v);
        }
        if let Some(v) = self.flags {
            b = b.flags(v);
        }
        if let Some(v) = self.nr_ranges {
            b = b.nr_ranges(v);
        }
        if let Some(v) = self.readable_ranges {
            b = b.readable_ranges(v);
        }
        b
    }

    /// The line's request: headers, written ranges and readable window.
    /// Fails only where the headers cannot be encoded (more than 2^32-1
    /// ranges without explicit `nr_ranges`/`argsz`).
    pub fn into_request(self) -> Result<OwnedRequest, EncodeError> {
        self.into_builder().build()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    FeatureFlags,
    Argsz,
    RegionIndex,
    OpenFlags,
    Flags,
    NrRanges,
    Ranges,
    ReadableRanges,
}

impl Field {
    const ALL: [Field; 8] = [
        Field::FeatureFlags,
        Field::Argsz,
        Field::RegionIndex,
        Field::OpenFlags,
        Field::Flags,
        Field::NrRanges,
        Field::Ranges,
        Field::ReadableRanges,
    ];

    fn name(self) -> &'static str {
        FIELDS[self as usize]
    }
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Field, E> {
                match Field::ALL.iter().find(|f| f.name() == s) {
                    Some(f) => Ok(*f),
                    None => Err(E::custom(format_args!("unknown field {s:?} (the fields are {})", FIELDS.join(", ")))),
                }
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

impl<'de> de::Deserialize<'de> for RequestLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LineVisitor)
    }
}

/// Says what a line was when it was not an object.
fn not_an_object<E: de::Error>(got: &dyn fmt::Display) -> E {
    E::custom(format_args!("a request line must be a JSON object, got {got}"))
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = RequestLine;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object (a request line)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestLine, A::Error> {
        let mut line = RequestLine::default();
        let mut seen = 0u8;
        while let Some(field) = map.next_key::<Field>()? {
            let bit = 1u8 << field as u8;
            if seen & bit != 0 {
                return Err(de::Error::custom(format_args!("field {:?} appears twice", field.name())));
            }
            seen |= bit;
            let u32_field = |map: &mut A| -> Result<Option<u32>, A::Error> {
                // NumSeed::u32 refuses anything above u32::MAX.
                let v = map.next_value_seed(NumSeed::u32(Ctx::Field(field.name())))?;
                Ok(Some(v as u32))
            };
            match field {
                Field::FeatureFlags => line.feature_flags = u32_field(&mut map)?,
                Field::Argsz => line.argsz = u32_field(&mut map)?,
                Field::RegionIndex => line.region_index = u32_field(&mut map)?,
                Field::OpenFlags => line.open_flags = u32_field(&mut map)?,
                Field::Flags => line.flags = u32_field(&mut map)?,
                Field::NrRanges => line.nr_ranges = u32_field(&mut map)?,
                Field::Ranges => line.ranges = map.next_value_seed(RangesSeed)?,
                Field::ReadableRanges => {
                    line.readable_ranges = Some(map.next_value_seed(NumSeed::u64(Ctx::Field("readable_ranges")))?)
                }
            }
        }
        Ok(line)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RequestLine, E> {
        Err(not_an_object(&format_args!("the number {v}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RequestLine, E> {
        Err(not_an_object(&format_args!("the number {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RequestLine, E> {
        Err(not_an_object(&format_args!("the number {v:?}")))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RequestLine, E> {
        Err(not_an_object(&"a string"))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RequestLine, E> {
        Err(not_an_object(&v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RequestLine, E> {
        Err(not_an_object(&"null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RequestLine, A::Error> {
        Err(not_an_object(&"an array"))
    }
}

/// `"ranges"`: an array of `[offset, length]` pairs.
struct RangesSeed;

fn ranges_wrong_type<E: de::Error>(got: &dyn fmt::Display) -> E {
    E::custom(format_args!("field \"ranges\": expected an array of [offset, length] pairs, got {got}"))
}

impl<'de> DeserializeSeed<'de> for RangesSeed {
    type Value = Vec<DmaRange>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<DmaRange>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RangesSeed {
    type Value = Vec<DmaRange>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [offset, length] pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<DmaRange>, A::Error> {
        let mut ranges = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(r) = seq.next_element_seed(PairSeed { index: ranges.len() })? {
            ranges.push(r);
        }
        Ok(ranges)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<DmaRange>, E> {
        Err(ranges_wrong_type(&format_args!("the number {v}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<DmaRange>, E> {
        Err(ranges_wrong_type(&format_args!("the number {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<DmaRange>, E> {
        Err(ranges_wrong_type(&format_args!("the number {v:?}")))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<DmaRange>, E> {
        Err(ranges_wrong_type(&"a string"))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<DmaRange>, E> {
        Err(ranges_wrong_type(&v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<DmaRange>, E> {
        Err(ranges_wrong_type(&"null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Vec<DmaRange>, A::Error> {
        Err(ranges_wrong_type(&"an object"))
    }
}

/// One `[offset, length]` pair of `"ranges"`.
struct PairSeed {
    index: usize,
}

impl PairSeed {
    fn wrong<E: de::Error>(&self, got: &dyn fmt::Display) -> E {
        E::custom(format_args!("field \"ranges\", range {}: expected [offset, length], got {got}", self.index))
    }
}

impl<'de> DeserializeSeed<'de> for PairSeed {
    type Value = DmaRange;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<DmaRange, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PairSeed {
    type Value = DmaRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an [offset, length] pair")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DmaRange, A::Error> {
        let index = self.index;
        let Some(offset) = seq.next_element_seed(NumSeed::u64(Ctx::Range { index, part: "offset" }))? else {
            return Err(self.wrong(&"an empty array"));
        };
        let Some(length) = seq.next_element_seed(NumSeed::u64(Ctx::Range { index, part: "length" }))? else {
            return Err(self.wrong(&"an array of 1 element"));
        };
        let extra = count_rest(&mut seq)?;
        if extra > 0 {
            return Err(self.wrong(&format_args!("an array of {} elements", 2 + extra)));
        }
        Ok(DmaRange::new(offset, length))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<DmaRange, E> {
        Err(self.wrong(&format_args!("the number {v}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<DmaRange, E> {
        Err(self.wrong(&format_args!("the number {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<DmaRange, E> {
        Err(self.wrong(&format_args!("the number {v:?}")))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<DmaRange, E> {
        Err(self.wrong(&"a string"))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<DmaRange, E> {
        Err(self.wrong(&v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<DmaRange, E> {
        Err(self.wrong(&"null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<DmaRange, A::Error> {
        Err(self.wrong(&"an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::{FeatureHeader, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET};

    fn parse(s: &str) -> Result<RequestLine, String> {
        RequestLine::parse(s.as_bytes())
    }

    #[test]
    fn empty_object_is_all_defaults() {
        let line = parse("{}").unwrap();
        assert_eq!(line, RequestLine::default());
        let b = line.into_builder();
        assert_eq!(b, RequestBuilder::new());
        let (f, h) = b.headers().unwrap();
        assert_eq!(f, FeatureHeader { argsz: 24, flags: VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF });
        assert_eq!(h, Default::default());
    }

    #[test]
    fn every_field_parses_and_overrides() {
        let line = parse(
            r#"{"feature_flags":"0x5000b","argsz":7,"region_index":2,"open_flags":"0XFFFFFFFF","flags":1,
                "nr_ranges":9,"ranges":[[0,"0x1000"],["0x2000",4096]],"readable_ranges":"0x10"}"#,
        )
        .unwrap();
        assert_eq!(
            line,
            RequestLine {
                feature_flags: Some(0x5000b),
                argsz: Some(7),
                region_index: Some(2),
                open_flags: Some(u32::MAX),
                flags: Some(1),
                nr_ranges: Some(9),
                ranges: vec![DmaRange::new(0, 0x1000), DmaRange::new(0x2000, 0x1000)],
                readable_ranges: Some(16),
            }
        );
        let want = RequestBuilder::new()
            .feature_flags(0x5000b)
            .argsz(7)
            .region_index(2)
            .open_flags(u32::MAX)
            .flags(1)
            .nr_ranges(9)
            .range(0, 0x1000)
            .range(0x2000, 0x1000)
            .readable_ranges(16);
        assert_eq!(line.into_builder(), want);
    }

    #[test]
    fn request_reflects_readable_ranges() {
        let at = |readable_ranges: Option<u64>| {
            let mut line = parse(r#"{"ranges":[[0,4096],[4096,4096],[8192,4096]]}"#).unwrap();
            line.readable_ranges = readable_ranges;
            line.into_request().unwrap()
        };
        let full = at(None);
        let full = full.request();
        assert_eq!(full.ranges.len(), 3);
        assert_eq!(full.readable, 16 + 48);
        assert_eq!(full.feature.argsz, 8 + 16 + 48);
        let short = at(Some(1));
        let short = short.request();
        assert_eq!(short.ranges.len(), 1, "unreadable written ranges are not passed");
        assert_eq!(short.readable, 32);
        assert_eq!(short.dma_buf.nr_ranges, 3);
        let long = at(Some(5));
        let long = long.request();
        assert_eq!((long.ranges.len(), long.readable), (3, 16 + 80));
        let all = at(Some(u64::MAX));
        let all = all.request();
        assert_eq!((all.ranges.len(), all.readable), (3, u64::MAX));
        assert_eq!(at(Some(0)).readable, 16);
        assert_eq!(at(Some(u64::MAX / 16 - 1)).readable, u64::MAX - 15);
        assert_eq!(at(Some(u64::MAX / 16)).readable, u64::MAX, "saturates");
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        for (line, want) in [
            (r#"{"argsz":4294967296}"#, "field \"argsz\": 4294967296 does not fit in u32"),
            (r#"{"nr_ranges":"0x100000000"}"#, "field \"nr_ranges\": 0x100000000 (4294967296) does not fit in u32"),
            (r#"{"bogus":1}"#, "unknown field \"bogus\" (the fields are feature_flags, argsz,"),
            (r#"{"flags":1,"flags":2}"#, "field \"flags\" appears twice"),
            (r#"{"ranges":[[0,1],[2]]}"#, "field \"ranges\", range 1: expected [offset, length], got an array of 1"),
            (r#"{"ranges":[[0,1,2]]}"#, "field \"ranges\", range 0: expected [offset, length], got an array of 3"),
            (r#"{"ranges":[[]]}"#, "field \"ranges\", range 0: expected [offset, length], got an empty array"),
            (r#"{"ranges":[5]}"#, "field \"ranges\", range 0: expected [offset, length], got the number 5"),
            (r#"{"ranges":{}}"#, "field \"ranges\": expected an array of [offset, length] pairs, got an object"),
            (r#"{"ranges":[[-4096,1]]}"#, "field \"ranges\", range 0, offset: -4096 is negative"),
            (r#"{"ranges":[[0,"4096"]]}"#, "field \"ranges\", range 0, length: \"4096\" is a decimal string"),
            (r#"{"region_index":2.0}"#, "field \"region_index\": 2.0 is not an integer"),
            (r#"{"readable_ranges":null}"#, "field \"readable_ranges\": expected an integer"),
            (r#"[]"#, "a request line must be a JSON object, got an array"),
            (r#"7"#, "a request line must be a JSON object, got the number 7"),
            (r#"{"argsz":1"#, "invalid JSON: EOF while parsing an object at column 10"),
            (r#"{"argsz":1}}"#, "invalid JSON: trailing characters at column 12"),
            (r#"{argsz:1}"#, "invalid JSON: key must be a string at column 2"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.starts_with(want), "{line}: got {e:?}, want {want:?}");
            assert!(!e.contains("line 1"), "{line}: {e}");
        }
    }

    #[test]
    fn u64_max_is_accepted_everywhere_a_u64_goes() {
        let line =
            parse(r#"{"ranges":[[18446744073709551615,"0xffffffffffffffff"]],"readable_ranges":18446744073709551615}"#)
                .unwrap();
        assert_eq!(line.ranges, [DmaRange::new(u64::MAX, u64::MAX)]);
        assert_eq!(line.readable_ranges, Some(u64::MAX));
    }
}
