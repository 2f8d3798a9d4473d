//! Stage selection and ARG/ENV scoping (BuildKit `dockerfile2llb/convert.go`).
//!
//! Scoping rules, as BuildKit applies them:
//! * global `ARG`s (before the first `FROM`) plus the caller's platform args form the scope
//!   of `FROM` lines only; `--build-arg` overrides declared defaults;
//! * inside a stage a global ARG is visible only after `ARG NAME` re-declares it (it then
//!   inherits the global value); a stage `ARG NAME=default` takes the build arg if given;
//! * `ENV` and `ARG` share one ordered scope within a stage; `ENV` persists into the image
//!   config (and so into stages built `FROM` it, which the engine handles via that config).

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::*;
use crate::error::{Error, Result, excerpt};
use crate::shell::{ExpandError, Lexer};

/// Proxy variables Docker accepts as build args without an `ARG` declaration.
const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Inputs of [`resolve`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg K=V` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`; `None` builds the last stage.
    pub target: Option<String>,
    /// `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`, `BUILDPLATFORM`,
    /// `BUILDOS`, `BUILDARCH`, `BUILDVARIANT` (and anything else the caller predefines).
    pub platform_args: BTreeMap<String, String>,
}

/// What a stage starts from, after expanding `FROM` with the global scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An earlier stage of this Dockerfile (by index).
    Stage(usize),
    /// An image reference or named build context, for the engine to resolve.
    Image(String),
}

/// A stage selected for the build, with its FROM resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStage {
    /// Index in [`Dockerfile::stages`].
    pub index: usize,
    /// `AS` name or `stage-N`.
    pub display_name: String,
    /// Resolved base.
    pub base: Base,
    /// Expanded `--platform`, if given.
    pub platform: Option<String>,
    /// Stages this one needs (base, `COPY --from`, `RUN --mount=from`), by index.
    pub deps: Vec<usize>,
}

/// A `--from` reference that is not a stage: an image or a named build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    /// The reference as written (`alpine:3`, `docs`, …).
    pub name: String,
    /// Stage that uses it.
    pub stage: usize,
    /// Line of the instruction.
    pub line: usize,
}

/// What to build: the stages in dependency order (the target last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// Needed stages, dependencies before dependants; the last one is the target.
    pub stages: Vec<ResolvedStage>,
    /// `COPY --from` / `RUN --mount=from` references to images or named contexts.
    pub external_refs: Vec<ExternalRef>,
    /// Build args given but declared by no `ARG` (buildx warns about these).
    pub unused_build_args: Vec<String>,
    /// The global scope after build-arg overrides (what re-declared ARGs inherit).
    pub global_scope: Vec<(String, String)>,
}

impl BuildPlan {
    /// The target stage.
    pub fn target(&self) -> Option<&ResolvedStage> {
        self.stages.last()
    }
}

fn expand_err(df: &Dockerfile, ins: &Instruction, e: ExpandError) -> Error {
    Error::Expand { file: df.file.clone(), line: ins.line, text: excerpt(&ins.original), source: e }
}

fn lookup(vars: &[(String, String)], k: &str) -> Option<String> {
    vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

fn set(vars: &mut Vec<(String, String)>, k: &str, v: String) {
    vars.retain(|(n, _)| n != k);
    vars.push((k.to_string(), v));
}

/// Computes the global scope (`buildMetaArgs`).
fn global_scope(df: &Dockerfile, opts: &BuildOptions) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> =
        opts.platform_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let lex = Lexer::new(df.directives.escape);
    for ins in &df.global_args {
        let InstructionKind::Arg(decls) = &ins.kind else {
            continue;
        };
        for d in decls {
            let value = match (opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(
                    lex.process_word(def, &|k| lookup(&vars, k))
                        .map_err(|e| expand_err(df, ins, e))?,
                ),
                (None, None) => None,
            };
            if let Some(v) = value {
                set(&mut vars, &d.name, v);
            }
        }
    }
    Ok(vars)
}

/// Selects and orders the stages needed for the target; see the module docs for the rules.
pub fn resolve(df: &Dockerfile, opts: &BuildOptions) -> Result<BuildPlan> {
    let globals = global_scope(df, opts)?;
    let lex = Lexer::new(df.directives.escape);
    let n = df.stages.len();
    if n == 0 {
        // Only reachable with a hand-built Dockerfile value; parse() already rejects it.
        return Err(Error::NoFrom { file: df.file.clone() });
    }

    // FROM <name> only sees stages defined before it (BuildKit registers them in order).
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut resolved = Vec::with_capacity(n);
    for st in &df.stages {
        let ins = &st.from_instruction;
        let image = lex
            .process_word(&st.from.image, &|k| lookup(&globals, k))
            .map_err(|e| expand_err(df, ins, e))?;
        if image.is_empty() {
            return Err(Error::Syntax {
                file: df.file.clone(),
                line: ins.line,
                message: format!("base name ({}) should not be blank", st.from.image),
                text: excerpt(&ins.original),
            });
        }
        let platform = match &st.from.platform {
            None => None,
            Some(p) => {
                let v = lex
                    .process_word(p, &|k| lookup(&globals, k))
                    .map_err(|e| expand_err(df, ins, e))?;
                if v.is_empty() {
                    return Err(Error::Syntax {
                        file: df.file.clone(),
                        line: ins.line,
                        message: format!("empty platform value from expression {p}"),
                        text: excerpt(&ins.original),
                    });
                }
                Some(v)
            }
        };
        let base = if let Some(&i) = by_name.get(&image.to_lowercase()) {
            Base::Stage(i)
        } else if image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            Base::Image(image)
        };
        if let Some(name) = &st.from.name {
            by_name.insert(name.clone(), st.index);
        }
        resolved.push(ResolvedStage {
            index: st.index,
            display_name: st.display_name(),
            base,
            platform,
            deps: Vec::new(),
        });
    }

    // COPY --from and RUN --mount=from see all stages (last definition of a name wins).
    let mut external_refs = Vec::new();
    for st in &df.stages {
        let mut deps = BTreeSet::new();
        if let Base::Stage(i) = resolved[st.index].base {
            deps.insert(i);
        }
        for ins in &st.instructions {
            let mut refs = Vec::new();
            match &ins.kind {
                InstructionKind::Copy(c) => {
                    if let Some(f) = &c.from {
                        let unchanged = lex.process_word(f, &|_| None).ok().as_deref() == Some(f);
                        if !unchanged {
                            return Err(Error::Syntax {
                                file: df.file.clone(),
                                line: ins.line,
                                message: "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into(),
                                text: excerpt(f),
                            });
                        }
                        refs.push((f.clone(), true));
                    }
                }
                InstructionKind::Run(r) => {
                    for m in &r.mounts {
                        if let Some(f) = crate::mount::mount_from(m) {
                            refs.push((f, false));
                        }
                    }
                }
                _ => {}
            }
            for (r, allow_index) in refs {
                if allow_index && let Ok(idx) = r.parse::<i64>() {
                    if idx < 0 || idx as usize >= n {
                        return Err(Error::Syntax {
                            file: df.file.clone(),
                            line: ins.line,
                            message: format!("invalid stage index {idx}"),
                            text: excerpt(&ins.original),
                        });
                    }
                    deps.insert(idx as usize);
                    continue;
                }
                match df
                    .stages
                    .iter()
                    .rev()
                    .find(|s| s.from.name.as_deref() == Some(r.to_lowercase().as_str()))
                {
                    Some(s) => {
                        deps.insert(s.index);
                    }
                    None => {
                        external_refs.push(ExternalRef { name: r, stage: st.index, line: ins.line })
                    }
                }
            }
        }
        resolved[st.index].deps = deps.into_iter().collect();
    }

    let target = match &opts.target {
        None => n - 1,
        Some(t) => match by_name.get(&t.to_lowercase()) {
            Some(&i) => i,
            None => {
                return Err(Error::UnknownTarget {
                    target: t.clone(),
                    available: df.stages.iter().filter_map(|s| s.from.name.clone()).collect(),
                });
            }
        },
    };

    // Depth-first post-order from the target: dependencies first, cycles detected by the
    // "on the current path" mark. Iterative, so a fuzzed chain of stages cannot overflow.
    let mut order = Vec::new();
    let mut state = vec![0u8; n]; // 0 = new, 1 = on path, 2 = done
    let mut stack: Vec<(usize, usize)> = vec![(target, 0)];
    state[target] = 1;
    while let Some(&mut (node, ref mut next)) = stack.last_mut() {
        if let Some(&dep) = resolved[node].deps.get(*next) {
            *next += 1;
            match state[dep] {
                0 => {
                    state[dep] = 1;
                    stack.push((dep, 0));
                }
                1 => {
                    let mut cycle: Vec<String> = stack
                        .iter()
                        .skip_while(|(s, _)| *s != dep)
                        .map(|(s, _)| resolved[*s].display_name.clone())
                        .collect();
                    cycle.push(resolved[dep].display_name.clone());
                    return Err(Error::Cycle { file: df.file.clone(), cycle });
                }
                _ => {}
            }
        } else {
            state[node] = 2;
            order.push(node);
            stack.pop();
        }
    }
    let needed: BTreeSet<usize> = order.iter().copied().collect();
    external_refs.retain(|r| needed.contains(&r.stage));

    // Build args nobody declared (in the global scope or any needed stage).
    let mut declared: BTreeSet<&str> = BTreeSet::new();
    let stage_args = order.iter().flat_map(|&i| df.stages[i].instructions.iter());
    for ins in df.global_args.iter().chain(stage_args) {
        if let InstructionKind::Arg(decls) = &ins.kind {
            declared.extend(decls.iter().map(|d| d.name.as_str()));
        }
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !declared.contains(k.as_str()) && !PREDEFINED_ARGS.contains(&k.as_str()))
        .filter(|k| !k.starts_with("BUILDKIT_"))
        .cloned()
        .collect();

    let stages = order.into_iter().map(|i| resolved[i].clone()).collect();
    Ok(BuildPlan { stages, external_refs, unused_build_args, global_scope: globals })
}

/// The variable scope of one stage while an engine walks its instructions.
///
/// Create it with the base image's `Env` (from its config, or the parent stage's final ENV),
/// then call [`StageScope::expand`] on each instruction in order: it returns the instruction
/// with every word BuildKit expands already expanded, and applies ARG/ENV to the scope.
#[derive(Debug, Clone)]
pub struct StageScope {
    escape: char,
    vars: Vec<(String, String)>,
    env_keys: BTreeSet<String>,
    build_args: BTreeMap<String, String>,
    globals: Vec<(String, String)>,
    file: String,
}

impl StageScope {
    /// A scope seeded with the base image environment (`KEY=VALUE` pairs).
    pub fn new(
        df: &Dockerfile,
        plan: &BuildPlan,
        opts: &BuildOptions,
        base_env: &[(String, String)],
    ) -> Self {
        Self {
            escape: df.directives.escape,
            vars: base_env.to_vec(),
            env_keys: base_env.iter().map(|(k, _)| k.clone()).collect(),
            build_args: opts.build_args.clone(),
            globals: plan.global_scope.clone(),
            file: df.file.clone(),
        }
    }

    /// Current value of a variable (ARG or ENV).
    pub fn get(&self, key: &str) -> Option<String> {
        lookup(&self.vars, key)
    }

    /// Variables visible to `RUN` (ENV and ARG), in definition order.
    pub fn run_env(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Variables that belong in the image config (`ENV` only, not `ARG`).
    pub fn image_env(&self) -> Vec<(String, String)> {
        self.vars.iter().filter(|(k, _)| self.env_keys.contains(k)).cloned().collect()
    }

    fn word(&self, ins: &Instruction, w: &str) -> Result<String> {
        let vars = &self.vars;
        Lexer::new(self.escape).process_word(w, &|k| lookup(vars, k)).map_err(|e| Error::Expand {
            file: self.file.clone(),
            line: ins.line,
            text: excerpt(&ins.original),
            source: e,
        })
    }

    fn opt(&self, ins: &Instruction, w: &Option<String>) -> Result<Option<String>> {
        w.as_ref().map(|w| self.word(ins, w)).transpose()
    }

    fn list(&self, ins: &Instruction, ws: &[String]) -> Result<Vec<String>> {
        ws.iter().map(|w| self.word(ins, w)).collect()
    }

    /// COPY/ADD heredoc bodies expand with quotes taken literally (BuildKit `ExpandRaw`).
    fn inline(&self, ins: &Instruction, docs: &[Heredoc]) -> Result<Vec<Heredoc>> {
        let mut lex = Lexer::new('\\');
        lex.skip_process_quotes = true;
        let vars = &self.vars;
        docs.iter()
            .map(|h| {
                let mut h = h.clone();
                h.content = h.body();
                h.chomp = false;
                if h.expand {
                    h.content =
                        lex.process_word(&h.content, &|k| lookup(vars, k)).map_err(|e| {
                            Error::Expand {
                                file: self.file.clone(),
                                line: ins.line,
                                text: excerpt(&ins.original),
                                source: e,
                            }
                        })?;
                }
                Ok(h)
            })
            .collect()
    }

    /// Expands `ins` in this scope and applies its effect on the scope (ARG, ENV).
    /// RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and MAINTAINER come back unchanged
    /// (their variables are the container shell's business); RUN mount values are expanded
    /// when the engine calls [`crate::Mount::parse`] with [`StageScope::expander`].
    pub fn expand(&mut self, ins: &Instruction) -> Result<Instruction> {
        use InstructionKind as K;
        let kind = match &ins.kind {
            K::Arg(decls) => {
                let mut out = Vec::new();
                for d in decls {
                    let value = if let Some(v) = self.build_args.get(&d.name) {
                        Some(v.clone())
                    } else if let Some(def) = &d.default {
                        Some(self.word(ins, def)?)
                    } else {
                        lookup(&self.globals, &d.name)
                    };
                    if let Some(v) = &value {
                        set(&mut self.vars, &d.name, v.clone());
                    }
                    out.push(ArgDecl { name: d.name.clone(), default: value });
                }
                K::Arg(out)
            }
            K::Env(kvs) => {
                let mut out = Vec::new();
                for kv in kvs {
                    let key = self.word(ins, &kv.key)?;
                    let value = self.word(ins, &kv.value)?;
                    out.push(KeyValue { key, value, legacy: kv.legacy });
                }
                // BuildKit expands all pairs first, then applies them.
                for kv in &out {
                    set(&mut self.vars, &kv.key, kv.value.clone());
                    self.env_keys.insert(kv.key.clone());
                }
                K::Env(out)
            }
            K::Label(kvs) => K::Label(
                kvs.iter()
                    .map(|kv| {
                        Ok(KeyValue {
                            key: self.word(ins, &kv.key)?,
                            value: self.word(ins, &kv.value)?,
                            legacy: kv.legacy,
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            K::Workdir(w) => K::Workdir(self.word(ins, w)?),
            K::User(w) => K::User(self.word(ins, w)?),
            K::StopSignal(w) => K::StopSignal(self.word(ins, w)?),
            K::Volume(v) => K::Volume(self.list(ins, v)?),
            K::Expose(ports) => {
                let vars = &self.vars;
                let lex = Lexer::new(self.escape);
                let mut out = Vec::new();
                for p in ports {
                    out.extend(lex.process_words(p, &|k| lookup(vars, k)).map_err(|e| {
                        Error::Expand {
                            file: self.file.clone(),
                            line: ins.line,
                            text: excerpt(&ins.original),
                            source: e,
                        }
                    })?);
                }
                K::Expose(out)
            }
            K::Copy(c) => K::Copy(Copy {
                sources: self.list(ins, &c.sources)?,
                inline: self.inline(ins, &c.inline)?,
                dest: self.word(ins, &c.dest)?,
                chown: self.opt(ins, &c.chown)?,
                chmod: self.opt(ins, &c.chmod)?,
                ..c.clone()
            }),
            K::Add(a) => K::Add(Add {
                sources: self.list(ins, &a.sources)?,
                inline: self.inline(ins, &a.inline)?,
                dest: self.word(ins, &a.dest)?,
                chown: self.opt(ins, &a.chown)?,
                chmod: self.opt(ins, &a.chmod)?,
                checksum: self.opt(ins, &a.checksum)?,
                ..a.clone()
            }),
            other => other.clone(),
        };
        Ok(Instruction { kind, ..ins.clone() })
    }

    /// An expander for [`crate::Mount::parse`] bound to this scope.
    pub fn expander(&self) -> impl Fn(&str) -> std::result::Result<String, String> + '_ {
        move |w| {
            Lexer::new(self.escape)
                .process_word(w, &|k| lookup(&self.vars, k))
                .map_err(|e| e.message)
        }
    }
}
