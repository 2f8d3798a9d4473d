//! RUN: builds the container spec (command, env, user, mounts), executes it through the
//! OCI runtime on an overlay of the chain's snapshots, and turns the upper directory into
//! a layer.

use std::path::PathBuf;

use serde_json::json;
use strata_dockerfile::{self as df, CommandLine, MountType, StageScope};
use strata_layer::WriteDirOptions;
use strata_run::{Executor, Mount, Network, OutputChunk, RunSpec, SecretBytes, Stream};

use crate::copy::{self, Content, CopyRequest, Planned};
use crate::error::BuildError;
use crate::fsview::{DirView, FsView, LayeredView};
use crate::progress::Step;
use crate::solver::{ImgState, Solver};
use crate::state::{ChainLayer, StepRecord};

/// A RUN step ready to execute.
pub(crate) struct Prepared {
    pub(crate) spec: RunSpec,
    /// The mount definitions as they enter the cache key (secret contents never do).
    pub(crate) key_mounts: Vec<serde_json::Value>,
    /// Extra graph inputs (stages bind-mounted from).
    pub(crate) extra_inputs: Vec<(usize, String)>,
    /// Temp dirs holding materialised bind sources; dropped after the run.
    _temps: Vec<tempfile::TempDir>,
    /// Locks of `sharing=locked` cache mounts, held for the run.
    _locks: Vec<std::fs::File>,
}

fn heredoc_script(cmd: &str, run: &df::Run) -> Option<String> {
    // `RUN <<EOF` alone: the heredoc body is the script (BuildKit runs it with the shell).
    let t = cmd.trim();
    if run.heredocs.len() == 1 && t.starts_with("<<") && !t.contains(char::is_whitespace) {
        return Some(run.heredocs[0].body());
    }
    None
}

fn run_args(run: &df::Run, shell: &[String]) -> Vec<String> {
    match &run.command {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let script = match heredoc_script(s, run) {
                Some(body) => body,
                None if run.heredocs.is_empty() => s.clone(),
                // `cmd <<EOF …`: hand the whole heredoc to the shell, which implements it.
                None => {
                    let mut script = s.clone();
                    script.push('\n');
                    for h in &run.heredocs {
                        script.push_str(&h.content);
                        if !h.content.ends_with('\n') {
                            script.push('\n');
                        }
                        script.push_str(&h.name);
                        script.push('\n');
                    }
                    script
                }
            };
            let mut v = shell.to_vec();
            v.push(script);
            v
        }
    }
}

/// Writes planned entries as real files under `root` (for bind mounts of filtered or
/// layered sources, which cannot be bind-mounted directly).
fn materialize(entries: &[Planned], root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for p in entries {
        let path = root.join(&p.dest);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match &p.content {
            Content::Dir => std::fs::create_dir_all(&path)?,
            Content::File(e) => {
                std::fs::copy(&e.host_path, &path)?;
            }
            Content::Inline(b) => std::fs::write(&path, b)?,
            Content::Symlink(t) => std::os::unix::fs::symlink(t, &path)?,
            Content::Hardlink(t) => std::fs::hard_link(root.join(t), &path)?,
        }
        if !matches!(p.content, Content::Symlink(_)) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(p.mode))?;
        }
    }
    Ok(())
}

pub(crate) fn prepare(
    solver: &mut Solver<'_>,
    st: &ImgState,
    run: &df::Run,
    scope: &StageScope,
    what: &str,
) -> Result<Prepared, BuildError> {
    let err = |message: String| BuildError::Source { instruction: what.to_owned(), message };
    let shell =
        st.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    let args = run_args(run, &shell);
    let env: Vec<String> = scope.run_env().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cwd = if st.config.config.working_dir.is_empty() {
        "/".to_owned()
    } else {
        st.config.config.working_dir.clone()
    };
    let network = match run.network.as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(err(format!("--network={other}: expected default, none or host")));
        }
    };
    if let Some(sec) = &run.security
        && sec != "sandbox"
    {
        return Err(err(format!("--security={sec} is not supported (only sandbox)")));
    }
    let mut mounts = Vec::new();
    let mut key_mounts = Vec::new();
    let mut extra_inputs = Vec::new();
    let mut temps = Vec::new();
    let mut locks = Vec::new();
    let expander = scope.expander();
    for raw in &run.mounts {
        let m = df::Mount::parse(raw, &expander).map_err(|e| err(format!("--mount={raw}: {e}")))?;
        let target = m.target.clone().unwrap_or_default();
        let abs_target = if target.starts_with('/') {
            target.clone()
        } else {
            format!("{}/{target}", cwd.trim_end_matches('/'))
        };
        match m.kind {
            MountType::Cache => {
                if target.is_empty() {
                    return Err(err(format!("--mount={raw}: a cache mount needs target=")));
                }
                let id = m.id.clone().unwrap_or_else(|| abs_target.clone());
                let dir = solver.state.cache_mount_dir(&id);
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
                        op: "create cache mount",
                        path: dir.clone(),
                        source,
                    })?;
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        &dir,
                        std::fs::Permissions::from_mode(m.mode.unwrap_or(0o755)),
                    );
                    if m.uid.is_some() || m.gid.is_some() {
                        let _ = std::os::unix::fs::chown(&dir, m.uid, m.gid);
                    }
                }
                if matches!(m.sharing, Some(df::Sharing::Locked)) {
                    let lock_path = dir.with_extension("lock");
                    let f = std::fs::File::create(&lock_path).map_err(|source| BuildError::Io {
                        op: "create",
                        path: lock_path.clone(),
                        source,
                    })?;
                    f.lock().map_err(|source| BuildError::Io {
                        op: "lock",
                        path: lock_path,
                        source,
                    })?;
                    locks.push(f);
                }
                mounts.push(Mount::Bind {
                    source: dir,
                    target: abs_target.clone(),
                    readonly: m.readonly,
                });
                key_mounts.push(json!({"type": "cache", "target": abs_target, "id": id, "ro": m.readonly,
                    "sharing": format!("{:?}", m.sharing), "mode": m.mode, "uid": m.uid, "gid": m.gid}));
            }
            MountType::Bind => {
                if target.is_empty() {
                    return Err(err(format!("--mount={raw}: a bind mount needs target=")));
                }
                let source = m.source.clone().unwrap_or_else(|| "/".into());
                let (view, src_id): (std::sync::Arc<dyn FsView + Send + Sync>, serde_json::Value) =
                    match &m.from {
                        None => match &solver.context {
                            Some(c) => (c.clone(), json!("context")),
                            None => {
                                return Err(err("--mount=type=bind needs a build context".into()));
                            }
                        },
                        Some(from) => {
                            let idx = from.parse::<usize>().ok().or_else(|| {
                                solver.df.stages.iter().position(|s| {
                                    s.name().is_some_and(|n| n.eq_ignore_ascii_case(from))
                                })
                            });
                            match (
                                idx.and_then(|i| solver.stage(i)),
                                solver.req.build_contexts.get(from),
                            ) {
                                (Some(s), _) => {
                                    if let Some(n) = s.node {
                                        extra_inputs.push((n, String::new()));
                                    }
                                    let lowers = solver.lower_dirs(&s.chain)?;
                                    (
                                        std::sync::Arc::new(LayeredView::new(lowers)),
                                        json!({"stage": s.key}),
                                    )
                                }
                                (None, Some(crate::request::NamedContext::Dir(d))) => (
                                    std::sync::Arc::new(DirView::new(d.clone(), None)),
                                    json!({"context": from}),
                                ),
                                _ => {
                                    return Err(err(format!(
                                        "--mount from={from}: no such stage or build context"
                                    )));
                                }
                            }
                        }
                    };
                let req = CopyRequest {
                    sources: vec![source.clone()],
                    inline: vec![],
                    dest: "/".into(),
                    workdir: "/".into(),
                    chown: None,
                    chmod: None,
                    keep_owner: true,
                    exclude: vec![],
                    created_mtime: 0,
                    clamp_mtime: None,
                };
                let mut no = |_: &str| true;
                let mut planned = copy::plan(view.as_ref(), &req, &mut no, what)?;
                let sum = copy::checksum(&mut planned, &mut solver.checksums, true)
                    .map_err(|e| err(format!("--mount={raw}: {e}")))?;
                let tmp = solver.state.temp_dir("bind-")?;
                let root = tmp.path().join("src");
                std::fs::create_dir(&root).map_err(|source| BuildError::Io {
                    op: "create",
                    path: root.clone(),
                    source,
                })?;
                materialize(&planned, &root).map_err(|e| err(format!("--mount={raw}: {e}")))?;
                // A file source mounts as a file. Ask the source itself: a directory holding
                // a single file also plans to a single entry, and must still mount as a dir.
                let source_is_dir = matches!(crate::fsview::resolve(view.as_ref(), &source, true),
                        Ok(Some((_, e))) if e.kind() == crate::fsview::Kind::Dir);
                let src_path = match planned.first() {
                    Some(p) if !source_is_dir && planned.len() == 1 => root.join(&p.dest),
                    _ => root.clone(),
                };
                temps.push(tmp);
                let readonly = m.readonly
                    || !raw.split(',').any(|f| {
                        matches!(f.trim(), "rw" | "readwrite" | "rw=true" | "readwrite=true")
                    });
                mounts.push(Mount::Bind { source: src_path, target: abs_target.clone(), readonly });
                key_mounts.push(json!({"type": "bind", "target": abs_target, "source": source, "from": src_id, "ro": readonly, "content": sum}));
            }
            MountType::Tmpfs => {
                if target.is_empty() {
                    return Err(err(format!("--mount={raw}: a tmpfs mount needs target=")));
                }
                mounts.push(Mount::Tmpfs { target: abs_target.clone(), size: m.size });
                key_mounts.push(json!({"type": "tmpfs", "target": abs_target, "size": m.size}));
            }
            MountType::Secret => {
                let id = m.id.clone().or_else(|| {
                    m.target.as_ref().and_then(|t| t.rsplit('/').next().map(str::to_owned))
                });
                let Some(id) = id else {
                    return Err(err(format!("--mount={raw}: a secret mount needs id= or target=")));
                };
                let target = m.target.clone().unwrap_or_else(|| strata_run::secret_target(&id));
                let Some(src) = solver.req.secrets.get(&id) else {
                    if m.required {
                        return Err(err(format!(
                            "secret {id:?} is required but was not given; pass --secret id={id},src=FILE"
                        )));
                    }
                    continue;
                };
                let contents = std::fs::read(src).map_err(|source| BuildError::Io {
                    op: "read secret",
                    path: src.clone(),
                    source,
                })?;
                mounts.push(Mount::Secret {
                    target: target.clone(),
                    contents: SecretBytes(contents),
                    mode: m.mode.unwrap_or(0o400),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                });
                // The secret's value never enters the key (as BuildKit): only where it is.
                key_mounts.push(json!({"type": "secret", "id": id, "target": target}));
            }
            MountType::Ssh => {
                return Err(err("--mount=type=ssh is not supported yet".into()));
            }
        }
    }
    let spec = RunSpec {
        args,
        env,
        cwd,
        user: st.config.config.user.clone(),
        hostname: strata_run::DEFAULT_HOSTNAME.into(),
        network,
        lowers: vec![],
        upper: PathBuf::new(),
        work: PathBuf::new(),
        rootfs: None,
        mounts,
        id_prefix: "strata".into(),
    };
    Ok(Prepared { spec, key_mounts, extra_inputs, _temps: temps, _locks: locks })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    solver: &mut Solver<'_>,
    st: &ImgState,
    mut prepared: Prepared,
    executor: &dyn Executor,
    step: &Step<'_>,
    what: &str,
    key: &str,
    created: &str,
) -> Result<StepRecord, BuildError> {
    if !strata_layer::apply::is_root() {
        return execute_copy(solver, st, prepared, executor, step, what, key, created);
    }
    let lowers = solver.lower_dirs(&st.chain)?;
    let tmp = solver.state.temp_dir("run-")?;
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    for d in [&upper, &work] {
        std::fs::create_dir(d).map_err(|source| BuildError::Io {
            op: "create",
            path: d.clone(),
            source,
        })?;
    }
    prepared.spec.lowers = lowers.clone();
    prepared.spec.upper = upper.clone();
    prepared.spec.work = work;
    run_logged(executor, &prepared, step, what)?;
    let opts = WriteDirOptions { clamp_mtime: solver.req.source_date_epoch, ..Default::default() };
    let (rec, added) = record_change(solver, st, key, created, what, |w| {
        strata_layer::diff_overlay_upper(&upper, &lowers, w, &opts, &|_, _| false)
    })?;
    if let Some(diff_id) = added {
        // The upper dir is already this layer in overlayfs form: keep it as its snapshot.
        crate::snapshot::adopt(solver.state, &diff_id, upper);
    }
    Ok(rec)
}

/// Writes the change a step made as a layer (`diff` emits the tar entries), extends the
/// chain when the change is not empty, and stores the step's record. Returns the record
/// and the new layer's diffID, if a layer was added.
fn record_change<F>(
    solver: &Solver<'_>,
    st: &ImgState,
    key: &str,
    created: &str,
    what: &str,
    diff: F,
) -> Result<(StepRecord, Option<strata_oci::Digest>), BuildError>
where
    F: FnOnce(
        &mut strata_layer::LayerWriter<strata_layer::LayerEncoder<strata_oci::BlobWriter>>,
    ) -> Result<(), strata_layer::DiffError>,
{
    let (layer, entries) = solver.state.write_layer(&solver.layer_compression, |w| {
        diff(w).map_err(|e| BuildError::Source {
            instruction: what.to_owned(),
            message: format!("capturing the change: {e}"),
        })
    })?;
    let mut chain = st.chain.clone();
    let added = (entries > 0).then(|| layer.diff_id.clone());
    if let Some(diff_id) = &added {
        chain.push(ChainLayer { diff_id: diff_id.clone(), created_at: created.to_owned() });
    }
    let rec = StepRecord { key: key.to_owned(), created_at: created.to_owned(), chain };
    solver.state.put_record(&rec)?;
    Ok((rec, added))
}

/// RUN without root (the copy fallback): overlayfs cannot be mounted and the snapshots
/// are in AUFS form, so the chain is applied into a plain directory twice, the command
/// changes one copy in place (runc rootless), and the layer is the difference of the two.
#[allow(clippy::too_many_arguments)]
fn execute_copy(
    solver: &mut Solver<'_>,
    st: &ImgState,
    mut prepared: Prepared,
    executor: &dyn Executor,
    step: &Step<'_>,
    what: &str,
    key: &str,
    created: &str,
) -> Result<StepRecord, BuildError> {
    let tmp = solver.state.temp_dir("run-")?;
    // Read-only directories the command or the layers made would stop the temp dir's
    // removal (an unprivileged owner cannot delete inside them).
    let _writable = MakeRemovable(tmp.path().to_path_buf());
    let before = tmp.path().join("before");
    let after = tmp.path().join("after");
    for dir in [&before, &after] {
        std::fs::create_dir(dir).map_err(|source| BuildError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        for layer in &st.chain {
            let tar = solver.state.open_layer_tar(&layer.diff_id)?;
            strata_layer::apply_layer(tar, dir, &strata_layer::ApplyOptions::default())?;
        }
    }
    prepared.spec.rootfs = Some(after.clone());
    run_logged(executor, &prepared, step, what)?;
    // Everything on disk belongs to the caller, who is the container's root (the only
    // id its user namespace maps), so that is the owner in the layer too.
    let opts = WriteDirOptions {
        clamp_mtime: solver.req.source_date_epoch,
        uid: Some(0),
        gid: Some(0),
        ..Default::default()
    };
    // No snapshot is adopted: `after` is a full tree, not one layer's.
    let (rec, _) = record_change(solver, st, key, created, what, |w| {
        strata_layer::diff_trees(&before, &after, w, &opts)
    })?;
    Ok(rec)
}

/// Gives the owner write and search permission on every directory below a path when
/// dropped (best effort), so the tree can be removed without root.
struct MakeRemovable(PathBuf);

impl Drop for MakeRemovable {
    fn drop(&mut self) {
        crate::make_writable(&self.0);
    }
}

/// Runs the step, streaming its output lines to the progress display; a non-zero exit
/// is [`BuildError::RunFailed`] with the last lines.
fn run_logged(
    executor: &dyn Executor,
    prepared: &Prepared,
    step: &Step<'_>,
    what: &str,
) -> Result<(), BuildError> {
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let outcome = executor
        .run(&prepared.spec, &mut |chunk: OutputChunk| {
            let buf = &mut partial[usize::from(chunk.stream == Stream::Stderr)];
            buf.extend_from_slice(&chunk.bytes);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                step.log(String::from_utf8_lossy(&line).trim_end_matches('\n'));
            }
        })
        .map_err(|source| BuildError::Executor { instruction: what.to_owned(), source })?;
    for buf in &partial {
        if !buf.is_empty() {
            step.log(&String::from_utf8_lossy(buf));
        }
    }
    if outcome.exit_code != 0 {
        let tail = if outcome.tail.is_empty() {
            String::new()
        } else {
            format!(
                "\n{}",
                outcome.tail.iter().map(|l| format!("  > {l}")).collect::<Vec<_>>().join("\n")
            )
        };
        let command = prepared.spec.args.join(" ");
        return Err(BuildError::RunFailed {
            instruction: what.to_owned(),
            command,
            code: outcome.exit_code,
            tail,
        });
    }
    Ok(())
}
