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

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Error, Result};

/// Runs `f` over `items` on up to `jobs` threads; results in input order, the first error wins
/// and stops the remaining work.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let jobs = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = f(&items[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut v) = slots.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    let slots = slots
        .into_inner()
        .map_err(|_| Error::Registry("a worker thread panicked".into()))?;
    let mut out = Vec::with_capacity(items.len());
    let mut first_err = None;
    for r in slots {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if out.len() == items.len() => Ok(out),
        None => Err(Error::Registry("a worker stopped early".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_order_and_reports_errors() {
        let v: Vec<u32> = (0..50).collect();
        let out = parallel_map(&v, 4, |x| Ok(x * 2)).unwrap();
        assert_eq!(out, (0..50).map(|x| x * 2).collect::<Vec<_>>());
        let e = parallel_map(&v, 3, |x| {
            if *x == 7 {
                Err(Error::Registry("seven".into()))
            } else {
                Ok(*x)
            }
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "seven");
        assert!(
            parallel_map(&Vec::<u32>::new(), 4, |x| Ok(*x))
                .unwrap()
                .is_empty()
        );
    }
}
