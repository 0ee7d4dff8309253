//! `layerfs fsck [--repair]`: every record, blob digest and layer tree checked against its
//! metadata, reported in plain words, and repaired where the store holds what it takes.
//!
//! | damage                                   | repair                                          |
//! |------------------------------------------|-------------------------------------------------|
//! | layer dir without a readable meta.json   | removed (a half-written or damaged layer)       |
//! | kept layer blob with a wrong digest      | removed from the layer (save/push re-pack)      |
//! | layer tree missing or not as recorded    | re-extracted from the kept blob, when it verifies |
//! | blob whose bytes do not match its name   | removed                                         |
//! | unreadable image record                  | rebuilt from its config blob and stored layers  |
//! | image record whose config blob is gone   | removed with its names (load or pull it again)  |
//! | image record naming a missing manifest   | the manifest reference dropped                  |
//! | refs.json unreadable or missing          | rebuilt from the names the image records keep   |
//! | name of an image that does not exist     | removed                                         |
//! | container record unreadable, or naming a missing image | reported with what to remove |
//! | layers and blobs no image needs          | removed (as `prune` would); a leftover of an    |
//! |                                          | interrupted command, not damage                 |
//!
//! The tree check compares the entry count and bytes recorded at extraction; `--deep` also
//! compares every entry (metadata, contents, xattrs) with a fresh extraction of the kept blob.
//! What cannot be repaired (a layer whose blob is gone too) is reported with what to do. The
//! check holds the store lock shared; `--repair` holds it exclusively.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::blobs::LAYER_BLOB;
use super::health::names_from_records;
use super::import::{ImportOptions, extract_one};
use super::records::{ImageRecord, LayerMeta, TreeSummary, now_rfc3339};
use super::treecmp::first_difference;
use super::{LockMode, Store, list_hex, remove_all};
use crate::digest::Digest;
use crate::image::oci::{ImageConfig, chain_ids};
use crate::image::plan::LayerInput;
use crate::{Error, Result};

/// What to do.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsckOptions {
    pub repair: bool,
    /// Compare every layer's tree byte by byte with a fresh extraction of its kept blob.
    pub deep: bool,
}

/// One problem found, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub problem: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Fixed by `--repair` (this run): what was done.
    Repaired(String),
    /// `--repair` would do this.
    Repairable(String),
    /// Needs the user: what to do.
    Manual(String),
    /// Not damage: what a command stopped half-way leaves and the next `prune` or `--repair`
    /// removes (unused layers, a stale copy of names). Does not make the store unclean.
    Leftover(String),
}

/// Everything `fsck` found.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub images: usize,
    pub layers: usize,
    pub blobs: usize,
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// Nothing left to repair (repaired findings do not count).
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|f| matches!(f.outcome, Outcome::Repaired(_) | Outcome::Leftover(_)))
    }
}

/// Checks (and with `repair`, fixes) the store at `root`.
pub fn fsck(root: &Path, opts: &FsckOptions) -> Result<FsckReport> {
    let mode = if opts.repair {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    };
    let store = Store::open(root, mode)?;
    let mut ck = Checker {
        store: &store,
        repair: opts.repair,
        deep: opts.deep,
        report: FsckReport::default(),
    };
    ck.layers()?;
    ck.blobs()?;
    ck.images()?;
    ck.refs()?;
    ck.containers()?;
    ck.orphans()?;
    Ok(ck.report)
}

struct Checker<'a> {
    store: &'a Store,
    repair: bool,
    deep: bool,
    report: FsckReport,
}

impl Checker<'_> {
    /// Records a finding; runs `fix` when repairing (its error becomes a manual finding).
    fn found(&mut self, problem: String, action: &str, fix: impl FnOnce() -> Result<()>) {
        let outcome = if !self.repair {
            Outcome::Repairable(action.to_string())
        } else {
            match fix() {
                Ok(()) => Outcome::Repaired(action.to_string()),
                Err(e) => Outcome::Manual(format!("repair failed: {e}")),
            }
        };
        self.report.findings.push(Finding { problem, outcome });
    }

    /// Like [`Self::found`] for leftovers: repaired with `--repair`, harmless otherwise.
    fn leftover(&mut self, problem: String, action: &str, fix: impl FnOnce() -> Result<()>) {
        let outcome = if !self.repair {
            Outcome::Leftover(format!("harmless; --repair or prune: {action}"))
        } else {
            match fix() {
                Ok(()) => Outcome::Repaired(action.to_string()),
                Err(e) => Outcome::Manual(format!("repair failed: {e}")),
            }
        };
        self.report.findings.push(Finding { problem, outcome });
    }

    fn manual(&mut self, problem: String, todo: &str) {
        self.report.findings.push(Finding {
            problem,
            outcome: Outcome::Manual(todo.to_string()),
        });
    }

    fn layers(&mut self) -> Result<()> {
        let dir = self.store.root.join("layers");
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !crate::digest::is_sha256_hex(&name) {
                self.found(
                    format!("{}: not a layer (unexpected name)", path.display()),
                    "removed",
                    || remove_all(&path),
                );
                continue;
            }
            self.report.layers += 1;
            let chain = Digest::parse(&format!("sha256:{name}"))?;
            match self.store.layer_meta(&chain) {
                Ok(meta) if meta.chain_id == chain => self.layer(&chain, meta)?,
                Ok(meta) => self.found(
                    format!(
                        "layer {}: its record names layer {}",
                        chain.short(),
                        meta.chain_id.short()
                    ),
                    "removed the layer",
                    || remove_all(&path),
                ),
                Err(e) => self.found(
                    format!("layer {}: unreadable record ({e})", chain.short()),
                    "removed the layer (images that need it are reported below)",
                    || remove_all(&path),
                ),
            }
        }
        Ok(())
    }

    fn layer(&mut self, chain: &Digest, mut meta: LayerMeta) -> Result<()> {
        let store = self.store;
        let ldir = store.layer_dir(chain);
        let mut blob_ok = false;
        if let Some(b) = &meta.blob {
            let p = ldir.join(LAYER_BLOB);
            match file_digest(&p) {
                Ok((d, n)) if d == b.digest && n == b.size => blob_ok = true,
                got => {
                    let why = match got {
                        Ok((d, n)) => format!("is {n} bytes with digest {d}"),
                        Err(e) => e.to_string(),
                    };
                    let mut m = meta.clone();
                    self.found(
                        format!(
                            "layer {}: kept blob {} {why}, the record says {} bytes, {}",
                            chain.short(),
                            p.display(),
                            b.size,
                            b.digest
                        ),
                        "removed the kept blob (the layer stays usable; to save or push its images, load \
                         or pull them again)",
                        || {
                            m.blob = None;
                            remove_all(&p)?;
                            write_meta(store, &m)
                        },
                    );
                    meta.blob = None;
                }
            }
        }
        let diff = store.layer_diff(chain);
        let damage = match (tree_summary(&diff), meta.tree) {
            (Err(e), _) => Some(format!("its tree cannot be read ({e})")),
            (Ok(got), Some(want)) if got != want => Some(format!(
                "its tree has {} entries and {} bytes, {} and {} when extracted",
                got.entries, got.bytes, want.entries, want.bytes
            )),
            _ => None,
        };
        let Some(damage) = damage else {
            if self.deep && blob_ok {
                self.deep_check(chain, &meta);
            }
            return Ok(());
        };
        let problem = format!("layer {}: {damage}", chain.short());
        if blob_ok {
            self.found(problem, "re-extracted from its kept blob", || {
                reextract(store, chain, &meta)
            });
        } else {
            self.manual(
                problem,
                "no verified blob to re-extract it from: remove the images that use it \
                 (`layerfs rmi`) and load or pull them again",
            );
        }
        Ok(())
    }

    /// Compares a layer's tree, entry by entry and byte by byte, with a fresh extraction of
    /// its verified kept blob; a repair swaps that extraction in.
    fn deep_check(&mut self, chain: &Digest, meta: &LayerMeta) {
        let store = self.store;
        let what = format!("layer {}", chain.short());
        let fresh = match extract_fresh(store, chain, meta) {
            Ok(f) => f,
            Err(e) => {
                return self.manual(
                    format!("{what}: its kept blob does not extract ({e})"),
                    "load or pull the images that use it again",
                );
            }
        };
        match first_difference(&store.layer_diff(chain), &fresh.diff(chain)) {
            Ok(None) => {}
            Ok(Some(d)) => self.found(
                format!("{what}: its tree differs from its kept blob at {d}"),
                "re-extracted from its kept blob",
                || swap_in(store, chain, meta, fresh),
            ),
            Err(e) => self.manual(
                format!("{what}: cannot compare with its kept blob ({e})"),
                "check the store's filesystem",
            ),
        }
    }

    fn blobs(&mut self) -> Result<()> {
        let dir = self.store.root.join("blobs/sha256");
        for d in list_hex(&dir, "")? {
            self.report.blobs += 1;
            let p = self.store.blob_path(&d);
            match file_digest(&p) {
                Ok((got, _)) if got == d => {}
                got => {
                    let why = match got {
                        Ok((g, _)) => format!("its bytes hash to {g}"),
                        Err(e) => e.to_string(),
                    };
                    self.found(format!("blob {}: {why}", p.display()), "removed", || {
                        remove_all(&p)
                    });
                }
            }
        }
        Ok(())
    }

    fn images(&mut self) -> Result<()> {
        let store = self.store;
        let (good, bad) = store.images_readable()?;
        for u in bad {
            let hex = u
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let problem = format!("image record {}: unreadable ({})", u.path.display(), u.why);
            match Digest::parse(&format!("sha256:{hex}"))
                .and_then(|id| rebuild_record(store, &id).map(|r| (id, r)))
            {
                Ok((_, rec)) => self.found(
                    problem,
                    "rebuilt from its config blob and stored layers (names come from refs.json)",
                    || store.put_image(&rec),
                ),
                Err(e) => {
                    let p = u.path.clone();
                    self.found(
                        format!("{problem}; it cannot be rebuilt: {e}"),
                        "removed (load or pull the image again)",
                        || remove_all(&p),
                    );
                }
            }
        }
        for img in good {
            self.report.images += 1;
            self.image(img)?;
        }
        Ok(())
    }

    fn image(&mut self, img: ImageRecord) -> Result<()> {
        let store = self.store;
        let short = img.id.short();
        if !store.blob_path(&img.id).is_file() {
            let p = store.image_path(&img.id);
            self.found(
                format!("image {short}: its config blob is missing"),
                "removed the image record (load or pull the image again)",
                || remove_all(&p),
            );
            return Ok(());
        }
        for (i, chain) in img.layers.iter().enumerate() {
            if !store.layer_dir(chain).join("meta.json").is_file() {
                self.manual(
                    format!(
                        "image {short}: layer {} ({}) is missing",
                        i + 1,
                        chain.short()
                    ),
                    "load or pull the image again (`layerfs rmi` removes it)",
                );
            }
        }
        let lost: Vec<Digest> = img
            .manifest
            .iter()
            .chain(img.manifests.values())
            .filter(|m| !store.blob_path(m).is_file())
            .cloned()
            .collect();
        if !lost.is_empty() {
            let mut rec = img.clone();
            self.found(
                format!(
                    "image {short}: manifest blob {} is missing",
                    lost[0].short()
                ),
                "dropped the manifest reference (save and push write a new manifest)",
                || {
                    rec.manifest = rec.manifest.filter(|m| !lost.contains(m));
                    rec.manifests.retain(|_, m| !lost.contains(m));
                    store.put_image(&rec)
                },
            );
        }
        Ok(())
    }

    fn refs(&mut self) -> Result<()> {
        let store = self.store;
        let (images, _) = store.images_readable()?;
        let ids: BTreeSet<Digest> = images.iter().map(|i| i.id.clone()).collect();
        match store.refs_checked() {
            Err(e) => {
                let rebuilt = names_from_records(&images);
                self.found(
                    e.to_string(),
                    &format!(
                        "rebuilt refs.json with {} name(s) from the image records",
                        rebuilt.len()
                    ),
                    || {
                        let p = store.refs_path();
                        if p.exists() {
                            let keep = p.with_extension("json.damaged");
                            std::fs::rename(&p, &keep).map_err(|e| Error::io("rename", &p, e))?;
                        }
                        store.write_atomic(&p, b"{}")?;
                        store.update_refs(|refs| {
                            *refs = rebuilt;
                            Ok(())
                        })
                    },
                );
            }
            Ok(refs) => {
                let dangling: Vec<String> = refs
                    .iter()
                    .filter(|(_, id)| !ids.contains(id))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in dangling {
                    self.found(
                        format!("name {n} points at an image that does not exist"),
                        "removed the name",
                        || {
                            store.update_refs(|r| {
                                r.remove(&n);
                                Ok(())
                            })
                        },
                    );
                }
                let stale = images.iter().any(|i| {
                    let mut want: Vec<&String> = refs
                        .iter()
                        .filter(|(_, v)| **v == i.id)
                        .map(|(k, _)| k)
                        .collect();
                    want.sort();
                    let mut have: Vec<&String> = i.names.iter().collect();
                    have.sort();
                    want != have
                });
                if stale {
                    self.leftover(
                        "the names kept in image records differ from refs.json".into(),
                        "copied the names of refs.json into the image records",
                        || store.update_refs(|_| Ok(())),
                    );
                }
            }
        }
        Ok(())
    }

    /// Container records: readable, and naming an image the store has.
    fn containers(&mut self) -> Result<()> {
        let store = self.store;
        let dir = store.containers_dir();
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        for e in rd.flatten() {
            let p = e.path().join("meta.json");
            let id = e.file_name().to_string_lossy().into_owned();
            let short = id.get(..12).unwrap_or(&id).to_string();
            let image = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
                .map(|v| v.get("image").and_then(|i| i.as_str()).map(str::to_owned));
            match image {
                Err(why) => self.manual(
                    format!(
                        "container {short}: unreadable record {} ({why})",
                        p.display()
                    ),
                    &format!(
                        "unmount it if it is mounted, then remove {} (its writable layer goes too)",
                        e.path().display()
                    ),
                ),
                Ok(Some(img)) => {
                    let known = Digest::parse(&img).is_ok_and(|d| store.image_path(&d).is_file());
                    if !known {
                        self.manual(
                            format!("container {short}: its image {img} is not in the store"),
                            &format!("load or pull that image again, or `layerfs rm -f {short}`"),
                        );
                    }
                }
                Ok(None) => {}
            }
        }
        Ok(())
    }

    fn orphans(&mut self) -> Result<()> {
        let store = self.store;
        let (images, bad) = store.images_readable()?;
        if !bad.is_empty() {
            return Ok(()); // reported above; nothing is an orphan while a record is unknown
        }
        let need: BTreeSet<&Digest> = images.iter().flat_map(|i| i.layers.iter()).collect();
        let orphans: Vec<Digest> = store
            .layer_ids()?
            .into_iter()
            .filter(|c| !need.contains(c) && store.layer_dir(c).join("meta.json").is_file())
            .collect();
        if !orphans.is_empty() {
            self.leftover(
                format!("{} layer(s) no image uses", orphans.len()),
                "removed them and the blobs no image names",
                || store.collect_garbage(&mut std::io::sink()).map(drop),
            );
        }
        Ok(())
    }
}

/// Entries below `diff` (not following symlinks) and the bytes of its regular files.
pub fn tree_summary(diff: &Path) -> Result<TreeSummary> {
    let mut s = TreeSummary::default();
    let mut stack = vec![diff.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io("read", &dir, e))?;
            let md = e
                .metadata()
                .map_err(|err| Error::io("stat", e.path(), err))?;
            s.entries += 1;
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                s.bytes += md.len();
            }
        }
    }
    Ok(s)
}

fn file_digest(p: &Path) -> Result<(Digest, u64)> {
    let f = std::fs::File::open(p).map_err(|e| Error::io("open", p, e))?;
    let mut r = crate::digest::HashingReader::new(f);
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::io("read", p, e))?;
    let (_, d, n) = r.finish();
    Ok((d, n))
}

fn write_meta(store: &Store, meta: &LayerMeta) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(meta)
        .map_err(|e| Error::Format(format!("encoding layer record: {e}")))?;
    store.write_atomic(&store.layer_dir(&meta.chain_id).join("meta.json"), &bytes)
}

/// An image record from its config blob (the image ID is its digest) and the stored layers.
fn rebuild_record(store: &Store, id: &Digest) -> Result<ImageRecord> {
    let config = ImageConfig::parse(&store.read_blob(id)?, id.as_str())?;
    let diff_ids = config.rootfs.diff_ids.clone();
    let layers = chain_ids(&diff_ids);
    let mut size = 0;
    for c in &layers {
        size += store.layer_meta(c)?.size;
    }
    let names = store
        .refs()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| v == id)
        .map(|(k, _)| k)
        .collect();
    Ok(ImageRecord {
        id: id.clone(),
        manifest: None,
        manifests: Default::default(),
        layers,
        diff_ids,
        names,
        repo_digests: Vec::new(),
        size,
        loaded: now_rfc3339(),
    })
}

/// A layer extracted again from its kept blob, in staging.
struct Fresh {
    staging: super::Staging,
    tree: Option<TreeSummary>,
}

impl Fresh {
    fn diff(&self, chain: &Digest) -> PathBuf {
        self.staging.path().join(chain.hex()).join("diff")
    }
}

/// Extracts a layer again from its kept (verified) blob and swaps the new tree in.
fn reextract(store: &Store, chain: &Digest, meta: &LayerMeta) -> Result<()> {
    let fresh = extract_fresh(store, chain, meta)?;
    swap_in(store, chain, meta, fresh)
}

/// Extracts a layer from its kept blob into staging, as a load would.
fn extract_fresh(store: &Store, chain: &Digest, meta: &LayerMeta) -> Result<Fresh> {
    let Some(blob) = meta.blob.clone() else {
        return Err(Error::Format("the layer keeps no blob".into()));
    };
    // The chain below this layer, bottom first, for the implicit directories' attributes.
    let mut chains = vec![chain.clone()];
    let mut parent = meta.parent.clone();
    while let Some(p) = parent {
        parent = store.layer_meta(&p)?.parent;
        chains.insert(0, p);
    }
    let kept = store.layer_dir(chain).join(LAYER_BLOB);
    let src = kept.clone();
    let input = LayerInput {
        what: format!("kept blob {}", kept.display()),
        expected: Some((blob.digest.clone(), blob.size)),
        size_hint: blob.size,
        open: Box::new(move || {
            let f = std::fs::File::open(&src).map_err(|e| Error::io("open", &src, e))?;
            Ok(Box::new(f) as Box<dyn std::io::Read + Send>)
        }),
    };
    let staging = store.staging()?;
    let opts = ImportOptions {
        jobs: 1,
        ..ImportOptions::default()
    };
    let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    let index = chains.len() - 1;
    let staged = extract_one(
        &input,
        index,
        &meta.diff_id,
        chain,
        meta.parent.clone(),
        staging.path(),
        &opts,
        &bars,
    )?;
    store.inherit_implicit_dirs(std::slice::from_ref(&staged), &chains, staging.path())?;
    Ok(Fresh {
        staging,
        tree: staged.meta.tree,
    })
}

/// Replaces a layer's tree by a fresh extraction (the old one goes to staging).
fn swap_in(store: &Store, chain: &Digest, meta: &LayerMeta, fresh: Fresh) -> Result<()> {
    let new_diff = fresh.diff(chain);
    let old_diff = store.layer_diff(chain);
    let aside = fresh.staging.path().join("old-diff");
    if old_diff.exists() {
        std::fs::rename(&old_diff, &aside).map_err(|e| Error::io("rename", &old_diff, e))?;
    }
    std::fs::rename(&new_diff, &old_diff).map_err(|e| Error::io("rename", &old_diff, e))?;
    let mut m = meta.clone();
    m.tree = fresh.tree;
    write_meta(store, &m)
}
