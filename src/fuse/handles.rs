//! Open-file and open-directory tables, apart from the node tree: a read or write touches
//! only this table's read lock and the handle's own fd.
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fuser::BackingId;
use parking_lot::{Mutex, RwLock};

use crate::overlay::node::{Node, NodeId};
use crate::overlay::readdir::DirEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

#[derive(Debug)]
pub struct FileH {
    pub node: Arc<Node>,
    pub fd: OwnedFd,
    /// The fd is the upper copy (else a lower one, which a later copy-up supersedes).
    pub upper: bool,
    /// The upper copy, opened on the first read after another handle copied the file up, so
    /// that this handle sees the new data (as with overlayfs since Linux 4.19).
    pub reopened: Mutex<Option<Arc<OwnedFd>>>,
    /// Kept alive while the kernel passes this handle's I/O straight to the backing file.
    pub backing: Option<Arc<BackingId>>,
}

#[derive(Debug)]
pub struct DirH {
    pub node: Arc<Node>,
    /// The merged listing, taken at opendir and again on a rewind to offset 0;
    /// "." and ".." first. Offsets handed to the kernel are index + 1.
    pub entries: Mutex<Vec<DirEntry>>,
}

#[derive(Debug)]
pub enum Handle {
    File(FileH),
    Dir(DirH),
}

#[derive(Debug, Default)]
pub struct Handles {
    map: RwLock<HashMap<Fh, Arc<Handle>>>,
    next: AtomicU64,
}

impl Handles {
    pub fn insert(&self, h: Handle) -> Fh {
        let fh = Fh(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.map.write().insert(fh, Arc::new(h));
        fh
    }

    pub fn get(&self, fh: Fh) -> Option<Arc<Handle>> {
        self.map.read().get(&fh).cloned()
    }

    /// Any open file handle of node `id` (a scan: only for files that lost every name).
    pub fn find_file_of(&self, id: NodeId) -> Option<Arc<Handle>> {
        self.map
            .read()
            .values()
            .find(|h| matches!(&***h, Handle::File(f) if f.node.id == id))
            .cloned()
    }

    pub fn remove(&self, fh: Fh) -> Option<Arc<Handle>> {
        self.map.write().remove(&fh)
    }
}
