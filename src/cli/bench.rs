//! `scoria bench`: measure a model's throughput and latency, in-process or over HTTP, and
//! record the run in the workspace's history.

use super::GlobalArgs;
use crate::bench::{self, BenchOptions, Outcome, Protocol, Stop};
use crate::engine::Backend;
use crate::models::autocomplete::DEFAULT_MAX_BATCH_SIZE;
use crate::models::LoadDefaults;
use crate::registry::runs as record;
use anyhow::Context;
use clap::Args;
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Measured for this long when neither --duration nor --requests is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model to drive: NAME or NAME:VERSION (default: the latest version).
    #[arg(long, env = "SCORIA_BENCH_MODEL", value_parser = super::model_reference, value_name = "NAME[:VERSION]")]
    pub model: (String, Option<u64>),

    /// Drive a running server instead of loading the model in this process: over the v2
    /// HTTP protocol (http://127.0.0.1:8000) or Triton's gRPC service (grpc://127.0.0.1:8001,
    /// one HTTP/2 connection per worker).
    #[arg(long, env = "SCORIA_BENCH_URL", value_parser = super::server_url, value_name = "URL")]
    pub url: Option<String>,

    /// Requests in flight at once: workers that each send one request at a time (with
    /// --url, each on its own keep-alive connection).
    #[arg(long, short = 'c', env = "SCORIA_BENCH_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "N")]
    pub concurrency: u32,

    /// How long to measure after the warm-up, e.g. 10s or 1m (default 10s).
    #[arg(long, short = 'd', env = "SCORIA_BENCH_DURATION", value_parser = super::positive_duration,
          conflicts_with = "requests", value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// How many requests to measure after the warm-up, instead of a duration.
    #[arg(long, short = 'n', env = "SCORIA_BENCH_REQUESTS",
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub requests: Option<u64>,

    /// Warm-up before measuring: requests are sent but not measured (0s for none).
    #[arg(long, env = "SCORIA_BENCH_WARMUP", default_value = "2s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub warmup: Duration,

    /// Batch size of the synthetic request: the size of each input's first dynamic
    /// dimension (other dynamic dimensions are 1).
    #[arg(long, short = 'b', env = "SCORIA_BENCH_BATCH", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65536), conflicts_with = "input",
          value_name = "B")]
    pub batch: u32,

    /// With --url, how requests are encoded: JSON tensors, or the binary tensor data
    /// extension (binary inputs and outputs). Over gRPC: typed `contents` (json) or
    /// `raw_input_contents` (binary, as perf_analyzer sends them).
    #[arg(
        long,
        env = "SCORIA_BENCH_PROTOCOL",
        value_enum,
        default_value = "json"
    )]
    pub protocol: Protocol,

    /// Send this request instead of synthetic data: a JSON file as `predict` takes it,
    /// {"data": ...} or {"inputs": {"name": ...}} with (nested) arrays.
    #[arg(long, env = "SCORIA_BENCH_INPUT", value_name = "FILE.json")]
    pub input: Option<PathBuf>,

    /// Engine for an in-process model whose config.toml names none.
    #[arg(long, env = "SCORIA_BACKEND", default_value = "tract", value_parser = super::backend)]
    pub backend: Backend,

    /// For an in-process model whose config.toml sets no max_batch_size: the one
    /// auto-complete gives it when every input and output has a dynamic first dimension
    /// (as `serve` does); 0 turns auto-complete off.
    #[arg(long, env = "SCORIA_DEFAULT_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH_SIZE, value_parser = super::default_max_batch_size(), value_name = "N")]
    pub default_max_batch_size: u32,

    /// With --url, a request with no response within this time counts as failed.
    #[arg(long, env = "SCORIA_BENCH_TIMEOUT", default_value = "30s",
          value_parser = super::positive_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// With --url, the API key to send as `Authorization: Bearer <key>` (never recorded).
    #[arg(
        long,
        env = "SCORIA_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Print the results as JSON instead of a table.
    #[arg(long, env = "SCORIA_JSON")]
    pub json: bool,

    /// Do not record the run in the workspace's runs/ folder.
    #[arg(long, env = "SCORIA_BENCH_NO_RECORD")]
    pub no_record: bool,
}

pub fn run(global: &GlobalArgs, args: BenchArgs) -> anyhow::Result<()> {
    let (model, version) = args.model;
    let stop = match (args.requests, args.duration) {
        (Some(n), _) => Stop::Requests(n),
        (None, d) => Stop::Duration(d.unwrap_or(DEFAULT_DURATION)),
    };
    let opts = BenchOptions {
        model,
        version,
        url: args.url,
        api_key: args.api_key,
        protocol: args.protocol,
        defaults: LoadDefaults {
            backend: args.backend,
            max_batch_size: args.default_max_batch_size,
        },
        concurrency: args.concurrency as usize,
        stop,
        warmup: args.warmup,
        batch: args.batch as usize,
        input: args.input,
        timeout: args.timeout,
        progress: std::io::stderr().is_terminal(),
    };
    let started = SystemTime::now();
    let models_dir = match opts.url {
        // In-process runs read the repository: a store's verified cache when it is in one.
        None => super::store::open_repository(global)?
            .0
            .root()
            .to_path_buf(),
        Some(_) => global.models_dir(),
    };
    let outcome = bench::run(&opts, &models_dir)?;
    let mut recorded = None;
    let mut record_error = None;
    if !args.no_record {
        let runs_dir = global.workspace.join(record::RUNS_DIR);
        let run = record::Run {
            id: record::new_id(started),
            command: command_line(std::env::args()),
            config: outcome.config.clone(),
            environment: bench::environment::collect(&global.workspace),
            results: serde_json::to_value(&outcome.results)?,
            log: outcome.log.iter().map(|l| format!("{l}\n")).collect(),
        };
        match run.save(&runs_dir) {
            Ok(dir) => recorded = Some((run.id, dir)),
            Err(e) => {
                record_error = Some(format!(
                    "cannot record the run in {}: {e}",
                    runs_dir.display()
                ))
            }
        }
    }
    if args.json {
        let out = json!({
            "run_id": recorded.as_ref().map(|(id, _)| id),
            "run_dir": recorded.as_ref().map(|(_, dir)| dir),
            "config": outcome.config,
            "results": outcome.results,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("cannot print the results")?
        );
    } else {
        print_table(&outcome);
        if let Some((id, dir)) = &recorded {
            println!("\nrun {id} recorded in {}", dir.display());
        }
    }
    match record_error {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(()),
    }
}

fn print_table(outcome: &Outcome) {
    let c = &outcome.config;
    let r = &outcome.results;
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
    let version = c["version"]
        .as_u64()
        .map_or(String::new(), |v| format!(":{v}"));
    let how = match c["url"].as_str() {
        Some(url) => format!("{url}, {}", s(&c["protocol"])),
        None => "in-process".to_string(),
    };
    let backend = c["backend"].as_str().unwrap_or("unknown backend");
    println!(
        "{}{version} ({backend}, {how}), concurrency {}, batch {}",
        s(&c["model"]),
        c["concurrency"],
        c["batch"]
    );
    let rows = [
        ("requests", r.requests.to_string()),
        ("errors", r.errors.to_string()),
        (
            "elapsed",
            format!(
                "{:.3} s (after {} warm-up requests)",
                r.elapsed_s, r.warmup_requests
            ),
        ),
        (
            "throughput",
            format!(
                "{:.1} req/s, {:.1} inferences/s",
                r.throughput.requests_per_s, r.throughput.inferences_per_s
            ),
        ),
        ("latency p50", format!("{:.3} ms", r.latency_ms.p50)),
        ("latency p90", format!("{:.3} ms", r.latency_ms.p90)),
        ("latency p99", format!("{:.3} ms", r.latency_ms.p99)),
        ("latency max", format!("{:.3} ms", r.latency_ms.max)),
        (
            "latency mean",
            format!(
                "{:.3} ms (min {:.3} ms)",
                r.latency_ms.mean, r.latency_ms.min
            ),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<13} {v}");
    }
    for e in &r.error_messages {
        println!("  error ×{:<6} {}", e.count, e.message);
    }
}

/// The command line as one shell-quoted line, with any API key replaced by `***`.
fn command_line(args: impl Iterator<Item = String>) -> String {
    let mut out = Vec::new();
    let mut redact_next = false;
    for arg in args {
        let arg = if redact_next {
            redact_next = false;
            "***".to_string()
        } else if arg == "--api-key" {
            redact_next = true;
            arg
        } else if arg.starts_with("--api-key=") {
            "--api-key=***".to_string()
        } else {
            arg
        };
        out.push(shell_quote(&arg));
    }
    out.join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_quoted_and_keys_redacted() {
        let args = [
            "scoria",
            "bench",
            "--model",
            "digits:1",
            "--api-key",
            "s3cret",
            "--input",
            "my file.json",
            "--api-key=other",
        ];
        assert_eq!(
            command_line(args.iter().map(|s| s.to_string())),
            "scoria bench --model digits:1 --api-key '***' --input 'my file.json' '--api-key=***'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(
            super::super::positive_duration("1s"),
            Ok(Duration::from_secs(1))
        );
        assert!(super::super::positive_duration("0s").is_err());
        assert!(super::super::positive_duration("ten").is_err());
    }
}
