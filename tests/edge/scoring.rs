//! Round trips per sample model over MQTT 3.1.1 and 5 (correlation data, response topics)
//! and error results for bad input.

use super::*;

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

/// A request over --max-message-size gets an error result and is acknowledged like any other:
/// the connection is not dropped (rumqttc's own packet limit used to error the connection, so
/// the broker redelivered the request forever, later requests waited behind it and earlier
/// ones were scored again).
#[test]
fn oversized_request_gets_an_error_result_and_keeps_the_connection() {
    for v5 in [false, true] {
        let broker = Broker::start();
        let repo = repo_with(&["digits"]);
        let tmp = tempfile::tempdir().unwrap();
        let client_id = if v5 { "edge-big5" } else { "edge-big3" };
        let mut edge = start_digits_edge(
            repo.path(),
            &broker,
            client_id,
            &tmp,
            &[
                "--protocol",
                if v5 { "5" } else { "3.1.1" },
                "--max-message-size",
                "2KiB",
            ],
        );
        let mut c = Peer::connect(broker.port, &format!("{client_id}-client"), v5);
        c.subscribe("scoria/out/digits");
        let big = json!({"id": 2, "data": vec![1.5; 25_000]})
            .to_string()
            .into_bytes();
        assert!(big.len() > 100_000, "{}", big.len());
        c.publish(
            "scoria/in/digits",
            digits_request(1).to_string(),
            false,
            None,
        );
        c.publish("scoria/in/digits", big, false, None);
        c.publish(
            "scoria/in/digits",
            digits_request(3).to_string(),
            false,
            None,
        );
        c.wait_pubacks(3, WAIT);
        let got = c.collect("scoria/out/digits", WAIT, |got| got.len() >= 3);
        // Anything resent (a redelivered request, a reconnect) would arrive soon after.
        std::thread::sleep(Duration::from_secs(2));
        let mut got = got;
        got.extend(c.collect("scoria/out/digits", Duration::from_millis(100), |_| false));
        // Requests are scored concurrently: results come in the order they were ready.
        let mut results: Vec<Value> = got.iter().map(|r| r.json()).collect();
        results.sort_by_key(|v| v["id"].as_u64());
        assert_eq!(results.len(), 3, "v5 {v5}: {results:?}\n{}", edge.stderr());
        assert_eq!(results[0]["id"], 1, "{results:?}");
        assert!(
            results[0]["result"]["predictions"].is_array(),
            "{results:?}"
        );
        assert_eq!(results[1]["id"], 2, "{results:?}");
        let error = results[1]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("size limit") && error.contains("--max-message-size"),
            "{results:?}"
        );
        assert_eq!(results[2]["id"], 3, "{results:?}");
        assert!(
            results[2]["result"]["predictions"].is_array(),
            "{results:?}"
        );
        assert!(
            results.iter().all(|v| v.get("duplicate").is_none()),
            "{results:?}"
        );
        // Still serving on the same connection.
        c.publish(
            "scoria/in/digits",
            digits_request(4).to_string(),
            false,
            None,
        );
        let ok = c
            .take(WAIT, |m| m.json()["id"] == 4)
            .expect("result 4")
            .json();
        assert!(ok["result"]["predictions"].is_array(), "{ok}");
        let log = edge.stderr();
        assert!(
            !log.contains("lost the connection") && !log.contains("cannot connect"),
            "the module reconnected:\n{log}"
        );
        assert!(edge.is_running());
    }
}

/// A model that cannot be served fails alone, as under `scoria serve`: the others are served,
/// its requests get error results saying why; only when no model can be served does the
/// module exit (1), and a --model naming no model at all is still an error at once.
#[test]
fn a_broken_model_fails_alone() {
    let broker = Broker::start();
    let repo = repo_with(&["digits", "lenet"]);
    prepend_config(repo.path(), "lenet", "no_such_key = 1");
    let tmp = tempfile::tempdir().unwrap();
    let edge = start_digits_edge(
        repo.path(),
        &broker,
        "edge-broken",
        &tmp,
        &["--model", "lenet"],
    );
    let log = edge.stderr();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("cannot serve --model lenet")
            && l.contains("no_such_key")),
        "{log}"
    );
    let mut c = Peer::connect(broker.port, "broken-client", false);
    c.subscribe("scoria/out/#");
    c.publish(
        "scoria/in/lenet",
        json!({"id": "l1", "data": image(1, 28)}).to_string(),
        false,
        None,
    );
    c.publish(
        "scoria/in/digits",
        digits_request(1).to_string(),
        false,
        None,
    );
    let err = c
        .take(WAIT, |m| m.topic == "scoria/out/lenet")
        .unwrap_or_else(|| panic!("no answer for lenet\n{}", edge.stderr()))
        .json();
    assert_eq!(err["id"], "l1", "{err}");
    let why = err["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("cannot be served") && why.contains("no_such_key"),
        "{err}"
    );
    let ok = c
        .take(WAIT, |m| m.topic == "scoria/out/digits")
        .expect("digits result")
        .json();
    assert_eq!(ok["id"], 1, "{ok}");
    assert!(ok["result"]["predictions"].is_array(), "{ok}");

    // Nothing to serve: exit 1 with the reason.
    let mut only = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "lenet",
            "--client-id",
            "edge-broken-only",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    assert_eq!(only.wait_exit(WAIT).code(), Some(1), "{}", only.stderr());
    let log = only.stderr();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no model can be served") && last.contains("no_such_key"),
        "{log}"
    );
    // A name the repository does not have: a misconfiguration, exit 1 at once.
    let mut missing = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "digits",
            "--model",
            "nosuch",
            "--client-id",
            "edge-broken-missing",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    assert_eq!(
        missing.wait_exit(WAIT).code(),
        Some(1),
        "{}",
        missing.stderr()
    );
    let log = missing.stderr();
    assert!(log.contains("--model 'nosuch' names no model"), "{log}");
}

#[test]
fn a_response_topic_that_cannot_be_published_to_gets_an_error_and_holds_up_nothing() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let edge = start_digits_edge(
        repo.path(),
        &broker,
        "edge-badrt",
        &tmp,
        &["--protocol", "5"],
    );
    let mut c = Peer::connect(broker.port, "badrt-client", true);
    c.subscribe("scoria/out/digits");
    for (id, topic) in [(1, "replies/#"), (2, "a/+/b")] {
        let mut req = digits_request(id);
        req["id"] = json!(id);
        c.publish(
            "scoria/in/digits",
            req.to_string(),
            false,
            Some((topic, b"c")),
        );
        let got = c
            .take(WAIT, |m| m.json()["id"] == id)
            .unwrap_or_else(|| panic!("no answer to request {id}:\n{}", edge.stderr()));
        assert_eq!(got.topic, "scoria/out/digits");
        let v = got.json();
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("response topic") && error.contains(topic),
            "{v}"
        );
    }
    // Later requests flow as before: nothing waits behind the bad ones.
    send_digits(&mut c, 10, 5, 0);
    let results = c.collect("scoria/out/digits", WAIT, |got| got.len() >= 5);
    assert_each_once(&results, 10..15, &|| edge.stderr());
    assert!(
        !edge.stderr().contains("lost the connection"),
        "{}",
        edge.stderr()
    );
}
