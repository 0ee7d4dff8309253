//! The content-addressed chunk cache (`ROOT/chunks/sha256/HEX`: the decoded bytes of one TOC
//! piece, named by their sha256) and the fetch of a missing piece: one Range request for its
//! compressed span, decoded, checked against the TOC's digest, and only then published (temp
//! file + rename; EEXIST-like races are success). A piece whose digest does not match is never
//! written and never returned: the read gets EIO. Pieces are shared by every layer and image
//! that lists the same digest, so each is fetched once.
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::remote::Remote;
use crate::digest::Digest;
use crate::image::estargz::decode_piece;
use crate::image::toc::TocChunk;
use crate::{Error, Result};

/// How a layer's pieces are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// zstd:chunked: the span is one or more complete zstd frames.
    Zstd,
    /// eStargz: the span is one or more gzip members; skip `inner_offset` decoded bytes.
    Gzip,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

pub struct ChunkCache {
    root: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    /// Bytes cached (an estimate kept by this process; checked against the limit).
    total: AtomicU64,
}

impl ChunkCache {
    /// The cache of the store at `root`.
    pub fn open(root: &Path) -> Result<ChunkCache> {
        let dir = root.join("chunks/sha256");
        let tmp = root.join("chunks/tmp");
        for d in [&dir, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let c = ChunkCache {
            root: root.to_owned(),
            dir,
            tmp,
            total: AtomicU64::new(0),
        };
        c.total.store(c.size(), Ordering::Relaxed);
        Ok(c)
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// `len` bytes at `off` of a cached piece; None when it is not cached.
    pub fn read(&self, d: &Digest, off: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let f = match File::open(self.path(d)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match f.read_at(&mut buf[got..], off + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(Some(buf))
    }

    /// Publishes verified bytes under their digest.
    pub fn put(&self, d: &Digest, data: &[u8]) -> Result<()> {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
        drop(f);
        let dest = self.path(d);
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))?;
        let total = self.total.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
        if let Some(left) = super::gc::enforce_limit(&self.root, total) {
            self.total.store(left, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Total bytes cached (for `images`/`df`-style reports and tests).
    pub fn size(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Where one lazy layer's pieces come from.
pub struct LayerSource {
    pub blob: Digest,
    pub codec: Codec,
    pub remote: Arc<Remote>,
    pub cache: Arc<ChunkCache>,
    /// One fetch per piece at a time: concurrent readers of a piece wait for the first.
    inflight: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl LayerSource {
    pub fn new(blob: Digest, codec: Codec, remote: Arc<Remote>, cache: Arc<ChunkCache>) -> Self {
        LayerSource {
            blob,
            codec,
            remote,
            cache,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure piece `c` is in the cache: fetched, decoded and verified when it is not.
    pub fn ensure(&self, c: &TocChunk) -> Result<()> {
        if self.cache.has(&c.digest) {
            return Ok(());
        }
        let lock = Arc::clone(self.inflight.lock().entry(c.digest.clone()).or_default());
        let _held = lock.lock();
        if self.cache.has(&c.digest) {
            return Ok(());
        }
        let r = self.fetch(c);
        self.inflight.lock().remove(&c.digest);
        let data = r?;
        self.cache.put(&c.digest, &data)
    }

    fn fetch(&self, c: &TocChunk) -> Result<Vec<u8>> {
        let span = self.remote.range(&self.blob, c.blob_offset, c.blob_end)?;
        let what = format!(
            "piece {} of layer {} (bytes {}-{})",
            c.digest.short(),
            self.blob.short(),
            c.blob_offset,
            c.blob_end
        );
        let data = match self.codec {
            Codec::Zstd => {
                let mut out = Vec::with_capacity(c.size as usize);
                zstd::stream::read::Decoder::new(&span[..])
                    .and_then(|d| d.take(c.size + 1).read_to_end(&mut out))
                    .map_err(|e| Error::Format(format!("{what}: zstd: {e}")))?;
                out
            }
            Codec::Gzip => decode_piece(&span, c.inner_offset, c.size)
                .map_err(|e| Error::Format(format!("{what}: gzip: {e}")))?,
        };
        let got = Digest::of(&data);
        if data.len() as u64 != c.size || got != c.digest {
            return Err(Error::DigestMismatch {
                what,
                expected: c.digest.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(data)
    }
}
