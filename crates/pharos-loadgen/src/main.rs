//! pharos-loadgen: send pre-built OTLP requests (traces or logs) over OTLP/gRPC or
//! OTLP/HTTP (protobuf) with N concurrent workers, as fast as possible or at a
//! target item rate, for a fixed duration; report throughput, errors and latency.
//!
//! Every run is bounded: after warm-up + duration the workers stop, in-flight
//! requests get at most `--timeout` to finish, and then the process exits.

mod data;
mod remote_write;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes};
use clap::{Parser, ValueEnum};
use data::Prebuilt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Grpc,
    Http,
    /// Prometheus remote write 1.0 (snappy, protobuf) on `/api/v1/write`; with `--signal metrics`.
    RemoteWrite,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Signal {
    Traces,
    Logs,
    /// Samples (remote write only).
    Metrics,
}

#[derive(Parser, Debug)]
#[command(version, about = "OTLP load generator for the Pharos ingestion benchmark")]
struct Args {
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// What to send.
    #[arg(long, value_enum, default_value = "traces")]
    signal: Signal,
    /// Server address, host:port (the OTLP/gRPC or OTLP/HTTP listener).
    #[arg(long)]
    endpoint: String,
    /// Spans or log records per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent workers (each has at most one request in flight).
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// gRPC: HTTP/2 connections shared by the workers. HTTP: ignored (one
    /// HTTP/1.1 keep-alive connection per worker).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Target items/s over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Distinct pre-built requests (trace ids are made unique per send anyway).
    #[arg(long, default_value_t = 64)]
    pool: usize,
    /// Tokio worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Remote write: active series, each written once per cycle (`--batch` samples per request).
    #[arg(long, default_value_t = 100_000)]
    series: u64,
    /// Remote write history mode: write this many seconds of past samples (ending now) for
    /// every series, in time order per series, then stop; `--duration` is only an upper bound
    /// and there is no warm-up. 0 = the live mode (one sample per series per cycle, as fast as
    /// it goes, for `--duration`).
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// History mode: seconds between two samples of a series (the scrape interval).
    #[arg(long, default_value_t = 15)]
    step: u64,
    /// History mode: the shape of the values and timestamps.
    #[arg(long, value_enum, default_value = "counter")]
    values: remote_write::Values,
    /// Free text copied into the JSON line (e.g. "pharos", "otelcol-nop").
    #[arg(long, default_value = "")]
    label: String,
}

/// Sends bytes as they are and returns the response bytes undecoded.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// What one worker measured.
struct WorkerStats {
    /// Request latency, send to response, in microseconds.
    latency: Histogram<u64>,
    /// Latency from the scheduled send time (rate mode; corrects for coordinated omission).
    latency_sched: Histogram<u64>,
    ok_requests: u64,
    accepted_items: u64,
    rejected_items: u64,
    bytes_sent: u64,
    errors: BTreeMap<String, u64>,
    /// Requests that started later than scheduled by more than one interval.
    late_starts: u64,
    /// When the last request of this worker finished.
    last_done: Instant,
}

impl WorkerStats {
    fn new() -> WorkerStats {
        WorkerStats {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
            latency_sched: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
            ok_requests: 0,
            accepted_items: 0,
            rejected_items: 0,
            bytes_sent: 0,
            errors: BTreeMap::new(),
            late_starts: 0,
            last_done: Instant::now(),
        }
    }
    fn merge(&mut self, o: WorkerStats) {
        self.latency.add(&o.latency).expect("histogram add");
        self.latency_sched.add(&o.latency_sched).expect("histogram add");
        self.ok_requests += o.ok_requests;
        self.accepted_items += o.accepted_items;
        self.rejected_items += o.rejected_items;
        self.bytes_sent += o.bytes_sent;
        self.late_starts += o.late_starts;
        self.last_done = self.last_done.max(o.last_done);
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// Outcome of one request.
enum Outcome {
    /// Accepted; items rejected by partial success.
    Ok {
        rejected: u64,
    },
    Err(String),
}

/// Per-worker transport.
enum Client {
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        path: http::uri::PathAndQuery,
    },
    Http {
        addr: String,
        path: &'static str,
        sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
        remote_write: bool,
    },
}

fn rejected_from(signal: Signal, body: &[u8]) -> u64 {
    match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_log_records.max(0) as u64),
        Signal::Metrics => 0,
    }
}

impl Client {
    async fn send(&mut self, signal: Signal, body: Bytes) -> Outcome {
        match self {
            Client::Grpc { grpc, path } => {
                if let Err(e) = grpc.ready().await {
                    return Outcome::Err(format!("grpc_not_ready: {e}"));
                }
                match grpc.unary(tonic::Request::new(body), path.clone(), RawCodec).await {
                    Ok(resp) => Outcome::Ok { rejected: rejected_from(signal, resp.get_ref()) },
                    Err(st) => Outcome::Err(format!("grpc_{:?}", st.code())),
                }
            }
            Client::Http { addr, path, sender, remote_write } => {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    match http1_connect(addr).await {
                        Ok(s) => *sender = Some(s),
                        Err(e) => return Outcome::Err(format!("connect: {}", e.root_cause())),
                    }
                }
                let s = sender.as_mut().expect("connected");
                if s.ready().await.is_err() {
                    *sender = None;
                    return Outcome::Err("http_conn_closed".into());
                }
                let mut req = http::Request::post(*path)
                    .header(http::header::HOST, addr.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                if *remote_write {
                    req = req
                        .header(http::header::CONTENT_ENCODING, "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
                }
                let req = req.body(Full::new(body)).expect("request");
                match s.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.into_body().collect().await {
                            Ok(b) if status.is_success() => {
                                Outcome::Ok { rejected: rejected_from(signal, &b.to_bytes()) }
                            }
                            Ok(_) => Outcome::Err(format!("http_{}", status.as_u16())),
                            Err(_) => {
                                *sender = None;
                                Outcome::Err("http_body_error".into())
                            }
                        }
                    }
                    Err(e) => {
                        *sender = None;
                        Outcome::Err(if e.is_canceled() {
                            "http_canceled".into()
                        } else {
                            "http_send_error".into()
                        })
                    }
                }
            }
        }
    }
}

async fn http1_connect(addr: &str) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
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
                eprintln!("pharos-loadgen: {e:#}; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

struct Plan {
    signal: Signal,
    remote_write: Option<remote_write::RemoteWriteGen>,
    history: Option<remote_write::HistoryGen>,
    pool: Arc<Vec<Prebuilt>>,
    seq: Arc<AtomicU64>,
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
    let n_pool = plan.pool.len();
    // Stagger the schedules of the workers over one interval.
    let mut next = plan.interval.map(|iv| plan.start + iv.mul_f64(idx as f64 / plan.workers as f64));
    let mut k = idx;
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
        let pre = &plan.pool[k % n_pool];
        let mut items = pre.items;
        let body = if let Some(history) = &plan.history {
            // Request number `local` of this worker's shard; it is sent again after an error.
            match history.request(idx as u64, local) {
                Some((body, n)) => {
                    items = n;
                    body
                }
                None => break,
            }
        } else {
            let seq = plan.seq.fetch_add(1, Ordering::Relaxed);
            match &plan.remote_write {
                Some(generator) => generator.request(seq),
                None => pre.instantiate(seq),
            }
        };
        k += 1;
        let len = body.len() as u64;
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(plan.timeout, client.send(plan.signal, body)).await {
            Ok(o) => o,
            Err(_) => {
                if let Client::Http { sender, .. } = &mut client {
                    *sender = None;
                }
                Outcome::Err("timeout".into())
            }
        };
        let done = Instant::now();
        st.last_done = st.last_done.max(done);
        match &outcome {
            Outcome::Ok { .. } => local += 1,
            Outcome::Err(_) if plan.history.is_some() => tokio::time::sleep(Duration::from_millis(100)).await,
            Outcome::Err(_) => {}
        }
        if done >= plan.measure_from && done <= plan.stop_at {
            st.bytes_sent += len;
            let us = |d: Duration| (d.as_micros() as u64).clamp(1, 120_000_000);
            match outcome {
                Outcome::Ok { rejected } => {
                    st.ok_requests += 1;
                    st.accepted_items += items.saturating_sub(rejected);
                    st.rejected_items += rejected;
                    st.latency.record(us(done - sent)).ok();
                    st.latency_sched.record(us(done.saturating_duration_since(scheduled))).ok();
                }
                Outcome::Err(kind) => {
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

#[derive(Serialize)]
struct Latency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

fn lat(h: &Histogram<u64>) -> Latency {
    let ms = |v: u64| v as f64 / 1000.0;
    Latency {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    }
}

#[derive(Serialize)]
struct Report<'a> {
    kind: &'static str,
    label: &'a str,
    protocol: Protocol,
    signal: Signal,
    endpoint: &'a str,
    batch: usize,
    workers: usize,
    connections: usize,
    target_rate: u64,
    duration_s: f64,
    request_bytes_avg: u64,
    requests_ok: u64,
    requests_err: u64,
    errors: &'a BTreeMap<String, u64>,
    items_accepted: u64,
    items_rejected: u64,
    items_per_sec: f64,
    mb_per_sec: f64,
    late_starts: u64,
    /// CPU seconds (user+system) the load generator itself used for the whole run.
    loadgen_cpu_s: f64,
    latency: Latency,
    latency_from_schedule: Option<Latency>,
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

fn main() -> Result<()> {
    let args = Args::parse();
    if args.workers == 0 || args.batch == 0 || args.pool == 0 || args.connections == 0 {
        bail!("--workers, --batch, --pool and --connections must be positive");
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    // Hard bound: whatever happens, the process is gone shortly after the run.
    let hard = Duration::from_secs_f64(args.warmup + args.duration + args.timeout + 15.0);
    std::thread::spawn(move || {
        std::thread::sleep(hard);
        eprintln!("pharos-loadgen: hard deadline reached, exiting");
        std::process::exit(3);
    });
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    if (args.protocol == Protocol::RemoteWrite) != (args.signal == Signal::Metrics) {
        bail!("--protocol remote-write goes with --signal metrics, and only with it");
    }
    let pool: Vec<Prebuilt> = (0..args.pool)
        .map(|p| match args.signal {
            Signal::Traces => data::build_traces(args.batch, p as u64 + 1),
            Signal::Logs => data::build_logs(args.batch, p as u64 + 1),
            Signal::Metrics => Prebuilt {
                bytes: Bytes::new(),
                trace_id_offsets: Vec::new(),
                time_offsets: Vec::new(),
                built_at: 0,
                items: args.batch as u64,
            },
        })
        .collect();
    let avg_bytes = pool.iter().map(|p| p.bytes.len() as u64).sum::<u64>() / pool.len() as u64;
    eprintln!(
        "pharos-loadgen: built {} {:?} requests of {} items, {} bytes on average, in {:?}",
        pool.len(),
        args.signal,
        args.batch,
        avg_bytes,
        t0.elapsed()
    );

    let clients: Vec<Client> = match args.protocol {
        Protocol::Grpc => {
            let path = match args.signal {
                Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                _ => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
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
                    let mut grpc = tonic::client::Grpc::new(channels[w % channels.len()].clone());
                    grpc = grpc.max_decoding_message_size(16 << 20).max_encoding_message_size(64 << 20);
                    Client::Grpc { grpc, path: http::uri::PathAndQuery::from_static(path) }
                })
                .collect()
        }
        Protocol::Http | Protocol::RemoteWrite => {
            let path = match args.signal {
                Signal::Traces => "/v1/traces",
                Signal::Logs => "/v1/logs",
                Signal::Metrics => "/api/v1/write",
            };
            let remote_write = args.protocol == Protocol::RemoteWrite;
            // Check the endpoint once; each worker then connects (and reconnects) by itself.
            retry(|| http1_connect(&args.endpoint)).await?;
            (0..args.workers)
                .map(|_| Client::Http { addr: args.endpoint.clone(), path, sender: None, remote_write })
                .collect()
        }
    };

    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.batch as f64 * args.workers as f64 / args.rate as f64));
    let start = Instant::now();
    let warmup = if args.history > 0 { 0.0 } else { args.warmup };
    let measure_from = start + Duration::from_secs_f64(warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.duration);
    let remote_write = (args.protocol == Protocol::RemoteWrite).then(|| remote_write::RemoteWriteGen {
        series: args.series.max(1),
        batch: args.batch as u64,
        start_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    });
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let history = (args.protocol == Protocol::RemoteWrite && args.history > 0).then(|| {
        let step_ms = args.step.max(1) as i64 * 1000;
        let steps = args.history * 1000 / step_ms as u64;
        remote_write::HistoryGen {
            series: args.series.max(1),
            batch: args.batch as u64,
            workers: args.workers as u64,
            steps,
            step_ms,
            // Aligned to the step, the last sample a step before now.
            start_ms: (now_ms / step_ms - steps as i64) * step_ms,
            values: args.values,
        }
    });
    if let Some(h) = &history {
        eprintln!(
            "pharos-loadgen: history mode, {} series x {} samples {} s apart = {} samples, {:?} values",
            h.series,
            h.steps,
            args.step,
            h.total(),
            h.values
        );
    }
    let plan = Arc::new(Plan {
        signal: args.signal,
        remote_write,
        history,
        pool: Arc::new(pool),
        seq: Arc::new(AtomicU64::new(0)),
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

    // The history mode ends when every sample is sent: its rate is over the time it took.
    let secs = if plan.history.is_some() { (total.last_done - start).as_secs_f64() } else { args.duration };
    let errs: u64 = total.errors.values().sum();
    let report = Report {
        kind: "pharos-loadgen",
        label: &args.label,
        protocol: args.protocol,
        signal: args.signal,
        endpoint: &args.endpoint,
        batch: args.batch,
        workers: args.workers,
        connections: if args.protocol == Protocol::Grpc { args.connections } else { args.workers },
        target_rate: args.rate,
        duration_s: secs,
        request_bytes_avg: avg_bytes,
        requests_ok: total.ok_requests,
        requests_err: errs,
        errors: &total.errors,
        items_accepted: total.accepted_items,
        items_rejected: total.rejected_items,
        items_per_sec: (total.accepted_items as f64 / secs).round(),
        mb_per_sec: (total.bytes_sent as f64 / secs / 1e6 * 10.0).round() / 10.0,
        late_starts: total.late_starts,
        loadgen_cpu_s: self_cpu_seconds(),
        latency: lat(&total.latency),
        latency_from_schedule: interval.map(|_| lat(&total.latency_sched)),
    };

    let l = &report.latency;
    println!("== pharos-loadgen {} ==", if args.label.is_empty() { "" } else { &args.label });
    println!(
        "  {:?} {:?} -> {}  batch={} workers={} connections={} rate={} duration={}s warmup={}s",
        args.protocol,
        args.signal,
        args.endpoint,
        args.batch,
        args.workers,
        report.connections,
        if args.rate == 0 { "max".to_string() } else { format!("{}/s", args.rate) },
        secs,
        args.warmup
    );
    println!(
        "  accepted: {} items in {} requests = {:.0} items/s ({:.1} MB/s of {} B requests)",
        report.items_accepted, report.requests_ok, report.items_per_sec, report.mb_per_sec, avg_bytes
    );
    println!("  rejected items (partial success): {}", report.items_rejected);
    println!("  errors: {} {:?}", errs, total.errors);
    println!("  load generator CPU: {:.1} s", report.loadgen_cpu_s);
    println!(
        "  latency ms: p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} mean={:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    if let Some(s) = &report.latency_from_schedule {
        println!(
            "  latency from schedule ms: p50={:.2} p90={:.2} p99={:.2} max={:.2}  (late starts: {})",
            s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, report.late_starts
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
