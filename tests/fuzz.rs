//! Fuzzing (proptest, fixed case counts) of everything layerfs parses from outside: layer tar
//! streams (structured entry sequences and mutated bytes), PAX records, tar paths, manifests,
//! indexes, configs, docker-archive `manifest.json`, registry documents, token responses and
//! `WWW-Authenticate` challenges. Each input must be accepted or refused with an error naming
//! the input, never panic, never write outside the layer root, and stay within the memory the
//! limits allow. Mutations start from the kept corpus in `tests/fuzz_corpus/`; failures are
//! kept by proptest in `proptest-regressions/` and replayed first.
mod store_common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layerfs::image::oci::{ImageConfig, Platform, parse_document};
use layerfs::image::tarentry::{RawEntry, RawType, RelPath, apply_pax, classify, pax_records};
use layerfs::image::unpack::{Limits, open_layer_root, unpack_layer};
use proptest::prelude::*;
use store_common::Layer;

/// Cases per property; `LAYERFS_FUZZ_CASES` raises it for a longer local run.
fn cases() -> u32 {
    std::env::var("LAYERFS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(192)
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn seeds(prefix: &str) -> Vec<Vec<u8>> {
    corpus()
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(_, b)| b)
        .collect()
}

/// A corpus file of `prefix` with byte flips, an insertion and a truncation, or random bytes.
fn mutated(prefix: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let s = seeds(prefix);
    assert!(!s.is_empty(), "no corpus files {prefix}*");
    let n = s.len();
    prop_oneof![
        3 => (
            0..n,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..16),
            prop::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(move |(i, flips, at, insert, cut)| {
                let mut b = s[i].clone();
                for (pos, v) in flips {
                    if !b.is_empty() {
                        let k = pos.index(b.len());
                        b[k] = v;
                    }
                }
                let at = at.index(b.len() + 1);
                b.splice(at..at, insert);
                if let Some(c) = cut {
                    b.truncate(c.index(b.len() + 1));
                }
                b
            }),
        1 => prop::collection::vec(any::<u8>(), 0..600),
    ]
}

/// Unpacks `tar` into a fresh layer root beside an empty sibling; nothing may appear there,
/// and an error must name the layer.
fn unpack_checked(tar: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = tmp.path().join("layer");
    let fd = open_layer_root(&root).unwrap();
    let limits = Limits {
        max_bytes: 4 << 20,
        max_entries: 10_000,
    };
    if let Err(e) = unpack_layer(Cursor::new(tar), fd, &limits, "fuzz layer") {
        assert!(e.to_string().contains("fuzz layer"), "unnamed error: {e}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside"
    );
    let mut names: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names, [root, outside], "wrote beside the layer root");
}

/// Path components that reach the interesting rules: whiteouts, opaque markers, `..`, roots.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just(".wh.a".to_string()),
        Just(".wh..wh..opq".to_string()),
        Just(".wh..wh.plnk".to_string()),
        Just("x".repeat(120)),
    ]
}

fn tar_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..4))
        .prop_map(|(abs, c)| format!("{}{}", if abs { "/" } else { "" }, c.join("/")))
}

#[derive(Clone, Debug)]
enum Entry {
    File(String, Vec<u8>, u32),
    Dir(String, u32),
    Symlink(String, String),
    HardLink(String, String),
    Fifo(String),
    CharDev(String, u32, u32),
}

fn entry() -> impl Strategy<Value = Entry> {
    let mode = prop_oneof![Just(0o644u32), Just(0o7777), Just(0), Just(0o755)];
    prop_oneof![
        (
            tar_path(),
            prop::collection::vec(any::<u8>(), 0..64),
            mode.clone()
        )
            .prop_map(|(p, d, m)| Entry::File(p, d, m)),
        (tar_path(), mode).prop_map(|(p, m)| Entry::Dir(p, m)),
        (
            tar_path(),
            prop_oneof![tar_path(), Just("/etc".to_string())]
        )
            .prop_map(|(p, t)| Entry::Symlink(p, t)),
        (tar_path(), tar_path()).prop_map(|(p, t)| Entry::HardLink(p, t)),
        tar_path().prop_map(Entry::Fifo),
        (tar_path(), 0u32..3, 0u32..3).prop_map(|(p, a, b)| Entry::CharDev(p, a, b)),
    ]
}

fn build(entries: &[Entry]) -> Vec<u8> {
    // The header's link name field holds 100 bytes (the helper writes no GNU long link).
    let short = |t: &String| t.chars().take(100).collect::<String>();
    let mut l = Layer::new();
    for e in entries {
        match e {
            Entry::File(p, d, m) => {
                l.raw(p, tar::EntryType::Regular, *m, (0, 0), None, d);
            }
            Entry::Dir(p, m) => {
                l.raw(p, tar::EntryType::Directory, *m, (0, 0), None, b"");
            }
            Entry::Symlink(p, t) => {
                l.raw(
                    p,
                    tar::EntryType::Symlink,
                    0o777,
                    (0, 0),
                    Some(&short(t)),
                    b"",
                );
            }
            Entry::HardLink(p, t) => {
                l.raw(p, tar::EntryType::Link, 0o644, (0, 0), Some(&short(t)), b"");
            }
            Entry::Fifo(p) => {
                l.fifo(p);
            }
            Entry::CharDev(p, a, b) => {
                l.chardev(p, *a, *b);
            }
        }
    }
    l.bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn structured_layers_never_escape_or_panic(entries in prop::collection::vec(entry(), 1..12)) {
        unpack_checked(&build(&entries));
    }

    #[test]
    fn mutated_tar_streams(bytes in mutated("tar-")) {
        unpack_checked(&bytes);
    }

    #[test]
    fn pax_records_and_paths(bytes in mutated("pax-"), path in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = pax_records(&bytes);
        let mut e = RawEntry {
            path: path.clone(),
            link: Vec::new(),
            kind: RawType::File,
            size: 0,
            dev: (0, 0),
            meta: Default::default(),
        };
        if apply_pax(&bytes, &mut e).is_ok() {
            let _ = classify(e);
        }
        if let Ok(p) = RelPath::normalize(&path) {
            prop_assert!(!p.components().any(|c| c == ".."), "{p}");
        }
    }

    #[test]
    fn documents_and_configs(bytes in prop_oneof![mutated("manifest"), mutated("index"), mutated("config")]) {
        match parse_document(&bytes, "fuzz doc") {
            Ok(layerfs::image::oci::Document::Index(ix)) => {
                let _ = layerfs::registry::docs::select_platform(&ix, &Platform::host(), "fuzz doc");
            }
            Ok(_) => {}
            Err(e) => prop_assert!(e.to_string().contains("fuzz doc"), "{e}"),
        }
        if let Err(e) = ImageConfig::parse(&bytes, "fuzz config") {
            prop_assert!(e.to_string().contains("fuzz config"), "{e}");
        }
        let ct = Some("application/vnd.oci.image.manifest.v1+json");
        if let Err(e) = layerfs::registry::docs::check_document(&bytes, ct, None, "fuzz reply") {
            prop_assert!(e.to_string().contains("fuzz reply"), "{e}");
        }
    }

    #[test]
    fn registry_replies(token in mutated("token"), header in mutated("challenge")) {
        if let Ok(t) = serde_json::from_slice::<layerfs::registry::challenge::TokenResponse>(&token) {
            let _ = t.into_token();
        }
        let header = String::from_utf8_lossy(&header);
        // A Bearer realm is a URL the client will call; a Location header is joined to one.
        if let Some(layerfs::registry::challenge::Challenge::Bearer { realm, .. }) =
            layerfs::registry::challenge::parse(&header)
            && let Ok(u) = layerfs::registry::url::Url::parse(&realm)
        {
            let _ = u.join(&String::from_utf8_lossy(&token));
            let _ = u.redacted();
        }
        if let Ok(u) = layerfs::registry::url::Url::parse(&header) {
            let _ = u.join("/v2/x/blobs/uploads/?a=b");
        }
    }
}

proptest! {
    // Each case writes a small archive directory: fewer cases.
    #![proptest_config(ProptestConfig { cases: cases() / 4, ..ProptestConfig::default() })]

    #[test]
    fn docker_archive_manifest_json(mj in mutated("docker-manifest"), cfg in mutated("config")) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("archive");
        std::fs::create_dir_all(dir.join("0")).unwrap();
        std::fs::write(dir.join("manifest.json"), &mj).unwrap();
        std::fs::write(dir.join("cfg.json"), &cfg).unwrap();
        std::fs::write(dir.join("0/layer.tar"), seeds("tar-basic")[0].clone()).unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let src = Arc::new(layerfs::image::source::Source::open(&dir, &scratch).unwrap());
        let opts = layerfs::image::load::LoadOptions::default();
        if let Err(e) = layerfs::image::load::plans(&src, &opts, &mut |_| {}) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// Inputs that claim huge sizes are refused without allocating them.
#[test]
fn huge_claims_are_refused_cheaply() {
    // A GNU long name record claiming 8 GiB.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_size(8 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'a'; 512]);
    unpack_checked(&tar);
    // A PAX record whose length exceeds the data.
    assert!(pax_records(b"99999999999 path=x\n").is_err());
    // A file entry claiming more data than the layer limit allows.
    let mut h = tar::Header::new_gnu();
    h.set_path("big").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    unpack_checked(h.as_bytes());
}
