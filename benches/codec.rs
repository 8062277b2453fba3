//! v2 JSON request decoding and response encoding, the per-request work around the engine.
//!
//! `cargo bench --bench codec`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scoria::http::v2::codec::{decode_request, encode_response, BinaryOutputs, FlatData};
use scoria::tensor::{NamedTensor, Tensor, TensorData};

fn request(elements: usize) -> String {
    let data: Vec<String> = (0..elements)
        .map(|i| format!("{:.4}", (i % 255) as f32 / 255.0))
        .collect();
    format!(
        r#"{{"id":"1","inputs":[{{"name":"input","shape":[1,{elements}],"datatype":"FP32","data":[{}]}}]}}"#,
        data.join(",")
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("v2-json");
    // digits (64 values) and resnet (3x224x224 values) request sizes.
    for (label, n) in [("decode/64", 64), ("decode/150528", 3 * 224 * 224)] {
        let body = request(n);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(label, |b| {
            b.iter(|| decode_request(body.as_bytes(), None).expect("valid request"))
        });
    }
    let logits = TensorData::F32((0..1000).map(|i| i as f32 * 0.001 - 0.5).collect());
    group.throughput(Throughput::Elements(1000));
    group.bench_function("encode/1000", |b| {
        b.iter(|| serde_json::to_vec(&FlatData(&logits)).expect("encodes"))
    });
    // A whole response: resnet's logits and digits' label, as the infer route writes it.
    let outputs = [
        NamedTensor {
            name: "logits".into(),
            tensor: Tensor::new(vec![1, 1000], logits.clone()).expect("shape fits"),
        },
        NamedTensor {
            name: "label".into(),
            tensor: Tensor::new(vec![1], TensorData::I64(vec![7])).expect("shape fits"),
        },
    ];
    let json = BinaryOutputs::default();
    group.bench_function("encode_response/1000", |b| {
        b.iter(|| {
            encode_response("resnet", "1", Some("1".into()), &outputs, &json).expect("encodes")
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
