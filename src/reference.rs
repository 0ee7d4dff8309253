//! Image references: `[registry[:port]/]path[:tag][@sha256:HEX]`, normalised as Docker does.
//!
//! - `alpine`              -> registry `docker.io`, repository `library/alpine`, tag `latest`
//! - `user/app:1`          -> `docker.io/user/app:1`
//! - `localhost:5000/x`    -> registry `localhost:5000`, repository `x`, tag `latest`
//! - `ghcr.io/o/r@sha256:…`-> tag none, digest set (no default tag when a digest is given)
//!
//! The first path component is a registry when it contains `.` or `:`, is `localhost`, or has an
//! uppercase letter (Docker's rule); otherwise the reference is on Docker Hub. Repository paths are
//! lowercase `[a-z0-9]+` components joined by `.`, `_`, `__` or runs of `-`. Image ID prefixes are
//! not references: the store tries those itself before calling [`Reference::parse`].
use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, is_sha256_hex};
use crate::{Error, Result};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Namespace of Docker Hub's official images (`alpine` = `library/alpine`).
pub const OFFICIAL_NAMESPACE: &str = "library";
/// Tag used when a reference has neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, `[::1]:5000`.
    pub registry: String,
    /// `library/alpine`, `user/app`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was written; `None` for a digest-only reference.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference. Errors say what part is wrong.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("invalid image reference {s:?}: {why}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(&bad)?;
        }
        if name.is_empty() {
            return Err(bad("missing repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 255 characters"));
        }
        let (registry, path) = split_registry(name);
        check_registry(registry).map_err(&bad)?;
        check_path(path).map_err(|why| bad(&why))?;
        if is_sha256_hex(path) {
            return Err(bad(
                "a 64-digit hex string is an image ID, not a repository name",
            ));
        }
        let registry = if registry.is_empty() || registry == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry.to_owned()
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` in normalised form (`docker.io/library/alpine`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The repository as Docker shows it: `alpine`, `user/app`, `ghcr.io/o/r`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            let p = &self.repository;
            match p
                .strip_prefix(OFFICIAL_NAMESPACE)
                .and_then(|r| r.strip_prefix('/'))
            {
                Some(short) if !short.contains('/') => short.to_owned(),
                _ => p.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short display form: `alpine:latest`, `ghcr.io/o/r@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        push_suffix(&mut s, self);
        s
    }

    /// This reference with another tag and no digest (used for `--name REPO` + a layout's tag).
    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        check_tag(tag).map_err(|why| {
            Error::Usage(format!("invalid tag {tag:?} for {}: {why}", self.name()))
        })?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }
}

fn push_suffix(s: &mut String, r: &Reference) {
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(d.as_str());
    }
}

/// Normalised form: `docker.io/library/alpine:latest`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

/// Splits off the registry: the first component when it looks like a host (Docker's rule).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("", name),
    }
}

fn check_tag(t: &str) -> std::result::Result<(), &'static str> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    match t.as_bytes().first() {
        None => Err("empty tag"),
        _ if t.len() > MAX_TAG_LEN => Err("tag longer than 128 characters"),
        Some(&b) if b == b'.' || b == b'-' => Err("a tag cannot start with '.' or '-'"),
        _ if !t.bytes().all(ok_char) => Err("a tag may only hold letters, digits, '_', '.', '-'"),
        _ => Ok(()),
    }
}

fn check_registry(r: &str) -> std::result::Result<(), &'static str> {
    if r.is_empty() {
        return Ok(());
    }
    let port = if let Some(v6) = r.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("unclosed '[' in registry address");
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err("bad IPv6 registry address");
        }
        match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("unexpected text after ']' in registry")?,
            ),
        }
    } else {
        let (host, port) = match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err("bad registry host name");
        }
        port
    };
    match port {
        Some(p) if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err("registry port must be a number")
        }
        _ => Ok(()),
    }
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or `-`+.
fn check_path(p: &str) -> std::result::Result<(), String> {
    for comp in p.split('/') {
        if comp.is_empty() {
            return Err("empty path component (double or trailing '/')".into());
        }
        if comp.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("repository name must be lowercase: {comp:?}"));
        }
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(format!(
                "component {comp:?} must start and end with a lowercase letter or digit"
            ));
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(format!("bad separator {sep:?} in component {comp:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// input | registry | repository | tag ("-" = none) | Display | familiar(); `$D` = a digest.
    const ROWS: &str = "
        alpine | docker.io | library/alpine | latest | docker.io/library/alpine:latest | alpine:latest
        alpine:3.19 | docker.io | library/alpine | 3.19 | docker.io/library/alpine:3.19 | alpine:3.19
        docker.io/library/alpine | docker.io | library/alpine | latest | docker.io/library/alpine:latest | alpine:latest
        index.docker.io/alpine | docker.io | library/alpine | latest | docker.io/library/alpine:latest | alpine:latest
        user/app:v1.0-rc_1 | docker.io | user/app | v1.0-rc_1 | docker.io/user/app:v1.0-rc_1 | user/app:v1.0-rc_1
        docker.io/library/a/b | docker.io | library/a/b | latest | docker.io/library/a/b:latest | library/a/b:latest
        localhost/x | localhost | x | latest | localhost/x:latest | localhost/x:latest
        localhost:5000/x/y:t | localhost:5000 | x/y | t | localhost:5000/x/y:t | localhost:5000/x/y:t
        127.0.0.1:5000/app | 127.0.0.1:5000 | app | latest | 127.0.0.1:5000/app:latest | 127.0.0.1:5000/app:latest
        [::1]:5000/app:2 | [::1]:5000 | app | 2 | [::1]:5000/app:2 | [::1]:5000/app:2
        Registry/app | Registry | app | latest | Registry/app:latest | Registry/app:latest
        ab/a__b_c-d---e.f | docker.io | ab/a__b_c-d---e.f | latest | docker.io/ab/a__b_c-d---e.f:latest | ab/a__b_c-d---e.f:latest
        ghcr.io/o/r@$D | ghcr.io | o/r | - | ghcr.io/o/r@$D | ghcr.io/o/r@$D
        alpine:3.19@$D | docker.io | library/alpine | 3.19 | docker.io/library/alpine:3.19@$D | alpine:3.19@$D
    ";

    #[test]
    fn normalises_like_docker() {
        for line in ROWS.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let line = line.replace("$D", D);
            let f: Vec<&str> = line.split(" | ").collect();
            let [input, reg, repo, tag, disp, fam] = f[..] else {
                panic!("bad row {line}")
            };
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, reg, "{input}");
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), (tag != "-").then_some(tag), "{input}");
            assert_eq!(r.digest.is_some(), input.contains('@'), "{input}");
            assert_eq!(r.to_string(), disp, "{input}");
            assert_eq!(r.familiar(), fam, "{input}");
            // Display output parses back to the same reference.
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let long_name = "a".repeat(256);
        let hex_name = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bad_digest = format!("{}@sha256:abc", "alpine");
        for bad in [
            "",
            ":tag",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "alpine:a/b",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a._b",
            "a b",
            "alpine@",
            "alpine@md5:00",
            &bad_digest,
            "localhost:port/a",
            "[::1/a",
            "ex-.com/a",
            &long_tag,
            &long_name,
            hex_name,
            "alpine:tag:tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn with_tag_drops_digest() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        let t = r.with_tag("edge").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/alpine:edge");
        assert_eq!(t.familiar_name(), "alpine");
        assert!(r.with_tag("bad tag").is_err());
    }
}
