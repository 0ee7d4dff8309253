//! Snapshots of a directory tree as comparable fields, and their differences.
//!
//! Nothing that legitimately differs between two implementations is recorded: no inode
//! numbers (hard links are recorded as groups of paths), no times other than the ones the
//! fixture or an operation set explicitly (below 1e9 seconds; later ones read "recent"), no
//! directory sizes or directory link counts.
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Kernel-private xattrs the kernel writes into its upper dir and a reader may ignore.
const KERNEL_PRIVATE: &[&str] = &[
    "trusted.overlay.origin",
    "trusted.overlay.impure",
    "trusted.overlay.uuid",
    "trusted.overlay.nlink",
    "trusted.overlay.upper",
    "trusted.overlay.protattr",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// A mounted union: every xattr the mount shows is recorded.
    Merged,
    /// An upper dir on disk: whiteouts (char 0/0) are their own type.
    RawUpper,
}

pub type Node = BTreeMap<&'static str, String>;
pub type Tree = BTreeMap<String, Node>;

/// Short, readable summary of file content: the text itself when short, else length + hash.
pub fn summarize(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) if data.len() <= 48 => format!("{s:?}"),
        _ => {
            let h = hex::encode(Sha256::digest(data));
            format!("{} bytes sha256:{}", data.len(), &h[..16])
        }
    }
}

pub fn file_type_name(ft: std::fs::FileType, rdev: u64, view: View) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "reg"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        if rdev == 0 && view == View::RawUpper {
            "whiteout"
        } else {
            "chr"
        }
    } else if ft.is_block_device() {
        "blk"
    } else {
        "unknown"
    }
}

pub fn mtime_class(secs: i64) -> String {
    if secs < 1_000_000_000 {
        secs.to_string()
    } else {
        "recent".into()
    }
}

/// All xattrs of `path` (not following symlinks) as `name=value` lines, sorted.
pub fn xattrs(path: &Path) -> Result<Vec<String>, String> {
    let names = list_xattrs(path)?;
    let mut out = Vec::new();
    for name in names {
        if name == "security.selinux" {
            continue;
        }
        let mut buf = vec![0u8; 65536];
        match rustix::fs::lgetxattr(path, name.as_str(), &mut buf) {
            // Spaces escaped: the field joins name=value pairs with spaces.
            Ok(n) => out.push(format!(
                "{name}={}",
                summarize(&buf[..n]).replace(' ', "\\x20")
            )),
            Err(e) => out.push(format!("{name}=<{}>", super::ops::errno_name(e))),
        }
    }
    out.sort();
    Ok(out)
}

pub fn list_xattrs(path: &Path) -> Result<Vec<String>, String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut buf)
        .map_err(|e| format!("listxattr: {}", super::ops::errno_name(e)))?;
    let mut names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Does the file have a hole before its end? Asked with SEEK_HOLE, not from the block count,
/// which also counts blocks a filesystem allocates for xattrs (kernel overlayfs's private
/// xattrs can push an upper file's xattrs out of the inode).
pub fn has_hole(fd: &impl std::os::fd::AsFd) -> bool {
    let size = rustix::fs::fstat(fd).map_or(0, |s| s.st_size as u64);
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(0)).is_ok_and(|h| h < size)
}

/// `has_hole` of the regular file at `path` (opened read-only, never following a symlink);
/// `None` for anything else or when it can't be opened.
pub fn has_hole_at(path: &Path, md: &std::fs::Metadata) -> Option<bool> {
    if !md.file_type().is_file() {
        return None;
    }
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    Some(has_hole(&fd))
}

/// Snapshot of every entry under `root` (root itself is ""), not following symlinks.
pub fn snapshot(root: &Path, view: View) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let mut node = Node::new();
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) => {
                node.insert("error", format!("lstat: {e}"));
                tree.insert(rel, node);
                continue;
            }
        };
        let ft = md.file_type();
        let kind = file_type_name(ft, md.rdev(), view);
        node.insert("type", kind.into());
        node.insert("mode", format!("{:04o}", md.mode() & 0o7777));
        node.insert("owner", format!("{}:{}", md.uid(), md.gid()));
        if kind != "symlink" {
            node.insert("mtime", mtime_class(md.mtime()));
        }
        if !ft.is_dir() {
            node.insert("size", md.size().to_string());
            if kind != "whiteout" {
                node.insert("nlink", md.nlink().to_string());
                if md.nlink() > 1 {
                    inodes
                        .entry((md.dev(), md.ino()))
                        .or_default()
                        .push(rel.clone());
                }
            }
        }
        match kind {
            "chr" | "blk" => {
                let (ma, mi) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
                node.insert("rdev", format!("{ma}:{mi}"));
            }
            "reg" => {
                match std::fs::read(&path) {
                    Ok(data) => node.insert("content", summarize(&data)),
                    Err(e) => node.insert("content", format!("<read error: {e}>")),
                };
                if let (true, Some(hole)) = (md.size() > 0, has_hole_at(&path, &md)) {
                    node.insert("sparse", hole.to_string());
                }
            }
            "symlink" => {
                let t = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|e| format!("<readlink error: {e}>"));
                node.insert("target", t);
            }
            "dir" => match std::fs::read_dir(&path) {
                Ok(rd) => {
                    for e in rd {
                        match e {
                            Ok(e) => {
                                let name = e.file_name().to_string_lossy().into_owned();
                                stack.push(if rel.is_empty() {
                                    name
                                } else {
                                    format!("{rel}/{name}")
                                });
                            }
                            Err(e) => {
                                node.insert("error", format!("readdir: {e}"));
                            }
                        }
                    }
                }
                Err(e) => {
                    node.insert("error", format!("opendir: {e}"));
                }
            },
            _ => {}
        }
        match xattrs(&path) {
            Ok(x) if x.is_empty() => {}
            Ok(x) => {
                node.insert("xattrs", x.join(" "));
            }
            Err(e) => {
                node.insert("xattrs", e);
            }
        }
        tree.insert(rel, node);
    }
    for (_, mut paths) in inodes {
        if paths.len() < 2 {
            continue;
        }
        paths.sort();
        let group = paths.join(",");
        for p in &paths {
            if let Some(n) = tree.get_mut(p) {
                n.insert("hardlinks", group.clone());
            }
        }
    }
    tree
}

/// Removes the xattrs the kernel keeps for itself in its upper dir (origin file handles,
/// impure and uuid markers): another implementation need not write them.
pub fn strip_kernel_private(tree: &mut Tree) {
    for node in tree.values_mut() {
        if let Some(x) = node.get("xattrs") {
            let kept: Vec<&str> = x
                .split(' ')
                .filter(|kv| !KERNEL_PRIVATE.contains(&kv.split('=').next().unwrap_or(kv)))
                .collect();
            if kept.is_empty() {
                node.remove("xattrs");
            } else {
                let joined = kept.join(" ");
                node.insert("xattrs", joined);
            }
        }
    }
}

/// One difference between two trees (or two outcomes): where, what, and both values.
#[derive(Clone, Debug)]
pub struct Diff {
    pub path: String,
    pub field: String,
    pub left: String,
    pub right: String,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {}: {} | {}",
            self.path, self.field, self.left, self.right
        )
    }
}

/// Fields named in `LAYERFS_DIFF_IGNORE` (comma separated). For looking past a known
/// difference while debugging; never set in CI.
fn ignored_fields() -> Vec<String> {
    std::env::var("LAYERFS_DIFF_IGNORE")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Field-by-field differences between two snapshots.
pub fn diff_trees(a: &Tree, b: &Tree) -> Vec<Diff> {
    let ignored = ignored_fields();
    let mut out = diff_trees_all(a, b);
    out.retain(|d| !ignored.contains(&d.field));
    out
}

fn diff_trees_all(a: &Tree, b: &Tree) -> Vec<Diff> {
    let mut out = Vec::new();
    let none = String::from("-");
    for (path, na) in a {
        match b.get(path) {
            None => out.push(Diff {
                path: path.clone(),
                field: "exists".into(),
                left: na.get("type").unwrap_or(&none).clone(),
                right: "missing".into(),
            }),
            Some(nb) => {
                let fields: std::collections::BTreeSet<&&str> =
                    na.keys().chain(nb.keys()).collect();
                for f in fields {
                    let (va, vb) = (na.get(*f).unwrap_or(&none), nb.get(*f).unwrap_or(&none));
                    if va != vb {
                        out.push(Diff {
                            path: path.clone(),
                            field: f.to_string(),
                            left: va.clone(),
                            right: vb.clone(),
                        });
                    }
                }
            }
        }
    }
    for (path, nb) in b {
        if !a.contains_key(path) {
            out.push(Diff {
                path: path.clone(),
                field: "exists".into(),
                left: "missing".into(),
                right: nb.get("type").unwrap_or(&none).clone(),
            });
        }
    }
    out
}

/// What a correct upper dir may not contain: xattrs other than the overlay format's own and
/// the user's, names with the OCI whiteout prefix, whiteouts that are not char 0/0 with mode 0.
pub fn private_markers(raw: &Tree) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, node) in raw {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(".wh.") {
            bad.push(format!("{path:?}: OCI whiteout name in upper"));
        }
        if let Some(x) = node.get("xattrs") {
            for kv in x.split(' ') {
                let key = kv.split('=').next().unwrap_or(kv);
                // trusted.overlay.overlay.* is the kernel's escaped form of a user's
                // trusted.overlay.* xattr (Linux 6.7+): data, not a marker.
                // redirect: the kernel's own format (redirect_dir=on), compared raw.
                let allowed = key == "trusted.overlay.opaque"
                    || key == "trusted.overlay.redirect"
                    || key.starts_with("trusted.overlay.overlay.")
                    || !(key.starts_with("trusted.overlay.")
                        || key.starts_with("user.overlay.")
                        || key.starts_with("user.fuseoverlayfs.")
                        || key.starts_with("user.layerfs")
                        || key.starts_with("trusted.layerfs"));
                if !allowed {
                    bad.push(format!("{path:?}: private xattr {kv}"));
                }
                if key == "trusted.overlay.opaque" && kv != "trusted.overlay.opaque=\"y\"" {
                    bad.push(format!("{path:?}: opaque xattr value is not y: {kv}"));
                }
            }
        }
    }
    bad
}
