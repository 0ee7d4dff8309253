//! The one worker pool: a few scoped threads over a slice (layers to extract, blobs to push).
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Error, Result};

/// Runs `f` over `items` on up to `jobs` threads; results in input order, the first error wins
/// and stops the remaining work.
pub fn parallel_map<T: Sync, R: Send>(
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
        .map_err(|_| Error::Format("a worker thread panicked".into()))?;
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
        None => Err(Error::Format("a worker stopped early".into())),
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
                Err(Error::Format("seven".into()))
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
