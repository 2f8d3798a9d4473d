//! Opens every real BuildKit cache under the shared fixtures, read-only, resolves `latest`
//! and verifies every blob.

use std::path::{Path, PathBuf};

use strata_oci::{Digest, Layout, media};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit");

/// (case dir, expected blob count, expected `latest` digest prefix, has oci-layout)
const CASES: &[(&str, usize, &str, bool)] = &[
    ("scratch-copy-min/cache", 4, "sha256:115583cb", false),
    ("multistage-max/cache", 9, "sha256:e6228ee4", false),
    ("zstd/cache", 9, "sha256:269605ea", false),
    ("docker-mediatypes/cache", 9, "sha256:c0a9e704", false),
    ("image-manifest/v0.11.6-ignored/cache", 9, "sha256:90cbe333", false),
    ("image-manifest/v0.12.5/cache", 9, "sha256:5ce46fa9", true),
    ("two-versions/cache", 12, "sha256:01869615", false),
];

/// Every file under `dir` with its length and mtime, to prove nothing was written.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// The descriptors a cache manifest references: `manifests[]` of an index or list, or
/// `config` + `layers[]` of an image manifest.
fn referenced(manifest: &[u8]) -> Vec<(Digest, u64)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut descs: Vec<&serde_json::Value> = Vec::new();
    if let Some(m) = v.get("manifests").and_then(|m| m.as_array()) {
        descs.extend(m);
    }
    if let Some(c) = v.get("config") {
        descs.push(c);
    }
    if let Some(l) = v.get("layers").and_then(|l| l.as_array()) {
        descs.extend(l);
    }
    descs
        .into_iter()
        .map(|d| {
            (Digest::parse(d["digest"].as_str().unwrap()).unwrap(), d["size"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn every_fixture_cache_opens_resolves_and_verifies() {
    for &(case, blobs, latest, has_layout) in CASES {
        let dir = Path::new(FIXTURES).join(case);
        let before = snapshot(&dir);
        let layout = Layout::open(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(layout.oci_layout_version().unwrap().is_some(), has_layout, "{case}");

        let index = layout.read_index().unwrap().expect("fixture has index.json");
        assert_eq!(index.schema_version, 2);
        assert_eq!(index.media_type, None, "{case}: BuildKit <v0.14 writes no top-level mediaType");
        let desc = layout.resolve("latest").unwrap().unwrap();
        assert!(desc.digest.as_str().starts_with(latest), "{case}: {}", desc.digest);
        // Re-encoding the untouched index reproduces BuildKit's bytes exactly.
        assert_eq!(index.to_vec().unwrap(), std::fs::read(layout.index_path()).unwrap(), "{case}");

        layout.verify_blob(&desc.digest, Some(desc.size)).unwrap();
        let manifest = layout.read_blob_limited(&desc.digest, 4 << 20).unwrap();
        let refs = referenced(&manifest);
        assert!(refs.len() >= 3, "{case}: {refs:?}");
        for (d, size) in &refs {
            layout.verify_blob(d, Some(*size)).unwrap_or_else(|e| panic!("{case}: {e}"));
        }
        // The config is the cache config, read whole like BuildKit does.
        let config = if desc.media_type == media::OCI_MANIFEST {
            let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            Digest::parse(v["config"]["digest"].as_str().unwrap()).unwrap()
        } else {
            refs.last().unwrap().0.clone()
        };
        let cfg = layout.read_blob_limited(&config, 1 << 20).unwrap();
        assert!(cfg.starts_with(b"{\"layers\":"), "{case}");

        let walk = layout.walk_blobs().unwrap();
        assert!(walk.skipped.is_empty(), "{case}: {:?}", walk.skipped);
        assert_eq!(walk.blobs.len(), blobs, "{case}");
        for b in &walk.blobs {
            layout.verify_blob(&b.digest, Some(b.size)).unwrap_or_else(|e| panic!("{case}: {e}"));
        }
        assert!(layout.list_ingests().unwrap().is_empty(), "{case}");
        assert_eq!(snapshot(&dir), before, "{case}: opening and reading must not write");
    }
}

#[test]
fn reads_an_index_in_other_key_order() {
    // _base/busybox-oci was written by a Python script: keys sorted, platform present.
    let layout = Layout::open(Path::new(FIXTURES).join("_base/busybox-oci")).unwrap();
    assert_eq!(layout.oci_layout_version().unwrap().as_deref(), Some("1.0.0"));
    let desc = layout.resolve("latest").unwrap().unwrap();
    assert_eq!(
        desc.digest.as_str(),
        "sha256:d470348f8348647975c19ab59157b2a1a2c4dcf4d41f32439c13973f97794273"
    );
    assert_eq!(desc.platform.as_ref().unwrap().architecture, "amd64");
    layout.verify_blob(&desc.digest, Some(desc.size)).unwrap();
}

#[test]
fn copies_a_fixture_into_a_new_cache_and_retags() {
    let src = Layout::open(Path::new(FIXTURES).join("scratch-copy-min/cache")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dst = Layout::create(tmp.path().join("cache")).unwrap();
    let desc = src.resolve("latest").unwrap().unwrap();
    for b in src.walk_blobs().unwrap().blobs {
        dst.import_blob_from(&src, &b.digest).unwrap();
        dst.verify_blob(&b.digest, Some(b.size)).unwrap();
    }
    dst.put_tag(desc.clone(), "latest", std::time::Duration::from_secs(5)).unwrap();
    // What BuildKit HEAD would write for the same Put: the v0.11 bytes plus the top-level
    // mediaType.
    let original = std::fs::read(src.index_path()).unwrap();
    let expected = String::from_utf8(original).unwrap().replacen(
        "{\"schemaVersion\":2,",
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",",
        1,
    );
    assert_eq!(String::from_utf8(std::fs::read(dst.index_path()).unwrap()).unwrap(), expected);
}
