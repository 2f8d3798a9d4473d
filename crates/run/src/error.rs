//! The error type of RUN execution.

use std::io;
use std::path::PathBuf;

/// Why a RUN step could not be executed.
///
/// A command that runs and exits non-zero is *not* an error: it is reported
/// through [`crate::RunOutcome::exit_code`], so the caller can format
/// BuildKit's "did not complete successfully: exit code: N".
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No OCI runtime binary was found.
    #[error(
        "runc not found (looked in PATH, /usr/sbin, /usr/bin, /sbin): \
         install the Debian package `runc` or pass --oci-runtime PATH"
    )]
    RuntimeNotFound,

    /// The runtime path given by the user does not exist or is not executable.
    #[error("OCI runtime {path:?} is not an executable file: pass the path of a runc binary")]
    RuntimeNotExecutable {
        /// The path that was given.
        path: PathBuf,
    },

    /// Not running as root, and the kernel does not let an unprivileged
    /// process create the user namespace rootless runc needs.
    #[error(
        "RUN steps without root need an unprivileged user namespace (rootless runc, running as \
         uid {euid}), but {reason}. Run strata as root, or allow unprivileged user namespaces: \
         {fix}"
    )]
    RootlessUnavailable {
        /// The effective uid strata runs with.
        euid: u32,
        /// What the kernel said or is configured to forbid.
        reason: String,
        /// How to enable it.
        fix: String,
    },

    /// Rootless mode needs a plain directory as root filesystem.
    #[error(
        "RUN without root cannot mount an overlay root filesystem (running as uid {euid}): \
         pass RunSpec.rootfs (a plain directory) instead of lower/upper/work directories"
    )]
    RootlessNeedsRootfs {
        /// The effective uid strata runs with.
        euid: u32,
    },

    /// In rootless mode only the caller (the container's root) is mapped.
    #[error(
        "RUN without root runs as the container's root only (uid 0 maps to the caller, uid \
         {euid}; no other ids exist in its user namespace), but {what} needs uid {uid} gid {gid}: \
         run strata as root to use other users"
    )]
    RootlessUnmappedId {
        /// The effective uid strata runs with.
        euid: u32,
        /// What asked for the id (USER, a secret's owner).
        what: &'static str,
        /// The requested uid.
        uid: u32,
        /// The requested gid.
        gid: u32,
    },

    /// The `USER` could not be resolved against the image's /etc/passwd or /etc/group.
    #[error("unable to find {kind} {name:?} in the image's /etc/{file}: {hint}")]
    UnknownUser {
        /// "user" or "group".
        kind: &'static str,
        /// The name that was looked up.
        name: String,
        /// "passwd" or "group".
        file: &'static str,
        /// What the user can do about it.
        hint: &'static str,
    },

    /// The run specification is not valid (bad path, bad mount target, …).
    #[error("invalid RUN specification: {0}")]
    InvalidSpec(String),

    /// Mounting the overlay root filesystem failed.
    #[error(
        "mounting the overlay root filesystem at {merged:?} failed: {source} \
         (upper and work dirs must be empty directories on the same non-overlay filesystem, \
         and the kernel needs overlayfs: `modprobe overlay`)"
    )]
    OverlayMount {
        /// The mount point.
        merged: PathBuf,
        /// The errno from mount(2).
        #[source]
        source: nix::Error,
    },

    /// runc itself failed (as opposed to the command it ran).
    #[error("runc failed to run container {id}: {message}")]
    Runtime {
        /// The container id.
        id: String,
        /// runc's error messages, from its log.
        message: String,
    },

    /// The run was cancelled through [`crate::RuncExecutor::cancel_all`].
    #[error("RUN step cancelled (container {id} was killed)")]
    Cancelled {
        /// The container id.
        id: String,
    },

    /// A filesystem or process operation failed.
    #[error("{what} {path:?}: {source}")]
    Io {
        /// What was being done, e.g. "creating directory".
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl RunError {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RunError::Io { what, path: path.into(), source }
    }
}
