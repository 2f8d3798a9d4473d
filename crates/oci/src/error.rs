//! Errors of the layout store. Every message names the path or value involved, what is
//! wrong, and what to do about it when there is something to do.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Digest;

/// Everything that can go wrong in the layout store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The layout directory does not exist (only [`crate::Layout::create`] makes one).
    #[error("OCI layout {path} does not exist; create it first or check the path")]
    LayoutMissing {
        /// The path as given.
        path: PathBuf,
    },
    /// The layout path exists but is not a directory.
    #[error(
        "OCI layout {path} is not a directory; an OCI layout is a directory holding index.json and blobs/"
    )]
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("could not {op} {path}: {source}")]
    Io {
        /// What was being done ("open", "rename", …).
        op: &'static str,
        /// The path operated on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A blob that was asked for is not in the store.
    #[error("blob {digest} not found: {path} does not exist")]
    BlobNotFound {
        /// The digest asked for.
        digest: Digest,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A blob is larger than a caller's limit (manifests and configs are read whole).
    #[error(
        "blob {digest} at {path} is {size} bytes, larger than the limit of {limit} bytes for this kind of blob"
    )]
    BlobTooLarge {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// Its size (or a lower bound, if it grew while being read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes written to a [`crate::BlobWriter`] are not what the caller expected.
    /// Nothing was committed.
    #[error(
        "refusing to commit blob: received {actual_size} bytes with digest {actual}, \
         but expected {expected} ({expected_size} bytes); the source is corrupt or truncated, \
         nothing was stored"
    )]
    CommitMismatch {
        /// The expected digest.
        expected: Digest,
        /// The expected size.
        expected_size: u64,
        /// What was actually received.
        actual: Digest,
        /// How many bytes were actually received.
        actual_size: u64,
    },
    /// `index.json` exists but cannot be parsed.
    #[error(
        "could not parse {path}: {source}; the file is corrupt or truncated: restore it from a \
         backup, or remove it to start a new index (the blobs are kept)"
    )]
    IndexCorrupt {
        /// Path of index.json.
        path: PathBuf,
        /// The JSON error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The index could not be encoded (should not happen for well-formed values).
    #[error("could not encode index.json for {path}: {source}")]
    IndexEncode {
        /// Path of index.json.
        path: PathBuf,
        /// The encoder error.
        #[source]
        source: serde_json::Error,
    },
    /// A lock could not be taken within the timeout.
    #[error(
        "timed out after {waited:.1?} waiting for the lock {path}, held by {holder}; another \
         build is using this directory: retry later, or raise the timeout (STRATA_LOCK_TIMEOUT, \
         in seconds)"
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long strata waited.
        waited: Duration,
        /// Who holds it, as far as can be told.
        holder: String,
    },
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches an operation and a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Io { op, path: path.to_owned(), source })
    }
}
