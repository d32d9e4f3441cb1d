//! A log pipeline compiled once per query and run over each entry.

use std::borrow::Cow;

use regex::Regex;

use super::labels::{
    JSON_PARSER_ERR, LABEL_FILTER_ERR, LOGFMT_PARSER_ERR, LabelState, TEMPLATE_FORMAT_ERR,
    sanitize_label_name,
};
use super::pattern_match::Pattern;
use super::template::{Data, Template};
use super::values::{IpMatcher, compare, parse_float, parse_go_duration, parse_humanized_bytes};
use super::{EvalError, compile_anchored, compile_regex, json, logfmt};
use crate::query::{
    CmpOp, ExtractParam, LabelFilter, LabelFormat, LabelSelection, LineFilter, LineFilterOp, LineFilterValue,
    MatchOp, Matcher, Parser, Stage,
};

/// ANSI escape sequences (CSI and OSC), the pattern commonly used to strip terminal colours.
const ANSI_PATTERN: &str = "[\u{1b}\u{9b}][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u{7})|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))";

#[derive(Debug)]
pub(super) struct Pipeline {
    stages: Vec<CompiledStage>,
}

#[derive(Debug)]
enum CompiledStage {
    Line { negated: bool, matchers: Vec<LineMatcher> },
    Label(LabelPredicate),
    Json(Vec<(String, Vec<json::PathStep>)>),
    Logfmt { strict: bool, keep_empty: bool, params: Vec<(String, String)> },
    Regexp { regex: Regex, names: Vec<(usize, String)> },
    Pattern(Pattern),
    Unpack,
    LineFormat(Template),
    LabelFormat(Vec<FormatOp>),
    Drop(Vec<Selection>),
    Keep(Vec<Selection>),
    Decolorize(Regex),
}

#[derive(Debug)]
enum LineMatcher {
    /// `|= "text"`: a substring search (SIMD, the needle prepared once).
    Contains(Box<memchr::memmem::Finder<'static>>),
    Regex(Regex),
    Pattern(Pattern),
    Ip(IpMatcher),
}

impl LineMatcher {
    fn is_match(&self, line: &str) -> bool {
        match self {
            LineMatcher::Contains(finder) => finder.find(line.as_bytes()).is_some(),
            LineMatcher::Regex(re) => re.is_match(line),
            LineMatcher::Pattern(pattern) => pattern.is_match(line),
            LineMatcher::Ip(ip) => ip.matches_line(line),
        }
    }
}

#[derive(Debug)]
enum FormatOp {
    Rename { dst: String, src: String },
    Template { dst: String, template: Template },
}

/// A label name and, for `name="value"`, the matcher it must satisfy.
#[derive(Debug)]
struct Selection {
    name: String,
    matcher: Option<ValueMatcher>,
}

/// A compiled `=`, `!=`, `=~` or `!~` against a label value (missing is empty).
#[derive(Debug)]
pub(super) enum ValueMatcher {
    Eq(String),
    Neq(String),
    Re(Regex),
    Nre(Regex),
}

impl ValueMatcher {
    pub(super) fn new(matcher: &Matcher) -> Result<Self, EvalError> {
        Ok(match matcher.op {
            MatchOp::Eq => ValueMatcher::Eq(matcher.value.clone()),
            MatchOp::Neq => ValueMatcher::Neq(matcher.value.clone()),
            MatchOp::Re => ValueMatcher::Re(compile_anchored(&matcher.value)?),
            MatchOp::Nre => ValueMatcher::Nre(compile_anchored(&matcher.value)?),
        })
    }

    pub(super) fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Eq(want) => value == want,
            ValueMatcher::Neq(want) => value != want,
            ValueMatcher::Re(re) => re.is_match(value),
            ValueMatcher::Nre(re) => !re.is_match(value),
        }
    }
}

/// A compiled label filter.
#[derive(Debug)]
pub(super) enum LabelPredicate {
    And(Box<LabelPredicate>, Box<LabelPredicate>),
    Or(Box<LabelPredicate>, Box<LabelPredicate>),
    String { name: String, matcher: ValueMatcher },
    Number { name: String, op: CmpOp, value: f64 },
    Duration { name: String, op: CmpOp, nanos: i128 },
    Bytes { name: String, op: CmpOp, value: u64 },
    Ip { name: String, negated: bool, matcher: IpMatcher },
}

impl LabelPredicate {
    pub(super) fn new(filter: &LabelFilter) -> Result<Self, EvalError> {
        Ok(match filter {
            LabelFilter::And(a, b) => LabelPredicate::And(Box::new(Self::new(a)?), Box::new(Self::new(b)?)),
            LabelFilter::Or(a, b) => LabelPredicate::Or(Box::new(Self::new(a)?), Box::new(Self::new(b)?)),
            LabelFilter::String(m) => {
                LabelPredicate::String { name: m.name.clone(), matcher: ValueMatcher::new(m)? }
            }
            LabelFilter::Number { name, op, value } => {
                LabelPredicate::Number { name: name.clone(), op: *op, value: *value }
            }
            LabelFilter::Duration { name, op, value } => {
                LabelPredicate::Duration { name: name.clone(), op: *op, nanos: value.as_nanos() as i128 }
            }
            LabelFilter::Bytes { name, op, value } => {
                LabelPredicate::Bytes { name: name.clone(), op: *op, value: *value }
            }
            LabelFilter::Ip { name, negated, address } => LabelPredicate::Ip {
                name: name.clone(),
                negated: *negated,
                matcher: IpMatcher::new(address)?,
            },
        })
    }

    /// Whether the entry passes; a value that does not convert sets `LabelFilterErr` and
    /// passes.
    pub(super) fn eval(&self, state: &mut LabelState) -> bool {
        match self {
            LabelPredicate::And(a, b) => a.eval(state) && b.eval(state),
            LabelPredicate::Or(a, b) => a.eval(state) || b.eval(state),
            LabelPredicate::String { name, matcher } => matcher.matches(state.get(name).unwrap_or("")),
            LabelPredicate::Number { name, op, value } => {
                typed(state, name, |v| parse_float(v).map(|v| compare(*op, v, *value)))
            }
            LabelPredicate::Duration { name, op, nanos } => {
                typed(state, name, |v| parse_go_duration(v).map(|v| compare(*op, v, *nanos)))
            }
            LabelPredicate::Bytes { name, op, value } => {
                typed(state, name, |v| parse_humanized_bytes(v).map(|v| compare(*op, v, *value)))
            }
            LabelPredicate::Ip { name, negated, matcher } => {
                if state.has_error() {
                    return true;
                }
                match state.get(name) {
                    None => false,
                    Some(value) => matcher.matches_value(value) != *negated,
                }
            }
        }
    }
}

/// A typed comparison: entries with an error pass, entries without the label fail, a value
/// that does not convert sets the error and passes.
fn typed(state: &mut LabelState, name: &str, test: impl FnOnce(&str) -> Result<bool, String>) -> bool {
    if state.has_error() {
        return true;
    }
    let Some(value) = state.get(name) else { return false };
    match test(value) {
        Ok(pass) => pass,
        Err(details) => {
            state.set_error(LABEL_FILTER_ERR, details);
            true
        }
    }
}

impl Pipeline {
    pub(super) fn new(stages: &[Stage]) -> Result<Self, EvalError> {
        let mut compiled = Vec::with_capacity(stages.len());
        for stage in stages {
            compiled.push(match stage {
                Stage::LineFilter(filter) => compile_line_filter(filter)?,
                Stage::LabelFilter(filter) => CompiledStage::Label(LabelPredicate::new(filter)?),
                Stage::Parser(Parser::Json { params }) => {
                    let mut paths = Vec::with_capacity(params.len());
                    for ExtractParam { label, path } in params {
                        let path = path.as_deref().unwrap_or(label);
                        paths.push((label.clone(), json::parse_path(path)?));
                    }
                    CompiledStage::Json(paths)
                }
                Stage::Parser(Parser::Logfmt { strict, keep_empty, params }) => CompiledStage::Logfmt {
                    strict: *strict,
                    keep_empty: *keep_empty,
                    params: params
                        .iter()
                        .map(|p| (p.label.clone(), p.path.clone().unwrap_or_else(|| p.label.clone())))
                        .collect(),
                },
                Stage::Parser(Parser::Regexp(pattern)) => {
                    let regex = compile_regex(pattern)?;
                    let names = regex
                        .capture_names()
                        .enumerate()
                        .filter_map(|(i, name)| Some((i, sanitize_label_name(name?).into_owned())))
                        .collect();
                    CompiledStage::Regexp { regex, names }
                }
                Stage::Parser(Parser::Pattern(pattern)) => CompiledStage::Pattern(Pattern::new(pattern)),
                Stage::Parser(Parser::Unpack) => CompiledStage::Unpack,
                Stage::LineFormat(template) => CompiledStage::LineFormat(Template::new(template)?),
                Stage::LabelFormat(ops) => {
                    let mut out = Vec::with_capacity(ops.len());
                    for op in ops {
                        out.push(match op {
                            LabelFormat::Rename { dst, src } => {
                                FormatOp::Rename { dst: dst.clone(), src: src.clone() }
                            }
                            LabelFormat::Template { dst, template } => {
                                FormatOp::Template { dst: dst.clone(), template: Template::new(template)? }
                            }
                        });
                    }
                    CompiledStage::LabelFormat(out)
                }
                Stage::Drop(selections) => CompiledStage::Drop(compile_selections(selections)?),
                Stage::Keep(selections) => CompiledStage::Keep(compile_selections(selections)?),
                Stage::Decolorize => CompiledStage::Decolorize(compile_regex(ANSI_PATTERN)?),
            });
        }
        Ok(Self { stages: compiled })
    }

    /// Runs the pipeline over one entry whose labels `state` was reset to: the line after
    /// the pipeline, or `None` when a filter drops the entry. The line is borrowed until a
    /// stage rewrites it.
    pub(super) fn process<'a>(
        &self,
        timestamp: i64,
        line: &'a str,
        state: &mut LabelState,
    ) -> Option<Cow<'a, str>> {
        let mut line = Cow::Borrowed(line);
        for stage in &self.stages {
            match stage {
                CompiledStage::Line { negated, matchers } => {
                    if matchers.iter().any(|m| m.is_match(&line)) == *negated {
                        return None;
                    }
                }
                CompiledStage::Label(predicate) => {
                    if !predicate.eval(state) {
                        return None;
                    }
                }
                CompiledStage::Json(paths) if paths.is_empty() => {
                    if let Err(e) = json::parse_all(&line, state) {
                        state.set_error(JSON_PARSER_ERR, e.0);
                    }
                }
                CompiledStage::Json(paths) => {
                    for (label, path) in paths {
                        match json::extract_path(&line, path) {
                            Ok(Some(value)) => state.add_parsed(&sanitize_label_name(label), &value),
                            Ok(None) => {}
                            Err(e) => {
                                state.set_error(JSON_PARSER_ERR, e.0);
                                break;
                            }
                        }
                    }
                }
                CompiledStage::Logfmt { strict, keep_empty, params } => {
                    let mark = state.mark();
                    let keep_empty = *keep_empty || !params.is_empty();
                    let result = logfmt::parse(&line, *strict, keep_empty, |key, value| {
                        if params.is_empty() {
                            state.add_parsed(&sanitize_label_name(key), &value);
                        } else {
                            for (label, wanted) in params {
                                if wanted == key {
                                    state.add_parsed(&sanitize_label_name(label), &value);
                                }
                            }
                        }
                    });
                    if let Err(details) = result {
                        state.rollback(mark);
                        state.set_error(LOGFMT_PARSER_ERR, details);
                    }
                }
                CompiledStage::Regexp { regex, names } => {
                    if let Some(caps) = regex.captures(&line) {
                        for (i, name) in names {
                            if let Some(m) = caps.get(*i) {
                                state.add_parsed(name, m.as_str());
                            }
                        }
                    }
                }
                // Capture names are valid label names (the parser checks them).
                CompiledStage::Pattern(pattern) => {
                    pattern.captures(&line, |name, value| state.add_parsed(name, value))
                }
                CompiledStage::Unpack => match json::unpack(&line, state) {
                    Ok(Some(entry)) => line = Cow::Owned(entry),
                    Ok(None) => {}
                    Err(e) => state.set_error(JSON_PARSER_ERR, e.0),
                },
                CompiledStage::LineFormat(template) => {
                    let rendered = template.render(&Data { labels: state, line: &line, timestamp });
                    match rendered {
                        Ok(text) => line = Cow::Owned(text),
                        Err(details) => state.set_error(TEMPLATE_FORMAT_ERR, details),
                    }
                }
                CompiledStage::LabelFormat(ops) => label_format(ops, timestamp, &line, state),
                CompiledStage::Drop(selections) => {
                    for selection in selections {
                        let matches = match (&selection.matcher, state.get(&selection.name)) {
                            (_, None) => false,
                            (None, Some(_)) => true,
                            (Some(m), Some(value)) => m.matches(value),
                        };
                        if matches {
                            state.remove(&selection.name);
                        }
                    }
                }
                CompiledStage::Keep(selections) => state.retain(|name, value| {
                    selections
                        .iter()
                        .any(|s| s.name == name && s.matcher.as_ref().is_none_or(|m| m.matches(value)))
                }),
                CompiledStage::Decolorize(re) => {
                    if let Cow::Owned(text) = re.replace_all(&line, "") {
                        line = Cow::Owned(text);
                    }
                }
            }
        }
        Some(line)
    }
}

/// `label_format`: every template and rename reads the labels as they were before the stage.
fn label_format(ops: &[FormatOp], timestamp: i64, line: &str, state: &mut LabelState) {
    let mut results: Vec<(&str, Option<String>, Option<&str>)> = Vec::with_capacity(ops.len());
    let mut error: Option<String> = None;
    for op in ops {
        match op {
            FormatOp::Rename { dst, src } => {
                if let Some(value) = state.get(src) {
                    results.push((dst, Some(value.to_owned()), Some(src)));
                }
            }
            FormatOp::Template { dst, template } => {
                match template.render(&Data { labels: state, line, timestamp }) {
                    Ok(value) => results.push((dst, Some(value), None)),
                    Err(details) => error = Some(details),
                }
            }
        }
    }
    for (dst, value, src) in results {
        if let Some(src) = src
            && src != dst
        {
            state.remove(src);
        }
        if let Some(value) = value {
            state.set(dst, &value);
        }
    }
    if let Some(details) = error {
        state.set_error(TEMPLATE_FORMAT_ERR, details);
    }
}

/// The line filters of a pipeline that see the line as stored (every one before the first
/// `line_format` or `decolorize`: parsers and label stages leave the line alone, and every
/// stage can only drop an entry), for the source to apply before it builds entries.
#[derive(Debug)]
pub(super) struct LinePrefilter(Vec<CompiledStage>);

impl LinePrefilter {
    pub(super) fn new(stages: &[Stage]) -> Result<Option<Self>, EvalError> {
        let mut filters = Vec::new();
        for stage in stages {
            match stage {
                Stage::LineFilter(filter) => filters.push(compile_line_filter(filter)?),
                Stage::LineFormat(_) | Stage::Decolorize => break,
                _ => {}
            }
        }
        Ok((!filters.is_empty()).then_some(Self(filters)))
    }
}

impl crate::model::LineTest for LinePrefilter {
    fn keep(&self, line: &str) -> bool {
        self.0.iter().all(|stage| match stage {
            CompiledStage::Line { negated, matchers } => {
                matchers.iter().any(|m| m.is_match(line)) != *negated
            }
            _ => true,
        })
    }
}

fn compile_line_filter(filter: &LineFilter) -> Result<CompiledStage, EvalError> {
    let mut matchers = Vec::with_capacity(filter.values.len());
    for value in &filter.values {
        matchers.push(match (filter.op, value) {
            (_, LineFilterValue::Ip(address)) => LineMatcher::Ip(IpMatcher::new(address)?),
            (LineFilterOp::Contains | LineFilterOp::NotContains, LineFilterValue::Text(text)) => {
                LineMatcher::Contains(Box::new(memchr::memmem::Finder::new(text.as_bytes()).into_owned()))
            }
            (LineFilterOp::Regex | LineFilterOp::NotRegex, LineFilterValue::Text(text)) => {
                LineMatcher::Regex(compile_regex(text)?)
            }
            (LineFilterOp::Pattern | LineFilterOp::NotPattern, LineFilterValue::Text(text)) => {
                LineMatcher::Pattern(Pattern::new(text))
            }
        });
    }
    Ok(CompiledStage::Line { negated: filter.op.is_negative(), matchers })
}

fn compile_selections(selections: &[LabelSelection]) -> Result<Vec<Selection>, EvalError> {
    selections
        .iter()
        .map(|s| {
            Ok(match s {
                LabelSelection::Name(name) => Selection { name: name.clone(), matcher: None },
                LabelSelection::Matcher(m) => {
                    Selection { name: m.name.clone(), matcher: Some(ValueMatcher::new(m)?) }
                }
            })
        })
        .collect()
}
