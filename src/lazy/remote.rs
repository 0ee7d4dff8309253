//! Byte ranges of one layer blob from its registry (HTTP `Range` GETs through the registry
//! client, which handles auth, token refresh and redirects), with a bounded retry: a registry
//! that is gone costs a reader at most [`ATTEMPTS`] tries and about 1.5 s of backoff, then EIO;
//! the next read tries again, so the mount recovers when the registry is back.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::digest::Digest;
use crate::registry::client::{Client, Method, Request, read_limited};
use crate::registry::docs::blob_path;
use crate::{Error, Result};

/// Longest wait for a registry's answer (and between reads of it) on a lazy read: with
/// [`ATTEMPTS`] tries a reader waits at most about 4 x 20 s, never forever.
/// `LAYERFS_LAZY_TIMEOUT_MS` changes it.
pub fn response_timeout() -> Duration {
    std::env::var("LAYERFS_LAZY_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(20), Duration::from_millis)
}
/// Tries per range before the read fails.
pub const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Largest range fetched at once.
pub const MAX_RANGE: u64 = 64 * 1024 * 1024;

/// Ranges fetched and bytes received (what `bench lazy` reports).
#[derive(Debug, Default)]
pub struct RangeStats {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub failures: AtomicU64,
}

/// One repository of one registry.
pub struct Remote {
    pub client: Arc<Client>,
    pub repository: String,
    pub scope: String,
    pub stats: RangeStats,
}

impl Remote {
    /// Bytes [start, end) of `blob`, retried with exponential backoff.
    pub fn range(&self, blob: &Digest, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut wait = FIRST_BACKOFF;
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.range_once(blob, start, end) {
                Ok(b) => return Ok(b),
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    log::warn!("range {start}-{end} of {blob} (try {attempt}/{ATTEMPTS}): {e}");
                    last = Some(e);
                }
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        Err(last.unwrap_or_else(|| Error::Registry("no attempt made".into())))
    }

    fn range_once(&self, blob: &Digest, start: u64, end: u64) -> Result<Vec<u8>> {
        let what = format!("{}: bytes {start}-{end} of {blob}", self.client.registry);
        if end <= start || end - start > MAX_RANGE {
            return Err(Error::Format(format!("{what}: bad range")));
        }
        let url = self.client.url(&blob_path(&self.repository, blob))?;
        let req = Request::new(Method::Get, url, &self.scope)
            .header("range", format!("bytes={start}-{}", end - 1));
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.client.send(&req)?;
        let status = resp.status().as_u16();
        let len = end - start;
        let body = match status {
            206 => read_limited(resp, len, &what)?,
            200 => {
                return Err(Error::Registry(format!(
                    "{what}: the registry ignores Range requests (HTTP 200): mount without \
                     --lazy"
                )));
            }
            _ => return Err(self.client.status_error(resp, &what, &self.scope)),
        };
        self.stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if body.len() as u64 != len {
            return Err(Error::Registry(format!(
                "{what}: got {} bytes (cut short)",
                body.len()
            )));
        }
        Ok(body)
    }
}
