//! COPY and ADD with Docker's semantics: wildcards, directory contents copied into the
//! destination, a trailing `/` meaning "into this directory", `--chown`, `--chmod`, and a
//! content checksum of exactly the files read (names, types, modes, link targets,
//! contents; not mtimes, and not ownership for context sources).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use strata_layer::{EntryMeta, LayerWriter};
use strata_oci::Hasher;

use crate::checksum::ChecksumCache;
use crate::error::BuildError;
use crate::fsview::{self, Entry, FsView, Kind};

/// Where the bytes of one planned entry come from.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A directory (no content).
    Dir,
    /// A file in a view.
    File(Entry),
    /// A symlink with this target.
    Symlink(String),
    /// Inline bytes (heredoc).
    Inline(Vec<u8>),
    /// Another planned path in this layer (hardlink).
    Hardlink(String),
}

/// One entry of the layer COPY writes.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// Destination path, relative to `/`, cleaned.
    pub(crate) dest: String,
    pub(crate) content: Content,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: i64,
    /// Content digest for files (filled when checksumming).
    pub(crate) digest: Option<String>,
}

/// What the COPY instruction asks for, after expansion.
#[derive(Debug, Clone)]
pub(crate) struct CopyRequest {
    pub(crate) sources: Vec<String>,
    pub(crate) inline: Vec<(String, Vec<u8>)>,
    pub(crate) dest: String,
    pub(crate) workdir: String,
    /// `--chown` resolved to ids.
    pub(crate) chown: Option<(u64, u64)>,
    /// `--chmod` as octal bits.
    pub(crate) chmod: Option<u32>,
    /// Ownership of source files is kept (stage sources) or reset to 0:0 (context).
    pub(crate) keep_owner: bool,
    /// `--exclude` patterns.
    pub(crate) exclude: Vec<String>,
    /// mtime for directories the copy creates.
    pub(crate) created_mtime: i64,
    /// Clamp every mtime to this (SOURCE_DATE_EPOCH).
    pub(crate) clamp_mtime: Option<i64>,
}

/// Matches one path component against a Go `filepath.Match` pattern.
pub(crate) fn match_component(pattern: &str, name: &str) -> bool {
    fn inner(p: &[char], n: &[char]) -> bool {
        let (mut pi, mut ni) = (0, 0);
        let (mut star_p, mut star_n) = (None, 0);
        while ni < n.len() {
            if pi < p.len() {
                match p[pi] {
                    '*' => {
                        star_p = Some(pi);
                        star_n = ni;
                        pi += 1;
                        continue;
                    }
                    '?' => {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                    '[' => {
                        if let Some((matched, next)) = class(p, pi, n[ni])
                            && matched
                        {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    }
                    '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                    '\\' if pi + 1 < p.len() => {}
                    c if c == n[ni] => {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star_p {
                Some(sp) => {
                    pi = sp + 1;
                    star_n += 1;
                    ni = star_n;
                }
                None => return false,
            }
        }
        while pi < p.len() && p[pi] == '*' {
            pi += 1;
        }
        pi == p.len()
    }
    fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
        let mut i = start + 1;
        let negate = i < p.len() && p[i] == '^';
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() && (p[i] != ']' || first) {
            first = false;
            let mut lo = p[i];
            if lo == '\\' && i + 1 < p.len() {
                i += 1;
                lo = p[i];
            }
            let mut hi = lo;
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                hi = p[i + 2];
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        if i >= p.len() {
            return None;
        }
        Some((matched != negate, i + 1))
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    inner(&p, &n)
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands one source pattern inside `view`. Returns cleaned relative paths, sorted.
fn expand_source(view: &dyn FsView, pattern: &str) -> io::Result<Vec<String>> {
    let parts = fsview::clean(pattern);
    if !parts.iter().any(|p| has_wildcard(p)) {
        let rel = fsview::join(&parts);
        return Ok(match fsview::resolve(view, &rel, true)? {
            Some(_) => vec![rel],
            None => vec![],
        });
    }
    let mut candidates = vec![String::new()];
    for part in &parts {
        let mut next = Vec::new();
        for c in &candidates {
            if has_wildcard(part) {
                let Some((resolved, e)) = fsview::resolve(view, c, true)? else { continue };
                if e.kind() != Kind::Dir {
                    continue;
                }
                for name in view.list(&resolved)? {
                    if match_component(part, &name) {
                        let p = if c.is_empty() { name } else { format!("{c}/{name}") };
                        if view.lookup(&p)?.is_some() || fsview::resolve(view, &p, false)?.is_some()
                        {
                            next.push(p);
                        }
                    }
                }
            } else {
                let p = if c.is_empty() { part.clone() } else { format!("{c}/{part}") };
                if fsview::resolve(view, &p, false)?.is_some() {
                    next.push(p);
                }
            }
        }
        candidates = next;
    }
    candidates.sort();
    Ok(candidates)
}

fn excluded_by(patterns: &[String], rel: &str) -> bool {
    patterns.iter().any(|p| {
        let pp = fsview::clean(p);
        let rp: Vec<&str> = rel.split('/').collect();
        // A pattern matches the path or one of its ancestors (so excluding a
        // directory excludes its contents), component by component.
        pp.len() <= rp.len() && pp.iter().zip(&rp).all(|(a, b)| match_component(a, b))
    })
}

fn join_dest(base: &str, rel: &str) -> String {
    let mut parts = fsview::clean(base);
    parts.extend(fsview::clean(rel));
    fsview::join(&parts)
}

/// Plans the entries a COPY writes. `dest_is_dir(rel)` says whether the destination
/// already exists as a directory in the target filesystem.
pub(crate) fn plan(
    view: &dyn FsView,
    req: &CopyRequest,
    dest_is_dir: &mut dyn FnMut(&str) -> bool,
    what: &str,
) -> Result<Vec<Planned>, BuildError> {
    let err = |message: String| BuildError::Source { instruction: what.to_owned(), message };
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.clone()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let dest_rel = fsview::join(&fsview::clean(&dest_abs));
    let dest_slash = req.dest.ends_with('/') || req.dest == "." || req.dest.ends_with("/.");
    let n_sources = req.sources.len() + req.inline.len();
    if n_sources > 1 && !dest_slash {
        return Err(err(
            "When using COPY with more than one source file, the destination must be a directory and end with a /"
                .into(),
        ));
    }
    let mut out: Vec<Planned> = Vec::new();
    let dirs_made: std::cell::RefCell<BTreeMap<String, ()>> = Default::default();
    let owner = |e: &Entry| -> (u64, u64) {
        match req.chown {
            Some(ids) => ids,
            None if req.keep_owner => (u64::from(e.meta.uid()), u64::from(e.meta.gid())),
            None => (0, 0),
        }
    };
    let clamp = |t: i64| match req.clamp_mtime {
        Some(c) if t > c => c,
        _ => t,
    };
    // Parent directories of a destination that the copy creates.
    let ensure_parents =
        |rel: &str, out: &mut Vec<Planned>, dest_is_dir: &mut dyn FnMut(&str) -> bool| {
            let parts = fsview::clean(rel);
            for i in 1..parts.len() {
                let p = fsview::join(&parts[..i]);
                if dirs_made.borrow().contains_key(&p) {
                    continue;
                }
                dirs_made.borrow_mut().insert(p.clone(), ());
                if dest_is_dir(&p) {
                    continue;
                }
                let (uid, gid) = req.chown.unwrap_or((0, 0));
                out.push(Planned {
                    dest: p,
                    content: Content::Dir,
                    mode: 0o755,
                    uid,
                    gid,
                    mtime: clamp(req.created_mtime),
                    digest: None,
                });
            }
        };

    for (name, body) in &req.inline {
        let target = if dest_slash || dest_is_dir(&dest_rel) {
            join_dest(&dest_rel, name)
        } else {
            dest_rel.clone()
        };
        ensure_parents(&target, &mut out, dest_is_dir);
        let (uid, gid) = req.chown.unwrap_or((0, 0));
        out.push(Planned {
            dest: target,
            content: Content::Inline(body.clone()),
            mode: req.chmod.unwrap_or(0o644),
            uid,
            gid,
            mtime: clamp(req.created_mtime),
            digest: Some(strata_oci::Digest::of_bytes(body).to_string()),
        });
    }

    for src in &req.sources {
        let matches = expand_source(view, src).map_err(|e| err(format!("{src}: {e}")))?;
        if matches.is_empty() {
            return Err(err(format!("\"/{}\": not found", fsview::join(&fsview::clean(src)))));
        }
        let into_dir = dest_slash || matches.len() > 1 || has_wildcard(src);
        for m in matches {
            let Some((resolved, entry)) =
                fsview::resolve(view, &m, true).map_err(|e| err(format!("{m}: {e}")))?
            else {
                return Err(err(format!("\"/{m}\": not found")));
            };
            if entry.kind() == Kind::Dir {
                // The directory's *contents* go into dest; dest takes the dir's metadata.
                ensure_parents(&dest_rel, &mut out, dest_is_dir);
                if !dest_rel.is_empty() {
                    let (uid, gid) = owner(&entry);
                    out.push(Planned {
                        dest: dest_rel.clone(),
                        content: Content::Dir,
                        mode: req.chmod.unwrap_or(entry.meta.permissions().mode() & 0o7777),
                        uid,
                        gid,
                        mtime: clamp(entry.meta.mtime()),
                        digest: None,
                    });
                    dirs_made.borrow_mut().insert(dest_rel.clone(), ());
                }
                walk_into(view, &resolved, &dest_rel, req, &owner, &clamp, &mut out)
                    .map_err(|e| err(format!("{resolved}: {e}")))?;
            } else {
                let base = m.rsplit('/').next().unwrap_or(&m).to_owned();
                let target = if into_dir || dest_is_dir(&dest_rel) {
                    join_dest(&dest_rel, &base)
                } else {
                    dest_rel.clone()
                };
                if target.is_empty() {
                    return Err(err("cannot copy a file onto /".into()));
                }
                ensure_parents(&target, &mut out, dest_is_dir);
                out.push(entry_to_planned(&entry, target, req, &owner, &clamp)?);
            }
        }
    }
    // Later sources win over earlier ones for the same destination; order by path so the
    // tar is deterministic and parents come before children.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, p) in out.iter().enumerate() {
        seen.insert(p.dest.clone(), i);
    }
    let mut keep: Vec<Planned> = out
        .into_iter()
        .enumerate()
        .filter(|(i, p)| seen.get(&p.dest) == Some(i))
        .map(|(_, p)| p)
        .collect();
    keep.sort_by(|a, b| path_order(&a.dest, &b.dest));
    link_hardlinks(&mut keep);
    Ok(keep)
}

/// Orders paths component-wise, so `a/b` sorts before `a.b` (a directory's contents
/// directly follow it).
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

fn entry_to_planned(
    entry: &Entry,
    dest: String,
    req: &CopyRequest,
    owner: &dyn Fn(&Entry) -> (u64, u64),
    clamp: &dyn Fn(i64) -> i64,
) -> Result<Planned, BuildError> {
    let (uid, gid) = owner(entry);
    let perm = entry.meta.permissions().mode() & 0o7777;
    let content = match entry.kind() {
        Kind::File => Content::File(entry.clone()),
        Kind::Dir => Content::Dir,
        Kind::Symlink => {
            let t = std::fs::read_link(&entry.host_path).map_err(|source| BuildError::Io {
                op: "read symlink",
                path: entry.host_path.clone(),
                source,
            })?;
            Content::Symlink(t.to_string_lossy().into_owned())
        }
        Kind::Other => {
            return Err(BuildError::Source {
                instruction: dest,
                message: "device files, fifos and sockets cannot be copied".into(),
            });
        }
    };
    let mode = match (&content, req.chmod) {
        (Content::Symlink(_), _) => 0o777,
        (_, Some(m)) => m,
        _ => perm,
    };
    Ok(Planned { dest, content, mode, uid, gid, mtime: clamp(entry.meta.mtime()), digest: None })
}

fn walk_into(
    view: &dyn FsView,
    src: &str,
    dest: &str,
    req: &CopyRequest,
    owner: &dyn Fn(&Entry) -> (u64, u64),
    clamp: &dyn Fn(i64) -> i64,
    out: &mut Vec<Planned>,
) -> io::Result<()> {
    for name in view.list(src)? {
        let child = if src.is_empty() { name.clone() } else { format!("{src}/{name}") };
        let Some(entry) = view.lookup(&child)? else { continue };
        let rel_in_src = child.strip_prefix(src).unwrap_or(&child).trim_start_matches('/');
        if excluded_by(&req.exclude, rel_in_src) {
            continue;
        }
        let target = join_dest(dest, &name);
        let p = entry_to_planned(&entry, target.clone(), req, owner, clamp)
            .map_err(io::Error::other)?;
        out.push(p);
        if entry.kind() == Kind::Dir {
            let before = out.len();
            walk_into(view, &child, &target, req, owner, clamp, out)?;
            // An excluded directory visible only for `!` exceptions is copied only when
            // an exception re-included something in it, as Docker does.
            if out.len() == before && view.only_for_exceptions(&child) {
                out.pop();
            }
        }
    }
    Ok(())
}

/// Files with the same (dev, inode) become hardlinks to the first occurrence, as
/// Docker's copy preserves them.
fn link_hardlinks(entries: &mut [Planned]) {
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for p in entries.iter_mut() {
        if let Content::File(e) = &p.content
            && e.meta.nlink() > 1
        {
            let key = (e.meta.dev(), e.meta.ino());
            match first.get(&key) {
                Some(t) => p.content = Content::Hardlink(t.clone()),
                None => {
                    first.insert(key, p.dest.clone());
                }
            }
        }
    }
}

/// The checksum of a plan: everything that determines the layer except mtimes (and
/// ownership of context files, which is reset anyway).
pub(crate) fn checksum(
    entries: &mut [Planned],
    cache: &mut ChecksumCache,
    include_owner: bool,
) -> io::Result<String> {
    let mut h = Hasher::new();
    for p in entries.iter_mut() {
        if let Content::File(e) = &p.content
            && p.digest.is_none()
        {
            p.digest = Some(cache.file_digest(&e.host_path, &e.meta)?.to_string());
        }
        let (kind, extra) = match &p.content {
            Content::Dir => ("dir", String::new()),
            Content::File(_) | Content::Inline(_) => ("file", p.digest.clone().unwrap_or_default()),
            Content::Symlink(t) => ("symlink", t.clone()),
            Content::Hardlink(t) => ("hardlink", t.clone()),
        };
        let owner = if include_owner { format!("{}:{}", p.uid, p.gid) } else { String::new() };
        let line = format!("{}\0{kind}\0{:o}\0{owner}\0{extra}\n", p.dest, p.mode);
        h.update(line.as_bytes());
    }
    Ok(h.finish().to_string())
}

/// Writes a plan into a layer.
pub(crate) fn write<W: io::Write>(
    entries: &[Planned],
    w: &mut LayerWriter<W>,
) -> Result<(), BuildError> {
    for p in entries {
        let meta = EntryMeta {
            mode: p.mode,
            uid: p.uid,
            gid: p.gid,
            mtime: p.mtime,
            mtime_nanos: None,
            xattrs: BTreeMap::new(),
        };
        match &p.content {
            Content::Dir => w.add_dir(&p.dest, &meta)?,
            Content::Symlink(t) => w.add_symlink(&p.dest, t, &meta)?,
            Content::Hardlink(t) => w.add_hardlink(&p.dest, t, &meta)?,
            Content::Inline(b) => w.add_file(&p.dest, &meta, &b[..], b.len() as u64)?,
            Content::File(e) => {
                let f = fsview::open(e).map_err(|source| BuildError::Io {
                    op: "open",
                    path: e.host_path.clone(),
                    source,
                })?;
                // The size is taken from the open file: a file that changed since it was
                // checksummed fails loudly instead of producing a torn layer.
                let len = f.metadata().map(|m| m.len()).unwrap_or(e.meta.len());
                w.add_file(
                    &p.dest,
                    &meta,
                    io::BufReader::with_capacity(1 << 20, f).take(len),
                    len,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsview::DirView;

    #[test]
    fn go_match_semantics() {
        assert!(match_component("*.txt", "a.txt"));
        assert!(!match_component("*.txt", "a.txt.bak"));
        assert!(match_component("a?c", "abc"));
        assert!(match_component("[a-c]x", "bx"));
        assert!(!match_component("[^a-c]x", "bx"));
        assert!(match_component("\\*", "*"));
        assert!(match_component("*", ""));
    }

    fn req(sources: &[&str], dest: &str) -> CopyRequest {
        CopyRequest {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            inline: vec![],
            dest: dest.into(),
            workdir: "/".into(),
            chown: None,
            chmod: None,
            keep_owner: false,
            exclude: vec![],
            created_mtime: 0,
            clamp_mtime: None,
        }
    }

    #[test]
    fn directory_contents_and_file_destinations() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sub/deep")).unwrap();
        std::fs::write(t.path().join("sub/a"), "a").unwrap();
        std::fs::write(t.path().join("sub/deep/b"), "b").unwrap();
        std::fs::write(t.path().join("x.txt"), "x").unwrap();
        std::fs::write(t.path().join("y.txt"), "y").unwrap();
        let v = DirView::new(t.path(), None);
        let mut no = |_: &str| false;
        let p = plan(&v, &req(&["sub/"], "/etc/app/"), &mut no, "COPY").unwrap();
        let dests: Vec<_> = p.iter().map(|p| p.dest.as_str()).collect();
        assert_eq!(dests, ["etc", "etc/app", "etc/app/a", "etc/app/deep", "etc/app/deep/b"]);
        let p = plan(&v, &req(&["x.txt"], "/renamed"), &mut no, "COPY").unwrap();
        assert_eq!(p.last().unwrap().dest, "renamed");
        let p = plan(&v, &req(&["*.txt"], "/d/"), &mut no, "COPY").unwrap();
        let dests: Vec<_> = p.iter().map(|p| p.dest.as_str()).collect();
        assert_eq!(dests, ["d", "d/x.txt", "d/y.txt"]);
        // A `..` is clamped to the context root.
        let p = plan(&v, &req(&["../x.txt"], "/x"), &mut no, "COPY").unwrap();
        assert_eq!(p[0].dest, "x");
        assert!(plan(&v, &req(&["x.txt", "y.txt"], "/nodir"), &mut no, "COPY").is_err());
        let e = plan(&v, &req(&["missing"], "/m"), &mut no, "COPY").unwrap_err().to_string();
        assert!(e.contains("\"/missing\": not found"), "{e}");
        // An existing directory destination without a slash receives the file.
        let mut yes = |p: &str| p == "opt";
        let p = plan(&v, &req(&["x.txt"], "/opt"), &mut yes, "COPY").unwrap();
        assert_eq!(p.last().unwrap().dest, "opt/x.txt");
    }

    #[test]
    fn checksum_ignores_mtime_but_not_content_or_mode() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), "1").unwrap();
        let v = DirView::new(t.path(), None);
        let mut no = |_: &str| false;
        let mut c = ChecksumCache::in_memory();
        let mut p1 = plan(&v, &req(&["f"], "/f"), &mut no, "COPY").unwrap();
        let s1 = checksum(&mut p1, &mut c, false).unwrap();
        let f = std::fs::File::options().write(true).open(t.path().join("f")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        let mut p2 = plan(&v, &req(&["f"], "/f"), &mut no, "COPY").unwrap();
        assert_eq!(checksum(&mut p2, &mut c, false).unwrap(), s1);
        std::fs::set_permissions(t.path().join("f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let mut p3 = plan(&v, &req(&["f"], "/f"), &mut no, "COPY").unwrap();
        assert_ne!(checksum(&mut p3, &mut c, false).unwrap(), s1);
    }
}
