//! The Jaeger query API (the HTTP JSON API of Jaeger's UI, which Grafana's Jaeger data source
//! calls), under `/jaeger`: `/jaeger/api/services`, `/jaeger/api/services/{service}/operations`,
//! `/jaeger/api/traces` (search), `/jaeger/api/traces/{id}` and `/jaeger/api/dependencies`.
//!
//! Every answer is Jaeger's envelope `{data, total, limit, offset, errors}`. Times are
//! microseconds (`start`, `end`, span `startTime` and `duration`), `endTs` and `lookback` of
//! dependencies milliseconds. A search matches a trace when one of its spans has the service
//! (and operation), every tag (span attributes first, then resource attributes; compared as
//! text, as Jaeger does) and a duration within `minDuration`..`maxDuration`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use serde_json::{Value as Json_, json};

use crate::{
    api::{ApiError, duration_nanos, params, tenant},
    model::{SpanData, hex, parse_trace_id},
    store::TraceStore,
};

struct JaegerState {
    store: Arc<TraceStore>,
    query_timeout: Duration,
}

/// The Jaeger query API routes.
pub fn router(store: Arc<TraceStore>, query_timeout: Duration) -> Router {
    let state = Arc::new(JaegerState { store, query_timeout });
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route("/jaeger/api/services/{service}/operations", get(operations))
        .route("/jaeger/api/operations", get(operations_v2))
        .route("/jaeger/api/traces", get(find_traces))
        .route("/jaeger/api/traces/{id}", get(get_trace))
        .route("/jaeger/api/dependencies", get(dependencies))
        .with_state(state)
}

/// A Jaeger error answer: the envelope with `errors`, and the status.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{ "code": status.as_u16(), "msg": message }] })))
        .into_response()
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        let (status, message) = e.parts();
        error(status, message)
    }
}

fn envelope(data: Json_, total: usize) -> Response {
    Json(json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": null })).into_response()
}

/// A microsecond time parameter, as nanoseconds.
fn micros(params: &BTreeMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    match params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .and_then(|us| us.checked_mul(1000))
            .map(Some)
            .ok_or_else(|| ApiError::bad(format!("invalid {key} `{text}`: want unix microseconds"))),
    }
}

async fn traces(
    state: &JaegerState,
    headers: &HeaderMap,
    start: u64,
    end: u64,
) -> Result<Vec<Vec<SpanData>>, ApiError> {
    let tenant = tenant(headers)?;
    tokio::time::timeout(state.query_timeout, state.store.traces_in_range(&tenant, start, end))
        .await
        .map_err(|_| ApiError::timed_out(state.query_timeout))?
        .map_err(ApiError::from)
}

async fn services(State(state): State<Arc<JaegerState>>, headers: HeaderMap) -> Response {
    match traces(&state, &headers, 0, u64::MAX).await {
        Ok(traces) => {
            let names: BTreeSet<&str> = traces.iter().flatten().map(SpanData::service_name).collect();
            envelope(json!(names), names.len())
        }
        Err(e) => e.into(),
    }
}

const KINDS: [&str; 6] = ["unspecified", "internal", "server", "client", "producer", "consumer"];

async fn operations(
    State(state): State<Arc<JaegerState>>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    match traces(&state, &headers, 0, u64::MAX).await {
        Ok(traces) => {
            let names: BTreeSet<&str> = traces
                .iter()
                .flatten()
                .filter(|s| s.service_name() == service)
                .map(|s| s.span.name.as_str())
                .collect();
            envelope(json!(names), names.len())
        }
        Err(e) => e.into(),
    }
}

/// `/api/operations?service=&spanKind=`: operations with their span kind.
async fn operations_v2(
    State(state): State<Arc<JaegerState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params(raw);
    let Some(service) = params.get("service").cloned() else {
        return error(StatusCode::BAD_REQUEST, "parameter 'service' is required".into());
    };
    let kind = params.get("spanKind").cloned().unwrap_or_default();
    match traces(&state, &headers, 0, u64::MAX).await {
        Ok(traces) => {
            let ops: BTreeSet<(&str, &str)> = traces
                .iter()
                .flatten()
                .filter(|s| s.service_name() == service)
                .map(|s| (s.span.name.as_str(), KINDS.get(s.span.kind as usize).copied().unwrap_or("")))
                .filter(|(_, k)| kind.is_empty() || *k == kind)
                .collect();
            let data: Vec<Json_> =
                ops.iter().map(|(name, kind)| json!({ "name": name, "spanKind": kind })).collect();
            envelope(Json_::Array(data), ops.len())
        }
        Err(e) => e.into(),
    }
}

fn text_of(value: &AnyValue) -> String {
    match value.value.as_ref() {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

struct Search {
    service: Option<String>,
    operation: Option<String>,
    tags: Vec<(String, String)>,
    min_duration: Option<u64>,
    max_duration: Option<u64>,
    limit: usize,
    start: u64,
    end: u64,
}

impl Search {
    fn parse(params: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let tags = match params.get("tags").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Vec::new(),
            Some(text) => {
                let map: BTreeMap<String, Json_> = serde_json::from_str(text).map_err(|e| {
                    ApiError::bad(format!("malformed 'tags' parameter, want a JSON object of strings: {e}"))
                })?;
                map.into_iter()
                    .map(|(k, v)| match v {
                        Json_::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect()
            }
        };
        let duration = |key: &str| -> Result<Option<u64>, ApiError> {
            match params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(text) => duration_nanos(text).map(Some).ok_or_else(|| {
                    ApiError::bad(format!("cannot parse {key} `{text}`: want a duration such as 100ms"))
                }),
            }
        };
        let end = micros(params, "end")?.unwrap_or(u64::MAX);
        let start = match (micros(params, "start")?, params.get("lookback")) {
            (Some(start), _) => start,
            (None, Some(lookback)) if end != u64::MAX => {
                duration_nanos(lookback).map_or(0, |l| end.saturating_sub(l))
            }
            _ => 0,
        };
        let limit = match params.get("limit").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => 20,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| ApiError::bad(format!("invalid limit `{text}`: want 1 to 10000")))?,
        };
        Ok(Self {
            service: params.get("service").filter(|s| !s.is_empty()).cloned(),
            operation: params.get("operation").filter(|s| !s.is_empty()).cloned(),
            tags,
            min_duration: duration("minDuration")?,
            max_duration: duration("maxDuration")?,
            limit,
            start,
            end,
        })
    }

    fn matches_span(&self, span: &SpanData) -> bool {
        let attribute = |key: &str| -> Option<String> {
            let find = |attrs: &[KeyValue]| {
                attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).map(text_of)
            };
            find(&span.span.attributes).or_else(|| find(&span.resource.resource.attributes))
        };
        let duration = span.duration_nanos();
        self.service.as_deref().is_none_or(|s| span.service_name() == s)
            && self.operation.as_deref().is_none_or(|o| span.span.name == o)
            && self.min_duration.is_none_or(|min| duration >= min)
            && self.max_duration.is_none_or(|max| duration <= max)
            && self.tags.iter().all(|(k, v)| match k.as_str() {
                "error" => (span.span.status.as_ref().map_or(0, |s| s.code) == 2).to_string() == *v,
                "span.kind" => KINDS.get(span.span.kind as usize).is_some_and(|kind| kind == v),
                _ => attribute(k).as_deref() == Some(v.as_str()),
            })
    }
}

async fn find_traces(
    State(state): State<Arc<JaegerState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params(raw);
    let search = match Search::parse(&params) {
        Ok(search) => search,
        Err(e) => return e.into(),
    };
    if search.service.is_none() {
        return error(StatusCode::BAD_REQUEST, "parameter 'service' is required".into());
    }
    let traces = match traces(&state, &headers, search.start, search.end).await {
        Ok(traces) => traces,
        Err(e) => return e.into(),
    };
    let found: Vec<Json_> = traces
        .iter()
        .filter(|spans| spans.iter().any(|s| search.matches_span(s)))
        .take(search.limit)
        .map(|spans| trace_json(spans))
        .collect();
    let total = found.len();
    envelope(Json_::Array(found), total)
}

async fn get_trace(
    State(state): State<Arc<JaegerState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(trace_id) = parse_trace_id(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("cannot parse traceID `{id}`: want 1 to 32 hexadecimal digits"),
        );
    };
    let params = params(raw);
    let range = match (micros(&params, "start"), micros(&params, "end")) {
        (Ok(None), Ok(None)) => None,
        (Ok(start), Ok(end)) => Some((start.unwrap_or(0), end.unwrap_or(u64::MAX))),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let tenant = match tenant(&headers) {
        Ok(tenant) => tenant,
        Err(e) => return e.into(),
    };
    match state.store.trace(&tenant, trace_id, range).await {
        Ok(read) if read.spans.is_empty() => error(StatusCode::NOT_FOUND, "trace not found".into()),
        Ok(read) => envelope(json!([trace_json(&read.spans)]), 1),
        Err(e) => Response::from(ApiError::from(e)),
    }
}

fn tag_json(kv: &KeyValue) -> Json_ {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(i)) => json!({ "key": kv.key, "type": "int64", "value": i }),
        Some(Value::DoubleValue(d)) => json!({ "key": kv.key, "type": "float64", "value": d }),
        Some(Value::BoolValue(b)) => json!({ "key": kv.key, "type": "bool", "value": b }),
        Some(Value::StringValue(s)) => json!({ "key": kv.key, "type": "string", "value": s }),
        _ => {
            json!({ "key": kv.key, "type": "string", "value": kv.value.as_ref().map(text_of).unwrap_or_default() })
        }
    }
}

/// One trace in Jaeger's UI model: spans with `references`, `tags`, `logs` and a `processID`
/// into `processes` (one per distinct resource).
fn trace_json(spans: &[SpanData]) -> Json_ {
    let mut processes: Vec<Json_> = Vec::new();
    let mut process_ids: HashMap<*const crate::model::ResourceInfo, String> = HashMap::new();
    let mut out_spans = Vec::with_capacity(spans.len());
    for span in spans {
        let key = Arc::as_ptr(&span.resource);
        let process_id = process_ids
            .entry(key)
            .or_insert_with(|| {
                let id = format!("p{}", processes.len() + 1);
                let tags: Vec<Json_> = span
                    .resource
                    .resource
                    .attributes
                    .iter()
                    .filter(|kv| kv.key != "service.name")
                    .map(tag_json)
                    .collect();
                processes.push(json!({ "id": id, "serviceName": span.service_name(), "tags": tags }));
                id
            })
            .clone();
        let trace_id = hex(&span.trace_id());
        let mut references: Vec<Json_> = Vec::new();
        if let Some(parent) = span.parent_span_id() {
            references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&parent) }));
        }
        for link in &span.span.links {
            references.push(json!({ "refType": "FOLLOWS_FROM", "traceID": hex(&link.trace_id), "spanID": hex(&link.span_id) }));
        }
        let mut tags: Vec<Json_> = span.span.attributes.iter().map(tag_json).collect();
        if let Some(kind) = KINDS.get(span.span.kind as usize).filter(|k| **k != "unspecified") {
            tags.push(json!({ "key": "span.kind", "type": "string", "value": kind }));
        }
        match span.span.status.as_ref().map(|s| (s.code, s.message.as_str())) {
            Some((2, message)) => {
                tags.push(json!({ "key": "error", "type": "bool", "value": true }));
                tags.push(json!({ "key": "otel.status_code", "type": "string", "value": "ERROR" }));
                if !message.is_empty() {
                    tags.push(
                        json!({ "key": "otel.status_description", "type": "string", "value": message }),
                    );
                }
            }
            Some((1, _)) => tags.push(json!({ "key": "otel.status_code", "type": "string", "value": "OK" })),
            _ => {}
        }
        if !span.scope.scope.name.is_empty() {
            tags.push(json!({ "key": "otel.scope.name", "type": "string", "value": span.scope.scope.name }));
        }
        let logs: Vec<Json_> = span
            .span
            .events
            .iter()
            .map(|event| {
                let mut fields = vec![json!({ "key": "event", "type": "string", "value": event.name })];
                fields.extend(event.attributes.iter().map(tag_json));
                json!({ "timestamp": event.time_unix_nano / 1000, "fields": fields })
            })
            .collect();
        out_spans.push(json!({
            "traceID": trace_id,
            "spanID": hex(&span.span_id()),
            "operationName": span.span.name,
            "references": references,
            "flags": span.span.flags & 0xff,
            "startTime": span.span.start_time_unix_nano / 1000,
            "duration": span.duration_nanos() / 1000,
            "tags": tags,
            "logs": logs,
            "processID": process_id,
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Json_> =
        processes.into_iter().map(|p| (p["id"].as_str().unwrap_or_default().to_string(), p)).collect();
    json!({
        "traceID": spans.first().map(|s| hex(&s.trace_id())).unwrap_or_default(),
        "spans": out_spans,
        "processes": processes,
        "warnings": null,
    })
}

async fn dependencies(
    State(state): State<Arc<JaegerState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params(raw);
    let millis = |key: &str| -> Result<Option<u64>, ApiError> {
        match params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("invalid {key} `{text}`: want milliseconds"))),
        }
    };
    let (end, lookback) = match (millis("endTs"), millis("lookback")) {
        (Ok(end), Ok(lookback)) => (end.unwrap_or(u64::MAX), lookback),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let start = lookback.map_or(0, |l| end.saturating_sub(l));
    let traces = match traces(&state, &headers, start, end).await {
        Ok(traces) => traces,
        Err(e) => return e.into(),
    };
    // A call between services is a span whose parent belongs to another service.
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for spans in &traces {
        let services: HashMap<[u8; 8], &str> =
            spans.iter().map(|s| (s.span_id(), s.service_name())).collect();
        for span in spans {
            if let Some(parent) = span.parent_span_id().and_then(|p| services.get(&p))
                && *parent != span.service_name()
            {
                *calls.entry(((*parent).to_string(), span.service_name().to_string())).or_default() += 1;
            }
        }
    }
    let data: Vec<Json_> = calls
        .into_iter()
        .map(|((parent, child), count)| json!({ "parent": parent, "child": child, "callCount": count }))
        .collect();
    let total = data.len();
    envelope(Json_::Array(data), total)
}
