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

/// `layerfs bench ...`; `store_root` is the global `--root` (for `--image`).
pub fn run(args: &BenchArgs, store_root: &Path) -> Result<()> {
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
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while cleaning up terminates at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| Error::io("install signal handler", "SIGINT/SIGTERM", e))?;
    }
    let report = bench::run(&cfg, &impls, stop, args.warm_only, false)?;
    print!("{}", bench::report::table::render(&report));
    for p in bench::write_outputs(&report, args.json.as_deref(), args.svg.as_deref())? {
        eprintln!("wrote {}", p.display());
    }
    if bench::was_interrupted(&report) {
        return Err(bench::scratch::interrupted());
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
