//! eStargz writer: re-encodes an uncompressed tar stream as a seekable gzip blob.
//!
//! Format (containerd/stargz-snapshotter `docs/estargz.md`, `estargz/estargz.go`):
//! - a new gzip member starts at the blob start, at the payload of every non-empty regular
//!   file and every 4 MiB chunk of it, at the TOC's tar header, and at the footer;
//! - the TOC `stargz.index.json` is the last tar entry (`json.MarshalIndent(…, "", "\t")`);
//! - a 51-byte footer (an empty stored gzip member whose Extra field holds the TOC offset).
//!
//! Tar entries are copied byte for byte (like Go's `AppendTarLossLess`, which BuildKit
//! uses), except the input's end-of-archive blocks: those are dropped so that a plain tar
//! reader of the gunzipped blob sees the TOC entry instead of stopping before it.
//!
//! The tar is parsed incrementally as bytes are pushed in, so any writer can feed it and
//! nothing but the TOC entries (one small record per tar entry) is kept in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde::Serialize;
use strata_oci::{Digest, Hasher};

use crate::pgzip::ParallelGzip;

/// Name of the TOC entry.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Size of the footer.
pub const FOOTER_SIZE: usize = 51;
/// Chunk size for large files (the Go writer's default).
pub const CHUNK_SIZE: u64 = 4 << 20;

/// Largest PAX / GNU long-name extension we buffer to learn an entry's name. Real ones are
/// a few hundred bytes; the cap keeps a hostile tar from making us allocate gigabytes.
const MAX_EXTENSION: u64 = 1 << 20;

/// Why a tar stream could not be converted to eStargz.
#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    /// A header block is not a valid tar header.
    #[error("estargz: invalid tar header at uncompressed offset {offset}: {reason}")]
    BadHeader {
        /// Byte offset of the header in the input tar.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry type eStargz cannot describe.
    #[error("estargz: unsupported tar entry {name:?} of type {typeflag:?}")]
    Unsupported {
        /// Entry name.
        name: String,
        /// The tar typeflag byte.
        typeflag: char,
    },
    /// The input already contains a TOC entry.
    #[error(
        "estargz: input tar already contains {TOC_TAR_NAME:?}; it cannot be re-encoded losslessly"
    )]
    HasToc,
    /// A PAX or GNU long-name extension larger than we accept.
    #[error(
        "estargz: tar extension header at offset {offset} is {size} bytes (limit {MAX_EXTENSION})"
    )]
    ExtensionTooLarge {
        /// Byte offset of the header.
        offset: u64,
        /// Its declared size.
        size: u64,
    },
    /// The input ended in the middle of an entry.
    #[error("estargz: input tar is truncated (inside entry {name:?})")]
    Truncated {
        /// Entry being read.
        name: String,
    },
}

fn io_err(e: EstargzError) -> io::Error {
    io::Error::other(e)
}

/// One TOC record, fields in Go's `TOCEntry` order (JSON field order is part of the TOC
/// digest).
#[derive(Debug, Clone, Default, Serialize)]
struct TocEntry {
    name: String,
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(rename = "modtime", skip_serializing_if = "String::is_empty")]
    mod_time: String,
    #[serde(rename = "linkName", skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(skip_serializing_if = "is_zero")]
    uid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    gid: u64,
    #[serde(rename = "userName", skip_serializing_if = "String::is_empty")]
    user_name: String,
    #[serde(rename = "groupName", skip_serializing_if = "String::is_empty")]
    group_name: String,
    /// Serialized after being resolved from `member`.
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(rename = "devMajor", skip_serializing_if = "is_zero")]
    dev_major: u64,
    #[serde(rename = "devMinor", skip_serializing_if = "is_zero")]
    dev_minor: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(rename = "chunkOffset", skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(rename = "chunkSize", skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(rename = "chunkDigest", skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
    /// Index of the gzip member holding this entry's payload chunk.
    #[serde(skip)]
    member: Option<u64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize)]
struct Toc<'a> {
    version: u32,
    entries: &'a [TocEntry],
}

enum State {
    Header,
    /// Buffering a PAX / GNU long-name payload.
    Extension {
        kind: u8,
        remaining: u64,
    },
    /// Copying a regular file's payload.
    Payload {
        remaining: u64,
    },
    /// Copying data of any other entry verbatim.
    Data {
        remaining: u64,
    },
    Padding {
        remaining: u64,
    },
    /// After the end-of-archive marker: everything is dropped.
    Trailer,
}

struct RegFile {
    /// Index in `toc` of the `reg` entry (gets the whole-file digest at the end).
    entry: usize,
    size: u64,
    written: u64,
    file_hash: Hasher,
    chunk_hash: Hasher,
    chunk_left: u64,
    /// Index in `toc` of the record describing the current chunk.
    chunk_entry: usize,
}

/// What [`EstargzWriter::finish`] returns.
pub(crate) struct EstargzDone<W> {
    pub(crate) sink: W,
    pub(crate) toc_digest: Digest,
    pub(crate) diff_id: Digest,
    pub(crate) uncompressed_size: u64,
}

/// Push-parser + encoder. Bytes written in are an uncompressed tar.
pub(crate) struct EstargzWriter<W: Write> {
    gz: ParallelGzip<W>,
    /// Hash of the uncompressed output (the diffID).
    out_hash: Hasher,
    in_offset: u64,
    state: State,
    hdr: [u8; 512],
    hdr_fill: usize,
    ext: Vec<u8>,
    pax: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    cur_name: String,
    reg: Option<RegFile>,
    toc: Vec<TocEntry>,
    last_uname: HashMap<u64, String>,
    last_gname: HashMap<u64, String>,
}

impl<W: Write> EstargzWriter<W> {
    pub(crate) fn new(sink: W, level: i32, workers: usize) -> io::Result<Self> {
        Ok(Self {
            // Members are cut only where the format says (usize::MAX = never automatically).
            gz: ParallelGzip::new(sink, level, usize::MAX, workers)?,
            out_hash: Hasher::new(),
            in_offset: 0,
            state: State::Header,
            hdr: [0; 512],
            hdr_fill: 0,
            ext: Vec::new(),
            pax: Vec::new(),
            long_name: None,
            long_link: None,
            cur_name: String::new(),
            reg: None,
            toc: Vec::new(),
            last_uname: HashMap::new(),
            last_gname: HashMap::new(),
        })
    }

    fn emit(&mut self, b: &[u8]) -> io::Result<()> {
        self.out_hash.update(b);
        self.gz.write_all(b)
    }

    fn on_header(&mut self) -> io::Result<()> {
        let offset = self.in_offset - 512;
        let block = self.hdr;
        if block.iter().all(|&b| b == 0) {
            self.state = State::Trailer;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&block);
        let bad = |reason: String| io_err(EstargzError::BadHeader { offset, reason });
        let stored = h.cksum().map_err(|e| bad(format!("checksum field: {e}")))?;
        let computed: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(b) })
            .sum();
        if stored != computed {
            return Err(bad(format!("checksum {stored} != computed {computed}")));
        }
        let typeflag = block[156];
        let mut size = h.entry_size().map_err(|e| bad(format!("size field: {e}")))?;
        match typeflag {
            b'x' | b'L' | b'K' => {
                if size > MAX_EXTENSION {
                    return Err(io_err(EstargzError::ExtensionTooLarge { offset, size }));
                }
                self.emit(&block)?;
                self.ext.clear();
                self.state = if size == 0 {
                    State::Header
                } else {
                    State::Extension { kind: typeflag, remaining: size }
                };
                return Ok(());
            }
            // A global PAX header applies to the whole archive; keep it, no TOC entry.
            b'g' => {
                self.emit(&block)?;
                self.state = next_data(size);
                return Ok(());
            }
            _ => {}
        }
        // A real entry: gather its effective fields from pending extensions.
        let pax = std::mem::take(&mut self.pax);
        let pax_get =
            |k: &str| pax.iter().rev().find(|(key, _)| key == k.as_bytes()).map(|(_, v)| v);
        let name_bytes = pax_get("path")
            .cloned()
            .or_else(|| self.long_name.take())
            .unwrap_or_else(|| h.path_bytes().into_owned());
        let link_bytes = pax_get("linkpath")
            .cloned()
            .or_else(|| self.long_link.take())
            .or_else(|| h.link_name_bytes().map(|c| c.into_owned()))
            .unwrap_or_default();
        self.long_name = None;
        self.long_link = None;
        if let Some(s) = pax_get("size").and_then(|v| parse_u64(v)) {
            size = s;
        }
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        if clean_name(&name) == TOC_TAR_NAME {
            return Err(io_err(EstargzError::HasToc));
        }
        let uid = pax_get("uid").and_then(|v| parse_u64(v)).or_else(|| h.uid().ok()).unwrap_or(0);
        let gid = pax_get("gid").and_then(|v| parse_u64(v)).or_else(|| h.gid().ok()).unwrap_or(0);
        let mtime = match pax_get("mtime") {
            Some(v) => parse_pax_time(v),
            None => h.mtime().ok().map(|s| s as i64),
        }
        .unwrap_or(0);
        let uname = pax_get("uname")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .or_else(|| h.username_bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
            .unwrap_or_default();
        let gname = pax_get("gname")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .or_else(|| h.groupname_bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
            .unwrap_or_default();
        let mut xattrs = BTreeMap::new();
        for (k, v) in &pax {
            if let Some(x) = k.strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(String::from_utf8_lossy(x).into_owned(), base64(v));
            }
        }
        let ty = match typeflag {
            b'0' | 0 | b'7' => "reg",
            b'1' => "hardlink",
            b'2' => "symlink",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            other => {
                return Err(io_err(EstargzError::Unsupported { name, typeflag: other as char }));
            }
        };
        let mut ent = TocEntry {
            name: name.clone(),
            ty,
            mod_time: format_modtime(mtime),
            mode: h.mode().map(u64::from).unwrap_or(0),
            uid,
            gid,
            user_name: name_if_changed(&mut self.last_uname, uid, uname),
            group_name: name_if_changed(&mut self.last_gname, gid, gname),
            xattrs,
            ..TocEntry::default()
        };
        match ty {
            "hardlink" | "symlink" => {
                ent.link_name = String::from_utf8_lossy(&link_bytes).into_owned()
            }
            "char" | "block" => {
                ent.dev_major = h.device_major().ok().flatten().unwrap_or(0).into();
                ent.dev_minor = h.device_minor().ok().flatten().unwrap_or(0).into();
            }
            "reg" => ent.size = size,
            _ => {}
        }
        self.cur_name = name;
        self.emit(&block)?;
        if ty == "reg" {
            self.toc.push(ent);
            if size > 0 {
                self.reg = Some(RegFile {
                    entry: self.toc.len() - 1,
                    size,
                    written: 0,
                    file_hash: Hasher::new(),
                    chunk_hash: Hasher::new(),
                    chunk_left: 0,
                    chunk_entry: 0,
                });
                self.state = State::Payload { remaining: size };
            } else {
                // An empty file still has a (zero-length) digest in Go's TOC.
                let last = self.toc.len() - 1;
                self.toc[last].digest = Hasher::new().finish().to_string();
                self.state = State::Header;
            }
        } else {
            self.toc.push(ent);
            self.state = next_data(size);
        }
        Ok(())
    }

    /// Starts a chunk of the current regular file: new gzip member, new TOC record.
    fn start_chunk(&mut self) -> io::Result<()> {
        let member = self.gz.end_member()?;
        let Some(reg) = self.reg.as_mut() else { return Ok(()) };
        let remain = reg.size - reg.written;
        let (len, chunk_size) =
            if remain < CHUNK_SIZE { (remain, 0) } else { (CHUNK_SIZE, CHUNK_SIZE) };
        reg.chunk_left = len;
        reg.chunk_hash = Hasher::new();
        let idx = if reg.written == 0 {
            reg.entry
        } else {
            self.toc.push(TocEntry {
                name: self.toc[reg.entry].name.clone(),
                ty: "chunk",
                ..TocEntry::default()
            });
            self.toc.len() - 1
        };
        reg.chunk_entry = idx;
        let e = &mut self.toc[idx];
        e.member = Some(member);
        e.chunk_offset = reg.written;
        e.chunk_size = chunk_size;
        Ok(())
    }

    fn payload(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.reg.as_ref().is_some_and(|r| r.chunk_left == 0) {
            self.start_chunk()?;
        }
        let Some(reg) = self.reg.as_mut() else { return Ok(data.len()) };
        let n = (reg.chunk_left.min(data.len() as u64)) as usize;
        let part = &data[..n];
        reg.file_hash.update(part);
        reg.chunk_hash.update(part);
        reg.chunk_left -= n as u64;
        reg.written += n as u64;
        let chunk_done = reg.chunk_left == 0;
        let file_done = reg.written == reg.size;
        self.emit(part)?;
        if chunk_done {
            let reg = self.reg.as_mut().expect("checked above");
            let digest = std::mem::take(&mut reg.chunk_hash).finish().to_string();
            self.toc[reg.chunk_entry].chunk_digest = digest;
            if file_done {
                let reg = self.reg.take().expect("checked above");
                self.toc[reg.entry].digest = reg.file_hash.finish().to_string();
            }
        }
        Ok(n)
    }

    pub(crate) fn finish(mut self) -> io::Result<EstargzDone<W>> {
        match self.state {
            State::Header if self.hdr_fill == 0 => {}
            State::Trailer => {}
            _ => {
                return Err(io_err(EstargzError::Truncated { name: self.cur_name.clone() }));
            }
        }
        // TOC: offsets are only known now that every member's compressed size is.
        let toc_member = self.gz.end_member()?;
        self.gz.drain()?;
        let mut offsets = Vec::with_capacity(self.gz.member_sizes().len() + 1);
        let mut acc = 0u64;
        for s in self.gz.member_sizes() {
            offsets.push(acc);
            acc += s;
        }
        offsets.push(acc);
        let toc_offset = acc;
        debug_assert_eq!(toc_member as usize, self.gz.member_sizes().len());
        for e in &mut self.toc {
            if let Some(m) = e.member {
                e.offset = offsets.get(m as usize).copied().unwrap_or(0);
            }
        }
        let compact = strata_oci::gojson::to_vec(&Toc { version: 1, entries: &self.toc })
            .map_err(io::Error::other)?;
        let toc_json = go_indent(&compact);
        let toc_digest = Digest::of_bytes(&toc_json);
        let mut h = tar::Header::new_ustar();
        h.set_path(TOC_TAR_NAME)?;
        h.set_size(toc_json.len() as u64);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.emit(h.as_bytes())?;
        self.emit(&toc_json)?;
        let pad = (512 - toc_json.len() % 512) % 512;
        self.emit(&vec![0u8; pad + 1024])?;
        self.gz.write_raw(&footer(toc_offset))?;
        let uncompressed_size = self.out_hash.len();
        let diff_id = self.out_hash.finish();
        let sink = self.gz.finish()?;
        Ok(EstargzDone { sink, toc_digest, diff_id, uncompressed_size })
    }
}

fn next_data(size: u64) -> State {
    if size == 0 { State::Header } else { State::Data { remaining: size } }
}

impl<W: Write> EstargzWriter<W> {
    /// State after an entry's data: headers start 512-aligned, so the padding is whatever
    /// brings the input offset back to a block boundary.
    fn after_data(&self) -> State {
        match (512 - self.in_offset % 512) % 512 {
            0 => State::Header,
            pad => State::Padding { remaining: pad },
        }
    }
}

impl<W: Write> Write for EstargzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let used = match self.state {
                State::Header => {
                    let n = (512 - self.hdr_fill).min(rest.len());
                    self.hdr[self.hdr_fill..self.hdr_fill + n].copy_from_slice(&rest[..n]);
                    self.hdr_fill += n;
                    self.in_offset += n as u64;
                    if self.hdr_fill == 512 {
                        self.hdr_fill = 0;
                        self.on_header()?;
                    }
                    n
                }
                State::Extension { kind, remaining } => {
                    let n = remaining.min(rest.len() as u64) as usize;
                    self.ext.extend_from_slice(&rest[..n]);
                    self.emit(&rest[..n])?;
                    self.in_offset += n as u64;
                    let left = remaining - n as u64;
                    if left == 0 {
                        let ext = std::mem::take(&mut self.ext);
                        match kind {
                            b'x' => self.pax.extend(parse_pax(&ext)),
                            b'L' => self.long_name = Some(trim_nul(&ext)),
                            _ => self.long_link = Some(trim_nul(&ext)),
                        }
                        self.state = self.after_data();
                    } else {
                        self.state = State::Extension { kind, remaining: left };
                    }
                    n
                }
                State::Payload { remaining } => {
                    let want = remaining.min(rest.len() as u64) as usize;
                    let n = self.payload(&rest[..want])?;
                    self.in_offset += n as u64;
                    let left = remaining - n as u64;
                    self.state = if left > 0 {
                        State::Payload { remaining: left }
                    } else {
                        self.after_data()
                    };
                    n
                }
                State::Data { remaining } => {
                    let n = remaining.min(rest.len() as u64) as usize;
                    self.emit(&rest[..n])?;
                    self.in_offset += n as u64;
                    let left = remaining - n as u64;
                    self.state =
                        if left > 0 { State::Data { remaining: left } } else { self.after_data() };
                    n
                }
                State::Padding { remaining } => {
                    let n = remaining.min(rest.len() as u64) as usize;
                    self.emit(&rest[..n])?;
                    self.in_offset += n as u64;
                    let left = remaining - n as u64;
                    self.state =
                        if left > 0 { State::Padding { remaining: left } } else { State::Header };
                    n
                }
                State::Trailer => {
                    self.in_offset += rest.len() as u64;
                    rest.len()
                }
            };
            rest = &rest[used..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn trim_nul(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

fn clean_name(name: &str) -> &str {
    name.trim_start_matches("./").trim_start_matches('/')
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX `mtime` is decimal seconds with an optional fraction; Go rounds to the second.
fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let round_up = frac.as_bytes().first().is_some_and(|&d| d >= b'5');
    Some(if round_up { if secs < 0 { secs - 1 } else { secs + 1 } } else { secs })
}

/// Parses PAX records `"<len> key=value\n"`; malformed records end the parse (the tar crate
/// and Go both reject such archives when extracting; here we only lose TOC metadata).
fn parse_pax(mut data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some(sp) = data.iter().position(|&b| b == b' ') else { break };
        let Some(len) = std::str::from_utf8(&data[..sp]).ok().and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > data.len() {
            break;
        }
        let rec = &data[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        }
        data = &data[len..];
    }
    out
}

/// Go's `nameIfChanged`: user/group names are written only when they differ from the
/// last name seen for that id, which keeps the TOC small.
fn name_if_changed(last: &mut HashMap<u64, String>, id: u64, name: String) -> String {
    if name.is_empty() || last.get(&id) == Some(&name) {
        return String::new();
    }
    last.insert(id, name.clone());
    name
}

/// RFC 3339 UTC, empty for the epoch (Go's `formatModtime`).
pub(crate) fn format_modtime(secs: i64) -> String {
    if secs == 0 {
        return String::new();
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Standard base64 with padding (Go's encoding of `[]byte` in JSON).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    s
}

/// Re-indents compact JSON exactly like Go's `json.Indent(dst, src, "", "\t")`, which is
/// what `json.MarshalIndent` does: newline + tabs after `{`, `[` and `,`, `": "` after
/// keys, and empty objects/arrays kept as `{}` / `[]`.
pub(crate) fn go_indent(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + src.len() / 4);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut need_indent = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b'\t', depth));
    };
    for &c in src {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        if need_indent && c != b']' && c != b'}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                in_str = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                need_indent = true;
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => {
                out.push(c);
                out.push(b' ');
            }
            b'}' | b']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The 51-byte footer: an empty gzip member at level "no compression" whose Extra field is
/// `SG` + len 22 + `%016xSTARGZ` (the TOC member's offset). Built by hand because its
/// bytes are fixed by the format.
pub(crate) fn footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    // ID1 ID2 CM FLG(FEXTRA) MTIME(4) XFL OS(unknown) — what Go's gzip writer emits.
    f[..10].copy_from_slice(&[0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12..14].copy_from_slice(b"SG");
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    f[16..38].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // Final stored block of length 0, then CRC32 and ISIZE of empty data (all zero).
    f[38..43].copy_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    f
}

/// Parses a footer back into the TOC offset (also accepts nothing else: the legacy 47-byte
/// footer is for readers).
pub fn parse_footer(f: &[u8]) -> Option<u64> {
    if f.len() != FOOTER_SIZE || f[..4] != [0x1f, 0x8b, 0x08, 0x04] || &f[12..14] != b"SG" {
        return None;
    }
    let s = std::str::from_utf8(&f[16..38]).ok()?;
    let hex = s.strip_suffix("STARGZ")?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modtime_formats_like_go() {
        assert_eq!(format_modtime(0), "");
        assert_eq!(format_modtime(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_modtime(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn base64_matches_std_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn indent_matches_go() {
        let got =
            go_indent(br#"{"version":1,"entries":[{"name":"a,b:[","type":"dir"}],"x":{},"y":[]}"#);
        let want = "{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{\n\t\t\t\"name\": \"a,b:[\",\n\t\t\t\"type\": \"dir\"\n\t\t}\n\t],\n\t\"x\": {},\n\t\"y\": []\n}";
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[test]
    fn footer_is_an_empty_gzip_member_with_offset() {
        use std::io::Read;
        let f = footer(0x1234);
        assert_eq!(parse_footer(&f), Some(0x1234));
        let mut d = flate2::read::GzDecoder::new(&f[..]);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        let extra = d.header().unwrap().extra().unwrap().to_vec();
        assert_eq!(&extra[..2], b"SG");
        assert_eq!(&extra[4..], b"0000000000001234STARGZ");
    }
}
