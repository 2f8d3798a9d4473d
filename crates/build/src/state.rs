//! The state directory (`$STRATA_ROOT`): the builder's own results, kept as an OCI layout
//! plus small JSON records, so exporting a cache is choosing records and linking blobs.
//!
//! ```text
//! $STRATA_ROOT/
//!   CACHEDIR.TAG          tells backup tools to skip it
//!   state.lock            shared by builds, exclusive for `strata prune`
//!   store/                OCI layout: compressed layer blobs, configs, manifests
//!   layers/<hex>.json     per diffID: uncompressed size and the blobs that encode it
//!   records/<hex>.json    per step cache key: the result's layer chain and creation time
//!   snapshots/<hex>/      a layer extracted in overlayfs form, for RUN lower dirs
//!   checksums/<hex>.json  context file checksums (inode, size, mtime, ctime → sha256)
//!   resolved/<hex>.json   registry tag → manifest digest, so rebuilds need no re-resolve
//!   cachemounts/<id>/     RUN --mount=type=cache directories
//!   tmp/                  work dirs on the same filesystem, for atomic renames
//! ```
//!
//! Every file is written to a temp file and renamed, so a crash leaves either the old or
//! the new version; a record is only written after the blobs it names are committed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_layer::{CompressedLayer, Compression, CompressionOptions, LayerEncoder, LayerWriter};
use strata_oci::{Descriptor, Digest, Layout, media};

use crate::error::BuildError;

/// Directory-name version: bump when the on-disk format changes incompatibly, so an old
/// strata never misreads a new layout (and vice versa).
const STATE_VERSION: &str = "v1";

/// One stored encoding of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// `uncompressed`, `gzip`, `zstd` or `estargz`.
    pub compression: String,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Extra annotations (eStargz TOC).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Taken as is from a base image or an imported cache (not built here): cache
    /// exports keep such blobs in their compression unless `force-compression`.
    #[serde(default)]
    pub adopted: bool,
    /// The digest of this blob's own uncompressed stream when it is not the layer's tar:
    /// an eStargz re-encoding appends its TOC entry, so it unpacks to other bytes. Exported
    /// descriptors name this one as `containerd.io/uncompressed` (importers check the
    /// unpacked stream against it), and [`StateDir::open_layer_tar`] strips the TOC to get
    /// the layer's own tar back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_diff_id: Option<Digest>,
}

/// What strata knows about one layer (by diffID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The encodings present in the store.
    pub blobs: Vec<StoredBlob>,
}

impl LayerInfo {
    /// The stored blob for `compression`, if any.
    pub fn blob(&self, compression: Compression) -> Option<&StoredBlob> {
        self.blobs.iter().find(|b| b.compression == compression.as_str())
    }

    /// A descriptor for the blob in `compression`, with the annotations BuildKit writes.
    pub fn descriptor(
        &self,
        blob: &StoredBlob,
        family: media::MediaFamily,
        created_at: Option<&str>,
    ) -> Descriptor {
        let comp: Compression = blob.compression.parse().unwrap_or(Compression::Gzip);
        let mut d = Descriptor::new(comp.media_type(family), blob.digest.clone(), blob.size);
        let uncompressed = blob.tar_diff_id.as_ref().unwrap_or(&self.diff_id);
        d.set_annotation(media::ANNOTATION_UNCOMPRESSED, uncompressed.to_string());
        if let Some(t) = created_at {
            d.set_annotation(media::ANNOTATION_CREATED_AT, t);
        }
        for (k, v) in &blob.annotations {
            d.set_annotation(k.clone(), v.clone());
        }
        d
    }
}

/// One layer of a result chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLayer {
    /// The layer.
    pub diff_id: Digest,
    /// When the step that produced it ran (RFC3339Nano); image history uses it.
    pub created_at: String,
}

/// The cached result of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's cache key.
    pub key: String,
    /// When the step ran.
    pub created_at: String,
    /// The full layer chain of the result, bottom first.
    pub chain: Vec<ChainLayer>,
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    store: Layout,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BuildError + 'a {
    move |source| BuildError::Io { op, path: path.to_owned(), source }
}

/// Writes `data` to `path` atomically (temp file in the same dir, fsync, rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err("create a temp file in", dir))?;
    tmp.write_all(data).map_err(io_err("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err("fsync", path))?;
    tmp.persist(path).map_err(|e| BuildError::Io {
        op: "rename into",
        path: path.into(),
        source: e.error,
    })?;
    Ok(())
}

impl StateDir {
    /// The default location: `$STRATA_ROOT`, else `/var/lib/strata` as root, else
    /// `$XDG_DATA_HOME/strata` (`~/.local/share/strata`).
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("STRATA_ROOT").filter(|v| !v.is_empty()) {
            return PathBuf::from(r);
        }
        if strata_layer::apply::is_root() {
            return PathBuf::from("/var/lib/strata");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("strata");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| ".".into());
        home.join(".local/share/strata")
    }

    /// Opens (creating if needed) the state directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BuildError> {
        let root: PathBuf = root.into();
        let base = root.join(STATE_VERSION);
        for sub in ["layers", "records", "snapshots", "checksums", "cachemounts", "resolved", "tmp"]
        {
            let p = base.join(sub);
            fs::create_dir_all(&p)
                .map_err(|source| BuildError::StateDir { path: p.clone(), source })?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Best effort: the tag only helps backup tools.
            let _ = fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# strata build state; see https://bford.info/cachedir/\n",
            );
        }
        let store = Layout::create(base.join("store"))?;
        Ok(Self { root, store })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn base(&self) -> PathBuf {
        self.root.join(STATE_VERSION)
    }

    /// The blob store.
    pub fn store(&self) -> &Layout {
        &self.store
    }

    /// A fresh work directory under `tmp/` (same filesystem as snapshots).
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, BuildError> {
        let dir = self.base().join("tmp");
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&dir)
            .map_err(io_err("create a temp dir in", &dir))
    }

    /// Where a context's checksum cache lives.
    pub fn checksum_path(&self, context_root: &Path) -> PathBuf {
        let key = Digest::of_bytes(context_root.as_os_str().as_encoded_bytes());
        self.base().join("checksums").join(format!("{}.json", key.hex()))
    }

    /// Where a registry tag's resolution is remembered (`key`: a hex digest of the reference).
    pub(crate) fn resolved_path(&self, key: &str) -> PathBuf {
        self.base().join("resolved").join(format!("{key}.json"))
    }

    /// Where a cache mount's directory lives.
    pub fn cache_mount_dir(&self, id: &str) -> PathBuf {
        let key = Digest::of_bytes(id.as_bytes());
        self.base().join("cachemounts").join(key.hex())
    }

    /// Where a layer's overlay-form snapshot lives.
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.base().join("snapshots").join(diff_id.hex())
    }

    fn record_path(&self, key: &str) -> PathBuf {
        let h = Digest::of_bytes(key.as_bytes());
        self.base().join("records").join(format!("{}.json", h.hex()))
    }

    fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.base().join("layers").join(format!("{}.json", diff_id.hex()))
    }

    /// A step's cached result, if present and complete (every layer has a stored blob).
    pub fn record(&self, key: &str) -> Option<StepRecord> {
        let bytes = fs::read(self.record_path(key)).ok()?;
        let rec: StepRecord = serde_json::from_slice(&bytes).ok()?;
        if rec.key != key {
            return None;
        }
        // A record whose blobs were pruned is a miss, never a failed build.
        if !rec.chain.iter().all(|l| self.has_layer(&l.diff_id)) {
            return None;
        }
        Some(rec)
    }

    /// Stores a step's result. Blobs must already be committed.
    pub fn put_record(&self, rec: &StepRecord) -> Result<(), BuildError> {
        let bytes = serde_json::to_vec(rec).map_err(BuildError::Json)?;
        write_atomic(&self.record_path(&rec.key), &bytes)
    }

    /// What is known of a layer.
    pub fn layer_info(&self, diff_id: &Digest) -> Option<LayerInfo> {
        let bytes = fs::read(self.layer_path(diff_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Adds (or merges) what is known of a layer.
    pub fn put_layer_blob(
        &self,
        diff_id: &Digest,
        uncompressed_size: u64,
        blob: StoredBlob,
    ) -> Result<LayerInfo, BuildError> {
        let mut info = self.layer_info(diff_id).unwrap_or(LayerInfo {
            diff_id: diff_id.clone(),
            uncompressed_size,
            blobs: Vec::new(),
        });
        info.blobs.retain(|b| b.compression != blob.compression);
        info.blobs.push(blob);
        info.blobs.sort_by(|a, b| a.compression.cmp(&b.compression));
        let bytes = serde_json::to_vec(&info).map_err(BuildError::Json)?;
        write_atomic(&self.layer_path(diff_id), &bytes)?;
        Ok(info)
    }

    /// Writes a new layer: `fill` writes tar entries; the tar is compressed and stored
    /// in one streaming pass. Returns the compressed result and the entry count.
    pub fn write_layer<F>(
        &self,
        opts: &CompressionOptions,
        fill: F,
    ) -> Result<(CompressedLayer, u64), BuildError>
    where
        F: FnOnce(&mut LayerWriter<LayerEncoder<strata_oci::BlobWriter>>) -> Result<(), BuildError>,
    {
        let blob = self.store.blob_writer(None)?;
        let enc = LayerEncoder::new(blob, opts).map_err(BuildError::Compression)?;
        let mut tw = LayerWriter::new(enc);
        fill(&mut tw)?;
        let entries = tw.entries();
        let enc = tw.finish().map_err(BuildError::LayerWrite)?;
        let (blob, layer) = enc.finish().map_err(BuildError::Compression)?;
        blob.commit()?;
        self.put_layer_blob(
            &layer.diff_id,
            layer.uncompressed_size,
            StoredBlob {
                compression: layer.compression.as_str().to_owned(),
                digest: layer.digest.clone(),
                size: layer.size,
                annotations: layer.annotations.clone(),
                adopted: false,
                tar_diff_id: None,
            },
        )?;
        Ok((layer, entries))
    }

    /// The diffID the tar `fill` writes would have, computed without storing anything
    /// (to find an identical layer that is already stored).
    pub fn dry_diff_id<F>(&self, fill: F) -> Result<Digest, BuildError>
    where
        F: FnOnce(&mut LayerWriter<strata_oci::HashingWriter<io::Sink>>) -> Result<(), BuildError>,
    {
        let mut tw = LayerWriter::new(strata_oci::HashingWriter::new(io::sink()));
        fill(&mut tw)?;
        let (_, digest, _) = tw.finish().map_err(BuildError::LayerWrite)?.finish();
        Ok(digest)
    }

    /// Whether a layer is stored (some encoding of it is present in the store).
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_info(diff_id).is_some_and(|i| {
            i.blobs.iter().any(|b| matches!(self.store.stat_blob(&b.digest), Ok(Some(_))))
        })
    }

    /// Stores a layer blob taken from elsewhere (a base image, an imported cache) after
    /// checking its diffID annotation is plausible; the blob itself is verified on ingest.
    pub fn adopt_layer_blob(
        &self,
        src_path: &Path,
        desc: &Descriptor,
        diff_id: &Digest,
        uncompressed_size: Option<u64>,
    ) -> Result<LayerInfo, BuildError> {
        self.adopt_reencoded_blob(src_path, desc, diff_id, uncompressed_size, None)
    }

    /// [`Self::adopt_layer_blob`] for a blob whose own uncompressed stream is `tar_diff_id`,
    /// not the layer `diff_id` (an eStargz re-encoding, see [`StoredBlob::tar_diff_id`]).
    pub(crate) fn adopt_reencoded_blob(
        &self,
        src_path: &Path,
        desc: &Descriptor,
        diff_id: &Digest,
        uncompressed_size: Option<u64>,
        tar_diff_id: Option<Digest>,
    ) -> Result<LayerInfo, BuildError> {
        let (_, comp) =
            media::layer_kind(&desc.media_type).ok_or_else(|| BuildError::UnsupportedLayer {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            })?;
        let estargz = desc.annotation(media::ANNOTATION_STARGZ_TOC).is_some();
        let compression = match comp {
            media::LayerCompression::Uncompressed => Compression::Uncompressed,
            media::LayerCompression::Gzip if estargz => Compression::Estargz,
            media::LayerCompression::Gzip => Compression::Gzip,
            media::LayerCompression::Zstd => Compression::Zstd,
        };
        self.store.link_or_copy_blob(src_path, &desc.digest, desc.size)?;
        let mut annotations = std::collections::BTreeMap::new();
        for k in [media::ANNOTATION_STARGZ_TOC, media::ANNOTATION_ESTARGZ_SIZE] {
            if let Some(v) = desc.annotation(k) {
                annotations.insert(k.to_owned(), v.to_owned());
            }
        }
        let size = match uncompressed_size {
            Some(s) => s,
            None => self.layer_info(diff_id).map(|i| i.uncompressed_size).unwrap_or(0),
        };
        self.put_layer_blob(
            diff_id,
            size,
            StoredBlob {
                compression: compression.as_str().to_owned(),
                digest: desc.digest.clone(),
                size: desc.size,
                annotations,
                adopted: true,
                tar_diff_id,
            },
        )
    }

    /// Opens a layer as an uncompressed tar stream, from whichever blob is stored.
    pub fn open_layer_tar(&self, diff_id: &Digest) -> Result<Box<dyn io::Read>, BuildError> {
        let info = self
            .layer_info(diff_id)
            .ok_or_else(|| BuildError::MissingLayer { diff_id: diff_id.clone() })?;
        // Prefer the cheapest to decode: plain, then zstd, then gzip.
        let mut blobs: Vec<&StoredBlob> = info.blobs.iter().collect();
        blobs.sort_by_key(|b| match b.compression.as_str() {
            "uncompressed" => 0,
            "zstd" => 1,
            "gzip" => 2,
            _ => 3,
        });
        for b in blobs {
            if let Ok(f) = self.store.open_blob(&b.digest) {
                let r =
                    strata_layer::open_layer_reader(io::BufReader::with_capacity(1 << 20, f), None)
                        .map_err(BuildError::Compression)?;
                if b.tar_diff_id.is_some() {
                    return Ok(Box::new(crate::cacheio::StripEstargzToc::new(r)));
                }
                return Ok(r);
            }
        }
        Err(BuildError::MissingLayer { diff_id: diff_id.clone() })
    }

    /// Returns the layer's blob in `compression`, converting (and storing) it if needed.
    /// `level` only matters when a conversion happens.
    pub fn ensure_blob(
        &self,
        diff_id: &Digest,
        opts: &CompressionOptions,
    ) -> Result<(LayerInfo, StoredBlob), BuildError> {
        let info = self
            .layer_info(diff_id)
            .ok_or_else(|| BuildError::MissingLayer { diff_id: diff_id.clone() })?;
        if let Some(b) = info.blob(opts.compression)
            && matches!(self.store.stat_blob(&b.digest), Ok(Some(_)))
        {
            return Ok((info.clone(), b.clone()));
        }
        let mut tar = self.open_layer_tar(diff_id)?;
        let blob = self.store.blob_writer(None)?;
        let mut enc = LayerEncoder::new(blob, opts).map_err(BuildError::Compression)?;
        io::copy(&mut tar, &mut enc).map_err(|source| BuildError::Io {
            op: "recompress layer",
            path: self.store.root().to_owned(),
            source,
        })?;
        let (blob, layer) = enc.finish().map_err(BuildError::Compression)?;
        // eStargz appends its TOC entry, so its stream differs from the layer's tar by design
        // (recorded in `tar_diff_id`); any other codec must round-trip exactly.
        if layer.diff_id != *diff_id && opts.compression != Compression::Estargz {
            return Err(BuildError::DiffIdMismatch {
                expected: diff_id.clone(),
                found: layer.diff_id,
            });
        }
        blob.commit()?;
        let stored = StoredBlob {
            compression: opts.compression.as_str().to_owned(),
            digest: layer.digest.clone(),
            size: layer.size,
            annotations: layer.annotations.clone(),
            adopted: false,
            tar_diff_id: (layer.diff_id != *diff_id).then(|| layer.diff_id.clone()),
        };
        let info = self.put_layer_blob(diff_id, layer.uncompressed_size, stored.clone())?;
        Ok((info, stored))
    }

    /// Takes the state lock: shared for builds, exclusive for prune.
    pub fn lock(&self, exclusive: bool) -> Result<strata_oci::LockGuard, BuildError> {
        let mode =
            if exclusive { strata_oci::LockMode::Exclusive } else { strata_oci::LockMode::Shared };
        let path = self.root.join("state.lock");
        Ok(strata_oci::LockGuard::acquire(&path, mode, Duration::from_secs(3600))?)
    }
}
