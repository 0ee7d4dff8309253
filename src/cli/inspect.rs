//! Command-line types and printing for the inspection commands: diff, layers, efficiency,
//! explore. The work is done by `crate::inspect`.
use std::io::{IsTerminal, Write};
use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};

use crate::human::human_size;
use crate::inspect::diff::{self, Change, DiffOptions};
use crate::inspect::efficiency::{self as eff, CiRules};
use crate::inspect::layers::{self, LayersOptions, SortBy};
use crate::inspect::target::{self, Target};
use crate::inspect::{config, packages};
use crate::reference::Reference;
use crate::registry::auth::AuthFiles;
use crate::registry::pull::{PullOptions, pull};
use crate::store::{LockMode, Store};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Show what changed from A to B (images, containers or layers): A added, C changed,
    /// D deleted. Without B: a container against its image, an image or layer against the
    /// layers below its top one
    Diff(DiffArgs),
    /// Per layer of an image: the paths it adds (A), modifies (C) and removes (D), with sizes
    Layers(LayersArgs),
    /// dive's efficiency score, wasted bytes and the top wasted files; --ci checks thresholds
    Efficiency(EfficiencyArgs),
    /// Browse an image's or container's layers and files in the terminal (no mount needed)
    Explore(ExploreArgs),
}

mod explore;

#[derive(Debug, Args)]
pub struct ExploreArgs {
    /// IMAGE, CONTAINER, IMAGE@N or a layer
    pub target: String,
    /// Mark the tree against this image instead of the layer below (also: key d)
    #[arg(long)]
    pub diff: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    Path,
    /// Largest first
    Size,
}

#[derive(Debug, Args)]
pub struct LayersArgs {
    /// IMAGE, CONTAINER (its writable layer is the last), IMAGE@N or a layer
    pub target: String,
    /// Order of the paths within a layer
    #[arg(long, value_enum, default_value = "path")]
    pub sort: SortKey,
    /// Only paths under this prefix (`/etc`), or matching this glob (`*.so*`; `*` crosses `/`)
    #[arg(long)]
    pub filter: Option<String>,
    /// Only layer N (0 = bottom)
    #[arg(long)]
    pub layer: Option<usize>,
    /// Only the per-layer totals
    #[arg(long)]
    pub summary: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EfficiencyArgs {
    /// IMAGE, CONTAINER, IMAGE@N or a layer
    pub target: String,
    /// How many of the top wasted files to list
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Check dive's CI rules and exit 1 when one fails (defaults: lowest efficiency 0.9,
    /// highest user wasted percent 0.1, highest wasted bytes disabled)
    #[arg(long)]
    pub ci: bool,
    /// Fail below this efficiency (0-1, or `disabled`)
    #[arg(long, requires = "ci")]
    pub lowest_efficiency: Option<String>,
    /// Fail above this many wasted bytes (`20MB`, `1GiB`, `5000`, or `disabled`)
    #[arg(long, requires = "ci")]
    pub highest_wasted_bytes: Option<String>,
    /// Fail above this ratio of wasted bytes to the bytes of all layers but the bottom one
    /// (0-1, or `disabled`)
    #[arg(long, requires = "ci")]
    pub highest_user_wasted_percent: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffType {
    /// Files and directories (docker diff)
    File,
    /// The image config: Env, Cmd, Entrypoint, Labels, ports, user, platform...
    Config,
    /// The history entries
    History,
    /// Installed packages (dpkg, apk) read from the images' files
    Packages,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old side (alone: what to show the changes of): IMAGE, CONTAINER, IMAGE@N (its layers
    /// 0..=N, 0 = bottom), a layer's chain ID or diff_id prefix, an archive or OCI layout path
    /// (docker-archive:, oci-archive:, oci:, or a path with a `/`); `image:`, `container:`,
    /// `layer:` force the kind
    pub a: String,
    /// The new side (same forms). Without it: A's parent against A (a container's image; an
    /// image or layer without its top layer)
    pub b: Option<String>,
    /// What to compare
    #[arg(long = "type", value_enum, default_value = "file")]
    pub kind: DiffType,
    /// Show sizes (A, C: the size after; D: the size before, a directory's whole subtree)
    #[arg(short = 's', long)]
    pub size: bool,
    /// Print JSON (files: docker's API form, Kind 0 = C, 1 = A, 2 = D)
    #[arg(long)]
    pub json: bool,
}

pub fn run(root: &Path, cmd: InspectCommand) -> Result<()> {
    let store = Store::open(root, LockMode::Shared)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        InspectCommand::Diff(a) => diff_cmd(&store, &a, &mut out),
        InspectCommand::Layers(a) => layers_cmd(&store, &a, &mut out),
        InspectCommand::Efficiency(a) => efficiency_cmd(&store, &a, &mut out),
        InspectCommand::Explore(a) => {
            drop(out);
            let t = resolve(&store, &a.target)?;
            let mut ex = crate::inspect::explore::Explorer::new(t)?;
            if let Some(b) = &a.diff {
                ex.compare = Some(resolve(&store, b)?);
                ex.rebuild()?;
            }
            let find = |s: &str| target::resolve(&store, s);
            explore::run(ex, &find)
        }
    }
}

fn emit(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())
        .map_err(|e| Error::io("write", "<stdout>", e))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// Whether `s` names an image in a registry host (`registry.example:5000/app:1`,
/// `localhost/x`), which `resolve` may pull.
fn names_registry(s: &str) -> Option<Reference> {
    let first = s.split('/').next()?;
    if !s.contains('/') || !(first.contains(['.', ':']) || first == "localhost") {
        return None;
    }
    Reference::parse(s).ok()
}

/// Resolves an argument; an image reference naming a registry that is not in the store is
/// pulled first (progress on stderr), like `docker run`.
pub fn resolve(store: &Store, s: &str) -> Result<Target> {
    match target::resolve(store, s) {
        Err(Error::Usage(msg)) => {
            let Some(r) = names_registry(s) else {
                return Err(Error::Usage(msg));
            };
            eprintln!("layerfs: {s} is not in the store: pulling it");
            let files = AuthFiles::from_env();
            let opts = PullOptions {
                progress: std::io::stderr().is_terminal(),
                ..PullOptions::default()
            };
            pull(
                store,
                &r,
                files.lookup(&r.registry)?,
                &opts,
                &mut std::io::stderr(),
            )?;
            target::resolve(store, s)
        }
        other => other,
    }
}

/// The two sides of `diff A [B]`.
pub fn sides(store: &Store, a: &str, b: Option<&str>) -> Result<(Target, Target)> {
    let ta = resolve(store, a)?;
    match b {
        Some(b) => Ok((ta, resolve(store, b)?)),
        None => Ok((ta.parent(), ta)),
    }
}

fn diff_cmd(store: &Store, a: &DiffArgs, out: &mut dyn Write) -> Result<()> {
    let (ta, tb) = sides(store, &a.a, a.b.as_deref())?;
    match a.kind {
        DiffType::File => {
            let opts = DiffOptions { sizes: a.size };
            let changes = diff::diff(&ta.layers, &tb.layers, opts)?;
            if a.json {
                return emit(out, &diff::to_json(&changes));
            }
            emit(out, &file_lines(&changes, a.size))
        }
        DiffType::Config | DiffType::History => {
            let need = |t: &Target| {
                t.config.clone().ok_or_else(|| {
                    Error::Usage(format!(
                        "{} is a layer, which has no config: --type config and --type history \
                         compare two images or containers (give B)",
                        t.label
                    ))
                })
            };
            let (ca, cb) = (need(&ta)?, need(&tb)?);
            if a.kind == DiffType::Config {
                let ch = config::diff_config(&ca, &cb);
                if a.json {
                    return emit(out, &json(&ch));
                }
                emit(out, &config_lines(&ch))
            } else {
                let ch = config::diff_history(&ca, &cb);
                if a.json {
                    return emit(out, &json(&ch));
                }
                emit(out, &history_lines(&ch))
            }
        }
        DiffType::Packages => {
            let (pa, na) = packages::packages_of(&ta)?;
            let (pb, nb) = packages::packages_of(&tb)?;
            for n in na.iter().chain(&nb) {
                eprintln!("layerfs: note: {n}");
            }
            let ch = packages::diff_packages(&pa, &pb);
            if a.json {
                return emit(out, &json(&ch));
            }
            emit(out, &package_lines(&ch, a.size))
        }
    }
}

/// `A /path`, or with sizes `A  1.2kB /path`.
pub fn file_lines(changes: &[Change], sizes: bool) -> String {
    let mut s = String::new();
    for c in changes {
        if sizes {
            let size = c.size.map(human_size).unwrap_or_default();
            s.push_str(&format!(
                "{} {size:>8} {}\n",
                c.kind.letter(),
                String::from_utf8_lossy(&c.path)
            ));
        } else {
            s.push_str(&c.to_string());
            s.push('\n');
        }
    }
    s
}

fn config_lines(ch: &[config::ConfigChange]) -> String {
    let mut s = String::new();
    for c in ch {
        let (b, a) = (
            c.before.as_deref().unwrap_or(""),
            c.after.as_deref().unwrap_or(""),
        );
        let line = match c.kind {
            diff::ChangeKind::Added => format!("A {}={a}\n", c.key),
            diff::ChangeKind::Deleted => format!("D {}={b}\n", c.key),
            diff::ChangeKind::Modified => format!("C {}: {b} -> {a}\n", c.key),
        };
        s.push_str(&line);
    }
    s
}

fn history_lines(ch: &[config::HistoryChange]) -> String {
    let mut s = String::new();
    for h in ch {
        let empty = if h.empty_layer { " (empty layer)" } else { "" };
        s.push_str(&format!(
            "{} #{} {}{empty}\n",
            h.kind.letter(),
            h.index,
            h.created_by
        ));
    }
    s
}

fn package_lines(ch: &[packages::PackageChange], sizes: bool) -> String {
    let mut s = String::new();
    for p in ch {
        let (b, a) = (
            p.before.as_deref().unwrap_or(""),
            p.after.as_deref().unwrap_or(""),
        );
        let mut line = match p.kind {
            diff::ChangeKind::Added => format!("A {} {a}", p.name),
            diff::ChangeKind::Deleted => format!("D {} {b}", p.name),
            diff::ChangeKind::Modified => format!("C {} {b} -> {a}", p.name),
        };
        if sizes {
            let size = match p.kind {
                diff::ChangeKind::Deleted => p.size_before,
                _ => p.size_after,
            };
            if let Some(n) = size {
                line.push_str(&format!(" ({})", human_size(n)));
            }
        }
        line.push_str(&format!(" [{}]\n", p.manager));
        s.push_str(&line);
    }
    s
}

fn layers_cmd(store: &Store, a: &LayersArgs, out: &mut dyn Write) -> Result<()> {
    let t = resolve(store, &a.target)?;
    let opts = LayersOptions {
        sort: match a.sort {
            SortKey::Path => SortBy::Path,
            SortKey::Size => SortBy::Size,
        },
        filter: a.filter.clone(),
        layer: a.layer,
    };
    if let Some(n) = a.layer.filter(|&n| n >= t.layers.len()) {
        return Err(Error::Usage(format!(
            "--layer {n}: {} has {} layers, numbered 0 (bottom) to {}",
            a.target,
            t.layers.len(),
            t.layers.len().saturating_sub(1)
        )));
    }
    let all = layers::layer_changes(&t, &opts)?;
    if a.json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|l| {
                let changes: serde_json::Value =
                    serde_json::from_str(&diff::to_json(&l.changes)).unwrap_or_default();
                serde_json::json!({
                    "Index": l.index, "Id": l.id, "CreatedBy": l.command,
                    "Totals": l.totals, "Changes": changes,
                })
            })
            .collect();
        return emit(out, &json(&v));
    }
    let mut s = String::new();
    for l in &all {
        let id =
            l.id.strip_prefix("sha256:")
                .map_or(l.id.as_str(), |h| &h[..12.min(h.len())]);
        let t = &l.totals;
        s.push_str(&format!(
            "Layer {} {id}: {} added, {} modified, {} removed; +{} -{}\n",
            l.index,
            t.added,
            t.modified,
            t.removed,
            human_size(t.added_bytes),
            human_size(t.removed_bytes)
        ));
        if let Some(c) = &l.command {
            s.push_str(&format!("  created by: {c}\n"));
        }
        if !a.summary {
            for line in file_lines(&l.changes, true).lines() {
                s.push_str("  ");
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    emit(out, &s)
}

fn ratio_rule(name: &str, v: Option<&str>, default: Option<f64>) -> Result<Option<f64>> {
    let Some(v) = v else { return Ok(default) };
    if disabled(v) {
        return Ok(None);
    }
    match v.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
        _ => Err(Error::Usage(format!(
            "--{name} {v:?}: give a ratio between 0 and 1 (0.9 = 90%), or `disabled`"
        ))),
    }
}

fn disabled(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "" | "disabled" | "off" | "false"
    )
}

fn ci_rules(a: &EfficiencyArgs) -> Result<CiRules> {
    Ok(CiRules {
        lowest_efficiency: ratio_rule(
            "lowest-efficiency",
            a.lowest_efficiency.as_deref(),
            Some(0.9),
        )?,
        highest_wasted_bytes: match a.highest_wasted_bytes.as_deref() {
            None => None,
            Some(v) if disabled(v) => None,
            Some(v) => Some(eff::parse_bytes(v)?),
        },
        highest_user_wasted_percent: ratio_rule(
            "highest-user-wasted-percent",
            a.highest_user_wasted_percent.as_deref(),
            Some(0.1),
        )?,
    })
}

fn efficiency_cmd(store: &Store, a: &EfficiencyArgs, out: &mut dyn Write) -> Result<()> {
    let t = resolve(store, &a.target)?;
    let rules = if a.ci { Some(ci_rules(a)?) } else { None };
    let e = eff::analyze(&t)?;
    let results = rules
        .as_ref()
        .map(|r| eff::evaluate(&e, r))
        .unwrap_or_default();
    let failed = results.iter().any(|r| r.passed == Some(false));
    if a.json {
        let mut v = serde_json::to_value(&e).unwrap_or_default();
        if a.ci {
            v["Ci"] = serde_json::json!({"Passed": !failed, "Rules": results});
        }
        emit(out, &json(&v))?;
    } else {
        emit(out, &efficiency_text(&e, a.top, &results))?;
    }
    if failed {
        let _ = out.flush();
        std::process::exit(1);
    }
    Ok(())
}

fn efficiency_text(e: &eff::Efficiency, top: usize, results: &[eff::RuleResult]) -> String {
    let mut s = format!(
        "efficiency: {:.4} %\nwasted bytes: {} ({} bytes)\nuser wasted percent: {:.4} %\n\
         image size: {}, user size (all layers but the bottom one): {}\n",
        e.efficiency * 100.0,
        human_size(e.wasted_bytes),
        e.wasted_bytes,
        e.user_wasted_percent * 100.0,
        human_size(e.size_bytes),
        human_size(e.user_size_bytes),
    );
    if !e.inefficiencies.is_empty() {
        s.push_str("\nCOUNT  TOTAL SPACE  PATH\n");
        for i in e.inefficiencies.iter().take(top) {
            s.push_str(&format!(
                "{:<6} {:<12} {}\n",
                i.count,
                human_size(i.cumulative_size),
                i.path
            ));
        }
    }
    if !results.is_empty() {
        s.push('\n');
        for r in results {
            let verdict = match r.passed {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "SKIP",
            };
            s.push_str(&format!("{verdict} {}: {}\n", r.rule, r.message));
        }
        let failed = results.iter().any(|r| r.passed == Some(false));
        s.push_str(if failed {
            "result: FAIL\n"
        } else {
            "result: PASS\n"
        });
    }
    s
}
