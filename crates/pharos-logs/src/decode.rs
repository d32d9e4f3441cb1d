//! From queue records to streams: OTLP logs and Loki push requests, each decoded once.
//!
//! OTLP logs map as Loki maps them:
//! - the resource attributes named in [`StreamMapping::resource_labels`] become stream labels,
//!   their names with every character other than `[a-zA-Z0-9_]` replaced by `_`
//!   (`service.name` → `service_name`); a record with none of them gets
//!   `service_name="unknown_service"`;
//! - every other resource attribute, the scope's name and attributes, the record's attributes,
//!   `severity_text`, `severity_number`, `trace_id` and `span_id` (hex) become structured
//!   metadata (names sanitised the same way);
//! - the line is the body: a string as it is, any other value as JSON;
//! - the time is `time_unix_nano`, or `observed_time_unix_nano` when that is 0.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::{collector::logs::v1::ExportLogsServiceRequest, common::v1::KeyValue};
use pharos_core::{Envelope, PayloadFormat, Signal, loki::PushRequest};
use prost::Message;

use crate::model::{Entry, Labels};
use crate::store::block::{StoredEntry, dedicated_prefix, encode_pair};

/// The resource attributes that become stream labels by default: Loki's defaults. The
/// receivers partition log records by the same list (`pharos-ingest`'s
/// `STREAM_RESOURCE_ATTRIBUTES`), so one stream's records meet in one processor.
pub const DEFAULT_RESOURCE_LABELS: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// How OTLP resource attributes become stream labels.
#[derive(Debug, Clone)]
pub struct StreamMapping {
    pub resource_labels: Vec<String>,
}

impl Default for StreamMapping {
    fn default() -> Self {
        Self { resource_labels: DEFAULT_RESOURCE_LABELS.iter().map(|s| s.to_string()).collect() }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("unsupported payload format {0:?} for logs")]
    Format(PayloadFormat),
    #[error("invalid stream labels `{labels}`: {reason}")]
    Labels { labels: String, reason: String },
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
}

/// The streams of a logs envelope (other signals: none). Entries of one stream stay in the
/// order they arrived.
pub fn decode(envelope: &Envelope, mapping: &StreamMapping) -> Result<Vec<DecodedStream>, DecodeError> {
    if envelope.signal != Signal::Logs {
        return Ok(Vec::new());
    }
    match envelope.format {
        PayloadFormat::Otlp => crate::wire::otlp_logs(envelope.payload.as_ref(), mapping),
        PayloadFormat::LokiPush => push(PushRequest::decode(envelope.payload.as_ref())?),
        other => Err(DecodeError::Format(other)),
    }
}

/// Whether a character may be in a label name as it is (others become `_`).
pub(crate) const fn is_label_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `service.name` → `service_name`; a leading digit gets a `_` before it.
pub fn sanitize_label_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().all(is_label_name_char) && !name.starts_with(|c: char| c.is_ascii_digit()) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out: String = name.chars().map(|c| if is_label_name_char(c) { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    std::borrow::Cow::Owned(out)
}

/// An attribute value as text: strings as they are, other scalars printed, bytes in hex,
/// arrays and maps as JSON.
pub fn any_value_text(value: &AnyValue) -> String {
    match value.value.as_ref() {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => match any_value_json(other) {
            serde_json::Value::String(s) => s,
            json => json.to_string(),
        },
        None => String::new(),
    }
}

fn any_value_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::StringValue(s) => J::String(s.clone()),
        Value::BoolValue(b) => J::Bool(*b),
        Value::IntValue(i) => J::from(*i),
        Value::DoubleValue(d) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        Value::BytesValue(b) => J::String(hex(b)),
        // An index into a profile's string table: meaningless without it.
        Value::StringValueStrindex(i) => J::from(*i),
        Value::ArrayValue(a) => {
            J::Array(a.values.iter().map(|v| v.value.as_ref().map_or(J::Null, any_value_json)).collect())
        }
        Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(J::Null, any_value_json),
                    )
                })
                .collect(),
        ),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut digits = Vec::new();
    push_hex(bytes, &mut digits);
    digits.into_iter().map(char::from).collect()
}

/// Appends the lower-case hex digits of `bytes` to `out`, as ASCII bytes.
pub(crate) fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let start = out.len();
    // Written in place: two digits per byte into room made at once.
    out.resize(start + 2 * bytes.len(), 0);
    for (pair, b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

fn push_attributes(out: &mut Vec<u8>, attributes: &[KeyValue]) {
    for kv in attributes {
        // Strings, the common case, without a copy.
        if let Some(AnyValue { value: Some(Value::StringValue(value)) }) = &kv.value {
            if !value.is_empty() {
                encode_pair(&sanitize_label_name(&kv.key), value, out);
            }
            continue;
        }
        let value = kv.value.as_ref().map(any_value_text).unwrap_or_default();
        if !value.is_empty() {
            encode_pair(&sanitize_label_name(&kv.key), &value, out);
        }
    }
}

/// A string attribute, as SDKs send most (for the crate's tests).
#[cfg(test)]
pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// One stream's entries as decoded from a record, in the order they came.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedStream {
    pub labels: Arc<Labels>,
    pub entries: Vec<StoredEntry>,
}

impl DecodedStream {
    /// The entries with their metadata decoded (for tests and tools).
    pub fn to_entries(&self) -> Vec<Entry> {
        self.entries.iter().filter_map(|e| e.to_entry().ok()).collect()
    }
}

/// The mapping over a request decoded with prost (the processing pipeline's output): what the
/// wire reader (`crate::wire`) must give, and its oracle in tests.
pub(crate) fn otlp(request: ExportLogsServiceRequest, mapping: &StreamMapping) -> Vec<DecodedStream> {
    let mut streams: Vec<DecodedStream> = Vec::new();
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
    for resource_logs in request.resource_logs {
        let attributes = resource_logs.resource.map(|r| r.attributes).unwrap_or_default();
        let mut labels = Vec::new();
        // Resource and scope metadata is encoded once and shared by the scope's records.
        let mut resource_metadata = Vec::new();
        for kv in &attributes {
            let value = kv.value.as_ref().map(any_value_text).unwrap_or_default();
            if value.is_empty() {
                continue;
            }
            if mapping.resource_labels.contains(&kv.key) {
                labels.push((sanitize_label_name(&kv.key).into_owned(), value));
            } else {
                encode_pair(&sanitize_label_name(&kv.key), &value, &mut resource_metadata);
            }
        }
        if labels.is_empty() {
            labels.push(("service_name".to_string(), "unknown_service".to_string()));
        }
        let labels = Arc::new(Labels::new(labels));
        let at = *index.entry(labels.clone()).or_insert_with(|| {
            streams.push(DecodedStream { labels, entries: Vec::new() });
            streams.len() - 1
        });
        for scope_logs in resource_logs.scope_logs {
            let mut scope_metadata = resource_metadata.clone();
            if let Some(scope) = &scope_logs.scope {
                if !scope.name.is_empty() {
                    encode_pair("scope_name", &scope.name, &mut scope_metadata);
                }
                push_attributes(&mut scope_metadata, &scope.attributes);
            }
            streams[at].entries.reserve(scope_logs.log_records.len());
            let shared: Option<Arc<[u8]>> = (!scope_metadata.is_empty()).then(|| scope_metadata.into());
            // Each record's metadata is built in one scratch buffer, then copied out once at
            // its exact size.
            let mut metadata: Vec<u8> = Vec::with_capacity(1024);
            for record in scope_logs.log_records {
                // The pairs of dedicated names first (see `StoredEntry::dedicated_prefix`).
                metadata.clear();
                if !record.severity_text.is_empty() {
                    encode_pair("severity_text", &record.severity_text, &mut metadata);
                }
                if !record.trace_id.is_empty() {
                    encode_pair("trace_id", &hex(&record.trace_id), &mut metadata);
                }
                let prefix = metadata.len();
                push_attributes(&mut metadata, &record.attributes);
                if record.severity_number != 0 {
                    encode_pair("severity_number", &record.severity_number.to_string(), &mut metadata);
                }
                if !record.span_id.is_empty() {
                    encode_pair("span_id", &hex(&record.span_id), &mut metadata);
                }
                let time = if record.time_unix_nano != 0 {
                    record.time_unix_nano
                } else {
                    record.observed_time_unix_nano
                };
                let line = match record.body {
                    Some(AnyValue { value: Some(Value::StringValue(s)) }) => s,
                    Some(other) => any_value_text(&other),
                    None => String::new(),
                };
                streams[at].entries.push(StoredEntry {
                    timestamp: i64::try_from(time).unwrap_or(i64::MAX),
                    line: line.into_boxed_str(),
                    shared: shared.clone(),
                    metadata: Box::from(metadata.as_slice()),
                    dedicated_prefix: dedicated_prefix(&metadata, prefix),
                });
            }
        }
    }
    streams.retain(|s| !s.entries.is_empty());
    streams
}

/// Parses a stream's labels string, `{a="1", b="2"}` (the receiver wrote it canonically).
pub fn parse_labels(text: &str) -> Result<Labels, DecodeError> {
    pharos_core::loki::parse_labels(text)
        .map(Labels::new)
        .map_err(|reason| DecodeError::Labels { labels: text.to_string(), reason })
}

fn push(request: PushRequest) -> Result<Vec<DecodedStream>, DecodeError> {
    let mut streams: Vec<DecodedStream> = Vec::new();
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
    for stream in request.streams {
        let labels = Arc::new(parse_labels(&stream.labels)?);
        let at = *index.entry(labels.clone()).or_insert_with(|| {
            streams.push(DecodedStream { labels, entries: Vec::new() });
            streams.len() - 1
        });
        streams[at].entries.extend(stream.entries.into_iter().map(|e| {
            let mut metadata = Vec::new();
            for pair in &e.structured_metadata {
                encode_pair(&pair.name, &pair.value, &mut metadata);
            }
            StoredEntry {
                timestamp: e.timestamp.map_or(0, |t| t.unix_nanos()),
                line: e.line.into_boxed_str(),
                shared: None,
                metadata: metadata.into_boxed_slice(),
                dedicated_prefix: None,
            }
        }));
    }
    streams.retain(|s| !s.entries.is_empty());
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::InstrumentationScope,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
    };
    use pharos_core::{
        Tenant,
        loki::{LabelPair, Stream, Timestamp},
    };

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn envelope(format: PayloadFormat, payload: Vec<u8>) -> Envelope {
        Envelope {
            tenant: Tenant::default(),
            signal: Signal::Logs,
            format,
            received_at_unix_nanos: 0,
            items: 1,
            metadata: Vec::new(),
            payload: payload.into(),
        }
    }

    #[test]
    fn otlp_resource_attributes_become_labels_and_the_rest_metadata() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Value::StringValue("checkout".into())),
                        kv("k8s.pod.name", Value::StringValue("co-1".into())),
                        kv("host.name", Value::StringValue("node-7".into())),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "app.logger".into(), ..Default::default() }),
                    log_records: vec![
                        LogRecord {
                            time_unix_nano: 1_000,
                            severity_number: 17,
                            severity_text: "ERROR".into(),
                            body: Some(AnyValue { value: Some(Value::StringValue("payment failed".into())) }),
                            attributes: vec![kv("http.status_code", Value::IntValue(502))],
                            trace_id: vec![0xab; 16],
                            span_id: vec![0x01; 8],
                            ..Default::default()
                        },
                        LogRecord {
                            observed_time_unix_nano: 2_000,
                            body: Some(AnyValue { value: Some(Value::IntValue(42)) }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let streams =
            decode(&envelope(PayloadFormat::Otlp, request.encode_to_vec()), &StreamMapping::default())
                .unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].labels.to_string(), r#"{k8s_pod_name="co-1", service_name="checkout"}"#);
        let entries = streams[0].to_entries();
        let first = &entries[0];
        assert_eq!((first.timestamp, first.line.as_str()), (1_000, "payment failed"));
        let meta: HashMap<&str, &str> =
            first.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(meta["host_name"], "node-7");
        assert_eq!(meta["scope_name"], "app.logger");
        assert_eq!(meta["http_status_code"], "502");
        assert_eq!(meta["severity_text"], "ERROR");
        assert_eq!(meta["severity_number"], "17");
        assert_eq!(meta["trace_id"], "ab".repeat(16));
        assert_eq!(meta["span_id"], "0101010101010101");
        assert_eq!((entries[1].timestamp, entries[1].line.as_str()), (2_000, "42"));
    }

    #[test]
    fn label_names_are_sanitised_as_loki_does_and_valid_ones_are_not_copied() {
        assert_eq!(sanitize_label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(sanitize_label_name("1st-try"), "_1st_try");
        assert!(matches!(sanitize_label_name("service_name"), std::borrow::Cow::Borrowed("service_name")));
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn a_resource_without_stream_attributes_is_unknown_service() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord { time_unix_nano: 5, ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let streams =
            decode(&envelope(PayloadFormat::Otlp, request.encode_to_vec()), &StreamMapping::default())
                .unwrap();
        assert_eq!(streams[0].labels.to_string(), r#"{service_name="unknown_service"}"#);
    }

    #[test]
    fn loki_push_streams_keep_their_labels_lines_and_metadata() {
        let entry = |s: i64, line: &str| pharos_core::loki::Entry {
            timestamp: Some(Timestamp { seconds: s, nanos: 7 }),
            line: line.into(),
            structured_metadata: vec![LabelPair { name: "trace_id".into(), value: "t1".into() }],
            parsed: vec![],
        };
        let request = PushRequest {
            streams: vec![
                Stream { labels: r#"{app="api", env="prod"}"#.into(), entries: vec![entry(1, "a")], hash: 0 },
                Stream { labels: r#"{env="prod", app="api"}"#.into(), entries: vec![entry(2, "b")], hash: 0 },
                Stream { labels: r#"{app="q\"uote"}"#.into(), entries: vec![entry(3, "c")], hash: 0 },
            ],
        };
        let streams =
            decode(&envelope(PayloadFormat::LokiPush, request.encode_to_vec()), &StreamMapping::default())
                .unwrap();
        assert_eq!(streams.len(), 2, "the same label set in another order is one stream");
        assert_eq!(streams[0].entries.len(), 2);
        assert_eq!(streams[0].entries[1].timestamp, 2_000_000_007);
        assert_eq!(streams[0].to_entries()[0].metadata, [("trace_id".to_string(), "t1".to_string())]);
        assert_eq!(streams[1].labels.get("app"), Some("q\"uote"));
        assert!(parse_labels(r#"{app=~"x"}"#).is_err());
        assert!(parse_labels("app").is_err());
    }
}
