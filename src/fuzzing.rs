//! Fuzz targets: one function per decoder or import path that untrusted bytes reach, driving
//! the real code and discarding its result. An error is the expected answer to bad input; a
//! panic is a bug. `fuzz/` runs these under libFuzzer (`scripts/fuzz`), and
//! `tests/fuzz_corpus.rs` replays the committed corpus and every crash input through the same
//! functions on each `cargo test`.
//!
//! Targets whose input has two parts (an HTTP header and a body, an MQTT topic and a payload)
//! take them as `PART1 '\n' PART2`: neither a header value nor a topic holds a newline.

use crate::edge::desired::{self, Applied, VersionCheck};
use crate::edge::message;
use crate::edge::topics::{Inbound, Topics};
use crate::engine::opencl::{cpu::Runner, graph::Graph, partition, specs};
use crate::engine::{tract::TractEngine, Dim, LoadOptions, TensorSpec};
use crate::hook::{convert, tensors};
use crate::http::body::{self, Encoding};
use crate::http::v2::codec::decode_request;
use crate::models::score;
use crate::registry::{ModelConfig, VersionMeta};
use crate::tensor::DataType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// A fuzz target: its name (the folder of its corpus under `fuzz/corpus/`) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// What it feeds the bytes to.
    pub what: &'static str,
}

/// Every target, decoders first, then the (slower) ONNX import paths.
pub const TARGETS: &[Target] = &[
    Target {
        name: "v2_json",
        run: v2_json,
        what: "a v2 inference request body, JSON (http::v2::codec::decode_request)",
    },
    Target {
        name: "v2_binary",
        run: v2_binary,
        what: "Inference-Header-Content-Length '\\n' a binary-extension body (JSON header + raw parts)",
    },
    Target {
        name: "http_body",
        run: http_body,
        what: "byte 0 (even: gzip, odd: deflate) then a compressed request body, decoded and then decoded as a v2 request",
    },
    Target {
        name: "config_toml",
        run: config_toml,
        what: "a model's config.toml (registry::ModelConfig::parse)",
    },
    Target {
        name: "meta_toml",
        run: meta_toml,
        what: "a version's meta.toml (registry::VersionMeta::parse, re-encoded when valid)",
    },
    Target {
        name: "mqtt_request",
        run: mqtt_request,
        what: "an MQTT scoring request payload: id split, oversize id scan, duplicate marking, /score body decoding",
    },
    Target {
        name: "mqtt_desired",
        run: mqtt_desired,
        what: "a desired-configuration message (edge::desired::apply, its $version, the reported document)",
    },
    Target {
        name: "iothub",
        run: iothub,
        what: "an IoT Hub topic '\\n' payload: direct method calls, twin patches and the twin GET answer",
    },
    Target {
        name: "hook_tensors",
        run: hook_tensors,
        what: "byte 0 (data type, explicit shape) then JSON, through the score hook's JSON/Rhai/tensor conversions",
    },
    Target {
        name: "onnx_tract",
        run: onnx_tract,
        what: "bytes as model.onnx: engine::check_onnx and the tract engine's load",
    },
    Target {
        name: "onnx_ort",
        run: onnx_ort,
        what: "bytes as model.onnx: the ONNX Runtime engine's load (needs the library: scripts/fetch-onnxruntime)",
    },
    Target {
        name: "onnx_opencl",
        run: onnx_opencl,
        what: "bytes as model.onnx: the OpenCL engine's graph import, specs and partitioning (no device needed)",
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// `data` split at its first newline (all of it is the first part when there is none).
fn two_parts(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

pub fn v2_json(data: &[u8]) {
    let _ = decode_request(data, None);
}

pub fn v2_binary(data: &[u8]) {
    let (header, body) = two_parts(data);
    let _ = decode_request(body, Some(header));
}

/// The decompressed size limit: `--max-body-size`'s role, smaller than its default so that
/// each run stays quick.
const BODY_LIMIT: usize = 1 << 20;

pub fn http_body(data: &[u8]) {
    let Some((&first, raw)) = data.split_first() else {
        return;
    };
    let encoding = if first % 2 == 0 {
        Encoding::Gzip
    } else {
        Encoding::Deflate
    };
    if let Ok(decoded) = body::decode(encoding, raw, BODY_LIMIT) {
        assert!(decoded.len() <= BODY_LIMIT, "decoded past the limit");
        let _ = decode_request(&decoded, None);
    }
}

pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ModelConfig::parse(text, Path::new("models/m/config.toml")) {
        let _ = config.version_policy.select(&[1, 2, 3, u64::MAX]);
    }
}

pub fn meta_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("models/m/1/meta.toml");
    if let Ok(meta) = VersionMeta::parse(text, path) {
        // What `model register` writes must read back as itself.
        match VersionMeta::parse(&meta.to_toml(), path) {
            Ok(again) => assert_eq!(again, meta, "meta.toml does not round-trip"),
            Err(e) => panic!("meta.toml does not read back: {e} ({meta:?})"),
        }
    }
}

/// The inputs of a one-input model (as `digits`) and of a two-input one, for `/score` bodies.
fn score_specs() -> &'static [Vec<TensorSpec>; 2] {
    static SPECS: OnceLock<[Vec<TensorSpec>; 2]> = OnceLock::new();
    SPECS.get_or_init(|| {
        let spec = |name: &str, dtype, shape: &[i64]| TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.iter().map(|&d| Dim::from_i64(d)).collect(),
        };
        [
            vec![spec("input", DataType::F32, &[-1, 64])],
            vec![
                spec("image", DataType::U8, &[-1, 2, 2]),
                spec("text", DataType::Bytes, &[-1]),
            ],
        ]
    })
}

/// The MQTT request size limit (`--max-message-size`'s role).
const MESSAGE_LIMIT: usize = 64 << 10;

pub fn mqtt_request(data: &[u8]) {
    let _ = message::mark_duplicate(data);
    // Over the size limit: the id is still read for the error result.
    if !data.is_empty() {
        let _ = message::parse_request(data, data.len() - 1);
    }
    if let Ok(req) = message::parse_request(data, MESSAGE_LIMIT) {
        if let Ok(body) = std::str::from_utf8(&req.body) {
            for specs in score_specs() {
                let _ = score::decode_request(body, specs);
            }
        }
    }
}

/// Versions 1 to 3 of every model can serve.
struct Versions;

impl VersionCheck for Versions {
    fn check(&self, model: &str, version: u64) -> Result<(), String> {
        match version {
            1..=3 => Ok(()),
            v => Err(format!("model '{model}' has no version {v}")),
        }
    }
}

fn applied() -> Applied {
    Applied {
        telemetry_interval: Duration::from_secs(10),
        versions: BTreeMap::from([("digits".into(), None), ("lenet".into(), Some(2))]),
        thresholds: BTreeMap::new(),
    }
}

/// Applies a desired document as the edge module does, reporting the outcome.
fn desired_config(payload: &[u8], topic_version: Option<u64>) {
    let current = applied();
    let version = desired::desired_version(payload, topic_version, 1);
    let (now, rejected) = match desired::apply(payload, &current, &Versions) {
        Ok(next) => (next, None),
        Err(why) => (current, Some(why)),
    };
    let serving = now.versions.clone();
    let _ = desired::reported(&now, &serving, version, rejected.as_deref()).to_string();
}

pub fn mqtt_desired(data: &[u8]) {
    desired_config(data, None);
}

pub fn iothub(data: &[u8]) {
    let (topic, payload) = two_parts(data);
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let topics = Topics::IotHub {
        device: "edge-1".into(),
        module: "scoria".into(),
    };
    match topics.inbound(topic) {
        Inbound::Request { .. } => mqtt_request(payload),
        Inbound::Method { rid, .. } => {
            let _ = Topics::method_response(200, &rid);
            let served = ["digits".to_string(), "lenet".to_string()];
            for served in [&served[..1], &served[..]] {
                if let Ok((_, body)) = crate::edge::request::method_body(payload, served) {
                    mqtt_request(&body);
                }
            }
        }
        Inbound::Config { version } => desired_config(payload, version),
        Inbound::Twin { .. } => {
            if let Some((doc, version)) = desired::from_twin(payload) {
                desired_config(&doc, version);
            }
        }
        Inbound::Unknown => {}
    }
}

pub fn hook_tensors(data: &[u8]) {
    const TYPES: [DataType; 12] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];
    let Some((&first, json)) = data.split_first() else {
        return;
    };
    let dtype = TYPES[usize::from(first & 0x0f) % TYPES.len()];
    // High bits: an explicit shape of 1 to 8 elements along one or two axes, as
    // `tensor(values, type, shape)` in a hook.
    let shape = match first >> 4 {
        0..=7 => None,
        n => Some(vec![usize::from(n - 7), usize::from(first & 1) + 1]),
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let _ = convert::json_sizes(&value);
    let dynamic = convert::json_to_dynamic(value);
    let _ = convert::to_json(&dynamic);
    let _ = tensors::rows(&dynamic);
    if let Ok(tensor) = tensors::to_tensor(&dynamic, dtype, shape) {
        let _ = tensors::tensor_bytes(&tensor);
        let back = tensors::tensor_to_dynamic(&tensor);
        let _ = convert::to_json(&back);
        let wrapped = rhai::Dynamic::from(tensor);
        let _ = tensors::to_tensor(&wrapped, DataType::F32, None);
        let _ = convert::to_json(&wrapped);
    }
}

/// `data` written as `model.onnx` in a folder of this process's own, for the engines' import
/// paths (which read files, as models are served).
fn model_file(data: &[u8]) -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("scoria-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok().map(|_| dir)
    });
    // One file per thread: tract maps the model file, and a file rewritten under another
    // thread's map would end that thread with SIGBUS (the replay test runs targets at once).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let path = dir
        .as_ref()?
        .join(format!("model-{}.onnx", MINE.with(|n| *n)));
    std::fs::write(&path, data).ok().map(|_| path)
}

pub fn onnx_tract(data: &[u8]) {
    let Some(path) = model_file(data) else {
        return;
    };
    // Registration checks a model; serving loads it (also when it was copied in by hand).
    let _ = crate::engine::check_onnx(&path);
    let _ = TractEngine::load(&path, &LoadOptions::default());
}

pub fn onnx_ort(data: &[u8]) {
    let Some(path) = model_file(data) else {
        return;
    };
    let _ = crate::engine::ort::OrtEngine::load(&path, &LoadOptions::default());
}

pub fn onnx_opencl(data: &[u8]) {
    let Some(path) = model_file(data) else {
        return;
    };
    let Ok(mut graph) = Graph::load(&path) else {
        return;
    };
    if specs::specs(&graph, &LoadOptions::default()).is_ok() {
        // Fallback, fusion and FP16 on, placement as configured (not "auto", which could keep
        // the whole graph on the CPU): every partitioning path.
        let _ = partition::partition(
            &mut graph,
            true,
            true,
            false,
            true,
            "fuzz device",
            Runner::Tract,
        );
    }
}
