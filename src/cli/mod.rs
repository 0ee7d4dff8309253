//! The command layer: every clap type and every command's entry point. Each command parses its
//! arguments, calls a library module with plain option structs, and prints what comes back
//! (tables, JSON); `main.rs` maps the error to an exit code. Nothing below `cli` knows clap.
//!
//! ```text
//! mod.rs        Cli, Command, fuse-overlayfs argv forms, dispatch
//! mount.rs      mount, umount
//! store.rs      load, images, inspect, history, tag, rmi, prune, df
//! container.rs  create, ps, commit, save, export, rm
//! inspect.rs    diff, layers, efficiency, explore (inspect/explore.rs: its ratatui front end)
//! registry.rs   pull, push, login, logout
//! bench.rs      bench
//! system.rs     version, info
//! fsck.rs       fsck [--repair] [--deep]
//! generate.rs   man pages and shell completions (hidden `generate`, for packagers)
//! output.rs     tables, times, --format json as the listings print them
//! template.rs   --format templates (Go text/template style)
//! ```
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

use crate::store::Store;
use crate::{Error, Result};

pub mod bench;
pub mod container;
pub mod fsck;
pub mod generate;
pub mod inspect;
pub mod lazy;
pub mod mount;
pub mod output;
pub mod registry;
pub mod store;
pub mod system;
pub mod template;

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
    Mount(mount::MountArgs),
    /// Unmount a layerfs mount, wait for its daemon, clear a stale mount
    Umount(mount::UmountArgs),
    #[command(flatten)]
    Store(store::StoreCommand),
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Measure copy-on-write behaviour against kernel overlayfs, fuse-overlayfs and a plain copy
    Bench(Box<bench::BenchArgs>),
    #[command(flatten)]
    Registry(registry::RegistryCommand),
    /// Show the version, the git commit, the FUSE protocol and whether passthrough is usable
    Version(system::VersionArgs),
    /// Show the store, the runtime directory and the kernel features layerfs sees
    Info(system::InfoArgs),
    #[command(flatten)]
    Inspect(inspect::InspectCommand),
    /// Manage containers as a group (prune)
    #[command(name = "container", subcommand)]
    ContainerGroup(container::ContainerGroup),
    /// Store-wide housekeeping: prune, df
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Check the store's records, blobs and layers; --repair fixes what it can
    Fsck(fsck::FsckArgs),
    /// Write man pages or shell completions (for packagers)
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// Is `argv[1..]` one of fuse-overlayfs's forms, `-o ...lowerdir=... MNT` or
/// `SOURCE MNT -o OPTS` (what podman's mount_program and mount.fuse3 pass)? Recognised by
/// shape, and never when the first word is one of clap's subcommands (or their aliases).
fn is_fuse_overlayfs_form(args: &[OsString]) -> bool {
    let words: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let Some(first) = words.first() else {
        return false;
    };
    let cli = Cli::command();
    let is_subcommand = first.as_bytes().first().is_some_and(|b| *b != b'-')
        && (cli.find_subcommand(first).is_some() || *first == "help");
    if is_subcommand || first.starts_with("--") {
        return false;
    }
    let mut option_values = words.iter().enumerate().filter_map(|(i, w)| match *w {
        "-o" => words.get(i + 1).copied(),
        w => w.strip_prefix("-o").filter(|v| !v.is_empty()),
    });
    let lowerdir = option_values.any(|v| v.split(',').any(|o| o.starts_with("lowerdir=")));
    let source_mnt_o = matches!(words.as_slice(), [s, m, o, ..]
        if !s.starts_with('-') && !m.starts_with('-') && o.starts_with("-o"));
    lowerdir || source_mnt_o
}

/// Rewrites fuse-overlayfs / mount.fuse3 style argv into `layerfs mount ...`; anything else is
/// left to clap (a mistyped subcommand gets its "unrecognized subcommand" and a suggestion).
pub fn normalize_argv(mut argv: Vec<OsString>) -> Vec<OsString> {
    if argv.len() > 1 && is_fuse_overlayfs_form(&argv[1..]) {
        argv.insert(1, OsString::from("mount"));
    }
    argv
}

pub fn run(cli: Cli) -> Result<()> {
    let root = cli
        .root
        .as_deref()
        .map_or_else(Store::default_root, Path::to_path_buf);
    match cli.command {
        Command::Mount(args) => mount::mount(&args, &root),
        Command::Umount(args) => mount::umount(&args, &root),
        Command::Store(cmd) => store::run(&root, cmd),
        Command::Container(cmd) => container::run(&root, cmd),
        Command::Bench(args) => bench::run(&args, &root),
        Command::Registry(cmd) => registry::run(&root, cmd),
        Command::Version(a) => system::version(&a, &mut std::io::stdout().lock()),
        Command::Info(a) => system::info(&root, &a, &mut std::io::stdout().lock()),
        Command::Fsck(a) => fsck::run(&root, &a),
        Command::Inspect(cmd) => inspect::run(&root, cmd),
        Command::Generate(cmd) => generate::run(cmd),
        Command::ContainerGroup(cmd) => container::container_group(&root, cmd),
        Command::System(cmd) => system::system(&root, cmd),
    }
}

/// The exit status for a failed command, as README documents it: 1 the request was refused
/// (a check on what was asked failed), 3 bad input data, 4 a registry failed or refused, 5 a
/// system call or I/O failed, 130 interrupted. (2 is clap's: the command line did not parse.)
/// Exhaustive on purpose: a new variant must decide.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Sys(rustix::io::Errno::INTR) => 130,
        Error::Usage(_) => 1,
        Error::Format(_) | Error::DigestMismatch { .. } => 3,
        Error::Registry(_) | Error::Auth(_) => 4,
        Error::Sys(_) | Error::Io { .. } => 5,
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
        for argv in [
            &["layerfs", "-o", "lowerdir=a", "m"][..],
            &["layerfs", "-o", "rw,lowerdir=a,upperdir=u", "m"],
            &["layerfs", "-olowerdir=a", "m"],
            &["layerfs", "-f", "-o", "lowerdir=a", "m"],
            &["layerfs", "src", "m", "-o", "x"],
            &["layerfs", "layerfs", "/mnt/m", "-o", "rw,lowerdir=a:b"],
        ] {
            let mut want = vec!["layerfs", "mount"];
            want.extend_from_slice(&argv[1..]);
            assert_eq!(norm(argv), want, "{argv:?}");
        }
    }

    #[test]
    fn subcommands_typos_and_meta_options_are_left_to_clap() {
        for argv in [
            &["layerfs", "umount", "m"][..],
            &["layerfs", "mount", "-o", "lowerdir=a", "m"],
            &["layerfs", "images"],
            &["layerfs", "imgaes"],
            &["layerfs", "alpine", "/mnt"],
            &["layerfs", "--help"],
            &["layerfs", "-h"],
            &["layerfs", "--root", "/r", "images"],
            &["layerfs", "help", "mount"],
            &["layerfs"],
        ] {
            assert_eq!(norm(argv), argv, "{argv:?}");
        }
    }

    #[test]
    fn every_subcommand_parses_its_help() {
        for sub in Cli::command().get_subcommands() {
            let e = Cli::try_parse_from(["layerfs", sub.get_name(), "--help"]).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp,
                "{}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn a_mistyped_subcommand_is_a_usage_error_with_a_suggestion() {
        let e = Cli::try_parse_from(normalize_argv(
            ["layerfs", "imgaes"].iter().map(OsString::from).collect(),
        ))
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidSubcommand);
        let text = e.to_string();
        assert!(
            text.contains("'imgaes'") && text.contains("'images'"),
            "{text}"
        );
    }
}
