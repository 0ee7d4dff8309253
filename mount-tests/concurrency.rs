//! Parallel writers and readers on one mount, threads and processes at once: first writes
//! (copy-ups) of different files and of the same file, O_APPEND records from many writers,
//! readdir while names are created. No operation may fail, no record may be lost or torn,
//! the daemon must survive, and the upper dir must show the same data to the kernel.
mod common;

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use common::diff::test_tmp;
use common::fixture::{Fixture, Style, dir, file, file_bytes, pattern};
use common::mount::{Dirs, Impl, Mount, daemon_pids};
use common::tree::{View, diff_trees, snapshot};

const THREADS: usize = 8;
const RECORDS: usize = 100;
const RECORD: usize = 32;
const REGION: usize = 8192;
const CREATORS: usize = 2;
const CREATES: usize = 150;
const PROCS: usize = 4;
const PROC_LINES: usize = 200;

fn fixture() -> Fixture {
    let mut top = vec![dir("own", 0o755), dir("spool", 0o755), dir("pdir", 0o755)];
    for i in 0..THREADS {
        top.push(file_bytes(&format!("own/t{i}"), pattern(65536, i as u8)));
    }
    for i in 0..10 {
        top.push(file(&format!("spool/l{i}"), "lower\n"));
    }
    top.push(file_bytes("same", pattern(65536, 99)));
    top.push(file_bytes("race", vec![b'.'; THREADS * REGION]));
    top.push(file("procfile", "start\n"));
    Fixture {
        lowers: vec![top, vec![dir("own", 0o755), file("bottom", "b\n")]],
        upper: vec![],
    }
}

fn record(tag: &str, n: usize) -> Vec<u8> {
    let mut r = format!("{tag}-{n:05}").into_bytes();
    r.resize(RECORD - 1, b'.');
    r.push(b'\n');
    r
}

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("append {}: {e}", path.display()));
}

/// Thread i: copies up and appends to its own file and to the shared one.
fn appender(mnt: &Path, i: usize, start: &Barrier) {
    start.wait();
    for n in 0..RECORDS {
        let r = record(&format!("t{i}"), n);
        append(&mnt.join(format!("own/t{i}")), &r);
        append(&mnt.join("same"), &r);
    }
}

/// Thread i: the first write to `race`, at the same moment as the others, in its own region.
fn racer(mnt: &Path, i: usize, start: &Barrier) {
    start.wait();
    let f = OpenOptions::new()
        .write(true)
        .open(mnt.join("race"))
        .expect("open race");
    f.write_all_at(&vec![b'A' + i as u8; REGION], (i * REGION) as u64)
        .expect("pwrite race");
}

fn creator(mnt: &Path, i: usize, start: &Barrier) {
    start.wait();
    for n in 0..CREATES {
        let p = mnt.join(format!("spool/c{i}-{n}"));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
            .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        f.write_all(format!("{i}-{n}\n").as_bytes()).expect("write");
    }
}

/// Lists `spool` until the creators are done: no duplicates, no strange or missing names.
fn lister(mnt: &Path, start: &Barrier, creating: &AtomicBool) -> usize {
    start.wait();
    let mut passes = 0;
    loop {
        let last = !creating.load(Ordering::SeqCst);
        let mut seen = BTreeSet::new();
        for e in std::fs::read_dir(mnt.join("spool")).expect("readdir spool") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(
                name.starts_with('l') || name.starts_with('c'),
                "strange name {name}"
            );
            assert!(seen.insert(name.clone()), "{name} listed twice");
        }
        for i in 0..10 {
            assert!(seen.contains(&format!("l{i}")), "lower name l{i} missing");
        }
        passes += 1;
        if last {
            assert_eq!(seen.len(), 10 + CREATORS * CREATES, "final listing");
            return passes;
        }
    }
}

fn spawn_procs(mnt: &Path) -> Vec<std::process::Child> {
    (0..PROCS)
        .map(|n| {
            let script = format!(
                "i=0; while [ $i -lt {PROC_LINES} ]; do echo p{n}-$i >> procfile; \
                 if [ $((i % 20)) -eq 0 ]; then mkdir pdir/p{n}-$i; fi; i=$((i+1)); done"
            );
            Command::new("sh")
                .args(["-c", &script])
                .current_dir(mnt)
                .spawn()
                .expect("spawn sh")
        })
        .collect()
}

fn check_records(data: &[u8], tag: &str, count: usize, what: &str) {
    let lines: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for n in 0..count {
        let want = record(tag, n);
        let want = &want[..RECORD - 1];
        let hits = lines.iter().filter(|l| **l == want).count();
        assert_eq!(hits, 1, "{what}: record {tag}-{n} found {hits} times");
    }
}

fn verify(mnt: &Path) {
    for i in 0..THREADS {
        let data = std::fs::read(mnt.join(format!("own/t{i}"))).expect("read own");
        assert_eq!(data.len(), 65536 + RECORDS * RECORD, "own/t{i} size");
        assert_eq!(
            &data[..65536],
            &pattern(65536, i as u8)[..],
            "own/t{i} lower data"
        );
        check_records(&data[65536..], &format!("t{i}"), RECORDS, "own");
    }
    let same = std::fs::read(mnt.join("same")).expect("read same");
    assert_eq!(same.len(), 65536 + THREADS * RECORDS * RECORD, "same size");
    assert_eq!(&same[..65536], &pattern(65536, 99)[..], "same: lower data");
    for chunk in same[65536..].chunks(RECORD) {
        assert_eq!(chunk.last(), Some(&b'\n'), "torn record in same: {chunk:?}");
    }
    for i in 0..THREADS {
        check_records(&same[65536..], &format!("t{i}"), RECORDS, "same");
    }
    let race = std::fs::read(mnt.join("race")).expect("read race");
    for i in 0..THREADS {
        let region = &race[i * REGION..(i + 1) * REGION];
        assert!(
            region.iter().all(|b| *b == b'A' + i as u8),
            "race: region {i} lost its write (a second copy-up overwrote it?)"
        );
    }
    let procfile = std::fs::read_to_string(mnt.join("procfile")).expect("read procfile");
    let lines: BTreeSet<&str> = procfile.lines().collect();
    assert_eq!(
        procfile.lines().count(),
        1 + PROCS * PROC_LINES,
        "procfile lines"
    );
    for n in 0..PROCS {
        for i in 0..PROC_LINES {
            assert!(
                lines.contains(format!("p{n}-{i}").as_str()),
                "p{n}-{i} lost"
            );
        }
    }
    let pdirs = std::fs::read_dir(mnt.join("pdir")).expect("pdir").count();
    assert_eq!(pdirs, PROCS * PROC_LINES / 20, "pdir entries");
}

#[test]
fn parallel_writers_and_readers() {
    common::require_root();
    let imp = Impl::under_test();
    let tmp = tempfile::Builder::new()
        .prefix("concurrency")
        .tempdir_in(test_tmp())
        .expect("tempdir");
    let dirs = fixture().instantiate(tmp.path(), Style::Overlay, false);
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(imp, &dirs, &mnt).expect("mount");
    let daemons = daemon_pids(&mnt);
    if imp != Impl::Kernel {
        assert!(
            !daemons.is_empty(),
            "no daemon process names {}",
            mnt.display()
        );
    }
    let workers = 2 * THREADS + CREATORS + 2;
    let start = Barrier::new(workers);
    let creating = AtomicBool::new(true);
    let mut procs = Vec::new();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..THREADS {
            let (mnt, start) = (&mnt, &start);
            handles.push(s.spawn(move || appender(mnt, i, start)));
            handles.push(s.spawn(move || racer(mnt, i, start)));
        }
        let mut creators = Vec::new();
        for i in 0..CREATORS {
            let (mnt, start) = (&mnt, &start);
            creators.push(s.spawn(move || creator(mnt, i, start)));
        }
        let listers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| lister(&mnt, &start, &creating)))
            .collect();
        procs = spawn_procs(&mnt);
        for c in creators {
            c.join().expect("creator panicked");
        }
        creating.store(false, Ordering::SeqCst);
        for h in handles {
            h.join().expect("writer panicked");
        }
        for l in listers {
            let passes = l.join().expect("lister panicked");
            assert!(passes >= 1);
        }
    });
    for mut p in procs {
        let st = p.wait().expect("wait sh");
        assert!(st.success(), "writer process failed: {st}");
    }
    verify(&mnt);
    assert_eq!(daemon_pids(&mnt), daemons, "daemon restarted or died");
    std::fs::metadata(&mnt).expect("mount still answers");
    let seen = snapshot(&mnt, View::Merged);
    let upper = dirs.upper.clone().expect("upper").0;
    m.unmount().expect("unmount");
    // The kernel reads the same data from the upper dir.
    let work = tmp.path().join("kwork");
    std::fs::create_dir(&work).expect("mkdir");
    let kdirs = Dirs {
        lowers: dirs.lowers.clone(),
        upper: Some((upper, work)),
        mode: common::mount::Mode::Legacy,
    };
    let kmnt: PathBuf = tmp.path().join("kmnt");
    let k = Mount::new(Impl::Kernel, &kdirs, &kmnt).expect("kernel mount");
    verify(&kmnt);
    let diffs = diff_trees(&seen, &snapshot(&kmnt, View::Merged));
    k.unmount().expect("unmount kernel");
    let diffs: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
    assert!(
        diffs.is_empty(),
        "tree through {} | through the kernel on its upper:\n{}",
        imp.name(),
        diffs.join("\n")
    );
}
