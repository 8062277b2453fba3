//! Checks that a request fits a model before it reaches the engine.

use super::ModelError;
use crate::engine::{Dim, TensorSpec};
use crate::tensor::NamedTensor;
use crate::tensor::Tensor;

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Orders `given` as the model's inputs, checking names (unknown, duplicate, missing), element
/// types, ranks, fixed dimensions and, when `max_batch_size > 0`, the batch size.
pub fn inputs(
    specs: &[TensorSpec],
    max_batch_size: u32,
    given: Vec<NamedTensor>,
) -> Result<Vec<Tensor>, ModelError> {
    let bad = ModelError::InvalidInput;
    let mut slots: Vec<Option<Tensor>> = vec![None; specs.len()];
    for NamedTensor { name, tensor } in given {
        let ix = specs.iter().position(|s| s.name == name).ok_or_else(|| {
            bad(format!(
                "unknown input '{name}' (model inputs: {})",
                names(specs)
            ))
        })?;
        if slots[ix].is_some() {
            return Err(bad(format!("duplicate input '{name}'")));
        }
        check(&specs[ix], &tensor)?;
        slots[ix] = Some(tensor);
    }
    let mut batch: Option<(usize, &str)> = None;
    let mut ordered = Vec::with_capacity(specs.len());
    for (spec, slot) in specs.iter().zip(slots) {
        let tensor = slot.ok_or_else(|| bad(format!("missing required input '{}'", spec.name)))?;
        if max_batch_size > 0 {
            let n = tensor.shape().first().copied().unwrap_or(1);
            if n > max_batch_size as usize {
                return Err(bad(format!(
                    "input '{}': batch size {n} exceeds the model's max_batch_size {max_batch_size}",
                    spec.name
                )));
            }
            match batch {
                Some((m, other)) if m != n => {
                    return Err(bad(format!(
                        "inputs '{other}' and '{}' have different batch sizes ({m} and {n})",
                        spec.name
                    )))
                }
                _ => batch = Some((n, &spec.name)),
            }
        }
        ordered.push(tensor);
    }
    Ok(ordered)
}

fn check(spec: &TensorSpec, t: &Tensor) -> Result<(), ModelError> {
    let bad = ModelError::InvalidInput;
    if t.dtype() != spec.dtype {
        return Err(bad(format!(
            "input '{}': datatype {} does not match the model's {}",
            spec.name,
            t.dtype(),
            spec.dtype
        )));
    }
    let fits = t.shape().len() == spec.shape.len()
        && t.shape().iter().zip(&spec.shape).all(|(&n, d)| match d {
            Dim::Fixed(m) => n == *m,
            Dim::Dynamic => true,
        });
    if !fits {
        return Err(bad(format!(
            "input '{}': shape {:?} does not match the model's {}",
            spec.name,
            t.shape(),
            spec.shape_string()
        )));
    }
    Ok(())
}

/// Indices of the requested outputs in model order; all outputs when `requested` is `None`.
pub fn outputs(
    specs: &[TensorSpec],
    requested: Option<&[String]>,
) -> Result<Vec<usize>, ModelError> {
    let Some(requested) = requested else {
        return Ok((0..specs.len()).collect());
    };
    let mut out = Vec::with_capacity(requested.len());
    for name in requested {
        let ix = specs.iter().position(|s| &s.name == name).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "unknown output '{name}' (model outputs: {})",
                names(specs)
            ))
        })?;
        if out.contains(&ix) {
            return Err(ModelError::InvalidInput(format!(
                "output '{name}' requested twice"
            )));
        }
        out.push(ix);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorData};

    fn spec(name: &str, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            shape,
        }
    }

    fn input(name: &str, shape: Vec<usize>) -> NamedTensor {
        let n = shape.iter().product();
        NamedTensor {
            name: name.into(),
            tensor: Tensor::new(shape, TensorData::F32(vec![0.0; n])).unwrap(),
        }
    }

    fn err(r: Result<Vec<Tensor>, ModelError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn orders_and_checks_inputs() {
        let specs = [
            spec("a", vec![Dim::Dynamic, Dim::Fixed(2)]),
            spec("b", vec![Dim::Fixed(1)]),
        ];
        let ok = inputs(&specs, 0, vec![input("b", vec![1]), input("a", vec![3, 2])]).unwrap();
        assert_eq!(ok[0].shape(), &[3, 2]);
        assert!(err(inputs(&specs, 0, vec![input("a", vec![3, 2])]))
            .contains("missing required input 'b'"));
        assert!(err(inputs(&specs, 0, vec![input("c", vec![1])])).contains("unknown input 'c'"));
        assert!(err(inputs(
            &specs,
            0,
            vec![input("b", vec![1]), input("b", vec![1])]
        ))
        .contains("duplicate input 'b'"));
        assert!(err(inputs(
            &specs,
            0,
            vec![input("a", vec![3, 3]), input("b", vec![1])]
        ))
        .contains("[-1, 2]"));
        assert!(err(inputs(
            &specs,
            0,
            vec![input("a", vec![6]), input("b", vec![1])]
        ))
        .contains("shape [6]"));
        let int = NamedTensor {
            name: "b".into(),
            tensor: Tensor::new(vec![1], TensorData::I64(vec![1])).unwrap(),
        };
        assert!(err(inputs(&specs, 0, vec![input("a", vec![1, 2]), int]))
            .contains("datatype INT64 does not match the model's FP32"));
    }

    #[test]
    fn enforces_max_batch_size() {
        let specs = [spec("a", vec![Dim::Dynamic, Dim::Fixed(2)])];
        assert!(inputs(&specs, 4, vec![input("a", vec![4, 2])]).is_ok());
        assert!(err(inputs(&specs, 4, vec![input("a", vec![5, 2])]))
            .contains("exceeds the model's max_batch_size 4"));
    }

    #[test]
    fn selects_outputs() {
        let specs = [spec("x", vec![]), spec("y", vec![])];
        assert_eq!(outputs(&specs, None).unwrap(), vec![0, 1]);
        assert_eq!(outputs(&specs, Some(&["y".to_string()])).unwrap(), vec![1]);
        assert!(outputs(&specs, Some(&["z".to_string()])).is_err());
        assert!(outputs(&specs, Some(&["y".to_string(), "y".to_string()])).is_err());
    }
}
