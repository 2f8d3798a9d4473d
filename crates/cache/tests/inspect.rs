//! `list_versions`, `inspect_version` and `verify` against the BuildKit fixtures, and
//! against damaged copies of them. Every test also checks that the directory looked at
//! is left exactly as it was: these are the read-only commands.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_cache::inspect::{
    CompressionName, InspectError, VersionSelector, inspect_version, list_versions,
};
use strata_cache::verify::{ProblemKind, VerifyReport, verify};
use strata_oci::{Digest, Layout, StoreError};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit");

const CASES: &[&str] = &[
    "scratch-copy-min",
    "multistage-max",
    "zstd",
    "docker-mediatypes",
    "image-manifest/v0.11.6-ignored",
    "image-manifest/v0.12.5",
    "two-versions",
];

const TWO_V1: &str = "sha256:e7bdda28cefe9360622aa5e6311a1d803c3b04e4f5bb9b218474a0db17a650d1";
const TWO_V2: &str = "sha256:0186961523be64c04213989470e06efd55ec20ef631b013fdada899bc9b4b3c7";
/// The busybox base layer every gzip fixture shares.
const BASE_LAYER: &str = "sha256:4c5a1549bbd1b5afec295bd195d5cee68c6853d1dd48f5d6a737cb955f852ed5";

fn cache_dir(case: &str) -> PathBuf {
    Path::new(FIXTURES).join(case).join("cache")
}

fn d(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

/// Every entry under `root` (relative path → content digest, `None` for directories,
/// plus the permission bits): anything created, removed, rewritten or chmod-ed shows.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Option<Digest>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for ent in fs::read_dir(&dir).unwrap() {
            let p = ent.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(rel, (None, mode));
                stack.push(p);
            } else {
                out.insert(rel, (Some(Digest::of_bytes(&fs::read(&p).unwrap())), mode));
            }
        }
    }
    out
}

/// Copies a fixture into a fresh tempdir, writable (the fixtures are 0444/0555).
fn copy_case(case: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("cache");
    copy_tree(&cache_dir(case), &dst);
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
            fs::copy(ent.path(), &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Total size of the files in `blobs/sha256`.
fn blob_bytes(root: &Path) -> u64 {
    fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(d(digest).hex())
}

/// Runs all three read-only operations and checks the tree is unchanged afterwards.
fn verify_untouched(root: &Path, all: bool) -> VerifyReport {
    let before = snapshot(root);
    let layout = Layout::open(root).unwrap();
    let report = verify(&layout, all).unwrap();
    let _ = list_versions(&layout, true);
    let _ = inspect_version(&layout, &VersionSelector::Tag("latest".into()));
    assert_eq!(snapshot(root), before, "{} changed", root.display());
    report
}

fn has_problem(r: &VerifyReport, digest: &Digest, pred: impl Fn(&ProblemKind) -> bool) -> bool {
    r.problems.iter().any(|p| &p.digest == digest && pred(&p.kind))
}

#[test]
fn every_fixture_verifies_clean_and_untouched() {
    for case in CASES {
        let root = cache_dir(case);
        for all in [false, true] {
            let r = verify_untouched(&root, all);
            assert!(r.ok(), "{case} all={all}: {:#?}", r.problems);
            assert!(r.blobs_checked >= 4, "{case}: {r:?}");
            if all {
                assert_eq!(r.unreferenced_blobs, 0, "{case}: {:?}", r.notes);
            }
        }
    }
}

#[test]
fn two_versions_counts_the_untagged_export() {
    let layout = Layout::open(cache_dir("two-versions")).unwrap();
    let tagged = verify(&layout, false).unwrap();
    assert_eq!(tagged.manifests, 1);
    // Only in v1: manifest, config, 3 layers (fixtures README).
    assert_eq!(tagged.unreferenced_blobs, 5, "{:?}", tagged.notes);
    assert!(tagged.notes.iter().any(|n| n.contains("5 blob(s)")), "{:?}", tagged.notes);
    let all = verify(&layout, true).unwrap();
    assert_eq!(all.manifests, 2);
    assert_eq!(all.blobs_checked, 12);
    assert_eq!(all.bytes_checked, blob_bytes(&cache_dir("two-versions")), "every blob");
}

#[test]
fn inspect_reports_fixture_counts() {
    let inspect = |case: &str| {
        let layout = Layout::open(cache_dir(case)).unwrap();
        inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap()
    };
    let min = inspect("scratch-copy-min");
    assert_eq!((min.records.len(), min.layers.len()), (4, 2));
    assert_eq!(min.totals.records, 4);
    assert_eq!(min.totals.unique_blobs, 2);
    assert_eq!(min.totals.compressed_bytes, 130 + 4374);
    assert_eq!(min.tag.as_deref(), Some("latest"));
    assert_eq!(min.form, "OCI image index");
    assert!(min.warnings.is_empty(), "{:?}", min.warnings);
    // Two records are roots: only a digest, no inputs or results.
    assert_eq!(
        min.records.iter().filter(|r| r.inputs.is_empty() && r.results.is_empty()).count(),
        2
    );
    for l in &min.layers {
        assert_eq!(l.compression, Some(CompressionName::Gzip));
        assert!(l.diff_id.as_deref().is_some_and(|s| s.starts_with("sha256:")), "{l:?}");
        assert!(l.created_at.as_deref().is_some_and(|s| s.starts_with("2026-12-04T")), "{l:?}");
        assert_eq!(l.uncompressed_size, None);
    }

    let max = inspect("multistage-max");
    assert_eq!((max.records.len(), max.layers.len()), (11, 7));
    // One record has two alternative links in one input slot; one input has a selector.
    assert!(max.records.iter().any(|r| r.inputs.iter().any(|slot| slot.len() == 2)));
    assert!(
        max.records.iter().flat_map(|r| r.inputs.iter().flatten()).any(|i| i.selector.is_some())
    );
    // Every result's chain ends at its layer's blob and starts at a root layer.
    for r in &max.records {
        for res in &r.results {
            let layer = &max.layers[res.layer.unwrap()];
            assert_eq!(res.chain.last(), Some(&layer.blob));
            assert!(!res.chain.is_empty());
        }
    }
    assert!(max.layers.iter().any(|l| l.blob == d(BASE_LAYER) && l.size == Some(1_028_384)));

    let zstd = inspect("zstd");
    let kinds: std::collections::HashSet<_> =
        zstd.layers.iter().map(|l| l.compression.unwrap()).collect();
    assert_eq!(kinds, [CompressionName::Gzip, CompressionName::Zstd].into_iter().collect());
    let base = zstd.layers.iter().find(|l| l.blob == d(BASE_LAYER)).unwrap();
    assert_eq!(base.compression, Some(CompressionName::Gzip));

    let docker = inspect("docker-mediatypes");
    assert_eq!(docker.form, "Docker manifest list");
    assert_eq!(docker.media_type, "application/vnd.docker.distribution.manifest.list.v2+json");
    assert!(docker.layers.iter().all(|l| l.compression == Some(CompressionName::Gzip)));

    let im = inspect("image-manifest/v0.12.5");
    assert_eq!(im.form, "OCI image manifest");
    assert_eq!(im.layers.len(), 7);
}

#[test]
fn inspect_json_shape() {
    let layout = Layout::open(cache_dir("scratch-copy-min")).unwrap();
    let v = serde_json::to_value(
        inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap(),
    )
    .unwrap();
    for key in ["digest", "mediaType", "form", "config", "layers", "records", "totals", "warnings"]
    {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    let layer = &v["layers"][0];
    for key in ["index", "blob", "parent", "mediaType", "compression", "size", "diffID"] {
        assert!(layer.get(key).is_some(), "{key} missing in {layer}");
    }
    assert_eq!(layer["compression"], "gzip");
    assert!(layer["uncompressedSize"].is_null());
    assert_eq!(v["totals"]["uniqueBlobs"], 2);
}

#[test]
fn inspect_by_digest_and_selector_errors() {
    let layout = Layout::open(cache_dir("two-versions")).unwrap();
    let v1 = inspect_version(&layout, &VersionSelector::Digest(d(TWO_V1))).unwrap();
    assert_eq!(v1.digest, d(TWO_V1));
    assert_eq!(v1.tag, None, "the first export is untagged");
    let v2 = inspect_version(&layout, &VersionSelector::Digest(d(TWO_V2))).unwrap();
    assert_eq!(v2.tag.as_deref(), Some("latest"));

    let err = inspect_version(&layout, &VersionSelector::Tag("nope".into())).unwrap_err();
    assert!(matches!(err, InspectError::TagNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("\"nope\"") && msg.contains("latest") && msg.contains("index.json"));

    // A digest that is a layer, not a manifest.
    let err = inspect_version(&layout, &VersionSelector::Digest(d(BASE_LAYER))).unwrap_err();
    assert!(matches!(err, InspectError::Manifest { .. }), "{err}");
    assert!(err.to_string().contains(d(BASE_LAYER).hex()), "{err}");

    let absent = Digest::of_bytes(b"absent");
    let err = inspect_version(&layout, &VersionSelector::Digest(absent.clone())).unwrap_err();
    assert!(matches!(err, InspectError::Store(StoreError::BlobNotFound { .. })), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let layout = Layout::open(empty.path()).unwrap();
    let err = inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap_err();
    assert!(matches!(err, InspectError::NoIndex { .. }), "{err}");
    assert!(list_versions(&layout, true).unwrap().is_empty());
    let r = verify(&layout, true).unwrap();
    assert!(r.ok() && r.notes.iter().any(|n| n.contains("index.json does not exist")));
    assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0, "nothing created");
}

#[test]
fn list_versions_shows_both_exports() {
    let layout = Layout::open(cache_dir("two-versions")).unwrap();
    let tagged = list_versions(&layout, false).unwrap();
    assert_eq!(tagged.len(), 1);
    let all = list_versions(&layout, true).unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].digest, d(TWO_V2));
    assert_eq!(all[0].tag.as_deref(), Some("latest"));
    assert!(!all[0].untagged);
    assert_eq!(all[1].digest, d(TWO_V1));
    assert_eq!(all[1].tag, None);
    assert!(all[1].untagged);
    for v in &all {
        assert_eq!(v.media_type, "application/vnd.oci.image.index.v1+json");
        assert!(v.created.as_deref().is_some_and(|c| c.starts_with("2026-12-04T")), "{v:?}");
        assert!(v.size > 1_028_384, "{v:?}");
        assert!(v.note.is_none(), "{v:?}");
        assert!(v.layers.is_some_and(|n| n > 0) && v.records.is_some_and(|n| n > 0));
    }
    // Together the versions hold every blob; shared blobs are in both sizes.
    let shared = all[0].size + all[1].size;
    assert!(shared > blob_bytes(&cache_dir("two-versions")), "{shared}");
    let v = serde_json::to_value(&all).unwrap();
    assert!(v[1]["tag"].is_null());
    for key in ["tag", "digest", "mediaType", "created", "size", "layers", "records"] {
        assert!(v[0].get(key).is_some(), "{key}");
    }

    let min = list_versions(&Layout::open(cache_dir("scratch-copy-min")).unwrap(), true).unwrap();
    assert_eq!(min.len(), 1);
    assert_eq!((min[0].layers, min[0].records), (Some(2), Some(4)));
    assert_eq!(min[0].size, blob_bytes(&cache_dir("scratch-copy-min")), "all blobs");
}

#[test]
fn flipped_byte_in_layer_is_a_digest_mismatch() {
    let (_t, root) = copy_case("multistage-max");
    let p = blob_path(&root, BASE_LAYER);
    let mut bytes = fs::read(&p).unwrap();
    bytes[500_000] ^= 0x40;
    fs::write(&p, &bytes).unwrap();
    let r = verify_untouched(&root, false);
    assert!(!r.ok());
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    let p0 = &r.problems[0];
    assert_eq!(p0.digest, d(BASE_LAYER));
    assert_eq!(p0.kind, ProblemKind::DigestMismatch { computed: Digest::of_bytes(&bytes) });
    assert!(p0.path.ends_with(d(BASE_LAYER).hex()));
    assert!(p0.message.contains("digest mismatch") && p0.message.contains(BASE_LAYER), "{p0:?}");
    assert!(p0.referenced_by.starts_with("layer of manifest sha256:e6228ee4"), "{p0:?}");
}

#[test]
fn truncated_index_is_an_error_naming_it() {
    let (_t, root) = copy_case("scratch-copy-min");
    let idx = root.join("index.json");
    let bytes = fs::read(&idx).unwrap();
    fs::write(&idx, &bytes[..bytes.len() / 2]).unwrap();
    let before = snapshot(&root);
    let layout = Layout::open(&root).unwrap();
    for err in [
        verify(&layout, false).unwrap_err(),
        list_versions(&layout, true).unwrap_err(),
        inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap_err(),
    ] {
        assert!(matches!(err, InspectError::Store(StoreError::IndexCorrupt { .. })), "{err}");
        assert!(err.to_string().contains(&idx.display().to_string()), "{err}");
    }
    assert_eq!(snapshot(&root), before);
}

#[test]
fn deleted_blobs_are_missing() {
    let (_t, root) = copy_case("scratch-copy-min");
    let layer = "sha256:5068a027f25f6a0addc160a9c313af7d9faa0d2849a150779704da007cceb643";
    fs::remove_file(blob_path(&root, layer)).unwrap();
    let r = verify_untouched(&root, true);
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    assert!(has_problem(&r, &d(layer), |k| *k == ProblemKind::Missing));
    assert!(r.problems[0].message.contains("missing"));

    // A missing config: reported, and the layers are still checked.
    let config = "sha256:3b7e4546ae07297c01d964b5b20375c9675d2fdf07c8dff32d2214eb71187b62";
    fs::remove_file(blob_path(&root, config)).unwrap();
    let r = verify_untouched(&root, false);
    assert!(has_problem(&r, &d(config), |k| *k == ProblemKind::Missing), "{r:#?}");
    assert!(r.problems.iter().any(|p| p.referenced_by.starts_with("config of manifest")));
    // ls still lists the version, saying why it has no counts.
    let ls = list_versions(&Layout::open(&root).unwrap(), false).unwrap();
    assert_eq!(ls.len(), 1);
    assert!(ls[0].records.is_none() && ls[0].note.as_deref().unwrap().contains(d(config).hex()));

    // A missing manifest.
    let manifest = "sha256:115583cb14260c3a26863de21c9a5420e9c91724b9d92d203bcc047dd9331895";
    fs::remove_file(blob_path(&root, manifest)).unwrap();
    let r = verify_untouched(&root, false);
    assert!(has_problem(&r, &d(manifest), |k| *k == ProblemKind::Missing), "{r:#?}");
    assert!(r.problems.iter().any(|p| p.referenced_by == "tag latest"));
}

#[test]
fn wrong_size_blob() {
    let (_t, root) = copy_case("scratch-copy-min");
    let layer = "sha256:13b8cb8188cd8ab32594b9ae8cf107ab1aa2217c4af06bdf108374295c053bcb";
    let p = blob_path(&root, layer);
    let mut bytes = fs::read(&p).unwrap();
    bytes.push(0);
    fs::write(&p, &bytes).unwrap();
    let r = verify_untouched(&root, false);
    assert!(
        has_problem(&r, &d(layer), |k| *k == ProblemKind::WrongSize { expected: 130, actual: 131 })
    );
}

/// Writes `bytes` as a blob and returns its digest.
fn put_blob(root: &Path, bytes: &[u8]) -> Digest {
    let digest = Digest::of_bytes(bytes);
    fs::write(root.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    digest
}

/// Rewrites the config and the manifest of an OCI-index cache (the tag's version), writes
/// them as new blobs under their new digests and points index.json at the new manifest,
/// as an exporter would. Returns (manifest, config) digests.
fn rewrite_version(
    root: &Path,
    edit_manifest: impl FnOnce(&mut Value),
    edit_config: impl FnOnce(&mut Value),
) -> (Digest, Digest) {
    let mut index: Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob_path(root, &manifest_digest)).unwrap()).unwrap();
    edit_manifest(&mut manifest);
    let cfg_entry = manifest["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["mediaType"] == "application/vnd.buildkit.cacheconfig.v0")
        .unwrap();
    let mut config: Value = serde_json::from_slice(
        &fs::read(blob_path(root, cfg_entry["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    edit_config(&mut config);
    let cfg_bytes = serde_json::to_vec(&config).unwrap();
    let new_cfg = put_blob(root, &cfg_bytes);
    cfg_entry["digest"] = Value::from(new_cfg.as_str());
    cfg_entry["size"] = Value::from(cfg_bytes.len());
    let m_bytes = serde_json::to_vec(&manifest).unwrap();
    let new_manifest = put_blob(root, &m_bytes);
    index["manifests"][0]["digest"] = Value::from(new_manifest.as_str());
    index["manifests"][0]["size"] = Value::from(m_bytes.len());
    fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    (new_manifest, new_cfg)
}

#[test]
fn config_with_out_of_range_link_is_invalid() {
    let (_t, root) = copy_case("multistage-max");
    let (_, new_cfg) = rewrite_version(
        &root,
        |_| {},
        |config| {
            let rec = config["records"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|r| r.get("inputs").is_some())
                .unwrap();
            rec["inputs"][0][0]["link"] = Value::from(99);
        },
    );

    let r = verify_untouched(&root, false);
    assert!(!r.ok());
    assert!(r.problems.iter().all(|p| p.digest == new_cfg), "{:#?}", r.problems);
    let p = &r.problems[0];
    match &p.kind {
        ProblemKind::InvalidConfig { message } => {
            assert!(message.contains("links invalid record ID 99"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(p.message.contains("invalid cache config") && p.message.contains(new_cfg.as_str()));
    // The old manifest and config are now unreferenced, and the note says so.
    assert_eq!(r.unreferenced_blobs, 2, "{:?}", r.notes);
    // inspect still shows the version, with the problem as a warning.
    let layout = Layout::open(&root).unwrap();
    let v = inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap();
    assert!(v.warnings.iter().any(|w| w.contains("99")), "{:?}", v.warnings);
}

#[test]
fn unparseable_manifest_json() {
    let (_t, root) = copy_case("scratch-copy-min");
    let garbage = put_blob(&root, b"{\"manifests\": [");
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{garbage}","size":15,"annotations":{{"org.opencontainers.image.ref.name":"broken"}}}}]}}"#
    );
    fs::write(root.join("index.json"), index).unwrap();
    let r = verify_untouched(&root, false);
    assert!(
        has_problem(&r, &garbage, |k| matches!(k, ProblemKind::UnparseableJson { .. })),
        "{r:#?}"
    );
    let ls = list_versions(&Layout::open(&root).unwrap(), false).unwrap();
    assert!(ls[0].note.as_deref().unwrap().contains("not a cache manifest"), "{ls:?}");
}

#[test]
fn image_layout_is_checked_generically() {
    let root = Path::new(FIXTURES).join("_base/busybox-oci");
    let r = verify_untouched(&root, true);
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.blobs_checked, 3, "manifest, config, layer");
    assert!(r.notes.iter().any(|n| n.contains("not a cache manifest")), "{:?}", r.notes);
    let layout = Layout::open(&root).unwrap();
    let ls = list_versions(&layout, true).unwrap();
    assert_eq!(ls.len(), 1);
    assert!(ls[0].note.as_deref().unwrap().contains("not a cache manifest"));
    let err = inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap_err();
    assert!(matches!(err, InspectError::Manifest { .. }), "{err}");
}

#[test]
fn lock_file_and_ingest_notes() {
    let (_t, root) = copy_case("scratch-copy-min");
    // No lock file: verify must not create one.
    verify_untouched(&root, false);
    assert!(!root.join("index.json.lock").exists());

    fs::write(root.join("index.json.lock"), b"").unwrap();
    fs::create_dir_all(root.join("ingest/0123abcd")).unwrap();
    fs::write(root.join("ingest/0123abcd/data"), b"partial").unwrap();
    let r = verify_untouched(&root, false);
    assert!(r.ok());
    assert!(r.notes.iter().any(|n| n.contains("no process holds it")), "{:?}", r.notes);
    assert!(
        r.notes.iter().any(|n| n.contains("ingest entry") && n.contains("7 bytes")),
        "{:?}",
        r.notes
    );

    // While another open file description holds it exclusively, the probe says so.
    let held = File::open(root.join("index.json.lock")).unwrap();
    held.lock().unwrap();
    let r = verify_untouched(&root, false);
    assert!(r.notes.iter().any(|n| n.contains("held by another process")), "{:?}", r.notes);
    held.unlock().unwrap();
}

#[test]
fn oversized_manifest_is_reported_not_read() {
    let (_t, root) = copy_case("scratch-copy-min");
    // A sparse 17 MiB "manifest": verify must refuse to read it into memory.
    let big = root.join("blobs/sha256").join("ab".repeat(32));
    File::create(&big).unwrap().set_len(17 << 20).unwrap();
    let digest = d(&format!("sha256:{}", "ab".repeat(32)));
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{digest}","size":{}}}]}}"#,
        17 << 20
    );
    fs::write(root.join("index.json"), index).unwrap();
    let r = verify_untouched(&root, false);
    assert!(
        has_problem(
            &r,
            &digest,
            |k| matches!(k, ProblemKind::TooLarge { size, .. } if *size == 17 << 20)
        ),
        "{r:#?}"
    );
    let layout = Layout::open(&root).unwrap();
    let err = inspect_version(&layout, &VersionSelector::Digest(digest)).unwrap_err();
    assert!(matches!(err, InspectError::Store(StoreError::BlobTooLarge { .. })), "{err}");
    assert!(err.to_string().contains(&"ab".repeat(32)), "{err}");
}

#[test]
fn import_limit_and_estargz_annotations() {
    let (_t, root) = copy_case("scratch-copy-min");
    let (manifest, config) = rewrite_version(
        &root,
        |m| {
            // Make the first layer look like eStargz: the TOC annotation and its size.
            let ann = m["manifests"][0]["annotations"].as_object_mut().unwrap();
            ann.insert("containerd.io/snapshot/stargz/toc.digest".into(), BASE_LAYER.into());
            ann.insert("io.containers.estargz.uncompressed-size".into(), "10240".into());
            // An unknown layer media type for the second.
            m["manifests"][1]["mediaType"] = "application/x-unknown".into();
        },
        // Unknown fields are ignored by BuildKit and strata; this pushes the config over
        // BuildKit's 1 MiB import limit.
        |c| c["padding"] = Value::from("x".repeat(1 << 20)),
    );
    let layout = Layout::open(&root).unwrap();
    let v = inspect_version(&layout, &VersionSelector::Tag("latest".into())).unwrap();
    assert_eq!(v.digest, manifest);
    assert!(
        v.warnings.iter().any(|w| w.contains(config.as_str()) && w.contains("import limit")),
        "{:?}",
        v.warnings
    );
    assert!(v.warnings.iter().any(|w| w.contains("application/x-unknown")), "{:?}", v.warnings);
    let gz = v.layers.iter().find(|l| l.compression == Some(CompressionName::Estargz)).unwrap();
    assert_eq!(gz.uncompressed_size, Some(10240));
    assert!(v.layers.iter().any(|l| l.compression.is_none()));

    let r = verify_untouched(&root, false);
    assert!(r.ok(), "{:#?}", r.problems);
    assert!(r.notes.iter().any(|n| n.contains("import limit")), "{:?}", r.notes);
}
