//! Turns an image source into import plans.
//!
//! - OCI layout (a directory or archive with `index.json`), which is also what Docker 25+
//!   `docker save` writes (plus a `manifest.json` whose RepoTags are merged in);
//! - legacy `docker save` (only `manifest.json`, `<id>.json` configs, `<id>/layer.tar`).
//!
//! Names: `io.containerd.image.name` (a full reference), `org.opencontainers.image.ref.name`
//! (a tag, combined with `--name REPO`; or a full reference), docker's RepoTags; an image with no
//! name gets `REPO:latest` when `--name REPO` is given.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::oci::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, DockerSaveEntry, Document,
    MAX_DOCUMENT, Manifest, Platform, parse_document,
};
use super::source::{Source, blob_path};
use crate::digest::Digest;
use crate::image::plan::{ImagePlan, LayerInput};
use crate::reference::{DEFAULT_TAG, Reference};
use crate::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--name REPO`: the repository for bare tags.
    pub name: Option<Reference>,
    /// `--platform`; the host's when `None`.
    pub platform: Option<Platform>,
}

/// Plans for every image in the source.
pub fn plans(
    src: &Arc<Source>,
    opts: &LoadOptions,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<ImagePlan>> {
    if src.exists("index.json") {
        oci_plans(src, opts, warn)
    } else if src.exists("manifest.json") {
        legacy_plans(src, opts)
    } else {
        Err(Error::Format(format!(
            "{}: neither an OCI layout nor a docker archive (no index.json or manifest.json)",
            src.path().display()
        )))
    }
}

fn shown(src: &Source) -> String {
    src.path().display().to_string()
}

/// docker-save's manifest.json, if present and readable.
fn docker_manifest(src: &Source) -> Result<Vec<DockerSaveEntry>> {
    if !src.exists("manifest.json") {
        return Ok(Vec::new());
    }
    let b = src.read_small("manifest.json", MAX_DOCUMENT)?;
    serde_json::from_slice(&b)
        .map_err(|e| Error::Format(format!("{}: manifest.json: {e}", shown(src))))
}

fn push_name(names: &mut Vec<Reference>, r: Reference) {
    if !names.contains(&r) {
        names.push(r);
    }
}

fn oci_plans(
    src: &Arc<Source>,
    opts: &LoadOptions,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<ImagePlan>> {
    if src.exists("oci-layout") {
        let b = src.read_small("oci-layout", 4096)?;
        let v: serde_json::Value = serde_json::from_slice(&b)
            .map_err(|e| Error::Format(format!("{}: oci-layout: {e}", shown(src))))?;
        let ver = v
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !ver.starts_with("1.") {
            return Err(Error::Format(format!(
                "{}: unsupported OCI layout version {ver:?}",
                shown(src)
            )));
        }
    }
    let index_bytes = src.read_small("index.json", MAX_DOCUMENT)?;
    let Document::Index(index) =
        parse_document(&index_bytes, &format!("{}: index.json", shown(src)))?
    else {
        return Err(Error::Format(format!(
            "{}: index.json is not an image index",
            shown(src)
        )));
    };
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    // Docker 25+: RepoTags by config digest.
    let mut repo_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in docker_manifest(src)? {
        let cfg = e
            .config
            .trim_start_matches("./")
            .trim_start_matches("blobs/sha256/")
            .to_owned();
        repo_tags
            .entry(cfg)
            .or_default()
            .extend(e.repo_tags.unwrap_or_default());
    }
    // Manifest digest -> (bytes, manifest, names), in index order.
    let mut found: Vec<(Digest, Vec<u8>, Manifest, Vec<Reference>)> = Vec::new();
    let mut skipped = Vec::new();
    for desc in &index.manifests {
        if let Some(p) = &desc.platform
            && !p.satisfies(&want)
        {
            skipped.push(p.to_string());
            continue;
        }
        let (mdesc, bytes, manifest) = resolve_manifest(src, desc, &want, 0)?;
        let mut names = Vec::new();
        if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
            push_name(&mut names, Reference::parse(n)?);
        }
        if let Some(n) = desc.annotations.get(ANNOTATION_REF_NAME) {
            match ref_name(n, opts.name.as_ref()) {
                Ok(Some(r)) => push_name(&mut names, r),
                Ok(None) if names.is_empty() => warn(format!(
                    "{}: image tagged {n:?} has no repository; use --name REPO to name it",
                    shown(src)
                )),
                Ok(None) => {}
                Err(e) => warn(format!("{}: ignoring name {n:?}: {e}", shown(src))),
            }
        }
        for t in repo_tags
            .get(manifest.config.digest.hex())
            .into_iter()
            .flatten()
        {
            push_name(&mut names, Reference::parse(t)?);
        }
        match found.iter_mut().find(|f| f.0 == mdesc.digest) {
            Some(f) => names.into_iter().for_each(|n| push_name(&mut f.3, n)),
            None => found.push((mdesc.digest.clone(), bytes, manifest, names)),
        }
    }
    if found.is_empty() {
        return Err(Error::Format(format!(
            "{}: no image for platform {want} (the layout has: {}); use --platform",
            shown(src),
            if skipped.is_empty() {
                "nothing".into()
            } else {
                skipped.join(", ")
            }
        )));
    }
    found
        .into_iter()
        .map(|(_, bytes, manifest, mut names)| {
            if names.is_empty()
                && let Some(repo) = &opts.name
            {
                names.push(repo.with_tag(repo.tag.as_deref().unwrap_or(DEFAULT_TAG))?);
            }
            oci_plan(src, bytes, manifest, names)
        })
        .collect()
}

/// A ref.name annotation: a tag (needs `--name`) or a full reference.
fn ref_name(n: &str, repo: Option<&Reference>) -> Result<Option<Reference>> {
    let is_tag = !n.contains(['/', ':', '@']);
    match (is_tag, repo) {
        (true, Some(r)) => Ok(Some(r.with_tag(n)?)),
        (true, None) => Ok(None),
        (false, _) => Reference::parse(n).map(Some),
    }
}

/// Follows a descriptor through nested indexes to the image manifest for `want`.
fn resolve_manifest(
    src: &Source,
    desc: &Descriptor,
    want: &Platform,
    depth: usize,
) -> Result<(Descriptor, Vec<u8>, Manifest)> {
    if depth > 4 {
        return Err(Error::Format(format!(
            "{}: image indexes nested too deeply",
            shown(src)
        )));
    }
    let what = format!("{}: {}", shown(src), blob_path(&desc.digest));
    let bytes = src.read_blob(&desc.digest, desc.size, MAX_DOCUMENT)?;
    match parse_document(&bytes, &what)? {
        Document::Manifest(m) => Ok((desc.clone(), bytes, m)),
        Document::Index(ix) => {
            let pick = ix
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(want)));
            match pick {
                Some(d) => resolve_manifest(src, d, want, depth + 1),
                None => {
                    let have: Vec<String> = ix
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    Err(Error::Format(format!(
                        "{what}: no image for platform {want} (index has: {}); use --platform",
                        have.join(", ")
                    )))
                }
            }
        }
    }
}

fn oci_plan(
    src: &Arc<Source>,
    manifest_bytes: Vec<u8>,
    m: Manifest,
    names: Vec<Reference>,
) -> Result<ImagePlan> {
    let config = src.read_blob(&m.config.digest, m.config.size, MAX_DOCUMENT)?;
    let layers = m
        .layers
        .iter()
        .map(|l| {
            let s = Arc::clone(src);
            let name = blob_path(&l.digest);
            LayerInput {
                what: format!("blob {} in {}", l.digest, shown(src)),
                expected: Some((l.digest.clone(), l.size)),
                size_hint: l.size,
                open: Box::new(move || s.open_member(&name).map(|(r, _)| r)),
            }
        })
        .collect();
    Ok(ImagePlan {
        config,
        manifest: Some(manifest_bytes),
        layers,
        names,
    })
}

fn legacy_plans(src: &Arc<Source>, opts: &LoadOptions) -> Result<Vec<ImagePlan>> {
    let entries = docker_manifest(src)?;
    if entries.is_empty() {
        return Err(Error::Format(format!(
            "{}: manifest.json lists no images",
            shown(src)
        )));
    }
    entries
        .into_iter()
        .map(|e| {
            let config = src.read_small(&e.config, MAX_DOCUMENT)?;
            // Configs are named by their digest (`HEX.json`, `blobs/sha256/HEX`): check it.
            let stem = e
                .config
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".json");
            if crate::digest::is_sha256_hex(stem) && Digest::of(&config).hex() != stem {
                return Err(Error::DigestMismatch {
                    what: format!("{}: config {}", shown(src), e.config),
                    expected: format!("sha256:{stem}"),
                    actual: Digest::of(&config).to_string(),
                });
            }
            let mut names = Vec::new();
            for t in e.repo_tags.unwrap_or_default() {
                push_name(&mut names, Reference::parse(&t)?);
            }
            if names.is_empty()
                && let Some(repo) = &opts.name
            {
                names.push(repo.with_tag(repo.tag.as_deref().unwrap_or(DEFAULT_TAG))?);
            }
            let layers = e
                .layers
                .iter()
                .map(|member| {
                    let (_, size) = src.open_member(member)?;
                    let s = Arc::clone(src);
                    let m = member.clone();
                    Ok(LayerInput {
                        what: format!("{member} in {}", shown(src)),
                        expected: None,
                        size_hint: size,
                        open: Box::new(move || s.open_member(&m).map(|(r, _)| r)),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ImagePlan {
                config,
                manifest: None,
                layers,
                names,
            })
        })
        .collect()
}
