//! Distribution: `pull`, `push`, `login`, `logout` against any OCI distribution API v2
//! registry (Docker Hub, GHCR, Harbor, the CNCF `distribution` registry).
//!
//! ```text
//! commands.rs   clap types and the four commands
//! client.rs     HTTP on ureq: scheme choice, Basic/Bearer auth, redirects, credential policy
//! challenge.rs  WWW-Authenticate parsing, token scopes (pure)
//! auth.rs       credentials: $XDG_CONFIG_HOME/layerfs/auth.json (0600), ~/.docker/config.json
//! docs.rs       checks on fetched manifests/indexes: size caps, media types, ambiguity (pure)
//! download.rs   resumable verified blob downloads into ROOT/blobs (partials in ROOT/downloads)
//! pull.rs       registry -> store, through the store's import (one verified, atomic path)
//! push.rs       store -> registry: HEAD, cross-repo mount, upload, manifest
//! url.rs        the small URL type the client needs
//! ```
//!
//! Nothing from a registry is trusted before it is verified: manifests by digest (when pulled
//! by digest, and against `Docker-Content-Digest` and index entries), configs and layer blobs
//! by digest and size, layers by diff_id. Credentials go only to the registry's own origin.
pub mod auth;
pub mod challenge;
pub mod client;
pub mod docs;
mod download;
pub mod pull;
pub mod push;
pub mod url;
