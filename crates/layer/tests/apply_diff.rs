//! Hostile tars, whiteout/opaque application, tree diffs and overlay upper diffs.

#![allow(clippy::print_stderr)] // "skipped: needs root" must be visible in test output.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use strata_layer::apply::is_root;
use strata_layer::{
    ApplyError, ApplyOptions, EntryMeta, LayerWriter, Policy, WriteDirOptions, apply_layer,
    diff_overlay_upper, diff_trees,
};

/// Appends a raw USTAR entry, bypassing every path check the tar crate's builder does.
fn raw(out: &mut Vec<u8>, name: &str, ty: u8, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    let u = h.as_ustar_mut().unwrap();
    u.name[..name.len()].copy_from_slice(name.as_bytes());
    u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(if ty == b'5' { 0o755 } else { 0o644 });
    h.set_entry_type(tar::EntryType::new(ty));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// A target dir inside a sandbox dir, so "outside the target" is observable.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let sb = tempfile::tempdir().unwrap();
    let target = sb.path().join("target");
    fs::create_dir(&target).unwrap();
    (sb, target)
}

fn sandbox_entries(sb: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sb)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_entries_are_refused_and_nothing_escapes() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            end({
                let mut t = Vec::new();
                raw(&mut t, "../../etc/x", b'0', "", b"pwned");
                t
            }),
        ),
        (
            "symlink parent",
            end({
                let mut t = Vec::new();
                raw(&mut t, "a", b'2', "/", b"");
                raw(&mut t, "a/etc/x", b'0', "", b"pwned");
                t
            }),
        ),
        (
            "relative symlink parent",
            end({
                let mut t = Vec::new();
                raw(&mut t, "b", b'2', "..", b"");
                raw(&mut t, "b/x", b'0', "", b"pwned");
                t
            }),
        ),
        (
            "hardlink outside",
            end({
                let mut t = Vec::new();
                raw(&mut t, "h", b'1', "../outside", b"");
                t
            }),
        ),
        (
            "hardlink through symlink",
            end({
                let mut t = Vec::new();
                raw(&mut t, "s", b'2', "..", b"");
                raw(&mut t, "h", b'1', "s/secret", b"");
                t
            }),
        ),
    ];
    for (what, tar) in cases {
        let (sb, target) = sandbox();
        fs::write(sb.path().join("secret"), "do not link me").unwrap();
        let err = apply_layer(&tar[..], &target, &ApplyOptions::default()).unwrap_err();
        assert!(matches!(err, ApplyError::Unsafe { .. }), "{what}: {err}");
        assert_eq!(sandbox_entries(sb.path()), ["secret", "target"], "{what}");
        assert!(!Path::new("/etc/x").exists());
        // The error names the entry.
        assert!(err.to_string().contains("refusing layer entry"), "{what}: {err}");

        // With Skip, the rest of the layer still applies and the entry is counted.
        let (sb, target) = sandbox();
        let opts = ApplyOptions { unsafe_paths: Policy::Skip, ..Default::default() };
        let stats = apply_layer(&tar[..], &target, &opts).unwrap();
        assert_eq!(stats.unsafe_skipped, 1, "{what}");
        assert_eq!(sandbox_entries(sb.path()), ["target"], "{what}");
    }
}

#[test]
fn absolute_and_dotted_names_are_kept_inside() {
    let (sb, target) = sandbox();
    let mut t = Vec::new();
    raw(&mut t, "/abs", b'0', "", b"abs");
    raw(&mut t, "./dir/../rel", b'0', "", b"rel");
    raw(&mut t, "l", b'1', "/abs", b"");
    let stats = apply_layer(&end(t)[..], &target, &ApplyOptions::default()).unwrap();
    assert_eq!(fs::read_to_string(target.join("abs")).unwrap(), "abs");
    assert_eq!(fs::read_to_string(target.join("rel")).unwrap(), "rel");
    assert_eq!(fs::read_to_string(target.join("l")).unwrap(), "abs");
    assert_eq!(stats.hardlinks, 1);
    assert_eq!(sandbox_entries(sb.path()), ["target"]);
}

#[test]
fn whiteouts_and_opaque_only_hit_lower_content() {
    let (_sb, target) = sandbox();
    for d in ["a", "d/sub", "wdir/deep"] {
        fs::create_dir_all(target.join(d)).unwrap();
    }
    for f in ["a/1", "a/2", "d/x", "d/sub/y", "wdir/deep/f", "keep"] {
        fs::write(target.join(f), f).unwrap();
    }
    let mut w = LayerWriter::new(Vec::new());
    let dm = EntryMeta::new(0o755);
    let fm = EntryMeta::new(0o644);
    w.add_dir("a", &dm).unwrap();
    w.add_whiteout("a/1").unwrap();
    w.add_whiteout("wdir").unwrap();
    w.add_whiteout("never-existed").unwrap();
    w.add_dir("d", &dm).unwrap();
    // New content written *before* the marker must survive it.
    w.add_file("d/new", &fm, &b"new"[..], 3).unwrap();
    w.add_dir("d/sub", &dm).unwrap();
    w.add_file("d/sub/z", &fm, &b"z"[..], 1).unwrap();
    w.add_opaque("d").unwrap();
    let tar = w.finish().unwrap();
    let stats = apply_layer(&tar[..], &target, &ApplyOptions::default()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaques), (3, 1));
    let (snap, _) = snapshot(&target);
    let names: Vec<&str> = snap.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "a/2", "d", "d/new", "d/sub", "d/sub/z", "keep"]);
}

#[test]
fn replacing_types_and_read_only_dirs() {
    let (_sb, target) = sandbox();
    fs::create_dir_all(target.join("was-dir/child")).unwrap();
    fs::write(target.join("was-file"), "x").unwrap();
    std::os::unix::fs::symlink("/etc", target.join("was-link")).unwrap();
    let mut w = LayerWriter::new(Vec::new());
    let fm = EntryMeta::new(0o644);
    w.add_file("was-dir", &fm, &b"now a file"[..], 10).unwrap();
    w.add_dir("was-file", &EntryMeta::new(0o555)).unwrap();
    w.add_file("was-file/inside", &EntryMeta::new(0o444), &b"i"[..], 1).unwrap();
    // Replacing a symlink must replace the link, not write through it.
    w.add_file("was-link", &fm, &b"plain"[..], 5).unwrap();
    apply_layer(&w.finish().unwrap()[..], &target, &ApplyOptions::default()).unwrap();
    assert_eq!(fs::read_to_string(target.join("was-dir")).unwrap(), "now a file");
    assert_eq!(fs::read_to_string(target.join("was-file/inside")).unwrap(), "i");
    assert_eq!(fs::metadata(target.join("was-file")).unwrap().permissions().mode() & 0o777, 0o555);
    assert_eq!(fs::read_to_string(target.join("was-link")).unwrap(), "plain");
    make_writable(&target);
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn lower_tree(root: &Path) {
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::create_dir_all(root.join("gone-dir/inner")).unwrap();
    for (p, c) in [
        ("a", "a-v1"),
        ("b", "b"),
        ("dir/c", "c"),
        ("dir/d", "d"),
        ("repl", "file"),
        ("same", "same content"),
        ("samesize", "AAAA"),
        ("gone-dir/inner/f", "f"),
    ] {
        fs::write(root.join(p), c).unwrap();
    }
    std::os::unix::fs::symlink("a", root.join("sym")).unwrap();
}

#[test]
fn diff_trees_emits_changes_whiteouts_and_opaque() {
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    lower_tree(lower.path());
    lower_tree(upper.path());
    let u = upper.path();
    fs::write(u.join("a"), "a-v2 longer").unwrap();
    fs::remove_file(u.join("b")).unwrap();
    fs::remove_file(u.join("dir/d")).unwrap();
    fs::remove_dir_all(u.join("gone-dir")).unwrap();
    fs::remove_file(u.join("repl")).unwrap();
    fs::create_dir(u.join("repl")).unwrap();
    fs::write(u.join("repl/inner"), "new").unwrap();
    fs::remove_file(u.join("sym")).unwrap();
    std::os::unix::fs::symlink("b", u.join("sym")).unwrap();
    fs::write(u.join("samesize"), "BBBB").unwrap();
    fs::set_permissions(u.join("dir/c"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(u.join("added"), "added").unwrap();

    let mut w = LayerWriter::new(Vec::new());
    diff_trees(lower.path(), u, &mut w, &WriteDirOptions::default()).unwrap();
    let tar = w.finish().unwrap();
    let names = tar_names(&tar);
    assert_eq!(
        names,
        [
            ".wh.b",
            ".wh.gone-dir",
            "a",
            "added",
            "dir/",
            "dir/.wh.d",
            "dir/c",
            "repl/",
            "repl/.wh..wh..opq",
            "repl/inner",
            "samesize",
            "sym"
        ]
    );
    // Applying the diff on the lower reproduces the upper.
    let applied = tempfile::tempdir().unwrap();
    lower_tree(applied.path());
    apply_layer(&tar[..], applied.path(), &ApplyOptions::default()).unwrap();
    let strip = |(m, _): (std::collections::BTreeMap<String, Node>, _)| m;
    assert_eq!(strip(snapshot(applied.path())), strip(snapshot(u)));
}

#[test]
fn overlay_upper_to_layer() {
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    let (l, u) = (lower.path(), upper.path());
    fs::create_dir_all(l.join("opq")).unwrap();
    fs::write(l.join("opq/old"), "old").unwrap();
    fs::write(l.join("gone"), "gone").unwrap();
    fs::write(l.join("kept"), "kept").unwrap();

    fs::create_dir_all(u.join("opq")).unwrap();
    fs::write(u.join("opq/new"), "new").unwrap();
    fs::create_dir_all(u.join("mnt/proc")).unwrap();
    fs::write(u.join("f"), "f").unwrap();
    let root = is_root();
    let opaque_key = if root { "trusted.overlay.opaque" } else { "user.overlay.opaque" };
    if let Err(e) = xattr::set(u.join("opq"), opaque_key, b"y") {
        eprintln!("skipped: cannot set {opaque_key} here ({e})");
        return;
    }
    if root {
        nix::sys::stat::mknod(
            &u.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o000),
            0,
        )
        .unwrap();
    } else {
        eprintln!("skipped: whiteout char device 0:0 needs root");
    }

    let mut w = LayerWriter::new(Vec::new());
    let skip = |rel: &Path, md: &fs::Metadata| md.is_dir() && rel == Path::new("mnt");
    diff_overlay_upper(u, &[l.to_path_buf()], &mut w, &WriteDirOptions::default(), &skip).unwrap();
    let tar = w.finish().unwrap();
    let names = tar_names(&tar);
    // Walk order: the whiteout sits where `gone` sorts.
    let mut want = vec!["f"];
    if root {
        want.push(".wh.gone");
    }
    want.extend(["opq/", "opq/.wh..wh..opq", "opq/new"]);
    assert_eq!(names, want);
    // The overlay bookkeeping xattr is not copied into the layer.
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(p) = e.pax_extensions().unwrap() {
            for r in p {
                assert!(!r.unwrap().key().unwrap().contains("overlay"));
            }
        }
        let mut sink = Vec::new();
        e.read_to_end(&mut sink).unwrap();
    }
    apply_layer(&tar[..], l, &ApplyOptions::default()).unwrap();
    assert!(!l.join("opq/old").exists());
    assert_eq!(fs::read_to_string(l.join("opq/new")).unwrap(), "new");
    assert_eq!(l.join("gone").exists(), !root);
    assert!(l.join("kept").exists());
}
