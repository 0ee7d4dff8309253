//! `layerfs commit`: the writable layer becomes a new image.
//!
//! 1. The upper directory is packed ([`pack_dir`]) into a compressed blob in `ROOT/tmp`, hashing
//!    the tar (diff_id) and the blob (digest) as they stream.
//! 2. A new config is derived from the image's (kept as JSON, unknown fields preserved):
//!    `created`, `author`, `--change`s, `rootfs.diff_ids` + the new diff_id, a history entry.
//! 3. An OCI manifest lists the image's layer blobs plus the new one.
//! 4. The result is imported like any loaded image (`Store::import`): the image's own layers
//!    are found present, the new layer is verified and extracted once, names are set.
//!
//! Consistency with a mounted, running container: layerfs does not own the processes writing
//! to the mount, so it cannot pause them as `docker commit` does. Instead the pack is checked:
//! after writing the blob, every entry packed is stat'ed again (inode, ctime, mtime, size,
//! mode, links; see `image::pack`), and the pack is redone when anything changed, up to
//! [`ATTEMPTS`] times. So the layer is the writable layer as it was at one instant during the
//! commit, and every write acknowledged before the commit started is in it (the mount has no
//! write-back cache: a write(2) that returned has reached the upper directory). A write(2)
//! in flight exactly while its file is read can still be seen half-done: for a guaranteed
//! quiescent state, stop the writers (SIGSTOP, a cgroup freezer) or unmount first.
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::Path;

use serde_json::{Value, json};

use super::changes::{self, Instruction};
use super::record::{ContainerRecord, Containers};
use crate::digest::Digest;
use crate::digest::HashingWriter;
use crate::image::compress::Compression;
use crate::image::oci::Descriptor;
use crate::image::oci::{OCI_CONFIG, layer_media_type, oci_manifest};
use crate::image::pack::{PackError, open_tree, pack_dir};
use crate::image::plan::{ImagePlan, LayerInput};
use crate::reference::Reference;
use crate::store::Store;
use crate::store::import::ImportOptions;
use crate::store::records::now_rfc3339;
use crate::store::save::layer_descriptor;
use crate::{Error, Result};

/// Packs tried before giving up on a writable layer that keeps changing.
pub const ATTEMPTS: u32 = 5;

pub struct CommitOptions {
    pub reference: Option<Reference>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<Instruction>,
    /// The `--change` strings as given, for the history entry.
    pub change_text: Vec<String>,
    pub compression: Compression,
}

#[derive(Debug)]
pub struct Committed {
    pub id: Digest,
    pub diff_id: Digest,
    pub blob: Digest,
    pub blob_size: u64,
    pub tar_size: u64,
    pub attempts: u32,
}

/// A compressing writer for the layer blob.
enum Enc<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Enc<W> {
    fn new(w: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::Plain => Enc::Plain(w),
            Compression::Gzip => Enc::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::default(),
            )),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, 3)?;
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                if cpus > 1 {
                    e.multithread(cpus as u32)?;
                }
                Enc::Zstd(e)
            }
        })
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Enc::Plain(w) => Ok(w),
            Enc::Gzip(e) => e.finish(),
            Enc::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Enc<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Enc::Plain(w) => w.write(b),
            Enc::Gzip(e) => e.write(b),
            Enc::Zstd(e) => e.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Enc::Plain(w) => w.flush(),
            Enc::Gzip(e) => e.flush(),
            Enc::Zstd(e) => e.flush(),
        }
    }
}

/// The layer blob written by [`pack_snapshot`].
pub struct PackedLayer {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub tar_size: u64,
    pub attempts: u32,
}

/// Packs `upper` into `dest`, compressed with `c`, retrying until a pack saw no concurrent
/// change (see the module header).
pub fn pack_snapshot(upper: &Path, dest: &Path, c: Compression) -> Result<PackedLayer> {
    let root = open_tree(upper)?;
    let mut last = String::new();
    let werr = |e: io::Error| Error::io("write", dest, e);
    for attempt in 1..=ATTEMPTS {
        let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let tar = HashingWriter::new(Enc::new(blob, c).map_err(werr)?);
        match pack_dir(root.as_fd(), tar) {
            Ok((tar, packed)) => {
                let (enc, diff_id, tar_size) = tar.finish();
                let (buf, digest, size) = enc.finish().map_err(werr)?.finish();
                buf.into_inner().map_err(|e| werr(e.into_error()))?;
                let same = packed
                    .snapshot
                    .unchanged(root.as_fd())
                    .map_err(|e| Error::io("stat", upper, e.into()))?;
                if same {
                    return Ok(PackedLayer {
                        diff_id,
                        digest,
                        size,
                        tar_size,
                        attempts: attempt,
                    });
                }
                last = "an entry changed while the layer was written".into();
            }
            Err(PackError::Changed(m)) => last = m,
            Err(PackError::Failed(e)) => return Err(e),
        }
        log::info!("commit: pack attempt {attempt} saw a concurrent change: {last}");
    }
    Err(Error::Usage(format!(
        "{}: the writable layer kept changing while it was packed ({ATTEMPTS} attempts; last: \
         {last}): pause the processes writing to the container, or unmount it, and retry",
        upper.display()
    )))
}

/// The new config: the parent's JSON with this commit applied (pure).
pub fn derive_config(
    parent: &[u8],
    diff_id: &Digest,
    opts: &CommitOptions,
    created_by: &str,
    now: &str,
) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::Format(format!("image config: {why}"));
    let mut v: Value =
        serde_json::from_slice(parent).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
    let o = v.as_object_mut().ok_or_else(|| bad("not a JSON object"))?;
    let parent_created = o.get("created").cloned().unwrap_or(Value::Null);
    o.insert("created".into(), json!(now));
    // Like docker commit: the author is who commits (-a), never inherited from the parent.
    match &opts.author {
        Some(a) => o.insert("author".into(), json!(a)),
        None => o.remove("author"),
    };
    let mut cfg = match o.get("config") {
        Some(Value::Object(c)) => c.clone(),
        _ => serde_json::Map::new(),
    };
    changes::apply(&mut cfg, &opts.changes);
    o.insert("config".into(), Value::Object(cfg));
    let mut diff_ids: Vec<Value> = o
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(|d| d.as_array())
        .cloned()
        .ok_or_else(|| bad("no rootfs.diff_ids"))?;
    let layers_before = diff_ids.len();
    diff_ids.push(json!(diff_id));
    o.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    let mut history: Vec<Value> = o
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    // History must describe every layer; fill in for images that came without one.
    let described = history
        .iter()
        .filter(|h| h.get("empty_layer").and_then(|e| e.as_bool()) != Some(true))
        .count();
    for _ in described..layers_before {
        history.push(json!({"created": parent_created}));
    }
    let mut entry = serde_json::Map::new();
    entry.insert("created".into(), json!(now));
    entry.insert("created_by".into(), json!(created_by));
    if let Some(a) = &opts.author {
        entry.insert("author".into(), json!(a));
    }
    if let Some(m) = &opts.message {
        entry.insert("comment".into(), json!(m));
    }
    history.push(Value::Object(entry));
    o.insert("history".into(), json!(history));
    serde_json::to_vec(&v).map_err(|e| bad(&e.to_string()))
}

fn created_by(rec: &ContainerRecord, opts: &CommitOptions) -> String {
    let mut s = format!("layerfs commit {}", rec.name);
    for c in &opts.change_text {
        s.push_str(&format!(" --change '{c}'"));
    }
    s
}

/// Import inputs for the new image's layers: the last is the new blob at `blob`; the others
/// are the base image's layers, already in the store (the import never opens them).
fn layer_inputs(layers: &[Descriptor], blob: &Path) -> Vec<LayerInput> {
    let last = layers.len().saturating_sub(1);
    layers
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = blob.to_path_buf();
            let open: crate::image::plan::Opener = if i == last {
                Box::new(move || {
                    let f = File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                    Ok(Box::new(f) as Box<dyn io::Read + Send>)
                })
            } else {
                Box::new(|| Err(Error::Format("base layer missing from the store".into())))
            };
            LayerInput {
                what: if i == last {
                    "the committed layer".into()
                } else {
                    format!("base layer {}", i + 1)
                },
                expected: Some((d.digest.clone(), d.size)),
                size_hint: d.size,
                open,
            }
        })
        .collect()
}

/// Commits a container's writable layer as a new image.
pub fn commit(store: &Store, rec: &ContainerRecord, opts: &CommitOptions) -> Result<Committed> {
    let img = store.image(&rec.image)?;
    let parent_config = store.read_blob(&img.id)?;
    let staging = store.staging()?;
    let blob_path = staging.path().join("layer");
    let upper = Containers::new(store).upper(&rec.id);
    let packed = pack_snapshot(&upper, &blob_path, opts.compression)?;
    let now = now_rfc3339();
    let config = derive_config(
        &parent_config,
        &packed.diff_id,
        opts,
        &created_by(rec, opts),
        &now,
    )?;
    let id = Digest::of(&config);
    let mut layers: Vec<Descriptor> = Vec::new();
    for i in 0..img.layers.len() {
        layers.push(layer_descriptor(store, &img, i)?);
    }
    layers.push(Descriptor {
        media_type: layer_media_type(opts.compression).into(),
        digest: packed.digest.clone(),
        size: packed.size,
        annotations: Default::default(),
        platform: None,
    });
    let config_desc = Descriptor {
        media_type: OCI_CONFIG.into(),
        digest: id.clone(),
        size: config.len() as u64,
        annotations: Default::default(),
        platform: None,
    };
    let manifest = oci_manifest(&config_desc, &layers)?;
    let plan = ImagePlan {
        config,
        manifest: Some(manifest),
        layers: layer_inputs(&layers, &blob_path),
        names: opts.reference.iter().cloned().collect(),
    };
    let imported = store.import(plan, &ImportOptions::default(), &mut io::sink())?;
    Ok(Committed {
        id: imported.id,
        diff_id: packed.diff_id,
        blob: packed.digest,
        blob_size: packed.size,
        tar_size: packed.tar_size,
        attempts: packed.attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(changes: &[&str]) -> CommitOptions {
        CommitOptions {
            reference: None,
            message: Some("msg".into()),
            author: Some("me <me@x>".into()),
            changes: changes.iter().map(|c| changes::parse(c).unwrap()).collect(),
            change_text: changes.iter().map(|c| c.to_string()).collect(),
            compression: Compression::Zstd,
        }
    }

    #[test]
    fn config_is_extended() {
        let d0 = Digest::of(b"0");
        let parent = json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "unknown_field": {"kept": true},
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [d0]},
            "history": [{"created_by": "base"}, {"created_by": "CMD", "empty_layer": true}],
        });
        let d1 = Digest::of(b"1");
        let out = derive_config(
            &serde_json::to_vec(&parent).unwrap(),
            &d1,
            &opts(&["ENV A=1"]),
            "layerfs commit c",
            "2025-01-01T00:00:00Z",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["created"], "2025-01-01T00:00:00Z");
        assert_eq!(v["author"], "me <me@x>");
        assert_eq!(v["unknown_field"]["kept"], true);
        assert_eq!(v["config"]["Env"], json!(["PATH=/bin", "A=1"]));
        assert_eq!(v["config"]["Cmd"], json!(["sh"]));
        assert_eq!(v["rootfs"]["diff_ids"], json!([d0, d1]));
        let h = v["history"].as_array().unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[2]["created_by"], "layerfs commit c");
        assert_eq!(h[2]["comment"], "msg");
        assert_eq!(h[2]["author"], "me <me@x>");
        assert!(h[2].get("empty_layer").is_none());
    }

    #[test]
    fn missing_history_is_filled_in() {
        let d0 = Digest::of(b"0");
        let parent = json!({"rootfs": {"type": "layers", "diff_ids": [d0, d0]}});
        let out = derive_config(
            &serde_json::to_vec(&parent).unwrap(),
            &d0,
            &opts(&[]),
            "x",
            "2025-01-01T00:00:00Z",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["history"].as_array().unwrap().len(), 3);
        assert!(derive_config(b"[]", &d0, &opts(&[]), "x", "t").is_err());
        assert!(derive_config(b"{}", &d0, &opts(&[]), "x", "t").is_err());
    }
}
