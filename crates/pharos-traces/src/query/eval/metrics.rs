//! TraceQL metrics: `{ … } | rate() by (…)` and the other `*_over_time` functions over
//! many traces, into time series.
//!
//! A series has one sample per step: the sample at time `t` covers the spans that start in
//! `(t - step, t]`, as in Tempo and Prometheus. The range's start is rounded down and its end
//! up to a multiple of the step, so samples fall at `start + step`, `start + 2 step`, …,
//! `end`. Counting functions (`rate`, `count_over_time`, `histogram_over_time`) give every
//! step, 0 where nothing matched; the others only the steps with a value.
//!
//! `quantile_over_time` and `histogram_over_time` count values in power-of-two buckets, as
//! Tempo does (durations bucketed in nanoseconds, labelled and reported in seconds), and a
//! quantile interpolates exponentially inside its bucket, so it is exact to within a factor
//! of two. Duration values are reported in seconds by every function.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use super::EvalError;
use super::expr::{Expr, SpanCtx};
use super::pipeline::{Pipeline, Set};
use super::trace::Trace;
use super::value::{HashValue, Val, Value};
use crate::model::SpanData;
use crate::query::{MetricsFunction, MetricsStage, Query, SecondStage};

/// The most samples one series may have: `(end - start) / step`, as Prometheus limits it.
pub const MAX_METRICS_POINTS: u64 = 11_000;

/// How many series a [`MetricsEvaluator`] keeps by default before it fails the query
/// (as Tempo's default `max_series`).
pub const DEFAULT_MAX_METRICS_SERIES: usize = 1_000;

/// One time series of a metrics query.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// The `by (…)` values under the fields as written (`resource.service.name`), missing
    /// ones left out; `__name__` = the function's name when there is no `by`; then `p` (the
    /// quantile) for `quantile_over_time`, `__bucket` (the bucket's upper bound) for
    /// `histogram_over_time`.
    pub labels: Vec<(String, Value)>,
    /// `(unix milliseconds, value)`, ascending.
    pub samples: Vec<(i64, f64)>,
}

#[derive(Debug)]
enum Function {
    Rate,
    Count,
    Min(Expr),
    Max(Expr),
    Sum(Expr),
    Avg(Expr),
    Quantile(Expr, Vec<f64>),
    Histogram(Expr),
}

/// One series' accumulated values, one slot per step.
#[derive(Debug)]
enum Acc {
    /// Counts (starting at 0) or min/max/sum (starting at NaN: no value yet).
    Values(Vec<f64>),
    Avg {
        sum: Vec<f64>,
        count: Vec<u64>,
    },
    /// Bucket upper bound (as `f64` bits; all positive, so ordered) -> count.
    Buckets(Vec<BTreeMap<u64, u64>>),
}

/// Evaluates a metrics query over traces fed one at a time, keeping only the series.
///
/// ```
/// use pharos_traces::query::{parse, MetricsEvaluator};
///
/// let query = parse("{ status = error } | rate() by (resource.service.name)").unwrap();
/// let mut metrics = MetricsEvaluator::new(&query, 0..60_000_000_000, 15_000_000_000).unwrap();
/// metrics.add_trace(&[]).unwrap();
/// assert!(metrics.finish().is_empty());
/// ```
#[derive(Debug)]
pub struct MetricsEvaluator {
    pipeline: Pipeline,
    name: &'static str,
    function: Function,
    by: Vec<(String, Expr)>,
    second_stage: Option<SecondStage>,
    start: u64,
    step: u64,
    points: usize,
    series: HashMap<Vec<HashValue>, Acc>,
    max_series: usize,
}

impl MetricsEvaluator {
    /// Compiles `query`, which must have a metrics stage, for the time range `range` (unix
    /// nanoseconds) with one sample per `step_ns`.
    pub fn new(query: &Query, range: Range<u64>, step_ns: u64) -> Result<Self, EvalError> {
        let metrics = query.metrics.as_ref().ok_or(EvalError::NotMetricsQuery)?;
        let invalid = || EvalError::InvalidRange { start_ns: range.start, end_ns: range.end, step_ns };
        if step_ns == 0 || range.end <= range.start {
            return Err(invalid());
        }
        let start = range.start - range.start % step_ns;
        let end = range.end.checked_add((step_ns - range.end % step_ns) % step_ns).ok_or_else(invalid)?;
        let points = (end - start) / step_ns;
        if points > MAX_METRICS_POINTS {
            return Err(EvalError::TooManyPoints { points, limit: MAX_METRICS_POINTS });
        }
        Self::compile(metrics, query, start, step_ns, points)
    }

    /// Compiles `query` for one value over exactly `range` (unix nanoseconds, start
    /// exclusive, end inclusive): an instant query. Unlike [`MetricsEvaluator::new`] the range
    /// is not aligned to a step, so no span in the range falls into a second bucket.
    pub fn instant(query: &Query, range: Range<u64>) -> Result<Self, EvalError> {
        let metrics = query.metrics.as_ref().ok_or(EvalError::NotMetricsQuery)?;
        if range.end <= range.start {
            return Err(EvalError::InvalidRange {
                start_ns: range.start,
                end_ns: range.end,
                step_ns: range.end.saturating_sub(range.start),
            });
        }
        Self::compile(metrics, query, range.start, range.end - range.start, 1)
    }

    fn compile(
        metrics: &MetricsStage,
        query: &Query,
        start: u64,
        step_ns: u64,
        points: u64,
    ) -> Result<Self, EvalError> {
        let function = match &metrics.function {
            MetricsFunction::Rate => Function::Rate,
            MetricsFunction::CountOverTime => Function::Count,
            MetricsFunction::MinOverTime(e) => Function::Min(Expr::compile(e)?),
            MetricsFunction::MaxOverTime(e) => Function::Max(Expr::compile(e)?),
            MetricsFunction::SumOverTime(e) => Function::Sum(Expr::compile(e)?),
            MetricsFunction::AvgOverTime(e) => Function::Avg(Expr::compile(e)?),
            MetricsFunction::QuantileOverTime { expr, quantiles } => {
                Function::Quantile(Expr::compile(expr)?, quantiles.clone())
            }
            MetricsFunction::HistogramOverTime(e) => Function::Histogram(Expr::compile(e)?),
        };
        let by = metrics
            .by
            .iter()
            .map(|f| Ok((f.to_string(), Expr::compile(f)?)))
            .collect::<Result<_, EvalError>>()?;
        Ok(Self {
            pipeline: Pipeline::compile(&query.pipeline)?,
            name: metrics.function.name(),
            function,
            by,
            second_stage: metrics.second_stage,
            start,
            step: step_ns,
            points: usize::try_from(points).unwrap_or(usize::MAX),
            series: HashMap::new(),
            max_series: DEFAULT_MAX_METRICS_SERIES,
        })
    }

    /// Allows up to `max_series` series (before quantiles and histogram buckets multiply
    /// them) instead of [`DEFAULT_MAX_METRICS_SERIES`].
    pub fn with_max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series;
        self
    }

    /// Adds the spans of one trace that the query's pipeline matches (each once, however
    /// many spansets hold it). Fails when a new series would pass the series limit.
    pub fn add_trace(&mut self, spans: &[SpanData]) -> Result<(), EvalError> {
        if spans.is_empty() {
            return Ok(());
        }
        let trace = Trace::new(spans);
        let sets = self
            .pipeline
            .evaluate(&trace, vec![Set { spans: (0..spans.len()).collect(), attributes: Vec::new() }]);
        let mut matched: Vec<usize> = sets.into_iter().flat_map(|s| s.spans).collect();
        matched.sort_unstable();
        matched.dedup();
        for i in matched {
            let Some(slot) = self.slot(spans[i].span.start_time_unix_nano) else { continue };
            let ctx = SpanCtx::new(&trace, i);
            let observed = match &self.function {
                Function::Rate | Function::Count => Some(1.0),
                Function::Min(e) | Function::Max(e) | Function::Sum(e) | Function::Avg(e) => {
                    e.eval(&ctx).as_f64().filter(|x| !x.is_nan())
                }
                Function::Quantile(e, _) | Function::Histogram(e) => log2_bucket(&e.eval(&ctx)),
            };
            let Some(x) = observed else { continue };
            let key: Vec<HashValue> = self
                .by
                .iter()
                .map(|(_, e)| HashValue(e.eval(&ctx).to_value().unwrap_or(Value::Nil)))
                .collect();
            let series_count = self.series.len();
            let acc = match self.series.get_mut(&key) {
                Some(acc) => acc,
                None => {
                    if series_count >= self.max_series {
                        return Err(EvalError::TooManySeries { limit: self.max_series });
                    }
                    let points = self.points;
                    let acc = match self.function {
                        Function::Rate | Function::Count => Acc::Values(vec![0.0; points]),
                        Function::Min(_) | Function::Max(_) | Function::Sum(_) => {
                            Acc::Values(vec![f64::NAN; points])
                        }
                        Function::Avg(_) => Acc::Avg { sum: vec![0.0; points], count: vec![0; points] },
                        Function::Quantile(..) | Function::Histogram(_) => {
                            Acc::Buckets(vec![BTreeMap::new(); points])
                        }
                    };
                    self.series.entry(key).or_insert(acc)
                }
            };
            match acc {
                Acc::Values(values) => {
                    let v = &mut values[slot];
                    *v = match &self.function {
                        Function::Min(_) if v.is_nan() || x < *v => x,
                        Function::Max(_) if v.is_nan() || x > *v => x,
                        Function::Min(_) | Function::Max(_) => *v,
                        _ if v.is_nan() => x,
                        _ => *v + x,
                    };
                }
                Acc::Avg { sum, count } => {
                    sum[slot] += x;
                    count[slot] += 1;
                }
                Acc::Buckets(buckets) => *buckets[slot].entry(x.to_bits()).or_insert(0) += 1,
            }
        }
        Ok(())
    }

    /// The step slot of a span starting at `ts`: `(start + i step, start + (i+1) step]`.
    fn slot(&self, ts: u64) -> Option<usize> {
        if ts <= self.start {
            return None;
        }
        let offset = ts - self.start - 1;
        usize::try_from(offset / self.step).ok().filter(|&i| i < self.points)
    }

    /// The series, sorted by labels, after `topk`/`bottomk` if the query has one.
    pub fn finish(self) -> Vec<MetricSeries> {
        let timestamp = |i: usize| ((self.start + (i as u64 + 1) * self.step) / 1_000_000) as i64;
        let step_seconds = self.step as f64 / 1e9;
        let mut out = Vec::new();
        for (key, acc) in &self.series {
            let labels = self.labels(key);
            match (&self.function, acc) {
                (Function::Quantile(_, quantiles), Acc::Buckets(slots)) => {
                    let slots: Vec<Vec<(f64, u64)>> = slots
                        .iter()
                        .map(|b| b.iter().map(|(bits, n)| (f64::from_bits(*bits), *n)).collect())
                        .collect();
                    for &q in quantiles {
                        let samples = slots
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| !b.is_empty())
                            .map(|(i, b)| (timestamp(i), log2_quantile(q, b)))
                            .collect();
                        let mut labels = labels.clone();
                        labels.push(("p".to_string(), Value::Float(q)));
                        out.push(MetricSeries { labels, samples });
                    }
                }
                (_, Acc::Buckets(slots)) => {
                    let bounds: HashSet<u64> = slots.iter().flat_map(|b| b.keys().copied()).collect();
                    for bits in bounds {
                        let samples = slots
                            .iter()
                            .enumerate()
                            .map(|(i, b)| (timestamp(i), b.get(&bits).copied().unwrap_or(0) as f64))
                            .collect();
                        let mut labels = labels.clone();
                        labels.push(("__bucket".to_string(), Value::Float(f64::from_bits(bits))));
                        out.push(MetricSeries { labels, samples });
                    }
                }
                (function, Acc::Values(values)) => {
                    let scale = if matches!(function, Function::Rate) { 1.0 / step_seconds } else { 1.0 };
                    let samples = values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !v.is_nan())
                        .map(|(i, v)| (timestamp(i), v * scale))
                        .collect();
                    out.push(MetricSeries { labels, samples });
                }
                (_, Acc::Avg { sum, count }) => {
                    let samples = sum
                        .iter()
                        .zip(count)
                        .enumerate()
                        .filter(|(_, (_, n))| **n > 0)
                        .map(|(i, (s, n))| (timestamp(i), s / *n as f64))
                        .collect();
                    out.push(MetricSeries { labels, samples });
                }
            }
        }
        out.sort_by(|a, b| compare_labels(&a.labels, &b.labels));
        match self.second_stage {
            Some(SecondStage::TopK(k)) => keep_extremes(&mut out, k as usize, true),
            Some(SecondStage::BottomK(k)) => keep_extremes(&mut out, k as usize, false),
            None => {}
        }
        out
    }

    /// Labels as Tempo gives them: missing `by` values left out, but at least one label.
    fn labels(&self, key: &[HashValue]) -> Vec<(String, Value)> {
        if self.by.is_empty() {
            return vec![("__name__".to_string(), Value::String(self.name.to_string()))];
        }
        let labels: Vec<(String, Value)> = self
            .by
            .iter()
            .zip(key)
            .filter(|(_, v)| v.0 != Value::Nil)
            .map(|((name, _), v)| (name.clone(), v.0.clone()))
            .collect();
        if labels.is_empty() { vec![(self.by[0].0.clone(), Value::Nil)] } else { labels }
    }
}

/// Evaluates a metrics query over `traces` (each the spans of one trace).
pub fn evaluate_metrics<'t>(
    query: &Query,
    traces: impl IntoIterator<Item = &'t [SpanData]>,
    range: Range<u64>,
    step_ns: u64,
) -> Result<Vec<MetricSeries>, EvalError> {
    let mut metrics = MetricsEvaluator::new(query, range, step_ns)?;
    for trace in traces {
        metrics.add_trace(trace)?;
    }
    Ok(metrics.finish())
}

fn compare_labels(a: &[(String, Value)], b: &[(String, Value)]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|((an, av), (bn, bv))| an.cmp(bn).then_with(|| av.total_cmp(bv)))
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

/// `topk(k)` (`top`) or `bottomk(k)`: at each timestamp, keeps the samples of the `k`
/// series with the highest (lowest) values there; drops series left without samples.
fn keep_extremes(series: &mut Vec<MetricSeries>, k: usize, top: bool) {
    let mut at: BTreeMap<i64, Vec<(usize, f64)>> = BTreeMap::new();
    for (s, one) in series.iter().enumerate() {
        for &(t, v) in &one.samples {
            at.entry(t).or_default().push((s, v));
        }
    }
    let mut kept: HashSet<(usize, i64)> = HashSet::new();
    for (t, mut values) in at {
        values.sort_by(|a, b| {
            let order = a.1.total_cmp(&b.1);
            (if top { order.reverse() } else { order }).then(a.0.cmp(&b.0))
        });
        kept.extend(values.iter().take(k).map(|&(s, _)| (s, t)));
    }
    for (s, one) in series.iter_mut().enumerate() {
        one.samples.retain(|&(t, _)| kept.contains(&(s, t)));
    }
    series.retain(|s| !s.samples.is_empty());
}

/// The power-of-two bucket (its upper bound) a value falls in: durations bucketed in
/// nanoseconds and given in seconds, integers and floats as they are. Values `<= 0` have
/// no bucket.
fn log2_bucket(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Dur(n) if *n > 0 => Some((*n as u64).checked_next_power_of_two()? as f64 / 1e9),
        Val::Int(n) if *n > 0 => Some((*n as u64).checked_next_power_of_two()? as f64),
        Val::Float(x) if *x > 0.0 && x.is_finite() => {
            let mut bound = 2f64.powi(x.log2().ceil() as i32);
            if bound < *x {
                bound *= 2.0;
            } else if bound / 2.0 >= *x {
                bound /= 2.0;
            }
            bound.is_finite().then_some(bound)
        }
        _ => None,
    }
}

/// The `p` quantile of counts in power-of-two `buckets` (upper bound, count), ascending,
/// interpolating exponentially inside the bucket it falls in (Tempo's `Log2Quantile`).
fn log2_quantile(p: f64, buckets: &[(f64, u64)]) -> f64 {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return 0.0;
    }
    let wanted = ((p * total as f64).ceil() as u64).max(1);
    let (mut seen, mut bucket) = (0, 0);
    for (i, &(bound, count)) in buckets.iter().enumerate() {
        bucket = i;
        if seen + count > wanted {
            break;
        }
        seen += count;
        if seen == wanted {
            return bound;
        }
    }
    let fraction = (wanted - seen) as f64 / buckets[bucket].1 as f64;
    let high = buckets[bucket].0.log2();
    let low = if bucket > 0 { buckets[bucket - 1].0.log2() } else { high - 1.0 };
    2f64.powf(low + (high - low) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_bucket_rounds_up_to_powers_of_two() {
        assert_eq!(log2_bucket(&Val::Int(3)), Some(4.0));
        assert_eq!(log2_bucket(&Val::Int(4)), Some(4.0));
        assert_eq!(log2_bucket(&Val::Int(1)), Some(1.0));
        assert_eq!(log2_bucket(&Val::Int(0)), None);
        assert_eq!(log2_bucket(&Val::Float(0.3)), Some(0.5));
        assert_eq!(log2_bucket(&Val::Float(0.25)), Some(0.25));
        assert_eq!(log2_bucket(&Val::Dur(1_000_000_000)), Some(1_073_741_824.0 / 1e9));
    }

    #[test]
    fn log2_quantile_returns_bucket_bound_or_interpolates() {
        let buckets = [(1.0, 1), (2.0, 1), (4.0, 2)];
        assert_eq!(log2_quantile(0.5, &buckets), 2.0);
        assert_eq!(log2_quantile(1.0, &buckets), 4.0);
        assert_eq!(log2_quantile(0.0, &buckets), 1.0);
        // 3 of 4 samples: halfway (by count) into the (2, 4] bucket, exponentially.
        assert!((log2_quantile(0.75, &buckets) - 2f64.powf(1.5)).abs() < 1e-12);
        assert_eq!(log2_quantile(0.5, &[]), 0.0);
    }
}
