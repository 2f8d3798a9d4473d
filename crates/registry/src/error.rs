//! Registry errors: every one names the registry and the reference, and says what to do.

use std::path::PathBuf;

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// As given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// Connection refused/reset, DNS, timeout (retried before this is returned).
    #[error(
        "registry {registry} is unreachable ({reference}): {detail}; is it running, and is the address right?"
    )]
    Unreachable {
        /// Host.
        registry: String,
        /// What was asked for.
        reference: String,
        /// The transport error.
        detail: String,
    },
    /// 401/403.
    #[error(
        "registry {registry} refused access to {reference} (unauthorized): {detail}; add credentials for {registry} to the `auths` of {docker_config}"
    )]
    Unauthorized {
        /// Host.
        registry: String,
        /// What was asked for.
        reference: String,
        /// The registry's words.
        detail: String,
        /// Where credentials are read from.
        docker_config: String,
    },
    /// 404 / MANIFEST_UNKNOWN / NAME_UNKNOWN / BLOB_UNKNOWN.
    #[error("{reference} not found in registry {registry}: {detail}")]
    NotFound {
        /// Host.
        registry: String,
        /// What was asked for.
        reference: String,
        /// The registry's words.
        detail: String,
    },
    /// Any other answer (5xx after retries, protocol violations).
    #[error("registry {registry} failed on {reference}: {detail}")]
    Server {
        /// Host.
        registry: String,
        /// What was asked for.
        reference: String,
        /// The registry's words.
        detail: String,
        /// Whether retrying may help (5xx, 429).
        transient: bool,
    },
    /// Content did not hash to the digest it was fetched by.
    #[error(
        "registry {registry} sent {what} for {reference} that does not match digest {expected} (got {found})"
    )]
    DigestMismatch {
        /// Host.
        registry: String,
        /// What was asked for.
        reference: String,
        /// Manifest, blob, …
        what: String,
        /// Asked for.
        expected: String,
        /// Received.
        found: String,
    },
    /// Too large to be a manifest or config.
    #[error("registry {registry} sent {what} for {reference} larger than {limit} bytes")]
    TooLarge {
        /// Host.
        registry: String,
        /// What was asked for.
        reference: String,
        /// Manifest, config.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Local file trouble while downloading or uploading.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A strata or Docker config file that cannot be read.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The private async runtime could not start.
    #[error("cannot start the registry client runtime: {0}")]
    Runtime(std::io::Error),
}

impl RegistryError {
    /// Whether a retry may succeed (transport errors, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Server { transient: true, .. })
    }

    /// Whether the thing asked for does not exist (a cache miss rather than a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}
