//! `layerfs efficiency IMAGE`: dive's image efficiency score and wasted bytes, with dive's
//! definitions (wagoodman/dive, `filetree/efficiency.go` and `image.Analyze`):
//!
//! - Each layer is its own tree of entries. Its *leaves* (non-directories, and directories
//!   with nothing inside in that layer) are visited, layer by layer, bottom first. A leaf's
//!   size is its tar size: a regular file's bytes (a hard link's second name 0), anything else
//!   0; a whiteout's size is the whole subtree it deletes when the layers below show a
//!   directory there, else 0.
//! - Per path: `cumulative` = the sum of its sizes over the layers that hold it, `min` = the
//!   smallest of them. efficiency = Σ min / Σ cumulative over all paths (1 when Σ is 0).
//! - The *inefficient* paths are those found in two layers or more; wasted bytes = the sum of
//!   their `cumulative` (the kept copy included, as dive counts it).
//! - Layer size = the sum of its entries' sizes (whiteouts 0); user size = all layers but the
//!   bottom one; user wasted percent = wasted bytes / user size (a ratio, 0 when user size is 0).
//!
//! Like dive, opaque-directory markers are not entries (they neither add nor delete). Where dive
//! stacks layer trees to size a deleted directory, the layers below are merged here with
//! overlay rules (an opaque directory below hides what it hid).
//!
//! CI rules (dive's `--ci`): fail when efficiency < `lowest_efficiency`, wasted bytes >
//! `highest_wasted_bytes`, or user wasted percent > `highest_user_wasted_percent`.
use std::collections::{BTreeMap, HashSet};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{FileType, OFlags};
use serde::Serialize;

use super::diff::{os, subtree_size};
use super::fsread::is_wh_name;
use super::target::Target;
use crate::container::lower::{Found, LayerStack, child_path};
use crate::image::pack::sorted_names;
use crate::{Error, Result, sys};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inefficiency {
    pub path: String,
    /// How many layers hold the path.
    pub count: usize,
    pub cumulative_size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Efficiency {
    pub efficiency: f64,
    pub wasted_bytes: u64,
    pub user_wasted_percent: f64,
    pub size_bytes: u64,
    pub user_size_bytes: u64,
    pub layer_sizes: Vec<u64>,
    /// Largest cumulative size first.
    pub inefficiencies: Vec<Inefficiency>,
}

/// One leaf of one layer: (absolute path, size).
type Leaf = (String, u64);

/// dive's analysis of a target's layers.
pub fn analyze(t: &Target) -> Result<Efficiency> {
    let paths: Vec<std::path::PathBuf> = t.layers.iter().map(|l| l.path.clone()).collect();
    // Bottom first here: index i is layer i.
    let all = LayerStack::open(&paths)?;
    let mut per_path: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    let mut layer_sizes = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let below: Vec<usize> = (0..i).rev().collect();
        let mut w = LayerWalk {
            stack: &all,
            layer: i,
            below,
            leaves: Vec::new(),
            size: 0,
            inodes: HashSet::new(),
        };
        let root = sys::open_at(all.fd(i), c".", OFlags::RDONLY | OFlags::DIRECTORY, 0)
            .map_err(|e| Error::io("open", path, e.into()))?;
        w.dir(root.as_fd(), c".")?;
        layer_sizes.push(w.size);
        for (p, size) in w.leaves {
            let e = per_path.entry(p).or_insert((0, 0, u64::MAX));
            e.0 += 1;
            e.1 += size;
            e.2 = e.2.min(size);
        }
    }
    let (mut min_sum, mut cum_sum) = (0u64, 0u64);
    let mut inefficiencies = Vec::new();
    for (p, (count, cum, min)) in per_path {
        min_sum += min;
        cum_sum += cum;
        if count >= 2 {
            inefficiencies.push(Inefficiency {
                path: p,
                count,
                cumulative_size: cum,
            });
        }
    }
    inefficiencies.sort_by(|a, b| {
        b.cumulative_size
            .cmp(&a.cumulative_size)
            .then_with(|| a.path.cmp(&b.path))
    });
    let wasted_bytes: u64 = inefficiencies.iter().map(|i| i.cumulative_size).sum();
    let size_bytes = layer_sizes.iter().sum();
    let user_size_bytes: u64 = layer_sizes.iter().skip(1).sum();
    Ok(Efficiency {
        efficiency: if cum_sum == 0 {
            1.0
        } else {
            min_sum as f64 / cum_sum as f64
        },
        wasted_bytes,
        user_wasted_percent: if user_size_bytes == 0 {
            0.0
        } else {
            wasted_bytes as f64 / user_size_bytes as f64
        },
        size_bytes,
        user_size_bytes,
        layer_sizes,
        inefficiencies,
    })
}

struct LayerWalk<'a> {
    stack: &'a LayerStack,
    layer: usize,
    /// The layers below this one (indexes, top first), to size what a whiteout deletes.
    below: Vec<usize>,
    leaves: Vec<Leaf>,
    size: u64,
    /// Hard links: an inode's bytes count once per layer, for its first name.
    inodes: HashSet<(u64, u64)>,
}

fn abs(rel: &CStr) -> String {
    format!("/{}", rel.to_string_lossy())
}

impl LayerWalk<'_> {
    fn err(&self, op: &'static str, rel: &CStr, e: rustix::io::Errno) -> Error {
        Error::io(op, self.stack.path(self.layer).join(os(rel)), e.into())
    }

    /// Visits a directory of this layer; returns whether it has any entry.
    fn dir(&mut self, fd: BorrowedFd<'_>, rel: &CStr) -> Result<bool> {
        let names = sorted_names(fd).map_err(|e| self.err("read directory", rel, e))?;
        let mut any = false;
        for name in names {
            if is_wh_name(os(&name)) {
                continue;
            }
            any = true;
            let path = child_path(rel, &name);
            let st = sys::lstat_at(fd, &name).map_err(|e| self.err("stat", &path, e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let sub = sys::open_at(fd, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
                        .map_err(|e| self.err("open", &path, e))?;
                    if !self.dir(sub.as_fd(), &path)? {
                        self.leaves.push((abs(&path), 0));
                    }
                }
                _ if sys::is_whiteout(&st) => {
                    let size = self.deleted_size(&path)?;
                    self.leaves.push((abs(&path), size));
                }
                FileType::RegularFile => {
                    let first = st.st_nlink <= 1 || self.inodes.insert((st.st_dev, st.st_ino));
                    let size = if first { st.st_size as u64 } else { 0 };
                    self.size += size;
                    self.leaves.push((abs(&path), size));
                }
                _ => self.leaves.push((abs(&path), 0)),
            }
        }
        Ok(any)
    }

    /// What a whiteout at `rel` deletes: the subtree of a directory the layers below show.
    fn deleted_size(&self, rel: &CStr) -> Result<u64> {
        if self.below.is_empty() {
            return Ok(0);
        }
        let mut cur = self.stack.root_of(&self.below)?;
        let mut sofar = std::ffi::CString::from(c".");
        let comps: Vec<&[u8]> = rel.to_bytes().split(|&b| b == b'/').collect();
        for (k, comp) in comps.iter().enumerate() {
            sofar = sys::join(
                &sofar,
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(comp),
            );
            match self.stack.lookup(&cur, &sofar)? {
                Found::Dir { layers, .. } if k + 1 == comps.len() => {
                    return subtree_size(self.stack, &sofar, &layers);
                }
                Found::Dir { layers, .. } => cur = layers,
                _ => return Ok(0),
            }
        }
        Ok(0)
    }
}

/// dive's three CI thresholds; `None` = the rule is disabled.
#[derive(Clone, Debug, PartialEq)]
pub struct CiRules {
    pub lowest_efficiency: Option<f64>,
    pub highest_wasted_bytes: Option<u64>,
    pub highest_user_wasted_percent: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleResult {
    /// dive's key: lowestEfficiency, highestWastedBytes, highestUserWastedPercent.
    pub rule: &'static str,
    /// `None`: disabled.
    pub passed: Option<bool>,
    pub message: String,
}

/// Evaluates the rules (dive's comparisons: strictly below / strictly above fails).
pub fn evaluate(e: &Efficiency, r: &CiRules) -> Vec<RuleResult> {
    let mut out = Vec::new();
    let mut rule = |name: &'static str, verdict: Option<(bool, String)>| {
        out.push(match verdict {
            None => RuleResult {
                rule: name,
                passed: None,
                message: "disabled".into(),
            },
            Some((ok, m)) => RuleResult {
                rule: name,
                passed: Some(ok),
                message: m,
            },
        });
    };
    rule(
        "lowestEfficiency",
        r.lowest_efficiency.map(|t| {
            (
                e.efficiency >= t,
                format!("efficiency {:.4} (threshold {t})", e.efficiency),
            )
        }),
    );
    rule(
        "highestWastedBytes",
        r.highest_wasted_bytes.map(|t| {
            (
                e.wasted_bytes <= t,
                format!("wasted bytes {} (threshold {t})", e.wasted_bytes),
            )
        }),
    );
    rule(
        "highestUserWastedPercent",
        r.highest_user_wasted_percent.map(|t| {
            (
                e.user_wasted_percent <= t,
                format!(
                    "user wasted percent {:.4} (threshold {t})",
                    e.user_wasted_percent
                ),
            )
        }),
    );
    out
}

/// Parses a byte count like dive (go-humanize): `1000`, `20MB`, `20 MiB`, `1.5kB`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Usage(format!("{s:?} is not a byte count (e.g. 20MB, 1GiB, 5000)")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        u => {
            return Err(Error::Usage(format!(
                "{s:?}: unknown unit {u:?} (use B, kB, MB, GB, KiB, MiB, GiB)"
            )));
        }
    };
    Ok((n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("5000").unwrap(), 5000);
        assert_eq!(parse_bytes("20MB").unwrap(), 20_000_000);
        assert_eq!(parse_bytes("1.5 kB").unwrap(), 1500);
        assert_eq!(parse_bytes("2MiB").unwrap(), 2 << 20);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn rules_compare_like_dive() {
        let e = Efficiency {
            efficiency: 0.9,
            wasted_bytes: 100,
            user_wasted_percent: 0.1,
            size_bytes: 0,
            user_size_bytes: 0,
            layer_sizes: vec![],
            inefficiencies: vec![],
        };
        let at = CiRules {
            lowest_efficiency: Some(0.9),
            highest_wasted_bytes: Some(100),
            highest_user_wasted_percent: Some(0.1),
        };
        assert!(evaluate(&e, &at).iter().all(|r| r.passed == Some(true)));
        let over = CiRules {
            lowest_efficiency: Some(0.95),
            highest_wasted_bytes: Some(99),
            highest_user_wasted_percent: None,
        };
        let r = evaluate(&e, &over);
        assert_eq!(r[0].passed, Some(false));
        assert_eq!(r[1].passed, Some(false));
        assert_eq!(r[2].passed, None);
    }
}
