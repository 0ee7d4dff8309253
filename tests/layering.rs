//! The architecture as a test: README's architecture table says, per module, what it may import;
//! every `crate::` path in `src/**/*.rs` (and `layerfs::` in `main.rs`) must keep to it. Also:
//! every module has a row, the table's graph has no cycle, and no clap type lives outside
//! `src/cli/`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A row of the table: the modules it may import, and whether it is planned (not written yet).
struct Row {
    may_import: BTreeSet<String>,
    planned: bool,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Rows `| \`module\` | what it is for | \`a\`, \`b\` |` of the table under `## Architecture`.
fn table(readme: &str) -> BTreeMap<String, Row> {
    let section = readme
        .split("\n## Architecture")
        .nth(1)
        .expect("README.md has an `## Architecture` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "architecture row with 3 cells: {line}");
        let name = cells[0]
            .trim_matches('`')
            .trim_end_matches(".rs")
            .to_string();
        let may_import = backticked(cells[2]);
        let planned = cells[1].contains("(planned)");
        assert!(
            rows.insert(
                name.clone(),
                Row {
                    may_import,
                    planned
                }
            )
            .is_none(),
            "two rows for {name}"
        );
    }
    rows
}

fn backticked(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim_end_matches('/').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to: `src/store/import.rs` -> `store`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Code without `//` comments (doc comments mention paths they do not import) and without the
/// contents of string literals.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && prev != '\'' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
        }
        out.push('\n');
    }
    out
}

/// The first segment of every path that starts with `root::` (`crate::a::b`, and each entry of
/// `crate::{a::b, c}`), with the line it is on.
fn imports(code: &str, root: &str) -> Vec<(usize, String)> {
    let pat = format!("{root}::");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find(&pat) {
        let at = from + i;
        from = at + pat.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut seg_start = true;
            let mut word = String::new();
            for c in group.chars() {
                if c.is_alphanumeric() || c == '_' {
                    if seg_start {
                        word.push(c);
                    }
                    continue;
                }
                if !word.is_empty() {
                    out.push((line, std::mem::take(&mut word)));
                    seg_start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => seg_start = true,
                    _ => {}
                }
            }
            if !word.is_empty() {
                out.push((line, word));
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((line, word));
        }
    }
    out
}

/// Paths that climb out of their top-level module with `super::` (`super::super::x` from
/// `src/m/a.rs` names the crate root's `x`): the first segment after the climb, with its line.
/// `depth` is how many `super`s reach the crate root from the file's top level; code after a
/// `mod tests {` line sits one level deeper.
fn super_escapes(code: &str, depth: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut extra = 0;
    for (n, line) in code.lines().enumerate() {
        if line.trim_start().starts_with("mod tests") && line.trim_end().ends_with('{') {
            extra = 1;
        }
        let mut rest = line;
        while let Some(i) = rest.find("super::") {
            let before = rest[..i].chars().next_back();
            let mut tail = &rest[i..];
            rest = &rest[i + "super::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut climbs = 0;
            while let Some(t) = tail.strip_prefix("super::") {
                climbs += 1;
                tail = t;
            }
            rest = tail;
            if climbs >= depth + extra {
                let word: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((n + 1, word));
            }
        }
    }
    out
}

/// Items re-exported at the crate root, by the module they come from.
fn root_item(name: &str) -> &str {
    match name {
        "Error" | "Result" => "error",
        other => other,
    }
}

fn find_cycle(rows: &BTreeMap<String, Row>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        rows: &BTreeMap<String, Row>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for dep in rows
            .get(m)
            .map(|r| r.may_import.clone())
            .unwrap_or_default()
        {
            if let Some(c) = visit(&dep, rows, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    rows.keys()
        .find_map(|m| visit(m, rows, &mut Vec::new(), &mut done))
}

#[test]
fn imports_follow_the_architecture_table() {
    let root = manifest_dir();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows = table(&readme);
    assert!(rows.len() > 5, "architecture table not found in README.md");
    if let Some(c) = find_cycle(&rows) {
        panic!(
            "README's architecture table has a cycle: {}",
            c.join(" -> ")
        );
    }
    for (name, row) in &rows {
        for dep in &row.may_import {
            assert!(
                rows.contains_key(dep),
                "row {name} names {dep}, which has no row"
            );
        }
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(root.join("src")).unwrap();
        let module = module_of(rel);
        if module == "lib" {
            continue;
        }
        seen.insert(module.clone());
        let Some(row) = rows.get(&module) else {
            problems.push(format!(
                "src/{}: module `{module}` has no row in README's architecture table",
                rel.display()
            ));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        let crate_root = if module == "main" { "layerfs" } else { "crate" };
        // src/m.rs and src/m/mod.rs are one level below the root, src/m/a.rs two, ...
        let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
        let mut used = imports(&code, crate_root);
        used.extend(super_escapes(&code, depth));
        for (line, item) in used {
            let dep = root_item(&item);
            if dep != module && !row.may_import.contains(dep) {
                problems.push(format!(
                    "src/{}:{line}: `{module}` imports `{item}` (through {crate_root}:: or super::), but README's \
                     architecture table lets it import only: {}",
                    rel.display(),
                    row.may_import
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if module != "cli"
            && module != "main"
            && (code.contains("clap::") || code.contains("use clap"))
        {
            problems.push(format!(
                "src/{}: clap is used outside src/cli/ (arguments are parsed there; pass plain \
                 option structs down)",
                rel.display()
            ));
        }
    }
    for (name, row) in &rows {
        if !seen.contains(name) && !row.planned {
            problems.push(format!(
                "README's architecture table has a row for `{name}`, which is not in src/ \
                 (mark it (planned) or remove it)"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_import_scanner_reads_groups_paths_and_skips_comments() {
    let code = code_of(
        "use crate::{Error, Result, sys};\n\
         use crate::image::{oci::{A, B}, pack};\n\
         // crate::fuse is only named here\n\
         let s = \"crate::cli\"; let x = crate::store::Store::open();\n\
         use notcrate::x;\n",
    );
    let got: Vec<(usize, String)> = imports(&code, "crate");
    let want: Vec<(usize, String)> = [
        (1, "Error"),
        (1, "Result"),
        (1, "sys"),
        (2, "image"),
        (4, "store"),
    ]
    .iter()
    .map(|(l, s)| (*l, s.to_string()))
    .collect();
    assert_eq!(got, want);
    let rows = table(
        "x\n## Architecture\n\n| module | for | may import |\n|---|---|---|\n\
         | `a` | x | `b` |\n| `b` | y | `c` |\n| `c` | z (planned) | `a` |\n| `d` | w | — |\n\n## Next\n",
    );
    assert!(rows["c"].planned && !rows["a"].planned && rows["d"].may_import.is_empty());
    assert_eq!(find_cycle(&rows).unwrap(), ["a", "b", "c", "a"]);
    let code = "use super::x;\nuse super::super::cli::Cli;\nmod tests {\nuse super::super::y;\n";
    assert_eq!(super_escapes(code, 2), [(2, "cli".to_string())]);
    assert_eq!(
        super_escapes(code, 1),
        [
            (1, "x".to_string()),
            (2, "cli".to_string()),
            (4, "y".to_string())
        ]
    );
}
