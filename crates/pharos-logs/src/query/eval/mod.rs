//! LogQL evaluation against a [`LogSource`], with Loki's semantics.
//!
//! [`select_logs`] runs a log query and returns streams of lines; [`evaluate_instant`] and
//! [`evaluate_range`] run a metric query at one time or at every step of a range. Each
//! query is compiled once (regexes, templates, patterns) and then runs its pipeline over every
//! entry the source returns, borrowing the line until a stage rewrites it.
//!
//! Regexes use the `regex` crate, which matches in time linear in the input: no pattern can
//! make a line take exponential time, at the price of no backreferences or look-around (as in
//! Go's RE2, which Loki uses).
//!
//! # Semantics (as Loki documents them)
//!
//! - **Labels.** An entry starts with its stream labels and its structured metadata (names
//!   sanitised; a metadata name that is also a stream label gets `_extracted`). Parsers add
//!   labels with sanitised names (ASCII letters, digits, `_` and `:`; a leading digit gets a
//!   `_` prefix); a parsed name that is a stream label or a metadata name gets the
//!   `_extracted` suffix, and when a name is extracted twice the first value is kept. A label
//!   with an empty value does not exist. Result labels (log streams and metric series) are
//!   the stream labels plus metadata plus parsed labels after the pipeline, so entries with
//!   different metadata or parsed values land in different streams and series.
//! - **Errors.** A parser that fails sets `__error__` (`JSONParserErr`, `LogfmtParserErr`)
//!   and `__error_details__`; a number, duration or byte-size label filter whose label does
//!   not convert sets `LabelFilterErr` and keeps the entry; a template that fails sets
//!   `TemplateFormatErr` and leaves the line or label unchanged; an unwrapped value that
//!   does not convert sets `SampleExtractionErr`. Numeric, duration, byte-size and IP label
//!   filters let an entry that already has an error through (only string filters such as
//!   `__error__=""` drop them) and drop an entry without the label. Log queries return
//!   errored entries with those labels; a metric query fails with
//!   [`EvalError::Pipeline`] when a sample still carries `__error__` after the filters that
//!   follow `unwrap`, as Loki answers `pipeline error: 'SampleExtractionErr' for series ...`.
//!   `drop __error__` removes the error (and its details); `keep` never removes them.
//! - **Parsers.** `json` flattens nested objects with `_`, skips arrays and `null`, keeps
//!   numbers and booleans as written; with parameters it extracts `a.b`, `a[0]`, `a["b c"]`
//!   paths, giving objects and arrays as their JSON text. `logfmt` skips malformed pairs, or
//!   with `--strict` stops at the first and sets the error; `--keep-empty` keeps keys without
//!   a value. `regexp` extracts named groups of the first match. `pattern` is anchored at the
//!   line start when it starts with literal text; each capture runs to the next literal; when
//!   a literal is missing the capture before it takes the rest of the line and matching
//!   stops. `unpack` reads a JSON object and, only when it has an `_entry` key, adds its other
//!   string fields as labels and replaces the line with `_entry`.
//! - **Formatting.** `line_format` and `label_format` use a Go `text/template` subset (the
//!   `template` module lists what is supported). Missing labels render as the empty
//!   string. All templates and renames of one `label_format` read the labels as they were
//!   before it; `dst=src` moves the value and removes `src` (no-op when `src` is missing).
//! - **Ranges.** At an evaluation time `t` a range `[r] offset o` reads the entries with
//!   timestamps in `(t - r - o, t - o]`. `rate` is the count (or, unwrapped, the sum) per
//!   second of `r`; `bytes_*` count line bytes after the pipeline; `stddev`/`stdvar` are
//!   population statistics; `quantile_over_time` interpolates like Prometheus;
//!   `rate_counter` is Prometheus' extrapolated counter rate (needs two samples);
//!   `absent_over_time` gives 1, labelled with the selector's `=` matchers, when no entry is
//!   in the window. An unwrapped label that is missing or empty gives no sample (and no
//!   error). Without `by`, and with `without`, the unwrapped label is removed from the
//!   series; `by`/`without` on a range aggregation group the samples before the function.
//!   Labels whose names start with `__` are not part of metric series.
//! - **Vectors.** Aggregations, binary operators, vector matching, `label_replace` and
//!   `vector()` follow PromQL. A comparison without `bool` between a vector and a scalar
//!   keeps the vector's value whichever side it is on; between two scalars a comparison
//!   gives 1 or 0. Result series are sorted by labels, except that an instant `sort` or
//!   `sort_desc` is ordered by value. `sum by/without` over `count_over_time`, `rate`,
//!   `bytes_rate`, `bytes_over_time` or `sum_over_time` groups at extraction (the same
//!   result, with fewer intermediate series).
//!
//! # Limits
//!
//! [`Limits::max_bytes_scanned`] counts the bytes of every line the source returns (checked
//! after each read, before the pipeline runs), [`Limits::max_series`] the series of a metric
//! result, [`Limits::max_entries`] the `limit` of a log query; the deadline is checked every
//! 4096 entries and between stages.

mod json;
mod labels;
mod logfmt;
mod logs;
mod metric;
mod pattern_match;
mod pipeline;
mod range;
mod series;
mod template;
mod values;

#[cfg(test)]
mod tests;

use std::time::Instant;

use pharos_core::ErrorCode;

use crate::model::{Labels, SourceError};

pub use self::logs::select_logs;
pub use self::metric::{evaluate_instant, evaluate_range};

/// Default [`Limits::max_series`], as Loki's `max_query_series`.
pub const DEFAULT_MAX_SERIES: usize = 500;
/// Default [`Limits::max_entries`], as Loki's `max_entries_limit_per_query`.
pub const DEFAULT_MAX_ENTRIES: usize = 5000;
/// The most steps a range query may have, as Loki and Prometheus (11,000 points per series).
pub const MAX_STEPS: i64 = 11_000;

/// In which order a log query returns entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first (Loki's default).
    #[default]
    Backward,
}

/// What one query may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most series a metric query may return ([`DEFAULT_MAX_SERIES`]).
    pub max_series: usize,
    /// The most line bytes a query may read from the source; `u64::MAX` (the default)
    /// for no limit.
    pub max_bytes_scanned: u64,
    /// When the query must have finished.
    pub deadline: Option<Instant>,
    /// The largest `limit` a log query may ask for ([`DEFAULT_MAX_ENTRIES`]).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: DEFAULT_MAX_SERIES,
            max_bytes_scanned: u64::MAX,
            deadline: None,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// What a query read and returned, for Loki's `stats` block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of the lines the source returned.
    pub bytes_processed: u64,
    /// Lines the source returned.
    pub lines_processed: u64,
    /// Entries (log query) or samples (metric query) in the result.
    pub entries_returned: u64,
    /// Streams the source returned, summed over the query's selectors.
    pub streams_selected: u64,
}

/// A stream of a log query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LogStream {
    /// Stream labels, structured metadata and extracted labels after the pipeline
    /// (`__error__` and `__error_details__` included when set).
    pub labels: Labels,
    /// In the query's direction.
    pub entries: Vec<ResultEntry>,
}

/// An entry of a log query's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultEntry {
    /// Unix nanoseconds.
    pub timestamp: i64,
    /// The line after the pipeline (`line_format`, `unpack` and `decolorize` rewrite it).
    pub line: String,
    /// The structured metadata still among the labels after the pipeline, named as in the
    /// labels (sanitised, `_extracted` when a stream label has the name), sorted by name.
    pub metadata: Vec<(String, String)>,
}

/// What a query yields.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Streams(Vec<LogStream>),
    Vector(Vec<Sample>),
    Scalar(f64),
    Matrix(Vec<Series>),
}

/// A sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// Unix nanoseconds.
    pub timestamp: i64,
    pub value: f64,
}

/// A series of a range query's matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// `(unix nanoseconds, value)`, by time.
    pub points: Vec<(i64, f64)>,
}

/// Why a query cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The result has more series than [`Limits::max_series`].
    #[error("maximum number of series ({limit}) reached for a single query (max_series)")]
    TooManySeries {
        /// [`Limits::max_series`].
        limit: usize,
    },
    /// The source returned more line bytes than [`Limits::max_bytes_scanned`].
    #[error(
        "the query would read {scanned} bytes, more than the limit of {limit} (max_bytes_scanned); narrow the time range or the stream selector"
    )]
    TooManyBytes {
        /// Bytes read so far.
        scanned: u64,
        /// [`Limits::max_bytes_scanned`].
        limit: u64,
    },
    /// A log query asks for more entries than [`Limits::max_entries`].
    #[error("max entries limit per query exceeded, limit > max_entries ({requested} > {limit})")]
    TooManyEntries {
        /// The query's `limit`.
        requested: usize,
        /// [`Limits::max_entries`].
        limit: usize,
    },
    /// [`Limits::deadline`] passed.
    #[error("query timed out")]
    Timeout,
    /// A regex of the query does not compile (the parser rejects most; built trees may not).
    #[error("invalid regular expression {pattern:?}")]
    InvalidRegex {
        /// The pattern as written.
        pattern: String,
        #[source]
        source: regex::Error,
    },
    /// An `ip("...")` address, range or CIDR that does not parse.
    #[error("invalid IP address, range or CIDR {pattern:?}")]
    InvalidIp {
        /// The text in `ip(...)`.
        pattern: String,
    },
    /// A `line_format` or `label_format` template that does not compile.
    #[error("invalid template {template:?}: {reason}")]
    InvalidTemplate {
        /// The template as written.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// A `json` parameter that is not a path like `a.b[0]["c"]`.
    #[error("invalid json path {path:?}")]
    InvalidJsonPath {
        /// The path as written.
        path: String,
    },
    /// The source could not answer.
    #[error("read logs: {source}")]
    Source {
        #[from]
        source: SourceError,
    },
    /// Something this engine does not evaluate.
    #[error("not supported: {what}")]
    Unsupported {
        /// What is missing.
        what: String,
    },
    /// A range query whose start, end and step do not make steps.
    #[error("invalid query range: start {start}, end {end}, step {step}: {reason}")]
    InvalidRange {
        /// Unix nanoseconds.
        start: i64,
        /// Unix nanoseconds.
        end: i64,
        /// Nanoseconds.
        step: i64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A metric query's sample kept `__error__` (Loki's pipeline error).
    #[error(
        "pipeline error: '{error}' for series: '{labels}'. Use a label filter to intentionally skip this error. (e.g | __error__!=\"{error}\"). To skip all potential errors you can match empty errors.(e.g __error__=\"\") The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )"
    )]
    Pipeline {
        /// The `__error__` value.
        error: String,
        /// The sample's labels, as Loki prints them.
        labels: String,
    },
    /// A vector match found several series with one signature on the "one" side.
    #[error(
        "found duplicate series for the match group {signature} on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
    )]
    ManyToMany {
        /// The matching labels.
        signature: String,
        /// `left` or `right`.
        side: &'static str,
    },
    /// A vector match gave two results with the same labels.
    #[error("multiple matches for labels {labels}: grouping labels must ensure unique matches")]
    MultipleMatches {
        /// The duplicated result labels.
        labels: String,
    },
    /// An operation (such as `label_replace`) gave two samples with the same labels.
    #[error("vector cannot contain metrics with the same labelset {labels}")]
    DuplicateSeries {
        /// The duplicated labels.
        labels: String,
    },
}

impl EvalError {
    /// The wire-independent code: limits are too large, a timeout is unavailable (a retry may
    /// help), a source's error has its own code, everything else is invalid input.
    pub fn code(&self) -> ErrorCode {
        match self {
            EvalError::TooManySeries { .. } | EvalError::TooManyBytes { .. } => ErrorCode::TooLarge,
            EvalError::Source { source } => source.1,
            EvalError::Timeout => ErrorCode::Unavailable,
            _ => ErrorCode::InvalidInput,
        }
    }

    /// Whether the query is valid but failed on the data it read (Prometheus' `execution`
    /// error type, HTTP 422): many-to-many matches and duplicate series. Loki reports a
    /// pipeline error as 400, so [`EvalError::Pipeline`] is not one.
    pub fn is_execution(&self) -> bool {
        matches!(
            self,
            EvalError::ManyToMany { .. }
                | EvalError::MultipleMatches { .. }
                | EvalError::DuplicateSeries { .. }
        )
    }
}

/// Checks the deadline every 4096 entries.
pub(crate) struct Budget {
    deadline: Option<Instant>,
    ticks: u32,
}

impl Budget {
    pub(crate) fn new(deadline: Option<Instant>) -> Self {
        Self { deadline, ticks: 0 }
    }

    /// Counts one unit of work, checking the deadline every 4096.
    #[inline]
    pub(crate) fn tick(&mut self) -> Result<(), EvalError> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks & 4095 == 0 { self.check() } else { Ok(()) }
    }

    /// When the work must stop, if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn check(&self) -> Result<(), EvalError> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(EvalError::Timeout),
            _ => Ok(()),
        }
    }
}

/// Adds what a read returned to `stats` and enforces the byte limit.
pub(crate) fn account_read(
    selected: &crate::model::Selected,
    stats: &mut Stats,
    limits: &Limits,
) -> Result<(), EvalError> {
    stats.streams_selected += selected.streams.len() as u64;
    stats.lines_processed += selected.lines_scanned;
    stats.bytes_processed += selected.bytes_scanned;
    if stats.bytes_processed > limits.max_bytes_scanned {
        return Err(EvalError::TooManyBytes {
            scanned: stats.bytes_processed,
            limit: limits.max_bytes_scanned,
        });
    }
    Ok(())
}

/// What a query reads of the entries that pass the line test.
pub(crate) struct Needs {
    /// Only these structured metadata names (all when `None`).
    pub(crate) metadata: Option<std::sync::Arc<[String]>>,
    /// The lines themselves.
    pub(crate) lines: bool,
}

/// Reads what `query` selects in `[start, end)` from `source`, with its stored-line filters
/// for the source to apply, and accounts for it.
pub(crate) fn read(
    source: &dyn crate::model::LogSource,
    query: &crate::query::LogQuery,
    start: i64,
    end: i64,
    needs: Needs,
    stats: &mut Stats,
    limits: &Limits,
) -> Result<Vec<crate::model::StreamEntries>, EvalError> {
    let prefilter = pipeline::LinePrefilter::new(&query.pipeline)?;
    let selection = crate::model::Selection {
        matchers: &query.selector.matchers,
        start,
        end,
        metadata: needs.metadata,
        lines_needed: needs.lines,
        lines: prefilter.map(|p| std::sync::Arc::new(p) as std::sync::Arc<dyn crate::model::LineTest>),
    };
    let selected = source.select(&selection)?;
    account_read(&selected, stats, limits)?;
    Ok(selected.streams)
}

/// Compiles `pattern` as written.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, EvalError> {
    regex::Regex::new(pattern)
        .map_err(|source| EvalError::InvalidRegex { pattern: pattern.to_owned(), source })
}

/// Compiles `pattern` anchored at both ends (label matchers, label filters, `label_replace`).
pub(crate) fn compile_anchored(pattern: &str) -> Result<regex::Regex, EvalError> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|source| EvalError::InvalidRegex { pattern: pattern.to_owned(), source })
}
