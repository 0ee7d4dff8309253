//! The docker-style image commands: load, images, inspect, history, tag, rmi, prune, df.
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{emit, emit_formatted, human_ago, table, to_json};
use super::template::default_header;
use crate::container::record::Containers;
use crate::human::human_size;
use crate::image::load::{LoadOptions, plans};
use crate::image::oci::Platform;
use crate::image::source::Source;
use crate::reference::Reference;
use crate::store::import::ImportOptions;
use crate::store::ops::{DiskUsage, ImageFilter, ImageRow};
use crate::store::{ImageRecord, LockMode, Store};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Load images from a docker-save archive, an OCI archive or an OCI layout directory
    Load(LoadArgs),
    /// List images
    Images(ImagesArgs),
    /// Show an image's configuration as JSON
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove images (untag; delete when no name and no container remains)
    Rmi(RmiArgs),
    /// Remove dangling images (with -a, every image no container uses)
    Prune(PruneArgs),
    /// Show disk usage of images, containers and layers
    Df(DfArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive (tar, optionally gzip/zstd) or OCI layout directory; standard input when not
    /// given or `-` (any archive format, compressed or not)
    #[arg(short = 'i', long = "input")]
    pub input: Option<PathBuf>,
    /// Repository for tags that come without one (OCI ref.name) or for unnamed images
    #[arg(long)]
    pub name: Option<String>,
    /// Image platform to load from a multi-platform index: os/arch[/variant]
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only errors
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images (there are no intermediate images; accepted for compatibility)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Filter (repeatable): dangling=true|false, reference=PATTERN, label=KEY[=VALUE],
    /// before=IMAGE, since=IMAGE
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Only this repository, or REPO:TAG
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub repository: Option<String>,
    /// Print JSON
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Do not truncate image IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// Format each row with a Go-style template ({{.Repository}}:{{.Tag}}, `table ...`,
    /// `json`). Fields: ID, Repository, Tag, Digest, CreatedSince, CreatedAt, Size
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images or containers (names, references or ID prefixes)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Format the output with a Go-style template, e.g. '{{.Config.Env}}' or '{{json .RootFS}}'
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Only look for this kind of object: image or container
    #[arg(long = "type", value_name = "image|container")]
    pub kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub image: String,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print JSON
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Format each row with a Go-style template. Fields: ID, CreatedSince, CreatedAt,
    /// CreatedBy, Size, Comment
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every name of the image, even when it has several or a container uses it
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, not just dangling ones (asks first; -f skips)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Per image and per layer detail
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs a store command against the store at `root`.
pub fn run(root: &Path, cmd: StoreCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        StoreCommand::Load(a) => load(root, &a, &mut out),
        StoreCommand::Images(a) => images(&Store::open(root, LockMode::Shared)?, &a, &mut out),
        StoreCommand::Inspect(a) => inspect(&Store::open(root, LockMode::Shared)?, &a, &mut out),
        StoreCommand::History(a) => history(&Store::open(root, LockMode::Shared)?, &a, &mut out),
        StoreCommand::Tag(a) => tag(&Store::open(root, LockMode::Shared)?, &a),
        StoreCommand::Rmi(a) => rmi(&Store::open(root, LockMode::Exclusive)?, &a, &mut out),
        StoreCommand::Prune(a) if !prune_confirmed(&a) => Ok(()),
        StoreCommand::Prune(a) => prune(&Store::open(root, LockMode::Exclusive)?, &a, &mut out),
        StoreCommand::Df(a) => df(&Store::open(root, LockMode::Shared)?, &a, &mut out),
    }
}

pub fn load(root: &Path, a: &LoadArgs, out: &mut dyn Write) -> Result<()> {
    let store = Store::open(root, LockMode::Shared)?;
    let opts = LoadOptions {
        name: a.name.as_deref().map(Reference::parse).transpose()?,
        platform: a.platform.as_deref().map(Platform::parse).transpose()?,
    };
    let scratch = store.staging()?;
    let src = Arc::new(match a.input.as_deref() {
        Some(p) if p != Path::new("-") => Source::open(p, scratch.path())?,
        _ if std::io::stdin().is_terminal() => {
            return Err(Error::Usage(
                "load: standard input is a terminal: pipe an archive in \
                 (`docker save img | layerfs load`) or give -i FILE"
                    .into(),
            ));
        }
        _ => Source::stdin(scratch.path())?,
    });
    // Progress goes to stderr (or nowhere with -q); what was loaded goes to stdout, always.
    let mut sink = std::io::sink();
    let mut stderr = std::io::stderr();
    let progress: &mut dyn Write = if a.quiet { &mut sink } else { &mut stderr };
    let image_plans = plans(&src, &opts, &mut |w| eprintln!("warning: {w}"))?;
    let iopts = ImportOptions {
        progress: !a.quiet && std::io::stderr().is_terminal(),
        ..ImportOptions::default()
    };
    for plan in image_plans {
        let imported = store.import(plan, &iopts, progress)?;
        if imported.names.is_empty() {
            emit(out, &format!("Loaded image ID: {}\n", imported.id))?;
        }
        for n in &imported.names {
            emit(out, &format!("Loaded image: {}\n", n.familiar()))?;
        }
    }
    Ok(())
}

fn images(store: &Store, a: &ImagesArgs, out: &mut dyn Write) -> Result<()> {
    let mut filter = ImageFilter::parse(&a.filters)?;
    if let Some(r) = &a.repository {
        filter.references.push(r.clone());
    }
    let rows = store.image_rows(&filter)?;
    if a.quiet {
        let mut seen = BTreeSet::new();
        for r in &rows {
            if seen.insert(r.img.id.clone()) {
                let id = if a.no_trunc {
                    r.img.id.to_string()
                } else {
                    r.img.id.short().to_string()
                };
                emit(out, &format!("{id}\n"))?;
            }
        }
        return Ok(());
    }
    let digest_of = |r: &ImageRow| r.repo_digest().unwrap_or_else(|| "<none>".into());
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let digest = digest_of(r);
                json!({
                    "Id": r.img.id.to_string(),
                    "Repository": r.name.as_ref().map(|n| n.familiar_name()),
                    "Tag": r.name.as_ref().and_then(|n| n.tag.clone()),
                    "Digest": (digest != "<none>").then_some(digest),
                    "Created": r.config.created,
                    "Size": r.img.size,
                })
            })
            .collect();
        return emit(out, &to_json(&json!(v)));
    }
    if let Some(f) = &a.format {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "ID": if a.no_trunc { r.img.id.to_string() } else { r.img.id.short().to_string() },
                    "Repository": r.name.as_ref().map_or("<none>".into(), |n| n.familiar_name()),
                    "Tag": r.name.as_ref().and_then(|n| n.tag.clone()).unwrap_or("<none>".into()),
                    "Digest": digest_of(r),
                    "CreatedSince": human_ago(r.config.created.as_deref()),
                    "CreatedAt": r.config.created.clone().unwrap_or_default(),
                    "Size": human_size(r.img.size),
                })
            })
            .collect();
        let headers = |f: &str| match f {
            "ID" => "IMAGE ID".to_string(),
            "CreatedSince" | "CreatedAt" => "CREATED".to_string(),
            f => default_header(f),
        };
        return emit_formatted(out, f, &v, &headers);
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut l = vec![
                r.name
                    .as_ref()
                    .map_or("<none>".into(), |n| n.familiar_name()),
                r.name
                    .as_ref()
                    .and_then(|n| n.tag.clone())
                    .unwrap_or("<none>".into()),
            ];
            if a.digests {
                l.push(digest_of(r));
            }
            l.extend([
                if a.no_trunc {
                    r.img.id.to_string()
                } else {
                    r.img.id.short().to_string()
                },
                human_ago(r.config.created.as_deref()),
                human_size(r.img.size),
            ]);
            l
        })
        .collect();
    emit(out, &table(&header, &lines))?;
    let lazy = crate::lazy::status::rows(store);
    if lazy.is_empty() {
        return Ok(());
    }
    emit(out, "\n")?;
    emit(
        out,
        &table(&["LAZY MOUNT", "IMAGE", "LAYER", "LOCAL"], &lazy),
    )
}

/// `inspect`: images and containers (a container's name or ID prefix is looked up first, as
/// docker does; `--type` restricts the kind).
fn inspect(store: &Store, a: &InspectArgs, out: &mut dyn Write) -> Result<()> {
    let cs = Containers::new(store);
    let mut all = Vec::new();
    for name in &a.images {
        let v = match a.kind.as_deref() {
            Some("image") => image_json(store, &store.resolve(name)?)?,
            Some("container") => super::container::container_json(store, &cs.resolve(name)?),
            Some(k) => {
                return Err(Error::Usage(format!(
                    "inspect --type {k}: use image or container"
                )));
            }
            None => match cs.find(name)? {
                Some(rec) => super::container::container_json(store, &rec),
                None => match store.resolve(name) {
                    Ok(img) => image_json(store, &img)?,
                    Err(Error::Usage(m)) if m.starts_with("no such image") => {
                        return Err(Error::Usage(format!("no such image or container: {name}")));
                    }
                    Err(e) => return Err(e),
                },
            },
        };
        all.push(v);
    }
    match &a.format {
        Some(f) => {
            let t = super::template::Template::parse(f)?;
            let mut s = String::new();
            for v in &all {
                s.push_str(&t.render(v)?);
                s.push('\n');
            }
            emit(out, &s)
        }
        None => emit(out, &to_json(&json!(all))),
    }
}

/// An image as `inspect` shows it (docker's field names).
fn image_json(store: &Store, img: &ImageRecord) -> Result<serde_json::Value> {
    let raw: serde_json::Value = serde_json::from_slice(&store.read_blob(&img.id)?)
        .map_err(|e| Error::Format(format!("config of {}: {e}", img.id)))?;
    let tags: Vec<String> = store
        .names_of(&img.id)?
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .map(|r| r.familiar())
        .collect();
    let lowers: Vec<String> = store
        .lowerdirs(img)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Ok(json!({
        "Id": img.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": img.repo_digests,
        "Created": raw.get("created"),
        "Architecture": raw.get("architecture"),
        "Variant": raw.get("variant"),
        "Os": raw.get("os"),
        "Author": raw.get("author"),
        "Config": raw.get("config"),
        "RootFS": { "Type": "layers", "Layers": img.diff_ids },
        "Size": img.size,
        "GraphDriver": { "Name": "layerfs", "Data": { "LowerDir": lowers.join(":") } },
        "Metadata": { "Loaded": img.loaded, "Manifest": img.manifest },
    }))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn history(store: &Store, a: &HistoryArgs, out: &mut dyn Write) -> Result<()> {
    let img = store.resolve(&a.image)?;
    let rows = store.history(&img)?;
    let id_of = |i: usize| match (i, a.no_trunc) {
        (0, true) => img.id.to_string(),
        (0, false) => img.id.short().to_string(),
        _ => "<missing>".to_string(),
    };
    if a.quiet {
        let s: String = (0..rows.len()).map(|i| id_of(i) + "\n").collect();
        return emit(out, &s);
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let h = &r.history;
                json!({
                    "Id": (i == 0).then(|| img.id.to_string()),
                    "Created": h.created, "CreatedBy": h.created_by, "Size": r.size,
                    "Comment": h.comment, "EmptyLayer": h.empty_layer,
                })
            })
            .collect();
        return emit(out, &to_json(&json!(v)));
    }
    if let Some(f) = &a.format {
        let v: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (h, size) = (&r.history, &r.size);
                let by = h.created_by.clone().unwrap_or_default();
                json!({
                    "ID": id_of(i),
                    "CreatedSince": human_ago(h.created.as_deref()),
                    "CreatedAt": h.created.clone().unwrap_or_default(),
                    "CreatedBy": if a.no_trunc { by } else { truncate(&by, 45) },
                    "Size": human_size(*size),
                    "Comment": h.comment.clone().unwrap_or_default(),
                })
            })
            .collect();
        let headers = |f: &str| match f {
            "ID" => "IMAGE".to_string(),
            "CreatedSince" | "CreatedAt" => "CREATED".to_string(),
            f => default_header(f),
        };
        return emit_formatted(out, f, &v, &headers);
    }
    let lines: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let h = &r.history;
            let by = h.created_by.clone().unwrap_or_default();
            vec![
                id_of(i),
                human_ago(h.created.as_deref()),
                if a.no_trunc { by } else { truncate(&by, 45) },
                human_size(r.size),
                h.comment.clone().unwrap_or_default(),
            ]
        })
        .collect();
    emit(
        out,
        &table(
            &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            &lines,
        ),
    )
}

fn tag(store: &Store, a: &TagArgs) -> Result<()> {
    let img = store.resolve(&a.source)?;
    let target = Reference::parse(&a.target)?;
    if target.digest.is_some() {
        return Err(Error::Usage(format!(
            "cannot tag with a digest reference: {}",
            a.target
        )));
    }
    store.update_refs(|refs| {
        refs.insert(target.to_string(), img.id.clone());
        Ok(())
    })
}

fn rmi(store: &Store, a: &RmiArgs, out: &mut dyn Write) -> Result<()> {
    store.remove_images(&a.images, a.force, out)
}

/// Asks `question [y/N]` on stderr and reads the answer from stdin, like docker: only `y` or
/// `yes` agrees; end of input (a script without -f) is no.
pub fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// `prune -a` asks first (before taking the store's lock), unless -f.
fn prune_confirmed(a: &PruneArgs) -> bool {
    if !a.all || a.force {
        return true;
    }
    let yes = confirm(
        "WARNING! This will remove all images without at least one container associated to \
         them, tagged ones too.\nAre you sure you want to continue?",
    );
    if !yes {
        eprintln!("Nothing removed (give -f to skip this question).");
    }
    yes
}

fn prune(store: &Store, a: &PruneArgs, out: &mut dyn Write) -> Result<()> {
    let mut reclaimed = store.prune(a.all, out)?;
    let (pieces, freed) = crate::lazy::gc::collect(store.root(), 0);
    if pieces > 0 {
        emit(
            out,
            &format!(
                "Deleted lazy-read chunks: {pieces} ({})\n",
                human_size(freed)
            ),
        )?;
        reclaimed += freed;
    }
    emit(
        out,
        &format!("Total reclaimed space: {}\n", human_size(reclaimed)),
    )
}

pub fn df(store: &Store, a: &DfArgs, out: &mut dyn Write) -> Result<()> {
    let u = store.disk_usage()?;
    let (total, shared, reclaim) = (u.total, u.shared, u.reclaimable);
    if a.json {
        let v = json!({
            "Images": { "Total": u.images.len(), "Active": u.in_use.len(), "Size": total, "Reclaimable": reclaim },
            "Containers": { "Total": u.containers },
            "Layers": { "Total": u.layer_sizes.len(), "Shared": shared, "Unique": total - shared, "Size": total },
        });
        return emit(out, &to_json(&v));
    }
    let pct = |n: u64| (n * 100).checked_div(total).unwrap_or(0);
    let rows = vec![
        vec![
            "Images".into(),
            u.images.len().to_string(),
            u.in_use.len().to_string(),
            human_size(total),
            format!("{} ({}%)", human_size(reclaim), pct(reclaim)),
        ],
        vec![
            "Containers".into(),
            u.containers.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
        vec![
            "Layers".into(),
            u.layer_sizes.len().to_string(),
            format!("{} shared", human_size(shared)),
            human_size(total),
            format!("{} unique", human_size(total - shared)),
        ],
    ];
    emit(
        out,
        &table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows),
    )?;
    if a.verbose {
        df_verbose(store, &u, out)?;
    }
    Ok(())
}

/// `df -v`: space per image and per layer.
fn df_verbose(store: &Store, u: &DiskUsage, out: &mut dyn Write) -> Result<()> {
    let img_rows: Vec<Vec<String>> = u
        .images
        .iter()
        .map(|img| {
            let names = store.names_of(&img.id).unwrap_or_default();
            let name = names
                .first()
                .and_then(|n| Reference::parse(n).ok())
                .map_or("<none>".into(), |r| r.familiar());
            let sh = u.shared_by(img);
            vec![
                name,
                img.id.short().into(),
                human_size(img.size),
                human_size(sh),
                human_size(img.size.saturating_sub(sh)),
                u8::from(u.in_use.contains(&img.id)).to_string(),
            ]
        })
        .collect();
    emit(out, "\nImages space usage:\n\n")?;
    emit(
        out,
        &table(
            &[
                "IMAGE",
                "IMAGE ID",
                "SIZE",
                "SHARED SIZE",
                "UNIQUE SIZE",
                "CONTAINERS",
            ],
            &img_rows,
        ),
    )?;
    let layer_rows: Vec<Vec<String>> = u
        .layer_sizes
        .iter()
        .map(|(l, s)| {
            let diff = store
                .layer_meta(l)
                .map(|m| m.diff_id.short().to_string())
                .unwrap_or_default();
            vec![
                l.short().into(),
                diff,
                human_size(*s),
                u.layer_users.get(l).map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    emit(out, "\nLayers space usage:\n\n")?;
    emit(
        out,
        &table(
            &["LAYER (CHAIN ID)", "DIFF ID", "SIZE", "IMAGES"],
            &layer_rows,
        ),
    )
}
