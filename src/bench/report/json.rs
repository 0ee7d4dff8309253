//! `--json FILE`: the whole report, every sample included, as pretty JSON.
use crate::bench::report::Report;
use crate::{Error, Result};

pub fn to_string(report: &Report) -> Result<String> {
    serde_json::to_string_pretty(report)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| Error::Format(format!("cannot encode the bench report as JSON: {e}")))
}

pub fn from_str(s: &str) -> Result<Report> {
    serde_json::from_str(s).map_err(|e| Error::Format(format!("bench report JSON: {e}")))
}
