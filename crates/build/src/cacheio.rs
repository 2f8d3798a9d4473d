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
    Ok(Source { name, digest, layout, manifest, config, by_key, hits: AtomicUsize::new(0) })
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
                    adopt_estargz(s, desc, &tar_diff, state)?
                } else {
                    if !state.has_layer(&tar_diff) {
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
