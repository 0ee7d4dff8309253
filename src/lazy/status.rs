//! What `layerfs images` shows of live lazy mounts: each daemon writes `ROOT/lazy/PID.json`
//! (reference, mount point, and per layer its chain ID and pieces with their sizes) and removes
//! it when it ends; `images` reads these and counts what is local: the pieces in the chunk cache,
//! or all of a layer once the background pull has stored it.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::oci::chain_ids;
use crate::store::Store;
use crate::{Error, Result};

#[derive(Serialize, Deserialize)]
pub struct LayerStatus {
    pub blob: Digest,
    pub chain: Digest,
    /// (piece digest hex, bytes)
    pub pieces: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
pub struct MountStatus {
    pub reference: String,
    pub mountpoint: PathBuf,
    pub layers: Vec<LayerStatus>,
    /// The background pull is done and every layer reads its extracted files.
    #[serde(default)]
    pub prefetched: bool,
}

fn status_path(root: &Path) -> PathBuf {
    root.join("lazy")
        .join(format!("{}.json", std::process::id()))
}

/// Writes this daemon's status file; returns its path.
pub fn write(
    root: &Path,
    reference: &str,
    mountpoint: &Path,
    diff_ids: &[Digest],
    layers: &[super::mount::LazyLayer],
) -> Result<PathBuf> {
    let chains = chain_ids(diff_ids);
    let st = MountStatus {
        reference: reference.to_owned(),
        mountpoint: mountpoint.to_owned(),
        layers: layers
            .iter()
            .zip(chains)
            .map(|(l, chain)| LayerStatus {
                blob: l.source.blob.clone(),
                chain,
                pieces: l
                    .tree
                    .chunks()
                    .map(|c| (c.digest.hex().to_owned(), c.size))
                    .collect(),
            })
            .collect(),
        prefetched: false,
    };
    let p = status_path(root);
    let bytes = serde_json::to_vec(&st).map_err(|e| Error::Format(format!("lazy status: {e}")))?;
    std::fs::write(&p, bytes).map_err(|e| Error::io("write", &p, e))?;
    Ok(p)
}

/// Notes in this daemon's status file that reads are local now.
pub fn mark_prefetched(root: &Path) {
    let p = status_path(root);
    let Some(mut st) = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<MountStatus>(&b).ok())
    else {
        return;
    };
    st.prefetched = true;
    let tmp = p.with_extension("tmp");
    if let Ok(b) = serde_json::to_vec(&st)
        && std::fs::write(&tmp, b).is_ok()
    {
        let _ = std::fs::rename(&tmp, &p);
    }
}

/// Statuses of live lazy daemons (files of dead ones are removed).
pub fn live(root: &Path) -> Vec<MountStatus> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root.join("lazy")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        if let Some(st) = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            out.push(st);
        }
    }
    out
}

/// Rows for `layerfs images`: mount point, reference, layer blob, local share.
pub fn rows(store: &Store) -> Vec<Vec<String>> {
    let cache = store.root().join("chunks/sha256");
    let mut rows = Vec::new();
    for m in live(store.root()) {
        for l in &m.layers {
            let total: u64 = l.pieces.iter().map(|(_, s)| s).sum();
            let local = if m.prefetched {
                "100% (extracted, reads local)".to_string()
            } else if store.has_layer(&l.chain) {
                "100% (extracted)".to_string()
            } else {
                let have: u64 = l
                    .pieces
                    .iter()
                    .filter(|(h, _)| cache.join(h).is_file())
                    .map(|(_, s)| s)
                    .sum();
                format!(
                    "{:.0}% ({} of {})",
                    have as f64 * 100.0 / total.max(1) as f64,
                    crate::human::human_size(have),
                    crate::human::human_size(total)
                )
            };
            rows.push(vec![
                m.mountpoint.display().to_string(),
                m.reference.clone(),
                l.blob.short().to_string(),
                local,
            ]);
        }
    }
    rows
}
