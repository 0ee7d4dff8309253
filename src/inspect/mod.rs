//! Inspecting images, containers and layers without mounting them: what changed between two
//! stacks (`diff`), what each layer adds, modifies and removes (`layers`), how much of an image
//! is wasted (`efficiency`), and the interactive browser (`explore`).
//!
//! Everything here reads the store's extracted layers (overlay format) directly, through held
//! directory fds and `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and returns data; the
//! command-line types and printing are in `cli/inspect.rs`. May import: image, store,
//! container, reference, error, sys (not cli, fuse, bench).
pub mod archive;
pub mod config;
pub mod diff;
pub mod efficiency;
pub mod explore;
pub mod fsread;
pub mod layers;
pub mod packages;
pub mod target;

pub use diff::{Change, ChangeKind, DiffOptions, LayerRef};
pub use target::{Target, TargetKind};
