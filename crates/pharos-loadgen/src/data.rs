//! Pre-built OTLP requests with realistic content.
//!
//! A pool of requests is generated and protobuf-encoded once at start-up, so the
//! load generator spends its CPU on sending, not on encoding. To keep trace ids
//! unique across the whole run although the pool is reused, the byte offsets of
//! every trace id in each encoded request are recorded, and each send XORs a
//! process-wide sequence number into the first 8 bytes of every trace id of its
//! copy (all spans/logs of one trace get the same XOR, so traces stay whole).

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::time::{SystemTime, UNIX_EPOCH};

/// One encoded request and where its trace ids are.
pub(crate) struct Prebuilt {
    pub(crate) bytes: Bytes,
    pub(crate) trace_id_offsets: Vec<usize>,
    /// Where the log records' `time_unix_nano` values are (fixed64, little endian), and when
    /// the request was built: each copy moves them by the time since, so that copies are
    /// distinct entries of a log stream (the same time and line twice is one entry).
    pub(crate) time_offsets: Vec<usize>,
    pub(crate) built_at: u64,
    pub(crate) items: u64,
}

impl Prebuilt {
    /// A copy of the request with every trace id made unique by `seq`.
    pub(crate) fn instantiate(&self, seq: u64) -> Bytes {
        let mut buf = BytesMut::from(&self.bytes[..]);
        // Spread the sequence number so that consecutive numbers change many bits.
        let mix = splitmix64(seq ^ 0x005e_ed0f_7aa0_5eed).to_le_bytes();
        for &off in &self.trace_id_offsets {
            for (b, m) in buf[off..off + 8].iter_mut().zip(mix.iter()) {
                *b ^= *m;
            }
        }
        if !self.time_offsets.is_empty() {
            let shift = now_nanos().saturating_sub(self.built_at);
            for &off in &self.time_offsets {
                let mut t = [0u8; 8];
                t.copy_from_slice(&buf[off..off + 8]);
                let moved = u64::from_le_bytes(t).wrapping_add(shift);
                buf[off..off + 8].copy_from_slice(&moved.to_le_bytes());
            }
        }
        buf.freeze()
    }
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small deterministic PRNG (splitmix64 stream).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        if out.iter().all(|b| *b == 0) {
            out[0] = 1;
        }
        out
    }
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}
fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}

const SERVICES: &[&str] =
    &["checkout", "cart", "payment", "inventory", "frontend", "shipping", "auth", "search"];
const ROUTES: &[&str] = &[
    "/api/v1/orders/{id}",
    "/api/v1/cart",
    "/api/v1/products/{id}",
    "/api/v1/users/{id}/profile",
    "/api/v1/search",
    "/api/v1/payments",
    "/healthz",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const DB_OPS: &[&str] = &[
    "SELECT orders WHERE id = ?",
    "SELECT products WHERE sku IN (?)",
    "UPDATE carts SET items = ? WHERE id = ?",
    "INSERT INTO payments (id, amount, currency) VALUES (?, ?, ?)",
];

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn resource(rng: &mut Rng, idx: usize) -> Resource {
    let svc = SERVICES[idx % SERVICES.len()];
    let pod = rng.next_u64();
    Resource {
        attributes: vec![
            s("service.name", svc),
            s("service.namespace", "shop"),
            s("service.version", format!("1.{}.{}", rng.below(20), rng.below(10))),
            s("service.instance.id", format!("{pod:016x}")),
            s("deployment.environment.name", "production"),
            s("host.name", format!("node-{:02}.eu-west-1.compute.internal", rng.below(40))),
            s("host.arch", "amd64"),
            s("os.type", "linux"),
            s("k8s.namespace.name", "shop"),
            s("k8s.pod.name", format!("{svc}-{:010x}-{:05x}", pod >> 24, pod & 0xfffff)),
            s("k8s.deployment.name", svc),
            s("cloud.provider", "aws"),
            s("cloud.region", "eu-west-1"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", "rust"),
            s("telemetry.sdk.version", "0.31.0"),
        ],
        ..Default::default()
    }
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope { name: name.to_string(), version: "0.31.0".to_string(), ..Default::default() }
}

/// Find `needle` in `hay` at or after `from`; panics if absent (it was just encoded).
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> usize {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
        .expect("id present in encoded request")
}

/// Number of resources per request (distinct services in one batch).
fn n_resources(batch: usize) -> usize {
    batch.clamp(1, 5)
}

/// Spans per trace within one resource (a server span and its children).
const SPANS_PER_TRACE: usize = 8;

pub(crate) fn build_traces(batch: usize, seed: u64) -> Prebuilt {
    let mut rng = Rng::new(seed);
    let now = now_nanos();
    let nres = n_resources(batch);
    let mut order: Vec<[u8; 16]> = Vec::with_capacity(batch);
    let mut resource_spans = Vec::with_capacity(nres);
    for r in 0..nres {
        let n = batch / nres + usize::from(r < batch % nres);
        let svc = SERVICES[(seed as usize + r) % SERVICES.len()];
        let mut spans = Vec::with_capacity(n);
        let mut trace_id = [0u8; 16];
        let mut root_span = [0u8; 8];
        let mut root_start = 0u64;
        for k in 0..n {
            let first = k % SPANS_PER_TRACE == 0;
            if first {
                trace_id = rng.id::<16>();
                root_span = rng.id::<8>();
                root_start = now - 1_000_000_000 - rng.below(5_000_000_000);
            }
            let span_id = if first { root_span } else { rng.id::<8>() };
            let route = *rng.pick(ROUTES);
            let method = *rng.pick(METHODS);
            let status_code = if rng.below(50) == 0 { 500 } else { 200 };
            let (name, kind, attributes) = if first {
                (
                    format!("{method} {route}"),
                    SpanKind::Server,
                    vec![
                        s("http.request.method", method),
                        s("http.route", route),
                        s("url.path", route.replace("{id}", &rng.below(1_000_000).to_string())),
                        s("url.scheme", "https"),
                        i("http.response.status_code", status_code),
                        s("server.address", format!("{svc}.shop.svc.cluster.local")),
                        i("server.port", 8080),
                        s(
                            "client.address",
                            format!("10.{}.{}.{}", rng.below(255), rng.below(255), rng.below(255)),
                        ),
                        s(
                            "user_agent.original",
                            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
                        ),
                        s("network.protocol.version", "1.1"),
                    ],
                )
            } else if k % 3 == 1 {
                (
                    DB_OPS[k % DB_OPS.len()].split(' ').next().unwrap_or("SELECT").to_string() + " shop",
                    SpanKind::Client,
                    vec![
                        s("db.system.name", "postgresql"),
                        s("db.namespace", "shop"),
                        s("db.query.text", DB_OPS[k % DB_OPS.len()]),
                        s("server.address", "postgres.shop.svc.cluster.local"),
                        i("server.port", 5432),
                        i("db.response.returned_rows", rng.below(200) as i64),
                    ],
                )
            } else if k % 3 == 2 {
                let peer = *rng.pick(SERVICES);
                (
                    format!("POST /internal/{peer}"),
                    SpanKind::Client,
                    vec![
                        s("http.request.method", "POST"),
                        s("url.full", format!("http://{peer}.shop.svc.cluster.local:8080/internal/{peer}")),
                        s("server.address", format!("{peer}.shop.svc.cluster.local")),
                        i("server.port", 8080),
                        i("http.response.status_code", status_code),
                    ],
                )
            } else {
                (
                    "render_response".to_string(),
                    SpanKind::Internal,
                    vec![
                        s("code.function.name", "handlers::render_response"),
                        b("cache.hit", rng.below(2) == 0),
                    ],
                )
            };
            let start = root_start + if first { 0 } else { rng.below(50_000_000) };
            let dur = 100_000 + rng.below(if first { 400_000_000 } else { 40_000_000 });
            let events = if status_code == 500 && first {
                vec![Event {
                    time_unix_nano: start + dur / 2,
                    name: "exception".to_string(),
                    attributes: vec![
                        s("exception.type", "UpstreamTimeout"),
                        s("exception.message", "upstream request timed out after 2000ms"),
                    ],
                    dropped_attributes_count: 0,
                }]
            } else {
                vec![]
            };
            order.push(trace_id);
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: if first { vec![] } else { root_span.to_vec() },
                flags: 0x100 | 1,
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes,
                events,
                status: Some(Status {
                    code: if status_code == 500 {
                        StatusCode::Error as i32
                    } else {
                        StatusCode::Unset as i32
                    },
                    message: String::new(),
                }),
                ..Default::default()
            });
        }
        resource_spans.push(ResourceSpans {
            resource: Some(resource(&mut rng, (seed as usize + r) % SERVICES.len())),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope("opentelemetry-instrumentation-http")),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
        });
    }
    let req = ExportTraceServiceRequest { resource_spans };
    let bytes = req.encode_to_vec();
    // Spans are encoded in order and trace_id (field 1) comes first in each span.
    let mut offsets = Vec::with_capacity(order.len());
    let mut pos = 0;
    for id in &order {
        let at = find_from(&bytes, id, pos);
        offsets.push(at);
        pos = at + 16;
    }
    Prebuilt {
        bytes: Bytes::from(bytes),
        trace_id_offsets: offsets,
        time_offsets: Vec::new(),
        built_at: 0,
        items: batch as u64,
    }
}

const LOG_TEMPLATES: &[(&str, SeverityNumber, &str)] = &[
    ("INFO", SeverityNumber::Info, "request completed"),
    ("INFO", SeverityNumber::Info, "order placed"),
    ("DEBUG", SeverityNumber::Debug, "cache lookup"),
    ("WARN", SeverityNumber::Warn, "slow upstream response"),
    ("ERROR", SeverityNumber::Error, "payment authorization failed"),
    ("INFO", SeverityNumber::Info, "user signed in"),
];

pub(crate) fn build_logs(batch: usize, seed: u64) -> Prebuilt {
    let mut rng = Rng::new(seed ^ 0x1065);
    let now = now_nanos();
    let nres = n_resources(batch);
    let mut order: Vec<[u8; 16]> = Vec::with_capacity(batch);
    let mut times: Vec<u64> = Vec::with_capacity(batch);
    let mut resource_logs = Vec::with_capacity(nres);
    for r in 0..nres {
        let n = batch / nres + usize::from(r < batch % nres);
        let mut records = Vec::with_capacity(n);
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        for k in 0..n {
            // A few log records per span of a trace.
            if k % 4 == 0 {
                trace_id = rng.id::<16>();
            }
            if k % 2 == 0 {
                span_id = rng.id::<8>();
            }
            let (sev_text, sev, what) = *rng.pick(LOG_TEMPLATES);
            let route = *rng.pick(ROUTES);
            let order_id = rng.below(10_000_000);
            let user = rng.below(1_000_000);
            let ms = rng.below(2_000);
            let body = format!(
                "{what}: method={} route={} order_id={order_id} user_id=u{user} duration_ms={ms} status={}",
                rng.pick(METHODS),
                route,
                if sev == SeverityNumber::Error { 502 } else { 200 }
            );
            let t = now - 1_000_000_000 - rng.below(5_000_000_000);
            times.push(t);
            order.push(trace_id);
            records.push(LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t + 1_000_000 + rng.below(20_000_000),
                severity_number: sev as i32,
                severity_text: sev_text.to_string(),
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
                attributes: vec![
                    s("code.function.name", "handlers::orders::create"),
                    s("code.file.path", "src/handlers/orders.rs"),
                    i("code.line.number", 100 + rng.below(400) as i64),
                    s("thread.name", format!("tokio-runtime-worker-{}", rng.below(8))),
                    s("http.route", route),
                    s("enduser.id", format!("u{user}")),
                    i("order.items", 1 + rng.below(12) as i64),
                ],
                flags: 1,
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                ..Default::default()
            });
        }
        resource_logs.push(ResourceLogs {
            resource: Some(resource(&mut rng, (seed as usize + r) % SERVICES.len())),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope("tracing-opentelemetry")),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
        });
    }
    let req = ExportLogsServiceRequest { resource_logs };
    let bytes = req.encode_to_vec();
    // trace_id is field 9 of LogRecord: it follows the body and attributes, but
    // records are still encoded in order, so a forward scan finds each one.
    let mut offsets = Vec::with_capacity(order.len());
    let mut pos = 0;
    for id in &order {
        let at = find_from(&bytes, id, pos);
        offsets.push(at);
        pos = at + 16;
    }
    // time_unix_nano is field 1 of LogRecord (fixed64: key 0x09), first in each record.
    let mut time_offsets = Vec::with_capacity(times.len());
    let mut pos = 0;
    for t in &times {
        let mut key_and_time = vec![0x09];
        key_and_time.extend_from_slice(&t.to_le_bytes());
        let at = find_from(&bytes, &key_and_time, pos) + 1;
        time_offsets.push(at);
        pos = at + 8;
    }
    Prebuilt {
        bytes: Bytes::from(bytes),
        trace_id_offsets: offsets,
        time_offsets,
        built_at: now,
        items: batch as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_copies_move_every_record_time_by_the_time_since_the_build() {
        let p = build_logs(40, 7);
        let times = |bytes: Bytes| -> Vec<u64> {
            ExportLogsServiceRequest::decode(bytes)
                .unwrap()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|l| l.time_unix_nano)
                .collect()
        };
        let built = times(p.bytes.clone());
        std::thread::sleep(std::time::Duration::from_millis(5));
        let copy = times(p.instantiate(1));
        assert_eq!(built.len(), 40);
        let shift = copy[0] - built[0];
        assert!(shift >= 5_000_000, "{shift}");
        assert!(built.iter().zip(&copy).all(|(b, c)| c - b == shift), "every record moves by the same shift");
    }

    #[test]
    fn instantiate_changes_every_trace_id_consistently() {
        let p = build_traces(40, 7);
        let a = ExportTraceServiceRequest::decode(p.instantiate(1)).unwrap();
        let b = ExportTraceServiceRequest::decode(p.instantiate(2)).unwrap();
        let ids = |r: &ExportTraceServiceRequest| -> Vec<Vec<u8>> {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| s.trace_id.clone())
                .collect()
        };
        let (ia, ib) = (ids(&a), ids(&b));
        assert_eq!(ia.len(), 40);
        assert!(ia.iter().zip(&ib).all(|(x, y)| x != y));
        // Spans of one trace keep sharing their trace id.
        assert_eq!(ia[0], ia[1]);
        let l = build_logs(40, 7);
        let la = ExportLogsServiceRequest::decode(l.instantiate(3)).unwrap();
        assert_eq!(la.resource_logs.iter().map(|r| r.scope_logs[0].log_records.len()).sum::<usize>(), 40);
    }
}
