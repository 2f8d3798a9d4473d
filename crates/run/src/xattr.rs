//! The one extended attribute we need to read: overlayfs's opaque marker.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The xattr overlayfs sets on an upper directory that hides all lower contents.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Whether `dir` (in an overlay upper directory) is marked opaque (`trusted.overlay.opaque=y`).
pub fn is_opaque(dir: &Path) -> io::Result<bool> {
    Ok(lgetxattr(dir, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y".as_slice()))
}

/// Reads the xattr `name` of `path` without following a final symlink;
/// `None` if it is not set.
#[allow(unsafe_code)]
fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // Overlay markers are tiny; 256 bytes covers them and ERANGE reports otherwise.
    let mut buf = [0u8; 256];
    // SAFETY: both strings are NUL-terminated and outlive the call; the buffer
    // pointer and length describe `buf` exactly, and the kernel writes at most
    // `buf.len()` bytes.
    let n = unsafe {
        libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(buf[..n as usize].to_vec()))
}
