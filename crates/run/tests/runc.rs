//! Real containers through runc on an overlay of the busybox fixture.
//!
//! These need root, runc and overlayfs; without them each test prints
//! "skipped: <why>" and passes (CI runs as root, so there they run).

#![allow(clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_run::{
    Executor, Mount, Network, RunError, RunOutcome, RunSpec, RuncExecutor, SecretBytes, Stream,
    is_opaque, secret_target,
};
use tempfile::TempDir;

const BUSYBOX_OCI: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/buildkit/_base/busybox-oci");

/// One test's world: an executor with private state and a busybox lower.
struct World {
    dir: TempDir,
    exec: RuncExecutor,
    busybox: PathBuf,
    steps: usize,
}

struct Step {
    outcome: RunOutcome,
    output: String,
    upper: PathBuf,
}

fn skip(why: &str) -> Option<World> {
    eprintln!("skipped: {why}");
    None
}

/// The gzip layer blob of the busybox fixture.
fn busybox_layer() -> Option<PathBuf> {
    let blobs = Path::new(BUSYBOX_OCI).join("blobs/sha256");
    fs::read_dir(blobs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| fs::read(p).map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false))
}

fn world() -> Option<World> {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (overlay mounts and runc containers)");
    }
    if !fs::read_to_string("/proc/filesystems").map(|s| s.contains("overlay")).unwrap_or(false) {
        return skip("kernel has no overlayfs");
    }
    let Some(layer) = busybox_layer() else {
        return skip("busybox fixture not found under shared/fixtures");
    };
    let dir = tempfile::tempdir().unwrap();
    let exec = match RuncExecutor::with_state_dir(None, dir.path().join("state")) {
        Ok(e) => e,
        Err(RunError::RuntimeNotFound) => {
            return skip("runc is not installed (apt-get install runc)");
        }
        Err(e) => panic!("{e}"),
    };
    let busybox = dir.path().join("busybox");
    fs::create_dir(&busybox).unwrap();
    let st = Command::new("tar").arg("-xzf").arg(&layer).arg("-C").arg(&busybox).status().unwrap();
    assert!(st.success());
    Some(World { dir, exec, busybox, steps: 0 })
}

impl World {
    fn spec(&mut self, script: &str) -> RunSpec {
        self.steps += 1;
        let upper = self.dir.path().join(format!("upper{}", self.steps));
        let work = self.dir.path().join(format!("work{}", self.steps));
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&work).unwrap();
        RunSpec {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![],
            cwd: "/".into(),
            lowers: vec![self.busybox.clone()],
            upper,
            work,
            id_prefix: "strata-test".into(),
            network: Network::None,
            ..RunSpec::default()
        }
    }

    fn run(&self, spec: &RunSpec) -> Result<Step, RunError> {
        // Per stream, then stdout before stderr: deterministic for assertions.
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let outcome = self.exec.run(spec, &mut |c| match c.stream {
            Stream::Stdout => stdout.extend_from_slice(&c.bytes),
            Stream::Stderr => stderr.extend_from_slice(&c.bytes),
        })?;
        let mut output = stdout;
        output.extend_from_slice(&stderr);
        // Nothing of the run may stay behind: no run dir, no mount, no runc state.
        let runs = fs::read_dir(self.dir.path().join("state/runs")).unwrap().count();
        assert_eq!(runs, 0, "run dir left behind");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&*self.dir.path().join("state").to_string_lossy()),
            "overlay still mounted"
        );
        Ok(Step {
            outcome,
            output: String::from_utf8_lossy(&output).into_owned(),
            upper: spec.upper.clone(),
        })
    }

    fn ok(&mut self, script: &str) -> Step {
        let spec = self.spec(script);
        let step = self.run(&spec).unwrap();
        assert_eq!(step.outcome.exit_code, 0, "output: {}", step.output);
        step
    }

    /// A lower layer made of the given files (path, contents).
    fn layer(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = self.dir.path().join(name);
        for (path, contents) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, contents).unwrap();
        }
        root
    }
}

/// Every path in `upper`, relative, sorted.
fn tree(upper: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(upper, upper, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn new_file_lands_in_upper_with_output() {
    let Some(mut w) = world() else { return };
    let step = w.ok("echo hi > /new.txt; echo to-stdout; echo to-stderr >&2");
    assert_eq!(fs::read_to_string(step.upper.join("new.txt")).unwrap(), "hi\n");
    assert_eq!(step.output, "to-stdout\nto-stderr\n");
    // /etc was copied up for the /etc/hosts stub; it must be gone again.
    assert_eq!(tree(&step.upper), set(&["new.txt"]));
}

#[test]
fn deletion_is_a_whiteout() {
    let Some(mut w) = world() else { return };
    let step = w.ok("rm /bin/ls");
    let meta = fs::symlink_metadata(step.upper.join("bin/ls")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert_eq!(tree(&step.upper), set(&["bin", "bin/ls"]));
}

#[test]
fn replaced_directory_is_opaque() {
    let Some(mut w) = world() else { return };
    // `rm -rf /etc` itself cannot work: /etc/hosts is a mount point in the
    // container (as in Docker). A lower directory with content shows the same.
    let data = w.layer("data", &[("data/a", "a"), ("data/b", "b")]);
    let mut spec = w.spec("rm -rf /data && mkdir /data && touch /data/x && ls /data");
    spec.lowers.insert(0, data);
    let step = w.run(&spec).unwrap();
    assert_eq!(step.outcome.exit_code, 0, "{}", step.output);
    assert_eq!(step.output, "x\n");
    assert!(is_opaque(&step.upper.join("data")).unwrap());
    assert_eq!(tree(&step.upper), set(&["data", "data/x"]));
}

#[test]
fn failing_command_reports_exit_code_and_tail() {
    let Some(mut w) = world() else { return };
    let spec =
        w.spec("for i in $(seq 1 30); do echo line$i; done; sleep 0.2; echo oops >&2; exit 3");
    let step = w.run(&spec).unwrap();
    assert_eq!(step.outcome.exit_code, 3);
    assert_eq!(step.outcome.tail.len(), strata_run::TAIL_LINES);
    // runc copies stdout and stderr separately, so the pause makes the order
    // of the two streams deterministic here.
    assert_eq!(step.outcome.tail.first().unwrap(), "line12");
    assert_eq!(step.outcome.tail.last().unwrap(), "oops");
}

#[test]
fn missing_binary_is_an_error_not_an_exit_code() {
    let Some(mut w) = world() else { return };
    let mut spec = w.spec("");
    spec.args = vec!["/no/such/binary".into()];
    match w.run(&spec) {
        Err(RunError::Runtime { message, .. }) => {
            assert!(message.contains("no such file"), "{message}")
        }
        Ok(step) => panic!("expected a runc error, got exit {}", step.outcome.exit_code),
        Err(e) => panic!("expected a runc error, got {e}"),
    }
}

#[test]
fn user_is_resolved_in_the_image() {
    let Some(mut w) = world() else { return };
    let users = w.layer(
        "users",
        &[
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\nextra:x:4000:nobody\n"),
        ],
    );
    let mut spec = w.spec("id -u; id -g; id -G; touch /tmp/mine; stat -c %u /tmp/mine");
    spec.lowers.insert(0, users.clone());
    spec.user = "nobody".into();
    let step = w.run(&spec).unwrap();
    assert_eq!(step.outcome.exit_code, 0, "{}", step.output);
    assert_eq!(step.output, "65534\n65534\n65534 4000\n65534\n");

    let mut spec = w.spec("id -u; id -g");
    spec.lowers.insert(0, users.clone());
    spec.user = "1234:5678".into();
    assert_eq!(w.run(&spec).unwrap().output, "1234\n5678\n");

    let mut spec = w.spec("true");
    spec.lowers.insert(0, users);
    spec.user = "alice".into();
    let err = w.run(&spec).err().expect("unknown user must fail");
    assert!(matches!(err, RunError::UnknownUser { .. }), "{err}");
    assert!(err.to_string().contains("\"alice\""), "{err}");
}

#[test]
fn workdir_is_created() {
    let Some(mut w) = world() else { return };
    let mut spec = w.spec("pwd");
    spec.cwd = "/app/src".into();
    let step = w.run(&spec).unwrap();
    assert_eq!(step.output, "/app/src\n");
    let meta = fs::metadata(step.upper.join("app/src")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(meta.uid(), 0);
    assert_eq!(tree(&step.upper), set(&["app", "app/src"]));
}

#[test]
fn bind_mounts_respect_readonly_and_leave_no_stub() {
    let Some(mut w) = world() else { return };
    let host = w.dir.path().join("hostdir");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("in"), "from host").unwrap();
    let mut spec =
        w.spec("cat /mnt/ro/in; echo; echo x > /mnt/ro/f || echo denied; echo y > /mnt/rw/f");
    spec.mounts = vec![
        Mount::Bind { source: host.clone(), target: "/mnt/ro".into(), readonly: true },
        Mount::Bind { source: host.join("rw"), target: "/mnt/rw".into(), readonly: false },
    ];
    fs::create_dir(host.join("rw")).unwrap();
    let step = w.run(&spec).unwrap();
    assert_eq!(step.outcome.exit_code, 0, "{}", step.output);
    assert!(step.output.contains("from host\n"), "{}", step.output);
    assert!(step.output.contains("Read-only file system"), "{}", step.output);
    assert!(step.output.contains("denied"), "{}", step.output);
    assert!(!host.join("f").exists());
    assert_eq!(fs::read_to_string(host.join("rw/f")).unwrap(), "y\n");
    assert_eq!(tree(&step.upper), BTreeSet::new());
}

#[test]
fn tmpfs_and_secrets_leave_nothing_in_upper() {
    let Some(mut w) = world() else { return };
    let mut spec = w.spec(
        "echo junk > /cache/x; echo junk > /tmp/y; cat /run/secrets/tok; echo; \
         stat -c %a /run/secrets/tok; echo no > /run/secrets/tok || echo ro",
    );
    spec.mounts = vec![
        Mount::Tmpfs { target: "/cache".into(), size: Some(1 << 20) },
        Mount::Tmpfs { target: "/tmp".into(), size: None },
        Mount::Secret {
            target: secret_target("tok"),
            contents: SecretBytes(b"s3cret".to_vec()),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
    ];
    let step = w.run(&spec).unwrap();
    assert_eq!(step.outcome.exit_code, 0, "{}", step.output);
    assert!(step.output.starts_with("s3cret\n400\n"), "{}", step.output);
    assert!(step.output.contains("ro"), "{}", step.output);
    assert_eq!(tree(&step.upper), BTreeSet::new());
}

#[test]
fn host_cannot_be_reached_through_proc_root() {
    let Some(mut w) = world() else { return };
    let host = w.dir.path().join("escape-target");
    fs::create_dir(&host).unwrap();
    let h = host.display();
    let script = format!(
        "for r in /proc/1/root /proc/self/root/.. /proc/self/root/../.. /proc/1/cwd/../..; do \
           mkdir -p $r{h} && echo pwned > $r{h}/escaped; done; \
         ls /proc/1/root/ >/dev/null; true"
    );
    let step = w.ok(&script);
    assert!(!host.join("escaped").exists(), "container wrote to the host");
    // The writes went into the container's own filesystem instead.
    assert!(step.upper.join(host.strip_prefix("/").unwrap()).join("escaped").exists());
}

#[test]
fn mount_points_do_not_leak_with_an_empty_lower() {
    let Some(mut w) = world() else { return };
    // A lower with nothing but a static busybox: no /proc, /dev, /sys, /etc.
    let bare = w.dir.path().join("bare");
    fs::create_dir_all(bare.join("bin")).unwrap();
    fs::copy(w.busybox.join("bin/busybox"), bare.join("bin/busybox")).unwrap();
    let mut spec = w.spec("");
    spec.lowers = vec![bare];
    spec.args = vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        "/bin/busybox cat /etc/hosts /etc/hostname; /bin/busybox ls /proc/self/ >/dev/null".into(),
    ];
    spec.hostname = "builder".into();
    let step = w.run(&spec).unwrap();
    assert_eq!(step.outcome.exit_code, 0, "{}", step.output);
    assert!(step.output.contains("localhost builder"), "{}", step.output);
    assert_eq!(tree(&step.upper), BTreeSet::new());

    // Fully empty root filesystem: runc must fail clearly, and leave nothing.
    let mut spec = w.spec("");
    spec.lowers = vec![];
    spec.args = vec!["/bin/sh".into()];
    let err = w.run(&spec).err().expect("an empty rootfs has no /bin/sh");
    assert!(matches!(err, RunError::Runtime { .. }), "{err}");
    assert_eq!(tree(&spec.upper), BTreeSet::new());
}

#[test]
fn network_none_has_only_loopback() {
    let Some(mut w) = world() else { return };
    let step = w.ok("cat /proc/net/dev");
    let ifaces: Vec<&str> =
        step.output.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifaces, ["lo"], "{}", step.output);
}

#[test]
fn cancel_kills_the_container_and_cleans_up() {
    let Some(mut w) = world() else { return };
    let spec = w.spec("echo started; sleep 30");
    let started = Instant::now();
    std::thread::scope(|s| {
        let exec = &w.exec;
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            exec.cancel_all();
        });
        let err = w.run(&spec).err().expect("cancelled run must fail");
        assert!(matches!(err, RunError::Cancelled { .. }), "{err}");
    });
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn leftovers_of_dead_runs_are_removed() {
    let Some(w) = world() else { return };
    let state = w.dir.path().join("state");
    // A run dir whose owner is "pid 1 with a different start time": dead.
    let run = state.join("runs/strata-1-0-deadbeef");
    let rootfs = run.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    fs::write(run.join("owner"), "1 0\n").unwrap();
    let (up, wk) = (w.dir.path().join("lu"), w.dir.path().join("lw"));
    fs::create_dir(&up).unwrap();
    fs::create_dir(&wk).unwrap();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        w.busybox.display(),
        up.display(),
        wk.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .unwrap();
    let _again = RuncExecutor::with_state_dir(None, state.clone()).unwrap();
    assert!(!run.exists(), "leftover run dir not removed");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*rootfs.to_string_lossy()));
}

#[test]
fn per_step_overhead() {
    let Some(mut w) = world() else { return };
    w.ok("true"); // warm caches
    let n = 10;
    let start = Instant::now();
    for _ in 0..n {
        w.ok("true");
    }
    let per = start.elapsed() / n;
    eprintln!("per-step overhead (overlay + runc run + cleanup): {per:?}");
    assert!(per < Duration::from_secs(2), "{per:?} per step");
}

#[test]
fn default_capabilities_and_read_only_kernel_interfaces() {
    let Some(mut w) = world() else { return };
    let step = w.ok("grep CapEff /proc/self/status; echo $PATH; hostname; \
         touch /sys/x 2>/dev/null || echo sys-ro; \
         (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null || echo procsys-ro; \
         mount -t tmpfs none /mnt 2>/dev/null || echo no-mount; \
         cat /proc/kcore 2>/dev/null | head -c1 | wc -c");
    assert_eq!(
        step.output,
        // Docker's well-known default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
        // SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD
        // AUDIT_WRITE SETFCAP.
        "CapEff:\t00000000a80425fb\n\
         /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         buildkitsandbox\nsys-ro\nprocsys-ro\nno-mount\n0\n"
    );
    assert_eq!(tree(&step.upper), BTreeSet::new());
}
