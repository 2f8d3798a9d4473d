//! Writing blobs: stream into a private `ingest/` entry while hashing, check, fsync, and
//! install into `blobs/sha256/<hex>` without ever replacing a good blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StoreError};
use crate::layout::{Layout, fsync_dir};
use crate::stale::{DATA_FILE, create_entry};
use crate::{Descriptor, Digest, Hasher};

/// A blob now present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// `true` if this call stored it, `false` if it was already there.
    pub created: bool,
}

impl BlobInfo {
    /// A descriptor for this blob with the given media type.
    pub fn descriptor(&self, media_type: impl Into<String>) -> Descriptor {
        Descriptor::new(media_type, self.digest.clone(), self.size)
    }
}

/// The outcome of [`Layout::start_blob`].
#[derive(Debug)]
pub enum BlobStart {
    /// The blob is already stored; nothing needs writing.
    Exists(BlobInfo),
    /// Write the content here, then [`BlobWriter::commit`].
    Write(BlobWriter),
}

/// A streaming blob writer (`io::Write`). The data goes to a private ingest entry, hashed
/// on the way; [`BlobWriter::commit`] checks and installs it. Dropping an uncommitted
/// writer removes its ingest entry.
#[derive(Debug)]
pub struct BlobWriter {
    layout: Layout,
    entry: PathBuf,
    out: Option<BufWriter<File>>,
    hasher: Hasher,
    expected: Option<(Digest, u64)>,
}

const WRITE_BUFFER: usize = 256 * 1024;

impl BlobWriter {
    fn data_path(&self) -> PathBuf {
        self.entry.join(DATA_FILE)
    }

    /// The ingest entry this writer uses (for diagnostics).
    pub fn ingest_path(&self) -> &Path {
        &self.entry
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Finishes the blob: flush and fsync the data, check the size and digest against the
    /// expectation (if any), make it read-only (0444), install it at
    /// `blobs/sha256/<hex>`, fsync that directory, and remove the ingest entry.
    ///
    /// Installing uses `link(2)`, which fails rather than replacing an existing file, so a
    /// blob committed concurrently by another writer is never rewritten: this writer then
    /// reports `created: false`. The one exception is an existing file of the wrong size,
    /// which cannot be the blob and is replaced (atomically, by rename).
    pub fn commit(mut self) -> Result<BlobInfo> {
        let data = self.data_path();
        // Always present: only commit (which consumes self) and Drop take it.
        let Some(out) = self.out.take() else {
            return Err(io::Error::other("blob writer already finished")).ctx("commit", &data);
        };
        let file = out.into_inner().map_err(io::IntoInnerError::into_error).ctx("write", &data)?;
        file.sync_all().ctx("fsync", &data)?;
        let size = self.hasher.len();
        let digest = std::mem::take(&mut self.hasher).finish();
        if let Some((expected, expected_size)) = &self.expected
            && (*expected != digest || *expected_size != size)
        {
            return Err(StoreError::CommitMismatch {
                expected: expected.clone(),
                expected_size: *expected_size,
                actual: digest,
                actual_size: size,
            });
        }
        // Read-only before it becomes visible under blobs/, so it never is writable there.
        file.set_permissions(fs::Permissions::from_mode(0o444)).ctx("chmod", &data)?;
        drop(file);
        let created = install(&self.layout, &data, &digest, size)?;
        // Drop removes the ingest entry.
        Ok(BlobInfo { digest, size, created })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((digest, size)) = &self.expected
            && self.hasher.len() + buf.len() as u64 > *size
        {
            // Fail early instead of filling the disk with a blob that cannot commit.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the expected {size} bytes written for blob {digest}"),
            ));
        }
        let out =
            self.out.as_mut().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        drop(self.out.take());
        if let Err(e) = fs::remove_dir_all(&self.entry)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove ingest entry {}: {e}", self.entry.display());
        }
    }
}

/// Puts the committed, read-only file `src` at `blobs/sha256/<hex>` without replacing a
/// correct existing blob. Returns whether it created the blob.
fn install(layout: &Layout, src: &Path, digest: &Digest, size: u64) -> Result<bool> {
    let dir = layout.ensure_blob_dir()?;
    let target = dir.join(digest.hex());
    match fs::hard_link(src, &target) {
        Ok(()) => {
            fsync_dir(&dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() && m.len() == size => Ok(false),
            _ => {
                tracing::warn!(
                    "replacing {}: not a {size}-byte file, so it cannot be blob {digest}",
                    target.display()
                );
                fs::rename(src, &target).ctx("rename into place", &target)?;
                fsync_dir(&dir)?;
                Ok(true)
            }
        },
        Err(e) => {
            // Filesystems without hard links: rename (which would replace a concurrent
            // identical blob; harmless, since both have the same bytes).
            tracing::debug!("hard link into {} failed ({e}); renaming", dir.display());
            if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size) {
                return Ok(false);
            }
            fs::rename(src, &target).ctx("rename into place", &target)?;
            fsync_dir(&dir)?;
            Ok(true)
        }
    }
}

impl Layout {
    /// Starts writing a blob. `expected` (digest, size), when known, is checked on commit
    /// and bounds the bytes accepted.
    pub fn blob_writer(&self, expected: Option<(&Digest, u64)>) -> Result<BlobWriter> {
        let entry = create_entry(self)?;
        let data = entry.join(DATA_FILE);
        let file = match OpenOptions::new().write(true).create_new(true).open(&data) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir_all(&entry);
                return Err(e).ctx("create", &data);
            }
        };
        Ok(BlobWriter {
            layout: self.clone(),
            entry,
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            hasher: Hasher::new(),
            expected: expected.map(|(d, s)| (d.clone(), s)),
        })
    }

    /// Like [`Layout::blob_writer`] for a known digest, but first checks whether the blob
    /// is already stored, in which case nothing needs writing.
    pub fn start_blob(&self, digest: &Digest, size: u64) -> Result<BlobStart> {
        if self.stat_blob(digest)? == Some(size) {
            return Ok(BlobStart::Exists(BlobInfo {
                digest: digest.clone(),
                size,
                created: false,
            }));
        }
        self.blob_writer(Some((digest, size))).map(BlobStart::Write)
    }

    /// Stores a small in-memory blob (manifest, config).
    pub fn write_blob(&self, data: &[u8]) -> Result<BlobInfo> {
        let digest = Digest::of_bytes(data);
        match self.start_blob(&digest, data.len() as u64)? {
            BlobStart::Exists(info) => Ok(info),
            BlobStart::Write(mut w) => {
                w.write_all(data).ctx("write", &w.data_path())?;
                w.commit()
            }
        }
    }

    /// Streams `reader` into the store. With `expected`, an already stored blob is not
    /// read at all, and a mismatch fails without storing anything.
    pub fn ingest_reader(
        &self,
        mut reader: impl Read,
        expected: Option<(&Digest, u64)>,
    ) -> Result<BlobInfo> {
        let mut w = match expected {
            Some((d, s)) => match self.start_blob(d, s)? {
                BlobStart::Exists(info) => return Ok(info),
                BlobStart::Write(w) => w,
            },
            None => self.blob_writer(None)?,
        };
        io::copy(&mut reader, &mut w).ctx("copy into", &w.data_path())?;
        w.commit()
    }

    /// Stores the blob at `src` (normally another layout's `blobs/sha256/<hex>`).
    ///
    /// If `src` is a read-only regular file of the right size (a committed blob), it is
    /// hard-linked: instant and no extra space, trusting the source store's commit-time
    /// verification. Otherwise (other filesystem, writable source, no link support) it is
    /// copied through the ingest path, which verifies digest and size.
    pub fn link_or_copy_blob(&self, src: &Path, digest: &Digest, size: u64) -> Result<BlobInfo> {
        let info = |created| BlobInfo { digest: digest.clone(), size, created };
        if self.stat_blob(digest)? == Some(size) {
            return Ok(info(false));
        }
        let meta = match fs::metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound {
                    digest: digest.clone(),
                    path: src.to_owned(),
                });
            }
            Err(e) => return Err(e).ctx("stat", src),
        };
        if meta.is_file() && meta.len() == size && meta.mode() & 0o222 == 0 {
            let dir = self.ensure_blob_dir()?;
            let target = dir.join(digest.hex());
            match fs::hard_link(src, &target) {
                Ok(()) => {
                    fsync_dir(&dir)?;
                    return Ok(info(true));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if self.stat_blob(digest)? == Some(size) {
                        return Ok(info(false));
                    }
                }
                Err(e) => tracing::debug!("cannot link {} ({e}); copying", src.display()),
            }
        }
        let file = File::open(src).ctx("open", src)?;
        self.ingest_reader(file, Some((digest, size)))
    }

    /// Stores blob `digest` from another layout (see [`Layout::link_or_copy_blob`]).
    pub fn import_blob_from(&self, src: &Layout, digest: &Digest) -> Result<BlobInfo> {
        let path = src.blob_path(digest);
        let size = src.stat_blob(digest)?.ok_or_else(|| StoreError::BlobNotFound {
            digest: digest.clone(),
            path: path.clone(),
        })?;
        self.link_or_copy_blob(&path, digest, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        (dir, l)
    }

    fn ingest_is_empty(l: &Layout) -> bool {
        fs::read_dir(l.ingest_dir()).map(|mut r| r.next().is_none()).unwrap_or(true)
    }

    #[test]
    fn streamed_write_commits_read_only() {
        let (_d, l) = layout();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = l.blob_writer(None).unwrap();
        assert!(w.ingest_path().file_name().unwrap().to_str().unwrap().starts_with("strata-"));
        for chunk in data.chunks(4097) {
            w.write_all(chunk).unwrap();
        }
        let info = w.commit().unwrap();
        assert_eq!(info.digest, Digest::of_bytes(&data));
        assert_eq!(info.size, data.len() as u64);
        assert!(info.created);
        let path = l.blob_path(&info.digest);
        assert_eq!(fs::read(&path).unwrap(), data);
        let m = fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o444);
        assert_eq!(m.nlink(), 1, "ingest link removed");
        assert!(ingest_is_empty(&l));
        // Writing it again is success without rewriting (same inode).
        let again = l.write_blob(&data).unwrap();
        assert!(!again.created);
        assert_eq!(fs::metadata(&path).unwrap().ino(), m.ino());
        // Even through an unconditional writer racing a commit.
        let mut w = l.blob_writer(None).unwrap();
        w.write_all(&data).unwrap();
        assert!(!w.commit().unwrap().created);
        assert_eq!(fs::metadata(&path).unwrap().ino(), m.ino());
        assert!(ingest_is_empty(&l));
    }

    #[test]
    fn mismatches_store_nothing() {
        let (_d, l) = layout();
        let want = Digest::of_bytes(b"hello");
        let err = l.ingest_reader(&b"hellO"[..], Some((&want, 5))).unwrap_err();
        assert!(matches!(err, StoreError::CommitMismatch { .. }), "{err}");
        assert!(err.to_string().contains(want.as_str()));
        let err = l.ingest_reader(&b"hell"[..], Some((&want, 5))).unwrap_err();
        assert!(err.to_string().contains("4 bytes"), "{err}");
        // Too many bytes fail during the write already.
        let err = l.ingest_reader(&b"hello world"[..], Some((&want, 5))).unwrap_err();
        assert!(err.to_string().contains("more than the expected 5 bytes"), "{err}");
        assert_eq!(l.stat_blob(&want).unwrap(), None);
        assert!(ingest_is_empty(&l));
    }

    #[test]
    fn dropped_writer_cleans_up() {
        let (_d, l) = layout();
        let mut w = l.blob_writer(None).unwrap();
        w.write_all(b"partial").unwrap();
        let entry = w.ingest_path().to_owned();
        assert!(entry.join("owner").exists());
        drop(w);
        assert!(!entry.exists());
    }

    #[test]
    fn existing_blob_is_not_read_again() {
        let (_d, l) = layout();
        let info = l.write_blob(b"abc").unwrap();
        struct Boom;
        impl Read for Boom {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("reader must not be used for an existing blob")
            }
        }
        let again = l.ingest_reader(Boom, Some((&info.digest, 3))).unwrap();
        assert!(!again.created);
        assert!(matches!(l.start_blob(&info.digest, 3).unwrap(), BlobStart::Exists(_)));
    }

    #[test]
    fn wrong_size_file_at_blob_path_is_replaced() {
        let (_d, l) = layout();
        let d = Digest::of_bytes(b"right");
        fs::write(l.blob_path(&d), b"wrong!!").unwrap();
        let info = l.write_blob(b"right").unwrap();
        assert!(info.created);
        assert_eq!(fs::read(l.blob_path(&d)).unwrap(), b"right");
    }

    #[test]
    fn link_or_copy_between_layouts() {
        let (_d1, a) = layout();
        let (_d2, b) = layout();
        let info = a.write_blob(b"shared content").unwrap();
        let got = b.import_blob_from(&a, &info.digest).unwrap();
        assert!(got.created);
        let (ma, mb) = (
            fs::metadata(a.blob_path(&info.digest)).unwrap(),
            fs::metadata(b.blob_path(&info.digest)).unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino(), "same filesystem: hard link");
        assert!(!b.import_blob_from(&a, &info.digest).unwrap().created);

        // A writable (uncommitted-looking) source is copied and verified.
        let (_d3, c) = layout();
        let loose = _d3.path().join("loose");
        fs::write(&loose, b"shared content").unwrap();
        let got = c.link_or_copy_blob(&loose, &info.digest, info.size).unwrap();
        assert!(got.created);
        assert_ne!(
            fs::metadata(c.blob_path(&info.digest)).unwrap().ino(),
            fs::metadata(&loose).unwrap().ino()
        );
        fs::write(&loose, b"SHARED CONTENT").unwrap();
        let (_d4, e) = layout();
        assert!(matches!(
            e.link_or_copy_blob(&loose, &info.digest, info.size).unwrap_err(),
            StoreError::CommitMismatch { .. }
        ));
        let missing = e.import_blob_from(&a, &Digest::of_bytes(b"nope")).unwrap_err();
        assert!(matches!(missing, StoreError::BlobNotFound { .. }));
    }
}
