//! Range aggregations: samples extracted from log entries, then a function over each window.

use super::labels::{LabelState, SAMPLE_EXTRACTION_ERR};
use super::metric::StepVectors;
use super::pipeline::{LabelPredicate, Pipeline};
use super::series::SeriesIndex;
use super::values::{parse_float, parse_go_duration, parse_humanized_bytes};
use super::{Budget, EvalError};
use crate::model::{Labels, StreamEntries};
use crate::query::{LogRange, MatchOp, RangeAggregation, RangeOp, Stage, UnwrapConversion};

/// Which labels a sample's series keeps.
#[derive(Debug, Clone)]
pub(super) enum Grouping {
    All,
    By(Vec<String>),
    Without(Vec<String>),
}

impl Grouping {
    fn keeps(&self, name: &str) -> bool {
        if name.starts_with("__") {
            return false;
        }
        match self {
            Grouping::All => true,
            Grouping::By(names) => names.iter().any(|n| n == name),
            Grouping::Without(names) => !names.iter().any(|n| n == name),
        }
    }
}

/// The samples of each series, by time.
pub(super) struct Extracted {
    pub(super) series: Vec<Labels>,
    pub(super) samples: Vec<Vec<(i64, f64)>>,
}

enum ValueKind {
    Count,
    Bytes,
    Unwrap { label: String, conversion: UnwrapConversion, post: Vec<LabelPredicate> },
}

/// The grouping a range aggregation extracts with: its own `by`/`without`, or `pushed` from
/// an enclosing `sum`, and without the unwrapped label unless `by` names it.
pub(super) fn extraction_grouping(agg: &RangeAggregation, pushed: Option<&Grouping>) -> Grouping {
    let unwrapped = agg.range.unwrap.as_ref().map(|u| u.label.clone());
    if let Some(pushed) = pushed {
        return match (pushed, unwrapped) {
            (Grouping::By(names), Some(label)) => {
                Grouping::By(names.iter().filter(|n| **n != label).cloned().collect())
            }
            (Grouping::Without(names), Some(label)) => {
                Grouping::Without(names.iter().cloned().chain(std::iter::once(label)).collect())
            }
            (Grouping::All, Some(label)) => Grouping::Without(vec![label]),
            (pushed, None) => pushed.clone(),
        };
    }
    match (&agg.grouping, unwrapped) {
        (Some(g), _) if !g.without => Grouping::By(g.labels.clone()),
        (Some(g), Some(label)) => {
            Grouping::Without(g.labels.iter().cloned().chain(std::iter::once(label)).collect())
        }
        (Some(g), None) => Grouping::Without(g.labels.clone()),
        (None, Some(label)) => Grouping::Without(vec![label]),
        (None, None) => Grouping::All,
    }
}

/// Entries above which extraction runs on one thread per core (tests split any query, so
/// that the differential tests cover the parallel path).
#[cfg(not(test))]
const PARALLEL_ENTRIES: usize = 65_536;
#[cfg(test)]
const PARALLEL_ENTRIES: usize = 0;

/// Runs the range's pipeline over `streams` and groups the samples into series. Large inputs
/// are extracted in parts of consecutive streams, one per core, and the parts' series joined
/// in stream order, so the samples are those of one pass in the same order; their entries are
/// then freed on another thread (that takes a while), not before the answer.
pub(super) fn extract(
    agg: &RangeAggregation,
    grouping: &Grouping,
    streams: Vec<StreamEntries>,
    lines_filtered: bool,
    budget: &mut Budget,
) -> Result<Extracted, EvalError> {
    let range: &LogRange = &agg.range;
    // Line filters the source applied already (and whose lines it may have left out) are not
    // applied again.
    let stages: Vec<Stage> = if lines_filtered {
        range.query.pipeline.iter().filter(|s| !matches!(s, Stage::LineFilter(_))).cloned().collect()
    } else {
        range.query.pipeline.clone()
    };
    let entries: usize = streams.iter().map(|s| s.entries.len()).sum();
    let deadline = budget.deadline();
    let large = entries > PARALLEL_ENTRIES;
    let parts = pharos_core::parallel::in_weighted_parts(
        &streams,
        large,
        |s| s.entries.len(),
        |_, part| extract_part(agg, &stages, grouping, part, &mut Budget::new(deadline)),
    );
    if large {
        std::thread::spawn(move || drop(streams));
    } else {
        drop(streams);
    }
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_else(|| Ok(Extracted { series: Vec::new(), samples: Vec::new() }))?;
    let mut joined = if parts.len() == 0 {
        first
    } else {
        let mut index = SeriesIndex::new();
        let mut samples: Vec<Vec<(i64, f64)>> = Vec::new();
        for part in std::iter::once(Ok(first)).chain(parts) {
            let part = part?;
            for (labels, part_samples) in part.series.into_iter().zip(part.samples) {
                let id = index.id_of(labels) as usize;
                if id == samples.len() {
                    samples.push(part_samples);
                } else {
                    samples[id].extend(part_samples);
                }
            }
        }
        Extracted { series: index.into_labels(), samples }
    };
    budget.check()?;
    for series in &mut joined.samples {
        if agg.range.unwrap.is_none() {
            // Counts and byte counts: whole numbers, whose sums are exact in any order.
            series.sort_unstable_by_key(|s| s.0);
        } else {
            // Stable: samples of equal time keep the order they were read in.
            series.sort_by_key(|s| s.0);
        }
    }
    Ok(joined)
}

/// The samples of `streams`, by series, in the order read.
fn extract_part(
    agg: &RangeAggregation,
    stages: &[Stage],
    grouping: &Grouping,
    streams: &[StreamEntries],
    budget: &mut Budget,
) -> Result<Extracted, EvalError> {
    let range: &LogRange = &agg.range;
    let pipeline = Pipeline::new(stages)?;
    let kind = match (&range.unwrap, agg.op) {
        (Some(unwrap), _) => ValueKind::Unwrap {
            label: unwrap.label.clone(),
            conversion: unwrap.conversion,
            post: unwrap.post_filters.iter().map(LabelPredicate::new).collect::<Result<_, _>>()?,
        },
        (None, RangeOp::BytesOverTime | RangeOp::BytesRate) => ValueKind::Bytes,
        (None, _) => ValueKind::Count,
    };
    let mut index = SeriesIndex::new();
    let mut samples: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut state = LabelState::new();
    // Under `by (…)`: the grouping values of the last entry looked up, and their series.
    let mut last_by: Option<(Vec<Option<String>>, u32)> = None;
    for stream in streams {
        let mut stream_series: Option<u32> = None;
        'entries: for entry in &stream.entries {
            budget.tick()?;
            state.reset(&stream.labels, &entry.metadata);
            let Some(line) = pipeline.process(entry.timestamp, &entry.line, &mut state) else { continue };
            let value = match &kind {
                ValueKind::Count => 1.0,
                ValueKind::Bytes => line.len() as f64,
                ValueKind::Unwrap { label, conversion, post } => {
                    let converted = match state.get(label) {
                        None | Some("") => continue,
                        Some(raw) => convert(raw, *conversion),
                    };
                    let value = match converted {
                        Ok(v) => v,
                        Err(details) => {
                            state.set_error(SAMPLE_EXTRACTION_ERR, details);
                            0.0
                        }
                    };
                    for filter in post {
                        if !filter.eval(&mut state) {
                            continue 'entries;
                        }
                    }
                    value
                }
            };
            if let Some(error) = state.error() {
                return Err(EvalError::Pipeline {
                    error: error.to_owned(),
                    labels: state.to_labels().to_string(),
                });
            }
            let id = if state.is_pristine() {
                *stream_series.get_or_insert_with(|| {
                    let pairs: Vec<(&str, &str)> =
                        stream.labels.iter().filter(|(k, _)| grouping.keeps(k)).collect();
                    index.id_of_pairs(&pairs)
                })
            } else if let Grouping::By(names) = grouping {
                let kept = || names.iter().filter(|n| grouping.keeps(n));
                match &last_by {
                    // The values of the entry before (entries of a stream mostly repeat them).
                    Some((values, id)) if kept().zip(values).all(|(n, v)| state.get(n) == v.as_deref()) => {
                        *id
                    }
                    _ => {
                        // Look the few grouping labels up rather than listing every label.
                        let mut pairs: Vec<(&str, &str)> =
                            kept().filter_map(|n| state.get(n).map(|v| (n.as_str(), v))).collect();
                        pairs.sort_unstable();
                        pairs.dedup_by(|a, b| a.0 == b.0);
                        let id = index.id_of_pairs(&pairs);
                        last_by = Some((kept().map(|n| state.get(n).map(str::to_owned)).collect(), id));
                        id
                    }
                }
            } else {
                let mut pairs = state.pairs();
                pairs.retain(|(k, _)| grouping.keeps(k));
                index.id_of_pairs(&pairs)
            } as usize;
            if id == samples.len() {
                samples.push(Vec::new());
            }
            samples[id].push((entry.timestamp, value));
        }
    }
    Ok(Extracted { series: index.into_labels(), samples })
}

fn convert(raw: &str, conversion: UnwrapConversion) -> Result<f64, String> {
    match conversion {
        UnwrapConversion::None => parse_float(raw),
        UnwrapConversion::Duration | UnwrapConversion::DurationSeconds => {
            parse_go_duration(raw).map(|ns| ns as f64 / 1e9)
        }
        UnwrapConversion::Bytes => parse_humanized_bytes(raw).map(|b| b as f64),
    }
}

/// The aggregation at every step: windows `(t - range - offset, t - offset]`.
pub(super) fn aggregate(
    agg: &RangeAggregation,
    extracted: Extracted,
    steps: &[i64],
    budget: &mut Budget,
) -> Result<StepVectors, EvalError> {
    let range_ns = duration_ns(agg.range.range);
    let offset_ns = duration_ns(agg.range.offset);
    let range_secs = agg.range.range.as_secs_f64();
    let window = |t: i64| {
        let end = t.saturating_sub(offset_ns);
        (end.saturating_sub(range_ns), end)
    };
    let mut out = StepVectors::new(steps.len());
    if agg.op == RangeOp::AbsentOverTime {
        let mut present = vec![false; steps.len()];
        for series in &extracted.samples {
            budget.check()?;
            for_each_window(series, steps, window, |step, _| present[step] = true);
        }
        let labels = absent_labels(agg);
        if present.iter().any(|p| !p) {
            let id = out.add_series(labels);
            for (step, present) in present.iter().enumerate() {
                if !present {
                    out.steps[step].push((id, 1.0));
                }
            }
        }
        return Ok(out);
    }
    for (labels, series) in extracted.series.into_iter().zip(&extracted.samples) {
        budget.check()?;
        let mut id = None;
        for_each_window(series, steps, window, |step, samples| {
            let (start, end) = window(steps[step]);
            if let Some(value) = range_value(agg.op, agg.param, samples, range_secs, start, end) {
                let id = *id.get_or_insert_with(|| out.add_series(labels.clone()));
                out.steps[step].push((id, value));
            }
        });
    }
    Ok(out)
}

pub(super) fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Calls `f(step, samples)` for each step whose window holds samples (sliding: steps rise).
fn for_each_window(
    series: &[(i64, f64)],
    steps: &[i64],
    window: impl Fn(i64) -> (i64, i64),
    mut f: impl FnMut(usize, &[(i64, f64)]),
) {
    let (mut lo, mut hi) = (0, 0);
    for (step, &t) in steps.iter().enumerate() {
        let (start, end) = window(t);
        while hi < series.len() && series[hi].0 <= end {
            hi += 1;
        }
        while lo < hi && series[lo].0 <= start {
            lo += 1;
        }
        if lo < hi {
            f(step, &series[lo..hi]);
        }
    }
}

/// The labels of `absent_over_time`: the selector's `=` matchers (a name given twice is left
/// out), as Prometheus' `absent`.
fn absent_labels(agg: &RangeAggregation) -> Labels {
    let matchers = &agg.range.query.selector.matchers;
    let eq: Vec<_> = matchers.iter().filter(|m| m.op == MatchOp::Eq).collect();
    Labels::new(
        eq.iter()
            .filter(|m| eq.iter().filter(|o| o.name == m.name).count() == 1)
            .map(|m| (m.name.clone(), m.value.clone())),
    )
}

fn range_value(
    op: RangeOp,
    param: Option<f64>,
    samples: &[(i64, f64)],
    range_secs: f64,
    window_start: i64,
    window_end: i64,
) -> Option<f64> {
    let values = || samples.iter().map(|s| s.1);
    let n = samples.len() as f64;
    let sum = || values().sum::<f64>();
    let variance = || {
        let mean = sum() / n;
        values().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n
    };
    Some(match op {
        RangeOp::CountOverTime => n,
        RangeOp::Rate | RangeOp::BytesRate => sum() / range_secs,
        RangeOp::BytesOverTime | RangeOp::SumOverTime => sum(),
        RangeOp::AvgOverTime => sum() / n,
        RangeOp::MinOverTime => values().fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a }),
        RangeOp::MaxOverTime => values().fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a }),
        RangeOp::StdvarOverTime => variance(),
        RangeOp::StddevOverTime => variance().sqrt(),
        RangeOp::QuantileOverTime => quantile(param.unwrap_or(f64::NAN), values().collect()),
        RangeOp::FirstOverTime => samples.first()?.1,
        RangeOp::LastOverTime => samples.last()?.1,
        RangeOp::RateCounter => counter_rate(samples, range_secs, window_start, window_end)?,
        RangeOp::AbsentOverTime => return None,
    })
}

/// Prometheus' `quantile`: linear interpolation between the closest ranks.
pub(super) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Prometheus' extrapolated `rate` of a counter: resets add the value before them, the
/// increase is extrapolated to the window edges (at most half an average interval beyond
/// the samples, and not below zero), then divided by the range.
fn counter_rate(samples: &[(i64, f64)], range_secs: f64, window_start: i64, window_end: i64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut increase = last.1 - first.1;
    for pair in samples.windows(2) {
        if pair[1].1 < pair[0].1 {
            increase += pair[0].1;
        }
    }
    let sampled = (last.0 - first.0) as f64 / 1e9;
    if sampled <= 0.0 {
        return None;
    }
    let mut to_start = (first.0 - window_start) as f64 / 1e9;
    let to_end = (window_end - last.0) as f64 / 1e9;
    let average_interval = sampled / (samples.len() - 1) as f64;
    if increase > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / increase);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_interval * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { average_interval / 2.0 };
    interval += if to_end < threshold { to_end } else { average_interval / 2.0 };
    Some(increase * (interval / sampled) / range_secs)
}
