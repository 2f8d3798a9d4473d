//! The layout directory: opening, creating, `oci-layout`, `index.json` and the store locks.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result, StoreError};
use crate::index::Index;
use crate::lock::{LockGuard, LockMode};

/// `index.json`.
pub const INDEX_FILE: &str = "index.json";
/// The lock file buildx/buildctl and strata take around `index.json` updates.
pub const INDEX_LOCK_FILE: &str = "index.json.lock";
/// `oci-layout`.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The exact bytes Go's `json.Marshal(ocispecs.ImageLayout{Version:"1.0.0"})` produces.
pub const OCI_LAYOUT_BYTES: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// strata's private store-wide lock for garbage collection (see [`Layout::export_lease`]).
///
/// It lives at the layout root rather than under `ingest/`, because containerd lists
/// `ingest/` entries as ingest directories and a plain file there could confuse it.
/// BuildKit never looks at other root files.
pub const GC_LOCK_FILE: &str = ".strata-gc.lock";

/// An OCI image layout directory (a BuildKit `type=local` cache).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens an existing layout without writing anything.
    ///
    /// `path` must exist and be a directory. `oci-layout` is optional (BuildKit v0.11 did
    /// not write it), and so are `index.json` and `blobs/`. The root is canonicalised, so
    /// [`Layout::root`] reports where the data really lives when `path` goes through
    /// symlinks.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::LayoutMissing { path: path.to_owned() });
            }
            Err(e) => return Err(e).ctx("stat layout", path),
        };
        if !meta.is_dir() {
            return Err(StoreError::NotADirectory { path: path.to_owned() });
        }
        let root = fs::canonicalize(path).ctx("resolve layout path", path)?;
        if root != path {
            tracing::debug!("layout {} resolves to {}", path.display(), root.display());
        }
        // blobs/ pointing elsewhere works for reads, but commits (link/rename from
        // ingest/) fail across filesystems and deletes act outside the layout: say so.
        if let Ok(blobs) = fs::canonicalize(root.join("blobs"))
            && !blobs.starts_with(&root)
        {
            tracing::warn!(
                "{}/blobs resolves outside the layout, to {}",
                root.display(),
                blobs.display()
            );
        }
        Ok(Self { root })
    }

    /// Opens a layout, creating it if needed: `mkdir -p` the root (0755), `blobs/sha256`
    /// (0755), and `oci-layout` (written atomically, only if absent or different).
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        DirBuilder::new().recursive(true).mode(0o755).create(path).ctx("create layout", path)?;
        let layout = Self::open(path)?;
        layout.ensure_blob_dir()?;
        layout.ensure_oci_layout()?;
        Ok(layout)
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/index.json`.
    pub fn index_path(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    /// `<root>/index.json.lock`.
    pub fn index_lock_path(&self) -> PathBuf {
        self.root.join(INDEX_LOCK_FILE)
    }

    /// `<root>/.strata-gc.lock`.
    pub fn gc_lock_path(&self) -> PathBuf {
        self.root.join(GC_LOCK_FILE)
    }

    /// `<root>/blobs/sha256`.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join(crate::Digest::ALGORITHM)
    }

    /// `<root>/ingest`.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn ensure_blob_dir(&self) -> Result<PathBuf> {
        let dir = self.blob_dir();
        DirBuilder::new().recursive(true).mode(0o755).create(&dir).ctx("create", &dir)?;
        Ok(dir)
    }

    /// The `imageLayoutVersion` from `oci-layout`, or `None` when the file is absent (as in
    /// caches written by BuildKit v0.11).
    pub fn oci_layout_version(&self) -> Result<Option<String>> {
        let path = self.root.join(OCI_LAYOUT_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("read", &path),
        };
        #[derive(serde::Deserialize)]
        struct ImageLayout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let parsed: ImageLayout = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::IndexCorrupt { path: path.clone(), source })?;
        Ok(Some(parsed.version))
    }

    /// Writes `oci-layout` unless it already holds exactly [`OCI_LAYOUT_BYTES`].
    pub fn ensure_oci_layout(&self) -> Result<()> {
        let path = self.root.join(OCI_LAYOUT_FILE);
        match fs::read(&path) {
            Ok(b) if b == OCI_LAYOUT_BYTES => return Ok(()),
            Ok(_) => tracing::debug!("rewriting {}: unexpected content", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("read", &path),
        }
        write_atomic(&self.root, OCI_LAYOUT_FILE, OCI_LAYOUT_BYTES)
    }

    /// Reads `index.json` without locking.
    ///
    /// Returns `Ok(None)` when there is no `index.json` (an empty or new cache), and an
    /// error naming the file when it exists but is not a valid index. Reading without the
    /// lock is safe against strata writers because they replace the file by rename; a
    /// BuildKit writer rewrites in place, so a read racing one may see a torn file and
    /// report it as corrupt. Never creates the lock file, so read-only caches work.
    pub fn read_index(&self) -> Result<Option<Index>> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("read", &path),
        };
        Index::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::IndexCorrupt { path, source })
    }

    /// Takes the `index.json.lock` flock exclusively, waiting up to `timeout`.
    ///
    /// [`Layout::update_index`] does this itself; this is for callers that must hold the
    /// lock across several steps (and for tests).
    pub fn lock_index(&self, timeout: Duration) -> Result<LockGuard> {
        LockGuard::acquire(&self.index_lock_path(), LockMode::Exclusive, timeout)
    }

    /// Read-merge-write of `index.json` under the lock.
    ///
    /// Lock `index.json.lock` (waiting up to `timeout`) → write `oci-layout` if needed →
    /// read `index.json` (absent or empty: a new [`Index`]) → `merge` → set defaults →
    /// write a temp file in the same directory → fsync → rename over `index.json` → fsync
    /// the directory → unlock. If `merge` fails nothing is written. A corrupt `index.json`
    /// fails the update (as in BuildKit) rather than silently dropping other tags.
    ///
    /// `merge` may run more than once: if, just before the rename, the lock file at the
    /// path is no longer the one locked (a buildx/buildctl client unlinked it after use and
    /// another client may hold a new one), the staged file is discarded and the whole
    /// read-merge-write is redone under a fresh lock. So `merge` must depend only on the
    /// index it is given.
    pub fn update_index<T, E>(
        &self,
        timeout: Duration,
        mut merge: impl FnMut(&mut Index) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let start = Instant::now();
        loop {
            let lock = self.lock_index(timeout.saturating_sub(start.elapsed()))?;
            self.ensure_oci_layout()?;
            self.remove_stale_index_temps();
            let path = self.index_path();
            let mut index = match fs::read(&path) {
                // BuildKit's Put treats an empty file as an empty index; do the same.
                Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Index::new(),
                Ok(b) => Index::from_slice(&b)
                    .map_err(|source| StoreError::IndexCorrupt { path: path.clone(), source })?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Index::new(),
                Err(source) => return Err(StoreError::Io { op: "read", path, source }.into()),
            };
            let out = merge(&mut index)?;
            index.fill_defaults();
            let bytes =
                index.to_vec().map_err(|source| StoreError::IndexEncode { path, source })?;
            let staged = stage_temp(&self.root, INDEX_FILE, &bytes)?;
            if !lock.is_current()? {
                tracing::warn!(
                    "{} was removed while strata held it (a BuildKit client unlinks it after \
                     use); redoing the index.json update",
                    lock.path().display()
                );
                if start.elapsed() >= timeout {
                    return Err(StoreError::LockTimeout {
                        path: lock.path().to_owned(),
                        waited: start.elapsed(),
                        holder: "other processes that keep removing the lock file".to_owned(),
                    }
                    .into());
                }
                continue;
            }
            persist(staged, &self.root, INDEX_FILE)?;
            return Ok(out);
        }
    }

    /// Removes temp files a crashed index writer left (`.index.json.*.tmp`). Only called
    /// under the index lock, and every index writer holds it, so none is in use.
    fn remove_stale_index_temps(&self) {
        let Ok(rd) = fs::read_dir(&self.root) else { return };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!(".{INDEX_FILE}.")) && name.ends_with(".tmp") {
                tracing::debug!("removing leftover {}", ent.path().display());
                let _ = fs::remove_file(ent.path());
            }
        }
    }

    /// Points `tag` at `desc` in `index.json` (BuildKit HEAD `Put` semantics, see
    /// [`Index::put_tag`]), under the lock.
    pub fn put_tag(&self, desc: crate::Descriptor, tag: &str, timeout: Duration) -> Result<()> {
        self.update_index(timeout, |idx| {
            idx.put_tag(desc.clone(), tag);
            Ok::<_, StoreError>(())
        })
    }

    /// Resolves `tag` through `index.json` (see [`Index::resolve`]); `Ok(None)` when there is
    /// no index or no such tag.
    pub fn resolve(&self, tag: &str) -> Result<Option<crate::Descriptor>> {
        Ok(self.read_index()?.and_then(|idx| idx.resolve(tag).cloned()))
    }

    /// A shared lease on the store for an export: hold it from the first blob write until
    /// `index.json` has been written, so that a concurrent [`Layout::gc_lock`] holder (prune)
    /// cannot delete blobs the export has written but not yet referenced. Many exports may
    /// hold leases at once. Lock file: `<root>/.strata-gc.lock`, never deleted.
    pub fn export_lease(&self, timeout: Duration) -> Result<LockGuard> {
        LockGuard::acquire(&self.gc_lock_path(), LockMode::Shared, timeout)
    }

    /// The exclusive side of [`Layout::export_lease`], for garbage collection: no export is
    /// between its first blob write and its `index.json` update while this is held.
    pub fn gc_lock(&self, timeout: Duration) -> Result<LockGuard> {
        LockGuard::acquire(&self.gc_lock_path(), LockMode::Exclusive, timeout)
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: temp file in `dir`, fsync,
/// rename, fsync `dir`. Mode 0644, as BuildKit writes `index.json` and `oci-layout`.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    persist(stage_temp(dir, name, bytes)?, dir, name)
}

/// Writes and fsyncs `bytes` to a temp file `.<name>.<random>.tmp` in `dir` (deleted if
/// dropped).
fn stage_temp(dir: &Path, name: &str, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .ctx("create temporary file in", dir)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644)).ctx("chmod", tmp.path())?;
    tmp.as_file().sync_all().ctx("fsync", tmp.path())?;
    Ok(tmp)
}

/// Renames a staged temp file over `dir/name` and fsyncs `dir`.
fn persist(tmp: tempfile::NamedTempFile, dir: &Path, name: &str) -> Result<()> {
    let target = dir.join(name);
    tmp.persist(&target).map_err(|e| e.error).ctx("rename temporary file to", &target)?;
    fsync_dir(dir)
}

/// fsyncs a directory so a rename or unlink in it survives a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx("fsync directory", dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Descriptor, Digest, media};

    #[test]
    fn open_rejects_missing_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Layout::open(&missing).unwrap_err();
        assert!(matches!(err, StoreError::LayoutMissing { .. }));
        assert!(err.to_string().contains("nope"));
        assert!(!missing.exists(), "open must not create");
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(Layout::open(&file).unwrap_err(), StoreError::NotADirectory { .. }));
    }

    #[test]
    fn open_writes_nothing_and_canonicalises() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let l = Layout::open(dir.path().join("link")).unwrap();
        assert_eq!(l.root(), fs::canonicalize(&real).unwrap());
        assert_eq!(l.read_index().unwrap(), None);
        assert_eq!(l.oci_layout_version().unwrap(), None);
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn create_writes_layout_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c");
        let l = Layout::create(&p).unwrap();
        assert_eq!(fs::read(p.join(OCI_LAYOUT_FILE)).unwrap(), OCI_LAYOUT_BYTES);
        let mode = fs::metadata(l.blob_dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert_eq!(l.oci_layout_version().unwrap().as_deref(), Some("1.0.0"));
        // A second create leaves an identical file alone (same inode) and fixes a wrong one.
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(p.join(OCI_LAYOUT_FILE)).unwrap().ino();
        Layout::create(&p).unwrap();
        assert_eq!(fs::metadata(p.join(OCI_LAYOUT_FILE)).unwrap().ino(), ino);
        fs::write(p.join(OCI_LAYOUT_FILE), b"{}\n").unwrap();
        Layout::create(&p).unwrap();
        assert_eq!(fs::read(p.join(OCI_LAYOUT_FILE)).unwrap(), OCI_LAYOUT_BYTES);
    }

    #[test]
    fn update_index_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(dir.path()).unwrap();
        let d = Descriptor::new(media::OCI_INDEX, Digest::of_bytes(b"m"), 1);
        l.put_tag(d.clone(), "latest", Duration::from_secs(5)).unwrap();
        assert_eq!(fs::read(dir.path().join(OCI_LAYOUT_FILE)).unwrap(), OCI_LAYOUT_BYTES);
        let idx = l.read_index().unwrap().unwrap();
        assert_eq!(idx.media_type.as_deref(), Some(media::OCI_INDEX));
        assert_eq!(l.resolve("latest").unwrap().unwrap().digest, d.digest);
        assert_eq!(l.resolve("other").unwrap(), None);
        let mode = fs::metadata(l.index_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // The lock file is left in place, empty; no temp files are left behind.
        assert_eq!(fs::read(l.index_lock_path()).unwrap(), b"");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");

        // A crashed writer's temp file is cleaned up by the next update.
        let leftover = dir.path().join(".index.json.abc123.tmp");
        fs::write(&leftover, b"{").unwrap();
        l.put_tag(d.clone(), "latest", Duration::from_secs(5)).unwrap();
        assert!(!leftover.exists());

        // A failing merge writes nothing.
        let before = fs::read(l.index_path()).unwrap();
        let r: Result<(), StoreError> = l.update_index(Duration::from_secs(5), |idx| {
            idx.manifests.clear();
            Err(StoreError::LayoutMissing { path: "x".into() })
        });
        assert!(r.is_err());
        assert_eq!(fs::read(l.index_path()).unwrap(), before);

        // Truncated file: both read and update fail, naming the file.
        fs::write(l.index_path(), &before[..before.len() / 2]).unwrap();
        let err = l.read_index().unwrap_err();
        assert!(matches!(err, StoreError::IndexCorrupt { .. }));
        assert!(err.to_string().contains("index.json"), "{err}");
        assert!(l.put_tag(d.clone(), "x", Duration::from_secs(5)).is_err());
        // Empty file: update treats it as empty (BuildKit does), read reports it.
        fs::write(l.index_path(), b"").unwrap();
        assert!(l.read_index().is_err());
        l.put_tag(d, "x", Duration::from_secs(5)).unwrap();
        assert_eq!(l.read_index().unwrap().unwrap().tags(), vec!["x"]);
    }

    #[test]
    fn update_redone_when_buildkit_unlinks_the_lock_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(dir.path()).unwrap();
        let d = Descriptor::new(media::OCI_INDEX, Digest::of_bytes(b"m"), 1);
        let mut calls = 0;
        l.update_index(Duration::from_secs(5), |idx| {
            calls += 1;
            if calls == 1 {
                // What a BuildKit client does after its own use of the lock.
                fs::remove_file(l.index_lock_path()).unwrap();
            }
            idx.put_tag(d.clone(), "t");
            Ok::<_, StoreError>(())
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(l.resolve("t").unwrap().unwrap().digest, d.digest);
        assert!(l.index_lock_path().exists());
    }

    #[test]
    fn update_times_out_naming_holder() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(dir.path()).unwrap();
        let _g = l.lock_index(Duration::ZERO).unwrap();
        let err = l
            .put_tag(Descriptor::new("x", Digest::of_bytes(b""), 0), "t", Duration::from_millis(30))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid={}", std::process::id())), "{msg}");
        assert!(msg.contains("index.json.lock"), "{msg}");
    }

    #[test]
    fn lease_excludes_gc() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(dir.path()).unwrap();
        let a = l.export_lease(Duration::ZERO).unwrap();
        let b = l.export_lease(Duration::ZERO).unwrap();
        assert!(l.gc_lock(Duration::from_millis(10)).is_err());
        drop((a, b));
        let g = l.gc_lock(Duration::ZERO).unwrap();
        assert!(l.export_lease(Duration::from_millis(10)).is_err());
        drop(g);
    }
}
