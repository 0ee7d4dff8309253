//! The command line as a user meets it: a mistyped subcommand is clap's usage error with a
//! suggestion (never a mount), and the exit codes README documents.
use std::process::{Command, Output};

fn layerfs(args: &[&str]) -> Output {
    let root = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args(args)
        .env("LAYERFS_ROOT", root.path())
        .output()
        .unwrap()
}

#[test]
fn a_mistyped_subcommand_is_a_usage_error_with_a_suggestion() {
    let o = layerfs(&["imgaes"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unrecognized subcommand 'imgaes'"), "{err}");
    assert!(err.contains("similar subcommand exists: 'images'"), "{err}");
    // An image-looking word is not a mount either.
    let o = layerfs(&["alpine", "/mnt"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unrecognized subcommand 'alpine'"), "{err}");
}

#[test]
fn the_fuse_overlayfs_form_reaches_mount() {
    // A missing lower dir: mount's own error, not clap's.
    let o = layerfs(&[
        "-o",
        "lowerdir=/nonexistent/layerfs-lower",
        "/nonexistent/mnt",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("unrecognized subcommand"), "{err}");
    assert!(err.contains("/nonexistent/mnt"), "{err}");
}
