//! Crash safety of every store command. Each of `load`, `pull`, `commit`, `rmi`, `prune` and
//! `tag` is killed (SIGKILL) at each of its fault points in turn (`LAYERFS_FAULT=any:N`, N = 1,
//! 2, ... until the command completes), and `load` and `pull` also at seeded random delays.
//! After every kill: `fsck` finds no damage (leftovers of the interrupted command are allowed),
//! every listed image has its config, manifest and layers, and the same command run again
//! succeeds. The counts are printed (`cargo test --test store_crash -- --nocapture`).
mod registry_common;
mod store_common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use store_common::{Layer, TestImage, gzip, oci_files, write_dir};

/// At most this many fault points per command (a bound on CI time).
const MAX_POINTS: u64 = 40;
/// Random-delay kills per command.
const RANDOM_KILLS: u64 = 6;

fn lf(root: &Path, args: &[&str], fault: Option<u64>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerfs"));
    c.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("LAYERFS_FAULT");
    if let Some(n) = fault {
        c.env("LAYERFS_FAULT", format!("any:{n}"));
    }
    c.output().unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let o = lf(root, args, None);
    assert!(
        o.status.success(),
        "layerfs {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = ok(root, &["images"])
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{}:{}", f[0], f[1])
        })
        .collect();
    v.sort();
    v
}

/// The store after a kill: no damage, and every listed image complete.
fn check_after_kill(root: &Path, ctx: &str) {
    let o = lf(root, &["fsck"], None);
    assert!(
        o.status.success(),
        "{ctx}: fsck after the kill:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for id in ok(root, &["images", "-q"]).lines() {
        ok(root, &["history", id]);
        let inspect = ok(root, &["inspect", id]);
        assert!(inspect.contains("RootFS"), "{ctx}: {inspect}");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[derive(Default, Debug)]
struct Counts {
    kills: u64,
    points: u64,
    random_kills: u64,
    finished_before_kill: u64,
    rerun_ok: u64,
    already_done: u64,
}

/// Kills `args` at each fault point on a fresh copy of `template`; `done` checks the result
/// of a completed command. `already` says whether a rerun's failure means the first run's
/// effect is complete (rmi of a name already removed).
fn sweep(
    name: &str,
    template: &Path,
    work: &Path,
    args: &[&str],
    done: &dyn Fn(&Path),
    already: &dyn Fn(&Path) -> bool,
) -> Counts {
    let mut c = Counts::default();
    for n in 1..=MAX_POINTS {
        copy_tree(template, work);
        let o = lf(work, args, Some(n));
        if o.status.signal() != Some(9) {
            assert!(
                o.status.success(),
                "{name} with fault {n}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            c.points = n - 1;
            done(work);
            return c;
        }
        c.kills += 1;
        let ctx = format!("{name} killed at fault point {n}");
        check_after_kill(work, &ctx);
        rerun(&ctx, work, args, done, already, &mut c);
    }
    panic!("{name}: more than {MAX_POINTS} fault points");
}

fn rerun(
    ctx: &str,
    work: &Path,
    args: &[&str],
    done: &dyn Fn(&Path),
    already: &dyn Fn(&Path) -> bool,
    c: &mut Counts,
) {
    let o = lf(work, args, None);
    if o.status.success() {
        c.rerun_ok += 1;
    } else {
        assert!(
            already(work),
            "{ctx}: the rerun failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        c.already_done += 1;
    }
    done(work);
    check_after_kill(work, &format!("{ctx}, after the rerun"));
}

/// SIGKILL at seeded random delays, up to the length of an uninterrupted run, while `args` runs.
fn random_kills(
    name: &str,
    template: &Path,
    work: &Path,
    args: &[&str],
    done: &dyn Fn(&Path),
    c: &mut Counts,
) {
    // Delays spread over the time an uninterrupted run takes on this machine.
    copy_tree(template, work);
    let t0 = std::time::Instant::now();
    ok(work, args);
    let span = (t0.elapsed().as_micros() as u64).max(1000);
    let mut seed: u64 = 0x5eed_0000 ^ name.len() as u64;
    for i in 0..RANDOM_KILLS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % span);
        copy_tree(template, work);
        let mut child = Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("--root")
            .arg(work)
            .args(args)
            .env_remove("LAYERFS_FAULT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let st = child.wait().unwrap();
        if st.signal() == Some(9) {
            c.random_kills += 1;
        } else {
            c.finished_before_kill += 1;
        }
        let ctx = format!("{name} killed after {delay:?} (run {i})");
        check_after_kill(work, &ctx);
        rerun(&ctx, work, args, done, &|_| false, c);
    }
}

fn layout(dir: &Path, tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let mut base = Layer::new();
    base.dir("etc", 0o755).file("etc/base", b"base\n", 0o644);
    let base = base.bytes();
    let mut top = Layer::new();
    top.dir("data", 0o755);
    for (p, d) in files {
        top.file(p, d, 0o644);
    }
    let top = top.bytes();
    let img = TestImage::new(vec![(gzip(&base), base.clone()), (gzip(&top), top)]);
    let ann = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    write_dir(dir, &oci_files(&[(&img, ann)]));
    dir.to_path_buf()
}

fn has(root: &Path, name: &str) -> bool {
    names(root).iter().any(|n| n == name)
}

#[test]
fn every_store_command_survives_a_kill_at_any_point() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let la = layout(&t.join("la"), "1", &[("data/a", b"a")]);
    let lb = layout(&t.join("lb"), "1", &[("data/b", b"b")]);
    let lc = layout(&t.join("lc"), "1", &[("data/c", b"c")]);
    let empty = t.join("empty");
    ok(&empty, &["images"]);
    let two = t.join("two"); // t/a:1 and t/b:1, sharing the base layer
    ok(
        &two,
        &["load", "-q", "-i", la.to_str().unwrap(), "--name", "t/a"],
    );
    ok(
        &two,
        &["load", "-q", "-i", lb.to_str().unwrap(), "--name", "t/b"],
    );
    let dangling = t.join("dangling"); // t/c's image untagged by a tag over its name
    copy_tree(&two, &dangling);
    ok(
        &dangling,
        &["load", "-q", "-i", lc.to_str().unwrap(), "--name", "t/c"],
    );
    ok(&dangling, &["tag", "t/a:1", "t/c:1"]);
    let with_container = t.join("container");
    copy_tree(&two, &with_container);
    let cid = ok(&with_container, &["create", "t/a:1", "--name", "c1"]);
    let upper = with_container
        .join("containers")
        .join(cid.trim())
        .join("upper");
    std::fs::write(upper.join("hello"), b"committed").unwrap();
    let reg = registry_common::Registry::start();
    let remote = format!("{}/crash/a:1", reg.addr());
    ok(&two, &["push", "t/a:1", &remote]);

    let work = t.join("work");
    let la_s = la.to_str().unwrap();
    let mut report = Vec::new();
    let mut run = |name: &str,
                   template: &Path,
                   args: &[&str],
                   done: &dyn Fn(&Path),
                   already: &dyn Fn(&Path) -> bool,
                   random: bool| {
        let mut c = sweep(name, template, &work, args, done, already);
        if random {
            random_kills(name, template, &work, args, done, &mut c);
        }
        assert!(c.kills > 0, "{name}: no fault point was reached");
        report.push(format!("{name:7} {c:?}"));
    };
    let never = |_: &Path| false;
    run(
        "load",
        &empty,
        &["load", "-q", "-i", la_s, "--name", "t/a"],
        &|w| assert!(has(w, "t/a:1")),
        &never,
        true,
    );
    run(
        "pull",
        &empty,
        &["pull", "-q", &remote],
        &|w| assert_eq!(ok(w, &["images", "-q"]).lines().count(), 1),
        &never,
        true,
    );
    run(
        "commit",
        &with_container,
        &["commit", "c1", "t/new:1"],
        &|w| assert!(has(w, "t/new:1")),
        &never,
        false,
    );
    run(
        "rmi",
        &two,
        &["rmi", "t/b:1"],
        // Killed after the untag and before the record went, the image stays as an unnamed
        // (dangling) image that `prune` removes; `rmi t/b:1` again says "no such image".
        &|w| {
            let mut n = names(w);
            n.retain(|x| x != "<none>:<none>");
            assert_eq!(n, ["t/a:1"]);
        },
        &|w| !has(w, "t/b:1"),
        false,
    );
    run(
        "prune",
        &dangling,
        &["prune"],
        &|w| assert_eq!(ok(w, &["images", "-q"]).lines().count(), 2),
        &never,
        false,
    );
    run(
        "tag",
        &two,
        &["tag", "t/a:1", "t/b:1"],
        // b's image loses its only name: dangling, as with docker tag.
        &|w| assert_eq!(names(w), ["<none>:<none>", "t/a:1", "t/b:1"]),
        &never,
        false,
    );
    let summary = report.join("\n");
    eprintln!("fault injection:\n{summary}");
    std::fs::write(
        std::env::temp_dir().join("layerfs-crash-counts.txt"),
        &summary,
    )
    .unwrap();
}
