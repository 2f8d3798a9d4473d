//! strata-registry: talks to OCI distribution registries (Docker Hub, distribution, GHCR, …).
//!
//! * [`ImageRef`]: `[host[:port]/]name[:tag][@digest]` with Docker's name rules.
//! * [`Settings`]: credentials from Docker's `config.json` `auths`, plain-HTTP hosts from
//!   strata's config file (loopback registries always use plain HTTP); see [`config`].
//! * [`Registry`]: a synchronous client (a private tokio runtime drives the `oci-client`
//!   crate, which implements the protocol: token and basic auth challenges, chunked uploads,
//!   cross-repository mounts) with retries and digest verification.
//!
//! Image semantics (platform selection, layers into the state store) live in strata-build;
//! this crate only moves verified bytes.

pub mod client;
pub mod config;
pub mod error;
pub mod reference;

pub use client::{JSON_LIMIT, MANIFEST_MEDIA_TYPES, Manifest, Registry, RetryPolicy};
pub use config::Settings;
pub use error::RegistryError;
pub use reference::ImageRef;
