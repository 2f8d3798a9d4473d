//! Content checksums of build-context files, reused across builds while a file's
//! inode, size, mtime and ctime are unchanged.
//!
//! The "racily clean" rule (as git's index): a checksum recorded at time T for a file whose
//! mtime or ctime is within [`RACY_WINDOW_NS`] of T is not trusted next time, because a
//! second write in the same timestamp tick would leave every stat field unchanged. Such
//! files are hashed again, so a fast edit is never a stale cache hit.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use strata_oci::{Digest, Hasher};

/// Stat fields closer than this to the time a checksum was recorded make it untrusted.
/// Filesystems with coarse timestamps (ext3, some network filesystems) tick once per
/// second, so one second covers them all.
pub(crate) const RACY_WINDOW_NS: i128 = 1_000_000_000;

/// What a cached checksum is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    ino: u64,
    dev: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    digest: String,
    /// True when the stat fields were too close to the recording time to be trusted.
    racy: bool,
}

/// A persistent map from absolute file path to content digest.
#[derive(Debug, Default)]
pub(crate) struct ChecksumCache {
    path: Option<PathBuf>,
    entries: HashMap<PathBuf, Entry>,
    dirty: bool,
    /// How many files were hashed (not reused) in this process; for tests and progress.
    pub hashed: u64,
    /// How many checksums were reused.
    pub reused: u64,
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

fn stat_ns(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<(PathBuf, Entry)>,
}

const FORMAT_VERSION: u32 = 1;

impl ChecksumCache {
    /// Loads the cache at `path`; a missing or unreadable file is an empty cache
    /// (the cost of a lost cache is re-hashing, never a wrong result).
    pub(crate) fn load(path: &Path) -> Self {
        let mut cache = Self { path: Some(path.to_owned()), ..Self::default() };
        if let Ok(bytes) = std::fs::read(path) {
            match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(d) if d.version == FORMAT_VERSION => {
                    cache.entries = d.entries.into_iter().collect()
                }
                _ => tracing::debug!(path = %path.display(), "ignoring unreadable checksum cache"),
            }
        }
        cache
    }

    /// An in-memory cache that is never saved.
    pub(crate) fn in_memory() -> Self {
        Self::default()
    }

    /// The sha256 of the file at `path` (whose metadata the caller already has).
    pub(crate) fn file_digest(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> io::Result<Digest> {
        let mtime = stat_ns(meta.mtime(), meta.mtime_nsec());
        let ctime = stat_ns(meta.ctime(), meta.ctime_nsec());
        if let Some(e) = self.entries.get(path)
            && !e.racy
            && e.ino == meta.ino()
            && e.dev == meta.dev()
            && e.size == meta.len()
            && e.mtime_ns == mtime
            && e.ctime_ns == ctime
            && let Ok(d) = Digest::parse(&e.digest)
        {
            self.reused += 1;
            return Ok(d);
        }
        let digest = hash_file(path)?;
        self.hashed += 1;
        let recorded = now_ns();
        let racy = recorded - mtime < RACY_WINDOW_NS || recorded - ctime < RACY_WINDOW_NS;
        self.entries.insert(
            path.to_owned(),
            Entry {
                ino: meta.ino(),
                dev: meta.dev(),
                size: meta.len(),
                mtime_ns: mtime,
                ctime_ns: ctime,
                digest: digest.to_string(),
                racy,
            },
        );
        self.dirty = true;
        Ok(digest)
    }

    /// Writes the cache back atomically if it changed. Failure only costs re-hashing
    /// next time, so it is logged, not returned.
    pub(crate) fn save(&mut self) {
        let Some(path) = self.path.clone() else { return };
        if !self.dirty {
            return;
        }
        let disk = OnDisk {
            version: FORMAT_VERSION,
            entries: self.entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let res = (|| -> io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(&mut tmp, &disk)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        match res {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(path = %path.display(), "could not save checksum cache: {e}"),
        }
    }
}

/// Streams a file through sha256.
pub(crate) fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_only_when_not_racy_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"one").unwrap();
        let db = dir.path().join("db.json");
        let mut c = ChecksumCache::load(&db);
        let d1 = c.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        // Just written: racy, so it is hashed again even though nothing changed.
        let d2 = c.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(c.hashed, 2);
        // Age the file beyond the racy window: now a recorded checksum is reused.
        let old = SystemTime::now() - std::time::Duration::from_secs(10);
        File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        // ctime is now "now", so wait out the window for ctime too.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        c.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        c.save();
        let mut c2 = ChecksumCache::load(&db);
        let d3 = c2.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!((c2.reused, c2.hashed), (1, 0));
        assert_eq!(d3, d1);
        // A same-size change with the mtime forced back is still seen through ctime.
        std::fs::write(&f, b"two").unwrap();
        File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        let d4 = c2.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_ne!(d4, d1);
    }
}
