//! Randomized operation sequences (proptest, fixed seed and case count) over a small name
//! space, run on kernel overlayfs and on the implementation under test, compared like the
//! scenarios in difftest.rs: every outcome, the final trees, the raw uppers, the swapped uppers.
//!
//! `LAYERFS_PROP_CASES` overrides the case count (default 64), `LAYERFS_PROP_SEED` the seed.
mod common;

use common::diff::{Scenario, run_scenario, test_tmp};
use common::fixture::{Fixture, Style, dir, file, hlink, opaque, slink, wh, xattr};
use common::mount::{Impl, Mode};

/// layerfs's defaults against the kernel with the same features (`common::mount::Mode`).
const MODE: Mode = Mode::Features;
use common::ops::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestError, TestRunner};

/// Names the operations pick from: files and dirs that exist in one lower layer, in both, in
/// none; whited out and hidden by an opaque dir.
const NAMES: &[&str] = &[
    "f", "g", "h", "m", "a", "a/x", "a/y", "a/n", "b", "b/z", "b/n", "o", "o/p", "o/q", "w",
];
const DIRS: &[&str] = &["", "a", "b", "o"];
const DATA: &[&str] = &["", "1", "hello\n", "0123456789abcdef"];
const MODES: &[u32] = &[0o644, 0o600, 0o755, 0o4755, 0o2750];

fn small() -> Fixture {
    Fixture {
        lowers: vec![
            vec![
                dir("a", 0o755),
                file("a/x", "ax\n"),
                file("f", "top-f\n"),
                dir("o", 0o755),
                file("o/p", "p\n"),
                opaque("o"),
                wh("w"),
                hlink("m", "f"),
                slink("a/y", "../f"),
            ],
            vec![
                dir("a", 0o755),
                file("a/y", "ay\n"),
                file("a/n", "an\n"),
                dir("b", 0o700),
                file("b/z", "bz\n"),
                xattr("b/z", "user.z", "1"),
                file("g", "bottom-g\n"),
                dir("o", 0o755),
                file("o/q", "hidden\n"),
                file("w", "whited\n"),
                file("f", "bottom-f\n"),
            ],
        ],
        upper: vec![],
    }
}

/// Runs `ops` on the small fixture with the kernel and `other`; the differences found.
fn differences(
    name: &'static str,
    ops: Vec<Op>,
    other: Impl,
    tmp: &std::path::Path,
) -> Vec<String> {
    let base = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(tmp)
        .expect("tempdir");
    let sc = Scenario {
        name,
        fixture: small,
        ro: false,
        ops,
    };
    run_scenario(&sc, other, Style::Overlay, base.path(), MODE)
}

fn name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(NAMES)
}

fn op() -> impl Strategy<Value = Op> {
    let data = proptest::sample::select(DATA);
    prop_oneof![
        (name(), data.clone()).prop_map(|(n, d)| write(n, d)),
        (name(), data).prop_map(|(n, d)| append(n, d)),
        (name(), 0u64..20).prop_map(|(n, l)| truncate(n, l)),
        name().prop_map(unlink),
        name().prop_map(rmdir),
        (name(), proptest::sample::select(MODES)).prop_map(|(n, m)| mkdir(n, m)),
        (name(), name(), 0u32..3).prop_map(|(a, b, f)| {
            let flags = [0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][f as usize];
            Op::Rename(a.into(), b.into(), flags)
        }),
        (name(), name()).prop_map(|(a, b)| link(a, b)),
        name().prop_map(|n| symlink("t", n)),
        (name(), proptest::sample::select(MODES)).prop_map(|(n, m)| chmod(n, m)),
        (name(), 0u32..3).prop_map(|(n, u)| chown(n, u * 1000, u * 1000)),
        name().prop_map(|n| setx(n, "user.p", "v")),
        name().prop_map(|n| rmx(n, "user.z")),
        name().prop_map(read),
        name().prop_map(lstat),
        proptest::sample::select(DIRS).prop_map(readdir),
    ]
}

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_operation_sequences() {
    common::require_root();
    let other = Impl::under_test();
    let seed = env_num("LAYERFS_PROP_SEED", 0x01a7_e5f5);
    let config = Config {
        cases: env_num("LAYERFS_PROP_CASES", 64) as u32,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 64,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let tmp = test_tmp();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&vec(op(), 1..30), |ops| {
        let report = differences("prop", ops.clone(), other, &tmp);
        prop_assert!(
            report.is_empty(),
            "{} differences:\n   {}",
            report.len(),
            report.join("\n   ")
        );
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => panic!(
            "kernel and {} differ on a random sequence (seed {seed:#x}); smallest found:\n{}\n{why}",
            other.name(),
            ops.iter()
                .enumerate()
                .map(|(i, o)| format!("  #{i} {o:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e) => panic!("proptest: {e}"),
    }
}

/// Sequences the random search once found to differ, kept as fixed regression cases.
#[test]
fn shrunk_regressions() {
    common::require_root();
    let other = Impl::under_test();
    let cases: Vec<(&str, Vec<Op>)> = vec![
        (
            "exchange_lower_file_with_lower_hardlink",
            vec![Op::Rename("a/x".into(), "f".into(), libc::RENAME_EXCHANGE)],
        ),
        // Seed 31: the link count of a copied-up lower hard link was cached from before.
        (
            "append_to_lower_hardlink_then_lstat",
            vec![append("f", ""), lstat("f"), lstat("m")],
        ),
    ];
    let tmp = test_tmp();
    let mut failures = Vec::new();
    for (name, ops) in cases {
        let report = differences(name, ops, other, &tmp);
        if !report.is_empty() {
            failures.push(format!("{name}:\n   {}", report.join("\n   ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
