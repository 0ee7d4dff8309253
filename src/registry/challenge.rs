//! `WWW-Authenticate` challenges (RFC 7235) as registries send them, and token scopes.
//!
//! `Basic realm="Registry Realm"` asks for a username and password on every request.
//! `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"`
//! asks the client to fetch a token from `realm` (with the credentials, if any) for `service`
//! and `scope`, then to send `Authorization: Bearer TOKEN`. Parsing is pure.

/// What a registry asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge of a supported scheme; `None` when there is none.
pub fn parse(header: &str) -> Option<Challenge> {
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = split_token(rest);
        let (params, next) = parse_params(after);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => return Some(Challenge::Basic),
            "bearer" => {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(pk, _)| pk.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                let realm = get("realm")?;
                return Some(Challenge::Bearer {
                    realm,
                    service: get("service"),
                    scope: get("scope"),
                });
            }
            _ => rest = next,
        }
    }
    None
}

fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', ',']);
    let end = s.find([' ', ',']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Parses `k=v, k="quoted \" v"` pairs; stops at the next scheme (a token not followed by `=`).
/// Returns the pairs and the unparsed rest.
fn parse_params(mut s: &str) -> (Vec<(String, String)>, &str) {
    let mut out = Vec::new();
    loop {
        let t = s.trim_start_matches([' ', ',']);
        let Some(eq) = t.find('=') else {
            return (out, t);
        };
        let key = &t[..eq];
        if key.is_empty() || key.contains([' ', ',', '"']) {
            return (out, t);
        }
        let after = &t[eq + 1..];
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end.min(q.len())..])
        } else {
            let end = after.find([',', ' ']).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.push((key.to_owned(), value));
        s = rest;
    }
}

/// The token scope for a repository: `repository:NAME:pull` or `repository:NAME:pull,push`.
pub fn repo_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// The token response of a Bearer realm (`token` or the OAuth2 `access_token`).
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let rows: Vec<(&str, Option<Challenge>)> = vec![
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            (r#"basic realm=x"#, Some(Challenge::Basic)),
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/alpine:pull".into()),
                }),
            ),
            (
                r#"Bearer realm="http://127.0.0.1:1/t", error="insufficient_scope", scope="repository:a:pull,push""#,
                Some(Challenge::Bearer {
                    realm: "http://127.0.0.1:1/t".into(),
                    service: None,
                    scope: Some("repository:a:pull,push".into()),
                }),
            ),
            (
                r#"Negotiate abc, Bearer realm="r\"q""#,
                Some(Challenge::Bearer {
                    realm: "r\"q".into(),
                    service: None,
                    scope: None,
                }),
            ),
            (r#"Bearer service="no realm""#, None),
            ("", None),
            ("Digest nonce=1", None),
        ];
        for (h, want) in rows {
            assert_eq!(parse(h), want, "{h}");
        }
    }

    #[test]
    fn scopes_and_tokens() {
        assert_eq!(repo_scope("a/b", false), "repository:a/b:pull");
        assert_eq!(repo_scope("a/b", true), "repository:a/b:pull,push");
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("x"));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"","access_token":""}"#).unwrap();
        assert_eq!(t.into_token(), None);
    }
}
