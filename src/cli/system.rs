//! `layerfs version` and `layerfs info`: what this binary is, and what this machine and store
//! offer it. Read-only: `info` opens the store with a shared lock and creates nothing else.
use std::io::Write;
use std::path::Path;

use clap::Args;
use serde_json::{Value, json};

use super::output::{emit, emit_formatted};
use crate::human::human_size;
use crate::store::{LockMode, Store};
use crate::{Result, daemon};

/// `layerfs system ...`: store-wide housekeeping, as `docker system`.
#[derive(Debug, clap::Subcommand)]
pub enum SystemCommand {
    /// Remove unmounted containers and dangling images (-a: every image no container uses)
    Prune(SystemPruneArgs),
    /// Show disk usage (the same as `layerfs df`)
    Df(super::store::DfArgs),
}

#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Remove every image no container uses, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn system(root: &Path, cmd: SystemCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        SystemCommand::Df(a) => {
            super::store::df(&Store::open(root, LockMode::Shared)?, &a, &mut out)
        }
        SystemCommand::Prune(a) => {
            let images = if a.all {
                "all images without at least one container associated to them"
            } else {
                "all dangling images"
            };
            let q = format!(
                "WARNING! This will remove:\n  - all containers that are not mounted, with \
                 everything they wrote\n  - {images}\nAre you sure you want to continue?"
            );
            if !a.force && !super::store::confirm(&q) {
                eprintln!("Nothing removed (give -f to skip this question).");
                return Ok(());
            }
            let store = Store::open(root, LockMode::Exclusive)?;
            let mut n = crate::container::mount::prune(&store, &mut out)?;
            n += store.prune(a.all, &mut out)?;
            emit(
                &mut out,
                &format!("Total reclaimed space: {}\n", human_size(n)),
            )
        }
    }
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Format with a Go-style template (e.g. '{{.Version}}'), or `json`
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format with a Go-style template (e.g. '{{.Store.Root}}'), or `json`
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

/// The FUSE protocol version fuser 0.18 speaks (the kernel may answer with a lower minor).
const FUSE_PROTOCOL: &str = "7.40";
const FUSER_VERSION: &str = "0.18";

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// (major, minor) of a kernel release string like `6.18.44-foo`.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// FUSE passthrough (backing files) needs Linux 6.9 and CAP_SYS_ADMIN in the initial namespace.
fn passthrough(release: &str) -> Value {
    let kernel_ok = kernel_version(release) >= (6, 9);
    let root = rustix::process::geteuid().is_root();
    json!({
        "Kernel": kernel_ok,
        "Usable": kernel_ok && root,
        "Why": match (kernel_ok, root) {
            (true, true) => "available: upper files are read and written by the kernel",
            (true, false) => "needs root (CAP_SYS_ADMIN): every read goes through the daemon",
            (false, _) => "needs Linux 6.9 or later: every read goes through the daemon",
        },
    })
}

pub fn version(a: &VersionArgs, out: &mut dyn Write) -> Result<()> {
    let release = kernel_release();
    let v = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Commit": env!("LAYERFS_GIT_COMMIT"),
        "Fuser": FUSER_VERSION,
        "FuseProtocol": FUSE_PROTOCOL,
        "Kernel": release,
        "Passthrough": passthrough(&release),
        "Rust": option_env!("CARGO_PKG_RUST_VERSION").filter(|s| !s.is_empty()),
    });
    if let Some(f) = &a.format {
        return emit_formatted(out, f, &[v], &super::template::default_header);
    }
    let text = format!(
        "layerfs {}\n commit:        {}\n fuser:         {} (FUSE protocol {})\n kernel:        {}\n \
         passthrough:   {}\n",
        v["Version"].as_str().unwrap_or(""),
        v["Commit"].as_str().unwrap_or(""),
        FUSER_VERSION,
        FUSE_PROTOCOL,
        v["Kernel"].as_str().unwrap_or(""),
        v["Passthrough"]["Why"].as_str().unwrap_or(""),
    );
    emit(out, &text)
}

fn filesystems() -> String {
    std::fs::read_to_string("/proc/filesystems").unwrap_or_default()
}

fn which(prog: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// What this machine offers the driver.
fn features() -> Value {
    let fs = filesystems();
    let has_fs = |name: &str| {
        fs.lines()
            .any(|l| l.split_whitespace().last() == Some(name))
    };
    let fuse_dev = std::fs::metadata("/dev/fuse").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        format!("{:o}", m.mode() & 0o7777)
    });
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let allow_other = std::fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "user_allow_other");
    json!({
        "Fuse": has_fs("fuse"),
        "FuseDevice": fuse_dev,
        "Overlay": has_fs("overlay"),
        "Fusermount3": which("fusermount3"),
        "UserNamespaces": userns,
        "UserAllowOther": allow_other,
        "Passthrough": passthrough(&kernel_release()),
    })
}

pub fn info(root: &Path, a: &InfoArgs, out: &mut dyn Write) -> Result<()> {
    let store = Store::open(root, LockMode::Shared)?;
    let images = store.images()?;
    let layers = store.layer_ids()?;
    let layer_bytes: u64 = layers
        .iter()
        .filter_map(|l| store.layer_meta(l).ok())
        .map(|m| m.size)
        .sum();
    let v = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Kernel": kernel_release(),
        "Store": {
            "Root": root,
            "Images": images.len(),
            "Layers": layers.len(),
            "LayersSize": layer_bytes,
            "Containers": store.container_count(),
        },
        "RuntimeDir": daemon::run_dir(),
        "Features": features(),
    });
    if let Some(f) = &a.format {
        return emit_formatted(out, f, &[v], &super::template::default_header);
    }
    let yes = |b: &Value| {
        if b.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let f = &v["Features"];
    let text = format!(
        "Store:\n Root:            {}\n Images:          {}\n Layers:          {} ({})\n \
         Containers:      {}\nRuntime dir:       {}\nKernel:            {}\nFeatures:\n \
         FUSE:            {} (/dev/fuse {})\n overlay:         {}\n fusermount3:     {}\n \
         user namespaces: {}\n user_allow_other: {}\n passthrough:     {}\n",
        root.display(),
        images.len(),
        layers.len(),
        human_size(layer_bytes),
        store.container_count(),
        daemon::run_dir().display(),
        v["Kernel"].as_str().unwrap_or(""),
        yes(&f["Fuse"]),
        f["FuseDevice"]
            .as_str()
            .map_or("missing".into(), |m| format!("mode {m}")),
        yes(&f["Overlay"]),
        f["Fusermount3"]
            .as_str()
            .unwrap_or("not found (apt-get install fuse3)"),
        yes(&f["UserNamespaces"]),
        yes(&f["UserAllowOther"]),
        f["Passthrough"]["Why"].as_str().unwrap_or(""),
    );
    emit(out, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), (6, 18));
        assert_eq!(kernel_version("5.10.0-28-amd64"), (5, 10));
        assert_eq!(kernel_version("garbage"), (0, 0));
        assert_eq!(passthrough("5.15.0")["Kernel"], false);
    }
}
