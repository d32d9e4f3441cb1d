//! Span conditions derived from a query, which every trace the query matches has spans
//! for, evaluated over a block's columns without decoding whole spans.
//!
//! [`Prefilter::new`] over-approximates: a trace without the spans cannot match the query,
//! while a trace with them may still not match, and is then read whole and evaluated
//! exactly. The conditions are built from the first spanset stage:
//!
//! - inside `{ … }`: `&&` and `||` of comparisons, regexes and nil tests on a field and a
//!   literal. Intrinsic span fields (`name`, `status`, `kind`, `duration`) and the span
//!   attributes with a dedicated column are tested exactly as the evaluator tests them;
//!   `resource.service.name` through its column (an unknown service always passes). Any
//!   other attribute must at least be present: its key (and, for `= "literal"`, the
//!   literal) occurs in the bytes of the column that holds it (the encoded span for span,
//!   event and link attributes, the encoded resource or scope). Everything else (`!`,
//!   arithmetic, trace-level intrinsics) passes every span.
//! - between spansets, at the level of traces: `||` needs a span passing either side's
//!   condition; `&&` and the structural operators need spans passing both sides'; a negated
//!   structural operator gives right-hand spans, so only the right side's is needed.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use arrow_array::{
    Array, BinaryArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use memchr::memmem::Finder;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::EvalError;
use super::expr::{kind_of, nanos, status_of};
use super::value::{Val, compare, regex_matches};
use crate::model::{SpanData, UNKNOWN_SERVICE, attribute};
use crate::query::{
    AttributeScope, BinaryOp, FieldExpr, Intrinsic, Pipeline, Query, SpansetExpr, SpansetOp, Stage, Static,
    compile_regex,
};
use crate::store::block::{DEDICATED_ATTRIBUTES, dedicated_attribute};

/// A column of a trace block that a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Name,
    Service,
    Kind,
    Status,
    Duration,
    /// A dedicated attribute column: an index into [`DEDICATED_ATTRIBUTES`].
    Attribute(usize),
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::Service => "service_name",
            Column::Kind => "kind",
            Column::Status => "status_code",
            Column::Duration => "duration_nanos",
            Column::Attribute(i) => DEDICATED_ATTRIBUTES[i].column,
        }
    }
}

/// What is asked of a column's value.
#[derive(Debug)]
enum Test {
    Compare(BinaryOp, Val<'static>),
    Regex(regex::Regex, bool),
    IsNil(bool),
}

impl Test {
    fn holds(&self, v: &Val<'_>) -> bool {
        match self {
            Test::Compare(op, lit) => compare(*op, v, lit),
            Test::Regex(regex, negated) => regex_matches(v, regex, *negated),
            Test::IsNil(negated) => v.is_nil() != *negated,
        }
    }
}

/// The encoded columns whose bytes hold attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blob {
    /// `span`: span attributes, events, links, status message.
    Span,
    /// `resource`.
    Resource,
    /// `scope`.
    Scope,
}

impl Blob {
    fn name(self) -> &'static str {
        match self {
            Blob::Span => "span",
            Blob::Resource => "resource",
            Blob::Scope => "scope",
        }
    }
}

#[derive(Debug)]
enum Cond {
    Const(bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Column(Column, Test),
    /// Every needle occurs in the bytes of one of the blobs; on a decoded span, the attribute
    /// `key` (when there is one) is present in one of them.
    Has {
        blobs: Vec<Blob>,
        key: Option<String>,
        needles: Vec<Finder<'static>>,
    },
}

/// What a trace needs to possibly match: spans passing span conditions, combined.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TraceCond {
    /// Every trace.
    Any,
    /// No trace.
    Never,
    /// A span passing the condition with this index in [`Prefilter::leaves`].
    Spans(usize),
    /// All of these.
    All(Vec<TraceCond>),
    /// One of these.
    AnyOf(Vec<TraceCond>),
}

/// Span conditions derived from a query, and how a trace that the query matches must have
/// spans passing them: `{ a } && { b }` needs a span passing `a` and one passing `b`.
#[derive(Debug)]
pub struct Prefilter {
    leaves: Vec<Cond>,
    trace: TraceCond,
}

/// Which dedicated attribute columns of a block hold exact values.
pub type ExactColumns = [bool; DEDICATED_ATTRIBUTES.len()];

impl Prefilter {
    /// The conditions for `query`, or `None` when every trace could match it.
    pub fn new(query: &Query) -> Result<Option<Prefilter>, EvalError> {
        let mut leaves = Vec::new();
        let trace = simplify_trace(pipeline_cond(&query.pipeline, &mut leaves)?);
        Ok(match trace {
            TraceCond::Any => None,
            trace => Some(Prefilter { leaves, trace }),
        })
    }

    /// The number of span conditions.
    pub fn leaves(&self) -> usize {
        self.leaves.len()
    }

    /// The block columns the span conditions read, each once.
    pub fn columns(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for leaf in &self.leaves {
            leaf.columns(&mut out);
        }
        out
    }

    /// Per row of `batch` (which holds the [`Prefilter::columns`] that the block has), whether
    /// the span passes any of the span conditions. Columns the batch lacks, and inexact
    /// dedicated columns, pass every row.
    pub fn evaluate_any(&self, batch: &RecordBatch, exact: &ExactColumns) -> BooleanArray {
        let mut out = vec![false; batch.num_rows()];
        for leaf in &self.leaves {
            for (o, p) in out.iter_mut().zip(leaf.evaluate(batch, exact)) {
                *o |= p;
            }
        }
        BooleanArray::from(out)
    }

    /// Per span condition, per row of `batch`, whether the span passes it.
    pub fn evaluate_each(&self, batch: &RecordBatch, exact: &ExactColumns) -> Vec<Vec<bool>> {
        self.leaves.iter().map(|leaf| leaf.evaluate(batch, exact)).collect()
    }

    /// Per span condition, whether a decoded span passes it.
    pub fn matches_span(&self, span: &SpanData) -> Vec<bool> {
        self.leaves.iter().map(|leaf| leaf.matches_span(span)).collect()
    }

    /// The traces that may match, given per span condition the traces with a span passing it.
    pub fn traces<T: Copy + Eq + std::hash::Hash>(&self, passing: &[HashSet<T>]) -> HashSet<T> {
        fn eval<T: Copy + Eq + std::hash::Hash>(c: &TraceCond, passing: &[HashSet<T>]) -> Option<HashSet<T>> {
            Some(match c {
                TraceCond::Any => return None,
                TraceCond::Never => HashSet::new(),
                TraceCond::Spans(i) => passing[*i].clone(),
                TraceCond::All(parts) => {
                    let mut sets: Vec<HashSet<T>> = parts.iter().filter_map(|p| eval(p, passing)).collect();
                    sets.sort_by_key(HashSet::len);
                    let mut sets = sets.into_iter();
                    let first = sets.next()?;
                    sets.fold(first, |acc, set| acc.intersection(&set).copied().collect())
                }
                TraceCond::AnyOf(parts) => {
                    let mut out = HashSet::new();
                    for part in parts {
                        out.extend(eval(part, passing)?);
                    }
                    out
                }
            })
        }
        eval(&self.trace, passing).unwrap_or_else(|| passing.iter().flatten().copied().collect())
    }
}

fn leaf(cond: Cond, leaves: &mut Vec<Cond>) -> TraceCond {
    match simplify(cond) {
        Cond::Const(true) => TraceCond::Any,
        Cond::Const(false) => TraceCond::Never,
        cond => {
            leaves.push(cond);
            TraceCond::Spans(leaves.len() - 1)
        }
    }
}

fn pipeline_cond(pipeline: &Pipeline, leaves: &mut Vec<Cond>) -> Result<TraceCond, EvalError> {
    match pipeline.stages.first() {
        Some(Stage::Spansets(expr)) => spansets_cond(expr, leaves),
        _ => Ok(TraceCond::Any),
    }
}

fn spansets_cond(expr: &SpansetExpr, leaves: &mut Vec<Cond>) -> Result<TraceCond, EvalError> {
    Ok(match expr {
        SpansetExpr::Filter(filter) => match &filter.expr {
            Some(e) => leaf(field_cond(e)?, leaves),
            None => TraceCond::Any,
        },
        SpansetExpr::Pipeline(pipeline) => pipeline_cond(pipeline, leaves)?,
        SpansetExpr::Binary { op: SpansetOp::Or, lhs, rhs } => {
            TraceCond::AnyOf(vec![spansets_cond(lhs, leaves)?, spansets_cond(rhs, leaves)?])
        }
        // The right-hand spans without the relation: only they are needed.
        SpansetExpr::Binary { op, rhs, .. } if is_negated(*op) => spansets_cond(rhs, leaves)?,
        // `&&` and the structural operators need spans of both sides.
        SpansetExpr::Binary { lhs, rhs, .. } => {
            TraceCond::All(vec![spansets_cond(lhs, leaves)?, spansets_cond(rhs, leaves)?])
        }
    })
}

fn simplify_trace(c: TraceCond) -> TraceCond {
    match c {
        TraceCond::All(parts) => {
            let mut kept = Vec::new();
            for part in parts.into_iter().map(simplify_trace) {
                match part {
                    TraceCond::Any => {}
                    TraceCond::Never => return TraceCond::Never,
                    part => kept.push(part),
                }
            }
            match kept.len() {
                0 => TraceCond::Any,
                1 => kept.pop().expect("one part"),
                _ => TraceCond::All(kept),
            }
        }
        TraceCond::AnyOf(parts) => {
            let mut kept = Vec::new();
            for part in parts.into_iter().map(simplify_trace) {
                match part {
                    TraceCond::Any => return TraceCond::Any,
                    TraceCond::Never => {}
                    part => kept.push(part),
                }
            }
            match kept.len() {
                0 => TraceCond::Never,
                1 => kept.pop().expect("one part"),
                _ => TraceCond::AnyOf(kept),
            }
        }
        c => c,
    }
}

fn is_negated(op: SpansetOp) -> bool {
    matches!(
        op,
        SpansetOp::NotChild
            | SpansetOp::NotDescendant
            | SpansetOp::NotParent
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling
    )
}

/// The mirror of a comparison, for `literal op field`.
fn mirror(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Lte => BinaryOp::Gte,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Gte => BinaryOp::Lte,
        op => op,
    }
}

fn field_cond(e: &FieldExpr) -> Result<Cond, EvalError> {
    Ok(match e {
        FieldExpr::Binary { op: BinaryOp::And, lhs, rhs } => {
            Cond::And(vec![field_cond(lhs)?, field_cond(rhs)?])
        }
        FieldExpr::Binary { op: BinaryOp::Or, lhs, rhs } => {
            Cond::Or(vec![field_cond(lhs)?, field_cond(rhs)?])
        }
        FieldExpr::Binary { op: op @ (BinaryOp::Regex | BinaryOp::NotRegex), lhs, rhs } => match &**rhs {
            FieldExpr::Static(Static::String(pattern)) => {
                let regex = compile_regex(pattern)
                    .map_err(|source| EvalError::InvalidRegex { pattern: pattern.clone(), source })?;
                test_cond(lhs, Test::Regex(regex, *op == BinaryOp::NotRegex), None)
            }
            _ => Cond::Const(true),
        },
        FieldExpr::Binary { op, lhs, rhs } if op.is_comparison() => {
            let (field, op, lit) = match (&**lhs, &**rhs) {
                (field, FieldExpr::Static(lit)) => (field, *op, lit),
                (FieldExpr::Static(lit), field) => (field, mirror(*op), lit),
                _ => return Ok(Cond::Const(true)),
            };
            let literal = match (op, lit) {
                (BinaryOp::Eq, Static::String(s)) => Some(s.as_str()),
                _ => None,
            };
            let test = match (op, lit) {
                (BinaryOp::Eq, Static::Nil) => Test::IsNil(false),
                (BinaryOp::Neq, Static::Nil) => Test::IsNil(true),
                (op, lit) => Test::Compare(op, Val::from_static(lit)),
            };
            test_cond(field, test, literal)
        }
        // A bare boolean attribute: true only when present.
        FieldExpr::Attribute(_) => test_cond(e, Test::Compare(BinaryOp::Eq, Val::Bool(true)), None),
        FieldExpr::Static(Static::Bool(b)) => Cond::Const(*b),
        _ => Cond::Const(true),
    })
}

/// The condition that `field` passes `test`; `literal` is the string it must equal, if any.
fn test_cond(field: &FieldExpr, test: Test, literal: Option<&str>) -> Cond {
    // A missing attribute passes `= nil` only: then nothing needs to be present.
    let needs_presence = !matches!(test, Test::IsNil(false));
    match field {
        FieldExpr::Intrinsic(i) => match i {
            Intrinsic::Name => Cond::Column(Column::Name, test),
            Intrinsic::Status => Cond::Column(Column::Status, test),
            Intrinsic::Kind => Cond::Column(Column::Kind, test),
            Intrinsic::Duration => Cond::Column(Column::Duration, test),
            Intrinsic::StatusMessage | Intrinsic::EventName => has(&[Blob::Span], None, literal),
            Intrinsic::InstrumentationName | Intrinsic::InstrumentationVersion => {
                has(&[Blob::Scope], None, literal)
            }
            _ => Cond::Const(true),
        },
        FieldExpr::Attribute(a) => {
            let key = Some(a.name.as_str());
            // Where only the bytes can be searched, nothing is known of a missing attribute.
            let present =
                |blobs: &[Blob]| if needs_presence { has(blobs, key, literal) } else { Cond::Const(true) };
            match a.scope {
                AttributeScope::Span => match dedicated_attribute(&a.name) {
                    Some(i) => Cond::Column(Column::Attribute(i), test),
                    None => present(&[Blob::Span]),
                },
                AttributeScope::Resource if a.name == "service.name" => Cond::Column(Column::Service, test),
                AttributeScope::Resource => present(&[Blob::Resource]),
                AttributeScope::Unscoped => match dedicated_attribute(&a.name) {
                    // The span's value when it has one, else the resource's: a span without
                    // the attribute passes `= nil` by its column alone.
                    Some(i) if needs_presence => {
                        Cond::Or(vec![Cond::Column(Column::Attribute(i), test), present(&[Blob::Resource])])
                    }
                    Some(i) => Cond::Column(Column::Attribute(i), test),
                    None => present(&[Blob::Span, Blob::Resource]),
                },
                AttributeScope::Event | AttributeScope::Link => present(&[Blob::Span]),
                AttributeScope::Instrumentation => present(&[Blob::Scope]),
            }
        }
        _ => Cond::Const(true),
    }
}

fn has(blobs: &[Blob], key: Option<&str>, literal: Option<&str>) -> Cond {
    let needles: Vec<Finder<'static>> = key
        .into_iter()
        .chain(literal)
        .filter(|n| !n.is_empty())
        .map(|n| Finder::new(n.as_bytes()).into_owned())
        .collect();
    if needles.is_empty() {
        return Cond::Const(true);
    }
    Cond::Has { blobs: blobs.to_vec(), key: key.map(str::to_string), needles }
}

fn simplify(cond: Cond) -> Cond {
    match cond {
        Cond::And(parts) => {
            let mut kept = Vec::new();
            for part in parts.into_iter().map(simplify) {
                match part {
                    Cond::Const(true) => {}
                    Cond::Const(false) => return Cond::Const(false),
                    Cond::And(inner) => kept.extend(inner),
                    part => kept.push(part),
                }
            }
            match kept.len() {
                0 => Cond::Const(true),
                1 => kept.pop().expect("one part"),
                _ => Cond::And(kept),
            }
        }
        Cond::Or(parts) => {
            let mut kept = Vec::new();
            for part in parts.into_iter().map(simplify) {
                match part {
                    Cond::Const(true) => return Cond::Const(true),
                    Cond::Const(false) => {}
                    Cond::Or(inner) => kept.extend(inner),
                    part => kept.push(part),
                }
            }
            match kept.len() {
                0 => Cond::Const(false),
                1 => kept.pop().expect("one part"),
                _ => Cond::Or(kept),
            }
        }
        cond => cond,
    }
}

impl Cond {
    fn columns(&self, out: &mut Vec<&'static str>) {
        let mut add = |name: &'static str| {
            if !out.contains(&name) {
                out.push(name);
            }
        };
        match self {
            Cond::Const(_) => {}
            Cond::And(parts) | Cond::Or(parts) => parts.iter().for_each(|p| p.columns(out)),
            Cond::Column(column, _) => add(column.name()),
            Cond::Has { blobs, .. } => blobs.iter().for_each(|b| add(b.name())),
        }
    }

    fn evaluate(&self, batch: &RecordBatch, exact: &ExactColumns) -> Vec<bool> {
        let rows = batch.num_rows();
        match self {
            Cond::Const(b) => vec![*b; rows],
            Cond::And(parts) => combine(parts, batch, exact, true),
            Cond::Or(parts) => combine(parts, batch, exact, false),
            Cond::Column(column, test) => {
                if let Column::Attribute(i) = column
                    && !exact[*i]
                {
                    return vec![true; rows];
                }
                match batch.column_by_name(column.name()) {
                    Some(array) => {
                        evaluate_column(*column, test, array.as_ref()).unwrap_or_else(|| vec![true; rows])
                    }
                    None => vec![true; rows],
                }
            }
            Cond::Has { blobs, needles, .. } => {
                let arrays: Vec<&BinaryArray> = blobs
                    .iter()
                    .filter_map(|b| batch.column_by_name(b.name())?.as_any().downcast_ref::<BinaryArray>())
                    .collect();
                if arrays.len() < blobs.len() {
                    return vec![true; rows];
                }
                (0..rows)
                    .map(|row| {
                        arrays.iter().any(|a| {
                            let bytes = a.value(row);
                            needles.iter().all(|n| n.find(bytes).is_some())
                        })
                    })
                    .collect()
            }
        }
    }

    fn matches_span(&self, data: &SpanData) -> bool {
        match self {
            Cond::Const(b) => *b,
            Cond::And(parts) => parts.iter().all(|p| p.matches_span(data)),
            Cond::Or(parts) => parts.iter().any(|p| p.matches_span(data)),
            Cond::Column(column, test) => {
                let span = &data.span;
                let value = match column {
                    Column::Name => Val::Str(Cow::Borrowed(span.name.as_str())),
                    Column::Service if data.service_name() == UNKNOWN_SERVICE => return true,
                    Column::Service => Val::Str(Cow::Borrowed(data.service_name())),
                    Column::Kind => Val::Kind(kind_of(span.kind)),
                    Column::Status => Val::Status(status_of(span.status.as_ref().map_or(0, |s| s.code))),
                    Column::Duration => Val::Dur(nanos(data.duration_nanos())),
                    Column::Attribute(i) => attribute(&span.attributes, DEDICATED_ATTRIBUTES[*i].key)
                        .map_or(Val::Nil, Val::from_any),
                };
                test.holds(&value)
            }
            Cond::Has { blobs, key, .. } => {
                let Some(key) = key else { return true };
                let has = |attributes: &[KeyValue]| attributes.iter().any(|kv| &kv.key == key);
                blobs.iter().any(|blob| match blob {
                    Blob::Span => {
                        has(&data.span.attributes)
                            || data.span.events.iter().any(|e| has(&e.attributes))
                            || data.span.links.iter().any(|l| has(&l.attributes))
                    }
                    Blob::Resource => has(&data.resource.resource.attributes),
                    Blob::Scope => has(&data.scope.scope.attributes),
                })
            }
        }
    }
}

/// `&&` (`all`) or `||` of the parts, row by row; stops once every row is decided.
fn combine(parts: &[Cond], batch: &RecordBatch, exact: &ExactColumns, all: bool) -> Vec<bool> {
    let mut out = parts[0].evaluate(batch, exact);
    for part in &parts[1..] {
        // Undecided rows are the true ones for `&&`, the false ones for `||`.
        if !out.contains(&all) {
            break;
        }
        for (o, p) in out.iter_mut().zip(part.evaluate(batch, exact)) {
            *o = if all { *o && p } else { *o || p };
        }
    }
    out
}

/// The test over one column; `None` when the column has an unexpected type.
fn evaluate_column(column: Column, test: &Test, array: &dyn Array) -> Option<Vec<bool>> {
    let any = array.as_any();
    Some(match column {
        Column::Name | Column::Service | Column::Attribute(_)
            if array.data_type() == &arrow_schema::DataType::Utf8 =>
        {
            let strings = any.downcast_ref::<StringArray>()?;
            let service = column == Column::Service;
            // A regex is run once per distinct value of the batch.
            let mut seen: HashMap<&str, bool> = HashMap::new();
            (0..strings.len())
                .map(|row| {
                    if strings.is_null(row) {
                        return test.holds(&Val::Nil);
                    }
                    let s = strings.value(row);
                    if service && s == UNKNOWN_SERVICE {
                        return true;
                    }
                    match test {
                        Test::Regex(..) => {
                            *seen.entry(s).or_insert_with(|| test.holds(&Val::Str(Cow::Borrowed(s))))
                        }
                        _ => test.holds(&Val::Str(Cow::Borrowed(s))),
                    }
                })
                .collect()
        }
        Column::Attribute(_) => {
            let ints = any.downcast_ref::<Int64Array>()?;
            (0..ints.len())
                .map(|row| {
                    if ints.is_null(row) {
                        test.holds(&Val::Nil)
                    } else {
                        test.holds(&Val::Int(ints.value(row)))
                    }
                })
                .collect()
        }
        Column::Kind | Column::Status => {
            let codes = any.downcast_ref::<Int32Array>()?;
            // Codes outside the table map like the evaluator maps them (unset, unspecified).
            let table: Vec<bool> = (0..8)
                .map(|code| {
                    test.holds(&if column == Column::Kind {
                        Val::Kind(kind_of(code))
                    } else {
                        Val::Status(status_of(code))
                    })
                })
                .collect();
            let other = test.holds(&if column == Column::Kind {
                Val::Kind(kind_of(-1))
            } else {
                Val::Status(status_of(-1))
            });
            codes
                .values()
                .iter()
                .map(|&c| usize::try_from(c).ok().and_then(|c| table.get(c).copied()).unwrap_or(other))
                .collect()
        }
        Column::Duration => {
            let durations = any.downcast_ref::<UInt64Array>()?;
            durations.values().iter().map(|&d| test.holds(&Val::Dur(nanos(d)))).collect()
        }
        _ => return None,
    })
}
