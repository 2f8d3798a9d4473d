//! `strata cache ls|inspect|verify registry://HOST/REPO[:TAG|@DIGEST]`: the cache version a
//! registry holds is mirrored into a private temporary OCI layout (manifest, config and,
//! for `verify`, every layer blob, each checked against its digest on download), and the
//! same read-only code that reads local caches reads it. Nothing is written to the registry.

use std::path::Path;

use anyhow::{Context, Result, bail};
use strata_cache::CacheManifest;
use strata_oci::{Descriptor, Layout};
use strata_registry::{ImageRef, Registry};

/// The `registry://` prefix that selects a registry instead of a directory.
pub(crate) const SCHEME: &str = "registry://";

/// A registry cache mirrored into a temp layout (removed on drop).
pub(crate) struct Mirror {
    /// The layout to read.
    pub(crate) layout: Layout,
    /// Download problems (a blob the registry lacks or serves corrupt): reported by the
    /// caller; the blob is then missing from the layout, which `verify` reports.
    pub(crate) problems: Vec<String>,
    /// The manifest digest the reference resolved to.
    pub(crate) digest: strata_oci::Digest,
    _dir: tempfile::TempDir,
}

/// The reference in `arg` when it names a registry.
pub(crate) fn reference(arg: &Path) -> Option<&str> {
    arg.to_str().and_then(|s| s.strip_prefix(SCHEME))
}

/// Mirrors the cache version `reference` names; with `layers`, its layer blobs too.
pub(crate) fn mirror(reference: &str, layers: bool) -> Result<Mirror> {
    let mut r = ImageRef::parse(reference).with_context(|| format!("{SCHEME}{reference}"))?;
    if r.tag().is_none() && r.digest().is_none() {
        r = r.with_tag("latest");
    }
    let registry = Registry::new()?;
    let manifest = registry.get_manifest(&r)?;
    let dir = tempfile::Builder::new().prefix("strata-registry-cache-").tempdir()?;
    let layout = Layout::create(dir.path())?;
    layout.write_blob(&manifest.bytes)?;
    let parsed = CacheManifest::parse(&manifest.bytes).with_context(|| {
        format!("{SCHEME}{reference}: {} is not a cache manifest", manifest.digest)
    })?;
    let cfg = registry.get_blob_bytes(&r, &parsed.config.digest, strata_registry::JSON_LIMIT)?;
    layout.write_blob(&cfg)?;
    let mut problems = Vec::new();
    if layers {
        let mut seen = std::collections::HashSet::new();
        for l in parsed.layers.iter().filter(|l| seen.insert(l.digest.clone())) {
            let tmp = dir.path().join(format!("dl-{}", l.digest.hex()));
            match registry.download_blob(&r, &l.digest, &tmp) {
                Ok(_) => {
                    layout.link_or_copy_blob(&tmp, &l.digest, l.size)?;
                }
                Err(e) => problems.push(format!("layer {}: {e}", l.digest)),
            }
            let _ = std::fs::remove_file(&tmp);
        }
    }
    let tag = r.tag().unwrap_or("latest").to_owned();
    let desc = Descriptor::new(
        manifest.media_type.clone(),
        manifest.digest.clone(),
        manifest.bytes.len() as u64,
    );
    if desc.media_type.is_empty() {
        bail!("{SCHEME}{reference}: the registry gave no media type for {}", manifest.digest);
    }
    layout.put_tag(desc, &tag, strata_oci::default_lock_timeout())?;
    Ok(Mirror { layout, problems, digest: manifest.digest, _dir: dir })
}
