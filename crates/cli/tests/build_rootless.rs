//! RUN without root (runc rootless + the copy fallback), end to end: the `strata` binary
//! runs as uid/gid 65534 through `setpriv`, so this needs root to start (CI runs as root),
//! runc, setpriv, and a kernel that allows unprivileged user namespaces; otherwise the
//! tests print "skipped: …" with the reason.

// Skips are reported on stderr, as `common::can_run` does.
#![allow(clippy::print_stderr)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

const DOCKERFILE: &str = "FROM base\n\
    RUN mkdir -p /data/sub && echo x > /data/sub/old && echo hi > /created && chmod 600 /created \
        && rm /bin/ls\n\
    RUN rm -rf /data/sub && mkdir /data/sub && echo fresh > /data/sub/new && id -u > /data/uid\n";

/// A temp dir owned by [`NOBODY`] with a build context holding `dockerfile`.
struct Rootless {
    dir: tempfile::TempDir,
}

impl Rootless {
    fn new(test: &str, dockerfile: &str) -> Option<Self> {
        if !common::can_run(test) {
            return None;
        }
        if !Path::new("/usr/bin/setpriv").exists() && which("setpriv").is_none() {
            eprintln!("skipped: {test}: setpriv (util-linux) is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        common::write_files(&dir.path().join("ctx"), &[("Dockerfile", dockerfile)]);
        for p in
            [dir.path().to_path_buf(), dir.path().join("ctx"), dir.path().join("ctx/Dockerfile")]
        {
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The binary and the fixture must be reachable for an unprivileged user.
        for p in [strata_bin(), common::fixtures().join("_base/busybox-oci/index.json")] {
            if let Some(why) = unreadable(&p) {
                eprintln!("skipped: {test}: uid {NOBODY} cannot read {}: {why}", p.display());
                return None;
            }
        }
        Some(Rootless { dir })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `strata build` as [`NOBODY`], output to `out` in the temp dir.
    fn build(&self, out: &str) -> Output {
        let d = self.dir.path();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg("env")
            .arg(format!("HOME={}", d.display()))
            .arg(format!("XDG_RUNTIME_DIR={}", d.display()))
            .arg(format!("STRATA_ROOT={}", d.join("state").display()))
            .arg("NO_COLOR=1")
            .arg(strata_bin())
            .args(["build", "--progress", "plain", "--build-context"])
            .arg(common::busybox_context())
            .arg("-o")
            .arg(format!("type=local,dest={}", d.join(out).display()))
            .arg("-f")
            .arg(d.join("ctx/Dockerfile"))
            .arg(d.join("ctx"))
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap()
    }
}

fn strata_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("strata")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.exists())
}

/// Why uid 65534 cannot read `path`, if it cannot.
fn unreadable(path: &Path) -> Option<String> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "test", "-r"])
        .arg(path)
        .output()
        .ok()?;
    (!out.status.success()).then(|| format!("test -r failed ({})", common::text(&out)))
}

/// The reason the kernel gave, when strata reports it cannot run rootless here.
fn kernel_refusal(out: &Output) -> Option<String> {
    let text = common::text(out);
    text.contains("need an unprivileged user namespace").then_some(text)
}

#[test]
fn rootless_run_matches_the_root_build() {
    let Some(r) = Rootless::new("rootless_run_matches_the_root_build", DOCKERFILE) else {
        return;
    };
    let out = r.build("out");
    if let Some(why) = kernel_refusal(&out) {
        eprintln!("skipped: rootless_run_matches_the_root_build: {why}");
        return;
    }
    assert!(out.status.success(), "{}", common::text(&out));
    let root = r.path("out");
    assert_eq!(std::fs::read_to_string(root.join("created")).unwrap(), "hi\n");
    assert!(!root.join("bin/ls").exists(), "the deleted base file is back");
    assert!(root.join("bin/busybox").exists());
    // Re-created directory: only the new file, nothing of the first RUN's.
    let sub: Vec<_> =
        std::fs::read_dir(root.join("data/sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(sub, ["new"]);
    // The caller is the container's root.
    assert_eq!(std::fs::read_to_string(root.join("data/uid")).unwrap(), "0\n");

    // The same build as root (overlay path) gives the same files, modes and contents.
    let state = tempfile::tempdir().unwrap();
    let root_out = state.path().join("out");
    let o = common::strata(&state.path().join("state"))
        .args(["build", "--progress", "plain", "--build-context", &common::busybox_context()])
        .arg("-o")
        .arg(format!("type=local,dest={}", root_out.display()))
        .arg("-f")
        .arg(r.path("ctx/Dockerfile"))
        .arg(r.path("ctx"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    assert_eq!(common::tree(&root), common::tree(&root_out));

    // A second rootless build is served from the cache.
    let again = r.build("out2");
    let text = common::text(&again);
    assert!(again.status.success(), "{text}");
    assert!(text.contains("0 executed"), "{text}");
    assert_eq!(common::tree(&root), common::tree(&r.path("out2")));
    // Temp trees of the copy fallback (some read-only) were removed.
    let tmp: Vec<_> = std::fs::read_dir(r.path("state/v1/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "leftover temp dirs: {tmp:?}");
}

#[test]
fn rootless_other_user_is_refused_clearly() {
    let Some(r) = Rootless::new(
        "rootless_other_user_is_refused_clearly",
        "FROM base\nUSER 1000:1000\nRUN true\n",
    ) else {
        return;
    };
    let out = r.build("out");
    if let Some(why) = kernel_refusal(&out) {
        eprintln!("skipped: rootless_other_user_is_refused_clearly: {why}");
        return;
    }
    let text = common::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("runs as the container's root only") && text.contains("USER"), "{text}");
}
