//! Where registry settings come from.
//!
//! * Credentials: Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//!   `~/.docker/config.json`), its `auths` map: `{"auths": {"HOST": {"auth": base64(user:pass)}}}`
//!   or `{"username": …, "password": …}`, or `{"identitytoken": …}` / `{"registrytoken": …}`
//!   for bearer tokens. Docker Hub's key `https://index.docker.io/v1/` is honoured for
//!   `docker.io`. Credential helpers are run as Docker runs them: `credHelpers[HOST]`, else
//!   `credsStore`, as `docker-credential-<name> get` with the server on stdin, answering
//!   `{"Username": …, "Secret": …}` (`<token>` as the username means a bearer token).
//! * Insecure (plain HTTP) registries: strata's own config file, the first that exists of
//!   `$STRATA_CONFIG`, `$XDG_CONFIG_HOME/strata/config.json` (`~/.config/strata/config.json`)
//!   and `/etc/strata/config.json`: `{"insecure-registries": ["host:port", …]}`. Loopback
//!   registries (`localhost`, `127.*`, `[::1]`) always speak plain HTTP, as Docker allows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::error::RegistryError;

/// strata's registry settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Hosts (`host[:port]`) reached over plain HTTP although not loopback.
    pub insecure_registries: Vec<String>,
    /// The Docker config file credentials come from (whether or not it exists).
    pub docker_config: PathBuf,
    /// Its `auths`, by host.
    pub auths: BTreeMap<String, AuthEntry>,
    /// `credsStore`: the default credential helper.
    pub creds_store: Option<String>,
    /// `credHelpers`: a credential helper per registry host.
    pub cred_helpers: BTreeMap<String, String>,
    /// Where `docker-credential-*` helpers are looked up (`None`: `PATH`, as Docker does).
    pub helper_dir: Option<PathBuf>,
}

/// One `auths` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default)]
    pub auth: Option<String>,
    /// Plain user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Plain password.
    #[serde(default)]
    pub password: Option<String>,
    /// OAuth refresh/identity token (used as a bearer token).
    #[serde(default)]
    pub identitytoken: Option<String>,
    /// A registry bearer token.
    #[serde(default)]
    pub registrytoken: Option<String>,
}

#[derive(Deserialize)]
struct StrataConfig {
    #[serde(rename = "insecure-registries", default)]
    insecure_registries: Vec<String>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
}

/// What `docker-credential-<name> get` prints.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Candidate locations of strata's config file, in the order they are tried.
pub fn strata_config_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = env_path("STRATA_CONFIG") {
        v.push(p);
    }
    let xdg = env_path("XDG_CONFIG_HOME").or_else(|| env_path("HOME").map(|h| h.join(".config")));
    if let Some(x) = xdg {
        v.push(x.join("strata/config.json"));
    }
    v.push(PathBuf::from("/etc/strata/config.json"));
    v
}

/// The Docker config file path (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
pub fn docker_config_path() -> PathBuf {
    if let Some(d) = env_path("DOCKER_CONFIG") {
        return d.join("config.json");
    }
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/root")).join(".docker/config.json")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RegistryError::Io { op: "read", path: path.into(), source }),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| RegistryError::Config {
        path: path.into(),
        reason: format!("not valid JSON for this file ({e}); fix or remove it"),
    })
}

impl Settings {
    /// Loads settings from the standard places (see the module docs).
    pub fn load() -> Result<Self, RegistryError> {
        let mut s = Settings { docker_config: docker_config_path(), ..Default::default() };
        for p in strata_config_paths() {
            if let Some(c) = read_json::<StrataConfig>(&p)? {
                s.insecure_registries = c.insecure_registries;
                break;
            }
        }
        if let Some(d) = read_json::<DockerConfig>(&s.docker_config)? {
            s.auths = d.auths;
            s.creds_store = d.creds_store.filter(|c| !c.is_empty());
            s.cred_helpers = d.cred_helpers;
        }
        Ok(s)
    }

    /// Whether `host` is spoken to over plain HTTP.
    pub fn plain_http(&self, host: &str) -> bool {
        crate::reference::is_loopback_host(host)
            || self.insecure_registries.iter().any(|h| h == host)
    }

    /// Credentials for `registry` (as written in the reference, e.g. `docker.io`).
    pub fn auth_for(&self, registry: &str) -> Result<RegistryAuth, RegistryError> {
        let keys: Vec<String> = if registry == "docker.io" || registry == "index.docker.io" {
            vec!["https://index.docker.io/v1/".into(), "docker.io".into(), "index.docker.io".into()]
        } else {
            vec![registry.into(), format!("https://{registry}"), format!("http://{registry}")]
        };
        // Docker's order: a per-registry helper, then the default store, then `auths`.
        let helper =
            keys.iter().find_map(|k| self.cred_helpers.get(k)).or(self.creds_store.as_ref());
        if let Some(h) = helper
            && let Some(auth) = self.run_helper(h, &keys[0])?
        {
            return Ok(auth);
        }
        let Some(e) = keys.iter().find_map(|k| self.auths.get(k)) else {
            return Ok(RegistryAuth::Anonymous);
        };
        if let Some(t) = e.registrytoken.as_ref().or(e.identitytoken.as_ref()) {
            return Ok(RegistryAuth::Bearer(t.clone()));
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
        }
        if let Some(a) = &e.auth {
            let bad = |why: &str| RegistryError::Config {
                path: self.docker_config.clone(),
                reason: format!(
                    "auths.{registry:?}.auth {why}; it must be base64 of USER:PASSWORD"
                ),
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| bad("is not base64"))?;
            let text = String::from_utf8(raw).map_err(|_| bad("is not UTF-8"))?;
            let (u, p) = text.split_once(':').ok_or_else(|| bad("has no ':'"))?;
            return Ok(RegistryAuth::Basic(u.to_owned(), p.to_owned()));
        }
        Ok(RegistryAuth::Anonymous)
    }

    /// Runs `docker-credential-<helper> get` for `server`. A helper that has no entry for
    /// the server ("credentials not found") means anonymous, like Docker.
    fn run_helper(
        &self,
        helper: &str,
        server: &str,
    ) -> Result<Option<RegistryAuth>, RegistryError> {
        use std::io::Write;
        let name = format!("docker-credential-{helper}");
        let bin = match &self.helper_dir {
            Some(d) => d.join(&name).display().to_string(),
            None => name,
        };
        let bad =
            |reason: String| RegistryError::Config { path: self.docker_config.clone(), reason };
        let mut child = std::process::Command::new(&bin)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| bad(format!("credential helper {bin} could not run ({e}); install it or remove it from the config")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| bad(format!("credential helper {bin} failed: {e}")))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if text.to_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(bad(format!("credential helper {bin} get {server}: {}", text.trim())));
        }
        let a: HelperAnswer = serde_json::from_slice(&out.stdout)
            .map_err(|e| bad(format!("credential helper {bin} printed no valid answer ({e})")))?;
        Ok(Some(if a.username == "<token>" {
            RegistryAuth::Bearer(a.secret)
        } else {
            RegistryAuth::Basic(a.username, a.secret)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Settings {
        let d: DockerConfig = serde_json::from_str(json).unwrap();
        Settings { auths: d.auths, docker_config: "/x/config.json".into(), ..Default::default() }
    }

    #[test]
    fn auths_forms() {
        let s = settings(
            r#"{"auths":{"a:1":{"auth":"dTpwOnE="},"b":{"username":"x","password":"y"},
                "https://index.docker.io/v1/":{"identitytoken":"tok"},"c":{"auth":"!!"}}}"#,
        );
        assert!(
            matches!(s.auth_for("a:1").unwrap(), RegistryAuth::Basic(u, p) if u == "u" && p == "p:q")
        );
        assert!(matches!(s.auth_for("b").unwrap(), RegistryAuth::Basic(u, _) if u == "x"));
        assert!(matches!(s.auth_for("docker.io").unwrap(), RegistryAuth::Bearer(t) if t == "tok"));
        assert!(matches!(s.auth_for("other").unwrap(), RegistryAuth::Anonymous));
        let e = s.auth_for("c").unwrap_err().to_string();
        assert!(e.contains("/x/config.json") && e.contains("base64"), "{e}");
    }

    #[test]
    fn credential_helpers_run_like_docker() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let helper = t.path().join("docker-credential-strata-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread s\ncase \"$s\" in\n  reg.example) echo '{\"Username\":\"u\",\"Secret\":\"s3\"}';;\n  tok.example) echo '{\"Username\":\"<token>\",\"Secret\":\"t\"}';;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = settings(r#"{"auths":{"other.example":{"username":"a","password":"b"}}}"#);
        s.creds_store = Some("strata-test".into());
        s.cred_helpers.insert("tok.example".into(), "strata-test".into());
        s.helper_dir = Some(t.path().to_owned());
        let basic = s.auth_for("reg.example").unwrap();
        let bearer = s.auth_for("tok.example").unwrap();
        let none = s.auth_for("nothing.example").unwrap();
        // A helper without an entry falls back to `auths`, as Docker does.
        let from_auths = s.auth_for("other.example").unwrap();
        assert!(matches!(from_auths, RegistryAuth::Basic(u, p) if u == "a" && p == "b"));
        assert!(matches!(basic, RegistryAuth::Basic(u, p) if u == "u" && p == "s3"));
        assert!(matches!(bearer, RegistryAuth::Bearer(t) if t == "t"));
        assert!(matches!(none, RegistryAuth::Anonymous));
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed() {
        let s = Settings { insecure_registries: vec!["reg.lan:5000".into()], ..Default::default() };
        assert!(s.plain_http("127.0.0.1:5000"));
        assert!(s.plain_http("reg.lan:5000"));
        assert!(!s.plain_http("reg.lan"));
        assert!(!s.plain_http("ghcr.io"));
    }
}
