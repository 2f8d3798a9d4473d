//! The solver: walks the stages a target needs, instruction by instruction, turning each
//! into a new image state. Layer-producing steps (COPY, ADD, RUN) are looked up by cache
//! key first in the state directory, then in imported caches, and executed only on a miss.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use strata_dockerfile::{
    self as df, Base, CommandLine, Dockerfile, Instruction, InstructionKind, StageScope,
};
use strata_layer::{Compression, CompressionOptions};
use strata_oci::Digest;

use crate::cacheio::Imports;
use crate::checksum::ChecksumCache;
use crate::copy::{self, CopyRequest};
use crate::error::BuildError;
use crate::fsview::{DirView, FsView, LayeredView};
use crate::image::{History, ImageConfig};
use crate::progress::Progress;
use crate::request::{BuildRequest, NamedContext};
use crate::state::{ChainLayer, StateDir, StepRecord};
use crate::{base, runstep, snapshot};

/// Version of the cache-key schema: bump when what a key covers changes, so an upgraded
/// strata never hits an entry computed under other rules.
pub(crate) const KEY_SCHEMA: &str = "strata.step.v1";

/// The image being built at some point of a stage.
#[derive(Debug, Clone)]
pub(crate) struct ImgState {
    /// Cache key of this state.
    pub(crate) key: String,
    /// Layers, bottom first.
    pub(crate) chain: Vec<ChainLayer>,
    /// Image config (history included).
    pub(crate) config: ImageConfig,
    /// The graph node that produced this state, if any.
    pub(crate) node: Option<usize>,
    /// Time stamp for history entries of metadata instructions.
    pub(crate) time: String,
}

/// One vertex of the build graph, as the cache exporter needs it.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Cache key (the record digest in an exported cache).
    pub(crate) key: String,
    /// Input slots: (node index, selector).
    pub(crate) inputs: Vec<Vec<(usize, String)>>,
    /// The result's layer chain (empty for roots).
    pub(crate) chain: Vec<ChainLayer>,
    /// Whether this node has a result (roots and empty steps have none).
    pub(crate) has_result: bool,
    /// When the step ran.
    pub(crate) created_at: String,
}

/// What a solve produced.
#[derive(Debug)]
pub(crate) struct Solved {
    pub(crate) graph: Vec<Node>,
    /// Nodes on the final result's lineage (what mode=min exports results for).
    pub(crate) final_lineage: Vec<usize>,
    pub(crate) hits: usize,
    pub(crate) misses: usize,
}

pub(crate) fn key_of(v: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Digest::of_bytes(&bytes).to_string()
}

pub(crate) fn now_rfc3339(epoch: Option<i64>) -> String {
    let t = match epoch {
        Some(s) => {
            time::OffsetDateTime::from_unix_timestamp(s).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        }
        None => time::OffsetDateTime::now_utc(),
    };
    strata_cache::GoTime::from_offset_date_time(t)
        .map(|g| g.to_rfc3339_nano())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn unix_of(t: &str) -> i64 {
    strata_cache::GoTime::parse(t).map(|g| (g.unix_nanos() / 1_000_000_000) as i64).unwrap_or(0)
}

pub(crate) struct Solver<'a> {
    pub(crate) req: &'a BuildRequest,
    pub(crate) state: &'a StateDir,
    pub(crate) progress: &'a Progress,
    pub(crate) imports: &'a Imports,
    pub(crate) df: &'a Dockerfile,
    pub(crate) context: Option<Arc<DirView>>,
    pub(crate) checksums: ChecksumCache,
    pub(crate) graph: Vec<Node>,
    node_by_key: HashMap<String, usize>,
    stages: HashMap<usize, ImgState>,
    named: HashMap<String, ImgState>,
    executor: Option<Arc<dyn strata_run::Executor>>,
    hits: usize,
    misses: usize,
    /// Compression of layers the build creates (what outputs use by default).
    pub(crate) layer_compression: CompressionOptions,
}

impl<'a> Solver<'a> {
    pub(crate) fn new(
        req: &'a BuildRequest,
        state: &'a StateDir,
        progress: &'a Progress,
        imports: &'a Imports,
        df: &'a Dockerfile,
        context: Option<Arc<DirView>>,
    ) -> Self {
        let checksums = match &req.context {
            Some(root) => ChecksumCache::load(&state.checksum_path(root)),
            None => ChecksumCache::in_memory(),
        };
        Self {
            req,
            state,
            progress,
            imports,
            df,
            context,
            checksums,
            graph: Vec::new(),
            node_by_key: HashMap::new(),
            stages: HashMap::new(),
            named: HashMap::new(),
            executor: None,
            hits: 0,
            misses: 0,
            layer_compression: CompressionOptions::new(Compression::Gzip),
        }
    }

    /// A finished stage's state.
    pub(crate) fn stage(&self, idx: usize) -> Option<ImgState> {
        self.stages.get(&idx).cloned()
    }

    fn node(&mut self, node: Node) -> usize {
        if let Some(&i) = self.node_by_key.get(&node.key) {
            return i;
        }
        self.graph.push(node);
        let i = self.graph.len() - 1;
        self.node_by_key.insert(self.graph[i].key.clone(), i);
        i
    }

    fn platform_args(&self) -> BTreeMap<String, String> {
        let p = &self.req.platform;
        let mut m = BTreeMap::new();
        for prefix in ["TARGET", "BUILD"] {
            m.insert(format!("{prefix}PLATFORM"), p.to_string());
            m.insert(format!("{prefix}OS"), p.os.clone());
            m.insert(format!("{prefix}ARCH"), p.architecture.clone());
            m.insert(format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default());
        }
        m
    }

    pub(crate) fn dockerfile_options(&self) -> df::BuildOptions {
        df::BuildOptions {
            build_args: self.req.build_args.clone(),
            target: self.req.target.clone(),
            platform_args: self.platform_args(),
        }
    }

    /// Solves the build; on failure, returns the error together with what was solved so
    /// far (the completed steps are still exported to the cache).
    pub(crate) fn solve(mut self) -> (Result<ImgState, BuildError>, Solved) {
        let result = self.solve_inner();
        self.checksums.save();
        if self.context.is_some() && self.checksums.hashed + self.checksums.reused > 0 {
            // buildx shows the context transfer; strata reads the context in place, so what
            // it reports is how much of it had to be hashed.
            self.progress.message(&format!(
                "context: {} files hashed, {} checksums reused (unchanged since the last build)",
                self.checksums.hashed, self.checksums.reused
            ));
        }
        let final_node = result.as_ref().ok().and_then(|s| s.node);
        let final_lineage = lineage(&self.graph, final_node);
        let solved =
            Solved { graph: self.graph, final_lineage, hits: self.hits, misses: self.misses };
        (result, solved)
    }

    fn solve_inner(&mut self) -> Result<ImgState, BuildError> {
        let opts = self.dockerfile_options();
        let plan = df::resolve(self.df, &opts)?;
        for name in &plan.unused_build_args {
            self.progress.warn(&format!(
                "build argument {name:?} was given with --build-arg but is not consumed by any ARG in the stages built"
            ));
        }
        let mut last = None;
        for rs in &plan.stages {
            let st = self.solve_stage(&plan, rs, &opts)?;
            self.stages.insert(rs.index, st.clone());
            last = Some(st);
        }
        last.ok_or_else(|| BuildError::Usage("the Dockerfile has no stages to build".into()))
    }

    fn base_state(
        &mut self,
        rs: &df::ResolvedStage,
        from_line: &str,
    ) -> Result<ImgState, BuildError> {
        match &rs.base {
            Base::Scratch => {
                let key = key_of(
                    &json!({"schema": KEY_SCHEMA, "platform": self.req.platform.to_string(), "op": "scratch"}),
                );
                Ok(ImgState {
                    key,
                    chain: vec![],
                    config: ImageConfig::scratch(&self.req.platform),
                    node: None,
                    time: now_rfc3339(Some(self.req.source_date_epoch.unwrap_or(0))),
                })
            }
            Base::Stage(i) => self
                .stages
                .get(i)
                .cloned()
                .ok_or_else(|| BuildError::Base(format!("stage {i} was not built before use"))),
            Base::Image(name) => self.named_state(name, from_line),
        }
    }

    /// The state a base image starts a stage with: its chain, config, and a root node
    /// keyed by its manifest digest (so a different base never hits a step).
    fn image_state(&mut self, img: base::BaseImage) -> ImgState {
        let key = key_of(&json!({
            "schema": KEY_SCHEMA,
            "platform": self.req.platform.to_string(),
            "op": "image",
            "manifest": img.manifest_digest.to_string(),
        }));
        let node = self.node(Node {
            key: key.clone(),
            inputs: vec![],
            chain: img.chain.clone(),
            has_result: false,
            created_at: img.time.clone(),
        });
        ImgState { key, chain: img.chain, config: img.config, node: Some(node), time: img.time }
    }

    /// The image state of a named context (`--build-context NAME=oci-layout://…`), else of
    /// the registry image `name`.
    fn named_state(&mut self, name: &str, what: &str) -> Result<ImgState, BuildError> {
        if let Some(s) = self.named.get(name) {
            return Ok(s.clone());
        }
        let ctx = self.req.build_contexts.get(name).cloned();
        let st = match ctx {
            Some(NamedContext::OciLayout { dir, tag, digest }) => {
                let step = self.progress.step(format!("[context {name}] load {}", dir.display()));
                let img = base::load_oci_layout(
                    self.state,
                    &dir,
                    tag.as_deref(),
                    digest.as_ref(),
                    &self.req.platform,
                )?;
                step.done();
                self.image_state(img)
            }
            Some(NamedContext::Dir(_)) => {
                return Err(BuildError::Base(format!(
                    "{what}: build context {name:?} is a directory; FROM needs an image (use --build-context {name}=oci-layout://DIR)"
                )));
            }
            None => {
                let image = strata_registry::ImageRef::parse(name)
                    .map_err(|e| BuildError::Base(format!("{what}: {e}")))?;
                let step = self.progress.step(format!("[internal] load metadata for {image}"));
                let registry = crate::remote::registry()?;
                let (img, top) = base::load_registry(
                    self.state,
                    &registry,
                    &image,
                    &self.req.platform,
                    self.req.pull,
                )
                .map_err(|e| match e {
                    BuildError::Registry(r) => BuildError::Base(format!("{what}: {r}")),
                    e => e,
                })?;
                tracing::debug!(%image, manifest = %top, "base image resolved");
                step.done();
                self.image_state(img)
            }
        };
        self.named.insert(name.to_owned(), st.clone());
        Ok(st)
    }

    fn solve_stage(
        &mut self,
        plan: &df::BuildPlan,
        rs: &df::ResolvedStage,
        opts: &df::BuildOptions,
    ) -> Result<ImgState, BuildError> {
        let stage = &self.df.stages[rs.index];
        if let Some(p) = &rs.platform
            && let Some(pp) = crate::Platform::parse(p)
            && !self.req.platform.runs(&pp)
        {
            return Err(BuildError::Usage(format!(
                "{}:{}: FROM --platform={p}: only the host platform {} can be built here",
                self.df.file, stage.from_instruction.line, self.req.platform
            )));
        }
        let mut st = self.base_state(rs, &stage.from_instruction.original)?;
        let history_start = st.config.history.len();
        let base_env: Vec<(String, String)> = st
            .config
            .config
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let mut scope = StageScope::new(self.df, plan, opts, &base_env);
        // Numbered as buildx shows them: every instruction counts, a non-scratch FROM adds
        // one to the total, and a lone unnamed stage has no name prefix (`[1/2] COPY …`).
        let total = stage.instructions.len() + usize::from(!matches!(rs.base, Base::Scratch));
        let prefix = if self.df.stages.len() == 1 && stage.name().is_none() {
            String::new()
        } else {
            format!("{} ", rs.display_name)
        };
        let mut cmd_set_here = false;
        for (i, ins) in stage.instructions.iter().enumerate() {
            let ins = scope.expand(ins)?;
            let label = format!("[{prefix}{}/{total}] {}", i + 1, ins.original);
            let what = format!("{}:{} {}", self.df.file, ins.line, first_line(&ins.original));
            self.apply(&mut st, &ins, &scope, &label, &what, &mut cmd_set_here)?;
        }
        if self.req.source_date_epoch.is_none() {
            backfill_history_times(&mut st.config.history, history_start);
        }
        Ok(st)
    }

    fn history(&self, st: &mut ImgState, created_by: String, empty_layer: bool, time: &str) {
        st.config.history.push(History {
            created: Some(time.to_owned()),
            created_by: Some(created_by),
            author: None,
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
        });
    }

    fn apply(
        &mut self,
        st: &mut ImgState,
        ins: &Instruction,
        scope: &StageScope,
        label: &str,
        what: &str,
        cmd_set_here: &mut bool,
    ) -> Result<(), BuildError> {
        use InstructionKind as K;
        let shell_vec =
            st.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let shell = || shell_vec.clone();
        let time = st.time.clone();
        let cfg = &mut st.config.config;
        match &ins.kind {
            K::From(_) | K::Arg(_) => return Ok(()),
            K::Env(kvs) => {
                for kv in kvs {
                    st.config.env_set(&kv.key, &kv.value);
                }
            }
            K::Label(kvs) => {
                let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
                for kv in kvs {
                    labels.insert(kv.key.clone(), kv.value.clone());
                }
            }
            K::Workdir(w) => {
                let base = if cfg.working_dir.is_empty() {
                    "/".to_owned()
                } else {
                    cfg.working_dir.clone()
                };
                let p = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", base.trim_end_matches('/'))
                };
                cfg.working_dir = format!("/{}", crate::fsview::join(&crate::fsview::clean(&p)));
                return self.workdir_step(st, ins, label, what);
            }
            K::User(u) => cfg.user = u.clone(),
            K::Cmd(c) => {
                cfg.cmd = Some(command(c, &shell()));
                *cmd_set_here = true;
            }
            K::Entrypoint(c) => {
                cfg.entrypoint = Some(command(c, &shell()));
                // Docker: an ENTRYPOINT resets a CMD inherited from the base image.
                if !*cmd_set_here {
                    cfg.cmd = None;
                }
            }
            K::Expose(ports) => {
                let m = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    let p = if p.contains('/') { p.to_lowercase() } else { format!("{p}/tcp") };
                    m.insert(p, Default::default());
                }
            }
            K::Volume(v) => {
                let m = cfg.volumes.get_or_insert_with(BTreeMap::new);
                for p in v {
                    m.insert(p.clone(), Default::default());
                }
            }
            K::StopSignal(s) => cfg.stop_signal = s.clone(),
            K::Shell(s) => cfg.shell = Some(s.clone()),
            K::Healthcheck(h) => cfg.healthcheck = Some(healthcheck(h, &shell())),
            K::Onbuild(t) => cfg.on_build.get_or_insert_with(Vec::new).push(t.clone()),
            K::Maintainer(m) => st.config.author = Some(m.clone()),
            K::Copy(c) => return self.copy_step(st, ins, CopyKind::Copy(c.clone()), label, what),
            K::Add(a) => return self.copy_step(st, ins, CopyKind::Add(a.clone()), label, what),
            K::Run(r) => return self.run_step(st, ins, r, scope, label, what),
        }
        self.history(st, ins.original.clone(), true, &time);
        Ok(())
    }

    /// Looks a key up in the state dir, then in imported caches. On an import hit the
    /// layers are brought into the state dir so later steps and outputs can use them.
    fn lookup(&mut self, key: &str) -> Option<(StepRecord, Option<String>)> {
        if self.req.no_cache {
            return None;
        }
        if let Some(r) = self.state.record(key) {
            return Some((r, None));
        }
        match self.imports.materialize(key, self.state) {
            Ok(Some((rec, src))) => Some((rec, Some(src))),
            Ok(None) => None,
            Err(msg) => {
                self.progress.warn(&msg);
                None
            }
        }
    }

    /// Records a finished layer step in the graph and the state.
    fn finish_step(
        &mut self,
        st: &mut ImgState,
        key: String,
        inputs: Vec<Vec<(usize, String)>>,
        rec: &StepRecord,
        ins: &Instruction,
    ) {
        let added = rec.chain.len() > st.chain.len();
        let node = self.node(Node {
            key: key.clone(),
            inputs,
            chain: rec.chain.clone(),
            has_result: true,
            created_at: rec.created_at.clone(),
        });
        st.key = key;
        st.chain = rec.chain.clone();
        st.node = Some(node);
        st.time = match self.req.source_date_epoch {
            Some(e) => now_rfc3339(Some(e)),
            None => rec.created_at.clone(),
        };
        st.config.rootfs.diff_ids = st.chain.iter().map(|l| l.diff_id.to_string()).collect();
        let time = st.time.clone();
        self.history(st, format!("{} # buildkit", created_by(st, ins)), !added, &time);
    }

    fn parent_inputs(&self, st: &ImgState) -> Vec<(usize, String)> {
        st.node.map(|n| vec![(n, String::new())]).unwrap_or_default()
    }

    fn created_time(&self) -> String {
        now_rfc3339(self.req.source_date_epoch)
    }

    /// The snapshot directories of a chain (top first), extracting missing ones.
    pub(crate) fn lower_dirs(&self, chain: &[ChainLayer]) -> Result<Vec<PathBuf>, BuildError> {
        let mut out = Vec::with_capacity(chain.len());
        for l in chain.iter().rev() {
            out.push(snapshot::ensure(self.state, &l.diff_id)?);
        }
        Ok(out)
    }

    fn copy_step(
        &mut self,
        st: &mut ImgState,
        ins: &Instruction,
        kind: CopyKind,
        label: &str,
        what: &str,
    ) -> Result<(), BuildError> {
        let (sources, inline, dest, from, chown, chmod, link, exclude, is_add) = match &kind {
            CopyKind::Copy(c) => (
                c.sources.clone(),
                c.inline.clone(),
                c.dest.clone(),
                c.from.clone(),
                c.chown.clone(),
                c.chmod.clone(),
                c.link,
                c.exclude.clone(),
                false,
            ),
            CopyKind::Add(a) => (
                a.sources.clone(),
                a.inline.clone(),
                a.dest.clone(),
                None,
                a.chown.clone(),
                a.chmod.clone(),
                a.link,
                a.exclude.clone(),
                true,
            ),
        };
        if is_add {
            for s in &sources {
                if s.contains("://") || s.starts_with("git@") {
                    return Err(BuildError::Source {
                        instruction: what.to_owned(),
                        message: format!(
                            "ADD {s}: remote URLs and git sources are not supported yet; download the file into the build context and ADD or COPY it"
                        ),
                    });
                }
            }
        }
        let step = self.progress.step(label);
        // The source filesystem and what identifies it in the cache key.
        let (view, source_id, source_input): (
            Arc<dyn FsView + Send + Sync>,
            serde_json::Value,
            Option<(usize, String)>,
        ) = match &from {
            None => {
                let ctx = self.context.clone().ok_or_else(|| BuildError::Source {
                        instruction: what.to_owned(),
                        message: "no build context was given (the context is `-`), so there is nothing to copy".into(),
                    })?;
                (ctx, json!({"context": "."}), None)
            }
            Some(f) => self.view_from(f, what)?,
        };
        let chmod_bits = match &chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| BuildError::Source {
                instruction: what.to_owned(),
                message: format!("--chmod={m}: only octal modes (like 755) are supported"),
            })?),
            None => None,
        };
        let lowers_cell: std::cell::OnceCell<Option<LayeredView>> = std::cell::OnceCell::new();
        let chown_ids = match &chown {
            Some(c) => Some(self.resolve_chown(c, &st.chain, what)?),
            None => None,
        };
        let created = self.created_time();
        let req = CopyRequest {
            sources,
            inline: inline
                .iter()
                .map(|h| (h.name.clone(), h.content.clone().into_bytes()))
                .collect(),
            dest,
            workdir: if st.config.config.working_dir.is_empty() {
                "/".into()
            } else {
                st.config.config.working_dir.clone()
            },
            chown: chown_ids,
            chmod: chmod_bits,
            keep_owner: from.is_some() && source_id.get("context").is_none(),
            exclude,
            // Directories and heredoc files the copy creates get a fixed time, so the same
            // inputs always give the same layer digest (SOURCE_DATE_EPOCH when set).
            created_mtime: self.req.source_date_epoch.unwrap_or(0),
            clamp_mtime: self.req.source_date_epoch,
        };
        let chain = st.chain.clone();
        let mut dest_is_dir = |rel: &str| -> bool {
            if chain.is_empty() {
                return false;
            }
            let view =
                lowers_cell.get_or_init(|| self.lower_dirs(&chain).ok().map(LayeredView::new));
            match view {
                Some(v) => {
                    matches!(crate::fsview::resolve(v, rel, true), Ok(Some((_, e))) if e.kind() == crate::fsview::Kind::Dir)
                }
                None => false,
            }
        };
        let (mut planned, archive_dir) = if is_add {
            crate::add::plan_add(view.as_ref(), &req, &mut dest_is_dir, what, self.state)?
        } else {
            (copy::plan(view.as_ref(), &req, &mut dest_is_dir, what)?, None)
        };
        let content_sum = copy::checksum(&mut planned, &mut self.checksums, req.keep_owner)
            .map_err(|source| BuildError::Io {
                op: "checksum COPY sources for",
                path: PathBuf::from(what),
                source,
            })?;
        let key = key_of(&json!({
            "schema": KEY_SCHEMA,
            "platform": self.req.platform.to_string(),
            "op": if is_add { "add" } else { "copy" },
            "parent": st.key,
            "source": source_id,
            "dest": req.dest,
            "workdir": req.workdir,
            "chown": chown,
            "chmod": chmod,
            "link": link,
            "epoch": self.req.source_date_epoch,
            "content": content_sum,
        }));
        let mut inputs: Vec<Vec<(usize, String)>> =
            vec![self.parent_inputs(st)].into_iter().filter(|v| !v.is_empty()).collect();
        let ctx_node = match &source_input {
            Some(x) => x.clone(),
            None => {
                let k =
                    key_of(&json!({"schema": KEY_SCHEMA, "op": "context", "source": source_id}));
                let n = self.node(Node {
                    key: k,
                    inputs: vec![],
                    chain: vec![],
                    has_result: false,
                    created_at: created.clone(),
                });
                (n, String::new())
            }
        };
        inputs.push(vec![(
            ctx_node.0,
            if ctx_node.1.is_empty() { content_sum.clone() } else { ctx_node.1.clone() },
        )]);
        if let Some((rec, src)) = self.lookup(&key) {
            self.hits += 1;
            step.cached(src.as_deref());
            self.finish_step(st, key, inputs, &rec, ins);
            return Ok(());
        }
        self.misses += 1;
        // Copying a stage's output often yields exactly a layer that stage already made
        // (`RUN … > /gen` then `COPY --from=gen /gen/ /gen/`). One hashing pass over the
        // tar (no compression) finds it, and the stored blob is reused, as BuildKit shares
        // one blob between the two; otherwise the layer is compressed as usual.
        let existing = if source_input.is_some() {
            let diff = self.state.dry_diff_id(|w| copy::write(&planned, w))?;
            self.state.has_layer(&diff).then_some(diff)
        } else {
            None
        };
        let diff_id = match existing {
            Some(d) => d,
            None => {
                self.state
                    .write_layer(&self.layer_compression, |w| copy::write(&planned, w))?
                    .0
                    .diff_id
            }
        };
        drop(archive_dir);
        let mut chain = st.chain.clone();
        chain.push(ChainLayer { diff_id, created_at: created.clone() });
        let rec = StepRecord { key: key.clone(), created_at: created, chain };
        self.state.put_record(&rec)?;
        step.done();
        self.finish_step(st, key, inputs, &rec, ins);
        Ok(())
    }

    /// WORKDIR creates its directory (and missing parents, 0755, owned by USER) in a
    /// layer, as BuildKit's `llb.Mkdir(wd, 0755, WithParents, WithUser)` does, so the
    /// directory exists in the image even when no later step writes into it. When it
    /// already exists nothing is written and the history entry is an empty layer.
    fn workdir_step(
        &mut self,
        st: &mut ImgState,
        ins: &Instruction,
        label: &str,
        what: &str,
    ) -> Result<(), BuildError> {
        let wd = st.config.config.working_dir.clone();
        let created_by = format!("WORKDIR {wd}");
        let parts = crate::fsview::clean(&wd);
        let view = if st.chain.is_empty() {
            None
        } else {
            Some(LayeredView::new(self.lower_dirs(&st.chain)?))
        };
        let mut missing = Vec::new();
        for i in 1..=parts.len() {
            let rel = crate::fsview::join(&parts[..i]);
            let found = match &view {
                Some(v) => crate::fsview::resolve(v, &rel, true).map_err(|source| {
                    BuildError::Io { op: "look up WORKDIR", path: PathBuf::from(&wd), source }
                })?,
                None => None,
            };
            match found {
                Some((_, e)) if e.kind() == crate::fsview::Kind::Dir => {}
                Some(_) => {
                    return Err(BuildError::Source {
                        instruction: what.to_owned(),
                        message: format!(
                            "WORKDIR {wd}: /{rel} exists and is not a directory (remove it in an earlier step or choose another WORKDIR)"
                        ),
                    });
                }
                None => missing.push(rel),
            }
        }
        if missing.is_empty() {
            let time = st.time.clone();
            self.history(st, created_by, true, &time);
            return Ok(());
        }
        let user = st.config.config.user.clone();
        let owner = if user.is_empty() {
            (0, 0)
        } else {
            match self.resolve_chown(&user, &st.chain, what) {
                Ok(ids) => ids,
                // No /etc/passwd to name root in: root is uid 0 anyway.
                Err(_) if user == "root" || user == "root:root" => (0, 0),
                Err(_) => {
                    return Err(BuildError::Source {
                        instruction: what.to_owned(),
                        message: format!(
                            "WORKDIR {wd}: cannot create it as USER {user:?}: the user is not in the image's /etc/passwd (use a numeric uid:gid)"
                        ),
                    });
                }
            }
        };
        let step = self.progress.step(label);
        let key = key_of(&json!({
            "schema": KEY_SCHEMA,
            "platform": self.req.platform.to_string(),
            "op": "workdir",
            "parent": st.key,
            "path": wd,
            "create": missing,
            "owner": [owner.0, owner.1],
            "epoch": self.req.source_date_epoch,
        }));
        let inputs: Vec<Vec<(usize, String)>> =
            vec![self.parent_inputs(st)].into_iter().filter(|v| !v.is_empty()).collect();
        let rec = match self.lookup(&key) {
            Some((rec, src)) => {
                self.hits += 1;
                step.cached(src.as_deref());
                rec
            }
            None => {
                self.misses += 1;
                let created = self.created_time();
                let meta = strata_layer::EntryMeta {
                    mode: 0o755,
                    uid: owner.0,
                    gid: owner.1,
                    mtime: unix_of(&created),
                    mtime_nanos: None,
                    xattrs: BTreeMap::new(),
                };
                let (layer, _) = self.state.write_layer(&self.layer_compression, |w| {
                    for d in &missing {
                        w.add_dir(d, &meta)?;
                    }
                    Ok(())
                })?;
                let mut chain = st.chain.clone();
                chain.push(ChainLayer {
                    diff_id: layer.diff_id.clone(),
                    created_at: created.clone(),
                });
                let rec = StepRecord { key: key.clone(), created_at: created, chain };
                self.state.put_record(&rec)?;
                step.done();
                rec
            }
        };
        self.finish_step(st, key, inputs, &rec, ins);
        // BuildKit's history names the resolved directory, without the `# buildkit` tag.
        if let Some(h) = st.config.history.last_mut() {
            h.created_by = Some(created_by);
        }
        Ok(())
    }

    /// The view for `--from=NAME`: a stage, a named context, or an image context.
    #[allow(clippy::type_complexity)]
    fn view_from(
        &mut self,
        from: &str,
        what: &str,
    ) -> Result<
        (Arc<dyn FsView + Send + Sync>, serde_json::Value, Option<(usize, String)>),
        BuildError,
    > {
        let stage_idx = from.parse::<usize>().ok().or_else(|| {
            self.df
                .stages
                .iter()
                .position(|s| s.name().is_some_and(|n| n.eq_ignore_ascii_case(from)))
        });
        let st = if let Some(i) = stage_idx {
            self.stages.get(&i).cloned().ok_or_else(|| BuildError::Source {
                instruction: what.to_owned(),
                message: format!("--from={from}: stage {i} is not built before this instruction"),
            })?
        } else if let Some(NamedContext::Dir(dir)) = self.req.build_contexts.get(from) {
            let view: Arc<dyn FsView + Send + Sync> = Arc::new(DirView::new(dir.clone(), None));
            return Ok((view, json!({"context": from}), None));
        } else {
            self.named_state(from, what)?
        };
        let lowers = self.lower_dirs(&st.chain)?;
        let input = st.node.map(|n| (n, String::new()));
        Ok((Arc::new(LayeredView::new(lowers)), json!({"stage": st.key}), input))
    }

    fn resolve_chown(
        &self,
        spec: &str,
        chain: &[ChainLayer],
        what: &str,
    ) -> Result<(u64, u64), BuildError> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let numeric = |s: &str| s.parse::<u64>().ok();
        if let (Some(uid), gid) = (numeric(u), g.map(numeric)) {
            match gid {
                None => return Ok((uid, uid)),
                Some(Some(gid)) => return Ok((uid, gid)),
                Some(None) => {}
            }
        }
        // Names are resolved against the target image's /etc/passwd and /etc/group.
        let lowers = self.lower_dirs(chain)?;
        let view = LayeredView::new(lowers);
        let read = |p: &str| -> String {
            match crate::fsview::resolve(&view, p, true) {
                Ok(Some((_, e))) => std::fs::read_to_string(&e.host_path).unwrap_or_default(),
                _ => String::new(),
            }
        };
        let passwd = read("etc/passwd");
        let group = read("etc/group");
        let find = |db: &str, name: &str, field: usize| -> Option<u64> {
            db.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name))
                    .then(|| f.get(field).and_then(|v| v.parse().ok()))
                    .flatten()
            })
        };
        let uid = numeric(u).or_else(|| find(&passwd, u, 2)).ok_or_else(|| BuildError::Source {
            instruction: what.to_owned(),
            message: format!("--chown={spec}: unknown user {u:?} (not in the image's /etc/passwd)"),
        })?;
        let gid = match g {
            Some(g) => {
                numeric(g).or_else(|| find(&group, g, 2)).ok_or_else(|| BuildError::Source {
                    instruction: what.to_owned(),
                    message: format!(
                        "--chown={spec}: unknown group {g:?} (not in the image's /etc/group)"
                    ),
                })?
            }
            None => find(&passwd, u, 3).unwrap_or(uid),
        };
        Ok((uid, gid))
    }

    fn executor(&mut self) -> Result<Arc<dyn strata_run::Executor>, BuildError> {
        if let Some(e) = &self.executor {
            return Ok(e.clone());
        }
        let e = strata_run::RuncExecutor::new(self.req.oci_runtime.clone())
            .map_err(|source| BuildError::Executor { instruction: "RUN".into(), source })?;
        let e: Arc<dyn strata_run::Executor> = Arc::new(e);
        self.executor = Some(e.clone());
        Ok(e)
    }

    fn run_step(
        &mut self,
        st: &mut ImgState,
        ins: &Instruction,
        run: &df::Run,
        scope: &StageScope,
        label: &str,
        what: &str,
    ) -> Result<(), BuildError> {
        let step = self.progress.step(label);
        let prepared = runstep::prepare(self, st, run, scope, what)?;
        let key = key_of(&json!({
            "schema": KEY_SCHEMA,
            "platform": self.req.platform.to_string(),
            "op": "run",
            "parent": st.key,
            "args": prepared.spec.args,
            "env": prepared.spec.env,
            "cwd": prepared.spec.cwd,
            "user": prepared.spec.user,
            "network": format!("{:?}", prepared.spec.network),
            "mounts": prepared.key_mounts,
            "epoch": self.req.source_date_epoch,
        }));
        let mut inputs: Vec<Vec<(usize, String)>> =
            vec![self.parent_inputs(st)].into_iter().filter(|v| !v.is_empty()).collect();
        inputs.extend(prepared.extra_inputs.iter().map(|i| vec![i.clone()]));
        if let Some((rec, src)) = self.lookup(&key) {
            self.hits += 1;
            step.cached(src.as_deref());
            self.finish_step(st, key, inputs, &rec, ins);
            return Ok(());
        }
        self.misses += 1;
        let executor = self.executor()?;
        let created = self.created_time();
        let rec =
            runstep::execute(self, st, prepared, executor.as_ref(), &step, what, &key, &created)?;
        step.done();
        self.finish_step(st, key, inputs, &rec, ins);
        Ok(())
    }
}

enum CopyKind {
    Copy(df::Copy),
    Add(df::Add),
}

/// The history text of a layer step, as BuildKit writes it: RUN shows the command the
/// shell ran (`RUN /bin/sh -c echo hi`), the others their instruction.
fn created_by(st: &ImgState, ins: &Instruction) -> String {
    match &ins.kind {
        InstructionKind::Run(r) => {
            let argv = match &r.command {
                CommandLine::Exec(v) => v.clone(),
                CommandLine::Shell(cmd) => {
                    let mut v = st
                        .config
                        .config
                        .shell
                        .clone()
                        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                    v.push(cmd.clone());
                    v
                }
            };
            format!("RUN {}", argv.join(" "))
        }
        _ => ins.original.clone(),
    }
}

/// Metadata instructions that come before the first layer of a `FROM scratch` stage have
/// no step time of their own; like BuildKit, they take the time of the next entry that
/// has one, instead of the epoch.
fn backfill_history_times(history: &mut [History], from: usize) {
    const EPOCH: &str = "1970-01-01T00:00:00Z";
    let mut next: Option<String> = None;
    for h in history[from..].iter_mut().rev() {
        match h.created.as_deref() {
            Some(EPOCH) | None => {
                if let Some(t) = &next {
                    h.created = Some(t.clone());
                }
            }
            Some(t) => next = Some(t.to_owned()),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn command(c: &CommandLine, shell: &[String]) -> Vec<String> {
    match c {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

fn healthcheck(h: &df::Healthcheck, shell: &[String]) -> crate::image::HealthConfig {
    match h {
        df::Healthcheck::None => {
            crate::image::HealthConfig { test: vec!["NONE".into()], ..Default::default() }
        }
        df::Healthcheck::Cmd {
            command: c,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match c {
                CommandLine::Exec(v) => {
                    let mut t = vec!["CMD".to_owned()];
                    t.extend(v.iter().cloned());
                    t
                }
                CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            };
            let _ = shell;
            let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as i64).unwrap_or(0);
            crate::image::HealthConfig {
                test,
                interval: ns(interval),
                timeout: ns(timeout),
                start_period: ns(start_period),
                start_interval: ns(start_interval),
                retries: retries.map(i64::from).unwrap_or(0),
            }
        }
    }
}

/// Nodes the final node depends on, transitively through parent (first) inputs: the
/// steps whose results make up the final chain.
fn lineage(graph: &[Node], last: Option<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut cur = last;
    while let Some(n) = cur {
        if out.contains(&n) {
            break;
        }
        out.push(n);
        cur = graph[n].inputs.first().and_then(|slot| slot.first()).map(|(i, _)| *i);
    }
    out
}
