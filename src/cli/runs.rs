//! `scoria runs list | show`: the workspace's benchmark run history (`runs/`).

use super::GlobalArgs;
use crate::registry::runs::{self as record, Run};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List the recorded runs, oldest first: id, date, model, mode, concurrency,
    /// throughput, latency p50/p99 and errors.
    List(ListArgs),
    /// Show one run: command, configuration, environment, results and log.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long, env = "SCORIA_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's id, a prefix that names one run, or `latest`.
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long, env = "SCORIA_JSON")]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, cmd: RunsCommand) -> anyhow::Result<()> {
    let runs_dir = global.workspace.join(record::RUNS_DIR);
    match cmd {
        RunsCommand::List(args) => {
            let ids = record::ids(&runs_dir)
                .with_context(|| format!("cannot read {}", runs_dir.display()))?;
            let mut runs = Vec::new();
            for id in ids {
                match Run::load(&runs_dir, &id) {
                    Ok(run) => runs.push(run),
                    Err(e) => tracing::warn!("skipping run {id}: {e}"),
                }
            }
            if args.json {
                let items: Vec<Value> = runs.iter().map(summary).collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if runs.is_empty() {
                eprintln!("no runs recorded in {}", runs_dir.display());
            } else {
                print_list(&runs);
            }
            Ok(())
        }
        RunsCommand::Show(args) => {
            let run = if args.id == "latest" {
                latest(&runs_dir)?
            } else {
                let id = record::resolve(&runs_dir, &args.id).map_err(anyhow::Error::msg)?;
                Run::load(&runs_dir, &id).map_err(anyhow::Error::msg)?
            };
            if args.json {
                let out = json!({
                    "id": run.id,
                    "command": run.command,
                    "config": run.config,
                    "environment": run.environment,
                    "results": run.results,
                    "log": run.log,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_run(&run)?;
            }
            Ok(())
        }
    }
}

/// The newest run that reads back; unreadable folders are skipped, as `runs list` does.
fn latest(runs_dir: &std::path::Path) -> anyhow::Result<Run> {
    let ids =
        record::ids(runs_dir).with_context(|| format!("cannot read {}", runs_dir.display()))?;
    for id in ids.iter().rev() {
        match Run::load(runs_dir, id) {
            Ok(run) => return Ok(run),
            Err(e) => tracing::warn!("skipping run {id}: {e}"),
        }
    }
    anyhow::bail!("no runs recorded in {}", runs_dir.display())
}

/// `digits:1`.
fn model_ref(config: &Value) -> String {
    let name = config["model"].as_str().unwrap_or("?");
    match config["version"].as_u64() {
        Some(v) => format!("{name}:{v}"),
        None => name.to_string(),
    }
}

/// `in-process`, `http/json`, `http/binary`, `grpc/json`, `grpc/binary`.
fn mode(config: &Value) -> String {
    let mode = config["mode"].as_str().unwrap_or("?");
    match config["protocol"].as_str() {
        Some(p) => format!("{mode}/{p}"),
        None => mode.to_string(),
    }
}

/// One `runs list --json` item.
fn summary(run: &Run) -> Value {
    let (c, r) = (&run.config, &run.results);
    json!({
        "id": run.id,
        "started": r["started"],
        "model": c["model"],
        "version": c["version"],
        "mode": c["mode"],
        "protocol": c["protocol"],
        "url": c["url"],
        "backend": c["backend"],
        "concurrency": c["concurrency"],
        "batch": c["batch"],
        "requests": r["requests"],
        "errors": r["errors"],
        "throughput": r["throughput"],
        "latency_ms": r["latency_ms"],
    })
}

fn print_list(runs: &[Run]) {
    let header = [
        "ID",
        "DATE (UTC)",
        "MODEL",
        "MODE",
        "CONC",
        "REQ/S",
        "P50 MS",
        "P99 MS",
        "ERRORS",
    ];
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    let rows: Vec<[String; 9]> = runs
        .iter()
        .map(|run| {
            let (c, r) = (&run.config, &run.results);
            // 2025-06-11T14:22:33.123Z → 2025-06-11 14:22:33
            let date = r["started"].as_str().map_or("-".to_string(), |s| {
                s.replace('T', " ").chars().take(19).collect()
            });
            [
                run.id.clone(),
                date,
                model_ref(c),
                mode(c),
                c["concurrency"].to_string(),
                num(&r["throughput"]["requests_per_s"], 1),
                num(&r["latency_ms"]["p50"], 3),
                num(&r["latency_ms"]["p99"], 3),
                r["errors"].to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Text columns are left-aligned, numbers right-aligned.
    let line = |cells: [&str; 9]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0..=3 => format!("{c:<w$}", w = widths[i]),
                _ => format!("{c:>w$}", w = widths[i]),
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
}

fn print_run(run: &Run) -> anyhow::Result<()> {
    let (c, r) = (&run.config, &run.results);
    println!("run:          {}", run.id);
    println!("started:      {}", r["started"].as_str().unwrap_or("-"));
    println!("command:      {}", run.command);
    println!(
        "model:        {} ({}, {})",
        model_ref(c),
        c["backend"].as_str().unwrap_or("unknown backend"),
        mode(c)
    );
    let rate = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    println!(
        "throughput:   {} req/s, {} inferences/s ({} requests, {} errors)",
        rate(&r["throughput"]["requests_per_s"]),
        rate(&r["throughput"]["inferences_per_s"]),
        r["requests"],
        r["errors"]
    );
    let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
    println!(
        "latency:      p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        ms(&r["latency_ms"]["p50"]),
        ms(&r["latency_ms"]["p90"]),
        ms(&r["latency_ms"]["p99"]),
        ms(&r["latency_ms"]["max"])
    );
    for (title, value) in [
        ("config.json", &run.config),
        ("results.json", &run.results),
        ("environment.json", &run.environment),
    ] {
        println!("\n{title}:\n{}", serde_json::to_string_pretty(value)?);
    }
    println!("\nlog.txt:");
    print!("{}", run.log);
    Ok(())
}
