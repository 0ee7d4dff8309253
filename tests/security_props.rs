//! Property tests (fixed seed, fixed case count, a kept corpus) for the two places where
//! outside input enters the driver: the `-o` option parser, and the names the kernel hands
//! to the overlay (through the overlay API, no mount). Issue 9: names with `/`, NUL, `.`,
//! `..`, 255- and 256-byte names and `.wh.` prefixes must be refused with the right errno,
//! and nothing may appear outside the upper layer.
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use layerfs::mountopts::MountOptions;
use layerfs::overlay::dirops::NewKind;
use layerfs::overlay::node::NodeId;
use layerfs::overlay::{Caller, Config as OvConfig, Overlay};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestRunner};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5ec0_0009),
        // Failures found are kept beside this file (proptest-regressions/) and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

// ---- the -o parser ---------------------------------------------------------------------

/// Escapes a path for `lowerdir=` (`\`, `:`, `,` and `"` are special) or, with
/// `colon_ok`, for `upperdir=`/`workdir=`.
fn escape(p: &str, colon_ok: bool) -> String {
    let mut s = String::new();
    for c in p.chars() {
        if matches!(c, '\\' | ',' | '"') || (c == ':' && !colon_ok) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

fn path_str() -> impl Strategy<Value = String> {
    "[a-z/:,\\\\\" =äx]{1,12}"
}

#[test]
fn option_paths_round_trip_through_escaping() {
    let strategy = (
        proptest::collection::vec(path_str(), 1..4),
        proptest::option::of(path_str()),
        proptest::option::of(path_str()),
        proptest::sample::subsequence(
            vec!["ro", "nodev", "nosuid", "allow_other", "volatile"],
            0..3,
        ),
    );
    let mut runner = TestRunner::new(config(512));
    runner
        .run(&strategy, |(lowers, upper, work, flags)| {
            let mut items = vec![format!(
                "lowerdir={}",
                lowers
                    .iter()
                    .map(|l| escape(l, false))
                    .collect::<Vec<_>>()
                    .join(":")
            )];
            if let Some(u) = &upper {
                items.push(format!("upperdir={}", escape(u, true)));
            }
            if let Some(w) = &work {
                items.push(format!("workdir={}", escape(w, true)));
            }
            items.extend(flags.iter().map(|f| f.to_string()));
            let arg = items.join(",");
            let o = MountOptions::parse(&[&arg])
                .map_err(|e| TestCaseError::fail(format!("{arg}: {e}")))?;
            let want: Vec<PathBuf> = lowers.iter().map(PathBuf::from).collect();
            prop_assert_eq!(&o.lowerdirs, &want, "{}", arg);
            prop_assert_eq!(o.upperdir, upper.map(PathBuf::from), "{}", arg);
            prop_assert_eq!(o.workdir, work.map(PathBuf::from), "{}", arg);
            prop_assert_eq!(o.read_only, flags.contains(&"ro"));
            prop_assert_eq!(o.fsync, !flags.contains(&"volatile"));
            Ok(())
        })
        .unwrap();
}

/// Any input: options or an error, never a panic; a parsed lowerdir list has no empty layer.
fn parse_anything(arg: &str) -> Result<(), TestCaseError> {
    match MountOptions::parse(&[arg]) {
        Ok(o) => {
            prop_assert!(
                o.lowerdirs.iter().all(|l| !l.as_os_str().is_empty()),
                "{arg}"
            );
            prop_assert!(o.threads.is_none_or(|n| (1..=64).contains(&n)), "{arg}");
            prop_assert!((0.0..=86400.0).contains(&o.timeout_secs), "{arg}");
        }
        Err(e) => prop_assert!(!e.to_string().is_empty(), "{arg}"),
    }
    Ok(())
}

#[test]
fn option_parser_takes_any_input() {
    let corpus = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/mount-options.txt"),
    )
    .unwrap();
    for line in corpus.lines().filter(|l| !l.starts_with('#')) {
        parse_anything(line).unwrap();
    }
    let mut runner = TestRunner::new(config(2048));
    let strategy = prop_oneof![
        ".{0,40}",
        "[a-z_=:,\\\\\"x-]{0,40}",
        proptest::collection::vec(
            prop_oneof![
                Just("lowerdir=".to_string()),
                Just("upperdir=".to_string()),
                Just("workdir=".to_string()),
                Just("threads=".to_string()),
                Just("timeout=".to_string()),
                Just("context=\"".to_string()),
                Just(",".to_string()),
                Just(":".to_string()),
                Just("\\".to_string()),
                Just("\"".to_string()),
                "[a-z0-9./]{1,5}"
            ],
            0..12
        )
        .prop_map(|v| v.concat()),
    ];
    runner.run(&strategy, |s| parse_anything(&s)).unwrap();
}

// ---- names through the overlay API -------------------------------------------------------

/// The names the kernel could never send, and the edge cases it can.
fn name() -> impl Strategy<Value = OsString> {
    let b = |v: &[u8]| OsString::from_vec(v.to_vec());
    prop_oneof![
        3 => "[a-c]{1,2}".prop_map(OsString::from),
        1 => Just(b(b"")),
        1 => Just(b(b".")),
        1 => Just(b(b"..")),
        1 => Just(b(b"../outside")),
        1 => Just(b(b"a/b")),
        1 => Just(b(b"/etc")),
        1 => Just(b(b"a\0b")),
        1 => Just(b(b".wh.a")),
        1 => Just(b(b".wh..wh..opq")),
        1 => Just(b(&[b'n'; 255])),
        1 => Just(b(&[b'n'; 256])),
        1 => Just(b(&[0xff, 0xfe])),
    ]
}

#[derive(Debug, Clone)]
enum NameOp {
    Create(OsString),
    Mkdir(OsString),
    Symlink(OsString),
    Lookup(OsString),
    Unlink(OsString),
    Rmdir(OsString),
    Rename(OsString, OsString),
    Link(OsString, OsString),
}

fn name_op() -> impl Strategy<Value = NameOp> {
    prop_oneof![
        name().prop_map(NameOp::Create),
        name().prop_map(NameOp::Mkdir),
        name().prop_map(NameOp::Symlink),
        name().prop_map(NameOp::Lookup),
        name().prop_map(NameOp::Unlink),
        name().prop_map(NameOp::Rmdir),
        (name(), name()).prop_map(|(a, b)| NameOp::Rename(a, b)),
        (name(), name()).prop_map(|(a, b)| NameOp::Link(a, b)),
    ]
}

/// How the overlay must treat a name: the errno of a malformed one, else `None`.
fn malformed(n: &OsStr) -> Option<i32> {
    let b = n.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        Some(libc::EINVAL)
    } else if b.len() > 255 {
        Some(libc::ENAMETOOLONG)
    } else {
        None
    }
}

fn is_wh(n: &OsStr) -> bool {
    n.as_bytes().starts_with(b".wh.")
}

/// The model: names in the mount root, true for directories.
type Model = BTreeMap<OsString, bool>;

/// The errno a creation of `n` must fail with, if any.
fn create_err(m: &Model, n: &OsStr) -> Option<i32> {
    malformed(n)
        .or_else(|| is_wh(n).then_some(libc::EINVAL))
        .or_else(|| m.contains_key(n).then_some(libc::EEXIST))
}

/// The errno naming an existing `n` must fail with, if any.
fn existing_err(m: &Model, n: &OsStr) -> Option<i32> {
    malformed(n).or_else(|| (is_wh(n) || !m.contains_key(n)).then_some(libc::ENOENT))
}

fn errno<T>(r: layerfs::Result<T>) -> Option<i32> {
    r.err().map(|e| e.errno())
}

/// Applies `op` to the overlay and the model; the errno expected and the one got.
fn apply(ov: &Overlay, m: &mut Model, op: &NameOp) -> (Option<i32>, Option<i32>) {
    let root = ov.node(NodeId::ROOT).unwrap();
    let me = Caller { uid: 0, gid: 0 };
    let file = NewKind::File {
        flags: rustix::fs::OFlags::WRONLY,
    };
    match op {
        NameOp::Create(n) | NameOp::Mkdir(n) | NameOp::Symlink(n) => {
            let want = create_err(m, n);
            let (kind, dir) = match op {
                NameOp::Create(_) => (file, false),
                NameOp::Mkdir(_) => (NewKind::Dir, true),
                _ => (
                    NewKind::Symlink {
                        target: c"../../outside/x",
                    },
                    false,
                ),
            };
            let got = errno(ov.create(&root, n, kind, 0o644, me));
            if got.is_none() {
                m.insert(n.clone(), dir);
            }
            (want, got)
        }
        NameOp::Lookup(n) => (existing_err(m, n), errno(ov.lookup(&root, n))),
        NameOp::Unlink(n) | NameOp::Rmdir(n) => {
            let rmdir = matches!(op, NameOp::Rmdir(_));
            let want = existing_err(m, n).or_else(|| match (m[n], rmdir) {
                (true, false) => Some(libc::EISDIR),
                (false, true) => Some(libc::ENOTDIR),
                _ => None,
            });
            let got = errno(if rmdir {
                ov.rmdir(&root, n)
            } else {
                ov.unlink(&root, n)
            });
            if got.is_none() {
                m.remove(n);
            }
            (want, got)
        }
        NameOp::Rename(a, b) => {
            let want = malformed(b)
                .or_else(|| is_wh(b).then_some(libc::EINVAL))
                .or_else(|| existing_err(m, a))
                .or_else(|| match (m[a], m.get(b)) {
                    (_, _) if a == b => None,
                    (true, Some(false)) => Some(libc::ENOTDIR),
                    (false, Some(true)) => Some(libc::EISDIR),
                    _ => None,
                });
            let got = errno(ov.rename(&root, a, &root, b, rustix::fs::RenameFlags::empty()));
            if got.is_none() && a != b {
                let d = m.remove(a).unwrap_or(false);
                m.insert(b.clone(), d);
            }
            (want, got)
        }
        NameOp::Link(a, b) => {
            let Ok(e) = ov.lookup(&root, a) else {
                return (existing_err(m, a), existing_err(m, a));
            };
            let want = if m[a] {
                Some(libc::EPERM)
            } else {
                create_err(m, b)
            };
            let got = errno(ov.link(&e.node, &root, b));
            if got.is_none() {
                m.insert(b.clone(), false);
            }
            (want, got)
        }
    }
}

/// The names in a directory on disk.
fn names_in(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

fn run_names(ops: &[NameOp]) -> Result<(), TestCaseError> {
    let t = tempfile::tempdir().unwrap();
    let b = t.path();
    for d in ["lower", "upper", "work", "outside"] {
        std::fs::create_dir(b.join(d)).unwrap();
    }
    std::fs::write(b.join("outside/sentinel"), b"x").unwrap();
    let ov = Overlay::new(&OvConfig {
        lowers: vec![b.join("lower")],
        upper: Some(b.join("upper")),
        work: Some(b.join("work")),
        userxattr: false,
        redirect_dir: true,
        fsync: false,
        ownership: Default::default(),
        quirks: Default::default(),
    })
    .unwrap();
    let mut model = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let (want, got) = apply(&ov, &mut model, op);
        prop_assert_eq!(want, got, "op #{} {:?}", i, op);
        let on_disk = names_in(&b.join("upper"));
        let modelled: Vec<OsString> = model.keys().cloned().collect();
        prop_assert_eq!(on_disk, modelled, "upper after op #{} {:?}", i, op);
        let listed: Vec<OsString> = {
            let root = ov.node(NodeId::ROOT).unwrap();
            let mut v: Vec<OsString> = ov
                .list_dir(&root)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            v.sort();
            v
        };
        prop_assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
        prop_assert_eq!(
            names_in(&b.join("outside")),
            vec![OsString::from("sentinel")]
        );
        prop_assert_eq!(
            names_in(b),
            ["lower", "outside", "upper", "work"]
                .map(OsString::from)
                .to_vec()
        );
        prop_assert!(names_in(&b.join("lower")).is_empty());
    }
    Ok(())
}

#[test]
fn names_are_checked_and_stay_inside_the_upper_layer() {
    assert!(
        rustix::process::geteuid().is_root(),
        "needs root (trusted xattrs, chown of new entries)"
    );
    // The kept corpus: every malformed name through every operation, first.
    let b = |v: &[u8]| OsString::from_vec(v.to_vec());
    let corpus: Vec<OsString> = [
        &b""[..],
        b".",
        b"..",
        b"../outside",
        b"a/b",
        b"/etc",
        b"a\0b",
        b".wh.a",
        b".wh..wh..opq",
        &[b'n'; 255],
        &[b'n'; 256],
    ]
    .iter()
    .map(|v| b(v))
    .collect();
    let mut fixed = Vec::new();
    for n in &corpus {
        fixed.extend([
            NameOp::Create(n.clone()),
            NameOp::Mkdir(n.clone()),
            NameOp::Symlink(n.clone()),
            NameOp::Lookup(n.clone()),
            NameOp::Rename(n.clone(), "x".into()),
            NameOp::Link(n.clone(), "x".into()),
            NameOp::Unlink(n.clone()),
            NameOp::Rmdir(n.clone()),
        ]);
        fixed.push(NameOp::Create("c".into()));
        fixed.push(NameOp::Rename("c".into(), n.clone()));
        fixed.push(NameOp::Link("c".into(), n.clone()));
        fixed.push(NameOp::Unlink("c".into()));
    }
    run_names(&fixed).unwrap();
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&proptest::collection::vec(name_op(), 1..25), |ops| {
            run_names(&ops)
        })
        .unwrap();
}
