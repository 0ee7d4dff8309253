//! `--json FILE`: the whole report, every sample included, as pretty JSON, plus the derived
//! `fewer_repetitions` list (implementations whose budget ran out before the others' in a row;
//! ignored when read back).
use crate::bench::report::Report;
use crate::{Error, Result};

pub fn to_string(report: &Report) -> Result<String> {
    let err = |e: serde_json::Error| {
        Error::Format(format!("cannot encode the bench report as JSON: {e}"))
    };
    let mut v = serde_json::to_value(report).map_err(err)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "fewer_repetitions".into(),
            serde_json::to_value(report.fewer_reps()).map_err(err)?,
        );
    }
    serde_json::to_string_pretty(&v).map_err(err).map(|mut s| {
        s.push('\n');
        s
    })
}

pub fn from_str(s: &str) -> Result<Report> {
    serde_json::from_str(s).map_err(|e| Error::Format(format!("bench report JSON: {e}")))
}
