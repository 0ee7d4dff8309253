//! What a run does: workloads, their sizes, repetitions and time budgets. `full()` and
//! `quick()` are the two presets; tests shrink them further.
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadId {
    CopyUp,
    Lookup,
    Readdir,
    StatStorm,
    Read,
    Untar,
    RmRf,
    Parallel,
}

impl WorkloadId {
    pub const ALL: [WorkloadId; 8] = [
        WorkloadId::CopyUp,
        WorkloadId::Lookup,
        WorkloadId::Readdir,
        WorkloadId::StatStorm,
        WorkloadId::Read,
        WorkloadId::Untar,
        WorkloadId::RmRf,
        WorkloadId::Parallel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadId::CopyUp => "copy-up",
            WorkloadId::Lookup => "lookup",
            WorkloadId::Readdir => "readdir",
            WorkloadId::StatStorm => "stat-storm",
            WorkloadId::Read => "read",
            WorkloadId::Untar => "untar",
            WorkloadId::RmRf => "rm-rf",
            WorkloadId::Parallel => "parallel",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|w| w.name()).collect();
                Error::Usage(format!(
                    "unknown workload '{s}'; choose from: {}",
                    names.join(", ")
                ))
            })
    }

    /// Whether a repetition changes the tree it runs on (raw then needs a fresh copy).
    pub fn destructive(self) -> bool {
        // untar extracts into a new directory per repetition: the tree underneath is intact.
        matches!(self, WorkloadId::RmRf | WorkloadId::Parallel)
    }
}

/// A deliberate failure for tests of the cleanup paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The workload fails after its implementation has mounted.
    FailAfterMount(WorkloadId),
    /// The stop flag is raised after mounting, as Ctrl-C would.
    StopAfterMount(WorkloadId),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    pub seed: u64,
    pub workloads: Vec<WorkloadId>,
    /// Where the scratch directory is made.
    pub dir: PathBuf,
    pub reps: u32,
    /// No repetition starts after this much time per workload and implementation.
    pub budget: Duration,
    // copy-up and read
    pub copyup_sizes: Vec<u64>,
    pub meta_size: u64,
    pub random_reads: usize,
    // lookup
    pub lookup_layers: Vec<usize>,
    pub lookup_dirs: usize,
    pub lookup_files_per_dir: usize,
    // readdir
    pub readdir_entries: usize,
    pub readdir_layers: usize,
    // main tree: stat storm, rm -rf, parallel
    pub tree_files: usize,
    pub tree_layers: usize,
    /// Given lower dirs (top first) replace the synthetic main tree.
    pub lowers: Vec<PathBuf>,
    // untar
    pub tar_files: usize,
    // parallel
    pub jobs: usize,
    pub ops_per_job: usize,
    pub fault: Option<Fault>,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

pub const DEFAULT_SEED: u64 = 0x1a7e_5f5b;

impl Config {
    pub fn full() -> Self {
        Config {
            quick: false,
            seed: DEFAULT_SEED,
            workloads: WorkloadId::ALL.to_vec(),
            dir: PathBuf::from("/var/tmp"),
            reps: 5,
            budget: Duration::from_secs(20),
            copyup_sizes: vec![4 * KIB, MIB, 64 * MIB, 256 * MIB, GIB],
            meta_size: 64 * MIB,
            random_reads: 4000,
            lookup_layers: vec![1, 10, 50, 100],
            lookup_dirs: 20,
            lookup_files_per_dir: 100,
            readdir_entries: 10_000,
            readdir_layers: 5,
            tree_files: 50_000,
            tree_layers: 20,
            lowers: Vec::new(),
            tar_files: 20_000,
            jobs: 4,
            ops_per_job: 2000,
            fault: None,
        }
    }

    pub fn quick() -> Self {
        Config {
            quick: true,
            reps: 3,
            budget: Duration::from_millis(1500),
            copyup_sizes: vec![4 * KIB, MIB, 16 * MIB],
            meta_size: MIB,
            random_reads: 500,
            lookup_dirs: 10,
            lookup_files_per_dir: 50,
            readdir_entries: 3000,
            tree_files: 2000,
            tree_layers: 3,
            tar_files: 1000,
            jobs: 4,
            ops_per_job: 300,
            ..Config::full()
        }
    }

    /// The hard limit of one repetition: past it the repetition fails.
    pub fn rep_limit(&self) -> Duration {
        (self.budget * 3).max(Duration::from_secs(60))
    }
}
