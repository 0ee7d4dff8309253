//! `layerfs export CONTAINER -o rootfs.tar`: the container's merged tree (writable layer over
//! the image's layers) as one flat tar, computed from the layers directly (no mount needed,
//! mounted or not). No whiteouts or opaque markers: only what the mount shows.
use std::collections::HashMap;
use std::ffi::CStr;
use std::io::Write;
use std::path::Path;

use rustix::fs::{OFlags, Stat};

use super::lower::{DirLayers, Found, LayerStack, child_path};
use super::mount::lowerdirs;
use super::record::{ContainerRecord, Containers};
use crate::image::pack::entry_from_stat;
use crate::image::tarwrite::{EntryKind, TarEntry, TarWriter};
use crate::store::Store;
use crate::{Error, Result, sys};

/// Writes the merged tree of `rec` to `out`; returns the number of entries.
pub fn export<W: Write>(store: &Store, rec: &ContainerRecord, out: W) -> Result<(W, u64)> {
    let mut layers = vec![Containers::new(store).upper(&rec.id)];
    layers.extend(lowerdirs(store, rec));
    let stack = LayerStack::open(&layers)?;
    let mut ex = Exporter {
        stack: &stack,
        tw: TarWriter::new(out),
        links: HashMap::new(),
        entries: 0,
    };
    let root = stack.root()?;
    ex.dir(&root, c".")?;
    let out = ex
        .tw
        .finish()
        .map_err(|e| Error::io("write", "export", e))?;
    Ok((out, ex.entries))
}

/// Writes the merged tree of `rec` to the file `path`, which appears complete or not at all
/// (written next to it, synced, renamed).
pub fn export_to_file(store: &Store, rec: &ContainerRecord, path: &Path) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.layerfs-tmp-{}",
        path.file_name()
            .map_or("export".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let r = export(store, rec, std::io::BufWriter::new(f)).and_then(|(w, _)| {
        let f = w
            .into_inner()
            .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))
    });
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

struct Exporter<'a, W: Write> {
    stack: &'a LayerStack,
    tw: TarWriter<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

impl<W: Write> Exporter<'_, W> {
    fn dir(&mut self, dl: &DirLayers, rel: &CStr) -> Result<()> {
        for name in self.stack.list(dl, rel)? {
            let path = child_path(rel, &name);
            match self.stack.lookup(dl, &path)? {
                Found::Absent => {}
                Found::NonDir { layer, st } => self.non_dir(layer, &path, &st)?,
                Found::Dir { st, layers } => {
                    if let Some(e) = self.entry(layers.top(), &path, &st)? {
                        self.put(&e, None, &path)?;
                    }
                    self.dir(&layers, &path)?;
                }
            }
        }
        Ok(())
    }

    /// The entry for `path` in layer `layer` (`None`: a socket, which tar cannot hold).
    fn entry(&self, layer: usize, path: &CStr, st: &Stat) -> Result<Option<TarEntry>> {
        entry_from_stat(self.stack.fd(layer), path, path.to_bytes(), st)
            .map_err(|(op, e)| self.err(op, layer, path, e))
    }

    fn err(&self, op: &'static str, layer: usize, path: &CStr, e: rustix::io::Errno) -> Error {
        let p = self
            .stack
            .path(layer)
            .join(std::ffi::OsStr::new(&*path.to_string_lossy()));
        Error::io(op, p, e.into())
    }

    fn put(
        &mut self,
        e: &TarEntry,
        data: Option<&mut dyn std::io::Read>,
        path: &CStr,
    ) -> Result<()> {
        self.entries += 1;
        self.tw
            .append(e, data)
            .map_err(|err| Error::io("export", path.to_string_lossy().into_owned(), err))
    }

    fn non_dir(&mut self, layer: usize, path: &CStr, st: &Stat) -> Result<()> {
        let fd = self.stack.fd(layer);
        let Some(mut e) = self.entry(layer, path, st)? else {
            return Ok(());
        };
        if let EntryKind::File { .. } = e.kind {
            if st.st_nlink > 1 {
                let id = (st.st_dev, st.st_ino);
                if let Some(first) = self.links.get(&id) {
                    e.kind = EntryKind::HardLink {
                        target: first.clone(),
                    };
                    return self.put(&e, None, path);
                }
                self.links.insert(id, path.to_bytes().to_vec());
            }
            let f = sys::open_at(fd, path, OFlags::RDONLY, 0)
                .map_err(|err| self.err("open", layer, path, err))?;
            let mut f = std::fs::File::from(f);
            return self.put(&e, Some(&mut f), path);
        }
        self.put(&e, None, path)
    }
}
