//! `layerfs mount IMAGE-or-CONTAINER MNT` and `layerfs umount MNT-or-CONTAINER`.
//!
//! A container's mount is the overlay driver over the image's layers with the container's
//! `upper/` and `work/`, named `fsname=layerfs-ID` so `/proc/self/mountinfo` tells which
//! container a mount serves (the record's `mountpoint` is only a hint; a daemon killed with -9
//! leaves a stale mount that still shows there).
//!
//! One writer at a time: before the daemon forks, the container's `mount.lock` is flocked
//! (exclusive for a writable mount, shared for `--read-only`) and the daemon inherits the lock,
//! holding it exactly as long as it lives. A second writable mount of the same container is
//! refused instead of sharing one upper directory between two daemons.
use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::ContainerId;
use super::record::{ContainerRecord, Containers};
use crate::daemon;
use crate::mountopts::MountOptions;
use crate::store::{ImageRecord, LockMode, Store};
use crate::{Error, Result, mountinfo};

/// The FUSE source name of a container's mounts.
pub fn fsname(rec: &ContainerRecord) -> String {
    format!("layerfs-{}", rec.id)
}

/// Where a container is mounted now (live or stale), per the mount table.
pub fn mounts_of(rec: &ContainerRecord) -> Vec<PathBuf> {
    let name = fsname(rec);
    mountinfo::read_mountinfo()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.fstype.starts_with("fuse") && m.source == name)
        .map(|m| m.mount_point)
        .collect()
}

/// A container as `ps` shows it: where it is mounted (per the mount table), and whether that
/// mount is stale (its daemon died).
#[derive(Debug, Clone)]
pub struct Status {
    pub rec: ContainerRecord,
    pub mountpoint: Option<PathBuf>,
    pub stale: bool,
}

/// Containers newest first with their mount state; only mounted ones unless `all`.
pub fn statuses(cs: &Containers<'_>, all: bool) -> Result<Vec<Status>> {
    let mut out = Vec::new();
    for rec in cs.list()?.into_iter().rev() {
        let mounts = mounts_of(&rec);
        if !all && mounts.is_empty() {
            continue;
        }
        let stale = !mounts.is_empty() && !cs.is_served(&rec.id)?;
        out.push(Status {
            mountpoint: mounts.into_iter().next(),
            rec,
            stale,
        });
    }
    Ok(out)
}

/// `ps --filter` (name=, id=, ancestor=IMAGE, status=mounted|unmounted|stale): each kind of
/// filter must match (docker: the same key repeated is an "or").
pub fn status_filter(store: &Store, filters: &[String]) -> Result<impl Fn(&Status) -> bool> {
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            return Err(Error::Usage(format!(
                "bad filter {f:?}: use KEY=VALUE (name, id, ancestor, status)"
            )));
        };
        match k {
            "name" | "id" | "status" => by_key.entry(k.into()).or_default().push(v.into()),
            "ancestor" => {
                let img = store.resolve(v)?;
                by_key.entry(k.into()).or_default().push(img.id.to_string());
            }
            _ => {
                return Err(Error::Usage(format!(
                    "unsupported filter {f:?}: use name=, id=, ancestor= or status="
                )));
            }
        }
    }
    Ok(move |st: &Status| {
        let state = match (&st.mountpoint, st.stale) {
            (None, _) => "unmounted",
            (Some(_), false) => "mounted",
            (Some(_), true) => "stale",
        };
        by_key.iter().all(|(k, vs)| {
            vs.iter().any(|v| match k.as_str() {
                "name" => st.rec.name.contains(v.as_str()),
                "id" => st.rec.id.as_str().starts_with(v.as_str()),
                "ancestor" => st.rec.image.as_str() == v,
                _ => state == v,
            })
        })
    })
}

/// `container prune` (and the first half of `system prune`): removes every container with no
/// live mount; returns the bytes their writable layers held. Each removed ID is written to `out`.
pub fn prune(store: &Store, out: &mut dyn Write) -> Result<u64> {
    let cs = Containers::new(store);
    let mut reclaimed = 0;
    let mut header = false;
    for st in statuses(&cs, true)? {
        if st.mountpoint.is_some() || cs.is_served(&st.rec.id)? {
            continue;
        }
        reclaimed += super::record::sizes(store, &cs, &st.rec).0;
        cs.remove(&st.rec)?;
        if !header {
            writeln!(out, "Deleted Containers:").map_err(|e| Error::io("write", "<stdout>", e))?;
            header = true;
        }
        writeln!(out, "{}", st.rec.id).map_err(|e| Error::io("write", "<stdout>", e))?;
    }
    Ok(reclaimed)
}

/// Lower directories of a container's image, top first.
pub fn lowerdirs(store: &Store, rec: &ContainerRecord) -> Vec<PathBuf> {
    rec.layers
        .iter()
        .rev()
        .map(|c| store.layer_diff(c))
        .collect()
}

fn refuse_layer_options(opts: &MountOptions) -> Result<()> {
    if opts.upperdir.is_some() || opts.workdir.is_some() {
        return Err(Error::Usage(
            "mount IMAGE-or-CONTAINER MNT: upperdir and workdir come from the container; \
             give either -o lowerdir=... (a plain union) or an image/container, not both"
                .into(),
        ));
    }
    Ok(())
}

/// What the first argument of `mount` names.
enum Target {
    Container(ContainerRecord),
    Image(ImageRecord, String),
}

fn resolve_target(store: &Store, s: &str) -> Result<Target> {
    let cs = Containers::new(store);
    match cs.find(s)? {
        Some(c) => {
            let by_prefix = c.id.as_str() != s && c.name != s;
            if by_prefix && let Ok(img) = store.resolve(s) {
                return Err(Error::Usage(format!(
                    "{s} is ambiguous: it is a prefix of container {} and of image {}; give more \
                     digits",
                    c.id.short(),
                    img.id.short()
                )));
            }
            Ok(Target::Container(c))
        }
        None => {
            let img = store.resolve(s).map_err(|_| {
                Error::Usage(format!(
                    "no such image or container: {s} (see `layerfs images` and `layerfs ps -a`)"
                ))
            })?;
            Ok(Target::Image(img, shown_image_name(s)))
        }
    }
}

/// How `ps` shows the image a container was made from.
pub fn shown_image_name(s: &str) -> String {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex.chars().take(12).collect();
    }
    crate::reference::Reference::parse(s).map_or_else(|_| s.to_string(), |r| r.familiar())
}

/// How to mount: in the foreground, logging every request, read-only.
#[derive(Clone, Copy, Debug, Default)]
pub struct MountMode {
    pub foreground: bool,
    pub debug: bool,
    pub read_only: bool,
    /// An image's new container is removed at `umount` (`--rm`).
    pub remove: bool,
}

/// `mount IMAGE-or-CONTAINER MNT`: mounts a container, or an image through a new container
/// (whose ID is returned), or with `read_only` an image's layers alone. `opts` holds the FUSE
/// options; the layers come from the store at `root`.
pub fn mount(
    root: &Path,
    target: &str,
    mnt: &Path,
    opts: MountOptions,
    mode: MountMode,
) -> Result<Option<ContainerId>> {
    refuse_layer_options(&opts)?;
    let store = Store::open(root, LockMode::Shared)?;
    let foreground = mode.foreground || mode.debug;
    match resolve_target(&store, target)? {
        Target::Image(img, _) if mode.read_only => {
            let mut o = opts;
            store.check_layers_present(&img)?;
            o.lowerdirs = store.lowerdirs(&img);
            if o.lowerdirs.is_empty() {
                return Err(Error::Usage(format!(
                    "image {target} has no layers to mount"
                )));
            }
            // The daemon must not inherit the store lock (it would block rmi while mounted).
            drop(store);
            daemon::mount_overlay(&o, mnt, foreground, mode.debug)?;
            Ok(None)
        }
        Target::Image(img, shown) => {
            let cs = Containers::new(&store);
            let mut rec = cs.create(&img, &shown, None)?;
            if mode.remove {
                rec.remove_at_umount = true;
                cs.update(&rec)?;
            }
            match mount_container(store, &rec, opts, mnt, foreground, mode.debug, false) {
                Ok(()) => Ok(Some(rec.id)),
                Err(e) => {
                    // Nothing was written to the new container: don't leave it behind.
                    if let Ok(store) = Store::open(root, LockMode::Shared) {
                        let _ = Containers::new(&store).remove(&rec);
                    }
                    Err(e)
                }
            }
        }
        Target::Container(_) if mode.remove => Err(Error::Usage(format!(
            "--rm applies to an image's new container; {target} is a container already: \
             remove it with layerfs rm after umount"
        ))),
        Target::Container(rec) => {
            mount_container(
                store,
                &rec,
                opts,
                mnt,
                foreground,
                mode.debug,
                mode.read_only,
            )?;
            Ok(None)
        }
    }
}

/// Mounts a container (writable, or read-only with its writable layer as the top lower).
pub fn mount_container(
    store: Store,
    rec: &ContainerRecord,
    mut opts: MountOptions,
    mnt: &Path,
    foreground: bool,
    debug: bool,
    read_only: bool,
) -> Result<()> {
    let mnt = daemon::absolute(mnt)?;
    let cs = Containers::new(&store);
    clear_stale_mounts(&cs, rec)?;
    let Some(lock) = cs.try_mount_lock(&rec.id, !read_only)? else {
        let at = mounts_of(rec)
            .first()
            .map_or("somewhere".into(), |p| p.display().to_string());
        return Err(Error::Usage(format!(
            "container {} ({}) is already mounted at {at}{}: unmount it first (layerfs umount {})",
            rec.name,
            rec.id.short(),
            if read_only { " read-write" } else { "" },
            rec.name
        )));
    };
    // `diff`, `commit` and `export` read the writable layer alone, and a read-only mount
    // makes it a lower layer: neither follows directory redirects yet, so a container's
    // layer never gets one (directory renames of image dirs give EXDEV, and tools copy).
    if opts.redirect_dir == Some(true) {
        return Err(Error::Usage(
            "mount option redirect_dir=on: not for containers yet (diff, commit and export \
             read the writable layer without following redirects); drop it"
                .into(),
        ));
    }
    opts.redirect_dir = Some(false);
    let mut lowers = lowerdirs(&store, rec);
    opts.fsname = Some(fsname(rec));
    if read_only {
        lowers.insert(0, cs.upper(&rec.id));
        opts.read_only = true;
    } else {
        opts.upperdir = Some(cs.upper(&rec.id));
        opts.workdir = Some(cs.work(&rec.id));
        let mut r = rec.clone();
        r.mountpoint = Some(mnt.clone());
        cs.update(&r)?;
    }
    opts.lowerdirs = lowers;
    if !crate::sys::is_host_root() {
        // An unprivileged store keeps true owners and modes in override xattrs (image/write.rs).
        opts.ownership.xattr_permissions = 2;
    }
    let root = store.root().to_path_buf();
    // The daemon forks from this process: it must inherit the mount lock, never the store lock.
    drop(cs);
    drop(store);
    let r = daemon::mount_overlay(&opts, &mnt, foreground, debug);
    drop(lock);
    if r.is_err() && !read_only {
        forget_mountpoint(&root, rec);
    }
    r
}

/// Unmounts mounts of `rec` whose daemon is gone (killed): they would only fail with ENOTCONN.
fn clear_stale_mounts(cs: &Containers<'_>, rec: &ContainerRecord) -> Result<()> {
    let stale = mounts_of(rec);
    if stale.is_empty() || cs.is_served(&rec.id)? {
        return Ok(());
    }
    for m in stale {
        eprintln!(
            "layerfs: clearing stale mount of container {} at {} (its daemon died)",
            rec.name,
            m.display()
        );
        daemon::umount(&m)?;
    }
    Ok(())
}

fn forget_mountpoint(root: &Path, rec: &ContainerRecord) {
    if let Ok(store) = Store::open(root, LockMode::Shared) {
        let cs = Containers::new(&store);
        if let Ok(Some(mut r)) = cs.find(rec.id.as_str()) {
            r.mountpoint = None;
            let _ = cs.update(&r);
        }
    }
}

/// `umount MOUNTPOINT-or-CONTAINER`: a mount point (any layerfs mount; a container's record
/// forgets it), or every mount of a container of the store at `root`.
pub fn umount(root: &Path, arg: &Path) -> Result<()> {
    let mnt = daemon::absolute(arg)?;
    if daemon::mount_type(&mnt).is_some() {
        daemon::umount(&mnt)?;
        // Best effort: a plain union or an image mount has no record to update.
        if root.join("containers").is_dir()
            && let Ok(store) = Store::open(root, LockMode::Shared)
        {
            let cs = Containers::new(&store);
            for mut r in cs.list().unwrap_or_default() {
                if r.mountpoint.as_deref() == Some(&mnt) {
                    r.mountpoint = None;
                    cs.update(&r)?;
                    if r.remove_at_umount && mounts_of(&r).is_empty() {
                        cs.remove(&r)?;
                    }
                }
            }
        }
        return Ok(());
    }
    let name = arg.to_string_lossy();
    let store = Store::open(root, LockMode::Shared)?;
    let cs = Containers::new(&store);
    let Some(rec) = cs.find(&name)? else {
        return Err(Error::Usage(format!(
            "{} is neither a mount point nor a container",
            mnt.display()
        )));
    };
    unmount_container(&cs, &rec)
}

/// Unmounts every mount of a container and clears its record's mountpoint.
pub fn unmount_container(cs: &Containers<'_>, rec: &ContainerRecord) -> Result<()> {
    let at = mounts_of(rec);
    if at.is_empty() {
        return Err(Error::Usage(format!(
            "container {} is not mounted",
            rec.name
        )));
    }
    for m in at {
        daemon::umount(&m)?;
    }
    let mut r = rec.clone();
    r.mountpoint = None;
    cs.update(&r)?;
    if r.remove_at_umount {
        cs.remove(&r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_for_ps() {
        assert_eq!(shown_image_name("alpine"), "alpine:latest");
        assert_eq!(shown_image_name("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(
            shown_image_name("sha256:0123456789abcdef0123"),
            "0123456789ab"
        );
        assert_eq!(shown_image_name("abcdef"), "abcdef");
    }
}
