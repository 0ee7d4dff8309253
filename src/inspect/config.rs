//! Differences between two image configs (`diff --type config`) and histories
//! (`diff --type history`). Pure: JSON in, changes out.
//!
//! A config is flattened to `KEY -> VALUE` lines: `architecture`, `os`, `os.version`,
//! `variant`, `author`, `created`, and each field of `config` (the run configuration):
//! `Env.NAME` per variable, `Labels.KEY` per label, `ExposedPorts.PORT` and `Volumes.PATH` per
//! entry, any other field as its JSON value (`Cmd`, `Entrypoint`, `WorkingDir`, `User`, ...).
//! `rootfs` is the layers (see `--type file`) and `history` has its own type.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::diff::ChangeKind;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigChange {
    pub kind: ChangeKind,
    pub key: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

const TOP_KEYS: &[&str] = &[
    "architecture",
    "os",
    "os.version",
    "variant",
    "author",
    "created",
];

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The flattened form described in the module header.
pub fn flatten(config: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in TOP_KEYS {
        if let Some(v) = config.get(*k).filter(|v| !v.is_null()) {
            out.insert((*k).to_string(), scalar(v));
        }
    }
    let Some(run) = config.get("config").and_then(|c| c.as_object()) else {
        return out;
    };
    for (k, v) in run {
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("Env", Value::Array(vars)) => {
                for e in vars.iter().filter_map(|e| e.as_str()) {
                    let (name, val) = e.split_once('=').unwrap_or((e, ""));
                    out.insert(format!("Env.{name}"), val.to_string());
                }
            }
            ("Labels" | "ExposedPorts" | "Volumes", Value::Object(m)) => {
                for (mk, mv) in m {
                    let shown = match mv {
                        Value::Object(o) if o.is_empty() => String::new(),
                        other => scalar(other),
                    };
                    out.insert(format!("{k}.{mk}"), shown);
                }
            }
            _ => {
                out.insert(k.clone(), scalar(v));
            }
        }
    }
    out
}

/// Config changes from `a` to `b`, sorted by key.
pub fn diff_config(a: &Value, b: &Value) -> Vec<ConfigChange> {
    let (fa, fb) = (flatten(a), flatten(b));
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (va, vb) = (fa.get(k), fb.get(k));
            let kind = match (va, vb) {
                (None, Some(_)) => ChangeKind::Added,
                (Some(_), None) => ChangeKind::Deleted,
                (Some(x), Some(y)) if x != y => ChangeKind::Modified,
                _ => return None,
            };
            Some(ConfigChange {
                kind,
                key: k.clone(),
                before: va.cloned(),
                after: vb.cloned(),
            })
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryChange {
    pub kind: ChangeKind,
    /// Position in its own history (0 = oldest).
    pub index: usize,
    pub created_by: String,
    pub empty_layer: bool,
}

/// History changes: the entries after the longest common prefix are `D` (in `a`) and `A` (in
/// `b`). Histories only grow at the end, so that prefix is what the images share.
pub fn diff_history(a: &Value, b: &Value) -> Vec<HistoryChange> {
    let list = |v: &Value| -> Vec<Value> {
        v.get("history")
            .and_then(|h| h.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let (ha, hb) = (list(a), list(b));
    let common = ha.iter().zip(&hb).take_while(|(x, y)| x == y).count();
    let entry = |kind, index, e: &Value| HistoryChange {
        kind,
        index,
        created_by: e
            .get("created_by")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        empty_layer: e.get("empty_layer").and_then(|v| v.as_bool()) == Some(true),
    };
    let mut out: Vec<HistoryChange> = ha
        .iter()
        .enumerate()
        .skip(common)
        .map(|(i, e)| entry(ChangeKind::Deleted, i, e))
        .collect();
    out.extend(
        hb.iter()
            .enumerate()
            .skip(common)
            .map(|(i, e)| entry(ChangeKind::Added, i, e)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        let a: Value = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=1"],
               "Cmd":["sh"],"Labels":{"x":"1"},"ExposedPorts":{"80/tcp":{}}}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","B=2"],
               "Cmd":["sh"],"Labels":{"x":"1"},"User":"app","ExposedPorts":{}}}"#,
        )
        .unwrap();
        let got: Vec<String> = diff_config(&a, &b)
            .iter()
            .map(|c| format!("{} {} {:?} {:?}", c.kind.letter(), c.key, c.before, c.after))
            .collect();
        assert_eq!(
            got,
            [
                r#"D Env.A Some("1") None"#,
                r#"A Env.B None Some("2")"#,
                r#"C Env.PATH Some("/bin") Some("/usr/bin")"#,
                r#"D ExposedPorts.80/tcp Some("") None"#,
                r#"A User None Some("app")"#,
            ]
        );
    }

    #[test]
    fn history_after_common_prefix() {
        let a: Value = serde_json::from_str(
            r#"{"history":[{"created_by":"base"},{"created_by":"old","empty_layer":true}]}"#,
        )
        .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"history":[{"created_by":"base"},{"created_by":"new"}]}"#)
                .unwrap();
        let got: Vec<(char, usize, String)> = diff_history(&a, &b)
            .into_iter()
            .map(|h| (h.kind.letter(), h.index, h.created_by))
            .collect();
        assert_eq!(
            got,
            [('D', 1, "old".to_string()), ('A', 1, "new".to_string())]
        );
    }
}
