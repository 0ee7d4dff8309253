//! The JSON documents of images: OCI / Docker v2 manifests and indexes, the image config, and
//! docker-save's `manifest.json`. Only the fields the store needs are modelled; the original
//! bytes are always kept and hashed, never re-serialised.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::compress::Compression;
use crate::digest::Digest;
use crate::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Full reference of an image in an OCI index (containerd, Docker 25+ `docker save`).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Tag (or reference) of a manifest in an OCI layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest manifest, index or config accepted (they are read into memory).
pub const MAX_DOCUMENT: u64 = 16 << 20;

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The OCI media type of a layer blob compressed with `c`.
pub fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Plain => LAYER_TAR,
        Compression::Gzip => LAYER_GZIP,
        Compression::Zstd => LAYER_ZSTD,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: Vec<&'a Descriptor>,
}

/// An OCI image manifest for `config` and `layers` (bytes, deterministic).
pub fn oci_manifest(config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<u8>> {
    serde_json::to_vec(&ManifestOut {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config,
        layers: layers.iter().collect(),
    })
    .map_err(|e| Error::Format(format!("encoding manifest: {e}")))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine, in OCI vocabulary (`linux/amd64`, `linux/arm64/v8`).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: Some(v.into()),
            }),
            _ => Err(Error::Usage(format!(
                "invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64"
            ))),
        }
    }

    /// Whether an image for `self` can serve `want` (a wanted variant must match exactly;
    /// arm64's implied v8 is accepted).
    pub fn satisfies(&self, want: &Platform) -> bool {
        let variant_ok = match (&want.variant, &self.variant) {
            (None, _) => true,
            (Some(w), Some(h)) => w == h,
            (Some(w), None) => want.architecture == "arm64" && w == "v8",
        };
        self.os == want.os && self.architecture == want.architecture && variant_ok
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index / manifest list.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// Either kind of document a descriptor may point at.
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Parses a manifest or index; `what` names it in errors.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Format(format!("{what}: invalid JSON: {e}")))?;
    let bad = |e: serde_json::Error| Error::Format(format!("{what}: {e}"));
    if v.get("manifests").is_some() {
        Ok(Document::Index(serde_json::from_value(v).map_err(bad)?))
    } else if v.get("layers").is_some() {
        Ok(Document::Manifest(serde_json::from_value(v).map_err(bad)?))
    } else if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        Err(Error::Format(format!(
            "{what}: Docker schema 1 manifests are not supported"
        )))
    } else {
        Err(Error::Format(format!(
            "{what}: neither an image manifest nor an index"
        )))
    }
}

/// The parts of an image config the store reads (the whole document is kept as bytes).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct History {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let c: ImageConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::Format(format!("{what}: invalid image config: {e}")))?;
        if c.rootfs.kind != "layers" {
            return Err(Error::Format(format!(
                "{what}: rootfs type {:?} is not \"layers\"",
                c.rootfs.kind
            )));
        }
        Ok(c)
    }
}

/// One image of docker-save's `manifest.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct DockerSaveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256("ChainID(Ln-1) DiffID(Ln)") (OCI image spec).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        let img = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert!(img.satisfies(&p));
        assert!(img.satisfies(&Platform::parse("linux/arm64").unwrap()));
        assert!(!img.satisfies(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
    }

    #[test]
    fn documents() {
        let d = Digest::of(b"x");
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_document(m.as_bytes(), "m").unwrap(),
            Document::Manifest(_)
        ));
        let i = format!(r#"{{"manifests":[{{"digest":"{d}","size":1}}]}}"#);
        assert!(matches!(
            parse_document(i.as_bytes(), "i").unwrap(),
            Document::Index(_)
        ));
        assert!(parse_document(br#"{"schemaVersion":1}"#, "s").is_err());
        assert!(parse_document(b"[", "j").is_err());
    }
}
