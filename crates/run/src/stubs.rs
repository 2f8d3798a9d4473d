//! Keeping mount points out of the step's layer.
//!
//! runc creates an empty file or directory for every mount target that the
//! image lacks (`/proc`, `/etc/hosts`, a secret's target, …). On an overlay
//! those land in the upper directory and would become part of the layer,
//! although the command never created them. Like BuildKit's
//! `MountStubsCleaner`, we note before the run which targets (and which of
//! their parents) are missing, and afterwards remove them again if they are
//! still empty, restoring the parent directory's timestamps.
//!
//! One step further than BuildKit: creating a stub copies its existing parent
//! (e.g. `/etc`) up into the upper directory. If after cleaning that copy is
//! empty and its metadata equals the lower one, it carries no change, so we
//! remove it from the upper directory once the overlay is unmounted. Then a
//! step that changed nothing leaves an empty upper directory.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, FileTimes, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::rootpath::resolve_in_root;

/// Directory metadata that overlayfs copies up and a layer diff would compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: i64,
}

impl DirMeta {
    fn of(m: &Metadata) -> Self {
        DirMeta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// An existing directory in which runc will create stubs.
#[derive(Debug)]
struct Anchor {
    names: BTreeSet<OsString>,
    meta: Metadata,
}

/// What existed before the run, to undo runc's mount-point creation after it.
#[derive(Debug)]
pub(crate) struct MountStubs {
    merged: PathBuf,
    /// Stubs relative to the root, deepest first.
    stubs: Vec<PathBuf>,
    /// Existing parents of stubs, relative to the root.
    anchors: BTreeMap<PathBuf, Anchor>,
    /// Anchors and their ancestors with their pre-run metadata, relative to the root.
    chain: BTreeMap<PathBuf, DirMeta>,
}

impl MountStubs {
    /// Records which of the container paths `targets` are missing in the
    /// mounted root filesystem `merged`.
    pub(crate) fn before(merged: &Path, targets: &[String]) -> io::Result<Self> {
        let mut stubs = BTreeSet::new();
        let mut anchors = BTreeMap::new();
        let mut chain = BTreeMap::new();
        for target in targets {
            let mut real = resolve_in_root(merged, target)?;
            let mut created_any = false;
            loop {
                if real == merged {
                    break;
                }
                match fs::symlink_metadata(&real) {
                    Ok(_) => break,
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            || e.raw_os_error() == Some(libc::ENOTDIR) =>
                    {
                        stubs.insert(rel(merged, &real));
                        created_any = true;
                        match real.parent() {
                            Some(p) => real = p.to_path_buf(),
                            None => break,
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if !created_any {
                continue;
            }
            let anchor_rel = rel(merged, &real);
            if anchors.contains_key(&anchor_rel) {
                continue;
            }
            let meta = fs::symlink_metadata(&real)?;
            if !meta.is_dir() {
                // runc will fail on this target itself; nothing to undo.
                continue;
            }
            let names = fs::read_dir(&real)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<BTreeSet<_>>>()?;
            let mut up = anchor_rel.clone();
            while !up.as_os_str().is_empty() {
                let m = fs::symlink_metadata(merged.join(&up))?;
                chain.insert(up.clone(), DirMeta::of(&m));
                if !up.pop() {
                    break;
                }
            }
            anchors.insert(anchor_rel, Anchor { names, meta });
        }
        let mut stubs: Vec<PathBuf> = stubs.into_iter().collect();
        stubs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(MountStubs { merged: merged.to_path_buf(), stubs, anchors, chain })
    }

    /// Removes the stubs that are still empty, through the still-mounted
    /// overlay (so overlayfs keeps its own bookkeeping straight), and restores
    /// the timestamps of their parents if their entries are as before the run.
    pub(crate) fn remove_stubs(&self) -> io::Result<()> {
        for stub in &self.stubs {
            let path = self.merged.join(stub);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if fs::read_dir(&path)?.next().is_some() {
                    continue;
                }
                fs::remove_dir(&path)?;
            } else if meta.is_file() && meta.len() == 0 {
                fs::remove_file(&path)?;
            }
            // Anything else the command put there itself: keep it.
        }
        for (anchor_rel, anchor) in &self.anchors {
            let path = self.merged.join(anchor_rel);
            let Ok(now) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !now.is_dir()
                || (now.mtime(), now.mtime_nsec())
                    == (anchor.meta.mtime(), anchor.meta.mtime_nsec())
            {
                // Untouched: setting times anyway would copy it up.
                continue;
            }
            let names = fs::read_dir(&path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<BTreeSet<_>>>()?;
            if names != anchor.names {
                // The command changed this directory; its mtime is part of the change.
                continue;
            }
            let times = FileTimes::new()
                .set_accessed(anchor.meta.accessed()?)
                .set_modified(anchor.meta.modified()?);
            fs::File::open(&path)?.set_times(times)?;
        }
        Ok(())
    }

    /// After unmounting: drops directories from `upper` that were only copied
    /// up because runc created stubs in them and that carry no change.
    pub(crate) fn prune_upper(&self, upper: &Path) -> io::Result<()> {
        let mut dirs: Vec<(&PathBuf, &DirMeta)> = self.chain.iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, before) in dirs {
            let path = upper.join(rel);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() || DirMeta::of(&meta) != *before {
                continue;
            }
            if fs::read_dir(&path)?.next().is_some() {
                continue;
            }
            if crate::xattr::is_opaque(&path)? {
                continue;
            }
            fs::remove_dir(&path)?;
        }
        Ok(())
    }
}

fn rel(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}
