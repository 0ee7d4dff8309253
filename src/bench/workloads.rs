//! The workloads: functions over a mounted directory, the same for every implementation.
//! Each returns its timed spans; what is timed is only the operation named by the metric.
//! Results are checked (entry counts, sizes) so a wrong answer fails instead of looking fast.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bench::report::Cache;
use crate::bench::rng::Rng;
use crate::bench::scratch::{self, Ctl};
use crate::{Error, Result};

/// What a case runs on; paths are relative to the mount point.
#[derive(Debug, Clone)]
pub enum Input {
    /// `warm`: read the file through the mount first, so only the union's copy is timed.
    CopyUp {
        rel: PathBuf,
        size: u64,
        warm: bool,
    },
    Metadata {
        chmod: PathBuf,
        chown: PathBuf,
        touch: PathBuf,
    },
    Lookup {
        files: Vec<PathBuf>,
        missing: Vec<PathBuf>,
    },
    Readdir {
        dir: PathBuf,
        expected: usize,
    },
    StatStorm {
        expected: usize,
    },
    Read {
        rel: PathBuf,
        size: u64,
        random_reads: usize,
        seed: u64,
    },
    Untar {
        tarball: PathBuf,
        entries: usize,
    },
    RmRf {
        subtree: PathBuf,
        entries: usize,
    },
    Parallel {
        files: Vec<(PathBuf, u64)>,
        dirs: Vec<PathBuf>,
        jobs: usize,
        ops_per_job: usize,
        seed: u64,
    },
}

/// One timed span.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub metric: &'static str,
    pub cache: Cache,
    pub seconds: f64,
    pub ops: u64,
    pub bytes: Option<u64>,
}

fn measure(metric: &'static str, cache: Cache, seconds: f64, ops: usize) -> Measure {
    Measure {
        metric,
        cache,
        seconds,
        ops: ops.max(1) as u64,
        bytes: None,
    }
}

#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub ctl: &'a Ctl,
    /// Whether caches may be dropped (root).
    pub cold: bool,
    pub rep: u32,
    /// The upper (writable) layer of the mount, if the tree is a mount: what a sync must also
    /// reach where the mount does not pass syncfs(2) on (FUSE has no FUSE_SYNCFS in fuser).
    pub upper: Option<&'a Path>,
}

impl Env<'_> {
    /// Drops caches when allowed; says which state the next timed span starts in.
    fn cold_start(&self) -> Result<Cache> {
        self.ctl.check()?;
        if self.cold {
            scratch::drop_caches()?;
            Ok(Cache::Cold)
        } else {
            Ok(Cache::Warm)
        }
    }
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

fn io<T>(op: &'static str, path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(op, path, e))
}

fn mismatch(what: String) -> Error {
    Error::Format(format!("wrong result: {what}"))
}

pub fn run(mnt: &Path, input: &Input, env: &Env) -> Result<Vec<Measure>> {
    match input {
        Input::CopyUp { rel, size, warm } => copy_up(&mnt.join(rel), *size, *warm, env),
        Input::Metadata {
            chmod,
            chown,
            touch,
        } => metadata(&mnt.join(chmod), &mnt.join(chown), &mnt.join(touch), env),
        Input::Lookup { files, missing } => lookup(mnt, files, missing, env),
        Input::Readdir { dir, expected } => readdir(&mnt.join(dir), *expected, env),
        Input::StatStorm { expected } => stat_storm(mnt, *expected, env),
        Input::Read {
            rel,
            size,
            random_reads,
            seed,
        } => read(&mnt.join(rel), *size, *random_reads, *seed, env),
        Input::Untar { tarball, entries } => untar(mnt, tarball, *entries, env),
        Input::RmRf { subtree, .. } => rm_rf(&mnt.join(subtree), env),
        Input::Parallel {
            files,
            dirs,
            jobs,
            ops_per_job,
            seed,
        } => parallel(mnt, files, dirs, *jobs, *ops_per_job, *seed, env),
    }
}

fn append_byte(p: &Path) -> Result<()> {
    let mut f = io(
        "open for append",
        p,
        OpenOptions::new().append(true).open(p),
    )?;
    io("append to", p, f.write_all(b"x"))
}

fn len(p: &Path) -> Result<u64> {
    Ok(io("stat", p, p.symlink_metadata())?.len())
}

/// First 1-byte append to a lower file (the copy-up), then a second one (already up).
fn copy_up(p: &Path, size: u64, warm: bool, env: &Env) -> Result<Vec<Measure>> {
    let cache = if warm {
        read_all(p, env.ctl)?;
        Cache::Warm
    } else {
        env.cold_start()?
    };
    let ((), first) = timed(|| append_byte(p))?;
    let len1 = len(p)?;
    let ((), second) = timed(|| append_byte(p))?;
    let len2 = len(p)?;
    if len1 < size + 1 || len2 != len1 + 1 {
        return Err(mismatch(format!(
            "{}: {size} bytes in the lower layer, {len1} after one 1-byte append, {len2} after two",
            p.display()
        )));
    }
    let mut out = vec![measure("first 1-byte append", cache, first, 1)];
    // The second write is the same after a cold or a warm copy-up: reported once.
    if warm {
        out.push(measure("second 1-byte append", Cache::Warm, second, 1));
    }
    Ok(out)
}

/// chmod, chown and touch on three lower files: metadata-only changes.
fn metadata(chmod: &Path, chown: &Path, touch: &Path, env: &Env) -> Result<Vec<Measure>> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let cache = env.cold_start()?;
    let mode = 0o600 + env.rep % 2 * 0o40;
    let ((), t_chmod) = timed(|| {
        io(
            "chmod",
            chmod,
            std::fs::set_permissions(chmod, std::fs::Permissions::from_mode(mode)),
        )
    })?;
    let got = io("stat", chmod, chmod.symlink_metadata())?
        .permissions()
        .mode()
        & 0o777;
    if got != mode {
        return Err(mismatch(format!(
            "{}: mode {got:o} after chmod {mode:o}",
            chmod.display()
        )));
    }
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (1, 1)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let ((), t_chown) = timed(|| {
        io(
            "chown",
            chown,
            std::os::unix::fs::chown(chown, Some(uid), Some(gid)),
        )
    })?;
    let ((), t_touch) = timed(|| {
        utimensat(
            nix::fcntl::AT_FDCWD,
            touch,
            &TimeSpec::UTIME_NOW,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::FollowSymlink,
        )
        .map_err(|e| Error::io("touch", touch, e.into()))
    })?;
    Ok(vec![
        measure("chmod", cache, t_chmod, 1),
        measure("chown", cache, t_chown, 1),
        measure("touch", cache, t_touch, 1),
    ])
}

fn stat_all(mnt: &Path, rels: &[PathBuf], env: &Env) -> Result<()> {
    for (i, rel) in rels.iter().enumerate() {
        if i % 256 == 0 {
            env.ctl.check()?;
        }
        let p = mnt.join(rel);
        io("stat", &p, p.symlink_metadata())?;
    }
    Ok(())
}

/// stat of files in the bottom layer: first after mount, again, and names in no layer.
fn lookup(mnt: &Path, files: &[PathBuf], missing: &[PathBuf], env: &Env) -> Result<Vec<Measure>> {
    let cache = env.cold_start()?;
    let ((), first) = timed(|| stat_all(mnt, files, env))?;
    let ((), again) = timed(|| stat_all(mnt, files, env))?;
    let ((), absent) = timed(|| {
        for rel in missing {
            let p = mnt.join(rel);
            match p.symlink_metadata() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", &p, e)),
                Ok(_) => return Err(mismatch(format!("{} exists in no layer", p.display()))),
            }
        }
        Ok(())
    })?;
    Ok(vec![
        measure(
            "stat, first after mount (per file)",
            cache,
            first,
            files.len(),
        ),
        measure("stat, repeated (per file)", Cache::Warm, again, files.len()),
        measure(
            "stat of a missing name (per name)",
            Cache::Warm,
            absent,
            missing.len(),
        ),
    ])
}

fn count_dir(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in io("read directory", dir, std::fs::read_dir(dir))? {
        io("read directory", dir, e)?;
        n += 1;
    }
    Ok(n)
}

/// Lists one large directory merged from several layers.
fn readdir(dir: &Path, expected: usize, env: &Env) -> Result<Vec<Measure>> {
    let cache = env.cold_start()?;
    let (n1, first) = timed(|| count_dir(dir))?;
    let (n2, again) = timed(|| count_dir(dir))?;
    if n1 != expected || n2 != expected {
        return Err(mismatch(format!(
            "{} lists {n1} then {n2} entries, the layers merge to {expected}",
            dir.display()
        )));
    }
    Ok(vec![
        measure("list, first after mount", cache, first, 1),
        measure("list, repeated", Cache::Warm, again, 1),
    ])
}

/// `find`-like: every directory read and every entry lstat'ed. Returns the entry count.
pub fn walk(root: &Path, ctl: &Ctl) -> Result<usize> {
    let mut stack = vec![root.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        ctl.check()?;
        for e in io("read directory", &dir, std::fs::read_dir(&dir))? {
            let e = io("read directory", &dir, e)?;
            let md = io("stat", &e.path(), e.metadata())?;
            n += 1;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

fn stat_storm(mnt: &Path, expected: usize, env: &Env) -> Result<Vec<Measure>> {
    let cache = env.cold_start()?;
    let (n1, first) = timed(|| walk(mnt, env.ctl))?;
    let (n2, again) = timed(|| walk(mnt, env.ctl))?;
    if n1 != expected || n2 != expected {
        return Err(mismatch(format!(
            "walking {} found {n1} then {n2} entries, the layers merge to {expected}",
            mnt.display()
        )));
    }
    let files = count_files(mnt)?;
    let cache2 = env.cold_start()?;
    let (f1, find_first) = timed(|| find_files(mnt))?;
    let (f2, find_again) = timed(|| find_files(mnt))?;
    if f1 != files || f2 != files {
        return Err(mismatch(format!(
            "find -type f in {} printed {f1} then {f2} files, a walk counts {files}",
            mnt.display()
        )));
    }
    Ok(vec![
        measure(
            "walk + lstat every entry, first after mount",
            cache,
            first,
            1,
        ),
        measure("walk + lstat every entry, repeated", Cache::Warm, again, 1),
        measure("find -type f, caches dropped", cache2, find_first, 1),
        measure("find -type f, repeated", Cache::Warm, find_again, 1),
    ])
}

/// Regular files under `root`, counted by a walk (the reference for `find`).
fn count_files(root: &Path) -> Result<usize> {
    let mut stack = vec![root.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for e in io("read directory", &dir, std::fs::read_dir(&dir))? {
            let e = io("read directory", &dir, e)?;
            let t = io("stat", &e.path(), e.file_type())?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// GNU `find DIR -type f`; returns how many lines it printed.
fn find_files(root: &Path) -> Result<usize> {
    let out = io(
        "run find in",
        root,
        std::process::Command::new("find")
            .arg(root)
            .args(["-type", "f"])
            .output(),
    )?;
    if !out.status.success() {
        return Err(mismatch(format!(
            "find {} -type f failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout.iter().filter(|&&b| b == b'\n').count())
}

fn read_all(p: &Path, ctl: &Ctl) -> Result<u64> {
    let mut f = io("open", p, File::open(p))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = io("read", p, f.read(&mut buf))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        if total.is_multiple_of(64 << 20) {
            ctl.check()?;
        }
    }
}

/// Sequential read of a large lower file, then random 4 KiB reads of it.
fn read(p: &Path, size: u64, count: usize, seed: u64, env: &Env) -> Result<Vec<Measure>> {
    let mut out = Vec::new();
    let cache = env.cold_start()?;
    for c in [cache, Cache::Warm] {
        let (n, t) = timed(|| read_all(p, env.ctl))?;
        if n < size {
            return Err(mismatch(format!(
                "{}: read {n} bytes of {size}",
                p.display()
            )));
        }
        out.push(Measure {
            bytes: Some(n),
            ..measure("sequential read", c, t, 1)
        });
    }
    let mut rng = Rng::derive(seed, "random-reads");
    let blocks = (size / 4096).max(1);
    let offsets: Vec<u64> = (0..count).map(|_| rng.below(blocks) * 4096).collect();
    let f = io("open", p, File::open(p))?;
    let cache = env.cold_start()?;
    for c in [cache, Cache::Warm] {
        let mut buf = [0u8; 4096];
        let ((), t) = timed(|| {
            for &off in &offsets {
                io("read", p, f.read_exact_at(&mut buf, off))?;
            }
            Ok(())
        })?;
        out.push(Measure {
            bytes: Some(4096),
            ..measure("random 4 KiB reads (per read)", c, t, offsets.len())
        });
    }
    Ok(out)
}

/// The untar workload's sync row: syncfs of the mount and of its upper layer's file system.
pub const SYNC_METRIC: &str = "syncfs of mount + upper fs after extracting";

/// The directory repetition `rep` of the untar workload extracts into.
pub fn untar_dir(rep: u32) -> String {
    format!("x{rep}")
}

/// Extracts a tarball of small files into a new directory (GNU tar), then syncs the file system.
fn untar(mnt: &Path, tarball: &Path, entries: usize, env: &Env) -> Result<Vec<Measure>> {
    env.ctl.check()?;
    let tar = crate::bench::impls::find_program("tar")
        .ok_or_else(|| Error::Usage("GNU tar is not installed (apt-get install tar)".into()))?;
    let target = mnt.join(untar_dir(env.rep));
    let ((), t) = timed(|| {
        io("create directory", &target, std::fs::create_dir(&target))?;
        let out = std::process::Command::new(&tar)
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(&target)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io("run tar for", &target, e))?;
        if !out.status.success() {
            return Err(Error::Format(format!(
                "tar -xf {} -C {} failed: {}",
                tarball.display(),
                target.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    })?;
    // The same durability for every implementation: syncfs(2) of the mount reaches the upper
    // layer's file system through kernel overlayfs but is a no-op through FUSE, so the upper
    // layer's file system is synced too (cheap where the first sync already wrote it).
    let ((), sync) = timed(|| {
        let d = io("open", &target, File::open(&target))?;
        nix::unistd::syncfs(&d).map_err(|e| Error::io("syncfs", &target, e.into()))?;
        if let Some(upper) = env.upper {
            let u = io("open", upper, File::open(upper))?;
            nix::unistd::syncfs(&u).map_err(|e| Error::io("syncfs", upper, e.into()))?;
        }
        Ok(())
    })?;
    let n = walk(&target, env.ctl)?;
    if n != entries {
        return Err(mismatch(format!(
            "{} holds {n} entries after extracting {entries}",
            target.display()
        )));
    }
    Ok(vec![
        measure("extract with tar", Cache::Warm, t, 1),
        measure(SYNC_METRIC, Cache::Warm, sync, 1),
    ])
}

/// `rm -rf` of a directory that comes from the lower layers (a whiteout per name).
fn rm_rf(dir: &Path, env: &Env) -> Result<Vec<Measure>> {
    let cache = env.cold_start()?;
    let ((), t) = timed(|| io("remove", dir, std::fs::remove_dir_all(dir)))?;
    if dir.symlink_metadata().is_ok() {
        return Err(mismatch(format!(
            "{} still exists after rm -rf",
            dir.display()
        )));
    }
    Ok(vec![measure("rm -rf of a lower subtree", cache, t, 1)])
}

/// One job of the parallel workload: a seeded mix of stat, read, append, create, readdir and
/// unlink over its own share of the files.
fn job(
    mnt: &Path,
    mut files: Vec<(PathBuf, u64)>,
    dirs: &[PathBuf],
    own: &Path,
    ops: usize,
    mut rng: Rng,
    ctl: &Ctl,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let new_body = [b'n'; 4096];
    for op in 0..ops {
        if op % 64 == 0 {
            ctl.check()?;
        }
        let roll = rng.below(100);
        let pick = if files.is_empty() {
            0
        } else {
            rng.below(files.len() as u64) as usize
        };
        match (roll, files.get(pick)) {
            (0..40, Some((rel, _))) => {
                let p = mnt.join(rel);
                io("stat", &p, p.symlink_metadata())?;
            }
            (40..65, Some((rel, _))) => {
                let p = mnt.join(rel);
                let mut f = io("open", &p, File::open(&p))?;
                while io("read", &p, f.read(&mut buf))? > 0 {}
            }
            (65..75, Some((rel, _))) => append_byte(&mnt.join(rel))?,
            (85..95, _) => {
                let d = mnt.join(&dirs[rng.below(dirs.len() as u64) as usize]);
                count_dir(&d)?;
            }
            (95.., Some(_)) => {
                let (rel, _) = files.swap_remove(pick);
                let p = mnt.join(rel);
                io("unlink", &p, std::fs::remove_file(&p))?;
            }
            // 75..85, or any file operation once this job has deleted all its files: create.
            _ => {
                let p = own.join(format!("n{op:06}"));
                io("create", &p, std::fs::write(&p, new_body))?;
            }
        }
    }
    Ok(())
}

fn parallel(
    mnt: &Path,
    files: &[(PathBuf, u64)],
    dirs: &[PathBuf],
    jobs: usize,
    ops_per_job: usize,
    seed: u64,
    env: &Env,
) -> Result<Vec<Measure>> {
    let cache = env.cold_start()?;
    let own: Vec<PathBuf> = (0..jobs)
        .map(|j| mnt.join(format!("par{}-{j}", env.rep)))
        .collect();
    for d in &own {
        io("create directory", d, std::fs::create_dir(d))?;
    }
    let barrier = std::sync::Barrier::new(jobs + 1);
    let (results, t) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let share: Vec<(PathBuf, u64)> =
                    files.iter().skip(j).step_by(jobs).cloned().collect();
                let rng = Rng::derive(seed ^ j as u64, "parallel");
                let (own, barrier) = (&own[j], &barrier);
                s.spawn(move || {
                    barrier.wait();
                    job(mnt, share, dirs, own, ops_per_job, rng, env.ctl)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Format("a parallel job panicked".into())))
            })
            .collect();
        (results, start.elapsed().as_secs_f64())
    });
    for r in results {
        r?;
    }
    Ok(vec![measure("mixed operations, wall time", cache, t, 1)])
}
