//! An image read straight from a docker-archive, an OCI layout directory or an OCI archive,
//! without loading it into the store: the source is parsed by `image::load` like a load, and
//! each layer the store does not already hold (by chain ID) is extracted into a private
//! staging directory (removed when the target is dropped), its diff_id checked against the
//! config while it streams. Layers the store holds are read from the store.
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use sha2::Digest as _;

use super::diff::LayerRef;
use super::target::{Target, TargetKind};
use crate::digest::Digest;
use crate::image::compress;
use crate::image::load::{LoadOptions, plans};
use crate::image::oci::{ImageConfig, chain_ids};
use crate::image::source::Source;
use crate::image::unpack::{Limits, open_layer_root, unpack_layer};
use crate::image::write::copy_dir_attrs_from_lower;
use crate::store::Store;
use crate::{Error, Result};

/// Hashes what passes through (the uncompressed layer: its diff_id).
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads the one image in `path` (a directory or an archive) as a target.
pub fn archive_target(store: &Store, path: &Path, label: &str) -> Result<Target> {
    let scratch = Arc::new(store.staging()?);
    let shown = path.display().to_string();
    let src = Arc::new(Source::open(path, scratch.path())?);
    let mut found = plans(&src, &LoadOptions::default(), &mut |w| {
        log::warn!("{shown}: {w}")
    })?;
    if found.len() != 1 {
        return Err(Error::Usage(format!(
            "{shown} holds {} images; inspect reads archives of one image (load it, or \
             save the one you want)",
            found.len()
        )));
    }
    let plan = found.remove(0);
    let cfg = ImageConfig::parse(&plan.config, &format!("{shown}: config"))?;
    let diff_ids = &cfg.rootfs.diff_ids;
    if diff_ids.len() != plan.layers.len() {
        return Err(Error::Format(format!(
            "{shown}: the config lists {} layers, the manifest {}",
            diff_ids.len(),
            plan.layers.len()
        )));
    }
    let chains = chain_ids(diff_ids);
    let mut layers: Vec<LayerRef> = Vec::new();
    let mut extracted: Vec<OwnedFd> = Vec::new();
    for (i, input) in plan.layers.iter().enumerate() {
        let chain = &chains[i];
        if store.has_layer(chain) {
            layers.push(LayerRef {
                key: chain.to_string(),
                path: store.layer_diff(chain),
            });
            extracted.push(open_layer_dir(&store.layer_diff(chain))?);
            continue;
        }
        let what = format!("{shown}: layer {} ({})", i + 1, input.what);
        let dir = scratch.path().join(chain.hex()).join("diff");
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir))
            .map_err(|e| Error::io("create", &dir, e))?;
        let fd = open_layer_root(&dir)?;
        let (_, dec) = compress::decoder((input.open)()?, &what)?;
        let mut h = Hashing {
            inner: dec,
            hash: sha2::Sha256::new(),
        };
        let up = unpack_layer(&mut h, fd, &Limits::from_env(), &what)?;
        std::io::copy(&mut h, &mut std::io::sink())
            .map_err(|e| Error::Format(format!("{what}: reading: {e}")))?;
        let got = Digest::parse(&format!("sha256:{}", hex::encode(h.hash.finalize())))?;
        if got != diff_ids[i] {
            return Err(Error::DigestMismatch {
                what: format!("{what}: uncompressed content (diff_id)"),
                expected: diff_ids[i].to_string(),
                actual: got.to_string(),
            });
        }
        let root = open_layer_dir(&dir)?;
        let lowers: Vec<_> = extracted.iter().rev().map(|f| f.as_fd()).collect();
        copy_dir_attrs_from_lower(root.as_fd(), &up.implicit_dirs, &lowers)
            .map_err(|e| Error::Format(format!("{what}: {e}")))?;
        extracted.push(root);
        layers.push(LayerRef {
            key: chain.to_string(),
            path: dir,
        });
    }
    let config: serde_json::Value = serde_json::from_slice(&plan.config)
        .map_err(|e| Error::Format(format!("{shown}: config: {e}")))?;
    Ok(Target {
        label: label.to_string(),
        kind: TargetKind::Image,
        layers,
        config: Some(config),
        image: None,
        scratch: Some(scratch),
    })
}

fn open_layer_dir(p: &Path) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(p, flags, Mode::empty()).map_err(|e| Error::io("open", p, e.into()))
}
