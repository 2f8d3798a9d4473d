//! Errors of this crate. Every error that comes from a Dockerfile line names the file, the
//! line and the offending text, so a user can fix it without re-reading the whole file.

use crate::shell::ExpandError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between Dockerfile bytes and a build plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A line could not be parsed or an instruction is invalid.
    #[error("{file}:{line}: {message}: `{text}`")]
    Syntax {
        /// Dockerfile name as given by the caller.
        file: String,
        /// 1-based line where the instruction starts.
        line: usize,
        /// What is wrong, in BuildKit's words where it has some.
        message: String,
        /// The offending text (instruction, flag or word), truncated for display.
        text: String,
    },
    /// A variable expansion failed (`${V:?}` on an unset variable, bad substitution, …).
    #[error("{file}:{line}: {source}: `{text}`")]
    Expand {
        /// Dockerfile name.
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// The instruction text.
        text: String,
        /// What the lexer reported.
        source: ExpandError,
    },
    /// The file holds no instruction at all (only comments or blank lines).
    #[error("{file}: the Dockerfile has no instructions")]
    Empty {
        /// Dockerfile name.
        file: String,
    },
    /// There is no `FROM`, so there is no stage to build.
    #[error("{file}: the Dockerfile has no FROM instruction, so there is no stage to build")]
    NoFrom {
        /// Dockerfile name.
        file: String,
    },
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found; stages are: {}", .available.join(", "))]
    UnknownTarget {
        /// The requested target.
        target: String,
        /// Named stages of the Dockerfile, in order.
        available: Vec<String>,
    },
    /// Stages depend on each other in a loop (through `COPY --from` or `RUN --mount=from`).
    #[error("{file}: circular dependency between stages: {}", .cycle.join(" -> "))]
    Cycle {
        /// Dockerfile name.
        file: String,
        /// Stage names (or `stage-N`) along the loop, first repeated at the end.
        cycle: Vec<String>,
    },
    /// A `.dockerignore` pattern is malformed.
    #[error(".dockerignore line {line}: {message}: `{pattern}`")]
    Ignore {
        /// 1-based line in the ignore file.
        line: usize,
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        message: String,
    },
}

/// Longest excerpt of offending text put into an error, so a fuzzed 1 MiB line does not
/// produce a 1 MiB message.
const MAX_TEXT: usize = 200;

pub(crate) fn excerpt(text: &str) -> String {
    let t = text.trim();
    if t.len() <= MAX_TEXT {
        return t.to_string();
    }
    let mut end = MAX_TEXT;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &t[..end])
}
