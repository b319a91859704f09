//! Numbers as the CLI accepts them: a JSON integer in `0..=2^64-1`, or a
//! string `"0x..."` of hex digits. Anything else (negative numbers, floats,
//! integers beyond 2^64-1, decimal strings, signs, `null`, ...) is an error,
//! and a value too large for its field is an error too: nothing is truncated.

use core::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What the CLI accepts where a number is expected, for error messages.
pub const NUMBER_FORMS: &str = "an integer in 0..=18446744073709551615 or a \"0x...\" hex string";

/// Where a number sits, to name it in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// Nowhere in particular (the device file, where serde_json adds the
    /// position).
    Anonymous,
    /// A top-level field of a request line.
    Field(&'static str),
    /// Part `part` ("offset" or "length") of range `index` of `"ranges"`.
    Range {
        /// Index in `"ranges"`, 0-based.
        index: usize,
        /// `"offset"` or `"length"`.
        part: &'static str,
    },
}

impl fmt::Display for Ctx {
    /// The prefix of an error message: empty, or ending in `": "`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Anonymous => Ok(()),
            Ctx::Field(name) => write!(f, "field \"{name}\": "),
            Ctx::Range { index, part } => write!(f, "field \"ranges\", range {index}, {part}: "),
        }
    }
}

/// Parses a `"0x..."` string: prefix `0x` or `0X`, then at least one hex
/// digit (either case), nothing else, at most 2^64-1. The error says why.
pub fn parse_hex(s: &str) -> Result<u64, String> {
    let digits = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(d) => d,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!(
            "{s:?} is a decimal string, which is not accepted: write it as a JSON number ({s}) or as hex (\"0x...\")"
        ))
        }
        None => return Err(format!("{s:?} is not a number: expected {NUMBER_FORMS}")),
    };
    if digits.is_empty() {
        return Err(format!("{s:?} has no hex digits after \"0x\""));
    }
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a hex number: only 0-9, a-f and A-F may follow \"0x\" (no sign, no spaces)"));
    }
    // Only hex digits: the one possible error left is overflow.
    u64::from_str_radix(digits, 16).map_err(|_| format!("{s:?} does not fit in 64 bits"))
}

/// Deserializes one number into a `u64` no larger than `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NumSeed {
    pub ctx: Ctx,
    /// The largest value the field holds.
    pub max: u64,
    /// The field's type, for the error message when the value exceeds `max`.
    pub ty: &'static str,
}

impl NumSeed {
    /// A `u32` field.
    pub const fn u32(ctx: Ctx) -> Self {
        Self { ctx, max: u32::MAX as u64, ty: "u32" }
    }

    /// A `u64` field.
    pub const fn u64(ctx: Ctx) -> Self {
        Self { ctx, max: u64::MAX, ty: "u64" }
    }

    fn wrong_type<E: de::Error>(&self, got: &dyn fmt::Display) -> E {
        E::custom(format_args!("{}expected {NUMBER_FORMS}, got {got}", self.ctx))
    }
}

impl<'de> DeserializeSeed<'de> for NumSeed {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumSeed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NUMBER_FORMS)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v > self.max {
            return Err(E::custom(format_args!("{}{v} does not fit in {}", self.ctx, self.ty)));
        }
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format_args!("{}{v} is negative: expected {NUMBER_FORMS}", self.ctx))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // serde_json hands over floats, exponents and integers beyond 2^64-1
        // (which it cannot hold in a u64) as f64.
        Err(E::custom(format_args!(
            "{}{v:?} is not an integer in 0..=18446744073709551615 (fractions, exponents and integers beyond 2^64-1 are refused)",
            self.ctx
        )))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        let v = parse_hex(s).map_err(|msg| E::custom(format_args!("{}{msg}", self.ctx)))?;
        if v > self.max {
            return Err(E::custom(format_args!("{}{s} ({v}) does not fit in {}", self.ctx, self.ty)));
        }
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<u64, E> {
        Err(self.wrong_type(&v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Err(self.wrong_type(&"null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(self.wrong_type(&"an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(self.wrong_type(&"an object"))
    }
}

/// A `u64` in a device file, in any of the accepted forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct U64(pub u64);

impl<'de> serde::Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        NumSeed::u64(Ctx::Anonymous).deserialize(deserializer).map(U64)
    }
}

/// Swallows the rest of a sequence, so that an error can name how long it was.
pub(crate) fn count_rest<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<usize, A::Error> {
    let mut n = 0;
    while seq.next_element::<IgnoredAny>()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(json: &str, seed: NumSeed) -> Result<u64, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        seed.deserialize(&mut de).map_err(|e| crate::json_error_message(&e))
    }

    #[test]
    fn hex_accepts_either_case_and_leading_zeros() {
        assert_eq!(parse_hex("0x0"), Ok(0));
        assert_eq!(parse_hex("0XfF"), Ok(255));
        assert_eq!(parse_hex("0xFFFFFFFFFFFFFFFF"), Ok(u64::MAX));
        assert_eq!(parse_hex("0x00000000000000000001"), Ok(1));
    }

    #[test]
    fn hex_refuses_everything_else_with_a_reason() {
        for (s, why) in [
            ("0x", "no hex digits"),
            ("0x+1", "not a hex number"),
            ("0x-1", "not a hex number"),
            ("-0x1", "not a number"),
            ("0x1g", "not a hex number"),
            (" 0x1", "not a number"),
            ("0x1 ", "not a hex number"),
            ("0x10000000000000000", "does not fit in 64 bits"),
            ("4096", "decimal string"),
            ("", "not a number"),
            ("x10", "not a number"),
        ] {
            let e = parse_hex(s).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn json_numbers_and_their_errors() {
        let f = NumSeed::u32(Ctx::Field("argsz"));
        assert_eq!(num("4294967295", f), Ok(u32::MAX as u64));
        assert_eq!(num("\"0xffffffff\"", f), Ok(u32::MAX as u64));
        assert_eq!(num("4294967296", f).unwrap_err(), "field \"argsz\": 4294967296 does not fit in u32");
        assert_eq!(
            num("\"0x100000000\"", f).unwrap_err(),
            "field \"argsz\": 0x100000000 (4294967296) does not fit in u32"
        );
        let g = NumSeed::u64(Ctx::Range { index: 3, part: "length" });
        assert_eq!(num("18446744073709551615", g), Ok(u64::MAX));
        let e = num("18446744073709551616", g).unwrap_err();
        assert!(e.starts_with("field \"ranges\", range 3, length: 1.8446744073709552e19 is not an integer"), "{e}");
        assert!(num("-1", g).unwrap_err().contains("-1 is negative"));
        assert!(num("1.0", g).unwrap_err().contains("1.0 is not an integer"));
        assert!(num("1e3", g).unwrap_err().contains("1000.0 is not an integer"));
        assert!(num("null", g).unwrap_err().contains("got null"));
        assert!(num("true", g).unwrap_err().contains("got true"));
        assert!(num("[1]", g).unwrap_err().contains("got an array"));
        assert!(num("{}", g).unwrap_err().contains("got an object"));
    }
}
