//! A state-store blob that went bad (edited in place through a hard link shared with a
//! cache dir) fails the export that copies it, is dropped from the state directory, and
//! the next build recreates it instead of failing the same way forever.

#![allow(clippy::print_stderr)] // A skipped test says why.

mod common;

use std::os::unix::fs::MetadataExt;

#[test]
fn corrupt_state_blob_is_dropped_and_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    // The second cache must be on another filesystem, so the export copies (and verifies)
    // the state blob instead of hard-linking it.
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir()
        || std::fs::metadata(shm).unwrap().dev() == std::fs::metadata(t.path()).unwrap().dev()
    {
        eprintln!("skipped: needs /dev/shm on another filesystem than the temp dir");
        return;
    }
    let other = tempfile::tempdir_in(shm).unwrap();
    let ctx = t.path().join("ctx");
    let data: Vec<u8> =
        (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), &data).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let state = t.path().join("state");
    let c1 = t.path().join("c1");
    let c2 = other.path().join("c2");
    let build = |dest: &std::path::Path| {
        common::strata(&state)
            .args(["build", "--progress", "plain", "--cache-to"])
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&ctx)
            .output()
            .unwrap()
    };
    let out = build(&c1);
    assert!(out.status.success(), "{}", common::text(&out));
    // Flip a byte of the layer blob in c1: it shares its inode with the state store's copy.
    let blobs = c1.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&layer, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&layer, &bytes).unwrap();

    let out = build(&c2);
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("removed from the state directory"), "{text}");
    // The next build re-runs the step (its layer is gone) and the export succeeds.
    let out = build(&c2);
    let text = common::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("CACHED"), "{text}");
    let v = common::strata(&state).args(["cache", "verify"]).arg(&c2).output().unwrap();
    assert!(v.status.success(), "{}", common::text(&v));
}
