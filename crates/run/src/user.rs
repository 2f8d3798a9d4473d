//! Resolving a Dockerfile `USER` against the image's own /etc/passwd and /etc/group.
//!
//! Semantics follow runc's `user.GetExecUser`, which BuildKit uses:
//! - `""` is root (uid 0, gid 0); a missing passwd file is fine then.
//! - a numeric uid need not exist in passwd (gid then defaults to 0);
//!   a name must exist.
//! - without an explicit group, the primary gid comes from passwd and the
//!   supplementary gids are the groups that list the user by name;
//!   with an explicit group, there are no supplementary gids.

use std::path::Path;

use crate::RunError;
use crate::rootpath::resolve_in_root;

/// The identity a RUN process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the
/// passwd and group files of the root filesystem mounted at `rootfs`.
///
/// Symlinks in the image are followed inside `rootfs` only, so an image cannot
/// make strata read the host's files.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, RunError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd =
        read_image_file(rootfs, "/etc/passwd")?.map(|s| parse_passwd(&s)).unwrap_or_default();

    let mut resolved = ResolvedUser { uid: 0, gid: 0, additional_gids: Vec::new() };
    let mut matched_name: Option<String> = None;
    if user_part.is_empty() {
        // BuildKit treats "" as "0" but tolerates every lookup failure.
        if let Some(e) = passwd.iter().find(|e| e.uid == 0) {
            resolved.gid = e.gid;
            matched_name = Some(e.name.clone());
        }
    } else if let Ok(uid) = user_part.parse::<u32>() {
        resolved.uid = uid;
        if let Some(e) = passwd.iter().find(|e| e.uid == uid) {
            resolved.gid = e.gid;
            matched_name = Some(e.name.clone());
        }
    } else {
        let e =
            passwd.iter().find(|e| e.name == user_part).ok_or_else(|| RunError::UnknownUser {
                kind: "user",
                name: user_part.to_owned(),
                file: "passwd",
                hint: "add the user in an earlier RUN (e.g. `adduser`) or use a numeric uid",
            })?;
        resolved.uid = e.uid;
        resolved.gid = e.gid;
        matched_name = Some(e.name.clone());
    }

    let group_part = group_part.filter(|g| !g.is_empty());
    if group_part.is_none() && matched_name.is_none() {
        return Ok(resolved);
    }
    let groups =
        read_image_file(rootfs, "/etc/group")?.map(|s| parse_group(&s)).unwrap_or_default();
    match group_part {
        Some(g) => {
            if let Ok(gid) = g.parse::<u32>() {
                resolved.gid = gid;
            } else {
                let e =
                    groups
                        .iter()
                        .find(|e| e.name == g)
                        .ok_or_else(|| RunError::UnknownUser {
                            kind: "group",
                            name: g.to_owned(),
                            file: "group",
                            hint: "add the group in an earlier RUN (e.g. `addgroup`) or use a numeric gid",
                        })?;
                resolved.gid = e.gid;
            }
        }
        None => {
            if let Some(name) = matched_name {
                resolved.additional_gids =
                    groups.iter().filter(|e| e.members.contains(&name)).map(|e| e.gid).collect();
            }
        }
    }
    Ok(resolved)
}

/// Reads a small file of the image, `None` if it does not exist.
fn read_image_file(rootfs: &Path, path: &str) -> Result<Option<String>, RunError> {
    let real = resolve_in_root(rootfs, path)
        .map_err(|e| RunError::io("resolving image path", rootfs.join(&path[1..]), e))?;
    match std::fs::read(&real) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(RunError::io("reading image file", real, e)),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nappgrp:x:1001:\nwheel:x:10:root,app\nstaff:x:50:app\n",
        )
        .unwrap();
        d
    }

    fn r(root: &Path, u: &str) -> ResolvedUser {
        resolve_user(root, u).unwrap()
    }

    #[test]
    fn forms() {
        let d = root();
        let p = d.path();
        assert_eq!(r(p, ""), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![10] });
        assert_eq!(
            r(p, "app"),
            ResolvedUser { uid: 1000, gid: 1001, additional_gids: vec![10, 50] }
        );
        assert_eq!(r(p, "1000").additional_gids, vec![10, 50]);
        assert_eq!(r(p, "app:staff"), ResolvedUser { uid: 1000, gid: 50, additional_gids: vec![] });
        assert_eq!(r(p, "4242:77"), ResolvedUser { uid: 4242, gid: 77, additional_gids: vec![] });
        assert_eq!(r(p, "4242").gid, 0);
        let e = resolve_user(p, "nosuch").unwrap_err().to_string();
        assert!(e.contains("unable to find user \"nosuch\""), "{e}");
        let e = resolve_user(p, "app:nogroup").unwrap_err().to_string();
        assert!(e.contains("group \"nogroup\""), "{e}");
    }

    #[test]
    fn no_etc_at_all() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(r(d.path(), "").uid, 0);
        assert_eq!(r(d.path(), "12:34").gid, 34);
        assert!(resolve_user(d.path(), "nobody").is_err());
    }
}
