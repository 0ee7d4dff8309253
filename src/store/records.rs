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
    /// What the extracted tree held when published (`fsck` compares it with the disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeSummary>,
    /// The blob kept in `layers/HEX/blob` (see `blobs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<super::blobs::BlobRef>,
}

/// Entries below a layer's `diff/` (the root excluded) and the bytes of its regular files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSummary {
    pub entries: u64,
    pub bytes: u64,
}

/// images/HEX.json
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// sha256 of the config bytes (blobs/sha256/HEX).
    pub id: Digest,
    /// Manifest digest when the image came with one (OCI layouts, registries): the first
    /// verified one; a later load with another manifest never replaces it.
    #[serde(default)]
    pub manifest: Option<Digest>,
    /// The verified manifest each reference was loaded with (`save NAME` writes that one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, Digest>,
    /// Chain IDs, bottom layer first.
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    /// The names refs.json gives this image (a copy, to rebuild a lost refs.json).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
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
