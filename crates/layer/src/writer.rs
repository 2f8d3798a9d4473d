//! Deterministic layer tar writing.
//!
//! Entries are written the way Go's `archive/tar` (used by BuildKit and containerd) writes
//! them: USTAR headers, with a PAX extended header only when something does not fit (long
//! or non-ASCII names, xattrs, sub-second mtimes when asked for). No atime/ctime, empty
//! uname/gname, relative names with directories ending in `/`. The same entries in the same
//! order always give the same bytes.
//!
//! Headers are assembled here rather than through `tar::Builder` because the builder
//! silently writes a corrupt archive when a file is shorter than its declared size (it pads
//! to the *actual* length); we check the length and fail with the path instead.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Prefix of a whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// PAX record prefix for extended attributes.
pub const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

const BLOCK: usize = 512;

/// Metadata of one tar entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits plus setuid/setgid/sticky (`0o7777`); the file type comes from the
    /// entry kind.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch (negative values are written as 0).
    pub mtime: i64,
    /// Sub-second part; when `Some` and non-zero it is written as a PAX `mtime` record.
    pub mtime_nanos: Option<u32>,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    /// Metadata with `mode`, root ownership, mtime 0, no xattrs.
    pub fn new(mode: u32) -> Self {
        Self { mode, ..Self::default() }
    }
}

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The entry path is not a clean relative path.
    #[error("layer entry path {path:?} is invalid: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file's reader returned a different number of bytes than declared (the file
    /// changed while being archived). The tar written so far is unusable.
    #[error("layer entry {path:?}: expected {expected} bytes, the reader gave {actual}")]
    SizeMismatch {
        /// Entry path.
        path: String,
        /// Declared size.
        expected: u64,
        /// Bytes actually read.
        actual: u64,
    },
    /// Reading the content or writing the tar failed.
    #[error("writing layer entry {path:?}: {source}")]
    Io {
        /// Entry path (empty for the end-of-archive marker).
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Kinds of entries, with their type-specific data.
#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    File(u64),
    Dir,
    Symlink(&'a [u8]),
    Hardlink(&'a [u8]),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// Writes a layer tar entry by entry. Call [`LayerWriter::finish`] to write the
/// end-of-archive marker; dropping the writer without it leaves the tar unterminated.
pub struct LayerWriter<W: Write> {
    out: W,
    whiteout_mtime: i64,
    entries: u64,
}

impl<W: Write> std::fmt::Debug for LayerWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter").field("entries", &self.entries).finish_non_exhaustive()
    }
}

/// Normalises an entry path: strips leading `/` and `./`, drops `.` components, and
/// refuses `..` and the empty path. Returns the `/`-joined bytes without a trailing slash.
pub fn normalize_entry_path(path: &Path) -> Result<Vec<u8>, WriteError> {
    let invalid = |reason| WriteError::InvalidPath { path: path.display().to_string(), reason };
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(n.as_bytes());
            }
            Component::ParentDir => return Err(invalid("contains '..'")),
            Component::Prefix(_) => return Err(invalid("has a prefix")),
        }
    }
    if out.is_empty() {
        return Err(invalid("is empty (the layer root has no entry)"));
    }
    if out.contains(&0) {
        return Err(invalid("contains a NUL byte"));
    }
    Ok(out)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = 3 + key.len() + value.len(); // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Go's `splitUSTARPath`: a name longer than 100 bytes can still be stored in USTAR by
/// splitting it at a `/` into prefix (≤155) and name (≤100).
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = name.len();
    if length <= 100 || !name.is_ascii() {
        return None;
    }
    if length > 156 {
        length = 156;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&b| b == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > 100 || nlen == 0 || i > 155 {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

impl<W: Write> LayerWriter<W> {
    /// A writer producing a tar into `out`.
    pub fn new(out: W) -> Self {
        Self { out, whiteout_mtime: 0, entries: 0 }
    }

    /// Sets the mtime written on whiteout and opaque markers (default 0). containerd uses
    /// the time of the diff; a fixed value keeps layers reproducible.
    pub fn set_whiteout_mtime(&mut self, mtime: i64) {
        self.whiteout_mtime = mtime;
    }

    /// Number of entries written.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Adds a directory (its name gets a trailing `/`).
    pub fn add_dir(&mut self, path: impl AsRef<Path>, meta: &EntryMeta) -> Result<(), WriteError> {
        self.entry(path.as_ref(), Kind::Dir, meta, io::empty())
    }

    /// Adds a regular file of `size` bytes read from `reader`. Fails if the reader yields
    /// fewer bytes; extra bytes are not read.
    pub fn add_file(
        &mut self,
        path: impl AsRef<Path>,
        meta: &EntryMeta,
        reader: impl Read,
        size: u64,
    ) -> Result<(), WriteError> {
        self.entry(path.as_ref(), Kind::File(size), meta, reader)
    }

    /// Adds a symlink; the target is stored as given.
    pub fn add_symlink(
        &mut self,
        path: impl AsRef<Path>,
        target: impl AsRef<Path>,
        meta: &EntryMeta,
    ) -> Result<(), WriteError> {
        let t = target.as_ref().as_os_str().as_bytes().to_vec();
        self.entry(path.as_ref(), Kind::Symlink(&t), meta, io::empty())
    }

    /// Adds a hardlink to an entry already in this layer (`target` is a layer path).
    pub fn add_hardlink(
        &mut self,
        path: impl AsRef<Path>,
        target: impl AsRef<Path>,
        meta: &EntryMeta,
    ) -> Result<(), WriteError> {
        let t = normalize_entry_path(target.as_ref())?;
        self.entry(path.as_ref(), Kind::Hardlink(&t), meta, io::empty())
    }

    /// Adds a character device.
    pub fn add_char_device(
        &mut self,
        path: impl AsRef<Path>,
        meta: &EntryMeta,
        major: u32,
        minor: u32,
    ) -> Result<(), WriteError> {
        self.entry(path.as_ref(), Kind::Char(major, minor), meta, io::empty())
    }

    /// Adds a block device.
    pub fn add_block_device(
        &mut self,
        path: impl AsRef<Path>,
        meta: &EntryMeta,
        major: u32,
        minor: u32,
    ) -> Result<(), WriteError> {
        self.entry(path.as_ref(), Kind::Block(major, minor), meta, io::empty())
    }

    /// Adds a FIFO.
    pub fn add_fifo(&mut self, path: impl AsRef<Path>, meta: &EntryMeta) -> Result<(), WriteError> {
        self.entry(path.as_ref(), Kind::Fifo, meta, io::empty())
    }

    /// Marks `path` (a file or directory of a lower layer) as deleted: writes an empty
    /// file `<parent>/.wh.<name>`.
    pub fn add_whiteout(&mut self, path: impl AsRef<Path>) -> Result<(), WriteError> {
        let p = normalize_entry_path(path.as_ref())?;
        let (dir, name) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => (&p[..0], &p[..]),
        };
        let mut wh = dir.to_vec();
        wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        wh.extend_from_slice(name);
        let meta = EntryMeta { mtime: self.whiteout_mtime, ..EntryMeta::default() };
        self.entry(Path::new(std::ffi::OsStr::from_bytes(&wh)), Kind::File(0), &meta, io::empty())
    }

    /// Marks directory `dir` as opaque: lower layers' contents of it are hidden. Writes
    /// `<dir>/.wh..wh..opq`.
    pub fn add_opaque(&mut self, dir: impl AsRef<Path>) -> Result<(), WriteError> {
        let p = dir.as_ref().join(WHITEOUT_OPAQUE);
        let meta = EntryMeta { mtime: self.whiteout_mtime, ..EntryMeta::default() };
        self.entry(&p, Kind::File(0), &meta, io::empty())
    }

    fn entry(
        &mut self,
        path: &Path,
        kind: Kind<'_>,
        meta: &EntryMeta,
        reader: impl Read,
    ) -> Result<(), WriteError> {
        let mut name = normalize_entry_path(path)?;
        if matches!(kind, Kind::Dir) {
            name.push(b'/');
        }
        let io_err = |source| WriteError::Io { path: lossy(&name), source };
        let mut pax = Vec::new();
        let mut h = tar::Header::new_ustar();
        // Name: USTAR if ASCII and it fits (possibly split), else PAX `path`.
        {
            let u = h.as_ustar_mut().ok_or_else(|| io_err(io::Error::other("not ustar")))?;
            if name.len() <= 100 && name.is_ascii() {
                u.name[..name.len()].copy_from_slice(&name);
            } else if let Some((prefix, rest)) = split_ustar(&name) {
                u.prefix[..prefix.len()].copy_from_slice(prefix);
                u.name[..rest.len()].copy_from_slice(rest);
            } else {
                let n = name.len().min(100);
                u.name[..n].copy_from_slice(&name[..n]);
                pax_record(&mut pax, "path", &name);
            }
        }
        let (ty, size) = match kind {
            Kind::File(s) => (tar::EntryType::Regular, s),
            Kind::Dir => (tar::EntryType::Directory, 0),
            Kind::Symlink(_) => (tar::EntryType::Symlink, 0),
            Kind::Hardlink(_) => (tar::EntryType::Link, 0),
            Kind::Char(..) => (tar::EntryType::Char, 0),
            Kind::Block(..) => (tar::EntryType::Block, 0),
            Kind::Fifo => (tar::EntryType::Fifo, 0),
        };
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(meta.mode & 0o7777);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime.max(0) as u64);
        if let Some(ns) = meta.mtime_nanos.filter(|&ns| ns > 0 && ns < 1_000_000_000) {
            let frac = format!("{ns:09}");
            let v = format!("{}.{}", meta.mtime.max(0), frac.trim_end_matches('0'));
            pax_record(&mut pax, "mtime", v.as_bytes());
        }
        if let Kind::Symlink(t) | Kind::Hardlink(t) = kind {
            if t.len() <= 100 && t.is_ascii() {
                h.as_ustar_mut().expect("ustar").linkname[..t.len()].copy_from_slice(t);
            } else {
                let n = t.len().min(100);
                h.as_ustar_mut().expect("ustar").linkname[..n].copy_from_slice(&t[..n]);
                pax_record(&mut pax, "linkpath", t);
            }
        }
        match kind {
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
                h.set_device_major(ma).map_err(io_err)?;
                h.set_device_minor(mi).map_err(io_err)?;
            }
            _ => {
                // Go writes zero device numbers for every USTAR entry.
                h.set_device_major(0).map_err(io_err)?;
                h.set_device_minor(0).map_err(io_err)?;
            }
        }
        for (k, v) in &meta.xattrs {
            pax_record(&mut pax, &format!("{PAX_XATTR_PREFIX}{k}"), v);
        }
        h.set_cksum();
        if !pax.is_empty() {
            self.write_pax(&name, &pax).map_err(io_err)?;
        }
        self.out.write_all(h.as_bytes()).map_err(io_err)?;
        if size > 0 {
            let mut limited = reader.take(size);
            let copied = io::copy(&mut limited, &mut self.out).map_err(io_err)?;
            if copied != size {
                return Err(WriteError::SizeMismatch {
                    path: lossy(&name),
                    expected: size,
                    actual: copied,
                });
            }
            self.pad(size).map_err(io_err)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes a PAX extended header for the entry `name`, named like Go names it
    /// (`<dir>/PaxHeaders.0/<base>`, truncated to 100 bytes).
    fn write_pax(&mut self, name: &[u8], records: &[u8]) -> io::Result<()> {
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&trimmed[..0], trimmed),
        };
        let mut pname = dir.to_vec();
        pname.extend_from_slice(b"PaxHeaders.0/");
        pname.extend_from_slice(base);
        let mut h = tar::Header::new_ustar();
        let u = h.as_ustar_mut().expect("ustar");
        let n = pname.len().min(100);
        u.name[..n].copy_from_slice(&pname[..n]);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(records.len() as u64);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_device_major(0)?;
        h.set_device_minor(0)?;
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(records)?;
        self.pad(records.len() as u64)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks), flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W, WriteError> {
        let io_err = |source| WriteError::Io { path: String::new(), source };
        self.out.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
        self.out.flush().map_err(io_err)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(tar: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>, Option<String>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap());
                let ty = e.header().entry_type();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, ty, data, link)
            })
            .collect()
    }

    #[test]
    fn writes_entries_that_tar_reads_back() {
        let mut w = LayerWriter::new(Vec::new());
        let m = EntryMeta::new(0o755);
        w.add_dir("/etc", &m).unwrap();
        w.add_file("etc/passwd", &EntryMeta::new(0o644), &b"root:x:0:0\n"[..], 11).unwrap();
        w.add_symlink("etc/link", "/etc/passwd", &m).unwrap();
        w.add_hardlink("etc/hard", "etc/passwd", &m).unwrap();
        w.add_whiteout("etc/gone").unwrap();
        w.add_opaque("var").unwrap();
        w.add_fifo("run/fifo", &m).unwrap();
        w.add_char_device("dev/null", &m, 1, 3).unwrap();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        let mut xm = EntryMeta::new(0o600);
        xm.xattrs.insert("user.k".into(), b"v\0bin".to_vec());
        xm.mtime = 5;
        xm.mtime_nanos = Some(500_000_000);
        w.add_file(&long, &xm, &b"x"[..], 1).unwrap();
        let split = format!("{}/{}", "a".repeat(90), "b".repeat(90));
        w.add_file(&split, &EntryMeta::new(0o644), io::empty(), 0).unwrap();
        let tar = w.finish().unwrap();
        let got = read_back(&tar);
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/passwd",
                "etc/link",
                "etc/hard",
                "etc/.wh.gone",
                "var/.wh..wh..opq",
                "run/fifo",
                "dev/null",
                long.as_str(),
                split.as_str()
            ]
        );
        assert_eq!(got[1].2, b"root:x:0:0\n");
        assert_eq!(got[2].3.as_deref(), Some("/etc/passwd"));
        assert_eq!(got[3].1, tar::EntryType::Link);
        // xattrs and nanos round-trip through PAX.
        let mut a = tar::Archive::new(&tar[..]);
        let mut e = a.entries().unwrap().nth(8).unwrap().unwrap();
        let recs: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().to_owned(), r.value_bytes().to_vec())
            })
            .collect();
        assert!(recs.contains(&("SCHILY.xattr.user.k".into(), b"v\0bin".to_vec())));
        assert!(recs.contains(&("mtime".into(), b"5.5".to_vec())));
        // Only the overlong name needed PAX; the 181-byte one was split into USTAR prefix.
        let mut raw = tar::Archive::new(&tar[..]);
        let pax_headers = raw
            .entries()
            .unwrap()
            .raw(true)
            .filter(|e| e.as_ref().unwrap().header().entry_type() == tar::EntryType::XHeader)
            .count();
        assert_eq!(pax_headers, 1);
    }

    #[test]
    fn refuses_bad_paths_and_short_files() {
        let mut w = LayerWriter::new(Vec::new());
        let m = EntryMeta::new(0o644);
        assert!(matches!(
            w.add_file("../x", &m, io::empty(), 0),
            Err(WriteError::InvalidPath { .. })
        ));
        assert!(w.add_dir("/", &m).is_err());
        let e = w.add_file("short", &m, &b"ab"[..], 5).unwrap_err();
        assert!(e.to_string().contains("short") && e.to_string().contains("expected 5"), "{e}");
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 93]);
        // 3 + 4 + 93 = 100, plus 3 digits = 103.
        assert!(v.starts_with(b"103 path="));
        assert_eq!(v.len(), 103);
        v.clear();
        pax_record(&mut v, "k", b"v");
        assert_eq!(v, b"6 k=v\n");
    }
}
