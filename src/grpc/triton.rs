//! Triton's extensions as protobuf messages: the model configuration (`model_config.proto`)
//! and statistics, built from the same core facts as the HTTP routes' JSON.

use super::proto::inference as pb;
use crate::engine::Dim;
use crate::engine::TensorSpec;
use crate::models::stats::{Duration2, StatsSnapshot};
use crate::models::LoadedVersion;
use crate::registry::config::VersionPolicy;
use crate::tensor::DataType;

/// The platform name Triton and KServe use for ONNX models (model metadata).
pub const PLATFORM: &str = "onnx_onnxv1";

/// Triton's `DataType` of a datatype.
fn triton_type(dt: DataType) -> pb::DataType {
    match dt {
        DataType::Bool => pb::DataType::TypeBool,
        DataType::U8 => pb::DataType::TypeUint8,
        DataType::U16 => pb::DataType::TypeUint16,
        DataType::U32 => pb::DataType::TypeUint32,
        DataType::U64 => pb::DataType::TypeUint64,
        DataType::I8 => pb::DataType::TypeInt8,
        DataType::I16 => pb::DataType::TypeInt16,
        DataType::I32 => pb::DataType::TypeInt32,
        DataType::I64 => pb::DataType::TypeInt64,
        DataType::F32 => pb::DataType::TypeFp32,
        DataType::F64 => pb::DataType::TypeFp64,
        DataType::Bytes => pb::DataType::TypeString,
    }
}

/// A tensor's dims in config form: with a batching model the batch dimension is implicit
/// and left out.
fn config_dims(spec: &TensorSpec, batched: bool) -> Vec<i64> {
    spec.shape
        .iter()
        .skip(usize::from(batched))
        .map(|d| d.as_i64())
        .collect()
}

/// The model configuration, as `GET /v2/models/{m}/config` answers it in JSON.
pub fn model_config(loaded: &LoadedVersion) -> pb::ModelConfig {
    let config = loaded.config();
    // Only a model whose every tensor leads with a dynamic dimension can batch.
    let max_batch_size = config.max_batch_size.unwrap_or(0);
    let batched = max_batch_size > 0
        && loaded
            .inputs()
            .iter()
            .chain(loaded.outputs())
            .all(|s| s.shape.first() == Some(&Dim::Dynamic));
    use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let policy = match &config.version_policy {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest {
            num_versions: u32::try_from(*n).unwrap_or(u32::MAX),
        }),
        VersionPolicy::All => PolicyChoice::All(All {}),
        VersionPolicy::Specific(v) => PolicyChoice::Specific(Specific {
            versions: v
                .iter()
                .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
        }),
    };
    let clamp = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    pb::ModelConfig {
        name: loaded.name().to_string(),
        platform: "onnxruntime_onnx".into(),
        backend: loaded.backend().name().to_string(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy),
        }),
        max_batch_size: if batched { clamp(max_batch_size) } else { 0 },
        input: loaded
            .inputs()
            .iter()
            .map(|s| pb::ModelInput {
                name: s.name.clone(),
                data_type: triton_type(s.dtype) as i32,
                dims: config_dims(s, batched),
                ..Default::default()
            })
            .collect(),
        output: loaded
            .outputs()
            .iter()
            .map(|s| pb::ModelOutput {
                name: s.name.clone(),
                data_type: triton_type(s.dtype) as i32,
                dims: config_dims(s, batched),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![pb::ModelInstanceGroup {
            name: format!("{}_0", loaded.name()),
            kind: pb::model_instance_group::Kind::Cpu as i32,
            count: clamp(config.instances.unwrap_or(1)),
            ..Default::default()
        }],
        scheduling_choice: config.dynamic_batching.as_ref().map(|b| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: b.preferred_batch_size.iter().map(|&n| clamp(n)).collect(),
                max_queue_delay_microseconds: b.max_queue_delay_us,
                default_queue_policy: Some(pb::ModelQueuePolicy {
                    max_queue_size: b.max_queue_size,
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

fn duration(d: Duration2) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

/// One version's statistics in `ModelStatistics` form.
pub fn model_statistics(name: &str, version: u64, s: StatsSnapshot) -> pb::ModelStatistics {
    let i = s.inference_stats;
    pb::ModelStatistics {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration(i.success),
            fail: duration(i.fail),
            queue: duration(i.queue),
            compute_input: duration(i.compute_input),
            compute_infer: duration(i.compute_infer),
            compute_output: duration(i.compute_output),
            cache_hit: duration(Duration2 { count: 0, ns: 0 }),
            cache_miss: duration(Duration2 { count: 0, ns: 0 }),
        }),
        ..Default::default()
    }
}

/// A tensor's metadata (`-1` marks a dynamic dimension).
pub fn tensor_metadata(s: &TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: s.name.clone(),
        datatype: s.dtype.name().to_string(),
        shape: s.dims(),
    }
}
