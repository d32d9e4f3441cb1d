//! The span model: one span with the resource and instrumentation scope it came under.
//!
//! Spans keep their OTLP form ([`Span`]) so that nothing a client sent is lost between the
//! queue and a trace-by-id answer; the resource and scope are shared by all spans of one
//! `ScopeSpans` ([`Arc`]), the way they arrived.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData},
};

/// A trace id: 16 bytes.
pub type TraceId = [u8; 16];
/// A span id: 8 bytes.
pub type SpanId = [u8; 8];

/// The service name of spans whose resource has no `service.name` (as the SDKs default it).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// A resource as it arrived, with its schema URL and its `service.name`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceInfo {
    /// The OTLP resource.
    pub resource: Resource,
    /// `ResourceSpans.schema_url`.
    pub schema_url: String,
    /// `service.name` of the resource, or [`UNKNOWN_SERVICE`].
    pub service_name: String,
}

impl ResourceInfo {
    /// Wraps a resource, reading its service name.
    pub fn new(resource: Resource, schema_url: String) -> Self {
        let service_name =
            string_attribute(&resource.attributes, "service.name").unwrap_or(UNKNOWN_SERVICE).to_string();
        Self { resource, schema_url, service_name }
    }
}

/// An instrumentation scope as it arrived, with its schema URL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeInfo {
    /// The OTLP instrumentation scope.
    pub scope: InstrumentationScope,
    /// `ScopeSpans.schema_url`.
    pub schema_url: String,
}

/// One span with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// The resource the span came under.
    pub resource: Arc<ResourceInfo>,
    /// The instrumentation scope the span came under.
    pub scope: Arc<ScopeInfo>,
    /// The span itself, as sent.
    pub span: Span,
}

impl SpanData {
    /// The trace id; all zeros if the span's is not 16 bytes (ingest refuses those).
    pub fn trace_id(&self) -> TraceId {
        self.span.trace_id.as_slice().try_into().unwrap_or_default()
    }

    /// The span id; all zeros if it is not 8 bytes (ingest refuses those).
    pub fn span_id(&self) -> SpanId {
        self.span.span_id.as_slice().try_into().unwrap_or_default()
    }

    /// The parent span id, `None` for a root span (empty or all-zero parent).
    pub fn parent_span_id(&self) -> Option<SpanId> {
        let parent: SpanId = self.span.parent_span_id.as_slice().try_into().ok()?;
        (parent != [0; 8]).then_some(parent)
    }

    /// Whether the span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id().is_none()
    }

    /// End minus start, in nanoseconds (zero when the end is before the start).
    pub fn duration_nanos(&self) -> u64 {
        self.span.end_time_unix_nano.saturating_sub(self.span.start_time_unix_nano)
    }

    /// The resource's `service.name`.
    pub fn service_name(&self) -> &str {
        &self.resource.service_name
    }
}

/// The value of a string attribute, if `key` is present with a string value.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

/// The value of attribute `key`, if present.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref())
}

/// Flattens an export request into spans, sharing each resource and scope among its spans.
pub fn spans_of_request(request: ExportTraceServiceRequest) -> Vec<SpanData> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = Arc::new(ResourceInfo::new(
            resource_spans.resource.unwrap_or_default(),
            resource_spans.schema_url,
        ));
        for scope_spans in resource_spans.scope_spans {
            let scope = Arc::new(ScopeInfo {
                scope: scope_spans.scope.unwrap_or_default(),
                schema_url: scope_spans.schema_url,
            });
            out.extend(scope_spans.spans.into_iter().map(|span| SpanData {
                resource: resource.clone(),
                scope: scope.clone(),
                span,
            }));
        }
    }
    out
}

/// Groups spans back into OTLP `TracesData`: consecutive spans that share a resource (and
/// scope) go under one `ResourceSpans` (and `ScopeSpans`), in the order given.
pub fn traces_data<'a>(spans: impl IntoIterator<Item = &'a SpanData>) -> TracesData {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut last: Option<(&Arc<ResourceInfo>, &Arc<ScopeInfo>)> = None;
    for data in spans {
        let same_resource =
            last.is_some_and(|(r, _)| Arc::ptr_eq(r, &data.resource) || **r == *data.resource);
        let same_scope =
            same_resource && last.is_some_and(|(_, s)| Arc::ptr_eq(s, &data.scope) || **s == *data.scope);
        if !same_resource {
            resource_spans.push(ResourceSpans {
                resource: Some(data.resource.resource.clone()),
                scope_spans: Vec::new(),
                schema_url: data.resource.schema_url.clone(),
            });
        }
        let rs = resource_spans.last_mut().expect("pushed above");
        if !same_scope {
            rs.scope_spans.push(ScopeSpans {
                scope: Some(data.scope.scope.clone()),
                spans: Vec::new(),
                schema_url: data.scope.schema_url.clone(),
            });
        }
        rs.scope_spans.last_mut().expect("pushed above").spans.push(data.span.clone());
        last = Some((&data.resource, &data.scope));
    }
    TracesData { resource_spans }
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Parses a trace id in hex as Tempo and Jaeger accept it: up to 32 hex digits, left-padded
/// with zeros (64-bit ids are 16 digits). `None` for anything else.
pub fn parse_trace_id(text: &str) -> Option<TraceId> {
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{text:0>32}");
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn trace_ids_parse_like_tempo() {
        let id = parse_trace_id("0102030405060708090a0b0c0d0e0f10").unwrap();
        assert_eq!(hex(&id), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(hex(&parse_trace_id("abc").unwrap()), "00000000000000000000000000000abc");
        assert_eq!(parse_trace_id(""), None);
        assert_eq!(parse_trace_id("0102030405060708090a0b0c0d0e0f1011"), None);
        assert_eq!(parse_trace_id("xyz"), None);
    }

    #[test]
    fn requests_flatten_and_group_back() {
        let span = |id: u8| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            ..Span::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "a")],
                        ..Resource::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope::default()),
                            spans: vec![span(1), span(2)],
                            schema_url: String::new(),
                        },
                        ScopeSpans {
                            scope: Some(InstrumentationScope { name: "lib".into(), ..Default::default() }),
                            spans: vec![span(3)],
                            schema_url: "s".into(),
                        },
                    ],
                    schema_url: "r".into(),
                },
                ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![span(4)],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
            ],
        };
        let spans = spans_of_request(request.clone());
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[0].service_name(), "a");
        assert_eq!(spans[3].service_name(), UNKNOWN_SERVICE);
        assert!(spans[0].is_root());
        let back = traces_data(&spans);
        assert_eq!(back.resource_spans, request.resource_spans);
    }
}
