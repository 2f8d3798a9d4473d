//! write_dir → compress → decompress → apply, for every codec; determinism; eStargz
//! structure; the busybox fixture.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use common::*;
use strata_layer::compression::{Compression, CompressionOptions, LayerEncoder, open_layer_reader};
use strata_layer::estargz::{FOOTER_SIZE, TOC_TAR_NAME, parse_footer};
use strata_layer::{
    ApplyOptions, LayerWriter, WriteDirOptions, apply_layer, diff_id_of, write_dir,
};
use strata_oci::{Digest, media};

fn layer_of(root: &Path, opts: &CompressionOptions) -> (Vec<u8>, strata_layer::CompressedLayer) {
    let enc = LayerEncoder::new(Vec::new(), opts).unwrap();
    let mut w = LayerWriter::new(enc);
    write_dir(root, &mut w, &WriteDirOptions::default()).unwrap();
    let enc = w.finish().unwrap();
    enc.finish().unwrap()
}

#[test]
fn roundtrip_every_codec() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let (want, want_links) = snapshot(src.path());
    assert!(!want_links.is_empty());
    for c in [Compression::Uncompressed, Compression::Gzip, Compression::Zstd, Compression::Estargz]
    {
        let (blob, layer) = layer_of(src.path(), &CompressionOptions::new(c));
        assert_eq!(layer.digest, Digest::of_bytes(&blob), "{c}");
        assert_eq!(layer.size, blob.len() as u64, "{c}");
        // The diffID is the sha256 of exactly what decompression yields.
        assert_eq!(
            diff_id_of(&blob[..]).unwrap(),
            (layer.diff_id.clone(), layer.uncompressed_size),
            "{c}"
        );
        let dst = tempfile::tempdir().unwrap();
        let stats = apply_layer(
            open_layer_reader(&blob[..], None).unwrap(),
            dst.path(),
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(stats.hardlinks, 1, "{c}");
        if c == Compression::Estargz {
            // The TOC is a real tar entry; a plain gzip reader extracts it too.
            assert!(dst.path().join(TOC_TAR_NAME).is_file());
            fs::remove_file(dst.path().join(TOC_TAR_NAME)).unwrap();
        }
        let (got, got_links) = snapshot(dst.path());
        assert_eq!(got, want, "{c}");
        assert_eq!(got_links, want_links, "{c}");
        make_writable(dst.path());
    }
    make_writable(src.path());
}

#[test]
fn output_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build_tree(a.path());
    build_tree(b.path());
    // Same content, different mtimes on disk: clamp both to the same epoch.
    let opts = WriteDirOptions { clamp_mtime: Some(1_000_000), ..Default::default() };
    let enc = |root: &Path, c: CompressionOptions| {
        let mut w = LayerWriter::new(LayerEncoder::new(Vec::new(), &c).unwrap());
        write_dir(root, &mut w, &opts).unwrap();
        w.finish().unwrap().finish().unwrap().1
    };
    for c in [Compression::Gzip, Compression::Zstd, Compression::Estargz] {
        let x = enc(a.path(), CompressionOptions::new(c));
        let y = enc(b.path(), CompressionOptions::new(c));
        assert_eq!((&x.digest, &x.diff_id), (&y.digest, &y.diff_id), "{c}");
    }
    // gzip and estargz bytes do not depend on the worker count.
    for c in [Compression::Gzip, Compression::Estargz] {
        let one = enc(a.path(), CompressionOptions::new(c).with_threads(1));
        let four = enc(a.path(), CompressionOptions::new(c).with_threads(4));
        assert_eq!(one, four, "{c}");
    }
    make_writable(a.path());
    make_writable(b.path());
}

#[test]
fn estargz_is_plain_gzip_with_toc_and_footer() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let (blob, layer) = layer_of(src.path(), &CompressionOptions::new(Compression::Estargz));
    // Any gzip reader sees a valid tar ending with the TOC.
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar_bytes).unwrap();
    assert_eq!(Digest::of_bytes(&tar_bytes), layer.diff_id);
    assert_eq!(layer.annotations[media::ANNOTATION_ESTARGZ_SIZE], tar_bytes.len().to_string());
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut names = Vec::new();
    let mut toc = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let n = e.path().unwrap().to_string_lossy().into_owned();
        if n == TOC_TAR_NAME {
            e.read_to_end(&mut toc).unwrap();
        }
        names.push(n);
    }
    assert_eq!(names.last().map(String::as_str), Some(TOC_TAR_NAME));
    assert!(names.iter().any(|n| n == "usr/bin/big"));
    assert_eq!(layer.annotations[media::ANNOTATION_STARGZ_TOC], Digest::of_bytes(&toc).to_string());
    assert!(toc.starts_with(b"{\n\t\"version\": 1,\n\t\"entries\": [\n"));

    // Footer points at the TOC member, which holds the TOC's tar header.
    let footer = &blob[blob.len() - FOOTER_SIZE..];
    let toc_off = parse_footer(footer).unwrap() as usize;
    let mut member = flate2::read::GzDecoder::new(&blob[toc_off..]);
    let mut hdr = [0u8; 512];
    member.read_exact(&mut hdr).unwrap();
    assert_eq!(&hdr[..TOC_TAR_NAME.len()], TOC_TAR_NAME.as_bytes());

    // Chunk entries: the member at `offset` starts with the file bytes at `chunkOffset`.
    let json: serde_json::Value = serde_json::from_slice(&toc).unwrap();
    let big = fs::read(src.path().join("usr/bin/big")).unwrap();
    let chunks: Vec<&serde_json::Value> =
        json["entries"].as_array().unwrap().iter().filter(|e| e["name"] == "usr/bin/big").collect();
    assert_eq!(chunks.len(), 3, "9 MiB in 4 MiB chunks");
    assert_eq!(chunks[0]["type"], "reg");
    assert_eq!(chunks[0]["digest"], Digest::of_bytes(&big).to_string());
    assert_eq!(chunks[1]["type"], "chunk");
    for c in chunks {
        let off = c["offset"].as_u64().unwrap() as usize;
        let coff = c["chunkOffset"].as_u64().unwrap_or(0) as usize;
        let mut d = flate2::read::GzDecoder::new(&blob[off..]);
        let mut first = vec![0u8; 4096];
        d.read_exact(&mut first).unwrap();
        assert_eq!(first, big[coff..coff + 4096]);
    }
    make_writable(src.path());
}

#[test]
fn busybox_fixture_applies_and_matches_config_diff_id() {
    let dir = Path::new(FIXTURES).join("_base/busybox-oci");
    let blob_path = |d: &str| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob_path(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &fs::read(blob_path(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = &manifest["layers"][0];
    let want = config["rootfs"]["diff_ids"][0].as_str().unwrap();
    let blob = fs::File::open(blob_path(layer["digest"].as_str().unwrap())).unwrap();
    let (diff_id, _) = diff_id_of(blob).unwrap();
    assert_eq!(diff_id.as_str(), want);

    let dst = tempfile::tempdir().unwrap();
    let blob = fs::File::open(blob_path(layer["digest"].as_str().unwrap())).unwrap();
    let r = open_layer_reader(blob, layer["mediaType"].as_str()).unwrap();
    let stats = apply_layer(r, dst.path(), &ApplyOptions::default()).unwrap();
    assert!(dst.path().join("bin/busybox").is_file());
    assert!(stats.files >= 1);

    // Re-encoding the applied tree and re-applying is stable.
    let mut buf = Vec::new();
    let mut w = LayerWriter::new(&mut buf);
    write_dir(dst.path(), &mut w, &WriteDirOptions::default()).unwrap();
    w.finish().unwrap().flush().unwrap();
    let again = tempfile::tempdir().unwrap();
    apply_layer(&buf[..], again.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(dst.path()), snapshot(again.path()));
}
