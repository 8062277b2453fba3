//! Unit tests of the tract engine's batch-size-specialised plans.

use super::plans::MAX_SPECIALISED;
use super::*;
use std::path::PathBuf;
use tract_onnx::prelude::{tvec, TVec, TractResult};
use tract_onnx::prelude::{Framework, IntoRunnable};

/// Pseudo-random values in [-0.5, 0.5), distinct enough that a weight or patch element
/// read from the wrong place changes an answer (for the tests of the tract engine's kernels
/// and rewrites).
pub(super) fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn digits() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/digits/1/model.onnx")
}

fn sizes(engine: &TractEngine) -> Vec<usize> {
    let plans = engine
        .specialised
        .as_ref()
        .expect("digits has a batch symbol");
    let mut sizes: Vec<usize> = plans.plans.read().unwrap().keys().copied().collect();
    sizes.sort_unstable();
    sizes
}

/// `rows` digit images with distinct pixels, as one `[rows, 64]` tensor.
fn images(rows: usize, seed: usize) -> Tensor {
    let data = (0..rows * 64)
        .map(|i| ((i * 7 + seed * 13) % 17) as f32)
        .collect();
    Tensor::new(vec![rows, 64], TensorData::F32(data)).unwrap()
}

fn probabilities(outputs: &[Tensor]) -> Vec<f32> {
    match outputs[0].data() {
        TensorData::F32(v) => v.clone(),
        other => panic!("probabilities are F32, not {other:?}"),
    }
}

#[test]
fn batcher_sizes_are_prepared_at_load_and_others_on_first_use() {
    let options = LoadOptions {
        batch_sizes: vec![4, 8],
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    let engine = TractEngine::load(&digits(), &options).unwrap();
    assert_eq!(sizes(&engine), [1, 4, 8]);

    engine.run(vec![images(3, 0)]).unwrap();
    assert_eq!(sizes(&engine), [1, 3, 4, 8]);
}

#[test]
fn specialised_plans_answer_as_the_general_plan_does() {
    let options = LoadOptions {
        batch_sizes: vec![2],
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    let engine = TractEngine::load(&digits(), &options).unwrap();
    for rows in [1, 2, 5] {
        let batched = probabilities(&engine.run(vec![images(rows, rows)]).unwrap());
        let general = probabilities(
            &engine
                .general
                .get()
                .unwrap()
                .run(tvec![to_tract(images(rows, rows)).unwrap().into_tvalue()])
                .unwrap()
                .iter()
                .map(|v| from_tract(v).unwrap())
                .collect::<Vec<_>>(),
        );
        assert_eq!(batched.len(), rows * 10);
        for (a, b) in batched.iter().zip(&general) {
            assert!((a - b).abs() <= 1e-6, "batch {rows}: {a} vs {b}");
        }
    }
    assert_eq!(sizes(&engine), [1, 2, 5]);
}

#[test]
fn the_number_of_plans_is_bounded() {
    let options = LoadOptions {
        batch_sizes: vec![4],
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    let engine = TractEngine::load(&digits(), &options).unwrap();
    for rows in 1..=MAX_SPECIALISED + 3 {
        let out = engine.run(vec![images(rows, 1)]).unwrap();
        assert_eq!(out[0].shape(), [rows, 10]);
    }
    assert_eq!(sizes(&engine).len(), MAX_SPECIALISED);
}

#[test]
fn without_batching_only_batch_1_is_specialised() {
    let engine = TractEngine::load(&digits(), &LoadOptions::default()).unwrap();
    // Batch 1 runs its own plan; the general one is optimized for the first other size.
    engine.run(vec![images(1, 2)]).unwrap();
    assert!(
        engine.general.plan.get().is_none(),
        "general plan made at load"
    );
    for rows in [1, 3, 7] {
        let out = engine.run(vec![images(rows, 2)]).unwrap();
        assert_eq!(out[0].shape(), [rows, 10]);
    }
    assert_eq!(sizes(&engine), [1]);
    assert!(engine.specialised.as_ref().unwrap().model.is_none());
    assert!(engine.general.plan.get().is_some());
}

/// An auto-completed batcher's sizes are unknown at load: they are specialised on use.
#[test]
fn sizes_unknown_at_load_are_specialised_on_use() {
    let options = LoadOptions {
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    let engine = TractEngine::load(&digits(), &options).unwrap();
    assert_eq!(sizes(&engine), [1]);
    engine.run(vec![images(3, 0)]).unwrap();
    assert_eq!(sizes(&engine), [1, 3]);
}

#[test]
fn plans_are_bounded_by_the_bytes_of_their_weights() {
    const MIB: u64 = 1 << 20;
    assert_eq!(
        plans_within(300 * MIB, PLAN_BYTES),
        0,
        "a 300 MiB model gets no second plan"
    );
    assert_eq!(
        plans_within(12 * MIB, PLAN_BYTES),
        1,
        "resnet-size: batch 1 only"
    );
    assert_eq!(plans_within(5 * MIB, PLAN_BYTES), 3);
    assert_eq!(plans_within(10_000, PLAN_BYTES), MAX_SPECIALISED);
    assert_eq!(plans_within(0, PLAN_BYTES), MAX_SPECIALISED);

    let onnx = tract_onnx::onnx();
    let typed = onnx.model_for_path(digits()).unwrap().into_typed().unwrap();
    let weights = weight_bytes(&typed);
    // digits: a small MLP of FP32 weights and biases.
    assert!(weights > 1000 && weights < 100_000, "{weights}");
    let options = LoadOptions {
        batch_sizes: vec![4, 8],
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    // Room for two plans: batch 1 and 4 at load, none on use, the typed model not kept.
    let engine = TractEngine::load_unguarded(&digits(), &options, 2 * weights + 1).unwrap();
    assert_eq!(sizes(&engine), [1, 4]);
    assert!(engine.specialised.as_ref().unwrap().model.is_none());
    let out = engine.run(vec![images(3, 0)]).unwrap();
    assert_eq!(out[0].shape(), [3, 10]);
    assert_eq!(sizes(&engine), [1, 4]);
    // No room for one: the general plan alone answers every size.
    let engine = TractEngine::load_unguarded(&digits(), &options, weights - 1).unwrap();
    assert!(engine.specialised.is_none());
    for rows in [1, 3] {
        let out = engine.run(vec![images(rows, 0)]).unwrap();
        assert_eq!(out[0].shape(), [rows, 10]);
    }
}

/// LeNet's fully connected weights (over [`onnx_file::EXTERNAL_FROM_BYTES`]) are read from
/// the file as external data, and the model answers exactly as when decoded whole; a file
/// that is a link into another directory is decoded whole (the importer refuses external
/// data outside the model's directory).
#[test]
fn weights_read_from_the_file_answer_as_decoded_ones() {
    let lenet = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/lenet/1/model.onnx");
    let external = |path: &Path| {
        let proto = onnx_file::read(path).unwrap();
        let graph = proto.graph.unwrap();
        graph
            .initializer
            .iter()
            .filter(|t| t.raw_data.is_empty() && !t.external_data.is_empty())
            .count()
    };
    assert!(external(&lenet) > 0);

    let input = Tensor::new(
        vec![2, 1, 28, 28],
        TensorData::F32((0..2 * 28 * 28).map(|i| (i % 17) as f32 / 17.0).collect()),
    )
    .unwrap();
    let whole = tract_onnx::onnx()
        .model_for_path(&lenet)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap();
    let TensorData::F32(x) = input.data() else {
        unreachable!()
    };
    let x = tract_onnx::prelude::tract_ndarray::Array4::from_shape_vec((2, 1, 28, 28), x.clone())
        .unwrap();
    let expected = whole.run(tvec!(TractTensor::from(x).into())).unwrap();
    let expected = expected[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect::<Vec<f32>>();
    let engine = TractEngine::load(&lenet, &LoadOptions::default()).unwrap();
    let got = engine.run(vec![input]).unwrap();
    let TensorData::F32(got) = got[0].data() else {
        panic!("not FP32")
    };
    assert_eq!(got, &expected);

    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("model.onnx");
    std::os::unix::fs::symlink(&lenet, &link).unwrap();
    assert_eq!(external(&link), 0);
    assert!(TractEngine::load(&link, &LoadOptions::default()).is_ok());
}

/// Where no plan but batch 1's may be made, the typed model is not kept for the general plan:
/// its first use reads the file again, and answers as a model that kept it; a file changed
/// since load is refused with a clear error while batch 1 keeps answering.
#[test]
fn the_general_plan_reads_the_file_again_when_no_more_plans_may_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::copy(digits(), &path).unwrap();
    let onnx = tract_onnx::onnx();
    let typed = onnx.model_for_path(&path).unwrap().into_typed().unwrap();
    let weights = weight_bytes(&typed);
    let options = LoadOptions {
        batch_sizes: vec![4],
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    let kept = TractEngine::load_unguarded(&digits(), &options, u64::MAX).unwrap();
    assert!(matches!(
        kept.general.source.lock().unwrap().as_ref(),
        Some(Source::Typed(_))
    ));
    assert_eq!(kept.rows_per_run(), None);

    let engine = TractEngine::load_unguarded(&path, &options, weights + 1).unwrap();
    assert_eq!(sizes(&engine), [1]);
    assert!(matches!(
        engine.general.source.lock().unwrap().as_ref(),
        Some(Source::File(_))
    ));
    // The batcher is told to gather no more rows than plans exist for, from 1 on.
    assert_eq!(engine.rows_per_run(), Some(1));
    let two = LoadOptions {
        batch_sizes: vec![2],
        ..options.clone()
    };
    let pair = TractEngine::load_unguarded(&path, &two, 2 * weights + 1).unwrap();
    assert_eq!(pair.rows_per_run(), Some(2));
    let out = engine.run(vec![images(3, 1)]).unwrap();
    assert_eq!(
        probabilities(&out),
        probabilities(&kept.run(vec![images(3, 1)]).unwrap())
    );
    assert!(engine.general.source.lock().unwrap().is_none());

    let engine = TractEngine::load_unguarded(&path, &options, weights + 1).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&path, bytes).unwrap();
    let err = engine.run(vec![images(3, 1)]).unwrap_err().to_string();
    assert!(
        err.contains("changed on disk since the model was loaded"),
        "{err}"
    );
    assert_eq!(engine.run(vec![images(1, 1)]).unwrap()[0].shape(), [1, 10]);
}

#[test]
fn reused_run_states_answer_as_new_ones_across_threads_and_after_errors() {
    let engine = TractEngine::load(&digits(), &LoadOptions::default()).unwrap();
    let plan = engine.specialised.as_ref().unwrap().plan(1).unwrap();
    assert!(
        plan.reuses_states(),
        "digits' ops keep no state between runs"
    );
    let run = |run: &dyn Fn(TVec<TValue>) -> TractResult<TVec<TValue>>, seed| {
        let outputs = run(tvec![to_tract(images(1, seed)).unwrap().into_tvalue()]).unwrap();
        probabilities(
            &outputs
                .iter()
                .map(|v| from_tract(v).unwrap())
                .collect::<Vec<_>>(),
        )
    };
    // What a state made for the run alone (tract's own `SimplePlan::run`) answers.
    let expected: Vec<Vec<f32>> = (0..8)
        .map(|seed| run(&|i| plan.runnable.run(i), seed))
        .collect();
    let wrong = Tensor::new(vec![1, 3], TensorData::F32(vec![0.0; 3])).unwrap();
    assert!(plan
        .run(tvec![to_tract(wrong).unwrap().into_tvalue()])
        .is_err());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (plan, expected) = (&plan, &expected);
            s.spawn(move || {
                for i in 0..100 {
                    let seed = (t + i) % expected.len();
                    assert_eq!(run(&|x| plan.run(x), seed), expected[seed], "run {i}");
                }
            });
        }
    });
    let idle = plan.idle.lock().unwrap().len();
    assert!((1..=4).contains(&idle), "{idle} states kept for 4 threads");
}

/// A model whose batch-1 plan packs its convolutions' patches image by image (lenet) keeps
/// that one plan whatever sizes the batcher forms: its batches run one row at a time
/// (`rows_per_run` 1), each row as it would alone, and together as tract's own batched plan
/// answers them (within rounding: that plan sums in another order). A model without
/// convolutions (digits) keeps its batched plans.
#[test]
fn convolutions_packed_per_image_run_batches_row_by_row() {
    let lenet = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/lenet/1/model.onnx");
    let options = LoadOptions {
        batch_sizes: vec![4, 8],
        specialise_on_use: true,
        ..LoadOptions::default()
    };
    let engine = TractEngine::load(&lenet, &options).unwrap();
    assert_eq!(sizes(&engine), [1]);
    assert_eq!(engine.rows_per_run(), Some(1));

    let rows = 3;
    let input = Tensor::new(
        vec![rows, 1, 28, 28],
        TensorData::F32(
            (0..rows * 28 * 28)
                .map(|i| (i % 23) as f32 / 23.0)
                .collect(),
        ),
    )
    .unwrap();
    let parts = engine.run_rows(vec![input.clone()], rows).unwrap();
    assert_eq!(parts[0].shape(), [rows, 10]);
    let alone: Vec<f32> = input
        .clone()
        .split0(&[1; 3])
        .unwrap()
        .into_iter()
        .flat_map(|row| probabilities(&engine.run(vec![row]).unwrap()))
        .collect();
    assert_eq!(probabilities(&parts), alone);
    let batched = probabilities(&engine.run(vec![input]).unwrap());
    assert_eq!(batched.len(), alone.len());
    for (a, b) in alone.iter().zip(&batched) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
    }
    // Still one plan: the batched answer came from the general plan.
    assert_eq!(sizes(&engine), [1]);

    let digits = TractEngine::load(&digits(), &options).unwrap();
    assert_eq!(sizes(&digits), [1, 4, 8]);
    assert_eq!(digits.rows_per_run(), None);
}

/// The ops between tract's matrix kernels, wrapped to clear the vector registers' upper
/// halves first, keep their names and answer bit for bit as unwrapped.
#[test]
fn ops_wrapped_to_clear_upper_halves_answer_as_tract_s_own() {
    let lenet = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/lenet/1/model.onnx");
    let typed = read_typed(&lenet, &LoadOptions::default()).unwrap().model;
    let typed = typed
        .set_symbols(&std::collections::HashMap::from([(
            typed.symbols.sym("N"),
            TDim::Val(1),
        )]))
        .unwrap_or(typed);
    let mut plain = typed.into_optimized().unwrap();
    pool::substitute(&mut plain).unwrap();
    im2col::substitute(&mut plain).unwrap();
    let mut wrapped = plain.clone();
    let count = upper::wrap(&mut wrapped);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        assert!(count > 0);
    }
    let names = |m: &TypedModel| m.nodes().iter().map(|n| n.op.name()).collect::<Vec<_>>();
    assert_eq!(names(&plain), names(&wrapped));
    let input = || {
        let x: Vec<f32> = (0..28 * 28).map(|i| (i % 29) as f32 / 29.0 - 0.3).collect();
        tvec![TractTensor::from_shape(&[1, 1, 28, 28], &x)
            .unwrap()
            .into_tvalue()]
    };
    let plain = plain.into_runnable().unwrap().run(input()).unwrap();
    let wrapped = wrapped.into_runnable().unwrap().run(input()).unwrap();
    assert_eq!(
        plain[0].to_plain_array_view::<f32>().unwrap(),
        wrapped[0].to_plain_array_view::<f32>().unwrap()
    );
}

/// A run split over the pool of [`threads`] answers bit for bit as on one thread: each
/// panel of a product is computed whole by one thread. Every product is split here, however
/// few its panels (tract's threshold is process-wide; it only matters to runs split over a
/// pool, and any split answers the same).
#[test]
fn runs_split_over_the_cores_answer_as_one_thread_does() {
    use tract_linalg::multithread::{
        current_threading_panel_threshold, multithread_tract_scope, set_threading_panel_threshold,
        Executor,
    };
    let threshold = current_threading_panel_threshold();
    set_threading_panel_threshold(0);
    let lenet = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/lenet/1/model.onnx");
    let typed = read_typed(&lenet, &LoadOptions::default()).unwrap().model;
    let plan = plans::Plan::optimized(typed).unwrap();
    let input = |seed: u64| {
        tvec![
            TractTensor::from_shape(&[1, 1, 28, 28], &values(28 * 28, seed))
                .unwrap()
                .into_tvalue()
        ]
    };
    let pool = Executor::multithread(2);
    for seed in 0..4 {
        let alone = plan.runnable.run(input(seed)).unwrap();
        let split =
            multithread_tract_scope(pool.clone(), || plan.runnable.run(input(seed))).unwrap();
        assert_eq!(
            alone[0].to_plain_array_view::<f32>().unwrap(),
            split[0].to_plain_array_view::<f32>().unwrap(),
            "seed {seed}"
        );
    }
    set_threading_panel_threshold(threshold);
    // Through the plan's own entry point, whichever way it runs.
    let expected = plan.runnable.run(input(9)).unwrap();
    for _ in 0..3 {
        let got = plan.run(input(9)).unwrap();
        assert_eq!(
            expected[0].to_plain_array_view::<f32>().unwrap(),
            got[0].to_plain_array_view::<f32>().unwrap()
        );
    }
}
