//! At-least-once delivery: a broker restart and a module `kill -9` mid-stream lose nothing.

use super::*;

#[test]
fn broker_restart_mid_stream_loses_no_result() {
    let mut broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut edge = start_digits_edge(repo.path(), &broker, "edge-restart", &tmp, &[]);
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
fn results_the_broker_refuses_stay_in_the_outbox_until_it_takes_them() {
    // The module's user may not publish results at first: mosquitto answers each result's
    // PUBACK with "not authorized" (MQTT 5 reason code 0x87).
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = acl_dir.path().join("acl");
    let rules = |results_allowed: bool| {
        format!(
            "topic readwrite #\n\nuser edge\ntopic read scoria/in/#\ntopic read scoria/config\n\
             topic write scoria/status\ntopic write scoria/telemetry\n\
             topic write scoria/reported\n{}",
            if results_allowed {
                "topic write scoria/out/#\n"
            } else {
                ""
            }
        )
    };
    std::fs::write(&acl, rules(false)).unwrap();
    let broker = Broker::start_on(
        free_port(),
        &format!("allow_anonymous true\nacl_file {}\n", acl.display()),
    );
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut edge = start_digits_edge(
        repo.path(),
        &broker,
        "edge-refused",
        &tmp,
        &[
            "--username",
            "edge",
            "--protocol",
            "5",
            "--outbox-max",
            "5",
            "--telemetry-interval",
            "0.3",
        ],
    );
    let mut c = Peer::connect(broker.port, "refused-client", false);
    c.subscribe("scoria/out/digits");
    c.subscribe("scoria/telemetry");
    send_digits(&mut c, 0, 12, 0);
    edge.wait_log("not authorized (0x87)", WAIT);
    // The refused results stay in the outbox, which fills to its limit: the module stops
    // taking requests (the broker keeps the rest) instead of dropping anything.
    let full = c
        .take(WAIT, |m| {
            m.topic == "scoria/telemetry" && m.json()["outbox"]["messages"] == 5
        })
        .unwrap_or_else(|| panic!("the outbox never held 5 results:\n{}", edge.stderr()))
        .json();
    assert_eq!(full["models"]["digits"]["out"], 5, "{full}");
    std::thread::sleep(Duration::from_millis(500));
    let early = c.collect("scoria/out/digits", Duration::from_millis(100), |_| false);
    assert!(early.is_empty(), "results got through the ACL: {early:?}");

    // Results allowed: every one is delivered, in the end, exactly once.
    std::fs::write(&acl, rules(true)).unwrap();
    broker.reload();
    let results = c.collect("scoria/out/digits", Duration::from_secs(40), |got| {
        distinct_ids(&[], got) >= 12
    });
    assert_each_once(&results, 0..12, &|| {
        format!("edge:\n{}\nbroker:\n{}", edge.stderr(), broker.log())
    });
    let drained = c
        .take(WAIT, |m| {
            m.topic == "scoria/telemetry" && m.json()["outbox"]["messages"] == 0
        })
        .expect("the outbox drained")
        .json();
    assert_eq!(drained["models"]["digits"]["out"], 12, "{drained}");
    assert_eq!(drained["reconnects"], 0, "{drained}");
}

#[test]
fn a_clean_stop_leaves_no_delivered_result_to_resend() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut edge = start_digits_edge(repo.path(), &broker, "edge-stop", &tmp, &[]);
    let mut c = Peer::connect(broker.port, "stop-client", false);
    c.subscribe("scoria/out/digits");
    send_digits(&mut c, 0, 50, 0);
    let results = c.collect("scoria/out/digits", WAIT, |got| got.len() >= 50);
    assert_each_once(&results, 0..50, &|| edge.stderr());
    let status = edge.terminate(WAIT);
    assert!(status.success(), "{status}: {}", edge.stderr());
    drop(edge);
    // The next start finds nothing left over: every delivered result left the outbox.
    let edge = start_digits_edge(repo.path(), &broker, "edge-stop", &tmp, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !edge.stderr().contains("from an earlier run"),
        "{}",
        edge.stderr()
    );
    let again = c.collect("scoria/out/digits", Duration::from_millis(500), |_| false);
    assert!(
        again.is_empty(),
        "resent after a clean stop: {}",
        again.len()
    );
}
