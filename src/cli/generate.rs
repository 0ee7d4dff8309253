//! Man pages and shell completions, generated from the clap definitions (`layerfs generate`).
//!
//! Everything here takes a `clap::Command` (the caller passes `Cli::command()`), so it follows
//! the command line wherever its types live. Pages: `layerfs.1` plus `layerfs-SUB.1` for every
//! visible subcommand; `layerfs-mount.1` also documents the `-o` options
//! ([`crate::mountopts::DOCUMENTED`]).
use std::io::Write;
use std::path::{Path, PathBuf};

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::{Error, Result};

/// The shells `layerfs generate completions` knows.
pub use clap_complete::Shell;

/// `layerfs generate ...`: install-time files, made from these clap definitions.
#[derive(Debug, clap::Subcommand)]
pub enum GenerateCommand {
    /// Write layerfs.1 and one layerfs-SUBCOMMAND.1 per subcommand into DIR
    Man { dir: PathBuf },
    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

pub fn run(cmd: GenerateCommand) -> Result<()> {
    use clap::CommandFactory;
    match cmd {
        GenerateCommand::Man { dir } => {
            let mut out = std::io::stdout().lock();
            for p in man_pages(super::Cli::command(), &dir)? {
                writeln!(out, "{}", p.display()).map_err(|e| Error::io("write", "<stdout>", e))?;
            }
            Ok(())
        }
        GenerateCommand::Completions { shell } => {
            completions(super::Cli::command(), shell, &mut std::io::stdout().lock())
        }
    }
}

/// Writes every man page into `dir` (created if missing); returns the files written.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let subs: Vec<clap::Command> = visible_subcommands(&cmd);
    let see_also: Vec<String> = subs
        .iter()
        .map(|s| format!("layerfs-{}", s.get_name()))
        .collect();
    write_page(dir, &cmd, &see_also, &mut written)?;
    for sub in subs {
        write_page(dir, &sub, &["layerfs".to_owned()], &mut written)?;
    }
    Ok(written)
}

fn visible_subcommands(cmd: &clap::Command) -> Vec<clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect()
}

fn write_page(
    dir: &Path,
    cmd: &clap::Command,
    see_also: &[String],
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let man = Man::new(cmd.clone()).manual("layerfs manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    render(&man, cmd, see_also, &mut page).map_err(|e| Error::io("render", &path, e))?;
    std::fs::write(&path, page).map_err(|e| Error::io("write", &path, e))?;
    written.push(path);
    Ok(())
}

fn render(
    man: &Man,
    cmd: &clap::Command,
    see_also: &[String],
    w: &mut dyn Write,
) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    if cmd.get_name() == "mount" {
        w.write_all(mount_options_section().to_roff().as_bytes())?;
    }
    w.write_all(see_also_section(see_also).to_roff().as_bytes())?;
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// `MOUNT OPTIONS`: one tagged paragraph per `-o` option.
fn mount_options_section() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["MOUNT OPTIONS"]);
    r.text([roman(
        "Options are given with -o, comma separated, repeatable; later ones win. \
         The same options work as the fourth field of /etc/fstab with type fuse.layerfs, \
         and with mount -t fuse.layerfs layerfs MOUNTPOINT -o OPTIONS.",
    )]);
    for (name, what) in crate::mountopts::DOCUMENTED {
        r.control("TP", []);
        r.text([bold(*name)]);
        r.text([roman(*what)]);
    }
    r
}

fn see_also_section(pages: &[String]) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    let mut inlines = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(p.as_str()));
        inlines.push(roman("(1)"));
    }
    if !pages.is_empty() {
        inlines.push(roman(", "));
    }
    inlines.push(bold("mount.fuse3"));
    inlines.push(roman("(8), "));
    inlines.push(italic("Documentation/filesystems/overlayfs.rst"));
    r.text(inlines);
    r
}

/// Writes the completion script for `shell` (bash, zsh, fish, ...).
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) -> Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "layerfs", &mut buf);
    out.write_all(&buf)
        .map_err(|e| Error::io("write", "<stdout>", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_page_per_visible_subcommand_and_mount_options_documented() {
        let dir = tempfile::tempdir().unwrap();
        let files = man_pages(crate::cli::Cli::command(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "layerfs.1",
            "layerfs-mount.1",
            "layerfs-load.1",
            "layerfs-bench.1",
        ] {
            assert!(
                names.contains(&want.to_owned()),
                "{want} missing: {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let mount = std::fs::read_to_string(dir.path().join("layerfs-mount.1")).unwrap();
        assert!(mount.contains(".SH \"MOUNT OPTIONS\""), "{mount}");
        for (name, _) in crate::mountopts::DOCUMENTED {
            assert!(
                mount.contains(&format!("\\fB{}", name.replace('-', "\\-"))),
                "{name}"
            );
        }
        let top = std::fs::read_to_string(dir.path().join("layerfs.1")).unwrap();
        assert!(top.contains("layerfs\\-mount"), "{top}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(crate::cli::Cli::command(), shell, &mut out).unwrap();
            let s = String::from_utf8(out).unwrap();
            for sub in ["mount", "umount", "load", "save", "bench", "pull"] {
                assert!(s.contains(sub), "{shell}: {sub} missing");
            }
        }
    }
}
