//! The top-level cache object that `index.json` (or `digest=`) points at (spec §3, §7).
//!
//! Three forms are written by BuildKit: an OCI index or a Docker manifest list whose
//! `manifests` are the layer descriptors followed by the config descriptor, and (v0.12+,
//! `image-manifest=true`) an OCI image manifest whose `config` is the cache config.
//! Reading follows BuildKit's `DetectManifestBlobMediaType` so that strata accepts and
//! refuses the same blobs.

use std::fmt;

use serde::Serialize;
use strata_oci::{Descriptor, gojson, media};

use crate::error::ManifestError;
use crate::limits::MAX_READ_SIZE;

/// Which top-level form a cache manifest has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestForm {
    /// OCI image index (`image-manifest=false`, `oci-mediatypes=true`).
    OciIndex,
    /// Docker manifest list (`image-manifest=false`, `oci-mediatypes=false`).
    DockerManifestList,
    /// OCI image manifest (`image-manifest=true`).
    OciManifest,
    /// Docker schema-2 manifest: never written by BuildKit for caches, but a manifest with
    /// no `mediaType` is inferred as this, and BuildKit reads it like an OCI manifest.
    DockerManifest,
}

impl ManifestForm {
    /// The media type written for this form.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::OciIndex => media::OCI_INDEX,
            Self::DockerManifestList => media::DOCKER_MANIFEST_LIST,
            Self::OciManifest => media::OCI_MANIFEST,
            Self::DockerManifest => media::DOCKER_MANIFEST,
        }
    }

    /// Whether the form is an index (layers and config under `manifests`).
    pub fn is_index(self) -> bool {
        matches!(self, Self::OciIndex | Self::DockerManifestList)
    }

    /// The form for a media type, if it is one of the four.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Some(match media_type {
            media::OCI_INDEX => Self::OciIndex,
            media::DOCKER_MANIFEST_LIST => Self::DockerManifestList,
            media::OCI_MANIFEST => Self::OciManifest,
            media::DOCKER_MANIFEST => Self::DockerManifest,
            _ => return None,
        })
    }

    /// Detects the form of a manifest blob as BuildKit's `DetectManifestBlobMediaType`:
    /// `manifests` present → list/index; `config` or `layers` present → manifest; both →
    /// error; neither → a (Docker) list. A known explicit `mediaType` must agree with the
    /// shape and then wins; an unknown one is ignored. Does not need a cache config.
    pub fn detect(bytes: &[u8]) -> Result<Self, ManifestError> {
        check_len(bytes)?;
        RawShape::read(bytes)?.form()
    }
}

impl fmt::Display for ManifestForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OciIndex => "OCI image index",
            Self::DockerManifestList => "Docker manifest list",
            Self::OciManifest => "OCI image manifest",
            Self::DockerManifest => "Docker image manifest",
        })
    }
}

/// A parsed cache manifest: layer descriptors in order, plus the config descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheManifest {
    /// The top-level form.
    pub form: ManifestForm,
    /// Layer descriptors, in manifest order (cache-config `layers` order when BuildKit
    /// wrote it; the same descriptor may appear twice).
    pub layers: Vec<Descriptor>,
    /// The cache config descriptor (`application/vnd.buildkit.cacheconfig.v0`).
    pub config: Descriptor,
}

impl CacheManifest {
    /// Parses a cache manifest blob of any form.
    ///
    /// For index forms the config is the entry with the cacheconfig.v0 media type (the
    /// last one if there are several, as BuildKit); every other entry is a layer. For
    /// manifest forms `config` must carry that media type. Otherwise the blob is an image
    /// and [`ManifestError::NoCacheConfig`] says so.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        check_len(bytes)?;
        let raw = RawShape::read(bytes)?;
        let form = raw.form()?;
        let json = |v: Option<serde_json::Value>| -> Result<Vec<Descriptor>, ManifestError> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(v) => serde_json::from_value(v).map_err(ManifestError::Json),
            }
        };
        if form.is_index() {
            let entries = json(raw.manifests)?;
            let mut config = None;
            let mut layers = Vec::with_capacity(entries.len());
            for d in entries {
                if d.media_type == media::BUILDKIT_CACHE_CONFIG {
                    // Last wins, as in BuildKit's importer; earlier configs are dropped.
                    config = Some(d);
                } else {
                    layers.push(d);
                }
            }
            let config = config.ok_or(ManifestError::NoCacheConfig { form })?;
            Ok(Self { form, layers, config })
        } else {
            let config: Option<Descriptor> = match raw.config {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(serde_json::from_value(v).map_err(ManifestError::Json)?),
            };
            let config = config
                .filter(|c| c.media_type == media::BUILDKIT_CACHE_CONFIG)
                .ok_or(ManifestError::NoCacheConfig { form })?;
            let layers = json(raw.layers)?;
            Ok(Self { form, layers, config })
        }
    }

    /// Encodes the manifest exactly as BuildKit writes it: `schemaVersion` 2, the form's
    /// `mediaType`, then either `manifests` (layers, config last) or `config` + `layers`.
    /// Descriptors are written with all their fields, in Go's order.
    pub fn encode(&self) -> Vec<u8> {
        let media_type = self.form.media_type();
        let out = if self.form.is_index() {
            let mut manifests: Vec<&Descriptor> = self.layers.iter().collect();
            manifests.push(&self.config);
            gojson::to_vec(&IndexOut { schema_version: 2, media_type, manifests })
        } else {
            gojson::to_vec(&ManifestOut {
                schema_version: 2,
                media_type,
                config: &self.config,
                layers: &self.layers,
            })
        };
        // Serialising descriptors into a Vec cannot fail (string-keyed maps, no I/O).
        out.unwrap_or_default()
    }
}

fn check_len(bytes: &[u8]) -> Result<(), ManifestError> {
    if bytes.len() > MAX_READ_SIZE {
        return Err(ManifestError::TooLarge {
            len: bytes.len() as u64,
            limit: MAX_READ_SIZE as u64,
        });
    }
    Ok(())
}

/// The fields BuildKit looks at to detect the form. `Some(Value::Null)` means "present
/// but null": Go's `json.RawMessage` is non-nil for an explicit null, so BuildKit counts
/// the key as present.
struct RawShape {
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

impl RawShape {
    /// Reads the top-level object. Going through a map (rather than a derived struct)
    /// rejects a top-level array, which serde would otherwise accept as a struct, and
    /// lets a repeated key win last, as in Go.
    fn read(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        let media_type = match obj.remove("mediaType") {
            None => None,
            // A non-string mediaType fails to decode in Go too.
            Some(v) => serde_json::from_value::<Option<String>>(v).map_err(ManifestError::Json)?,
        };
        Ok(Self {
            media_type,
            manifests: obj.remove("manifests"),
            config: obj.remove("config"),
            layers: obj.remove("layers"),
        })
    }
}

impl RawShape {
    fn form(&self) -> Result<ManifestForm, ManifestError> {
        let is_manifest = self.config.is_some() || self.layers.is_some();
        if is_manifest && self.manifests.is_some() {
            return Err(ManifestError::Ambiguous);
        }
        let shape = if is_manifest { "an image manifest" } else { "an index" };
        let inferred = if is_manifest {
            ManifestForm::DockerManifest
        } else {
            ManifestForm::DockerManifestList
        };
        let Some(mt) = self.media_type.as_deref() else {
            return Ok(inferred);
        };
        match ManifestForm::from_media_type(mt) {
            // Unknown media types are ignored and the shape decides, as in BuildKit.
            None => Ok(inferred),
            Some(f) if f.is_index() == inferred.is_index() => Ok(f),
            Some(_) => Err(ManifestError::MediaTypeMismatch { media_type: mt.to_owned(), shape }),
        }
    }
}

#[derive(Serialize)]
struct IndexOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<&'a Descriptor>,
}

#[derive(Serialize)]
struct ManifestOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_oci::Digest;

    const CFG: &str = r#"{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:3b7e4546ae07297c01d964b5b20375c9675d2fdf07c8dff32d2214eb71187b62","size":739}"#;
    const L1: &str = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:13b8cb8188cd8ab32594b9ae8cf107ab1aa2217c4af06bdf108374295c053bcb","size":130,"annotations":{"containerd.io/uncompressed":"sha256:ab7764cc73a37f5a87e80b03767dc8d9dfb99de7a1bffc2c5ae092ab929ff568"}}"#;

    fn parse(s: &str) -> Result<CacheManifest, ManifestError> {
        CacheManifest::parse(s.as_bytes())
    }

    #[test]
    fn index_forms_round_trip() {
        for mt in [media::OCI_INDEX, media::DOCKER_MANIFEST_LIST] {
            let s = format!(r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{L1},{CFG}]}}"#);
            let m = parse(&s).unwrap();
            assert_eq!(m.form.media_type(), mt);
            assert_eq!(m.layers.len(), 1);
            assert_eq!(m.config.size, 739);
            assert_eq!(String::from_utf8(m.encode()).unwrap(), s);
        }
    }

    #[test]
    fn image_manifest_round_trip() {
        let s = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{CFG},"layers":[{L1}]}}"#,
            media::OCI_MANIFEST
        );
        let m = parse(&s).unwrap();
        assert_eq!(m.form, ManifestForm::OciManifest);
        assert_eq!(String::from_utf8(m.encode()).unwrap(), s);
    }

    #[test]
    fn missing_media_type_is_inferred_from_shape() {
        let m = parse(&format!(r#"{{"schemaVersion":2,"manifests":[{L1},{CFG}]}}"#)).unwrap();
        assert_eq!(m.form, ManifestForm::DockerManifestList);
        let m = parse(&format!(r#"{{"config":{CFG},"layers":[{L1}]}}"#)).unwrap();
        assert_eq!(m.form, ManifestForm::DockerManifest);
        // An unknown mediaType is ignored, the shape decides.
        let m = parse(&format!(r#"{{"mediaType":"x/y","manifests":[{CFG}]}}"#)).unwrap();
        assert_eq!(m.form, ManifestForm::DockerManifestList);
        assert!(m.layers.is_empty());
    }

    #[test]
    fn config_is_last_cacheconfig_entry_wherever_it_is() {
        let other = CFG.replace("3b7e", "0000");
        let m = parse(&format!(r#"{{"manifests":[{other},{CFG},{L1}]}}"#)).unwrap();
        assert!(m.config.digest.as_str().starts_with("sha256:3b7e"));
        assert_eq!(m.layers.len(), 1);
        // Re-encoding is canonical: config last, explicit mediaType.
        let again = parse(std::str::from_utf8(&m.encode()).unwrap()).unwrap();
        assert_eq!(again.layers, m.layers);
        assert_eq!(again.config, m.config);
    }

    #[test]
    fn shape_errors() {
        let e = parse(&format!(r#"{{"manifests":[{CFG}],"layers":[]}}"#)).unwrap_err();
        assert!(matches!(e, ManifestError::Ambiguous), "{e}");
        // An explicit null still counts as present, as with Go's json.RawMessage.
        let e = parse(&format!(r#"{{"manifests":null,"config":{CFG}}}"#)).unwrap_err();
        assert!(matches!(e, ManifestError::Ambiguous), "{e}");
        let e = parse(&format!(r#"{{"mediaType":"{}","config":{CFG}}}"#, media::OCI_INDEX))
            .unwrap_err();
        assert!(matches!(e, ManifestError::MediaTypeMismatch { .. }), "{e}");
        let e = parse(&format!(r#"{{"mediaType":"{}","manifests":[]}}"#, media::OCI_MANIFEST))
            .unwrap_err();
        assert!(matches!(e, ManifestError::MediaTypeMismatch { .. }), "{e}");
        for bad in ["", "[]", r#"{"manifests":[{"digest":"sha256:1"}]}"#, r#"{"mediaType":5}"#] {
            assert!(matches!(parse(bad), Err(ManifestError::Json(_))), "{bad}");
        }
        let big = vec![b' '; MAX_READ_SIZE + 1];
        assert!(matches!(CacheManifest::parse(&big), Err(ManifestError::TooLarge { .. })));
    }

    #[test]
    fn images_have_no_cache_config() {
        let img_cfg = CFG.replace(media::BUILDKIT_CACHE_CONFIG, media::OCI_CONFIG);
        let e = parse(&format!(
            r#"{{"mediaType":"{}","config":{img_cfg},"layers":[{L1}]}}"#,
            media::OCI_MANIFEST
        ))
        .unwrap_err();
        assert!(
            matches!(e, ManifestError::NoCacheConfig { form: ManifestForm::OciManifest }),
            "{e}"
        );
        let e = parse(&format!(r#"{{"mediaType":"{}","manifests":[{L1}]}}"#, media::OCI_INDEX))
            .unwrap_err();
        assert!(matches!(e, ManifestError::NoCacheConfig { form: ManifestForm::OciIndex }));
        assert!(matches!(parse("{}"), Err(ManifestError::NoCacheConfig { .. })));
        assert_eq!(
            ManifestForm::detect(format!(r#"{{"layers":[{L1}]}}"#).as_bytes()).unwrap(),
            ManifestForm::DockerManifest
        );
    }

    #[test]
    fn keeps_descriptor_fields() {
        let mut d = Descriptor::new(media::OCI_LAYER_ZSTD, Digest::of_bytes(b"x"), 1);
        d.urls = Some(vec!["https://e.invalid/<x>".into()]);
        d.artifact_type = Some("a/b".into());
        d.set_annotation("k", "v&");
        let m = CacheManifest {
            form: ManifestForm::OciIndex,
            layers: vec![d.clone(), d],
            config: Descriptor::new(media::BUILDKIT_CACHE_CONFIG, Digest::of_bytes(b"{}"), 2),
        };
        let bytes = m.encode();
        let s = std::str::from_utf8(&bytes).unwrap();
        assert!(s.contains(r#""urls":["https://e.invalid/\u003cx\u003e"],"annotations":{"k":"v\u0026"},"artifactType":"a/b""#), "{s}");
        assert_eq!(CacheManifest::parse(&bytes).unwrap(), m);
    }
}
