//! `strata demo`: a real build of an embedded example, twice, through a local cache
//! directory, so a new user sees the whole cycle with nothing installed by hand:
//! build + `--cache-to`, a rebuild on a fresh state directory with `--cache-from` (every
//! step CACHED, same image digest), and `strata cache ls` / `verify` on the cache.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_build::{BuildRequest, DockerfileSource, Platform, ProgressMode};

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
# An embedded example: two stages, no base image needed.
FROM scratch AS assets
COPY site/ /srv/site/
COPY --chmod=644 notes.txt /srv/notes.txt

FROM scratch
LABEL org.opencontainers.image.title="strata demo"
ENV GREETING="hello from strata"
WORKDIR /app
COPY --from=assets /srv/ /app/
COPY <<EOF /app/VERSION
demo-1
EOF
CMD ["/app/site/index.html"]
"#;

const FILES: &[(&str, &str)] = &[
    ("site/index.html", "<!doctype html><title>strata</title><p>built without a daemon</p>\n"),
    ("site/style.css", "body { font-family: sans-serif }\n"),
    ("notes.txt", "The cache in ./cache is an OCI layout BuildKit can import.\n"),
    (".dockerignore", "*.tmp\n"),
    ("scratch.tmp", "ignored by .dockerignore\n"),
];

/// `strata demo [DIR]`
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Where to put the example context, cache, state and output (default: ./strata-demo).
    #[arg(default_value = "strata-demo")]
    dir: PathBuf,
}

fn request(
    dir: &std::path::Path,
    state: &str,
    cache_to: bool,
    cache_from: bool,
) -> anyhow::Result<BuildRequest> {
    let cache = dir.join("cache");
    let ctx = dir.join("context");
    let mut to = Vec::new();
    if cache_to {
        let spec = format!("type=local,dest={},mode=max", cache.display());
        to.push(strata_cache::options::parse_export(&spec)?.0);
    }
    let mut from = Vec::new();
    if cache_from {
        let spec = format!("type=local,src={}", cache.display());
        from.push(strata_cache::options::parse_import(&spec)?.0);
    }
    let out = format!("type=local,dest={}", dir.join("rootfs").display());
    Ok(BuildRequest {
        context: Some(ctx.clone()),
        dockerfile: DockerfileSource::Path(ctx.join("Dockerfile")),
        dockerfile_name: "Dockerfile".into(),
        tags: vec!["strata-demo:latest".into()],
        target: None,
        build_args: Default::default(),
        build_contexts: Default::default(),
        outputs: vec![strata_build::parse_output(&out).map_err(anyhow::Error::msg)?],
        no_cache: false,
        cache_to: to,
        cache_from: from,
        secrets: Default::default(),
        oci_runtime: None,
        state_root: dir.join(state),
        source_date_epoch: None,
        platform: Platform::host(),
        progress: ProgressMode::Plain,
        metadata_file: None,
        pull: false,
    })
}

pub(crate) fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = &a.dir;
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx).with_context(|| format!("creating {}", ctx.display()))?;
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
    for (name, body) in FILES {
        let p = ctx.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, body)?;
    }
    // Fresh state directories each time, so the second build can only hit the cache dir.
    for s in ["state-a", "state-b", "rootfs"] {
        let _ = std::fs::remove_dir_all(dir.join(s));
    }
    println!("== 1. build, exporting the cache to {}/cache (mode=max)", dir.display());
    let first = strata_build::build(&request(dir, "state-a", true, false)?)?;
    println!("\n== 2. rebuild on an empty state directory, importing {}/cache", dir.display());
    let second = strata_build::build(&request(dir, "state-b", false, true)?)?;
    println!("\n== 3. the cache directory (strata cache ls --all)");
    let layout = strata_oci::Layout::open(dir.join("cache"))?;
    for v in strata_cache::inspect::list_versions(&layout, true)? {
        println!("{:<12} {}  {} bytes", v.tag.as_deref().unwrap_or("<untagged>"), v.digest, v.size);
    }
    let report = strata_cache::verify::verify(&layout, true)?;
    println!("verify: {}", if report.ok() { "ok" } else { "PROBLEMS" });
    let same = first.image_digest == second.image_digest;
    println!(
        "\nfirst build: {} steps executed; second build: {} cached, {} executed; same image digest: {same}",
        first.misses, second.hits, second.misses
    );
    println!("final filesystem: {}/rootfs", dir.display());
    Ok(if report.ok() && same && second.misses == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
