//! Binary operators: arithmetic, comparison (with `bool`), set operators, vector matching.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ,
    T_POW, T_SUB,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::model::{Labels, METRIC_NAME};

use super::error::QueryError;
use super::eval::Evaluator;
use super::value::{InstantSample, Value};

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Operators after which the result is no longer the metric the name describes.
fn changes_metric_schema(op: u16) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD | T_ATAN2)
}

/// Go's `math.Mod`: the result has the sign of `x`; like C's `fmod`.
fn go_mod(x: f64, y: f64) -> f64 {
    x % y
}

/// Applies `op`; for comparisons returns `(lhs, keep)`.
pub(crate) fn apply(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (go_mod(l, r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

pub(crate) fn eval_binary(ev: &Evaluator<'_>, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, t)?;
    // `or` and `unless` with an empty side need no evaluation of... both sides anyway: keep
    // evaluation order simple and complete.
    let rhs = ev.eval(&b.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = apply(op, l, r);
            if is_comparison(op) {
                return Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }));
            }
            Ok(Value::Scalar(v))
        }
        (Value::Vector(l), Value::Scalar(r)) => {
            Ok(Value::Vector(vector_scalar(op, l, r, false, return_bool)))
        }
        (Value::Scalar(l), Value::Vector(r)) => Ok(Value::Vector(vector_scalar(op, r, l, true, return_bool))),
        (Value::Vector(l), Value::Vector(r)) => {
            let default_modifier;
            let modifier = match &b.modifier {
                Some(m) => m,
                None => {
                    default_modifier = BinModifier::default();
                    &default_modifier
                }
            };
            if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
                Ok(Value::Vector(set_operation(op, l, r, modifier)))
            } else {
                vector_vector(op, l, r, modifier, return_bool).map(Value::Vector)
            }
        }
        _ => Err(QueryError::Unsupported { what: "binary operation on strings or range vectors".into() }),
    }
}

fn vector_scalar(
    op: u16,
    vec: Vec<InstantSample>,
    scalar: f64,
    scalar_left: bool,
    return_bool: bool,
) -> Vec<InstantSample> {
    let mut out = Vec::with_capacity(vec.len());
    for mut s in vec {
        let (l, r) = if scalar_left { (scalar, s.v) } else { (s.v, scalar) };
        let (mut v, mut keep) = apply(op, l, r);
        if is_comparison(op) && scalar_left {
            v = s.v;
        }
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            s.v = v;
            if changes_metric_schema(op) || return_bool {
                s.drop_name = true;
            }
            out.push(s);
        }
    }
    out
}

/// The matching key of a series under `on(...)`/`ignoring(...)`.
fn signature(l: &Labels, matching: Option<&LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(on)) => {
            let mut names: Vec<&String> = on.labels.iter().collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| (n.clone(), l.get(n).to_owned())).collect()
        }
        Some(LabelModifier::Exclude(ign)) => l
            .iter()
            .filter(|x| x.name != METRIC_NAME && !ign.labels.contains(&x.name))
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect(),
        None => {
            l.iter().filter(|x| x.name != METRIC_NAME).map(|x| (x.name.clone(), x.value.clone())).collect()
        }
    }
}

fn set_operation(
    op: u16,
    lhs: Vec<InstantSample>,
    rhs: Vec<InstantSample>,
    m: &BinModifier,
) -> Vec<InstantSample> {
    let matching = m.matching.as_ref();
    match op {
        T_LAND => {
            if lhs.is_empty() || rhs.is_empty() {
                return Vec::new();
            }
            let right: HashSet<_> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
            lhs.into_iter().filter(|s| right.contains(&signature(&s.labels, matching))).collect()
        }
        T_LOR => {
            let left: HashSet<_> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|s| !left.contains(&signature(&s.labels, matching))));
            out
        }
        _ => {
            if lhs.is_empty() || rhs.is_empty() {
                return lhs;
            }
            let right: HashSet<_> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
            lhs.into_iter().filter(|s| !right.contains(&signature(&s.labels, matching))).collect()
        }
    }
}

/// Labels of a result series (`lhs` is the "many" side after swapping for group_right).
fn result_labels(lhs: &Labels, rhs: &Labels, op: u16, m: &BinModifier) -> Labels {
    let mut out = lhs.clone();
    if changes_metric_schema(op) {
        out.remove(METRIC_NAME);
    }
    match &m.card {
        VectorMatchCardinality::OneToOne => match &m.matching {
            Some(LabelModifier::Include(on)) => out.keep(&on.labels),
            Some(LabelModifier::Exclude(ign)) => out.remove_all(&ign.labels),
            None => {}
        },
        VectorMatchCardinality::ManyToOne(include) | VectorMatchCardinality::OneToMany(include) => {
            for n in &include.labels {
                out.set(n, rhs.get(n));
            }
        }
        VectorMatchCardinality::ManyToMany => {}
    }
    out
}

fn match_labels(l: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => {
            let mut out = l.clone();
            out.keep(&on.labels);
            out
        }
        Some(LabelModifier::Exclude(ign)) => {
            let mut out = l.clone();
            out.remove_all(&ign.labels);
            out.remove(METRIC_NAME);
            out
        }
        None => l.without_name(),
    }
}

fn vector_vector(
    op: u16,
    lhs: Vec<InstantSample>,
    rhs: Vec<InstantSample>,
    m: &BinModifier,
    return_bool: bool,
) -> Result<Vec<InstantSample>, QueryError> {
    let fill_l = m.fill_values.lhs;
    let fill_r = m.fill_values.rhs;
    if (lhs.is_empty() && rhs.is_empty())
        || ((lhs.is_empty() || rhs.is_empty()) && fill_l.is_none() && fill_r.is_none())
    {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    // After swapping, `many` is the side that may have several series per match group.
    let (many, one, fill_many, fill_one) =
        if one_to_many { (rhs, lhs, fill_r, fill_l) } else { (lhs, rhs, fill_l, fill_r) };
    let matching = m.matching.as_ref();
    let mut one_by_sig: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    for (i, s) in one.iter().enumerate() {
        let sig = signature(&s.labels, matching);
        if let Some(&prev) = one_by_sig.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            let (mut a, mut b) = (s.labels.to_string(), one[prev].labels.to_string());
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            return Err(QueryError::DuplicateMatchSeries {
                group: match_labels(&s.labels, matching).to_string(),
                side,
                first: a,
                second: b,
            });
        }
        one_by_sig.insert(sig, i);
    }
    let mut out = Vec::new();
    let mut matched_one: HashSet<Vec<(String, String)>> = HashSet::new();
    let mut produced: HashMap<Vec<(String, String)>, HashSet<Labels>> = HashMap::new();
    let mut emit = |ms_labels: &Labels,
                    ms_v: f64,
                    os_labels: &Labels,
                    os_v: f64,
                    sig: Vec<(String, String)>|
     -> Result<(), QueryError> {
        let (l, r) = if one_to_many { (os_v, ms_v) } else { (ms_v, os_v) };
        let (mut v, keep) = apply(op, l, r);
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
        }
        let labels = result_labels(ms_labels, os_labels, op, m);
        if one_to_one {
            if !matched_one.insert(sig) {
                return Err(QueryError::ImplicitManyToOne);
            }
        } else if !produced.entry(sig).or_default().insert(labels.clone()) {
            return Err(QueryError::NonUniqueGroupMatch);
        }
        if keep || return_bool {
            out.push(InstantSample { labels, v, drop_name: return_bool });
        }
        Ok(())
    };
    let mut many_sigs: HashSet<Vec<(String, String)>> = HashSet::new();
    for s in &many {
        let sig = signature(&s.labels, matching);
        many_sigs.insert(sig.clone());
        match one_by_sig.get(&sig) {
            Some(&i) => emit(&s.labels, s.v, &one[i].labels, one[i].v, sig)?,
            None => {
                if let Some(f) = fill_one {
                    let filler = match_labels(&s.labels, matching);
                    emit(&s.labels, s.v, &filler, f, sig)?;
                }
            }
        }
    }
    if let Some(f) = fill_many {
        for s in &one {
            let sig = signature(&s.labels, matching);
            if many_sigs.contains(&sig) {
                continue;
            }
            let filler = match_labels(&s.labels, matching);
            emit(&filler, f, &s.labels, s.v, sig)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pairs: &[(&str, &str)], v: f64) -> InstantSample {
        InstantSample { labels: Labels::from_pairs(pairs.iter().copied()), v, drop_name: false }
    }

    #[test]
    fn vector_matching_duplicate_on_the_one_side_is_an_error() {
        let lhs = vec![sample(&[("__name__", "a"), ("x", "1")], 1.0)];
        let rhs = vec![
            sample(&[("__name__", "b"), ("x", "1"), ("y", "1")], 1.0),
            sample(&[("__name__", "b"), ("x", "1"), ("y", "2")], 1.0),
        ];
        let m = BinModifier::default().with_matching(Some(LabelModifier::include(vec!["x"])));
        let err = vector_vector(T_ADD, lhs, rhs, &m, false).expect_err("duplicate");
        assert!(matches!(err, QueryError::DuplicateMatchSeries { side: "right", .. }));
    }

    #[test]
    fn vector_matching_many_to_one_without_group_left_is_an_error() {
        let lhs = vec![
            sample(&[("__name__", "a"), ("x", "1"), ("y", "1")], 1.0),
            sample(&[("__name__", "a"), ("x", "1"), ("y", "2")], 1.0),
        ];
        let rhs = vec![sample(&[("__name__", "b"), ("x", "1")], 1.0)];
        let m = BinModifier::default().with_matching(Some(LabelModifier::include(vec!["x"])));
        let err = vector_vector(T_ADD, lhs, rhs, &m, false).expect_err("many-to-one");
        assert!(matches!(err, QueryError::ImplicitManyToOne));
    }

    #[test]
    fn vector_matching_group_left_copies_included_labels() {
        let lhs = vec![
            sample(&[("__name__", "a"), ("x", "1"), ("y", "1")], 2.0),
            sample(&[("__name__", "a"), ("x", "1"), ("y", "2")], 3.0),
        ];
        let rhs = vec![sample(&[("__name__", "b"), ("x", "1"), ("z", "k")], 10.0)];
        let m = BinModifier::default()
            .with_matching(Some(LabelModifier::include(vec!["x"])))
            .with_card(VectorMatchCardinality::many_to_one(vec!["z"]));
        let out = vector_vector(T_MUL, lhs, rhs, &m, false).expect("group_left");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels.get("z"), "k");
        assert_eq!(out[0].labels.get("__name__"), "");
        assert_eq!(out[1].v, 30.0);
    }
}
