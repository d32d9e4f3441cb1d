//! The query engine's public face: options, instant and range queries, cancellation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;

use crate::model::{Labels, METRIC_NAME, Sample, Series};

use super::error::QueryError;
use super::eval::Evaluator;
use super::source::SeriesSource;
use super::value::{Points, QueryValue, RangeSeries, Value, VectorSample};

/// What an evaluation noticed beside its result, as Prometheus words it: warnings (the result
/// may not be what was meant: a quantile outside [0, 1], a bucket without `le`) and infos
/// (something to check: `rate` of a name that does not look like a counter's). Each message
/// once, in order; without Prometheus's position suffix (the parser gives no positions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// Engine settings; the defaults are Prometheus's.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta: Duration,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    /// Longest a query may run; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Step of subqueries written without one (`x[5m:]`); Prometheus uses the global
    /// evaluation interval (default 1m).
    pub default_subquery_step: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Some(Duration::from_secs(120)),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

/// Lets a caller stop a running query; cheap to clone, all clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that has not been cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every query holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The limits one query runs under.
#[derive(Debug, Clone)]
pub(crate) struct QueryLimits {
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: CancelToken,
    pub(crate) max_samples: usize,
}

impl QueryLimits {
    pub(crate) fn check(&self) -> Result<(), QueryError> {
        if self.cancel.is_cancelled() {
            return Err(QueryError::Canceled);
        }
        if let Some(d) = self.deadline
            && Instant::now() >= d
        {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }
}

/// A PromQL engine evaluating queries against a [`SeriesSource`].
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// Parses a PromQL expression.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    let text = super::strings::byte_escapes(query);
    promql_parser::parser::parse(&text).map_err(|message| located(query, message))
}

/// Longest query whose error position is looked for (each look parses prefixes of it: about
/// a thousand parses of up to 1 KiB).
const MAX_LOCATED_QUERY: usize = 1024;

/// The parse error with where it is, as `line:column` (1-based, in characters). The parser
/// does not say where, so: for an error of the lexer, where the shortest prefix of the query
/// gives the same error; for an error of the grammar, the first character after the longest
/// prefix that is a whole expression (and "unexpected ..." naming what stands there when the
/// parser has nothing better to say).
fn located(query: &str, message: String) -> QueryError {
    const GENERIC: &str = "invalid promql query";
    if query.len() > MAX_LOCATED_QUERY || query.trim().is_empty() {
        return QueryError::Parse { at: String::new(), message };
    }
    // Each character's start and end.
    let chars: Vec<(usize, usize)> = query.char_indices().map(|(i, c)| (i, i + c.len_utf8())).collect();
    let offset = match promql_parser::parser::lex::lexer(query) {
        Err(lexed) => {
            // The offending character is the last one of that prefix.
            chars
                .iter()
                .find(|&&(_, end)| {
                    promql_parser::parser::lex::lexer(&query[..end]).err().as_deref() == Some(&lexed)
                })
                .map(|&(start, _)| start)
        }
        Ok(_) => {
            let whole = chars
                .iter()
                .rev()
                .skip(1)
                .find(|&&(_, end)| promql_parser::parser::parse(&query[..end]).is_ok());
            let after = whole.map_or(0, |&(_, end)| end);
            // Past the spaces that follow the expression.
            Some(after + query[after..].len() - query[after..].trim_start().len())
        }
    };
    let Some(offset) = offset else { return QueryError::Parse { at: String::new(), message } };
    let message = if message == GENERIC {
        let rest = &query[offset..];
        let word: String = rest.chars().take_while(|c| !c.is_whitespace()).take(20).collect();
        if word.is_empty() { "unexpected end of input".to_owned() } else { format!("unexpected {word:?}") }
    } else {
        message
    };
    let line = query[..offset].matches('\n').count() + 1;
    let column = query[..offset].rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    QueryError::Parse { at: format!("{line}:{column}: "), message }
}

impl Engine {
    /// An engine with the given options.
    pub fn new(opts: EngineOptions) -> Self {
        Self { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    #[cfg(test)]
    pub(crate) fn limits_for_tests(&self, cancel: &CancelToken) -> QueryLimits {
        self.limits(cancel)
    }

    fn limits(&self, cancel: &CancelToken) -> QueryLimits {
        QueryLimits {
            deadline: self.opts.timeout.map(|t| Instant::now() + t),
            cancel: cancel.clone(),
            max_samples: self.opts.max_samples,
        }
    }

    /// Evaluates `expr` at time `t` (ms).
    pub fn instant(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        t: i64,
        cancel: &CancelToken,
    ) -> Result<QueryValue, QueryError> {
        self.instant_annotated(source, expr, t, cancel).map(|(value, _)| value)
    }

    /// [`instant`](Self::instant), with what the evaluation noticed beside the result.
    pub fn instant_annotated(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        t: i64,
        cancel: &CancelToken,
    ) -> Result<(QueryValue, Annotations), QueryError> {
        let limits = self.limits(cancel);
        let ev = Evaluator::new(source, &self.opts, limits, expr, t, t, 0)?;
        let value = match ev.eval_top(expr, t)? {
            Value::Scalar(v) => QueryValue::Scalar { t, v },
            Value::Str(value) => QueryValue::String { t, value },
            Value::Vector(vec) => {
                let mut out = Vec::with_capacity(vec.len());
                for s in vec {
                    let labels = if s.drop_name { s.labels.without_name() } else { s.labels };
                    out.push(VectorSample { labels, t, v: s.v });
                }
                let mut seen: Vec<&Labels> = out.iter().map(|s| &s.labels).collect();
                seen.sort();
                if seen.windows(2).any(|w| w[0] == w[1]) {
                    return Err(QueryError::DuplicateLabelset);
                }
                QueryValue::Vector(out)
            }
            Value::Matrix(series, _) => QueryValue::Matrix(finish_matrix(series)?),
        };
        Ok((value, ev.take_annotations()))
    }

    /// Evaluates `expr` at every `step` from `start` to `end` (ms, inclusive).
    pub fn range(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        cancel: &CancelToken,
    ) -> Result<QueryValue, QueryError> {
        self.range_with(source, expr, start, end, step, cancel, true).map(|(value, _)| value)
    }

    /// [`range`](Self::range), with what the evaluation noticed beside the result.
    pub fn range_annotated(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        cancel: &CancelToken,
    ) -> Result<(QueryValue, Annotations), QueryError> {
        self.range_with(source, expr, start, end, step, cancel, true)
    }

    /// [`range`](Self::range) with every expression evaluated step by step.
    #[cfg(test)]
    pub(crate) fn range_step_by_step(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        cancel: &CancelToken,
    ) -> Result<QueryValue, QueryError> {
        self.range_with(source, expr, start, end, step, cancel, false).map(|(value, _)| value)
    }

    #[allow(clippy::too_many_arguments)]
    fn range_with(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        cancel: &CancelToken,
        series_by_series: bool,
    ) -> Result<(QueryValue, Annotations), QueryError> {
        match expr.value_type() {
            ValueType::Matrix => {
                return Err(QueryError::InvalidRangeQueryType { found: "range vector" });
            }
            ValueType::String => return Err(QueryError::InvalidRangeQueryType { found: "string" }),
            _ => {}
        }
        if step <= 0 {
            return Err(QueryError::InvalidRange {
                reason: "zero or negative query resolution step widths are not accepted",
            });
        }
        if end < start {
            return Err(QueryError::InvalidRange { reason: "end timestamp must not be before start time" });
        }
        let limits = self.limits(cancel);
        let max_samples = limits.max_samples;
        let mut ev = Evaluator::new(source, &self.opts, limits, expr, start, end, step)?;
        ev.series_by_series = series_by_series;
        let value = Self::range_value(&ev, expr, (start, end, step), max_samples)?;
        Ok((value, ev.take_annotations()))
    }

    /// The steps of a range query, series by series where that is possible.
    fn range_value(
        ev: &Evaluator<'_>,
        expr: &Expr,
        (start, end, step): (i64, i64, i64),
        max_samples: usize,
    ) -> Result<QueryValue, QueryError> {
        if ev.series_by_series
            && let Some(series) = super::rollup::try_range(ev, expr, start, end, step)
        {
            return Ok(QueryValue::Matrix(finish_matrix(series?)?));
        }
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut series: Vec<RangeSeries> = Vec::new();
        let mut total_points = 0usize;
        let mut t = start;
        while t <= end {
            ev.set_retained(total_points);
            let samples = match ev.eval_top(expr, t)? {
                Value::Scalar(v) => {
                    vec![super::value::InstantSample { labels: Labels::empty(), v, drop_name: false }]
                }
                Value::Vector(v) => v,
                Value::Str(_) => return Err(QueryError::InvalidRangeQueryType { found: "string" }),
                Value::Matrix(..) => {
                    return Err(QueryError::InvalidRangeQueryType { found: "range vector" });
                }
            };
            for s in samples {
                let i = match index.get(&s.labels) {
                    Some(&i) => {
                        if series[i].points.last().is_some_and(|p| p.t == t) {
                            return Err(QueryError::DuplicateLabelset);
                        }
                        i
                    }
                    None => {
                        index.insert(s.labels.clone(), series.len());
                        series.push(RangeSeries {
                            labels: s.labels,
                            points: Points::new(),
                            drop_name: s.drop_name,
                        });
                        series.len() - 1
                    }
                };
                series[i].points.push(Sample { t, v: s.v });
                total_points += 1;
                if total_points > max_samples {
                    return Err(QueryError::TooManySamples { limit: max_samples });
                }
            }
            t = match t.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
        Ok(QueryValue::Matrix(finish_matrix(series)?))
    }
}

/// Removes `__name__` where the evaluation asked for it, merges series that became
/// identical (an error if they overlap in time), and sorts by labels.
fn finish_matrix(series: Vec<RangeSeries>) -> Result<Vec<Series>, QueryError> {
    let mut merged: Vec<Series> = Vec::with_capacity(series.len());
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in series {
        let mut labels = s.labels;
        if s.drop_name {
            labels.remove(METRIC_NAME);
        }
        match index.get(&labels) {
            Some(&i) => {
                let target = &mut merged[i];
                target.samples.extend_from_slice(&s.points);
                target.samples.sort_by_key(|p| p.t);
                if target.samples.windows(2).any(|w| w[0].t == w[1].t) {
                    return Err(QueryError::DuplicateLabelset);
                }
            }
            None => {
                index.insert(labels.clone(), merged.len());
                merged.push(Series { labels, samples: s.points.into_vec() });
            }
        }
    }
    merged.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use crate::query::MemSource;

    #[test]
    fn parse_errors_say_where_as_prometheus_writes_it() {
        for (query, want) in [
            ("foo bar", "1:5: parse error: unexpected \"bar\""),
            ("sum(rate(x[5m])", "1:4: parse error: unclosed left parenthesis"),
            ("up{job=\"a\"} $", "1:13: parse error: unexpected character: '$'"),
            ("rate(x[5m]) +", "1:13: parse error: unexpected \"+\""),
            ("sum(\n  rate(x[5m])\n) by", "3:3: parse error: unexpected \"by\""),
        ] {
            let err = parse(query).expect_err(query);
            assert_eq!(err.to_string(), want, "{query:?}");
            assert_eq!(err.error_type().as_str(), "bad_data");
        }
        // Past 1 KiB of query the position is not looked for (each look parses prefixes).
        let long = format!("sum({})", "x + ".repeat(300));
        let err = parse(&long).expect_err("unbalanced");
        assert!(err.to_string().starts_with("parse error: "), "{err}");
        // The parser's own message is kept, with where.
        let err = parse("rate(x)").expect_err("an instant vector to rate");
        assert!(err.to_string().starts_with("1:5: parse error: "), "{err}");
        assert!(err.to_string().contains("rate"), "{err}");
    }

    /// The annotations Prometheus gives for float data, in its words; none where it gives none.
    #[test]
    fn annotations_say_what_prometheus_says_and_only_then() {
        use super::super::source::MemSource;
        let mut src = MemSource::new();
        let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
        for i in 0..=20 {
            let t = i * 15_000;
            src.add(l(&[("__name__", "requests_total")]), t, i as f64);
            src.add(l(&[("__name__", "temperature")]), t, 20.0 + i as f64);
            // Buckets whose counts go down at le="1": made monotonic.
            src.add(l(&[("__name__", "latency_bucket"), ("le", "0.5")]), t, 10.0);
            src.add(l(&[("__name__", "latency_bucket"), ("le", "1")]), t, 5.0);
            src.add(l(&[("__name__", "latency_bucket"), ("le", "+Inf")]), t, 12.0);
            src.add(l(&[("__name__", "odd_bucket"), ("le", "x")]), t, 1.0);
        }
        let engine = Engine::default();
        let cancel = CancelToken::new();
        let instant =
            |q: &str| engine.instant_annotated(&src, &parse(q).expect(q), 300_000, &cancel).expect(q).1;
        let range = |q: &str| {
            engine.range_annotated(&src, &parse(q).expect(q), 0, 300_000, 60_000, &cancel).expect(q).1
        };
        let none = Annotations::default();
        let warning = |w: &str| Annotations { warnings: vec![format!("PromQL warning: {w}")], infos: vec![] };
        let info = |i: &str| Annotations { warnings: vec![], infos: vec![format!("PromQL info: {i}")] };
        let not_counter = info(
            r#"metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "temperature""#,
        );
        assert_eq!(instant("rate(requests_total[1m])"), none);
        assert_eq!(instant("rate(temperature[1m])"), not_counter);
        assert_eq!(instant("sum(increase(temperature[1m]))"), not_counter);
        // The same through the series-by-series range evaluation, once for every step.
        assert_eq!(range("sum(rate(temperature[1m]))"), not_counter);
        assert_eq!(range("rate(requests_total[1m])"), none);
        // No info without a value: a window with one sample gives none.
        assert_eq!(instant("rate(temperature[10s])"), none);
        assert_eq!(instant("delta(temperature[1m])"), none);
        let sort =
            warning("sort is ineffective for range queries since results are always ordered by labels");
        assert_eq!(range("sort(temperature)"), sort);
        assert_eq!(range("sum(sort_desc(temperature))"), sort);
        assert_eq!(instant("sort(temperature)"), none);
        assert_eq!(
            instant("quantile(2, temperature)"),
            warning("quantile value should be between 0 and 1, got 2")
        );
        assert_eq!(
            instant("quantile(NaN, temperature)"),
            warning("quantile value should be between 0 and 1, got NaN")
        );
        assert_eq!(instant("quantile(0.5, temperature)"), none);
        assert_eq!(
            instant("quantile_over_time(-0.5, temperature[1m])"),
            warning("quantile value should be between 0 and 1, got -0.5")
        );
        assert_eq!(
            instant("limit_ratio(1.1, temperature)"),
            warning("ratio value should be between -1 and 1, got 1.1, capping to 1")
        );
        assert_eq!(
            instant("histogram_quantile(0.9, odd_bucket)"),
            warning(
                r#"bucket label "le" is missing or has a malformed value of "x" for metric name "odd_bucket""#
            )
        );
        assert_eq!(
            instant("histogram_quantile(0.9, latency_bucket)"),
            info(
                r#"input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name "latency_bucket", from buckets 1 to 1, with a max diff of 5, over 1 samples from 1970-01-01T00:05:00Z to 1970-01-01T00:05:00Z"#
            )
        );
        // Over the steps of a range query: one info, merged.
        assert_eq!(
            range("histogram_quantile(0.9, latency_bucket)").infos,
            [
                r#"PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name "latency_bucket", from buckets 1 to 1, with a max diff of 5, over 6 samples from 1970-01-01T00:00:00Z to 1970-01-01T00:05:00Z"#
            ]
        );
        assert_eq!(
            [0.123456, 1234.0, 5.0, 0.000012, 99.5].map(|v| super::super::eval::go_float_digits(v, 2)),
            ["0.12", "1.2e+03", "5", "1.2e-05", "1e+02"]
        );
        assert_eq!(super::super::eval::rfc3339_seconds(1_704_164_645_999), "2024-01-02T03:04:05Z");
        assert_eq!(
            go_float_cases(),
            ["1e+21", "1e-05", "0.0001", "-2.5", "+Inf", "NaN", "999999", "1e+06", "1.234567e+06", "0"]
        );
    }

    fn go_float_cases() -> Vec<String> {
        use super::super::eval::go_float;
        [1e21, 1e-5, 1e-4, -2.5, f64::INFINITY, f64::NAN, 999_999.0, 1e6, 1_234_567.0, 0.0]
            .into_iter()
            .map(go_float)
            .collect()
    }

    #[test]
    fn byte_escapes_in_strings_are_bytes_as_in_go() {
        use promql_parser::parser::Expr as E;
        let string = |q: &str| match parse(q).expect(q) {
            E::StringLiteral(s) => s.val,
            other => panic!("{other:?}"),
        };
        // Two escaped bytes are one character; a code point escape stays one.
        assert_eq!(string(r#""\xc3\xbf""#), "ÿ");
        assert_eq!(string(r#""a\303\277b""#), "aÿb");
        assert_eq!(string(r#""\u00ff\x41""#), "ÿA");
        assert_eq!(string(r#""\\xc3\\xbf""#), r"\xc3\xbf", "escaped backslashes are not escapes");
        assert_eq!(string(r"`\xff`"), r"\xff", "raw strings have no escapes");
        // Bytes that are not UTF-8 stand for themselves, to fail where they name a label.
        let raw = string(r#""a\xc5z""#);
        assert!(!super::super::strings::valid_label_name(&raw));
        assert_eq!(super::super::strings::quoted(&raw), r#""a\xc5z""#);
        // Outside strings (a comment) nothing is read as an escape.
        assert!(parse("m # \\xff\n").is_ok());
    }

    #[test]
    fn parse_error_is_bad_data_with_the_parser_message() {
        let err = parse("sum(rate(x[5m]").expect_err("unbalanced");
        assert_eq!(err.error_type().as_str(), "bad_data");
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn instant_query_over_max_samples_fails_with_execution_error() {
        let mut src = MemSource::new();
        for i in 0..10 {
            src.add(Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]), 0, 1.0);
        }
        let engine = Engine::new(EngineOptions { max_samples: 5, ..EngineOptions::default() });
        let expr = parse("m").expect("valid");
        let err = engine.instant(&src, &expr, 1000, &CancelToken::new()).expect_err("too many samples");
        assert!(matches!(err, QueryError::TooManySamples { limit: 5 }));
        assert_eq!(err.error_type().as_str(), "execution");
    }

    #[test]
    fn cancelled_query_stops_with_canceled_error() {
        let src = MemSource::new();
        let cancel = CancelToken::new();
        cancel.cancel();
        let expr = parse("vector(1)").expect("valid");
        let err = Engine::default().instant(&src, &expr, 0, &cancel).expect_err("cancelled");
        assert!(matches!(err, QueryError::Canceled));
    }
}
