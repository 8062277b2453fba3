//! JSON tensor data: flat or nested arrays decoded straight into typed storage (no
//! intermediate `serde_json::Value` tree), and nested encoding by shape.

use super::{DataType, TensorData};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::fmt;

/// The result of decoding a JSON `data` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub data: TensorData,
    /// The shape the nesting describes (`[]` for a bare scalar), or `None` when the nesting is
    /// ragged (sub-arrays of unequal length or scalars at different depths).
    pub nested_shape: Option<Vec<usize>>,
}

/// Decodes a JSON scalar or (nested) array of `dtype` elements, in row-major order.
///
/// Errors name the first offending element by its flat index, e.g.
/// `element 3: expected an FP32 number, found string "a"`.
pub fn decode_json(dtype: DataType, json: &str) -> Result<Decoded, String> {
    decode_json_expecting(dtype, json, 0)
}

/// As [`decode_json`], for data expected to hold `count` elements (a request's `shape`):
/// the storage is allocated for that many at once, instead of doubling as elements arrive,
/// which left a decoded tensor held until its answer up to twice its size (and copied it on
/// the way). What is allocated up front never exceeds the bytes of `json` itself, so a
/// shape claiming more than the text holds costs no more than the text; any other number
/// of elements still decodes.
pub fn decode_json_expecting(dtype: DataType, json: &str, count: usize) -> Result<Decoded, String> {
    macro_rules! go {
        ($variant:ident, $t:ty) => {{
            let capacity = count.min(json.len() / std::mem::size_of::<$t>().max(1));
            let mut out: Vec<$t> = Vec::with_capacity(capacity);
            let mut shape = ShapeTracker::default();
            let mut de = serde_json::Deserializer::from_str(json);
            Flatten {
                out: &mut out,
                shape: &mut shape,
                depth: 0,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| strip_position(e.to_string()))?;
            Decoded {
                data: TensorData::$variant(out),
                nested_shape: shape.finish(),
            }
        }};
    }
    Ok(match dtype {
        DataType::Bool => go!(Bool, bool),
        DataType::U8 => go!(U8, u8),
        DataType::U16 => go!(U16, u16),
        DataType::U32 => go!(U32, u32),
        DataType::U64 => go!(U64, u64),
        DataType::I8 => go!(I8, i8),
        DataType::I16 => go!(I16, i16),
        DataType::I32 => go!(I32, i32),
        DataType::I64 => go!(I64, i64),
        DataType::F32 => go!(F32, f32),
        DataType::F64 => go!(F64, f64),
        DataType::Bytes => go!(Bytes, Vec<u8>),
    })
}

/// serde_json appends " at line L column C" of the `data` fragment, which means nothing to
/// the caller; the element index in the message is what locates the problem.
fn strip_position(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// A JSON element convertible to a tensor element type.
trait Element: Sized {
    const DTYPE: DataType;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

macro_rules! int_element {
    ($t:ty, $dt:ident) => {
        impl Element for $t {
            const DTYPE: DataType = DataType::$dt;
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_f64(_: f64) -> Option<Self> {
                None
            }
        }
    };
}
int_element!(u8, U8);
int_element!(u16, U16);
int_element!(u32, U32);
int_element!(u64, U64);
int_element!(i8, I8);
int_element!(i16, I16);
int_element!(i32, I32);
int_element!(i64, I64);

macro_rules! float_element {
    ($t:ty, $dt:ident) => {
        impl Element for $t {
            const DTYPE: DataType = DataType::$dt;
            fn from_u64(v: u64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_i64(v: i64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_f64(v: f64) -> Option<Self> {
                // JSON has no infinities: a finite number that overflows the type is an error.
                let x = v as $t;
                x.is_finite().then_some(x)
            }
        }
    };
}
float_element!(f32, F32);
float_element!(f64, F64);

impl Element for Vec<u8> {
    const DTYPE: DataType = DataType::Bytes;
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

impl Element for bool {
    const DTYPE: DataType = DataType::Bool;
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Records the length seen at each nesting depth, to recover a rectangular shape.
#[derive(Default)]
struct ShapeTracker {
    dims: Vec<Option<usize>>,
    leaf_depth: Option<usize>,
    /// Depth of the shallowest empty array, whose children's depth is unknown.
    empty_at: Option<usize>,
    ragged: bool,
}

impl ShapeTracker {
    fn seq(&mut self, depth: usize, len: usize) {
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(len),
            Some(l) if l != len => self.ragged = true,
            Some(_) => {}
        }
        if len == 0 {
            self.empty_at = Some(self.empty_at.map_or(depth, |d| d.min(depth)));
        }
    }

    fn leaf(&mut self, depth: usize) {
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => self.ragged = true,
            Some(_) => {}
        }
    }

    fn finish(self) -> Option<Vec<usize>> {
        if self.ragged {
            return None;
        }
        let depth = match (self.leaf_depth, self.empty_at) {
            (Some(leaf), Some(empty)) if empty >= leaf => return None,
            (Some(leaf), _) => leaf,
            // Only empty arrays: the shape ends with the deepest of them.
            (None, _) => self.dims.len(),
        };
        self.dims[..depth].iter().copied().collect()
    }
}

struct Flatten<'a, T> {
    out: &'a mut Vec<T>,
    shape: &'a mut ShapeTracker,
    depth: usize,
}

impl<T: Element> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, found: fmt::Arguments) -> Result<(), E> {
        match v {
            Some(v) => {
                self.shape.leaf(self.depth);
                self.out.push(v);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "element {}: expected {}, found {}",
                self.out.len(),
                expected(T::DTYPE),
                found
            ))),
        }
    }
}

fn expected(dtype: DataType) -> String {
    match dtype {
        DataType::Bool => "a boolean (true/false)".to_string(),
        DataType::F32 | DataType::F64 => format!("an {dtype} number"),
        DataType::Bytes => "a string".to_string(),
        _ => format!("an integer in the {dtype} range"),
    }
}

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} or an array of them", expected(T::DTYPE))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), format_args!("{v}"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), format_args!("{v}"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), format_args!("{v}"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), format_args!("{v}"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), format_args!("string {v:?}"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(None, format_args!("null"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.push(None, format_args!("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Flatten { out, shape, depth } = self;
        let mut len = 0;
        while let Some(()) = seq.next_element_seed(Flatten {
            out: &mut *out,
            shape: &mut *shape,
            depth: depth + 1,
        })? {
            len += 1;
        }
        shape.seq(depth, len);
        Ok(())
    }
}

/// A BYTES element serialized as a JSON string (invalid UTF-8 replaced by U+FFFD).
pub struct Utf8<'a>(pub &'a [u8]);

impl Serialize for Utf8<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(self.0))
    }
}

/// Serializes typed elements as nested JSON arrays following `shape` (a bare value for `[]`).
pub struct NestedData<'a> {
    pub shape: &'a [usize],
    pub data: &'a TensorData,
}

impl Serialize for NestedData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::with_tensor_data!(self.data, v => nested(s, self.shape, v), b => {
            let strings: Vec<Utf8<'_>> = b.iter().map(|e| Utf8(e)).collect();
            nested(s, self.shape, &strings)
        })
    }
}

fn nested<S: Serializer, T: Serialize>(
    s: S,
    shape: &[usize],
    data: &[T],
) -> Result<S::Ok, S::Error> {
    struct Chunk<'a, T>(&'a [usize], &'a [T]);
    impl<T: Serialize> Serialize for Chunk<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            nested(s, self.0, self.1)
        }
    }
    match shape.split_first() {
        None => match data.first() {
            Some(v) => v.serialize(s),
            None => s.serialize_unit(),
        },
        Some((&n, [])) => {
            let mut seq = s.serialize_seq(Some(n))?;
            for v in data.iter().take(n) {
                seq.serialize_element(v)?;
            }
            seq.end()
        }
        Some((&n, rest)) => {
            let step = super::element_count(rest).unwrap_or(0);
            let mut seq = s.serialize_seq(Some(n))?;
            for i in 0..n {
                let chunk = data.get(i * step..(i + 1) * step).unwrap_or(&[]);
                seq.serialize_element(&Chunk(rest, chunk))?;
            }
            seq.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_decode_alike() {
        let flat = decode_json(DataType::F32, "[1, 2.5, -3, 4]").unwrap();
        let nested = decode_json(DataType::F32, "[[1, 2.5], [-3, 4]]").unwrap();
        assert_eq!(flat.data, nested.data);
        assert_eq!(flat.nested_shape, Some(vec![4]));
        assert_eq!(nested.nested_shape, Some(vec![2, 2]));
        assert_eq!(nested.data, TensorData::F32(vec![1.0, 2.5, -3.0, 4.0]));
    }

    #[test]
    fn ragged_nesting_has_no_shape() {
        let d = decode_json(DataType::I32, "[[1, 2], [3]]").unwrap();
        assert_eq!(d.nested_shape, None);
        assert_eq!(d.data, TensorData::I32(vec![1, 2, 3]));
        assert_eq!(
            decode_json(DataType::I32, "[[1], 2]").unwrap().nested_shape,
            None
        );
        assert_eq!(
            decode_json(DataType::I32, "[[], [1]]")
                .unwrap()
                .nested_shape,
            None
        );
        assert_eq!(
            decode_json(DataType::I32, "[[], []]").unwrap().nested_shape,
            Some(vec![2, 0])
        );
        assert_eq!(
            decode_json(DataType::I32, "7").unwrap().nested_shape,
            Some(vec![])
        );
    }

    #[test]
    fn integer_ranges_are_enforced() {
        assert_eq!(
            decode_json(DataType::U64, "[18446744073709551615]")
                .unwrap()
                .data,
            TensorData::U64(vec![u64::MAX])
        );
        assert_eq!(
            decode_json(DataType::I64, "[-9223372036854775808]")
                .unwrap()
                .data,
            TensorData::I64(vec![i64::MIN])
        );
        let err = decode_json(DataType::U8, "[1, 256]").unwrap_err();
        assert_eq!(
            err,
            "element 1: expected an integer in the UINT8 range, found 256"
        );
        let err = decode_json(DataType::I8, "[-129]").unwrap_err();
        assert!(err.contains("found -129"), "{err}");
        let err = decode_json(DataType::I32, "[1.5]").unwrap_err();
        assert!(err.contains("found 1.5"), "{err}");
    }

    #[test]
    fn non_numeric_values_are_rejected_precisely() {
        let err = decode_json(DataType::F32, "[[1, 2], [3, \"x\"]]").unwrap_err();
        assert_eq!(
            err,
            "element 3: expected an FP32 number, found string \"x\""
        );
        let err = decode_json(DataType::F64, "[null]").unwrap_err();
        assert!(err.contains("found null"), "{err}");
        let err = decode_json(DataType::Bool, "[true, 1]").unwrap_err();
        assert_eq!(err, "element 1: expected a boolean (true/false), found 1");
        assert!(decode_json(DataType::F32, "[{\"a\": 1}]").is_err());
    }

    #[test]
    fn bytes_are_strings() {
        let d = decode_json(DataType::Bytes, r#"[["ab", ""], ["ü", "x"]]"#).unwrap();
        assert_eq!(d.nested_shape, Some(vec![2, 2]));
        assert_eq!(
            d.data,
            TensorData::Bytes(vec![
                b"ab".to_vec(),
                vec![],
                "ü".as_bytes().to_vec(),
                b"x".to_vec()
            ])
        );
        assert!(decode_json(DataType::Bytes, "[1]")
            .unwrap_err()
            .contains("expected a string"));
        let s = serde_json::to_string(&NestedData {
            shape: &[1, 2],
            data: &TensorData::Bytes(vec![b"a".to_vec(), vec![0xff]]),
        })
        .unwrap();
        assert_eq!(s, "[[\"a\",\"\u{fffd}\"]]");
    }

    #[test]
    fn nested_encoding_follows_shape() {
        let data = TensorData::I64(vec![1, 2, 3, 4, 5, 6]);
        let s = serde_json::to_string(&NestedData {
            shape: &[2, 3],
            data: &data,
        })
        .unwrap();
        assert_eq!(s, "[[1,2,3],[4,5,6]]");
        let s = serde_json::to_string(&NestedData {
            shape: &[],
            data: &TensorData::Bool(vec![true]),
        })
        .unwrap();
        assert_eq!(s, "true");
        let s = serde_json::to_string(&NestedData {
            shape: &[2, 0],
            data: &TensorData::F32(vec![]),
        })
        .unwrap();
        assert_eq!(s, "[[],[]]");
    }

    #[test]
    fn data_of_the_expected_count_is_allocated_once_and_any_count_still_decodes() {
        let json = format!("[{}]", vec!["0.5"; 1000].join(","));
        let capacity = |d: &Decoded| match &d.data {
            TensorData::F32(v) => (v.len(), v.capacity()),
            other => panic!("F32, not {other:?}"),
        };
        let exact = decode_json_expecting(DataType::F32, &json, 1000).unwrap();
        assert_eq!(capacity(&exact), (1000, 1000));
        // A shape claiming more than the text holds allocates no more bytes than the text.
        let padded = format!("[1{}]", " ".repeat(4000));
        let claimed = decode_json_expecting(DataType::F32, &padded, usize::MAX).unwrap();
        assert_eq!(capacity(&claimed).0, 1);
        assert!(
            capacity(&claimed).1 * 4 <= padded.len(),
            "{:?}",
            capacity(&claimed)
        );
        let strings =
            decode_json_expecting(DataType::Bytes, &padded.replace('1', "\"a\""), 1 << 40);
        match strings.unwrap().data {
            TensorData::Bytes(v) => {
                assert!(v.capacity() * std::mem::size_of::<Vec<u8>>() <= padded.len() + 2)
            }
            other => panic!("BYTES, not {other:?}"),
        }
        let fewer = decode_json_expecting(DataType::F32, &json, 10).unwrap();
        assert_eq!(capacity(&fewer).0, 1000);
        assert_eq!(fewer, decode_json(DataType::F32, &json).unwrap());
    }
}
