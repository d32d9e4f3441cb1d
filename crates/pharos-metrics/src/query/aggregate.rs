//! Aggregation operators: sum, avg, count, min, max, stddev, stdvar, group, quantile,
//! count_values, topk, bottomk, limitk, limit_ratio.

use std::cmp::Ordering;
use std::collections::HashMap;

use promql_parser::parser::token::TokenId;
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN, T_QUANTILE,
    T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use crate::model::{Labels, METRIC_NAME};

use super::error::QueryError;
use super::eval::{Evaluator, go_float, unparen};
use super::kahan::{kahan_inc, kahan_mean};
use super::quantile::quantile;
use super::value::{InstantSample, Value};

/// How series are grouped.
enum Grouping<'a> {
    By(&'a [String]),
    Without(&'a [String]),
}

impl Grouping<'_> {
    fn labels(&self, l: &Labels) -> Labels {
        let mut out = l.clone();
        match self {
            Self::By(names) => out.keep(names),
            Self::Without(names) => {
                out.remove_all(names);
                out.remove(METRIC_NAME);
            }
        }
        out
    }
}

struct Group {
    labels: Labels,
    members: Vec<usize>,
}

fn group_samples(input: &[InstantSample], grouping: &Grouping<'_>) -> Vec<Group> {
    group_labels(input.iter().map(|s| &s.labels), grouping)
}

/// Groups label sets (members are positions in the order given).
fn group_labels<'l>(all: impl Iterator<Item = &'l Labels>, grouping: &Grouping<'_>) -> Vec<Group> {
    // The key borrows from the labels: for `by`, the values of the listed names (in one order
    // for all); for `without`, the names and values kept.
    let by: Option<Vec<&str>> = match grouping {
        Grouping::By(names) => {
            let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            Some(names)
        }
        Grouping::Without(_) => None,
    };
    fn key<'l>(by: &Option<Vec<&str>>, grouping: &Grouping<'_>, l: &'l Labels) -> Vec<&'l str> {
        match (by, grouping) {
            (Some(names), _) => names.iter().map(|n| l.get(n)).collect(),
            (None, Grouping::Without(names)) | (None, Grouping::By(names)) => l
                .iter()
                .filter(|x| x.name != METRIC_NAME && !names.contains(&x.name))
                .flat_map(|x| [x.name.as_str(), x.value.as_str()])
                .collect(),
        }
    }
    let mut index: HashMap<Vec<&str>, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, l) in all.enumerate() {
        let gi = *index.entry(key(&by, grouping, l)).or_insert_with(|| {
            groups.push(Group { labels: grouping.labels(l), members: Vec::new() });
            groups.len() - 1
        });
        groups[gi].members.push(i);
    }
    groups
}

fn grouping_of<'a>(modifier: &'a Option<LabelModifier>, empty: &'a [String]) -> Grouping<'a> {
    match modifier {
        Some(LabelModifier::Include(l)) => Grouping::By(&l.labels),
        Some(LabelModifier::Exclude(l)) => Grouping::Without(&l.labels),
        None => Grouping::By(empty),
    }
}

/// The groups of an aggregation over series with these labels: for each group its labels and
/// its members (positions in `labels`, in order).
pub(crate) fn groups_of(agg: &AggregateExpr, labels: &[&Labels]) -> Vec<(Labels, Vec<usize>)> {
    let empty: Vec<String> = Vec::new();
    let grouping = grouping_of(&agg.modifier, &empty);
    group_labels(labels.iter().copied(), &grouping).into_iter().map(|g| (g.labels, g.members)).collect()
}

/// Whether the aggregation combines each group's values into one with [`combine`] (no
/// parameter, one output per group).
pub(crate) fn is_plain_aggregation(agg: &AggregateExpr) -> bool {
    agg.param.is_none()
        && matches!(agg.op.id(), T_SUM | T_AVG | T_COUNT | T_GROUP | T_MIN | T_MAX | T_STDDEV | T_STDVAR)
}

/// Whether [`combine`] for `op` is a left fold that [`Running`] reproduces value by value.
pub(crate) fn folds(op: TokenId) -> bool {
    matches!(op, T_SUM | T_COUNT | T_GROUP | T_MIN | T_MAX)
}

/// [`combine`] for the aggregations that [`folds`] accepts, one value at a time, with the
/// same result to the bit.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Running {
    value: f64,
    compensation: f64,
    count: u64,
}

impl Running {
    /// Takes the next value.
    pub(crate) fn add(&mut self, op: TokenId, v: f64) {
        match op {
            T_SUM => (self.value, self.compensation) = kahan_inc(v, self.value, self.compensation),
            T_MIN if self.count == 0 || self.value > v || self.value.is_nan() => self.value = v,
            T_MAX if self.count == 0 || self.value < v || self.value.is_nan() => self.value = v,
            _ => {}
        }
        self.count += 1;
    }

    /// The aggregate of the values taken (at least one).
    pub(crate) fn value(&self, op: TokenId) -> f64 {
        match op {
            T_SUM if self.value.is_infinite() => self.value,
            T_SUM => self.value + self.compensation,
            T_COUNT => self.count as f64,
            T_GROUP => 1.0,
            _ => self.value,
        }
    }
}

/// One group's values (at least one) combined by the aggregation `op`; `None` for an
/// operator that does not combine values this way.
pub(crate) fn combine(op: TokenId, vals: &mut [f64], param: Option<f64>) -> Option<f64> {
    Some(match op {
        T_SUM => {
            let (mut s, mut c) = (0.0, 0.0);
            for v in vals.iter() {
                (s, c) = kahan_inc(*v, s, c);
            }
            if s.is_infinite() { s } else { s + c }
        }
        T_AVG => average(vals),
        T_COUNT => vals.len() as f64,
        T_GROUP => 1.0,
        T_MIN => vals[1..].iter().fold(vals[0], |m, &v| if m > v || m.is_nan() { v } else { m }),
        T_MAX => vals[1..].iter().fold(vals[0], |m, &v| if m < v || m.is_nan() { v } else { m }),
        T_STDDEV => std_variance(vals).sqrt(),
        T_STDVAR => std_variance(vals),
        T_QUANTILE => quantile(param.unwrap_or(f64::NAN), vals),
        _ => return None,
    })
}

pub(crate) fn eval_aggregate(ev: &Evaluator<'_>, agg: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let empty: Vec<String> = Vec::new();
    let grouping = grouping_of(&agg.modifier, &empty);
    let op = agg.op.id();
    if op == T_COUNT_VALUES {
        let label = match agg.param.as_deref().map(unparen) {
            Some(Expr::StringLiteral(s)) => s.val.clone(),
            _ => {
                return Err(QueryError::Unsupported {
                    what: "count_values without a string parameter".into(),
                });
            }
        };
        if !super::strings::valid_label_name(&label) {
            return Err(QueryError::InvalidLabelName { name: label });
        }
        let input = ev.eval_vector(&agg.expr, t)?;
        return Ok(Value::Vector(count_values(&input, &grouping, &label)));
    }
    let param = match &agg.param {
        Some(p) if op != T_COUNT_VALUES => Some(ev.eval_scalar(p, t)?),
        _ => None,
    };
    match (op, param) {
        (T_QUANTILE, Some(q)) => ev.note_quantile(q),
        (T_LIMIT_RATIO, Some(r)) if !r.is_nan() && !(-1.0..=1.0).contains(&r) => {
            let to = r.clamp(-1.0, 1.0);
            ev.warn(|| {
                format!(
                    "ratio value should be between -1 and 1, got {}, capping to {}",
                    go_float(r),
                    go_float(to)
                )
            });
        }
        _ => {}
    }
    let input = ev.eval_vector(&agg.expr, t)?;
    if op == T_TOPK || op == T_BOTTOMK || op == T_LIMITK || op == T_LIMIT_RATIO {
        return select_k(op, param.unwrap_or(f64::NAN), input, &grouping).map(Value::Vector);
    }
    let groups = group_samples(&input, &grouping);
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut vals: Vec<f64> = g.members.iter().map(|&i| input[i].v).collect();
        let drop_name = g.members.iter().any(|&i| input[i].drop_name);
        let Some(v) = combine(op, &mut vals, param) else {
            return Err(QueryError::Unsupported { what: format!("aggregation {}", agg.op) });
        };
        out.push(InstantSample { labels: g.labels, v, drop_name });
    }
    Ok(Value::Vector(out))
}

fn average(vals: &[f64]) -> f64 {
    kahan_mean(vals.iter().copied())
}

/// Population variance with Welford's method; NaN if the first value is NaN or infinite.
fn std_variance(vals: &[f64]) -> f64 {
    let first = vals[0];
    let mut value = if first.is_nan() || first.is_infinite() { f64::NAN } else { 0.0 };
    let mut mean = first;
    let mut count = 1.0;
    for &v in &vals[1..] {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        value += delta * (v - mean);
    }
    value / count
}

/// Formats a float as Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn count_values(input: &[InstantSample], grouping: &Grouping<'_>, label: &str) -> Vec<InstantSample> {
    let counted: Vec<Labels> = input
        .iter()
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.set(label, &format_go_float(s.v));
            labels
        })
        .collect();
    // The value's label is one more to group by (`without` keeps it anyway).
    let by_names: Vec<String>;
    let grouping = match grouping {
        Grouping::By(names) => {
            by_names = names.iter().cloned().chain([label.to_owned()]).collect();
            Grouping::By(&by_names)
        }
        Grouping::Without(names) => Grouping::Without(names),
    };
    group_labels(counted.iter(), &grouping)
        .into_iter()
        .map(|g| InstantSample { labels: g.labels, v: g.members.len() as f64, drop_name: false })
        .collect()
}

/// Orders larger values first, NaN last (topk); `reverse` for bottomk.
fn cmp_for_k(a: f64, b: f64, bottom: bool) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if bottom => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        _ => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

fn select_k(
    op: u16,
    param: f64,
    input: Vec<InstantSample>,
    grouping: &Grouping<'_>,
) -> Result<Vec<InstantSample>, QueryError> {
    if op == T_LIMIT_RATIO {
        if param.is_nan() {
            return Err(QueryError::NanRatio);
        }
        if param == 0.0 {
            return Ok(Vec::new());
        }
        let r = param.clamp(-1.0, 1.0);
        return Ok(input
            .into_iter()
            .filter(|s| {
                let offset = ratio_offset(&s.labels);
                (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
            })
            .collect());
    }
    if param.is_nan() {
        return Err(QueryError::NanParameter);
    }
    if param <= i64::MIN as f64 {
        return Err(QueryError::ParameterOutOfRange { value: param, direction: "underflows" });
    }
    if param >= i64::MAX as f64 {
        return Err(QueryError::ParameterOutOfRange { value: param, direction: "overflows" });
    }
    let k = (param as i64).min(input.len() as i64);
    if k < 1 {
        return Ok(Vec::new());
    }
    let k = k as usize;
    let groups = group_samples(&input, grouping);
    let mut keep: Vec<usize> = Vec::new();
    for g in groups {
        let mut members = g.members;
        if op != T_LIMITK {
            let bottom = op == T_BOTTOMK;
            members.sort_by(|&a, &b| cmp_for_k(input[a].v, input[b].v, bottom));
        }
        members.truncate(k);
        keep.extend(members);
    }
    let mut slots: Vec<Option<InstantSample>> = input.into_iter().map(Some).collect();
    Ok(keep.into_iter().filter_map(|i| slots.get_mut(i).and_then(Option::take)).collect())
}

/// A stable pseudo-random position in `[0, 1)` for a label set (FNV-1a 64 of the labels).
fn ratio_offset(labels: &Labels) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels.iter() {
        for b in l.name.bytes().chain([0xff]).chain(l.value.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_of_huge_values_switches_to_incremental_mean() {
        let v = [f64::MAX, f64::MAX, -f64::MAX];
        let avg = average(&v);
        assert!((avg - f64::MAX / 3.0).abs() / (f64::MAX / 3.0) < 1e-12, "{avg}");
    }

    #[test]
    fn std_variance_of_constant_values_is_zero() {
        assert_eq!(std_variance(&[5.0, 5.0, 5.0]), 0.0);
        assert!(std_variance(&[f64::INFINITY, 1.0]).is_nan());
    }

    #[test]
    fn running_aggregations_equal_combine_to_the_bit() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, f64::MAX, -f64::MAX, 1e-300];
        for len in 1..40 {
            let vals: Vec<f64> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 10 {
                        0 => specials[(x >> 8) as usize % specials.len()],
                        1..=4 => (x >> 11) as f64 * 1e-3,
                        _ => -((x >> 20) as f64) / 7.0,
                    }
                })
                .collect();
            for op in [T_SUM, T_COUNT, T_GROUP, T_MIN, T_MAX] {
                assert!(folds(op));
                let mut r = Running::default();
                vals.iter().for_each(|&v| r.add(op, v));
                let want = combine(op, &mut vals.clone(), None).unwrap();
                assert_eq!(r.value(op).to_bits(), want.to_bits(), "op {op:?} over {vals:?}");
            }
        }
        assert!(!folds(T_AVG) && !folds(T_STDDEV));
    }
}
