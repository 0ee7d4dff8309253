//! The content-addressed image store.
//!
//! ```text
//! ROOT/
//!   lock                    flock: shared for readers and loads, exclusive for rmi/prune (GC)
//!   blobs/sha256/HEX        manifests and configs, exactly the bytes loaded (config HEX = image ID)
//!   layers/HEX/diff/        an extracted layer in overlay format, read-only once published
//!   layers/HEX/meta.json    LayerMeta; HEX is the layer's chain ID (see below)
//!   layers/HEX/blob         the blob the layer was extracted from, as it came (see blobs.rs)
//!   images/HEX.json         ImageRecord; HEX is the image ID (sha256 of the config bytes)
//!   images/refs.json        "docker.io/library/alpine:latest" -> image ID
//!   images/refs.lock        flock serialising read-modify-write of refs.json
//!   containers/ID/meta.json written by the container module; its "image" pins an image
//!   tmp/                    staging; swept when no other process holds the store lock
//!   downloads/HEX[.partial] registry downloads kept for a resumed pull (registry/download.rs)
//! ```
//!
//! Layers are keyed by chain ID, which is computed from diff_ids (uncompressed digests) only,
//! so one layer loaded from gzip, zstd or plain sources is stored once. The chain ID and not the
//! bare diff_id is the key because an extracted layer depends on its parents: directories a
//! layer creates implicitly take their attributes from the layers below.
//!
//! Everything is published by one rename of a fully written, synced object; an existing target
//! (EEXIST/ENOTEMPTY) means another load published the same content first, which is success.
pub mod blobs;
pub mod convert;
pub mod fault;
pub mod fsck;
mod gc;
pub mod health;
pub mod import;
mod lock;
pub mod ops;
mod pipeline;
pub mod records;
pub mod save;
mod treecmp;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use lock::LockMode;
pub use records::{ImageRecord, LayerMeta, Refs};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::{Error, Result};

/// An open store holding the store lock in the mode it was opened with.
pub struct Store {
    root: PathBuf,
    /// None only for a reader of a read-only store without a lock file.
    _lock: Option<lock::FileLock>,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// /var/lib/layerfs for root, else $XDG_DATA_HOME/layerfs or ~/.local/share/layerfs.
    pub fn default_root() -> PathBuf {
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/layerfs");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("layerfs");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/layerfs")
    }

    /// Opens (creating) the store at `root`. Sweeps `tmp/` when no other process has the store
    /// open, since a staging directory only outlives its process after a crash.
    pub fn open(root: &Path, mode: LockMode) -> Result<Store> {
        make_private(root)?;
        let writable = health::prepare_dirs(root)?;
        if !writable && mode == LockMode::Exclusive {
            return Err(Error::Usage(format!(
                "{}: the store is read-only here (read-only filesystem or another owner); \
                 only listing commands work",
                root.display()
            )));
        }
        let Some(lock) = lock::FileLock::open_for(&root.join("lock"), mode)? else {
            return Ok(Store {
                root: root.to_owned(),
                _lock: None,
            });
        };
        if writable && lock.try_exclusive()? {
            sweep(&root.join("tmp"))?;
            if mode == LockMode::Shared {
                lock.shared()?;
            }
        } else {
            match mode {
                LockMode::Shared => lock.shared()?,
                LockMode::Exclusive => lock.exclusive()?,
            }
        }
        let store = Store {
            root: root.to_owned(),
            _lock: Some(lock),
        };
        if writable {
            store.ensure_refs()?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }
    pub fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join("layers").join(chain.hex())
    }
    /// The overlay lower directory of a layer.
    pub fn layer_diff(&self, chain: &Digest) -> PathBuf {
        self.layer_dir(chain).join("diff")
    }
    pub(crate) fn image_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }
    pub(crate) fn refs_path(&self) -> PathBuf {
        self.root.join("images/refs.json")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// A fresh staging directory under tmp/, removed when the guard drops.
    pub fn staging(&self) -> Result<Staging> {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = self
            .root
            .join("tmp")
            .join(format!("{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir(&p).map_err(|e| Error::io("create", &p, e))?;
        Ok(Staging(p))
    }

    /// Writes `bytes` to a file through tmp/ and one rename.
    pub(crate) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let st = self.staging()?;
        let tmp = st.path().join("f");
        std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io("open", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        crate::store::fault::point("record-before-rename");
        std::fs::rename(&tmp, dest).map_err(|e| Error::io("rename", dest, e))?;
        // The rename itself reaches the disk with the directory.
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync", dir, e))?;
        }
        Ok(())
    }

    /// Stores a manifest or config blob (content-addressed: an existing one is kept).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        let dest = self.blob_path(&d);
        if !dest.exists() {
            self.write_atomic(&dest, bytes)?;
        }
        Ok(d)
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        std::fs::read(&p).map_err(|e| Error::io("read", &p, e))
    }

    pub fn layer_meta(&self, chain: &Digest) -> Result<LayerMeta> {
        let p = self.layer_dir(chain).join("meta.json");
        let b = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        serde_json::from_slice(&b).map_err(|e| {
            Error::Format(format!(
                "{}: corrupt layer record: {e}; {}",
                p.display(),
                health::FSCK_HINT
            ))
        })
    }

    pub fn has_layer(&self, chain: &Digest) -> bool {
        self.layer_dir(chain).join("meta.json").exists()
    }

    /// Every published layer's chain ID.
    pub fn layer_ids(&self) -> Result<Vec<Digest>> {
        list_hex(&self.root.join("layers"), "")
    }

    pub fn image(&self, id: &Digest) -> Result<ImageRecord> {
        let p = self.image_path(id);
        let b = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        serde_json::from_slice(&b).map_err(|e| {
            Error::Format(format!(
                "{}: corrupt image record: {e}; {}",
                p.display(),
                health::FSCK_HINT
            ))
        })
    }

    /// Every readable image record; an unreadable one is named in a warning and skipped
    /// (see [`health`]: garbage collection checks for those before deleting anything).
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let (good, bad) = self.images_readable()?;
        for b in &bad {
            log::warn!("unreadable image record {b}; {}", health::FSCK_HINT);
        }
        Ok(good)
    }

    pub(crate) fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::Format(format!("encoding image record: {e}")))?;
        self.write_atomic(&self.image_path(&rec.id), &bytes)
    }

    /// Records that image `id` is known in a registry as `repo_digest`
    /// (`registry/repository@sha256:…`): after a pull by digest or through an index, and after
    /// a push. Serialised with name updates by the refs lock.
    pub fn add_repo_digest(&self, id: &Digest, repo_digest: &str) -> Result<()> {
        let l = lock::FileLock::open(&self.root.join("images/refs.lock"))?;
        l.exclusive()?;
        let mut rec = self.image(id)?;
        if rec.repo_digests.iter().any(|r| r == repo_digest) {
            return Ok(());
        }
        rec.repo_digests.push(repo_digest.to_owned());
        self.put_image(&rec)
    }

    pub fn refs(&self) -> Result<Refs> {
        match std::fs::read(self.refs_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Format(format!(
                    "{}: corrupt ({e}); {} (names are rebuilt from the image records)",
                    self.refs_path().display(),
                    health::FSCK_HINT
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Refs::new()),
            Err(e) => Err(Error::io("read", self.refs_path(), e)),
        }
    }

    /// Read-modify-write of refs.json under its own lock (loads run concurrently).
    pub fn update_refs<T>(&self, f: impl FnOnce(&mut Refs) -> Result<T>) -> Result<T> {
        let l = lock::FileLock::open(&self.root.join("images/refs.lock"))?;
        l.exclusive()?;
        let mut refs = self.refs_checked()?;
        let out = f(&mut refs)?;
        // Each image record keeps its names too, so that a lost refs.json can be rebuilt
        // (`fsck --repair`). Records first: refs.json stays the authority when both read.
        let mut names: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for (n, id) in &refs {
            names.entry(id).or_default().push(n.clone());
        }
        for mut img in self.images_readable()?.0 {
            let want = names.get(&img.id).cloned().unwrap_or_default();
            if img.names != want {
                img.names = want;
                self.put_image(&img)?;
            }
        }
        let bytes = serde_json::to_vec_pretty(&refs)
            .map_err(|e| Error::Format(format!("encoding refs: {e}")))?;
        self.write_atomic(&self.refs_path(), &bytes)?;
        Ok(out)
    }

    /// Resolves IMAGE: a reference (`alpine`, `x:1`), a full or prefixed ID (`sha256:ab12…`,
    /// `ab12`), or `name@sha256:…` (a repo digest).
    pub fn resolve(&self, s: &str) -> Result<ImageRecord> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let looks_like_id = hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if looks_like_id {
            let ids: Vec<Digest> = list_hex(&self.root.join("images"), ".json")?
                .into_iter()
                .filter(|d| d.hex().starts_with(&hex.to_ascii_lowercase()))
                .collect();
            match ids.len() {
                1 => return self.image(&ids[0]),
                0 => {}
                _ => {
                    return Err(Error::Usage(format!(
                        "image ID prefix {s} is ambiguous: it matches {} images",
                        ids.len()
                    )));
                }
            }
        }
        let not_found = || Error::Usage(format!("no such image: {s}"));
        let r = match Reference::parse(s) {
            Ok(r) => r,
            Err(_) if looks_like_id => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if let Some(d) = &r.digest {
            let want = format!("{}@{d}", r.name());
            return self
                .images()?
                .into_iter()
                .find(|i| i.repo_digests.contains(&want))
                .ok_or_else(not_found);
        }
        match self.refs()?.get(&r.to_string()) {
            Some(id) => self.image(id),
            None => Err(not_found()),
        }
    }

    /// Images pinned by containers (each containers/ID/meta.json with an "image" field).
    pub fn images_in_use(&self) -> Result<BTreeSet<Digest>> {
        let mut out = BTreeSet::new();
        let dir = self.containers_dir();
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        for e in rd.flatten() {
            let p = e.path().join("meta.json");
            let Ok(b) = std::fs::read(&p) else { continue };
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|err| {
                Error::Format(format!(
                    "{}: corrupt container record ({err}): which image it uses is unknown, so \
                     no image is removed; unmount that container if it is mounted and remove {}",
                    p.display(),
                    e.path().display()
                ))
            })?;
            if let Some(id) = v.get("image").and_then(|i| i.as_str()) {
                out.insert(Digest::parse(id)?);
            }
        }
        Ok(out)
    }

    /// Number of containers (directories under containers/).
    pub fn container_count(&self) -> usize {
        std::fs::read_dir(self.containers_dir())
            .map(|rd| rd.flatten().count())
            .unwrap_or(0)
    }

    /// Fails naming the first layer of `image` whose directory is missing from the store.
    pub fn check_layers_present(&self, image: &ImageRecord) -> Result<()> {
        for (i, chain) in image.layers.iter().enumerate() {
            let diff = self.layer_diff(chain);
            if !diff.is_dir() {
                return Err(Error::Format(format!(
                    "image {}: layer {} ({chain}) is missing from the store ({}); {}, or load \
                     or pull the image again",
                    image.id.short(),
                    i + 1,
                    diff.display(),
                    health::FSCK_HINT
                )));
            }
        }
        Ok(())
    }

    /// The lower directories of an image for the overlay driver, top layer first.
    pub fn lowerdirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|c| self.layer_diff(c))
            .collect()
    }
}

/// `layerfs mount --read-only IMAGE MNT`: the image's layer directories, top layer first.
pub fn image_lowerdirs(root: &Path, image_ref: &str) -> Result<Vec<PathBuf>> {
    let store = Store::open(root, LockMode::Shared)?;
    let img = store.resolve(image_ref)?;
    if img.layers.is_empty() {
        return Err(Error::Usage(format!(
            "image {image_ref} has no layers to mount"
        )));
    }
    store.check_layers_present(&img)?;
    Ok(store.lowerdirs(&img))
}

/// A staging directory under tmp/, removed (with its contents) on drop.
#[derive(Debug)]
pub struct Staging(PathBuf);

impl Staging {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = remove_all(&self.0);
        }
    }
}

/// Removes a tree without following symlinks (layers hold arbitrary symlinks).
pub fn remove_all(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", p, e)),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p).map_err(|e| Error::io("remove", p, e)),
        Ok(_) => std::fs::remove_file(p).map_err(|e| Error::io("remove", p, e)),
    }
}

fn sweep(tmp: &Path) -> Result<()> {
    let rd = std::fs::read_dir(tmp).map_err(|e| Error::io("read", tmp, e))?;
    for e in rd.flatten() {
        let p = e.path();
        log::info!("removing stale staging entry {}", p.display());
        remove_all(&p)?;
    }
    Ok(())
}

/// Names `HEX{suffix}` in `dir` as digests; other names are ignored.
fn list_hex(dir: &Path, suffix: &str) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_suffix(suffix) else {
            continue;
        };
        if crate::digest::is_sha256_hex(hex) {
            out.push(Digest::parse(&format!("sha256:{hex}"))?);
        }
    }
    out.sort();
    Ok(out)
}

/// Makes the store root private to its owner (0700), like Docker's /var/lib/docker: its layers
/// hold setuid-root programs and device nodes that nobody else may reach by path. A store made
/// by an older layerfs (0755) is fixed on open, and the user is told.
fn make_private(root: &Path) -> Result<()> {
    match crate::sys::private::ensure_private_dir(root, crate::sys::private::Last::Follow) {
        Ok((_, crate::sys::private::Tightened::No)) => Ok(()),
        Ok((_, crate::sys::private::Tightened::From(m))) => {
            eprintln!(
                "layerfs: store {} was mode {m:o}; made it private (0700): its layers hold \
                 setuid programs and device nodes",
                root.display()
            );
            Ok(())
        }
        Err(e) => Err(Error::Usage(format!("store {}: {e}", root.display()))),
    }
}
