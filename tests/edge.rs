//! The edge module against a real mosquitto broker: `scoria edge` as a child process, MQTT
//! 3.1.1 and 5 test clients (rumqttc). Covers round trips per sample model, correlation data,
//! bad input, broker restart and module kill -9 without loss, telemetry, desired
//! configuration and refused credentials.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use common::{prepend_config, repo_with};
use mqtt::{free_port, Broker, Edge, Peer, Received};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn digits_request(id: u64) -> Value {
    json!({"id": id, "data": (0..64).map(|i| ((i + id) % 17) as f64).collect::<Vec<_>>()})
}

fn image(channels: usize, side: usize) -> Value {
    let row: Vec<f64> = (0..side).map(|i| (i % 7) as f64 / 7.0).collect();
    let plane: Vec<Value> = (0..side).map(|_| json!(row)).collect();
    if channels == 1 {
        json!(plane)
    } else {
        json!((0..channels).map(|_| json!(plane)).collect::<Vec<_>>())
    }
}

fn outbox_dir(tmp: &tempfile::TempDir) -> String {
    tmp.path().join("outbox").display().to_string()
}

/// Sends `n` digits requests (ids `from..from+n`) and waits for the broker's acks.
fn send_digits(peer: &mut Peer, from: u64, n: u64, acked_before: usize) {
    for id in from..from + n {
        peer.publish(
            "scoria/in/digits",
            digits_request(id).to_string(),
            false,
            None,
        );
    }
    peer.wait_pubacks(acked_before + n as usize, WAIT);
}

/// Asserts every id in `ids` got a result and that, per id, at most one result is not
/// marked `"duplicate": true`.
fn assert_each_once(results: &[Received], ids: std::ops::Range<u64>, logs: &dyn Fn() -> String) {
    let mut by_id: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for r in results {
        let v = r.json();
        assert!(v.get("result").is_some(), "not a success: {v}");
        let id = v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"));
        let e = by_id.entry(id).or_default();
        e.0 += 1;
        // Marked by the module, or resent by the broker (DUP flag: a QoS 1 retransmission
        // of the same message to this client, which the module cannot mark).
        if v.get("duplicate") != Some(&json!(true)) && !r.dup {
            e.1 += 1;
        }
    }
    let missing: Vec<u64> = ids.clone().filter(|id| !by_id.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} results lost: {:?}\n{}",
        missing.len(),
        ids.count(),
        missing,
        logs()
    );
    let unmarked: Vec<_> = by_id.iter().filter(|(_, (_, u))| *u > 1).collect();
    assert!(
        unmarked.is_empty(),
        "unmarked duplicates: {unmarked:?}: {:?}",
        results
            .iter()
            .filter(|r| unmarked.iter().any(|(id, _)| r.json()["id"] == **id))
            .map(|r| (
                r.dup,
                String::from_utf8_lossy(&r.payload)
                    .chars()
                    .take(80)
                    .collect::<String>()
            ))
            .collect::<Vec<_>>()
    );
}

fn distinct_ids(base: &[Received], results: &[Received]) -> usize {
    base.iter()
        .chain(results)
        .filter_map(|r| r.json()["id"].as_u64())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn round_trip_each_sample_model_over_mqtt5_with_correlation_data() {
    let broker = Broker::start();
    let repo = repo_with(&["digits", "lenet", "resnet"]);
    let tmp = tempfile::tempdir().unwrap();
    let _edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--protocol",
            "5",
            "--model",
            "digits",
            "--model",
            "lenet",
            "--model",
            "resnet:1",
            "--client-id",
            "edge-rt5",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    // An MQTT 3.1.1 client and an MQTT 5 client talk to the MQTT 5 module.
    let mut c3 = Peer::connect(broker.port, "rt5-client3", false);
    c3.subscribe("scoria/out/#");
    let mut c5 = Peer::connect(broker.port, "rt5-client5", true);
    c5.subscribe("scoria/out/#");
    c5.subscribe("replies/#");
    let cases = [
        (
            "digits",
            json!({"id": "d1", "data": digits_request(1)["data"]}),
        ),
        ("lenet", json!({"id": "l1", "data": image(1, 28)})),
        ("resnet", json!({"id": "r1", "data": image(3, 224)})),
    ];
    for (model, req) in &cases {
        let id = req["id"].as_str().unwrap();
        c3.publish(&format!("scoria/in/{model}"), req.to_string(), false, None);
        let got = c3
            .take(WAIT, |m| m.json()["id"] == id)
            .unwrap_or_else(|| panic!("no result for {model}"));
        assert_eq!(got.topic, format!("scoria/out/{model}"));
        let v = got.json();
        assert_eq!(v["model"], *model);
        assert_eq!(v["version"], 1);
        assert!(v["result"]["predictions"].is_array(), "{model}: {v}");
        assert!(v.get("duplicate").is_none(), "{v}");

        // MQTT 5: correlation data comes back with the result on the out topic...
        let id5 = format!("{id}-v5");
        let mut req5 = req.clone();
        req5["id"] = json!(id5);
        let corr = format!("corr-{model}").into_bytes();
        c5.publish(
            &format!("scoria/in/{model}"),
            req5.to_string(),
            false,
            Some(("", &corr)),
        );
        let got = c5
            .take(WAIT, |m| {
                m.topic.starts_with("scoria/out/") && m.json()["id"] == id5.as_str()
            })
            .expect("v5 result");
        assert_eq!(got.correlation.as_deref(), Some(&corr[..]), "{model}");
        // ...or on the response topic the request names.
        let id5r = format!("{id}-v5r");
        req5["id"] = json!(id5r);
        c5.publish(
            &format!("scoria/in/{model}"),
            req5.to_string(),
            false,
            Some((&format!("replies/{model}"), b"xyz")),
        );
        let got = c5
            .take(WAIT, |m| m.topic.starts_with("replies/"))
            .expect("result on the response topic");
        assert_eq!(got.topic, format!("replies/{model}"));
        assert_eq!(got.json()["id"], id5r.as_str());
        assert_eq!(got.correlation.as_deref(), Some(&b"xyz"[..]));
    }
    // The retained status says online.
    let mut watcher = Peer::connect(broker.port, "rt5-status", false);
    watcher.subscribe("scoria/status");
    let status = watcher
        .take(WAIT, |m| m.topic == "scoria/status")
        .expect("status");
    assert!(status.retain);
    assert_eq!(status.json()["state"], "online");
}

#[test]
fn round_trip_over_mqtt311_and_bad_input_gets_error_results() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--protocol",
            "3.1.1",
            "--model",
            "digits",
            "--client-id",
            "edge-bad",
            "--outbox",
            &outbox_dir(&tmp),
            "--max-message-size",
            "4KiB",
        ],
    );
    let mut c = Peer::connect(broker.port, "bad-client", false);
    c.subscribe("scoria/out/#");
    let error_for = |c: &mut Peer, topic: &str, payload: Vec<u8>, want_topic: &str| -> Value {
        c.publish(topic, payload, false, None);
        let got = c
            .take(WAIT, |m| m.topic == want_topic)
            .unwrap_or_else(|| panic!("no answer on {want_topic}\n{}", edge.stderr()));
        let v = got.json();
        assert!(
            v.get("error").is_some(),
            "expected an error result, got {v}"
        );
        v
    };
    let v = error_for(
        &mut c,
        "scoria/in/digits",
        b"not json {".to_vec(),
        "scoria/out/digits",
    );
    assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");
    let v = error_for(
        &mut c,
        "scoria/in/nosuch",
        br#"{"id": 5, "data": [1]}"#.to_vec(),
        "scoria/out/nosuch",
    );
    assert_eq!(v["id"], 5);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown model 'nosuch'"),
        "{v}"
    );
    let big = json!({"id": 6, "data": vec![1.0; 2000]})
        .to_string()
        .into_bytes();
    let v = error_for(&mut c, "scoria/in/digits", big, "scoria/out/digits");
    assert!(v["error"].as_str().unwrap().contains("size limit"), "{v}");
    // Rejected by the score hook: the hook's message, with the id.
    let v = error_for(
        &mut c,
        "scoria/in/digits",
        br#"{"id": 7, "data": [1, 2]}"#.to_vec(),
        "scoria/out/digits",
    );
    assert_eq!(v["id"], 7);
    assert!(
        v["error"].as_str().unwrap().contains("64 pixel values"),
        "{v}"
    );
    // Still serving.
    c.publish(
        "scoria/in/digits",
        digits_request(8).to_string(),
        false,
        None,
    );
    let ok = c
        .take(WAIT, |m| m.json()["id"] == 8)
        .expect("result after bad input")
        .json();
    assert!(ok["result"]["predictions"][0]["label"].is_string(), "{ok}");
    // An MQTT 5 client's correlation data cannot cross a 3.1.1 module, but its request does.
    let mut c5 = Peer::connect(broker.port, "bad-client5", true);
    c5.subscribe("scoria/out/digits");
    c5.publish(
        "scoria/in/digits",
        digits_request(9).to_string(),
        false,
        Some(("", b"c")),
    );
    assert!(c5.take(WAIT, |m| m.json()["id"] == 9).is_some());
}

#[test]
fn broker_restart_mid_stream_loses_no_result() {
    let mut broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "digits",
            "--client-id",
            "edge-restart",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    let mut c = Peer::connect(broker.port, "restart-client", false);
    c.subscribe("scoria/out/digits");
    send_digits(&mut c, 0, 300, 0);
    // Mid-stream: stop the broker while results are still flowing, then start it again.
    let early = c.collect("scoria/out/digits", WAIT, |got| !got.is_empty());
    broker.stop();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    edge.wait_log_count("connected to", 2, WAIT);
    // The test client reconnects by itself (persistent session); send more after the restart.
    std::thread::sleep(Duration::from_millis(500));
    c.subscribe("scoria/out/digits");
    send_digits(&mut c, 300, 100, 0);
    let mut results = early;
    let got = c.collect("scoria/out/digits", WAIT, |got| {
        distinct_ids(&results, got) >= 400
    });
    results.extend(got);
    // Collect a little longer for stragglers beyond the count the predicate saw.
    results.extend(c.collect("scoria/out/digits", Duration::from_millis(300), |_| false));
    assert_each_once(&results, 0..400, &|| {
        format!("edge:\n{}\nbroker:\n{}", edge.stderr(), broker.log())
    });
    assert!(
        edge.stderr().contains("lost the connection"),
        "{}",
        edge.stderr()
    );
}

#[test]
fn module_kill9_mid_stream_and_restart_loses_no_result() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let outbox = outbox_dir(&tmp);
    let args = [
        "--broker",
        &broker.url(),
        "--model",
        "digits",
        "--client-id",
        "edge-kill",
        "--outbox",
        &outbox,
        // One result in flight at a time: results queue up in the outbox behind acknowledged
        // requests, so the kill leaves work that only the outbox can deliver.
        "--inflight",
        "1",
    ];
    let mut edge = Edge::start(repo.path(), &args);
    let mut c = Peer::connect(broker.port, "kill-client", false);
    c.subscribe("scoria/out/digits");
    send_digits(&mut c, 0, 400, 0);
    let mut results = c.collect("scoria/out/digits", WAIT, |got| got.len() >= 20);
    edge.kill9();
    let log_before = edge.stderr();
    drop(edge);
    // Requests keep arriving while the module is down; the broker keeps them for its session.
    send_digits(&mut c, 400, 100, 0);
    let edge = Edge::start(repo.path(), &args);
    let got = c.collect("scoria/out/digits", WAIT, |got| {
        distinct_ids(&results, got) >= 500
    });
    results.extend(got);
    assert!(
        edge.stderr().contains("results from an earlier run"),
        "the kill left nothing in the outbox, so this test did not exercise it:\n{}",
        edge.stderr()
    );
    results.extend(c.collect("scoria/out/digits", Duration::from_millis(300), |_| false));
    assert_each_once(&results, 0..500, &|| edge.stderr());
    assert!(!log_before.contains("panicked"));
    drop(edge);
}

#[test]
fn telemetry_at_the_interval_and_prometheus_metrics() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let _edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "digits",
            "--client-id",
            "edge-tel",
            "--outbox",
            &outbox_dir(&tmp),
            "--telemetry-interval",
            "0.5",
            "--metrics",
            &metrics_addr,
        ],
    );
    let mut c = Peer::connect(broker.port, "tel-client", false);
    c.subscribe("scoria/telemetry");
    c.subscribe("scoria/out/digits");
    send_digits(&mut c, 0, 5, 0);
    c.collect("scoria/out/digits", WAIT, |got| got.len() >= 5);
    let started = std::time::Instant::now();
    let ticks = c.collect("scoria/telemetry", Duration::from_secs(20), |got| {
        got.len() >= 4
    });
    let elapsed = started.elapsed();
    assert!(ticks.len() >= 4, "{} telemetry messages", ticks.len());
    // Four messages at a 0.5 s interval take 1.5 to 2 s after the first; allow for scheduling.
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    let last = ticks.last().unwrap().json();
    assert_eq!(last["models"]["digits"]["in"], 5, "{last}");
    assert_eq!(last["models"]["digits"]["out"], 5, "{last}");
    assert_eq!(last["models"]["digits"]["version"], 1);
    assert!(
        last["models"]["digits"]["latency_ms"]["p99"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(last["rss_bytes"].as_u64().unwrap() > 0);
    assert!(
        last["uptime_s"].is_number() && last["reconnects"] == 0,
        "{last}"
    );
    assert!(last["outbox"]["messages"].is_u64());
    let text = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .unwrap();
    assert!(
        text.contains(r#"scoria_edge_messages_total{kind="in",model="digits"} 5"#),
        "{text}"
    );
    assert!(text.contains("scoria_edge_outbox_messages"), "{text}");
    assert!(text.contains("scoria_edge_reconnects_total 0"), "{text}");
}

#[test]
fn desired_configuration_applied_and_invalid_rejected() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    // A second version of digits, both served.
    common::copy_dir(&repo.path().join("digits/1"), &repo.path().join("digits/2"));
    prepend_config(repo.path(), "digits", "version_policy = { all = true }");
    let tmp = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "digits",
            "--client-id",
            "edge-cfg",
            "--outbox",
            &outbox_dir(&tmp),
            "--protocol",
            "5",
        ],
    );
    let mut c = Peer::connect(broker.port, "cfg-client", false);
    c.subscribe("scoria/reported");
    c.subscribe("scoria/out/digits");
    c.subscribe("scoria/telemetry");
    let score_version = |c: &mut Peer, id: u64| -> Value {
        c.publish(
            "scoria/in/digits",
            digits_request(id).to_string(),
            false,
            None,
        );
        c.take(WAIT, |m| {
            m.topic == "scoria/out/digits" && m.json()["id"] == id
        })
        .expect("result")
        .json()["version"]
            .clone()
    };
    assert_eq!(
        score_version(&mut c, 1),
        2,
        "the highest version serves by default"
    );

    c.publish(
        "scoria/config",
        json!({"$version": 7, "telemetry_interval_s": 0.5, "models": {"digits": {"version": 1}}})
            .to_string(),
        true,
        None,
    );
    let rep = c
        .take(WAIT, |m| m.topic == "scoria/reported")
        .expect("reported")
        .json();
    assert_eq!(rep["$version"], 7, "{rep}");
    assert_eq!(rep["status"], "applied", "{rep}");
    assert_eq!(rep["models"]["digits"]["version"], 1, "{rep}");
    assert_eq!(rep["telemetry_interval_s"], 0.5, "{rep}");
    assert_eq!(score_version(&mut c, 2), 1, "the pinned version serves");
    // The new telemetry interval is in effect.
    let ticks = c.collect("scoria/telemetry", Duration::from_secs(10), |got| {
        got.len() >= 3
    });
    assert!(
        ticks.len() >= 3,
        "telemetry did not speed up: {} messages",
        ticks.len()
    );

    for (bad, want) in [
        (
            json!({"$version": 8, "models": {"digits": {"version": 9}}}).to_string(),
            "no version '9'",
        ),
        (
            json!({"$version": 9, "telemetry_interval_s": -1}).to_string(),
            "telemetry_interval_s",
        ),
        ("this is not json".to_string(), "not JSON"),
    ] {
        c.publish("scoria/config", bad.clone(), false, None);
        let rep = c
            .take(WAIT, |m| m.topic == "scoria/reported")
            .expect("reported")
            .json();
        assert_eq!(rep["status"], "rejected", "{bad}: {rep}");
        assert!(
            rep["reason"].as_str().unwrap().contains(want),
            "{bad}: {rep}"
        );
        // Nothing changed.
        assert_eq!(rep["models"]["digits"]["version"], 1, "{rep}");
        assert_eq!(rep["telemetry_interval_s"], 0.5, "{rep}");
    }
    assert_eq!(score_version(&mut c, 3), 1);
    // The reported document is retained for whoever subscribes later.
    let mut late = Peer::connect(broker.port, "cfg-late", false);
    late.subscribe("scoria/reported");
    let rep = late
        .take(WAIT, |m| m.topic == "scoria/reported")
        .expect("retained reported");
    assert!(rep.retain);
    assert_eq!(rep.json()["status"], "rejected");
    assert!(edge.stderr().contains("rejected desired configuration"));
}

#[test]
fn refused_credentials_exit_with_one_line_reason() {
    let broker = Broker::start_on(free_port(), "allow_anonymous false\n");
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut edge = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "digits",
            "--client-id",
            "edge-cred",
            "--outbox",
            &outbox_dir(&tmp),
            "--username",
            "u",
            "--password",
            "wrong",
        ],
    );
    let status = edge.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", edge.stderr());
    let log = edge.stderr();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("refused the connection"),
        "{log}"
    );
}

#[test]
fn unreachable_broker_is_retried_until_it_comes_up() {
    let port = free_port();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut edge = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &url,
            "--model",
            "digits",
            "--client-id",
            "edge-late",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    edge.wait_log_count("cannot connect to", 2, WAIT);
    assert!(edge.is_running());
    assert!(edge.stderr().contains("retrying in"), "{}", edge.stderr());
    let broker = Broker::start_on(port, "allow_anonymous true\n");
    edge.wait_log("connected to", WAIT);
    let mut c = Peer::connect(broker.port, "late-client", false);
    c.subscribe("scoria/out/digits");
    c.publish(
        "scoria/in/digits",
        digits_request(1).to_string(),
        false,
        None,
    );
    assert!(
        c.take(WAIT, |m| m.json()["id"] == 1).is_some(),
        "{}",
        edge.stderr()
    );
}

#[test]
fn usage_errors_exit_2_and_bad_settings_exit_1() {
    let out = common::scoria_command()
        .args(["edge", "--model", "digits"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--broker is required"), "{err}");
    let out = common::scoria_command()
        .args(["edge", "--broker", "mqtt://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = common::scoria_command()
        .args([
            "edge", "--broker", "http://x", "--model", "digits", "--models",
        ])
        .arg(common::root().join("models"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("mqtt://"), "{err}");
}

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/install-system-deps)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqtts_with_a_ca_file() {
    // A CA and a server certificate for 127.0.0.1 signed by it.
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=scoria test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let tls_port = free_port();
    let broker = Broker::start_on(
        free_port(),
        &format!(
            "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            d.display()
        ),
    );
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = d.join("ca.pem").display().to_string();
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let _edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &url,
            "--ca-file",
            &ca,
            "--model",
            "digits",
            "--client-id",
            "edge-tls",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    let mut c = Peer::connect(broker.port, "tls-client", false);
    c.subscribe("scoria/out/digits");
    c.publish(
        "scoria/in/digits",
        digits_request(1).to_string(),
        false,
        None,
    );
    assert!(c.take(WAIT, |m| m.json()["id"] == 1).is_some());
    // A broker certificate the CA file does not vouch for is not trusted.
    let other = tempfile::tempdir().unwrap();
    openssl(
        other.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other",
        ],
    );
    let other_ca = other.path().join("other.pem").display().to_string();
    let tmp2 = tempfile::tempdir().unwrap();
    let mut untrusting = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &url,
            "--ca-file",
            &other_ca,
            "--model",
            "digits",
            "--client-id",
            "edge-tls2",
            "--outbox",
            &outbox_dir(&tmp2),
        ],
    );
    untrusting.wait_log("cannot connect to", WAIT);
    assert!(
        untrusting.stderr().to_lowercase().contains("certificate"),
        "{}",
        untrusting.stderr()
    );
}

#[test]
fn iothub_preset_topics_method_and_twin_through_a_real_broker() {
    // mosquitto stands in for IoT Hub: it checks no SAS token, but carries the preset's
    // topics, so inputs, events, the direct method and the twin are exercised end to end.
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let conn = "HostName=hub.azure-devices.net;DeviceId=dev1;ModuleId=scoria;SharedAccessKey=c2NvcmlhLXRlc3Qta2V5LTAxMjM0NTY3ODkwMTIzNDU2Nzg5";
    let edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--preset",
            "iothub",
            "--iothub-connection-string",
            conn,
            "--model",
            "digits",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    assert!(
        edge.stderr().contains("as 'dev1/scoria'"),
        "{}",
        edge.stderr()
    );
    let mut c = Peer::connect(broker.port, "hub-side", false);
    c.subscribe("devices/dev1/modules/scoria/messages/events/#");
    c.subscribe("$iothub/methods/res/#");
    c.subscribe("$iothub/twin/PATCH/properties/reported/#");
    c.publish(
        "devices/dev1/modules/scoria/inputs/digits/",
        digits_request(1).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| m.topic.contains("type=result"))
        .expect("result event");
    assert_eq!(
        got.topic,
        "devices/dev1/modules/scoria/messages/events/$.on=results&type=result&model=digits"
    );
    assert_eq!(got.json()["id"], 1);
    c.publish(
        "$iothub/methods/POST/score/?$rid=42",
        json!({"model": "digits", "data": digits_request(2)["data"]}).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| m.topic.starts_with("$iothub/methods/res/"))
        .expect("method response");
    assert_eq!(got.topic, "$iothub/methods/res/200/?$rid=42");
    assert!(
        got.json()["result"]["predictions"].is_array(),
        "{}",
        got.json()
    );
    c.publish(
        "$iothub/twin/PATCH/properties/desired/?$version=5",
        json!({"telemetry_interval_s": 0.5, "$version": 5}).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| {
            m.topic
                .starts_with("$iothub/twin/PATCH/properties/reported/")
        })
        .expect("reported patch");
    let rep = got.json();
    assert_eq!(rep["desired_version"], 5, "{rep}");
    assert_eq!(rep["status"], "applied", "{rep}");
    assert!(rep.get("$version").is_none(), "{rep}");
    let tel = c
        .take(WAIT, |m| m.topic.contains("type=telemetry"))
        .expect("telemetry event");
    assert_eq!(tel.json()["models"]["digits"]["in"], 2, "{}", tel.json());
}
