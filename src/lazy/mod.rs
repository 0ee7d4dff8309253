//! Lazy images (issue 16): seekable layer formats pushed and saved (`convert`), and images
//! mounted straight from a registry before they are downloaded.
pub mod convert;
