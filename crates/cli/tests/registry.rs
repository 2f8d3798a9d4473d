//! Registries end to end, against a real one: Debian's `docker-registry` (CNCF distribution
//! 2.8) started on a loopback port per test, seeded with the busybox fixture by skopeo.
//! FROM pulls, --push with a skopeo pull-back, the registry cache round trip between two
//! state directories, htpasswd auth with and without credentials, a registry that is down
//! at export time, and unknown images.

#![allow(clippy::print_stderr)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry; killed on drop.
struct Registry {
    child: Option<Child>,
    addr: String,
    _dir: tempfile::TempDir,
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Registry {
    /// Starts a registry (with htpasswd auth for `user:pass` when `auth`), seeded with
    /// busybox:latest. `None` (and a message) when docker-registry or skopeo is missing.
    fn start(test: &str, auth: bool) -> Option<Self> {
        for bin in
            ["docker-registry", "skopeo"].iter().chain(if auth { &["htpasswd"][..] } else { &[] })
        {
            if !have(bin) {
                eprintln!("skipped {test}: {bin} is not installed; run scripts/setup.sh as root");
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if auth {
            let pw = Command::new("htpasswd").args(["-Bbn", "user", "pass"]).output().unwrap();
            assert!(pw.status.success(), "htpasswd: {}", common::text(&pw));
            let f = dir.path().join("htpasswd");
            std::fs::write(&f, &pw.stdout).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                f.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let reg = Registry { child: Some(child), addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "registry at {} did not start", reg.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut seed = Command::new("skopeo");
        seed.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if auth {
            seed.args(["--dest-creds", "user:pass"]);
        }
        let o = seed
            .arg(format!("oci:{}/_base/busybox-oci:latest", common::fixtures().display()))
            .arg(format!("docker://{}/busybox:latest", reg.addr))
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo seed: {}", common::text(&o));
        Some(reg)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A strata command isolated from the host's Docker and strata config.
fn strata(state: &Path, home: &Path) -> assert_cmd::Command {
    let mut c = common::strata(state);
    c.env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("STRATA_CONFIG", home.join("no-strata-config.json"))
        .env_remove("XDG_CONFIG_HOME");
    c
}

/// A context with a Dockerfile FROM `base`, a COPY and (where RUN works) a RUN.
fn context(dir: &Path, base: &str, run: bool) -> PathBuf {
    let ctx = dir.join("ctx");
    let mut df = format!("FROM {base}\nCOPY a.txt /a.txt\n");
    if run {
        df.push_str("RUN cat /a.txt > /b.txt && echo ran >> /b.txt\n");
    }
    common::write_files(&ctx, &[("Dockerfile", &df), ("a.txt", "hello registry\n")]);
    ctx
}

fn image_digest(out: &str) -> String {
    out.lines()
        .filter_map(|l| l.strip_prefix("image "))
        .filter_map(|l| l.split_whitespace().next())
        .next_back()
        .unwrap_or_else(|| panic!("no image line in:\n{out}"))
        .to_owned()
}

/// Layer digests of the image tagged `tag` in OCI layout `dir`.
fn layout_layers(dir: &Path, tag: Option<&str>) -> Vec<String> {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| tag.is_none_or(|t| m["annotations"]["org.opencontainers.image.ref.name"] == t))
        .unwrap();
    let d = m["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_owned();
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(d)).unwrap()).unwrap();
    man["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().into()).collect()
}

#[test]
fn from_registry_push_and_skopeo_pull_back() {
    let Some(mut reg) = Registry::start("from_registry_push_and_skopeo_pull_back", false) else {
        return;
    };
    let run = common::can_run("from_registry_push_and_skopeo_pull_back (RUN part)");
    let t = tempfile::tempdir().unwrap();
    let (state, home) = (t.path().join("state"), t.path().join("home"));
    let ctx = context(t.path(), &format!("{}/busybox", reg.addr), run);
    let oci = t.path().join("oci");
    let name = format!("{}/app:v1", reg.addr);
    let o = strata(&state, &home)
        .args(["build", "--progress", "plain", "-t", &name, "--push"])
        .arg("-o")
        .arg(format!("type=oci,tar=false,dest={}", oci.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains(&format!("load metadata for {}/busybox:latest", reg.addr)), "{s}");
    let built = layout_layers(&oci, None);
    assert_eq!(built.len(), if run { 3 } else { 2 }, "busybox + COPY (+ RUN): {s}");

    // The pushed image pulls back with skopeo, layer for layer.
    let back = t.path().join("back");
    let p = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:v1", back.display()))
        .output()
        .unwrap();
    assert!(p.status.success(), "skopeo pull-back: {}", common::text(&p));
    assert_eq!(layout_layers(&back, Some("v1")), built);

    // -o type=image,push=true under a second name: every blob is already there.
    let o = strata(&state, &home)
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=image,name={}/other:v2,push=true", reg.addr))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let p = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/other:v2", reg.addr))
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", common::text(&p));

    // The tag's digest is remembered: with the registry gone the rebuild still works and
    // hits every step; --pull must ask the registry again and says which one is down.
    reg.stop();
    let o = strata(&state, &home)
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=oci,tar=false,dest={}", t.path().join("oci2").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert!(o.status.success(), "offline rebuild: {s}");
    assert!(!s.contains("executed") || s.contains(" 0 executed"), "{s}");
    let o = strata(&state, &home)
        .args(["build", "--progress", "plain", "--pull"])
        .arg(&ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains(&reg.addr) && s.contains("unreachable"), "{s}");
}

#[test]
fn registry_cache_round_trip_between_two_state_dirs() {
    let Some(reg) = Registry::start("registry_cache_round_trip_between_two_state_dirs", false)
    else {
        return;
    };
    let run = common::can_run("registry_cache_round_trip_between_two_state_dirs (RUN part)");
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let ctx = context(t.path(), &format!("{}/busybox", reg.addr), run);
    let cache = format!("{}/cache:main", reg.addr);
    let a = strata(&t.path().join("A"), &home)
        .args(["build", "--progress", "plain", "--metadata-file"])
        .arg(t.path().join("a.json"))
        .arg("--cache-to")
        .arg(format!("type=registry,ref={cache},mode=max"))
        .arg(&ctx)
        .output()
        .unwrap();
    let sa = common::text(&a);
    assert!(a.status.success(), "{sa}");
    assert!(sa.contains(&format!("pushing cache to {cache}")), "{sa}");
    // The cache is an image manifest (image-manifest defaults to true for registries).
    let p = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{cache}"))
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&p.stdout);
    assert!(raw.contains("application/vnd.oci.image.manifest.v1+json"), "{raw}");
    assert!(raw.contains("application/vnd.buildkit.cacheconfig.v0"), "{raw}");

    let b = strata(&t.path().join("B"), &home)
        .args(["build", "--progress", "plain", "--metadata-file"])
        .arg(t.path().join("b.json"))
        .arg("--cache-from")
        .arg(format!("type=registry,ref={cache}"))
        .arg(&ctx)
        .output()
        .unwrap();
    let sb = common::text(&b);
    assert!(b.status.success(), "{sb}");
    let steps = if run { 2 } else { 1 };
    assert_eq!(sb.matches(&format!("CACHED (from {cache})")).count(), steps, "{sb}");
    assert!(sb.contains(&format!("({steps} steps cached, 0 executed)")), "{sb}");
    assert_eq!(image_digest(&sa), image_digest(&sb));

    // The cache commands read a registry cache as they read a directory.
    let url = format!("registry://{cache}");
    for (args, want) in [
        (vec!["cache", "ls", "--json"], "\"tag\": \"main\""),
        (vec!["cache", "inspect", "--json"], "\"records\""),
        (vec!["cache", "verify"], "OK"),
    ] {
        let o = strata(&t.path().join("D"), &home).args(&args).arg(&url).output().unwrap();
        let so = common::text(&o);
        assert!(o.status.success(), "{args:?}: {so}");
        assert!(so.contains(want), "{args:?}: {so}");
    }

    // An unknown cache tag is a warning and a miss, never a failure.
    let c = strata(&t.path().join("C"), &home)
        .args(["build", "--progress", "plain", "--cache-from"])
        .arg(format!("type=registry,ref={}/cache:nope", reg.addr))
        .arg(&ctx)
        .output()
        .unwrap();
    let sc = common::text(&c);
    assert!(c.status.success(), "{sc}");
    assert!(sc.contains(&format!("{}/cache:nope", reg.addr)) && sc.contains("not found"), "{sc}");
}

#[test]
fn htpasswd_registry_with_and_without_credentials() {
    let Some(reg) = Registry::start("htpasswd_registry_with_and_without_credentials", true) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let ctx = context(t.path(), &format!("{}/busybox", reg.addr), false);
    let o = strata(&t.path().join("s1"), &home)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains(&reg.addr) && s.contains("unauthorized"), "{s}");
    assert!(s.contains("config.json"), "the message says where credentials go: {s}");

    // user:pass, base64, as `docker login` writes it.
    common::write_files(
        &home,
        &[(
            ".docker/config.json",
            &format!(r#"{{"auths":{{"{}":{{"auth":"dXNlcjpwYXNz"}}}}}}"#, reg.addr),
        )],
    );
    let o = strata(&t.path().join("s2"), &home)
        .args(["build", "--progress", "plain", "-t"])
        .arg(format!("{}/authed:1", reg.addr))
        .arg("--push")
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let p = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", "user:pass", "--raw"])
        .arg(format!("docker://{}/authed:1", reg.addr))
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", common::text(&p));
}

#[test]
fn registry_down_at_export_and_unknown_images() {
    let Some(mut reg) = Registry::start("registry_down_at_export_and_unknown_images", false) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let addr = reg.addr.clone();

    // Unknown repository / tag: a clear error naming the reference.
    for missing in [format!("{addr}/nope"), format!("{addr}/busybox:nope")] {
        let ctx = context(&t.path().join(missing.replace([':', '/'], "_")), &missing, false);
        let o = strata(&t.path().join("s0"), &home)
            .args(["build", "--progress", "plain"])
            .arg(&ctx)
            .output()
            .unwrap();
        let s = common::text(&o);
        assert_eq!(o.status.code(), Some(1), "{s}");
        assert!(s.contains("not found") && s.contains(&missing), "{s}");
        assert!(!s.contains("panicked"), "{s}");
    }

    // The base comes from a local layout; the cache registry is stopped before the export.
    let ctx = t.path().join("ctx2");
    common::write_files(&ctx, &[("Dockerfile", "FROM base\nCOPY a.txt /\n"), ("a.txt", "x")]);
    reg.stop();
    let cache = format!("{addr}/cache:down");
    let o = strata(&t.path().join("s1"), &home)
        .args(["build", "--progress", "plain", "--build-context", &common::busybox_context()])
        .arg("--cache-to")
        .arg(format!("type=registry,ref={cache}"))
        .arg(&ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains(&addr) && s.contains("unreachable"), "{s}");
    let o = strata(&t.path().join("s2"), &home)
        .args(["build", "--progress", "plain", "--build-context", &common::busybox_context()])
        .arg("--cache-to")
        .arg(format!("type=registry,ref={cache},ignore-error=true"))
        .arg(&ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains("WARNING") && s.contains(&addr) && s.contains("ignore-error"), "{s}");
}
