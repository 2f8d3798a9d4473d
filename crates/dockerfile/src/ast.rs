//! The typed Dockerfile: what [`crate::parse`] returns.
//!
//! Words are kept *unexpanded* (quotes and `$VAR` as written) because their values depend on
//! ARG/ENV state at the point of execution; [`crate::StageScope::expand`] produces the
//! expanded copy an engine runs.

use std::time::Duration;

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` value (the frontend image; strata ignores it but reports it).
    pub syntax: Option<String>,
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` value (lint configuration).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self { syntax: None, escape: '\\', check: None }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The name given to [`crate::parse`], used in error messages.
    pub file: String,
    /// Parser directives.
    pub directives: Directives,
    /// `ARG` instructions before the first `FROM` (the global scope).
    pub global_args: Vec<Instruction>,
    /// Stages in file order; index `i` is what `COPY --from=i` refers to.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the file (0-based).
    pub index: usize,
    /// The `FROM` instruction itself (its kind is always [`InstructionKind::From`]).
    pub from_instruction: Instruction,
    /// The FROM's data, unexpanded.
    pub from: From,
    /// Instructions after `FROM`, in order.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// Lowercased `AS` name, if any.
    pub fn name(&self) -> Option<&str> {
        self.from.name.as_deref()
    }
    /// The name BuildKit shows in progress lines: the `AS` name or `stage-N`.
    pub fn display_name(&self) -> String {
        match &self.from.name {
            Some(n) => n.clone(),
            None => format!("stage-{}", self.index),
        }
    }
}

/// One instruction with its location and source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// 1-based line where it ends (continuations and heredocs included).
    pub end_line: usize,
    /// The logical line as written, continuations joined and trimmed
    /// (`RUN echo hi`), for progress output and history.
    pub original: String,
    /// The typed content.
    pub kind: InstructionKind,
}

/// Typed instruction content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `FROM [--platform=p] image [AS name]`.
    From(From),
    /// `ARG K[=V] ...`.
    Arg(Vec<ArgDecl>),
    /// `ENV K=V ...` or legacy `ENV K V`.
    Env(Vec<KeyValue>),
    /// `LABEL K=V ...`.
    Label(Vec<KeyValue>),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `EXPOSE port[/proto] ...`, sorted as BuildKit does.
    Expose(Vec<String>),
    /// `VOLUME` paths (JSON or whitespace list).
    Volume(Vec<String>),
    /// `STOPSIGNAL sig`.
    StopSignal(String),
    /// `SHELL ["exe", "arg"]` (JSON form only).
    Shell(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD <trigger>`: the raw trigger text, run when an image built from this one is
    /// used as a base. Heredoc bodies are appended as BuildKit does.
    Onbuild(String),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `RUN`.
    Run(Run),
    /// `MAINTAINER name` (deprecated; BuildKit records it as the image author).
    Maintainer(String),
}

impl InstructionKind {
    /// Upper-case keyword, e.g. `"RUN"`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::From(_) => "FROM",
            Self::Arg(_) => "ARG",
            Self::Env(_) => "ENV",
            Self::Label(_) => "LABEL",
            Self::Workdir(_) => "WORKDIR",
            Self::User(_) => "USER",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Expose(_) => "EXPOSE",
            Self::Volume(_) => "VOLUME",
            Self::StopSignal(_) => "STOPSIGNAL",
            Self::Shell(_) => "SHELL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Onbuild(_) => "ONBUILD",
            Self::Copy(_) => "COPY",
            Self::Add(_) => "ADD",
            Self::Run(_) => "RUN",
            Self::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// `FROM` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// Image reference, stage name or `scratch` (unexpanded).
    pub image: String,
    /// `AS` name, lowercased as BuildKit does.
    pub name: Option<String>,
    /// `--platform` value (unexpanded).
    pub platform: Option<String>,
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// Variable name.
    pub name: String,
    /// Default as written (quotes kept; expansion removes them), `None` for `ARG NAME`.
    pub default: Option<String>,
}

/// A key/value pair of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key as written.
    pub key: String,
    /// Value as written (quotes kept until expansion).
    pub value: String,
    /// True for the legacy `ENV K V` form without `=`.
    pub legacy: bool,
}

/// Command of RUN/CMD/ENTRYPOINT/HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: run through the stage's SHELL (`/bin/sh -c` by default).
    Shell(String),
    /// Exec (JSON) form: argv as given.
    Exec(Vec<String>),
}

/// A heredoc attached to RUN (`RUN <<EOF`), or an inline file of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Delimiter word with quotes removed (`EOF`); for COPY it is also the file name.
    pub name: String,
    /// Body exactly as written, each line with its newline; for `<<-` see [`Self::body`].
    pub content: String,
    /// `<<-`: leading tabs are stripped from every body line.
    pub chomp: bool,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no variable expansion.
    pub expand: bool,
}

impl Heredoc {
    /// The body with `<<-` tab stripping applied.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// `RUN` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command (for heredoc RUNs, the first line, e.g. `<<EOF` or `python3 <<EOF`).
    pub command: CommandLine,
    /// Heredoc bodies, in order of appearance.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values as written; parse with [`crate::Mount::parse`] after expansion.
    pub mounts: Vec<String>,
    /// `--network=default|none|host`.
    pub network: Option<String>,
    /// `--security=insecure|sandbox`.
    pub security: Option<String>,
}

/// `COPY` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Source paths (unexpanded).
    pub sources: Vec<String>,
    /// Inline files from heredocs (`COPY <<EOF /dest`).
    pub inline: Vec<Heredoc>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--from=<stage name|index|image|named context>`.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `ADD` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Source paths or URLs (unexpanded).
    pub sources: Vec<String>,
    /// Inline files from heredocs.
    pub inline: Vec<Heredoc>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir` (None when not given).
    pub keep_git_dir: Option<bool>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack` (None when not given).
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `HEALTHCHECK` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [opts] CMD ...`.
    Cmd {
        /// The test command (`CMD-SHELL` when shell form, `CMD` when exec form).
        command: CommandLine,
        /// `--interval` (None when absent or 0).
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}
