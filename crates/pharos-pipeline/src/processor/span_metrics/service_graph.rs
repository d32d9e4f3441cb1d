//! The `service_graph` processor: request counts, failures and latencies between services,
//! from pairs of spans, as the Collector's `servicegraph` connector and Tempo's
//! metrics-generator do.
//!
//! ```yaml
//! processors:
//!   service_graph:
//!     store: {ttl: 2s, max_items: 1000}
//!     latency_histogram_buckets: [2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s]
//!     dimensions: [http.request.method]
//!     metrics_flush_interval: 15s
//!     virtual_node_peer_attributes: [peer.service, db.name, db.system]
//! ```
//!
//! A CLIENT (or PRODUCER) span and the SERVER (or CONSUMER) span whose parent is that span,
//! in the same tenant and trace, make one request on the edge from the client span's service
//! to the server span's service, whichever arrives first. The half that arrives first waits
//! in a per-tenant store for at most `store.ttl` (injected time) and at most
//! `store.max_items` halves; halves that expire are counted as `edges_expired`, halves that do
//! not fit as `edges_dropped`. An expired client span naming a peer (one of
//! `virtual_node_peer_attributes`) still makes an edge, to a virtual server node named by the
//! attribute's value; a root server span makes an edge from the virtual client `user`.
//!
//! Metrics are emitted every `metrics_flush_interval`, one batch per tenant, cumulative from
//! when each edge was first seen; the state is not durable (a restart is a counter reset).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{ResourceMetrics, ScopeMetrics},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use pharos_core::{Signal, Tenant};
use pharos_queue::Offset;
use serde::Deserialize;

use super::{
    Bounds, DurationHistogram, DurationValue, FlushClock, check_names, counter_metric, counter_point,
    default_buckets, histogram_metric, pass_on, positive_nanos, service_name, span_duration_nanos, span_kind,
    status_code, str_kv,
};
use crate::processor::{
    Batch, ConfigError, Context, Data, Processor,
    otlp::{self, get, resource_attributes, to_text},
    parse_config,
};

const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
const REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
const REQUEST_SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
const REQUEST_CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";

const MESSAGING_SYSTEM: &str = "messaging_system";
const DATABASE: &str = "database";
const VIRTUAL_NODE: &str = "virtual_node";
/// The client of requests whose server span is a root span.
const USER: &str = "user";

/// The largest `store.max_items` accepted.
const MAX_STORE_ITEMS: usize = 10_000_000;
/// Rough bytes per waiting half and per edge besides its histograms (for `held_bytes`).
const WAITING_BYTES: u64 = 192;
const EDGE_BYTES: u64 = 256;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    store: StoreConfig,
    latency_histogram_buckets: Vec<DurationValue>,
    dimensions: Vec<String>,
    #[serde(deserialize_with = "crate::processor::duration::deserialize")]
    metrics_flush_interval: Duration,
    #[serde(deserialize_with = "crate::processor::duration::deserialize")]
    metrics_expiration: Duration,
    virtual_node_peer_attributes: Vec<String>,
    database_name_attribute: String,
    max_series: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreConfig::default(),
            latency_histogram_buckets: default_buckets(),
            dimensions: Vec::new(),
            metrics_flush_interval: Duration::from_secs(15),
            metrics_expiration: Duration::ZERO,
            virtual_node_peer_attributes: ["peer.service", "db.name", "db.system"].map(String::from).to_vec(),
            database_name_attribute: "db.name".to_string(),
            max_series: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StoreConfig {
    #[serde(deserialize_with = "crate::processor::duration::deserialize")]
    ttl: Duration,
    max_items: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { ttl: Duration::from_secs(2), max_items: 1000 }
    }
}

struct Settings {
    bounds: Bounds,
    dimensions: Vec<String>,
    flush_interval: u64,
    expiration: u64,
    ttl: u64,
    max_items: usize,
    peer_attributes: Vec<String>,
    database_attribute: Option<String>,
    max_series: usize,
}

impl Settings {
    fn new(config: Config) -> Result<Settings, ConfigError> {
        let ttl = positive_nanos("store.ttl", config.store.ttl)?;
        if config.store.max_items == 0 || config.store.max_items > MAX_STORE_ITEMS {
            return Err(ConfigError::new("store.max_items", format!("must be from 1 to {MAX_STORE_ITEMS}")));
        }
        let bounds = Bounds::new("latency_histogram_buckets", &config.latency_histogram_buckets, 1e9)?;
        check_names(
            "dimensions",
            config.dimensions.iter().map(String::as_str),
            &["client", "server", "connection_type"],
        )?;
        check_names(
            "virtual_node_peer_attributes",
            config.virtual_node_peer_attributes.iter().map(String::as_str),
            &[],
        )?;
        let flush_interval = positive_nanos("metrics_flush_interval", config.metrics_flush_interval)?;
        let expiration = u64::try_from(config.metrics_expiration.as_nanos())
            .map_err(|_| ConfigError::new("metrics_expiration", "is too large"))?;
        if config.max_series == 0 {
            return Err(ConfigError::new("max_series", "must be at least 1"));
        }
        Ok(Settings {
            bounds,
            dimensions: config.dimensions,
            flush_interval,
            expiration,
            ttl,
            max_items: config.store.max_items,
            peer_attributes: config.virtual_node_peer_attributes,
            database_attribute: Some(config.database_name_attribute).filter(|a| !a.is_empty()),
            max_series: config.max_series,
        })
    }
}

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    if signal != Signal::Traces {
        return Err(crate::processor::wrong_signal("service_graph", signal, "traces"));
    }
    let config: Config = if config.is_null() { Config::default() } else { parse_config(config)? };
    let settings = Settings::new(config)?;
    Ok(Box::new(ServiceGraph { settings, tenants: BTreeMap::new(), clock: FlushClock::default() }))
}

// ---- state ----

/// A trace id and the span id both halves of a request know: the client span's id, which is
/// the server span's parent.
type RequestId = ([u8; 16], [u8; 8]);

fn request_id(trace_id: &[u8], span_id: &[u8]) -> Option<RequestId> {
    let trace: [u8; 16] = trace_id.try_into().ok()?;
    let span: [u8; 8] = span_id.try_into().ok()?;
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span))
}

/// One side of a request, as much of its span as an edge needs.
#[derive(Debug, Clone)]
struct Half {
    service: String,
    nanos: u64,
    failed: bool,
    messaging: bool,
    dimensions: Vec<String>,
    /// For a client: the virtual server node its peer attributes name, and the connection type.
    peer: Option<(String, &'static str)>,
}

impl Half {
    fn of(settings: &Settings, resource: &[KeyValue], span: &Span, kind: SpanKind) -> Half {
        let dimensions = settings
            .dimensions
            .iter()
            .map(|d| get(resource, d).or_else(|| get(&span.attributes, d)).map(to_text).unwrap_or_default())
            .collect();
        let peer = if matches!(kind, SpanKind::Client | SpanKind::Producer) {
            settings.peer_attributes.iter().find_map(|attr| {
                let value = get(&span.attributes, attr).map(to_text).filter(|v| !v.is_empty())?;
                Some((value, if attr.starts_with("db.") { DATABASE } else { VIRTUAL_NODE }))
            })
        } else {
            None
        };
        Half {
            service: service_name(resource),
            nanos: span_duration_nanos(span),
            failed: status_code(span) == StatusCode::Error,
            messaging: matches!(kind, SpanKind::Producer | SpanKind::Consumer),
            dimensions,
            peer,
        }
    }

    fn bytes(&self) -> u64 {
        WAITING_BYTES + (self.service.len() + self.dimensions.iter().map(String::len).sum::<usize>()) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

struct Waiting {
    side: Side,
    half: Half,
    expiry: (u64, u64),
}

/// One request between two nodes.
struct Edge {
    key: EdgeKey,
    failed: bool,
    client_nanos: u64,
    server_nanos: u64,
}

impl Edge {
    fn paired(client: Half, server: Half) -> Edge {
        let connection_type = if client.messaging || server.messaging { MESSAGING_SYSTEM } else { "" };
        Edge {
            failed: client.failed || server.failed,
            client_nanos: client.nanos,
            server_nanos: server.nanos,
            key: EdgeKey {
                client: client.service,
                server: server.service,
                connection_type,
                client_dimensions: client.dimensions,
                server_dimensions: server.dimensions,
            },
        }
    }

    /// A client's request to a node that sends no spans: both latencies are the client's.
    fn to_virtual_server(
        client: Half,
        server: String,
        connection_type: &'static str,
        dimensions: usize,
    ) -> Edge {
        Edge {
            failed: client.failed,
            client_nanos: client.nanos,
            server_nanos: client.nanos,
            key: EdgeKey {
                client: client.service,
                server,
                connection_type,
                client_dimensions: client.dimensions,
                server_dimensions: vec![String::new(); dimensions],
            },
        }
    }

    /// A request to a root server span, from the virtual `user`: both latencies are the server's.
    fn from_user(server: Half, dimensions: usize) -> Edge {
        Edge {
            failed: server.failed,
            client_nanos: server.nanos,
            server_nanos: server.nanos,
            key: EdgeKey {
                client: USER.to_string(),
                server: server.service,
                connection_type: VIRTUAL_NODE,
                client_dimensions: vec![String::new(); dimensions],
                server_dimensions: server.dimensions,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EdgeKey {
    client: String,
    server: String,
    connection_type: &'static str,
    client_dimensions: Vec<String>,
    server_dimensions: Vec<String>,
}

struct EdgeSeries {
    attributes: Vec<KeyValue>,
    start: u64,
    last_seen: u64,
    total: u64,
    failed: u64,
    client: DurationHistogram,
    server: DurationHistogram,
}

#[derive(Default)]
struct TenantGraph {
    waiting: HashMap<RequestId, Waiting>,
    by_expiry: BTreeMap<(u64, u64), RequestId>,
    sequence: u64,
    waiting_bytes: u64,
    edges: HashMap<EdgeKey, EdgeSeries>,
    newest_offset: Offset,
    /// The oldest queue offset whose spans are counted but not emitted yet.
    unemitted_from: Option<Offset>,
}

impl TenantGraph {
    fn remove_waiting(&mut self, id: &RequestId) -> Option<Waiting> {
        let w = self.waiting.remove(id)?;
        self.by_expiry.remove(&w.expiry);
        self.waiting_bytes = self.waiting_bytes.saturating_sub(w.half.bytes());
        Some(w)
    }

    /// Expires the halves due by `now`; expired clients naming a peer make virtual edges.
    fn expire(&mut self, settings: &Settings, now: u64, ctx: &mut Context) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            let Some(w) = self.waiting.remove(&id) else { continue };
            self.waiting_bytes = self.waiting_bytes.saturating_sub(w.half.bytes());
            ctx.count("edges_expired", 1);
            if w.side == Side::Client
                && let Some((server, connection_type)) = w.half.peer.clone()
            {
                let edge =
                    Edge::to_virtual_server(w.half, server, connection_type, settings.dimensions.len());
                self.record(settings, edge, now, ctx);
            }
        }
    }

    /// Pairs a half with the other half of its request, or lets it wait.
    fn offer(
        &mut self,
        settings: &Settings,
        id: RequestId,
        side: Side,
        half: Half,
        now: u64,
        ctx: &mut Context,
    ) {
        match self.waiting.get(&id).map(|w| w.side) {
            Some(waiting_side) if waiting_side != side => {
                if let Some(other) = self.remove_waiting(&id) {
                    let edge = match side {
                        Side::Client => Edge::paired(half, other.half),
                        Side::Server => Edge::paired(other.half, half),
                    };
                    self.record(settings, edge, now, ctx);
                }
                return;
            }
            // A second span for the same side of one request (a duplicate): the newer wins.
            Some(_) => {
                self.remove_waiting(&id);
                ctx.count("edges_dropped", 1);
            }
            None if self.waiting.len() >= settings.max_items => {
                ctx.count("edges_dropped", 1);
                return;
            }
            None => {}
        }
        let expiry = (now.saturating_add(settings.ttl), self.sequence);
        self.sequence = self.sequence.wrapping_add(1);
        self.waiting_bytes += half.bytes();
        self.by_expiry.insert(expiry, id);
        self.waiting.insert(id, Waiting { side, half, expiry });
    }

    fn record(&mut self, settings: &Settings, edge: Edge, now: u64, ctx: &mut Context) {
        let full = self.edges.len() >= settings.max_series;
        let series = match self.edges.get_mut(&edge.key) {
            Some(series) => series,
            None if full => {
                ctx.count("series_overflow", 1);
                return;
            }
            None => {
                let attributes = edge_attributes(&settings.dimensions, &edge.key);
                self.edges.entry(edge.key).or_insert_with(|| EdgeSeries {
                    attributes,
                    start: now,
                    last_seen: now,
                    total: 0,
                    failed: 0,
                    client: DurationHistogram::new(&settings.bounds),
                    server: DurationHistogram::new(&settings.bounds),
                })
            }
        };
        series.last_seen = now;
        series.total = series.total.saturating_add(1);
        if edge.failed {
            series.failed = series.failed.saturating_add(1);
        }
        series.client.observe(&settings.bounds, edge.client_nanos);
        series.server.observe(&settings.bounds, edge.server_nanos);
    }

    fn held_bytes(&self, settings: &Settings) -> u64 {
        let edge = EDGE_BYTES + 16 * (settings.bounds.nanos.len() as u64 + 1);
        self.waiting_bytes + self.edges.len() as u64 * edge
    }
}

fn edge_attributes(dimensions: &[String], key: &EdgeKey) -> Vec<KeyValue> {
    let mut attributes = vec![
        str_kv("client", key.client.as_str()),
        str_kv("server", key.server.as_str()),
        str_kv("connection_type", key.connection_type),
    ];
    for (prefix, values) in [("client_", &key.client_dimensions), ("server_", &key.server_dimensions)] {
        for (d, v) in dimensions.iter().zip(values) {
            if !v.is_empty() {
                attributes.push(str_kv(&format!("{prefix}{d}"), v.as_str()));
            }
        }
    }
    attributes
}

struct ServiceGraph {
    settings: Settings,
    tenants: BTreeMap<Tenant, TenantGraph>,
    clock: FlushClock,
}

impl ServiceGraph {
    fn observe(&mut self, tenant: &Tenant, resource: &[KeyValue], span: &Span, now: u64, ctx: &mut Context) {
        let settings = &self.settings;
        let Some(graph) = self.tenants.get_mut(tenant) else { return };
        let kind = span_kind(span);
        match kind {
            SpanKind::Client | SpanKind::Producer => {
                let half = Half::of(settings, resource, span, kind);
                let database = settings
                    .database_attribute
                    .as_ref()
                    .filter(|_| kind == SpanKind::Client)
                    .and_then(|attr| get(&span.attributes, attr))
                    .map(to_text)
                    .filter(|name| !name.is_empty());
                if let Some(database) = database {
                    let edge = Edge::to_virtual_server(half, database, DATABASE, settings.dimensions.len());
                    graph.record(settings, edge, now, ctx);
                } else if let Some(id) = request_id(&span.trace_id, &span.span_id) {
                    graph.offer(settings, id, Side::Client, half, now, ctx);
                }
            }
            SpanKind::Server | SpanKind::Consumer => {
                let half = Half::of(settings, resource, span, kind);
                // No parent, or the invalid all-zero id (which OpenTelemetry reads as none).
                if span.parent_span_id.iter().all(|b| *b == 0) {
                    if !settings.peer_attributes.is_empty() {
                        graph.record(settings, Edge::from_user(half, settings.dimensions.len()), now, ctx);
                    }
                } else if let Some(id) = request_id(&span.trace_id, &span.parent_span_id) {
                    graph.offer(settings, id, Side::Server, half, now, ctx);
                }
            }
            SpanKind::Internal | SpanKind::Unspecified => {}
        }
    }

    fn flush(&mut self, now: u64, out: &mut Vec<Batch>) {
        let settings = &self.settings;
        for (tenant, graph) in &mut self.tenants {
            graph.unemitted_from = None;
            if settings.expiration > 0 {
                let cutoff = now.saturating_sub(settings.expiration);
                graph.edges.retain(|_, e| e.last_seen >= cutoff);
            }
            if graph.edges.is_empty() {
                continue;
            }
            let mut edges: Vec<(&EdgeKey, &EdgeSeries)> = graph.edges.iter().collect();
            edges.sort_by(|a, b| a.0.cmp(b.0));
            let mut total = Vec::with_capacity(edges.len());
            let mut failed = Vec::with_capacity(edges.len());
            let mut server = Vec::with_capacity(edges.len());
            let mut client = Vec::with_capacity(edges.len());
            for (_, e) in edges {
                total.push(counter_point(e.attributes.clone(), e.start, now, e.total));
                failed.push(counter_point(e.attributes.clone(), e.start, now, e.failed));
                server.push(e.server.point(&settings.bounds, e.attributes.clone(), e.start, now));
                client.push(e.client.point(&settings.bounds, e.attributes.clone(), e.start, now));
            }
            let metrics = vec![
                counter_metric(REQUEST_TOTAL, "Requests between two nodes", total),
                counter_metric(REQUEST_FAILED_TOTAL, "Failed requests between two nodes", failed),
                histogram_metric(REQUEST_SERVER_SECONDS, "Request latency as the server saw it", "s", server),
                histogram_metric(REQUEST_CLIENT_SECONDS, "Request latency as the client saw it", "s", client),
            ];
            let resource_metrics = vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics { scope: None, metrics, schema_url: String::new() }],
                schema_url: String::new(),
            }];
            out.push(Batch {
                tenant: tenant.clone(),
                offset: graph.newest_offset,
                data: Data::Metrics(ExportMetricsServiceRequest { resource_metrics }),
                route: None,
            });
        }
        self.tenants.retain(|_, g| !g.edges.is_empty() || !g.waiting.is_empty());
    }
}

impl Processor for ServiceGraph {
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        let now = ctx.now_unix_nanos;
        self.clock.start(now);
        if let Data::Traces(request) = &batch.data
            && otlp::span_count(request) > 0
        {
            let graph = self.tenants.entry(batch.tenant.clone()).or_default();
            graph.newest_offset = graph.newest_offset.max(batch.offset);
            graph.unemitted_from = Some(graph.unemitted_from.map_or(batch.offset, |o| o.min(batch.offset)));
            graph.expire(&self.settings, now, ctx);
            for rs in &request.resource_spans {
                let resource = resource_attributes(&rs.resource);
                for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                    self.observe(&batch.tenant, resource, span, now, ctx);
                }
            }
        }
        pass_on(batch, out);
    }

    fn tick(&mut self, ctx: &mut Context, closing: bool, out: &mut Vec<Batch>) {
        let now = ctx.now_unix_nanos;
        // At shutdown every waiting half is given up: what it can still say (virtual nodes) is
        // said now, since the state does not survive the restart.
        let expire_by = if closing { u64::MAX } else { now };
        for graph in self.tenants.values_mut() {
            graph.expire(&self.settings, expire_by, ctx);
        }
        if self.clock.due(now, self.settings.flush_interval, closing) {
            self.flush(now, out);
        }
    }

    /// As span_metrics: records whose spans are counted but not emitted stay uncommitted.
    fn held_offset(&self) -> Option<Offset> {
        self.tenants.values().filter_map(|g| g.unemitted_from).min()
    }

    fn held_bytes(&self) -> u64 {
        self.tenants.values().map(|g| g.held_bytes(&self.settings)).sum()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint;

    use super::*;
    use crate::processor::span_metrics::tests::{
        MS, NOW, SECOND, count, doc_example, histogram, metrics_request, resource_spans, s, shop_trace, span,
        sum_points, tenant, text, traces_batch, with_attrs, with_status, yaml,
    };

    fn processor(config: &str) -> Box<dyn Processor> {
        build(&yaml(config), Signal::Traces).expect("valid config")
    }

    fn config_error(config: &str) -> ConfigError {
        match build(&yaml(config), Signal::Traces) {
            Ok(_) => panic!("config accepted: {config}"),
            Err(e) => e,
        }
    }

    fn edge<'a>(client: &'a str, server: &'a str, connection_type: &'a str) -> [(&'a str, &'a str); 3] {
        [("client", client), ("server", server), ("connection_type", connection_type)]
    }

    /// Processes each batch at its time, ticks at `tick_at`; returns the metrics batches and
    /// everything counted.
    fn run(config: &str, batches: Vec<(u64, Batch)>, tick_at: u64) -> (Vec<Batch>, Context) {
        let mut p = processor(config);
        let mut all = Context::default();
        let mut out = Vec::new();
        for (at, b) in batches {
            let mut ctx = Context::at(at);
            p.process(b, &mut ctx, &mut out);
            all.counted.extend(ctx.counted);
        }
        out.clear();
        let mut ctx = Context::at(tick_at);
        p.tick(&mut ctx, false, &mut out);
        all.counted.extend(ctx.counted);
        (out, all)
    }

    fn requests(r: &ExportMetricsServiceRequest) -> usize {
        sum_points(r, REQUEST_TOTAL).len()
    }

    fn client_call(trace: u8) -> Batch {
        traces_batch(
            "shop",
            1,
            vec![resource_spans(
                Some("frontend"),
                vec![],
                vec![span(trace, 2, 1, "POST /api/checkout", SpanKind::Client, 100)],
            )],
        )
    }

    fn server_call(trace: u8) -> Batch {
        traces_batch(
            "shop",
            2,
            vec![resource_spans(
                Some("checkout"),
                vec![],
                vec![span(trace, 4, 2, "POST /api/checkout", SpanKind::Server, 90)],
            )],
        )
    }

    #[test]
    fn service_graph_shop_trace_makes_an_edge_per_call() {
        let (out, ctx) = run("{}", vec![(NOW, traces_batch("shop", 7, shop_trace(7)))], NOW + 15 * SECOND);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].tenant.as_str(), out[0].offset, &out[0].route), ("shop", 7, &None));
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("frontend", "checkout", "")), Some(1));
        assert_eq!(count(r, REQUEST_TOTAL, &edge("checkout", "payment", "")), Some(1));
        assert_eq!(count(r, REQUEST_TOTAL, &edge("payment", "payments", "database")), Some(1));
        assert_eq!(count(r, REQUEST_TOTAL, &edge("user", "frontend", "virtual_node")), Some(1));
        assert_eq!(requests(r), 4);
        assert_eq!(ctx.counted_for("edges_expired"), 0);
        assert!(r.resource_metrics[0].resource.is_none(), "edges belong to no one service");
    }

    #[test]
    fn service_graph_pairs_in_either_arrival_order() {
        for (first, second) in [(client_call(3), server_call(3)), (server_call(3), client_call(3))] {
            let (out, ctx) = run("{}", vec![(NOW, first), (NOW + SECOND, second)], NOW + 15 * SECOND);
            let r = metrics_request(&out[0]);
            assert_eq!(count(r, REQUEST_TOTAL, &edge("frontend", "checkout", "")), Some(1));
            assert_eq!(requests(r), 1);
            assert_eq!(ctx.counted_for("edges_expired"), 0);
        }
    }

    #[test]
    fn service_graph_latency_histograms_hold_each_side_in_seconds() {
        let (out, _) = run("{}", vec![(NOW, client_call(3)), (NOW, server_call(3))], NOW + 15 * SECOND);
        let r = metrics_request(&out[0]);
        let want = edge("frontend", "checkout", "");
        let client: &HistogramDataPoint = histogram(r, REQUEST_CLIENT_SECONDS, &want);
        let server = histogram(r, REQUEST_SERVER_SECONDS, &want);
        assert_eq!((client.count, client.sum), (1, Some(0.1)));
        assert_eq!((server.count, server.sum), (1, Some(0.09)));
        // 100ms falls in the ≤100ms bucket (index 6), 90ms too.
        assert_eq!(client.bucket_counts[6], 1);
        assert_eq!(server.bucket_counts[6], 1);
        assert_eq!(client.explicit_bounds.len(), 16);
        let units: Vec<&str> = r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name.ends_with("_seconds"))
            .map(|m| m.unit.as_str())
            .collect();
        assert_eq!(units, ["s", "s"]);
    }

    #[test]
    fn service_graph_failed_when_either_side_errors() {
        let client = |trace, failed: bool| {
            let sp = span(trace, 2, 1, "GET /stock", SpanKind::Client, 10);
            resource_spans(
                Some("cart"),
                vec![],
                vec![if failed { with_status(sp, StatusCode::Error) } else { sp }],
            )
        };
        let server = |trace, failed: bool| {
            let sp = span(trace, 3, 2, "GET /stock", SpanKind::Server, 8);
            let sp =
                if failed { with_status(sp, StatusCode::Error) } else { with_status(sp, StatusCode::Ok) };
            resource_spans(Some("inventory"), vec![], vec![sp])
        };
        let batch = traces_batch(
            "shop",
            1,
            vec![
                client(1, true),
                server(1, false),
                client(2, false),
                server(2, true),
                client(3, true),
                server(3, true),
                client(4, false),
                server(4, false),
            ],
        );
        let (out, _) = run("{}", vec![(NOW, batch)], NOW + 15 * SECOND);
        let r = metrics_request(&out[0]);
        let want = edge("cart", "inventory", "");
        assert_eq!(count(r, REQUEST_TOTAL, &want), Some(4));
        assert_eq!(count(r, REQUEST_FAILED_TOTAL, &want), Some(3));
    }

    #[test]
    fn service_graph_edges_without_failures_report_zero_failed() {
        let (out, _) = run("{}", vec![(NOW, client_call(3)), (NOW, server_call(3))], NOW + 15 * SECOND);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_FAILED_TOTAL, &edge("frontend", "checkout", "")), Some(0));
    }

    #[test]
    fn service_graph_unpaired_client_expires_after_ttl_and_is_counted() {
        let mut p = processor("{store: {ttl: 2s}, virtual_node_peer_attributes: []}");
        let mut out = Vec::new();
        p.process(client_call(3), &mut Context::at(NOW), &mut out);
        let mut ctx = Context::at(NOW + SECOND);
        p.tick(&mut ctx, false, &mut out);
        assert_eq!(ctx.counted_for("edges_expired"), 0, "not before the ttl");
        assert!(p.held_bytes() > 0);
        let mut ctx = Context::at(NOW + 2 * SECOND);
        p.tick(&mut ctx, false, &mut out);
        assert_eq!(ctx.counted_for("edges_expired"), 1);
        assert_eq!(p.held_bytes(), 0);
        // The server half arriving late waits on its own and never pairs.
        let mut ctx = Context::at(NOW + 3 * SECOND);
        out.clear();
        p.process(server_call(3), &mut ctx, &mut out);
        p.tick(&mut Context::at(NOW + 15 * SECOND), false, &mut out);
        assert_eq!(out.len(), 1, "the trace batch only: no edge, no metrics");
        assert_eq!(out[0].data.signal(), Signal::Traces);
    }

    #[test]
    fn service_graph_expired_client_with_peer_makes_virtual_node_edge() {
        let spans = vec![
            with_attrs(
                span(1, 2, 1, "GET /rates", SpanKind::Client, 30),
                vec![s("peer.service", "fx-rates")],
            ),
            with_attrs(span(1, 3, 1, "GET cache", SpanKind::Client, 2), vec![s("db.system", "redis")]),
            with_attrs(
                span(1, 4, 1, "publish", SpanKind::Client, 2),
                vec![s("http.url", "https://x.example")],
            ),
        ];
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("pricing"), vec![], spans)]);
        let (out, ctx) = run("{}", vec![(NOW, batch)], NOW + 15 * SECOND);
        assert_eq!(ctx.counted_for("edges_expired"), 3);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("pricing", "fx-rates", "virtual_node")), Some(1));
        assert_eq!(count(r, REQUEST_TOTAL, &edge("pricing", "redis", "database")), Some(1));
        assert_eq!(requests(r), 2);
        let h = histogram(r, REQUEST_SERVER_SECONDS, &edge("pricing", "fx-rates", "virtual_node"));
        assert_eq!(h.sum, Some(0.03), "a virtual server's latency is the client's");
    }

    #[test]
    fn service_graph_database_name_makes_an_edge_at_once() {
        let spans = vec![with_attrs(
            span(1, 2, 1, "SELECT orders", SpanKind::Client, 4),
            vec![s("db.system", "postgresql"), s("db.name", "orders")],
        )];
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("orders-api"), vec![], spans)]);
        let mut p = processor("{}");
        let mut out = Vec::new();
        let mut ctx = Context::at(NOW);
        p.process(batch, &mut ctx, &mut out);
        out.clear();
        p.tick(&mut ctx, true, &mut out);
        assert_eq!(ctx.counted_for("edges_expired"), 0, "no waiting for a server span");
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("orders-api", "orders", "database")), Some(1));
    }

    #[test]
    fn service_graph_root_server_span_is_called_by_user_unless_virtual_nodes_are_off() {
        let batch = || {
            traces_batch(
                "shop",
                1,
                vec![resource_spans(
                    Some("frontend"),
                    vec![],
                    vec![span(1, 1, 0, "GET /", SpanKind::Server, 3)],
                )],
            )
        };
        let (out, _) = run("{}", vec![(NOW, batch())], NOW + 15 * SECOND);
        assert_eq!(
            count(metrics_request(&out[0]), REQUEST_TOTAL, &edge("user", "frontend", "virtual_node")),
            Some(1)
        );
        let (out, _) = run("virtual_node_peer_attributes: []", vec![(NOW, batch())], NOW + 15 * SECOND);
        assert!(out.is_empty());
    }

    #[test]
    fn service_graph_root_server_span_with_all_zero_parent_is_called_by_user() {
        // An all-zero parent id is the invalid id, which OpenTelemetry (and the Collector's
        // `ParentSpanID().IsEmpty()`) reads as "no parent".
        let mut root = span(1, 1, 0, "GET /", SpanKind::Server, 3);
        root.parent_span_id = vec![0; 8];
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("frontend"), vec![], vec![root])]);
        let (out, ctx) = run("{}", vec![(NOW, batch)], NOW + 15 * SECOND);
        assert_eq!(ctx.counted_for("edges_expired"), 0);
        assert_eq!(
            count(metrics_request(&out[0]), REQUEST_TOTAL, &edge("user", "frontend", "virtual_node")),
            Some(1)
        );
    }

    #[test]
    fn service_graph_producer_and_consumer_make_a_messaging_edge() {
        let batch = traces_batch(
            "shop",
            1,
            vec![
                resource_spans(
                    Some("orders"),
                    vec![],
                    vec![span(1, 2, 1, "orders publish", SpanKind::Producer, 3)],
                ),
                resource_spans(
                    Some("mailer"),
                    vec![],
                    vec![span(1, 3, 2, "orders process", SpanKind::Consumer, 40)],
                ),
            ],
        );
        let (out, _) = run("{}", vec![(NOW, batch)], NOW + 15 * SECOND);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("orders", "mailer", "messaging_system")), Some(1));
    }

    #[test]
    fn service_graph_dimensions_are_prefixed_by_side() {
        let batch = traces_batch(
            "shop",
            1,
            vec![
                resource_spans(
                    Some("frontend"),
                    vec![s("deployment.environment", "prod")],
                    vec![with_attrs(
                        span(1, 2, 1, "POST /api/checkout", SpanKind::Client, 10),
                        vec![s("http.request.method", "POST")],
                    )],
                ),
                resource_spans(
                    Some("checkout"),
                    vec![s("deployment.environment", "canary")],
                    vec![span(1, 3, 2, "POST /api/checkout", SpanKind::Server, 8)],
                ),
            ],
        );
        let config = "dimensions: [deployment.environment, http.request.method]";
        let (out, _) = run(config, vec![(NOW, batch)], NOW + 15 * SECOND);
        let r = metrics_request(&out[0]);
        let (_, point) = sum_points(r, REQUEST_TOTAL)[0];
        assert_eq!(text(&point.attributes, "client_deployment.environment").as_deref(), Some("prod"));
        assert_eq!(text(&point.attributes, "server_deployment.environment").as_deref(), Some("canary"));
        assert_eq!(text(&point.attributes, "client_http.request.method").as_deref(), Some("POST"));
        assert_eq!(text(&point.attributes, "server_http.request.method"), None, "absent: no label");
    }

    #[test]
    fn service_graph_tenants_never_pair_with_each_other() {
        let mut server = server_call(3);
        server.tenant = tenant("other");
        let (out, ctx) = run("{}", vec![(NOW, client_call(3)), (NOW, server)], NOW + 15 * SECOND);
        assert!(out.is_empty(), "no edge in either tenant");
        assert_eq!(ctx.counted_for("edges_expired"), 2);
        let a = traces_batch("team-a", 4, shop_trace(1));
        let b = traces_batch(
            "team-b",
            8,
            vec![resource_spans(Some("web"), vec![], vec![span(1, 1, 0, "GET /", SpanKind::Server, 3)])],
        );
        let (out, _) = run("{}", vec![(NOW, a), (NOW, b)], NOW + 15 * SECOND);
        assert_eq!(out.len(), 2);
        let b_out = out.iter().find(|o| o.tenant == tenant("team-b")).expect("team-b metrics");
        assert_eq!(b_out.offset, 8);
        assert_eq!(requests(metrics_request(b_out)), 1);
    }

    #[test]
    fn service_graph_full_store_drops_new_halves_and_counts() {
        let clients: Vec<Span> = (1..=3).map(|t| span(t, 2, 1, "GET /a", SpanKind::Client, 5)).collect();
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("a"), vec![], clients)]);
        let servers: Vec<Span> = (1..=3).map(|t| span(t, 3, 2, "GET /a", SpanKind::Server, 4)).collect();
        let later = traces_batch("shop", 2, vec![resource_spans(Some("b"), vec![], servers)]);
        let config = "{store: {max_items: 2}, virtual_node_peer_attributes: []}";
        let (out, ctx) = run(config, vec![(NOW, batch), (NOW, later)], NOW + 15 * SECOND);
        assert_eq!(ctx.counted_for("edges_dropped"), 1, "the third client did not fit");
        // Two pairs matched; the third server span waited alone and expired.
        assert_eq!(count(metrics_request(&out[0]), REQUEST_TOTAL, &edge("a", "b", "")), Some(2));
        assert_eq!(ctx.counted_for("edges_expired"), 1);
    }

    #[test]
    fn service_graph_max_series_drops_new_edges_and_counts() {
        let spans: Vec<Span> = (1..=3)
            .map(|i| {
                with_attrs(
                    span(1, i, 9, "call", SpanKind::Client, 5),
                    vec![s("peer.service", &format!("peer-{i}"))],
                )
            })
            .collect();
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("a"), vec![], spans)]);
        let (out, ctx) = run("max_series: 2", vec![(NOW, batch)], NOW + 15 * SECOND);
        assert_eq!(ctx.counted_for("series_overflow"), 1);
        assert_eq!(requests(metrics_request(&out[0])), 2);
    }

    #[test]
    fn service_graph_emits_after_interval_and_closing_gives_up_waiting_halves() {
        let mut p = processor("{metrics_flush_interval: 30s, store: {ttl: 1m}}");
        let mut out = Vec::new();
        p.process(client_call(3), &mut Context::at(NOW), &mut out);
        p.process(server_call(3), &mut Context::at(NOW), &mut out);
        let lonely =
            with_attrs(span(5, 2, 1, "GET /rates", SpanKind::Client, 30), vec![s("peer.service", "fx")]);
        p.process(
            traces_batch("shop", 6, vec![resource_spans(Some("pricing"), vec![], vec![lonely])]),
            &mut Context::at(NOW),
            &mut out,
        );
        out.clear();
        p.tick(&mut Context::at(NOW + 15 * SECOND), false, &mut out);
        assert!(out.is_empty(), "not before the interval");
        let mut ctx = Context::at(NOW + 16 * SECOND);
        p.tick(&mut ctx, true, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].offset, 6);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("frontend", "checkout", "")), Some(1));
        assert_eq!(count(r, REQUEST_TOTAL, &edge("pricing", "fx", "virtual_node")), Some(1));
        assert_eq!(ctx.counted_for("edges_expired"), 1, "the waiting client was given up");
        assert!(p.held_bytes() > 0, "edges stay for the next emission");
    }

    #[test]
    fn service_graph_spans_without_valid_ids_or_service_do_not_pair_or_panic() {
        let mut short_trace = span(1, 2, 1, "GET /a", SpanKind::Client, 5);
        short_trace.trace_id = vec![1; 3];
        let mut zero_span = span(1, 2, 1, "GET /a", SpanKind::Client, 5);
        zero_span.span_id = vec![0; 8];
        let mut bad_parent = span(1, 3, 1, "GET /a", SpanKind::Server, 5);
        bad_parent.parent_span_id = vec![1, 2, 3];
        let mut unnamed = resource_spans(None, vec![], vec![span(2, 2, 1, "GET /b", SpanKind::Client, 5)]);
        unnamed.resource = None;
        let batch = traces_batch(
            "shop",
            1,
            vec![
                resource_spans(Some("a"), vec![], vec![short_trace, zero_span, bad_parent]),
                unnamed,
                resource_spans(Some("b"), vec![], vec![span(2, 3, 2, "GET /b", SpanKind::Server, 4)]),
                resource_spans(Some("c"), vec![], vec![]),
            ],
        );
        let (out, ctx) = run("{}", vec![(NOW, batch)], NOW + 15 * SECOND);
        assert_eq!(ctx.counted_for("edges_expired"), 0, "invalid ids never wait");
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("unknown_service", "b", "")), Some(1));
        assert_eq!(requests(r), 1);
    }

    #[test]
    fn service_graph_empty_batch_pushes_nothing() {
        let mut p = processor("{}");
        let mut out = Vec::new();
        p.process(traces_batch("shop", 1, vec![]), &mut Context::at(NOW), &mut out);
        p.tick(&mut Context::at(NOW + 60 * SECOND), true, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.held_bytes(), 0);
    }

    #[test]
    fn service_graph_cumulative_counts_grow_across_emissions() {
        let mut p = processor("{}");
        let mut out = Vec::new();
        for (i, at) in [NOW, NOW + 20 * SECOND].into_iter().enumerate() {
            let trace = i as u8 + 1;
            p.process(client_call(trace), &mut Context::at(at), &mut out);
            p.process(server_call(trace), &mut Context::at(at + 5 * MS), &mut out);
            out.clear();
            p.tick(&mut Context::at(at + 15 * SECOND), false, &mut out);
        }
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, REQUEST_TOTAL, &edge("frontend", "checkout", "")), Some(2));
        let (_, point) = sum_points(r, REQUEST_TOTAL)[0];
        assert_eq!(point.start_time_unix_nano, NOW + 5 * MS);
        assert_eq!(point.time_unix_nano, NOW + 35 * SECOND);
    }

    #[test]
    fn service_graph_doc_example_builds() {
        let doc = include_str!("../../../../../docs/processors/service_graph.md");
        let config = doc_example(doc, "service_graph");
        assert!(config.is_mapping());
        if let Err(e) = build(&config, Signal::Traces) {
            panic!("doc example rejected: {e}");
        }
    }

    #[test]
    fn service_graph_config_errors_name_their_key() {
        let cases = [
            ("store: {ttl: 0s}", "store.ttl"),
            ("store: {max_items: 0}", "store.max_items"),
            ("store: {size: 10}", "store.size"),
            ("latency_histogram_buckets: [1s, 1s]", "latency_histogram_buckets[1]"),
            ("latency_histogram_buckets: [1s, later]", "latency_histogram_buckets[1]"),
            ("dimensions: [client]", "dimensions[0]"),
            ("dimensions: [http.route, '']", "dimensions[1]"),
            ("virtual_node_peer_attributes: [peer.service, peer.service]", "virtual_node_peer_attributes[1]"),
            ("metrics_flush_interval: 0ms", "metrics_flush_interval"),
            ("max_series: 0", "max_series"),
        ];
        for (config, path) in cases {
            assert_eq!(config_error(config).path, path, "{config}");
        }
        for signal in [Signal::Logs, Signal::Metrics] {
            assert!(build(&yaml("{}"), signal).is_err());
        }
        assert!(build(&serde_yaml::Value::Null, Signal::Traces).is_ok());
    }
}
