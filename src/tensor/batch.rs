//! Concatenating tensors along dimension 0 and splitting them back: how requests are merged
//! into one batch and the batch's outputs returned to each request.

use super::{Tensor, TensorData};

/// Why tensors cannot be concatenated or split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

impl Tensor {
    /// Concatenates `parts` along dimension 0. All must have the same element type, rank ≥ 1
    /// and trailing dimensions.
    pub fn concat0(parts: Vec<Tensor>) -> Result<Tensor, BatchError> {
        let first = parts
            .first()
            .ok_or_else(|| BatchError("nothing to concatenate".into()))?;
        let (dtype, tail) = match first.shape.split_first() {
            Some((_, tail)) => (first.dtype(), tail.to_vec()),
            None => return Err(BatchError("a scalar has no batch dimension".into())),
        };
        let mut rows = 0;
        for p in &parts {
            if p.dtype() != dtype || p.shape.get(1..) != Some(&tail[..]) {
                return Err(BatchError(format!(
                    "cannot batch {} {:?} with {dtype} [_, {tail:?}]",
                    p.dtype(),
                    p.shape
                )));
            }
            rows += p.shape[0];
        }
        let mut parts = parts.into_iter().map(|p| p.data);
        let mut data = parts.next().expect("parts is not empty (checked above)");
        for next in parts {
            macro_rules! append {
                ($variant:ident, $v:ident) => {
                    match next {
                        TensorData::$variant(mut other) => $v.append(&mut other),
                        _ => unreachable!("element types were checked above"),
                    }
                };
            }
            match &mut data {
                TensorData::Bool(v) => append!(Bool, v),
                TensorData::U8(v) => append!(U8, v),
                TensorData::U16(v) => append!(U16, v),
                TensorData::U32(v) => append!(U32, v),
                TensorData::U64(v) => append!(U64, v),
                TensorData::I8(v) => append!(I8, v),
                TensorData::I16(v) => append!(I16, v),
                TensorData::I32(v) => append!(I32, v),
                TensorData::I64(v) => append!(I64, v),
                TensorData::F32(v) => append!(F32, v),
                TensorData::F64(v) => append!(F64, v),
                TensorData::Bytes(v) => append!(Bytes, v),
            }
        }
        let mut shape = vec![rows];
        shape.extend(tail);
        Tensor::new(shape, data).map_err(|e| BatchError(e.to_string()))
    }

    /// Splits along dimension 0 into consecutive pieces of `rows[i]` rows each; the rows must
    /// add up to dimension 0.
    pub fn split0(self, rows: &[usize]) -> Result<Vec<Tensor>, BatchError> {
        let Some((&n, tail)) = self.shape.split_first() else {
            return Err(BatchError(
                "a scalar output cannot be split by request".into(),
            ));
        };
        if rows.iter().sum::<usize>() != n {
            return Err(BatchError(format!(
                "output has {n} rows but the requests hold {}",
                rows.iter().sum::<usize>()
            )));
        }
        let per_row: usize = tail.iter().product();
        let tail = tail.to_vec();
        let mut out = Vec::with_capacity(rows.len());
        let mut data = self.data;
        // Split from the back so each piece is one `split_off` with no shifting.
        for &r in rows.iter().rev() {
            let at = data.len() - r * per_row;
            let piece = crate::with_tensor_data!(&mut data, v => v.split_off(at).into(), b => TensorData::Bytes(b.split_off(at)));
            let mut shape = vec![r];
            shape.extend_from_slice(&tail);
            out.push(Tensor::new(shape, piece).map_err(|e| BatchError(e.to_string()))?);
        }
        out.reverse();
        Ok(out)
    }
}

macro_rules! from_vec {
    ($($variant:ident($t:ty)),*) => {
        $(impl From<Vec<$t>> for TensorData {
            fn from(v: Vec<$t>) -> Self {
                TensorData::$variant(v)
            }
        })*
    };
}
from_vec!(
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64)
);

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, v: Vec<i32>) -> Tensor {
        Tensor::new(shape, TensorData::I32(v)).unwrap()
    }

    #[test]
    fn concat_then_split_round_trips() {
        let a = t(vec![1, 2], vec![1, 2]);
        let b = t(vec![2, 2], vec![3, 4, 5, 6]);
        let c = Tensor::concat0(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(c.shape(), &[3, 2]);
        assert_eq!(c.data(), &TensorData::I32(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(c.split0(&[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn mismatches_are_errors() {
        let a = t(vec![1, 2], vec![1, 2]);
        assert!(Tensor::concat0(vec![a.clone(), t(vec![1, 3], vec![1, 2, 3])]).is_err());
        let f = Tensor::new(vec![1, 2], TensorData::F32(vec![0.0; 2])).unwrap();
        assert!(Tensor::concat0(vec![a.clone(), f]).is_err());
        assert!(Tensor::concat0(vec![]).is_err());
        assert!(a.split0(&[2]).is_err());
        let bytes = Tensor::new(
            vec![2],
            TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()]),
        )
        .unwrap();
        assert_eq!(bytes.split0(&[1, 1]).unwrap().len(), 2);
    }
}
