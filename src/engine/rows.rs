//! Running a batch of independent rows as consecutive runs of fewer rows
//! ([`super::Engine::run_rows`]).

use super::{Dim, EngineError, TensorSpec};
use crate::tensor::Tensor;

/// Whether every one of `outputs` has a dynamic first dimension, the batch dimension that
/// joins the parts' outputs.
pub(super) fn all_batched(outputs: &[TensorSpec]) -> bool {
    outputs
        .iter()
        .all(|s| s.shape.first() == Some(&Dim::Dynamic))
}

/// Runs `inputs`, whose dimension 0 holds `rows` rows, through `run` in consecutive parts of
/// at most `most` rows, and joins each output's parts along dimension 0. Every output of a
/// part must hold that part's rows.
pub(super) fn run_in_parts(
    run: impl Fn(Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>,
    inputs: Vec<Tensor>,
    rows: usize,
    most: usize,
) -> Result<Vec<Tensor>, EngineError> {
    let most = most.max(1);
    let sizes: Vec<usize> = (0..rows)
        .step_by(most)
        .map(|start| most.min(rows - start))
        .collect();
    let fail =
        |e: crate::tensor::BatchError| EngineError::Run(format!("running rows in parts: {e}"));
    // parts[p][i]: input i of part p.
    let mut parts: Vec<Vec<Tensor>> = sizes
        .iter()
        .map(|_| Vec::with_capacity(inputs.len()))
        .collect();
    for input in inputs {
        for (part, piece) in parts.iter_mut().zip(input.split0(&sizes).map_err(fail)?) {
            part.push(piece);
        }
    }
    // outputs[i][p]: output i of part p.
    let mut outputs: Vec<Vec<Tensor>> = Vec::new();
    for (part, &size) in parts.into_iter().zip(&sizes) {
        for (i, output) in run(part)?.into_iter().enumerate() {
            if output.shape().first() != Some(&size) {
                return Err(EngineError::Run(format!(
                    "running rows in parts: output {i} of a part of {size} rows has shape {:?}",
                    output.shape()
                )));
            }
            if outputs.len() <= i {
                outputs.push(Vec::with_capacity(sizes.len()));
            }
            outputs[i].push(output);
        }
    }
    outputs
        .into_iter()
        .map(|parts| Tensor::concat0(parts).map_err(fail))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorData};

    fn spec(name: &str, first: Dim) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            shape: vec![first, Dim::Fixed(2)],
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        match t.data() {
            TensorData::F32(v) => v.clone(),
            other => panic!("F32 expected, got {other:?}"),
        }
    }

    /// Doubles its input and sums each row: two outputs, both per row.
    fn model(inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let x = values(&inputs[0]);
        let rows = inputs[0].shape()[0];
        let doubled = x.iter().map(|v| v * 2.0).collect();
        let sums = x.chunks(2).map(|r| r.iter().sum()).collect();
        Ok(vec![
            Tensor::new(vec![rows, 2], TensorData::F32(doubled)).unwrap(),
            Tensor::new(vec![rows], TensorData::F32(sums)).unwrap(),
        ])
    }

    #[test]
    fn parts_run_in_order_and_join_as_one_run() {
        let input = Tensor::new(
            vec![5, 2],
            TensorData::F32((0..10).map(|i| i as f32).collect()),
        )
        .unwrap();
        let sizes = std::sync::Mutex::new(Vec::new());
        let run = |part: Vec<Tensor>| {
            sizes.lock().unwrap().push(part[0].shape()[0]);
            model(part)
        };
        let joined = run_in_parts(run, vec![input.clone()], 5, 2).unwrap();
        assert_eq!(*sizes.lock().unwrap(), [2, 2, 1]);
        let whole = model(vec![input]).unwrap();
        assert_eq!(joined.len(), 2);
        for (j, w) in joined.iter().zip(&whole) {
            assert_eq!(j.shape(), w.shape());
            assert_eq!(values(j), values(w));
        }
    }

    #[test]
    fn an_output_without_the_parts_rows_is_an_error() {
        let input = Tensor::new(vec![4, 2], TensorData::F32(vec![0.0; 8])).unwrap();
        let total = |_: Vec<Tensor>| {
            Ok(vec![
                Tensor::new(vec![1], TensorData::F32(vec![1.0])).unwrap()
            ])
        };
        let err = run_in_parts(total, vec![input], 4, 2).unwrap_err();
        assert!(
            err.to_string().contains("output 0 of a part of 2 rows"),
            "{err}"
        );
        assert!(all_batched(&[spec("y", Dim::Dynamic)]));
        assert!(!all_batched(&[
            spec("y", Dim::Dynamic),
            spec("total", Dim::Fixed(1))
        ]));
    }
}
