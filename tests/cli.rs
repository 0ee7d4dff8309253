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

#[test]
fn exit_codes_tell_what_kind_of_failure() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"not an archive").unwrap();
    let missing = dir.path().join("missing.tar");
    // A listener that is closed at once: nothing answers on its port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("127.0.0.1:{port}/x:1");
    for (args, code, says) in [
        (vec!["images"], 0, ""),
        (vec!["imgaes"], 2, "unrecognized subcommand"),
        (vec!["images", "--no-such-flag"], 2, "unexpected argument"),
        (
            vec!["inspect", "nosuch"],
            1,
            "no such image or container: nosuch",
        ),
        (
            vec!["load", "-i", garbage.to_str().unwrap()],
            3,
            "garbage.tar",
        ),
        (
            vec!["load", "-i", missing.to_str().unwrap()],
            5,
            "missing.tar",
        ),
        (vec!["pull", &unreachable], 4, "cannot reach registry"),
    ] {
        let o = layerfs(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "layerfs {args:?}: {err}");
        assert!(err.contains(says), "layerfs {args:?}: {err}");
    }
}
