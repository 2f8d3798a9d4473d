//! The `index.json` model and BuildKit's tag rules (`client/ociindex/ociindex.go`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Descriptor;
use crate::media::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_INDEX};

/// An OCI image index as stored in `index.json`.
///
/// Fields are declared in the order Go's `ocispecs.Index` marshals them, so
/// [`crate::gojson::to_vec`] writes the same bytes as BuildKit: `schemaVersion`, `mediaType`
/// (omitempty), `artifactType` (omitempty), `manifests`, `subject` (omitempty),
/// `annotations` (omitempty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2 once written by strata or BuildKit.
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    /// Top-level media type; absent in indexes written before BuildKit v0.14.
    #[serde(rename = "mediaType", default, skip_serializing_if = "is_none_or_empty")]
    pub media_type: Option<String>,
    /// Artifact type (never written by cache exports; kept so it round-trips).
    #[serde(rename = "artifactType", default, skip_serializing_if = "is_none_or_empty")]
    pub artifact_type: Option<String>,
    /// One entry per tag (or image name).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub manifests: Vec<Descriptor>,
    /// Subject (never written by cache exports; kept so it round-trips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Index annotations, sorted by key as Go sorts maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

// serde's `skip_serializing_if` passes a reference to the field.
#[allow(clippy::ref_option)]
fn is_none_or_empty(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

/// Go unmarshals `"manifests": null` into a nil slice; accept it too.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Descriptor>, D::Error> {
    Ok(Option::<Vec<Descriptor>>::deserialize(d)?.unwrap_or_default())
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    /// An empty index with the defaults BuildKit v0.14+ writes.
    pub fn new() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: None,
        }
    }

    /// Parses `index.json` bytes (with or without the top-level `mediaType`).
    pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }

    /// Encodes exactly as Go's `json.Marshal` would.
    pub fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
        crate::gojson::to_vec(self)
    }

    /// Sets `schemaVersion` to 2 and an absent top-level `mediaType` to the OCI index type,
    /// as `StoreIndex.Put` does since BuildKit v0.14.
    pub fn fill_defaults(&mut self) {
        self.schema_version = 2;
        if is_none_or_empty(&self.media_type) {
            self.media_type = Some(OCI_INDEX.to_owned());
        }
    }

    /// Resolves a tag as BuildKit HEAD's `Get`: first the entry whose
    /// `io.containerd.image.name` equals `tag`, else the first whose
    /// `org.opencontainers.image.ref.name` equals it. The first match in array order wins.
    pub fn resolve(&self, tag: &str) -> Option<&Descriptor> {
        let by = |key: &str| self.manifests.iter().find(|d| d.annotation(key) == Some(tag));
        by(ANNOTATION_IMAGE_NAME).or_else(|| by(ANNOTATION_REF_NAME))
    }

    /// Points `tag` at `desc` as BuildKit HEAD's `Put` with a tag does: the descriptor gets
    /// `org.opencontainers.image.ref.name = tag`; every entry with that ref name and no
    /// (or an empty) image name is removed; the new entry is appended at the end. Entries
    /// that carry an image name are images, not cache tags, and are left alone.
    /// Also applies [`Index::fill_defaults`].
    pub fn put_tag(&mut self, mut desc: Descriptor, tag: &str) {
        desc.set_annotation(ANNOTATION_REF_NAME, tag);
        self.manifests.retain(|d| {
            let same_tag = d.annotation(ANNOTATION_REF_NAME) == Some(tag);
            let has_image_name = d.annotation(ANNOTATION_IMAGE_NAME).is_some_and(|n| !n.is_empty());
            !same_tag || has_image_name
        });
        self.manifests.push(desc);
        self.fill_defaults();
    }

    /// The tags (`ref.name` annotations) present, in array order, without duplicates.
    pub fn tags(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for d in &self.manifests {
            if let Some(t) = d.annotation(ANNOTATION_REF_NAME)
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;
    use crate::media::OCI_MANIFEST;

    fn desc(n: u8) -> Descriptor {
        Descriptor::new(OCI_INDEX, Digest::of_bytes(&[n]), u64::from(n))
    }

    #[test]
    fn reads_v011_form_and_writes_head_form() {
        let v011 = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:115583cb14260c3a26863de21c9a5420e9c91724b9d92d203bcc047dd9331895","size":892,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#;
        let mut idx = Index::from_slice(v011).unwrap();
        assert_eq!(idx.media_type, None);
        // Untouched, it re-encodes byte for byte.
        assert_eq!(idx.to_vec().unwrap(), v011.to_vec());
        let d = idx.resolve("latest").unwrap().clone();
        idx.put_tag(d, "latest");
        let out = String::from_utf8(idx.to_vec().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:115583cb14260c3a26863de21c9a5420e9c91724b9d92d203bcc047dd9331895","size":892,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#
        );
    }

    #[test]
    fn null_manifests_and_annotations_order() {
        let idx = Index::from_slice(br#"{"schemaVersion":2,"manifests":null}"#).unwrap();
        assert!(idx.manifests.is_empty());
        let mut idx = Index::new();
        idx.annotations =
            Some(BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]));
        assert_eq!(
            String::from_utf8(idx.to_vec().unwrap()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"a":"1","b":"2"}}"#
        );
    }

    #[test]
    fn put_replaces_same_tag_only_and_appends() {
        let mut idx = Index { media_type: None, ..Index::new() };
        idx.put_tag(desc(1), "a");
        idx.put_tag(desc(2), "b");
        // An image entry that happens to carry the same ref.name must survive.
        let mut image = desc(3);
        image.set_annotation(ANNOTATION_IMAGE_NAME, "docker.io/x:a");
        image.set_annotation(ANNOTATION_REF_NAME, "a");
        idx.manifests.push(image.clone());
        idx.put_tag(desc(4), "a");
        let digests: Vec<_> = idx.manifests.iter().map(|d| d.digest.clone()).collect();
        assert_eq!(digests, vec![desc(2).digest, image.digest.clone(), desc(4).digest]);
        assert_eq!(idx.media_type.as_deref(), Some(OCI_INDEX));
        assert_eq!(idx.tags(), vec!["b", "a"]);
        // ref.name "a" resolves to the first match in array order: the image entry.
        assert_eq!(idx.resolve("a").unwrap().digest, image.digest);
    }

    #[test]
    fn image_name_wins_over_earlier_ref_name() {
        let mut idx = Index::new();
        let mut by_ref = desc(1);
        by_ref.set_annotation(ANNOTATION_REF_NAME, "x");
        let mut by_name = Descriptor::new(OCI_MANIFEST, Digest::of_bytes(b"n"), 1);
        by_name.set_annotation(ANNOTATION_IMAGE_NAME, "x");
        idx.manifests = vec![by_ref, by_name.clone()];
        assert_eq!(idx.resolve("x").unwrap(), &by_name);
        assert!(idx.resolve("y").is_none());
    }

    #[test]
    fn empty_media_type_is_omitted_and_defaulted() {
        let mut idx = Index { media_type: Some(String::new()), ..Index::new() };
        assert!(!String::from_utf8(idx.to_vec().unwrap()).unwrap().contains("mediaType"));
        idx.fill_defaults();
        assert_eq!(idx.media_type.as_deref(), Some(OCI_INDEX));
    }
}
