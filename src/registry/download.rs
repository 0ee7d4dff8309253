//! Resumable, verified blob downloads.
//!
//! ```text
//! ROOT/downloads/HEX.partial   bytes received so far; flock'd by the one process writing it
//! ROOT/downloads/HEX           a complete, verified blob no layer holds yet (a failed pull's)
//! ROOT/tmp/PULL/HEX            this pull's blobs (hard links), where the import links each
//!                              layer's kept blob (`layers/CHAIN/blob`) from
//! ```
//!
//! A blob is streamed to its reader (the store's import, which extracts while it reads) and
//! appended to the partial file at the same time. At the end of the stream the size and sha256
//! are checked; only then is the file synced, linked into the pull's directory and renamed to
//! `downloads/HEX`. After a successful pull the names in `downloads/` that a layer now holds
//! are removed: a blob is stored once, as its layer's kept blob. A wrong blob is deleted and
//! reported. An interrupted download (network failure, killed process) keeps its partial
//! file: the next pull replays it to the reader and asks the registry for the rest with a
//! `Range` request. A download the reader gave up on (corrupt stream) is deleted.
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{FlockOperation, flock};

use super::client::{Client, Method, Request, Stats, header};
use super::docs::blob_path;
use crate::digest::Digest;
use crate::digest::Hasher;
use crate::{Error, Result};

/// Partial downloads untouched for this long are removed at the next pull.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// One blob to fetch.
#[derive(Clone)]
pub struct BlobFetch {
    pub client: Arc<Client>,
    pub repository: String,
    pub scope: String,
    pub digest: Digest,
    pub size: u64,
    /// ROOT/downloads
    pub downloads: PathBuf,
    /// This pull's blob directory (the import's `blob_dir`).
    pub private: PathBuf,
    /// Notes for the user (resumed downloads), printed after the pull.
    pub notes: Arc<Mutex<Vec<String>>>,
    /// The first download failure: the real cause when the import reports only a read error.
    pub failure: Arc<Mutex<Option<Error>>>,
}

impl BlobFetch {
    fn partial(&self) -> PathBuf {
        self.downloads
            .join(format!("{}.partial", self.digest.hex()))
    }

    /// `downloads/HEX`: complete and verified.
    fn complete(&self) -> PathBuf {
        self.downloads.join(self.digest.hex())
    }

    fn private_path(&self) -> PathBuf {
        self.private.join(self.digest.hex())
    }

    /// Links a complete download into this pull's directory and opens it there (a concurrent
    /// pull removing `downloads/HEX` then cannot take it away). None when it is not there.
    fn adopt(&self) -> Result<Option<Box<dyn Read + Send>>> {
        let own = self.private_path();
        match std::fs::hard_link(self.complete(), &own) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("link", &own, e)),
        }
        let f = File::open(&own).map_err(|e| Error::io("open", &own, e))?;
        Ok(Some(Box::new(f)))
    }

    /// A reader of the blob: a complete earlier download, else a download that is verified
    /// and kept when read to the end.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        if let Some(r) = self.adopt()? {
            return Ok(r);
        }
        let partial = self.partial();
        let file = lock_partial(&partial)?;
        // Another process may have finished it while we waited for the lock.
        if let Some(r) = self.adopt()? {
            let _ = std::fs::remove_file(&partial);
            return Ok(r);
        }
        let mut have = file
            .metadata()
            .map_err(|e| Error::io("stat", &partial, e))?
            .len();
        if have > self.size {
            truncate(&file, &partial)?;
            have = 0;
        }
        // Every byte is there (a pull stopped before checking it): verify without a request.
        let net = if have == self.size {
            None
        } else {
            let (body, from) = self.request(have, &file, &partial)?;
            have = from;
            Some(body)
        };
        Ok(Box::new(Download {
            fetch: self.clone(),
            partial,
            file,
            replayed: 0,
            replay_end: have,
            net,
            hasher: Hasher::new(),
            done: false,
            interrupted: false,
        }))
    }
}

impl BlobFetch {
    /// GETs the blob from byte `have` on (a `Range` request when `have > 0`). Returns the body
    /// and the offset it starts at: 0 when the registry sent the whole blob, after which the
    /// partial file is emptied.
    fn request(
        &self,
        have: u64,
        file: &File,
        partial: &Path,
    ) -> Result<(Box<dyn Read + Send>, u64)> {
        let url = self
            .client
            .url(&blob_path(&self.repository, &self.digest))?;
        let mut req = Request::new(Method::Get, url.clone(), &self.scope);
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut resp = self.client.send(&req)?;
        if resp.status().as_u16() == 416 && have > 0 {
            // The registry cannot serve that range: start over.
            resp = self
                .client
                .send(&Request::new(Method::Get, url, &self.scope))?;
        }
        let from = match resp.status().as_u16() {
            200 => {
                if have > 0 {
                    truncate(file, partial)?;
                }
                0
            }
            206 if have > 0 => {
                let start = header(&resp, "content-range").and_then(|r| range_start(&r));
                if start != Some(have) {
                    return Err(Error::Registry(format!(
                        "registry {}: blob {}: resumed download starts at the wrong offset",
                        self.client.registry, self.digest
                    )));
                }
                if let Ok(mut n) = self.notes.lock() {
                    n.push(format!(
                        "blob {}: resumed an interrupted download at {have} of {} bytes",
                        short(&self.digest),
                        self.size
                    ));
                }
                have
            }
            404 => {
                return Err(Error::Registry(format!(
                    "registry {}: blob {} not found in {}",
                    self.client.registry, self.digest, self.repository
                )));
            }
            _ => {
                return Err(self.client.status_error(
                    resp,
                    &format!("blob {} of {}", self.digest, self.repository),
                    &self.scope,
                ));
            }
        };
        Stats::add(&self.client.stats.blob_downloads, 1);
        Ok((Box::new(resp.into_body().into_reader()), from))
    }
}

fn truncate(f: &File, p: &Path) -> Result<()> {
    f.set_len(0).map_err(|e| Error::io("truncate", p, e))
}

fn short(d: &Digest) -> String {
    format!("sha256:{}", d.short())
}

/// `bytes START-END/TOTAL` -> START.
fn range_start(v: &str) -> Option<u64> {
    let r = v.trim().strip_prefix("bytes")?.trim_start();
    r.split('-').next()?.trim().parse().ok()
}

/// Opens (creating) and exclusively locks a partial file; retries when the path was replaced
/// (published or discarded by another process) while waiting.
fn lock_partial(p: &Path) -> Result<File> {
    loop {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(p)
            .map_err(|e| Error::io("open", p, e))?;
        loop {
            match flock(&f, FlockOperation::LockExclusive) {
                Err(rustix::io::Errno::INTR) => continue,
                r => r.map_err(|e| Error::io("lock", p, e.into()))?,
            }
            break;
        }
        let held = f.metadata().map_err(|e| Error::io("stat", p, e))?;
        match std::fs::metadata(p) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(f),
            _ => continue,
        }
    }
}

/// After a successful pull: drops the `downloads/` names of blobs a layer now holds (the same
/// file, hard-linked).
pub fn forget_kept(downloads: &Path, digests: &[Digest]) {
    for d in digests {
        let p = downloads.join(d.hex());
        if std::fs::metadata(&p).is_ok_and(|m| m.nlink() > 1) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Removes downloads nobody has touched for a week and nobody holds.
pub fn sweep_stale(downloads: &Path) {
    let Ok(rd) = std::fs::read_dir(downloads) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if !old {
            continue;
        }
        if let Ok(f) = File::open(&p)
            && flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
        {
            log::info!("removing stale partial download {}", p.display());
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The reader handed to the import: replays the partial file, then streams the network body
/// into it; verifies and publishes at the end.
struct Download {
    fetch: BlobFetch,
    partial: PathBuf,
    /// Open for append (and pread for the replay); holds the flock.
    file: File,
    replayed: u64,
    replay_end: u64,
    net: Option<Box<dyn Read + Send>>,
    hasher: Hasher,
    done: bool,
    /// The network failed: the partial file is good to resume from.
    interrupted: bool,
}

impl Drop for Download {
    /// The reader stopped before the end for its own reasons (a corrupt stream, a bad tar,
    /// a full disk): what was received may be the cause, so it is not resumed from.
    fn drop(&mut self) {
        if !self.done && !self.interrupted {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl Download {
    /// Records the failure for the pull's report and returns it as an I/O error for the reader.
    fn fail(&self, e: Error) -> io::Error {
        let msg = e.to_string();
        if let Ok(mut f) = self.fetch.failure.lock() {
            f.get_or_insert(e);
        }
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    fn invalid(&self, why: String) -> io::Error {
        self.fail(Error::Registry(format!(
            "blob {} from registry {}: {why}",
            self.fetch.digest, self.fetch.client.registry
        )))
    }

    /// Checks size and digest; publishes the file or deletes it.
    fn finish(&mut self) -> io::Result<()> {
        self.done = true;
        self.net = None;
        let (got, len) = std::mem::take(&mut self.hasher).finish();
        if len != self.fetch.size {
            // Too short: keep the bytes for a resume.
            return Err(self.invalid(format!(
                "truncated: got {len} of {} bytes; run the pull again to resume",
                self.fetch.size
            )));
        }
        if got != self.fetch.digest {
            let _ = std::fs::remove_file(&self.partial);
            return Err(self.fail(Error::DigestMismatch {
                what: format!(
                    "blob from registry {} (the download was discarded)",
                    self.fetch.client.registry
                ),
                expected: self.fetch.digest.to_string(),
                actual: got.to_string(),
            }));
        }
        self.file.sync_all()?;
        std::fs::hard_link(&self.partial, self.fetch.private_path())?;
        std::fs::rename(&self.partial, self.fetch.complete())
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.replayed < self.replay_end {
            let want = buf
                .len()
                .min(usize::try_from(self.replay_end - self.replayed).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut buf[..want], self.replayed)?;
            if n == 0 {
                return Err(self.invalid("partial download shrank while being read".into()));
            }
            self.replayed += n as u64;
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        let Some(net) = self.net.as_mut() else {
            self.finish()?;
            return Ok(0);
        };
        let n = match net.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.interrupted = true;
                return Err(self.invalid(format!(
                    "download interrupted after {} of {} bytes ({e}); run the pull again to resume",
                    self.hasher.len(),
                    self.fetch.size
                )));
            }
        };
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        if self.hasher.len() + n as u64 > self.fetch.size {
            let _ = std::fs::remove_file(&self.partial);
            self.done = true;
            return Err(self.invalid(format!(
                "longer than the {} bytes its descriptor declares; the download was discarded",
                self.fetch.size
            )));
        }
        self.file.write_all(&buf[..n])?;
        self.hasher.update(&buf[..n]);
        Stats::add(&self.fetch.client.stats.bytes_downloaded, n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_start("bytes */200"), None);
    }
}
