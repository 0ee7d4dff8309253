//! Authentication: htpasswd Basic auth on the real registry; Bearer tokens and foreign-host blob
//! redirects through a proxy in front of it. Credentials must work where they belong and never
//! travel anywhere else, nor show up in output or debug logs.
mod registry_common;

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use registry_common::proxy::{Proxy, ProxyOpts};
use registry_common::*;

fn small_image(tag_cmd: &str) -> Image {
    Image::new(
        vec![layer(&[Entry::File("f", &noise(100_000, 21))], Comp::Gzip)],
        &layerfs::image::oci::Platform::host().architecture,
        tag_cmd,
    )
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn basic_auth_login_pull_push_logout() {
    const PW: &str = "pw-Secret-123";
    let reg = Registry::start_with_auth("alice", PW);
    let img = small_image("basic");
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&img, "v1")]);
    let r = format!("{}/private/app:v1", reg.addr());
    skopeo_copy(
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{r}"),
        &["--dest-creds", &format!("alice:{PW}")],
    );
    let env = Env::new();
    let mut seen = String::new();

    let err = env.fails(&["pull", &r]);
    assert!(
        err.contains("authentication required")
            && err.contains(&format!("layerfs login {}", reg.addr())),
        "{err}"
    );

    let o = env.run_stdin(
        &["login", &reg.addr(), "-u", "alice", "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("\"alice\""), "{}", text(&o));
    assert!(!text(&o).contains("wrong-password"));
    assert!(!env.auth_file().exists(), "failed login saved credentials");

    let o = env.run_stdin(
        &["login", &reg.addr(), "-u", "alice", "--password-stdin"],
        &format!("{PW}\n"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Login Succeeded"));
    seen += &text(&o);
    let md = std::fs::metadata(env.auth_file()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(env.auth_file().parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o077, 0);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert_eq!(
        saved["auths"][reg.addr()]["auth"],
        b64(&format!("alice:{PW}"))
    );

    let o = env
        .cmd(&["pull", &r])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("(authenticated)"),
        "debug log should show authenticated requests"
    );
    seen += &text(&o);
    assert_eq!(image_ids(&env), [img.id()]);
    let o = env
        .cmd(&["push", &r, &format!("{}/private/copy:1", reg.addr())])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    seen += &text(&o);
    assert!(
        !seen.contains(PW) && !seen.contains(&b64(&format!("alice:{PW}"))),
        "a secret was printed:\n{seen}"
    );

    let out = env.ok(&["logout", &reg.addr()]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert!(saved["auths"].as_object().unwrap().is_empty());
    let env2 = Env::new();
    assert!(
        env2.fails(&["pull", &r])
            .contains("authentication required")
    );

    // Docker's config.json is read too.
    let docker = env2.home().join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {(format!("http://{}", reg.addr())): {"auth": b64(&format!("alice:{PW}"))}}})).unwrap(),
    )
    .unwrap();
    env2.ok(&["pull", &r]);
    assert_eq!(image_ids(&env2), [img.id()]);
    let err = env2.fails(&["logout", &reg.addr()]);
    assert!(err.contains("left alone"), "{err}");
}

#[test]
fn bearer_tokens_are_scoped_per_repository() {
    let reg = Registry::start();
    let img = small_image("bearer");
    publish(&reg.addr(), &img, "team/app:v1");
    let proxy = Proxy::start(
        reg.port,
        ProxyOpts {
            bearer: Some(("bob".into(), "token-pass".into())),
            ..Default::default()
        },
    );
    let r = format!("{}/team/app:v1", proxy.addr());
    let env = Env::new();
    let err = env.fails(&["pull", &r]);
    assert!(err.contains("authentication required"), "{err}");
    let o = env.run_stdin(
        &["login", &proxy.addr(), "-u", "bob", "--password-stdin"],
        "bad\n",
    );
    assert!(
        !o.status.success() && text(&o).contains("token server refused"),
        "{}",
        text(&o)
    );
    let o = env.run_stdin(
        &["login", &proxy.addr(), "-u", "bob", "--password-stdin"],
        "token-pass\n",
    );
    assert!(o.status.success(), "{}", text(&o));

    let o = env
        .cmd(&["pull", &r])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("tok-") && !text(&o).contains("token-pass"),
        "{}",
        text(&o)
    );
    assert_eq!(image_ids(&env), [img.id()]);
    let pull_tokens: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.target.starts_with("/token"))
        .collect();
    assert!(
        pull_tokens.iter().any(
            |s| s.target.contains("scope=repository%3Ateam%2Fapp%3Apull")
                && s.target.contains("account=bob")
                && s.target.contains("service=proxy-test")
        ),
        "{pull_tokens:?}"
    );
    // Every registry request after the challenge carried a token.
    let v2: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.target.contains("/team/app/"))
        .collect();
    assert!(!v2.is_empty());
    assert!(
        v2.iter()
            .filter(|s| s
                .header("authorization")
                .is_some_and(|a| a.starts_with("Bearer tok-")))
            .count()
            >= v2.len() - 1
    );

    env.ok(&["push", &r, &format!("{}/team/copy:1", proxy.addr())]);
    let push_scope = "scope=repository%3Ateam%2Fcopy%3Apull%2Cpush";
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| s.target.starts_with("/token") && s.target.contains(push_scope)),
        "{:?}",
        proxy.seen()
    );
    assert_eq!(
        skopeo_inspect(&format!("docker://{}/team/copy:1", reg.addr()), false)["Digest"],
        img.digest()
    );
}

#[test]
fn credentials_never_follow_a_redirect_to_another_host() {
    let reg = Registry::start();
    let img = small_image("redirect");
    publish(&reg.addr(), &img, "cdn/app:v1");
    let proxy = Proxy::start(
        reg.port,
        ProxyOpts {
            basic: Some(("carol".into(), "pw-carol".into())),
            redirect_blobs: true,
            ..Default::default()
        },
    );
    let env = Env::new();
    let o = env.run_stdin(
        &["login", &proxy.addr(), "-u", "carol", "--password-stdin"],
        "pw-carol\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = format!("{}/cdn/app:v1", proxy.addr());
    let o = env
        .cmd(&["pull", &r])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("secret-signature"),
        "a signed URL's query was logged:\n{}",
        text(&o)
    );
    assert_eq!(image_ids(&env), [img.id()]);
    let seen = proxy.seen();
    let storage: Vec<_> = seen.iter().filter(|s| s.storage).collect();
    assert_eq!(
        storage.len(),
        2,
        "config and layer through the redirect: {seen:?}"
    );
    assert!(
        storage.iter().all(|s| s.header("authorization").is_none()),
        "credentials sent to another host: {storage:?}"
    );
    assert!(
        seen.iter()
            .filter(|s| !s.storage && s.target.contains("/manifests/"))
            .all(|s| s.header("authorization").is_some())
    );
}
