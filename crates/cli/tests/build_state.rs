//! `strata du` and `strata prune`: the state directory's size, and emptying it (fully, or
//! down to a budget) so the next build runs its steps again.

mod common;

fn build(state: &std::path::Path, ctx: &std::path::Path) -> String {
    let out =
        common::strata(state).args(["build", "--progress", "plain"]).arg(ctx).output().unwrap();
    let text = common::text(&out);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn du_reports_and_prune_empties_the_state_dir() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    let data: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    common::write_files(
        &ctx,
        &[("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"), ("a.txt", &data)],
    );
    let state = t.path().join("state");
    assert!(!build(&state, &ctx).contains("CACHED"));

    let du = common::strata(&state).arg("du").output().unwrap();
    let text = common::text(&du);
    assert!(du.status.success(), "{text}");
    let store_line = text.lines().find(|l| l.starts_with("store")).expect("a store line");
    assert!(!store_line.trim_end().ends_with(" 0 B"), "{text}");
    assert!(text.contains(&state.display().to_string()), "{text}");

    // A budget the state already fits in keeps everything: the rebuild is cached.
    let p = common::strata(&state).args(["prune", "--keep-storage", "1TiB"]).output().unwrap();
    assert!(p.status.success(), "{}", common::text(&p));
    assert!(build(&state, &ctx).contains("CACHED"));

    // Without a budget everything goes; the next build runs its step again.
    let p = common::strata(&state).arg("prune").output().unwrap();
    let text = common::text(&p);
    assert!(p.status.success(), "{text}");
    assert!(text.contains("Total reclaimed space"), "{text}");
    assert!(!build(&state, &ctx).contains("CACHED"));

    let bad = common::strata(&state).args(["prune", "--keep-storage", "lots"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", common::text(&bad));
}
