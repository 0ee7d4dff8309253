//! The one error type. `Sys` is the hot, allocation-free variant used on the FUSE fast path;
//! the others carry context for a human. `Error::errno()` is the only errno mapping.
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bare errno from a syscall on the fast path (ENOENT, EEXIST, ...).
    #[error("{0}")]
    Sys(rustix::io::Errno),
    /// An I/O failure with the operation and path that failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad user input (command line, mount options, references): the message says what to do.
    #[error("{0}")]
    Usage(String),
    /// A content digest did not match what a manifest or config promised.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Malformed or unsupported input data (an archive, a manifest, a layer).
    #[error("{0}")]
    Format(String),
    /// A registry failed or refused a request (network, HTTP status, protocol). The message
    /// names the registry and the object, never a credential or a signed URL's query.
    #[error("{0}")]
    Registry(String),
    /// Authentication with a registry failed or is required; the message says what to do.
    #[error("{0}")]
    Auth(String),
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno a FUSE caller should see. Exhaustive on purpose: a new variant must decide.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Sys(e) => e.raw_os_error(),
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Usage(_) => libc::EINVAL,
            Error::DigestMismatch { .. } => libc::EIO,
            Error::Format(_) => libc::EINVAL,
            Error::Registry(_) => libc::EIO,
            Error::Auth(_) => libc::EACCES,
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Sys(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Error::Sys(rustix::io::Errno::from_raw_os_error(n)),
            None => Error::Io {
                op: "io",
                path: PathBuf::new(),
                source: e,
            },
        }
    }
}
