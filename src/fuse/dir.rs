//! Directory listings: READDIR and READDIRPLUS from a snapshot taken at opendir (and again on a
//! rewind to offset 0), "." and ".." first; offsets are index + 1.
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileHandle, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::handles::{DirH, Handle};
use super::{Inner, attr, errno};
use crate::overlay::node::Node;
use crate::overlay::readdir::DirEntry;

impl Inner {
    pub(super) fn list_with_dots(&self, node: &Arc<Node>) -> Result<Vec<DirEntry>, crate::Error> {
        let parent = node
            .state()
            .links
            .first()
            .map(|l| l.parent.ino())
            .unwrap_or(node.ino());
        let dot = |name: &str, ino: u64| DirEntry {
            name: name.into(),
            kind: rustix::fs::FileType::Directory,
            ino,
            lower_skip: 0,
        };
        let mut v = vec![dot(".", node.ino()), dot("..", parent)];
        v.extend(self.ov.list_dir(node)?);
        Ok(v)
    }

    /// Runs `f` on the directory handle `fh` and its listing from `offset` on.
    fn with_listing(
        &self,
        fh: FileHandle,
        offset: u64,
        f: impl FnOnce(&DirH, &[DirEntry]),
    ) -> Result<(), Errno> {
        let h = self.file(fh)?;
        let Handle::Dir(d) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let mut entries = d.entries.lock();
        if offset == 0 {
            *entries = self.list_with_dots(&d.node).map_err(errno)?;
        }
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        f(d, &entries[from..]);
        Ok(())
    }

    pub(super) fn list(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = self.with_listing(fh, offset, |_, entries| {
            for (i, e) in entries.iter().enumerate() {
                let off = offset + i as u64 + 1;
                if reply.add(INodeNo(e.ino), off, attr::kind(e.kind), &e.name) {
                    break;
                }
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn list_plus(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let r = self.with_listing(fh, offset, |d, entries| {
            for (i, e) in entries.iter().enumerate() {
                if self.add_plus(&mut reply, d, e, offset + i as u64 + 1) {
                    break;
                }
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Adds one READDIRPLUS entry; true when the reply is full.
    fn add_plus(&self, reply: &mut ReplyDirectoryPlus, d: &DirH, e: &DirEntry, off: u64) -> bool {
        if e.name == "." || e.name == ".." {
            // The kernel takes no entry for these; only the name and d_ino matter.
            let mut a = attr::to_fuse(&crate::sys::zeroed_stat());
            a.ino = INodeNo(e.ino);
            a.kind = attr::kind(e.kind);
            return reply.add(a.ino, off, &e.name, &Duration::ZERO, &a, Generation(0));
        }
        match self.ov.lookup_hinted(&d.node, &e.name, e.lower_skip) {
            Ok(ent) if ent.node.ino() != ent.node.id.0 => {
                // fuser sends the node id as d_ino. For a name showing another inode number
                // (a lower hard link), send that number with no caching and without our lookup
                // reference: the kernel looks the name up again on first use and gets the real
                // node, and forgets the placeholder (an id no node has).
                self.ov.forget(ent.node.id, 1);
                let a = attr::to_fuse(&ent.attr);
                reply.add(a.ino, off, &e.name, &Duration::ZERO, &a, Generation(0))
            }
            Ok(ent) => {
                let a = attr::to_fuse(&ent.attr);
                let full = reply.add(a.ino, off, &e.name, &self.ttl, &a, Generation(0));
                if full {
                    // Not sent: the kernel won't count this lookup.
                    self.ov.forget(ent.node.id, 1);
                }
                full
            }
            // Gone since the listing was taken: leave it out.
            Err(_) => false,
        }
    }
}
