//! `--svg DIR`: hand-written SVG charts, no drawing library.
//!
//! - one line chart per (workload, metric) whose rows vary a numeric parameter (copy-up latency
//!   vs file size, lookup cost vs layer count): log x axis with a tick per measured value,
//!   y axis log when the values span more than 10x, else linear from zero; one line per
//!   implementation, a marker per median and a bar from min to max;
//! - `overview.svg`: every row's median as a ratio to the kernel overlay (or to raw when
//!   overlay did not run), on a log axis with 1x marked.
use std::fmt::Write as _;

use crate::bench::report::{BASELINE_KERNEL, BASELINE_RAW, Report, Row, format, table};

const W: f64 = 760.0;
const H: f64 = 460.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 64.0;
const FONT: &str = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";

/// Stable colour and dash pattern per implementation name.
fn style(name: &str, index: usize) -> (&'static str, &'static str) {
    const OTHERS: [&str; 5] = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
    match name {
        "layerfs" => ("#d62728", ""),
        "overlay" => ("#1f77b4", ""),
        "fuse-overlayfs" => ("#2ca02c", ""),
        "raw" => ("#555555", "6 4"),
        _ => (OTHERS[index % OTHERS.len()], "2 3"),
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// File-name-safe form of a label: "first 1-byte append" -> "first-1-byte-append".
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// An axis mapping values to pixels.
#[derive(Debug, Clone, Copy)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Axis {
    fn new(log: bool, lo: f64, hi: f64, px_lo: f64, px_hi: f64) -> Self {
        let (lo, hi) = if log {
            (lo.log10(), hi.log10())
        } else {
            (lo, hi)
        };
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        };
        Axis {
            log,
            lo,
            hi,
            px_lo,
            px_hi,
        }
    }

    fn px(&self, v: f64) -> f64 {
        let t = if self.log { v.log10() } else { v };
        self.px_lo + (t - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)
    }
}

/// Ticks for a time axis: decades (with 2 and 5 when few decades) on a log axis, 1-2-5 steps
/// from zero on a linear one. Returns (axis lo, axis hi, ticks).
fn y_ticks(min: f64, max: f64, log: bool) -> (f64, f64, Vec<f64>) {
    if log {
        let lo = min.log10().floor() as i32;
        let hi = max.log10().ceil() as i32;
        let hi = if hi == lo { hi + 1 } else { hi };
        let mut ticks = Vec::new();
        for d in lo..=hi {
            let base = 10f64.powi(d);
            ticks.push(base);
            if hi - lo <= 2 && d < hi {
                ticks.push(2.0 * base);
                ticks.push(5.0 * base);
            }
        }
        (10f64.powi(lo), 10f64.powi(hi), ticks)
    } else {
        let raw_step = (max / 5.0).max(f64::MIN_POSITIVE);
        let mag = 10f64.powf(raw_step.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw_step)
            .unwrap_or(10.0 * mag);
        let n = (max / step).ceil().max(1.0) as usize;
        let ticks: Vec<f64> = (0..=n).map(|i| i as f64 * step).collect();
        (0.0, n as f64 * step, ticks)
    }
}

struct Point {
    x: f64,
    median: f64,
    min: f64,
    max: f64,
    /// (n, most) when this point had fewer repetitions than another implementation's.
    fewer: Option<(usize, usize)>,
}

struct Series {
    name: String,
    points: Vec<Point>,
}

/// What one line chart shows.
pub struct LineChart<'a> {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    pub y_label: String,
    pub x_format: &'a dyn Fn(f64) -> String,
}

/// A width estimate for text in the chart font: DejaVu Sans averages under 0.64 em per
/// character in these labels (digits are 0.636 em, most lowercase less).
pub const CHAR_EM: f64 = 0.64;
const SUBTITLE_FONT: f64 = 11.0;
const SUBTITLE_MIN_FONT: f64 = 8.0;
const MARGIN: f64 = 16.0;

/// Breaks `text` at spaces into lines of at most `max` characters (a longer word is cut).
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > max {
            if !cur.is_empty() {
                lines.push(std::mem::take(&mut cur));
            }
            let head: String = word.chars().take(max).collect();
            word = word.chars().skip(max).collect();
            lines.push(head);
        }
        let needed = cur.chars().count() + usize::from(!cur.is_empty()) + word.chars().count();
        if needed > max && !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The subtitle's font size and lines: two lines at most between the title and the plot,
/// the font shrunk (down to 8 px) until the text fits the chart's width.
pub fn subtitle_lines(text: &str, width: f64) -> (f64, Vec<String>) {
    let mut font = SUBTITLE_FONT;
    loop {
        let max = ((width - 2.0 * MARGIN) / (font * CHAR_EM)).floor() as usize;
        let lines = wrap(text, max);
        if lines.len() <= 2 || font <= SUBTITLE_MIN_FONT {
            return (font, lines);
        }
        font -= 0.5;
    }
}

fn header(out: &mut String, width: f64, height: f64, title: &str, subtitle: &str) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" {FONT}>"
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"{MARGIN}\" y=\"26\" font-size=\"17\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        escape(title)
    );
    let (font, lines) = subtitle_lines(subtitle, width);
    let mut spans = String::new();
    for (i, l) in lines.iter().enumerate() {
        let dy = if i == 0 { 0.0 } else { font + 2.0 };
        let _ = write!(
            spans,
            "<tspan x=\"{MARGIN}\" dy=\"{dy}\">{}</tspan>",
            escape(l)
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"subtitle\" x=\"{MARGIN}\" y=\"{}\" font-size=\"{font}\" fill=\"#666\">{spans}</text>",
        if lines.len() > 1 { 42.0 } else { 45.0 }
    );
}

/// A note under a chart (e.g. which points had fewer repetitions).
fn footnote(out: &mut String, width: f64, height: f64, text: &str) {
    let (font, lines) = subtitle_lines(text, width);
    let mut y = height - 8.0 - (font + 2.0) * (lines.len().saturating_sub(1)) as f64;
    for l in lines {
        let _ = writeln!(
            out,
            "<text class=\"footnote\" x=\"{MARGIN}\" y=\"{y:.1}\" font-size=\"{font}\" fill=\"#666\">{}</text>",
            escape(&l)
        );
        y += font + 2.0;
    }
}

fn legend(out: &mut String, names: &[(String, usize)], x: f64, y: f64) {
    for (i, (name, index)) in names.iter().enumerate() {
        let (color, dash) = style(name, *index);
        let yy = y + 22.0 * i as f64;
        let _ = writeln!(
            out,
            "<g class=\"legend\"><line x1=\"{x}\" y1=\"{yy}\" x2=\"{}\" y2=\"{yy}\" stroke=\"{color}\" \
             stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/><circle cx=\"{}\" cy=\"{yy}\" r=\"3.5\" \
             fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"13\" fill=\"#222\">{}</text></g>",
            x + 28.0,
            x + 14.0,
            x + 36.0,
            yy + 4.5,
            escape(name)
        );
    }
}

/// One series per implementation with points at the rows' x values, sorted by x.
fn collect_series(order: &[String], rows: &[&Row]) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for name in order {
        let mut points: Vec<Point> = rows
            .iter()
            .filter_map(|r| {
                let x = r.x.filter(|x| *x > 0.0)?;
                let c = r.cells.iter().find(|c| &c.implementation == name)?;
                let s = c.summary;
                (s.min > 0.0).then_some(Point {
                    x,
                    median: s.median,
                    min: s.min,
                    max: s.max,
                    fewer: r.fewer_reps(c),
                })
            })
            .collect();
        points.sort_by(|a, b| a.x.total_cmp(&b.x));
        if !points.is_empty() {
            series.push(Series {
                name: name.clone(),
                points,
            });
        }
    }
    series
}

/// Frame, grid lines, tick labels and axis labels of a line chart.
fn draw_axes(
    out: &mut String,
    xa: &Axis,
    ya: &Axis,
    xs: &[f64],
    y_ticks: &[f64],
    chart: &LineChart,
) {
    let (px_left, px_right, px_top, px_bottom) = (xa.px_lo, xa.px_hi, ya.px_hi, ya.px_lo);
    let _ = writeln!(
        out,
        "<rect x=\"{px_left}\" y=\"{px_top}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" \
         stroke=\"#999\"/>",
        px_right - px_left,
        px_bottom - px_top
    );
    for t in y_ticks {
        let y = ya.px(*t);
        let _ = writeln!(
            out,
            "<line x1=\"{px_left}\" y1=\"{y:.1}\" x2=\"{px_right}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            px_left - 6.0,
            y + 4.0,
            escape(&format::duration(*t))
        );
    }
    for x in xs {
        let px = xa.px(*x);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{px_top}\" x2=\"{px:.1}\" y2=\"{px_bottom}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{px:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            px_bottom + 16.0,
            escape(&(chart.x_format)(*x))
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#222\">{}</text>",
        (px_left + px_right) / 2.0,
        H - 18.0,
        escape(&chart.x_label)
    );
    let cy = (px_top + px_bottom) / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"18\" y=\"{cy}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#222\" \
         transform=\"rotate(-90 18 {cy})\">{}</text>",
        escape(&chart.y_label)
    );
}

/// The lines, markers and min-max bars; returns the legend entries.
fn draw_series(
    out: &mut String,
    series: &[Series],
    order: &[String],
    xa: &Axis,
    ya: &Axis,
) -> Vec<(String, usize)> {
    let mut names = Vec::new();
    for s in series {
        let index = order.iter().position(|n| n == &s.name).unwrap_or(0);
        names.push((s.name.clone(), index));
        let (color, dash) = style(&s.name, index);
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", xa.px(p.x), ya.px(p.median)))
            .collect();
        let _ = writeln!(
            out,
            "<g class=\"series\" data-name=\"{}\"><polyline points=\"{}\" fill=\"none\" \
             stroke=\"{color}\" stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/>",
            escape(&s.name),
            pts.join(" ")
        );
        for p in &s.points {
            let (x, y0, y1) = (xa.px(p.x), ya.px(p.min), ya.px(p.max));
            // A hollow marker: fewer repetitions than another implementation at this x.
            let (fill, class, note) = match p.fewer {
                Some((n, most)) => (
                    "#ffffff",
                    " class=\"fewer-reps\"",
                    format!(", only {n} of {most} repetitions"),
                ),
                None => (color, "", String::new()),
            };
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"{color}\" \
                 stroke-width=\"1.2\"/><circle{class} cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\" \
                 stroke=\"{color}\" stroke-width=\"1.5\"><title>{}: {} (min {}, max {}{})</title></circle>",
                ya.px(p.median),
                escape(&s.name),
                escape(&format::duration(p.median)),
                escape(&format::duration(p.min)),
                escape(&format::duration(p.max)),
                escape(&note),
            );
        }
        out.push_str("</g>\n");
    }
    names
}

/// Renders one line chart of `rows` (all of one workload and metric), or None when there is
/// nothing with two x values to draw.
pub fn line_chart(report: &Report, rows: &[&Row], chart: &LineChart) -> Option<String> {
    let order = report.impl_order();
    let series = collect_series(&order, rows);
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.len() < 2 {
        return None;
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let ymin = all().map(|p| p.min).fold(f64::INFINITY, f64::min);
    let ymax = all().map(|p| p.max).fold(0.0, f64::max);
    let y_log = ymax / ymin > 10.0;
    let (y_lo, y_hi, y_ticks) = y_ticks(ymin, ymax, y_log);
    let (px_left, px_right, px_top, px_bottom) = (LEFT, W - RIGHT, TOP + 10.0, H - BOTTOM);
    // Pad the x axis by a fraction of its span so end markers are not on the frame.
    let xa0 = Axis::new(true, xs[0], xs[xs.len() - 1], px_left, px_right);
    let pad = (xa0.hi - xa0.lo) * 0.04;
    let xa = Axis {
        lo: xa0.lo - pad,
        hi: xa0.hi + pad,
        ..xa0
    };
    let ya = Axis::new(y_log, y_lo, y_hi, px_bottom, px_top);

    let mut out = String::new();
    header(&mut out, W, H, &chart.title, &chart.subtitle);
    draw_axes(&mut out, &xa, &ya, &xs, &y_ticks, chart);
    let names = draw_series(&mut out, &series, &order, &xa, &ya);
    legend(&mut out, &names, px_right + 18.0, px_top + 14.0);
    let fewer: Vec<&str> = series
        .iter()
        .filter(|s| s.points.iter().any(|p| p.fewer.is_some()))
        .map(|s| s.name.as_str())
        .collect();
    if !fewer.is_empty() {
        // Under the legend, wrapped to its column.
        let text = format!(
            "Hollow markers ({}): fewer repetitions than another implementation at that x.",
            fewer.join(", ")
        );
        let font = 10.0;
        let max = ((RIGHT - 2.0 * MARGIN) / (font * CHAR_EM)).floor() as usize;
        let mut y = px_top + 14.0 + 22.0 * names.len() as f64 + 10.0;
        for l in wrap(&text, max) {
            let _ = writeln!(
                out,
                "<text class=\"footnote\" x=\"{}\" y=\"{y:.1}\" font-size=\"{font}\" fill=\"#666\">{}</text>",
                px_right + 18.0,
                escape(&l)
            );
            y += font + 3.0;
        }
    }
    out.push_str("</svg>\n");
    Some(out)
}

/// All charts of a report as (file name, SVG text).
pub fn charts(report: &Report) -> Vec<(String, String)> {
    let rows = report.rows();
    let subtitle = table::machine_line(report);
    let mut groups: Vec<(String, String, crate::bench::report::Cache)> = Vec::new();
    for r in &rows {
        let g = (r.key.workload.clone(), r.key.metric.clone(), r.key.cache);
        if r.x.is_some() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut out = Vec::new();
    for (workload, metric, cache) in groups {
        let members: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                r.key.workload == workload && r.key.metric == metric && r.key.cache == cache
            })
            .collect();
        let (x_label, x_format): (&str, &dyn Fn(f64) -> String) = match workload.as_str() {
            "copy-up" => ("size of the lower file (log scale)", &|x| {
                format::size(x as u64)
            }),
            "lookup" => ("layers in the stack (log scale)", &|x| format!("{x}")),
            _ => ("parameter (log scale)", &|x| format!("{x}")),
        };
        let chart = LineChart {
            title: format!("{workload}: {metric} ({})", cache.as_str()),
            subtitle: subtitle.clone(),
            x_label: x_label.into(),
            y_label: "median time per operation (bars: min – max)".into(),
            x_format,
        };
        if let Some(svg) = line_chart(report, &members, &chart) {
            let name = format!(
                "{}-{}-{}.svg",
                slug(&workload),
                slug(&metric),
                cache.as_str()
            );
            out.push((name, svg));
        }
    }
    if let Some(svg) = overview(report, &rows) {
        out.push(("overview.svg".into(), svg));
    }
    out
}

/// Vertical lines at each power of ten from `10^lo` to `10^hi`, labelled; 1x darker.
fn decade_grid(out: &mut String, xa: &Axis, (lo, hi): (i32, i32), top: f64, bottom: f64) {
    for exp in lo..=hi {
        let d = 10f64.powi(exp);
        let x = xa.px(d);
        let stroke = if exp == 0 { "#333" } else { "#e3e3e3" };
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"{stroke}\"/>\
             <text x=\"{x:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            top - 6.0,
            bottom + 16.0,
            escape(&format!("{d}x"))
        );
    }
}

/// Sizes of one operation's group of bars in the overview.
struct GroupLayout {
    label_w: f64,
    bar_h: f64,
    group_h: f64,
}

/// One implementation's bar in an overview group.
struct Bar<'a> {
    name: &'a str,
    /// Its place in the report's order (its colour).
    index: usize,
    ratio: Option<f64>,
    /// Its repetitions and the most any implementation of the row had, when fewer.
    fewer: Option<(usize, usize)>,
}

/// One operation of the overview: its label, then a bar per implementation from 1x to its
/// ratio, faded when it had fewer repetitions than another implementation in the row (the
/// ratio is less certain). Returns whether any bar was faded.
fn overview_group(
    out: &mut String,
    l: &GroupLayout,
    xa: &Axis,
    y0: f64,
    full: &str,
    bars: &[Bar],
) -> bool {
    let short: String = if full.chars().count() > 64 {
        full.chars().take(62).chain(['…']).collect()
    } else {
        full.to_string()
    };
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#222\">\
         <title>{}</title>{}</text>",
        l.label_w - 8.0,
        y0 + l.group_h / 2.0,
        escape(full),
        escape(&short)
    );
    let mut any_fewer = false;
    for (j, bar) in bars.iter().enumerate() {
        let Some(v) = bar.ratio else { continue };
        let (color, _) = style(bar.name, bar.index);
        let (a, b) = (xa.px(1.0), xa.px(v));
        any_fewer |= bar.fewer.is_some();
        let (attrs, note) = match bar.fewer {
            Some((n, most)) => (
                " class=\"fewer-reps\" fill-opacity=\"0.4\"",
                format!(", only {n} of {most} repetitions"),
            ),
            None => ("", String::new()),
        };
        let _ = writeln!(
            out,
            "<rect{attrs} x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\">\
             <title>{}: {}{}</title></rect>",
            a.min(b),
            y0 + l.bar_h * j as f64,
            (a - b).abs().max(1.0),
            l.bar_h,
            escape(bar.name),
            escape(&format::ratio(Some(v))),
            escape(&note)
        );
    }
    any_fewer
}

/// Horizontal bars: each row's median over the baseline's median, per implementation.
pub fn overview(report: &Report, rows: &[Row]) -> Option<String> {
    let order = report.impl_order();
    let has = |n: &str| {
        rows.iter()
            .any(|r| r.cells.iter().any(|c| c.implementation == n))
    };
    let baseline = if has(BASELINE_KERNEL) {
        BASELINE_KERNEL
    } else if has(BASELINE_RAW) {
        BASELINE_RAW
    } else {
        return None;
    };
    let ratio_of = |r: &Row, name: &str| -> Option<f64> {
        let c = r.cells.iter().find(|c| c.implementation == name)?;
        if baseline == BASELINE_KERNEL {
            c.vs_kernel
        } else {
            c.vs_raw
        }
    };
    let shown: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            order
                .iter()
                .any(|n| n != baseline && ratio_of(r, n).is_some())
        })
        .collect();
    if shown.is_empty() {
        return None;
    }
    let bars: Vec<&String> = order.iter().filter(|n| *n != baseline && has(n)).collect();
    let bar_h = 9.0;
    let group_h = bar_h * bars.len() as f64 + 12.0;
    let (label_w, plot_w, top) = (400.0, 420.0, TOP + 24.0);
    let height = top + group_h * shown.len() as f64 + 60.0;
    let width = label_w + plot_w + RIGHT;
    let ratios = || {
        shown
            .iter()
            .flat_map(|r| bars.iter().filter_map(|n| ratio_of(r, n)))
    };
    let lo = ratios().fold(1.0f64, f64::min).min(0.5);
    let hi = ratios().fold(1.0f64, f64::max).max(2.0);
    let (lo_exp, hi_exp) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let xa = Axis::new(
        true,
        10f64.powi(lo_exp),
        10f64.powi(hi_exp),
        label_w,
        label_w + plot_w,
    );
    let mut out = String::new();
    header(
        &mut out,
        width,
        height,
        &format!("Time relative to {baseline} (median, log scale; left of 1x is faster)"),
        &table::machine_line(report),
    );
    let bottom = top + group_h * shown.len() as f64;
    decade_grid(&mut out, &xa, (lo_exp, hi_exp), top, bottom);
    let layout = GroupLayout {
        label_w,
        bar_h,
        group_h,
    };
    let mut any_fewer = false;
    for (i, r) in shown.iter().enumerate() {
        let y0 = top + group_h * i as f64 + 6.0;
        let bars_of_row: Vec<Bar> = bars
            .iter()
            .map(|name| Bar {
                name: name.as_str(),
                index: order.iter().position(|n| n == *name).unwrap_or(0),
                ratio: ratio_of(r, name),
                fewer: r
                    .cells
                    .iter()
                    .find(|c| &c.implementation == *name)
                    .and_then(|c| r.fewer_reps(c)),
            })
            .collect();
        any_fewer |= overview_group(&mut out, &layout, &xa, y0, &r.key.label(), &bars_of_row);
    }
    let names: Vec<(String, usize)> = bars
        .iter()
        .map(|n| {
            (
                (*n).clone(),
                order.iter().position(|o| o == *n).unwrap_or(0),
            )
        })
        .collect();
    legend(&mut out, &names, label_w + plot_w + 20.0, top + 10.0);
    if any_fewer {
        footnote(
            &mut out,
            width,
            height,
            "Faded bars: fewer repetitions than another implementation in that row (its budget \
             ran out first); the ratio is less certain.",
        );
    }
    out.push_str("</svg>\n");
    Some(out)
}
