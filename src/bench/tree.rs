//! The merged view of a stack of overlay-format layers, computed without mounting (pure over
//! the layer walks), and flattening it into a plain directory: the `raw` implementation.
//!
//! Rules (kernel overlayfs): layers apply bottom to top; a character device 0/0 is a whiteout
//! that hides the name and everything under it; a directory with `trusted.overlay.opaque=y`
//! (or `user.overlay.opaque=y`) hides what lower layers had beneath it; a directory over a
//! directory merges; anything else replaces.
use std::collections::BTreeMap;
use std::ops::Bound;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::bench::scratch::Ctl;
use crate::{Error, Result};

pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File {
        size: u64,
    },
    Symlink,
    /// Sockets, FIFOs, devices other than whiteouts: copied as they are when flattening.
    Special,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Index into the layers as given (top first) of the layer the entry comes from.
    pub layer: usize,
}

/// Relative path -> node; parents sort before their children.
pub type Tree = BTreeMap<PathBuf, Node>;

/// What one entry of one layer means for the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerEntry {
    Whiteout,
    Dir { opaque: bool },
    Other(NodeKind),
}

/// Removes `rel` and everything beneath it.
fn remove_subtree(tree: &mut Tree, rel: &Path) {
    let doomed: Vec<PathBuf> = tree
        .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(rel))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
}

/// Applies one entry of layer `layer` (entries of one layer must come parents first).
pub fn apply(tree: &mut Tree, rel: &Path, layer: usize, entry: LayerEntry) {
    match entry {
        LayerEntry::Whiteout => remove_subtree(tree, rel),
        LayerEntry::Dir { opaque } => {
            let merge = !opaque && matches!(tree.get(rel), Some(n) if n.kind == NodeKind::Dir);
            if !merge {
                remove_subtree(tree, rel);
            }
            tree.insert(
                rel.to_path_buf(),
                Node {
                    kind: NodeKind::Dir,
                    layer,
                },
            );
        }
        LayerEntry::Other(kind) => {
            remove_subtree(tree, rel);
            tree.insert(rel.to_path_buf(), Node { kind, layer });
        }
    }
}

fn classify(path: &Path, md: &std::fs::Metadata) -> LayerEntry {
    let ft = md.file_type();
    if ft.is_char_device() && md.rdev() == 0 {
        LayerEntry::Whiteout
    } else if ft.is_dir() {
        let opaque = OPAQUE_XATTRS.iter().any(|name| {
            let mut buf = [0u8; 4];
            matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(n) if buf[..n] == *b"y")
        });
        LayerEntry::Dir { opaque }
    } else if ft.is_file() {
        LayerEntry::Other(NodeKind::File { size: md.len() })
    } else if ft.is_symlink() {
        LayerEntry::Other(NodeKind::Symlink)
    } else {
        LayerEntry::Other(NodeKind::Special)
    }
}

/// Walks one layer parents first, calling `f(rel, entry)`.
fn walk_layer(root: &Path, ctl: &Ctl, f: &mut dyn FnMut(&Path, LayerEntry)) -> Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        ctl.check()?;
        let dir = root.join(&rel);
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        let mut names: Vec<_> = rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("read directory", &dir, e))?;
        names.sort();
        for name in names.into_iter().rev() {
            let child = rel.join(&name);
            let path = root.join(&child);
            let md = path
                .symlink_metadata()
                .map_err(|e| Error::io("stat", &path, e))?;
            let entry = classify(&path, &md);
            f(&child, entry);
            if matches!(entry, LayerEntry::Dir { .. }) {
                stack.push(child);
            }
        }
    }
    Ok(())
}

/// The merged view of `layers` (top first).
pub fn merged_view(layers: &[PathBuf], ctl: &Ctl) -> Result<Tree> {
    let mut tree = Tree::new();
    for (i, layer) in layers.iter().enumerate().rev() {
        walk_layer(layer, ctl, &mut |rel, entry| {
            apply(&mut tree, rel, i, entry)
        })?;
    }
    Ok(tree)
}

/// Copies the merged view into the empty directory `dest`.
pub fn flatten(layers: &[PathBuf], tree: &Tree, dest: &Path, ctl: &Ctl) -> Result<()> {
    copy_entries(layers, tree.iter(), dest, ctl)
}

/// Copies `rel` and everything beneath it from the merged view into `dest` (where `rel` no
/// longer exists): restores a flattened copy after `rm -rf` of that subtree.
pub fn restore_subtree(
    layers: &[PathBuf],
    tree: &Tree,
    rel: &Path,
    dest: &Path,
    ctl: &Ctl,
) -> Result<()> {
    let entries = tree
        .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(rel));
    copy_entries(layers, entries, dest, ctl)
}

fn copy_entries<'a>(
    layers: &[PathBuf],
    entries: impl Iterator<Item = (&'a PathBuf, &'a Node)>,
    dest: &Path,
    ctl: &Ctl,
) -> Result<()> {
    for (rel, node) in entries {
        ctl.check()?;
        let src = layers[node.layer].join(rel);
        let dst = dest.join(rel);
        let r = match node.kind {
            NodeKind::Dir => std::fs::create_dir(&dst),
            NodeKind::File { .. } => std::fs::copy(&src, &dst).map(|_| ()),
            NodeKind::Symlink => {
                std::fs::read_link(&src).and_then(|t| std::os::unix::fs::symlink(t, &dst))
            }
            NodeKind::Special => Ok(()),
        };
        r.map_err(|e| Error::io("copy into the flattened tree", &dst, e))?;
    }
    Ok(())
}

/// Counts of a tree: (files, dirs, all entries).
pub fn counts(tree: &Tree) -> (usize, usize, usize) {
    let dirs = tree.values().filter(|n| n.kind == NodeKind::Dir).count();
    let files = tree
        .values()
        .filter(|n| matches!(n.kind, NodeKind::File { .. }))
        .count();
    (files, dirs, tree.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> LayerEntry {
        LayerEntry::Other(NodeKind::File { size })
    }

    fn names(t: &Tree) -> Vec<String> {
        t.keys().map(|k| k.display().to_string()).collect()
    }

    #[test]
    fn merge_rules_one_row_each() {
        let mut t = Tree::new();
        // bottom layer (index 2)
        apply(&mut t, Path::new("a"), 2, LayerEntry::Dir { opaque: false });
        apply(&mut t, Path::new("a/x"), 2, file(1));
        apply(&mut t, Path::new("a/y"), 2, file(2));
        apply(&mut t, Path::new("b"), 2, LayerEntry::Dir { opaque: false });
        apply(&mut t, Path::new("b/z"), 2, file(3));
        apply(&mut t, Path::new("c"), 2, file(4));
        apply(&mut t, Path::new("a0"), 2, file(5));
        // middle: whiteout a/x, opaque b, replace c with a dir
        apply(&mut t, Path::new("a"), 1, LayerEntry::Dir { opaque: false });
        apply(&mut t, Path::new("a/x"), 1, LayerEntry::Whiteout);
        apply(&mut t, Path::new("b"), 1, LayerEntry::Dir { opaque: true });
        apply(&mut t, Path::new("b/w"), 1, file(6));
        apply(&mut t, Path::new("c"), 1, LayerEntry::Dir { opaque: false });
        // top: whiteout the whole dir a; a0 (sorts after a's children) survives
        apply(&mut t, Path::new("a"), 0, LayerEntry::Whiteout);
        assert_eq!(names(&t), ["a0", "b", "b/w", "c"]);
        assert_eq!(t[Path::new("b/w")].layer, 1);
        assert_eq!(t[Path::new("c")].kind, NodeKind::Dir);
        assert_eq!(counts(&t), (2, 2, 4));
    }

    #[test]
    fn a_file_over_a_dir_removes_the_dir_contents() {
        let mut t = Tree::new();
        apply(&mut t, Path::new("d"), 1, LayerEntry::Dir { opaque: false });
        apply(&mut t, Path::new("d/f"), 1, file(1));
        apply(&mut t, Path::new("d"), 0, file(9));
        assert_eq!(names(&t), ["d"]);
        assert_eq!(t[Path::new("d")].kind, NodeKind::File { size: 9 });
    }
}
