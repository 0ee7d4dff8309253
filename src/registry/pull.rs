//! `layerfs pull`: registry -> store.
//!
//! 1. The manifest (by tag or digest) is fetched with every supported `Accept` type, its size
//!    capped, its digest checked (against the reference, the `Docker-Content-Digest` header and
//!    the index entry), its media type statements compared; an index picks this machine's (or
//!    `--platform`'s) manifest.
//! 2. The config is read from the store when present, else fetched, capped and verified.
//! 3. Each layer is, in order of preference: already extracted (its chain ID is in the store:
//!    nothing is read); a blob a layer of the store keeps (same digest, or another blob with
//!    the same diff_id); or downloaded. Downloads stream straight into the store's import,
//!    which extracts while the bytes arrive, in parallel, verifying blob digest, size and
//!    diff_id; each layer keeps its blob (`layers/CHAIN/blob`, hard-linked, not copied: see
//!    [`super::download`]).
//! 4. The store publishes layers, config, manifest, image record and name only when every layer
//!    verified: an interrupted pull leaves no image and no layer, and the next pull resumes
//!    from the blobs and partial downloads it left.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::client::{Client, ClientOptions, Method, Request, Stats, header, read_limited};
use super::docs::{
    self, MAX_CONFIG, MAX_MANIFEST, check_config_media, check_document, check_layer_media,
    manifest_accept, manifest_path, select_platform,
};
use super::download::{BlobFetch, forget_kept, sweep_stale};
use super::{auth::Credentials, challenge::repo_scope};
use crate::digest::Digest;
use crate::human::human_size;
use crate::image::oci::{Descriptor, Document, ImageConfig, Manifest, Platform, chain_ids};
use crate::image::plan::{ImagePlan, LayerInput, Opener};
use crate::reference::Reference;
use crate::store::Store;
use crate::store::import::ImportOptions;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// `--platform`; this machine's when `None`.
    pub platform: Option<Platform>,
    pub client: ClientOptions,
    /// Progress bars (stderr is a terminal and not quiet).
    pub progress: bool,
    /// Layers downloaded and extracted at once.
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            client: ClientOptions::default(),
            progress: false,
            jobs: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(4),
        }
    }
}

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    pub id: Digest,
    /// The digest the reference resolved to (an index's, for a multi-platform image).
    pub digest: Digest,
    /// The platform manifest's digest.
    pub manifest: Digest,
    pub downloaded: u64,
    pub bytes: u64,
    pub present: usize,
}

/// A manifest as fetched, verified.
struct Fetched {
    bytes: Vec<u8>,
    digest: Digest,
    doc: Document,
}

/// The platform manifest a reference resolved to.
pub struct Resolved {
    /// What the reference named: a manifest, or an index.
    top: Fetched,
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

/// Fetches the reference's manifest, following an index to `want`'s entry.
pub fn resolve(client: &Client, r: &Reference, scope: &str, want: &Platform) -> Result<Resolved> {
    let shown = r.familiar();
    let repo = r.repository.as_str();
    let top_ref = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => crate::reference::DEFAULT_TAG.to_owned(),
    };
    let top = fetch_manifest(
        client,
        repo,
        scope,
        &top_ref,
        r.digest.as_ref(),
        None,
        &shown,
    )?;
    let child = match &top.doc {
        Document::Manifest(_) => None,
        Document::Index(ix) => {
            let d = select_platform(ix, want, &shown)?;
            Some(fetch_child(client, repo, scope, d, want, &shown, 0)?)
        }
    };
    let chosen = child.as_ref().unwrap_or(&top);
    let Document::Manifest(manifest) = &chosen.doc else {
        return Err(Error::Format(format!("{shown}: no image manifest")));
    };
    Ok(Resolved {
        manifest: manifest.clone(),
        bytes: chosen.bytes.clone(),
        digest: chosen.digest.clone(),
        top,
    })
}

/// An image for another platform: an error when `--platform` asked for one, else a warning.
fn check_platform(
    cfg: &ImageConfig,
    want: &Platform,
    explicit: bool,
    shown: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let other = (!cfg.architecture.is_empty() && cfg.architecture != want.architecture)
        || (!cfg.os.is_empty() && cfg.os != want.os);
    if other && explicit {
        return Err(Error::Usage(format!(
            "{shown} is an image for {}/{}, not for the requested platform {want}",
            cfg.os, cfg.architecture
        )));
    }
    if other {
        let _ = writeln!(
            out,
            "warning: {shown} is for {}/{}, not for this machine ({want})",
            cfg.os, cfg.architecture
        );
    }
    Ok(())
}

/// The last progress lines of a pull: resumed downloads, what was fetched.
fn report(out: &mut dyn Write, shown: &str, notes: &Mutex<Vec<String>>, p: &Pulled, secs: f64) {
    if let Ok(n) = notes.lock() {
        for line in n.iter() {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(
        out,
        "Pulled {shown}: {} blob(s) downloaded ({}), {} layer(s) already present, {secs:.2}s",
        p.downloaded,
        human_size(p.bytes),
        p.present,
    );
}

/// Pulls `r` into `store`; progress lines go to `out`.
pub fn pull(
    store: &Store,
    r: &Reference,
    creds: Option<Credentials>,
    opts: &PullOptions,
    out: &mut dyn Write,
) -> Result<Pulled> {
    let started = Instant::now();
    let client = Arc::new(Client::connect(&r.registry, creds, &opts.client)?);
    let scope = repo_scope(&r.repository, false);
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    let shown = r.familiar();
    let res = resolve(&client, r, &scope, &want)?;
    let _ = writeln!(out, "Pulling {shown} ({want}), manifest {}", res.digest);
    let config = fetch_config(&client, store, &r.repository, &scope, &res.manifest, &shown)?;
    let cfg = ImageConfig::parse(&config, &format!("{shown}: config"))?;
    check_platform(&cfg, &want, opts.platform.is_some(), &shown, out)?;
    let downloads = store.root().join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| Error::io("create", &downloads, e))?;
    sweep_stale(&downloads);
    let private = store.staging()?;
    let ctx = FetchCtx {
        client: &client,
        repo: &r.repository,
        scope: &scope,
        downloads: &downloads,
        private: private.path().to_owned(),
        notes: Arc::new(Mutex::new(Vec::new())),
        failure: Arc::new(Mutex::new(None)),
    };
    let planned = plan_layers(store, &ctx, &res.manifest, &cfg, out)?;
    let plan = ImagePlan {
        config,
        manifest: Some(res.bytes.clone()),
        layers: planned.inputs,
        names: r.tag.iter().map(|t| r.with_tag(t)).collect::<Result<_>>()?,
    };
    let iopts = ImportOptions {
        progress: opts.progress,
        jobs: opts.jobs.max(1),
        blob_dir: Some(private.path().to_owned()),
        ..ImportOptions::default()
    };
    let imported = match store.import(plan, &iopts, out) {
        Ok(i) => i,
        // A download failure surfaces in the import as a read error: report the cause.
        Err(e) => {
            return Err(ctx
                .failure
                .lock()
                .ok()
                .and_then(|mut f| f.take())
                .unwrap_or(e));
        }
    };
    drop(private);
    forget_kept(&downloads, &planned.fetched);
    for d in [&res.top.digest, &res.digest] {
        store.add_repo_digest(&imported.id, &format!("{}@{d}", r.name()))?;
    }
    let pulled = Pulled {
        id: imported.id,
        digest: res.top.digest,
        manifest: res.digest,
        downloaded: Stats::get(&client.stats.blob_downloads),
        bytes: Stats::get(&client.stats.bytes_downloaded),
        present: planned.present,
    };
    let secs = started.elapsed().as_secs_f64();
    report(out, &shown, &ctx.notes, &pulled, secs);
    Ok(pulled)
}

/// GET a manifest or index, capped and verified.
#[allow(clippy::too_many_arguments)]
fn fetch_manifest(
    client: &Client,
    repo: &str,
    scope: &str,
    reference: &str,
    want_digest: Option<&Digest>,
    declared: Option<&Descriptor>,
    shown: &str,
) -> Result<Fetched> {
    let what = match want_digest {
        Some(d) => format!("{shown}: manifest {d}"),
        None => format!("{shown}: manifest"),
    };
    let url = client.url(&manifest_path(repo, reference))?;
    let req = Request::new(Method::Get, url, scope).header("accept", manifest_accept());
    let resp = client.send(&req)?;
    if resp.status().as_u16() == 404 {
        return Err(Error::Registry(format!(
            "{shown}: not found in registry {} (no such repository, tag or digest)",
            client.registry
        )));
    }
    if resp.status().as_u16() != 200 {
        return Err(client.status_error(resp, &what, scope));
    }
    let ctype = header(&resp, "content-type");
    let header_digest = header(&resp, "docker-content-digest");
    if let Some(len) = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok())
        && len > MAX_MANIFEST
    {
        return Err(Error::Format(format!(
            "{what}: {len} bytes is larger than the {MAX_MANIFEST}-byte manifest limit; refusing it"
        )));
    }
    let bytes = read_limited(resp, MAX_MANIFEST, &what)?;
    let digest = Digest::of(&bytes);
    if let Some(w) = want_digest
        && &digest != w
    {
        return Err(Error::DigestMismatch {
            what,
            expected: w.to_string(),
            actual: digest.to_string(),
        });
    }
    if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:"))
        && h != digest.as_str()
    {
        return Err(Error::DigestMismatch {
            what: format!("{what} (Docker-Content-Digest header)"),
            expected: h,
            actual: digest.to_string(),
        });
    }
    if let Some(d) = declared
        && d.size != bytes.len() as u64
    {
        return Err(Error::Format(format!(
            "{what}: {} bytes, the index says {}",
            bytes.len(),
            d.size
        )));
    }
    let doc = check_document(
        &bytes,
        ctype.as_deref(),
        declared.map(|d| d.media_type.as_str()),
        &what,
    )?;
    Ok(Fetched { bytes, digest, doc })
}

/// Follows an index entry to an image manifest (nested indexes up to a small depth).
fn fetch_child(
    client: &Client,
    repo: &str,
    scope: &str,
    d: &Descriptor,
    want: &Platform,
    shown: &str,
    depth: usize,
) -> Result<Fetched> {
    if depth > 2 {
        return Err(Error::Format(format!(
            "{shown}: image indexes nested too deeply"
        )));
    }
    let f = fetch_manifest(
        client,
        repo,
        scope,
        d.digest.as_str(),
        Some(&d.digest),
        Some(d),
        shown,
    )?;
    match &f.doc {
        Document::Manifest(_) => Ok(f),
        Document::Index(ix) => {
            let next = select_platform(ix, want, shown)?;
            fetch_child(client, repo, scope, next, want, shown, depth + 1)
        }
    }
}

/// The config bytes: from the store when it has them, else from the registry; verified.
pub fn fetch_config(
    client: &Client,
    store: &Store,
    repo: &str,
    scope: &str,
    m: &Manifest,
    shown: &str,
) -> Result<Vec<u8>> {
    let d = &m.config;
    let what = format!("{shown}: config {}", d.digest);
    check_config_media(d, shown)?;
    if d.size > MAX_CONFIG {
        return Err(Error::Format(format!(
            "{what}: {} bytes is larger than the {MAX_CONFIG}-byte limit; refusing it",
            d.size
        )));
    }
    if let Ok(b) = std::fs::read(store.blob_path(&d.digest))
        && Digest::of(&b) == d.digest
    {
        return Ok(b);
    }
    let url = client.url(&docs::blob_path(repo, &d.digest))?;
    let resp = client.send(&Request::new(Method::Get, url, scope))?;
    if resp.status().as_u16() != 200 {
        return Err(client.status_error(resp, &what, scope));
    }
    let b = read_limited(resp, d.size, &what)?;
    Stats::add(&client.stats.blob_downloads, 1);
    Stats::add(&client.stats.bytes_downloaded, b.len() as u64);
    if b.len() as u64 != d.size {
        return Err(Error::Format(format!(
            "{what}: got {} bytes, the manifest says {}",
            b.len(),
            d.size
        )));
    }
    let got = Digest::of(&b);
    if got != d.digest {
        return Err(Error::DigestMismatch {
            what,
            expected: d.digest.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(b)
}

struct PlannedLayers {
    inputs: Vec<LayerInput>,
    present: usize,
    /// Blobs that go through `downloads/` (downloaded now or by an earlier pull).
    fetched: Vec<Digest>,
    /// Their total size.
    download_bytes: u64,
}

/// The blobs the store's layers keep, by blob digest and by diff_id.
#[derive(Default)]
struct LocalBlobs {
    by_digest: HashMap<Digest, PathBuf>,
    by_diff: HashMap<Digest, (Digest, u64, PathBuf)>,
}

fn local_blobs(store: &Store) -> Result<LocalBlobs> {
    let mut out = LocalBlobs::default();
    for chain in store.layer_ids()? {
        let (Ok(Some(kept)), Ok(meta)) = (store.layer_blob(&chain), store.layer_meta(&chain))
        else {
            continue;
        };
        out.by_digest
            .entry(kept.blob.digest.clone())
            .or_insert_with(|| kept.path.clone());
        out.by_diff
            .entry(meta.diff_id)
            .or_insert((kept.blob.digest, kept.blob.size, kept.path));
    }
    Ok(out)
}

/// Hard-links (else copies) a kept blob into the pull's directory; returns the new path.
fn link_into(src: &Path, dir: &Path, d: &Digest) -> Result<PathBuf> {
    let dst = dir.join(d.hex());
    match std::fs::hard_link(src, &dst) {
        Ok(()) => Ok(dst),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dst),
        Err(_) => std::fs::copy(src, &dst)
            .map(|_| dst.clone())
            .map_err(|e| Error::io("copy", &dst, e)),
    }
}

fn file_opener(path: PathBuf) -> Opener {
    Box::new(move || {
        let f = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(Box::new(f) as Box<dyn std::io::Read + Send>)
    })
}

/// What a download needs besides the blob's descriptor.
struct FetchCtx<'a> {
    client: &'a Arc<Client>,
    repo: &'a str,
    scope: &'a str,
    downloads: &'a Path,
    private: PathBuf,
    notes: Arc<Mutex<Vec<String>>>,
    failure: Arc<Mutex<Option<Error>>>,
}

/// Decides, per layer, where its bytes come from, and says so.
fn plan_layers(
    store: &Store,
    ctx: &FetchCtx,
    m: &Manifest,
    cfg: &ImageConfig,
    out: &mut dyn Write,
) -> Result<PlannedLayers> {
    if cfg.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::Format(format!(
            "{}/{}: the manifest lists {} layers but the config {} diff_ids",
            ctx.client.registry,
            ctx.repo,
            m.layers.len(),
            cfg.rootfs.diff_ids.len()
        )));
    }
    let chains = chain_ids(&cfg.rootfs.diff_ids);
    let local = local_blobs(store)?;
    let mut planned = PlannedLayers {
        inputs: Vec::with_capacity(m.layers.len()),
        present: 0,
        fetched: Vec::new(),
        download_bytes: 0,
    };
    for (i, desc) in m.layers.iter().enumerate() {
        check_layer_media(desc, &ctx.client.registry)?;
        let (open, expected) = if store.has_layer(&chains[i]) {
            planned.present += 1;
            let open: Opener = Box::new(|| {
                Err(Error::Format(
                    "internal: an extracted layer was reopened".into(),
                ))
            });
            (open, (desc.digest.clone(), desc.size))
        } else {
            layer_source(
                ctx,
                &local,
                desc,
                &cfg.rootfs.diff_ids[i],
                &mut planned,
                out,
            )?
        };
        planned.inputs.push(LayerInput {
            what: format!(
                "blob {} of {}/{}",
                desc.digest, ctx.client.registry, ctx.repo
            ),
            size_hint: expected.1,
            expected: Some(expected),
            open,
        });
    }
    if !planned.fetched.is_empty() {
        let _ = writeln!(
            out,
            "Fetching {} layer blob(s), {}",
            planned.fetched.len(),
            human_size(planned.download_bytes)
        );
    }
    Ok(planned)
}

/// Where the bytes of a layer the store lacks come from, and the blob they must match: a
/// blob the store keeps (same digest, or another blob of the same diff_id), else the registry.
fn layer_source(
    ctx: &FetchCtx,
    local: &LocalBlobs,
    desc: &Descriptor,
    diff_id: &Digest,
    planned: &mut PlannedLayers,
    out: &mut dyn Write,
) -> Result<(Opener, (Digest, u64))> {
    if let Some(p) = local.by_digest.get(&desc.digest) {
        let _ = writeln!(
            out,
            "blob sha256:{}: already in the store",
            desc.digest.short()
        );
        let open = file_opener(link_into(p, &ctx.private, &desc.digest)?);
        return Ok((open, (desc.digest.clone(), desc.size)));
    }
    if let Some((blob, size, p)) = local.by_diff.get(diff_id) {
        let _ = writeln!(
            out,
            "blob sha256:{}: the same layer (diff_id sha256:{}) is in the store as blob sha256:{}",
            desc.digest.short(),
            diff_id.short(),
            blob.short()
        );
        let open = file_opener(link_into(p, &ctx.private, blob)?);
        return Ok((open, (blob.clone(), *size)));
    }
    planned.fetched.push(desc.digest.clone());
    planned.download_bytes += desc.size;
    let fetch = BlobFetch {
        client: Arc::clone(ctx.client),
        repository: ctx.repo.to_owned(),
        scope: ctx.scope.to_owned(),
        digest: desc.digest.clone(),
        size: desc.size,
        downloads: ctx.downloads.to_owned(),
        private: ctx.private.clone(),
        notes: Arc::clone(&ctx.notes),
        failure: Arc::clone(&ctx.failure),
    };
    Ok((
        Box::new(move || fetch.open()),
        (desc.digest.clone(), desc.size),
    ))
}
