//! The cache config blob, `application/vnd.buildkit.cacheconfig.v0` (spec §4).
//!
//! Fields are declared in Go's marshalling order and every `omitempty` of BuildKit's
//! `types/spec.go` is reproduced, so [`CacheConfig::to_json`] gives the very bytes
//! BuildKit's `json.Marshal` gives (and therefore the same digest).

use serde::{Deserialize, Deserializer, Serialize};
use strata_oci::{Descriptor, Digest, gojson, media};

use crate::error::ConfigError;
use crate::gotime::GoTime;
use crate::limits::MAX_READ_SIZE;

/// The whole cache graph: a table of layer chains and a table of records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Layer chains; `layers[i]` is "blob on top of chain `parent`".
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CacheLayer>,
    /// Cache records (one per cache key).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<CacheRecord>,
}

/// One entry of the layer-chain table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// Digest of the layer blob.
    pub blob: Digest,
    /// Index of the parent chain, or -1 for none.
    ///
    /// Trap: Go's `omitempty` drops **0**, so a missing `parent` means layer 0, not "no
    /// parent"; -1 is written out.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "is_zero_i64")]
    pub parent: i64,
    /// Descriptor data for backends that keep no manifest (gha, s3, azblob); `local`
    /// never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

/// Per-layer descriptor data stored inside the config by manifest-less backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerAnnotations {
    /// Media type of the blob.
    #[serde(
        rename = "mediaType",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// Uncompressed digest (kept as an opaque string: it is only passed through).
    #[serde(
        rename = "diffID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub diff_id: String,
    /// Blob size.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "is_zero_i64")]
    pub size: i64,
    /// Creation time; always written (Go's `omitempty` ignores structs).
    #[serde(rename = "createdAt", default)]
    pub created_at: GoTime,
}

/// A cache record: a cache key, its inputs and its results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Results. Trap: the JSON key is `"layers"`, like the top-level layer table.
    #[serde(
        rename = "layers",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub results: Vec<CacheResult>,
    /// Chained results (inline cache only; accepted on read, never written by `local`).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainedResult>,
    /// The record's cache-key digest. Opaque: BuildKit never validates it, and values
    /// are compared as strings, so it is not parsed as a [`Digest`].
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub digest: String,
    /// Input slots; each holds alternative parent records.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<CacheInput>>,
}

/// A result of a record: the layer chain ending at `layer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheResult {
    /// Index into [`CacheConfig::layers`]; always written, even 0.
    #[serde(default)]
    pub layer: usize,
    /// When the result was created; always written, even the zero time.
    #[serde(rename = "createdAt", default)]
    pub created_at: GoTime,
}

/// A result given as explicit layer indexes, each used as a single blob without its
/// parents (inline cache).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedResult {
    /// Indexes into [`CacheConfig::layers`], root first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<usize>,
    /// When the result was created.
    #[serde(rename = "createdAt", default)]
    pub created_at: GoTime,
}

/// One alternative of an input slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInput {
    /// Opaque selector (usually a content checksum), empty for none.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub selector: String,
    /// Index of the linked record; always written, even 0.
    #[serde(default)]
    pub link: usize,
}

impl CacheConfig {
    /// Decodes a config blob. Accepts everything BuildKit's importer accepts that fits
    /// the types (missing `parent` = 0, `chains`, nulls, unknown fields), up to
    /// [`MAX_READ_SIZE`] bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_READ_SIZE {
            return Err(ConfigError::TooLarge {
                len: bytes.len() as u64,
                limit: MAX_READ_SIZE as u64,
            });
        }
        // serde accepts a JSON array for a struct (as a tuple); Go does not, and neither
        // should strata, or `[[…],[…]]` would silently read as a config.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ConfigError::NotAnObject);
        }
        serde_json::from_slice(bytes).map_err(ConfigError::Json)
    }

    /// Encodes exactly as Go's `json.Marshal` (compact, HTML-escaped, no newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising into a Vec cannot fail: no maps with non-string keys, no I/O, and
        // GoTime's invariant keeps every time formattable.
        gojson::to_vec(self).unwrap_or_default()
    }

    /// The descriptor of `bytes` as a cache config blob (what goes last in the index, or
    /// in `config` of an image manifest).
    pub fn descriptor_for(bytes: &[u8]) -> Descriptor {
        Descriptor::new(media::BUILDKIT_CACHE_CONFIG, Digest::of_bytes(bytes), bytes.len() as u64)
    }
}

/// Go decodes `null` into a slice, string or int by leaving the zero value; serde would
/// reject it, so these fields go through this adapter.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// serde's skip_serializing_if passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const B1: &str = "sha256:13b8cb8188cd8ab32594b9ae8cf107ab1aa2217c4af06bdf108374295c053bcb";
    const B2: &str = "sha256:5068a027f25f6a0addc160a9c313af7d9faa0d2849a150779704da007cceb643";

    fn layer(blob: &str, parent: i64) -> CacheLayer {
        CacheLayer { blob: Digest::parse(blob).unwrap(), parent, annotations: None }
    }

    fn json(c: &CacheConfig) -> String {
        String::from_utf8(c.to_json()).unwrap()
    }

    #[test]
    fn parent_zero_is_omitted_and_minus_one_written() {
        let c = CacheConfig { layers: vec![layer(B1, -1), layer(B2, 0)], records: vec![] };
        assert_eq!(
            json(&c),
            format!(r#"{{"layers":[{{"blob":"{B1}","parent":-1}},{{"blob":"{B2}"}}]}}"#)
        );
        let c = CacheConfig { layers: vec![layer(B1, 3)], records: vec![] };
        assert_eq!(json(&c), format!(r#"{{"layers":[{{"blob":"{B1}","parent":3}}]}}"#));
    }

    #[test]
    fn missing_parent_decodes_to_zero_not_minus_one() {
        let c = CacheConfig::from_json(format!(r#"{{"layers":[{{"blob":"{B2}"}}]}}"#).as_bytes())
            .unwrap();
        assert_eq!(c.layers[0].parent, 0);
        let c = CacheConfig::from_json(
            format!(r#"{{"layers":[{{"blob":"{B2}","parent":null}}]}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.layers[0].parent, 0);
    }

    #[test]
    fn zero_created_at_is_written() {
        let c = CacheConfig {
            layers: vec![],
            records: vec![CacheRecord {
                results: vec![CacheResult { layer: 0, created_at: GoTime::zero() }],
                ..Default::default()
            }],
        };
        assert_eq!(
            json(&c),
            r#"{"records":[{"layers":[{"layer":0,"createdAt":"0001-01-01T00:00:00Z"}]}]}"#
        );
        // A missing createdAt decodes to the zero time, which is written back.
        let c = CacheConfig::from_json(br#"{"records":[{"layers":[{"layer":0}]}]}"#).unwrap();
        assert!(c.records[0].results[0].created_at.is_zero());
    }

    #[test]
    fn empty_config_and_record() {
        assert_eq!(json(&CacheConfig::default()), "{}");
        let c = CacheConfig { layers: vec![], records: vec![CacheRecord::default()] };
        assert_eq!(json(&c), r#"{"records":[{}]}"#);
        assert_eq!(CacheConfig::from_json(b"{}").unwrap(), CacheConfig::default());
        let c = CacheConfig::from_json(br#"{"layers":null,"records":null}"#).unwrap();
        assert_eq!(c, CacheConfig::default());
    }

    #[test]
    fn chains_are_accepted_and_kept() {
        let src = r#"{"records":[{"chains":[{"layers":[0,1],"createdAt":"2026-12-04T15:28:07.5+01:00"}],"digest":"sha256:x"}]}"#;
        let c = CacheConfig::from_json(src.as_bytes()).unwrap();
        assert_eq!(c.records[0].chains[0].layers, vec![0, 1]);
        assert_eq!(json(&c), src);
    }

    #[test]
    fn selector_and_digest_are_opaque_and_go_escaped() {
        let c = CacheConfig {
            layers: vec![],
            records: vec![
                CacheRecord { digest: "random:<&>".into(), ..Default::default() },
                CacheRecord {
                    digest: "not-a-digest".into(),
                    inputs: vec![vec![CacheInput { selector: "/a<b>&c".into(), link: 0 }]],
                    ..Default::default()
                },
            ],
        };
        let out = json(&c);
        assert_eq!(
            out,
            r#"{"records":[{"digest":"random:\u003c\u0026\u003e"},{"digest":"not-a-digest","inputs":[[{"selector":"/a\u003cb\u003e\u0026c","link":0}]]}]}"#
        );
        assert_eq!(CacheConfig::from_json(out.as_bytes()).unwrap(), c);
    }

    #[test]
    fn layer_annotations_round_trip() {
        let src = format!(
            r#"{{"layers":[{{"blob":"{B1}","parent":-1,"annotations":{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","diffID":"sha256:ab","size":130,"createdAt":"0001-01-01T00:00:00Z"}}}}]}}"#
        );
        let c = CacheConfig::from_json(src.as_bytes()).unwrap();
        assert_eq!(c.layers[0].annotations.as_ref().unwrap().size, 130);
        assert_eq!(json(&c), src);
        let bare = CacheConfig {
            layers: vec![CacheLayer {
                annotations: Some(LayerAnnotations::default()),
                ..layer(B1, -1)
            }],
            records: vec![],
        };
        assert_eq!(
            json(&bare),
            format!(
                r#"{{"layers":[{{"blob":"{B1}","parent":-1,"annotations":{{"createdAt":"0001-01-01T00:00:00Z"}}}}]}}"#
            )
        );
    }

    #[test]
    fn rejects_bad_input_with_position() {
        for bad in [
            &br#"{"layers":[{"blob":"sha256:zz"}]}"#[..],
            br#"{"records":[{"layers":[{"layer":-1}]}]}"#,
            br#"{"records":[{"inputs":[[{"link":"x"}]]}]}"#,
            br#"{"records":[{"layers":[{"layer":0,"createdAt":"yesterday"}]}]}"#,
            b"{",
            b"",
            b"7",
        ] {
            let e = CacheConfig::from_json(bad).unwrap_err();
            assert!(matches!(e, ConfigError::Json(_)), "{e}");
        }
        assert!(matches!(CacheConfig::from_json(b" [[],[]]"), Err(ConfigError::NotAnObject)));
        let big = vec![b' '; MAX_READ_SIZE + 1];
        assert!(matches!(CacheConfig::from_json(&big), Err(ConfigError::TooLarge { .. })));
    }

    #[test]
    fn descriptor_for_config() {
        let d = CacheConfig::descriptor_for(b"{}");
        assert_eq!(d.media_type, media::BUILDKIT_CACHE_CONFIG);
        assert_eq!(d.size, 2);
        assert!(d.annotations.is_none());
    }
}
