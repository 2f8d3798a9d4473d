//! `--cache-to` / `--cache-from` values are CSV as in buildx; a crafted value must give a
//! usage error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = strata_cache::options::parse_export(s);
        let _ = strata_cache::options::parse_import(s);
    }
});
