//! Load generator for `scoria edge` (not a test): publishes digits requests to a broker,
//! matches results by id, and prints round-trip percentiles, sustained throughput and the
//! module's resident memory over the run.
//!
//! ```text
//! cargo run --release --example edge-load -- --port 1883 --concurrency 1 --duration 10 [--pid PID]
//! ```
//! `--concurrency 1` measures the unloaded round trip; a high concurrency (e.g. 512)
//! measures sustained throughput. With `--pid`, the module's VmRSS is sampled every second.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Opts {
    port: u16,
    prefix: String,
    model: String,
    concurrency: usize,
    duration: Duration,
    pid: Option<u32>,
}

fn opts() -> Opts {
    let mut o = Opts {
        port: 1883,
        prefix: "scoria".into(),
        model: "digits".into(),
        concurrency: 1,
        duration: Duration::from_secs(10),
        pid: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--port" => o.port = v.parse().expect("--port N"),
            "--prefix" => o.prefix = v.into(),
            "--model" => o.model = v.into(),
            "--concurrency" => o.concurrency = v.parse().expect("--concurrency N"),
            "--duration" => {
                o.duration = Duration::from_secs_f64(v.parse().expect("--duration SECONDS"))
            }
            "--pid" => o.pid = Some(v.parse().expect("--pid PID")),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let o = opts();
    let mut mo = MqttOptions::new(
        format!("edge-load-{}", std::process::id()),
        "127.0.0.1",
        o.port,
    );
    mo.set_keep_alive(Duration::from_secs(30))
        .set_inflight(u16::MAX - 1);
    let (client, mut events) = AsyncClient::new(mo, 65_536);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, bool)>();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    if let Some(id) = v["id"].as_u64() {
                        let _ = tx.send((id, v.get("error").is_none()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    client
        .subscribe(format!("{}/out/{}", o.prefix, o.model), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let topic = format!("{}/in/{}", o.prefix, o.model);
    let pixels: Vec<f64> = (0..64).map(|i| (i % 17) as f64).collect();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut rtts: Vec<Duration> = Vec::new();
    let (mut next, mut errors) = (0u64, 0u64);
    let mut rss = Vec::new();
    let started = Instant::now();
    let mut last_sample = started - Duration::from_secs(1);
    while started.elapsed() < o.duration || !sent.is_empty() {
        if started.elapsed() > o.duration + Duration::from_secs(30) {
            eprintln!("{} requests unanswered after 30 s", sent.len());
            break;
        }
        while started.elapsed() < o.duration && sent.len() < o.concurrency {
            let body = serde_json::json!({"id": next, "data": pixels}).to_string();
            sent.insert(next, Instant::now());
            client
                .publish(&topic, QoS::AtLeastOnce, false, body)
                .await
                .expect("publish");
            next += 1;
        }
        if let Ok(Some((id, ok))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            if let Some(t) = sent.remove(&id) {
                rtts.push(t.elapsed());
                errors += u64::from(!ok);
            }
        }
        if let Some(pid) = o.pid {
            if last_sample.elapsed() >= Duration::from_secs(1) {
                last_sample = Instant::now();
                if let Some(kib) = rss_kib(pid) {
                    rss.push(kib);
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    rtts.sort_unstable();
    let pct = |q: f64| {
        rtts.get(((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len().max(1)) - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let summary = serde_json::json!({
        "concurrency": o.concurrency,
        "results": rtts.len(),
        "errors": errors,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "results_per_s": (rtts.len() as f64 / elapsed).round(),
        "rtt_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "module_rss_kib": {
            "first": rss.first(), "max": rss.iter().max(), "last": rss.last(), "samples": rss.len(),
            "every_60s": rss.iter().step_by(60).collect::<Vec<_>>(),
        },
    });
    println!("{summary}");
}
