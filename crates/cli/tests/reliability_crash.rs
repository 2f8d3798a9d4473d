//! SIGKILL `strata build --cache-to` at random moments and check after every kill that the
//! cache directory is never broken: `index.json` parses and everything it (and every
//! other manifest in `blobs/`) references verifies, no blob is partial, and the state
//! directory still builds. At the end, prune reclaims what the dead writers left.
//!
//! As root the cache lives on its own tmpfs, so blobs are copied (through `ingest/`)
//! rather than hard-linked from the state directory, which makes the export take long
//! enough to be hit; otherwise it runs on the same filesystem.

#![allow(clippy::print_stderr)] // the seed and kill statistics are the diagnostics of a failure

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_cache::gc::{PrunePolicy, prune};
use strata_cache::verify::verify;
use strata_oci::Layout;

const ITERATIONS: usize = 50;
/// Upper bound of the random delay before an untargeted kill; a build here takes ~100 ms.
const MAX_DELAY_MS: u64 = 120;

/// xorshift64*: a few random numbers without a dependency; the seed is printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8)).flat_map(|_| self.next().to_le_bytes()).take(n).collect()
    }
}

/// A tmpfs mounted on a directory, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn build_cmd(state: &Path, ctx: &Path, dest: &Path, compression: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("strata"));
    c.env("STRATA_ROOT", state)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "--progress", "plain", "--cache-to"])
        .arg(format!("type=local,dest={},mode=max,compression={compression}", dest.display()))
        .arg(ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The invariants a kill must never break.
fn check_cache(dest: &Path, when: &str) {
    if !dest.join("blobs").exists() && !dest.join("index.json").exists() {
        return; // killed before the export wrote anything
    }
    let layout = Layout::open(dest).unwrap();
    // index.json, when present, is complete (a rename, never an in-place rewrite).
    if dest.join("index.json").exists() {
        layout.read_index().unwrap_or_else(|e| panic!("{when}: index.json broken: {e}"));
    }
    // Every blob hashes to its name, and every version (tagged or not) is complete.
    let walk = layout.walk_blobs().unwrap();
    assert!(walk.skipped.is_empty(), "{when}: stray files in blobs/: {:?}", walk.skipped);
    let report = verify(&layout, true).unwrap();
    assert!(report.ok(), "{when}: verify found problems: {:#?}", report.problems);
}

#[test]
fn sigkill_during_export_never_breaks_the_cache() {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let ctx = work.path().join("ctx");
    let dest = work.path().join("cache");
    let _mount = if is_root() { Tmpfs::mount(&dest, "256m") } else { None };
    eprintln!("cache on its own tmpfs: {}", _mount.is_some());
    common::write_files(
        &ctx,
        &[("Dockerfile", "FROM scratch\nCOPY big.bin /big\nCOPY n.txt /n\n")],
    );

    let (mut killed_running, mut killed_exporting) = (0, 0);
    for i in 0..ITERATIONS {
        // New content every time, so every build has a new 2 MiB layer to export.
        std::fs::write(ctx.join("big.bin"), rng.bytes(2 << 20)).unwrap();
        std::fs::write(ctx.join("n.txt"), format!("{i}\n")).unwrap();
        let compression = if i % 3 == 0 { "zstd" } else { "gzip" };
        let mut child = build_cmd(&state, &ctx, &dest, compression).spawn().unwrap();
        // Read the progress log as it comes, to aim half of the kills at the export.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("exporting cache") {
                    let _ = tx.send(());
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(rng.next() % MAX_DELAY_MS));
        } else {
            let _ = rx.recv_timeout(Duration::from_secs(10));
            // The export itself takes a few ms.
            std::thread::sleep(Duration::from_micros(rng.next() % 6_000));
        }
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let log = reader.join().unwrap();
        // The progress log says how far it got: exporting, but not yet done.
        if log.contains("exporting cache") && !log.contains(": manifest sha256:") {
            killed_exporting += 1;
        }
        let when = format!("iteration {i} (seed {seed})");
        check_cache(&dest, &when);
        // The state directory survives too: the same build, uninterrupted, succeeds.
        let out = build_cmd(&state, &ctx, &dest, compression).output().unwrap();
        assert!(
            out.status.success(),
            "{when}: build after the kill failed:\n{}",
            common::text(&out)
        );
        check_cache(&dest, &format!("{when}, after the rebuild"));
    }
    eprintln!(
        "{killed_running} of {ITERATIONS} builds were killed while running, \
         {killed_exporting} of them while exporting"
    );

    // Leftovers of the dead writers: ingest entries and blobs no index entry reaches.
    let layout = Layout::open(&dest).unwrap();
    let tagged = layout.read_index().unwrap().unwrap().manifests.len();
    assert_eq!(tagged, 1, "every build wrote tag latest");
    // Unreferenced blobs are only removed after a grace period (a buildx export in
    // flight takes no lease), and so are ingest entries killed before their owner file
    // was written (a minute); pretend both passed. Entries whose owner is known dead go
    // at once anyway.
    age_blobs(&dest);
    age_ingests(&dest);
    let report =
        prune(&layout, &PrunePolicy::reset(vec![]), false, Duration::from_secs(30)).unwrap();
    eprintln!(
        "prune: {} blobs ({} bytes), {} ingest entries",
        report.removed_blobs,
        report.removed_bytes,
        report.removed_ingests.len()
    );
    assert_eq!(report.kept_recent_orphans, 0);
    let ingest: Vec<_> =
        std::fs::read_dir(dest.join("ingest")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(ingest.is_empty(), "ingest entries of dead writers left: {ingest:?}");
    let after = verify(&layout, true).unwrap();
    assert!(after.ok(), "{:#?}", after.problems);
    assert_eq!(after.unreferenced_blobs, 0, "prune left unreferenced blobs");
    assert_eq!(after.manifests, 1, "only the tagged version is left");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    })
}

/// Sets the mtimes of every ingest entry and its files two minutes back.
fn age_ingests(dest: &Path) {
    let old = SystemTime::now() - Duration::from_secs(120);
    let Ok(entries) = std::fs::read_dir(dest.join("ingest")) else { return };
    for e in entries {
        let dir = e.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        }
        std::fs::File::open(&dir).unwrap().set_modified(old).unwrap();
    }
}

/// Sets every blob's mtime two hours back.
fn age_blobs(dest: &Path) {
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for e in std::fs::read_dir(dest.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        // Blobs are 0444; opening one for writing (to set its times) needs a chmod.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(two_hours_ago).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
}
