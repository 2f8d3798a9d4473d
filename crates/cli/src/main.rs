//! `strata`: a daemonless image builder whose build cache is BuildKit's `type=local`
//! format. The binary only parses arguments, renders results and maps errors to exit
//! codes (0 ok, 1 failed, 2 usage); the work lives in the library crates.

#![allow(clippy::print_stderr, clippy::print_stdout)]

mod build_cmd;
mod cache_cmd;
mod demo;
mod prune_cmd;
mod remote_cache;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A daemonless container image builder with BuildKit-compatible local build caches.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile (flags as `docker buildx build`).
    Build(Box<build_cmd::BuildArgs>),
    /// Inspect, verify and prune cache directories (OCI layouts BuildKit or strata wrote).
    #[command(subcommand)]
    Cache(CacheCmd),
    /// Show the size of the state directory ($STRATA_ROOT).
    Du(build_cmd::DuArgs),
    /// Empty the state directory ($STRATA_ROOT), optionally down to a size.
    Prune(build_cmd::PruneStateArgs),
    /// Build an embedded example twice through a local cache directory and show the cache.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum CacheCmd {
    #[command(flatten)]
    Read(cache_cmd::CacheCommand),
    /// Remove cache versions and blobs by policy (keep tags, keep-last, max-size, max-age).
    Prune(prune_cmd::PruneArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap: help and version are successes; everything else is a usage error.
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    init_tracing();
    let result = match cli.command {
        Command::Build(args) => build_cmd::run(*args),
        Command::Cache(CacheCmd::Read(c)) => cache_cmd::run(c),
        Command::Cache(CacheCmd::Prune(a)) => prune_cmd::run(a),
        Command::Du(a) => build_cmd::du(a),
        Command::Prune(a) => build_cmd::prune(a),
        Command::Demo(a) => demo::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`strata cache ls | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ERROR: {}", error_text(&e));
            let usage = e.chain().any(|c| {
                c.downcast_ref::<strata_build::BuildError>().is_some_and(|b| b.is_usage())
                    || c.downcast_ref::<UsageError>().is_some()
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// The error and its causes on one line. Library errors often already include their
/// cause in their message (`could not open X: No such file`), so a cause whose text is
/// already there is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A usage problem found after argument parsing (exit code 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
