//! Dynamic batching and instances against the real server: results split back to the right
//! requests under concurrent, mixed-size load; a full queue refuses at once; batching a
//! model without a batch dimension fails its load with the reason.

mod common;

use common::{
    append_config, assert_error, copy_dir, model_source, prepend_config, repo_with, Server,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `rows` distinct digit-like rows (values 0..=16) for request `seed`.
fn rows(seed: usize, rows: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            (0..64)
                .map(|i| ((seed * 131 + r * 17 + i * 7) % 17) as f32)
                .collect()
        })
        .collect()
}

fn request(data: &[Vec<f32>]) -> Value {
    json!({"inputs": [{"name": "input", "shape": [data.len(), 64], "datatype": "FP32", "data": data}]})
}

#[test]
fn batches_split_back_to_the_right_requests() {
    let repo = repo_with(&["digits"]);
    copy_dir(&model_source("digits"), &repo.path().join("plain"));
    prepend_config(repo.path(), "digits", "max_batch_size = 8\ninstances = 2");
    append_config(
        repo.path(),
        "digits",
        "[dynamic_batching]\nmax_queue_delay_us = 20000\npreferred_batch_size = [8]",
    );
    let server = Server::start(repo, &[]);
    let (_, config) = server.get("/v2/models/digits/config");
    assert_eq!(config["max_batch_size"], 8, "{config}");
    assert_eq!(
        config["dynamic_batching"]["max_queue_delay_microseconds"], 20000,
        "{config}"
    );
    assert_eq!(config["instance_group"][0]["count"], 2, "{config}");

    let threads = 8;
    let per_thread = 6;
    std::thread::scope(|s| {
        for t in 0..threads {
            let server = &server;
            s.spawn(move || {
                for i in 0..per_thread {
                    let data = rows(t * 100 + i, 1 + (t + i) % 3);
                    let body = request(&data);
                    let expected = server.infer_ok("plain", &body);
                    let got = server.infer_ok("digits", &body);
                    assert_eq!(
                        got["outputs"][1]["data"], expected["outputs"][1]["data"],
                        "labels of thread {t} request {i}"
                    );
                    assert_eq!(got["outputs"][0]["shape"], json!([data.len(), 10]));
                    let (g, e) = (&got["outputs"][0]["data"], &expected["outputs"][0]["data"]);
                    for (a, b) in g.as_array().unwrap().iter().zip(e.as_array().unwrap()) {
                        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                        assert!(
                            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                            "thread {t} request {i}: {a} vs {b}"
                        );
                    }
                }
            });
        }
    });

    let (_, stats) = server.get("/v2/models/digits/stats");
    let s = &stats["model_stats"][0];
    let requests = (threads * per_thread) as u64;
    let executions = s["execution_count"].as_u64().unwrap();
    assert_eq!(
        s["inference_stats"]["success"]["count"].as_u64(),
        Some(requests),
        "{stats}"
    );
    assert!(
        executions < requests,
        "no request was batched: {executions} executions for {requests} requests"
    );
    let (_, metrics) = server.request("GET", "/metrics", None, None);
    let text = metrics
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| metrics.to_string());
    assert!(
        text.contains("scoria_batch_size_count{model=\"digits\",version=\"1\"}"),
        "{text}"
    );
}

#[test]
fn a_full_queue_answers_503_at_once() {
    let repo = repo_with(&["resnet"]);
    prepend_config(repo.path(), "resnet", "max_batch_size = 1");
    append_config(
        repo.path(),
        "resnet",
        "[dynamic_batching]\nmax_queue_delay_us = 0\nmax_queue_size = 1",
    );
    let server = Server::start(repo, &[]);
    let image: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| (i % 255) as f32 / 255.0)
        .collect();
    let body = json!({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": image}]});
    let results: Vec<(u16, Value, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (server, body) = (&server, &body);
                s.spawn(move || {
                    let started = Instant::now();
                    let (status, v) = server.post("/v2/models/resnet/infer", &body.to_string());
                    (status, v, started.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let full: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(!ok.is_empty(), "no request succeeded: {results:?}");
    assert!(!full.is_empty(), "the queue never filled: {results:?}");
    for r in &full {
        assert_error((r.0, r.1.clone()), 503, "queue full");
    }
    let slowest_ok = ok.iter().map(|r| r.2).max().unwrap();
    let fastest_full = full.iter().map(|r| r.2).min().unwrap();
    assert!(
        fastest_full < slowest_ok,
        "503 took {fastest_full:?}, longer than a served request ({slowest_ok:?})"
    );
    // Still serving.
    assert_eq!(
        server.post("/v2/models/resnet/infer", &body.to_string()).0,
        200
    );

    // Through the score hook, a full queue is the same 503 (it was a 500 naming the hook).
    let nested: Vec<Vec<Vec<f32>>> = image
        .chunks(224 * 224)
        .map(|plane| plane.chunks(224).map(<[f32]>::to_vec).collect())
        .collect();
    let score_body = json!({ "data": nested }).to_string();
    let statuses: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| server.post("/models/resnet/score", &score_body)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|(s, _)| *s == 200), "{statuses:?}");
    let full: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!full.is_empty(), "the queue never filled: {statuses:?}");
    for (s, v) in full {
        assert_error((*s, v.clone()), 503, "queue full");
    }
}

#[test]
fn batching_needs_a_batch_dimension() {
    let repo = repo_with(&["add_fixed", "digits"]);
    prepend_config(repo.path(), "add_fixed", "max_batch_size = 2");
    append_config(
        repo.path(),
        "add_fixed",
        "[dynamic_batching]\nmax_queue_delay_us = 100",
    );
    let server = Server::start(repo, &["--strict-readiness=false"]);
    let msg = assert_error(
        server.get("/v2/models/add_fixed/ready"),
        503,
        "dynamic_batching needs a batch dimension",
    );
    assert!(msg.contains("'a'"), "{msg}");
    let row = rows(1, 1);
    server.infer_ok("digits", &request(&row));
}

/// LeNet on tract: batch 1's plan packs convolution patches image by image, which tract's
/// batched plans cannot, so a batched request runs row by row and dynamic batches hold one
/// row. Concurrent requests of 1–3 rows each answer exactly as each of their rows sent
/// alone to the same model without batching.
#[test]
fn a_convolutional_model_answers_batched_requests_row_by_row() {
    let repo = repo_with(&["lenet"]);
    copy_dir(&model_source("lenet"), &repo.path().join("plain"));
    prepend_config(repo.path(), "plain", "max_batch_size = 0");
    prepend_config(repo.path(), "lenet", "max_batch_size = 8");
    append_config(
        repo.path(),
        "lenet",
        "[dynamic_batching]\nmax_queue_delay_us = 2000\npreferred_batch_size = [8]",
    );
    let server = Server::start(repo, &[]);
    let image = |seed: usize| -> Vec<f32> {
        (0..28 * 28)
            .map(|i| ((seed * 131 + i * 7) % 23) as f32 / 23.0)
            .collect()
    };
    std::thread::scope(|s| {
        for t in 0..4 {
            let server = &server;
            s.spawn(move || {
                for i in 0..3 {
                    let n = 1 + (t + i) % 3;
                    let images: Vec<Vec<f32>> = (0..n).map(|r| image(t * 10 + i * 3 + r)).collect();
                    let body = json!({"inputs": [{"name": "input", "shape": [n, 1, 28, 28],
                        "datatype": "FP32", "data": images}]});
                    let got = server.infer_ok("lenet", &body);
                    assert_eq!(got["outputs"][0]["shape"], json!([n, 10]));
                    let mut alone = Vec::new();
                    for img in &images {
                        let one = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                            "datatype": "FP32", "data": img}]});
                        let answer = server.infer_ok("plain", &one);
                        alone.extend(answer["outputs"][0]["data"].as_array().unwrap().clone());
                    }
                    assert_eq!(
                        got["outputs"][0]["data"],
                        json!(alone),
                        "thread {t} request {i}"
                    );
                }
            });
        }
    });
}

/// The value of the sample `name` (with its labels, as rendered) in the server's `/metrics`.
fn metric(server: &Server, sample: &str) -> Option<f64> {
    let (_, metrics) = server.request("GET", "/metrics", None, None);
    let text = metrics.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// `scoria_pending_requests` (what autoscalers read) counts a model's requests from arrival
/// to answer — here four waiting in the batching queue — and returns to 0;
/// `scoria_inflight_requests` counts every request the server is handling.
#[test]
fn pending_requests_rise_under_load_and_return_to_zero() {
    let repo = repo_with(&["digits"]);
    prepend_config(repo.path(), "digits", "max_batch_size = 8");
    append_config(
        repo.path(),
        "digits",
        "[dynamic_batching]\nmax_queue_delay_us = 1500000\npreferred_batch_size = [8]",
    );
    let server = Server::start(repo, &[]);
    let pending = r#"scoria_pending_requests{model="digits"}"#;
    assert_eq!(metric(&server, pending), Some(0.0));
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let server = &server;
                s.spawn(move || server.infer_ok("digits", &request(&rows(i, 1))))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = (0.0, 0.0);
        while Instant::now() < deadline && seen.0 < 4.0 {
            seen = (
                metric(&server, pending).unwrap_or(0.0),
                metric(&server, "scoria_inflight_requests").unwrap_or(0.0),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The four requests wait for a batch of 8 up to 1.5 s: all are pending, and the
        // server handles them plus this /metrics request.
        assert_eq!(seen.0, 4.0, "pending never reached 4");
        assert!(seen.1 >= 5.0, "in flight: {}", seen.1);
        for c in clients {
            c.join().unwrap();
        }
    });
    assert_eq!(metric(&server, pending), Some(0.0));
    assert_eq!(metric(&server, "scoria_inflight_requests"), Some(1.0));
}

/// `--max-inflight 2`: under a burst of 6 requests, 2 are admitted (they wait for a batch)
/// and the other 4 are refused at once with 503 and `Retry-After`, before the admitted ones
/// finish; health and metrics are never refused, and afterwards requests are admitted again.
#[test]
fn max_inflight_refuses_a_burst_at_once() {
    let repo = repo_with(&["digits"]);
    prepend_config(repo.path(), "digits", "max_batch_size = 8");
    append_config(
        repo.path(),
        "digits",
        "[dynamic_batching]\nmax_queue_delay_us = 1500000\npreferred_batch_size = [8]",
    );
    let server = Server::start(repo, &["--max-inflight", "2"]);
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let url = server.url("/v2/models/digits/infer");
    let body = request(&rows(1, 1)).to_string();
    let outcomes: Vec<(u16, Option<String>, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (client, url, body) = (&client, &url, &body);
                s.spawn(move || {
                    let r = client.post(url.as_str()).body(body.clone()).send().unwrap();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap_or_default().to_string());
                    (r.status().as_u16(), retry, Instant::now())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(server.get("/v2/health/ready").0, 200);
        assert_eq!(server.request("GET", "/metrics", None, None).0, 200);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let admitted: Vec<_> = outcomes.iter().filter(|o| o.0 == 200).collect();
    let refused: Vec<_> = outcomes.iter().filter(|o| o.0 == 503).collect();
    assert_eq!((admitted.len(), refused.len()), (2, 4), "{outcomes:?}");
    assert!(
        refused.iter().all(|o| o.1.as_deref() == Some("1")),
        "{outcomes:?}"
    );
    let first_admitted = admitted.iter().map(|o| o.2).min().unwrap();
    assert!(refused.iter().all(|o| o.2 < first_admitted), "{outcomes:?}");
    let (status, body) = server.post("/v2/models/digits/infer", &body);
    assert_eq!(status, 200, "{body}");
}

/// v2's `parameters.priority` and `parameters.timeout` reach the queue policy: a request
/// whose (overriding) timeout expires while it waits for a batch is refused with 503 and
/// never runs (no execution counted); an unknown priority level is a 400; the configured
/// policy shows in `/config`.
#[test]
fn request_priority_and_timeout_reach_the_queue_policy() {
    let repo = repo_with(&["digits"]);
    prepend_config(repo.path(), "digits", "max_batch_size = 8");
    append_config(
        repo.path(),
        "digits",
        "[dynamic_batching]\nmax_queue_delay_us = 200000\npreferred_batch_size = [8]\n\
         priority_levels = 2\n[dynamic_batching.default_queue_policy]\n\
         allow_timeout_override = true\n",
    );
    let server = Server::start(repo, &[]);
    let with = |parameters: Value| {
        let mut body = request(&rows(3, 1));
        body["parameters"] = parameters;
        server.post("/v2/models/digits/infer", &body.to_string())
    };
    let msg = assert_error(with(json!({"timeout": 1})), 503, "timed out");
    assert!(msg.contains("queue"), "{msg}");
    let (_, stats) = server.get("/v2/models/digits/stats");
    let s = &stats["model_stats"][0];
    assert_eq!(
        s["execution_count"], 0,
        "the timed-out request ran: {stats}"
    );
    assert_error(
        with(json!({"priority": 5})),
        400,
        "priority 5 is not a priority level",
    );
    let (status, body) = with(json!({"priority": 1, "timeout": 10_000_000}));
    assert_eq!(status, 200, "{body}");
    let (_, config) = server.get("/v2/models/digits/config");
    let b = &config["dynamic_batching"];
    assert_eq!(b["priority_levels"], 2, "{config}");
    assert_eq!(
        b["default_queue_policy"]["allow_timeout_override"], true,
        "{config}"
    );
    assert_eq!(
        b["default_queue_policy"]["timeout_action"], "REJECT",
        "{config}"
    );
}

/// Triton's auto-complete: a model whose config.toml sets no max_batch_size and whose every
/// input and output leads with a dynamic dimension is served with `--default-max-batch-size`
/// (4) and the dynamic batcher, and `/config` says so (dims without the batch dimension, as
/// perf_analyzer reads them); `max_batch_size = 0` keeps it off, an explicit size keeps its
/// choice of no batcher, a model with a fixed first dimension is not batched (the log says
/// why) and `--default-max-batch-size 0` turns it off.
#[test]
fn bare_models_are_auto_completed() {
    let repo = repo_with(&["digits", "add_fixed"]);
    for (name, config) in [("off", "max_batch_size = 0"), ("two", "max_batch_size = 2")] {
        copy_dir(&model_source("digits"), &repo.path().join(name));
        prepend_config(repo.path(), name, config);
    }
    let server = Server::start(repo, &[]);
    let config = |model: &str| {
        let (status, config) = server.get(&format!("/v2/models/{model}/config"));
        assert_eq!(status, 200, "{config}");
        config
    };
    let digits = config("digits");
    assert_eq!(digits["max_batch_size"], 4, "{digits}");
    assert_eq!(digits["input"][0]["dims"], json!([64]), "{digits}");
    assert_eq!(digits["output"][0]["dims"], json!([10]), "{digits}");
    let batching = &digits["dynamic_batching"];
    assert_eq!(batching["max_queue_delay_microseconds"], 0, "{digits}");
    assert_eq!(batching["preferred_batch_size"], json!([]), "{digits}");
    // The completed limit holds, and requests are batched (as one or more executions).
    server.infer_ok("digits", &request(&rows(1, 4)));
    assert_error(
        server.post("/v2/models/digits/infer", &request(&rows(1, 5)).to_string()),
        400,
        "batch size 5 exceeds the model's max_batch_size 4",
    );

    let off = config("off");
    assert_eq!(off["max_batch_size"], 0, "{off}");
    assert_eq!(off["input"][0]["dims"], json!([-1, 64]), "{off}");
    assert!(off.get("dynamic_batching").is_none(), "{off}");
    server.infer_ok("off", &request(&rows(1, 5)));

    let two = config("two");
    assert_eq!(two["max_batch_size"], 2, "{two}");
    assert!(two.get("dynamic_batching").is_none(), "{two}");

    let fixed = config("add_fixed");
    assert_eq!(fixed["max_batch_size"], 0, "{fixed}");
    assert_eq!(fixed["input"][0]["dims"], json!([2, 2]), "{fixed}");
    assert!(fixed.get("dynamic_batching").is_none(), "{fixed}");
    let log = server.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("model 'add_fixed' is not auto-batched")
                && l.contains("input 'a'")
                && l.contains("first dimension is fixed")),
        "{log}"
    );

    let server = Server::start(repo_with(&["digits"]), &["--default-max-batch-size", "0"]);
    let (_, digits) = server.get("/v2/models/digits/config");
    assert_eq!(digits["max_batch_size"], 0, "{digits}");
    assert!(digits.get("dynamic_batching").is_none(), "{digits}");
    server.infer_ok("digits", &request(&rows(1, 5)));

    let server = Server::start(repo_with(&["digits"]), &["--default-max-batch-size", "16"]);
    let (_, digits) = server.get("/v2/models/digits/config");
    assert_eq!(digits["max_batch_size"], 16, "{digits}");
    server.infer_ok("digits", &request(&rows(1, 16)));
}
