//! Reading, hashing and decompressing a layer blob on one thread while the caller parses and
//! writes the tar on its own: the two halves of a load take about the same CPU, so a single
//! large layer uses two cores.
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::digest::{Digest, HashingReader};
use crate::image::compress;
use crate::{Error, Result};

const CHUNK: usize = 256 * 1024;
const DEPTH: usize = 16;

/// What the reading side saw.
pub struct Hashed {
    /// Digest and length of the blob bytes read (all of them, up to the caller's limit).
    pub blob: (Digest, u64),
    /// Digest of the decompressed stream, when it decoded to the end.
    pub diff: Option<Digest>,
    /// Compressed bytes left after the decoder reached its end.
    pub trailing: u64,
    /// Why reading or decompressing failed.
    pub error: Option<Error>,
}

/// The decompressed stream, as the channel delivers it.
struct ChanReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(v)) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `consume` over the decompressed content of `raw` (at most `limit` raw bytes read)
/// while a second thread reads, hashes and decompresses.
pub fn decode_in_thread<T>(
    raw: Box<dyn Read + Send + '_>,
    limit: u64,
    what: &str,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> (T, Hashed) {
    let (tx, rx) = sync_channel(DEPTH);
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(raw, limit, what, tx));
        let mut reader = ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let out = consume(&mut reader);
        // Unblock a producer still sending after the consumer stopped early.
        drop(reader);
        let hashed = producer.join().unwrap_or_else(|_| Hashed {
            blob: (Digest::of(b""), 0),
            diff: None,
            trailing: 0,
            error: Some(Error::Format(format!("{what}: reader thread panicked"))),
        });
        (out, hashed)
    })
}

fn produce(
    raw: Box<dyn Read + Send + '_>,
    limit: u64,
    what: &str,
    tx: SyncSender<io::Result<Vec<u8>>>,
) -> Hashed {
    let mut blob = HashingReader::new(raw.take(limit));
    let mut error = None;
    let mut diff = None;
    match compress::decoder(&mut blob, what) {
        Err(e) => {
            let _ = tx.send(Err(io::Error::other(e.to_string())));
            error = Some(e);
        }
        Ok((_, dec)) => {
            let mut hashing = HashingReader::new(dec);
            match pump(&mut hashing, &tx) {
                Ok(true) => diff = Some(hashing.finish().1),
                Ok(false) => {} // the consumer stopped: it reports why
                Err(e) => {
                    let msg = format!("{what}: decompressing: {e}");
                    let _ = tx.send(Err(e));
                    error = Some(Error::Format(msg));
                }
            }
        }
    }
    drop(tx);
    // Read what is left so the blob digest covers every byte (and so trailing data is seen).
    let trailing = compress::discard(&mut blob).unwrap_or(0);
    let (_, d, n) = blob.finish();
    Hashed {
        blob: (d, n),
        diff,
        trailing,
        error,
    }
}

/// Sends the stream in chunks; Ok(true) at its end, Ok(false) when the receiver is gone.
fn pump<R: Read>(r: &mut R, tx: &SyncSender<io::Result<Vec<u8>>>) -> io::Result<bool> {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(true);
        }
        buf.truncate(filled);
        if tx.send(Ok(buf)).is_err() {
            return Ok(false);
        }
    }
}

/// Chooses the error to report for a failed or suspicious layer: a wrong blob digest first
/// (the root cause of most stream errors), then the reading side's, then the consumer's.
pub fn verdict(
    what: &str,
    expected: Option<&(Digest, u64)>,
    hashed: &mut Hashed,
    consumer: Option<Error>,
) -> Result<()> {
    if let Some((d, n)) = expected {
        let (got, len) = &hashed.blob;
        if got != d && len <= n {
            return Err(Error::DigestMismatch {
                what: what.into(),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
        if len != n {
            let shown = if len > n {
                format!("more than {n}")
            } else {
                len.to_string()
            };
            return Err(Error::Format(format!(
                "{what}: blob is {shown} bytes, the manifest says {n} (truncated or trailing data)"
            )));
        }
    }
    if let Some(e) = hashed.error.take() {
        return Err(e);
    }
    if let Some(e) = consumer {
        return Err(e);
    }
    if hashed.trailing > 0 {
        return Err(Error::Format(format!(
            "{what}: {} bytes of trailing data after the compressed stream",
            hashed.trailing
        )));
    }
    Ok(())
}
