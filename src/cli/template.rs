//! `--format` templates in the style of Go's text/template, as docker and podman take them:
//! `{{.Field}}`, nested `{{.Config.Env}}`, `{{json .}}`, pipelines (`{{.Tag | upper}}`),
//! `{{range .RepoTags}}{{.}} {{end}}`, `{{if .X}}..{{else}}..{{end}}`, `{{with .X}}..{{end}}`,
//! `{{- ` / ` -}}` trimming, and the `table` prefix (a header row, tab-separated cells aligned
//! into columns). Functions: json, join, split, upper, lower, title, len, index, printf, print,
//! println, truncate, pad. Data is the JSON value a command documents for its rows, so a
//! template and `--json` see the same fields.
//!
//! Pure: parse once, then render each row; errors name the template and what is wrong.
use serde_json::Value;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Vec<Cmd>),
    Range(Vec<Cmd>, Vec<Node>, Vec<Node>),
    If(Vec<Cmd>, Vec<Node>, Vec<Node>),
    With(Vec<Cmd>, Vec<Node>, Vec<Node>),
}

/// One command of a pipeline: a function with arguments, or a single term.
#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Term(Term),
    Call(String, Vec<Term>),
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// `.` is an empty path; `.A.B` is ["A", "B"].
    Field(Vec<String>),
    Str(String),
    Num(f64),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// `table ...`: print a header row and align the tab-separated cells.
    pub table: bool,
    /// The fields the template names at top level, in order (for the header of a table).
    pub fields: Vec<String>,
}

fn err(src: &str, what: impl std::fmt::Display) -> Error {
    Error::Usage(format!("--format {src:?}: {what}"))
}

impl Template {
    pub fn parse(src: &str) -> Result<Template> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, src),
        };
        // Docker lets `\t` and `\n` be typed literally on the command line.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let tokens = lex(&body).map_err(|e| err(src, e))?;
        let mut it = tokens.into_iter().peekable();
        let (nodes, end) = parse_list(&mut it).map_err(|e| err(src, e))?;
        if let Some(e) = end {
            return Err(err(src, format!("unexpected {{{{{e}}}}}")));
        }
        let mut fields = Vec::new();
        collect_fields(&nodes, &mut fields);
        Ok(Template {
            nodes,
            table,
            fields,
        })
    }

    /// Renders one row.
    pub fn render(&self, data: &Value) -> Result<String> {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

/// Renders every row; a table template gets a header (from `headers`, else the field names in
/// capitals) and its tab-separated cells aligned like docker's tabwriter.
pub fn render_all(
    t: &Template,
    rows: &[Value],
    headers: &dyn Fn(&str) -> String,
) -> Result<String> {
    let mut lines = Vec::new();
    if t.table {
        let h: Vec<String> = t.fields.iter().map(|f| headers(f)).collect();
        lines.push(h.join("\t"));
    }
    for r in rows {
        let s = t.render(r)?;
        lines.push(s);
    }
    if !t.table {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    Ok(align(&lines))
}

/// Aligns tab-separated cells: each column as wide as its widest cell plus 3 spaces.
fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{c:<w$}   ", w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Docker's header for a field: `CreatedSince` -> `CREATED SINCE`.
pub fn default_header(field: &str) -> String {
    let mut s = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_lowercase();
        if i > 0 && c.is_uppercase() && (prev_lower || next_lower) {
            s.push(' ');
        }
        s.extend(c.to_uppercase());
    }
    s
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> std::result::Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        let after = &rest[start + 2..];
        let end = find_close(after).ok_or("unclosed action: '{{' without '}}'")?;
        let mut inner = &after[..end];
        if let Some(i) = inner.strip_prefix("- ") {
            text = text.trim_end().to_string();
            inner = i;
        }
        let mut trim_next = false;
        if let Some(i) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = i;
        }
        if !text.is_empty() {
            out.push(Tok::Text(text));
        }
        out.push(Tok::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
        if trim_next {
            rest = rest.trim_start();
        }
    }
    if !rest.is_empty() {
        out.push(Tok::Text(rest.to_string()));
    }
    Ok(out)
}

/// The position of the `}}` closing an action, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted && b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

type Toks = std::iter::Peekable<std::vec::IntoIter<Tok>>;

/// Parses nodes up to an `{{end}}` or `{{else}}` (returned) or the end of input.
fn parse_list(it: &mut Toks) -> std::result::Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(t) = it.next() {
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s)),
            Tok::Action(a) => {
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" | "else" => return Ok((nodes, Some(kw.to_string()))),
                    "range" | "if" | "with" => {
                        let pipe = parse_pipeline(rest)?;
                        let (body, end) = parse_list(it)?;
                        let alt = match end.as_deref() {
                            Some("end") => Vec::new(),
                            Some("else") => match parse_list(it)? {
                                (alt, Some(e)) if e == "end" => alt,
                                _ => {
                                    return Err(format!(
                                        "{{{{{kw}}}}} ... {{{{else}}}} without {{{{end}}}}"
                                    ));
                                }
                            },
                            _ => return Err(format!("{{{{{kw}}}}} without {{{{end}}}}")),
                        };
                        nodes.push(match kw {
                            "range" => Node::Range(pipe, body, alt),
                            "if" => Node::If(pipe, body, alt),
                            _ => Node::With(pipe, body, alt),
                        });
                    }
                    _ if a.starts_with("/*") => {}
                    _ => nodes.push(Node::Action(parse_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn parse_pipeline(s: &str) -> std::result::Result<Vec<Cmd>, String> {
    let words = split_words(s)?;
    if words.is_empty() {
        return Err("empty action".into());
    }
    let mut cmds = Vec::new();
    for part in words.split(|w| w == "|") {
        let Some((first, args)) = part.split_first() else {
            return Err(format!("empty command in pipeline {s:?}"));
        };
        let args: Vec<Term> = args
            .iter()
            .map(|w| term(w))
            .collect::<std::result::Result<_, _>>()?;
        if first.starts_with('.') || first.starts_with('"') || first.parse::<f64>().is_ok() {
            if !args.is_empty() {
                return Err(format!("{first} is not a function"));
            }
            cmds.push(Cmd::Term(term(first)?));
        } else if FUNCTIONS.contains(&first.as_str()) {
            cmds.push(Cmd::Call(first.clone(), args));
        } else {
            return Err(format!(
                "function {first:?} not defined (known: {})",
                FUNCTIONS.join(", ")
            ));
        }
    }
    Ok(cmds)
}

const FUNCTIONS: &[&str] = &[
    "json", "join", "split", "upper", "lower", "title", "len", "index", "printf", "print",
    "println", "truncate", "pad",
];

fn split_words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                cur.push('"');
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('n') => cur.push('\n'),
                            Some('t') => cur.push('\t'),
                            Some(o) => cur.push(o),
                            None => return Err("unterminated string".into()),
                        },
                        Some('"') => break,
                        Some(o) => cur.push(o),
                        None => return Err("unterminated string".into()),
                    }
                }
                cur.push('"');
            }
            '|' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push("|".into());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn term(w: &str) -> std::result::Result<Term, String> {
    if let Some(s) = w.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Ok(Term::Str(s.to_string()));
    }
    if w == "." {
        return Ok(Term::Field(Vec::new()));
    }
    if let Some(p) = w.strip_prefix('.') {
        return Ok(Term::Field(p.split('.').map(str::to_string).collect()));
    }
    w.parse::<f64>()
        .map(Term::Num)
        .map_err(|_| format!("unexpected {w:?} (fields start with '.', strings are quoted)"))
}

fn collect_fields(nodes: &[Node], out: &mut Vec<String>) {
    for n in nodes {
        if let Node::Action(cmds) = n {
            let name = cmds.iter().find_map(|c| match c {
                Cmd::Term(Term::Field(p)) => p.first().cloned(),
                Cmd::Call(_, args) => args.iter().find_map(|a| match a {
                    Term::Field(p) => p.first().cloned(),
                    _ => None,
                }),
                _ => None,
            });
            if let Some(f) = name {
                out.push(f);
            }
        }
    }
}

fn render_nodes(nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Action(p) => out.push_str(&text(&eval(p, dot)?)),
            Node::If(p, body, alt) => {
                let v = eval(p, dot)?;
                render_nodes(if truthy(&v) { body } else { alt }, dot, out)?;
            }
            Node::With(p, body, alt) => {
                let v = eval(p, dot)?;
                if truthy(&v) {
                    render_nodes(body, &v, out)?;
                } else {
                    render_nodes(alt, dot, out)?;
                }
            }
            Node::Range(p, body, alt) => {
                let items: Vec<Value> = match eval(p, dot)? {
                    Value::Array(a) => a,
                    Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                    Value::Null => Vec::new(),
                    other => return Err(Error::Usage(format!("range over {other}: not a list"))),
                };
                if items.is_empty() {
                    render_nodes(alt, dot, out)?;
                }
                for item in &items {
                    render_nodes(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn eval(cmds: &[Cmd], dot: &Value) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for c in cmds {
        let v = match c {
            Cmd::Term(t) => value(t, dot),
            Cmd::Call(f, args) => {
                let mut a: Vec<Value> = args.iter().map(|t| value(t, dot)).collect();
                if let Some(p) = prev.take() {
                    a.push(p);
                }
                call(f, &a)?
            }
        };
        prev = Some(v);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn value(t: &Term, dot: &Value) -> Value {
    match t {
        Term::Str(s) => Value::String(s.clone()),
        Term::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Term::Field(path) => {
            let mut v = dot;
            for k in path {
                match v.get(k) {
                    Some(x) => v = x,
                    None => return Value::Null,
                }
            }
            v.clone()
        }
    }
}

/// How Go prints a value with `{{.}}`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn arity(f: &str, a: &[Value], n: usize) -> Result<()> {
    if a.len() == n {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--format: {f} takes {n} argument(s), got {}",
            a.len()
        )))
    }
}

/// A value as a function argument sees it: strings bare, anything else as Go prints it.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        o => text(o),
    }
}

fn usage(msg: &str) -> Error {
    Error::Usage(format!("--format: {msg}"))
}

fn call(f: &str, a: &[Value]) -> Result<Value> {
    match f {
        "json" => {
            arity(f, a, 1)?;
            Ok(Value::String(
                serde_json::to_string(&a[0]).unwrap_or_default(),
            ))
        }
        "upper" | "lower" | "title" => {
            arity(f, a, 1)?;
            Ok(Value::String(case(f, &s(&a[0]))))
        }
        "len" => {
            arity(f, a, 1)?;
            Ok(Value::from(match &a[0] {
                Value::Array(x) => x.len(),
                Value::Object(m) => m.len(),
                Value::String(t) => t.len(),
                _ => 0,
            }))
        }
        "join" | "split" | "index" => list_fn(f, a),
        "truncate" | "pad" | "print" | "println" | "printf" => text_fn(f, a),
        _ => Ok(Value::Null),
    }
}

fn case(f: &str, t: &str) -> String {
    match f {
        "upper" => t.to_uppercase(),
        "lower" => t.to_lowercase(),
        _ => t
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            })
            .collect::<Vec<String>>()
            .join(" "),
    }
}

/// join, split, index.
fn list_fn(f: &str, a: &[Value]) -> Result<Value> {
    match f {
        "join" => {
            // `join LIST SEP`, or piped: `.List | join SEP` (the list comes last).
            arity(f, a, 2)?;
            let (list, sep) = match (&a[0], &a[1]) {
                (Value::Array(l), sep) => (l, s(sep)),
                (sep, Value::Array(l)) => (l, s(sep)),
                (Value::Null, _) | (_, Value::Null) => return Ok(Value::String(String::new())),
                _ => return Err(usage("join takes a list and a separator")),
            };
            Ok(Value::String(
                list.iter().map(s).collect::<Vec<_>>().join(&sep),
            ))
        }
        "split" => {
            arity(f, a, 2)?;
            let (t, sep) = (s(&a[0]), s(&a[1]));
            Ok(Value::Array(
                t.split(sep.as_str())
                    .map(|x| Value::String(x.into()))
                    .collect(),
            ))
        }
        _ => {
            if a.len() < 2 {
                return Err(usage("index takes a value and keys"));
            }
            let mut v = a[0].clone();
            for k in &a[1..] {
                v = match (&v, k) {
                    (Value::Object(m), key) => m.get(&s(key)).cloned().unwrap_or(Value::Null),
                    (Value::Array(l), Value::Number(n)) => n
                        .as_f64()
                        .and_then(|i| l.get(i as usize).cloned())
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
            Ok(v)
        }
    }
}

/// truncate, pad, print, println, printf.
fn text_fn(f: &str, a: &[Value]) -> Result<Value> {
    let t = match f {
        "truncate" => {
            // `truncate VALUE N` or `.X | truncate N`.
            arity(f, a, 2)?;
            let (t, n) = match (&a[0], &a[1]) {
                (Value::Number(n), v) | (v, Value::Number(n)) => {
                    (s(v), n.as_f64().unwrap_or(0.0).max(0.0) as usize)
                }
                _ => return Err(usage("truncate takes a value and a length")),
            };
            t.chars().take(n).collect()
        }
        "pad" => {
            arity(f, a, 3)?;
            let n = |v: &Value| v.as_f64().unwrap_or(0.0).max(0.0) as usize;
            format!(
                "{}{}{}",
                " ".repeat(n(&a[1])),
                s(&a[0]),
                " ".repeat(n(&a[2]))
            )
        }
        "printf" => {
            let Some((fmt, rest)) = a.split_first() else {
                return Err(usage("printf takes a format"));
            };
            printf(&s(fmt), rest)
        }
        _ => {
            let mut t: String = a.iter().map(s).collect::<Vec<_>>().join(" ");
            if f == "println" {
                t.push('\n');
            }
            t
        }
    };
    Ok(Value::String(t))
}

/// `%s %v %d %q %%`, enough for docker-style formats.
fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&format!("{:?}", args.next().map(text).unwrap_or_default())),
            Some(_) => out.push_str(&args.next().map(text).unwrap_or_default()),
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_nesting_functions_and_control() {
        let v = json!({
            "ID": "abc", "Tags": ["a:1", "b:2"], "Config": {"Env": ["X=1"], "User": ""},
            "Size": 42, "Labels": {"k": "v"},
        });
        let cases = [
            ("{{.ID}}", "abc"),
            ("id={{ .ID }} size={{.Size}}", "id=abc size=42"),
            ("{{.Config.Env}}", "[X=1]"),
            ("{{json .Config}}", r#"{"Env":["X=1"],"User":""}"#),
            ("{{json .Tags}}", r#"["a:1","b:2"]"#),
            ("{{.Missing}}", "<no value>"),
            ("{{.ID | upper}}", "ABC"),
            ("{{join .Tags \",\"}}", "a:1,b:2"),
            ("{{.Tags | join \" \"}}", "a:1 b:2"),
            ("{{range .Tags}}[{{.}}]{{end}}", "[a:1][b:2]"),
            ("{{range .Nothing}}x{{else}}none{{end}}", "none"),
            ("{{if .Config.User}}u{{else}}root{{end}}", "root"),
            ("{{with .Config}}{{.Env}}{{end}}", "[X=1]"),
            ("{{index .Labels \"k\"}}", "v"),
            ("{{len .Tags}}", "2"),
            ("{{printf \"%s-%d\" .ID .Size}}", "abc-42"),
            ("{{.ID | truncate 2}}", "ab"),
            ("a  {{- .ID -}}  b", "aabcb"),
            ("{{.ID}}\\t{{.Size}}", "abc\t42"),
            ("{{/* note */}}{{.ID}}", "abc"),
        ];
        for (t, want) in cases {
            assert_eq!(r(t, &v), want, "{t}");
        }
    }

    #[test]
    fn tables_get_headers_and_aligned_columns() {
        let t = Template::parse("table {{.Repository}}\t{{.ID}}\t{{.CreatedSince}}").unwrap();
        assert!(t.table);
        assert_eq!(t.fields, ["Repository", "ID", "CreatedSince"]);
        let rows = [
            json!({"Repository": "alpine", "ID": "1", "CreatedSince": "2 days ago"}),
            json!({"Repository": "x", "ID": "22", "CreatedSince": "now"}),
        ];
        let h = |f: &str| {
            if f == "ID" {
                "IMAGE ID".to_string()
            } else {
                default_header(f)
            }
        };
        let out = render_all(&t, &rows, &h).unwrap();
        assert_eq!(
            out,
            "REPOSITORY   IMAGE ID   CREATED SINCE\n\
             alpine       1          2 days ago\n\
             x            22         now\n"
        );
        let plain = Template::parse("{{.ID}}").unwrap();
        assert_eq!(render_all(&plain, &rows, &h).unwrap(), "1\n22\n");
    }

    #[test]
    fn errors_name_the_template_and_the_problem() {
        for (t, want) in [
            ("{{.ID", "unclosed action"),
            ("{{range .X}}", "without {{end}}"),
            ("{{end}}", "unexpected {{end}}"),
            ("{{bogus .X}}", "function \"bogus\" not defined"),
            ("{{ID}}", "not defined"),
        ] {
            let e = Template::parse(t).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(t), "{t}: {e}");
        }
        let e = Template::parse("{{json}}")
            .unwrap()
            .render(&json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("json takes 1"), "{e}");
    }
}
