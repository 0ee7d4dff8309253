//! What the report says about the machine.
use std::path::Path;

use crate::bench::report::Machine;
use crate::mountinfo as mounts;

fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

pub fn describe(work_dir: &Path, cold_caches: bool) -> Machine {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = field(&meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let work_dir = work_dir
        .canonicalize()
        .unwrap_or_else(|_| work_dir.to_path_buf());
    let work_dir_fs = mounts::read_mountinfo()
        .ok()
        .and_then(|m| mounts::mount_of(&m, &work_dir).map(|e| e.fstype.clone()))
        .unwrap_or_else(|| "unknown".into());
    Machine {
        kernel,
        cpus,
        cpu_model,
        memory_bytes,
        work_dir: work_dir.display().to_string(),
        work_dir_fs,
        cold_caches,
    }
}
