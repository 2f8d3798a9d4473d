//! Small helpers shared by the exporter and the importer: layer chains, layer
//! compression, and record digests.

use strata_oci::media::{self, LayerCompression};
use strata_oci::{Descriptor, Digest};

use crate::config::CacheConfig;
use crate::error::ChainError;

/// The blob indexes of the chain ending at `layer`, root first — what BuildKit's
/// `getRemoteChain` loads for a result `{"layer": layer}`.
pub fn layer_chain(config: &CacheConfig, layer: usize) -> Result<Vec<usize>, ChainError> {
    let n = config.layers.len();
    let mut chain = Vec::new();
    let mut seen = vec![false; n];
    let mut cur = i64::try_from(layer).unwrap_or(i64::MAX);
    while cur != -1 {
        let idx = usize::try_from(cur)
            .ok()
            .filter(|&i| i < n)
            .ok_or(ChainError::OutOfRange { index: cur, len: n })?;
        if std::mem::replace(&mut seen[idx], true) {
            return Err(ChainError::Loop { layer: idx });
        }
        chain.push(idx);
        cur = config.layers[idx].parent;
    }
    chain.reverse();
    Ok(chain)
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    Uncompressed,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// eStargz: a gzip media type plus the stargz TOC annotation.
    Estargz,
}

/// The compression of a layer descriptor, `None` for a media type that is not a known
/// layer type (OCI, OCI non-distributable, Docker, Docker foreign).
pub fn compression_of(descriptor: &Descriptor) -> Option<Compression> {
    let (_, c) = media::layer_kind(&descriptor.media_type)?;
    Some(match c {
        LayerCompression::Uncompressed => Compression::Uncompressed,
        LayerCompression::Zstd => Compression::Zstd,
        // estargz has no media type of its own; the TOC annotation is what tells it apart.
        LayerCompression::Gzip if descriptor.annotation(media::ANNOTATION_STARGZ_TOC).is_some() => {
            Compression::Estargz
        }
        LayerCompression::Gzip => Compression::Gzip,
    })
}

/// The digest of a record: `sha256("<cache_key>@<output_index>")` over the literal
/// string, formatted `sha256:<hex>` (BuildKit's `rootKey` / `outputKey`, spec §6).
/// `cache_key` is opaque and used as given.
pub fn record_digest(cache_key: &str, output_index: usize) -> String {
    Digest::of_bytes(format!("{cache_key}@{output_index}").as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheLayer;

    fn cfg(parents: &[i64]) -> CacheConfig {
        CacheConfig {
            layers: parents
                .iter()
                .map(|&parent| CacheLayer {
                    blob: Digest::of_bytes(b"x"),
                    parent,
                    annotations: None,
                })
                .collect(),
            records: vec![],
        }
    }

    #[test]
    fn chains_root_first() {
        let c = cfg(&[2, 0, -1, 1]);
        assert_eq!(layer_chain(&c, 3).unwrap(), vec![2, 0, 1, 3]);
        assert_eq!(layer_chain(&c, 2).unwrap(), vec![2]);
        // A missing "parent" decodes to 0, so layer 0 is the parent, not "none".
        assert_eq!(layer_chain(&c, 1).unwrap(), vec![2, 0, 1]);
    }

    #[test]
    fn chain_errors() {
        assert_eq!(layer_chain(&cfg(&[-1]), 1), Err(ChainError::OutOfRange { index: 1, len: 1 }));
        assert_eq!(
            layer_chain(&cfg(&[-1, 7]), 1),
            Err(ChainError::OutOfRange { index: 7, len: 2 })
        );
        assert_eq!(layer_chain(&cfg(&[1, 0]), 0), Err(ChainError::Loop { layer: 0 }));
        assert_eq!(layer_chain(&cfg(&[0]), 0), Err(ChainError::Loop { layer: 0 }));
        assert!(layer_chain(&cfg(&[-2]), 0).is_err());
    }

    #[test]
    fn compression_from_media_type_and_annotation() {
        let mk = |mt: &str| Descriptor::new(mt, Digest::of_bytes(b"x"), 1);
        assert_eq!(compression_of(&mk(media::OCI_LAYER_TAR)), Some(Compression::Uncompressed));
        assert_eq!(compression_of(&mk(media::DOCKER_LAYER_GZIP)), Some(Compression::Gzip));
        assert_eq!(compression_of(&mk(media::DOCKER_LAYER_ZSTD)), Some(Compression::Zstd));
        assert_eq!(compression_of(&mk(media::OCI_LAYER_ZSTD)), Some(Compression::Zstd));
        let mut e = mk(media::OCI_LAYER_GZIP);
        e.set_annotation(media::ANNOTATION_STARGZ_TOC, "sha256:00");
        assert_eq!(compression_of(&e), Some(Compression::Estargz));
        assert_eq!(compression_of(&mk(media::BUILDKIT_CACHE_CONFIG)), None);
    }

    #[test]
    fn record_digest_is_sha256_of_key_at_index() {
        // Expected values from `printf 'sha256:ab@0' | sha256sum`.
        assert_eq!(
            record_digest("sha256:ab", 0),
            "sha256:6f38cc8e690e91576e75cfd1fcfbf6b2d802c7eb2ab6c12d83715fa1bd5f3fe1"
        );
        assert_eq!(
            record_digest("sha256:ab", 1),
            "sha256:e10b4b41e37a99f4c461019dc1864f07090682f68e44b3d5019d4c0ac478b0a1"
        );
    }
}
