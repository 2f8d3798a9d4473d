//! Ingest entries: strata's private ones (`ingest/strata-<pid>-<n>-<t>/`, with an `owner`
//! file) and foreign ones (containerd's `ingest/<hex of sha256(ref)>/`), and the rules for
//! removing those an interrupted writer left behind.
//!
//! Naming each strata writer's entry uniquely is what lets two threads or processes write
//! the same blob at once: containerd names the entry after the ref, so two writers of one
//! ref collide (moby/buildkit#2408). The `owner` file records host, pid, the pid's start
//! time (so a recycled pid is not mistaken for the writer) and its pid namespace (so a
//! writer in another container with the same host name is not judged dead).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};
use crate::layout::Layout;

/// Prefix of strata's ingest entries.
pub const STRATA_INGEST_PREFIX: &str = "strata-";
pub(crate) const OWNER_FILE: &str = "owner";
pub(crate) const DATA_FILE: &str = "data";

/// A strata ingest entry older than this whose writer cannot be checked (another host, or
/// no readable `owner`) is presumed abandoned. Generous, because a writer on another host
/// sharing the directory may be slow; nothing short-lived can be confused with it.
pub const UNKNOWN_WRITER_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A strata ingest entry without a readable `owner` file is presumed abandoned once idle
/// this long (see [`Layout::remove_stale_ingests`]).
pub const OWNERLESS_MAX_AGE: Duration = Duration::from_secs(60);

/// Who created a strata ingest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOwner {
    /// Host name of the writer.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22), if known.
    pub pid_start: Option<u64>,
    /// Its pid namespace (`/proc/self/ns/pid` link text), if known.
    pub pid_ns: Option<String>,
    /// When the entry was created (seconds since the epoch).
    pub started: u64,
}

impl IngestOwner {
    fn current() -> Self {
        let pid = std::process::id();
        Self {
            host: crate::lock::hostname(),
            pid,
            pid_start: proc_start_time(pid),
            pid_ns: pid_namespace(),
            started: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }

    fn encode(&self) -> String {
        let mut s = format!("host={}\npid={}\nstarted={}\n", self.host, self.pid, self.started);
        if let Some(t) = self.pid_start {
            s.push_str(&format!("pid_start={t}\n"));
        }
        if let Some(ns) = &self.pid_ns {
            s.push_str(&format!("pid_ns={ns}\n"));
        }
        s
    }

    fn decode(text: &str) -> Option<Self> {
        let (mut host, mut pid, mut started, mut pid_start, mut pid_ns) =
            (None, None, None, None, None);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("host", v)) => host = Some(v.to_owned()),
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("started", v)) => started = v.parse().ok(),
                Some(("pid_start", v)) => pid_start = v.parse().ok(),
                Some(("pid_ns", v)) => pid_ns = Some(v.to_owned()),
                _ => {}
            }
        }
        Some(Self { host: host?, pid: pid?, pid_start, pid_ns, started: started.unwrap_or(0) })
    }

    /// Whether the writer is still running: `None` when that cannot be told from here
    /// (another host or pid namespace, or no `/proc`).
    pub fn is_alive(&self) -> Option<bool> {
        if self.host != crate::lock::hostname() {
            return None;
        }
        if let (Some(theirs), Some(ours)) = (&self.pid_ns, pid_namespace())
            && *theirs != ours
        {
            return None;
        }
        process_alive(self.pid, self.pid_start)
    }
}

/// One entry under `ingest/`.
#[derive(Debug, Clone)]
pub struct IngestEntry {
    /// Its path.
    pub path: PathBuf,
    /// Whether strata made it (name starts with `strata-`); otherwise containerd/BuildKit did.
    pub strata: bool,
    /// The owner, for strata entries whose `owner` file is readable.
    pub owner: Option<IngestOwner>,
    /// Time since the last write to the entry (newest mtime of the dir and its files).
    pub age: Duration,
    /// Bytes written so far to its `data` file.
    pub size: u64,
    /// Whether its writer still runs; `None` when unknown (foreign entries, other hosts).
    pub writer_alive: Option<bool>,
}

/// Creates a new, uniquely named strata ingest entry and its `owner` file; returns the
/// entry's path.
pub(crate) fn create_entry(layout: &Layout) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ingest = layout.ingest_dir();
    // 0777 minus umask, as containerd creates it, so other users' builds can share the dir.
    fs::create_dir_all(&ingest).ctx("create", &ingest)?;
    let owner = IngestOwner::current();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = ingest.join(format!("{STRATA_INGEST_PREFIX}{}-{n}-{nanos:x}", owner.pid));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let owner_path = dir.join(OWNER_FILE);
                let written = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&owner_path)
                    .and_then(|mut f| f.write_all(owner.encode().as_bytes()));
                if let Err(e) = written {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e).ctx("write", &owner_path);
                }
                return Ok(dir);
            }
            // A leftover from a dead process that had the same pid: pick another name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).ctx("create ingest entry", &dir),
        }
    }
}

impl Layout {
    /// Lists `ingest/` entries (directories only). A missing `ingest/` is an empty list.
    pub fn list_ingests(&self) -> Result<Vec<IngestEntry>> {
        let ingest = self.ingest_dir();
        let rd = match fs::read_dir(&ingest) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("list", &ingest),
        };
        let now = SystemTime::now();
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.ctx("list", &ingest)?;
            let path = ent.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if !meta.is_dir() {
                continue;
            }
            let strata = ent.file_name().to_string_lossy().starts_with(STRATA_INGEST_PREFIX);
            let owner = if strata {
                fs::read_to_string(path.join(OWNER_FILE)).ok().and_then(|t| IngestOwner::decode(&t))
            } else {
                None
            };
            let mut newest = meta.modified().unwrap_or(now);
            let mut size = 0;
            if let Ok(files) = fs::read_dir(&path) {
                for f in files.flatten() {
                    if let Ok(m) = f.metadata() {
                        if let Ok(t) = m.modified() {
                            newest = newest.max(t);
                        }
                        if f.file_name() == DATA_FILE {
                            size = m.len();
                        }
                    }
                }
            }
            let writer_alive = owner.as_ref().and_then(IngestOwner::is_alive);
            let age = now.duration_since(newest).unwrap_or_default();
            out.push(IngestEntry { path, strata, owner, age, size, writer_alive });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes ingest entries left by interrupted writers and returns what it removed:
    /// - strata entries whose writer is known dead (same host and pid namespace);
    /// - strata entries without a readable `owner` file idle for [`OWNERLESS_MAX_AGE`];
    /// - strata entries whose writer cannot be checked, idle for at least
    ///   `max(min_age, UNKNOWN_WRITER_MAX_AGE)`;
    /// - foreign (containerd) entries idle for at least `min_age`.
    ///
    /// An entry whose writer is known to be alive is never removed.
    pub fn remove_stale_ingests(&self, min_age: Duration) -> Result<Vec<IngestEntry>> {
        let mut removed = Vec::new();
        for e in self.list_ingests()? {
            let stale = match (e.strata, e.writer_alive) {
                (_, Some(true)) => false,
                (true, Some(false)) => true,
                // No readable owner file: its writer was killed between creating the entry
                // and writing the owner file (a live writer writes it microseconds after
                // mkdir, and removes the entry if it cannot), so only a short wait applies.
                (true, None) if e.owner.is_none() => e.age >= OWNERLESS_MAX_AGE,
                (true, None) => e.age >= min_age.max(UNKNOWN_WRITER_MAX_AGE),
                (false, _) => e.age >= min_age,
            };
            if !stale {
                continue;
            }
            match fs::remove_dir_all(&e.path) {
                Ok(()) => removed.push(e),
                // Its writer finished (or another cleaner won) meanwhile.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).ctx("remove stale ingest entry", &e.path),
            }
        }
        Ok(removed)
    }
}

fn read_proc_stat(pid: u32) -> io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/stat"))
}

/// Splits `/proc/<pid>/stat` after the command name (which may contain spaces and ')').
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default()
}

fn proc_start_time(pid: u32) -> Option<u64> {
    // Field 22 overall; fields after ')' start at field 3, so index 19.
    stat_fields(&read_proc_stat(pid).ok()?).get(19)?.parse().ok()
}

fn pid_namespace() -> Option<String> {
    fs::read_link("/proc/self/ns/pid").ok().map(|p| p.to_string_lossy().into_owned())
}

fn process_alive(pid: u32, start: Option<u64>) -> Option<bool> {
    if !Path::new("/proc/self/stat").exists() {
        return None;
    }
    match read_proc_stat(pid) {
        Ok(stat) => {
            let fields = stat_fields(&stat);
            // Zombies and dead tasks write nothing more.
            if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
                return Some(false);
            }
            let now_start = fields.get(19).and_then(|s| s.parse::<u64>().ok());
            Some(match (start, now_start) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_and_we_are_alive() {
        let me = IngestOwner::current();
        assert_eq!(IngestOwner::decode(&me.encode()), Some(me.clone()));
        assert_eq!(me.is_alive(), Some(true));
        assert!(me.pid_start.is_some());
        let recycled = IngestOwner { pid_start: me.pid_start.map(|t| t + 1), ..me.clone() };
        assert_eq!(recycled.is_alive(), Some(false));
        let elsewhere = IngestOwner { host: "some-other-host-xyz".into(), ..me };
        assert_eq!(elsewhere.is_alive(), None);
        assert_eq!(IngestOwner::decode("pid=1\n"), None);
    }

    #[test]
    fn stale_rules() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        let ingest = l.ingest_dir();
        // Live strata writer (ours), a dead one, an ownerless one, and a containerd one.
        let live = create_entry(&l).unwrap();
        let dead = ingest.join("strata-999999999-0-0");
        fs::create_dir_all(&dead).unwrap();
        let dead_owner =
            IngestOwner { pid: 999_999_999, pid_start: None, ..IngestOwner::current() };
        fs::write(dead.join(OWNER_FILE), dead_owner.encode()).unwrap();
        let ownerless = ingest.join("strata-1-1-1");
        fs::create_dir_all(&ownerless).unwrap();
        let foreign = ingest.join("ab".repeat(32));
        fs::create_dir_all(&foreign).unwrap();
        fs::write(foreign.join("data"), b"partial").unwrap();
        fs::write(ingest.join("stray-file"), b"").unwrap();

        let listed = l.list_ingests().unwrap();
        assert_eq!(listed.len(), 4);
        let f = listed.iter().find(|e| e.path == foreign).unwrap();
        assert!(!f.strata && f.size == 7 && f.writer_alive.is_none());
        assert_eq!(listed.iter().find(|e| e.path == live).unwrap().writer_alive, Some(true));

        // With a long min_age only the dead writer's entry goes.
        let removed = l.remove_stale_ingests(Duration::from_secs(3600)).unwrap();
        assert_eq!(removed.iter().map(|e| &e.path).collect::<Vec<_>>(), vec![&dead]);
        // With min_age 0 the foreign entry goes too; the live one and the young ownerless
        // one (its writer might be about to write its owner file) stay.
        let removed = l.remove_stale_ingests(Duration::ZERO).unwrap();
        assert_eq!(removed.iter().map(|e| &e.path).collect::<Vec<_>>(), vec![&foreign]);
        assert!(live.exists() && ownerless.exists());
        // A SIGKILL between mkdir and the owner file: once idle for a minute it goes,
        // even with a long min_age (it cannot be a slow writer).
        let old = std::time::SystemTime::now() - Duration::from_secs(120);
        fs::File::open(&ownerless).unwrap().set_modified(old).unwrap();
        let removed = l.remove_stale_ingests(Duration::from_secs(3600)).unwrap();
        assert_eq!(removed.iter().map(|e| &e.path).collect::<Vec<_>>(), vec![&ownerless]);
        assert!(live.exists());
    }
}
