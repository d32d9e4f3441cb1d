//! From syntax tree to something that runs: paths are resolved against the statement group's
//! context (`span`, `log`, `datapoint`, ...), functions and their arguments are checked, regular
//! expressions and glob patterns are compiled. Everything that can be wrong with a statement is
//! found here, at build time, with the column it was found at.

use regex::Regex;

use super::eval::Val;
use super::parser::{Arg, BoolExpr, Call, CmpOp, Expr, ExprKind, Key, Literal, PathExpr, StatementError};
use crate::processor::compile_regex;

/// The kinds of thing a path can live on, from the outside in. Within one signal, later
/// variants are nested inside earlier ones (`Resource` > `Scope` > `Span` > `SpanEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    Resource,
    Scope,
    Span,
    SpanEvent,
    Log,
    Metric,
    DataPoint,
}

impl Level {
    pub(super) fn name(self) -> &'static str {
        match self {
            Level::Resource => "resource",
            Level::Scope => "scope",
            Level::Span => "span",
            Level::SpanEvent => "spanevent",
            Level::Log => "log",
            Level::Metric => "metric",
            Level::DataPoint => "datapoint",
        }
    }

    /// The level a path prefix names (`resource.attributes` → `Resource`).
    fn from_prefix(name: &str) -> Option<Level> {
        Some(match name {
            "resource" => Level::Resource,
            "scope" | "instrumentation_scope" => Level::Scope,
            "span" => Level::Span,
            "spanevent" => Level::SpanEvent,
            "log" => Level::Log,
            "metric" => Level::Metric,
            "datapoint" => Level::DataPoint,
            _ => return None,
        })
    }

    /// Whether statements running on items of this context can reach `level`.
    fn reaches(self, level: Level) -> bool {
        let chain: &[Level] = match self {
            Level::Resource => &[Level::Resource],
            Level::Scope => &[Level::Resource, Level::Scope],
            Level::Span => &[Level::Resource, Level::Scope, Level::Span],
            Level::SpanEvent => &[Level::Resource, Level::Scope, Level::Span, Level::SpanEvent],
            Level::Log => &[Level::Resource, Level::Scope, Level::Log],
            Level::Metric => &[Level::Resource, Level::Scope, Level::Metric],
            Level::DataPoint => &[Level::Resource, Level::Scope, Level::Metric, Level::DataPoint],
        };
        chain.contains(&level)
    }
}

/// A field of a level; which fields exist on which level is decided by [`resolve_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Attributes,
    DroppedAttributesCount,
    Name,
    Version,
    Kind,
    StatusCode,
    StatusMessage,
    TraceState,
    TraceId,
    TraceIdString,
    SpanId,
    SpanIdString,
    ParentSpanId,
    ParentSpanIdString,
    StartTime,
    EndTime,
    Duration,
    Time,
    ObservedTime,
    Body,
    SeverityNumber,
    SeverityText,
    Flags,
    EventName,
    Description,
    Unit,
    Type,
    AggregationTemporality,
    IsMonotonic,
    Metadata,
    ValueInt,
    ValueDouble,
    Count,
    Sum,
}

impl Field {
    /// Holds a map or any value, so it can be indexed with `["key"]`.
    fn indexable(self) -> bool {
        matches!(self, Field::Attributes | Field::Metadata | Field::Body)
    }

    fn writable(self) -> bool {
        !matches!(
            self,
            Field::Duration
                | Field::Type
                | Field::AggregationTemporality
                | Field::IsMonotonic
                | Field::Count
                | Field::Sum
                | Field::DroppedAttributesCount
                | Field::Flags
        )
    }
}

fn resolve_field(level: Level, names: &[&str]) -> Option<Field> {
    use Field as F;
    use Level as L;
    Some(match (level, names) {
        (_, ["attributes"]) if level != L::Metric => F::Attributes,
        (L::Resource | L::Scope | L::Span | L::SpanEvent | L::Log, ["dropped_attributes_count"]) => {
            F::DroppedAttributesCount
        }
        (L::Scope | L::Span | L::SpanEvent | L::Metric, ["name"]) => F::Name,
        (L::Scope, ["version"]) => F::Version,
        (L::Span, ["kind"]) => F::Kind,
        (L::Span, ["status", "code"]) => F::StatusCode,
        (L::Span, ["status", "message"]) => F::StatusMessage,
        (L::Span, ["trace_state"]) => F::TraceState,
        (L::Span | L::Log, ["trace_id"]) => F::TraceId,
        (L::Span | L::Log, ["trace_id", "string"]) => F::TraceIdString,
        (L::Span | L::Log, ["span_id"]) => F::SpanId,
        (L::Span | L::Log, ["span_id", "string"]) => F::SpanIdString,
        (L::Span, ["parent_span_id"]) => F::ParentSpanId,
        (L::Span, ["parent_span_id", "string"]) => F::ParentSpanIdString,
        (L::Span | L::DataPoint, ["start_time_unix_nano"]) => F::StartTime,
        (L::Span, ["end_time_unix_nano"]) => F::EndTime,
        (L::Span, ["duration"]) => F::Duration,
        (L::SpanEvent | L::Log | L::DataPoint, ["time_unix_nano"]) => F::Time,
        (L::Log, ["observed_time_unix_nano"]) => F::ObservedTime,
        (L::Log, ["body"]) => F::Body,
        (L::Log, ["severity_number"]) => F::SeverityNumber,
        (L::Log, ["severity_text"]) => F::SeverityText,
        (L::Log | L::DataPoint, ["flags"]) => F::Flags,
        (L::Log, ["event_name"]) => F::EventName,
        (L::Metric, ["description"]) => F::Description,
        (L::Metric, ["unit"]) => F::Unit,
        (L::Metric, ["type"]) => F::Type,
        (L::Metric, ["aggregation_temporality"]) => F::AggregationTemporality,
        (L::Metric, ["is_monotonic"]) => F::IsMonotonic,
        (L::Metric, ["metadata"]) => F::Metadata,
        (L::DataPoint, ["value_int"]) => F::ValueInt,
        (L::DataPoint, ["value_double"]) => F::ValueDouble,
        (L::DataPoint, ["count"]) => F::Count,
        (L::DataPoint, ["sum"]) => F::Sum,
        _ => return None,
    })
}

/// A resolved path: a field of a level, then keys into the value it holds.
#[derive(Debug, Clone)]
pub(super) struct Path {
    pub(super) level: Level,
    pub(super) field: Field,
    pub(super) keys: Vec<Key>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Const(Val),
    Path(Path),
    List(Vec<Value>),
    Concat(Vec<Value>, String),
    IsMatch(Box<Value>, Regex),
    Int(Box<Value>),
    Double(Box<Value>),
    String(Box<Value>),
    ToLowerCase(Box<Value>),
    ToUpperCase(Box<Value>),
    Sha256(Box<Value>),
}

#[derive(Debug, Clone)]
pub(super) enum Cond {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    Compare(Value, CmpOp, Value),
    Value(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatternMode {
    Key,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MergeStrategy {
    Insert,
    Update,
    Upsert,
}

#[derive(Debug, Clone)]
pub(super) enum Editor {
    Set(Path, Value),
    DeleteKey(Path, String),
    DeleteMatchingKeys(Path, Regex),
    KeepKeys(Path, Vec<String>),
    KeepMatchingKeys(Path, Regex),
    TruncateAll(Path, usize),
    Limit(Path, usize, Vec<String>),
    ReplacePattern(Path, Regex, Value),
    ReplaceAllPatterns(Path, PatternMode, Regex, Value),
    /// The regex is the glob pattern, translated.
    ReplaceMatch(Path, Regex, Value),
    ReplaceAllMatches(Path, Regex, Value),
    MergeMaps(Path, Value, MergeStrategy),
}

#[derive(Debug, Clone)]
pub(super) struct Statement {
    pub(super) editor: Editor,
    pub(super) condition: Option<Cond>,
}

/// The editors, with their parameters, as listed in the documentation.
const EDITORS: &[(&str, &[&str])] = &[
    ("set", &["target", "value"]),
    ("delete_key", &["target", "key"]),
    ("delete_matching_keys", &["target", "pattern"]),
    ("keep_keys", &["target", "keys"]),
    ("keep_matching_keys", &["target", "pattern"]),
    ("truncate_all", &["target", "limit"]),
    ("limit", &["target", "limit", "priority_keys"]),
    ("replace_pattern", &["target", "regex", "replacement"]),
    ("replace_all_patterns", &["target", "mode", "regex", "replacement"]),
    ("replace_match", &["target", "pattern", "replacement"]),
    ("replace_all_matches", &["target", "pattern", "replacement"]),
    ("merge_maps", &["target", "source", "strategy"]),
];

const CONVERTERS: &[(&str, &[&str])] = &[
    ("Concat", &["values", "delimiter"]),
    ("IsMatch", &["target", "pattern"]),
    ("Int", &["value"]),
    ("Double", &["value"]),
    ("String", &["value"]),
    ("ToLowerCase", &["target"]),
    ("ToUpperCase", &["target"]),
    ("SHA256", &["value"]),
];

/// The enum constants OTTL knows, as integers.
fn enum_value(name: &str) -> Option<i64> {
    const SEVERITIES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    Some(match name {
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "SEVERITY_NUMBER_UNSPECIFIED" => 0,
        "METRIC_DATA_TYPE_NONE" => 0,
        "METRIC_DATA_TYPE_GAUGE" => 1,
        "METRIC_DATA_TYPE_SUM" => 2,
        "METRIC_DATA_TYPE_HISTOGRAM" => 3,
        "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM" => 4,
        "METRIC_DATA_TYPE_SUMMARY" => 5,
        "AGGREGATION_TEMPORALITY_UNSPECIFIED" => 0,
        "AGGREGATION_TEMPORALITY_DELTA" => 1,
        "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
        _ => {
            // SEVERITY_NUMBER_INFO = 9, SEVERITY_NUMBER_INFO2 = 10, ... SEVERITY_NUMBER_FATAL4 = 24.
            let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
            let (level, step) = match rest.char_indices().find(|(_, c)| c.is_ascii_digit()) {
                Some((i, _)) => (&rest[..i], rest[i..].parse::<i64>().ok().filter(|n| (2..=4).contains(n))?),
                None => (rest, 1),
            };
            let index = SEVERITIES.iter().position(|s| *s == level)? as i64;
            index * 4 + step
        }
    })
}

/// Compiles statements and conditions for one context.
pub(super) struct Compiler {
    pub(super) context: Level,
}

/// The level a path names by its prefix, or `None` when it has no context prefix.
pub(super) fn prefix_level(path: &PathExpr) -> Option<Level> {
    path.names.first().and_then(|n| Level::from_prefix(n))
}

/// Every path in a statement or condition, with its column (for context inference).
pub(super) fn statement_paths<'a>(
    statement: &'a super::parser::Statement,
    out: &mut Vec<(usize, &'a PathExpr)>,
) {
    call_paths(&statement.editor, out);
    if let Some(c) = &statement.condition {
        condition_paths(c, out);
    }
}

pub(super) fn condition_paths<'a>(c: &'a BoolExpr, out: &mut Vec<(usize, &'a PathExpr)>) {
    match c {
        BoolExpr::Or(terms) | BoolExpr::And(terms) => terms.iter().for_each(|t| condition_paths(t, out)),
        BoolExpr::Not(inner) => condition_paths(inner, out),
        BoolExpr::Compare(a, _, b) => {
            expr_paths(a, out);
            expr_paths(b, out);
        }
        BoolExpr::Value(v) => expr_paths(v, out),
    }
}

fn call_paths<'a>(call: &'a Call, out: &mut Vec<(usize, &'a PathExpr)>) {
    call.args.iter().for_each(|a| expr_paths(&a.value, out));
}

fn expr_paths<'a>(e: &'a Expr, out: &mut Vec<(usize, &'a PathExpr)>) {
    match &e.kind {
        ExprKind::Path(p) => out.push((e.column, p)),
        ExprKind::Converter(call) => call_paths(call, out),
        ExprKind::List(items) => items.iter().for_each(|i| expr_paths(i, out)),
        ExprKind::Literal(_) | ExprKind::Enum(_) => {}
    }
}

fn err(column: usize, message: impl Into<String>) -> StatementError {
    StatementError::new(column, message)
}

/// Arguments matched to a function's parameters by position, then by name.
fn bind<'a>(call: &'a Call, params: &[&str]) -> Result<Vec<&'a Expr>, StatementError> {
    let signature = || format!("`{}({})`", call.name, params.join(", "));
    let mut bound: Vec<Option<&Expr>> = vec![None; params.len()];
    let mut named = false;
    for (i, Arg { name, value }) in call.args.iter().enumerate() {
        let slot = match name {
            None if named => {
                return Err(err(value.column, "positional arguments must come before named ones"));
            }
            None if i >= params.len() => {
                return Err(err(
                    value.column,
                    format!("too many arguments: {} takes {}", signature(), params.len()),
                ));
            }
            None => i,
            Some(name) => {
                named = true;
                params.iter().position(|p| p == name).ok_or_else(|| {
                    err(value.column, format!("{} has no parameter named `{name}`", signature()))
                })?
            }
        };
        if bound[slot].is_some() {
            return Err(err(value.column, format!("parameter `{}` is given twice", params[slot])));
        }
        bound[slot] = Some(value);
    }
    bound
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.ok_or_else(|| err(call.column, format!("missing argument `{}` of {}", params[i], signature())))
        })
        .collect()
}

fn string_literal<'a>(e: &'a Expr, what: &str) -> Result<&'a str, StatementError> {
    match &e.kind {
        ExprKind::Literal(Literal::Str(s)) => Ok(s),
        _ => Err(err(e.column, format!("expected {what} as a string literal"))),
    }
}

fn count_literal(e: &Expr, what: &str) -> Result<usize, StatementError> {
    match &e.kind {
        ExprKind::Literal(Literal::Int(n)) if *n >= 0 => {
            usize::try_from(*n).map_err(|_| err(e.column, format!("{what} is too large")))
        }
        ExprKind::Literal(Literal::Int(n)) => {
            Err(err(e.column, format!("{what} must be 0 or more, found {n}")))
        }
        _ => Err(err(e.column, format!("expected {what} as an integer literal"))),
    }
}

fn string_list(e: &Expr, what: &str) -> Result<Vec<String>, StatementError> {
    match &e.kind {
        ExprKind::List(items) => items.iter().map(|i| string_literal(i, what).map(str::to_string)).collect(),
        _ => Err(err(e.column, format!("expected {what} as a list of strings such as [\"a\", \"b\"]"))),
    }
}

fn regex(e: &Expr, what: &str) -> Result<Regex, StatementError> {
    let pattern = string_literal(e, what)?;
    compile_regex("", pattern).map_err(|c| err(e.column, c.message))
}

fn glob(e: &Expr) -> Result<Regex, StatementError> {
    let pattern = string_literal(e, "the glob pattern")?;
    let translated = glob_to_regex(pattern).map_err(|m| err(e.column, m))?;
    compile_regex("", &translated).map_err(|c| err(e.column, c.message))
}

/// Translates a glob (`*`, `?`, `[a-z]`, `[!x]`, `{a,b}`, `\` escapes) into an anchored regex.
/// `*` matches any run of characters, `/` included.
pub(super) fn glob_to_regex(glob: &str) -> Result<String, String> {
    let mut out = String::from("(?s)^");
    let mut chars = glob.chars().peekable();
    let mut braces = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '\\' => match chars.next() {
                Some(next) => out.push_str(&regex::escape(&next.to_string())),
                None => return Err(format!("glob pattern {glob:?} ends with a lone `\\`")),
            },
            '[' => {
                out.push('[');
                if matches!(chars.peek(), Some('!') | Some('^')) {
                    chars.next();
                    out.push('^');
                }
                let mut members = 0usize;
                loop {
                    match chars.next() {
                        Some(']') if members > 0 => break,
                        Some('-') if members > 0 && chars.peek() != Some(&']') => out.push('-'),
                        Some('\\') => match chars.next() {
                            Some(next) => out.push_str(&regex::escape(&next.to_string())),
                            None => return Err(format!("glob pattern {glob:?} has an unclosed `[`")),
                        },
                        Some(m) => out.push_str(&regex::escape(&m.to_string())),
                        None => return Err(format!("glob pattern {glob:?} has an unclosed `[`")),
                    }
                    members += 1;
                }
                out.push(']');
            }
            '{' => {
                braces += 1;
                out.push_str("(?:");
            }
            ',' if braces > 0 => out.push('|'),
            '}' if braces > 0 => {
                braces -= 1;
                out.push(')');
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    if braces > 0 {
        return Err(format!("glob pattern {glob:?} has an unclosed `{{`"));
    }
    out.push('$');
    Ok(out)
}

/// What an editor needs its target to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A field it can set.
    Settable,
    /// A map: `attributes`, `metadata`, or a key holding a map (`body`, `attributes["http"]`).
    Map,
}

impl Compiler {
    pub(super) fn statement(&self, s: &super::parser::Statement) -> Result<Statement, StatementError> {
        let editor = self.editor(&s.editor)?;
        let condition = s.condition.as_ref().map(|c| self.condition(c)).transpose()?;
        Ok(Statement { editor, condition })
    }

    pub(super) fn condition(&self, c: &BoolExpr) -> Result<Cond, StatementError> {
        Ok(match c {
            BoolExpr::Or(terms) => {
                Cond::Or(terms.iter().map(|t| self.condition(t)).collect::<Result<_, _>>()?)
            }
            BoolExpr::And(terms) => {
                Cond::And(terms.iter().map(|t| self.condition(t)).collect::<Result<_, _>>()?)
            }
            BoolExpr::Not(inner) => Cond::Not(Box::new(self.condition(inner)?)),
            BoolExpr::Compare(a, op, b) => Cond::Compare(self.value(a)?, *op, self.value(b)?),
            BoolExpr::Value(e) => {
                let boolean = match &e.kind {
                    ExprKind::Literal(Literal::Bool(_)) => true,
                    ExprKind::Converter(call) => call.name == "IsMatch",
                    _ => false,
                };
                if !boolean {
                    return Err(err(
                        e.column,
                        "expected a condition: a comparison such as `==`, `true`/`false` or IsMatch(...)",
                    ));
                }
                Cond::Value(self.value(e)?)
            }
        })
    }

    fn editor(&self, call: &Call) -> Result<Editor, StatementError> {
        let Some((_, params)) = EDITORS.iter().find(|(name, _)| *name == call.name) else {
            let known: Vec<&str> = EDITORS.iter().map(|(n, _)| *n).collect();
            return Err(err(
                call.column,
                format!("unknown editor `{}` (supported: {})", call.name, known.join(", ")),
            ));
        };
        let a = bind(call, params)?;
        Ok(match call.name.as_str() {
            "set" => Editor::Set(self.target(a[0], Target::Settable)?, self.value(a[1])?),
            "delete_key" => Editor::DeleteKey(
                self.target(a[0], Target::Map)?,
                string_literal(a[1], "the key")?.to_string(),
            ),
            "delete_matching_keys" => {
                Editor::DeleteMatchingKeys(self.target(a[0], Target::Map)?, regex(a[1], "the pattern")?)
            }
            "keep_keys" => Editor::KeepKeys(self.target(a[0], Target::Map)?, string_list(a[1], "the keys")?),
            "keep_matching_keys" => {
                Editor::KeepMatchingKeys(self.target(a[0], Target::Map)?, regex(a[1], "the pattern")?)
            }
            "truncate_all" => {
                Editor::TruncateAll(self.target(a[0], Target::Map)?, count_literal(a[1], "the limit")?)
            }
            "limit" => {
                let limit = count_literal(a[1], "the limit")?;
                let keys = string_list(a[2], "the priority keys")?;
                if keys.len() > limit {
                    return Err(err(
                        a[2].column,
                        format!("{} priority keys are more than the limit of {limit}", keys.len()),
                    ));
                }
                Editor::Limit(self.target(a[0], Target::Map)?, limit, keys)
            }
            "replace_pattern" => Editor::ReplacePattern(
                self.target(a[0], Target::Settable)?,
                regex(a[1], "the regex")?,
                self.value(a[2])?,
            ),
            "replace_all_patterns" => {
                let mode = match string_literal(a[1], "the mode")? {
                    "key" => PatternMode::Key,
                    "value" => PatternMode::Value,
                    other => {
                        return Err(err(
                            a[1].column,
                            format!("mode must be \"key\" or \"value\", found {other:?}"),
                        ));
                    }
                };
                Editor::ReplaceAllPatterns(
                    self.target(a[0], Target::Map)?,
                    mode,
                    regex(a[2], "the regex")?,
                    self.value(a[3])?,
                )
            }
            "replace_match" => {
                Editor::ReplaceMatch(self.target(a[0], Target::Settable)?, glob(a[1])?, self.value(a[2])?)
            }
            "replace_all_matches" => {
                Editor::ReplaceAllMatches(self.target(a[0], Target::Map)?, glob(a[1])?, self.value(a[2])?)
            }
            "merge_maps" => {
                let strategy = match string_literal(a[2], "the strategy")? {
                    "insert" => MergeStrategy::Insert,
                    "update" => MergeStrategy::Update,
                    "upsert" => MergeStrategy::Upsert,
                    other => {
                        return Err(err(
                            a[2].column,
                            format!("strategy must be \"insert\", \"update\" or \"upsert\", found {other:?}"),
                        ));
                    }
                };
                Editor::MergeMaps(self.target(a[0], Target::Map)?, self.value(a[1])?, strategy)
            }
            _ => return Err(err(call.column, format!("unknown editor `{}`", call.name))),
        })
    }

    fn target(&self, e: &Expr, need: Target) -> Result<Path, StatementError> {
        let ExprKind::Path(p) = &e.kind else {
            return Err(err(e.column, "expected a path to change, such as attributes[\"key\"]"));
        };
        let path = self.path(e.column, p)?;
        match need {
            Target::Settable if !path.field.writable() => Err(err(e.column, format!("`{p}` is read-only"))),
            Target::Map if !path.field.indexable() => Err(err(
                e.column,
                format!("`{p}` is not a map (expected attributes, metadata, body or a key of one)"),
            )),
            _ => Ok(path),
        }
    }

    fn path(&self, column: usize, p: &PathExpr) -> Result<Path, StatementError> {
        let names: Vec<&str> = p.names.iter().map(String::as_str).collect();
        let (level, rest) = match prefix_level(p) {
            Some(level) if names.len() > 1 => (level, &names[1..]),
            _ => (self.context, &names[..]),
        };
        if !self.context.reaches(level) {
            return Err(err(
                column,
                format!("`{p}` is not available in the {} context", self.context.name()),
            ));
        }
        let field = resolve_field(level, rest)
            .ok_or_else(|| err(column, format!("unknown path `{}` for the {} level", p, level.name())))?;
        if !p.keys.is_empty() && !field.indexable() {
            return Err(err(column, format!("`{}` cannot be indexed with []", names.join("."))));
        }
        if matches!(field, Field::Attributes | Field::Metadata)
            && matches!(p.keys.first(), Some(Key::Index(_)))
        {
            return Err(err(column, format!("`{p}`: a map is indexed with a string key")));
        }
        Ok(Path { level, field, keys: p.keys.clone() })
    }

    fn value(&self, e: &Expr) -> Result<Value, StatementError> {
        Ok(match &e.kind {
            ExprKind::Literal(l) => Value::Const(match l {
                Literal::Nil => Val::Nil,
                Literal::Bool(b) => Val::Bool(*b),
                Literal::Int(i) => Val::Int(*i),
                Literal::Float(x) => Val::Double(*x),
                Literal::Str(s) => Val::Str(s.clone()),
                Literal::Bytes(b) => Val::Bytes(b.clone()),
            }),
            ExprKind::Enum(name) => Value::Const(Val::Int(
                enum_value(name).ok_or_else(|| err(e.column, format!("unknown constant `{name}`")))?,
            )),
            ExprKind::Path(p) => Value::Path(self.path(e.column, p)?),
            ExprKind::List(items) => {
                Value::List(items.iter().map(|i| self.value(i)).collect::<Result<_, _>>()?)
            }
            ExprKind::Converter(call) => self.converter(call)?,
        })
    }

    fn converter(&self, call: &Call) -> Result<Value, StatementError> {
        let Some((_, params)) = CONVERTERS.iter().find(|(name, _)| *name == call.name) else {
            let known: Vec<&str> = CONVERTERS.iter().map(|(n, _)| *n).collect();
            return Err(err(
                call.column,
                format!("unknown converter `{}` (supported: {})", call.name, known.join(", ")),
            ));
        };
        let a = bind(call, params)?;
        let boxed = |e: &Expr| self.value(e).map(Box::new);
        Ok(match call.name.as_str() {
            "Concat" => {
                let ExprKind::List(items) = &a[0].kind else {
                    return Err(err(
                        a[0].column,
                        "expected the values to concatenate as a list such as [a, b]",
                    ));
                };
                let values = items.iter().map(|i| self.value(i)).collect::<Result<_, _>>()?;
                Value::Concat(values, string_literal(a[1], "the delimiter")?.to_string())
            }
            "IsMatch" => Value::IsMatch(boxed(a[0])?, regex(a[1], "the pattern")?),
            "Int" => Value::Int(boxed(a[0])?),
            "Double" => Value::Double(boxed(a[0])?),
            "String" => Value::String(boxed(a[0])?),
            "ToLowerCase" => Value::ToLowerCase(boxed(a[0])?),
            "ToUpperCase" => Value::ToUpperCase(boxed(a[0])?),
            "SHA256" => Value::Sha256(boxed(a[0])?),
            _ => return Err(err(call.column, format!("unknown converter `{}`", call.name))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::parser::{parse_condition, parse_statement};
    use super::*;

    fn compile(context: Level, text: &str) -> Result<Statement, StatementError> {
        let parsed = match parse_statement(text) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{text:?} does not parse: {e}"),
        };
        Compiler { context }.statement(&parsed)
    }

    fn compile_err(context: Level, text: &str) -> StatementError {
        match compile(context, text) {
            Ok(s) => panic!("{text:?} compiled to {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn compile_paths_resolve_prefixes_against_the_context() {
        let s = compile(
            Level::Span,
            r#"set(attributes["env"], resource.attributes["deployment.environment"]) where instrumentation_scope.name == "io.grpc""#,
        )
        .unwrap();
        let Editor::Set(target, Value::Path(source)) = &s.editor else { panic!("not a set: {s:?}") };
        assert_eq!((target.level, target.field), (Level::Span, Field::Attributes));
        assert_eq!((source.level, source.field), (Level::Resource, Field::Attributes));
        let Some(Cond::Compare(Value::Path(scope), _, _)) = &s.condition else { panic!("no condition") };
        assert_eq!((scope.level, scope.field), (Level::Scope, Field::Name));
    }

    #[test]
    fn compile_datapoint_context_reaches_metric_fields() {
        let s = compile(
            Level::DataPoint,
            r#"set(attributes["m"], metric.name) where metric.type == METRIC_DATA_TYPE_SUM"#,
        )
        .unwrap();
        let Editor::Set(_, Value::Path(source)) = &s.editor else { panic!("not a set") };
        assert_eq!((source.level, source.field), (Level::Metric, Field::Name));
        let Some(Cond::Compare(_, _, Value::Const(Val::Int(2)))) = &s.condition else { panic!("enum not 2") };
    }

    #[test]
    fn compile_unknown_editor_names_the_supported_ones() {
        let e = compile_err(Level::Span, r#"sett(name, "x")"#);
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown editor `sett`") && e.message.contains("replace_pattern"));
    }

    #[test]
    fn compile_unknown_converter_is_an_error_at_its_column() {
        let e = compile_err(Level::Span, r#"set(name, MD5(name))"#);
        assert_eq!(e.column, 11);
        assert!(e.message.contains("unknown converter `MD5`") && e.message.contains("SHA256"));
    }

    #[test]
    fn compile_wrong_argument_count_shows_the_signature() {
        let e = compile_err(Level::Span, r#"set(name)"#);
        assert_eq!(e.column, 1);
        assert!(e.message.contains("missing argument `value` of `set(target, value)`"), "{}", e.message);
        let e = compile_err(Level::Span, r#"delete_key(attributes, "a", "b")"#);
        assert_eq!(e.column, 29);
        assert!(e.message.contains("too many arguments"));
    }

    #[test]
    fn compile_named_arguments_bind_by_parameter_name() {
        let s = compile(Level::Log, r#"limit(attributes, priority_keys = ["user.id"], limit = 3)"#).unwrap();
        assert!(matches!(s.editor, Editor::Limit(_, 3, ref keys) if keys == &["user.id".to_string()]));
        let e = compile_err(Level::Log, r#"limit(attributes, max = 3, priority_keys = [])"#);
        assert!(e.message.contains("no parameter named `max`"));
        assert_eq!(e.column, 25);
    }

    #[test]
    fn compile_negative_limit_is_rejected() {
        let e = compile_err(Level::Span, r#"truncate_all(attributes, -1)"#);
        assert_eq!(e.column, 26);
        assert!(e.message.contains("must be 0 or more"));
        assert!(compile(Level::Span, r#"truncate_all(attributes, 9223372036854775807)"#).is_ok());
        let e = compile_err(Level::Span, r#"limit(attributes, 1, ["a", "b"])"#);
        assert!(e.message.contains("more than the limit"));
    }

    #[test]
    fn compile_wrong_argument_types_are_rejected() {
        let e = compile_err(Level::Span, r#"keep_keys(attributes, "http.method")"#);
        assert_eq!(e.column, 23);
        assert!(e.message.contains("list of strings"));
        let e = compile_err(Level::Span, r#"delete_key("attributes", "a")"#);
        assert_eq!(e.column, 12);
        assert!(e.message.contains("expected a path"));
        let e = compile_err(Level::Span, r#"delete_key(name, "a")"#);
        assert!(e.message.contains("`name` is not a map"));
        let e = compile_err(Level::Span, r#"replace_all_patterns(attributes, "values", "a", "b")"#);
        assert!(e.message.contains("\"key\" or \"value\""));
    }

    #[test]
    fn compile_bad_regex_is_an_error_at_the_pattern() {
        let e = compile_err(Level::Span, r#"replace_pattern(name, "(unclosed", "x")"#);
        assert_eq!(e.column, 23);
        assert!(e.message.contains("invalid regex"));
    }

    #[test]
    fn compile_read_only_and_unknown_paths_are_rejected() {
        let e = compile_err(Level::Span, r#"set(duration, 5)"#);
        assert!(e.message.contains("read-only"));
        let e = compile_err(Level::Span, r#"set(attributes["a"], nmae)"#);
        assert_eq!(e.column, 22);
        assert!(e.message.contains("unknown path `nmae` for the span level"));
        let e = compile_err(Level::Span, r#"set(attributes["a"], body)"#);
        assert!(e.message.contains("unknown path `body`"));
        let e = compile_err(Level::Span, r#"set(name["a"], "x")"#);
        assert!(e.message.contains("cannot be indexed"));
    }

    #[test]
    fn compile_path_of_a_deeper_level_is_not_available() {
        let e = compile_err(Level::Resource, r#"set(attributes["a"], span.name)"#);
        assert!(e.message.contains("not available in the resource context"), "{}", e.message);
        let e = compile_err(Level::Span, r#"set(attributes["a"], spanevent.name)"#);
        assert!(e.message.contains("not available in the span context"));
    }

    #[test]
    fn compile_unknown_enum_constant_is_rejected() {
        let e = compile_err(Level::Span, r#"set(status.code, STATUS_CODE_BROKEN)"#);
        assert_eq!(e.column, 18);
        assert!(e.message.contains("unknown constant"));
    }

    #[test]
    fn compile_bare_path_is_not_a_condition() {
        let c = parse_condition(r#"attributes["ok"]"#).unwrap();
        let e = Compiler { context: Level::Span }.condition(&c).unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.message.contains("expected a condition"));
    }

    #[test]
    fn enum_severity_numbers_follow_the_otlp_numbering() {
        assert_eq!(enum_value("SEVERITY_NUMBER_TRACE"), Some(1));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO"), Some(9));
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN3"), Some(15));
        assert_eq!(enum_value("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO5"), None);
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO1"), None);
    }

    #[test]
    fn glob_translation_handles_classes_alternatives_and_escapes() {
        let re = |g: &str| Regex::new(&glob_to_regex(g).unwrap()).unwrap();
        assert!(re("/user/*/list/*").is_match("/user/42/list/7"));
        assert!(!re("/user/*/list/*").is_match("/users/42"));
        assert!(re("GET /api/v?/*").is_match("GET /api/v2/orders"));
        assert!(re("*.{jpg,png}").is_match("logo.png"));
        assert!(re("[!a-c]x").is_match("dx") && !re("[!a-c]x").is_match("bx"));
        assert!(re(r"a\*b").is_match("a*b") && !re(r"a\*b").is_match("aXb"));
        assert!(re("a.b").is_match("a.b") && !re("a.b").is_match("aXb"));
        assert!(glob_to_regex("[abc").is_err());
        assert!(glob_to_regex("{a,b").is_err());
    }
}
