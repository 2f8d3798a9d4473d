//! `--cache-from` and `--cache-to type=local`: reading BuildKit-format caches into step
//! hits, and writing the build's records and layers out as one.
//!
//! strata's record digests are its own step keys, so an exported cache gives hits to the
//! next strata build anywhere; caches BuildKit wrote parse and verify, but their keys are
//! BuildKit's (computed from LLB), so they do not hit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_cache::options::{CacheMode, CompressionType, ExportOptions, ImportOptions};
use strata_cache::{CacheConfig, CacheConfigBuilder, CacheManifest, GoTime, ManifestForm};
use strata_layer::{Compression, CompressionOptions};
use strata_oci::{Descriptor, Digest, Layout, media};

use crate::error::BuildError;
use crate::progress::Progress;
use crate::solver::Solved;
use crate::state::{ChainLayer, StateDir, StepRecord};

/// One imported cache version.
struct Source {
    name: String,
    layout: Layout,
    manifest: CacheManifest,
    config: CacheConfig,
    by_key: HashMap<String, usize>,
    hits: AtomicUsize,
}

/// All `--cache-from` sources, in the order given.
#[derive(Default)]
pub(crate) struct Imports {
    sources: Vec<Source>,
}

impl std::fmt::Debug for Imports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imports").field("sources", &self.sources.len()).finish()
    }
}

const JSON_LIMIT: u64 = strata_cache::MAX_READ_SIZE as u64;

fn read_verified(layout: &Layout, d: &Digest) -> Result<Vec<u8>, String> {
    let bytes = layout.read_blob_limited(d, JSON_LIMIT).map_err(|e| e.to_string())?;
    if Digest::of_bytes(&bytes) != *d {
        return Err(format!("blob {d} does not match its digest (corrupt)"));
    }
    Ok(bytes)
}

fn load_one(o: &ImportOptions) -> Result<Source, String> {
    let name = o.src.display().to_string();
    if !o.src.exists() {
        return Err(format!(
            "local cache import at {name} not found: the directory does not exist"
        ));
    }
    let layout =
        Layout::open(&o.src).map_err(|e| format!("local cache import at {name} skipped: {e}"))?;
    let digest = match &o.digest {
        Some(d) => d.clone(),
        None => {
            let index = layout
                .read_index()
                .map_err(|e| format!("local cache import at {name} skipped due to err: {e}"))?
                .ok_or_else(|| format!("local cache import at {name} skipped: no index.json"))?;
            index.resolve(&o.tag).map(|d| d.digest.clone()).ok_or_else(|| {
                format!("local cache import at {name} skipped: no digest found for tag {}", o.tag)
            })?
        }
    };
    let bytes = read_verified(&layout, &digest).map_err(|e| {
        format!("local cache import at {name} skipped: digest {digest} unavailable: {e}")
    })?;
    let manifest = CacheManifest::parse(&bytes)
        .map_err(|e| format!("local cache import at {name} skipped: manifest {digest}: {e}"))?;
    let cfg_bytes = read_verified(&layout, &manifest.config.digest)
        .map_err(|e| format!("local cache import at {name} skipped: cache config: {e}"))?;
    let config = CacheConfig::from_json(&cfg_bytes).map_err(|e| {
        format!(
            "local cache import at {name} skipped: cache config {}: {e}",
            manifest.config.digest
        )
    })?;
    let problems = strata_cache::validate(&config, Some(&manifest.layers));
    if let Some(p) = problems.iter().find(|p| p.severity == strata_cache::Severity::Error) {
        return Err(format!(
            "local cache import at {name} skipped: invalid cache config: {}",
            p.message
        ));
    }
    let by_key = config.records.iter().enumerate().map(|(i, r)| (r.digest.clone(), i)).collect();
    // Best effort: tell `cache prune` this version was used (never fails the build).
    strata_cache::gc::record_use(layout.root(), &digest);
    Ok(Source { name, layout, manifest, config, by_key, hits: AtomicUsize::new(0) })
}

impl Imports {
    /// Opens every source; a source that cannot be used is a warning, never an error.
    pub(crate) fn load(opts: &[ImportOptions], progress: &Progress) -> Self {
        let mut sources = Vec::new();
        for o in opts {
            let step = progress.step(format!("importing cache manifest from {}", o.src.display()));
            match load_one(o) {
                Ok(s) => {
                    step.log(&format!(
                        "{} records, {} layers (manifest {})",
                        s.config.records.len(),
                        s.config.layers.len(),
                        s.manifest.config.digest.short()
                    ));
                    step.done();
                    sources.push(s);
                }
                Err(msg) => {
                    step.error("skipped");
                    progress.warn(&msg);
                }
            }
        }
        Self { sources }
    }

    /// Hits and names per source, for the summary.
    pub(crate) fn summary(&self) -> Vec<(String, usize)> {
        self.sources.iter().map(|s| (s.name.clone(), s.hits.load(Ordering::Relaxed))).collect()
    }

    /// Finds `key` in the imported caches and copies its layers into the state dir.
    /// `Ok(None)`: not there. `Err`: there, but unusable (a warning; the step runs).
    pub(crate) fn materialize(
        &self,
        key: &str,
        state: &StateDir,
    ) -> Result<Option<(StepRecord, String)>, String> {
        for s in &self.sources {
            let Some(&ri) = s.by_key.get(key) else { continue };
            let rec = &s.config.records[ri];
            // BuildKit takes the newest result.
            let Some(res) = rec.results.iter().max_by(|a, b| a.created_at.cmp(&b.created_at))
            else {
                continue;
            };
            let chain_idx =
                strata_cache::layer_chain(&s.config, res.layer).map_err(|e| e.to_string())?;
            let mut chain = Vec::new();
            for li in chain_idx {
                let blob = &s.config.layers[li].blob;
                let desc = s.manifest.layers.iter().find(|d| &d.digest == blob).ok_or_else(|| {
                    format!("cache {}: layer {blob} is not listed in the manifest; running the step instead", s.name)
                })?;
                let diff = desc
                    .annotation(media::ANNOTATION_UNCOMPRESSED)
                    .and_then(|d| Digest::parse(d).ok())
                    .ok_or_else(|| {
                        format!("cache {}: missing uncompressed annotation for {blob}", s.name)
                    })?;
                if state.layer_info(&diff).is_none_or(|i| {
                    i.blobs
                        .iter()
                        .all(|b| !matches!(state.store().stat_blob(&b.digest), Ok(Some(_))))
                }) {
                    // Verify before adopting: a corrupt blob must be a miss, not a wrong image.
                    s.layout.verify_blob(blob, Some(desc.size)).map_err(|p| {
                        format!(
                            "cache {}: layer {blob} is unusable ({p:?}); running the step instead",
                            s.name
                        )
                    })?;
                    state
                        .adopt_layer_blob(&s.layout.blob_path(blob), desc, &diff, None)
                        .map_err(|e| format!("cache {}: {e}; running the step instead", s.name))?;
                }
                let created = desc
                    .annotation(media::ANNOTATION_CREATED_AT)
                    .map(str::to_owned)
                    .unwrap_or_else(|| res.created_at.to_rfc3339_nano());
                chain.push(ChainLayer { diff_id: diff, created_at: created });
            }
            let record = StepRecord {
                key: key.to_owned(),
                created_at: res.created_at.to_rfc3339_nano(),
                chain,
            };
            state.put_record(&record).map_err(|e| e.to_string())?;
            s.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((record, s.name.clone())));
        }
        Ok(None)
    }
}

fn compression_of(t: CompressionType) -> Compression {
    match t {
        CompressionType::Uncompressed => Compression::Uncompressed,
        CompressionType::Gzip => Compression::Gzip,
        CompressionType::Estargz => Compression::Estargz,
        CompressionType::Zstd => Compression::Zstd,
    }
}

/// What one export did, for the summary.
#[derive(Debug, Default)]
pub(crate) struct ExportSummary {
    pub(crate) manifest: Option<Descriptor>,
    pub(crate) written: usize,
    pub(crate) reused: usize,
    pub(crate) bytes_written: u64,
}

/// Exports the solved graph to `opts.dest`. Order: layers, config, manifest, index.json.
pub(crate) fn export(
    solved: &Solved,
    state: &StateDir,
    opts: &ExportOptions,
    progress: &Progress,
) -> Result<ExportSummary, BuildError> {
    let fail = |m: String| BuildError::CacheExport { dest: opts.dest.clone(), message: m };
    let step = progress.step(format!("exporting cache to {}", opts.dest.display()));
    std::fs::create_dir_all(&opts.dest)
        .map_err(|e| fail(format!("cannot create the directory: {e}")))?;
    let layout = Layout::create(&opts.dest).map_err(|e| fail(e.to_string()))?;
    let timeout = strata_oci::default_lock_timeout();
    // Held from the first blob until index.json names them: prune cannot take them away.
    let _lease = layout.export_lease(timeout).map_err(|e| fail(e.to_string()))?;
    let family =
        if opts.oci_mediatypes { media::MediaFamily::Oci } else { media::MediaFamily::Docker };
    let mut copts = CompressionOptions::new(compression_of(opts.compression));
    if let Some(l) = opts.compression_level {
        copts = copts.with_level(l);
    }
    let results: HashSet<usize> = match opts.mode {
        CacheMode::Max => (0..solved.graph.len()).filter(|&i| solved.graph[i].has_result).collect(),
        CacheMode::Min => {
            solved.final_lineage.iter().copied().filter(|&i| solved.graph[i].has_result).collect()
        }
    };
    // Descriptors per diffID in the export's compression, computed once.
    let mut descs: HashMap<Digest, (Descriptor, std::path::PathBuf)> = HashMap::new();
    let mut describe = |l: &ChainLayer| -> Result<Descriptor, BuildError> {
        if let Some((d, _)) = descs.get(&l.diff_id) {
            let mut d = d.clone();
            d.set_annotation(media::ANNOTATION_CREATED_AT, l.created_at.clone());
            return Ok(d);
        }
        let info = state
            .layer_info(&l.diff_id)
            .ok_or_else(|| BuildError::MissingLayer { diff_id: l.diff_id.clone() })?;
        // Without force-compression, a layer strata did not build (a base image layer,
        // an imported one) keeps the blob it came with, as BuildKit does.
        let wanted = copts.compression;
        let foreign = info.blobs.iter().all(|b| b.adopted);
        let (info, blob) = match info.blob(wanted) {
            Some(b) => (info.clone(), b.clone()),
            None if foreign && !opts.force_compression => {
                let b = info
                    .blobs
                    .first()
                    .cloned()
                    .ok_or_else(|| BuildError::MissingLayer { diff_id: l.diff_id.clone() })?;
                (info.clone(), b)
            }
            None => state.ensure_blob(&l.diff_id, &copts)?,
        };
        let d = info.descriptor(&blob, family, Some(&l.created_at));
        descs.insert(l.diff_id.clone(), (d.clone(), state.store().blob_path(&blob.digest)));
        Ok(d)
    };
    let mut b = CacheConfigBuilder::new().media_family(family);
    let ids: Vec<_> = solved.graph.iter().map(|n| b.add_record(n.key.clone())).collect();
    for (i, n) in solved.graph.iter().enumerate() {
        for (k, slot) in n.inputs.iter().enumerate() {
            for (from, sel) in slot {
                b.add_input(ids[i], k, ids[*from], sel.clone()).map_err(|e| fail(e.to_string()))?;
            }
        }
        if results.contains(&i) && !n.chain.is_empty() {
            let chain = n.chain.iter().map(&mut describe).collect::<Result<Vec<_>, _>>()?;
            let t = GoTime::parse(&n.created_at).unwrap_or_else(|_| GoTime::zero());
            b.add_result(ids[i], chain, t).map_err(|e| fail(e.to_string()))?;
        }
    }
    let built = b.build().map_err(|e| fail(e.to_string()))?;
    if built.is_empty() {
        step.log("skipping cache export for empty result");
        step.done();
        return Ok(ExportSummary::default());
    }
    let paths: BTreeMap<Digest, std::path::PathBuf> =
        descs.values().map(|(d, p)| (d.digest.clone(), p.clone())).collect();
    let mut summary = ExportSummary::default();
    let mut done = HashSet::new();
    for d in &built.layers {
        if !done.insert(d.digest.clone()) {
            continue;
        }
        let comp = strata_cache::compression_of(d)
            .map(|c| format!("{c:?}").to_lowercase())
            .unwrap_or_default();
        if matches!(layout.stat_blob(&d.digest), Ok(Some(_))) {
            summary.reused += 1;
            step.log(&format!("reusing layer {} ({comp}, {} bytes)", d.digest, d.size));
            continue;
        }
        let src = paths
            .get(&d.digest)
            .ok_or_else(|| fail(format!("no local blob for layer {}", d.digest)))?;
        layout.link_or_copy_blob(src, &d.digest, d.size).map_err(|e| fail(e.to_string()))?;
        summary.written += 1;
        summary.bytes_written += d.size;
        step.log(&format!("writing layer {} ({comp}, {} bytes)", d.digest, d.size));
    }
    let cfg_bytes = built.config.to_json();
    let cfg = layout.write_blob(&cfg_bytes).map_err(|e| fail(e.to_string()))?;
    step.log(&format!("writing config {}", cfg.digest));
    let form = if opts.image_manifest {
        ManifestForm::OciManifest
    } else if opts.oci_mediatypes {
        ManifestForm::OciIndex
    } else {
        ManifestForm::DockerManifestList
    };
    let manifest = CacheManifest {
        form,
        layers: built.layers.clone(),
        config: Descriptor::new(media::BUILDKIT_CACHE_CONFIG, cfg.digest.clone(), cfg.size),
    };
    let mbytes = manifest.encode();
    for (what, len) in [("cache config", cfg_bytes.len()), ("cache manifest", mbytes.len())] {
        if let Some(w) = strata_cache::buildkit_import_limit_exceeded(len as u64) {
            progress.warn(&format!("{what} for {}: {w}", opts.dest.display()));
        }
    }
    let m = layout.write_blob(&mbytes).map_err(|e| fail(e.to_string()))?;
    step.log(&format!("writing manifest {}", m.digest));
    let desc = Descriptor::new(form.media_type(), m.digest.clone(), m.size);
    layout.put_tag(desc.clone(), &opts.tag, timeout).map_err(|e| fail(e.to_string()))?;
    drop(_lease);
    if let Some(policy) =
        strata_cache::gc::PrunePolicy::for_export(&opts.gc, opts.reset, m.digest.clone())
    {
        match strata_cache::gc::prune(&layout, &policy, false, timeout) {
            Ok(r) => {
                step.log(&format!("pruned {} blobs ({} bytes)", r.removed_blobs, r.removed_bytes))
            }
            Err(e) => progress.warn(&format!("cache prune of {} failed: {e}", opts.dest.display())),
        }
    }
    step.done();
    summary.manifest = Some(desc);
    Ok(summary)
}

/// Whether `dest` can be used for an export (checked before the build starts).
pub(crate) fn precheck(dest: &Path) -> Result<(), String> {
    if dest.exists() && !dest.is_dir() {
        return Err(format!("{} exists and is not a directory", dest.display()));
    }
    if !dest.exists() {
        std::fs::create_dir_all(dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    }
    Ok(())
}
