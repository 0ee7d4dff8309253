//! Fault injection for the crash tests: `LAYERFS_FAULT=NAME:N` kills the process with SIGKILL
//! the N-th time it reaches the point NAME (`any:N`: the N-th point of any name), so a test can
//! stop a store command at every step where it writes and check what a crash leaves. Unset
//! (always, outside tests), a point costs one relaxed atomic load.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable read once per process.
pub const FAULT_ENV: &str = "LAYERFS_FAULT";

static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
static SEEN: AtomicU64 = AtomicU64::new(0);

fn plan() -> &'static Option<(String, u64)> {
    PLAN.get_or_init(|| {
        let v = std::env::var(FAULT_ENV).ok()?;
        let (name, n) = v.rsplit_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    })
}

/// A point where a crash must leave the store consistent.
pub fn point(name: &str) {
    let Some((want, n)) = plan() else { return };
    if want != "any" && want != name {
        return;
    }
    if SEEN.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        eprintln!("layerfs: {FAULT_ENV}: killed at {name}");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
