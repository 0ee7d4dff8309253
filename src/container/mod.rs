//! Containers: a thin writable layer over an image's layers, mounted through the overlay
//! driver, with `docker diff` / `docker commit` semantics.
//!
//! ```text
//! ROOT/containers/ID/          ID = 64 hex digits; any unique prefix or the name selects it
//!   meta.json                  ContainerRecord: name, image (pins it), layers, mountpoint hint
//!   upper/                     the writable layer, kernel overlayfs format
//!   work/                      the driver's workdir (same filesystem as upper/)
//!   mount.lock                 flocked by the daemon serving a mount (see mount.rs)
//! ```
//!
//! Everything a container writes stays in its directory; `rm` removes it in one rename out of
//! sight (into tmp/) and then deletes it.
pub mod changes;
pub mod commit;
pub mod export;
pub mod import;
pub mod lower;
pub mod mount;
pub mod record;

pub use record::{ContainerId, ContainerRecord, Containers};
