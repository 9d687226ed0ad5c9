//! Exact, format-independent serde for the floats in optimizer state.
//!
//! Checkpoints must resume bit for bit, but JSON is a poor carrier for floats: serde_json
//! parses decimals on a fast path that can be one ulp off (unless its `float_roundtrip`
//! feature is on), and it writes infinities and NaN as `null`, which then fails to load.
//! So in human-readable formats every scalar is written as Rust's shortest round-trip
//! string (`"0.1"`, `"inf"`, `"NaN"`; Rust's parser is correctly rounded), and every `f32`
//! vector as one hex string of the IEEE-754 bit patterns (8 hex digits per value, big-endian
//! per value). Binary formats (bincode, ...) are exact already and get plain numbers.
//! Deserialisation also accepts plain JSON numbers for scalars, so hand-written configs load.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A float that has an exact textual form.
pub(crate) trait ExactFloat: Copy + fmt::Debug + std::str::FromStr + Serialize {
    fn from_f64(v: f64) -> Self;
    fn de_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl ExactFloat for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn de_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d)
    }
}

impl ExactFloat for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn de_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f32::deserialize(d)
    }
}

/// Wrapper giving a float the exact representation.
struct Ex<T>(T);

impl<T: ExactFloat> Serialize for Ex<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&format_args!("{:?}", self.0))
        } else {
            self.0.serialize(s)
        }
    }
}

struct ExVisitor<T>(std::marker::PhantomData<T>);

impl<T: ExactFloat> Visitor<'_> for ExVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a float written as a string (\"0.5\", \"inf\", \"NaN\") or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse::<T>().map_err(|_| E::custom(format!("invalid float {v:?}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Ok(T::from_f64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(T::from_f64(v as f64))
    }
}

impl<'de, T: ExactFloat> Deserialize<'de> for Ex<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(ExVisitor(std::marker::PhantomData)).map(Ex)
        } else {
            T::de_binary(d).map(Ex)
        }
    }
}

/// `#[serde(with = "exact::scalar")]` for an `f32` or `f64` field.
pub(crate) mod scalar {
    use super::*;

    pub(crate) fn serialize<S: Serializer, T: ExactFloat>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        Ex(*v).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: ExactFloat>(d: D) -> Result<T, D::Error> {
        Ex::<T>::deserialize(d).map(|e| e.0)
    }
}

/// `#[serde(with = "exact::option")]` for an `Option<f32>` or `Option<f64>` field.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer, T: ExactFloat>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        v.map(Ex).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: ExactFloat>(d: D) -> Result<Option<T>, D::Error> {
        Option::<Ex<T>>::deserialize(d).map(|o| o.map(|e| e.0))
    }
}

/// `#[serde(with = "exact::seq")]` for a `Vec<f64>` (one string per value).
pub(crate) mod seq {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| Ex(x)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Ex<f64>>::deserialize(d).map(|v| v.into_iter().map(|e| e.0).collect())
    }
}

/// `#[serde(with = "exact::option_seq")]` for a `Vec<Option<f64>>`.
pub(crate) mod option_seq {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[Option<f64>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.map(Ex)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<f64>>, D::Error> {
        Vec::<Option<Ex<f64>>>::deserialize(d).map(|v| v.into_iter().map(|o| o.map(|e| e.0)).collect())
    }
}

/// One `f32` vector: a hex string of bit patterns when human-readable, else a sequence.
struct F32Vec<'a>(&'a [f32]);

impl Serialize for F32Vec<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut hex = String::with_capacity(self.0.len() * 8);
            for x in self.0 {
                use fmt::Write;
                // Writing into a String cannot fail.
                let _ = write!(hex, "{:08x}", x.to_bits());
            }
            s.serialize_str(&hex)
        } else {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for x in self.0 {
                seq.serialize_element(x)?;
            }
            seq.end()
        }
    }
}

struct F32VecOwned(Vec<f32>);

struct HexVisitor;

impl<'de> Visitor<'de> for HexVisitor {
    type Value = Vec<f32>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a hex string of f32 bit patterns (8 digits per value) or a sequence of floats")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<f32>, E> {
        if !v.len().is_multiple_of(8) || !v.is_ascii() {
            return Err(E::custom(format!("hex f32 vector has {} characters, not a multiple of 8", v.len())));
        }
        v.as_bytes()
            .chunks_exact(8)
            .map(|c| {
                // ASCII was checked above, so the chunk is valid UTF-8.
                let s = std::str::from_utf8(c).map_err(E::custom)?;
                u32::from_str_radix(s, 16)
                    .map(f32::from_bits)
                    .map_err(|_| E::custom(format!("invalid hex f32 {s:?}")))
            })
            .collect()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Ex(x)) = seq.next_element::<Ex<f32>>()? {
            out.push(x);
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for F32VecOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(HexVisitor).map(F32VecOwned)
        } else {
            Vec::<f32>::deserialize(d).map(F32VecOwned)
        }
    }
}

/// `#[serde(with = "exact::f32_vec")]` for a `Vec<f32>`.
pub(crate) mod f32_vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        F32Vec(v).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        F32VecOwned::deserialize(d).map(|v| v.0)
    }
}

/// `#[serde(with = "exact::f32_vecs")]` for a `Vec<Vec<f32>>`.
pub(crate) mod f32_vecs {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| F32Vec(x)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f32>>, D::Error> {
        Vec::<F32VecOwned>::deserialize(d).map(|v| v.into_iter().map(|x| x.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "scalar")]
        a: f64,
        #[serde(with = "scalar")]
        b: f32,
        #[serde(with = "option")]
        c: Option<f64>,
        #[serde(with = "seq")]
        d: Vec<f64>,
        #[serde(with = "option_seq")]
        e: Vec<Option<f64>>,
        #[serde(with = "f32_vec")]
        f: Vec<f32>,
        #[serde(with = "f32_vecs")]
        g: Vec<Vec<f32>>,
    }

    #[test]
    fn json_round_trip_is_bitwise() {
        // Values chosen to be awkward for decimal round trips, plus non-finite ones.
        let awkward = [
            0.1 + 0.2,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from_bits(0x000f_ffff_ffff_ffff),
            9_007_199_254_740_993.0,
        ];
        let f32s: Vec<f32> = (0..1000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0x7f7f_ffff))
            .chain([f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE])
            .collect();
        let s = Sample {
            a: 0.1 + 0.2,
            b: 16_777_217.0_f32 / 3.0,
            c: Some(f64::NAN),
            d: awkward.to_vec(),
            e: vec![None, Some(0.7), Some(f64::NEG_INFINITY)],
            f: f32s.clone(),
            g: vec![f32s.clone(), vec![], vec![1.0]],
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: Sample = serde_json::from_str(&json).unwrap();
        assert_eq!(back.a.to_bits(), s.a.to_bits());
        assert_eq!(back.b.to_bits(), s.b.to_bits());
        assert!(back.c.unwrap().is_nan());
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.d), bits(&s.d));
        assert_eq!(back.e[0], None);
        assert_eq!(back.e[1], Some(0.7));
        assert_eq!(back.e[2], Some(f64::NEG_INFINITY));
        let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits32(&back.f), bits32(&s.f));
        assert_eq!(back.g.len(), 3);
        assert_eq!(bits32(&back.g[0]), bits32(&s.g[0]));
        assert!(back.g[1].is_empty());
        assert_eq!(back.g[2], vec![1.0]);
    }

    #[test]
    fn plain_numbers_are_accepted_for_scalars() {
        let json =
            r#"{"a":0.5,"b":2,"c":null,"d":[1.5,"inf"],"e":[null,0.25],"f":"3f800000","g":[[1.0,"2.5"]]}"#;
        let s: Sample = serde_json::from_str(json).unwrap();
        assert_eq!(s.a, 0.5);
        assert_eq!(s.b, 2.0);
        assert_eq!(s.c, None);
        assert_eq!(s.d, vec![1.5, f64::INFINITY]);
        assert_eq!(s.e, vec![None, Some(0.25)]);
        assert_eq!(s.f, vec![1.0]);
        assert_eq!(s.g, vec![vec![1.0, 2.5]]);
    }

    #[test]
    fn malformed_hex_is_an_error() {
        let json = r#"{"a":0.5,"b":2,"c":null,"d":[],"e":[],"f":"3f80000","g":[]}"#;
        let err = serde_json::from_str::<Sample>(json).unwrap_err().to_string();
        assert!(err.contains("multiple of 8"), "{err}");
    }
}
