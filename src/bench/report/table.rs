//! The terminal table: one header line per row key, one line per implementation under it.
use std::fmt::Write as _;

use crate::bench::report::{BASELINE_KERNEL, BASELINE_RAW, ImplStatus, Report, Row, format};

/// The header line describing the machine and cache mode.
pub fn machine_line(report: &Report) -> String {
    let m = &report.machine;
    let caches = if m.cold_caches {
        "cold = page cache dropped before the timed span"
    } else {
        "warm only (dropping the page cache needs root)"
    };
    format!(
        "layerfs bench: kernel {}, {} CPUs ({}), work dir {} ({}), {}",
        m.kernel, m.cpus, m.cpu_model, m.work_dir, m.work_dir_fs, caches
    )
}

/// Marks a repetition count lower than another implementation's in the same row.
pub const FEWER_MARK: char = '*';

struct Line {
    name: String,
    median: String,
    range: String,
    n: String,
    vs_kernel: String,
    vs_raw: String,
    rate: String,
}

fn lines_of(row: &Row) -> Vec<Line> {
    row.cells
        .iter()
        .map(|c| Line {
            name: c.implementation.clone(),
            median: format::duration(c.summary.median),
            range: format!(
                "{} – {}",
                format::duration(c.summary.min),
                format::duration(c.summary.max)
            ),
            n: match row.fewer_reps(c) {
                Some((n, most)) => format!("{n}{FEWER_MARK}/{most}"),
                None => c.summary.n.to_string(),
            },
            vs_kernel: format::ratio(c.vs_kernel),
            vs_raw: format::ratio(c.vs_raw),
            rate: row
                .bytes
                .map(|b| format::rate(b as f64 / c.summary.median))
                .unwrap_or_default(),
        })
        .collect()
}

fn width<'a>(items: impl Iterator<Item = &'a str>, min: usize) -> usize {
    items.map(|s| s.chars().count()).fold(min, usize::max)
}

/// The whole table, ending with the skipped implementations and the failures.
pub fn render(report: &Report) -> String {
    let rows = report.rows();
    let per_row: Vec<Vec<Line>> = rows.iter().map(lines_of).collect();
    let all = || per_row.iter().flatten();
    let w_name = width(all().map(|l| l.name.as_str()), 14) + 4;
    let w_median = width(all().map(|l| l.median.as_str()), 6);
    let w_range = width(all().map(|l| l.range.as_str()), 9);
    let w_n = width(all().map(|l| l.n.as_str()), 1);
    let h_kernel = format!("vs {BASELINE_KERNEL}");
    let h_raw = format!("vs {BASELINE_RAW}");
    let w_kernel = width(all().map(|l| l.vs_kernel.as_str()), h_kernel.len());
    let w_raw = width(all().map(|l| l.vs_raw.as_str()), h_raw.len());
    let any_rate = rows.iter().any(|r| r.bytes.is_some());

    let mut out = String::new();
    let _ = writeln!(out, "{}", machine_line(report));
    let _ = write!(
        out,
        "{:w_name$}{:>w_median$}   {:w_range$}   {:>w_n$}   {:>w_kernel$}   {:>w_raw$}",
        "", "median", "min – max", "n", h_kernel, h_raw
    );
    out.push_str(if any_rate { "   rate\n" } else { "\n" });
    for (row, lines) in rows.iter().zip(&per_row) {
        let _ = writeln!(out, "{}", row.key.label());
        for l in lines {
            let mut line = format!(
                "  {:w$}  {:>w_median$}   {:w_range$}   {:>w_n$}   {:>w_kernel$}   {:>w_raw$}",
                l.name,
                l.median,
                l.range,
                l.n,
                l.vs_kernel,
                l.vs_raw,
                w = w_name - 4,
            );
            if !l.rate.is_empty() {
                let _ = write!(line, "   {}", l.rate);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    if rows.is_empty() {
        out.push_str("(no measurements)\n");
    }
    for i in &report.implementations {
        if let ImplStatus::Skipped { reason } = &i.status {
            let _ = writeln!(out, "skipped {}: {}", i.name, reason);
        }
    }
    for f in &report.failures {
        let _ = writeln!(
            out,
            "failed {} / {}: {}",
            f.implementation, f.workload, f.error
        );
    }
    if rows
        .iter()
        .any(|r| r.cells.iter().any(|c| r.fewer_reps(c).is_some()))
    {
        let _ = writeln!(
            out,
            "n{FEWER_MARK}/m: only n repetitions where another implementation in the row got m \
             (its --budget ran out first): that median is less certain."
        );
    }
    let _ = writeln!(
        out,
        "Times are per operation (lower is better); ratios compare medians from this run."
    );
    out
}
