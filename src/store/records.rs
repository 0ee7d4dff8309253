//! The store's own JSON records (written by layerfs, so re-serialising them is fine).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// layers/HEX/meta.json
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerMeta {
    pub chain_id: Digest,
    pub diff_id: Digest,
    /// The chain ID of the layer below; `None` for a base layer.
    pub parent: Option<Digest>,
    /// Uncompressed tar size (what docker reports as layer size).
    pub size: u64,
    pub entries: u64,
    /// Compressed blob digests this layer was extracted from (empty for legacy archives).
    #[serde(default)]
    pub sources: Vec<Digest>,
    /// RFC 3339 time of extraction.
    pub created: String,
    /// The blob kept in `layers/HEX/blob` (see `blobs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<super::blobs::BlobRef>,
}

/// images/HEX.json
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// sha256 of the config bytes (blobs/sha256/HEX).
    pub id: Digest,
    /// Manifest digest when the image came with one (OCI layouts, registries).
    #[serde(default)]
    pub manifest: Option<Digest>,
    /// Chain IDs, bottom layer first.
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    /// `registry/repo@sha256:MANIFEST`.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Sum of the layers' uncompressed sizes.
    pub size: u64,
    /// RFC 3339 time of the load.
    pub loaded: String,
}

/// images/refs.json: normalised reference (`docker.io/library/alpine:latest`) -> image ID.
pub type Refs = BTreeMap<String, Digest>;

/// The current time in RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}
