//! One lazy layer as an in-memory tree in the overlay on-disk format, built from its TOC with
//! the same classifier a full pull uses ([`crate::image::tarentry::classify`]), so both give
//! the same layer:
//!
//! | TOC entry                      | node                                                   |
//! |--------------------------------|--------------------------------------------------------|
//! | `dir/.wh.NAME`                 | `dir/NAME`: character device 0/0 (whiteout)             |
//! | `dir/.wh..wh..opq`             | `dir` gets `trusted.overlay.opaque=y`                   |
//! | hard link                      | one more name of the target's node (nlink + 1)          |
//! | a later entry for a name       | replaces it (a directory keeps its children)            |
//! | a directory only implied       | mode, owner and times of the same directory in the     |
//! |                                | topmost lower layer that has it (else 0755 root, now)   |
//!
//! Nodes are addressed by index; the FUSE inode is index + 1, the root is index 0.
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::image::tarentry::{Action, Kind, Meta, Mtime, RelPath, classify};
use crate::image::toc::{Toc, TocChunk};
use crate::overlay::whiteout::TRUSTED_OPAQUE;
use crate::{Error, Result};

/// What a node is.
#[derive(Clone, Debug)]
pub enum NodeKind {
    Dir(BTreeMap<OsString, usize>),
    /// A regular file: its size and pieces (an inline body for the eStargz TOC file).
    File {
        size: u64,
        chunks: Vec<TocChunk>,
        inline: Option<std::sync::Arc<Vec<u8>>>,
    },
    Symlink(Vec<u8>),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub meta: Meta,
    pub nlink: u32,
    /// The first name of the node (reads from the extracted layer once it is complete).
    pub path: RelPath,
    /// Created only because an entry below it was listed.
    pub implied: bool,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_))
    }
}

/// A layer's tree.
#[derive(Clone, Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

fn dir_node(path: RelPath, meta: Meta, implied: bool) -> Node {
    Node {
        kind: NodeKind::Dir(BTreeMap::new()),
        meta,
        nlink: 1,
        path,
        implied,
    }
}

fn implied_meta() -> Meta {
    let now = jiff::Timestamp::now();
    Meta {
        mode: 0o755,
        mtime: Mtime {
            sec: now.as_second(),
            nsec: u32::try_from(now.subsec_nanosecond()).unwrap_or(0),
        },
        ..Meta::default()
    }
}

impl Tree {
    /// Builds the tree of `toc`; `lowers` are the layers below, top first (for implied
    /// directories). `what` names the layer in errors.
    pub fn build(toc: &Toc, lowers: &[&Tree], what: &str) -> Result<Tree> {
        let mut t = Tree {
            nodes: vec![dir_node(RelPath::root(), implied_meta(), true)],
        };
        for e in &toc.entries {
            let action = classify(e.raw())
                .map_err(|m| Error::Format(format!("{what}: entry {}: {m}", e.name)))?;
            t.apply(action, &e.chunks)
                .map_err(|m| Error::Format(format!("{what}: entry {}: {m}", e.name)))?;
        }
        t.inherit(lowers);
        Ok(t)
    }

    pub fn root(&self) -> usize {
        0
    }

    pub fn child(&self, dir: usize, name: &OsStr) -> Option<usize> {
        match &self.nodes.get(dir)?.kind {
            NodeKind::Dir(c) => c.get(name).copied(),
            _ => None,
        }
    }

    /// The node at `path`, if the layer lists it.
    pub fn find(&self, path: &RelPath) -> Option<usize> {
        path.components()
            .try_fold(self.root(), |at, name| self.child(at, name))
    }

    fn apply(&mut self, action: Action, chunks: &[TocChunk]) -> std::result::Result<(), String> {
        match action {
            Action::Skip(_) => Ok(()),
            Action::Root(meta) => {
                self.nodes[0].meta = meta;
                self.nodes[0].implied = false;
                Ok(())
            }
            Action::Whiteout(path) => self.put(&path, NodeKind::Char(0, 0), whiteout_meta()),
            Action::Opaque(path) => {
                let at = self.dir_at(&path)?;
                let xattrs = &mut self.nodes[at].meta.xattrs;
                let name = TRUSTED_OPAQUE.to_bytes().to_vec();
                xattrs.retain(|(n, _)| *n != name);
                xattrs.push((name, b"y".to_vec()));
                Ok(())
            }
            Action::Create { path, kind, meta } => match kind {
                Kind::Dir => {
                    let at = self.dir_at(&path)?;
                    // An opaque marker seen earlier stays.
                    let keep: Vec<_> = self.nodes[at]
                        .meta
                        .xattrs
                        .iter()
                        .filter(|(n, _)| n.as_slice() == TRUSTED_OPAQUE.to_bytes())
                        .cloned()
                        .collect();
                    let n = &mut self.nodes[at];
                    n.meta = meta;
                    n.meta.xattrs.extend(keep);
                    n.implied = false;
                    Ok(())
                }
                Kind::HardLink { target } => {
                    let Some(t) = self.find(&target).filter(|&t| !self.nodes[t].is_dir()) else {
                        return Err(format!("hard link to {target}, not an earlier file"));
                    };
                    self.link(&path, t)
                }
                Kind::File { size } => self.put(
                    &path,
                    NodeKind::File {
                        size,
                        chunks: chunks.to_vec(),
                        inline: None,
                    },
                    meta,
                ),
                Kind::Symlink { target } => self.put(&path, NodeKind::Symlink(target), meta),
                Kind::Fifo => self.put(&path, NodeKind::Fifo, meta),
                Kind::Char { major, minor } => self.put(&path, NodeKind::Char(major, minor), meta),
                Kind::Block { major, minor } => {
                    self.put(&path, NodeKind::Block(major, minor), meta)
                }
            },
        }
    }

    /// The directory at `path`, creating it and missing parents as implied directories.
    fn dir_at(&mut self, path: &RelPath) -> std::result::Result<usize, String> {
        let mut at = self.root();
        let mut cur = RelPath::root();
        for name in path.components() {
            cur = cur.join(name);
            at = match self.child(at, name) {
                Some(c) if self.nodes[c].is_dir() => c,
                existing => {
                    let idx = self.nodes.len();
                    self.nodes.push(dir_node(cur.clone(), implied_meta(), true));
                    if let Some(old) = existing {
                        self.unref(old);
                    }
                    self.insert(at, name, idx);
                    idx
                }
            };
        }
        Ok(at)
    }

    fn insert(&mut self, dir: usize, name: &OsStr, idx: usize) {
        if let NodeKind::Dir(c) = &mut self.nodes[dir].kind {
            c.insert(name.to_owned(), idx);
        }
    }

    fn unref(&mut self, idx: usize) {
        let n = &mut self.nodes[idx];
        n.nlink = n.nlink.saturating_sub(1);
    }

    fn put(
        &mut self,
        path: &RelPath,
        kind: NodeKind,
        meta: Meta,
    ) -> std::result::Result<(), String> {
        let parent = self.dir_at(&path.parent().unwrap_or_else(RelPath::root))?;
        let name = path.file_name().ok_or("no name")?;
        let idx = self.nodes.len();
        self.nodes.push(Node {
            kind,
            meta,
            nlink: 1,
            path: path.clone(),
            implied: false,
        });
        if let Some(old) = self.child(parent, name) {
            self.unref(old);
        }
        self.insert(parent, name, idx);
        Ok(())
    }

    fn link(&mut self, path: &RelPath, target: usize) -> std::result::Result<(), String> {
        let parent = self.dir_at(&path.parent().unwrap_or_else(RelPath::root))?;
        let name = path.file_name().ok_or("no name")?;
        if let Some(old) = self.child(parent, name) {
            if old == target {
                return Ok(());
            }
            self.unref(old);
        }
        self.nodes[target].nlink += 1;
        self.insert(parent, name, target);
        Ok(())
    }

    /// Implied directories take the attributes of the topmost lower layer's directory there;
    /// a lower layer listing a non-directory there ends the search.
    fn inherit(&mut self, lowers: &[&Tree]) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].implied {
                continue;
            }
            let path = self.nodes[i].path.clone();
            for lower in lowers {
                match lower.find(&path) {
                    Some(n) if lower.nodes[n].is_dir() => {
                        let m = &lower.nodes[n].meta;
                        let own = &mut self.nodes[i].meta;
                        own.mode = m.mode;
                        own.uid = m.uid;
                        own.gid = m.gid;
                        own.mtime = m.mtime;
                        break;
                    }
                    Some(_) => break,
                    None => {}
                }
            }
        }
    }

    /// Adds a regular file with an in-memory body at the root (the eStargz TOC file).
    pub fn add_inline(&mut self, name: &str, body: Vec<u8>, meta: Meta) {
        let path = RelPath::root().join(OsStr::from_bytes(name.as_bytes()));
        let _ = self.put(
            &path,
            NodeKind::File {
                size: body.len() as u64,
                chunks: Vec::new(),
                inline: Some(std::sync::Arc::new(body)),
            },
            meta,
        );
    }

    /// Compressed bytes of every piece, and of those whose data is in `have`.
    pub fn chunks(&self) -> impl Iterator<Item = &TocChunk> {
        self.nodes.iter().flat_map(|n| match &n.kind {
            NodeKind::File { chunks, .. } => chunks.as_slice(),
            _ => &[],
        })
    }
}

fn whiteout_meta() -> Meta {
    Meta {
        mode: 0,
        ..Meta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tarentry::Meta;
    use crate::image::toc::{TocEntry, TocKind};

    fn e(name: &str, kind: TocKind, link: &str) -> TocEntry {
        TocEntry {
            name: name.into(),
            kind,
            link: link.into(),
            size: 0,
            dev: (0, 0),
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
            chunks: Vec::new(),
        }
    }

    #[test]
    fn overlay_format_rules() {
        let toc = Toc {
            entries: vec![
                e("a/", TocKind::Dir, ""),
                e("a/f", TocKind::Reg, ""),
                e("a/g", TocKind::HardLink, "a/f"),
                e("a/.wh.gone", TocKind::Reg, ""),
                e("b/.wh..wh..opq", TocKind::Reg, ""),
                e("c/d/e", TocKind::Reg, ""),
            ],
        };
        let mut lower = Tree::build(&Toc::default(), &[], "l").unwrap();
        lower
            .put(
                &RelPath::normalize(b"c").unwrap(),
                NodeKind::Dir(BTreeMap::new()),
                Meta {
                    mode: 0o700,
                    uid: 5,
                    ..Meta::default()
                },
            )
            .unwrap();
        let t = Tree::build(&toc, &[&lower], "t").unwrap();
        let at = |p: &str| t.find(&RelPath::normalize(p.as_bytes()).unwrap()).unwrap();
        assert_eq!(at("a/f"), at("a/g"));
        assert_eq!(t.nodes[at("a/f")].nlink, 2);
        assert!(matches!(t.nodes[at("a/gone")].kind, NodeKind::Char(0, 0)));
        assert!(
            t.nodes[at("b")]
                .meta
                .xattrs
                .iter()
                .any(|(n, v)| n.as_slice() == TRUSTED_OPAQUE.to_bytes() && v == b"y")
        );
        assert_eq!(t.nodes[at("c")].meta.mode, 0o700);
        assert_eq!(t.nodes[at("c")].meta.uid, 5);
        assert_eq!(t.nodes[at("c/d")].meta.mode, 0o755);
        assert!(
            t.find(&RelPath::normalize(b"a/.wh.gone").unwrap())
                .is_none()
        );
    }
}
