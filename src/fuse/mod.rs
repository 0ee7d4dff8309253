//! The fuser::Filesystem adapter: convert, call the overlay, reply once.
