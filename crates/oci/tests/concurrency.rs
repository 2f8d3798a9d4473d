//! Many writers, threads and processes, into one layout at once: every blob must commit
//! and verify, every tag must survive in index.json.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use strata_oci::media::{ANNOTATION_REF_NAME, OCI_INDEX, OCI_LAYER_GZIP};
use strata_oci::{BlobStart, Descriptor, Layout};

const CHILD_DIR_ENV: &str = "STRATA_OCI_TEST_CHILD_DIR";
const CHILD_ID_ENV: &str = "STRATA_OCI_TEST_CHILD_ID";

/// Layer `k`'s bytes: big enough to take several writes, identical for every writer.
fn layer(k: u32) -> Vec<u8> {
    (0..150_000u32).map(|i| (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8).collect()
}

/// One "export": four overlapping shared layers (two streamed through a writer, two via
/// `start_blob`), one private layer, a manifest, then tags, all under the export lease.
fn export(layout: &Layout, writer: &str, tags: &[String]) {
    let _lease = layout.export_lease(Duration::from_secs(60)).unwrap();
    let mut descs = Vec::new();
    for k in 0..4 {
        let data = layer(k);
        let info = if k % 2 == 0 {
            let mut w = layout.blob_writer(None).unwrap();
            for c in data.chunks(10_000) {
                w.write_all(c).unwrap();
            }
            w.commit().unwrap()
        } else {
            let d = strata_oci::Digest::of_bytes(&data);
            match layout.start_blob(&d, data.len() as u64).unwrap() {
                BlobStart::Exists(info) => info,
                BlobStart::Write(mut w) => {
                    w.write_all(&data).unwrap();
                    w.commit().unwrap()
                }
            }
        };
        descs.push(info.descriptor(OCI_LAYER_GZIP));
    }
    let own = layout.write_blob(format!("private layer of {writer}").as_bytes()).unwrap();
    descs.push(own.descriptor(OCI_LAYER_GZIP));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs,
    }))
    .unwrap();
    let m = layout.write_blob(&manifest).unwrap();
    for tag in tags {
        layout
            .put_tag(
                Descriptor::new(OCI_INDEX, m.digest.clone(), m.size),
                tag,
                Duration::from_secs(60),
            )
            .unwrap();
    }
}

/// Checks the final state: the given tags resolve to verifying manifests whose blobs all
/// verify, `shared` appears exactly once, every blob verifies, and no ingest is left.
fn check(layout: &Layout, tags: &[String]) {
    let index = layout.read_index().unwrap().unwrap();
    for tag in tags {
        let d = index.resolve(tag).unwrap_or_else(|| panic!("tag {tag} lost: {:?}", index.tags()));
        layout.verify_blob(&d.digest, Some(d.size)).unwrap();
        let m: serde_json::Value =
            serde_json::from_slice(&layout.read_blob_limited(&d.digest, 1 << 20).unwrap()).unwrap();
        for l in m["manifests"].as_array().unwrap() {
            let ld = strata_oci::Digest::parse(l["digest"].as_str().unwrap()).unwrap();
            layout.verify_blob(&ld, l["size"].as_u64()).unwrap();
        }
    }
    let shared = index
        .manifests
        .iter()
        .filter(|d| d.annotation(ANNOTATION_REF_NAME) == Some("shared"))
        .count();
    assert_eq!(shared, 1, "{:?}", index.tags());
    assert_eq!(index.manifests.len(), tags.len() + 1);
    let walk = layout.walk_blobs().unwrap();
    assert!(walk.skipped.is_empty(), "{:?}", walk.skipped);
    for b in &walk.blobs {
        layout.verify_blob(&b.digest, Some(b.size)).unwrap();
    }
    // Four shared layers + one private layer and one manifest per writer.
    let writers = tags.len() / tags_per_writer();
    assert_eq!(walk.blobs.len(), 4 + 2 * writers);
    assert!(layout.list_ingests().unwrap().is_empty(), "{:?}", layout.list_ingests());
}

fn tags_per_writer() -> usize {
    3
}

fn tags_for(writer: &str) -> Vec<String> {
    (0..tags_per_writer()).map(|j| format!("{writer}-{j}")).collect()
}

#[test]
fn eight_threads_write_overlapping_blobs_and_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::create(tmp.path().join("cache")).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (layout, barrier) = (layout.clone(), barrier.clone());
            std::thread::spawn(move || {
                let name = format!("t{i}");
                let mut tags = tags_for(&name);
                tags.push("shared".to_owned());
                barrier.wait();
                export(&layout, &name, &tags);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all: Vec<String> = (0..8).flat_map(|i| tags_for(&format!("t{i}"))).collect();
    check(&layout, &all);
}

/// The body of one child process of `four_processes_write_at_once`; does nothing when run
/// directly.
#[test]
#[ignore = "helper: run by four_processes_write_at_once as a child process"]
fn child_writer() {
    let (Ok(dir), Ok(id)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_ID_ENV)) else {
        return;
    };
    let layout = Layout::open(&dir).unwrap();
    let name = format!("p{id}");
    let mut tags = tags_for(&name);
    tags.push("shared".to_owned());
    export(&layout, &name, &tags);
}

#[test]
fn four_processes_write_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let layout = Layout::create(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    // Spawn all four before waiting for any, so they really run at once.
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(&exe)
                .args(["--ignored", "--exact", "child_writer", "--test-threads=1", "--nocapture"])
                .env(CHILD_DIR_ENV, &dir)
                .env(CHILD_ID_ENV, i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let children: Vec<_> =
        children.into_iter().enumerate().map(|(i, c)| (i, c.wait_with_output().unwrap())).collect();
    for (i, out) in children {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child {i} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all: Vec<String> = (0..4).flat_map(|i| tags_for(&format!("p{i}"))).collect();
    check(&layout, &all);
    assert!(Path::new(&dir).join("index.json.lock").exists(), "strata never deletes the lock file");
}
