//! What a docker/podman user expects of the command line (issue 14): `--format` templates and
//! `inspect -f` over images and containers, one JSON schema, `version` and `info`, and the
//! footguns (a mount's hidden container, `--rm`, a non-empty mount point, commit's author,
//! `load -q`).
mod container_common;

use container_common::*;

const BASE: &[&str] = &["etc/hosts=127.0.0.1 localhost", "usr/bin/tool=#!/bin/sh"];

#[test]
fn format_templates_and_json_schemas() {
    let env = Env::new();
    let id = load_image(&env, "app:1", &[BASE]);
    env.ok(&["tag", "app:1", "example.com/team/app:2"]);
    let short = &id.hex()[..12];

    let out = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("app:1 {short}"),
            format!("example.com/team/app:2 {short}")
        ]
    );
    let out = env.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "table {{.Repository}}\t{{.ID}}",
    ]);
    let mut it = out.lines();
    assert_eq!(
        it.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "IMAGE", "ID"]
    );
    for l in it {
        assert!(l.ends_with(id.as_str()), "{out}");
    }
    // `--format json`: one object a line, with the template's fields.
    let out = env.ok(&["images", "--format", "json", "--filter", "reference=app"]);
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["Repository"], "app");
    assert_eq!(row["ID"], short);

    // --json: full IDs, null for what is absent, sizes in bytes.
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["images", "--json"])).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["Id"], id.as_str());
        assert!(r["Size"].as_u64().unwrap() > 0);
    }
    // The name given by tag has no repo digest: null, never a "<none>" string.
    let tagged = rows
        .iter()
        .find(|r| r["Repository"] == "example.com/team/app")
        .unwrap();
    assert!(tagged["Digest"].is_null(), "{tagged}");
    assert_eq!(tagged["Tag"], "2");
    let h: serde_json::Value =
        serde_json::from_str(&env.ok(&["history", "app:1", "--json"])).unwrap();
    assert_eq!(h[0]["Id"], id.as_str());

    let out = env.ok(&["history", "app:1", "--format", "{{.ID}}|{{.Size}}"]);
    assert!(out.starts_with(&format!("{short}|")), "{out}");

    // inspect -f: nested fields, json, range; and a container by name.
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Id}}", "app:1"]),
        format!("{id}\n")
    );
    assert_eq!(
        env.ok(&[
            "inspect",
            "-f",
            "{{len .RootFS.Layers}} {{json .RepoTags}}",
            "app:1"
        ]),
        "1 [\"app:1\",\"example.com/team/app:2\"]\n"
    );
    let cid = env
        .ok(&["create", "app:1", "--name", "web"])
        .trim()
        .to_string();
    let c: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "web"])).unwrap();
    assert_eq!(c[0]["Id"], cid.as_str());
    assert_eq!(c[0]["Image"], id.as_str());
    assert_eq!(c[0]["State"]["Mounted"], false);
    assert!(
        c[0]["GraphDriver"]["Data"]["UpperDir"]
            .as_str()
            .unwrap()
            .ends_with("/upper")
    );
    assert_eq!(
        env.ok(&[
            "inspect",
            "--type",
            "container",
            "-f",
            "{{.Name}} {{.ImageName}}",
            &cid[..8]
        ]),
        "web app:1\n"
    );
    let err = env.fails(&["inspect", "--type", "image", "web"]);
    assert!(err.contains("no such image"), "{err}");
    let err = env.fails(&["inspect", "nothing-here"]);
    assert!(
        err.contains("no such image or container: nothing-here"),
        "{err}"
    );

    let out = env.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Image}}"]);
    assert_eq!(out, "web unmounted app:1\n");
    let err = env.fails(&["images", "--format", "{{.Repository"]);
    assert!(err.contains("unclosed action"), "{err}");
}

#[test]
fn version_and_info() {
    let env = Env::new();
    let out = env.ok(&["version"]);
    assert!(
        out.starts_with(&format!("layerfs {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(
        out.contains("FUSE protocol 7.") && out.contains("passthrough:"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["version", "-f", "json"])).unwrap();
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    assert!(!v["Commit"].as_str().unwrap().is_empty());

    load_image(&env, "app:1", &[BASE]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(v["Store"]["Images"], 1);
    assert_eq!(v["Store"]["Layers"], 1);
    assert_eq!(v["Store"]["Root"], env.root.to_str().unwrap());
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap();
    assert_eq!(v["Features"]["Overlay"], fs.contains("\toverlay\n"));
    assert_eq!(env.ok(&["info", "-f", "{{.Store.Containers}}"]), "0\n");
    // Typos get clap's suggestion instead of being read as a mount.
    let err = env.fails(&["verison"]);
    assert!(err.contains("'version'"), "{err}");
}

#[test]
fn mounting_an_image_says_it_makes_a_container_and_rm_removes_it() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    load_image(&env, "app:1", &[BASE]);
    let mnt = env.dir("m1");
    std::fs::write(mnt.join("hidden-file"), b"x").unwrap();
    let o = env.cmd(&["mount", "app:1", mnt.to_str().unwrap()]);
    let _g1 = MountGuard::new(&env, &mnt);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(id.len(), 64);
    assert!(err.contains("not empty"), "{err}");
    assert!(
        err.contains(&format!("new container {}", &id[..12])),
        "{err}"
    );
    assert!(env.ok(&["ps", "-a", "-q"]).contains(&id[..12]));
    env.ok(&["umount", mnt.to_str().unwrap()]);
    // Without --rm the container stays, with what it wrote.
    assert!(env.ok(&["ps", "-a", "-q"]).contains(&id[..12]));
    env.ok(&["rm", &id]);

    let mnt2 = env.dir("m2");
    let o = env.cmd(&[
        "mount",
        "--rm",
        "app:1",
        mnt2.to_str().unwrap(),
        "-o",
        "nonempty",
    ]);
    let _g2 = MountGuard::new(&env, &mnt2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("removed at umount") && !err.contains("not empty"),
        "{err}"
    );
    let id2 = String::from_utf8_lossy(&o.stdout).trim().to_string();
    std::fs::write(mnt2.join("etc/new"), b"written").unwrap();
    assert!(env.ok(&["ps", "-q"]).contains(&id2[..12]));
    env.ok(&["umount", mnt2.to_str().unwrap()]);
    assert!(!is_mounted(&mnt2));
    assert_eq!(
        env.ok(&["ps", "-a", "-q"]),
        "",
        "--rm container left behind"
    );
    assert!(!env.root.join("containers").join(&id2).exists());
}

#[test]
fn commit_does_not_inherit_the_author_and_load_q_names_the_image() {
    let env = Env::new();
    let layout = env.path("layout");
    let src = env.dir("rootfs");
    populate(&src, BASE);
    let layer = pack(&src);
    oci_layout(&layout, &[layer], "app:1");
    // -q hides progress only: what was loaded is still printed, for scripts.
    let out = env.ok(&["load", "-q", "-i", layout.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: app:1\n");
    let o = env.cmd(&["load", "-i", layout.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Loaded image: app:1\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("already present"));

    let c = env.ok(&["create", "app:1"]).trim().to_string();
    env.ok(&["commit", "-a", "Jane <j@x>", &c, "app:2"]);
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Author}}", "app:2"]),
        "Jane <j@x>\n"
    );
    let c2 = env.ok(&["create", "app:2"]).trim().to_string();
    env.ok(&["commit", &c2, "app:3"]);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "app:3"])).unwrap();
    assert!(v[0]["Author"].is_null(), "{}", v[0]["Author"]);
}

#[test]
fn docker_basics_filters_import_and_prunes() {
    let env = Env::new();
    let a = load_image(&env, "app:1", &[BASE]);
    // Labels and times come from the config: make a second image by import, with a label.
    let src = env.dir("rootfs2");
    populate(&src, &["etc/os-release=ID=test", "bin/sh=#!", "empty/"]);
    let tarball = env.path("rootfs2.tar.gz");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | gzip > {}",
            src.display(),
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let id = env
        .ok(&[
            "import",
            "-q",
            tarball.to_str().unwrap(),
            "imp:1",
            "-c",
            "LABEL team=infra",
            "-c",
            "CMD [\"/bin/sh\"]",
            "-m",
            "from a tarball",
        ])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    // The layer is the tarball's tree.
    let chain = env.ok(&["inspect", "-f", "{{index .RootFS.Layers 0}}", "imp:1"]);
    let layer = env
        .root
        .join("layers")
        .join(&chain.trim()[7..])
        .join("diff");
    assert_eq!(tree(&layer), tree(&src));
    assert_eq!(
        env.ok(&[
            "inspect",
            "-f",
            "{{json .Config.Cmd}} {{.Config.Labels.team}}",
            "imp:1"
        ]),
        "[\"/bin/sh\"] infra\n"
    );
    assert_eq!(
        env.ok(&["history", "imp:1", "--format", "{{.Comment}}"]),
        "from a tarball\n"
    );
    // The same through standard input, plain tar.
    let plain = env.path("rootfs2.tar");
    let st = std::process::Command::new("tar")
        .args([
            "-C",
            src.to_str().unwrap(),
            "-cf",
            plain.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args([
            "--root",
            env.root.to_str().unwrap(),
            "import",
            "-",
            "imp:stdin",
        ])
        .stdin(std::fs::File::open(&plain).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = env.fails(&["import", env.path("nothing.tar").to_str().unwrap()]);
    assert!(err.contains("nothing.tar"), "{err}");

    // images REPO[:TAG] and the filters.
    let names = |args: &[&str]| {
        let mut v: Vec<String> = env
            .ok(&[&["images", "--format", "{{.Repository}}:{{.Tag}}"], args].concat())
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&["app"]), ["app:1"]);
    assert_eq!(names(&["imp:stdin"]), ["imp:stdin"]);
    assert_eq!(names(&["-f", "label=team=infra"]), ["imp:1"]);
    assert_eq!(names(&["-f", "label=team"]), ["imp:1"]);
    assert!(names(&["-f", "label=team=other"]).is_empty());
    // app:1 was created in 2024; the imports now.
    assert_eq!(names(&["-f", "before=imp:1"]), ["app:1"]);
    assert!(names(&["-f", "since=app:1"]).contains(&"imp:1".to_string()));

    // ps --filter
    let c1 = env
        .ok(&["create", "app:1", "--name", "one"])
        .trim()
        .to_string();
    env.ok(&["create", "imp:1", "--name", "two"]);
    assert_eq!(
        env.ok(&["ps", "-a", "-q", "--no-trunc", "-f", "name=one"]),
        format!("{c1}\n")
    );
    assert_eq!(
        env.ok(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "-f",
            &format!("ancestor={}", &a.hex()[..12])
        ]),
        "one\n"
    );
    assert_eq!(
        env.ok(&["ps", "--format", "{{.Names}}", "-f", "status=mounted"]),
        ""
    );
    assert_eq!(
        env.ok(&["ps", "-a", "-q", "-f", "status=unmounted"])
            .lines()
            .count(),
        2
    );
    env.fails(&["ps", "-f", "bogus=1"]);

    // container prune asks; -f removes every unmounted container.
    let o = env.cmd(&["container", "prune"]);
    assert!(o.status.success());
    assert_eq!(env.ok(&["ps", "-a", "-q"]).lines().count(), 2);
    let out = env.ok(&["container", "prune", "-f"]);
    assert!(
        out.starts_with("Deleted Containers:\n") && out.contains(&c1),
        "{out}"
    );
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");

    // system prune -a -f: every unused image goes.
    env.ok(&["create", "imp:1", "--name", "keep"]);
    let out = env.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .count(),
        0
    );
    let df = env.ok(&["system", "df"]);
    assert!(df.contains("Images"), "{df}");
}
