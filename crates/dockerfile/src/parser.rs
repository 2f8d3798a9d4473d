//! Bytes → [`Dockerfile`]: a line-by-line port of BuildKit's
//! `frontend/dockerfile/parser` and `instructions` packages.
//!
//! Hand-written rather than built on `parse-dockerfile` because the quirks users depend on are
//! specific to BuildKit's line scanner: directives end at the first non-directive line, comment
//! lines inside continuations vanish, `foo\\` is *not* a continuation, heredoc delimiters are
//! found by re-lexing the joined line, invalid JSON silently becomes shell form, flags are
//! peeled off *every* instruction (so `CMD --help` is an unknown-flag error). Porting those
//! rules directly is shorter than adapting another AST, and gives file:line errors and a
//! no-panic guarantee we control.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ast::*;
use crate::error::{Error, Result, excerpt};
use crate::shell::Lexer;

/// Parses a Dockerfile. `file` is only used in error messages.
///
/// ```
/// let df = strata_dockerfile::parse("Dockerfile", b"FROM alpine AS base\nRUN echo hi\n").unwrap();
/// assert_eq!(df.stages[0].name(), Some("base"));
/// assert_eq!(df.stages[0].instructions[0].original, "RUN echo hi");
/// ```
pub fn parse(file: &str, bytes: &[u8]) -> Result<Dockerfile> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut p = Parser {
        file: file.to_string(),
        directives: Directives::default(),
        directives_done: false,
        seen_directives: Vec::new(),
    };
    let nodes = p.scan(text)?;
    if nodes.is_empty() {
        return Err(Error::Empty { file: p.file });
    }
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in nodes {
        let ins = p.instruction(&node)?;
        match (&ins.kind, stages.last_mut()) {
            (InstructionKind::From(f), _) => {
                let from = f.clone();
                stages.push(Stage {
                    index: stages.len(),
                    from_instruction: ins,
                    from,
                    instructions: Vec::new(),
                });
            }
            (_, Some(stage)) => stage.instructions.push(ins),
            (InstructionKind::Arg(_), None) => global_args.push(ins),
            (_, None) => {
                return Err(p.err(
                    ins.line,
                    &ins.original,
                    "no build stage in current context: only ARG may come before the first FROM",
                ));
            }
        }
    }
    if stages.is_empty() {
        return Err(Error::NoFrom { file: p.file });
    }
    Ok(Dockerfile { file: p.file, directives: p.directives, global_args, stages })
}

/// One logical line after continuation joining, with heredoc bodies.
#[derive(Debug)]
struct Node {
    start: usize,
    end: usize,
    line: String,
    heredocs: Vec<Heredoc>,
}

struct Parser {
    file: String,
    directives: Directives,
    directives_done: bool,
    seen_directives: Vec<String>,
}

/// Matches `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go `\s` = ASCII whitespace).
fn match_directive(body: &str) -> Option<(&str, &str)> {
    let key_end = body.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(body.len());
    let key = &body[..key_end];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let rest = body[key_end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    let value = rest.strip_prefix('=')?.trim_matches(|c: char| c.is_ascii_whitespace());
    (!value.is_empty()).then_some((key, value))
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    trim_newline(s).trim_start().starts_with('#')
}

impl Parser {
    fn err(&self, line: usize, text: &str, message: impl Into<String>) -> Error {
        Error::Syntax {
            file: self.file.clone(),
            line,
            message: message.into(),
            text: excerpt(text),
        }
    }

    /// BuildKit's `possibleParserDirective`: returns true if the line was a directive.
    fn directive(&mut self, line: &str, lineno: usize) -> Result<bool> {
        if self.directives_done {
            return Ok(false);
        }
        let Some(body) = line.strip_prefix('#') else {
            self.directives_done = true;
            return Ok(false);
        };
        let body = body.trim_start();
        let Some((key, value)) = match_directive(body) else {
            self.directives_done = true;
            return Ok(false);
        };
        let key = key.to_ascii_lowercase();
        let value = value.to_string();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.directives_done = true;
            return Ok(false);
        }
        if self.seen_directives.contains(&key) {
            return Err(self.err(
                lineno,
                line,
                format!("only one {key} parser directive can be used"),
            ));
        }
        self.seen_directives.push(key.clone());
        match key.as_str() {
            "escape" => match value.as_str() {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                _ => {
                    return Err(self.err(
                        lineno,
                        line,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ));
                }
            },
            "syntax" => self.directives.syntax = Some(value),
            _ => self.directives.check = Some(value),
        }
        Ok(true)
    }

    /// BuildKit's `processLine`: directive detection, then comment lines become empty.
    fn process_line<'a>(
        &mut self,
        raw: &'a str,
        strip_left: bool,
        lineno: usize,
    ) -> Result<&'a str> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        self.directive(token, lineno)?;
        Ok(if is_comment(token) { "" } else { token })
    }

    /// `([^\\])\\[ \t]*$|^\\[ \t]*$`: a trailing escape char, unless itself escaped.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let esc = self.directives.escape;
        let t = line.trim_end_matches([' ', '\t']);
        if let Some(before) = t.strip_suffix(esc)
            && (before.is_empty() || !before.ends_with(esc))
        {
            return (before, false);
        }
        (line, true)
    }

    fn scan(&mut self, text: &str) -> Result<Vec<Node>> {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut nodes = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let lineno = i + 1;
            let first = self.process_line(lines[i], true, lineno)?;
            i += 1;
            let start = lineno;
            let (first, mut end_of_line) = self.trim_continuation(first);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut buf = first.to_string();
            while !end_of_line && i < lines.len() {
                let raw = lines[i];
                let l = self.process_line(raw, false, i + 1)?;
                i += 1;
                if is_comment(raw) {
                    // Comment lines inside a continuation are dropped, not joined.
                    continue;
                }
                if l.trim_start().is_empty() {
                    // Empty continuation lines are allowed (BuildKit only warns).
                    continue;
                }
                let (l, eol) = self.trim_continuation(l);
                end_of_line = eol;
                buf.push_str(l);
            }
            let mut node = Node { start, end: i, line: buf, heredocs: Vec::new() };
            if node.line.contains("<<") && self.can_contain_heredoc(&node.line) {
                let docs =
                    heredocs_from_line(&node.line).map_err(|m| self.err(start, &node.line, m))?;
                for mut doc in docs {
                    let mut terminated = false;
                    let mut content = String::new();
                    while i < lines.len() {
                        let raw = lines[i];
                        i += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(raw);
                    }
                    if !terminated {
                        return Err(self.err(start, &node.line, "unterminated heredoc"));
                    }
                    doc.content = content;
                    node.heredocs.push(doc);
                }
                node.end = i;
            }
            nodes.push(node);
        }
        Ok(nodes)
    }

    /// RUN/COPY/ADD (also behind ONBUILD) may carry heredocs, but not in JSON form.
    fn can_contain_heredoc(&self, line: &str) -> bool {
        let Ok((cmd, _, args)) = split_command(line) else {
            return false;
        };
        let (cmd, args) = if cmd.eq_ignore_ascii_case("onbuild") {
            match split_command(&args) {
                Ok((c, _, a)) => (c, a),
                Err(_) => return false,
            }
        } else {
            (cmd, args)
        };
        let lc = cmd.to_ascii_lowercase();
        matches!(lc.as_str(), "run" | "copy" | "add")
            && !matches!(parse_json(&args), Json::Array(_))
    }

    fn instruction(&self, node: &Node) -> Result<Instruction> {
        let original = node.line.trim().to_string();
        let kind = self
            .instruction_kind(&node.line, &node.heredocs, node.start)
            .map_err(|(m, t)| self.err(node.start, t.as_deref().unwrap_or(&original), m))?;
        Ok(Instruction { line: node.start, end_line: node.end, original, kind })
    }

    /// Error type: message plus optional more precise offending text.
    fn instruction_kind(
        &self,
        line: &str,
        heredocs: &[Heredoc],
        lineno: usize,
    ) -> std::result::Result<InstructionKind, (String, Option<String>)> {
        let plain = |m: String| (m, None);
        let (cmd, raw_flags, rest) = split_command(line).map_err(plain)?;
        let lc = cmd.to_ascii_lowercase();
        let esc = self.directives.escape;
        let _ = lineno;
        let at_least_one = |n: &str| format!("{n} requires at least one argument");
        let exactly_one = |n: &str| format!("{n} requires exactly one argument");
        Ok(match lc.as_str() {
            "from" => {
                let f = Flags::parse(&raw_flags, &[("platform", FlagKind::String)])?;
                let args = ws_split(&rest);
                let name = match args.len() {
                    3 if args[1].eq_ignore_ascii_case("as") => {
                        let n = args[2].to_lowercase();
                        if !valid_stage_name(&n) {
                            return Err((
                                format!(
                                    "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                                    args[2]
                                ),
                                Some(args[2].clone()),
                            ));
                        }
                        Some(n)
                    }
                    1 => None,
                    _ => return Err(plain("FROM requires either one or three arguments".into())),
                };
                InstructionKind::From(From {
                    image: args[0].clone(),
                    name,
                    platform: f.string("platform"),
                })
            }
            "arg" => {
                Flags::parse(&raw_flags, &[])?;
                let words = parse_words(&rest, esc);
                if words.is_empty() {
                    return Err(plain(at_least_one("ARG")));
                }
                let mut out = Vec::new();
                for w in words {
                    match w.split_once('=') {
                        Some(("", _)) => {
                            return Err(("ARG names can not be blank".into(), Some(w)));
                        }
                        Some((k, v)) => {
                            out.push(ArgDecl { name: k.into(), default: Some(v.into()) })
                        }
                        None => out.push(ArgDecl { name: w, default: None }),
                    }
                }
                InstructionKind::Arg(out)
            }
            "env" | "label" => {
                let name = if lc == "env" { "ENV" } else { "LABEL" };
                Flags::parse(&raw_flags, &[])?;
                let kvs = parse_name_val(&rest, name, esc)?;
                if kvs.is_empty() {
                    return Err(plain(at_least_one(name)));
                }
                if kvs.iter().any(|kv| kv.key.is_empty()) {
                    return Err(plain(format!("{name} names can not be blank")));
                }
                if lc == "env" { InstructionKind::Env(kvs) } else { InstructionKind::Label(kvs) }
            }
            "maintainer" | "workdir" | "user" | "stopsignal" => {
                let up = lc.to_ascii_uppercase();
                if rest.is_empty() {
                    return Err(plain(exactly_one(&up)));
                }
                Flags::parse(&raw_flags, &[])?;
                match lc.as_str() {
                    "maintainer" => InstructionKind::Maintainer(rest),
                    "workdir" => InstructionKind::Workdir(rest),
                    "user" => InstructionKind::User(rest),
                    _ => InstructionKind::StopSignal(rest),
                }
            }
            "cmd" | "entrypoint" => {
                Flags::parse(&raw_flags, &[])?;
                let c = maybe_json(&rest)?;
                if lc == "cmd" { InstructionKind::Cmd(c) } else { InstructionKind::Entrypoint(c) }
            }
            "shell" => {
                Flags::parse(&raw_flags, &[])?;
                match maybe_json(&rest)? {
                    CommandLine::Exec(v) if !v.is_empty() => InstructionKind::Shell(v),
                    CommandLine::Exec(_) => return Err(plain(at_least_one("SHELL"))),
                    CommandLine::Shell(s) if s.is_empty() => {
                        return Err(plain(at_least_one("SHELL")));
                    }
                    CommandLine::Shell(_) => {
                        return Err(plain(
                            "SHELL requires the arguments to be in JSON form".into(),
                        ));
                    }
                }
            }
            "expose" => {
                let mut ports = ws_split(&rest);
                if ports.is_empty() {
                    return Err(plain(at_least_one("EXPOSE")));
                }
                Flags::parse(&raw_flags, &[])?;
                ports.sort();
                InstructionKind::Expose(ports)
            }
            "volume" => {
                let vols = maybe_json_list(&rest)?;
                if vols.is_empty() {
                    return Err(plain(at_least_one("VOLUME")));
                }
                Flags::parse(&raw_flags, &[])?;
                let mut out = Vec::new();
                for v in vols {
                    let v = v.trim().to_string();
                    if v.is_empty() {
                        return Err(plain("VOLUME specified can not be an empty string".into()));
                    }
                    out.push(v);
                }
                InstructionKind::Volume(out)
            }
            "healthcheck" => InstructionKind::Healthcheck(parse_healthcheck(&raw_flags, &rest)?),
            "onbuild" => {
                if rest.is_empty() {
                    return Err(plain(at_least_one("ONBUILD")));
                }
                Flags::parse(&raw_flags, &[])?;
                // Validate the trigger once, without recursion (ONBUILD ONBUILD … is an error
                // anyway, and recursing on attacker-controlled nesting could blow the stack).
                let (sub, _, _) = split_command(&rest).map_err(plain)?;
                let up = sub.to_ascii_uppercase();
                match up.as_str() {
                    "ONBUILD" => {
                        return Err(plain(
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                        ));
                    }
                    "MAINTAINER" | "FROM" => {
                        return Err(plain(format!("{up} isn't allowed as an ONBUILD trigger")));
                    }
                    _ => {}
                }
                self.instruction_kind(&rest, heredocs, lineno)?;
                let mut expr = rest.clone();
                for h in heredocs {
                    expr.push('\n');
                    expr.push_str(&h.content);
                    expr.push_str(&h.name);
                }
                InstructionKind::Onbuild(expr)
            }
            "copy" | "add" => {
                let up = lc.to_ascii_uppercase();
                let words = maybe_json_list(&rest)?;
                if words.len() < 2 {
                    return Err(plain(format!(
                        "{up} requires at least two arguments, but only one was provided. Destination could not be determined"
                    )));
                }
                let spec: &[(&str, FlagKind)] = if lc == "copy" {
                    &[
                        ("chown", FlagKind::String),
                        ("from", FlagKind::String),
                        ("chmod", FlagKind::String),
                        ("link", FlagKind::Bool),
                        ("exclude", FlagKind::Strings),
                        ("parents", FlagKind::Bool),
                    ]
                } else {
                    &[
                        ("chown", FlagKind::String),
                        ("chmod", FlagKind::String),
                        ("link", FlagKind::Bool),
                        ("keep-git-dir", FlagKind::Bool),
                        ("checksum", FlagKind::String),
                        ("unpack", FlagKind::Bool),
                        ("exclude", FlagKind::Strings),
                    ]
                };
                let f = Flags::parse(&raw_flags, spec)?;
                let (dest, srcs) = match words.split_last() {
                    Some((d, s)) => (d.clone(), s.to_vec()),
                    None => return Err(plain(format!("{up} requires at least two arguments"))),
                };
                if parse_heredoc(&dest).ok().flatten().is_some() {
                    return Err((
                        format!("{up} cannot accept a heredoc as a destination"),
                        Some(dest),
                    ));
                }
                let mut sources = Vec::new();
                let mut inline = Vec::new();
                for s in srcs {
                    match parse_heredoc(&s).ok().flatten() {
                        Some(h) => {
                            let content = heredocs
                                .iter()
                                .find(|d| d.name == h.name)
                                .map(|d| d.content.clone())
                                .unwrap_or_default();
                            inline.push(Heredoc { content, ..h });
                        }
                        None => sources.push(s),
                    }
                }
                if lc == "copy" {
                    InstructionKind::Copy(Copy {
                        sources,
                        inline,
                        dest,
                        from: f.string("from"),
                        chown: f.string("chown"),
                        chmod: f.string("chmod"),
                        link: f.bool("link") == Some(true),
                        parents: f.bool("parents") == Some(true),
                        exclude: f.strings("exclude"),
                    })
                } else {
                    InstructionKind::Add(Add {
                        sources,
                        inline,
                        dest,
                        chown: f.string("chown"),
                        chmod: f.string("chmod"),
                        link: f.bool("link") == Some(true),
                        keep_git_dir: f.bool("keep-git-dir"),
                        checksum: f.string("checksum"),
                        unpack: f.bool("unpack"),
                        exclude: f.strings("exclude"),
                    })
                }
            }
            "run" => {
                let f = Flags::parse(
                    &raw_flags,
                    &[
                        ("mount", FlagKind::Strings),
                        ("network", FlagKind::String),
                        ("security", FlagKind::String),
                    ],
                )?;
                let mounts = f.strings("mount");
                for m in &mounts {
                    crate::mount::check_unexpanded(m).map_err(|e| (e, Some(m.clone())))?;
                }
                let network = f.string("network");
                if let Some(n) = &network
                    && !matches!(n.as_str(), "default" | "none" | "host")
                {
                    return Err((format!("invalid network mode {n:?}"), Some(n.clone())));
                }
                let security = f.string("security");
                if let Some(s) = &security
                    && !matches!(s.as_str(), "insecure" | "sandbox")
                {
                    return Err((
                        format!("security {s:?} is not valid; allowed: insecure, sandbox"),
                        Some(s.clone()),
                    ));
                }
                InstructionKind::Run(Run {
                    command: maybe_json(&rest)?,
                    heredocs: heredocs.to_vec(),
                    mounts,
                    network,
                    security,
                })
            }
            _ => {
                return Err((format!("unknown instruction: {}", cmd.to_uppercase()), Some(cmd)));
            }
        })
    }
}

fn valid_stage_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// Go's `reWhitespace` (`[\t\v\f\r ]+`).
fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn ws_split(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(is_re_ws).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// `splitCommand`: keyword, leading `--flags`, and the trimmed rest.
fn split_command(line: &str) -> std::result::Result<(String, Vec<String>, String), String> {
    let t = line.trim();
    match t.find(is_re_ws) {
        None => Ok((t.to_string(), Vec::new(), String::new())),
        Some(i) => {
            let cmd = &t[..i];
            let rest = t[i..].trim_start_matches(is_re_ws);
            let (args, flags) = extract_builder_flags(rest);
            Ok((cmd.to_string(), flags, args.trim().to_string()))
        }
    }
}

/// `extractBuilderFlags`: peels `--name[=value]` words (quotes and `\` honoured) off the
/// front of the arguments; `--` ends the flags.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let ch = if at_end { '\0' } else { chars[pos].1 };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            if ch != '-' || chars.get(pos + 1).map(|c| c.1) != Some('-') {
                return (line[chars[pos].0..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[chars[pos].0..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars[pos].1;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars[pos].1;
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// `parseWords`: splits at whitespace outside quotes, keeping quotes and escapes in the
/// words (expansion removes them later).
fn parse_words(rest: &str, esc: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut in_word, mut in_quote, mut blank_ok) = (false, false, false);
    let mut quote = '\0';
    let mut i = 0;
    while i < chars.len() {
        let mut ch = chars[i];
        if !in_word && !in_quote {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        if in_quote {
            if ch == quote {
                in_quote = false;
            }
            if ch == esc && quote != '\'' {
                if i + 1 == chars.len() {
                    in_quote = false;
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        if ch.is_whitespace() {
            in_word = false;
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            blank_ok = false;
            i += 1;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = ch;
            blank_ok = true;
            in_quote = true;
        }
        if ch == esc {
            if i + 1 == chars.len() {
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    if (in_word || in_quote) && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

type KindErr = (String, Option<String>);

/// `parseNameVal` for ENV and LABEL.
fn parse_name_val(rest: &str, key: &str, esc: char) -> std::result::Result<Vec<KeyValue>, KindErr> {
    let words = parse_words(rest, esc);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        // Legacy `ENV K V`: everything after the first whitespace run is the value.
        let mut parts = rest.splitn(2, is_re_ws);
        let k = parts.next().unwrap_or_default();
        let v = parts.next().map(|v| v.trim_start_matches(is_re_ws));
        return match v {
            Some(v) => Ok(vec![KeyValue { key: k.into(), value: v.into(), legacy: true }]),
            None => Err((format!("{key} must have two arguments"), None)),
        };
    }
    let mut out = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) => out.push(KeyValue { key: k.into(), value: v.into(), legacy: false }),
            None => {
                return Err((
                    format!(
                        "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
                    ),
                    Some(w),
                ));
            }
        }
    }
    Ok(out)
}

enum Json {
    Text,
    NonStrings,
    Array(Vec<String>),
}

/// `parseJSON`: a JSON array of strings, or not JSON at all (→ shell form), or an array
/// with non-strings (a hard error in BuildKit).
fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::Text;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Err(_) => Json::Text,
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NonStrings,
                }
            }
            Json::Array(out)
        }
    }
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn maybe_json(rest: &str) -> std::result::Result<CommandLine, KindErr> {
    match parse_json(rest) {
        Json::Array(v) => Ok(CommandLine::Exec(v)),
        Json::NonStrings => Err((NOT_STRING_ARRAY.into(), None)),
        Json::Text => Ok(CommandLine::Shell(rest.to_string())),
    }
}

fn maybe_json_list(rest: &str) -> std::result::Result<Vec<String>, KindErr> {
    match parse_json(rest) {
        Json::Array(v) => Ok(v),
        Json::NonStrings => Err((NOT_STRING_ARRAY.into(), None)),
        Json::Text => Ok(ws_split(rest)),
    }
}

fn parse_healthcheck(
    raw_flags: &[String],
    rest: &str,
) -> std::result::Result<Healthcheck, KindErr> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Err(("HEALTHCHECK requires at least one argument".into(), None));
    }
    let typ = rest[..sep].to_uppercase();
    let cmd_text = rest[sep..].trim_start();
    if typ == "NONE" {
        if !cmd_text.is_empty() {
            return Err(("HEALTHCHECK NONE takes no arguments".into(), None));
        }
        Flags::parse(raw_flags, &[])?;
        return Ok(Healthcheck::None);
    }
    let f = Flags::parse(
        raw_flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if typ != "CMD" {
        return Err((format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"), None));
    }
    let command = if cmd_text.is_empty() {
        return Err(("Missing command after HEALTHCHECK CMD".into(), None));
    } else {
        maybe_json(cmd_text)?
    };
    let interval = |name: &str| -> std::result::Result<Option<Duration>, KindErr> {
        let Some(v) = f.string(name) else {
            return Ok(None);
        };
        if v.is_empty() {
            return Ok(None);
        }
        let d = parse_go_duration(&v).map_err(|e| (e, Some(v.clone())))?;
        match d {
            None => Err((format!("Interval {name:?} cannot be less than 1ms"), Some(v))),
            Some(d) if d.is_zero() => Ok(None),
            Some(d) if d < Duration::from_millis(1) => {
                Err((format!("Interval {name:?} cannot be less than 1ms"), Some(v)))
            }
            Some(d) => Ok(Some(d)),
        }
    };
    let retries = match f.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<i32>() {
            Ok(n) if n < 0 => {
                return Err((format!("--retries cannot be negative ({n})"), Some(v)));
            }
            Ok(n) => Some(n.unsigned_abs()),
            Err(_) => {
                return Err((format!("strconv.ParseInt: parsing {v:?}: invalid syntax"), Some(v)));
            }
        },
    };
    Ok(Healthcheck::Cmd {
        command,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

/// Go's `time.ParseDuration`. `Ok(None)` means a negative duration (BuildKit rejects those
/// as "less than 1ms").
fn parse_go_duration(s: &str) -> std::result::Result<Option<Duration>, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Some(Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * mult;
    }
    if !total.is_finite() || total > 9.2e9 {
        return Err(bad());
    }
    if neg && total > 0.0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(total)))
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// BuildKit's `BFlags`: every instruction declares its flags; anything else is an error.
struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    fn parse(raw: &[String], spec: &[(&str, FlagKind)]) -> std::result::Result<Self, KindErr> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for arg in raw {
            let Some(body) = arg.strip_prefix("--") else {
                return Err((format!("arg should start with -- : {arg}"), Some(arg.clone())));
            };
            if body.is_empty() {
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err((format!("unknown flag: {name}"), Some(arg.clone())));
            };
            if values.contains_key(name) && kind != FlagKind::Strings {
                return Err((format!("duplicate flag specified: {name}"), Some(arg.clone())));
            }
            let v = match kind {
                FlagKind::Bool => match value {
                    Some("") => {
                        return Err((
                            format!("missing a value on flag: {name}"),
                            Some(arg.clone()),
                        ));
                    }
                    None => "true".to_string(),
                    Some(v) => match v.to_ascii_lowercase().as_str() {
                        "true" => "true".into(),
                        "false" => "false".into(),
                        _ => {
                            return Err((
                                format!("expecting boolean value for flag {name}, not: {v}"),
                                Some(arg.clone()),
                            ));
                        }
                    },
                },
                FlagKind::String | FlagKind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => {
                        return Err((
                            format!("missing a value on flag: {name}"),
                            Some(arg.clone()),
                        ));
                    }
                },
            };
            values.entry(name.to_string()).or_default().push(v);
        }
        Ok(Self { values })
    }
    fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }
    fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

/// `^(\d*)<<(-?)([^<]*)$` then the delimiter lexed with and without quotes.
fn parse_heredoc(src: &str) -> std::result::Result<Option<Heredoc>, String> {
    let digits = src.len() - src.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = src[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let env = |_: &str| None;
    let words = lex.process_words(rest, &env).map_err(|e| e.message)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &env).map_err(|e| e.message)?;
    if raw.len() != 1 {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {rest}"));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        chomp,
        expand: quotes(&words[0]) == quotes(&raw[0]),
    }))
}

fn heredocs_from_line(line: &str) -> std::result::Result<Vec<Heredoc>, String> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    // BuildKit ignores lexing errors here: an unbalanced quote just means no heredocs.
    let words = lex.process_words(line, &|_| None).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_extraction() {
        let (rest, flags) = extract_builder_flags("--from=a --chown=\"x y\" src dst");
        assert_eq!(flags, ["--from=a", "--chown=x y"]);
        assert_eq!(rest, "src dst");
        let (rest, flags) = extract_builder_flags("-- --notflag");
        assert!(flags.is_empty());
        assert_eq!(rest.trim(), "--notflag");
        let (rest, flags) = extract_builder_flags("--link");
        assert_eq!(flags, ["--link"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(parse_words("A=\"x y\" B=1", '\\'), ["A=\"x y\"", "B=1"]);
        assert_eq!(parse_words("A=x\\ y", '\\'), ["A=x\\ y"]);
        assert_eq!(parse_words("''", '\\'), ["''"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s").unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0").unwrap(), Some(Duration::ZERO));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.chomp, h.expand), ("EOF", false, true));
        let h = parse_heredoc("<<-\"EOF\"").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.chomp, h.expand), ("EOF", true, false));
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("a<<EOF").unwrap().is_none());
    }
}
