//! Media types of the OCI and Docker image formats and of BuildKit's cache config.

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema-2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema-2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// BuildKit's cache config (`cacheconfig.v0`).
pub const BUILDKIT_CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";

/// OCI layer, uncompressed.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip (also estargz).
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed (deprecated, still read).
pub const OCI_LAYER_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const OCI_LAYER_ND_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const OCI_LAYER_ND_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker layer, uncompressed.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, zstd (non-standard, but BuildKit writes it).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign layer, gzip.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker foreign layer, uncompressed.
pub const DOCKER_LAYER_FOREIGN_TAR: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";

/// Annotation: the diffID (sha256 of the uncompressed tar). Required by BuildKit's importer.
pub const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Annotation: creation time of the layer's ref (RFC3339Nano).
pub const ANNOTATION_CREATED_AT: &str = "buildkit/createdat";
/// Annotation: free-text description of a layer.
pub const ANNOTATION_DESCRIPTION: &str = "buildkit/description";
/// Annotation: estargz TOC digest.
pub const ANNOTATION_STARGZ_TOC: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Annotation: estargz uncompressed size.
pub const ANNOTATION_ESTARGZ_SIZE: &str = "io.containers.estargz.uncompressed-size";
/// Annotation on index.json entries: the tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation on index.json entries written for images by containerd-style tools.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The compression of a layer, as its media type says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// Plain tar.
    Uncompressed,
    /// gzip (estargz is gzip too; tell them apart by the TOC annotation).
    Gzip,
    /// zstd.
    Zstd,
}

/// The family a layer media type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaFamily {
    /// `application/vnd.oci.*`
    Oci,
    /// `application/vnd.docker.*`
    Docker,
}

/// Classifies a layer media type; `None` for anything that is not a known layer type.
pub fn layer_kind(media_type: &str) -> Option<(MediaFamily, LayerCompression)> {
    use LayerCompression::*;
    use MediaFamily::*;
    Some(match media_type {
        OCI_LAYER_TAR | OCI_LAYER_ND_TAR => (Oci, Uncompressed),
        OCI_LAYER_GZIP | OCI_LAYER_ND_GZIP => (Oci, Gzip),
        OCI_LAYER_ZSTD | OCI_LAYER_ND_ZSTD => (Oci, Zstd),
        DOCKER_LAYER_TAR | DOCKER_LAYER_FOREIGN_TAR => (Docker, Uncompressed),
        DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP => (Docker, Gzip),
        DOCKER_LAYER_ZSTD => (Docker, Zstd),
        _ => return None,
    })
}

/// The distributable layer media type for a family and compression (what cache exports write).
pub fn layer_media_type(family: MediaFamily, compression: LayerCompression) -> &'static str {
    use LayerCompression::*;
    use MediaFamily::*;
    match (family, compression) {
        (Oci, Uncompressed) => OCI_LAYER_TAR,
        (Oci, Gzip) => OCI_LAYER_GZIP,
        (Oci, Zstd) => OCI_LAYER_ZSTD,
        (Docker, Uncompressed) => DOCKER_LAYER_TAR,
        (Docker, Gzip) => DOCKER_LAYER_GZIP,
        (Docker, Zstd) => DOCKER_LAYER_ZSTD,
    }
}

/// Converts a layer media type to the other family, keeping its compression; unknown
/// types are returned unchanged (BuildKit keeps them with a warning).
pub fn convert_layer_media_type(media_type: &str, to: MediaFamily) -> String {
    match layer_kind(media_type) {
        Some((_, c)) => layer_media_type(to, c).to_owned(),
        None => media_type.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_between_families() {
        assert_eq!(
            convert_layer_media_type(OCI_LAYER_GZIP, MediaFamily::Docker),
            DOCKER_LAYER_GZIP
        );
        assert_eq!(convert_layer_media_type(DOCKER_LAYER_ZSTD, MediaFamily::Oci), OCI_LAYER_ZSTD);
        assert_eq!(convert_layer_media_type("x/y", MediaFamily::Oci), "x/y");
        assert_eq!(layer_kind(OCI_LAYER_ND_GZIP), Some((MediaFamily::Oci, LayerCompression::Gzip)));
    }
}
