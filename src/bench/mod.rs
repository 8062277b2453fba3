//! `scoria bench`: a load generator for one model version, in-process (the serving core's
//! [`LoadedVersion::infer`](crate::models::LoadedVersion::infer), no HTTP) or against a
//! v2 server (`--url`), with its statistics; `scoria bench` records each run in the
//! workspace's run history ([`crate::registry::runs`]).

pub mod environment;
pub mod grpc;
pub mod http;
pub mod inputs;
pub mod load;
pub mod stats;
mod target;

pub use http::Protocol;
pub use load::Stop;

use crate::models::LoadDefaults;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stats::{ErrorCount, LatencySummary};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Everything a benchmark run is told.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub model: String,
    /// `None`: the latest version (served one, for `--url`).
    pub version: Option<u64>,
    /// A v2 server to drive instead of loading the model in-process.
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub protocol: Protocol,
    /// Engine and auto-complete for an in-process model whose config leaves them out.
    pub defaults: LoadDefaults,
    pub concurrency: usize,
    pub stop: Stop,
    pub warmup: Duration,
    /// The first dynamic dimension of synthetic inputs.
    pub batch: usize,
    /// A `predict`-style JSON file to send instead of synthetic data.
    pub input: Option<PathBuf>,
    /// For `--url`: a request with no answer by then counts as failed.
    pub timeout: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The measured outcome of a run, as `results.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// Measured requests completed, failed ones included.
    pub requests: u64,
    pub errors: u64,
    /// Inferences (samples) of the successful requests: requests × batch size.
    pub inferences: u64,
    /// Requests sent during the warm-up (not measured).
    pub warmup_requests: u64,
    /// Seconds from the end of the warm-up to the last measured completion.
    pub elapsed_s: f64,
    pub throughput: Throughput,
    /// Latencies of the successful measured requests.
    pub latency_ms: LatencySummary,
    /// The first distinct error messages with their counts.
    pub error_messages: Vec<ErrorCount>,
}

/// Successful requests and inferences per second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub inferences_per_s: f64,
}

/// A finished run: its resolved configuration, results and log lines.
#[derive(Debug)]
pub struct Outcome {
    pub config: Value,
    pub results: Results,
    pub log: Vec<String>,
}

/// Warnings and notable events of a run, for `log.txt`; warnings also go to the log output.
#[derive(Debug, Default)]
struct Log(Vec<String>);

impl Log {
    fn line(&mut self, level: &str, msg: &str) {
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        self.0.push(format!("{now} {level} {msg}"));
    }
    fn info(&mut self, msg: &str) {
        self.line("info", msg);
    }
    fn warn(&mut self, msg: &str) {
        tracing::warn!("{msg}");
        self.line("warning", msg);
    }
}

/// Runs the benchmark. `models_dir` is the repository for in-process runs.
pub fn run(opts: &BenchOptions, models_dir: &Path) -> anyhow::Result<Outcome> {
    let started = SystemTime::now();
    let mut log = Log::default();
    if cfg!(debug_assertions) {
        // For the record only: developers run debug builds on purpose.
        log.line(
            "warning",
            "this scoria is a debug build: its timings are not representative",
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("scoria-bench")
        .build()
        .context("cannot start the async runtime")?;
    let (target, setup) = match &opts.url {
        None => target::in_process(opts, models_dir, &mut log)?,
        Some(url) => runtime.block_on(target::remote(opts, url, &mut log))?,
    };
    let plan = load::Plan {
        concurrency: opts.concurrency,
        warmup: opts.warmup,
        stop: opts.stop,
    };
    let bar = progress_bar(opts.progress);
    let measured = runtime
        .block_on(load::drive(&target, &plan, &bar))
        .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    runtime.shutdown_timeout(Duration::from_millis(200));

    let batch = inputs::batch_size(&setup.inputs);
    let ok = measured.latencies.len() as u64;
    let errors = measured.errors.total();
    let secs = measured.elapsed.as_secs_f64();
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    for (what, tally) in [
        ("measured", &measured.errors),
        ("warm-up", &measured.warmup_errors),
    ] {
        for e in tally.messages() {
            log.warn(&format!(
                "{} {what} request(s) failed: {}",
                e.count, e.message
            ));
        }
    }
    log.info(&format!(
        "{} requests ({errors} failed) in {secs:.3} s after {} warm-up requests",
        ok + errors,
        measured.warmup_requests
    ));
    let results = Results {
        started: humantime::format_rfc3339_millis(started).to_string(),
        requests: ok + errors,
        errors,
        inferences: ok * batch,
        warmup_requests: measured.warmup_requests,
        elapsed_s: secs,
        throughput: Throughput {
            requests_per_s: per_s(ok),
            inferences_per_s: per_s(ok * batch),
        },
        error_messages: measured.errors.messages(),
        latency_ms: measured.latencies.summary(),
    };
    let config = json!({
        "model": opts.model,
        "version": setup.version,
        "mode": match &opts.url {
            Some(url) if url.starts_with("grpc://") => "grpc",
            Some(_) => "http",
            None => "in-process",
        },
        "url": opts.url,
        "protocol": opts.url.as_ref().map(|_| opts.protocol),
        "backend": setup.backend,
        "concurrency": opts.concurrency,
        "requests": match opts.stop { Stop::Requests(n) => Some(n), Stop::Duration(_) => None },
        "duration_s": match opts.stop { Stop::Duration(d) => Some(d.as_secs_f64()), Stop::Requests(_) => None },
        "warmup_s": opts.warmup.as_secs_f64(),
        "batch": batch,
        "input": opts.input.as_ref().map_or("synthetic".to_string(), |p| p.display().to_string()),
        "timeout_s": opts.url.as_ref().map(|_| opts.timeout.as_secs_f64()),
        "inputs": inputs::describe(&setup.inputs),
        "model_config": setup.model_config,
    });
    Ok(Outcome {
        config,
        results,
        log: log.0,
    })
}

fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {msg}")
        .expect("the progress template is valid; this is a bug")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}
