//! `strata cache ls|inspect|verify`: thin glue over `strata_cache::inspect` and
//! `strata_cache::verify`. These commands only read the cache directory.
//!
//! Human output is aligned tables (digests shortened to 12 hex digits, sizes in binary
//! units, times as the cache wrote them); `--json` prints the library's structs as
//! pretty JSON on stdout, so scripts get every field. `verify` exits 1 when it finds a
//! problem; errors that prevent looking at all (missing directory, corrupt index.json)
//! are returned as `Err` for `main` to report (exit 1).

// This is the CLI: writing reports to stdout is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use strata_cache::inspect::{
    VersionDetail, VersionSelector, VersionSummary, inspect_version, list_versions,
    short_media_type,
};
use strata_cache::verify::{RepairReport, VerifyReport, repair, verify};
use strata_oci::{Digest, Layout};

use crate::remote_cache;

/// `strata cache …`: look at a `type=local` cache directory without changing it.
#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List the versions in a cache: each tag, and with --all every older export still
    /// in blobs/.
    Ls(LsArgs),
    /// Show one version: its layers, records, what each record's results load, sizes.
    Inspect(InspectArgs),
    /// Check that every blob a version needs is present and intact and that its cache
    /// config is consistent. Exits 1 if anything is wrong.
    Verify(VerifyArgs),
}

/// Arguments of `strata cache ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// The cache directory (what `--cache-to type=local,dest=DIR` wrote), or
    /// `registry://HOST/REPO[:TAG]` for a registry cache.
    pub(crate) dir: PathBuf,
    /// Also list untagged versions (older exports) still in blobs/.
    #[arg(long)]
    pub(crate) all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `strata cache inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The cache directory.
    pub(crate) dir: PathBuf,
    /// The tag to inspect [default: latest].
    #[arg(long, conflicts_with = "digest")]
    pub(crate) tag: Option<String>,
    /// A cache manifest digest (sha256:…), tagged or not, as `strata cache ls --all` shows.
    #[arg(long)]
    pub(crate) digest: Option<Digest>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `strata cache verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The cache directory.
    pub(crate) dir: PathBuf,
    /// Also verify untagged versions and every other blob in blobs/.
    #[arg(long)]
    pub(crate) all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Remove what cannot be used: corrupt blobs, dead writers' ingest entries, and
    /// index.json entries whose blobs are gone (old index.json kept as
    /// index.json.bak-<unix time>). Exits 1 if problems remain afterwards.
    #[arg(long)]
    pub(crate) repair: bool,
}

/// Runs a `strata cache` subcommand.
pub(crate) fn run(cmd: CacheCommand) -> Result<ExitCode> {
    match cmd {
        CacheCommand::Ls(a) => {
            let (layout, _mirror) = open(&a.dir, false)?;
            let versions = list_versions(&layout, a.all)?;
            let text = if a.json { json(&versions)? } else { render_ls(&a.dir, &versions) };
            emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Inspect(a) => {
            let (layout, mirror) = open(&a.dir, false)?;
            // A registry reference already names its version.
            let named = mirror.as_ref().map(|m| m.digest.clone());
            let selector = match (a.digest.or(named), a.tag) {
                (Some(d), _) => VersionSelector::Digest(d),
                (None, tag) => VersionSelector::Tag(tag.unwrap_or_else(|| "latest".to_owned())),
            };
            let detail = inspect_version(&layout, &selector)?;
            let text = if a.json { json(&detail)? } else { render_inspect(&detail) };
            emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Verify(a) if a.repair => {
            if remote_cache::reference(&a.dir).is_some() {
                anyhow::bail!("--repair works on a local cache directory, not a registry");
            }
            let layout = Layout::open(&a.dir)?;
            let report = repair(&layout, strata_oci::default_lock_timeout())?;
            let text = if a.json { json(&report)? } else { render_repair(&report) };
            emit(&text)?;
            Ok(if report.remaining.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        CacheCommand::Verify(a) => {
            let (layout, mirror) = open(&a.dir, true)?;
            let report = verify(&layout, a.all)?;
            let download_problems = mirror.map(|m| m.problems).unwrap_or_default();
            let mut text = if a.json { json(&report)? } else { render_verify(&report) };
            for p in &download_problems {
                text.push_str(&format!("problem: {p}\n"));
            }
            emit(&text)?;
            let ok = report.ok() && download_problems.is_empty();
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Opens a cache directory, or mirrors a `registry://` reference into a temp layout (kept
/// alive by the returned mirror).
fn open(dir: &std::path::Path, layers: bool) -> Result<(Layout, Option<remote_cache::Mirror>)> {
    match remote_cache::reference(dir) {
        Some(r) => {
            let m = remote_cache::mirror(r, layers)?;
            Ok((m.layout.clone(), Some(m)))
        }
        None => Ok((Layout::open(dir)?, None)),
    }
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

/// Writes the whole report at once; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn render_ls(dir: &std::path::Path, versions: &[VersionSummary]) -> String {
    let mut s = String::new();
    if versions.is_empty() {
        let _ = writeln!(s, "no cache versions in {} (no index.json entries)", dir.display());
        return s;
    }
    let opt = |n: Option<usize>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let tag = match (&v.tag, v.untagged) {
                (Some(t), _) => t.clone(),
                (None, true) => "<untagged>".to_owned(),
                (None, false) => "<none>".to_owned(),
            };
            vec![
                tag,
                v.digest.short().to_owned(),
                short_media_type(&v.media_type).to_owned(),
                v.created.clone().unwrap_or_else(|| "-".to_owned()),
                human_size(v.size),
                opt(v.layers),
                opt(v.records),
            ]
        })
        .collect();
    table(&mut s, &["TAG", "DIGEST", "TYPE", "CREATED", "SIZE", "LAYERS", "RECORDS"], &rows);
    for v in versions {
        if let Some(note) = &v.note {
            let _ = writeln!(s, "note: {}: {note}", v.digest.short());
        }
    }
    s
}

fn render_inspect(v: &VersionDetail) -> String {
    let mut s = String::new();
    let tag = v.tag.as_deref().map_or_else(|| "untagged".to_owned(), |t| format!("tag {t}"));
    let _ = writeln!(s, "cache    {} ({tag})", v.digest);
    let _ = writeln!(s, "form     {} ({}), {}", v.form, v.media_type, human_size(v.manifest_size));
    let _ = writeln!(s, "config   {}, {}", v.config, human_size(v.config_size));
    let t = &v.totals;
    let _ = writeln!(
        s,
        "totals   {} records, {} layers, {} unique blobs, {} compressed",
        t.records,
        t.layers,
        t.unique_blobs,
        human_size(t.compressed_bytes)
    );

    let _ = writeln!(s, "\nLAYERS");
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = v
        .layers
        .iter()
        .map(|l| {
            vec![
                l.index.to_string(),
                l.blob.short().to_owned(),
                if l.parent < 0 { dash() } else { l.parent.to_string() },
                l.compression.map_or_else(
                    || l.media_type.clone().unwrap_or_else(dash),
                    |c| c.as_str().to_owned(),
                ),
                l.size.map_or_else(dash, human_size),
                l.uncompressed_size.map_or_else(dash, human_size),
                l.created_at.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    table(
        &mut s,
        &["#", "BLOB", "PARENT", "COMPRESSION", "SIZE", "UNCOMPRESSED", "CREATED"],
        &rows,
    );

    let _ = writeln!(s, "\nRECORDS");
    let rows: Vec<Vec<String>> = v
        .records
        .iter()
        .map(|r| {
            let inputs = r
                .inputs
                .iter()
                .map(|slot| {
                    slot.iter()
                        .map(|i| {
                            let sel = if i.selector.is_some() { "*" } else { "" };
                            format!("{}{sel}", i.link)
                        })
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let results = r
                .results
                .iter()
                .map(|res| {
                    let at = res.layer.map_or_else(|| "chain".to_owned(), |l| format!("layer {l}"));
                    let n = res.chain.len();
                    let plural = if n == 1 { "" } else { "s" };
                    format!("{at} ({n} blob{plural}) {}", res.created_at)
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                r.index.to_string(),
                short_key(&r.digest),
                if inputs.is_empty() { dash() } else { inputs },
                if results.is_empty() { dash() } else { results },
            ]
        })
        .collect();
    table(&mut s, &["#", "KEY", "INPUTS", "RESULTS"], &rows);
    if v.records.iter().flat_map(|r| r.inputs.iter().flatten()).any(|i| i.selector.is_some()) {
        let _ = writeln!(s, "(inputs: record links; a|b = alternatives; * = with a selector)");
    }
    for w in &v.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

fn render_repair(r: &RepairReport) -> String {
    let mut s = String::new();
    for b in &r.removed_blobs {
        let _ = writeln!(s, "removed corrupt blob {}: {}", b.digest, b.reason);
    }
    for p in &r.removed_ingests {
        let _ = writeln!(s, "removed stale ingest entry {}", p.display());
    }
    for e in &r.dropped_entries {
        let _ = writeln!(s, "dropped index.json entry {e}");
    }
    if let Some(b) = &r.index_backup {
        let _ = writeln!(s, "previous index.json saved as {}", b.display());
    }
    for d in &r.removed_untagged {
        let _ = writeln!(s, "removed incomplete untagged version {d}");
    }
    let changed = !(r.removed_blobs.is_empty()
        && r.removed_ingests.is_empty()
        && r.dropped_entries.is_empty()
        && r.removed_untagged.is_empty());
    if !changed {
        let _ = writeln!(s, "nothing to repair in {}", r.root.display());
    }
    for p in &r.remaining {
        let _ = writeln!(s, "still broken: {}", p.message);
    }
    if r.remaining.is_empty() {
        let _ = writeln!(
            s,
            "{} is consistent{}",
            r.root.display(),
            if changed {
                "; run `strata cache prune` to reclaim blobs nothing references"
            } else {
                ""
            }
        );
    }
    s
}

fn render_verify(r: &VerifyReport) -> String {
    let mut s = String::new();
    for p in &r.problems {
        let _ = writeln!(s, "problem: {}", p.message);
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let verdict = match r.problems.len() {
        0 => "OK".to_owned(),
        n => format!("{n} problem(s)"),
    };
    let _ = writeln!(
        s,
        "{}: {} manifest(s), {} blob(s) checked ({}), {} unreferenced ({}): {verdict}",
        r.root.display(),
        r.manifests,
        r.blobs_checked,
        human_size(r.bytes_checked),
        r.unreferenced_blobs,
        human_size(r.unreferenced_bytes),
    );
    s
}

/// A record key: 12 hex digits if it is a digest, else the start of the opaque string.
fn short_key(key: &str) -> String {
    if key.is_empty() {
        return "-".to_owned();
    }
    match Digest::parse(key) {
        Ok(d) => d.short().to_owned(),
        Err(_) if key.chars().count() > 20 => {
            format!("{}…", key.chars().take(19).collect::<String>())
        }
        Err(_) => key.to_owned(),
    }
}

/// `130 B`, `4.3 KiB`, `1.0 MiB`: binary units, one decimal, at most three digits before
/// the point (1000 KiB and up is shown in MiB) so that columns stay narrow.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // f64 is exact enough for one decimal of any realistic size.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Appends a left-aligned table: columns separated by two spaces, widths by content.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            l.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 KiB");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1_032_600), "1.0 MiB");
        assert_eq!(human_size(4374), "4.3 KiB");
        assert_eq!(human_size(1 << 20), "1.0 MiB");
        assert_eq!(human_size(1_054_649), "1.0 MiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }

    #[test]
    fn tables_align() {
        let mut s = String::new();
        table(
            &mut s,
            &["A", "LONG"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(s, "A    LONG\nxyz  1\nq\n");
    }

    #[test]
    fn record_keys_shorten() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(short_key(d.as_str()), d.short());
        assert_eq!(short_key("random:abc"), "random:abc");
        assert_eq!(short_key(""), "-");
    }
}
