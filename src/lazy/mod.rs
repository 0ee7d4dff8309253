//! Lazy images (issue 16): images mounted straight from a registry before they are downloaded
//! (the seekable formats are in `image::{chunked,estargz}`, their conversion in `store::convert`).
pub mod bench;
pub mod chunks;
pub mod fs;
pub mod gc;
pub mod mount;
pub mod priority;
pub mod remote;
pub mod status;
pub mod tree;
