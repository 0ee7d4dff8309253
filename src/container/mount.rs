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
use std::path::{Path, PathBuf};

use super::record::{ContainerRecord, Containers};
use crate::cli::MountArgs;
use crate::daemon;
use crate::mountopts::MountOptions;
use crate::store::{ImageRecord, LockMode, Store};
use crate::{Error, Result};

/// The FUSE source name of a container's mounts.
pub fn fsname(rec: &ContainerRecord) -> String {
    format!("layerfs-{}", rec.id)
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Parses mountinfo text (pure, for tests).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountInfo {
                mountpoint: PathBuf::from(unescape(f.get(4)?)),
                fstype: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

pub fn mounts() -> Vec<MountInfo> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Where a container is mounted now (live or stale), per the mount table.
pub fn mounts_of(rec: &ContainerRecord) -> Vec<PathBuf> {
    let name = fsname(rec);
    mounts()
        .into_iter()
        .filter(|m| m.fstype.starts_with("fuse") && m.source == name)
        .map(|m| m.mountpoint)
        .collect()
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

/// `layerfs mount IMAGE-or-CONTAINER MNT [--read-only] [-o FUSE options]`.
pub fn mount_command(root: Option<&Path>, args: &MountArgs, opts: MountOptions) -> Result<()> {
    refuse_layer_options(&opts)?;
    let (target, mnt) = match args.args.as_slice() {
        [t, m] => (t.to_string_lossy().into_owned(), m.clone()),
        _ => {
            return Err(Error::Usage(
                "mount: give IMAGE-or-CONTAINER MOUNTPOINT, or -o lowerdir=... MOUNTPOINT".into(),
            ));
        }
    };
    let root = root.map_or_else(Store::default_root, Path::to_path_buf);
    let store = Store::open(&root, LockMode::Shared)?;
    let foreground = args.foreground || args.debug;
    match resolve_target(&store, &target)? {
        Target::Image(img, _) if args.read_only => {
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
            daemon::mount_overlay(&o, &mnt, foreground, args.debug)
        }
        Target::Image(img, shown) => {
            let rec = Containers::new(&store).create(&img, &shown, None)?;
            match mount_container(store, &rec, opts, &mnt, foreground, args.debug, false) {
                Ok(()) => {
                    println!("{}", rec.id);
                    Ok(())
                }
                Err(e) => {
                    // Nothing was written to the new container: don't leave it behind.
                    if let Ok(store) = Store::open(&root, LockMode::Shared) {
                        let _ = Containers::new(&store).remove(&rec);
                    }
                    Err(e)
                }
            }
        }
        Target::Container(rec) => mount_container(
            store,
            &rec,
            opts,
            &mnt,
            foreground,
            args.debug,
            args.read_only,
        ),
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

/// `layerfs umount MOUNTPOINT-or-CONTAINER`.
pub fn umount_command(root: Option<&Path>, arg: &Path) -> Result<()> {
    let root = root.map_or_else(Store::default_root, Path::to_path_buf);
    let mnt = daemon::absolute(arg)?;
    if daemon::mount_type(&mnt).is_some() {
        daemon::umount(&mnt)?;
        // Best effort: a plain union or an image mount has no record to update.
        if root.join("containers").is_dir()
            && let Ok(store) = Store::open(&root, LockMode::Shared)
        {
            let cs = Containers::new(&store);
            for mut r in cs.list().unwrap_or_default() {
                if r.mountpoint.as_deref() == Some(&mnt) {
                    r.mountpoint = None;
                    cs.update(&r)?;
                }
            }
        }
        return Ok(());
    }
    let name = arg.to_string_lossy();
    let store = Store::open(&root, LockMode::Shared)?;
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
    cs.update(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - fuse layerfs-abc rw,user_id=0\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].fstype, "fuse");
        assert_eq!(m[0].source, "layerfs-abc");
        assert_eq!(m[1].fstype, "proc");
    }

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
