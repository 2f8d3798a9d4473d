//! The BuildKit fixtures rebuilt by strata: the final filesystem must equal the one
//! BuildKit's exported cache holds for the same build (its final result's layer chain,
//! applied in order). Names, contents and modes are compared; mtimes are not.

mod build_util;
mod common;

use std::path::Path;

use build_util::{apply_blobs, cache_final_chain, index_latest};

/// Builds `case`'s Dockerfile with `context` into a local output and returns its tree.
fn strata_tree(tmp: &Path, case: &str, context: &str) -> (Vec<String>, String) {
    let fx = common::fixtures().join(case);
    let out = tmp.join(format!("out-{context}"));
    // The checked-in fixture contexts are read-only (0444/0555); BuildKit built from
    // writable ones (0644/0755), and COPY keeps modes, so build from a writable copy.
    let ctx = tmp.join(format!("ctx-{context}"));
    common::copy_tree(&fx.join(context), &ctx);
    let o = common::strata(&tmp.join("state"))
        .args(["build", "--progress", "plain", "--build-context", &common::busybox_context()])
        .arg("-f")
        .arg(fx.join("Dockerfile"))
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let log = common::text(&o);
    assert!(o.status.success(), "{case}/{context}: {log}");
    (common::tree(&out), log)
}

/// The final filesystem BuildKit's cache manifest `manifest` in `case/cache` describes.
fn buildkit_tree(tmp: &Path, case: &str, manifest: &str) -> Vec<String> {
    let cache = common::fixtures().join(case).join("cache");
    let chain = cache_final_chain(&cache, manifest);
    let dest = tmp.join(format!("bk-{}", &manifest[7..19]));
    apply_blobs(&cache, &chain, &dest);
    common::tree(&dest)
}

fn assert_same(case: &str, strata: &[String], buildkit: &[String], log: &str) {
    if strata != buildkit {
        let only_s: Vec<_> = strata.iter().filter(|l| !buildkit.contains(l)).collect();
        let only_b: Vec<_> = buildkit.iter().filter(|l| !strata.contains(l)).collect();
        panic!(
            "{case}: strata and BuildKit differ\nonly strata: {only_s:#?}\nonly BuildKit: {only_b:#?}\n{log}"
        );
    }
}

#[test]
fn scratch_copy_min_matches_buildkit() {
    let t = tempfile::tempdir().unwrap();
    let case = "scratch-copy-min";
    let cache = common::fixtures().join(case).join("cache");
    let bk = buildkit_tree(t.path(), case, &index_latest(&cache));
    assert!(bk.iter().any(|l| l.starts_with("etc/app/random.bin: file")), "{bk:#?}");
    let (s, log) = strata_tree(t.path(), case, "context");
    assert_same(case, &s, &bk, &log);
}

#[test]
fn multistage_max_matches_buildkit() {
    if !common::can_run("multistage_max_matches_buildkit") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let case = "multistage-max";
    let cache = common::fixtures().join(case).join("cache");
    let bk = buildkit_tree(t.path(), case, &index_latest(&cache));
    assert!(bk.iter().any(|l| l.starts_with("app/INPUT.txt: file")), "{bk:#?}");
    let (s, log) = strata_tree(t.path(), case, "context");
    assert_same(case, &s, &bk, &log);
}

#[test]
fn two_versions_match_buildkit() {
    if !common::can_run("two_versions_match_buildkit") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let case = "two-versions";
    // notes.txt: export 1 (context-v1) and export 2 (context-v2).
    for (context, manifest) in [
        ("context-v1", "sha256:e7bdda28cefe9360622aa5e6311a1d803c3b04e4f5bb9b218474a0db17a650d1"),
        ("context-v2", "sha256:0186961523be64c04213989470e06efd55ec20ef631b013fdada899bc9b4b3c7"),
    ] {
        let bk = buildkit_tree(t.path(), case, manifest);
        let (s, log) = strata_tree(t.path(), case, context);
        assert_same(&format!("{case}/{context}"), &s, &bk, &log);
    }
}
