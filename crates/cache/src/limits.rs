//! Size limits for the JSON blobs of a cache (spec §7 step 3, §10).
//!
//! BuildKit's importer refuses a manifest or config above 1 MiB (`blob … is too large
//! (N > 1048576)`, moby/buildkit#3719, #4916). Large `mode=max` builds exceed that, and
//! upstream PR #7126 proposes 4 MiB / 16 MiB. strata reads up to 16 MiB itself, but tells
//! its user when a cache it writes or reads would be silently unusable by BuildKit.

/// Largest manifest or config strata reads into memory (16 MiB).
pub const MAX_READ_SIZE: usize = 16 << 20;

/// BuildKit's import limit for the cache manifest and the cache config (1 MiB).
pub const BUILDKIT_IMPORT_LIMIT: u64 = 1 << 20;

/// A warning when a manifest or config of `len` bytes is over BuildKit's import limit,
/// `None` when BuildKit can read it. Returned as data so the caller decides how to log.
pub fn buildkit_import_limit_exceeded(len: u64) -> Option<String> {
    (len > BUILDKIT_IMPORT_LIMIT).then(|| {
        format!(
            "{len} bytes exceeds BuildKit's {BUILDKIT_IMPORT_LIMIT}-byte import limit for cache \
             manifests and configs: buildkitd will refuse this cache (\"blob is too large\", \
             moby/buildkit#3719, #4916); strata can still read it"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_above_one_mib() {
        assert_eq!(buildkit_import_limit_exceeded(0), None);
        assert_eq!(buildkit_import_limit_exceeded(1_048_576), None);
        let w = buildkit_import_limit_exceeded(1_048_577).unwrap();
        assert!(w.contains("1048577") && w.contains("1048576") && w.contains("#3719"), "{w}");
    }
}
