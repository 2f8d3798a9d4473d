//! `strata build`, `strata du`, `strata prune`: flags as `docker buildx build` has them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_build::{
    BuildRequest, DockerfileSource, NamedContext, Platform, ProgressMode, StateDir,
};

use crate::UsageError;
use crate::cache_cmd::human_size;

/// `strata build [OPTIONS] PATH|-`
#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// Build context directory, or `-` to read a Dockerfile from stdin with no context.
    #[arg(value_name = "PATH|-")]
    context: String,
    /// Name of the Dockerfile (default: PATH/Dockerfile; `-` reads stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<String>,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Target build stage.
    #[arg(long)]
    target: Option<String>,
    /// Build-time variable `KEY=VALUE` (a bare `KEY` takes the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Additional build context `NAME=DIR` or `NAME=oci-layout://DIR[:TAG|@sha256:…]`.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Output destination (`type=oci|docker|local|tar,dest=…`; a bare path = local).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Cache export destination (`type=local,dest=DIR[,mode=max,…]`); repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,
    /// Cache import source (`type=local,src=DIR[,tag=…|,digest=…]`); repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Do not use the cache when building.
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Progress output: auto, plain, tty, quiet.
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    progress: String,
    /// Write build result metadata (image digest, config digest) to FILE.
    #[arg(long = "metadata-file", value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Secret to expose to RUN --mount=type=secret: `id=ID,src=FILE`.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secrets: Vec<String>,
    /// OCI runtime binary for RUN (default: runc from PATH).
    #[arg(long = "oci-runtime", value_name = "PATH", env = "STRATA_OCI_RUNTIME")]
    oci_runtime: Option<PathBuf>,
    /// Target platform (only the host platform can be built).
    #[arg(long)]
    platform: Option<String>,
    /// Push the image to the registry each -t names (shorthand for
    /// `--output type=image,push=true`).
    #[arg(long)]
    push: bool,
    /// Re-resolve FROM image tags in their registries instead of using the digests
    /// remembered from earlier builds.
    #[arg(long)]
    pull: bool,
    /// Load the image into Docker (not supported yet).
    #[arg(long)]
    load: bool,
    /// State directory (default: $STRATA_ROOT, /var/lib/strata as root, else ~/.local/share/strata).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Shorthand for `--progress=quiet`.
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

fn split_kv<'a>(flag: &str, v: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    v.split_once('=').ok_or_else(|| usage(format!("{flag} {v:?}: expected NAME=VALUE")))
}

fn parse_request(a: BuildArgs) -> anyhow::Result<BuildRequest> {
    if a.push && a.tags.is_empty() {
        return Err(usage("--push needs an image name: add -t REGISTRY/REPO[:TAG]"));
    }
    if a.load {
        return Err(usage(
            "--load is not supported yet: use --output type=docker,dest=FILE and `docker load -i FILE`",
        ));
    }
    let progress = if a.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::parse(&a.progress).ok_or_else(|| {
            usage(format!("--progress {:?}: expected auto, plain, tty or quiet", a.progress))
        })?
    };
    let host = Platform::host();
    if let Some(p) = &a.platform {
        let pp = Platform::parse(p)
            .ok_or_else(|| usage(format!("--platform {p:?}: expected os/arch[/variant]")))?;
        if !host.runs(&pp) {
            return Err(usage(format!(
                "--platform {p}: only the host platform {host} can be built here"
            )));
        }
    }
    let stdin_context = a.context == "-";
    let context = if stdin_context { None } else { Some(PathBuf::from(&a.context)) };
    let (dockerfile, dockerfile_name) = match (a.file.as_deref(), stdin_context) {
        (Some("-"), _) | (None, true) => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading the Dockerfile from stdin")?;
            (DockerfileSource::Bytes(buf), "Dockerfile".to_owned())
        }
        (Some(f), _) => (DockerfileSource::Path(PathBuf::from(f)), f.to_owned()),
        (None, false) => {
            let p = PathBuf::from(&a.context).join("Dockerfile");
            (DockerfileSource::Path(p), "Dockerfile".to_owned())
        }
    };
    let mut build_args = BTreeMap::new();
    for ba in &a.build_args {
        match ba.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            // buildx: a bare KEY takes its value from the environment, and is dropped when unset.
            None => {
                if let Ok(v) = std::env::var(ba) {
                    build_args.insert(ba.clone(), v);
                }
            }
        }
    }
    let source_date_epoch = match build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
    {
        Some(v) if !v.is_empty() => Some(v.parse::<i64>().map_err(|_| {
            usage(format!("SOURCE_DATE_EPOCH={v:?}: expected seconds since the epoch"))
        })?),
        _ => None,
    };
    let mut build_contexts = BTreeMap::new();
    for bc in &a.build_contexts {
        let (k, v) = split_kv("--build-context", bc)?;
        let nc = NamedContext::parse(v).map_err(|e| usage(format!("--build-context {k}: {e}")))?;
        build_contexts.insert(k.to_owned(), nc);
    }
    let mut outputs = a
        .outputs
        .iter()
        .map(|o| strata_build::parse_output(o).map_err(usage))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.push && !outputs.iter().any(|o| matches!(o, strata_build::Output::Push { .. })) {
        outputs.push(strata_build::Output::Push { names: Vec::new() });
    }
    if outputs.iter().any(|o| matches!(o, strata_build::Output::Push { names } if names.is_empty()))
        && a.tags.is_empty()
    {
        return Err(usage(
            "--output type=image,push=true needs an image name: add name=REGISTRY/REPO[:TAG] or -t",
        ));
    }
    let mut cache_to = Vec::new();
    for c in &a.cache_to {
        let (o, warnings) =
            strata_cache::options::parse_export(c).map_err(|e| usage(e.to_string()))?;
        for w in warnings {
            eprintln!("WARNING: {w}");
        }
        cache_to.push(o);
    }
    let mut seen = std::collections::HashSet::new();
    for c in &cache_to {
        if !seen.insert((c.dest.clone(), c.tag.clone())) {
            return Err(usage(format!(
                "duplicate cache exports [local] to {} (tag {})",
                c.dest.display(),
                c.tag
            )));
        }
    }
    let mut cache_from = Vec::new();
    for c in &a.cache_from {
        let (o, warnings) =
            strata_cache::options::parse_import(c).map_err(|e| usage(e.to_string()))?;
        for w in warnings {
            eprintln!("WARNING: {w}");
        }
        cache_from.push(o);
    }
    let mut secrets = BTreeMap::new();
    for s in &a.secrets {
        let pairs =
            strata_cache::options::split_csv("--secret", s).map_err(|e| usage(e.to_string()))?;
        let mut id = None;
        let mut src = None;
        for (k, v) in pairs {
            match k.as_str() {
                "id" => id = Some(v),
                "src" | "source" => src = Some(PathBuf::from(v)),
                "type" if v == "file" => {}
                "env" => return Err(usage("--secret env= is not supported yet; use src=FILE")),
                other => {
                    return Err(usage(format!(
                        "--secret: unknown key {other:?}; accepted: id, src, type=file"
                    )));
                }
            }
        }
        let id = id.ok_or_else(|| usage(format!("--secret {s:?}: id= is required")))?;
        let src = src.unwrap_or_else(|| PathBuf::from(&id));
        secrets.insert(id, src);
    }
    Ok(BuildRequest {
        context,
        dockerfile,
        dockerfile_name,
        tags: a.tags,
        target: a.target,
        build_args,
        build_contexts,
        outputs,
        no_cache: a.no_cache,
        cache_to,
        cache_from,
        secrets,
        oci_runtime: a.oci_runtime,
        state_root: a.root.unwrap_or_else(StateDir::default_root),
        source_date_epoch,
        platform: host,
        progress,
        metadata_file: a.metadata_file,
        pull: a.pull,
    })
}

pub(crate) fn run(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let req = parse_request(a)?;
    strata_build::build(&req)?;
    Ok(ExitCode::SUCCESS)
}

/// `strata du`
#[derive(Args, Debug)]
pub(crate) struct DuArgs {
    /// State directory (default: $STRATA_ROOT or the platform default).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub(crate) fn du(a: DuArgs) -> anyhow::Result<ExitCode> {
    let root = a.root.unwrap_or_else(StateDir::default_root);
    let parts = strata_build::state_usage(&root);
    let total: u64 = parts.iter().map(|(_, s)| s).sum();
    println!("{:<12} {:>12}", "PART", "SIZE");
    for (name, size) in parts {
        println!("{name:<12} {:>12}", human_size(size));
    }
    println!("{:<12} {:>12}", "total", human_size(total));
    println!("state directory: {}", root.display());
    Ok(ExitCode::SUCCESS)
}

/// `strata prune`
#[derive(Args, Debug)]
pub(crate) struct PruneStateArgs {
    /// Keep the state directory at most this big (e.g. 10GiB); without it, remove everything.
    #[arg(long = "keep-storage", value_name = "SIZE")]
    keep_storage: Option<String>,
    /// State directory (default: $STRATA_ROOT or the platform default).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub(crate) fn prune(a: PruneStateArgs) -> anyhow::Result<ExitCode> {
    let root = a.root.unwrap_or_else(StateDir::default_root);
    let keep =
        match &a.keep_storage {
            Some(s) => Some(strata_cache::options::parse_size(s).ok_or_else(|| {
                usage(format!("--keep-storage {s:?}: expected a size like 10GiB"))
            })?),
            None => None,
        };
    let freed = strata_build::prune_state(&root, keep)?;
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(ExitCode::SUCCESS)
}
