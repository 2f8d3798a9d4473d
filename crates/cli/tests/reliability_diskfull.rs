//! A cache directory on a full filesystem (a 2 MiB tmpfs; needs root to mount, skipped
//! otherwise): an export that does not fit fails with a clear message (exit 1), or is a
//! warning with `ignore-error=true` (exit 0); the version already there stays intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted on a directory, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_small(dir: &Path) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir)
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    if !out.status.success() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "skipped: cannot mount a tmpfs on {} (needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return None;
    }
    Some(Tmpfs(dir.to_owned()))
}

fn build(state: &Path, ctx: &Path, cache_to: &str) -> std::process::Output {
    common::strata(state)
        .args(["build", "--progress", "plain", "--cache-to", cache_to])
        .arg(ctx)
        .output()
        .unwrap()
}

/// Incompressible bytes (gzip cannot shrink them below the tmpfs size).
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn check_intact(state: &Path, dest: &Path, index_before: &[u8]) {
    assert_eq!(std::fs::read(dest.join("index.json")).unwrap(), index_before);
    let out = common::strata(state).args(["cache", "verify"]).arg(dest).output().unwrap();
    assert!(out.status.success(), "the first version no longer verifies:\n{}", common::text(&out));
}

#[test]
fn export_to_a_full_disk_fails_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("small");
    let Some(_mount) = mount_small(&dest) else { return };
    let state = t.path().join("state");
    let ctx = t.path().join("ctx");
    common::write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "small\n")]);
    let to = format!("type=local,dest={},mode=max", dest.display());
    let out = build(&state, &ctx, &to);
    assert!(out.status.success(), "{}", common::text(&out));
    let index_before = std::fs::read(dest.join("index.json")).unwrap();

    // 3 MiB of noise cannot fit in what is left of 2 MiB.
    std::fs::write(ctx.join("f"), noise(3 << 20, 0x9e37_79b9_7f4a_7c15)).unwrap();
    let out = build(&state, &ctx, &to);
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cache export to") && text.contains(&dest.display().to_string()),
        "{text}"
    );
    assert!(text.contains("No space left on device"), "the message must say why: {text}");
    check_intact(&state, &dest, &index_before);

    let out = build(&state, &ctx, &format!("{to},ignore-error=true"));
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("WARN") || text.contains("warning"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    check_intact(&state, &dest, &index_before);
    // The failed exports left no partial data behind.
    let ingest: Vec<_> =
        std::fs::read_dir(dest.join("ingest")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(ingest.is_empty(), "{ingest:?}");
}
