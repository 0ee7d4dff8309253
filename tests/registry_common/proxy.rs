//! A small HTTP/1.1 proxy in front of a real registry that adds what the Debian registry cannot
//! do by itself in a test: Bearer-token auth with its own token endpoint, blob redirects to
//! another origin (a "storage" listener on `localhost`, which is not `127.0.0.1`), and a blob
//! response cut in the middle. It records every request it sees. One connection per request
//! (`Connection: close`), so the parsing stays trivial.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;

#[derive(Clone, Default)]
pub struct ProxyOpts {
    /// Require `Authorization: Basic` with these credentials on /v2/.
    pub basic: Option<(String, String)>,
    /// Require Bearer tokens from /token, which wants these credentials (Basic).
    pub bearer: Option<(String, String)>,
    /// Answer blob GETs with a 307 to the storage listener (another origin).
    pub redirect_blobs: bool,
    /// Cut the first blob GET response of more than 64 KiB after half of its body.
    pub truncate_first_blob: bool,
    /// Replace the Content-Type of manifest responses.
    pub manifest_type: Option<String>,
    /// Relay responses at this many bytes per second (a slow link).
    pub rate: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// Received by the storage listener.
    pub storage: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    opts: ProxyOpts,
    upstream: u16,
    port: u16,
    storage_port: u16,
    seen: Mutex<Vec<Seen>>,
    tokens: Mutex<Vec<String>>,
    stop: AtomicBool,
    truncated: AtomicBool,
    next_token: AtomicUsize,
    /// Drop every connection unanswered (the registry is gone).
    down: AtomicBool,
    /// Flip a byte of every Range response from a blob.
    tamper: AtomicBool,
    /// Read requests and never answer them (until turned off).
    hang: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    pub storage_port: u16,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16, opts: ProxyOpts) -> Proxy {
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage = TcpListener::bind("127.0.0.1:0").unwrap();
        let state = Arc::new(State {
            opts,
            upstream,
            port: main.local_addr().unwrap().port(),
            storage_port: storage.local_addr().unwrap().port(),
            seen: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            truncated: AtomicBool::new(false),
            next_token: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            tamper: AtomicBool::new(false),
            hang: AtomicBool::new(false),
        });
        let threads = [(main, false), (storage, true)]
            .into_iter()
            .map(|(l, is_storage)| {
                let st = Arc::clone(&state);
                std::thread::spawn(move || accept_loop(l, st, is_storage))
            })
            .collect();
        Proxy {
            port: state.port,
            storage_port: state.storage_port,
            state,
            threads,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Blob GETs with a Range header seen so far.
    pub fn range_gets(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| {
                s.method == "GET" && s.target.contains("/blobs/") && s.header("range").is_some()
            })
            .count()
    }

    /// While true, connections are closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Forgets every Bearer token handed out: the next request with one gets a 401.
    pub fn expire_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }

    /// While true, requests are read and never answered.
    pub fn set_hang(&self, on: bool) {
        self.state.hang.store(on, Ordering::SeqCst);
    }

    /// While true, one byte of every blob Range response is changed.
    pub fn set_tamper(&self, on: bool) {
        self.state.tamper.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for p in [self.port, self.storage_port] {
            let _ = TcpStream::connect(("127.0.0.1", p));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: TcpListener, st: Arc<State>, storage: bool) {
    for conn in l.incoming() {
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let st = Arc::clone(&st);
        std::thread::spawn(move || {
            let _ = handle(conn, &st, storage);
        });
    }
}

struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(s: &TcpStream) -> std::io::Result<Req> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Req {
        method,
        target,
        headers,
        body,
    })
}

fn respond(
    mut s: &TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    s.write_all(out.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn header<'a>(r: &'a Req, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn basic(u: &str, p: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

/// `/v2/a/b/blobs/sha256:…` -> `a/b`.
fn repo_of(path: &str) -> String {
    let p = path.trim_start_matches("/v2/");
    for marker in ["/blobs/", "/manifests/", "/tags/"] {
        if let Some(i) = p.find(marker) {
            return p[..i].to_owned();
        }
    }
    String::new()
}

fn is_blob_get(r: &Req) -> bool {
    r.method == "GET" && r.target.starts_with("/v2/") && r.target.contains("/blobs/sha256:")
}

fn handle(s: TcpStream, st: &State, storage: bool) -> std::io::Result<()> {
    if st.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    let req = read_request(&s)?;
    if st.hang.load(Ordering::SeqCst) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while st.hang.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        return Ok(());
    }
    st.seen.lock().unwrap().push(Seen {
        method: req.method.clone(),
        target: req.target.clone(),
        headers: req.headers.clone(),
        storage,
    });
    if storage {
        let path = req.target.split('?').next().unwrap_or("").to_owned();
        return forward(
            &s,
            st,
            &Req {
                target: path,
                ..req
            },
            false,
            None,
        );
    }
    if req.target.starts_with("/token") {
        let (u, p) = st.opts.bearer.clone().unwrap_or_default();
        if header(&req, "authorization") != Some(basic(&u, &p).as_str()) {
            return respond(
                &s,
                "401 Unauthorized",
                &[],
                b"{\"details\":\"bad credentials\"}",
            );
        }
        let t = format!("tok-{}", st.next_token.fetch_add(1, Ordering::SeqCst));
        st.tokens.lock().unwrap().push(t.clone());
        return respond(
            &s,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            format!("{{\"token\":\"{t}\"}}").as_bytes(),
        );
    }
    let auth = header(&req, "authorization").unwrap_or("");
    if let Some((u, p)) = &st.opts.basic
        && auth != basic(u, p)
    {
        return respond(
            &s,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"proxy\"".into())],
            b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
        );
    }
    if st.opts.bearer.is_some() {
        let ok = auth
            .strip_prefix("Bearer ")
            .is_some_and(|t| st.tokens.lock().unwrap().iter().any(|x| x == t));
        if !ok {
            let ch = format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"proxy-test\",scope=\"repository:{}:pull\"",
                st.port,
                repo_of(&req.target)
            );
            return respond(
                &s,
                "401 Unauthorized",
                &[("WWW-Authenticate", ch)],
                b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token required\"}]}",
            );
        }
    }
    if st.opts.redirect_blobs && is_blob_get(&req) {
        let loc = format!(
            "http://localhost:{}{}?sig=secret-signature",
            st.storage_port, req.target
        );
        return respond(&s, "307 Temporary Redirect", &[("Location", loc)], b"");
    }
    let may_cut = st.opts.truncate_first_blob && is_blob_get(&req);
    let retype = st
        .opts
        .manifest_type
        .as_deref()
        .filter(|_| req.target.contains("/manifests/"));
    forward(&s, st, &req, may_cut, retype)
}

/// Sends the request to the registry (without Authorization) and relays the answer; with
/// `may_cut`, the first large body is relayed only half, then the connection closes.
/// `retype` replaces the response's Content-Type.
fn forward(
    mut s: &TcpStream,
    st: &State,
    req: &Req,
    may_cut: bool,
    retype: Option<&str>,
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(("127.0.0.1", st.upstream))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if let Some(t) = retype {
        resp = replace_content_type(&resp, t);
    }
    let ranged = is_blob_get(req) && header(req, "range").is_some();
    if ranged
        && st.tamper.load(Ordering::SeqCst)
        && let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n")
        && resp.len() > i + 5
    {
        let mid = i + 4 + (resp.len() - i - 4) / 2;
        resp[mid] ^= 0x55;
    }
    if let Some(rate) = st.opts.rate {
        for piece in resp.chunks(16 << 10) {
            s.write_all(piece)?;
            std::thread::sleep(std::time::Duration::from_secs_f64(
                piece.len() as f64 / rate as f64,
            ));
        }
        return s.flush();
    }
    if may_cut && let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
        let body_len = resp.len() - (i + 4);
        if body_len > 64 << 10 && !st.truncated.swap(true, Ordering::SeqCst) {
            s.write_all(&resp[..i + 4 + body_len / 2])?;
            return s.flush();
        }
    }
    s.write_all(&resp)?;
    s.flush()
}

/// The response with its Content-Type header replaced.
fn replace_content_type(resp: &[u8], t: &str) -> Vec<u8> {
    let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return resp.to_vec();
    };
    let head = String::from_utf8_lossy(&resp[..i]);
    let mut out: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-type:"))
        .map(str::to_owned)
        .collect();
    out.push(format!("Content-Type: {t}"));
    let mut v = out.join("\r\n").into_bytes();
    v.extend_from_slice(&resp[i..]);
    v
}
