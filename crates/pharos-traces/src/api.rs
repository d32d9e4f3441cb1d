//! The Tempo HTTP API, as Grafana's Tempo data source calls it.
//!
//! - `GET /api/echo` (the data source's health check) and `/api/status/buildinfo`;
//! - `GET /api/traces/{id}` (`{"batches": [...]}`) and `/api/v2/traces/{id}`
//!   (`{"trace": {"resourceSpans": [...]}, "status": "COMPLETE"|"PARTIAL", "message"}`), with
//!   optional `start`/`end` in unix seconds; with `Accept: application/protobuf` the v1 body is
//!   OTLP `TracesData` and the v2 body Tempo's `TraceByIDResponse` (its field 1 a `TracesData`);
//! - `GET /api/search` with `q` (TraceQL) or the older `tags` (logfmt), `minDuration`,
//!   `maxDuration`, and `limit`, `spss`, `start`, `end`;
//! - `GET /api/search/tags`, `/api/v2/search/tags?scope=…`, `/api/search/tag/{tag}/values`,
//!   `/api/v2/search/tag/{tag}/values`.
//!
//! - `GET /api/metrics/query_range` and `/api/metrics/query`: TraceQL metrics (`rate()`,
//!   `count_over_time()`, `quantile_over_time()`, … `by (…)`), `start`/`end` in unix seconds
//!   or nanoseconds (or `since`, a duration back from now), `step` as a duration or seconds.
//!
//! The tenant comes from `X-Scope-OrgID` (absent: `default`). Errors are plain text with
//! Tempo's status codes: 400 for bad parameters and queries (TraceQL errors name the line and
//! column), 404 for an unknown trace, 504 when a query runs past `traces.query_timeout`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::TracesData,
};
use pharos_core::Tenant;
use prost::Message;
use serde_json::{Value as Json_, json};

use crate::{
    model::{SpanData, TraceId, hex, parse_trace_id, traces_data},
    query::{self, Evaluator, MetricsEvaluator, Value},
    store::{StoreError, TraceStore},
};

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The longest a search or tag listing may run.
    pub query_timeout: Duration,
    /// The most traces one search may return.
    pub max_limit: usize,
    /// The most distinct values a tag-values answer holds.
    pub max_tag_values: usize,
    /// The version reported by `/api/status/buildinfo`.
    pub version: &'static str,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            query_timeout: Duration::from_secs(30),
            max_limit: 10_000,
            max_tag_values: 10_000,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

struct ApiState {
    store: Arc<TraceStore>,
    options: ApiOptions,
}

/// The Tempo API routes.
pub fn router(store: Arc<TraceStore>, options: ApiOptions) -> Router {
    let state = Arc::new(ApiState { store, options });
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{tag}/values", get(tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tag_values_v2))
        .route("/api/metrics/query_range", get(metrics_query_range))
        .route("/api/metrics/query", get(metrics_query_instant))
        .with_state(state)
}

/// An API error: a status and a plain-text message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }

    pub(crate) fn timed_out(timeout: Duration) -> Self {
        timed_out(timeout)
    }

    /// The status and the message.
    pub(crate) fn parts(self) -> (StatusCode, String) {
        (self.0, self.1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1 + "\n").into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooManySpans { .. } => Self(StatusCode::BAD_REQUEST, e.to_string()),
            e => Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

pub(crate) fn tenant(headers: &HeaderMap) -> Result<Tenant, ApiError> {
    match headers.get("x-scope-orgid") {
        None => Ok(Tenant::default_tenant()),
        Some(v) => Tenant::parse(String::from_utf8_lossy(v.as_bytes()).trim())
            .map_err(|e| ApiError::bad(format!("X-Scope-OrgID: {e}"))),
    }
}

/// Query parameters, decoded; repeated keys keep the last value.
pub(crate) fn params(raw: Option<String>) -> BTreeMap<String, String> {
    form_urlencoded(raw.as_deref().unwrap_or(""))
}

fn form_urlencoded(raw: &str) -> BTreeMap<String, String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `start`/`end` parameter in unix seconds, as nanoseconds.
fn seconds_param(params: &BTreeMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    match params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .map(Some)
            .ok_or_else(|| ApiError::bad(format!("invalid {key} `{text}`: want unix seconds"))),
    }
}

fn time_range(params: &BTreeMap<String, String>) -> Result<(u64, u64), ApiError> {
    let start = seconds_param(params, "start")?.unwrap_or(0);
    // `end` is a whole second: include everything in it.
    let end = seconds_param(params, "end")?.map_or(u64::MAX, |e| e.saturating_add(999_999_999));
    if start > end {
        return Err(ApiError::bad("invalid start and end: start is after end"));
    }
    Ok((start, end))
}

fn usize_param(
    params: &BTreeMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(0) => Ok(default),
            Ok(n) if n <= max => Ok(n),
            Ok(_) => Err(ApiError::bad(format!("{key} `{text}` is more than the maximum {max}"))),
            Err(_) => Err(ApiError::bad(format!("invalid {key} `{text}`: want a positive integer"))),
        },
    }
}

async fn buildinfo(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    Json(json!({
        "version": state.options.version,
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept.contains("application/protobuf") || accept.contains("application/x-protobuf")
    })
}

async fn read_trace(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    raw: Option<String>,
) -> Result<(crate::store::TraceRead, TraceId), ApiError> {
    let tenant = tenant(headers)?;
    let trace_id = parse_trace_id(id).ok_or_else(|| {
        ApiError::bad(format!(
            "invalid trace id `{id}`: want 1 to 32 hexadecimal digits (a 128-bit or 64-bit id)"
        ))
    })?;
    let params = params(raw);
    let range = match (seconds_param(&params, "start")?, seconds_param(&params, "end")?) {
        (None, None) => None,
        (start, end) => Some((start.unwrap_or(0), end.map_or(u64::MAX, |e| e.saturating_add(999_999_999)))),
    };
    let read = state.store.trace(&tenant, trace_id, range).await?;
    Ok((read, trace_id))
}

async fn trace_v1(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (read, _) = read_trace(&state, &headers, &id, raw).await?;
    if read.spans.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("trace not found: {id}")));
    }
    let data = traces_data(&read.spans);
    if wants_protobuf(&headers) {
        return Ok(([(header::CONTENT_TYPE, "application/protobuf")], data.encode_to_vec()).into_response());
    }
    let batches = serde_json::to_value(&data.resource_spans).map_err(internal)?;
    Ok(Json(json!({ "batches": batches })).into_response())
}

/// Tempo's `TraceByIDResponse`, for the v2 protobuf answer.
#[derive(Clone, PartialEq, Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<TraceByIdMetrics>,
    /// 0 COMPLETE, 1 PARTIAL.
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, Message)]
struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    inspected_bytes: u64,
}

async fn trace_v2(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (read, _) = read_trace(&state, &headers, &id, raw).await?;
    if read.spans.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("trace not found: {id}")));
    }
    let data = traces_data(&read.spans);
    let (status, message) = if read.truncated {
        (
            1,
            format!(
                "trace exceeds the maximum of {} spans (traces.max_trace_spans); the first {} spans by start time are returned",
                state.store.options().max_trace_spans,
                read.spans.len()
            ),
        )
    } else {
        (0, String::new())
    };
    if wants_protobuf(&headers) {
        let response = TraceByIdResponse { trace: Some(data), metrics: None, status, message };
        return Ok(
            ([(header::CONTENT_TYPE, "application/protobuf")], response.encode_to_vec()).into_response()
        );
    }
    let resource_spans = serde_json::to_value(&data.resource_spans).map_err(internal)?;
    let mut body = json!({
        "trace": { "resourceSpans": resource_spans },
        "metrics": {},
        "status": if status == 0 { "COMPLETE" } else { "PARTIAL" },
    });
    if !message.is_empty() {
        body["message"] = json!(message);
    }
    Ok(Json(body).into_response())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Builds the TraceQL query of a search: `q` as given, or the older `tags`, `minDuration`
/// and `maxDuration` parameters turned into one.
fn search_query(params: &BTreeMap<String, String>) -> Result<String, ApiError> {
    if let Some(q) = params.get("q").filter(|q| !q.trim().is_empty()) {
        return Ok(q.clone());
    }
    let mut conditions = Vec::new();
    if let Some(tags) = params.get("tags") {
        for (key, value) in logfmt(tags).map_err(|e| ApiError::bad(format!("invalid tags: {e}")))? {
            let value_literal = if value.parse::<i64>().is_ok() { value.clone() } else { quote(&value) };
            let condition = match key.as_str() {
                "name" => format!("name = {}", quote(&value)),
                "status.code" | "status" => match value.as_str() {
                    "error" | "ok" | "unset" => format!("status = {value}"),
                    _ => {
                        return Err(ApiError::bad(format!(
                            "invalid tags: status `{value}`: want error, ok or unset"
                        )));
                    }
                },
                _ => format!(".{} = {value_literal}", quote_attribute(&key)),
            };
            conditions.push(condition);
        }
    }
    let mut query =
        if conditions.is_empty() { "{ }".to_string() } else { format!("{{ {} }}", conditions.join(" && ")) };
    let mut trace_conditions = Vec::new();
    for (key, op) in [("minDuration", ">="), ("maxDuration", "<=")] {
        if let Some(d) = params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if !is_go_duration(d) {
                return Err(ApiError::bad(format!(
                    "invalid {key} `{d}`: want a duration such as 100ms or 1.5s"
                )));
            }
            trace_conditions.push(format!("traceDuration {op} {d}"));
        }
    }
    if !trace_conditions.is_empty() {
        query = format!("{query} && {{ {} }}", trace_conditions.join(" && "));
    }
    Ok(query)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_attribute(key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')) {
        key.to_string()
    } else {
        quote(key)
    }
}

fn is_go_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// Parses logfmt: `key=value key2="quoted value"`.
fn logfmt(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` has no value (want key=value)"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn attributes_json(attributes: &[(String, Value)]) -> Json_ {
    let attributes: Vec<KeyValue> = attributes
        .iter()
        .map(|(k, v)| KeyValue { key: k.clone(), value: Some(v.to_any_value()), ..KeyValue::default() })
        .collect();
    serde_json::to_value(attributes).unwrap_or_default()
}

fn root_of(spans: &[SpanData]) -> Option<&SpanData> {
    spans.iter().find(|s| s.is_root())
}

async fn search(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let params = params(raw);
    let text = search_query(&params)?;
    let query = query::parse(&text).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
    if query.metrics.is_some() {
        return Err(ApiError::bad("invalid TraceQL query: a metrics query goes to /api/metrics/query_range"));
    }
    let evaluator =
        Evaluator::new(&query).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
    let limit = usize_param(&params, "limit", 20, state.options.max_limit)?;
    let spss = usize_param(&params, "spss", 3, 100_000)?;
    let (start, end) = time_range(&params)?;
    let started = Instant::now();
    let deadline = started + state.options.query_timeout;
    let timeout = state.options.query_timeout;
    let read = tokio::time::timeout(timeout, search_read(&state.store, &tenant, &query, start, end))
        .await
        .map_err(|_| timed_out(timeout))??;
    let (traces, inspected_spans) = (read.traces, read.inspected_spans);
    let inspected_traces = traces.len();
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        for spans in &traces {
            if Instant::now() > deadline {
                return Err(timed_out(timeout));
            }
            let spansets = evaluator.evaluate(spans);
            if spansets.is_empty() {
                continue;
            }
            found.push(trace_json(spans, &spansets, spss));
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    })
    .await
    .map_err(internal)??;
    Ok(Json(json!({
        "traces": found,
        "metrics": {
            "inspectedTraces": inspected_traces,
            "inspectedSpans": inspected_spans.to_string(),
            "completedJobs": 1,
            "totalJobs": 1,
        },
    }))
    .into_response())
}

/// The traces of the range that `query` may match: pruned by its prefilter, spans read
/// light when the query needs only the dedicated columns.
async fn search_read(
    store: &TraceStore,
    tenant: &Tenant,
    query: &query::Query,
    start: u64,
    end: u64,
) -> Result<crate::store::SearchRead, ApiError> {
    let prefilter = query::Prefilter::new(query)
        .map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?
        .map(Arc::new);
    Ok(store.search_traces(tenant, start, end, prefilter, crate::store::is_light(query)).await?)
}

fn timed_out(timeout: Duration) -> ApiError {
    ApiError(
        StatusCode::GATEWAY_TIMEOUT,
        format!("the query ran longer than {} (traces.query_timeout)", humanize(timeout)),
    )
}

fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

fn trace_json(spans: &[SpanData], spansets: &[query::Spanset], spss: usize) -> Json_ {
    let first = spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0);
    let last = spans.iter().map(|s| s.span.end_time_unix_nano).max().unwrap_or(0);
    let root = root_of(spans);
    let spansets: Vec<Json_> = spansets
        .iter()
        .map(|set| {
            let matched: Vec<Json_> = set
                .spans
                .iter()
                .take(spss)
                .map(|m| {
                    let span = &spans[m.index];
                    let mut j = json!({
                        "spanID": hex(&span.span_id()),
                        "name": span.span.name,
                        "startTimeUnixNano": span.span.start_time_unix_nano.to_string(),
                        "durationNanos": span.duration_nanos().to_string(),
                    });
                    if !m.attributes.is_empty() {
                        j["attributes"] = attributes_json(&m.attributes);
                    }
                    j
                })
                .collect();
            let mut j = json!({ "spans": matched, "matched": set.matched });
            if !set.attributes.is_empty() {
                j["attributes"] = attributes_json(&set.attributes);
            }
            j
        })
        .collect();
    let mut j = json!({
        "traceID": hex(&spans.first().map(SpanData::trace_id).unwrap_or_default()),
        "rootServiceName": root.map_or("<root span not yet received>", |r| r.service_name()),
        "rootTraceName": root.map_or("", |r| r.span.name.as_str()),
        "startTimeUnixNano": first.to_string(),
        "durationMs": (last.saturating_sub(first)) / 1_000_000,
    });
    if let Some(first_set) = spansets.first() {
        j["spanSet"] = first_set.clone();
    }
    j["spanSets"] = Json_::Array(spansets);
    j
}

/// The intrinsics Tempo lists under the `intrinsic` scope.
const INTRINSICS: &[&str] = &[
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "link:spanID",
    "link:traceID",
    "name",
    "rootName",
    "rootServiceName",
    "span:id",
    "span:parentID",
    "status",
    "statusMessage",
    "trace:id",
    "traceDuration",
];

#[derive(Default)]
struct TagNames {
    resource: BTreeSet<String>,
    span: BTreeSet<String>,
    event: BTreeSet<String>,
    link: BTreeSet<String>,
    instrumentation: BTreeSet<String>,
}

/// The spans of the traces in range, or of the spans a TraceQL `q` selects.
async fn spans_for_tags(
    state: &ApiState,
    tenant: &Tenant,
    params: &BTreeMap<String, String>,
) -> Result<Vec<Vec<SpanData>>, ApiError> {
    let (start, end) = time_range(params)?;
    let timeout = state.options.query_timeout;
    let traces = tokio::time::timeout(timeout, state.store.traces_in_range(tenant, start, end))
        .await
        .map_err(|_| timed_out(timeout))??;
    let Some(q) = params.get("q").filter(|q| !q.trim().is_empty() && q.trim() != "{}") else {
        return Ok(traces);
    };
    let query = query::parse(q).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
    let evaluator =
        Evaluator::new(&query).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for spans in traces {
            let sets = evaluator.evaluate(&spans);
            let keep: BTreeSet<usize> = sets.iter().flat_map(|s| s.spans.iter().map(|m| m.index)).collect();
            if !keep.is_empty() {
                out.push(keep.into_iter().map(|i| spans[i].clone()).collect());
            }
        }
        out
    })
    .await
    .map_err(internal)
}

fn collect_names(traces: &[Vec<SpanData>]) -> TagNames {
    let mut names = TagNames::default();
    let mut last_resource: Option<*const crate::model::ResourceInfo> = None;
    for span in traces.iter().flatten() {
        if last_resource != Some(Arc::as_ptr(&span.resource)) {
            names.resource.extend(span.resource.resource.attributes.iter().map(|kv| kv.key.clone()));
            names.instrumentation.extend(span.scope.scope.attributes.iter().map(|kv| kv.key.clone()));
            last_resource = Some(Arc::as_ptr(&span.resource));
        }
        names.span.extend(span.span.attributes.iter().map(|kv| kv.key.clone()));
        for event in &span.span.events {
            names.event.extend(event.attributes.iter().map(|kv| kv.key.clone()));
        }
        for link in &span.span.links {
            names.link.extend(link.attributes.iter().map(|kv| kv.key.clone()));
        }
    }
    names
}

async fn tags_v1(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let params = params(raw);
    let names = collect_names(&spans_for_tags(&state, &tenant, &params).await?);
    let all: BTreeSet<String> = names.resource.into_iter().chain(names.span).collect();
    Ok(Json(json!({ "tagNames": all })).into_response())
}

async fn tags_v2(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let params = params(raw);
    let scope = params.get("scope").map(String::as_str).unwrap_or("").trim().to_string();
    let known = ["", "all", "resource", "span", "intrinsic", "event", "link", "instrumentation"];
    if !known.contains(&scope.as_str()) {
        return Err(ApiError::bad(format!(
            "invalid scope `{scope}`: want resource, span, intrinsic, event, link or instrumentation"
        )));
    }
    let names = collect_names(&spans_for_tags(&state, &tenant, &params).await?);
    let mut scopes = Vec::new();
    let wanted = |s: &str| scope.is_empty() || scope == "all" || scope == s;
    for (name, tags) in [
        ("resource", names.resource),
        ("span", names.span),
        ("event", names.event),
        ("link", names.link),
        ("instrumentation", names.instrumentation),
    ] {
        if wanted(name) {
            scopes.push(json!({ "name": name, "tags": tags }));
        }
    }
    if wanted("intrinsic") {
        scopes.push(json!({ "name": "intrinsic", "tags": INTRINSICS }));
    }
    Ok(Json(json!({ "scopes": scopes })).into_response())
}

/// The values of one tag: `(type, value)` pairs, sorted, distinct.
fn collect_values(
    traces: &[Vec<SpanData>],
    tag: &str,
    max: usize,
) -> Result<BTreeSet<(&'static str, String)>, ApiError> {
    // A v2 tag is scoped (`resource.service.name`, `span.http.method`, `.x`) or an intrinsic.
    let (scopes, key): (&[&str], &str) = if let Some(k) = tag.strip_prefix("resource.") {
        (&["resource"], k)
    } else if let Some(k) = tag.strip_prefix("span.") {
        (&["span"], k)
    } else if let Some(k) = tag.strip_prefix("event.") {
        (&["event"], k)
    } else if let Some(k) = tag.strip_prefix("link.") {
        (&["link"], k)
    } else if let Some(k) = tag.strip_prefix("instrumentation.") {
        (&["instrumentation"], k)
    } else if let Some(k) = tag.strip_prefix('.') {
        (&["span", "resource"], k)
    } else if INTRINSICS.contains(&tag) {
        (&["intrinsic"], tag)
    } else {
        (&["span", "resource"], tag)
    };
    let mut values = BTreeSet::new();
    let mut push = |v: Option<(&'static str, String)>| {
        if let Some(v) = v
            && values.len() < max
        {
            values.insert(v);
        }
    };
    for span in traces.iter().flatten() {
        for scope in scopes {
            match *scope {
                "resource" => push(find(&span.resource.resource.attributes, key)),
                "span" => push(find(&span.span.attributes, key)),
                "instrumentation" => push(find(&span.scope.scope.attributes, key)),
                "event" => span.span.events.iter().for_each(|e| push(find(&e.attributes, key))),
                "link" => span.span.links.iter().for_each(|l| push(find(&l.attributes, key))),
                _ => push(intrinsic_value(span, key)),
            }
        }
    }
    Ok(values)
}

fn find(attributes: &[KeyValue], key: &str) -> Option<(&'static str, String)> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    typed(value)
}

fn typed(value: &AnyValue) -> Option<(&'static str, String)> {
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => ("string", s.clone()),
        any_value::Value::IntValue(i) => ("int", i.to_string()),
        any_value::Value::DoubleValue(d) => ("float", d.to_string()),
        any_value::Value::BoolValue(b) => ("bool", b.to_string()),
        _ => return None,
    })
}

fn intrinsic_value(span: &SpanData, name: &str) -> Option<(&'static str, String)> {
    const KINDS: [&str; 6] = ["unspecified", "internal", "server", "client", "producer", "consumer"];
    const STATUSES: [&str; 3] = ["unset", "ok", "error"];
    Some(match name {
        "name" => ("string", span.span.name.clone()),
        "kind" => ("keyword", KINDS.get(usize::try_from(span.span.kind).ok()?)?.to_string()),
        "status" => (
            "keyword",
            STATUSES.get(usize::try_from(span.span.status.as_ref().map_or(0, |s| s.code)).ok()?)?.to_string(),
        ),
        "statusMessage" => ("string", span.span.status.as_ref()?.message.clone()).clone(),
        "rootServiceName" if span.is_root() => ("string", span.service_name().to_string()),
        "rootName" if span.is_root() => ("string", span.span.name.clone()),
        "event:name" => ("string", span.span.events.first()?.name.clone()),
        "instrumentation:name" => ("string", span.scope.scope.name.clone()),
        "instrumentation:version" => ("string", span.scope.scope.version.clone()),
        _ => return None,
    })
}

async fn tag_values_v1(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let params = params(raw);
    let traces = spans_for_tags(&state, &tenant, &params).await?;
    let values = collect_values(&traces, &tag, state.options.max_tag_values)?;
    let plain: BTreeSet<String> = values.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({ "tagValues": plain })).into_response())
}

async fn tag_values_v2(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let params = params(raw);
    let traces = spans_for_tags(&state, &tenant, &params).await?;
    let values = collect_values(&traces, &tag, state.options.max_tag_values)?;
    let typed: Vec<Json_> = values.into_iter().map(|(t, v)| json!({ "type": t, "value": v })).collect();
    Ok(Json(json!({ "tagValues": typed, "metrics": {} })).into_response())
}

/// A metrics time: unix seconds (integer or fractional) or, when large, nanoseconds.
fn metrics_time(params: &BTreeMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) else { return Ok(None) };
    let invalid = || ApiError::bad(format!("invalid {key} `{text}`: want unix seconds or nanoseconds"));
    if let Ok(n) = text.parse::<u64>() {
        // Nanoseconds since 1970 pass 1e15 in 1970-01-12; seconds will not reach it for ages.
        return Ok(Some(if n >= 1_000_000_000_000_000 {
            n
        } else {
            n.checked_mul(1_000_000_000).ok_or_else(invalid)?
        }));
    }
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some((secs * 1e9) as u64)),
        _ => Err(invalid()),
    }
}

pub(crate) fn duration_nanos(text: &str) -> Option<u64> {
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0).then_some((secs * 1e9) as u64);
    }
    if !is_go_duration(text) {
        return None;
    }
    // `1m30s`, `1.5s`, `100ms`: numbers each followed by a unit.
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, nanos) =
            [("ns", 1e0), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
                .into_iter()
                .find(|(u, _)| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))?;
        total += value * nanos;
        rest = &rest[unit.len()..];
    }
    (total >= 1.0).then_some(total as u64)
}

/// The time range and step of a metrics query.
fn metrics_range(params: &BTreeMap<String, String>, instant: bool) -> Result<(u64, u64, u64), ApiError> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            as u64;
    let since =
        match params.get("since").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(duration_nanos(text).ok_or_else(|| {
                ApiError::bad(format!("invalid since `{text}`: want a duration such as 1h"))
            })?),
        };
    let end = metrics_time(params, "end")?.unwrap_or(now);
    let start = match metrics_time(params, "start")? {
        Some(start) => start,
        None => end.saturating_sub(since.unwrap_or(3600 * 1_000_000_000)),
    };
    if start >= end {
        return Err(ApiError::bad("invalid start and end: start must be before end"));
    }
    let step = if instant {
        end - start
    } else {
        match params.get("step").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(text) => duration_nanos(text).ok_or_else(|| {
                ApiError::bad(format!("invalid step `{text}`: want a duration such as 30s, or seconds"))
            })?,
            // About 100 points, in whole seconds.
            None => ((end - start) / 100).max(1_000_000_000) / 1_000_000_000 * 1_000_000_000,
        }
    };
    Ok((start, end, step))
}

async fn run_metrics_query(
    state: &ApiState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    instant: bool,
) -> Result<Vec<query::MetricSeries>, ApiError> {
    let tenant = tenant(headers)?;
    let text = params
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::bad("missing q: a TraceQL metrics query"))?;
    let parsed = query::parse(text).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
    if parsed.metrics.is_none() {
        return Err(ApiError::bad(
            "invalid TraceQL query: not a metrics query (add e.g. `| rate()`); searches go to /api/search",
        ));
    }
    let (start, end, step) = metrics_range(params, instant)?;
    let evaluator = if instant {
        MetricsEvaluator::instant(&parsed, start..end)
    } else {
        MetricsEvaluator::new(&parsed, start..end, step)
    };
    let mut evaluator = evaluator.map_err(|e| ApiError::bad(e.to_string()))?;
    let timeout = state.options.query_timeout;
    let deadline = Instant::now() + timeout;
    let traces = tokio::time::timeout(timeout, search_read(&state.store, &tenant, &parsed, start, end))
        .await
        .map_err(|_| timed_out(timeout))??
        .traces;
    tokio::task::spawn_blocking(move || {
        for spans in &traces {
            if Instant::now() > deadline {
                return Err(timed_out(timeout));
            }
            evaluator
                .add_trace(spans)
                .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        }
        Ok(evaluator.finish())
    })
    .await
    .map_err(internal)?
}

fn series_labels(series: &query::MetricSeries) -> (Json_, String) {
    let prom: Vec<String> = series.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    (attributes_json(&series.labels), format!("{{{}}}", prom.join(", ")))
}

async fn metrics_query_range(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(raw);
    let series = run_metrics_query(&state, &headers, &params, false).await?;
    let series: Vec<Json_> = series
        .iter()
        .map(|s| {
            let (labels, prom) = series_labels(s);
            let samples: Vec<Json_> = s
                .samples
                .iter()
                .map(|(ms, v)| json!({ "timestampMs": ms.to_string(), "value": v }))
                .collect();
            json!({ "labels": labels, "samples": samples, "promLabels": prom })
        })
        .collect();
    Ok(Json(json!({ "series": series, "metrics": {} })).into_response())
}

async fn metrics_query_instant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(raw);
    let series = run_metrics_query(&state, &headers, &params, true).await?;
    let series: Vec<Json_> = series
        .iter()
        .map(|s| {
            let (labels, prom) = series_labels(s);
            let value = s.samples.last().map_or(0.0, |(_, v)| *v);
            json!({ "labels": labels, "value": value, "promLabels": prom })
        })
        .collect();
    Ok(Json(json!({ "series": series, "metrics": {} })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn legacy_search_parameters_become_traceql() {
        let q = search_query(&p(&[
            ("tags", r#"service.name=api http.status_code=500 name="GET /x""#),
            ("minDuration", "100ms"),
            ("maxDuration", "1.5s"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            r#"{ .service.name = "api" && .http.status_code = 500 && name = "GET /x" } && { traceDuration >= 100ms && traceDuration <= 1.5s }"#
        );
        query::parse(&q).unwrap();
        assert_eq!(search_query(&p(&[])).unwrap(), "{ }");
        assert!(search_query(&p(&[("minDuration", "1s } || { true")])).is_err());
        assert!(search_query(&p(&[("tags", "novalue")])).is_err());
        assert_eq!(search_query(&p(&[("q", "{ name = \"x\" }")])).unwrap(), "{ name = \"x\" }");
    }

    #[test]
    fn query_strings_decode() {
        let params = form_urlencoded("q=%7B%20.a%20%3D%201%20%7D&limit=5&x=a+b&bad=%zz&end=%4");
        assert_eq!(params["q"], "{ .a = 1 }");
        assert_eq!(params["x"], "a b");
        assert_eq!(params["bad"], "%zz");
        assert_eq!(params["end"], "%4");
    }

    #[test]
    fn metrics_ranges() {
        let (start, end, step) =
            metrics_range(&p(&[("start", "1700000000"), ("end", "1700003600"), ("step", "1m")]), false)
                .unwrap();
        assert_eq!(
            (start, end, step),
            (1_700_000_000_000_000_000, 1_700_003_600_000_000_000, 60_000_000_000)
        );
        let (start, _, step) =
            metrics_range(&p(&[("start", "1700000000000000000"), ("end", "1700000060.5")]), false).unwrap();
        assert_eq!((start, step), (1_700_000_000_000_000_000, 1_000_000_000));
        let (start, end, _) = metrics_range(&p(&[("since", "15m")]), true).unwrap();
        assert_eq!(end - start, 900_000_000_000);
        assert!(metrics_range(&p(&[("step", "fast")]), false).is_err());
        assert!(metrics_range(&p(&[("start", "10"), ("end", "5")]), false).is_err());
        assert_eq!(duration_nanos("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_nanos("15"), Some(15_000_000_000));
    }

    #[test]
    fn go_durations() {
        for ok in ["1s", "100ms", "1.5s", "1m30s", "2h", "10us", "5ns"] {
            assert!(is_go_duration(ok), "{ok}");
        }
        for bad in ["", "s", "1", "1x", "1s }", "-1s"] {
            assert!(!is_go_duration(bad), "{bad}");
        }
    }
}
