//! Shared helpers for the end-to-end tests: they run the real `strata` binary in temp
//! directories, against the BuildKit fixtures in `../shared/fixtures/buildkit`.

#![allow(dead_code, unreachable_pub, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The BuildKit fixtures directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit"))
}

/// The busybox base image's `--build-context` value.
pub fn busybox_context() -> String {
    format!(
        "base=oci-layout://{}/_base/busybox-oci@sha256:d470348f8348647975c19ab59157b2a1a2c4dcf4d41f32439c13973f97794273",
        fixtures().display()
    )
}

/// Whether RUN steps can execute here (root and a runc binary); prints why not.
pub fn can_run(test: &str) -> bool {
    // SAFETY-free: reading the effective uid has no preconditions.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let runc = [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/sbin/runc",
        "/usr/local/bin/runc",
        "/usr/local/sbin/runc",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !root || !runc {
        eprintln!(
            "skipped {test}: RUN needs root and runc (root={root}, runc={runc}); run scripts/setup.sh as root"
        );
        return false;
    }
    true
}

/// A `strata` command with its own state directory under `dir`.
pub fn strata(state: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("strata").expect("strata binary");
    c.env("STRATA_ROOT", state).env_remove("SOURCE_DATE_EPOCH").env("NO_COLOR", "1");
    c
}

/// Writes files (`path`, `content`) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
}

/// stdout + stderr as one string, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Copies a directory tree (fixture caches are read-only; copies are made writable).
pub fn copy_tree(src: &Path, dst: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir(src) {
        let rel = e.strip_prefix(src).unwrap();
        let to = dst.join(rel);
        let md = std::fs::symlink_metadata(&e).unwrap();
        if md.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else if md.is_file() {
            std::fs::copy(&e, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_owned()];
    if p.is_dir() {
        let mut entries: Vec<_> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            out.extend(walkdir(&e));
        }
    }
    out
}

/// A listing of a tree: (relative path, kind, mode, content hash) per entry, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for e in walkdir(root) {
        if e == root {
            continue;
        }
        let rel = e.strip_prefix(root).unwrap().display().to_string();
        let md = std::fs::symlink_metadata(&e).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let desc = if md.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(&e).unwrap().display())
        } else if md.is_dir() {
            format!("dir {mode:o}")
        } else {
            let bytes = std::fs::read(&e).unwrap();
            format!("file {mode:o} {}", strata_oci::Digest::of_bytes(&bytes))
        };
        out.push(format!("{rel}: {desc}"));
    }
    out.sort();
    out
}
