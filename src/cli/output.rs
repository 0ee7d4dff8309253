//! Tables and times as the listing commands print them (docker's layout and wording).

use std::io::Write;

use crate::{Error, Result};

/// Writes a command's output to standard output (`out`).
pub fn emit(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())
        .map_err(|e| Error::io("write", "<stdout>", e))
}

/// Pretty JSON and a newline, as the `--json` listings print it.
pub fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// `About an hour ago`, `3 days ago`, `N/A`, from an RFC 3339 time.
pub fn human_ago(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "N/A".into();
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    if secs < 0 {
        return "Less than a second ago".into();
    }
    let (m, h, d) = (60, 3600, 86400);
    let text = match secs {
        s if s < 1 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < m => format!("{s} seconds"),
        s if s < 2 * m => "About a minute".to_string(),
        s if s < h => format!("{} minutes", s / m),
        s if s < 2 * h => "About an hour".to_string(),
        s if s < 2 * d => format!("{} hours", s / h),
        s if s < 14 * d => format!("{} days", s / d),
        s if s < 60 * d => format!("{} weeks", s / (7 * d)),
        s if s < 730 * d => format!("{} months", s / (30 * d)),
        s => format!("{} years", s / (365 * d)),
    };
    format!("{text} ago")
}

/// Left-aligned columns separated by three spaces, like docker's tables.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `--format`: `json` prints each row as one line of JSON (docker's `--format json`), anything
/// else is a template over the row (see `template.rs`); `headers` names a table's columns.
pub fn emit_formatted(
    out: &mut dyn Write,
    format: &str,
    rows: &[serde_json::Value],
    headers: &dyn Fn(&str) -> String,
) -> Result<()> {
    if format == "json" {
        let s: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect();
        return emit(out, &s);
    }
    let t = super::template::Template::parse(format)?;
    emit(out, &super::template::render_all(&t, rows, headers)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(human_ago(None), "N/A");
        let t = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72);
        assert_eq!(human_ago(Some(&t.to_string())), "3 days ago");
    }
}
