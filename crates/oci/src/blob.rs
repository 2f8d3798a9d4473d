//! Reading, verifying, walking and deleting committed blobs.
//!
//! Like containerd, plain reads return the file's bytes as they are; callers that need the
//! content checked use [`VerifyingReader`] or [`Layout::verify_blob`].

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{IoContext, Result, StoreError};
use crate::layout::{Layout, fsync_dir};
use crate::{Digest, Hasher};

/// Why a blob fails verification.
#[derive(Debug, thiserror::Error)]
pub enum BlobProblem {
    /// No file at the blob's path.
    #[error("blob {digest} is missing: {path} does not exist")]
    Missing {
        /// The blob.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// The file has the wrong length (truncated, or not this blob).
    #[error("blob {digest} at {path} is {actual} bytes, expected {expected}")]
    WrongSize {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// The expected size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// The content does not hash to the name.
    #[error("blob {digest} at {path} is corrupt: its content hashes to {actual}")]
    WrongDigest {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// What the content hashes to.
        actual: Digest,
    },
    /// The file exists but cannot be read.
    #[error("blob {digest} at {path} cannot be read: {source}")]
    Unreadable {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A reader over a blob that hashes as it goes and fails at EOF (with
/// `io::ErrorKind::InvalidData`, wrapping a [`BlobProblem`]) if the digest or the expected
/// size does not match; it fails as soon as the size is exceeded. Whoever consumes the
/// stream to EOF therefore never silently accepts corrupt content.
#[derive(Debug)]
pub struct VerifyingReader {
    file: File,
    path: PathBuf,
    digest: Digest,
    expected_size: Option<u64>,
    hasher: Hasher,
    verified: bool,
}

impl VerifyingReader {
    fn problem(&self, p: BlobProblem) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, p)
    }

    fn wrong_size(&self, actual: u64, expected: u64) -> io::Error {
        self.problem(BlobProblem::WrongSize {
            digest: self.digest.clone(),
            path: self.path.clone(),
            expected,
            actual,
        })
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 {
            if buf.is_empty() || self.verified {
                return Ok(0);
            }
            let len = self.hasher.len();
            if let Some(expected) = self.expected_size
                && len != expected
            {
                return Err(self.wrong_size(len, expected));
            }
            let actual = self.hasher.clone().finish();
            if actual != self.digest {
                return Err(self.problem(BlobProblem::WrongDigest {
                    digest: self.digest.clone(),
                    path: self.path.clone(),
                    actual,
                }));
            }
            self.verified = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        if let Some(expected) = self.expected_size
            && self.hasher.len() > expected
        {
            return Err(self.wrong_size(self.hasher.len(), expected));
        }
        Ok(n)
    }
}

/// One committed blob found by [`Layout::walk_blobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Its digest (from the file name; not re-hashed).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its modification time (≈ commit time).
    pub modified: Option<SystemTime>,
}

/// Something under `blobs/` that is not a sha256 blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// Its path.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: &'static str,
}

/// The result of [`Layout::walk_blobs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobWalk {
    /// The blobs, sorted by digest.
    pub blobs: Vec<BlobEntry>,
    /// Entries that were skipped and why (unknown algorithms, non-digest names, non-files).
    pub skipped: Vec<SkippedEntry>,
}

impl BlobWalk {
    /// Total size of all blobs.
    pub fn total_size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

impl Layout {
    /// `blobs/sha256/<hex>` for a digest. The digest type is validated, so this never
    /// leaves `blobs/sha256`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// The size of a stored blob, or `None` if it is absent (or not a regular file).
    pub fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("stat", &path),
        }
    }

    /// Opens a blob for reading (unverified).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound { digest: digest.clone(), path })
            }
            Err(e) => Err(e).ctx("open blob", &path),
        }
    }

    /// Reads a whole blob of at most `limit` bytes (manifests, configs), unverified.
    pub fn read_blob_limited(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let file = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let size = file.metadata().ctx("stat", &path)?.len();
        let too_large = |size| StoreError::BlobTooLarge {
            digest: digest.clone(),
            path: path.clone(),
            size,
            limit,
        };
        if size > limit {
            return Err(too_large(size));
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // take(limit + 1) guards against a file that grows after the stat.
        file.take(limit.saturating_add(1)).read_to_end(&mut buf).ctx("read", &path)?;
        if buf.len() as u64 > limit {
            return Err(too_large(buf.len() as u64));
        }
        Ok(buf)
    }

    /// Opens a blob for reading with verification at EOF (see [`VerifyingReader`]).
    pub fn open_verified(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<VerifyingReader> {
        let file = self.open_blob(digest)?;
        Ok(VerifyingReader {
            file,
            path: self.blob_path(digest),
            digest: digest.clone(),
            expected_size,
            hasher: Hasher::new(),
            verified: false,
        })
    }

    /// Checks that a blob is present, has `expected_size` (if given; checked before
    /// hashing, which is cheap) and hashes to its digest.
    pub fn verify_blob(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<(), BlobProblem> {
        let path = self.blob_path(digest);
        let unreadable =
            |source| BlobProblem::Unreadable { digest: digest.clone(), path: path.clone(), source };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobProblem::Missing { digest: digest.clone(), path });
            }
            Err(e) => return Err(unreadable(e)),
        };
        let len = file.metadata().map_err(unreadable)?.len();
        if let Some(expected) = expected_size
            && len != expected
        {
            return Err(BlobProblem::WrongSize {
                digest: digest.clone(),
                path,
                expected,
                actual: len,
            });
        }
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unreadable(e)),
            }
        }
        if let Some(expected) = expected_size
            && hasher.len() != expected
        {
            return Err(BlobProblem::WrongSize {
                digest: digest.clone(),
                path,
                expected,
                actual: hasher.len(),
            });
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(BlobProblem::WrongDigest { digest: digest.clone(), path, actual });
        }
        Ok(())
    }

    /// Lists every blob under `blobs/sha256`, reporting (not failing on) unknown algorithm
    /// directories, names that are not digests, and non-files. A missing `blobs/` is empty.
    pub fn walk_blobs(&self) -> Result<BlobWalk> {
        let mut walk = BlobWalk::default();
        let blobs = self.root().join("blobs");
        for (path, name) in list_dir(&blobs)? {
            if name != Digest::ALGORITHM {
                walk.skipped.push(SkippedEntry { path, reason: "unknown digest algorithm" });
                continue;
            }
            if !fs::symlink_metadata(&path).ctx("stat", &path)?.is_dir() {
                walk.skipped.push(SkippedEntry { path, reason: "not a directory" });
            }
        }
        for (path, name) in list_dir(&self.blob_dir())? {
            let Ok(digest) = Digest::parse(&format!("{}:{name}", Digest::ALGORITHM)) else {
                walk.skipped.push(SkippedEntry { path, reason: "name is not a sha256 digest" });
                continue;
            };
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Deleted while walking.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("stat", &path),
            };
            if !meta.is_file() {
                walk.skipped.push(SkippedEntry { path, reason: "not a regular file" });
                continue;
            }
            walk.blobs.push(BlobEntry { digest, size: meta.len(), modified: meta.modified().ok() });
        }
        walk.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(walk)
    }

    /// Deletes a blob; `Ok(false)` if it was not there. The caller must hold
    /// [`Layout::gc_lock`] if exports may run concurrently.
    pub fn delete_blob(&self, digest: &Digest) -> Result<bool> {
        let removed = self.delete_blob_unsynced(digest)?;
        if removed {
            self.sync_blob_dir()?;
        }
        Ok(removed)
    }

    /// Deletes a blob without syncing `blobs/sha256`; for sweeps that delete many and then
    /// call [`Layout::sync_blob_dir`] once (a crash before the sync can only bring garbage
    /// back, never lose a kept blob).
    pub fn delete_blob_unsynced(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx("delete blob", &path),
        }
    }

    /// Makes earlier blob deletions durable.
    pub fn sync_blob_dir(&self) -> Result<()> {
        fsync_dir(&self.blob_dir())
    }
}

/// (path, UTF-8 name) of a directory's entries; empty if it does not exist. Non-UTF-8
/// names cannot be digests or known algorithms and are returned lossily.
fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("list", dir),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.ctx("list", dir)?;
        out.push((ent.path(), ent.file_name().to_string_lossy().into_owned()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        (dir, l)
    }

    /// Overwrites a committed (read-only) blob's content, simulating disk corruption.
    fn corrupt(l: &Layout, d: &Digest, bytes: &[u8]) {
        let p = l.blob_path(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, bytes).unwrap();
    }

    #[test]
    fn reads_and_limits() {
        let (_d, l) = layout();
        let info = l.write_blob(b"{\"a\":1}").unwrap();
        assert_eq!(l.stat_blob(&info.digest).unwrap(), Some(7));
        assert_eq!(l.read_blob_limited(&info.digest, 7).unwrap(), b"{\"a\":1}");
        let err = l.read_blob_limited(&info.digest, 6).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("7 bytes") && msg.contains("limit of 6"), "{msg}");
        let missing = Digest::of_bytes(b"nope");
        assert_eq!(l.stat_blob(&missing).unwrap(), None);
        let err = l.open_blob(&missing).unwrap_err();
        assert!(err.to_string().contains(missing.hex()), "{err}");
        assert!(matches!(err, StoreError::BlobNotFound { .. }));
    }

    #[test]
    fn verify_distinguishes_problems() {
        let (_d, l) = layout();
        let info = l.write_blob(b"content").unwrap();
        l.verify_blob(&info.digest, Some(7)).unwrap();
        l.verify_blob(&info.digest, None).unwrap();
        assert!(matches!(
            l.verify_blob(&Digest::of_bytes(b"x"), None),
            Err(BlobProblem::Missing { .. })
        ));
        assert!(matches!(
            l.verify_blob(&info.digest, Some(8)),
            Err(BlobProblem::WrongSize { expected: 8, actual: 7, .. })
        ));
        corrupt(&l, &info.digest, b"CONTENT");
        match l.verify_blob(&info.digest, Some(7)) {
            Err(BlobProblem::WrongDigest { actual, .. }) => {
                assert_eq!(actual, Digest::of_bytes(b"CONTENT"))
            }
            other => panic!("{other:?}"),
        }
        // A directory where a blob should be cannot be read.
        let d = Digest::of_bytes(b"dir");
        fs::create_dir(l.blob_path(&d)).unwrap();
        assert!(matches!(l.verify_blob(&d, None), Err(BlobProblem::Unreadable { .. })));
    }

    #[test]
    fn verifying_reader_fails_at_eof() {
        let (_d, l) = layout();
        let data = vec![7u8; 300_000];
        let info = l.write_blob(&data).unwrap();
        let mut out = Vec::new();
        l.open_verified(&info.digest, Some(info.size)).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, data);

        let mut r = l.open_verified(&info.digest, Some(info.size - 1)).unwrap();
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut bad = data.clone();
        bad[1000] = 8;
        corrupt(&l, &info.digest, &bad);
        let mut r = l.open_verified(&info.digest, Some(info.size)).unwrap();
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn walk_reports_odd_entries_and_delete() {
        let (_d, l) = layout();
        let a = l.write_blob(b"a").unwrap();
        let b = l.write_blob(b"bb").unwrap();
        fs::create_dir_all(l.root().join("blobs/sha512")).unwrap();
        fs::write(l.blob_dir().join("not-a-digest"), b"").unwrap();
        fs::write(l.blob_dir().join("A".repeat(64)), b"").unwrap();
        let w = l.walk_blobs().unwrap();
        let mut want = vec![a.digest.clone(), b.digest.clone()];
        want.sort();
        assert_eq!(w.blobs.iter().map(|e| e.digest.clone()).collect::<Vec<_>>(), want);
        assert_eq!(w.total_size(), 3);
        assert_eq!(w.skipped.len(), 3, "{:?}", w.skipped);
        assert!(w.skipped.iter().any(|s| s.reason == "unknown digest algorithm"));
        assert!(l.delete_blob(&a.digest).unwrap());
        assert!(!l.delete_blob(&a.digest).unwrap());
        assert_eq!(l.walk_blobs().unwrap().blobs.len(), 1);
        // An empty directory walks as empty.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(Layout::open(empty.path()).unwrap().walk_blobs().unwrap(), BlobWalk::default());
    }
}
