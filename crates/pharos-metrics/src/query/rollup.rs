//! Range queries of the shape most dashboards ask for, `f(selector[range])` alone or under one
//! aggregation (`sum`, `avg`, `count`, `group`, `min`, `max`, `stddev`, `stdvar`, with `by` or
//! `without`), evaluated series by series over all steps instead of step by step.
//!
//! Step by step, every step hands every series' labels and window to the function, then
//! groups the results by their labels again. Series by series, a series' group is found once,
//! its windows move forward along its samples, and each step's values are combined per group
//! in the same order (so the sums are the same to the bit). The answers, errors and sample
//! limits are those of the step-by-step evaluation; a test compares the two on random data.
//! Inside a larger expression, such an aggregation is evaluated for all steps at its first use
//! and its vectors handed out step by step, each step charging the samples it selected to the
//! query's limit. Beyond 16M series-steps, the step-by-step evaluation (one step held at a
//! time) is used.

use promql_parser::parser::{AggregateExpr, Call, Expr, MatrixSelector};

use crate::model::{Labels, Sample, Series, is_stale_nan};

use super::aggregate;
use super::engine::QueryLimits;
use super::error::QueryError;
use super::eval::{Evaluator, duration_ms, offset_ms, unparen, window_at};
use super::functions;
use super::value::{InstantSample, Points, RangeSeries, RangeWindow};

/// The range query's series when `expr` has a shape this module evaluates, else `None` (the
/// caller evaluates step by step).
pub(crate) fn try_range(
    ev: &Evaluator<'_>,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
) -> Option<Result<Vec<RangeSeries>, QueryError>> {
    let (agg, name, ms) = shape_of(expr)?;
    let steps = steps(start, end, step);
    if let Err(e) = within_budget(ev, ms, steps.len())? {
        return Some(Err(e));
    }
    Some(evaluate(ev, agg, name, ms, &steps, true).map(|e| e.series.into_iter().map(|(s, _)| s).collect()))
}

/// Series times steps held in the table at most (9 bytes each): beyond, the step-by-step
/// evaluation, which holds one step at a time, is used.
const MAX_CELLS: usize = 16 << 20;

/// `None` when the selector's series times `steps` pass [`MAX_CELLS`]; fetching the series
/// (cached for the step-by-step evaluation too) may fail.
fn within_budget(ev: &Evaluator<'_>, ms: &MatrixSelector, steps: usize) -> Option<Result<(), QueryError>> {
    match ev.fetch(&ms.vs) {
        Ok(series) => (series.len().saturating_mul(steps) <= MAX_CELLS).then_some(Ok(())),
        Err(e) => Some(Err(e)),
    }
}

/// For an aggregation of this shape inside a larger expression (`histogram_quantile(0.9, sum
/// by (le) (rate(x[5m])))`, `sum(rate(a[1m])) / sum(rate(b[1m]))`): its vector at every step
/// of the range query, in the order the step-by-step evaluation gives; `None` for other
/// expressions.
pub(crate) fn step_vectors(ev: &Evaluator<'_>, expr: &Expr) -> Option<Result<StepVectors, QueryError>> {
    let (Some(agg), name, ms) = shape_of(expr)? else { return None };
    let steps = steps(ev.query_start, ev.query_end, ev.query_step);
    if let Err(e) = within_budget(ev, ms, steps.len())? {
        return Some(Err(e));
    }
    Some(evaluate(ev, Some(agg), name, ms, &steps, false).map(|Evaluated { series: groups, selected }| {
        // Step by step, groups come in the order of their first member present at that step.
        let mut at_step: Vec<Vec<(usize, usize, f64)>> = vec![Vec::new(); steps.len()];
        for (g, (series, origins)) in groups.iter().enumerate() {
            for (p, &(k, member)) in series.points.iter().zip(origins) {
                at_step[k].push((member, g, p.v));
            }
        }
        let vectors: Vec<Vec<InstantSample>> = at_step
            .into_iter()
            .map(|mut at| {
                at.sort_unstable_by_key(|&(member, _, _)| member);
                at.into_iter()
                    .map(|(_, g, v)| {
                        let (series, _) = &groups[g];
                        InstantSample { labels: series.labels.clone(), v, drop_name: series.drop_name }
                    })
                    .collect()
            })
            .collect();
        StepVectors { vectors, selected }
    }))
}

/// An aggregation's vector at every step of a range query, and the samples it selected at
/// each step (charged to the query's limit as the step-by-step evaluation would).
pub(crate) struct StepVectors {
    pub(crate) vectors: Vec<Vec<InstantSample>>,
    pub(crate) selected: Vec<usize>,
}

/// `agg(f(selector[range]))` or `f(selector[range])` with a plain aggregation and a range
/// function of the range vector alone.
fn shape_of(expr: &Expr) -> Option<(Option<&AggregateExpr>, &'static str, &MatrixSelector)> {
    let (agg, call): (Option<&AggregateExpr>, &Call) = match unparen(expr) {
        Expr::Aggregate(a) if aggregate::is_plain_aggregation(a) => match unparen(&a.expr) {
            Expr::Call(c) => (Some(a), c),
            _ => return None,
        },
        Expr::Call(c) => (None, c),
        _ => return None,
    };
    let name = call.func.name;
    if call.args.args.len() != 1 || !functions::is_plain_range_function(name) {
        return None;
    }
    let Expr::MatrixSelector(ms) = unparen(&call.args.args[0]) else { return None };
    Some((agg, name, ms))
}

fn steps(start: i64, end: i64, step: i64) -> Vec<i64> {
    let mut steps = Vec::new();
    let mut t = start;
    while t <= end && step > 0 {
        steps.push(t);
        t = match t.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    steps
}

/// Each series' values at every step (`NaN` payloads are values too, so presence is kept apart),
/// in parts of consecutive series.
struct Table {
    steps: usize,
    /// Each part's first series and values (series-major).
    parts: Vec<(usize, Vec<f64>, Vec<bool>)>,
}

impl Table {
    /// The values of `series` at every step, and whether each is present.
    fn part(&self, series: usize) -> (&[f64], &[bool]) {
        let i = self.parts.partition_point(|(first, _, _)| *first <= series) - 1;
        let (first, values, present) = &self.parts[i];
        let at = (series - first) * self.steps;
        (&values[at..at + self.steps], &present[at..at + self.steps])
    }

    fn get(&self, series: usize, step: usize) -> Option<f64> {
        let (values, present) = self.part(series);
        present[step].then(|| values[step])
    }

    /// The steps at which `series` has a value, with the value.
    fn row(&self, series: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let (values, present) = self.part(series);
        values.iter().zip(present).enumerate().filter_map(|(k, (v, p))| p.then_some((k, *v)))
    }
}

/// Series-steps below which the values are computed on the calling thread alone (tests split
/// even small queries, so that the differential tests cover the parallel path).
const PARALLEL_CELLS: usize = if cfg!(test) { 64 } else { 1 << 18 };

/// `name` over every series' window at every step, and the samples selected at each step,
/// with the step-by-step evaluation's sample limit. Large queries are split into parts of
/// consecutive series computed on one thread per core.
fn values_of(
    series: &[Series],
    windows: &[RangeWindow],
    steps: &[i64],
    name: &str,
    limits: &QueryLimits,
) -> Result<(Table, Vec<usize>), QueryError> {
    let n = steps.len();
    let split = series.len().saturating_mul(n) >= PARALLEL_CELLS;
    let parts = pharos_core::parallel::in_parts(series, split, |first, part| {
        part_values(first, part, windows, steps, name, limits)
    });
    let mut selected = vec![0usize; n];
    let mut table = Table { steps: n, parts: Vec::with_capacity(parts.len()) };
    for part in parts {
        let PartValues { first, values, present, selected: counts } = part?;
        for (total, c) in selected.iter_mut().zip(counts) {
            *total += c;
            if *total > limits.max_samples {
                return Err(QueryError::TooManySamples { limit: limits.max_samples });
            }
        }
        table.parts.push((first, values, present));
    }
    Ok((table, selected))
}

/// The values of a part of the series (see [`Table`]) and the samples it selected per step.
struct PartValues {
    first: usize,
    values: Vec<f64>,
    present: Vec<bool>,
    selected: Vec<usize>,
}

/// [`values_of`] for the consecutive series `part`, the first of which is series `first`.
fn part_values(
    first: usize,
    part: &[Series],
    windows: &[RangeWindow],
    steps: &[i64],
    name: &str,
    limits: &QueryLimits,
) -> Result<PartValues, QueryError> {
    let n = steps.len();
    let max = limits.max_samples;
    let mut values = vec![0.0; part.len() * n];
    let mut present = vec![false; part.len() * n];
    let mut selected = vec![0usize; n];
    let mut kept: Vec<Sample> = Vec::new();
    // For `rate` and `increase`: resets[i] counts the samples up to i below the one before
    // them, so that a window without any skips the counter-reset pass; stale[i] counts the
    // staleness markers before i, so a window without any is known without looking at it.
    let counter = matches!(name, "rate" | "increase");
    let (mut resets, mut stale): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for (i, s) in part.iter().enumerate() {
        limits.check()?;
        resets.clear();
        stale.clear();
        stale.push(0);
        let (mut drops, mut markers, mut prev) = (0u32, 0u32, f64::NAN);
        for p in &s.samples {
            // `NaN < x` is false: the first sample counts no reset.
            if counter {
                drops += u32::from(p.v < prev);
                resets.push(drops);
            }
            markers += u32::from(is_stale_nan(p.v));
            stale.push(markers);
            prev = p.v;
        }
        let mut cursor = (0, 0);
        for (k, (w, &t)) in windows.iter().zip(steps).enumerate() {
            let Some((lo, hi)) = window_at(&s.samples, &mut cursor, w.start, w.end) else {
                continue;
            };
            let mut points = &s.samples[lo..hi];
            let mut no_resets = counter && resets[hi - 1] == resets[lo];
            if stale[hi] != stale[lo] {
                no_resets = false;
                kept.clear();
                kept.extend(points.iter().filter(|p| !is_stale_nan(p.v)));
                if kept.is_empty() {
                    continue;
                }
                points = &kept;
            }
            selected[k] += points.len();
            if selected[k] > max {
                return Err(QueryError::TooManySamples { limit: max });
            }
            let value = if no_resets {
                functions::extrapolated_rate_known(points, w, true, name == "rate", true)
            } else {
                functions::range_value(name, points, w, &[t as f64], t)
            };
            if let Some(v) = value {
                values[i * n + k] = v;
                present[i * n + k] = true;
            }
        }
    }
    Ok(PartValues { first, values, present, selected })
}

/// What [`evaluate`] found.
struct Evaluated {
    /// The result's series, each with, for every point, its step and the position of the
    /// first fetched series that contributed to it.
    series: Vec<(RangeSeries, Vec<(usize, usize)>)>,
    /// Samples selected at each step over all series.
    selected: Vec<usize>,
}

/// Evaluates the shape for every step; `top_level`: the expression is the whole query, whose
/// result counts to the sample limit as it grows.
fn evaluate(
    ev: &Evaluator<'_>,
    agg: Option<&AggregateExpr>,
    name: &str,
    ms: &MatrixSelector,
    steps: &[i64],
    top_level: bool,
) -> Result<Evaluated, QueryError> {
    let limits = ev.limits();
    let max = limits.max_samples;
    let series = ev.fetch(&ms.vs)?;
    let range = duration_ms(&ms.range);
    let offset = offset_ms(ms.vs.offset.as_ref());
    let n = steps.len();
    let drop_name = !functions::keeps_name(name);
    // Points of the result at each step.
    let mut produced = vec![0usize; n];
    let windows: Vec<RangeWindow> = steps
        .iter()
        .map(|&t| {
            let end = ev.at_time(ms.vs.at.as_ref(), t).saturating_sub(offset);
            RangeWindow { start: end.saturating_sub(range), end }
        })
        .collect();
    // Every series' values at every step, computed in parallel over parts of the series.
    let (table, selected) = values_of(&series, &windows, steps, name, limits)?;
    if matches!(name, "rate" | "increase") {
        for (i, s) in series.iter().enumerate() {
            if table.row(i).next().is_some() {
                ev.note_rate_input(&s.labels);
            }
        }
    }
    // Where the values go: the result's series (no aggregation); running values per group and
    // step (aggregations that fold left to right), in series order so the sums are the
    // step-by-step ones to the bit; or, for the other aggregations, combined per group and
    // step from the table.
    let labels: Vec<&Labels> = series.iter().map(|s| &s.labels).collect();
    let groups = agg.map(|agg| aggregate::groups_of(agg, &labels)).unwrap_or_default();
    let op = agg.map(|agg| agg.op.id());
    let folding = op.is_some_and(aggregate::folds);
    let mut group_of = vec![0usize; if agg.is_some() { series.len() } else { 0 }];
    for (g, (_, members)) in groups.iter().enumerate() {
        for &si in members {
            group_of[si] = g;
        }
    }
    let mut running: Vec<(Option<usize>, aggregate::Running)> =
        if folding { vec![(None, aggregate::Running::default()); groups.len() * n] } else { Vec::new() };
    let mut out = Vec::new();
    let mut total = 0usize;
    for (si, s) in series.iter().enumerate() {
        let row = table.row(si);
        match op {
            None => {
                let (origins, points): (Vec<(usize, usize)>, Vec<Sample>) =
                    row.map(|(k, v)| ((k, si), Sample { t: steps[k], v })).unzip();
                if origins.is_empty() {
                    continue;
                }
                total += origins.len();
                if total > max {
                    return Err(QueryError::TooManySamples { limit: max });
                }
                for &(k, _) in &origins {
                    produced[k] += 1;
                }
                out.push((
                    RangeSeries { labels: s.labels.clone(), points: Points::Owned(points), drop_name },
                    origins,
                ));
            }
            Some(op) if folding => {
                let acc = &mut running[group_of[si] * n..(group_of[si] + 1) * n];
                for (k, v) in row {
                    let (first, r) = &mut acc[k];
                    first.get_or_insert(si);
                    r.add(op, v);
                }
            }
            Some(_) => {}
        }
    }
    if let (Some(agg), Some(op)) = (agg, op) {
        let mut vals: Vec<f64> = Vec::new();
        for (g, (group_labels, members)) in groups.into_iter().enumerate() {
            limits.check()?;
            let mut points = Vec::new();
            let mut origins = Vec::new();
            for (k, &t) in steps.iter().enumerate() {
                let (first, v) = if folding {
                    let (first, r) = &running[g * n + k];
                    let Some(first) = *first else { continue };
                    (first, r.value(op))
                } else {
                    vals.clear();
                    let mut first = None;
                    for &si in &members {
                        if let Some(v) = table.get(si, k) {
                            first.get_or_insert(si);
                            vals.push(v);
                        }
                    }
                    let Some(first) = first else { continue };
                    let Some(v) = aggregate::combine(op, &mut vals, None) else {
                        return Err(QueryError::Unsupported { what: format!("aggregation {}", agg.op) });
                    };
                    (first, v)
                };
                points.push(Sample { t, v });
                origins.push((k, first));
                produced[k] += 1;
            }
            if !points.is_empty() {
                out.push((
                    RangeSeries { labels: group_labels, points: Points::Owned(points), drop_name },
                    origins,
                ));
            }
        }
    }
    if top_level {
        // The limit as the step-by-step evaluation applies it: at each step, the samples
        // selected plus the points of the result so far; then the result's points.
        let mut retained = 0usize;
        for k in 0..n {
            if selected[k].saturating_add(retained) > max {
                return Err(QueryError::TooManySamples { limit: max });
            }
            retained += produced[k];
            if retained > max {
                return Err(QueryError::TooManySamples { limit: max });
            }
        }
    }
    Ok(Evaluated { series: out, selected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Series, stale_nan};

    use crate::query::{CancelToken, Engine, EngineOptions, MemSource, QueryValue, parse};

    /// Counters (with resets), gauges (with NaN), staleness markers and gaps over 3 jobs.
    fn data(seed: u64) -> MemSource {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut all = Vec::new();
        for i in 0..30 {
            let job = format!("job{}", i % 3);
            let instance = format!("i{i}");
            let mut counter = Vec::new();
            let mut gauge = Vec::new();
            let mut c = 0.0;
            let mut t = (next() % 15_000) as i64;
            while t < 3_600_000 {
                let r = next();
                if r % 97 == 0 {
                    c = 0.0;
                } else {
                    c += (r % 50) as f64;
                }
                if r % 89 == 0 {
                    counter.push(Sample { t, v: stale_nan() });
                } else {
                    counter.push(Sample { t, v: c });
                }
                let g = if r % 101 == 0 { f64::NAN } else { (r % 1000) as f64 / 7.0 - 50.0 };
                gauge.push(Sample { t, v: g });
                // Mostly 15 s apart, sometimes a gap.
                t += if r % 53 == 0 { 300_000 } else { 15_000 };
            }
            let labels = |name: &str| {
                Labels::from_pairs([
                    ("__name__", name),
                    ("job", job.as_str()),
                    ("instance", instance.as_str()),
                ])
            };
            all.push(Series { labels: labels("requests_total"), samples: counter });
            all.push(Series { labels: labels("temperature"), samples: gauge });
        }
        let mut source = MemSource::new();
        for s in all {
            for p in s.samples {
                source.add(s.labels.clone(), p.t, p.v);
            }
        }
        source
    }

    fn same(a: &QueryValue, b: &QueryValue) -> bool {
        let (QueryValue::Matrix(a), QueryValue::Matrix(b)) = (a, b) else { return a == b };
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.labels == y.labels
                    && x.samples.len() == y.samples.len()
                    && x.samples
                        .iter()
                        .zip(&y.samples)
                        .all(|(p, q)| p.t == q.t && p.v.to_bits() == q.v.to_bits())
            })
    }

    /// Whether a range query of `expr` over 10 min..1 h at 30 s is evaluated series by series.
    fn series_by_series(engine: &Engine, source: &MemSource, expr: &Expr) -> bool {
        let limits = engine.limits_for_tests(&CancelToken::default());
        let (start, end, step) = (600_000, 3_600_000, 30_000);
        let ev = Evaluator::new(source, engine.options(), limits, expr, start, end, step).unwrap();
        try_range(&ev, expr, start, end, step).is_some()
    }

    /// Runs `q` both ways over 10 min..1 h at 30 s steps and compares answers bit for bit (or
    /// the errors).
    fn assert_same_as_step_by_step(engine: &Engine, source: &MemSource, q: &str, step: i64) {
        let expr = parse(q).unwrap();
        let (start, end) = (600_000, 3_600_000);
        let fast = engine.range(source, &expr, start, end, step, &CancelToken::default());
        let slow = engine.range_step_by_step(source, &expr, start, end, step, &CancelToken::default());
        match (fast, slow) {
            (Ok(a), Ok(b)) => assert!(same(&a, &b), "{q}:\n{a:?}\n!=\n{b:?}"),
            (a, b) => assert_eq!(
                a.map(|_| ()).map_err(|e| e.to_string()),
                b.map(|_| ()).map_err(|e| e.to_string()),
                "{q}"
            ),
        }
    }

    #[test]
    fn series_by_series_answers_equal_step_by_step_answers() {
        let queries = [
            "rate(requests_total[5m])",
            "sum by (job) (rate(requests_total[5m]))",
            "sum(increase(requests_total[2m]))",
            "avg without (instance) (irate(requests_total[1m]))",
            "count by (job) (delta(temperature[10m]))",
            "max by (job) (max_over_time(temperature[3m]))",
            "min(min_over_time(temperature[3m]))",
            "stddev by (job) (avg_over_time(temperature[5m]))",
            "stdvar(sum_over_time(temperature[5m] offset 10m))",
            "group by (job) (changes(temperature[5m]))",
            "sum by (__name__) (last_over_time({__name__=~\"requests_total|temperature\"}[5m]))",
            "last_over_time(temperature[1m])",
            "resets(requests_total[30m] @ 1800)",
            "deriv(temperature[5m])",
            "sum by (job) (rate(requests_total[5m] @ end()))",
            "(sum by (job) ((rate(requests_total[5m]))))",
            "count(present_over_time(requests_total[30s]))",
            "ts_of_max_over_time(temperature[5m])",
        ];
        let engine = Engine::new(EngineOptions::default());
        for seed in [1, 7, 42] {
            let source = data(seed);
            for q in queries {
                let expr = parse(q).unwrap();
                assert!(series_by_series(&engine, &source, &expr), "{q} takes this path");
                assert_same_as_step_by_step(&engine, &source, q, 30_000);
            }
        }
    }

    #[test]
    fn aggregations_inside_larger_expressions_answer_as_step_by_step() {
        let queries = [
            "sum(sum by (job) (rate(requests_total[5m])))",
            "sum by (job) (rate(requests_total[5m])) / on (job) group_left sum by (job) (rate(requests_total[10m]))",
            "max(avg by (job) (avg_over_time(temperature[5m]))) - min(min_over_time(temperature[5m]))",
            "sum(rate(requests_total[5m])) * 2 > 1",
            "abs(sum by (instance) (delta(temperature[5m])))",
            "topk(2, sum by (job) (increase(requests_total[5m])))",
            "max_over_time(sum(rate(requests_total[5m]))[10m:30s])",
            "sum(rate(requests_total[5m])) and on () vector(1)",
            "count(count by (job) (changes(temperature[5m])))",
        ];
        let engine = Engine::new(EngineOptions::default());
        for seed in [2, 9] {
            let source = data(seed);
            for q in queries {
                assert_same_as_step_by_step(&engine, &source, q, 30_000);
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_step_by_step_evaluation() {
        let engine = Engine::new(EngineOptions::default());
        let source = data(3);
        for q in [
            "topk(3, rate(requests_total[5m]))",
            "quantile_over_time(0.5, temperature[5m])",
            "sum(rate(requests_total[5m])) by (job) * 2",
            "rate(requests_total[5m:1m])",
            "requests_total",
            "quantile(0.9, rate(requests_total[5m]))",
        ] {
            let expr = parse(q).unwrap();
            assert!(!series_by_series(&engine, &source, &expr), "{q}");
        }
    }

    #[test]
    fn the_sample_limit_is_the_step_by_step_one() {
        let source = data(5);
        for max in [10, 100, 1_000, 2_000, 5_000, 20_000, 200_000] {
            let engine = Engine::new(EngineOptions { max_samples: max, ..EngineOptions::default() });
            for q in [
                "rate(requests_total[5m])",
                "sum by (job) (rate(requests_total[10m]))",
                "sum(rate(requests_total[5m])) / sum(rate(temperature[5m]))",
                "max(sum by (instance) (rate(requests_total[10m])))",
            ] {
                assert_same_as_step_by_step(&engine, &source, q, 15_000);
            }
        }
    }
}
