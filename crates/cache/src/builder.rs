//! Assembling a cache config from records and layer chains, as BuildKit's exporter does
//! (`marshalItem` / `marshalRemote` in `v1/utils.go`, then `sortConfig`).
//!
//! The exporter knows, per record, its cache-key digest, its input links and its results
//! as chains of layer descriptors. This turns that into the deduplicated layer-chain
//! table, sorted, plus the layer descriptors a manifest lists in config order.

use std::collections::HashMap;

use strata_oci::media::{self, MediaFamily};
use strata_oci::{Descriptor, Digest};

use crate::config::{CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult};
use crate::error::BuilderError;
use crate::gotime::GoTime;
use crate::sort::sort_config;
use crate::validate::validate;

/// The gzip of an empty tar (BuildKit's `exptypes.EmptyGZLayer`). BuildKit leaves it out
/// of cache chains, since applying it changes nothing.
pub const EMPTY_GZ_LAYER: &str =
    "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";

/// A record handle handed out by [`CacheConfigBuilder::add_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId(usize);

#[derive(Debug)]
struct PendingRecord {
    digest: String,
    /// Per input slot: (linked record, selector), deduplicated like BuildKit's link sets.
    inputs: Vec<Vec<(usize, String)>>,
    results: Vec<(Vec<Descriptor>, GoTime)>,
}

/// Builds a sorted, deduplicated [`CacheConfig`] and its layer descriptors.
#[derive(Debug, Default)]
pub struct CacheConfigBuilder {
    records: Vec<PendingRecord>,
    family: Option<MediaFamily>,
}

/// The output of [`CacheConfigBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltCache {
    /// The sorted config.
    pub config: CacheConfig,
    /// One descriptor per `config.layers` entry, in the same order (a blob under two
    /// parents appears twice), ready for the manifest.
    pub layers: Vec<Descriptor>,
}

impl BuiltCache {
    /// Whether there are no layers; BuildKit then skips the export entirely ("skipping
    /// cache export for empty result") and does not touch `index.json`.
    pub fn is_empty(&self) -> bool {
        self.config.layers.is_empty()
    }
}

impl CacheConfigBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts every layer media type to `family` (BuildKit: `oci-mediatypes`); unknown
    /// types are kept as they are. Without this, descriptors are used unchanged.
    pub fn media_family(mut self, family: MediaFamily) -> Self {
        self.family = Some(family);
        self
    }

    /// Adds a record with an opaque cache-key digest (usually [`crate::record_digest`]).
    pub fn add_record(&mut self, digest: impl Into<String>) -> RecordId {
        self.records.push(PendingRecord {
            digest: digest.into(),
            inputs: Vec::new(),
            results: Vec::new(),
        });
        RecordId(self.records.len() - 1)
    }

    /// Adds `from` as an alternative for input slot `input` of `record`, with an
    /// optional selector ("" for none). Identical (from, selector) pairs are kept once.
    pub fn add_input(
        &mut self,
        record: RecordId,
        input: usize,
        from: RecordId,
        selector: impl Into<String>,
    ) -> Result<(), BuilderError> {
        self.check(from)?;
        let rec = self.record_mut(record)?;
        if rec.inputs.len() <= input {
            rec.inputs.resize_with(input + 1, Vec::new);
        }
        let link = (from.0, selector.into());
        if !rec.inputs[input].contains(&link) {
            rec.inputs[input].push(link);
        }
        Ok(())
    }

    /// Adds a result: the full layer chain, root first, and its creation time. An empty
    /// chain (or one made only of empty layers) adds no result, as in BuildKit.
    pub fn add_result(
        &mut self,
        record: RecordId,
        chain: Vec<Descriptor>,
        created_at: GoTime,
    ) -> Result<(), BuilderError> {
        self.record_mut(record)?.results.push((chain, created_at));
        Ok(())
    }

    fn check(&self, id: RecordId) -> Result<(), BuilderError> {
        if id.0 >= self.records.len() {
            return Err(BuilderError::UnknownRecord { id: id.0, len: self.records.len() });
        }
        Ok(())
    }

    fn record_mut(&mut self, id: RecordId) -> Result<&mut PendingRecord, BuilderError> {
        self.check(id)?;
        Ok(&mut self.records[id.0])
    }

    /// Deduplicates layer chains, assembles records, validates and sorts.
    ///
    /// Chains are keyed like BuildKit's `chainsByID`: blob digest + parent chain id, so a
    /// blob under two different parents is two entries. When one digest comes with
    /// different descriptors (e.g. annotations), the last one added wins, as in BuildKit.
    pub fn build(self) -> Result<BuiltCache, BuilderError> {
        let mut layers: Vec<CacheLayer> = Vec::new();
        let mut chains_by_id: HashMap<String, usize> = HashMap::new();
        let mut descriptors: HashMap<Digest, Descriptor> = HashMap::new();
        let mut records = Vec::with_capacity(self.records.len());

        for (ri, rec) in self.records.into_iter().enumerate() {
            let mut inputs = Vec::with_capacity(rec.inputs.len());
            for (k, group) in rec.inputs.into_iter().enumerate() {
                if group.is_empty() {
                    return Err(BuilderError::EmptyInput {
                        record: ri,
                        digest: rec.digest,
                        input: k,
                    });
                }
                inputs.push(
                    group
                        .into_iter()
                        .map(|(link, selector)| CacheInput { selector, link })
                        .collect::<Vec<_>>(),
                );
            }
            let mut results = Vec::new();
            for (chain, created_at) in rec.results {
                // (chain id, its layer index) of the chain built so far.
                let mut top: Option<(String, usize)> = None;
                for mut desc in chain {
                    if desc.digest.as_str() == EMPTY_GZ_LAYER {
                        continue;
                    }
                    if let Some(family) = self.family {
                        desc.media_type = media::convert_layer_media_type(&desc.media_type, family);
                    }
                    let parent_id = top.as_ref().map_or("", |(id, _)| id.as_str());
                    let id = format!("{}{parent_id}", desc.digest);
                    let index = match chains_by_id.get(&id) {
                        Some(&i) => i,
                        None => {
                            let i = layers.len();
                            layers.push(CacheLayer {
                                blob: desc.digest.clone(),
                                parent: top.as_ref().map_or(-1, |&(_, p)| p as i64),
                                annotations: None,
                            });
                            chains_by_id.insert(id.clone(), i);
                            i
                        }
                    };
                    descriptors.insert(desc.digest.clone(), desc);
                    top = Some((id, index));
                }
                if let Some((_, layer)) = top {
                    results.push(CacheResult { layer, created_at });
                }
            }
            records.push(CacheRecord { results, chains: Vec::new(), digest: rec.digest, inputs });
        }

        let mut config = CacheConfig { layers, records };
        let problems: Vec<_> =
            validate(&config, None).into_iter().filter(|p| p.is_error()).collect();
        if !problems.is_empty() {
            return Err(BuilderError::Invalid(problems));
        }
        // Validation passed, so every index is in range and this cannot fail.
        sort_config(&mut config).map_err(BuilderError::Index)?;
        let layers =
            config.layers.iter().filter_map(|l| descriptors.get(&l.blob).cloned()).collect();
        Ok(BuiltCache { config, layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(c: char) -> Descriptor {
        let mut d = Descriptor::new(
            media::OCI_LAYER_GZIP,
            Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap(),
            1,
        );
        d.set_annotation(media::ANNOTATION_UNCOMPRESSED, format!("sha256:{}", "f".repeat(64)));
        d
    }

    #[test]
    fn matches_the_spec_worked_example_shape() {
        // FROM base + RUN: root record (no result), RUN record with chain [base, run].
        let mut b = CacheConfigBuilder::new();
        let run = b.add_record("sha256:e4d0");
        let src = b.add_record("sha256:3b5f");
        b.add_input(run, 0, src, "").unwrap();
        let t = GoTime::parse("2026-08-20T09:14:03.52107746Z").unwrap();
        b.add_result(run, vec![desc('7'), desc('0')], t).unwrap();
        // Chain is root first: '7' is the base here, '0' the RUN layer on top.
        let built = b.build().unwrap();
        let json = String::from_utf8(built.config.to_json()).unwrap();
        let (d0, d7) = (desc('0').digest, desc('7').digest);
        assert_eq!(
            json,
            format!(
                r#"{{"layers":[{{"blob":"{d0}","parent":1}},{{"blob":"{d7}","parent":-1}}],"records":[{{"digest":"sha256:3b5f"}},{{"layers":[{{"layer":0,"createdAt":"2026-08-20T09:14:03.52107746Z"}}],"digest":"sha256:e4d0","inputs":[[{{"link":0}}]]}}]}}"#
            )
        );
        assert_eq!(built.layers.iter().map(|d| &d.digest).collect::<Vec<_>>(), vec![&d0, &d7]);
        assert!(!built.is_empty());
    }

    #[test]
    fn dedupes_on_full_chain_not_blob() {
        let mut b = CacheConfigBuilder::new();
        let r1 = b.add_record("r1");
        let r2 = b.add_record("r2");
        let r3 = b.add_record("r3");
        let t = GoTime::zero();
        b.add_result(r1, vec![desc('a'), desc('b')], t).unwrap();
        b.add_result(r2, vec![desc('a'), desc('b')], t).unwrap(); // same chain: shared
        b.add_result(r3, vec![desc('c'), desc('b')], t).unwrap(); // same blob, other parent
        let built = b.build().unwrap();
        let blobs: Vec<(char, i64)> = built
            .config
            .layers
            .iter()
            .map(|l| (l.blob.hex().chars().next().unwrap(), l.parent))
            .collect();
        assert_eq!(blobs, vec![('a', -1), ('b', 0), ('b', 3), ('c', -1)]);
        assert_eq!(built.layers.len(), 4);
        assert_eq!(built.layers[1], built.layers[2]); // duplicate descriptor, as BuildKit
        let res: Vec<usize> = built.config.records.iter().map(|r| r.results[0].layer).collect();
        assert_eq!(res, vec![1, 1, 2]);
    }

    #[test]
    fn skips_empty_layers_and_converts_media_types() {
        let mut empty = desc('a');
        empty.digest = Digest::parse(EMPTY_GZ_LAYER).unwrap();
        let mut b = CacheConfigBuilder::new().media_family(MediaFamily::Docker);
        let r = b.add_record("r");
        let only_empty = b.add_record("e");
        b.add_result(r, vec![desc('b'), empty.clone(), desc('c')], GoTime::zero()).unwrap();
        b.add_result(only_empty, vec![empty], GoTime::zero()).unwrap();
        let built = b.build().unwrap();
        assert_eq!(built.config.layers.len(), 2);
        assert!(built.layers.iter().all(|d| d.media_type == media::DOCKER_LAYER_GZIP));
        assert!(built.config.records.iter().find(|r| r.digest == "e").unwrap().results.is_empty());
    }

    #[test]
    fn rejects_bad_graphs() {
        let mut b = CacheConfigBuilder::new();
        let a = b.add_record("a");
        let c = b.add_record("c");
        b.add_input(a, 0, c, "").unwrap();
        b.add_input(c, 0, a, "").unwrap();
        assert!(
            matches!(b.build(), Err(BuilderError::Invalid(p)) if p[0].message.contains("looping record"))
        );

        let mut b = CacheConfigBuilder::new();
        let a = b.add_record("a");
        let c = b.add_record("c");
        b.add_input(a, 1, c, "sel").unwrap();
        b.add_input(a, 1, c, "sel").unwrap();
        assert!(matches!(b.build(), Err(BuilderError::EmptyInput { record: 0, input: 0, .. })));

        let mut other = CacheConfigBuilder::new();
        let foreign = {
            let mut x = CacheConfigBuilder::new();
            x.add_record("1");
            x.add_record("2")
        };
        let mine = other.add_record("m");
        assert_eq!(
            other.add_input(mine, 0, foreign, ""),
            Err(BuilderError::UnknownRecord { id: 1, len: 1 })
        );
        assert!(other.add_result(foreign, vec![], GoTime::zero()).is_err());
        assert!(other.build().unwrap().is_empty());
    }
}
