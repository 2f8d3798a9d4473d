//! Read-only views of a cache directory: `strata cache ls` ([`list_versions`]) and
//! `strata cache inspect` ([`inspect_version`]). `strata cache verify` is in
//! [`crate::verify`].
//!
//! Nothing here writes to the layout, not even a lock file: a cache may sit on a
//! read-only mount or be in use by a buildctl client, and looking at it must never
//! change it. `index.json` is therefore read without its lock (see
//! [`Layout::read_index`] for why that is safe enough for reading).
//!
//! Every function returns plain serde-serialisable data; the CLI decides between JSON
//! and tables.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use strata_oci::{Descriptor, Digest, Index, Layout, StoreError, media};

use crate::chain::{Compression, compression_of, layer_chain};
use crate::config::CacheConfig;
use crate::error::{ConfigError, ManifestError};
use crate::gotime::GoTime;
use crate::limits::{MAX_READ_SIZE, buildkit_import_limit_exceeded};
use crate::manifest::{CacheManifest, ManifestForm};
use crate::validate::validate;

/// Why a cache directory or one of its versions cannot be listed or inspected.
///
/// Problems *inside* a cache that `verify` is meant to find (a corrupt layer, a broken
/// config) are data in a [`crate::verify::VerifyReport`], not errors; these are the
/// conditions under which there is nothing sensible to report at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The layout store failed: the directory is missing or not a directory,
    /// `index.json` is corrupt or truncated, a blob is absent or over the read limit, or
    /// an I/O error. The message names the file.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A tag was asked for but the directory has no `index.json`.
    #[error("{path} does not exist, so there is no tag {tag:?}; select a version with a digest")]
    NoIndex {
        /// Where `index.json` was looked for.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
    },
    /// `index.json` has no entry for the tag.
    #[error("tag {tag:?} not found in {path} (tags present: {})", list_or_none(.tags))]
    TagNotFound {
        /// The tag asked for.
        tag: String,
        /// Path of `index.json`.
        path: PathBuf,
        /// The tags it does have.
        tags: Vec<String>,
    },
    /// The selected blob is not a readable cache manifest (an image, or broken JSON).
    #[error("blob {digest} at {path} is not a usable cache manifest: {source}")]
    Manifest {
        /// The manifest's digest.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ManifestError,
    },
    /// The cache config blob cannot be decoded.
    #[error("cache config {digest} at {path} cannot be read: {source}")]
    Config {
        /// The config's digest.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
}

fn list_or_none(tags: &[String]) -> String {
    if tags.is_empty() { "none".to_owned() } else { tags.join(", ") }
}

/// Result alias for this module.
pub type Result<T, E = InspectError> = std::result::Result<T, E>;

/// One version of a cache, as `strata cache ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    /// The `org.opencontainers.image.ref.name` of its `index.json` entry; `None` for an
    /// entry without one and for untagged versions found in `blobs/`.
    pub tag: Option<String>,
    /// Digest of the cache manifest.
    pub digest: Digest,
    /// Media type (from `index.json`, or the detected form for untagged versions).
    pub media_type: String,
    /// When the version was made: the newest `buildkit/createdat` of its layers or
    /// `createdAt` of its results, as written (RFC 3339); `None` when nothing says.
    pub created: Option<String>,
    /// Bytes of manifest + config + each distinct layer blob (shared blobs counted once).
    pub size: u64,
    /// Entries in the cache config's layer table; `None` if the config is unreadable.
    pub layers: Option<usize>,
    /// Records in the cache config; `None` if the config is unreadable.
    pub records: Option<usize>,
    /// Whether this version is only in `blobs/`, no longer referenced by `index.json`.
    pub untagged: bool,
    /// Why the counts are missing (not a cache manifest, unreadable blob), if they are.
    pub note: Option<String>,
}

/// Lists the versions in a cache: every `index.json` entry, in index order, and with
/// `all` also every other cache manifest still in `blobs/` (older exports that a tag
/// no longer points at), newest first.
///
/// A version whose manifest or config cannot be read is still listed, with a
/// [`VersionSummary::note`], so that one broken tag does not hide the others; only a
/// missing directory or an unreadable `index.json` is an error.
pub fn list_versions(layout: &Layout, all: bool) -> Result<Vec<VersionSummary>> {
    let index = layout.read_index()?;
    let entries = index.as_ref().map(|i| i.manifests.as_slice()).unwrap_or_default();
    let mut out: Vec<VersionSummary> = entries
        .iter()
        .map(|d| {
            summarize(
                layout,
                &d.digest,
                d.media_type.clone(),
                d.annotation(media::ANNOTATION_REF_NAME),
            )
        })
        .collect();
    if all {
        let referenced: HashSet<Digest> = entries.iter().map(|d| d.digest.clone()).collect();
        let mut untagged: Vec<(Option<GoTime>, VersionSummary)> = Vec::new();
        for found in scan_cache_manifests(layout, &referenced)? {
            let mut s = summarize_parsed(layout, &found.digest, found.size, None, &found.manifest);
            s.untagged = true;
            s.media_type = found.manifest.form.media_type().to_owned();
            let t = s.created.as_deref().and_then(|c| GoTime::parse(c).ok());
            untagged.push((t, s));
        }
        // Newest first; versions without a time last; the digest keeps the order stable.
        untagged.sort_by(|(ta, a), (tb, b)| tb.cmp(ta).then_with(|| a.digest.cmp(&b.digest)));
        out.extend(untagged.into_iter().map(|(_, s)| s));
    }
    Ok(out)
}

fn summarize(
    layout: &Layout,
    digest: &Digest,
    media_type: String,
    tag: Option<&str>,
) -> VersionSummary {
    let blank = |note: String| VersionSummary {
        tag: tag.map(str::to_owned),
        digest: digest.clone(),
        media_type: media_type.clone(),
        created: None,
        size: 0,
        layers: None,
        records: None,
        untagged: false,
        note: Some(note),
    };
    let bytes = match layout.read_blob_limited(digest, MAX_READ_SIZE as u64) {
        Ok(b) => b,
        Err(e) => return blank(e.to_string()),
    };
    let manifest = match CacheManifest::parse(&bytes) {
        Ok(m) => m,
        Err(e) => {
            let mut s = blank(format!("not a cache manifest: {e}"));
            s.size = bytes.len() as u64;
            return s;
        }
    };
    let mut s = summarize_parsed(layout, digest, bytes.len() as u64, tag, &manifest);
    s.media_type = media_type;
    s
}

fn summarize_parsed(
    layout: &Layout,
    digest: &Digest,
    manifest_size: u64,
    tag: Option<&str>,
    manifest: &CacheManifest,
) -> VersionSummary {
    let mut seen = HashSet::new();
    let layer_bytes: u64 =
        manifest.layers.iter().filter(|d| seen.insert(&d.digest)).map(|d| d.size).sum();
    let mut newest = newest_layer_annotation(&manifest.layers);
    let (layers, records, note) = match read_config(layout, &manifest.config) {
        Ok(cfg) => {
            newest = max_time(newest, newest_result(&cfg));
            (Some(cfg.layers.len()), Some(cfg.records.len()), None)
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    VersionSummary {
        tag: tag.map(str::to_owned),
        digest: digest.clone(),
        media_type: manifest.form.media_type().to_owned(),
        created: newest.map(|(_, s)| s),
        size: manifest_size + manifest.config.size + layer_bytes,
        layers,
        records,
        untagged: false,
        note,
    }
}

/// The newest `buildkit/createdat` annotation, with its text as written.
fn newest_layer_annotation(layers: &[Descriptor]) -> Option<(GoTime, String)> {
    layers
        .iter()
        .filter_map(|d| d.annotation(media::ANNOTATION_CREATED_AT))
        .filter_map(|s| GoTime::parse(s).ok().map(|t| (t, s.to_owned())))
        .filter(|(t, _)| !t.is_zero())
        .max_by(|a, b| a.0.cmp(&b.0))
}

/// The newest result `createdAt` of the config (zero times mean "unknown").
fn newest_result(cfg: &CacheConfig) -> Option<(GoTime, String)> {
    cfg.records
        .iter()
        .flat_map(|r| {
            r.results.iter().map(|x| &x.created_at).chain(r.chains.iter().map(|c| &c.created_at))
        })
        .filter(|t| !t.is_zero())
        .max()
        .map(|t| (*t, t.to_string()))
}

fn max_time(a: Option<(GoTime, String)>, b: Option<(GoTime, String)>) -> Option<(GoTime, String)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn read_config(layout: &Layout, desc: &Descriptor) -> Result<CacheConfig> {
    let bytes = layout.read_blob_limited(&desc.digest, MAX_READ_SIZE as u64)?;
    CacheConfig::from_json(&bytes).map_err(|source| InspectError::Config {
        digest: desc.digest.clone(),
        path: layout.blob_path(&desc.digest),
        source,
    })
}

/// A cache manifest found by scanning `blobs/`.
pub(crate) struct FoundManifest {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) manifest: CacheManifest,
}

/// Every blob in `blobs/` (except those in `exclude`) that parses as a cache manifest.
///
/// Layer blobs can be gigabytes, so the scan only reads blobs that could be one: at most
/// [`MAX_READ_SIZE`] bytes and starting with `{` (after JSON whitespace). Compressed
/// layers start with a magic number and are rejected after one small read. The content
/// is not re-hashed here: a blob whose content does not match its name is `verify`'s
/// business.
pub(crate) fn scan_cache_manifests(
    layout: &Layout,
    exclude: &HashSet<Digest>,
) -> Result<Vec<FoundManifest>> {
    let walk = layout.walk_blobs()?;
    let mut out = Vec::new();
    for entry in walk.blobs {
        if exclude.contains(&entry.digest) || entry.size > MAX_READ_SIZE as u64 || entry.size < 2 {
            continue;
        }
        if !starts_like_json_object(layout, &entry.digest) {
            continue;
        }
        // Unreadable or vanished since the walk: not a manifest we can list.
        let Ok(bytes) = layout.read_blob_limited(&entry.digest, MAX_READ_SIZE as u64) else {
            continue;
        };
        if let Ok(manifest) = CacheManifest::parse(&bytes) {
            out.push(FoundManifest { digest: entry.digest, size: bytes.len() as u64, manifest });
        }
    }
    Ok(out)
}

fn starts_like_json_object(layout: &Layout, digest: &Digest) -> bool {
    let Ok(file) = layout.open_blob(digest) else { return false };
    let mut head = [0u8; 256];
    let mut n = 0;
    let mut reader = file.take(head.len() as u64);
    // A short read is not EOF; loop until the buffer is full or the file ends.
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    head[..n].iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) == Some(&b'{')
}

/// Which version [`inspect_version`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The `index.json` entry with this tag (resolved as BuildKit does).
    Tag(String),
    /// A cache manifest blob, tagged or not (like `--cache-from …,digest=`).
    Digest(Digest),
}

/// Compression of a layer blob, as named in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    /// Plain tar.
    Uncompressed,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// eStargz (gzip with a TOC).
    Estargz,
}

impl From<Compression> for CompressionName {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Uncompressed => Self::Uncompressed,
            Compression::Gzip => Self::Gzip,
            Compression::Zstd => Self::Zstd,
            Compression::Estargz => Self::Estargz,
        }
    }
}

impl CompressionName {
    /// The lowercase name (`gzip`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uncompressed => "uncompressed",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Estargz => "estargz",
        }
    }
}

/// One entry of the cache config's layer table, joined with its manifest descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerDetail {
    /// Position in the config's `layers`.
    pub index: usize,
    /// The layer blob.
    pub blob: Digest,
    /// Parent layer index, -1 for none.
    pub parent: i64,
    /// Media type of the blob; `None` if the manifest has no descriptor for it.
    pub media_type: Option<String>,
    /// Compression; `None` for an unknown media type.
    pub compression: Option<CompressionName>,
    /// Compressed size in bytes (the blob's size), if known.
    pub size: Option<u64>,
    /// Uncompressed size, when an `io.containers.estargz.uncompressed-size` annotation
    /// says (other compressions do not record it).
    pub uncompressed_size: Option<u64>,
    /// The diffID (`containerd.io/uncompressed`).
    #[serde(rename = "diffID")]
    pub diff_id: Option<String>,
    /// The `buildkit/createdat` annotation, as written.
    pub created_at: Option<String>,
}

/// One alternative of a record's input slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputDetail {
    /// Index of the linked record.
    pub link: usize,
    /// Selector (a content checksum for COPY sources), if any.
    pub selector: Option<String>,
}

/// One result of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultDetail {
    /// The layer index the result ends at; `None` for a chained (inline-cache) result.
    pub layer: Option<usize>,
    /// When it was created, RFC 3339.
    pub created_at: String,
    /// The blobs a cache hit loads, root first; empty if the chain is broken (see the
    /// warnings).
    pub chain: Vec<Digest>,
}

/// One cache record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordDetail {
    /// Position in the config's `records`.
    pub index: usize,
    /// Its cache-key digest (opaque).
    pub digest: String,
    /// Input slots, each a list of alternatives.
    pub inputs: Vec<Vec<InputDetail>>,
    /// Its results.
    pub results: Vec<ResultDetail>,
}

/// Totals of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Number of records.
    pub records: usize,
    /// Entries in the layer table.
    pub layers: usize,
    /// Distinct layer blobs in the manifest.
    pub unique_blobs: usize,
    /// Bytes of those distinct layer blobs.
    pub compressed_bytes: u64,
    /// Bytes of the manifest and the config.
    pub metadata_bytes: u64,
}

/// Everything `strata cache inspect` shows about one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDetail {
    /// The tag it was selected by, or the first tag pointing at it.
    pub tag: Option<String>,
    /// Digest of the cache manifest.
    pub digest: Digest,
    /// Media type of the manifest (as `index.json` has it, else the detected form's).
    pub media_type: String,
    /// The form in words ("OCI image index", …).
    pub form: String,
    /// Size of the manifest blob.
    pub manifest_size: u64,
    /// The cache config blob.
    pub config: Digest,
    /// Size of the config blob.
    pub config_size: u64,
    /// The layer table.
    pub layers: Vec<LayerDetail>,
    /// The records.
    pub records: Vec<RecordDetail>,
    /// Totals.
    pub totals: Totals,
    /// Things a user should know: BuildKit's 1 MiB import limit exceeded, unknown layer
    /// media types, structural problems of the config.
    pub warnings: Vec<String>,
}

/// Reads one version in full: its manifest, config, layer table and records.
pub fn inspect_version(layout: &Layout, selector: &VersionSelector) -> Result<VersionDetail> {
    let index = layout.read_index()?;
    let (digest, media_type, tag) = match selector {
        VersionSelector::Tag(tag) => {
            let Some(index) = &index else {
                return Err(InspectError::NoIndex { path: layout.index_path(), tag: tag.clone() });
            };
            let Some(d) = index.resolve(tag) else {
                return Err(InspectError::TagNotFound {
                    tag: tag.clone(),
                    path: layout.index_path(),
                    tags: index.tags().into_iter().map(str::to_owned).collect(),
                });
            };
            (d.digest.clone(), Some(d.media_type.clone()), Some(tag.clone()))
        }
        VersionSelector::Digest(d) => {
            let entry = index.as_ref().and_then(|i| first_entry_for(i, d));
            (
                d.clone(),
                entry.map(|e| e.media_type.clone()),
                entry.and_then(|e| e.annotation(media::ANNOTATION_REF_NAME)).map(str::to_owned),
            )
        }
    };

    let mut warnings = Vec::new();
    let bytes = layout.read_blob_limited(&digest, MAX_READ_SIZE as u64)?;
    if let Some(w) = buildkit_import_limit_exceeded(bytes.len() as u64) {
        warnings.push(format!("cache manifest {digest}: {w}"));
    }
    let manifest = CacheManifest::parse(&bytes).map_err(|source| InspectError::Manifest {
        digest: digest.clone(),
        path: layout.blob_path(&digest),
        source,
    })?;
    let config_bytes = layout.read_blob_limited(&manifest.config.digest, MAX_READ_SIZE as u64)?;
    if let Some(w) = buildkit_import_limit_exceeded(config_bytes.len() as u64) {
        warnings.push(format!("cache config {}: {w}", manifest.config.digest));
    }
    let config = CacheConfig::from_json(&config_bytes).map_err(|source| InspectError::Config {
        digest: manifest.config.digest.clone(),
        path: layout.blob_path(&manifest.config.digest),
        source,
    })?;

    for (i, d) in manifest.layers.iter().enumerate() {
        if compression_of(d).is_none() {
            warnings.push(format!(
                "layer descriptor {i} ({}): unknown layer media type {:?}",
                d.digest, d.media_type
            ));
        }
    }
    warnings.extend(validate(&config, Some(&manifest.layers)).iter().map(ToString::to_string));

    let layers = config
        .layers
        .iter()
        .enumerate()
        .map(|(index, l)| layer_detail(index, l, &manifest.layers))
        .collect();
    let records = config
        .records
        .iter()
        .enumerate()
        .map(|(index, r)| RecordDetail {
            index,
            digest: r.digest.clone(),
            inputs: r
                .inputs
                .iter()
                .map(|slot| {
                    slot.iter()
                        .map(|i| InputDetail {
                            link: i.link,
                            selector: (!i.selector.is_empty()).then(|| i.selector.clone()),
                        })
                        .collect()
                })
                .collect(),
            results: r
                .results
                .iter()
                .map(|res| ResultDetail {
                    layer: Some(res.layer),
                    created_at: res.created_at.to_string(),
                    // A broken chain is already among the warnings from `validate`.
                    chain: layer_chain(&config, res.layer)
                        .map(|c| c.into_iter().map(|i| config.layers[i].blob.clone()).collect())
                        .unwrap_or_default(),
                })
                .chain(r.chains.iter().map(|ch| {
                    ResultDetail {
                        layer: None,
                        created_at: ch.created_at.to_string(),
                        chain: ch
                            .layers
                            .iter()
                            .filter_map(|&i| config.layers.get(i).map(|l| l.blob.clone()))
                            .collect(),
                    }
                }))
                .collect(),
        })
        .collect();

    let mut seen = HashSet::new();
    let unique: Vec<&Descriptor> =
        manifest.layers.iter().filter(|d| seen.insert(&d.digest)).collect();
    let totals = Totals {
        records: config.records.len(),
        layers: config.layers.len(),
        unique_blobs: unique.len(),
        compressed_bytes: unique.iter().map(|d| d.size).sum(),
        metadata_bytes: bytes.len() as u64 + config_bytes.len() as u64,
    };
    Ok(VersionDetail {
        tag,
        digest,
        media_type: media_type.unwrap_or_else(|| manifest.form.media_type().to_owned()),
        form: manifest.form.to_string(),
        manifest_size: bytes.len() as u64,
        config: manifest.config.digest.clone(),
        config_size: config_bytes.len() as u64,
        layers,
        records,
        totals,
        warnings,
    })
}

fn first_entry_for<'a>(index: &'a Index, digest: &Digest) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|e| &e.digest == digest)
}

fn layer_detail(
    index: usize,
    layer: &crate::config::CacheLayer,
    descriptors: &[Descriptor],
) -> LayerDetail {
    let desc = descriptors.iter().find(|d| d.digest == layer.blob);
    // Manifest-less backends (gha, s3) keep the descriptor data in the config instead;
    // fall back to it so such configs still show something.
    let ann = layer.annotations.as_ref();
    let media_type = desc
        .map(|d| d.media_type.clone())
        .or_else(|| ann.map(|a| a.media_type.clone()).filter(|m| !m.is_empty()));
    let compression = media_type
        .as_ref()
        .and_then(|mt| {
            let probe =
                desc.cloned().unwrap_or_else(|| Descriptor::new(mt.clone(), layer.blob.clone(), 0));
            compression_of(&probe)
        })
        .map(CompressionName::from);
    LayerDetail {
        index,
        blob: layer.blob.clone(),
        parent: layer.parent,
        media_type,
        compression,
        size: desc
            .map(|d| d.size)
            .or_else(|| ann.and_then(|a| u64::try_from(a.size).ok()).filter(|&s| s > 0)),
        uncompressed_size: desc
            .and_then(|d| d.annotation(media::ANNOTATION_ESTARGZ_SIZE))
            .and_then(|s| s.parse().ok()),
        diff_id: desc
            .and_then(|d| d.annotation(media::ANNOTATION_UNCOMPRESSED))
            .map(str::to_owned)
            .or_else(|| ann.map(|a| a.diff_id.clone()).filter(|s| !s.is_empty())),
        created_at: desc
            .and_then(|d| d.annotation(media::ANNOTATION_CREATED_AT))
            .map(str::to_owned)
            .or_else(|| ann.filter(|a| !a.created_at.is_zero()).map(|a| a.created_at.to_string())),
    }
}

/// Short human name of a manifest media type (`oci-index`, …), or the type itself.
pub fn short_media_type(media_type: &str) -> &str {
    match ManifestForm::from_media_type(media_type) {
        Some(ManifestForm::OciIndex) => "oci-index",
        Some(ManifestForm::DockerManifestList) => "docker-list",
        Some(ManifestForm::OciManifest) => "oci-manifest",
        Some(ManifestForm::DockerManifest) => "docker-manifest",
        None => media_type,
    }
}
