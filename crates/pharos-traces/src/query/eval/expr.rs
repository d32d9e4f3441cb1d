//! Field expressions compiled for evaluation (regexes built once), and their value for
//! one span.

use std::borrow::Cow;

use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

use super::EvalError;
use super::trace::Trace;
use super::value::{Val, arithmetic, compare, negate, regex_matches};
use crate::model::{attribute, hex};
use crate::query::{
    AttributeScope, BinaryOp, FieldExpr, Intrinsic, Kind, Static, Status, UnaryOp, compile_regex,
};

/// A compiled [`FieldExpr`].
#[derive(Debug)]
pub(crate) enum Expr {
    Const(Val<'static>),
    Attribute(AttributeScope, String),
    Intrinsic(Intrinsic),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Regex {
        expr: Box<Expr>,
        regex: regex::Regex,
        negated: bool,
    },
    /// `expr = nil` (or, `negated`, `expr != nil`).
    IsNil {
        expr: Box<Expr>,
        negated: bool,
    },
}

impl Expr {
    pub(crate) fn compile(e: &FieldExpr) -> Result<Expr, EvalError> {
        Ok(match e {
            FieldExpr::Static(s) => Expr::Const(Val::from_static(s)),
            FieldExpr::Attribute(a) => Expr::Attribute(a.scope, a.name.clone()),
            FieldExpr::Intrinsic(i) => Expr::Intrinsic(*i),
            FieldExpr::Unary { op: UnaryOp::Not, expr } => Expr::Not(Box::new(Expr::compile(expr)?)),
            FieldExpr::Unary { op: UnaryOp::Neg, expr } => Expr::Neg(Box::new(Expr::compile(expr)?)),
            FieldExpr::Binary { op: op @ (BinaryOp::Eq | BinaryOp::Neq), lhs, rhs }
                if matches!(**lhs, FieldExpr::Static(Static::Nil))
                    || matches!(**rhs, FieldExpr::Static(Static::Nil)) =>
            {
                let other = if matches!(**rhs, FieldExpr::Static(Static::Nil)) { lhs } else { rhs };
                Expr::IsNil { expr: Box::new(Expr::compile(other)?), negated: *op == BinaryOp::Neq }
            }
            FieldExpr::Binary { op: op @ (BinaryOp::Regex | BinaryOp::NotRegex), lhs, rhs } => {
                let FieldExpr::Static(Static::String(pattern)) = &**rhs else {
                    return Err(EvalError::RegexNotLiteral);
                };
                let regex = compile_regex(pattern)
                    .map_err(|source| EvalError::InvalidRegex { pattern: pattern.clone(), source })?;
                Expr::Regex { expr: Box::new(Expr::compile(lhs)?), regex, negated: *op == BinaryOp::NotRegex }
            }
            FieldExpr::Binary { op, lhs, rhs } => {
                Expr::Binary(*op, Box::new(Expr::compile(lhs)?), Box::new(Expr::compile(rhs)?))
            }
        })
    }

    /// The value of this expression for the span (and event and link) of `ctx`.
    pub(crate) fn eval<'a>(&'a self, ctx: &SpanCtx<'a>) -> Val<'a> {
        match self {
            Expr::Const(v) => v.borrowed(),
            Expr::Attribute(scope, name) => ctx.attribute(*scope, name),
            Expr::Intrinsic(i) => ctx.intrinsic(*i),
            Expr::Not(e) => match e.eval(ctx) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Nil,
            },
            Expr::Neg(e) => negate(&e.eval(ctx)),
            Expr::Binary(BinaryOp::And, l, r) => Val::Bool(l.eval(ctx).truthy() && r.eval(ctx).truthy()),
            Expr::Binary(BinaryOp::Or, l, r) => Val::Bool(l.eval(ctx).truthy() || r.eval(ctx).truthy()),
            Expr::Binary(op, l, r) if op.is_comparison() => {
                Val::Bool(compare(*op, &l.eval(ctx), &r.eval(ctx)))
            }
            Expr::Binary(op, l, r) => arithmetic(*op, &l.eval(ctx), &r.eval(ctx)),
            Expr::Regex { expr, regex, negated } => {
                Val::Bool(regex_matches(&expr.eval(ctx), regex, *negated))
            }
            Expr::IsNil { expr, negated } => Val::Bool(expr.eval(ctx).is_nil() != *negated),
        }
    }
}

/// Whether `e` reads event fields (`event.x`, `event:name`, …) and link fields.
pub(crate) fn reads_events_and_links(e: &FieldExpr) -> (bool, bool) {
    let (mut events, mut links) = (false, false);
    e.walk(&mut |node| match node {
        FieldExpr::Attribute(a) if a.scope == AttributeScope::Event => events = true,
        FieldExpr::Attribute(a) if a.scope == AttributeScope::Link => links = true,
        FieldExpr::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => events = true,
        FieldExpr::Intrinsic(Intrinsic::LinkSpanId | Intrinsic::LinkTraceId) => links = true,
        _ => {}
    });
    (events, links)
}

/// One span of a trace, and the event and link that `event.` and `link.` fields read.
pub(crate) struct SpanCtx<'a> {
    pub(crate) trace: &'a Trace<'a>,
    pub(crate) index: usize,
    pub(crate) event: Option<&'a Event>,
    pub(crate) link: Option<&'a Link>,
}

impl<'a> SpanCtx<'a> {
    pub(crate) fn new(trace: &'a Trace<'a>, index: usize) -> Self {
        Self { trace, index, event: None, link: None }
    }

    fn attribute(&self, scope: AttributeScope, name: &str) -> Val<'a> {
        let data = &self.trace.spans[self.index];
        let found = match scope {
            AttributeScope::Span => attribute(&data.span.attributes, name),
            AttributeScope::Resource => attribute(&data.resource.resource.attributes, name),
            AttributeScope::Unscoped => attribute(&data.span.attributes, name)
                .or_else(|| attribute(&data.resource.resource.attributes, name)),
            AttributeScope::Instrumentation => attribute(&data.scope.scope.attributes, name),
            AttributeScope::Event => self.event.and_then(|e| attribute(&e.attributes, name)),
            AttributeScope::Link => self.link.and_then(|l| attribute(&l.attributes, name)),
        };
        found.map_or(Val::Nil, Val::from_any)
    }

    fn intrinsic(&self, intrinsic: Intrinsic) -> Val<'a> {
        let trace = self.trace;
        let data = &trace.spans[self.index];
        let span = &data.span;
        let str = |s: &'a str| Val::Str(Cow::Borrowed(s));
        match intrinsic {
            Intrinsic::Name => str(&span.name),
            Intrinsic::Status => Val::Status(status_of(span.status.as_ref().map_or(0, |s| s.code))),
            Intrinsic::StatusMessage => str(span.status.as_ref().map_or("", |s| s.message.as_str())),
            Intrinsic::Kind => Val::Kind(kind_of(span.kind)),
            Intrinsic::Duration => Val::Dur(nanos(data.duration_nanos())),
            Intrinsic::SpanId => Val::Str(Cow::Owned(hex(&span.span_id))),
            Intrinsic::ParentId => data.parent_span_id().map_or(Val::Nil, |p| Val::Str(Cow::Owned(hex(&p)))),
            Intrinsic::ChildCount => Val::Int(trace.child_count(self.index)),
            Intrinsic::RootServiceName => trace.root().map_or(Val::Nil, |r| str(r.service_name())),
            Intrinsic::RootName => trace.root().map_or(Val::Nil, |r| str(&r.span.name)),
            Intrinsic::TraceDuration => {
                let (start, end) = trace.bounds();
                Val::Dur(nanos(end - start))
            }
            Intrinsic::TraceId => str(trace.trace_id_hex()),
            Intrinsic::EventName => self.event.map_or(Val::Nil, |e| str(&e.name)),
            Intrinsic::EventTimeSinceStart => self.event.map_or(Val::Nil, |e| {
                Val::Dur(nanos(e.time_unix_nano).saturating_sub(nanos(span.start_time_unix_nano)))
            }),
            Intrinsic::LinkTraceId => self.link.map_or(Val::Nil, |l| Val::Str(Cow::Owned(hex(&l.trace_id)))),
            Intrinsic::LinkSpanId => self.link.map_or(Val::Nil, |l| Val::Str(Cow::Owned(hex(&l.span_id)))),
            Intrinsic::InstrumentationName => str(&data.scope.scope.name),
            Intrinsic::InstrumentationVersion => str(&data.scope.scope.version),
        }
    }
}

/// The TraceQL status of an OTLP status code.
pub(crate) fn status_of(code: i32) -> Status {
    match code {
        1 => Status::Ok,
        2 => Status::Error,
        _ => Status::Unset,
    }
}

/// The TraceQL kind of an OTLP span kind.
pub(crate) fn kind_of(kind: i32) -> Kind {
    match kind {
        1 => Kind::Internal,
        2 => Kind::Server,
        3 => Kind::Client,
        4 => Kind::Producer,
        5 => Kind::Consumer,
        _ => Kind::Unspecified,
    }
}

pub(crate) fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
