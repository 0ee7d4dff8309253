//! `layerfs mount` / `layerfs umount`: start the FUSE daemon, return once the mount is live.
use std::path::Path;

use crate::cli::MountArgs;
use crate::{Error, Result};

pub fn mount_command(_args: &MountArgs) -> Result<()> {
    Err(Error::Usage("mount: not implemented yet".into()))
}

pub fn umount(_mountpoint: &Path) -> Result<()> {
    Err(Error::Usage("umount: not implemented yet".into()))
}
