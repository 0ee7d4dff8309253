//! Image formats: docker-archive (legacy and Docker 25+), OCI layout directories and archives;
//! layer tar extraction into the overlay on-disk format; compression sniffing.
pub mod chunked;
pub mod compress;
pub mod estargz;
pub mod load;
pub mod oci;
pub mod pack;
pub mod plan;
pub mod source;
pub mod tarentry;
pub mod tarwrite;
pub mod toc;
pub mod unpack;
pub mod write;
