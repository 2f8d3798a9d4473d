//! Read-only views of a filesystem that COPY reads from: a build-context directory
//! (filtered by `.dockerignore`), or a stage's root filesystem seen through its layer
//! snapshots (overlayfs form) without mounting anything.
//!
//! Paths are `/`-separated and relative to the view's root. Every lookup stays inside
//! the root: `..` is clamped at the root (as Docker does for context paths) and symlinks
//! are resolved inside the view, never on the host.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Type of a view entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Device, fifo or socket.
    Other,
}

/// An entry found in a view.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Where its bytes are on the host.
    pub host_path: PathBuf,
    /// Its metadata (lstat).
    pub meta: Metadata,
}

impl Entry {
    /// The entry's kind.
    pub(crate) fn kind(&self) -> Kind {
        let ft = self.meta.file_type();
        if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        }
    }
}

/// A read-only filesystem view.
pub(crate) trait FsView {
    /// The entry at `rel` (no symlink following for the last component), or `None`.
    fn lookup(&self, rel: &str) -> io::Result<Option<Entry>>;
    /// The names inside directory `rel`, sorted.
    fn list(&self, rel: &str) -> io::Result<Vec<String>>;
    /// Whether `rel` is excluded (by `.dockerignore`); excluded entries are invisible.
    fn excluded(&self, _rel: &str, _is_dir: bool) -> bool {
        false
    }
    /// Whether directory `rel` is itself excluded and visible only because an exception
    /// (`!dir/keep`) may re-include something below it: copied only if something is.
    fn only_for_exceptions(&self, _rel: &str) -> bool {
        false
    }
}

/// Normalises a path: splits on `/`, drops `.` and empty parts, clamps `..` at the root.
pub(crate) fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_owned()),
        }
    }
    out
}

/// Joins cleaned parts back into a relative path (`""` is the root).
pub(crate) fn join(parts: &[String]) -> String {
    parts.join("/")
}

/// Resolves `rel` inside `view`, following symlinks in every component (and in the last
/// one too when `follow_last`), keeping targets inside the root. Returns the resolved
/// relative path and its entry.
pub(crate) fn resolve(
    view: &dyn FsView,
    rel: &str,
    follow_last: bool,
) -> io::Result<Option<(String, Entry)>> {
    let mut pending: Vec<String> = clean(rel).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    let mut last: Option<Entry> = None;
    while let Some(part) = pending.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let cur = join(&done);
        let Some(entry) = view.lookup(&cur)? else { return Ok(None) };
        let is_last = pending.is_empty();
        if entry.kind() == Kind::Symlink && (!is_last || follow_last) {
            hops += 1;
            if hops > 40 {
                return Err(io::Error::other(format!(
                    "too many levels of symbolic links at /{cur}"
                )));
            }
            let target = fs::read_link(&entry.host_path)?;
            let target = target.to_string_lossy();
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            for p in target.split('/').rev() {
                if !p.is_empty() && p != "." {
                    pending.push(p.to_owned());
                }
            }
            last = None;
            continue;
        }
        last = Some(entry);
    }
    match last {
        Some(e) => Ok(Some((join(&done), e))),
        None if done.is_empty() => Ok(view.lookup("")?.map(|e| (String::new(), e))),
        None => Ok(view.lookup(&join(&done))?.map(|e| (join(&done), e))),
    }
}

/// A plain directory (the build context or a named context), optionally filtered.
/// A `.dockerignore` predicate: `(relative path, is_dir) -> excluded`.
pub(crate) type IgnoreFn = Box<dyn Fn(&str, bool) -> bool + Send + Sync>;

/// A directory predicate: `(relative path) -> bool`.
type DirPredicate = Box<dyn Fn(&str) -> bool + Send + Sync>;

pub(crate) struct DirView {
    root: PathBuf,
    ignore: Option<IgnoreFn>,
    exception_dirs: Option<DirPredicate>,
}

impl std::fmt::Debug for DirView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirView").field("root", &self.root).finish_non_exhaustive()
    }
}

impl DirView {
    /// A view of `root`; `ignore(rel, is_dir)` hides excluded paths.
    pub(crate) fn new(root: impl Into<PathBuf>, ignore: Option<IgnoreFn>) -> Self {
        Self { root: root.into(), ignore, exception_dirs: None }
    }

    /// Marks the directories kept visible only for `.dockerignore` exceptions.
    pub(crate) fn with_exception_dirs(
        mut self,
        f: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.exception_dirs = Some(Box::new(f));
        self
    }
}

impl FsView for DirView {
    fn lookup(&self, rel: &str) -> io::Result<Option<Entry>> {
        let p = if rel.is_empty() { self.root.clone() } else { self.root.join(rel) };
        match fs::symlink_metadata(&p) {
            Ok(meta) => {
                if !rel.is_empty() && self.excluded(rel, meta.is_dir()) {
                    return Ok(None);
                }
                Ok(Some(Entry { host_path: p, meta }))
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        let p = if rel.is_empty() { self.root.clone() } else { self.root.join(rel) };
        let mut names = Vec::new();
        for ent in fs::read_dir(&p)? {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    fn excluded(&self, rel: &str, is_dir: bool) -> bool {
        self.ignore.as_ref().is_some_and(|f| f(rel, is_dir))
    }

    fn only_for_exceptions(&self, rel: &str) -> bool {
        self.exception_dirs.as_ref().is_some_and(|f| f(rel))
    }
}

/// A root filesystem seen through layer snapshots (top first). Snapshots are in
/// overlayfs form (whiteouts are 0:0 character devices, opaque directories carry
/// `trusted.overlay.opaque=y`) or, when extracted without root, AUFS form (`.wh.<name>`
/// files and `.wh..wh..opq` markers). Both are understood.
#[derive(Debug, Clone)]
pub(crate) struct LayeredView {
    layers: Vec<PathBuf>,
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    if dir.join(".wh..wh..opq").exists() {
        return true;
    }
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Ok(Some(v)) = xattr_get(dir, name)
            && v == b"y"
        {
            return true;
        }
    }
    false
}

fn xattr_get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    let mut buf = [0u8; 16];
    #[allow(unsafe_code)]
    // SAFETY: both strings are NUL-terminated and live for the call; buf is writable
    // for its full length, which is what we pass.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) | Some(libc::ERANGE) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(buf[..r as usize].to_vec()))
}

impl LayeredView {
    /// A view over snapshot directories, top layer first.
    pub(crate) fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// Whether `rel` is hidden in layer `layer` (by a whiteout, an opaque or
    /// non-directory ancestor), so lower layers must not be consulted.
    fn blocked_below(&self, layer: &Path, parts: &[String]) -> bool {
        // An ancestor present in this layer that is not a directory, or is opaque,
        // hides everything below it in lower layers.
        for i in 1..parts.len() {
            let anc = layer.join(join(&parts[..i]));
            if let Ok(m) = fs::symlink_metadata(&anc)
                && (!m.is_dir() || is_opaque(&anc))
            {
                return true;
            }
            let wh = layer.join(join(&parts[..i - 1])).join(format!(".wh.{}", parts[i - 1]));
            if wh.exists() {
                return true;
            }
        }
        false
    }
}

impl FsView for LayeredView {
    fn lookup(&self, rel: &str) -> io::Result<Option<Entry>> {
        let parts = clean(rel);
        if parts.is_empty() {
            // The root always exists; use the top layer's metadata when there is one.
            for l in &self.layers {
                if let Ok(meta) = fs::symlink_metadata(l) {
                    return Ok(Some(Entry { host_path: l.clone(), meta }));
                }
            }
            return Ok(None);
        }
        let name = parts.last().cloned().unwrap_or_default();
        if name.starts_with(".wh.") {
            return Ok(None);
        }
        for layer in &self.layers {
            let p = layer.join(join(&parts));
            match fs::symlink_metadata(&p) {
                Ok(meta) if is_whiteout(&meta) => return Ok(None),
                Ok(meta) => return Ok(Some(Entry { host_path: p, meta })),
                Err(_) => {}
            }
            let parent = layer.join(join(&parts[..parts.len() - 1]));
            if parent.join(format!(".wh.{name}")).exists() {
                return Ok(None);
            }
            if self.blocked_below(layer, &parts) {
                return Ok(None);
            }
            // The parent itself being opaque in this layer hides lower copies of `rel`.
            if parts.len() > 1
                && fs::symlink_metadata(&parent).is_ok_and(|m| m.is_dir())
                && is_opaque(&parent)
            {
                return Ok(None);
            }
        }
        Ok(None)
    }

    fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        let parts = clean(rel);
        let mut seen = std::collections::BTreeSet::new();
        let mut hidden = std::collections::BTreeSet::new();
        for layer in &self.layers {
            let dir = layer.join(join(&parts));
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                if !parts.is_empty() && self.blocked_below(layer, &parts) {
                    break;
                }
                continue;
            };
            if !meta.is_dir() {
                break;
            }
            for ent in fs::read_dir(&dir)? {
                let ent = ent?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if name == ".wh..wh..opq" {
                    continue;
                }
                if let Some(h) = name.strip_prefix(".wh.") {
                    hidden.insert(h.to_owned());
                    continue;
                }
                let m = ent.metadata()?;
                if is_whiteout(&m) {
                    hidden.insert(name);
                    continue;
                }
                if !hidden.contains(&name) {
                    seen.insert(name);
                }
            }
            if is_opaque(&dir) || (!parts.is_empty() && self.blocked_below(layer, &parts)) {
                break;
            }
        }
        Ok(seen.into_iter().collect())
    }
}

/// Opens an entry's content for reading.
pub(crate) fn open(entry: &Entry) -> io::Result<File> {
    File::open(&entry.host_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_clamps_parent_dirs_at_root() {
        assert_eq!(join(&clean("../x")), "x");
        assert_eq!(join(&clean("/a/./b/../c/")), "a/c");
        assert_eq!(join(&clean("../../..")), "");
    }

    #[test]
    fn layered_view_honours_aufs_whiteouts_and_opaque_dirs() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("l");
        let upper = t.path().join("u");
        fs::create_dir_all(lower.join("etc/sub")).unwrap();
        fs::write(lower.join("etc/a"), "a").unwrap();
        fs::write(lower.join("etc/b"), "b").unwrap();
        fs::write(lower.join("etc/sub/x"), "x").unwrap();
        fs::create_dir_all(upper.join("etc/sub")).unwrap();
        fs::write(upper.join("etc/.wh.a"), "").unwrap();
        fs::write(upper.join("etc/sub/.wh..wh..opq"), "").unwrap();
        fs::write(upper.join("etc/sub/y"), "y").unwrap();
        let v = LayeredView::new(vec![upper.clone(), lower.clone()]);
        assert!(v.lookup("etc/a").unwrap().is_none());
        assert!(v.lookup("etc/b").unwrap().is_some());
        assert!(v.lookup("etc/sub/x").unwrap().is_none());
        assert_eq!(v.list("etc").unwrap(), vec!["b", "sub"]);
        assert_eq!(v.list("etc/sub").unwrap(), vec!["y"]);
    }

    #[test]
    fn resolve_keeps_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("real")).unwrap();
        fs::write(r.join("real/f"), "f").unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../real", r.join("up")).unwrap();
        let v = DirView::new(r, None);
        let (p, _) = resolve(&v, "abs/f", true).unwrap().unwrap();
        assert_eq!(p, "real/f");
        let (p, _) = resolve(&v, "up/f", true).unwrap().unwrap();
        assert_eq!(p, "real/f");
        let (p, e) = resolve(&v, "abs", false).unwrap().unwrap();
        assert_eq!((p.as_str(), e.kind()), ("abs", Kind::Symlink));
    }
}
