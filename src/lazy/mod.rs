//! Lazy images (issue 16): seekable layer formats pushed and saved (`convert`), and images
//! mounted straight from a registry before they are downloaded.
pub mod bench;
pub mod chunks;
pub mod convert;
pub mod fs;
pub mod gc;
pub mod mount;
pub mod priority;
pub mod remote;
pub mod status;
pub mod tree;
