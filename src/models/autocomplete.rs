//! Triton's auto-complete of batching: a model whose `config.toml` leaves `max_batch_size`
//! unset, and whose every input and output leads with a dynamic dimension, is served with
//! `max_batch_size` = the server's default (`--default-max-batch-size`) and the dynamic
//! batcher (Triton's `dynamic_batching {}`).
//!
//! Only what is missing is filled in: an explicit `max_batch_size` (0 included) is kept, and
//! so is its choice of `[dynamic_batching]` or none.

use crate::engine::{Dim, TensorSpec};
use crate::registry::config::{DynamicBatching, ModelConfig};

/// The default `--default-max-batch-size`, Triton's default for auto-completed models.
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 4;

/// The largest `--default-max-batch-size` accepted.
pub const MAX_DEFAULT_MAX_BATCH_SIZE: u32 = 65_536;

/// Completes `config` of model `model` (named in the log) against the model's effective
/// tensor specs: when `max_batch_size` is unset it becomes `default_max_batch_size` plus
/// dynamic batching with no queue delay if every input and output has a dynamic first
/// dimension, else 0 (no batching; the log says which tensor prevents it). A
/// `default_max_batch_size` of 0 (auto-complete off) and an explicit `max_batch_size` leave
/// the batching settings as `config.toml` wrote them, except that unset becomes 0. Afterwards
/// `config.max_batch_size` is always `Some`.
pub fn complete(
    config: &mut ModelConfig,
    model: &str,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    default_max_batch_size: u32,
) {
    if config.max_batch_size.is_some() {
        return;
    }
    if default_max_batch_size == 0 {
        config.max_batch_size = Some(0);
        return;
    }
    let unbatched = inputs
        .iter()
        .map(|s| ("input", s))
        .chain(outputs.iter().map(|s| ("output", s)))
        .find(|(_, s)| s.shape.first() != Some(&Dim::Dynamic));
    if let Some((kind, spec)) = unbatched {
        let why = if spec.shape.is_empty() {
            "is a scalar".to_string()
        } else {
            format!(
                "has shape {} (its first dimension is fixed)",
                spec.shape_string()
            )
        };
        tracing::info!(
            "model '{model}' is not auto-batched: {kind} '{}' {why}; set max_batch_size in its config.toml to choose",
            spec.name
        );
        config.max_batch_size = Some(0);
        return;
    }
    config.max_batch_size = Some(default_max_batch_size);
    if config.dynamic_batching.is_none() {
        config.dynamic_batching = Some(DynamicBatching {
            // Triton's `dynamic_batching {}`: batch what is queued, wait for nothing more.
            max_queue_delay_us: 0,
            ..DynamicBatching::default()
        });
    }
    // Debug, not info: one-shot commands (predict, model show) keep stderr to their errors.
    tracing::debug!(
        "model '{model}' auto-completed: max_batch_size {default_max_batch_size}, dynamic batching"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn spec(name: &str, shape: &[Option<usize>]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            shape: shape
                .iter()
                .map(|d| d.map_or(Dim::Dynamic, Dim::Fixed))
                .collect(),
        }
    }

    fn completed(
        config: ModelConfig,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        default: u32,
    ) -> ModelConfig {
        let mut config = config;
        complete(&mut config, "m", inputs, outputs, default);
        config
    }

    fn batchable() -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        (
            vec![spec("x", &[None, Some(64)])],
            vec![spec("y", &[None, Some(10)]), spec("label", &[None])],
        )
    }

    #[test]
    fn bare_batchable_model_gets_the_default_and_the_batcher() {
        let (inputs, outputs) = batchable();
        let c = completed(ModelConfig::default(), &inputs, &outputs, 4);
        assert_eq!(c.max_batch_size, Some(4));
        let b = c.dynamic_batching.expect("dynamic batching is added");
        assert_eq!(b.max_queue_delay_us, 0);
        assert!(b.preferred_batch_size.is_empty());
        assert_eq!(b.max_queue_size, 0);
        let c = completed(ModelConfig::default(), &inputs, &outputs, 64);
        assert_eq!(c.max_batch_size, Some(64));
    }

    #[test]
    fn explicit_settings_are_kept() {
        let (inputs, outputs) = batchable();
        for explicit in [0, 2, 16] {
            let config = ModelConfig {
                max_batch_size: Some(explicit),
                ..ModelConfig::default()
            };
            let c = completed(config, &inputs, &outputs, 4);
            assert_eq!(c.max_batch_size, Some(explicit));
            assert_eq!(c.dynamic_batching, None, "max_batch_size {explicit}");
        }
        let config = ModelConfig {
            max_batch_size: Some(8),
            dynamic_batching: Some(DynamicBatching::default()),
            ..ModelConfig::default()
        };
        assert_eq!(completed(config.clone(), &inputs, &outputs, 4), config);
    }

    #[test]
    fn default_zero_turns_auto_complete_off() {
        let (inputs, outputs) = batchable();
        let c = completed(ModelConfig::default(), &inputs, &outputs, 0);
        assert_eq!(c.max_batch_size, Some(0));
        assert_eq!(c.dynamic_batching, None);
    }

    #[test]
    fn a_fixed_or_missing_first_dimension_prevents_it() {
        let (inputs, outputs) = batchable();
        let fixed_output = vec![outputs[0].clone(), spec("label", &[Some(1)])];
        let fixed_input = vec![spec("x", &[Some(1), Some(64)])];
        let scalar_input = vec![inputs[0].clone(), spec("k", &[])];
        let scalar_output = vec![outputs[0].clone(), spec("n", &[])];
        for (ins, outs) in [
            (&inputs, &fixed_output),
            (&fixed_input, &outputs),
            (&scalar_input, &outputs),
            (&inputs, &scalar_output),
        ] {
            let c = completed(ModelConfig::default(), ins, outs, 4);
            assert_eq!(c.max_batch_size, Some(0), "{ins:?} {outs:?}");
            assert_eq!(c.dynamic_batching, None);
        }
    }
}
