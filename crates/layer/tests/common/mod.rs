//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use strata_oci::Digest;

pub const FIXTURES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit");

/// What a tree entry looks like, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, digest: Digest, size: u64 },
    Symlink { target: String },
    Other { mode: u32 },
}

/// Every entry under `root`, plus groups of hardlinked paths.
pub fn snapshot(root: &Path) -> (BTreeMap<String, Node>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let node = if md.is_dir() {
            Node::Dir { mode }
        } else if md.file_type().is_symlink() {
            Node::Symlink {
                target: fs::read_link(e.path()).unwrap().to_string_lossy().into_owned(),
            }
        } else if md.is_file() {
            if md.nlink() > 1 {
                inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
            }
            Node::File {
                mode,
                digest: Digest::of_bytes(&fs::read(e.path()).unwrap()),
                size: md.len(),
            }
        } else {
            Node::Other { mode }
        };
        out.insert(rel, node);
    }
    let links = inodes.into_values().filter(|v| v.len() > 1).collect();
    (out, links)
}

/// Semi-compressible bytes (text-like with some noise), deterministic.
pub fn semi_random(n: usize, seed: u64) -> Vec<u8> {
    let words: [&[u8]; 8] =
        [b"layer ", b"tar ", b"strata ", b"build ", b"cache ", b"\n", b"0x1f8b ", b"zstd "];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        if r.is_multiple_of(5) {
            out.extend_from_slice(&x.to_le_bytes()[..3]);
        } else {
            out.extend_from_slice(words[r % 8]);
        }
    }
    out.truncate(n);
    out
}

/// A tree with every kind of entry the round trip must preserve.
pub fn build_tree(root: &Path) {
    let set_mode =
        |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    fs::create_dir_all(root.join("etc/ssl")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("ro")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/empty"), "").unwrap();
    fs::write(root.join("etc/ssl/cert.pem"), semi_random(10_000, 1)).unwrap();
    // > 4 MiB: several eStargz chunks and several parallel gzip members.
    fs::write(root.join("usr/bin/big"), semi_random(9 << 20, 2)).unwrap();
    set_mode(&root.join("usr/bin/big"), 0o755);
    fs::write(root.join("usr/bin/setuid"), "x").unwrap();
    set_mode(&root.join("usr/bin/setuid"), 0o4755);
    fs::hard_link(root.join("usr/bin/big"), root.join("usr/bin/big-link")).unwrap();
    std::os::unix::fs::symlink("../etc/passwd", root.join("usr/passwd-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", root.join("dangling")).unwrap();
    let long_dir = root.join("x".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    fs::write(long_dir.join("y".repeat(120)), "long name").unwrap();
    fs::write(root.join("ro/file"), "read only dir content").unwrap();
    set_mode(&root.join("ro/file"), 0o444);
    set_mode(&root.join("ro"), 0o555);
    set_mode(&root.join("etc/ssl"), 0o700);
}

/// Restores write permission so tempdirs can be removed.
pub fn make_writable(root: &Path) {
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
        }
    }
}
