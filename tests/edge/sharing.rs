//! `--share-group`: several modules split one request stream through MQTT shared
//! subscriptions (`$share/G/scoria/in/MODEL`) on a real mosquitto; nothing is lost when a
//! member is killed and restarted, or stopped for good; a broker without shared
//! subscriptions and bad flags are one-line errors.

use crate::common::{repo_with, scoria_command};
use crate::mqtt::{Broker, Edge, Peer, Received};
use crate::{assert_each_once, distinct_ids, outbox_dir, send_digits, WAIT};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const GROUP: &str = "scorers";

fn member(repo: &std::path::Path, broker: &Broker, id: &str, tmp: &tempfile::TempDir) -> Edge {
    let url = broker.url();
    let outbox = outbox_dir(tmp);
    Edge::start(
        repo,
        &[
            "--broker",
            &url,
            "--model",
            "digits",
            "--client-id",
            id,
            "--outbox",
            &outbox,
            "--share-group",
            GROUP,
            "--telemetry-interval",
            "0.2",
        ],
    )
}

/// Requests each member counted (`in`), from the latest telemetry of each client id.
fn shares(telemetry: &[Received]) -> BTreeMap<String, u64> {
    let mut latest = BTreeMap::new();
    for t in telemetry {
        let v: Value = t.json();
        let id = v["client_id"]
            .as_str()
            .expect("telemetry names its client id");
        let count = v["models"]["digits"]["in"].as_u64().unwrap_or(0);
        let e = latest.entry(id.to_string()).or_insert(0);
        *e = (*e).max(count);
    }
    latest
}

#[test]
fn members_split_one_stream_and_lose_nothing_when_killed_or_stopped() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmps: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids = ["member-a", "member-b", "member-c"];
    let mut members: Vec<Option<Edge>> = (0..3)
        .map(|i| Some(member(repo.path(), &broker, ids[i], &tmps[i])))
        .collect();
    let mut c = Peer::connect(broker.port, "share-client", true);
    c.subscribe("scoria/out/digits");
    c.subscribe("scoria/telemetry");
    let logs = |members: &[Option<Edge>]| -> String {
        members
            .iter()
            .flatten()
            .map(Edge::stderr)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    // 1. 1,000 requests: every one answered once, each member served a share.
    let started = Instant::now();
    send_digits(&mut c, 0, 1000, 0);
    let mut results = c.collect("scoria/out/digits", WAIT, |got| {
        distinct_ids(&[], got) >= 1000
    });
    let elapsed = started.elapsed();
    eprintln!(
        "3 members: 1000 results in {:.2} s ({:.0} results/s)",
        elapsed.as_secs_f64(),
        1000.0 / elapsed.as_secs_f64()
    );
    assert_each_once(&results, 0..1000, &|| logs(&members));
    let deadline = Instant::now() + WAIT;
    let mut telemetry = Vec::new();
    let counted = loop {
        telemetry.extend(c.collect("scoria/telemetry", Duration::from_millis(300), |_| false));
        let s = shares(&telemetry);
        if s.values().sum::<u64>() >= 1000 || Instant::now() > deadline {
            break s;
        }
    };
    assert_eq!(
        counted.keys().map(String::as_str).collect::<Vec<_>>(),
        ids,
        "{counted:?}"
    );
    assert_eq!(counted.values().sum::<u64>(), 1000, "{counted:?}");
    for (id, n) in &counted {
        assert!(*n >= 100, "{id} served only {n} of 1000: {counted:?}");
    }

    // 2. A member killed -9 mid-stream and restarted: its share waited in its session.
    send_digits(&mut c, 1000, 300, 1000);
    members[1].as_mut().unwrap().kill9();
    members[1] = None;
    send_digits(&mut c, 1300, 300, 1300);
    members[1] = Some(member(repo.path(), &broker, ids[1], &tmps[1]));
    let got = c.collect("scoria/out/digits", WAIT, |got| {
        distinct_ids(&results, got) >= 1600
    });
    results.extend(got);
    results.extend(c.collect("scoria/out/digits", Duration::from_millis(300), |_| false));
    assert_each_once(&results, 0..1600, &|| logs(&members));

    // 3. A member stopped with SIGTERM leaves the group: the others take every later request.
    let mut stopped = members[2].take().unwrap();
    send_digits(&mut c, 1600, 200, 1600);
    let status = stopped.terminate(WAIT);
    assert!(status.success(), "SIGTERM: {status}\n{}", stopped.stderr());
    send_digits(&mut c, 1800, 200, 1800);
    let got = c.collect("scoria/out/digits", WAIT, |got| {
        distinct_ids(&results, got) >= 2000
    });
    results.extend(got);
    assert_each_once(&results, 0..2000, &|| {
        format!("{}\n--- stopped:\n{}", logs(&members), stopped.stderr())
    });
    assert!(
        stopped.stderr().contains("left the share group"),
        "{}",
        stopped.stderr()
    );
}

/// A broker that speaks just enough MQTT 5 to accept a connection and refuse every shared
/// subscription with reason 0x9E (as brokers without shared subscriptions do).
fn broker_without_shared_subscriptions() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let read_packet = |s: &mut std::net::TcpStream| -> Option<(u8, Vec<u8>)> {
                    let mut first = [0u8; 1];
                    s.read_exact(&mut first).ok()?;
                    let (mut len, mut shift) = (0usize, 0);
                    loop {
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).ok()?;
                        len |= usize::from(b[0] & 0x7f) << shift;
                        shift += 7;
                        if b[0] & 0x80 == 0 {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    s.read_exact(&mut body).ok()?;
                    Some((first[0], body))
                };
                while let Some((kind, body)) = read_packet(&mut s) {
                    let reply: Vec<u8> = match kind >> 4 {
                        1 => vec![0x20, 3, 0, 0, 0],
                        8 => {
                            // packet id, properties (assumed empty: 1 byte), filters
                            let mut codes = Vec::new();
                            let mut i = 3;
                            while i + 2 <= body.len() {
                                let n = usize::from(body[i]) << 8 | usize::from(body[i + 1]);
                                let filter = &body[i + 2..i + 2 + n];
                                codes.push(if filter.starts_with(b"$share/") {
                                    0x9E
                                } else {
                                    1
                                });
                                i += 2 + n + 1;
                            }
                            let mut r = vec![0x90, (3 + codes.len()) as u8, body[0], body[1], 0];
                            r.extend(codes);
                            r
                        }
                        12 => vec![0xD0, 0],
                        _ => continue,
                    };
                    if s.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_broker_without_shared_subscriptions_is_a_one_line_error() {
    let port = broker_without_shared_subscriptions();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let outbox = outbox_dir(&tmp);
    let mut edge = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &url,
            "--model",
            "digits",
            "--outbox",
            &outbox,
            "--share-group",
            GROUP,
        ],
    );
    let status = edge.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", edge.stderr());
    let err = edge.stderr();
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("does not support shared subscriptions") && last.contains("0x9E"),
        "{err}"
    );
}

#[test]
fn share_group_usage_errors() {
    let repo = repo_with(&["digits"]);
    let run = |extra: &[&str]| {
        let out = scoria_command()
            .arg("edge")
            .arg("--models")
            .arg(repo.path())
            .args(["--broker", "mqtt://127.0.0.1:1", "--model", "digits"])
            .args(extra)
            .output()
            .expect("run scoria edge");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    for bad in ["a/b", "g+", "#", ""] {
        let err = run(&["--share-group", bad]);
        assert!(err.contains("--share-group"), "{bad:?}: {err}");
    }
    let err = run(&[
        "--share-group",
        "g",
        "--preset",
        "iothub",
        "--iothub-connection-string",
        "HostName=h.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5",
    ]);
    assert!(err.contains("--preset iothub"), "{err}");
    let err = run(&["--protocol", "3.1.1", "--session-expiry", "1m"]);
    assert!(err.contains("--session-expiry"), "{err}");
}
