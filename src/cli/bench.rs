//! `layerfs bench`: its arguments, turned into the benchmark's `Config` and implementations.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;

use crate::bench;
use crate::bench::config::{self, Config, WorkloadId};
use crate::bench::impls::{self, Implementation};
use crate::{Error, Result};

#[derive(Debug, Clone, Default, Args)]
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
    pub fn config(&self, store_root: &Path) -> Result<Config> {
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
            c.lowers = crate::store::image_lowerdirs(store_root, image)?;
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

/// Signals that stop a run cleanly: Ctrl-C, `kill`, and the terminal closing. The first one
/// stops at the next operation, then everything is unmounted and removed; a second one while
/// cleaning up exits at once (with 128 + its number).
const STOP_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// `layerfs bench ...`; `store_root` is the global `--root` (for `--image`). A run stopped by a
/// signal prints what was measured, cleans up, says so and exits with 128 + the signal's
/// number (130 for Ctrl-C), like a shell reports a job a signal ended.
pub fn run(args: &BenchArgs, store_root: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    if args.workloads.iter().any(|w| w == "lazy") {
        let Some(image) = args.image.as_deref() else {
            return Err(Error::Usage(
                "bench -w lazy: give the image to measure with --image REF (a stored image; \
                 scripts/bench-lazy builds one)"
                    .into(),
            ));
        };
        return crate::lazy::bench::run(image, &args.dir, store_root, !args.warm_only);
    }
    let cfg = args.config(store_root)?;
    let impls = args.implementations()?;
    let stop = Arc::new(AtomicBool::new(false));
    let caught = Arc::new(AtomicUsize::new(0));
    for sig in STOP_SIGNALS {
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .and_then(|_| signal_hook::flag::register_usize(sig, caught.clone(), sig as usize))
            .map_err(|e| Error::io("install signal handler", "SIGINT/SIGTERM/SIGHUP", e))?;
    }
    let stopped = || stop.load(Ordering::Relaxed);
    let report = match bench::run(&cfg, &impls, stop.clone(), args.warm_only, false) {
        Ok(r) => r,
        // Stopped before anything was measured (while building the data): cleaned up by now.
        Err(e) if stopped() => {
            if !bench::scratch::is_interrupted(&e) {
                let _ = writeln!(std::io::stderr(), "layerfs bench: {e}");
            }
            exit_interrupted(caught.load(Ordering::Relaxed))
        }
        Err(e) => return Err(e),
    };
    // After a hang-up the terminal is gone: writes to it fail, and that must neither stop the
    // outputs to files nor become a panic.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bench::report::table::render(&report).as_bytes());
    let _ = out.flush();
    drop(out);
    for p in bench::write_outputs(&report, args.json.as_deref(), args.svg.as_deref())? {
        let _ = writeln!(std::io::stderr(), "wrote {}", p.display());
    }
    if bench::was_interrupted(&report) || stopped() {
        exit_interrupted(caught.load(Ordering::Relaxed));
    }
    Ok(())
}

/// Says that the run was interrupted and exits with 128 + the signal (everything is cleaned up
/// by now).
fn exit_interrupted(sig: usize) -> ! {
    use std::io::Write as _;
    let sig = match i32::try_from(sig) {
        Ok(s) if s > 0 => s,
        _ => signal_hook::consts::SIGINT,
    };
    let _ = writeln!(
        std::io::stderr(),
        "layerfs bench: interrupted by {}: the results above are partial; every mount and \
         the scratch directory were removed",
        signal_name(sig)
    );
    std::process::exit(128 + sig)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGINT => "SIGINT (Ctrl-C)",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP (terminal closed)",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> BenchArgs {
        let mut full = vec!["layerfs", "bench"];
        full.extend_from_slice(argv);
        match super::super::Cli::try_parse_from(full).unwrap().command {
            super::super::Command::Bench(a) => *a,
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
        let c = a.config(Path::new("/nonexistent-store")).unwrap();
        assert!(c.quick);
        assert_eq!(c.workloads, [WorkloadId::Lookup, WorkloadId::RmRf]);
        assert_eq!(
            (c.reps, c.budget, c.tree_files),
            (7, Duration::from_millis(500), 10)
        );
        assert_eq!(c.lookup_layers, [1, 10, 50, 100]);
        let full = args(&[]).config(Path::new("/nonexistent-store")).unwrap();
        assert_eq!(full.copyup_sizes.last(), Some(&(1 << 30)));
        assert_eq!(full.workloads.len(), 8);
    }

    #[test]
    fn bad_names_are_usage_errors_that_list_the_choices() {
        let e = args(&["-w", "copyup"])
            .config(Path::new("/nonexistent-store"))
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
            .config(Path::new("/nonexistent-store"))
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
