//! Differential suite: every scenario runs on kernel overlayfs and on layerfs (or the
//! implementation `LAYERFS_TEST_IMPL` names), and every outcome, the final trees, the raw upper
//! dirs and the trees of the swapped upper dirs must be identical.
//!
//! One scenario per line: `sc(name, ops)` on the `base()` fixture (drawn in
//! common/fixture.rs), `scf(name, fixture, ops)` on another, `ro(...)` without an upper layer.
//! `LAYERFS_SCENARIO=substring` runs a subset.
mod common;

use common::diff::{Scenario, run_all};
use common::fixture::{Fixture, Style, base, dir, file, file_bytes, opaque, pattern, wh, xattr};
use common::mount::Mode;
use common::ops::*;
use libc::{
    O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, R_OK,
    W_OK, X_OK,
};

const XATTR_CREATE: u32 = 1;
const XATTR_REPLACE: u32 = 2;
const KEEP_SIZE: u32 = 0x01;
const PUNCH_HOLE: u32 = 0x02;
const ZERO_RANGE: u32 = 0x10;
const MIB: u64 = 1 << 20;

const CAP: &str = "security.capability";
/// A VFS_CAP_REVISION_2 value, effective, CAP_NET_BIND_SERVICE permitted (20 bytes, ASCII).
const CAP_V: &str = "\u{1}\0\0\u{2}\0\u{4}\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn sc(name: &'static str, ops: Vec<Op>) -> Scenario {
    scf(name, base, ops)
}

fn scf(name: &'static str, fixture: fn() -> Fixture, ops: Vec<Op>) -> Scenario {
    Scenario {
        name,
        fixture,
        ro: false,
        ops,
    }
}

fn ro(name: &'static str, fixture: fn() -> Fixture, ops: Vec<Op>) -> Scenario {
    Scenario {
        name,
        fixture,
        ro: true,
        ops,
    }
}

fn big() -> Fixture {
    let mut f = base();
    f.lowers[1].push(file_bytes("big", pattern(4 << 20, 9)));
    f
}

fn single() -> Fixture {
    Fixture {
        lowers: vec![vec![
            dir("dir", 0o755),
            file("a", "a\n"),
            file("dir/x", "x\n"),
        ]],
        upper: vec![],
    }
}

/// A whiteout and an opaque dir in the middle of three lower layers.
fn three() -> Fixture {
    Fixture {
        lowers: vec![
            vec![
                dir("x", 0o755),
                wh("x/a"),
                file("x/top", "top\n"),
                file("z", "z-top\n"),
            ],
            vec![
                dir("x", 0o755),
                file("x/a", "mid\n"),
                file("x/b", "mid-b\n"),
                dir("y", 0o755),
                file("y/m", "m\n"),
                opaque("y"),
            ],
            vec![
                dir("x", 0o755),
                file("x/a", "low\n"),
                file("x/c", "low-c\n"),
                dir("y", 0o755),
                file("y/low", "low\n"),
                file("z", "z-low\n"),
            ],
        ],
        upper: vec![],
    }
}

/// The base fixture with an upper dir that already holds a whiteout and an opaque dir.
fn with_upper() -> Fixture {
    let mut f = base();
    f.upper = vec![
        wh("b"),
        dir("d", 0o755),
        file("d/u", "u\n"),
        opaque("d"),
        file("u", "upper\n"),
        dir("bd", 0o755),
        file("bd/new", "n\n"),
        file("f", "upper-f\n"),
    ];
    f
}

/// The base fixture with an upper dir that already holds redirected directories, as a kernel
/// mounted with redirect_dir=on leaves them: `d` renamed to `rel` (relative redirect),
/// `deep/a` moved to `bd/abs` (absolute), and a redirect to a path no lower layer has.
fn with_redirects() -> Fixture {
    let mut f = base();
    f.upper = vec![
        wh("d"),
        dir("rel", 0o755),
        xattr("rel", "trusted.overlay.redirect", "d"),
        file("rel/up", "up\n"),
        dir("deep", 0o755),
        wh("deep/a"),
        dir("bd", 0o755),
        dir("bd/abs", 0o755),
        xattr("bd/abs", "trusted.overlay.redirect", "/deep/a"),
        dir("nowhere", 0o755),
        xattr("nowhere", "trusted.overlay.redirect", "/no/such/dir"),
    ];
    f
}

/// Lower layers that were once an upper with redirect_dir=on: `r` (relative) and `sub/a`
/// (absolute) redirect into the layer below, where a stale `r` must stay hidden.
fn lower_redirects() -> Fixture {
    Fixture {
        lowers: vec![
            vec![
                dir("r", 0o755),
                xattr("r", "trusted.overlay.redirect", "orig"),
                file("r/top", "t\n"),
                wh("orig"),
                dir("sub", 0o755),
                dir("sub/a", 0o755),
                xattr("sub/a", "trusted.overlay.redirect", "/deep/x"),
            ],
            vec![
                dir("orig", 0o755),
                file("orig/low", "l\n"),
                dir("orig/inner", 0o755),
                file("orig/inner/f", "f\n"),
                dir("deep", 0o755),
                dir("deep/x", 0o755),
                file("deep/x/y", "y\n"),
                dir("r", 0o755),
                file("r/hidden", "h\n"),
            ],
        ],
        upper: vec![],
    }
}

#[rustfmt::skip]
fn scenarios() -> Vec<Scenario> {
    vec![
        // Lookup through the stack.
        sc("lookup_stack", vec![stat("d/top"), stat("d/bottom"), read("d/shared"), read("b"), read("f2"), stat("d"), stat("d/sub"), read("d/sub/s")]),
        sc("lookup_whiteout_hides", vec![lstat("d/gone"), lstat("gone_root"), read("d/gone"), readdir("d"), readdir("")]),
        sc("lookup_opaque_hides", vec![stat("opq/old"), readdir("opq"), read("opq/new")]),
        sc("lookup_dir_over_file", vec![stat("tf"), readdir("tf"), read("tf/inner")]),
        sc("lookup_file_over_dir", vec![stat("ft"), read("ft"), stat("ft/x"), readdir("ft")]),
        sc("lookup_deep", vec![read("deep/a/b/c/file"), stat("deep/a"), stat("deep/a/b"), stat("deep/a/b/c")]),
        sc("lookup_symlinks", vec![stat("sym"), lstat("sym"), read("sym"), readlink("sym"), readlink("dangling"), stat("dangling"), stat("dsym"), readdir("dsym"), readlink("abssym"), readlink("f")]),
        sc("lookup_special", vec![lstat("fifo"), lstat("sock"), lstat("chr"), lstat("blk"), lstat("emptyfile"), read("emptyfile")]),
        sc("lookup_enotdir", vec![stat("f/x"), stat("d/top/x"), open_flags("f", O_RDONLY | O_DIRECTORY, 0)]),
        sc("lookup_enoent", vec![stat("nope"), stat("d/nope"), stat("nope/x"), read("d/gone/x"), stat("opq/old/x")]),
        sc("lookup_xattrs", vec![listx("xa"), getx("xa", "user.foo"), getx("xa", "user.empty"), getx("xa", "trusted.t"), getx("xa", "user.missing"), listx("xd"), getx("d", "user.none")]),
        sc("lookup_modes_owners", vec![stat("suid"), stat("sgid"), stat("usuid"), stat("ro"), stat("secret"), stat("owned"), stat("sticky"), stat("sgiddir"), stat("deep/a"), stat("")]),
        sc("lookup_hardlinks", vec![stat("hl1"), stat("hl2"), ino_save("hl1", 0), ino_same("hl2", 0)]),
        sc("lookup_acl_xattrs", vec![getx("", "system.posix_acl_access"), getx("d", "system.posix_acl_access"), getx("d", "system.posix_acl_default"), getx("f", "system.posix_acl_access"), getx("empty", "system.posix_acl_default")]),
        sc("lookup_private_xattrs_hidden", vec![listx("opq"), getx("opq", "trusted.overlay.opaque"), listx("d"), listx("")]),
        // Merged readdir.
        sc("readdir_root", vec![readdir("")]),
        sc("readdir_merged", vec![readdir("d"), readdir("d/sub"), readdir("bd"), readdir("bd/x"), readdir("mt"), readdir("empty")]),
        sc("readdir_seek", vec![readdir_seek_op(""), readdir_seek_op("d"), readdir_seek_op("opq")]),
        sc("readdir_ino", vec![readdir_ino_op(""), readdir_ino_op("d"), readdir_ino_op("deep/a"), readdir_ino_op("opq")]),
        sc("readdir_after_changes", vec![write("d/new", "n"), unlink("d/bottom"), mkdir("d/nd", 0o755), rename("d/top", "d/top2"), readdir("d"), readdir_seek_op("d"), readdir_ino_op("d")]),
        sc("readdir_enotdir", vec![readdir("f"), readdir("nope"), readdir("sym")]),
        // Copy-up.
        sc("copyup_write", vec![write("f", "new\n"), read("f"), stat("f")]),
        sc("copyup_append", vec![append("f", "more\n"), read("f"), stat("f")]),
        sc("copyup_pwrite", vec![pwrite("d/bottom", 2, "XY"), read("d/bottom"), stat("d/bottom")]),
        sc("copyup_truncate_shrink", vec![truncate("f", 2), read("f"), stat("f")]),
        sc("copyup_truncate_grow", vec![truncate("f", 10000), read("f"), stat("f"), seek_hole("f", 0)]),
        sc("copyup_truncate_same_size", vec![truncate("f", 6), stat("f")]),
        sc("copyup_open_trunc", vec![open_flags("f", O_WRONLY | O_TRUNC, 0), stat("f"), read("f")]),
        sc("copyup_open_rdonly_trunc", vec![open_flags("b", O_RDONLY | O_TRUNC, 0), stat("b")]),
        sc("copyup_open_rdwr_no_write", vec![open_flags("d/bottom", O_RDWR, 0), stat("d/bottom")]),
        sc("copyup_chmod", vec![chmod("f", 0o600), stat("f"), read("f")]),
        sc("copyup_chmod_setuid", vec![chmod("f", 0o4755), stat("f"), chmod("sgid", 0o2700), stat("sgid")]),
        sc("copyup_keeps_setuid", vec![append("suid", "x"), stat("suid"), utimes("sgid", 700_000_000, 700_000_000), stat("sgid")]),
        sc("copyup_chown", vec![chown("f", 1000, 1000), stat("f"), chown("owned", 0, 0), stat("owned")]),
        sc("copyup_chown_clears_suid", vec![chown("suid", 1000, 1000), stat("suid"), chown("sgid", 0, 100), stat("sgid")]),
        sc("copyup_utimens", vec![utimes("f", 600_000_000, 700_000_000), stat("f"), utimes("d", 600_000_001, 700_000_001), stat("d")]),
        sc("copyup_preserves_times", vec![chmod("f", 0o600), stat("f"), setx("d/top", "user.k", "v"), stat("d/top"), stat("d")]),
        sc("copyup_setxattr", vec![setx("xa", "user.new", "n"), listx("xa"), getx("xa", "user.foo"), getx("xa", "trusted.t")]),
        sc("copyup_removexattr", vec![rmx("xa", "user.foo"), listx("xa"), rmx("xa", "user.foo"), rmx("f", "user.none")]),
        sc("copyup_trusted_xattr", vec![setx("f", "trusted.x", "1"), getx("f", "trusted.x"), listx("f")]),
        sc("copyup_link", vec![link("f", "f_link"), stat("f"), stat("f_link"), append("f_link", "x"), read("f")]),
        sc("copyup_parents", vec![chmod("deep/a/b/c/file", 0o600), stat("deep/a"), stat("deep/a/b"), stat("deep/a/b/c")]),
        sc("copyup_owner_mode_kept", vec![append("owned", "x"), stat("owned"), append("secret", "x"), stat("secret"), append("ro", "x"), stat("ro")]),
        sc("copyup_sparse_write", vec![pwrite("sparse", 0, "Z"), stat("sparse"), seek_data("sparse", 0), seek_hole("sparse", 0), seek_data("sparse", MIB), seek_hole("sparse", 3 * MIB), seek_data("sparse", 4 * MIB)]),
        sc("copyup_sparse_chmod", vec![chmod("sparse", 0o600), stat("sparse"), seek_hole("sparse", 0), seek_data("sparse", MIB), seek_hole("sparse", 3 * MIB), seek_data("sparse", 4 * MIB)]),
        sc("copyup_hardlink_lower", vec![append("hl1", "x"), read("hl1"), read("hl2"), stat("hl1"), stat("hl2")]),
        sc("copyup_dir_chmod", vec![chmod("d", 0o700), stat("d"), readdir("d"), read("d/bottom")]),
        sc("copyup_dir_chown", vec![chown("bd/x", 1000, 1000), stat("bd/x"), stat("bd"), readdir("bd/x")]),
        sc("copyup_dir_xattr", vec![setx("d", "user.d", "1"), listx("d"), getx("xd", "user.dirattr"), setx("xd", "user.two", "2"), listx("xd")]),
        sc("copyup_symlink_lchown", vec![lchown("sym", 1000, 1000), lstat("sym"), readlink("sym"), stat("sym")]),
        sc("copyup_fifo_chmod", vec![chmod("fifo", 0o600), lstat("fifo")]),
        sc("copyup_device_chown", vec![chown("chr", 1000, 1000), lstat("chr"), chmod("blk", 0o600), lstat("blk")]),
        sc("copyup_socket_chmod", vec![chmod("sock", 0o700), lstat("sock")]),
        sc("copyup_emptyfile", vec![write("emptyfile", "now\n"), read("emptyfile")]),
        sc("copyup_fd_ftruncate_fchmod", vec![fd_open(0, "f", O_RDWR), Op::FdTruncate(0, 3), Op::FdChmod(0, 0o640), Op::FdStat(0), Op::FdClose(0), read("f"), stat("f")]),
        scf("copyup_big", big, vec![pwrite("big", 3 * MIB, "hello"), read("big"), stat("big"), Op::ReadAt("big".into(), 3 * MIB - 2, 9)]),
        // unlink / rmdir and the whiteouts they leave.
        sc("unlink_lower", vec![unlink("f"), lstat("f"), readdir("")]),
        sc("unlink_in_merged", vec![unlink("d/bottom"), unlink("d/shared"), readdir("d"), stat("d/shared")]),
        sc("unlink_upper_only", vec![write("new", "n"), unlink("new"), lstat("new"), readdir("")]),
        sc("unlink_copied_up", vec![append("f", "x"), unlink("f"), lstat("f")]),
        sc("unlink_special", vec![unlink("fifo"), unlink("chr"), unlink("sock"), unlink("sym"), unlink("dangling"), readdir("")]),
        sc("unlink_one_hardlink", vec![unlink("hl1"), stat("hl2"), read("hl2")]),
        sc("unlink_recreate", vec![unlink("f"), write("f", "again\n"), read("f"), stat("f")]),
        sc("unlink_errors", vec![unlink("nope"), unlink("d"), unlink("d/gone"), unlink("f/x"), rmdir("f"), rmdir("nope"), rmdir("sym")]),
        sc("rmdir_lower_empty", vec![rmdir("empty"), stat("empty"), readdir("")]),
        sc("rmdir_notempty", vec![rmdir("d"), rmdir("opq"), rmdir("mt"), rmdir("deep/a")]),
        sc("rmdir_after_emptying_merged", vec![unlink("d/top"), unlink("d/bottom"), unlink("d/shared"), unlink("d/sub/s"), rmdir("d/sub"), readdir("d"), rmdir("d"), stat("d")]),
        sc("rmdir_mkdir_opaque", vec![unlink("bd/x/y"), rmdir("bd/x"), mkdir("bd/x", 0o700), readdir("bd/x"), stat("bd/x"), write("bd/x/n", "n")]),
        sc("rmdir_mkdir_merged_opaque", vec![unlink("d/top"), unlink("d/bottom"), unlink("d/shared"), unlink("d/sub/s"), rmdir("d/sub"), rmdir("d"), mkdir("d", 0o755), readdir("d"), stat("d/bottom")]),
        sc("rmdir_opaque_dir", vec![unlink("opq/new"), rmdir("opq"), stat("opq"), mkdir("opq", 0o755), readdir("opq")]),
        sc("unlink_file_mkdir", vec![unlink("f"), mkdir("f", 0o755), readdir("f"), stat("f")]),
        sc("unlink_file_over_dir_mkdir", vec![unlink("ft"), mkdir("ft", 0o755), readdir("ft")]),
        sc("rmdir_dir_over_file_create", vec![unlink("tf/inner"), rmdir("tf"), write("tf", "new\n"), read("tf")]),
        sc("rmdir_upper_only", vec![mkdir("n", 0o755), rmdir("n"), lstat("n")]),
        sc("create_over_whiteout", vec![write("d/gone", "back\n"), read("d/gone"), readdir("d")]),
        // rename
        sc("rename_file_same_dir", vec![rename("f", "g"), read("g"), lstat("f"), readdir("")]),
        sc("rename_file_across_dirs", vec![rename("f", "d/f"), rename("d/bottom", "bd/x/bottom"), readdir("d"), readdir("bd/x"), read("bd/x/bottom")]),
        sc("rename_over_lower", vec![rename("f", "b"), read("b"), lstat("f")]),
        sc("rename_over_upper", vec![write("u", "u"), rename("f", "u"), read("u")]),
        sc("rename_upper_over_lower", vec![write("u", "u"), rename("u", "d/shared"), read("d/shared"), readdir("d")]),
        sc("rename_noreplace", vec![rename_noreplace("f", "b"), rename_noreplace("f", "newname"), read("newname"), rename_noreplace("b", "d/gone"), read("d/gone")]),
        sc("rename_exchange_files", vec![rename_exchange("f", "b"), read("f"), read("b")]),
        sc("rename_exchange_missing", vec![rename_exchange("f", "nope")]),
        sc("rename_exchange_upper_dirs", vec![mkdir("n1", 0o755), write("n1/a", "a"), mkdir("n2", 0o700), rename_exchange("n1", "n2"), readdir("n1"), readdir("n2"), stat("n1")]),
        sc("rename_exchange_file_dir", vec![mkdir("n", 0o755), write("u", "u"), rename_exchange("u", "n"), lstat("u"), lstat("n")]),
        sc("rename_lower_dir_exdev", vec![rename("d", "d2"), rename("empty", "e2"), rename("bd/x", "x2"), rename("deep/a", "d/a")]),
        sc("rename_upper_dir", vec![mkdir("n", 0o755), write("n/x", "x"), rename("n", "m"), readdir("m"), read("m/x"), rename("m", "d/m"), readdir("d/m")]),
        sc("rename_upper_dir_over_empty_lower_dir", vec![mkdir("n", 0o755), write("n/x", "x"), rename("n", "empty"), readdir("empty"), stat("empty")]),
        sc("rename_upper_dir_over_merged_dir", vec![mkdir("n", 0o755), rename("n", "d"), readdir("d")]),
        sc("rename_file_dir_errors", vec![rename("f", "d"), rename("d", "f"), rename("empty", "f"), rename("f", "nope/x"), rename("nope", "x")]),
        sc("rename_over_whiteout", vec![unlink("b"), rename("f", "b"), read("b"), readdir("")]),
        sc("rename_to_self", vec![rename("f", "f"), read("f"), rename("hl1", "hl2"), readdir("")]),
        sc("rename_symlink_fifo", vec![rename("sym", "d/sym"), readlink("d/sym"), read("d/sym"), rename("fifo", "d/fifo"), lstat("d/fifo")]),
        sc("rename_copied_up_then_back", vec![append("f", "x"), rename("f", "g"), rename("g", "f"), read("f"), lstat("g")]),
        sc("rename_out_of_opaque", vec![rename("opq/new", "new"), readdir("opq"), read("new")]),
        sc("rename_upper_dir_over_whiteout", vec![mkdir("n", 0o755), write("n/x", "x"), unlink("sym"), rename("n", "sym"), readdir("sym"), lstat("sym")]),
        sc("rename_whiteout_flag", vec![Op::Rename("f".into(), "g".into(), libc::RENAME_WHITEOUT), readdir("")]),
        // Directory renames: EXDEV in legacy mode, redirects (redirect_dir=on) in features mode.
        sc("rdir_same_dir", vec![rename("d", "d2"), readdir("d2"), read("d2/top"), read("d2/bottom"), read("d2/shared"), lstat("d2/gone"), lstat("d"), readdir(""), readdir("d2/sub"), read("d2/sub/s"), stat("d2")]),
        sc("rdir_across_dirs", vec![rename("d", "bd/x/d"), readdir("bd/x/d"), read("bd/x/d/shared"), readdir("bd/x"), readdir("bd"), lstat("d"), readdir("")]),
        sc("rdir_levels", vec![rename("deep/a/b", "b2"), readdir("b2"), read("b2/c/file"), rename("deep/a", "d/a"), readdir("d/a"), readdir("deep"), readdir("d")]),
        sc("rdir_twice", vec![rename("d", "d2"), rename("d2", "bd/d3"), readdir("bd/d3"), read("bd/d3/top"), readdir(""), Op::Remount, readdir("bd/d3"), read("bd/d3/sub/s")]),
        sc("rdir_back", vec![rename("d", "d2"), rename("d2", "d"), readdir("d"), readdir(""), read("d/top"), rename("d", "bd/d"), rename("bd/d", "d"), readdir("d"), readdir("bd")]),
        sc("rdir_over_whiteout", vec![rename("d", "gone_root"), readdir("gone_root"), unlink("b"), rename("bd", "b"), readdir("b"), readdir("")]),
        sc("rdir_over_empty_lower_dir", vec![rename("d", "empty"), readdir("empty"), read("empty/top"), lstat("d")]),
        sc("rdir_remove_after", vec![rename("empty", "e2"), rmdir("e2"), lstat("empty"), readdir(""), rename("bd/x", "x2"), readdir("x2")]),
        sc("rdir_change_inside", vec![rename("d", "d2"), write("d2/top", "new"), unlink("d2/bottom"), mkdir("d2/nd", 0o755), append("d2/shared", "+"), readdir("d2"), rename("d2/sub", "d2/sub2"), readdir("d2/sub2"), Op::Remount, readdir("d2"), read("d2/top")]),
        sc("rdir_mkdir_old_name", vec![rename("d", "d2"), mkdir("d", 0o755), readdir("d"), readdir("d2"), write("d/n", "n"), readdir("")]),
        sc("rdir_nested", vec![rename("deep/a", "a2"), rename("a2/b", "b2"), readdir("b2/c"), read("b2/c/file"), rename("a2", "a3"), readdir("a3"), Op::Remount, readdir("b2"), readdir("a3")]),
        sc("rdir_samedir_in_redirected", vec![rename("deep/a", "a2"), rename("a2/b", "a2/b2"), readdir("a2/b2/c"), read("a2/b2/c/file"), rename("a2", "d/a2"), readdir("d/a2/b2"), Op::Remount, readdir("d/a2/b2/c")]),
        sc("rdir_exchange", vec![rename_exchange("d", "bd"), readdir("d"), readdir("bd"), rename_exchange("opq", "xd"), readdir("opq"), readdir("xd")]),
        sc("rdir_noreplace_and_errors", vec![rename_noreplace("d", "bd"), rename("d", "bd"), rename("d", "d/sub/x"), rename_noreplace("d", "dd"), readdir("dd")]),
        sc("rdir_ino_keeps", vec![ino_save("d", 0), ino_save("d/top", 1), rename("d", "d2"), ino_same("d2", 0), ino_same("d2/top", 1)]),
        scf("rdir_upper_has_redirects", with_redirects, vec![readdir(""), readdir("rel"), read("rel/top"), read("rel/up"), readdir("rel/sub"), readdir("bd/abs"), read("bd/abs/b/c/file"), readdir("deep"), readdir("nowhere"), lstat("d")]),
        scf("rdir_upper_has_redirects_changes", with_redirects, vec![write("rel/top", "t"), unlink("rel/bottom"), rename("rel", "bd/rel2"), readdir("bd/rel2"), rename("bd/abs", "abs2"), readdir("abs2/b"), rmdir("nowhere"), readdir("")]),
        scf("rdir_lower_has_redirects", lower_redirects, vec![readdir(""), readdir("r"), read("r/low"), readdir("r/inner"), read("r/inner/f"), lstat("r/hidden"), readdir("sub/a"), read("sub/a/y"), readdir("deep/x")]),
        scf("rdir_lower_has_redirects_changes", lower_redirects, vec![write("r/inner/f", "n"), readdir("r"), rename("r", "r2"), readdir("r2/inner"), read("r2/low"), rename("sub/a", "a2"), readdir("a2"), Op::Remount, readdir("r2"), readdir("a2"), read("r2/inner/f")]),
        sc("rename_hidden_source", vec![rename("d/gone", "x"), rename("opq/old", "x")]),
        // Hard links.
        sc("link_lower_file", vec![link("f", "d/f2"), stat("f"), stat("d/f2"), ino_save("f", 0), ino_same("d/f2", 0)]),
        sc("link_lower_hardlink", vec![link("hl1", "d/hl3"), stat("hl1"), stat("hl2"), ino_save("hl1", 0), ino_same("hl2", 0), ino_same("d/hl3", 0)]),
        sc("link_errors", vec![link("f", "b"), link("d", "d3"), link("nope", "x"), link("f", "nope/x"), link("d/gone", "x")]),
        sc("link_then_write", vec![link("b", "b2"), append("b2", "more\n"), read("b"), unlink("b"), read("b2"), stat("b2")]),
        sc("link_upper_file", vec![write("u", "u"), link("u", "u2"), stat("u"), stat("u2")]),
        sc("link_symlink_and_special", vec![link("sym", "sym2"), lstat("sym2"), link("fifo", "fifo2"), lstat("fifo")]),
        // Creating names.
        sc("mkdir_new", vec![mkdir("n", 0o750), stat("n"), mkdir("d/n", 0o700), stat("d/n"), readdir("d")]),
        sc("mkdir_errors", vec![mkdir("d", 0o755), mkdir("f", 0o755), mkdir("nope/x", 0o755), mkdir("f/x", 0o755), mkdir("sym", 0o755)]),
        sc("mkdir_deep_in_lower", vec![mkdir("deep/a/b/c/n", 0o755), stat("deep/a/b/c"), readdir("deep/a/b/c")]),
        sc("symlink_new", vec![symlink("target", "s"), readlink("s"), lstat("s"), symlink("x", "f"), symlink("../f", "d/s"), read("d/s")]),
        sc("mknod_all", vec![mknod("p", Kind::Fifo, 0o640, 0, 0), mknod("c", Kind::Chr, 0o600, 1, 5), mknod("bk", Kind::Blk, 0o600, 7, 1), mknod("so", Kind::Sock, 0o755, 0, 0), mknod("r", Kind::Reg, 0o600, 0, 0), lstat("p"), lstat("c"), lstat("bk"), lstat("so"), lstat("r"), mknod("f", Kind::Fifo, 0o644, 0, 0)]),
        sc("mknod_whiteout_dev", vec![mknod("w", Kind::Chr, 0o600, 0, 0), lstat("w"), readdir("")]),
        sc("create_excl", vec![open_flags("f", O_WRONLY | O_CREAT | O_EXCL, 0o644), open_flags("d/gone", O_WRONLY | O_CREAT | O_EXCL, 0o600), stat("d/gone"), open_flags("new", O_RDWR | O_CREAT | O_EXCL, 0o640), stat("new")]),
        sc("create_in_opaque_and_whited", vec![write("opq/old", "o"), readdir("opq"), write("gone_root", "g"), stat("gone_root")]),
        sc("open_append", vec![fd_open(0, "f", O_WRONLY | O_APPEND), fd_write(0, "a"), fd_write(0, "b"), Op::FdClose(0), read("f")]),
        sc("open_errors", vec![open_flags("d", O_WRONLY, 0), open_flags("d", O_RDWR, 0), open_flags("nope", O_RDONLY, 0), open_flags("nope/x", O_WRONLY | O_CREAT, 0o644), open_flags("sym", O_RDONLY | O_NOFOLLOW, 0), open_flags("d", O_RDONLY | O_CREAT, 0o644)]),
        sc("open_creat_existing", vec![open_flags("f", O_WRONLY | O_CREAT, 0o600), stat("f"), read("f")]),
        // xattrs
        sc("xattr_new_file", vec![write("n", "n"), setx("n", "user.a", "1"), setx("n", "user.b", "2"), listx("n"), getx("n", "user.a"), rmx("n", "user.a"), listx("n")]),
        sc("xattr_flags", vec![setx_flags("xa", "user.foo", "x", XATTR_CREATE), setx_flags("xa", "user.zzz", "x", XATTR_REPLACE), setx_flags("xa", "user.foo", "new", XATTR_REPLACE), getx("xa", "user.foo")]),
        sc("xattr_overlay_private", vec![setx("f", "trusted.overlay.opaque", "y"), setx("f", "trusted.overlay.foo", "1"), getx("opq", "trusted.overlay.opaque"), listx("opq"), listx("f")]),
        sc("xattr_symlink", vec![setx("sym", "user.x", "1"), getx("sym", "user.x"), setx("sym", "trusted.s", "1"), listx("sym")]),
        sc("xattr_large_value", vec![Op::SetXattr("f".into(), "user.big".into(), pattern(3000, 1).into(), 0), getx("f", "user.big")]),
        sc("xattr_on_special", vec![setx("fifo", "trusted.p", "1"), listx("fifo"), setx("fifo", "user.p", "1")]),
        // statfs, sync, fallocate, seek, copy_file_range, access.
        sc("statfs_sane", vec![Op::Statfs("".into()), Op::Statfs("d".into()), Op::Statfs("f".into())]),
        sc("fsync_variants", vec![Op::Fsync("b".into(), false), Op::Fsync("f".into(), true), Op::FsyncDir("".into()), Op::FsyncDir("d".into()), stat("b")]),
        sc("fallocate", vec![Op::Fallocate("f".into(), 0, 0, 65536), stat("f"), Op::Fallocate("b".into(), KEEP_SIZE, 0, 65536), stat("b"), Op::Fallocate("sparse".into(), PUNCH_HOLE | KEEP_SIZE, 0, 4096), seek_data("sparse", 0)]),
        sc("fallocate_zero_range", vec![Op::Fallocate("d/bottom".into(), ZERO_RANGE, 0, 3), read("d/bottom")]),
        sc("seek_lower_sparse", vec![seek_data("sparse", 0), seek_hole("sparse", 0), seek_data("sparse", MIB), seek_hole("sparse", 3 * MIB), seek_data("sparse", 5 * MIB - 1), seek_hole("f", 0), seek_data("f", 100), seek_data("emptyfile", 0)]),
        sc("copy_file_range", vec![Op::CopyRange("f".into(), "cp".into(), 0, 0, 6), read("cp"), Op::CopyRange("b".into(), "f".into(), 0, 2, 3), read("f"), Op::CopyRange("sparse".into(), "sp2".into(), 0, 0, 5 * MIB), stat("sp2")]),
        sc("access_modes", vec![access("f", 0), access("f", (R_OK | W_OK) as u32), access("suid", X_OK as u32), access("f", X_OK as u32), access("nope", 0), access("d/gone", 0), access("ro", W_OK as u32)]),
        // Inode numbers (each implementation against itself).
        sc("ino_stable_copyup", vec![ino_save("f", 0), chmod("f", 0o600), ino_same("f", 0), ino_save("d/bottom", 1), append("d/bottom", "x"), ino_same("d/bottom", 1), ino_save("bd/x", 2), chmod("bd/x", 0o700), ino_same("bd/x", 2)]),
        sc("ino_stable_remount", vec![ino_save("f", 0), ino_save("d", 1), append("b", "x"), ino_save("b", 3), write("n", "n"), ino_save("n", 4), ino_save("", 5), ino_save("bd/x/y", 6), Op::Remount, ino_same("f", 0), ino_same("d", 1), ino_same("b", 3), ino_same("n", 4), ino_same("", 5), ino_same("bd/x/y", 6), append("f", "y"), ino_same("f", 0)]),
        sc("ino_rename_keeps", vec![ino_save("f", 0), rename("f", "d/g"), ino_same("d/g", 0), write("u", "u"), ino_save("u", 1), rename("u", "v"), ino_same("v", 1)]),
        sc("ino_hardlink_shared", vec![link("f", "f2"), ino_save("f", 0), ino_same("f2", 0), Op::Remount, ino_save("f", 1), ino_same("f2", 1), ino_same("f", 0)]),
        sc("remount_persists", vec![write("n", "n"), unlink("b"), mkdir("nd", 0o700), rename("f", "g"), Op::Remount, readdir(""), read("g"), lstat("b")]),
        // Open file descriptors.
        sc("fd_unlinked_readable", vec![fd_open(0, "f", O_RDONLY), unlink("f"), Op::FdRead(0, 100), Op::FdStat(0), lstat("f")]),
        sc("fd_write_after_unlink", vec![fd_open(0, "b", O_RDWR), unlink("b"), fd_write(0, "zz"), fd_pread(0, 0, 100), lstat("b")]),
        sc("fd_write_after_rename", vec![fd_open(0, "f", O_WRONLY), rename("f", "g"), fd_write(0, "W"), Op::FdClose(0), read("g")]),
        sc("fd_two_opens_see_writes", vec![fd_open(0, "f", O_RDWR), fd_write(0, "ABC"), fd_open(1, "f", O_RDONLY), Op::FdRead(1, 100), fd_pread(0, 0, 100)]),
        sc("fd_fsync", vec![fd_open(0, "f", O_RDWR | O_APPEND), fd_write(0, "x"), Op::FdFsync(0), Op::FdStat(0)]),
        // An unprivileged caller (fsuid/fsgid).
        sc("user_create_owner", vec![as_user(1000, 1000, write("pub/u", "u")), stat("pub/u"), as_user(1000, 1000, mkdir("pub/ud", 0o755)), stat("pub/ud"), as_user(1000, 1000, symlink("x", "pub/us")), lstat("pub/us")]),
        sc("user_denied", vec![as_user(1000, 1000, write("f", "x")), as_user(1000, 1000, read("secret")), as_user(1000, 1000, unlink("f")), as_user(1000, 1000, mkdir("d/n", 0o755)), as_user(1000, 1000, chmod("f", 0o777)), as_user(1000, 1000, chown("userdir/own", 0, 0)), read("f")]),
        sc("user_write_own", vec![as_user(1000, 1000, append("userdir/own", "x")), read("userdir/own"), stat("userdir/own"), as_user(1000, 1000, write("userdir/new", "n")), stat("userdir/new")]),
        sc("user_write_clears_suid", vec![as_user(1000, 1000, append("usuid", "x")), stat("usuid")]),
        // A write clears security.capability (the kernel asks for it before every write; the
        // daemon remembers a file's "none" until a setxattr): set, write, set again, write.
        sc("write_clears_caps", vec![getx("f", CAP), setx("f", CAP, CAP_V), getx("f", CAP), append("f", "x"), getx("f", CAP), append("f", "y"), setx("f", CAP, CAP_V), getx("f", CAP), append("f", "z"), getx("f", CAP), read("f"), setx("usuid", CAP, CAP_V), as_user(1000, 1000, append("usuid", "x")), stat("usuid"), getx("usuid", CAP)]),
        sc("user_chmod_own", vec![as_user(1000, 1000, chmod("userdir/own", 0o600)), stat("userdir/own"), as_user(1000, 1000, chmod("userdir", 0o700)), stat("userdir"), as_user(1000, 1000, setx("userdir/own", "user.u", "1")), listx("userdir/own")]),
        sc("user_sticky", vec![as_user(1000, 1000, unlink("sticky/rootfile")), as_user(1000, 1000, write("sticky/mine", "m")), as_user(1000, 1000, unlink("sticky/mine")), readdir("sticky")]),
        sc("setgid_dir_inherit", vec![write("sgiddir/f", "f"), stat("sgiddir/f"), mkdir("sgiddir/d", 0o755), stat("sgiddir/d"), as_user(1000, 1000, write("pub/x", "x")), stat("pub/x")]),
        sc("user_traverse", vec![as_user(3000, 3000, read("deep/a/b/c/file")), as_user(1000, 1000, stat("deep/a/b/c/file")), as_user(1000, 1000, readdir("deep/a")), as_user(2000, 2001, read("deep/a/b/c/file"))]),
        // Read-only mounts (no upper).
        ro("ro_reads", base, vec![readdir(""), read("d/shared"), stat("f"), listx("xa"), readdir_seek_op("d"), access("f", W_OK as u32), Op::Statfs("".into()), readdir("d")]),
        ro("ro_writes_erofs", base, vec![write("f", "x"), write("new", "x"), append("f", "x"), truncate("f", 0), unlink("f"), rmdir("empty"), mkdir("n", 0o755), chmod("f", 0o600), chown("f", 1, 1), utimes("f", 1, 1), setx("f", "user.x", "1"), rmx("xa", "user.foo"), rename("f", "g"), link("f", "g"), symlink("x", "s"), mknod("p", Kind::Fifo, 0o644, 0, 0), open_flags("f", O_RDWR, 0), open_flags("f", O_RDONLY | O_TRUNC, 0)]),
        ro("ro_single_lower", single, vec![readdir(""), read("a"), write("a", "x"), readdir("dir"), stat("dir/x")]),
        // Other fixtures.
        scf("three_layers", three, vec![readdir("x"), read("x/a"), read("x/b"), read("x/c"), readdir("y"), read("z"), unlink("x/b"), unlink("x/c"), readdir("x"), unlink("x/top"), rmdir("x"), mkdir("x", 0o755), readdir("x")]),
        scf("three_layers_copyup", three, vec![append("y/m", "+"), write("x/a", "new"), readdir("x"), readdir("y"), read("z")]),
        scf("upper_prepopulated", with_upper, vec![readdir(""), readdir("d"), read("d/top"), readdir("bd"), read("f"), lstat("b"), unlink("d/u"), rmdir("d"), mkdir("d", 0o700), readdir("d")]),
        scf("upper_prepopulated_writes", with_upper, vec![append("f", "+"), write("b", "b-again"), rename("u", "d/u2"), readdir("d"), unlink("bd/new"), readdir("bd")]),
    ]
}

#[test]
fn differential_scenarios() {
    common::require_root();
    let all = scenarios();
    assert!(all.len() >= 80, "the issue asks for at least 80 scenarios");
    run_all(all, Style::Overlay, Mode::Features);
}

/// The same scenarios with the kernel's defaults (directory renames give EXDEV) and layerfs
/// told `redirect_dir=off`.
#[test]
fn differential_scenarios_legacy() {
    common::require_root();
    run_all(scenarios(), Style::Overlay, Mode::Legacy);
}
