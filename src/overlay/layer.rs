//! A layer: a directory reached through a held `O_PATH` fd. The upper layer is index 0 of the
//! stack when there is one; lower layers follow, top first.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::{Error, Result, sys};

#[derive(Debug)]
pub struct Layer {
    fd: OwnedFd,
    pub path: PathBuf,
    pub dev: u64,
}

impl Layer {
    pub fn open(path: &Path, what: &str) -> Result<Layer> {
        let fd = sys::open_dir_path(path).map_err(|e| {
            Error::Usage(format!(
                "{what} {}: {} (it must be an existing directory)",
                path.display(),
                std::io::Error::from(e)
            ))
        })?;
        let st = sys::lstat_at(fd.as_fd(), c".")?;
        Ok(Layer {
            fd,
            path: path.to_path_buf(),
            dev: st.st_dev,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Index of a lower layer in `Overlay::lowers` (0 = topmost lower).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LowerIdx(pub u16);
