//! Reader for Prometheus's `promqltest` script format (`*.test` files).

use pharos_metrics::model::Labels;

/// One value of a series description.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SeqValue {
    /// `_`: no sample at this step.
    Omitted,
    /// A float (the staleness marker for `stale`).
    Float(f64),
    /// A native histogram (`{{...}}`), which this engine does not support.
    Histogram,
}

/// A `metric{labels} values` line.
#[derive(Debug, Clone)]
pub(crate) struct SeriesLine {
    pub(crate) labels: Labels,
    pub(crate) values: Vec<SeqValue>,
}

/// When an eval runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EvalTime {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

/// An `eval` command with its expectations.
#[derive(Debug, Clone)]
pub(crate) struct EvalCmd {
    pub(crate) line: usize,
    pub(crate) expr: String,
    pub(crate) time: EvalTime,
    pub(crate) fail: bool,
    pub(crate) fail_message: Option<String>,
    pub(crate) fail_regex: Option<String>,
    pub(crate) ordered: bool,
    pub(crate) scalar: Option<f64>,
    pub(crate) series: Vec<SeriesLine>,
    pub(crate) string: Option<String>,
    /// `expect range vector from .. to .. step ..`: the instant query returns a matrix.
    pub(crate) range_vector: Option<(i64, i64, i64)>,
    /// What the warnings must be (`eval_warn`, `expect warn`, `expect no_warn`).
    pub(crate) warn: Expected,
    /// What the infos must be (`eval_info`, `expect info`, `expect no_info`).
    pub(crate) info: Expected,
    /// Inside an `ignore` ... `resume` block.
    pub(crate) ignored: bool,
}

/// Expectations on one kind of annotation, as promqltest checks them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expected {
    /// At least one (`eval_warn`, `expect warn` without a message).
    pub(crate) some: bool,
    /// Each of these matches one and each one matches one of these (`expect warn msg:` or
    /// `regex:`); compared without the `(line:col)` position at the end, which Pharos does not
    /// give (promql-parser keeps no positions).
    pub(crate) matching: Vec<Pattern>,
    /// None (`expect no_warn`).
    pub(crate) none: bool,
}

/// An expected annotation: its text or a regular expression.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Msg(String),
    Regex(regex::Regex),
}

impl Pattern {
    fn parse(tail: &str) -> Result<Option<Self>, String> {
        if let Some(m) = tail.strip_prefix("msg:") {
            let m = m.trim();
            let m = match m.rsplit_once(" (") {
                Some((text, pos)) if is_position(pos.trim_end_matches(')')) && pos.ends_with(')') => text,
                _ => m,
            };
            return Ok(Some(Pattern::Msg(m.to_owned())));
        }
        if let Some(r) = tail.strip_prefix("regex:") {
            let r = r.trim();
            // The position at the end: ` \(1:21\)` or ` \([0-9]+:[0-9]+\)`.
            let r = match r.rfind(" \\(") {
                Some(at) if r.ends_with("\\)") => &r[..at],
                _ => r,
            };
            return regex::Regex::new(r).map(|re| Some(Pattern::Regex(re))).map_err(|e| e.to_string());
        }
        Ok(None)
    }

    pub(crate) fn matches(&self, annotation: &str) -> bool {
        match self {
            Pattern::Msg(m) => m == annotation,
            Pattern::Regex(re) => re.is_match(annotation),
        }
    }
}

fn is_position(s: &str) -> bool {
    s.split_once(':').is_some_and(|(l, c)| {
        !l.is_empty()
            && !c.is_empty()
            && l.bytes().all(|b| b.is_ascii_digit())
            && c.bytes().all(|b| b.is_ascii_digit())
    })
}

impl Expected {
    /// Whether `got` (the annotations of one kind) meets the expectation; what is wrong if not.
    pub(crate) fn check(&self, kind: &str, got: &[String]) -> Result<(), String> {
        if (self.some || !self.matching.is_empty()) && got.is_empty() {
            return Err(format!("expected {kind} annotations but got none"));
        }
        if self.none && !got.is_empty() {
            return Err(format!("unexpected {kind} annotations: {got:?}"));
        }
        if !self.matching.is_empty() {
            if let Some(p) = self.matching.iter().find(|p| !got.iter().any(|g| p.matches(g))) {
                return Err(format!("expected a {kind} annotation matching {p:?}, got {got:?}"));
            }
            if let Some(g) = got.iter().find(|g| !self.matching.iter().any(|p| p.matches(g))) {
                return Err(format!("unexpected {kind} annotation {g:?}"));
            }
        }
        Ok(())
    }
}

impl EvalCmd {
    pub(crate) fn expects_histogram(&self) -> bool {
        self.series.iter().any(|s| s.values.contains(&SeqValue::Histogram))
    }
}

/// A script command.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// `load` or `load_with_nhcb` (classic histograms also loaded as native ones).
    Load {
        step: i64,
        with_nhcb: bool,
        series: Vec<SeriesLine>,
    },
    Clear,
    Eval(Box<EvalCmd>),
}

/// Parses a Prometheus duration (`1h30m`, `500ms`, `0`).
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    if b.is_empty() {
        return Err("empty duration".into());
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = s[start..i].parse().map_err(|e| format!("{e}"))?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += n * unit;
    }
    Ok(total)
}

/// Parses a number the way promqltest's `parseNumber` does (Go int with base prefix, then
/// Go float).
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        let v = i64::from_str_radix(hex, 16).ok()? as f64;
        return Some(if neg { -v } else { v });
    }
    let lower = body.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => {
            if !lower.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-' | '_')) {
                return None;
            }
            lower.replace('_', "").parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

fn take_number(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let rest = &s[i..];
    let lower = rest.to_ascii_lowercase();
    let (v, used) = if lower.starts_with("inf") {
        (f64::INFINITY, 3)
    } else if lower.starts_with("nan") {
        (f64::NAN, 3)
    } else {
        let rb = rest.as_bytes();
        let mut j = 0;
        while j < rb.len() && (rb[j].is_ascii_digit() || rb[j] == b'.') {
            j += 1;
        }
        if j == 0 {
            return None;
        }
        if j < rb.len() && (rb[j] == b'e' || rb[j] == b'E') {
            let mut k = j + 1;
            if k < rb.len() && (rb[k] == b'+' || rb[k] == b'-') {
                k += 1;
            }
            let ds = k;
            while k < rb.len() && rb[k].is_ascii_digit() {
                k += 1;
            }
            if k > ds {
                j = k;
            }
        }
        (rest[..j].parse::<f64>().ok()?, j)
    };
    Some((if neg { -v } else { v }, &rest[used..]))
}

fn parse_times(rest: &str) -> Result<usize, String> {
    let n = rest.strip_prefix('x').ok_or_else(|| format!("expected 'x<count>' in {rest:?}"))?;
    n.parse::<usize>().map_err(|e| format!("bad repeat count {n:?}: {e}"))
}

fn parse_float_item(tok: &str) -> Result<Vec<SeqValue>, String> {
    if tok == "_" {
        return Ok(vec![SeqValue::Omitted]);
    }
    if let Some(rest) = tok.strip_prefix('_') {
        return Ok(vec![SeqValue::Omitted; parse_times(rest)?]);
    }
    if tok == "stale" {
        return Ok(vec![SeqValue::Float(pharos_metrics::model::stale_nan())]);
    }
    let (a, rest) = take_number(tok).ok_or_else(|| format!("bad value {tok:?}"))?;
    if rest.is_empty() {
        return Ok(vec![SeqValue::Float(a)]);
    }
    if rest.starts_with('x') {
        return Ok(vec![SeqValue::Float(a); parse_times(rest)? + 1]);
    }
    let (b, rest) = take_number(rest).ok_or_else(|| format!("bad increment in {tok:?}"))?;
    let n = parse_times(rest)?;
    let mut out = Vec::with_capacity(n + 1);
    let mut v = a;
    for _ in 0..=n {
        out.push(SeqValue::Float(v));
        v += b;
    }
    Ok(out)
}

/// Parses the value part of a series line.
fn parse_values(s: &str) -> Result<Vec<SeqValue>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            // Histogram: `{{..}}`, `{{..}}xN`, `{{..}}+{{..}}xN`, `{{..}}-{{..}}xN`.
            let end = rest.find("}}").ok_or("unterminated histogram")? + 2;
            let mut after = &rest[end..];
            if (after.starts_with("+{{") || after.starts_with("-{{"))
                && let Some(e2) = after.find("}}")
            {
                after = &after[e2 + 2..];
            }
            let tok_end = after.find(char::is_whitespace).unwrap_or(after.len());
            let suffix = &after[..tok_end];
            let count = if suffix.is_empty() { 1 } else { parse_times(suffix)? + 1 };
            out.extend(std::iter::repeat_n(SeqValue::Histogram, count));
            rest = after[tok_end..].trim_start();
            continue;
        }
        let tok_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.extend(parse_float_item(&rest[..tok_end])?);
        rest = rest[tok_end..].trim_start();
    }
    Ok(out)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a quoted string (double, single or back quotes) at the start of `s`.
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('"' | '\'' | '`'))) => q,
        _ => return Err(format!("expected a quoted string at {s:?}")),
    };
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            match c {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
            escaped = false;
            continue;
        }
        if c == '\\' && quote != '`' {
            escaped = true;
            continue;
        }
        if c == quote {
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        out.push(c);
    }
    Err(format!("unterminated string {s:?}"))
}

/// Parses `metric{a="b"} values` (name and labels optional, `{}` for no labels).
pub(crate) fn parse_series(line: &str) -> Result<SeriesLine, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut rest = line.trim_start();
    let name_end = rest
        .char_indices()
        .find(|&(i, c)| !(if i == 0 { is_ident_start(c) } else { is_ident_char(c) }))
        .map_or(rest.len(), |(i, _)| i);
    if name_end > 0 {
        pairs.push(("__name__".into(), rest[..name_end].to_owned()));
        rest = &rest[name_end..];
    }
    if let Some(r) = rest.strip_prefix('{') {
        rest = r.trim_start();
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = if rest.starts_with(['"', '\'', '`']) {
                take_quoted(rest)?
            } else {
                let end =
                    rest.char_indices().find(|&(_, c)| !is_ident_char(c)).map_or(rest.len(), |(i, _)| i);
                if end == 0 {
                    return Err(format!("bad label list in {line:?}"));
                }
                (rest[..end].to_owned(), &rest[end..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let (value, r) = take_quoted(r.trim_start())?;
                pairs.push((name, value));
                rest = r.trim_start();
            } else {
                // A quoted metric name inside the braces.
                pairs.push(("__name__".into(), name));
                rest = r;
            }
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            }
        }
    } else if name_end == 0 {
        return Err(format!("bad series line {line:?}"));
    }
    Ok(SeriesLine { labels: Labels::from_pairs(pairs), values: parse_values(rest)? })
}

fn parse_expected_string(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (v, rest) = take_quoted(s)?;
    if !rest.trim().is_empty() {
        return Err(format!("trailing text after string {s:?}"));
    }
    Ok(v)
}

fn split_eval_header(header: &str) -> Option<(&str, &str)> {
    let (word, rest) = header.split_once(char::is_whitespace)?;
    Some((word, rest.trim_start()))
}

/// Parses `eval[_mod] instant at <t> <expr>` or `eval[_mod] range from .. to .. step .. <expr>`.
fn parse_eval_header(line: &str, lineno: usize) -> Result<EvalCmd, String> {
    let (word, rest) = split_eval_header(line).ok_or("bad eval line")?;
    let modifier = word.strip_prefix("eval").unwrap_or("").trim_start_matches('_');
    let mut cmd = EvalCmd {
        line: lineno,
        expr: String::new(),
        time: EvalTime::Instant(0),
        fail: modifier == "fail",
        fail_message: None,
        fail_regex: None,
        ordered: modifier == "ordered",
        scalar: None,
        series: Vec::new(),
        string: None,
        range_vector: None,
        warn: Expected { some: modifier == "warn", ..Expected::default() },
        info: Expected { some: modifier == "info", ..Expected::default() },
        ignored: false,
    };
    let mut words = rest.split_whitespace();
    match words.next() {
        Some("instant") => {
            let mut r = rest["instant".len()..].trim_start();
            if let Some(x) = r.strip_prefix("at") {
                r = x.trim_start();
                let (t, e) = r.split_once(char::is_whitespace).ok_or("missing expression")?;
                cmd.time = EvalTime::Instant(parse_duration(t)?);
                cmd.expr = e.trim().to_owned();
            } else {
                cmd.expr = r.trim().to_owned();
            }
        }
        Some("range") => {
            let r = rest["range".len()..].trim_start();
            let r = r.strip_prefix("from").ok_or("missing 'from'")?.trim_start();
            let (from, r) = r.split_once(" to ").ok_or("missing 'to'")?;
            let (to, r) = r.trim_start().split_once(" step ").ok_or("missing 'step'")?;
            let (step, e) = r.trim_start().split_once(char::is_whitespace).ok_or("missing expression")?;
            cmd.time = EvalTime::Range {
                start: parse_duration(from)?,
                end: parse_duration(to)?,
                step: parse_duration(step)?,
            };
            cmd.expr = e.trim().to_owned();
        }
        _ => return Err(format!("bad eval command {line:?}")),
    }
    Ok(cmd)
}

fn parse_expect(cmd: &mut EvalCmd, line: &str) -> Result<(), String> {
    let rest = line["expect".len()..].trim_start();
    if let Some(r) = rest.strip_prefix("range vector") {
        let r = r.trim_start().strip_prefix("from").ok_or("missing 'from'")?.trim_start();
        let (from, r) = r.split_once(" to ").ok_or("missing 'to'")?;
        let (to, step) = r.trim_start().split_once(" step ").ok_or("missing 'step'")?;
        let (start, end, step) = (parse_duration(from)?, parse_duration(to)?, parse_duration(step)?);
        cmd.range_vector = Some((start, end, step));
        cmd.time = EvalTime::Instant(end);
        return Ok(());
    }
    if let Some(r) = rest.strip_prefix("string") {
        cmd.string = Some(parse_expected_string(r)?);
        return Ok(());
    }
    let (kind, tail) = match rest.split_once(char::is_whitespace) {
        Some((k, t)) => (k, t.trim()),
        None => (rest, ""),
    };
    match kind {
        "ordered" => cmd.ordered = true,
        "fail" => {
            cmd.fail = true;
            if let Some(m) = tail.strip_prefix("msg:") {
                cmd.fail_message = Some(m.trim().to_owned());
            } else if let Some(r) = tail.strip_prefix("regex:") {
                cmd.fail_regex = Some(r.trim().to_owned());
            }
        }
        "warn" | "info" => {
            let expected = if kind == "warn" { &mut cmd.warn } else { &mut cmd.info };
            match Pattern::parse(tail)? {
                Some(p) => expected.matching.push(p),
                None => expected.some = true,
            }
        }
        "no_warn" => cmd.warn.none = true,
        "no_info" => cmd.info.none = true,
        other => return Err(format!("unknown expect kind {other:?}")),
    }
    Ok(())
}

/// Parses a whole script.
pub(crate) fn parse_script(input: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<String> = input
        .lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') { String::new() } else { l.to_owned() }
        })
        .collect();
    let mut cmds = Vec::new();
    let mut ignoring = false;
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let word = l.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        match word.as_str() {
            "clear" => cmds.push(Command::Clear),
            "ignore" => ignoring = true,
            "resume" => ignoring = false,
            w if w.starts_with("load") => {
                let step_str = l.split_whitespace().nth(1).ok_or("load without step")?;
                let step = parse_duration(step_str).map_err(|e| format!("line {}: {e}", i + 1))?;
                let mut series = Vec::new();
                while i + 1 < lines.len() && !lines[i + 1].is_empty() {
                    i += 1;
                    if lines[i].contains("@st") {
                        continue;
                    }
                    series.push(parse_series(&lines[i]).map_err(|e| format!("line {}: {e}", i + 1))?);
                }
                cmds.push(Command::Load { step, with_nhcb: w == "load_with_nhcb", series });
            }
            w if w.starts_with("eval") => {
                let mut cmd = parse_eval_header(l, i + 1).map_err(|e| format!("line {}: {e}", i + 1))?;
                cmd.ignored = ignoring;
                while i + 1 < lines.len() && !lines[i + 1].is_empty() {
                    i += 1;
                    let d = &lines[i];
                    if cmd.fail && d.starts_with("expected_fail_message") {
                        cmd.fail_message = Some(d["expected_fail_message".len()..].trim().to_owned());
                        break;
                    }
                    if cmd.fail && d.starts_with("expected_fail_regexp") {
                        cmd.fail_regex = Some(d["expected_fail_regexp".len()..].trim().to_owned());
                        break;
                    }
                    if d.split(' ').next() == Some("expect") {
                        parse_expect(&mut cmd, d).map_err(|e| format!("line {}: {e}", i + 1))?;
                        continue;
                    }
                    if let Some(v) = parse_number(d) {
                        cmd.scalar = Some(v);
                        break;
                    }
                    cmd.series.push(parse_series(d).map_err(|e| format!("line {}: {e}", i + 1))?);
                }
                cmds.push(Command::Eval(Box::new(cmd)));
            }
            other => return Err(format!("line {}: invalid command {other:?}", i + 1)),
        }
        i += 1;
    }
    Ok(cmds)
}

#[test]
fn promqltest_values_expand_like_prometheus() {
    let s = parse_series(r#"m{a="b"} 0+10x2 _x2 1-1x1 stale 3x1"#).expect("series");
    assert_eq!(s.labels.get("a"), "b");
    assert_eq!(s.values.len(), 3 + 2 + 2 + 1 + 2);
    assert_eq!(s.values[2], SeqValue::Float(20.0));
    assert_eq!(s.values[6], SeqValue::Float(0.0));
}

#[test]
fn promqltest_histogram_values_are_counted() {
    let s = parse_series("h {{count:0}}+{{count:1}}x4 1").expect("series");
    assert_eq!(s.values.len(), 6);
    assert_eq!(s.values[5], SeqValue::Float(1.0));
}
