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
    /// The merged listing, taken on the first read and again on a rewind to offset 0 (not at
    /// opendir: the kernel often answers from its own cache and never reads).
    pub entries: Mutex<Option<Listing>>,
}

/// A directory listing in cookie order: "." (cookie 1), ".." (2), then every name under a
/// cookie derived from the name alone. The offset handed to the kernel after an entry is its
/// cookie, and a read from offset X resumes at the first cookie above X: so an offset stays
/// valid across snapshots, while names are created and deleted (a deleted name is skipped, no
/// name is listed twice), and across the kernel's own directory cache being refilled.
#[derive(Debug, Default)]
pub struct Listing {
    pub cookies: Vec<u64>,
    pub entries: Vec<DirEntry>,
}

/// FNV-1a of the name, kept in 3..2^62 (positive as an `off_t`, clear of "." and "..").
pub fn cookie(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 2).max(3)
}

impl Listing {
    /// Orders `dots` ("." and "..") and then `names` by cookie. Two names with one cookie
    /// (about one in 10^14 pairs) get consecutive cookies, so both are listed.
    pub fn new(dots: [DirEntry; 2], names: Vec<DirEntry>) -> Listing {
        use std::os::unix::ffi::OsStrExt;
        let mut keyed: Vec<(u64, DirEntry)> = names
            .into_iter()
            .map(|e| (cookie(e.name.as_bytes()), e))
            .collect();
        keyed.sort_by_key(|(c, _)| *c);
        let [dot, dotdot] = dots;
        let mut l = Listing {
            cookies: vec![1, 2],
            entries: vec![dot, dotdot],
        };
        for (c, e) in keyed {
            let prev = l.cookies.last().copied().unwrap_or(0);
            l.cookies.push(c.max(prev + 1));
            l.entries.push(e);
        }
        l
    }

    /// Where a read from kernel offset `offset` starts.
    pub fn resume(&self, offset: u64) -> usize {
        self.cookies.partition_point(|&c| c <= offset)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::FileType;

    fn e(name: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            kind: FileType::RegularFile,
            ino: 7,
            lower_skip: 0,
        }
    }

    fn listing(names: &[&str]) -> Listing {
        Listing::new([e("."), e("..")], names.iter().map(|n| e(n)).collect())
    }

    fn names(l: &Listing, from: usize) -> Vec<String> {
        l.entries[from..]
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_reader_resuming_in_a_changed_directory_sees_each_name_once() {
        let all: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let old = listing(&refs);
        assert_eq!(old.cookies[..2], [1, 2]);
        assert!(old.cookies.windows(2).all(|w| w[0] < w[1]));
        // Read 80 entries, then names are deleted (some already read, some not) and created.
        let read = names(&old, 0)[..80].to_vec();
        let offset = old.cookies[79];
        let changed: Vec<&str> = refs
            .iter()
            .copied()
            .filter(|n| !["n3", "n150", "n151"].contains(n))
            .chain(["new1", "new2", "new3"])
            .collect();
        let new = listing(&changed);
        let rest = names(&new, new.resume(offset));
        for n in &rest {
            assert!(!read.contains(n), "{n} listed twice");
        }
        // Every name that existed throughout and was not read yet comes in the rest.
        for n in changed.iter().filter(|n| refs.contains(n)) {
            assert!(
                read.contains(&n.to_string()) || rest.contains(&n.to_string()),
                "{n} lost"
            );
        }
        assert!(!rest.iter().any(|n| n == "n150" || n == "n151"));
        assert_eq!(new.resume(0), 0);
        assert_eq!(new.resume(u64::MAX), new.entries.len());
    }
}
