//! Checking a manifest against its blobs for the layers a load does not extract (the store has
//! them already). Without this a second load of the same image with a lying manifest (a layer's
//! media type changed to zstd, another digest) would be recorded and handed out by `save`.
//!
//! A reused layer's descriptor is accepted when it names the blob kept with the layer (same
//! digest and size) whose leading bytes agree with the media type; otherwise the blob is read
//! from the source once, hashed, decompressed and its diff_id compared, like an extraction
//! that writes nothing. A source that cannot hand the blob out again (a registry pull skips
//! layers it has) leaves that descriptor unverified; the manifest was fetched by digest, and
//! `save`/`push` reuse a manifest only when it names the kept blobs with their compression.
use std::io::Read;
use std::sync::{Arc, Mutex};

use super::pipeline::{decode_in_thread, verdict};
use super::{Digest, Store};
use crate::image::compress::{self, check_media_prefix};
use crate::image::oci::Descriptor;
use crate::{Error, Result};

/// Reopens a layer's blob from its source.
pub type Reopen<'a> = &'a (dyn Fn() -> Result<Box<dyn Read + Send>> + Send + Sync);

/// One manifest layer that the store already holds.
pub struct ReusedLayer<'a> {
    pub desc: &'a Descriptor,
    pub diff_id: &'a Digest,
    pub chain: &'a Digest,
    /// How errors name it: `image abc: layer 2 (blob sha256:…)`.
    pub what: String,
}

/// Whether a manifest could be checked against every blob it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    Verified,
    /// The source could not give the blob again and the store has other bytes for the layer.
    Unverifiable,
}

impl Store {
    /// Checks a reused layer's descriptor; an error means the manifest lies.
    pub fn verify_reused_layer(&self, l: &ReusedLayer<'_>, reopen: Reopen<'_>) -> Result<Checked> {
        if let Some(kept) = self.layer_blob(l.chain)?
            && kept.blob.digest == l.desc.digest
            && kept.blob.size == l.desc.size
        {
            compress::check_media_type(&kept.path, &l.desc.media_type, &l.what)?;
            return Ok(Checked::Verified);
        }
        let raw = match reopen() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{}: not verified against the stored layer ({e})", l.what);
                return Ok(Checked::Unverifiable);
            }
        };
        let prefix = Arc::new(Mutex::new(Vec::new()));
        let tap = Box::new(PrefixTap {
            inner: raw,
            prefix: Arc::clone(&prefix),
        });
        let limit = l.desc.size.saturating_add(1);
        let (drained, mut hashed) = decode_in_thread(tap, limit, &l.what, |r| {
            std::io::copy(r, &mut std::io::sink())
                .map_err(|e| Error::Format(format!("{}: {e}", l.what)))
        });
        let expected = (l.desc.digest.clone(), l.desc.size);
        verdict(&l.what, Some(&expected), &mut hashed, drained.err())?;
        match &hashed.diff {
            Some(d) if d == l.diff_id => {}
            got => {
                return Err(Error::DigestMismatch {
                    what: format!("{}: uncompressed content (diff_id)", l.what),
                    expected: l.diff_id.to_string(),
                    actual: got.as_ref().map_or("none".into(), |d| d.to_string()),
                });
            }
        }
        let prefix = prefix.lock().map(|p| p.clone()).unwrap_or_default();
        check_media_prefix(&prefix, &l.desc.media_type, &l.what)?;
        Ok(Checked::Verified)
    }
}

/// Keeps the first tar block of what is read through it (for the compression check).
struct PrefixTap {
    inner: Box<dyn Read + Send>,
    prefix: Arc<Mutex<Vec<u8>>>,
}

impl Read for PrefixTap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut p) = self.prefix.lock()
            && p.len() < 512
        {
            let take = (512 - p.len()).min(n);
            p.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}
