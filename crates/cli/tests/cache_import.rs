//! End-to-end tests of `--cache-from type=local`: the seed's versioning story (digest=,
//! tag=), every warning path (the build goes on, exit 0, the image is right), and the
//! progress text naming where each hit came from.

mod cache_support;
mod common;

use std::path::{Path, PathBuf};

use cache_support::*;
use serde_json::Value;

struct Setup {
    t: tempfile::TempDir,
    p: Project,
    dest: PathBuf,
}

/// A scratch project exported once (mode=max) into `cache/`.
fn exported() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dest = t.path().join("cache");
    build(&p, &t.path().join("A"), t.path(), "export", &[cache_to(&dest, "mode=max")]).ok();
    Setup { t, p, dest }
}

impl Setup {
    fn path(&self) -> &Path {
        self.t.path()
    }

    /// A build on a fresh state with `extra` arguments; must succeed.
    fn fresh(&self, label: &str, extra: &[String]) -> Built {
        let b =
            build(&self.p, &self.path().join(format!("state-{label}")), self.path(), label, extra);
        b.ok();
        b
    }

    /// The files of a build without any cache, for comparisons.
    fn reference(&self) -> Vec<String> {
        self.fresh("reference", &[]).tree()
    }
}

fn set_c(p: &Project, content: &str) {
    common::write_files(&p.context, &[("c.txt", content)]);
}

#[test]
fn versions_by_digest_and_tag() {
    let s = exported();
    let first = tagged(&s.dest, "latest").unwrap();
    set_c(&s.p, "second\n");
    build(&s.p, &s.path().join("A"), s.path(), "second", &[cache_to(&s.dest, "mode=max")]).ok();
    let second = tagged(&s.dest, "latest").unwrap();
    assert_ne!(first, second);
    // ls --all: the tagged version first, the older one untagged by digest.
    let ls = ls_all(&s.dest);
    assert_eq!(ls.len(), 2, "{ls:?}");
    assert_eq!((ls[0]["tag"].as_str(), ls[0]["digest"].as_str()), (Some("latest"), Some(&*second)));
    assert_eq!((ls[1]["tag"].clone(), ls[1]["digest"].as_str()), (Value::Null, Some(&*first)));
    assert_verifies(&s.dest);

    // The first version's context, imported by digest: every step hits.
    set_c(&s.p, "charlie\n");
    let b = s.fresh("by-digest", &[cache_from(&s.dest, &format!("digest={first}"))]);
    assert!(b.executed().is_empty(), "{}", b.text);
    // Without digest the latest is used: c.txt differs, so exactly that COPY runs.
    let b = s.fresh("latest", &[cache_from(&s.dest, "")]);
    assert_eq!(b.executed(), vec!["[stage-1 2/2] COPY c.txt /c.txt".to_owned()], "{}", b.text);

    // tag= on export adds a tag beside latest; tag= on import selects it.
    set_c(&s.p, "beta\n");
    build(&s.p, &s.path().join("A"), s.path(), "beta", &[cache_to(&s.dest, "mode=max,tag=beta")])
        .ok();
    assert_eq!(tagged(&s.dest, "latest").unwrap(), second, "latest kept");
    let beta = tagged(&s.dest, "beta").unwrap();
    assert_ne!(beta, second);
    let b = s.fresh("tag-beta", &[cache_from(&s.dest, "tag=beta")]);
    assert!(b.executed().is_empty(), "{}", b.text);
    let b = s.fresh("tag-latest", &[cache_from(&s.dest, "tag=latest")]);
    assert_eq!(b.executed().len(), 1, "{}", b.text);
    // ref= works like src= (the seed's own example uses it) with a note.
    let b = s
        .fresh("ref", &[format!("--cache-from=type=local,ref={},digest={beta}", s.dest.display())]);
    assert!(b.executed().is_empty(), "{}", b.text);
    assert!(b.text.contains("ref=") && b.text.contains("src="), "{}", b.text);
}

/// A warning, exit 0, nothing from the cache, and the same files as without a cache.
fn assert_skipped(s: &Setup, label: &str, from: String, warning: &[&str]) {
    let want = s.reference();
    let b = s.fresh(label, &[from]);
    assert!(b.text.contains("WARNING"), "{label}:\n{}", b.text);
    for w in warning {
        assert!(b.text.contains(w), "{label}: expected {w:?} in:\n{}", b.text);
    }
    assert_eq!(b.executed().len(), s.p.steps, "{label}:\n{}", b.text);
    assert_eq!(b.tree(), want, "{label}");
}

#[test]
fn missing_src_warns_and_creates_nothing() {
    let s = exported();
    let src = s.path().join("no/such/cache");
    assert_skipped(&s, "missing", cache_from(&src, ""), &[&src.display().to_string(), "not found"]);
    assert!(!src.exists() && !s.path().join("no").exists(), "the import must not create src");
}

#[test]
fn unknown_tag_or_digest_warns() {
    let s = exported();
    assert_skipped(&s, "tag", cache_from(&s.dest, "tag=nope"), &["no digest found for tag nope"]);
    let d = "sha256:6982c70595cb91769f61cd1e064cf5f41d5357387bab6b18c0164c5f98c1f707";
    assert_skipped(&s, "digest", cache_from(&s.dest, &format!("digest={d}")), &[d, "unavailable"]);
}

/// Stores `bytes` as a blob of `dir` and returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = strata_oci::Digest::of_bytes(bytes).to_string();
    std::fs::write(blob_path(dir, &d), bytes).unwrap();
    d
}

#[test]
fn corrupt_manifest_or_config_warns() {
    let s = exported();
    let m = tagged(&s.dest, "latest").unwrap();
    let mbytes = std::fs::read(blob_path(&s.dest, &m)).unwrap();
    let manifest: Value = serde_json::from_slice(&mbytes).unwrap();
    let cfg = manifest["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mediaType"] == "application/vnd.buildkit.cacheconfig.v0")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // Well-named blobs whose content is not a cache manifest / config.
    let junk = put_blob(&s.dest, b"{\"schemaVersion\":2,\"nothing\":true}");
    assert_skipped(&s, "bad-manifest", cache_from(&s.dest, &format!("digest={junk}")), &[&junk]);
    let bad_cfg = put_blob(&s.dest, b"{\"layers\":[{\"blob\":\"sha256:zz\"}]");
    let text = String::from_utf8(mbytes.clone()).unwrap().replace(&cfg, &bad_cfg);
    let m2 = put_blob(&s.dest, text.as_bytes());
    assert_skipped(&s, "bad-config", cache_from(&s.dest, &format!("digest={m2}")), &[&bad_cfg]);

    // Damaged bytes under the right names (a flipped byte, same size).
    let flip = |d: &str| {
        let path = blob_path(&s.dest, d);
        let mut b = std::fs::read(&path).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x20;
        overwrite(&path, &b);
    };
    flip(&cfg);
    assert_skipped(&s, "flipped-config", cache_from(&s.dest, ""), &["config", &cfg]);
    flip(&m);
    assert_skipped(&s, "flipped-manifest", cache_from(&s.dest, ""), &[&m, "corrupt"]);
    // A manifest that is not JSON at all.
    overwrite(&blob_path(&s.dest, &m), b"\xff not json");
    assert_skipped(&s, "not-json", cache_from(&s.dest, ""), &[&m]);
}

/// Damages the root layers (no parent) of the cache and checks a build runs the steps
/// that need them instead, with the same files as a build without a cache.
fn damaged_layers(damage: impl Fn(&Path)) {
    let s = exported();
    let v = inspect(&s.dest, &[]);
    let roots: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["parent"] == -1)
        .map(|l| l["blob"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roots.len(), 2, "builder and final stage each start a chain: {v:#}");
    for r in &roots {
        damage(&blob_path(&s.dest, r));
    }
    let want = s.reference();
    let b = s.fresh("damaged", &[cache_from(&s.dest, "")]);
    assert!(b.text.contains("running the step instead"), "{}", b.text);
    assert!(roots.iter().any(|r| b.text.contains(r.as_str())), "names the blob: {}", b.text);
    // At least the steps that need a damaged root run; later ones hit only if the rerun
    // produced the same layer (COPY's created parent dirs take the current time, so not
    // always): either way the files are right.
    assert!(b.executed().iter().any(|n| n.contains("1/2")), "{}", b.text);
    assert_eq!(b.tree(), want, "never a wrong result");
}

#[test]
fn a_missing_layer_blob_runs_the_step() {
    damaged_layers(|p| std::fs::remove_file(p).unwrap());
}

#[test]
fn a_corrupt_layer_blob_runs_the_step() {
    damaged_layers(|p| {
        let mut b = std::fs::read(p).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x01;
        overwrite(p, &b);
    });
}

#[test]
fn progress_names_each_source_and_its_hits() {
    let s = exported();
    let m = tagged(&s.dest, "latest").unwrap();
    // A valid cache of another project, listed first: imported, but it serves nothing.
    let other_ctx = s.path().join("other");
    common::write_files(&other_ctx, &[("Dockerfile", "FROM scratch\nCOPY x /x\n"), ("x", "x")]);
    let other = Project {
        dockerfile: other_ctx.join("Dockerfile"),
        context: other_ctx.clone(),
        busybox: false,
        final_stage: "stage-0",
        steps: 1,
    };
    let empty = s.path().join("other-cache");
    build(&other, &s.path().join("O"), s.path(), "other", &[cache_to(&empty, "")]).ok();
    let b = s.fresh("progress", &[cache_from(&empty, ""), cache_from(&s.dest, "")]);
    let d = s.dest.display().to_string();
    for want in [
        format!("importing cache manifest from {d}"),
        format!("manifest {m}"),
        format!("CACHED (from {d})"),
        format!("cache {d}: {} hits", s.p.steps),
        format!("cache {}: 0 hits", empty.display()),
    ] {
        assert!(b.text.contains(&want), "expected {want:?} in:\n{}", b.text);
    }
    assert!(b.executed().is_empty());
}
