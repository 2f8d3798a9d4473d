//! `prune`, `reset` and `record_use` on writable copies of the BuildKit fixtures.
//!
//! two-versions holds 12 blobs: v2 (tagged `latest`, 7 blobs) and v1 (untagged, 5 blobs
//! of its own: manifest, config, 3 layers; the busybox layer and one more are shared).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use strata_cache::gc::{
    DropReason, LAST_USE_FILE, PrunePolicy, last_uses, prune, record_use, record_use_at, reset,
};
use strata_cache::{CacheManifest, ManifestForm};
use strata_oci::{Descriptor, Digest, Layout, media};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit");
const TWO_V1: &str = "sha256:e7bdda28cefe9360622aa5e6311a1d803c3b04e4f5bb9b218474a0db17a650d1";
const TWO_V2: &str = "sha256:0186961523be64c04213989470e06efd55ec20ef631b013fdada899bc9b4b3c7";
const TIMEOUT: Duration = Duration::from_secs(20);
const DAY: Duration = Duration::from_secs(86400);

fn d(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

/// Copies a fixture cache into a tempdir, writable (fixtures are 0444/0555); mtimes are
/// those of the copy (now), as after a fresh export.
fn copy_case(case: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("cache");
    copy_tree(&Path::new(FIXTURES).join(case).join("cache"), &dst);
    (tmp, dst)
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).unwrap();
    for ent in fs::read_dir(src).unwrap() {
        let ent = ent.unwrap();
        let to = dst.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_tree(&ent.path(), &to);
        } else {
            fs::write(&to, fs::read(ent.path()).unwrap()).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
}

/// Relative path → content digest of every file (directories as `None`).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Digest>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for ent in fs::read_dir(&dir).unwrap() {
            let p = ent.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, Some(Digest::of_bytes(&fs::read(&p).unwrap())));
            }
        }
    }
    out
}

fn blob_count(root: &Path) -> usize {
    fs::read_dir(root.join("blobs/sha256")).unwrap().count()
}

fn set_mtime(path: &Path, ago: Duration) {
    File::open(path).unwrap().set_modified(SystemTime::now() - ago).unwrap();
}

fn blobs_of(layout: &Layout, manifest: &Digest) -> Vec<Digest> {
    let m = CacheManifest::parse(&layout.read_blob_limited(manifest, 1 << 24).unwrap()).unwrap();
    let mut out: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
    out.push(m.config.digest);
    out.push(manifest.clone());
    out
}

/// Every index.json entry's manifest, config and layers are present.
fn assert_index_complete(layout: &Layout) {
    for e in layout.read_index().unwrap().unwrap().manifests {
        for b in blobs_of(layout, &e.digest) {
            assert!(layout.stat_blob(&b).unwrap().is_some(), "{b} of {} is gone", e.digest);
        }
    }
}

#[test]
fn reset_removes_exactly_the_untagged_version() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    assert_eq!(blob_count(&root), 12);
    let v1_only: Vec<Digest> = blobs_of(&layout, &d(TWO_V1))
        .into_iter()
        .filter(|b| !blobs_of(&layout, &d(TWO_V2)).contains(b))
        .collect();
    assert_eq!(v1_only.len(), 5);
    let v1_bytes: u64 = v1_only.iter().map(|b| layout.stat_blob(b).unwrap().unwrap()).sum();

    let r = reset(&layout, vec![], TIMEOUT).unwrap();
    assert_eq!(blob_count(&root), 7);
    for b in &v1_only {
        assert!(layout.stat_blob(b).unwrap().is_none(), "{b} survived");
    }
    assert_index_complete(&layout);
    assert_eq!(r.removed_blobs, 5);
    assert_eq!(r.removed_bytes, v1_bytes);
    assert_eq!(r.removed_versions.len(), 1);
    let v = &r.removed_versions[0];
    assert_eq!((v.digest.as_str(), v.tag.as_deref()), (TWO_V1, None));
    assert_eq!((v.reason, v.bytes), (DropReason::UntaggedUnreachable, v1_bytes));
    assert_eq!(r.kept_versions, 1);
    assert!(r.dropped_tags.is_empty() && !r.dry_run && !r.max_size_unmet);
    // index.json still names latest; a second reset finds nothing.
    assert_eq!(layout.resolve("latest").unwrap().unwrap().digest, d(TWO_V2));
    let again = reset(&layout, vec![], TIMEOUT).unwrap();
    assert_eq!((again.removed_blobs, again.removed_versions.len()), (0, 0));
    assert_eq!(again.kept_bytes, r.kept_bytes);

    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["removedVersions"][0]["reason"], "untagged-unreachable");
    assert_eq!(json["removedVersions"][0]["tag"], serde_json::Value::Null);
}

#[test]
fn keep_last_one_keeps_the_untagged_version() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let policy = PrunePolicy { keep_last: Some(1), ..PrunePolicy::default() };
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    assert_eq!(blob_count(&root), 12);
    assert_eq!((r.removed_blobs, r.kept_versions), (0, 2));
    assert!(r.removed_versions.is_empty());
}

#[test]
fn dry_run_deletes_nothing_and_reports_the_same() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let before = snapshot(&root);
    let dry = prune(&layout, &PrunePolicy::reset(vec![]), true, TIMEOUT).unwrap();
    assert_eq!(snapshot(&root), before, "a dry run must not write, not even a lock file");
    assert!(dry.dry_run);
    assert_eq!(dry.removed_blobs, 5);
    // With the lock file present (a strata export ran) the dry run locks, still writes
    // nothing else.
    drop(layout.export_lease(TIMEOUT).unwrap());
    let before = snapshot(&root);
    let dry2 = prune(&layout, &PrunePolicy::reset(vec![]), true, TIMEOUT).unwrap();
    assert_eq!(snapshot(&root), before);
    let real = reset(&layout, vec![], TIMEOUT).unwrap();
    assert_eq!(
        (dry2.removed_blobs, dry2.removed_bytes, &dry2.removed_versions[0].digest),
        (real.removed_blobs, real.removed_bytes, &real.removed_versions[0].digest)
    );
}

#[test]
fn max_size_drops_the_tag_unless_protected() {
    // Protected: v1 goes (max-size), latest stays although the bound is not met.
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let policy =
        PrunePolicy { max_size: Some(1000), protect: vec![d(TWO_V2)], ..PrunePolicy::default() };
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    assert!(r.max_size_unmet);
    assert!(r.dropped_tags.is_empty());
    assert_eq!(r.removed_versions.len(), 1);
    assert_eq!(r.removed_versions[0].reason, DropReason::MaxSize);
    assert_eq!(blob_count(&root), 7);
    assert_index_complete(&layout);

    // Unprotected: untagged first, then the tag; everything goes.
    let (_t2, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let policy = PrunePolicy { max_size: Some(1000), ..PrunePolicy::default() };
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    let order: Vec<(&str, Option<&str>)> =
        r.removed_versions.iter().map(|v| (v.digest.as_str(), v.tag.as_deref())).collect();
    assert_eq!(order, vec![(TWO_V1, None), (TWO_V2, Some("latest"))]);
    assert_eq!(r.dropped_tags.len(), 1);
    assert_eq!(r.dropped_tags[0].tag, "latest");
    assert_eq!(r.dropped_tags[0].reason, DropReason::MaxSize);
    assert!(!r.max_size_unmet);
    assert_eq!((blob_count(&root), r.removed_blobs, r.kept_bytes), (0, 12, 0));
    assert!(layout.read_index().unwrap().unwrap().manifests.is_empty());

    // A bound the tagged version fits under keeps it.
    let (_t3, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let v2: u64 =
        blobs_of(&layout, &d(TWO_V2)).iter().map(|b| layout.stat_blob(b).unwrap().unwrap()).sum();
    let policy = PrunePolicy { max_size: Some(v2), ..PrunePolicy::default() };
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    assert_eq!((r.kept_bytes, r.removed_versions.len(), blob_count(&root)), (v2, 1, 7));
}

#[test]
fn max_age_drops_old_untagged_but_keeps_tags_and_recent_imports() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    set_mtime(&layout.blob_path(&d(TWO_V1)), 30 * DAY);
    set_mtime(&layout.blob_path(&d(TWO_V2)), 30 * DAY);
    let policy = PrunePolicy { max_age: Some(7 * DAY), ..PrunePolicy::default() };

    // An import recorded yesterday makes v1 recent again.
    record_use_at(&root, &d(TWO_V1), SystemTime::now() - DAY);
    let r = prune(&layout, &policy, true, TIMEOUT).unwrap();
    assert!(r.removed_versions.is_empty(), "{r:?}");

    fs::remove_file(root.join(LAST_USE_FILE)).unwrap();
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    assert_eq!(r.removed_versions.len(), 1);
    assert_eq!(r.removed_versions[0].digest, d(TWO_V1));
    assert_eq!(r.removed_versions[0].reason, DropReason::MaxAge);
    // latest is just as old, but tags are kept regardless of age by default.
    assert_eq!(layout.resolve("latest").unwrap().unwrap().digest, d(TWO_V2));
    assert_eq!(blob_count(&root), 7);

    // A tag not in keep_tags is subject to max-age.
    let policy = PrunePolicy { keep_tags: Some(vec!["main".into()]), ..policy };
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    assert_eq!(r.dropped_tags.len(), 1);
    assert_eq!(
        (r.dropped_tags[0].tag.as_str(), r.dropped_tags[0].reason),
        ("latest", DropReason::MaxAge)
    );
    assert_eq!(blob_count(&root), 0);
}

#[test]
fn stale_ingests_go_fresh_ones_stay() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let ingest = root.join("ingest");
    let mk = |name: &str, ago: Duration| {
        let dir = ingest.join(name);
        fs::create_dir_all(&dir).unwrap();
        for (f, body) in [("ref", "layer-sha256:x"), ("data", "partial"), ("startedat", "t")] {
            fs::write(dir.join(f), body).unwrap();
            set_mtime(&dir.join(f), ago);
        }
        set_mtime(&dir, ago);
        dir
    };
    let old = mk(&"a".repeat(64), Duration::from_secs(2 * 3600));
    let fresh = mk(&"b".repeat(64), Duration::from_secs(60));
    // A strata entry whose writer is dead (a child that has exited) goes even when fresh.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let dead = ingest.join(format!("strata-{pid}-0-0"));
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("owner"), format!("host={host}\npid={pid}\nstarted=0\n")).unwrap();
    fs::write(dead.join("data"), "xx").unwrap();

    let dry = prune(&layout, &PrunePolicy::default(), true, TIMEOUT).unwrap();
    assert_eq!(dry.removed_ingests.len(), 2, "{:?}", dry.removed_ingests);
    assert!(old.exists() && dead.exists());

    let r = prune(&layout, &PrunePolicy::default(), false, TIMEOUT).unwrap();
    let mut gone: Vec<&Path> = r.removed_ingests.iter().map(|e| e.path.as_path()).collect();
    gone.sort();
    let mut want = vec![layout.root().join("ingest").join("a".repeat(64))];
    want.push(layout.root().join("ingest").join(format!("strata-{pid}-0-0")));
    want.sort();
    assert_eq!(gone, want);
    assert!(!old.exists() && !dead.exists() && fresh.exists());
    // Default policy: the untagged version is kept.
    assert_eq!((r.removed_blobs, blob_count(&root)), (0, 12));
}

#[test]
fn old_orphan_blobs_go_young_ones_stay_and_temps_are_cleaned() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let old = layout.write_blob(b"old orphan").unwrap().digest;
    let young = layout.write_blob(b"young orphan, maybe a buildx upload").unwrap().digest;
    set_mtime(&layout.blob_path(&old), Duration::from_secs(2 * 3600));
    fs::write(root.join(".index.json.crash.tmp"), b"{").unwrap();
    let r = prune(&layout, &PrunePolicy::default(), false, TIMEOUT).unwrap();
    assert_eq!((r.removed_blobs, r.kept_recent_orphans), (1, 1));
    assert!(layout.stat_blob(&old).unwrap().is_none());
    assert!(layout.stat_blob(&young).unwrap().is_some());
    assert!(!root.join(".index.json.crash.tmp").exists());
}

#[test]
fn image_entries_are_walked_and_kept() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let cfg = layout.write_blob(br#"{"architecture":"amd64","os":"linux"}"#).unwrap();
    let layer = layout.write_blob(b"not really a tar").unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        cfg.digest,
        cfg.size,
        media::OCI_LAYER_GZIP,
        layer.digest,
        layer.size
    );
    let m = layout.write_blob(manifest.as_bytes()).unwrap();
    for b in [&cfg.digest, &layer.digest, &m.digest] {
        set_mtime(&layout.blob_path(b), Duration::from_secs(7200));
    }
    let mut desc = Descriptor::new(media::OCI_MANIFEST, m.digest.clone(), m.size);
    desc.set_annotation(media::ANNOTATION_IMAGE_NAME, "docker.io/x/y:1");
    layout
        .update_index(TIMEOUT, |i| {
            i.manifests.push(desc.clone());
            Ok::<_, strata_oci::StoreError>(())
        })
        .unwrap();
    let policy = PrunePolicy { max_size: Some(0), ..PrunePolicy::reset(vec![]) };
    let r = prune(&layout, &policy, false, TIMEOUT).unwrap();
    assert!(r.max_size_unmet, "images are never dropped");
    for b in [&cfg.digest, &layer.digest, &m.digest] {
        assert!(layout.stat_blob(b).unwrap().is_some(), "{b}");
    }
    assert_eq!(blob_count(&root), 3);
}

#[test]
fn prune_waits_for_an_export_lease_and_keeps_its_blobs() {
    let (_t, root) = copy_case("two-versions");
    let layout = Layout::open(&root).unwrap();
    let v2 = CacheManifest::parse(&layout.read_blob_limited(&d(TWO_V2), 1 << 24).unwrap()).unwrap();
    let (tx, rx) = mpsc::channel();
    let exporter = {
        let layout = layout.clone();
        std::thread::spawn(move || {
            let lease = layout.export_lease(TIMEOUT).unwrap();
            let layer = layout.write_blob(b"a new layer of a concurrent export").unwrap();
            // Old enough to count as an orphan: only the lease can save it.
            set_mtime(&layout.blob_path(&layer.digest), Duration::from_secs(7200));
            let m = CacheManifest {
                form: ManifestForm::OciIndex,
                layers: vec![layer.descriptor(media::OCI_LAYER_GZIP)],
                config: v2.config.clone(),
            };
            let m = layout.write_blob(&m.encode()).unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            layout.put_tag(m.descriptor(media::OCI_INDEX), "concurrent", TIMEOUT).unwrap();
            drop(lease);
            (layer.digest, m.digest)
        })
    };
    rx.recv().unwrap();
    let start = Instant::now();
    let r = reset(&layout, vec![], TIMEOUT).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200), "prune did not wait for the lease");
    let (layer, manifest) = exporter.join().unwrap();
    assert!(layout.stat_blob(&layer).unwrap().is_some());
    assert!(layout.stat_blob(&manifest).unwrap().is_some());
    assert_eq!(layout.resolve("concurrent").unwrap().unwrap().digest, manifest);
    assert_eq!(r.removed_versions.len(), 1, "only v1: {r:?}");
    assert_eq!(r.removed_versions[0].digest, d(TWO_V1));
    assert_index_complete(&layout);
}

#[test]
fn record_use_merges_and_never_fails() {
    let (_t, root) = copy_case("two-versions");
    let (a, b) = (d(TWO_V1), d(TWO_V2));
    let before = snapshot(&root);
    record_use(&root, &a);
    record_use_at(&root, &b, SystemTime::now() - DAY);
    // An older use does not move a newer one back.
    record_use_at(&root, &a, SystemTime::now() - 10 * DAY);
    let uses = last_uses(&root);
    assert_eq!(uses.len(), 2);
    let age = |d: &Digest| SystemTime::now().duration_since(uses[d]).unwrap();
    assert!(age(&a) < Duration::from_secs(60) && age(&b) > DAY / 2);
    let mut after = snapshot(&root);
    after.remove(Path::new(LAST_USE_FILE));
    assert_eq!(after, before, "only the sidecar was added (index.json untouched)");

    // Read-only directory: nothing recorded, no error. (root ignores the mode bits, so
    // also make the write fail another way: the sidecar's name taken by a directory.)
    let ro = tempfile::tempdir().unwrap();
    fs::set_permissions(ro.path(), fs::Permissions::from_mode(0o555)).unwrap();
    let writable = File::create(ro.path().join("probe")).is_ok();
    if !writable {
        record_use(ro.path(), &a);
        assert_eq!(fs::read_dir(ro.path()).unwrap().count(), 0);
    }
    fs::set_permissions(ro.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let blocked = tempfile::tempdir().unwrap();
    fs::create_dir(blocked.path().join(LAST_USE_FILE)).unwrap();
    record_use(blocked.path(), &a);
    assert_eq!(fs::read_dir(blocked.path()).unwrap().count(), 1, "temp file left behind");
    record_use(Path::new("/nonexistent/strata/cache"), &a);
    assert!(last_uses(blocked.path()).is_empty());

    // Pruning forgets dropped versions.
    let layout = Layout::open(&root).unwrap();
    reset(&layout, vec![], TIMEOUT).unwrap();
    assert_eq!(last_uses(&root).keys().collect::<Vec<_>>(), vec![&b]);
}

#[test]
fn export_policy_from_cache_to_keys() {
    use strata_cache::options::GcPolicy;
    let v = d(TWO_V2);
    assert_eq!(PrunePolicy::for_export(&GcPolicy::default(), false, v.clone()), None);
    let p = PrunePolicy::for_export(&GcPolicy::default(), true, v.clone()).unwrap();
    assert_eq!(p, PrunePolicy::reset(vec![v.clone()]));
    let gc = GcPolicy { keep_last: Some(2), max_size: Some(5), max_age_secs: Some(60) };
    let p = PrunePolicy::for_export(&gc, true, v.clone()).unwrap();
    assert_eq!(
        (p.keep_last, p.max_size, p.max_age, p.protect),
        (Some(2), Some(5), Some(Duration::from_secs(60)), vec![v])
    );
}
