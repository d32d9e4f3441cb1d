//! The LogQL syntax tree.
//!
//! Regexes are kept as the text the user wrote; the parser has already checked that they
//! compile with the `regex` crate. Which anchoring applies is documented on each use: label
//! matchers and label filters match the whole value (`^(?:re)$`), line filters match anywhere
//! in the line. Every [`std::fmt::Display`] impl prints LogQL that parses back to an equal tree.

use std::time::Duration;

/// A parsed query: a log query returns lines, a metric query returns samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Log(LogQuery),
    Metric(MetricExpr),
}

impl Expr {
    pub fn is_log(&self) -> bool {
        matches!(self, Expr::Log(_))
    }

    pub fn is_metric(&self) -> bool {
        matches!(self, Expr::Metric(_))
    }

    pub fn as_log(&self) -> Option<&LogQuery> {
        match self {
            Expr::Log(query) => Some(query),
            Expr::Metric(_) => None,
        }
    }

    pub fn as_metric(&self) -> Option<&MetricExpr> {
        match self {
            Expr::Metric(expr) => Some(expr),
            Expr::Log(_) => None,
        }
    }

    /// Every stream selector in the query, left to right.
    pub fn selectors(&self) -> Vec<&Selector> {
        match self {
            Expr::Log(query) => vec![&query.selector],
            Expr::Metric(expr) => expr.log_ranges().into_iter().map(|range| &range.query.selector).collect(),
        }
    }
}

/// `{app="api"} |= "error" | json | level="error"`: streams, then a pipeline over their lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    pub selector: Selector,
    pub pipeline: Vec<Stage>,
}

impl LogQuery {
    /// The line filters of the pipeline, in order. Line filters before the first parser can
    /// run against raw lines (and against an index); later ones see formatted lines.
    pub fn line_filters(&self) -> impl Iterator<Item = &LineFilter> {
        self.pipeline.iter().filter_map(|stage| match stage {
            Stage::LineFilter(filter) => Some(filter),
            _ => None,
        })
    }

    /// Whether the pipeline only filters lines (no parser, label filter or formatting).
    pub fn is_filter_only(&self) -> bool {
        self.pipeline.iter().all(|stage| matches!(stage, Stage::LineFilter(_)))
    }
}

/// `{app="api", env=~"prod|dev"}`. The parser guarantees at least one matcher, and at least
/// one `=` or `=~` matcher that does not match the empty string.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }
}

/// `name op "value"`, in a stream selector or in `drop`/`keep`.
///
/// `=~` and `!~` match the whole label value: `env=~"prod"` is `^(?:prod)$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~`, anchored at both ends.
    Re,
    /// `!~`, anchored at both ends.
    Nre,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Neq => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        }
    }

    pub fn is_regex(self) -> bool {
        matches!(self, MatchOp::Re | MatchOp::Nre)
    }
}

/// One step of a log pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    LineFilter(LineFilter),
    Parser(Parser),
    LabelFilter(LabelFilter),
    /// `| line_format "{{.level}} {{.msg}}"`: a Go text/template, not checked by the parser.
    LineFormat(String),
    /// `| label_format dst=src, other="{{.x}}"`.
    LabelFormat(Vec<LabelFormat>),
    /// `| drop a, b="v"`: removes labels, those with a matcher only when it matches.
    Drop(Vec<LabelSelection>),
    /// `| keep a, b="v"`: keeps only these labels (stream labels included).
    Keep(Vec<LabelSelection>),
    /// `| decolorize`: strips ANSI color sequences from the line.
    Decolorize,
}

/// `|= "a" or "b"`: keeps (or, for the negative operators, drops) lines matching any value.
///
/// With a negative operator (`!=`, `!~`, `!>`) and several values the line is kept when it
/// matches none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFilter {
    pub op: LineFilterOp,
    /// At least one; more than one were written with `or`.
    pub values: Vec<LineFilterValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFilterOp {
    /// `|=`: contains the substring.
    Contains,
    /// `!=`: does not contain the substring.
    NotContains,
    /// `|~`: the regex matches somewhere in the line (not anchored).
    Regex,
    /// `!~`: the regex matches nowhere in the line.
    NotRegex,
    /// `|>`: the line matches the pattern (`<_>` matches anything).
    Pattern,
    /// `!>`: the line does not match the pattern.
    NotPattern,
}

impl LineFilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            LineFilterOp::Contains => "|=",
            LineFilterOp::NotContains => "!=",
            LineFilterOp::Regex => "|~",
            LineFilterOp::NotRegex => "!~",
            LineFilterOp::Pattern => "|>",
            LineFilterOp::NotPattern => "!>",
        }
    }

    pub fn is_negative(self) -> bool {
        matches!(self, LineFilterOp::NotContains | LineFilterOp::NotRegex | LineFilterOp::NotPattern)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFilterValue {
    /// A substring, a regex or a pattern, as the operator says.
    Text(String),
    /// `ip("10.0.0.0/8")`: the line holds an IP address in this address, range or CIDR; only
    /// with `|=` and `!=`. The address text is not checked by the parser.
    Ip(String),
}

/// A parser stage; extracted labels are added to the entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Parser {
    /// `| json` (every field) or `| json a="b.c", d` (only these).
    Json { params: Vec<ExtractParam> },
    /// `| logfmt --strict --keep-empty a="b", c`.
    Logfmt { strict: bool, keep_empty: bool, params: Vec<ExtractParam> },
    /// `| regexp "(?P<x>...)"`: unanchored; at least one named group.
    Regexp(String),
    /// `| pattern "<ip> - <_>"`: at least one named capture.
    Pattern(String),
    /// `| unpack`: the JSON written by Promtail's `pack` stage.
    Unpack,
}

/// `label="path"` or `label` (the path is the label name itself) in `json` and `logfmt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractParam {
    pub label: String,
    pub path: Option<String>,
}

/// A boolean expression over labels: `status >= 500 and level="error"`.
///
/// `and` binds tighter than `or`; `,`, whitespace and `and` all mean `and`.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    /// `level="error"`, `path=~"/api/.*"` (anchored at both ends). `__error__=""` keeps
    /// entries without a parse error.
    String(Matcher),
    /// `status >= 500`: the label is parsed as a float; entries where it is not get
    /// `__error__`.
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    /// `duration > 10s`: the label is parsed as a Go duration.
    Duration {
        name: String,
        op: CmpOp,
        value: Duration,
    },
    /// `size > 20KB`: the label is parsed as a byte size.
    Bytes {
        name: String,
        op: CmpOp,
        value: u64,
    },
    /// `addr = ip("10.0.0.0/8")` or `addr != ip(...)`.
    Ip {
        name: String,
        negated: bool,
        address: String,
    },
}

impl LabelFilter {
    /// Calls `visit` on every comparison (every node but `and`/`or`), left to right.
    pub fn for_each_comparison<'a>(&'a self, visit: &mut dyn FnMut(&'a LabelFilter)) {
        match self {
            LabelFilter::And(lhs, rhs) | LabelFilter::Or(lhs, rhs) => {
                lhs.for_each_comparison(visit);
                rhs.for_each_comparison(visit);
            }
            leaf => visit(leaf),
        }
    }
}

/// A numeric comparison in a label filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` (also written `=`).
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Neq => "!=",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
        }
    }
}

/// One operation of `label_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelFormat {
    /// `dst=src`: renames `src` to `dst`.
    Rename { dst: String, src: String },
    /// `dst="{{.x}}"`: sets `dst` to a Go text/template (not checked by the parser).
    Template { dst: String, template: String },
}

/// A label named in `drop` or `keep`, optionally only when its value matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSelection {
    Name(String),
    Matcher(Matcher),
}

/// An expression that yields samples.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    RangeAggregation(Box<RangeAggregation>),
    VectorAggregation(Box<VectorAggregation>),
    Binary(Box<BinaryExpr>),
    /// A number: a scalar.
    Literal(f64),
    /// `vector(1)`: one sample without labels at every step.
    Vector(f64),
    LabelReplace(Box<LabelReplace>),
}

impl MetricExpr {
    /// Whether this yields a scalar rather than a vector: number literals and arithmetic
    /// between them.
    pub fn is_scalar(&self) -> bool {
        match self {
            MetricExpr::Literal(_) => true,
            MetricExpr::Binary(binary) => binary.lhs.is_scalar() && binary.rhs.is_scalar(),
            _ => false,
        }
    }

    /// Every range over logs in the expression, left to right.
    pub fn log_ranges(&self) -> Vec<&LogRange> {
        let mut out = Vec::new();
        self.collect_log_ranges(&mut out);
        out
    }

    fn collect_log_ranges<'a>(&'a self, out: &mut Vec<&'a LogRange>) {
        match self {
            MetricExpr::RangeAggregation(agg) => out.push(&agg.range),
            MetricExpr::VectorAggregation(agg) => agg.expr.collect_log_ranges(out),
            MetricExpr::Binary(binary) => {
                binary.lhs.collect_log_ranges(out);
                binary.rhs.collect_log_ranges(out);
            }
            MetricExpr::LabelReplace(replace) => replace.expr.collect_log_ranges(out),
            MetricExpr::Literal(_) | MetricExpr::Vector(_) => {}
        }
    }

    /// How far back from an evaluation time the query reads: the largest range plus its
    /// offset. Zero for an expression without log ranges.
    pub fn max_lookback(&self) -> Duration {
        self.log_ranges().into_iter().map(|range| range.range + range.offset).max().unwrap_or_default()
    }
}

/// `count_over_time({app="api"} |= "error" [5m])`, `quantile_over_time(0.99, ... | unwrap x [1m]) by (path)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeAggregation {
    pub op: RangeOp,
    /// The quantile of `quantile_over_time`; `None` for every other operation.
    pub param: Option<f64>,
    pub range: LogRange,
    /// Only for operations where [`RangeOp::allows_grouping`].
    pub grouping: Option<Grouping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    Rate,
    RateCounter,
    CountOverTime,
    BytesRate,
    BytesOverTime,
    AbsentOverTime,
    SumOverTime,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
    FirstOverTime,
    LastOverTime,
}

impl RangeOp {
    pub const ALL: [RangeOp; 15] = [
        RangeOp::Rate,
        RangeOp::RateCounter,
        RangeOp::CountOverTime,
        RangeOp::BytesRate,
        RangeOp::BytesOverTime,
        RangeOp::AbsentOverTime,
        RangeOp::SumOverTime,
        RangeOp::AvgOverTime,
        RangeOp::MinOverTime,
        RangeOp::MaxOverTime,
        RangeOp::StddevOverTime,
        RangeOp::StdvarOverTime,
        RangeOp::QuantileOverTime,
        RangeOp::FirstOverTime,
        RangeOp::LastOverTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::AbsentOverTime => "absent_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
        }
    }

    pub fn from_name(name: &str) -> Option<RangeOp> {
        RangeOp::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether the range must end in `| unwrap label`. `rate` works either way: over lines
    /// it counts them, over unwrapped values it sums them, per second.
    pub fn unwrap_rule(self) -> UnwrapRule {
        match self {
            RangeOp::Rate => UnwrapRule::Optional,
            RangeOp::CountOverTime
            | RangeOp::BytesRate
            | RangeOp::BytesOverTime
            | RangeOp::AbsentOverTime => UnwrapRule::Forbidden,
            _ => UnwrapRule::Required,
        }
    }

    /// Whether `by (...)`/`without (...)` may follow; the others keep every label.
    pub fn allows_grouping(self) -> bool {
        matches!(
            self,
            RangeOp::AvgOverTime
                | RangeOp::MinOverTime
                | RangeOp::MaxOverTime
                | RangeOp::StddevOverTime
                | RangeOp::StdvarOverTime
                | RangeOp::QuantileOverTime
                | RangeOp::FirstOverTime
                | RangeOp::LastOverTime
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapRule {
    Required,
    Optional,
    Forbidden,
}

/// `{app="api"} | json | unwrap latency | __error__="" [5m] offset 1h`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRange {
    pub query: LogQuery,
    pub unwrap: Option<Unwrap>,
    /// Greater than zero.
    pub range: Duration,
    /// Zero when absent.
    pub offset: Duration,
}

/// `| unwrap latency`, `| unwrap duration(took)`, followed by label filters that run on the
/// unwrapped samples (typically `| __error__=""`).
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    pub label: String,
    pub conversion: UnwrapConversion,
    pub post_filters: Vec<LabelFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapConversion {
    /// The label is parsed as a float.
    None,
    /// `duration(x)`: a Go duration, as seconds.
    Duration,
    /// `duration_seconds(x)`: the same as `duration(x)`.
    DurationSeconds,
    /// `bytes(x)`: a byte size like `5 MB`, as bytes.
    Bytes,
}

impl UnwrapConversion {
    pub fn function_name(self) -> Option<&'static str> {
        match self {
            UnwrapConversion::None => None,
            UnwrapConversion::Duration => Some("duration"),
            UnwrapConversion::DurationSeconds => Some("duration_seconds"),
            UnwrapConversion::Bytes => Some("bytes"),
        }
    }
}

/// `by (a, b)` or `without (a)`; `by ()` aggregates everything into one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

/// `sum by (level) (...)`, `topk(5, ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorAggregation {
    pub op: VectorOp,
    /// `k` of `topk` and `bottomk` (at least 1); `None` for every other operation.
    pub param: Option<u64>,
    pub grouping: Option<Grouping>,
    pub expr: MetricExpr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Sort,
    SortDesc,
}

impl VectorOp {
    pub const ALL: [VectorOp; 11] = [
        VectorOp::Sum,
        VectorOp::Avg,
        VectorOp::Min,
        VectorOp::Max,
        VectorOp::Count,
        VectorOp::Stddev,
        VectorOp::Stdvar,
        VectorOp::Topk,
        VectorOp::Bottomk,
        VectorOp::Sort,
        VectorOp::SortDesc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VectorOp::Sum => "sum",
            VectorOp::Avg => "avg",
            VectorOp::Min => "min",
            VectorOp::Max => "max",
            VectorOp::Count => "count",
            VectorOp::Stddev => "stddev",
            VectorOp::Stdvar => "stdvar",
            VectorOp::Topk => "topk",
            VectorOp::Bottomk => "bottomk",
            VectorOp::Sort => "sort",
            VectorOp::SortDesc => "sort_desc",
        }
    }

    pub fn from_name(name: &str) -> Option<VectorOp> {
        VectorOp::ALL.into_iter().find(|op| op.as_str() == name)
    }

    pub fn takes_param(self) -> bool {
        matches!(self, VectorOp::Topk | VectorOp::Bottomk)
    }

    pub fn allows_grouping(self) -> bool {
        !matches!(self, VectorOp::Sort | VectorOp::SortDesc)
    }
}

/// `lhs op lhs`, with PromQL's precedence: `^` (right-associative), then `* / %`, `+ -`,
/// comparisons, `and unless`, and `or` last.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    pub op: BinaryOp,
    pub lhs: MetricExpr,
    pub rhs: MetricExpr,
    /// `bool`: a comparison returns 0 or 1 instead of filtering.
    pub return_bool: bool,
    pub matching: Option<VectorMatching>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    And,
    Or,
    Unless,
}

impl BinaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Eq => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::Gt => ">",
            BinaryOp::Gte => ">=",
            BinaryOp::Lt => "<",
            BinaryOp::Lte => "<=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
        }
    }

    /// Higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And | BinaryOp::Unless => 2,
            BinaryOp::Eq | BinaryOp::Neq | BinaryOp::Gt | BinaryOp::Gte | BinaryOp::Lt | BinaryOp::Lte => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
            BinaryOp::Pow => 6,
        }
    }

    pub fn is_right_associative(self) -> bool {
        self == BinaryOp::Pow
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }

    pub fn is_set_operator(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }
}

/// `on (a)` / `ignoring (a)`, optionally with `group_left (b)` / `group_right (b)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorMatching {
    /// `true` for `on`, `false` for `ignoring`.
    pub on: bool,
    pub labels: Vec<String>,
    pub group: Option<GroupModifier>,
}

/// `group_left (extra, labels)`: many series on the left side match one on the right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupModifier {
    /// `true` for `group_left`, `false` for `group_right`.
    pub left: bool,
    pub labels: Vec<String>,
}

/// `label_replace(expr, "dst", "replacement", "src", "regex")`; the regex is anchored at
/// both ends, as in PromQL.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelReplace {
    pub expr: MetricExpr,
    pub dst: String,
    pub replacement: String,
    pub src: String,
    pub regex: String,
}
