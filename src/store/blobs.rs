//! Layer blobs kept beside extracted layers: `layers/CHAIN/blob` holds the exact bytes of one
//! blob the layer was extracted from (compressed as it came), and `meta.json` names it. `save`
//! and `push` hand these bytes out unchanged, so a saved image keeps its layer digests, diff_ids
//! and image ID; without them a layer would have to be re-packed from its directory, which
//! rarely reproduces the original tar byte for byte.
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::digest::Digest;

/// File name of the kept blob inside a layer directory.
pub const LAYER_BLOB: &str = "blob";

/// A kept blob: its digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// A reader that copies everything read through it into a file (a write error is returned as
/// a read error, so a failed copy fails the import).
pub struct TeeReader<R> {
    inner: R,
    copy: File,
}

impl<R: Read> TeeReader<R> {
    pub fn new(inner: R, copy: File) -> Self {
        TeeReader { inner, copy }
    }
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A layer's kept blob on disk.
#[derive(Clone, Debug)]
pub struct LayerBlob {
    pub path: PathBuf,
    pub blob: BlobRef,
}

impl Store {
    /// The blob kept for a layer, if it has one (layers stored before blobs were kept have
    /// none).
    pub fn layer_blob(&self, chain: &Digest) -> crate::Result<Option<LayerBlob>> {
        let meta = self.layer_meta(chain)?;
        let Some(blob) = meta.blob else {
            return Ok(None);
        };
        let path = self.layer_dir(chain).join(LAYER_BLOB);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == blob.size => Ok(Some(LayerBlob { path, blob })),
            _ => Ok(None),
        }
    }
}
