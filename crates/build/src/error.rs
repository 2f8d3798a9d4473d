//! Build errors. Each names what failed, where, and what to do when there is a fix.

use std::io;
use std::path::PathBuf;

use strata_oci::Digest;

/// Everything that can fail a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A usage problem found before any work (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The Dockerfile could not be read or parsed.
    #[error(transparent)]
    Dockerfile(#[from] strata_dockerfile::Error),
    /// The state directory could not be created.
    #[error("cannot use state directory {path}: {source}; set STRATA_ROOT to a writable directory")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("could not {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] strata_oci::StoreError),
    /// A registry request failed (the message names the registry and the reference).
    #[error(transparent)]
    Registry(#[from] strata_registry::RegistryError),
    /// Compression failed.
    #[error(transparent)]
    Compression(#[from] strata_layer::CompressionError),
    /// Writing a layer tar failed.
    #[error(transparent)]
    LayerWrite(#[from] strata_layer::WriteError),
    /// Applying a layer failed.
    #[error(transparent)]
    Apply(#[from] strata_layer::ApplyError),
    /// JSON encoding failed (never expected).
    #[error("JSON encoding failed: {0}")]
    Json(#[source] serde_json::Error),
    /// A layer strata needs is not in the state directory.
    #[error("layer {diff_id} is missing from the state directory; rebuild with --no-cache")]
    MissingLayer {
        /// The layer.
        diff_id: Digest,
    },
    /// A layer media type strata cannot read.
    #[error(
        "layer {digest} has media type {media_type:?}, which is not a layer type strata can read"
    )]
    UnsupportedLayer {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// Recompressing a layer produced different content.
    #[error("layer content mismatch: expected diffID {expected}, got {found}")]
    DiffIdMismatch {
        /// Expected.
        expected: Digest,
        /// Found.
        found: Digest,
    },
    /// A COPY/ADD source does not exist.
    #[error("{instruction}: {message}")]
    Source {
        /// `Dockerfile:LINE COPY …`.
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// A base image or build context could not be resolved.
    #[error("{0}")]
    Base(String),
    /// A RUN step failed.
    #[error(
        "{instruction}: process \"{command}\" did not complete successfully: exit code: {code}{tail}"
    )]
    RunFailed {
        /// `Dockerfile:LINE RUN …`.
        instruction: String,
        /// The command.
        command: String,
        /// Its exit code.
        code: i32,
        /// The last output lines, pre-formatted.
        tail: String,
    },
    /// The RUN executor failed.
    #[error("{instruction}: {source}")]
    Executor {
        /// `Dockerfile:LINE RUN …`.
        instruction: String,
        /// Why.
        #[source]
        source: strata_run::RunError,
    },
    /// An output could not be written.
    #[error("output {dest}: {message}")]
    Output {
        /// Destination.
        dest: String,
        /// What failed.
        message: String,
    },
    /// A cache export failed (and `ignore-error` was not set).
    #[error("cache export to {dest} failed: {message}")]
    CacheExport {
        /// The dest.
        dest: PathBuf,
        /// Why.
        message: String,
    },
    /// Interrupted by a signal.
    #[error("build interrupted")]
    Interrupted,
}

impl BuildError {
    /// Whether this is a usage error (exit code 2) rather than a failed build (1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Usage(_))
    }
}
