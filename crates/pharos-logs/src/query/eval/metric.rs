//! Metric queries: expressions evaluated at every step at once, as per-step vectors over a
//! shared table of series labels.

use std::collections::HashMap;

use super::range::{self, Grouping};
use super::series::SeriesIndex;
use super::{
    Budget, EvalError, Limits, MAX_STEPS, Needs, QueryValue, Sample, Series, Stats, compile_anchored, read,
};
use crate::model::{Labels, LogSource};
use crate::query::{
    BinaryExpr, BinaryOp, Expr, LabelReplace, MetricExpr, RangeAggregation, RangeOp, VectorAggregation,
    VectorMatching, VectorOp,
};

/// A vector at each step: `steps[i]` holds `(series id, value)` for the series present at
/// step `i`; ids index `labels`.
#[derive(Debug, Clone)]
pub(super) struct StepVectors {
    pub(super) labels: Vec<Labels>,
    pub(super) steps: Vec<Vec<(u32, f64)>>,
}

impl StepVectors {
    pub(super) fn new(steps: usize) -> Self {
        Self { labels: Vec::new(), steps: vec![Vec::new(); steps] }
    }

    pub(super) fn add_series(&mut self, labels: Labels) -> u32 {
        self.labels.push(labels);
        (self.labels.len() - 1) as u32
    }
}

enum Value {
    Scalar(f64),
    Vector(StepVectors),
}

struct Ctx<'a> {
    source: &'a dyn LogSource,
    steps: Vec<i64>,
    limits: &'a Limits,
    stats: Stats,
    budget: Budget,
}

/// Evaluates a metric query at `time` (unix nanoseconds): a vector (sorted by labels, or by
/// value for `sort`/`sort_desc`) or a scalar.
///
/// ```
/// use pharos_logs::model::{Entry, Labels, MemSource};
/// use pharos_logs::query::{Limits, QueryValue, evaluate_instant, parse};
///
/// let mut source = MemSource::default();
/// let stream = Labels::new([("app".to_string(), "api".to_string())]);
/// for (secs, line) in [(1, "level=info"), (2, "level=error"), (3, "level=info")] {
///     let entry = Entry { timestamp: secs * 1_000_000_000, line: line.into(), metadata: vec![] };
///     source.push(&stream, entry);
/// }
/// let expr = parse(r#"sum by (level) (count_over_time({app="api"} | logfmt [1m]))"#).unwrap();
/// let (value, _stats) = evaluate_instant(&expr, &source.finish(), 60_000_000_000, &Limits::default()).unwrap();
/// let QueryValue::Vector(samples) = value else { panic!("a vector") };
/// let got: Vec<_> = samples.iter().map(|s| (s.labels.to_string(), s.value)).collect();
/// assert_eq!(got, [(r#"{level="error"}"#.to_string(), 1.0), (r#"{level="info"}"#.to_string(), 2.0)]);
/// ```
pub fn evaluate_instant(
    expr: &Expr,
    source: &dyn LogSource,
    time: i64,
    limits: &Limits,
) -> Result<(QueryValue, Stats), EvalError> {
    let expr = metric_expr(expr)?;
    let mut ctx = Ctx {
        source,
        steps: vec![time],
        limits,
        stats: Stats::default(),
        budget: Budget::new(limits.deadline),
    };
    ctx.budget.check()?;
    let value = match eval(expr, &mut ctx, None)? {
        Value::Scalar(v) => QueryValue::Scalar(v),
        Value::Vector(vectors) => {
            let StepVectors { labels, mut steps } = vectors;
            let step = steps.pop().unwrap_or_default();
            if step.len() > limits.max_series {
                return Err(EvalError::TooManySeries { limit: limits.max_series });
            }
            let mut samples: Vec<Sample> = step
                .into_iter()
                .map(|(id, value)| Sample { labels: labels[id as usize].clone(), timestamp: time, value })
                .collect();
            match top_sort(expr) {
                Some(descending) => samples.sort_by(|a, b| {
                    let ord = a.value.total_cmp(&b.value);
                    if descending { ord.reverse() } else { ord }.then_with(|| a.labels.cmp(&b.labels))
                }),
                None => samples.sort_by(|a, b| a.labels.cmp(&b.labels)),
            }
            ctx.stats.entries_returned = samples.len() as u64;
            QueryValue::Vector(samples)
        }
    };
    Ok((value, ctx.stats))
}

/// Evaluates a metric query at `start`, `start + step`, ... up to `end` inclusive (unix
/// nanoseconds): a matrix sorted by labels (a scalar gives one series without labels).
pub fn evaluate_range(
    expr: &Expr,
    source: &dyn LogSource,
    start: i64,
    end: i64,
    step: i64,
    limits: &Limits,
) -> Result<(QueryValue, Stats), EvalError> {
    let expr = metric_expr(expr)?;
    let invalid = |reason| EvalError::InvalidRange { start, end, step, reason };
    if step <= 0 {
        return Err(invalid("the step must be positive"));
    }
    if end < start {
        return Err(invalid("the end must not be before the start"));
    }
    let last_step = (i128::from(end) - i128::from(start)) / i128::from(step);
    if last_step >= i128::from(MAX_STEPS) {
        return Err(invalid("more than 11000 steps; use a larger step"));
    }
    // `start + i * step` never passes `end`, so it fits; the product alone may not.
    let steps: Vec<i64> =
        (0..=last_step).map(|i| (i128::from(start) + i * i128::from(step)) as i64).collect();
    let mut ctx =
        Ctx { source, steps, limits, stats: Stats::default(), budget: Budget::new(limits.deadline) };
    ctx.budget.check()?;
    let vectors = match eval(expr, &mut ctx, None)? {
        Value::Scalar(v) => {
            let mut out = StepVectors::new(ctx.steps.len());
            let id = out.add_series(Labels::default());
            for step in &mut out.steps {
                step.push((id, v));
            }
            out
        }
        Value::Vector(vectors) => vectors,
    };
    let mut points: Vec<Vec<(i64, f64)>> = vec![Vec::new(); vectors.labels.len()];
    for (step, samples) in vectors.steps.iter().enumerate() {
        for &(id, value) in samples {
            points[id as usize].push((ctx.steps[step], value));
        }
    }
    let mut series: Vec<Series> = vectors
        .labels
        .into_iter()
        .zip(points)
        .filter(|(_, points)| !points.is_empty())
        .map(|(labels, points)| Series { labels, points })
        .collect();
    if series.len() > limits.max_series {
        return Err(EvalError::TooManySeries { limit: limits.max_series });
    }
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    ctx.stats.entries_returned = series.iter().map(|s| s.points.len() as u64).sum();
    Ok((QueryValue::Matrix(series), ctx.stats))
}

fn metric_expr(expr: &Expr) -> Result<&MetricExpr, EvalError> {
    expr.as_metric().ok_or_else(|| EvalError::Unsupported {
        what: "a log query in a metric evaluation (use select_logs)".into(),
    })
}

/// `Some(descending)` when the expression's outermost operation is `sort` or `sort_desc`.
fn top_sort(expr: &MetricExpr) -> Option<bool> {
    match expr {
        MetricExpr::VectorAggregation(agg) if agg.op == VectorOp::Sort => Some(false),
        MetricExpr::VectorAggregation(agg) if agg.op == VectorOp::SortDesc => Some(true),
        _ => None,
    }
}

fn eval(expr: &MetricExpr, ctx: &mut Ctx<'_>, pushed: Option<&Grouping>) -> Result<Value, EvalError> {
    ctx.budget.check()?;
    Ok(match expr {
        MetricExpr::Literal(v) => Value::Scalar(*v),
        MetricExpr::Vector(v) => {
            let mut out = StepVectors::new(ctx.steps.len());
            let id = out.add_series(Labels::default());
            for step in &mut out.steps {
                step.push((id, *v));
            }
            Value::Vector(out)
        }
        MetricExpr::RangeAggregation(agg) => Value::Vector(eval_range(agg, ctx, pushed)?),
        MetricExpr::VectorAggregation(agg) => Value::Vector(eval_vector_aggregation(agg, ctx)?),
        MetricExpr::Binary(binary) => eval_binary(binary, ctx)?,
        MetricExpr::LabelReplace(replace) => {
            let Value::Vector(input) = eval(&replace.expr, ctx, None)? else {
                return Err(EvalError::Unsupported { what: "label_replace of a scalar".into() });
            };
            Value::Vector(label_replace(replace, input)?)
        }
    })
}

fn eval_range(
    agg: &RangeAggregation,
    ctx: &mut Ctx<'_>,
    pushed: Option<&Grouping>,
) -> Result<StepVectors, EvalError> {
    let range_ns = range::duration_ns(agg.range.range);
    let offset_ns = range::duration_ns(agg.range.offset);
    let first = ctx.steps.first().copied().unwrap_or_default();
    let last = ctx.steps.last().copied().unwrap_or_default();
    // Windows are (t - range - offset, t - offset]; the source reads [from, to).
    let from = first.saturating_sub(offset_ns).saturating_sub(range_ns).saturating_add(1);
    let to = last.saturating_sub(offset_ns).saturating_add(1);
    let grouping = range::extraction_grouping(agg, pushed);
    let lines = lines_needed(agg);
    let needs = Needs { metadata: metadata_needed(agg, &grouping), lines };
    let streams = read(ctx.source, &agg.range.query, from, to, needs, &mut ctx.stats, ctx.limits)?;
    let extracted = range::extract(agg, &grouping, streams, !lines, &mut ctx.budget)?;
    range::aggregate(agg, extracted, &ctx.steps, &mut ctx.budget)
}

/// Whether a range aggregation reads its lines past the source's line test: not when it
/// counts entries (no unwrap, not bytes) and its pipeline only filters, every line filter
/// being one the source applies.
fn lines_needed(agg: &RangeAggregation) -> bool {
    use crate::query::{RangeOp, Stage};
    agg.range.unwrap.is_some()
        || matches!(agg.op, RangeOp::BytesOverTime | RangeOp::BytesRate)
        || agg.range.query.pipeline.iter().any(|s| !matches!(s, Stage::LineFilter(_) | Stage::LabelFilter(_)))
}

/// The structured metadata a range aggregation can use, when that is known to be a few names:
/// its samples are grouped `by` some labels and its pipeline only filters (no parser or
/// formatter, which could read or clash with any name), so the series see only the grouping
/// names, the unwrapped label and the names its label filters test. `None`: all of it.
fn metadata_needed(agg: &RangeAggregation, grouping: &Grouping) -> Option<std::sync::Arc<[String]>> {
    let Grouping::By(names) = grouping else { return None };
    let mut need: Vec<String> = names.clone();
    let mut filter_names = |filter: &crate::query::LabelFilter| {
        filter.for_each_comparison(&mut |leaf| {
            use crate::query::LabelFilter as F;
            match leaf {
                F::String(m) => need.push(m.name.clone()),
                F::Number { name, .. }
                | F::Duration { name, .. }
                | F::Bytes { name, .. }
                | F::Ip { name, .. } => need.push(name.clone()),
                F::And(..) | F::Or(..) => {}
            }
        })
    };
    for stage in &agg.range.query.pipeline {
        match stage {
            crate::query::Stage::LineFilter(_) => {}
            crate::query::Stage::LabelFilter(filter) => filter_names(filter),
            _ => return None,
        }
    }
    if let Some(unwrap) = &agg.range.unwrap {
        for filter in &unwrap.post_filters {
            filter_names(filter);
        }
        need.push(unwrap.label.clone());
    }
    Some(need.into())
}

/// The `by`/`without` of an aggregation as a grouping (none: everything in one group).
fn vector_grouping(agg: &VectorAggregation) -> Grouping {
    match &agg.grouping {
        None => Grouping::By(Vec::new()),
        Some(g) if g.without => Grouping::Without(g.labels.clone()),
        Some(g) => Grouping::By(g.labels.clone()),
    }
}

fn group_labels(labels: &Labels, grouping: &Grouping) -> Labels {
    let keep = |name: &str| match grouping {
        Grouping::All => true,
        Grouping::By(names) => names.iter().any(|n| n == name),
        Grouping::Without(names) => !names.iter().any(|n| n == name),
    };
    Labels::new(labels.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.to_owned(), v.to_owned())))
}

fn eval_vector_aggregation(agg: &VectorAggregation, ctx: &mut Ctx<'_>) -> Result<StepVectors, EvalError> {
    let grouping = vector_grouping(agg);
    // `sum` is linear: grouping the samples at extraction gives the same result.
    let pushed = match &agg.expr {
        MetricExpr::RangeAggregation(inner)
            if agg.op == VectorOp::Sum
                && inner.grouping.is_none()
                && matches!(
                    inner.op,
                    RangeOp::CountOverTime
                        | RangeOp::Rate
                        | RangeOp::BytesRate
                        | RangeOp::BytesOverTime
                        | RangeOp::SumOverTime
                ) =>
        {
            Some(&grouping)
        }
        _ => None,
    };
    let Value::Vector(input) = eval(&agg.expr, ctx, pushed)? else {
        return Err(EvalError::Unsupported { what: format!("{} of a scalar", agg.op.as_str()) });
    };
    match agg.op {
        VectorOp::Sort | VectorOp::SortDesc => Ok(input),
        VectorOp::Topk | VectorOp::Bottomk => Ok(select_k(agg, &grouping, input)),
        _ => Ok(aggregate(agg.op, &grouping, input)),
    }
}

#[derive(Clone, Copy)]
struct Acc {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl Acc {
    fn new(v: f64) -> Self {
        Self { count: 1.0, sum: v, min: v, max: v, mean: v, m2: 0.0 }
    }

    fn add(&mut self, v: f64) {
        self.count += 1.0;
        self.sum += v;
        if v < self.min || self.min.is_nan() {
            self.min = v;
        }
        if v > self.max || self.max.is_nan() {
            self.max = v;
        }
        let delta = v - self.mean;
        self.mean += delta / self.count;
        self.m2 += delta * (v - self.mean);
    }

    fn value(&self, op: VectorOp) -> f64 {
        match op {
            VectorOp::Sum => self.sum,
            VectorOp::Avg => self.sum / self.count,
            VectorOp::Min => self.min,
            VectorOp::Max => self.max,
            VectorOp::Count => self.count,
            VectorOp::Stdvar => self.m2 / self.count,
            VectorOp::Stddev => (self.m2 / self.count).sqrt(),
            VectorOp::Topk | VectorOp::Bottomk | VectorOp::Sort | VectorOp::SortDesc => f64::NAN,
        }
    }
}

fn aggregate(op: VectorOp, grouping: &Grouping, input: StepVectors) -> StepVectors {
    let mut index = SeriesIndex::new();
    let group_of: Vec<u32> = input.labels.iter().map(|l| index.id_of(group_labels(l, grouping))).collect();
    let mut accs: Vec<Option<Acc>> = vec![None; index.len()];
    let mut touched: Vec<u32> = Vec::new();
    let mut steps = Vec::with_capacity(input.steps.len());
    for samples in &input.steps {
        for &(id, v) in samples {
            let group = group_of[id as usize];
            match &mut accs[group as usize] {
                Some(acc) => acc.add(v),
                slot @ None => {
                    *slot = Some(Acc::new(v));
                    touched.push(group);
                }
            }
        }
        touched.sort_unstable();
        let mut out = Vec::with_capacity(touched.len());
        for &group in &touched {
            if let Some(acc) = accs[group as usize].take() {
                out.push((group, acc.value(op)));
            }
        }
        touched.clear();
        steps.push(out);
    }
    StepVectors { labels: index.into_labels(), steps }
}

fn select_k(agg: &VectorAggregation, grouping: &Grouping, input: StepVectors) -> StepVectors {
    let k = usize::try_from(agg.param.unwrap_or(1)).unwrap_or(usize::MAX);
    let mut index = SeriesIndex::new();
    let group_of: Vec<u32> = input.labels.iter().map(|l| index.id_of(group_labels(l, grouping))).collect();
    let top = agg.op == VectorOp::Topk;
    let labels = &input.labels;
    let steps = input
        .steps
        .iter()
        .map(|samples| {
            let mut by_group: HashMap<u32, Vec<(u32, f64)>> = HashMap::new();
            for &(id, v) in samples {
                by_group.entry(group_of[id as usize]).or_default().push((id, v));
            }
            let mut out = Vec::new();
            for (_, mut members) in by_group {
                // NaN ranks last either way; ties by labels, for a stable answer.
                members.sort_by(|a, b| {
                    let ord = match (a.1.is_nan(), b.1.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => b.1.total_cmp(&a.1),
                        _ => a.1.total_cmp(&b.1),
                    };
                    ord.then_with(|| labels[a.0 as usize].cmp(&labels[b.0 as usize]))
                });
                members.truncate(k);
                out.extend(members);
            }
            out
        })
        .collect();
    StepVectors { labels: input.labels, steps }
}

// ---- binary operators -----------------------------------------------------------------

fn eval_binary(binary: &BinaryExpr, ctx: &mut Ctx<'_>) -> Result<Value, EvalError> {
    let lhs = eval(&binary.lhs, ctx, None)?;
    let rhs = eval(&binary.rhs, ctx, None)?;
    let op = binary.op;
    Ok(match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            let (value, keep) = apply(op, a, b);
            Value::Scalar(if op.is_comparison() { f64::from(u8::from(keep)) } else { value })
        }
        (Value::Vector(v), Value::Scalar(s)) => Value::Vector(vector_scalar(binary, v, s, false)?),
        (Value::Scalar(s), Value::Vector(v)) => Value::Vector(vector_scalar(binary, v, s, true)?),
        (Value::Vector(l), Value::Vector(r)) => Value::Vector(vector_vector(binary, l, r)?),
    })
}

/// `a op b`: the arithmetic value, or for a comparison the left value and whether it holds.
fn apply(op: BinaryOp, a: f64, b: f64) -> (f64, bool) {
    match op {
        BinaryOp::Add => (a + b, true),
        BinaryOp::Sub => (a - b, true),
        BinaryOp::Mul => (a * b, true),
        BinaryOp::Div => (a / b, true),
        BinaryOp::Mod => (a % b, true),
        BinaryOp::Pow => (a.powf(b), true),
        BinaryOp::Eq => (a, a == b),
        BinaryOp::Neq => (a, a != b),
        BinaryOp::Gt => (a, a > b),
        BinaryOp::Gte => (a, a >= b),
        BinaryOp::Lt => (a, a < b),
        BinaryOp::Lte => (a, a <= b),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Unless => (a, true),
    }
}

fn vector_scalar(
    binary: &BinaryExpr,
    input: StepVectors,
    scalar: f64,
    scalar_left: bool,
) -> Result<StepVectors, EvalError> {
    let op = binary.op;
    if op.is_set_operator() {
        return Err(EvalError::Unsupported {
            what: format!("{} between a vector and a scalar", op.as_str()),
        });
    }
    let steps = input
        .steps
        .into_iter()
        .map(|samples| {
            samples
                .into_iter()
                .filter_map(|(id, v)| {
                    let (value, keep) = if scalar_left { apply(op, scalar, v) } else { apply(op, v, scalar) };
                    if !op.is_comparison() {
                        Some((id, value))
                    } else if binary.return_bool {
                        Some((id, f64::from(u8::from(keep))))
                    } else {
                        // A filter keeps the vector's value, whichever side it is on.
                        keep.then_some((id, v))
                    }
                })
                .collect()
        })
        .collect();
    Ok(StepVectors { labels: input.labels, steps })
}

/// The labels two series are matched on.
fn signature(labels: &Labels, matching: Option<&VectorMatching>) -> Labels {
    match matching {
        None => labels.clone(),
        Some(m) if m.on => group_labels(labels, &Grouping::By(m.labels.clone())),
        Some(m) => group_labels(labels, &Grouping::Without(m.labels.clone())),
    }
}

fn vector_vector(binary: &BinaryExpr, lhs: StepVectors, rhs: StepVectors) -> Result<StepVectors, EvalError> {
    let matching = binary.matching.as_ref();
    let mut sigs = SeriesIndex::new();
    let lsig: Vec<u32> = lhs.labels.iter().map(|l| sigs.id_of(signature(l, matching))).collect();
    let rsig: Vec<u32> = rhs.labels.iter().map(|l| sigs.id_of(signature(l, matching))).collect();
    if binary.op.is_set_operator() {
        return Ok(set_operation(binary.op, lhs, rhs, &lsig, &rsig));
    }
    let group = matching.and_then(|m| m.group.as_ref());
    // The "many" side (the left unless group_right) is matched against the "one" side.
    let many_left = group.is_none_or(|g| g.left);
    let (many, one, many_sig, one_sig) =
        if many_left { (&lhs, &rhs, &lsig, &rsig) } else { (&rhs, &lhs, &rsig, &lsig) };
    let mut out = SeriesIndex::new();
    let mut result_ids: HashMap<(u32, u32), u32> = HashMap::new();
    let mut steps = Vec::with_capacity(lhs.steps.len());
    for (step, many_samples) in many.steps.iter().enumerate() {
        let mut by_sig: HashMap<u32, (u32, f64)> = HashMap::new();
        for &(id, v) in &one.steps[step] {
            if by_sig.insert(one_sig[id as usize], (id, v)).is_some() {
                return Err(EvalError::ManyToMany {
                    signature: sigs.get(one_sig[id as usize]).to_string(),
                    side: if many_left { "right" } else { "left" },
                });
            }
        }
        if group.is_none() {
            let mut seen: HashMap<u32, ()> = HashMap::new();
            for &(id, _) in many_samples {
                let sig = many_sig[id as usize];
                if by_sig.contains_key(&sig) && seen.insert(sig, ()).is_some() {
                    return Err(EvalError::MultipleMatches { labels: sigs.get(sig).to_string() });
                }
            }
        }
        let mut results: Vec<(u32, f64)> = Vec::new();
        let mut produced: HashMap<u32, ()> = HashMap::new();
        for &(many_id, many_v) in many_samples {
            let Some(&(one_id, one_v)) = by_sig.get(&many_sig[many_id as usize]) else { continue };
            let (l, r) = if many_left { (many_v, one_v) } else { (one_v, many_v) };
            let (value, keep) = apply(binary.op, l, r);
            let value = if !binary.op.is_comparison() {
                value
            } else if binary.return_bool {
                f64::from(u8::from(keep))
            } else if keep {
                l
            } else {
                continue;
            };
            let key = (many_id, one_id);
            let id = match result_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let labels =
                        result_labels(&many.labels[many_id as usize], &one.labels[one_id as usize], binary);
                    let id = out.id_of(labels);
                    result_ids.insert(key, id);
                    id
                }
            };
            if produced.insert(id, ()).is_some() {
                return Err(EvalError::MultipleMatches { labels: out.get(id).to_string() });
            }
            results.push((id, value));
        }
        steps.push(results);
    }
    Ok(StepVectors { labels: out.into_labels(), steps })
}

/// Prometheus' result labels: one-to-one keeps the `on` labels (or drops the `ignoring`
/// ones); with `group_x` the "many" side's labels plus the listed labels of the "one" side.
fn result_labels(many: &Labels, one: &Labels, binary: &BinaryExpr) -> Labels {
    let Some(matching) = &binary.matching else { return many.clone() };
    match &matching.group {
        None if matching.on => group_labels(many, &Grouping::By(matching.labels.clone())),
        None => group_labels(many, &Grouping::Without(matching.labels.clone())),
        Some(group) => {
            let mut pairs: Vec<(String, String)> = many
                .iter()
                .filter(|(k, _)| !group.labels.iter().any(|g| g == k))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            for name in &group.labels {
                if let Some(v) = one.get(name) {
                    pairs.push((name.clone(), v.to_owned()));
                }
            }
            Labels::new(pairs)
        }
    }
}

fn set_operation(
    op: BinaryOp,
    lhs: StepVectors,
    rhs: StepVectors,
    lsig: &[u32],
    rsig: &[u32],
) -> StepVectors {
    let mut out = SeriesIndex::new();
    let lids: Vec<u32> = lhs.labels.iter().map(|l| out.id_of(l.clone())).collect();
    let rids: Vec<u32> = if op == BinaryOp::Or {
        rhs.labels.iter().map(|l| out.id_of(l.clone())).collect()
    } else {
        Vec::new()
    };
    let steps = lhs
        .steps
        .iter()
        .zip(&rhs.steps)
        .map(|(left, right)| {
            let right_sigs: std::collections::HashSet<u32> =
                right.iter().map(|&(id, _)| rsig[id as usize]).collect();
            match op {
                BinaryOp::And => left
                    .iter()
                    .filter(|(id, _)| right_sigs.contains(&lsig[*id as usize]))
                    .map(|&(id, v)| (lids[id as usize], v))
                    .collect(),
                BinaryOp::Unless => left
                    .iter()
                    .filter(|(id, _)| !right_sigs.contains(&lsig[*id as usize]))
                    .map(|&(id, v)| (lids[id as usize], v))
                    .collect(),
                _ => {
                    let left_sigs: std::collections::HashSet<u32> =
                        left.iter().map(|&(id, _)| lsig[id as usize]).collect();
                    let mut samples: Vec<(u32, f64)> =
                        left.iter().map(|&(id, v)| (lids[id as usize], v)).collect();
                    samples.extend(
                        right
                            .iter()
                            .filter(|(id, _)| !left_sigs.contains(&rsig[*id as usize]))
                            .map(|&(id, v)| (rids[id as usize], v)),
                    );
                    samples
                }
            }
        })
        .collect();
    StepVectors { labels: out.into_labels(), steps }
}

// ---- label_replace --------------------------------------------------------------------

fn label_replace(replace: &LabelReplace, input: StepVectors) -> Result<StepVectors, EvalError> {
    let regex = compile_anchored(&replace.regex)?;
    let mut out = SeriesIndex::new();
    let ids: Vec<u32> = input
        .labels
        .iter()
        .map(|labels| {
            let src = labels.get(&replace.src).unwrap_or("");
            let Some(caps) = regex.captures(src) else { return out.id_of(labels.clone()) };
            let mut value = String::new();
            caps.expand(&replace.replacement, &mut value);
            let pairs = labels
                .iter()
                .filter(|(k, _)| *k != replace.dst)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .chain((!value.is_empty()).then(|| (replace.dst.clone(), value)));
            out.id_of(Labels::new(pairs))
        })
        .collect();
    let mut steps = Vec::with_capacity(input.steps.len());
    for samples in input.steps {
        let mut seen = std::collections::HashSet::new();
        let mut mapped = Vec::with_capacity(samples.len());
        for (id, v) in samples {
            let new = ids[id as usize];
            if !seen.insert(new) {
                return Err(EvalError::DuplicateSeries { labels: out.get(new).to_string() });
            }
            mapped.push((new, v));
        }
        steps.push(mapped);
    }
    Ok(StepVectors { labels: out.into_labels(), steps })
}
