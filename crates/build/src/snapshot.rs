//! Layer snapshots: each layer extracted once, in overlayfs form, under
//! `snapshots/<diffID hex>/`, so RUN can stack them as overlay lower dirs and COPY can read
//! a stage's files through a merged view. A snapshot is extracted into a temp dir and
//! renamed into place, so a crash never leaves a half-extracted snapshot behind.

use std::path::PathBuf;

use strata_layer::ApplyOptions;
use strata_oci::Digest;

use crate::error::BuildError;
use crate::state::StateDir;

/// The snapshot directory of a layer, extracting it if needed.
pub(crate) fn ensure(state: &StateDir, diff_id: &Digest) -> Result<PathBuf, BuildError> {
    let dest = state.snapshot_path(diff_id);
    if dest.is_dir() {
        return Ok(dest);
    }
    let tar = state.open_layer_tar(diff_id)?;
    let tmp = state.temp_dir("snapshot-")?;
    let target = tmp.path().join("fs");
    std::fs::create_dir(&target).map_err(|source| BuildError::Io {
        op: "create",
        path: target.clone(),
        source,
    })?;
    strata_layer::extract_snapshot(tar, &target, &ApplyOptions::default())?;
    match std::fs::rename(&target, &dest) {
        Ok(()) => Ok(dest),
        // Another build extracted it first: theirs is as good as ours.
        Err(_) if dest.is_dir() => Ok(dest),
        Err(source) => Err(BuildError::Io { op: "rename snapshot into", path: dest, source }),
    }
}

/// Moves a finished RUN upper directory into place as the snapshot of its layer (it is
/// already in overlayfs form), unless one exists.
pub(crate) fn adopt(state: &StateDir, diff_id: &Digest, upper: PathBuf) {
    let dest = state.snapshot_path(diff_id);
    if dest.exists() {
        return;
    }
    if let Err(e) = std::fs::rename(&upper, &dest) {
        tracing::debug!("could not keep RUN snapshot {}: {e}", dest.display());
    }
}
