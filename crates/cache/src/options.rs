//! `--cache-to` / `--cache-from` CSV options, parsed and validated the way buildx users
//! expect: every key of the seed's table, BuildKit's messages, and a clear error (before
//! any work starts) for keys no backend knows.

use std::fmt;
use std::path::PathBuf;

use strata_oci::Digest;

/// A problem with a cache option; the CLI turns it into exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Syntax: unbalanced quotes, a field without `=`.
    #[error("{flag} {value:?}: {reason}")]
    Syntax {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// The whole option value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A key no backend knows (a typo like `compresion=zstd`).
    #[error("{flag}: unknown key {key:?}; accepted keys for type={backend}: {accepted}")]
    UnknownKey {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// The key as given.
        key: String,
        /// The backend type.
        backend: String,
        /// Comma-separated list of accepted keys.
        accepted: String,
    },
    /// A value that does not parse.
    #[error("{flag}: invalid value {value:?} for {key}: {expected}")]
    BadValue {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// A required key is missing.
    #[error("{flag}: {message}")]
    Missing {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// BuildKit's message, e.g. "local cache exporter requires dest".
        message: String,
    },
    /// A backend that strata does not implement yet.
    #[error("{flag}: cache type {backend:?} is not supported yet (supported: local, registry)")]
    Unsupported {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// The type.
        backend: String,
    },
    /// A combination BuildKit rejects.
    #[error("{flag}: {message}")]
    Conflict {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// What conflicts and how to fix it.
        message: String,
    },
}

/// `mode=min|max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Only the final result's layer chain (records for every step).
    #[default]
    Min,
    /// Layers for every step's result, in every stage.
    Max,
}

/// `compression=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// Plain tar.
    Uncompressed,
    /// gzip (the default).
    #[default]
    Gzip,
    /// eStargz (gzip-compatible, lazily pullable).
    Estargz,
    /// zstd.
    Zstd,
}

impl CompressionType {
    /// The name used in options and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uncompressed => "uncompressed",
            Self::Gzip => "gzip",
            Self::Estargz => "estargz",
            Self::Zstd => "zstd",
        }
    }

    /// The valid `compression-level` range.
    pub fn level_range(self) -> Option<(i32, i32)> {
        match self {
            Self::Uncompressed => None,
            Self::Gzip | Self::Estargz => Some((0, 9)),
            Self::Zstd => Some((0, 22)),
        }
    }
}

impl fmt::Display for CompressionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retention policy applied after an export (issue: GC on export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPolicy {
    /// Untagged older versions to keep.
    pub keep_last: Option<usize>,
    /// Hard size bound in bytes.
    pub max_size: Option<u64>,
    /// Versions unused for longer than this (seconds) are dropped.
    pub max_age_secs: Option<u64>,
}

impl GcPolicy {
    /// Whether any policy is set.
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some() || self.max_size.is_some() || self.max_age_secs.is_some()
    }
}

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// `type=local`: an OCI layout directory (`dest` / `src`).
    #[default]
    Local,
    /// `type=registry,ref=HOST/REPO[:TAG|@DIGEST]`: the same manifest, config and layers in
    /// a registry repository (`dest` / `src` then hold the ref, for messages).
    Registry {
        /// The `ref=` value.
        reference: String,
    },
}

impl Backend {
    /// The registry ref, for `type=registry`.
    pub fn registry_ref(&self) -> Option<&str> {
        match self {
            Self::Local => None,
            Self::Registry { reference } => Some(reference),
        }
    }
}

/// A parsed `--cache-to type=local,…` or `type=registry,…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// `dest` (for `type=registry`: the ref, for messages).
    pub dest: PathBuf,
    /// Local directory or registry.
    pub backend: Backend,
    /// `mode`.
    pub mode: CacheMode,
    /// `tag` (default `latest`).
    pub tag: String,
    /// `oci-mediatypes` (default true).
    pub oci_mediatypes: bool,
    /// `image-manifest` (default false for `type=local`, as the seed's table says; true for
    /// `type=registry`, since registries reject the index form).
    pub image_manifest: bool,
    /// `compression`.
    pub compression: CompressionType,
    /// `compression-level`.
    pub compression_level: Option<i32>,
    /// `force-compression`.
    pub force_compression: bool,
    /// `ignore-error`.
    pub ignore_error: bool,
    /// `reset`: after the export, remove blobs no index.json entry reaches.
    pub reset: bool,
    /// `keep-last`, `max-size`, `max-age`.
    pub gc: GcPolicy,
}

/// A parsed `--cache-from type=local,…` or `type=registry,ref=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// `src` (or `ref`, which the seed's own example uses; for `type=registry`: the ref).
    pub src: PathBuf,
    /// Local directory or registry.
    pub backend: Backend,
    /// `digest`: import this version, bypassing index.json.
    pub digest: Option<Digest>,
    /// `tag` (default `latest`).
    pub tag: String,
}

/// Warnings collected while parsing (keys BuildKit ignores); the caller prints them.
pub type Warnings = Vec<String>;

const EXPORT_KEYS: &[&str] = &[
    "type",
    "dest",
    "mode",
    "tag",
    "oci-mediatypes",
    "image-manifest",
    "compression",
    "compression-level",
    "force-compression",
    "ignore-error",
    "reset",
    "keep-last",
    "max-size",
    "max-age",
];
const IMPORT_KEYS: &[&str] = &["type", "src", "ref", "digest", "tag"];
const REGISTRY_EXPORT_KEYS: &[&str] = &[
    "type",
    "ref",
    "mode",
    "oci-mediatypes",
    "image-manifest",
    "compression",
    "compression-level",
    "force-compression",
    "ignore-error",
];
/// Keys that belong to other backends (registry, s3, gha, azblob): BuildKit ignores them.
const OTHER_BACKEND_KEYS: &[&str] = &[
    "scope",
    "url",
    "url_v2",
    "token",
    "timeout",
    "bucket",
    "region",
    "endpoint_url",
    "use_path_style",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "touch_refresh",
    "upload_parallelism",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "account_url",
    "container",
    "insecure",
    "registry.insecure",
    "ghtoken",
    "repository",
    "retry_mode",
    "retry_max_attempts",
    "disable_accept_encoding",
];

/// Splits a buildx CSV value (Go `encoding/csv` rules: fields may be double-quoted,
/// `""` inside quotes is a quote) into `key=value` pairs.
pub fn split_csv(flag: &'static str, value: &str) -> Result<Vec<(String, String)>, OptionError> {
    let syntax = |reason: &str| OptionError::Syntax {
        flag,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    let mut in_quotes = false;
    let mut field_started_quoted = false;
    // Go's csv reader (without LazyQuotes, as buildx uses it) rejects a quote inside an
    // unquoted field and anything between a closing quote and the next comma; accepting
    // them would turn `dest="x` into a directory literally named `"x`.
    let bare = r#"bare " in non-quoted field"#;
    let extraneous = r#"extraneous or missing " in quoted field"#;
    let mut closed = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                    closed = true;
                }
            }
            '"' if cur.is_empty() && !field_started_quoted => {
                in_quotes = true;
                field_started_quoted = true;
            }
            '"' if !in_quotes => {
                return Err(syntax(if field_started_quoted { extraneous } else { bare }));
            }
            ',' if !in_quotes => {
                fields.push(std::mem::take(&mut cur));
                field_started_quoted = false;
                closed = false;
            }
            _ if closed => return Err(syntax(extraneous)),
            _ => cur.push(c),
        }
    }
    if in_quotes {
        return Err(syntax("unterminated quote"));
    }
    fields.push(cur);
    let mut out = Vec::new();
    for f in fields {
        let f = f.trim();
        if f.is_empty() {
            continue;
        }
        let Some((k, v)) = f.split_once('=') else {
            return Err(syntax(&format!("field {f:?} is not key=value")));
        };
        out.push((k.trim().to_ascii_lowercase(), v.to_owned()));
    }
    Ok(out)
}

fn parse_bool(flag: &'static str, key: &str, v: &str) -> Result<bool, OptionError> {
    // Go's strconv.ParseBool, which BuildKit uses.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(OptionError::BadValue {
            flag,
            key: key.to_owned(),
            value: v.to_owned(),
            expected: "true or false".into(),
        }),
    }
}

/// Parses a size like `5GiB`, `500MB`, `1024` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

/// Parses a duration like `7d`, `12h`, `30m`, `90s`, `1w` into seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn backend_of(flag: &'static str, pairs: &[(String, String)]) -> Result<String, OptionError> {
    let ty = pairs.iter().rev().find(|(k, _)| k == "type").map(|(_, v)| v.as_str());
    match ty {
        Some("local") => Ok("local".into()),
        Some("registry") => Ok("registry".into()),
        Some(other @ ("s3" | "gha" | "inline" | "azblob")) => {
            Err(OptionError::Unsupported { flag, backend: other.to_owned() })
        }
        Some(other) => Err(OptionError::BadValue {
            flag,
            key: "type".into(),
            value: other.to_owned(),
            expected: "local or registry (s3, gha, inline and azblob are not supported yet)".into(),
        }),
        None => Err(OptionError::Missing {
            flag,
            message: "missing type= (e.g. type=local,dest=DIR)".into(),
        }),
    }
}

/// Parses one `--cache-to` value.
pub fn parse_export(value: &str) -> Result<(ExportOptions, Warnings), OptionError> {
    const FLAG: &str = "--cache-to";
    let pairs = split_csv(FLAG, value)?;
    // buildx: a bare value without '=' is a registry ref.
    if pairs.is_empty() {
        return Err(OptionError::Missing { flag: FLAG, message: "empty value".into() });
    }
    let backend = backend_of(FLAG, &pairs)?;
    let registry = backend == "registry";
    let mut warnings = Vec::new();
    let mut reference = None;
    let mut o = ExportOptions {
        dest: PathBuf::new(),
        backend: Backend::Local,
        mode: CacheMode::Min,
        tag: "latest".into(),
        oci_mediatypes: true,
        image_manifest: false,
        compression: CompressionType::Gzip,
        compression_level: None,
        force_compression: false,
        ignore_error: false,
        reset: false,
        gc: GcPolicy::default(),
    };
    let mut dest = None;
    for (k, v) in &pairs {
        let bad = |expected: &str| OptionError::BadValue {
            flag: FLAG,
            key: k.clone(),
            value: v.clone(),
            expected: expected.into(),
        };
        if registry
            && !REGISTRY_EXPORT_KEYS.contains(&k.as_str())
            && EXPORT_KEYS.contains(&k.as_str())
        {
            return Err(OptionError::Conflict {
                flag: FLAG,
                message: format!(
                    "key {k:?} is not supported for type=registry (accepted: {}); put the tag in ref=HOST/REPO:TAG",
                    REGISTRY_EXPORT_KEYS.join(", ")
                ),
            });
        }
        match k.as_str() {
            "type" => {}
            "ref" if registry => reference = Some(v.clone()),
            "dest" => dest = Some(PathBuf::from(v)),
            "mode" => {
                o.mode = match v.as_str() {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(bad("min or max")),
                }
            }
            "tag" => o.tag = v.clone(),
            "oci-mediatypes" => o.oci_mediatypes = parse_bool(FLAG, k, v)?,
            "image-manifest" => o.image_manifest = parse_bool(FLAG, k, v)?,
            "compression" => {
                o.compression = match v.as_str() {
                    "uncompressed" => CompressionType::Uncompressed,
                    "gzip" => CompressionType::Gzip,
                    "estargz" => CompressionType::Estargz,
                    "zstd" => CompressionType::Zstd,
                    _ => return Err(bad("uncompressed, gzip, estargz or zstd")),
                }
            }
            "compression-level" => {
                o.compression_level = Some(v.parse().map_err(|_| bad("an integer"))?)
            }
            // BuildKit: an empty value means true.
            "force-compression" => o.force_compression = v.is_empty() || parse_bool(FLAG, k, v)?,
            "ignore-error" => o.ignore_error = parse_bool(FLAG, k, v)?,
            "reset" => o.reset = parse_bool(FLAG, k, v)?,
            "keep-last" => o.gc.keep_last = Some(v.parse().map_err(|_| bad("a number"))?),
            "max-size" => {
                o.gc.max_size = Some(parse_size(v).ok_or_else(|| bad("a size like 5GiB"))?)
            }
            "max-age" => {
                o.gc.max_age_secs =
                    Some(parse_duration(v).ok_or_else(|| bad("a duration like 7d or 12h"))?)
            }
            "src" | "digest" | "ref" => warnings.push(format!(
                "{FLAG}: key {k:?} applies to --cache-from only and is ignored here"
            )),
            other if OTHER_BACKEND_KEYS.contains(&other) => warnings.push(format!(
                "{FLAG}: key {other:?} is not used by type={backend} and is ignored"
            )),
            other => {
                return Err(OptionError::UnknownKey {
                    flag: FLAG,
                    key: other.to_owned(),
                    backend,
                    accepted: EXPORT_KEYS.join(", "),
                });
            }
        }
    }
    if registry {
        let r = reference.filter(|r| !r.is_empty()).ok_or(OptionError::Missing {
            flag: FLAG,
            message: "registry cache exporter requires ref".into(),
        })?;
        // Registries reject the index form (spec §11): the image-manifest form unless the
        // user says otherwise.
        if !pairs.iter().any(|(k, _)| k == "image-manifest") {
            o.image_manifest = o.oci_mediatypes;
        }
        o.dest = PathBuf::from(&r);
        o.backend = Backend::Registry { reference: r };
    } else {
        o.dest = dest.filter(|d| !d.as_os_str().is_empty()).ok_or(OptionError::Missing {
            flag: FLAG,
            message: "local cache exporter requires dest".into(),
        })?;
    }
    if o.image_manifest && !o.oci_mediatypes {
        return Err(OptionError::Conflict {
            flag: FLAG,
            message: "image-manifest=true requires oci-mediatypes=true (OCI mediatypes are \
                      required for the image-manifest cache format)"
                .into(),
        });
    }
    if let Some(level) = o.compression_level {
        match o.compression.level_range() {
            Some((lo, hi)) if level < lo || level > hi => {
                return Err(OptionError::BadValue {
                    flag: FLAG,
                    key: "compression-level".into(),
                    value: level.to_string(),
                    expected: format!("{lo}..{hi} for compression={}", o.compression),
                });
            }
            None => warnings
                .push(format!("{FLAG}: compression-level is ignored for compression=uncompressed")),
            _ => {}
        }
    }
    Ok((o, warnings))
}

/// Parses one `--cache-from` value.
pub fn parse_import(value: &str) -> Result<(ImportOptions, Warnings), OptionError> {
    const FLAG: &str = "--cache-from";
    let pairs = split_csv(FLAG, value)?;
    if pairs.is_empty() {
        return Err(OptionError::Missing { flag: FLAG, message: "empty value".into() });
    }
    let backend = backend_of(FLAG, &pairs)?;
    let registry = backend == "registry";
    let mut warnings = Vec::new();
    let mut src = None;
    let mut digest = None;
    let mut tag = "latest".to_owned();
    for (k, v) in &pairs {
        match k.as_str() {
            "type" => {}
            "ref" if registry => src = Some(PathBuf::from(v)),
            "src" if registry => {
                return Err(OptionError::Conflict {
                    flag: FLAG,
                    message: "type=registry takes ref=HOST/REPO[:TAG], not src=".into(),
                });
            }
            "src" => src = Some(PathBuf::from(v)),
            "ref" => {
                warnings.push(format!(
                    "{FLAG}: ref= is taken as src= for type=local (the documented key is src)"
                ));
                if src.is_none() {
                    src = Some(PathBuf::from(v));
                }
            }
            "digest" => {
                digest = Some(Digest::parse(v).map_err(|e| OptionError::BadValue {
                    flag: FLAG,
                    key: k.clone(),
                    value: v.clone(),
                    expected: e.to_string(),
                })?)
            }
            "tag" => tag = v.clone(),
            other if EXPORT_KEYS.contains(&other) => warnings.push(format!(
                "{FLAG}: key {other:?} applies to --cache-to only and is ignored here"
            )),
            other if OTHER_BACKEND_KEYS.contains(&other) => warnings.push(format!(
                "{FLAG}: key {other:?} is not used by type={backend} and is ignored"
            )),
            other => {
                return Err(OptionError::UnknownKey {
                    flag: FLAG,
                    key: other.to_owned(),
                    backend,
                    accepted: IMPORT_KEYS.join(", "),
                });
            }
        }
    }
    let src = src.filter(|s| !s.as_os_str().is_empty()).ok_or(OptionError::Missing {
        flag: FLAG,
        message: if registry {
            "registry cache importer requires ref".into()
        } else {
            "local cache importer requires src".into()
        },
    })?;
    if registry {
        let reference = src.to_string_lossy().into_owned();
        return Ok((
            ImportOptions { src, backend: Backend::Registry { reference }, digest, tag },
            warnings,
        ));
    }
    if digest.is_none() && tag.is_empty() {
        return Err(OptionError::Missing {
            flag: FLAG,
            message: "local cache importer requires either explicit digest, \"latest\" tag or \
                      custom tag on index.json"
                .into(),
        });
    }
    Ok((ImportOptions { src, backend: Backend::Local, digest, tag }, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_seed_key() {
        let (o, w) = parse_export(
            "type=local,dest=/tmp/c,mode=max,oci-mediatypes=false,compression=zstd,\
             compression-level=19,force-compression=true,ignore-error=true,tag=v1",
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(o.dest, PathBuf::from("/tmp/c"));
        assert_eq!(o.mode, CacheMode::Max);
        assert!(!o.oci_mediatypes && !o.image_manifest);
        assert_eq!((o.compression, o.compression_level), (CompressionType::Zstd, Some(19)));
        assert!(o.force_compression && o.ignore_error);
        assert_eq!(o.tag, "v1");
        let (i, _) = parse_import(
            "type=local,src=/c,digest=sha256:6982c70595cb91769f61cd1e064cf5f41d5357387bab6b18c0164c5f98c1f707",
        )
        .unwrap();
        assert!(i.digest.is_some());
    }

    #[test]
    fn defaults_follow_the_seed() {
        let (o, _) = parse_export("type=local,dest=d").unwrap();
        assert_eq!(o.mode, CacheMode::Min);
        assert!(o.oci_mediatypes);
        assert!(!o.image_manifest);
        assert_eq!(o.compression, CompressionType::Gzip);
        assert_eq!(o.tag, "latest");
    }

    #[test]
    fn rejects_typos_and_bad_values_naming_the_key() {
        let e = parse_export("type=local,dest=d,compresion=zstd").unwrap_err().to_string();
        assert!(e.contains("\"compresion\"") && e.contains("compression-level"), "{e}");
        let e = parse_export("type=local,dest=d,compression=zstd,compression-level=23")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0..22"), "{e}");
        let e = parse_export("type=local,dest=d,compression-level=10").unwrap_err().to_string();
        assert!(e.contains("0..9"), "{e}");
        assert!(parse_export("type=local,dest=d,oci-mediatypes=maybe").is_err());
        assert!(
            parse_export("type=local,mode=max").unwrap_err().to_string().contains("requires dest")
        );
        assert!(
            parse_export("type=local,dest=d,image-manifest=true,oci-mediatypes=false").is_err()
        );
        assert!(parse_import("type=local,src=d,digest=sha256:../../x").is_err());
        assert!(matches!(parse_export("type=s3,dest=d"), Err(OptionError::Unsupported { .. })));
    }

    #[test]
    fn other_direction_and_backend_keys_warn() {
        let (_, w) = parse_import("type=local,src=d,mode=max,scope=x").unwrap();
        assert_eq!(w.len(), 2);
        let (i, w) = parse_import("type=local,ref=path/to/dir").unwrap();
        assert_eq!(i.src, PathBuf::from("path/to/dir"));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn csv_quotes_and_sizes() {
        let p = split_csv("--cache-to", r#"type=local,"dest=a,b",mode=max"#).unwrap();
        assert_eq!(p[1], ("dest".into(), "a,b".into()));
        assert!(split_csv("--cache-to", r#""dest=a"#).is_err());
        // Go's csv rules: no bare quotes, nothing after a closing quote.
        for bad in [r#"type=local,dest="unterminated"#, r#"dest=a"b"#, r#""dest=a"b,x=y"#] {
            let err = split_csv("--cache-to", bad).unwrap_err().to_string();
            assert!(err.contains("quote") || err.contains('"'), "{bad}: {err}");
        }
        assert_eq!(split_csv("--cache-to", r#""a=""x""""#).unwrap()[0].1, r#""x""#);
        assert_eq!(parse_size("5GiB"), Some(5 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_duration("7d"), Some(7 * 86400));
        let (o, _) = parse_export("type=local,dest=d,keep-last=3,max-size=5GiB").unwrap();
        assert_eq!(o.gc.keep_last, Some(3));
    }

    #[test]
    fn registry_backend() {
        let (o, _) = parse_export("type=registry,ref=127.0.0.1:5000/c:t,mode=max").unwrap();
        assert_eq!(o.backend.registry_ref(), Some("127.0.0.1:5000/c:t"));
        assert!(o.image_manifest, "image-manifest defaults to true for registries");
        assert_eq!(o.dest, PathBuf::from("127.0.0.1:5000/c:t"));
        let (o, _) = parse_export("type=registry,ref=r/c,image-manifest=false").unwrap();
        assert!(!o.image_manifest);
        let (o, _) = parse_export("type=registry,ref=r/c,oci-mediatypes=false").unwrap();
        assert!(!o.image_manifest);
        assert!(matches!(parse_export("type=registry"), Err(OptionError::Missing { .. })));
        assert!(matches!(
            parse_export("type=registry,ref=r/c,keep-last=2"),
            Err(OptionError::Conflict { .. })
        ));
        let (i, _) = parse_import("type=registry,ref=r/c:t").unwrap();
        assert_eq!(i.backend.registry_ref(), Some("r/c:t"));
        assert!(matches!(parse_import("type=registry,src=x"), Err(OptionError::Conflict { .. })));
        let (l, _) = parse_export("type=local,dest=d").unwrap();
        assert_eq!(l.backend, Backend::Local);
    }
}
