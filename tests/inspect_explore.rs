//! `layerfs explore` driven in tmux (an 80x24 pane): browse, changes only, view a file,
//! extract it, diff against another image, switch layers, quit; every step asserts on the
//! captured screen text.
mod inspect_common;
mod store_common;

use std::process::Command;
use std::time::{Duration, Instant};

use inspect_common::{Env, base_layer, v2_layer};
use store_common::Layer;

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str) -> Option<Tmux> {
        let socket = format!("lfs-explore-{}", std::process::id());
        let st = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .arg(cmd)
            .status()
            .ok()?;
        assert!(st.success(), "tmux new-session failed");
        Some(Tmux { socket })
    }

    fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn text(&self, s: &str) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "-l", s])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Polls the pane until `pred` holds (10 s at most); returns the screen.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "t"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The tree row of `name` (its mark and size columns), if shown.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find_map(|l| {
        let right = l.split('\u{2502}').nth(3)?;
        let t = right.trim_end();
        (t.ends_with(&format!(" {name}")) || t.ends_with(&format!(" {name}/"))).then_some(t)
    })
}

#[test]
fn browse_view_extract_diff() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipping: tmux is not installed (scripts/install-deps installs it)");
        return;
    }
    env.load_image(&[base_layer(), v2_layer()], "test/v2:latest", None);
    let mut l3 = Layer::new();
    l3.file("new3", b"three", 0o644);
    env.load_image(
        &[base_layer(), v2_layer(), l3.bytes()],
        "test/v3:latest",
        None,
    );
    let cmd = format!(
        "{} --root {} explore test/v2",
        env!("CARGO_BIN_EXE_layerfs"),
        env.root.display()
    );
    let t = Tmux::start(&cmd).unwrap();

    // Opening screen: both layers, the top one selected, the merged root marked, the keys.
    let s = t.wait("the explorer", |s| {
        s.contains("Layers") && s.contains("wasfile")
    });
    assert!(s.contains("> 1 +1.126kB A3 C12 D2"), "{s}");
    assert!(s.contains("  0 +1.119kB A19 C0 D0"), "{s}");
    assert!(
        s.contains("q:quit") && s.contains("x:extract") && s.contains("d:diff"),
        "{s}"
    );
    assert!(row(&s, "big").unwrap().starts_with("C     1kB"), "{s}");
    assert!(row(&s, "etc").unwrap().starts_with("C      "), "{s}");

    // Into the tree; expand /etc: conf changed, new added, keep unchanged.
    t.keys(&["Tab", "Down", "Down", "Down", "Enter"]);
    let s = t.wait("/etc expanded", |s| row(s, "keep").is_some());
    assert!(row(&s, "conf").unwrap().starts_with("C      4B"), "{s}");
    assert!(row(&s, "new").unwrap().starts_with("A      1B"), "{s}");
    assert!(row(&s, "keep").unwrap().starts_with("       1B"), "{s}");
    eprintln!("explorer screen (layer 1, /etc open):\n{s}");

    // Changes only: keep disappears.
    t.keys(&["c"]);
    let s = t.wait("changes only", |s| s.contains("[changes only]"));
    assert!(row(&s, "keep").is_none(), "{s}");
    assert!(row(&s, "conf").is_some(), "{s}");

    // View /etc/conf.
    t.keys(&["Down", "v"]);
    let s = t.wait("the file view", |s| s.contains("/etc/conf (layer 1)"));
    assert!(s.contains("v2v2"), "{s}");
    t.keys(&["q"]);
    t.wait("back to the tree", |s| row(s, "conf").is_some());

    // Extract it.
    let dest = env.tmp.path().join("conf.out");
    t.keys(&["x"]);
    t.wait("the extract prompt", |s| s.contains("extract to: ./conf_"));
    t.keys(&["BSpace"; 6]);
    t.text(dest.to_str().unwrap());
    t.keys(&["Enter"]);
    let s = t.wait("extracted", |s| s.contains("extracted /etc/conf to"));
    assert_eq!(std::fs::read(&dest).unwrap(), b"v2v2", "{s}");

    // Diff against another image: v3 has /new3, which v2 lacks (D).
    t.keys(&["d"]);
    t.wait("the diff prompt", |s| s.contains("diff against image: _"));
    t.text("test/v3");
    t.keys(&["Enter"]);
    let s = t.wait("the comparison", |s| {
        s.contains("[vs test/v3]") && row(s, "new3").is_some()
    });
    assert!(row(&s, "new3").unwrap().starts_with("D      5B"), "{s}");
    // Everything else is the same between v2 and v3: with changes only, only new3 is left.
    assert!(row(&s, "etc").is_none() && row(&s, "big").is_none(), "{s}");
    eprintln!("explorer screen (diff against test/v3, changes only):\n{s}");

    // Back to the layer's own marks, then layer 0: everything there is added.
    t.keys(&["D", "c", "Tab", "Up"]);
    let s = t.wait("layer 0", |s| {
        s.contains("> 0 +") && s.contains("layers 0-0")
    });
    assert!(row(&s, "wasdir").unwrap().starts_with("A "), "{s}");
    assert!(row(&s, "opq").unwrap().starts_with("A "), "{s}");
    eprintln!("explorer screen (layer 0):\n{s}");

    // Sort by size (directories by their subtree): /big (1000 B) first, then /bin (100 B).
    t.keys(&["Tab", "s"]);
    let s = t.wait("sorted by size", |s| s.contains("[by size]"));
    let tree: Vec<&str> = s
        .lines()
        .filter_map(|l| l.split('\u{2502}').nth(3))
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        tree[0].ends_with(" big") && tree[1].ends_with(" bin/"),
        "{s}"
    );
    assert!(tree[1].starts_with("A    100B"), "{s}");
    // Expand and collapse /bin.
    t.keys(&["Down", "Right"]);
    t.wait("/bin open", |s| row(s, "tool").is_some());
    t.keys(&["Left"]);
    t.wait("/bin closed", |s| row(s, "tool").is_none());

    t.keys(&["q"]);
    let start = Instant::now();
    while t.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "explore did not quit"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}
