//! Producing layer tars from directories: a whole tree ([`write_dir`]), an overlayfs
//! upper dir ([`diff_overlay_upper`]) and the copy fallback comparing two full trees
//! ([`diff_trees`]).
//!
//! All walks are sorted by file name per directory (the order Go's `filepath.Walk` gives
//! containerd), so the same tree always yields the same tar bytes. Files are streamed from
//! disk; only the set of emitted directories and the hardlink map are kept in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::writer::{EntryMeta, LayerWriter, WriteError};

/// Options shared by the tree-to-layer functions.
#[derive(Debug, Clone, Default)]
pub struct WriteDirOptions {
    /// Write every entry with this owner instead of the one on disk.
    pub uid: Option<u64>,
    /// Write every entry with this group instead of the one on disk.
    pub gid: Option<u64>,
    /// Clamp mtimes to at most this (SOURCE_DATE_EPOCH-style reproducibility).
    pub clamp_mtime: Option<i64>,
    /// Keep sub-second mtimes (written as PAX records). Off by default, like Go's USTAR
    /// writer, which truncates to seconds.
    pub nanos: bool,
    /// Skip extended attributes entirely.
    pub no_xattrs: bool,
}

/// Why a tree could not be turned into a layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the tar failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The upper dir uses an overlayfs feature a tar cannot express.
    #[error("overlay upper entry {path}: {reason}")]
    Unsupported {
        /// The path.
        path: String,
        /// What is not supported.
        reason: &'static str,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiffError + 'a {
    move |source| DiffError::Io { op, path: path.display().to_string(), source }
}

/// xattrs that describe overlayfs' own bookkeeping, never the image content.
pub(crate) fn is_overlay_private(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, DiffError> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(out),
        Err(e) => return Err(io_err("list xattrs of", path)(e)),
    };
    for n in names {
        let Some(name) = n.to_str() else { continue };
        if is_overlay_private(name) {
            continue;
        }
        match xattr::get(path, &n) {
            Ok(Some(v)) => {
                out.insert(name.to_owned(), v);
            }
            Ok(None) => {}
            // trusted.* is unreadable without CAP_SYS_ADMIN: not ours to copy then.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::ENODATA)) => {
            }
            Err(e) => return Err(io_err("read xattr of", path)(e)),
        }
    }
    Ok(out)
}

fn entry_meta(path: &Path, md: &Metadata, opts: &WriteDirOptions) -> Result<EntryMeta, DiffError> {
    let mut mtime = md.mtime();
    let mut nanos = md.mtime_nsec() as u32;
    if let Some(c) = opts.clamp_mtime
        && (mtime > c || (mtime == c && nanos > 0))
    {
        mtime = c;
        nanos = 0;
    }
    Ok(EntryMeta {
        mode: md.mode() & 0o7777,
        uid: opts.uid.unwrap_or(u64::from(md.uid())),
        gid: opts.gid.unwrap_or(u64::from(md.gid())),
        mtime,
        mtime_nanos: if opts.nanos && nanos > 0 { Some(nanos) } else { None },
        xattrs: if opts.no_xattrs { BTreeMap::new() } else { read_xattrs(path)? },
    })
}

/// Writes one filesystem object as a tar entry. `links` maps (dev, ino) of multiply-linked
/// files already written in this layer to their entry path, so later names become
/// hardlinks instead of second copies.
fn emit<W: io::Write>(
    w: &mut LayerWriter<W>,
    rel: &Path,
    abs: &Path,
    md: &Metadata,
    opts: &WriteDirOptions,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), DiffError> {
    let meta = entry_meta(abs, md, opts)?;
    let ft = md.file_type();
    if ft.is_dir() {
        w.add_dir(rel, &meta)?;
    } else if ft.is_file() {
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = links.get(&key) {
                w.add_hardlink(rel, first, &meta)?;
                return Ok(());
            }
            links.insert(key, rel.to_path_buf());
        }
        // O_NOFOLLOW: if the file was swapped for a symlink since the walk, fail instead
        // of archiving whatever it points at.
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(abs)
            .map_err(io_err("open", abs))?;
        w.add_file(rel, &meta, io::BufReader::with_capacity(256 * 1024, f), md.len())?;
    } else if ft.is_symlink() {
        let target = fs::read_link(abs).map_err(io_err("readlink", abs))?;
        w.add_symlink(rel, target, &meta)?;
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        let (ma, mi) = (nix::sys::stat::major(rdev) as u32, nix::sys::stat::minor(rdev) as u32);
        if ft.is_char_device() {
            w.add_char_device(rel, &meta, ma, mi)?;
        } else {
            w.add_block_device(rel, &meta, ma, mi)?;
        }
    } else if ft.is_fifo() {
        w.add_fifo(rel, &meta)?;
    } else {
        // Sockets cannot be represented in a tar; Docker and BuildKit drop them too.
        tracing::debug!(path = %abs.display(), "skipping socket");
    }
    Ok(())
}

/// Sorted, non-following walk of `root` (root itself excluded).
fn walk(root: &Path) -> walkdir::IntoIter {
    walkdir::WalkDir::new(root).min_depth(1).follow_links(false).sort_by_file_name().into_iter()
}

fn walk_err(e: walkdir::Error) -> DiffError {
    let path = e.path().map(|p| p.display().to_string()).unwrap_or_default();
    DiffError::Io { op: "walk", path, source: e.into() }
}

fn rel_of<'a>(root: &Path, p: &'a Path) -> &'a Path {
    p.strip_prefix(root).unwrap_or(p)
}

/// Writes the whole tree under `root` (not `root` itself) as layer entries, in sorted
/// order, preserving modes, ownership, xattrs, symlinks and hardlinks within the tree.
/// The caller calls [`LayerWriter::finish`].
pub fn write_dir<W: io::Write>(
    root: &Path,
    w: &mut LayerWriter<W>,
    opts: &WriteDirOptions,
) -> Result<(), DiffError> {
    let mut links = HashMap::new();
    for e in walk(root) {
        let e = e.map_err(walk_err)?;
        let md = e.metadata().map_err(walk_err)?;
        emit(w, rel_of(root, e.path()), e.path(), &md, opts, &mut links)?;
    }
    Ok(())
}

fn overlay_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|k| matches!(xattr::get(path, k), Ok(Some(v)) if v == b"y"))
}

/// Converts an overlayfs upper dir into a layer: a `0:0` character device becomes a
/// whiteout, a directory marked opaque (`trusted.overlay.opaque=y` or
/// `user.overlay.opaque=y`) becomes the directory plus an opaque marker, everything else
/// is written as is. `skip(rel_path, metadata)` lets the caller drop entries such as empty
/// mount points a runtime created (a skipped directory skips its subtree).
/// `lower_dirs` (top first) are consulted only to drop whiteouts of paths no lower layer
/// has (they would be no-ops).
pub fn diff_overlay_upper<W: io::Write>(
    upper: &Path,
    lower_dirs: &[PathBuf],
    w: &mut LayerWriter<W>,
    opts: &WriteDirOptions,
    skip: &dyn Fn(&Path, &Metadata) -> bool,
) -> Result<(), DiffError> {
    let mut links = HashMap::new();
    let mut it = walk(upper);
    while let Some(e) = it.next() {
        let e = e.map_err(walk_err)?;
        let md = e.metadata().map_err(walk_err)?;
        let rel = rel_of(upper, e.path());
        if skip(rel, &md) {
            if md.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            let in_lower = lower_dirs.is_empty()
                || lower_dirs.iter().any(|l| fs::symlink_metadata(l.join(rel)).is_ok());
            if in_lower {
                w.add_whiteout(rel)?;
            }
            continue;
        }
        if md.is_dir() && xattr::get(e.path(), "trusted.overlay.redirect").ok().flatten().is_some()
        {
            return Err(DiffError::Unsupported {
                path: e.path().display().to_string(),
                reason: "overlayfs redirect_dir is on (renamed directory); mount with redirect_dir=off",
            });
        }
        emit(w, rel, e.path(), &md, opts, &mut links)?;
        if md.is_dir() && overlay_opaque(e.path()) {
            w.add_opaque(rel)?;
        }
    }
    Ok(())
}

/// Whether two regular files have the same content, read in blocks.
fn same_content(a: &Path, b: &Path) -> Result<bool, DiffError> {
    let mut fa = File::open(a).map_err(io_err("open", a))?;
    let mut fb = File::open(b).map_err(io_err("open", b))?;
    let mut ba = vec![0u8; 128 * 1024];
    let mut bb = vec![0u8; 128 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_err("read", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_err("read", b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn kind_of(md: &Metadata) -> u32 {
    md.mode() & libc::S_IFMT
}

/// Whether `upper` differs from `lower` in anything a layer records.
fn changed(
    lower: &Path,
    lmd: &Metadata,
    upper: &Path,
    umd: &Metadata,
    opts: &WriteDirOptions,
) -> Result<bool, DiffError> {
    if kind_of(lmd) != kind_of(umd)
        || lmd.mode() & 0o7777 != umd.mode() & 0o7777
        || lmd.uid() != umd.uid()
        || lmd.gid() != umd.gid()
    {
        return Ok(true);
    }
    let ft = umd.file_type();
    if ft.is_file() {
        if lmd.len() != umd.len() {
            return Ok(true);
        }
        // Same size and mtime: trusted unchanged (what rsync and BuildKit's copy differ do).
        if (lmd.mtime(), lmd.mtime_nsec()) != (umd.mtime(), umd.mtime_nsec())
            && !same_content(lower, upper)?
        {
            return Ok(true);
        }
    } else if ft.is_symlink() {
        if fs::read_link(lower).map_err(io_err("readlink", lower))?
            != fs::read_link(upper).map_err(io_err("readlink", upper))?
        {
            return Ok(true);
        }
    } else if (ft.is_char_device() || ft.is_block_device()) && lmd.rdev() != umd.rdev() {
        return Ok(true);
    }
    if !opts.no_xattrs && read_xattrs(lower)? != read_xattrs(upper)? {
        return Ok(true);
    }
    Ok(false)
}

struct TreeDiff<'a, W: io::Write> {
    lower: &'a Path,
    upper: &'a Path,
    w: &'a mut LayerWriter<W>,
    opts: &'a WriteDirOptions,
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories already written, so parents are written once (containerd's
    /// `includeParents`: a changed file's parent dirs always precede it).
    dirs_done: HashSet<PathBuf>,
}

impl<W: io::Write> TreeDiff<'_, W> {
    fn parents(&mut self, rel: &Path) -> Result<(), DiffError> {
        let mut todo = Vec::new();
        let mut p = rel.parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() || self.dirs_done.contains(d) {
                break;
            }
            todo.push(d.to_path_buf());
            p = d.parent();
        }
        for d in todo.into_iter().rev() {
            let abs = self.upper.join(&d);
            let md = fs::symlink_metadata(&abs).map_err(io_err("stat", &abs))?;
            let meta = entry_meta(&abs, &md, self.opts)?;
            self.w.add_dir(&d, &meta)?;
            self.dirs_done.insert(d);
        }
        Ok(())
    }

    fn add(&mut self, rel: &Path, md: &Metadata) -> Result<(), DiffError> {
        if self.dirs_done.contains(rel) {
            return Ok(());
        }
        self.parents(rel)?;
        let abs = self.upper.join(rel);
        emit(self.w, rel, &abs, md, self.opts, &mut self.links)?;
        if md.is_dir() {
            self.dirs_done.insert(rel.to_path_buf());
        }
        Ok(())
    }

    /// Whiteouts for children of `rel` that exist in lower but not in upper.
    fn deletions(&mut self, rel: &Path) -> Result<(), DiffError> {
        let ldir = self.lower.join(rel);
        let mut names: Vec<_> = fs::read_dir(&ldir)
            .map_err(io_err("read dir", &ldir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("read dir", &ldir))?;
        names.sort();
        for n in names {
            let crel = rel.join(&n);
            match fs::symlink_metadata(self.upper.join(&crel)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The whiteout's directory (and its ancestors) come first.
                    self.parents(&crel)?;
                    self.w.add_whiteout(&crel)?;
                }
                Err(e) => return Err(io_err("stat", &self.upper.join(&crel))(e)),
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), DiffError> {
        self.deletions(Path::new(""))?;
        for e in walk(self.upper) {
            let e = e.map_err(walk_err)?;
            let umd = e.metadata().map_err(walk_err)?;
            let rel = rel_of(self.upper, e.path()).to_path_buf();
            let labs = self.lower.join(&rel);
            let lmd = match fs::symlink_metadata(&labs) {
                Ok(m) => Some(m),
                // ENOTDIR: a lower ancestor is not a directory, so nothing is there.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    None
                }
                Err(e) => return Err(io_err("stat", &labs)(e)),
            };
            match lmd {
                None => self.add(&rel, &umd)?,
                Some(lmd) if umd.is_dir() && !lmd.is_dir() => {
                    // Something else became a directory: opaque so nothing of the old
                    // entry's name can show through from lower layers.
                    self.add(&rel, &umd)?;
                    self.w.add_opaque(&rel)?;
                }
                Some(lmd) => {
                    if changed(&labs, &lmd, e.path(), &umd, self.opts)? {
                        self.add(&rel, &umd)?;
                    }
                    if umd.is_dir() && lmd.is_dir() {
                        self.deletions(&rel)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The copy fallback: compares a full `lower` tree with a full `upper` tree and writes
/// the difference: added and modified entries (with their parent directories), whiteouts
/// for deletions, and an opaque marker when a non-directory was replaced by a directory.
/// Files are compared by type, mode, owner, size, symlink target, device numbers and
/// xattrs, and by content when the size matches but the mtime differs.
pub fn diff_trees<W: io::Write>(
    lower: &Path,
    upper: &Path,
    w: &mut LayerWriter<W>,
    opts: &WriteDirOptions,
) -> Result<(), DiffError> {
    TreeDiff { lower, upper, w, opts, links: HashMap::new(), dirs_done: HashSet::new() }.run()
}
