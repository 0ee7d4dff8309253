//! The prefetch priority list (like eStargz's landmark, but learned): a lazy mount records the
//! pieces of files in the order they were first read and keeps the list per layer blob in
//! `ROOT/lazy/priority/HEX` when it ends. The next lazy mount of that layer fetches those
//! pieces first in the background, before it pulls the rest.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::image::toc::TocChunk;

/// Pieces in first-read order.
#[derive(Debug, Default)]
pub struct ReadLog {
    seen: HashSet<usize>,
    pub order: Vec<Digest>,
}

impl ReadLog {
    /// Notes the first read of node `idx` with these pieces.
    pub fn record(&mut self, idx: usize, chunks: &[TocChunk]) {
        if self.seen.insert(idx) {
            self.order.extend(chunks.iter().map(|c| c.digest.clone()));
        }
    }
}

fn path(root: &Path, blob: &Digest) -> PathBuf {
    root.join("lazy/priority").join(blob.hex())
}

/// Saves a layer's list (best effort: it only orders a prefetch).
pub fn save(root: &Path, blob: &Digest, order: &[Digest]) {
    if order.is_empty() {
        return;
    }
    let p = path(root, blob);
    let text: String = order.iter().map(|d| format!("{}\n", d.hex())).collect();
    let tmp = p.with_extension("tmp");
    let ok = p
        .parent()
        .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        && std::fs::write(&tmp, text).is_ok()
        && std::fs::rename(&tmp, &p).is_ok();
    if !ok {
        log::warn!("could not save the prefetch list {}", p.display());
    }
}

/// A layer's saved list (empty when there is none).
pub fn load(root: &Path, blob: &Digest) -> Vec<Digest> {
    std::fs::read_to_string(path(root, blob))
        .map(|t| {
            t.lines()
                .filter_map(|l| Digest::parse(&format!("sha256:{l}")).ok())
                .collect()
        })
        .unwrap_or_default()
}
