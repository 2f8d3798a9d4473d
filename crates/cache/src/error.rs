//! Typed errors of the codec. Each names the blob, field or index at fault, because the
//! caller usually turns them into a warning about one cache source ("skip this import"),
//! and a message without the position is useless for debugging a cache directory.

use crate::manifest::ManifestForm;
use crate::validate::Problem;

/// A timestamp that is not RFC 3339 as Go's `time.Time` reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time {value:?}: {reason} (expected RFC 3339, e.g. 2026-12-04T15:28:07.658646544Z)"
)]
pub struct GoTimeError {
    /// The rejected input (truncated to 100 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A cache config blob (`application/vnd.buildkit.cacheconfig.v0`) that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The blob is larger than strata is willing to read into memory.
    #[error("cache config is too large ({len} bytes > read limit {limit})")]
    TooLarge {
        /// Size of the blob.
        len: u64,
        /// The limit ([`crate::MAX_READ_SIZE`]).
        limit: u64,
    },
    /// The blob is a JSON array, not an object.
    #[error("cache config is a JSON array, expected an object")]
    NotAnObject,
    /// The blob is not JSON of the cacheconfig v0 shape (the message has line and column).
    #[error("cache config is not valid cacheconfig v0 JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// A top-level cache object (index, Docker list or image manifest) that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The blob is larger than strata is willing to read into memory.
    #[error("cache manifest is too large ({len} bytes > read limit {limit})")]
    TooLarge {
        /// Size of the blob.
        len: u64,
        /// The limit ([`crate::MAX_READ_SIZE`]).
        limit: u64,
    },
    /// Not JSON, or a field has the wrong type.
    #[error("cache manifest is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Both `manifests` and `config`/`layers` are present (BuildKit: "invalid ambiguous
    /// manifest and manifest list").
    #[error(
        "cache manifest is ambiguous: it has both `manifests` (index) and `config`/`layers` (image manifest)"
    )]
    Ambiguous,
    /// The explicit `mediaType` contradicts the shape of the JSON.
    #[error(
        "cache manifest mediaType {media_type:?} does not match its contents (shaped like {shape})"
    )]
    MediaTypeMismatch {
        /// The `mediaType` field as written.
        media_type: String,
        /// What the fields say it is.
        shape: &'static str,
    },
    /// A well-formed index or manifest without a cacheconfig.v0 entry: an image (the
    /// inline-cache path in BuildKit), not a `type=local` cache manifest.
    #[error(
        "no cache config (application/vnd.buildkit.cacheconfig.v0) in this {form}: it is an image (inline cache), not a cache manifest"
    )]
    NoCacheConfig {
        /// The detected form.
        form: ManifestForm,
    },
}

/// An index inside a cache config that points outside its table. Returned by operations
/// that must rewrite indexes ([`crate::sort_config`]) instead of panicking like Go would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// `layers[layer].parent` is neither -1 nor a valid layer index.
    #[error("layer {layer}: parent index {parent} out of range ({len} layers)")]
    Parent {
        /// The layer holding the bad parent.
        layer: usize,
        /// The bad value.
        parent: i64,
        /// Number of layers.
        len: usize,
    },
    /// `records[record].layers[result].layer` is out of range.
    #[error(
        "record {record}: result {result} points at layer {index}, out of range ({len} layers)"
    )]
    ResultLayer {
        /// The record.
        record: usize,
        /// Position of the result within the record.
        result: usize,
        /// The bad value.
        index: usize,
        /// Number of layers.
        len: usize,
    },
    /// `records[record].chains[chain].layers[..]` is out of range.
    #[error("record {record}: chain {chain} points at layer {index}, out of range ({len} layers)")]
    ChainLayer {
        /// The record.
        record: usize,
        /// Position of the chained result within the record.
        chain: usize,
        /// The bad value.
        index: usize,
        /// Number of layers.
        len: usize,
    },
    /// `records[record].inputs[input][..].link` is out of range.
    #[error("record {record}: input {input} links record {index}, out of range ({len} records)")]
    Link {
        /// The record.
        record: usize,
        /// The input slot.
        input: usize,
        /// The bad value.
        index: usize,
        /// Number of records.
        len: usize,
    },
}

/// Why a layer chain cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A layer index (the start or a parent) is out of range.
    #[error("layer index {index} out of range ({len} layers)")]
    OutOfRange {
        /// The bad index.
        index: i64,
        /// Number of layers.
        len: usize,
    },
    /// Following parents comes back to a layer already visited (BuildKit: "invalid looping layer").
    #[error("invalid looping layer chain through layer {layer}")]
    Loop {
        /// The layer reached twice.
        layer: usize,
    },
}

/// Why [`crate::CacheConfigBuilder`] cannot produce a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuilderError {
    /// A record id that this builder did not hand out.
    #[error("unknown record id {id} (the builder has {len} records)")]
    UnknownRecord {
        /// The id.
        id: usize,
        /// Number of records.
        len: usize,
    },
    /// An input slot below the highest used one has no links; BuildKit refuses such a
    /// record ("invalid empty input for record").
    #[error("record {record} ({digest}): input {input} has no links")]
    EmptyInput {
        /// The record index.
        record: usize,
        /// Its digest.
        digest: String,
        /// The empty slot.
        input: usize,
    },
    /// An index out of range while sorting (not expected after validation passed).
    #[error("built cache config has a bad index: {0}")]
    Index(#[source] IndexError),
    /// The assembled config fails structural validation (e.g. looping records).
    #[error("built cache config is invalid: {}", first_message(.0))]
    Invalid(Vec<Problem>),
}

fn first_message(problems: &[Problem]) -> String {
    match problems {
        [] => "no details".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}
