//! RUN end to end (root + runc; skipped otherwise): layers from the container's changes
//! (creations, whiteouts, opaque directories), USER/WORKDIR, failures, cache/secret/bind
//! mounts, and isolation from the host.

mod build_util;
mod common;

use std::path::Path;

use build_util::{Env, executed_steps};

/// An [`Env`] whose `FROM base` is the fixtures' busybox image.
fn env(dockerfile: &str, files: &[(&str, &str)]) -> Env {
    Env::new(dockerfile, files)
}

fn base_args() -> Vec<String> {
    vec!["--build-context".into(), common::busybox_context()]
}

fn build_ok(env: &Env, out: &str, extra: &[&str]) -> build_util::Built {
    let base = base_args();
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    env.build_ok(out, &args)
}

#[test]
fn run_changes_become_layers_with_whiteouts_and_opaque_dirs() {
    if !common::can_run("run_changes_become_layers_with_whiteouts_and_opaque_dirs") {
        return;
    }
    let e = env(
        "FROM base\n\
         RUN mkdir -p /data/sub /data/other && echo keep > /data/keep && echo x > /data/sub/gone \
             && echo o > /data/other/o && echo hi > /created.txt && chmod 600 /created.txt\n\
         RUN rm /bin/yes /data/keep && rm -rf /data/sub\n\
         RUN rm -rf /data/other && mkdir /data/other && echo fresh > /data/other/new\n",
        &[],
    );
    let b = build_ok(&e, "out", &[]);
    let t = b.tree().join("\n");
    assert_eq!(b.read("created.txt"), "hi\n");
    assert!(t.contains("created.txt: file 600"), "{t}");
    // Deleted in a later layer: whiteouts hide them in the applied image.
    assert!(!b.exists("bin/yes"), "{t}");
    assert!(b.exists("bin/seq"), "{t}");
    assert!(!b.exists("data/keep") && !b.exists("data/sub"), "{t}");
    // Deleted and recreated: only the new content (an opaque directory).
    assert_eq!(b.read("data/other/new"), "fresh\n");
    assert!(!b.exists("data/other/o"), "{t}");
    // The layers really carry OCI whiteout entries.
    let tars = build_util::oci_layer_tars(&b.oci());
    assert_eq!(tars.len(), 4, "base + 3 RUN layers");
    let names = |tar: &[u8]| tar_names(tar);
    let l2 = names(&tars[2]);
    assert!(l2.iter().any(|n| n.ends_with("bin/.wh.yes")), "{l2:?}");
    assert!(l2.iter().any(|n| n.ends_with("data/.wh.sub")), "{l2:?}");
    let l3 = names(&tars[3]);
    assert!(
        l3.iter().any(|n| n.ends_with("data/other/.wh..wh..opq"))
            || l3.iter().any(|n| n.ends_with("data/other/.wh.o")),
        "{l3:?}"
    );
    // Nothing the runtime needed (mount stubs, /dev entries) leaks into layers.
    for (i, l) in tars.iter().enumerate().skip(1) {
        let n = names(l);
        assert!(!n.iter().any(|n| n.starts_with("dev/") && n != "dev/"), "layer {i}: {n:?}");
        assert!(
            !n.iter().any(|n| n.starts_with("proc/") || n.starts_with("sys/")),
            "layer {i}: {n:?}"
        );
        assert!(
            !n.iter().any(|n| n.starts_with("etc/resolv.conf") || n.starts_with("etc/hosts")),
            "layer {i}: {n:?}"
        );
    }
}

/// Entry names of an uncompressed tar (ustar headers; names here are short).
fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut off = 0;
    let mut long: Option<String> = None;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            let f = &h[a..b];
            let end = f.iter().position(|c| *c == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let size = u64::from_str_radix(field(124, 136).trim(), 8).unwrap_or(0) as usize;
        let kind = h[156];
        let data = &tar[off + 512..(off + 512 + size).min(tar.len())];
        let name = {
            let prefix = field(345, 500);
            let n = field(0, 100);
            if prefix.is_empty() { n } else { format!("{prefix}/{n}") }
        };
        match kind {
            b'L' => long = Some(String::from_utf8_lossy(data).trim_end_matches('\0').to_owned()),
            b'x' => {
                for rec in String::from_utf8_lossy(data).lines() {
                    if let Some(p) = rec.split_once(" path=").map(|(_, p)| p.to_owned()) {
                        long = Some(p);
                    }
                }
            }
            _ => out.push(long.take().unwrap_or(name)),
        }
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

#[test]
fn user_and_workdir_apply_to_run() {
    if !common::can_run("user_and_workdir_apply_to_run") {
        return;
    }
    let e = env(
        "FROM base\n\
         RUN mkdir -p /home/u && busybox chown 1000:1001 /home/u\n\
         USER 1000:1001\n\
         WORKDIR /home/u\n\
         RUN busybox id -u > uid.txt && busybox id -g > gid.txt && pwd > pwd.txt && touch mine\n\
         WORKDIR /srv/app\n\
         USER 0\n\
         RUN pwd > /pwd2.txt && busybox id -u > /uid2.txt\n",
        &[],
    );
    let b = build_ok(&e, "out", &[]);
    assert_eq!(b.read("home/u/uid.txt"), "1000\n");
    assert_eq!(b.read("home/u/gid.txt"), "1001\n");
    assert_eq!(b.read("home/u/pwd.txt"), "/home/u\n");
    assert_eq!(b.read("pwd2.txt"), "/srv/app\n");
    assert_eq!(b.read("uid2.txt"), "0\n");
    assert!(b.exists("srv/app"), "{:?}", b.tree());
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(b.fs().join("home/u/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    let cfg = b.config();
    assert_eq!(cfg["config"]["User"], "0", "{cfg}");
    assert_eq!(cfg["config"]["WorkingDir"], "/srv/app", "{cfg}");
}

#[test]
fn failing_run_reports_exit_code_and_last_output() {
    if !common::can_run("failing_run_reports_exit_code_and_last_output") {
        return;
    }
    let e = env(
        "FROM base\nRUN echo first-line; echo second-line; echo to-stderr >&2; exit 7\nRUN echo never\n",
        &[],
    );
    let base = base_args();
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let o = e.build(&args);
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("exit code: 7"), "{s}");
    assert!(s.contains("second-line") && s.contains("to-stderr"), "{s}");
    assert!(s.contains("Dockerfile:2"), "{s}");
    assert!(!s.contains("never\n") || s.matches("never").count() == 1, "{s}");
    // The same failure without a TTY in quiet mode still says why.
    let o = common::strata(&e.state)
        .args(["build", "-q", "--build-context", &common::busybox_context()])
        .arg(&e.ctx)
        .output()
        .unwrap();
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("exit code: 7") && s.contains("to-stderr"), "{s}");
}

#[test]
fn cache_mount_persists_between_builds_and_is_not_in_the_image() {
    if !common::can_run("cache_mount_persists_between_builds_and_is_not_in_the_image") {
        return;
    }
    let e = env(
        "FROM base\n\
         RUN --mount=type=cache,target=/var/cache/app \
             (cat /var/cache/app/log 2>/dev/null || true) > /seen.txt && echo run >> /var/cache/app/log\n",
        &[],
    );
    let b1 = build_ok(&e, "one", &[]);
    assert_eq!(b1.read("seen.txt"), "");
    let b2 = build_ok(&e, "two", &["--no-cache"]);
    assert_eq!(b2.read("seen.txt"), "run\n", "{}", b2.log);
    for b in [&b1, &b2] {
        assert!(!b.exists("var/cache/app/log"), "{:?}", b.tree());
    }
}

/// Every layer blob of an OCI layout or cache directory, decompressed, concatenated with
/// the JSON blobs as they are.
fn all_blob_bytes(layout: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let raw = std::fs::read(&p).unwrap();
        out.extend_from_slice(&raw);
        if raw.starts_with(&[0x1f, 0x8b]) || raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            out.extend(build_util::uncompressed(&p));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secret_mount_is_readable_and_never_stored() {
    if !common::can_run("secret_mount_is_readable_and_never_stored") {
        return;
    }
    let secret = "TOPSECRET-5f1c9a";
    let e = env(
        "FROM base\n\
         RUN --mount=type=secret,id=tok sha256sum < /run/secrets/tok | sed 's/ .*//' > /secret-ok\n\
         RUN --mount=type=secret,id=tok,target=/etc/tok cp /etc/tok /tmp/copy-is-mine-to-delete && rm /tmp/copy-is-mine-to-delete && echo ok > /secret-ok2\n",
        &[],
    );
    let secret_file = e.path("secret.txt");
    std::fs::write(&secret_file, secret).unwrap();
    let cache = e.path("cache");
    let b = build_ok(
        &e,
        "out",
        &[
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    // The step read the secret (its hash; the Dockerfile must not contain the secret,
    // or the history in the config would).
    let sum = strata_oci::Digest::of_bytes(secret.as_bytes()).to_string();
    assert_eq!(format!("sha256:{}", b.read("secret-ok").trim()), sum);
    assert_eq!(b.read("secret-ok2"), "ok\n");
    assert!(!b.exists("run/secrets/tok") && !b.exists("etc/tok"), "{:?}", b.tree());
    assert!(!contains(&all_blob_bytes(&b.oci()), secret.as_bytes()), "secret in the image");
    assert!(!contains(&all_blob_bytes(&cache), secret.as_bytes()), "secret in the cache");

    // A missing secret is a clear error, not an empty file.
    let o = e.build(&[&format!("--build-context={}", common::busybox_context()), "--no-cache"]);
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("tok"), "{s}");
}

#[test]
fn bind_mount_from_the_context_is_read_and_keyed_by_content() {
    if !common::can_run("bind_mount_from_the_context_is_read_and_keyed_by_content") {
        return;
    }
    let e = env(
        "FROM base\nRUN --mount=type=bind,source=data,target=/mnt/src cat /mnt/src/f > /copied.txt\n",
        &[("data/f", "one\n")],
    );
    let b1 = build_ok(&e, "one", &[]);
    assert_eq!(b1.read("copied.txt"), "one\n");
    assert!(!b1.exists("mnt/src/f"), "{:?}", b1.tree());
    std::fs::write(e.ctx.join("data/f"), "two\n").unwrap();
    let b2 = build_ok(&e, "two", &[]);
    assert_eq!(executed_steps(&b2.log).len(), 1, "a changed bind source re-runs:\n{}", b2.log);
    assert_eq!(b2.read("copied.txt"), "two\n");
    // Writes to a bind mount are discarded (it is read-only by default).
    let e = env(
        "FROM base\nRUN --mount=type=bind,source=data,target=/mnt/src sh -c 'echo x > /mnt/src/new' ; echo $? > /rc\n",
        &[("data/f", "one\n")],
    );
    let b = build_ok(&e, "out", &[]);
    assert_ne!(b.read("rc"), "0\n");
    assert!(!e.ctx.join("data/new").exists());
}

#[test]
fn run_cannot_write_to_the_host() {
    if !common::can_run("run_cannot_write_to_the_host") {
        return;
    }
    let marker = std::env::temp_dir().join(format!("strata-escape-{}", std::process::id()));
    let m = marker.display().to_string();
    let e = env(
        &format!(
            "FROM base\n\
             RUN (echo pwned > /proc/1/root{m}; echo pwned > /proc/self/root{m}; \
                  echo pwned > /proc/1/cwd/../../..{m}; echo pwned > /../../..{m}) 2>/dev/null; true\n"
        ),
        &[],
    );
    let b = build_ok(&e, "out", &[]);
    assert!(!marker.exists(), "a RUN wrote {m} on the host");
    // What it wrote stayed inside its own rootfs.
    assert_eq!(b.read(&m[1..]), "pwned\n");
}
