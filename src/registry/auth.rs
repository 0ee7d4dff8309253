//! Registry credentials in the `auths` format of Docker's `config.json`:
//!
//! ```text
//! { "auths": { "localhost:5000": { "auth": "base64(user:password)" },
//!              "https://index.docker.io/v1/": { "auth": "…" } } }
//! ```
//!
//! layerfs writes `$XDG_CONFIG_HOME/layerfs/auth.json` (else `~/.config/layerfs/auth.json`),
//! mode 0600 in a 0700 directory, replaced atomically; other keys in that file are kept.
//! Lookups read it first, then Docker's `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), which is never written. Credential helpers (`credsStore`) are not
//! run. A password never appears in `Debug` output, logs or error messages.
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::reference::DOCKER_HUB;
use crate::{Error, Result};

/// The key Docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A username and a password (or token). `Debug` shows only the username.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Result<Self> {
        if username.is_empty() || username.contains(':') {
            return Err(Error::Usage(
                "a username must be non-empty and must not contain ':'".into(),
            ));
        }
        if password.is_empty() {
            return Err(Error::Usage("the password is empty".into()));
        }
        Ok(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// `base64(user:password)`, the `auth` field and the Basic `Authorization` value.
    pub fn basic(&self) -> String {
        B64.encode(format!("{}:{}", self.username, self.password))
    }

    fn from_auth_field(v: &str) -> Option<Self> {
        let raw = B64.decode(v.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Credentials::new(u, p).ok()
    }

    /// True when `text` contains the password (used to check messages never leak it).
    pub fn appears_in(&self, text: &str) -> bool {
        text.contains(&self.password) || text.contains(&self.basic())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// The key under which credentials for `registry` are written (`docker.io` uses Docker's).
pub fn server_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_ascii_lowercase()
    }
}

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        DOCKER_HUB | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// Whether an `auths` key (`host:port`, `https://host/v1/`, `http://host`) names `registry`.
fn key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    let r = registry.to_ascii_lowercase();
    k == r || (is_docker_hub(&k) && is_docker_hub(&r))
}

/// Where credentials are read from and written to.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    /// layerfs's own file: read first, the only one written.
    pub own: PathBuf,
    /// Read-only fallbacks (Docker's config.json).
    pub others: Vec<PathBuf>,
}

impl AuthFiles {
    /// The standard locations from the environment (XDG_CONFIG_HOME, DOCKER_CONFIG, HOME).
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|x| !x.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .unwrap_or_else(|| PathBuf::from("/root/.config"));
        let docker = std::env::var_os("DOCKER_CONFIG")
            .filter(|x| !x.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".docker")));
        AuthFiles {
            own: config.join("layerfs/auth.json"),
            others: docker.into_iter().map(|d| d.join("config.json")).collect(),
        }
    }

    /// Credentials for `registry` (`localhost:5000`, `docker.io`), if any file has them.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        for path in std::iter::once(&self.own).chain(&self.others) {
            let Some(doc) = read_json(path)? else {
                continue;
            };
            let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
                continue;
            };
            for (key, entry) in auths {
                if !key_matches(key, registry) {
                    continue;
                }
                if let Some(c) = entry_credentials(entry) {
                    log::debug!("credentials for {registry} from {}", path.display());
                    return Ok(Some(c));
                }
                log::warn!(
                    "{}: the entry for {key} has no usable \"auth\" (credential helpers are not run); use `layerfs login {registry}`",
                    path.display()
                );
            }
        }
        Ok(None)
    }

    /// Saves credentials for `registry` in the own file (0600), replacing an older entry.
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let mut doc = read_json(&self.own)?.unwrap_or_else(|| serde_json::json!({}));
        let obj = doc.as_object_mut().ok_or_else(|| not_object(&self.own))?;
        let auths = obj
            .entry("auths")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .ok_or_else(|| not_object(&self.own))?;
        auths.retain(|k, _| !key_matches(k, registry));
        auths.insert(
            server_key(registry),
            serde_json::json!({ "auth": creds.basic() }),
        );
        write_private(&self.own, &doc)
    }

    /// Removes the own file's entries for `registry`; false when there were none.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let Some(mut doc) = read_json(&self.own)? else {
            return Ok(false);
        };
        let Some(auths) = doc.get_mut("auths").and_then(|a| a.as_object_mut()) else {
            return Ok(false);
        };
        let before = auths.len();
        auths.retain(|k, _| !key_matches(k, registry));
        if auths.len() == before {
            return Ok(false);
        }
        write_private(&self.own, &doc)?;
        Ok(true)
    }

    /// Which read-only file (if any) has an entry for `registry`: logout mentions it.
    pub fn other_with(&self, registry: &str) -> Result<Option<PathBuf>> {
        for p in &self.others {
            if let Some(doc) = read_json(p)?
                && let Some(auths) = doc.get("auths").and_then(|a| a.as_object())
                && auths.keys().any(|k| key_matches(k, registry))
            {
                return Ok(Some(p.clone()));
            }
        }
        Ok(None)
    }
}

fn entry_credentials(entry: &serde_json::Value) -> Option<Credentials> {
    if let Some(a) = entry.get("auth").and_then(|a| a.as_str())
        && let Some(c) = Credentials::from_auth_field(a)
    {
        return Some(c);
    }
    let u = entry.get("username").and_then(|u| u.as_str())?;
    let p = entry.get("password").and_then(|p| p.as_str())?;
    Credentials::new(u, p).ok()
}

fn not_object(p: &Path) -> Error {
    Error::Format(format!(
        "{}: not a JSON object with an \"auths\" object; fix or remove the file",
        p.display()
    ))
}

fn read_json(p: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::Format(format!(
                "{}: invalid JSON ({e}); fix or remove the file",
                p.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// Writes `doc` to `path` as a 0600 file through a temporary file and one rename.
fn write_private(path: &Path, doc: &serde_json::Value) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Usage(format!("{}: no parent directory", path.display())))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create", dir, e))?;
    let bytes = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::Format(format!("encoding {}: {e}", path.display())))?;
    let tmp = dir.join(format!(".auth.json.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    // The mode given to open is filtered by the umask; 0600 is what must hold.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod", &tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// `localhost:5000`, `https://ghcr.io/`, `https://index.docker.io/v1/` -> the registry name.
pub fn registry_name(server: Option<&str>) -> Result<String> {
    let Some(s) = server else {
        return Ok(DOCKER_HUB.to_owned());
    };
    let s = s
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(Error::Usage(format!(
            "invalid registry {s:?}: expected a host[:port] such as localhost:5000"
        )));
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> AuthFiles {
        AuthFiles {
            own: dir.join("cfg/layerfs/auth.json"),
            others: vec![dir.join("docker/config.json")],
        }
    }

    #[test]
    fn store_lookup_remove() {
        let t = tempfile::tempdir().unwrap();
        let f = files(t.path());
        assert_eq!(f.lookup("localhost:5000").unwrap(), None);
        let c = Credentials::new("alice", "s3cret:x").unwrap();
        f.store("localhost:5000", &c).unwrap();
        let md = std::fs::metadata(&f.own).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(f.lookup("LOCALHOST:5000").unwrap(), Some(c.clone()));
        assert_eq!(f.lookup("localhost:5001").unwrap(), None);
        let text = std::fs::read_to_string(&f.own).unwrap();
        assert!(text.contains(&c.basic()) && !text.contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(f.remove("localhost:5000").unwrap());
        assert!(!f.remove("localhost:5000").unwrap());
        assert_eq!(f.lookup("localhost:5000").unwrap(), None);
    }

    #[test]
    fn keeps_other_keys_and_reads_docker_config() {
        let t = tempfile::tempdir().unwrap();
        let f = files(t.path());
        std::fs::create_dir_all(f.own.parent().unwrap()).unwrap();
        std::fs::write(&f.own, r#"{"credHelpers":{"x":"y"},"auths":{}}"#).unwrap();
        let hub = Credentials::new("bob", "pw").unwrap();
        std::fs::create_dir_all(t.path().join("docker")).unwrap();
        std::fs::write(
            &f.others[0],
            format!(
                r#"{{"auths":{{"{DOCKER_HUB_KEY}":{{"auth":"{}"}},"helper.example":{{}}}}}}"#,
                hub.basic()
            ),
        )
        .unwrap();
        assert_eq!(f.lookup("docker.io").unwrap(), Some(hub.clone()));
        assert_eq!(f.lookup("helper.example").unwrap(), None);
        assert!(f.other_with("docker.io").unwrap().is_some());
        let mine = Credentials::new("carol", "pw2").unwrap();
        f.store("docker.io", &mine).unwrap();
        assert_eq!(f.lookup("docker.io").unwrap(), Some(mine));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&f.own).unwrap()).unwrap();
        assert_eq!(doc["credHelpers"]["x"], "y");
        assert!(doc["auths"][DOCKER_HUB_KEY]["auth"].is_string());
    }

    #[test]
    fn key_forms() {
        for (k, r, m) in [
            ("localhost:5000", "localhost:5000", true),
            ("http://localhost:5000", "localhost:5000", true),
            ("https://ghcr.io/v2/", "ghcr.io", true),
            ("https://index.docker.io/v1/", "docker.io", true),
            ("registry-1.docker.io", "docker.io", true),
            ("ghcr.io", "docker.io", false),
            ("localhost", "localhost:5000", false),
        ] {
            assert_eq!(key_matches(k, r), m, "{k} vs {r}");
        }
        assert!(Credentials::new("a:b", "p").is_err());
        assert!(Credentials::new("a", "").is_err());
        assert!(Credentials::from_auth_field("!!!").is_none());
    }

    #[test]
    fn registry_names() {
        for (i, o) in [
            (None, "docker.io"),
            (Some("localhost:5000"), "localhost:5000"),
            (Some("https://index.docker.io/v1/"), "docker.io"),
            (Some("http://GHCR.io/"), "ghcr.io"),
        ] {
            assert_eq!(registry_name(i).unwrap(), o);
        }
        assert!(registry_name(Some("")).is_err());
        assert!(registry_name(Some("a b")).is_err());
    }
}
