//! An HTTP client for one registry (OCI distribution API v2) on ureq.
//!
//! - **Transport.** HTTPS with the system's CA roots. Plain HTTP only for a loopback host
//!   (`localhost`, 127.0.0.0/8, `::1`) or with `--tls-verify=false`, and then only after HTTPS
//!   failed at the transport level (as Docker treats insecure registries).
//! - **Auth.** `GET /v2/` reveals the scheme: `Basic` sends the stored credentials; `Bearer`
//!   fetches a token per scope (`repository:NAME:pull[,push]`) from the challenge's realm, with
//!   the credentials when there are some, and retries once on a 401 (expired token).
//! - **Credential policy.** Redirects are followed here, not by ureq, so that the
//!   `Authorization` header is attached only to URLs of the registry's own origin (scheme, host
//!   and port): a blob redirected to a CDN or to another host never sees it. An HTTPS URL
//!   redirecting to plain HTTP is refused unless plain HTTP is allowed for this registry. URLs
//!   in messages and logs lose their query (signed URLs carry secrets there).
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ureq::SendBody;
use ureq::http::{self, Response};

use super::auth::Credentials;
use super::challenge::{self, Challenge, TokenResponse};
use super::url::{Scheme, Url, host_of, is_loopback};
use crate::reference::DOCKER_HUB;
use crate::{Error, Result};

const MAX_REDIRECTS: usize = 5;
/// Largest error or token document read from a registry.
const MAX_SMALL_BODY: u64 = 1 << 20;
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Verify TLS certificates (`--tls-verify=false` turns this off and allows plain HTTP).
    pub tls_verify: bool,
    /// Longest wait for a response and between reads (default 120 s; lazy reads use less, so
    /// a registry that stops answering fails a read instead of hanging it).
    pub timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            timeout: None,
        }
    }
}

/// Request counters (tests and the pull summary read them).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub blob_downloads: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub blob_uploads: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub blob_mounts: AtomicU64,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// What a request sends. Files are reopened on a retry.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File {
        path: &'a Path,
        len: u64,
        bar: Option<&'a indicatif::ProgressBar>,
    },
}

pub struct Request<'a> {
    pub method: Method,
    pub url: Url,
    /// Token scope (`repository:a/b:pull`); several are separated by spaces.
    pub scope: &'a str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body<'a>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, url: Url, scope: &'a str) -> Self {
        Request {
            method,
            url,
            scope,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn body(mut self, b: Body<'a>) -> Self {
        self.body = b;
        self
    }
}

#[derive(Clone, Debug)]
enum AuthMode {
    Anonymous,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// A connected registry.
pub struct Client {
    agent: ureq::Agent,
    /// As the user wrote it (`localhost:5000`, `docker.io`): names it in messages.
    pub registry: String,
    base: Url,
    plain_ok: bool,
    creds: Option<Credentials>,
    mode: Mutex<AuthMode>,
    tokens: Mutex<HashMap<String, String>>,
    pub stats: Stats,
}

/// The API host of a registry name (Docker Hub's API lives elsewhere).
fn api_authority(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn agent(tls_verify: bool, timeout: Option<Duration>) -> ureq::Agent {
    let wait = timeout.unwrap_or(Duration::from_secs(120));
    let mut tls = ureq::tls::TlsConfig::builder().disable_verification(!tls_verify);
    if let Some(roots) = system_roots() {
        tls = tls.root_certs(roots);
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("layerfs/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .timeout_connect(Some(wait.min(Duration::from_secs(30))))
        .timeout_recv_response(Some(wait))
        .timeout_per_read(Some(wait))
        .build()
        .new_agent()
}

/// The system's CA bundle (SSL_CERT_FILE, else Debian/Fedora locations); `None` falls back to
/// the roots compiled into ureq.
fn system_roots() -> Option<ureq::tls::RootCerts> {
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let path = env
        .into_iter()
        .chain(CA_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file())?;
    let pem = std::fs::read(&path).ok()?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        log::warn!("{}: no certificates; using built-in roots", path.display());
        return None;
    }
    Some(ureq::tls::RootCerts::from(certs))
}

impl Client {
    /// Connects to `registry` (`host[:port]`): picks the scheme and learns the auth scheme from
    /// `GET /v2/`.
    pub fn connect(
        registry: &str,
        creds: Option<Credentials>,
        opts: &ClientOptions,
    ) -> Result<Client> {
        let authority = api_authority(registry);
        let plain_ok = !opts.tls_verify || is_loopback(host_of(authority));
        let mut client = Client {
            agent: agent(opts.tls_verify, opts.timeout),
            registry: registry.to_owned(),
            base: Url::new(Scheme::Https, authority, "/")?,
            plain_ok,
            creds,
            mode: Mutex::new(AuthMode::Anonymous),
            tokens: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        };
        let ping = match client.ping() {
            Ok(r) => r,
            Err(https_err) if plain_ok => {
                log::debug!("{registry}: HTTPS failed ({https_err}); trying plain HTTP");
                client.base = Url::new(Scheme::Http, authority, "/")?;
                client.ping().map_err(|e| {
                    Error::Registry(format!(
                        "cannot reach registry {registry} over HTTPS ({https_err}) or HTTP ({e})"
                    ))
                })?
            }
            Err(e) => {
                return Err(Error::Registry(format!(
                    "cannot reach registry {registry} over HTTPS: {e} (for a registry without TLS, add --tls-verify=false)"
                )));
            }
        };
        match ping.status().as_u16() {
            200..=299 => {}
            401 => {
                let ch = header(&ping, "www-authenticate").and_then(|h| challenge::parse(&h));
                client.learn(ch)?;
            }
            s => {
                return Err(Error::Registry(format!(
                    "{} does not answer as an OCI registry (GET /v2/ returned HTTP {s})",
                    client.base.redacted()
                )));
            }
        }
        Ok(client)
    }

    fn ping(&self) -> std::result::Result<Response<ureq::Body>, ureq::Error> {
        let url = self
            .base
            .join("/v2/")
            .map_err(|e| ureq::Error::BadUri(e.to_string()))?;
        Stats::add(&self.stats.requests, 1);
        self.agent.get(url.to_string()).call()
    }

    /// `https://host` or `http://host`, as chosen at connect time.
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path)
    }

    pub fn username(&self) -> Option<&str> {
        self.creds.as_ref().map(|c| c.username.as_str())
    }

    /// Records what a 401 asked for. False when there is nothing new to try.
    fn learn(&self, ch: Option<Challenge>) -> Result<bool> {
        let mut mode = self.mode.lock().map_err(|_| poisoned())?;
        match ch {
            Some(Challenge::Basic) => {
                let was_basic = matches!(*mode, AuthMode::Basic);
                *mode = AuthMode::Basic;
                Ok(self.creds.is_some() && !was_basic)
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let realm = Url::parse(&realm).map_err(|e| {
                    Error::Auth(format!(
                        "registry {}: unusable token realm: {e}",
                        self.registry
                    ))
                })?;
                *mode = AuthMode::Bearer { realm, service };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The Authorization value for `scope`, fetching a Bearer token when needed.
    fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let mode = self.mode.lock().map_err(|_| poisoned())?.clone();
        match mode {
            AuthMode::Anonymous => Ok(None),
            AuthMode::Basic => Ok(self.creds.as_ref().map(|c| format!("Basic {}", c.basic()))),
            AuthMode::Bearer { realm, service } => {
                if let Some(t) = self.tokens.lock().map_err(|_| poisoned())?.get(scope) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.fetch_token(&realm, service.as_deref(), Some(scope))?;
                self.tokens
                    .lock()
                    .map_err(|_| poisoned())?
                    .insert(scope.to_owned(), t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String> {
        let mut url = realm.clone();
        if let Some(s) = service {
            url = url.with_query("service", s);
        }
        for s in scope
            .into_iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
        {
            url = url.with_query("scope", s);
        }
        if let Some(c) = &self.creds {
            if realm.scheme() == Scheme::Http
                && !self.plain_ok
                && !is_loopback(host_of(realm.authority()))
            {
                return Err(Error::Auth(format!(
                    "registry {}: refusing to send credentials to a plain-HTTP token server ({})",
                    self.registry,
                    realm.redacted()
                )));
            }
            url = url.with_query("account", &c.username);
        }
        let mut req = self.agent.get(url.to_string());
        if let Some(c) = &self.creds {
            req = req.header("authorization", format!("Basic {}", c.basic()));
        }
        Stats::add(&self.stats.requests, 1);
        let resp = req
            .call()
            .map_err(|e| Error::Registry(format!("token server {}: {e}", realm.redacted())))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.auth_error("the token server refused", scope.unwrap_or("")));
        }
        if !(200..300).contains(&status) {
            return Err(Error::Registry(format!(
                "token server {} returned HTTP {status}",
                realm.redacted()
            )));
        }
        let body = read_limited(resp, MAX_SMALL_BODY, "token response")?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::Registry(format!(
                "token server {}: invalid response: {e}",
                realm.redacted()
            ))
        })?;
        t.into_token().ok_or_else(|| {
            Error::Registry(format!(
                "token server {} returned no token",
                realm.redacted()
            ))
        })
    }

    /// Checks the stored credentials against the registry (`login`).
    pub fn verify_login(&self) -> Result<()> {
        let mode = self.mode.lock().map_err(|_| poisoned())?.clone();
        match mode {
            AuthMode::Anonymous => Ok(()),
            AuthMode::Bearer { realm, service } => self
                .fetch_token(&realm, service.as_deref(), None)
                .map(|_| ()),
            AuthMode::Basic => {
                let resp = self.send(&Request::new(Method::Get, self.url("/v2/")?, ""))?;
                match resp.status().as_u16() {
                    200..=299 => Ok(()),
                    _ => Err(self.auth_error("the registry refused", "")),
                }
            }
        }
    }

    /// An authentication error that says what to do and never shows a secret.
    pub fn auth_error(&self, what: &str, scope: &str) -> Error {
        let on = if scope.is_empty() {
            String::new()
        } else {
            format!(" for {scope}")
        };
        match &self.creds {
            None => Error::Auth(format!(
                "registry {}: authentication required{on}; run `layerfs login {}`",
                self.registry, self.registry
            )),
            Some(c) => Error::Auth(format!(
                "registry {}: {what} the credentials of user {:?}{on} (wrong password, or no access); check with `layerfs login {}`",
                self.registry, c.username, self.registry
            )),
        }
    }

    /// Sends a request with authentication, retrying once after a 401 challenge.
    pub fn send(&self, req: &Request) -> Result<Response<ureq::Body>> {
        let mut retried = false;
        loop {
            let auth = self.authorization(req.scope)?;
            let resp = self.exec(req, auth.as_deref())?;
            if resp.status().as_u16() == 401 && !retried {
                retried = true;
                let ch = header(&resp, "www-authenticate").and_then(|h| challenge::parse(&h));
                if let Ok(mut t) = self.tokens.lock() {
                    t.remove(req.scope);
                }
                if self.learn(ch)? {
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// One request with manual redirects (GET and HEAD only) and the credential policy.
    fn exec(&self, req: &Request, auth: Option<&str>) -> Result<Response<ureq::Body>> {
        let mut url = req.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let send_auth = auth.filter(|_| url.same_origin(&self.base));
            let mut b = http::Request::builder()
                .method(req.method.as_str())
                .uri(url.to_string());
            for (k, v) in &req.headers {
                b = b.header(*k, v);
            }
            if let Some(a) = send_auth {
                b = b.header("authorization", a);
            }
            log::debug!(
                "{} {}{}",
                req.method.as_str(),
                url.redacted(),
                if send_auth.is_some() {
                    " (authenticated)"
                } else {
                    ""
                }
            );
            Stats::add(&self.stats.requests, 1);
            let resp = self.run(b, &req.body).map_err(|e| {
                Error::Registry(format!("{} {}: {e}", req.method.as_str(), url.redacted()))
            })?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308)
                && matches!(req.method, Method::Get | Method::Head)
            {
                let loc = header(&resp, "location").ok_or_else(|| {
                    Error::Registry(format!("{}: redirect without a Location", url.redacted()))
                })?;
                let next = url.join(&loc)?;
                if url.scheme() == Scheme::Https && next.scheme() == Scheme::Http && !self.plain_ok
                {
                    return Err(Error::Registry(format!(
                        "{}: refusing a redirect from HTTPS to plain HTTP ({})",
                        url.redacted(),
                        next.redacted()
                    )));
                }
                url = next;
                continue;
            }
            return Ok(resp);
        }
        Err(Error::Registry(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            req.url.redacted()
        )))
    }

    fn run(
        &self,
        b: http::request::Builder,
        body: &Body,
    ) -> std::result::Result<Response<ureq::Body>, ureq::Error> {
        match body {
            Body::Empty => {
                let r = b.header("content-length", "0").body(SendBody::none())?;
                self.agent.run(r)
            }
            Body::Bytes(bytes) => {
                let mut rd: &[u8] = bytes;
                let r = b
                    .header("content-length", bytes.len().to_string())
                    .body(SendBody::from_reader(&mut rd))?;
                self.agent.run(r)
            }
            Body::File { path, len, bar } => {
                let f = std::fs::File::open(path)?;
                let mut rd: Box<dyn Read> = match bar {
                    Some(bar) => {
                        bar.set_position(0);
                        Box::new(bar.wrap_read(f))
                    }
                    None => Box::new(f),
                };
                let mut rd = (&mut rd).take(*len);
                let r = b
                    .header("content-length", len.to_string())
                    .body(SendBody::from_reader(&mut rd))?;
                self.agent.run(r)
            }
        }
    }

    /// An error for an unexpected response: 401/403 as auth errors, others with the registry's
    /// own error codes (`MANIFEST_UNKNOWN: manifest unknown`).
    pub fn status_error(&self, resp: Response<ureq::Body>, what: &str, scope: &str) -> Error {
        let status = resp.status().as_u16();
        if status == 401 {
            return self.auth_error("the registry refused", scope);
        }
        let detail = read_limited(resp, MAX_SMALL_BODY, what)
            .ok()
            .and_then(|b| registry_errors(&b))
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        if status == 403 {
            return Error::Auth(format!(
                "registry {}: access to {what} denied (HTTP 403){detail}",
                self.registry
            ));
        }
        Error::Registry(format!(
            "registry {}: {what}: HTTP {status}{detail}",
            self.registry
        ))
    }
}

fn poisoned() -> Error {
    Error::Registry("registry client state poisoned by a panicked thread".into())
}

/// A response header as text.
pub fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads a whole body of at most `max` bytes.
pub fn read_limited(resp: Response<ureq::Body>, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    resp.into_body()
        .into_reader()
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Registry(format!("reading {what}: {e}")))?;
    if out.len() as u64 > max {
        return Err(Error::Format(format!(
            "{what} is larger than the {max}-byte limit; refusing it"
        )));
    }
    Ok(out)
}

/// `CODE: message` of a distribution-spec error body, shortened.
fn registry_errors(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errs = v.get("errors")?.as_array()?;
    let s = errs
        .iter()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            format!("{code}: {msg}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(s.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies() {
        let b =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_errors(b).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(registry_errors(b"nope"), None);
    }

    #[test]
    fn hub_api_host() {
        assert_eq!(api_authority("docker.io"), "registry-1.docker.io");
        assert_eq!(api_authority("localhost:5000"), "localhost:5000");
    }
}
