//! Removing images and collecting what nothing references any more. Callers hold the store lock
//! exclusively, so no load can be reusing a layer while it disappears.
use std::collections::BTreeSet;
use std::io::Write;

use super::{ImageRecord, Store, remove_all};
use crate::digest::Digest;
use crate::{Error, Result};

impl Store {
    /// Removes image records (their names must already be gone), then unreferenced layers and
    /// blobs. Returns the bytes reclaimed (uncompressed layer sizes).
    pub(crate) fn delete_images(&self, ids: &[Digest], out: &mut dyn Write) -> Result<u64> {
        for id in ids {
            super::fault::point("gc-remove-record");
            let p = self.image_path(id);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    let _ = writeln!(out, "Deleted: {id}");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &p, e)),
            }
        }
        self.collect_garbage(out)
    }

    /// Deletes layers no image needs and config/manifest blobs no image names.
    pub(crate) fn collect_garbage(&self, out: &mut dyn Write) -> Result<u64> {
        let (images, unreadable) = self.images_readable()?;
        if !unreadable.is_empty() {
            // What an unreadable record needs is unknown: delete nothing.
            let _ = writeln!(
                out,
                "warning: unreferenced layers and blobs kept: {} image record(s) unreadable ({}); {}",
                unreadable.len(),
                unreadable
                    .iter()
                    .map(|u| u.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                super::health::FSCK_HINT
            );
            return Ok(0);
        }
        let mut keep_layers = BTreeSet::new();
        let mut keep_blobs = BTreeSet::new();
        for img in &images {
            keep_layers.extend(img.layers.iter().cloned());
            keep_blobs.insert(img.id.clone());
            keep_blobs.extend(img.manifest.iter().cloned());
            keep_blobs.extend(img.manifests.values().cloned());
            // Manifests pushed or pulled under other digests (push, indexes).
            keep_blobs.extend(
                img.repo_digests
                    .iter()
                    .filter_map(|rd| rd.rsplit_once('@'))
                    .filter_map(|(_, d)| Digest::parse(d).ok()),
            );
        }
        let mut reclaimed = 0;
        for chain in self.layer_ids()? {
            if keep_layers.contains(&chain) {
                continue;
            }
            let size = self.layer_meta(&chain).map(|m| m.size).unwrap_or(0);
            // Out of sight in one rename, then removed: a crash in between leaves only tmp/.
            super::fault::point("gc-remove-layer");
            let st = self.staging()?;
            let from = self.layer_dir(&chain);
            let to = st.path().join("layer");
            std::fs::rename(&from, &to).map_err(|e| Error::io("remove layer", &from, e))?;
            remove_all(&to)?;
            reclaimed += size;
            let _ = writeln!(out, "Deleted layer: {chain}");
        }
        for blob in super::list_hex(&self.root.join("blobs/sha256"), "")? {
            if !keep_blobs.contains(&blob) {
                let p = self.blob_path(&blob);
                std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
        }
        Ok(reclaimed)
    }

    /// Names pointing at `id`, normalised.
    pub fn names_of(&self, id: &Digest) -> Result<Vec<String>> {
        Ok(self
            .refs()?
            .into_iter()
            .filter(|(_, v)| v == id)
            .map(|(k, _)| k)
            .collect())
    }

    /// Images no name points at.
    pub fn dangling(&self) -> Result<Vec<ImageRecord>> {
        // A lost refs.json must not make every image look dangling.
        let refs = self.refs_checked()?;
        let named: BTreeSet<&Digest> = refs.values().collect();
        Ok(self
            .images()?
            .into_iter()
            .filter(|i| !named.contains(&i.id))
            .collect())
    }
}
