//! Where a layer's blob is: the compressed (or plain) blob it was extracted from, as it came,
//! kept in `blobs/sha256/` (import and pull publish it there; `LayerMeta::sources` names it and
//! keeps it from GC). `save` and `push` hand these bytes out unchanged, so a saved image keeps
//! its layer digests, diff_ids and image ID; without them a layer would have to be re-packed
//! from its directory, which rarely reproduces the original tar byte for byte.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Digest, Store};

/// Blob file inside a layer directory, written by early versions (see `LayerMeta::blob`).
const LEGACY_LAYER_BLOB: &str = "blob";

/// A blob: its digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// A layer's blob on disk.
#[derive(Clone, Debug)]
pub struct LayerBlob {
    pub path: PathBuf,
    pub blob: BlobRef,
}

impl Store {
    /// A blob this layer was extracted from that the store still has, if any (layers loaded
    /// by a version that did not keep blobs have none).
    pub fn layer_blob(&self, chain: &Digest) -> crate::Result<Option<LayerBlob>> {
        let meta = self.layer_meta(chain)?;
        for d in &meta.sources {
            let path = self.blob_path(d);
            if let Ok(m) = std::fs::metadata(&path) {
                let blob = BlobRef {
                    digest: d.clone(),
                    size: m.len(),
                };
                return Ok(Some(LayerBlob { path, blob }));
            }
        }
        if let Some(blob) = meta.blob {
            let path = self.layer_dir(chain).join(LEGACY_LAYER_BLOB);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == blob.size) {
                return Ok(Some(LayerBlob { path, blob }));
            }
        }
        Ok(None)
    }
}
