//! Resolving container paths inside a root directory without escaping it.
//!
//! The image controls its own symlinks: `/etc/passwd -> /../../host/etc/passwd`
//! must read the image's file, not the host's. This is the same scoping as
//! `filepath-securejoin` (used by runc and BuildKit): `..` stops at the root
//! and absolute symlink targets restart at the root.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;

/// Resolves the container path `path` inside `root`, following symlinks as the
/// container would see them. Components that do not exist are appended
/// lexically, so the result may name a file that does not exist yet.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    // Components still to walk, stored reversed so we can push symlink
    // targets onto the front cheaply.
    let mut todo: Vec<OsString> = split(Path::new(path));
    todo.reverse();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    let mut exists = true;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        if !exists {
            continue;
        }
        let current = join(root, &done);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&current)?;
                done.pop();
                if target.is_absolute() {
                    done.clear();
                }
                let mut parts = split(&target);
                parts.reverse();
                todo.extend(parts);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => exists = false,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => exists = false,
            Err(e) => return Err(e),
        }
    }
    Ok(join(root, &done))
}

/// The path of `path` relative to the container root, normalised and without
/// following symlinks: "/a/./b/../c" becomes "a/c".
pub(crate) fn lexical_rel(path: &str) -> PathBuf {
    let mut out: Vec<OsString> = Vec::new();
    for part in split(Path::new(path)) {
        if part == ".." {
            out.pop();
        } else {
            out.push(part);
        }
    }
    out.iter().collect()
}

fn split(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .filter(|s| !s.as_bytes().is_empty())
        .collect()
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/../../../etc/real", root.join("etc/passwd")).unwrap();
        symlink("../../..", root.join("etc/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in_root(root, "/etc/passwd").unwrap(), root.join("etc/real"));
        assert_eq!(resolve_in_root(root, "/etc/up/x").unwrap(), root.join("x"));
        assert_eq!(resolve_in_root(root, "../../a/./b/../c").unwrap(), root.join("a/c"));
        assert_eq!(resolve_in_root(root, "/").unwrap(), root.to_path_buf());
        assert!(resolve_in_root(root, "/loop").is_err());
    }

    #[test]
    fn lexical() {
        assert_eq!(lexical_rel("/a/./b/../c/"), PathBuf::from("a/c"));
        assert_eq!(lexical_rel("/../x"), PathBuf::from("x"));
        assert_eq!(lexical_rel("/"), PathBuf::new());
    }
}
