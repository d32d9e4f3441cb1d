//! Loki push: POST `/loki/api/v1/push`, and Loki's OTLP logs path `/otlp/v1/logs`.
//!
//! A push is snappy-compressed protobuf (`application/x-protobuf`, block format, the declared
//! decompressed length checked against the limit before anything is allocated; the default when
//! no content type is given, as in Loki) or JSON (`application/json`, optionally gzip or zstd):
//! `{"streams":[{"stream":{"app":"x"},"values":[["<unix ns as a string>","line",{"k":"v"}]]}]}`.
//! Other content types get 415.
//!
//! Each stream's labels (the JSON object, or the protobuf's selector string
//! `{app="api", env="prod"}`) are checked against the limits, labels with an empty value are
//! dropped (an empty value means "no such label", as in Prometheus and LogQL), the rest sorted by
//! name and written back canonically (`{a="1", b="2"}`, Go-quoted values, see
//! [`pharos_core::loki::format_labels`]). Streams with the same canonical labels are merged; all
//! entries of a stream go to the partition its canonical labels string hashes to. Entries keep
//! their timestamp, line and structured metadata. The queue records are
//! [`PayloadFormat::LokiPush`] envelopes holding a `PushRequest`, one per partition.
//!
//! **Partial writes, as in Loki.** Loki's distributor validates stream by stream and entry by
//! entry, pushes what is valid and then answers 400 with the validation error (grafana/loki#6384
//! makes that error the answer when the push itself succeeds; grafana/loki#13674 drops the streams
//! whose every entry failed and keeps the rest). Pharos does the same: a stream whose labels are
//! invalid is refused with all its entries, an over-long line only its own entry, and the valid
//! rest is made durable before the answer, 400 with `N of M log records rejected; the first
//! because: …`. When nothing is valid the answer is 400 and nothing is written. Errors of the
//! request as a whole (a body that does not decode, such as a numeric JSON timestamp, a body over
//! a size limit, too many entries) refuse everything. Success is 204 with an empty body; queue
//! back-pressure is 503 with `Retry-After` (the ingest error mapping every receiver uses).

use std::{collections::HashMap, fmt, sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
    routing::post,
};
use bytes::Bytes;
use pharos_core::{
    PartitionKey, PayloadFormat, Signal, Tenant, fnv1a,
    loki::{Entry, LabelPair, PushRequest, Stream, Timestamp, format_labels, parse_labels},
    partition_of,
};
use prost::Message;
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

use crate::{
    IngestError, Ingestor, Limits, TENANT_HEADER,
    body::{Compression, DISCARD_LIMIT, decompress, read_body},
    otlp::{
        Outcome, Prepared, Rejections, encode_envelope,
        http::{HttpOptions, loki_otlp_logs_router},
        now_unix_nanos,
        validate::Violation,
    },
    remote_write::unsnappy,
    tenant_from_header,
};

/// The push path.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// How much of a labels string an error message shows.
const SHOWN_LABELS_CHARS: usize = 120;

struct LokiState {
    ingestor: Arc<Ingestor>,
    options: HttpOptions,
}

/// The Loki push route and the OTLP logs alias, for the OTLP/HTTP port and the API port alike.
pub fn router(ingestor: Arc<Ingestor>, options: HttpOptions) -> Router {
    let state = Arc::new(LokiState { ingestor: ingestor.clone(), options: options.clone() });
    Router::new()
        .route(PUSH_PATH, post(handle))
        .with_state(state)
        .merge(loki_otlp_logs_router(ingestor, options))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

fn format_of(headers: &HeaderMap) -> Result<Format, IngestError> {
    // Loki's default, as for its own clients, is snappy protobuf.
    let Some(raw) = headers.get(header::CONTENT_TYPE) else { return Ok(Format::Protobuf) };
    let raw = raw.to_str().unwrap_or("(not text)");
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedContentType(raw.to_string())),
    }
}

/// The `Content-Encoding` on top of the format: a protobuf body is snappy in any case, so
/// `snappy` there means nothing more.
fn compression_of(headers: &HeaderMap, format: Format) -> Result<Compression, IngestError> {
    let value = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("(not text)"));
    if format == Format::Protobuf && value.is_some_and(|v| v.trim().eq_ignore_ascii_case("snappy")) {
        return Ok(Compression::None);
    }
    Compression::from_header(value)
}

async fn handle(State(state): State<Arc<LokiState>>, request: Request) -> Response {
    let started = Instant::now();
    let format = format_of(request.headers());
    let protocol = match &format {
        Ok(Format::Protobuf) => "loki_push_protobuf",
        Ok(Format::Json) => "loki_push_json",
        Err(_) => "loki_push",
    };
    let result = match format {
        Ok(format) => receive(&state, format, request).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(o) if o.rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    state.ingestor.metrics().request(Signal::Logs, protocol, outcome, started.elapsed().as_secs_f64());
    match result {
        Ok(o) if o.rejected > 0 => {
            response(StatusCode::BAD_REQUEST, o.message.unwrap_or_default(), &state.options)
        }
        Ok(_) => response(StatusCode::NO_CONTENT, String::new(), &state.options),
        Err(e) => {
            tracing::debug!(error = %e, "loki push refused");
            let status =
                StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = response(status, e.public_message(), &state.options);
            if e.code() == pharos_core::ErrorCode::Timeout {
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    }
}

/// A plain-text answer, as Loki gives; `Retry-After` when the queue pushed back.
fn response(status: StatusCode, message: String, options: &HttpOptions) -> Response {
    let mut r = if message.is_empty() {
        Response::new(Body::empty())
    } else {
        let mut r = Response::new(Body::from(message + "\n"));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    *r.status_mut() = status;
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(options.retry_after.as_secs().max(1)));
    }
    r
}

async fn receive(state: &LokiState, format: Format, request: Request) -> Result<Outcome, IngestError> {
    let (parts, body) = request.into_parts();
    let tenant = tenant_from_header(parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))?;
    let compression = compression_of(&parts.headers, format)?;
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
    // Decompression, decoding and validation are CPU work: off the async runtime.
    let work = move || prepare(&ingestor, &tenant, format, compression, body);
    let prepared =
        tokio::task::spawn_blocking(work).await.map_err(|e| IngestError::ReadBody(e.to_string()))??;
    state.ingestor.commit(prepared).await
}

/// One stream of a request, decoded but not yet checked.
struct Incoming {
    /// The label pairs as sent, or why the labels string does not parse.
    labels: Result<Vec<(String, String)>, Violation>,
    entries: Vec<Entry>,
}

/// Decodes a push body into streams.
fn decode(
    format: Format,
    compression: Compression,
    body: Bytes,
    limits: &Limits,
) -> Result<Vec<Incoming>, IngestError> {
    match format {
        Format::Protobuf => {
            let body = match compression {
                Compression::None => body,
                other => decompress(body, other, limits.max_decompressed_size)?,
            };
            let raw = unsnappy(&body, limits.max_decompressed_size)?;
            let request = PushRequest::decode(&raw[..])?;
            Ok(request
                .streams
                .into_iter()
                .map(|s| Incoming {
                    labels: parse_labels(&s.labels).map_err(|e| Violation {
                        reason: "invalid_labels",
                        message: format!("invalid labels string {}: {e}", shown(&s.labels)),
                    }),
                    entries: s.entries,
                })
                .collect())
        }
        Format::Json => {
            let body = decompress(body, compression, limits.max_decompressed_size)?;
            let request: JsonPush = serde_json::from_slice(&body)?;
            Ok(request
                .streams
                .into_iter()
                .map(|s| Incoming {
                    labels: Ok(s.stream.0),
                    entries: s.values.into_iter().map(JsonEntry::into_entry).collect(),
                })
                .collect())
        }
    }
}

/// The CPU-bound half of a push: decode, count, validate, normalise, split and encode.
fn prepare(
    ingestor: &Ingestor,
    tenant: &Tenant,
    format: Format,
    compression: Compression,
    body: Bytes,
) -> Result<Prepared, IngestError> {
    let limits = ingestor.limits();
    let streams = decode(format, compression, body, limits)?;
    let signal = Signal::Logs;
    let metrics = ingestor.metrics();
    let items: usize = streams.iter().map(|s| s.entries.len()).sum();
    if items > limits.max_items_per_request {
        metrics.received(signal, tenant, items as u64);
        metrics.rejected(signal, tenant, "too_many_items", items as u64);
        return Err(IngestError::TooManyItems { signal, count: items, limit: limits.max_items_per_request });
    }
    let (parts, rejections) = split(streams, limits, ingestor.partitions().max(1));
    let accepted: u64 = parts.iter().map(|(_, r)| entries_of(r)).sum();
    metrics.received(signal, tenant, accepted + rejections.count);
    for (reason, n) in &rejections.by_reason {
        metrics.rejected(signal, tenant, reason, *n);
    }
    if accepted == 0 && rejections.count > 0 {
        return Err(IngestError::AllRejected {
            signal,
            count: rejections.count,
            message: rejections.first.unwrap_or_default(),
        });
    }
    let received_at = now_unix_nanos();
    let envelopes = parts
        .into_iter()
        .map(|(p, request)| {
            let n = entries_of(&request);
            (p, encode_envelope(tenant, signal, PayloadFormat::LokiPush, received_at, n, &[], &request))
        })
        .collect();
    Ok(Prepared { signal, tenant: tenant.clone(), envelopes, accepted, rejections })
}

fn entries_of(request: &PushRequest) -> u64 {
    request.streams.iter().map(|s| s.entries.len() as u64).sum()
}

/// Validates and normalises the streams and groups them by partition: the non-empty
/// per-partition requests, and what was refused.
fn split(streams: Vec<Incoming>, limits: &Limits, partitions: u32) -> (Vec<(u32, PushRequest)>, Rejections) {
    let mut per: Vec<PushRequest> = vec![PushRequest::default(); partitions as usize];
    // Canonical labels → (partition, index of the stream in that partition's request).
    let mut placed: HashMap<String, (usize, usize)> = HashMap::new();
    let mut rejections = Rejections::default();
    for stream in streams {
        let count = stream.entries.len() as u64;
        let canonical = match stream.labels.and_then(|pairs| canonical_labels(pairs, limits)) {
            Ok(c) => c,
            Err(violation) => {
                // A stream without entries is still refused: its labels are wrong.
                rejections.add(violation, count.max(1));
                continue;
            }
        };
        let mut entries = stream.entries;
        entries.retain(|e| {
            if e.line.len() <= limits.max_line_size {
                return true;
            }
            let message = format!(
                "a line of stream {} is {} bytes long, over the limit max_line_size of {} bytes",
                shown(&canonical),
                e.line.len(),
                limits.max_line_size
            );
            rejections.add(Violation { reason: "line_too_long", message }, 1);
            false
        });
        if entries.is_empty() {
            continue;
        }
        let (p, at) = *placed.entry(canonical).or_insert_with_key(|canonical| {
            let p = partition_of(PartitionKey::Hash(fnv1a(canonical.as_bytes())), partitions) as usize;
            per[p].streams.push(Stream { labels: canonical.clone(), entries: Vec::new(), hash: 0 });
            (p, per[p].streams.len() - 1)
        });
        per[p].streams[at].entries.append(&mut entries);
    }
    let parts = per
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.streams.is_empty())
        .map(|(p, r)| (p as u32, r))
        .collect();
    (parts, rejections)
}

/// A label name as Loki (Prometheus's classic rule) takes it: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a stream's labels and writes them canonically: empty values dropped, sorted by name,
/// `{a="1", b="2"}`.
fn canonical_labels(mut pairs: Vec<(String, String)>, limits: &Limits) -> Result<String, Violation> {
    let invalid = |message: String| Violation { reason: "invalid_labels", message };
    pairs.retain(|(_, value)| !value.is_empty());
    if pairs.is_empty() {
        return Err(Violation {
            reason: "missing_labels",
            message: "a stream has no labels: at least one label pair is required per stream".into(),
        });
    }
    if pairs.len() > limits.max_labels_per_stream {
        return Err(Violation {
            reason: "too_many_labels",
            message: format!(
                "stream {} has {} labels, over the limit max_labels_per_stream of {}",
                shown(&format_labels(&pairs)),
                pairs.len(),
                limits.max_labels_per_stream
            ),
        });
    }
    for (name, value) in &pairs {
        if name.len() > limits.max_label_name_length {
            return Err(Violation {
                reason: "label_name_too_long",
                message: format!(
                    "label name {} is {} bytes long, over the limit max_label_name_length of {}",
                    shown(name),
                    name.len(),
                    limits.max_label_name_length
                ),
            });
        }
        if !valid_label_name(name) {
            return Err(invalid(format!(
                "stream {} has the invalid label name {name:?}: a name is a letter or `_`, then letters, digits or `_`",
                shown(&format_labels(&pairs)),
            )));
        }
        if value.len() > limits.max_label_value_length {
            return Err(Violation {
                reason: "label_value_too_long",
                message: format!(
                    "label {name:?} has a value of {} bytes, over the limit max_label_value_length of {}",
                    value.len(),
                    limits.max_label_value_length
                ),
            });
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(invalid(format!(
            "stream {} has the label {:?} more than once",
            shown(&format_labels(&pairs)),
            pair[0].0
        )));
    }
    Ok(format_labels(&pairs))
}

/// A labels string (or name) for an error message, cut short if long.
fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_LABELS_CHARS) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

// The JSON body.

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    stream: JsonLabels,
    values: Vec<JsonEntry>,
}

/// A JSON object of string values, kept in order with any repeated keys (refused later by name).
struct JsonLabels(Vec<(String, String)>);

impl<'de> Deserialize<'de> for JsonLabels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonLabels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonLabels, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    pairs.push((name, value));
                }
                Ok(JsonLabels(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

/// `["<unix ns>", "line"]` or `["<unix ns>", "line", {structured metadata}]`.
struct JsonEntry {
    timestamp: i64,
    line: String,
    metadata: Vec<(String, String)>,
}

impl JsonEntry {
    fn into_entry(self) -> Entry {
        Entry {
            timestamp: Some(Timestamp::from_unix_nanos(self.timestamp)),
            line: self.line,
            structured_metadata: self
                .metadata
                .into_iter()
                .map(|(name, value)| LabelPair { name, value })
                .collect(),
            parsed: Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an entry ["<unix nanoseconds>", "<line>"] or ["<unix nanoseconds>", "<line>", {structured metadata}]"#)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonEntry, A::Error> {
                let JsonTimestamp(timestamp) =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let line: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let metadata =
                    seq.next_element::<Option<JsonLabels>>()?.flatten().map_or_else(Vec::new, |m| m.0);
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(
                        "an entry has at most 3 elements: timestamp, line and structured metadata",
                    ));
                }
                Ok(JsonEntry { timestamp, line, metadata })
            }
        }
        d.deserialize_seq(V)
    }
}

/// Unix nanoseconds as a decimal string; a number is refused, as Loki does.
struct JsonTimestamp(i64);

impl<'de> Deserialize<'de> for JsonTimestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn number<E: de::Error>(shown: String) -> E {
            E::custom(format!(
                "timestamp {shown} is a number: Loki's push API takes unix nanoseconds as a string, \"{shown}\""
            ))
        }
        impl Visitor<'_> for V {
            type Value = JsonTimestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a timestamp: unix nanoseconds as a decimal string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonTimestamp, E> {
                v.parse::<i64>().map(JsonTimestamp).map_err(|_| {
                    E::custom(format!("timestamp {v:?} is not unix nanoseconds as a decimal string"))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonTimestamp, E> {
                Err(number(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonTimestamp, E> {
                Err(number(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonTimestamp, E> {
                Err(number(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{
            Mutex,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use pharos_core::Envelope;
    use pharos_queue::{Consumer, Offset, PartitionStats, Queue, QueueError};
    use tower::ServiceExt;

    use super::*;
    use crate::IngestMetrics;

    /// A queue that keeps what is appended, or pushes back when told to.
    struct FakeQueue {
        partitions: u32,
        full: AtomicBool,
        records: Mutex<Vec<(u32, Bytes)>>,
    }

    #[async_trait::async_trait]
    impl Queue for FakeQueue {
        fn partitions(&self) -> u32 {
            self.partitions
        }

        async fn append(&self, partition: u32, records: Vec<Bytes>) -> Result<Offset, QueueError> {
            if self.full.load(Ordering::Relaxed) {
                return Err(QueueError::Full { used: 10, budget: 10 });
            }
            let mut kept = self.records.lock().unwrap();
            kept.extend(records.into_iter().map(|r| (partition, r)));
            Ok(kept.len() as Offset)
        }

        async fn consumer(&self, _group: &str, _partition: u32) -> Result<Box<dyn Consumer>, QueueError> {
            Err(QueueError::Closed)
        }

        fn stats(&self) -> Vec<PartitionStats> {
            Vec::new()
        }

        async fn close(&self) -> Result<(), QueueError> {
            Ok(())
        }
    }

    struct Fixture {
        router: Router,
        queue: Arc<FakeQueue>,
        metrics: IngestMetrics,
    }

    fn fixture(partitions: u32, limits: Limits) -> Fixture {
        let queue =
            Arc::new(FakeQueue { partitions, full: AtomicBool::new(false), records: Mutex::new(Vec::new()) });
        let metrics = IngestMetrics::default();
        let ingestor = Arc::new(Ingestor::new(queue.clone(), limits, metrics.clone()));
        let options =
            HttpOptions { request_timeout: Duration::from_secs(5), retry_after: Duration::from_secs(2) };
        Fixture { router: router(ingestor, options), queue, metrics }
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        text: String,
    }

    impl Fixture {
        async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
            let mut request = Request::post(path);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response =
                self.router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            Reply { status, headers, text: String::from_utf8(bytes.to_vec()).unwrap() }
        }

        async fn json(&self, body: &str) -> Reply {
            self.post(PUSH_PATH, &[("content-type", "application/json")], body.as_bytes().to_vec()).await
        }

        async fn protobuf(&self, request: &PushRequest) -> Reply {
            self.post(
                PUSH_PATH,
                &[("content-type", "application/x-protobuf")],
                snappy(&request.encode_to_vec()),
            )
            .await
        }

        /// The queued Loki push records: partition, tenant and request.
        fn queued(&self) -> Vec<(u32, String, PushRequest)> {
            self.queue
                .records
                .lock()
                .unwrap()
                .iter()
                .map(|(p, bytes)| {
                    let env = Envelope::decode(bytes.clone()).unwrap();
                    assert_eq!((env.signal, env.format), (Signal::Logs, PayloadFormat::LokiPush));
                    let request = PushRequest::decode(env.payload).unwrap();
                    assert_eq!(u64::from(env.items), entries_of(&request), "the envelope counts entries");
                    (*p, env.tenant.as_str().to_string(), request)
                })
                .collect()
        }

        /// Pharos's own metrics in the exposition format.
        fn metrics_text(&self) -> String {
            let mut registry = prometheus_client::registry::Registry::default();
            self.metrics.register(&mut registry);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        }

        fn queued_streams(&self) -> Vec<Stream> {
            self.queued().into_iter().flat_map(|(_, _, r)| r.streams).collect()
        }
    }

    fn snappy(bytes: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(bytes).unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn entry(ns: i64, line: &str) -> Entry {
        Entry {
            timestamp: Some(Timestamp::from_unix_nanos(ns)),
            line: line.into(),
            structured_metadata: vec![],
            parsed: vec![],
        }
    }

    fn stream(labels: &str, entries: Vec<Entry>) -> Stream {
        Stream { labels: labels.into(), entries, hash: 0 }
    }

    fn push(streams: Vec<Stream>) -> PushRequest {
        PushRequest { streams }
    }

    fn small_limits() -> Limits {
        Limits { max_line_size: 10, ..Limits::default() }
    }

    #[tokio::test]
    async fn json_push_is_acknowledged_with_204_and_queued_with_canonical_labels() {
        let f = fixture(1, Limits::default());
        let r = f
            .json(
                r#"{"streams":[{"stream":{"env":"prod","app":"api"},"values":[
                    ["1700000000000000001","first"],
                    ["1700000000000000002","second",{"trace_id":"abc","user":"u1"}]]}]}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(r.text, "");
        let queued = f.queued();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1, "default", "no X-Scope-OrgID is the default tenant");
        let s = &queued[0].2.streams[0];
        assert_eq!(s.labels, r#"{app="api", env="prod"}"#);
        assert_eq!(s.entries[0], entry(1_700_000_000_000_000_001, "first"));
        assert_eq!(s.entries[1].timestamp.unwrap().unix_nanos(), 1_700_000_000_000_000_002);
        assert_eq!(
            s.entries[1].structured_metadata,
            vec![
                LabelPair { name: "trace_id".into(), value: "abc".into() },
                LabelPair { name: "user".into(), value: "u1".into() }
            ]
        );
    }

    #[tokio::test]
    async fn protobuf_snappy_push_is_queued_with_its_labels_string_rewritten_canonically() {
        let f = fixture(1, Limits::default());
        let mut e = entry(5, "hello");
        e.structured_metadata.push(LabelPair { name: "k".into(), value: "v".into() });
        let request = push(vec![stream(r#"{ env = "pr\x6fd",app=`a"pi`, gone="" }"#, vec![e.clone()])]);
        let r = f
            .post(
                PUSH_PATH,
                &[
                    ("content-type", "application/x-protobuf"),
                    ("content-encoding", "snappy"),
                    ("x-scope-orgid", "team-a"),
                ],
                snappy(&request.encode_to_vec()),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let queued = f.queued();
        assert_eq!(queued[0].1, "team-a");
        assert_eq!(queued[0].2.streams, vec![stream(r#"{app="a\"pi", env="prod"}"#, vec![e])]);
    }

    #[tokio::test]
    async fn push_without_a_content_type_is_snappy_protobuf() {
        let f = fixture(1, Limits::default());
        let request = push(vec![stream(r#"{app="x"}"#, vec![entry(1, "a")])]);
        let r = f.post(PUSH_PATH, &[], snappy(&request.encode_to_vec())).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(f.queued_streams().len(), 1);
    }

    #[tokio::test]
    async fn gzip_json_push_is_decompressed_and_queued() {
        let f = fixture(1, Limits::default());
        let body = br#"{"streams":[{"stream":{"app":"x"},"values":[["1","a"],["2","b"]]}]}"#;
        let r = f
            .post(
                PUSH_PATH,
                &[("content-type", "application/json"), ("content-encoding", "gzip")],
                gzip(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(f.queued_streams()[0].entries.len(), 2);
    }

    #[tokio::test]
    async fn streams_are_split_by_their_canonical_labels_one_partition_each() {
        let f = fixture(4, Limits::default());
        let mut streams: Vec<Stream> = (0..40)
            .map(|i| stream(&format!(r#"{{job="j{i}", app="a"}}"#), vec![entry(i, "x"), entry(i + 1, "y")]))
            .collect();
        // The same labels in another order and spacing: the same stream.
        streams.push(stream(r#"{ app="a",job="j3" }"#, vec![entry(100, "z")]));
        let r = f.protobuf(&push(streams)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let queued = f.queued();
        assert!(queued.len() > 1 && queued.len() <= 4, "{} partitions used", queued.len());
        let mut seen = HashMap::new();
        let mut total = 0;
        for (p, _, request) in &queued {
            for s in &request.streams {
                let want = partition_of(PartitionKey::Hash(fnv1a(s.labels.as_bytes())), 4);
                assert_eq!(*p, want, "{} is in the partition its labels hash to", s.labels);
                assert!(seen.insert(s.labels.clone(), s.entries.len()).is_none(), "{} twice", s.labels);
                total += s.entries.len();
            }
        }
        assert_eq!(total, 81);
        assert_eq!(seen.len(), 40);
        assert_eq!(seen[r#"{app="a", job="j3"}"#], 3, "the two spellings were merged");
    }

    #[tokio::test]
    async fn json_numeric_timestamp_is_refused_with_400() {
        let f = fixture(1, Limits::default());
        let r =
            f.json(r#"{"streams":[{"stream":{"app":"x"},"values":[[1700000000000000000,"line"]]}]}"#).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.contains("timestamp 1700000000000000000 is a number"), "{}", r.text);
        assert!(r.text.contains("unix nanoseconds as a string"), "{}", r.text);
        let r = f.json(r#"{"streams":[{"stream":{"app":"x"},"values":[["soon","line"]]}]}"#).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.contains(r#"timestamp "soon" is not unix nanoseconds"#), "{}", r.text);
        assert!(f.queued().is_empty());
    }

    #[tokio::test]
    async fn json_that_is_not_a_push_is_refused_with_400() {
        let f = fixture(1, Limits::default());
        for (body, why) in [
            (r#"{"strooms":[]}"#, "missing field `streams`"),
            (r#"{"streams":[{"ignored":1}]}"#, "missing field"),
            (r#"{"streams":[{"stream":{"app":1},"values":[]}]}"#, "invalid type"),
            (r#"{"streams":[{"stream":{"app":"x"},"values":[["1"]]}]}"#, "invalid length 1"),
            (r#"{"streams":[{"stream":{"app":"x"},"values":[["1","a",{},"more"]]}]}"#, "at most 3"),
            ("not json", "cannot decode the JSON body"),
        ] {
            let r = f.json(body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(r.text.contains(why), "{body}: {}", r.text);
        }
    }

    #[tokio::test]
    async fn unparsable_labels_string_is_refused_with_400() {
        let f = fixture(1, Limits::default());
        for (labels, why) in [
            (r#"{app="x""#, "expected `,` or `}`"),
            (r#"{app=~"x"}"#, "takes only `=`"),
            ("app", "expected `{`"),
            (r#"{app="\q"}"#, "unknown escape sequence"),
        ] {
            let r = f.protobuf(&push(vec![stream(labels, vec![entry(1, "a")])])).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{labels}");
            assert!(r.text.contains("invalid labels string"), "{labels}: {}", r.text);
            assert!(r.text.contains(why), "{labels}: {}", r.text);
        }
        assert!(f.queued().is_empty());
    }

    #[tokio::test]
    async fn stream_without_labels_is_refused_with_400() {
        let f = fixture(1, Limits::default());
        let r = f.json(r#"{"streams":[{"stream":{},"values":[["1","a"]]}]}"#).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.contains("at least one label pair is required per stream"), "{}", r.text);
        // Only empty values are no labels either.
        let r = f.protobuf(&push(vec![stream(r#"{app=""}"#, vec![entry(1, "a")])])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.contains("at least one label pair"), "{}", r.text);
        // Even without entries.
        let r = f.json(r#"{"streams":[{"stream":{},"values":[]}]}"#).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn invalid_or_duplicate_label_names_are_refused_with_400() {
        let f = fixture(1, Limits::default());
        for (labels, why) in [
            (r#"{"app-name":"x"}"#, r#"invalid label name "app-name""#),
            (r#"{"1app":"x"}"#, r#"invalid label name "1app""#),
            (r#"{"app":"x","app":"y"}"#, r#"the label "app" more than once"#),
        ] {
            let r = f.json(&format!(r#"{{"streams":[{{"stream":{labels},"values":[["1","a"]]}}]}}"#)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{labels}");
            assert!(r.text.contains(why), "{labels}: {}", r.text);
        }
        let r = f.protobuf(&push(vec![stream(r#"{a="1", a="2"}"#, vec![entry(1, "a")])])).await;
        assert!(r.text.contains(r#"the label "a" more than once"#), "{}", r.text);
    }

    #[tokio::test]
    async fn label_limits_are_enforced_with_400_naming_the_limit() {
        let f = fixture(1, Limits::default());
        let many: Vec<String> = (0..16).map(|i| format!(r#"l{i:02}="v""#)).collect();
        let r =
            f.protobuf(&push(vec![stream(&format!("{{{}}}", many.join(",")), vec![entry(1, "a")])])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.contains("has 16 labels, over the limit max_labels_per_stream of 15"), "{}", r.text);

        let long_name = "n".repeat(1025);
        let r =
            f.protobuf(&push(vec![stream(&format!(r#"{{{long_name}="v"}}"#), vec![entry(1, "a")])])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.text.contains("is 1025 bytes long, over the limit max_label_name_length of 1024"),
            "{}",
            r.text
        );
        assert!(r.text.len() < 400, "the message shows the name cut short: {}", r.text);

        let long_value = "v".repeat(2049);
        let r =
            f.protobuf(&push(vec![stream(&format!(r#"{{app="{long_value}"}}"#), vec![entry(1, "a")])])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.text.contains(
                r#"label "app" has a value of 2049 bytes, over the limit max_label_value_length of 2048"#
            ),
            "{}",
            r.text
        );
        assert!(f.queued().is_empty());
    }

    #[tokio::test]
    async fn over_long_line_is_refused_with_400_and_the_valid_entries_are_kept() {
        let f = fixture(2, small_limits());
        let request = push(vec![
            stream(r#"{app="x"}"#, vec![entry(1, "short"), entry(2, "far too long a line"), entry(3, "ok")]),
            stream(r#"{app="y"}"#, vec![entry(4, "fine")]),
        ]);
        let r = f.protobuf(&request).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.text,
            "1 of 4 log records rejected; the first because: a line of stream {app=\"x\"} is 19 bytes long, \
             over the limit max_line_size of 10 bytes\n"
        );
        let mut kept: Vec<(String, Vec<String>)> = f
            .queued_streams()
            .into_iter()
            .map(|s| (s.labels, s.entries.into_iter().map(|e| e.line).collect()))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            vec![
                (r#"{app="x"}"#.to_string(), vec!["short".to_string(), "ok".to_string()]),
                (r#"{app="y"}"#.to_string(), vec!["fine".to_string()])
            ]
        );
    }

    #[tokio::test]
    async fn invalid_stream_is_refused_with_400_and_the_valid_streams_are_kept() {
        let f = fixture(1, Limits::default());
        let request = push(vec![
            stream(r#"{app="good"}"#, vec![entry(1, "a"), entry(2, "b")]),
            stream(r#"{app="bad""#, vec![entry(3, "c")]),
        ]);
        let r = f.protobuf(&request).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.text.starts_with("1 of 3 log records rejected; the first because: invalid labels string"),
            "{}",
            r.text
        );
        let kept = f.queued_streams();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].labels.as_str(), kept[0].entries.len()), (r#"{app="good"}"#, 2));
    }

    #[tokio::test]
    async fn push_with_nothing_valid_is_refused_with_400_and_nothing_is_queued() {
        let f = fixture(1, small_limits());
        let r = f.protobuf(&push(vec![stream(r#"{app="x"}"#, vec![entry(1, "far too long a line")])])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.starts_with("all 1 log records were rejected: a line of stream"), "{}", r.text);
        assert!(f.queued().is_empty());
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_with_413_before_and_after_decompression() {
        let f = fixture(1, Limits { max_body_size: 1024, max_decompressed_size: 4096, ..Limits::default() });
        let big =
            format!(r#"{{"streams":[{{"stream":{{"app":"x"}},"values":[["1","{}"]]}}]}}"#, "a".repeat(5000));
        let r = f.json(&big).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.text.contains("max_body_size of 1024 bytes"), "{}", r.text);

        // Small when sent, big when decompressed: gzip JSON and snappy protobuf.
        let r = f
            .post(
                PUSH_PATH,
                &[("content-type", "application/json"), ("content-encoding", "gzip")],
                gzip(big.as_bytes()),
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.text.contains("max_decompressed_size of 4096 bytes"), "{}", r.text);
        let request = push(vec![stream(r#"{app="x"}"#, vec![entry(1, &"a".repeat(5000))])]);
        let body = snappy(&request.encode_to_vec());
        assert!(body.len() < 1024);
        let r = f.post(PUSH_PATH, &[("content-type", "application/x-protobuf")], body).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.text.contains("max_decompressed_size of 4096 bytes"), "{}", r.text);

        // A snappy header that claims 4 GiB is refused without allocating it.
        let r = f.post(PUSH_PATH, &[], vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00]).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.text.contains("max_decompressed_size"), "{}", r.text);
        assert!(f.queued().is_empty());
    }

    #[tokio::test]
    async fn too_many_entries_are_refused_with_413() {
        let f = fixture(1, Limits { max_items_per_request: 2, ..Limits::default() });
        let r =
            f.json(r#"{"streams":[{"stream":{"app":"x"},"values":[["1","a"],["2","b"],["3","c"]]}]}"#).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.text.contains("3 log records, over the limit max_items_per_request of 2"), "{}", r.text);
    }

    #[tokio::test]
    async fn other_content_types_and_encodings_are_refused_with_415() {
        let f = fixture(1, Limits::default());
        let r = f.post(PUSH_PATH, &[("content-type", "text/plain")], b"hello".to_vec()).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(r.text.contains("use application/x-protobuf or application/json"), "{}", r.text);
        let r = f
            .post(
                PUSH_PATH,
                &[("content-type", "application/json"), ("content-encoding", "br")],
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(r.text.contains("unsupported content encoding"), "{}", r.text);
    }

    #[tokio::test]
    async fn invalid_tenant_is_refused_with_400() {
        let f = fixture(1, Limits::default());
        let r = f
            .post(
                PUSH_PATH,
                &[("content-type", "application/json"), ("x-scope-orgid", "a|b")],
                br#"{"streams":[]}"#.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text.contains("invalid X-Scope-OrgID"), "{}", r.text);
    }

    #[tokio::test]
    async fn queue_back_pressure_is_503_with_retry_after() {
        let f = fixture(1, Limits::default());
        f.queue.full.store(true, Ordering::Relaxed);
        let r = f.json(r#"{"streams":[{"stream":{"app":"x"},"values":[["1","a"]]}]}"#).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "2");
        assert!(r.text.contains("queue is full"), "{}", r.text);
    }

    #[tokio::test]
    async fn otlp_logs_are_taken_on_lokis_otlp_path() {
        let f = fixture(1, Limits::default());
        let body = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hi"}}]}]}]}"#;
        let r =
            f.post("/otlp/v1/logs", &[("content-type", "application/json")], body.as_bytes().to_vec()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let records = f.queue.records.lock().unwrap();
        let env = Envelope::decode(records[0].1.clone()).unwrap();
        assert_eq!((env.signal, env.format, env.items), (Signal::Logs, PayloadFormat::Otlp, 1));
    }

    #[tokio::test]
    async fn pushes_are_counted_in_self_telemetry() {
        let f = fixture(1, small_limits());
        let request =
            push(vec![stream(r#"{app="x"}"#, vec![entry(1, "a"), entry(2, "far too long a line")])]);
        assert_eq!(f.protobuf(&request).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            f.json(r#"{"streams":[{"stream":{"app":"x"},"values":[["1","b"]]}]}"#).await.status,
            StatusCode::NO_CONTENT
        );
        let text = f.metrics_text();
        for line in [
            r#"pharos_ingest_items_received_total{signal="logs",tenant="default"} 3"#,
            r#"pharos_ingest_items_accepted_total{signal="logs",tenant="default"} 2"#,
            r#"pharos_ingest_items_rejected_total{signal="logs",tenant="default",reason="line_too_long"} 1"#,
            r#"pharos_ingest_requests_total{signal="logs",protocol="loki_push_protobuf",outcome="partial"} 1"#,
            r#"pharos_ingest_requests_total{signal="logs",protocol="loki_push_json",outcome="ok"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn canonical_labels_sort_drop_empty_values_and_quote() {
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let limits = Limits::default();
        assert_eq!(
            canonical_labels(pairs(&[("z", "1"), ("a", "say \"hi\"\n"), ("m", "")]), &limits).unwrap(),
            r#"{a="say \"hi\"\n", z="1"}"#
        );
        let v = canonical_labels(pairs(&[("_ok", "1"), ("é", "2")]), &limits).unwrap_err();
        assert_eq!(v.reason, "invalid_labels");
    }
}
