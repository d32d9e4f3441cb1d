//! The TraceQL syntax tree, its accessors, and its printing back to TraceQL.
//!
//! Printing is canonical: intrinsics in their short form (`name`, `traceDuration`), durations
//! in their largest exact unit, strings in double quotes, and only the parentheses that
//! precedence needs. Parsing the printed text gives back an equal tree.

use std::fmt::{self, Display, Formatter, Write as _};
use std::time::Duration;

/// A whole TraceQL query: a spanset pipeline, optionally a metrics stage, optionally hints.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The spanset pipeline (`{ … } | count() > 2 | select(…)`).
    pub pipeline: Pipeline,
    /// `| rate() by (…)` and the like, when the query is a metrics query.
    pub metrics: Option<MetricsStage>,
    /// `with (sample=true)`.
    pub hints: Vec<Hint>,
}

/// Stages separated by `|`. The first stage is always [`Stage::Spansets`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The stages, in order; never empty.
    pub stages: Vec<Stage>,
}

/// One stage of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Spanset filters combined with spanset operators.
    Spansets(SpansetExpr),
    /// `count() > 2`, `avg(duration) > 1s`.
    ScalarFilter(ScalarFilter),
    /// `by(resource.service.name)`.
    GroupBy(Vec<FieldExpr>),
    /// `select(span.http.method, .foo)`.
    Select(Vec<FieldExpr>),
    /// `coalesce()`.
    Coalesce,
}

/// Spansets and the operators between them.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ … }`.
    Filter(SpansetFilter),
    /// `lhs op rhs`.
    Binary {
        /// The operator.
        op: SpansetOp,
        /// Left operand.
        lhs: Box<SpansetExpr>,
        /// Right operand.
        rhs: Box<SpansetExpr>,
    },
    /// A parenthesised pipeline of more than one stage, e.g. `({ … } | count() > 1)`.
    Pipeline(Box<Pipeline>),
}

/// `{ expr }`; `{}` has no expression and selects every span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetFilter {
    /// The condition each span must meet; `None` for `{}`.
    pub expr: Option<FieldExpr>,
}

/// Operators between spansets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpansetOp {
    /// `&&`: both sides match in the trace.
    And,
    /// `||`: either side matches.
    Or,
    /// `>`: right-hand spans that are children of left-hand spans.
    Child,
    /// `>>`: descendants.
    Descendant,
    /// `<`: parents.
    Parent,
    /// `<<`: ancestors.
    Ancestor,
    /// `~`: siblings.
    Sibling,
    /// `!>`: right-hand spans that are not children of left-hand spans.
    NotChild,
    /// `!>>`.
    NotDescendant,
    /// `!<`.
    NotParent,
    /// `!<<`.
    NotAncestor,
    /// `!~`.
    NotSibling,
    /// `&>`: both sides of the child relation.
    UnionChild,
    /// `&>>`.
    UnionDescendant,
    /// `&<`.
    UnionParent,
    /// `&<<`.
    UnionAncestor,
    /// `&~`.
    UnionSibling,
}

impl SpansetOp {
    /// The operator as written in TraceQL.
    pub fn as_str(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Or => "||",
            SpansetOp::Child => ">",
            SpansetOp::Descendant => ">>",
            SpansetOp::Parent => "<",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        }
    }

    /// Binding strength: `||` < `&&` < structural operators. All are left-associative.
    pub fn precedence(self) -> u8 {
        match self {
            SpansetOp::Or => 1,
            SpansetOp::And => 2,
            _ => 3,
        }
    }

    /// Whether this relates spans by the trace's tree (`>`, `!>>`, `&~`, …).
    pub fn is_structural(self) -> bool {
        !matches!(self, SpansetOp::And | SpansetOp::Or)
    }
}

/// An expression inside `{ … }`, or an argument of `avg()`, `by()`, `select()`, ….
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    /// A literal.
    Static(Static),
    /// `span.x`, `resource.x`, `.x`, ….
    Attribute(Attribute),
    /// `name`, `duration`, `span:id`, ….
    Intrinsic(Intrinsic),
    /// `!expr`, `-expr`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<FieldExpr>,
    },
    /// `lhs op rhs`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<FieldExpr>,
        /// Right operand.
        rhs: Box<FieldExpr>,
    },
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    /// `"text"` or `` `raw text` ``.
    String(String),
    /// `42` (non-negative as written; `-42` is a [`UnaryOp::Neg`]).
    Int(i64),
    /// `1.5`, `.9`, `1e-3`.
    Float(f64),
    /// `100ms`, `1.5s`, `1h30m`.
    Duration(Duration),
    /// `true`, `false`.
    Bool(bool),
    /// `nil`: the attribute is absent.
    Nil,
    /// `ok`, `error`, `unset`.
    Status(Status),
    /// `server`, `client`, ….
    Kind(Kind),
}

/// A span's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `error`.
    Error,
    /// `ok`.
    Ok,
    /// `unset`.
    Unset,
}

impl Status {
    /// The keyword as written in TraceQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Error => "error",
            Status::Ok => "ok",
            Status::Unset => "unset",
        }
    }
}

/// A span's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `unspecified`.
    Unspecified,
    /// `internal`.
    Internal,
    /// `server`.
    Server,
    /// `client`.
    Client,
    /// `producer`.
    Producer,
    /// `consumer`.
    Consumer,
}

impl Kind {
    /// The keyword as written in TraceQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unspecified => "unspecified",
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }
}

/// Where an attribute lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeScope {
    /// `.x`: span attributes, then resource attributes.
    Unscoped,
    /// `span.x`.
    Span,
    /// `resource.x`.
    Resource,
    /// `event.x`.
    Event,
    /// `link.x`.
    Link,
    /// `instrumentation.x`.
    Instrumentation,
}

impl AttributeScope {
    /// The prefix before the name: `span.`, `.`, ….
    pub fn prefix(self) -> &'static str {
        match self {
            AttributeScope::Unscoped => ".",
            AttributeScope::Span => "span.",
            AttributeScope::Resource => "resource.",
            AttributeScope::Event => "event.",
            AttributeScope::Link => "link.",
            AttributeScope::Instrumentation => "instrumentation.",
        }
    }
}

/// A user-defined attribute: a scope and a name (which may contain dots).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attribute {
    /// Where to look.
    pub scope: AttributeScope,
    /// The attribute key, e.g. `http.status_code`.
    pub name: String,
}

impl Attribute {
    /// An attribute of `scope` named `name`.
    pub fn new(scope: AttributeScope, name: impl Into<String>) -> Self {
        Self { scope, name: name.into() }
    }
}

/// Fields every span (or trace, event, link) has, whatever its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intrinsic {
    /// `name`, `span:name`.
    Name,
    /// `status`, `span:status`.
    Status,
    /// `statusMessage`, `span:statusMessage`.
    StatusMessage,
    /// `kind`, `span:kind`.
    Kind,
    /// `duration`, `span:duration`.
    Duration,
    /// `span:id`.
    SpanId,
    /// `span:parentID`.
    ParentId,
    /// `span:childCount`.
    ChildCount,
    /// `rootServiceName`, `trace:rootService`.
    RootServiceName,
    /// `rootName`, `trace:rootName`.
    RootName,
    /// `traceDuration`, `trace:duration`.
    TraceDuration,
    /// `trace:id`.
    TraceId,
    /// `event:name`.
    EventName,
    /// `event:timeSinceStart`.
    EventTimeSinceStart,
    /// `link:traceID`.
    LinkTraceId,
    /// `link:spanID`.
    LinkSpanId,
    /// `instrumentation:name`.
    InstrumentationName,
    /// `instrumentation:version`.
    InstrumentationVersion,
}

impl Intrinsic {
    /// The canonical spelling, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::Duration => "duration",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::RootServiceName => "rootServiceName",
            Intrinsic::RootName => "rootName",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
        }
    }

    /// The intrinsic a bare word names (`name`, `rootServiceName`, …).
    pub fn from_bare(word: &str) -> Option<Self> {
        Some(match word {
            "name" => Intrinsic::Name,
            "status" => Intrinsic::Status,
            "statusMessage" => Intrinsic::StatusMessage,
            "kind" => Intrinsic::Kind,
            "duration" => Intrinsic::Duration,
            "rootServiceName" => Intrinsic::RootServiceName,
            "rootName" => Intrinsic::RootName,
            "traceDuration" => Intrinsic::TraceDuration,
            _ => return None,
        })
    }

    /// The intrinsic `scope:name` names (`span:name`, `trace:rootService`, …).
    pub fn from_scoped(scope: &str, name: &str) -> Option<Self> {
        Some(match (scope, name) {
            ("span", "name") => Intrinsic::Name,
            ("span", "status") => Intrinsic::Status,
            ("span", "statusMessage") => Intrinsic::StatusMessage,
            ("span", "kind") => Intrinsic::Kind,
            ("span", "duration") => Intrinsic::Duration,
            ("span", "id") => Intrinsic::SpanId,
            ("span", "parentID") => Intrinsic::ParentId,
            ("span", "childCount") => Intrinsic::ChildCount,
            ("trace", "rootService") => Intrinsic::RootServiceName,
            ("trace", "rootName") => Intrinsic::RootName,
            ("trace", "duration") => Intrinsic::TraceDuration,
            ("trace", "id") => Intrinsic::TraceId,
            ("event", "name") => Intrinsic::EventName,
            ("event", "timeSinceStart") => Intrinsic::EventTimeSinceStart,
            ("link", "traceID") => Intrinsic::LinkTraceId,
            ("link", "spanID") => Intrinsic::LinkSpanId,
            ("instrumentation", "name") => Intrinsic::InstrumentationName,
            ("instrumentation", "version") => Intrinsic::InstrumentationVersion,
            _ => return None,
        })
    }
}

/// Prefix operators inside filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `!`.
    Not,
    /// `-`.
    Neg,
}

impl UnaryOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            UnaryOp::Not => "!",
            UnaryOp::Neg => "-",
        }
    }
}

/// Binding strength of prefix operators, between `* / %` and `^`.
pub(crate) const UNARY_PRECEDENCE: u8 = 6;

/// Infix operators inside filters (and, for the arithmetic and comparison ones, in scalar
/// filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `||`.
    Or,
    /// `&&`.
    And,
    /// `=`.
    Eq,
    /// `!=`.
    Neq,
    /// `<`.
    Lt,
    /// `<=`.
    Lte,
    /// `>`.
    Gt,
    /// `>=`.
    Gte,
    /// `=~`, a fully anchored regex match.
    Regex,
    /// `!~`.
    NotRegex,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Mod,
    /// `^`.
    Pow,
}

impl BinaryOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "=",
            BinaryOp::Neq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Lte => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Gte => ">=",
            BinaryOp::Regex => "=~",
            BinaryOp::NotRegex => "!~",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
        }
    }

    /// Binding strength: `||` 1, `&&` 2, comparisons 3, `+ -` 4, `* / %` 5, prefix
    /// operators 6, `^` 7.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Neq
            | BinaryOp::Lt
            | BinaryOp::Lte
            | BinaryOp::Gt
            | BinaryOp::Gte
            | BinaryOp::Regex
            | BinaryOp::NotRegex => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
            BinaryOp::Pow => 7,
        }
    }

    /// `^` groups to the right; everything else to the left.
    pub fn is_right_associative(self) -> bool {
        self == BinaryOp::Pow
    }

    /// `= != < <= > >= =~ !~`.
    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }

    /// `+ - * / % ^`.
    pub fn is_arithmetic(self) -> bool {
        self.precedence() >= 4
    }

    /// `&&`, `||`.
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

/// A pipeline filter on a per-spanset number: `count() > 2`, `avg(duration) > 2 * 100ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    /// A comparison operator (`= != < <= > >=`).
    pub op: BinaryOp,
    /// Left side.
    pub lhs: ScalarExpr,
    /// Right side.
    pub rhs: ScalarExpr,
}

/// A number computed per spanset.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    /// A numeric or duration literal.
    Static(Static),
    /// `count()`, `avg(duration)`, ….
    Aggregate(Aggregate),
    /// `-expr`.
    Neg(Box<ScalarExpr>),
    /// An arithmetic operator (`+ - * / % ^`).
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<ScalarExpr>,
        /// Right operand.
        rhs: Box<ScalarExpr>,
    },
}

impl ScalarExpr {
    /// Whether an aggregate appears in this expression.
    pub fn has_aggregate(&self) -> bool {
        match self {
            ScalarExpr::Static(_) => false,
            ScalarExpr::Aggregate(_) => true,
            ScalarExpr::Neg(e) => e.has_aggregate(),
            ScalarExpr::Binary { lhs, rhs, .. } => lhs.has_aggregate() || rhs.has_aggregate(),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            ScalarExpr::Static(_) | ScalarExpr::Aggregate(_) => u8::MAX,
            ScalarExpr::Neg(_) => UNARY_PRECEDENCE,
            ScalarExpr::Binary { op, .. } => op.precedence(),
        }
    }
}

/// An aggregate over the spans of a spanset.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    /// `count()`.
    Count,
    /// `avg(expr)`.
    Avg(FieldExpr),
    /// `min(expr)`.
    Min(FieldExpr),
    /// `max(expr)`.
    Max(FieldExpr),
    /// `sum(expr)`.
    Sum(FieldExpr),
}

impl Aggregate {
    /// The function's name.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Avg(_) => "avg",
            Aggregate::Min(_) => "min",
            Aggregate::Max(_) => "max",
            Aggregate::Sum(_) => "sum",
        }
    }

    /// The aggregated expression; `None` for `count()`.
    pub fn argument(&self) -> Option<&FieldExpr> {
        match self {
            Aggregate::Count => None,
            Aggregate::Avg(e) | Aggregate::Min(e) | Aggregate::Max(e) | Aggregate::Sum(e) => Some(e),
        }
    }
}

/// `| rate() by (resource.service.name)`, and an optional second stage (`| topk(5)`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsStage {
    /// The function.
    pub function: MetricsFunction,
    /// `by (…)`; empty when absent.
    pub by: Vec<FieldExpr>,
    /// `| topk(n)` or `| bottomk(n)`.
    pub second_stage: Option<SecondStage>,
}

/// TraceQL metrics functions.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    /// `rate()`.
    Rate,
    /// `count_over_time()`.
    CountOverTime,
    /// `min_over_time(expr)`.
    MinOverTime(FieldExpr),
    /// `max_over_time(expr)`.
    MaxOverTime(FieldExpr),
    /// `avg_over_time(expr)`.
    AvgOverTime(FieldExpr),
    /// `sum_over_time(expr)`.
    SumOverTime(FieldExpr),
    /// `quantile_over_time(expr, q…)`, each quantile in [0, 1].
    QuantileOverTime {
        /// The measured expression, usually `duration`.
        expr: FieldExpr,
        /// At least one quantile.
        quantiles: Vec<f64>,
    },
    /// `histogram_over_time(expr)`.
    HistogramOverTime(FieldExpr),
}

impl MetricsFunction {
    /// The function's name.
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFunction::Rate => "rate",
            MetricsFunction::CountOverTime => "count_over_time",
            MetricsFunction::MinOverTime(_) => "min_over_time",
            MetricsFunction::MaxOverTime(_) => "max_over_time",
            MetricsFunction::AvgOverTime(_) => "avg_over_time",
            MetricsFunction::SumOverTime(_) => "sum_over_time",
            MetricsFunction::QuantileOverTime { .. } => "quantile_over_time",
            MetricsFunction::HistogramOverTime(_) => "histogram_over_time",
        }
    }

    /// The measured expression; `None` for `rate()` and `count_over_time()`.
    pub fn argument(&self) -> Option<&FieldExpr> {
        match self {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => None,
            MetricsFunction::MinOverTime(e)
            | MetricsFunction::MaxOverTime(e)
            | MetricsFunction::AvgOverTime(e)
            | MetricsFunction::SumOverTime(e)
            | MetricsFunction::HistogramOverTime(e)
            | MetricsFunction::QuantileOverTime { expr: e, .. } => Some(e),
        }
    }
}

/// The stage after a metrics function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondStage {
    /// `topk(n)`.
    TopK(u32),
    /// `bottomk(n)`.
    BottomK(u32),
}

/// `name=value` inside `with (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// The hint's name, e.g. `sample`.
    pub name: String,
    /// Its value.
    pub value: Static,
}

/// A leaf condition `field op literal`, the shape a span fetcher can push down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition<'a> {
    /// The attribute or intrinsic (an [`FieldExpr::Attribute`] or [`FieldExpr::Intrinsic`]).
    pub field: &'a FieldExpr,
    /// The comparison, oriented as `field op value` (`1 < .a` becomes `.a > 1`).
    pub op: BinaryOp,
    /// The literal.
    pub value: &'a Static,
}

// ---------------------------------------------------------------------------------------
// Accessors

impl Query {
    /// The filter, when the query is exactly one spanset filter (`{ … }`) with no pipeline
    /// stage and no metrics: the common search case.
    pub fn as_single_filter(&self) -> Option<&SpansetFilter> {
        match (self.pipeline.stages.as_slice(), &self.metrics) {
            ([Stage::Spansets(SpansetExpr::Filter(f))], None) => Some(f),
            _ => None,
        }
    }

    /// Whether this is a metrics query (`… | rate()`).
    pub fn is_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// The value of hint `name`, if given.
    pub fn hint(&self, name: &str) -> Option<&Static> {
        self.hints.iter().rev().find(|h| h.name == name).map(|h| &h.value)
    }

    /// Every spanset filter of the query, in the order written.
    pub fn filters(&self) -> Vec<&SpansetFilter> {
        let mut out = Vec::new();
        self.pipeline.collect_filters(&mut out);
        out
    }

    /// Calls `f` on every field expression node of the query (filters, aggregates, `by`,
    /// `select`, metrics arguments), parents before children.
    pub fn walk_fields<'a>(&'a self, f: &mut dyn FnMut(&'a FieldExpr)) {
        self.pipeline.walk_fields(f);
        if let Some(m) = &self.metrics {
            if let Some(e) = m.function.argument() {
                e.walk(f);
            }
            for e in &m.by {
                e.walk(f);
            }
        }
    }

    /// The attributes the query reads, each once, in the order first written.
    pub fn attributes(&self) -> Vec<&Attribute> {
        let mut out: Vec<&Attribute> = Vec::new();
        self.walk_fields(&mut |e| {
            if let FieldExpr::Attribute(a) = e
                && !out.contains(&a)
            {
                out.push(a);
            }
        });
        out
    }

    /// The intrinsics the query reads, each once, in the order first written.
    pub fn intrinsics(&self) -> Vec<Intrinsic> {
        let mut out = Vec::new();
        self.walk_fields(&mut |e| {
            if let FieldExpr::Intrinsic(i) = e
                && !out.contains(i)
            {
                out.push(*i);
            }
        });
        out
    }

    /// Whether the query uses a structural operator (`>`, `>>`, `~`, …) anywhere.
    pub fn has_structural_operator(&self) -> bool {
        self.pipeline.has_structural_operator()
    }
}

impl Pipeline {
    fn collect_filters<'a>(&'a self, out: &mut Vec<&'a SpansetFilter>) {
        for stage in &self.stages {
            if let Stage::Spansets(e) = stage {
                e.collect_filters(out);
            }
        }
    }

    fn walk_fields<'a>(&'a self, f: &mut dyn FnMut(&'a FieldExpr)) {
        for stage in &self.stages {
            match stage {
                Stage::Spansets(e) => e.walk_fields(f),
                Stage::ScalarFilter(s) => {
                    s.lhs.walk_fields(f);
                    s.rhs.walk_fields(f);
                }
                Stage::GroupBy(es) | Stage::Select(es) => es.iter().for_each(|e| e.walk(f)),
                Stage::Coalesce => {}
            }
        }
    }

    fn has_structural_operator(&self) -> bool {
        self.stages.iter().any(|s| matches!(s, Stage::Spansets(e) if e.has_structural_operator()))
    }
}

impl SpansetExpr {
    /// Every spanset filter in this expression, left to right.
    pub fn filters(&self) -> Vec<&SpansetFilter> {
        let mut out = Vec::new();
        self.collect_filters(&mut out);
        out
    }

    fn collect_filters<'a>(&'a self, out: &mut Vec<&'a SpansetFilter>) {
        match self {
            SpansetExpr::Filter(f) => out.push(f),
            SpansetExpr::Binary { lhs, rhs, .. } => {
                lhs.collect_filters(out);
                rhs.collect_filters(out);
            }
            SpansetExpr::Pipeline(p) => p.collect_filters(out),
        }
    }

    fn walk_fields<'a>(&'a self, f: &mut dyn FnMut(&'a FieldExpr)) {
        match self {
            SpansetExpr::Filter(filter) => {
                if let Some(e) = &filter.expr {
                    e.walk(f);
                }
            }
            SpansetExpr::Binary { lhs, rhs, .. } => {
                lhs.walk_fields(f);
                rhs.walk_fields(f);
            }
            SpansetExpr::Pipeline(p) => p.walk_fields(f),
        }
    }

    fn has_structural_operator(&self) -> bool {
        match self {
            SpansetExpr::Filter(_) => false,
            SpansetExpr::Binary { op, lhs, rhs } => {
                op.is_structural() || lhs.has_structural_operator() || rhs.has_structural_operator()
            }
            SpansetExpr::Pipeline(p) => p.has_structural_operator(),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            SpansetExpr::Binary { op, .. } => op.precedence(),
            SpansetExpr::Filter(_) | SpansetExpr::Pipeline(_) => u8::MAX,
        }
    }
}

impl SpansetFilter {
    /// Whether the filter keeps every span: `{}` or `{ true }`.
    pub fn matches_all(&self) -> bool {
        matches!(self.expr, None | Some(FieldExpr::Static(Static::Bool(true))))
    }

    /// The operands of the top-level `&&` chain (the whole expression when it is no `&&`);
    /// empty for `{}`. Every one must hold for a span to match.
    pub fn conjuncts(&self) -> Vec<&FieldExpr> {
        self.expr.as_ref().map_or_else(Vec::new, FieldExpr::conjuncts)
    }

    /// The conjuncts that are plain `field op literal` conditions.
    pub fn conditions(&self) -> Vec<Condition<'_>> {
        self.conjuncts().into_iter().filter_map(FieldExpr::as_condition).collect()
    }
}

impl FieldExpr {
    /// Calls `f` on this node and every node below it, parents first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a FieldExpr)) {
        f(self);
        match self {
            FieldExpr::Unary { expr, .. } => expr.walk(f),
            FieldExpr::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            FieldExpr::Static(_) | FieldExpr::Attribute(_) | FieldExpr::Intrinsic(_) => {}
        }
    }

    /// The operands of the top-level `&&` chain, left to right.
    pub fn conjuncts(&self) -> Vec<&FieldExpr> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                FieldExpr::Binary { op: BinaryOp::And, lhs, rhs } => {
                    stack.push(rhs);
                    stack.push(lhs);
                }
                other => out.push(other),
            }
        }
        out
    }

    /// This expression as `field op literal`, when it has that shape (either way round).
    pub fn as_condition(&self) -> Option<Condition<'_>> {
        let FieldExpr::Binary { op, lhs, rhs } = self else { return None };
        if !op.is_comparison() {
            return None;
        }
        let is_field = |e: &FieldExpr| matches!(e, FieldExpr::Attribute(_) | FieldExpr::Intrinsic(_));
        match (&**lhs, &**rhs) {
            (field, FieldExpr::Static(value)) if is_field(field) => Some(Condition { field, op: *op, value }),
            (FieldExpr::Static(value), field)
                if is_field(field) && !matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) =>
            {
                let flipped = match op {
                    BinaryOp::Lt => BinaryOp::Gt,
                    BinaryOp::Lte => BinaryOp::Gte,
                    BinaryOp::Gt => BinaryOp::Lt,
                    BinaryOp::Gte => BinaryOp::Lte,
                    other => *other,
                };
                Some(Condition { field, op: flipped, value })
            }
            _ => None,
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            FieldExpr::Unary { .. } => UNARY_PRECEDENCE,
            FieldExpr::Binary { op, .. } => op.precedence(),
            FieldExpr::Static(_) | FieldExpr::Attribute(_) | FieldExpr::Intrinsic(_) => u8::MAX,
        }
    }
}

impl ScalarExpr {
    fn walk_fields<'a>(&'a self, f: &mut dyn FnMut(&'a FieldExpr)) {
        match self {
            ScalarExpr::Static(_) => {}
            ScalarExpr::Aggregate(a) => {
                if let Some(e) = a.argument() {
                    e.walk(f);
                }
            }
            ScalarExpr::Neg(e) => e.walk_fields(f),
            ScalarExpr::Binary { lhs, rhs, .. } => {
                lhs.walk_fields(f);
                rhs.walk_fields(f);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Printing

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pipeline)?;
        if let Some(m) = &self.metrics {
            write!(f, " | {m}")?;
        }
        if !self.hints.is_empty() {
            f.write_str(" with (")?;
            for (i, h) in self.hints.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}={}", h.name, h.value)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl Display for Pipeline {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{stage}")?;
        }
        Ok(())
    }
}

fn write_list(f: &mut Formatter<'_>, items: &[FieldExpr]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Spansets(e) => write!(f, "{e}"),
            Stage::ScalarFilter(s) => write!(f, "{s}"),
            Stage::GroupBy(es) => {
                f.write_str("by(")?;
                write_list(f, es)?;
                f.write_str(")")
            }
            Stage::Select(es) => {
                f.write_str("select(")?;
                write_list(f, es)?;
                f.write_str(")")
            }
            Stage::Coalesce => f.write_str("coalesce()"),
        }
    }
}

/// Writes `child`, in parentheses when its precedence is too low for its place.
fn write_operand<T: Display>(f: &mut Formatter<'_>, child: &T, parens: bool) -> fmt::Result {
    if parens { write!(f, "({child})") } else { write!(f, "{child}") }
}

impl Display for SpansetExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(filter) => write!(f, "{filter}"),
            SpansetExpr::Binary { op, lhs, rhs } => {
                let p = op.precedence();
                write_operand(f, &**lhs, lhs.precedence() < p)?;
                write!(f, " {} ", op.as_str())?;
                write_operand(f, &**rhs, rhs.precedence() <= p)
            }
            SpansetExpr::Pipeline(p) => write!(f, "({p})"),
        }
    }
}

impl Display for SpansetFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.expr {
            None => f.write_str("{ }"),
            Some(e) => write!(f, "{{ {e} }}"),
        }
    }
}

impl Display for FieldExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FieldExpr::Static(s) => write!(f, "{s}"),
            FieldExpr::Attribute(a) => write!(f, "{a}"),
            FieldExpr::Intrinsic(i) => f.write_str(i.as_str()),
            FieldExpr::Unary { op, expr } => {
                f.write_str(op.as_str())?;
                write_operand(f, &**expr, expr.precedence() < UNARY_PRECEDENCE)
            }
            FieldExpr::Binary { op, lhs, rhs } => {
                let p = op.precedence();
                let (lhs_parens, rhs_parens) = if op.is_right_associative() {
                    (lhs.precedence() <= p, rhs.precedence() < p)
                } else {
                    (lhs.precedence() < p, rhs.precedence() <= p)
                };
                write_operand(f, &**lhs, lhs_parens)?;
                write!(f, " {} ", op.as_str())?;
                write_operand(f, &**rhs, rhs_parens)
            }
        }
    }
}

impl Display for ScalarFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.lhs, self.op.as_str(), self.rhs)
    }
}

impl Display for ScalarExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Static(s) => write!(f, "{s}"),
            ScalarExpr::Aggregate(a) => write!(f, "{a}"),
            ScalarExpr::Neg(e) => {
                f.write_str("-")?;
                write_operand(f, &**e, e.precedence() < UNARY_PRECEDENCE)
            }
            ScalarExpr::Binary { op, lhs, rhs } => {
                let p = op.precedence();
                let (lhs_parens, rhs_parens) = if op.is_right_associative() {
                    (lhs.precedence() <= p, rhs.precedence() < p)
                } else {
                    (lhs.precedence() < p, rhs.precedence() <= p)
                };
                write_operand(f, &**lhs, lhs_parens)?;
                write!(f, " {} ", op.as_str())?;
                write_operand(f, &**rhs, rhs_parens)
            }
        }
    }
}

impl Display for Aggregate {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.argument() {
            None => write!(f, "{}()", self.name()),
            Some(e) => write!(f, "{}({e})", self.name()),
        }
    }
}

impl Display for MetricsStage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.function)?;
        if !self.by.is_empty() {
            f.write_str(" by (")?;
            write_list(f, &self.by)?;
            f.write_str(")")?;
        }
        match self.second_stage {
            Some(SecondStage::TopK(n)) => write!(f, " | topk({n})"),
            Some(SecondStage::BottomK(n)) => write!(f, " | bottomk({n})"),
            None => Ok(()),
        }
    }
}

impl Display for MetricsFunction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name())?;
        if let Some(e) = self.argument() {
            write!(f, "{e}")?;
        }
        if let MetricsFunction::QuantileOverTime { quantiles, .. } = self {
            for q in quantiles {
                write!(f, ", {}", Static::Float(*q))?;
            }
        }
        f.write_str(")")
    }
}

impl Display for Static {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Static::String(s) => write_quoted(f, s),
            Static::Int(i) => write!(f, "{i}"),
            // `{:?}` always keeps a `.` or an exponent (`1.0`, `1e-7`), so it reads back as a float.
            Static::Float(x) => write!(f, "{x:?}"),
            Static::Duration(d) => write_duration(f, *d),
            Static::Bool(b) => write!(f, "{b}"),
            Static::Nil => f.write_str("nil"),
            Static::Status(s) => f.write_str(s.as_str()),
            Static::Kind(k) => f.write_str(k.as_str()),
        }
    }
}

/// Writes `d` in the largest unit that holds it exactly: `1500ms`, `2m`, `90m`, `0s`.
fn write_duration(f: &mut Formatter<'_>, d: Duration) -> fmt::Result {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return f.write_str("0s");
    }
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (size, unit) in UNITS {
        if nanos.is_multiple_of(size) {
            return write!(f, "{}{unit}", nanos / size);
        }
    }
    unreachable!("every whole number of nanoseconds is a multiple of 1ns")
}

/// Writes `s` as a double-quoted TraceQL string.
fn write_quoted(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Whether `c` may appear in an attribute name written without quotes.
pub(crate) fn is_attribute_char(c: char) -> bool {
    !c.is_whitespace()
        && !c.is_control()
        && !matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"' | '`' | '\\'
        )
}

impl Display for Attribute {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.scope.prefix())?;
        let starts_like_number =
            self.scope == AttributeScope::Unscoped && self.name.starts_with(|c: char| c.is_ascii_digit());
        if self.name.is_empty() || starts_like_number || !self.name.chars().all(is_attribute_char) {
            write_quoted(f, &self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;

    fn int(i: i64) -> Box<FieldExpr> {
        Box::new(FieldExpr::Static(Static::Int(i)))
    }

    fn attr(scope: AttributeScope, name: &str) -> FieldExpr {
        FieldExpr::Attribute(Attribute::new(scope, name))
    }

    fn query(input: &str) -> Query {
        parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    #[test]
    fn display_duration_uses_largest_exact_unit() {
        let show = |d: Duration| Static::Duration(d).to_string();
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(show(Duration::from_secs(7200)), "2h");
        assert_eq!(show(Duration::from_nanos(1_000_000_001)), "1000000001ns");
        assert_eq!(show(Duration::from_micros(10)), "10us");
        assert_eq!(show(Duration::ZERO), "0s");
    }

    #[test]
    fn display_string_escapes_quotes_backslashes_and_controls() {
        assert_eq!(Static::String("a\"b\\c\nd\u{1}é".into()).to_string(), r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn display_float_always_reads_back_as_float() {
        assert_eq!(Static::Float(1.0).to_string(), "1.0");
        assert_eq!(Static::Float(0.9).to_string(), "0.9");
        assert_eq!(Static::Float(1e-7).to_string(), "1e-7");
    }

    #[test]
    fn display_attribute_quotes_names_the_lexer_would_split() {
        assert_eq!(attr(AttributeScope::Span, "http.status_code").to_string(), "span.http.status_code");
        assert_eq!(attr(AttributeScope::Span, "name with spaces").to_string(), r#"span."name with spaces""#);
        assert_eq!(attr(AttributeScope::Unscoped, "5xx").to_string(), r#"."5xx""#);
        assert_eq!(attr(AttributeScope::Resource, "").to_string(), r#"resource."""#);
        assert_eq!(attr(AttributeScope::Unscoped, "a=b").to_string(), r#"."a=b""#);
        assert_eq!(attr(AttributeScope::Event, "x-y/z").to_string(), "event.x-y/z");
    }

    #[test]
    fn display_adds_parentheses_only_where_precedence_needs_them() {
        let sub = |l, r| Box::new(FieldExpr::Binary { op: BinaryOp::Sub, lhs: l, rhs: r });
        assert_eq!(sub(int(1), sub(int(2), int(3))).to_string(), "1 - (2 - 3)");
        assert_eq!(sub(sub(int(1), int(2)), int(3)).to_string(), "1 - 2 - 3");
        let pow = |l, r| Box::new(FieldExpr::Binary { op: BinaryOp::Pow, lhs: l, rhs: r });
        assert_eq!(pow(pow(int(2), int(3)), int(4)).to_string(), "(2 ^ 3) ^ 4");
        assert_eq!(pow(int(2), pow(int(3), int(4))).to_string(), "2 ^ 3 ^ 4");
        let neg = FieldExpr::Unary { op: UnaryOp::Neg, expr: sub(int(1), int(2)) };
        assert_eq!(neg.to_string(), "-(1 - 2)");
    }

    #[test]
    fn display_prints_canonical_traceql() {
        let cases = [
            ("{}", "{ }"),
            ("{span:name=\"x\"}", "{ name = \"x\" }"),
            ("{ trace:rootService = `a\"b` }", r#"{ rootServiceName = "a\"b" }"#),
            ("{.a}|count()>1|by(.b,.c)", "{ .a } | count() > 1 | by(.b, .c)"),
            ("{ }|rate()by(.x)with(sample=true)", "{ } | rate() by (.x) with (sample=true)"),
            ("(({.a}&&{.b}))>{.c}", "({ .a } && { .b }) > { .c }"),
            ("{ duration > 1.5s }", "{ duration > 1500ms }"),
        ];
        for (input, printed) in cases {
            assert_eq!(query(input).to_string(), printed, "{input:?}");
        }
    }

    #[test]
    fn as_single_filter_is_none_for_pipelines_and_structural_queries() {
        assert!(query("{ .a = 1 }").as_single_filter().is_some());
        assert!(query("{ .a = 1 } with (most_recent=true)").as_single_filter().is_some());
        assert!(query("{ .a = 1 } | count() > 1").as_single_filter().is_none());
        assert!(query("{ .a } > { .b }").as_single_filter().is_none());
        assert!(query("{ .a } | rate()").as_single_filter().is_none());
    }

    #[test]
    fn attributes_lists_each_attribute_once_in_order() {
        let q = query(
            "{ span.a = 1 && .b = 2 } > { span.a = 3 } | avg(span.c) > 1 | select(resource.d) | by(.b) | rate() by (.e)",
        );
        let names: Vec<String> = q.attributes().iter().map(|a| a.to_string()).collect();
        assert_eq!(names, ["span.a", ".b", "span.c", "resource.d", ".e"]);
    }

    #[test]
    fn intrinsics_lists_each_intrinsic_once_in_order() {
        let q = query("{ duration > 1s && status = error } | avg(duration) > 2s | select(name)");
        assert_eq!(q.intrinsics(), [Intrinsic::Duration, Intrinsic::Status, Intrinsic::Name]);
    }

    #[test]
    fn conditions_orient_literal_on_the_right_and_skip_complex_conjuncts() {
        let q = query("{ .a = 1 && 5 < duration && (.b = 1 || .c = 2) && .d + 1 > 2 && name =~ \"x.*\" }");
        let filter = q.as_single_filter().expect("single filter");
        assert_eq!(filter.conjuncts().len(), 5);
        let conditions = filter.conditions();
        assert_eq!(conditions.len(), 3);
        assert_eq!(conditions[0].field, &attr(AttributeScope::Unscoped, "a"));
        assert_eq!(
            (conditions[1].field, conditions[1].op),
            (&FieldExpr::Intrinsic(Intrinsic::Duration), BinaryOp::Gt)
        );
        assert_eq!(conditions[1].value, &Static::Int(5));
        assert_eq!(conditions[2].op, BinaryOp::Regex);
    }

    #[test]
    fn filters_and_structural_flags_cover_nested_pipelines() {
        let q = query("({ .a } | count() > 1) ~ { .b } | { .c }");
        assert_eq!(q.filters().len(), 3);
        assert!(q.has_structural_operator());
        assert!(!query("{ .a } && { .b } | { .c }").has_structural_operator());
    }

    #[test]
    fn walk_fields_visits_parents_before_children() {
        let q = query("{ .a = 1 }");
        let mut seen = Vec::new();
        q.walk_fields(&mut |e| seen.push(e.to_string()));
        assert_eq!(seen, [".a = 1", ".a", "1"]);
    }

    #[test]
    fn compile_regex_is_fully_anchored() {
        let re = crate::query::compile_regex("GET.*").expect("valid regex");
        assert!(re.is_match("GET /api"));
        assert!(!re.is_match("xGET /api"));
        let re = crate::query::compile_regex("a|b").expect("valid regex");
        assert!(re.is_match("b"));
        assert!(!re.is_match("ab"));
    }
}
