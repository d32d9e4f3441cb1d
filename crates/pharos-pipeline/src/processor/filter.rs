//! The `filter` processor: drops spans, log records or metric data points that match any of a
//! list of declarative conditions. Within one condition every field must match (AND); an item
//! goes when any condition of its signal's list matches (OR). For logic beyond that, the
//! `transform` processor has OTTL.
//!
//! Text rules: `name`, `body` and `scope` are unanchored regexes (they match anywhere, as the
//! Collector's `regexp` match type); the values under `attributes` and `resource` are regexes
//! that must match the whole value text (so a plain string means "equals").

use std::{borrow::Cow, collections::BTreeMap, time::Duration};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue},
    logs::v1::LogRecord,
    trace::v1::Span,
};
use pharos_core::Signal;
use regex::Regex;
use serde::{Deserialize, Deserializer};

use super::{
    Batch, ConfigError, Context, Data, Processor,
    otlp::{self, Origin, Point},
};

/// The reason dropped items are counted under.
const REASON: &str = "filtered";

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    let config: FilterConfig = super::parse_config(config)?;
    // Every section is checked, so a mistake shows whichever pipeline uses the filter first.
    let spans = compile_list("spans", config.spans.as_deref(), compile_span)?;
    let logs = compile_list("logs", config.logs.as_deref(), compile_log)?;
    let metrics = compile_list("metrics", config.metrics.as_deref(), compile_metric)?;
    let (section, conditions) = match signal {
        Signal::Traces => ("spans", spans.map(Conditions::Spans)),
        Signal::Logs => ("logs", logs.map(Conditions::Logs)),
        Signal::Metrics => ("metrics", metrics.map(Conditions::Metrics)),
    };
    let conditions = conditions.ok_or_else(|| {
        ConfigError::new(
            section,
            format!(
                "a filter in a {} pipeline needs conditions under `{section}` (without them it would keep everything)",
                signal.as_str()
            ),
        )
    })?;
    Ok(Box::new(Filter { conditions }))
}

// ---- configuration ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    #[serde(default)]
    spans: Option<Vec<SpanConditionConfig>>,
    #[serde(default)]
    logs: Option<Vec<LogConditionConfig>>,
    #[serde(default)]
    metrics: Option<Vec<MetricConditionConfig>>,
}

/// Attribute conditions: key → pattern (any YAML scalar: `200`, `true` and `'GET'` all work).
type AttributeMap = BTreeMap<String, serde_yaml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanConditionConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    duration_below: Option<Duration>,
    #[serde(default)]
    attributes: Option<AttributeMap>,
    #[serde(default)]
    resource: Option<AttributeMap>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogConditionConfig {
    #[serde(default)]
    severity_below: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    attributes: Option<AttributeMap>,
    #[serde(default)]
    resource: Option<AttributeMap>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricConditionConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    attributes: Option<AttributeMap>,
    #[serde(default)]
    resource: Option<AttributeMap>,
    #[serde(default)]
    scope: Option<String>,
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration::deserialize(d).map(Some)
}

// ---- compiled conditions ----

/// One attribute that must be present with a value whose whole text matches.
#[derive(Debug)]
struct AttributeMatch {
    key: String,
    regex: Regex,
}

#[derive(Debug)]
struct SpanCondition {
    name: Option<Regex>,
    kind: Option<i32>,
    status: Option<i32>,
    duration_below_nanos: Option<u64>,
    attributes: Vec<AttributeMatch>,
    resource: Vec<AttributeMatch>,
    scope: Option<Regex>,
}

#[derive(Debug)]
struct LogCondition {
    /// Matches severities from 1 up to (not including) this number.
    severity_below: Option<i32>,
    body: Option<Regex>,
    attributes: Vec<AttributeMatch>,
    resource: Vec<AttributeMatch>,
    scope: Option<Regex>,
}

#[derive(Debug)]
struct MetricCondition {
    name: Option<Regex>,
    attributes: Vec<AttributeMatch>,
    resource: Vec<AttributeMatch>,
    scope: Option<Regex>,
}

#[derive(Debug)]
enum Conditions {
    Spans(Vec<SpanCondition>),
    Logs(Vec<LogCondition>),
    Metrics(Vec<MetricCondition>),
}

/// Compiles a section's list; `None` when the section is absent. An empty list is an error.
fn compile_list<C, T>(
    section: &str,
    list: Option<&[C]>,
    compile: impl Fn(&C) -> Result<T, ConfigError>,
) -> Result<Option<Vec<T>>, ConfigError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() {
        return Err(ConfigError::new(
            section,
            "the list of conditions is empty (leave the section out instead)",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| compile(c).map_err(|e| e.under(&format!("[{i}]")).under(section)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn compile_span(c: &SpanConditionConfig) -> Result<SpanCondition, ConfigError> {
    let condition = SpanCondition {
        name: c.name.as_deref().map(|p| super::compile_regex("name", p)).transpose()?,
        kind: c.kind.as_deref().map(span_kind).transpose()?,
        status: c.status.as_deref().map(status_code).transpose()?,
        duration_below_nanos: c
            .duration_below
            .map(|d| {
                let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                if nanos == 0 {
                    Err(ConfigError::new("duration_below", "must be above zero (no span lasts less than 0s)"))
                } else {
                    Ok(nanos)
                }
            })
            .transpose()?,
        attributes: compile_attributes("attributes", c.attributes.as_ref())?,
        resource: compile_attributes("resource", c.resource.as_ref())?,
        scope: c.scope.as_deref().map(|p| super::compile_regex("scope", p)).transpose()?,
    };
    let empty = condition.name.is_none()
        && condition.kind.is_none()
        && condition.status.is_none()
        && condition.duration_below_nanos.is_none()
        && condition.attributes.is_empty()
        && condition.resource.is_empty()
        && condition.scope.is_none();
    if empty {
        return Err(empty_condition("name, kind, status, duration_below, attributes, resource, scope"));
    }
    Ok(condition)
}

fn compile_log(c: &LogConditionConfig) -> Result<LogCondition, ConfigError> {
    let condition = LogCondition {
        severity_below: c.severity_below.as_deref().map(severity_level).transpose()?,
        body: c.body.as_deref().map(|p| super::compile_regex("body", p)).transpose()?,
        attributes: compile_attributes("attributes", c.attributes.as_ref())?,
        resource: compile_attributes("resource", c.resource.as_ref())?,
        scope: c.scope.as_deref().map(|p| super::compile_regex("scope", p)).transpose()?,
    };
    let empty = condition.severity_below.is_none()
        && condition.body.is_none()
        && condition.attributes.is_empty()
        && condition.resource.is_empty()
        && condition.scope.is_none();
    if empty {
        return Err(empty_condition("severity_below, body, attributes, resource, scope"));
    }
    Ok(condition)
}

fn compile_metric(c: &MetricConditionConfig) -> Result<MetricCondition, ConfigError> {
    let condition = MetricCondition {
        name: c.name.as_deref().map(|p| super::compile_regex("name", p)).transpose()?,
        attributes: compile_attributes("attributes", c.attributes.as_ref())?,
        resource: compile_attributes("resource", c.resource.as_ref())?,
        scope: c.scope.as_deref().map(|p| super::compile_regex("scope", p)).transpose()?,
    };
    let empty = condition.name.is_none()
        && condition.attributes.is_empty()
        && condition.resource.is_empty()
        && condition.scope.is_none();
    if empty {
        return Err(empty_condition("name, attributes, resource, scope"));
    }
    Ok(condition)
}

fn empty_condition(fields: &str) -> ConfigError {
    ConfigError::new(
        "",
        format!("a condition needs at least one of {fields} (an empty one would drop everything)"),
    )
}

fn compile_attributes(field: &str, map: Option<&AttributeMap>) -> Result<Vec<AttributeMatch>, ConfigError> {
    let Some(map) = map else { return Ok(vec![]) };
    if map.is_empty() {
        return Err(ConfigError::new(field, "the map of attributes is empty (leave it out instead)"));
    }
    map.iter()
        .map(|(key, value)| {
            let path = super::join_path(field, key);
            let pattern = scalar_text(value).ok_or_else(|| {
                ConfigError::new(
                    path.as_str(),
                    "expected a string, number or boolean to match the value against",
                )
            })?;
            // Compiled alone first, so an error shows the pattern as written.
            super::compile_regex(&path, &pattern)?;
            let regex = super::compile_regex(&path, &format!("^(?:{pattern})$"))?;
            Ok(AttributeMatch { key: key.clone(), regex })
        })
        .collect()
}

/// A YAML scalar as text (`200` → "200"); `None` for null, sequences and mappings.
fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A span kind by name: `server`, `SERVER` or `SPAN_KIND_SERVER`.
fn span_kind(name: &str) -> Result<i32, ConfigError> {
    let lower = name.trim().to_ascii_lowercase();
    let kind = match lower.strip_prefix("span_kind_").unwrap_or(&lower) {
        "unspecified" => 0,
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => {
            return Err(ConfigError::new(
                "kind",
                format!(
                    "unknown span kind {name:?} (expected internal, server, client, producer, consumer or unspecified)"
                ),
            ));
        }
    };
    Ok(kind)
}

/// A span status code by name: `ok`, `ERROR` or `STATUS_CODE_UNSET`.
fn status_code(name: &str) -> Result<i32, ConfigError> {
    let lower = name.trim().to_ascii_lowercase();
    let code = match lower.strip_prefix("status_code_").unwrap_or(&lower) {
        "unset" => 0,
        "ok" => 1,
        "error" => 2,
        _ => {
            return Err(ConfigError::new(
                "status",
                format!("unknown status {name:?} (expected ok, error or unset)"),
            ));
        }
    };
    Ok(code)
}

/// The first severity number of a level named in configuration (`INFO` → 9, `warn2` → 14).
fn severity_level(name: &str) -> Result<i32, ConfigError> {
    let level = severity_from_text(name).ok_or_else(|| {
        ConfigError::new(
            "severity_below",
            format!("unknown severity {name:?} (expected TRACE, DEBUG, INFO, WARN, ERROR or FATAL, optionally with 2 to 4 after it)"),
        )
    })?;
    if level <= 1 {
        return Err(ConfigError::new(
            "severity_below",
            "no severity is below TRACE: this would match nothing",
        ));
    }
    Ok(level)
}

/// A severity number from a level name, as OTLP's short names (`INFO`, `INFO3`) and the common
/// spellings loggers use (`warning`, `err`, `critical`). Case does not matter.
fn severity_from_text(text: &str) -> Option<i32> {
    let lower = text.trim().to_ascii_lowercase();
    let (word, step) = match lower.as_bytes().last() {
        Some(d @ b'2'..=b'4') => (&lower[..lower.len() - 1], i32::from(d - b'1')),
        _ => (lower.as_str(), 0),
    };
    let base = match word {
        "trace" => 1,
        "debug" => 5,
        "info" | "information" | "informational" => 9,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "fatal" | "critical" | "crit" => 21,
        _ => return None,
    };
    Some(base + step)
}

// ---- matching ----

/// A value's text for matching, borrowing strings.
fn value_text(v: &AnyValue) -> Cow<'_, str> {
    match otlp::as_str(v) {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(otlp::to_text(v)),
    }
}

/// Whether every listed attribute is present and matches.
fn attributes_match(matches: &[AttributeMatch], attrs: &[KeyValue]) -> bool {
    matches.iter().all(|m| otlp::get(attrs, &m.key).is_some_and(|v| m.regex.is_match(&value_text(v))))
}

fn scope_matches(regex: Option<&Regex>, origin: Origin<'_>) -> bool {
    regex.is_none_or(|r| r.is_match(origin.scope.map(|s| s.name.as_str()).unwrap_or("")))
}

impl SpanCondition {
    fn matches(&self, origin: Origin<'_>, span: &Span) -> bool {
        self.kind.is_none_or(|k| span.kind == k)
            && self.status.is_none_or(|code| span.status.as_ref().map(|s| s.code).unwrap_or(0) == code)
            && self.duration_below_nanos.is_none_or(|limit| {
                // A span that ends before it starts has no duration to compare.
                span.end_time_unix_nano
                    .checked_sub(span.start_time_unix_nano)
                    .is_some_and(|d| span.end_time_unix_nano != 0 && d < limit)
            })
            && self.name.as_ref().is_none_or(|r| r.is_match(&span.name))
            && scope_matches(self.scope.as_ref(), origin)
            && attributes_match(&self.resource, origin.resource)
            && attributes_match(&self.attributes, &span.attributes)
    }
}

impl LogCondition {
    fn matches(&self, origin: Origin<'_>, record: &LogRecord) -> bool {
        self.severity_below.is_none_or(|limit| {
            // Unspecified numbers fall back to the severity text; unknown severities never match.
            let number = match record.severity_number {
                0 => severity_from_text(&record.severity_text).unwrap_or(0),
                n => n,
            };
            number >= 1 && number < limit
        }) && self.body.as_ref().is_none_or(|r| match &record.body {
            Some(body) => r.is_match(&value_text(body)),
            None => r.is_match(""),
        }) && scope_matches(self.scope.as_ref(), origin)
            && attributes_match(&self.resource, origin.resource)
            && attributes_match(&self.attributes, &record.attributes)
    }
}

impl MetricCondition {
    fn matches(&self, origin: Origin<'_>, name: &str, point: Point<'_>) -> bool {
        self.name.as_ref().is_none_or(|r| r.is_match(name))
            && scope_matches(self.scope.as_ref(), origin)
            && attributes_match(&self.resource, origin.resource)
            && attributes_match(&self.attributes, point.attributes())
    }
}

// ---- the processor ----

struct Filter {
    conditions: Conditions,
}

impl Processor for Filter {
    fn process(&mut self, mut batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        let dropped = match (&self.conditions, &mut batch.data) {
            (Conditions::Spans(conditions), Data::Traces(r)) => {
                otlp::retain_spans(r, |origin, span| !conditions.iter().any(|c| c.matches(origin, span)))
            }
            (Conditions::Logs(conditions), Data::Logs(r)) => {
                otlp::retain_logs(r, |origin, record| !conditions.iter().any(|c| c.matches(origin, record)))
            }
            (Conditions::Metrics(conditions), Data::Metrics(r)) => {
                otlp::retain_points(r, |origin, metric, point| {
                    !conditions.iter().any(|c| c.matches(origin, &metric.name, point))
                })
            }
            // A batch of another signal than the pipeline's: nothing here applies to it.
            _ => 0,
        };
        ctx.drop_items(REASON, dropped);
        if !batch.data.is_empty() {
            out.push(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        },
        common::v1::{InstrumentationScope, any_value::Value},
        logs::v1::{ResourceLogs, ScopeLogs},
        metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Status, span::Event},
    };
    use pharos_core::Tenant;

    use super::*;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        kv(key, Value::StringValue(value.into()))
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource { attributes: vec![s("service.name", service)], ..Default::default() })
    }

    fn scope(name: &str) -> Option<InstrumentationScope> {
        Some(InstrumentationScope { name: name.into(), ..Default::default() })
    }

    /// A server span of `ms` milliseconds.
    fn span(name: &str, ms: u64, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            name: name.into(),
            kind: 2,
            start_time_unix_nano: T0,
            end_time_unix_nano: T0 + ms * MS,
            attributes,
            events: vec![Event { name: "request.received".into(), time_unix_nano: T0, ..Default::default() }],
            ..Default::default()
        }
    }

    fn resource_spans(service: &str, scope_name: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans { scope: scope(scope_name), spans, ..Default::default() }],
            ..Default::default()
        }
    }

    fn traces(resource_spans: Vec<ResourceSpans>) -> Data {
        Data::Traces(ExportTraceServiceRequest { resource_spans })
    }

    /// A frontend with a health check, an API call and a slow query.
    fn frontend_traffic() -> Data {
        traces(vec![resource_spans(
            "frontend",
            "io.opentelemetry.http",
            vec![
                span(
                    "GET /healthz",
                    2,
                    vec![s("http.route", "/healthz"), kv("http.response.status_code", Value::IntValue(200))],
                ),
                span(
                    "GET /api/cart",
                    40,
                    vec![s("http.route", "/api/cart"), kv("http.response.status_code", Value::IntValue(200))],
                ),
                span(
                    "POST /api/checkout",
                    250,
                    vec![
                        s("http.route", "/api/checkout"),
                        kv("http.response.status_code", Value::IntValue(500)),
                    ],
                ),
            ],
        )])
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn run(config: &str, data: Data) -> (Vec<Batch>, Context) {
        let mut p = build(&yaml(config), data.signal()).unwrap();
        let mut ctx = Context::at(T0);
        let mut out = vec![];
        p.process(Batch::new(Tenant::parse("acme").unwrap(), 9, data), &mut ctx, &mut out);
        (out, ctx)
    }

    fn span_names(out: &[Batch]) -> Vec<String> {
        let mut names = vec![];
        for b in out {
            let Data::Traces(r) = &b.data else { panic!("not traces") };
            for rs in &r.resource_spans {
                for ss in &rs.scope_spans {
                    names.extend(ss.spans.iter().map(|s| s.name.clone()));
                }
            }
        }
        names
    }

    fn config_error(config: &str, signal: Signal) -> ConfigError {
        match build(&yaml(config), signal) {
            Ok(_) => panic!("config was accepted: {config}"),
            Err(e) => e,
        }
    }

    #[test]
    fn span_name_regex_is_unanchored_and_drops_health_checks() {
        let (out, ctx) = run("spans:\n  - name: 'healthz'", frontend_traffic());
        assert_eq!(span_names(&out), ["GET /api/cart", "POST /api/checkout"]);
        assert_eq!(ctx.dropped_for("filtered"), 1);
        assert_eq!(out[0].offset, 9);
    }

    #[test]
    fn span_attribute_value_must_match_whole_text() {
        // '/api' alone matches no route whole; '/api/.*' matches two.
        let (out, ctx) = run("spans:\n  - attributes: {http.route: /api}", frontend_traffic());
        assert_eq!(span_names(&out).len(), 3);
        assert_eq!(ctx.dropped_for("filtered"), 0);
        let (out, _) = run("spans:\n  - attributes: {http.route: '/api/.*'}", frontend_traffic());
        assert_eq!(span_names(&out), ["GET /healthz"]);
    }

    #[test]
    fn span_int_attribute_matches_yaml_number_as_text() {
        let (out, ctx) = run("spans:\n  - attributes: {http.response.status_code: 200}", frontend_traffic());
        assert_eq!(span_names(&out), ["POST /api/checkout"]);
        assert_eq!(ctx.dropped_for("filtered"), 2);
    }

    #[test]
    fn span_fields_of_one_condition_are_anded() {
        let (out, _) = run(
            "spans:\n  - attributes: {http.response.status_code: 200}\n    duration_below: 10ms",
            frontend_traffic(),
        );
        assert_eq!(span_names(&out), ["GET /api/cart", "POST /api/checkout"]);
    }

    #[test]
    fn span_conditions_of_the_list_are_ored() {
        let (out, ctx) = run("spans:\n  - name: '^GET /healthz$'\n  - status: error", {
            let mut data = frontend_traffic();
            if let Data::Traces(r) = &mut data {
                r.resource_spans[0].scope_spans[0].spans[2].status =
                    Some(Status { code: 2, message: "payment declined".into() });
            }
            data
        });
        assert_eq!(span_names(&out), ["GET /api/cart"]);
        assert_eq!(ctx.dropped_for("filtered"), 2);
    }

    #[test]
    fn span_duration_below_drops_short_spans_and_ignores_broken_times() {
        let mut broken = span("ends before start", 0, vec![]);
        broken.end_time_unix_nano = T0 - 5;
        let mut unfinished = span("unfinished", 0, vec![]);
        unfinished.end_time_unix_nano = 0;
        let mut data = frontend_traffic();
        if let Data::Traces(r) = &mut data {
            r.resource_spans[0].scope_spans[0].spans.extend([broken, unfinished]);
        }
        let (out, _) = run("spans:\n  - duration_below: 50ms", data);
        assert_eq!(span_names(&out), ["POST /api/checkout", "ends before start", "unfinished"]);
    }

    #[test]
    fn span_resource_and_kind_select_by_service() {
        let mut internal = span("load generator tick", 1, vec![]);
        internal.kind = 1;
        let data = traces(vec![
            resource_spans("load-test-7", "k6", vec![internal, span("GET /", 3, vec![])]),
            resource_spans(
                "frontend",
                "io.opentelemetry.http",
                vec![{
                    let mut s = span("render", 1, vec![]);
                    s.kind = 1;
                    s
                }],
            ),
        ]);
        let (out, ctx) =
            run("spans:\n  - resource: {service.name: 'load-test-.*'}\n    kind: internal", data);
        assert_eq!(span_names(&out), ["GET /", "render"]);
        assert_eq!(ctx.dropped_for("filtered"), 1);
    }

    #[test]
    fn span_scope_regex_drops_a_noisy_library() {
        let data = traces(vec![
            resource_spans("frontend", "io.opentelemetry.dns", vec![span("resolve", 1, vec![])]),
            resource_spans("frontend", "io.opentelemetry.http", vec![span("GET /", 3, vec![])]),
        ]);
        let (out, _) = run("spans:\n  - scope: '\\.dns$'", data);
        assert_eq!(span_names(&out), ["GET /"]);
        let Data::Traces(r) = &out[0].data else { panic!("not traces") };
        // The emptied resource went too.
        assert_eq!(r.resource_spans.len(), 1);
    }

    #[test]
    fn span_without_attributes_or_with_bytes_values_does_not_match_attribute_condition() {
        let data = traces(vec![resource_spans(
            "frontend",
            "http",
            vec![
                span("no attributes", 1, vec![]),
                span("bytes", 1, vec![kv("session.id", Value::BytesValue(vec![0xff, 0x00, 0xc3]))]),
                span("string", 1, vec![s("session.id", "abc")]),
            ],
        )]);
        let (out, _) = run("spans:\n  - attributes: {session.id: 'abc'}", data.clone());
        assert_eq!(span_names(&out), ["no attributes", "bytes"]);
        // Bytes values are matched as lowercase hex.
        let (out, _) = run("spans:\n  - attributes: {session.id: 'ff00c3'}", data);
        assert_eq!(span_names(&out), ["no attributes", "string"]);
    }

    #[test]
    fn span_every_item_dropped_pushes_nothing() {
        let (out, ctx) = run("spans:\n  - name: '.*'", frontend_traffic());
        assert!(out.is_empty());
        assert_eq!(ctx.dropped_for("filtered"), 3);
    }

    #[test]
    fn span_empty_batch_pushes_nothing() {
        let (out, ctx) = run("spans:\n  - name: x", traces(vec![]));
        assert!(out.is_empty());
        assert_eq!(ctx.dropped_for("filtered"), 0);
    }

    fn log(severity: i32, text: &str, body: Option<&str>, attributes: Vec<KeyValue>) -> LogRecord {
        LogRecord {
            time_unix_nano: T0,
            severity_number: severity,
            severity_text: text.into(),
            body: body.map(otlp::string_value),
            attributes,
            ..Default::default()
        }
    }

    fn logs(service: &str, records: Vec<LogRecord>) -> Data {
        Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(service),
                scope_logs: vec![ScopeLogs {
                    scope: scope("app"),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn bodies(out: &[Batch]) -> Vec<String> {
        let mut texts = vec![];
        for b in out {
            let Data::Logs(r) = &b.data else { panic!("not logs") };
            for rl in &r.resource_logs {
                for sl in &rl.scope_logs {
                    texts.extend(
                        sl.log_records.iter().map(|l| l.body.as_ref().map(otlp::to_text).unwrap_or_default()),
                    );
                }
            }
        }
        texts
    }

    #[test]
    fn log_severity_below_info_drops_debug_and_trace() {
        let data = logs(
            "checkout",
            vec![
                log(1, "TRACE", Some("entering handler"), vec![]),
                log(5, "DEBUG", Some("cart loaded"), vec![]),
                log(9, "INFO", Some("order placed"), vec![]),
                log(17, "ERROR", Some("payment failed"), vec![]),
                log(0, "", Some("no severity"), vec![]),
            ],
        );
        let (out, ctx) = run("logs:\n  - severity_below: INFO", data);
        assert_eq!(bodies(&out), ["order placed", "payment failed", "no severity"]);
        assert_eq!(ctx.dropped_for("filtered"), 2);
    }

    #[test]
    fn log_unspecified_severity_number_falls_back_to_text() {
        let data = logs(
            "legacy",
            vec![
                log(0, "debug", Some("a"), vec![]),
                log(0, "Warning", Some("b"), vec![]),
                log(0, "verbose", Some("c"), vec![]),
            ],
        );
        let (out, _) = run("logs:\n  - severity_below: warn", data);
        assert_eq!(bodies(&out), ["b", "c"]);
    }

    #[test]
    fn log_body_regex_matches_any_body_kind_and_missing_body_as_empty() {
        let mut kv_body = log(9, "INFO", None, vec![]);
        kv_body.body = Some(AnyValue {
            value: Some(Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: vec![s("msg", "GET /healthz 200")],
            })),
        });
        let data = logs(
            "frontend",
            vec![kv_body, log(9, "INFO", Some("GET /api 200"), vec![]), log(9, "INFO", None, vec![])],
        );
        let (out, ctx) = run("logs:\n  - body: 'healthz'\n  - body: '^$'", data);
        assert_eq!(bodies(&out), ["GET /api 200"]);
        assert_eq!(ctx.dropped_for("filtered"), 2);
    }

    #[test]
    fn log_attributes_and_resource_are_anded() {
        let data = Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: resource("nginx"),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![
                            log(9, "INFO", Some("probe"), vec![s("http.user_agent", "kube-probe/1.29")]),
                            log(9, "INFO", Some("browser"), vec![s("http.user_agent", "Mozilla/5.0")]),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceLogs {
                    resource: resource("api"),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![log(
                            9,
                            "INFO",
                            Some("api probe"),
                            vec![s("http.user_agent", "kube-probe/1.29")],
                        )],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        });
        let (out, _) = run(
            "logs:\n  - resource: {service.name: nginx}\n    attributes: {http.user_agent: 'kube-probe/.*'}",
            data,
        );
        assert_eq!(bodies(&out), ["browser", "api probe"]);
    }

    fn gauge(name: &str, points: Vec<Vec<KeyValue>>) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points
                    .into_iter()
                    .map(|attributes| NumberDataPoint {
                        attributes,
                        time_unix_nano: T0,
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    fn metrics(metrics: Vec<Metric>) -> Data {
        Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("checkout"),
                scope_metrics: vec![ScopeMetrics { scope: scope("runtime"), metrics, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn metric_points(out: &[Batch]) -> Vec<(String, usize)> {
        let mut found = vec![];
        for b in out {
            let Data::Metrics(r) = &b.data else { panic!("not metrics") };
            for rm in &r.resource_metrics {
                for sm in &rm.scope_metrics {
                    found.extend(sm.metrics.iter().map(|m| (m.name.clone(), otlp::metric_point_count(m))));
                }
            }
        }
        found
    }

    #[test]
    fn metric_name_drops_every_point_and_the_metric() {
        let data = metrics(vec![
            gauge("go_gc_duration_seconds", vec![vec![s("quantile", "0.5")], vec![s("quantile", "1")]]),
            gauge("http.server.active_requests", vec![vec![s("http.request.method", "GET")]]),
        ]);
        let (out, ctx) = run("metrics:\n  - name: '^go_gc_'", data);
        assert_eq!(metric_points(&out), [("http.server.active_requests".to_string(), 1)]);
        assert_eq!(ctx.dropped_for("filtered"), 2);
    }

    #[test]
    fn metric_point_attributes_drop_single_points() {
        let sum = Metric {
            name: "http.server.request.count".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![
                    NumberDataPoint { attributes: vec![s("http.route", "/healthz")], ..Default::default() },
                    NumberDataPoint { attributes: vec![s("http.route", "/api/cart")], ..Default::default() },
                    NumberDataPoint { attributes: vec![], ..Default::default() },
                ],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let (out, ctx) = run("metrics:\n  - attributes: {http.route: /healthz}", metrics(vec![sum]));
        assert_eq!(metric_points(&out), [("http.server.request.count".to_string(), 2)]);
        assert_eq!(ctx.dropped_for("filtered"), 1);
    }

    #[test]
    fn filter_one_config_serves_pipelines_of_each_signal() {
        let config = "spans:\n  - name: healthz\nlogs:\n  - severity_below: INFO\nmetrics:\n  - name: '^go_'";
        for signal in Signal::ALL {
            assert!(build(&yaml(config), signal).is_ok(), "{}", signal.as_str());
        }
        let (out, _) = run(config, frontend_traffic());
        assert_eq!(span_names(&out).len(), 2);
    }

    #[test]
    fn filter_batch_of_other_signal_passes_unchanged() {
        let mut p = build(&yaml("spans:\n  - name: '.*'"), Signal::Traces).unwrap();
        let data = logs("checkout", vec![log(9, "INFO", Some("x"), vec![])]);
        let mut out = vec![];
        p.process(Batch::new(Tenant::default(), 1, data.clone()), &mut Context::at(T0), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, data);
    }

    #[test]
    fn config_missing_section_for_pipeline_signal_is_an_error() {
        let e = config_error("spans:\n  - name: healthz", Signal::Logs);
        assert_eq!(e.path, "logs");
        assert_eq!(config_error("{}", Signal::Metrics).path, "metrics");
        assert_eq!(config_error("spans: []", Signal::Traces).path, "spans");
    }

    #[test]
    fn config_errors_in_other_sections_are_reported_with_their_path() {
        let e =
            config_error("spans:\n  - name: ok\nmetrics:\n  - name: ok\n  - name: '(bad'", Signal::Traces);
        assert_eq!(e.path, "metrics[1].name");
    }

    #[test]
    fn config_bad_values_name_their_path() {
        let t = Signal::Traces;
        assert_eq!(config_error("spans:\n  - kind: serverless", t).path, "spans[0].kind");
        assert_eq!(config_error("spans:\n  - status: failed", t).path, "spans[0].status");
        assert_eq!(config_error("spans:\n  - duration_below: soon", t).path, "spans[0].duration_below");
        assert_eq!(config_error("spans:\n  - duration_below: 0s", t).path, "spans[0].duration_below");
        assert_eq!(config_error("spans:\n  - {}", t).path, "spans[0]");
        assert_eq!(config_error("spans:\n  - nam: x", t).path, "spans[0].nam");
        assert_eq!(config_error("spans:\n  - attributes: {}", t).path, "spans[0].attributes");
        assert_eq!(
            config_error("spans:\n  - attributes: {http.route: [a]}", t).path,
            "spans[0].attributes.http.route"
        );
        assert_eq!(
            config_error("spans:\n  - resource: {service.name: '(x'}", t).path,
            "spans[0].resource.service.name"
        );
        let l = Signal::Logs;
        assert_eq!(config_error("logs:\n  - severity_below: LOUD", l).path, "logs[0].severity_below");
        assert_eq!(config_error("logs:\n  - severity_below: TRACE", l).path, "logs[0].severity_below");
        assert_eq!(config_error("logs:\n  - body: '[z-a]'", l).path, "logs[0].body");
        assert_eq!(config_error("traces:\n  - name: x", l).path, "traces");
    }

    #[test]
    fn config_kind_and_status_accept_otlp_spellings() {
        let mut client = span("GET upstream", 5, vec![]);
        client.kind = 3;
        client.status = Some(Status { code: 1, message: String::new() });
        let data = traces(vec![resource_spans("frontend", "http", vec![client, span("GET /", 5, vec![])])]);
        let (out, _) = run("spans:\n  - kind: SPAN_KIND_CLIENT\n    status: STATUS_CODE_OK", data);
        assert_eq!(span_names(&out), ["GET /"]);
    }

    #[test]
    fn severity_names_map_to_otlp_numbers() {
        assert_eq!(severity_from_text("INFO"), Some(9));
        assert_eq!(severity_from_text("warn2"), Some(14));
        assert_eq!(severity_from_text("FATAL4"), Some(24));
        assert_eq!(severity_from_text("critical"), Some(21));
        assert_eq!(severity_from_text(""), None);
        assert_eq!(severity_from_text("é2"), None);
    }
}
