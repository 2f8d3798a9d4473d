//! Helpers shared by the `--cache-to` / `--cache-from type=local` end-to-end tests
//! (`cache_export.rs`, `cache_import.rs`, `cache_compat.rs`).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common;

/// A build to run: Dockerfile, context, and whether it needs the busybox base (RUN steps).
#[derive(Clone, Debug)]
pub struct Project {
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub busybox: bool,
    /// Steps in the final stage (the final chain), by their progress-line stage name.
    pub final_stage: &'static str,
    /// All build steps (RUN/COPY lines).
    pub steps: usize,
}

/// The fixture `multistage-max` project: busybox base, RUN steps, a scratch final stage.
pub fn multistage() -> Project {
    let f = common::fixtures().join("multistage-max");
    Project {
        dockerfile: f.join("Dockerfile"),
        context: f.join("context"),
        busybox: true,
        final_stage: "stage-1",
        steps: 6,
    }
}

/// A COPY-only multi-stage project on `scratch` (runs without root), written under `dir`.
pub fn scratch_project(dir: &Path) -> Project {
    common::write_files(
        dir,
        &[
            (
                "Dockerfile",
                "FROM scratch AS builder\nCOPY a.txt /out/a.txt\nCOPY b.txt /out/b.txt\n\n\
                 FROM scratch\nCOPY --from=builder /out/ /app/\nCOPY c.txt /c.txt\n",
            ),
            ("a.txt", "alpha\n"),
            ("b.txt", "bravo\n"),
            ("c.txt", "charlie\n"),
        ],
    );
    Project {
        dockerfile: dir.join("Dockerfile"),
        context: dir.to_owned(),
        busybox: false,
        final_stage: "stage-1",
        steps: 4,
    }
}

/// One `strata build` of `p` on state `state`, plain progress, metadata and a local output
/// under `work/<label>.*`; `extra` are further arguments (`--cache-to …`).
pub fn build(p: &Project, state: &Path, work: &Path, label: &str, extra: &[String]) -> Built {
    let meta = work.join(format!("{label}.meta.json"));
    let out_dir = work.join(format!("{label}.out"));
    let mut c = common::strata(state);
    c.arg("build").arg("--progress").arg("plain");
    if p.busybox {
        c.arg("--build-context").arg(common::busybox_context());
    }
    c.arg("-f").arg(&p.dockerfile);
    c.arg("--metadata-file").arg(&meta);
    c.arg("-o").arg(format!("type=local,dest={}", out_dir.display()));
    c.args(extra);
    c.arg(&p.context);
    let output = c.output().unwrap();
    let text = common::text(&output);
    let digest = std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["containerimage.digest"].as_str().map(str::to_owned));
    Built { output, text, digest, out_dir }
}

/// What one build produced.
#[derive(Debug)]
pub struct Built {
    pub output: Output,
    pub text: String,
    pub digest: Option<String>,
    pub out_dir: PathBuf,
}

impl Built {
    pub fn ok(&self) -> &Self {
        assert!(self.output.status.success(), "build failed:\n{}", self.text);
        self
    }

    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// Step names (`[stage x/y] INSTR …`) with whether each was CACHED.
    pub fn steps(&self) -> Vec<(String, bool)> {
        let mut names: Vec<(String, String)> = Vec::new();
        for line in self.text.lines() {
            let Some((id, rest)) = line.split_once(' ') else { continue };
            if !id.starts_with('#') || !rest.starts_with('[') || rest.starts_with("[internal]") {
                continue;
            }
            if rest.starts_with("[context ") {
                continue;
            }
            if !names.iter().any(|(i, _)| i == id) {
                names.push((id.to_owned(), rest.to_owned()));
            }
        }
        names
            .into_iter()
            .map(|(id, name)| {
                let cached = self.text.lines().any(|l| l.starts_with(&format!("{id} CACHED")));
                (name, cached)
            })
            .collect()
    }

    /// Names of the steps that were not served from a cache.
    pub fn executed(&self) -> Vec<String> {
        self.steps().into_iter().filter(|(_, c)| !*c).map(|(n, _)| n).collect()
    }

    pub fn tree(&self) -> Vec<String> {
        common::tree(&self.out_dir)
    }
}

pub fn cache_to(dest: &Path, opts: &str) -> String {
    let sep = if opts.is_empty() { "" } else { "," };
    format!("--cache-to=type=local,dest={}{sep}{opts}", dest.display())
}

pub fn cache_from(src: &Path, opts: &str) -> String {
    let sep = if opts.is_empty() { "" } else { "," };
    format!("--cache-from=type=local,src={}{sep}{opts}", src.display())
}

/// Runs `strata cache …` and returns (exit code, text).
pub fn cache_cmd(args: &[&str]) -> (i32, String) {
    let out = assert_cmd::Command::cargo_bin("strata").unwrap().arg("cache").args(args).output();
    let out = out.unwrap();
    (out.status.code().unwrap_or(-1), common::text(&out))
}

/// `strata cache verify DIR` must pass.
pub fn assert_verifies(dir: &Path) {
    let (code, text) = cache_cmd(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "verify {}:\n{text}", dir.display());
    assert!(text.contains("OK"), "{text}");
}

/// `strata cache inspect DIR --json [extra]`.
pub fn inspect(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = assert_cmd::Command::cargo_bin("strata")
        .unwrap()
        .arg("cache")
        .args(&args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect {}: {e}\n{}", dir.display(), common::text(&out)))
}

/// `strata cache ls DIR --all --json`.
pub fn ls_all(dir: &Path) -> Vec<Value> {
    let out = assert_cmd::Command::cargo_bin("strata")
        .unwrap()
        .args(["cache", "ls", dir.to_str().unwrap(), "--all", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ls {}: {e}\n{}", dir.display(), common::text(&out)));
    v.as_array().unwrap().clone()
}

/// The raw index.json of a cache directory.
pub fn index_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap()
}

/// The digest index.json gives `tag`.
pub fn tagged(dir: &Path, tag: &str) -> Option<String> {
    index_json(dir)["manifests"].as_array()?.iter().find_map(|m| {
        (m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .then(|| m["digest"].as_str().unwrap().to_owned())
    })
}

pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// Every blob file name in a cache directory.
pub fn blobs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

/// Overwrites a (read-only) blob.
pub fn overwrite(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}
