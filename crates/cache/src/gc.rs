//! Garbage collection of a `type=local` cache: `strata cache prune` and the export-time
//! `reset=true` / `keep-last` / `max-size` / `max-age` keys of `--cache-to` (spec §9–§10).
//!
//! # Versions
//!
//! A *version* is one cache manifest (any of the three forms) with its config and layer
//! blobs. *Indexed* versions are the `index.json` entries (normally tagged by
//! `org.opencontainers.image.ref.name`); *untagged* versions are the other cache manifests
//! still in `blobs/` (older exports a tag no longer points at). A version's *last use* is
//! the later of its manifest blob's mtime (when it was exported; an export that reuses an
//! existing manifest does not touch it) and the time importers recorded in the best-effort
//! sidecar `<dir>/.strata-lastuse.json` ([`record_use`]).
//!
//! # Policy (see [`PrunePolicy`]), applied in this order
//!
//! 1. `keep_last`: untagged versions beyond the `keep_last` most recently used are dropped
//!    (reason `keep-last`; with `keep_last = 0`, reason `untagged-unreachable`).
//! 2. `max_age`: untagged versions, and indexed versions whose tags are not in
//!    `keep_tags` (only when `keep_tags` is `Some`), unused for longer than `max_age` are
//!    dropped. Tags kept by `keep_tags` (every tag when it is `None`) are never dropped for
//!    age: a tag is what an import asks for, and silently removing the one a CI job
//!    imports every day because the job has not *exported* for a week would be a surprise.
//! 3. `max_size`: while the bytes reachable from what is kept exceed `max_size`, drop
//!    untagged versions least recently used first, then tags not in `keep_tags`, then the
//!    remaining tags, each least recently used first. The tags dropped this way are in
//!    [`PruneReport::dropped_tags`]. If only protected things are left and the cache is
//!    still too large, [`PruneReport::max_size_unmet`] says so.
//!
//! Never dropped: versions whose manifest digest is in [`PrunePolicy::protect`] (the one
//! an export just wrote), and `index.json` entries that carry `io.containerd.image.name`
//! or that are not cache manifests (images are walked generically, index → manifests →
//! config + layers, and all their blobs are kept).
//!
//! # Sweep
//!
//! Every blob not reachable from a kept version or a kept `index.json` entry is deleted,
//! as are stale `ingest/` entries ([`INGEST_MIN_AGE`]; never one whose writer still runs)
//! and temp files a crashed index or sidecar writer left.
//!
//! # Concurrency
//!
//! The whole prune runs under [`Layout::gc_lock`] (exclusive). strata exports hold
//! [`Layout::export_lease`] (shared) from their first blob write until `index.json` names
//! the manifest, so prune waits for them and then sees their blobs as reachable: the race
//! of moby/buildkit#7102 cannot happen between strata processes. An export that wants GC
//! must therefore release its lease *before* calling [`prune`] (flock conflicts even
//! within one process), passing its manifest in `protect`.
//!
//! buildx/buildctl take no such lease. Their layer blobs are committed minutes before
//! their manifest and `index.json` entry exist; to avoid deleting an in-flight foreign
//! export's layers, blobs that no known cache manifest references are only deleted once
//! older than [`ORPHAN_GRACE`]. Blobs of a version prune itself decided to drop are
//! deleted at once (that is what `reset` is for); a foreign export that reuses one of
//! them while prune runs can still lose it, as with BuildKit's own `reset`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use strata_oci::stale::UNKNOWN_WRITER_MAX_AGE;
use strata_oci::{Descriptor, Digest, Index, Layout, StoreError, media};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::inspect::{InspectError, scan_cache_manifests};
use crate::limits::MAX_READ_SIZE;
use crate::manifest::CacheManifest;

/// The import sidecar at the layout root: a JSON object mapping manifest digests to the
/// RFC 3339 time they were last imported. BuildKit ignores files at the root it does not
/// know, so the file is invisible to it.
pub const LAST_USE_FILE: &str = ".strata-lastuse.json";

/// Ingest entries idle for less than this are never removed (unless strata knows their
/// writer is dead): a slow upload may pause for a long time between writes.
pub const INGEST_MIN_AGE: Duration = Duration::from_secs(3600);

/// A blob that no cache manifest references is deleted only once this old (mtime): it
/// may be a layer of a buildx/buildctl export still in flight, which takes no lease.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Temp files of the sidecar writer older than this are presumed abandoned.
const SIDECAR_TEMP_MAX_AGE: Duration = Duration::from_secs(3600);

/// How deep the generic image walk follows `manifests` (index → index → manifest).
const MAX_IMAGE_DEPTH: usize = 8;

/// Why garbage collection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// The layout store failed: missing directory, corrupt `index.json`, a lock that could
    /// not be taken in time, or an I/O error while deleting. The message names the path.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Scanning `blobs/` for untagged versions failed (the message names the path).
    #[error("could not scan {path} for cache manifests: {source}")]
    Scan {
        /// The blob directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: InspectError,
    },
}

/// Result alias for this module.
pub type Result<T, E = GcError> = std::result::Result<T, E>;

/// What to keep. The fields compose as described in the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Tags that are never dropped for age; `None` keeps every tag (the default).
    /// Tags not listed (and `index.json` entries without a tag) are dropped when older
    /// than `max_age`, and go before listed tags under `max_size`. Listing a tag does not
    /// create it, and does not exempt it from `max_size`.
    pub keep_tags: Option<Vec<String>>,
    /// How many untagged versions to keep, most recently used first; `None` keeps all.
    pub keep_last: Option<usize>,
    /// Upper bound, in bytes, for the blobs reachable from what is kept.
    pub max_size: Option<u64>,
    /// Versions (untagged, or with tags not in `keep_tags`) unused for longer are dropped.
    pub max_age: Option<Duration>,
    /// Manifest digests that are never dropped (e.g. the version being exported). They
    /// do not use up `keep_last` slots.
    pub protect: Vec<Digest>,
}

impl PrunePolicy {
    /// BuildKit's `reset=true`: keep every tag, drop every untagged version, so that every
    /// blob no `index.json` entry reaches is removed.
    pub fn reset(protect: Vec<Digest>) -> Self {
        Self { keep_last: Some(0), protect, ..Self::default() }
    }

    /// The policy for an export's `--cache-to` keys, or `None` when neither `reset` nor a
    /// GC key is set. `keep-last` wins over `reset` for untagged versions (`reset=true,
    /// keep-last=2` keeps two); `exported` is protected.
    pub fn for_export(
        gc: &crate::options::GcPolicy,
        reset: bool,
        exported: Digest,
    ) -> Option<Self> {
        if !reset && !gc.is_set() {
            return None;
        }
        Some(Self {
            keep_tags: None,
            keep_last: gc.keep_last.or(reset.then_some(0)),
            max_size: gc.max_size,
            max_age: gc.max_age_secs.map(Duration::from_secs),
            protect: vec![exported],
        })
    }
}

/// Why a version was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// Beyond the `keep_last` most recently used untagged versions.
    KeepLast,
    /// Unused for longer than `max_age`.
    MaxAge,
    /// Dropped to bring the cache under `max_size`.
    MaxSize,
    /// Untagged, and the policy keeps no untagged versions (`reset`, `keep_last = 0`).
    UntaggedUnreachable,
}

impl DropReason {
    /// The kebab-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeepLast => "keep-last",
            Self::MaxAge => "max-age",
            Self::MaxSize => "max-size",
            Self::UntaggedUnreachable => "untagged-unreachable",
        }
    }
}

/// One dropped version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedVersion {
    /// Its cache manifest digest.
    pub digest: Digest,
    /// Its tag (several joined by `, `); `None` for an untagged version.
    pub tag: Option<String>,
    /// Why it was dropped.
    pub reason: DropReason,
    /// Bytes of its blobs that were (or, in a dry run, would be) deleted: blobs shared
    /// with a kept version stay, and a blob shared by two dropped versions counts once.
    pub bytes: u64,
    /// Its last use (RFC 3339), as prune judged it.
    pub last_use: Option<String>,
}

/// A tag removed from `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DroppedTag {
    /// The tag.
    pub tag: String,
    /// The manifest it pointed at.
    pub digest: Digest,
    /// `max-size` or `max-age`.
    pub reason: DropReason,
}

/// A removed (or, in a dry run, removable) `ingest/` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedIngest {
    /// Its path.
    pub path: PathBuf,
    /// Bytes of partial data it held.
    pub bytes: u64,
}

/// What [`prune`] did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// Dropped versions, in the order they were dropped.
    pub removed_versions: Vec<RemovedVersion>,
    /// Tags removed from `index.json`, with why.
    pub dropped_tags: Vec<DroppedTag>,
    /// Blobs deleted (dropped versions' blobs and unreferenced ones).
    pub removed_blobs: usize,
    /// Bytes of those blobs.
    pub removed_bytes: u64,
    /// Stale ingest entries removed.
    pub removed_ingests: Vec<RemovedIngest>,
    /// Unreferenced blobs kept because they are younger than [`ORPHAN_GRACE`].
    pub kept_recent_orphans: usize,
    /// Cache versions kept (indexed and untagged).
    pub kept_versions: usize,
    /// Bytes of the blobs still reachable afterwards.
    pub kept_bytes: u64,
    /// `max_size` was set and could not be met without dropping protected versions.
    pub max_size_unmet: bool,
    /// Whether the dry run could not take the GC lock (read-only directory), so its view
    /// may include blobs of an export in flight.
    pub unlocked: bool,
}

/// [`prune`] with [`PrunePolicy::reset`]: BuildKit's `reset=true`, without its race.
pub fn reset(layout: &Layout, protect: Vec<Digest>, lock_timeout: Duration) -> Result<PruneReport> {
    prune(layout, &PrunePolicy::reset(protect), false, lock_timeout)
}

/// One cache version found in the layout.
struct Version {
    digest: Digest,
    /// `(tag, has-image-name)` of each `index.json` entry pointing here.
    entries: Vec<(Option<String>, bool)>,
    /// Manifest, config and layer blobs.
    blobs: BTreeSet<Digest>,
    last_use: Option<SystemTime>,
}

impl Version {
    fn indexed(&self) -> bool {
        !self.entries.is_empty()
    }

    fn tag_label(&self) -> Option<String> {
        let tags: Vec<&str> = self.entries.iter().filter_map(|(t, _)| t.as_deref()).collect();
        (!tags.is_empty()).then(|| tags.join(", "))
    }
}

/// Drop-order class: untagged first, then tags not in `keep_tags`, then kept tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Untagged,
    UnlistedTag,
    KeptTag,
}

/// Garbage-collects `layout` by `policy` (see the [module docs](self)).
///
/// Takes [`Layout::gc_lock`] for the whole run, waiting up to `lock_timeout` for exports
/// that hold leases; `index.json` changes go through [`Layout::update_index`]. With
/// `dry_run` nothing is written or deleted; the lock is still taken (briefly, for a
/// consistent view) unless the directory is read-only, in which case
/// [`PruneReport::unlocked`] is set.
pub fn prune(
    layout: &Layout,
    policy: &PrunePolicy,
    dry_run: bool,
    lock_timeout: Duration,
) -> Result<PruneReport> {
    let mut unlocked = false;
    // A dry run writes nothing, not even the lock file: if it does not exist, no strata
    // export has ever held a lease here. One starting right now can at worst make the
    // report list its not-yet-indexed manifest as removable; nothing is deleted.
    let skip_lock = dry_run && !layout.gc_lock_path().exists();
    let _guard = match if skip_lock { None } else { Some(layout.gc_lock(lock_timeout)) } {
        None => None,
        Some(Ok(g)) => Some(g),
        // A dry run only looks; on a read-only cache it cannot create the lock file.
        Some(Err(StoreError::Io { path, source, .. })) if dry_run => {
            tracing::warn!(
                "dry run without the GC lock: could not open {}: {source}",
                path.display()
            );
            unlocked = true;
            None
        }
        Some(Err(e)) => return Err(e.into()),
    };

    // Everything below is read after the lock is held, so no strata export is between
    // writing blobs and naming them in index.json.
    let walk = layout.walk_blobs()?;
    let sizes: HashMap<Digest, (u64, Option<SystemTime>)> =
        walk.blobs.iter().map(|b| (b.digest.clone(), (b.size, b.modified))).collect();
    let index = layout.read_index()?.unwrap_or_default();
    let last_uses = last_uses(layout.root());
    let (mut versions, mut pinned) = collect_versions(layout, &index, &sizes, &last_uses)?;

    let protect: HashSet<&Digest> = policy.protect.iter().collect();
    let class_of = |v: &Version| -> Option<Class> {
        if protect.contains(&v.digest) || v.entries.iter().any(|(_, image)| *image) {
            return None; // never dropped
        }
        if !v.indexed() {
            return Some(Class::Untagged);
        }
        let Some(keep) = &policy.keep_tags else { return Some(Class::KeptTag) };
        let listed = v.entries.iter().any(|(t, _)| t.as_ref().is_some_and(|t| keep.contains(t)));
        Some(if listed { Class::KeptTag } else { Class::UnlistedTag })
    };
    // Most recently used first; the digest breaks ties so the result is deterministic.
    let newest_first =
        |a: &Version, b: &Version| b.last_use.cmp(&a.last_use).then(a.digest.cmp(&b.digest));
    versions.sort_by(newest_first);

    let mut dropped: Vec<(usize, DropReason)> = Vec::new();
    let mut is_dropped = vec![false; versions.len()];

    // 1. keep_last over untagged versions.
    if let Some(keep_last) = policy.keep_last {
        let reason =
            if keep_last == 0 { DropReason::UntaggedUnreachable } else { DropReason::KeepLast };
        let untagged =
            (0..versions.len()).filter(|&i| class_of(&versions[i]) == Some(Class::Untagged));
        for i in untagged.skip(keep_last) {
            is_dropped[i] = true;
            dropped.push((i, reason));
        }
    }

    // 2. max_age over untagged versions and tags not in keep_tags.
    if let Some(max_age) = policy.max_age {
        let now = SystemTime::now();
        for (i, v) in versions.iter().enumerate() {
            let ageable = matches!(class_of(v), Some(Class::Untagged | Class::UnlistedTag));
            // No time at all (mtime unreadable): unknown age, keep.
            let old =
                v.last_use.and_then(|t| now.duration_since(t).ok()).is_some_and(|a| a > max_age);
            if ageable && old && !is_dropped[i] {
                is_dropped[i] = true;
                dropped.push((i, DropReason::MaxAge));
            }
        }
    }

    // 3. max_size: reference-count blobs of what is kept and drop until under the bound.
    let mut max_size_unmet = false;
    if let Some(max_size) = policy.max_size {
        let mut refs: HashMap<&Digest, usize> = HashMap::new();
        for (i, v) in versions.iter().enumerate() {
            if !is_dropped[i] {
                for b in &v.blobs {
                    *refs.entry(b).or_default() += 1;
                }
            }
        }
        let size_of = |d: &Digest| sizes.get(d).map_or(0, |s| s.0);
        let mut total: u64 =
            refs.keys().filter(|d| !pinned.contains(**d)).map(|d| size_of(d)).sum();
        total += pinned.iter().map(size_of).sum::<u64>();
        let mut order: Vec<(Class, usize)> = (0..versions.len())
            .filter(|&i| !is_dropped[i])
            .filter_map(|i| class_of(&versions[i]).map(|c| (c, i)))
            .collect();
        // Within a class, least recently used first: versions are sorted newest first.
        order.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut next = order.into_iter();
        while total > max_size {
            let Some((_, i)) = next.next() else {
                max_size_unmet = true;
                break;
            };
            is_dropped[i] = true;
            dropped.push((i, DropReason::MaxSize));
            for b in &versions[i].blobs {
                if let Some(n) = refs.get_mut(b) {
                    *n -= 1;
                    if *n == 0 && !pinned.contains(b) {
                        total = total.saturating_sub(size_of(b));
                    }
                }
            }
        }
    }

    // Remove the dropped versions' index.json entries, re-checking under the index lock:
    // only an entry that still names the same (digest, tag) is removed. An entry that now
    // points a dropped digest elsewhere (a new tag added meanwhile) keeps that version.
    let to_untag: HashSet<(Digest, Option<String>)> = dropped
        .iter()
        .filter(|(i, _)| versions[*i].indexed())
        .flat_map(|(i, _)| {
            versions[*i].entries.iter().map(|(t, _)| (versions[*i].digest.clone(), t.clone()))
        })
        .collect();
    let final_index = if to_untag.is_empty() {
        index
    } else if dry_run {
        let mut idx = index;
        untag(&mut idx, &to_untag);
        idx
    } else {
        let mut result = Index::new();
        layout.update_index(lock_timeout, |idx| {
            untag(idx, &to_untag);
            result = idx.clone();
            Ok::<_, StoreError>(())
        })?;
        result
    };
    let still_named: HashSet<&Digest> = final_index.manifests.iter().map(|d| &d.digest).collect();
    dropped.retain(|(i, _)| {
        let keep = still_named.contains(&versions[*i].digest);
        if keep {
            is_dropped[*i] = false;
        }
        !keep
    });
    // An entry added by a client that takes no lease since we read index.json: keep all
    // it reaches.
    let known: HashSet<Digest> = versions.iter().map(|v| v.digest.clone()).collect();
    for d in &final_index.manifests {
        if !known.contains(&d.digest) && !pinned.contains(&d.digest) {
            reach_any(layout, d, &mut pinned)?;
        }
    }

    // Reachable = kept versions + pinned entries.
    let mut reachable: HashSet<&Digest> = pinned.iter().collect();
    for (i, v) in versions.iter().enumerate() {
        if !is_dropped[i] {
            reachable.extend(v.blobs.iter());
        }
    }
    let mut report = PruneReport {
        dry_run,
        removed_versions: Vec::new(),
        dropped_tags: Vec::new(),
        removed_blobs: 0,
        removed_bytes: 0,
        removed_ingests: Vec::new(),
        kept_recent_orphans: 0,
        kept_versions: is_dropped.iter().filter(|d| !**d).count(),
        kept_bytes: reachable.iter().filter_map(|d| sizes.get(*d)).map(|s| s.0).sum(),
        max_size_unmet,
        unlocked,
    };

    // Sweep: dropped versions' blobs in drop order (so each blob is attributed once), then
    // orphans.
    let mut attributed: HashSet<Digest> = HashSet::new();
    for (i, reason) in &dropped {
        let v = &versions[*i];
        let mut bytes = 0;
        for b in &v.blobs {
            if reachable.contains(b) || attributed.contains(b) {
                continue;
            }
            let Some((size, _)) = sizes.get(b) else { continue };
            attributed.insert(b.clone());
            if dry_run || layout.delete_blob_unsynced(b)? {
                bytes += size;
                report.removed_blobs += 1;
            }
        }
        report.removed_bytes += bytes;
        for (tag, _) in &v.entries {
            if let Some(tag) = tag {
                report.dropped_tags.push(DroppedTag {
                    tag: tag.clone(),
                    digest: v.digest.clone(),
                    reason: *reason,
                });
            }
        }
        report.removed_versions.push(RemovedVersion {
            digest: v.digest.clone(),
            tag: v.tag_label(),
            reason: *reason,
            bytes,
            last_use: v.last_use.map(rfc3339),
        });
    }
    let now = SystemTime::now();
    for b in &walk.blobs {
        if reachable.contains(&b.digest) || attributed.contains(&b.digest) {
            continue;
        }
        // No mtime: cannot tell its age, so treat it as young.
        let young =
            b.modified.is_none_or(|m| now.duration_since(m).unwrap_or_default() < ORPHAN_GRACE);
        if young {
            report.kept_recent_orphans += 1;
            continue;
        }
        if dry_run || layout.delete_blob_unsynced(&b.digest)? {
            report.removed_blobs += 1;
            report.removed_bytes += b.size;
        }
    }

    // One directory sync for the whole sweep instead of one per deleted blob (10,000
    // orphans took 2 s of fsyncs).
    if !dry_run && report.removed_blobs > 0 {
        layout.sync_blob_dir()?;
    }

    // Ingest leftovers. The dry run applies the same rule as remove_stale_ingests.
    let ingests = if dry_run {
        layout
            .list_ingests()?
            .into_iter()
            .filter(|e| match (e.strata, e.writer_alive) {
                (_, Some(true)) => false,
                (true, Some(false)) => true,
                (true, None) => e.age >= INGEST_MIN_AGE.max(UNKNOWN_WRITER_MAX_AGE),
                (false, _) => e.age >= INGEST_MIN_AGE,
            })
            .collect()
    } else {
        layout.remove_stale_ingests(INGEST_MIN_AGE)?
    };
    report.removed_ingests =
        ingests.into_iter().map(|e| RemovedIngest { path: e.path, bytes: e.size }).collect();

    if !dry_run {
        remove_temp_files(layout, lock_timeout)?;
        let gone: Vec<&Digest> = report.removed_versions.iter().map(|v| &v.digest).collect();
        forget_uses(layout.root(), &gone);
    }
    Ok(report)
}

/// Removes index entries whose (digest, tag) is in `to_untag` and that carry no image name.
fn untag(idx: &mut Index, to_untag: &HashSet<(Digest, Option<String>)>) {
    idx.manifests.retain(|d| {
        let image = d.annotation(media::ANNOTATION_IMAGE_NAME).is_some_and(|n| !n.is_empty());
        let tag = d.annotation(media::ANNOTATION_REF_NAME).map(str::to_owned);
        image || !to_untag.contains(&(d.digest.clone(), tag))
    });
}

/// Cache versions (indexed first, then untagged from a scan of `blobs/`) and the set of
/// blobs that must be kept whatever the policy (non-cache `index.json` entries).
fn collect_versions(
    layout: &Layout,
    index: &Index,
    sizes: &HashMap<Digest, (u64, Option<SystemTime>)>,
    uses: &BTreeMap<Digest, SystemTime>,
) -> Result<(Vec<Version>, BTreeSet<Digest>)> {
    let last_use = |d: &Digest| {
        let mtime = sizes.get(d).and_then(|s| s.1);
        match (mtime, uses.get(d).copied()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    };
    let mut versions: Vec<Version> = Vec::new();
    let mut by_digest: HashMap<Digest, usize> = HashMap::new();
    let mut pinned = BTreeSet::new();
    for d in &index.manifests {
        let tag = d.annotation(media::ANNOTATION_REF_NAME).map(str::to_owned);
        let image = d.annotation(media::ANNOTATION_IMAGE_NAME).is_some_and(|n| !n.is_empty());
        if let Some(&i) = by_digest.get(&d.digest) {
            versions[i].entries.push((tag, image));
            continue;
        }
        let parsed = layout
            .read_blob_limited(&d.digest, MAX_READ_SIZE as u64)
            .ok()
            .and_then(|b| CacheManifest::parse(&b).ok());
        match parsed {
            Some(m) => {
                by_digest.insert(d.digest.clone(), versions.len());
                versions.push(Version {
                    digest: d.digest.clone(),
                    entries: vec![(tag, image)],
                    blobs: version_blobs(&d.digest, &m),
                    last_use: last_use(&d.digest),
                });
            }
            // An image, or a broken entry: not ours to judge (verify reports it); keep
            // whatever it reaches.
            None => reach_any(layout, d, &mut pinned)?,
        }
    }
    let exclude: HashSet<Digest> = index.manifests.iter().map(|d| d.digest.clone()).collect();
    let found = scan_cache_manifests(layout, &exclude)
        .map_err(|source| GcError::Scan { path: layout.blob_dir(), source })?;
    for f in found {
        versions.push(Version {
            blobs: version_blobs(&f.digest, &f.manifest),
            last_use: last_use(&f.digest),
            digest: f.digest,
            entries: Vec::new(),
        });
    }
    Ok((versions, pinned))
}

fn version_blobs(digest: &Digest, m: &CacheManifest) -> BTreeSet<Digest> {
    let mut out: BTreeSet<Digest> = m.layers.iter().map(|d| d.digest.clone()).collect();
    out.insert(m.config.digest.clone());
    out.insert(digest.clone());
    out
}

/// Marks what a non-cache descriptor reaches: itself, and if it is a JSON manifest or
/// index, its config, layers, and (recursively) manifests.
fn reach_any(layout: &Layout, desc: &Descriptor, out: &mut BTreeSet<Digest>) -> Result<()> {
    let mut stack = vec![(desc.digest.clone(), 0usize)];
    while let Some((digest, depth)) = stack.pop() {
        if !out.insert(digest.clone()) || depth >= MAX_IMAGE_DEPTH {
            continue;
        }
        // Layers can be huge and are not JSON; anything over the limit or unparsable is a
        // leaf. A missing blob is a broken entry, which is verify's business.
        let bytes = match layout.read_blob_limited(&digest, MAX_READ_SIZE as u64) {
            Ok(b) => b,
            Err(StoreError::BlobNotFound { .. } | StoreError::BlobTooLarge { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        #[derive(serde::Deserialize)]
        struct Shape {
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Option<Vec<Descriptor>>,
            #[serde(default)]
            manifests: Option<Vec<Descriptor>>,
        }
        let Ok(shape) = serde_json::from_slice::<Shape>(&bytes) else { continue };
        for d in shape.config.into_iter().chain(shape.layers.into_iter().flatten()) {
            out.insert(d.digest);
        }
        for d in shape.manifests.into_iter().flatten() {
            stack.push((d.digest, depth + 1));
        }
    }
    Ok(())
}

/// Removes temp files of crashed writers: `.index.json.*.tmp` under the index lock (every
/// index writer holds it, so none is in use), and sidecar temps older than an hour (the
/// sidecar has no lock; a live writer renames its temp within milliseconds).
fn remove_temp_files(layout: &Layout, lock_timeout: Duration) -> Result<()> {
    let root = layout.root();
    let entries: Vec<(PathBuf, String)> = match fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
            .filter(|(_, n)| n.ends_with(".tmp"))
            .collect(),
        Err(e) => {
            return Err(StoreError::Io { op: "list", path: root.to_owned(), source: e }.into());
        }
    };
    let index_temps: Vec<&PathBuf> =
        entries.iter().filter(|(_, n)| n.starts_with(".index.json.")).map(|(p, _)| p).collect();
    if !index_temps.is_empty() {
        let _lock = layout.lock_index(lock_timeout)?;
        for p in index_temps {
            remove_file_quiet(p)?;
        }
    }
    let now = SystemTime::now();
    for (p, n) in &entries {
        let old = fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= SIDECAR_TEMP_MAX_AGE);
        if n.starts_with(&format!("{LAST_USE_FILE}.")) && old {
            remove_file_quiet(p)?;
        }
    }
    Ok(())
}

fn remove_file_quiet(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => {
            Err(StoreError::Io { op: "remove leftover temp file", path: p.to_owned(), source }
                .into())
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())))
}

/// The import times in `<layout_root>/.strata-lastuse.json`. Best effort: a missing,
/// unreadable or corrupt file, and entries that do not parse, count as "never imported".
pub fn last_uses(layout_root: &Path) -> BTreeMap<Digest, SystemTime> {
    let Ok(bytes) = fs::read(layout_root.join(LAST_USE_FILE)) else { return BTreeMap::new() };
    let Ok(raw) = serde_json::from_slice::<BTreeMap<String, String>>(&bytes) else {
        tracing::debug!("ignoring unreadable {}", layout_root.join(LAST_USE_FILE).display());
        return BTreeMap::new();
    };
    raw.into_iter()
        .filter_map(|(d, t)| {
            let d = Digest::parse(&d).ok()?;
            let t = OffsetDateTime::parse(&t, &Rfc3339).ok()?;
            Some((d, SystemTime::from(t)))
        })
        .collect()
}

/// Records that the version with manifest `digest` was imported now, so that `max-age`
/// and `keep-last` count imports as use, not only exports. See [`record_use_at`].
pub fn record_use(layout_root: &Path, digest: &Digest) {
    record_use_at(layout_root, digest, SystemTime::now());
}

/// Records a use of `digest` at `when` in `<layout_root>/.strata-lastuse.json`:
/// read, merge (keeping the later time), write a temp file, rename. Never touches
/// `index.json` and takes no lock, so importing from a cache another build is exporting
/// to does not wait. Errors are swallowed (logged at debug): a read-only cache simply
/// records nothing, and two importers racing may lose one entry, which only makes a
/// version look older than it is.
pub fn record_use_at(layout_root: &Path, digest: &Digest, when: SystemTime) {
    update_sidecar(layout_root, |map| {
        let when = rfc3339(when);
        let newer = map
            .get(digest.as_str())
            .and_then(|old| OffsetDateTime::parse(old, &Rfc3339).ok())
            .is_none_or(|old| OffsetDateTime::parse(&when, &Rfc3339).is_ok_and(|w| w > old));
        if newer {
            map.insert(digest.as_str().to_owned(), when);
        }
        newer
    });
}

/// Drops removed versions from the sidecar (best effort, like [`record_use`]).
fn forget_uses(layout_root: &Path, gone: &[&Digest]) {
    if gone.is_empty() || !layout_root.join(LAST_USE_FILE).exists() {
        return;
    }
    update_sidecar(layout_root, |map| {
        let before = map.len();
        map.retain(|k, _| !gone.iter().any(|g| g.as_str() == k));
        map.len() != before
    });
}

/// Read-merge-write of the sidecar. `merge` returns whether anything changed.
fn update_sidecar(root: &Path, merge: impl FnOnce(&mut BTreeMap<String, String>) -> bool) {
    let path = root.join(LAST_USE_FILE);
    let mut map: BTreeMap<String, String> =
        fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    if !merge(&mut map) {
        return;
    }
    let result = (|| -> io::Result<()> {
        let bytes = serde_json::to_vec(&map).map_err(io::Error::other)?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = root.join(format!("{LAST_USE_FILE}.{}-{nanos:x}.tmp", std::process::id()));
        // create_new: never write through a symlink or into another writer's temp file.
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        // No fsync: losing a use record in a crash only makes a version look older.
        let written = f.write_all(&bytes).and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    })();
    if let Err(e) = result {
        tracing::debug!("not recording cache use in {}: {e}", path.display());
    }
}
