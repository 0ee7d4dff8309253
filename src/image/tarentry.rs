//! What a layer tar entry means, decided without touching the disk.
//!
//! [`classify`] turns one parsed entry ([`RawEntry`]: header fields after GNU long names and PAX
//! records are applied) into an [`Action`] in the overlay on-disk vocabulary:
//!
//! | tar entry                    | action                                             |
//! |------------------------------|----------------------------------------------------|
//! | `dir/.wh.NAME`               | `Whiteout(dir/NAME)`: a char device 0/0            |
//! | `dir/.wh..wh..opq`           | `Opaque(dir)`: `trusted.overlay.opaque=y` on dir   |
//! | `dir/.wh..wh.OTHER`          | skipped (aufs bookkeeping)                         |
//! | `./` or `/`                  | `Root(meta)`: attributes of the layer root         |
//! | a non-directory at the root  | refused: it would replace the layer root           |
//! | `/abs/path`                  | taken relative to the layer root (as GNU tar does) |
//! | `a/../b`                     | `b`; a `..` that leaves the root is refused        |
//!
//! Overlay control xattrs (`trusted.overlay.*`, `user.overlay.*`) in a layer are dropped: only
//! the whiteout markers above may produce them, so a layer cannot forge a redirect or origin.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// PAX record prefix carrying an extended attribute.
pub const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Overlay control xattr namespaces a layer may not set directly.
pub const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// A path relative to the layer root with only normal components; empty means the root itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(PathBuf);

impl RelPath {
    /// Normalises a tar path: leading `/` dropped, `.` and empty components skipped, `..`
    /// applied lexically and refused when it would leave the root.
    pub fn normalize(raw: &[u8]) -> Result<Self, String> {
        let mut out: Vec<&[u8]> = Vec::new();
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    if out.pop().is_none() {
                        return Err("path leaves the layer root through '..'".into());
                    }
                }
                c => out.push(c),
            }
        }
        let mut p = PathBuf::new();
        for c in out {
            p.push(OsStr::from_bytes(c));
        }
        Ok(RelPath(p))
    }

    pub fn root() -> Self {
        RelPath(PathBuf::new())
    }
    pub fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }
    pub fn as_path(&self) -> &Path {
        &self.0
    }
    /// The parent (root for a top-level name); `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.parent().map(|p| RelPath(p.to_path_buf()))
    }
    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.0.file_name()
    }
    pub fn join(&self, name: &OsStr) -> RelPath {
        RelPath(self.0.join(name))
    }
    /// Components, for walking down from the root.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0.iter()
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_root() {
            f.write_str("/")
        } else {
            write!(f, "/{}", self.0.display())
        }
    }
}

/// Seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

impl Mtime {
    /// Parses a PAX `mtime` value: `SECONDS[.FRACTION]`, possibly negative.
    pub fn parse_pax(v: &str) -> Option<Mtime> {
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        let sec: i64 = int.parse().ok()?;
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits = frac.as_bytes().iter().take(9).map(|b| u32::from(b - b'0'));
        let mut nsec = 0u32;
        for _ in 0..9 {
            nsec = nsec * 10 + digits.next().unwrap_or(0);
        }
        // A negative time with a fraction counts down from the integer part.
        if int.starts_with('-') && nsec > 0 {
            return Some(Mtime {
                sec: sec - 1,
                nsec: 1_000_000_000 - nsec,
            });
        }
        Some(Mtime { sec, nsec })
    }
}

/// Ownership, permissions (12 bits incl. setuid/setgid/sticky), time and xattrs of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Tar entry types the layer format uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawType {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// GNU sparse files: refused (never produced by image builders).
    Sparse,
    /// Anything else (volume labels, global PAX headers reaching here, unknown letters).
    Other(u8),
}

impl RawType {
    pub fn from_byte(b: u8) -> Self {
        match b {
            b'0' | b'\0' | b'7' => RawType::File,
            b'1' => RawType::HardLink,
            b'2' => RawType::Symlink,
            b'3' => RawType::Char,
            b'4' => RawType::Block,
            b'5' => RawType::Dir,
            b'6' => RawType::Fifo,
            b'S' => RawType::Sparse,
            o => RawType::Other(o),
        }
    }
}

/// One tar entry after long names and PAX records are applied; its data follows in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: RawType,
    pub size: u64,
    pub dev: (u32, u32),
    pub meta: Meta,
}

/// What to create; hard link targets are layer-relative like the entry paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: Vec<u8> },
    HardLink { target: RelPath },
    Fifo,
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
}

/// The decision for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A directory entry naming the layer root: its attributes.
    Root(Meta),
    Create {
        path: RelPath,
        kind: Kind,
        meta: Meta,
    },
    /// Hide `path` of the lower layers: a char device 0/0 in overlay format.
    Whiteout(RelPath),
    /// Hide everything the lower layers have below this directory.
    Opaque(RelPath),
    /// Nothing to write; the reason is logged.
    Skip(&'static str),
}

/// Decides what an entry means. The error says why the entry is refused (no path prefix: the
/// caller names the layer and entry).
pub fn classify(mut e: RawEntry) -> Result<Action, String> {
    let path = RelPath::normalize(&e.path)?;
    e.meta.xattrs.retain(|(name, _)| !is_overlay_xattr(name));
    if let Some(name) = path.file_name().map(OsStrExt::as_bytes)
        && let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes())
    {
        let parent = path.parent().unwrap_or_else(RelPath::root);
        if name == OPAQUE_MARKER.as_bytes() {
            return Ok(Action::Opaque(parent));
        }
        if rest.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Ok(Action::Skip("aufs metadata entry"));
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            return Err("whiteout names no file".into());
        }
        return Ok(Action::Whiteout(parent.join(OsStr::from_bytes(rest))));
    }
    let kind = match e.kind {
        RawType::Dir => Kind::Dir,
        RawType::File => Kind::File { size: e.size },
        RawType::Symlink if e.link.is_empty() => return Err("symlink with an empty target".into()),
        RawType::Symlink => Kind::Symlink { target: e.link },
        RawType::HardLink => {
            let target =
                RelPath::normalize(&e.link).map_err(|m| format!("hard link target: {m}"))?;
            if target.is_root() {
                return Err("hard link to the layer root".into());
            }
            Kind::HardLink { target }
        }
        RawType::Fifo => Kind::Fifo,
        RawType::Char => Kind::Char {
            major: e.dev.0,
            minor: e.dev.1,
        },
        RawType::Block => Kind::Block {
            major: e.dev.0,
            minor: e.dev.1,
        },
        RawType::Sparse => return Err("GNU sparse files are not supported in layers".into()),
        RawType::Other(_) => return Ok(Action::Skip("unsupported tar entry type")),
    };
    if path.is_root() {
        return match kind {
            Kind::Dir => Ok(Action::Root(e.meta)),
            _ => Err("entry would replace the layer root".into()),
        };
    }
    Ok(Action::Create {
        path,
        kind,
        meta: e.meta,
    })
}

fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES
        .iter()
        .any(|p| name.starts_with(p.as_bytes()))
}

/// One PAX record: (key, value).
pub type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Splits PAX extended-header data into (key, value) records. Each record is
/// `LEN KEY=VALUE\n` where LEN counts the whole record, so a value may hold any byte, a newline
/// included (binary xattrs such as `security.capability` do); the tar crate's own parser
/// splits on newlines and rejects those.
pub fn pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record: no length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record: bad length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed PAX record: length does not match".into());
        }
        let kv = &data[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("malformed PAX record: no '='")?;
        out.push((&kv[..eq], &kv[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// Applies the PAX records of an extended header to the entry that follows it.
pub fn apply_pax(records: &[u8], e: &mut RawEntry) -> Result<(), String> {
    for (key, val) in pax_records(records)? {
        let num = || -> Result<u64, String> {
            std::str::from_utf8(val)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad PAX {} value", String::from_utf8_lossy(key)))
        };
        match key {
            b"path" => e.path = val.to_vec(),
            b"linkpath" => e.link = val.to_vec(),
            b"uid" => e.meta.uid = u32::try_from(num()?).map_err(|_| "PAX uid too large")?,
            b"gid" => e.meta.gid = u32::try_from(num()?).map_err(|_| "PAX gid too large")?,
            b"size" if num()? != e.size => {
                return Err("PAX size differs from the header size (unsupported)".into());
            }
            b"mtime" => {
                e.meta.mtime = std::str::from_utf8(val)
                    .ok()
                    .and_then(Mtime::parse_pax)
                    .ok_or("bad PAX mtime value")?;
            }
            k if k.starts_with(PAX_XATTR_PREFIX.as_bytes()) => {
                let name = &k[PAX_XATTR_PREFIX.len()..];
                e.meta.xattrs.retain(|(n, _)| n != name);
                e.meta.xattrs.push((name.to_vec(), val.to_vec()));
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err("GNU sparse files are not supported in layers".into());
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(path: &str, kind: RawType) -> RawEntry {
        RawEntry {
            path: path.as_bytes().to_vec(),
            link: Vec::new(),
            kind,
            size: 0,
            dev: (0, 0),
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
        }
    }
    fn rel(s: &str) -> RelPath {
        RelPath::normalize(s.as_bytes()).unwrap()
    }
    fn create(path: &str, kind: Kind) -> Action {
        Action::Create {
            path: rel(path),
            kind,
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
        }
    }

    #[test]
    fn normalize_table() {
        let rows = [
            ("a/b", Some("a/b")),
            ("/a/b", Some("a/b")),
            ("//a//./b/", Some("a/b")),
            ("./a", Some("a")),
            ("a/../b", Some("b")),
            ("a/b/../../c", Some("c")),
            ("./", Some("")),
            ("/", Some("")),
            ("", Some("")),
            ("..", None),
            ("../x", None),
            ("a/../../x", None),
            ("/../etc/passwd", None),
        ];
        for (input, want) in rows {
            let got = RelPath::normalize(input.as_bytes()).ok();
            assert_eq!(got, want.map(rel_unchecked), "{input:?}");
        }
    }
    fn rel_unchecked(s: &str) -> RelPath {
        RelPath(PathBuf::from(s))
    }

    #[test]
    fn classify_table() {
        let link = |p: &str, k: RawType, l: &str| RawEntry {
            link: l.as_bytes().to_vec(),
            ..raw(p, k)
        };
        let dev = |p: &str, k: RawType| RawEntry {
            dev: (1, 3),
            ..raw(p, k)
        };
        let rows: Vec<(RawEntry, Result<Action, ()>)> = vec![
            (
                raw("a/.wh.b", RawType::File),
                Ok(Action::Whiteout(rel("a/b"))),
            ),
            (
                raw(".wh.top", RawType::File),
                Ok(Action::Whiteout(rel("top"))),
            ),
            (
                raw("a/.wh..wh..opq", RawType::File),
                Ok(Action::Opaque(rel("a"))),
            ),
            (
                raw(".wh..wh..opq", RawType::File),
                Ok(Action::Opaque(RelPath::root())),
            ),
            (
                raw("a/.wh..wh.plnk", RawType::Dir),
                Ok(Action::Skip("aufs metadata entry")),
            ),
            (raw("a/.wh.", RawType::File), Err(())),
            (raw("a/.wh...", RawType::File), Err(())),
            (
                raw("x.wh.y", RawType::File),
                Ok(create("x.wh.y", Kind::File { size: 0 })),
            ),
            (
                raw("./", RawType::Dir),
                Ok(Action::Root(raw("", RawType::Dir).meta)),
            ),
            (raw("/", RawType::File), Err(())),
            (raw("a/..", RawType::Symlink), Err(())),
            (raw("../x", RawType::File), Err(())),
            (
                raw("/etc/x", RawType::File),
                Ok(create("etc/x", Kind::File { size: 0 })),
            ),
            (raw("d/", RawType::Dir), Ok(create("d", Kind::Dir))),
            (raw("p", RawType::Fifo), Ok(create("p", Kind::Fifo))),
            (
                dev("c", RawType::Char),
                Ok(create("c", Kind::Char { major: 1, minor: 3 })),
            ),
            (
                dev("b", RawType::Block),
                Ok(create("b", Kind::Block { major: 1, minor: 3 })),
            ),
            (
                link("s", RawType::Symlink, "/etc/../../x"),
                Ok(create(
                    "s",
                    Kind::Symlink {
                        target: b"/etc/../../x".to_vec(),
                    },
                )),
            ),
            (link("s", RawType::Symlink, ""), Err(())),
            (
                link("h", RawType::HardLink, "/a/b"),
                Ok(create("h", Kind::HardLink { target: rel("a/b") })),
            ),
            (link("h", RawType::HardLink, "../etc/passwd"), Err(())),
            (link("h", RawType::HardLink, "./"), Err(())),
            (raw("sp", RawType::Sparse), Err(())),
            (
                raw("v", RawType::Other(b'V')),
                Ok(Action::Skip("unsupported tar entry type")),
            ),
        ];
        for (entry, want) in rows {
            let name = String::from_utf8_lossy(&entry.path).into_owned();
            let got = classify(entry).map_err(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn overlay_xattrs_are_dropped() {
        let mut e = raw("d", RawType::Dir);
        e.meta.xattrs = vec![
            (b"trusted.overlay.redirect".to_vec(), b"/etc".to_vec()),
            (b"user.overlay.opaque".to_vec(), b"y".to_vec()),
            (b"user.keep".to_vec(), b"1".to_vec()),
        ];
        let Ok(Action::Create { meta, .. }) = classify(e) else {
            panic!()
        };
        assert_eq!(meta.xattrs, vec![(b"user.keep".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn pax_records() {
        let mut recs = Vec::new();
        for (k, v) in [
            ("path", "long/name"),
            ("linkpath", "tgt"),
            ("uid", "70000"),
            ("gid", "5"),
            ("mtime", "1700000000.5"),
            ("SCHILY.xattr.user.a", "v"),
            ("size", "0"),
        ] {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            if format!("{len}{body}").len() != len {
                len += 1;
            }
            recs.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut e = raw("short", RawType::Symlink);
        apply_pax(&recs, &mut e).unwrap();
        assert_eq!(e.path, b"long/name");
        assert_eq!(e.link, b"tgt");
        assert_eq!((e.meta.uid, e.meta.gid), (70000, 5));
        assert_eq!(
            e.meta.mtime,
            Mtime {
                sec: 1_700_000_000,
                nsec: 500_000_000
            }
        );
        assert_eq!(e.meta.xattrs, vec![(b"user.a".to_vec(), b"v".to_vec())]);
        e.size = 1;
        assert!(
            apply_pax(&recs, &mut e).is_err(),
            "size disagreement accepted"
        );
    }

    #[test]
    fn pax_record_values_may_hold_newlines() {
        let recs = b"27 SCHILY.xattr.user.b=a\nb\n12 path=x/y\n";
        assert_eq!(
            super::pax_records(recs).unwrap(),
            vec![
                (&b"SCHILY.xattr.user.b"[..], &b"a\nb"[..]),
                (&b"path"[..], &b"x/y"[..])
            ]
        );
        // Trailing NUL padding ends the records.
        assert_eq!(super::pax_records(b"8 a=bcd\n\0\0").unwrap().len(), 1);
        for bad in [&b"x a=b\n"[..], b"99 a=b\n", b"7 ab\n", b"6 a=bc", b"3 a\n"] {
            assert!(super::pax_records(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pax_mtime() {
        assert_eq!(Mtime::parse_pax("12"), Some(Mtime { sec: 12, nsec: 0 }));
        assert_eq!(
            Mtime::parse_pax("1.000000001"),
            Some(Mtime { sec: 1, nsec: 1 })
        );
        assert_eq!(
            Mtime::parse_pax("-1.5"),
            Some(Mtime {
                sec: -2,
                nsec: 500_000_000
            })
        );
        assert_eq!(Mtime::parse_pax("x"), None);
        assert_eq!(Mtime::parse_pax("1.x"), None);
    }
}
