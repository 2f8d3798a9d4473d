//! End-to-end tests of `strata cache ls|inspect|verify` on the real binary, against the
//! BuildKit fixtures and damaged copies of them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit");
const TWO_V1: &str = "sha256:e7bdda28cefe9360622aa5e6311a1d803c3b04e4f5bb9b218474a0db17a650d1";
const TWO_V2: &str = "sha256:0186961523be64c04213989470e06efd55ec20ef631b013fdada899bc9b4b3c7";
const BASE_LAYER_HEX: &str = "4c5a1549bbd1b5afec295bd195d5cee68c6853d1dd48f5d6a737cb955f852ed5";

fn cache_dir(case: &str) -> PathBuf {
    Path::new(FIXTURES).join(case).join("cache")
}

fn strata() -> Command {
    Command::cargo_bin("strata").unwrap()
}

fn stdout_json(args: &[&str]) -> Value {
    let out = strata().args(args).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{args:?}: {e}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
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

/// Relative path → file content (`None` for directories).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
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
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn ls_shows_tagged_and_untagged_versions() {
    let dir = cache_dir("two-versions");
    let d = dir.to_str().unwrap();
    let v = stdout_json(&["cache", "ls", d, "--all", "--json"]);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2, "{v:#}");
    assert_eq!(list[0]["tag"], "latest");
    assert_eq!(list[0]["digest"], TWO_V2);
    assert!(list[1]["tag"].is_null());
    assert_eq!(list[1]["digest"], TWO_V1);
    for e in list {
        for key in ["mediaType", "created", "size", "layers", "records"] {
            assert!(!e[key].is_null(), "{key} in {e}");
        }
    }
    assert_eq!(stdout_json(&["cache", "ls", d, "--json"]).as_array().unwrap().len(), 1);

    strata()
        .args(["cache", "ls", d, "--all"])
        .assert()
        .success()
        .stdout(predicate::str::contains("TAG"))
        .stdout(predicate::str::contains("latest"))
        .stdout(predicate::str::contains("018696152"))
        .stdout(predicate::str::contains("<untagged>"))
        .stdout(predicate::str::contains("e7bdda28cefe"))
        .stdout(predicate::str::contains(TWO_V1).not())
        .stdout(predicate::str::contains("MiB"));
}

#[test]
fn inspect_shows_records_and_layers() {
    let dir = cache_dir("multistage-max");
    let d = dir.to_str().unwrap();
    let v = stdout_json(&["cache", "inspect", d, "--json"]);
    assert_eq!(v["records"].as_array().unwrap().len(), 11);
    assert_eq!(v["layers"].as_array().unwrap().len(), 7);
    assert_eq!(v["totals"]["records"], 11);
    strata()
        .args(["cache", "inspect", d])
        .assert()
        .success()
        .stdout(predicate::str::contains("11 records, 7 layers"))
        .stdout(predicate::str::contains("LAYERS"))
        .stdout(predicate::str::contains("RECORDS"))
        .stdout(predicate::str::contains("4c5a1549bbd1"));

    let zstd = stdout_json(&["cache", "inspect", cache_dir("zstd").to_str().unwrap(), "--json"]);
    let kinds: Vec<&str> = zstd["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["compression"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"gzip") && kinds.contains(&"zstd"), "{kinds:?}");

    let two = cache_dir("two-versions");
    let v = stdout_json(&["cache", "inspect", two.to_str().unwrap(), "--digest", TWO_V1, "--json"]);
    assert_eq!(v["digest"], TWO_V1);
    strata()
        .args(["cache", "inspect", two.to_str().unwrap(), "--tag", "nope"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("nope"));
    strata()
        .args(["cache", "inspect", two.to_str().unwrap(), "--digest", "sha256:zz"])
        .assert()
        .failure();
}

#[test]
fn verify_clean_fixture_exits_zero() {
    for case in ["scratch-copy-min", "multistage-max", "image-manifest/v0.12.5", "two-versions"] {
        let dir = cache_dir(case);
        strata()
            .args(["cache", "verify", dir.to_str().unwrap(), "--all"])
            .assert()
            .success()
            .stdout(predicate::str::contains("OK"))
            .stdout(predicate::str::contains("problem:").not());
        let v = stdout_json(&["cache", "verify", dir.to_str().unwrap(), "--json"]);
        assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{case}: {v:#}");
    }
}

#[test]
fn verify_damaged_copy_exits_one_and_names_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    copy_tree(&cache_dir("multistage-max"), &root);
    let blob = root.join("blobs/sha256").join(BASE_LAYER_HEX);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[1234] ^= 1;
    fs::write(&blob, &bytes).unwrap();
    let removed = "f31c00e76d63d3206eb1ffe6cd109cfdc695ddc1438926ae7012ead90ca38060";
    fs::remove_file(root.join("blobs/sha256").join(removed)).unwrap();
    let before = snapshot(&root);
    let d = root.to_str().unwrap();

    let out = strata().args(["cache", "verify", d]).assert().code(1).get_output().clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let problems: Vec<&str> = stdout.lines().filter(|l| l.starts_with("problem:")).collect();
    assert_eq!(problems.len(), 2, "{stdout}");
    assert!(
        problems.iter().any(|l| l.contains(BASE_LAYER_HEX) && l.contains("digest mismatch")),
        "{stdout}"
    );
    assert!(problems.iter().any(|l| l.contains(removed) && l.contains("missing")), "{stdout}");

    let out = strata().args(["cache", "verify", d, "--json"]).assert().code(1).get_output().clone();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"]["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"digestMismatch") && kinds.contains(&"missing"), "{v:#}");

    // ls and inspect still work on the damaged copy, and nothing was written by any of them.
    strata().args(["cache", "ls", d, "--all"]).assert().success();
    strata().args(["cache", "inspect", d]).assert().success();
    assert_eq!(snapshot(&root), before);
}

#[test]
fn errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("does-not-exist");
    for sub in ["ls", "inspect", "verify"] {
        strata()
            .args(["cache", sub, missing.to_str().unwrap()])
            .assert()
            .failure()
            .stderr(predicate::str::contains("does-not-exist"));
    }
    assert!(!missing.exists(), "must not be created");

    let root = tmp.path().join("cache");
    copy_tree(&cache_dir("scratch-copy-min"), &root);
    fs::write(root.join("index.json"), br#"{"schemaVersion":2,"manifests":[{"#).unwrap();
    strata()
        .args(["cache", "verify", root.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("index.json"));
}
