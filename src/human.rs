//! How numbers look to a person: sizes in docker's units, shared by the commands' tables and
//! the store's and registry's progress lines, and the one progress-bar style (loads, pulls,
//! pushes).
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of one command: drawn on stderr when `show` (a terminal, not `--quiet`), else
/// hidden, so callers never branch on it.
pub fn progress_bars(show: bool) -> MultiProgress {
    let bars = MultiProgress::new();
    if !show {
        bars.set_draw_target(ProgressDrawTarget::hidden());
    }
    bars
}

/// A bar for `total` bytes of the blob or layer `what`: `what [bar] done/total rate`.
pub fn byte_bar(bars: &MultiProgress, total: u64, what: String) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
    bar
}

/// Decimal units as docker prints them: `0B`, `999B`, `7.8MB`, `1.235GB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        // Four significant digits, trailing zeros dropped (docker's "%.4g").
        let digits = if v >= 1000.0 {
            0
        } else if v >= 100.0 {
            1
        } else if v >= 10.0 {
            2
        } else {
            3
        };
        let s = format!("{v:.digits$}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (n, s) in [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (7_800_000, "7.8MB"),
            (123_456_789, "123.5MB"),
            (1_234_567_890, "1.235GB"),
            (12_340_000, "12.34MB"),
        ] {
            assert_eq!(human_size(n), s, "{n}");
        }
    }
}
