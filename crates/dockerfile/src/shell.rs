//! Variable expansion with BuildKit's shell-lexer rules
//! (`frontend/dockerfile/shell/lex.go`).
//!
//! This is deliberately *not* a POSIX shell: it only knows quotes, the escape character and the
//! `$` forms BuildKit supports, so that `WORKDIR`, `COPY`, `ENV`, … see exactly the values
//! `docker buildx build` would compute. `RUN`/`CMD`/`ENTRYPOINT` are never expanded here: the
//! shell inside the container does that.

use regex::Regex;

/// Why expanding a word failed (the caller adds file and line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// BuildKit-compatible message, e.g. `failed to process "${A:?}": A: is not allowed to be unset`.
    pub message: String,
}

impl ExpandError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Looks a variable up; `None` means unset (which differs from empty for `${V-x}` vs `${V:-x}`).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Nested `${a:-${b:-…}}` recurse; a fuzzer can nest thousands deep, so cap it instead of
/// overflowing the stack. Real Dockerfiles never come close.
const MAX_DEPTH: usize = 64;

/// Configurable lexer; [`expand`] and [`expand_words`] cover the common case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character (`\` or the backtick from `# escape=`).
    pub escape: char,
    /// Keep quote characters in the output (used to detect quoted heredoc delimiters).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies in `COPY <<EOF`).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables untouched (`$X` stays `$X`).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with BuildKit's defaults for the given escape character.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string (BuildKit `ProcessWord`).
    pub fn process_word(&self, word: &str, env: EnvLookup<'_>) -> Result<String, ExpandError> {
        self.run(word, env).map(|(s, _)| s)
    }

    /// Expands `word` and splits the result into words at unquoted whitespace
    /// (BuildKit `ProcessWords`); whitespace coming from a variable's value splits too.
    pub fn process_words(
        &self,
        word: &str,
        env: EnvLookup<'_>,
    ) -> Result<Vec<String>, ExpandError> {
        self.run(word, env).map(|(_, w)| w)
    }

    fn run(&self, word: &str, env: EnvLookup<'_>) -> Result<(String, Vec<String>), ExpandError> {
        let mut sw = ShellWord {
            lex: self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            depth: 0,
        };
        sw.process_stop_on(None, self.raw_escapes)
            .map_err(|e| ExpandError::new(format!("failed to process {word:?}: {}", e.message)))
    }
}

/// Expands `word` with `\` as escape character, as BuildKit does for ADD, COPY, ENV, EXPOSE,
/// FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG defaults.
///
/// ```
/// let env = |k: &str| (k == "A").then(|| "x y".to_string());
/// assert_eq!(strata_dockerfile::expand("${A}-${B:-z}", &env).unwrap(), "x y-z");
/// ```
pub fn expand(word: &str, env: EnvLookup<'_>) -> Result<String, ExpandError> {
    Lexer::new('\\').process_word(word, env)
}

/// Expands `word` and splits it into words (as EXPOSE does).
pub fn expand_words(word: &str, env: EnvLookup<'_>) -> Result<Vec<String>, ExpandError> {
    Lexer::new('\\').process_words(word, env)
}

/// Splits `word` into words without expanding anything (unset variables are kept verbatim).
pub fn split_words(word: &str) -> Result<Vec<String>, ExpandError> {
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    lex.process_words(word, &|_| None)
}

struct ShellWord<'a> {
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: EnvLookup<'a>,
    raw_escapes: bool,
    depth: usize,
}

/// Accumulates words the way BuildKit's `wordsStruct` does: whitespace from literal text or
/// variable values separates words, whitespace from quotes does not.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExpandError::new("substitutions nested too deeply"));
        }
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lex.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lex.skip_process_quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = self.next().unwrap_or_default();
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    // A trailing escape character is dropped, as in BuildKit.
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(ExpandError::new(format!(
                "unexpected end of statement while looking for matching {stop}"
            )));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        // Everything up to the next single quote is literal: no escapes, no `$`.
        let mut result = String::new();
        let open = self.next().unwrap_or('\'');
        if self.lex.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError::new(
                        "unexpected end of statement while looking for matching single-quote",
                    ));
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next().unwrap_or('"');
        if self.lex.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(ExpandError::new(
                        "unexpected end of statement while looking for matching double-quote",
                    ));
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            // Inside double quotes only `"`, `$` and the escape char itself
                            // are escapable; `\n` stays a backslash and an n.
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.next(); // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match (self.env)(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err(ExpandError::new("syntax error: missing '}'")),
            Some('{' | '}' | ':') => {
                return Err(ExpandError::new("syntax error: bad substitution"));
            }
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(ExpandError::new("syntax error: missing '}'"));
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match (self.env)(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err(ExpandError::new("syntax error: missing '}'")),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(ExpandError::new(format!(
                        "unsupported modifier ({chs}) in substitution"
                    )));
                }
                if !matches!(ch, '+' | '-' | '?' | '#' | '%') {
                    return Err(ExpandError::new(format!(
                        "unsupported modifier ({chs}) in substitution"
                    )));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::new("syntax error: missing '}'"));
                        }
                        return Err(e);
                    }
                };
                let value = (self.env)(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty_or_unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match ch {
                    '-' => Ok(if empty_or_unset { word } else { value.unwrap_or_default() }),
                    '+' => Ok(if empty_or_unset { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ExpandError::new(format!(
                            "{name}: {}",
                            if word.is_empty() { "is not allowed to be unset" } else { &word }
                        ))),
                        Some(v) if null_is_unset && v.is_empty() => Err(ExpandError::new(format!(
                            "{name}: {}",
                            if word.is_empty() { "is not allowed to be empty" } else { &word }
                        ))),
                        Some(v) => Ok(v),
                    },
                    _ => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        if ch == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        }
                    }
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::new("syntax error: missing '/' in ${}"));
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::new("syntax error: missing '}'"));
                        }
                        return Err(e);
                    }
                };
                let value = (self.env)(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let re = shell_pattern_to_regex(&pattern, true, false).map_err(|e| {
                    ExpandError::new(format!("invalid pattern ({pattern}) in substitution: {e}"))
                })?;
                if replace_all {
                    Ok(re.replace_all(&value, replacement.as_str()).into_owned())
                } else if let Some(m) = re.find(&value) {
                    Ok(format!("{}{}{}", &value[..m.start()], replacement, &value[m.end()..]))
                } else {
                    Ok(value)
                }
            }
            _ => Err(ExpandError::new(format!("unsupported modifier ({chs}) in substitution"))),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                // Positional parameters: all digits form the name ($10 is "10").
                while let Some(c) = self.peek().filter(|c| c.is_numeric()) {
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        // `<<` and the whitespace after it are kept together so word splitting does not
        // separate `<< EOF` into a heredoc marker and a stray word.
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut result = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            result.push(c);
            self.next();
        }
        result
    }
}

fn shell_pattern_to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut it = pattern.chars().peekable();
    while let Some(tok) = it.next() {
        match tok {
            '*' => {
                out.push_str(star);
                continue;
            }
            '?' => {
                out.push('.');
                continue;
            }
            '\\' => {
                if matches!(it.peek(), Some('}' | '/')) {
                    continue;
                }
                out.push('\\');
                match it.next() {
                    Some(t @ ('*' | '?' | '\\')) => out.push(t),
                    Some(t) => return Err(format!("invalid escape '\\{t}'")),
                    None => return Err("invalid escape '\\'".into()),
                }
                continue;
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => out.push('\\'),
            _ => {}
        }
        out.push(tok);
    }
    Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let re = shell_pattern_to_regex(pattern, greedy, true).map_err(|e| {
        ExpandError::new(format!("invalid pattern ({pattern}) in substitution: {e}"))
    })?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${v%pat}`: BuildKit reverses both pattern and value and trims a prefix, keeping `\x`
/// escape pairs in order.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; p.len()];
    let last = p.len().saturating_sub(1);
    let mut i = 0;
    while i < p.len() {
        let out_idx = last - i;
        if p[i] == '\\' && i != last && out_idx >= 1 {
            out[out_idx - 1] = p[i];
            out[out_idx] = p[i + 1];
            i += 2;
        } else {
            out[out_idx] = p[i];
            i += 1;
        }
    }
    let rev_pat: String = out.into_iter().collect();
    let rev_val: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&rev_pat, &rev_val, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("x  y".into()),
            "P" => Some("/usr/local/bin".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("$A", Ok("a")),
            ("${A}", Ok("a")),
            ("x${A}y", Ok("xay")),
            ("$UNSET", Ok("")),
            ("${UNSET:-d}", Ok("d")),
            ("${EMPTY:-d}", Ok("d")),
            ("${EMPTY-d}", Ok("")),
            ("${UNSET-d}", Ok("d")),
            ("${A:-d}", Ok("a")),
            ("${A:+alt}", Ok("alt")),
            ("${EMPTY:+alt}", Ok("")),
            ("${EMPTY+alt}", Ok("alt")),
            ("${UNSET+alt}", Ok("")),
            ("${UNSET:-${A}}", Ok("a")),
            ("${UNSET:-${UNSET2:-deep}}", Ok("deep")),
            ("\\$A", Ok("$A")),
            ("'$A'", Ok("$A")),
            ("\"$A\"", Ok("a")),
            ("\"\\$A\"", Ok("$A")),
            ("\"a\\nb\"", Ok("a\\nb")),
            ("a\\ b", Ok("a b")),
            ("$", Ok("$")),
            ("a$", Ok("a$")),
            ("${P%/*}", Ok("/usr/local")),
            ("${P%%/*}", Ok("")),
            ("${P#*/}", Ok("usr/local/bin")),
            ("${P##*/}", Ok("bin")),
            ("${P/local/opt}", Ok("/usr/opt/bin")),
            ("${P//\\//_}", Ok("_usr_local_bin")),
            ("${UNSET:?}", Err("UNSET: is not allowed to be unset")),
            ("${EMPTY:?}", Err("EMPTY: is not allowed to be empty")),
            ("${EMPTY?}", Ok("")),
            ("${UNSET:?custom msg}", Err("UNSET: custom msg")),
            ("${A", Err("missing '}'")),
            ("${}", Err("bad substitution")),
            ("'abc", Err("single-quote")),
            ("\"abc", Err("double-quote")),
            ("${A:=x}", Err("unsupported modifier (:=)")),
            ("${A:#x}", Err("unsupported modifier (:#)")),
        ];
        for (input, want) in cases {
            let got = expand(input, &env);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "input {input:?}"),
                (Err(w), Err(e)) => assert!(e.message.contains(w), "input {input:?}: {e}"),
                _ => panic!("input {input:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        assert_eq!(expand_words("a b  c", &env).unwrap(), ["a", "b", "c"]);
        assert_eq!(expand_words("\"a b\" c", &env).unwrap(), ["a b", "c"]);
        assert_eq!(expand_words("$SP z", &env).unwrap(), ["x", "y", "z"]);
        assert_eq!(expand_words("\"$SP\"", &env).unwrap(), ["x  y"]);
        assert_eq!(expand_words("80/tcp ${A}", &env).unwrap(), ["80/tcp", "a"]);
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        assert_eq!(lex.process_word("`$A", &env).unwrap(), "$A");
        assert_eq!(lex.process_word("C:\\dir", &env).unwrap(), "C:\\dir");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "${A:-".repeat(10_000);
        assert!(expand(&s, &env).is_err());
    }

    #[test]
    fn skip_unset_keeps_references() {
        assert_eq!(split_words("$X ${Y:-z}").unwrap(), ["$X", "${Y:-z}"]);
    }
}
