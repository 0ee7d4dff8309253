//! `layerfs bench -w lazy --image REF`: lazy mount vs full pull + mount of a stored image,
//! through a local registry (Debian's `docker-registry`, started here on 127.0.0.1) behind a
//! bandwidth-limiting relay, at 100 Mbit/s and 1 Gbit/s. The image is pushed once as
//! zstd:chunked. Per link speed and method, each from an empty store: time from the command to
//! a live mount, to the first byte of `/etc/os-release`, to having read a start-up set of files
//! (a shell, its libraries, ld.so, a few configs), and the bytes that crossed the link.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::reference::Reference;
use crate::registry::push::{PushOptions, push};
use crate::store::convert::SeekableFormat;
use crate::store::{LockMode, Store};
use crate::{Error, Result};

/// What a container typically reads when it starts: a shell and what it loads.
pub const STARTUP_SET: &[&str] = &[
    "etc/os-release",
    "etc/passwd",
    "etc/group",
    "etc/nsswitch.conf",
    "etc/ld.so.cache",
    "usr/bin/sh",
    "usr/bin/dash",
    "usr/bin/bash",
    "usr/bin/env",
    "usr/bin/ls",
    "usr/bin/cat",
    "usr/lib64/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu/libc.so.6",
    "usr/lib/x86_64-linux-gnu/libtinfo.so.6",
    "usr/lib/x86_64-linux-gnu/libselinux.so.1",
    "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "usr/lib/x86_64-linux-gnu/libm.so.6",
    "usr/lib/x86_64-linux-gnu/libz.so.1",
];

/// Link speeds measured, bits per second.
const RATES: &[(u64, &str)] = &[(100_000_000, "100 Mbit/s"), (1_000_000_000, "1 Gbit/s")];

/// One measured start.
struct Row {
    link: &'static str,
    method: &'static str,
    mount: f64,
    first_byte: f64,
    startup: f64,
    files: usize,
    bytes: u64,
}

pub fn run(image: &str, dir: &Path, store_root: &Path, drop_caches: bool) -> Result<()> {
    let scratch = dir.join(format!("layerfs-bench-lazy-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io("create", &scratch, e))?;
    let r = measure(image, &scratch, store_root, drop_caches);
    let _ = std::fs::remove_dir_all(&scratch);
    let (rows, size) = r?;
    println!(
        "image {image}: {:.1} MB as zstd:chunked; start-up set: {} paths tried",
        size as f64 / 1e6,
        STARTUP_SET.len()
    );
    println!(
        "{:<11} {:<16} {:>9} {:>12} {:>12} {:>6} {:>12} {:>8}",
        "link", "method", "mount s", "1st byte s", "start-up s", "files", "bytes", "% image"
    );
    for r in rows {
        println!(
            "{:<11} {:<16} {:>9.3} {:>12.3} {:>12.3} {:>6} {:>12} {:>7.1}%",
            r.link,
            r.method,
            r.mount,
            r.first_byte,
            r.startup,
            r.files,
            r.bytes,
            r.bytes as f64 * 100.0 / size.max(1) as f64
        );
    }
    Ok(())
}

fn measure(
    image: &str,
    scratch: &Path,
    store_root: &Path,
    drop_caches: bool,
) -> Result<(Vec<Row>, u64)> {
    let reg = Registry::start(scratch)?;
    let dest = Reference::parse(&format!("127.0.0.1:{}/bench/lazy:1", reg.port))?;
    let size = {
        let store = Store::open(store_root, LockMode::Shared)?;
        let img = store.resolve(image)?;
        let opts = PushOptions {
            compression: Some(SeekableFormat::ZstdChunked),
            ..PushOptions::default()
        };
        push(&store, &img, &dest, None, &opts, &mut std::io::sink())?;
        reg.blob_bytes()
    };
    let mut rows = Vec::new();
    for (i, &(bits, link)) in RATES.iter().enumerate() {
        let relay = Relay::start(reg.port, bits / 8)?;
        let reference = format!("127.0.0.1:{}/bench/lazy:1", relay.port);
        for (j, method) in ["lazy", "pull + mount"].into_iter().enumerate() {
            let root = scratch.join(format!("store-{i}-{j}"));
            let mnt = scratch.join(format!("mnt-{i}-{j}"));
            std::fs::create_dir_all(&mnt).map_err(|e| Error::io("create", &mnt, e))?;
            relay.bytes.store(0, Ordering::SeqCst);
            let row = one_start(&root, &mnt, &reference, method == "lazy");
            let _ = Command::new(exe()?).arg("umount").arg(&mnt).status();
            let (mount, first_byte, startup, files) = row?;
            rows.push(Row {
                link,
                method,
                mount,
                first_byte,
                startup,
                files,
                bytes: relay.bytes.load(Ordering::SeqCst),
            });
        }
    }
    let local = local_reads(scratch, reg.port, drop_caches)?;
    println!(
        "whole tree read {} after the prefetch completed: lazy mount {:.2} s, extracted \
         layers {:.2} s ({} files, {:.1} MB)",
        if drop_caches {
            "cold (page cache dropped)"
        } else {
            "(page cache not dropped)"
        },
        local.0,
        local.1,
        local.2,
        local.3 as f64 / 1e6
    );
    Ok((rows, size))
}

/// A lazy mount whose prefetch completed vs the same image's extracted layers: seconds to read
/// every file with the page cache dropped first, and what was read.
fn local_reads(scratch: &Path, port: u16, drop_caches: bool) -> Result<(f64, f64, u64, u64)> {
    let root = scratch.join("store-local");
    let lazy_mnt = scratch.join("mnt-local-lazy");
    let plain_mnt = scratch.join("mnt-local-extracted");
    for d in [&lazy_mnt, &plain_mnt] {
        std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
    }
    let reference = format!("127.0.0.1:{port}/bench/lazy:1");
    let r = (|| {
        layerfs(
            &root,
            &["mount", "--lazy", &reference, path_str(&lazy_mnt)?],
        )?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while !super::status::live(&root).iter().any(|m| m.prefetched) {
            if Instant::now() > deadline {
                return Err(Error::Usage("bench: the prefetch did not complete".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        layerfs(
            &root,
            &["mount", "--read-only", &reference, path_str(&plain_mnt)?],
        )?;
        let lazy = timed_read(&lazy_mnt, drop_caches)?;
        let plain = timed_read(&plain_mnt, drop_caches)?;
        Ok((lazy.0, plain.0, plain.1, plain.2))
    })();
    for m in [&lazy_mnt, &plain_mnt] {
        let _ = Command::new(exe()?).arg("umount").arg(m).status();
    }
    r
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::Usage(format!("{}: not UTF-8", p.display())))
}

/// Runs `layerfs --root ROOT ARGS...`.
fn layerfs(root: &Path, args: &[&str]) -> Result<()> {
    let o = Command::new(exe()?)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run", "layerfs", e))?;
    if !o.status.success() {
        return Err(Error::Usage(format!(
            "bench: layerfs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// Drops the page cache (root, when asked), then reads every regular file below `dir`:
/// (seconds, files, bytes).
fn timed_read(dir: &Path, drop_caches: bool) -> Result<(f64, u64, u64)> {
    if drop_caches {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
    let t0 = Instant::now();
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| Error::io("list", &d, e))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                let mut f = std::fs::File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                bytes += std::io::copy(&mut f, &mut std::io::sink())
                    .map_err(|e| Error::io("read", &p, e))?;
                files += 1;
            }
        }
    }
    Ok((t0.elapsed().as_secs_f64(), files, bytes))
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("find", "the layerfs binary", e))
}

/// (to mount, to first byte, to start-up set read, files read), seconds from the command.
fn one_start(
    root: &Path,
    mnt: &Path,
    reference: &str,
    lazy: bool,
) -> Result<(f64, f64, f64, usize)> {
    let run = |args: &[&str]| -> Result<()> {
        let o = Command::new(exe()?)
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("run", "layerfs", e))?;
        if !o.status.success() {
            return Err(Error::Usage(format!(
                "bench: layerfs {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(())
    };
    let m = mnt
        .to_str()
        .ok_or_else(|| Error::Usage("bench dir is not UTF-8".into()))?;
    let t0 = Instant::now();
    if lazy {
        run(&["mount", "--lazy", "--no-prefetch", reference, m])?;
    } else {
        run(&["pull", "-q", reference])?;
        run(&["mount", "--read-only", reference, m])?;
    }
    let mounted = t0.elapsed().as_secs_f64();
    let root_fd = rustix::fs::open(mnt, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::io("open", mnt, e.into()))?;
    let mut first = None;
    let mut files = 0;
    for p in STARTUP_SET {
        let Ok(fd) = rustix::fs::openat2(
            &root_fd,
            *p,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        ) else {
            continue;
        };
        let mut f = std::fs::File::from(fd);
        let mut one = [0u8; 1];
        let _ = f.read(&mut one);
        first.get_or_insert(t0.elapsed().as_secs_f64());
        let _ = std::io::copy(&mut f, &mut std::io::sink());
        files += 1;
    }
    let startup = t0.elapsed().as_secs_f64();
    Ok((mounted, first.unwrap_or(startup), startup, files))
}

/// A `docker-registry` on a free loopback port with its storage in the scratch dir.
struct Registry {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Registry {
    fn start(scratch: &Path) -> Result<Registry> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("bind", "127.0.0.1:0", e))?
            .port();
        let data = scratch.join("registry");
        let cfg = scratch.join("registry.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        std::fs::write(&cfg, text).map_err(|e| Error::io("write", &cfg, e))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::Usage(format!(
                    "bench -w lazy needs docker-registry (apt-get install docker-registry): {e}"
                ))
            })?;
        let mut reg = Registry { child, port, data };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || reg.child.try_wait().ok().flatten().is_some() {
                return Err(Error::Usage("docker-registry did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(reg)
    }

    /// Bytes of layer blobs the registry holds (what a full pull transfers).
    fn blob_bytes(&self) -> u64 {
        fn walk(p: &Path, total: &mut u64) {
            let Ok(rd) = std::fs::read_dir(p) else { return };
            for e in rd.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path(), total),
                    Ok(t) if t.is_file() && e.file_name() == "data" => {
                        *total += e.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                    _ => {}
                }
            }
        }
        let mut total = 0;
        walk(&self.data.join("docker/registry/v2/blobs"), &mut total);
        total
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay whose answers share one link of `rate` bytes per second; counts them.
struct Relay {
    port: u16,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: u16, rate: u64) -> Result<Relay> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", "relay", e))?;
        let port = l
            .local_addr()
            .map_err(|e| Error::io("bind", "relay", e))?
            .port();
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let link = Arc::new(Mutex::new(Instant::now()));
        let (b, s) = (Arc::clone(&bytes), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = conn else { continue };
                let (b, link) = (Arc::clone(&b), Arc::clone(&link));
                std::thread::spawn(move || relay_one(down, upstream, rate, &b, &link));
            }
        });
        Ok(Relay { port, bytes, stop })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay_one(down: TcpStream, upstream: u16, rate: u64, bytes: &AtomicU64, link: &Mutex<Instant>) {
    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (Ok(mut up_w), Ok(mut down_r)) = (up.try_clone(), down.try_clone()) else {
        return;
    };
    let requests = std::thread::spawn(move || {
        let _ = std::io::copy(&mut down_r, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let (mut up_r, mut down_w) = (up, down);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match up_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Reserve the link for n bytes after whatever is already queued on it.
        let until = {
            let mut next = link.lock();
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
            *next
        };
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
        if down_w.write_all(&buf[..n]).is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = down_w.shutdown(Shutdown::Both);
    let _ = requests.join();
}
