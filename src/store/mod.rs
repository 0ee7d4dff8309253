//! store: content-addressed image store (see DESIGN.md "Store layout").
pub mod digest;

pub use digest::Digest;
