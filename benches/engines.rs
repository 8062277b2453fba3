//! Engine latency per engine (tract, ort) per sample model at batch 1 and 8, through the
//! serving core's blocking path (validation + engine run + output selection), no HTTP.
//!
//! `cargo bench --bench engines`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scoria::engine::{Backend, Dim};
use scoria::models::{LoadedVersion, NamedTensor};
use scoria::registry::Repository;
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
    LoadedVersion::load(&dir, 1, backend).unwrap_or_else(|e| {
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
    for backend in [Backend::Tract, Backend::Ort] {
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

criterion_group!(benches, engines);
criterion_main!(benches);
