//! layerfs: a copy-on-write layered filesystem (FUSE), an image store, containers on top of it,
//! a registry client and a benchmark. See README.md for the architecture.
//!
//! Lints: no `unsafe` outside `sys` (every syscall wrapper lives there, each block with a
//! `// SAFETY:` line, which clippy checks), and no unwrap/expect/panic outside tests (the daemon
//! never panics).
#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bench;
pub mod cli;
pub mod container;
pub mod daemon;
pub mod digest;
pub mod error;
pub mod fuse;
pub mod human;
pub mod image;
pub mod inspect;
pub mod lazy;
pub mod mountinfo;
pub mod mountopts;
pub mod overlay;
pub mod pool;
pub mod reference;
pub mod registry;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;

pub use error::{Error, Result};
