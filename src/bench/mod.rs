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
use std::time::{Duration, Instant, SystemTime};

use crate::{Error, Result};

pub mod config;
pub mod dataset;
pub mod impls;
pub mod machine;
pub mod mounts;
pub mod progress;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scratch;
pub mod stats;
pub mod tree;
pub mod workloads;

use config::{Config, WorkloadId};
use impls::Implementation;
use report::Report;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// A short run (under a minute): smaller files and trees, fewer repetitions
    #[arg(long)]
    pub quick: bool,
    /// Implementations, comma separated: layerfs, overlay, fuse-overlayfs, raw [default: all]
    #[arg(long = "impl", value_delimiter = ',', value_name = "LIST")]
    pub impls: Vec<String>,
    /// Also measure this mount command; {lowerdir} {upperdir} {workdir} {mnt} are substituted.
    /// It must return once mounted (daemonize). Repeatable
    #[arg(long = "vs", value_name = "CMD")]
    pub vs: Vec<String>,
    /// Workloads, comma separated: copy-up, lookup, readdir, stat-storm, read, untar, rm-rf,
    /// parallel [default: all]; `lazy` (alone, with --image) compares mount --lazy with
    /// pull + mount through a local registry
    #[arg(
        long = "workload",
        short = 'w',
        value_delimiter = ',',
        value_name = "LIST"
    )]
    pub workloads: Vec<String>,
    /// Write every sample and the machine description as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write SVG charts into this directory
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
    /// Where to build layers and mount (its file system is what everything sits on)
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Seed of every generated name, size and byte
    #[arg(long, default_value_t = config::DEFAULT_SEED)]
    pub seed: u64,
    /// Repetitions per case [default: 5, quick 3]
    #[arg(long)]
    pub reps: Option<u32>,
    /// Seconds per workload and implementation after which no repetition starts [default: 20,
    /// quick 1.5]
    #[arg(long, value_name = "SECS")]
    pub budget: Option<f64>,
    /// Jobs of the parallel workload
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Layers of the synthetic main tree (stat-storm, untar, rm-rf, parallel)
    #[arg(long)]
    pub layers: Option<usize>,
    /// Files in the synthetic main tree [default: 20000, quick 2000]
    #[arg(long)]
    pub files: Option<usize>,
    /// Use these lower dirs (top first; repeat or separate with ':') as the main tree
    #[arg(
        long = "lower",
        value_name = "DIR",
        value_delimiter = ':',
        conflicts_with = "image"
    )]
    pub lowers: Vec<PathBuf>,
    /// Use the layers of this stored image (see `layerfs images`) as the main tree
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Never drop the page cache, even as root
    #[arg(long)]
    pub warm_only: bool,
    /// The layerfs binary to measure [default: this one]
    #[arg(long, value_name = "PATH")]
    pub layerfs_bin: Option<PathBuf>,
}

impl BenchArgs {
    /// The run's configuration; `store_root` is the global `--root` (for `--image`).
    pub fn config(&self, store_root: Option<&Path>) -> Result<Config> {
        let mut c = if self.quick {
            Config::quick()
        } else {
            Config::full()
        };
        c.dir = self.dir.clone();
        c.seed = self.seed;
        if !self.workloads.is_empty() {
            c.workloads = self
                .workloads
                .iter()
                .map(|w| WorkloadId::parse(w.trim()))
                .collect::<Result<_>>()?;
        }
        if let Some(r) = self.reps {
            c.reps = r.max(1);
        }
        if let Some(b) = self.budget {
            c.budget = Duration::try_from_secs_f64(b)
                .map_err(|_| Error::Usage(format!("--budget {b}: give seconds, e.g. 30")))?;
        }
        c.jobs = self.jobs.unwrap_or(c.jobs).max(1);
        c.tree_layers = self.layers.unwrap_or(c.tree_layers).max(1);
        c.tree_files = self.files.unwrap_or(c.tree_files).max(1);
        for l in &self.lowers {
            if !l.is_dir() {
                return Err(Error::Usage(format!(
                    "--lower {}: not a directory",
                    l.display()
                )));
            }
        }
        c.lowers = self
            .lowers
            .iter()
            .map(|l| l.canonicalize().map_err(|e| Error::io("resolve", l, e)))
            .collect::<Result<_>>()?;
        if let Some(image) = &self.image {
            let root = store_root
                .map(Path::to_path_buf)
                .unwrap_or_else(crate::store::Store::default_root);
            c.lowers = crate::store::image_lowerdirs(&root, image)?;
        }
        Ok(c)
    }

    pub fn implementations(&self) -> Result<Vec<Implementation>> {
        let exe = match &self.layerfs_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| Error::io("find", "this program", e))?,
        };
        let names: Vec<String> = if self.impls.is_empty() {
            impls::BUILTIN.iter().map(|s| s.to_string()).collect()
        } else {
            self.impls.iter().map(|s| s.trim().to_string()).collect()
        };
        let mut out: Vec<Implementation> = Vec::new();
        for n in &names {
            let i = Implementation::builtin(n, &exe).ok_or_else(|| {
                Error::Usage(format!(
                    "unknown implementation '{n}'; choose from {} or add one with --vs 'CMD'",
                    impls::BUILTIN.join(", ")
                ))
            })?;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        for t in &self.vs {
            let taken: Vec<String> = out.iter().map(|i| i.name.clone()).collect();
            out.push(Implementation::custom(t, &taken)?);
        }
        Ok(out)
    }
}

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

/// `layerfs bench ...`; `store_root` is the global `--root`.
pub fn command(args: &BenchArgs, store_root: Option<&Path>) -> Result<()> {
    if args.workloads.iter().any(|w| w == "lazy") {
        return crate::lazy::bench::command(args, store_root);
    }
    let cfg = args.config(store_root)?;
    let impls = args.implementations()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while cleaning up terminates at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| Error::io("install signal handler", "SIGINT/SIGTERM", e))?;
    }
    let report = run(&cfg, &impls, stop, args.warm_only, false)?;
    print!("{}", report::table::render(&report));
    for p in write_outputs(&report, args.json.as_deref(), args.svg.as_deref())? {
        eprintln!("wrote {}", p.display());
    }
    if was_interrupted(&report) {
        return Err(scratch::interrupted());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> BenchArgs {
        let mut full = vec!["layerfs", "bench"];
        full.extend_from_slice(argv);
        match crate::cli::Cli::try_parse_from(full).unwrap().command {
            crate::cli::Command::Bench(a) => *a,
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn flags_override_the_preset() {
        let a = args(&[
            "--quick",
            "-w",
            "lookup,rm-rf",
            "--reps",
            "7",
            "--budget",
            "0.5",
            "--files",
            "10",
        ]);
        let c = a.config(None).unwrap();
        assert!(c.quick);
        assert_eq!(c.workloads, [WorkloadId::Lookup, WorkloadId::RmRf]);
        assert_eq!(
            (c.reps, c.budget, c.tree_files),
            (7, Duration::from_millis(500), 10)
        );
        assert_eq!(c.lookup_layers, [1, 10, 50, 100]);
        let full = args(&[]).config(None).unwrap();
        assert_eq!(full.copyup_sizes.last(), Some(&(1 << 30)));
        assert_eq!(full.workloads.len(), 8);
    }

    #[test]
    fn bad_names_are_usage_errors_that_list_the_choices() {
        let e = args(&["-w", "copyup"])
            .config(None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown workload 'copyup'") && e.contains("copy-up, lookup"),
            "{e}"
        );
        let e = args(&["--impl", "overlayfs"])
            .implementations()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'overlayfs'") && e.contains("fuse-overlayfs"),
            "{e}"
        );
        let e = args(&["--lower", "/nonexistent/x"])
            .config(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x"), "{e}");
    }

    #[test]
    fn implementations_default_to_all_plus_vs() {
        let a = args(&[
            "--vs",
            "mytool -o lowerdir={lowerdir} {mnt}",
            "--layerfs-bin",
            "/x/layerfs",
        ]);
        let names: Vec<String> = a
            .implementations()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(
            names,
            ["layerfs", "overlay", "fuse-overlayfs", "raw", "mytool"]
        );
        let a = args(&["--impl", "raw,overlay,raw"]);
        let names: Vec<String> = a
            .implementations()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["raw", "overlay"]);
    }
}
