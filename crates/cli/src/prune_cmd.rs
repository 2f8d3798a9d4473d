//! `strata cache prune DIR`: garbage-collect a `type=local` cache directory, thin glue over
//! `strata_cache::gc::prune`.
//!
//! With no policy flag it does what BuildKit's `reset=true` does (keep every tag, remove
//! every blob no tag reaches), because that is what the users of moby/buildkit#1896 ask
//! for; `--keep-last`, `--max-age` and `--max-size` replace that default with their own
//! rules. Human output names every removed version and every tag dropped because of
//! `--max-size` or `--max-age`; `--json` prints the library's report.
//!

// This is the CLI: writing reports to stdout is its job.
#![allow(clippy::print_stdout)]

use crate::cache_cmd::human_size;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use strata_cache::gc::{DropReason, PrunePolicy, PruneReport, prune};
use strata_cache::options::{parse_duration, parse_size};
use strata_oci::{Layout, default_lock_timeout};

/// Arguments of `strata cache prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// The cache directory (what `--cache-to type=local,dest=DIR` wrote).
    pub(crate) dir: PathBuf,
    /// Tags never dropped for age (comma-separated or repeated); other tags become
    /// subject to --max-age and go first under --max-size. Default: every tag is kept.
    #[arg(long, value_delimiter = ',', value_name = "TAG,...")]
    pub(crate) keep_tags: Option<Vec<String>>,
    /// Keep this many untagged versions (older exports), most recently used first.
    /// Without any of --keep-last, --max-age, --max-size: 0 (like BuildKit's reset=true).
    #[arg(long, value_name = "N")]
    pub(crate) keep_last: Option<usize>,
    /// Drop least recently used versions (untagged first, then tags) until the cache is
    /// at most this big: 5GiB, 500MB, 1024.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub(crate) max_size: Option<u64>,
    /// Drop untagged versions (and tags not in --keep-tags) not exported or imported for
    /// this long: 7d, 12h, 30m, 1w.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub(crate) max_age: Option<Duration>,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("{s:?} is not a size (e.g. 5GiB, 500MB, 1024)"))
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 7d, 12h, 30m, 90s, 1w)"))
}

impl PruneArgs {
    /// The library policy these flags mean.
    fn policy(&self) -> PrunePolicy {
        let any_rule =
            self.keep_last.is_some() || self.max_age.is_some() || self.max_size.is_some();
        PrunePolicy {
            keep_tags: self.keep_tags.clone(),
            keep_last: if any_rule { self.keep_last } else { Some(0) },
            max_size: self.max_size,
            max_age: self.max_age,
            protect: Vec::new(),
        }
    }
}

/// Runs `strata cache prune`.
pub(crate) fn run(args: PruneArgs) -> Result<ExitCode> {
    let dir = &args.dir;
    let layout =
        Layout::open(dir).with_context(|| format!("cannot prune cache {}", dir.display()))?;
    let report = prune(&layout, &args.policy(), args.dry_run, default_lock_timeout())
        .with_context(|| format!("pruning cache {} failed", dir.display()))?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing JSON to stdout")?;
        writeln!(out)?;
    } else {
        out.write_all(human(&report).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The human report: one line per removed version, totals, one line per dropped tag.
fn human(r: &PruneReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut s = String::new();
    for v in &r.removed_versions {
        s += &format!(
            "{verb} {}  {}  {}  {}\n",
            v.digest.short(),
            v.tag.as_deref().unwrap_or("<untagged>"),
            v.reason.as_str(),
            human_size(v.bytes)
        );
    }
    let freed = if r.dry_run { "would free" } else { "freed" };
    s += &format!(
        "{freed} {} in {} blob{}",
        human_size(r.removed_bytes),
        r.removed_blobs,
        if r.removed_blobs == 1 { "" } else { "s" }
    );
    if !r.removed_ingests.is_empty() {
        let bytes: u64 = r.removed_ingests.iter().map(|e| e.bytes).sum();
        s += &format!(
            " and {} stale ingest entr{} ({})",
            r.removed_ingests.len(),
            if r.removed_ingests.len() == 1 { "y" } else { "ies" },
            human_size(bytes)
        );
    }
    s += &format!(
        "; kept {} version{}, {}\n",
        r.kept_versions,
        if r.kept_versions == 1 { "" } else { "s" },
        human_size(r.kept_bytes)
    );
    for t in &r.dropped_tags {
        let why = match t.reason {
            DropReason::MaxSize => "to stay under --max-size",
            DropReason::MaxAge => "unused for longer than --max-age",
            _ => "by the policy",
        };
        let was = if r.dry_run { "would be dropped" } else { "dropped" };
        s += &format!("tag {:?} ({}) {was}: {why}\n", t.tag, t.digest.short());
    }
    if r.max_size_unmet {
        s += "note: still over --max-size: what is left is protected or is an image\n";
    }
    if r.kept_recent_orphans > 0 {
        s += &format!(
            "note: kept {} unreferenced blob(s) younger than an hour (possibly an export in \
             progress)\n",
            r.kept_recent_orphans
        );
    }
    if r.unlocked {
        s += "note: read-only directory: looked without the GC lock\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PruneArgs,
    }

    fn parse(argv: &[&str]) -> PruneArgs {
        Cli::try_parse_from(std::iter::once("prune").chain(argv.iter().copied())).unwrap().args
    }

    #[test]
    fn flags_map_to_the_policy() {
        let p = parse(&["d"]).policy();
        assert_eq!(p, PrunePolicy { keep_last: Some(0), ..PrunePolicy::default() });
        let a = parse(&[
            "d",
            "--keep-tags",
            "main,dev",
            "--keep-tags=rel",
            "--max-size",
            "5GiB",
            "--max-age",
            "7d",
            "--dry-run",
        ]);
        assert!(a.dry_run && !a.json);
        let p = a.policy();
        assert_eq!(p.keep_tags, Some(vec!["main".into(), "dev".into(), "rel".into()]));
        assert_eq!((p.keep_last, p.max_size), (None, Some(5 << 30)));
        assert_eq!(p.max_age, Some(Duration::from_secs(7 * 86400)));
        assert!(Cli::try_parse_from(["prune", "d", "--max-size", "lots"]).is_err());
        assert!(Cli::try_parse_from(["prune", "d", "--max-age", "7y"]).is_err());
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(129_394_278), "123.4 MiB");
    }
}
