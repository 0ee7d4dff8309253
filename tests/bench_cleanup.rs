//! Tiny real runs against kernel overlayfs and raw: every workload produces samples, and no
//! mount or temp dir is left behind, also after an injected failure, a stop, a failing
//! `--vs` mount command and a real SIGINT. Needs root (kernel overlay); skipped otherwise.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use layerfs::bench;
use layerfs::bench::config::{Config, Fault, WorkloadId};
use layerfs::bench::impls::Implementation;
use layerfs::bench::report::Report;
use layerfs::mountinfo as mounts;

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root for kernel overlayfs");
    }
    root
}

fn tiny(dir: &Path) -> Config {
    Config {
        dir: dir.to_path_buf(),
        reps: 2,
        budget: Duration::from_secs(1),
        copyup_sizes: vec![4096, 256 * 1024],
        meta_size: 4096,
        random_reads: 50,
        lookup_layers: vec![1, 3],
        lookup_dirs: 2,
        lookup_files_per_dir: 5,
        readdir_entries: 200,
        tree_files: 300,
        tar_files: 100,
        jobs: 2,
        ops_per_job: 40,
        ..Config::quick()
    }
}

fn impls(extra: &[&str]) -> Vec<Implementation> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_layerfs"));
    let mut v: Vec<Implementation> = ["overlay", "raw"]
        .iter()
        .map(|n| Implementation::builtin(n, &exe).unwrap())
        .collect();
    for t in extra {
        let taken: Vec<String> = v.iter().map(|i| i.name.clone()).collect();
        v.push(Implementation::custom(t, &taken).unwrap());
    }
    v
}

/// Nothing mounted beneath `dir` and nothing left in it.
fn assert_clean(dir: &Path) {
    let left = mounts::mounts_under(&mounts::read_mountinfo().unwrap(), dir);
    assert!(left.is_empty(), "still mounted: {left:?}");
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(entries.is_empty(), "left behind: {entries:?}");
}

fn parent() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bench-clean")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Runs `workloads` on overlay and raw with `fault` injected, in a fresh scratch dir, and
/// checks that nothing is left mounted or on disk afterwards.
fn run_with_fault(workloads: Vec<WorkloadId>, fault: Fault) -> Report {
    let d = parent();
    let dir = d.path().canonicalize().unwrap();
    let cfg = Config {
        workloads,
        fault: Some(fault),
        ..tiny(&dir)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let report = bench::run(&cfg, &impls(&[]), stop, false, true).unwrap();
    assert_clean(&dir);
    report
}

#[test]
fn tiny_run_measures_everything_and_cleans_up() {
    if !root() {
        return;
    }
    let d = parent();
    let dir = d.path().canonicalize().unwrap();
    let cfg = tiny(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let report = bench::run(&cfg, &impls(&["false {mnt}"]), stop, false, true).unwrap();
    assert_clean(&dir);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // The failing --vs command is reported and skipped, the others ran.
    let status: Vec<(String, bool)> = report
        .implementations
        .iter()
        .map(|i| (i.name.clone(), i.status == bench::report::ImplStatus::Ran))
        .collect();
    assert_eq!(
        status,
        [
            ("overlay".into(), true),
            ("raw".into(), true),
            ("false".into(), false)
        ]
    );
    for w in WorkloadId::ALL {
        for imp in ["overlay", "raw"] {
            let n = report
                .samples
                .iter()
                .filter(|s| s.workload == w.name() && s.implementation == imp)
                .count();
            assert!(n > 0, "no samples for {imp} / {}", w.name());
        }
    }
    // Every row has both implementations and ratios against both baselines, except the
    // mount time, which raw (no mount) has not.
    for row in report.rows() {
        if row.key.metric == "mount, time until usable" {
            assert_eq!(row.cells.len(), 1, "{:?}", row.key);
            assert!(row.cells[0].vs_kernel.is_some());
            continue;
        }
        assert_eq!(row.cells.len(), 2, "{:?}", row.key);
        assert!(
            row.cells
                .iter()
                .all(|c| c.vs_kernel.is_some() && c.vs_raw.is_some())
        );
    }
    // lookup with 3 layers resolves names through the whole stack
    assert!(report.samples.iter().any(|s| s.case == "3 layers"));
}

#[test]
fn injected_failure_is_reported_and_cleaned_up() {
    if !root() {
        return;
    }
    let report = run_with_fault(
        vec![WorkloadId::Lookup, WorkloadId::RmRf],
        Fault::FailAfterMount(WorkloadId::Lookup),
    );
    let failed: Vec<(&str, &str)> = report
        .failures
        .iter()
        .map(|f| (f.implementation.as_str(), f.workload.as_str()))
        .collect();
    assert_eq!(failed, [("overlay", "lookup"), ("raw", "lookup")]);
    assert!(report.failures[0].error.contains("injected failure"));
    // The next workload still ran on both.
    assert!(
        report
            .samples
            .iter()
            .any(|s| s.workload == "rm-rf" && s.implementation == "overlay")
    );
    assert!(
        report
            .samples
            .iter()
            .any(|s| s.workload == "rm-rf" && s.implementation == "raw")
    );
}

#[test]
fn stop_while_mounted_ends_the_run_and_cleans_up() {
    if !root() {
        return;
    }
    let report = run_with_fault(
        vec![WorkloadId::CopyUp, WorkloadId::Lookup],
        Fault::StopAfterMount(WorkloadId::CopyUp),
    );
    assert!(bench::was_interrupted(&report));
    assert!(report.samples.iter().all(|s| s.workload != "lookup"));
}

/// Runs `layerfs bench` in its own process group (a shell job), waits until it has mounted
/// something, sends `sig` to the whole group (as a terminal does), and returns its exit code
/// and standard error once it is gone; nothing may be left mounted or on disk.
fn signal_the_command(sig: nix::sys::signal::Signal, impls: &str) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let d = parent();
    let dir = d.path().canonicalize().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args([
            "bench",
            "--quick",
            "--impl",
            impls,
            "-w",
            "lookup,copy-up",
            "--dir",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let under = dir.clone();
    let mounted = mounts::wait_until(
        |m| !mounts::mounts_under(m, &under).is_empty(),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        mounted,
        "the bench never mounted anything under {}",
        dir.display()
    );
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(pgid, sig).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_clean(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sigint_to_the_command_unmounts_removes_everything_and_exits_130() {
    if !root() {
        return;
    }
    let (code, err) = signal_the_command(nix::sys::signal::Signal::SIGINT, "overlay");
    assert_eq!(
        code,
        Some(130),
        "Ctrl-C exits like a shell job it killed: {err}"
    );
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(err.contains("removed"), "{err}");
    assert!(!err.contains("Interrupted system call"), "{err}");
}

#[test]
fn sighup_when_the_terminal_closes_cleans_up_like_sigint() {
    if !root() {
        return;
    }
    // layerfs too: its FUSE daemons must not be left serving a mount.
    let (code, err) = signal_the_command(nix::sys::signal::Signal::SIGHUP, "layerfs,overlay");
    assert_eq!(code, Some(129), "{err}");
    assert!(err.contains("interrupted by SIGHUP"), "{err}");
    assert!(!err.contains("Interrupted system call"), "{err}");
}
