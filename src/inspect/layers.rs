//! `layerfs layers IMAGE`: per layer, the paths it adds, modifies and removes, with sizes.
//!
//! Layer N's changes are `diff(IMAGE@N-1, IMAGE@N)`: the same rules as `diff`, read from that
//! layer's entries only.
use serde::Serialize;

use super::diff::{self, Change, ChangeKind, DiffOptions};
use super::target::Target;
use crate::Result;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortBy {
    #[default]
    Path,
    /// Largest first (ties by path).
    Size,
}

#[derive(Clone, Debug, Default)]
pub struct LayersOptions {
    pub sort: SortBy,
    /// Keep paths matching: a glob (`*`, `?`) against the whole path, else a path prefix
    /// (`/etc` keeps `/etc` and what is below it).
    pub filter: Option<String>,
    /// Only this layer (0 = bottom).
    pub layer: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Totals {
    pub added: u64,
    pub modified: u64,
    pub removed: u64,
    /// Bytes of the added and modified entries (what the layer stores).
    pub added_bytes: u64,
    /// Bytes the removed entries took below (a directory: its subtree).
    pub removed_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct LayerChanges {
    pub index: usize,
    /// Chain ID, or `container:ID` for a container's writable layer.
    pub id: String,
    pub command: Option<String>,
    pub totals: Totals,
    pub changes: Vec<Change>,
}

/// Whether `path` passes a `--filter`.
pub fn path_matches(filter: &str, path: &[u8]) -> bool {
    let p = String::from_utf8_lossy(path);
    if filter.contains(['*', '?']) {
        return glob_any(filter.as_bytes(), p.as_bytes());
    }
    let f = filter.trim_end_matches('/');
    let f = if f.is_empty() { "/" } else { f };
    p == f || f == "/" || (p.starts_with(f) && p.as_bytes().get(f.len()) == Some(&b'/'))
}

/// Glob where `*` matches any run of bytes (slashes too) and `?` any one byte.
fn glob_any(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn totals(changes: &[Change]) -> Totals {
    let mut t = Totals::default();
    for c in changes {
        let size = c.size.unwrap_or(0);
        match c.kind {
            ChangeKind::Added => {
                t.added += 1;
                t.added_bytes += size;
            }
            ChangeKind::Modified => {
                t.modified += 1;
                t.added_bytes += size;
            }
            ChangeKind::Deleted => {
                t.removed += 1;
                t.removed_bytes += size;
            }
        }
    }
    t
}

/// The changes of each layer of `t` (bottom first).
pub fn layer_changes(t: &Target, opts: &LayersOptions) -> Result<Vec<LayerChanges>> {
    let commands = t.layer_commands();
    let mut out = Vec::new();
    for i in 0..t.layers.len() {
        if opts.layer.is_some_and(|l| l != i) {
            continue;
        }
        let mut changes = diff::diff(&t.layers[..i], &t.layers[..=i], DiffOptions { sizes: true })?;
        if let Some(f) = &opts.filter {
            changes.retain(|c| path_matches(f, &c.path));
        }
        if opts.sort == SortBy::Size {
            changes.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
        }
        out.push(LayerChanges {
            index: i,
            id: t.layers[i].key.clone(),
            command: commands.get(i).cloned().flatten(),
            totals: totals(&changes),
            changes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(path_matches("/etc", b"/etc"));
        assert!(path_matches("/etc/", b"/etc/passwd"));
        assert!(!path_matches("/etc", b"/etcetera"));
        assert!(path_matches("/", b"/x"));
        assert!(path_matches("*.conf", b"/etc/a.conf"));
        assert!(!path_matches("*.conf", b"/etc/a.confx"));
    }
}
