//! The state of `layerfs explore`, apart from any terminal: the layer list, the file tree of the
//! selected layer (all layers up to it merged, each path marked with what the selected layer
//! did to it), key handling, file view and extract. The ratatui front end
//! (`cli/inspect/explore.rs`) only draws [`Explorer`] and feeds it [`Key`]s.
//!
//! Directories are listed when first expanded, so opening a large image costs its first level.
//! The marks are `diff(layers ..N-1, layers ..=N)` (read from layer N alone), or, after `d`,
//! `diff(OTHER, layers ..=N)`; deleted paths are shown in the tree though the merged view no
//! longer has them.
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use super::diff::{self, ChangeKind, DiffOptions, entry_size, subtree_size};
use super::fsread;
use super::layers::{self, LayersOptions, Totals};
use super::target::Target;
use crate::container::lower::{DirLayers, Found, LayerStack, child_path};
use crate::{Error, Result};

/// Keys, as the front end reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Left,
    Right,
    Enter,
    Tab,
    Esc,
    Backspace,
    PageUp,
    PageDown,
    Char(char),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Layers,
    Tree,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    Other,
    /// Shown only because it was deleted.
    Deleted,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub path: Vec<u8>,
    pub name: String,
    pub kind: NodeKind,
    pub size: Option<u64>,
    pub mark: Option<ChangeKind>,
    pub expanded: bool,
    children: Option<Vec<usize>>,
    dir: Option<DirLayers>,
}

#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub id: String,
    pub command: Option<String>,
    pub totals: Totals,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptKind {
    Extract,
    Compare,
}

#[derive(Clone, Debug)]
pub struct Prompt {
    pub kind: PromptKind,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct FileView {
    pub title: String,
    pub lines: Vec<String>,
    pub scroll: usize,
}

/// Resolves the `d` prompt's text to a target (the front end passes the store).
pub type Resolver<'a> = dyn Fn(&str) -> Result<Target> + 'a;

pub struct Explorer {
    pub target: Target,
    stack: LayerStack,
    pub layers: Vec<LayerInfo>,
    pub layer: usize,
    pub focus: Focus,
    /// Only changed paths (and the directories leading to them).
    pub changes_only: bool,
    pub sort_by_size: bool,
    pub compare: Option<Target>,
    marks: HashMap<Vec<u8>, (ChangeKind, Option<u64>)>,
    /// Parents of marked paths (shown in changes-only mode).
    ancestors: HashSet<Vec<u8>>,
    nodes: Vec<Node>,
    /// Visible rows: (node, depth).
    pub rows: Vec<(usize, usize)>,
    pub cursor: usize,
    pub layer_cursor: usize,
    pub view: Option<FileView>,
    pub prompt: Option<Prompt>,
    pub status: String,
    pub quit: bool,
}

const VIEW_MAX: u64 = 1 << 20;

fn kind_of(st: &rustix::fs::Stat) -> NodeKind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => NodeKind::Dir,
        FileType::RegularFile => NodeKind::File,
        FileType::Symlink => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &path[..i],
    }
}

/// `/a/b` -> `a/b` as a C string (`.` for the root).
fn rel(path: &[u8]) -> CString {
    let r = path.strip_prefix(b"/").unwrap_or(path);
    CString::new(if r.is_empty() { b"." } else { r }).unwrap_or_default()
}

impl Explorer {
    pub fn new(target: Target) -> Result<Self> {
        if target.layers.is_empty() {
            return Err(Error::Usage(format!(
                "{} has no layers to explore",
                target.label
            )));
        }
        let paths: Vec<PathBuf> = target.layers.iter().map(|l| l.path.clone()).collect();
        let stack = LayerStack::open(&paths)?;
        let summary = layers::layer_changes(&target, &LayersOptions::default())?;
        let layers = summary
            .into_iter()
            .map(|l| LayerInfo {
                id: l.id,
                command: l.command,
                totals: l.totals,
            })
            .collect();
        let top = target.layers.len() - 1;
        let mut e = Explorer {
            target,
            stack,
            layers,
            layer: top,
            focus: Focus::Layers,
            changes_only: false,
            sort_by_size: false,
            compare: None,
            marks: HashMap::new(),
            ancestors: HashSet::new(),
            nodes: Vec::new(),
            rows: Vec::new(),
            cursor: 0,
            layer_cursor: top,
            view: None,
            prompt: None,
            status: String::new(),
            quit: false,
        };
        e.rebuild()?;
        Ok(e)
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id]
    }

    /// The stack of layers 0..=N, as indexes top first.
    fn order(&self) -> Vec<usize> {
        (0..=self.layer).rev().collect()
    }

    /// Recomputes marks and the tree after the layer, the comparison or a mode changed.
    pub fn rebuild(&mut self) -> Result<()> {
        let upto = &self.target.layers[..=self.layer];
        let base = match &self.compare {
            Some(c) => c.layers.clone(),
            None => self.target.layers[..self.layer].to_vec(),
        };
        let changes = diff::diff(&base, upto, DiffOptions { sizes: true })?;
        self.marks.clear();
        self.ancestors.clear();
        for c in changes {
            let mut p = parent_of(&c.path).to_vec();
            loop {
                let done = p == b"/";
                if !self.ancestors.insert(p.clone()) {
                    break;
                }
                if done {
                    break;
                }
                p = parent_of(&p).to_vec();
            }
            self.marks.insert(c.path, (c.kind, c.size));
        }
        let root_layers = self.stack.root_of(&self.order())?;
        self.nodes = vec![Node {
            path: b"/".to_vec(),
            name: "/".into(),
            kind: NodeKind::Dir,
            size: None,
            mark: None,
            expanded: true,
            children: None,
            dir: Some(root_layers),
        }];
        self.load_children(0)?;
        self.cursor = 0;
        self.refresh_rows();
        Ok(())
    }

    /// Lists a directory node's children (merged view + deleted names), sorted.
    fn load_children(&mut self, id: usize) -> Result<()> {
        if self.nodes[id].children.is_some() {
            return Ok(());
        }
        let path = self.nodes[id].path.clone();
        let mut kids: Vec<Node> = Vec::new();
        if let Some(dir) = self.nodes[id].dir.clone() {
            let r = rel(&path);
            for name in self.stack.list(&dir, &r)? {
                let crel = child_path(&r, &name);
                let mut cpath = if path == b"/" {
                    Vec::new()
                } else {
                    path.clone()
                };
                cpath.push(b'/');
                cpath.extend_from_slice(name.to_bytes());
                let (kind, size, sub) = match self.stack.lookup(&dir, &crel)? {
                    Found::Absent => continue,
                    Found::NonDir { st, .. } => (kind_of(&st), Some(entry_size(&st)), None),
                    Found::Dir { layers, .. } => {
                        let size = if self.sort_by_size {
                            Some(subtree_size(&self.stack, &crel, &layers)?)
                        } else {
                            None
                        };
                        (NodeKind::Dir, size, Some(layers))
                    }
                };
                kids.push(self.make_node(cpath, name.to_string_lossy().into(), kind, size, sub));
            }
        }
        // Deleted names under this directory.
        let prefix = if path == b"/" {
            b"/".to_vec()
        } else {
            [&path[..], b"/"].concat()
        };
        let deleted: Vec<(Vec<u8>, Option<u64>)> = self
            .marks
            .iter()
            .filter(|(p, (k, _))| {
                *k == ChangeKind::Deleted && p.starts_with(&prefix) && parent_of(p) == &path[..]
            })
            .map(|(p, (_, s))| (p.clone(), *s))
            .collect();
        for (p, size) in deleted {
            let name = String::from_utf8_lossy(&p[prefix.len()..]).into_owned();
            kids.push(self.make_node(p, name, NodeKind::Deleted, size, None));
        }
        if self.sort_by_size {
            kids.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
        } else {
            kids.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let start = self.nodes.len();
        self.nodes.extend(kids);
        self.nodes[id].children = Some((start..self.nodes.len()).collect());
        Ok(())
    }

    fn make_node(
        &self,
        path: Vec<u8>,
        name: String,
        kind: NodeKind,
        size: Option<u64>,
        dir: Option<DirLayers>,
    ) -> Node {
        let mark = self.marks.get(&path).map(|m| m.0);
        let size = match (kind, self.marks.get(&path)) {
            (NodeKind::Deleted, Some((_, s))) => *s,
            _ => size,
        };
        Node {
            path,
            name,
            kind,
            size,
            mark,
            expanded: false,
            children: None,
            dir,
        }
    }

    fn visible(&self, n: &Node) -> bool {
        !self.changes_only || n.mark.is_some() || self.ancestors.contains(&n.path)
    }

    /// Recomputes the visible rows from the expanded nodes.
    pub fn refresh_rows(&mut self) {
        let mut rows = Vec::new();
        let mut stack: Vec<(usize, usize)> = Vec::new();
        if let Some(kids) = &self.nodes[0].children {
            stack.extend(kids.iter().rev().map(|&k| (k, 0)));
        }
        while let Some((id, depth)) = stack.pop() {
            let n = &self.nodes[id];
            if !self.visible(n) {
                continue;
            }
            rows.push((id, depth));
            if n.expanded
                && let Some(kids) = &n.children
            {
                stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
        self.rows = rows;
        self.cursor = self.cursor.min(self.rows.len().saturating_sub(1));
    }

    fn selected(&self) -> Option<usize> {
        self.rows.get(self.cursor).map(|r| r.0)
    }

    fn toggle(&mut self, open: Option<bool>) -> Result<()> {
        let Some(id) = self.selected() else {
            return Ok(());
        };
        if self.nodes[id].kind != NodeKind::Dir {
            return Ok(());
        }
        let want = open.unwrap_or(!self.nodes[id].expanded);
        if want {
            self.load_children(id)?;
        }
        self.nodes[id].expanded = want;
        self.refresh_rows();
        Ok(())
    }

    /// Handles one key; errors become the status line.
    pub fn key(&mut self, k: Key, resolve: &Resolver<'_>) {
        if let Err(e) = self.key_inner(k, resolve) {
            self.status = format!("error: {e}");
        }
    }

    fn key_inner(&mut self, k: Key, resolve: &Resolver<'_>) -> Result<()> {
        if self.prompt.is_some() {
            return self.prompt_key(k, resolve);
        }
        if let Some(v) = &mut self.view {
            match k {
                Key::Up => v.scroll = v.scroll.saturating_sub(1),
                Key::Down => v.scroll = (v.scroll + 1).min(v.lines.len().saturating_sub(1)),
                Key::PageUp => v.scroll = v.scroll.saturating_sub(10),
                Key::PageDown => v.scroll = (v.scroll + 10).min(v.lines.len().saturating_sub(1)),
                Key::Esc | Key::Char('q') | Key::Char('v') => self.view = None,
                _ => {}
            }
            return Ok(());
        }
        match k {
            Key::Char('q') | Key::Esc => self.quit = true,
            Key::Tab => {
                self.focus = match self.focus {
                    Focus::Layers => Focus::Tree,
                    Focus::Tree => Focus::Layers,
                }
            }
            Key::Char('c') => {
                self.changes_only = !self.changes_only;
                self.refresh_rows();
            }
            Key::Char('s') => {
                self.sort_by_size = !self.sort_by_size;
                self.rebuild()?;
            }
            Key::Char('d') => {
                self.prompt = Some(Prompt {
                    kind: PromptKind::Compare,
                    text: String::new(),
                });
            }
            Key::Char('D') if self.compare.is_some() => {
                self.compare = None;
                self.status = "comparison off".into();
                self.rebuild()?;
            }
            _ if self.focus == Focus::Layers => self.layer_key(k)?,
            _ => self.tree_key(k)?,
        }
        Ok(())
    }

    fn layer_key(&mut self, k: Key) -> Result<()> {
        let before = self.layer;
        match k {
            Key::Up | Key::Char('k') => self.layer = self.layer.saturating_sub(1),
            Key::Down | Key::Char('j') => self.layer = (self.layer + 1).min(self.layers.len() - 1),
            Key::Enter | Key::Right => self.focus = Focus::Tree,
            _ => {}
        }
        self.layer_cursor = self.layer;
        if self.layer != before {
            self.rebuild()?;
        }
        Ok(())
    }

    fn tree_key(&mut self, k: Key) -> Result<()> {
        let last = self.rows.len().saturating_sub(1);
        match k {
            Key::Up | Key::Char('k') => self.cursor = self.cursor.saturating_sub(1),
            Key::Down | Key::Char('j') => self.cursor = (self.cursor + 1).min(last),
            Key::PageUp => self.cursor = self.cursor.saturating_sub(10),
            Key::PageDown => self.cursor = (self.cursor + 10).min(last),
            Key::Enter | Key::Char(' ') => self.toggle(None)?,
            Key::Right => self.toggle(Some(true))?,
            Key::Left => self.toggle(Some(false))?,
            Key::Char('v') => self.open_view()?,
            Key::Char('x') => {
                if let Some(id) = self.selected() {
                    let name = self.nodes[id].name.clone();
                    self.prompt = Some(Prompt {
                        kind: PromptKind::Extract,
                        text: format!("./{name}"),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn prompt_key(&mut self, k: Key, resolve: &Resolver<'_>) -> Result<()> {
        let Some(p) = &mut self.prompt else {
            return Ok(());
        };
        match k {
            Key::Char(c) => p.text.push(c),
            Key::Backspace => {
                p.text.pop();
            }
            Key::Esc => self.prompt = None,
            Key::Enter => {
                let Some(p) = self.prompt.take() else {
                    return Ok(());
                };
                match p.kind {
                    PromptKind::Extract => self.extract(Path::new(&p.text))?,
                    PromptKind::Compare => {
                        let t = resolve(p.text.trim())?;
                        self.status = format!(
                            "marks: {} -> {} (layers 0-{})",
                            t.label, self.target.label, self.layer
                        );
                        self.compare = Some(t);
                        self.rebuild()?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Where the selected path is in the stack 0..=N.
    fn resolve_selected(&self) -> Result<Option<(Vec<u8>, Found)>> {
        let Some(id) = self.selected() else {
            return Ok(None);
        };
        let path = self.nodes[id].path.clone();
        if self.nodes[id].kind == NodeKind::Deleted {
            return Ok(None);
        }
        let mut cur = self.stack.root_of(&self.order())?;
        let r = rel(&path);
        let mut sofar = CString::from(c".");
        let comps: Vec<&[u8]> = r.to_bytes().split(|&b| b == b'/').collect();
        for (i, comp) in comps.iter().enumerate() {
            sofar = crate::sys::join(&sofar, diff::os(&CString::new(*comp).unwrap_or_default()));
            let f = self.stack.lookup(&cur, &sofar)?;
            if i + 1 == comps.len() {
                return Ok(Some((path, f)));
            }
            match f {
                Found::Dir { layers, .. } => cur = layers,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    fn open_view(&mut self) -> Result<()> {
        let Some((path, found)) = self.resolve_selected()? else {
            self.status = "nothing to view (a deleted path)".into();
            return Ok(());
        };
        let shown = String::from_utf8_lossy(&path).into_owned();
        let Found::NonDir { layer, st } = found else {
            self.status = format!("{shown} is a directory: Enter expands it");
            return Ok(());
        };
        let r = rel(&path);
        let fd = self.stack.fd(layer);
        let lines = match kind_of(&st) {
            NodeKind::Symlink => {
                let t = fsread::readlink_beneath(fd, &r).map_err(|e| {
                    Error::io(
                        "readlink",
                        self.stack.path(layer).join(diff::os(&r)),
                        e.into(),
                    )
                })?;
                vec![format!("symbolic link to {}", String::from_utf8_lossy(&t))]
            }
            NodeKind::File => {
                let bytes = fsread::read_beneath(fd, &r, VIEW_MAX)
                    .map_err(|e| Error::io("read", self.stack.path(layer).join(diff::os(&r)), e))?;
                if bytes.contains(&0) {
                    vec![format!("binary file, {} bytes", st.st_size)]
                } else {
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .map(str::to_string)
                        .collect()
                }
            }
            _ => vec!["a device, FIFO or socket: no contents".into()],
        };
        self.view = Some(FileView {
            title: format!("{shown} (layer {layer})"),
            lines,
            scroll: 0,
        });
        Ok(())
    }

    /// Writes the selected file (or symlink) to `dest`, which must not exist.
    pub fn extract(&mut self, dest: &Path) -> Result<()> {
        let Some((path, found)) = self.resolve_selected()? else {
            self.status = "nothing to extract (a deleted path)".into();
            return Ok(());
        };
        let shown = String::from_utf8_lossy(&path).into_owned();
        let Found::NonDir { layer, st } = found else {
            self.status = format!("{shown} is a directory: extract takes files");
            return Ok(());
        };
        let r = rel(&path);
        let fd = self.stack.fd(layer);
        let src = self.stack.path(layer).join(diff::os(&r));
        match kind_of(&st) {
            NodeKind::Symlink => {
                let t = fsread::readlink_beneath(fd, &r)
                    .map_err(|e| Error::io("readlink", &src, e.into()))?;
                std::os::unix::fs::symlink(diff::os(&CString::new(t).unwrap_or_default()), dest)
                    .map_err(|e| Error::io("create", dest, e))?;
            }
            NodeKind::File => {
                let from =
                    fsread::open_beneath(fd, &r).map_err(|e| Error::io("open", &src, e.into()))?;
                let mut from = std::fs::File::from(from);
                let mut to = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dest)
                    .map_err(|e| Error::io("create", dest, e))?;
                std::io::copy(&mut from, &mut to).map_err(|e| Error::io("write", dest, e))?;
            }
            _ => {
                self.status = format!("{shown}: only files and symlinks can be extracted");
                return Ok(());
            }
        }
        self.status = format!("extracted {shown} to {}", dest.display());
        Ok(())
    }
}
