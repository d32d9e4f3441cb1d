//! TraceQL evaluation over the spans of one trace, and metrics over many traces.
//!
//! [`Evaluator::new`] compiles a [`Query`] once (regexes included); [`Evaluator::evaluate`]
//! then takes all spans of one trace, in any order, and gives the spansets the query
//! yields for it (none: the trace does not match). Metrics queries go through
//! [`MetricsEvaluator`].
//!
//! Semantics follow Tempo:
//! - A missing attribute is nil. Every comparison with nil is false, `!=` included, except
//!   `x = nil` (missing) and `x != nil` (present). Values of types that cannot be compared
//!   (a string and a number) compare false; ints, floats and durations compare as numbers.
//!   `!` of a non-boolean, arithmetic on non-numbers and division by zero are nil.
//! - `.x` reads the span attribute, else the resource attribute. A filter reading `event.`
//!   (`link.`) fields matches a span when it holds for one of the span's events (links);
//!   a span without events is tried once, with those fields nil.
//! - Spanset operators work within the spanset they are given (the whole trace for the
//!   first stage). `&&` gives the union of both sides when both match, `||` the union of
//!   those that match. Structural operators give the right-hand spans with the relation
//!   (`!`: without it) to some left-hand span, the `&` forms the spans of both sides that
//!   take part in it; several spansets on one side (after `by()`) count as their union.
//! - `by()` splits each spanset by the values of its fields (spansets in the order their
//!   values first occur, attribute `by(field)`); aggregates in scalar filters record their
//!   value as a spanset attribute (`count()`, `avg(duration)`) and skip spans without a
//!   numeric value; a spanset where no span has one fails the filter. `coalesce()` merges
//!   all spansets into one, without attributes.
//! - Matched spans carry the attributes and intrinsics the pipeline reads (filters, `by`,
//!   aggregates, `select`), named as Tempo names them (`http.method`, `status`,
//!   `span:childCount`), when the span has them. Fields a span record carries anyway (name,
//!   duration, span and trace ids, trace-level intrinsics) and event and link fields are
//!   not repeated there.

mod expr;
mod metrics;
mod pipeline;
mod prefilter;
mod trace;
mod value;

#[cfg(test)]
mod tests;

use pharos_core::ErrorCode;

use self::expr::{Expr, SpanCtx};
use self::pipeline::{Pipeline, Set};
use self::trace::Trace;
use crate::model::SpanData;
use crate::query::{AttributeScope, FieldExpr, Intrinsic, Query};

pub use self::metrics::{
    DEFAULT_MAX_METRICS_SERIES, MAX_METRICS_POINTS, MetricSeries, MetricsEvaluator, evaluate_metrics,
};
pub use self::prefilter::{ExactColumns, Prefilter};
pub use self::value::Value;

/// Why a query cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A regex in the query does not compile (the parser rejects these; built trees may not).
    #[error("invalid regular expression {pattern:?}")]
    InvalidRegex {
        /// The pattern as written.
        pattern: String,
        /// The regex engine's reason.
        #[source]
        source: regex::Error,
    },
    /// `=~` or `!~` with something other than a string literal on the right.
    #[error("the right side of =~ and !~ must be a string literal")]
    RegexNotLiteral,
    /// A metrics evaluation of a query without a metrics function.
    #[error("not a metrics query: the query has no metrics function such as rate()")]
    NotMetricsQuery,
    /// A metrics range that is empty or has a zero step.
    #[error(
        "invalid metrics range: start {start_ns}, end {end_ns}, step {step_ns} (need start < end, step > 0)"
    )]
    InvalidRange {
        /// Range start, unix nanoseconds.
        start_ns: u64,
        /// Range end, unix nanoseconds.
        end_ns: u64,
        /// Step, nanoseconds.
        step_ns: u64,
    },
    /// A metrics range with more steps than a series may have.
    #[error("metrics range has {points} steps, more than {limit}; use a larger step")]
    TooManyPoints {
        /// Steps in the range.
        points: u64,
        /// [`MAX_METRICS_POINTS`].
        limit: u64,
    },
    /// A metrics query whose `by (…)` gives more series than allowed.
    #[error("metrics query gives more than {limit} series; narrow the query or its by (…)")]
    TooManySeries {
        /// The series limit.
        limit: usize,
    },
}

impl EvalError {
    /// The wire-independent code: limits are too large, everything else invalid input.
    pub fn code(&self) -> ErrorCode {
        match self {
            EvalError::TooManyPoints { .. } | EvalError::TooManySeries { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::InvalidInput,
        }
    }
}

/// A spanset the query yields for a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanset {
    /// The spans, by start time (then input order).
    pub spans: Vec<MatchedSpan>,
    /// How many spans the spanset has, before any truncation.
    pub matched: usize,
    /// Spanset attributes: `by(field)` values and aggregate values (`count()`).
    pub attributes: Vec<(String, Value)>,
}

/// A span of a spanset.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSpan {
    /// The span's index in the slice given to [`Evaluator::evaluate`].
    pub index: usize,
    /// The attributes the query reads and selects that the span has, named as Tempo names
    /// them (`http.method`, `service.name`, `status`), in the order the query first names
    /// them.
    pub attributes: Vec<(String, Value)>,
}

/// A query compiled for evaluation over many traces.
///
/// ```
/// use pharos_traces::query::{parse, Evaluator};
///
/// let query = parse("{ status = error } > { }").unwrap();
/// let evaluator = Evaluator::new(&query).unwrap();
/// assert!(evaluator.evaluate(&[]).is_empty());
/// ```
#[derive(Debug)]
pub struct Evaluator {
    pipeline: Pipeline,
    /// Reported attribute names, each with the fields that give it, tried in order.
    reported: Vec<(String, Vec<Expr>)>,
}

impl Evaluator {
    /// Compiles `query`'s spanset pipeline (a metrics stage is left to
    /// [`MetricsEvaluator`]).
    pub fn new(query: &Query) -> Result<Self, EvalError> {
        let pipeline = Pipeline::compile(&query.pipeline)?;
        let pipeline_only = Query { pipeline: query.pipeline.clone(), metrics: None, hints: Vec::new() };
        let mut fields: Vec<&FieldExpr> = Vec::new();
        pipeline_only.walk_fields(&mut |e| {
            if reported_name(e).is_some() && !fields.contains(&e) {
                fields.push(e);
            }
        });
        let mut reported: Vec<(String, Vec<Expr>)> = Vec::new();
        for field in fields {
            let name = reported_name(field).unwrap_or_default();
            let expr = Expr::compile(field)?;
            match reported.iter_mut().find(|(n, _)| *n == name) {
                Some((_, exprs)) => exprs.push(expr),
                None => reported.push((name, vec![expr])),
            }
        }
        Ok(Self { pipeline, reported })
    }

    /// The spansets the query yields for the trace whose spans are `spans`.
    pub fn evaluate(&self, spans: &[SpanData]) -> Vec<Spanset> {
        self.evaluate_truncated(spans, usize::MAX)
    }

    /// As [`evaluate`](Self::evaluate), keeping the first `max_spans` spans (by start time)
    /// of each spanset; `matched` still counts them all. Cheaper than truncating after.
    pub fn evaluate_truncated(&self, spans: &[SpanData], max_spans: usize) -> Vec<Spanset> {
        if spans.is_empty() {
            return Vec::new();
        }
        let trace = Trace::new(spans);
        let all = Set { spans: (0..spans.len()).collect(), attributes: Vec::new() };
        let sets = self.pipeline.evaluate(&trace, vec![all]);
        sets.into_iter().map(|set| self.spanset(&trace, set, max_spans)).collect()
    }

    fn spanset(&self, trace: &Trace<'_>, set: Set, max_spans: usize) -> Spanset {
        let mut order = set.spans;
        order.sort_by_key(|&i| (trace.spans[i].span.start_time_unix_nano, i));
        let matched = order.len();
        order.truncate(max_spans);
        let spans = order
            .into_iter()
            .map(|index| {
                let ctx = SpanCtx::new(trace, index);
                let attributes = self
                    .reported
                    .iter()
                    .filter_map(|(name, exprs)| {
                        let value = exprs.iter().find_map(|e| e.eval(&ctx).to_value())?;
                        Some((name.clone(), value))
                    })
                    .collect();
                MatchedSpan { index, attributes }
            })
            .collect();
        Spanset { spans, matched, attributes: set.attributes }
    }
}

/// The name a field is reported under in [`MatchedSpan::attributes`], if it is reported.
fn reported_name(e: &FieldExpr) -> Option<String> {
    match e {
        FieldExpr::Attribute(a) if !matches!(a.scope, AttributeScope::Event | AttributeScope::Link) => {
            Some(a.name.clone())
        }
        FieldExpr::Intrinsic(
            i @ (Intrinsic::Status
            | Intrinsic::StatusMessage
            | Intrinsic::Kind
            | Intrinsic::ParentId
            | Intrinsic::ChildCount
            | Intrinsic::InstrumentationName
            | Intrinsic::InstrumentationVersion),
        ) => Some(i.as_str().to_string()),
        _ => None,
    }
}

/// Compiles `query` and evaluates it over the spans of one trace (see [`Evaluator`], which
/// compiles once for many traces).
pub fn evaluate(query: &Query, spans: &[SpanData]) -> Result<Vec<Spanset>, EvalError> {
    Ok(Evaluator::new(query)?.evaluate(spans))
}
