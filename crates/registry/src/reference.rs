//! Image references with Docker's name rules: `alpine` is `docker.io/library/alpine:latest`,
//! `host:port/repo` names a registry because the first component has a `.` or `:` or is
//! `localhost`. Parsing is oci-spec's (the same normalisation containerd and the distribution
//! reference package apply); this wrapper adds the strata-facing API and error.

use std::fmt;

use oci_client::Reference;
use strata_oci::Digest;

use crate::error::RegistryError;

/// A parsed `[host[:port]/]name[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub(crate) inner: Reference,
}

impl ImageRef {
    /// Parses a reference as `FROM`, `-t` and `ref=` accept it.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let s = s.strip_prefix("docker-image://").unwrap_or(s);
        let inner: Reference = s.parse().map_err(|e: oci_client::ParseError| {
            RegistryError::BadReference { reference: s.to_owned(), reason: e.to_string() }
        })?;
        // Docker: repository components are lowercase alphanumerics and separators.
        if !inner
            .repository()
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'))
        {
            return Err(RegistryError::BadReference {
                reference: s.to_owned(),
                reason: format!("repository {:?} must be lowercase", inner.repository()),
            });
        }
        if let Some(d) = inner.digest() {
            Digest::parse(d).map_err(|e| RegistryError::BadReference {
                reference: s.to_owned(),
                reason: e.to_string(),
            })?;
        }
        Ok(Self { inner })
    }

    /// The registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The host requests go to (`index.docker.io` for Docker Hub).
    pub fn host(&self) -> &str {
        self.inner.resolve_registry()
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, when pinned with `@sha256:…`.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// The same repository at `digest` (drops the tag).
    pub fn with_digest(&self, digest: &Digest) -> Self {
        Self {
            inner: Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_string(),
            ),
        }
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            inner: Reference::with_tag(
                self.registry().to_owned(),
                self.repository().to_owned(),
                tag.to_owned(),
            ),
        }
    }

    /// Whether the registry is on this machine (plain HTTP is allowed there, as Docker does).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }
}

/// `localhost`, `127.*` and `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h == "localhost" || h == "::1" || h.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_name_rules() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.host(), "index.docker.io");
        let r = ImageRef::parse("127.0.0.1:5000/x/busybox:1.0").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "x/busybox", Some("1.0"))
        );
        assert!(r.is_loopback());
        let d = "sha256:d470348f8348647975c19ab59157b2a1a2c4dcf4d41f32439c13973f97794273";
        let r = ImageRef::parse(&format!("localhost:1/a@{d}")).unwrap();
        assert_eq!(r.digest().unwrap().as_str(), d);
        assert!(r.is_loopback());
        assert!(!ImageRef::parse("ghcr.io/a/b").unwrap().is_loopback());
        assert_eq!(ImageRef::parse("user/app").unwrap().to_string(), "docker.io/user/app:latest");
    }

    #[test]
    fn bad_references_name_the_input() {
        for bad in ["", "UPPER/case", "a@sha256:zz", "host:5000/:tag"] {
            let e = ImageRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:1", "127.3.4.5", "[::1]:5000"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "example.com", "localhost.example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
