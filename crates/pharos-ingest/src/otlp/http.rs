//! OTLP/HTTP: POST `/v1/traces`, `/v1/metrics` and `/v1/logs`, protobuf or JSON, optionally gzip
//! or zstd. Answers follow the OTLP specification: the response uses the request's content type,
//! errors carry a `google.rpc.Status`, and only 429 and 503 (with `Retry-After`) invite a retry.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use pharos_core::Signal;
use prost::Message;

use super::{Ingestor, OtlpRequest, Outcome, encode_response};
use crate::{
    IngestError, TENANT_HEADER,
    body::{Compression, DISCARD_LIMIT, decompress, read_body},
    tenant_from_header,
};

/// Bodies above this size are decoded off the async runtime.
const BLOCKING_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long a client may take to send its body; then 408.
    pub request_timeout: Duration,
    /// The `Retry-After` sent with 429 and 503.
    pub retry_after: Duration,
}

struct HttpState {
    ingestor: Arc<Ingestor>,
    options: HttpOptions,
}

pub fn router(ingestor: Arc<Ingestor>, options: HttpOptions) -> Router {
    let state = Arc::new(HttpState { ingestor, options });
    Router::new()
        .route("/v1/traces", post(handle::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(handle::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(handle::<ExportLogsServiceRequest>))
        .with_state(state)
}

/// `POST /otlp/v1/logs`: the OTLP/HTTP logs endpoint on the path Loki serves it, for senders
/// pointed at a Loki base URL. Mounted with the Loki push route ([`crate::loki::router`]).
pub(crate) fn loki_otlp_logs_router(ingestor: Arc<Ingestor>, options: HttpOptions) -> Router {
    let state = Arc::new(HttpState { ingestor, options });
    Router::new().route("/otlp/v1/logs", post(handle::<ExportLogsServiceRequest>)).with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

fn format_of(headers: &HeaderMap) -> Result<Format, IngestError> {
    let raw = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = raw.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedContentType(raw.unwrap_or("(none)").to_string())),
    }
}

async fn handle<R: OtlpRequest>(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let started = Instant::now();
    let format = format_of(request.headers());
    // The protocol names of the OTLP exporters: http/protobuf, http/json.
    let protocol = match &format {
        Ok(Format::Protobuf) => "http/protobuf",
        Ok(Format::Json) => "http/json",
        Err(_) => "http",
    };
    let reply_format = *format.as_ref().unwrap_or(&Format::Json);
    let result = match format {
        Ok(format) => receive::<R>(&state, format, request).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(o) if o.rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    state.ingestor.metrics().request(R::SIGNAL, protocol, outcome, started.elapsed().as_secs_f64());
    match result {
        Ok(o) => success(reply_format, &o),
        Err(e) => {
            tracing::debug!(error = %e, signal = %R::SIGNAL, "otlp http export refused");
            error_response(reply_format, &e, state.options.retry_after)
        }
    }
}

async fn receive<R: OtlpRequest>(
    state: &HttpState,
    format: Format,
    request: Request,
) -> Result<Outcome, IngestError> {
    let (parts, body) = request.into_parts();
    let tenant = tenant_from_header(parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))?;
    let metadata = state.ingestor.metadata(|name| parts.headers.get(name).map(|v| v.as_bytes()));
    let compression = Compression::from_header(
        parts.headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("(not text)")),
    )?;
    let limit = state.ingestor.limits().max_body_size;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DISCARD_LIMIT as u64) {
        return Err(IngestError::BodyTooLarge { limit });
    }
    let timeout = state.options.request_timeout;
    let body = tokio::time::timeout(timeout, read_body(body, limit))
        .await
        .map_err(|_| IngestError::BodyTimeout { secs: timeout.as_secs_f64() })??;
    let ingestor = state.ingestor.clone();
    let big = body.len() > BLOCKING_BODY_BYTES || compression != Compression::None;
    let t = tenant.clone();
    let work = move || {
        let body = decompress(body, compression, ingestor.limits().max_decompressed_size)?;
        match format {
            Format::Protobuf => ingestor.prepare_encoded(R::SIGNAL, &t, &metadata, body).map(|p| (p, None)),
            Format::Json => {
                let req: R = serde_json::from_slice(&body)?;
                let warning = (req.items() == 0).then(|| snake_case_warning::<R>(&body)).flatten();
                ingestor.prepare(&t, &metadata, req).map(|p| (p, warning))
            }
        }
    };
    let (prepared, warning) = if big {
        tokio::task::spawn_blocking(work).await.map_err(|e| IngestError::ReadBody(e.to_string()))??
    } else {
        work()?
    };
    let mut outcome = state.ingestor.commit(prepared).await?;
    if outcome.message.is_none() {
        outcome.message = warning;
    }
    Ok(outcome)
}

/// OTLP/JSON keys are lowerCamelCase; snake_case keys are unknown fields and ignored, so such a
/// request arrives empty. Say so (as a warning: partial success with nothing rejected).
fn snake_case_warning<R: OtlpRequest>(body: &[u8]) -> Option<String> {
    let (snake, camel) = match R::SIGNAL {
        Signal::Traces => ("\"resource_spans\"", "resourceSpans"),
        Signal::Metrics => ("\"resource_metrics\"", "resourceMetrics"),
        Signal::Logs => ("\"resource_logs\"", "resourceLogs"),
    };
    body.windows(snake.len()).any(|w| w == snake.as_bytes()).then(|| {
        format!(
            "the request holds no {}: OTLP/JSON keys are lowerCamelCase ({camel}); snake_case keys are unknown fields and were ignored",
            R::SIGNAL.item_name()
        )
    })
}

fn success(format: Format, o: &Outcome) -> Response {
    let body = match format {
        Format::Protobuf => encode_response(o),
        Format::Json => json_response(o),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

fn json_response(o: &Outcome) -> Vec<u8> {
    let value = match &o.message {
        None => serde_json::json!({}),
        Some(message) => {
            let field = match o.signal {
                Signal::Traces => "rejectedSpans",
                Signal::Metrics => "rejectedDataPoints",
                Signal::Logs => "rejectedLogRecords",
            };
            // OTLP/JSON writes int64 as a decimal string.
            serde_json::json!({ "partialSuccess": { field: o.rejected.to_string(), "errorMessage": message } })
        }
    };
    value.to_string().into_bytes()
}

/// An error as OTLP/HTTP reports it: the status the error's code maps to and a `google.rpc.Status`
/// body in the request's format; `Retry-After` when a retry can succeed.
fn error_response(format: Format, e: &IngestError, retry_after: Duration) -> Response {
    let code = e.code();
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = e.public_message();
    let body = match format {
        Format::Protobuf => {
            tonic_types::pb::Status { code: code.grpc_code(), message, details: Vec::new() }.encode_to_vec()
        }
        Format::Json => {
            serde_json::json!({ "code": code.grpc_code(), "message": message }).to_string().into_bytes()
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if code.retryable() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
    }
    if code == pharos_core::ErrorCode::Timeout {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
