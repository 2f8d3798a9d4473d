//! The process's registry client, shared by FROM pulls, pushes and registry caches, plus
//! where each pulled blob came from (so a push to another repository of the same registry
//! can mount it instead of uploading it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use strata_oci::Digest;
use strata_registry::{ImageRef, Registry};

use crate::error::BuildError;

static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
static SOURCES: OnceLock<Mutex<HashMap<Digest, ImageRef>>> = OnceLock::new();

/// The registry client (settings are read on first use: a build without registries never
/// reads Docker's config).
pub(crate) fn registry() -> Result<Arc<Registry>, BuildError> {
    if let Some(r) = REGISTRY.get() {
        return Ok(r.clone());
    }
    let r = Arc::new(Registry::new()?);
    Ok(REGISTRY.get_or_init(|| r).clone())
}

/// Remembers that blob `digest` is in `image`'s repository.
pub(crate) fn note_blob(image: &ImageRef, digest: &Digest) {
    let m = SOURCES.get_or_init(Default::default);
    m.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.clone(), image.clone());
}

/// A repository known to hold blob `digest`, if any.
pub(crate) fn source_of(digest: &Digest) -> Option<ImageRef> {
    let m = SOURCES.get()?;
    m.lock().unwrap_or_else(|p| p.into_inner()).get(digest).cloned()
}
