//! strata-cache: BuildKit's remote-cache format (`cacheconfig.v0`), byte for byte.
//!
//! A `type=local` cache is an OCI image layout whose `index.json` points at a *cache
//! manifest* (an OCI index, a Docker manifest list or an OCI image manifest). That lists
//! the layer blobs and one *cache config* blob: a table of layer chains and a graph of
//! cache records. This crate is the codec for those two JSON blobs:
//!
//! - [`CacheConfig`] and friends: the model, with every Go `omitempty` trap, encoded via
//!   Go-compatible JSON so digests match BuildKit's;
//! - [`GoTime`]: Go's `time.Time` text form, offset-preserving;
//! - [`CacheManifest`]: the three top-level forms, detected like BuildKit does;
//! - [`sort_config`]: BuildKit's canonical order; [`validate`]: structural checks;
//! - [`CacheConfigBuilder`], [`layer_chain`], [`compression_of`], [`record_digest`]:
//!   what the exporter and importer build on;
//! - [`MAX_READ_SIZE`], [`buildkit_import_limit_exceeded`]: size limits.
//!
//! The byte-level format is described in `spec/buildkit-cache-format.md` §2–§4, §6.

mod builder;
mod chain;
mod config;
mod error;
pub mod gc;
mod gotime;
pub mod inspect;
mod limits;
mod manifest;
pub mod options;
mod sort;
mod validate;
pub mod verify;

pub use builder::{BuiltCache, CacheConfigBuilder, EMPTY_GZ_LAYER, RecordId};
pub use chain::{Compression, compression_of, layer_chain, record_digest};
pub use config::{
    CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult, ChainedResult, LayerAnnotations,
};
pub use error::{BuilderError, ChainError, ConfigError, GoTimeError, IndexError, ManifestError};
pub use gotime::GoTime;
pub use limits::{BUILDKIT_IMPORT_LIMIT, MAX_READ_SIZE, buildkit_import_limit_exceeded};
pub use manifest::{CacheManifest, ManifestForm};
pub use sort::sort_config;
pub use validate::{Problem, Severity, Subject, validate};
