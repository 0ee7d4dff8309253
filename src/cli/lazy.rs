//! Command-line arguments of lazy mounts and seekable layer formats (issue 16), kept apart from
//! the other clap types so they can move with them.
use clap::Args;

use crate::store::convert::SeekableFormat;

/// `--compression` of `push` and `save`.
#[derive(Debug, Args, Default, Clone)]
pub struct SeekableArg {
    /// Re-compress the layers into a seekable format with a table of contents, readable by
    /// every client and mountable lazily: zstd:chunked or estargz (default: send the layers
    /// as stored)
    #[arg(long = "compression", value_name = "FORMAT", value_parser = parse_format)]
    pub compression: Option<SeekableFormat>,
}

fn parse_format(s: &str) -> Result<SeekableFormat, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

/// `mount --lazy` and its options.
#[derive(Debug, Args, Default, Clone)]
pub struct LazyArgs {
    /// Mount REGISTRY/REPOSITORY[:TAG] straight from the registry: only the tables of contents
    /// are fetched before the mount is live; file data comes on first read
    #[arg(long)]
    pub lazy: bool,
    /// With --lazy: do not pull the whole image in the background
    #[arg(long, requires = "lazy")]
    pub no_prefetch: bool,
    /// With --lazy: reach the registry over plain HTTP or without checking its certificate
    #[arg(long, requires = "lazy", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
}

/// `mount --lazy REFERENCE MOUNTPOINT`.
pub fn mount(args: &super::mount::MountArgs, root: &std::path::Path) -> crate::Result<()> {
    let [reference, mnt] = args.args.as_slice() else {
        return Err(crate::Error::Usage(
            "mount --lazy REGISTRY/REPOSITORY[:TAG] MOUNTPOINT".into(),
        ));
    };
    let opts = crate::lazy::mount::LazyOptions {
        reference: reference.to_string_lossy().into_owned(),
        mountpoint: mnt.clone(),
        tls_verify: args.lazy.tls_verify,
        prefetch: !args.lazy.no_prefetch,
    };
    crate::lazy::mount::mount_command(root, &opts)
}
