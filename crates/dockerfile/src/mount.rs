//! `RUN --mount=<csv>` (BuildKit `instructions/commands_runmount.go`).

/// Mount type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// Read-only view of the context or another stage (default).
    Bind,
    /// Persistent cache directory.
    Cache,
    /// Fresh tmpfs.
    Tmpfs,
    /// A build secret as a file (or env var with `env=`).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// Cache sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Concurrent writers share the directory (default).
    Shared,
    /// Each writer gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A parsed `--mount` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `from=` (stage, image or named context).
    pub from: Option<String>,
    /// `id=` (cache id or secret id).
    pub id: Option<String>,
    /// `sharing=` (cache only).
    pub sharing: Option<Sharing>,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// Effective read-only flag (bind/secret/ssh default to read-only, cache/tmpfs not).
    pub readonly: bool,
    /// `required` (secret/ssh).
    pub required: bool,
    /// `size=` in bytes (tmpfs).
    pub size: Option<u64>,
    /// `env=` (secret exposed as environment variable).
    pub env: Option<String>,
}

/// Splits one CSV record as Go's `encoding/csv` does (quoted fields, `""` escapes).
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    if s.is_empty() {
        return Ok(out);
    }
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => {
                        out.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// Parse-time check BuildKit does before any expansion: CSV must be valid and `from=` may
/// not use variables (the stage graph is built before ARGs are known).
pub(crate) fn check_unexpanded(raw: &str) -> Result<(), String> {
    let fields = csv_fields(raw).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    for f in fields {
        if let Some((k, v)) = f.split_once('=')
            && k.eq_ignore_ascii_case("from")
            && let Some(i) = v.find('$')
            && i != v.len() - 1
        {
            return Err(format!(
                "'{k}' doesn't support variable expansion, define alias stage instead"
            ));
        }
    }
    Ok(())
}

/// The `from=` of a raw mount, without expansion (for the stage dependency graph).
pub(crate) fn mount_from(raw: &str) -> Option<String> {
    let fields = csv_fields(raw).ok()?;
    fields.iter().rev().find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.eq_ignore_ascii_case("from").then(|| v.to_string())
    })
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    // Go's strconv.ParseBool.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// go-units `RAMInBytes`: `64m`, `1.5GiB`, `512k` … (binary multiples).
fn ram_in_bytes(v: &str) -> Option<u64> {
    let s = v.trim();
    let idx = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let num: f64 = s[..idx].parse().ok()?;
    let unit = s[idx..].trim().to_ascii_lowercase();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let r = num * mult;
    (r.is_finite() && (0.0..1.8e19).contains(&r)).then_some(r as u64)
}

impl Mount {
    /// Parses a `--mount` value, expanding each value with `expand` first (BuildKit expands
    /// mount values with the stage's ARG/ENV at dispatch time).
    pub fn parse(
        raw: &str,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Self, String> {
        let fields = csv_fields(raw).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
        let mut m = Mount {
            kind: MountType::Bind,
            target: None,
            source: None,
            from: None,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            readonly: false,
            required: false,
            size: None,
            env: None,
        };
        let mut ro_auto = true;
        let secretish = |m: &Mount| matches!(m.kind, MountType::Secret | MountType::Ssh);
        let kind_name = |k: MountType| match k {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        };
        for field in fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
                None => (field.to_ascii_lowercase(), None),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => {
                        m.readonly = true;
                        ro_auto = false;
                    }
                    "readwrite" | "rw" => {
                        m.readonly = false;
                        ro_auto = false;
                    }
                    "required" if secretish(&m) => m.required = true,
                    "required" => {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            kind_name(m.kind)
                        ));
                    }
                    _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
                }
                continue;
            };
            let value = expand(value)?;
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_ascii_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => return Err(format!("unsupported mount type {value:?}")),
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.readonly = parse_bool(&key, &value)?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !parse_bool(&key, &value)?;
                    ro_auto = false;
                }
                "required" if secretish(&m) => m.required = parse_bool(&key, &value)?,
                "size" if m.kind == MountType::Tmpfs => {
                    m.size = Some(
                        ram_in_bytes(&value)
                            .ok_or_else(|| format!("invalid value for {key}: {value}"))?,
                    );
                }
                "required" | "size" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        kind_name(m.kind)
                    ));
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => return Err(format!("unsupported sharing value {value:?}")),
                    })
                }
                "mode" => {
                    m.mode = Some(
                        u32::from_str_radix(&value, 8)
                            .map_err(|_| format!("invalid value {value} for mode"))?,
                    )
                }
                "uid" => {
                    m.uid =
                        Some(value.parse().map_err(|_| format!("invalid value {value} for uid"))?)
                }
                "gid" => {
                    m.gid =
                        Some(value.parse().map_err(|_| format!("invalid value {value} for gid"))?)
                }
                "env" => m.env = Some(value),
                _ => return Err(format!("unexpected key '{key}' in '{field}'")),
            }
        }
        let file_info = matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache);
        if !file_info {
            for (set, n) in
                [(m.mode.is_some(), "mode"), (m.uid.is_some(), "uid"), (m.gid.is_some(), "gid")]
            {
                if set {
                    return Err(format!("{n} not allowed for {:?} type mounts", kind_name(m.kind)));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.kind == MountType::Secret {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.sharing.is_some() {
                return Err("secret mount should not define sharing".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err("invalid secret mount. one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
        }
        if m.sharing.is_some() && m.kind != MountType::Cache {
            return Err(format!("invalid cache sharing set for {} mount", kind_name(m.kind)));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    #[test]
    fn mount_table() {
        let m = Mount::parse(
            "type=cache,target=/root/.cache,id=go,sharing=locked,uid=1000,mode=0755",
            &ident,
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!((m.uid, m.mode, m.readonly), (Some(1000), Some(0o755), false));

        let m = Mount::parse("from=builder,src=/out,dst=/in", &ident).unwrap();
        assert_eq!((m.kind, m.readonly), (MountType::Bind, true));
        assert_eq!(m.from.as_deref(), Some("builder"));
        let m = Mount::parse("type=bind,target=/x,rw", &ident).unwrap();
        assert!(!m.readonly);
        let m = Mount::parse("type=secret,id=tok,required", &ident).unwrap();
        assert!(m.required && m.readonly);
        let m = Mount::parse("type=tmpfs,target=/t,size=64m", &ident).unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = Mount::parse("type=ssh,\"target=/a,b\"", &ident).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));

        for bad in [
            "type=nfs,target=/x",
            "type=bind,uid=1",
            "type=cache,sharing=weird",
            "type=bind,required",
            "type=secret",
            "target=/x,bogus=1",
            "target",
            "type=cache,target=\"/x",
        ] {
            assert!(Mount::parse(bad, &ident).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_checks() {
        assert_eq!(mount_from("type=bind,from=build,target=/x").as_deref(), Some("build"));
        assert!(check_unexpanded("from=$STAGE").is_err());
        assert!(check_unexpanded("from=a$").is_ok());
    }
}
