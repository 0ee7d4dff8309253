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
        let mode = MountMode {
            foreground: args.foreground,
            debug: args.debug,
            read_only: args.read_only,
        };
        if let Some(id) = cmount::mount(root, &target.to_string_lossy(), mnt, opts, mode)? {
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
    daemon::mount_overlay(&opts, mountpoint, args.foreground || debug, debug)
}

/// `layerfs umount MOUNTPOINT-or-CONTAINER`.
pub fn umount(args: &UmountArgs, root: &Path) -> Result<()> {
    cmount::umount(root, &args.mountpoint)
}
