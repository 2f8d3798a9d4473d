//! `strata cache verify --repair` end to end: a corrupt layer, a dead writer's ingest
//! entry and the tag that needed the layer are removed, the old index.json is kept, and
//! the cache verifies afterwards.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_oci::{Digest, Layout};

fn build(state: &Path, ctx: &Path, dest: &Path, tag: &str, content: &str) {
    common::write_files(
        ctx,
        &[("Dockerfile", "FROM scratch\nCOPY f.txt /f.txt\n"), ("f.txt", content)],
    );
    let out = common::strata(state)
        .args(["build", "--progress", "plain", "--cache-to"])
        .arg(format!("type=local,dest={},mode=max,tag={tag}", dest.display()))
        .arg(ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
}

fn layers_of(layout: &Layout, tag: &str) -> Vec<Digest> {
    let desc = layout.resolve(tag).unwrap().unwrap();
    let bytes = layout.read_blob_limited(&desc.digest, 1 << 20).unwrap();
    let m = strata_cache::CacheManifest::parse(&bytes).unwrap();
    m.layers.into_iter().map(|l| l.digest).collect()
}

fn verify(state: &Path, dest: &Path, extra: &[&str]) -> (bool, String) {
    let out =
        common::strata(state).args(["cache", "verify"]).args(extra).arg(dest).output().unwrap();
    (out.status.success(), common::text(&out))
}

#[test]
fn repair_removes_corruption_and_the_tags_that_needed_it() {
    let t = tempfile::tempdir().unwrap();
    let (state, ctx, dest) = (t.path().join("state"), t.path().join("ctx"), t.path().join("c"));
    build(&state, &ctx, &dest, "a", "version a\n");
    build(&state, &ctx, &dest, "b", "version b\n");
    let layout = Layout::open(&dest).unwrap();
    let (la, lb) = (layers_of(&layout, "a"), layers_of(&layout, "b"));
    let victim = la.iter().find(|d| !lb.contains(d)).expect("a layer only tag a uses").clone();

    // Same size, different bytes: damage that only hashing finds, as a cache restored
    // from CI storage might have. Replaced, not written in place: the export hard-linked
    // the blob from the state directory's store, which must stay intact.
    let path = layout.blob_path(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let tmp = dest.join("tmp-corrupt");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // A dead writer's ingest entry (pid 2^22-1 is above any pid this test can see).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let dead = dest.join("ingest/strata-4194303-0-0");
    common::write_files(
        &dead,
        &[("owner", &format!("host={}\npid=4194303\nstarted=1\n", host.trim())), ("data", "xx")],
    );
    let old_index = std::fs::read(layout.index_path()).unwrap();

    let (ok, text) = verify(&state, &dest, &[]);
    assert!(!ok, "verify must fail on the corrupt layer:\n{text}");
    assert!(text.contains(victim.as_str()), "{text}");

    let (ok, text) = verify(&state, &dest, &["--repair"]);
    assert!(ok, "repair failed:\n{text}");
    assert!(text.contains(&format!("removed corrupt blob {victim}")), "{text}");
    assert!(text.contains("dropped index.json entry tag a"), "{text}");
    assert!(text.contains("strata-4194303-0-0"), "{text}");
    assert!(!path.exists() && !dead.exists());
    assert_eq!(layout.read_index().unwrap().unwrap().tags(), ["b"]);
    let backups: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index.json.bak-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(std::fs::read(backups[0].path()).unwrap(), old_index);

    // Consistent now, untagged leftovers included; a second repair has nothing to do.
    let (ok, text) = verify(&state, &dest, &["--all"]);
    assert!(ok, "{text}");
    let (ok, text) = verify(&state, &dest, &["--repair"]);
    assert!(ok && text.contains("nothing to repair"), "{text}");
    // And tag a can simply be exported again.
    build(&state, &ctx, &dest, "a", "version a\n");
    let (ok, text) = verify(&state, &dest, &["--all"]);
    assert!(ok, "{text}");
}

#[test]
fn repair_json_on_a_healthy_cache_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (state, ctx, dest) = (t.path().join("state"), t.path().join("ctx"), t.path().join("c"));
    build(&state, &ctx, &dest, "latest", "x\n");
    let before = common::tree(&dest);
    let out = common::strata(&state)
        .args(["cache", "verify", "--repair", "--json"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["droppedEntries"], serde_json::json!([]));
    assert_eq!(v["removedBlobs"], serde_json::json!([]));
    assert_eq!(v["indexBackup"], serde_json::Value::Null);
    // Only the GC lock file may be new.
    let after: Vec<_> =
        common::tree(&dest).into_iter().filter(|l| !l.starts_with(".strata-gc.lock")).collect();
    let before: Vec<_> = before.into_iter().filter(|l| !l.starts_with(".strata-gc.lock")).collect();
    assert_eq!(before, after);
}
