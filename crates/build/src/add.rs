//! ADD: like COPY, plus local tar archives (plain, gzip or zstd) are extracted into the
//! destination. Remote URLs and git sources are refused before this point.

use std::io::Read;

use strata_layer::ApplyOptions;
use strata_oci::media::LayerCompression;

use crate::copy::{self, CopyRequest, Planned};
use crate::error::BuildError;
use crate::fsview::{self, DirView, FsView, Kind};
use crate::state::StateDir;

fn is_archive(path: &std::path::Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    match strata_layer::sniff(&head[..n]) {
        LayerCompression::Gzip | LayerCompression::Zstd => true,
        // A plain tar has "ustar" at offset 257.
        LayerCompression::Uncompressed => n >= 262 && &head[257..262] == b"ustar",
    }
}

/// Plans an ADD. Archive sources are extracted (safely: hostile paths are refused) into
/// a temp dir, whose contents are then copied like a directory. The temp dir is returned
/// so it lives until the layer is written.
pub(crate) fn plan_add(
    view: &dyn FsView,
    req: &CopyRequest,
    dest_is_dir: &mut dyn FnMut(&str) -> bool,
    what: &str,
    state: &StateDir,
) -> Result<(Vec<Planned>, Option<tempfile::TempDir>), BuildError> {
    let mut plain = req.clone();
    plain.sources.clear();
    let mut archives = Vec::new();
    for s in &req.sources {
        let rel = fsview::join(&fsview::clean(s));
        match fsview::resolve(view, &rel, true) {
            Ok(Some((_, e))) if e.kind() == Kind::File && is_archive(&e.host_path) => {
                archives.push(e.host_path.clone())
            }
            _ => plain.sources.push(s.clone()),
        }
    }
    if archives.is_empty() {
        return Ok((copy::plan(view, req, dest_is_dir, what)?, None));
    }
    let tmp = state.temp_dir("add-")?;
    let root = tmp.path().join("x");
    std::fs::create_dir(&root).map_err(|source| BuildError::Io {
        op: "create",
        path: root.clone(),
        source,
    })?;
    for a in &archives {
        let f = std::fs::File::open(a).map_err(|source| BuildError::Io {
            op: "open",
            path: a.clone(),
            source,
        })?;
        let r = strata_layer::open_layer_reader(std::io::BufReader::new(f), None)?;
        strata_layer::apply_layer(r, &root, &ApplyOptions::default()).map_err(|e| {
            BuildError::Source {
                instruction: what.to_owned(),
                message: format!("extracting {}: {e}", a.display()),
            }
        })?;
    }
    let mut planned = if plain.sources.is_empty() && plain.inline.is_empty() {
        Vec::new()
    } else {
        copy::plan(view, &plain, dest_is_dir, what)?
    };
    let archive_view = DirView::new(&root, None);
    let mut areq = req.clone();
    areq.sources = vec![".".into()];
    areq.inline.clear();
    areq.keep_owner = true;
    if !areq.dest.ends_with('/') {
        areq.dest.push('/');
    }
    planned.extend(copy::plan(&archive_view, &areq, dest_is_dir, what)?);
    // Re-sort and de-duplicate after merging the two plans.
    let mut seen = std::collections::HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        seen.insert(p.dest.clone(), i);
    }
    let mut out: Vec<Planned> = planned
        .into_iter()
        .enumerate()
        .filter(|(i, p)| seen.get(&p.dest) == Some(i))
        .map(|(_, p)| p)
        .collect();
    out.sort_by(|a, b| a.dest.split('/').cmp(b.dest.split('/')));
    Ok((out, Some(tmp)))
}
