//! The Go `text/template` subset of `line_format` and `label_format`.
//!
//! A template is compiled once per query. Supported:
//!
//! - Actions `{{ pipeline }}` with trim markers (`{{- ` and ` -}}`) and comments
//!   (`{{/* ... */}}`); `{{ if }}`, `{{ else if }}`, `{{ else }}`, `{{ end }}`.
//! - Operands: `.label` (the label's value; a missing label is the empty string), `.` (all
//!   labels, printed as Go prints a map), string literals (`"..."` with Go escapes, and
//!   `` `raw` ``), integers, floats, `true`, `false`, `nil`, parenthesised pipelines, and
//!   function calls; pipelines chain with `|`, passing the value as the last argument.
//! - Loki's functions: `__line__`, `__timestamp__`; strings: `ToLower`, `ToUpper`, `lower`,
//!   `upper`, `title`, `Title`, `Replace`, `replace`, `Trim`, `TrimLeft`, `TrimRight`,
//!   `TrimPrefix`, `TrimSuffix`, `TrimSpace`, `trim`, `trimAll`, `trimPrefix`, `trimSuffix`,
//!   `trunc`, `substr`, `repeat`, `indent`, `nindent`, `alignLeft`, `alignRight`, `default`,
//!   `contains`, `hasPrefix`, `hasSuffix`, `b64enc`, `b64dec`, `urlencode`, `urldecode`;
//!   regexes: `regexReplaceAll`, `regexReplaceAllLiteral`, `count` (a literal pattern is
//!   compiled with the template); numbers: `int`, `float64`, `add`, `sub`, `mul`, `div`,
//!   `mod`, `max`, `min`, `addf`, `subf`, `mulf`, `divf`, `maxf`, `minf`, `ceil`, `floor`,
//!   `round`, `bytes`, `duration`, `duration_seconds`; time (UTC): `date`, `unixEpoch`,
//!   `unixEpochMillis`, `unixEpochNanos`, `unixToTime`; Go's builtins `and`, `or`, `not`,
//!   `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `len`, `print`, `println`, `printf` (verbs `v s d f
//!   F e E g G q x X t %` with flags, width and precision).
//! - Not supported (a compile error): variables (`$x`), `range`, `with`, `define`,
//!   `template`, `block`, nested fields (`.a.b`), `fromJson`, `toDate`, `toDateInZone` and
//!   `now` (time comes only from the entry).
//!
//! A function that fails on an entry (a bad argument, division by zero) fails the render;
//! the stage then sets `__error__="TemplateFormatErr"`.

use std::fmt::Write as _;

use regex::Regex;

use super::EvalError;
use super::labels::LabelState;
use super::values::{format_float_g, go_float, go_quote, parse_go_duration, parse_humanized_bytes};

/// The largest string a template function may build (`repeat`, padding).
const MAX_BUILT: usize = 1 << 20;

/// What a template reads: the labels, the line and the entry's time.
pub(super) struct Data<'a> {
    pub(super) labels: &'a LabelState,
    pub(super) line: &'a str,
    pub(super) timestamp: i64,
}

/// A compiled template.
#[derive(Debug)]
pub(super) struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Pipe),
    If { cond: Pipe, then: Vec<Node>, otherwise: Vec<Node> },
}

#[derive(Debug)]
struct Pipe {
    cmds: Vec<Cmd>,
}

#[derive(Debug)]
enum Cmd {
    Call { func: Func, args: Vec<Arg> },
    Operand(Arg),
}

#[derive(Debug)]
enum Arg {
    Field(String),
    Dot,
    Value(V),
    Pipe(Box<Pipe>),
    Func(Func),
}

#[derive(Debug)]
struct Func {
    name: &'static str,
    /// The pattern, when the first argument of a regex function is a literal.
    regex: Option<Regex>,
}

/// A template value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Unix nanoseconds, UTC.
    Time(i64),
    Nil,
}

const FUNCTIONS: &[&str] = &[
    "__line__",
    "__timestamp__",
    "ToLower",
    "ToUpper",
    "lower",
    "upper",
    "title",
    "Title",
    "Replace",
    "replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "trunc",
    "substr",
    "repeat",
    "indent",
    "nindent",
    "alignLeft",
    "alignRight",
    "default",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "b64enc",
    "b64dec",
    "urlencode",
    "urldecode",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
    "addf",
    "subf",
    "mulf",
    "divf",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "bytes",
    "duration",
    "duration_seconds",
    "date",
    "unixEpoch",
    "unixEpochMillis",
    "unixEpochNanos",
    "unixToTime",
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "print",
    "println",
    "printf",
];

const UNSUPPORTED_KEYWORDS: &[&str] = &["range", "with", "define", "template", "block", "break", "continue"];

// ---- compiling ------------------------------------------------------------------------

enum Item {
    Text(String),
    Action(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(String),
    Dot,
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    LParen,
    RParen,
    Pipe,
}

enum Terminator {
    Eof,
    End,
    Else,
    ElseIf(Pipe),
}

impl Template {
    pub(super) fn new(text: &str) -> Result<Self, EvalError> {
        let invalid = |reason: String| EvalError::InvalidTemplate { template: text.to_owned(), reason };
        let items = split(text).map_err(invalid)?;
        let mut items = items.into_iter();
        let (nodes, end) = parse_nodes(&mut items, false).map_err(invalid)?;
        match end {
            Terminator::Eof => Ok(Self { nodes }),
            _ => Err(invalid("unexpected {{end}} or {{else}}".into())),
        }
    }

    /// Renders the template, or says why it cannot.
    pub(super) fn render(&self, data: &Data<'_>) -> Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

/// Splits text and actions, applying trim markers and dropping comments.
fn split(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut pos = 0;
    let bytes = text.as_bytes();
    while pos < text.len() {
        let Some(open) = text[pos..].find("{{").map(|i| pos + i) else {
            items.push(Item::Text(text[pos..].to_owned()));
            break;
        };
        let mut literal = &text[pos..open];
        let mut start = open + 2;
        let is_ws = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t' | b'\r' | b'\n'));
        if bytes.get(start) == Some(&b'-') && is_ws(bytes.get(start + 1)) {
            literal = literal.trim_end();
            start += 1;
        }
        if !literal.is_empty() {
            items.push(Item::Text(literal.to_owned()));
        }
        let close = find_close(text, start).ok_or("unclosed action")?;
        let mut end = close;
        let trim_right = close >= start + 2 && bytes[close - 1] == b'-' && is_ws(bytes.get(close - 2));
        if trim_right {
            end -= 1;
        }
        let content = text[start..end].trim();
        if content.starts_with("/*") {
            if !content.ends_with("*/") {
                return Err("unclosed comment".into());
            }
        } else {
            items.push(Item::Action(content.to_owned()));
        }
        pos = close + 2;
        if trim_right {
            pos += text[pos..].len() - text[pos..].trim_start().len();
        }
    }
    Ok(items)
}

/// The index of the `}}` closing an action that starts at `from`, skipping string literals.
fn find_close(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn parse_nodes(
    items: &mut std::vec::IntoIter<Item>,
    in_block: bool,
) -> Result<(Vec<Node>, Terminator), String> {
    let mut nodes = Vec::new();
    while let Some(item) = items.next() {
        let content = match item {
            Item::Text(text) => {
                nodes.push(Node::Text(text));
                continue;
            }
            Item::Action(content) => content,
        };
        let toks = lex(&content)?;
        match toks.first() {
            Some(Tok::Ident(word)) if word == "if" => {
                let cond = parse_pipe_all(&toks[1..])?;
                nodes.push(parse_if(cond, items)?);
            }
            Some(Tok::Ident(word)) if word == "else" => {
                if !in_block {
                    return Err("{{else}} outside {{if}}".into());
                }
                return match toks.get(1) {
                    None => Ok((nodes, Terminator::Else)),
                    Some(Tok::Ident(word)) if word == "if" => {
                        Ok((nodes, Terminator::ElseIf(parse_pipe_all(&toks[2..])?)))
                    }
                    Some(_) => Err("unexpected token after else".into()),
                };
            }
            Some(Tok::Ident(word)) if word == "end" => {
                if !in_block || toks.len() > 1 {
                    return Err("unexpected {{end}}".into());
                }
                return Ok((nodes, Terminator::End));
            }
            Some(Tok::Ident(word)) if UNSUPPORTED_KEYWORDS.contains(&word.as_str()) => {
                return Err(format!("{{{{{word}}}}} is not supported"));
            }
            None => return Err("empty action".into()),
            Some(_) => nodes.push(Node::Action(parse_pipe_all(&toks)?)),
        }
    }
    if in_block {
        return Err("unexpected end of template: missing {{end}}".into());
    }
    Ok((nodes, Terminator::Eof))
}

fn parse_if(cond: Pipe, items: &mut std::vec::IntoIter<Item>) -> Result<Node, String> {
    let (then, end) = parse_nodes(items, true)?;
    let otherwise = match end {
        Terminator::End => Vec::new(),
        Terminator::Else => match parse_nodes(items, true)? {
            (nodes, Terminator::End) => nodes,
            _ => return Err("expected {{end}} after {{else}}".into()),
        },
        Terminator::ElseIf(cond) => vec![parse_if(cond, items)?],
        Terminator::Eof => return Err("missing {{end}}".into()),
    };
    Ok(Node::If { cond, then, otherwise })
}

fn lex(content: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let chars: Vec<char> = content.chars().collect();
    let mut i = 0;
    let is_ident_start = |c: char| c.is_alphabetic() || c == '_';
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else { return Err("unterminated string".into()) };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else { return Err("unterminated string".into()) };
                            i += 1;
                            match e {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'a' => s.push('\u{7}'),
                                'b' => s.push('\u{8}'),
                                'f' => s.push('\u{c}'),
                                'v' => s.push('\u{b}'),
                                '\\' | '"' | '\'' => s.push(e),
                                'x' | 'u' | 'U' => {
                                    let len = match e {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let hex: String = chars.get(i..i + len).unwrap_or(&[]).iter().collect();
                                    let code = u32::from_str_radix(&hex, 16).map_err(|_| "invalid escape")?;
                                    s.push(char::from_u32(code).ok_or("invalid escape")?);
                                    i += len;
                                }
                                _ => return Err(format!("unknown escape \\{e}")),
                            }
                        }
                        c => s.push(c),
                    }
                }
                toks.push(Tok::Str(s));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..].iter().position(|&c| c == '`').ok_or("unterminated raw string")?;
                toks.push(Tok::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '.' if chars.get(i + 1).is_some_and(|&c| is_ident_start(c)) => {
                let start = i + 1;
                i = start;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                if chars.get(i) == Some(&'.') {
                    return Err("nested fields (.a.b) are not supported".into());
                }
                toks.push(Tok::Field(chars[start..i].iter().collect()));
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                toks.push(Tok::Dot);
                i += 1;
            }
            c if c.is_ascii_digit()
                || c == '.'
                || ((c == '-' || c == '+')
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit() || *n == '.')) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() {
                    let c = chars[i];
                    let sign_in_exponent = (c == '-' || c == '+') && matches!(chars[i - 1], 'e' | 'E');
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' || sign_in_exponent {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let text: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
                toks.push(parse_number(&text).ok_or_else(|| format!("bad number syntax: {text:?}"))?);
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            '$' => return Err("variables are not supported".into()),
            c => return Err(format!("unexpected {c:?} in action")),
        }
    }
    Ok(toks)
}

fn parse_number(text: &str) -> Option<Tok> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let hex = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X"));
    if let Some(hex) = hex {
        let v = i64::from_str_radix(hex, 16).ok()?;
        return Some(Tok::Int(if negative { -v } else { v }));
    }
    if let Ok(v) = digits.parse::<i64>() {
        return Some(Tok::Int(if negative { -v } else { v }));
    }
    let v: f64 = digits.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    Some(Tok::Float(if negative { -v } else { v }))
}

fn parse_pipe_all(toks: &[Tok]) -> Result<Pipe, String> {
    let mut pos = 0;
    let pipe = parse_pipe(toks, &mut pos)?;
    if pos != toks.len() {
        return Err("unexpected \")\"".into());
    }
    Ok(pipe)
}

fn parse_pipe(toks: &[Tok], pos: &mut usize) -> Result<Pipe, String> {
    let mut cmds = Vec::new();
    loop {
        let mut operands = Vec::new();
        while let Some(tok) = toks.get(*pos) {
            match tok {
                Tok::Pipe | Tok::RParen => break,
                Tok::LParen => {
                    *pos += 1;
                    let inner = parse_pipe(toks, pos)?;
                    if toks.get(*pos) != Some(&Tok::RParen) {
                        return Err("unclosed left paren".into());
                    }
                    *pos += 1;
                    operands.push(Arg::Pipe(Box::new(inner)));
                }
                Tok::Field(name) => {
                    operands.push(Arg::Field(name.clone()));
                    *pos += 1;
                }
                Tok::Dot => {
                    operands.push(Arg::Dot);
                    *pos += 1;
                }
                Tok::Str(s) => {
                    operands.push(Arg::Value(V::Str(s.clone())));
                    *pos += 1;
                }
                Tok::Int(v) => {
                    operands.push(Arg::Value(V::Int(*v)));
                    *pos += 1;
                }
                Tok::Float(v) => {
                    operands.push(Arg::Value(V::Float(*v)));
                    *pos += 1;
                }
                Tok::Ident(name) => {
                    *pos += 1;
                    operands.push(match name.as_str() {
                        "true" => Arg::Value(V::Bool(true)),
                        "false" => Arg::Value(V::Bool(false)),
                        "nil" => Arg::Value(V::Nil),
                        _ => Arg::Func(function(name)?),
                    });
                }
            }
        }
        let mut operands = operands.into_iter();
        let cmd = match operands.next() {
            None => return Err("missing value for command".into()),
            Some(Arg::Func(mut func)) => {
                let args: Vec<Arg> = operands.collect();
                if matches!(func.name, "regexReplaceAll" | "regexReplaceAllLiteral" | "count")
                    && let Some(Arg::Value(V::Str(pattern))) = args.first()
                {
                    func.regex =
                        Some(Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?);
                }
                Cmd::Call { func, args }
            }
            Some(first) => {
                if operands.next().is_some() {
                    return Err("can't give argument to non-function".into());
                }
                Cmd::Operand(first)
            }
        };
        if !cmds.is_empty() && matches!(cmd, Cmd::Operand(_)) {
            return Err("can't give argument to non-function".into());
        }
        cmds.push(cmd);
        if toks.get(*pos) == Some(&Tok::Pipe) {
            *pos += 1;
            continue;
        }
        return Ok(Pipe { cmds });
    }
}

fn function(name: &str) -> Result<Func, String> {
    match FUNCTIONS.iter().find(|f| **f == name) {
        Some(name) => Ok(Func { name, regex: None }),
        None if matches!(name, "fromJson" | "toDate" | "toDateInZone" | "now") => {
            Err(format!("function {name:?} is not supported"))
        }
        None => Err(format!("function {name:?} not defined")),
    }
}

// ---- rendering ------------------------------------------------------------------------

fn render_nodes(nodes: &[Node], data: &Data<'_>, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipe) => {
                let value = eval_pipe(pipe, data)?;
                match value {
                    V::Nil => out.push_str("<no value>"),
                    value => print_value(&value, out),
                }
            }
            Node::If { cond, then, otherwise } => {
                if truthy(&eval_pipe(cond, data)?) {
                    render_nodes(then, data, out)?;
                } else {
                    render_nodes(otherwise, data, out)?;
                }
            }
        }
        if out.len() > MAX_BUILT {
            return Err("template output too large".into());
        }
    }
    Ok(())
}

fn eval_pipe(pipe: &Pipe, data: &Data<'_>) -> Result<V, String> {
    let mut piped: Option<V> = None;
    for cmd in &pipe.cmds {
        let value = match cmd {
            Cmd::Operand(arg) => eval_arg(arg, data)?,
            Cmd::Call { func, args } => {
                let mut values = Vec::with_capacity(args.len() + 1);
                for arg in args {
                    values.push(eval_arg(arg, data)?);
                }
                if let Some(previous) = piped.take() {
                    values.push(previous);
                }
                call(func, values, data)?
            }
        };
        piped = Some(value);
    }
    Ok(piped.unwrap_or(V::Nil))
}

fn eval_arg(arg: &Arg, data: &Data<'_>) -> Result<V, String> {
    Ok(match arg {
        Arg::Field(name) => V::Str(data.labels.get(name).unwrap_or("").to_owned()),
        Arg::Dot => {
            let mut s = String::from("map[");
            for (i, (k, v)) in data.labels.pairs_with_errors().into_iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                let _ = write!(s, "{k}:{v}");
            }
            s.push(']');
            V::Str(s)
        }
        Arg::Value(v) => v.clone(),
        Arg::Pipe(pipe) => eval_pipe(pipe, data)?,
        Arg::Func(func) => call(func, Vec::new(), data)?,
    })
}

fn print_value(value: &V, out: &mut String) {
    match value {
        V::Str(s) => out.push_str(s),
        V::Int(v) => {
            let _ = write!(out, "{v}");
        }
        V::Float(v) => out.push_str(&go_float(*v)),
        V::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        V::Time(ns) => out.push_str(&format_time("2006-01-02 15:04:05.999999999 -0700 MST", *ns)),
        V::Nil => out.push_str("<nil>"),
    }
}

fn to_str(value: &V) -> String {
    match value {
        V::Str(s) => s.clone(),
        other => {
            let mut out = String::new();
            print_value(other, &mut out);
            out
        }
    }
}

fn truthy(value: &V) -> bool {
    match value {
        V::Str(s) => !s.is_empty(),
        V::Int(v) => *v != 0,
        V::Float(v) => *v != 0.0,
        V::Bool(v) => *v,
        V::Time(_) => true,
        V::Nil => false,
    }
}

fn to_int(value: &V) -> i64 {
    match value {
        V::Str(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| {
                s.trim().parse::<f64>().ok().filter(|f| f.fract() == 0.0 && f.is_finite()).map(|f| f as i64)
            })
            .unwrap_or(0),
        V::Int(v) => *v,
        V::Float(v) => *v as i64,
        V::Bool(v) => i64::from(*v),
        V::Time(ns) => ns.div_euclid(1_000_000_000),
        V::Nil => 0,
    }
}

fn to_float(value: &V) -> f64 {
    match value {
        V::Str(s) => s.trim().parse().unwrap_or(0.0),
        V::Int(v) => *v as f64,
        V::Float(v) => *v,
        V::Bool(v) => f64::from(u8::from(*v)),
        V::Time(ns) => *ns as f64 / 1e9,
        V::Nil => 0.0,
    }
}

fn want(name: &str, args: &[V], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("wrong number of args for {name}: want {n} got {}", args.len()))
    }
}

fn want_at_least(name: &str, args: &[V], n: usize) -> Result<(), String> {
    if args.len() >= n {
        Ok(())
    } else {
        Err(format!("wrong number of args for {name}: want at least {n} got {}", args.len()))
    }
}

fn chars_count(s: &str) -> usize {
    s.chars().count()
}

fn char_slice(s: &str, from: usize, to: usize) -> String {
    s.chars().skip(from).take(to.saturating_sub(from)).collect()
}

fn bounded(len: usize) -> Result<(), String> {
    if len > MAX_BUILT { Err("template output too large".into()) } else { Ok(()) }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut previous_is_separator = true;
    for c in s.chars() {
        if previous_is_separator && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        previous_is_separator = !(c.is_alphanumeric() || c == '_');
    }
    out
}

fn call(func: &Func, args: Vec<V>, data: &Data<'_>) -> Result<V, String> {
    let name = func.name;
    let s = |i: usize| to_str(&args[i]);
    let i = |i: usize| to_int(&args[i]);
    let f = |i: usize| to_float(&args[i]);
    Ok(match name {
        "__line__" => {
            want(name, &args, 0)?;
            V::Str(data.line.to_owned())
        }
        "__timestamp__" => {
            want(name, &args, 0)?;
            V::Time(data.timestamp)
        }
        "ToLower" | "lower" => {
            want(name, &args, 1)?;
            V::Str(s(0).to_lowercase())
        }
        "ToUpper" | "upper" => {
            want(name, &args, 1)?;
            V::Str(s(0).to_uppercase())
        }
        "title" | "Title" => {
            want(name, &args, 1)?;
            V::Str(title(&s(0)))
        }
        "TrimSpace" | "trim" => {
            want(name, &args, 1)?;
            V::Str(s(0).trim().to_owned())
        }
        "Replace" => {
            want(name, &args, 4)?;
            let (text, old, new, n) = (s(0), s(1), s(2), i(3));
            V::Str(if n < 0 { text.replace(&old, &new) } else { text.replacen(&old, &new, n as usize) })
        }
        "replace" => {
            want(name, &args, 3)?;
            V::Str(s(2).replace(&s(0), &s(1)))
        }
        "Trim" | "TrimLeft" | "TrimRight" | "trimAll" => {
            want(name, &args, 2)?;
            let (text, cutset) = if name == "trimAll" { (s(1), s(0)) } else { (s(0), s(1)) };
            let cut = |c: char| cutset.contains(c);
            V::Str(match name {
                "TrimLeft" => text.trim_start_matches(cut).to_owned(),
                "TrimRight" => text.trim_end_matches(cut).to_owned(),
                _ => text.trim_matches(cut).to_owned(),
            })
        }
        "TrimPrefix" | "trimPrefix" => {
            want(name, &args, 2)?;
            let (text, prefix) = if name == "trimPrefix" { (s(1), s(0)) } else { (s(0), s(1)) };
            V::Str(text.strip_prefix(prefix.as_str()).unwrap_or(&text).to_owned())
        }
        "TrimSuffix" | "trimSuffix" => {
            want(name, &args, 2)?;
            let (text, suffix) = if name == "trimSuffix" { (s(1), s(0)) } else { (s(0), s(1)) };
            V::Str(text.strip_suffix(suffix.as_str()).unwrap_or(&text).to_owned())
        }
        "trunc" => {
            want(name, &args, 2)?;
            let (n, text) = (i(0), s(1));
            let len = chars_count(&text) as i64;
            V::Str(if n < 0 && len + n > 0 {
                char_slice(&text, (len + n) as usize, len as usize)
            } else if n >= 0 && len > n {
                char_slice(&text, 0, n as usize)
            } else {
                text
            })
        }
        "substr" => {
            want(name, &args, 3)?;
            let (start, end, text) = (i(0), i(1), s(2));
            let len = chars_count(&text) as i64;
            V::Str(if start < 0 {
                char_slice(&text, 0, end.clamp(0, len) as usize)
            } else if end < 0 || end > len {
                char_slice(&text, start.min(len) as usize, len as usize)
            } else {
                char_slice(&text, start as usize, end as usize)
            })
        }
        "repeat" => {
            want(name, &args, 2)?;
            let (n, text) = (i(0), s(1));
            let n = usize::try_from(n).map_err(|_| "repeat: negative count")?;
            bounded(n.saturating_mul(text.len()))?;
            V::Str(text.repeat(n))
        }
        "indent" | "nindent" => {
            want(name, &args, 2)?;
            let n = usize::try_from(i(0)).unwrap_or(0);
            bounded(n)?;
            let pad = " ".repeat(n);
            let body = format!("{pad}{}", s(1).replace('\n', &format!("\n{pad}")));
            V::Str(if name == "nindent" { format!("\n{body}") } else { body })
        }
        "alignLeft" | "alignRight" => {
            want(name, &args, 2)?;
            let (n, text) = (i(0), s(1));
            let len = chars_count(&text) as i64;
            if n < 0 || n == len {
                V::Str(text)
            } else {
                bounded(n as usize)?;
                let n = n as usize;
                let len = len as usize;
                V::Str(match (name, n > len) {
                    ("alignLeft", true) => format!("{text}{}", " ".repeat(n - len)),
                    ("alignLeft", false) => char_slice(&text, 0, n),
                    (_, true) => format!("{}{text}", " ".repeat(n - len)),
                    (_, false) => char_slice(&text, len - n, len),
                })
            }
        }
        "default" => {
            want_at_least(name, &args, 1)?;
            match args.get(1) {
                Some(given) if truthy(given) => given.clone(),
                _ => args[0].clone(),
            }
        }
        "contains" => {
            want(name, &args, 2)?;
            V::Bool(s(1).contains(&s(0)))
        }
        "hasPrefix" => {
            want(name, &args, 2)?;
            V::Bool(s(1).starts_with(&s(0)))
        }
        "hasSuffix" => {
            want(name, &args, 2)?;
            V::Bool(s(1).ends_with(&s(0)))
        }
        "b64enc" => {
            want(name, &args, 1)?;
            V::Str(base64_encode(s(0).as_bytes()))
        }
        "b64dec" => {
            want(name, &args, 1)?;
            let bytes = base64_decode(&s(0)).ok_or("illegal base64 data")?;
            V::Str(String::from_utf8_lossy(&bytes).into_owned())
        }
        "urlencode" => {
            want(name, &args, 1)?;
            V::Str(url_encode(&s(0)))
        }
        "urldecode" => {
            want(name, &args, 1)?;
            V::Str(url_decode(&s(0)).ok_or("invalid URL escape")?)
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" | "count" => {
            want(name, &args, if name == "count" { 2 } else { 3 })?;
            let compiled;
            let re = match &func.regex {
                Some(re) => re,
                None => {
                    compiled = Regex::new(&s(0)).map_err(|e| e.to_string())?;
                    &compiled
                }
            };
            let text = s(1);
            match name {
                "count" => V::Int(re.find_iter(&text).count() as i64),
                "regexReplaceAll" => V::Str(re.replace_all(&text, s(2).as_str()).into_owned()),
                _ => V::Str(re.replace_all(&text, regex::NoExpand(&s(2))).into_owned()),
            }
        }
        "int" => {
            want(name, &args, 1)?;
            V::Int(i(0))
        }
        "float64" => {
            want(name, &args, 1)?;
            V::Float(f(0))
        }
        "add" | "mul" => {
            let mut acc: i64 = if name == "add" { 0 } else { 1 };
            for k in 0..args.len() {
                acc = if name == "add" { acc.wrapping_add(i(k)) } else { acc.wrapping_mul(i(k)) };
            }
            V::Int(acc)
        }
        "sub" | "div" | "mod" => {
            want(name, &args, 2)?;
            let (a, b) = (i(0), i(1));
            V::Int(match name {
                "sub" => a.wrapping_sub(b),
                _ if b == 0 => return Err("integer divide by zero".into()),
                "div" => a.wrapping_div(b),
                _ => a.wrapping_rem(b),
            })
        }
        "max" | "min" => {
            want_at_least(name, &args, 1)?;
            let values = (0..args.len()).map(i);
            V::Int(if name == "max" { values.max() } else { values.min() }.unwrap_or(0))
        }
        "addf" | "mulf" => {
            let values = (0..args.len()).map(f);
            V::Float(if name == "addf" { values.sum() } else { values.product() })
        }
        "subf" | "divf" => {
            want_at_least(name, &args, 1)?;
            let mut acc = f(0);
            for k in 1..args.len() {
                let v = f(k);
                if name == "subf" {
                    acc -= v;
                } else if v == 0.0 {
                    return Err("division by zero".into());
                } else {
                    acc /= v;
                }
            }
            V::Float(acc)
        }
        "maxf" | "minf" => {
            want_at_least(name, &args, 1)?;
            let values = (0..args.len()).map(f);
            V::Float(if name == "maxf" {
                values.fold(f64::MIN, f64::max)
            } else {
                values.fold(f64::MAX, f64::min)
            })
        }
        "ceil" => {
            want(name, &args, 1)?;
            V::Float(f(0).ceil())
        }
        "floor" => {
            want(name, &args, 1)?;
            V::Float(f(0).floor())
        }
        "round" => {
            want_at_least(name, &args, 2)?;
            let round_on = if args.len() > 2 { f(2) } else { 0.5 };
            let pow = 10f64.powi(i(1).clamp(-300, 300) as i32);
            let digit = f(0) * pow;
            let rounded = if digit.fract() >= round_on { digit.ceil() } else { digit.floor() };
            V::Float(rounded / pow)
        }
        "bytes" => {
            want(name, &args, 1)?;
            V::Int(parse_humanized_bytes(&s(0))?.min(i64::MAX as u64) as i64)
        }
        "duration" | "duration_seconds" => {
            want(name, &args, 1)?;
            V::Float(parse_go_duration(&s(0))? as f64 / 1e9)
        }
        "date" => {
            want(name, &args, 2)?;
            let ns = match &args[1] {
                V::Time(ns) => *ns,
                V::Int(secs) => secs.saturating_mul(1_000_000_000),
                other => return Err(format!("date: not a time: {}", to_str(other))),
            };
            V::Str(format_time(&s(0), ns))
        }
        "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" => {
            want(name, &args, 1)?;
            let V::Time(ns) = args[0] else { return Err(format!("{name}: not a time")) };
            let divisor = match name {
                "unixEpoch" => 1_000_000_000,
                "unixEpochMillis" => 1_000_000,
                _ => 1,
            };
            V::Str(ns.div_euclid(divisor).to_string())
        }
        "unixToTime" => {
            want(name, &args, 1)?;
            let text = s(0);
            let v: i64 = text.parse().map_err(|_| format!("unixToTime: invalid epoch {text:?}"))?;
            let scale: i64 = match text.trim_start_matches('-').len() {
                5 => 86_400_000_000_000,
                10 => 1_000_000_000,
                13 => 1_000_000,
                16 => 1_000,
                19 => 1,
                _ => return Err(format!("unixToTime: unknown epoch length of {text:?}")),
            };
            V::Time(v.checked_mul(scale).ok_or("unixToTime: out of range")?)
        }
        "and" => {
            want_at_least(name, &args, 1)?;
            args.iter().find(|v| !truthy(v)).unwrap_or(&args[args.len() - 1]).clone()
        }
        "or" => {
            want_at_least(name, &args, 1)?;
            args.iter().find(|v| truthy(v)).unwrap_or(&args[args.len() - 1]).clone()
        }
        "not" => {
            want(name, &args, 1)?;
            V::Bool(!truthy(&args[0]))
        }
        "eq" => {
            want_at_least(name, &args, 2)?;
            let mut any = false;
            for other in &args[1..] {
                if compare_values(&args[0], other)? == std::cmp::Ordering::Equal {
                    any = true;
                }
            }
            V::Bool(any)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(name, &args, 2)?;
            let ord = compare_values(&args[0], &args[1])?;
            V::Bool(match name {
                "ne" => ord.is_ne(),
                "lt" => ord.is_lt(),
                "le" => ord.is_le(),
                "gt" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        "len" => {
            want(name, &args, 1)?;
            match &args[0] {
                V::Str(text) => V::Int(text.len() as i64),
                other => return Err(format!("len of {}", type_name(other))),
            }
        }
        "print" | "println" => {
            let mut out = String::new();
            for (k, v) in args.iter().enumerate() {
                let is_str = matches!(v, V::Str(_));
                let previous_is_str = k > 0 && matches!(args[k - 1], V::Str(_));
                if k > 0 && (name == "println" || (!is_str && !previous_is_str)) {
                    out.push(' ');
                }
                print_value(v, &mut out);
            }
            if name == "println" {
                out.push('\n');
            }
            V::Str(out)
        }
        "printf" => {
            want_at_least(name, &args, 1)?;
            V::Str(sprintf(&s(0), &args[1..])?)
        }
        _ => return Err(format!("function {name:?} not defined")),
    })
}

fn type_name(value: &V) -> &'static str {
    match value {
        V::Str(_) => "string",
        V::Int(_) => "int",
        V::Float(_) => "float64",
        V::Bool(_) => "bool",
        V::Time(_) => "time.Time",
        V::Nil => "nil",
    }
}

fn compare_values(a: &V, b: &V) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    match (a, b) {
        (V::Str(x), V::Str(y)) => Ok(x.cmp(y)),
        (V::Int(x), V::Int(y)) => Ok(x.cmp(y)),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            Ok(to_float(a).partial_cmp(&to_float(b)).unwrap_or(Ordering::Less))
        }
        (V::Bool(x), V::Bool(y)) => Ok(x.cmp(y)),
        (V::Time(x), V::Time(y)) => Ok(x.cmp(y)),
        (V::Nil, V::Nil) => Ok(Ordering::Equal),
        _ => Err(format!("incompatible types for comparison: {} and {}", type_name(a), type_name(b))),
    }
}

// ---- printf ---------------------------------------------------------------------------

fn sprintf(format: &str, args: &[V]) -> Result<String, String> {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut space, mut zero) = (false, false, false, false);
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => minus = true,
                '+' => plus = true,
                ' ' => space = true,
                '0' => zero = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width: Option<usize> = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
            chars.next();
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p: usize = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p.saturating_mul(10).saturating_add(d as usize);
                chars.next();
            }
            precision = Some(p);
        }
        bounded(width.unwrap_or(0))?;
        bounded(precision.unwrap_or(0))?;
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let sign = |negative: bool| {
            if negative {
                "-"
            } else if plus {
                "+"
            } else if space {
                " "
            } else {
                ""
            }
        };
        let bad = || format!("%!{verb}({}={})", type_name(arg), to_str(arg));
        let (body, numeric) = match (verb, arg) {
            ('v', V::Float(v)) | ('g' | 'G', V::Float(v)) => {
                let text = match precision {
                    Some(p) => format_float_precision_g(*v, p.max(1)),
                    None => go_float(*v),
                };
                (format!("{}{}", sign(*v < 0.0 && !text.starts_with('-')), text), true)
            }
            ('v' | 'd', V::Int(v)) => (format!("{}{}", sign(*v < 0), v.unsigned_abs()), true),
            ('v' | 's', V::Str(text)) => (
                match precision {
                    Some(p) => text.chars().take(p).collect(),
                    None => text.clone(),
                },
                false,
            ),
            ('v' | 's', other) if !matches!(verb, 's') || !matches!(other, V::Int(_) | V::Float(_)) => {
                let text = to_str(other);
                (
                    match precision {
                        Some(p) => text.chars().take(p).collect(),
                        None => text,
                    },
                    false,
                )
            }
            ('t', V::Bool(v)) => (v.to_string(), false),
            ('f' | 'F', V::Float(v)) => {
                (format!("{}{:.*}", sign(*v < 0.0), precision.unwrap_or(6), v.abs()), true)
            }
            ('e' | 'E', V::Float(v)) => {
                let text = format_exp(v.abs(), precision.unwrap_or(6));
                let text = if verb == 'E' { text.to_uppercase() } else { text };
                (format!("{}{}", sign(*v < 0.0), text), true)
            }
            ('q', V::Str(text)) => (go_quote(text), false),
            ('x', V::Str(text)) => (text.bytes().map(|b| format!("{b:02x}")).collect(), false),
            ('X', V::Str(text)) => (text.bytes().map(|b| format!("{b:02X}")).collect(), false),
            ('x', V::Int(v)) => (format!("{}{:x}", sign(*v < 0), v.unsigned_abs()), true),
            ('X', V::Int(v)) => (format!("{}{:X}", sign(*v < 0), v.unsigned_abs()), true),
            _ => (bad(), false),
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if minus {
                    out.push_str(&body);
                    out.push_str(&" ".repeat(pad));
                } else if zero && numeric {
                    let (sign, digits) = match body.chars().next() {
                        Some(c @ ('-' | '+' | ' ')) => (c.to_string(), body[1..].to_owned()),
                        _ => (String::new(), body.clone()),
                    };
                    let _ = write!(out, "{sign}{}{digits}", "0".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, arg) in args[next..].iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", type_name(arg), to_str(arg));
        }
        out.push(')');
    }
    Ok(out)
}

/// `%e` with `precision` digits after the point and a two-digit exponent (`1.500000e+03`).
fn format_exp(value: f64, precision: usize) -> String {
    let text = format!("{value:.precision$e}");
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// `%.{precision}g`.
fn format_float_precision_g(value: f64, precision: usize) -> String {
    if !value.is_finite() || value == 0.0 {
        return go_float(value);
    }
    let rounded: f64 = format!("{value:.prec$e}", prec = precision - 1).parse().unwrap_or(value);
    format_float_g(rounded, precision as i32)
}

// ---- time -----------------------------------------------------------------------------

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    weekday: usize,
    yday: u32,
}

fn civil(ns: i64) -> Civil {
    let day_ns: i64 = 86_400_000_000_000;
    let days = ns.div_euclid(day_ns);
    let rem = ns.rem_euclid(day_ns);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUMULATIVE[(month - 1) as usize] + day + u32::from(leap && month > 2);
    let secs = rem / 1_000_000_000;
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        nanos: (rem % 1_000_000_000) as u32,
        weekday: (days + 4).rem_euclid(7) as usize,
        yday,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// Formats unix nanoseconds in UTC with a Go reference layout (`2006-01-02T15:04:05Z07:00`).
fn format_time(layout: &str, ns: i64) -> String {
    let t = civil(ns);
    let mut out = String::new();
    let b = layout.as_bytes();
    let mut i = 0;
    let starts = |i: usize, s: &str| layout[i..].starts_with(s);
    let hour12 = if t.hour.is_multiple_of(12) { 12 } else { t.hour % 12 };
    while i < b.len() {
        let (len, text): (usize, String) = match b[i] {
            b'J' if starts(i, "January") => (7, MONTHS[t.month as usize - 1].into()),
            b'J' if starts(i, "Jan") => (3, MONTHS[t.month as usize - 1][..3].into()),
            b'M' if starts(i, "Monday") => (6, DAYS[t.weekday].into()),
            b'M' if starts(i, "Mon") => (3, DAYS[t.weekday][..3].into()),
            b'M' if starts(i, "MST") => (3, "UTC".into()),
            b'0' if starts(i, "01") => (2, format!("{:02}", t.month)),
            b'0' if starts(i, "02") => (2, format!("{:02}", t.day)),
            b'0' if starts(i, "03") => (2, format!("{hour12:02}")),
            b'0' if starts(i, "04") => (2, format!("{:02}", t.minute)),
            b'0' if starts(i, "05") => (2, format!("{:02}", t.second)),
            b'0' if starts(i, "06") => (2, format!("{:02}", t.year.rem_euclid(100))),
            b'0' if starts(i, "002") => (3, format!("{:03}", t.yday)),
            b'1' if starts(i, "15") => (2, format!("{:02}", t.hour)),
            b'1' => (1, t.month.to_string()),
            b'2' if starts(i, "2006") => (4, format!("{:04}", t.year)),
            b'2' => (1, t.day.to_string()),
            b'_' if starts(i, "_2") && !starts(i, "_2006") => (2, format!("{:>2}", t.day)),
            b'_' if starts(i, "__2") => (3, format!("{:>3}", t.yday)),
            b'3' => (1, hour12.to_string()),
            b'4' => (1, t.minute.to_string()),
            b'5' => (1, t.second.to_string()),
            b'P' if starts(i, "PM") => (2, if t.hour >= 12 { "PM" } else { "AM" }.into()),
            b'p' if starts(i, "pm") => (2, if t.hour >= 12 { "pm" } else { "am" }.into()),
            b'-' if starts(i, "-070000") => (7, "+000000".into()),
            b'-' if starts(i, "-07:00:00") => (9, "+00:00:00".into()),
            b'-' if starts(i, "-0700") => (5, "+0000".into()),
            b'-' if starts(i, "-07:00") => (6, "+00:00".into()),
            b'-' if starts(i, "-07") => (3, "+00".into()),
            b'Z' if starts(i, "Z070000") => (7, "Z".into()),
            b'Z' if starts(i, "Z07:00:00") => (9, "Z".into()),
            b'Z' if starts(i, "Z0700") => (5, "Z".into()),
            b'Z' if starts(i, "Z07:00") => (6, "Z".into()),
            b'Z' if starts(i, "Z07") => (3, "Z".into()),
            b'.' | b',' if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                let digit = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == digit {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    (1, (b[i] as char).to_string())
                } else {
                    let n = (j - i - 1).min(9);
                    let frac = format!("{:09}", t.nanos);
                    let mut frac = frac[..n].to_owned();
                    if digit == b'9' {
                        frac.truncate(frac.trim_end_matches('0').len());
                    }
                    let text =
                        if frac.is_empty() { String::new() } else { format!("{}{frac}", b[i] as char) };
                    (j - i, text)
                }
            }
            _ => {
                let c = layout[i..].chars().next().unwrap_or(' ');
                (c.len_utf8(), c.to_string())
            }
        };
        out.push_str(&text);
        i += len;
    }
    out
}

// ---- encodings ------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in text.bytes() {
        let v = B64.iter().position(|&c| c == b)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
