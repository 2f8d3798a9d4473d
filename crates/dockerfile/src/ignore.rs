//! `.dockerignore` with Docker's rules (moby/patternmatcher + `ignorefile.ReadAll`), which are
//! **not** gitignore's:
//!
//! * a line starting with `#` (in column 0) is a comment; other lines are trimmed;
//! * patterns are `filepath.Clean`ed and a leading `/` is dropped: they are anchored at the
//!   context root (`foo` matches `./foo` only, `*.md` only top-level Markdown files);
//! * syntax is Go's `filepath.Match` (`*`, `?`, `[...]`, `\` escapes) plus `**` for any
//!   number of directories;
//! * a pattern that matches a directory excludes everything below it;
//! * `!pattern` re-includes; the last matching pattern wins.
//!
//! Which file to read is the caller's job, as in BuildKit: `<Dockerfile>.dockerignore` next to
//! the Dockerfile (e.g. `app.Dockerfile.dockerignore`) takes precedence over the
//! context's `.dockerignore`; only one of them is used.

use regex::Regex;

use crate::error::{Error, Result};

/// A compiled `.dockerignore`.
#[derive(Debug, Clone)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

/// Go's `path.Clean` for slash-separated paths.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Validates Go `filepath.Match` syntax (what patternmatcher calls to reject bad patterns).
fn validate(p: &str) -> std::result::Result<(), &'static str> {
    const BAD: &str = "syntax error in pattern";
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let esc = |i: &mut usize| -> std::result::Result<char, &'static str> {
        let c = *chars.get(*i).ok_or(BAD)?;
        if c == '-' || c == ']' {
            return Err(BAD);
        }
        *i += 1;
        if c == '\\' {
            let c = *chars.get(*i).ok_or(BAD)?;
            *i += 1;
            return Ok(c);
        }
        Ok(c)
    };
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err(BAD);
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut nrange = 0;
                loop {
                    if chars.get(i) == Some(&']') && nrange > 0 {
                        i += 1;
                        break;
                    }
                    let lo = esc(&mut i)?;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        hi = esc(&mut i)?;
                    }
                    if lo > hi {
                        return Err(BAD);
                    }
                    nrange += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn should_escape(c: char) -> bool {
    matches!(c, '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$')
}

/// patternmatcher's `compile`: exact / prefix (`foo/**`) / suffix (`**/foo`) / regex.
fn compile(p: &str) -> std::result::Result<Kind, String> {
    let mut re = String::from("^");
    #[derive(PartialEq, Clone, Copy)]
    enum T {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut t = T::Exact;
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if t == T::Exact {
                        t = T::Prefix;
                    } else {
                        re.push_str(".*");
                        t = T::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    t = T::Regex;
                }
                if first {
                    t = T::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                t = T::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            t = T::Regex;
        } else if should_escape(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            match chars.get(i) {
                Some(&n) => {
                    i += 1;
                    re.push('\\');
                    re.push(n);
                    t = T::Regex;
                }
                None => re.push_str("\\\\"),
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            t = T::Regex;
        } else {
            re.push(ch);
        }
        first = false;
    }
    Ok(match t {
        T::Exact => Kind::Exact,
        T::Prefix => Kind::Prefix(p[..p.len() - 2].to_string()),
        T::Suffix => Kind::Suffix(p[2..].to_string()),
        T::Regex => {
            re.push('$');
            Kind::Regex(Regex::new(&re).map_err(|e| e.to_string())?)
        }
    })
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix(pre) => path.starts_with(pre.as_str()),
            Kind::Suffix(suf) => {
                path.ends_with(suf.as_str()) || suf.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        let mut has_exclusions = false;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            let err = |message: &str| Error::Ignore {
                line,
                pattern: raw.to_string(),
                message: message.to_string(),
            };
            if exclusion && p.is_empty() {
                return Err(err("illegal exclusion pattern: \"!\""));
            }
            let mut cleaned = clean_path(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            validate(&cleaned).map_err(err)?;
            let kind = compile(&cleaned).map_err(|e| err(&e))?;
            has_exclusions |= exclusion;
            patterns.push(Pattern { cleaned, exclusion, kind });
        }
        Ok(Self { patterns, has_exclusions })
    }

    /// True if `rel_path` (slash-separated, relative to the context root) is excluded from
    /// the context. A path is excluded when it or one of its parent directories matches
    /// (patternmatcher `MatchesOrParentMatches`). `is_dir` is accepted for walkers'
    /// convenience; Docker's rules do not depend on it (`dir/` is cleaned to `dir`).
    pub fn matches(&self, rel_path: &str, is_dir: bool) -> bool {
        let _ = is_dir;
        let file = clean_path(rel_path.trim_start_matches('/'));
        if file == "." || file.is_empty() {
            // Docker never lets a pattern exclude the context root itself.
            return false;
        }
        let parents: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m && !parents.is_empty() {
                let mut prefix = String::new();
                for (i, seg) in parents.iter().enumerate() {
                    if i > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(seg);
                    if p.matches(&prefix) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// For an excluded directory: true if an exception pattern may re-include something
    /// below it, so a walker must descend instead of skipping the whole directory.
    ///
    /// This is Docker's own test (moby `archive.go` / fsutil): an exception counts only if
    /// its pattern text starts with `dir/`. So `!**/keep.txt` does *not* rescue files under
    /// an excluded directory, exactly as with `docker build`.
    pub fn may_contain_exceptions(&self, dir: &str) -> bool {
        if !self.has_exclusions {
            return false;
        }
        let dir = clean_path(dir.trim_start_matches('/'));
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.cleaned).starts_with(&dir_slash))
    }

    /// True if there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_table() {
        for (i, o) in [
            ("", "."),
            ("./foo", "foo"),
            ("foo/", "foo"),
            ("/a/../b", "/b"),
            ("a/../../b", "../b"),
            ("a//b/./c", "a/b/c"),
        ] {
            assert_eq!(clean_path(i), o, "{i}");
        }
    }

    #[test]
    fn bad_patterns() {
        for p in ["[", "a[]", "\\", "[z-a]", "!"] {
            assert!(DockerIgnore::parse(p).is_err(), "{p}");
        }
    }
}
