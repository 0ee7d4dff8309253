//! `layerfs mount --lazy REGISTRY/REPO:TAG MNT`: the image's manifest, config and each layer's
//! TOC are fetched (a few small Range requests), the TOCs are checked against the manifest's
//! annotations, and the mount is live. Then:
//!
//! ```text
//! daemon process
//!   ROOT/lazy/PID/0 .. N-1   one read-only LazyFs mount per layer (bottom = 0)
//!   MNT                      the ordinary union (src/overlay) with those as lowerdirs
//!   prefetch thread          a normal `pull` of the image; when it is stored, each LazyFs
//!                            reads from the extracted layer (no more requests)
//! ```
//!
//! A layer without a TOC (plain gzip or zstd) cannot be read lazily: the image is pulled in
//! full (with progress) and its stored layers are mounted, and the output says so.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::chunks::{ChunkCache, Codec, LayerSource};
use super::fs::LazyFs;
use super::priority::ReadLog;
use super::remote::Remote;
use super::tree::Tree;
use crate::digest::Digest;
use crate::image::oci::{Descriptor, ImageConfig, Platform, chain_ids};
use crate::image::tarentry::{Meta, Mtime};
use crate::image::toc::TocChunk;
use crate::image::{chunked, estargz};
use crate::mountopts::MountOptions;
use crate::overlay::{self, Overlay};
use crate::reference::Reference;
use crate::registry::auth::AuthFiles;
use crate::registry::challenge::repo_scope;
use crate::registry::client::{Client, ClientOptions};
use crate::registry::pull::{PullOptions, fetch_config, pull, resolve};
use crate::store::{LockMode, Store};
use crate::{Error, Result, sys};

/// A layer ready to mount: its tree and where its pieces come from.
pub struct LazyLayer {
    pub tree: Tree,
    pub source: Arc<LayerSource>,
}

/// What `open_image` found.
pub enum Opened {
    Lazy {
        layers: Vec<LazyLayer>,
        diff_ids: Vec<Digest>,
        remote: Arc<Remote>,
    },
    /// Some layer has no TOC: its digest.
    NoToc(Digest),
}

/// What `mount --lazy` was asked.
#[derive(Clone, Debug)]
pub struct LazyOptions {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
    pub reference: String,
    pub mountpoint: PathBuf,
    pub tls_verify: bool,
    /// Pull the whole image in the background (after the pieces read first last time).
    pub prefetch: bool,
}

/// `layerfs mount --lazy`; `root` is the store root.
pub fn mount_command(root: &Path, o: &LazyOptions) -> Result<()> {
    let root = root.to_path_buf();
    let r = Reference::parse(&o.reference)?;
    let mnt = crate::daemon::absolute(&o.mountpoint)?;
    if !mnt.is_dir() {
        return Err(Error::Usage(format!(
            "mount point {} is not a directory (create it with mkdir -p)",
            mnt.display()
        )));
    }
    let client_opts = ClientOptions {
        tls_verify: o.tls_verify,
        timeout: Some(super::remote::response_timeout()),
    };
    let started = Instant::now();
    match open_image(&root, &r, &client_opts)? {
        Opened::NoToc(layer) => fall_back(&root, &r, &client_opts, &layer, &mnt),
        Opened::Lazy {
            layers,
            diff_ids,
            remote,
        } => {
            let toc_bytes = remote
                .stats
                .bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "Mounted {} lazily: {} layer(s), tables of contents {} bytes, {:.2}s",
                r.familiar(),
                layers.len(),
                toc_bytes,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
            let job = Prefetch {
                root: root.clone(),
                reference: r.clone(),
                client: client_opts.clone(),
                diff_ids,
            };
            daemonize(&root, layers, &mnt, job, o.prefetch)
        }
    }
}

/// Connects, resolves the manifest, fetches the config and every layer's TOC.
pub fn open_image(root: &Path, r: &Reference, opts: &ClientOptions) -> Result<Opened> {
    let creds = AuthFiles::from_env().lookup(&r.registry)?;
    let client = Arc::new(Client::connect(&r.registry, creds, opts)?);
    let scope = repo_scope(&r.repository, false);
    let shown = r.familiar();
    let res = resolve(&client, r, &scope, &Platform::host())?;
    let config = {
        let store = Store::open(root, LockMode::Shared)?;
        fetch_config(
            &client,
            &store,
            &r.repository,
            &scope,
            &res.manifest,
            &shown,
        )?
    };
    let cfg = ImageConfig::parse(&config, &format!("{shown}: config"))?;
    let diff_ids = cfg.rootfs.diff_ids.clone();
    if diff_ids.len() != res.manifest.layers.len() {
        return Err(Error::Format(format!(
            "{shown}: the manifest lists {} layers, the config {}",
            res.manifest.layers.len(),
            diff_ids.len()
        )));
    }
    if let Some(plain) = res.manifest.layers.iter().find(|l| codec_of(l).is_none()) {
        return Ok(Opened::NoToc(plain.digest.clone()));
    }
    let remote = Arc::new(Remote {
        client,
        repository: r.repository.clone(),
        scope,
        stats: Default::default(),
    });
    let cache = Arc::new(ChunkCache::open(root)?);
    let mut layers: Vec<LazyLayer> = Vec::new();
    for (i, desc) in res.manifest.layers.iter().enumerate() {
        let what = format!("{shown}: layer {} ({})", i + 1, desc.digest.short());
        let (codec, toc, extra) = fetch_toc(&remote, desc, &what)?;
        let lowers: Vec<&Tree> = layers.iter().rev().map(|l| &l.tree).collect();
        let mut tree = Tree::build(&toc, &lowers, &what)?;
        if let Some((json, meta)) = extra {
            tree.add_inline(estargz::TOC_NAME, json, meta);
        }
        let source = Arc::new(LayerSource::new(
            desc.digest.clone(),
            codec,
            Arc::clone(&remote),
            Arc::clone(&cache),
        ));
        layers.push(LazyLayer { tree, source });
    }
    Ok(Opened::Lazy {
        layers,
        diff_ids,
        remote,
    })
}

fn codec_of(d: &Descriptor) -> Option<Codec> {
    if chunked::toc_position(&d.annotations).is_some() {
        Some(Codec::Zstd)
    } else if d.annotations.contains_key(estargz::TOC_DIGEST) {
        Some(Codec::Gzip)
    } else {
        None
    }
}

type TocFile = Option<(Vec<u8>, Meta)>;

/// A layer's TOC, verified against the manifest's annotation; for eStargz also the TOC file
/// itself (a full pull extracts it too).
fn fetch_toc(
    remote: &Remote,
    d: &Descriptor,
    what: &str,
) -> Result<(Codec, crate::image::toc::Toc, TocFile)> {
    if let Some((off, len, ulen, sum)) = chunked::toc_position(&d.annotations) {
        let packed = remote.range(&d.digest, off, off + len)?;
        check(&packed, &sum, what)?;
        return Ok((Codec::Zstd, chunked::parse_toc(&packed, ulen, what)?, None));
    }
    let want = d
        .annotations
        .get(estargz::TOC_DIGEST)
        .map(|s| Digest::parse(s))
        .transpose()?
        .ok_or_else(|| Error::Format(format!("{what}: no TOC annotation")))?;
    if d.size < estargz::FOOTER_LEN {
        return Err(Error::Format(format!("{what}: too small for eStargz")));
    }
    let foot_at = d.size - estargz::FOOTER_LEN;
    let footer = remote.range(&d.digest, foot_at, d.size)?;
    let toc_at = estargz::parse_footer(&footer)
        .filter(|&o| o < foot_at)
        .ok_or_else(|| Error::Format(format!("{what}: no eStargz footer")))?;
    let member = remote.range(&d.digest, toc_at, foot_at)?;
    let (json, hdr) = estargz::toc_member(&member, what)?;
    check(&json, &want, what)?;
    let toc = estargz::parse_toc(&json, toc_at, what)?;
    let h = tar::Header::from_byte_slice(&hdr);
    let meta = Meta {
        mode: h.mode().unwrap_or(0o644) & 0o7777,
        uid: h
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0),
        gid: h
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0),
        mtime: Mtime {
            sec: h
                .mtime()
                .ok()
                .and_then(|t| i64::try_from(t).ok())
                .unwrap_or(0),
            nsec: 0,
        },
        xattrs: Vec::new(),
    };
    Ok((Codec::Gzip, toc, Some((json, meta))))
}

fn check(bytes: &[u8], want: &Digest, what: &str) -> Result<()> {
    let got = Digest::of(bytes);
    if &got != want {
        return Err(Error::DigestMismatch {
            what: format!("{what}: table of contents"),
            expected: want.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}

/// A layer without a TOC: a normal pull, then the stored image's layers are mounted.
fn fall_back(
    root: &Path,
    r: &Reference,
    client: &ClientOptions,
    layer: &Digest,
    mnt: &Path,
) -> Result<()> {
    eprintln!(
        "layer {} of {} has no table of contents (plain gzip or zstd, not zstd:chunked or \
         eStargz): pulling the image in full, then mounting it",
        layer.short(),
        r.familiar()
    );
    let store = Store::open(root, LockMode::Shared)?;
    let opts = PullOptions {
        client: client.clone(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..PullOptions::default()
    };
    let creds = AuthFiles::from_env().lookup(&r.registry)?;
    let pulled = pull(&store, r, creds, &opts, &mut std::io::stderr())?;
    let img = store.image(&pulled.id)?;
    let lowers = store.lowerdirs(&img);
    drop(store);
    let opts = union_options(&lowers)?;
    crate::daemon::mount_overlay(&opts, mnt, false, false)
}

fn union_options(lowers: &[PathBuf]) -> Result<MountOptions> {
    let mut s = String::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let p = l
            .to_str()
            .ok_or_else(|| Error::Usage(format!("{}: not UTF-8", l.display())))?;
        s.push_str(
            &p.replace('\\', "\\\\")
                .replace(':', "\\:")
                .replace(',', "\\,"),
        );
    }
    MountOptions::parse(&[s, "fsname=layerfs-lazy".to_string()])
}

/// What the background pull needs.
pub struct Prefetch {
    root: PathBuf,
    reference: Reference,
    client: ClientOptions,
    diff_ids: Vec<Digest>,
}

impl Prefetch {
    /// Fetches the pieces the last mount read first, pulls the image, then points each layer
    /// at its extracted directory.
    fn run(self, handles: Arc<Vec<Handle>>) {
        for h in handles.iter() {
            let list = super::priority::load(&self.root, &h.source.blob);
            for d in &list {
                if let Some(c) = h.pieces.get(d)
                    && let Err(e) = h.source.ensure(c)
                {
                    log::warn!("prefetch of piece {}: {e}", d.short());
                    break;
                }
            }
        }
        let r = (|| -> Result<()> {
            let store = Store::open(&self.root, LockMode::Shared)?;
            let creds = AuthFiles::from_env().lookup(&self.reference.registry)?;
            let opts = PullOptions {
                client: self.client.clone(),
                ..PullOptions::default()
            };
            pull(&store, &self.reference, creds, &opts, &mut std::io::sink())?;
            for (chain, h) in chain_ids(&self.diff_ids).iter().zip(handles.iter()) {
                let dir = crate::image::unpack::open_layer_root(&store.layer_diff(chain))?;
                let _ = h.local.set(dir);
            }
            super::status::mark_prefetched(&self.root);
            log::info!("prefetch: {} is stored; reads are local", self.reference);
            Ok(())
        })();
        if let Err(e) = r {
            log::warn!(
                "prefetch of {} failed (reads stay lazy): {e}",
                self.reference
            );
        }
    }
}

fn layer_config() -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        fuser::MountOption::FSName("layerfs-lazy-layer".into()),
        fuser::MountOption::Subtype("layerfs".into()),
        fuser::MountOption::RO,
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    c.n_threads = Some(4);
    c
}

/// Forks the daemon; returns once the union is live (or with the daemon's error).
fn daemonize(
    root: &Path,
    layers: Vec<LazyLayer>,
    mnt: &Path,
    job: Prefetch,
    prefetch: bool,
) -> Result<()> {
    let (rd, wr) = rustix::pipe::pipe().map_err(|e| Error::io("pipe", "", e.into()))?;
    // fork is sound only while single-threaded, which holds here: the TOCs were fetched on this
    // thread and the FUSE sessions and the prefetch thread start in the child.
    #[allow(unsafe_code)]
    // SAFETY: the process is single-threaded at this point (see above).
    let forked = unsafe { sys::fork() };
    match forked.map_err(|e| Error::io("fork", "", e.into()))? {
        None => {
            drop(rd);
            let _ = rustix::process::setsid();
            let status = std::fs::File::from(wr);
            let code = match serve(root, layers, mnt, job, prefetch, status) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        Some(child) => {
            drop(wr);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            if msg == "ok" {
                return Ok(());
            }
            let _ = sys::wait_pid_exit(child, 1000);
            if msg.is_empty() {
                msg = "the daemon exited before the mount was live".into();
            }
            Err(Error::Usage(format!("mount {}: {msg}", mnt.display())))
        }
    }
}

/// What the daemon keeps of each mounted layer.
pub struct Handle {
    local: Arc<OnceLock<OwnedFd>>,
    log: Arc<parking_lot::Mutex<ReadLog>>,
    source: Arc<LayerSource>,
    /// Piece digest -> where it is (to fetch a priority list).
    pieces: HashMap<Digest, TocChunk>,
}

/// The mounted layers and the union over them.
struct Stack {
    sessions: Vec<fuser::BackgroundSession>,
    base: PathBuf,
    ov: Arc<Overlay>,
    opts: MountOptions,
    handles: Arc<Vec<Handle>>,
}

/// In the daemon: mounts the layers, starts the prefetch, serves the union until unmounted.
fn serve(
    root: &Path,
    layers: Vec<LazyLayer>,
    mnt: &Path,
    job: Prefetch,
    prefetch: bool,
    mut status: std::fs::File,
) -> Result<()> {
    let base = root.join("lazy").join(std::process::id().to_string());
    let pins = super::gc::pin(
        root,
        layers
            .iter()
            .flat_map(|l| l.tree.chunks())
            .map(|c| &c.digest),
    );
    let shown = job.reference.to_string();
    let status_file = super::status::write(root, &shown, mnt, &job.diff_ids, &layers).ok();
    let stack = match mount_layers(&base, layers) {
        Ok(s) => s,
        Err(e) => {
            let _ = status.write_all(e.to_string().as_bytes());
            let _ = std::fs::remove_dir_all(&base);
            return Err(e);
        }
    };
    let Stack {
        sessions,
        base,
        ov,
        opts,
        handles,
    } = stack;
    if prefetch {
        let h = Arc::clone(&handles);
        std::thread::spawn(move || job.run(h));
    }
    let run = match crate::daemon::RunDir::open() {
        Ok(r) => r,
        Err(e) => {
            let _ = status.write_all(e.to_string().as_bytes());
            return Err(e);
        }
    };
    let r = crate::daemon::serve(ov, &opts, mnt, &run, Some(status));
    for s in sessions {
        let _ = s.umount_and_join();
    }
    for h in handles.iter() {
        super::priority::save(root, &h.source.blob, &h.log.lock().order);
    }
    let _ = std::fs::remove_dir_all(&base);
    if let Ok(p) = pins {
        super::gc::unpin(&p);
    }
    if let Some(p) = status_file {
        let _ = std::fs::remove_file(p);
    }
    r
}

/// Layer mounts left by a daemon that was killed (`ROOT/lazy/PID/N` of a dead PID): detached
/// and removed, so they do not pile up.
fn sweep_stale(lazy_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(lazy_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(layers) = std::fs::read_dir(e.path()) {
            for l in layers.flatten() {
                let _ = rustix::mount::unmount(l.path(), rustix::mount::UnmountFlags::DETACH);
            }
        }
        log::info!("removing the layer mounts of dead lazy daemon {pid}");
        let _ = std::fs::remove_dir_all(e.path());
    }
}

fn mount_layers(base: &Path, layers: Vec<LazyLayer>) -> Result<Stack> {
    if let Some(parent) = base.parent() {
        sweep_stale(parent);
    }
    let mut sessions = Vec::new();
    let mut dirs = Vec::new();
    let mut handles = Vec::new();
    for (i, l) in layers.into_iter().enumerate() {
        let dir = base.join(i.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let pieces = l
            .tree
            .chunks()
            .map(|c| (c.digest.clone(), c.clone()))
            .collect();
        let fs = LazyFs::new(l.tree, Arc::clone(&l.source));
        handles.push(Handle {
            local: Arc::clone(&fs.local),
            log: Arc::clone(&fs.log),
            source: l.source,
            pieces,
        });
        let s = fuser::Session::new(fs, &dir, &layer_config())
            .and_then(|s| s.spawn())
            .map_err(|e| Error::io("mount", &dir, e))?;
        sessions.push(s);
        dirs.push(dir);
    }
    let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
    let opts = union_options(&lowers)?;
    let ov = Arc::new(Overlay::new(&overlay::Config {
        lowers,
        upper: None,
        work: None,
        userxattr: false,
        // Read-only: nothing is renamed (lower redirects are followed all the same).
        redirect_dir: false,
        fsync: true,
        ownership: Default::default(),
        quirks: Default::default(),
    })?);
    Ok(Stack {
        sessions,
        base: base.to_owned(),
        ov,
        opts,
        handles: Arc::new(handles),
    })
}
