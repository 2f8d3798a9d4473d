//! Layer tars come from caches and base images: applying one (and extracting it as a
//! snapshot) must never panic, and must never write outside the target directory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_layer::{ApplyOptions, apply_layer, extract_snapshot};

/// Every path under `root` must stay under it; a canary beside it must stay untouched.
fn check_contained(outer: &Path) {
    let canary = outer.join("canary");
    assert_eq!(std::fs::read(&canary).unwrap(), b"canary", "canary beside the target changed");
    for e in std::fs::read_dir(outer).unwrap() {
        let name = e.unwrap().file_name();
        assert!(
            name == "canary" || name == "apply" || name == "snap",
            "a layer wrote {name:?} beside its target"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("canary"), b"canary").unwrap();
    let apply = outer.path().join("apply");
    let snap = outer.path().join("snap");
    std::fs::create_dir(&apply).unwrap();
    std::fs::create_dir(&snap).unwrap();
    let opts = ApplyOptions::default();
    let _ = apply_layer(data, &apply, &opts);
    let _ = extract_snapshot(data, &snap, &opts);
    check_contained(outer.path());
});
