//! Lower layers written by other tools: `.wh.NAME` whiteout files and `.wh..wh..opq` opaque
//! markers (what containers-storage writes when a mount program is configured) and
//! `user.overlay.opaque` (unprivileged overlay, `userxattr`).
//!
//! The kernel reads none of these (it shows `.wh.` files as plain files), so this is the one
//! deliberate difference from it and the differential suite leaves such names out. Here the
//! same fixture is built twice, in overlay format for the kernel and in the other format for
//! the implementation under test; the merged trees must still be identical. Then the rules
//! of their own: `.wh.` names are never shown and cannot be created.
mod common;

use std::path::Path;

use common::diff::{Scenario, run_scenario, test_tmp};
use common::fixture::{Fixture, Style, base, dir, file, opaque, wh};
use common::mount::{Impl, Mount};
use common::ops::*;

/// Whiteouts and opaque dirs at several depths and in the middle of three layers.
fn layered() -> Fixture {
    Fixture {
        lowers: vec![
            vec![
                dir("x", 0o755),
                wh("x/a"),
                file("x/top", "top\n"),
                dir("deep", 0o755),
                dir("deep/er", 0o755),
                wh("deep/er/gone"),
                wh("rootgone"),
            ],
            vec![
                dir("x", 0o755),
                file("x/a", "mid\n"),
                file("x/b", "mid-b\n"),
                dir("y", 0o755),
                file("y/m", "m\n"),
                opaque("y"),
                dir("deep", 0o755),
                dir("deep/er", 0o755),
                file("deep/er/kept", "kept\n"),
            ],
            vec![
                dir("x", 0o755),
                file("x/a", "low\n"),
                file("x/c", "low-c\n"),
                dir("y", 0o755),
                file("y/low", "low\n"),
                dir("deep", 0o755),
                dir("deep/er", 0o755),
                file("deep/er/gone", "gone\n"),
                file("rootgone", "gone\n"),
            ],
        ],
        upper: vec![],
    }
}

fn scenarios() -> Vec<Scenario> {
    let sc = |name, fixture, ops| Scenario {
        name,
        fixture,
        ro: false,
        ops,
    };
    vec![
        sc(
            "wh_lookup",
            base,
            vec![
                lstat("d/gone"),
                lstat("gone_root"),
                stat("opq/old"),
                read("opq/new"),
                readdir("d"),
                readdir("opq"),
                readdir(""),
            ],
        ),
        sc(
            "wh_readdir_seek",
            base,
            vec![
                readdir_seek_op(""),
                readdir_seek_op("d"),
                readdir_seek_op("opq"),
            ],
        ),
        sc(
            "wh_create_over_whiteout",
            base,
            vec![
                write("d/gone", "back\n"),
                read("d/gone"),
                readdir("d"),
                mkdir("gone_root", 0o755),
                readdir("gone_root"),
            ],
        ),
        sc(
            "wh_create_in_opaque",
            base,
            vec![
                write("opq/old", "o"),
                readdir("opq"),
                unlink("opq/new"),
                rmdir("opq"),
                mkdir("opq", 0o755),
                readdir("opq"),
            ],
        ),
        sc(
            "wh_unlink_rename",
            base,
            vec![
                unlink("d/bottom"),
                rename("d/top", "d/gone"),
                readdir("d"),
                rename("opq/new", "new"),
                readdir("opq"),
            ],
        ),
        sc(
            "wh_three_layers",
            layered,
            vec![
                readdir("x"),
                read("x/a"),
                readdir("y"),
                readdir("deep/er"),
                lstat("rootgone"),
                readdir(""),
            ],
        ),
        sc(
            "wh_three_layers_writes",
            layered,
            vec![
                write("x/a", "new"),
                unlink("x/b"),
                rmdir("y"),
                append("y/m", "+"),
                readdir("y"),
                write("deep/er/gone", "g"),
                readdir("deep/er"),
            ],
        ),
    ]
}

fn run(style: Style) {
    common::require_root();
    let other = Impl::under_test();
    if !other.reads_oci_whiteouts() {
        eprintln!(
            "skipped: {} does not read {style:?} lower layers",
            other.name()
        );
        return;
    }
    let tmp = test_tmp();
    let mut failures = String::new();
    for sc in scenarios() {
        let base = tempfile::Builder::new()
            .prefix(sc.name)
            .tempdir_in(&tmp)
            .expect("tempdir");
        let r = run_scenario(
            &sc,
            other,
            style,
            base.path(),
            common::mount::Mode::Features,
        );
        if !r.is_empty() {
            failures += &format!(
                "\n== {} ({style:?} lowers):\n   {}",
                sc.name,
                r.join("\n   ")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "kernel (overlay-format lowers) and {} ({style:?} lowers) differ:{failures}",
        other.name()
    );
}

#[test]
fn oci_whiteout_files_equal_kernel_whiteouts() {
    run(Style::Oci);
}

#[test]
fn user_overlay_opaque_equals_trusted_opaque() {
    run(Style::UserXattr);
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `.wh.` names are hidden, interpreted, and refused on creation.
#[test]
fn wh_names_hidden_and_refused() {
    common::require_root();
    let other = Impl::under_test();
    if !other.reads_oci_whiteouts() {
        eprintln!("skipped: {} shows .wh. names", other.name());
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("whnames")
        .tempdir_in(test_tmp())
        .expect("tempdir");
    let dirs = base().instantiate(tmp.path(), Style::Oci, false);
    // The OCI-style markers really are on disk.
    assert!(dirs.lowers[0].join("d/.wh.gone").is_file());
    assert!(dirs.lowers[0].join("opq/.wh..wh..opq").is_file());
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(other, &dirs, &mnt).expect("mount");
    for d in ["", "d", "opq"] {
        let names = names_in(&mnt.join(d));
        assert!(
            names.iter().all(|n| !n.starts_with(".wh.")),
            "{d:?} lists a .wh. name: {names:?}"
        );
    }
    for hidden in [
        ".wh.gone_root",
        "d/.wh.gone",
        "opq/.wh..wh..opq",
        "d/gone",
        "opq/old",
    ] {
        let r = std::fs::symlink_metadata(mnt.join(hidden));
        assert_eq!(
            r.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT),
            "{hidden}: expected ENOENT, got {r:?}"
        );
    }
    let mut ctx = Ctx::new(m);
    let attempts = [
        write(".wh.x", "x"),
        write("d/.wh.top", "x"),
        mkdir(".wh.dir", 0o755),
        symlink("f", ".wh.sym"),
        mknod(".wh.p", Kind::Fifo, 0o644, 0, 0),
        link("f", ".wh.link"),
        rename("f", ".wh.f"),
        write(".wh..wh..opq", ""),
    ];
    for op in &attempts {
        let out = ctx.apply(op);
        assert!(
            out.starts_with("err: "),
            "{op:?} through {}: {out}",
            other.name()
        );
    }
    // Nothing of it reached the upper layer, and the files are intact.
    assert_eq!(ctx.apply(&read("f")), "ok: \"hello\\n\"");
    let m = ctx.into_mount();
    let (upper, _) = m.dirs().upper.clone().expect("upper");
    m.unmount().expect("unmount");
    let leftover: Vec<String> = names_in(&upper)
        .into_iter()
        .filter(|n| n.starts_with(".wh."))
        .collect();
    assert!(leftover.is_empty(), "upper holds {leftover:?}");
}
