//! Telemetry, Prometheus metrics and desired configuration.

use super::*;

/// A broker and an edge module serving digits with telemetry every 0.5 s and Prometheus
/// metrics on the returned address.
fn metrics_edge(client_id: &str) -> (Broker, (Edge, [tempfile::TempDir; 2]), String) {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let edge = start_digits_edge(
        repo.path(),
        &broker,
        client_id,
        &tmp,
        &["--telemetry-interval", "0.5", "--metrics", &metrics_addr],
    );
    (broker, (edge, [repo, tmp]), metrics_addr)
}

#[test]
fn telemetry_at_the_interval_and_prometheus_metrics() {
    let (broker, _edge, metrics_addr) = metrics_edge("edge-tel");
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
    let text = metrics_text(&metrics_addr);
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
    let edge = start_digits_edge(repo.path(), &broker, "edge-cfg", &tmp, &["--protocol", "5"]);
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
fn alert_thresholds_mark_results() {
    let (broker, _edge, metrics_addr) = metrics_edge("edge-alerts");
    let mut c = Peer::connect(broker.port, "alerts-client", false);
    c.subscribe("scoria/out/digits");
    c.subscribe("scoria/reported");
    c.subscribe("scoria/telemetry");
    // Scores image `i` of digits_request under id `id`: the result message.
    let score = |c: &mut Peer, i: u64, id: u64| -> Value {
        let mut req = digits_request(i);
        req["id"] = json!(id);
        c.publish("scoria/in/digits", req.to_string(), false, None);
        c.take(WAIT, |m| {
            m.topic == "scoria/out/digits" && m.json()["id"] == id
        })
        .expect("result")
        .json()
    };
    // Publishes a desired document: the reported answer.
    let configure = |c: &mut Peer, doc: Value| -> Value {
        c.publish("scoria/config", doc.to_string(), false, None);
        c.take(WAIT, |m| m.topic == "scoria/reported")
            .expect("reported")
            .json()
    };
    let images = 0..17u64;
    let probabilities: Vec<f64> = images
        .clone()
        .map(|i| {
            let r = score(&mut c, i, i);
            assert!(r.get("alert").is_none(), "no thresholds yet: {r}");
            r["result"]["predictions"][0]["probability"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // A threshold half way between two neighbouring probabilities, so some results are
    // below it and some above.
    let mut sorted = probabilities.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let threshold = (sorted[mid - 1] + sorted[mid]) / 2.0;
    let below = probabilities.iter().filter(|p| **p < threshold).count();
    assert!(
        below > 0 && below < probabilities.len(),
        "{probabilities:?}"
    );

    let rep = configure(
        &mut c,
        json!({"$version": 3, "models": {"digits": {"thresholds": {"probability": {"below": threshold}}}}}),
    );
    assert_eq!(rep["status"], "applied", "{rep}");
    assert_eq!(
        rep["models"]["digits"]["thresholds"],
        json!({"probability": {"below": threshold}}),
        "{rep}"
    );
    assert_eq!(rep["models"]["digits"]["pinned"], false, "{rep}");
    let want_alert = format!("probability below {threshold}");
    for (i, p) in images.clone().zip(&probabilities) {
        let r = score(&mut c, i, 100 + i);
        let alert = *p < threshold;
        assert_eq!(
            r["alert"], alert,
            "probability {p}, threshold {threshold}: {r}"
        );
        if alert {
            assert_eq!(r["alerts"], json!([want_alert]), "{r}");
        } else {
            assert!(r.get("alerts").is_none(), "{r}");
        }
        // The result itself is untouched.
        assert_eq!(
            r["result"]["predictions"][0]["probability"],
            json!(p),
            "{r}"
        );
    }
    let tick = c
        .take(WAIT, |m| {
            m.topic == "scoria/telemetry" && m.json()["models"]["digits"]["out"] == 34
        })
        .expect("telemetry after the scored requests")
        .json();
    assert_eq!(tick["models"]["digits"]["alerts"], below, "{tick}");
    let text = metrics_text(&metrics_addr);
    assert!(
        text.contains(&format!(
            r#"scoria_edge_alerts_total{{model="digits"}} {below}"#
        )),
        "{text}"
    );

    // Invalid thresholds are rejected whole; `null` clears them.
    let rep = configure(
        &mut c,
        json!({"models": {"digits": {"thresholds": {"probability": {"below": "low"}}}}}),
    );
    assert_eq!(rep["status"], "rejected", "{rep}");
    assert!(
        rep["reason"]
            .as_str()
            .unwrap()
            .contains("models.digits.thresholds.probability.below must be a number"),
        "{rep}"
    );
    assert!(rep["models"]["digits"]["thresholds"].is_object(), "{rep}");
    let rep = configure(&mut c, json!({"models": {"digits": {"thresholds": null}}}));
    assert_eq!(rep["status"], "applied", "{rep}");
    assert!(rep["models"]["digits"].get("thresholds").is_none(), "{rep}");
    assert!(score(&mut c, 0, 200).get("alert").is_none());
}
