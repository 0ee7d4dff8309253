//! `commit --change 'INSTRUCTION'`: the Dockerfile instructions that only touch the image
//! config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL), parsed and
//! applied to the config's `config` object. Pure: no I/O.
use serde_json::{Map, Value, json};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(Vec<(String, String)>),
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    User(String),
    Workdir(String),
    Volume(Vec<String>),
    StopSignal(String),
}

fn bad(s: &str, why: &str) -> Error {
    Error::Usage(format!("--change {s:?}: {why}"))
}

/// Splits words honouring double and single quotes and backslash escapes (in double quotes
/// and unquoted text); quotes are removed.
fn words(s: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or("unterminated escape")?),
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or("unterminated escape")?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The exec form (a JSON array of strings) or the shell form (`/bin/sh -c "..."`).
fn command(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if t.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(t)
    {
        return Some(v);
    }
    if t.is_empty() {
        return None;
    }
    Some(vec!["/bin/sh".into(), "-c".into(), t.to_string()])
}

/// `k=v k2="v 2"`, or the legacy one-pair form `k v...` when `legacy` (ENV, LABEL).
fn pairs(s: &str, args: &str) -> Result<Vec<(String, String)>> {
    let w = words(args).map_err(|e| bad(s, e))?;
    if w.is_empty() {
        return Err(bad(s, "expected KEY=VALUE"));
    }
    if !w[0].contains('=') {
        // Legacy form: the first word is the key, the rest (verbatim) the value.
        let t = args.trim_start();
        let rest = t[t.find(char::is_whitespace).unwrap_or(t.len())..].trim();
        if rest.is_empty() {
            return Err(bad(s, "expected KEY=VALUE or KEY VALUE"));
        }
        return Ok(vec![(w[0].clone(), rest.to_string())]);
    }
    w.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(s, &format!("{p:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// Parses one `--change` value.
pub fn parse(s: &str) -> Result<Instruction> {
    let t = s.trim();
    let (word, args) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    let args = args.trim();
    let need = |v: Option<Vec<String>>| v.ok_or_else(|| bad(s, "expected arguments"));
    let list = |a: &str| -> Result<Vec<String>> {
        let v = if a.starts_with('[') {
            serde_json::from_str::<Vec<String>>(a)
                .map_err(|e| bad(s, &format!("bad JSON array: {e}")))?
        } else {
            words(a).map_err(|e| bad(s, e))?
        };
        if v.is_empty() {
            return Err(bad(s, "expected arguments"));
        }
        Ok(v)
    };
    let one = |a: &str| -> Result<String> {
        match words(a).map_err(|e| bad(s, e))?.as_slice() {
            [x] => Ok(x.clone()),
            _ => Err(bad(s, "expected exactly one argument")),
        }
    };
    Ok(match word.to_ascii_uppercase().as_str() {
        "CMD" => Instruction::Cmd(need(command(args))?),
        "ENTRYPOINT" => Instruction::Entrypoint(need(command(args))?),
        "ENV" => Instruction::Env(pairs(s, args)?),
        "LABEL" => Instruction::Label(pairs(s, args)?),
        "EXPOSE" => {
            let ports = list(args)?;
            for p in &ports {
                let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                let ok_num = num.split('-').all(|n| n.parse::<u16>().is_ok());
                if !ok_num || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad(
                        s,
                        &format!("invalid port {p:?}: use PORT[/tcp|udp|sctp]"),
                    ));
                }
            }
            Instruction::Expose(ports)
        }
        "USER" => Instruction::User(one(args)?),
        "WORKDIR" => Instruction::Workdir(one(args)?),
        "VOLUME" => Instruction::Volume(list(args)?),
        "STOPSIGNAL" => Instruction::StopSignal(one(args)?),
        other => {
            return Err(bad(
                s,
                &format!(
                    "unsupported instruction {other:?}: use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, \
                     USER, WORKDIR, VOLUME or STOPSIGNAL"
                ),
            ));
        }
    })
}

/// Sets `m[key][k] = v`, making `m[key]` an object if it is not one.
fn put(m: &mut Map<String, Value>, key: &str, k: String, v: Value) {
    let slot = m.entry(key).or_insert_with(|| json!({}));
    if let Value::Object(o) = slot {
        o.insert(k, v);
    } else {
        let mut o = Map::new();
        o.insert(k, v);
        *slot = Value::Object(o);
    }
}

/// Applies instructions, in order, to an image config's `config` object (docker's names:
/// `Cmd`, `Entrypoint`, `Env`, `ExposedPorts`, `Labels`, `User`, `WorkingDir`, `Volumes`,
/// `StopSignal`). As in a Dockerfile, ENTRYPOINT clears an inherited CMD unless a CMD is
/// given in the same commit.
pub fn apply(cfg: &mut Map<String, Value>, ins: &[Instruction]) {
    let sets_cmd = ins.iter().any(|i| matches!(i, Instruction::Cmd(_)));
    for i in ins {
        match i {
            Instruction::Cmd(c) => {
                cfg.insert("Cmd".into(), json!(c));
            }
            Instruction::Entrypoint(e) => {
                cfg.insert("Entrypoint".into(), json!(e));
                if !sets_cmd {
                    cfg.insert("Cmd".into(), Value::Null);
                }
            }
            Instruction::Env(pairs) => {
                let mut env: Vec<String> = cfg
                    .get("Env")
                    .and_then(|e| e.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                for (k, v) in pairs {
                    let entry = format!("{k}={v}");
                    match env
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) == k)
                    {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                }
                cfg.insert("Env".into(), json!(env));
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    let key = if p.contains('/') {
                        p.clone()
                    } else {
                        format!("{p}/tcp")
                    };
                    put(cfg, "ExposedPorts", key, json!({}));
                }
            }
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    put(cfg, "Labels", k.clone(), json!(v));
                }
            }
            Instruction::User(u) => {
                cfg.insert("User".into(), json!(u));
            }
            Instruction::Workdir(w) => {
                let cur = cfg
                    .get("WorkingDir")
                    .and_then(|v| v.as_str())
                    .unwrap_or("/");
                let next = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", cur.trim_end_matches('/'))
                };
                cfg.insert("WorkingDir".into(), json!(next));
            }
            Instruction::Volume(vols) => {
                for v in vols {
                    put(cfg, "Volumes", v.clone(), json!({}));
                }
            }
            Instruction::StopSignal(s) => {
                cfg.insert("StopSignal".into(), json!(s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parse_table() {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let rows: Vec<(&str, Option<Instruction>)> = vec![
            (
                r#"CMD ["a", "b c"]"#,
                Some(Instruction::Cmd(s(&["a", "b c"]))),
            ),
            (
                "CMD echo hi",
                Some(Instruction::Cmd(s(&["/bin/sh", "-c", "echo hi"]))),
            ),
            (
                r#"entrypoint ["/x"]"#,
                Some(Instruction::Entrypoint(s(&["/x"]))),
            ),
            (
                r#"ENV A=1 B="two words" C=x\ y"#,
                Some(Instruction::Env(vec![
                    kv("A", "1"),
                    kv("B", "two words"),
                    kv("C", "x y"),
                ])),
            ),
            (
                "ENV K some value",
                Some(Instruction::Env(vec![kv("K", "some value")])),
            ),
            (
                "LABEL a.b='q r'",
                Some(Instruction::Label(vec![kv("a.b", "q r")])),
            ),
            (
                "EXPOSE 80 53/udp 8000-8010",
                Some(Instruction::Expose(s(&["80", "53/udp", "8000-8010"]))),
            ),
            ("USER app:app", Some(Instruction::User("app:app".into()))),
            ("WORKDIR /srv", Some(Instruction::Workdir("/srv".into()))),
            (
                r#"VOLUME ["/data", "/logs"]"#,
                Some(Instruction::Volume(s(&["/data", "/logs"]))),
            ),
            ("VOLUME /a /b", Some(Instruction::Volume(s(&["/a", "/b"])))),
            (
                "STOPSIGNAL SIGINT",
                Some(Instruction::StopSignal("SIGINT".into())),
            ),
            ("RUN make", None),
            ("CMD", None),
            ("ENV", None),
            ("ENV =x", None),
            ("EXPOSE http", None),
            ("EXPOSE 80/xyz", None),
            ("USER a b", None),
            ("LABEL a=\"open", None),
        ];
        for (input, want) in rows {
            assert_eq!(parse(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn apply_to_config() {
        let mut cfg: Map<String, Value> = serde_json::from_str(
            r#"{"Env":["PATH=/bin","A=old"],"Cmd":["sh"],"WorkingDir":"/app","Labels":{"x":"1"}}"#,
        )
        .unwrap();
        let ins: Vec<Instruction> = [
            "ENV A=new B=2",
            "LABEL y=2",
            "EXPOSE 80",
            "WORKDIR sub",
            "ENTRYPOINT [\"/run\"]",
            "USER nobody",
            "VOLUME /data",
            "STOPSIGNAL SIGTERM",
        ]
        .iter()
        .map(|s| parse(s).unwrap())
        .collect();
        apply(&mut cfg, &ins);
        let want: Value = serde_json::from_str(
            r#"{"Env":["PATH=/bin","A=new","B=2"],"Cmd":null,"WorkingDir":"/app/sub",
                "Labels":{"x":"1","y":"2"},"ExposedPorts":{"80/tcp":{}},"Entrypoint":["/run"],
                "User":"nobody","Volumes":{"/data":{}},"StopSignal":"SIGTERM"}"#,
        )
        .unwrap();
        assert_eq!(Value::Object(cfg), want);
    }

    #[test]
    fn entrypoint_keeps_cmd_given_in_the_same_commit() {
        let mut cfg = Map::new();
        let ins = [
            parse("CMD [\"a\"]").unwrap(),
            parse("ENTRYPOINT [\"e\"]").unwrap(),
        ];
        apply(&mut cfg, &ins);
        assert_eq!(cfg["Cmd"], json!(["a"]));
    }
}
