//! `layerfs import`: a root filesystem tarball (plain, gzip or zstd; a file or standard input)
//! becomes a one-layer image, as `docker import` does. The tarball is read twice: once to hash
//! its uncompressed bytes (the layer's diff_id, which the config must name), once by the
//! store's import, which verifies that diff_id again while it extracts.
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::changes::{self, Instruction};
use crate::digest::{Digest, HashingWriter};
use crate::image::compress;
use crate::image::oci::Platform;
use crate::image::plan::{ImagePlan, LayerInput};
use crate::reference::Reference;
use crate::store::Store;
use crate::store::import::{ImportOptions, Imported};
use crate::store::records::now_rfc3339;
use crate::{Error, Result};

pub struct ImportTarball {
    /// The tarball; `-` is standard input (kept in the store's tmp/ while importing).
    pub input: PathBuf,
    pub name: Option<Reference>,
    pub changes: Vec<Instruction>,
    pub message: Option<String>,
    pub platform: Option<Platform>,
    pub progress: bool,
}

/// Imports the tarball; progress lines go to `out`.
pub fn import_tarball(
    store: &Store,
    o: &ImportTarball,
    out: &mut dyn io::Write,
) -> Result<Imported> {
    let staging = store.staging()?;
    let path = if o.input.as_os_str() == "-" {
        let p = staging.path().join("stdin.tar");
        let mut f = File::create(&p).map_err(|e| Error::io("create", &p, e))?;
        io::copy(&mut io::stdin().lock(), &mut f).map_err(|e| Error::io("read", "<stdin>", e))?;
        p
    } else {
        o.input.clone()
    };
    let what = format!("tarball {}", o.input.display());
    let (diff_id, blob_size) = hash_uncompressed(&path, &what)?;
    let platform = o.platform.clone().unwrap_or_else(Platform::host);
    let now = now_rfc3339();
    let mut cfg = serde_json::Map::new();
    changes::apply(&mut cfg, &o.changes);
    let mut history = json!({
        "created": now,
        "created_by": format!("layerfs import {}", o.input.display()),
    });
    if let Some(m) = &o.message {
        history["comment"] = json!(m);
    }
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": now,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [history],
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    let opener_path = path.clone();
    let plan = ImagePlan {
        config: serde_json::to_vec(&config).map_err(|e| Error::Format(e.to_string()))?,
        manifest: None,
        layers: vec![LayerInput {
            what,
            expected: None,
            size_hint: blob_size,
            open: Box::new(move || {
                let f = File::open(&opener_path).map_err(|e| Error::io("open", &opener_path, e))?;
                Ok(Box::new(f) as Box<dyn Read + Send>)
            }),
        }],
        names: o.name.iter().cloned().collect(),
    };
    let iopts = ImportOptions {
        progress: o.progress,
        ..ImportOptions::default()
    };
    store.import(plan, &iopts, out)
}

/// The sha256 of the tarball's uncompressed bytes, and its size on disk.
fn hash_uncompressed(path: &Path, what: &str) -> Result<(Digest, u64)> {
    let f = File::open(path).map_err(|e| {
        Error::io(
            "open",
            path,
            io::Error::new(
                e.kind(),
                format!("{e} (give a tar file, or - for standard input)"),
            ),
        )
    })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        return Err(Error::Format(format!(
            "{what}: empty input, not a tar archive"
        )));
    }
    let (_, mut r) = compress::decoder(f, what)?;
    let mut h = HashingWriter::new(io::sink());
    io::copy(&mut r, &mut h).map_err(|e| Error::Format(format!("{what}: {e}")))?;
    let (_, digest, _) = h.finish();
    Ok((digest, size))
}
