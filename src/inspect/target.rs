//! What `diff`, `layers`, `efficiency` and `explore` take as an argument, resolved to a stack of
//! layer directories.
//!
//! | argument                     | stack                                               |
//! |------------------------------|-----------------------------------------------------|
//! | `container:X`, or a container | its image's layers + its writable layer            |
//! | name / ID prefix             |                                                     |
//! | `image:X`, or an image       | the image's layers                                  |
//! | reference / ID prefix        |                                                     |
//! | `IMAGE@N` (N: digits)        | the image's layers 0..=N, counted from the bottom   |
//! |                              | layer 0 (`IMAGE@-1`: no layers at all)              |
//! | `layer:X`, or a chain ID /   | that layer and every layer below it                 |
//! | diff_id prefix               |                                                     |
//! | `docker-archive:PATH`,       | the one image of a docker-archive, OCI layout or    |
//! | `oci-archive:PATH`, `oci:`,  | OCI archive, read without loading it (see           |
//! | `archive:`, or an existing   | `archive.rs`)                                       |
//! | path containing `/`          |                                                     |
//!
//! An unqualified argument is tried as a container, then an image, then a layer. The *parent*
//! of a target (what `diff A` compares A with) is its container's image for a container, and the
//! same stack without its top layer otherwise, so `diff IMAGE` is its top layer's changes.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::diff::LayerRef;
use crate::container::Containers;
use crate::digest::Digest;
use crate::store::{ImageRecord, Staging, Store};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Container,
    Image,
    Layer,
}

/// A resolved argument.
#[derive(Clone, Debug)]
pub struct Target {
    /// How to name it in messages and headings.
    pub label: String,
    pub kind: TargetKind,
    /// Bottom layer first.
    pub layers: Vec<LayerRef>,
    /// The image config (JSON), for images and containers.
    pub config: Option<Value>,
    /// For images (and containers: their image), the image and how many of its layers the
    /// stack holds.
    pub image: Option<ImageRecord>,
    /// Layers extracted from an archive for this target (removed when the last clone drops).
    pub scratch: Option<Arc<Staging>>,
}

impl Target {
    /// What `diff TARGET` compares with.
    pub fn parent(&self) -> Target {
        let mut p = self.clone();
        p.layers.pop();
        p.kind = TargetKind::Layer;
        p.label = match self.kind {
            TargetKind::Container => self
                .image
                .as_ref()
                .map(|i| i.id.short().to_string())
                .unwrap_or_default(),
            _ if p.layers.is_empty() => "(no layers)".into(),
            _ => format!("{}@{}", self.label, p.layers.len() - 1),
        };
        if self.kind == TargetKind::Container {
            p.kind = TargetKind::Image;
        } else {
            p.config = None;
        }
        p
    }

    /// `created_by` of each layer (bottom first) from the config's history (`None` when the
    /// history has no entry for it), for headings.
    pub fn layer_commands(&self) -> Vec<Option<String>> {
        let mut out = Vec::new();
        if let Some(h) = self
            .config
            .as_ref()
            .and_then(|c| c.get("history"))
            .and_then(|h| h.as_array())
        {
            for e in h {
                if e.get("empty_layer").and_then(|v| v.as_bool()) == Some(true) {
                    continue;
                }
                let by = e.get("created_by").and_then(|v| v.as_str());
                out.push(by.map(str::to_string));
            }
        }
        out.resize(self.layers.len(), None);
        out
    }
}

fn image_layers(store: &Store, img: &ImageRecord, n: usize) -> Vec<LayerRef> {
    img.layers
        .iter()
        .take(n)
        .map(|c| LayerRef {
            key: c.to_string(),
            path: store.layer_diff(c),
        })
        .collect()
}

fn config_of(store: &Store, img: &ImageRecord) -> Result<Value> {
    let bytes = store.read_blob(&img.id)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Format(format!(
            "{}: image config is not JSON: {e}",
            store.blob_path(&img.id).display()
        ))
    })
}

fn image_target(store: &Store, img: ImageRecord, label: &str, n: Option<usize>) -> Result<Target> {
    let n = n.unwrap_or(img.layers.len());
    let config = config_of(store, &img)?;
    Ok(Target {
        label: label.to_string(),
        kind: if n == img.layers.len() {
            TargetKind::Image
        } else {
            TargetKind::Layer
        },
        layers: image_layers(store, &img, n),
        config: Some(config),
        image: Some(img),
        scratch: None,
    })
}

fn container_target(store: &Store, s: &str) -> Result<Option<Target>> {
    let cs = Containers::new(store);
    let Some(rec) = cs.find(s)? else {
        return Ok(None);
    };
    let img = store.image(&rec.image)?;
    let mut layers: Vec<LayerRef> = rec
        .layers
        .iter()
        .map(|c| LayerRef {
            key: c.to_string(),
            path: store.layer_diff(c),
        })
        .collect();
    layers.push(LayerRef {
        key: format!("container:{}", rec.id.as_str()),
        path: cs.upper(&rec.id),
    });
    Ok(Some(Target {
        label: s.to_string(),
        kind: TargetKind::Container,
        layers,
        config: Some(config_of(store, &img)?),
        image: Some(img),
        scratch: None,
    }))
}

/// A stored layer by chain ID or diff_id prefix (at least 4 hex digits).
fn layer_target(store: &Store, s: &str) -> Result<Option<Target>> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut hits = Vec::new();
    for chain in store.layer_ids()? {
        if chain.hex().starts_with(&hex) {
            hits.push(chain);
            continue;
        }
        if let Ok(m) = store.layer_meta(&chain)
            && m.diff_id.hex().starts_with(&hex)
        {
            hits.push(chain);
        }
    }
    let chain = match hits.as_slice() {
        [] => return Ok(None),
        [c] => c.clone(),
        _ => {
            return Err(Error::Usage(format!(
                "layer prefix {s} is ambiguous: it matches {} layers; give more digits",
                hits.len()
            )));
        }
    };
    let mut chains: Vec<Digest> = Vec::new();
    let mut cur = Some(chain);
    while let Some(c) = cur {
        cur = store.layer_meta(&c)?.parent;
        chains.push(c);
        if chains.len() > 10_000 {
            return Err(Error::Format(format!(
                "layer {s}: its parent chain does not end (corrupt layer records)"
            )));
        }
    }
    chains.reverse();
    Ok(Some(Target {
        label: s.to_string(),
        kind: TargetKind::Layer,
        layers: chains
            .iter()
            .map(|c| LayerRef {
                key: c.to_string(),
                path: store.layer_diff(c),
            })
            .collect(),
        config: None,
        image: None,
        scratch: None,
    }))
}

/// `IMAGE@N` (N digits, or -1): the image's bottom N+1 layers.
fn split_layer_index(s: &str) -> Option<(&str, i64)> {
    let (img, n) = s.rsplit_once('@')?;
    if n.is_empty() || !(n.bytes().all(|b| b.is_ascii_digit()) || n == "-1") {
        return None;
    }
    Some((img, n.parse().ok()?))
}

/// Archive prefixes (skopeo's transport names) and what follows them.
const ARCHIVE_PREFIXES: &[&str] = &["docker-archive:", "oci-archive:", "oci:", "archive:"];

/// `docker-archive:PATH`, `oci-archive:PATH`, `oci:PATH`, `archive:PATH`, or an existing path
/// written with a `/` (`./img.tar`, `/tmp/layout`).
fn archive_path(s: &str) -> Option<&Path> {
    for p in ARCHIVE_PREFIXES {
        if let Some(rest) = s.strip_prefix(p) {
            return Some(Path::new(rest));
        }
    }
    (s.contains('/') && Path::new(s).exists()).then(|| Path::new(s))
}

/// Resolves one argument (see the module header).
pub fn resolve(store: &Store, s: &str) -> Result<Target> {
    if let Some(p) = archive_path(s) {
        return super::archive::archive_target(store, p, s);
    }
    if let Some((img, n)) = split_layer_index(s) {
        let rec = store.resolve(img)?;
        let count = rec.layers.len() as i64;
        if n >= count {
            return Err(Error::Usage(format!(
                "{s}: image {img} has {count} layers, numbered 0 (bottom) to {}",
                count - 1
            )));
        }
        return image_target(store, rec, s, Some((n + 1) as usize));
    }
    if let Some(c) = s.strip_prefix("container:") {
        return container_target(store, c)?
            .ok_or_else(|| Error::Usage(format!("no such container: {c} (see `layerfs ps -a`)")));
    }
    if let Some(i) = s.strip_prefix("image:") {
        return image_target(store, store.resolve(i)?, i, None);
    }
    if let Some(l) = s.strip_prefix("layer:") {
        return layer_target(store, l)?.ok_or_else(|| {
            Error::Usage(format!(
                "no such layer: {l} (give a chain ID or diff_id prefix, or IMAGE@N)"
            ))
        });
    }
    if let Some(t) = container_target(store, s)? {
        return Ok(t);
    }
    match store.resolve(s) {
        Ok(img) => return image_target(store, img, s, None),
        Err(Error::Usage(_)) => {}
        Err(e) => return Err(e),
    }
    layer_target(store, s)?.ok_or_else(|| {
        Error::Usage(format!(
            "{s}: no such container, image or layer (see `layerfs ps -a`, `layerfs images`; \
             a layer is IMAGE@N or a chain ID / diff_id prefix)"
        ))
    })
}

/// The layer directories of a target, top first (what `LayerStack::open` takes).
pub fn top_first(t: &Target) -> Vec<PathBuf> {
    t.layers.iter().rev().map(|l| l.path.clone()).collect()
}
