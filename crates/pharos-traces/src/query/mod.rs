//! TraceQL: the syntax tree, the parser, printing back to TraceQL, and evaluation.
//!
//! [`parse`] turns query text into a type-checked [`Query`]; `Display` prints a query back
//! as canonical TraceQL that parses to an equal tree. [`Evaluator`] evaluates a query over
//! the spans of one trace into [`Spanset`]s ([`evaluate`] for a single trace), and
//! [`MetricsEvaluator`] a metrics query over many traces into [`MetricSeries`].
//!
//! Supported: spanset filters over intrinsics and scoped attributes, comparison, regex,
//! arithmetic and logical operators; spanset operators (`&&`, `||`, structural `>`, `>>`,
//! `<`, `<<`, `~` with their `!` and `&` forms); pipelines with `count()`, `avg()`, `min()`,
//! `max()`, `sum()` filters, `by()`, `select()`, `coalesce()` and spanset stages; metrics
//! functions (`rate()`, `count_over_time()`, `{min,max,avg,sum}_over_time()`,
//! `quantile_over_time()`, `histogram_over_time()`) with `by (…)` and `| topk(n)` /
//! `| bottomk(n)`; hints `with (name=value, …)`.
//!
//! `&&` binds tighter than `||`, both inside filters and between spansets; parenthesise
//! when in doubt. Regexes are fully anchored ([`compile_regex`]).
//!
//! ```
//! use pharos_traces::query::{parse, AttributeScope};
//!
//! let query = parse(r#"{ resource.service.name = "api" && duration > 1s } | count() > 2"#).unwrap();
//! assert_eq!(query.attributes()[0].scope, AttributeScope::Resource);
//! assert_eq!(query.to_string(), r#"{ resource.service.name = "api" && duration > 1s } | count() > 2"#);
//!
//! let error = parse("{ status = 200 }").unwrap_err();
//! assert_eq!(error.column, 10);
//! ```

mod ast;
mod error;
mod eval;
mod lexer;
mod parser;

pub use ast::{
    Aggregate, Attribute, AttributeScope, BinaryOp, Condition, FieldExpr, Hint, Intrinsic, Kind,
    MetricsFunction, MetricsStage, Pipeline, Query, ScalarExpr, ScalarFilter, SecondStage, SpansetExpr,
    SpansetFilter, SpansetOp, Stage, Static, Status, UnaryOp,
};
pub use error::{ParseError, ParseErrorKind};
pub use eval::{
    DEFAULT_MAX_METRICS_SERIES, EvalError, Evaluator, ExactColumns, MAX_METRICS_POINTS, MatchedSpan,
    MetricSeries, MetricsEvaluator, Prefilter, Spanset, Value, evaluate, evaluate_metrics,
};
pub use parser::{MAX_HEIGHT, MAX_NESTING, parse};

/// The most memory one compiled regex may take; larger patterns are rejected.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a TraceQL regex the way `=~` and `!~` match: fully anchored, so `"GET.*"`
/// matches the whole value (as in Tempo and Prometheus).
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(REGEX_SIZE_LIMIT).build()
}
