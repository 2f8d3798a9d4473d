//! The compatibility test: every cache BuildKit wrote in `shared/fixtures/buildkit` must
//! parse, and re-encode to the exact bytes on disk (manifest and config), already be in
//! canonical order, and validate without errors.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_cache::{
    CacheConfig, CacheConfigBuilder, CacheManifest, Compression, ManifestForm, compression_of,
    layer_chain, sort_config, validate,
};
use strata_oci::Digest;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit");

/// The `cache/` directories under test, with the form their manifest has.
const CASES: &[(&str, ManifestForm)] = &[
    ("scratch-copy-min", ManifestForm::OciIndex),
    ("multistage-max", ManifestForm::OciIndex),
    ("zstd", ManifestForm::OciIndex),
    ("docker-mediatypes", ManifestForm::DockerManifestList),
    ("image-manifest/v0.11.6-ignored", ManifestForm::OciIndex),
    ("image-manifest/v0.12.5", ManifestForm::OciManifest),
    ("two-versions", ManifestForm::OciIndex),
];

/// The first export of `two-versions`, no longer in index.json (from its notes.txt).
const TWO_VERSIONS_FIRST: &str =
    "sha256:e7bdda28cefe9360622aa5e6311a1d803c3b04e4f5bb9b218474a0db17a650d1";

#[derive(Deserialize)]
struct Index {
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

fn cache_dir(case: &str) -> PathBuf {
    Path::new(FIXTURES).join(case).join("cache")
}

fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    let d = Digest::parse(digest).unwrap();
    let path = dir.join("blobs/sha256").join(d.hex());
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The fixtures are byte-exact; a checkout that rewrote newlines would break digests.
    assert_eq!(Digest::of_bytes(&bytes), d, "{} is not its digest", path.display());
    bytes
}

/// Every manifest digest to test in one case: index.json's entries, plus the older
/// export for two-versions.
fn manifest_digests(case: &str) -> Vec<(String, Option<(String, u64)>)> {
    let dir = cache_dir(case);
    let index: Index = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut out: Vec<_> =
        index.manifests.into_iter().map(|e| (e.digest, Some((e.media_type, e.size)))).collect();
    if case == "two-versions" {
        let notes = fs::read_to_string(Path::new(FIXTURES).join(case).join("notes.txt")).unwrap();
        assert!(notes.contains(TWO_VERSIONS_FIRST), "notes.txt no longer names the first export");
        out.push((TWO_VERSIONS_FIRST.to_owned(), None));
    }
    out
}

struct Loaded {
    case: &'static str,
    manifest: CacheManifest,
    config: CacheConfig,
}

/// Parses and byte-compares every manifest and config of every case.
fn load_all() -> Vec<Loaded> {
    let mut all = Vec::new();
    for &(case, form) in CASES {
        let dir = cache_dir(case);
        for (digest, entry) in manifest_digests(case) {
            let bytes = blob(&dir, &digest);
            let manifest = CacheManifest::parse(&bytes)
                .unwrap_or_else(|e| panic!("{case}: manifest {digest}: {e}"));
            assert_eq!(manifest.form, form, "{case}: form of {digest}");
            if let Some((media_type, size)) = entry {
                assert_eq!(media_type, form.media_type(), "{case}: index.json media type");
                assert_eq!(size, bytes.len() as u64, "{case}: index.json size");
            }
            assert_eq!(
                String::from_utf8(manifest.encode()).unwrap(),
                String::from_utf8(bytes.clone()).unwrap(),
                "{case}: manifest {digest} does not re-encode byte for byte"
            );

            let config_bytes = blob(&dir, manifest.config.digest.as_str());
            assert_eq!(manifest.config.size, config_bytes.len() as u64, "{case}: config size");
            let config = CacheConfig::from_json(&config_bytes)
                .unwrap_or_else(|e| panic!("{case}: config {}: {e}", manifest.config.digest));
            assert_eq!(
                String::from_utf8(config.to_json()).unwrap(),
                String::from_utf8(config_bytes).unwrap(),
                "{case}: config {} does not re-encode byte for byte",
                manifest.config.digest
            );
            assert_eq!(
                CacheConfig::descriptor_for(&config.to_json()),
                manifest.config,
                "{case}: config descriptor"
            );
            all.push(Loaded { case, manifest, config });
        }
    }
    all
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let all = load_all();
    // 7 cases, two-versions has two manifests.
    assert_eq!(all.len(), 8);
}

#[test]
fn fixture_counts_match_the_readme() {
    let all = load_all();
    let counts: BTreeMap<&str, (usize, usize)> =
        all.iter().map(|l| (l.case, (l.config.records.len(), l.config.layers.len()))).collect();
    assert_eq!(counts["scratch-copy-min"], (4, 2));
    assert_eq!(counts["multistage-max"], (11, 7));

    let scratch = all.iter().find(|l| l.case == "scratch-copy-min").unwrap();
    // "Two of the records have layers; the other two have only a digest and no inputs."
    let with_results = scratch.config.records.iter().filter(|r| !r.results.is_empty()).count();
    let roots = scratch
        .config
        .records
        .iter()
        .filter(|r| r.results.is_empty() && r.inputs.is_empty())
        .count();
    assert_eq!((with_results, roots), (2, 2));

    let multi = all.iter().find(|l| l.case == "multistage-max").unwrap();
    // One input slot with two alternatives, and one input carrying a selector.
    assert!(multi.config.records.iter().any(|r| r.inputs.iter().any(|g| g.len() == 2)));
    assert!(multi.config.records.iter().flatten_inputs().any(|i| !i.selector.is_empty()));
}

trait FlattenInputs<'a> {
    fn flatten_inputs(self) -> impl Iterator<Item = &'a strata_cache::CacheInput>;
}
impl<'a, I: Iterator<Item = &'a strata_cache::CacheRecord>> FlattenInputs<'a> for I {
    fn flatten_inputs(self) -> impl Iterator<Item = &'a strata_cache::CacheInput> {
        self.flat_map(|r| r.inputs.iter().flatten())
    }
}

#[test]
fn fixture_configs_are_already_canonical() {
    for l in load_all() {
        let mut sorted = l.config.clone();
        sort_config(&mut sorted).unwrap();
        assert_eq!(sorted, l.config, "{}: sort_config changed a BuildKit config", l.case);
    }
}

#[test]
fn fixtures_validate_without_errors() {
    for l in load_all() {
        let problems = validate(&l.config, Some(&l.manifest.layers));
        assert!(problems.is_empty(), "{}: {problems:#?}", l.case);
        // In the index forms the manifest lists layers in config order.
        if l.manifest.form.is_index() {
            let blobs: Vec<_> = l.config.layers.iter().map(|x| &x.blob).collect();
            let descs: Vec<_> = l.manifest.layers.iter().map(|d| &d.digest).collect();
            assert_eq!(blobs, descs, "{}: manifest order", l.case);
        }
        // Every result's chain resolves.
        for r in &l.config.records {
            for res in &r.results {
                layer_chain(&l.config, res.layer).unwrap();
            }
        }
    }
}

#[test]
fn fixture_compressions() {
    for l in load_all() {
        let kinds: Vec<_> = l.manifest.layers.iter().map(|d| compression_of(d).unwrap()).collect();
        let zstd = kinds.iter().filter(|&&k| k == Compression::Zstd).count();
        if l.case == "zstd" {
            // The base layer stays gzip; the built layers are zstd.
            assert_eq!(kinds.len() - zstd, 1, "{kinds:?}");
        } else {
            assert_eq!(zstd, 0, "{}: {kinds:?}", l.case);
        }
    }
}

/// Reorders layers and records by a fixed non-trivial permutation (reversal plus a
/// rotation), rewriting every index so the graph means the same.
fn shuffle(c: &CacheConfig) -> CacheConfig {
    fn perm(n: usize) -> Vec<usize> {
        // new position -> old index
        let mut p: Vec<usize> = (0..n).rev().collect();
        if n > 2 {
            p.rotate_left(n / 2);
        }
        p
    }
    fn inv(p: &[usize]) -> Vec<usize> {
        let mut v = vec![0; p.len()];
        for (new, &old) in p.iter().enumerate() {
            v[old] = new;
        }
        v
    }
    let (lp, rp) = (perm(c.layers.len()), perm(c.records.len()));
    let (ln, rn) = (inv(&lp), inv(&rp));
    let layers = lp
        .iter()
        .map(|&old| {
            let mut l = c.layers[old].clone();
            if l.parent >= 0 {
                l.parent = ln[l.parent as usize] as i64;
            }
            l
        })
        .collect();
    let records = rp
        .iter()
        .map(|&old| {
            let mut r = c.records[old].clone();
            r.results.iter_mut().for_each(|x| x.layer = ln[x.layer]);
            for g in &mut r.inputs {
                g.iter_mut().for_each(|i| i.link = rn[i.link]);
                g.reverse();
            }
            r
        })
        .collect();
    CacheConfig { layers, records }
}

#[test]
fn sort_config_recovers_each_fixture_from_a_shuffle() {
    for l in load_all() {
        let mut shuffled = shuffle(&l.config);
        assert_ne!(shuffled, l.config, "{}: shuffle was a no-op", l.case);
        sort_config(&mut shuffled).unwrap();
        // No fixture has two layers with the same blob or two records with equal sort
        // keys, so the canonical order is unique and must come back exactly.
        assert_eq!(shuffled, l.config, "{}", l.case);
        assert_eq!(shuffled.to_json(), l.config.to_json());
    }
}

#[test]
fn builder_reconstructs_each_fixture_config_and_manifest() {
    for l in load_all() {
        let descs: BTreeMap<&Digest, &strata_oci::Descriptor> =
            l.manifest.layers.iter().map(|d| (&d.digest, d)).collect();
        let mut b = CacheConfigBuilder::new();
        let ids: Vec<_> = l.config.records.iter().map(|r| b.add_record(r.digest.clone())).collect();
        for (ri, r) in l.config.records.iter().enumerate() {
            for (k, group) in r.inputs.iter().enumerate() {
                for inp in group {
                    b.add_input(ids[ri], k, ids[inp.link], inp.selector.clone()).unwrap();
                }
            }
            for res in &r.results {
                let chain = layer_chain(&l.config, res.layer)
                    .unwrap()
                    .into_iter()
                    .map(|i| (*descs[&l.config.layers[i].blob]).clone())
                    .collect();
                b.add_result(ids[ri], chain, res.created_at).unwrap();
            }
        }
        let built = b.build().unwrap();
        assert_eq!(built.config.to_json(), l.config.to_json(), "{}: config", l.case);
        let rebuilt = CacheManifest {
            form: l.manifest.form,
            layers: built.layers,
            config: CacheConfig::descriptor_for(&built.config.to_json()),
        };
        assert_eq!(rebuilt, l.manifest, "{}: manifest", l.case);
    }
}
