//! The Loki HTTP API, as Grafana's Loki data source calls it.
//!
//! Times are accepted as nanosecond epochs (integers), float seconds or RFC3339; stream values
//! come back as `["<ns string>", "line"]` and matrix points as `[float seconds, "value"]`.
//! Errors are plain text with Loki's status codes (400 for a bad query or parameter and for a
//! query over a limit, 504 for a timeout, 500 for storage failures).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{
        Path, RawQuery, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use pharos_core::{ErrorCode, Tenant};
use serde_json::{Value as Json, json};

use crate::model::Labels;
use crate::query::{
    self, Direction, EvalError, Expr, Limits, LogStream, Matcher, QueryValue, Stats, evaluate_instant,
    evaluate_range, select_logs,
};
use crate::store::{LogStore, StoreError, StoreSource};

/// The API's limits.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub query_timeout: Duration,
    /// Bytes of log lines one query may read.
    pub max_query_bytes: u64,
    /// The most entries a log query may ask for (`limit`).
    pub max_entries: usize,
    /// The most series a metric query may return.
    pub max_series: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            query_timeout: Duration::from_secs(60),
            max_query_bytes: 10 << 30,
            max_entries: 5000,
            max_series: 500,
        }
    }
}

struct ApiState {
    store: Arc<LogStore>,
    options: ApiOptions,
}

/// The Loki API routes under `/loki/api/v1`.
pub fn router(store: Arc<LogStore>, options: ApiOptions) -> Router {
    let state = Arc::new(ApiState { store, options });
    let v1 = Router::new()
        .route("/query", get(query_instant).post(query_instant))
        .route("/query_range", get(query_range).post(query_range))
        .route("/labels", get(labels).post(labels))
        .route("/label", get(labels))
        .route("/label/{name}/values", get(label_values).post(label_values))
        .route("/series", get(series).post(series))
        .route("/index/stats", get(index_stats).post(index_stats))
        .route("/index/volume", get(volume).post(volume))
        .route("/index/volume_range", get(volume_range).post(volume_range))
        .route("/detected_labels", get(detected_labels))
        .route("/detected_fields", get(detected_fields))
        .route("/detected_field/{name}/values", get(detected_field_values))
        .route("/patterns", get(patterns))
        .route("/tail", get(tail))
        .route("/status/buildinfo", get(buildinfo));
    Router::new().nest("/loki/api/v1", v1).with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors and parameters.

/// An answer other than success: a status and a plain-text message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1 + "\n").into_response()
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput | ErrorCode::TooLarge | ErrorCode::UnsupportedMediaType => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable | ErrorCode::Throttled => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        if e.is_execution() {
            return Self(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        }
        Self(status_of(e.code()), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Source(e) => Self::bad(e.0),
            e => Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

fn tenant(headers: &HeaderMap) -> Result<Tenant, ApiError> {
    match headers.get("x-scope-orgid") {
        None => Ok(Tenant::default_tenant()),
        Some(v) => Tenant::parse(String::from_utf8_lossy(v.as_bytes()).trim())
            .map_err(|e| ApiError::bad(format!("X-Scope-OrgID: {e}"))),
    }
}

/// The request's parameters: the URL query, then a form body (POST); repeated keys kept.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(method: &Method, headers: &HeaderMap, raw: Option<String>, body: &[u8]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad(format!("invalid query string: {e}")))?;
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if method == Method::POST && form && !body.is_empty() {
            let body: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::bad(format!("invalid form body: {e}")))?;
            pairs.extend(body);
        }
        Ok(Self(pairs))
    }

    /// The last non-empty value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == key && !v.trim().is_empty()).map(|(_, v)| v.trim())
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key).map(|text| parse_time(text).ok_or_else(|| invalid_time(key, text))).transpose()
    }

    /// `start` and `end`, defaulting to the last hour; `start` must not be after `end`.
    fn range(&self) -> Result<(i64, i64), ApiError> {
        let end = self.time("end")?.unwrap_or_else(now_nanos);
        let start = match self.time("start")? {
            Some(start) => start,
            None => match self.get("since") {
                Some(text) => end.saturating_sub(parse_duration(text).ok_or_else(|| {
                    ApiError::bad(format!("invalid since {text:?}: want a duration such as 1h"))
                })?),
                None => end.saturating_sub(3_600_000_000_000),
            },
        };
        if end < start {
            return Err(ApiError::bad("the query time range is invalid: end is before start"));
        }
        Ok((start, end))
    }

    fn limit(&self, options: &ApiOptions, default: usize) -> Result<usize, ApiError> {
        let Some(text) = self.get("limit") else { return Ok(default) };
        let limit: usize = text
            .parse()
            .map_err(|_| ApiError::bad(format!("invalid limit {text:?}: want a positive integer")))?;
        if limit == 0 {
            return Err(ApiError::bad("limit must be a positive value"));
        }
        if limit > options.max_entries {
            return Err(ApiError::bad(format!(
                "max entries limit per query exceeded, limit > max_entries_limit ({limit} > {}) (logs.max_entries)",
                options.max_entries
            )));
        }
        Ok(limit)
    }

    fn direction(&self) -> Result<Direction, ApiError> {
        match self.get("direction").map(str::to_ascii_lowercase).as_deref() {
            None | Some("backward") => Ok(Direction::Backward),
            Some("forward") => Ok(Direction::Forward),
            Some(other) => {
                Err(ApiError::bad(format!("invalid direction {other:?}: want forward or backward")))
            }
        }
    }

    fn query(&self) -> Result<Expr, ApiError> {
        let text = self.get("query").ok_or_else(|| ApiError::bad("missing query: a LogQL query"))?;
        query::parse(text).map_err(|e| ApiError::bad(e.to_string()))
    }

    /// The matchers of an optional `query` that must be a bare stream selector (label look-ups);
    /// `{}` (which Grafana sends for "every stream") is none.
    fn selector(&self, key: &str) -> Result<Option<Vec<Matcher>>, ApiError> {
        self.get(key)
            .filter(|text| text.split_whitespace().collect::<String>() != "{}")
            .map(selector)
            .transpose()
    }
}

fn selector(text: &str) -> Result<Vec<Matcher>, ApiError> {
    let expr = query::parse(text).map_err(|e| ApiError::bad(e.to_string()))?;
    // A log query's pipeline does not narrow which streams exist: use its selector.
    match expr {
        Expr::Log(log) => Ok(log.selector.matchers),
        Expr::Metric(_) => Err(ApiError::bad(format!("{text:?} is not a stream selector"))),
    }
}

fn invalid_time(key: &str, text: &str) -> ApiError {
    ApiError::bad(format!(
        "invalid {key} {text:?}: want nanoseconds since the epoch, float seconds or RFC3339"
    ))
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64
}

/// An integer is nanoseconds since the epoch, or seconds when it has at most 10 digits (as
/// Loki reads it); a float is seconds; anything else RFC3339.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        let digits = text.trim_start_matches(['-', '+']).len();
        return if digits <= 10 { n.checked_mul(1_000_000_000) } else { Some(n) };
    }
    if let Ok(secs) = text.parse::<f64>() {
        let ns = secs * 1e9;
        return (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns.round() as i64);
    }
    let (secs, nanos) = pharos_core::time::parse_rfc3339(text)?;
    secs.checked_mul(1_000_000_000)?.checked_add(i64::from(nanos))
}

/// `30s`, `1m30s`, `250ms` or float seconds, to nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<f64>() {
        let ns = secs * 1e9;
        return (0.0..9.2e18).contains(&ns).then_some(ns.round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 7.0 * 86_400e9,
            "y" => 365.0 * 86_400e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let ns = value * unit;
        if !ns.is_finite() || ns >= 9.2e18 {
            return None;
        }
        total = total.checked_add(ns as i64)?;
    }
    Some(total)
}

fn success(data: Json) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

fn labels_json(labels: &Labels) -> Json {
    Json::Object(labels.iter().map(|(k, v)| (k.to_string(), Json::String(v.to_string()))).collect())
}

/// Seconds as Loki prints them in matrix and vector points: a float number.
fn seconds(ns: i64) -> Json {
    let s = ns as f64 / 1e9;
    serde_json::Number::from_f64(s).map_or(Json::Null, Json::Number)
}

/// A sample value as Prometheus and Loki print it: a string, `NaN`, `+Inf` and `-Inf` included.
fn value_text(v: f64) -> Json {
    Json::String(if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        let mut s = format!("{v}");
        if s.ends_with(".0") {
            s.truncate(s.len() - 2);
        }
        s
    })
}

// ---------------------------------------------------------------------------------------------
// Queries.

async fn run<T: Send + 'static>(
    state: &Arc<ApiState>,
    tenant: Tenant,
    work: impl FnOnce(&StoreSource, &Limits) -> Result<T, EvalError> + Send + 'static,
) -> Result<T, ApiError> {
    let limits = Limits {
        max_series: state.options.max_series,
        max_bytes_scanned: state.options.max_query_bytes,
        deadline: Some(Instant::now() + state.options.query_timeout),
        max_entries: state.options.max_entries,
    };
    let source = StoreSource::new(
        state.store.clone(),
        tenant,
        tokio::runtime::Handle::current(),
        state.options.max_query_bytes,
    );
    let timeout = state.options.query_timeout;
    let task = tokio::task::spawn_blocking(move || work(&source, &limits));
    // Past the deadline the evaluator stops by itself; the timer is for a read that does not.
    match tokio::time::timeout(timeout + Duration::from_secs(1), task).await {
        Ok(Ok(Err(EvalError::Timeout))) | Err(_) => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("query timed out: it took longer than {timeout:?} (logs.query_timeout)"),
        )),
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(e)) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}"))),
    }
}

fn stats_json(stats: &Stats, elapsed: Duration) -> Json {
    let secs = elapsed.as_secs_f64().max(1e-9);
    json!({
        "summary": {
            "bytesProcessedPerSecond": (stats.bytes_processed as f64 / secs) as u64,
            "linesProcessedPerSecond": (stats.lines_processed as f64 / secs) as u64,
            "totalBytesProcessed": stats.bytes_processed,
            "totalLinesProcessed": stats.lines_processed,
            "totalEntriesReturned": stats.entries_returned,
            "totalPostFilterLines": stats.entries_returned,
            "totalStructuredMetadataBytesProcessed": 0,
            "execTime": elapsed.as_secs_f64(),
            "queueTime": 0,
            "subqueries": 0,
            "splits": 0,
            "shards": 0,
        },
        "querier": { "store": { "totalChunksRef": 0, "totalChunksDownloaded": 0 } },
        "ingester": { "totalReached": 0, "totalChunksMatched": 0, "totalBatches": 0, "totalLinesSent": 0 },
        "cache": {},
    })
}

fn streams_json(streams: &[LogStream]) -> Json {
    Json::Array(
        streams
            .iter()
            .map(|s| {
                let values: Vec<Json> =
                    s.entries.iter().map(|e| json!([e.timestamp.to_string(), e.line])).collect();
                json!({ "stream": labels_json(&s.labels), "values": values })
            })
            .collect(),
    )
}

fn value_json(value: &QueryValue) -> Json {
    match value {
        QueryValue::Streams(streams) => json!({ "resultType": "streams", "result": streams_json(streams) }),
        QueryValue::Vector(samples) => json!({
            "resultType": "vector",
            "result": samples
                .iter()
                .map(|s| json!({ "metric": labels_json(&s.labels), "value": [seconds(s.timestamp), value_text(s.value)] }))
                .collect::<Vec<_>>(),
        }),
        QueryValue::Scalar(v) => {
            json!({ "resultType": "scalar", "result": [seconds(now_nanos()), value_text(*v)] })
        }
        QueryValue::Matrix(series) => json!({
            "resultType": "matrix",
            "result": series
                .iter()
                .map(|s| json!({
                    "metric": labels_json(&s.labels),
                    "values": s.points.iter().map(|(t, v)| json!([seconds(*t), value_text(*v)])).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>(),
        }),
    }
}

fn answer(value: QueryValue, stats: &Stats, elapsed: Duration) -> Response {
    let mut data = value_json(&value);
    data["stats"] = stats_json(stats, elapsed);
    success(data)
}

/// The default step of a range query: about 250 points, at least a second.
fn default_step(start: i64, end: i64) -> i64 {
    (((end - start) / 250) / 1_000_000_000).max(1) * 1_000_000_000
}

async fn query_range(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(&method, &headers, raw, &body)?;
    let tenant = tenant(&headers)?;
    let expr = params.query()?;
    let (start, end) = params.range()?;
    let started = Instant::now();
    match expr {
        Expr::Log(log) => {
            let limit = params.limit(&state.options, 100)?;
            let direction = params.direction()?;
            // The end is inclusive in Loki's query_range for logs only when start == end.
            let end = if end == start { end + 1 } else { end };
            let (streams, stats) = run(&state, tenant, move |source, limits| {
                select_logs(&log, source, start, end, direction, limit, limits)
            })
            .await?;
            Ok(answer(QueryValue::Streams(streams), &stats, started.elapsed()))
        }
        expr @ Expr::Metric(_) => {
            let step = match params.get("step") {
                Some(text) => parse_duration(text).filter(|&s| s > 0).ok_or_else(|| {
                    ApiError::bad(format!(
                        "invalid step {text:?}: want a positive duration such as 15s, or seconds"
                    ))
                })?,
                None => default_step(start, end),
            };
            if (end - start) / step > 11_000 {
                return Err(ApiError::bad(
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
                ));
            }
            let (value, stats) = run(&state, tenant, move |source, limits| {
                evaluate_range(&expr, source, start, end, step, limits)
            })
            .await?;
            Ok(answer(value, &stats, started.elapsed()))
        }
    }
}

async fn query_instant(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(&method, &headers, raw, &body)?;
    let tenant = tenant(&headers)?;
    let expr = params.query()?;
    if expr.is_log() {
        return Err(ApiError::bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        ));
    }
    let time = params.time("time")?.unwrap_or_else(now_nanos);
    let started = Instant::now();
    let (value, stats) =
        run(&state, tenant, move |source, limits| evaluate_instant(&expr, source, time, limits)).await?;
    Ok(answer(value, &stats, started.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// Labels, series and the index.

macro_rules! params {
    ($method:ident, $headers:ident, $raw:ident, $body:ident) => {
        Params::new(&$method, &$headers, $raw, &$body)?
    };
}

async fn labels(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params!(method, headers, raw, body);
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let names = match params.selector("query")? {
        None => state.store.label_names(&tenant, start, end + 1)?,
        Some(matchers) => state
            .store
            .streams(&tenant, &[matchers], start, end + 1)?
            .keys()
            .flat_map(|l| l.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
            .collect(),
    };
    Ok(success(json!(names)))
}

async fn label_values(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params!(method, headers, raw, body);
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let matchers = params.selector("query")?;
    let values = state.store.label_values(&tenant, &name, matchers.as_deref(), start, end + 1)?;
    Ok(success(json!(values)))
}

async fn series(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params!(method, headers, raw, body);
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let selectors: Vec<Vec<Matcher>> = params
        .all("match[]")
        .chain(params.all("match"))
        .filter(|s| !s.trim().is_empty())
        .map(selector)
        .collect::<Result<_, _>>()?;
    let streams = state.store.streams(&tenant, &selectors, start, end + 1)?;
    Ok(success(Json::Array(streams.keys().map(labels_json).collect())))
}

/// The stream selector of `query` (required) for the index endpoints.
fn required_selector(params: &Params) -> Result<Vec<Matcher>, ApiError> {
    params
        .selector("query")?
        .ok_or_else(|| ApiError::bad("missing query: a stream selector such as {app=\"api\"}"))
}

async fn index_stats(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params!(method, headers, raw, body);
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let matchers = required_selector(&params)?;
    let streams = state.store.streams(&tenant, &[matchers], start, end + 1)?;
    let (mut chunks, mut entries, mut bytes) = (0, 0, 0);
    for s in streams.values() {
        chunks += s.chunks;
        entries += s.entries;
        bytes += s.bytes;
    }
    Ok(axum::Json(json!({ "streams": streams.len(), "chunks": chunks, "entries": entries, "bytes": bytes }))
        .into_response())
}

/// Bytes per group of streams: by `targetLabels` when given, else by the selector's label
/// names. (`aggregateBy=labels` is not supported: groups are always label sets.)
fn volumes(
    state: &ApiState,
    tenant: &Tenant,
    params: &Params,
    start: i64,
    end: i64,
) -> Result<Vec<(Labels, u64)>, ApiError> {
    let matchers = required_selector(params)?;
    let target: Vec<String> = match params.get("targetLabels") {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => matchers.iter().map(|m| m.name.clone()).collect(),
    };
    let limit: usize = match params.get("limit") {
        Some(text) => text.parse().map_err(|_| ApiError::bad(format!("invalid limit {text:?}")))?,
        None => 100,
    };
    let streams = state.store.streams(tenant, &[matchers], start, end + 1)?;
    let mut groups: BTreeMap<Labels, u64> = BTreeMap::new();
    for (labels, stats) in &streams {
        let key =
            Labels::new(target.iter().filter_map(|n| labels.get(n).map(|v| (n.clone(), v.to_string()))));
        *groups.entry(key).or_default() += stats.bytes;
    }
    let mut out: Vec<(Labels, u64)> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(limit.max(1));
    Ok(out)
}

async fn volume(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params!(method, headers, raw, body);
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let groups = volumes(&state, &tenant, &params, start, end)?;
    let result: Vec<Json> = groups
        .iter()
        .map(|(labels, bytes)| json!({ "metric": labels_json(labels), "value": [seconds(end), bytes.to_string()] }))
        .collect();
    Ok(success(json!({ "resultType": "vector", "result": result })))
}

async fn volume_range(
    State(state): State<Arc<ApiState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params!(method, headers, raw, body);
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let step = match params.get("step") {
        Some(text) => parse_duration(text)
            .filter(|&s| s > 0)
            .ok_or_else(|| ApiError::bad(format!("invalid step {text:?}")))?,
        None => default_step(start, end),
    };
    if (end - start) / step > 11_000 {
        return Err(ApiError::bad("exceeded maximum resolution of 11,000 points per timeseries"));
    }
    // One volume per step window (t - step, t].
    let mut series: BTreeMap<Labels, Vec<Json>> = BTreeMap::new();
    let mut t = start;
    while t <= end {
        for (labels, bytes) in volumes(&state, &tenant, &params, t - step + 1, t)? {
            series.entry(labels).or_default().push(json!([seconds(t), bytes.to_string()]));
        }
        t += step;
    }
    let result: Vec<Json> = series
        .iter()
        .map(|(labels, values)| json!({ "metric": labels_json(labels), "values": values }))
        .collect();
    Ok(success(json!({ "resultType": "matrix", "result": result })))
}

// ---------------------------------------------------------------------------------------------
// What Grafana probes: detected labels and fields, patterns, build info.

/// Labels internal to Loki that Grafana hides.
const HIDDEN_LABELS: &[&str] = &["__aggregated_metric__", "__tenant_id__", "__stream_shard__"];

async fn detected_labels(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::new(&Method::GET, &headers, raw, &[])?;
    let tenant = tenant(&headers)?;
    let (start, end) = params.range()?;
    let selectors: Vec<Vec<Matcher>> = params.selector("query")?.into_iter().collect();
    let streams = state.store.streams(&tenant, &selectors, start, end + 1)?;
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for labels in streams.keys() {
        for (k, v) in labels.iter() {
            if !HIDDEN_LABELS.contains(&k) {
                values.entry(k.to_string()).or_default().insert(v.to_string());
            }
        }
    }
    let detected: Vec<Json> =
        values.iter().map(|(k, v)| json!({ "label": k, "cardinality": v.len() })).collect();
    Ok(axum::Json(json!({ "detectedLabels": detected })).into_response())
}

/// A field's values seen in a sample of lines, and how it was found.
#[derive(Default)]
struct Field {
    values: BTreeSet<String>,
    kinds: BTreeSet<&'static str>,
    parsers: BTreeSet<&'static str>,
}

/// The kind Loki reports for a value: int, float, boolean, duration, bytes or string.
fn value_kind(v: &str) -> &'static str {
    if v.parse::<i64>().is_ok() {
        "int"
    } else if v.parse::<f64>().is_ok() {
        "float"
    } else if v == "true" || v == "false" {
        "boolean"
    } else if parse_duration(v).is_some() && v.ends_with(|c: char| c.is_ascii_alphabetic()) {
        "duration"
    } else {
        "string"
    }
}

/// Fields of a line: a JSON object's top-level scalar keys, else logfmt `key=value` pairs.
fn line_fields(line: &str) -> (Vec<(String, String)>, &'static str) {
    let trimmed = line.trim_start();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<Json>(trimmed)
    {
        let fields = map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Json::String(s) => Some((k, s)),
                Json::Number(n) => Some((k, n.to_string())),
                Json::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect();
        return (fields, "json");
    }
    let mut fields = Vec::new();
    for token in line.split_whitespace() {
        if let Some((k, v)) = token.split_once('=')
            && !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            fields.push((k.to_string(), v.trim_matches('"').to_string()));
        }
    }
    (fields, "logfmt")
}

/// The fields of up to `line_limit` of the newest lines the query selects.
async fn sample_fields(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    params: &Params,
) -> Result<BTreeMap<String, Field>, ApiError> {
    let tenant = tenant(headers)?;
    let (start, end) = params.range()?;
    let text = params.get("query").unwrap_or("{}");
    let expr = query::parse(text).map_err(|e| ApiError::bad(e.to_string()))?;
    let Expr::Log(log) = expr else {
        return Err(ApiError::bad("detected fields need a log query"));
    };
    let line_limit: usize = match params.get("line_limit") {
        Some(t) => t.parse().map_err(|_| ApiError::bad(format!("invalid line_limit {t:?}")))?,
        None => 1000,
    }
    .min(state.options.max_entries);
    let (streams, _) = run(state, tenant, move |source, limits| {
        select_logs(&log, source, start, end + 1, Direction::Backward, line_limit, limits)
    })
    .await?;
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    for stream in &streams {
        for entry in &stream.entries {
            let (found, parser) = line_fields(&entry.line);
            for (k, v) in found {
                if stream.labels.get(&k).is_some() {
                    continue;
                }
                let field = fields.entry(k).or_default();
                field.kinds.insert(value_kind(&v));
                field.parsers.insert(parser);
                field.values.insert(v);
            }
            for (k, v) in &entry.metadata {
                let field = fields.entry(k.clone()).or_default();
                field.kinds.insert(value_kind(v));
                field.values.insert(v.clone());
            }
        }
    }
    Ok(fields)
}

async fn detected_fields(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::new(&Method::GET, &headers, raw, &[])?;
    let field_limit: usize = match params.get("field_limit").or(params.get("limit")) {
        Some(t) => t.parse().map_err(|_| ApiError::bad(format!("invalid field_limit {t:?}")))?,
        None => 1000,
    };
    let fields = sample_fields(&state, &headers, &params).await?;
    let detected: Vec<Json> = fields
        .iter()
        .take(field_limit)
        .map(|(name, f)| {
            let kind = if f.kinds.len() == 1 {
                f.kinds.iter().next().copied().unwrap_or("string")
            } else {
                "string"
            };
            let parsers: Option<Vec<&str>> =
                (!f.parsers.is_empty()).then(|| f.parsers.iter().copied().collect());
            json!({ "label": name, "type": kind, "cardinality": f.values.len(), "parsers": parsers })
        })
        .collect();
    Ok(axum::Json(json!({ "fields": detected, "limit": field_limit })).into_response())
}

async fn detected_field_values(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::new(&Method::GET, &headers, raw, &[])?;
    let limit: usize = match params.get("limit") {
        Some(t) => t.parse().map_err(|_| ApiError::bad(format!("invalid limit {t:?}")))?,
        None => 1000,
    };
    let fields = sample_fields(&state, &headers, &params).await?;
    let values: Vec<&String> =
        fields.get(&name).map(|f| f.values.iter().take(limit).collect()).unwrap_or_default();
    Ok(axum::Json(json!({ "values": values, "limit": limit })).into_response())
}

/// How far back a tail looks again on each poll for entries that arrived late (their
/// timestamps older than the last poll's end); what it already sent there is not sent again.
const TAIL_LOOKBACK_NS: i64 = 10_000_000_000;

/// `GET /loki/api/v1/tail` (WebSocket): the entries of a log query as they arrive, one JSON frame
/// `{"streams": [...], "dropped_entries": null}` per poll (every second) with new entries.
/// `delay_for` (0 to 5 seconds) holds entries back that long; `start` (default an hour ago)
/// and `limit` (default 100 per frame) bound the first frame.
async fn tail(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let params = Params::new(&Method::GET, &headers, raw, &[])?;
    let tenant = tenant(&headers)?;
    let Expr::Log(log) = params.query()? else {
        return Err(ApiError::bad("tail needs a log query, not a metric query"));
    };
    let delay_for: i64 = match params.get("delay_for") {
        None => 0,
        Some(text) => {
            text.parse().map_err(|_| ApiError::bad(format!("invalid delay_for {text:?}: want seconds")))?
        }
    };
    if !(0..=5).contains(&delay_for) {
        return Err(ApiError::bad("delay_for can't be greater than 5 (or negative)"));
    }
    let limit = params.limit(&state.options, 100)?;
    let start = params.time("start")?.unwrap_or_else(|| now_nanos() - 3_600_000_000_000);
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    Ok(ws.on_upgrade(move |socket| {
        tail_loop(state, tenant, log, delay_for * 1_000_000_000, limit, start, socket)
    }))
}

async fn tail_loop(
    state: Arc<ApiState>,
    tenant: Tenant,
    log: crate::query::LogQuery,
    delay: i64,
    limit: usize,
    start: i64,
    mut socket: WebSocket,
) {
    let log = Arc::new(log);
    // Entries sent whose time is within the lookback: (time, labels, line).
    let mut sent: BTreeSet<(i64, String, String)> = BTreeSet::new();
    // Everything before `covered` was read (and sent); the lookback reads its tail again.
    let mut covered = start;
    loop {
        let until = now_nanos() - delay;
        let from = covered.min(until - TAIL_LOOKBACK_NS).max(start);
        if until > from {
            let query = log.clone();
            let found = run(&state, tenant.clone(), move |source, limits| {
                select_logs(&query, source, from, until, Direction::Forward, limit, limits)
            })
            .await;
            let streams = match found {
                Ok((streams, _)) => streams,
                Err(e) => {
                    let _ = socket.send(Message::Close(None)).await;
                    tracing::warn!(error = %e.1, "a log tail query failed; the tail is closed");
                    return;
                }
            };
            let returned: usize = streams.iter().map(|s| s.entries.len()).sum();
            let newest = streams.iter().flat_map(|s| s.entries.iter().map(|e| e.timestamp)).max();
            let mut frame = Vec::new();
            for mut stream in streams {
                let key = stream.labels.to_string();
                stream.entries.retain(|e| sent.insert((e.timestamp, key.clone(), e.line.clone())));
                if !stream.entries.is_empty() {
                    frame.push(stream);
                }
            }
            if !frame.is_empty() {
                let body = json!({ "streams": streams_json(&frame), "dropped_entries": null });
                if socket.send(Message::Text(body.to_string().into())).await.is_err() {
                    return;
                }
            }
            // At the limit the rest of the range comes next poll, from the newest entry read.
            covered = match newest {
                Some(newest) if returned >= limit => newest,
                _ => until,
            };
            let horizon = covered.min(until - TAIL_LOOKBACK_NS);
            sent.retain(|(t, _, _)| *t >= horizon);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Log patterns need a pattern ingester, which Pharos does not have: the answer is empty
/// (Grafana then shows no patterns tab content) rather than an error.
async fn patterns() -> Response {
    success(json!([]))
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_nanoseconds_float_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000000000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000), "10 digits: seconds");
        assert_eq!(parse_time("2023-11-14T22:13:20.000000001Z"), Some(1_700_000_000_000_000_001));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn durations_are_go_style_or_seconds() {
        assert_eq!(parse_duration("60000ms"), Some(60_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("15"), Some(15_000_000_000));
        assert_eq!(parse_duration("0.5"), Some(500_000_000));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn values_print_as_prometheus_prints_them() {
        assert_eq!(value_text(3.0), "3");
        assert_eq!(value_text(0.25), "0.25");
        assert_eq!(value_text(f64::NAN), "NaN");
        assert_eq!(value_text(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn fields_come_from_json_or_logfmt_lines() {
        let (fields, parser) = line_fields(r#"{"level":"info","took":12,"ok":true,"nested":{"a":1}}"#);
        assert_eq!(parser, "json");
        assert_eq!(fields.len(), 3);
        let (fields, parser) = line_fields(r#"level=warn msg="slow" duration=1.5s"#);
        assert_eq!(parser, "logfmt");
        assert_eq!(fields[0], ("level".to_string(), "warn".to_string()));
        assert_eq!(value_kind("1.5s"), "duration");
        assert_eq!(value_kind("12"), "int");
        assert_eq!(value_kind("warn"), "string");
    }
}
