//! Spanset pipelines compiled for evaluation: filters, spanset operators, scalar filters,
//! `by()`, `select()` and `coalesce()`, over spans named by their index in the trace.

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

use super::EvalError;
use super::expr::{Expr, SpanCtx, reads_events_and_links};
use super::trace::{Relation, Trace};
use super::value::{HashValue, Val, Value, arithmetic, compare, negate};
use crate::query::{
    Aggregate, BinaryOp, Pipeline as AstPipeline, ScalarExpr, ScalarFilter as AstScalarFilter, SpansetExpr,
    SpansetOp, Stage as AstStage,
};

/// A spanset during evaluation: span indexes, ascending and unique, and the spanset's
/// attributes (`by()` keys, aggregate values).
#[derive(Debug, Clone)]
pub(crate) struct Set {
    pub(crate) spans: Vec<usize>,
    pub(crate) attributes: Vec<(String, Value)>,
}

/// A compiled [`AstPipeline`].
#[derive(Debug)]
pub(crate) struct Pipeline {
    stages: Vec<Stage>,
}

#[derive(Debug)]
enum Stage {
    Spansets(SetExpr),
    ScalarFilter(ScalarFilter),
    /// The fields with their spanset attribute names, `by(resource.service.name)`.
    GroupBy(Vec<(String, Expr)>),
    Coalesce,
    /// `select()` only adds reported attributes; it keeps every spanset.
    Select,
}

#[derive(Debug)]
enum SetExpr {
    Filter(Filter),
    Binary { op: SpansetOp, lhs: Box<SetExpr>, rhs: Box<SetExpr> },
    Pipeline(Pipeline),
}

#[derive(Debug)]
struct Filter {
    /// `None` keeps every span.
    expr: Option<Expr>,
    /// The expression reads `event.` fields: a span matches if one of its events does.
    events: bool,
    /// The expression reads `link.` fields: a span matches if one of its links does.
    links: bool,
}

#[derive(Debug)]
struct ScalarFilter {
    op: BinaryOp,
    lhs: Scalar,
    rhs: Scalar,
}

#[derive(Debug)]
enum Scalar {
    Const(Val<'static>),
    /// `name` is how the aggregate is written (`avg(duration)`), its spanset attribute name.
    Aggregate {
        name: String,
        function: Function,
        expr: Option<Expr>,
    },
    Neg(Box<Scalar>),
    Binary(BinaryOp, Box<Scalar>, Box<Scalar>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl Pipeline {
    pub(crate) fn compile(pipeline: &AstPipeline) -> Result<Self, EvalError> {
        let stages = pipeline
            .stages
            .iter()
            .map(|stage| {
                Ok(match stage {
                    AstStage::Spansets(e) => Stage::Spansets(SetExpr::compile(e)?),
                    AstStage::ScalarFilter(f) => Stage::ScalarFilter(ScalarFilter::compile(f)?),
                    AstStage::GroupBy(fields) => Stage::GroupBy(
                        fields.iter().map(|f| Ok((format!("by({f})"), Expr::compile(f)?))).collect::<Result<
                            _,
                            EvalError,
                        >>(
                        )?,
                    ),
                    AstStage::Select(_) => Stage::Select,
                    AstStage::Coalesce => Stage::Coalesce,
                })
            })
            .collect::<Result<_, EvalError>>()?;
        Ok(Self { stages })
    }

    /// Runs the stages in order over `input`; the stages after the first apply to each
    /// spanset the previous stage gave.
    pub(crate) fn evaluate(&self, trace: &Trace<'_>, input: Vec<Set>) -> Vec<Set> {
        let mut sets = input;
        for stage in &self.stages {
            if sets.is_empty() {
                break;
            }
            sets = match stage {
                Stage::Spansets(e) => sets.iter().flat_map(|s| e.evaluate(trace, s)).collect(),
                Stage::ScalarFilter(f) => sets.into_iter().filter_map(|s| f.evaluate(trace, s)).collect(),
                Stage::GroupBy(fields) => sets.iter().flat_map(|s| group(trace, fields, s)).collect(),
                Stage::Coalesce => {
                    vec![Set {
                        spans: union(sets.iter().map(|s| s.spans.as_slice())),
                        attributes: Vec::new(),
                    }]
                }
                Stage::Select => sets,
            };
        }
        sets
    }
}

/// Splits `set` into one spanset per distinct tuple of `fields` values, in the order the
/// tuples first occur.
fn group(trace: &Trace<'_>, fields: &[(String, Expr)], set: &Set) -> Vec<Set> {
    let mut groups: Vec<Set> = Vec::new();
    let mut index: HashMap<Vec<HashValue>, usize> = HashMap::new();
    for &i in &set.spans {
        let ctx = SpanCtx::new(trace, i);
        let values: Vec<Option<Value>> = fields.iter().map(|(_, e)| e.eval(&ctx).to_value()).collect();
        let key: Vec<HashValue> = values.iter().map(|v| HashValue(v.clone().unwrap_or(Value::Nil))).collect();
        let g = *index.entry(key).or_insert_with(|| {
            let mut attributes = set.attributes.clone();
            for ((name, _), value) in fields.iter().zip(&values) {
                if let Some(value) = value {
                    set_attribute(&mut attributes, name, value.clone());
                }
            }
            groups.push(Set { spans: Vec::new(), attributes });
            groups.len() - 1
        });
        groups[g].spans.push(i);
    }
    groups
}

fn set_attribute(attributes: &mut Vec<(String, Value)>, name: &str, value: Value) {
    match attributes.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => attributes.push((name.to_string(), value)),
    }
}

/// The spans of all `sets`, ascending and unique.
fn union<'s>(sets: impl IntoIterator<Item = &'s [usize]>) -> Vec<usize> {
    let mut spans: Vec<usize> = sets.into_iter().flatten().copied().collect();
    spans.sort_unstable();
    spans.dedup();
    spans
}

impl SetExpr {
    fn compile(e: &SpansetExpr) -> Result<Self, EvalError> {
        Ok(match e {
            SpansetExpr::Filter(f) => {
                let expr = if f.matches_all() { None } else { f.expr.as_ref() };
                let (events, links) = expr.map_or((false, false), reads_events_and_links);
                SetExpr::Filter(Filter { expr: expr.map(Expr::compile).transpose()?, events, links })
            }
            SpansetExpr::Binary { op, lhs, rhs } => SetExpr::Binary {
                op: *op,
                lhs: Box::new(SetExpr::compile(lhs)?),
                rhs: Box::new(SetExpr::compile(rhs)?),
            },
            SpansetExpr::Pipeline(p) => SetExpr::Pipeline(Pipeline::compile(p)?),
        })
    }

    /// The spansets this expression gives within `input` (at most one, except for a
    /// parenthesised pipeline with `by()`).
    fn evaluate(&self, trace: &Trace<'_>, input: &Set) -> Vec<Set> {
        let spans = match self {
            SetExpr::Filter(f) => input.spans.iter().copied().filter(|&i| f.matches(trace, i)).collect(),
            SetExpr::Pipeline(p) => return p.evaluate(trace, vec![input.clone()]),
            SetExpr::Binary { op, lhs, rhs } => {
                let l = lhs.evaluate(trace, input);
                if l.is_empty() && *op == SpansetOp::And {
                    return Vec::new();
                }
                let r = rhs.evaluate(trace, input);
                let l_spans = union(l.iter().map(|s| s.spans.as_slice()));
                let r_spans = union(r.iter().map(|s| s.spans.as_slice()));
                match op {
                    SpansetOp::And if r.is_empty() => Vec::new(),
                    SpansetOp::And | SpansetOp::Or => union([l_spans.as_slice(), r_spans.as_slice()]),
                    op => structural(trace, *op, &l_spans, &r_spans),
                }
            }
        };
        if spans.is_empty() { Vec::new() } else { vec![Set { spans, attributes: input.attributes.clone() }] }
    }
}

/// `a op b` for a structural operator; `a` and `b` ascending and unique, as the result.
fn structural(trace: &Trace<'_>, op: SpansetOp, a: &[usize], b: &[usize]) -> Vec<usize> {
    enum Mode {
        Plain,
        Not,
        Union,
    }
    let (relation, mode) = match op {
        SpansetOp::Child => (Relation::Child, Mode::Plain),
        SpansetOp::Descendant => (Relation::Descendant, Mode::Plain),
        SpansetOp::Parent => (Relation::Parent, Mode::Plain),
        SpansetOp::Ancestor => (Relation::Ancestor, Mode::Plain),
        SpansetOp::Sibling => (Relation::Sibling, Mode::Plain),
        SpansetOp::NotChild => (Relation::Child, Mode::Not),
        SpansetOp::NotDescendant => (Relation::Descendant, Mode::Not),
        SpansetOp::NotParent => (Relation::Parent, Mode::Not),
        SpansetOp::NotAncestor => (Relation::Ancestor, Mode::Not),
        SpansetOp::NotSibling => (Relation::Sibling, Mode::Not),
        SpansetOp::UnionChild => (Relation::Child, Mode::Union),
        SpansetOp::UnionDescendant => (Relation::Descendant, Mode::Union),
        SpansetOp::UnionParent => (Relation::Parent, Mode::Union),
        SpansetOp::UnionAncestor => (Relation::Ancestor, Mode::Union),
        SpansetOp::UnionSibling => (Relation::Sibling, Mode::Union),
        SpansetOp::And | SpansetOp::Or => {
            unreachable!("structural() is only called for structural operators")
        }
    };
    let keep = |spans: &[usize], mask: Vec<bool>, wanted: bool| -> Vec<usize> {
        spans.iter().zip(mask).filter(|(_, m)| *m == wanted).map(|(&s, _)| s).collect()
    };
    match mode {
        Mode::Plain => keep(b, trace.related(relation, a, b), true),
        Mode::Not => keep(b, trace.related(relation, a, b), false),
        Mode::Union => {
            // The spans of `b` related to `a`, and the spans of `a` that `b` spans relate to.
            let inverse = match relation {
                Relation::Child => Relation::Parent,
                Relation::Parent => Relation::Child,
                Relation::Descendant => Relation::Ancestor,
                Relation::Ancestor => Relation::Descendant,
                Relation::Sibling => Relation::Sibling,
            };
            let from_b = keep(b, trace.related(relation, a, b), true);
            let from_a = keep(a, trace.related(inverse, b, a), true);
            union([from_b.as_slice(), from_a.as_slice()])
        }
    }
}

impl Filter {
    fn matches(&self, trace: &Trace<'_>, i: usize) -> bool {
        let Some(expr) = &self.expr else { return true };
        let span = &trace.spans[i].span;
        let test = |event: Option<&Event>, link: Option<&Link>| {
            expr.eval(&SpanCtx { trace, index: i, event, link }).truthy()
        };
        match (self.events, self.links) {
            (false, false) => test(None, None),
            (true, false) => any_or_none(&span.events, |e| test(e, None)),
            (false, true) => any_or_none(&span.links, |l| test(None, l)),
            (true, true) => any_or_none(&span.events, |e| any_or_none(&span.links, |l| test(e, l))),
        }
    }
}

/// Whether `f` holds for one of `items`, or for `None` when there are none.
fn any_or_none<T>(items: &[T], mut f: impl FnMut(Option<&T>) -> bool) -> bool {
    if items.is_empty() { f(None) } else { items.iter().any(|item| f(Some(item))) }
}

impl ScalarFilter {
    fn compile(f: &AstScalarFilter) -> Result<Self, EvalError> {
        Ok(Self { op: f.op, lhs: Scalar::compile(&f.lhs)?, rhs: Scalar::compile(&f.rhs)? })
    }

    /// `set` with the aggregates' values as attributes, if it passes.
    fn evaluate(&self, trace: &Trace<'_>, mut set: Set) -> Option<Set> {
        let mut attributes = Vec::new();
        let lhs = self.lhs.evaluate(trace, &set, &mut attributes)?;
        let rhs = self.rhs.evaluate(trace, &set, &mut attributes)?;
        if !compare(self.op, &lhs, &rhs) {
            return None;
        }
        for (name, value) in attributes {
            set_attribute(&mut set.attributes, &name, value);
        }
        Some(set)
    }
}

impl Scalar {
    fn compile(e: &ScalarExpr) -> Result<Self, EvalError> {
        Ok(match e {
            ScalarExpr::Static(s) => Scalar::Const(Val::from_static(s)),
            ScalarExpr::Aggregate(a) => {
                let function = match a {
                    Aggregate::Count => Function::Count,
                    Aggregate::Avg(_) => Function::Avg,
                    Aggregate::Min(_) => Function::Min,
                    Aggregate::Max(_) => Function::Max,
                    Aggregate::Sum(_) => Function::Sum,
                };
                Scalar::Aggregate {
                    name: a.to_string(),
                    function,
                    expr: a.argument().map(Expr::compile).transpose()?,
                }
            }
            ScalarExpr::Neg(e) => Scalar::Neg(Box::new(Scalar::compile(e)?)),
            ScalarExpr::Binary { op, lhs, rhs } => {
                Scalar::Binary(*op, Box::new(Scalar::compile(lhs)?), Box::new(Scalar::compile(rhs)?))
            }
        })
    }

    /// The value over `set`, recording aggregate values in `attributes`; `None` when an
    /// aggregate has no value (no span has a number for it).
    fn evaluate(
        &self,
        trace: &Trace<'_>,
        set: &Set,
        attributes: &mut Vec<(String, Value)>,
    ) -> Option<Val<'static>> {
        match self {
            Scalar::Const(v) => Some(v.clone()),
            Scalar::Neg(e) => Some(negate(&e.evaluate(trace, set, attributes)?)),
            Scalar::Binary(op, l, r) => {
                let l = l.evaluate(trace, set, attributes)?;
                let r = r.evaluate(trace, set, attributes)?;
                Some(arithmetic(*op, &l, &r))
            }
            Scalar::Aggregate { name, function, expr } => {
                let value = aggregate(trace, set, *function, expr.as_ref())?;
                if let Some(v) = value.to_value() {
                    set_attribute(attributes, name, v);
                }
                Some(value)
            }
        }
    }
}

/// `function` over the numeric values of `expr` for the spans of `set`.
fn aggregate(trace: &Trace<'_>, set: &Set, function: Function, expr: Option<&Expr>) -> Option<Val<'static>> {
    let Some(expr) = expr else {
        return Some(Val::Int(i64::try_from(set.spans.len()).unwrap_or(i64::MAX)));
    };
    let mut acc: Option<Val<'static>> = None;
    let mut count = 0usize;
    for &i in &set.spans {
        let v = expr.eval(&SpanCtx::new(trace, i));
        if !matches!(v, Val::Int(_) | Val::Float(_) | Val::Dur(_)) {
            continue;
        }
        count += 1;
        let v = v.into_static();
        acc = Some(match acc {
            None => v,
            Some(a) => match function {
                Function::Min if compare(BinaryOp::Lt, &v, &a) => v,
                Function::Max if compare(BinaryOp::Gt, &v, &a) => v,
                Function::Min | Function::Max => a,
                Function::Count | Function::Avg | Function::Sum => arithmetic(BinaryOp::Add, &a, &v),
            },
        });
    }
    let acc = acc?;
    if function != Function::Avg {
        return Some(acc);
    }
    let n = count as f64;
    match acc {
        Val::Int(s) => Some(Val::Float(s as f64 / n)),
        Val::Float(s) => Some(Val::Float(s / n)),
        Val::Dur(s) => Some(Val::Dur((s as f64 / n).round() as i64)),
        _ => None,
    }
}
