//! Content digests (`sha256:<64 hex>`), validated before they ever become paths.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a string is not a usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: {reason} (expected sha256:<64 lowercase hex digits>)")]
pub struct DigestError {
    /// The rejected input, as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A validated `sha256:<hex>` digest.
///
/// Only sha256 is produced or accepted: it is the only algorithm BuildKit writes, and
/// refusing others up front means a digest can never smuggle a path component
/// (`sha256:../../x`) into `blobs/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // Invariant: "sha256:" followed by exactly 64 lowercase hex digits.
    full: String,
}

impl Digest {
    /// The algorithm prefix, without the colon.
    pub const ALGORITHM: &'static str = "sha256";

    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let err = |reason| DigestError { value: s.chars().take(200).collect(), reason };
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(err("missing algorithm prefix"));
        };
        if alg != Self::ALGORITHM {
            return Err(err("unsupported algorithm"));
        }
        if hex.len() != 64 {
            return Err(err("wrong length"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err("not lowercase hex"));
        }
        Ok(Self { full: s.to_owned() })
    }

    /// Builds a digest from a finished sha256 hasher's 32 output bytes.
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        debug_assert_eq!(bytes.len(), 32);
        Self { full: format!("sha256:{}", hex::encode(bytes)) }
    }

    /// The sha256 digest of `data` (for small in-memory blobs such as manifests).
    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_sha256_bytes(&Sha256::digest(data))
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The 64 hex digits (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        &self.full[Self::ALGORITHM.len() + 1..]
    }

    /// The first 12 hex digits, for human output.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A streaming sha256 that also counts bytes; the building block of every
/// "hash while writing" path.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }
    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether nothing has been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(&self.inner.finalize())
    }
}

/// A writer adapter that hashes everything passing through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Hasher::new() }
    }
    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader adapter that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Hasher::new() }
    }
    /// Returns the inner reader, the digest and the byte count of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_like_digests() {
        for bad in [
            "sha256:../../x",
            "sha256:",
            "sha512:aa",
            "sha256:ABCDEF0000000000000000000000000000000000000000000000000000000000",
            "4c5a1549bbd1b5afec295bd195d5cee68c6853d1dd48f5d6a737cb955f852ed5",
            "sha256:4c5a1549bbd1b5afec295bd195d5cee68c6853d1dd48f5d6a737cb955f852ed/",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hashes_known_value() {
        assert_eq!(
            Digest::of_bytes(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = Digest::of_bytes(b"abc");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.hex().len(), 64);
    }
}
