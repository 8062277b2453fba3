//! The `scoria` command line: argument parsing, logging setup and exit codes.
//!
//! Exit codes: 0 success, 1 runtime error, 2 usage error — always with a one-line reason.

mod bench;
mod edge;
mod keys;
mod model;
mod predict;
mod runs;
mod serve;
mod store;

use crate::engine::Backend;
use crate::models::autocomplete::MAX_DEFAULT_MAX_BATCH_SIZE;
use crate::registry::name;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

/// A model-serving runtime for ONNX models: a model repository, offline prediction, and an
/// Open Inference Protocol v2 (KServe/Triton) REST server.
#[derive(Debug, Parser)]
#[command(
    name = "scoria",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Workspace directory; its `models/` folder is the default model repository.
    #[arg(
        long,
        global = true,
        env = "SCORIA_WORKSPACE",
        default_value = ".",
        value_name = "DIR"
    )]
    pub workspace: PathBuf,

    /// Model repository, overriding `<workspace>/models`: a directory, or a store URL
    /// (az://CONTAINER/PREFIX, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX; credentials from the
    /// environment as the cloud SDKs read them) mirrored into `<workspace>/.cache/store/`.
    #[arg(long, global = true, env = "SCORIA_MODELS", value_parser = store::models_arg, value_name = "DIR|URL")]
    pub models: Option<PathBuf>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as
    /// `scoria=debug`.
    #[arg(
        long,
        global = true,
        env = "SCORIA_LOG",
        default_value = "info",
        value_parser = log_filter,
        value_name = "FILTER"
    )]
    pub log: String,
}

impl GlobalArgs {
    /// The model repository directory in effect.
    pub fn models_dir(&self) -> PathBuf {
        self.models
            .clone()
            .unwrap_or_else(|| self.workspace.join("models"))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the repository's models over HTTP (Open Inference Protocol v2).
    Serve(serve::ServeArgs),
    /// Register, list, show and delete models in the repository.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Score one JSON input file offline, through the model's score hook when it has one,
    /// and print the result as JSON.
    Predict(predict::PredictArgs),
    /// Generate API key files for `serve --api-key-file`.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Measure a model's throughput and latency, in-process or against a server (--url),
    /// and record the run in the workspace's runs/ folder.
    Bench(bench::BenchArgs),
    /// List and show the benchmark runs recorded in the workspace.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Run as an IoT edge module: score requests arriving over MQTT, deliver results durably
    /// (at least once), publish telemetry and take desired configuration.
    Edge(edge::EdgeArgs),
}

/// Parses `NAME[:VERSION]` for clap, so a bad reference is a usage error (exit 2).
pub(crate) fn model_reference(s: &str) -> Result<(String, Option<u64>), String> {
    name::parse_reference(s).map_err(|e| e.to_string())
}

/// A mistake in how flags combine, found after clap's own checks: reported like clap's errors
/// (one line, exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// A `--log` filter that tracing understands (a typo would otherwise log at `info` unnoticed).
fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not a log filter (error, warn, info, debug, trace or a directive like scoria=debug): {e}"))
}

/// A model name for clap (`model register NAME`).
pub(crate) fn model_name(s: &str) -> Result<String, String> {
    name::validate(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// `NAME:VERSION` with the version required (`model delete`).
pub(crate) fn versioned_reference(s: &str) -> Result<(String, u64), String> {
    match name::parse_reference(s).map_err(|e| e.to_string())? {
        (name, Some(v)) => Ok((name, v)),
        (name, None) => Err(format!("name the version to delete, as {name}:VERSION")),
    }
}

/// `HOST:PORT` to listen on (`serve --http`); the host may be a name or an address.
pub(crate) fn listen_address(s: &str) -> Result<String, String> {
    let bad = || format!("'{s}' is not HOST:PORT (e.g. 127.0.0.1:8000 or 0.0.0.0:8000)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// An `http://HOST[:PORT][/PREFIX]` server URL (`bench --url`).
pub(crate) fn server_url(s: &str) -> Result<String, String> {
    if s.starts_with("grpc://") {
        return crate::bench::grpc::GrpcEndpoint::parse(s, None).map(|_| s.to_string());
    }
    crate::bench::http::Endpoint::parse(s, None).map(|_| s.to_string())
}

/// The value parser of `--default-max-batch-size`: 0 (auto-complete off) up to
/// [`MAX_DEFAULT_MAX_BATCH_SIZE`]; anything else is a usage error.
pub(crate) fn default_max_batch_size() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(0..=i64::from(MAX_DEFAULT_MAX_BATCH_SIZE))
}

/// Parses a backend name for clap.
pub(crate) fn backend(s: &str) -> Result<Backend, String> {
    Backend::from_name(s).ok_or_else(|| {
        format!(
            "unknown backend '{s}' (available: {})",
            Backend::available()
        )
    })
}

/// The async runtime of a server (`serve`, `edge`): tokio's default worker threads (one per
/// core), with room for score hooks on each, and a blocking pool (hooks, large codecs,
/// repository work) bounded by the cores rather than tokio's 512, so threads do not grow
/// with the number of clients.
pub(crate) fn server_runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::hook::HOOK_THREAD_STACK_BYTES)
        .thread_name(name)
        .max_blocking_threads((4 * cores).max(16))
        .build()
}

/// The command line as clap parses it, with every option and argument that takes a value
/// also taking a negative number: clap would take `-c -1` for an unknown flag `-1`, where the
/// value's own check says what is wrong with it ("-1 is not in 0..=65536").
pub fn command() -> clap::Command {
    fn negatives(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| {
            if a.get_action().takes_values() {
                a.allow_negative_numbers(true)
            } else {
                a
            }
        })
        .mut_subcommands(negatives)
    }
    negatives(Cli::command())
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    install_panic_hook();
    no_library_backtraces(); // before any thread: sets env
    let parsed = command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    crate::engine::ort::prepare_process(&cli.global.workspace); // before any thread: sets env
    init_logging(&cli.global.log);
    if !matches!(cli.command, Command::Serve(_) | Command::Edge(_)) {
        default_sigpipe();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Model(cmd) => model::run(&cli.global, cmd),
        Command::Predict(args) => predict::run(&cli.global, args),
        Command::Keys(cmd) => keys::run(&cli.global, cmd),
        Command::Bench(args) => bench::run(&cli.global, args),
        Command::Runs(cmd) => runs::run(&cli.global, cmd),
        Command::Edge(args) => edge::run(&cli.global, args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", one_line(&chain_message(&e)));
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

/// Lets SIGPIPE end the process, as it ends any Unix tool whose reader went away (`| head`),
/// instead of Rust's default of ignoring it, which makes `println!` panic. Not for the
/// servers: a client that hangs up must not end them.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to its default installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A duration flag that must be more than zero (`500ms`, `10s`, `1m`).
pub(crate) fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(e) => Err(format!(
            "'{s}' is not a duration (e.g. 500ms, 10s, 1m): {e}"
        )),
    }
}

/// `e` and its causes joined by `: `, leaving out a cause whose text the message before it
/// already ends with (errors that print their source, as many do, would say it twice).
fn chain_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Sets `RUST_LIB_BACKTRACE=0` unless it is set. scoria reports errors in one line and never
/// shows a captured backtrace, but with `RUST_BACKTRACE=1` in the environment (common on
/// developers' machines and in containers) every `anyhow` error would capture one, and tract
/// makes such errors as a matter of course while it optimizes a model (constants that turn
/// out not to be 0 or 1): each capture unwinds the stack through the binary's unwind tables,
/// which kept about 1 MiB of them resident after the sample models loaded. Panics are
/// reported by [`install_panic_hook`], which reads neither variable.
fn no_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// A panic is a bug; report it in one line rather than a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // A panic in a third-party model importer becomes that model's load error.
        if crate::engine::import::panic_is_contained() {
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{at}: {} (this is a bug)",
            one_line(&msg)
        );
    }));
}

#[cfg(test)]
mod message_tests {
    use super::chain_message;

    #[derive(Debug, thiserror::Error)]
    #[error("/tmp: {source}")]
    struct Io {
        source: std::io::Error,
    }

    #[test]
    fn causes_are_said_once() {
        let e = anyhow::Error::new(Io {
            source: std::io::Error::other("not a regular file"),
        });
        assert_eq!(chain_message(&e), "/tmp: not a regular file");
        let e = e.context("cannot register");
        assert_eq!(
            chain_message(&e),
            "cannot register: /tmp: not a regular file"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_message(&e), "outer: inner");
    }
}

#[cfg(test)]
mod command_tests {
    use super::command;

    #[test]
    fn the_command_line_is_consistent_and_takes_negative_values() {
        let cmd = command();
        cmd.clone().debug_assert();
        let err = cmd
            .try_get_matches_from(["scoria", "serve", "--max-inflight", "-5"])
            .unwrap_err();
        assert!(err.to_string().contains("-5 is not in"), "{err}");
    }
}
