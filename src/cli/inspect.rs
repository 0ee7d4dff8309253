//! Command-line types and printing for the inspection commands: diff, layers, efficiency,
//! explore. The work is done by `crate::inspect`.
use std::io::Write;
use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};

use crate::inspect::diff::{self, Change, DiffOptions};
use crate::inspect::target::{self, Target};
use crate::inspect::{config, packages};
use crate::store::output::human_size;
use crate::store::{LockMode, Store};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Show what changed from A to B (images, containers or layers): A added, C changed,
    /// D deleted. Without B: a container against its image, an image or layer against the
    /// layers below its top one
    Diff(DiffArgs),
}

/// Subcommand names, for the argv normaliser in `cli.rs`.
pub const NAMES: &[&str] = &["diff"];

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
    /// The old side: IMAGE, CONTAINER, IMAGE@N (its layers 0..=N, 0 = bottom), a layer's chain
    /// ID or diff_id prefix; `image:`, `container:`, `layer:` force the kind
    pub a: String,
    /// The new side (same forms); default: A's parent (a container's image; an image without
    /// its top layer)
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

pub fn run(root: Option<&Path>, cmd: InspectCommand) -> Result<()> {
    let root = root.map_or_else(Store::default_root, Path::to_path_buf);
    let store = Store::open(&root, LockMode::Shared)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        InspectCommand::Diff(a) => diff_cmd(&store, &a, &mut out),
    }
}

fn emit(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())
        .map_err(|e| Error::io("write", "<stdout>", e))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The two sides of `diff A [B]`.
pub fn sides(store: &Store, a: &str, b: Option<&str>) -> Result<(Target, Target)> {
    let ta = target::resolve(store, a)?;
    match b {
        Some(b) => Ok((ta, target::resolve(store, b)?)),
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
