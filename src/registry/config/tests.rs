use super::*;

fn parse(text: &str) -> Result<ModelConfig, String> {
    ModelConfig::parse(text, Path::new("m/config.toml")).map_err(|e| e.to_string())
}

#[test]
fn empty_is_default() {
    assert_eq!(parse("").unwrap(), ModelConfig::default());
}

#[test]
fn full_config() {
    let c = parse(
        r#"
        backend = "tract"
        max_batch_size = 8
        description = "digits"
        [version_policy]
        latest = 2
        [tags]
        team = "ml"
        [[input]]
        name = "x"
        datatype = "FP32"
        dims = [-1, 64]
        "#,
    )
    .unwrap();
    assert_eq!(c.backend, Some(Backend::Tract));
    assert_eq!(c.max_batch_size, Some(8));
    assert_eq!(c.version_policy, VersionPolicy::Latest(2));
    assert_eq!(c.tags["team"], "ml");
    assert_eq!(c.inputs[0].datatype, Some(DataType::F32));
}

#[test]
fn unknown_key_names_file_and_key() {
    let e = parse("max_batch_size = 1\ninstancez = 2\n").unwrap_err();
    assert!(e.starts_with("m/config.toml: "), "{e}");
    assert!(e.contains("instancez"), "{e}");
    let e = parse("[version_policy]\nnewest = 1\n").unwrap_err();
    assert!(e.contains("version_policy") && e.contains("newest"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let e = parse("max_batch_size = \"eight\"\n").unwrap_err();
    assert!(e.contains("max_batch_size") && e.contains("line 1"), "{e}");
    let e = parse("max_batch_size = -1\n").unwrap_err();
    assert!(e.contains("max_batch_size"), "{e}");
    let e = parse("backend = \"cuda\"\n").unwrap_err();
    assert!(e.contains("backend") && e.contains("cuda"), "{e}");
    let e = parse("[[input]]\nname = \"x\"\ndatatype = \"FP8\"\n").unwrap_err();
    assert!(e.contains("input[0].datatype") && e.contains("FP8"), "{e}");
    let e = parse("[version_policy]\nlatest = 1\nall = true\n").unwrap_err();
    assert!(e.contains("exactly one"), "{e}");
    let e = parse("not toml at all").unwrap_err();
    assert!(e.starts_with("m/config.toml: "), "{e}");
}

#[test]
fn hook_is_a_plain_rhai_file_name() {
    assert_eq!(parse("").unwrap().hook, None);
    let c = parse("hook = \"score.rhai\"\n").unwrap();
    assert_eq!(c.hook.as_deref(), Some("score.rhai"));
    for bad in [
        "../score.rhai",
        "sub/score.rhai",
        "/etc/x.rhai",
        "..",
        ".rhai",
        ".hidden.rhai",
        "score.py",
        "score.rhai.txt",
        "a\\b.rhai",
    ] {
        let e = parse(&format!("hook = {bad:?}\n")).unwrap_err();
        assert!(e.contains("key `hook`"), "{bad}: {e}");
    }
    let e = parse("hook = 3\n").unwrap_err();
    assert!(e.contains("hook"), "{e}");
}

#[test]
fn batching_and_instances() {
    let c = parse("max_batch_size = 8\ninstances = 2\n[dynamic_batching]\nmax_queue_delay_us = 500\npreferred_batch_size = [8, 4]\nmax_queue_size = 16\n").unwrap();
    assert_eq!(c.instances, Some(2));
    let d = c.dynamic_batching.unwrap();
    assert_eq!(
        (
            d.max_queue_delay_us,
            d.preferred_batch_size,
            d.max_queue_size
        ),
        (500, vec![4, 8], 16)
    );
    assert!(parse("[dynamic_batching]\n")
        .unwrap_err()
        .contains("needs max_batch_size"));
    assert!(
        parse("max_batch_size = 4\n[dynamic_batching]\npreferred_batch_size = [8]\n")
            .unwrap_err()
            .contains("preferred_batch_size")
    );
    assert!(parse("instances = 0\n").unwrap_err().contains("instances"));
    assert_eq!(parse("").unwrap().instances, None);
    // Upper limits: values that would take the machine down are refused at load.
    assert_eq!(parse("instances = 256\n").unwrap().instances, Some(256));
    let e = parse("instances = 100000\n").unwrap_err();
    assert!(
        e.contains("instances") && e.contains("over the limit of 256"),
        "{e}"
    );
    let e = parse("max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 99999999999999\n")
        .unwrap_err();
    assert!(
        e.contains("max_queue_delay_us") && e.contains("10 s"),
        "{e}"
    );
    let e = parse("[ort]\nintra_op_threads = 100000\n").unwrap_err();
    assert!(
        e.contains("ort.intra_op_threads") && e.contains("over the limit"),
        "{e}"
    );
}

#[test]
fn ort_table() {
    assert_eq!(parse("").unwrap().ort, OrtConfig::default());
    let c = parse(
        "backend = \"ort\"\n[ort]\nintra_op_threads = 4\ninter_op_threads = 2\n\
         graph_optimization_level = \"extended\"\nallow_spinning = true\n",
    )
    .unwrap();
    assert_eq!(c.backend, Some(Backend::Ort));
    assert_eq!(
        c.ort,
        OrtConfig {
            intra_op_threads: Some(4),
            inter_op_threads: Some(2),
            graph_optimization_level: Some(GraphOptimizationLevel::Extended),
            allow_spinning: Some(true),
        }
    );
    for (name, level) in GraphOptimizationLevel::NAMES {
        let c = parse(&format!("[ort]\ngraph_optimization_level = {name:?}\n")).unwrap();
        assert_eq!(c.ort.graph_optimization_level, Some(level));
        assert_eq!(level.name(), name);
    }
    // Each key alone; the others stay unset.
    let c = parse("[ort]\ninter_op_threads = 1\n").unwrap();
    assert_eq!(
        (c.ort.intra_op_threads, c.ort.inter_op_threads),
        (None, Some(1))
    );
}

#[test]
fn ort_table_is_strict() {
    for (text, key, why) in [
        (
            "[ort]\nintra_op_threads = 0\n",
            "ort.intra_op_threads",
            "at least 1",
        ),
        (
            "[ort]\ninter_op_threads = 0\n",
            "ort.inter_op_threads",
            "at least 1",
        ),
        (
            "[ort]\nintra_op_threads = -2\n",
            "ort.intra_op_threads",
            "line 2",
        ),
        (
            "[ort]\nintra_op_threads = \"4\"\n",
            "ort.intra_op_threads",
            "line 2",
        ),
        (
            "[ort]\ngraph_optimization_level = \"O3\"\n",
            "ort.graph_optimization_level",
            "O3",
        ),
        (
            "[ort]\ngraph_optimization_level = \"ALL\"\n",
            "ort.graph_optimization_level",
            "one of",
        ),
        (
            "[ort]\ngraph_optimization_level = 3\n",
            "ort.graph_optimization_level",
            "line 2",
        ),
        ("[ort]\nthreads = 4\n", "ort", "threads"),
        ("ort = 4\n", "ort", "line 1"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.starts_with("m/config.toml: "), "{text}: {e}");
        assert!(e.contains(&format!("key `{key}")), "{text}: {e}");
        assert!(e.contains(why), "{text}: {e}");
    }
}

#[test]
fn version_policies_select() {
    let present = [1, 2, 3, 5];
    assert_eq!(VersionPolicy::Latest(1).select(&present), vec![5]);
    assert_eq!(VersionPolicy::Latest(2).select(&present), vec![3, 5]);
    assert_eq!(VersionPolicy::All.select(&present), vec![1, 2, 3, 5]);
    assert_eq!(
        VersionPolicy::Specific(vec![2, 4]).select(&present),
        vec![2]
    );
}

#[test]
fn opencl_table() {
    assert_eq!(parse("").unwrap().opencl, OpenclConfig::default());
    assert!(OpenclConfig::default().fallback);
    let c = parse(
        "backend = \"opencl\"\n[opencl]\ndevice = \"accelerator\"\nplatform = \"Intel\"\n\
         fallback = false\nbinary = \"kernels.aocx\"\ncpu_backend = \"ort\"\n\
         placement = \"auto\"\nfusion = true\nprecision = \"fp16\"\n",
    )
    .unwrap();
    assert_eq!(c.backend, Some(Backend::Opencl));
    assert_eq!(
        c.opencl,
        OpenclConfig {
            device: Some(DeviceKind::Accelerator),
            platform: Some("Intel".into()),
            fallback: false,
            // Relative to the folder of config.toml.
            binary: Some(Path::new("m").join("kernels.aocx")),
            cpu_backend: CpuBackend::Ort,
            fusion: true,
            placement: PlacementMode::Auto,
            fp16: true,
            fp16_unchecked: false,
        }
    );
    for (text, key) in [
        ("[opencl]\ndevice = \"fpga\"\n", "opencl.device"),
        ("[opencl]\nplatform = \"\"\n", "opencl.platform"),
        ("[opencl]\nbinary = \"\"\n", "opencl.binary"),
        ("[opencl]\nfallback = \"yes\"\n", "opencl.fallback"),
        ("[opencl]\nkernels = 1\n", "opencl"),
        (
            "[opencl]\ncpu_backend = \"onnxruntime\"\n",
            "opencl.cpu_backend",
        ),
        ("[opencl]\ncpu_backend = \"opencl\"\n", "opencl.cpu_backend"),
        ("[opencl]\ncpu_backend = 1\n", "opencl.cpu_backend"),
        ("[opencl]\nplacement = \"cpu\"\n", "opencl.placement"),
        ("[opencl]\nfusion = \"no\"\n", "opencl.fusion"),
        ("[opencl]\nprecision = \"int8\"\n", "opencl.precision"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(key), "{text:?}: {e}");
        assert!(e.contains("m/config.toml"), "{text:?}: {e}");
    }
    let e = parse("[opencl]\ncpu_backend = \"onnxruntime\"\n").unwrap_err();
    assert!(
        e.contains("unknown CPU backend 'onnxruntime' (one of: tract, ort)"),
        "{e}"
    );
    assert_eq!(
        parse("[opencl]\ncpu_backend = \"tract\"\n")
            .unwrap()
            .opencl
            .cpu_backend,
        CpuBackend::Tract
    );
}

#[test]
fn queue_policy_and_priorities() {
    let c = parse(
        "max_batch_size = 4\n[dynamic_batching]\npriority_levels = 3\ndefault_priority_level = 2\n\
         [dynamic_batching.default_queue_policy]\ntimeout_action = \"delay\"\n\
         default_timeout_us = 5000\nallow_timeout_override = true\nmax_queue_size = 9\n",
    )
    .unwrap();
    let d = c.dynamic_batching.unwrap();
    assert_eq!((d.priority_levels, d.default_priority_level), (3, 2));
    assert_eq!(d.max_queue_size, 9);
    assert_eq!(
        d.queue_policy,
        QueuePolicy {
            timeout_action: TimeoutAction::Delay,
            default_timeout_us: 5000,
            allow_timeout_override: true,
        }
    );
    // Without levels, the default level is 0; with them, the lowest priority.
    let d = parse("max_batch_size = 4\n[dynamic_batching]\npriority_levels = 2\n")
        .unwrap()
        .dynamic_batching
        .unwrap();
    assert_eq!(d.default_priority_level, 2);
    for (text, key) in [
        (
            "priority_levels = 2\ndefault_priority_level = 3",
            "default_priority_level",
        ),
        ("default_priority_level = 1", "default_priority_level"),
        ("priority_levels = 1000000", "priority_levels"),
        (
            "[dynamic_batching.default_queue_policy]\ntimeout_action = \"drop\"",
            "timeout_action",
        ),
        (
            "[dynamic_batching.default_queue_policy]\ndefault_timeout_us = 99999999999",
            "default_timeout_us",
        ),
        (
            "max_queue_size = 2\n[dynamic_batching.default_queue_policy]\nmax_queue_size = 3",
            "max_queue_size",
        ),
        (
            "[dynamic_batching.default_queue_policy]\npriority = 1",
            "priority",
        ),
    ] {
        let e = parse(&format!("max_batch_size = 4\n[dynamic_batching]\n{text}\n")).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn unset_max_batch_size_differs_from_zero() {
    // Unset is left to auto-complete; an explicit 0 turns batching (and auto-complete) off.
    assert_eq!(parse("").unwrap().max_batch_size, None);
    assert_eq!(
        parse("max_batch_size = 0\n").unwrap().max_batch_size,
        Some(0)
    );
    assert!(parse("max_batch_size = 0\n[dynamic_batching]\n")
        .unwrap_err()
        .contains("needs max_batch_size"));
}

/// An empty `[dynamic_batching]` is Triton's `dynamic_batching {}`: no queue delay (a
/// batch takes what is queued and waits for nothing more), no preferred sizes, no queue
/// policy.
#[test]
fn empty_dynamic_batching_is_the_default() {
    let c = parse("max_batch_size = 4\n[dynamic_batching]\n").unwrap();
    assert_eq!(c.dynamic_batching, Some(DynamicBatching::default()));
    let b = c.dynamic_batching.unwrap();
    assert_eq!(b.max_queue_delay_us, 0);
    assert!(b.preferred_batch_size.is_empty());
    assert!(!b.shapes_queue());
    assert!(
        parse("max_batch_size = 4\n[dynamic_batching]\nmax_queue_size = 2\n")
            .unwrap()
            .dynamic_batching
            .unwrap()
            .shapes_queue()
    );
}
