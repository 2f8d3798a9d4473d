//! strata-oci: an OCI image-layout store that never loses or half-writes data.
//!
//! Layout (the same as BuildKit's `type=local` cache and containerd's local store):
//!
//! ```text
//! <dir>/oci-layout            {"imageLayoutVersion":"1.0.0"}
//! <dir>/index.json            one entry per tag
//! <dir>/index.json.lock       flock shared with buildx/buildctl
//! <dir>/blobs/sha256/<hex>    content-addressed, read-only once committed
//! <dir>/ingest/<h>/           in-progress writes
//! ```

pub mod descriptor;
pub mod digest;
pub mod gojson;
pub mod media;

pub use descriptor::{Descriptor, Platform};
pub use digest::{Digest, DigestError, Hasher, HashingReader, HashingWriter};
