//! The edge module against a real mosquitto broker: `scoria edge` as a child process, MQTT
//! 3.1.1 and 5 test clients (rumqttc). Covers round trips per sample model, correlation data,
//! bad input, broker restart and module kill -9 without loss, telemetry, desired
//! configuration and refused credentials.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/mqtt.rs"]
mod mqtt;

mod connection;
mod delivery;
mod operations;
mod scoring;
mod sharing;

use common::{prepend_config, repo_with};
use mqtt::{free_port, Broker, Edge, Peer, Received};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn digits_request(id: u64) -> Value {
    json!({"id": id, "data": (0..64).map(|i| ((i + id) % 17) as f64).collect::<Vec<_>>()})
}

pub(crate) fn image(channels: usize, side: usize) -> Value {
    let row: Vec<f64> = (0..side).map(|i| (i % 7) as f64 / 7.0).collect();
    let plane: Vec<Value> = (0..side).map(|_| json!(row)).collect();
    if channels == 1 {
        json!(plane)
    } else {
        json!((0..channels).map(|_| json!(plane)).collect::<Vec<_>>())
    }
}

pub(crate) fn outbox_dir(tmp: &tempfile::TempDir) -> String {
    tmp.path().join("outbox").display().to_string()
}

/// Starts `scoria edge` serving digits from `repo` on `broker` as `client_id`, its outbox in
/// `tmp`, with `extra` flags.
pub(crate) fn start_digits_edge(
    repo: &std::path::Path,
    broker: &Broker,
    client_id: &str,
    tmp: &tempfile::TempDir,
    extra: &[&str],
) -> Edge {
    let url = broker.url();
    let outbox = outbox_dir(tmp);
    let mut args = vec![
        "--broker",
        &url,
        "--model",
        "digits",
        "--client-id",
        client_id,
        "--outbox",
        &outbox,
    ];
    args.extend_from_slice(extra);
    Edge::start(repo, &args)
}

/// The text of `GET http://{addr}/metrics`.
pub(crate) fn metrics_text(addr: &str) -> String {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .unwrap()
}

/// Sends `n` digits requests (ids `from..from+n`) and waits for the broker's acks.
pub(crate) fn send_digits(peer: &mut Peer, from: u64, n: u64, acked_before: usize) {
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
pub(crate) fn assert_each_once(
    results: &[Received],
    ids: std::ops::Range<u64>,
    logs: &dyn Fn() -> String,
) {
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

pub(crate) fn distinct_ids(base: &[Received], results: &[Received]) -> usize {
    base.iter()
        .chain(results)
        .filter_map(|r| r.json()["id"].as_u64())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}
