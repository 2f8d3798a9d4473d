//! What a build is asked to do: the typed form of `strata build`'s flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_cache::options::{ExportOptions, ImportOptions};

use crate::Platform;
use crate::output::Output;
use crate::progress::ProgressMode;

/// A named build context (`--build-context NAME=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory, usable as `COPY --from=NAME` and `FROM NAME`-less sources.
    Dir(PathBuf),
    /// An image in a local OCI layout: `oci-layout://DIR[:TAG|@sha256:…]`.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// `:TAG`.
        tag: Option<String>,
        /// `@sha256:…`.
        digest: Option<strata_oci::Digest>,
    },
}

impl NamedContext {
    /// Parses the value of `--build-context NAME=VALUE`.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (path, digest) = match rest.rsplit_once('@') {
                Some((p, d)) => {
                    let d = strata_oci::Digest::parse(d).map_err(|e| e.to_string())?;
                    (p, Some(d))
                }
                None => (rest, None),
            };
            // A `:TAG` suffix only counts after the last `/`, so `dir:with:colons/x` works.
            let (dir, tag) = match path.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_owned())),
                _ => (path, None),
            };
            if dir.is_empty() {
                return Err(format!("{value:?}: missing directory after oci-layout://"));
            }
            return Ok(Self::OciLayout { dir: PathBuf::from(dir), tag, digest });
        }
        for scheme in ["docker-image://", "target:", "http://", "https://", "git@", "git://"] {
            if value.starts_with(scheme) {
                return Err(format!(
                    "{value:?}: {scheme} build contexts are not supported yet (supported: a local directory or oci-layout://DIR[:TAG|@DIGEST])"
                ));
            }
        }
        Ok(Self::Dir(PathBuf::from(value)))
    }
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// `CONTEXT/Dockerfile` (or `-f` relative to the working directory).
    Path(PathBuf),
    /// Read from standard input (`-f -` or `strata build - `).
    Bytes(Vec<u8>),
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory (`None` when the context is `-`: no files).
    pub context: Option<PathBuf>,
    /// The Dockerfile.
    pub dockerfile: DockerfileSource,
    /// Display name of the Dockerfile (for messages).
    pub dockerfile_name: String,
    /// `-t`.
    pub tags: Vec<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--build-context`.
    pub build_contexts: BTreeMap<String, NamedContext>,
    /// `-o`.
    pub outputs: Vec<Output>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--cache-to`.
    pub cache_to: Vec<ExportOptions>,
    /// `--cache-from`.
    pub cache_from: Vec<ImportOptions>,
    /// `--secret id=…,src=…`.
    pub secrets: BTreeMap<String, PathBuf>,
    /// `--oci-runtime`.
    pub oci_runtime: Option<PathBuf>,
    /// `$STRATA_ROOT`.
    pub state_root: PathBuf,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// The platform built for (the host).
    pub platform: Platform,
    /// `--progress`.
    pub progress: ProgressMode,
    /// `--metadata-file`.
    pub metadata_file: Option<PathBuf>,
    /// `--pull`: re-resolve registry tags instead of using the digests remembered in the
    /// state directory.
    pub pull: bool,
}
