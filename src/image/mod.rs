//! image: see README.md.
