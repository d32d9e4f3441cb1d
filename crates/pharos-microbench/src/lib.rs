//! Deterministic synthetic data for the criterion micro-benchmarks in `benches/`.
//!
//! Every builder takes a seed and returns the same data for the same seed, so two runs (and
//! two commits) measure the same work. The shapes follow the load generator's: a handful of
//! services with realistic resource and span attributes, logfmt log lines, Prometheus
//! counters and histograms scraped every 15 s.
//!
//! [`DiscardQueue`] is a [`Queue`] that acknowledges every append at once: the ingest
//! benchmarks measure decoding, validation and splitting, not the write-ahead log (which
//! has a benchmark of its own).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
};
use pharos_core::prompb;
use pharos_queue::{Consumer, Offset, PartitionStats, Queue, QueueError};
use prost::Message;

/// The seed every benchmark uses.
pub const SEED: u64 = 0x5eed_0f9a_7a05;

/// 2026-01-01T00:00:00Z in unix nanoseconds: the start of every synthetic time line.
pub const T0_NANOS: u64 = 1_767_225_600_000_000_000;

/// [`T0_NANOS`] in milliseconds.
pub const T0_MILLIS: i64 = (T0_NANOS / 1_000_000) as i64;

const SERVICES: [&str; 5] = ["frontend", "checkout", "payments", "inventory", "search"];
const ROUTES: [&str; 6] = ["/", "/api/orders", "/api/orders/{id}", "/api/cart", "/api/search", "/health"];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];

/// A small, fast, deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One of `items`.
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn resource(service: &str, instance: u64) -> Resource {
    Resource {
        attributes: vec![
            kv_str("service.name", service),
            kv_str("service.namespace", "shop"),
            kv_str("service.version", "1.4.2"),
            kv_str("service.instance.id", format!("{service}-{instance}")),
            kv_str("deployment.environment.name", "prod"),
            kv_str("host.name", format!("node-{}", instance % 7)),
            kv_str("k8s.namespace.name", "shop"),
            kv_str("k8s.pod.name", format!("{service}-7d9f8b-{instance:05}")),
            kv_str("telemetry.sdk.language", "rust"),
            kv_str("telemetry.sdk.name", "opentelemetry"),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "pharos-microbench".into(), version: "1.0.0".into(), ..Default::default() }
}

/// An OTLP traces export request of exactly `spans` spans, in traces of 8 spans, grouped under one resource per service. Each trace is a server span with a fan-out of
/// client, database and internal spans; about 1 in 20 traces fails (error status and HTTP 5xx),
/// durations are spread from 100 µs to about 1 s. Traces start 1 ms apart from [`T0_NANOS`].
pub fn trace_request(seed: u64, spans: usize) -> ExportTraceServiceRequest {
    const SPANS_PER_TRACE: usize = 8;
    let mut rng = Rng::new(seed);
    let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    for t in 0..spans.div_ceil(SPANS_PER_TRACE) {
        let in_trace = SPANS_PER_TRACE.min(spans - t * SPANS_PER_TRACE);
        let trace_id = rng.bytes::<16>().to_vec();
        let failed = rng.below(20) == 0;
        let start = T0_NANOS + t as u64 * 1_000_000;
        let duration = 100_000 + (rng.unit().powi(3) * 1e9) as u64;
        let route = rng.pick(&ROUTES);
        let method = rng.pick(&METHODS);
        let status = if failed { 500 + rng.below(4) as i64 } else { 200 };
        let root_id = rng.bytes::<8>().to_vec();
        let root_service = rng.below(SERVICES.len() as u64) as usize;
        per_service[root_service].push(Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            name: format!("{method} {route}"),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes: vec![
                kv_str("http.request.method", method),
                kv_str("http.route", route),
                kv_int("http.response.status_code", status),
                kv_str("url.scheme", "https"),
                kv_str("server.address", "shop.example.com"),
                kv_str("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            ],
            status: failed
                .then(|| Status { code: StatusCode::Error as i32, message: "upstream failed".into() }),
            ..Default::default()
        });
        for c in 1..in_trace {
            let service = (root_service + c) % SERVICES.len();
            let offset = duration / SPANS_PER_TRACE as u64 * c as u64 / 2;
            let child_duration = duration / (2 + c as u64);
            let (name, kind, attributes) = match c % 3 {
                0 => (
                    "SELECT orders".to_string(),
                    SpanKind::Client,
                    vec![
                        kv_str("db.system.name", "postgresql"),
                        kv_str("db.namespace", "orders"),
                        kv_str("db.operation.name", "SELECT"),
                        kv_str("db.query.text", "SELECT id, total FROM orders WHERE customer_id = $1"),
                    ],
                ),
                1 => (
                    format!("{}/{}", SERVICES[service], rng.pick(&["Get", "List", "Reserve"])),
                    SpanKind::Client,
                    vec![
                        kv_str("rpc.system", "grpc"),
                        kv_str("rpc.service", SERVICES[service]),
                        kv_str("server.address", format!("{}.shop.svc", SERVICES[service])),
                        kv_int("server.port", 8080),
                    ],
                ),
                _ => (
                    "render".to_string(),
                    SpanKind::Internal,
                    vec![kv_int("items", rng.below(50) as i64), kv_str("cache.hit", "true")],
                ),
            };
            per_service[service].push(Span {
                trace_id: trace_id.clone(),
                span_id: rng.bytes::<8>().to_vec(),
                parent_span_id: root_id.clone(),
                name,
                kind: kind as i32,
                start_time_unix_nano: start + offset,
                end_time_unix_nano: start + offset + child_duration,
                attributes,
                status: (failed && c == 1)
                    .then(|| Status { code: StatusCode::Error as i32, message: "deadline exceeded".into() }),
                ..Default::default()
            });
        }
    }
    let resource_spans = per_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(i, spans)| ResourceSpans {
            resource: Some(resource(SERVICES[i], i as u64)),
            scope_spans: vec![ScopeSpans { scope: Some(scope()), spans, ..Default::default() }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// One logfmt line, as a service would log it.
fn log_line(rng: &mut Rng, level: &str, t: u64) -> String {
    let route = rng.pick(&ROUTES);
    let method = rng.pick(&METHODS);
    let status = if level == "error" { 500 + rng.below(4) } else { 200 + 4 * rng.below(2) };
    let duration_ms = 1 + (rng.unit().powi(3) * 2000.0) as u64;
    let msg = if level == "error" { "request failed: upstream timeout" } else { "request served" };
    format!(
        "ts={t} level={level} caller=http.go:{line} method={method} path={route} status={status} \
         duration={duration_ms}ms bytes={bytes} request_id={id:016x} msg=\"{msg}\"",
        line = 100 + rng.below(400),
        bytes = rng.below(64 << 10),
        id = rng.next_u64(),
    )
}

fn level_of(rng: &mut Rng) -> &'static str {
    match rng.below(100) {
        0..5 => "error",
        5..15 => "warn",
        15..25 => "debug",
        _ => "info",
    }
}

/// An OTLP logs export request of `records` records, one resource per service, with a
/// logfmt body, severity, 4 attributes and trace context. Records are 1 ms apart from
/// [`T0_NANOS`].
pub fn logs_request(seed: u64, records: usize) -> ExportLogsServiceRequest {
    let mut rng = Rng::new(seed);
    let mut per_service: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES.len()];
    for i in 0..records {
        let service = rng.below(SERVICES.len() as u64) as usize;
        let level = level_of(&mut rng);
        let t = T0_NANOS + i as u64 * 1_000_000;
        let body = log_line(&mut rng, level, t);
        let severity_number = match level {
            "error" => 17,
            "warn" => 13,
            "debug" => 5,
            _ => 9,
        };
        per_service[service].push(LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t + 1_000,
            severity_number,
            severity_text: level.to_uppercase(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
            attributes: vec![
                kv_str("code.function.name", "handle_request"),
                kv_str("http.route", rng.pick(&ROUTES)),
                kv_int("thread.id", rng.below(16) as i64),
                kv_str("logger", "shop::http"),
            ],
            trace_id: rng.bytes::<16>().to_vec(),
            span_id: rng.bytes::<8>().to_vec(),
            ..Default::default()
        });
    }
    let resource_logs = per_service
        .into_iter()
        .enumerate()
        .filter(|(_, records)| !records.is_empty())
        .map(|(i, log_records)| ResourceLogs {
            resource: Some(resource(SERVICES[i], i as u64)),
            scope_logs: vec![ScopeLogs { scope: Some(scope()), log_records, ..Default::default() }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

/// An OTLP metrics export request of `points` data points (rounded up to a multiple of 10): cumulative monotonic sums
/// (request counters) and gauges (memory), 10 points per metric, each with 3 attributes.
pub fn metrics_request(seed: u64, points: usize) -> ExportMetricsServiceRequest {
    const POINTS_PER_METRIC: usize = 10;
    let mut rng = Rng::new(seed);
    let mut per_service: Vec<Vec<Metric>> = vec![Vec::new(); SERVICES.len()];
    for m in 0..points.div_ceil(POINTS_PER_METRIC) {
        let service = m % SERVICES.len();
        let data_points: Vec<NumberDataPoint> = (0..POINTS_PER_METRIC)
            .map(|p| NumberDataPoint {
                attributes: vec![
                    kv_str("http.request.method", METHODS[p % METHODS.len()]),
                    kv_str("http.route", ROUTES[p % ROUTES.len()]),
                    kv_int("http.response.status_code", if p % 7 == 0 { 500 } else { 200 }),
                ],
                start_time_unix_nano: T0_NANOS - 3_600_000_000_000,
                time_unix_nano: T0_NANOS,
                value: Some(if m % 2 == 0 {
                    number_data_point::Value::AsInt(rng.below(1_000_000) as i64)
                } else {
                    number_data_point::Value::AsDouble(rng.unit() * 1e9)
                }),
                ..Default::default()
            })
            .collect();
        let data = if m % 2 == 0 {
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })
        } else {
            Data::Gauge(Gauge { data_points })
        };
        let name =
            if m % 2 == 0 { format!("http.server.requests.{m}") } else { format!("process.memory.{m}") };
        per_service[service].push(Metric {
            name,
            description: "synthetic".into(),
            unit: if m % 2 == 0 { "{request}".into() } else { "By".into() },
            data: Some(data),
            ..Default::default()
        });
    }
    let resource_metrics = per_service
        .into_iter()
        .enumerate()
        .filter(|(_, metrics)| !metrics.is_empty())
        .map(|(i, metrics)| ResourceMetrics {
            resource: Some(resource(SERVICES[i], i as u64)),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, ..Default::default() }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// A Prometheus remote write 1.0 request, snappy-compressed as sent: `series` series of
/// `http_requests_total` (labels sorted, 7 of them) with `samples` samples each, 15 s apart.
pub fn remote_write_v1(seed: u64, series: usize, samples: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let label = |name: &str, value: String| prompb::v1::Label { name: name.into(), value };
    let timeseries = (0..series)
        .map(|s| {
            let mut value = rng.below(10_000) as f64;
            prompb::v1::TimeSeries {
                labels: vec![
                    label("__name__", "http_requests_total".into()),
                    label("code", if s % 11 == 0 { "500".into() } else { "200".into() }),
                    label("instance", format!("10.0.{}.{}:9090", s / 250, s % 250)),
                    label("job", SERVICES[s % SERVICES.len()].into()),
                    label("method", METHODS[s % METHODS.len()].into()),
                    label("path", ROUTES[s % ROUTES.len()].into()),
                    label("region", "eu-west-1".into()),
                ],
                samples: (0..samples)
                    .map(|i| {
                        value += rng.below(100) as f64;
                        prompb::v1::Sample { value, timestamp: T0_MILLIS + i as i64 * 15_000 }
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    let request = prompb::v1::WriteRequest { timeseries, metadata: Vec::new() };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses any input of less than 4 GiB")
}

/// Log streams for the LogQL and block benchmarks: `lines` logfmt lines spread over 16
/// streams (`app` × `env` × `pod`), each stream's entries evenly spread (and sorted) over the
/// hour from [`T0_NANOS`], with `severity_text` and `trace_id` structured metadata.
pub fn log_streams(
    seed: u64,
    lines: usize,
) -> Vec<(pharos_logs::model::Labels, Vec<pharos_logs::model::Entry>)> {
    const STREAMS: usize = 16;
    let mut rng = Rng::new(seed);
    let mut streams: Vec<(pharos_logs::model::Labels, Vec<pharos_logs::model::Entry>)> = (0..STREAMS)
        .map(|s| {
            let labels = pharos_logs::model::Labels::new([
                ("app".to_string(), ["api", "checkout", "payments", "search"][s % 4].to_string()),
                ("env".to_string(), if s < 12 { "prod" } else { "staging" }.to_string()),
                ("pod".to_string(), format!("pod-{s:02}")),
            ]);
            (labels, Vec::with_capacity(lines / STREAMS + 1))
        })
        .collect();
    let per_stream = lines.div_ceil(STREAMS).max(1) as u64;
    let spacing = 3_600_000_000_000 / per_stream;
    for i in 0..lines {
        let stream = i % STREAMS;
        let t = T0_NANOS + (i / STREAMS) as u64 * spacing;
        let level = level_of(&mut rng);
        let line = log_line(&mut rng, level, t);
        let trace_id = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        streams[stream].1.push(pharos_logs::model::Entry {
            timestamp: t as i64,
            line,
            metadata: vec![("severity_text".into(), level.to_uppercase()), ("trace_id".into(), trace_id)],
        });
    }
    streams
}

/// Fills a metrics head with one hour of 15 s scrapes (241 samples per series) starting at
/// [`T0_MILLIS`]: `http_requests_total{job, instance, code}` counters (`jobs` × `instances`
/// × 2 codes) and `http_request_duration_seconds_bucket{job, instance, le}` histograms (12
/// buckets per job and instance). Returns the number of series.
pub fn fill_metrics_head(
    seed: u64,
    head: &pharos_metrics::store::Head,
    jobs: usize,
    instances: usize,
) -> usize {
    use pharos_metrics::model::Labels;
    const LE: [&str; 12] =
        ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
    let mut rng = Rng::new(seed);
    let mut series = 0;
    for j in 0..jobs {
        let job = format!("job-{j}");
        for i in 0..instances {
            let instance = format!("10.1.{j}.{i}:8080");
            for code in ["200", "500"] {
                let labels = Labels::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("instance", instance.as_str()),
                    ("job", job.as_str()),
                ]);
                let mut value = 0.0;
                for s in 0..=240i64 {
                    value += rng.below(if code == "200" { 100 } else { 5 }) as f64;
                    head.append(&labels, T0_MILLIS + s * 15_000, value)
                        .expect("a fresh head takes in-order samples of a few series");
                }
                series += 1;
            }
            let bucket_labels: Vec<Labels> = LE
                .iter()
                .map(|le| {
                    Labels::from_pairs([
                        ("__name__", "http_request_duration_seconds_bucket"),
                        ("instance", instance.as_str()),
                        ("job", job.as_str()),
                        ("le", le),
                    ])
                })
                .collect();
            let mut counts = [0.0f64; LE.len()];
            for s in 0..=240i64 {
                // Each scrape adds some requests, spread over the buckets cumulatively.
                for _ in 0..20 {
                    let latency = rng.unit().powi(2) * 3.0;
                    for (count, le) in counts.iter_mut().zip(LE) {
                        if le == "+Inf" || latency <= le.parse::<f64>().expect("bucket bounds are numbers") {
                            *count += 1.0;
                        }
                    }
                }
                for (labels, count) in bucket_labels.iter().zip(counts) {
                    head.append(labels, T0_MILLIS + s * 15_000, count)
                        .expect("a fresh head takes in-order samples of a few series");
                }
            }
            series += LE.len();
        }
    }
    series
}

/// A queue that acknowledges every append at once and keeps nothing. It has no consumers.
pub struct DiscardQueue {
    partitions: u32,
    next: AtomicU64,
}

impl DiscardQueue {
    pub fn new(partitions: u32) -> Arc<Self> {
        Arc::new(DiscardQueue { partitions, next: AtomicU64::new(0) })
    }
}

#[async_trait]
impl Queue for DiscardQueue {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, partition: u32, records: Vec<Bytes>) -> Result<Offset, QueueError> {
        if partition >= self.partitions {
            return Err(QueueError::NoSuchPartition { partition, partitions: self.partitions });
        }
        Ok(self.next.fetch_add(records.len() as u64, Ordering::Relaxed))
    }

    async fn consumer(&self, _group: &str, _partition: u32) -> Result<Box<dyn Consumer>, QueueError> {
        // Nothing is kept, so there is nothing to consume.
        Err(QueueError::Closed)
    }

    fn stats(&self) -> Vec<PartitionStats> {
        Vec::new()
    }

    async fn close(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// How long the heavier benchmark groups measure (criterion's default is 5 s).
pub const MEASUREMENT_TIME: Duration = Duration::from_secs(3);

/// How long every group warms up (criterion's default is 3 s).
pub const WARM_UP_TIME: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_core::{Signal, Tenant};
    use pharos_ingest::{IngestMetrics, Ingestor, Limits};

    fn ingestor() -> Ingestor {
        Ingestor::new(DiscardQueue::new(2), Limits::default(), IngestMetrics::default())
    }

    #[test]
    fn builders_same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(trace_request(1, 64).encode_to_vec(), trace_request(1, 64).encode_to_vec());
        assert_ne!(trace_request(1, 64).encode_to_vec(), trace_request(2, 64).encode_to_vec());
        assert_eq!(logs_request(1, 64).encode_to_vec(), logs_request(1, 64).encode_to_vec());
        assert_eq!(remote_write_v1(1, 10, 2), remote_write_v1(1, 10, 2));
        assert_eq!(log_streams(1, 100), log_streams(1, 100));
    }

    #[test]
    fn ingestor_accepts_every_item_of_each_synthetic_request() {
        let ingestor = ingestor();
        let tenant = Tenant::default();
        let cases = [
            (Signal::Traces, trace_request(SEED, 500).encode_to_vec(), 500),
            (Signal::Traces, trace_request(SEED, 61).encode_to_vec(), 61),
            (Signal::Logs, logs_request(SEED, 500).encode_to_vec(), 500),
            (Signal::Metrics, metrics_request(SEED, 500).encode_to_vec(), 500),
        ];
        for (signal, body, items) in cases {
            let prepared =
                ingestor.prepare_encoded(signal, &tenant, &[], Bytes::from(body)).expect("valid request");
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let outcome = runtime.block_on(ingestor.commit(prepared)).expect("discard queue accepts");
            assert_eq!((outcome.accepted, outcome.rejected), (items, 0), "{signal:?}");
        }
    }

    #[test]
    fn json_traces_round_trip_to_the_same_request() {
        let request = trace_request(SEED, 16);
        let json = serde_json::to_vec(&request).expect("serializable");
        let back: ExportTraceServiceRequest = serde_json::from_slice(&json).expect("OTLP/JSON");
        assert_eq!(back, request);
    }

    #[test]
    fn metrics_head_holds_every_series_over_the_hour() {
        let head = pharos_metrics::store::Head::default();
        let series = fill_metrics_head(SEED, &head, 2, 3);
        assert_eq!(series, 2 * 3 * (2 + 12));
        assert_eq!(head.num_series(), series);
        assert_eq!(head.time_range(), Some((T0_MILLIS, T0_MILLIS + 240 * 15_000)));
    }
}
