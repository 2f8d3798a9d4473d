//! Smoke test of the harness: the embedded demo builds, exports, imports and verifies.

mod common;

#[test]
fn demo_round_trip_is_all_cached_with_the_same_digest() {
    let t = tempfile::tempdir().unwrap();
    let out = common::strata(&t.path().join("state"))
        .arg("demo")
        .arg(t.path().join("demo"))
        .output()
        .unwrap();
    let s = common::text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("same image digest: true"), "{s}");
    assert!(s.contains("CACHED (from"), "{s}");
}
