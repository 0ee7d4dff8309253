//! The differential runner: one scenario on the kernel and on the implementation under test,
//! every outcome and the final trees compared, then the upper dirs swapped between the two.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::fixture::{Fixture, Style};
use super::mount::{Dirs, Impl, Mode, Mount, abort_mounts_under};
use super::ops::{Ctx, Op};
use super::tree::{Tree, View, diff_trees, private_markers, snapshot, strip_kernel_private};

/// A named operation sequence on a fixture; `ro` mounts without an upper layer.
pub struct Scenario {
    pub name: &'static str,
    pub fixture: fn() -> Fixture,
    pub ro: bool,
    pub ops: Vec<Op>,
}

/// Runs `sc` on the kernel (lowers in overlay format) and on `other` (lowers in `style`).
/// Returns one line per difference; empty means identical.
pub fn run_scenario(
    sc: &Scenario,
    other: Impl,
    style: Style,
    base: &Path,
    mode: Mode,
) -> Vec<String> {
    let mut report = Vec::new();
    let on = other.name();
    let fixture = (sc.fixture)();
    let mut kdirs = fixture.instantiate(&base.join("k"), Style::Overlay, sc.ro);
    let mut odirs = fixture.instantiate(&base.join("o"), style, sc.ro);
    kdirs.mode = mode;
    odirs.mode = mode;
    let km = match Mount::new(Impl::Kernel, &kdirs, &base.join("k/mnt")) {
        Ok(m) => m,
        Err(e) => return vec![format!("setup: {e}")],
    };
    let om = match Mount::new(other, &odirs, &base.join("o/mnt")) {
        Ok(m) => m,
        Err(e) => return vec![format!("setup: {e}")],
    };
    let (mut kc, mut oc) = (Ctx::new(km), Ctx::new(om));
    for (i, op) in sc.ops.iter().enumerate() {
        let (a, b) = (kc.apply(op), oc.apply(op));
        if a != b {
            report.push(format!("op #{i} {op:?}: kernel={a} | {on}={b}"));
        }
    }
    let kt = snapshot(kc.mount.path(), View::Merged);
    let ot = snapshot(oc.mount.path(), View::Merged);
    for d in diff_trees(&kt, &ot) {
        report.push(format!("tree {d}   (kernel | {on})"));
    }
    for (c, who) in [(kc, "kernel"), (oc, on)] {
        if let Err(e) = c.into_mount().unmount() {
            report.push(format!("unmount {who}: {e}"));
        }
    }
    if !sc.ro {
        compare_uppers(&kdirs, &odirs, &kt, other, base, &mut report);
    }
    report
}

/// Raw upper dirs compared, then each upper mounted by the other implementation.
fn compare_uppers(
    kdirs: &Dirs,
    odirs: &Dirs,
    kt: &Tree,
    other: Impl,
    base: &Path,
    report: &mut Vec<String>,
) {
    let on = other.name();
    let (Some((kup, _)), Some((oup, _))) = (&kdirs.upper, &odirs.upper) else {
        return;
    };
    let mut kraw = snapshot(kup, View::RawUpper);
    let mut oraw = snapshot(oup, View::RawUpper);
    // The kernel (self mode) writes its own private xattrs; anything else may not.
    if other != Impl::Kernel {
        for m in private_markers(&oraw) {
            report.push(format!("{on} upper: {m}"));
        }
    }
    strip_kernel_private(&mut kraw);
    strip_kernel_private(&mut oraw);
    for d in diff_trees(&kraw, &oraw) {
        report.push(format!("raw upper {d}   (kernel | {on})"));
    }
    // Each implementation reads its own copy of the lowers (the kernel's are in overlay
    // format, the other's may be in another style) with the other side's upper.
    let cross = [
        (
            Impl::Kernel,
            &kdirs.lowers,
            oup,
            "cross-k",
            format!("kernel on {on}'s upper"),
        ),
        (
            other,
            &odirs.lowers,
            kup,
            "cross-o",
            format!("{on} on kernel's upper"),
        ),
    ];
    for (imp, lowers, upper, dir, label) in cross {
        let work = base.join(dir).join("work");
        std::fs::create_dir_all(&work).expect("mkdir work");
        let d = Dirs {
            lowers: lowers.clone(),
            upper: Some((upper.clone(), work)),
            mode: kdirs.mode,
        };
        match Mount::new(imp, &d, &base.join(dir).join("mnt")) {
            Ok(m) => {
                let t = snapshot(m.path(), View::Merged);
                for d in diff_trees(kt, &t) {
                    report.push(format!("{label}: {d}   (kernel | {label})"));
                }
                if let Err(e) = m.unmount() {
                    report.push(format!("{label}: unmount: {e}"));
                }
            }
            Err(e) => report.push(format!("{label}: mount: {e}")),
        }
    }
}

/// Where scenario dirs go: `LAYERFS_TEST_TMP` or the system temp dir.
pub fn test_tmp() -> std::path::PathBuf {
    std::env::var_os("LAYERFS_TEST_TMP")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir)
}

/// How long one scenario may run before its FUSE mounts are aborted (a hung daemon).
fn scenario_timeout() -> Duration {
    let secs = std::env::var("LAYERFS_SCENARIO_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Runs the scenarios (filtered by `LAYERFS_SCENARIO`, a substring) on `jobs` threads and
/// panics with every difference if any scenario differs. A scenario that hangs (a daemon that
/// stops answering) has its mounts aborted after `LAYERFS_SCENARIO_TIMEOUT` seconds and is
/// reported as a difference.
pub fn run_all(scenarios: Vec<Scenario>, style: Style, mode: Mode) {
    let other = Impl::under_test();
    let filter = std::env::var("LAYERFS_SCENARIO").unwrap_or_default();
    let jobs: usize = std::env::var("LAYERFS_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2);
    let mut names = std::collections::BTreeSet::new();
    for s in &scenarios {
        assert!(names.insert(s.name), "duplicate scenario name {}", s.name);
    }
    let todo: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.name.contains(filter.as_str()))
        .collect();
    let tmp = test_tmp();
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::<(&str, Vec<String>)>::new());
    // Scenarios in flight: base dir -> (name, start, aborted).
    let running = Mutex::new(HashMap::<PathBuf, (&str, Instant, bool)>::new());
    let done = AtomicUsize::new(0);
    let workers = jobs.max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| watchdog(&running, &done, workers));
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("lock");
                        *n += 1;
                        *n - 1
                    };
                    let Some(sc) = todo.get(i) else { break };
                    let base = tempfile::Builder::new()
                        .prefix(sc.name)
                        .tempdir_in(&tmp)
                        .expect("scenario tempdir");
                    let key = base.path().to_path_buf();
                    running
                        .lock()
                        .expect("lock")
                        .insert(key.clone(), (sc.name, Instant::now(), false));
                    let mut r = run_scenario(sc, other, style, base.path(), mode);
                    let entry = running.lock().expect("lock").remove(&key);
                    if entry.is_some_and(|e| e.2) {
                        r.insert(
                            0,
                            format!("TIMEOUT: mounts aborted after {:?}", scenario_timeout()),
                        );
                    }
                    if !r.is_empty() {
                        failures.lock().expect("lock").push((sc.name, r));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let mut failures = failures.into_inner().expect("lock");
    failures.sort();
    eprintln!(
        "differential ({} mode): {} scenarios, kernel vs {}, {} differ, {:.1}s",
        mode.name(),
        todo.len(),
        other.name(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        return;
    }
    let mut msg = String::new();
    for (name, lines) in &failures {
        msg += &format!("\n== scenario {name}: {} differences\n", lines.len());
        for l in lines {
            msg += &format!("   {l}\n");
        }
    }
    panic!(
        "{} mode: {} of {} scenarios differ between kernel and {}:{msg}",
        mode.name(),
        failures.len(),
        todo.len(),
        other.name()
    );
}

fn watchdog(
    running: &Mutex<HashMap<PathBuf, (&str, Instant, bool)>>,
    done: &AtomicUsize,
    workers: usize,
) {
    let limit = scenario_timeout();
    while done.load(Ordering::SeqCst) < workers {
        let stuck: Vec<PathBuf> = {
            let mut r = running.lock().expect("lock");
            r.iter_mut()
                .filter(|(_, (_, t, aborted))| !*aborted && t.elapsed() > limit)
                .map(|(k, v)| {
                    v.2 = true;
                    eprintln!("scenario {} hung for {limit:?}: aborting its mounts", v.0);
                    k.clone()
                })
                .collect()
        };
        for base in stuck {
            abort_mounts_under(&base);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
