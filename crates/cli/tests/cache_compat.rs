//! Structural compatibility of strata's `--cache-to type=local` output with BuildKit's
//! importer (spec §1, §3–§4), for every combination of the seed's parameters, checked on
//! the raw bytes; the same checks pass on the BuildKit fixtures. Also: BuildKit's own
//! caches import without a warning (their keys are BuildKit's, so they give no hits).

mod cache_support;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cache_support::*;
use serde_json::Value;

const CONFIG_MT: &str = "application/vnd.buildkit.cacheconfig.v0";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The keys of every JSON object in `raw` that has a "mediaType" key, in their raw order,
/// with each annotations object's keys in raw order.
fn raw_descriptors(raw: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(i) = rest.find("{\"mediaType\":") {
        let obj = &rest[i..];
        let end = matching_brace(obj);
        let body = &obj[1..end];
        let (keys, ann) = top_keys(body);
        out.push((keys, ann));
        rest = &obj[1..];
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let (mut depth, mut in_str, mut esc) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced JSON: {s}")
}

/// Top-level keys of an object body (without braces), and the keys of its
/// "annotations" object.
fn top_keys(body: &str) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut ann = Vec::new();
    let mut i = 0;
    let b = body.as_bytes();
    while i < b.len() {
        assert_eq!(b[i], b'"', "key expected at {i} in {body}");
        let kend = i + 1 + body[i + 1..].find('"').unwrap();
        let key = &body[i + 1..kend];
        keys.push(key.to_owned());
        i = kend + 2; // past `":`
        let vstart = i;
        let vend = match b[i] {
            b'{' => i + matching_brace(&body[i..]) + 1,
            b'[' => i + body[i..].find(']').unwrap() + 1,
            b'"' => i + 1 + body[i + 1..].find('"').unwrap() + 1,
            _ => body[i..].find(',').map_or(b.len(), |j| i + j),
        };
        if key == "annotations" {
            ann = top_keys(&body[vstart + 1..vend - 1]).0;
        }
        i = vend;
        if i < b.len() {
            assert_eq!(b[i], b',', "comma expected in {body}");
            i += 1;
        }
    }
    (keys, ann)
}

/// Checks a cache version against BuildKit's importer and writer rules; `strata` adds the
/// rules BuildKit v0.11 did not follow yet (oci-layout) and strata's own guarantees.
fn check_version(dir: &Path, tag: &str, want_top: &str, want_layer: &[&str], strata: bool) {
    let idx_raw = std::fs::read_to_string(dir.join("index.json")).unwrap();
    let idx: Value = serde_json::from_str(&idx_raw).unwrap();
    assert_eq!(idx["schemaVersion"], 2);
    let entry = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {idx_raw}"));
    assert_eq!(entry["mediaType"], want_top, "index.json entry media type");
    let mdigest = entry["digest"].as_str().unwrap();
    let raw = std::fs::read(blob_path(dir, mdigest)).unwrap();
    assert_eq!(entry["size"], raw.len() as u64);
    assert_eq!(strata_oci::Digest::of_bytes(&raw).to_string(), mdigest);
    let text = String::from_utf8(raw.clone()).unwrap();
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], want_top, "top-level media type");

    // Shape, and top-level key order.
    let (top, _) = top_keys(&text[1..text.len() - 1]);
    let (config, layers): (Value, Vec<Value>) = if want_top == OCI_MANIFEST {
        assert_eq!(top, ["schemaVersion", "mediaType", "config", "layers"], "{text}");
        (m["config"].clone(), m["layers"].as_array().unwrap().clone())
    } else {
        assert_eq!(top, ["schemaVersion", "mediaType", "manifests"], "{text}");
        let all = m["manifests"].as_array().unwrap();
        let (last, rest) = all.split_last().unwrap();
        assert!(rest.iter().all(|d| d["mediaType"] != CONFIG_MT), "config must be last");
        (last.clone(), rest.to_vec())
    };
    assert_eq!(config["mediaType"], CONFIG_MT);
    assert!(config.get("annotations").is_none(), "no annotations on the config: {config}");
    // Descriptor field order in the raw bytes.
    let descs = raw_descriptors(&text);
    assert_eq!(descs.len(), layers.len() + 1, "{text}");
    for (keys, ann) in descs {
        let want: &[&str] = if keys.len() == 4 {
            &["mediaType", "digest", "size", "annotations"]
        } else {
            &["mediaType", "digest", "size"]
        };
        assert_eq!(keys, want, "{text}");
        let mut sorted = ann.clone();
        sorted.sort();
        assert_eq!(ann, sorted, "annotation keys in Go's sorted order");
    }
    // Every blob is there with its size and digest; blobs are read-only.
    for d in layers.iter().chain([&config]) {
        let digest = d["digest"].as_str().unwrap();
        let bytes = std::fs::read(blob_path(dir, digest)).unwrap();
        assert_eq!(d["size"], bytes.len() as u64, "{digest}");
        assert_eq!(strata_oci::Digest::of_bytes(&bytes).to_string(), digest);
        if strata {
            let mode = std::fs::metadata(blob_path(dir, digest)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444, "{digest}");
        }
    }
    // Layers: media type family and compression, the annotations the importer needs.
    for l in &layers {
        let mt = l["mediaType"].as_str().unwrap();
        assert!(want_layer.contains(&mt), "layer type {mt}, want one of {want_layer:?}");
        let ann = &l["annotations"];
        assert!(ann["buildkit/createdat"].is_string(), "{l}");
        let diff = ann["containerd.io/uncompressed"].as_str().expect("containerd.io/uncompressed");
        // BuildKit checks the unpacked stream against this annotation.
        let f = std::fs::File::open(blob_path(dir, l["digest"].as_str().unwrap())).unwrap();
        let (got, _) = strata_layer::diff_id_of(f).unwrap();
        assert_eq!(got.to_string(), diff, "uncompressed annotation of {l}");
        let estargz = ann.get("containerd.io/snapshot/stargz/toc.digest").is_some();
        assert_eq!(estargz, ann.get("io.containers.estargz.uncompressed-size").is_some(), "{l}");
        if estargz {
            assert!(mt.ends_with("gzip"), "eStargz uses the gzip type: {mt}");
        }
    }
    // Cache config: canonical order (sorting is a no-op), byte-exact re-encoding,
    // `parent` never written as 0, index-form layers in config order.
    let cfg_bytes = std::fs::read(blob_path(dir, config["digest"].as_str().unwrap())).unwrap();
    let cfg_text = String::from_utf8(cfg_bytes.clone()).unwrap();
    assert!(!cfg_text.contains("\"parent\":0"), "{cfg_text}");
    let cfg = strata_cache::CacheConfig::from_json(&cfg_bytes).unwrap();
    if !cfg.layers.is_empty() {
        assert!(cfg_text.contains("\"parent\":-1"), "{cfg_text}");
    }
    if strata {
        let mut sorted = cfg.clone();
        strata_cache::sort_config(&mut sorted).unwrap();
        assert_eq!(sorted, cfg, "layers by (blob, parent), records by digest");
        assert_eq!(cfg.to_json(), cfg_bytes, "Go-compatible encoding round-trips");
    }
    let blobs_in_order: Vec<String> = layers.iter().map(|l| l["digest"].to_string()).collect();
    let cfg_order: Vec<String> = cfg.layers.iter().map(|l| format!("\"{}\"", l.blob)).collect();
    assert_eq!(blobs_in_order, cfg_order, "manifest layers follow the config's layers");
}

fn layer_types(oci: bool, compression: &str) -> Vec<&'static str> {
    match (oci, compression) {
        (true, "gzip" | "estargz") => vec!["application/vnd.oci.image.layer.v1.tar+gzip"],
        (true, "zstd") => vec!["application/vnd.oci.image.layer.v1.tar+zstd"],
        (true, _) => vec!["application/vnd.oci.image.layer.v1.tar"],
        (false, "gzip" | "estargz") => vec!["application/vnd.docker.image.rootfs.diff.tar.gzip"],
        (false, "zstd") => vec!["application/vnd.docker.image.rootfs.diff.tar.zstd"],
        (false, _) => vec!["application/vnd.docker.image.rootfs.diff.tar"],
    }
}

#[test]
fn every_combination_is_what_buildkit_imports() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let mut n = 0;
    for mode in ["min", "max"] {
        for (oci, im) in [(true, false), (false, false), (true, true)] {
            for comp in ["gzip", "zstd", "uncompressed", "estargz"] {
                if mode == "min" && comp != "gzip" {
                    continue;
                }
                n += 1;
                let dir = t.path().join(format!("c{n}"));
                let opts = format!(
                    "mode={mode},oci-mediatypes={oci},image-manifest={im},compression={comp}"
                );
                build(&p, &t.path().join(format!("s{n}")), t.path(), "a", &[cache_to(&dir, &opts)])
                    .ok();
                let top = match (oci, im) {
                    (_, true) => OCI_MANIFEST,
                    (true, false) => OCI_INDEX,
                    (false, false) => DOCKER_LIST,
                };
                check_version(&dir, "latest", top, &layer_types(oci, comp), true);
                assert_eq!(
                    std::fs::read(dir.join("oci-layout")).unwrap(),
                    br#"{"imageLayoutVersion":"1.0.0"}"#
                );
                let idx = index_json(&dir);
                assert_eq!(idx["mediaType"], OCI_INDEX, "index.json's own media type");
            }
        }
    }
}

#[test]
fn base_layers_keep_their_blob_unless_force_compression() {
    if !common::can_run("base_layers_keep_their_blob_unless_force_compression") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = multistage();
    let base_gz = "sha256:4c5a1549bbd1b5afec295bd195d5cee68c6853d1dd48f5d6a737cb955f852ed5";
    for (n, (opts, top, kept)) in [
        ("mode=max,compression=zstd", OCI_INDEX, true),
        ("mode=max,compression=zstd,force-compression=true", OCI_INDEX, false),
        ("mode=max,oci-mediatypes=false,compression=uncompressed", DOCKER_LIST, true),
        (
            "mode=max,image-manifest=true,compression=estargz,force-compression=true",
            OCI_MANIFEST,
            false,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = t.path().join(format!("c{n}"));
        build(&p, &t.path().join(format!("s{n}")), t.path(), "a", &[cache_to(&dir, opts)]).ok();
        let oci = !opts.contains("oci-mediatypes=false");
        let comp =
            ["zstd", "uncompressed", "estargz"].into_iter().find(|c| opts.contains(c)).unwrap();
        let mut types = layer_types(oci, comp);
        if kept {
            // The busybox layer stays gzip, in the export's media-type family.
            types.extend(layer_types(oci, "gzip"));
        }
        check_version(&dir, "latest", top, &types, true);
        assert_eq!(blob_path(&dir, base_gz).exists(), kept, "{opts}");
    }
}

#[test]
fn tags_coexist_and_survive_later_exports() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dir = t.path().join("cache");
    let state = t.path().join("A");
    build(&p, &state, t.path(), "a", &[cache_to(&dir, "mode=max,tag=v1")]).ok();
    common::write_files(&p.context, &[("c.txt", "two\n")]);
    build(&p, &state, t.path(), "b", &[cache_to(&dir, "mode=max")]).ok();
    common::write_files(&p.context, &[("c.txt", "three\n")]);
    build(&p, &state, t.path(), "c", &[cache_to(&dir, "mode=max,oci-mediatypes=false")]).ok();
    let idx = index_json(&dir);
    let tags: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["v1", "latest"], "latest replaced in place of the old entry, v1 kept");
    check_version(&dir, "v1", OCI_INDEX, &layer_types(true, "gzip"), true);
    check_version(&dir, "latest", DOCKER_LIST, &layer_types(false, "gzip"), true);
    assert_verifies(&dir);
}

fn fixture_caches() -> Vec<(String, std::path::PathBuf)> {
    let f = common::fixtures();
    ["multistage-max", "scratch-copy-min", "docker-mediatypes", "zstd", "two-versions"]
        .iter()
        .map(|c| (c.to_string(), f.join(c).join("cache")))
        .chain([("image-manifest".into(), f.join("image-manifest/v0.12.5/cache"))])
        .collect()
}

#[test]
fn the_checks_hold_for_buildkit_fixtures() {
    for (name, dir) in fixture_caches() {
        let idx = index_json(&dir);
        let top = idx["manifests"][0]["mediaType"].as_str().unwrap().to_owned();
        let all_types: Vec<&str> = [true, false]
            .into_iter()
            .flat_map(|o| ["gzip", "zstd", "uncompressed"].map(|c| layer_types(o, c)[0]))
            .collect();
        assert!(idx["manifests"].as_array().unwrap().len() <= 2, "{name}");
        check_version(&dir, "latest", &top, &all_types, false);
    }
}

#[test]
fn buildkit_fixture_caches_import_without_warnings() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    for (name, dir) in fixture_caches() {
        let copy = t.path().join(&name);
        common::copy_tree(&dir, &copy);
        let b = build(
            &p,
            &t.path().join(format!("s-{name}")),
            t.path(),
            &name,
            &[cache_from(&copy, "")],
        );
        b.ok();
        assert!(!b.text.contains("WARNING"), "{name}:\n{}", b.text);
        assert!(b.text.contains(&format!("importing cache manifest from {}", copy.display())));
        assert!(!b.text.contains("ERROR"), "{name}:\n{}", b.text);
        // BuildKit's keys are not strata's: no hits, and the build is right.
        assert_eq!(b.executed().len(), p.steps, "{name}:\n{}", b.text);
    }
    if !common::can_run("buildkit_fixture_caches_import_without_warnings (multistage)") {
        return;
    }
    let copy = t.path().join("ms");
    common::copy_tree(&common::fixtures().join("multistage-max/cache"), &copy);
    let b = build(&multistage(), &t.path().join("s-ms"), t.path(), "ms", &[cache_from(&copy, "")]);
    b.ok();
    assert!(!b.text.contains("WARNING") && !b.text.contains("ERROR"), "{}", b.text);
}
