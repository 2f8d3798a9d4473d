//! Helpers shared by the `build_*` end-to-end tests: a temp context + state dir per test,
//! and readers for the OCI layouts and caches the builds write.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common;

/// One test's scratch space: `ctx/` (the build context), `state/` (STRATA_ROOT), and
/// room for outputs.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub ctx: PathBuf,
    pub state: PathBuf,
}

impl Env {
    /// A context holding `Dockerfile` and `files`.
    pub fn new(dockerfile: &str, files: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        common::write_files(&ctx, files);
        let state = tmp.path().join("state");
        Self { tmp, ctx, state }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// `strata build --progress plain ARGS… CTX`.
    pub fn build(&self, args: &[&str]) -> Output {
        let mut c = common::strata(&self.state);
        c.arg("build").arg("--progress").arg("plain").args(args).arg(&self.ctx);
        c.output().unwrap()
    }

    /// Builds with `ARGS` plus `-o type=local,dest=OUT/fs -o type=oci,dest=OUT/oci,tar=false
    /// --metadata-file OUT/md.json` and asserts success.
    pub fn build_ok(&self, out: &str, args: &[&str]) -> Built {
        let o = self.build_into(out, args);
        assert!(o.status.success(), "build failed:\n{}", common::text(&o));
        Built { dir: self.path(out), log: common::text(&o) }
    }

    pub fn build_into(&self, out: &str, args: &[&str]) -> Output {
        let dir = self.path(out);
        let fs = format!("type=local,dest={}", dir.join("fs").display());
        let oci = format!("type=oci,dest={},tar=false", dir.join("oci").display());
        let md = dir.join("md.json").display().to_string();
        let mut all: Vec<&str> = vec!["-o", &fs, "-o", &oci, "--metadata-file", &md];
        all.extend_from_slice(args);
        self.build(&all)
    }
}

/// What a successful [`Env::build_ok`] left behind.
pub struct Built {
    pub dir: PathBuf,
    pub log: String,
}

impl Built {
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
    pub fn oci(&self) -> PathBuf {
        self.dir.join("oci")
    }
    /// `common::tree` of the local output.
    pub fn tree(&self) -> Vec<String> {
        common::tree(&self.fs())
    }
    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.fs().join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}\n{}", self.log))
    }
    pub fn exists(&self, p: &str) -> bool {
        std::fs::symlink_metadata(self.fs().join(p)).is_ok()
    }
    /// The image config JSON (index.json → manifest → config).
    pub fn config(&self) -> Value {
        oci_config(&self.oci())
    }
    pub fn manifest(&self) -> Value {
        oci_manifest(&self.oci())
    }
    /// `containerimage.digest` from the metadata file.
    pub fn digest(&self) -> String {
        let md: Value = read_json(&self.dir.join("md.json"));
        md["containerimage.digest"].as_str().unwrap().to_owned()
    }
}

pub fn read_json(p: &Path) -> Value {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

pub fn blob_json(layout: &Path, digest: &str) -> Value {
    read_json(&blob_path(layout, digest))
}

/// The single manifest index.json names.
pub fn oci_manifest(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    let ms = index["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "one image expected in {}: {index}", layout.display());
    blob_json(layout, ms[0]["digest"].as_str().unwrap())
}

pub fn oci_config(layout: &Path) -> Value {
    let m = oci_manifest(layout);
    blob_json(layout, m["config"]["digest"].as_str().unwrap())
}

/// Uncompressed tar bytes of every layer of the image in `layout`.
pub fn oci_layer_tars(layout: &Path) -> Vec<Vec<u8>> {
    let m = oci_manifest(layout);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| uncompressed(&blob_path(layout, l["digest"].as_str().unwrap())))
        .collect()
}

pub fn uncompressed(blob: &Path) -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(blob).unwrap();
    let mut r = strata_layer::open_layer_reader(f, None).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

/// Applies `blobs` (layer blobs in `layout`, bottom first) into the new directory `dest`.
pub fn apply_blobs(layout: &Path, blobs: &[String], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for b in blobs {
        let f = std::fs::File::open(blob_path(layout, b)).unwrap();
        let r = strata_layer::open_layer_reader(f, None).unwrap();
        strata_layer::apply_layer(r, dest, &strata_layer::ApplyOptions::default()).unwrap();
    }
}

/// The layer blobs (bottom first) of the final result in the BuildKit cache manifest
/// `manifest_digest` of `cache`: the one record with layers that no other record links to,
/// its layer, then the layer's parents.
pub fn cache_final_chain(cache: &Path, manifest_digest: &str) -> Vec<String> {
    let m = blob_json(cache, manifest_digest);
    let descs = m["manifests"].as_array().unwrap();
    let cfg_desc =
        descs.iter().find(|d| d["mediaType"] == "application/vnd.buildkit.cacheconfig.v0").unwrap();
    let cfg = blob_json(cache, cfg_desc["digest"].as_str().unwrap());
    let records = cfg["records"].as_array().unwrap();
    let layers = cfg["layers"].as_array().unwrap();
    let mut linked = std::collections::HashSet::new();
    for r in records {
        for slot in r["inputs"].as_array().into_iter().flatten() {
            for alt in slot.as_array().unwrap() {
                linked.insert(alt["link"].as_u64().unwrap() as usize);
            }
        }
    }
    let finals: Vec<&Value> = records
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            !linked.contains(i) && r["layers"].as_array().is_some_and(|l| !l.is_empty())
        })
        .map(|(_, r)| r)
        .collect();
    assert_eq!(finals.len(), 1, "one final record expected: {cfg}");
    let mut idx = finals[0]["layers"][0]["layer"].as_i64().unwrap();
    let mut chain = Vec::new();
    while idx >= 0 {
        let l = &layers[idx as usize];
        chain.push(l["blob"].as_str().unwrap().to_owned());
        // `parent` is omitted when it is 0 (Go omitempty); -1 means none.
        idx = l.get("parent").and_then(Value::as_i64).unwrap_or(0);
        assert!(chain.len() <= layers.len(), "parent loop in {cfg}");
    }
    chain.reverse();
    chain
}

/// The digest index.json of `layout` tags `latest`.
pub fn index_latest(layout: &Path) -> String {
    let index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// Whether `bin` is on PATH.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Number of `CACHED` step lines in a plain progress log.
pub fn cached_steps(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for l in &lines {
        if let Some(rest) = l.strip_prefix('#')
            && rest.ends_with(" CACHED")
        {
            let n = rest.split_whitespace().next().unwrap();
            if let Some(title) = lines
                .iter()
                .find_map(|t| t.strip_prefix(&format!("#{n} ")).filter(|t| t.starts_with('[')))
            {
                out.push(title.to_owned());
            }
        }
    }
    out
}

/// Titles of the steps that ran (`#N DONE` without a `CACHED`), from a plain log.
pub fn executed_steps(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for l in &lines {
        let Some(rest) = l.strip_prefix('#') else { continue };
        let Some((n, title)) = rest.split_once(' ') else { continue };
        if !title.starts_with("[stage") && !title.starts_with('[')
            || title.starts_with("[internal]")
        {
            continue;
        }
        if title.starts_with("[context") {
            continue;
        }
        if lines.iter().any(|t| *t == format!("#{n} CACHED")) {
            continue;
        }
        if !out.iter().any(|o: &String| o == title) {
            out.push(title.to_owned());
        }
    }
    out
}
