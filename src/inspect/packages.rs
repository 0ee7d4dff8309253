//! Installed packages, parsed from an image's own files (no package manager run), and their
//! differences between two stacks.
//!
//! - dpkg: `var/lib/dpkg/status` (and distroless's `var/lib/dpkg/status.d/*`), RFC 822
//!   paragraphs; a package counts when its `Status` ends in `installed`; sizes from
//!   `Installed-Size` (KiB).
//! - apk: `lib/apk/db/installed`, paragraphs of `X:value` lines (`P` name, `V` version, `I`
//!   installed bytes).
//! - rpm: its database is Berkeley DB or SQLite (`var/lib/rpm/Packages`, `rpmdb.sqlite`),
//!   which layerfs does not read; its presence is reported as a note instead.
use std::collections::BTreeMap;

use serde::Serialize;

use super::diff::ChangeKind;
use super::target::{Target, top_first};
use crate::container::lower::{Found, LayerStack};
use crate::{Error, Result};

pub const DPKG_STATUS: &str = "var/lib/dpkg/status";
pub const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d";
pub const APK_INSTALLED: &str = "lib/apk/db/installed";
const RPM_DBS: &[&str] = &[
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/Packages",
];
/// Package databases larger than this are refused (a hostile image could hold anything).
const MAX_DB: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Installed size in bytes, when the database gives it.
    pub size: Option<u64>,
    /// `dpkg` or `apk`.
    pub manager: &'static str,
}

/// Packages of a dpkg status file (installed ones only), by name (`name:arch` when the same
/// name is installed for several architectures).
pub fn parse_dpkg(text: &str, out: &mut BTreeMap<String, Package>) {
    for para in text.split("\n\n") {
        let mut f: BTreeMap<&str, &str> = BTreeMap::new();
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                f.insert(k.trim(), v.trim());
            }
        }
        let (Some(name), Some(version)) = (f.get("Package"), f.get("Version")) else {
            continue;
        };
        // "install ok installed"; "deinstall ok config-files" etc. are not installed.
        let installed = f
            .get("Status")
            .is_none_or(|s| s.split_whitespace().last() == Some("installed"));
        if !installed {
            continue;
        }
        let size = f
            .get("Installed-Size")
            .and_then(|s| s.parse::<u64>().ok())
            .map(|k| k * 1024);
        let p = Package {
            name: name.to_string(),
            version: version.to_string(),
            size,
            manager: "dpkg",
        };
        let key = match (out.get(*name), f.get("Architecture")) {
            (Some(_), Some(arch)) => format!("{name}:{arch}"),
            _ => name.to_string(),
        };
        out.insert(key, p);
    }
}

/// Packages of an apk `installed` database.
pub fn parse_apk(text: &str, out: &mut BTreeMap<String, Package>) {
    for para in text.split("\n\n") {
        let (mut name, mut version, mut size) = (None, None, None);
        for line in para.lines() {
            match line.split_once(':') {
                Some(("P", v)) => name = Some(v),
                Some(("V", v)) => version = Some(v),
                Some(("I", v)) => size = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(n), Some(v)) = (name, version) {
            out.insert(
                n.to_string(),
                Package {
                    name: n.to_string(),
                    version: v.to_string(),
                    size,
                    manager: "apk",
                },
            );
        }
    }
}

/// The packages a stack shows, and notes (an rpm database that was not read).
pub fn packages_of(t: &Target) -> Result<(BTreeMap<String, Package>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut notes = Vec::new();
    if t.layers.is_empty() {
        return Ok((out, notes));
    }
    let stack = LayerStack::open(&top_first(t))?;
    if let Some(text) = read_text(&stack, DPKG_STATUS)? {
        parse_dpkg(&text, &mut out);
    }
    if let Found::Dir { layers, .. } = stack.lookup_path(DPKG_STATUS_D.as_bytes())? {
        let dir = std::ffi::CString::new(DPKG_STATUS_D)
            .map_err(|_| Error::Sys(rustix::io::Errno::INVAL))?;
        for name in stack.list(&layers, &dir)? {
            let rel = format!("{DPKG_STATUS_D}/{}", name.to_string_lossy());
            if let Some(text) = read_text(&stack, &rel)? {
                parse_dpkg(&text, &mut out);
            }
        }
    }
    if let Some(text) = read_text(&stack, APK_INSTALLED)? {
        parse_apk(&text, &mut out);
    }
    for db in RPM_DBS {
        if !matches!(stack.lookup_path(db.as_bytes())?, Found::Absent) {
            notes.push(format!(
                "{}: /{db} is an rpm database (Berkeley DB or SQLite), which layerfs does not \
                 read; its packages are not listed",
                t.label
            ));
        }
    }
    Ok((out, notes))
}

/// The contents of a regular file of the merged stack, if it exists.
fn read_text(stack: &LayerStack, rel: &str) -> Result<Option<String>> {
    let Found::NonDir { layer, st } = stack.lookup_path(rel.as_bytes())? else {
        return Ok(None);
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(None);
    }
    let shown = stack.path(layer).join(rel);
    if st.st_size as u64 > MAX_DB {
        return Err(Error::Format(format!(
            "{}: package database larger than {MAX_DB} bytes; refusing to read it",
            shown.display()
        )));
    }
    let c = std::ffi::CString::new(rel).map_err(|_| Error::Sys(rustix::io::Errno::INVAL))?;
    let bytes = super::fsread::read_beneath(stack.fd(layer), &c, MAX_DB)
        .map_err(|e| Error::io("read", &shown, e))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PackageChange {
    pub kind: ChangeKind,
    pub name: String,
    pub manager: &'static str,
    pub before: Option<String>,
    pub after: Option<String>,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

/// Added, removed and changed (other version) packages, by name.
pub fn diff_packages(
    a: &BTreeMap<String, Package>,
    b: &BTreeMap<String, Package>,
) -> Vec<PackageChange> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for n in names {
        let (pa, pb) = (a.get(n), b.get(n));
        let kind = match (pa, pb) {
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Deleted,
            (Some(x), Some(y)) if x.version != y.version || x.manager != y.manager => {
                ChangeKind::Modified
            }
            _ => continue,
        };
        let Some(any) = pb.or(pa) else { continue };
        out.push(PackageChange {
            kind,
            name: n.clone(),
            manager: any.manager,
            before: pa.map(|p| p.version.clone()),
            after: pb.map(|p| p.version.clone()),
            size_before: pa.and_then(|p| p.size),
            size_after: pb.and_then(|p| p.size),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_installed_only() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1.0\nInstalled-Size: 2\n\
                    Description: x\n continued: line\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 2\n\n\
                    Package: a\nStatus: install ok installed\nArchitecture: i386\nVersion: 1.0\n";
        let mut m = BTreeMap::new();
        parse_dpkg(text, &mut m);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "a:i386"]);
        assert_eq!(m["a"].size, Some(2048));
    }

    #[test]
    fn apk_paragraphs() {
        let mut m = BTreeMap::new();
        parse_apk(
            "C:Q1x=\nP:musl\nV:1.2.5-r0\nI:100\n\nP:busybox\nV:1.36\n",
            &mut m,
        );
        assert_eq!(m["musl"].version, "1.2.5-r0");
        assert_eq!(m["musl"].size, Some(100));
        assert_eq!(m["busybox"].size, None);
    }
}
