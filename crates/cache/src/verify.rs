//! `strata cache verify`: is every blob a cache version needs present and intact, and
//! does every cache config make sense?
//!
//! The walk starts at `index.json` (with `all`, also at every cache manifest still in
//! `blobs/`), reads the small JSON blobs (manifests, configs) in memory and checks their
//! size, digest and structure, then hashes the layer blobs in parallel. Findings are
//! data: [`VerifyProblem`]s (the cache is damaged: a build importing it would fail or
//! lose hits) and notes (worth knowing, harmless). Only conditions that make the
//! directory unreadable as a whole (missing, not a directory, corrupt `index.json`) are
//! errors.
//!
//! Strictly read-only: blobs are opened for reading, `index.json.lock` is only probed
//! if it already exists, and nothing is created, not even the lock file (a cache on a
//! read-only mount must verify).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, TryLockError};
use std::io;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;
use strata_oci::{BlobProblem, Descriptor, Digest, Index, Layout, StoreError, media};

use crate::config::CacheConfig;
use crate::error::ManifestError;
use crate::inspect::{Result, scan_cache_manifests};
use crate::limits::{MAX_READ_SIZE, buildkit_import_limit_exceeded};
use crate::manifest::{CacheManifest, ManifestForm};
use crate::validate::validate;

/// Nested image indexes deeper than this are not followed (real ones have one level;
/// the bound only keeps a hostile layout from recursing without end).
const MAX_DEPTH: usize = 8;

/// What is wrong with one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ProblemKind {
    /// The blob file does not exist.
    Missing,
    /// The file's length is not the descriptor's size.
    WrongSize {
        /// Size in the descriptor.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The content does not hash to the blob's name.
    DigestMismatch {
        /// What the content hashes to.
        computed: Digest,
    },
    /// The file exists but cannot be read.
    Unreadable {
        /// The OS error.
        error: String,
    },
    /// A manifest or config larger than strata reads into memory.
    TooLarge {
        /// The file's size.
        size: u64,
        /// The read limit.
        limit: u64,
    },
    /// A manifest or config that is not valid JSON of its kind.
    UnparseableJson {
        /// The parser's message.
        error: String,
    },
    /// A cache config that fails structural validation.
    InvalidConfig {
        /// What is wrong (names the record or layer).
        message: String,
    },
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyProblem {
    /// The blob at fault.
    pub digest: Digest,
    /// Its path.
    pub path: PathBuf,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Who refers to the blob ("tag latest", "layer of manifest sha256:…"), to find the
    /// affected version.
    pub referenced_by: String,
    /// One line for humans: blob, path and what is wrong.
    pub message: String,
}

impl VerifyProblem {
    fn new(digest: Digest, path: PathBuf, kind: ProblemKind, referenced_by: String) -> Self {
        let what = match &kind {
            ProblemKind::Missing => "missing".to_owned(),
            ProblemKind::WrongSize { expected, actual } => {
                format!("wrong size: {actual} bytes ≠ {expected} expected")
            }
            ProblemKind::DigestMismatch { computed } => {
                format!("digest mismatch: content hashes to {computed}")
            }
            ProblemKind::Unreadable { error } => format!("unreadable: {error}"),
            ProblemKind::TooLarge { size, limit } => {
                format!("too large to read: {size} bytes > {limit}")
            }
            ProblemKind::UnparseableJson { error } => format!("unparseable JSON: {error}"),
            ProblemKind::InvalidConfig { message } => format!("invalid cache config: {message}"),
        };
        let message = format!("blob {digest} ({}): {what} [{referenced_by}]", path.display());
        Self { digest, path, kind, referenced_by, message }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// The layout's root.
    pub root: PathBuf,
    /// Manifests walked from `index.json` (and, with `all`, found in `blobs/`).
    pub manifests: usize,
    /// Blobs whose size and digest were checked.
    pub blobs_checked: usize,
    /// Their total size.
    pub bytes_checked: u64,
    /// Damage: a build using this cache would fail or miss.
    pub problems: Vec<VerifyProblem>,
    /// Harmless observations (stale ingests, a leftover lock file, unreferenced blobs,
    /// BuildKit's import limit, config warnings).
    pub notes: Vec<String>,
    /// Blobs in `blobs/` that nothing walked refers to.
    pub unreferenced_blobs: usize,
    /// Their total size.
    pub unreferenced_bytes: u64,
}

impl VerifyReport {
    /// Whether no problems were found (notes do not count).
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies every blob reachable from `index.json`; with `all`, also every cache manifest
/// in `blobs/` that no tag points at, and every other blob in `blobs/` against its name.
pub fn verify(layout: &Layout, all: bool) -> Result<VerifyReport> {
    let mut w = Walker {
        layout,
        walked: HashSet::new(),
        reachable: HashSet::new(),
        leaves: BTreeMap::new(),
        problems: Vec::new(),
        notes: Vec::new(),
        blobs_checked: 0,
        bytes_checked: 0,
        manifests: 0,
    };
    probe_index_lock(layout, &mut w.notes);
    let index = layout.read_index()?;
    match &index {
        None => w
            .notes
            .push(format!("{} does not exist: nothing is tagged", layout.index_path().display())),
        Some(index) => {
            for (i, d) in index.manifests.iter().enumerate() {
                let label = match d.annotation(media::ANNOTATION_REF_NAME) {
                    Some(tag) => format!("tag {tag}"),
                    None => format!("index.json entry {i}"),
                };
                w.root(d, label);
            }
        }
    }
    if all {
        let tagged: HashSet<Digest> = index
            .as_ref()
            .map(|i| i.manifests.iter().map(|d| d.digest.clone()).collect())
            .unwrap_or_default();
        for found in scan_cache_manifests(layout, &tagged)? {
            let desc = Descriptor::new(found.manifest.form.media_type(), found.digest, found.size);
            w.root(&desc, "untagged version in blobs/".to_owned());
        }
    }

    let walk = layout.walk_blobs()?;
    for s in &walk.skipped {
        w.notes.push(format!("{}: not a blob ({}), ignored", s.path.display(), s.reason));
    }
    let (mut unreferenced_blobs, mut unreferenced_bytes) = (0, 0);
    for b in &walk.blobs {
        if !w.reachable.contains(&b.digest) {
            unreferenced_blobs += 1;
            unreferenced_bytes += b.size;
            if all {
                // No descriptor gives its size, but its name still says what its content is.
                w.leaf(b.digest.clone(), Some(b.size), "unreferenced".to_owned());
            }
        }
    }
    if unreferenced_blobs > 0 {
        w.notes.push(format!(
            "{unreferenced_blobs} blob(s) ({unreferenced_bytes} bytes) in blobs/ are not referenced \
             by {}: older cache versions or interrupted exports, reclaimable by pruning",
            if all { "any version" } else { "a tagged version" }
        ));
    }
    note_ingests(layout, &mut w.notes);

    // Layers are the bulk of the bytes: hash them in parallel, one blob per task.
    let leaves: Vec<_> = std::mem::take(&mut w.leaves).into_iter().collect();
    let results: Vec<_> = leaves
        .par_iter()
        .map(|((digest, size), referrer)| (layout.verify_blob(digest, *size), *size, referrer))
        .collect();
    for (res, size, referrer) in results {
        w.blobs_checked += 1;
        match res {
            Ok(()) => w.bytes_checked += size.unwrap_or(0),
            Err(p) => w.problems.push(from_blob_problem(p, referrer.clone())),
        }
    }
    Ok(VerifyReport {
        root: layout.root().to_owned(),
        manifests: w.manifests,
        blobs_checked: w.blobs_checked,
        bytes_checked: w.bytes_checked,
        problems: w.problems,
        notes: w.notes,
        unreferenced_blobs,
        unreferenced_bytes,
    })
}

struct Walker<'a> {
    layout: &'a Layout,
    /// JSON blobs already walked (a manifest shared by two tags is checked once).
    walked: HashSet<Digest>,
    /// Everything referenced so far, for the unreferenced count.
    reachable: HashSet<Digest>,
    /// Non-JSON blobs to hash later, by (digest, expected size), with a referrer.
    leaves: BTreeMap<(Digest, Option<u64>), String>,
    problems: Vec<VerifyProblem>,
    notes: Vec<String>,
    blobs_checked: usize,
    bytes_checked: u64,
    manifests: usize,
}

impl Walker<'_> {
    fn problem(&mut self, digest: &Digest, kind: ProblemKind, referrer: &str) {
        let path = self.layout.blob_path(digest);
        self.problems.push(VerifyProblem::new(digest.clone(), path, kind, referrer.to_owned()));
    }

    fn leaf(&mut self, digest: Digest, size: Option<u64>, referrer: String) {
        self.reachable.insert(digest.clone());
        self.leaves.entry((digest, size)).or_insert(referrer);
    }

    /// An `index.json` entry (or an untagged manifest found in `blobs/`).
    fn root(&mut self, desc: &Descriptor, label: String) {
        if is_manifest_type(&desc.media_type) {
            self.node(desc, &label, 0);
        } else {
            self.notes.push(format!(
                "{label}: {} has media type {:?}, not a cache manifest; checked as a plain blob",
                desc.digest, desc.media_type
            ));
            self.leaf(desc.digest.clone(), Some(desc.size), label);
        }
    }

    /// A manifest or index: check the blob, then walk what it references.
    fn node(&mut self, desc: &Descriptor, referrer: &str, depth: usize) {
        self.reachable.insert(desc.digest.clone());
        if !self.walked.insert(desc.digest.clone()) {
            return;
        }
        self.manifests += 1;
        let Some(bytes) = self.read_json(desc, referrer) else { return };
        let here = format!("manifest {}", desc.digest);
        match CacheManifest::parse(&bytes) {
            Ok(m) => self.cache_manifest(&desc.digest, &bytes, &m, &here),
            Err(ManifestError::NoCacheConfig { form }) => {
                self.notes.push(format!(
                    "{referrer}: {} is an {form} without a cache config, not a cache manifest \
                     (an image?); its blobs were checked generically",
                    desc.digest
                ));
                self.image(desc, &bytes, form, &here, depth);
            }
            Err(e) => {
                let kind = ProblemKind::UnparseableJson { error: e.to_string() };
                self.problem(&desc.digest, kind, referrer);
            }
        }
    }

    fn cache_manifest(&mut self, digest: &Digest, bytes: &[u8], m: &CacheManifest, here: &str) {
        if let Some(w) = buildkit_import_limit_exceeded(bytes.len() as u64) {
            self.notes.push(format!("cache manifest {digest}: {w}"));
        }
        for d in &m.layers {
            self.leaf(d.digest.clone(), Some(d.size), format!("layer of {here}"));
        }
        let cfg = &m.config;
        self.reachable.insert(cfg.digest.clone());
        let referrer = format!("config of {here}");
        let Some(cfg_bytes) = self.read_json(cfg, &referrer) else { return };
        if let Some(w) = buildkit_import_limit_exceeded(cfg_bytes.len() as u64) {
            self.notes.push(format!("cache config {}: {w}", cfg.digest));
        }
        let config = match CacheConfig::from_json(&cfg_bytes) {
            Ok(c) => c,
            Err(e) => {
                let kind = ProblemKind::UnparseableJson { error: e.to_string() };
                return self.problem(&cfg.digest, kind, &referrer);
            }
        };
        for p in validate(&config, Some(&m.layers)) {
            if p.is_error() {
                let kind = ProblemKind::InvalidConfig { message: p.message };
                self.problem(&cfg.digest, kind, &referrer);
            } else {
                self.notes.push(format!("cache config {}: {p}", cfg.digest));
            }
        }
    }

    /// A non-cache index or manifest: walk it as an OCI image would be.
    fn image(
        &mut self,
        desc: &Descriptor,
        bytes: &[u8],
        form: ManifestForm,
        here: &str,
        depth: usize,
    ) {
        if form.is_index() {
            let index = match Index::from_slice(bytes) {
                Ok(i) => i,
                Err(e) => {
                    let kind = ProblemKind::UnparseableJson { error: e.to_string() };
                    return self.problem(&desc.digest, kind, here);
                }
            };
            for child in &index.manifests {
                if !is_manifest_type(&child.media_type) {
                    self.leaf(child.digest.clone(), Some(child.size), format!("entry of {here}"));
                } else if depth + 1 >= MAX_DEPTH {
                    self.notes.push(format!(
                        "{here}: indexes nested deeper than {MAX_DEPTH} levels; {} not followed",
                        child.digest
                    ));
                } else {
                    self.node(child, &format!("entry of {here}"), depth + 1);
                }
            }
            return;
        }
        #[derive(serde::Deserialize)]
        struct ImageManifest {
            #[serde(default)]
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Option<Vec<Descriptor>>,
        }
        let m: ImageManifest = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                let kind = ProblemKind::UnparseableJson { error: e.to_string() };
                return self.problem(&desc.digest, kind, here);
            }
        };
        for l in m.layers.unwrap_or_default() {
            self.leaf(l.digest, Some(l.size), format!("layer of {here}"));
        }
        if let Some(cfg) = m.config {
            self.reachable.insert(cfg.digest.clone());
            let referrer = format!("config of {here}");
            if let Some(b) = self.read_json(&cfg, &referrer)
                && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&b)
            {
                let kind = ProblemKind::UnparseableJson { error: e.to_string() };
                self.problem(&cfg.digest, kind, &referrer);
            }
        }
    }

    /// Reads a JSON blob and checks its size and digest; `None` (with the problem
    /// recorded) when it is not exactly what `desc` describes, since parsing content
    /// that is not the referenced blob would only produce misleading findings.
    fn read_json(&mut self, desc: &Descriptor, referrer: &str) -> Option<Vec<u8>> {
        self.blobs_checked += 1;
        let digest = &desc.digest;
        let bytes = match self.layout.read_blob_limited(digest, MAX_READ_SIZE as u64) {
            Ok(b) => b,
            Err(e) => {
                let kind = match e {
                    StoreError::BlobNotFound { .. } => ProblemKind::Missing,
                    StoreError::BlobTooLarge { size, limit, .. } => {
                        ProblemKind::TooLarge { size, limit }
                    }
                    other => ProblemKind::Unreadable { error: other.to_string() },
                };
                self.problem(digest, kind, referrer);
                return None;
            }
        };
        if bytes.len() as u64 != desc.size {
            let kind = ProblemKind::WrongSize { expected: desc.size, actual: bytes.len() as u64 };
            self.problem(digest, kind, referrer);
            return None;
        }
        let computed = Digest::of_bytes(&bytes);
        if computed != *digest {
            self.problem(digest, ProblemKind::DigestMismatch { computed }, referrer);
            return None;
        }
        self.bytes_checked += desc.size;
        Some(bytes)
    }
}

/// Whether a descriptor's media type says "index or manifest". An empty one counts:
/// Go omits it in old indexes, and the content then decides (as BuildKit does).
fn is_manifest_type(media_type: &str) -> bool {
    media_type.is_empty() || ManifestForm::from_media_type(media_type).is_some()
}

fn from_blob_problem(p: BlobProblem, referrer: String) -> VerifyProblem {
    match p {
        BlobProblem::Missing { digest, path } => {
            VerifyProblem::new(digest, path, ProblemKind::Missing, referrer)
        }
        BlobProblem::WrongSize { digest, path, expected, actual } => {
            VerifyProblem::new(digest, path, ProblemKind::WrongSize { expected, actual }, referrer)
        }
        BlobProblem::WrongDigest { digest, path, actual } => VerifyProblem::new(
            digest,
            path,
            ProblemKind::DigestMismatch { computed: actual },
            referrer,
        ),
        BlobProblem::Unreadable { digest, path, source } => VerifyProblem::new(
            digest,
            path,
            ProblemKind::Unreadable { error: source.to_string() },
            referrer,
        ),
    }
}

/// Notes whether `index.json.lock` is left over or held right now.
///
/// The file is opened read-only and only if it exists: creating it would be a write,
/// and a shared flock on a read-only descriptor is allowed. The probe is released at
/// once, so a writer waiting for the exclusive lock is delayed by microseconds at most.
fn probe_index_lock(layout: &Layout, notes: &mut Vec<String>) {
    let path = layout.index_lock_path();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            notes.push(format!("{} exists but cannot be opened: {e}", path.display()));
            return;
        }
    };
    match file.try_lock_shared() {
        Ok(()) => {
            notes.push(format!(
                "{} exists but no process holds it: left behind by an earlier index.json \
                 update, harmless",
                path.display()
            ));
            // Closing the file (drop) releases the lock anyway; unlocking first is tidy.
            let _ = file.unlock();
        }
        Err(TryLockError::WouldBlock) => notes.push(format!(
            "{} is held by another process: index.json may be changing right now, so this \
             report can be out of date",
            path.display()
        )),
        Err(TryLockError::Error(e)) => {
            notes.push(format!("could not test the lock {}: {e}", path.display()));
        }
    }
}

fn note_ingests(layout: &Layout, notes: &mut Vec<String>) {
    let entries = match layout.list_ingests() {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("could not list ingest/: {e}"));
            return;
        }
    };
    for e in entries {
        let state = match e.writer_alive {
            Some(true) => "a write in progress".to_owned(),
            Some(false) => "left by a writer that is no longer running".to_owned(),
            None => format!("idle for {}s, writer unknown", e.age.as_secs()),
        };
        notes.push(format!("ingest entry {} ({} bytes): {state}", e.path.display(), e.size));
    }
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairReport {
    /// The layout's root.
    pub root: PathBuf,
    /// Blobs deleted because their content does not hash to their name, with why.
    pub removed_blobs: Vec<RepairedBlob>,
    /// Untagged cache manifests deleted because blobs they need are gone or corrupt.
    pub removed_untagged: Vec<Digest>,
    /// Ingest entries of writers that are no longer running (or long idle) removed.
    pub removed_ingests: Vec<PathBuf>,
    /// `index.json` entries dropped: "tag T (sha256:…): why" per entry.
    pub dropped_entries: Vec<String>,
    /// Where the old `index.json` was saved, when an entry was dropped.
    pub index_backup: Option<PathBuf>,
    /// Problems [`verify`] still finds afterwards (e.g. an unreadable file); empty when
    /// the repair left a consistent cache.
    pub remaining: Vec<VerifyProblem>,
}

/// One blob [`repair`] deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairedBlob {
    /// Its name.
    pub digest: Digest,
    /// Why it was deleted (what its content hashes to).
    pub reason: String,
}

/// Brings a damaged cache back to a consistent state by removing what cannot be used:
///
/// 1. every blob whose content does not hash to its name (a torn copy, bit rot);
/// 2. ingest entries whose writer is known dead, or idle for longer than
///    [`crate::gc::INGEST_MIN_AGE`] (containerd's) or a day (a strata writer on another
///    host);
/// 3. `index.json` entries whose manifest, config or layers are missing, of the wrong
///    size or unparseable — after saving the old file as `index.json.bak-<unix time>`;
/// 4. untagged cache manifests in `blobs/` whose blobs are gone.
///
/// Nothing that verifies is touched, and blobs no longer referenced are left for
/// `strata cache prune`. Runs under [`Layout::gc_lock`] (waiting up to `timeout` for
/// exports in flight) so an export's blobs are never judged while it is writing them;
/// `index.json` changes go through [`Layout::update_index`].
pub fn repair(layout: &Layout, timeout: std::time::Duration) -> Result<RepairReport> {
    let _gc = layout.gc_lock(timeout)?;
    let mut report = RepairReport { root: layout.root().to_owned(), ..RepairReport::default() };

    // 1. Content that is not what its name says can never be right for anyone.
    let walk = layout.walk_blobs()?;
    let bad: Vec<(Digest, String)> = walk
        .blobs
        .par_iter()
        .filter_map(|b| match layout.verify_blob(&b.digest, None) {
            Err(BlobProblem::WrongDigest { actual, .. }) => {
                Some((b.digest.clone(), format!("content hashes to {actual}")))
            }
            _ => None,
        })
        .collect();
    for (digest, reason) in bad {
        remove_file(&layout.blob_path(&digest))?;
        report.removed_blobs.push(RepairedBlob { digest, reason });
    }

    // 2. Dead writers' ingest entries.
    let removed = layout.remove_stale_ingests(crate::gc::INGEST_MIN_AGE)?;
    report.removed_ingests = removed.into_iter().map(|e| e.path).collect();

    // 3. index.json entries that cannot be imported any more.
    if let Some(index) = layout.read_index()? {
        let broken: BTreeMap<Digest, String> = index
            .manifests
            .iter()
            .filter_map(|d| entry_problem(layout, d).map(|why| (d.digest.clone(), why)))
            .collect();
        if !broken.is_empty() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let backup = layout.root().join(format!("index.json.bak-{stamp}"));
            let index_path = layout.index_path();
            let dropped = layout.update_index(timeout, |idx| {
                // Copied under the index lock, so the backup is exactly what is replaced.
                std::fs::copy(&index_path, &backup).map_err(|source| StoreError::Io {
                    op: "back up index.json to",
                    path: backup.clone(),
                    source,
                })?;
                let mut dropped = Vec::new();
                idx.manifests.retain(|d| match broken.get(&d.digest) {
                    Some(why) => {
                        let who = d.annotation(media::ANNOTATION_REF_NAME).unwrap_or("untagged");
                        dropped.push(format!("tag {who} ({}): {why}", d.digest));
                        false
                    }
                    None => true,
                });
                Ok::<_, StoreError>(dropped)
            })?;
            report.dropped_entries = dropped;
            report.index_backup = Some(backup);
        }
    }

    // 4. Older exports whose blobs are gone: `verify --all` would keep flagging them.
    let tagged: HashSet<Digest> = layout
        .read_index()?
        .map(|i| i.manifests.iter().map(|d| d.digest.clone()).collect())
        .unwrap_or_default();
    for found in scan_cache_manifests(layout, &tagged)? {
        let desc = Descriptor::new(found.manifest.form.media_type(), found.digest, found.size);
        if entry_problem(layout, &desc).is_some() {
            remove_file(&layout.blob_path(&desc.digest))?;
            report.removed_untagged.push(desc.digest);
        }
    }

    drop(_gc);
    report.remaining = verify(layout, false)?.problems;
    Ok(report)
}

fn remove_file(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io { op: "remove", path: path.to_owned(), source }.into()),
    }
}

/// Why the version an `index.json` entry names cannot be used, if it cannot. Corrupt
/// content was already removed, so presence and size decide for layers; manifest and
/// config must also parse. Entries that are not cache manifests (images) are judged
/// only by their own blob.
fn entry_problem(layout: &Layout, desc: &Descriptor) -> Option<String> {
    let check = |d: &Descriptor, what: &str| -> Option<String> {
        match layout.stat_blob(&d.digest) {
            Ok(Some(size)) if size == d.size => None,
            Ok(Some(size)) => Some(format!("{what} {} is {size} bytes, not {}", d.digest, d.size)),
            Ok(None) => Some(format!("{what} {} is missing", d.digest)),
            Err(e) => Some(format!("{what} {}: {e}", d.digest)),
        }
    };
    if let Some(why) = check(desc, "manifest") {
        return Some(why);
    }
    let bytes = match layout.read_blob_limited(&desc.digest, MAX_READ_SIZE as u64) {
        Ok(b) => b,
        Err(e) => return Some(format!("manifest {}: {e}", desc.digest)),
    };
    let m = match CacheManifest::parse(&bytes) {
        Ok(m) => m,
        Err(ManifestError::NoCacheConfig { .. }) => return None,
        Err(e) => return Some(format!("manifest {} does not parse: {e}", desc.digest)),
    };
    if let Some(why) = check(&m.config, "config") {
        return Some(why);
    }
    match layout.read_blob_limited(&m.config.digest, MAX_READ_SIZE as u64) {
        Ok(b) => {
            if let Err(e) = CacheConfig::from_json(&b) {
                return Some(format!("config {} does not parse: {e}", m.config.digest));
            }
        }
        Err(e) => return Some(format!("config {}: {e}", m.config.digest)),
    }
    m.layers.iter().find_map(|l| check(l, "layer"))
}
