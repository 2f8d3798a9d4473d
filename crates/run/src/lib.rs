//! strata-run: executes one Dockerfile `RUN` step in an isolated container.
//!
//! The root filesystem is an overlay of prepared lower directories (the
//! snapshot the step starts from) and a fresh, caller-owned upper directory.
//! When [`Executor::run`] returns, the upper directory holds exactly the
//! step's changes in overlayfs format (whiteouts are 0:0 character devices,
//! opaque directories carry `trusted.overlay.opaque=y`); another crate turns
//! it into a layer tar.
//!
//! Alternatively ([`RunSpec::rootfs`]) the root filesystem is a plain
//! directory the command changes in place; the caller diffs it against a copy.
//!
//! Without root, [`RuncExecutor`] uses runc's rootless mode: a user namespace
//! mapping the caller to the container's root, no cgroup, and the plain
//! directory root filesystem (see [`RuncExecutor::rootless`]).
//!
//! [`RuncExecutor`] does what BuildKit's runc executor does: it writes an OCI
//! runtime `config.json` and runs `runc run`. The container gets its own
//! mount, PID, UTS, IPC and cgroup namespaces, BuildKit's default capability
//! set, runc's default masked and read-only paths, and a network namespace
//! according to [`Network`].
//!
//! # Cancellation
//!
//! `run` blocks. To stop a build on Ctrl-C, handle SIGINT in the caller and
//! call [`RuncExecutor::cancel_all`] from the handler thread: the running
//! containers are killed, `run` cleans up (container deleted, overlay
//! unmounted) and returns [`RunError::Cancelled`]. If strata itself is killed
//! hard, the next [`RuncExecutor::new`] removes the leftovers.

mod error;
mod rootpath;
mod runc;
mod spec;
mod stubs;
mod user;
mod xattr;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;

pub use error::RunError;
pub use runc::{DEFAULT_STATE_DIR, RuncExecutor};
pub use user::{ResolvedUser, resolve_user};
pub use xattr::{OVERLAY_OPAQUE_XATTR, is_opaque};

/// The `PATH` BuildKit gives a RUN step whose environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hostname BuildKit gives RUN containers when none is set.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// How many trailing output lines [`RunOutcome::tail`] keeps.
pub const TAIL_LINES: usize = 20;

/// Runs RUN steps.
pub trait Executor: Send + Sync {
    /// Runs `spec.args` in a container and streams its output (stdout and
    /// stderr merged, in order) to `out` as it arrives.
    ///
    /// A command that exits non-zero is `Ok` with that exit code; `Err` means
    /// the step could not be run at all (or was cancelled).
    fn run(&self, spec: &RunSpec, out: &mut dyn FnMut(OutputChunk))
    -> Result<RunOutcome, RunError>;
}

/// Everything one RUN step needs.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// The final argv; for the shell form the caller has already applied `SHELL`.
    pub args: Vec<String>,
    /// The environment as `K=V`. [`DEFAULT_PATH`] is added if `PATH` is missing.
    pub env: Vec<String>,
    /// The working directory. Created (root-owned, 0755) if missing, as
    /// BuildKit does; it then stays in the layer.
    pub cwd: String,
    /// `""`, `name`, `uid`, `name:group` or `uid:gid`, resolved against the
    /// root filesystem's own /etc/passwd and /etc/group ([`resolve_user`]).
    pub user: String,
    /// The container hostname; empty means [`DEFAULT_HOSTNAME`].
    pub hostname: String,
    /// Network mode.
    pub network: Network,
    /// Overlay lower directories, TOP FIRST. Empty means an empty root filesystem.
    pub lowers: Vec<PathBuf>,
    /// Overlay upper directory: empty, caller-owned; holds the changes afterwards.
    pub upper: PathBuf,
    /// Overlay work directory: empty, caller-owned, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// The copy fallback: a plain, caller-owned directory used as the root
    /// filesystem as it is (writable; the command's changes land in it).
    /// When set, `lowers`, `upper` and `work` are ignored. Without root it is
    /// required, because only root can mount the overlay.
    pub rootfs: Option<PathBuf>,
    /// Extra mounts (`RUN --mount`, secrets).
    pub mounts: Vec<Mount>,
    /// Prefix of container ids (`<prefix>-<pid>-<counter>-<random>`); empty means "strata".
    pub id_prefix: String,
}

/// Network mode of a RUN step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// BuildKit's default. strata has no CNI networking, so this is the same
    /// as [`Network::Host`] for now (as BuildKit with its "host" fallback).
    #[default]
    Default,
    /// Share the host's network namespace.
    Host,
    /// A new network namespace with only the loopback interface (up).
    None,
}

/// An extra mount in the container.
#[derive(Debug, Clone)]
pub enum Mount {
    /// A host path bind-mounted (recursively) at `target`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path in the container.
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs; nothing written there reaches the layer.
    Tmpfs {
        /// Absolute path in the container.
        target: String,
        /// Size limit in bytes; `None` is the kernel default (half of RAM).
        size: Option<u64>,
    },
    /// A secret: written to a private root-only directory and bind-mounted
    /// read-only as a file. BuildKit's default target is [`secret_target`].
    Secret {
        /// Absolute path in the container.
        target: String,
        /// The secret's bytes (never printed by `Debug`).
        contents: SecretBytes,
        /// File mode, BuildKit's default is 0o400.
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
}

impl Mount {
    /// The absolute container path of the mount.
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Secret { target, .. } => target,
        }
    }
}

/// BuildKit's target for `RUN --mount=type=secret,id=ID` without `target=`.
pub fn secret_target(id: &str) -> String {
    format!("/run/secrets/{id}")
}

/// Secret bytes whose `Debug` output does not reveal them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The command's stdout.
    Stdout,
    /// The command's stderr (also runc's own error messages).
    Stderr,
}

/// A piece of the command's output.
///
/// Chunks of one stream arrive in order. Between stdout and stderr the order
/// is only approximate: `runc run` copies each through its own pipe (BuildKit
/// has the same limitation), so a display should buffer lines per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// The stream.
    pub stream: Stream,
    /// Raw bytes.
    pub bytes: Vec<u8>,
}

/// The result of a RUN step that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The exit code; 128+N if the process was killed by signal N.
    pub exit_code: i32,
    /// The last [`TAIL_LINES`] lines of output, for error messages.
    pub tail: Vec<String>,
}

/// Keeps the last lines of a command's output, for "the last 20 lines" in
/// errors. Lines are assembled per stream, so a stderr chunk never splits a
/// stdout line.
#[derive(Debug, Clone)]
pub struct OutputTail {
    max: usize,
    lines: VecDeque<String>,
    /// Unterminated last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

impl OutputTail {
    /// A tail keeping at most `max` lines.
    pub fn new(max: usize) -> Self {
        OutputTail { max, lines: VecDeque::new(), partial: [Vec::new(), Vec::new()] }
    }

    /// Appends output bytes of `stream`.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let i = stream as usize;
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            if let Some(line) = piece.strip_suffix(b"\n") {
                self.partial[i].extend_from_slice(line);
                let line = std::mem::take(&mut self.partial[i]);
                self.push_line(line);
            } else {
                self.partial[i].extend_from_slice(piece);
                // A runaway line without newlines must not grow without bound.
                if self.partial[i].len() > 64 * 1024 {
                    let line = std::mem::take(&mut self.partial[i]);
                    self.push_line(line);
                }
            }
        }
    }

    fn push_line(&mut self, mut line: Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.lines.push_back(String::from_utf8_lossy(&line).into_owned());
        while self.lines.len() > self.max {
            self.lines.pop_front();
        }
    }

    /// The kept lines, oldest first, including an unterminated last line.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        for partial in self.partial.iter().filter(|p| !p.is_empty()) {
            out.push(String::from_utf8_lossy(partial).into_owned());
        }
        let excess = out.len().saturating_sub(self.max);
        out.drain(..excess);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = OutputTail::new(3);
        t.push(Stream::Stdout, b"a\nb\r\nc");
        t.push(Stream::Stderr, b"err ");
        t.push(Stream::Stdout, b"c\nd\ne");
        t.push(Stream::Stderr, b"line\n");
        assert_eq!(t.lines(), vec!["d", "err line", "e"]);
        t.push(Stream::Stdout, b"\n");
        assert_eq!(t.lines(), vec!["d", "err line", "e"]);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let m = Mount::Secret {
            target: secret_target("tok"),
            contents: SecretBytes(b"hunter2".to_vec()),
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        let s = format!("{m:?}");
        assert!(!s.contains("hunter2") && s.contains("/run/secrets/tok"), "{s}");
    }
}
