//! Image outputs (`-o/--output`): an OCI layout (tar or directory), a `docker load` tar,
//! the final filesystem as a directory or a tar.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use strata_layer::{
    ApplyOptions, Compression, CompressionOptions, EntryMeta, LayerWriter, WriteDirOptions,
};
use strata_oci::{Descriptor, Layout, gojson, media};

use crate::error::BuildError;
use crate::solver::ImgState;
use crate::state::StateDir;

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `type=oci`: an OCI layout, as a tar file (default) or a directory (`tar=false`).
    Oci {
        /// Destination (`-` for stdout is not supported).
        dest: PathBuf,
        /// Tar (true) or directory.
        tar: bool,
    },
    /// `type=docker`: a tar `docker load` accepts.
    Docker {
        /// Destination file.
        dest: PathBuf,
    },
    /// `type=local`: the final filesystem, into a directory.
    Local {
        /// Destination directory.
        dest: PathBuf,
    },
    /// `type=tar`: the final filesystem as a tar.
    Tar {
        /// Destination file.
        dest: PathBuf,
    },
    /// `type=image,push=true` / `type=registry` / `--push`: the image pushed to a registry
    /// under each name (`-t` values when `name=` is not given).
    Push {
        /// `name=` values (several may be comma-separated inside quotes, as in buildx);
        /// empty means the `-t` tags.
        names: Vec<String>,
    },
}

/// Parses one `-o` value (buildx syntax; a bare path means `type=local,dest=PATH`).
pub fn parse_output(value: &str) -> Result<Output, String> {
    if !value.contains('=') {
        return Ok(Output::Local { dest: PathBuf::from(value) });
    }
    let pairs = strata_cache::options::split_csv("--output", value).map_err(|e| e.to_string())?;
    let mut ty = None;
    let mut dest = None;
    let mut tar = true;
    let mut push = false;
    let mut names: Vec<String> = Vec::new();
    for (k, v) in &pairs {
        match k.as_str() {
            "type" => ty = Some(v.clone()),
            "dest" => dest = Some(PathBuf::from(v)),
            "tar" => {
                tar = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("--output: tar={v:?}: expected true or false")),
                }
            }
            "push" => {
                push = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("--output: push={v:?}: expected true or false")),
                }
            }
            "name" => names
                .extend(v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from)),
            "annotation" | "oci-mediatypes" | "compression" | "compression-level"
            | "force-compression" | "rewrite-timestamp" => {}
            other => {
                return Err(format!(
                    "--output: unknown key {other:?}; accepted keys: type, dest, tar, name"
                ));
            }
        }
    }
    let ty = ty.unwrap_or_else(|| "local".into());
    let need_dest =
        |d: Option<PathBuf>| d.ok_or_else(|| format!("--output type={ty}: dest= is required"));
    match ty.as_str() {
        "oci" => Ok(Output::Oci { dest: need_dest(dest)?, tar }),
        "docker" => Ok(Output::Docker { dest: need_dest(dest)? }),
        "local" => Ok(Output::Local { dest: need_dest(dest)? }),
        "tar" => Ok(Output::Tar { dest: need_dest(dest)? }),
        "registry" => Ok(Output::Push { names }),
        "image" if push => Ok(Output::Push { names }),
        "image" => Err(
            "--output type=image without push=true: strata has no local image store; add push=true to push it to a registry, or use --output type=oci,dest=FILE".into(),
        ),
        other => {
            Err(format!("--output: unknown type {other:?}; supported: oci, docker, local, tar, image (push=true), registry"))
        }
    }
}

/// The final image, with its blobs in the state store.
#[derive(Debug, Clone)]
pub(crate) struct BuiltImage {
    pub(crate) manifest: Descriptor,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// Writes the image config and manifest of `st` into the state store; layers are taken
/// in `compression` (converted once if needed).
pub(crate) fn assemble(
    state: &StateDir,
    st: &ImgState,
    compression: Compression,
) -> Result<BuiltImage, BuildError> {
    let opts = CompressionOptions::new(compression);
    let mut layers = Vec::new();
    for l in &st.chain {
        let (_, blob) = state.ensure_blob(&l.diff_id, &opts)?;
        layers.push(Descriptor::new(
            compression.media_type(media::MediaFamily::Oci),
            blob.digest,
            blob.size,
        ));
    }
    let mut config = st.config.clone();
    config.rootfs.diff_ids = st.chain.iter().map(|l| l.diff_id.to_string()).collect();
    config.created = config.history.last().and_then(|h| h.created.clone()).or(config.created);
    let cfg_bytes = gojson::to_vec(&config).map_err(BuildError::Json)?;
    let cfg = state.store().write_blob(&cfg_bytes)?;
    let config_desc = Descriptor::new(media::OCI_CONFIG, cfg.digest, cfg.size);
    // A struct, not a json! map: the field order must be the OCI/Go order for the digest
    // to be stable and comparable.
    let bytes = ordered_manifest(&config_desc, &layers)?;
    let m = state.store().write_blob(&bytes)?;
    Ok(BuiltImage {
        manifest: Descriptor::new(media::OCI_MANIFEST, m.digest, m.size),
        config: config_desc,
        layers,
    })
}

fn ordered_manifest(config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<u8>, BuildError> {
    #[derive(serde::Serialize)]
    struct Manifest<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'static str,
        config: &'a Descriptor,
        layers: &'a [Descriptor],
    }
    gojson::to_vec(&Manifest { schema_version: 2, media_type: media::OCI_MANIFEST, config, layers })
        .map_err(BuildError::Json)
}

fn out_err(dest: &Path, e: impl std::fmt::Display) -> BuildError {
    BuildError::Output { dest: dest.display().to_string(), message: e.to_string() }
}

/// The descriptor as it appears in the output's index.json, with name annotations.
fn index_entry(img: &BuiltImage, tag: Option<&str>) -> Descriptor {
    let mut d = img.manifest.clone();
    if let Some(t) = tag {
        d.set_annotation(media::ANNOTATION_IMAGE_NAME, t);
        let short = t
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(_, t)| t)
            .unwrap_or("latest");
        d.set_annotation(media::ANNOTATION_REF_NAME, short);
    }
    d
}

/// Normalises `-t` values the way Docker names images (`app` → `docker.io/library/app:latest`).
pub(crate) fn full_name(tag: &str) -> String {
    let (name, t) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_owned(), t.to_owned()),
        _ => (tag.to_owned(), "latest".to_owned()),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_host {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{name}:{t}")
}

/// Writes every requested output.
pub(crate) fn write_outputs(
    state: &StateDir,
    st: &ImgState,
    img: &BuiltImage,
    outputs: &[Output],
    tags: &[String],
) -> Result<(), BuildError> {
    for o in outputs {
        match o {
            Output::Oci { dest, tar: false } => write_oci_dir(state, img, dest, tags)?,
            Output::Oci { dest, tar: true } => write_image_tar(state, img, dest, tags, false)?,
            Output::Docker { dest } => write_image_tar(state, img, dest, tags, true)?,
            Output::Local { dest } => write_local(state, st, dest)?,
            Output::Tar { dest } => write_fs_tar(state, st, dest)?,
            Output::Push { names } => {
                let names = if names.is_empty() { tags } else { names.as_slice() };
                push_image(state, img, names)?
            }
        }
    }
    Ok(())
}

/// Pushes `img` under each of `names`: layers and config first (skipping blobs the
/// repository has, mounting ones another repository of the registry has), the manifest last,
/// so a reader never sees a manifest whose blobs are missing and an interrupted push leaves
/// only unreferenced blobs that the next push finds and skips.
fn push_image(state: &StateDir, img: &BuiltImage, names: &[String]) -> Result<(), BuildError> {
    if names.is_empty() {
        return Err(BuildError::Usage(
            "push: no image name; give -t NAME or --output type=image,name=NAME,push=true".into(),
        ));
    }
    let registry = crate::remote::registry()?;
    let manifest = state.store().read_blob_limited(&img.manifest.digest, 16 << 20)?;
    for name in names {
        let r = strata_registry::ImageRef::parse(name)
            .map_err(|e| BuildError::Output { dest: name.clone(), message: e.to_string() })?;
        let push_err = |e: strata_registry::RegistryError| BuildError::Output {
            dest: r.to_string(),
            message: format!("push failed: {e}"),
        };
        let mut uploaded = 0;
        for d in img.layers.iter().chain(std::iter::once(&img.config)) {
            let from = crate::remote::source_of(&d.digest);
            let path = state.store().blob_path(&d.digest);
            if registry
                .put_blob_file(&r, &d.digest, d.size, &path, from.as_ref())
                .map_err(push_err)?
            {
                uploaded += 1;
            }
            crate::remote::note_blob(&r, &d.digest);
        }
        registry.put_manifest(&r, &manifest, &img.manifest.media_type).map_err(push_err)?;
        tracing::info!(image = %r, uploaded, "pushed");
    }
    Ok(())
}

fn image_blobs(img: &BuiltImage) -> Vec<&Descriptor> {
    let mut v: Vec<&Descriptor> = vec![&img.manifest, &img.config];
    for l in &img.layers {
        if !v.iter().any(|d| d.digest == l.digest) {
            v.push(l);
        }
    }
    v
}

fn write_oci_dir(
    state: &StateDir,
    img: &BuiltImage,
    dest: &Path,
    tags: &[String],
) -> Result<(), BuildError> {
    let layout = Layout::create(dest).map_err(|e| out_err(dest, e))?;
    for d in image_blobs(img) {
        layout
            .link_or_copy_blob(&state.store().blob_path(&d.digest), &d.digest, d.size)
            .map_err(|e| out_err(dest, e))?;
    }
    let names: Vec<Option<String>> = if tags.is_empty() {
        vec![None]
    } else {
        tags.iter().map(|t| Some(full_name(t))).collect()
    };
    layout
        .update_index(
            strata_oci::default_lock_timeout(),
            |index| -> Result<(), strata_oci::StoreError> {
                for n in &names {
                    let entry = index_entry(img, n.as_deref());
                    // The same name (or, untagged, the same image) is replaced, not duplicated.
                    let same = |m: &Descriptor| match n {
                        Some(_) => m.annotation(media::ANNOTATION_IMAGE_NAME) == n.as_deref(),
                        None => m.digest == entry.digest && m.annotations.is_none(),
                    };
                    index.manifests.retain(|m| !same(m));
                    index.manifests.push(entry);
                }
                Ok(())
            },
        )
        .map_err(|e| out_err(dest, e))?;
    Ok(())
}

fn file_meta() -> EntryMeta {
    EntryMeta::new(0o644)
}

fn write_image_tar(
    state: &StateDir,
    img: &BuiltImage,
    dest: &Path,
    tags: &[String],
    docker: bool,
) -> Result<(), BuildError> {
    let (tmp, f) = create_beside(dest)?;
    let mut w = LayerWriter::new(BufWriter::new(f));
    let dir = EntryMeta::new(0o755);
    w.add_dir("blobs", &dir)?;
    w.add_dir("blobs/sha256", &dir)?;
    for d in image_blobs(img) {
        let f = state.store().open_blob(&d.digest)?;
        w.add_file(
            format!("blobs/sha256/{}", d.digest.hex()),
            &file_meta(),
            io::BufReader::new(f),
            d.size,
        )?;
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    w.add_file("oci-layout", &file_meta(), &layout[..], layout.len() as u64)?;
    let names: Vec<Option<String>> = if tags.is_empty() {
        vec![None]
    } else {
        tags.iter().map(|t| Some(full_name(t))).collect()
    };
    let mut index = strata_oci::Index::new();
    for n in &names {
        index.manifests.push(index_entry(img, n.as_deref()));
    }
    index.fill_defaults();
    let ib = index.to_vec().map_err(BuildError::Json)?;
    w.add_file("index.json", &file_meta(), &ib[..], ib.len() as u64)?;
    if docker {
        let repo_tags: Vec<String> = names.iter().flatten().cloned().collect();
        let manifest = json!([{
            "Config": format!("blobs/sha256/{}", img.config.digest.hex()),
            "RepoTags": repo_tags,
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }]);
        let mb = serde_json::to_vec(&manifest).map_err(BuildError::Json)?;
        w.add_file("manifest.json", &file_meta(), &mb[..], mb.len() as u64)?;
    }
    let mut out = w.finish()?;
    out.flush().map_err(|e| out_err(dest, e))?;
    let f = out.into_inner().map_err(|e| out_err(dest, e.error()))?;
    f.sync_all().map_err(|e| out_err(dest, e))?;
    tmp.persist(dest).map_err(|e| out_err(dest, e.error))?;
    Ok(())
}

/// A temp file beside `dest`, renamed over it when complete: a failed build never leaves
/// a truncated output behind.
fn create_beside(dest: &Path) -> Result<(tempfile::TempPath, File), BuildError> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| out_err(dest, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".strata-out-")
        .tempfile_in(dir)
        .map_err(|e| out_err(dest, e))?;
    let f = tmp.as_file().try_clone().map_err(|e| out_err(dest, e))?;
    Ok((tmp.into_temp_path(), f))
}

fn apply_chain(state: &StateDir, st: &ImgState, dest: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(dest).map_err(|e| out_err(dest, e))?;
    for l in &st.chain {
        let tar = state.open_layer_tar(&l.diff_id)?;
        strata_layer::apply_layer(tar, dest, &ApplyOptions::default())?;
    }
    Ok(())
}

fn write_local(state: &StateDir, st: &ImgState, dest: &Path) -> Result<(), BuildError> {
    apply_chain(state, st, dest)
}

fn write_fs_tar(state: &StateDir, st: &ImgState, dest: &Path) -> Result<(), BuildError> {
    let tmp = state.temp_dir("fs-")?;
    let root = tmp.path().join("root");
    apply_chain(state, st, &root)?;
    let (tpath, f) = create_beside(dest)?;
    let mut w = LayerWriter::new(BufWriter::new(f));
    strata_layer::write_dir(&root, &mut w, &WriteDirOptions::default())
        .map_err(|e| out_err(dest, e))?;
    let mut out = w.finish()?;
    out.flush().map_err(|e| out_err(dest, e))?;
    drop(out);
    tpath.persist(dest).map_err(|e| out_err(dest, e.error))?;
    Ok(())
}

/// `--metadata-file` content, as buildx writes it.
pub(crate) fn metadata(img: &BuiltImage, tags: &[String]) -> serde_json::Value {
    let mut m = BTreeMap::new();
    m.insert("containerimage.digest", json!(img.manifest.digest.to_string()));
    m.insert("containerimage.config.digest", json!(img.config.digest.to_string()));
    m.insert("containerimage.descriptor", json!(img.manifest));
    if !tags.is_empty() {
        m.insert(
            "image.name",
            json!(tags.iter().map(|t| full_name(t)).collect::<Vec<_>>().join(",")),
        );
    }
    json!(m)
}
