//! Hostile input: layer tars that try to escape, corrupt or absurd JSON in a cache,
//! digests that are paths, a cache directory that is a symlink, and option values
//! crafted to break the CSV parser. Every case must end in a clear error or warning,
//! never a crash, and nothing may be written outside the directories strata owns.

#![allow(clippy::print_stderr)] // what each hostile case led to, for the log

mod common;

use std::path::Path;

use strata_oci::Digest;

/// One ustar header + data, built by hand: the `tar` crate refuses to write the
/// names this test needs.
fn tar_entry(out: &mut Vec<u8>, name: &str, kind: u8, mode: u32, data: &[u8], link: &str) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Writes an OCI layout with one image whose only layer is `tar`.
fn oci_image(dir: &Path, tar: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::of_bytes(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        (d, b.len())
    };
    let (layer, lsize) = put(tar);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let cfg = format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"config":{{}}}}"#
    );
    let (cfg_d, cfg_size) = put(cfg.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg_d}","size":{cfg_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{lsize}}}]}}"#
    );
    let (m, msize) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","size":{msize}}}]}}"#
        ),
    )
    .unwrap();
}

/// Builds `FROM base` on a base image whose layer is `tar`, exporting the rootfs.
fn build_on(work: &Path, tar: &[u8]) -> (Option<i32>, String) {
    let img = work.join("img");
    oci_image(&img, tar);
    let ctx = work.join("ctx");
    common::write_files(&ctx, &[("Dockerfile", "FROM base\nCOPY f /f\n"), ("f", "x\n")]);
    let out = common::strata(&work.join("state"))
        .args(["build", "--progress", "plain", "--build-context"])
        .arg(format!("base=oci-layout://{}", img.display()))
        .arg("-o")
        .arg(format!("type=local,dest={}", work.join("out").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    (out.status.code(), common::text(&out))
}

/// Every path under `outer` that is not under one of strata's directories in `work`
/// (which is nested a few levels down, so that `../../x` lands inside `outer`). Symlinks
/// are listed, not followed: a hostile rootfs may well contain one to `/`.
fn stray(outer: &Path, work: &Path) -> Vec<String> {
    let owned = ["img", "ctx", "state", "out"].map(|d| work.join(d));
    let mut out = Vec::new();
    let mut stack = vec![outer.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if owned.contains(&p) {
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
            if is_dir && work.starts_with(&p) {
                stack.push(p); // an ancestor of work: look inside
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn hostile_layers_cannot_escape() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", {
            let mut t = Vec::new();
            tar_entry(&mut t, "../../escaped", b'0', 0o644, b"pwned", "");
            t
        }),
        ("absolute", {
            let mut t = Vec::new();
            tar_entry(&mut t, "/tmp/strata-hostile-abs", b'0', 0o644, b"pwned", "");
            t
        }),
        ("symlink-then-through", {
            let mut t = Vec::new();
            tar_entry(&mut t, "link", b'2', 0o777, b"", "../../..");
            tar_entry(&mut t, "link/escaped", b'0', 0o644, b"pwned", "");
            t
        }),
        ("hardlink-outside", {
            let mut t = Vec::new();
            tar_entry(&mut t, "passwd", b'1', 0o644, b"", "../../../../etc/passwd");
            t
        }),
        ("device", {
            let mut t = Vec::new();
            tar_entry(&mut t, "dev-null-copy", b'3', 0o666, b"", "");
            t
        }),
    ];
    for (name, tar) in cases {
        let mut tar = tar;
        tar.extend_from_slice(&[0u8; 1024]);
        let outer = tempfile::tempdir().unwrap();
        let work = outer.path().join("a/b/c/work");
        std::fs::create_dir_all(&work).unwrap();
        let (code, text) = build_on(&work, &tar);
        eprintln!("{name}: exit {code:?}: {}", text.lines().last().unwrap_or_default());
        // Refused (exit 1, naming the entry) or applied harmlessly (exit 0): never a crash.
        assert!(matches!(code, Some(0) | Some(1)), "{name}: {code:?}\n{text}");
        assert_eq!(
            stray(outer.path(), &work),
            Vec::<String>::new(),
            "{name}: wrote outside\n{text}"
        );
        assert!(!Path::new("/tmp/strata-hostile-abs").exists(), "{name}");
        if code == Some(1) {
            // Refused while extracting the layer, naming the entry (not an earlier,
            // unrelated failure that would make this test prove nothing).
            let entry = ["escaped", "strata-hostile-abs", "passwd", "dev-null-copy"];
            let err: String = text.lines().filter(|l| l.contains("ERROR")).collect();
            assert!(entry.iter().any(|e| err.contains(e)), "{name}: {err}");
        }
        let out = work.join("out");
        if name == "hardlink-outside" && out.join("passwd").exists() {
            let inside = std::fs::read(out.join("passwd")).unwrap();
            let host = std::fs::read("/etc/passwd").unwrap();
            assert_ne!(inside, host, "{name}: host file leaked into the image");
        }
        if name == "absolute" && code == Some(0) {
            // Accepted as relative to the rootfs, as tar and BuildKit do.
            assert_eq!(std::fs::read(out.join("tmp/strata-hostile-abs")).unwrap(), b"pwned");
        }
        if name == "dot-dot" || name == "absolute" {
            // If accepted at all, the entry lands inside the rootfs.
            assert!(!work.join("escaped").exists());
        }
    }
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    let out =
        common::strata(&dir.join("state")).args(["cache", "verify"]).arg(dir).output().unwrap();
    (out.status.code(), common::text(&out))
}

/// A build that imports `cache` must succeed with a warning.
fn import_warns(work: &Path, cache: &Path) -> String {
    let ctx = work.join("ictx");
    common::write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let out = common::strata(&work.join("istate"))
        .args(["build", "--progress", "plain", "--cache-from"])
        .arg(format!("type=local,src={}", cache.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let text = common::text(&out);
    assert!(out.status.success(), "import of a hostile cache must not fail the build:\n{text}");
    text
}

#[test]
fn absurd_json_in_a_cache_is_an_error_not_a_crash() {
    let work = tempfile::tempdir().unwrap();
    let deep = "[".repeat(200_000);
    let cases = [
        ("deep-array", deep.clone()),
        ("deep-object", r#"{"manifests":"#.to_owned() + &"{\"a\":".repeat(100_000)),
        (
            "path-digest",
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:../../../../etc/passwd","size":10}]}"#.to_owned(),
        ),
        (
            "huge-size",
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{}","size":18446744073709551615}}]}}"#,
                Digest::of_bytes(b"x")
            ),
        ),
    ];
    for (name, index) in cases {
        let dir = work.path().join(name);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), &index).unwrap();
        let (code, text) = verify(&dir);
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains("index.json") || text.contains("missing"), "{name}: {text}");
        let text = import_warns(work.path(), &dir);
        assert!(text.contains("WARN"), "{name}: the import should warn:\n{text}");
        assert!(!work.path().join("etc").exists());
    }
    // A deeply nested manifest blob (tagged from a valid index.json).
    let dir = work.path().join("deep-manifest");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let d = Digest::of_bytes(deep.as_bytes());
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), &deep).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
            deep.len()
        ),
    )
    .unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("unparseable JSON"), "{text}");
    import_warns(work.path(), &dir);
}

#[test]
fn a_cache_dir_that_is_a_symlink_is_followed_and_only_its_target_is_written() {
    let work = tempfile::tempdir().unwrap();
    let real = work.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = work.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let ctx = work.path().join("ctx");
    common::write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let out = common::strata(&work.path().join("state"))
        .args(["build", "--progress", "plain", "--cache-to"])
        .arg(format!("type=local,dest={}", link.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    // The link is still a link; the cache is in its target; nothing else appeared.
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(real.join("index.json").exists() && real.join("blobs/sha256").is_dir());
    let mut top: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["ctx", "link", "real", "state"]);
}

#[test]
fn crafted_cache_options_are_usage_errors() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    common::write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let d = work.path().join("dest").display().to_string();
    for (flag, value) in [
        ("--cache-to", format!(r#"type=local,dest="{d}"#)),
        ("--cache-to", format!(r#"type=local,dest={d},"a"b"=c"#)),
        ("--cache-to", format!(r#"type=local,dest={d}",mode=max"#)),
        ("--cache-from", "type=local,src".to_owned()),
        ("--cache-to", format!("type=local,dest={d},compression-level=-1")),
        ("--cache-to", format!("type=local,dest={d},keep-last=-1")),
        ("--cache-to", "\0".to_owned()),
    ] {
        let Ok(out) = common::strata(&work.path().join("state"))
            .args(["build", "--progress", "plain", flag, &value])
            .arg(&ctx)
            .output()
        else {
            continue; // a NUL cannot even be passed as an argument
        };
        let text = common::text(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value:?}:\n{text}");
        assert!(text.contains("ERROR") || text.contains("error"), "{flag} {value:?}:\n{text}");
    }
    assert!(!work.path().join("dest").exists(), "a rejected option must not create its dest");
}
