//! Running compiled statements: values, the item a statement runs on (a span with its scope
//! and resource, a log record, a data point with its metric, ...), reading and changing paths,
//! the editors and converters, and the walks over a request for each context.

use std::{cmp::Ordering, collections::HashMap};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, SummaryDataPoint, metric, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event},
};

use sha2::{Digest, Sha256};

use super::compile::{Cond, Editor, Field, Level, MergeStrategy, Path, PatternMode, Statement, Value};
use super::parser::{CmpOp, Key};
use crate::processor::{Data, otlp};

/// A runtime error of one statement on one item (the item is kept either way).
pub(super) type EvalError = String;

/// An OTTL value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
    Map(Vec<KeyValue>),
    Array(Vec<AnyValue>),
}

impl Val {
    fn from_any(v: &AnyValue) -> Val {
        use any_value::Value as V;
        match &v.value {
            // A profiles-dictionary string index means nothing outside profiles: absent.
            None | Some(V::StringValueStrindex(_)) => Val::Nil,
            Some(V::StringValue(s)) => Val::Str(s.clone()),
            Some(V::BoolValue(b)) => Val::Bool(*b),
            Some(V::IntValue(i)) => Val::Int(*i),
            Some(V::DoubleValue(d)) => Val::Double(*d),
            Some(V::BytesValue(b)) => Val::Bytes(b.clone()),
            Some(V::ArrayValue(a)) => Val::Array(a.values.clone()),
            Some(V::KvlistValue(kv)) => Val::Map(kv.values.clone()),
        }
    }

    /// The value as an attribute value; `nil` has none.
    fn into_any(self) -> Option<AnyValue> {
        use any_value::Value as V;
        let v = match self {
            Val::Nil => return None,
            Val::Bool(b) => V::BoolValue(b),
            Val::Int(i) => V::IntValue(i),
            Val::Double(d) => V::DoubleValue(d),
            Val::Str(s) => V::StringValue(s),
            Val::Bytes(b) => V::BytesValue(b),
            Val::Map(m) => V::KvlistValue(KeyValueList { values: m }),
            Val::Array(a) => V::ArrayValue(ArrayValue { values: a }),
        };
        Some(AnyValue { value: Some(v) })
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Double(_) => "double",
            Val::Str(_) => "string",
            Val::Bytes(_) => "bytes",
            Val::Map(_) => "map",
            Val::Array(_) => "list",
        }
    }

    /// The value as text, as `to_text` prints attributes; `nil` has none.
    fn text(self) -> Option<String> {
        match self {
            Val::Nil => None,
            Val::Str(s) => Some(s),
            other => other.into_any().map(|a| otlp::to_text(&a)),
        }
    }
}

fn any_type_name(v: &AnyValue) -> &'static str {
    use any_value::Value as V;
    match &v.value {
        None | Some(V::StringValueStrindex(_)) => "empty",
        Some(V::StringValue(_)) => "string",
        Some(V::BoolValue(_)) => "bool",
        Some(V::IntValue(_)) => "int",
        Some(V::DoubleValue(_)) => "double",
        Some(V::BytesValue(_)) => "bytes",
        Some(V::ArrayValue(_)) => "list",
        Some(V::KvlistValue(_)) => "map",
    }
}

// ---- the item a statement runs on ----

/// What a metric's data says about it (read-only paths).
#[derive(Debug, Clone, Copy)]
pub(super) struct MetricInfo {
    data_type: i64,
    temporality: i64,
    monotonic: bool,
}

impl MetricInfo {
    fn of(data: Option<&metric::Data>) -> MetricInfo {
        let (data_type, temporality, monotonic) = match data {
            None => (0, 0, false),
            Some(metric::Data::Gauge(_)) => (1, 0, false),
            Some(metric::Data::Sum(s)) => (2, s.aggregation_temporality, s.is_monotonic),
            Some(metric::Data::Histogram(h)) => (3, h.aggregation_temporality, false),
            Some(metric::Data::ExponentialHistogram(h)) => (4, h.aggregation_temporality, false),
            Some(metric::Data::Summary(_)) => (5, 0, false),
        };
        MetricInfo { data_type, temporality: i64::from(temporality), monotonic }
    }
}

/// A metric's own fields, borrowed apart from its data points.
pub(super) struct MetricView<'a> {
    name: &'a mut String,
    description: &'a mut String,
    unit: &'a mut String,
    metadata: &'a mut Vec<KeyValue>,
    info: MetricInfo,
}

pub(super) enum PointMut<'a> {
    Number(&'a mut NumberDataPoint),
    Histogram(&'a mut HistogramDataPoint),
    Exponential(&'a mut ExponentialHistogramDataPoint),
    Summary(&'a mut SummaryDataPoint),
}

impl PointMut<'_> {
    fn attributes(&self) -> &Vec<KeyValue> {
        match self {
            PointMut::Number(p) => &p.attributes,
            PointMut::Histogram(p) => &p.attributes,
            PointMut::Exponential(p) => &p.attributes,
            PointMut::Summary(p) => &p.attributes,
        }
    }

    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        match self {
            PointMut::Number(p) => &mut p.attributes,
            PointMut::Histogram(p) => &mut p.attributes,
            PointMut::Exponential(p) => &mut p.attributes,
            PointMut::Summary(p) => &mut p.attributes,
        }
    }

    fn times_mut(&mut self) -> (&mut u64, &mut u64) {
        match self {
            PointMut::Number(p) => (&mut p.start_time_unix_nano, &mut p.time_unix_nano),
            PointMut::Histogram(p) => (&mut p.start_time_unix_nano, &mut p.time_unix_nano),
            PointMut::Exponential(p) => (&mut p.start_time_unix_nano, &mut p.time_unix_nano),
            PointMut::Summary(p) => (&mut p.start_time_unix_nano, &mut p.time_unix_nano),
        }
    }

    fn times(&self) -> (u64, u64) {
        match self {
            PointMut::Number(p) => (p.start_time_unix_nano, p.time_unix_nano),
            PointMut::Histogram(p) => (p.start_time_unix_nano, p.time_unix_nano),
            PointMut::Exponential(p) => (p.start_time_unix_nano, p.time_unix_nano),
            PointMut::Summary(p) => (p.start_time_unix_nano, p.time_unix_nano),
        }
    }
}

/// One item and everything around it that its context can reach.
pub(super) struct Item<'a> {
    resource: &'a mut Option<Resource>,
    scope: Option<&'a mut Option<InstrumentationScope>>,
    span: Option<&'a mut Span>,
    event: Option<&'a mut Event>,
    log: Option<&'a mut LogRecord>,
    metric: Option<MetricView<'a>>,
    point: Option<PointMut<'a>>,
}

fn int_of(n: u64) -> Val {
    Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn id_text(id: &[u8]) -> Val {
    Val::Str(otlp::hex(id))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 == 1 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

impl<'a> Item<'a> {
    fn at(resource: &'a mut Option<Resource>) -> Self {
        Item { resource, scope: None, span: None, event: None, log: None, metric: None, point: None }
    }

    fn map(&self, level: Level, field: Field) -> Option<&Vec<KeyValue>> {
        match (level, field) {
            (Level::Metric, Field::Metadata) => self.metric.as_ref().map(|m| &*m.metadata),
            (Level::Resource, _) => self.resource.as_ref().map(|r| &r.attributes),
            (Level::Scope, _) => self.scope.as_ref().and_then(|s| s.as_ref()).map(|s| &s.attributes),
            (Level::Span, _) => self.span.as_ref().map(|s| &s.attributes),
            (Level::SpanEvent, _) => self.event.as_ref().map(|e| &e.attributes),
            (Level::Log, _) => self.log.as_ref().map(|l| &l.attributes),
            (Level::DataPoint, _) => self.point.as_ref().map(|p| p.attributes()),
            (Level::Metric, _) => None,
        }
    }

    /// A level's attribute map; `create` makes a missing resource or scope.
    fn map_mut(&mut self, level: Level, field: Field, create: bool) -> Option<&mut Vec<KeyValue>> {
        match (level, field) {
            (Level::Metric, Field::Metadata) => self.metric.as_mut().map(|m| &mut *m.metadata),
            (Level::Resource, _) if create => {
                Some(&mut self.resource.get_or_insert_with(Resource::default).attributes)
            }
            (Level::Resource, _) => self.resource.as_mut().map(|r| &mut r.attributes),
            (Level::Scope, _) => {
                let scope = self.scope.as_mut()?;
                if create {
                    Some(&mut scope.get_or_insert_with(InstrumentationScope::default).attributes)
                } else {
                    scope.as_mut().map(|s| &mut s.attributes)
                }
            }
            (Level::Span, _) => self.span.as_mut().map(|s| &mut s.attributes),
            (Level::SpanEvent, _) => self.event.as_mut().map(|e| &mut e.attributes),
            (Level::Log, _) => self.log.as_mut().map(|l| &mut l.attributes),
            (Level::DataPoint, _) => self.point.as_mut().map(|p| p.attributes_mut()),
            (Level::Metric, _) => None,
        }
    }

    /// Reads a path; a missing attribute is `nil`.
    pub(super) fn get(&self, path: &Path) -> Result<Val, EvalError> {
        match path.field {
            Field::Attributes | Field::Metadata => {
                let map = self.map(path.level, path.field).map_or(&[][..], |m| m.as_slice());
                let Some((first, rest)) = path.keys.split_first() else {
                    return Ok(Val::Map(map.to_vec()));
                };
                let Key::Str(key) = first else { return Err("a map is indexed with a string key".into()) };
                match otlp::get(map, key) {
                    Some(v) => Ok(lookup(v, rest)?.map_or(Val::Nil, Val::from_any)),
                    None => Ok(Val::Nil),
                }
            }
            Field::Body => match self.log.as_ref().and_then(|l| l.body.as_ref()) {
                Some(body) => Ok(lookup(body, &path.keys)?.map_or(Val::Nil, Val::from_any)),
                None => Ok(Val::Nil),
            },
            field => Ok(self.scalar(path.level, field)),
        }
    }

    fn scalar(&self, level: Level, field: Field) -> Val {
        use Field as F;
        match level {
            Level::Resource => match field {
                F::DroppedAttributesCount => {
                    Val::Int(self.resource.as_ref().map_or(0, |r| i64::from(r.dropped_attributes_count)))
                }
                _ => Val::Nil,
            },
            Level::Scope => {
                let scope = self.scope.as_ref().and_then(|s| s.as_ref());
                match field {
                    F::Name => Val::Str(scope.map(|s| s.name.clone()).unwrap_or_default()),
                    F::Version => Val::Str(scope.map(|s| s.version.clone()).unwrap_or_default()),
                    F::DroppedAttributesCount => {
                        Val::Int(scope.map_or(0, |s| i64::from(s.dropped_attributes_count)))
                    }
                    _ => Val::Nil,
                }
            }
            Level::Span => {
                let Some(s) = self.span.as_ref() else { return Val::Nil };
                match field {
                    F::Name => Val::Str(s.name.clone()),
                    F::Kind => Val::Int(i64::from(s.kind)),
                    F::StatusCode => Val::Int(s.status.as_ref().map_or(0, |st| i64::from(st.code))),
                    F::StatusMessage => {
                        Val::Str(s.status.as_ref().map(|st| st.message.clone()).unwrap_or_default())
                    }
                    F::TraceState => Val::Str(s.trace_state.clone()),
                    F::TraceId => Val::Bytes(s.trace_id.clone()),
                    F::TraceIdString => id_text(&s.trace_id),
                    F::SpanId => Val::Bytes(s.span_id.clone()),
                    F::SpanIdString => id_text(&s.span_id),
                    F::ParentSpanId => Val::Bytes(s.parent_span_id.clone()),
                    F::ParentSpanIdString => id_text(&s.parent_span_id),
                    F::StartTime => int_of(s.start_time_unix_nano),
                    F::EndTime => int_of(s.end_time_unix_nano),
                    F::Duration => {
                        let d = i128::from(s.end_time_unix_nano) - i128::from(s.start_time_unix_nano);
                        Val::Int(i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX }))
                    }
                    F::DroppedAttributesCount => Val::Int(i64::from(s.dropped_attributes_count)),
                    _ => Val::Nil,
                }
            }
            Level::SpanEvent => {
                let Some(e) = self.event.as_ref() else { return Val::Nil };
                match field {
                    F::Name => Val::Str(e.name.clone()),
                    F::Time => int_of(e.time_unix_nano),
                    F::DroppedAttributesCount => Val::Int(i64::from(e.dropped_attributes_count)),
                    _ => Val::Nil,
                }
            }
            Level::Log => {
                let Some(l) = self.log.as_ref() else { return Val::Nil };
                match field {
                    F::Time => int_of(l.time_unix_nano),
                    F::ObservedTime => int_of(l.observed_time_unix_nano),
                    F::SeverityNumber => Val::Int(i64::from(l.severity_number)),
                    F::SeverityText => Val::Str(l.severity_text.clone()),
                    F::TraceId => Val::Bytes(l.trace_id.clone()),
                    F::TraceIdString => id_text(&l.trace_id),
                    F::SpanId => Val::Bytes(l.span_id.clone()),
                    F::SpanIdString => id_text(&l.span_id),
                    F::Flags => Val::Int(i64::from(l.flags)),
                    F::EventName => Val::Str(l.event_name.clone()),
                    F::DroppedAttributesCount => Val::Int(i64::from(l.dropped_attributes_count)),
                    _ => Val::Nil,
                }
            }
            Level::Metric => {
                let Some(m) = self.metric.as_ref() else { return Val::Nil };
                match field {
                    F::Name => Val::Str(m.name.clone()),
                    F::Description => Val::Str(m.description.clone()),
                    F::Unit => Val::Str(m.unit.clone()),
                    F::Type => Val::Int(m.info.data_type),
                    F::AggregationTemporality => Val::Int(m.info.temporality),
                    F::IsMonotonic => Val::Bool(m.info.monotonic),
                    _ => Val::Nil,
                }
            }
            Level::DataPoint => {
                let Some(p) = self.point.as_ref() else { return Val::Nil };
                match (field, p) {
                    (F::StartTime, p) => int_of(p.times().0),
                    (F::Time, p) => int_of(p.times().1),
                    (F::ValueInt, PointMut::Number(n)) => match n.value {
                        Some(number_data_point::Value::AsInt(i)) => Val::Int(i),
                        _ => Val::Nil,
                    },
                    (F::ValueDouble, PointMut::Number(n)) => match n.value {
                        Some(number_data_point::Value::AsDouble(d)) => Val::Double(d),
                        _ => Val::Nil,
                    },
                    (F::Count, PointMut::Histogram(h)) => int_of(h.count),
                    (F::Count, PointMut::Exponential(h)) => int_of(h.count),
                    (F::Count, PointMut::Summary(s)) => int_of(s.count),
                    (F::Sum, PointMut::Histogram(h)) => h.sum.map_or(Val::Nil, Val::Double),
                    (F::Sum, PointMut::Exponential(h)) => h.sum.map_or(Val::Nil, Val::Double),
                    (F::Sum, PointMut::Summary(s)) => Val::Double(s.sum),
                    (F::Flags, PointMut::Number(n)) => Val::Int(i64::from(n.flags)),
                    (F::Flags, PointMut::Histogram(h)) => Val::Int(i64::from(h.flags)),
                    (F::Flags, PointMut::Exponential(h)) => Val::Int(i64::from(h.flags)),
                    (F::Flags, PointMut::Summary(s)) => Val::Int(i64::from(s.flags)),
                    _ => Val::Nil,
                }
            }
        }
    }

    /// Sets a path. `nil` changes nothing; a value of the wrong type for a typed field (a
    /// number for `name`) changes nothing, as in OTTL.
    pub(super) fn set(&mut self, path: &Path, value: Val) -> Result<(), EvalError> {
        if value == Val::Nil {
            return Ok(());
        }
        match path.field {
            Field::Attributes | Field::Metadata => {
                if path.keys.is_empty() {
                    if let Val::Map(m) = value
                        && let Some(map) = self.map_mut(path.level, path.field, true)
                    {
                        *map = m;
                    }
                    return Ok(());
                }
                let Some(any) = value.into_any() else { return Ok(()) };
                match self.map_mut(path.level, path.field, true) {
                    Some(map) => set_in_map(map, &path.keys, any),
                    None => Ok(()),
                }
            }
            Field::Body => {
                let (Some(log), Some(any)) = (self.log.as_mut(), value.into_any()) else { return Ok(()) };
                if path.keys.is_empty() {
                    log.body = Some(any);
                    Ok(())
                } else {
                    let had_body = log.body.is_some();
                    let result =
                        set_in_value(log.body.get_or_insert_with(AnyValue::default), &path.keys, any);
                    if result.is_err() && !had_body {
                        log.body = None;
                    }
                    result
                }
            }
            field => self.set_scalar(path.level, field, value),
        }
    }

    fn set_scalar(&mut self, level: Level, field: Field, value: Val) -> Result<(), EvalError> {
        use Field as F;
        fn int32(v: i64, what: &str) -> Result<i32, EvalError> {
            i32::try_from(v).map_err(|_| format!("{v} is out of range for {what}"))
        }
        fn time(v: i64) -> Result<u64, EvalError> {
            u64::try_from(v).map_err(|_| format!("a timestamp cannot be negative ({v})"))
        }
        fn id(value: Val, len: usize, empty_ok: bool, what: &str) -> Result<Option<Vec<u8>>, EvalError> {
            let bytes = match value {
                Val::Bytes(b) => b,
                Val::Str(s) => hex_decode(&s).ok_or_else(|| format!("{s:?} is not a hex {what}"))?,
                _ => return Ok(None),
            };
            if bytes.len() == len || (empty_ok && bytes.is_empty()) {
                Ok(Some(bytes))
            } else {
                Err(format!("a {what} has {len} bytes, not {}", bytes.len()))
            }
        }
        match (level, value) {
            (Level::Scope, Val::Str(s)) => {
                let Some(scope) = self.scope.as_mut() else { return Ok(()) };
                let scope = scope.get_or_insert_with(InstrumentationScope::default);
                match field {
                    F::Name => scope.name = s,
                    F::Version => scope.version = s,
                    _ => {}
                }
            }
            (Level::Span, value) => {
                let Some(span) = self.span.as_mut() else { return Ok(()) };
                match (field, value) {
                    (F::Name, Val::Str(s)) => span.name = s,
                    (F::Kind, Val::Int(i)) => span.kind = int32(i, "kind")?,
                    (F::StatusCode, Val::Int(i)) => {
                        span.status.get_or_insert_default().code = int32(i, "status.code")?
                    }
                    (F::StatusMessage, Val::Str(s)) => span.status.get_or_insert_default().message = s,
                    (F::TraceState, Val::Str(s)) => span.trace_state = s,
                    (F::TraceId | F::TraceIdString, v) => {
                        if let Some(b) = id(v, 16, false, "trace id")? {
                            span.trace_id = b;
                        }
                    }
                    (F::SpanId | F::SpanIdString, v) => {
                        if let Some(b) = id(v, 8, false, "span id")? {
                            span.span_id = b;
                        }
                    }
                    (F::ParentSpanId | F::ParentSpanIdString, v) => {
                        if let Some(b) = id(v, 8, true, "span id")? {
                            span.parent_span_id = b;
                        }
                    }
                    (F::StartTime, Val::Int(i)) => span.start_time_unix_nano = time(i)?,
                    (F::EndTime, Val::Int(i)) => span.end_time_unix_nano = time(i)?,
                    _ => {}
                }
            }
            (Level::SpanEvent, value) => {
                let Some(event) = self.event.as_mut() else { return Ok(()) };
                match (field, value) {
                    (F::Name, Val::Str(s)) => event.name = s,
                    (F::Time, Val::Int(i)) => event.time_unix_nano = time(i)?,
                    _ => {}
                }
            }
            (Level::Log, value) => {
                let Some(log) = self.log.as_mut() else { return Ok(()) };
                match (field, value) {
                    (F::Time, Val::Int(i)) => log.time_unix_nano = time(i)?,
                    (F::ObservedTime, Val::Int(i)) => log.observed_time_unix_nano = time(i)?,
                    (F::SeverityNumber, Val::Int(i)) => log.severity_number = int32(i, "severity_number")?,
                    (F::SeverityText, Val::Str(s)) => log.severity_text = s,
                    (F::EventName, Val::Str(s)) => log.event_name = s,
                    (F::TraceId | F::TraceIdString, v) => {
                        if let Some(b) = id(v, 16, true, "trace id")? {
                            log.trace_id = b;
                        }
                    }
                    (F::SpanId | F::SpanIdString, v) => {
                        if let Some(b) = id(v, 8, true, "span id")? {
                            log.span_id = b;
                        }
                    }
                    _ => {}
                }
            }
            (Level::Metric, Val::Str(s)) => {
                let Some(m) = self.metric.as_mut() else { return Ok(()) };
                match field {
                    F::Name => *m.name = s,
                    F::Description => *m.description = s,
                    F::Unit => *m.unit = s,
                    _ => {}
                }
            }
            (Level::DataPoint, value) => {
                let Some(p) = self.point.as_mut() else { return Ok(()) };
                match (field, value, p) {
                    (F::StartTime, Val::Int(i), p) => *p.times_mut().0 = time(i)?,
                    (F::Time, Val::Int(i), p) => *p.times_mut().1 = time(i)?,
                    (F::ValueInt, Val::Int(i), PointMut::Number(n)) => {
                        n.value = Some(number_data_point::Value::AsInt(i))
                    }
                    (F::ValueDouble, Val::Double(d), PointMut::Number(n)) => {
                        n.value = Some(number_data_point::Value::AsDouble(d))
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The map a map editor changes: `Ok(None)` when it is missing (nothing to do).
    fn target_map(&mut self, path: &Path) -> Result<Option<&mut Vec<KeyValue>>, EvalError> {
        match path.field {
            Field::Attributes | Field::Metadata => {
                let Some(map) = self.map_mut(path.level, path.field, false) else { return Ok(None) };
                let Some((first, rest)) = path.keys.split_first() else { return Ok(Some(map)) };
                let Key::Str(key) = first else { return Err("a map is indexed with a string key".into()) };
                match otlp::get_mut(map, key) {
                    Some(v) => map_in_value(v, rest),
                    None => Ok(None),
                }
            }
            Field::Body => match self.log.as_mut().and_then(|l| l.body.as_mut()) {
                Some(body) => map_in_value(body, &path.keys),
                None => Ok(None),
            },
            _ => Err("not a map".into()),
        }
    }
}

/// Follows keys into a value; `None` when a map has no such key.
fn lookup<'v>(v: &'v AnyValue, keys: &[Key]) -> Result<Option<&'v AnyValue>, EvalError> {
    let Some((key, rest)) = keys.split_first() else { return Ok(Some(v)) };
    use any_value::Value as V;
    let next = match (&v.value, key) {
        (Some(V::KvlistValue(kv)), Key::Str(k)) => otlp::get(&kv.values, k),
        (Some(V::ArrayValue(a)), Key::Index(i)) => Some(
            usize::try_from(*i)
                .ok()
                .and_then(|i| a.values.get(i))
                .ok_or_else(|| format!("index {i} is out of range for a list of {}", a.values.len()))?,
        ),
        (None, _) => None,
        (_, Key::Str(k)) => return Err(format!("cannot read key {k:?} of a {} value", any_type_name(v))),
        (_, Key::Index(i)) => return Err(format!("cannot read index {i} of a {} value", any_type_name(v))),
    };
    match next {
        Some(n) => lookup(n, rest),
        None => Ok(None),
    }
}

/// Follows keys into a value to the map a map editor changes.
fn map_in_value<'v>(v: &'v mut AnyValue, keys: &[Key]) -> Result<Option<&'v mut Vec<KeyValue>>, EvalError> {
    use any_value::Value as V;
    let type_name = any_type_name(v);
    match (&mut v.value, keys.split_first()) {
        (None, _) => Ok(None),
        (Some(V::KvlistValue(kv)), None) => Ok(Some(&mut kv.values)),
        (Some(_), None) => Err(format!("expected a map, found a {type_name} value")),
        (Some(V::KvlistValue(kv)), Some((Key::Str(k), rest))) => match otlp::get_mut(&mut kv.values, k) {
            Some(next) => map_in_value(next, rest),
            None => Ok(None),
        },
        (Some(V::ArrayValue(a)), Some((Key::Index(i), rest))) => {
            let len = a.values.len();
            match usize::try_from(*i).ok().and_then(|i| a.values.get_mut(i)) {
                Some(next) => map_in_value(next, rest),
                None => Err(format!("index {i} is out of range for a list of {len}")),
            }
        }
        (Some(_), Some(_)) => Err(format!("cannot index a {type_name} value with that key")),
    }
}

/// Sets `keys` inside a map, making missing intermediate maps.
/// On an error the map is left as it was (no empty entry is left behind).
fn set_in_map(map: &mut Vec<KeyValue>, keys: &[Key], value: AnyValue) -> Result<(), EvalError> {
    let Some((first, rest)) = keys.split_first() else { return Ok(()) };
    let Key::Str(key) = first else { return Err("a map is indexed with a string key".into()) };
    if rest.is_empty() {
        otlp::upsert(map, key, value);
        return Ok(());
    }
    let (index, added) = match map.iter().position(|kv| kv.key == *key) {
        Some(i) => (i, false),
        None => {
            map.push(otlp::key_value(key.clone(), AnyValue::default()));
            (map.len() - 1, true)
        }
    };
    let result = set_in_value(map[index].value.get_or_insert_with(AnyValue::default), rest, value);
    if result.is_err() && added {
        map.pop();
    }
    result
}

fn set_in_value(slot: &mut AnyValue, keys: &[Key], value: AnyValue) -> Result<(), EvalError> {
    use any_value::Value as V;
    let Some((first, rest)) = keys.split_first() else {
        *slot = value;
        return Ok(());
    };
    let type_name = any_type_name(slot);
    match (&mut slot.value, first) {
        (None, Key::Str(_)) => {
            let mut map = Vec::new();
            set_in_map(&mut map, keys, value)?;
            slot.value = Some(V::KvlistValue(KeyValueList { values: map }));
            Ok(())
        }
        (Some(V::KvlistValue(kv)), Key::Str(_)) => set_in_map(&mut kv.values, keys, value),
        (Some(V::ArrayValue(a)), Key::Index(i)) => {
            let len = a.values.len();
            match usize::try_from(*i).ok().and_then(|i| a.values.get_mut(i)) {
                Some(next) => set_in_value(next, rest, value),
                None => Err(format!("index {i} is out of range for a list of {len}")),
            }
        }
        _ => Err(format!("cannot set a key inside a {type_name} value")),
    }
}

// ---- values and conditions ----

fn eval(v: &Value, item: &Item<'_>) -> Result<Val, EvalError> {
    Ok(match v {
        Value::Const(c) => c.clone(),
        Value::Path(p) => item.get(p)?,
        Value::List(items) => Val::Array(
            items
                .iter()
                .map(|i| Ok(eval(i, item)?.into_any().unwrap_or_default()))
                .collect::<Result<_, EvalError>>()?,
        ),
        Value::Concat(items, delimiter) => {
            let mut parts = Vec::with_capacity(items.len());
            for i in items {
                parts.push(match eval(i, item)? {
                    Val::Map(_) | Val::Array(_) | Val::Nil => String::new(),
                    other => other.text().unwrap_or_default(),
                });
            }
            Val::Str(parts.join(delimiter))
        }
        Value::IsMatch(target, re) => Val::Bool(eval(target, item)?.text().is_some_and(|s| re.is_match(&s))),
        Value::Int(inner) => match eval(inner, item)? {
            Val::Int(i) => Val::Int(i),
            Val::Double(d) if d.is_finite() => Val::Int(d.trunc() as i64),
            Val::Bool(b) => Val::Int(i64::from(b)),
            Val::Str(s) => s.parse().map_or(Val::Nil, Val::Int),
            _ => Val::Nil,
        },
        Value::Double(inner) => match eval(inner, item)? {
            Val::Int(i) => Val::Double(i as f64),
            Val::Double(d) => Val::Double(d),
            Val::Bool(b) => Val::Double(if b { 1.0 } else { 0.0 }),
            Val::Str(s) => s.parse().map_or(Val::Nil, Val::Double),
            _ => Val::Nil,
        },
        Value::String(inner) => eval(inner, item)?.text().map_or(Val::Nil, Val::Str),
        Value::ToLowerCase(inner) => match eval(inner, item)? {
            Val::Str(s) => Val::Str(s.to_lowercase()),
            Val::Nil => Val::Nil,
            other => return Err(format!("ToLowerCase expects a string, found {}", other.type_name())),
        },
        Value::ToUpperCase(inner) => match eval(inner, item)? {
            Val::Str(s) => Val::Str(s.to_uppercase()),
            Val::Nil => Val::Nil,
            other => return Err(format!("ToUpperCase expects a string, found {}", other.type_name())),
        },
        Value::Sha256(inner) => match eval(inner, item)? {
            Val::Str(s) => Val::Str(otlp::hex(&Sha256::digest(s.as_bytes()))),
            Val::Nil => Val::Nil,
            other => return Err(format!("SHA256 expects a string, found {}", other.type_name())),
        },
    })
}

/// OTTL's comparison rules: `nil` equals only `nil`; ints and doubles compare as numbers;
/// strings, bytes and booleans (false < true) compare among themselves; maps and lists only
/// for (in)equality; values of different types are unequal and unordered.
fn compare(a: &Val, op: CmpOp, b: &Val) -> bool {
    let order = match (a, b) {
        (Val::Nil, Val::Nil) => Some(Ordering::Equal),
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Int(x), Val::Double(y)) => (*x as f64).partial_cmp(y),
        (Val::Double(x), Val::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Val::Double(x), Val::Double(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Bytes(x), Val::Bytes(y)) => Some(x.cmp(y)),
        (Val::Map(x), Val::Map(y)) => return equality(op, x == y),
        (Val::Array(x), Val::Array(y)) => return equality(op, x == y),
        _ => None,
    };
    match (order, op) {
        (None, CmpOp::Ne) => true,
        (None, _) => false,
        (Some(o), CmpOp::Eq) => o == Ordering::Equal,
        (Some(o), CmpOp::Ne) => o != Ordering::Equal,
        (Some(o), CmpOp::Lt) => o == Ordering::Less,
        (Some(o), CmpOp::Le) => o != Ordering::Greater,
        (Some(o), CmpOp::Gt) => o == Ordering::Greater,
        (Some(o), CmpOp::Ge) => o != Ordering::Less,
    }
}

fn equality(op: CmpOp, equal: bool) -> bool {
    match op {
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
        _ => false,
    }
}

fn test(c: &Cond, item: &Item<'_>) -> Result<bool, EvalError> {
    Ok(match c {
        Cond::Or(terms) => {
            for t in terms {
                if test(t, item)? {
                    return Ok(true);
                }
            }
            false
        }
        Cond::And(terms) => {
            for t in terms {
                if !test(t, item)? {
                    return Ok(false);
                }
            }
            true
        }
        Cond::Not(inner) => !test(inner, item)?,
        Cond::Compare(a, op, b) => compare(&eval(a, item)?, *op, &eval(b, item)?),
        Cond::Value(v) => eval(v, item)? == Val::Bool(true),
    })
}

// ---- editors ----

fn replacement(v: &Value, item: &Item<'_>) -> Result<Option<String>, EvalError> {
    match eval(v, item)? {
        Val::Str(s) => Ok(Some(s)),
        Val::Nil => Ok(None),
        other => Err(format!("the replacement must be a string, found {}", other.type_name())),
    }
}

/// The longest prefix of `s` of at most `limit` bytes that ends on a character boundary.
fn truncate_at_char(s: &mut String, limit: usize) {
    if s.len() <= limit {
        return;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

fn string_values(map: &mut [KeyValue]) -> impl Iterator<Item = &mut String> {
    map.iter_mut().filter_map(|kv| match kv.value.as_mut().and_then(|v| v.value.as_mut()) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    })
}

fn run(editor: &Editor, item: &mut Item<'_>) -> Result<(), EvalError> {
    match editor {
        Editor::Set(path, value) => {
            let v = eval(value, item)?;
            item.set(path, v)
        }
        Editor::DeleteKey(path, key) => {
            if let Some(map) = item.target_map(path)? {
                otlp::remove(map, key);
            }
            Ok(())
        }
        Editor::DeleteMatchingKeys(path, re) => {
            if let Some(map) = item.target_map(path)? {
                map.retain(|kv| !re.is_match(&kv.key));
            }
            Ok(())
        }
        Editor::KeepKeys(path, keys) => {
            if let Some(map) = item.target_map(path)? {
                map.retain(|kv| keys.contains(&kv.key));
            }
            Ok(())
        }
        Editor::KeepMatchingKeys(path, re) => {
            if let Some(map) = item.target_map(path)? {
                map.retain(|kv| re.is_match(&kv.key));
            }
            Ok(())
        }
        Editor::TruncateAll(path, limit) => {
            if let Some(map) = item.target_map(path)? {
                string_values(map).for_each(|s| truncate_at_char(s, *limit));
            }
            Ok(())
        }
        Editor::Limit(path, limit, priority) => {
            if let Some(map) = item.target_map(path)?
                && map.len() > *limit
            {
                let wanted = map.iter().filter(|kv| priority.contains(&kv.key)).count().min(*limit);
                let mut others = limit - wanted;
                let mut kept_priority = 0;
                map.retain(|kv| {
                    if priority.contains(&kv.key) {
                        kept_priority += 1;
                        kept_priority <= wanted
                    } else if others > 0 {
                        others -= 1;
                        true
                    } else {
                        false
                    }
                });
            }
            Ok(())
        }
        Editor::ReplacePattern(path, re, with) => {
            let Val::Str(current) = item.get(path)? else { return Ok(()) };
            let Some(with) = replacement(with, item)? else { return Ok(()) };
            let replaced = re.replace_all(&current, with.as_str());
            if replaced != current {
                let replaced = replaced.into_owned();
                item.set(path, Val::Str(replaced))?;
            }
            Ok(())
        }
        Editor::ReplaceAllPatterns(path, mode, re, with) => {
            let Some(with) = replacement(with, item)? else { return Ok(()) };
            let Some(map) = item.target_map(path)? else { return Ok(()) };
            match mode {
                PatternMode::Value => string_values(map).for_each(|s| {
                    if let std::borrow::Cow::Owned(new) = re.replace_all(s, with.as_str()) {
                        *s = new;
                    }
                }),
                PatternMode::Key => {
                    if !map.iter().any(|kv| re.is_match(&kv.key)) {
                        return Ok(());
                    }
                    // Renamed keys may collide: the later entry wins, as an upsert would.
                    let old = std::mem::take(map);
                    let mut index: HashMap<String, usize> = HashMap::with_capacity(old.len());
                    for mut kv in old {
                        kv.key = re.replace_all(&kv.key, with.as_str()).into_owned();
                        match index.get(&kv.key) {
                            Some(&i) => map[i] = kv,
                            None => {
                                index.insert(kv.key.clone(), map.len());
                                map.push(kv);
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        Editor::ReplaceMatch(path, glob, with) => {
            let Val::Str(current) = item.get(path)? else { return Ok(()) };
            if glob.is_match(&current)
                && let Some(with) = replacement(with, item)?
            {
                item.set(path, Val::Str(with))?;
            }
            Ok(())
        }
        Editor::ReplaceAllMatches(path, glob, with) => {
            let Some(with) = replacement(with, item)? else { return Ok(()) };
            if let Some(map) = item.target_map(path)? {
                string_values(map).filter(|s| glob.is_match(s)).for_each(|s| s.clone_from(&with));
            }
            Ok(())
        }
        Editor::MergeMaps(path, source, strategy) => {
            let source = match eval(source, item)? {
                Val::Map(m) => m,
                Val::Nil => return Ok(()),
                other => {
                    return Err(format!("merge_maps expects a map as source, found {}", other.type_name()));
                }
            };
            let Some(map) = item.target_map(path)? else { return Ok(()) };
            // Where each key first occurs in the target (what `otlp::insert`/`update`/`upsert`
            // find), so that a large source map costs one look-up per key, not a scan.
            let mut index: HashMap<String, usize> = HashMap::with_capacity(map.len());
            for (i, kv) in map.iter().enumerate() {
                index.entry(kv.key.clone()).or_insert(i);
            }
            for kv in source {
                let value = kv.value.unwrap_or_default();
                match (index.get(&kv.key), strategy) {
                    (Some(_), MergeStrategy::Insert) | (None, MergeStrategy::Update) => {}
                    (Some(&i), MergeStrategy::Update | MergeStrategy::Upsert) => map[i].value = Some(value),
                    (None, MergeStrategy::Insert | MergeStrategy::Upsert) => {
                        index.insert(kv.key.clone(), map.len());
                        map.push(otlp::key_value(kv.key, value));
                    }
                }
            }
            Ok(())
        }
    }
}

// ---- groups over requests ----

/// What a run found wrong, for the processor to count and report.
#[derive(Debug, Default)]
pub(super) struct Errors {
    pub(super) count: u64,
    pub(super) first: Option<String>,
}

impl Errors {
    fn add(&mut self, e: EvalError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e);
        }
    }
}

/// A compiled statement group: where it runs, when, and what.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) context: Level,
    /// The group runs on an item when any of these holds (or when there are none).
    pub(super) conditions: Vec<Cond>,
    pub(super) statements: Vec<Statement>,
    /// On an error, skip the group's remaining statements for that item.
    pub(super) stop_on_error: bool,
}

impl Group {
    fn apply(&self, item: &mut Item<'_>, errors: &mut Errors) {
        if !self.conditions.is_empty() {
            let mut any = false;
            for c in &self.conditions {
                match test(c, item) {
                    Ok(true) => {
                        any = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => errors.add(e),
                }
            }
            if !any {
                return;
            }
        }
        for s in &self.statements {
            let result = match &s.condition {
                Some(c) => test(c, item).and_then(|yes| if yes { run(&s.editor, item) } else { Ok(()) }),
                None => run(&s.editor, item),
            };
            if let Err(e) = result {
                errors.add(e);
                if self.stop_on_error {
                    return;
                }
            }
        }
    }

    /// Runs the group on every item of its context in `data`.
    pub(super) fn run(&self, data: &mut Data, errors: &mut Errors) {
        match data {
            Data::Traces(r) => self.run_traces(r, errors),
            Data::Logs(r) => self.run_logs(r, errors),
            Data::Metrics(r) => self.run_metrics(r, errors),
        }
    }

    fn run_traces(&self, r: &mut ExportTraceServiceRequest, errors: &mut Errors) {
        for ResourceSpans { resource, scope_spans, .. } in &mut r.resource_spans {
            if self.context == Level::Resource {
                self.apply(&mut Item::at(resource), errors);
                continue;
            }
            for ScopeSpans { scope, spans, .. } in scope_spans {
                let mut item = Item::at(&mut *resource);
                item.scope = Some(scope);
                if self.context == Level::Scope {
                    self.apply(&mut item, errors);
                    continue;
                }
                for span in spans {
                    if self.context == Level::SpanEvent {
                        let mut events = std::mem::take(&mut span.events);
                        for event in &mut events {
                            let mut item = Item::at(&mut *resource);
                            item.scope = Some(&mut *scope);
                            item.span = Some(&mut *span);
                            item.event = Some(event);
                            self.apply(&mut item, errors);
                        }
                        span.events = events;
                    } else {
                        let mut item = Item::at(&mut *resource);
                        item.scope = Some(&mut *scope);
                        item.span = Some(span);
                        self.apply(&mut item, errors);
                    }
                }
            }
        }
    }

    fn run_logs(&self, r: &mut ExportLogsServiceRequest, errors: &mut Errors) {
        for ResourceLogs { resource, scope_logs, .. } in &mut r.resource_logs {
            if self.context == Level::Resource {
                self.apply(&mut Item::at(resource), errors);
                continue;
            }
            for ScopeLogs { scope, log_records, .. } in scope_logs {
                if self.context == Level::Scope {
                    let mut item = Item::at(&mut *resource);
                    item.scope = Some(scope);
                    self.apply(&mut item, errors);
                    continue;
                }
                for log in log_records {
                    let mut item = Item::at(&mut *resource);
                    item.scope = Some(&mut *scope);
                    item.log = Some(log);
                    self.apply(&mut item, errors);
                }
            }
        }
    }

    fn run_metrics(&self, r: &mut ExportMetricsServiceRequest, errors: &mut Errors) {
        for ResourceMetrics { resource, scope_metrics, .. } in &mut r.resource_metrics {
            if self.context == Level::Resource {
                self.apply(&mut Item::at(resource), errors);
                continue;
            }
            for ScopeMetrics { scope, metrics, .. } in scope_metrics {
                if self.context == Level::Scope {
                    let mut item = Item::at(&mut *resource);
                    item.scope = Some(scope);
                    self.apply(&mut item, errors);
                    continue;
                }
                for Metric { name, description, unit, metadata, data, .. } in metrics {
                    let info = MetricInfo::of(data.as_ref());
                    if self.context == Level::Metric {
                        let mut item = Item::at(&mut *resource);
                        item.scope = Some(&mut *scope);
                        item.metric = Some(MetricView { name, description, unit, metadata, info });
                        self.apply(&mut item, errors);
                        continue;
                    }
                    let points: Vec<PointMut<'_>> = match data {
                        None => Vec::new(),
                        Some(metric::Data::Gauge(g)) => {
                            g.data_points.iter_mut().map(PointMut::Number).collect()
                        }
                        Some(metric::Data::Sum(s)) => {
                            s.data_points.iter_mut().map(PointMut::Number).collect()
                        }
                        Some(metric::Data::Histogram(h)) => {
                            h.data_points.iter_mut().map(PointMut::Histogram).collect()
                        }
                        Some(metric::Data::ExponentialHistogram(h)) => {
                            h.data_points.iter_mut().map(PointMut::Exponential).collect()
                        }
                        Some(metric::Data::Summary(s)) => {
                            s.data_points.iter_mut().map(PointMut::Summary).collect()
                        }
                    };
                    for point in points {
                        let mut item = Item::at(&mut *resource);
                        item.scope = Some(&mut *scope);
                        item.metric = Some(MetricView {
                            name: &mut *name,
                            description: &mut *description,
                            unit: &mut *unit,
                            metadata: &mut *metadata,
                            info,
                        });
                        item.point = Some(point);
                        self.apply(&mut item, errors);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Val {
        Val::Str(v.into())
    }

    #[test]
    fn compare_follows_ottl_rules_across_types() {
        assert!(compare(&Val::Int(2), CmpOp::Eq, &Val::Double(2.0)));
        assert!(compare(&Val::Int(2), CmpOp::Lt, &Val::Double(2.5)));
        assert!(compare(&Val::Nil, CmpOp::Eq, &Val::Nil));
        assert!(!compare(&Val::Nil, CmpOp::Eq, &s("")));
        assert!(compare(&Val::Nil, CmpOp::Ne, &s("x")));
        assert!(!compare(&s("1"), CmpOp::Eq, &Val::Int(1)));
        assert!(!compare(&s("1"), CmpOp::Lt, &Val::Int(2)));
        assert!(compare(&s("abc"), CmpOp::Lt, &s("abd")));
        assert!(compare(&Val::Bool(false), CmpOp::Lt, &Val::Bool(true)));
        assert!(!compare(&Val::Double(f64::NAN), CmpOp::Eq, &Val::Double(f64::NAN)));
        assert!(compare(&Val::Map(vec![]), CmpOp::Eq, &Val::Map(vec![])));
        assert!(!compare(&Val::Map(vec![]), CmpOp::Le, &Val::Map(vec![])));
    }

    #[test]
    fn truncate_at_char_never_splits_a_character() {
        let mut text = "héllo".to_string();
        truncate_at_char(&mut text, 2);
        assert_eq!(text, "h");
        let mut text = "héllo".to_string();
        truncate_at_char(&mut text, 3);
        assert_eq!(text, "hé");
        let mut text = "abc".to_string();
        truncate_at_char(&mut text, 0);
        assert_eq!(text, "");
    }

    #[test]
    fn hex_decode_rejects_odd_and_non_hex_text() {
        assert_eq!(hex_decode("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_decode("éé"), None);
    }
}
