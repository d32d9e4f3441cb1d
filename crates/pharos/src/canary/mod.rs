//! `pharos canary`: writes known telemetry to a Pharos continuously, reads it back through the
//! public query APIs, and reports what is missing, late or wrong, as metrics, in the log and in
//! a JSON summary at exit (docs/canary.md).
//!
//! Two tasks share one [`Ledger`] per signal. The writer, every `--interval`, writes one item per
//! signal over OTLP/HTTP and records the acknowledged ones. The checker, every `--interval`, asks
//! for the items that have waited `--check-delay` (a trace by id each; logs and metrics with one
//! range query for all of them) and, every `--recheck-interval`, for items found before. At exit
//! the writer stops and the checker keeps going until no item is pending, then looks for the
//! found items once more, all within `--final-check-timeout`.

mod client;
mod ledger;
mod signals;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use axum::{Router, routing::get};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::{
    client::{Http, base_url, encode_param},
    ledger::{Event, Ledger, Limits, Probe, Seen},
    signals::{Run, Signal, parse_log_streams, parse_matrix},
};

/// The most trace lookups in one check round (the rest wait for the next round).
const MAX_TRACE_LOOKUPS_PER_ROUND: usize = 200;
/// The most log entries asked for per query page.
const LOG_PAGE: usize = 1000;
/// Latencies kept per signal for the percentiles of the summary.
const LATENCY_SAMPLE: usize = 10_000;

/// `pharos canary` flags.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// Where Pharos takes OTLP/HTTP (`otlp.http.listen`).
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otlp_http: String,
    /// Where Pharos answers queries (`api.listen`).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    api: String,
    /// The tenant to write and read as (`X-Scope-OrgID`); none: Pharos's `default` tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The signals to check, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "traces,logs,metrics")]
    signals: Vec<Signal>,
    /// How often one item per signal is written, and pending items looked for.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long after its acknowledgement an item is first looked for.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    check_delay: Duration,
    /// An item not visible this long after its acknowledgement is counted late (once).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    late_after: Duration,
    /// An item not visible this long after its acknowledgement is counted missing.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    missing_after: Duration,
    /// How often items found before are looked for again (loss after ingestion: blocks, compaction).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    recheck_interval: Duration,
    /// How long found items are kept to be looked for again.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    recheck_window: Duration,
    /// The most found items kept per signal to be looked for again (the oldest are forgotten).
    #[arg(long, default_value_t = 10_000)]
    max_recheck: usize,
    /// Found traces looked up again per recheck (each is one request); all of them at exit.
    #[arg(long, default_value_t = 20)]
    recheck_traces: usize,
    /// The most items per signal waiting to be found; while full, writes are skipped.
    #[arg(long, default_value_t = 10_000)]
    max_pending: usize,
    /// How long to run; 0s runs until SIGINT or SIGTERM.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Where the canary serves its own /metrics.
    #[arg(long, default_value = "127.0.0.1:9465")]
    listen: SocketAddr,
    /// How often a summary line is logged.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    summary_interval: Duration,
    /// The longest one write or query may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// The longest the final check at exit may take; what it did not get to is reported as
    /// unchecked (pending items) or not rechecked (found items).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    final_check_timeout: Duration,
}

type SignalLabel = Vec<(&'static str, &'static str)>;

fn latency_histogram() -> Histogram {
    // 10ms to ~5.5 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

struct CanaryMetrics {
    written: Family<SignalLabel, Counter>,
    write_errors: Family<SignalLabel, Counter>,
    skipped: Family<SignalLabel, Counter>,
    found: Family<SignalLabel, Counter>,
    late: Family<SignalLabel, Counter>,
    missing: Family<SignalLabel, Counter>,
    wrong: Family<SignalLabel, Counter>,
    query_errors: Family<SignalLabel, Counter>,
    pending: Family<SignalLabel, Gauge>,
    latency: Family<SignalLabel, Histogram, fn() -> Histogram>,
}

impl CanaryMetrics {
    fn new() -> CanaryMetrics {
        CanaryMetrics {
            latency: Family::new_with_constructor(latency_histogram),
            written: Family::default(),
            write_errors: Family::default(),
            skipped: Family::default(),
            found: Family::default(),
            late: Family::default(),
            missing: Family::default(),
            wrong: Family::default(),
            query_errors: Family::default(),
            pending: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register("pharos_canary_written", "Items Pharos acknowledged", self.written.clone());
        r.register("pharos_canary_write_errors", "Writes refused or failed", self.write_errors.clone());
        r.register(
            "pharos_canary_skipped",
            "Writes skipped while --max-pending items waited",
            self.skipped.clone(),
        );
        r.register(
            "pharos_canary_found",
            "Acknowledged items seen by a query as written",
            self.found.clone(),
        );
        r.register("pharos_canary_late", "Items not visible within --late-after", self.late.clone());
        r.register(
            "pharos_canary_missing",
            "Items not visible within --missing-after, or gone after being seen",
            self.missing.clone(),
        );
        r.register(
            "pharos_canary_wrong",
            "Items a query returned different from what was written",
            self.wrong.clone(),
        );
        r.register(
            "pharos_canary_query_errors",
            "Queries that failed (no judgement made)",
            self.query_errors.clone(),
        );
        r.register("pharos_canary_pending", "Acknowledged items not seen yet", self.pending.clone());
        r.register(
            "pharos_canary_visible_latency_seconds",
            "From acknowledgement to the check that first saw the item",
            self.latency.clone(),
        );
    }
}

/// One signal's ledger and recent latencies.
struct SignalState {
    signal: Signal,
    label: SignalLabel,
    ledger: Mutex<Ledger>,
    latencies: Mutex<VecDeque<f64>>,
    /// The last found trace looked up again (the rechecks go round).
    recheck_cursor: Mutex<u64>,
    /// Whether the last write failed (errors are logged once per streak).
    failing: Mutex<bool>,
    /// Whether the last query failed (likewise).
    query_failing: Mutex<bool>,
    /// Found items the final check at exit did not get to look at (its time was up).
    not_rechecked: Mutex<usize>,
}

struct Canary {
    run: Run,
    http: Http,
    otlp: String,
    api: String,
    args: CanaryArgs,
    metrics: CanaryMetrics,
    signals: Vec<SignalState>,
}

/// `pharos canary`: runs until `--duration` or a signal, prints the JSON summary on stdout.
/// Exit status: 0 all good; 1 an item missing, wrong or unchecked, or a signal without any
/// acknowledged write; 2 bad flags or the canary could not start.
pub fn main(args: CanaryArgs) -> ExitCode {
    let filter = std::env::var("PHAROS_LOG_LEVEL").unwrap_or_else(|_| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pharos canary: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary).expect("a JSON value serializes"));
            if summary["ok"] == json!(true) { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("pharos canary: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn validate(args: &CanaryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.interval >= Duration::from_millis(10), "--interval must be at least 10ms");
    anyhow::ensure!(!args.signals.is_empty(), "--signals names no signal");
    anyhow::ensure!(args.late_after <= args.missing_after, "--late-after must not exceed --missing-after");
    anyhow::ensure!(args.check_delay < args.missing_after, "--check-delay must be below --missing-after");
    anyhow::ensure!(args.max_pending > 0, "--max-pending must be at least 1");
    anyhow::ensure!(!args.recheck_interval.is_zero(), "--recheck-interval must not be 0");
    Ok(())
}

async fn run(mut args: CanaryArgs) -> anyhow::Result<Value> {
    validate(&args)?;
    args.signals.sort();
    args.signals.dedup();
    let otlp = base_url(&args.otlp_http).context("--otlp-http")?;
    let api = base_url(&args.api).context("--api")?;
    let http = Http::new(args.tenant.as_deref(), args.request_timeout).context("--tenant")?;
    let run = Run { id: run_id() };
    let limits = Limits {
        check_delay: args.check_delay,
        late_after: args.late_after,
        missing_after: args.missing_after,
        recheck_window: args.recheck_window,
        max_pending: args.max_pending,
        max_recheck: args.max_recheck,
    };
    let signals: Vec<SignalState> = args
        .signals
        .iter()
        .map(|&signal| SignalState {
            signal,
            label: vec![("signal", signal.name())],
            ledger: Mutex::new(Ledger::new(limits)),
            latencies: Mutex::new(VecDeque::new()),
            recheck_cursor: Mutex::new(0),
            failing: Mutex::new(false),
            query_failing: Mutex::new(false),
            not_rechecked: Mutex::new(0),
        })
        .collect();
    let metrics = CanaryMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    // Every series exists from the start (at 0), so that rules see an increase from nothing.
    for s in &signals {
        let m = &metrics;
        for family in [
            &m.written,
            &m.write_errors,
            &m.skipped,
            &m.found,
            &m.late,
            &m.missing,
            &m.wrong,
            &m.query_errors,
        ] {
            let _ = family.get_or_create(&s.label);
        }
        let _ = m.pending.get_or_create(&s.label);
        let _ = m.latency.get_or_create(&s.label);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {} (--listen)", args.listen))?;
    let metrics_addr = listener.local_addr()?;
    let canary = Arc::new(Canary { run, http, otlp, api, args, metrics, signals });

    let registry = Arc::new(registry);
    let router = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut out = String::new();
                encode(&mut out, &registry).expect("writing to a String cannot fail");
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
            }
        }),
    );
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(crate::server::serve_http(
        "canary-metrics",
        listener,
        router,
        Duration::from_secs(10),
        server_stop.clone(),
        Duration::from_secs(1),
    ));

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    tokio::spawn(watch_signals(stop.clone(), abort.clone()));
    if !canary.args.duration.is_zero() {
        let stop = stop.clone();
        let duration = canary.args.duration;
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    info!(
        run = %canary.run.id,
        otlp_http = %canary.otlp,
        api = %canary.api,
        tenant = canary.args.tenant.as_deref().unwrap_or("default"),
        signals = ?canary.args.signals.iter().map(|s| s.name()).collect::<Vec<_>>(),
        metrics = %metrics_addr,
        "canary is running"
    );
    let started = Instant::now();
    let writer = tokio::spawn(write_loop(canary.clone(), stop.clone()));
    let checker = check_loop(canary.clone(), stop.clone());
    tokio::select! {
        () = checker => {}
        () = abort.cancelled() => warn!("second signal: stopping without the final check"),
    }
    stop.cancel();
    let _ = writer.await;
    if !abort.is_cancelled() {
        tokio::select! {
            () = final_pass(&canary) => {}
            () = abort.cancelled() => warn!("second signal: stopping without the final check"),
        }
    }
    let summary = canary.summary(started.elapsed());
    canary.log_summary();
    server_stop.cancel();
    let _ = server.await;
    Ok(summary)
}

/// A run id: unique enough that two canaries (or two runs of one) never share items.
fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nanos.to_le_bytes().iter().chain(std::process::id().to_le_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

async fn watch_signals(stop: CancellationToken, abort: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            warn!("cannot listen for SIGINT and SIGTERM");
            return;
        };
        for token in [&stop, &abort] {
            tokio::select! {
                _ = int.recv() => info!("received SIGINT"),
                _ = term.recv() => info!("received SIGTERM"),
            }
            token.cancel();
        }
    }
    #[cfg(not(unix))]
    for token in [&stop, &abort] {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        token.cancel();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn write_loop(canary: Arc<Canary>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(canary.args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut last_ms = 0i64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        seq += 1;
        // Unique, growing timestamps even if the clock steps back: items are told apart by them.
        last_ms = now_ms().max(last_ms + 1);
        let ts_ns = last_ms.saturating_mul(1_000_000);
        let mut writes = tokio::task::JoinSet::new();
        for index in 0..canary.signals.len() {
            let canary = canary.clone();
            writes.spawn(async move { canary.write(&canary.signals[index], seq, ts_ns).await });
        }
        // A stop cuts the writes in flight (dropping the set aborts them): an answer not seen is
        // no acknowledgement, as when it is lost.
        tokio::select! {
            () = async { while writes.join_next().await.is_some() {} } => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn check_loop(canary: Arc<Canary>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(canary.args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_recheck = Instant::now();
    let mut last_summary = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let recheck = last_recheck.elapsed() >= canary.args.recheck_interval;
        if recheck {
            last_recheck = Instant::now();
        }
        // A stop cuts the round in flight (the ledger is updated in single steps): the final
        // check takes over.
        tokio::select! {
            _ = canary.check_round(recheck, false, None) => {}
            () = stop.cancelled() => return,
        }
        if last_summary.elapsed() >= canary.args.summary_interval {
            last_summary = Instant::now();
            canary.log_summary();
        }
    }
}

/// After the last write: looks for pending items until each is found or missing (bounded by
/// `--missing-after` and a little more), then looks for every found item twice more; all of it
/// within `--final-check-timeout`. Items still pending then stay unchecked; found items the last
/// look did not reach are counted as not rechecked.
async fn final_pass(canary: &Canary) {
    info!(timeout = ?canary.args.final_check_timeout, "final check: waiting for the pending items");
    let started = Instant::now();
    let deadline = started + canary.args.final_check_timeout;
    let pending_deadline =
        deadline.min(started + canary.args.missing_after + 2 * canary.args.request_timeout);
    while canary.signals.iter().any(|s| lock(&s.ledger).census().pending > 0)
        && Instant::now() < pending_deadline
    {
        canary.check_round(false, false, Some(pending_deadline)).await;
        sleep_until_or(canary.args.interval, deadline).await;
    }
    for s in &canary.signals {
        let unchecked = lock(&s.ledger).pending_items();
        if !unchecked.is_empty() {
            let ids: Vec<String> =
                unchecked.iter().take(20).map(|p| canary.item_id(s.signal, p.seq)).collect();
            warn!(signal = %s.signal, count = unchecked.len(), first = ?ids, "canary items left unchecked: the queries for them failed or the final check's time was up");
        }
    }
    // Twice: an item found before is missing only when absent from two answers in a row. What the
    // last look did not reach (its time up) is counted as not rechecked.
    let mut unreached = Vec::new();
    for round in 0..2 {
        if round > 0 {
            sleep_until_or(canary.args.interval, deadline).await;
        }
        unreached = canary.check_round(true, true, Some(deadline)).await;
    }
    for (s, count) in canary.signals.iter().zip(unreached) {
        *lock(&s.not_rechecked) = count;
        if count > 0 {
            warn!(signal = %s.signal, count, timeout = ?canary.args.final_check_timeout, "canary found items not looked at again at exit: the final check's time was up");
        }
    }
}

/// Sleeps `d`, or until `deadline` if that comes first.
async fn sleep_until_or(d: Duration, deadline: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std((Instant::now() + d).min(deadline))).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a ledger lock leaves consistent data (updates are single steps).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Canary {
    async fn write(&self, s: &SignalState, seq: u64, ts_ns: i64) {
        if !lock(&s.ledger).has_room() {
            self.metrics.skipped.get_or_create(&s.label).inc();
            debug!(signal = %s.signal, seq, "ledger full, write skipped");
            return;
        }
        let url = format!("{}{}", self.otlp, s.signal.otlp_path());
        let body = self.run.encode(s.signal, seq, ts_ns);
        let outcome = match self.http.post(&url, "application/x-protobuf", body).await {
            Ok(a) if a.status.is_success() => match rejected(s.signal, &a.body) {
                None => Ok(()),
                Some(message) => Err(message),
            },
            Ok(a) => Err(format!("status {}: {}", a.status, String::from_utf8_lossy(&a.body).trim())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                lock(&s.ledger).record(seq, ts_ns, Instant::now());
                self.metrics.written.get_or_create(&s.label).inc();
                let mut failing = lock(&s.failing);
                if *failing {
                    info!(signal = %s.signal, seq, "canary writes succeed again");
                    *failing = false;
                }
            }
            Err(error) => {
                self.metrics.write_errors.get_or_create(&s.label).inc();
                let mut failing = lock(&s.failing);
                if *failing {
                    debug!(signal = %s.signal, seq, error, "canary write failed");
                } else {
                    warn!(signal = %s.signal, seq, error, "canary write failed (further failures are counted, not logged)");
                    *failing = true;
                }
            }
        }
    }

    /// Looks for due pending items and, with `recheck`, for found ones (all found traces with
    /// `all_traces`, else `--recheck-traces` of them). With a `deadline`, no request goes on past
    /// it (what was not answered by then is looked for again at the next round, if any). Returns,
    /// per signal, how many of the found items looked for got no answer.
    async fn check_round(&self, recheck: bool, all_traces: bool, deadline: Option<Instant>) -> Vec<usize> {
        let mut unanswered = Vec::with_capacity(self.signals.len());
        for s in &self.signals {
            let now = Instant::now();
            let (mut probes, found) = {
                let ledger = lock(&s.ledger);
                let max = if s.signal == Signal::Traces { MAX_TRACE_LOOKUPS_PER_ROUND } else { usize::MAX };
                (ledger.due(now, max), if recheck { ledger.found() } else { Vec::new() })
            };
            if s.signal == Signal::Traces && !all_traces && !found.is_empty() {
                // A few found traces per round, going round the ledger.
                let mut cursor = lock(&s.recheck_cursor);
                let start = found.iter().position(|p| p.seq > *cursor).unwrap_or(0);
                let picked: Vec<Probe> = found
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(self.args.recheck_traces.min(found.len()))
                    .copied()
                    .collect();
                if let Some(last) = picked.last() {
                    *cursor = last.seq;
                }
                probes.extend(picked);
            } else {
                probes.extend(found.iter().copied());
            }
            let mut found_unanswered = found.len();
            let time_left = deadline.is_none_or(|d| Instant::now() < d);
            if !probes.is_empty() && time_left {
                let (seen, error) = match s.signal {
                    Signal::Traces => self.look_up_traces(&probes, deadline).await,
                    Signal::Logs => split(within(deadline, self.query_logs(&probes)).await),
                    Signal::Metrics => split(within(deadline, self.query_metrics(&probes)).await),
                };
                match error {
                    Some(Failure::Error(e)) => self.query_error(s, &e),
                    // Cut short at exit: no judgement, and not the fault of Pharos.
                    Some(Failure::OutOfTime) => {}
                    None => self.query_ok(s),
                }
                if !found.is_empty() {
                    let answered: std::collections::HashSet<u64> = seen.iter().map(|(seq, _)| *seq).collect();
                    found_unanswered = found.iter().filter(|p| !answered.contains(&p.seq)).count();
                }
                let now = Instant::now();
                let events: Vec<Event> = {
                    let mut ledger = lock(&s.ledger);
                    seen.into_iter().filter_map(|(seq, seen)| ledger.observe(seq, seen, now)).collect()
                };
                for event in events {
                    self.report(s, event);
                }
            }
            unanswered.push(found_unanswered);
            let mut ledger = lock(&s.ledger);
            ledger.expire(Instant::now());
            self.metrics.pending.get_or_create(&s.label).set(ledger.census().pending as i64);
        }
        unanswered
    }

    /// Counts a failed query (logged once per streak of failures).
    fn query_error(&self, s: &SignalState, error: &str) {
        self.metrics.query_errors.get_or_create(&s.label).inc();
        let mut failing = lock(&s.query_failing);
        if *failing {
            debug!(signal = %s.signal, error, "canary query failed");
        } else {
            warn!(
                signal = %s.signal,
                error,
                "canary query failed; its items are looked for again later (further failures are counted, not logged)"
            );
            *failing = true;
        }
    }

    fn query_ok(&self, s: &SignalState) {
        let mut failing = lock(&s.query_failing);
        if *failing {
            info!(signal = %s.signal, "canary queries succeed again");
            *failing = false;
        }
    }

    /// What the answers said about the probes, and the error that stopped the look-ups, if any.
    /// One request per trace, in order, until one fails or the `deadline` comes.
    async fn look_up_traces(
        &self,
        probes: &[Probe],
        deadline: Option<Instant>,
    ) -> (Vec<(u64, Seen)>, Option<Failure>) {
        let mut seen = Vec::with_capacity(probes.len());
        for p in probes {
            let url = format!("{}/api/traces/{}", self.api, self.run.trace_id_hex(p.seq));
            let answer = match within(deadline, async {
                self.http.get(&url, Some("application/protobuf")).await.map_err(|e| e.to_string())
            })
            .await
            {
                Ok(a) => a,
                Err(failure) => return (seen, Some(failure)),
            };
            if answer.status == hyper::StatusCode::NOT_FOUND {
                seen.push((p.seq, Seen::Absent));
            } else if answer.status.is_success() {
                seen.push((p.seq, self.run.judge_trace(*p, &answer.body)));
            } else {
                let error = format!(
                    "{url}: status {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                );
                return (seen, Some(Failure::Error(error)));
            }
        }
        (seen, None)
    }

    async fn query_logs(&self, probes: &[Probe]) -> Result<Vec<(u64, Seen)>, String> {
        let (Some(first), Some(last)) =
            (probes.iter().map(|p| p.ts_ns).min(), probes.iter().map(|p| p.ts_ns).max())
        else {
            return Ok(Vec::new());
        };
        let query = encode_param(&self.run.log_query());
        let mut entries = HashMap::new();
        let mut start = first;
        // Pages forward in time; each page starts after the newest entry of the previous one.
        loop {
            let url = format!(
                "{}/loki/api/v1/query_range?query={query}&start={start}&end={}&limit={LOG_PAGE}&direction=forward",
                self.api,
                last + 1
            );
            let answer = self.get_json(&url).await?;
            match parse_log_streams(&answer, &mut entries).map_err(|e| format!("{url}: {e}"))? {
                (count, Some(newest)) if count >= LOG_PAGE && newest < last => start = newest + 1,
                _ => break,
            }
        }
        Ok(self.run.judge_logs(probes, &entries))
    }

    async fn query_metrics(&self, probes: &[Probe]) -> Result<Vec<(u64, Seen)>, String> {
        let (Some(first), Some(last)) =
            (probes.iter().map(|p| p.ts_ns).min(), probes.iter().map(|p| p.ts_ns).max())
        else {
            return Ok(Vec::new());
        };
        let (first_ms, last_ms) = (first / 1_000_000, last / 1_000_000);
        let query = encode_param(&self.run.metric_query(last_ms - first_ms + 1));
        let url = format!(
            "{}/api/v1/query?query={query}&time={}.{:03}",
            self.api,
            last_ms.div_euclid(1000),
            last_ms.rem_euclid(1000)
        );
        let answer = self.get_json(&url).await?;
        let samples = parse_matrix(&answer).map_err(|e| format!("{url}: {e}"))?;
        Ok(self.run.judge_samples(probes, &samples))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let answer = self.http.get(url, Some("application/json")).await.map_err(|e| e.to_string())?;
        if !answer.status.is_success() {
            return Err(format!(
                "{url}: status {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    fn item_id(&self, signal: Signal, seq: u64) -> String {
        match signal {
            Signal::Traces => self.run.trace_id_hex(seq),
            Signal::Logs | Signal::Metrics => format!("run={} seq={seq}", self.run.id),
        }
    }

    fn report(&self, s: &SignalState, event: Event) {
        let m = &self.metrics;
        match event {
            Event::Found { seq, latency, late } => {
                m.found.get_or_create(&s.label).inc();
                if late {
                    // No answer in time said it was absent (e.g. the queries failed until then).
                    m.late.get_or_create(&s.label).inc();
                    warn!(signal = %s.signal, seq, id = self.item_id(s.signal, seq), age = ?latency, "canary item is late (first seen after --late-after)");
                }
                m.latency.get_or_create(&s.label).observe(latency.as_secs_f64());
                let mut latencies = lock(&s.latencies);
                if latencies.len() == LATENCY_SAMPLE {
                    latencies.pop_front();
                }
                latencies.push_back(latency.as_secs_f64());
                debug!(signal = %s.signal, seq, latency = ?latency, "canary item found");
            }
            Event::Late { seq, age } => {
                m.late.get_or_create(&s.label).inc();
                warn!(signal = %s.signal, seq, id = self.item_id(s.signal, seq), age = ?age, "canary item is late");
            }
            Event::Missing { seq, ts_ns, age, was_found } => {
                m.missing.get_or_create(&s.label).inc();
                if was_found {
                    warn!(signal = %s.signal, seq, id = self.item_id(s.signal, seq), ts_ns, age = ?age, "canary item is missing: it was visible before and is gone now");
                } else {
                    warn!(signal = %s.signal, seq, id = self.item_id(s.signal, seq), ts_ns, age = ?age, "canary item is missing: never visible");
                }
            }
            Event::Wrong { seq, ts_ns, what } => {
                m.wrong.get_or_create(&s.label).inc();
                warn!(signal = %s.signal, seq, id = self.item_id(s.signal, seq), ts_ns, what, "canary item is wrong");
            }
        }
    }

    fn counts(&self, s: &SignalState) -> Value {
        let m = &self.metrics;
        let get = |f: &Family<SignalLabel, Counter>| f.get_or_create(&s.label).get();
        let mut latencies: Vec<f64> = lock(&s.latencies).iter().copied().collect();
        latencies.sort_by(f64::total_cmp);
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        json!({
            "written": get(&m.written),
            "write_errors": get(&m.write_errors),
            "skipped": get(&m.skipped),
            "found": get(&m.found),
            "late": get(&m.late),
            "missing": get(&m.missing),
            "wrong": get(&m.wrong),
            "unchecked": lock(&s.ledger).census().pending,
            "not_rechecked": *lock(&s.not_rechecked),
            "query_errors": get(&m.query_errors),
            "latency_p50_seconds": round(percentile(&latencies, 0.5)),
            "latency_p99_seconds": round(percentile(&latencies, 0.99)),
        })
    }

    fn summary(&self, elapsed: Duration) -> Value {
        let mut ok = true;
        let mut signals = serde_json::Map::new();
        for s in &self.signals {
            let c = self.counts(s);
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            if n("missing") > 0 || n("wrong") > 0 || n("unchecked") > 0 || n("written") == 0 {
                ok = false;
            }
            signals.insert(s.signal.name().to_string(), c);
        }
        json!({
            "run": self.run.id,
            "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "ok": ok,
            "signals": signals,
        })
    }

    fn log_summary(&self) {
        for s in &self.signals {
            let c = self.counts(s);
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            info!(
                signal = %s.signal,
                written = n("written"),
                write_errors = n("write_errors"),
                found = n("found"),
                late = n("late"),
                missing = n("missing"),
                wrong = n("wrong"),
                pending = n("unchecked"),
                not_rechecked = n("not_rechecked"),
                query_errors = n("query_errors"),
                p50 = c["latency_p50_seconds"].as_f64().unwrap_or(0.0),
                p99 = c["latency_p99_seconds"].as_f64().unwrap_or(0.0),
                "canary summary"
            );
        }
    }
}

/// Why a query gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// It failed: counted and logged.
    Error(String),
    /// The final check's time was up before it finished (or started).
    OutOfTime,
}

/// Runs `query` until `deadline` at most (no deadline: until it ends).
async fn within<T>(
    deadline: Option<Instant>,
    query: impl Future<Output = Result<T, String>>,
) -> Result<T, Failure> {
    match deadline {
        None => query.await.map_err(Failure::Error),
        Some(d) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), query).await {
            Ok(result) => result.map_err(Failure::Error),
            Err(_) => Err(Failure::OutOfTime),
        },
    }
}

fn split<T>(result: Result<Vec<T>, Failure>) -> (Vec<T>, Option<Failure>) {
    match result {
        Ok(v) => (v, None),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// The partial-success message of an OTLP answer that rejected items, if it did.
fn rejected(signal: Signal, body: &[u8]) -> Option<String> {
    let (count, message) = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_spans, p.error_message))?,
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_log_records, p.error_message))?,
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_data_points, p.error_message))?,
    };
    (count > 0).then(|| format!("{count} items rejected: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
