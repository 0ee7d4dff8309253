//! Helpers for the inspection tests: a store in a temp dir, images built from layer tars made
//! in code (`store_common::Layer`), loaded with the binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::store_common::{Layer, TestImage, oci_files, write_dir};

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("lfs-in-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("store");
        Env { tmp, root }
    }

    /// Whiteouts and opaque xattrs in extracted layers need root.
    pub fn root_ok(&self) -> bool {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: extracting whiteouts and opaque directories needs root");
            return false;
        }
        true
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            // No registry credentials of the machine's user.
            .env("HOME", self.tmp.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap()
    }

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
        assert!(!o.status.success(), "layerfs {args:?} succeeded");
        String::from_utf8(o.stderr).unwrap()
    }

    /// Writes an OCI layout of `layers` (uncompressed tars, bottom first) named `name`, with
    /// the config optionally edited, and loads it. Returns the layout's path.
    pub fn load_image(
        &self,
        layers: &[Vec<u8>],
        name: &str,
        edit: Option<&dyn Fn(&mut serde_json::Value)>,
    ) -> PathBuf {
        let mut img = TestImage::new(layers.iter().map(|t| (t.clone(), t.clone())).collect());
        if let Some(f) = edit {
            let mut v: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
            f(&mut v);
            img.config = serde_json::to_vec(&v).unwrap();
        }
        let ann = serde_json::json!({"io.containerd.image.name": name});
        let dir = self
            .tmp
            .path()
            .join(format!("layout-{}", name.replace([':', '/'], "_")));
        write_dir(&dir, &oci_files(&[(&img, ann)]));
        self.ok(&["load", "-q", "-i", dir.to_str().unwrap()]);
        dir
    }

    /// The chain ID (`sha256:…`) of an image's layer N (0 = bottom).
    pub fn layer_chain(&self, image: &str, n: usize) -> String {
        let store =
            layerfs::store::Store::open(&self.root, layerfs::store::LockMode::Shared).unwrap();
        store.resolve(image).unwrap().layers[n].to_string()
    }
}

pub const T0: u64 = 1_600_000_000;

/// The base of the fixture images.
pub fn base_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("etc", 0o755)
        .file("etc/conf", b"v1", 0o644)
        .file("etc/keep", b"k", 0o644)
        .file("bin/tool", &[b'x'; 100], 0o755)
        .file("data/old/a", b"a", 0o644)
        .file("data/old/b", b"bb", 0o644)
        .file("opq/hidden", b"h", 0o644)
        .file("opq/stay", b"s", 0o644)
        .file("mode", b"m", 0o644)
        .file("owner", b"o", 0o644)
        .symlink("link", "target1")
        .file("wasdir/inner", b"i", 0o644)
        .file("wasfile", b"f", 0o644)
        .file("big", &[b'B'; 1000], 0o644);
    l.bytes()
}

/// What the second layer does to the base (each line of `V1_V2` in inspect_diff.rs).
pub fn v2_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.file("etc/conf", b"v2v2", 0o644) // modified content
        .file("etc/new", b"n", 0o644) // added
        .file("etc/keep", b"k", 0o644) // re-added identical: no change
        .whiteout("data", "old") // a deleted directory
        .opaque("opq") // opaque: hidden is gone, stay is identical
        .file("opq/stay", b"s", 0o644)
        .file("opq/fresh", b"f", 0o644)
        .file("mode", b"m", 0o600) // metadata only: mode
        .file_owned("owner", b"o", 0o644, 1000, 1000) // metadata only: owner
        .symlink("link", "target2") // another target
        .file("wasdir", b"now a file", 0o644) // directory -> file
        .file("wasfile/x", b"x", 0o644); // file -> directory
    l.mtime = T0 + 100;
    l.file("bin/tool", &[b'x'; 100], 0o755); // same bytes, new mtime
    l.mtime = T0 + 1;
    l.file("big", &[b'B'; 1000], 0o644); // metadata only: mtime
    l.bytes()
}

/// The changes from the base to base + v2_layer, written by hand.
pub const V1_V2: &str = "\
C /big
C /bin
C /bin/tool
C /data
D /data/old
C /etc
C /etc/conf
A /etc/new
C /link
C /mode
C /opq
A /opq/fresh
D /opq/hidden
C /owner
C /wasdir
C /wasfile
A /wasfile/x
";
