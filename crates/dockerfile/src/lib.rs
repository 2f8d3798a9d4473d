//! strata-dockerfile: everything between a Dockerfile's bytes and the typed, expanded,
//! per-stage instruction list a build engine consumes, with BuildKit's behaviour.
//!
//! * [`parse`]: bytes → [`Dockerfile`] (directives, continuations, heredocs, JSON vs shell
//!   form, flags), words kept unexpanded;
//! * [`resolve`]: global ARGs, build args, `--target` → [`BuildPlan`] (needed stages in
//!   dependency order, external `--from` references, unused build args);
//! * [`StageScope`]: per-stage ARG/ENV scope that expands each instruction as BuildKit does;
//! * [`expand`] / [`expand_words`]: BuildKit's shell lexer;
//! * [`DockerIgnore`]: `.dockerignore` matching with Docker's (not gitignore's) rules.

mod ast;
mod error;
pub mod ignore;
mod mount;
mod parser;
pub mod shell;
mod stages;

pub use ast::{
    Add, ArgDecl, CommandLine, Copy, Directives, Dockerfile, From, Healthcheck, Heredoc,
    Instruction, InstructionKind, KeyValue, Run, Stage,
};
pub use error::{Error, Result};
pub use ignore::DockerIgnore;
pub use mount::{Mount, MountType, Sharing};
pub use parser::parse;
pub use shell::{ExpandError, Lexer, expand, expand_words, split_words};
pub use stages::{Base, BuildOptions, BuildPlan, ExternalRef, ResolvedStage, StageScope, resolve};
