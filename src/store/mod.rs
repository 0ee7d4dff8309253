//! store: see README.md.
