//! What an image source hands to the store's import: the config and manifest bytes, the layer
//! blobs as openers (from an archive, a layout directory, a registry), and the names to give.
use std::io::Read;

use crate::Result;
use crate::digest::Digest;
use crate::reference::Reference;

/// Opens a layer blob for streaming (from an archive, a layout directory, a registry...).
pub type Opener = Box<dyn Fn() -> Result<Box<dyn Read + Send>> + Send + Sync>;

/// One layer to import, in the image's order.
pub struct LayerInput {
    /// How errors name it: `blob sha256:…` or `member abc/layer.tar of x.tar`.
    pub what: String,
    /// Digest and size of the blob as the manifest declares them (none in legacy archives).
    pub expected: Option<(Digest, u64)>,
    /// Bytes to expect, for progress bars.
    pub size_hint: u64,
    pub open: Opener,
}

/// Everything needed to import one image.
pub struct ImagePlan {
    /// Config bytes exactly as found (their sha256 is the image ID).
    pub config: Vec<u8>,
    /// Manifest bytes when the source has one.
    pub manifest: Option<Vec<u8>>,
    pub layers: Vec<LayerInput>,
    pub names: Vec<Reference>,
}
