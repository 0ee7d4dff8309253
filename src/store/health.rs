//! Reading a store that may be damaged: what is readable is used, what is not is named.
//!
//! - An unreadable image record (truncated, not JSON) is skipped by listings and named in a
//!   warning; garbage collection then deletes nothing, since it cannot know what that image
//!   needs, and `prune` never counts it as dangling.
//! - A corrupt `refs.json` stops commands that change names (with the remedy), while listings
//!   fall back to the names kept in the image records.
//! - A missing `refs.json` beside image records is damage, not "no names": `prune` refuses.
//! - A store that is read-only (a read-only mount, another owner) can still be listed.
use std::path::{Path, PathBuf};

use super::{ImageRecord, Refs, Store, list_hex};
use crate::{Error, Result};

/// The subdirectories every store has.
pub const STORE_DIRS: [&str; 5] = ["blobs/sha256", "layers", "images", "containers", "tmp"];

/// What `layerfs fsck --repair` is called for in messages.
pub const FSCK_HINT: &str =
    "run `layerfs fsck` to see the damage, `layerfs fsck --repair` to fix it";

/// A store record that could not be read.
#[derive(Clone, Debug)]
pub struct Unreadable {
    pub path: PathBuf,
    pub why: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

/// Creates the store's directories (when it can) and refuses a file in a directory's place.
/// `writable` is false when the store can only be read.
pub fn prepare_dirs(root: &Path) -> Result<bool> {
    let mut writable = true;
    for sub in STORE_DIRS {
        let d = root.join(sub);
        match std::fs::symlink_metadata(&d) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => {
                return Err(Error::Format(format!(
                    "{} is not a directory: the store keeps its {} there; move that file away \
                     (or use another --root)",
                    d.display(),
                    sub.split('/').next().unwrap_or(sub)
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", &d, e)),
        }
        match std::fs::create_dir_all(&d) {
            Ok(()) => {}
            Err(e) if read_only_error(&e) => writable = false,
            Err(e) => return Err(Error::io("create", &d, e)),
        }
    }
    Ok(writable)
}

/// EROFS, EACCES or EPERM: the store is not ours to write.
pub fn read_only_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::EACCES | libc::EPERM)
    )
}

impl Store {
    /// Gives a store without names an empty refs.json, so that a missing one always means it
    /// was lost (a first load killed between its image record and its names leaves `{}`).
    /// Published with link(2): an existing refs.json is never replaced.
    pub(crate) fn ensure_refs(&self) -> Result<()> {
        let p = self.refs_path();
        if p.exists() || !list_hex(&self.root.join("images"), ".json")?.is_empty() {
            return Ok(());
        }
        let st = self.staging()?;
        let tmp = st.path().join("refs.json");
        std::fs::write(&tmp, b"{}\n").map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("fsync", &tmp, e))?;
        match std::fs::hard_link(&tmp, &p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("link", &p, e)),
        }
    }

    /// Every image record that reads, and the ones that do not.
    pub fn images_readable(&self) -> Result<(Vec<ImageRecord>, Vec<Unreadable>)> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in list_hex(&self.root.join("images"), ".json")? {
            match self.image(&id) {
                Ok(r) if r.id == id => good.push(r),
                Ok(r) => bad.push(Unreadable {
                    path: self.image_path(&id),
                    why: format!("the record is for image {}", r.id),
                }),
                Err(e) => bad.push(Unreadable {
                    path: self.image_path(&id),
                    why: e.to_string(),
                }),
            }
        }
        Ok((good, bad))
    }

    /// The names: refs.json, or (when it is unreadable or missing) the names the image records
    /// keep, with a warning naming the problem.
    pub fn refs_for_listing(&self) -> Result<Refs> {
        match self.refs_checked() {
            Ok(r) => Ok(r),
            Err(e) => {
                log::warn!("{e}; names below come from the image records");
                let (images, _) = self.images_readable()?;
                Ok(names_from_records(&images))
            }
        }
    }

    /// refs.json, refusing a missing one when image records exist (it was lost, not empty).
    pub fn refs_checked(&self) -> Result<Refs> {
        let p = self.refs_path();
        if !p.exists() && !list_hex(&self.root.join("images"), ".json")?.is_empty() {
            return Err(Error::Format(format!(
                "{} is missing but image records exist: the names were lost; {FSCK_HINT} \
                 (names are rebuilt from the image records)",
                p.display()
            )));
        }
        self.refs()
    }
}

/// Names recorded in image records; a name two records claim goes to the later load.
pub fn names_from_records(images: &[ImageRecord]) -> Refs {
    let mut sorted: Vec<&ImageRecord> = images.iter().collect();
    sorted.sort_by(|a, b| a.loaded.cmp(&b.loaded));
    let mut refs = Refs::new();
    for img in sorted {
        for n in &img.names {
            refs.insert(n.clone(), img.id.clone());
        }
    }
    refs
}
