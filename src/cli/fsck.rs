//! `layerfs fsck [--repair]`: the store checked (and repaired) by `store::fsck`, reported in
//! plain words. Exit status 0 when nothing is left to repair, 1 otherwise.
use std::io::Write;
use std::path::Path;

use clap::Args;

use crate::store::fsck::{FsckOptions, FsckReport, Outcome, fsck};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Repair what the store holds the means to repair (records, names, layers, orphans)
    #[arg(long)]
    pub repair: bool,
    /// Also compare every layer byte by byte with a fresh extraction of its kept blob
    #[arg(long)]
    pub deep: bool,
}

pub fn run(root: &Path, a: &FsckArgs) -> Result<()> {
    let opts = FsckOptions {
        repair: a.repair,
        deep: a.deep,
    };
    let report = fsck(root, &opts)?;
    let mut out = std::io::stdout().lock();
    write_report(&mut out, &report, a.repair).map_err(|e| Error::io("write", "<stdout>", e))?;
    if report.is_clean() {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "{}: damage left ({})",
            root.display(),
            if a.repair {
                "see above for what needs you"
            } else {
                "run `layerfs fsck --repair`"
            }
        )))
    }
}

fn write_report(out: &mut dyn Write, r: &FsckReport, repair: bool) -> std::io::Result<()> {
    writeln!(
        out,
        "checked {} image(s), {} layer(s), {} blob(s)",
        r.images, r.layers, r.blobs
    )?;
    for f in &r.findings {
        writeln!(out, "problem: {}", f.problem)?;
        match &f.outcome {
            Outcome::Repaired(what) => writeln!(out, "  repaired: {what}")?,
            Outcome::Repairable(what) => writeln!(out, "  --repair would: {what}")?,
            Outcome::Manual(what) => writeln!(out, "  needs you: {what}")?,
            Outcome::Leftover(what) => writeln!(out, "  {what}")?,
        }
    }
    let left = r
        .findings
        .iter()
        .filter(|f| !matches!(f.outcome, Outcome::Repaired(_) | Outcome::Leftover(_)))
        .count();
    match (r.findings.len(), left) {
        (_, 0)
            if r.findings
                .iter()
                .all(|f| !matches!(f.outcome, Outcome::Repaired(_))) =>
        {
            writeln!(out, "the store is clean")
        }
        (n, 0) => writeln!(out, "{n} problem(s) repaired; the store is clean"),
        (_, n) if repair => writeln!(out, "{n} problem(s) left"),
        (_, n) => writeln!(out, "{n} problem(s) found"),
    }
}
