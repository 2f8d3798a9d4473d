//! [`RuncExecutor`]: RUN steps through `runc run`.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Mount as OciMount;

use crate::rootpath::resolve_in_root;
use crate::spec::{self, ConfigInput};
use crate::stubs::MountStubs;
use crate::{
    DEFAULT_HOSTNAME, Executor, Mount, OutputChunk, OutputTail, RunError, RunOutcome, RunSpec,
    Stream, TAIL_LINES, resolve_user,
};

/// Where [`RuncExecutor::new`] keeps runc state and per-run bundles. On tmpfs,
/// so a reboot (which kills every container anyway) clears it.
pub const DEFAULT_STATE_DIR: &str = "/run/strata";

/// Directories searched for `runc` after `PATH`.
const RUNC_DIRS: [&str; 5] =
    ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"];

/// The largest mount(2) data the kernel accepts is one page, minus the NUL.
const MAX_MOUNT_DATA: usize = 4095;

/// Runs RUN steps with `runc`.
///
/// Each run gets a directory `<state>/runs/<id>` (bundle, overlay mount
/// point, generated /etc files, secrets) and runc state under
/// `<state>/runc`. Both are removed when the run ends.
#[derive(Debug)]
pub struct RuncExecutor {
    runtime: PathBuf,
    /// runc's `--root`.
    state_root: PathBuf,
    /// Per-run directories.
    runs_dir: PathBuf,
    counter: AtomicU64,
    /// Rootless mode (not root): the caller's (uid, gid), the container's 0:0.
    rootless: Option<(u32, u32)>,
    /// Running container ids → whether they were cancelled.
    running: Mutex<HashMap<String, bool>>,
}

impl RuncExecutor {
    /// Finds `runc` (or uses `runtime`), keeps state under
    /// [`DEFAULT_STATE_DIR`], and cleans leftovers of killed strata processes.
    ///
    /// Without root the executor is rootless (see [`RuncExecutor::rootless`])
    /// and keeps its state under `$XDG_RUNTIME_DIR/strata` (or a private
    /// `strata-<uid>` in the temp dir); it fails with
    /// [`RunError::RootlessUnavailable`] when the kernel forbids unprivileged
    /// user namespaces.
    pub fn new(runtime: Option<PathBuf>) -> Result<Self, RunError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 {
            return Self::with_state_dir(runtime, PathBuf::from(DEFAULT_STATE_DIR));
        }
        // /run/strata is root's; an unprivileged caller needs a private dir of its own.
        let state_dir = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() && Path::new(&d).is_dir() => PathBuf::from(d).join("strata"),
            _ => std::env::temp_dir().join(format!("strata-{euid}")),
        };
        Self::with_state_dir(runtime, state_dir)
    }

    /// Like [`RuncExecutor::new`] with the state kept under `state_dir`.
    pub fn with_state_dir(runtime: Option<PathBuf>, state_dir: PathBuf) -> Result<Self, RunError> {
        let euid = nix::unistd::geteuid().as_raw();
        let rootless = if euid == 0 {
            None
        } else {
            if let Some((reason, fix)) = userns_blocker() {
                return Err(RunError::RootlessUnavailable { euid, reason, fix });
            }
            Some((euid, nix::unistd::getegid().as_raw()))
        };
        let runtime = find_runtime(runtime)?;
        let state_root = state_dir.join("runc");
        let runs_dir = state_dir.join("runs");
        for dir in [&state_dir, &state_root, &runs_dir] {
            mkdir_private(dir)?;
        }
        if rootless.is_some() {
            // A shared temp dir: someone else may have created it (or a symlink) first.
            use std::os::unix::fs::MetadataExt;
            let md = fs::symlink_metadata(&state_dir)
                .map_err(|e| RunError::io("inspecting", &state_dir, e))?;
            if !md.is_dir() || md.uid() != euid || md.mode() & 0o022 != 0 {
                return Err(RunError::InvalidSpec(format!(
                    "runc state directory {state_dir:?} is not a private directory of uid {euid}: \
                     remove it or set XDG_RUNTIME_DIR to a directory of your own"
                )));
            }
        }
        let exec = RuncExecutor {
            runtime,
            state_root,
            runs_dir,
            counter: AtomicU64::new(0),
            rootless,
            running: Mutex::new(HashMap::new()),
        };
        exec.clean_leftovers();
        Ok(exec)
    }

    /// The runtime binary in use.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// Whether containers run in runc's rootless mode (strata is not root):
    /// a user namespace maps the caller to the container's root (the only id
    /// there), no cgroup, devices bind-mounted from the host, and the root
    /// filesystem must be a plain directory ([`crate::RunSpec::rootfs`]).
    pub fn rootless(&self) -> bool {
        self.rootless.is_some()
    }

    /// `runc --root <state> [--rootless true]`.
    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.runtime);
        cmd.arg("--root").arg(&self.state_root);
        if self.rootless.is_some() {
            cmd.arg("--rootless").arg("true");
        }
        cmd
    }

    /// Kills every container this executor is running; their `run` calls
    /// clean up and return [`RunError::Cancelled`]. Call it from a SIGINT
    /// handler.
    pub fn cancel_all(&self) {
        let ids: Vec<String> = {
            let mut running = lock(&self.running);
            running.values_mut().for_each(|c| *c = true);
            running.keys().cloned().collect()
        };
        for id in ids {
            self.runc_quiet(&["kill", &id, "KILL"]);
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        let prefix: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_+-.".contains(c) { c } else { '-' })
            .collect();
        let prefix = if prefix.is_empty() { "strata" } else { &prefix };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{n}-{}", std::process::id(), random_hex())
    }

    /// Runs runc with `args`, ignoring failures: for best-effort cleanup.
    fn runc_quiet(&self, args: &[&str]) -> bool {
        self.runc()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Removes what killed strata processes left behind: their runc
    /// containers, overlay mounts and run directories. Best effort: a
    /// leftover that cannot be removed must not stop a build.
    fn clean_leftovers(&self) {
        if let Ok(entries) = fs::read_dir(&self.runs_dir) {
            for entry in entries.flatten() {
                let dir = entry.path();
                if owner_alive(&dir) {
                    continue;
                }
                let id = entry.file_name().to_string_lossy().into_owned();
                tracing::info!(%id, "removing leftover RUN container of a dead strata process");
                self.runc_quiet(&["delete", "--force", &id]);
                let _ = nix::mount::umount2(&dir.join("rootfs"), MntFlags::MNT_DETACH);
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), "could not remove leftover run dir: {e}");
                }
            }
        }
        // runc state without a run directory: its owner died between removing
        // one and the other, or the run directory was removed by hand.
        if let Ok(entries) = fs::read_dir(&self.state_root) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !self.runs_dir.join(&id).exists() {
                    self.runc_quiet(&["delete", "--force", &id]);
                }
            }
        }
    }
}

impl Executor for RuncExecutor {
    fn run(
        &self,
        spec: &RunSpec,
        out: &mut dyn FnMut(OutputChunk),
    ) -> Result<RunOutcome, RunError> {
        validate(spec)?;
        if let Some((euid, _)) = self.rootless
            && spec.rootfs.is_none()
        {
            return Err(RunError::RootlessNeedsRootfs { euid });
        }
        let id = self.next_id(&spec.id_prefix);
        let run_dir = self.runs_dir.join(&id);
        mkdir_private(&run_dir)?;
        let mut guard = RunGuard {
            exec: self,
            id: id.clone(),
            run_dir: run_dir.clone(),
            merged: run_dir.join("rootfs"),
            mounted: false,
            child: None,
        };
        fs::write(run_dir.join("owner"), owner_token(std::process::id())?)
            .map_err(|e| RunError::io("writing", run_dir.join("owner"), e))?;

        let merged = match &spec.rootfs {
            Some(rootfs) => rootfs.clone(),
            None => {
                let merged = guard.merged.clone();
                mkdir_private(&merged)?;
                mount_overlay(spec, &run_dir, &merged)?;
                guard.mounted = true;
                merged
            }
        };

        let user = resolve_user(&merged, &spec.user)?;
        if let Some((euid, _)) = self.rootless
            && (user.uid != 0 || user.gid != 0)
        {
            return Err(RunError::RootlessUnmappedId {
                euid,
                what: "USER",
                uid: user.uid,
                gid: user.gid,
            });
        }
        let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
        create_cwd(&merged, cwd)?;
        let hostname = if spec.hostname.is_empty() { DEFAULT_HOSTNAME } else { &spec.hostname };
        let extra_mounts = prepare_mounts(spec, &run_dir, hostname, self.rootless)?;
        let targets: Vec<String> = ["/proc", "/dev", "/sys"]
            .iter()
            .map(|s| s.to_string())
            .chain(extra_mounts.iter().map(|m| m.destination().to_string_lossy().into_owned()))
            .collect();
        let stubs = MountStubs::before(&merged, &targets)
            .map_err(|e| RunError::io("inspecting mount points in", &merged, e))?;

        let config = spec::build(ConfigInput {
            rootfs: &merged,
            args: &spec.args,
            env: &spec.env,
            cwd,
            user: &user,
            hostname,
            network: spec.network,
            cgroup: &id,
            extra_mounts,
            rootless: self.rootless,
        })?;
        let config_path = run_dir.join("config.json");
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| RunError::InvalidSpec(format!("serialising config.json: {e}")))?;
        fs::write(&config_path, json).map_err(|e| RunError::io("writing", &config_path, e))?;

        let (status, tail) = guard.run_container(out)?;
        let exit_code = exit_code(status);
        // Read before the guard removes the run dir and the registration.
        let cancelled = lock(&self.running).get(&id).copied().unwrap_or(false);
        let started = run_dir.join("pid").exists();
        let runc_errors = runc_log_errors(&run_dir.join("runc.log"));

        // Clean the upper dir on every path, so even a failed step leaves
        // only what the command wrote.
        stubs.remove_stubs().map_err(|e| RunError::io("removing mount points from", &merged, e))?;
        guard.unmount()?;
        if spec.rootfs.is_none() {
            stubs.prune_upper(&spec.upper).map_err(|e| {
                RunError::io("cleaning copied-up mount point parents in", &spec.upper, e)
            })?;
        }
        drop(guard);

        if cancelled {
            return Err(RunError::Cancelled { id });
        }
        if exit_code != 0 && !started {
            // The container never started, so this is runc's failure, not the command's.
            let message = runc_errors.unwrap_or_else(|| tail.lines().join("\n"));
            if let Some((euid, _)) = self.rootless
                && userns_denied(&message)
            {
                return Err(RunError::RootlessUnavailable {
                    euid,
                    reason: format!("runc could not create the user namespace: {message}"),
                    fix: USERNS_FIX.to_owned(),
                });
            }
            return Err(RunError::Runtime { id, message });
        }
        Ok(RunOutcome { exit_code, tail: tail.lines() })
    }
}

/// Undoes everything a run set up, also when `run` returns early or panics.
struct RunGuard<'a> {
    exec: &'a RuncExecutor,
    id: String,
    run_dir: PathBuf,
    merged: PathBuf,
    mounted: bool,
    child: Option<Child>,
}

impl RunGuard<'_> {
    /// Starts `runc run`, streams its output, and waits for it.
    fn run_container(
        &mut self,
        out: &mut dyn FnMut(OutputChunk),
    ) -> Result<(ExitStatus, OutputTail), RunError> {
        let mut cmd = self.exec.runc();
        cmd.arg("--log")
            .arg(self.run_dir.join("runc.log"))
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(&self.run_dir)
            .arg("--pid-file")
            .arg(self.run_dir.join("pid"))
            .arg(&self.id)
            .stdin(Stdio::null())
            // `runc run` (not detached) copies the container's stdout and
            // stderr through pipes of its own anyway, so one shared pipe here
            // would not keep their relative order; separate pipes at least
            // tell the caller which stream a chunk came from.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        lock(&self.exec.running).insert(self.id.clone(), false);
        let mut child = cmd.spawn().map_err(|e| RunError::io("starting", &self.exec.runtime, e))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        self.child = Some(child);

        let mut tail = OutputTail::new(TAIL_LINES);
        let (tx, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
        std::thread::scope(|scope| {
            for (stream, pipe) in [
                (Stream::Stdout, stdout.map(|p| Box::new(p) as Box<dyn Read + Send>)),
                (Stream::Stderr, stderr.map(|p| Box::new(p) as Box<dyn Read + Send>)),
            ] {
                let (Some(mut pipe), tx) = (pipe, tx.clone()) else {
                    continue;
                };
                let id = &self.id;
                scope.spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match pipe.read(&mut buf) {
                            // EOF: runc and every process of the container
                            // (killed with the PID namespace's init) are gone.
                            Ok(0) => break,
                            Ok(n) => {
                                if tx.send((stream, buf[..n].to_vec())).is_err() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                tracing::warn!(%id, "reading container output: {e}");
                                break;
                            }
                        }
                    }
                });
            }
            drop(tx);
            // The callback runs on the caller's thread: it need not be Send.
            for (stream, bytes) in rx {
                tail.push(stream, &bytes);
                out(OutputChunk { stream, bytes });
            }
        });
        let status = match self.child.as_mut() {
            Some(child) => {
                child.wait().map_err(|e| RunError::io("waiting for", &self.exec.runtime, e))?
            }
            None => {
                return Err(RunError::InvalidSpec("internal: runc child vanished".to_owned()));
            }
        };
        self.child = None;
        Ok((status, tail))
    }

    /// Unmounts the overlay so the upper directory is final.
    fn unmount(&mut self) -> Result<(), RunError> {
        if !self.mounted {
            return Ok(());
        }
        nix::mount::umount2(&self.merged, MntFlags::empty())
            .map_err(|e| RunError::io("unmounting the overlay at", &self.merged, e.into()))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killing the container's init tears down its PID namespace;
            // killing runc as well makes sure `wait` returns.
            self.exec.runc_quiet(&["kill", &self.id, "KILL"]);
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.exec.state_root.join(&self.id).exists() {
            self.exec.runc_quiet(&["delete", "--force", &self.id]);
        }
        if self.mounted {
            // Lazy: a straggler holding the mount must not keep it forever.
            match nix::mount::umount2(&self.merged, MntFlags::MNT_DETACH) {
                Ok(()) => self.mounted = false,
                Err(e) => tracing::warn!(path = %self.merged.display(), "unmounting overlay: {e}"),
            }
        }
        lock(&self.exec.running).remove(&self.id);
        // Never delete through a still-mounted overlay: that would write
        // whiteouts into the caller's upper directory.
        if !self.mounted
            && let Err(e) = fs::remove_dir_all(&self.run_dir)
        {
            tracing::warn!(path = %self.run_dir.display(), "removing run dir: {e}");
        }
    }
}

fn validate(spec: &RunSpec) -> Result<(), RunError> {
    if spec.args.is_empty() {
        return Err(RunError::InvalidSpec("RUN needs a command (args is empty)".to_owned()));
    }
    if let Some(rootfs) = &spec.rootfs {
        if !rootfs.is_dir() {
            return Err(RunError::InvalidSpec(format!(
                "root filesystem directory {rootfs:?} does not exist"
            )));
        }
    } else {
        for (what, dir) in [("upper", &spec.upper), ("work", &spec.work)] {
            if !dir.is_dir() {
                return Err(RunError::InvalidSpec(format!(
                    "overlay {what} directory {dir:?} does not exist: create an empty directory"
                )));
            }
        }
    }
    for m in &spec.mounts {
        let t = m.target();
        if !t.starts_with('/') {
            return Err(RunError::InvalidSpec(format!(
                "mount target {t:?} must be an absolute path"
            )));
        }
        if crate::rootpath::lexical_rel(t).as_os_str().is_empty() {
            return Err(RunError::InvalidSpec(format!(
                "mount target {t:?} would cover the whole root filesystem"
            )));
        }
    }
    Ok(())
}

/// Mounts overlay(lowers, upper, work) at `merged`.
fn mount_overlay(spec: &RunSpec, run_dir: &Path, merged: &Path) -> Result<(), RunError> {
    let mut lowers: Vec<PathBuf> = spec.lowers.clone();
    if lowers.is_empty() {
        // overlayfs needs at least one lower.
        let empty = run_dir.join("empty");
        mkdir_private(&empty)?;
        lowers.push(empty);
    }
    for dir in lowers.iter().chain([&spec.upper, &spec.work]) {
        let s = dir.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            return Err(RunError::InvalidSpec(format!(
                "overlay directory {dir:?} contains ',', ':' or '\\', which overlay mount \
                 options cannot carry: use a state directory without them"
            )));
        }
        if !dir.is_dir() {
            return Err(RunError::InvalidSpec(format!(
                "overlay lower directory {dir:?} does not exist"
            )));
        }
    }
    let data = |lowers: &[PathBuf]| {
        let lower =
            lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":");
        format!(
            "lowerdir={lower},upperdir={},workdir={}",
            spec.upper.display(),
            spec.work.display()
        )
    };
    let mut options = data(&lowers);
    if options.len() > MAX_MOUNT_DATA - 40 {
        // Too long for one page: go through short symlinks, as Docker's overlay2 does.
        let links = run_dir.join("l");
        mkdir_private(&links)?;
        let mut short = Vec::with_capacity(lowers.len());
        for (i, l) in lowers.iter().enumerate() {
            let link = links.join(format!("{i:x}"));
            std::os::unix::fs::symlink(l, &link)
                .map_err(|e| RunError::io("creating lower symlink", &link, e))?;
            short.push(link);
        }
        options = data(&short);
        if options.len() > MAX_MOUNT_DATA - 40 {
            return Err(RunError::InvalidSpec(format!(
                "{} lower layers do not fit into one overlay mount: squash the base image \
                 or use a shorter state directory",
                lowers.len()
            )));
        }
    }
    // Force the plain on-disk format the layer differ understands: no
    // metadata-only copy-ups, no redirect xattrs for renamed directories
    // (renaming a lower directory then copies it, as with Docker), no index.
    let strict = format!("{options},index=off,metacopy=off,redirect_dir=off");
    let mount = |data: &str| {
        nix::mount::mount(Some("overlay"), merged, Some("overlay"), MsFlags::empty(), Some(data))
    };
    match mount(&strict) {
        Ok(()) => Ok(()),
        // Kernels before 4.19 do not know these options; their defaults are the same.
        Err(nix::Error::EINVAL) => mount(&options),
        Err(e) => Err(e),
    }
    .map_err(|source| RunError::OverlayMount { merged: merged.to_path_buf(), source })
}

/// Creates the working directory as BuildKit does: root-owned, 0755, inside the rootfs.
fn create_cwd(merged: &Path, cwd: &str) -> Result<(), RunError> {
    if !cwd.starts_with('/') {
        return Err(RunError::InvalidSpec(format!("working directory {cwd:?} must be absolute")));
    }
    let real = resolve_in_root(merged, cwd)
        .map_err(|e| RunError::io("resolving working directory", merged.join(&cwd[1..]), e))?;
    let mut missing = Vec::new();
    let mut p = real.as_path();
    while p != merged && fs::symlink_metadata(p).is_err() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for dir in missing.iter().rev() {
        fs::create_dir(dir).map_err(|e| RunError::io("creating working directory", dir, e))?;
        // Explicit chmod: the result must not depend on strata's umask.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| RunError::io("chmod of working directory", dir, e))?;
    }
    Ok(())
}

/// Writes /etc/hosts, /etc/hostname, /etc/resolv.conf and secrets into the
/// run dir and returns all non-standard mounts.
fn prepare_mounts(
    spec: &RunSpec,
    run_dir: &Path,
    hostname: &str,
    rootless: Option<(u32, u32)>,
) -> Result<Vec<OciMount>, RunError> {
    let write = |name: &str, contents: &[u8]| -> Result<PathBuf, RunError> {
        let path = run_dir.join(name);
        fs::write(&path, contents).map_err(|e| RunError::io("writing", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(|e| RunError::io("chmod", &path, e))?;
        Ok(path)
    };
    let hosts = write(
        "hosts",
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            .as_bytes(),
    )?;
    let hostname_file = write("hostname", format!("{hostname}\n").as_bytes())?;
    let resolv = write("resolv.conf", &resolv_conf())?;

    // Read-only binds, so the command cannot write these into the layer either.
    let ro_file = ["rbind", "ro", "nosuid", "nodev", "noexec"];
    let mut mounts = vec![
        spec::mount("/etc/hosts", "bind", hosts, &ro_file)?,
        spec::mount("/etc/hostname", "bind", hostname_file, &ro_file)?,
        spec::mount("/etc/resolv.conf", "bind", resolv, &ro_file)?,
    ];
    let mut secret_n = 0usize;
    for m in &spec.mounts {
        match m {
            Mount::Bind { source, target, readonly } => {
                if !source.exists() {
                    return Err(RunError::InvalidSpec(format!(
                        "bind mount source {source:?} does not exist"
                    )));
                }
                let mode = if *readonly { "ro" } else { "rw" };
                mounts.push(spec::mount(target, "bind", source, &["rbind", mode])?);
            }
            Mount::Tmpfs { target, size } => {
                let mut opts =
                    vec!["nosuid".to_owned(), "nodev".to_owned(), "mode=1777".to_owned()];
                if let Some(size) = size {
                    opts.push(format!("size={size}"));
                }
                let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
                mounts.push(spec::mount(target, "tmpfs", "tmpfs", &opts)?);
            }
            Mount::Secret { target, contents, mode, uid, gid } => {
                let dir = run_dir.join("secrets");
                mkdir_private(&dir)?;
                let path = dir.join(secret_n.to_string());
                secret_n += 1;
                fs::write(&path, &contents.0)
                    .map_err(|e| RunError::io("writing secret", &path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode & 0o7777))
                    .map_err(|e| RunError::io("chmod of secret", &path, e))?;
                match rootless {
                    None => std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                        .map_err(|e| RunError::io("chown of secret", &path, e))?,
                    // The file is the caller's already, which is the container's 0:0.
                    Some(_) if *uid == 0 && *gid == 0 => {}
                    Some((euid, _)) => {
                        return Err(RunError::RootlessUnmappedId {
                            euid,
                            what: "a secret mount's owner",
                            uid: *uid,
                            gid: *gid,
                        });
                    }
                }
                mounts.push(spec::mount(target, "bind", path, &ro_file)?);
            }
        }
    }
    Ok(mounts)
}

/// The host's resolv.conf, or public resolvers if it has none (as BuildKit).
fn resolv_conf() -> Vec<u8> {
    match fs::read("/etc/resolv.conf") {
        Ok(bytes) if String::from_utf8_lossy(&bytes).contains("nameserver") => bytes,
        _ => b"nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_vec(),
    }
}

/// How to allow unprivileged user namespaces, for error messages.
const USERNS_FIX: &str = "as root run `sysctl -w kernel.unprivileged_userns_clone=1` (Debian, \
    Ubuntu before 23.10), `sysctl -w user.max_user_namespaces=15000`, and on Ubuntu 23.10+ \
    `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`; inside a container, its \
    seccomp profile or runtime must allow unshare(CLONE_NEWUSER)";

/// Why the kernel will not let this process create a user namespace, read
/// from its knobs, with how to change it; `None` if nothing forbids it.
fn userns_blocker() -> Option<(String, String)> {
    let knob = |path: &str| fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    let checks = [
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "0",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ),
        ("/proc/sys/user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        ),
    ];
    checks.into_iter().find_map(|(path, bad, fix)| {
        (knob(path).as_deref() == Some(bad))
            .then(|| (format!("{path} is {bad}"), format!("as root run `{fix}`")))
    })
}

/// Whether runc's error says the kernel refused the user namespace.
fn userns_denied(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("operation not permitted") || m.contains("permission denied"))
        && (m.contains("unshare") || m.contains("user namespace") || m.contains("newuser"))
}

/// runc's error messages from its JSON log, if any.
fn runc_log_errors(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

fn find_runtime(runtime: Option<PathBuf>) -> Result<PathBuf, RunError> {
    if let Some(path) = runtime {
        let ok = fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        return if ok { Ok(path) } else { Err(RunError::RuntimeNotExecutable { path }) };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(RUNC_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join("runc"))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or(RunError::RuntimeNotFound)
}

fn mkdir_private(dir: &Path) -> Result<(), RunError> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(RunError::io("creating directory", dir, e)),
    }
}

/// "<pid> <start time>" identifies a process even if its pid is reused later.
fn owner_token(pid: u32) -> Result<String, RunError> {
    let start = process_start_time(pid).ok_or_else(|| {
        RunError::io("reading", format!("/proc/{pid}/stat"), io::ErrorKind::NotFound.into())
    })?;
    Ok(format!("{pid} {start}\n"))
}

/// Whether the strata process that owns the run dir `dir` still lives.
fn owner_alive(dir: &Path) -> bool {
    let Ok(token) = fs::read_to_string(dir.join("owner")) else {
        // Being created right now by a live process, or a crash before the
        // owner was written: only the latter is old.
        return fs::metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map(|d| d.as_secs() < 60).unwrap_or(true))
            .unwrap_or(false);
    };
    let mut parts = token.split_whitespace();
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    process_start_time(pid).as_deref() == Some(start)
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 4];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        // Uniqueness already comes from pid + counter; this only guards
        // against pid reuse, so the clock is good enough here.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the map consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id();
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(me), process_start_time(me));
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("owner"), owner_token(me).unwrap()).unwrap();
        assert!(owner_alive(dir.path()));
        fs::write(dir.path().join("owner"), format!("{me} 1\n")).unwrap();
        assert!(!owner_alive(dir.path()));
    }

    #[test]
    fn userns_refusals_are_recognised() {
        assert!(userns_denied(
            "nsexec-1[42]: failed to unshare namespaces: Operation not permitted"
        ));
        assert!(userns_denied("unshare(CLONE_NEWUSER): permission denied"));
        assert!(!userns_denied("exec: \"/bin/sh\": stat /bin/sh: no such file or directory"));
        assert!(!userns_denied("unshare: invalid argument"));
    }

    #[test]
    fn exit_codes() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
