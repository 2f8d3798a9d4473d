//! Compression throughput on ~64 MiB of semi-compressible data, for BENCHMARKS.md.
//!
//! `cargo run --release -p strata-layer --example throughput [MiB | FILE]`
//! Compare with `zstd -T2 -3` and `pigz -6` on the file it writes to $TMPDIR (or on FILE,
//! e.g. the PERF.md context as a tar, which bench/run.sh writes).
#![allow(clippy::print_stdout)] // A benchmark report is its output.

use std::io::Write;
use std::time::Instant;

use strata_layer::compression::{Compression, CompressionOptions, compress, diff_id_of};

fn semi_random(n: usize) -> Vec<u8> {
    let words: [&[u8]; 8] =
        [b"layer ", b"tar ", b"strata ", b"build ", b"cache ", b"\n", b"0x1f8b ", b"zstd "];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        if r.is_multiple_of(5) {
            out.extend_from_slice(&x.to_le_bytes()[..3]);
        } else {
            out.extend_from_slice(words[r % 8]);
        }
    }
    out.truncate(n);
    out
}

fn main() {
    let arg = std::env::args().nth(1);
    let data = match arg.as_deref() {
        // A file: a benchmark input, read whole so the timing is the codec's alone.
        Some(path) if path.parse::<usize>().is_err() => {
            let data = std::fs::read(path).expect("read input file");
            println!("input: {path} ({} bytes)", data.len());
            data
        }
        _ => {
            let mib: usize = arg.and_then(|s| s.parse().ok()).unwrap_or(64);
            let data = semi_random(mib << 20);
            let path = std::env::temp_dir().join("strata-throughput.bin");
            std::fs::File::create(&path).and_then(|mut f| f.write_all(&data)).expect("write");
            println!("input: {mib} MiB semi-compressible, written to {}", path.display());
            data
        }
    };
    let cases = [
        (
            "gzip -6 (parallel members, 2 threads)",
            CompressionOptions::new(Compression::Gzip).with_threads(2),
        ),
        ("gzip -6 (1 thread)", CompressionOptions::new(Compression::Gzip).with_threads(1)),
        ("zstd -3 (2 workers)", CompressionOptions::new(Compression::Zstd)),
        ("estargz -6 (2 threads)", CompressionOptions::new(Compression::Estargz).with_threads(2)),
    ];
    for (name, opts) in cases {
        // eStargz needs a tar; wrap the data as one file.
        let input = if opts.compression == Compression::Estargz {
            let mut w = strata_layer::LayerWriter::new(Vec::new());
            w.add_file("data", &strata_layer::EntryMeta::new(0o644), &data[..], data.len() as u64)
                .expect("tar");
            w.finish().expect("tar")
        } else {
            data.clone()
        };
        let mut out = Vec::with_capacity(data.len());
        let t = Instant::now();
        let layer = compress(&input[..], &opts, &mut out).expect("compress");
        let secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        diff_id_of(&out[..]).expect("decompress");
        let dsecs = t.elapsed().as_secs_f64();
        let mb = input.len() as f64 / 1e6;
        println!(
            "{name:40} compress {:7.1} MB/s  ratio {:.2}  decompress+sha256 {:7.1} MB/s",
            mb / secs,
            input.len() as f64 / layer.size as f64,
            mb / dsecs
        );
    }
}
