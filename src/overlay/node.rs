//! Nodes: the overlay's inodes, shared by every name that leads to them.
//!
//! A `NodeId` is the FUSE node id and also the `st_ino` the mount reports (fuser couples
//! them). It is derived from the underlying inode so that it is stable across copy-up and
//! across remounts (see `Overlay::node_id_for`); the root is always `NodeId::ROOT`.
//!
//! Lifetime: the kernel holds a lookup count per node; `forget` lowers it and the node leaves
//! the table at zero. A child holds its parent through `Link::parent` (an `Arc`), and the kernel
//! never forgets a directory before its children, so a node's place in every layer can always
//! be reached from the root, one name at a time (`place.rs`).
//!
//! Locks: the table lock is held only to get, insert or remove; a node's `state`,
//! `lower_names` and `dir_fds` locks only to read or update those fields (never while taking
//! another lock, never across I/O).
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use rustix::fs::FileType;

use super::Which;
use super::layer::LowerIdx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    pub const ROOT: NodeId = NodeId(1);
}

/// One name of a node: its parent directory and the name in it.
#[derive(Debug, Clone)]
pub struct Link {
    pub parent: Arc<Node>,
    pub name: OsString,
}

/// Where a node lives in the stack.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// Known names; a directory has exactly one, the root none. The first is used for paths.
    pub links: Vec<Link>,
    /// Present in the upper layer (created there, or copied up).
    pub upper: bool,
    /// Directories: the lower directories merged under this one, top first (empty when opaque
    /// or upper-only). Other files: the topmost lower layer holding the file, if any.
    pub lowers: Vec<LowerIdx>,
    /// The upper inode number, registered in `NodeTable::by_upper` while the node lives.
    pub upper_ino: Option<u64>,
    /// Directories renamed with `redirect_dir`: where their lower copies are (`redirect.rs`).
    pub redirect: Option<Arc<super::redirect::Redirect>>,
    /// Directories: the lower copies that a redirect (in upper or in a lower layer) put
    /// elsewhere than at this node's name in its parent's copy of that layer.
    pub lower_at: Arc<Vec<(LowerIdx, LowerAt)>>,
}

/// Where a directory's copy in one lower layer is, when a redirect moved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LowerAt {
    /// At this name in the parent's copy in that layer (a relative redirect).
    Name(OsString),
    /// At this path from the layer's root (an absolute redirect).
    Path(Vec<OsString>),
}

/// What one lower layer's copy of a directory holds, read once: lower layers never change,
/// so a lookup that misses in it needs no syscall.
#[derive(Debug, Default)]
pub struct LowerNames {
    pub names: HashSet<OsString>,
    /// Names hidden below this layer: char 0/0 entries and the targets of `.wh.NAME` files.
    pub whiteouts: HashSet<OsString>,
}

/// Directories with more entries than this in one layer are probed name by name instead.
pub const MAX_CACHED_NAMES: usize = 200_000;

#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    /// The `st_ino` shown for this node. Equal to `id` except for the names of a lower hard
    /// link, which are separate nodes (copy-up separates them) showing one inode number.
    ino: AtomicU64,
    pub kind: FileType,
    lookups: AtomicU64,
    state: RwLock<NodeState>,
    /// Serialises copy-up of this node; the loser of a race finds `upper` set and succeeds.
    pub copyup_lock: Mutex<()>,
    /// Directories: held while this directory's upper copy gains or loses an entry, by our
    /// directory operations and by a child's copy-up. The kernel serialises directory
    /// operations on one directory, but a copy-up (from an open or setattr of the child) is
    /// none of them: without this lock, its "keep the parent's times" step could undo a
    /// concurrent create's mtime update.
    pub dir_lock: Mutex<()>,
    /// Directories: the names of each merged lower layer (`None`: too many to keep).
    lower_names: Mutex<HashMap<LowerIdx, Option<Arc<LowerNames>>>>,
    /// Directories: a directory fd per layer it was reached in (see `place.rs`).
    dir_fds: Mutex<Vec<(Which, Arc<OwnedFd>)>>,
}

/// Directory fds cached by all nodes, and how many may be (half the fd limit, set by
/// `Overlay::new`); beyond it, fds are opened per operation.
static CACHED_FDS: AtomicUsize = AtomicUsize::new(0);
static FD_BUDGET: AtomicUsize = AtomicUsize::new(512);

pub fn set_fd_budget(n: usize) {
    FD_BUDGET.store(n, Ordering::Relaxed);
}

impl Node {
    pub fn new(id: NodeId, ino: u64, kind: FileType, state: NodeState) -> Node {
        Node {
            id,
            ino: AtomicU64::new(ino),
            kind,
            lookups: AtomicU64::new(0),
            state: RwLock::new(state),
            copyup_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            lower_names: Mutex::new(HashMap::new()),
            dir_fds: Mutex::new(Vec::new()),
        }
    }

    /// The cached directory fd of this directory in layer `w`.
    pub fn dir_fd(&self, w: Which) -> Option<Arc<OwnedFd>> {
        self.dir_fds
            .lock()
            .iter()
            .find(|(x, _)| *x == w)
            .map(|(_, fd)| fd.clone())
    }

    /// Keeps `fd` as this directory's fd in layer `w` (replacing an older one), unless the
    /// budget is spent. Returns it shared either way.
    pub fn keep_dir_fd(&self, w: Which, fd: Arc<OwnedFd>) -> Arc<OwnedFd> {
        let mut v = self.dir_fds.lock();
        if let Some(slot) = v.iter_mut().find(|(x, _)| *x == w) {
            slot.1 = fd.clone();
        } else if CACHED_FDS.load(Ordering::Relaxed) < FD_BUDGET.load(Ordering::Relaxed) {
            CACHED_FDS.fetch_add(1, Ordering::Relaxed);
            v.push((w, fd.clone()));
        }
        fd
    }

    /// Forgets every cached fd (the directory was removed or replaced through the mount).
    pub fn drop_dir_fds(&self) {
        let mut v = self.dir_fds.lock();
        CACHED_FDS.fetch_sub(v.len(), Ordering::Relaxed);
        v.clear();
    }

    /// The cached names of lower layer `li` here: `None` if not read yet, `Some(None)` if the
    /// directory is too large to keep.
    pub fn cached_lower_names(&self, li: LowerIdx) -> Option<Option<Arc<LowerNames>>> {
        self.lower_names.lock().get(&li).cloned()
    }

    pub fn store_lower_names(&self, li: LowerIdx, names: Option<Arc<LowerNames>>) {
        self.lower_names.lock().entry(li).or_insert(names);
    }

    /// The `st_ino` shown for this node.
    pub fn ino(&self) -> u64 {
        self.ino.load(Ordering::Relaxed)
    }

    /// After copy-up, a name of a lower hard link shows its upper inode (as overlayfs does:
    /// the lower number is shared with names that were not copied up).
    pub fn set_ino(&self, ino: u64) {
        self.ino.store(ino, Ordering::Relaxed);
    }

    /// A node for one name of a lower hard link (see `lookup::per_name_id`).
    pub fn is_per_name(&self) -> bool {
        self.id.0 & (1 << 63) != 0
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn state(&self) -> NodeState {
        self.state.read().clone()
    }

    pub fn is_upper(&self) -> bool {
        self.state.read().upper
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        f(&mut self.state.write())
    }

    /// Records `parent/name` as a name of this node (first position: the freshest name).
    pub fn add_link(&self, parent: &Arc<Node>, name: &std::ffi::OsStr) {
        let mut st = self.state.write();
        if let Some(i) = st
            .links
            .iter()
            .position(|l| l.parent.id == parent.id && l.name == name)
        {
            let l = st.links.remove(i);
            st.links.insert(0, l);
        } else {
            st.links.insert(
                0,
                Link {
                    parent: parent.clone(),
                    name: name.to_owned(),
                },
            );
        }
        if self.is_dir() {
            st.links.truncate(1);
        }
    }

    pub fn remove_link(&self, parent: NodeId, name: &std::ffi::OsStr) {
        self.state
            .write()
            .links
            .retain(|l| !(l.parent.id == parent && l.name == name));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        CACHED_FDS.fetch_sub(self.dir_fds.get_mut().len(), Ordering::Relaxed);
    }
}

/// The node table. Lookup counts change only under its lock, so a node can't be removed while
/// a concurrent lookup is taking a reference to it.
#[derive(Debug, Default)]
pub struct NodeTable {
    map: RwLock<HashMap<NodeId, Arc<Node>>>,
    /// Upper inode number -> node, so that every name of an upper hard link finds one node.
    by_upper: RwLock<HashMap<u64, NodeId>>,
}

impl NodeTable {
    pub fn get(&self, id: NodeId) -> Option<Arc<Node>> {
        self.map.read().get(&id).cloned()
    }

    pub fn insert_root(&self, node: Node) -> Arc<Node> {
        let n = Arc::new(node);
        n.lookups.store(1, Ordering::Relaxed);
        self.map.write().insert(n.id, n.clone());
        n
    }

    pub fn upper_alias(&self, ino: u64) -> Option<NodeId> {
        self.by_upper.read().get(&ino).copied()
    }

    /// Registers the upper inode of `node` (after creation, copy-up or lookup in upper).
    pub fn set_upper_alias(&self, node: &Node, ino: u64) {
        node.update(|s| s.upper_ino = Some(ino));
        self.by_upper.write().insert(ino, node.id);
    }

    /// Returns the node `id` with one more lookup, creating it (or replacing a node of another
    /// type whose inode number the filesystem reused) with `make`.
    pub fn lookup_or_insert(
        &self,
        id: NodeId,
        ino: u64,
        kind: FileType,
        make: impl FnOnce() -> NodeState,
    ) -> Arc<Node> {
        {
            let map = self.map.read();
            if let Some(n) = map.get(&id)
                && n.kind == kind
            {
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
        }
        let mut map = self.map.write();
        if let Some(n) = map.get(&id) {
            if n.kind == kind {
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
            // The kernel will forget the old inode under the same id: carry its count over.
            let carried = n.lookups.load(Ordering::Relaxed);
            let fresh = Arc::new(Node::new(id, ino, kind, make()));
            fresh.lookups.store(carried + 1, Ordering::Relaxed);
            map.insert(id, fresh.clone());
            return fresh;
        }
        let fresh = Arc::new(Node::new(id, ino, kind, make()));
        fresh.lookups.store(1, Ordering::Relaxed);
        map.insert(id, fresh.clone());
        fresh
    }

    pub fn forget(&self, id: NodeId, n: u64) {
        if id == NodeId::ROOT {
            return;
        }
        let mut map = self.map.write();
        let Some(node) = map.get(&id) else { return };
        let left = node.lookups.load(Ordering::Relaxed).saturating_sub(n);
        node.lookups.store(left, Ordering::Relaxed);
        if left == 0 {
            let upper_ino = node.state.read().upper_ino;
            map.remove(&id);
            drop(map);
            if let Some(ino) = upper_ino {
                let mut by = self.by_upper.write();
                if by.get(&ino) == Some(&id) {
                    by.remove(&ino);
                }
            }
        }
    }
}
