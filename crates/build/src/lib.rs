//! strata-build: the build engine. A Dockerfile and a context go in; an image, cache
//! exports and outputs come out.
//!
//! - [`solver`]: stages → instructions → image states, with a cache lookup per step;
//! - [`copy`] / [`add`]: COPY and ADD with Docker's semantics and content checksums;
//! - [`runstep`]: RUN through `strata-run` (runc) on overlay snapshots;
//! - [`state`]: the state directory, itself an OCI layout plus records;
//! - [`cacheio`]: `--cache-from` / `--cache-to type=local`;
//! - [`output`]: `-o type=oci|docker|local|tar`.

mod add;
mod base;
mod cacheio;
mod checksum;
mod copy;
mod error;
mod fsview;
mod image;
mod output;
mod platform;
mod progress;
mod remote;
mod request;
mod runstep;
mod snapshot;
mod solver;
mod state;

use std::path::Path;
use std::sync::Arc;

pub use error::BuildError;
pub use image::ImageConfig;
pub use output::{Output, parse_output};
pub use platform::Platform;
pub use progress::{Progress, ProgressMode};
pub use request::{BuildRequest, DockerfileSource, NamedContext};
pub use state::StateDir;

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image manifest digest (`None` when no output needed the image assembled).
    pub image_digest: Option<strata_oci::Digest>,
    /// The image config digest.
    pub config_digest: Option<strata_oci::Digest>,
    /// Steps served from a cache.
    pub hits: usize,
    /// Steps executed.
    pub misses: usize,
}

fn read_dockerfile(req: &BuildRequest) -> Result<Vec<u8>, BuildError> {
    match &req.dockerfile {
        DockerfileSource::Bytes(b) => Ok(b.clone()),
        DockerfileSource::Path(p) => std::fs::read(p).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BuildError::Usage(format!(
                "failed to read Dockerfile: open {}: no such file or directory (use -f to name another file)",
                p.display()
            )),
            _ => BuildError::Io { op: "read Dockerfile", path: p.clone(), source },
        }),
    }
}

fn load_ignore(req: &BuildRequest) -> Result<Option<strata_dockerfile::DockerIgnore>, BuildError> {
    // BuildKit: `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's.
    let mut candidates = Vec::new();
    if let DockerfileSource::Path(p) = &req.dockerfile {
        let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".dockerignore");
        candidates.push(p.with_file_name(name));
    }
    if let Some(ctx) = &req.context {
        candidates.push(ctx.join(".dockerignore"));
    }
    for c in candidates {
        match std::fs::read_to_string(&c) {
            Ok(text) => return Ok(Some(strata_dockerfile::DockerIgnore::parse(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(BuildError::Io { op: "read", path: c, source }),
        }
    }
    Ok(None)
}

/// Runs a build end to end: solve, export caches (also after a failure, so the steps that
/// completed are kept), then write the image outputs.
pub fn build(req: &BuildRequest) -> Result<BuildOutcome, BuildError> {
    let progress = Progress::new(req.progress);
    let result = build_with(req, &progress);
    progress.finish();
    result
}

fn build_with(req: &BuildRequest, progress: &Progress) -> Result<BuildOutcome, BuildError> {
    if let Some(ctx) = &req.context
        && !ctx.is_dir()
    {
        return Err(BuildError::Usage(format!(
            "unable to prepare context: path {:?} not found or not a directory",
            ctx.display().to_string()
        )));
    }
    // Exports whose destination is unusable fail now, before any work (or warn with
    // ignore-error and are dropped).
    let mut exports = Vec::new();
    for e in &req.cache_to {
        // A registry is checked by the export itself (a directory named like the ref must
        // not be created here).
        let checked =
            if e.backend.registry_ref().is_some() { Ok(()) } else { cacheio::precheck(&e.dest) };
        match checked {
            Ok(()) => exports.push(e.clone()),
            Err(msg) if e.ignore_error => {
                progress.warn(&format!("cache export skipped (ignore-error): {msg}"))
            }
            Err(msg) => return Err(BuildError::CacheExport { dest: e.dest.clone(), message: msg }),
        }
    }
    let state = StateDir::open(&req.state_root)?;
    let _lock = state.lock(false)?;

    let step =
        progress.step(format!("[internal] load build definition from {}", req.dockerfile_name));
    let bytes = read_dockerfile(req)?;
    step.log(&format!("transferring dockerfile: {}B done", bytes.len()));
    let df = strata_dockerfile::parse(&req.dockerfile_name, &bytes)?;
    step.done();
    let step = progress.step("[internal] load .dockerignore");
    let ignore = load_ignore(req)?;
    step.done();
    let context =
        req.context.as_ref().map(|root| {
            let view = fsview::DirView::new(root.clone(), None);
            let Some(ig) = ignore else { return Arc::new(view) };
            // An excluded directory that an exception (`!dir/keep`) may re-include stays
            // visible so COPY descends into it; its children are then filtered one by one, and
            // it is only copied if one of them is.
            let ig = Arc::new(ig);
            let (a, b) = (ig.clone(), ig);
            let filter: fsview::IgnoreFn = Box::new(move |rel: &str, is_dir: bool| {
                a.matches(rel, is_dir) && !(is_dir && a.may_contain_exceptions(rel))
            });
            Arc::new(fsview::DirView::new(root.clone(), Some(filter)).with_exception_dirs(
                move |rel| b.matches(rel, true) && b.may_contain_exceptions(rel),
            ))
        });
    let imports = cacheio::Imports::load(&req.cache_from, &state, progress);
    let mut solver = solver::Solver::new(req, &state, progress, &imports, &df, context);
    // New layers are compressed once, in the encoding most likely needed: gzip when an
    // image is written (outputs and the metadata file use gzip layers), otherwise the first
    // cache export's codec, so a zstd export does not pay for gzip and then zstd. eStargz
    // changes the diffID (its TOC is part of the tar), so its layers start as gzip.
    let needs_image = !req.outputs.is_empty() || req.metadata_file.is_some();
    if let Some(e) = exports.first().filter(|_| !needs_image) {
        use strata_cache::options::CompressionType as C;
        let c = match e.compression {
            C::Zstd => Some(strata_layer::Compression::Zstd),
            C::Uncompressed => Some(strata_layer::Compression::Uncompressed),
            C::Gzip => Some(strata_layer::Compression::Gzip),
            C::Estargz => None,
        };
        if let Some(c) = c {
            let mut o = strata_layer::CompressionOptions::new(c);
            if let Some(l) =
                e.compression_level.filter(|_| c != strata_layer::Compression::Uncompressed)
            {
                o = o.with_level(l);
            }
            solver.layer_compression = o;
        }
    }
    let (result, solved) = solver.solve();

    let mut export_error = None;
    for e in &exports {
        match cacheio::export(&solved, &state, e, progress) {
            Ok(s) => {
                if let Some(m) = s.manifest {
                    progress.message(&format!(
                        "cache {}: manifest {} ({} layers written, {} reused, {} bytes)",
                        e.dest.display(),
                        m.digest,
                        s.written,
                        s.reused,
                        s.bytes_written
                    ));
                }
            }
            Err(err) if e.ignore_error => {
                progress.warn(&format!("{err} (ignored: ignore-error=true)"))
            }
            Err(err) => export_error = export_error.or(Some(err)),
        }
    }
    for (src, hits) in imports.summary() {
        progress.message(&format!("cache {src}: {hits} hits"));
    }
    let final_state = result?;
    if let Some(e) = export_error {
        return Err(e);
    }
    // Assembling the image is free when every layer already has its gzip blob; when some
    // would need encoding (a zstd cache was imported or exported) and nothing asked for the
    // image, skip it: the cache is what this build was for.
    let gzip_ready = final_state.chain.iter().all(|l| {
        state
            .layer_info(&l.diff_id)
            .is_some_and(|i| i.blob(strata_layer::Compression::Gzip).is_some())
    });
    if !needs_image && !gzip_ready {
        progress.message(&format!(
            "no --output given: the image was not written (add -o type=oci,dest=FILE); {} steps cached, {} executed",
            solved.hits, solved.misses
        ));
        return Ok(BuildOutcome {
            image_digest: None,
            config_digest: None,
            hits: solved.hits,
            misses: solved.misses,
        });
    }
    let img = output::assemble(&state, &final_state, strata_layer::Compression::Gzip)?;
    if !req.outputs.is_empty() {
        let step = progress.step("exporting to image");
        output::write_outputs(&state, &final_state, &img, &req.outputs, &req.tags)?;
        step.done();
    }
    if let Some(path) = &req.metadata_file {
        let v = output::metadata(&img, &req.tags);
        let bytes = serde_json::to_vec_pretty(&v).map_err(BuildError::Json)?;
        std::fs::write(path, bytes).map_err(|source| BuildError::Io {
            op: "write",
            path: path.clone(),
            source,
        })?;
    }
    progress.message(&format!(
        "image {} ({} steps cached, {} executed)",
        img.manifest.digest, solved.hits, solved.misses
    ));
    Ok(BuildOutcome {
        image_digest: Some(img.manifest.digest.clone()),
        config_digest: Some(img.config.digest.clone()),
        hits: solved.hits,
        misses: solved.misses,
    })
}

/// Disk usage of a state directory, by part.
pub fn state_usage(root: &Path) -> Vec<(String, u64)> {
    let base = root.join("v1");
    ["store", "snapshots", "cachemounts", "records", "layers", "resolved", "checksums", "tmp"]
        .iter()
        .map(|p| (p.to_string(), dir_size(&base.join(p))))
        .collect()
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Empties the state directory (everything when `keep_storage` is `None`). With a
/// budget, what is cheapest to recreate goes first: snapshots (re-extracted from blobs),
/// then cache mounts, then everything. Runs under the exclusive state lock, so it waits
/// for running builds.
pub fn prune_state(root: &Path, keep_storage: Option<u64>) -> Result<u64, BuildError> {
    let state = StateDir::open(root)?;
    let _lock = state.lock(true)?;
    let base = root.join("v1");
    let total = |_: ()| -> u64 { state_usage(root).iter().map(|(_, s)| s).sum() };
    let before = total(());
    let groups: [&[&str]; 3] = [
        &["snapshots", "tmp"],
        &["cachemounts"],
        &["records", "layers", "resolved", "checksums", "store"],
    ];
    for g in groups {
        if keep_storage.is_some_and(|k| total(()) <= k) {
            break;
        }
        for d in g {
            let p = base.join(d);
            make_writable(&p);
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    drop(_lock);
    StateDir::open(root)?;
    Ok(before.saturating_sub(total(())))
}

/// Blobs are read-only and snapshot dirs may be too; removal needs write permission on
/// directories.
pub(crate) fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(p).into_iter().filter_map(Result::ok) {
        if e.file_type().is_dir()
            && let Ok(m) = e.metadata()
        {
            let mut perm = m.permissions();
            perm.set_mode(perm.mode() | 0o700);
            let _ = std::fs::set_permissions(e.path(), perm);
        }
    }
}
