//! `layerfs layers` and `layerfs efficiency` on images built in the test; efficiency and wasted
//! bytes checked against numbers worked out by hand and against a direct computation of
//! dive's formula from the layer specs (not from the extracted layers).
mod inspect_common;
mod store_common;

use std::collections::BTreeMap;

use inspect_common::{Env, base_layer, v2_layer};
use store_common::Layer;

#[test]
fn layers_lists_each_layer() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    env.load_image(&[base_layer(), v2_layer()], "test/v2:latest", None);
    let chain = env.layer_chain("test/v2", 1);
    let summary = env.ok(&["layers", "test/v2", "--summary"]);
    let want1 = format!(
        "Layer 1 {}: 3 added, 12 modified, 2 removed; +1.126kB -4B\n  created by: RUN step 1\n",
        &chain[7..19]
    );
    assert!(summary.ends_with(&want1), "{summary}");
    assert!(
        summary.starts_with("Layer 0 ") && summary.contains(": 19 added, 0 modified, 0 removed;"),
        "{summary}"
    );
    let by_size = env.ok(&["layers", "test/v2", "--layer", "1", "--sort", "size"]);
    let lines: Vec<&str> = by_size.lines().skip(2).take(4).collect();
    assert_eq!(
        lines,
        [
            "  C      1kB /big",
            "  C     100B /bin/tool",
            "  C      10B /wasdir",
            "  C       7B /link"
        ],
        "{by_size}"
    );
    let etc = env.ok(&["layers", "test/v2", "--layer", "1", "--filter", "/etc"]);
    assert_eq!(
        etc.lines().skip(2).collect::<Vec<_>>(),
        [
            "  C       0B /etc",
            "  C       4B /etc/conf",
            "  A       1B /etc/new"
        ]
    );
    let glob = env.ok(&["layers", "test/v2", "--layer", "1", "--filter", "/opq/*"]);
    assert_eq!(
        glob.lines().skip(2).collect::<Vec<_>>(),
        ["  A       1B /opq/fresh", "  D       1B /opq/hidden"]
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["layers", "test/v2", "--json"])).unwrap();
    assert_eq!(v[1]["Totals"]["RemovedBytes"], 4);
    assert_eq!(v[1]["Id"], chain);
    let e = env.fails(&["layers", "test/v2", "--layer", "2"]);
    assert!(e.contains("has 2 layers"), "{e}");
}

#[test]
fn efficiency_by_hand() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    let mut l0 = Layer::new();
    l0.file("a", &[1; 100], 0o644)
        .file("b", &[2; 50], 0o644)
        .file("d/x", &[3; 10], 0o644)
        .file("d/y", &[4; 20], 0o644)
        .file("keep", &[5; 5], 0o644);
    let mut l1 = Layer::new();
    l1.file("a", &[6; 100], 0o644)
        .whiteout("", "b")
        .whiteout("", "d")
        .file("new", &[7; 30], 0o644);
    let mut l2 = Layer::new();
    l2.file("a", &[8; 40], 0o644);
    env.load_image(&[l0.bytes(), l1.bytes(), l2.bytes()], "eff:1", None);
    // Leaves: /a 100,100,40; /b 50 then its whiteout 0 (a file below); /d's whiteout 30 (the
    // directory it deletes); /d/x 10; /d/y 20; /keep 5; /new 30.
    // Σmin = 40+0+30+10+20+5+30 = 135; Σcumulative = 240+50+30+10+20+5+30 = 385.
    // Wasted: /a 240 + /b 50 = 290; layer sizes 185, 130, 40; user size 170.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["efficiency", "eff:1", "--json"])).unwrap();
    assert!(
        (v["Efficiency"].as_f64().unwrap() - 135.0 / 385.0).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(v["WastedBytes"], 290);
    assert_eq!(v["LayerSizes"], serde_json::json!([185, 130, 40]));
    assert_eq!(v["UserSizeBytes"], 170);
    assert!((v["UserWastedPercent"].as_f64().unwrap() - 290.0 / 170.0).abs() < 1e-12);
    assert_eq!(
        v["Inefficiencies"],
        serde_json::json!([
            {"Path": "/a", "Count": 3, "CumulativeSize": 240},
            {"Path": "/b", "Count": 2, "CumulativeSize": 50},
        ])
    );
    let text = env.ok(&["efficiency", "eff:1"]);
    assert!(
        text.starts_with("efficiency: 35.0649 %\nwasted bytes: 290B (290 bytes)\n"),
        "{text}"
    );
    assert!(
        text.contains("COUNT  TOTAL SPACE  PATH\n3      240B         /a\n2      50B          /b\n"),
        "{text}"
    );

    // CI: dive's defaults fail this image (efficiency 0.35 < 0.9), exit status 1.
    let o = env.cmd(&["efficiency", "eff:1", "--ci"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAIL lowestEfficiency"), "{out}");
    assert!(out.contains("FAIL highestUserWastedPercent"), "{out}");
    assert!(out.contains("SKIP highestWastedBytes: disabled"), "{out}");
    assert!(out.ends_with("result: FAIL\n"), "{out}");
    // Thresholds exactly at the values pass (dive fails strictly below / above).
    let pass = env.ok(&[
        "efficiency",
        "eff:1",
        "--ci",
        "--lowest-efficiency",
        "0.35",
        "--highest-wasted-bytes",
        "290",
        "--highest-user-wasted-percent",
        "disabled",
    ]);
    assert!(pass.ends_with("result: PASS\n"), "{pass}");
    let o = env.cmd(&[
        "efficiency",
        "eff:1",
        "--ci",
        "--lowest-efficiency",
        "0",
        "--highest-wasted-bytes",
        "289B",
        "--highest-user-wasted-percent",
        "off",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL highestWastedBytes"));
    let e = env.fails(&["efficiency", "eff:1", "--ci", "--lowest-efficiency", "90"]);
    assert!(e.contains("between 0 and 1"), "{e}");
}

/// A layer spec: paths with Some(size) (a file) or None (a whiteout).
type Spec = Vec<(String, Option<u64>)>;

/// dive's formula computed straight from the specs: (efficiency, wasted, user %, top list).
fn dive_model(layers: &[Spec]) -> (f64, u64, f64, Vec<(String, usize, u64)>) {
    let mut stacked: BTreeMap<String, u64> = BTreeMap::new();
    let mut per: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    let mut sizes = Vec::new();
    for spec in layers {
        let mut layer_size = 0;
        for (p, s) in spec {
            let size = match s {
                Some(n) => {
                    layer_size += n;
                    *n
                }
                // A whiteout weighs the directory subtree it deletes, a deleted file nothing.
                None => stacked
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{p}/")))
                    .map(|(_, v)| v)
                    .sum(),
            };
            let e = per.entry(format!("/{p}")).or_insert((0, 0, u64::MAX));
            e.0 += 1;
            e.1 += size;
            e.2 = e.2.min(size);
        }
        for (p, s) in spec {
            match s {
                Some(n) => {
                    stacked.insert(p.clone(), *n);
                }
                None => stacked.retain(|k, _| k != p && !k.starts_with(&format!("{p}/"))),
            }
        }
        sizes.push(layer_size);
    }
    let min: u64 = per.values().map(|v| v.2).sum();
    let cum: u64 = per.values().map(|v| v.1).sum();
    let mut top: Vec<(String, usize, u64)> = per
        .into_iter()
        .filter(|(_, v)| v.0 >= 2)
        .map(|(k, v)| (k, v.0, v.1))
        .collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let wasted: u64 = top.iter().map(|t| t.2).sum();
    let user: u64 = sizes.iter().skip(1).sum();
    let eff = if cum == 0 {
        1.0
    } else {
        min as f64 / cum as f64
    };
    let pct = if user == 0 {
        0.0
    } else {
        wasted as f64 / user as f64
    };
    (eff, wasted, pct, top)
}

/// Seeded layer specs: files in three directories and at the top, overwritten (other sizes)
/// and deleted (files and whole directories) by later layers.
fn random_specs(seed: u64) -> Vec<Spec> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    let mut specs = Vec::new();
    for layer in 0..4 {
        let mut spec: Spec = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        let mut deleted_dirs: Vec<String> = Vec::new();
        for _ in 0..8 {
            let dir = format!("d{}", next(3));
            let path = if next(4) == 0 {
                format!("top{}", next(4))
            } else {
                format!("{dir}/f{}", next(5))
            };
            let under_deleted = deleted_dirs
                .iter()
                .any(|d| path.starts_with(&format!("{d}/")));
            if touched.contains(&path) || under_deleted {
                continue;
            }
            if layer > 0 && next(5) == 0 && live.contains_key(&path) {
                spec.push((path.clone(), None));
                live.remove(&path);
            } else if layer > 0
                && next(9) == 0
                && live.keys().any(|k| k.starts_with(&format!("{dir}/")))
            {
                if touched.iter().any(|t| t.starts_with(&format!("{dir}/"))) {
                    continue;
                }
                spec.push((dir.clone(), None));
                live.retain(|k, _| !k.starts_with(&format!("{dir}/")));
                deleted_dirs.push(dir.clone());
                touched.push(dir);
                continue;
            } else {
                let size = 1 + next(300);
                spec.push((path.clone(), Some(size)));
                live.insert(path.clone(), size);
            }
            touched.push(path);
        }
        specs.push(spec);
    }
    specs
}

fn tar_of(spec: &Spec) -> Vec<u8> {
    let mut l = Layer::new();
    for (p, s) in spec {
        match s {
            Some(n) => {
                l.file(p, &vec![b'z'; *n as usize], 0o644);
            }
            None => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                l.whiteout(dir, name);
            }
        }
    }
    l.bytes()
}

#[test]
fn efficiency_matches_dive_formula() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    let (mut dir_deletes, mut file_deletes) = (0, 0);
    for seed in 1..=6u64 {
        let specs = random_specs(seed);
        for (p, s) in specs.iter().flatten() {
            match (s, p.contains('/') || p.starts_with("top")) {
                (None, false) => dir_deletes += 1,
                (None, true) => file_deletes += 1,
                _ => {}
            }
        }
        let tars: Vec<Vec<u8>> = specs.iter().map(tar_of).collect();
        let name = format!("rnd:{seed}");
        env.load_image(&tars, &name, None);
        let (eff, wasted, pct, top) = dive_model(&specs);
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["efficiency", &name, "--json"])).unwrap();
        let got_eff = v["Efficiency"].as_f64().unwrap();
        assert!(
            (got_eff - eff).abs() < 1e-12,
            "seed {seed}: {got_eff} vs {eff}\n{specs:?}"
        );
        assert_eq!(v["WastedBytes"], wasted, "seed {seed}");
        assert!((v["UserWastedPercent"].as_f64().unwrap() - pct).abs() < 1e-12);
        let got_top: Vec<(String, usize, u64)> = v["Inefficiencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["Path"].as_str().unwrap().to_string(),
                    i["Count"].as_u64().unwrap() as usize,
                    i["CumulativeSize"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got_top, top, "seed {seed}");
        assert!(
            wasted > 0,
            "seed {seed}: the fixture should waste something"
        );
    }
    assert!(
        dir_deletes > 0 && file_deletes > 0,
        "{dir_deletes} {file_deletes}"
    );
}
