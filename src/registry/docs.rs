//! Checks on the documents a registry returns, before anything is trusted (pure functions).
//!
//! A manifest or index is accepted only when every statement of its type agrees: the HTTP
//! `Content-Type`, its own `mediaType` field and the descriptor that pointed at it. A document
//! that has both `manifests` and `config`/`layers` is ambiguous and refused (a registry, or an
//! attacker, could make two clients see two different images). Sizes are capped before reading.
use super::url::encode;
use crate::image::oci::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Document, Index, OCI_INDEX, OCI_MANIFEST, Platform,
    parse_document,
};
use crate::{Error, Result};

/// Largest manifest or index read (the distribution spec's suggested registry limit).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config read.
pub const MAX_CONFIG: u64 = crate::image::oci::MAX_DOCUMENT;

/// The `Accept` header for manifests: every kind layerfs understands.
pub fn manifest_accept() -> String {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ")
}

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types whose blobs are tar archives (compression is sniffed from the bytes).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
}

fn kind_of_type(media: &str) -> Option<Kind> {
    match media {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// The media type of a Content-Type header value (`type/subtype; charset=…` -> `type/subtype`).
fn bare(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Validates a fetched manifest or index and parses it.
///
/// `content_type` is the response header; `declared` is the media type of the descriptor that
/// pointed at the document (an index entry), if any; `what` names it in errors.
pub fn check_document(
    bytes: &[u8],
    content_type: Option<&str>,
    declared: Option<&str>,
    what: &str,
) -> Result<Document> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Format(format!("{what}: not valid JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(Error::Format(format!("{what}: not a JSON object")));
    };
    let is_index = obj.contains_key("manifests");
    let is_manifest = obj.contains_key("config") || obj.contains_key("layers");
    let kind = match (is_index, is_manifest) {
        (true, true) => {
            return Err(Error::Format(format!(
                "{what}: ambiguous document: it has both \"manifests\" (an index) and \"config\"/\"layers\" (a manifest); refusing it"
            )));
        }
        (true, false) => Kind::Index,
        (false, true) => Kind::Manifest,
        (false, false) if obj.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) => {
            return Err(Error::Format(format!(
                "{what}: Docker schema 1 manifests are not supported"
            )));
        }
        (false, false) => {
            return Err(Error::Format(format!(
                "{what}: neither an image manifest nor an index"
            )));
        }
    };
    let body_type = obj.get("mediaType").and_then(|m| m.as_str());
    let header_type = content_type.map(bare).filter(|t| kind_of_type(t).is_some());
    let declared = declared.filter(|d| !d.is_empty());
    let statements = [
        ("the Content-Type header", header_type),
        ("its mediaType field", body_type),
        ("the descriptor", declared),
    ];
    let mut agreed: Option<(&str, &str)> = None;
    for (source, t) in statements {
        let Some(t) = t else { continue };
        match kind_of_type(t) {
            Some(k) if k == kind => {}
            Some(_) | None => {
                return Err(Error::Format(format!(
                    "{what}: media type {t:?} from {source} does not match the document, which is an image {}",
                    if kind == Kind::Index {
                        "index"
                    } else {
                        "manifest"
                    }
                )));
            }
        }
        match agreed {
            Some((s0, t0)) if t0 != t => {
                return Err(Error::Format(format!(
                    "{what}: media type mismatch: {s0} says {t0:?}, {source} says {t:?}"
                )));
            }
            Some(_) => {}
            None => agreed = Some((source, t)),
        }
    }
    if obj.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(Error::Format(format!("{what}: schemaVersion is not 2")));
    }
    parse_document(bytes, what)
}

/// The media type to send with a manifest PUT: its own field, else OCI's.
pub fn manifest_media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .filter(|m| kind_of_type(m) == Some(Kind::Manifest))
        .unwrap_or_else(|| OCI_MANIFEST.to_owned())
}

/// Refuses artifacts that are not container images (Helm charts, signatures, ...).
pub fn check_config_media(desc: &Descriptor, what: &str) -> Result<()> {
    match desc.media_type.as_str() {
        "" | OCI_CONFIG | DOCKER_CONFIG => Ok(()),
        other => Err(Error::Format(format!(
            "{what}: config media type {other:?} is not a container image config; this is not an image layerfs can pull"
        ))),
    }
}

/// Refuses layers that are not tar archives (encrypted layers, artifacts, ...).
pub fn check_layer_media(desc: &Descriptor, what: &str) -> Result<()> {
    let m = desc.media_type.as_str();
    if m.is_empty() || LAYER_TYPES.contains(&m) {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "{what}: layer {} has unsupported media type {m:?}",
            desc.digest
        )))
    }
}

/// The index entry for `want` (first match in index order; attestations have no real platform).
pub fn select_platform<'a>(ix: &'a Index, want: &Platform, what: &str) -> Result<&'a Descriptor> {
    if let Some(d) = ix
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(want)))
    {
        return Ok(d);
    }
    let have: Vec<String> = ix
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    Err(Error::Usage(format!(
        "{what}: no image for platform {want} (available: {}); choose one with --platform",
        if have.is_empty() {
            "none".to_owned()
        } else {
            have.join(", ")
        }
    )))
}

/// `/v2/NAME/manifests/REF` and friends (names are already validated lowercase paths).
pub fn manifest_path(repository: &str, reference: &str) -> String {
    format!("/v2/{repository}/manifests/{}", encode_ref(reference))
}

pub fn blob_path(repository: &str, digest: &crate::digest::Digest) -> String {
    format!("/v2/{repository}/blobs/{digest}")
}

fn encode_ref(r: &str) -> String {
    if r.contains(':') && r.starts_with("sha256:") {
        r.to_owned()
    } else {
        encode(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn manifest(media: Option<&str>) -> Vec<u8> {
        let d = Digest::of(b"c");
        let mt = media.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{OCI_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#
        )
        .into_bytes()
    }

    fn index(media: Option<&str>) -> Vec<u8> {
        let mt = media.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(r#"{{"schemaVersion":2,{mt}"manifests":[]}}"#).into_bytes()
    }

    #[test]
    fn media_type_agreement() {
        type Row<'a> = (Vec<u8>, Option<&'a str>, Option<&'a str>, bool);
        let rows: Vec<Row> = vec![
            (manifest(Some(OCI_MANIFEST)), Some(OCI_MANIFEST), None, true),
            (
                manifest(None),
                Some(DOCKER_MANIFEST),
                Some(DOCKER_MANIFEST),
                true,
            ),
            (
                manifest(None),
                Some("application/json; charset=utf-8"),
                None,
                true,
            ),
            (manifest(None), None, None, true),
            (
                manifest(Some(DOCKER_MANIFEST)),
                Some(OCI_MANIFEST),
                None,
                false,
            ),
            (
                manifest(Some(OCI_MANIFEST)),
                None,
                Some(DOCKER_MANIFEST),
                false,
            ),
            (manifest(Some(OCI_MANIFEST)), Some(OCI_INDEX), None, false),
            (manifest(Some(OCI_INDEX)), None, None, false),
            (
                manifest(Some("application/vnd.oci.artifact")),
                None,
                None,
                false,
            ),
            (
                index(Some(OCI_INDEX)),
                Some(OCI_INDEX),
                Some(OCI_INDEX),
                true,
            ),
            (index(None), Some(DOCKER_LIST), None, true),
            (index(Some(DOCKER_LIST)), Some(OCI_MANIFEST), None, false),
            (index(None), None, Some(OCI_MANIFEST), false),
            (
                br#"{"schemaVersion":1,"fsLayers":[]}"#.to_vec(),
                None,
                None,
                false,
            ),
            (
                br#"{"schemaVersion":3,"manifests":[]}"#.to_vec(),
                None,
                None,
                false,
            ),
            (b"[]".to_vec(), None, None, false),
            (b"{".to_vec(), None, None, false),
        ];
        for (i, (bytes, ct, decl, ok)) in rows.into_iter().enumerate() {
            let r = check_document(&bytes, ct, decl, "m");
            assert_eq!(r.is_ok(), ok, "row {i}: {:?}", r.err());
        }
    }

    #[test]
    fn ambiguous_documents_are_refused() {
        let d = Digest::of(b"c");
        let both = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"digest":"{d}","size":1}},"layers":[]}}"#
        );
        let e = check_document(both.as_bytes(), Some(OCI_INDEX), None, "x")
            .err()
            .unwrap();
        assert!(e.to_string().contains("ambiguous"), "{e}");
        let e = check_document(both.as_bytes(), Some(OCI_MANIFEST), None, "x")
            .err()
            .unwrap();
        assert!(e.to_string().contains("ambiguous"), "{e}");
    }

    fn desc(media: &str, platform: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: media.into(),
            digest: Digest::of(media.as_bytes()),
            size: 1,
            annotations: Default::default(),
            platform: platform.map(|p| Platform::parse(p).unwrap()),
        }
    }

    #[test]
    fn layer_and_config_types() {
        assert!(
            check_layer_media(
                &desc("application/vnd.oci.image.layer.v1.tar+zstd", None),
                "x"
            )
            .is_ok()
        );
        assert!(
            check_layer_media(
                &desc("application/vnd.docker.image.rootfs.diff.tar.gzip", None),
                "x"
            )
            .is_ok()
        );
        assert!(
            check_layer_media(
                &desc(
                    "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                    None
                ),
                "x"
            )
            .is_err()
        );
        assert!(check_config_media(&desc(DOCKER_CONFIG, None), "x").is_ok());
        assert!(
            check_config_media(&desc("application/vnd.cncf.helm.config.v1+json", None), "x")
                .is_err()
        );
    }

    #[test]
    fn platform_selection() {
        let ix = Index {
            media_type: OCI_INDEX.into(),
            manifests: vec![
                desc("a", Some("linux/amd64")),
                desc("b", Some("linux/arm64/v8")),
                desc("c", Some("linux/arm/v7")),
                desc("att", Some("unknown/unknown")),
            ],
        };
        let pick = |p: &str| {
            select_platform(&ix, &Platform::parse(p).unwrap(), "ix").map(|d| d.media_type.clone())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "a");
        assert_eq!(pick("linux/arm64").unwrap(), "b");
        assert_eq!(pick("linux/arm/v7").unwrap(), "c");
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/amd64, linux/arm64/v8, linux/arm/v7") && !e.contains("unknown"),
            "{e}"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(manifest_path("a/b", "v1.0"), "/v2/a/b/manifests/v1.0");
        let d = Digest::of(b"");
        assert_eq!(
            manifest_path("a", d.as_str()),
            format!("/v2/a/manifests/{d}")
        );
        assert_eq!(blob_path("a", &d), format!("/v2/a/blobs/{d}"));
        assert!(manifest_accept().contains(DOCKER_LIST));
    }
}
