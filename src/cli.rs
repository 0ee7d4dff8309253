//! Command-line types (clap derive) and dispatch. Parsing only: the work is done by the modules.
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::Result;

pub mod lazy;

#[derive(Debug, Parser)]
#[command(
    name = "layerfs",
    version,
    about = "Copy-on-write layered filesystem, image store and containers"
)]
pub struct Cli {
    /// Store root (default /var/lib/layerfs for root, $XDG_DATA_HOME/layerfs otherwise)
    #[arg(long, global = true, env = "LAYERFS_ROOT")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a layered tree: `-o lowerdir=A:B,upperdir=U,workdir=W MNT`, or an image/container
    Mount(MountArgs),
    /// Unmount a layerfs mount, wait for its daemon, clear a stale mount
    Umount(UmountArgs),
    #[command(flatten)]
    Store(crate::store::commands::StoreCommand),
    #[command(flatten)]
    Container(crate::container::commands::ContainerCommand),
    /// Measure copy-on-write behaviour against kernel overlayfs, fuse-overlayfs and a plain copy
    Bench(Box<crate::bench::BenchArgs>),
    #[command(flatten)]
    Registry(crate::registry::commands::RegistryCommand),
}

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
    pub lazy: lazy::LazyArgs,
    /// [SOURCE|IMAGE|CONTAINER] MOUNTPOINT
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point, or a container (name or ID prefix)
    pub mountpoint: PathBuf,
}

/// Names clap dispatches on; any other first argument means fuse-overlayfs's argv form
/// (`layerfs -o OPTS MNT` or `layerfs SOURCE MNT -o OPTS`), which is `mount`.
const SUBCOMMANDS: &[&str] = &[
    "mount", "umount", "help", // driver
    "load", "images", "inspect", "history", "tag", "rmi", "prune", "df", // store
    "bench", "pull", "push", "login", "logout", // registry
];

/// Rewrites fuse-overlayfs / mount.fuse3 style argv into `layerfs mount ...`.
pub fn normalize_argv(mut argv: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = argv.get(1).and_then(|a| a.to_str()) else {
        return argv;
    };
    let is_meta = matches!(first, "-h" | "--help" | "-V" | "--version" | "--root")
        || first.starts_with("--root=");
    let known = SUBCOMMANDS.contains(&first) || crate::container::commands::NAMES.contains(&first);
    if !is_meta && !known {
        argv.insert(1, OsString::from("mount"));
    }
    argv
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Mount(args) => crate::daemon::mount_command(&args, cli.root.as_deref()),
        Command::Umount(args) => {
            crate::container::mount::umount_command(cli.root.as_deref(), &args.mountpoint)
        }
        Command::Store(cmd) => crate::store::commands::run(cli.root.as_deref(), cmd),
        Command::Container(cmd) => crate::container::commands::run(cli.root.as_deref(), cmd),
        Command::Bench(args) => crate::bench::command(&args, cli.root.as_deref()),
        Command::Registry(cmd) => crate::registry::commands::run(cli.root.as_deref(), cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[&str]) -> Vec<String> {
        normalize_argv(v.iter().map(OsString::from).collect())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn fuse_overlayfs_argv_forms_become_mount() {
        assert_eq!(
            norm(&["layerfs", "-o", "lowerdir=a", "m"]),
            ["layerfs", "mount", "-o", "lowerdir=a", "m"]
        );
        assert_eq!(
            norm(&["layerfs", "src", "m", "-o", "x"]),
            ["layerfs", "mount", "src", "m", "-o", "x"]
        );
        assert_eq!(
            norm(&["layerfs", "umount", "m"]),
            ["layerfs", "umount", "m"]
        );
        assert_eq!(norm(&["layerfs", "--help"]), ["layerfs", "--help"]);
    }
}
