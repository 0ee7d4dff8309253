//! Directory listings: READDIR and READDIRPLUS from a snapshot taken at opendir (and again on a
//! rewind to offset 0), in the cookie order of `handles::Listing`; offsets are cookies.
//!
//! The kernel keeps what it read in its own directory cache (opendir answers CACHE_DIR and
//! KEEP_CACHE) until the directory changes: every create, unlink, rename or link through the
//! mount bumps the directory's version in the kernel, which then refills the cache from us.
//! Changes never come from elsewhere (the layers are only changed through the mount, as with
//! the day-long attribute cache).
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileHandle, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::handles::{DirH, Handle, Listing};
use super::{Inner, attr, errno};
use crate::overlay::node::Node;
use crate::overlay::readdir::DirEntry;

impl Inner {
    pub(super) fn list_with_dots(&self, node: &Arc<Node>) -> Result<Listing, crate::Error> {
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
        let names = self.ov.list_dir(node)?;
        Ok(Listing::new(
            [dot(".", node.ino()), dot("..", parent)],
            names,
        ))
    }

    /// Runs `f` on the directory handle `fh` and its listing from `offset` on.
    fn with_listing(
        &self,
        fh: FileHandle,
        offset: u64,
        f: impl FnOnce(&DirH, &[u64], &[DirEntry]),
    ) -> Result<(), Errno> {
        let h = self.file(fh)?;
        let Handle::Dir(d) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let mut slot = d.entries.lock();
        let entries = match &mut *slot {
            Some(l) if offset != 0 => l,
            _ => slot.insert(self.list_with_dots(&d.node).map_err(errno)?),
        };
        let from = entries.resume(offset);
        f(d, &entries.cookies[from..], &entries.entries[from..]);
        Ok(())
    }

    pub(super) fn list(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = self.with_listing(fh, offset, |_, cookies, entries| {
            for (&off, e) in cookies.iter().zip(entries) {
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
        let r = self.with_listing(fh, offset, |d, cookies, entries| {
            for (&off, e) in cookies.iter().zip(entries) {
                if self.add_plus(&mut reply, d, e, off) {
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
