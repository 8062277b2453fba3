//! `config.toml`: a model's optional settings, parsed strictly.
//!
//! Unknown keys and bad values are errors naming the file, the key and the reason; nothing
//! is silently ignored.

use super::RegistryError;
use crate::engine::opencl::{device::DeviceKind, CpuBackend, OpenclConfig, PlacementMode};
use crate::engine::{Backend, GraphOptimizationLevel, OrtConfig, TensorOverride};
use crate::tensor::DataType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Most engine instances a model may ask for: each holds its own copy of the engine's state.
pub const MAX_INSTANCES: u32 = 256;
/// Longest `max_queue_delay_us` accepted: 10 s (Triton's are usually tens to thousands of µs).
pub const MAX_QUEUE_DELAY_US: u64 = 10_000_000;
/// Most ONNX Runtime threads per pool.
pub const MAX_THREADS: u32 = 1024;
/// `max_queue_delay_us` when `[dynamic_batching]` leaves it out: 0, as Triton's
/// `dynamic_batching {}` — a batch takes what is queued and waits for nothing more, so
/// batching never holds a request back unless the config asks for a delay.
pub const DEFAULT_QUEUE_DELAY_US: u64 = 0;
/// Upper bound of `dynamic_batching.priority_levels`.
pub const MAX_PRIORITY_LEVELS: u32 = 1000;
/// Upper bound of a queue policy's `default_timeout_us`: an hour.
pub const MAX_QUEUE_TIMEOUT_US: u64 = 3_600_000_000;

/// A model's settings; every field has a default when `config.toml` is absent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelConfig {
    /// The engine; `None` means the server's default (`--backend`, else tract).
    pub backend: Option<Backend>,
    /// When > 0, dimension 0 of every input is a batch dimension of at most this size; 0
    /// turns batching off. `None` when `config.toml` does not set it: loading a version then
    /// auto-completes it (see `models::autocomplete`), and the loaded version's config holds
    /// the result.
    pub max_batch_size: Option<u32>,
    pub version_policy: VersionPolicy,
    /// Type/shape overrides for model inputs.
    pub inputs: Vec<TensorOverride>,
    /// Type/shape declarations for model outputs, checked against the model at load.
    pub outputs: Vec<TensorOverride>,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The score hook: a `.rhai` file name inside the model folder (see [`crate::hook`]).
    pub hook: Option<String>,
    /// Engine instances run in parallel (at least 1); unset: the engine's default for the
    /// model ([`crate::engine::default_instances`]), which a loaded version's config reports.
    pub instances: Option<u32>,
    /// Server-side batching of concurrent requests (needs `max_batch_size > 0`).
    pub dynamic_batching: Option<DynamicBatching>,
    /// `[ort]`: ONNX Runtime session options (used when the model runs on ort).
    pub ort: OrtConfig,
    /// `[opencl]`: device selection, CPU fallback and its engine, prebuilt binary (backend
    /// opencl).
    pub opencl: OpenclConfig,
}

/// Triton's `dynamic_batching`: requests queue for at most `max_queue_delay`, are merged
/// along dimension 0 up to a preferred size (or `max_batch_size`), run once, and split back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicBatching {
    pub max_queue_delay_us: u64,
    /// Batch sizes worth waiting for, ascending; empty means `max_batch_size`.
    pub preferred_batch_size: Vec<u32>,
    /// Requests allowed to wait; more are refused at once (503). 0 means unbounded.
    pub max_queue_size: u32,
    /// Priority levels (Triton's `priority_levels`): requests are taken level 1 first; 0
    /// means one level.
    pub priority_levels: u32,
    /// The level of requests that name none (0 when `priority_levels` is 0).
    pub default_priority_level: u32,
    /// `[dynamic_batching.default_queue_policy]`.
    pub queue_policy: QueuePolicy,
}

impl DynamicBatching {
    /// Whether the config shapes its queue: a bounded queue, priority levels or queue
    /// timeouts, which only the dynamic batcher's queue applies.
    pub fn shapes_queue(&self) -> bool {
        self.max_queue_size > 0
            || self.priority_levels > 0
            || self.queue_policy.default_timeout_us > 0
            || self.queue_policy.allow_timeout_override
    }
}

impl Default for DynamicBatching {
    /// What an empty `[dynamic_batching]` table sets (Triton's `dynamic_batching {}`): no
    /// queue delay, no preferred sizes, an unbounded queue, one priority level, no queue
    /// timeout.
    fn default() -> Self {
        DynamicBatching {
            max_queue_delay_us: DEFAULT_QUEUE_DELAY_US,
            preferred_batch_size: Vec::new(),
            max_queue_size: 0,
            priority_levels: 0,
            default_priority_level: 0,
            queue_policy: QueuePolicy::default(),
        }
    }
}

/// Triton's `ModelQueuePolicy`: how long a request may wait in the queue and what happens
/// after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    pub timeout_action: TimeoutAction,
    /// 0: no timeout.
    pub default_timeout_us: u64,
    /// Whether a request's `timeout` parameter may shorten `default_timeout_us`.
    pub allow_timeout_override: bool,
}

/// What happens to a request past its queue timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Refused (503) without running.
    #[default]
    Reject,
    /// Moved behind every request still in time.
    Delay,
}

/// Which versions of a model are served (Triton's version policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions.
    Latest(usize),
    All,
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those present, ascending.
    pub fn select(&self, present: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = match self {
            VersionPolicy::Latest(n) => {
                let mut sorted = present.to_vec();
                sorted.sort_unstable();
                sorted.into_iter().rev().take(*n).collect()
            }
            VersionPolicy::All => present.to_vec(),
            VersionPolicy::Specific(wanted) => present
                .iter()
                .copied()
                .filter(|p| wanted.contains(p))
                .collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: Option<String>,
    max_batch_size: Option<u32>,
    version_policy: Option<RawVersionPolicy>,
    #[serde(default)]
    input: Vec<RawTensor>,
    #[serde(default)]
    output: Vec<RawTensor>,
    description: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    hook: Option<String>,
    instances: Option<u32>,
    dynamic_batching: Option<RawDynamicBatching>,
    ort: Option<RawOrt>,
    opencl: Option<RawOpencl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDynamicBatching {
    max_queue_delay_us: Option<u64>,
    #[serde(default)]
    preferred_batch_size: Vec<u32>,
    max_queue_size: Option<u32>,
    priority_levels: Option<u32>,
    default_priority_level: Option<u32>,
    default_queue_policy: Option<RawQueuePolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueuePolicy {
    timeout_action: Option<String>,
    default_timeout_us: Option<u64>,
    allow_timeout_override: Option<bool>,
    max_queue_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersionPolicy {
    latest: Option<usize>,
    all: Option<bool>,
    specific: Option<Vec<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    name: String,
    datatype: Option<String>,
    dims: Option<Vec<i64>>,
}

impl ModelConfig {
    /// Reads `path`, or returns the defaults when it does not exist.
    pub fn load(path: &Path) -> Result<ModelConfig, RegistryError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ModelConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::default()),
            Err(e) => Err(RegistryError::io(path, e)),
        }
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ModelConfig, RegistryError> {
        let err = |key: &str, why: String| RegistryError::Config {
            file: path.to_path_buf(),
            key: key.to_string(),
            why,
        };
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
            // The parser's messages may span lines; errors here are one line.
            let message = inner
                .message()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let why = match line {
                Some(l) => format!("{message} (line {l})"),
                None => message,
            };
            err(if key == "." { "(top level)" } else { &key }, why)
        })?;

        let backend = raw
            .backend
            .map(|b| {
                Backend::from_name(&b).ok_or_else(|| {
                    err(
                        "backend",
                        format!(
                            "unknown backend '{b}' (available: {})",
                            Backend::available()
                        ),
                    )
                })
            })
            .transpose()?;

        let version_policy = match raw.version_policy {
            None => VersionPolicy::default(),
            Some(p) => match (p.latest, p.all, p.specific) {
                (Some(0), None, None) => {
                    return Err(err("version_policy.latest", "must be at least 1".into()))
                }
                (Some(n), None, None) => VersionPolicy::Latest(n),
                (None, Some(true), None) => VersionPolicy::All,
                (None, Some(false), None) => {
                    return Err(err(
                        "version_policy.all",
                        "only `all = true` is meaningful".into(),
                    ))
                }
                (None, None, Some(v)) if v.is_empty() || v.contains(&0) => {
                    return Err(err(
                        "version_policy.specific",
                        "must list one or more positive versions".into(),
                    ))
                }
                (None, None, Some(v)) => VersionPolicy::Specific(v),
                _ => {
                    return Err(err(
                        "version_policy",
                        "set exactly one of `latest`, `all` or `specific`".into(),
                    ))
                }
            },
        };

        let tensors =
            |section: &str, raw: Vec<RawTensor>| -> Result<Vec<TensorOverride>, RegistryError> {
                let mut seen = std::collections::HashSet::new();
                raw.into_iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let key = |k: &str| format!("{section}[{i}].{k}");
                        if !seen.insert(t.name.clone()) {
                            return Err(err(&key("name"), format!("'{}' is listed twice", t.name)));
                        }
                        let datatype = t
                            .datatype
                            .map(|d| {
                                DataType::from_name(&d).ok_or_else(|| {
                                    err(
                                        &key("datatype"),
                                        format!("unknown datatype '{d}' (e.g. FP32, INT64, BOOL)"),
                                    )
                                })
                            })
                            .transpose()?;
                        if let Some(dims) = &t.dims {
                            if dims.iter().any(|&d| d < -1) {
                                return Err(err(
                                    &key("dims"),
                                    "dimensions must be >= 0, or -1 for dynamic".into(),
                                ));
                            }
                        }
                        Ok(TensorOverride {
                            name: t.name,
                            datatype,
                            dims: t.dims,
                        })
                    })
                    .collect()
            };

        if let Some(h) = &raw.hook {
            validate_hook_name(h).map_err(|why| err("hook", why))?;
        }

        let max_batch_size = raw.max_batch_size.unwrap_or(0);
        match raw.instances {
            Some(0) => return Err(err("instances", "must be at least 1".into())),
            Some(n) if n > MAX_INSTANCES => {
                return Err(err(
                    "instances",
                    format!("{n} is over the limit of {MAX_INSTANCES}"),
                ))
            }
            _ => {}
        }
        let dynamic_batching = match raw.dynamic_batching {
            None => None,
            Some(_) if max_batch_size == 0 => {
                return Err(err(
                    "dynamic_batching",
                    "needs max_batch_size > 0 (the largest batch to form)".into(),
                ))
            }
            Some(d) => {
                if let Some(us) = d.max_queue_delay_us.filter(|&us| us > MAX_QUEUE_DELAY_US) {
                    return Err(err(
                        "dynamic_batching.max_queue_delay_us",
                        format!("{us} is over the limit of {MAX_QUEUE_DELAY_US} (10 s)"),
                    ));
                }
                let mut preferred = d.preferred_batch_size;
                preferred.sort_unstable();
                preferred.dedup();
                if let Some(&p) = preferred.iter().find(|&&p| p == 0 || p > max_batch_size) {
                    return Err(err(
                        "dynamic_batching.preferred_batch_size",
                        format!("{p} is not between 1 and max_batch_size {max_batch_size}"),
                    ));
                }
                let levels = d.priority_levels.unwrap_or(0);
                if levels > MAX_PRIORITY_LEVELS {
                    return Err(err(
                        "dynamic_batching.priority_levels",
                        format!("{levels} is over the limit of {MAX_PRIORITY_LEVELS}"),
                    ));
                }
                let default_level = match (levels, d.default_priority_level) {
                    (0, None | Some(0)) => 0,
                    (0, Some(_)) => {
                        return Err(err(
                            "dynamic_batching.default_priority_level",
                            "needs priority_levels".into(),
                        ))
                    }
                    (n, None) => n,
                    (n, Some(l)) if (1..=n).contains(&l) => l,
                    (n, Some(l)) => {
                        return Err(err(
                            "dynamic_batching.default_priority_level",
                            format!("{l} is not between 1 and priority_levels {n}"),
                        ))
                    }
                };
                let policy = d.default_queue_policy.unwrap_or(RawQueuePolicy {
                    timeout_action: None,
                    default_timeout_us: None,
                    allow_timeout_override: None,
                    max_queue_size: None,
                });
                let timeout_action = match policy.timeout_action.as_deref() {
                    None | Some("reject") => TimeoutAction::Reject,
                    Some("delay") => TimeoutAction::Delay,
                    Some(other) => {
                        return Err(err(
                            "dynamic_batching.default_queue_policy.timeout_action",
                            format!("{other:?} is not \"reject\" or \"delay\""),
                        ))
                    }
                };
                let timeout = policy.default_timeout_us.unwrap_or(0);
                if timeout > MAX_QUEUE_TIMEOUT_US {
                    return Err(err(
                        "dynamic_batching.default_queue_policy.default_timeout_us",
                        format!("{timeout} is over the limit of {MAX_QUEUE_TIMEOUT_US} (1 h)"),
                    ));
                }
                let max_queue_size = match (d.max_queue_size, policy.max_queue_size) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(err(
                            "dynamic_batching.default_queue_policy.max_queue_size",
                            format!("{b} differs from dynamic_batching.max_queue_size {a}"),
                        ))
                    }
                    (a, b) => a.or(b).unwrap_or(0),
                };
                Some(DynamicBatching {
                    max_queue_delay_us: d.max_queue_delay_us.unwrap_or(DEFAULT_QUEUE_DELAY_US),
                    preferred_batch_size: preferred,
                    max_queue_size,
                    priority_levels: levels,
                    default_priority_level: default_level,
                    queue_policy: QueuePolicy {
                        timeout_action,
                        default_timeout_us: timeout,
                        allow_timeout_override: policy.allow_timeout_override.unwrap_or(false),
                    },
                })
            }
        };
        Ok(ModelConfig {
            backend,
            max_batch_size: raw.max_batch_size,
            version_policy,
            inputs: tensors("input", raw.input)?,
            outputs: tensors("output", raw.output)?,
            description: raw.description,
            tags: raw.tags,
            hook: raw.hook,
            instances: raw.instances,
            dynamic_batching,
            ort: raw
                .ort
                .map(parse_ort)
                .transpose()
                .map_err(|(k, why)| err(&k, why))?
                .unwrap_or_default(),
            opencl: raw
                .opencl
                .map(|o| parse_opencl(o, path))
                .transpose()
                .map_err(|(k, why)| err(&k, why))?
                .unwrap_or_default(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpencl {
    device: Option<String>,
    platform: Option<String>,
    fallback: Option<bool>,
    binary: Option<String>,
    cpu_backend: Option<String>,
    fusion: Option<bool>,
    placement: Option<String>,
    precision: Option<String>,
}

/// Checks an `[opencl]` table; `binary` is relative to the folder of `config.toml`. The
/// error is `(key, reason)`.
fn parse_opencl(raw: RawOpencl, config: &Path) -> Result<OpenclConfig, (String, String)> {
    let device = raw
        .device
        .map(|d| {
            DeviceKind::from_name(&d).ok_or_else(|| {
                (
                    "opencl.device".to_string(),
                    format!("unknown device '{d}' (one of: accelerator, gpu, cpu, any)"),
                )
            })
        })
        .transpose()?;
    if raw.platform.as_deref() == Some("") {
        return Err((
            "opencl.platform".into(),
            "must not be empty (leave it out for any platform)".into(),
        ));
    }
    let binary = match raw.binary {
        Some(b) if b.is_empty() => return Err(("opencl.binary".into(), "must name a file".into())),
        Some(b) => Some(config.parent().unwrap_or(Path::new(".")).join(b)),
        None => None,
    };
    let cpu_backend = match raw.cpu_backend {
        None => CpuBackend::default(),
        Some(b) => CpuBackend::from_name(&b).ok_or_else(|| {
            (
                "opencl.cpu_backend".to_string(),
                format!("unknown CPU backend '{b}' (one of: tract, ort)"),
            )
        })?,
    };
    let placement = match raw.placement {
        None => PlacementMode::default(),
        Some(p) => PlacementMode::from_name(&p).ok_or_else(|| {
            (
                "opencl.placement".to_string(),
                format!("unknown placement '{p}' (one of: device, auto)"),
            )
        })?,
    };
    let fp16 = match raw.precision.as_deref() {
        None | Some("fp32") => false,
        Some("fp16") => true,
        Some(p) => {
            return Err((
                "opencl.precision".to_string(),
                format!("unknown precision '{p}' (one of: fp32, fp16)"),
            ))
        }
    };
    Ok(OpenclConfig {
        device,
        platform: raw.platform,
        fallback: raw.fallback.unwrap_or(true),
        binary,
        cpu_backend,
        fusion: raw.fusion.unwrap_or(true),
        placement,
        fp16,
        fp16_unchecked: false,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrt {
    intra_op_threads: Option<u32>,
    inter_op_threads: Option<u32>,
    graph_optimization_level: Option<String>,
    allow_spinning: Option<bool>,
}

/// Checks an `[ort]` table; the error is `(key, reason)`.
fn parse_ort(raw: RawOrt) -> Result<OrtConfig, (String, String)> {
    for (key, value) in [
        ("intra_op_threads", raw.intra_op_threads),
        ("inter_op_threads", raw.inter_op_threads),
    ] {
        match value {
            Some(0) => {
                return Err((
                    format!("ort.{key}"),
                    "must be at least 1 (leave it out for ONNX Runtime's default)".into(),
                ))
            }
            Some(n) if n > MAX_THREADS => {
                return Err((
                    format!("ort.{key}"),
                    format!("{n} is over the limit of {MAX_THREADS}"),
                ))
            }
            _ => {}
        }
    }
    let graph_optimization_level = raw
        .graph_optimization_level
        .map(|l| {
            GraphOptimizationLevel::from_name(&l).ok_or_else(|| {
                (
                    "ort.graph_optimization_level".to_string(),
                    format!("unknown level '{l}' (one of: disable, basic, extended, all)"),
                )
            })
        })
        .transpose()?;
    Ok(OrtConfig {
        intra_op_threads: raw.intra_op_threads,
        inter_op_threads: raw.inter_op_threads,
        graph_optimization_level,
        allow_spinning: raw.allow_spinning,
    })
}

/// A hook is a plain `.rhai` file name in the model folder: no directories, nothing hidden.
fn validate_hook_name(name: &str) -> Result<(), String> {
    let plain = !name.contains(['/', '\\'])
        && name != ".."
        && !name.starts_with('.')
        && !name.chars().any(char::is_control);
    if !plain {
        return Err(format!(
            "'{name}' must be a plain file name in the model folder, e.g. \"score.rhai\""
        ));
    }
    if name.len() <= ".rhai".len() || !name.ends_with(".rhai") {
        return Err(format!("'{name}' must name a .rhai script"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
