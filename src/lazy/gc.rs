//! Garbage collection of the chunk cache.
//!
//! A lazy daemon pins the pieces its layers list in `ROOT/lazy/PID.pins` (one digest hex per
//! line) for as long as it lives. `layerfs prune` removes every cached piece no live daemon pins
//! (pieces are re-fetchable; layers that were completed by the background pull live in the
//! store as extracted layers anyway). The cache also has a size limit
//! (`LAYERFS_CHUNK_CACHE_MAX`, bytes, default 8 GiB): when a new piece takes it over the limit,
//! the least recently written unpinned pieces go until it is at 90%.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::Digest;
use crate::{Error, Result};

pub const LIMIT_ENV: &str = "LAYERFS_CHUNK_CACHE_MAX";
const DEFAULT_LIMIT: u64 = 8 << 30;

pub fn limit() -> u64 {
    std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
}

fn pins_dir(root: &Path) -> PathBuf {
    root.join("lazy")
}

/// Records this process's pins; removed by [`unpin`] (or ignored once the process is gone).
pub fn pin<'a>(root: &Path, digests: impl Iterator<Item = &'a Digest>) -> Result<PathBuf> {
    let dir = pins_dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let p = dir.join(format!("{}.pins", std::process::id()));
    let mut text = String::new();
    for d in digests {
        text.push_str(d.hex());
        text.push('\n');
    }
    std::fs::write(&p, text).map_err(|e| Error::io("write", &p, e))?;
    Ok(p)
}

pub fn unpin(p: &Path) {
    let _ = std::fs::remove_file(p);
}

/// Hex digests pinned by live daemons.
fn pinned(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(pins_dir(root)) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_suffix(".pins")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            out.extend(text.lines().map(str::to_owned));
        }
    }
    out
}

/// Cached pieces: (hex, size, mtime), oldest first.
fn cached(root: &Path) -> Vec<(String, u64, SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("chunks/sha256"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    let name = e.file_name().to_str()?.to_owned();
                    Some((name, m.len(), m.modified().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|(_, _, t)| *t);
    v
}

/// Removes unpinned pieces, oldest first, until at most `keep` bytes remain (0: all
/// unpinned). Returns (pieces removed, bytes freed).
pub fn collect(root: &Path, keep: u64) -> (u64, u64) {
    let pins = pinned(root);
    let all = cached(root);
    let mut total: u64 = all.iter().map(|(_, s, _)| s).sum();
    let (mut n, mut freed) = (0, 0);
    for (hex, size, _) in all {
        if total <= keep {
            break;
        }
        if pins.contains(&hex) {
            continue;
        }
        if std::fs::remove_file(root.join("chunks/sha256").join(&hex)).is_ok() {
            n += 1;
            freed += size;
            total -= size;
        }
    }
    (n, freed)
}

/// After a piece was added: shrink the cache to 90% of the limit when it is over it.
pub fn enforce_limit(root: &Path, total: u64) -> Option<u64> {
    let limit = limit();
    if total <= limit {
        return None;
    }
    let (_, freed) = collect(root, limit / 10 * 9);
    Some(total.saturating_sub(freed))
}
