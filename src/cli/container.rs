//! The container commands: create, ps, diff, commit, save, export, rm (mount and umount are in
//! `mount.rs`).
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{emit, human_ago, table, to_json};
use crate::container::commit::{CommitOptions, commit};
use crate::container::mount::{lowerdirs, mounts_of, shown_image_name, unmount_container};
use crate::container::record::{ContainerRecord, Containers, upper_size};
use crate::container::{changes, diff, export};
use crate::human::human_size;
use crate::image::compress::Compression;
use crate::reference::Reference;
use crate::store::save::SaveFormat;
use crate::store::{LockMode, Store};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container: the image's layers plus a new, empty writable layer
    Create(CreateArgs),
    /// List containers (mounted ones; -a for all)
    Ps(PsArgs),
    /// Show what a container changed: A added, C changed, D deleted (docker diff)
    Diff(DiffArgs),
    /// Make a new image from a container's changes
    Commit(CommitArgs),
    /// Write images to a docker archive, an OCI archive or an OCI layout directory
    Save(SaveArgs),
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
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Container name or ID (prefix)
    pub container: String,
    /// Print JSON (docker's API form: Kind 0 = C, 1 = A, 2 = D)
    #[arg(long)]
    pub json: bool,
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
    /// Output file (a directory for oci-dir)
    #[arg(short = 'o', long)]
    pub output: PathBuf,
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
        ContainerCommand::Diff(a) => diff_cmd(&store, &a, &mut out),
        ContainerCommand::Commit(a) => commit_cmd(&store, &a, &mut out),
        ContainerCommand::Save(a) => {
            let format: SaveFormat = a.format.parse()?;
            crate::store::save::save_with(
                &store,
                &a.images,
                &a.output,
                format,
                a.seekable.compression,
                &mut std::io::stderr(),
            )
        }
        ContainerCommand::Export(a) => export_cmd(&store, &a),
        ContainerCommand::Rm(a) => rm(&store, &a, &mut out),
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
    let mut rows = Vec::new();
    for rec in cs.list()?.into_iter().rev() {
        let mounts = mounts_of(&rec);
        if !a.all && mounts.is_empty() {
            continue;
        }
        let served = !mounts.is_empty() && cs.is_served(&rec.id)?;
        rows.push((rec, mounts, served));
    }
    let id_of = |r: &ContainerRecord| {
        if a.no_trunc {
            r.id.to_string()
        } else {
            r.id.short().to_string()
        }
    };
    if a.quiet {
        let s: String = rows.iter().map(|(r, ..)| id_of(r) + "\n").collect();
        return emit(out, &s);
    }
    let sizes: Vec<(u64, u64)> = rows
        .iter()
        .map(|(r, ..)| {
            let rw = upper_size(&cs.upper(&r.id));
            let virt = store.image(&r.image).map_or(0, |i| i.size) + rw;
            (rw, virt)
        })
        .collect();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .zip(&sizes)
            .map(|((r, m, served), (rw, virt))| {
                json!({
                    "Id": r.id.to_string(), "Name": r.name, "Image": r.image_name,
                    "ImageID": r.image.to_string(),
                    "Mountpoint": m.first(), "Stale": !m.is_empty() && !served,
                    "SizeRw": rw, "SizeRootFs": virt, "Created": r.created,
                })
            })
            .collect();
        return emit(out, &to_json(&v));
    }
    let lines: Vec<Vec<String>> = rows
        .iter()
        .zip(&sizes)
        .map(|((r, m, served), (rw, virt))| {
            vec![
                id_of(r),
                r.image_name.clone(),
                r.name.clone(),
                shown_mountpoint(m, *served),
                format!("{} (virtual {})", human_size(*rw), human_size(*virt)),
                human_ago(Some(&r.created)),
            ]
        })
        .collect();
    emit(
        out,
        &table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "NAME",
                "MOUNTPOINT",
                "SIZE",
                "CREATED",
            ],
            &lines,
        ),
    )
}

fn shown_mountpoint(mounts: &[PathBuf], served: bool) -> String {
    match mounts.first() {
        None => "-".to_string(),
        Some(p) if served => p.display().to_string(),
        Some(p) => format!("{} (stale)", p.display()),
    }
}

fn diff_cmd(store: &Store, a: &DiffArgs, out: &mut dyn Write) -> Result<()> {
    let cs = Containers::new(store);
    let rec = cs.resolve(&a.container)?;
    let changes = diff::diff(&cs.upper(&rec.id), &lowerdirs(store, &rec))?;
    if a.json {
        return emit(out, &diff::to_json(&changes));
    }
    let mut s = String::new();
    for c in &changes {
        s.push_str(&c.to_string());
        s.push('\n');
    }
    emit(out, &s)
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
