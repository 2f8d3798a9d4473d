//! Many `strata build` processes on one cache directory (and two on one state directory)
//! at once: every one succeeds, no tag is lost, and the cache verifies afterwards.
//!
//! Nothing here needs RUN, so these tests run without root or runc.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `strata build` of `FROM scratch` + `COPY` of a context whose content depends on
/// `seed`, so that every process produces its own layers.
fn spawn_build(state: &Path, work: &Path, seed: usize, extra: &[String]) -> Child {
    let ctx = work.join(format!("ctx{seed}"));
    let body = format!("payload {seed}\n").repeat(2000);
    // Written once: rewriting a context another running build reads would race it.
    if !ctx.exists() {
        common::write_files(
            &ctx,
            &[
                ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\nCOPY sub /sub\n"),
                ("a.txt", &format!("file a of build {seed}\n")),
                ("sub/b.bin", &body),
                ("sub/c.txt", "shared content\n"),
            ],
        );
    }
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("strata"));
    c.env("STRATA_ROOT", state)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "--progress", "plain"])
        .args(extra)
        .arg(&ctx)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("spawn strata build")
}

fn wait_ok(what: &str, child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, common::text(&out));
}

fn tags(dest: &Path) -> Vec<String> {
    let index = strata_oci::Layout::open(dest).unwrap().read_index().unwrap().unwrap();
    let mut t: Vec<String> = index.tags().into_iter().map(str::to_owned).collect();
    t.sort();
    t
}

fn verify_all(dest: &Path) {
    let out = common::strata(&dest.join("unused-state"))
        .args(["cache", "verify", "--all"])
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "verify failed:\n{}", common::text(&out));
}

#[test]
fn eight_exporters_and_two_importers_share_one_cache() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("cache");
    // Importers need something to find; it also makes a first version the others extend.
    let seed_state = work.path().join("state-seed");
    let to = |tag: &str| format!("type=local,dest={},mode=max,tag={tag}", dest.display());
    wait_ok(
        "seed export",
        spawn_build(&seed_state, work.path(), 100, &["--cache-to".into(), to("shared")]),
    );

    let mut children = Vec::new();
    for i in 0..8 {
        // Half write the same tag (last writer wins), half their own.
        let tag = if i % 2 == 0 { "shared".to_owned() } else { format!("t{i}") };
        let state = work.path().join(format!("state{i}"));
        let args = ["--cache-to".to_owned(), to(&tag)];
        children.push((format!("exporter {i}"), spawn_build(&state, work.path(), i, &args)));
    }
    for i in 0..2 {
        let state = work.path().join(format!("state-import{i}"));
        let from = format!("type=local,src={},tag=shared", dest.display());
        let args = ["--cache-from".to_owned(), from];
        // Same content as the seed: the import can hit, but does not have to.
        children.push((format!("importer {i}"), spawn_build(&state, work.path(), 100, &args)));
    }
    for (what, c) in children {
        wait_ok(&what, c);
    }
    assert_eq!(tags(&dest), ["shared", "t1", "t3", "t5", "t7"]);
    verify_all(&dest);
    // No writer left anything in ingest/.
    let ingest = dest.join("ingest");
    let left: Vec<_> =
        std::fs::read_dir(&ingest).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "ingest entries left: {left:?}");
}

#[test]
fn two_builds_share_one_state_root() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let dest = work.path().join("cache");
    let to = |tag: &str| format!("type=local,dest={},mode=max,tag={tag}", dest.display());
    // Twice the same content (same layers, same records) and once different.
    for round in 0..2 {
        let a = spawn_build(&state, work.path(), 7, &["--cache-to".into(), to("a")]);
        let b = spawn_build(&state, work.path(), 7 + round, &["--cache-to".into(), to("b")]);
        wait_ok(&format!("round {round} build a"), a);
        wait_ok(&format!("round {round} build b"), b);
    }
    // Four identical builds at once: they race to write the same layers and records.
    let same: Vec<_> = (0..4)
        .map(|i| spawn_build(&state, work.path(), 20, &["--cache-to".into(), to(&format!("s{i}"))]))
        .collect();
    for (i, c) in same.into_iter().enumerate() {
        wait_ok(&format!("identical build {i}"), c);
    }
    assert_eq!(tags(&dest), ["a", "b", "s0", "s1", "s2", "s3"]);
    verify_all(&dest);
    // And the shared state still serves a normal build from its records.
    wait_ok("build after", spawn_build(&state, work.path(), 8, &[]));
}
