//! Helpers for the container tests: a store in a temp dir, the layerfs binary, images built in
//! code, mount guards, tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerfs::digest::Digest;
use layerfs::image::pack::{open_tree, pack_dir};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True (and a note printed) when this test cannot mount: not root or no /dev/fuse.
pub fn cannot_mount() -> bool {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: needs root and /dev/fuse");
        return true;
    }
    false
}

pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A store root in a temp dir, and the layerfs binary run against it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("lfs-ct-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("store");
        Env { tmp, root }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn dir(&self, p: &str) -> PathBuf {
        let d = self.path(p);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs layerfs; panics with its output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "layerfs {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs layerfs expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            !o.status.success(),
            "layerfs {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stderr).unwrap()
    }

    /// Mounts `target` (image or container) at a fresh dir; stdout and a guard.
    pub fn mount(&self, target: &str, at: &str, extra: &[&str]) -> (String, MountGuard) {
        let mnt = self.dir(at);
        let mut args = vec!["mount", target, mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        assert!(is_mounted(&mnt), "{} not in mountinfo", mnt.display());
        (out.trim().to_string(), MountGuard::new(self, &mnt))
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

pub fn is_mounted(p: &Path) -> bool {
    layerfs::mountinfo::is_mounted(&layerfs::mountinfo::read_mountinfo().unwrap(), p)
}

/// Unmounts on drop (also when the test failed), through layerfs, else lazily.
pub struct MountGuard {
    pub path: PathBuf,
    root: PathBuf,
}

impl MountGuard {
    pub fn new(env: &Env, p: &Path) -> Self {
        MountGuard {
            path: p.to_path_buf(),
            root: env.root.clone(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !is_mounted(&self.path) {
            return;
        }
        let ok = Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("--root")
            .arg(&self.root)
            .arg("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

pub fn sha256(b: &[u8]) -> Digest {
    Digest::of(b)
}

/// A layer tar packed from a directory with layerfs's own packer (overlay format in, OCI out).
pub fn pack(dir: &Path) -> Vec<u8> {
    let root = open_tree(dir).unwrap();
    let (bytes, _) = pack_dir(root.as_fd(), Vec::new()).unwrap();
    bytes
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI layout at `out` for an image of `layers` (uncompressed tars, bottom first;
/// stored gzip-compressed), named `name` (a full reference).
pub fn oci_layout(out: &Path, layers: &[Vec<u8>], name: &str) -> Digest {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha256(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        d
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l).to_string()).collect();
    let history: Vec<serde_json::Value> = (0..layers.len())
        .map(|i| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {i}")}))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": layerfs::image::oci::Platform::host().architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .unwrap();
    let cfg = put(&config);
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let z = gzip(l);
            let d = put(&z);
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                               "digest": d, "size": z.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name}}]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    cfg
}

/// Creates files under `root` from a compact spec: `path/` a directory, `path=content` a file,
/// `path->target` a symlink.
pub fn populate(root: &Path, spec: &[&str]) {
    for s in spec {
        if let Some((p, t)) = s.split_once("->") {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(t, p).unwrap();
        } else if let Some((p, c)) = s.split_once('=') {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        } else {
            std::fs::create_dir_all(root.join(s.trim_end_matches('/'))).unwrap();
        }
    }
}

/// Builds an image from rootfs specs (one per layer, bottom first; a `-path` entry in a spec
/// deletes it, which in a layer dir becomes a whiteout), loads it, returns its ID.
pub fn load_image(env: &Env, name: &str, layer_specs: &[&[&str]]) -> Digest {
    let mut layers = Vec::new();
    for (i, spec) in layer_specs.iter().enumerate() {
        let dir = env.dir(&format!("build-{name}-{i}").replace([':', '/'], "_"));
        let (dels, adds): (Vec<&str>, Vec<&str>) = spec.iter().partition(|s| s.starts_with('-'));
        populate(&dir, &adds);
        let mut tar = pack(&dir);
        if !dels.is_empty() {
            // Whiteouts appended as OCI `.wh.` entries (before the end-of-archive blocks).
            tar.truncate(tar.len() - 1024);
            let mut w = layerfs::image::tarwrite::TarWriter::new(tar);
            for d in dels {
                let p = &d[1..];
                let (parent, base) = p.rsplit_once('/').map_or(("", p), |(a, b)| (a, b));
                let wh = if parent.is_empty() {
                    format!(".wh.{base}")
                } else {
                    format!("{parent}/.wh.{base}")
                };
                w.append(&layerfs::image::tarwrite::TarEntry::file(&wh, 0), None)
                    .unwrap();
            }
            tar = w.finish().unwrap();
        }
        layers.push(tar);
    }
    let layout = env.path(&format!("layout-{name}").replace([':', '/'], "_"));
    let id = oci_layout(&layout, &layers, name);
    env.ok(&["load", "-q", "-i", layout.to_str().unwrap()]);
    id
}

/// A comparable description of every entry below `root`: type, mode, owner, size, content
/// hash or link target, and user./security. xattrs. Times are left out (tar keeps seconds).
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let kind = match md.mode() & libc::S_IFMT {
            libc::S_IFDIR => "dir".to_string(),
            libc::S_IFREG => format!("file {} {}", md.size(), sha256(&std::fs::read(&p).unwrap())),
            libc::S_IFLNK => format!("link {}", std::fs::read_link(&p).unwrap().display()),
            libc::S_IFCHR => format!("chr {}", md.rdev()),
            libc::S_IFBLK => format!("blk {}", md.rdev()),
            libc::S_IFIFO => "fifo".to_string(),
            _ => "other".to_string(),
        };
        let mut x = xattrs(&p);
        x.retain(|(k, _)| k.starts_with("user.") || k.starts_with("security."));
        out.insert(
            rel,
            format!(
                "{kind} {:o} {}:{} {x:?}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ),
        );
        if md.is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut v = vec![0u8; 4096];
        if let Ok(m) = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]) {
            out.push((name, v[..m].to_vec()));
        }
    }
    out.sort();
    out
}

/// Extracts a tar (from bytes) into `dest` with GNU tar, keeping owners and xattrs.
pub fn untar(tar: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let st = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--same-owner", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success());
}
