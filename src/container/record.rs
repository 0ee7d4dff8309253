//! Container records: `ROOT/containers/ID/meta.json` plus the writable layer beside it.
//!
//! A container is created in `ROOT/tmp/` (record, `upper/`, `work/`) and appears in
//! `containers/` by one rename, made while holding an exclusive flock on the `containers/`
//! directory itself, so two `create --name X` cannot both succeed. Its `image` field pins the
//! image (and so its layers) against `rmi` and `prune` (see `Store::images_in_use`).
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::store::records::now_rfc3339;
use crate::store::{ImageRecord, Store};
use crate::{Error, Result};

/// A container ID: 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    /// A fresh random ID.
    pub fn random() -> Result<Self> {
        use std::io::Read;
        let mut b = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::io("read", "/dev/urandom", e))?;
        Ok(ContainerId(hex::encode(b)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 digits, as `ps` shows IDs.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for ContainerId {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        if crate::digest::is_sha256_hex(&s) {
            Ok(ContainerId(s))
        } else {
            Err(format!(
                "invalid container ID {s:?}: expected 64 hex digits"
            ))
        }
    }
}

impl From<ContainerId> for String {
    fn from(c: ContainerId) -> String {
        c.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// containers/ID/meta.json
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: ContainerId,
    pub name: String,
    /// The image ID; pins the image and its layers.
    pub image: Digest,
    /// The image as the user named it at create (`alpine:latest`, or a short ID).
    pub image_name: String,
    /// The image's layers (chain IDs), bottom first.
    pub layers: Vec<Digest>,
    /// RFC 3339.
    pub created: String,
    /// Where the container was last mounted read-write (`/proc/self/mountinfo` is the truth:
    /// see `mount::mounts_of`).
    #[serde(default)]
    pub mountpoint: Option<PathBuf>,
    /// Made by `mount IMAGE MNT --rm`: removed with everything it wrote at `umount`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_at_umount: bool,
}

const META: &str = "meta.json";
/// Held (flock) by the daemon serving a mount of the container: exclusive for a writable
/// mount, shared for a read-only one.
const MOUNT_LOCK: &str = "mount.lock";

/// A container's size: its writable layer, and that plus its image (docker's "virtual").
pub fn sizes(store: &Store, cs: &Containers<'_>, rec: &ContainerRecord) -> (u64, u64) {
    let rw = upper_size(&cs.upper(&rec.id));
    (rw, store.image(&rec.image).map_or(0, |i| i.size) + rw)
}

/// Bytes and inodes of a writable layer (each inode once; directories not counted).
pub fn upper_size(p: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                walk(&e.path(), seen, total);
            } else if md.nlink() == 1 || seen.insert((md.dev(), md.ino())) {
                *total += md.size();
            }
        }
    }
    let mut total = 0;
    walk(p, &mut HashSet::new(), &mut total);
    total
}

/// Valid container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 bytes, not 64 hex digits.
pub fn check_name(name: &str) -> Result<()> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || name.len() > 128 {
        return Err(Error::Usage(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting \
             with a letter or digit (at most 128 characters)"
        )));
    }
    if crate::digest::is_sha256_hex(name) {
        return Err(Error::Usage(format!(
            "invalid container name {name:?}: it would look like a container ID"
        )));
    }
    Ok(())
}

const ADJECTIVES: [&str; 24] = [
    "amber", "bold", "brisk", "calm", "clever", "cosmic", "dapper", "eager", "fuzzy", "gentle",
    "happy", "jolly", "keen", "lucid", "mellow", "nimble", "plucky", "quiet", "rapid", "sunny",
    "tidy", "vivid", "witty", "zesty",
];
const NOUNS: [&str; 24] = [
    "badger", "beacon", "cedar", "comet", "delta", "falcon", "fjord", "glacier", "harbor", "heron",
    "island", "lagoon", "maple", "meadow", "otter", "pebble", "quartz", "raven", "river", "summit",
    "tundra", "walrus", "willow", "yak",
];

/// A readable default name derived from the ID (`keen_otter`), made unique against `taken`.
fn generated_name(id: &ContainerId, taken: &[String]) -> String {
    let b = id.as_str().as_bytes();
    let n = usize::from(b[0]) * 31 + usize::from(b[1]) * 7 + usize::from(b[2]);
    let base = format!(
        "{}_{}",
        ADJECTIVES[n % ADJECTIVES.len()],
        NOUNS[(n / ADJECTIVES.len()) % NOUNS.len()]
    );
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}{i}"))
        .find(|c| !taken.contains(c))
        .unwrap_or_else(|| id.short().to_string())
}

/// The containers of a store.
pub struct Containers<'s> {
    store: &'s Store,
    dir: PathBuf,
}

/// An flock held until dropped.
pub struct Flock {
    _file: File,
}

impl Flock {
    fn take(file: File, op: FlockOperation, path: &Path) -> Result<Option<Flock>> {
        loop {
            match flock(file.as_fd(), op) {
                Ok(()) => return Ok(Some(Flock { _file: file })),
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::io("lock", path, e.into())),
            }
        }
    }
}

impl<'s> Containers<'s> {
    pub fn new(store: &'s Store) -> Self {
        Containers {
            store,
            dir: store.containers_dir(),
        }
    }

    pub fn store(&self) -> &'s Store {
        self.store
    }

    pub fn dir_of(&self, id: &ContainerId) -> PathBuf {
        self.dir.join(id.as_str())
    }
    pub fn upper(&self, id: &ContainerId) -> PathBuf {
        self.dir_of(id).join("upper")
    }
    pub fn work(&self, id: &ContainerId) -> PathBuf {
        self.dir_of(id).join("work")
    }

    /// Serialises creates and removals (name uniqueness).
    fn registry_lock(&self) -> Result<Flock> {
        let f = File::open(&self.dir).map_err(|e| Error::io("open", &self.dir, e))?;
        Flock::take(f, FlockOperation::LockExclusive, &self.dir)?
            .ok_or_else(|| Error::Usage("container registry lock not granted".into()))
    }

    /// Takes the mount lock of a container without waiting: `None` when a mount holds it.
    /// The lock is meant to be inherited by the daemon (it survives `fork`).
    pub fn try_mount_lock(&self, id: &ContainerId, exclusive: bool) -> Result<Option<Flock>> {
        let p = self.dir_of(id).join(MOUNT_LOCK);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("open", &p, e))?;
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        Flock::take(f, op, &p)
    }

    /// True when a daemon serves a mount of this container.
    pub fn is_served(&self, id: &ContainerId) -> Result<bool> {
        Ok(self.try_mount_lock(id, true)?.is_none())
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let p = e.path().join(META);
            let b = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", &p, e)),
            };
            let rec: ContainerRecord = serde_json::from_slice(&b).map_err(|e| {
                Error::Format(format!("{}: corrupt container record: {e}", p.display()))
            })?;
            out.push(rec);
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// A container by full ID, exact name, or unique ID prefix; `None` if nothing matches.
    pub fn find(&self, s: &str) -> Result<Option<ContainerRecord>> {
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.id.as_str() == s || c.name == s) {
            return Ok(Some(c.clone()));
        }
        let lower = s.to_ascii_lowercase();
        if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hits: Vec<&ContainerRecord> = all
            .iter()
            .filter(|c| c.id.as_str().starts_with(&lower))
            .collect();
        match hits.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            many => Err(Error::Usage(format!(
                "container ID prefix {s} is ambiguous: it matches {} containers; give more digits",
                many.len()
            ))),
        }
    }

    /// Like [`Containers::find`], but a miss is an error.
    pub fn resolve(&self, s: &str) -> Result<ContainerRecord> {
        self.find(s)?.ok_or_else(|| {
            Error::Usage(format!(
                "no such container: {s} (see `layerfs ps -a` for the containers)"
            ))
        })
    }

    /// Creates a container of `image`: an empty writable layer whose root takes the image
    /// root's owner, mode and times.
    pub fn create(
        &self,
        image: &ImageRecord,
        image_name: &str,
        name: Option<&str>,
    ) -> Result<ContainerRecord> {
        if let Some(n) = name {
            check_name(n)?;
        }
        let id = ContainerId::random()?;
        let staging = self.store.staging()?;
        let dir = staging.path().join("c");
        for sub in ["upper", "work"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
        }
        if let Some(top) = image.layers.last() {
            copy_root_attrs(&self.store.layer_diff(top), &dir.join("upper"))?;
        }
        let mut rec = ContainerRecord {
            id: id.clone(),
            name: name.unwrap_or_default().to_string(),
            image: image.id.clone(),
            image_name: image_name.to_string(),
            layers: image.layers.clone(),
            created: now_rfc3339(),
            mountpoint: None,
            remove_at_umount: false,
        };
        let _lock = self.registry_lock()?;
        let taken: Vec<String> = self.list()?.into_iter().map(|c| c.name).collect();
        match name {
            Some(n) if taken.iter().any(|t| t == n) => {
                return Err(Error::Usage(format!(
                    "the container name {n:?} is already in use: remove that container \
                     (layerfs rm {n}) or choose another name"
                )));
            }
            Some(_) => {}
            None => rec.name = generated_name(&id, &taken),
        }
        write_record(&dir, &rec)?;
        let to = self.dir_of(&id);
        std::fs::rename(&dir, &to).map_err(|e| Error::io("create container", &to, e))?;
        Ok(rec)
    }

    /// Rewrites a container's record (atomically).
    pub fn update(&self, rec: &ContainerRecord) -> Result<()> {
        write_record(&self.dir_of(&rec.id), rec)
    }

    /// Deletes a container and everything it wrote. The caller made sure it is not mounted.
    pub fn remove(&self, rec: &ContainerRecord) -> Result<()> {
        let _lock = self.registry_lock()?;
        let staging = self.store.staging()?;
        let from = self.dir_of(&rec.id);
        let to = staging.path().join("rm");
        std::fs::rename(&from, &to).map_err(|e| Error::io("remove container", &from, e))?;
        crate::store::remove_all(&to)
    }
}

fn write_record(dir: &Path, rec: &ContainerRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(rec)
        .map_err(|e| Error::Format(format!("encoding container record: {e}")))?;
    let tmp = dir.join(".meta.json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", &tmp, e))?;
    let dest = dir.join(META);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))
}

/// Gives `to` the owner, permission bits and times of directory `from`.
fn copy_root_attrs(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(from).map_err(|e| Error::io("stat", from, e))?;
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(to, Some(md.uid()), Some(md.gid()))
            .map_err(|e| Error::io("chown", to, e))?;
    }
    let perm = std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777);
    std::fs::set_permissions(to, perm).map_err(|e| Error::io("chmod", to, e))?;
    let t = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let ts = rustix::fs::Timestamps {
        last_access: t(md.atime(), md.atime_nsec()),
        last_modification: t(md.mtime(), md.mtime_nsec()),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        to,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io("utimens", to, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "db-1", "x_y.z", "A9"] {
            check_name(ok).unwrap();
        }
        let hex64 = "a".repeat(64);
        let long = "a".repeat(129);
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "é",
            hex64.as_str(),
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generated_names_are_unique() {
        let id = ContainerId("ab".repeat(32));
        let first = generated_name(&id, &[]);
        check_name(&first).unwrap();
        let second = generated_name(&id, std::slice::from_ref(&first));
        assert_ne!(first, second);
        assert!(second.starts_with(&first));
    }

    #[test]
    fn ids() {
        let a = ContainerId::random().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a, ContainerId::random().unwrap());
        assert!(ContainerId::try_from("xyz".to_string()).is_err());
    }
}
