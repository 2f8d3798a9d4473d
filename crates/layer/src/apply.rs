//! Extracting a layer tar onto a directory with OCI semantics, treating the tar as hostile.
//!
//! Safety rule: nothing is ever written outside `target`. Every entry path is cleaned
//! lexically (a leading `/` is stripped like Docker does; a `..` that climbs above the root
//! is refused), and every parent component is checked with `symlink_metadata` while
//! walking down from `target`: a parent that is a symlink is refused rather than followed,
//! so a layer cannot plant `a -> /` and then write `a/etc/x`. The final component is never
//! followed either (existing symlinks are removed, files are created with `O_EXCL`).
//!
//! The check-then-act walk is race-free only because the target tree belongs to this
//! process during the apply (no container runs on it); that is the snapshotter's contract.
//!
//! OCI whiteouts: `.wh.<name>` deletes `<name>` from lower layers; `.wh..wh..opq` empties
//! its directory of lower-layer content. Both only affect what existed *before* this layer
//! (the image-spec rule), so paths created by this layer are remembered and spared.
//!
//! [`extract_snapshot`] is the other mode of the same machinery: it extracts one layer into
//! an empty directory and *keeps* its whiteouts, in overlayfs form (0:0 character devices
//! and `trusted.overlay.opaque=y`) when root, else in AUFS form (the `.wh.` files as they
//! are), so the directory can serve as an overlay lower layer or in a merged view.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::diff::is_overlay_private;
use crate::writer::{PAX_XATTR_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// The xattr that makes an overlayfs directory hide lower layers' contents of it.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What to do with an entry that is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Stop with an error naming the entry.
    Error,
    /// Skip the entry, count it in [`ApplyStats`], and log a warning.
    Skip,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Entries whose path escapes the target, goes through a symlink, or hardlinks outside.
    pub unsafe_paths: Policy,
    /// Device nodes when not privileged to create them.
    pub devices_unprivileged: Policy,
    /// Extended attributes that cannot be set (EPERM / ENOTSUP).
    pub xattr_errors: Policy,
    /// Set ownership from the tar. `None`: only when running as root (else it would fail).
    pub same_owner: Option<bool>,
    /// Apply xattrs at all.
    pub xattrs: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            unsafe_paths: Policy::Error,
            devices_unprivileged: Policy::Skip,
            xattr_errors: Policy::Skip,
            same_owner: None,
            xattrs: true,
        }
    }
}

/// Counts from one apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read (extension headers excluded).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub specials: u64,
    /// Whiteouts applied (including ones whose target did not exist).
    pub whiteouts: u64,
    /// Opaque markers applied.
    pub opaques: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Device nodes skipped because we are not privileged.
    pub devices_skipped: u64,
    /// Unsafe entries skipped (with [`Policy::Skip`]).
    pub unsafe_skipped: u64,
    /// xattrs that could not be set and were skipped.
    pub xattrs_skipped: u64,
    /// Entries of unsupported types skipped.
    pub unsupported_skipped: u64,
}

/// Why applying a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The entry would write outside the target or through a symlink.
    #[error("refusing layer entry {entry:?}: {reason}")]
    Unsafe {
        /// Entry name as in the tar.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A device node cannot be created without privileges.
    #[error("layer entry {entry:?} is a device node, which needs root to create")]
    DeviceNeedsRoot {
        /// Entry name.
        entry: String,
    },
    /// The tar stream itself is malformed or unreadable.
    #[error("reading the layer tar: {0}")]
    Tar(#[source] io::Error),
    /// A filesystem operation failed.
    #[error("layer entry {entry:?}: {op} {path}: {source}")]
    Io {
        /// Entry name.
        entry: String,
        /// The operation (`create`, `chmod`, …).
        op: &'static str,
        /// The filesystem path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Whether this process runs as root (and so may chown and mknod).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Cleans an entry name into components: strips leading `/`, drops `.` and empty parts,
/// resolves `..` lexically. Returns `Err(reason)` if `..` climbs above the root.
fn clean(name: &[u8]) -> Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path escapes the layer root with '..'".into());
                }
            }
            p => out.push(OsStr::from_bytes(p).to_owned()),
        }
    }
    Ok(out)
}

fn rel_key_path(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

fn rel_key(comps: &[OsString]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            k.push(b'/');
        }
        k.extend_from_slice(c.as_bytes());
    }
    k
}

/// How [`extract_snapshot`] stores whiteouts and opaque markers on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotForm {
    /// 0:0 character devices and `trusted.overlay.opaque=y`: what the overlay kernel
    /// driver reads from a lowerdir. Needs root (mknod, `trusted.*` xattrs).
    Overlay,
    /// Empty `.wh.<name>` and `.wh..wh..opq` files, exactly as in the tar.
    Aufs,
}

struct Applier<'a> {
    target: &'a Path,
    opts: &'a ApplyOptions,
    root: bool,
    same_owner: bool,
    /// `None`: apply onto a tree (whiteouts delete). `Some`: extract a snapshot into an
    /// empty directory (whiteouts are kept in the given form).
    snapshot: Option<SnapshotForm>,
    /// Snapshot in overlay form: paths where this layer made a whiteout device. If this
    /// layer later puts a directory there, that directory is new (the whiteout removed
    /// whatever lower layers had), so it must be opaque or the lower one would show through.
    whited: BTreeSet<Vec<u8>>,
    stats: ApplyStats,
    /// Paths (relative, `/`-joined) created or replaced by this layer: whiteouts and
    /// opaque markers must not remove them.
    touched: BTreeSet<Vec<u8>>,
    /// Directories whose mode and mtime are set at the end: a read-only directory must
    /// still accept its children, and writing children changes a directory's mtime.
    dirs: Vec<(PathBuf, String, u32, i64)>,
}

enum Step {
    Continue,
    /// The entry was refused and skipped.
    Skipped,
}

impl Applier<'_> {
    fn io(&self, entry: &str, op: &'static str, path: &Path, source: io::Error) -> ApplyError {
        ApplyError::Io { entry: entry.to_owned(), op, path: path.display().to_string(), source }
    }

    fn refuse(&mut self, entry: &str, reason: String) -> Result<Step, ApplyError> {
        match self.opts.unsafe_paths {
            Policy::Error => Err(ApplyError::Unsafe { entry: entry.to_owned(), reason }),
            Policy::Skip => {
                tracing::warn!(entry, %reason, "skipping unsafe layer entry");
                self.stats.unsafe_skipped += 1;
                Ok(Step::Skipped)
            }
        }
    }

    /// Walks `comps` down from the target without following symlinks. With `create`,
    /// missing directories are made (and remembered as this layer's). Returns the absolute
    /// path, or `Err(reason)` when a component is a symlink or not a directory.
    fn walk_dirs(
        &mut self,
        entry: &str,
        comps: &[OsString],
        create: bool,
    ) -> Result<Result<Option<PathBuf>, String>, ApplyError> {
        let mut p = self.target.to_path_buf();
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Ok(Err(format!(
                        "parent {} is a symlink (not followed)",
                        rel_key(&comps[..=i]).escape_ascii()
                    )));
                }
                Ok(_)
                    if create
                        && self.whited.contains(&rel_key(&comps[..=i]))
                        && !self.touched.contains(&rel_key(&comps[..=i])) =>
                {
                    // `a/.wh.b` then `a/b/c`: the whiteout device becomes a fresh, opaque
                    // directory, which is what applying would give (b deleted, then made).
                    fs::remove_file(&p).map_err(|e| self.io(entry, "remove", &p, e))?;
                    self.snapshot_mkdir(entry, &p)?;
                    self.set_overlay_opaque(entry, &p)?;
                    self.touched.insert(rel_key(&comps[..=i]));
                }
                Ok(_) => {
                    return Ok(Err(format!(
                        "parent {} is not a directory",
                        rel_key(&comps[..=i]).escape_ascii()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(Ok(None));
                    }
                    if self.snapshot.is_some() {
                        self.snapshot_mkdir(entry, &p)?;
                    } else {
                        fs::create_dir(&p).map_err(|e| self.io(entry, "mkdir", &p, e))?;
                    }
                    self.touched.insert(rel_key(&comps[..=i]));
                }
                Err(e) => return Err(self.io(entry, "stat", &p, e)),
            }
        }
        Ok(Ok(Some(p)))
    }

    /// Removes whatever is at `path` (without following it), unless it is a directory and
    /// `keep_dir` is set. Returns whether a directory was kept.
    fn clear(&self, entry: &str, path: &Path, keep_dir: bool) -> Result<bool, ApplyError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                // remove_dir_all does not follow symlinks inside the tree.
                fs::remove_dir_all(path).map_err(|e| self.io(entry, "remove", path, e))?;
            }
            Ok(_) => fs::remove_file(path).map_err(|e| self.io(entry, "remove", path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(entry, "stat", path, e)),
        }
        Ok(false)
    }

    /// Creates a directory the tar does not describe (a parent of an entry) as 0755
    /// regardless of the umask, so a snapshot does not depend on who extracted it.
    fn snapshot_mkdir(&self, entry: &str, p: &Path) -> Result<(), ApplyError> {
        fs::create_dir(p).map_err(|e| self.io(entry, "mkdir", p, e))?;
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))
            .map_err(|e| self.io(entry, "chmod", p, e))
    }

    /// Marks `dir` opaque for overlayfs. Not subject to `xattr_errors`: without the mark
    /// lower layers would show through, so the snapshot would be wrong, not just poorer.
    fn set_overlay_opaque(&self, entry: &str, dir: &Path) -> Result<(), ApplyError> {
        xattr::set(dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(|e| self.io(entry, "setxattr", dir, e))
    }

    /// Writes an empty AUFS-form marker file (`.wh.<name>` or `.wh..wh..opq`).
    fn marker_file(&self, entry: &str, path: &Path, mtime: i64) -> Result<(), ApplyError> {
        // A repeated marker in the tar replaces the first one.
        self.clear(entry, path, false)?;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| self.io(entry, "create", path, e))?;
        set_mtime(path, mtime).map_err(|e| self.io(entry, "set mtime", path, e))
    }

    /// Walks to (creating) the directory of a snapshot marker entry.
    fn snapshot_dir(
        &mut self,
        entry: &str,
        comps: &[OsString],
    ) -> Result<Result<PathBuf, Step>, ApplyError> {
        match self.walk_dirs(entry, comps, true)? {
            Ok(Some(d)) => Ok(Ok(d)),
            // Cannot happen with `create`, but a typed error beats a panic.
            Ok(None) => Err(self.io(
                entry,
                "mkdir",
                &self.target.join(rel_key_path(comps)),
                io::ErrorKind::NotFound.into(),
            )),
            Err(reason) => self.refuse(entry, reason).map(Err),
        }
    }

    /// A whiteout in snapshot mode: kept (as a device or a `.wh.` file) instead of applied.
    fn snapshot_whiteout(
        &mut self,
        entry: &str,
        parent: &[OsString],
        name: &[u8],
        header: &tar::Header,
        form: SnapshotForm,
    ) -> Result<Step, ApplyError> {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return self.refuse(entry, "whiteout names no file".into());
        }
        // The layer may carry only the whiteout, not its directory; the marker still needs
        // a directory to live in.
        let dir = match self.snapshot_dir(entry, parent)? {
            Ok(d) => d,
            Err(step) => return Ok(step),
        };
        self.stats.whiteouts += 1;
        let mut comps = parent.to_vec();
        comps.push(OsStr::from_bytes(name).to_owned());
        let key = rel_key(&comps);
        if self.touched.contains(&key) {
            // A whiteout only hides lower layers; this layer's own entry of that name wins
            // (as in `apply_layer`), and a device could not share its path anyway.
            return Ok(Step::Continue);
        }
        let mtime = header.mtime().unwrap_or(0) as i64;
        match form {
            SnapshotForm::Overlay => {
                let path = dir.join(OsStr::from_bytes(name));
                // Only a repeated whiteout can be there: everything else is `touched`.
                self.clear(entry, &path, false)?;
                // Mode 0, like the whiteouts overlayfs itself creates.
                nix::sys::stat::mknod(
                    &path,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(|err| self.io(entry, "mknod", &path, err.into()))?;
                if self.same_owner {
                    std::os::unix::fs::lchown(
                        &path,
                        Some(header.uid().unwrap_or(0) as u32),
                        Some(header.gid().unwrap_or(0) as u32),
                    )
                    .map_err(|err| self.io(entry, "chown", &path, err))?;
                }
                set_mtime(&path, mtime).map_err(|err| self.io(entry, "set mtime", &path, err))?;
                self.whited.insert(key);
            }
            SnapshotForm::Aufs => {
                let mut file = WHITEOUT_PREFIX.as_bytes().to_vec();
                file.extend_from_slice(name);
                self.marker_file(entry, &dir.join(OsStr::from_bytes(&file)), mtime)?;
            }
        }
        Ok(Step::Continue)
    }

    /// An opaque marker in snapshot mode. Nothing to prune: the target started empty.
    fn snapshot_opaque(
        &mut self,
        entry: &str,
        dir_comps: &[OsString],
        header: &tar::Header,
        form: SnapshotForm,
    ) -> Result<Step, ApplyError> {
        let dir = match self.snapshot_dir(entry, dir_comps)? {
            Ok(d) => d,
            Err(step) => return Ok(step),
        };
        match form {
            SnapshotForm::Overlay => self.set_overlay_opaque(entry, &dir)?,
            SnapshotForm::Aufs => {
                let mtime = header.mtime().unwrap_or(0) as i64;
                self.marker_file(entry, &dir.join(WHITEOUT_OPAQUE), mtime)?;
            }
        }
        self.stats.opaques += 1;
        Ok(Step::Continue)
    }

    fn whiteout(
        &mut self,
        entry: &str,
        parent: &[OsString],
        name: &[u8],
    ) -> Result<Step, ApplyError> {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return self.refuse(entry, "whiteout names no file".into());
        }
        let dir = match self.walk_dirs(entry, parent, false)? {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.stats.whiteouts += 1;
                return Ok(Step::Continue);
            }
            Err(reason) => return self.refuse(entry, reason),
        };
        let mut comps = parent.to_vec();
        comps.push(OsStr::from_bytes(name).to_owned());
        if !self.touched.contains(&rel_key(&comps)) {
            self.clear(entry, &dir.join(OsStr::from_bytes(name)), false)?;
        }
        self.stats.whiteouts += 1;
        Ok(Step::Continue)
    }

    fn opaque(&mut self, entry: &str, dir_comps: &[OsString]) -> Result<Step, ApplyError> {
        let dir = match self.walk_dirs(entry, dir_comps, true)? {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(Step::Continue),
            Err(reason) => return self.refuse(entry, reason),
        };
        self.prune_children(entry, &dir, &rel_key(dir_comps))?;
        self.stats.opaques += 1;
        Ok(Step::Continue)
    }

    /// Removes the children of `dir` that this layer did not create, keeping directories
    /// that contain something this layer created.
    fn prune_children(&self, entry: &str, dir: &Path, rel: &[u8]) -> Result<(), ApplyError> {
        let rd = fs::read_dir(dir).map_err(|e| self.io(entry, "read dir", dir, e))?;
        for child in rd {
            let child = child.map_err(|e| self.io(entry, "read dir", dir, e))?;
            let name = child.file_name();
            let mut key = rel.to_vec();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name.as_bytes());
            let mut prefix = key.clone();
            prefix.push(b'/');
            let has_new_descendant =
                self.touched.range(prefix.clone()..).next().is_some_and(|k| k.starts_with(&prefix));
            let path = child.path();
            let is_dir = fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
            if (self.touched.contains(&key) || has_new_descendant) && is_dir {
                self.prune_children(entry, &path, &key)?;
            } else if !self.touched.contains(&key) {
                self.clear(entry, &path, false)?;
            }
        }
        Ok(())
    }

    fn set_owner_mode_time(
        &mut self,
        entry: &str,
        path: &Path,
        e: &tar::Header,
        is_symlink: bool,
        xattrs: &[(String, Vec<u8>)],
        mtime: i64,
    ) -> Result<(), ApplyError> {
        if self.same_owner {
            let uid = e.uid().unwrap_or(0) as u32;
            let gid = e.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(|err| self.io(entry, "chown", path, err))?;
        }
        self.apply_xattrs(entry, path, xattrs)?;
        if !is_symlink {
            // After chown: chown clears setuid/setgid bits.
            let mode = e.mode().unwrap_or(0o644) & 0o7777;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|err| self.io(entry, "chmod", path, err))?;
        }
        set_mtime(path, mtime).map_err(|err| self.io(entry, "set mtime", path, err))?;
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<Step, ApplyError> {
        let name_bytes = e.path_bytes().into_owned();
        let entry = String::from_utf8_lossy(&name_bytes).into_owned();
        let ty = e.header().entry_type();
        if matches!(ty, tar::EntryType::XGlobalHeader) {
            return Ok(Step::Continue);
        }
        self.stats.entries += 1;
        let comps = match clean(&name_bytes) {
            Ok(c) => c,
            Err(reason) => return self.refuse(&entry, reason),
        };
        let Some((base, parent)) = comps.split_last() else {
            // The root itself (`./`): its metadata belongs to the target dir, which the
            // caller owns; leave it alone.
            return Ok(Step::Continue);
        };
        let base_b = base.as_bytes();
        if let Some(form) = self.snapshot {
            // A directory named `.wh.x` would read as a whiteout in the merged view (and
            // cannot hold children in AUFS form, where `.wh.x` is a file).
            if parent.iter().any(|c| c.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())) {
                return self.refuse(&entry, "whiteout name used as a directory".into());
            }
            if base_b == WHITEOUT_OPAQUE.as_bytes() {
                let header = e.header().clone();
                return self.snapshot_opaque(&entry, parent, &header, form);
            }
            if let Some(name) = base_b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                let header = e.header().clone();
                return self.snapshot_whiteout(&entry, parent, name, &header, form);
            }
        }
        if base_b == WHITEOUT_OPAQUE.as_bytes() {
            return self.opaque(&entry, parent);
        }
        if let Some(name) = base_b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&entry, parent, name);
        }
        // Collect xattrs and the precise mtime from PAX before the data is consumed.
        let mut xattrs = Vec::new();
        let mut mtime = e.header().mtime().unwrap_or(0) as i64;
        if let Ok(Some(pax)) = e.pax_extensions() {
            for rec in pax.flatten() {
                let Ok(key) = rec.key() else { continue };
                if let Some(x) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if self.snapshot.is_some() && is_overlay_private(x) {
                        // In a lowerdir these would steer overlayfs (opaque, redirect,
                        // metacopy); only markers this function derives may do that.
                        tracing::warn!(entry, xattr = x, "dropping overlayfs xattr from layer");
                        self.stats.xattrs_skipped += 1;
                        continue;
                    }
                    xattrs.push((x.to_owned(), rec.value_bytes().to_vec()));
                } else if key == "mtime"
                    && let Some(s) =
                        rec.value().ok().and_then(|v| v.split('.').next()?.parse().ok())
                {
                    mtime = s;
                }
            }
        }
        let dir = match self.walk_dirs(&entry, parent, true)? {
            Ok(Some(d)) => d,
            // Cannot happen with `create`, but a typed error beats a panic.
            Ok(None) => {
                return Err(self.io(
                    &entry,
                    "mkdir",
                    &self.target.join(rel_key_path(parent)),
                    io::ErrorKind::NotFound.into(),
                ));
            }
            Err(reason) => return self.refuse(&entry, reason),
        };
        let path = dir.join(base);
        let header = e.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match ty {
            tar::EntryType::Directory => {
                let kept = self.clear(&entry, &path, true)?;
                if !kept {
                    fs::create_dir(&path).map_err(|err| self.io(&entry, "mkdir", &path, err))?;
                }
                // Owner and xattrs now; mode and mtime at the end (see `dirs`).
                if self.same_owner {
                    std::os::unix::fs::lchown(
                        &path,
                        Some(header.uid().unwrap_or(0) as u32),
                        Some(header.gid().unwrap_or(0) as u32),
                    )
                    .map_err(|err| self.io(&entry, "chown", &path, err))?;
                }
                self.apply_xattrs(&entry, &path, &xattrs)?;
                if self.whited.contains(&rel_key(&comps)) {
                    // Replaces this layer's whiteout: see `whited`.
                    self.set_overlay_opaque(&entry, &path)?;
                }
                self.dirs.push((path, entry.clone(), mode, mtime));
                self.stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&entry, &path, false)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|err| self.io(&entry, "create", &path, err))?;
                let n = io::copy(&mut e, &mut f).map_err(|err| {
                    // A read error is the tar's fault, a write error the filesystem's.
                    self.io(&entry, "write", &path, err)
                })?;
                drop(f);
                self.stats.bytes += n;
                self.stats.files += 1;
                self.set_owner_mode_time(&entry, &path, &header, false, &xattrs, mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                self.clear(&entry, &path, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|err| self.io(&entry, "symlink", &path, err))?;
                self.stats.symlinks += 1;
                self.set_owner_mode_time(&entry, &path, &header, true, &xattrs, mtime)?;
            }
            tar::EntryType::Link => {
                let target = e.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                let tcomps = match clean(&target) {
                    Ok(c) if !c.is_empty() => c,
                    Ok(_) => return self.refuse(&entry, "hardlink to the layer root".into()),
                    Err(reason) => {
                        return self.refuse(&entry, format!("hardlink target: {reason}"));
                    }
                };
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return self.refuse(&entry, "hardlink to the layer root".into());
                };
                // In a snapshot, whiteout markers are bookkeeping, not files of the layer:
                // a link to one (or to where one was) has no target.
                if self.snapshot.is_some()
                    && (tcomps.iter().any(|c| c.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
                        || (self.whited.contains(&rel_key(&tcomps))
                            && !self.touched.contains(&rel_key(&tcomps))))
                {
                    return self.refuse(&entry, "hardlink target does not exist".into());
                }
                let tdir = match self.walk_dirs(&entry, tparent, false)? {
                    Ok(Some(d)) => d,
                    Ok(None) => {
                        return self.refuse(&entry, "hardlink target does not exist".into());
                    }
                    Err(reason) => {
                        return self.refuse(&entry, format!("hardlink target: {reason}"));
                    }
                };
                let src = tdir.join(tbase);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_dir() => {
                        return self.refuse(&entry, "hardlink to a directory".into());
                    }
                    Ok(_) => {}
                    Err(_) => return self.refuse(&entry, "hardlink target does not exist".into()),
                }
                if src == path {
                    return Ok(Step::Continue);
                }
                self.clear(&entry, &path, false)?;
                // link(2) does not follow a symlink source: the link is to the symlink.
                fs::hard_link(&src, &path).map_err(|err| self.io(&entry, "link", &path, err))?;
                self.stats.hardlinks += 1;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let is_dev = !matches!(ty, tar::EntryType::Fifo);
                if self.snapshot.is_some()
                    && matches!(ty, tar::EntryType::Char)
                    && header.device_major().ok().flatten().unwrap_or(0) == 0
                    && header.device_minor().ok().flatten().unwrap_or(0) == 0
                {
                    // In a snapshot a 0:0 character device *is* a whiteout, in either form
                    // (the merged view reads both), so it would delete instead of exist.
                    return self.refuse(&entry, "0:0 character device reads as a whiteout".into());
                }
                if is_dev && !self.root {
                    match self.opts.devices_unprivileged {
                        Policy::Error => return Err(ApplyError::DeviceNeedsRoot { entry }),
                        Policy::Skip => {
                            tracing::warn!(entry, "skipping device node: needs root");
                            self.stats.devices_skipped += 1;
                            return Ok(Step::Skipped);
                        }
                    }
                }
                self.clear(&entry, &path, false)?;
                let kind = match ty {
                    tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let dev = nix::sys::stat::makedev(major.into(), minor.into());
                nix::sys::stat::mknod(
                    &path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(|err| self.io(&entry, "mknod", &path, err.into()))?;
                self.stats.specials += 1;
                self.set_owner_mode_time(&entry, &path, &header, false, &xattrs, mtime)?;
            }
            other => {
                tracing::warn!(entry, ?other, "skipping unsupported tar entry type");
                self.stats.unsupported_skipped += 1;
                return Ok(Step::Skipped);
            }
        }
        self.touched.insert(rel_key(&comps));
        Ok(Step::Continue)
    }

    fn apply_xattrs(
        &mut self,
        entry: &str,
        path: &Path,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        if !self.opts.xattrs {
            return Ok(());
        }
        for (k, v) in xattrs {
            if let Err(err) = xattr::set(path, k, v) {
                let ignorable =
                    matches!(err.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP | libc::EACCES));
                if ignorable && self.opts.xattr_errors == Policy::Skip {
                    self.stats.xattrs_skipped += 1;
                } else {
                    return Err(self.io(entry, "setxattr", path, err));
                }
            }
        }
        Ok(())
    }
}

/// Sets atime and mtime of `path` itself (not a symlink's target). atime is set equal to
/// mtime so the result does not depend on when the apply ran.
fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(secs, 0);
    nix::sys::stat::lutimes(path, &tv, &tv).map_err(io::Error::from)
}

/// Checks that `target` is a directory (not a symlink to one).
fn check_target(target: &Path) -> Result<(), ApplyError> {
    let err = |source| ApplyError::Io {
        entry: String::new(),
        op: "open target",
        path: target.display().to_string(),
        source,
    };
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"))),
        Err(source) => Err(err(source)),
    }
}

/// The loop shared by [`apply_layer`] and [`extract_snapshot`].
fn run(
    reader: impl Read,
    target: &Path,
    opts: &ApplyOptions,
    snapshot: Option<SnapshotForm>,
) -> Result<ApplyStats, ApplyError> {
    let root = is_root();
    let mut ap = Applier {
        target,
        opts,
        root,
        same_owner: opts.same_owner.unwrap_or(root),
        snapshot,
        whited: BTreeSet::new(),
        stats: ApplyStats::default(),
        touched: BTreeSet::new(),
        dirs: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    for e in archive.entries().map_err(ApplyError::Tar)? {
        let e = e.map_err(ApplyError::Tar)?;
        ap.entry(e)?;
    }
    // Directories last, deepest first, so setting a parent's mtime is the final change to it.
    let mut dirs = std::mem::take(&mut ap.dirs);
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, entry, mode, mtime) in dirs {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|err| ap.io(&entry, "chmod", &path, err))?;
        set_mtime(&path, mtime).map_err(|err| ap.io(&entry, "set mtime", &path, err))?;
    }
    Ok(ap.stats)
}

/// Extracts an uncompressed layer tar onto `target` (which must exist), applying
/// whiteouts and opaque markers against what is already there.
pub fn apply_layer(
    reader: impl Read,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    check_target(target)?;
    run(reader, target, opts, None)
}

/// Extracts ONE uncompressed layer tar into the empty directory `target` as a snapshot
/// that keeps the layer's deletions, for stacking as an overlay `lowerdir` (or reading
/// through a merged view).
///
/// As root it is in overlayfs form: `dir/.wh.name` becomes a 0:0 character device
/// `dir/name`, and `dir/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `dir`. Otherwise
/// (mknod and `trusted.*` xattrs are impossible) it is in AUFS form: both markers stay
/// empty regular files under their tar names. Markers' missing parent directories are
/// created 0755. Everything else is extracted as [`apply_layer`] does, with the same
/// protections; in addition `trusted.overlay.*`/`user.overlay.*` xattrs from the tar are
/// dropped, and entries that would read as markers (a 0:0 character device, a path
/// through a `.wh.` directory) are refused under [`ApplyOptions::unsafe_paths`].
pub fn extract_snapshot(
    reader: impl Read,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let form = if is_root() { SnapshotForm::Overlay } else { SnapshotForm::Aufs };
    extract_snapshot_as(reader, target, opts, form)
}

/// [`extract_snapshot`] in a chosen form (tests exercise the AUFS form as root too).
pub(crate) fn extract_snapshot_as(
    reader: impl Read,
    target: &Path,
    opts: &ApplyOptions,
    form: SnapshotForm,
) -> Result<ApplyStats, ApplyError> {
    check_target(target)?;
    // Whiteouts are kept, not applied, so anything already there would leak into the
    // layer's snapshot unhidden.
    let err = |source| ApplyError::Io {
        entry: String::new(),
        op: "read target",
        path: target.display().to_string(),
        source,
    };
    if fs::read_dir(target).map_err(err)?.next().is_some() {
        return Err(err(io::Error::new(io::ErrorKind::DirectoryNotEmpty, "not empty")));
    }
    run(reader, target, opts, Some(form))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;
    use crate::diff::{WriteDirOptions, diff_overlay_upper};
    use crate::writer::{EntryMeta, LayerWriter, WriteError};

    const MTIME: i64 = 1_700_000_000;

    fn meta(mode: u32) -> EntryMeta {
        EntryMeta { mtime: MTIME, ..EntryMeta::new(mode) }
    }

    /// A file, a whiteout `etc/.wh.passwd`, an opaque `var/lib` with a file in it, and a
    /// whiteout `opt/.wh.old` whose directory the layer does not carry.
    fn layer() -> Result<Vec<u8>, WriteError> {
        let mut w = LayerWriter::new(Vec::new());
        w.add_dir("etc", &meta(0o755))?;
        w.add_file("etc/hostname", &meta(0o644), &b"box\n"[..], 4)?;
        w.add_whiteout("etc/passwd")?;
        w.add_whiteout("opt/old")?;
        w.add_dir("var", &meta(0o755))?;
        w.add_dir("var/lib", &meta(0o700))?;
        w.add_opaque("var/lib")?;
        w.add_file("var/lib/state", &meta(0o600), &b"st"[..], 2)?;
        w.finish()
    }

    /// Entry name -> (type, mode, mtime, content) of a tar.
    fn entries(tar: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut a = tar::Archive::new(tar);
        for e in a.entries().expect("tar") {
            let mut e = e.expect("entry");
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            let row = (h.entry_type(), h.mode().expect("mode"), h.mtime().expect("mtime"), data);
            out.insert(name, row);
        }
        out
    }

    /// Says so in the test output when a check needs root, so a green run as a normal user
    /// is not mistaken for full coverage.
    #[allow(clippy::print_stdout)]
    fn skip_root_checks() {
        println!("skipped root checks: not root");
    }

    fn xattr_of(p: &Path) -> Option<Vec<u8>> {
        xattr::get(p, OVERLAY_OPAQUE_XATTR).ok().flatten()
    }

    fn assert_common(d: &Path) {
        assert_eq!(fs::read(d.join("etc/hostname")).expect("hostname"), b"box\n");
        assert_eq!(fs::read(d.join("var/lib/state")).expect("state"), b"st");
        let lib = fs::symlink_metadata(d.join("var/lib")).expect("var/lib");
        assert_eq!((lib.mode() & 0o7777, lib.mtime()), (0o700, MTIME));
        let opt = fs::symlink_metadata(d.join("opt")).expect("opt");
        assert!(opt.is_dir());
        assert_eq!(opt.mode() & 0o7777, 0o755, "missing whiteout parents are made 0755");
    }

    fn assert_aufs(d: &Path) {
        for f in ["etc/.wh.passwd", "opt/.wh.old", "var/lib/.wh..wh..opq"] {
            let m = fs::symlink_metadata(d.join(f)).expect(f);
            assert!(m.is_file() && m.len() == 0, "{f} is an empty regular file");
        }
        assert!(fs::symlink_metadata(d.join("etc/passwd")).is_err());
        assert_eq!(xattr_of(&d.join("var/lib")), None);
    }

    #[test]
    fn snapshot_keeps_whiteouts_in_overlay_or_aufs_form() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        let tar = layer().expect("layer");
        let st = extract_snapshot(&tar[..], d, &ApplyOptions::default()).expect("extract");
        assert_eq!((st.whiteouts, st.opaques, st.files), (2, 1, 2));
        assert_common(d);
        if !is_root() {
            skip_root_checks();
            assert_aufs(d);
            return;
        }
        for f in ["etc/passwd", "opt/old"] {
            let m = fs::symlink_metadata(d.join(f)).expect(f);
            assert!(m.file_type().is_char_device(), "{f} is a character device");
            assert_eq!(m.rdev(), 0, "{f} is 0:0");
        }
        assert_eq!(xattr_of(&d.join("var/lib")).as_deref(), Some(&b"y"[..]));
        for f in ["etc/.wh.passwd", "opt/.wh.old", "var/lib/.wh..wh..opq"] {
            assert!(fs::symlink_metadata(d.join(f)).is_err(), "no marker file {f}");
        }
    }

    #[test]
    fn snapshot_aufs_form() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = layer().expect("layer");
        extract_snapshot_as(&tar[..], tmp.path(), &ApplyOptions::default(), SnapshotForm::Aufs)
            .expect("extract");
        assert_common(tmp.path());
        assert_aufs(tmp.path());
    }

    #[test]
    fn snapshot_round_trips_through_diff_overlay_upper() {
        if !is_root() {
            skip_root_checks();
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = layer().expect("layer");
        extract_snapshot(&tar[..], tmp.path(), &ApplyOptions::default()).expect("extract");
        let mut w = LayerWriter::new(Vec::new());
        let opts = WriteDirOptions::default();
        diff_overlay_upper(tmp.path(), &[], &mut w, &opts, &|_, _| false).expect("diff");
        let mut got = entries(&w.finish().expect("finish"));
        let want = entries(&tar);
        // The layer has no `opt/` entry; the snapshot made one, so the diff has it.
        let opt = got.remove("opt/").expect("opt/ in diff");
        assert_eq!((opt.0, opt.1), (tar::EntryType::Directory, 0o755));
        assert_eq!(got, want);
    }

    #[test]
    fn snapshot_refuses_marker_lookalikes_and_non_empty_targets() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = ApplyOptions::default();
        // A directory named like a whiteout.
        let mut w = LayerWriter::new(Vec::new());
        w.add_file("a/.wh.b/c", &meta(0o644), &b""[..], 0).expect("add");
        let tar = w.finish().expect("finish");
        let err = extract_snapshot(&tar[..], tmp.path(), &opts).expect_err("refused");
        assert!(matches!(err, ApplyError::Unsafe { .. }), "{err}");
        // A 0:0 character device would read as a whiteout.
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = LayerWriter::new(Vec::new());
        w.add_char_device("dev/null0", &meta(0o666), 0, 0).expect("add");
        let tar = w.finish().expect("finish");
        let err = extract_snapshot(&tar[..], tmp.path(), &opts).expect_err("refused");
        assert!(matches!(err, ApplyError::Unsafe { .. }), "{err}");
        // Whiteouts are kept, not applied: existing content would stay visible.
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("x"), b"").expect("write");
        let tar = layer().expect("layer");
        let err = extract_snapshot(&tar[..], tmp.path(), &opts).expect_err("not empty");
        assert!(matches!(err, ApplyError::Io { .. }), "{err}");
    }

    #[test]
    fn snapshot_directory_replacing_own_whiteout_is_opaque() {
        if !is_root() {
            skip_root_checks();
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = LayerWriter::new(Vec::new());
        w.add_whiteout("a/b").expect("wh");
        w.add_file("a/b/c", &meta(0o644), &b""[..], 0).expect("file");
        w.add_whiteout("a/d").expect("wh");
        w.add_dir("a/d", &meta(0o755)).expect("dir");
        w.add_whiteout("a/e").expect("wh");
        w.add_hardlink("a/f", "a/e", &meta(0o644)).expect("link");
        let tar = w.finish().expect("finish");
        let opts = ApplyOptions { unsafe_paths: Policy::Skip, ..ApplyOptions::default() };
        let st = extract_snapshot(&tar[..], tmp.path(), &opts).expect("extract");
        assert_eq!(st.unsafe_skipped, 1, "hardlink to a whiteout has no target");
        for dir in ["a/b", "a/d"] {
            let p = tmp.path().join(dir);
            assert!(fs::symlink_metadata(&p).expect(dir).is_dir());
            assert_eq!(xattr_of(&p).as_deref(), Some(&b"y"[..]), "{dir} is opaque");
        }
        assert!(fs::symlink_metadata(tmp.path().join("a/f")).is_err());
    }
}
