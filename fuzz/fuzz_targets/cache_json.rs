//! index.json, cache manifests and cache configs come from a cache directory anyone with
//! write access can change: every parser must return an error, never panic or overflow
//! the stack, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata_oci::Index::from_slice(data);
    let _ = strata_cache::CacheManifest::parse(data);
    if let Ok(cfg) = strata_cache::CacheConfig::from_json(data) {
        // A config that parses must also validate and re-encode without panicking.
        let _ = strata_cache::validate(&cfg, None);
        let _ = cfg.to_json();
    }
});
