//! `strata cache prune` running in a loop while builds export into the same directory:
//! the export lease keeps prune away from blobs not yet named by index.json, so every
//! build succeeds, every tag stays and the cache verifies.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

fn build(state: &Path, ctx: &Path, dest: &Path, i: usize) -> std::process::Child {
    common::write_files(
        ctx,
        &[
            ("Dockerfile", "FROM scratch\nCOPY a /a\nCOPY b /b\n"),
            ("a", &format!("{i}\n").repeat(50_000)),
            ("b", &format!("b{i}\n")),
        ],
    );
    Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .env("STRATA_ROOT", state)
        .args(["build", "--progress", "plain", "--cache-to"])
        .arg(format!("type=local,dest={},mode=max,tag=t{i}", dest.display()))
        .arg(ctx)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn prune_while_exporting_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("cache");
    std::fs::create_dir(&dest).unwrap();
    let builds: Vec<_> = (0..6)
        .map(|i| {
            let w = t.path().join(format!("w{i}"));
            build(&w.join("state"), &w.join("ctx"), &dest, i)
        })
        .collect();
    // Prune (the CLI default: reset, untagged versions and dangling blobs go) until the
    // builds are done, and a few times more.
    let mut prunes = 0;
    let mut builds: Vec<_> = builds.into_iter().map(Some).collect();
    let mut outputs = Vec::new();
    while builds.iter().any(Option::is_some) || prunes < 3 {
        let out = common::strata(&t.path().join("s"))
            .args(["cache", "prune"])
            .arg(&dest)
            .output()
            .unwrap();
        assert!(out.status.success(), "prune failed:\n{}", common::text(&out));
        prunes += 1;
        for slot in &mut builds {
            if slot.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
                outputs.push(slot.take().unwrap().wait_with_output().unwrap());
            }
        }
    }
    for out in &outputs {
        assert!(out.status.success(), "build failed:\n{}", common::text(out));
    }
    let mut tags: Vec<String> = strata_oci::Layout::open(&dest)
        .unwrap()
        .read_index()
        .unwrap()
        .unwrap()
        .tags()
        .into_iter()
        .map(str::to_owned)
        .collect();
    tags.sort();
    assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4", "t5"]);
    let out = common::strata(&t.path().join("s"))
        .args(["cache", "verify", "--all"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
}
