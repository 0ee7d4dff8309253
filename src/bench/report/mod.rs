//! The results of a run and everything derived from them. Pure: no I/O here except in the
//! callers of `json::to_string`, `table::render` and `svg::charts`, which return text.
//!
//! A `Sample` is one timed span of one repetition; its value is `seconds / ops` (time per
//! operation), so lower is always better. Samples with the same `Key` (workload, metric, case,
//! cache state) form one row; each implementation gets a `Summary` (median, min, max) per row,
//! and ratios compare medians of the same row against `overlay` and against `raw`.
use serde::{Deserialize, Serialize};

use crate::bench::stats::{self, Summary};

pub mod format;
pub mod json;
pub mod svg;
pub mod table;

/// The two implementations every other one is compared against.
pub const BASELINE_KERNEL: &str = "overlay";
pub const BASELINE_RAW: &str = "raw";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// The page cache, dentries and inodes were dropped before the timed span (root only).
    Cold,
    /// Caches were left as they were.
    Warm,
}

impl Cache {
    pub fn as_str(self) -> &'static str {
        match self {
            Cache::Cold => "cold",
            Cache::Warm => "warm",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub implementation: String,
    pub workload: String,
    /// What was timed, e.g. "first 1-byte append".
    pub metric: String,
    /// The parameter of this case as a person reads it ("64 MiB", "10 layers"), or "".
    pub case: String,
    /// The same parameter as a number, for charts (bytes, layer count, jobs).
    pub x: Option<f64>,
    pub cache: Cache,
    /// Repetition number, from 1.
    pub rep: u32,
    /// Wall time of the timed span.
    pub seconds: f64,
    /// Operations in the span; the reported value is `seconds / ops`.
    pub ops: u64,
    /// Bytes moved per operation, when a throughput makes sense.
    pub bytes: Option<u64>,
}

impl Sample {
    /// Time per operation in seconds.
    pub fn value(&self) -> f64 {
        self.seconds / self.ops.max(1) as f64
    }

    pub fn key(&self) -> Key {
        Key {
            workload: self.workload.clone(),
            metric: self.metric.clone(),
            case: self.case.clone(),
            cache: self.cache,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub workload: String,
    pub metric: String,
    pub case: String,
    pub cache: Cache,
}

impl Key {
    /// "copy-up: first 1-byte append, 4 KiB (cold)"
    pub fn label(&self) -> String {
        let case = if self.case.is_empty() {
            String::new()
        } else {
            format!(", {}", self.case)
        };
        format!(
            "{}: {}{} ({})",
            self.workload,
            self.metric,
            case,
            self.cache.as_str()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `uname -r`
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    /// Where the layers, upper dirs and flattened copies were made.
    pub work_dir: String,
    /// File system type of the work dir (from /proc/self/mountinfo), e.g. "ext4".
    pub work_dir_fs: String,
    /// Whether cold runs dropped the page cache (needs root).
    pub cold_caches: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub quick: bool,
    pub seed: u64,
    pub workloads: Vec<String>,
    /// Repetitions asked for per workload (fewer when the time budget ran out).
    pub reps: u32,
    /// Time budget per workload and implementation: no repetition starts after it.
    pub budget_seconds: f64,
    pub jobs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ImplStatus {
    Ran,
    Skipped { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImplInfo {
    pub name: String,
    /// The mount command (template) as run.
    pub command: String,
    /// `--version` output's first line, when the tool has one.
    pub version: Option<String>,
    #[serde(flatten)]
    pub status: ImplStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub implementation: String,
    pub workload: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Version of this JSON layout.
    pub format: u32,
    pub tool: String,
    pub started_unix: u64,
    pub elapsed_seconds: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub implementations: Vec<ImplInfo>,
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
}

pub const FORMAT_VERSION: u32 = 1;

/// One row: a key and the summary of each implementation that has samples for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: Key,
    pub x: Option<f64>,
    pub bytes: Option<u64>,
    /// In the order of `Report::implementations`.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub implementation: String,
    pub summary: Summary,
    /// Median over the kernel overlay's median in the same row.
    pub vs_kernel: Option<f64>,
    /// Median over raw's median in the same row.
    pub vs_raw: Option<f64>,
}

impl Row {
    /// The most repetitions any implementation got in this row.
    pub fn most_reps(&self) -> usize {
        self.cells.iter().map(|c| c.summary.n).max().unwrap_or(0)
    }

    /// `Some((n, most))` when `cell` got fewer repetitions than another implementation in this
    /// row (its time budget ran out first): its median is less certain than the others'.
    pub fn fewer_reps(&self, cell: &Cell) -> Option<(usize, usize)> {
        let most = self.most_reps();
        (cell.summary.n < most).then_some((cell.summary.n, most))
    }
}

/// One implementation that got fewer repetitions than another in the same row (in the JSON
/// report as `fewer_repetitions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FewerReps {
    pub implementation: String,
    pub workload: String,
    pub metric: String,
    pub case: String,
    pub cache: Cache,
    pub repetitions: usize,
    /// The most any implementation got in that row.
    pub most_repetitions: usize,
}

impl Report {
    /// Every (row, implementation) with fewer repetitions than the row's best.
    pub fn fewer_reps(&self) -> Vec<FewerReps> {
        let mut out = Vec::new();
        for row in self.rows() {
            for c in &row.cells {
                if let Some((n, most)) = row.fewer_reps(c) {
                    out.push(FewerReps {
                        implementation: c.implementation.clone(),
                        workload: row.key.workload.clone(),
                        metric: row.key.metric.clone(),
                        case: row.key.case.clone(),
                        cache: row.key.cache,
                        repetitions: n,
                        most_repetitions: most,
                    });
                }
            }
        }
        out
    }

    /// Implementation names in the order they were asked for, then any others seen in samples.
    pub fn impl_order(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .implementations
            .iter()
            .map(|i| i.name.clone())
            .collect();
        for s in &self.samples {
            if !names.contains(&s.implementation) {
                names.push(s.implementation.clone());
            }
        }
        names
    }

    /// Rows in the order their first sample appeared.
    pub fn rows(&self) -> Vec<Row> {
        let mut keys: Vec<Key> = Vec::new();
        for s in &self.samples {
            let k = s.key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let order = self.impl_order();
        keys.into_iter().map(|key| self.row(key, &order)).collect()
    }

    fn row(&self, key: Key, order: &[String]) -> Row {
        let of_key: Vec<&Sample> = self.samples.iter().filter(|s| s.key() == key).collect();
        let summary_of = |name: &str| {
            let values: Vec<f64> = of_key
                .iter()
                .filter(|s| s.implementation == name)
                .map(|s| s.value())
                .collect();
            stats::summarize(&values)
        };
        let kernel = summary_of(BASELINE_KERNEL);
        let raw = summary_of(BASELINE_RAW);
        let cells = order
            .iter()
            .filter_map(|name| {
                let summary = summary_of(name)?;
                Some(Cell {
                    implementation: name.clone(),
                    summary,
                    vs_kernel: kernel.and_then(|k| stats::ratio(summary.median, k.median)),
                    vs_raw: raw.and_then(|r| stats::ratio(summary.median, r.median)),
                })
            })
            .collect();
        Row {
            x: of_key.first().and_then(|s| s.x),
            bytes: of_key.first().and_then(|s| s.bytes),
            key,
            cells,
        }
    }
}
