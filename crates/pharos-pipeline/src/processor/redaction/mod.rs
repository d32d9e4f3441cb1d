//! The `redaction` processor: removes attributes that are not allowed and masks personal data
//! and credentials (card numbers, emails, IP addresses, tokens, custom patterns) before
//! telemetry is stored. Modelled on the Collector's redaction processor, extended with built-in
//! detectors, log bodies and nested values; `docs/processors/redaction.md` describes it.
//!
//! It never drops items: it changes attribute values in place (only where something matched)
//! and removes attributes. Each span, log record and data point is handled with its own
//! attributes (and a span with its events' and links' attributes, a log record with its body);
//! each resource once.

mod detect;

use std::collections::{BTreeSet, HashSet};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::{Metric, metric},
    resource::v1::Resource,
};
use pharos_core::Signal;
use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;

use self::detect::{Detector, Scanner, mask_ranges};
use super::{Batch, ConfigError, Context, Data, Processor, compile_regex, otlp};

/// Values nested deeper than this (maps in arrays in maps…) are masked whole without looking
/// inside. Decoded OTLP cannot get near it (prost stops at 100 nested messages); it only
/// bounds the recursion.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Default: true, unless `allowed_keys` is set.
    #[serde(default)]
    allow_all_keys: Option<bool>,
    #[serde(default)]
    allowed_keys: Option<Vec<String>>,
    #[serde(default)]
    ignored_keys: Vec<String>,
    #[serde(default)]
    blocked_keys: Option<Vec<String>>,
    /// The Collector's name for `blocked_keys`.
    #[serde(default)]
    blocked_key_patterns: Option<Vec<String>>,
    #[serde(default)]
    blocked_values: Vec<String>,
    #[serde(default)]
    allowed_values: Vec<String>,
    /// Default: all of them.
    #[serde(default)]
    detectors: Option<Vec<Detector>>,
    #[serde(default)]
    action: Action,
    #[serde(default = "default_mask")]
    mask: String,
    #[serde(default = "default_resource")]
    resource: bool,
    #[serde(default)]
    summary: Summary,
}

fn default_mask() -> String {
    "****".to_string()
}

fn default_resource() -> bool {
    true
}

/// What happens to an attribute whose key is blocked or whose value holds a secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    /// The secret (the whole value for a blocked key) is replaced by `mask`.
    #[default]
    Mask,
    /// The attribute is removed.
    Drop,
}

/// The diagnostic attributes added to changed items (the Collector's levels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Summary {
    #[default]
    Silent,
    /// `redaction.masked.count` and `redaction.redacted.count`.
    Info,
    /// The counts and `redaction.masked.keys` / `redaction.redacted.keys`.
    Debug,
}

pub fn build(config: &serde_yaml::Value, _signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    Ok(Box::new(Redaction::from_config(config)?))
}

struct Redaction {
    allow_all_keys: bool,
    allowed_keys: HashSet<String>,
    ignored_keys: HashSet<String>,
    blocked_keys: Option<RegexSet>,
    scanner: Scanner,
    action: Action,
    mask: String,
    resource: bool,
    summary: Summary,
}

impl Redaction {
    fn from_config(value: &serde_yaml::Value) -> Result<Redaction, ConfigError> {
        // `redaction:` with nothing under it: every default.
        let empty = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
        let config: Config = super::parse_config(if value.is_null() { &empty } else { value })?;

        let allow_all_keys = match (config.allow_all_keys, &config.allowed_keys) {
            (Some(true), Some(_)) => {
                return Err(ConfigError::new(
                    "allowed_keys",
                    "allowed_keys has no effect while allow_all_keys is true; set allow_all_keys to false \
                     (or leave it out) to keep only these keys",
                ));
            }
            (Some(allow), _) => allow,
            (None, allowed) => allowed.is_none(),
        };

        let (blocked_name, blocked) = match (config.blocked_keys, config.blocked_key_patterns) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "blocked_key_patterns",
                    "set blocked_keys or its Collector name blocked_key_patterns, not both",
                ));
            }
            (Some(keys), None) => ("blocked_keys", keys),
            (None, Some(keys)) => ("blocked_key_patterns", keys),
            (None, None) => ("blocked_keys", Vec::new()),
        };
        for (i, pattern) in blocked.iter().enumerate() {
            let path = format!("{blocked_name}[{i}]");
            if compile_regex(&path, pattern)?.is_match("") {
                return Err(ConfigError::new(
                    path,
                    format!("{pattern:?} matches the empty string, so it would block every key"),
                ));
            }
        }
        let blocked_keys = if blocked.is_empty() {
            None
        } else {
            Some(RegexSetBuilder::new(&blocked).size_limit(1 << 24).build().map_err(|e| {
                ConfigError::new(blocked_name, format!("the patterns together are too large: {e}"))
            })?)
        };

        let numbered = |name: &str, patterns: &[String]| -> Vec<(String, String)> {
            patterns.iter().enumerate().map(|(i, p)| (format!("{name}[{i}]"), p.clone())).collect()
        };
        let detectors = config.detectors.unwrap_or_else(|| Detector::ALL.to_vec());
        let scanner = Scanner::new(
            &detectors,
            &numbered("blocked_values", &config.blocked_values),
            &numbered("allowed_values", &config.allowed_values),
        )?;

        Ok(Redaction {
            allow_all_keys,
            allowed_keys: config.allowed_keys.unwrap_or_default().into_iter().collect(),
            ignored_keys: config.ignored_keys.into_iter().collect(),
            blocked_keys,
            scanner,
            action: config.action,
            mask: config.mask,
            resource: config.resource,
            summary: config.summary,
        })
    }

    fn changes(&self) -> Changes {
        Changes { names: self.summary == Summary::Debug, ..Changes::default() }
    }

    /// Applies the key rules and the value scan to one attribute list. `top`: the list of an
    /// item or resource (where `allowed_keys` applies), not a map nested in a value.
    fn redact_attributes(
        &self,
        attributes: &mut Vec<KeyValue>,
        top: bool,
        mode: Action,
        parent: &str,
        depth: usize,
        changes: &mut Changes,
    ) {
        attributes.retain_mut(|kv| {
            if !self.ignored_keys.is_empty() && self.ignored_keys.contains(kv.key.as_str()) {
                return true;
            }
            let path = changes.path(parent, &kv.key);
            if top && !self.allow_all_keys && !self.allowed_keys.contains(kv.key.as_str()) {
                changes.removed(path);
                return false;
            }
            if self.blocked_keys.as_ref().is_some_and(|set| set.is_match(&kv.key)) {
                return match mode {
                    Action::Drop => {
                        changes.removed(path);
                        false
                    }
                    Action::Mask => {
                        if self.mask_whole(&mut kv.value) {
                            changes.masked(path);
                        }
                        true
                    }
                };
            }
            let Some(value) = kv.value.as_mut() else { return true };
            if self.redact_value(value, mode, &path, depth, changes) {
                changes.removed(path);
                return false;
            }
            true
        });
    }

    /// Masks what the scan finds in a value (strings, and inside arrays and maps). In `Drop`
    /// mode it changes nothing but nested maps (whose entries it removes) and returns whether
    /// a secret sits where no nested entry holds it: the caller then removes its own entry.
    fn redact_value(
        &self,
        value: &mut AnyValue,
        mode: Action,
        path: &str,
        depth: usize,
        changes: &mut Changes,
    ) -> bool {
        if depth >= MAX_DEPTH {
            return match mode {
                Action::Drop => true,
                Action::Mask => {
                    *value = otlp::string_value(self.mask.clone());
                    changes.masked(path.to_string());
                    false
                }
            };
        }
        match &mut value.value {
            Some(Value::StringValue(s)) => match mode {
                Action::Mask => {
                    if self.mask_string(s) {
                        changes.masked(path.to_string());
                    }
                    false
                }
                Action::Drop => self.scanner.contains_secret(s),
            },
            Some(Value::ArrayValue(array)) => {
                let mut found = false;
                for element in &mut array.values {
                    found |= self.redact_value(element, mode, path, depth + 1, changes);
                }
                found
            }
            Some(Value::KvlistValue(map)) => {
                self.redact_attributes(&mut map.values, false, mode, path, depth + 1, changes);
                false
            }
            // Numbers and booleans are not scanned; bytes are not text.
            _ => false,
        }
    }

    /// A log body: map entries follow `action`, but a string body (or a string in an array)
    /// has no attribute to remove, so it is always masked.
    fn redact_body(&self, body: &mut AnyValue, changes: &mut Changes) {
        if self.redact_value(body, self.action, "body", 0, changes) {
            self.redact_value(body, Action::Mask, "body", 0, changes);
        }
    }

    /// Masks the secrets in `s`; returns whether there were any. Allocates only then.
    fn mask_string(&self, s: &mut String) -> bool {
        let mut ranges = Vec::new();
        self.scanner.find(s, &mut ranges);
        if ranges.is_empty() {
            return false;
        }
        *s = mask_ranges(s, &ranges, &self.mask);
        true
    }

    /// Replaces the value of a blocked key, whatever its type, by the mask. An empty value (or
    /// one already masked) hides nothing and is left as it is.
    fn mask_whole(&self, value: &mut Option<AnyValue>) -> bool {
        let nothing = match value.as_ref().and_then(|v| v.value.as_ref()) {
            None => true,
            Some(Value::StringValue(s)) => s.is_empty() || *s == self.mask,
            Some(Value::BytesValue(b)) => b.is_empty(),
            Some(Value::ArrayValue(a)) => a.values.is_empty(),
            Some(Value::KvlistValue(m)) => m.values.is_empty(),
            Some(
                Value::BoolValue(_)
                | Value::IntValue(_)
                | Value::DoubleValue(_)
                | Value::StringValueStrindex(_),
            ) => false,
        };
        if nothing {
            return false;
        }
        *value = Some(otlp::string_value(self.mask.clone()));
        true
    }

    /// One item's (or resource's) own attribute list, then its summary.
    fn redact_item(&self, attributes: &mut Vec<KeyValue>, changes: &mut Changes) {
        self.redact_attributes(attributes, true, self.action, "", 0, changes);
    }

    fn redact_resource(&self, resource: &mut Option<Resource>, totals: &mut Totals) {
        if !self.resource {
            return;
        }
        if let Some(resource) = resource {
            let mut changes = self.changes();
            self.redact_item(&mut resource.attributes, &mut changes);
            self.finish(&mut resource.attributes, changes, totals);
        }
    }

    /// Adds the item's changes to the totals and, unless silent, its summary attributes.
    fn finish(&self, attributes: &mut Vec<KeyValue>, changes: Changes, totals: &mut Totals) {
        totals.masked += changes.masked;
        totals.removed += changes.removed;
        if self.summary == Summary::Silent {
            return;
        }
        let names = self.summary == Summary::Debug;
        for (count, keys, count_key, keys_key) in [
            (changes.masked, changes.masked_keys, "redaction.masked.count", "redaction.masked.keys"),
            (changes.removed, changes.removed_keys, "redaction.redacted.count", "redaction.redacted.keys"),
        ] {
            if count == 0 {
                continue;
            }
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            otlp::upsert(attributes, count_key, AnyValue { value: Some(Value::IntValue(count)) });
            if names {
                let joined = keys.into_iter().collect::<Vec<_>>().join(",");
                otlp::upsert(attributes, keys_key, otlp::string_value(joined));
            }
        }
    }
}

/// What happened to one item (or resource).
#[derive(Debug, Default)]
struct Changes {
    /// Whether to keep the names of changed keys (summary `debug`).
    names: bool,
    masked: u64,
    removed: u64,
    masked_keys: BTreeSet<String>,
    removed_keys: BTreeSet<String>,
}

impl Changes {
    /// The dotted path of `key` under `parent`, when names are kept (otherwise empty: no
    /// allocation on the common path).
    fn path(&self, parent: &str, key: &str) -> String {
        match (self.names, parent.is_empty()) {
            (false, _) => String::new(),
            (true, true) => key.to_string(),
            (true, false) => format!("{parent}.{key}"),
        }
    }

    fn masked(&mut self, path: String) {
        self.masked += 1;
        if self.names {
            self.masked_keys.insert(path);
        }
    }

    fn removed(&mut self, path: String) {
        self.removed += 1;
        if self.names {
            self.removed_keys.insert(path);
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    masked: u64,
    removed: u64,
}

/// Calls `f` on the attributes of each data point of a metric.
fn for_each_point(metric: &mut Metric, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match &mut metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::ExponentialHistogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(metric::Data::Summary(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        None => {}
    }
}

impl Processor for Redaction {
    fn process(&mut self, mut batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        let mut totals = Totals::default();
        match &mut batch.data {
            Data::Traces(request) => {
                for rs in &mut request.resource_spans {
                    self.redact_resource(&mut rs.resource, &mut totals);
                    for span in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
                        let mut changes = self.changes();
                        self.redact_item(&mut span.attributes, &mut changes);
                        for event in &mut span.events {
                            self.redact_item(&mut event.attributes, &mut changes);
                        }
                        for link in &mut span.links {
                            self.redact_item(&mut link.attributes, &mut changes);
                        }
                        self.finish(&mut span.attributes, changes, &mut totals);
                    }
                }
            }
            Data::Logs(request) => {
                for rl in &mut request.resource_logs {
                    self.redact_resource(&mut rl.resource, &mut totals);
                    for record in rl.scope_logs.iter_mut().flat_map(|sl| &mut sl.log_records) {
                        let mut changes = self.changes();
                        self.redact_item(&mut record.attributes, &mut changes);
                        if let Some(body) = &mut record.body {
                            self.redact_body(body, &mut changes);
                        }
                        self.finish(&mut record.attributes, changes, &mut totals);
                    }
                }
            }
            Data::Metrics(request) => {
                for rm in &mut request.resource_metrics {
                    self.redact_resource(&mut rm.resource, &mut totals);
                    for metric in rm.scope_metrics.iter_mut().flat_map(|sm| &mut sm.metrics) {
                        for_each_point(metric, |attributes| {
                            let mut changes = self.changes();
                            self.redact_item(attributes, &mut changes);
                            self.finish(attributes, changes, &mut totals);
                        });
                    }
                }
            }
        }
        ctx.count("redacted", totals.masked);
        ctx.count("redacted_keys_removed", totals.removed);
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
        common::v1::{ArrayValue, KeyValueList},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::{Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum},
        trace::v1::{ResourceSpans, ScopeSpans, Span, span},
    };
    use pharos_core::Tenant;

    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsIm5hbWUiOiJBbGljZSJ9.\
                       SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    fn text(s: &str) -> AnyValue {
        otlp::string_value(s)
    }

    fn int(i: i64) -> AnyValue {
        AnyValue { value: Some(Value::IntValue(i)) }
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue { key: key.to_string(), value: Some(value), ..Default::default() }
    }

    fn map(entries: Vec<KeyValue>) -> AnyValue {
        AnyValue { value: Some(Value::KvlistValue(KeyValueList { values: entries })) }
    }

    fn array(values: Vec<AnyValue>) -> AnyValue {
        AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) }
    }

    fn resource() -> Vec<KeyValue> {
        vec![
            kv("service.name", text("checkout")),
            kv("host.name", text("web-7")),
            kv("host.ip", text("10.1.2.3")),
        ]
    }

    fn checkout_span(attributes: Vec<KeyValue>) -> Span {
        Span {
            name: "POST /api/checkout".into(),
            trace_id: vec![0x4b; 16],
            span_id: vec![0xa3; 8],
            attributes,
            ..Default::default()
        }
    }

    fn traces(spans: Vec<Span>) -> Data {
        Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: resource(), ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn log(body: AnyValue, attributes: Vec<KeyValue>) -> LogRecord {
        LogRecord { severity_text: "ERROR".into(), body: Some(body), attributes, ..Default::default() }
    }

    fn logs(records: Vec<LogRecord>) -> Data {
        Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: resource(), ..Default::default() }),
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn processor(yaml: &str) -> Box<dyn Processor> {
        let config: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml parses");
        match build(&config, Signal::Traces) {
            Ok(p) => p,
            Err(e) => panic!("config {yaml:?} rejected: {e}"),
        }
    }

    fn config_error(yaml: &str) -> ConfigError {
        let config: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml parses");
        match build(&config, Signal::Logs) {
            Ok(_) => panic!("config {yaml:?} accepted"),
            Err(e) => e,
        }
    }

    /// Runs one batch through a processor built from `yaml`; returns what came out and the
    /// context.
    fn run(yaml: &str, data: Data) -> (Vec<Batch>, Context) {
        let mut p = processor(yaml);
        let mut ctx = Context::at(1_700_000_000_000_000_000);
        let mut out = Vec::new();
        p.process(Batch::new(Tenant::default_tenant(), 7, data), &mut ctx, &mut out);
        (out, ctx)
    }

    fn only_batch(out: Vec<Batch>) -> Data {
        assert_eq!(out.len(), 1, "one batch goes on");
        out.into_iter().next().map(|b| b.data).expect("one batch")
    }

    fn first_span(data: &Data) -> &Span {
        match data {
            Data::Traces(r) => &r.resource_spans[0].scope_spans[0].spans[0],
            other => panic!("expected traces, got {other:?}"),
        }
    }

    fn first_log(data: &Data) -> &LogRecord {
        match data {
            Data::Logs(r) => &r.resource_logs[0].scope_logs[0].log_records[0],
            other => panic!("expected logs, got {other:?}"),
        }
    }

    fn resource_of(data: &Data) -> &[KeyValue] {
        match data {
            Data::Traces(r) => otlp::resource_attributes(&r.resource_spans[0].resource),
            Data::Logs(r) => otlp::resource_attributes(&r.resource_logs[0].resource),
            Data::Metrics(r) => otlp::resource_attributes(&r.resource_metrics[0].resource),
        }
    }

    fn body_text(record: &LogRecord) -> &str {
        record.body.as_ref().and_then(otlp::as_str).expect("a string body")
    }

    // ---- spans ----

    #[test]
    fn span_pii_in_common_attributes_is_masked_and_counted() {
        let data = traces(vec![checkout_span(vec![
            kv("enduser.id", text("alice.smith@example.com")),
            kv("http.request.header.authorization", text(&format!("Bearer {JWT}"))),
            kv("client.address", text("203.0.113.42")),
            kv("network.peer.address", text("2001:db8::8a2e:370:7334")),
            kv("http.route", text("/api/checkout")),
            kv("http.response.status_code", int(402)),
        ])]);
        let (out, ctx) = run("{}", data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get_str(attrs, "enduser.id"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "http.request.header.authorization"), Some("Bearer ****"));
        assert_eq!(otlp::get_str(attrs, "client.address"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "network.peer.address"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "http.route"), Some("/api/checkout"));
        assert_eq!(otlp::get(attrs, "http.response.status_code"), Some(&int(402)));
        // Four span values and the resource's host.ip.
        assert_eq!(ctx.counted_for("redacted"), 5);
        assert_eq!(otlp::get_str(resource_of(&data), "host.ip"), Some("****"));
        assert_eq!(otlp::get_str(resource_of(&data), "service.name"), Some("checkout"));
        assert_eq!(ctx.dropped_for("redacted"), 0);
    }

    #[test]
    fn span_lookalikes_of_pii_are_left_unchanged() {
        let attrs = vec![
            kv("app.order.id", text("1234567812345678")),
            kv("service.version", text("1.2.3")),
            kv("process.runtime.version", text("17.0.2.8.1")),
            kv("messaging.destination", text("user@")),
            kv("db.statement", text("SELECT * FROM users WHERE id = $1")),
            kv("event.time", text("2024-05-01T12:30:45.123Z")),
            kv("code.function", text("std::fmt::Display::fmt")),
            kv("http.request.header.authorization", text("Basic")),
            kv("empty", text("")),
        ];
        let (out, ctx) = run("{}", traces(vec![checkout_span(attrs.clone())]));
        let data = only_batch(out);
        assert_eq!(first_span(&data).attributes, attrs);
        assert_eq!(ctx.counted_for("redacted"), 1, "only the resource's host.ip");
    }

    #[test]
    fn span_event_and_link_attributes_are_masked_but_event_names_kept() {
        let mut span = checkout_span(vec![kv("http.route", text("/api/checkout"))]);
        span.events = vec![span::Event {
            name: "payment declined for bob@example.org".into(),
            attributes: vec![
                kv("exception.type", text("CardDeclined")),
                kv("exception.message", text("card 5500 0000 0000 0004 declined for bob@example.org")),
            ],
            ..Default::default()
        }];
        span.links =
            vec![span::Link { attributes: vec![kv("peer.ip", text("198.51.100.7"))], ..Default::default() }];
        let (out, ctx) = run("summary: debug", traces(vec![span]));
        let data = only_batch(out);
        let span = first_span(&data);
        assert_eq!(span.events[0].name, "payment declined for bob@example.org");
        assert_eq!(
            otlp::get_str(&span.events[0].attributes, "exception.message"),
            Some("card **** declined for ****")
        );
        assert_eq!(otlp::get_str(&span.links[0].attributes, "peer.ip"), Some("****"));
        // The span's summary covers its events and links.
        assert_eq!(otlp::get(&span.attributes, "redaction.masked.count"), Some(&int(2)));
        assert_eq!(
            otlp::get_str(&span.attributes, "redaction.masked.keys"),
            Some("exception.message,peer.ip")
        );
        assert_eq!(ctx.counted_for("redacted"), 3);
    }

    #[test]
    fn span_with_allowed_keys_only_keeps_allowed_and_ignored_keys() {
        let yaml = "allowed_keys: [http.route, http.response.status_code, enduser.id, service.name]\n\
                    ignored_keys: [trace.parent_email]\nsummary: debug";
        let data = traces(vec![checkout_span(vec![
            kv("http.route", text("/api/checkout")),
            kv("http.response.status_code", int(200)),
            kv("enduser.id", text("carol@example.net")),
            kv("user.ssn", text("078-05-1120")),
            kv("app.cart", text("3 items")),
            kv("trace.parent_email", text("dave@example.net")),
        ])]);
        let (out, ctx) = run(yaml, data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        let keys: Vec<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.route",
                "http.response.status_code",
                "enduser.id",
                "trace.parent_email",
                "redaction.masked.count",
                "redaction.masked.keys",
                "redaction.redacted.count",
                "redaction.redacted.keys"
            ]
        );
        assert_eq!(otlp::get_str(attrs, "enduser.id"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "trace.parent_email"), Some("dave@example.net"), "ignored keys pass");
        assert_eq!(otlp::get_str(attrs, "redaction.redacted.keys"), Some("app.cart,user.ssn"));
        assert_eq!(otlp::get(attrs, "redaction.redacted.count"), Some(&int(2)));
        // The resource follows the same list: only service.name stays.
        let resource = resource_of(&data);
        assert_eq!(otlp::get_str(resource, "service.name"), Some("checkout"));
        assert_eq!(otlp::get(resource, "host.name"), None);
        assert_eq!(otlp::get_str(resource, "redaction.redacted.keys"), Some("host.ip,host.name"));
        assert_eq!(ctx.counted_for("redacted_keys_removed"), 4);
        assert_eq!(ctx.counted_for("redacted"), 1);
    }

    #[test]
    fn span_allow_all_keys_false_without_a_list_removes_every_attribute() {
        let data = traces(vec![checkout_span(vec![kv("http.route", text("/a")), kv("k", int(1))])]);
        let (out, ctx) = run("allow_all_keys: false\nresource: false", data);
        let data = only_batch(out);
        assert!(first_span(&data).attributes.is_empty());
        assert_eq!(resource_of(&data).len(), 3, "resource: false leaves the resource alone");
        assert_eq!(ctx.counted_for("redacted_keys_removed"), 2);
        assert_eq!(ctx.counted_for("redacted"), 0);
    }

    #[test]
    fn span_blocked_key_masks_any_value_type_and_skips_empty_values() {
        let yaml = "blocked_keys: ['(?i)password', '^http\\.request\\.header\\.cookie$', 'pin']";
        let data = traces(vec![checkout_span(vec![
            kv("db.password", text("hunter2")),
            kv("http.request.header.cookie", array(vec![text("session=abc"), text("theme=dark")])),
            kv("user.pin", int(1234)),
            kv("app.Password.hint", text("")),
            KeyValue { key: "legacy.password".into(), value: None, ..Default::default() },
            kv("http.route", text("/login")),
        ])]);
        let (out, ctx) = run(yaml, data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get_str(attrs, "db.password"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "http.request.header.cookie"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "user.pin"), Some("****"));
        assert_eq!(otlp::get_str(attrs, "app.Password.hint"), Some(""));
        assert_eq!(otlp::get_str(attrs, "http.route"), Some("/login"));
        assert_eq!(attrs.len(), 6);
        assert_eq!(ctx.counted_for("redacted"), 4, "three blocked values and the resource's host.ip");
    }

    #[test]
    fn span_drop_action_removes_blocked_keys_and_attributes_holding_secrets() {
        let yaml = "action: drop\nblocked_key_patterns: [token]\nresource: false\nsummary: info";
        let data = traces(vec![checkout_span(vec![
            kv("enduser.id", text("erin@example.com")),
            kv("auth.token", text("opaque")),
            kv("app.recipients", array(vec![text("ok"), text("frank@example.com")])),
            kv("app.user", map(vec![kv("name", text("Frank")), kv("mail", text("frank@example.com"))])),
            kv("http.route", text("/api/checkout")),
        ])]);
        let (out, ctx) = run(yaml, data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get(attrs, "enduser.id"), None);
        assert_eq!(otlp::get(attrs, "auth.token"), None);
        assert_eq!(otlp::get(attrs, "app.recipients"), None, "an array has no key inside to remove");
        assert_eq!(otlp::get(attrs, "app.user"), Some(&map(vec![kv("name", text("Frank"))])));
        assert_eq!(otlp::get_str(attrs, "http.route"), Some("/api/checkout"));
        assert_eq!(otlp::get(attrs, "redaction.redacted.count"), Some(&int(4)));
        assert_eq!(otlp::get(attrs, "redaction.redacted.keys"), None, "info has counts only");
        assert_eq!(ctx.counted_for("redacted_keys_removed"), 4);
        assert_eq!(ctx.counted_for("redacted"), 0);
    }

    #[test]
    fn span_summary_silent_adds_no_attributes() {
        let data = traces(vec![checkout_span(vec![kv("enduser.id", text("gina@example.com"))])]);
        let (out, _) = run("summary: silent", data);
        let data = only_batch(out);
        assert_eq!(first_span(&data).attributes, vec![kv("enduser.id", text("****"))]);
    }

    #[test]
    fn span_selected_detectors_leave_the_others_alone() {
        let data = traces(vec![checkout_span(vec![
            kv("enduser.id", text("hank@example.com")),
            kv("client.address", text("203.0.113.42")),
        ])]);
        let (out, ctx) = run("detectors: [email]\nmask: '[redacted]'", data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get_str(attrs, "enduser.id"), Some("[redacted]"));
        assert_eq!(otlp::get_str(attrs, "client.address"), Some("203.0.113.42"));
        assert_eq!(otlp::get_str(resource_of(&data), "host.ip"), Some("10.1.2.3"));
        assert_eq!(ctx.counted_for("redacted"), 1);
    }

    #[test]
    fn span_custom_blocked_values_mask_only_their_match() {
        let yaml = "detectors: []\nblocked_values: ['\\b\\d{3}-\\d{2}-\\d{4}\\b', 'acct-[0-9]+']";
        let data = traces(vec![checkout_span(vec![
            kv("app.note", text("ssn 078-05-1120 on acct-99812 (ivy@example.com)")),
            kv("app.phone", text("555-12-34567")),
        ])]);
        let (out, _) = run(yaml, data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get_str(attrs, "app.note"), Some("ssn **** on **** (ivy@example.com)"));
        assert_eq!(otlp::get_str(attrs, "app.phone"), Some("555-12-34567"));
    }

    #[test]
    fn span_allowed_values_keep_company_addresses() {
        let yaml = "allowed_values: ['[a-z.]+@support\\.example\\.com']";
        let data = traces(vec![checkout_span(vec![
            kv("app.from", text("help@support.example.com")),
            kv("app.to", text("jack@gmail.com")),
        ])]);
        let (out, _) = run(yaml, data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get_str(attrs, "app.from"), Some("help@support.example.com"));
        assert_eq!(otlp::get_str(attrs, "app.to"), Some("****"));
    }

    #[test]
    fn span_bytes_and_numbers_are_not_scanned() {
        let attrs = vec![
            kv("app.raw", AnyValue { value: Some(Value::BytesValue(b"kim@example.com".to_vec())) }),
            kv("app.blob", AnyValue { value: Some(Value::BytesValue(vec![0xff, 0xfe, 0x00, 0x80])) }),
            kv("app.card_number", int(4_111_111_111_111_111)),
            kv("app.ratio", AnyValue { value: Some(Value::DoubleValue(0.25)) }),
        ];
        let (out, _) = run("resource: false", traces(vec![checkout_span(attrs.clone())]));
        assert_eq!(first_span(&only_batch(out)).attributes, attrs);
    }

    #[test]
    fn span_processed_twice_changes_nothing_more() {
        let data = traces(vec![checkout_span(vec![
            kv("enduser.id", text("liam@example.com")),
            kv("db.password", text("hunter2")),
        ])]);
        let yaml = "blocked_keys: [password]";
        let (out, _) = run(yaml, data);
        let once = only_batch(out);
        let (out, ctx) = run(yaml, once.clone());
        assert_eq!(only_batch(out), once);
        assert_eq!(ctx.counted_for("redacted"), 0);
    }

    #[test]
    fn span_huge_value_is_scanned_whole() {
        let mut long = "x".repeat(1 << 20);
        long.push_str(" contact mia@example.com");
        let clean = "y ".repeat(1 << 19);
        let data =
            traces(vec![checkout_span(vec![kv("app.dump", text(&long)), kv("app.clean", text(&clean))])]);
        let (out, ctx) = run("resource: false", data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        let dump = otlp::get_str(attrs, "app.dump").expect("kept");
        assert!(dump.ends_with(" contact ****"));
        assert_eq!(dump.len(), (1 << 20) + " contact ****".len());
        assert_eq!(otlp::get_str(attrs, "app.clean"), Some(clean.as_str()));
        assert_eq!(ctx.counted_for("redacted"), 1);
    }

    #[test]
    fn span_unicode_values_keep_their_text_around_the_mask() {
        let data = traces(vec![checkout_span(vec![
            kv("app.note", text("支払い 4111-1111-1111-1111 失敗 — contactez zoë@exemple.fr ✓")),
            kv("app.name", text("Zoë Ünal")),
        ])]);
        let (out, _) = run("{}", data);
        let data = only_batch(out);
        let attrs = &first_span(&data).attributes;
        assert_eq!(otlp::get_str(attrs, "app.note"), Some("支払い **** 失敗 — contactez **** ✓"));
        assert_eq!(otlp::get_str(attrs, "app.name"), Some("Zoë Ünal"));
    }

    // ---- logs ----

    #[test]
    fn log_body_card_number_is_masked_and_failing_luhn_kept() {
        let data = logs(vec![
            log(text("charge card 4111 1111 1111 1111 failed"), vec![kv("payment.provider", text("stripe"))]),
            log(text("order 1234567812345678 shipped"), vec![kv("app.order.id", text("1234567812345678"))]),
        ]);
        let (out, ctx) = run("resource: false\nsummary: debug", data);
        let data = only_batch(out);
        let Data::Logs(request) = &data else { panic!("logs") };
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(body_text(&records[0]), "charge card **** failed");
        assert_eq!(otlp::get_str(&records[0].attributes, "redaction.masked.keys"), Some("body"));
        assert_eq!(body_text(&records[1]), "order 1234567812345678 shipped");
        assert_eq!(otlp::get_str(&records[1].attributes, "app.order.id"), Some("1234567812345678"));
        assert_eq!(otlp::get(&records[1].attributes, "redaction.masked.count"), None);
        assert_eq!(ctx.counted_for("redacted"), 1);
    }

    #[test]
    fn log_nested_body_is_masked_at_every_depth() {
        let body = map(vec![
            kv("msg", text("login failed")),
            kv(
                "user",
                map(vec![
                    kv("email", text("noah@example.com")),
                    kv("password", text("hunter2")),
                    kv("roles", array(vec![text("admin"), text("from 192.0.2.10")])),
                ]),
            ),
            kv("attempts", int(3)),
        ]);
        let data = logs(vec![log(body, vec![])]);
        let (out, ctx) = run("blocked_keys: ['^password$']\nresource: false\nsummary: debug", data);
        let data = only_batch(out);
        let record = first_log(&data);
        let expected = map(vec![
            kv("msg", text("login failed")),
            kv(
                "user",
                map(vec![
                    kv("email", text("****")),
                    kv("password", text("****")),
                    kv("roles", array(vec![text("admin"), text("from ****")])),
                ]),
            ),
            kv("attempts", int(3)),
        ]);
        assert_eq!(record.body.as_ref(), Some(&expected));
        assert_eq!(
            otlp::get_str(&record.attributes, "redaction.masked.keys"),
            Some("body.user.email,body.user.password,body.user.roles")
        );
        assert_eq!(ctx.counted_for("redacted"), 3);
    }

    #[test]
    fn log_body_string_is_masked_even_with_drop_action() {
        let body = map(vec![kv("client", text("203.0.113.9")), kv("path", text("/health"))]);
        let data = logs(vec![
            log(
                text("token for olivia@example.com rejected"),
                vec![kv("enduser.id", text("olivia@example.com"))],
            ),
            log(body, vec![]),
        ]);
        let (out, ctx) = run("action: drop\nresource: false", data);
        let data = only_batch(out);
        let Data::Logs(request) = &data else { panic!("logs") };
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(body_text(&records[0]), "token for **** rejected");
        assert!(records[0].attributes.is_empty());
        assert_eq!(records[1].body.as_ref(), Some(&map(vec![kv("path", text("/health"))])));
        assert_eq!(ctx.counted_for("redacted"), 1);
        assert_eq!(ctx.counted_for("redacted_keys_removed"), 2);
    }

    #[test]
    fn log_without_body_or_with_empty_body_passes_untouched() {
        let records = vec![
            LogRecord { severity_text: "INFO".into(), ..Default::default() },
            log(text(""), vec![kv("empty", text(""))]),
            log(AnyValue { value: None }, vec![]),
        ];
        let (out, ctx) = run("{}", logs(records.clone()));
        let data = only_batch(out);
        let Data::Logs(request) = &data else { panic!("logs") };
        assert_eq!(request.resource_logs[0].scope_logs[0].log_records, records);
        assert_eq!(ctx.counted_for("redacted"), 1, "only the resource's host.ip");
    }

    // ---- metrics ----

    #[test]
    fn metric_point_attributes_are_masked_per_point() {
        let point = |client: &str| NumberDataPoint {
            attributes: vec![kv("client.address", text(client)), kv("http.route", text("/api/checkout"))],
            ..Default::default()
        };
        let data = Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource { attributes: resource(), ..Default::default() }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "http.server.requests".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: vec![point("198.51.100.1"), point("internal")],
                                ..Default::default()
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "http.server.request.duration".into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes: vec![kv("enduser.id", text("pia@example.com"))],
                                    ..Default::default()
                                }],
                                ..Default::default()
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let (out, ctx) = run("summary: info", data);
        let data = only_batch(out);
        let Data::Metrics(request) = &data else { panic!("metrics") };
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else { panic!("sum") };
        assert_eq!(otlp::get_str(&sum.data_points[0].attributes, "client.address"), Some("****"));
        assert_eq!(otlp::get(&sum.data_points[0].attributes, "redaction.masked.count"), Some(&int(1)));
        assert_eq!(otlp::get_str(&sum.data_points[1].attributes, "client.address"), Some("internal"));
        assert_eq!(otlp::get(&sum.data_points[1].attributes, "redaction.masked.count"), None);
        let Some(metric::Data::Histogram(h)) = &metrics[1].data else { panic!("histogram") };
        assert_eq!(otlp::get_str(&h.data_points[0].attributes, "enduser.id"), Some("****"));
        assert_eq!(otlp::get(resource_of(&data), "redaction.masked.count"), Some(&int(1)));
        assert_eq!(ctx.counted_for("redacted"), 3);
    }

    // ---- batches ----

    #[test]
    fn batch_without_items_is_not_pushed() {
        let (out, ctx) = run("{}", Data::Traces(ExportTraceServiceRequest::default()));
        assert!(out.is_empty());
        assert_eq!(ctx.counted_for("redacted"), 0);
    }

    #[test]
    fn batch_keeps_tenant_offset_and_every_item() {
        let mut p = processor("allow_all_keys: false");
        let mut ctx = Context::default();
        let mut out = Vec::new();
        let tenant = Tenant::parse("acme").expect("valid tenant");
        let data = traces(vec![checkout_span(vec![kv("a", int(1))]), checkout_span(vec![])]);
        p.process(Batch::new(tenant.clone(), 42, data), &mut ctx, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tenant, tenant);
        assert_eq!(out[0].offset, 42);
        assert_eq!(out[0].data.items(), 2);
        assert_eq!(ctx.dropped, vec![]);
    }

    // ---- configuration ----

    #[test]
    fn config_null_enables_every_detector() {
        let mut p = match build(&serde_yaml::Value::Null, Signal::Metrics) {
            Ok(p) => p,
            Err(e) => panic!("null config rejected: {e}"),
        };
        let mut ctx = Context::default();
        let mut out = Vec::new();
        let data =
            traces(vec![checkout_span(vec![kv("k", text("AKIAIOSFODNN7EXAMPLE ::1 quinn@example.com"))])]);
        p.process(Batch::new(Tenant::default_tenant(), 1, data), &mut ctx, &mut out);
        let data = only_batch(out);
        assert_eq!(otlp::get_str(&first_span(&data).attributes, "k"), Some("**** **** ****"));
    }

    #[test]
    fn config_bad_blocked_value_regex_names_its_index() {
        let err = config_error("blocked_values: ['ok[0-9]+', 'broken(']");
        assert_eq!(err.path, "blocked_values[1]");
    }

    #[test]
    fn config_bad_key_and_allowed_value_regexes_name_their_index() {
        assert_eq!(config_error("blocked_keys: ['(']").path, "blocked_keys[0]");
        assert_eq!(config_error("blocked_key_patterns: [a, '[z-a]']").path, "blocked_key_patterns[1]");
        assert_eq!(config_error("allowed_values: ['x', 'y', '+']").path, "allowed_values[2]");
    }

    #[test]
    fn config_unknown_detector_names_its_index() {
        let err = config_error("detectors: [email, phone_number]");
        assert_eq!(err.path, "detectors[1]");
        assert!(err.message.contains("credit_card"), "lists the known names: {}", err.message);
    }

    #[test]
    fn config_patterns_matching_everything_are_rejected() {
        assert_eq!(config_error("blocked_keys: ['.*']").path, "blocked_keys[0]");
        assert_eq!(config_error("blocked_values: [a, '']").path, "blocked_values[1]");
    }

    #[test]
    fn config_contradictions_and_unknown_keys_are_rejected() {
        assert_eq!(config_error("allow_all_keys: true\nallowed_keys: [a]").path, "allowed_keys");
        assert_eq!(config_error("blocked_keys: [a]\nblocked_key_patterns: [b]").path, "blocked_key_patterns");
        let unknown = config_error("hash_function: md5");
        assert_eq!(unknown.path, "hash_function");
        assert!(unknown.message.contains("unknown field"), "{}", unknown.message);
        assert_eq!(config_error("summary: verbose").path, "summary");
        assert_eq!(config_error("action: hash").path, "action");
        assert_eq!(config_error("allowed_keys: a").path, "allowed_keys");
        assert_eq!(config_error("resource: maybe").path, "resource");
    }
}
