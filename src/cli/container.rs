//! The container commands: create, ps, commit, save, export, rm (mount and umount are in
//! `mount.rs`; `diff` is in `inspect.rs`).
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{emit, emit_formatted, human_ago, table, to_json};
use super::template::default_header;
use crate::container::commit::{CommitOptions, commit};
use crate::container::import::{ImportTarball, import_tarball};
use crate::container::mount::{
    Status, lowerdirs, mounts_of, shown_image_name, status_filter, statuses, unmount_container,
};
use crate::container::record::{ContainerRecord, Containers, sizes};
use crate::container::{changes, export};
use crate::human::human_size;
use crate::image::compress::Compression;
use crate::image::oci::Platform;
use crate::reference::Reference;
use crate::store::save::{SaveFormat, save_to_writer, save_with};
use crate::store::{LockMode, Store};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container: the image's layers plus a new, empty writable layer
    Create(CreateArgs),
    /// List containers (mounted ones; -a for all)
    Ps(PsArgs),
    /// Make a new image from a container's changes
    Commit(CommitArgs),
    /// Write images to a docker archive, an OCI archive or an OCI layout directory
    Save(SaveArgs),
    /// Make a one-layer image from a root filesystem tarball (plain, gzip or zstd; - for stdin)
    Import(ImportArgs),
    /// Write a container's merged tree as a tar archive
    Export(ExportArgs),
    /// Remove containers and everything they wrote
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image reference or ID
    pub image: String,
    /// Container name (unique; default: a generated one)
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: mounted ones)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// Print JSON
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Filter (repeatable): name=NAME, id=PREFIX, ancestor=IMAGE, status=mounted|unmounted|stale
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format each row with a Go-style template (`table ...`, `json`). Fields: ID, Image,
    /// ImageID, Names, Mountpoint, Size, CreatedSince, CreatedAt, State
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Container name or ID (prefix)
    pub container: String,
    /// Name for the new image: REPO[:TAG]
    pub reference: Option<String>,
    /// Commit message (the history entry's comment)
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Author, e.g. "Jane <jane@example.com>"
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Dockerfile instruction to apply: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR,
    /// VOLUME, STOPSIGNAL (repeatable)
    #[arg(short = 'c', long = "change", action = clap::ArgAction::Append)]
    pub changes: Vec<String>,
    /// Layer compression: zstd, gzip or none
    #[arg(long, default_value = "zstd")]
    pub compression: String,
    /// Print only the image ID
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images (references or IDs)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Output file (a directory for oci-dir); `-` or none: standard output, if not a terminal
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// docker-archive, oci-archive or oci-dir
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    #[command(flatten)]
    pub seekable: super::lazy::SeekableArg,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Container name or ID (prefix)
    pub container: String,
    /// Output file (default: standard output)
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball, or - for standard input
    pub file: PathBuf,
    /// Name for the new image: REPO[:TAG]
    pub reference: Option<String>,
    /// Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, ...; repeatable)
    #[arg(short = 'c', long = "change", action = clap::ArgAction::Append)]
    pub changes: Vec<String>,
    /// Commit message (the history entry's comment)
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// The image's platform: os/arch[/variant] (default: this machine's)
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `layerfs container ...`: docker's container management group.
#[derive(Debug, Subcommand)]
pub enum ContainerGroup {
    /// Remove every container that is not mounted, and everything it wrote
    Prune(ContainerPruneArgs),
}

#[derive(Debug, Args)]
pub struct ContainerPruneArgs {
    /// Do not ask for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Unmount a mounted container first
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn run(root: &Path, cmd: ContainerCommand) -> Result<()> {
    let store = Store::open(root, LockMode::Shared)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        ContainerCommand::Create(a) => create(&store, &a, &mut out),
        ContainerCommand::Ps(a) => ps(&store, &a, &mut out),
        ContainerCommand::Commit(a) => commit_cmd(&store, &a, &mut out),
        ContainerCommand::Save(a) => save_cmd(&store, &a),
        ContainerCommand::Export(a) => export_cmd(&store, &a),
        ContainerCommand::Import(a) => import_cmd(&store, &a, &mut out),
        ContainerCommand::Rm(a) => rm(&store, &a, &mut out),
    }
}

/// `save`: to a file or directory, or streamed to standard output (never to a terminal).
fn save_cmd(store: &Store, a: &SaveArgs) -> Result<()> {
    let format: SaveFormat = a.format.parse()?;
    let log = &mut std::io::stderr();
    match a.output.as_deref() {
        Some(p) if p != Path::new("-") => {
            save_with(store, &a.images, p, format, a.seekable.compression, log)
        }
        _ if a.seekable.compression.is_some() => Err(Error::Usage(
            "save --compression: give the output with -o FILE (or -o DIR for oci-dir)".into(),
        )),
        _ => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Error::Usage(
                    "save: not writing an image archive to a terminal: redirect standard \
                     output (`layerfs save img > img.tar`, `| skopeo ...`) or use -o FILE"
                        .into(),
                ));
            }
            save_to_writer(
                store,
                &a.images,
                format,
                &mut stdout.lock(),
                "<stdout>",
                log,
            )
        }
    }
}

fn create(store: &Store, a: &CreateArgs, out: &mut dyn Write) -> Result<()> {
    let img = store.resolve(&a.image)?;
    let rec =
        Containers::new(store).create(&img, &shown_image_name(&a.image), a.name.as_deref())?;
    emit(out, &format!("{}\n", rec.id))
}

fn ps(store: &Store, a: &PsArgs, out: &mut dyn Write) -> Result<()> {
    let cs = Containers::new(store);
    let keep = status_filter(store, &a.filters)?;
    let all = a.all || a.filters.iter().any(|f| f.starts_with("status="));
    let rows: Vec<Status> = statuses(&cs, all)?
        .into_iter()
        .filter(|st| keep(st))
        .collect();
    let id_of = |r: &ContainerRecord| {
        if a.no_trunc {
            r.id.to_string()
        } else {
            r.id.short().to_string()
        }
    };
    if a.quiet {
        let s: String = rows.iter().map(|st| id_of(&st.rec) + "\n").collect();
        return emit(out, &s);
    }
    let sizes: Vec<(u64, u64)> = rows.iter().map(|st| sizes(store, &cs, &st.rec)).collect();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .zip(&sizes)
            .map(|(st, (rw, virt))| {
                let r = &st.rec;
                json!({
                    "Id": r.id.to_string(), "Name": r.name, "Image": r.image_name,
                    "ImageID": r.image.to_string(),
                    "Mountpoint": st.mountpoint, "Stale": st.stale,
                    "SizeRw": rw, "SizeRootFs": virt, "Created": r.created,
                })
            })
            .collect();
        return emit(out, &to_json(&v));
    }
    if let Some(f) = &a.format {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .zip(&sizes)
            .map(|(st, (rw, virt))| {
                let r = &st.rec;
                let state = match (&st.mountpoint, st.stale) {
                    (None, _) => "unmounted",
                    (Some(_), false) => "mounted",
                    (Some(_), true) => "stale",
                };
                json!({
                    "ID": id_of(r), "Image": r.image_name,
                    "ImageID": r.image.to_string(), "Names": r.name,
                    "Mountpoint": shown_mountpoint(st),
                    "Size": format!("{} (virtual {})", human_size(*rw), human_size(*virt)),
                    "CreatedSince": human_ago(Some(&r.created)), "CreatedAt": r.created,
                    "State": state,
                })
            })
            .collect();
        let headers = |f: &str| match f {
            "ID" => "CONTAINER ID".to_string(),
            "Names" => "NAME".to_string(),
            "CreatedSince" | "CreatedAt" => "CREATED".to_string(),
            f => default_header(f),
        };
        return emit_formatted(out, f, &v, &headers);
    }
    let lines: Vec<Vec<String>> = rows
        .iter()
        .zip(&sizes)
        .map(|(st, (rw, virt))| {
            vec![
                id_of(&st.rec),
                st.rec.image_name.clone(),
                st.rec.name.clone(),
                shown_mountpoint(st),
                format!("{} (virtual {})", human_size(*rw), human_size(*virt)),
                human_ago(Some(&st.rec.created)),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "NAME",
        "MOUNTPOINT",
        "SIZE",
        "CREATED",
    ];
    emit(out, &table(&header, &lines))
}

fn import_cmd(store: &Store, a: &ImportArgs, out: &mut dyn Write) -> Result<()> {
    let o = ImportTarball {
        input: a.file.clone(),
        name: a.reference.as_deref().map(Reference::parse).transpose()?,
        changes: a
            .changes
            .iter()
            .map(|c| changes::parse(c))
            .collect::<Result<_>>()?,
        message: a.message.clone(),
        platform: a.platform.as_deref().map(Platform::parse).transpose()?,
        progress: !a.quiet && std::io::stderr().is_terminal(),
    };
    let mut sink = std::io::sink();
    let mut stderr = std::io::stderr();
    let progress: &mut dyn Write = if a.quiet { &mut sink } else { &mut stderr };
    let imported = import_tarball(store, &o, progress)?;
    emit(out, &format!("{}\n", imported.id))
}

pub fn container_group(root: &Path, cmd: ContainerGroup) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        ContainerGroup::Prune(a) => {
            if !a.force
                && !super::store::confirm(
                    "WARNING! This will remove all containers that are not mounted, with \
                     everything they wrote.\nAre you sure you want to continue?",
                )
            {
                eprintln!("Nothing removed (give -f to skip this question).");
                return Ok(());
            }
            let store = Store::open(root, LockMode::Shared)?;
            let n = crate::container::mount::prune(&store, &mut out)?;
            emit(
                &mut out,
                &format!("Total reclaimed space: {}\n", human_size(n)),
            )
        }
    }
}

/// A container as `inspect` shows it: docker's field names where docker has one.
pub fn container_json(store: &Store, rec: &ContainerRecord) -> serde_json::Value {
    let cs = Containers::new(store);
    let mounts = mounts_of(rec);
    let served = !mounts.is_empty() && cs.is_served(&rec.id).unwrap_or(false);
    let upper = cs.upper(&rec.id);
    let (rw, virt) = sizes(store, &cs, rec);
    let lowers: Vec<String> = lowerdirs(store, rec)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    json!({
        "Id": rec.id.to_string(),
        "Name": rec.name,
        "Created": rec.created,
        "Image": rec.image.to_string(),
        "ImageName": rec.image_name,
        "State": {
            "Mounted": served,
            "Stale": !mounts.is_empty() && !served,
            "Mountpoints": mounts,
        },
        "Layers": rec.layers,
        "SizeRw": rw,
        "SizeRootFs": virt,
        "GraphDriver": {
            "Name": "layerfs",
            "Data": {
                "LowerDir": lowers.join(":"),
                "UpperDir": upper,
                "WorkDir": cs.work(&rec.id),
                "MergedDir": mounts.first(),
            },
        },
    })
}

fn shown_mountpoint(st: &Status) -> String {
    match &st.mountpoint {
        None => "-".to_string(),
        Some(p) if st.stale => format!("{} (stale)", p.display()),
        Some(p) => p.display().to_string(),
    }
}

fn compression(s: &str) -> Result<Compression> {
    match s {
        "zstd" => Ok(Compression::Zstd),
        "gzip" => Ok(Compression::Gzip),
        "none" | "uncompressed" => Ok(Compression::Plain),
        _ => Err(Error::Usage(format!(
            "unknown compression {s:?}: use zstd, gzip or none"
        ))),
    }
}

fn commit_cmd(store: &Store, a: &CommitArgs, out: &mut dyn Write) -> Result<()> {
    let opts = CommitOptions {
        reference: a.reference.as_deref().map(Reference::parse).transpose()?,
        message: a.message.clone(),
        author: a.author.clone(),
        changes: a
            .changes
            .iter()
            .map(|c| changes::parse(c))
            .collect::<Result<_>>()?,
        change_text: a.changes.clone(),
        compression: compression(&a.compression)?,
    };
    if let Some(r) = &opts.reference
        && r.digest.is_some()
    {
        return Err(Error::Usage(
            "commit: name the new image REPO[:TAG], without a digest".into(),
        ));
    }
    let rec = Containers::new(store).resolve(&a.container)?;
    let c = commit(store, &rec, &opts)?;
    if !a.quiet {
        eprintln!(
            "layer {} ({} uncompressed, {} {}){}",
            c.diff_id,
            human_size(c.tar_size),
            human_size(c.blob_size),
            a.compression,
            if c.attempts > 1 {
                format!(
                    ", packed {} times: the container was being written to",
                    c.attempts
                )
            } else {
                String::new()
            }
        );
    }
    emit(out, &format!("{}\n", c.id))
}

fn export_cmd(store: &Store, a: &ExportArgs) -> Result<()> {
    let rec = Containers::new(store).resolve(&a.container)?;
    match &a.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Error::Usage(
                    "export: refusing to write a tar to a terminal: use -o FILE or redirect".into(),
                ));
            }
            let w = std::io::BufWriter::new(stdout.lock());
            export::export(store, &rec, w)?;
            Ok(())
        }
        Some(p) => export::export_to_file(store, &rec, p),
    }
}

fn rm(store: &Store, a: &RmArgs, out: &mut dyn Write) -> Result<()> {
    let cs = Containers::new(store);
    let mut failed = Vec::new();
    for name in &a.containers {
        let r = (|| -> Result<()> {
            let rec = cs.resolve(name)?;
            let mounted = !mounts_of(&rec).is_empty() || cs.is_served(&rec.id)?;
            if mounted {
                if !a.force {
                    let at = mounts_of(&rec)
                        .first()
                        .map_or("a mount point".into(), |p| p.display().to_string());
                    return Err(Error::Usage(format!(
                        "container {} is mounted at {at}: unmount it first (layerfs umount {}) \
                         or use rm -f",
                        rec.name, rec.name
                    )));
                }
                unmount_container(&cs, &rec)?;
            }
            cs.remove(&rec)?;
            emit(out, &format!("{name}\n"))
        })();
        if let Err(e) = r {
            eprintln!("layerfs: rm {name}: {e}");
            failed.push(name.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "could not remove: {}",
            failed.join(", ")
        )))
    }
}
