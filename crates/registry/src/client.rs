//! The synchronous facade: [`Registry`] owns a private tokio runtime and one oci-client
//! [`Client`] per registry host, so the rest of strata (rayon + blocking I/O) never sees async.
//! Every call retries transient failures (connection refused/reset, timeouts, 5xx, 429) with
//! exponential backoff, verifies what it downloads against its digest, and turns the
//! client's errors into [`RegistryError`]s that name the registry and the reference.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use strata_oci::{Digest, Hasher};

use crate::config::Settings;
use crate::error::RegistryError;
use crate::reference::ImageRef;

/// Media types a manifest GET accepts: OCI and Docker schema 2, single and multi-platform.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests and configs are small; refuse anything absurd rather than hold it in memory.
pub const JSON_LIMIT: u64 = 16 << 20;

/// A fetched manifest (or index).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The raw bytes (what the digest covers).
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// `mediaType` from the document, else the response's content type.
    pub media_type: String,
}

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, first_delay: Duration::from_millis(250) }
    }
}

/// A registry client for any number of registries.
pub struct Registry {
    rt: tokio::runtime::Runtime,
    settings: Settings,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Which request failed, for messages.
struct Ctx<'a> {
    r: &'a ImageRef,
    what: String,
}

impl Registry {
    /// A client with settings from the standard places ([`Settings::load`]).
    pub fn new() -> Result<Self, RegistryError> {
        Self::with_settings(Settings::load()?)
    }

    /// A client with explicit settings.
    pub fn with_settings(settings: Settings) -> Result<Self, RegistryError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-registry")
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        Ok(Self { rt, settings, clients: Mutex::new(HashMap::new()), retry: Default::default() })
    }

    /// Replaces the retry policy (tests use a short one).
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn client(&self, r: &ImageRef) -> Result<Arc<Client>, RegistryError> {
        let host = r.host().to_owned();
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&host) {
            return Ok(c.clone());
        }
        let protocol = if self.settings.plain_http(&host) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Arc::new(Client::new(ClientConfig {
            protocol,
            // strata picks the platform itself (it also checks --platform and configs).
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("strata/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }));
        let auth = self.settings.auth_for(r.registry())?;
        self.rt.block_on(client.store_auth_if_needed(&host, &auth));
        map.insert(host, client.clone());
        Ok(client)
    }

    fn classify(&self, ctx: &Ctx<'_>, e: OciDistributionError) -> RegistryError {
        let registry = ctx.r.registry().to_owned();
        let reference = ctx.what.clone();
        let detail = e.to_string();
        let by_status = |code: u16, detail: String| match code {
            401 | 403 => RegistryError::Unauthorized {
                registry: registry.clone(),
                reference: reference.clone(),
                detail,
                docker_config: self.settings.docker_config.display().to_string(),
            },
            404 => RegistryError::NotFound {
                registry: registry.clone(),
                reference: reference.clone(),
                detail,
            },
            c => RegistryError::Server {
                registry: registry.clone(),
                reference: reference.clone(),
                detail,
                transient: c >= 500 || c == 429 || c == 408,
            },
        };
        match e {
            OciDistributionError::RequestError(re) => match re.status() {
                Some(s) => by_status(s.as_u16(), detail),
                None => {
                    RegistryError::Unreachable { registry, reference, detail: error_chain(&re) }
                }
            },
            OciDistributionError::ServerError { code, .. } => by_status(code, detail),
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => by_status(401, detail),
            OciDistributionError::ImageManifestNotFoundError(_) => by_status(404, detail),
            OciDistributionError::RegistryError { envelope, .. } => {
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound,
                    ) => by_status(404, detail),
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        by_status(401, detail)
                    }
                    Some(OciErrorCode::Toomanyrequests) => by_status(429, detail),
                    _ => by_status(400, detail),
                }
            }
            OciDistributionError::IoError(io) => {
                RegistryError::Unreachable { registry, reference, detail: io.to_string() }
            }
            _ => by_status(400, detail),
        }
    }

    /// Runs `op` with retries; `op` builds a fresh future each attempt.
    fn retrying<T, F, Fut>(&self, ctx: &Ctx<'_>, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        self.retrying_sync(ctx, || self.rt.block_on(op()))
    }

    /// [`Self::retrying`] for an attempt that drives the runtime itself.
    fn retrying_sync<T>(
        &self,
        ctx: &Ctx<'_>,
        mut op: impl FnMut() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.retry.attempts.max(1) => {
                    tracing::debug!(what = %ctx.what, attempt, error = %e, "registry: retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetches the manifest `r` names (by tag or digest). A digest-pinned fetch is verified.
    pub fn get_manifest(&self, r: &ImageRef) -> Result<Manifest, RegistryError> {
        let client = self.client(r)?;
        let ctx = Ctx { r, what: r.to_string() };
        let auth = self.settings.auth_for(r.registry())?;
        let (bytes, ctype) = self.retrying(&ctx, || async {
            client
                .pull_manifest_raw(&r.inner, &auth, MANIFEST_MEDIA_TYPES)
                .await
                .map(|(b, _)| (b.to_vec(), ()))
                .map_err(|e| self.classify(&ctx, e))
        })?;
        let () = ctype;
        if bytes.len() as u64 > JSON_LIMIT {
            return Err(RegistryError::TooLarge {
                registry: r.registry().into(),
                reference: r.to_string(),
                what: "a manifest".into(),
                limit: JSON_LIMIT,
            });
        }
        let digest = Digest::of_bytes(&bytes);
        if let Some(want) = r.digest()
            && want != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: r.registry().into(),
                reference: r.to_string(),
                what: "a manifest".into(),
                expected: want.to_string(),
                found: digest.to_string(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Mt {
            #[serde(rename = "mediaType", default)]
            media_type: String,
        }
        let media_type =
            serde_json::from_slice::<Mt>(&bytes).map(|m| m.media_type).unwrap_or_default();
        Ok(Manifest { bytes, digest, media_type })
    }

    /// The manifest's digest for `r` if it exists, `None` on 404.
    pub fn try_get_manifest(&self, r: &ImageRef) -> Result<Option<Manifest>, RegistryError> {
        match self.get_manifest(r) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams blob `digest` of `r`'s repository into `out`, verifying it; returns its size.
    /// `out` is rewound (truncated) by `reset` before a retry.
    fn fetch_blob_into(
        &self,
        r: &ImageRef,
        digest: &Digest,
        limit: Option<u64>,
        out: &mut dyn FnMut(Option<&[u8]>) -> std::io::Result<()>,
    ) -> Result<u64, RegistryError> {
        let client = self.client(r)?;
        let ctx = Ctx { r, what: format!("{}@{digest} (blob)", strip_tag(r)) };
        self.retrying_sync(&ctx, || {
            (out)(None).map_err(|source| io_err(&ctx, source))?;
            self.rt.block_on(self.fetch_attempt(&client, r, &ctx, digest, limit, &mut *out))
        })
    }

    /// One download attempt of [`Self::fetch_blob_into`].
    async fn fetch_attempt(
        &self,
        client: &Client,
        r: &ImageRef,
        ctx: &Ctx<'_>,
        digest: &Digest,
        limit: Option<u64>,
        out: &mut dyn FnMut(Option<&[u8]>) -> std::io::Result<()>,
    ) -> Result<u64, RegistryError> {
        let dstr = digest.to_string();
        {
            let mut stream = client
                .pull_blob_stream(&r.inner, dstr.as_str())
                .await
                .map_err(|e| self.classify(ctx, e))?;
            let mut h = Hasher::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| RegistryError::Unreachable {
                    registry: r.registry().into(),
                    reference: ctx.what.clone(),
                    detail: format!("download interrupted: {e}"),
                })?;
                h.update(&chunk);
                if let Some(l) = limit
                    && h.len() > l
                {
                    return Err(RegistryError::TooLarge {
                        registry: r.registry().into(),
                        reference: ctx.what.clone(),
                        what: "a blob".into(),
                        limit: l,
                    });
                }
                (out)(Some(&chunk)).map_err(|source| io_err(ctx, source))?;
            }
            let n = h.len();
            let got = h.finish();
            if got != *digest {
                return Err(RegistryError::DigestMismatch {
                    registry: r.registry().into(),
                    reference: ctx.what.clone(),
                    what: "a blob".into(),
                    expected: digest.to_string(),
                    found: got.to_string(),
                });
            }
            Ok(n)
        }
    }

    /// A small blob (a config) in memory, verified.
    pub fn get_blob_bytes(
        &self,
        r: &ImageRef,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut buf = Vec::new();
        self.fetch_blob_into(r, digest, Some(limit), &mut |c| {
            match c {
                None => buf.clear(),
                Some(c) => buf.extend_from_slice(c),
            }
            Ok(())
        })?;
        Ok(buf)
    }

    /// Downloads blob `digest` into `dest` (created or truncated), verified; returns its size.
    /// Safe to call from several threads at once (layers download in parallel).
    pub fn download_blob(
        &self,
        r: &ImageRef,
        digest: &Digest,
        dest: &Path,
    ) -> Result<u64, RegistryError> {
        let mut file: Option<std::io::BufWriter<std::fs::File>> = None;
        let n = self.fetch_blob_into(r, digest, None, &mut |c| {
            match c {
                None => file = Some(std::io::BufWriter::new(std::fs::File::create(dest)?)),
                Some(c) => {
                    file.as_mut().ok_or_else(|| std::io::Error::other("no file"))?.write_all(c)?
                }
            }
            Ok(())
        })?;
        if let Some(f) = file {
            let f = f.into_inner().map_err(|e| RegistryError::Io {
                op: "write",
                path: dest.into(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(|source| RegistryError::Io {
                op: "fsync",
                path: dest.into(),
                source,
            })?;
        }
        Ok(n)
    }

    /// Whether `r`'s repository has blob `digest` (HEAD).
    pub fn has_blob(&self, r: &ImageRef, digest: &Digest) -> Result<bool, RegistryError> {
        let client = self.client(r)?;
        let ctx = Ctx { r, what: format!("{}@{digest} (blob)", strip_tag(r)) };
        self.retrying(&ctx, || async {
            client.blob_exists(&r.inner, digest.as_str()).await.map_err(|e| self.classify(&ctx, e))
        })
    }

    /// Makes blob `digest` (the file `src`, `size` bytes) present in `r`'s repository:
    /// nothing if it is there, a cross-repository mount from `mount_from` (same registry)
    /// when that works, else an upload. Returns whether bytes were uploaded.
    pub fn put_blob_file(
        &self,
        r: &ImageRef,
        digest: &Digest,
        size: u64,
        src: &Path,
        mount_from: Option<&ImageRef>,
    ) -> Result<bool, RegistryError> {
        if self.has_blob(r, digest)? {
            return Ok(false);
        }
        let client = self.client(r)?;
        let ctx = Ctx { r, what: format!("{}@{digest} (blob upload)", strip_tag(r)) };
        if let Some(from) = mount_from
            && from.host() == r.host()
            && from.repository() != r.repository()
        {
            let mounted =
                self.rt.block_on(client.mount_blob(&r.inner, &from.inner, digest.as_str()));
            // A registry may answer 202 (start an upload) instead of mounting: check.
            if mounted.is_ok() && self.has_blob(r, digest)? {
                return Ok(false);
            }
        }
        self.retrying(&ctx, || async {
            let file = std::fs::File::open(src).map_err(|source| RegistryError::Io {
                op: "open",
                path: src.into(),
                source,
            })?;
            // The file is read in 4 MiB chunks as the upload proceeds (never whole in memory);
            // a local read is quick enough to do inline on the runtime.
            let stream = futures_util::stream::unfold(Some(file), |f| async move {
                let mut f = f?;
                let mut buf = vec![0u8; 4 << 20];
                let mut n = 0;
                while n < buf.len() {
                    match f.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => return Some((Err(OciDistributionError::IoError(e)), None)),
                    }
                }
                if n == 0 {
                    return None;
                }
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(f)))
            });
            client
                .push_blob_stream(&r.inner, stream, digest.as_str(), Some(size))
                .await
                .map_err(|e| self.classify(&ctx, e))
        })?;
        Ok(true)
    }

    /// Makes a small in-memory blob present in `r`'s repository; returns its digest.
    pub fn put_blob_bytes(&self, r: &ImageRef, data: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(r, &digest)? {
            return Ok(digest);
        }
        let client = self.client(r)?;
        let ctx = Ctx { r, what: format!("{}@{digest} (blob upload)", strip_tag(r)) };
        let data = bytes::Bytes::copy_from_slice(data);
        self.retrying(&ctx, || async {
            client
                .push_blob(&r.inner, data.clone(), digest.as_str())
                .await
                .map_err(|e| self.classify(&ctx, e))
        })?;
        Ok(digest)
    }

    /// Stores a manifest under `r` (its tag, or its digest); returns the manifest digest.
    pub fn put_manifest(
        &self,
        r: &ImageRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let client = self.client(r)?;
        let ctx = Ctx { r, what: format!("{r} (manifest upload)") };
        let ct = reqwest_header(media_type).ok_or_else(|| RegistryError::Server {
            registry: r.registry().into(),
            reference: r.to_string(),
            detail: format!("media type {media_type:?} is not a valid header value"),
            transient: false,
        })?;
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.retrying(&ctx, || async {
            client
                .push_manifest_raw(&r.inner, body.clone(), ct.clone())
                .await
                .map_err(|e| self.classify(&ctx, e))
        })?;
        Ok(Digest::of_bytes(bytes))
    }
}

fn reqwest_header(s: &str) -> Option<http::HeaderValue> {
    s.parse().ok()
}

fn strip_tag(r: &ImageRef) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

fn io_err(ctx: &Ctx<'_>, source: std::io::Error) -> RegistryError {
    RegistryError::Io { op: "write a download of", path: ctx.what.clone().into(), source }
}

/// `a: b: c` from an error and its sources (reqwest hides "connection refused" in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
