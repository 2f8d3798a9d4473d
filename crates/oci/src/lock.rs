//! Waiting, inode-checked `flock` locks.
//!
//! `index.json.lock` is shared with buildx/buildctl. They `TryLock` it (flock, non-blocking),
//! and after use they unlock it and *unlink* it. That unlink breaks naive flock: a waiter that
//! opened the old file can lock an inode that is no longer at the path while a third process
//! creates and locks a new one, so two "holders" run at once. strata therefore checks, after
//! every successful lock, that the locked descriptor's (dev, inode) is still what the path
//! names; if not (or the path is gone) it drops the lock and tries again. strata itself never
//! deletes a lock file, so between strata processes the check always passes.
//!
//! An exclusive holder writes `pid=<pid> host=<hostname>` into the file so that a waiter that
//! gives up can name the holder; it empties the file again before unlocking, so an empty file
//! while locked means a holder that does not identify itself (buildx/buildctl).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result, StoreError};

/// Environment variable that overrides [`default_lock_timeout`], in (fractional) seconds.
pub const LOCK_TIMEOUT_ENV: &str = "STRATA_LOCK_TIMEOUT";

/// The default wait for a lock when `STRATA_LOCK_TIMEOUT` is not set.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The lock timeout to use: `STRATA_LOCK_TIMEOUT` seconds if set and valid, otherwise 60 s.
pub fn default_lock_timeout() -> Duration {
    parse_timeout(std::env::var(LOCK_TIMEOUT_ENV).ok().as_deref())
}

fn parse_timeout(value: Option<&str>) -> Duration {
    let Some(v) = value else { return DEFAULT_LOCK_TIMEOUT };
    match v.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        _ => {
            tracing::warn!(
                "ignoring {LOCK_TIMEOUT_ENV}={v:?}: not a number of seconds; using {}s",
                DEFAULT_LOCK_TIMEOUT.as_secs()
            );
            DEFAULT_LOCK_TIMEOUT
        }
    }
}

/// Shared (many holders) or exclusive (one holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many shared holders may coexist; excludes exclusive holders.
    Shared,
    /// One holder; excludes everyone else.
    Exclusive,
}

/// A held lock. Dropping it releases the lock (the file stays).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    mode: LockMode,
    wrote_holder: bool,
}

impl LockGuard {
    /// Takes the lock on `path` (creating the file if needed), waiting up to `timeout`.
    ///
    /// Polls with a backoff from 1 ms up to 50 ms rather than blocking in `flock`, because a
    /// blocking wait could neither time out nor notice that the file was unlinked.
    pub fn acquire(path: &Path, mode: LockMode, timeout: Duration) -> Result<Self> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            let (file, writable) = open_lock_file(path)?;
            let got = match mode {
                LockMode::Shared => file.try_lock_shared(),
                LockMode::Exclusive => file.try_lock(),
            };
            match got {
                Ok(()) => {
                    if same_inode(&file, path)? {
                        let mut guard =
                            LockGuard { file, path: path.to_owned(), mode, wrote_holder: false };
                        if mode == LockMode::Exclusive && writable {
                            guard.write_holder();
                        }
                        return Ok(guard);
                    }
                    // Locked an inode that was unlinked (BuildKit removes the file after
                    // use): retry at once on whatever the path names now.
                    tracing::debug!(
                        "lock file {} was replaced while locking; retrying",
                        path.display()
                    );
                    drop(file);
                    if start.elapsed() >= timeout {
                        return Err(timeout_error(path, start.elapsed()));
                    }
                    continue;
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(e).ctx("lock", path),
            }
            drop(file);
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(timeout_error(path, waited));
            }
            std::thread::sleep(backoff.min(timeout - waited));
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// Whether the locked file is still the one at the path (see the module docs: a
    /// BuildKit client may unlink it even while strata holds it).
    pub fn is_current(&self) -> Result<bool> {
        same_inode(&self.file, &self.path)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a shared or an exclusive lock.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    fn write_holder(&mut self) {
        // Best effort: the lock is what matters, the note only improves a waiter's message.
        let note = holder_note();
        let res = self
            .file
            .set_len(0)
            .and_then(|()| self.file.seek(io::SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(note.as_bytes()));
        match res {
            Ok(()) => self.wrote_holder = true,
            Err(e) => tracing::debug!("could not note holder in {}: {e}", self.path.display()),
        }
    }

    /// (dev, inode) of the locked file, for tests.
    #[cfg(test)]
    fn file_id(&self) -> (u64, u64) {
        let m = self.file.metadata().unwrap();
        (m.dev(), m.ino())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.wrote_holder {
            // Empty the note before unlocking so it never names a past holder.
            let _ = self.file.set_len(0);
        }
        let _ = self.file.unlock();
    }
}

/// Opens (creating) the lock file read-write, or read-only if the directory is writable by
/// someone else's file we cannot write (flock works on read-only descriptors too).
fn open_lock_file(path: &Path) -> Result<(File, bool)> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
    {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let f = File::open(path).ctx("open lock file", path)?;
            Ok((f, false))
        }
        Err(e) => Err(e).ctx("open lock file", path),
    }
}

/// Whether `file` is still the file at `path`.
fn same_inode(file: &File, path: &Path) -> Result<bool> {
    let held = file.metadata().ctx("stat locked file", path)?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx("stat", path),
    }
}

fn timeout_error(path: &Path, waited: Duration) -> StoreError {
    StoreError::LockTimeout { path: path.to_owned(), waited, holder: read_holder(path) }
}

/// Describes the current holder from the note in the lock file.
fn read_holder(path: &Path) -> String {
    let mut note = String::new();
    let read = File::open(path).and_then(|f| f.take(512).read_to_string(&mut note));
    match read {
        Ok(_) if !note.trim().is_empty() => note.trim().to_owned(),
        Ok(_) => "a process that did not identify itself (buildx/buildctl and shared strata \
                   export leases do not)"
            .to_owned(),
        Err(e) => format!("an unknown process (could not read the lock file: {e})"),
    }
}

/// `pid=<pid> host=<hostname>`.
pub(crate) fn holder_note() -> String {
    format!("pid={} host={}", std::process::id(), hostname())
}

/// This machine's host name (from /proc on Linux; `HOSTNAME` or "unknown" otherwise).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn timeout_setting() {
        assert_eq!(parse_timeout(None), DEFAULT_LOCK_TIMEOUT);
        assert_eq!(parse_timeout(Some(" 2.5 ")), Duration::from_millis(2500));
        assert_eq!(parse_timeout(Some("0")), Duration::ZERO);
        for bad in ["-1", "abc", "inf", "NaN", "1e30"] {
            assert_eq!(parse_timeout(Some(bad)), DEFAULT_LOCK_TIMEOUT, "{bad}");
        }
    }

    #[test]
    fn exclusive_excludes_and_shared_coexist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let s1 = LockGuard::acquire(&p, LockMode::Shared, Duration::ZERO).unwrap();
        let s2 = LockGuard::acquire(&p, LockMode::Shared, Duration::ZERO).unwrap();
        let err =
            LockGuard::acquire(&p, LockMode::Exclusive, Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }), "{err}");
        drop((s1, s2));
        let x = LockGuard::acquire(&p, LockMode::Exclusive, Duration::ZERO).unwrap();
        assert!(LockGuard::acquire(&p, LockMode::Shared, Duration::from_millis(10)).is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), holder_note());
        drop(x);
        // The note is removed on release, and the file is kept.
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }

    #[test]
    fn waits_for_holder_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let held = LockGuard::acquire(&p, LockMode::Exclusive, Duration::ZERO).unwrap();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let g = LockGuard::acquire(&p2, LockMode::Exclusive, Duration::from_secs(10));
            (g.is_ok(), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(150));
        drop(held);
        let (ok, waited) = t.join().unwrap();
        assert!(ok);
        assert!(waited >= Duration::from_millis(140), "did not wait: {waited:?}");
    }

    #[test]
    fn timeout_names_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let _held = LockGuard::acquire(&p, LockMode::Exclusive, Duration::ZERO).unwrap();
        let err =
            LockGuard::acquire(&p, LockMode::Exclusive, Duration::from_millis(50)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid={}", std::process::id())), "{msg}");
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }

    #[test]
    fn foreign_holder_without_note_is_described() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let f = File::create(&p).unwrap();
        f.lock().unwrap();
        let err =
            LockGuard::acquire(&p, LockMode::Exclusive, Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("did not identify itself"), "{err}");
    }

    /// BuildKit's client locks, and after use unlinks the file and unlocks. A strata waiter
    /// must end up holding the lock on the file that is at the path, not on the dead inode.
    #[test]
    fn survives_buildkit_unlink_after_use() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.json.lock");
        let (tx, rx) = mpsc::channel();
        let p2 = p.clone();
        let other = std::thread::spawn(move || {
            let f = OpenOptions::new().create(true).truncate(false).write(true).open(&p2).unwrap();
            f.lock().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            std::fs::remove_file(&p2).unwrap();
            f.unlock().unwrap();
        });
        rx.recv().unwrap();
        // Our first open happens before the unlink, so we wait on the old inode.
        let g = LockGuard::acquire(&p, LockMode::Exclusive, Duration::from_secs(10)).unwrap();
        other.join().unwrap();
        let m = std::fs::metadata(&p).expect("lock file at the path");
        assert_eq!(g.file_id(), (m.dev(), m.ino()));
        assert!(g.is_current().unwrap());
        // And it really excludes a new opener of the path.
        let f = File::open(&p).unwrap();
        assert!(matches!(f.try_lock(), Err(TryLockError::WouldBlock)));
    }
}
