//! The Dockerfile parser and stage resolution (ARG expansion, FROM, --target) on
//! arbitrary bytes: errors only, no panics, no runaway recursion or memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(df) = strata_dockerfile::parse("Dockerfile", data) {
        let _ = strata_dockerfile::resolve(&df, &strata_dockerfile::BuildOptions::default());
    }
});
