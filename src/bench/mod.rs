//! `layerfs bench`: copy-on-write behaviour measured on this machine, side by side.
//!
//! ```text
//! config     what to run (presets full / quick, overridden by flags)
//! dataset    seeded synthetic layers and the cases of each workload
//! workloads  functions over a mounted directory, independent of the implementation
//! impls      mount-command templates (layerfs, overlay, fuse-overlayfs, --vs) and raw
//! runner     mount, run, unmount, per repetition; failures recorded, not fatal
//! report     pure over samples: table, JSON, SVG
//! scratch    temp dirs that never delete through a live mount; stop flag; drop_caches
//! ```
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use crate::{Error, Result};

pub mod config;
pub mod dataset;
pub mod impls;
pub mod machine;
pub mod progress;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scratch;
pub mod stats;
pub mod tree;
pub mod workloads;

use config::Config;
use impls::Implementation;
use report::Report;

/// Runs the benchmark and returns its report. `stop` ends the run early (cleanly) when set.
/// Everything made under `cfg.dir` is unmounted and removed before this returns.
pub fn run(
    cfg: &Config,
    impls: &[Implementation],
    stop: Arc<AtomicBool>,
    warm_only: bool,
    quiet: bool,
) -> Result<Report> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if !cfg.dir.is_dir() {
        return Err(Error::Usage(format!(
            "--dir {}: not a directory",
            cfg.dir.display()
        )));
    }
    let cold = !warm_only && scratch::can_drop_caches();
    let scratch = scratch::ScratchDir::create(&cfg.dir, "lfb")?;
    let mut progress = progress::Progress::new(quiet);
    let outcome =
        runner::Runner::new(cfg, scratch::Ctl::new(stop), cold, &scratch, &mut progress).run(impls);
    progress.show("cleaning up", "");
    let removed = scratch.remove();
    progress.finish();
    let outcome = outcome?;
    removed?;
    let mut failures = outcome.failures;
    if outcome.interrupted {
        failures.push(report::Failure {
            implementation: "(all)".into(),
            workload: "(run)".into(),
            error: "interrupted; the results above are partial".into(),
        });
    }
    Ok(Report {
        format: report::FORMAT_VERSION,
        tool: format!("layerfs {}", env!("CARGO_PKG_VERSION")),
        started_unix,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        machine: machine::describe(&cfg.dir, cold),
        settings: report::Settings {
            quick: cfg.quick,
            seed: cfg.seed,
            workloads: cfg.workloads.iter().map(|w| w.name().to_string()).collect(),
            reps: cfg.reps,
            budget_seconds: cfg.budget.as_secs_f64(),
            jobs: cfg.jobs,
        },
        implementations: outcome.implementations,
        samples: outcome.samples,
        failures,
    })
}

/// Whether the report ends with the interruption marker `run` adds.
pub fn was_interrupted(r: &Report) -> bool {
    r.failures.iter().any(|f| f.workload == "(run)")
}

/// Writes `text` to `path` through a temporary file and one rename.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
}

/// Writes the outputs asked for; returns the files written.
pub fn write_outputs(
    report: &Report,
    json: Option<&Path>,
    svg: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if let Some(p) = json {
        write_atomic(p, &report::json::to_string(report)?)?;
        written.push(p.to_path_buf());
    }
    if let Some(dir) = svg {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        for (name, text) in report::svg::charts(report) {
            let p = dir.join(name);
            write_atomic(&p, &text)?;
            written.push(p);
        }
    }
    Ok(written)
}
