//! strata-oci: an OCI image-layout store that never loses or half-writes data.
//!
//! Layout (the same as BuildKit's `type=local` cache and containerd's local store):
//!
//! ```text
//! <dir>/oci-layout            {"imageLayoutVersion":"1.0.0"}
//! <dir>/index.json            one entry per tag
//! <dir>/index.json.lock       flock shared with buildx/buildctl
//! <dir>/blobs/sha256/<hex>    content-addressed, read-only once committed
//! <dir>/ingest/<h>/           in-progress writes (containerd: <hex of sha256(ref)>,
//!                             strata: strata-<pid>-<n>-<t>/ with data + owner)
//! <dir>/.strata-gc.lock       strata-private: shared by exports, exclusive for prune
//! ```
//!
//! Entry point: [`Layout`]. Writes go through [`BlobWriter`] (stream, hash, fsync, link
//! into place, never rewrite); `index.json` changes through [`Layout::update_index`]
//! (lock, read, merge, temp file, fsync, rename, fsync dir).

pub mod blob;
pub mod descriptor;
pub mod digest;
pub mod error;
pub mod gojson;
pub mod index;
pub mod ingest;
pub mod layout;
pub mod lock;
pub mod media;
pub mod stale;

pub use blob::{BlobEntry, BlobProblem, BlobWalk, SkippedEntry, VerifyingReader};
pub use descriptor::{Descriptor, Platform};
pub use digest::{Digest, DigestError, Hasher, HashingReader, HashingWriter};
pub use error::{Result, StoreError};
pub use index::Index;
pub use ingest::{BlobInfo, BlobStart, BlobWriter};
pub use layout::Layout;
pub use lock::{LockGuard, LockMode, default_lock_timeout};
pub use stale::{IngestEntry, IngestOwner};
