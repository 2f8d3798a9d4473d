//! Layer compression and decompression, with the diffID and blob digest computed in the
//! same streaming pass.
//!
//! ```text
//! tar bytes ──▶ sha256 (diffID) ──▶ compressor ──▶ sha256 (blob digest) ──▶ sink
//! ```
//!
//! Nothing here holds a whole layer: gzip keeps at most a few 1 MiB members in flight,
//! zstd streams, eStargz keeps one TOC entry per tar entry.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::str::FromStr;

use strata_oci::media::{self, LayerCompression, MediaFamily};
use strata_oci::{Digest, Hasher, HashingWriter};

use crate::estargz::{EstargzError, EstargzWriter};
use crate::pgzip::ParallelGzip;

/// Input size of one parallel gzip member. 1 MiB keeps the ratio within ~0.1% of a single
/// stream while giving enough members to keep every worker busy.
pub const GZIP_MEMBER_SIZE: usize = 1 << 20;

/// Default zstd worker count. It is fixed rather than taken from the CPU count because
/// zstd's output with workers differs from its output without them, and digests must not
/// depend on the machine.
pub const ZSTD_DEFAULT_WORKERS: u32 = 2;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Plain tar.
    Uncompressed,
    /// gzip (written as parallel independent members).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// eStargz: seekable gzip with a TOC, still readable by any gzip reader.
    Estargz,
}

impl Compression {
    /// Valid level range, or `None` when levels do not apply.
    pub fn level_range(self) -> Option<(i32, i32)> {
        match self {
            Compression::Uncompressed => None,
            Compression::Gzip | Compression::Estargz => Some((0, 9)),
            Compression::Zstd => Some((0, 22)),
        }
    }

    /// Level used when none is given (the same as BuildKit's defaults).
    pub fn default_level(self) -> Option<i32> {
        match self {
            Compression::Uncompressed => None,
            Compression::Gzip | Compression::Estargz => Some(6),
            Compression::Zstd => Some(3),
        }
    }

    /// The layer media type for this compression in a media-type family (eStargz uses the
    /// gzip type; it is recognised by its annotations).
    pub fn media_type(self, family: MediaFamily) -> &'static str {
        media::layer_media_type(family, self.layer_compression())
    }

    /// The compression as the OCI crate classifies media types.
    pub fn layer_compression(self) -> LayerCompression {
        match self {
            Compression::Uncompressed => LayerCompression::Uncompressed,
            Compression::Gzip | Compression::Estargz => LayerCompression::Gzip,
            Compression::Zstd => LayerCompression::Zstd,
        }
    }

    /// The name used in `--cache-to …,compression=<name>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Estargz => "estargz",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "uncompressed" => Compression::Uncompressed,
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            "estargz" => Compression::Estargz,
            other => return Err(CompressionError::UnknownCompression(other.to_owned())),
        })
    }
}

/// Compression choice plus tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressionOptions {
    /// The codec.
    pub compression: Compression,
    /// Level; `None` for the codec's default. Ignored for `Uncompressed`.
    pub level: Option<i32>,
    /// Worker threads. gzip/eStargz: any value gives identical bytes (default: available
    /// parallelism, at most 8). zstd: output depends on it being 0 or not, so the default
    /// is fixed at [`ZSTD_DEFAULT_WORKERS`].
    pub threads: Option<usize>,
}

impl CompressionOptions {
    /// Options for `compression` with default level and threads.
    pub fn new(compression: Compression) -> Self {
        Self { compression, level: None, threads: None }
    }

    /// Sets the level.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = Some(level);
        self
    }

    /// Sets the worker count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// The effective level, validated against the codec's range.
    pub fn effective_level(&self) -> Result<Option<i32>, CompressionError> {
        let c = self.compression;
        let Some((min, max)) = c.level_range() else { return Ok(None) };
        let level = self.level.or(c.default_level()).unwrap_or(min);
        if !(min..=max).contains(&level) {
            return Err(CompressionError::InvalidLevel { compression: c, level, min, max });
        }
        Ok(Some(level))
    }

    fn gzip_workers(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8)
        })
    }
}

/// Errors from compressing or decompressing a layer.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    /// Level outside the codec's range.
    #[error("{compression} compression level {level} is out of range (valid: {min}..={max})")]
    InvalidLevel {
        /// The codec.
        compression: Compression,
        /// The rejected level.
        level: i32,
        /// Lowest valid level.
        min: i32,
        /// Highest valid level.
        max: i32,
    },
    /// A compression name that is not known.
    #[error("unknown compression {0:?} (expected uncompressed, gzip, zstd or estargz)")]
    UnknownCompression(String),
    /// Reading the input failed.
    #[error("reading the layer input: {0}")]
    Read(#[source] io::Error),
    /// Writing the output (or compressing) failed.
    #[error("writing the {compression} layer: {source}")]
    Write {
        /// The codec.
        compression: Compression,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The input could not be converted to eStargz (it is not a well-formed tar).
    #[error(transparent)]
    Estargz(#[from] EstargzError),
    /// A media type and the content's magic bytes disagree.
    #[error("layer media type {media_type} says {declared:?}, but the content looks {found:?}")]
    MediaTypeMismatch {
        /// The declared media type.
        media_type: String,
        /// What the media type says.
        declared: LayerCompression,
        /// What the magic bytes say.
        found: LayerCompression,
    },
    /// A media type that is not a layer type.
    #[error("{0:?} is not a layer media type")]
    NotALayer(String),
}

/// The result of compressing a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedLayer {
    /// Codec used.
    pub compression: Compression,
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// sha256 of the uncompressed tar (for eStargz: including the TOC entry).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Extra descriptor annotations (eStargz: TOC digest and uncompressed size).
    pub annotations: BTreeMap<String, String>,
}

enum Inner<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(ParallelGzip<HashingWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<W>>),
    Estargz(Box<EstargzWriter<HashingWriter<W>>>),
}

/// A writer that compresses an uncompressed layer tar into `W`, hashing both sides.
///
/// Write the tar into it, then call [`LayerEncoder::finish`].
pub struct LayerEncoder<W: Write> {
    compression: Compression,
    diff: Hasher,
    inner: Inner<W>,
}

impl<W: Write> fmt::Debug for LayerEncoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerEncoder")
            .field("compression", &self.compression)
            .field("uncompressed_so_far", &self.diff.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> LayerEncoder<W> {
    /// Starts an encoder writing into `sink`.
    pub fn new(sink: W, opts: &CompressionOptions) -> Result<Self, CompressionError> {
        let compression = opts.compression;
        let level = opts.effective_level()?;
        let werr = |source| CompressionError::Write { compression, source };
        let hw = HashingWriter::new(sink);
        let inner = match compression {
            Compression::Uncompressed => Inner::Plain(hw),
            Compression::Gzip => Inner::Gzip(
                ParallelGzip::new(hw, level.unwrap_or(6), GZIP_MEMBER_SIZE, opts.gzip_workers())
                    .map_err(werr)?,
            ),
            Compression::Zstd => {
                let mut enc =
                    zstd::stream::write::Encoder::new(hw, level.unwrap_or(3)).map_err(werr)?;
                let workers = opts.threads.map(|t| t as u32).unwrap_or(ZSTD_DEFAULT_WORKERS);
                enc.multithread(workers).map_err(werr)?;
                Inner::Zstd(enc)
            }
            Compression::Estargz => Inner::Estargz(Box::new(
                EstargzWriter::new(hw, level.unwrap_or(6), opts.gzip_workers()).map_err(werr)?,
            )),
        };
        Ok(Self { compression, diff: Hasher::new(), inner })
    }

    /// Ends the stream: flushes the codec and returns the sink and the layer's digests.
    pub fn finish(self) -> Result<(W, CompressedLayer), CompressionError> {
        let compression = self.compression;
        let werr = |source| CompressionError::Write { compression, source };
        let mut annotations = BTreeMap::new();
        let (hw, diff_id, uncompressed_size) = match self.inner {
            Inner::Plain(mut hw) => {
                hw.flush().map_err(werr)?;
                (hw, self.diff.len(), self.diff.finish())
            }
            Inner::Gzip(gz) => (gz.finish().map_err(werr)?, self.diff.len(), self.diff.finish()),
            Inner::Zstd(enc) => {
                let mut hw = enc.finish().map_err(werr)?;
                hw.flush().map_err(werr)?;
                (hw, self.diff.len(), self.diff.finish())
            }
            Inner::Estargz(es) => {
                let done = es.finish().map_err(|e| into_estargz(e, compression))?;
                annotations
                    .insert(media::ANNOTATION_STARGZ_TOC.to_owned(), done.toc_digest.to_string());
                annotations.insert(
                    media::ANNOTATION_ESTARGZ_SIZE.to_owned(),
                    done.uncompressed_size.to_string(),
                );
                (done.sink, done.uncompressed_size, done.diff_id)
            }
        }
        .map_swap();
        let (sink, digest, size) = hw.finish();
        Ok((
            sink,
            CompressedLayer { compression, digest, size, diff_id, uncompressed_size, annotations },
        ))
    }
}

/// Puts the tuple in (sink, digest, size) order whichever way the arm built it.
trait MapSwap<H> {
    fn map_swap(self) -> (H, Digest, u64);
}
impl<H> MapSwap<H> for (H, u64, Digest) {
    fn map_swap(self) -> (H, Digest, u64) {
        (self.0, self.2, self.1)
    }
}

/// An eStargz parse error travels through `io::Write` as an `io::Error`; get it back out
/// so callers see the typed error.
fn into_estargz(e: io::Error, compression: Compression) -> CompressionError {
    if e.get_ref().is_some_and(|inner| inner.is::<EstargzError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(es) = inner.downcast::<EstargzError>() {
                return CompressionError::Estargz(*es);
            }
            return CompressionError::Write { compression, source: io::Error::other("estargz") };
        }
        return CompressionError::Write { compression, source: io::Error::other("estargz") };
    }
    CompressionError::Write { compression, source: e }
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::Plain(w) => w.write(buf)?,
            Inner::Gzip(w) => w.write(buf)?,
            Inner::Zstd(w) => w.write(buf)?,
            // eStargz hashes what it emits itself (its output adds the TOC entry).
            Inner::Estargz(w) => return w.write(buf),
        };
        self.diff.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(w) => w.flush(),
            Inner::Zstd(w) => w.flush(),
            Inner::Estargz(w) => w.flush(),
        }
    }
}

/// Compresses an uncompressed layer tar from `reader` into `sink` in one streaming pass.
pub fn compress(
    mut reader: impl Read,
    opts: &CompressionOptions,
    sink: impl Write,
) -> Result<CompressedLayer, CompressionError> {
    let compression = opts.compression;
    let mut enc = LayerEncoder::new(sink, opts)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressionError::Read(e)),
        };
        enc.write_all(&buf[..n]).map_err(|e| into_estargz(e, compression))?;
    }
    Ok(enc.finish()?.1)
}

/// What the first bytes of a blob say about its compression.
pub fn sniff(prefix: &[u8]) -> LayerCompression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        LayerCompression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        LayerCompression::Zstd
    } else {
        LayerCompression::Uncompressed
    }
}

/// Opens a (possibly compressed) layer blob as an uncompressed tar stream.
///
/// The compression is sniffed from the magic bytes (gzip `1f 8b`, multi-member
/// included; zstd `28 b5 2f fd`; anything else is plain tar). When `media_type` is given
/// and is a compressed layer type, it must agree with the magic bytes; an uncompressed
/// media type is accepted for any content because some registries mislabel gzip layers.
pub fn open_layer_reader<'a, R: Read + 'a>(
    reader: R,
    media_type: Option<&str>,
) -> Result<Box<dyn Read + 'a>, CompressionError> {
    let mut reader = reader;
    // Read the magic straight from the source, then put it back in front with `chain`:
    // simpler and exact even for readers that return one byte at a time.
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(CompressionError::Read)?;
    let prefix = magic[..got].to_vec();
    let found = sniff(&prefix);
    if let Some(mt) = media_type {
        let (_, declared) =
            media::layer_kind(mt).ok_or_else(|| CompressionError::NotALayer(mt.to_owned()))?;
        if declared != LayerCompression::Uncompressed && declared != found {
            return Err(CompressionError::MediaTypeMismatch {
                media_type: mt.to_owned(),
                declared,
                found,
            });
        }
    }
    let stream = BufReader::with_capacity(256 * 1024, io::Cursor::new(prefix).chain(reader));
    Ok(match found {
        LayerCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(stream)),
        LayerCompression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(stream).map_err(CompressionError::Read)?,
        ),
        LayerCompression::Uncompressed => Box::new(stream),
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The diffID (sha256 of the uncompressed tar) and uncompressed size of a layer blob in any
/// supported compression.
pub fn diff_id_of(reader: impl Read) -> Result<(Digest, u64), CompressionError> {
    let mut r = open_layer_reader(reader, None)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CompressionError::Read(e)),
        }
    }
    let n = h.len();
    Ok((h.finish(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_validated() {
        let e = CompressionOptions::new(Compression::Gzip).with_level(10).effective_level();
        assert!(e.unwrap_err().to_string().contains("0..=9"));
        let e = CompressionOptions::new(Compression::Zstd).with_level(23).effective_level();
        assert!(e.unwrap_err().to_string().contains("0..=22"));
        assert_eq!(CompressionOptions::new(Compression::Zstd).effective_level().unwrap(), Some(3));
        assert!(
            LayerEncoder::new(
                Vec::new(),
                &CompressionOptions::new(Compression::Estargz).with_level(-1)
            )
            .is_err()
        );
    }

    #[test]
    fn names_parse() {
        for c in
            [Compression::Uncompressed, Compression::Gzip, Compression::Zstd, Compression::Estargz]
        {
            assert_eq!(c.as_str().parse::<Compression>().unwrap(), c);
        }
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn roundtrip_each_codec_and_tiny_reader() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        for c in [Compression::Uncompressed, Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            let l = compress(&data[..], &CompressionOptions::new(c), &mut out).unwrap();
            assert_eq!(l.size, out.len() as u64);
            assert_eq!(l.digest, Digest::of_bytes(&out));
            assert_eq!(l.diff_id, Digest::of_bytes(&data));
            assert_eq!(l.uncompressed_size, data.len() as u64);
            // A reader that returns one byte at a time exercises the slow sniff path.
            struct OneByte<'a>(&'a [u8]);
            impl Read for OneByte<'_> {
                fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                    if self.0.is_empty() || b.is_empty() {
                        return Ok(0);
                    }
                    b[0] = self.0[0];
                    self.0 = &self.0[1..];
                    Ok(1)
                }
            }
            let (d, n) = diff_id_of(OneByte(&out)).unwrap();
            assert_eq!((d, n), (l.diff_id.clone(), data.len() as u64), "{c}");
        }
    }

    #[test]
    fn media_type_mismatch_is_refused() {
        let mut out = Vec::new();
        compress(&b"hello"[..], &CompressionOptions::new(Compression::Zstd), &mut out).unwrap();
        let e = open_layer_reader(&out[..], Some(media::OCI_LAYER_GZIP)).err().unwrap();
        assert!(matches!(e, CompressionError::MediaTypeMismatch { .. }), "{e}");
        assert!(open_layer_reader(&out[..], Some(media::OCI_LAYER_ZSTD)).is_ok());
    }
}
