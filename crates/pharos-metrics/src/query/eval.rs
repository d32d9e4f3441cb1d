//! Step-wise evaluation of a parsed expression against a [`SeriesSource`].
//!
//! Every node is evaluated at one timestamp at a time; a range query evaluates the whole
//! expression once per step. Series are fetched once per selector for the whole time range
//! the query can touch, then sliced per step, so storage sees one read per selector.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher as ParserMatcher};
use promql_parser::parser::{AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};

use crate::model::{Labels, METRIC_NAME, Sample, Series, is_stale_nan};

use super::engine::{EngineOptions, QueryLimits};
use super::error::QueryError;
use super::quantile::MonotonicFix;
use super::source::{Matcher, SeriesSource, compile_anchored};
use super::value::{InstantSample, Points, RangeSeries, RangeWindow, Value};
use super::{aggregate, binary, functions, rollup};

pub(crate) struct Evaluator<'a> {
    source: &'a dyn SeriesSource,
    lookback: i64,
    subquery_step: i64,
    pub(crate) query_start: i64,
    pub(crate) query_end: i64,
    pub(crate) query_step: i64,
    mint: i64,
    maxt: i64,
    cache: RefCell<HashMap<usize, Rc<Vec<Series>>>>,
    /// Per range selector, per fetched series: where its last window started and ended
    /// (the steps of a range query move forward, so the next window is found from there).
    cursors: RefCell<HashMap<usize, Vec<(usize, usize)>>>,
    /// Per aggregation node of a range query evaluated series by series: its vector at
    /// every step (`None`: not of that shape).
    rollups: RefCell<HashMap<usize, Option<Rc<rollup::StepVectors>>>>,
    /// Whether aggregations may be evaluated series by series (off to compare with the
    /// step-by-step evaluation).
    pub(crate) series_by_series: bool,
    limits: QueryLimits,
    retained: Cell<usize>,
    step_samples: Cell<usize>,
    /// Warnings and infos so far, each once.
    warnings: RefCell<Vec<String>>,
    infos: RefCell<Vec<String>>,
    /// Per metric name, the buckets `histogram_quantile` made monotonic, merged over the steps
    /// (one info each at the end, as Prometheus merges them).
    monotonic_fixes: RefCell<Vec<(String, MonotonicFixes)>>,
}

/// [`MonotonicFix`]es of one metric merged: the buckets, the largest raise, how many and when.
struct MonotonicFixes {
    fix: MonotonicFix,
    first: i64,
    last: i64,
    count: usize,
}

/// A float as Go's `%g` prints it (in annotations, which quote Prometheus's wording).
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Shortest digits, in exponent form below 1e-4 and from 1e6 (`%g`'s precision 6).
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e6).contains(&a) {
        // `1e21` → `1e+21`, `1e-5` → `1e-05`.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{v}")
}

/// ` for metric name "x"`, as Prometheus ends an annotation about metric `x` (nothing when the
/// name is empty).
pub(crate) fn for_metric_name(name: &str) -> String {
    if name.is_empty() { String::new() } else { format!(" for metric name {name:?}") }
}

/// A float as Go's `%.{digits}g` prints it: `digits` significant digits, trailing zeros dropped.
pub(crate) fn go_float_digits(v: f64, digits: usize) -> String {
    if !v.is_finite() || v == 0.0 {
        return go_float(v);
    }
    let e = format!("{:.*e}", digits.saturating_sub(1), v);
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |m: &str| -> String {
        if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.').to_owned() } else { m.to_owned() }
    };
    if exp < -4 || exp >= digits as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa), exp.abs());
    }
    let decimals = (digits as i32 - 1 - exp).max(0) as usize;
    trim(&format!("{v:.decimals$}"))
}

/// Milliseconds since the epoch as RFC 3339 in whole seconds, UTC (`2024-01-02T03:04:05Z`).
pub(crate) fn rfc3339_seconds(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let (y, m, d) = functions::civil_from_days(s.div_euclid(86_400));
    let day = s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", day / 3600, day % 3600 / 60, day % 60)
}

/// Adds `prefix` + `what()` to `list` unless it is there (lists stay short: a few messages).
fn note(list: &RefCell<Vec<String>>, prefix: &str, what: impl FnOnce() -> String) {
    let message = format!("{prefix}{}", what());
    let mut list = list.borrow_mut();
    if !list.contains(&message) {
        list.push(message);
    }
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn offset_ms(o: Option<&Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// The samples of the window `(start, end]` as positions `lo..hi` (`None` when empty),
/// found from where the previous window of the same series was (`cursor`, updated).
pub(crate) fn window_at(
    samples: &[Sample],
    cursor: &mut (usize, usize),
    start: i64,
    end: i64,
) -> Option<(usize, usize)> {
    let lo = seek_after(samples, cursor.0, start);
    let hi = seek_after(samples, cursor.1.max(lo), end);
    *cursor = (lo, hi);
    (lo < hi).then_some((lo, hi))
}

/// The position of the first sample after `t` (the number of samples at or before it), looked
/// for from `hint` onwards when `hint` is not past it (a few steps, then a binary search), else
/// in the whole slice.
fn seek_after(samples: &[Sample], hint: usize, t: i64) -> usize {
    if hint > samples.len() || (hint > 0 && samples[hint - 1].t > t) {
        return samples.partition_point(|p| p.t <= t);
    }
    let near = (hint + 8).min(samples.len());
    let mut i = hint;
    while i < near && samples[i].t <= t {
        i += 1;
    }
    if i < near || i == samples.len() {
        return i;
    }
    i + samples[i..].partition_point(|p| p.t <= t)
}

/// Removes any number of enclosing parentheses.
pub(crate) fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        source: &'a dyn SeriesSource,
        opts: &EngineOptions,
        limits: QueryLimits,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Self, QueryError> {
        let mut ev = Self {
            source,
            lookback: duration_ms(&opts.lookback_delta),
            subquery_step: duration_ms(&opts.default_subquery_step).max(1),
            query_start: start,
            query_end: end,
            query_step: step,
            mint: i64::MAX,
            maxt: i64::MIN,
            cache: RefCell::new(HashMap::new()),
            cursors: RefCell::new(HashMap::new()),
            rollups: RefCell::new(HashMap::new()),
            series_by_series: true,
            limits,
            retained: Cell::new(0),
            step_samples: Cell::new(0),
            warnings: RefCell::new(Vec::new()),
            infos: RefCell::new(Vec::new()),
            monotonic_fixes: RefCell::new(Vec::new()),
        };
        let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
        ev.walk_bounds(expr, start, end, &mut mint, &mut maxt);
        ev.mint = mint;
        ev.maxt = maxt;
        Ok(ev)
    }

    /// Notes a warning (`PromQL warning: ` and `what`), once.
    pub(crate) fn warn(&self, what: impl FnOnce() -> String) {
        note(&self.warnings, "PromQL warning: ", what);
    }

    /// Notes an info (`PromQL info: ` and `what`), once.
    pub(crate) fn info(&self, what: impl FnOnce() -> String) {
        note(&self.infos, "PromQL info: ", what);
    }

    /// Notes a quantile parameter outside [0, 1] (it gives ±Inf or NaN), as `quantile`,
    /// `quantile_over_time` and `histogram_quantile(s)` warn of it.
    pub(crate) fn note_quantile(&self, q: f64) {
        if q.is_nan() || !(0.0..=1.0).contains(&q) {
            self.warn(|| format!("quantile value should be between 0 and 1, got {}", go_float(q)));
        }
    }

    /// Notes, for `rate` or `increase` of a series that gave a value, when its name does not
    /// look like a counter's (Prometheus's suffix rule).
    pub(crate) fn note_rate_input(&self, labels: &Labels) {
        let name = labels.get(METRIC_NAME);
        if name.is_empty() || ["_total", "_sum", "_count", "_bucket"].iter().any(|s| name.ends_with(s)) {
            return;
        }
        // Noted already (every series of the name gets here): without making the message.
        let noted = |m: &String| {
            m.strip_suffix('"').and_then(|m| m.strip_suffix(name)).is_some_and(|m| m.ends_with(": \""))
        };
        if self.infos.borrow().iter().any(noted) {
            return;
        }
        self.info(|| {
            format!(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
            )
        });
    }

    /// Notes that `histogram_quantile` made the buckets of `name` monotonic at `t`.
    pub(crate) fn note_monotonic_fix(&self, name: &str, t: i64, fix: MonotonicFix) {
        let mut fixes = self.monotonic_fixes.borrow_mut();
        match fixes.iter_mut().find(|(n, _)| n == name) {
            Some((_, m)) => {
                m.fix.min_bucket = m.fix.min_bucket.min(fix.min_bucket);
                m.fix.max_bucket = m.fix.max_bucket.max(fix.max_bucket);
                m.fix.max_diff = m.fix.max_diff.max(fix.max_diff);
                m.first = m.first.min(t);
                m.last = m.last.max(t);
                m.count += 1;
            }
            None => fixes.push((name.to_owned(), MonotonicFixes { fix, first: t, last: t, count: 1 })),
        }
    }

    /// The warnings and infos noted.
    pub(crate) fn take_annotations(&self) -> super::engine::Annotations {
        for (name, m) in self.monotonic_fixes.take() {
            let of = for_metric_name(&name);
            self.info(|| {
                format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile){of}, from buckets {} to {}, with a max diff of {}, over {} samples from {} to {}",
                    go_float(m.fix.min_bucket),
                    go_float(m.fix.max_bucket),
                    go_float_digits(m.fix.max_diff, 2),
                    m.count,
                    rfc3339_seconds(m.first),
                    rfc3339_seconds(m.last),
                )
            });
        }
        super::engine::Annotations { warnings: self.warnings.take(), infos: self.infos.take() }
    }

    pub(crate) fn at_time(&self, at: Option<&AtModifier>, t: i64) -> i64 {
        match at {
            None => t,
            Some(AtModifier::Start) => self.query_start,
            Some(AtModifier::End) => self.query_end,
            Some(AtModifier::At(st)) => system_time_ms(st),
        }
    }

    /// Widens `[mint, maxt]` to every sample time a selector under `expr` may read when
    /// `expr` is evaluated at times in `[lo, hi]`.
    fn walk_bounds(&self, expr: &Expr, lo: i64, hi: i64, mint: &mut i64, maxt: &mut i64) {
        let mut widen = |a: i64, b: i64| {
            *mint = (*mint).min(a);
            *maxt = (*maxt).max(b);
        };
        match expr {
            Expr::VectorSelector(vs) => {
                let (a, b) = self.anchor(vs.at.as_ref(), vs.offset.as_ref(), lo, hi);
                widen(a.saturating_sub(self.lookback), b);
            }
            Expr::MatrixSelector(ms) => {
                let (a, b) = self.anchor(ms.vs.at.as_ref(), ms.vs.offset.as_ref(), lo, hi);
                widen(a.saturating_sub(duration_ms(&ms.range)), b);
            }
            Expr::Subquery(sq) => {
                let (a, b) = self.anchor(sq.at.as_ref(), sq.offset.as_ref(), lo, hi);
                let a = a.saturating_sub(duration_ms(&sq.range));
                self.walk_bounds(&sq.expr, a, b, mint, maxt);
            }
            Expr::Aggregate(ag) => {
                self.walk_bounds(&ag.expr, lo, hi, mint, maxt);
                if let Some(p) = &ag.param {
                    self.walk_bounds(p, lo, hi, mint, maxt);
                }
            }
            Expr::Unary(u) => self.walk_bounds(&u.expr, lo, hi, mint, maxt),
            Expr::Paren(p) => self.walk_bounds(&p.expr, lo, hi, mint, maxt),
            Expr::Binary(b) => {
                self.walk_bounds(&b.lhs, lo, hi, mint, maxt);
                self.walk_bounds(&b.rhs, lo, hi, mint, maxt);
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.walk_bounds(a, lo, hi, mint, maxt);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    fn anchor(&self, at: Option<&AtModifier>, off: Option<&Offset>, lo: i64, hi: i64) -> (i64, i64) {
        let off = offset_ms(off);
        match at {
            None => (lo.saturating_sub(off), hi.saturating_sub(off)),
            Some(a) => {
                let t = self.at_time(Some(a), lo).saturating_sub(off);
                (t, t)
            }
        }
    }

    /// Points the caller of a range query already holds (they count against the limit).
    pub(crate) fn set_retained(&self, n: usize) {
        self.retained.set(n);
    }

    /// Evaluates the top-level expression at one step.
    pub(crate) fn eval_top(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        self.step_samples.set(0);
        self.eval(expr, t)
    }

    /// The query's limits (deadline, cancellation, samples).
    pub(crate) fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    pub(crate) fn count_samples(&self, n: usize) -> Result<(), QueryError> {
        let total = self.step_samples.get().saturating_add(n);
        self.step_samples.set(total);
        if total.saturating_add(self.retained.get()) > self.limits.max_samples {
            return Err(QueryError::TooManySamples { limit: self.limits.max_samples });
        }
        Ok(())
    }

    pub(crate) fn eval(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        self.limits.check()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(mut vec) => {
                    for s in &mut vec {
                        s.v = -s.v;
                        s.drop_name = true;
                    }
                    Ok(Value::Vector(vec))
                }
                _ => Err(QueryError::Unsupported { what: "unary minus on a non-numeric value".into() }),
            },
            Expr::VectorSelector(vs) => {
                let points = self.select_vector(vs, t)?;
                Ok(Value::Vector(
                    points
                        .into_iter()
                        .map(|(labels, _, v)| InstantSample { labels, v, drop_name: false })
                        .collect(),
                ))
            }
            Expr::MatrixSelector(ms) => {
                let (m, w) = self.select_matrix(ms, t)?;
                Ok(Value::Matrix(m, w))
            }
            Expr::Subquery(sq) => {
                let (m, w) = self.eval_subquery(sq, t)?;
                Ok(Value::Matrix(m, w))
            }
            Expr::Call(c) => functions::eval_call(self, c, t),
            Expr::Aggregate(a) => match self.rolled_up(expr, t)? {
                Some(vector) => Ok(Value::Vector(vector)),
                None => aggregate::eval_aggregate(self, a, t),
            },
            Expr::Binary(b) => binary::eval_binary(self, b, t),
            Expr::Extension(_) => Err(QueryError::Unsupported { what: "extension expressions".into() }),
        }
    }

    /// The vector of an aggregation evaluated series by series for every step of the range
    /// query (at its first use), when it has that shape and `t` is one of the steps.
    fn rolled_up(&self, expr: &Expr, t: i64) -> Result<Option<Vec<InstantSample>>, QueryError> {
        let step = self.query_step;
        if !self.series_by_series
            || step <= 0
            || t < self.query_start
            || t > self.query_end
            || (t - self.query_start) % step != 0
        {
            return Ok(None);
        }
        let key = expr as *const Expr as usize;
        let known = self.rollups.borrow().get(&key).cloned();
        let vectors = match known {
            Some(v) => v,
            None => {
                let v = match rollup::step_vectors(self, expr) {
                    Some(r) => Some(Rc::new(r?)),
                    None => None,
                };
                self.rollups.borrow_mut().insert(key, v.clone());
                v
            }
        };
        let k = ((t - self.query_start) / step) as usize;
        let Some(v) = vectors else { return Ok(None) };
        let Some(vector) = v.vectors.get(k) else { return Ok(None) };
        self.count_samples(v.selected[k])?;
        Ok(Some(vector.clone()))
    }

    /// Evaluates an expression that must yield a scalar (function or aggregation parameter).
    pub(crate) fn eval_scalar(&self, expr: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(QueryError::Unsupported { what: format!("expected a scalar for {expr}") }),
        }
    }

    /// Evaluates an expression that must yield an instant vector.
    pub(crate) fn eval_vector(&self, expr: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            _ => Err(QueryError::Unsupported { what: format!("expected an instant vector for {expr}") }),
        }
    }

    /// Evaluates a range-vector argument (a range selector or a subquery).
    pub(crate) fn eval_range(
        &self,
        expr: &Expr,
        t: i64,
    ) -> Result<(Vec<RangeSeries>, RangeWindow), QueryError> {
        match self.eval(unparen(expr), t)? {
            Value::Matrix(m, w) => Ok((m, w)),
            _ => Err(QueryError::Unsupported { what: format!("expected a range vector for {expr}") }),
        }
    }

    pub(crate) fn fetch(&self, vs: &VectorSelector) -> Result<Rc<Vec<Series>>, QueryError> {
        let key = vs as *const VectorSelector as usize;
        if let Some(s) = self.cache.borrow().get(&key) {
            return Ok(Rc::clone(s));
        }
        let groups = selector_matchers(vs)?;
        let mut all: Vec<Series> = Vec::new();
        if self.mint <= self.maxt {
            for g in &groups {
                all.extend(self.source.select(g, self.mint, self.maxt)?);
            }
        }
        if groups.len() > 1 {
            all.sort_by(|a, b| a.labels.cmp(&b.labels));
            all.dedup_by(|a, b| a.labels == b.labels);
        }
        let all = Rc::new(all);
        self.cache.borrow_mut().insert(key, Rc::clone(&all));
        Ok(all)
    }

    /// The sample each series has at `t` (with lookback, offset and `@`), as
    /// `(labels, sample timestamp, value)`.
    pub(crate) fn select_vector(
        &self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, QueryError> {
        let series = self.fetch(vs)?;
        let ref_t = self.at_time(vs.at.as_ref(), t).saturating_sub(offset_ms(vs.offset.as_ref()));
        let mut out = Vec::new();
        for s in series.iter() {
            let idx = s.samples.partition_point(|p| p.t <= ref_t);
            if idx == 0 {
                continue;
            }
            let p = s.samples[idx - 1];
            if p.t <= ref_t.saturating_sub(self.lookback) || is_stale_nan(p.v) {
                continue;
            }
            out.push((s.labels.clone(), p.t, p.v));
        }
        self.count_samples(out.len())?;
        Ok(out)
    }

    fn select_matrix(
        &self,
        ms: &MatrixSelector,
        t: i64,
    ) -> Result<(Vec<RangeSeries>, RangeWindow), QueryError> {
        let series = self.fetch(&ms.vs)?;
        let end = self.at_time(ms.vs.at.as_ref(), t).saturating_sub(offset_ms(ms.vs.offset.as_ref()));
        let start = end.saturating_sub(duration_ms(&ms.range));
        let mut out = Vec::new();
        let mut n = 0;
        let mut cursors = self.cursors.borrow_mut();
        let cursors =
            cursors.entry(ms as *const MatrixSelector as usize).or_insert_with(|| vec![(0, 0); series.len()]);
        for (index, s) in series.iter().enumerate() {
            let Some((lo, hi)) = window_at(&s.samples, &mut cursors[index], start, end) else { continue };
            let window = &s.samples[lo..hi];
            let points = if window.iter().any(|p| is_stale_nan(p.v)) {
                let kept: Vec<Sample> = window.iter().filter(|p| !is_stale_nan(p.v)).copied().collect();
                if kept.is_empty() {
                    continue;
                }
                Points::Owned(kept)
            } else {
                Points::Window { series: Rc::clone(&series), index, from: lo, to: hi }
            };
            n += points.len();
            out.push(RangeSeries { labels: s.labels.clone(), points, drop_name: false });
        }
        self.count_samples(n)?;
        Ok((out, RangeWindow { start, end }))
    }

    fn eval_subquery(
        &self,
        sq: &SubqueryExpr,
        t: i64,
    ) -> Result<(Vec<RangeSeries>, RangeWindow), QueryError> {
        let end = self.at_time(sq.at.as_ref(), t).saturating_sub(offset_ms(sq.offset.as_ref()));
        let range = duration_ms(&sq.range);
        let step = sq.step.as_ref().map_or(self.subquery_step, duration_ms).max(1);
        let start = end.saturating_sub(range);
        // First step-aligned timestamp strictly after the window start.
        let mut ts = step * (start / step);
        if ts <= start {
            ts += step;
        }
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<RangeSeries> = Vec::new();
        let mut n = 0;
        while ts <= end {
            let samples = match self.eval(&sq.expr, ts)? {
                Value::Scalar(v) => vec![InstantSample { labels: Labels::empty(), v, drop_name: false }],
                Value::Vector(v) => v,
                _ => {
                    return Err(QueryError::Unsupported {
                        what: "subquery of a non-numeric expression".into(),
                    });
                }
            };
            for s in samples {
                let i = match index.get(&s.labels) {
                    Some(&i) => {
                        if out[i].points.last().is_some_and(|p| p.t == ts) {
                            return Err(QueryError::DuplicateLabelset);
                        }
                        i
                    }
                    None => {
                        index.insert(s.labels.clone(), out.len());
                        out.push(RangeSeries {
                            labels: s.labels,
                            points: Points::new(),
                            drop_name: s.drop_name,
                        });
                        out.len() - 1
                    }
                };
                out[i].points.push(Sample { t: ts, v: s.v });
                n += 1;
            }
            ts += step;
        }
        self.count_samples(n)?;
        Ok((out, RangeWindow { start, end }))
    }
}

/// The matcher groups of a selector (one group, or one per `or` alternative), each with
/// the metric name matcher when the selector names a metric.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let mut groups: Vec<Vec<&ParserMatcher>> = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        groups.push(vs.matchers.matchers.iter().collect());
    } else {
        for g in &vs.matchers.or_matchers {
            groups.push(g.iter().chain(vs.matchers.matchers.iter()).collect());
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut ms = Vec::with_capacity(g.len() + 1);
        if let Some(name) = &vs.name {
            ms.push(Matcher::equal(METRIC_NAME, name));
        }
        for m in g {
            ms.push(convert_matcher(m)?);
        }
        out.push(ms);
    }
    Ok(out)
}

fn convert_matcher(m: &ParserMatcher) -> Result<Matcher, QueryError> {
    match &m.op {
        MatchOp::Equal => Ok(Matcher::equal(&m.name, &m.value)),
        MatchOp::NotEqual => Ok(Matcher::not_equal(&m.name, &m.value)),
        MatchOp::Re(parsed) | MatchOp::NotRe(parsed) => {
            let negated = matches!(m.op, MatchOp::NotRe(_));
            match Matcher::regex(&m.name, &m.value, negated) {
                Ok(x) => Ok(x),
                // Go accepts some patterns Rust rejects (a literal `{`); the parser has
                // already escaped those in its own compiled (anchored) form.
                Err(first) => {
                    let re = compile_anchored(parsed.as_str()).map_err(|_| first)?;
                    Ok(Matcher {
                        name: m.name.clone(),
                        kind: if negated {
                            super::source::MatchKind::NotRegex(re)
                        } else {
                            super::source::MatchKind::Regex(re)
                        },
                        value: m.value.clone(),
                    })
                }
            }
        }
    }
}

/// Label matchers of a selector argument, as `absent()` needs them.
pub(crate) fn selector_of(expr: &Expr) -> Option<&VectorSelector> {
    match unparen(expr) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_after_agrees_with_a_binary_search_from_any_hint() {
        // Timestamps with gaps and repeats of the same step.
        let samples: Vec<Sample> =
            (0..100).map(|i| Sample { t: (i * 15 + (i / 7) * 100) as i64, v: 0.0 }).collect();
        let last = samples.last().map_or(0, |s| s.t);
        for t in (-20..last + 40).step_by(7) {
            let want = samples.partition_point(|p| p.t <= t);
            for hint in 0..=samples.len() + 1 {
                assert_eq!(seek_after(&samples, hint, t), want, "t={t} hint={hint}");
            }
        }
        assert_eq!(seek_after(&[], 0, 5), 0);
    }
}
