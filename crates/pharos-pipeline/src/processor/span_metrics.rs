//! The `span_metrics` processor: RED metrics (requests, errors, duration) computed from spans,
//! as the Collector's `spanmetrics` connector does, written to the metrics store as OTLP
//! metrics. Its sibling `service_graph` (module [`service_graph`]) computes the edges between
//! services.
//!
//! ```yaml
//! processors:
//!   span_metrics:
//!     histogram:
//!       unit: s                  # s (default) or ms
//!       explicit:
//!         buckets: [2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s]
//!     dimensions:
//!       - name: http.request.method
//!         default: GET
//!     exemplars:
//!       enabled: true
//!       max_per_data_point: 5
//!     metrics_flush_interval: 15s
//!     namespace: traces.span.metrics
//!     max_series: 10000
//! ```
//!
//! Every trace batch passes through unchanged. Per tenant and per series (resource, span name,
//! kind, status code and the configured dimensions) the processor keeps a call counter and a
//! duration histogram; every `metrics_flush_interval` it pushes one metrics batch per tenant
//! with every series it holds, CUMULATIVE from when the series was first seen. The state is
//! not durable: after a restart the counters start again from zero (a counter reset, which
//! `rate()` and `increase()` handle).
//!
//! Series beyond `max_series` per tenant are folded into one overflow series carrying only
//! `otel.metric.overflow="true"` (as the Collector's `aggregation_cardinality_limit`), counted
//! as `series_overflow` per span.

pub mod service_graph;

pub use service_graph::build as build_service_graph;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, KeyValue},
    metrics::v1::{
        AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use pharos_core::{Signal, Tenant};
use pharos_queue::Offset;
use serde::Deserialize;

use super::{
    Batch, ConfigError, Context, Data, Processor,
    otlp::{self, get, resource_attributes, string_value, to_text},
    parse_config,
};

/// The service of spans whose resource names none (OpenTelemetry SDKs say
/// `unknown_service:<process>`; the process is not known here).
const UNKNOWN_SERVICE: &str = "unknown_service";
const SERVICE_NAME: &str = "service.name";
const SPAN_NAME: &str = "span.name";
const SPAN_KIND: &str = "span.kind";
const STATUS_CODE: &str = "status.code";
const OVERFLOW: &str = "otel.metric.overflow";
/// The most histogram buckets a configuration may ask for.
const MAX_BUCKETS: usize = 200;
/// The most dimensions a configuration may ask for.
const MAX_DIMENSIONS: usize = 64;
/// Rough bytes per series besides its label text, and per exemplar (for `held_bytes`).
const SERIES_OVERHEAD_BYTES: u64 = 160;
const EXEMPLAR_BYTES: u64 = 96;

// ---- configuration shared with service_graph ----

/// A duration in a list (`buckets: [2ms, 1s]`).
#[derive(Debug, Clone, Copy, Deserialize)]
struct DurationValue(#[serde(deserialize_with = "super::duration::deserialize")] Duration);

const DEFAULT_BUCKETS_MS: [u64; 16] =
    [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000];

fn default_buckets() -> Vec<DurationValue> {
    DEFAULT_BUCKETS_MS.iter().map(|ms| DurationValue(Duration::from_millis(*ms))).collect()
}

/// Histogram bucket bounds: in nanoseconds to count exactly, in the metric's unit to emit.
#[derive(Debug, Clone)]
struct Bounds {
    nanos: Vec<u64>,
    in_unit: Vec<f64>,
    nanos_per_unit: f64,
}

impl Bounds {
    fn new(path: &str, list: &[DurationValue], nanos_per_unit: f64) -> Result<Bounds, ConfigError> {
        if list.len() > MAX_BUCKETS {
            return Err(ConfigError::new(path, format!("at most {MAX_BUCKETS} buckets, not {}", list.len())));
        }
        let mut nanos = Vec::with_capacity(list.len());
        for (i, DurationValue(d)) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let n = u64::try_from(d.as_nanos()).map_err(|_| ConfigError::new(&at, "is too large"))?;
            if n == 0 {
                return Err(ConfigError::new(at, "must be more than 0"));
            }
            if nanos.last().is_some_and(|prev| *prev >= n) {
                return Err(ConfigError::new(at, "buckets must be in increasing order without repeats"));
            }
            nanos.push(n);
        }
        let in_unit = nanos.iter().map(|n| *n as f64 / nanos_per_unit).collect();
        Ok(Bounds { nanos, in_unit, nanos_per_unit })
    }

    fn value(&self, nanos: u64) -> f64 {
        nanos as f64 / self.nanos_per_unit
    }
}

fn positive_nanos(path: &str, d: Duration) -> Result<u64, ConfigError> {
    match u64::try_from(d.as_nanos()) {
        Ok(0) => Err(ConfigError::new(path, "must be more than 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(ConfigError::new(path, "is too large")),
    }
}

/// Checks a list of attribute names: none empty, none twice, none of `reserved`.
fn check_names<'a>(
    path: &str,
    names: impl Iterator<Item = &'a str>,
    reserved: &[&str],
) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, name) in names.enumerate() {
        if i >= MAX_DIMENSIONS {
            return Err(ConfigError::new(path, format!("at most {MAX_DIMENSIONS} entries")));
        }
        let at = format!("{path}[{i}]");
        if name.is_empty() {
            return Err(ConfigError::new(at, "must not be empty"));
        }
        if reserved.contains(&name) {
            return Err(ConfigError::new(at, format!("{name:?} is always a label of these metrics")));
        }
        if seen.contains(&name) {
            return Err(ConfigError::new(at, format!("{name:?} is listed twice")));
        }
        seen.push(name);
    }
    Ok(())
}

// ---- state shared with service_graph ----

/// A cumulative explicit-bucket histogram of durations.
#[derive(Debug, Clone)]
struct DurationHistogram {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl DurationHistogram {
    fn new(bounds: &Bounds) -> Self {
        DurationHistogram { counts: vec![0; bounds.nanos.len() + 1], count: 0, sum: 0.0 }
    }

    fn observe(&mut self, bounds: &Bounds, nanos: u64) {
        // OTLP buckets hold values up to and including their upper bound.
        let i = bounds.nanos.partition_point(|b| *b < nanos);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
        self.sum += bounds.value(nanos);
    }

    fn point(&self, bounds: &Bounds, attributes: Vec<KeyValue>, start: u64, now: u64) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: now,
            count: self.count,
            sum: Some(self.sum),
            bucket_counts: self.counts.clone(),
            explicit_bounds: bounds.in_unit.clone(),
            ..Default::default()
        }
    }
}

fn str_kv(key: &str, value: impl Into<String>) -> KeyValue {
    otlp::key_value(key, string_value(value))
}

/// The `service.name` of a resource, `unknown_service` when it names none.
fn service_name(resource: &[KeyValue]) -> String {
    match get(resource, SERVICE_NAME).map(to_text) {
        Some(name) if !name.is_empty() => name,
        _ => UNKNOWN_SERVICE.to_string(),
    }
}

fn span_duration_nanos(span: &Span) -> u64 {
    span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)
}

fn span_kind(span: &Span) -> SpanKind {
    SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified)
}

fn status_code(span: &Span) -> StatusCode {
    span.status.as_ref().and_then(|s| StatusCode::try_from(s.code).ok()).unwrap_or(StatusCode::Unset)
}

/// A counter data point (a monotonic cumulative sum).
fn counter_point(attributes: Vec<KeyValue>, start: u64, now: u64, value: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(i64::try_from(value).unwrap_or(i64::MAX))),
        ..Default::default()
    }
}

fn counter_metric(name: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        description: description.to_string(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn histogram_metric(name: &str, description: &str, unit: &str, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        description: description.to_string(),
        unit: unit.to_string(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

/// When the next emission is due: `interval` after the last one (or after the first batch or
/// tick seen), or now when closing.
#[derive(Debug, Default)]
struct FlushClock {
    last: Option<u64>,
}

impl FlushClock {
    fn start(&mut self, now: u64) {
        self.last.get_or_insert(now);
    }

    fn due(&mut self, now: u64, interval: u64, closing: bool) -> bool {
        let last = *self.last.get_or_insert(now);
        if closing || now.saturating_sub(last) >= interval {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Passes a batch on unless it has no items left.
fn pass_on(batch: Batch, out: &mut Vec<Batch>) {
    if !batch.data.is_empty() {
        out.push(batch);
    }
}

// ---- span_metrics configuration ----

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    histogram: HistogramConfig,
    dimensions: Vec<DimensionConfig>,
    exemplars: ExemplarsConfig,
    #[serde(deserialize_with = "super::duration::deserialize")]
    metrics_flush_interval: Duration,
    #[serde(deserialize_with = "super::duration::deserialize")]
    metrics_expiration: Duration,
    namespace: String,
    #[serde(alias = "aggregation_cardinality_limit", alias = "dimensions_cache_size")]
    max_series: usize,
    resource_metrics_key_attributes: Vec<String>,
    aggregation_temporality: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            histogram: HistogramConfig::default(),
            dimensions: Vec::new(),
            exemplars: ExemplarsConfig::default(),
            metrics_flush_interval: Duration::from_secs(15),
            metrics_expiration: Duration::ZERO,
            namespace: "traces.span.metrics".to_string(),
            max_series: 10_000,
            resource_metrics_key_attributes: Vec::new(),
            aggregation_temporality: CUMULATIVE.to_string(),
        }
    }
}

const CUMULATIVE: &str = "AGGREGATION_TEMPORALITY_CUMULATIVE";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HistogramConfig {
    disable: bool,
    unit: HistogramUnit,
    explicit: ExplicitConfig,
    exponential: Option<serde_yaml::Value>,
}

impl Default for HistogramConfig {
    fn default() -> Self {
        HistogramConfig {
            disable: false,
            unit: HistogramUnit::Seconds,
            explicit: ExplicitConfig::default(),
            exponential: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum HistogramUnit {
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Milliseconds,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ExplicitConfig {
    buckets: Vec<DurationValue>,
}

impl Default for ExplicitConfig {
    fn default() -> Self {
        ExplicitConfig { buckets: default_buckets() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DimensionConfig {
    name: String,
    #[serde(default)]
    default: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ExemplarsConfig {
    enabled: bool,
    max_per_data_point: usize,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig { enabled: false, max_per_data_point: 5 }
    }
}

/// The most exemplars a data point may carry per interval.
const MAX_EXEMPLARS: usize = 100;

struct Dimension {
    name: String,
    default: Option<String>,
}

struct Settings {
    histogram: Option<(Bounds, &'static str)>,
    dimensions: Vec<Dimension>,
    exemplars: usize,
    flush_interval: u64,
    expiration: u64,
    calls_name: String,
    duration_name: String,
    max_series: usize,
    resource_key_attributes: Vec<String>,
}

fn scalar_text(path: &str, v: &serde_yaml::Value) -> Result<String, ConfigError> {
    match v {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::new(path, "must be a string, a number or a boolean")),
    }
}

fn metric_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() { name.to_string() } else { format!("{namespace}.{name}") }
}

impl Settings {
    fn new(config: Config) -> Result<Settings, ConfigError> {
        if config.histogram.exponential.is_some() {
            return Err(ConfigError::new(
                "histogram.exponential",
                "exponential histograms are not supported; use histogram.explicit",
            ));
        }
        let (nanos_per_unit, unit) = match config.histogram.unit {
            HistogramUnit::Seconds => (1e9, "s"),
            HistogramUnit::Milliseconds => (1e6, "ms"),
        };
        let bounds =
            Bounds::new("histogram.explicit.buckets", &config.histogram.explicit.buckets, nanos_per_unit)?;
        check_names(
            "dimensions",
            config.dimensions.iter().map(|d| d.name.as_str()),
            &[SERVICE_NAME, SPAN_NAME, SPAN_KIND, STATUS_CODE],
        )
        .map_err(|e| {
            if e.path.starts_with("dimensions[") {
                ConfigError::new(format!("{}.name", e.path), e.message)
            } else {
                e
            }
        })?;
        let mut dimensions = Vec::with_capacity(config.dimensions.len());
        for (i, d) in config.dimensions.into_iter().enumerate() {
            let default = match &d.default {
                None | Some(serde_yaml::Value::Null) => None,
                Some(v) => Some(scalar_text(&format!("dimensions[{i}].default"), v)?),
            };
            dimensions.push(Dimension { name: d.name, default });
        }
        let exemplars = if config.exemplars.enabled {
            match config.exemplars.max_per_data_point {
                0 => return Err(ConfigError::new("exemplars.max_per_data_point", "must be at least 1")),
                n if n > MAX_EXEMPLARS => {
                    return Err(ConfigError::new(
                        "exemplars.max_per_data_point",
                        format!("must be at most {MAX_EXEMPLARS}"),
                    ));
                }
                n => n,
            }
        } else {
            0
        };
        let flush_interval = positive_nanos("metrics_flush_interval", config.metrics_flush_interval)?;
        let expiration = u64::try_from(config.metrics_expiration.as_nanos())
            .map_err(|_| ConfigError::new("metrics_expiration", "is too large"))?;
        if config.max_series == 0 {
            return Err(ConfigError::new("max_series", "must be at least 1"));
        }
        check_names(
            "resource_metrics_key_attributes",
            config.resource_metrics_key_attributes.iter().map(String::as_str),
            &[],
        )?;
        if config.aggregation_temporality != CUMULATIVE {
            return Err(ConfigError::new(
                "aggregation_temporality",
                format!("only {CUMULATIVE} is supported, not {:?}", config.aggregation_temporality),
            ));
        }
        Ok(Settings {
            histogram: if config.histogram.disable { None } else { Some((bounds, unit)) },
            dimensions,
            exemplars,
            flush_interval,
            expiration,
            calls_name: metric_name(&config.namespace, "calls"),
            duration_name: metric_name(&config.namespace, "duration"),
            max_series: config.max_series,
            resource_key_attributes: config.resource_metrics_key_attributes,
        })
    }
}

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    if signal != Signal::Traces {
        return Err(super::wrong_signal("span_metrics", signal, "traces"));
    }
    let config: Config = if config.is_null() { Config::default() } else { parse_config(config)? };
    let settings = Settings::new(config)?;
    Ok(Box::new(SpanMetrics { settings, tenants: BTreeMap::new(), clock: FlushClock::default(), bytes: 0 }))
}

// ---- span_metrics state ----

/// The resource attributes a series group is keyed by, as (key, text) sorted by key.
type ResourceKey = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    span_name: String,
    kind: i32,
    status: i32,
    dimensions: Vec<Option<String>>,
}

struct Series {
    attributes: Vec<KeyValue>,
    start: u64,
    last_seen: u64,
    calls: u64,
    duration: Option<DurationHistogram>,
    exemplars: Vec<Exemplar>,
    bytes: u64,
}

impl Series {
    fn new(settings: &Settings, attributes: Vec<KeyValue>, now: u64) -> Series {
        let text: usize = attributes
            .iter()
            .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, |v| to_text(v).len()))
            .sum();
        let buckets = settings.histogram.as_ref().map_or(0, |(b, _)| b.nanos.len() + 1);
        Series {
            attributes,
            start: now,
            last_seen: now,
            calls: 0,
            duration: settings.histogram.as_ref().map(|(b, _)| DurationHistogram::new(b)),
            exemplars: Vec::new(),
            bytes: SERIES_OVERHEAD_BYTES + text as u64 + 8 * buckets as u64,
        }
    }

    /// Counts a span; returns the bytes added (an exemplar kept).
    fn observe(&mut self, settings: &Settings, span: &Span, now: u64) -> u64 {
        self.last_seen = now;
        self.calls = self.calls.saturating_add(1);
        if let (Some(h), Some((bounds, _))) = (&mut self.duration, &settings.histogram) {
            let nanos = span_duration_nanos(span);
            h.observe(bounds, nanos);
            if self.exemplars.len() < settings.exemplars {
                self.exemplars.push(Exemplar {
                    time_unix_nano: if span.end_time_unix_nano == 0 { now } else { span.end_time_unix_nano },
                    trace_id: if span.trace_id.len() == 16 { span.trace_id.clone() } else { Vec::new() },
                    span_id: if span.span_id.len() == 8 { span.span_id.clone() } else { Vec::new() },
                    value: Some(exemplar::Value::AsDouble(bounds.value(nanos))),
                    ..Default::default()
                });
                return EXEMPLAR_BYTES;
            }
        }
        0
    }

    fn held_bytes(&self) -> u64 {
        self.bytes + self.exemplars.len() as u64 * EXEMPLAR_BYTES
    }
}

struct ResourceSeries {
    attributes: Vec<KeyValue>,
    series: HashMap<SeriesKey, Series>,
}

#[derive(Default)]
struct TenantSeries {
    resources: HashMap<ResourceKey, ResourceSeries>,
    series: usize,
    overflow: Option<Series>,
    newest_offset: Offset,
    /// The oldest queue offset whose spans are counted but not emitted yet.
    unemitted_from: Option<Offset>,
}

struct SpanMetrics {
    settings: Settings,
    tenants: BTreeMap<Tenant, TenantSeries>,
    clock: FlushClock,
    /// An estimate of the memory the series and exemplars take.
    bytes: u64,
}

/// The key of a resource's series group and the resource attributes its metrics carry: every
/// attribute, or only `resource_metrics_key_attributes` when set; `service.name` always.
fn resource_key(resource: &[KeyValue], service: &str, key_attributes: &[String]) -> ResourceKey {
    let mut rest: ResourceKey = resource
        .iter()
        .filter(|kv| kv.key != SERVICE_NAME)
        .filter(|kv| key_attributes.is_empty() || key_attributes.contains(&kv.key))
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map(to_text).unwrap_or_default()))
        .collect();
    rest.sort();
    rest.dedup_by(|a, b| a.0 == b.0);
    // The service first, so that resources sort by service.
    let mut key = Vec::with_capacity(rest.len() + 1);
    key.push((SERVICE_NAME.to_string(), service.to_string()));
    key.extend(rest);
    key
}

fn resource_output(resource: &[KeyValue], service: &str, key_attributes: &[String]) -> Vec<KeyValue> {
    let mut attrs: Vec<KeyValue> = resource
        .iter()
        .filter(|kv| kv.key != SERVICE_NAME)
        .filter(|kv| key_attributes.is_empty() || key_attributes.contains(&kv.key))
        .cloned()
        .collect();
    attrs.insert(0, str_kv(SERVICE_NAME, service));
    attrs
}

impl SpanMetrics {
    fn record(&mut self, tenant: &Tenant, resource: &[KeyValue], spans: &[&Span], ctx: &mut Context) {
        let now = ctx.now_unix_nanos;
        let settings = &self.settings;
        let state = self.tenants.entry(tenant.clone()).or_default();
        let service = service_name(resource);
        let rkey = resource_key(resource, &service, &settings.resource_key_attributes);
        for span in spans {
            let kind = span_kind(span);
            let status = status_code(span);
            let mut values: Vec<Option<AnyValue>> = settings
                .dimensions
                .iter()
                .map(|d| {
                    get(&span.attributes, &d.name)
                        .or_else(|| get(resource, &d.name))
                        .cloned()
                        .or_else(|| d.default.as_ref().map(|v| string_value(v.as_str())))
                })
                .collect();
            // A value whose text is empty is no label in Prometheus: the same series as none.
            let dimensions = values
                .iter_mut()
                .map(|v| {
                    let text = v.as_ref().map(to_text).filter(|t| !t.is_empty());
                    if text.is_none() {
                        *v = None;
                    }
                    text
                })
                .collect();
            let key = SeriesKey {
                span_name: span.name.clone(),
                kind: kind as i32,
                status: status as i32,
                dimensions,
            };
            let known = state.resources.get(&rkey).is_some_and(|r| r.series.contains_key(&key));
            let series = if known {
                state.resources.get_mut(&rkey).and_then(|g| g.series.get_mut(&key))
            } else if state.series < settings.max_series {
                let group = state.resources.entry(rkey.clone()).or_insert_with(|| ResourceSeries {
                    attributes: resource_output(resource, &service, &settings.resource_key_attributes),
                    series: HashMap::new(),
                });
                let mut attributes = vec![
                    str_kv(SERVICE_NAME, service.as_str()),
                    str_kv(SPAN_NAME, span.name.as_str()),
                    str_kv(SPAN_KIND, kind.as_str_name()),
                    str_kv(STATUS_CODE, status.as_str_name()),
                ];
                for (d, v) in settings.dimensions.iter().zip(values) {
                    if let Some(value) = v {
                        attributes.push(otlp::key_value(d.name.as_str(), value));
                    }
                }
                let series = Series::new(settings, attributes, now);
                state.series += 1;
                self.bytes += series.bytes;
                Some(group.series.entry(key).or_insert(series))
            } else {
                ctx.count("series_overflow", 1);
                if state.overflow.is_none() {
                    let series = Series::new(settings, vec![str_kv(OVERFLOW, "true")], now);
                    self.bytes += series.bytes;
                    state.overflow = Some(series);
                }
                state.overflow.as_mut()
            };
            if let Some(series) = series {
                self.bytes += series.observe(settings, span, now);
            }
        }
    }

    fn flush(&mut self, now: u64, out: &mut Vec<Batch>) {
        let settings = &self.settings;
        let mut released = 0u64;
        for (tenant, state) in &mut self.tenants {
            if settings.expiration > 0 {
                let cutoff = now.saturating_sub(settings.expiration);
                for group in state.resources.values_mut() {
                    group.series.retain(|_, s| {
                        let keep = s.last_seen >= cutoff;
                        if !keep {
                            released += s.held_bytes();
                            state.series -= 1;
                        }
                        keep
                    });
                }
                state.resources.retain(|_, g| !g.series.is_empty());
                if let Some(s) = state.overflow.take_if(|s| s.last_seen < cutoff) {
                    released += s.held_bytes();
                }
            }
            let mut groups: Vec<(&ResourceKey, &mut ResourceSeries)> = state.resources.iter_mut().collect();
            groups.sort_by(|a, b| a.0.cmp(b.0));
            let mut resource_metrics = Vec::with_capacity(groups.len() + 1);
            for (_, group) in groups {
                let mut series: Vec<(&SeriesKey, &mut Series)> = group.series.iter_mut().collect();
                series.sort_by(|a, b| a.0.cmp(b.0));
                let (metrics, exemplars) = series_metrics(settings, series.into_iter().map(|(_, s)| s), now);
                released += exemplars * EXEMPLAR_BYTES;
                resource_metrics.push(resource_metrics_of(group.attributes.clone(), metrics));
            }
            if let Some(overflow) = &mut state.overflow {
                let (metrics, exemplars) = series_metrics(settings, std::iter::once(overflow), now);
                released += exemplars * EXEMPLAR_BYTES;
                resource_metrics.push(resource_metrics_of(Vec::new(), metrics));
            }
            state.unemitted_from = None;
            if resource_metrics.is_empty() {
                continue;
            }
            out.push(Batch {
                tenant: tenant.clone(),
                offset: state.newest_offset,
                data: Data::Metrics(ExportMetricsServiceRequest { resource_metrics }),
                route: None,
            });
        }
        self.tenants.retain(|_, s| !s.resources.is_empty() || s.overflow.is_some());
        self.bytes = self.bytes.saturating_sub(released);
    }
}

/// The calls and duration metrics of some series (their exemplars go with them), and how many
/// exemplars went.
fn series_metrics<'a>(
    settings: &Settings,
    series: impl Iterator<Item = &'a mut Series>,
    now: u64,
) -> (Vec<Metric>, u64) {
    let mut calls = Vec::new();
    let mut durations = Vec::new();
    let mut exemplars = 0u64;
    for s in series {
        calls.push(counter_point(s.attributes.clone(), s.start, now, s.calls));
        if let (Some(h), Some((bounds, _))) = (&s.duration, &settings.histogram) {
            let mut point = h.point(bounds, s.attributes.clone(), s.start, now);
            point.exemplars = std::mem::take(&mut s.exemplars);
            exemplars += point.exemplars.len() as u64;
            durations.push(point);
        }
    }
    let mut metrics =
        vec![counter_metric(&settings.calls_name, "Spans ended, by service, name, kind and status", calls)];
    if let Some((_, unit)) = &settings.histogram {
        metrics.push(histogram_metric(&settings.duration_name, "Span durations", unit, durations));
    }
    (metrics, exemplars)
}

fn resource_metrics_of(attributes: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource { attributes, ..Default::default() }),
        scope_metrics: vec![ScopeMetrics { scope: None, metrics, schema_url: String::new() }],
        schema_url: String::new(),
    }
}

impl Processor for SpanMetrics {
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        self.clock.start(ctx.now_unix_nanos);
        if let Data::Traces(request) = &batch.data
            && otlp::span_count(request) > 0
        {
            let state = self.tenants.entry(batch.tenant.clone()).or_default();
            state.newest_offset = state.newest_offset.max(batch.offset);
            state.unemitted_from = Some(state.unemitted_from.map_or(batch.offset, |o| o.min(batch.offset)));
            for rs in &request.resource_spans {
                let spans: Vec<&Span> = rs.scope_spans.iter().flat_map(|ss| &ss.spans).collect();
                self.record(&batch.tenant, resource_attributes(&rs.resource), &spans, ctx);
            }
        }
        pass_on(batch, out);
    }

    fn tick(&mut self, ctx: &mut Context, closing: bool, out: &mut Vec<Batch>) {
        if self.clock.due(ctx.now_unix_nanos, self.settings.flush_interval, closing) {
            self.flush(ctx.now_unix_nanos, out);
        }
    }

    /// Spans counted but not emitted yet keep their records uncommitted: after a crash they
    /// are read again and counted into the new series (which restart as a counter reset), and
    /// the pipeline keeps ticking until they are emitted, even when no new data arrives.
    fn held_offset(&self) -> Option<Offset> {
        self.tenants.values().filter_map(|t| t.unemitted_from).min()
    }

    fn held_bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
pub(super) mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{AnyValue, any_value::Value},
        metrics::v1::{HistogramDataPoint, NumberDataPoint},
        trace::v1::{ResourceSpans, ScopeSpans, Status},
    };

    use super::*;

    pub(super) const NOW: u64 = 1_700_000_000_000_000_000;
    pub(super) const SECOND: u64 = 1_000_000_000;
    pub(super) const MS: u64 = 1_000_000;

    pub(super) fn s(key: &str, value: &str) -> KeyValue {
        otlp::key_value(key, string_value(value))
    }

    pub(super) fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).expect("test yaml")
    }

    pub(super) fn tenant(id: &str) -> Tenant {
        Tenant::parse(id).expect("test tenant")
    }

    /// A span of trace `trace`, id `id`, child of `parent` (0: a root span), `ms` long,
    /// ending one second before `NOW`.
    pub(super) fn span(trace: u8, id: u8, parent: u8, name: &str, kind: SpanKind, ms: u64) -> Span {
        let end = NOW - SECOND;
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { Vec::new() } else { vec![parent; 8] },
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: end - ms * MS,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    pub(super) fn with_status(mut span: Span, code: StatusCode) -> Span {
        span.status = Some(Status { code: code as i32, ..Default::default() });
        span
    }

    pub(super) fn with_attrs(mut span: Span, attrs: Vec<KeyValue>) -> Span {
        span.attributes = attrs;
        span
    }

    /// One resource's spans; `service` None leaves `service.name` out.
    pub(super) fn resource_spans(
        service: Option<&str>,
        extra: Vec<KeyValue>,
        spans: Vec<Span>,
    ) -> ResourceSpans {
        let mut attributes: Vec<KeyValue> = service.map(|name| s(SERVICE_NAME, name)).into_iter().collect();
        attributes.extend(extra);
        ResourceSpans {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }
    }

    pub(super) fn traces_batch(tenant_id: &str, offset: Offset, resources: Vec<ResourceSpans>) -> Batch {
        Batch::new(
            tenant(tenant_id),
            offset,
            Data::Traces(ExportTraceServiceRequest { resource_spans: resources }),
        )
    }

    /// frontend → checkout → payment → postgres, as one trace (trace id 7): server spans
    /// with the client spans they call.
    pub(super) fn shop_trace(trace: u8) -> Vec<ResourceSpans> {
        vec![
            resource_spans(
                Some("frontend"),
                vec![s("deployment.environment", "prod")],
                vec![
                    with_attrs(
                        span(trace, 1, 0, "GET /checkout", SpanKind::Server, 120),
                        vec![s("http.request.method", "GET"), s("http.route", "/checkout")],
                    ),
                    with_attrs(
                        span(trace, 2, 1, "POST /api/checkout", SpanKind::Client, 100),
                        vec![s("http.request.method", "POST")],
                    ),
                    span(trace, 3, 1, "render", SpanKind::Internal, 5),
                ],
            ),
            resource_spans(
                Some("checkout"),
                vec![],
                vec![
                    with_attrs(
                        span(trace, 4, 2, "POST /api/checkout", SpanKind::Server, 90),
                        vec![s("http.request.method", "POST")],
                    ),
                    with_status(span(trace, 5, 4, "POST /api/pay", SpanKind::Client, 60), StatusCode::Error),
                ],
            ),
            resource_spans(
                Some("payment"),
                vec![],
                vec![
                    with_status(span(trace, 6, 5, "POST /api/pay", SpanKind::Server, 55), StatusCode::Error),
                    with_attrs(
                        span(trace, 8, 6, "INSERT payments", SpanKind::Client, 7),
                        vec![s("db.system", "postgresql"), s("db.name", "payments")],
                    ),
                ],
            ),
        ]
    }

    pub(super) fn metrics_request(batch: &Batch) -> &ExportMetricsServiceRequest {
        match &batch.data {
            Data::Metrics(r) => r,
            other => panic!("expected metrics, got {:?}", other.signal()),
        }
    }

    pub(super) fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
        get(attrs, key).map(to_text)
    }

    fn matches(attrs: &[KeyValue], want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| text(attrs, k).as_deref() == Some(*v))
    }

    /// Every data point of the counter `name` with its resource's attributes.
    pub(super) fn sum_points<'a>(
        r: &'a ExportMetricsServiceRequest,
        name: &str,
    ) -> Vec<(&'a [KeyValue], &'a NumberDataPoint)> {
        let mut points = Vec::new();
        for rm in &r.resource_metrics {
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics).filter(|m| m.name == name) {
                let Some(metric::Data::Sum(sum)) = &m.data else { panic!("{name} is not a sum") };
                assert!(sum.is_monotonic, "{name} is monotonic");
                assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
                points.extend(sum.data_points.iter().map(|p| (resource_attributes(&rm.resource), p)));
            }
        }
        points
    }

    pub(super) fn histogram_points<'a>(
        r: &'a ExportMetricsServiceRequest,
        name: &str,
    ) -> Vec<(&'a Metric, &'a HistogramDataPoint)> {
        let mut points = Vec::new();
        for m in r.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics) {
            if m.name == name {
                let Some(metric::Data::Histogram(h)) = &m.data else { panic!("{name} is not a histogram") };
                assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32);
                points.extend(h.data_points.iter().map(|p| (m, p)));
            }
        }
        points
    }

    /// The value of the one counter point of `name` whose attributes include `want`.
    pub(super) fn count(r: &ExportMetricsServiceRequest, name: &str, want: &[(&str, &str)]) -> Option<i64> {
        let found: Vec<i64> = sum_points(r, name)
            .into_iter()
            .filter(|(_, p)| matches(&p.attributes, want))
            .map(|(_, p)| match p.value {
                Some(number_data_point::Value::AsInt(v)) => v,
                other => panic!("counter value {other:?}"),
            })
            .collect();
        assert!(found.len() <= 1, "{want:?} matches {} points of {name}", found.len());
        found.first().copied()
    }

    pub(super) fn histogram<'a>(
        r: &'a ExportMetricsServiceRequest,
        name: &str,
        want: &[(&str, &str)],
    ) -> &'a HistogramDataPoint {
        let found: Vec<_> =
            histogram_points(r, name).into_iter().filter(|(_, p)| matches(&p.attributes, want)).collect();
        assert_eq!(found.len(), 1, "{want:?} matches {} points of {name}", found.len());
        found[0].1
    }

    fn processor(config: &str) -> Box<dyn Processor> {
        build(&yaml(config), Signal::Traces).expect("valid config")
    }

    /// Processes the batches at `NOW`, then ticks 15 s later; returns the metrics batches.
    fn run(config: &str, batches: Vec<Batch>) -> (Vec<Batch>, Context) {
        let mut p = processor(config);
        let mut ctx = Context::at(NOW);
        let mut out = Vec::new();
        for b in batches {
            p.process(b, &mut ctx, &mut out);
        }
        out.retain(|b| b.data.signal() == Signal::Metrics);
        let mut ctx2 = Context::at(NOW + 15 * SECOND);
        p.tick(&mut ctx2, false, &mut out);
        ctx.counted.extend(ctx2.counted);
        (out, ctx)
    }

    const CALLS: &str = "traces.span.metrics.calls";
    const DURATION: &str = "traces.span.metrics.duration";

    fn config_error(config: &str) -> ConfigError {
        match build(&yaml(config), Signal::Traces) {
            Ok(_) => panic!("config accepted: {config}"),
            Err(e) => e,
        }
    }

    #[test]
    fn span_metrics_shop_trace_counts_calls_per_service_span_kind_and_status() {
        let (out, _) = run("{}", vec![traces_batch("shop", 42, shop_trace(7))]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tenant, tenant("shop"));
        assert_eq!(out[0].offset, 42);
        assert_eq!(out[0].route, None);
        let r = metrics_request(&out[0]);
        let calls = |service: &str, name: &str, kind: &str, status: &str| {
            count(
                r,
                CALLS,
                &[(SERVICE_NAME, service), (SPAN_NAME, name), (SPAN_KIND, kind), (STATUS_CODE, status)],
            )
        };
        assert_eq!(calls("frontend", "GET /checkout", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"), Some(1));
        assert_eq!(calls("frontend", "render", "SPAN_KIND_INTERNAL", "STATUS_CODE_UNSET"), Some(1));
        assert_eq!(calls("checkout", "POST /api/pay", "SPAN_KIND_CLIENT", "STATUS_CODE_ERROR"), Some(1));
        assert_eq!(calls("payment", "POST /api/pay", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"), Some(1));
        assert_eq!(calls("payment", "POST /api/pay", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"), None);
        assert_eq!(sum_points(r, CALLS).len(), 7);
        // One resource per service, whose service.name becomes `job`.
        let services: Vec<String> = r
            .resource_metrics
            .iter()
            .filter_map(|rm| text(resource_attributes(&rm.resource), SERVICE_NAME))
            .collect();
        assert_eq!(services, ["checkout", "frontend", "payment"]);
        for (resource, point) in sum_points(r, CALLS) {
            assert_eq!(text(resource, SERVICE_NAME), text(&point.attributes, SERVICE_NAME));
        }
        let frontend = &r.resource_metrics[1];
        assert_eq!(
            text(resource_attributes(&frontend.resource), "deployment.environment").as_deref(),
            Some("prod")
        );
    }

    #[test]
    fn span_metrics_errors_accumulate_under_error_status_code() {
        let failing = |id| with_status(span(1, id, 0, "GET /cart", SpanKind::Server, 3), StatusCode::Error);
        let spans = vec![failing(1), failing(2), span(1, 3, 0, "GET /cart", SpanKind::Server, 3)];
        let (out, _) =
            run("{}", vec![traces_batch("shop", 1, vec![resource_spans(Some("cart"), vec![], spans)])]);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, CALLS, &[(STATUS_CODE, "STATUS_CODE_ERROR")]), Some(2));
        assert_eq!(count(r, CALLS, &[(STATUS_CODE, "STATUS_CODE_UNSET")]), Some(1));
    }

    #[test]
    fn span_metrics_duration_histogram_counts_buckets_and_sums_seconds() {
        let spans = [1u64, 2, 3, 50, 700, 20_000]
            .iter()
            .enumerate()
            .map(|(i, ms)| span(1, i as u8 + 1, 0, "GET /items", SpanKind::Server, *ms))
            .collect();
        let (out, _) =
            run("{}", vec![traces_batch("shop", 1, vec![resource_spans(Some("catalog"), vec![], spans)])]);
        let r = metrics_request(&out[0]);
        let (metric, _) = histogram_points(r, DURATION)[0];
        assert_eq!(metric.unit, "s");
        let h = histogram(r, DURATION, &[(SPAN_NAME, "GET /items")]);
        assert_eq!(h.count, 6);
        assert!((h.sum.unwrap_or_default() - 20.756).abs() < 1e-9, "sum {:?}", h.sum);
        assert_eq!(h.explicit_bounds.len(), 16);
        assert_eq!(h.explicit_bounds[0], 0.002);
        assert_eq!(h.explicit_bounds[15], 15.0);
        // ≤2ms: 1ms and 2ms (bounds are inclusive); ≤4ms: 3ms; ≤50ms: 50ms; ≤800ms: 700ms;
        // over 15s: 20s.
        let mut want = vec![0u64; 17];
        want[0] = 2;
        want[1] = 1;
        want[5] = 1;
        want[9] = 1;
        want[16] = 1;
        assert_eq!(h.bucket_counts, want);
        assert_eq!(h.start_time_unix_nano, NOW);
        assert_eq!(h.time_unix_nano, NOW + 15 * SECOND);
    }

    #[test]
    fn span_metrics_unit_ms_emits_milliseconds() {
        let config = "histogram: {unit: ms, explicit: {buckets: [5ms, 100ms]}}";
        let spans = vec![span(1, 1, 0, "GET /", SpanKind::Server, 7)];
        let (out, _) =
            run(config, vec![traces_batch("shop", 1, vec![resource_spans(Some("web"), vec![], spans)])]);
        let r = metrics_request(&out[0]);
        let (metric, h) = histogram_points(r, DURATION)[0];
        assert_eq!(metric.unit, "ms");
        assert_eq!(h.explicit_bounds, [5.0, 100.0]);
        assert_eq!(h.bucket_counts, [0, 1, 0]);
        assert_eq!(h.sum, Some(7.0));
    }

    #[test]
    fn span_metrics_histogram_disable_emits_calls_only() {
        let spans = vec![span(1, 1, 0, "GET /", SpanKind::Server, 7)];
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("web"), vec![], spans)]);
        let (out, _) = run("histogram: {disable: true}", vec![batch]);
        let r = metrics_request(&out[0]);
        assert!(histogram_points(r, DURATION).is_empty());
        assert_eq!(count(r, CALLS, &[(SPAN_NAME, "GET /")]), Some(1));
    }

    #[test]
    fn span_metrics_exemplars_carry_trace_and_span_ids_of_the_last_interval() {
        let config = "exemplars: {enabled: true, max_per_data_point: 2}";
        let mut p = processor(config);
        let mut out = Vec::new();
        let spans = |trace: u8| (1..=3).map(|id| span(trace, id, 0, "GET /", SpanKind::Server, 10)).collect();
        let batch = |trace| traces_batch("shop", 1, vec![resource_spans(Some("web"), vec![], spans(trace))]);
        p.process(batch(0xa1), &mut Context::at(NOW), &mut out);
        out.clear();
        p.tick(&mut Context::at(NOW + 15 * SECOND), false, &mut out);
        let h = histogram(metrics_request(&out[0]), DURATION, &[]);
        assert_eq!(h.exemplars.len(), 2, "capped at max_per_data_point");
        for (i, e) in h.exemplars.iter().enumerate() {
            assert_eq!(e.trace_id, vec![0xa1; 16]);
            assert_eq!(e.span_id, vec![i as u8 + 1; 8]);
            assert_eq!(e.value, Some(exemplar::Value::AsDouble(0.01)));
            assert_eq!(e.time_unix_nano, NOW - SECOND);
        }
        assert_eq!(
            sum_points(metrics_request(&out[0]), CALLS)[0].1.exemplars.len(),
            0,
            "exemplars go on the histogram"
        );
        // The next interval carries only its own spans' exemplars.
        out.clear();
        p.process(batch(0xb2), &mut Context::at(NOW + 16 * SECOND), &mut out);
        out.clear();
        p.tick(&mut Context::at(NOW + 30 * SECOND), false, &mut out);
        let h = histogram(metrics_request(&out[0]), DURATION, &[]);
        assert_eq!(h.count, 6);
        assert!(h.exemplars.iter().all(|e| e.trace_id == vec![0xb2; 16]));
        out.clear();
        p.tick(&mut Context::at(NOW + 45 * SECOND), false, &mut out);
        assert!(histogram(metrics_request(&out[0]), DURATION, &[]).exemplars.is_empty());
    }

    #[test]
    fn span_metrics_exemplars_disabled_by_default() {
        let spans = vec![span(1, 1, 0, "GET /", SpanKind::Server, 7)];
        let (out, _) =
            run("{}", vec![traces_batch("shop", 1, vec![resource_spans(Some("web"), vec![], spans)])]);
        assert!(histogram(metrics_request(&out[0]), DURATION, &[]).exemplars.is_empty());
    }

    #[test]
    fn span_metrics_dimensions_come_from_span_then_resource_then_default() {
        let config = "
dimensions:
  - name: http.request.method
    default: GET
  - name: deployment.environment
  - name: http.response.status_code
";
        let spans = vec![
            with_attrs(
                span(1, 1, 0, "orders", SpanKind::Server, 5),
                vec![
                    s("http.request.method", "POST"),
                    otlp::key_value(
                        "http.response.status_code",
                        AnyValue { value: Some(Value::IntValue(201)) },
                    ),
                ],
            ),
            span(1, 2, 0, "orders", SpanKind::Server, 5),
            span(1, 3, 0, "orders", SpanKind::Server, 5),
        ];
        let batch = traces_batch(
            "shop",
            1,
            vec![resource_spans(Some("orders"), vec![s("deployment.environment", "staging")], spans)],
        );
        let (out, _) = run(config, vec![batch]);
        let r = metrics_request(&out[0]);
        let post = [("http.request.method", "POST"), ("deployment.environment", "staging")];
        assert_eq!(count(r, CALLS, &post), Some(1));
        let get_points: Vec<_> = sum_points(r, CALLS)
            .into_iter()
            .filter(|(_, p)| text(&p.attributes, "http.request.method").as_deref() == Some("GET"))
            .collect();
        assert_eq!(get_points.len(), 1, "the default GET folds both spans into one series");
        let attrs = &get_points[0].1.attributes;
        assert_eq!(text(attrs, "deployment.environment").as_deref(), Some("staging"));
        assert_eq!(text(attrs, "http.response.status_code"), None, "no value and no default: no label");
        let status = sum_points(r, CALLS)
            .into_iter()
            .find_map(|(_, p)| get(&p.attributes, "http.response.status_code").cloned());
        assert_eq!(status, Some(AnyValue { value: Some(Value::IntValue(201)) }), "the value keeps its type");
    }

    #[test]
    fn span_metrics_empty_dimension_value_and_absent_dimension_make_one_series() {
        // Prometheus drops labels with empty values: an empty `http.route` and no `http.route`
        // are one series there, so they must be one series here too (two would emit two
        // different counts for one series, which reads as a counter going back and forth).
        let config = "dimensions: [{name: http.route}]";
        let empty = with_attrs(span(1, 1, 0, "GET", SpanKind::Server, 5), vec![s("http.route", "")]);
        let absent = span(1, 2, 0, "GET", SpanKind::Server, 5);
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("api"), vec![], vec![empty, absent])]);
        let (out, _) = run(config, vec![batch]);
        let r = metrics_request(&out[0]);
        assert_eq!(sum_points(r, CALLS).len(), 1);
        assert_eq!(count(r, CALLS, &[(SPAN_NAME, "GET")]), Some(2));
    }

    #[test]
    fn span_metrics_max_series_folds_new_series_into_overflow_and_counts() {
        let spans = (1..=5).map(|i| span(1, i, 0, &format!("GET /item/{i}"), SpanKind::Server, 5)).collect();
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("catalog"), vec![], spans)]);
        let mut p = processor("max_series: 2");
        let mut ctx = Context::at(NOW);
        let mut out = Vec::new();
        p.process(batch, &mut ctx, &mut out);
        assert_eq!(ctx.counted_for("series_overflow"), 3);
        // A known series still counts once the limit is reached.
        let again = traces_batch(
            "shop",
            2,
            vec![resource_spans(
                Some("catalog"),
                vec![],
                vec![span(1, 9, 0, "GET /item/1", SpanKind::Server, 5)],
            )],
        );
        p.process(again, &mut ctx, &mut out);
        assert_eq!(ctx.counted_for("series_overflow"), 3);
        out.clear();
        p.tick(&mut Context::at(NOW + 15 * SECOND), false, &mut out);
        let r = metrics_request(&out[0]);
        assert_eq!(sum_points(r, CALLS).len(), 3);
        assert_eq!(count(r, CALLS, &[(SPAN_NAME, "GET /item/1")]), Some(2));
        assert_eq!(count(r, CALLS, &[(SPAN_NAME, "GET /item/2")]), Some(1));
        assert_eq!(count(r, CALLS, &[(OVERFLOW, "true")]), Some(3));
        assert_eq!(histogram(r, DURATION, &[(OVERFLOW, "true")]).count, 3);
    }

    #[test]
    fn span_metrics_aggregation_cardinality_limit_is_an_alias_of_max_series() {
        let spans = (1..=3).map(|i| span(1, i, 0, &format!("op{i}"), SpanKind::Server, 5)).collect();
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("svc"), vec![], spans)]);
        let (_, ctx) = run("aggregation_cardinality_limit: 1", vec![batch]);
        assert_eq!(ctx.counted_for("series_overflow"), 2);
    }

    #[test]
    fn span_metrics_emit_only_after_flush_interval_and_stay_cumulative() {
        let mut p = processor("metrics_flush_interval: 10s");
        let mut out = Vec::new();
        let batch = |offset, id| {
            traces_batch(
                "shop",
                offset,
                vec![resource_spans(Some("web"), vec![], vec![span(1, id, 0, "GET /", SpanKind::Server, 5)])],
            )
        };
        assert_eq!(p.held_offset(), None);
        p.process(batch(10, 1), &mut Context::at(NOW), &mut out);
        assert_eq!(out.len(), 1, "the trace batch passes through");
        out.clear();
        p.tick(&mut Context::at(NOW + 9 * SECOND), false, &mut out);
        assert!(out.is_empty(), "nothing before the interval");
        assert_eq!(p.held_offset(), Some(10), "counted, not emitted: the record stays uncommitted");
        p.tick(&mut Context::at(NOW + 10 * SECOND), false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.held_offset(), None, "emitted: nothing held");
        assert_eq!(count(metrics_request(&out[0]), CALLS, &[]), Some(1));
        out.clear();
        p.process(batch(11, 2), &mut Context::at(NOW + 12 * SECOND), &mut out);
        out.clear();
        p.tick(&mut Context::at(NOW + 15 * SECOND), false, &mut out);
        assert!(out.is_empty(), "the interval counts from the last emission");
        p.tick(&mut Context::at(NOW + 20 * SECOND), false, &mut out);
        let r = metrics_request(&out[0]);
        assert_eq!(out[0].offset, 11);
        assert_eq!(count(r, CALLS, &[]), Some(2), "cumulative");
        let (_, point) = sum_points(r, CALLS)[0];
        assert_eq!(point.start_time_unix_nano, NOW, "start is when the series was first seen");
        assert_eq!(point.time_unix_nano, NOW + 20 * SECOND);
        // No new spans: the series is still reported, unchanged.
        out.clear();
        p.tick(&mut Context::at(NOW + 30 * SECOND), false, &mut out);
        assert_eq!(count(metrics_request(&out[0]), CALLS, &[]), Some(2));
    }

    #[test]
    fn span_metrics_closing_tick_emits_before_the_interval() {
        let mut p = processor("{}");
        let mut out = Vec::new();
        let batch = traces_batch("shop", 3, shop_trace(1));
        p.process(batch, &mut Context::at(NOW), &mut out);
        out.clear();
        p.tick(&mut Context::at(NOW + SECOND), true, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(sum_points(metrics_request(&out[0]), CALLS).len(), 7);
    }

    #[test]
    fn span_metrics_tenants_are_kept_apart() {
        let a = traces_batch(
            "team-a",
            5,
            vec![resource_spans(Some("web"), vec![], vec![span(1, 1, 0, "GET /", SpanKind::Server, 5)])],
        );
        let b = traces_batch("team-b", 9, shop_trace(2));
        let (out, _) = run("{}", vec![a, b]);
        assert_eq!(out.len(), 2);
        let a_out = out.iter().find(|b| b.tenant == tenant("team-a")).expect("team-a metrics");
        let b_out = out.iter().find(|b| b.tenant == tenant("team-b")).expect("team-b metrics");
        assert_eq!((a_out.offset, b_out.offset), (5, 9));
        assert_eq!(sum_points(metrics_request(a_out), CALLS).len(), 1);
        assert_eq!(sum_points(metrics_request(b_out), CALLS).len(), 7);
        assert_eq!(count(metrics_request(b_out), CALLS, &[(SERVICE_NAME, "web")]), None);
    }

    #[test]
    fn span_metrics_trace_batches_pass_through_unchanged() {
        let mut p = processor("{}");
        let mut out = Vec::new();
        let batch = traces_batch("shop", 3, shop_trace(1));
        p.process(batch.clone(), &mut Context::at(NOW), &mut out);
        assert_eq!(out, vec![batch]);
    }

    #[test]
    fn span_metrics_empty_batch_pushes_nothing_and_emits_nothing() {
        let mut p = processor("{}");
        let mut out = Vec::new();
        let empty = traces_batch("shop", 3, vec![resource_spans(Some("web"), vec![], vec![])]);
        p.process(empty, &mut Context::at(NOW), &mut out);
        p.process(traces_batch("shop", 4, vec![]), &mut Context::at(NOW), &mut out);
        assert!(out.is_empty());
        p.tick(&mut Context::at(NOW + 60 * SECOND), true, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.held_bytes(), 0);
    }

    #[test]
    fn span_metrics_missing_service_name_is_unknown_service() {
        let spans = vec![span(1, 1, 0, "GET /", SpanKind::Server, 5)];
        let mut rs = resource_spans(None, vec![], spans.clone());
        rs.resource = None;
        let empty_name = resource_spans(Some(""), vec![], spans);
        let (out, _) = run("{}", vec![traces_batch("shop", 1, vec![rs, empty_name])]);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, CALLS, &[(SERVICE_NAME, UNKNOWN_SERVICE)]), Some(2));
        assert_eq!(
            text(resource_attributes(&r.resource_metrics[0].resource), SERVICE_NAME).as_deref(),
            Some(UNKNOWN_SERVICE)
        );
    }

    #[test]
    fn span_metrics_odd_spans_do_not_panic() {
        let mut ends_before_start = span(1, 1, 0, "backwards", SpanKind::Server, 5);
        ends_before_start.end_time_unix_nano = 0;
        let mut unknown_kind = span(1, 2, 0, "odd kind", SpanKind::Server, 5);
        unknown_kind.kind = 42;
        unknown_kind.status = Some(Status { code: -7, ..Default::default() });
        let mut huge = span(1, 3, 0, "huge", SpanKind::Server, 5);
        huge.start_time_unix_nano = 0;
        huge.end_time_unix_nano = u64::MAX;
        let mut bad_ids = with_attrs(
            span(1, 4, 0, "", SpanKind::Client, 5),
            vec![otlp::key_value(
                "http.request.method",
                AnyValue { value: Some(Value::BytesValue(vec![0xff, 0xfe])) },
            )],
        );
        bad_ids.trace_id = vec![1, 2];
        bad_ids.span_id = Vec::new();
        let spans = vec![ends_before_start, unknown_kind, huge, bad_ids];
        let config = "{exemplars: {enabled: true}, dimensions: [{name: http.request.method}]}";
        let resource = resource_spans(Some("weird"), vec![], spans);
        let (out, _) = run(config, vec![traces_batch("shop", 1, vec![resource])]);
        let r = metrics_request(&out[0]);
        assert_eq!(histogram(r, DURATION, &[(SPAN_NAME, "backwards")]).bucket_counts[0], 1, "zero length");
        let odd = [(SPAN_KIND, "SPAN_KIND_UNSPECIFIED"), (STATUS_CODE, "STATUS_CODE_UNSET")];
        assert_eq!(count(r, CALLS, &odd), Some(1));
        assert_eq!(histogram(r, DURATION, &[(SPAN_NAME, "huge")]).bucket_counts[16], 1);
        let empty = histogram(r, DURATION, &[(SPAN_NAME, "")]);
        assert!(empty.exemplars[0].trace_id.is_empty() && empty.exemplars[0].span_id.is_empty());
        assert_eq!(text(&empty.attributes, "http.request.method").as_deref(), Some("fffe"));
    }

    #[test]
    fn span_metrics_metrics_expiration_drops_idle_series() {
        let mut p = processor("metrics_expiration: 1m");
        let mut out = Vec::new();
        let batch = |name: &str| {
            traces_batch(
                "shop",
                1,
                vec![resource_spans(Some("web"), vec![], vec![span(1, 1, 0, name, SpanKind::Server, 5)])],
            )
        };
        p.process(batch("old"), &mut Context::at(NOW), &mut out);
        let with_one = p.held_bytes();
        assert!(with_one > 0);
        p.process(batch("new"), &mut Context::at(NOW + 50 * SECOND), &mut out);
        out.clear();
        p.tick(&mut Context::at(NOW + 90 * SECOND), false, &mut out);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, CALLS, &[(SPAN_NAME, "old")]), None);
        assert_eq!(count(r, CALLS, &[(SPAN_NAME, "new")]), Some(1));
        assert_eq!(p.held_bytes(), with_one);
        out.clear();
        p.tick(&mut Context::at(NOW + 200 * SECOND), false, &mut out);
        assert!(out.is_empty(), "every series expired");
        assert_eq!(p.held_bytes(), 0);
    }

    #[test]
    fn span_metrics_resource_metrics_key_attributes_keep_only_those() {
        let resources = (1..=3)
            .map(|pod| {
                resource_spans(
                    Some("web"),
                    vec![s("k8s.pod.name", &format!("web-{pod}")), s("deployment.environment", "prod")],
                    vec![span(1, pod, 0, "GET /", SpanKind::Server, 5)],
                )
            })
            .collect();
        let (out, _) = run(
            "resource_metrics_key_attributes: [deployment.environment]",
            vec![traces_batch("shop", 1, resources)],
        );
        let r = metrics_request(&out[0]);
        assert_eq!(r.resource_metrics.len(), 1);
        let resource = resource_attributes(&r.resource_metrics[0].resource);
        assert_eq!(text(resource, "k8s.pod.name"), None);
        assert_eq!(text(resource, "deployment.environment").as_deref(), Some("prod"));
        assert_eq!(count(r, CALLS, &[]), Some(3));
    }

    #[test]
    fn span_metrics_namespace_names_the_metrics() {
        let spans = vec![span(1, 1, 0, "GET /", SpanKind::Server, 5)];
        let batch = traces_batch("shop", 1, vec![resource_spans(Some("web"), vec![], spans)]);
        let (out, _) = run("namespace: red", vec![batch]);
        let r = metrics_request(&out[0]);
        assert_eq!(count(r, "red.calls", &[]), Some(1));
        assert_eq!(histogram_points(r, "red.duration").len(), 1);
    }

    #[test]
    fn span_metrics_null_config_uses_collector_defaults() {
        let p = build(&serde_yaml::Value::Null, Signal::Traces);
        assert!(p.is_ok());
    }

    #[test]
    fn span_metrics_config_errors_name_their_key() {
        let cases = [
            ("histogram: {explicit: {buckets: [2ms, 4ms, 3ms]}}", "histogram.explicit.buckets[2]"),
            ("histogram: {explicit: {buckets: [2ms, soon]}}", "histogram.explicit.buckets[1]"),
            ("histogram: {explicit: {buckets: [0s]}}", "histogram.explicit.buckets[0]"),
            ("histogram: {unit: h}", "histogram.unit"),
            ("histogram: {exponential: {max_size: 160}}", "histogram.exponential"),
            ("histogram: {buckets: [1s]}", "histogram.buckets"),
            ("dimensions: [{name: http.route}, {name: span.kind}]", "dimensions[1].name"),
            ("dimensions: [{name: http.route}, {name: http.route}]", "dimensions[1].name"),
            ("dimensions: [{name: ''}]", "dimensions[0].name"),
            ("dimensions: [{name: a, default: [1]}]", "dimensions[0].default"),
            ("dimensions: [{name: a, fallback: x}]", "dimensions[0].fallback"),
            ("exemplars: {enabled: true, max_per_data_point: 0}", "exemplars.max_per_data_point"),
            ("metrics_flush_interval: 0s", "metrics_flush_interval"),
            ("metrics_flush_interval: 15", "metrics_flush_interval"),
            ("max_series: 0", "max_series"),
            ("max_series: -1", "max_series"),
            ("aggregation_temporality: AGGREGATION_TEMPORALITY_DELTA", "aggregation_temporality"),
            ("resource_metrics_key_attributes: [a, a]", "resource_metrics_key_attributes[1]"),
            ("flush: 1s", "flush"),
        ];
        for (config, path) in cases {
            assert_eq!(config_error(config).path, path, "{config}");
        }
    }

    /// The YAML block after `## Example` in a processor's doc page, as a configuration.
    pub(super) fn doc_example(doc: &str, key: &str) -> serde_yaml::Value {
        let example = doc.split("## Example").nth(1).expect("an example section");
        let block =
            example.split("```yaml").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
        let parsed = yaml(block);
        parsed["processors"][key].clone()
    }

    #[test]
    fn span_metrics_doc_example_builds() {
        let config = doc_example(include_str!("../../../../docs/processors/span_metrics.md"), "span_metrics");
        assert!(config.is_mapping());
        if let Err(e) = build(&config, Signal::Traces) {
            panic!("doc example rejected: {e}");
        }
    }

    #[test]
    fn span_metrics_applies_to_traces_only() {
        for signal in [Signal::Logs, Signal::Metrics] {
            let e = build(&yaml("{}"), signal).err().expect("rejected");
            assert!(e.message.contains("traces"), "{e}");
        }
    }
}
