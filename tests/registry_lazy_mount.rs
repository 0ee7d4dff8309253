//! `layerfs mount --lazy` against a real registry (Debian's docker-registry on 127.0.0.1,
//! behind the test proxy that counts Range requests, can go down and can tamper with data):
//! the merged tree equals a full pull's, only the pieces read are fetched and only once, a
//! registry that disappears gives EIO and the mount recovers, a tampered piece is never served
//! or cached, a layer without a TOC falls back to a normal pull, and the background pull
//! stores the image.
mod lazy_common;
mod registry_common;
#[path = "store_common/mod.rs"]
mod store_common;

use std::time::{Duration, Instant};

use lazy_common::*;
use registry_common::proxy::{Proxy, ProxyOpts};
use registry_common::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A registry with the fixture pushed as `app:zstd-chunked`, `app:estargz` and `app:plain`,
/// and a proxy in front.
fn setup() -> (Registry, Proxy) {
    setup_with(ProxyOpts::default())
}

fn setup_with(opts: ProxyOpts) -> (Registry, Proxy) {
    let reg = Registry::start();
    let env = Env::new();
    load_fixture(&env);
    for fmt in ["zstd:chunked", "estargz"] {
        let dest = format!("{}/app:{}", reg.addr(), fmt.replace(':', "-"));
        env.ok(&["push", "-q", "app:1", &dest, "--compression", fmt]);
    }
    env.ok(&["push", "-q", "app:1", &format!("{}/app:plain", reg.addr())]);
    let proxy = Proxy::start(reg.port, opts);
    (reg, proxy)
}

fn full_pull_tree(reference: &str) -> std::collections::BTreeMap<String, String> {
    let env = Env::new();
    env.ok(&["pull", "-q", reference]);
    let m = Mount::image(&env, reference);
    full_tree(m.path())
}

#[test]
fn lazy_mounts_equal_full_pulls_and_fetch_only_what_is_read() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup();
    for tag in ["zstd-chunked", "estargz"] {
        let reference = format!("{}/app:{tag}", proxy.addr());
        let env = Env::new();
        let before = proxy.range_gets();
        let m = LazyMount::new(&env, &reference, &["--no-prefetch"]);
        // Only the TOCs so far: one range per zstd:chunked layer, two per eStargz layer.
        let tocs = proxy.range_gets() - before;
        assert_eq!(tocs, if tag == "estargz" { 4 } else { 2 }, "{tag}");
        assert!(m.stdout.contains("lazily"), "{}", m.stdout);
        assert_eq!(m.cached_chunks(), 0);

        // One small file: one piece.
        let os = std::fs::read(m.path().join("etc/os-release")).unwrap();
        assert_eq!(os, b"NAME=lazy\nID=lazy\n");
        assert_eq!(proxy.range_gets() - before, tocs + 1, "{tag}: os-release");
        assert_eq!(m.cached_chunks(), 1);
        // `images` shows how much of each lazy layer is local.
        let images = env.ok(&["images"]);
        let rows: Vec<&str> = images
            .lines()
            .filter(|l| l.starts_with(m.path().to_str().unwrap()))
            .collect();
        assert_eq!(rows.len(), 2, "{images}");
        assert!(rows[0].contains("% (18B of "), "{images}");
        assert!(rows[1].contains(" 0% (0B of "), "{images}");

        // One byte in the middle of the 2 MiB file: only its second piece.
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path().join("usr/lib/big")).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 1024 * 1024 + 5).unwrap();
        assert_eq!(b[0], noise(BIG, 7)[1024 * 1024 + 5]);
        assert_eq!(
            proxy.range_gets() - before,
            tocs + 2,
            "{tag}: one piece of big"
        );
        drop(f);

        // The whole tree equals a full pull's (names, modes, owners, times, xattrs, links,
        // whiteouts, opaque directories).
        let want = full_pull_tree(&reference);
        assert_eq!(full_tree(m.path()), want, "{tag}");
        let read_all = proxy.range_gets() - before;

        // A second mount reads everything again from the chunk cache: no request but the TOCs.
        drop(m);
        let m2 = LazyMount::new(&env, &reference, &["--no-prefetch"]);
        let again = proxy.range_gets();
        assert_eq!(full_tree(m2.path()), want, "{tag}: remount");
        assert_eq!(
            proxy.range_gets(),
            again,
            "{tag}: second read fetched something"
        );
        assert!(read_all > tocs + 2);
    }
}

#[test]
fn registry_gone_gives_eio_then_recovers_and_tampering_is_never_served() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup();
    let reference = format!("{}/app:zstd-chunked", proxy.addr());
    let env = Env::new();
    let m = LazyMount::new(&env, &reference, &["--no-prefetch"]);

    proxy.set_down(true);
    let t = Instant::now();
    let err = std::fs::read(m.path().join("srv/data")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "no bounded retry: {:?}",
        t.elapsed()
    );
    assert!(is_mounted(m.path()));
    proxy.set_down(false);
    assert_eq!(
        std::fs::read(m.path().join("srv/data")).unwrap(),
        noise(300_000, 9)
    );

    let cached = m.cached_chunks();
    proxy.set_tamper(true);
    let err = std::fs::read(m.path().join("usr/bin/tool")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(m.cached_chunks(), cached, "a tampered piece was cached");
    proxy.set_tamper(false);
    assert_eq!(
        std::fs::read(m.path().join("usr/bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(m.cached_chunks(), cached + 1);
}

#[test]
fn a_layer_without_toc_falls_back_and_prefetch_stores_the_image() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (reg, _proxy) = setup();
    let env = Env::new();
    let plain = format!("{}/app:plain", reg.addr());
    let err = env.fails(&["mount", "--lazy", &plain, "/nonexistent-mnt"]);
    assert!(err.contains("/nonexistent-mnt is not a directory"), "{err}");
    let m = {
        let dir = tempfile::tempdir().unwrap();
        let o = env.run(&["mount", "--lazy", &plain, dir.path().to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("has no table of contents"), "{err}");
        Mount { dir }
    };
    let want = full_pull_tree(&plain);
    assert_eq!(full_tree(m.path()), want);
    drop(m);

    // With prefetch (the default) the image ends up stored like any pulled one.
    let env2 = Env::new();
    let reference = format!("{}/app:zstd-chunked", reg.addr());
    let m = LazyMount::new(&env2, &reference, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while image_ids(&env2).is_empty() {
        assert!(
            Instant::now() < deadline,
            "prefetch did not store the image"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(full_tree(m.path()), want);
    let stored = Mount::image(&env2, &reference);
    assert_eq!(full_tree(stored.path()), want);
}

#[test]
fn bench_lazy_reports_both_methods_at_both_speeds() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let env = Env::new();
    load_fixture(&env);
    let work = tempfile::tempdir().unwrap();
    let out = env.ok(&[
        "bench",
        "-w",
        "lazy",
        "--image",
        "app:1",
        "--dir",
        work.path().to_str().unwrap(),
        "--warm-only",
    ]);
    assert!(
        out.contains("whole tree read (page cache not dropped) after the prefetch"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.contains("Mbit/s") || l.contains("Gbit/s"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    // link (2 words), method (1 or 3 words), then mount, 1st byte, start-up, files, bytes, %.
    let bytes = |r: &Vec<&str>| r[r.len() - 2].parse::<u64>().unwrap();
    let files = |r: &Vec<&str>| r[r.len() - 3].parse::<u64>().unwrap();
    for pair in rows.chunks(2) {
        assert!(
            pair[0].contains(&"lazy") && pair[1].contains(&"pull"),
            "{out}"
        );
        // The fixture has etc/os-release and etc/passwd-less paths: one file of the set.
        assert_eq!(files(&pair[0]), files(&pair[1]), "{out}");
        assert!(files(&pair[0]) >= 1, "{out}");
        assert!(
            bytes(&pair[0]) < bytes(&pair[1]),
            "lazy moved more bytes: {out}"
        );
    }
    assert!(
        std::fs::read_dir(work.path()).unwrap().next().is_none(),
        "scratch left behind"
    );
}

#[test]
fn prune_and_the_size_limit_remove_only_unpinned_chunks() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup();
    let env = Env::new();
    let zstd = format!("{}/app:zstd-chunked", proxy.addr());
    let m = LazyMount::new(&env, &zstd, &["--no-prefetch"]);
    std::fs::read(m.path().join("usr/lib/big")).unwrap();
    assert_eq!(m.cached_chunks(), 3, "big: 3 pieces");
    // A live mount pins what its layers list.
    env.ok(&["prune"]);
    assert_eq!(m.cached_chunks(), 3);
    drop(m);
    let cache = env.root().join("chunks/sha256");
    let stale = sha256(b"a piece nobody lists");
    std::fs::write(cache.join(hex_of(&stale)), b"a piece nobody lists").unwrap();

    // The same files in the eStargz image are the same pieces: nothing is fetched again.
    let before = proxy.range_gets();
    let dir = tempfile::tempdir().unwrap();
    let estargz = format!("{}/app:estargz", proxy.addr());
    let out = env
        .cmd(&["mount", "--lazy", "--no-prefetch", &estargz])
        .arg(dir.path())
        .env("LAYERFS_CHUNK_CACHE_MAX", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = Mount { dir };
    let tocs = proxy.range_gets() - before;
    std::fs::read(guard.path().join("usr/lib/big")).unwrap();
    assert_eq!(
        proxy.range_gets() - before,
        tocs,
        "shared pieces fetched again"
    );
    // A new piece takes the cache over its 1-byte limit: the unpinned stale piece goes, the
    // pinned ones stay.
    std::fs::read(guard.path().join("etc/os-release")).unwrap();
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(!names.contains(&hex_of(&stale).to_string()));
    drop(guard);
    let out = env.ok(&["prune"]);
    assert!(out.contains("Deleted lazy-read chunks: 4"), "{out}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

#[test]
fn prefetch_fetches_what_the_last_mount_read_first() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup();
    let env = Env::new();
    let reference = format!("{}/app:zstd-chunked", proxy.addr());
    let m = LazyMount::new(&env, &reference, &["--no-prefetch"]);
    std::fs::read(m.path().join("srv/data")).unwrap();
    std::fs::read(m.path().join("etc/os-release")).unwrap();
    drop(m);
    let lists = std::fs::read_dir(env.root().join("lazy/priority"))
        .unwrap()
        .count();
    assert_eq!(lists, 2, "one list per layer read from");
    env.ok(&["prune"]);
    assert_eq!(
        std::fs::read_dir(env.root().join("chunks/sha256"))
            .unwrap()
            .count(),
        0
    );

    let raw = skopeo_inspect(&format!("docker://{reference}"), true);
    let layers: Vec<String> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let start = proxy.seen().len();
    let m = LazyMount::new(&env, &reference, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while image_ids(&env).is_empty() {
        assert!(
            Instant::now() < deadline,
            "prefetch did not store the image"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = proxy.seen();
    let seen = &seen[start..];
    let first_full = seen
        .iter()
        .position(|s| {
            s.header("range").is_none() && layers.iter().any(|l| s.target.ends_with(l.as_str()))
        })
        .expect("the background pull fetched the layers");
    let ranges_before = seen[..first_full]
        .iter()
        .filter(|s| s.header("range").is_some())
        .count();
    // Two TOCs, then the two pieces read last time, then the pull.
    assert_eq!(
        ranges_before,
        4,
        "{:?}",
        seen.iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    assert_eq!(m.cached_chunks(), 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let images = env.ok(&["images"]);
        if images.matches("100% (extracted, reads local)").count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads never became local: {images}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Everything now reads from the extracted layers: no more requests.
    let before = proxy.range_gets();
    let want = full_pull_tree(&reference);
    assert_eq!(full_tree(m.path()), want);
    assert_eq!(proxy.range_gets(), before);
}

#[test]
fn layer_mounts_of_a_killed_daemon_are_swept_by_the_next_mount() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup();
    let env = Env::new();
    let reference = format!("{}/app:zstd-chunked", proxy.addr());
    let m = LazyMount::new(&env, &reference, &["--no-prefetch"]);
    let lazy_dir = env.root().join("lazy");
    let pid: i32 = std::fs::read_dir(&lazy_dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok()?.parse().ok())
        .next()
        .expect("the daemon's layer directory");
    let layer_mounts = |pid: i32| {
        let prefix = format!("{}/", lazy_dir.join(pid.to_string()).display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)))
            .count()
    };
    assert_eq!(layer_mounts(pid), 2);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "daemon did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(m);
    assert_eq!(layer_mounts(pid), 2, "stale layer mounts stay until swept");
    let m2 = LazyMount::new(&env, &reference, &["--no-prefetch"]);
    assert_eq!(layer_mounts(pid), 0);
    assert!(!lazy_dir.join(pid.to_string()).exists());
    assert_eq!(
        std::fs::read(m2.path().join("etc/os-release")).unwrap(),
        b"NAME=lazy\nID=lazy\n"
    );
}

#[test]
fn a_registry_that_stops_answering_gives_eio_after_the_timeout() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup();
    let env = Env::new();
    let reference = format!("{}/app:zstd-chunked", proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let out = env
        .cmd(&["mount", "--lazy", "--no-prefetch", &reference])
        .arg(dir.path())
        .env("LAYERFS_LAZY_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mount { dir };
    proxy.set_hang(true);
    let t = Instant::now();
    let err = std::fs::read(m.path().join("srv/data")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // 4 tries of at most 0.5 s plus 0.7 s of backoff; far below any hang.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    proxy.set_hang(false);
    assert_eq!(
        std::fs::read(m.path().join("srv/data")).unwrap(),
        noise(300_000, 9)
    );
}

#[test]
fn an_expired_token_is_refreshed_between_reads() {
    if !is_root() {
        eprintln!("needs root: skipping");
        return;
    }
    let (_reg, proxy) = setup_with(ProxyOpts {
        bearer: Some(("dave".into(), "pw-dave".into())),
        ..Default::default()
    });
    let env = Env::new();
    let o = env.run_stdin(
        &["login", &proxy.addr(), "-u", "dave", "--password-stdin"],
        "pw-dave\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = format!("{}/app:zstd-chunked", proxy.addr());
    let m = LazyMount::new(&env, &reference, &["--no-prefetch"]);
    assert_eq!(
        std::fs::read(m.path().join("etc/os-release")).unwrap(),
        b"NAME=lazy\nID=lazy\n"
    );
    let tokens = |p: &Proxy| {
        p.seen()
            .iter()
            .filter(|s| s.target.starts_with("/token"))
            .count()
    };
    let before = tokens(&proxy);
    proxy.expire_tokens();
    assert_eq!(
        std::fs::read(m.path().join("srv/data")).unwrap(),
        noise(300_000, 9)
    );
    assert_eq!(tokens(&proxy), before + 1, "one new token after the 401");
}
