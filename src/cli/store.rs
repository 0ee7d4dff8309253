//! The docker-style image commands: load, images, inspect, history, tag, rmi, prune, df.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{emit, glob, human_ago, table, to_json};
use crate::digest::Digest;
use crate::human::human_size;
use crate::image::load::{LoadOptions, plans};
use crate::image::oci::{ImageConfig, Platform};
use crate::image::source::Source;
use crate::reference::Reference;
use crate::store::import::ImportOptions;
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
    /// Archive (tar, optionally gzip/zstd) or OCI layout directory
    #[arg(short = 'i', long = "input")]
    pub input: PathBuf,
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
    /// Filter: dangling=true|false, reference=PATTERN
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
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
    #[arg(long)]
    pub json: bool,
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
    /// Remove every image no container uses, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
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
    let src = Arc::new(Source::open(&a.input, scratch.path())?);
    let mut sink = std::io::sink();
    let out: &mut dyn Write = if a.quiet { &mut sink } else { out };
    let image_plans = plans(&src, &opts, &mut |w| eprintln!("warning: {w}"))?;
    let iopts = ImportOptions {
        progress: !a.quiet && std::io::stderr().is_terminal(),
        ..ImportOptions::default()
    };
    for plan in image_plans {
        store.import(plan, &iopts, out)?;
    }
    Ok(())
}

/// Rows of `images`: one per name, or one `<none>` row for an unnamed image.
struct ImageRow {
    img: ImageRecord,
    name: Option<Reference>,
    config: ImageConfig,
}

fn image_rows(store: &Store, a: &ImagesArgs) -> Result<Vec<ImageRow>> {
    let mut dangling = None;
    let mut patterns = Vec::new();
    for f in &a.filters {
        match f.split_once('=') {
            Some(("dangling", v)) => dangling = Some(matches!(v, "true" | "1")),
            Some(("reference", p)) => patterns.push(p.to_string()),
            _ => {
                return Err(Error::Usage(format!(
                    "unsupported filter {f:?}: use dangling=true|false or reference=PATTERN"
                )));
            }
        }
    }
    let mut by_id: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
    for (name, id) in store.refs()? {
        by_id.entry(id).or_default().push(Reference::parse(&name)?);
    }
    let mut rows = Vec::new();
    for img in store.images()? {
        let names = by_id.remove(&img.id).unwrap_or_default();
        if dangling.is_some_and(|d| d != names.is_empty()) {
            continue;
        }
        let config = ImageConfig::parse(&store.read_blob(&img.id)?, img.id.as_str())?;
        let mut cand: Vec<Option<Reference>> = names.into_iter().map(Some).collect();
        if cand.is_empty() {
            cand.push(None);
        }
        for name in cand {
            let shown = name.as_ref().map(|n| (n.familiar_name(), n.familiar()));
            let keep = patterns.is_empty()
                || shown.as_ref().is_some_and(|(n, full)| {
                    patterns
                        .iter()
                        .any(|p| glob(p, if p.contains(':') { full } else { n }))
                });
            if keep {
                rows.push(ImageRow {
                    img: img.clone(),
                    name,
                    config: config.clone(),
                });
            }
        }
    }
    rows.sort_by(|a, b| {
        b.config
            .created
            .cmp(&a.config.created)
            .then(a.name.cmp(&b.name))
    });
    Ok(rows)
}

fn images(store: &Store, a: &ImagesArgs, out: &mut dyn Write) -> Result<()> {
    let rows = image_rows(store, a)?;
    if a.quiet {
        let mut seen = BTreeSet::new();
        for r in &rows {
            if seen.insert(r.img.id.clone()) {
                emit(out, &format!("{}\n", r.img.id.short()))?;
            }
        }
        return Ok(());
    }
    let digest_of = |r: &ImageRow| {
        r.name
            .as_ref()
            .and_then(|n| {
                r.img
                    .repo_digests
                    .iter()
                    .find(|d| d.starts_with(&format!("{}@", n.name())))
            })
            .and_then(|d| d.split_once('@').map(|(_, d)| d.to_string()))
            .unwrap_or_else(|| "<none>".into())
    };
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "Repository": r.name.as_ref().map_or("<none>".into(), |n| n.familiar_name()),
                    "Tag": r.name.as_ref().and_then(|n| n.tag.clone()).unwrap_or("<none>".into()),
                    "ID": r.img.id.to_string(),
                    "Digest": digest_of(r),
                    "Created": r.config.created,
                    "Size": r.img.size,
                })
            })
            .collect();
        return emit(out, &to_json(&json!(v)));
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
                r.img.id.short().to_string(),
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

fn inspect(store: &Store, a: &InspectArgs, out: &mut dyn Write) -> Result<()> {
    let mut all = Vec::new();
    for name in &a.images {
        let img = store.resolve(name)?;
        let raw: serde_json::Value = serde_json::from_slice(&store.read_blob(&img.id)?)
            .map_err(|e| Error::Format(format!("config of {}: {e}", img.id)))?;
        let tags: Vec<String> = store
            .names_of(&img.id)?
            .iter()
            .filter_map(|n| Reference::parse(n).ok())
            .map(|r| r.familiar())
            .collect();
        let lowers: Vec<String> = store
            .lowerdirs(&img)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        all.push(json!({
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
        }));
    }
    emit(out, &to_json(&json!(all)))
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
    let config = ImageConfig::parse(&store.read_blob(&img.id)?, img.id.as_str())?;
    let sizes: Vec<u64> = img
        .layers
        .iter()
        .map(|c| store.layer_meta(c).map(|m| m.size))
        .collect::<Result<_>>()?;
    let mut hist = config.history.clone();
    if hist.is_empty() {
        hist = vec![Default::default(); sizes.len()];
    }
    let mut layer = 0;
    let mut rows = Vec::new();
    for h in &hist {
        let size = if h.empty_layer {
            0
        } else {
            sizes.get(layer).copied().unwrap_or(0)
        };
        if !h.empty_layer {
            layer += 1;
        }
        rows.push((h, size));
    }
    rows.reverse();
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
            .map(|(i, (h, size))| json!({"ID": id_of(i), "Created": h.created, "CreatedBy": h.created_by, "Size": size, "Comment": h.comment}))
            .collect();
        return emit(out, &to_json(&json!(v)));
    }
    let lines: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, (h, size))| {
            let by = h.created_by.clone().unwrap_or_default();
            vec![
                id_of(i),
                human_ago(h.created.as_deref()),
                if a.no_trunc { by } else { truncate(&by, 45) },
                human_size(*size),
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
    let in_use = store.images_in_use()?;
    let mut delete = Vec::new();
    for name in &a.images {
        let img = store.resolve(name)?;
        let names = store.names_of(&img.id)?;
        let by_name = Reference::parse(name)
            .ok()
            .map(|r| r.to_string())
            .filter(|n| names.contains(n));
        let untag: Vec<String> = match by_name {
            Some(n) => vec![n],
            None if names.len() > 1 && !a.force => {
                return Err(Error::Usage(format!(
                    "image {} is referenced by {} names ({}): remove them by name or use -f",
                    img.id.short(),
                    names.len(),
                    names.join(", ")
                )));
            }
            None => names.clone(),
        };
        let left = names.len() - untag.len();
        if left == 0 && in_use.contains(&img.id) && !a.force {
            return Err(Error::Usage(format!(
                "image {} is used by a container: remove the container first or use -f (untags only)",
                img.id.short()
            )));
        }
        store.update_refs(|refs| {
            for n in &untag {
                refs.remove(n);
            }
            Ok(())
        })?;
        for n in &untag {
            let shown = Reference::parse(n).map_or(n.clone(), |r| r.familiar());
            emit(out, &format!("Untagged: {shown}\n"))?;
        }
        if left == 0 && !in_use.contains(&img.id) {
            delete.push(img.id);
        }
    }
    store.delete_images(&delete, out)?;
    Ok(())
}

fn prune(store: &Store, a: &PruneArgs, out: &mut dyn Write) -> Result<()> {
    let in_use = store.images_in_use()?;
    let victims: Vec<ImageRecord> = if a.all {
        store.images()?
    } else {
        store.dangling()?
    }
    .into_iter()
    .filter(|i| !in_use.contains(&i.id))
    .collect();
    let ids: Vec<Digest> = victims.iter().map(|i| i.id.clone()).collect();
    store.update_refs(|refs| {
        refs.retain(|_, id| !ids.contains(id));
        Ok(())
    })?;
    let mut reclaimed = store.delete_images(&ids, out)?;
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

fn df(store: &Store, a: &DfArgs, out: &mut dyn Write) -> Result<()> {
    let images = store.images()?;
    let in_use = store.images_in_use()?;
    // Layer -> the images using it.
    let mut users: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
    for img in &images {
        for l in img.layers.iter().collect::<BTreeSet<_>>() {
            users.entry(l.clone()).or_default().push(img.id.clone());
        }
    }
    let mut sizes = BTreeMap::new();
    for l in store.layer_ids()? {
        sizes.insert(l.clone(), store.layer_meta(&l)?.size);
    }
    let total: u64 = sizes.values().sum();
    let active_layers: BTreeSet<&Digest> = images
        .iter()
        .filter(|i| in_use.contains(&i.id))
        .flat_map(|i| i.layers.iter())
        .collect();
    let active_size: u64 = active_layers.iter().filter_map(|l| sizes.get(*l)).sum();
    let shared: u64 = users
        .iter()
        .filter(|(_, u)| u.len() > 1)
        .filter_map(|(l, _)| sizes.get(l))
        .sum();
    let reclaim = total - active_size;
    let pct = |n: u64| (n * 100).checked_div(total).unwrap_or(0);
    if a.json {
        let v = json!({
            "Images": { "Total": images.len(), "Active": in_use.len(), "Size": total, "Reclaimable": reclaim },
            "Containers": { "Total": store.container_count() },
            "Layers": { "Total": sizes.len(), "Shared": shared, "Unique": total - shared, "Size": total },
        });
        return emit(out, &to_json(&v));
    }
    let rows = vec![
        vec![
            "Images".into(),
            images.len().to_string(),
            in_use.len().to_string(),
            human_size(total),
            format!("{} ({}%)", human_size(reclaim), pct(reclaim)),
        ],
        vec![
            "Containers".into(),
            store.container_count().to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
        vec![
            "Layers".into(),
            sizes.len().to_string(),
            format!("{} shared", human_size(shared)),
            human_size(total),
            format!("{} unique", human_size(total - shared)),
        ],
    ];
    emit(
        out,
        &table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows),
    )?;
    if !a.verbose {
        return Ok(());
    }
    let img_rows: Vec<Vec<String>> = images
        .iter()
        .map(|img| {
            let names = store.names_of(&img.id).unwrap_or_default();
            let name = names
                .first()
                .and_then(|n| Reference::parse(n).ok())
                .map_or("<none>".into(), |r| r.familiar());
            let sh: u64 = img
                .layers
                .iter()
                .filter(|l| users.get(*l).is_some_and(|u| u.len() > 1))
                .filter_map(|l| sizes.get(l))
                .sum();
            vec![
                name,
                img.id.short().into(),
                human_size(img.size),
                human_size(sh),
                human_size(img.size.saturating_sub(sh)),
                u8::from(in_use.contains(&img.id)).to_string(),
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
    let layer_rows: Vec<Vec<String>> = sizes
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
                users.get(l).map_or(0, Vec::len).to_string(),
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
