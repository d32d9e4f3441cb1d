//! Zipkin v2: POST `/api/v2/spans` with a JSON list of spans (`application/json`, the default)
//! or a protobuf `zipkin.proto3.ListOfSpans` (`application/x-protobuf`), optionally gzip or
//! zstd. Success is 202, as Zipkin answers.
//!
//! Spans become OTLP as the OpenTelemetry Collector's Zipkin receiver makes them: one resource
//! per `localEndpoint.serviceName` (`service.name`); 64-bit trace ids left-padded to 128 bits;
//! `timestamp` and `duration` (µs) become start and end; `kind` maps to the OTLP kind; tags
//! become string attributes, except `error` (status ERROR with the tag as its message) and
//! `otel.status_code`/`otel.status_description`; annotations become events; the remote
//! endpoint becomes `peer.service`, `net.peer.ip` and `net.peer.port`. Then the request takes the
//! OTLP path: validated, split by trace id, durable before the answer.
//!
//! A span with a malformed id is refused with 400 naming it; the others of the request are kept
//! (as remote write does).

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::Response,
    routing::post,
};
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span},
};
use pharos_core::Signal;
use prost::Message;
use serde::Deserialize;

use crate::{
    IngestError, Ingestor, TENANT_HEADER,
    body::{Compression, read_body},
    otlp::{Outcome, http::HttpOptions},
    tenant_from_header,
};

/// The protobuf messages of `zipkin.proto3`.
pub mod proto {
    /// `zipkin.proto3.ListOfSpans`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOfSpans {
        /// The spans.
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    /// `zipkin.proto3.Span`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        /// 8 or 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes, or empty for a root span.
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
        #[prost(int32, tag = "4")]
        pub kind: i32,
        /// The operation name.
        #[prost(string, tag = "5")]
        pub name: String,
        /// Start, unix microseconds.
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        /// Microseconds.
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        /// The service that recorded the span.
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        /// The other side of an RPC.
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        /// Timestamped events.
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        /// String tags.
        #[prost(map = "string, string", tag = "11")]
        pub tags: std::collections::HashMap<String, String>,
        /// Debug flag.
        #[prost(bool, tag = "12")]
        pub debug: bool,
        /// Shared (server side of a span whose id the client chose).
        #[prost(bool, tag = "13")]
        pub shared: bool,
    }

    /// `zipkin.proto3.Endpoint`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endpoint {
        /// Lower-case service name.
        #[prost(string, tag = "1")]
        pub service_name: String,
        /// 4 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub ipv4: Vec<u8>,
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "3")]
        pub ipv6: Vec<u8>,
        /// Port.
        #[prost(int32, tag = "4")]
        pub port: i32,
    }

    /// `zipkin.proto3.Annotation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Annotation {
        /// Unix microseconds.
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        /// What happened.
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// A Zipkin v2 JSON span.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsonSpan {
    trace_id: String,
    parent_id: Option<String>,
    id: String,
    kind: Option<String>,
    name: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local_endpoint: Option<JsonEndpoint>,
    remote_endpoint: Option<JsonEndpoint>,
    annotations: Vec<JsonAnnotation>,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsonEndpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonAnnotation {
    timestamp: u64,
    value: String,
}

/// A Zipkin span in one shape, whichever encoding it came in.
struct ZSpan {
    trace_id: Vec<u8>,
    parent_id: Vec<u8>,
    id: Vec<u8>,
    kind: i32,
    name: String,
    timestamp: u64,
    duration: u64,
    service: String,
    remote: Option<(String, String, i32)>,
    annotations: Vec<(u64, String)>,
    tags: Vec<(String, String)>,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

fn json_spans(body: &[u8]) -> Result<Vec<Result<ZSpan, String>>, IngestError> {
    let spans: Vec<JsonSpan> = serde_json::from_slice(body)?;
    Ok(spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let trace_id = unhex(&s.trace_id)
                .filter(|b| b.len() == 8 || b.len() == 16)
                .ok_or_else(|| format!("span {i}: traceId {:?} is not 16 or 32 hex digits", s.trace_id))?;
            let id = unhex(&s.id)
                .filter(|b| b.len() == 8)
                .ok_or_else(|| format!("span {i}: id {:?} is not 16 hex digits", s.id))?;
            let parent_id = match s.parent_id.as_deref() {
                None | Some("") => Vec::new(),
                Some(p) => unhex(p)
                    .filter(|b| b.len() == 8)
                    .ok_or_else(|| format!("span {i}: parentId {p:?} is not 16 hex digits"))?,
            };
            let kind = match s.kind.as_deref() {
                None => 0,
                Some("CLIENT") => 1,
                Some("SERVER") => 2,
                Some("PRODUCER") => 3,
                Some("CONSUMER") => 4,
                Some(other) => {
                    return Err(format!(
                        "span {i}: kind {other:?} is not CLIENT, SERVER, PRODUCER or CONSUMER"
                    ));
                }
            };
            let remote = s.remote_endpoint.map(|e| {
                (
                    e.service_name.unwrap_or_default(),
                    e.ipv4.or(e.ipv6).unwrap_or_default(),
                    e.port.unwrap_or(0),
                )
            });
            Ok(ZSpan {
                trace_id,
                parent_id,
                id,
                kind,
                name: s.name.unwrap_or_default(),
                timestamp: s.timestamp.unwrap_or(0),
                duration: s.duration.unwrap_or(0),
                service: s.local_endpoint.and_then(|e| e.service_name).unwrap_or_default(),
                remote,
                annotations: s.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
                tags: s.tags.into_iter().collect(),
            })
        })
        .collect())
}

fn ip_text(ipv4: &[u8], ipv6: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(ipv4) {
        std::net::Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(ipv6) {
        std::net::Ipv6Addr::from(v6).to_string()
    } else {
        String::new()
    }
}

fn proto_spans(body: &[u8]) -> Result<Vec<Result<ZSpan, String>>, IngestError> {
    let list = proto::ListOfSpans::decode(body)?;
    Ok(list
        .spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if s.trace_id.len() != 8 && s.trace_id.len() != 16 {
                return Err(format!("span {i}: trace_id has {} bytes, not 8 or 16", s.trace_id.len()));
            }
            if s.id.len() != 8 {
                return Err(format!("span {i}: id has {} bytes, not 8", s.id.len()));
            }
            if !s.parent_id.is_empty() && s.parent_id.len() != 8 {
                return Err(format!("span {i}: parent_id has {} bytes, not 8", s.parent_id.len()));
            }
            if !(0..=4).contains(&s.kind) {
                return Err(format!("span {i}: kind {} is not one of 0 to 4", s.kind));
            }
            let mut tags: Vec<(String, String)> = s.tags.into_iter().collect();
            tags.sort();
            Ok(ZSpan {
                trace_id: s.trace_id,
                parent_id: s.parent_id,
                id: s.id,
                kind: s.kind,
                name: s.name,
                timestamp: s.timestamp,
                duration: s.duration,
                service: s.local_endpoint.map(|e| e.service_name).unwrap_or_default(),
                remote: s.remote_endpoint.map(|e| (e.service_name, ip_text(&e.ipv4, &e.ipv6), e.port)),
                annotations: s.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
                tags,
            })
        })
        .collect())
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// Zipkin spans as one OTLP request: a resource per service, spans in arrival order.
fn to_otlp(spans: Vec<ZSpan>) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
    for z in spans {
        let mut trace_id = vec![0u8; 16 - z.trace_id.len()];
        trace_id.extend_from_slice(&z.trace_id);
        let mut status = None;
        let mut attributes = Vec::with_capacity(z.tags.len() + 3);
        let mut status_code = None;
        let mut status_message = None;
        for (key, value) in z.tags {
            match key.as_str() {
                "error" => {
                    status_code.get_or_insert(2);
                    status_message.get_or_insert(value);
                }
                "otel.status_code" => {
                    status_code = match value.as_str() {
                        "ERROR" => Some(2),
                        "OK" => Some(1),
                        _ => status_code,
                    }
                }
                "otel.status_description" => status_message = Some(value),
                _ => attributes.push(string_kv(&key, value)),
            }
        }
        if let Some(code) = status_code {
            status = Some(Status {
                code,
                message: if code == 2 { status_message.unwrap_or_default() } else { String::new() },
            });
        }
        if let Some((service, ip, port)) = z.remote {
            if !service.is_empty() {
                attributes.push(string_kv("peer.service", service));
            }
            if !ip.is_empty() {
                attributes.push(string_kv("net.peer.ip", ip));
            }
            if port != 0 {
                attributes.push(KeyValue {
                    key: "net.peer.port".into(),
                    value: Some(AnyValue { value: Some(Value::IntValue(i64::from(port))) }),
                    ..Default::default()
                });
            }
        }
        let span = Span {
            trace_id,
            span_id: z.id,
            parent_span_id: z.parent_id,
            name: z.name,
            kind: match z.kind {
                1 => span::SpanKind::Client as i32,
                2 => span::SpanKind::Server as i32,
                3 => span::SpanKind::Producer as i32,
                4 => span::SpanKind::Consumer as i32,
                _ => span::SpanKind::Unspecified as i32,
            },
            start_time_unix_nano: z.timestamp.saturating_mul(1000),
            end_time_unix_nano: z.timestamp.saturating_add(z.duration).saturating_mul(1000),
            attributes,
            events: z
                .annotations
                .into_iter()
                .map(|(ts, value)| span::Event {
                    time_unix_nano: ts.saturating_mul(1000),
                    name: value,
                    ..Default::default()
                })
                .collect(),
            status,
            ..Default::default()
        };
        match by_service.iter_mut().find(|(s, _)| *s == z.service) {
            Some((_, spans)) => spans.push(span),
            None => by_service.push((z.service, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: if service.is_empty() {
                        Vec::new()
                    } else {
                        vec![string_kv("service.name", service)]
                    },
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "zipkin".into(), ..Default::default() }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

struct ZipkinState {
    ingestor: Arc<Ingestor>,
    options: HttpOptions,
}

/// The Zipkin v2 route, for the OTLP/HTTP port.
pub fn router(ingestor: Arc<Ingestor>, options: HttpOptions) -> Router {
    Router::new().route("/api/v2/spans", post(handle)).with_state(Arc::new(ZipkinState { ingestor, options }))
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Protobuf,
}

async fn handle(State(state): State<Arc<ZipkinState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = receive(&state, request).await;
    let outcome = match &result {
        Ok((o, refused)) if o.rejected > 0 || !refused.is_empty() => "partial",
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    state.ingestor.metrics().request(Signal::Traces, "zipkin", outcome, started.elapsed().as_secs_f64());
    match result {
        Ok((o, refused)) if o.rejected > 0 || !refused.is_empty() => {
            let mut message = refused.join("; ");
            if let Some(m) = o.message {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                message.push_str(&m);
            }
            text(
                StatusCode::BAD_REQUEST,
                format!("{} spans refused: {message}", o.rejected + refused.len() as u64),
                &state.options,
            )
        }
        Ok(_) => text(StatusCode::ACCEPTED, String::new(), &state.options),
        Err(e) => {
            tracing::debug!(error = %e, "zipkin spans refused");
            let status =
                StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, e.public_message(), &state.options)
        }
    }
}

fn text(status: StatusCode, message: String, options: &HttpOptions) -> Response {
    let mut r = Response::new(Body::from(if message.is_empty() { message } else { message + "\n" }));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(options.retry_after.as_secs().max(1)));
    }
    r
}

async fn receive(state: &ZipkinState, request: Request) -> Result<(Outcome, Vec<String>), IngestError> {
    let (parts, body) = request.into_parts();
    let format = match parts.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)")) {
        None => Format::Json,
        Some(ct) => match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "application/json" => Format::Json,
            "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
            _ => return Err(IngestError::UnsupportedContentType(ct.to_string())),
        },
    };
    let tenant = tenant_from_header(parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))?;
    let metadata = state.ingestor.metadata(|name| parts.headers.get(name).map(|v| v.as_bytes()));
    let compression = Compression::from_header(
        parts.headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("(not text)")),
    )?;
    let limits = state.ingestor.limits().clone();
    let timeout = state.options.request_timeout;
    let body = tokio::time::timeout(timeout, read_body(body, limits.max_body_size))
        .await
        .map_err(|_| IngestError::BodyTimeout { secs: timeout.as_secs_f64() })??;
    let ingestor = state.ingestor.clone();
    let (prepared, refused) = tokio::task::spawn_blocking(move || {
        let body: Bytes = crate::body::decompress(body, compression, limits.max_decompressed_size)?;
        let spans = match format {
            Format::Json => json_spans(&body)?,
            Format::Protobuf => proto_spans(&body)?,
        };
        if spans.len() > limits.max_items_per_request {
            return Err(IngestError::TooManyItems {
                signal: Signal::Traces,
                count: spans.len(),
                limit: limits.max_items_per_request,
            });
        }
        let (good, refused): (Vec<_>, Vec<_>) = spans.into_iter().partition(Result::is_ok);
        let good: Vec<ZSpan> = good.into_iter().filter_map(Result::ok).collect();
        let refused: Vec<String> = refused.into_iter().filter_map(Result::err).collect();
        if good.is_empty() && !refused.is_empty() {
            return Err(IngestError::Invalid(refused.join("; ")));
        }
        let encoded = Bytes::from(to_otlp(good).encode_to_vec());
        Ok((ingestor.prepare_encoded(Signal::Traces, &tenant, &metadata, encoded)?, refused))
    })
    .await
    .map_err(|e| IngestError::ReadBody(e.to_string()))??;
    let outcome = state.ingestor.commit(prepared).await?;
    Ok((outcome, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_spans_become_otlp() {
        let body = br#"[
          {"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c",
           "name":"get /api","kind":"SERVER","timestamp":1556604172355737,"duration":1431,
           "localEndpoint":{"serviceName":"backend","ipv4":"192.168.99.1","port":3306},
           "remoteEndpoint":{"serviceName":"frontend","ipv4":"172.19.0.2","port":58648},
           "annotations":[{"timestamp":1556604172355800,"value":"wr"}],
           "tags":{"http.method":"GET","error":"boom"}},
          {"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"a2fb4a1d1a96d312","name":"root",
           "timestamp":1556604172355000,"duration":2000,"localEndpoint":{"serviceName":"frontend"}},
          {"traceId":"xyz","id":"a2fb4a1d1a96d312"}
        ]"#;
        let spans = json_spans(body).unwrap();
        assert_eq!(spans.len(), 3);
        assert!(spans[2].as_ref().err().unwrap().contains("span 2: traceId"));
        let good: Vec<ZSpan> = spans.into_iter().filter_map(Result::ok).collect();
        let request = to_otlp(good);
        assert_eq!(request.resource_spans.len(), 2);
        let backend = &request.resource_spans[0];
        assert_eq!(
            backend.resource.as_ref().unwrap().attributes[0],
            string_kv("service.name", "backend".into())
        );
        let span = &backend.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, unhex("00000000000000005af7183fb1d4cf5f").unwrap());
        assert_eq!(span.parent_span_id, unhex("6b221d5bc9e6496c").unwrap());
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_431_000);
        assert_eq!(span.status, Some(Status { code: 2, message: "boom".into() }));
        assert_eq!(span.events[0].name, "wr");
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["http.method", "peer.service", "net.peer.ip", "net.peer.port"]);
        let root = &request.resource_spans[1].scope_spans[0].spans[0];
        assert!(root.parent_span_id.is_empty() && root.status.is_none());
    }

    #[test]
    fn protobuf_spans_become_otlp() {
        let list = proto::ListOfSpans {
            spans: vec![
                proto::Span {
                    trace_id: vec![1; 16],
                    id: vec![2; 8],
                    kind: 1,
                    name: "call".into(),
                    timestamp: 10,
                    duration: 5,
                    local_endpoint: Some(proto::Endpoint {
                        service_name: "svc".into(),
                        ..Default::default()
                    }),
                    remote_endpoint: Some(proto::Endpoint {
                        ipv4: vec![10, 0, 0, 1],
                        port: 80,
                        ..Default::default()
                    }),
                    tags: [("otel.status_code".to_string(), "OK".to_string())].into(),
                    ..Default::default()
                },
                proto::Span { trace_id: vec![1; 3], id: vec![2; 8], ..Default::default() },
            ],
        };
        let spans = proto_spans(&list.encode_to_vec()).unwrap();
        assert!(spans[1].as_ref().err().unwrap().contains("trace_id has 3 bytes"));
        let request = to_otlp(spans.into_iter().filter_map(Result::ok).collect());
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (10_000, 15_000));
        assert_eq!(span.status, Some(Status { code: 1, message: String::new() }));
        assert_eq!(span.attributes[0], string_kv("net.peer.ip", "10.0.0.1".into()));
    }
}
