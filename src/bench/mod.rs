//! bench: see README.md.
