//! Shared pieces of the registry tests: a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry) started on 127.0.0.1 and killed on drop, image fixtures built in code
//! as OCI layouts, skopeo, the layerfs binary with an isolated HOME, and a mount guard.
#![allow(dead_code)]
pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `GET /v2/` on the port answers with any HTTP status (polling, bounded).
pub fn wait_http(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{what} exited before it was ready: {st}");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .is_ok()
            {
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "{what} not ready after 20s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A registry process with its own storage, config and access log.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_inner(None)
    }

    /// With htpasswd (bcrypt) basic auth for one user.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut auth_cfg = String::new();
        if let Some((u, p)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            auth_cfg = format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        for _attempt in 0..3 {
            let port = free_port();
            let cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: layerfs-test\n{auth_cfg}",
                dir.path().join("data").display()
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry (Debian package docker-registry)");
            let deadline = Instant::now() + Duration::from_secs(20);
            let ready = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                assert!(Instant::now() < deadline, "registry not ready after 20s");
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                wait_http(port, &mut child, "registry");
                return Registry { child, port, dir };
            }
        }
        panic!(
            "docker-registry did not start; log in {}",
            dir.path().display()
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap()
    }

    /// Access-log lines of `method` whose request path contains `needle`, with their status.
    pub fn requests(&self, method: &str, needle: &str) -> Vec<(String, u16)> {
        let pat = format!("\"{method} ");
        self.log()
            .lines()
            .filter_map(|l| {
                let i = l.find(&pat)?;
                let rest = &l[i + pat.len()..];
                let (path, after) = rest.split_once(' ')?;
                if !path.contains(needle) {
                    return None;
                }
                let status = after
                    .split('"')
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((path.to_owned(), status))
            })
            .collect()
    }

    /// Where the registry keeps a blob's bytes (to tamper with them).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let h = hex_of(digest);
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&h[..2])
            .join(h)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    Plain,
    Gzip,
    Zstd,
}

pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media: &'static str,
}

pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Whiteout(&'a str),
}

/// A layer tar with `entries` (regular files 0644, dirs 0755, OCI whiteouts), compressed.
pub fn layer(entries: &[Entry], comp: Comp) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').map_or(("", *p), |(d, n)| (d, n));
                let wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, wh, &[][..]).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let (blob, media) = match comp {
        Comp::Plain => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => (
            zstd::encode_all(&tar[..], 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    };
    Layer { tar, blob, media }
}

/// Incompressible bytes (a tiny xorshift generator; deterministic per seed).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(layers: Vec<Layer>, arch: &str, cmd: &str) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": [cmd], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| serde_json::json!({"created_by": cmd})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media, "digest": sha256(&l.blob), "size": l.blob.len()})).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            layers,
            config,
            manifest,
        }
    }

    /// The image ID (config digest).
    pub fn id(&self) -> String {
        sha256(&self.config)
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    fn write_blobs(&self, dir: &Path) {
        for b in self
            .layers
            .iter()
            .map(|l| &l.blob)
            .chain([&self.config, &self.manifest])
        {
            put_blob(dir, b);
        }
    }
}

fn put_blob(dir: &Path, b: &[u8]) {
    let p = dir.join("blobs/sha256").join(hex_of(&sha256(b)));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b).unwrap();
}

fn write_index(dir: &Path, manifests: Vec<serde_json::Value>) {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let ix = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&ix).unwrap()).unwrap();
}

/// An OCI layout holding `images`, each tagged (`org.opencontainers.image.ref.name`).
pub fn write_layout(dir: &Path, images: &[(&Image, &str)]) {
    let mut entries = Vec::new();
    for (img, tag) in images {
        img.write_blobs(dir);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.digest(), "size": img.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    }
    write_index(dir, entries);
}

/// An OCI layout whose tag points at an image index of per-platform images; returns the
/// nested index's digest.
pub fn write_multiarch_layout(dir: &Path, tag: &str, images: &[(&Image, &str)]) -> String {
    let mut manifests = Vec::new();
    for (img, arch) in images {
        img.write_blobs(dir);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.digest(), "size": img.manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let ix = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap();
    put_blob(dir, &ix);
    write_index(
        dir,
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256(&ix), "size": ix.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    );
    sha256(&ix)
}

/// `skopeo copy` with TLS verification off for the local registry.
/// Puts `img` into the registry at `addr` as `repo:tag` (`dest`), with skopeo from an OCI layout.
pub fn publish(addr: &str, img: &Image, dest: &str) {
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(img, "v1")]);
    skopeo_copy(
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{addr}/{dest}"),
        &[],
    );
}

pub fn skopeo_copy(src: &str, dest: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        // Keep the fixture's blobs and manifests as they are, unless converting formats.
        .args(if extra.contains(&"--format") {
            &[][..]
        } else {
            &["--preserve-digests"][..]
        })
        .args(extra)
        .args([src, dest])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {src} {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `skopeo inspect --raw` or plain inspect output as JSON.
pub fn skopeo_inspect(reference: &str, raw: bool) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--tls-verify=false"]);
    if raw {
        c.arg("--raw");
    }
    let out = c.arg(reference).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A store root plus an isolated HOME/XDG_CONFIG_HOME for credentials.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    pub fn auth_file(&self) -> PathBuf {
        self.home().join(".config/layerfs/auth.json")
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_layerfs"));
        c.arg("--root")
            .arg(self.root())
            .args(args)
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("LAYERFS_ROOT")
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "layerfs {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    /// Runs and asserts success; returns stdout, then stderr (progress lines).
    pub fn ok_all(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "layerfs {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "layerfs {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
    /// Runs with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn store(&self) -> layerfs::store::Store {
        layerfs::store::Store::open(&self.root(), layerfs::store::LockMode::Shared).unwrap()
    }
}

/// A read-only mount of a stored image's layers through the driver, unmounted on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn image(env: &Env, image: &str) -> Mount {
        let lowers = layerfs::store::image_lowerdirs(&env.root(), image).unwrap();
        let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let dir = tempfile::tempdir().unwrap();
        let opt = format!("lowerdir={}", joined.join(":"));
        let out = Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .args(["mount", "-o", &opt])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = Mount { dir };
        assert!(
            m.is_mounted(),
            "layerfs mount returned but {} is not mounted",
            m.path().display()
        );
        m
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    fn is_mounted(&self) -> bool {
        layerfs::mountinfo::is_mounted(&layerfs::mountinfo::read_mountinfo().unwrap(), self.path())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("umount")
            .arg(self.dir.path())
            .status();
        if self.is_mounted() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Image IDs in a store.
pub fn image_ids(env: &Env) -> Vec<String> {
    env.store()
        .images()
        .unwrap()
        .into_iter()
        .map(|i| i.id.to_string())
        .collect()
}
