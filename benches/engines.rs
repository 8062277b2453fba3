//! Engine latency per engine (tract, ort, opencl) per sample model at batch 1 and 8, through
//! the serving core's blocking path (validation + engine run + output selection), no HTTP.
//! `opencl/transfers` reports the share of an OpenCL run spent moving tensors between host
//! and device (ResNet, batch 1).
//!
//! `cargo bench --bench engines` (`-- opencl` for the OpenCL engine only)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scoria::engine::{Backend, Dim};
use scoria::models::{LoadDefaults, LoadedVersion};
use scoria::registry::Repository;
use scoria::tensor::NamedTensor;
use scoria::tensor::{Tensor, TensorData};
use std::path::Path;

/// Loads a sample model with `backend`, forcing it over the model's config.toml choice.
fn load(name: &str, backend: Backend) -> LoadedVersion {
    let repo =
        Repository::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("models/");
    let mut dir = repo.model(name).expect("sample model");
    if let Ok(config) = dir.config.as_mut() {
        config.backend = Some(backend);
    }
    // The engine alone: no auto-completed batcher in front of it.
    let defaults = LoadDefaults {
        backend,
        max_batch_size: 0,
    };
    LoadedVersion::load(&dir, 1, defaults).unwrap_or_else(|e| {
        panic!("{name} on {backend}: {e} (for ort, run scripts/fetch-onnxruntime)")
    })
}

/// Deterministic FP32 inputs of batch `n` for every input of `model`.
fn inputs(model: &LoadedVersion, n: usize) -> Vec<NamedTensor> {
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(k) => *k,
                    Dim::Dynamic if i == 0 => n,
                    Dim::Dynamic => 1,
                })
                .collect();
            let len = shape.iter().product();
            let data = (0..len).map(|i| ((i * 7919) % 17) as f32 / 17.0).collect();
            NamedTensor {
                name: spec.name.clone(),
                tensor: Tensor::new(shape, TensorData::F32(data)).expect("shape"),
            }
        })
        .collect()
}

fn engines(c: &mut Criterion) {
    for backend in [Backend::Tract, Backend::Ort, Backend::Opencl] {
        for name in ["digits", "lenet", "resnet"] {
            let model = load(name, backend);
            let mut group = c.benchmark_group(format!("{backend}/{name}"));
            if name == "resnet" {
                group.sample_size(10);
            }
            for batch in [1, 8] {
                let input = inputs(&model, batch);
                group.bench_with_input(BenchmarkId::new("batch", batch), &input, |b, input| {
                    b.iter(|| {
                        model
                            .infer_blocking(input.clone(), None)
                            .expect("inference")
                    })
                });
            }
            group.finish();
        }
    }
}

/// Time in host↔device transfers against the whole run, for ResNet at batch 1.
fn opencl_transfers(c: &mut Criterion) {
    use scoria::engine::opencl::OpenclEngine;
    use scoria::engine::{Engine, LoadOptions};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/resnet/1/model.onnx");
    let engine = OpenclEngine::load(&path, &LoadOptions::default()).expect("resnet on opencl");
    let model = load("resnet", Backend::Tract);
    let input: Vec<Tensor> = inputs(&model, 1).into_iter().map(|t| t.tensor).collect();
    engine.run(input.clone()).expect("warm-up");
    let (t0, b0, _) = engine.transfers().snapshot();
    let runs = 10;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        engine.run(input.clone()).expect("inference");
    }
    let total = started.elapsed().as_secs_f64();
    let (t1, b1, _) = engine.transfers().snapshot();
    eprintln!(
        "opencl/transfers resnet batch 1: {:.2} ms per run, {:.3} ms in transfers ({:.2}%), {} bytes moved per run",
        total * 1e3 / runs as f64,
        (t1 - t0) * 1e3 / runs as f64,
        100.0 * (t1 - t0) / total,
        (b1 - b0) / runs
    );
    let _ = c;
}

criterion_group!(benches, engines, opencl_transfers);
criterion_main!(benches);
