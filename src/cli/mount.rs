//! `layerfs mount` and `layerfs umount`: a plain union (`-o lowerdir=...`) goes to the daemon,
//! an image or a container to the container module.
use std::path::{Path, PathBuf};

use clap::Args;

use crate::container::mount::{self as cmount, MountMode};
use crate::daemon;
use crate::mountopts::MountOptions;
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Mount options, comma separated (repeatable): lowerdir, upperdir, workdir and FUSE options
    #[arg(short = 'o', action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Stay in the foreground
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Log every request (implies -f)
    #[arg(short = 'd')]
    pub debug: bool,
    /// Mount an image's layers read-only, without a container
    #[arg(long)]
    pub read_only: bool,
    /// Mounting an image makes a container; remove it (and what it wrote) at umount
    #[arg(long = "rm", conflicts_with = "read_only")]
    pub remove: bool,
    #[command(flatten)]
    pub lazy: super::lazy::LazyArgs,
    /// [SOURCE|IMAGE|CONTAINER] MOUNTPOINT
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point, or a container (name or ID prefix)
    pub mountpoint: PathBuf,
}

/// `layerfs mount`; `root` is the store root (for an image or a container).
pub fn mount(args: &MountArgs, root: &Path) -> Result<()> {
    if args.lazy.lazy {
        return super::lazy::mount(args, root);
    }
    let opts = MountOptions::parse(&args.options)?;
    let debug = args.debug || opts.debug;
    // `mount IMAGE-or-CONTAINER MNT`: no lowerdir, two operands.
    if opts.lowerdirs.is_empty()
        && let [target, mnt] = args.args.as_slice()
    {
        warn_if_not_empty(mnt, &args.options);
        let mode = MountMode {
            foreground: args.foreground,
            debug: args.debug,
            read_only: args.read_only,
            remove: args.remove,
        };
        let target = target.to_string_lossy();
        if let Some(id) = cmount::mount(root, &target, mnt, opts, mode)? {
            // The container outlives the mount unless --rm: say so, so none piles up unseen.
            if args.remove {
                eprintln!("layerfs: mounted {target} through a new container, removed at umount");
            } else {
                eprintln!(
                    "layerfs: mounted {target} through a new container {}; it keeps its changes \
                     after umount (layerfs ps -a lists it, layerfs rm removes it; --rm removes \
                     it at umount)",
                    id.short()
                );
            }
            println!("{id}");
        }
        return Ok(());
    }
    let Some(mountpoint) = args.args.last() else {
        return Err(Error::Usage("mount: give the mount point".into()));
    };
    if opts.lowerdirs.is_empty() {
        return Err(Error::Usage(
            "mount: give -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR] MOUNTPOINT".into(),
        ));
    }
    warn_if_not_empty(mountpoint, &args.options);
    daemon::mount_overlay(&opts, mountpoint, args.foreground || debug, debug)
}

/// Mounting over a directory hides what it holds until umount; say so unless `-o nonempty`
/// (which, as with mount.fuse, says the user knows).
fn warn_if_not_empty(mnt: &Path, options: &[String]) {
    let nonempty = options
        .iter()
        .any(|o| o.split(',').any(|w| w == "nonempty"));
    if nonempty {
        return;
    }
    if let Ok(mut rd) = std::fs::read_dir(mnt)
        && rd.next().is_some()
    {
        eprintln!(
            "layerfs: warning: {} is not empty: its files are hidden while the mount is there \
             (-o nonempty silences this)",
            mnt.display()
        );
    }
}

/// `layerfs umount MOUNTPOINT-or-CONTAINER`.
pub fn umount(args: &UmountArgs, root: &Path) -> Result<()> {
    cmount::umount(root, &args.mountpoint)
}
