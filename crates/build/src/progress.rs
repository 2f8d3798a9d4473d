//! Build progress in buildx's `--progress=plain` format (`#N [stage i/n] INSTRUCTION`,
//! `#N CACHED`, `#N DONE 0.3s`), or a compact live view on a terminal.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise.
    #[default]
    Auto,
    /// One line per event.
    Plain,
    /// A live view (falls back to plain when stderr is not a terminal).
    Tty,
    /// Errors only.
    Quiet,
}

impl ProgressMode {
    /// Parses `--progress`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "plain" => Self::Plain,
            "tty" => Self::Tty,
            "quiet" => Self::Quiet,
            _ => return None,
        })
    }
}

/// Receives build events and renders them.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    next: usize,
    /// The live status line on a terminal (tty mode only).
    bar: Option<indicatif::ProgressBar>,
}

/// A step being reported; finish it with one of its methods.
#[derive(Debug)]
pub struct Step<'a> {
    progress: &'a Progress,
    id: usize,
    name: String,
    start: Instant,
    finished: bool,
}

impl Progress {
    /// A reporter in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto | ProgressMode::Tty if io::stderr().is_terminal() => {
                ProgressMode::Tty
            }
            ProgressMode::Auto | ProgressMode::Tty => ProgressMode::Plain,
            m => m,
        };
        Self { mode, inner: Mutex::new(Inner { next: 1, bar: None }) }
    }

    /// The effective mode.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    fn line(&self, inner: &mut Inner, text: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        match &inner.bar {
            // Printed above the live line, which indicatif redraws below it.
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(io::stderr().lock(), "{text}");
            }
        }
    }

    fn status(&self, inner: &mut Inner, text: &str) {
        if self.mode != ProgressMode::Tty {
            return;
        }
        let bar = inner.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        bar.set_message(text.to_owned());
    }

    /// Starts a step named like buildx (`[stage-0 2/3] COPY a /a`).
    pub fn step(&self, name: impl Into<String>) -> Step<'_> {
        let name = name.into();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.next;
        inner.next += 1;
        if self.mode == ProgressMode::Plain {
            self.line(&mut inner, &format!("#{id} {name}"));
        } else {
            self.status(&mut inner, &name);
        }
        Step { progress: self, id, name, start: Instant::now(), finished: false }
    }

    /// A free-standing message (warnings, summaries): always shown except in quiet mode.
    pub fn message(&self, text: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.line(&mut inner, text);
    }

    /// A warning: shown in every mode, quiet included.
    pub fn warn(&self, text: &str) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = format!("WARNING: {text}");
        match &inner.bar {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(io::stderr().lock(), "{text}");
            }
        }
    }

    /// Clears the live line at the end.
    pub fn finish(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = inner.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Step<'_> {
    /// The step number.
    pub fn id(&self) -> usize {
        self.id
    }

    /// A log line of the step (RUN output, details).
    pub fn log(&self, text: &str) {
        let p = self.progress;
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        match p.mode {
            ProgressMode::Plain => {
                let secs = self.start.elapsed().as_secs_f64();
                for l in text.lines() {
                    p.line(&mut inner, &format!("#{} {secs:.3} {l}", self.id));
                }
            }
            ProgressMode::Tty => {
                if let Some(l) = text.lines().last() {
                    p.status(&mut inner, &format!("{} {}", self.name, l));
                }
            }
            _ => {}
        }
    }

    fn end(mut self, word: &str, timed: bool) {
        self.finished = true;
        let p = self.progress;
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let secs = self.start.elapsed().as_secs_f64();
        let text = match (p.mode, timed) {
            (ProgressMode::Plain, true) => format!("#{} {word} {secs:.1}s", self.id),
            (ProgressMode::Plain, false) => format!("#{} {word}", self.id),
            (_, true) => format!("[+] {} {word} {secs:.1}s", self.name),
            (_, false) => format!("[+] {} {word}", self.name),
        };
        p.line(&mut inner, &text);
    }

    /// Finished by doing the work.
    pub fn done(self) {
        self.end("DONE", true);
    }

    /// Finished by a cache hit; `from` names the source when it is not the state dir.
    pub fn cached(self, from: Option<&str>) {
        match from {
            Some(src) => self.end(&format!("CACHED (from {src})"), false),
            None => self.end("CACHED", false),
        }
    }

    /// Failed.
    pub fn error(self, msg: &str) {
        let word = format!("ERROR: {msg}");
        self.end(&word, true);
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        if !self.finished && self.progress.mode == ProgressMode::Plain {
            let mut inner = self.progress.inner.lock().unwrap_or_else(|e| e.into_inner());
            self.progress.line(&mut inner, &format!("#{} CANCELED", self.id));
        }
    }
}
