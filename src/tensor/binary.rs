//! Raw tensor bytes as the v2 binary tensor data extension carries them: fixed-size elements
//! little-endian and packed; BOOL one byte each; BYTES elements each prefixed by a 4-byte
//! little-endian length.

use super::{DataType, TensorData};

/// Decodes `count` elements of `dtype` from exactly `bytes`.
pub fn decode_binary(dtype: DataType, bytes: &[u8], count: usize) -> Result<TensorData, String> {
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            check_len(bytes.len(), count, N, dtype)?;
            TensorData::$variant(
                bytes
                    .chunks_exact(N)
                    .map(|c| {
                        <$t>::from_le_bytes(c.try_into().expect("chunks_exact yields N bytes"))
                    })
                    .collect(),
            )
        }};
    }
    Ok(match dtype {
        DataType::Bool => {
            check_len(bytes.len(), count, 1, dtype)?;
            TensorData::Bool(bytes.iter().map(|&b| b != 0).collect())
        }
        DataType::U8 => {
            check_len(bytes.len(), count, 1, dtype)?;
            TensorData::U8(bytes.to_vec())
        }
        DataType::I8 => fixed!(I8, i8),
        DataType::U16 => fixed!(U16, u16),
        DataType::I16 => fixed!(I16, i16),
        DataType::U32 => fixed!(U32, u32),
        DataType::I32 => fixed!(I32, i32),
        DataType::F32 => fixed!(F32, f32),
        DataType::U64 => fixed!(U64, u64),
        DataType::I64 => fixed!(I64, i64),
        DataType::F64 => fixed!(F64, f64),
        DataType::Bytes => TensorData::Bytes(decode_bytes(bytes, count)?),
    })
}

fn check_len(len: usize, count: usize, size: usize, dtype: DataType) -> Result<(), String> {
    match count.checked_mul(size) {
        Some(n) if n == len => Ok(()),
        _ => Err(format!(
            "binary_data_size {len} disagrees with the shape: {count} {dtype} elements of {size} bytes need {}",
            count.saturating_mul(size)
        )),
    }
}

fn decode_bytes(mut bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let i = out.len();
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(|| {
            format!(
                "BYTES element {i}: {} bytes left, too few for a 4-byte length",
                bytes.len()
            )
        })?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!(
                "BYTES element {i}: length {len} overruns the {} bytes left",
                rest.len()
            ));
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    if out.len() != count {
        return Err(format!(
            "binary data holds {} BYTES elements but the shape needs {count}",
            out.len()
        ));
    }
    Ok(out)
}

/// Appends the binary form of `data` to `out`; returns the number of bytes written.
pub fn encode_binary(data: &TensorData, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    macro_rules! fixed {
        ($v:expr) => {{
            out.reserve(std::mem::size_of_val($v.as_slice()));
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }};
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => fixed!(v),
        TensorData::U16(v) => fixed!(v),
        TensorData::I16(v) => fixed!(v),
        TensorData::U32(v) => fixed!(v),
        TensorData::I32(v) => fixed!(v),
        TensorData::F32(v) => fixed!(v),
        TensorData::U64(v) => fixed!(v),
        TensorData::I64(v) => fixed!(v),
        TensorData::F64(v) => fixed!(v),
        TensorData::Bytes(v) => {
            for e in v {
                let len = u32::try_from(e.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&e[..len as usize]);
            }
        }
    }
    out.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let samples = [
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![0, 255]),
            TensorData::I8(vec![-128, 127]),
            TensorData::U16(vec![1, u16::MAX]),
            TensorData::I16(vec![i16::MIN, 3]),
            TensorData::U32(vec![7, u32::MAX]),
            TensorData::I32(vec![i32::MIN, -1]),
            TensorData::F32(vec![1.5, -0.25]),
            TensorData::U64(vec![u64::MAX, 0]),
            TensorData::I64(vec![i64::MIN, 42]),
            TensorData::F64(vec![1e-300, -2.0]),
            TensorData::Bytes(vec![b"hello".to_vec(), vec![]]),
        ];
        for data in samples {
            let mut buf = Vec::new();
            let n = encode_binary(&data, &mut buf);
            assert_eq!(n, buf.len());
            assert_eq!(decode_binary(data.dtype(), &buf, 2).unwrap(), data);
        }
    }

    #[test]
    fn f32_is_little_endian() {
        let mut buf = Vec::new();
        encode_binary(&TensorData::F32(vec![1.0]), &mut buf);
        assert_eq!(buf, [0, 0, 0x80, 0x3f]);
    }

    #[test]
    fn size_and_length_errors() {
        let e = decode_binary(DataType::F32, &[0; 7], 2).unwrap_err();
        assert!(
            e.contains("binary_data_size 7") && e.contains("need 8"),
            "{e}"
        );
        let e = decode_binary(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1).unwrap_err();
        assert!(e.contains("overruns"), "{e}");
        let e = decode_binary(DataType::Bytes, &[1, 0], 1).unwrap_err();
        assert!(e.contains("too few"), "{e}");
        let e = decode_binary(DataType::Bytes, &[1, 0, 0, 0, b'a'], 2).unwrap_err();
        assert!(
            e.contains("holds 1 BYTES elements but the shape needs 2"),
            "{e}"
        );
        assert!(decode_binary(DataType::I64, &[0; 8], usize::MAX).is_err());
    }
}
