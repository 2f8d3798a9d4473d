//! strata-layer: layer tars and their codecs.
//!
//! - [`compression`]: gzip (parallel members), zstd (multithreaded), eStargz and plain tar,
//!   with the diffID and blob digest computed in the same streaming pass; decompression
//!   by sniffed magic.
//! - [`writer`]: deterministic tar entries ([`LayerWriter`]).
//! - [`diff`]: directory trees and overlayfs upper dirs to layers.
//! - [`apply`]: extracting a layer with OCI whiteout semantics, safely.

pub mod compression;
pub mod estargz;
mod pgzip;

pub use compression::{
    CompressedLayer, Compression, CompressionError, CompressionOptions, LayerEncoder, compress,
    diff_id_of, open_layer_reader, sniff,
};
pub mod writer;
pub use writer::{EntryMeta, LayerWriter, WriteError};
pub mod apply;
pub use apply::{ApplyError, ApplyOptions, ApplyStats, Policy, apply_layer, extract_snapshot};
pub mod diff;
pub use diff::{DiffError, WriteDirOptions, diff_overlay_upper, diff_trees, write_dir};
