//! The little URL handling a registry client needs: absolute `http(s)://authority/path?query`,
//! `Location` headers (absolute or origin-relative), origin comparison for the credential
//! policy, and a form without the query for messages (signed blob URLs carry secrets there).
use std::fmt;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
    fn default_port(self) -> &'static str {
        match self {
            Scheme::Http => "80",
            Scheme::Https => "443",
        }
    }
}

/// An absolute http(s) URL. The authority is lowercase and without a default port, so two
/// URLs of the same origin compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    scheme: Scheme,
    authority: String,
    /// Starts with `/`; may hold `?query`.
    path: String,
}

impl Url {
    pub fn new(scheme: Scheme, authority: &str, path: &str) -> Result<Url> {
        let bad =
            |why: &str| Error::Registry(format!("invalid URL authority {authority:?}: {why}"));
        if authority.is_empty() {
            return Err(bad("empty"));
        }
        if authority.bytes().any(|b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\')
        }) {
            return Err(bad("unexpected character"));
        }
        let mut authority = authority.to_ascii_lowercase();
        let suffix = format!(":{}", scheme.default_port());
        if authority.ends_with(&suffix) {
            authority.truncate(authority.len() - suffix.len());
        }
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Url {
            scheme,
            authority,
            path,
        })
    }

    /// Parses an absolute http or https URL (a fragment is dropped).
    pub fn parse(s: &str) -> Result<Url> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(Error::Registry(format!(
                "unsupported URL {:?}: only http and https are used",
                redact(s)
            )));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Url::new(scheme, authority, &path)
    }

    /// Resolves a `Location` header against this URL: absolute, scheme-relative (`//host/p`)
    /// or origin-relative (`/p`). Path-relative locations are not used by registries.
    pub fn join(&self, location: &str) -> Result<Url> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{}://{rest}", self.scheme.as_str()))
        } else if location.starts_with('/') {
            Url::new(self.scheme, &self.authority, location)
        } else {
            Err(Error::Registry(format!(
                "unsupported relative location {:?} from {}",
                redact(location),
                self.redacted()
            )))
        }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Same scheme, host and port: the only URLs that may receive a registry's credentials.
    pub fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme && self.authority == other.authority
    }

    /// This URL with `key=value` appended to its query (value percent-encoded).
    pub fn with_query(&self, key: &str, value: &str) -> Url {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        Url {
            path: format!("{}{sep}{key}={}", self.path, encode(value)),
            ..self.clone()
        }
    }

    /// The URL without its query, for messages and logs.
    pub fn redacted(&self) -> String {
        redact(&self.to_string())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority,
            self.path
        )
    }
}

/// Drops a query string (signed URLs hold credentials there).
pub fn redact(s: &str) -> String {
    match s.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => s.to_owned(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `host` (no port) is this machine's loopback: plain HTTP is allowed there.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host[:port]` / `[v6]:port`.
pub fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_join_and_origin() {
        let u = Url::parse("https://Reg.Example:443/v2/").unwrap();
        assert_eq!(u.to_string(), "https://reg.example/v2/");
        let rows = [
            (
                "/v2/x/blobs/uploads/abc?_state=s",
                "https://reg.example/v2/x/blobs/uploads/abc?_state=s",
                true,
            ),
            ("https://reg.example:443/a", "https://reg.example/a", true),
            ("http://reg.example/a", "http://reg.example/a", false),
            (
                "https://reg.example:5000/a",
                "https://reg.example:5000/a",
                false,
            ),
            (
                "https://s3.example/bucket?sig=secret",
                "https://s3.example/bucket?sig=secret",
                false,
            ),
            ("//cdn.example/x", "https://cdn.example/x", false),
        ];
        for (loc, want, same) in rows {
            let j = u.join(loc).unwrap();
            assert_eq!(j.to_string(), want, "{loc}");
            assert_eq!(u.same_origin(&j), same, "{loc}");
        }
        assert!(u.join("relative/path").is_err());
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("https://user@host/").is_err());
        assert_eq!(
            Url::parse("http://h?x=1").unwrap().to_string(),
            "http://h/?x=1"
        );
    }

    #[test]
    fn query_and_redaction() {
        let u = Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x").unwrap();
        let d = "sha256:00ff";
        assert_eq!(
            u.with_query("digest", d).to_string(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x&digest=sha256%3A00ff"
        );
        assert_eq!(
            Url::parse("https://s3/b?X-Amz-Signature=s")
                .unwrap()
                .redacted(),
            "https://s3/b?…"
        );
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.3.4.5", "[::1]", "LOCALHOST"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["localhost.example", "10.0.0.1", "example.com", "[::2]"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
    }
}
