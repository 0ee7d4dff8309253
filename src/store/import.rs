//! Importing an image: verify, extract missing layers (in parallel), publish, name.
//!
//! A load is a sequence that becomes visible only at its end: layers are extracted into a
//! staging directory under tmp/ while their blob digest, size and diff_id are computed in the
//! same pass; only when every layer verified are they synced and renamed into layers/, then the
//! config and manifest blobs, then the image record, then the names. A failure before that
//! leaves nothing but the staging directory, removed on drop or by the next sweep.
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::Store;
use super::blobs::LAYER_BLOB;
use super::pipeline::{decode_in_thread, verdict};
use super::records::{ImageRecord, LayerMeta, now_rfc3339};
use super::verify::{Checked, ReusedLayer};
use crate::digest::Digest;
use crate::image::compress::check_media_type;
use crate::image::oci::{Descriptor, Document, ImageConfig, Manifest, chain_ids, parse_document};
use crate::image::plan::{ImagePlan, LayerInput};
use crate::image::tarentry::RelPath;
use crate::image::unpack::{Limits, open_layer_root, unpack_layer};
use crate::image::write::copy_dir_attrs_from_lower;
use crate::pool::parallel_map;
use crate::reference::Reference;
use crate::{Error, Result};

pub struct ImportOptions {
    pub limits: Limits,
    /// Layers extracted at once.
    pub jobs: usize,
    /// Show progress bars (only when stderr is a terminal).
    pub progress: bool,
    /// Where the caller keeps verified blobs, named by hex digest (a registry pull, which
    /// downloads them itself). A layer's kept blob is then hard-linked from there instead of
    /// being copied while the layer is extracted.
    pub blob_dir: Option<PathBuf>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            limits: Limits::from_env(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: false,
            blob_dir: None,
        }
    }
}

#[derive(Debug)]
pub struct Imported {
    pub id: Digest,
    pub names: Vec<Reference>,
    pub extracted: usize,
    pub reused: usize,
}

/// A layer extracted into staging, not yet published.
pub(super) struct Staged {
    pub(super) index: usize,
    pub(super) meta: LayerMeta,
    pub(super) implicit: Vec<RelPath>,
}

impl Store {
    /// Imports one image; progress lines go to `out`. The caller says what was loaded (the
    /// returned ID and names).
    pub fn import(
        &self,
        plan: ImagePlan,
        opts: &ImportOptions,
        out: &mut dyn Write,
    ) -> Result<Imported> {
        let id = Digest::of(&plan.config);
        let what = format!("image {}", id.short());
        let config = ImageConfig::parse(&plan.config, &what)?;
        let (manifest_digest, descs) = match &plan.manifest {
            Some(m) => {
                let (d, descs) = check_manifest(m, &id, plan.layers.len(), &what)?;
                (Some(d), descs)
            }
            None => (None, Vec::new()),
        };
        let diff_ids = config.rootfs.diff_ids.clone();
        if diff_ids.len() != plan.layers.len() {
            return Err(Error::Format(format!(
                "{what}: config lists {} layers (diff_ids) but the image has {}",
                diff_ids.len(),
                plan.layers.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let mut todo = Vec::new();
        let mut reused = 0;
        for (i, chain) in chains.iter().enumerate() {
            if self.has_layer(chain) {
                say(
                    out,
                    format!("layer {} already present", short(&diff_ids[i])),
                );
                reused += 1;
            } else if chains[..i].contains(chain) || todo.iter().any(|&j| chains[j] == *chain) {
                reused += 1;
            } else {
                todo.push(i);
            }
        }
        // The manifest is checked against the blobs of the layers the store already has too.
        for (i, desc) in descs.iter().enumerate() {
            if todo.contains(&i) {
                continue;
            }
            let reused = ReusedLayer {
                desc,
                diff_id: &diff_ids[i],
                chain: &chains[i],
                what: format!("{what}: layer {} ({})", i + 1, plan.layers[i].what),
            };
            let first = todo.iter().find(|&&j| chains[j] == chains[i]);
            if first.is_some_and(|&j| descs[j].digest == desc.digest) {
                continue; // the same blob, verified when extracted
            }
            // Unverifiable (a registry source that skips stored layers): the registry's
            // manifest was fetched by digest; `save` and `push` reuse it only when it names
            // the kept blobs with their compression.
            let _checked: Checked = self.verify_reused_layer(&reused, &*plan.layers[i].open)?;
        }
        // Largest first: with fewer workers than layers, the big one must not start last.
        todo.sort_by_key(|&i| std::cmp::Reverse(plan.layers[i].size_hint));
        let staging = self.staging()?;
        let staged = self.extract_all(&plan, &todo, &diff_ids, &chains, staging.path(), opts)?;
        for s in &staged {
            say(
                out,
                format!(
                    "layer {} extracted ({} entries, {})",
                    short(&s.meta.diff_id),
                    s.meta.entries,
                    crate::human::human_size(s.meta.size)
                ),
            );
        }
        // Media types against the bytes (a pull may have used another stored blob of the
        // same layer instead of the one the manifest names: nothing to compare then).
        for s in &staged {
            let named = |d: &Descriptor| s.meta.blob.as_ref().is_some_and(|b| b.digest == d.digest);
            if let Some(desc) = descs.get(s.index).filter(|d| named(d)) {
                let blob = staging.path().join(s.meta.chain_id.hex()).join(LAYER_BLOB);
                let what = format!(
                    "{what}: layer {} ({})",
                    s.index + 1,
                    plan.layers[s.index].what
                );
                check_media_type(&blob, &desc.media_type, &what)?;
            }
        }
        self.inherit_implicit_dirs(&staged, &chains, staging.path())?;
        sync_fs(staging.path())?;
        for s in &staged {
            super::fault::point("import-publish-layer");
            let from = staging.path().join(s.meta.chain_id.hex());
            let to = self.layer_dir(&s.meta.chain_id);
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                    say(
                        out,
                        format!(
                            "layer {} already present (loaded concurrently)",
                            short(&s.meta.diff_id)
                        ),
                    );
                }
                Err(e) => return Err(Error::io("publish layer", &to, e)),
            }
        }
        super::fault::point("import-before-blobs");
        self.put_blob(&plan.config)?;
        if let Some(m) = &plan.manifest {
            self.put_blob(m)?;
        }
        let size = chains
            .iter()
            .map(|c| self.layer_meta(c).map(|m| m.size))
            .sum::<Result<u64>>()?;
        let old = self.image(&id).ok();
        let mut repo_digests: Vec<String> = old
            .as_ref()
            .map(|o| o.repo_digests.clone())
            .unwrap_or_default();
        // Each name keeps the manifest it was loaded with; the image's own manifest is the
        // first verified one, so a later load cannot change what other tags save.
        let mut manifests = old
            .as_ref()
            .map(|o| o.manifests.clone())
            .unwrap_or_default();
        if let Some(md) = &manifest_digest {
            for n in &plan.names {
                manifests.insert(n.to_string(), md.clone());
            }
        }
        let kept_manifest = old
            .and_then(|o| o.manifest)
            .filter(|m| self.blob_path(m).exists())
            .or_else(|| manifest_digest.clone());
        if let Some(md) = &manifest_digest {
            for n in &plan.names {
                let rd = format!("{}@{md}", n.name());
                if !repo_digests.contains(&rd) {
                    repo_digests.push(rd);
                }
            }
        }
        let rec = ImageRecord {
            id: id.clone(),
            manifest: kept_manifest,
            manifests,
            names: Vec::new(),
            layers: chains,
            diff_ids,
            repo_digests,
            size,
            loaded: now_rfc3339(),
        };
        super::fault::point("import-before-record");
        // The record is written under the refs lock, which also keeps its names.
        self.update_refs(|refs| {
            self.put_image(&rec)?;
            super::fault::point("import-before-refs");
            for n in &plan.names {
                refs.insert(n.to_string(), id.clone());
            }
            Ok(())
        })?;
        Ok(Imported {
            id,
            names: plan.names,
            extracted: staged.len(),
            reused,
        })
    }

    /// Extracts the layers `todo` (indexes into the plan) with up to `opts.jobs` threads.
    fn extract_all(
        &self,
        plan: &ImagePlan,
        todo: &[usize],
        diff_ids: &[Digest],
        chains: &[Digest],
        staging: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<Staged>> {
        let bars = crate::human::progress_bars(opts.progress);
        let mut staged = parallel_map(todo, opts.jobs, |&i| {
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            extract_one(
                &plan.layers[i],
                i,
                &diff_ids[i],
                &chains[i],
                parent,
                staging,
                opts,
                &bars,
            )
        })?;
        staged.sort_by_key(|s| s.index);
        Ok(staged)
    }

    /// Bottom-up, gives each staged layer's implicit directories the attributes they have in
    /// the layers below (staged or published).
    pub(super) fn inherit_implicit_dirs(
        &self,
        staged: &[Staged],
        chains: &[Digest],
        staging: &Path,
    ) -> Result<()> {
        let diff_of = |c: &Digest| -> PathBuf {
            let st = staging.join(c.hex()).join("diff");
            if st.exists() { st } else { self.layer_diff(c) }
        };
        for s in staged {
            if s.implicit.is_empty() || s.index == 0 {
                continue;
            }
            let open = |p: &Path| -> Result<OwnedFd> {
                use rustix::fs::{Mode, OFlags};
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                rustix::fs::open(p, flags, Mode::empty())
                    .map_err(|e| Error::io("open", p, e.into()))
            };
            let layer = open(&diff_of(&chains[s.index]))?;
            let lowers: Vec<OwnedFd> = chains[..s.index]
                .iter()
                .rev()
                .map(|c| open(&diff_of(c)))
                .collect::<Result<_>>()?;
            let borrowed: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
            copy_dir_attrs_from_lower(layer.as_fd(), &s.implicit, &borrowed)
                .map_err(|e| Error::Format(format!("layer {}: {e}", short(&s.meta.diff_id))))?;
        }
        Ok(())
    }
}

fn say(out: &mut dyn Write, line: String) {
    let _ = writeln!(out, "{line}");
}

/// `sha256:` plus the first 12 hex digits.
fn short(d: &Digest) -> String {
    format!("sha256:{}", d.short())
}

/// Checks a manifest's config and layer count; returns its digest and layer descriptors.
fn check_manifest(
    bytes: &[u8],
    id: &Digest,
    n_layers: usize,
    what: &str,
) -> Result<(Digest, Vec<Descriptor>)> {
    let Document::Manifest(m): Document = parse_document(bytes, what)? else {
        return Err(Error::Format(format!(
            "{what}: expected an image manifest, got an index"
        )));
    };
    let m: Manifest = m;
    if &m.config.digest != id {
        return Err(Error::DigestMismatch {
            what: format!("{what}: config"),
            expected: m.config.digest.to_string(),
            actual: id.to_string(),
        });
    }
    if m.layers.len() != n_layers {
        return Err(Error::Format(format!(
            "{what}: manifest has {} layers, plan has {n_layers}",
            m.layers.len()
        )));
    }
    Ok((Digest::of(bytes), m.layers))
}

fn sync_fs(p: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io("open", p, e.into()))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::io("syncfs", p, e.into()))
}

/// Extracts one layer into staging/CHAIN/diff while hashing the blob and the tar stream.
#[allow(clippy::too_many_arguments)]
pub(super) fn extract_one(
    input: &LayerInput,
    index: usize,
    diff_id: &Digest,
    chain: &Digest,
    parent: Option<Digest>,
    staging: &Path,
    opts: &ImportOptions,
    bars: &indicatif::MultiProgress,
) -> Result<Staged> {
    let what = format!("layer {} ({})", index + 1, input.what);
    let dir = staging.join(chain.hex());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let kept = dir.join(super::blobs::LAYER_BLOB);
    let raw: Box<dyn Read + Send> = match &opts.blob_dir {
        Some(_) => (input.open)()?,
        None => {
            let copy = std::fs::File::create(&kept).map_err(|e| Error::io("create", &kept, e))?;
            Box::new(super::blobs::TeeReader::new((input.open)()?, copy))
        }
    };
    let bar = crate::human::byte_bar(bars, input.size_hint, short(diff_id));
    let raw: Box<dyn Read + Send> = Box::new(bar.wrap_read(raw));
    // Read at most one byte more than declared: enough to tell "too long" without reading an
    // endless stream.
    let limit = input
        .expected
        .as_ref()
        .map_or(u64::MAX, |(_, n)| n.saturating_add(1));
    let fd = open_layer_root(&dir.join("diff"))?;
    let (unpacked, mut hashed) = decode_in_thread(raw, limit, &what, |r| {
        unpack_layer(r, fd, &opts.limits, &what)
    });
    bar.finish_and_clear();
    let (up, consumer_err) = match unpacked {
        Ok(up) => (Some(up), None),
        Err(e) => (None, Some(e)),
    };
    verdict(&what, input.expected.as_ref(), &mut hashed, consumer_err)?;
    let (got_blob, blob_len) = hashed.blob.clone();
    let (Some(up), Some(got_diff)) = (up, hashed.diff) else {
        return Err(Error::Format(format!("{what}: layer stream ended early")));
    };
    if &got_diff != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("{what}: uncompressed content (diff_id)"),
            expected: diff_id.to_string(),
            actual: got_diff.to_string(),
        });
    }
    let tree = super::fsck::tree_summary(&dir.join("diff"))?;
    let meta = LayerMeta {
        tree: Some(tree),
        chain_id: chain.clone(),
        diff_id: diff_id.clone(),
        parent,
        size: up.tar_bytes,
        entries: up.entries,
        sources: input.expected.iter().map(|(d, _)| d.clone()).collect(),
        created: now_rfc3339(),
        blob: keep_linked(opts, &got_blob, &kept)?.then_some(super::blobs::BlobRef {
            digest: got_blob,
            size: blob_len,
        }),
    };
    let bytes = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::Format(format!("encoding layer record: {e}")))?;
    let mp = dir.join("meta.json");
    std::fs::write(&mp, bytes).map_err(|e| Error::io("write", &mp, e))?;
    Ok(Staged {
        index,
        meta,
        implicit: up.implicit_dirs,
    })
}

/// Whether the layer has its kept blob: written while extracting, or (with a `blob_dir`)
/// hard-linked from there now that it verified.
fn keep_linked(opts: &ImportOptions, digest: &Digest, kept: &Path) -> Result<bool> {
    let Some(dir) = &opts.blob_dir else {
        return Ok(true);
    };
    let src = dir.join(digest.hex());
    match std::fs::hard_link(&src, kept) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!("{}: not found; the layer keeps no blob", src.display());
            Ok(false)
        }
        Err(e) => Err(Error::io("link", kept, e)),
    }
}
