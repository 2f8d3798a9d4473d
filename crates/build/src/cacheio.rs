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
    /// The cache manifest's digest (what `digest=` selects).
    digest: Digest,
    layout: Layout,
    manifest: CacheManifest,
    config: CacheConfig,
    by_key: HashMap<String, usize>,
    hits: AtomicUsize,
    /// For `type=registry`: the repository layer blobs are fetched from on a hit (into
    /// `layout`, a staging layout in the state dir that lives as long as the build).
    remote: Option<(strata_registry::ImageRef, tempfile::TempDir)>,
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

/// A registry cache: the manifest and config are fetched now (into a staging layout),
/// layer blobs only when a hit needs them ([`ensure_local`]).
fn load_registry(o: &ImportOptions, reference: &str, state: &StateDir) -> Result<Source, String> {
    let skip =
        |e: &dyn std::fmt::Display| format!("registry cache import from {reference} skipped: {e}");
    let mut r = strata_registry::ImageRef::parse(reference).map_err(|e| skip(&e))?;
    if let Some(d) = &o.digest {
        r = r.with_digest(d);
    }
    let registry = crate::remote::registry().map_err(|e| skip(&e))?;
    let m = registry.get_manifest(&r).map_err(|e| skip(&e))?;
    let stage = state.temp_dir("cache-import-").map_err(|e| skip(&e))?;
    let layout = Layout::create(stage.path().join("layout")).map_err(|e| skip(&e))?;
    layout.write_blob(&m.bytes).map_err(|e| skip(&e))?;
    let manifest =
        CacheManifest::parse(&m.bytes).map_err(|e| skip(&format!("manifest {}: {e}", m.digest)))?;
    let cfg =
        registry.get_blob_bytes(&r, &manifest.config.digest, JSON_LIMIT).map_err(|e| skip(&e))?;
    layout.write_blob(&cfg).map_err(|e| skip(&e))?;
    let mut s = open_source(reference.to_owned(), layout, m.digest, "registry cache import from")?;
    s.remote = Some((r, stage));
    Ok(s)
}

/// Fetches a registry source's layer blob into its staging layout (no-op when local).
fn ensure_local(s: &Source, desc: &Descriptor) -> Result<(), String> {
    let Some((r, stage)) = &s.remote else { return Ok(()) };
    if matches!(s.layout.stat_blob(&desc.digest), Ok(Some(n)) if n == desc.size) {
        return Ok(());
    }
    let fail = |e: &dyn std::fmt::Display| {
        format!("cache {}: layer {}: {e}; running the step instead", s.name, desc.digest)
    };
    let registry = crate::remote::registry().map_err(|e| fail(&e))?;
    let tmp = stage.path().join(desc.digest.hex());
    registry.download_blob(r, &desc.digest, &tmp).map_err(|e| fail(&e))?;
    s.layout.link_or_copy_blob(&tmp, &desc.digest, desc.size).map_err(|e| fail(&e))?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
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
    let s = open_source(name, layout, digest, "local cache import at")?;
    // Best effort: tell `cache prune` this version was used (never fails the build).
    strata_cache::gc::record_use(s.layout.root(), &s.digest);
    Ok(s)
}

/// Reads and validates cache manifest `digest` of `layout` (`what`: the message prefix).
fn open_source(name: String, layout: Layout, digest: Digest, what: &str) -> Result<Source, String> {
    let bytes = read_verified(&layout, &digest)
        .map_err(|e| format!("{what} {name} skipped: digest {digest} unavailable: {e}"))?;
    let manifest = CacheManifest::parse(&bytes)
        .map_err(|e| format!("{what} {name} skipped: manifest {digest}: {e}"))?;
    let cfg_bytes = read_verified(&layout, &manifest.config.digest)
        .map_err(|e| format!("{what} {name} skipped: cache config: {e}"))?;
    let config = CacheConfig::from_json(&cfg_bytes).map_err(|e| {
        format!("{what} {name} skipped: cache config {}: {e}", manifest.config.digest)
    })?;
    // Registry caches have no layer blobs locally yet: validate the config against the
    // manifest only.
    let problems = strata_cache::validate(&config, Some(&manifest.layers));
    if let Some(p) = problems.iter().find(|p| p.severity == strata_cache::Severity::Error) {
        return Err(format!("{what} {name} skipped: invalid cache config: {}", p.message));
    }
    let by_key = config.records.iter().enumerate().map(|(i, r)| (r.digest.clone(), i)).collect();
    Ok(Source {
        name,
        digest,
        layout,
        manifest,
        config,
        by_key,
        hits: AtomicUsize::new(0),
        remote: None,
    })
}

impl Imports {
    /// Opens every source; a source that cannot be used is a warning, never an error.
    pub(crate) fn load(opts: &[ImportOptions], state: &StateDir, progress: &Progress) -> Self {
        let mut sources = Vec::new();
        for o in opts {
            let step = progress.step(format!("importing cache manifest from {}", o.src.display()));
            let loaded = match o.backend.registry_ref() {
                Some(r) => load_registry(o, r, state),
                None => load_one(o),
            };
            match loaded {
                Ok(s) => {
                    step.log(&format!(
                        "manifest {}: {} records, {} layers",
                        s.digest,
                        s.config.records.len(),
                        s.config.layers.len()
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
                let tar_diff = desc
                    .annotation(media::ANNOTATION_UNCOMPRESSED)
                    .and_then(|d| Digest::parse(d).ok())
                    .ok_or_else(|| {
                        format!("cache {}: missing uncompressed annotation for {blob}", s.name)
                    })?;
                let diff = if desc.annotation(media::ANNOTATION_STARGZ_TOC).is_some() {
                    ensure_local(s, desc)?;
                    adopt_estargz(s, desc, &tar_diff, state)?
                } else {
                    if !state.has_layer(&tar_diff) {
                        ensure_local(s, desc)?;
                        verify_layer(s, desc)?;
                        state
                            .adopt_layer_blob(&s.layout.blob_path(blob), desc, &tar_diff, None)
                            .map_err(|e| {
                                format!("cache {}: {e}; running the step instead", s.name)
                            })?;
                    }
                    tar_diff
                };
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

/// Verifies a layer blob before adopting it: a corrupt blob must be a miss, never a wrong
/// image.
fn verify_layer(s: &Source, desc: &Descriptor) -> Result<(), String> {
    s.layout.verify_blob(&desc.digest, Some(desc.size)).map_err(|p| {
        format!(
            "cache {}: layer {} is unusable: {p}; running the step instead",
            s.name, desc.digest
        )
    })
}

/// Adopts an eStargz layer blob and returns the diffID of the layer it encodes.
///
/// An eStargz blob unpacks to the layer's tar plus a TOC entry, and its descriptor names
/// that longer stream (`tar_diff`), as BuildKit's importer requires. strata's records,
/// snapshots and images use the layer without the TOC, so a build that hits this cache
/// produces the same image as one that ran the steps: strip the TOC to learn that diffID.
fn adopt_estargz(
    s: &Source,
    desc: &Descriptor,
    tar_diff: &Digest,
    state: &StateDir,
) -> Result<Digest, String> {
    let unusable = |e: String| {
        format!(
            "cache {}: eStargz layer {} is unusable: {e}; running the step instead",
            s.name, desc.digest
        )
    };
    verify_layer(s, desc)?;
    let path = s.layout.blob_path(&desc.digest);
    let f = std::fs::File::open(&path).map_err(|e| unusable(format!("{}: {e}", path.display())))?;
    let r = strata_layer::open_layer_reader(std::io::BufReader::new(f), Some(&desc.media_type))
        .map_err(|e| unusable(e.to_string()))?;
    let mut strip = StripEstargzToc::new(r);
    let mut hasher = strata_oci::HashingWriter::new(std::io::sink());
    std::io::copy(&mut strip, &mut hasher).map_err(|e| unusable(e.to_string()))?;
    let (_, layer_diff, size) = hasher.finish();
    if !strip.stripped() {
        // Not one of ours (no TOC entry where eStargz puts it): take the stream as it is.
        if layer_diff != *tar_diff {
            return Err(unusable(format!("it unpacks to {layer_diff}, not {tar_diff}")));
        }
        if !state.has_layer(tar_diff) {
            state
                .adopt_layer_blob(&path, desc, tar_diff, None)
                .map_err(|e| format!("cache {}: {e}; running the step instead", s.name))?;
        }
        return Ok(layer_diff);
    }
    if !state.has_layer(&layer_diff) {
        state
            .adopt_reencoded_blob(&path, desc, &layer_diff, Some(size), Some(tar_diff.clone()))
            .map_err(|e| format!("cache {}: {e}; running the step instead", s.name))?;
    }
    Ok(layer_diff)
}

/// Reads an eStargz blob's uncompressed stream as the tar it was made from: every entry up
/// to the TOC entry (`stargz.index.json`, always the last one), then the two zero blocks
/// that end a tar. strata's eStargz writer copies the entries byte for byte and only drops
/// the input's end-of-archive blocks, so this gives back the original tar exactly.
pub(crate) struct StripEstargzToc<R> {
    inner: R,
    /// Bytes ready to hand out (a header, or the end-of-archive blocks).
    pending: Vec<u8>,
    pos: usize,
    /// Payload bytes (with padding) of the current entry still to pass through.
    payload: u64,
    /// After the first zero block or the TOC: pass the rest through / stop.
    state: StripState,
    stripped: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StripState {
    Entries,
    PassThrough,
    Done,
}

impl<R: std::io::Read> StripEstargzToc<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            pos: 0,
            payload: 0,
            state: StripState::Entries,
            stripped: false,
        }
    }

    /// Whether a TOC entry was found (and dropped).
    pub(crate) fn stripped(&self) -> bool {
        self.stripped
    }

    fn entry_size(h: &[u8; 512]) -> std::io::Result<u64> {
        let field = &h[124..136];
        if field[0] & 0x80 != 0 {
            // GNU base-256 for sizes over 8 GiB.
            let mut v: u64 = u64::from(field[0] & 0x7f);
            for &b in &field[1..] {
                v = v.checked_mul(256).and_then(|v| v.checked_add(u64::from(b))).ok_or_else(
                    || std::io::Error::new(std::io::ErrorKind::InvalidData, "tar size overflows"),
                )?;
            }
            return Ok(v);
        }
        let text: String = field
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect::<String>()
            .trim()
            .to_owned();
        if text.is_empty() {
            return Ok(0);
        }
        u64::from_str_radix(&text, 8).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("invalid tar size field {text:?}"),
            )
        })
    }
}

impl<R: std::io::Read> std::io::Read for StripEstargzToc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.pos);
                buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.state {
                StripState::Done => return Ok(0),
                StripState::PassThrough => return self.inner.read(buf),
                StripState::Entries if self.payload > 0 => {
                    let max = buf.len().min(usize::try_from(self.payload).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..max])?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.payload -= n as u64;
                    return Ok(n);
                }
                StripState::Entries => {
                    let mut h = [0u8; 512];
                    match self.inner.read_exact(&mut h) {
                        Ok(()) => {}
                        // A tar without end blocks: nothing more to hand out.
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            self.state = StripState::Done;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    self.pending.clear();
                    self.pos = 0;
                    let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
                    let is_toc = &h[..name_end] == strata_layer::estargz::TOC_TAR_NAME.as_bytes()
                        && h[345] == 0;
                    if h.iter().all(|&b| b == 0) {
                        self.pending.extend_from_slice(&h);
                        self.state = StripState::PassThrough;
                    } else if is_toc {
                        self.pending.resize(1024, 0);
                        self.stripped = true;
                        self.state = StripState::Done;
                    } else {
                        self.payload = Self::entry_size(&h)?.div_ceil(512) * 512;
                        self.pending.extend_from_slice(&h);
                    }
                }
            }
        }
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

/// The nodes `mode=min` exports results for: as BuildKit, only the final result's own
/// layer chain, i.e. the steps whose chain is a prefix of it. Other stages (a builder the
/// final stage copies from) keep their records but no layers. A failed build has no final
/// result; its last completed step stands in, so that a retry hits what did run.
fn min_results(solved: &Solved) -> HashSet<usize> {
    let g = &solved.graph;
    let with_layers = |i: &usize| g[*i].has_result && !g[*i].chain.is_empty();
    let last =
        solved.final_lineage.first().copied().or_else(|| (0..g.len()).rev().find(with_layers));
    let Some(last) = last else { return HashSet::new() };
    let top: Vec<&Digest> = g[last].chain.iter().map(|l| &l.diff_id).collect();
    (0..g.len())
        .filter(with_layers)
        .filter(|&i| {
            let c = &g[i].chain;
            c.len() <= top.len() && c.iter().zip(&top).all(|(l, t)| l.diff_id == **t)
        })
        .collect()
}

/// What one export did, for the summary.
#[derive(Debug, Default)]
pub(crate) struct ExportSummary {
    pub(crate) manifest: Option<Descriptor>,
    pub(crate) written: usize,
    pub(crate) reused: usize,
    pub(crate) bytes_written: u64,
}

/// Exports the solved graph to `opts.dest` (a directory, or for `type=registry` the ref).
pub(crate) fn export(
    solved: &Solved,
    state: &StateDir,
    opts: &ExportOptions,
    progress: &Progress,
) -> Result<ExportSummary, BuildError> {
    let Some(reference) = opts.backend.registry_ref() else {
        return export_to(solved, state, opts, &opts.dest, progress);
    };
    // The registry form is the local form moved: write the layout in the state dir (blobs
    // are hard links of the store's), then push what its manifest names.
    let fail = |m: String| BuildError::CacheExport { dest: opts.dest.clone(), message: m };
    let stage = state.temp_dir("cache-push-")?;
    let dir = stage.path().join("layout");
    let mut summary = export_to(solved, state, opts, &dir, progress)?;
    let Some(desc) = summary.manifest.clone() else { return Ok(summary) };
    let step = progress.step(format!("pushing cache to {reference}"));
    let layout = Layout::open(&dir).map_err(|e| fail(e.to_string()))?;
    let (uploaded, bytes) = match push_cache(&layout, &desc, reference) {
        Ok(v) => v,
        Err(e) => {
            step.error("failed");
            return Err(fail(e));
        }
    };
    step.log(&format!("{uploaded} blobs uploaded ({bytes} bytes), the rest were in the registry"));
    step.done();
    summary.written = uploaded;
    summary.bytes_written = bytes;
    Ok(summary)
}

/// Pushes the cache manifest `desc` of `layout` (and every blob it names that the registry
/// lacks) to `reference`: blobs first, the manifest last, so the tag never names a cache
/// whose blobs are missing.
fn push_cache(layout: &Layout, desc: &Descriptor, reference: &str) -> Result<(usize, u64), String> {
    let r = strata_registry::ImageRef::parse(reference).map_err(|e| e.to_string())?;
    let registry = crate::remote::registry().map_err(|e| e.to_string())?;
    let bytes = read_verified(layout, &desc.digest)?;
    #[derive(serde::Deserialize)]
    struct Refs {
        #[serde(default)]
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let refs: Refs = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let (mut uploaded, mut total) = (0, 0);
    let mut seen = HashSet::new();
    for d in refs.config.iter().chain(&refs.layers).chain(&refs.manifests) {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let from = crate::remote::source_of(&d.digest);
        let path = layout.blob_path(&d.digest);
        if registry
            .put_blob_file(&r, &d.digest, d.size, &path, from.as_ref())
            .map_err(|e| e.to_string())?
        {
            uploaded += 1;
            total += d.size;
        }
        crate::remote::note_blob(&r, &d.digest);
    }
    registry.put_manifest(&r, &bytes, &desc.media_type).map_err(|e| e.to_string())?;
    Ok((uploaded, total))
}

/// Writes the cache for `solved` as an OCI layout at `dir`. Order: layers, config,
/// manifest, index.json.
fn export_to(
    solved: &Solved,
    state: &StateDir,
    opts: &ExportOptions,
    dir: &Path,
    progress: &Progress,
) -> Result<ExportSummary, BuildError> {
    let fail = |m: String| BuildError::CacheExport { dest: opts.dest.clone(), message: m };
    let step = progress.step(format!("exporting cache to {}", opts.dest.display()));
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the directory: {e}")))?;
    let layout = Layout::create(dir).map_err(|e| fail(e.to_string()))?;
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
        CacheMode::Min => min_results(solved),
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
        if let Err(e) = layout.link_or_copy_blob(src, &d.digest, d.size) {
            // A state-store blob can only go bad by being edited in place (it may share an
            // inode with a cache dir it was linked from). Drop it, so the next build makes
            // the layer again instead of failing the same way forever.
            if let strata_oci::StoreError::CommitMismatch { .. } = e {
                let _ = state.store().delete_blob(&d.digest);
                return Err(fail(format!(
                    "{e}; the corrupt copy of layer {} was removed from the state directory \
                     {}, so building again recreates it",
                    d.digest,
                    state.root().display()
                )));
            }
            return Err(fail(e.to_string()));
        }
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

#[cfg(test)]
mod tests {
    use std::io::Read;

    use strata_layer::{EntryMeta, LayerWriter};

    use super::*;

    fn sample_tar() -> Vec<u8> {
        let mut w = LayerWriter::new(Vec::new());
        w.add_dir("d", &EntryMeta::new(0o755)).unwrap();
        let long = "x".repeat(150);
        w.add_file(format!("d/{long}"), &EntryMeta::new(0o644), &b"hello"[..], 5).unwrap();
        let big = vec![7u8; 70_000];
        w.add_file("big", &EntryMeta::new(0o600), &big[..], big.len() as u64).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn stripping_the_toc_gives_back_the_original_tar() {
        let tar = sample_tar();
        let mut blob = Vec::new();
        let layer = strata_layer::compression::compress(
            &tar[..],
            &CompressionOptions::new(Compression::Estargz),
            &mut blob,
        )
        .unwrap();
        assert_ne!(layer.diff_id, Digest::of_bytes(&tar), "eStargz adds its TOC entry");
        let r = strata_layer::open_layer_reader(&blob[..], None).unwrap();
        let mut strip = StripEstargzToc::new(r);
        let mut out = Vec::new();
        strip.read_to_end(&mut out).unwrap();
        assert!(strip.stripped());
        assert_eq!(out, tar);
    }

    #[test]
    fn a_tar_without_toc_passes_through_unchanged() {
        let tar = sample_tar();
        let mut strip = StripEstargzToc::new(&tar[..]);
        let mut out = Vec::new();
        strip.read_to_end(&mut out).unwrap();
        assert!(!strip.stripped());
        assert_eq!(out, tar);
    }

    #[test]
    fn a_bad_size_field_is_an_error_not_a_panic() {
        let mut h = [0u8; 512];
        h[0] = b'f';
        h[124..130].copy_from_slice(b"zzzzzz");
        let mut out = Vec::new();
        assert!(StripEstargzToc::new(&h[..]).read_to_end(&mut out).is_err());
    }
}
