//! Reading and changing decoded OTLP requests: attribute look-ups and updates, walking and
//! dropping spans, log records and metric data points. Every processor uses these, so that "the
//! attributes of an item" and "drop an item, then its empty scope and resource" mean one thing.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::LogRecord,
    metrics::v1::{Metric, metric},
    resource::v1::Resource,
    trace::v1::Span,
};

pub fn span_count(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum()
}

pub fn log_count(r: &ExportLogsServiceRequest) -> u64 {
    r.resource_logs.iter().flat_map(|rl| &rl.scope_logs).map(|sl| sl.log_records.len() as u64).sum()
}

pub fn point_count(r: &ExportMetricsServiceRequest) -> u64 {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| metric_point_count(m) as u64)
        .sum()
}

/// Data points of one metric.
pub fn metric_point_count(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

// ---- values ----

/// A string `AnyValue`.
pub fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(s.into())) }
}

/// The string inside a string value (other kinds: `None`).
pub fn as_str(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// A value as text, as OTTL and the Collector print it: strings as they are, numbers and
/// booleans in their usual form, bytes as lowercase hex, arrays and maps as JSON.
pub fn to_text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(_)) | Some(Value::KvlistValue(_)) => to_json(v).to_string(),
        // A string index into a profiles dictionary: not used by traces, metrics or logs.
        Some(Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map(J::Number).unwrap_or(J::Null),
        Some(Value::BytesValue(b)) => J::String(hex(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|p| (p.key.clone(), p.value.as_ref().map(to_json).unwrap_or(J::Null)))
                .collect(),
        ),
        Some(Value::StringValueStrindex(_)) | None => J::Null,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// A number value as f64 (ints and doubles; others `None`).
pub fn as_f64(v: &AnyValue) -> Option<f64> {
    match &v.value {
        Some(Value::IntValue(i)) => Some(*i as f64),
        Some(Value::DoubleValue(d)) => Some(*d),
        _ => None,
    }
}

// ---- attribute lists ----

/// A `KeyValue` (its other fields, such as the profiles dictionary index, left at default).
pub fn key_value(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue { key: key.into(), value: Some(value), ..Default::default() }
}

pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref())
}

pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    get(attrs, key).and_then(as_str)
}

pub fn get_mut<'a>(attrs: &'a mut [KeyValue], key: &str) -> Option<&'a mut AnyValue> {
    attrs.iter_mut().find(|kv| kv.key == key).map(|kv| kv.value.get_or_insert_with(AnyValue::default))
}

/// Sets `key` whether or not it exists.
pub fn upsert(attrs: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(value),
        None => attrs.push(key_value(key, value)),
    }
}

/// Sets `key` only where it is missing; returns whether it did.
pub fn insert(attrs: &mut Vec<KeyValue>, key: &str, value: AnyValue) -> bool {
    if attrs.iter().any(|kv| kv.key == key) {
        return false;
    }
    attrs.push(key_value(key, value));
    true
}

/// Sets `key` only where it exists; returns whether it did.
pub fn update(attrs: &mut [KeyValue], key: &str, value: AnyValue) -> bool {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => {
            kv.value = Some(value);
            true
        }
        None => false,
    }
}

/// Removes every `key`; returns the first value removed.
pub fn remove(attrs: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let mut removed = None;
    attrs.retain_mut(|kv| {
        if kv.key != key {
            return true;
        }
        if removed.is_none() {
            removed = Some(kv.value.take().unwrap_or_default());
        }
        false
    });
    removed
}

pub fn resource_attributes(resource: &Option<Resource>) -> &[KeyValue] {
    resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[])
}

pub fn resource_attributes_mut(resource: &mut Option<Resource>) -> &mut Vec<KeyValue> {
    &mut resource.get_or_insert_with(Resource::default).attributes
}

// ---- walking and dropping items ----

/// Where an item sits: its resource's attributes and its instrumentation scope.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub resource: &'a [KeyValue],
    pub scope: Option<&'a InstrumentationScope>,
}

/// Keeps the spans `keep` says yes to; drops scopes and resources left empty. Returns how many
/// spans went.
pub fn retain_spans(
    r: &mut ExportTraceServiceRequest,
    mut keep: impl FnMut(Origin<'_>, &Span) -> bool,
) -> u64 {
    let mut dropped = 0u64;
    for rs in &mut r.resource_spans {
        let resource = resource_attributes(&rs.resource);
        for ss in &mut rs.scope_spans {
            let origin = Origin { resource, scope: ss.scope.as_ref() };
            let before = ss.spans.len();
            ss.spans.retain(|s| keep(origin, s));
            dropped += (before - ss.spans.len()) as u64;
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    dropped
}

/// Calls `f` on every span with its resource's attributes (which `f` may change too).
pub fn for_each_span_mut(
    r: &mut ExportTraceServiceRequest,
    mut f: impl FnMut(&mut Vec<KeyValue>, &mut Span),
) {
    for rs in &mut r.resource_spans {
        let resource = resource_attributes_mut(&mut rs.resource);
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                f(resource, span);
            }
        }
    }
}

/// Keeps the log records `keep` says yes to; drops scopes and resources left empty. Returns
/// how many records went.
pub fn retain_logs(
    r: &mut ExportLogsServiceRequest,
    mut keep: impl FnMut(Origin<'_>, &LogRecord) -> bool,
) -> u64 {
    let mut dropped = 0u64;
    for rl in &mut r.resource_logs {
        let resource = resource_attributes(&rl.resource);
        for sl in &mut rl.scope_logs {
            let origin = Origin { resource, scope: sl.scope.as_ref() };
            let before = sl.log_records.len();
            sl.log_records.retain(|l| keep(origin, l));
            dropped += (before - sl.log_records.len()) as u64;
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
    }
    r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    dropped
}

/// Calls `f` on every log record with its resource's attributes.
pub fn for_each_log_mut(
    r: &mut ExportLogsServiceRequest,
    mut f: impl FnMut(&mut Vec<KeyValue>, &mut LogRecord),
) {
    for rl in &mut r.resource_logs {
        let resource = resource_attributes_mut(&mut rl.resource);
        for sl in &mut rl.scope_logs {
            for record in &mut sl.log_records {
                f(resource, record);
            }
        }
    }
}

/// One metric data point, whatever its type.
#[derive(Debug, Clone, Copy)]
pub enum Point<'a> {
    Number(&'a opentelemetry_proto::tonic::metrics::v1::NumberDataPoint),
    Histogram(&'a opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint),
    ExponentialHistogram(&'a opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint),
    Summary(&'a opentelemetry_proto::tonic::metrics::v1::SummaryDataPoint),
}

impl<'a> Point<'a> {
    pub fn attributes(&self) -> &'a [KeyValue] {
        match self {
            Point::Number(p) => &p.attributes,
            Point::Histogram(p) => &p.attributes,
            Point::ExponentialHistogram(p) => &p.attributes,
            Point::Summary(p) => &p.attributes,
        }
    }

    pub fn time_unix_nano(&self) -> u64 {
        match self {
            Point::Number(p) => p.time_unix_nano,
            Point::Histogram(p) => p.time_unix_nano,
            Point::ExponentialHistogram(p) => p.time_unix_nano,
            Point::Summary(p) => p.time_unix_nano,
        }
    }
}

/// Keeps the data points `keep` says yes to; drops metrics, scopes and resources left empty.
/// Returns how many points went.
pub fn retain_points(
    r: &mut ExportMetricsServiceRequest,
    mut keep: impl FnMut(Origin<'_>, &Metric, Point<'_>) -> bool,
) -> u64 {
    let mut dropped = 0u64;
    for rm in &mut r.resource_metrics {
        let resource = resource_attributes(&rm.resource);
        for sm in &mut rm.scope_metrics {
            let origin = Origin { resource, scope: sm.scope.as_ref() };
            for m in &mut sm.metrics {
                let before = metric_point_count(m);
                let mut data = m.data.take();
                match &mut data {
                    Some(metric::Data::Gauge(g)) => {
                        g.data_points.retain(|p| keep(origin, m, Point::Number(p)))
                    }
                    Some(metric::Data::Sum(s)) => s.data_points.retain(|p| keep(origin, m, Point::Number(p))),
                    Some(metric::Data::Histogram(h)) => {
                        h.data_points.retain(|p| keep(origin, m, Point::Histogram(p)))
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        h.data_points.retain(|p| keep(origin, m, Point::ExponentialHistogram(p)))
                    }
                    Some(metric::Data::Summary(s)) => {
                        s.data_points.retain(|p| keep(origin, m, Point::Summary(p)))
                    }
                    None => {}
                }
                m.data = data;
                dropped += (before - metric_point_count(m)) as u64;
            }
            sm.metrics.retain(|m| metric_point_count(m) > 0);
        }
        rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
    }
    r.resource_metrics.retain(|rm| !rm.scope_metrics.is_empty());
    dropped
}

/// Calls `f` on the attributes of every data point, with its resource's attributes and its
/// metric's name.
pub fn for_each_point_attributes_mut(
    r: &mut ExportMetricsServiceRequest,
    mut f: impl FnMut(&mut Vec<KeyValue>, &str, &mut Vec<KeyValue>),
) {
    for rm in &mut r.resource_metrics {
        let resource = resource_attributes_mut(&mut rm.resource);
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                let name = m.name.as_str();
                match &mut m.data {
                    Some(metric::Data::Gauge(g)) => {
                        g.data_points.iter_mut().for_each(|p| f(resource, name, &mut p.attributes))
                    }
                    Some(metric::Data::Sum(s)) => {
                        s.data_points.iter_mut().for_each(|p| f(resource, name, &mut p.attributes))
                    }
                    Some(metric::Data::Histogram(h)) => {
                        h.data_points.iter_mut().for_each(|p| f(resource, name, &mut p.attributes))
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        h.data_points.iter_mut().for_each(|p| f(resource, name, &mut p.attributes))
                    }
                    Some(metric::Data::Summary(s)) => {
                        s.data_points.iter_mut().for_each(|p| f(resource, name, &mut p.attributes))
                    }
                    None => {}
                }
            }
        }
    }
}

/// The resource attribute lists of a request, whatever its signal.
pub fn resources_mut(data: &mut super::Data) -> Vec<&mut Vec<KeyValue>> {
    match data {
        super::Data::Traces(r) => {
            r.resource_spans.iter_mut().map(|rs| resource_attributes_mut(&mut rs.resource)).collect()
        }
        super::Data::Logs(r) => {
            r.resource_logs.iter_mut().map(|rl| resource_attributes_mut(&mut rl.resource)).collect()
        }
        super::Data::Metrics(r) => {
            r.resource_metrics.iter_mut().map(|rm| resource_attributes_mut(&mut rm.resource)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::InstrumentationScope,
        trace::v1::{ResourceSpans, ScopeSpans},
    };

    use super::*;

    fn span(name: &str) -> Span {
        Span { name: name.into(), ..Default::default() }
    }

    #[test]
    fn retain_spans_drops_emptied_scopes_and_resources() {
        let mut r = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![span("a"), span("b")],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans: vec![span("b")], ..Default::default() }],
                    ..Default::default()
                },
            ],
        };
        let dropped = retain_spans(&mut r, |_, s| s.name == "a");
        assert_eq!(dropped, 2);
        assert_eq!(r.resource_spans.len(), 1);
        assert_eq!(span_count(&r), 1);
    }

    #[test]
    fn attribute_updates_follow_insert_update_upsert_rules() {
        let mut attrs = vec![];
        assert!(insert(&mut attrs, "a", string_value("1")));
        assert!(!insert(&mut attrs, "a", string_value("2")));
        assert!(!update(&mut attrs, "b", string_value("x")));
        assert!(update(&mut attrs, "a", string_value("3")));
        upsert(&mut attrs, "b", string_value("4"));
        assert_eq!(get_str(&attrs, "a"), Some("3"));
        assert_eq!(get_str(&attrs, "b"), Some("4"));
        assert_eq!(remove(&mut attrs, "a").as_ref().and_then(as_str), Some("3"));
        assert_eq!(attrs.len(), 1);
    }

    #[test]
    fn values_print_as_text() {
        assert_eq!(to_text(&AnyValue { value: Some(Value::IntValue(-3)) }), "-3");
        assert_eq!(to_text(&AnyValue { value: Some(Value::BytesValue(vec![0xab, 1])) }), "ab01");
        assert_eq!(to_text(&AnyValue { value: Some(Value::BoolValue(true)) }), "true");
    }
}
