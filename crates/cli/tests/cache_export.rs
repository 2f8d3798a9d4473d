//! End-to-end tests of `--cache-to type=local`: every parameter of the seed's table
//! round-trips through a fresh state with `--cache-from`, mode=min/max, failed builds,
//! export failures with and without ignore-error, several destinations, reset/keep-last/
//! max-size, option errors, and the progress text.

mod cache_support;
mod common;

use std::path::Path;

use cache_support::*;

/// Every value of every parameter at least once with mode=max, plus levels, forced
/// recompression and mode=min.
const MATRIX: &[&str] = &[
    "mode=max",
    "mode=max,oci-mediatypes=false,compression=zstd",
    "mode=max,oci-mediatypes=true,image-manifest=true,compression=uncompressed",
    "mode=max,image-manifest=false,compression=estargz",
    "mode=max,oci-mediatypes=false,compression=estargz,force-compression=true",
    "mode=max,image-manifest=true,compression=zstd,compression-level=19,force-compression=true",
    "mode=max,compression=gzip,compression-level=1,force-compression=true,ignore-error=false",
    "mode=min",
    "mode=min,oci-mediatypes=false,compression=zstd",
];

/// Exports on state A, imports on a fresh state B: hits, same image digest, same files.
fn round_trip(p: &Project, opts: &str) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cache");
    let a = build(p, &t.path().join("A"), t.path(), "a", &[cache_to(&dir, opts)]);
    a.ok();
    assert!(a.executed().len() == p.steps, "{opts}: state A must run every step:\n{}", a.text);
    assert_verifies(&dir);
    let b = build(p, &t.path().join("B"), t.path(), "b", &[cache_from(&dir, "")]);
    b.ok();
    let steps = b.steps();
    assert_eq!(steps.len(), p.steps, "{opts}:\n{}", b.text);
    if opts.contains("mode=max") {
        assert!(b.executed().is_empty(), "{opts}: mode=max must hit every step:\n{}", b.text);
    } else {
        let final_steps: Vec<_> =
            steps.iter().filter(|(n, _)| n.starts_with(&format!("[{} ", p.final_stage))).collect();
        assert!(!final_steps.is_empty());
        assert!(final_steps.iter().all(|(_, c)| *c), "{opts}: final chain must hit:\n{}", b.text);
    }
    assert!(b.text.contains(&format!("CACHED (from {})", dir.display())), "{}", b.text);
    // Image layers are gzip whatever the cache's compression, so the image is the same.
    assert!(a.digest.is_some());
    assert_eq!(a.digest, b.digest, "{opts}: image digest differs after import");
    assert_eq!(a.tree(), b.tree(), "{opts}: output files differ");
}

#[test]
fn round_trip_matrix_copy_only() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(t.path());
    for opts in MATRIX {
        round_trip(&p, opts);
    }
}

#[test]
fn round_trip_matrix_with_run_first_half() {
    if !common::can_run("round_trip_matrix_with_run_first_half") {
        return;
    }
    for opts in &MATRIX[..MATRIX.len() / 2] {
        round_trip(&multistage(), opts);
    }
}

#[test]
fn round_trip_matrix_with_run_second_half() {
    if !common::can_run("round_trip_matrix_with_run_second_half") {
        return;
    }
    for opts in &MATRIX[MATRIX.len() / 2..] {
        round_trip(&multistage(), opts);
    }
}

fn layer_blobs(dir: &Path) -> Vec<String> {
    let v = inspect(dir, &[]);
    let mut l: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["blob"].as_str().unwrap().into())
        .collect();
    l.sort();
    l
}

/// mode=min holds only the final chain's layers, mode=max every stage's.
fn min_vs_max(p: &Project, max_layers: usize, min_layers: usize) {
    let t = tempfile::tempdir().unwrap();
    let (min, max) = (t.path().join("min"), t.path().join("max"));
    build(p, &t.path().join("A"), t.path(), "a", &[cache_to(&min, ""), cache_to(&max, "mode=max")])
        .ok();
    let (lmin, lmax) = (layer_blobs(&min), layer_blobs(&max));
    assert_eq!(lmax.len(), max_layers, "{lmax:?}");
    assert_eq!(lmin.len(), min_layers, "{lmin:?}");
    assert!(lmin.iter().all(|l| lmax.contains(l)), "min ⊂ max: {lmin:?} {lmax:?}");
    // Records exist in both modes; only results differ.
    let (rmin, rmax) = (inspect(&min, &[]), inspect(&max, &[]));
    assert_eq!(
        rmin["records"].as_array().unwrap().len(),
        rmax["records"].as_array().unwrap().len()
    );
    // A fresh build from the min cache runs the builder stage again, hits the final chain.
    let b = build(p, &t.path().join("B"), t.path(), "b", &[cache_from(&min, "")]);
    b.ok();
    for (name, cached) in b.steps() {
        assert_eq!(cached, name.starts_with(&format!("[{} ", p.final_stage)), "{name}\n{}", b.text);
    }
}

#[test]
fn min_holds_the_final_chain_max_every_stage_copy_only() {
    let t = tempfile::tempdir().unwrap();
    // builder: /out/a, /out/b (2 layers); final: /app, /c.txt (2 layers).
    min_vs_max(&scratch_project(t.path()), 4, 2);
}

#[test]
fn min_holds_the_final_chain_max_every_stage_with_run() {
    if !common::can_run("min_holds_the_final_chain_max_every_stage_with_run") {
        return;
    }
    // busybox + 4 builder layers; final stage on scratch: 2 layers.
    min_vs_max(&multistage(), 7, 2);
}

#[test]
fn unusable_dest_fails_before_the_build_or_warns_with_ignore_error() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    std::fs::write(t.path().join("file"), "x").unwrap();
    let dest = t.path().join("file/cache");
    let a = build(&p, &t.path().join("A"), t.path(), "a", &[cache_to(&dest, "")]);
    assert_eq!(a.code(), 1, "{}", a.text);
    assert!(a.text.contains(&dest.display().to_string()), "names the dest: {}", a.text);
    assert!(a.steps().is_empty(), "fails before any step runs:\n{}", a.text);
    let b = build(&p, &t.path().join("B"), t.path(), "b", &[cache_to(&dest, "ignore-error=true")]);
    b.ok();
    assert!(
        b.text.contains("WARNING") && b.text.contains(&dest.display().to_string()),
        "{}",
        b.text
    );
    assert_eq!(b.executed().len(), p.steps);
}

#[test]
fn a_failed_write_keeps_the_existing_version_and_ignore_error_only_warns() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    let p = scratch_project(&ctx);
    let dest = t.path().join("cache");
    let state = t.path().join("A");
    build(&p, &state, t.path(), "a", &[cache_to(&dest, "mode=max")]).ok();
    let first = tagged(&dest, "latest").unwrap();
    // A regular file where the blob directory should be: writing fails even as root.
    let sha = dest.join("blobs/sha256");
    let aside = dest.join("blobs/aside");
    for (n, ignore) in [(1, false), (2, true)] {
        common::write_files(&ctx, &[("c.txt", &format!("changed {n}\n"))]);
        std::fs::rename(&sha, &aside).unwrap();
        std::fs::write(&sha, "not a directory").unwrap();
        let opts = format!("mode=max,ignore-error={ignore}");
        let b = build(&p, &state, t.path(), &format!("b{n}"), &[cache_to(&dest, &opts)]);
        std::fs::remove_file(&sha).unwrap();
        std::fs::rename(&aside, &sha).unwrap();
        if ignore {
            b.ok();
            assert!(b.text.contains("WARNING") && b.text.contains("ignore-error"), "{}", b.text);
            assert!(b.tree().iter().any(|l| l.starts_with("c.txt")), "image still written");
        } else {
            assert_eq!(b.code(), 1, "{}", b.text);
            assert!(b.text.contains(&dest.display().to_string()), "{}", b.text);
        }
        assert!(b.text.contains("blobs/sha256"), "names what failed: {}", b.text);
        assert_eq!(tagged(&dest, "latest").unwrap(), first, "index.json must not move");
        assert_verifies(&dest);
    }
}

/// A build that fails after some steps still exports them to every --cache-to; the fixed
/// build on a fresh state hits them.
fn failed_build_exports(p_dir: &Path, bad: &str, good: &str, busybox: bool, done_steps: usize) {
    common::write_files(p_dir, &[("Dockerfile.bad", bad), ("Dockerfile", good)]);
    let mk = |df: &str| Project {
        dockerfile: p_dir.join(df),
        context: p_dir.to_owned(),
        busybox,
        final_stage: "stage-0",
        steps: done_steps + 1,
    };
    let t = tempfile::tempdir().unwrap();
    let (min, max) = (t.path().join("min"), t.path().join("max"));
    let a = build(
        &mk("Dockerfile.bad"),
        &t.path().join("A"),
        t.path(),
        "a",
        &[cache_to(&min, ""), cache_to(&max, "mode=max")],
    );
    assert_eq!(a.code(), 1, "{}", a.text);
    for dir in [&min, &max] {
        assert!(tagged(dir, "latest").is_some(), "{} has no export:\n{}", dir.display(), a.text);
        assert_verifies(dir);
        let b = build(
            &mk("Dockerfile"),
            &t.path().join(format!("B-{}", dir.file_name().unwrap().to_string_lossy())),
            t.path(),
            "b",
            &[cache_from(dir, "")],
        );
        b.ok();
        let steps = b.steps();
        assert_eq!(steps.len(), done_steps + 1, "{}", b.text);
        for (i, (name, cached)) in steps.iter().enumerate() {
            assert_eq!(*cached, i < done_steps, "{name} ({}):\n{}", dir.display(), b.text);
        }
    }
}

#[test]
fn a_failed_build_exports_its_completed_steps_copy_only() {
    let t = tempfile::tempdir().unwrap();
    common::write_files(t.path(), &[("a.txt", "a\n"), ("b.txt", "b\n"), ("c.txt", "c\n")]);
    failed_build_exports(
        t.path(),
        "FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\nCOPY missing.txt /m\n",
        "FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\nCOPY c.txt /m\n",
        false,
        2,
    );
}

#[test]
fn a_failed_build_exports_its_completed_steps_with_run() {
    if !common::can_run("a_failed_build_exports_its_completed_steps_with_run") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    failed_build_exports(
        t.path(),
        "FROM base\nRUN echo one > /one\nRUN echo two > /two\nRUN echo bad; exit 1\n",
        "FROM base\nRUN echo one > /one\nRUN echo two > /two\nRUN echo fixed > /three\n",
        true,
        2,
    );
}

#[test]
fn several_dests_each_get_the_export() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dirs: Vec<_> = (0..3).map(|i| t.path().join(format!("c{i}"))).collect();
    let a = build(
        &p,
        &t.path().join("A"),
        t.path(),
        "a",
        &[
            cache_to(&dirs[0], "mode=max"),
            cache_to(&dirs[1], "mode=max,compression=zstd,oci-mediatypes=false"),
            cache_to(&dirs[2], ""),
        ],
    );
    a.ok();
    for d in &dirs {
        assert!(a.text.contains(&format!("exporting cache to {}", d.display())), "{}", a.text);
        assert!(tagged(d, "latest").is_some());
        assert_verifies(d);
    }
    assert_eq!(layer_blobs(&dirs[0]).len(), 4);
    assert_eq!(layer_blobs(&dirs[1]).len(), 4);
    assert_ne!(layer_blobs(&dirs[0]), layer_blobs(&dirs[1]), "zstd blobs differ from gzip");
    // The same dest and tag twice is BuildKit's "duplicate cache exports" usage error.
    let d = build(
        &p,
        &t.path().join("D"),
        t.path(),
        "d",
        &[cache_to(&dirs[0], ""), cache_to(&dirs[0], "mode=max")],
    );
    assert_eq!(d.code(), 2, "{}", d.text);
    assert!(d.text.contains("duplicate cache exports"), "{}", d.text);
}

/// Exports `p` into `dest` `n` times, changing c.txt before each; returns manifest digests.
fn exports_with_changes(
    p: &Project,
    t: &Path,
    dest: &Path,
    n: usize,
    last_opts: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        common::write_files(&p.context, &[("c.txt", &format!("version {i}\n"))]);
        let opts = if i + 1 == n { format!("mode=max,{last_opts}") } else { "mode=max".into() };
        build(p, &t.join("A"), t, &format!("v{i}"), &[cache_to(dest, &opts)]).ok();
        out.push(tagged(dest, "latest").unwrap());
    }
    out
}

/// The blobs the latest version reaches: its manifest, config and layers.
fn reachable(dest: &Path) -> Vec<String> {
    let v = inspect(dest, &[]);
    let mut r =
        vec![v["digest"].as_str().unwrap().to_owned(), v["config"].as_str().unwrap().into()];
    r.extend(layer_blobs(dest));
    r.sort();
    r.dedup();
    r
}

#[test]
fn reset_leaves_only_reachable_blobs() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dest = t.path().join("cache");
    let v = exports_with_changes(&p, t.path(), &dest, 2, "reset=true");
    assert_ne!(v[0], v[1]);
    assert!(!blob_path(&dest, &v[0]).exists(), "the first manifest is unreferenced: removed");
    assert_eq!(blobs(&dest), reachable(&dest));
    assert_eq!(ls_all(&dest).len(), 1);
    assert_verifies(&dest);
}

#[test]
fn keep_last_and_max_size_bound_the_directory() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dest = t.path().join("cache");
    let v = exports_with_changes(&p, t.path(), &dest, 3, "keep-last=1");
    let versions: Vec<String> =
        ls_all(&dest).iter().map(|e| e["digest"].as_str().unwrap().to_owned()).collect();
    assert_eq!(versions.len(), 2, "latest + 1 older: {versions:?}");
    assert!(versions.contains(&v[2]) && versions.contains(&v[1]) && !versions.contains(&v[0]));
    assert!(!blob_path(&dest, &v[0]).exists());
    assert_verifies(&dest);
    // A size bound below one version keeps only the version just written.
    common::write_files(&p.context, &[("c.txt", "bounded\n")]);
    build(&p, &t.path().join("A"), t.path(), "s", &[cache_to(&dest, "mode=max,max-size=1")]).ok();
    let versions = ls_all(&dest);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(blobs(&dest), reachable(&dest));
    assert_verifies(&dest);
}

#[test]
fn bad_options_are_usage_errors_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dest = t.path().join("cache");
    let d = dest.display().to_string();
    let cases: &[(String, &[&str])] = &[
        (
            format!("--cache-to=type=local,dest={d},compresion=zstd"),
            &["\"compresion\"", "compression-level", "force-compression", "ignore-error"],
        ),
        (format!("--cache-to=type=s3,dest={d}"), &["not supported yet"]),
        (format!("--cache-from=type=s3,src={d}"), &["not supported yet"]),
        (format!("--cache-to=type=local,dest={d},oci-mediatypes=yes"), &["oci-mediatypes", "yes"]),
        (format!("--cache-to=type=local,dest={d},image-manifest=2"), &["image-manifest"]),
        (format!("--cache-to=type=local,dest={d},force-compression=nope"), &["force-compression"]),
        (format!("--cache-to=type=local,dest={d},ignore-error=maybe"), &["ignore-error"]),
        (format!("--cache-to=type=local,dest={d},reset=x"), &["reset"]),
        (format!("--cache-to=type=local,dest={d},mode=medium"), &["mode", "min or max"]),
        (format!("--cache-to=type=local,dest={d},compression=brotli"), &["compression"]),
        (format!("--cache-from=type=local,src={d},digest=sha256:abc"), &["digest", "sha256:abc"]),
        (
            format!("--cache-to=type=local,dest={d},compression=zstd,compression-level=23"),
            &["compression-level", "0..22"],
        ),
        (
            format!("--cache-to=type=local,dest={d},compression=gzip,compression-level=10"),
            &["compression-level", "0..9"],
        ),
        (
            format!("--cache-to=type=local,dest={d},image-manifest=true,oci-mediatypes=false"),
            &["image-manifest", "oci-mediatypes"],
        ),
        ("--cache-to=type=local,mode=max".to_owned(), &["requires dest"]),
        ("--cache-from=type=local,tag=x".to_owned(), &["requires src"]),
    ];
    for (i, (arg, want)) in cases.iter().enumerate() {
        let state = t.path().join(format!("state{i}"));
        let b = build(&p, &state, t.path(), &format!("b{i}"), std::slice::from_ref(arg));
        assert_eq!(b.code(), 2, "{arg}:\n{}", b.text);
        for w in *want {
            assert!(b.text.contains(w), "{arg}: expected {w:?} in:\n{}", b.text);
        }
        assert!(!state.exists(), "{arg}: the state dir was created");
        assert!(!dest.exists(), "{arg}: the cache dir was created");
        assert!(b.steps().is_empty(), "{arg}: steps ran:\n{}", b.text);
    }
    // mode= on --cache-from is ignored with a warning, as BuildKit ignores export keys.
    let b = build(&p, &t.path().join("W"), t.path(), "w", &[cache_from(&dest, "mode=max")]);
    b.ok();
    assert!(b.text.contains("WARNING") && b.text.contains("\"mode\""), "{}", b.text);
}

#[test]
fn progress_names_the_dest_each_layer_and_the_manifest() {
    let t = tempfile::tempdir().unwrap();
    let p = scratch_project(&t.path().join("ctx"));
    let dest = t.path().join("cache");
    let a = build(&p, &t.path().join("A"), t.path(), "a", &[cache_to(&dest, "mode=max")]);
    a.ok();
    let m = tagged(&dest, "latest").unwrap();
    let layers = layer_blobs(&dest);
    assert!(a.text.contains(&format!("exporting cache to {}", dest.display())), "{}", a.text);
    for l in &layers {
        assert!(a.text.contains(&format!("writing layer {l}")), "{l}:\n{}", a.text);
    }
    assert!(a.text.contains(&format!("manifest {m}")), "{}", a.text);
    assert!(a.text.contains(&format!("{} layers written, 0 reused", layers.len())), "{}", a.text);
    // The same build again into the same dest: every layer is reused, nothing rewritten.
    let b = build(&p, &t.path().join("A"), t.path(), "b", &[cache_to(&dest, "mode=max")]);
    b.ok();
    for l in &layers {
        assert!(b.text.contains(&format!("reusing layer {l}")), "{l}:\n{}", b.text);
    }
    assert!(b.text.contains(&format!("0 layers written, {} reused", layers.len())), "{}", b.text);
}
