//! The bench report is pure over samples: table, JSON and SVG from synthetic samples.
use layerfs::bench::report::{
    Cache, Failure, ImplInfo, ImplStatus, Machine, Report, Sample, Settings, json, svg, table,
};

#[allow(clippy::too_many_arguments)]
fn sample(
    imp: &str,
    workload: &str,
    metric: &str,
    case: &str,
    x: f64,
    cache: Cache,
    secs: f64,
    ops: u64,
) -> Vec<Sample> {
    vec![Sample {
        implementation: imp.into(),
        workload: workload.into(),
        metric: metric.into(),
        case: case.into(),
        x: Some(x),
        cache,
        rep: 1,
        seconds: secs,
        ops,
        bytes: None,
    }]
}

fn reps(imp: &str, case: &str, x: f64, values: &[f64]) -> Vec<Sample> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Sample {
            rep: i as u32 + 1,
            ..sample(
                imp,
                "copy-up",
                "first 1-byte append",
                case,
                x,
                Cache::Cold,
                *v,
                1,
            )
            .remove(0)
        })
        .collect()
}

fn info(name: &str, status: ImplStatus) -> ImplInfo {
    ImplInfo {
        name: name.into(),
        command: format!("{name} -o lowerdir={{lowerdir}} {{mnt}}"),
        version: None,
        status,
    }
}

fn synthetic() -> Report {
    let mut samples = Vec::new();
    samples.extend(reps("overlay", "4 KiB", 4096.0, &[0.002, 0.001, 0.003]));
    samples.extend(reps(
        "fuse-overlayfs",
        "4 KiB",
        4096.0,
        &[0.004, 0.006, 0.005],
    ));
    samples.extend(reps("raw", "4 KiB", 4096.0, &[0.0001, 0.0001]));
    samples.extend(reps("overlay", "1 MiB", 1048576.0, &[0.01]));
    samples.extend(reps("fuse-overlayfs", "1 MiB", 1048576.0, &[0.02]));
    samples.extend(reps("raw", "1 MiB", 1048576.0, &[0.001]));
    for (layers, per_file) in [(1.0, 10e-6), (10.0, 40e-6), (100.0, 400e-6)] {
        let m = "stat, first after mount (per file)";
        let case = format!("{layers} layers");
        samples.extend(sample(
            "overlay",
            "lookup",
            m,
            &case,
            layers,
            Cache::Cold,
            per_file * 100.0,
            100,
        ));
        samples.extend(sample(
            "x&y",
            "lookup",
            m,
            &case,
            layers,
            Cache::Cold,
            per_file * 300.0,
            100,
        ));
    }
    samples.push(Sample {
        x: None,
        bytes: Some(1 << 30),
        ..sample(
            "raw",
            "read",
            "sequential read",
            "1 GiB file",
            0.0,
            Cache::Warm,
            0.5,
            1,
        )
        .remove(0)
    });
    Report {
        format: 1,
        tool: "layerfs test".into(),
        started_unix: 1,
        elapsed_seconds: 2.0,
        machine: Machine {
            kernel: "6.1.0-test".into(),
            cpus: 2,
            cpu_model: "Test CPU".into(),
            memory_bytes: 1 << 30,
            work_dir: "/var/tmp".into(),
            work_dir_fs: "ext4".into(),
            cold_caches: true,
        },
        settings: Settings {
            quick: true,
            seed: 7,
            workloads: vec!["copy-up".into(), "lookup".into(), "read".into()],
            reps: 3,
            budget_seconds: 2.0,
            jobs: 4,
        },
        implementations: vec![
            info(
                "layerfs",
                ImplStatus::Skipped {
                    reason: "mount: not implemented yet".into(),
                },
            ),
            info("overlay", ImplStatus::Ran),
            info("fuse-overlayfs", ImplStatus::Ran),
            info("raw", ImplStatus::Ran),
            info("x&y", ImplStatus::Ran),
        ],
        samples,
        failures: vec![Failure {
            implementation: "fuse-overlayfs".into(),
            workload: "untar".into(),
            error: "tar failed".into(),
        }],
    }
}

fn squash(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn table_has_medians_spreads_and_ratios() {
    let t = table::render(&synthetic());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "layerfs bench: kernel 6.1.0-test, 2 CPUs (Test CPU), work dir /var/tmp (ext4), \
         cold = page cache dropped before the timed span"
    );
    assert_eq!(
        squash(lines[1]),
        "median min – max n vs overlay vs raw rate"
    );
    let block: Vec<String> = lines[2..6].iter().map(|l| squash(l)).collect();
    assert_eq!(
        block,
        [
            "copy-up: first 1-byte append, 4 KiB (cold)",
            "overlay 2.00 ms 1.00 ms – 3.00 ms 3 1.00x 20.0x",
            "fuse-overlayfs 5.00 ms 4.00 ms – 6.00 ms 3 2.50x 50.0x",
            // raw's budget ran out after 2 repetitions where the others got 3: marked.
            "raw 100 µs 100 µs – 100 µs 2*/3 0.0500x 1.00x",
        ]
    );
    assert!(
        t.contains("\nn*/m: only n repetitions where another implementation in the row got m"),
        "{t}"
    );
    assert_eq!(
        squash(lines[6]),
        "copy-up: first 1-byte append, 1 MiB (cold)"
    );
    assert_eq!(
        squash(lines[7]),
        "overlay 10.0 ms 10.0 ms – 10.0 ms 1 1.00x 10.0x"
    );
    // Per-operation values: 100 stats in 1 ms is 10 µs each; x&y has no raw to compare with.
    let i = lines
        .iter()
        .position(|l| l.starts_with("lookup: stat, first after mount (per file), 1 layers"))
        .unwrap();
    assert_eq!(
        squash(lines[i + 1]),
        "overlay 10.0 µs 10.0 µs – 10.0 µs 1 1.00x -"
    );
    assert_eq!(
        squash(lines[i + 2]),
        "x&y 30.0 µs 30.0 µs – 30.0 µs 1 3.00x -"
    );
    // Throughput only where bytes are known.
    let r = lines
        .iter()
        .position(|l| l.starts_with("read: sequential read, 1 GiB file (warm)"))
        .unwrap();
    assert_eq!(
        squash(lines[r + 1]),
        "raw 500 ms 500 ms – 500 ms 1 - 1.00x 2.00 GiB/s"
    );
    // Right-aligned columns: every implementation line without a rate ends in the same column.
    let ends: Vec<usize> = lines
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && !l.ends_with("/s"))
        .map(|l| l.chars().count())
        .collect();
    assert!(ends.len() >= 10);
    assert!(ends.iter().all(|&e| e == ends[0]), "{ends:?}\n{t}");
    assert!(t.contains("\nskipped layerfs: mount: not implemented yet\n"));
    assert!(t.contains("\nfailed fuse-overlayfs / untar: tar failed\n"));
}

#[test]
fn json_keeps_every_sample_and_the_machine() {
    let r = synthetic();
    let text = json::to_string(&r).unwrap();
    assert_eq!(json::from_str(&text).unwrap(), r);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["machine"]["kernel"], "6.1.0-test");
    assert_eq!(v["machine"]["cpus"], 2);
    assert_eq!(v["machine"]["work_dir_fs"], "ext4");
    assert_eq!(v["samples"].as_array().unwrap().len(), r.samples.len());
    assert_eq!(v["samples"][0]["seconds"], 0.002);
    assert_eq!(v["samples"][0]["cache"], "cold");
    assert_eq!(v["implementations"][0]["status"], "skipped");
    assert_eq!(
        v["implementations"][0]["reason"],
        "mount: not implemented yet"
    );
    assert_eq!(v["implementations"][1]["status"], "ran");
}

fn points(node: roxmltree::Node) -> Vec<(f64, f64)> {
    let poly = node
        .descendants()
        .find(|n| n.has_tag_name("polyline"))
        .unwrap();
    poly.attribute("points")
        .unwrap()
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            n.children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .collect()
        })
        .collect()
}

#[test]
fn svg_charts_have_a_line_per_implementation_legend_and_axes() {
    let charts = svg::charts(&synthetic());
    let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "copy-up-first-1-byte-append-cold.svg",
            "lookup-stat-first-after-mount-per-file-cold.svg",
            "overview.svg"
        ]
    );
    for (name, text) in &charts {
        roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    }

    let doc = roxmltree::Document::parse(&charts[0].1).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let series: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .collect();
    let order: Vec<&str> = series
        .iter()
        .map(|s| s.attribute("data-name").unwrap())
        .collect();
    assert_eq!(order, ["overlay", "fuse-overlayfs", "raw"]);
    let [ov, fu, raw] = [points(series[0]), points(series[1]), points(series[2])];
    assert_eq!((ov.len(), fu.len(), raw.len()), (2, 2, 2));
    assert!(ov[0].0 < ov[1].0, "x grows with the file size");
    // Slower is higher on the chart (smaller y): fuse-overlayfs > overlay > raw at 4 KiB.
    assert!(fu[0].1 < ov[0].1 && ov[0].1 < raw[0].1);
    let t = texts(&doc);
    for want in [
        "4 KiB",
        "1 MiB",
        "size of the lower file (log scale)",
        "overlay",
        "fuse-overlayfs",
        "raw",
    ] {
        assert!(
            t.iter().any(|s| s == want),
            "missing text {want:?} in {t:?}"
        );
    }
    assert!(
        t.iter()
            .any(|s| s.starts_with("copy-up: first 1-byte append (cold)"))
    );
    assert!(t.iter().any(|s| s.contains("median time per operation")));

    // Lookup: a log x axis puts 1, 10 and 100 layers at equal distances; names are escaped.
    let doc = roxmltree::Document::parse(&charts[1].1).unwrap();
    let series: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .collect();
    assert_eq!(series[1].attribute("data-name"), Some("x&y"));
    let p = points(series[0]);
    assert_eq!(p.len(), 3);
    assert!(((p[1].0 - p[0].0) - (p[2].0 - p[1].0)).abs() < 0.2, "{p:?}");
    assert!(texts(&doc).iter().any(|s| s == "x&y"));
    assert!(
        texts(&doc)
            .iter()
            .any(|s| s == "layers in the stack (log scale)")
    );

    // Overview: bars relative to overlay, 1x marked.
    let doc = roxmltree::Document::parse(&charts[2].1).unwrap();
    let t = texts(&doc);
    assert!(t.iter().any(|s| s == "1x"));
    assert!(t.iter().any(|s| s.starts_with("Time relative to overlay")));
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
        .count();
    // copy-up 2 rows x (fuse-overlayfs, raw) + lookup 3 rows x (x&y) = 7 bars
    assert_eq!(bars, 7);
}

#[test]
fn svg_needs_two_x_values_for_a_line_chart() {
    let mut r = synthetic();
    r.samples
        .retain(|s| s.case != "1 MiB" && s.workload != "lookup");
    let names: Vec<String> = svg::charts(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["overview.svg"]);
}

#[test]
fn fewer_repetitions_are_listed_in_json_and_marked_in_charts() {
    let r = synthetic();
    let v: serde_json::Value = serde_json::from_str(&json::to_string(&r).unwrap()).unwrap();
    assert_eq!(
        v["fewer_repetitions"],
        serde_json::json!([{
            "implementation": "raw", "workload": "copy-up", "metric": "first 1-byte append",
            "case": "4 KiB", "cache": "cold", "repetitions": 2, "most_repetitions": 3
        }])
    );
    let charts = svg::charts(&r);
    let copy_up = &charts
        .iter()
        .find(|(n, _)| n.starts_with("copy-up"))
        .unwrap()
        .1;
    let doc = roxmltree::Document::parse(copy_up).unwrap();
    let hollow: Vec<String> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("fewer-reps"))
        .map(|n| n.descendants().filter_map(|t| t.text()).collect())
        .collect();
    assert_eq!(hollow.len(), 1, "{hollow:?}");
    assert!(
        hollow[0].starts_with("raw: ") && hollow[0].contains("only 2 of 3"),
        "{hollow:?}"
    );
    assert!(
        texts(&doc)
            .iter()
            .any(|t| t.starts_with("Hollow markers (raw)"))
    );
    let overview = &charts.iter().find(|(n, _)| n == "overview.svg").unwrap().1;
    let doc = roxmltree::Document::parse(overview).unwrap();
    let faded: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("fewer-reps"))
        .filter_map(|n| n.attribute("fill-opacity"))
        .collect();
    assert_eq!(faded, ["0.4"]);
    assert!(texts(&doc).iter().any(|t| t.starts_with("Faded bars")));

    // Equal repetitions: no mark anywhere.
    let mut even = synthetic();
    even.samples
        .retain(|s| !(s.implementation == "raw" && s.case == "4 KiB"));
    assert!(!table::render(&even).contains('*'));
    let v: serde_json::Value = serde_json::from_str(&json::to_string(&even).unwrap()).unwrap();
    assert_eq!(v["fewer_repetitions"], serde_json::json!([]));
    assert!(
        svg::charts(&even)
            .iter()
            .all(|(_, t)| !t.contains("fewer-reps"))
    );
}

#[test]
fn chart_subtitles_fit_their_width_whole() {
    let mut r = synthetic();
    // A long but real-looking description: it used to run past the right edge.
    r.machine.cpu_model = "AMD EPYC 7B13 64-Core Processor with a long marketing name".into();
    r.machine.work_dir = "/var/tmp/some/rather/deeply/nested/benchmark/directory".into();
    r.machine.kernel = "6.18.44-fc-v657-with-a-local-suffix".into();
    let machine = table::machine_line(&r);
    let charts = svg::charts(&r);
    assert!(charts.len() >= 3);
    for (name, text) in charts {
        let doc = roxmltree::Document::parse(&text).unwrap();
        let root = doc.root_element();
        let width: f64 = root.attribute("width").unwrap().parse().unwrap();
        let sub = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("subtitle"))
            .unwrap();
        let font: f64 = sub.attribute("font-size").unwrap().parse().unwrap();
        let lines: Vec<String> = sub
            .children()
            .filter(|n| n.is_element())
            .map(|n| n.text().unwrap_or("").to_string())
            .collect();
        assert!((1..=2).contains(&lines.len()), "{name}: {lines:?}");
        assert!(font >= 8.0, "{name}: {font}");
        for l in &lines {
            let x: f64 = sub.attribute("x").unwrap().parse().unwrap();
            let w = l.chars().count() as f64 * font * svg::CHAR_EM;
            assert!(
                x + w <= width - 16.0 + 0.01,
                "{name}: {l:?} is {w} px wide in {width}"
            );
        }
        // Nothing lost: the lines are the machine line, broken at spaces.
        assert_eq!(lines.join(" "), machine, "{name}");
    }
    // The short subtitle of the synthetic machine stays on one line at full size.
    let short = svg::subtitle_lines(&table::machine_line(&synthetic()), 760.0);
    assert_eq!(short.0, 11.0);
    assert_eq!(svg::wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
    assert_eq!(svg::wrap("abcdefgh", 3), ["abc", "def", "gh"]);
}
