//! Base images from local OCI layouts (`--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]`).
//! Layer blobs are brought into the state store (hard-linked when possible, verified when
//! copied) and keep their compression, so a gzip base layer is reused byte for byte.

use std::path::Path;

use serde::Deserialize;
use strata_oci::{Descriptor, Digest, Layout, media};

use crate::Platform;
use crate::error::BuildError;
use crate::image::ImageConfig;
use crate::state::{ChainLayer, StateDir};

/// Manifests and configs are small; refuse anything absurd rather than read it whole.
const JSON_LIMIT: u64 = 16 << 20;

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
    let mut desc = match (digest, tag) {
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
    // Follow indexes down to a manifest for this platform.
    for _ in 0..4 {
        let bytes =
            layout.read_blob_limited(&desc.digest, JSON_LIMIT).map_err(|e| base_err(dir, e))?;
        if Digest::of_bytes(&bytes) != desc.digest {
            return Err(base_err(dir, format!("blob {} does not match its digest", desc.digest)));
        }
        let m: AnyManifest = serde_json::from_slice(&bytes).map_err(|e| {
            base_err(dir, format!("manifest {} is not valid JSON: {e}", desc.digest))
        })?;
        if let Some(list) = m.manifests {
            let pick = list.iter().find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
            });
            desc =
                pick.or_else(|| (list.len() == 1).then(|| &list[0])).cloned().ok_or_else(|| {
                    base_err(
                        dir,
                        format!("image index {} has no manifest for {platform}", desc.digest),
                    )
                })?;
            continue;
        }
        let (Some(config), Some(layers)) = (m.config, m.layers) else {
            return Err(base_err(
                dir,
                format!(
                    "{} ({}) is neither an image manifest nor an index",
                    desc.digest,
                    m.media_type.unwrap_or_default()
                ),
            ));
        };
        let cfg_bytes =
            layout.read_blob_limited(&config.digest, JSON_LIMIT).map_err(|e| base_err(dir, e))?;
        if Digest::of_bytes(&cfg_bytes) != config.digest {
            return Err(base_err(
                dir,
                format!("config {} does not match its digest", config.digest),
            ));
        }
        let cfg: ImageConfig = serde_json::from_slice(&cfg_bytes).map_err(|e| {
            base_err(dir, format!("image config {} is not valid: {e}", config.digest))
        })?;
        if !cfg.os.is_empty()
            && !cfg.architecture.is_empty()
            && (cfg.os != platform.os || cfg.architecture != platform.architecture)
        {
            return Err(base_err(
                dir,
                format!(
                    "image is for {}/{}, which cannot run on {platform}",
                    cfg.os, cfg.architecture
                ),
            ));
        }
        if cfg.rootfs.diff_ids.len() != layers.len() {
            return Err(base_err(
                dir,
                format!(
                    "config lists {} diff_ids for {} layers",
                    cfg.rootfs.diff_ids.len(),
                    layers.len()
                ),
            ));
        }
        let time = cfg.created.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        let mut chain = Vec::new();
        for (l, diff) in layers.iter().zip(&cfg.rootfs.diff_ids) {
            let diff_id = Digest::parse(diff).map_err(|e| base_err(dir, e))?;
            if media::layer_kind(&l.media_type).is_none() {
                return Err(base_err(
                    dir,
                    format!("layer {} has unsupported media type {:?}", l.digest, l.media_type),
                ));
            }
            let uncompressed = if media::layer_kind(&l.media_type)
                .is_some_and(|(_, c)| c == media::LayerCompression::Uncompressed)
            {
                Some(l.size)
            } else {
                None
            };
            state.adopt_layer_blob(&layout.blob_path(&l.digest), l, &diff_id, uncompressed)?;
            chain.push(ChainLayer { diff_id, created_at: time.clone() });
        }
        return Ok(BaseImage { manifest_digest: desc.digest, chain, config: cfg, time });
    }
    Err(base_err(dir, "image indexes nest too deeply"))
}
