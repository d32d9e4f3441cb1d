//! PromQL functions over float samples.

use std::cmp::Ordering;

use promql_parser::parser::{Call, Expr};

use crate::model::{Labels, METRIC_NAME, Sample};

use super::error::QueryError;
use super::eval::{Evaluator, for_metric_name, selector_of, unparen};
use super::kahan::{KahanSum, kahan_inc, kahan_mean};
use super::quantile::{Bucket, MonotonicFix, bucket_fraction, bucket_quantile_noting, quantile};
use super::source::compile_anchored;
use super::value::{InstantSample, RangeWindow, Value};

fn arg(call: &Call, i: usize) -> Result<&Expr, QueryError> {
    call.args.args.get(i).map(|b| b.as_ref()).ok_or_else(|| QueryError::Unsupported {
        what: format!("{}() without argument {}", call.func.name, i + 1),
    })
}

fn string_arg(call: &Call, i: usize) -> Result<String, QueryError> {
    match unparen(arg(call, i)?) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => Err(QueryError::Unsupported {
            what: format!("{}() expects a string literal, got {other}", call.func.name),
        }),
    }
}

/// Applies `f` to every sample; the result drops the metric name.
fn map_values(vec: Vec<InstantSample>, f: impl Fn(f64) -> f64) -> Value {
    Value::Vector(
        vec.into_iter().map(|s| InstantSample { labels: s.labels, v: f(s.v), drop_name: true }).collect(),
    )
}

pub(crate) fn eval_call(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let name = call.func.name;
    let secs = |ms: i64| ms as f64 / 1000.0;
    match name {
        "time" => return Ok(Value::Scalar(secs(t))),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "start" => return Ok(Value::Scalar(secs(ev.query_start))),
        "end" => return Ok(Value::Scalar(secs(ev.query_end))),
        "range" => return Ok(Value::Scalar(secs(ev.query_end - ev.query_start))),
        "step" => {
            let step = if ev.query_start == ev.query_end { 0 } else { ev.query_step };
            return Ok(Value::Scalar(secs(step)));
        }
        "vector" => {
            let v = ev.eval_scalar(arg(call, 0)?, t)?;
            return Ok(Value::Vector(vec![InstantSample { labels: Labels::empty(), v, drop_name: false }]));
        }
        "scalar" => {
            let vec = ev.eval_vector(arg(call, 0)?, t)?;
            let v = if vec.len() == 1 { vec[0].v } else { f64::NAN };
            return Ok(Value::Scalar(v));
        }
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(call, 0)?, t)?;
            let b = ev.eval_scalar(arg(call, 1)?, t)?;
            let v = if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if name == "min_of" {
                a.min(b)
            } else {
                a.max(b)
            };
            return Ok(Value::Scalar(v));
        }
        "timestamp" => return eval_timestamp(ev, call, t),
        "label_replace" => return eval_label_replace(ev, call, t),
        "label_join" => return eval_label_join(ev, call, t),
        "absent" => {
            let vec = ev.eval_vector(arg(call, 0)?, t)?;
            if !vec.is_empty() {
                return Ok(Value::Vector(Vec::new()));
            }
            return Ok(Value::Vector(vec![InstantSample {
                labels: absent_labels(arg(call, 0)?),
                v: 1.0,
                drop_name: false,
            }]));
        }
        "absent_over_time" => {
            let (m, _) = ev.eval_range(arg(call, 0)?, t)?;
            if m.iter().any(|s| !s.points.is_empty()) {
                return Ok(Value::Vector(Vec::new()));
            }
            return Ok(Value::Vector(vec![InstantSample {
                labels: absent_labels(arg(call, 0)?),
                v: 1.0,
                drop_name: true,
            }]));
        }
        "sort" | "sort_desc" => {
            sort_in_range_query(ev);
            let mut vec = ev.eval_vector(arg(call, 0)?, t)?;
            let desc = name == "sort_desc";
            vec.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ if desc => b.v.partial_cmp(&a.v).unwrap_or(Ordering::Equal),
                _ => a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal),
            });
            return Ok(Value::Vector(vec));
        }
        "sort_by_label" | "sort_by_label_desc" => {
            sort_in_range_query(ev);
            let mut vec = ev.eval_vector(arg(call, 0)?, t)?;
            let mut names = Vec::new();
            for i in 1..call.args.args.len() {
                names.push(string_arg(call, i)?);
            }
            let desc = name == "sort_by_label_desc";
            vec.sort_by(|a, b| {
                for n in &names {
                    let (x, y) = (a.labels.get(n), b.labels.get(n));
                    if x == y {
                        continue;
                    }
                    let o = natural_cmp(x, y);
                    return if desc { o.reverse() } else { o };
                }
                let o = a.labels.cmp(&b.labels);
                if desc { o.reverse() } else { o }
            });
            return Ok(Value::Vector(vec));
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(call, 0)?, t)?;
            ev.note_quantile(q);
            let vec = ev.eval_vector(arg(call, 1)?, t)?;
            let groups = classic_histogram_groups(ev, vec);
            let out = groups
                .into_iter()
                .map(|(labels, buckets)| InstantSample {
                    v: noting_monotonicity(ev, &labels, t, bucket_quantile_noting(q, buckets)),
                    labels,
                    drop_name: true,
                })
                .collect();
            return Ok(Value::Vector(out));
        }
        "histogram_quantiles" => {
            let vec = ev.eval_vector(arg(call, 0)?, t)?;
            let label = string_arg(call, 1)?;
            let mut qs = Vec::new();
            for i in 2..call.args.args.len() {
                let q = ev.eval_scalar(arg(call, i)?, t)?;
                ev.note_quantile(q);
                qs.push(q);
            }
            let groups = classic_histogram_groups(ev, vec);
            let mut out = Vec::new();
            for q in qs {
                let q_label = format_openmetrics_float(q);
                for (labels, buckets) in &groups {
                    let mut l = labels.clone();
                    l.set(&label, &q_label);
                    out.push(InstantSample {
                        v: noting_monotonicity(ev, labels, t, bucket_quantile_noting(q, buckets.clone())),
                        labels: l,
                        drop_name: true,
                    });
                }
            }
            check_unique(&out)?;
            return Ok(Value::Vector(out));
        }
        "histogram_fraction" => {
            let lo = ev.eval_scalar(arg(call, 0)?, t)?;
            let hi = ev.eval_scalar(arg(call, 1)?, t)?;
            let vec = ev.eval_vector(arg(call, 2)?, t)?;
            return Ok(classic_histogram(ev, vec, |b| bucket_fraction(lo, hi, b)));
        }
        // Functions of native histograms ignore float samples.
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
            let _ = ev.eval_vector(arg(call, 0)?, t)?;
            return Ok(Value::Vector(Vec::new()));
        }
        "year" | "month" | "day_of_month" | "day_of_year" | "day_of_week" | "hour" | "minute"
        | "days_in_month" => {
            let f = date_function(name);
            if call.args.args.is_empty() {
                return Ok(Value::Vector(vec![InstantSample {
                    labels: Labels::empty(),
                    v: f(t.div_euclid(1000)),
                    drop_name: false,
                }]));
            }
            let vec = ev.eval_vector(arg(call, 0)?, t)?;
            return Ok(map_values(vec, |v| f(v as i64)));
        }
        "round" => {
            let vec = ev.eval_vector(arg(call, 0)?, t)?;
            let to_nearest = match call.args.args.get(1) {
                Some(e) => ev.eval_scalar(e, t)?,
                None => 1.0,
            };
            let inv = 1.0 / to_nearest;
            return Ok(map_values(vec, |v| (v * inv + 0.5).floor() / inv));
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let vec = ev.eval_vector(arg(call, 0)?, t)?;
            let (lo, hi) = match name {
                "clamp" => (ev.eval_scalar(arg(call, 1)?, t)?, ev.eval_scalar(arg(call, 2)?, t)?),
                "clamp_min" => (ev.eval_scalar(arg(call, 1)?, t)?, f64::INFINITY),
                _ => (f64::NEG_INFINITY, ev.eval_scalar(arg(call, 1)?, t)?),
            };
            if hi < lo {
                return Ok(Value::Vector(Vec::new()));
            }
            // Go's math.Max/Min propagate NaN.
            return Ok(map_values(vec, |v| go_max(lo, go_min(hi, v))));
        }
        _ => {}
    }
    if let Some(f) = simple_function(name) {
        let vec = ev.eval_vector(arg(call, 0)?, t)?;
        return Ok(map_values(vec, f));
    }
    eval_range_function(ev, call, t)
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

fn simple_function(name: &str) -> Option<fn(f64) -> f64> {
    let f: fn(f64) -> f64 = match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "sgn" => |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    };
    Some(f)
}

fn eval_timestamp(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let a = arg(call, 0)?;
    if let Expr::VectorSelector(vs) = unparen(a) {
        let points = ev.select_vector(vs, t)?;
        return Ok(Value::Vector(
            points
                .into_iter()
                .map(|(labels, ts, _)| InstantSample { labels, v: ts as f64 / 1000.0, drop_name: true })
                .collect(),
        ));
    }
    let vec = ev.eval_vector(a, t)?;
    let now = t as f64 / 1000.0;
    Ok(map_values(vec, |_| now))
}

fn eval_label_replace(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let dst = string_arg(call, 1)?;
    let repl = string_arg(call, 2)?;
    let src = string_arg(call, 3)?;
    let pattern = string_arg(call, 4)?;
    let re = compile_anchored(&pattern)
        .map_err(|_| QueryError::InvalidLabelReplaceRegex { pattern: pattern.clone() })?;
    if !super::strings::valid_label_name(&dst) {
        return Err(QueryError::InvalidDestinationLabel { function: "label_replace", name: dst });
    }
    let mut vec = ev.eval_vector(arg(call, 0)?, t)?;
    for s in &mut vec {
        let src_val = s.labels.get(&src).to_owned();
        if let Some(caps) = re.captures(&src_val) {
            let mut out = String::new();
            // Rust's `$name`/`${name}` expansion matches Go's `Regexp.Expand`.
            caps.expand(&repl, &mut out);
            s.labels.set(&dst, &out);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    check_unique(&vec)?;
    Ok(Value::Vector(vec))
}

fn eval_label_join(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let dst = string_arg(call, 1)?;
    let sep = string_arg(call, 2)?;
    let mut srcs = Vec::new();
    for i in 3..call.args.args.len() {
        let s = string_arg(call, i)?;
        if !super::strings::valid_label_name(&s) {
            return Err(QueryError::InvalidSourceLabel { name: s });
        }
        srcs.push(s);
    }
    if !super::strings::valid_label_name(&dst) {
        return Err(QueryError::InvalidDestinationLabel { function: "label_join", name: dst });
    }
    let mut vec = ev.eval_vector(arg(call, 0)?, t)?;
    for s in &mut vec {
        let joined = srcs.iter().map(|n| s.labels.get(n)).collect::<Vec<_>>().join(&sep);
        s.labels.set(&dst, &joined);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    check_unique(&vec)?;
    Ok(Value::Vector(vec))
}

fn check_unique(vec: &[InstantSample]) -> Result<(), QueryError> {
    let mut seen: Vec<&Labels> = vec.iter().map(|s| &s.labels).collect();
    seen.sort();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(QueryError::DuplicateLabelset);
    }
    Ok(())
}

/// Labels of `absent()`'s output: the selector's equality matchers, except names matched
/// more than once.
fn absent_labels(expr: &Expr) -> Labels {
    let Some(vs) = selector_of(expr) else {
        return Labels::empty();
    };
    let mut labels = Labels::empty();
    let mut seen: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        let first = !seen.contains(&m.name.as_str());
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && first {
            labels.set(&m.name, &m.value);
        } else {
            labels.remove(&m.name);
        }
        seen.push(&m.name);
    }
    labels
}

/// Formats like Prometheus's `labels.FormatOpenMetricsFloat` (integers get `.0`).
fn format_openmetrics_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{f}");
    if s.contains(['.', 'e']) { s } else { format!("{s}.0") }
}

/// The quantile of `(quantile, fix)`, noting for the histogram `labels` at `t` when its buckets
/// had to be made monotonic.
fn noting_monotonicity(
    ev: &Evaluator<'_>,
    labels: &Labels,
    t: i64,
    (v, fix): (f64, Option<MonotonicFix>),
) -> f64 {
    if let Some(fix) = fix {
        ev.note_monotonic_fix(labels.get(METRIC_NAME), t, fix);
    }
    v
}

fn classic_histogram(ev: &Evaluator<'_>, vec: Vec<InstantSample>, f: impl Fn(Vec<Bucket>) -> f64) -> Value {
    Value::Vector(
        classic_histogram_groups(ev, vec)
            .into_iter()
            .map(|(labels, buckets)| InstantSample { labels, v: f(buckets), drop_name: true })
            .collect(),
    )
}

/// Groups `le` buckets by the rest of their labels (a sample without a valid `le` is left out,
/// with a warning).
fn classic_histogram_groups(ev: &Evaluator<'_>, vec: Vec<InstantSample>) -> Vec<(Labels, Vec<Bucket>)> {
    let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for s in vec {
        let Ok(upper) = parse_go_float(s.labels.get("le")) else {
            ev.warn(|| {
                format!(
                    "bucket label \"le\" is missing or has a malformed value of {:?}{}",
                    s.labels.get("le"),
                    for_metric_name(s.labels.get(METRIC_NAME))
                )
            });
            continue;
        };
        let mut key = s.labels;
        key.remove("le");
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(Bucket { upper, count: s.v });
    }
    groups
}

/// Parses a float the way Go's `strconv.ParseFloat` accepts it (`+Inf`, `NaN`, ...).
pub(crate) fn parse_go_float(s: &str) -> Result<f64, std::num::ParseFloatError> {
    let lower = s.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" => {
            if lower.starts_with('-') {
                Ok(f64::NEG_INFINITY)
            } else {
                Ok(f64::INFINITY)
            }
        }
        _ => s.replace('_', "").parse::<f64>(),
    }
}

/// Compares strings naturally: runs of digits compare by numeric value.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let x = a[si..i].trim_start_matches('0');
            let y = b[sj..j].trim_start_matches('0');
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn date_function(name: &str) -> fn(i64) -> f64 {
    match name {
        "year" => |s| civil_from_days(s.div_euclid(86_400)).0 as f64,
        "month" => |s| f64::from(civil_from_days(s.div_euclid(86_400)).1),
        "day_of_month" => |s| f64::from(civil_from_days(s.div_euclid(86_400)).2),
        "day_of_year" => |s| {
            let (y, m, d) = civil_from_days(s.div_euclid(86_400));
            let before: u32 = (1..m).map(|mm| days_in_month(y, mm)).sum();
            f64::from(before + d)
        },
        "day_of_week" => |s| (s.div_euclid(86_400) + 4).rem_euclid(7) as f64,
        "hour" => |s| (s.rem_euclid(86_400) / 3600) as f64,
        "minute" => |s| (s.rem_euclid(3600) / 60) as f64,
        _ => |s| {
            let (y, m, _) = civil_from_days(s.div_euclid(86_400));
            f64::from(days_in_month(y, m))
        },
    }
}

/// Sorting gives nothing in a range query: its series come ordered by labels.
fn sort_in_range_query(ev: &Evaluator<'_>) {
    if ev.query_start != ev.query_end {
        ev.warn(|| "sort is ineffective for range queries since results are always ordered by labels".into());
    }
}

/// Functions whose first range-vector argument is evaluated per series.
fn eval_range_function(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let name = call.func.name;
    // Position of the range argument, and scalar parameters before/after it.
    let (range_idx, mut params) = match name {
        "quantile_over_time" => (1, vec![ev.eval_scalar(arg(call, 0)?, t)?]),
        "predict_linear" => (0, vec![ev.eval_scalar(arg(call, 1)?, t)?]),
        "double_exponential_smoothing" | "holt_winters" => {
            (0, vec![ev.eval_scalar(arg(call, 1)?, t)?, ev.eval_scalar(arg(call, 2)?, t)?])
        }
        _ => (0, Vec::new()),
    };
    if !is_range_function(name) {
        return Err(QueryError::Unsupported { what: format!("function {name}()") });
    }
    let (series, window) = ev.eval_range(arg(call, range_idx)?, t)?;
    let keeps_name = keeps_name(name);
    if matches!(name, "double_exponential_smoothing" | "holt_winters") && !series.is_empty() {
        let (sf, tf) = (params[0], params[1]);
        if sf <= 0.0 || sf >= 1.0 {
            return Err(QueryError::InvalidSmoothingFactor { which: "smoothing", short: "sf", value: sf });
        }
        if tf <= 0.0 || tf >= 1.0 {
            return Err(QueryError::InvalidSmoothingFactor { which: "trend", short: "tf", value: tf });
        }
    }
    if name == "quantile_over_time" {
        let q = params[0];
        if series.iter().any(|s| !s.points.is_empty()) {
            ev.note_quantile(q);
        }
    }
    let counter = matches!(name, "rate" | "increase");
    params.push(t as f64);
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        if let Some(v) = range_value(name, &s.points, &window, &params, t) {
            if counter {
                ev.note_rate_input(&s.labels);
            }
            out.push(InstantSample { labels: s.labels, v, drop_name: s.drop_name || !keeps_name });
        }
    }
    Ok(Value::Vector(out))
}

/// Whether `name` is a range function whose only argument is the range vector.
pub(crate) fn is_plain_range_function(name: &str) -> bool {
    is_range_function(name)
        && !matches!(
            name,
            "quantile_over_time" | "predict_linear" | "double_exponential_smoothing" | "holt_winters"
        )
}

/// Whether the range function keeps `__name__` (the others drop it).
pub(crate) fn keeps_name(name: &str) -> bool {
    matches!(name, "last_over_time" | "first_over_time")
}

fn is_range_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "double_exponential_smoothing"
            | "holt_winters"
            | "resets"
            | "changes"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "first_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "quantile_over_time"
            | "mad_over_time"
            | "present_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "ts_of_first_over_time"
            | "ts_of_last_over_time"
    )
}

/// One range function applied to one series' window. `params` holds the scalar arguments,
/// then the evaluation time.
pub(crate) fn range_value(name: &str, p: &[Sample], w: &RangeWindow, params: &[f64], t: i64) -> Option<f64> {
    let first = p.first()?;
    let last = p.last()?;
    let value = match name {
        "rate" => extrapolated_rate(p, w, true, true)?,
        "increase" => extrapolated_rate(p, w, true, false)?,
        "delta" => extrapolated_rate(p, w, false, false)?,
        "irate" => instant_value(p, true)?,
        "idelta" => instant_value(p, false)?,
        "deriv" => {
            if p.len() < 2 {
                return None;
            }
            linear_regression(p, first.t).0
        }
        "predict_linear" => {
            if p.len() < 2 {
                return None;
            }
            let (slope, intercept) = linear_regression(p, t);
            slope * params[0] + intercept
        }
        "double_exponential_smoothing" | "holt_winters" => {
            double_exponential_smoothing(p, params[0], params[1])?
        }
        "resets" => p.windows(2).filter(|x| x[1].v < x[0].v).count() as f64,
        "changes" => {
            p.windows(2).filter(|x| x[1].v != x[0].v && !(x[1].v.is_nan() && x[0].v.is_nan())).count() as f64
        }
        "avg_over_time" => avg_over_time(p),
        "sum_over_time" => {
            let mut k = KahanSum::default();
            for x in p {
                k.add(x.v);
            }
            k.value()
        }
        "count_over_time" => p.len() as f64,
        "min_over_time" => compare_over_time(p, |cur, m| cur < m || m.is_nan()).1,
        "max_over_time" => compare_over_time(p, |cur, m| cur > m || m.is_nan()).1,
        "ts_of_min_over_time" => compare_over_time(p, |cur, m| cur <= m || m.is_nan()).0 as f64 / 1000.0,
        "ts_of_max_over_time" => compare_over_time(p, |cur, m| cur >= m || m.is_nan()).0 as f64 / 1000.0,
        "last_over_time" => last.v,
        "first_over_time" => first.v,
        "ts_of_first_over_time" => first.t as f64 / 1000.0,
        "ts_of_last_over_time" => last.t as f64 / 1000.0,
        "stdvar_over_time" => variance(p),
        "stddev_over_time" => variance(p).sqrt(),
        "quantile_over_time" => {
            let mut vals: Vec<f64> = p.iter().map(|x| x.v).collect();
            quantile(params[0], &mut vals)
        }
        "mad_over_time" => {
            let mut vals: Vec<f64> = p.iter().map(|x| x.v).collect();
            if vals.iter().any(|v| v.is_nan()) {
                f64::NAN
            } else {
                let median = quantile(0.5, &mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
                quantile(0.5, &mut dev)
            }
        }
        "present_over_time" => 1.0,
        _ => return None,
    };
    Some(value)
}

/// Timestamp and value of the sample `better` prefers (ties go to the later sample when
/// `better` accepts equality).
fn compare_over_time(p: &[Sample], better: impl Fn(f64, f64) -> bool) -> (i64, f64) {
    let mut best = p[0];
    for x in p {
        if better(x.v, best.v) {
            best = *x;
        }
    }
    (best.t, best.v)
}

fn avg_over_time(p: &[Sample]) -> f64 {
    kahan_mean(p.iter().map(|x| x.v))
}

fn variance(p: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for x in p {
        count += 1.0;
        let delta = x.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (x.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// `rate`, `increase` and `delta` with Prometheus's extrapolation to the window edges.
pub(crate) fn extrapolated_rate(
    p: &[Sample],
    w: &RangeWindow,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    extrapolated_rate_known(p, w, is_counter, is_rate, false)
}

/// [`extrapolated_rate`]; `no_resets`: the caller knows that no value in `p` is below the one
/// before it, so the counter-reset pass is skipped (the result is the same).
pub(crate) fn extrapolated_rate_known(
    p: &[Sample],
    w: &RangeWindow,
    is_counter: bool,
    is_rate: bool,
    no_resets: bool,
) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let first = p[0];
    let last = p[p.len() - 1];
    let mut result = last.v - first.v;
    if is_counter && !no_resets {
        for x in p.windows(2) {
            if x[1].v < x[0].v {
                result += x[0].v;
            }
        }
    }
    let mut to_start = (first.t - w.start) as f64 / 1000.0;
    let mut to_end = (w.end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg_step = sampled / (p.len() - 1) as f64;
    let threshold = avg_step * 1.1;
    if to_start >= threshold {
        to_start = avg_step / 2.0;
    }
    if is_counter {
        // A counter cannot have been below zero: don't extrapolate past that point.
        let mut to_zero = to_start;
        if result > 0.0 && first.v >= 0.0 {
            to_zero = sampled * (first.v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_step / 2.0;
    }
    let mut factor = if sampled != 0.0 { (sampled + to_start + to_end) / sampled } else { 1.0 };
    if is_rate {
        factor /= w.range_secs();
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(p: &[Sample], is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (a, b) = (p[p.len() - 2], p[p.len() - 1]);
    let interval = b.t - a.t;
    if interval == 0 {
        return None;
    }
    let mut v = b.v - a.v;
    if is_rate {
        if b.v < a.v {
            v = b.v;
        }
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares fit of value over time (seconds relative to `intercept_t`).
fn linear_regression(p: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = p[0].v;
    let mut const_y = true;
    for (i, s) in p.iter().enumerate() {
        if const_y && i > 0 && s.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(s.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * s.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn double_exponential_smoothing(p: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = p[0].v;
    let mut b = p[1].v - p[0].v;
    for (i, x) in p.iter().enumerate().skip(1) {
        let xv = sf * x.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = xv + y;
    }
    Some(s1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
        points.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    #[test]
    fn rate_extrapolates_to_window_edges_when_samples_cover_it() {
        // Samples every 10s in the window (0, 60s]: 10s..60s, counter +1 per sample.
        let p = samples(&[
            (10_000, 1.0),
            (20_000, 2.0),
            (30_000, 3.0),
            (40_000, 4.0),
            (50_000, 5.0),
            (60_000, 6.0),
        ]);
        let w = RangeWindow { start: 0, end: 60_000 };
        let r = extrapolated_rate(&p, &w, true, true).expect("rate");
        // 5 increase over 50s sampled; extrapolated by 10s at the start (not past zero:
        // zero would be 10s before the first sample) → 6 over 60s.
        assert!((r - 0.1).abs() < 1e-12, "{r}");
    }

    #[test]
    fn rate_does_not_extrapolate_counter_below_zero() {
        let p = samples(&[(50_000, 5.0), (60_000, 10.0)]);
        let w = RangeWindow { start: 0, end: 60_000 };
        let inc = extrapolated_rate(&p, &w, true, false).expect("increase");
        // Average step 10s: start extrapolation capped at 5s, and zero is 10s back,
        // so 5 increase over 10s becomes 5 * 15/10.
        assert!((inc - 7.5).abs() < 1e-12, "{inc}");
    }

    #[test]
    fn rate_counts_counter_resets() {
        let p = samples(&[(10_000, 8.0), (20_000, 9.0), (30_000, 1.0), (40_000, 2.0)]);
        let w = RangeWindow { start: 5_000, end: 45_000 };
        let inc = extrapolated_rate(&p, &w, true, false).expect("increase");
        // Raw increase: 2 - 8 + 9 (reset) = 3 over 30s, extrapolated 5s each side.
        assert!((inc - 3.0 * 40.0 / 30.0).abs() < 1e-12, "{inc}");
    }

    #[test]
    fn delta_of_a_single_sample_is_empty() {
        let p = samples(&[(10_000, 8.0)]);
        let w = RangeWindow { start: 0, end: 60_000 };
        assert!(extrapolated_rate(&p, &w, false, false).is_none());
    }

    #[test]
    fn natural_cmp_orders_numbers_by_value() {
        assert_eq!(natural_cmp("cpu2", "cpu10"), Ordering::Less);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
    }

    #[test]
    fn date_functions_match_known_dates() {
        // 2006-01-02T22:04:05Z
        assert_eq!(date_function("year")(1_136_239_445), 2006.0);
        assert_eq!(date_function("month")(1_136_239_445), 1.0);
        assert_eq!(date_function("day_of_month")(1_136_239_445), 2.0);
        assert_eq!(date_function("day_of_week")(1_136_239_445), 1.0);
        assert_eq!(date_function("hour")(1_136_239_445), 22.0);
        assert_eq!(date_function("minute")(1_136_239_445), 4.0);
    }
}
