//! Base images: from local OCI layouts (`--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]`)
//! and from registries (`FROM [host/]name[:tag][@digest]`). Both go through one loader
//! ([`load_image`]): follow indexes to the platform's manifest, check the config, and bring the
//! layer blobs into the state store, keeping their compression so a gzip base layer is reused
//! byte for byte. A layout's blobs are hard-linked when possible (verified when copied); a
//! registry's are downloaded in parallel, digest-verified, and the manifest and config are
//! kept in the store too, so a rebuild needs no network unless `--pull`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_oci::{Descriptor, Digest, Layout, media};
use strata_registry::{ImageRef, Registry};

use crate::Platform;
use crate::error::BuildError;
use crate::image::ImageConfig;
use crate::state::{ChainLayer, StateDir};

/// Manifests and configs are small; refuse anything absurd rather than read it whole.
const JSON_LIMIT: u64 = 16 << 20;

/// Layers downloaded at once.
const PARALLEL_PULLS: usize = 4;

/// A loaded base image.
#[derive(Debug, Clone)]
pub(crate) struct BaseImage {
    pub(crate) manifest_digest: Digest,
    pub(crate) chain: Vec<ChainLayer>,
    pub(crate) config: ImageConfig,
    pub(crate) time: String,
}

#[derive(Deserialize)]
struct AnyManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A layer to bring into the store: its blob descriptor, diffID and (if known) tar size.
pub(crate) struct LayerToAdopt {
    desc: Descriptor,
    diff_id: Digest,
    uncompressed: Option<u64>,
}

/// Where an image's manifests and blobs come from.
trait ImageSource: Sync {
    /// How the source is named in messages (`oci-layout://DIR`, `docker-image://REF`).
    fn name(&self) -> String;
    /// A manifest or index, verified against its digest.
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>, BuildError>;
    /// A config blob, verified against its digest.
    fn config(&self, desc: &Descriptor) -> Result<Vec<u8>, BuildError>;
    /// Brings the layers' blobs into the state store.
    fn adopt_layers(&self, state: &StateDir, layers: &[LayerToAdopt]) -> Result<(), BuildError>;

    fn err(&self, msg: &dyn std::fmt::Display) -> BuildError {
        BuildError::Base(format!("{}: {msg}", self.name()))
    }
}

/// `err` for any displayable message (the trait method takes `&dyn` to stay object safe).
trait ErrExt {
    fn errd(&self, msg: impl std::fmt::Display) -> BuildError;
}

impl<T: ImageSource + ?Sized> ErrExt for T {
    fn errd(&self, msg: impl std::fmt::Display) -> BuildError {
        self.err(&msg)
    }
}

struct LayoutSource<'a> {
    dir: &'a Path,
    layout: Layout,
}

impl LayoutSource<'_> {
    fn read(&self, d: &Digest) -> Result<Vec<u8>, BuildError> {
        let bytes = self.layout.read_blob_limited(d, JSON_LIMIT).map_err(|e| self.errd(e))?;
        if Digest::of_bytes(&bytes) != *d {
            return Err(self.errd(format!("blob {d} does not match its digest")));
        }
        Ok(bytes)
    }
}

impl ImageSource for LayoutSource<'_> {
    fn name(&self) -> String {
        format!("oci-layout://{}", self.dir.display())
    }
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>, BuildError> {
        self.read(&desc.digest)
    }
    fn config(&self, desc: &Descriptor) -> Result<Vec<u8>, BuildError> {
        self.read(&desc.digest)
    }
    fn adopt_layers(&self, state: &StateDir, layers: &[LayerToAdopt]) -> Result<(), BuildError> {
        for l in layers {
            state.adopt_layer_blob(
                &self.layout.blob_path(&l.desc.digest),
                &l.desc,
                &l.diff_id,
                l.uncompressed,
            )?;
        }
        Ok(())
    }
}

fn base_err(dir: &Path, msg: impl std::fmt::Display) -> BuildError {
    BuildError::Base(format!("oci-layout://{}: {msg}", dir.display()))
}

/// Loads the image `tag` or `digest` (default: the only or the `latest` entry) from the
/// OCI layout at `dir`, picking `platform` from an index.
pub(crate) fn load_oci_layout(
    state: &StateDir,
    dir: &Path,
    tag: Option<&str>,
    digest: Option<&Digest>,
    platform: &Platform,
) -> Result<BaseImage, BuildError> {
    let layout = Layout::open(dir).map_err(|e| base_err(dir, e))?;
    let desc = match (digest, tag) {
        (Some(d), _) => {
            let size = layout
                .stat_blob(d)
                .map_err(|e| base_err(dir, e))?
                .ok_or_else(|| base_err(dir, format!("{d} is not in the layout")))?;
            Descriptor::new("", d.clone(), size)
        }
        (None, Some(t)) => layout
            .resolve(t)
            .map_err(|e| base_err(dir, e))?
            .ok_or_else(|| base_err(dir, format!("no image tagged {t:?} in index.json")))?,
        (None, None) => {
            let index = layout
                .read_index()
                .map_err(|e| base_err(dir, e))?
                .ok_or_else(|| base_err(dir, "no index.json"))?;
            match index.resolve("latest") {
                Some(d) => d.clone(),
                None if index.manifests.len() == 1 => index.manifests[0].clone(),
                None => {
                    return Err(base_err(
                        dir,
                        "index.json has several images and none tagged latest; add :TAG or @sha256:… to the oci-layout:// reference",
                    ));
                }
            }
        }
    };

    load_image(state, &LayoutSource { dir, layout }, desc, platform)
}

/// Follows `desc` (a manifest or an index) to `platform`'s image and adopts its layers.
fn load_image(
    state: &StateDir,
    src: &dyn ImageSource,
    mut desc: Descriptor,
    platform: &Platform,
) -> Result<BaseImage, BuildError> {
    // Follow indexes down to a manifest for this platform.
    for _ in 0..4 {
        let bytes = src.manifest(&desc)?;
        let m: AnyManifest = serde_json::from_slice(&bytes)
            .map_err(|e| src.errd(format!("manifest {} is not valid JSON: {e}", desc.digest)))?;
        if let Some(list) = m.manifests {
            let pick = list.iter().find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
            });
            desc =
                pick.or_else(|| (list.len() == 1).then(|| &list[0])).cloned().ok_or_else(|| {
                    src.errd(format!("image index {} has no manifest for {platform}", desc.digest))
                })?;
            continue;
        }
        let (Some(config), Some(layers)) = (m.config, m.layers) else {
            return Err(src.errd(format!(
                "{} ({}) is neither an image manifest nor an index",
                desc.digest,
                m.media_type.unwrap_or_default()
            )));
        };
        let cfg_bytes = src.config(&config)?;
        let cfg: ImageConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| src.errd(format!("image config {} is not valid: {e}", config.digest)))?;
        if !cfg.os.is_empty()
            && !cfg.architecture.is_empty()
            && (cfg.os != platform.os || cfg.architecture != platform.architecture)
        {
            return Err(src.errd(format!(
                "image is for {}/{}, which cannot run on {platform}",
                cfg.os, cfg.architecture
            )));
        }
        if cfg.rootfs.diff_ids.len() != layers.len() {
            return Err(src.errd(format!(
                "config lists {} diff_ids for {} layers",
                cfg.rootfs.diff_ids.len(),
                layers.len()
            )));
        }
        let time = cfg.created.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        let mut chain = Vec::new();
        let mut adopt = Vec::new();
        for (l, diff) in layers.iter().zip(&cfg.rootfs.diff_ids) {
            let diff_id = Digest::parse(diff).map_err(|e| src.errd(e))?;
            if media::layer_kind(&l.media_type).is_none() {
                return Err(src.errd(format!(
                    "layer {} has unsupported media type {:?}",
                    l.digest, l.media_type
                )));
            }
            let uncompressed = if media::layer_kind(&l.media_type)
                .is_some_and(|(_, c)| c == media::LayerCompression::Uncompressed)
            {
                Some(l.size)
            } else {
                None
            };
            adopt.push(LayerToAdopt { desc: l.clone(), diff_id: diff_id.clone(), uncompressed });
            chain.push(ChainLayer { diff_id, created_at: time.clone() });
        }
        src.adopt_layers(state, &adopt)?;
        return Ok(BaseImage { manifest_digest: desc.digest, chain, config: cfg, time });
    }
    Err(src.errd("image indexes nest too deeply"))
}

/// What `v1/resolved/<key>.json` remembers: the manifest (or index) digest a tag resolved to.
#[derive(Serialize, Deserialize)]
struct Resolved {
    reference: String,
    digest: Digest,
}

struct RegistrySource<'a> {
    registry: &'a Registry,
    image: &'a ImageRef,
    state: &'a StateDir,
}

impl RegistrySource<'_> {
    /// A manifest or config: from the state store when an earlier pull kept it, else from
    /// the registry (then kept, so a rebuild reads it locally).
    fn cached_or(
        &self,
        desc: &Descriptor,
        fetch: impl FnOnce() -> Result<Vec<u8>, BuildError>,
    ) -> Result<Vec<u8>, BuildError> {
        let store = self.state.store();
        if let Ok(bytes) = store.read_blob_limited(&desc.digest, JSON_LIMIT)
            && Digest::of_bytes(&bytes) == desc.digest
        {
            return Ok(bytes);
        }
        let bytes = fetch()?;
        store.write_blob(&bytes)?;
        Ok(bytes)
    }
}

impl ImageSource for RegistrySource<'_> {
    fn name(&self) -> String {
        format!("docker-image://{}", self.image)
    }
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>, BuildError> {
        self.cached_or(desc, || {
            Ok(self.registry.get_manifest(&self.image.with_digest(&desc.digest))?.bytes)
        })
    }
    fn config(&self, desc: &Descriptor) -> Result<Vec<u8>, BuildError> {
        self.cached_or(desc, || {
            Ok(self.registry.get_blob_bytes(self.image, &desc.digest, JSON_LIMIT)?)
        })
    }
    fn adopt_layers(&self, state: &StateDir, layers: &[LayerToAdopt]) -> Result<(), BuildError> {
        let store = state.store();
        let mut missing = Vec::new();
        for l in layers {
            crate::remote::note_blob(self.image, &l.desc.digest);
            if matches!(store.stat_blob(&l.desc.digest), Ok(Some(n)) if n == l.desc.size) {
                let path = store.blob_path(&l.desc.digest);
                state.adopt_layer_blob(&path, &l.desc, &l.diff_id, l.uncompressed)?;
            } else {
                missing.push(l);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let tmp = state.temp_dir("pull-")?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        // A few workers take layers in order; the first error wins (the others stop early).
        let results: Vec<Result<(), BuildError>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..PARALLEL_PULLS.min(missing.len()))
                .map(|_| {
                    s.spawn(|| -> Result<(), BuildError> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(l) = missing.get(i) else { return Ok(()) };
                            let path: PathBuf = tmp.path().join(l.desc.digest.hex());
                            let n =
                                self.registry.download_blob(self.image, &l.desc.digest, &path)?;
                            if n != l.desc.size {
                                next.store(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
                                return Err(self.errd(format!(
                                    "layer {} is {n} bytes, the manifest says {}",
                                    l.desc.digest, l.desc.size
                                )));
                            }
                            // Read-only, so the store hard-links it instead of copying.
                            make_read_only(&path);
                            state.adopt_layer_blob(&path, &l.desc, &l.diff_id, l.uncompressed)?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(self.errd("a download thread panicked"))))
                .collect()
        });
        results.into_iter().collect()
    }
}

fn make_read_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: without it the store copies (and re-verifies) instead of linking.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444));
}

/// Loads `image` from its registry for `platform`. A tag is resolved once and remembered in
/// the state directory; later builds use the remembered digest (and the manifest, config and
/// layers already in the store, so no network at all) unless `pull` asks to re-resolve.
pub(crate) fn load_registry(
    state: &StateDir,
    registry: &Registry,
    image: &ImageRef,
    platform: &Platform,
    pull: bool,
) -> Result<(BaseImage, Digest), BuildError> {
    let src = RegistrySource { registry, image, state };
    let top = match image.digest() {
        Some(d) => d,
        None => {
            let key = Digest::of_bytes(image.to_string().as_bytes());
            let path = state.resolved_path(key.hex());
            let remembered = (!pull)
                .then(|| std::fs::read(&path).ok())
                .flatten()
                .and_then(|b| serde_json::from_slice::<Resolved>(&b).ok())
                .filter(|r| r.reference == image.to_string())
                .map(|r| r.digest);
            match remembered {
                Some(d) => d,
                None => {
                    let m = registry.get_manifest(image)?;
                    state.store().write_blob(&m.bytes)?;
                    let rec = Resolved { reference: image.to_string(), digest: m.digest.clone() };
                    let bytes = serde_json::to_vec(&rec).map_err(BuildError::Json)?;
                    crate::state::write_atomic(&path, &bytes)?;
                    m.digest
                }
            }
        }
    };
    let img = load_image(state, &src, Descriptor::new("", top.clone(), 0), platform)?;
    Ok((img, top))
}
