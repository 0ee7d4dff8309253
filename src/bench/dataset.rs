//! Seeded synthetic layers and the cases each workload runs on. Everything here is derived
//! from `Config::seed`: the same seed gives the same names, sizes and bytes.
//!
//! Scratch layout (short names: 100 lower dirs must fit in one page of mount options):
//! ```text
//! SCRATCH/c/0/        copy-up and read layer: s<size>/f.bin, m<op>/f.bin
//! SCRATCH/k/<i>/      lookup stack: k/0 holds the files looked up, k/1.. only fill directories
//! SCRATCH/e/<i>/      readdir layers (e/0 on top), all contributing to big/
//! SCRATCH/t/<i>/      the main tree's layers (t/0 on top)
//! SCRATCH/u.tar       the tarball the untar workload extracts
//! ```
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::bench::config::{Config, WorkloadId};
use crate::bench::report::format;
use crate::bench::rng::Rng;
use crate::bench::scratch::Ctl;
use crate::bench::tree::{self, NodeKind, Tree};
use crate::bench::workloads::Input;
use crate::{Error, Result};

/// One thing to measure: the layers to mount (top first) and what to do on them.
#[derive(Debug, Clone)]
pub struct Case {
    pub label: String,
    pub x: Option<f64>,
    pub layers: Vec<PathBuf>,
    pub input: Input,
}

/// Builds datasets on first use and keeps them for the rest of the run.
pub struct Datasets<'a> {
    cfg: &'a Config,
    root: PathBuf,
    ctl: Ctl,
    /// Whether caches can be dropped: copy-up then gets a cold and a warm case per size.
    cold: bool,
    copyup: Option<PathBuf>,
    main: Option<(Vec<PathBuf>, Tree)>,
}

fn io<T>(op: &'static str, path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(op, path, e))
}

fn mkdir_p(p: &Path) -> Result<()> {
    io("create directory", p, std::fs::create_dir_all(p))
}

/// Writes `size` seeded bytes to a new file.
fn write_file(path: &Path, size: u64, rng: &mut Rng) -> Result<()> {
    let mut f = io("create", path, File::create(path))?;
    let mut buf = vec![0u8; (size.min(1 << 20)) as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        io("write", path, f.write_all(&buf[..n]))?;
        left -= n as u64;
    }
    Ok(())
}

/// Creates an overlay whiteout (character device 0/0). Unprivileged users may make it too
/// (Linux >= 5.8); where the kernel refuses, the tree just has no whiteouts.
fn whiteout(path: &Path) -> Result<bool> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    match mknod(path, SFlag::S_IFCHR, Mode::empty(), 0) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EPERM) => Ok(false),
        Err(e) => Err(Error::io("create whiteout", path, e.into())),
    }
}

/// The size mix of the main tree: 80% under 4 KiB, 19% 4-32 KiB, 1% 32 KiB-1 MiB.
fn tree_file_size(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..80 => rng.below(4096),
        80..99 => rng.range(4096, 32 * 1024),
        _ => rng.range(32 * 1024, 1 << 20),
    }
}

impl<'a> Datasets<'a> {
    pub fn new(cfg: &'a Config, root: &Path, ctl: Ctl, cold: bool) -> Self {
        Datasets {
            cfg,
            root: root.to_path_buf(),
            ctl,
            cold,
            copyup: None,
            main: None,
        }
    }

    /// The cases of one workload, building what they need.
    pub fn cases(&mut self, w: WorkloadId) -> Result<Vec<Case>> {
        match w {
            WorkloadId::CopyUp => self.copyup_cases(),
            WorkloadId::Read => self.read_cases(),
            WorkloadId::Lookup => self.lookup_cases(),
            WorkloadId::Readdir => self.readdir_cases(),
            WorkloadId::StatStorm | WorkloadId::RmRf | WorkloadId::Parallel => self.tree_cases(w),
            WorkloadId::Untar => self.untar_cases(),
        }
    }

    fn copyup_layer(&mut self) -> Result<PathBuf> {
        if let Some(p) = &self.copyup {
            return Ok(p.clone());
        }
        let layer = self.root.join("c/0");
        let mut rng = Rng::derive(self.cfg.seed, "copy-up");
        for &size in &self.cfg.copyup_sizes {
            self.ctl.check()?;
            let dir = layer.join(format!("s{size}"));
            mkdir_p(&dir)?;
            write_file(&dir.join("f.bin"), size, &mut rng)?;
        }
        for op in ["chmod", "chown", "touch"] {
            let dir = layer.join(format!("m{op}"));
            mkdir_p(&dir)?;
            write_file(&dir.join("f.bin"), self.cfg.meta_size, &mut rng)?;
        }
        self.copyup = Some(layer.clone());
        Ok(layer)
    }

    fn copyup_cases(&mut self) -> Result<Vec<Case>> {
        let layer = self.copyup_layer()?;
        let warmth: &[bool] = if self.cold { &[false, true] } else { &[true] };
        let mut cases = Vec::new();
        for &size in &self.cfg.copyup_sizes {
            for &warm in warmth {
                cases.push(Case {
                    label: format::size(size),
                    x: Some(size as f64),
                    layers: vec![layer.clone()],
                    input: Input::CopyUp {
                        rel: PathBuf::from(format!("s{size}/f.bin")),
                        size,
                        warm,
                    },
                });
            }
        }
        cases.push(Case {
            label: format!("{} file", format::size(self.cfg.meta_size)),
            x: None,
            layers: vec![layer],
            input: Input::Metadata {
                chmod: "mchmod/f.bin".into(),
                chown: "mchown/f.bin".into(),
                touch: "mtouch/f.bin".into(),
            },
        });
        Ok(cases)
    }

    fn read_cases(&mut self) -> Result<Vec<Case>> {
        let layer = self.copyup_layer()?;
        let size = self.cfg.copyup_sizes.iter().copied().max().unwrap_or(0);
        Ok(vec![Case {
            label: format!("{} file", format::size(size)),
            x: None,
            layers: vec![layer],
            input: Input::Read {
                rel: PathBuf::from(format!("s{size}/f.bin")),
                size,
                random_reads: self.cfg.random_reads,
                seed: self.cfg.seed,
            },
        }])
    }

    fn lookup_cases(&mut self) -> Result<Vec<Case>> {
        let cfg = self.cfg;
        let max = cfg.lookup_layers.iter().copied().max().unwrap_or(1).max(1);
        let base = self.root.join("k");
        let dirs: Vec<String> = (0..cfg.lookup_dirs).map(|d| format!("d{d:02}")).collect();
        let mut files = Vec::new();
        let mut missing = Vec::new();
        for d in &dirs {
            for f in 0..cfg.lookup_files_per_dir {
                files.push(PathBuf::from(format!("{d}/f{f:04}")));
                if f % 2 == 0 {
                    missing.push(PathBuf::from(format!("{d}/m{f:04}")));
                }
            }
        }
        for i in 0..max {
            self.ctl.check()?;
            let layer = base.join(i.to_string());
            for d in &dirs {
                mkdir_p(&layer.join(d))?;
            }
            if i == 0 {
                for f in &files {
                    let p = layer.join(f);
                    io("create", &p, File::create(&p))?;
                }
            } else {
                for d in &dirs {
                    for k in 0..3 {
                        let p = layer.join(format!("{d}/g{i}_{k}"));
                        io("create", &p, File::create(&p))?;
                    }
                }
            }
        }
        let mut rng = Rng::derive(cfg.seed, "lookup-order");
        rng.shuffle(&mut files);
        rng.shuffle(&mut missing);
        Ok(cfg
            .lookup_layers
            .iter()
            .map(|&n| Case {
                label: if n == 1 {
                    "1 layer".into()
                } else {
                    format!("{n} layers")
                },
                x: Some(n as f64),
                layers: (0..n.max(1))
                    .rev()
                    .map(|i| base.join(i.to_string()))
                    .collect(),
                input: Input::Lookup {
                    files: files.clone(),
                    missing: missing.clone(),
                },
            })
            .collect())
    }

    fn readdir_cases(&mut self) -> Result<Vec<Case>> {
        let cfg = self.cfg;
        let n_layers = cfg.readdir_layers.max(1);
        let per_layer = cfg.readdir_entries / n_layers;
        let mut rng = Rng::derive(cfg.seed, "readdir");
        let layers: Vec<PathBuf> = (0..n_layers)
            .map(|i| self.root.join(format!("e/{i}")))
            .collect();
        let mut lower_names: Vec<String> = Vec::new();
        // Bottom (last) first, so upper layers can shadow and white out lower names.
        for (depth, layer) in layers.iter().rev().enumerate() {
            self.ctl.check()?;
            let dir = layer.join("big");
            mkdir_p(&dir)?;
            if depth > 0 {
                for _ in 0..per_layer / 20 {
                    let name = &lower_names[rng.below(lower_names.len() as u64) as usize];
                    let p = dir.join(name);
                    if !p.exists() {
                        io("create", &p, File::create(&p))?;
                    }
                }
                for _ in 0..per_layer / 50 {
                    let name = &lower_names[rng.below(lower_names.len() as u64) as usize];
                    let p = dir.join(name);
                    if !p.exists() {
                        whiteout(&p)?;
                    }
                }
            }
            for k in 0..per_layer {
                let name = format!("n{depth}_{k:06}");
                io("create", &dir.join(&name), File::create(dir.join(&name)))?;
                lower_names.push(name);
            }
        }
        let view = tree::merged_view(&layers, &self.ctl)?;
        let expected = view.keys().filter(|k| k.starts_with("big")).count() - 1;
        Ok(vec![Case {
            label: format!("{expected} entries from {n_layers} layers"),
            x: None,
            layers,
            input: Input::Readdir {
                dir: "big".into(),
                expected,
            },
        }])
    }

    fn build_main_tree(&self) -> Result<Vec<PathBuf>> {
        let cfg = self.cfg;
        let n_layers = cfg.tree_layers.max(1);
        let layers: Vec<PathBuf> = (0..n_layers)
            .map(|i| self.root.join(format!("t/{i}")))
            .collect();
        let mut rng = Rng::derive(cfg.seed, "tree");
        let subdirs = (cfg.tree_files / 1000).max(1);
        let mut lower: Vec<PathBuf> = Vec::new();
        for (depth, layer) in layers.iter().rev().enumerate() {
            mkdir_p(layer)?;
            // Bottom layer: 60% of the files; the others share the rest.
            let share = if n_layers == 1 {
                cfg.tree_files
            } else if depth == 0 {
                cfg.tree_files * 6 / 10
            } else {
                cfg.tree_files * 4 / 10 / (n_layers - 1)
            };
            if depth > 0 && !lower.is_empty() {
                for (count, wh) in [(share / 50, false), (share / 100, true)] {
                    for _ in 0..count {
                        self.ctl.check()?;
                        let rel = lower[rng.below(lower.len() as u64) as usize].clone();
                        let p = layer.join(&rel);
                        if p.symlink_metadata().is_ok() {
                            continue;
                        }
                        if let Some(parent) = p.parent() {
                            mkdir_p(parent)?;
                        }
                        if wh {
                            whiteout(&p)?;
                        } else {
                            write_file(&p, tree_file_size(&mut rng), &mut rng)?;
                        }
                    }
                }
            }
            for k in 0..share {
                if k % 256 == 0 {
                    self.ctl.check()?;
                }
                let rel = PathBuf::from(format!(
                    "t{}/s{:02}/f{depth}_{k:06}",
                    rng.below(5),
                    rng.below(subdirs as u64)
                ));
                let p = layer.join(&rel);
                if let Some(parent) = p.parent() {
                    mkdir_p(parent)?;
                }
                write_file(&p, tree_file_size(&mut rng), &mut rng)?;
                lower.push(rel);
            }
        }
        Ok(layers)
    }

    fn main_tree(&mut self) -> Result<(Vec<PathBuf>, Tree)> {
        if let Some(m) = &self.main {
            return Ok(m.clone());
        }
        let layers = if self.cfg.lowers.is_empty() {
            self.build_main_tree()?
        } else {
            self.cfg.lowers.clone()
        };
        let view = tree::merged_view(&layers, &self.ctl)?;
        self.main = Some((layers, view));
        Ok(self.main.clone().unwrap_or_default())
    }

    fn tree_cases(&mut self, w: WorkloadId) -> Result<Vec<Case>> {
        let (layers, view) = self.main_tree()?;
        let (files, dirs, entries) = tree::counts(&view);
        let desc = format!("{files} files, {} layers", layers.len());
        let input = match w {
            WorkloadId::StatStorm => Input::StatStorm { expected: entries },
            WorkloadId::RmRf => {
                let subtree = view
                    .iter()
                    .find(|(k, n)| n.kind == NodeKind::Dir && k.components().count() == 1)
                    .map(|(k, _)| k.clone())
                    .ok_or_else(|| {
                        Error::Usage("the lower tree has no directory to remove".into())
                    })?;
                let n = view.keys().filter(|k| k.starts_with(&subtree)).count();
                return Ok(vec![Case {
                    label: format!("{n} entries"),
                    x: None,
                    layers,
                    input: Input::RmRf {
                        subtree,
                        entries: n,
                    },
                }]);
            }
            _ => Input::Parallel {
                files: view
                    .iter()
                    .filter_map(|(k, n)| match n.kind {
                        NodeKind::File { size } => Some((k.clone(), size)),
                        _ => None,
                    })
                    .collect(),
                dirs: std::iter::once(PathBuf::new())
                    .chain(
                        view.iter()
                            .filter(|(_, n)| n.kind == NodeKind::Dir)
                            .map(|(k, _)| k.clone()),
                    )
                    .collect(),
                jobs: self.cfg.jobs.max(1),
                ops_per_job: self.cfg.ops_per_job,
                seed: self.cfg.seed,
            },
        };
        let label = match w {
            WorkloadId::Parallel => format!("{} jobs, {desc}", self.cfg.jobs.max(1)),
            _ => format!("{desc}, {dirs} dirs"),
        };
        let x = (w == WorkloadId::Parallel).then_some(self.cfg.jobs.max(1) as f64);
        Ok(vec![Case {
            label,
            x,
            layers,
            input,
        }])
    }

    fn untar_cases(&mut self) -> Result<Vec<Case>> {
        let (layers, _) = self.main_tree()?;
        let tarball = self.root.join("u.tar");
        let entries = write_tarball(&tarball, self.cfg.tar_files, self.cfg.seed, &self.ctl)?;
        Ok(vec![Case {
            label: format!("{} files", self.cfg.tar_files),
            x: None,
            layers,
            input: Input::Untar { tarball, entries },
        }])
    }
}

/// A tarball of `files` small files (0-8 KiB) in directories of about 100; returns the
/// number of entries (files and directories).
pub fn write_tarball(path: &Path, files: usize, seed: u64, ctl: &Ctl) -> Result<usize> {
    let f = io("create", path, File::create(path))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    b.mode(tar::HeaderMode::Deterministic);
    let mut rng = Rng::derive(seed, "tarball");
    let dirs = files.div_ceil(100).max(1);
    let mut buf = vec![0u8; 8192];
    let tar_err = |e: std::io::Error| Error::io("write tarball", path, e);
    for d in 0..dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("d{d:04}/"), std::io::empty())
            .map_err(tar_err)?;
    }
    for k in 0..files {
        if k % 512 == 0 {
            ctl.check()?;
        }
        let size = rng.below(8193) as usize;
        rng.fill(&mut buf[..size]);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size as u64);
        b.append_data(&mut h, format!("d{:04}/f{k:06}", k % dirs), &buf[..size])
            .map_err(tar_err)?;
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(tar_err)?;
    Ok(dirs + files)
}
