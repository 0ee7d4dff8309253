//! Test helpers: layer tars and images built in code.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A layer tar under construction; paths are written into the header verbatim (no checks), so
/// malicious names can be expressed.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
    pub mtime: u64,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
        }
    }

    fn header(&self, path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        let bytes = path.as_bytes();
        if bytes.len() <= 100 {
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        }
        h
    }

    /// Appends an entry; names longer than 100 bytes go through a GNU long name record.
    pub fn raw(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        owner: (u64, u64),
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        if path.len() > 100 {
            let mut lh = tar::Header::new_gnu();
            lh.set_entry_type(tar::EntryType::GNULongName);
            lh.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            lh.set_size(path.len() as u64 + 1);
            lh.set_mode(0o644);
            lh.set_cksum();
            let mut name = path.as_bytes().to_vec();
            name.push(0);
            self.b.append(&lh, &name[..]).unwrap();
        }
        let mut h = self.header(path, kind, mode, data.len() as u64);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(path, tar::EntryType::Regular, mode, (0, 0), None, data)
    }
    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        self.raw(path, tar::EntryType::Regular, mode, (uid, gid), None, data)
    }
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.raw(path, tar::EntryType::Directory, mode, (0, 0), None, b"")
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path,
            tar::EntryType::Symlink,
            0o777,
            (0, 0),
            Some(target),
            b"",
        )
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Link, 0o644, (0, 0), Some(target), b"")
    }
    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Fifo, 0o600, (0, 0), None, b"")
    }
    pub fn chardev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header(path, tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"", 0o644)
    }
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }
    /// A PAX header with xattrs for the next entry.
    pub fn xattrs(&mut self, attrs: &[(&str, &[u8])]) -> &mut Self {
        let recs: Vec<(String, &[u8])> = attrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self
    }
    pub fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        self.b.append_pax_extensions(recs.iter().copied()).unwrap();
        self
    }

    /// The finished tar (with its end-of-archive blocks).
    pub fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    layerfs::digest::Digest::of(data).to_string()
}

/// `ls -l`-like one-line description of an entry, for tree comparisons.
pub fn describe(path: &Path) -> String {
    let md = std::fs::symlink_metadata(path).unwrap();
    let ft = md.mode() & libc::S_IFMT;
    let kind = match ft {
        libc::S_IFDIR => "d".to_string(),
        libc::S_IFREG => format!(
            "f:{}",
            String::from_utf8_lossy(&std::fs::read(path).unwrap())
        ),
        libc::S_IFLNK => format!("l:{}", std::fs::read_link(path).unwrap().display()),
        libc::S_IFCHR => format!("c:{}", md.rdev()),
        libc::S_IFBLK => format!("b:{}", md.rdev()),
        libc::S_IFIFO => "p".to_string(),
        _ => "?".to_string(),
    };
    format!("{kind} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
}

/// Every path below `root` (sorted, relative) with [`describe`].
pub fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        out.push((rel, describe(&p)));
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// One image for the builders below: layers as (blob bytes, uncompressed tar).
pub struct TestImage {
    pub layers: Vec<(Vec<u8>, Vec<u8>)>,
    pub config: Vec<u8>,
}

pub fn media(blob: &[u8]) -> &'static str {
    match blob {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

impl TestImage {
    /// An image whose config lists the tars' digests; `history` adds an empty_layer entry.
    pub fn new(layers: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|(_, t)| sha256(t)).collect();
        let mut history: Vec<serde_json::Value> = diff_ids
            .iter()
            .enumerate()
            .map(|(i, _)| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("RUN step {i}")}))
            .collect();
        history.push(serde_json::json!({"created": "2024-01-02T00:00:00Z", "created_by": "CMD [\"sh\"]", "empty_layer": true}));
        let config = serde_json::json!({
            "created": "2024-01-02T00:00:00Z",
            "architecture": layerfs::image::oci::Platform::host().architecture,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/", "Labels": {"a": "b"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        TestImage {
            layers,
            config: serde_json::to_vec(&config).unwrap(),
        }
    }

    pub fn id(&self) -> String {
        sha256(&self.config)
    }

    /// The OCI manifest bytes.
    pub fn manifest(&self) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|(b, _)| serde_json::json!({"mediaType": media(b), "digest": sha256(b), "size": b.len()}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.id(), "size": self.config.len()},
            "layers": layers,
        }))
        .unwrap()
    }
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// Files of an OCI layout: (path, bytes). `annotations` per image go on its index entry.
pub fn oci_files(images: &[(&TestImage, serde_json::Value)]) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut manifests = Vec::new();
    for (img, ann) in images {
        let m = img.manifest();
        for (b, _) in &img.layers {
            files.push((format!("blobs/sha256/{}", hex(&sha256(b))), b.clone()));
        }
        files.push((
            format!("blobs/sha256/{}", hex(&img.id())),
            img.config.clone(),
        ));
        files.push((format!("blobs/sha256/{}", hex(&sha256(&m))), m.clone()));
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&m), "size": m.len(), "annotations": ann,
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    files
}

/// Docker 25+ `docker save`: an OCI layout plus manifest.json.
pub fn docker25_files(img: &TestImage, name: &str) -> Vec<(String, Vec<u8>)> {
    let ann = serde_json::json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "ignored"});
    let mut files = oci_files(&[(img, ann)]);
    let layers: Vec<String> = img
        .layers
        .iter()
        .map(|(b, _)| format!("blobs/sha256/{}", hex(&sha256(b))))
        .collect();
    let mj = serde_json::json!([{"Config": format!("blobs/sha256/{}", hex(&img.id())), "RepoTags": [name], "Layers": layers}]);
    files.push(("manifest.json".into(), serde_json::to_vec(&mj).unwrap()));
    files
}

/// Legacy `docker save`: `<id>.json`, `<n>/layer.tar`, manifest.json (layers as given).
pub fn legacy_files(img: &TestImage, tags: &[&str]) -> Vec<(String, Vec<u8>)> {
    let cfg = format!("{}.json", hex(&img.id()));
    let mut files = vec![(cfg.clone(), img.config.clone())];
    let mut layers = Vec::new();
    for (i, (b, _)) in img.layers.iter().enumerate() {
        let p = format!("{i:064x}/layer.tar");
        files.push((p.clone(), b.clone()));
        layers.push(p);
    }
    let mj = serde_json::json!([{"Config": cfg, "RepoTags": tags, "Layers": layers}]);
    files.push(("manifest.json".into(), serde_json::to_vec(&mj).unwrap()));
    files
}

pub fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (p, b) in files {
        let full = dir.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, b).unwrap();
    }
}

pub fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}
