//! pharos-loadgen: sends realistic telemetry to a receiver and measures what it acknowledges.
//!
//! Protocols: OTLP over gRPC and HTTP (protobuf or JSON) for traces, logs and metrics;
//! Prometheus remote write 1.0 and 2.0; Loki push (protobuf + snappy, or JSON). N concurrent
//! workers send as fast as possible or at a target item rate, for a fixed duration after a
//! warm-up; everything sent derives from `--seed` (apart from timestamps), so runs repeat.
//! [`run`] returns a [`Summary`] (printed as the last line of the binary's output, JSON), and
//! with `--manifest FILE` every acknowledged request is listed there.
//!
//! Every run is bounded: after warm-up + duration the workers stop, in-flight requests get at
//! most `--timeout` to finish.

mod client;
mod logs;
mod manifest;
mod metrics;
mod remote_write;
mod rng;
mod shape;
mod traces;

pub use client::Written;
pub use manifest::{Content, StreamRange};
pub use remote_write::Values;
pub use shape::{LogFormat, Shape};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use client::{Client, HttpKind, Outcome};
use hdrhistogram::Histogram;
use manifest::Manifest;
use prost::Message;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Endpoint;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP on `/v1/<signal>` (`--encoding protobuf` or `json`).
    Http,
    /// Prometheus remote write 1.0 (snappy, protobuf) on `/api/v1/write`; with `--signal metrics`.
    RemoteWrite,
    /// Prometheus remote write 2.0 (symbols, metadata, exemplars, created timestamps).
    RemoteWrite2,
    /// Loki push on `/loki/api/v1/push` (`--encoding protobuf`: snappy `PushRequest`, or `json`);
    /// with `--signal logs`.
    Loki,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Protobuf,
    /// OTLP/JSON (hex trace ids, integer enums) or Loki's JSON push.
    Json,
}

#[derive(Parser, Debug, Clone)]
#[command(version, about = "Load generator for Pharos (and any OTLP, remote write or Loki receiver)")]
pub struct Args {
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// What to send.
    #[arg(long, value_enum, default_value = "traces")]
    pub signal: Signal,
    /// Body encoding for `--protocol http` and `loki`.
    #[arg(long, value_enum, default_value = "protobuf")]
    pub encoding: Encoding,
    /// Server address, host:port.
    #[arg(long)]
    pub endpoint: String,
    /// Items (spans, log records, samples) per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent workers (each has at most one request in flight).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// gRPC: HTTP/2 connections shared by the workers. HTTP: ignored (one HTTP/1.1 keep-alive
    /// connection per worker).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Target items/s over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// OTLP traces and logs: distinct pre-built requests (trace ids are made unique per send
    /// anyway, log times are moved to the time of the send).
    #[arg(long, default_value_t = 64)]
    pub pool: usize,
    /// Tokio worker threads (default: number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of all content: the same seed sends the same content (timestamps apart).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Services (OTLP resources; Loki `service_name` streams).
    #[arg(long, default_value_t = 5)]
    pub services: usize,
    /// Levels of spans in a trace (1 = root spans only).
    #[arg(long, default_value_t = 2)]
    pub span_depth: usize,
    /// Children of each span above the last level (depth 2, fan-out 7: 8 spans per trace).
    #[arg(long, default_value_t = 7)]
    pub span_fanout: usize,
    /// Extra attributes `bench.attr.<k>` per span and log record.
    #[arg(long, default_value_t = 0)]
    pub attributes: usize,
    /// Distinct values of each extra attribute.
    #[arg(long, default_value_t = 100)]
    pub attribute_cardinality: u64,
    /// Pad log bodies to this many bytes (0 = natural size, about 100 bytes).
    #[arg(long, default_value_t = 0)]
    pub log_body_size: usize,
    /// Log body format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Metrics: active series, each written once per cycle (`--batch` samples per request).
    #[arg(long, default_value_t = 100_000)]
    pub series: u64,
    /// Metrics: fraction of the series replaced by new ones every `--churn-every` seconds.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Metrics: seconds between two churns.
    #[arg(long, default_value_t = 60.0)]
    pub churn_every: f64,
    /// Remote write history mode: write this many seconds of past samples (ending now) for
    /// every series, in time order per series, then stop; `--duration` is only an upper bound
    /// and there is no warm-up. 0 = the live mode.
    #[arg(long, default_value_t = 0)]
    pub history: u64,
    /// History mode: seconds between two samples of a series (the scrape interval).
    #[arg(long, default_value_t = 15)]
    pub step: u64,
    /// History mode: the shape of the values and timestamps.
    #[arg(long, value_enum, default_value = "counter")]
    pub values: Values,
    /// Tenant sent as `X-Scope-OrgID` (HTTP protocols).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Write one JSON line per acknowledged request (what it carried) to this file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Free text copied into the JSON line (e.g. "pharos", "otelcol-nop").
    #[arg(long, default_value = "")]
    pub label: String,
}

impl Args {
    pub fn shape(&self) -> Shape {
        Shape {
            services: self.services,
            span_depth: self.span_depth,
            span_fanout: self.span_fanout,
            attributes: self.attributes,
            attribute_cardinality: self.attribute_cardinality,
            log_body_size: self.log_body_size,
            log_format: self.log_format,
            series: self.series,
            churn: self.churn,
            churn_every_s: self.churn_every,
        }
    }
}

/// What one worker measured.
struct WorkerStats {
    /// Request latency, send to response, in microseconds.
    latency: Histogram<u64>,
    /// Latency from the scheduled send time (rate mode; corrects for coordinated omission).
    latency_sched: Histogram<u64>,
    requests_sent: u64,
    items_sent: u64,
    ok_requests: u64,
    accepted_items: u64,
    rejected_items: u64,
    bytes_sent: u64,
    /// Requests that failed, by reason.
    errors: BTreeMap<String, u64>,
    /// Items not acknowledged, by reason (the error of their request, `partial_success`,
    /// `rw2_not_written`).
    rejected_by_reason: BTreeMap<String, u64>,
    written: Written,
    rw2_without_headers: u64,
    /// Requests that started later than scheduled by more than one interval.
    late_starts: u64,
    /// When the last request of this worker finished.
    last_done: Instant,
    /// All sends and bytes (warm-up included), for the average request size.
    all_requests: u64,
    all_bytes: u64,
    manifest_lines: u64,
}

impl WorkerStats {
    fn new() -> WorkerStats {
        WorkerStats {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
            latency_sched: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
            requests_sent: 0,
            items_sent: 0,
            ok_requests: 0,
            accepted_items: 0,
            rejected_items: 0,
            bytes_sent: 0,
            errors: BTreeMap::new(),
            rejected_by_reason: BTreeMap::new(),
            written: Written::default(),
            rw2_without_headers: 0,
            late_starts: 0,
            last_done: Instant::now(),
            all_requests: 0,
            all_bytes: 0,
            manifest_lines: 0,
        }
    }
    fn merge(&mut self, o: WorkerStats) {
        self.latency.add(&o.latency).expect("histogram add");
        self.latency_sched.add(&o.latency_sched).expect("histogram add");
        self.requests_sent += o.requests_sent;
        self.items_sent += o.items_sent;
        self.ok_requests += o.ok_requests;
        self.accepted_items += o.accepted_items;
        self.rejected_items += o.rejected_items;
        self.bytes_sent += o.bytes_sent;
        self.late_starts += o.late_starts;
        self.last_done = self.last_done.max(o.last_done);
        self.written.samples += o.written.samples;
        self.written.histograms += o.written.histograms;
        self.written.exemplars += o.written.exemplars;
        self.rw2_without_headers += o.rw2_without_headers;
        self.all_requests += o.all_requests;
        self.all_bytes += o.all_bytes;
        self.manifest_lines += o.manifest_lines;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.rejected_by_reason {
            *self.rejected_by_reason.entry(k).or_default() += v;
        }
    }
}

/// A request ready to send.
struct Built {
    body: Bytes,
    items: u64,
    content: Option<Content>,
}

/// What the workers send.
enum Source {
    Traces { pool: Vec<traces::PrebuiltTraces>, json: bool },
    Logs { pool: Vec<logs::PrebuiltLogs>, json: bool },
    Loki { shape: Shape, batch: usize, json: bool },
    Live { live: metrics::Live, form: LiveForm },
    History(remote_write::HistoryGen),
}

#[derive(Clone, Copy, PartialEq)]
enum LiveForm {
    Rw1,
    Rw2,
    Otlp { json: bool },
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn json_of<T: Serialize>(m: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(m).expect("OTLP/JSON"))
}

impl Source {
    /// Request `seq` of the run, the `local`-th of worker `worker` (live metrics and history
    /// mode: request `local` of that worker's shard of the series), or None when the history is
    /// all sent.
    fn build(&self, plan: &Plan, worker: u64, seq: u64, local: u64, want: bool) -> Option<Built> {
        let seed = plan.seed;
        Some(match self {
            Source::Traces { pool, json } => {
                let p = &pool[(seq % pool.len() as u64) as usize];
                let mut body = p.instantiate(seed, seq);
                if *json {
                    let req =
                        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                            body,
                        )
                        .expect("own encoding");
                    body = json_of(&req);
                }
                let content = want.then(|| Content::Traces {
                    trace_ids: p.trace_ids(seed, seq),
                    from_ns: p.from_ns,
                    to_ns: p.to_ns,
                });
                Built { body, items: p.items, content }
            }
            Source::Logs { pool, json } => {
                let p = &pool[(seq % pool.len() as u64) as usize];
                let (mut body, shift) = p.instantiate(now_nanos(), seed, seq);
                if *json {
                    let req =
                        opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(
                            body,
                        )
                        .expect("own encoding");
                    body = json_of(&req);
                }
                let content = want
                    .then(|| Content::Logs { streams: p.streams.iter().map(|s| s.shifted(shift)).collect() });
                Built { body, items: p.items, content }
            }
            Source::Loki { shape, batch, json } => {
                let (req, streams) = logs::loki_push(shape, *batch, seed, seq, now_nanos());
                let body = if *json {
                    Bytes::from(logs::loki_json(&req))
                } else {
                    Bytes::from(metrics::snappy(&req.encode_to_vec()))
                };
                Built { body, items: *batch as u64, content: want.then_some(Content::Logs { streams }) }
            }
            Source::Live { live, form } => {
                let epoch = (plan.start.elapsed().as_secs_f64() / live.shape.churn_every_s) as u64;
                let epoch = if live.shape.churn > 0.0 { epoch } else { 0 };
                let points = live.points(worker, local, epoch);
                let body = match form {
                    LiveForm::Rw1 => Bytes::from(live.rw1(&points)),
                    LiveForm::Rw2 => Bytes::from(live.rw2(&points, seq).0),
                    LiveForm::Otlp { json: false } => Bytes::from(live.otlp(&points).encode_to_vec()),
                    LiveForm::Otlp { json: true } => json_of(&live.otlp(&points)),
                };
                let otlp = matches!(form, LiveForm::Otlp { .. });
                let content = want.then(|| {
                    let mut series: Vec<String> =
                        points.iter().map(|p| metrics::selector(p.id, otlp)).collect();
                    // One entry per sample (a small shard may hold a series more than once).
                    series.sort();
                    Content::Samples {
                        series,
                        from_ms: points.iter().map(|p| p.timestamp_ms).min().unwrap_or(0),
                        to_ms: points.iter().map(|p| p.timestamp_ms).max().unwrap_or(0),
                    }
                });
                Built { body, items: points.len() as u64, content }
            }
            Source::History(h) => {
                let series = h.request(worker, local)?;
                let content = want.then(|| {
                    let mut sel: Vec<String> = series
                        .iter()
                        .map(|t| {
                            let mut name = String::new();
                            let mut rest = Vec::new();
                            for l in &t.labels {
                                if l.name == "__name__" {
                                    name = l.value.clone();
                                } else {
                                    rest.push(format!("{}=\"{}\"", l.name, l.value));
                                }
                            }
                            format!("{name}{{{}}}", rest.join(","))
                        })
                        .collect();
                    // One entry per sample (a small shard may hold a series more than once).
                    sel.sort();
                    let ts = series.iter().flat_map(|t| t.samples.iter().map(|s| s.timestamp));
                    Content::Samples {
                        series: sel,
                        from_ms: ts.clone().min().unwrap_or(0),
                        to_ms: ts.max().unwrap_or(0),
                    }
                });
                let items = series.len() as u64;
                let raw = remote_write::WriteRequest { timeseries: series }.encode_to_vec();
                Built { body: Bytes::from(metrics::snappy(&raw)), items, content }
            }
        })
    }
}

struct Plan {
    signal: Signal,
    seed: u64,
    source: Source,
    manifest: Option<Manifest>,
    seq: AtomicU64,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
    timeout: Duration,
    /// Per-worker interval between request starts (rate mode).
    interval: Option<Duration>,
    workers: usize,
}

async fn worker(idx: usize, mut client: Client, plan: Arc<Plan>) -> WorkerStats {
    let mut st = WorkerStats::new();
    let history = matches!(plan.source, Source::History(_));
    // Stagger the schedules of the workers over one interval.
    let mut next = plan.interval.map(|iv| plan.start + iv.mul_f64(idx as f64 / plan.workers as f64));
    let mut local = 0u64;
    loop {
        if let (Some(iv), Some(at)) = (plan.interval, next) {
            let now = Instant::now();
            if at > now {
                tokio::time::sleep_until(at.into()).await;
            } else if now - at > iv {
                st.late_starts += 1;
            }
        }
        let scheduled = next.unwrap_or_else(Instant::now);
        if scheduled >= plan.stop_at || Instant::now() >= plan.stop_at {
            break;
        }
        // History mode: request number `local` of this worker's shard, sent again after an
        // error; otherwise the next number of the run (live metrics: and the next request of
        // this worker's shard, not sent again).
        let seq = if history { local } else { plan.seq.fetch_add(1, Ordering::Relaxed) };
        let Some(built) = plan.source.build(&plan, idx as u64, seq, local, plan.manifest.is_some()) else {
            break;
        };
        if !history {
            local += 1;
        }
        let items = built.items;
        let len = built.body.len() as u64;
        st.all_requests += 1;
        st.all_bytes += len;
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(plan.timeout, client.send(plan.signal, built.body)).await {
            Ok(o) => o,
            Err(_) => {
                client.reset();
                Outcome::Err("timeout".into())
            }
        };
        let done = Instant::now();
        st.last_done = st.last_done.max(done);
        let mut unwritten = 0;
        match &outcome {
            Outcome::Ok { rejected, written } => {
                // Remote write 2.0: what the `-Written` headers fall short of is refused too.
                if let Some(w) = written {
                    unwritten = items.saturating_sub(rejected + w.samples + w.histograms);
                }
                if let (Some(m), Some(c)) = (&plan.manifest, &built.content) {
                    m.record(seq, signal_name(plan.signal), items, rejected + unwritten, c);
                    st.manifest_lines += 1;
                }
                if history {
                    local += 1;
                }
            }
            Outcome::Err(_) if history => tokio::time::sleep(Duration::from_millis(100)).await,
            Outcome::Err(_) => {}
        }
        if done >= plan.measure_from && done <= plan.stop_at {
            st.bytes_sent += len;
            st.requests_sent += 1;
            st.items_sent += items;
            let us = |d: Duration| (d.as_micros() as u64).clamp(1, 120_000_000);
            match outcome {
                Outcome::Ok { rejected, written } => {
                    st.ok_requests += 1;
                    let refused = rejected + unwritten;
                    st.accepted_items += items.saturating_sub(refused);
                    st.rejected_items += refused;
                    if rejected > 0 {
                        *st.rejected_by_reason.entry("partial_success".into()).or_default() += rejected;
                    }
                    if unwritten > 0 {
                        *st.rejected_by_reason.entry("rw2_not_written".into()).or_default() += unwritten;
                    }
                    match written {
                        Some(w) => {
                            st.written.samples += w.samples;
                            st.written.histograms += w.histograms;
                            st.written.exemplars += w.exemplars;
                        }
                        None if matches!(plan.source, Source::Live { form: LiveForm::Rw2, .. }) => {
                            st.rw2_without_headers += 1
                        }
                        None => {}
                    }
                    st.latency.record(us(done - sent)).ok();
                    st.latency_sched.record(us(done.saturating_duration_since(scheduled))).ok();
                }
                Outcome::Err(kind) => {
                    *st.rejected_by_reason.entry(kind.clone()).or_default() += items;
                    *st.errors.entry(kind).or_default() += 1;
                }
            }
        } else if let Outcome::Err(_) = outcome {
            // Outside the window: back off a little on errors so a failing
            // server is not hammered during warm-up.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let (Some(iv), Some(at)) = (plan.interval, next.as_mut()) {
            *at += iv;
        }
    }
    st
}

fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "traces",
        Signal::Logs => "logs",
        Signal::Metrics => "metrics",
    }
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn lat(h: &Histogram<u64>) -> Latency {
    let ms = |v: u64| v as f64 / 1000.0;
    Latency {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    }
}

/// Remote write 2.0: what the receiver's `-Written` headers added up to.
#[derive(Serialize, Debug, Clone)]
pub struct Rw2Written {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
    /// Successful answers without any `-Written` header (a 1.0 receiver, per the spec).
    pub answers_without_headers: u64,
}

/// The JSON summary of a run (the measured window, after the warm-up).
#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    pub kind: &'static str,
    pub label: String,
    pub protocol: Protocol,
    pub signal: Signal,
    pub encoding: Encoding,
    pub endpoint: String,
    pub batch: usize,
    pub workers: usize,
    pub connections: usize,
    pub target_rate: u64,
    pub duration_s: f64,
    pub seed: u64,
    pub shape: Shape,
    pub request_bytes_avg: u64,
    pub requests_sent: u64,
    pub requests_ok: u64,
    pub requests_err: u64,
    /// Failed requests by reason (`http_<status>`, `grpc_<code>`, `timeout`, `connect: ...`).
    pub errors: BTreeMap<String, u64>,
    pub items_sent: u64,
    /// Items acknowledged (accepted and not refused by a partial success).
    pub items_accepted: u64,
    /// Items of successful answers that were refused (partial success, remote write 2.0
    /// `-Written` counts short of what was sent).
    pub items_rejected: u64,
    /// Items not acknowledged, by reason: the error of their request, `partial_success`,
    /// `rw2_not_written`.
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub items_per_sec: f64,
    pub mb_per_sec: f64,
    pub late_starts: u64,
    /// CPU seconds (user+system) the load generator's process used (0 off Linux).
    pub loadgen_cpu_s: f64,
    pub latency: Latency,
    pub latency_from_schedule: Option<Latency>,
    pub rw2_written: Option<Rw2Written>,
    /// The manifest file and the number of lines written to it (the whole run, warm-up too).
    pub manifest: Option<String>,
    pub manifest_requests: u64,
}

/// utime + stime of this process from /proc/self/stat (Linux; 0 elsewhere).
fn self_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the ")" that ends the command name; utime and stime are
    // fields 14 and 15 of the whole line, i.e. 12 and 13 after ")".
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    ((ticks(11) + ticks(12)) / 100.0 * 100.0).round() / 100.0
}

/// A few attempts, 250 ms apart, at connecting (the server may still be settling).
async fn retry<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 8 => {
                tracing::warn!("{e:#}; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn check(args: &Args) -> Result<()> {
    if args.workers == 0 || args.batch == 0 || args.pool == 0 || args.connections == 0 {
        bail!("--workers, --batch, --pool and --connections must be positive");
    }
    args.shape().check()?;
    match (args.protocol, args.signal) {
        (Protocol::RemoteWrite | Protocol::RemoteWrite2, s) if s != Signal::Metrics => {
            bail!("--protocol {:?} goes with --signal metrics", args.protocol)
        }
        (Protocol::Loki, s) if s != Signal::Logs => bail!("--protocol loki goes with --signal logs"),
        (Protocol::Grpc | Protocol::RemoteWrite | Protocol::RemoteWrite2, _)
            if args.encoding == Encoding::Json =>
        {
            bail!("--encoding json is for --protocol http and loki")
        }
        _ => {}
    }
    if args.history > 0 && args.protocol != Protocol::RemoteWrite {
        bail!("--history is a mode of --protocol remote-write");
    }
    // Live metrics: each worker writes its own shard of the series, so that no series ever
    // goes backwards (the history mode shards too; its spare workers just have nothing to do).
    if args.signal == Signal::Metrics && args.history == 0 && args.series < args.workers as u64 {
        bail!(
            "--series {} is less than --workers {}: each worker writes its own series (so that no \
             series goes backwards), give every worker at least one",
            args.series,
            args.workers
        );
    }
    if args.duration <= 0.0 || args.warmup < 0.0 || args.timeout <= 0.0 {
        bail!("--duration and --timeout must be positive, --warmup not negative");
    }
    Ok(())
}

/// Runs the load and returns its summary. Needs a tokio runtime (the binary makes one with
/// `--threads` workers).
pub async fn run(args: Args) -> Result<Summary> {
    check(&args)?;
    let t0 = Instant::now();
    let shape = args.shape();
    let json = args.encoding == Encoding::Json;
    let now_ms = (now_nanos() / 1_000_000) as i64;
    let source = match (args.protocol, args.signal) {
        (Protocol::Loki, _) => Source::Loki { shape: shape.clone(), batch: args.batch, json },
        (Protocol::RemoteWrite, _) if args.history > 0 => {
            let step_ms = args.step.max(1) as i64 * 1000;
            let steps = args.history * 1000 / step_ms as u64;
            let h = remote_write::HistoryGen {
                series: args.series.max(1),
                batch: args.batch as u64,
                workers: args.workers as u64,
                steps,
                step_ms,
                // Aligned to the step, the last sample a step before now.
                start_ms: (now_ms / step_ms - steps as i64) * step_ms,
                values: args.values,
            };
            tracing::info!(
                "history mode, {} series x {} samples {} s apart = {} samples, {:?} values",
                h.series,
                h.steps,
                args.step,
                h.total(),
                h.values
            );
            Source::History(h)
        }
        (p, Signal::Metrics) => Source::Live {
            live: metrics::Live {
                shape: shape.clone(),
                batch: args.batch as u64,
                workers: args.workers as u64,
                seed: args.seed,
                start_ms: now_ms,
            },
            form: match p {
                Protocol::RemoteWrite => LiveForm::Rw1,
                Protocol::RemoteWrite2 => LiveForm::Rw2,
                _ => LiveForm::Otlp { json },
            },
        },
        (_, Signal::Traces) => {
            let now = now_nanos();
            let pool: Vec<_> =
                (0..args.pool as u64).map(|p| traces::build(&shape, args.batch, args.seed, p, now)).collect();
            Source::Traces { pool, json }
        }
        (_, Signal::Logs) => {
            let now = now_nanos();
            let pool: Vec<_> = (0..args.pool as u64)
                .map(|p| logs::build_otlp(&shape, args.batch, args.seed, p, now))
                .collect();
            Source::Logs { pool, json }
        }
    };
    tracing::info!(
        "prepared {:?} {:?} of {} items per request in {:?}",
        args.protocol,
        args.signal,
        args.batch,
        t0.elapsed()
    );

    let clients: Vec<Client> = match args.protocol {
        Protocol::Grpc => {
            let path = match args.signal {
                Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            };
            let mut channels = Vec::with_capacity(args.connections);
            for _ in 0..args.connections {
                let ep = Endpoint::from_shared(format!("http://{}", args.endpoint))?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5))
                    .initial_stream_window_size(Some(4 << 20))
                    .initial_connection_window_size(Some(16 << 20));
                let ch = retry(|| async {
                    ep.connect().await.with_context(|| format!("grpc connect {}", args.endpoint))
                })
                .await?;
                channels.push(ch);
            }
            (0..args.workers)
                .map(|w| {
                    let grpc = tonic::client::Grpc::new(channels[w % channels.len()].clone())
                        .max_decoding_message_size(16 << 20)
                        .max_encoding_message_size(64 << 20);
                    Client::Grpc { grpc, path: http::uri::PathAndQuery::from_static(path) }
                })
                .collect()
        }
        p => {
            let (path, kind) = match (p, args.signal) {
                (Protocol::RemoteWrite, _) => ("/api/v1/write", HttpKind::RemoteWrite1),
                (Protocol::RemoteWrite2, _) => ("/api/v1/write", HttpKind::RemoteWrite2),
                (Protocol::Loki, _) => {
                    ("/loki/api/v1/push", if json { HttpKind::LokiJson } else { HttpKind::LokiProtobuf })
                }
                (_, s) => (
                    match s {
                        Signal::Traces => "/v1/traces",
                        Signal::Logs => "/v1/logs",
                        Signal::Metrics => "/v1/metrics",
                    },
                    if json { HttpKind::OtlpJson } else { HttpKind::OtlpProtobuf },
                ),
            };
            // Check the endpoint once; each worker then connects (and reconnects) by itself.
            retry(|| client::http1_connect(&args.endpoint)).await?;
            (0..args.workers)
                .map(|_| Client::Http {
                    addr: args.endpoint.clone(),
                    path,
                    kind,
                    tenant: args.tenant.clone(),
                    sender: None,
                })
                .collect()
        }
    };

    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.batch as f64 * args.workers as f64 / args.rate as f64));
    let start = Instant::now();
    let warmup = if args.history > 0 { 0.0 } else { args.warmup };
    let measure_from = start + Duration::from_secs_f64(warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.duration);
    let manifest = args.manifest.as_deref().map(Manifest::create).transpose()?;
    let plan = Arc::new(Plan {
        signal: args.signal,
        seed: args.seed,
        source,
        manifest,
        seq: AtomicU64::new(0),
        start,
        measure_from,
        stop_at,
        timeout: Duration::from_secs_f64(args.timeout),
        interval,
        workers: args.workers,
    });
    let handles: Vec<_> =
        clients.into_iter().enumerate().map(|(i, c)| tokio::spawn(worker(i, c, plan.clone()))).collect();
    let mut total = WorkerStats::new();
    for h in handles {
        total.merge(h.await?);
    }
    if let Some(m) = &plan.manifest {
        m.finish()?;
    }

    // The history mode ends when every sample is sent: its rate is over the time it took.
    let history = matches!(plan.source, Source::History(_));
    let secs = if history { (total.last_done - start).as_secs_f64() } else { args.duration };
    let errs: u64 = total.errors.values().sum();
    Ok(Summary {
        kind: "pharos-loadgen",
        label: args.label.clone(),
        protocol: args.protocol,
        signal: args.signal,
        encoding: args.encoding,
        endpoint: args.endpoint.clone(),
        batch: args.batch,
        workers: args.workers,
        connections: if args.protocol == Protocol::Grpc { args.connections } else { args.workers },
        target_rate: args.rate,
        duration_s: secs,
        seed: args.seed,
        shape,
        request_bytes_avg: total.all_bytes.checked_div(total.all_requests).unwrap_or(0),
        requests_sent: total.requests_sent,
        requests_ok: total.ok_requests,
        requests_err: errs,
        errors: total.errors,
        items_sent: total.items_sent,
        items_accepted: total.accepted_items,
        items_rejected: total.rejected_items,
        rejected_by_reason: total.rejected_by_reason,
        items_per_sec: (total.accepted_items as f64 / secs).round(),
        mb_per_sec: (total.bytes_sent as f64 / secs / 1e6 * 10.0).round() / 10.0,
        late_starts: total.late_starts,
        loadgen_cpu_s: self_cpu_seconds(),
        latency: lat(&total.latency),
        latency_from_schedule: interval.map(|_| lat(&total.latency_sched)),
        rw2_written: (args.protocol == Protocol::RemoteWrite2).then_some(Rw2Written {
            samples: total.written.samples,
            histograms: total.written.histograms,
            exemplars: total.written.exemplars,
            answers_without_headers: total.rw2_without_headers,
        }),
        manifest: args.manifest.as_ref().map(|p| p.display().to_string()),
        manifest_requests: total.manifest_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_spells_ids_in_hex_and_enums_as_integers() {
        let shape = Shape::default();
        let p = traces::build(&shape, 16, 1, 0, 1_800_000_000_000_000_000);
        let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            p.instantiate(1, 0),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json_of(&req)).unwrap();
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        let id = span["traceId"].as_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(p.trace_ids(1, 0).contains(&id.to_string()));
        assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
        assert!(span["kind"].is_u64(), "enums are integers: {}", span["kind"]);
        assert!(span["startTimeUnixNano"].is_string(), "64-bit integers are strings");
    }

    #[test]
    fn arguments_that_do_not_go_together_are_refused() {
        let parse = |extra: &[&str]| {
            let mut v = vec!["pharos-loadgen", "--endpoint", "127.0.0.1:1"];
            v.extend_from_slice(extra);
            check(&Args::try_parse_from(v).unwrap())
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--protocol", "loki", "--signal", "traces"]).is_err());
        assert!(parse(&["--protocol", "remote-write2", "--signal", "logs"]).is_err());
        assert!(parse(&["--protocol", "grpc", "--encoding", "json"]).is_err());
        assert!(parse(&["--protocol", "loki", "--signal", "logs", "--encoding", "json"]).is_ok());
        assert!(parse(&["--churn", "1.5", "--signal", "metrics", "--protocol", "remote-write"]).is_err());
        assert!(parse(&["--span-depth", "0"]).is_err());
        let few = ["--protocol", "remote-write", "--signal", "metrics", "--series", "4", "--workers", "8"];
        let err = parse(&few).unwrap_err().to_string();
        assert!(err.contains("--series 4") && err.contains("--workers 8"), "{err}");
        assert!(
            parse(&["--protocol", "remote-write2", "--signal", "metrics", "--series", "8", "--workers", "8"])
                .is_ok()
        );
        // The bench scripts' live remote-write loads.
        for (series, batch, workers) in
            [("1000000", "2000", "8"), ("200000", "2000", "4"), ("100000", "2000", "4")]
        {
            let flags =
                ["--protocol", "remote-write", "--signal", "metrics", "--series", series, "--batch", batch];
            assert!(parse(&[&flags[..], &["--workers", workers]].concat()).is_ok());
        }
    }
}
