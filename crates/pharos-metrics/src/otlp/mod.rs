//! OTLP metrics to Prometheus series: the OpenTelemetry "Prometheus and OpenMetrics
//! compatibility" specification, as Prometheus's own OTLP receiver applies it.
//!
//! [`Converter::convert`] turns one `ExportMetricsServiceRequest` into float series, exemplars,
//! metadata and counts of dropped data points. It does no I/O; the only state it keeps is the
//! running totals of delta series.
//!
//! # Names and labels
//! - Metric names: characters outside `[a-zA-Z0-9:]` separate words joined by one `_`; with
//!   [`OtlpOptions::add_unit_and_type_suffixes`] (the default) the UCUM unit adds its words
//!   (`s` → `_seconds`, `By` → `_bytes`, `By/s` → `_bytes_per_second`, `{requests}` dropped),
//!   a monotonic sum ends in `_total` and a gauge (not a non-monotonic sum) of unit `1` in
//!   `_ratio`, no word twice; a name starting with a digit gets `_` in front. A metric whose
//!   name leaves nothing is dropped ([`reason::INVALID_METRIC_NAME`]).
//! - Label names: characters outside `[a-zA-Z0-9]` (and runs of them) become one `_`; a
//!   leading digit gets `key_` in front and a leading `_` gets `key`, so no attribute makes a
//!   name Prometheus reserves (`__name__` becomes `key__name__`). Attributes whose names
//!   collide after this are joined with `;` in key order, as Prometheus does.
//!   (Prometheus prefixes a leading `_` only with its `label_name_underscore_sanitization`
//!   option; Pharos always does, so that attributes never make `__` names.)
//! - Label values (module `value`): strings as they are, booleans, integers, doubles as
//!   JSON numbers, bytes as base64, arrays and maps as JSON.
//!
//! # Resource and scope
//! - `job` is `service.namespace/service.name` (or `service.name` alone), `instance` is
//!   `service.instance.id`; both override a point attribute of the same name.
//! - `target_info` (a gauge of value 1) carries the other resource attributes plus `job` and
//!   `instance`: one sample per resource per request, at the latest point time of that
//!   resource. As in Prometheus it is left out when the resource has no other attribute or
//!   neither `job` nor `instance`.
//! - Resource attributes listed in [`OtlpOptions::promote_resource_attributes`] are copied
//!   onto every series of the resource (a point attribute of the same name wins).
//! - With [`OtlpOptions::promote_scope_metadata`] (the default, as Prometheus's
//!   `promote_scope_metadata`) every series carries `otel_scope_name`, `otel_scope_version`,
//!   `otel_scope_schema_url` and `otel_scope_<attribute>` for the scope's attributes (empty
//!   values leave the label out).
//!
//! # Metric kinds
//! - Gauge: one sample per point. Sum: monotonic → counter (`_total`), otherwise gauge.
//! - Histogram: `_bucket{le=...}` with cumulative counts and `le="+Inf"` equal to the count,
//!   `_sum` (when recorded) and `_count`.
//! - Exponential histogram: the engine has no native histograms, so it becomes a classic
//!   histogram (`_bucket`, `_sum`, `_count`) whose `le` bounds are the upper boundaries of the
//!   exponential buckets — negative buckets, then the zero bucket (`le` = zero threshold), then
//!   the positive buckets — after downscaling to at most
//!   [`OtlpOptions::max_exponential_buckets`] buckets (160 by default; module
//!   `exponential`). Empty buckets at either end are left out, so the
//!   bucket layout follows the data. A scale outside −10..=20 drops the point
//!   ([`reason::EXPONENTIAL_HISTOGRAM_SCALE`]).
//! - Summary: `{quantile=...}` series plus `_sum` and `_count`.
//! - DELTA sums and histograms (both kinds) are made cumulative with a running total per
//!   series (module `delta`), at most [`OtlpOptions::max_delta_series`] series;
//!   points of further series are dropped ([`reason::DELTA_STATE_FULL`]). A start time before
//!   the previous point's time resets the total. An unspecified temporality drops the metric's
//!   points ([`reason::INVALID_TEMPORALITY`]).
//!
//! # Points
//! - Times are nanoseconds divided down to milliseconds; a point of time 0 is dropped
//!   ([`reason::MISSING_TIMESTAMP`]), as is a number point without a value
//!   ([`reason::MISSING_VALUE`]).
//! - The flag NO_RECORDED_VALUE writes the staleness marker to every series of the point (and
//!   forgets the running total of a delta series).
//! - Exemplars keep their value and time (the point's time when theirs is 0), with labels
//!   `trace_id` and `span_id` (lower-case hex, when valid and not zero) and the filtered
//!   attributes — the latter only when all labels fit in
//!   [`EXEMPLAR_MAX_LABEL_CHARS`](crate::store::EXEMPLAR_MAX_LABEL_CHARS), as Prometheus does.
//!   A sum's exemplar goes to its series, a histogram's to the `_bucket` series of the bucket
//!   holding its value. An exemplar without a value is skipped.
//! - Metadata is reported per metric family: the counter's name with `_total`, a histogram's
//!   or summary's base name; help is the description, unit the Prometheus unit (`seconds`).

mod delta;
mod exponential;
mod name;
mod value;

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar as OtlpExemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    SummaryDataPoint, exemplar, metric::Data, number_data_point,
};

use self::delta::{DeltaState, Total};
use self::exponential::ExpHistogram;
use self::name::{NameKind, label_name, metric_name, prometheus_unit};
use crate::model::{Labels, METRIC_NAME, Sample, stale_nan};
use crate::store::{Batch, EXEMPLAR_MAX_LABEL_CHARS, Exemplar, Metadata, MetricType};

/// Why data points were not converted (the keys of [`Batch::dropped`]).
pub mod reason {
    /// A point with time 0.
    pub const MISSING_TIMESTAMP: &str = "missing_timestamp";
    /// A metric whose name normalises to nothing.
    pub const INVALID_METRIC_NAME: &str = "invalid_metric_name";
    /// A number point with neither an integer nor a double value.
    pub const MISSING_VALUE: &str = "missing_value";
    /// A sum or histogram whose temporality is neither DELTA nor CUMULATIVE.
    pub const INVALID_TEMPORALITY: &str = "invalid_temporality";
    /// A metric without data (counted once per metric).
    pub const NO_DATA: &str = "no_data";
    /// A delta point of a new series while the delta state is full.
    pub const DELTA_STATE_FULL: &str = super::delta::DELTA_STATE_FULL;
    /// A delta point not after the previous point of its series.
    pub const DELTA_OUT_OF_ORDER: &str = super::delta::DELTA_OUT_OF_ORDER;
    /// An exponential histogram point whose scale is outside −10..=20.
    pub const EXPONENTIAL_HISTOGRAM_SCALE: &str = "exponential_histogram_scale";
}

/// How OTLP metrics are mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpOptions {
    /// Add unit words and `_total`/`_ratio` to metric names (Prometheus's
    /// `UnderscoreEscapingWithSuffixes`); when false names are only sanitised.
    pub add_unit_and_type_suffixes: bool,
    /// Resource attributes (OTLP names, e.g. `k8s.namespace.name`) copied onto every series.
    pub promote_resource_attributes: Vec<String>,
    /// Put `otel_scope_name`, `otel_scope_version`, `otel_scope_schema_url` and the scope's
    /// attributes on every series.
    pub promote_scope_metadata: bool,
    /// Most delta series whose running total is kept.
    pub max_delta_series: usize,
    /// Most buckets an exponential histogram keeps (it is downscaled to fit).
    pub max_exponential_buckets: usize,
}

impl Default for OtlpOptions {
    fn default() -> Self {
        Self {
            add_unit_and_type_suffixes: true,
            promote_resource_attributes: Vec::new(),
            promote_scope_metadata: true,
            max_delta_series: 100_000,
            max_exponential_buckets: 160,
        }
    }
}

/// Converts OTLP metrics requests, keeping the running totals of delta series between them.
#[derive(Debug)]
pub struct Converter {
    opts: OtlpOptions,
    delta: DeltaState,
}

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
const TARGET_INFO: &str = "target_info";
const NO_RECORDED_VALUE: u32 = 1;
const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;

impl Converter {
    /// A converter with no delta state yet.
    pub fn new(opts: OtlpOptions) -> Self {
        let delta = DeltaState::new(opts.max_delta_series);
        Self { opts, delta }
    }

    /// The options in use.
    pub fn options(&self) -> &OtlpOptions {
        &self.opts
    }

    /// Number of delta series whose running total is kept.
    pub fn delta_series(&self) -> usize {
        self.delta.len()
    }

    /// Forgets the running totals of delta series without a point since `time_unix_nano`
    /// (the caller decides the idle period from its clock); returns how many were forgotten.
    /// A forgotten series starts again from its next delta, as a counter reset.
    pub fn forget_delta_series_before(&mut self, time_unix_nano: u64) -> usize {
        self.delta.forget_before(time_unix_nano)
    }

    /// Converts one request. Never fails: what cannot be converted is counted in
    /// [`Batch::dropped`].
    pub fn convert(&mut self, req: &ExportMetricsServiceRequest) -> Batch {
        let mut out = Output::default();
        for rm in &req.resource_metrics {
            let attrs = rm.resource.as_ref().map_or(&[][..], |r| r.attributes.as_slice());
            let target = Target::new(attrs, &self.opts);
            let mut latest_ns = 0u64;
            for sm in &rm.scope_metrics {
                let scope = if self.opts.promote_scope_metadata {
                    scope_labels(sm.scope.as_ref(), &sm.schema_url)
                } else {
                    Vec::new()
                };
                let ctx = Context { target: &target, scope: &scope };
                for metric in &sm.metrics {
                    let mut conv =
                        MetricConversion { opts: &self.opts, delta: &mut self.delta, out: &mut out };
                    latest_ns = latest_ns.max(conv.metric(metric, &ctx));
                }
            }
            if latest_ns > 0 {
                target.push_target_info(attrs, latest_ns, &mut out);
            }
        }
        out.finish()
    }
}

/// The labels a resource gives its series.
struct Target {
    job: String,
    instance: String,
    /// Promoted resource attributes, label name → value.
    promoted: Vec<(String, String)>,
}

impl Target {
    fn new(attrs: &[KeyValue], opts: &OtlpOptions) -> Self {
        let get = |key: &str| {
            attrs.iter().rev().find(|kv| kv.key == key).map(|kv| value::label_value(kv.value.as_ref()))
        };
        let job = match (get(SERVICE_NAMESPACE), get(SERVICE_NAME)) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name,
            _ => String::new(),
        };
        let instance = get(SERVICE_INSTANCE_ID).unwrap_or_default();
        let mut promoted: Vec<(String, String)> = Vec::new();
        for key in &opts.promote_resource_attributes {
            let (Some(v), name) = (get(key), label_name(key)) else { continue };
            if !name.is_empty() && !promoted.iter().any(|(n, _)| *n == name) {
                promoted.push((name, v));
            }
        }
        Self { job, instance, promoted }
    }

    fn push_target_info(&self, attrs: &[KeyValue], latest_ns: u64, out: &mut Output) {
        let identifying = [SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID];
        let others: Vec<&KeyValue> =
            attrs.iter().filter(|kv| !identifying.contains(&kv.key.as_str())).collect();
        if others.is_empty() || (self.job.is_empty() && self.instance.is_empty()) {
            return;
        }
        let mut labels = attribute_labels(others.into_iter());
        labels.insert("job".to_owned(), self.job.clone());
        labels.insert("instance".to_owned(), self.instance.clone());
        labels.insert(METRIC_NAME.to_owned(), TARGET_INFO.to_owned());
        out.push(Labels::from_pairs(labels), to_ms(latest_ns), 1.0);
        out.metadata(TARGET_INFO, MetricType::Gauge, "Target metadata", "");
    }
}

/// The `otel_scope_*` labels of a scope.
fn scope_labels(scope: Option<&InstrumentationScope>, schema_url: &str) -> Vec<(String, String)> {
    let mut labels = vec![("otel_scope_schema_url".to_owned(), schema_url.to_owned())];
    if let Some(scope) = scope {
        labels.push(("otel_scope_name".to_owned(), scope.name.clone()));
        labels.push(("otel_scope_version".to_owned(), scope.version.clone()));
        for kv in &scope.attributes {
            let name = label_name(&format!("otel_scope_{}", kv.key));
            labels.push((name, value::label_value(kv.value.as_ref())));
        }
    }
    labels
}

/// Label name → value for attributes: names sanitised, values of colliding names joined
/// with `;` in key order.
fn attribute_labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>) -> BTreeMap<String, String> {
    let mut sorted: Vec<&KeyValue> = attrs.collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let name = label_name(&kv.key);
        if name.is_empty() {
            continue;
        }
        let v = value::label_value(kv.value.as_ref());
        match labels.get_mut(&name) {
            Some(existing) => {
                existing.push(';');
                existing.push_str(&v);
            }
            None => {
                labels.insert(name, v);
            }
        }
    }
    labels
}

/// The resource and scope a metric belongs to.
struct Context<'a> {
    target: &'a Target,
    scope: &'a [(String, String)],
}

impl Context<'_> {
    /// The labels of a point, without `__name__`: its attributes, the promoted resource
    /// attributes where the point has none of that name, then the scope labels, `job` and
    /// `instance`.
    fn point_labels(&self, attrs: &[KeyValue]) -> Labels {
        let mut labels = attribute_labels(attrs.iter());
        for (n, v) in &self.target.promoted {
            labels.entry(n.clone()).or_insert_with(|| v.clone());
        }
        for (n, v) in self.scope {
            labels.insert(n.clone(), v.clone());
        }
        if !self.target.job.is_empty() {
            labels.insert("job".to_owned(), self.target.job.clone());
        }
        if !self.target.instance.is_empty() {
            labels.insert("instance".to_owned(), self.target.instance.clone());
        }
        labels.remove(METRIC_NAME);
        Labels::from_pairs(labels)
    }
}

fn named(base: &Labels, name: &str) -> Labels {
    let mut l = base.clone();
    l.set(METRIC_NAME, name);
    l
}

fn named_with(base: &Labels, name: &str, label: &str, value: &str) -> Labels {
    let mut l = named(base, name);
    l.set(label, value);
    l
}

fn to_ms(ns: u64) -> i64 {
    // u64::MAX / 1e6 is below i64::MAX, so this never saturates.
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

/// A bound or quantile as Prometheus writes it (`strconv.FormatFloat(f, 'f', -1, 64)`).
fn format_le(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f == f64::INFINITY {
        "+Inf".to_owned()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{f}")
    }
}

fn stale(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

/// The conversion of one metric, with what it needs from the converter.
struct MetricConversion<'a> {
    opts: &'a OtlpOptions,
    delta: &'a mut DeltaState,
    out: &'a mut Output,
}

/// How a sum's or histogram's points are turned cumulative.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Temporality {
    Cumulative,
    Delta,
}

fn temporality(t: i32) -> Option<Temporality> {
    match t {
        CUMULATIVE => Some(Temporality::Cumulative),
        DELTA => Some(Temporality::Delta),
        _ => None,
    }
}

impl MetricConversion<'_> {
    /// Converts one metric; returns the latest point time seen (ns), 0 if none.
    fn metric(&mut self, m: &Metric, ctx: &Context<'_>) -> u64 {
        let Some(data) = &m.data else {
            self.out.drop_points(reason::NO_DATA, 1);
            return 0;
        };
        let (name_kind, metric_type, points, temporality) = match data {
            Data::Gauge(g) => {
                (NameKind::Gauge, MetricType::Gauge, g.data_points.len(), Some(Temporality::Cumulative))
            }
            Data::Sum(s) => {
                let (nk, mt) = if s.is_monotonic {
                    (NameKind::Counter, MetricType::Counter)
                } else {
                    (NameKind::UpDownCounter, MetricType::Gauge)
                };
                (nk, mt, s.data_points.len(), temporality(s.aggregation_temporality))
            }
            Data::Histogram(h) => (
                NameKind::Other,
                MetricType::Histogram,
                h.data_points.len(),
                temporality(h.aggregation_temporality),
            ),
            Data::ExponentialHistogram(h) => (
                NameKind::Other,
                MetricType::Histogram,
                h.data_points.len(),
                temporality(h.aggregation_temporality),
            ),
            Data::Summary(s) => {
                (NameKind::Other, MetricType::Summary, s.data_points.len(), Some(Temporality::Cumulative))
            }
        };
        let name = metric_name(&m.name, &m.unit, name_kind, self.opts.add_unit_and_type_suffixes);
        if name.is_empty() {
            self.out.drop_points(reason::INVALID_METRIC_NAME, points as u64);
            return 0;
        }
        let Some(temporality) = temporality else {
            self.out.drop_points(reason::INVALID_TEMPORALITY, points as u64);
            return 0;
        };
        if points == 0 {
            return 0;
        }
        self.out.metadata(&name, metric_type, &m.description, &prometheus_unit(&m.unit));
        match data {
            Data::Gauge(g) => self.numbers(&g.data_points, &name, ctx, temporality),
            Data::Sum(s) => self.numbers(&s.data_points, &name, ctx, temporality),
            Data::Histogram(h) => self.histograms(&h.data_points, &name, ctx, temporality),
            Data::ExponentialHistogram(h) => {
                self.exponential_histograms(&h.data_points, &name, ctx, temporality)
            }
            Data::Summary(s) => self.summaries(&s.data_points, &name, ctx),
        }
    }

    /// Checks a point's time; `None` (and the point counted as dropped) when it is 0.
    fn point_time(&mut self, time_ns: u64) -> Option<i64> {
        if time_ns == 0 {
            self.out.drop_points(reason::MISSING_TIMESTAMP, 1);
            None
        } else {
            Some(to_ms(time_ns))
        }
    }

    fn numbers(
        &mut self,
        points: &[NumberDataPoint],
        name: &str,
        ctx: &Context<'_>,
        temporality: Temporality,
    ) -> u64 {
        let mut latest = 0;
        for p in points {
            let Some(t) = self.point_time(p.time_unix_nano) else { continue };
            latest = latest.max(p.time_unix_nano);
            let labels = named(&ctx.point_labels(&p.attributes), name);
            if stale(p.flags) {
                if temporality == Temporality::Delta {
                    self.delta.remove(&labels);
                }
                self.out.push(labels, t, stale_nan());
                continue;
            }
            let v = match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d,
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                None => {
                    self.out.drop_points(reason::MISSING_VALUE, 1);
                    continue;
                }
            };
            let v = if temporality == Temporality::Delta {
                let max_exp = self.opts.max_exponential_buckets;
                match self.delta.accumulate(
                    &labels,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    Total::Sum(v),
                    max_exp,
                ) {
                    Ok(Total::Sum(total)) => *total,
                    Ok(_) => v,
                    Err(reason) => {
                        self.out.drop_points(reason, 1);
                        continue;
                    }
                }
            } else {
                v
            };
            for e in &p.exemplars {
                if let Some(ex) = convert_exemplar(e, t) {
                    self.out.exemplars.push((labels.clone(), ex));
                }
            }
            self.out.push(labels, t, v);
        }
        latest
    }

    fn histograms(
        &mut self,
        points: &[HistogramDataPoint],
        name: &str,
        ctx: &Context<'_>,
        temporality: Temporality,
    ) -> u64 {
        let mut latest = 0;
        for p in points {
            let Some(t) = self.point_time(p.time_unix_nano) else { continue };
            latest = latest.max(p.time_unix_nano);
            let base = ctx.point_labels(&p.attributes);
            let n = p.explicit_bounds.len().min(p.bucket_counts.len());
            if stale(p.flags) {
                if temporality == Temporality::Delta {
                    self.delta.remove(&named(&base, name));
                }
                let buckets: Vec<(f64, u64)> = p.explicit_bounds[..n].iter().map(|b| (*b, 0)).collect();
                self.push_stale_histogram(&base, name, t, &buckets, p.sum.is_some());
                continue;
            }
            let classic = if temporality == Temporality::Delta {
                let delta = Total::Histogram {
                    bounds: p.explicit_bounds[..n].to_vec(),
                    counts: p.bucket_counts[..n].to_vec(),
                    count: p.count,
                    sum: p.sum,
                };
                let key = named(&base, name);
                let max_exp = self.opts.max_exponential_buckets;
                match self.delta.accumulate(&key, p.start_time_unix_nano, p.time_unix_nano, delta, max_exp) {
                    Ok(Total::Histogram { bounds, counts, count, sum }) => {
                        Classic::explicit(bounds, counts, *count, *sum)
                    }
                    Ok(_) => {
                        Classic::explicit(&p.explicit_bounds[..n], &p.bucket_counts[..n], p.count, p.sum)
                    }
                    Err(reason) => {
                        self.out.drop_points(reason, 1);
                        continue;
                    }
                }
            } else {
                Classic::explicit(&p.explicit_bounds[..n], &p.bucket_counts[..n], p.count, p.sum)
            };
            self.push_histogram(&base, name, t, &classic, &p.exemplars);
        }
        latest
    }

    fn exponential_histograms(
        &mut self,
        points: &[ExponentialHistogramDataPoint],
        name: &str,
        ctx: &Context<'_>,
        temporality: Temporality,
    ) -> u64 {
        let mut latest = 0;
        let max_buckets = self.opts.max_exponential_buckets;
        for p in points {
            let Some(t) = self.point_time(p.time_unix_nano) else { continue };
            latest = latest.max(p.time_unix_nano);
            let base = ctx.point_labels(&p.attributes);
            let hist = ExpHistogram::from_point(p, max_buckets);
            if stale(p.flags) {
                if temporality == Temporality::Delta {
                    self.delta.remove(&named(&base, name));
                }
                let buckets = hist.map(|h| h.classic_buckets()).unwrap_or_default();
                self.push_stale_histogram(&base, name, t, &buckets, p.sum.is_some());
                continue;
            }
            let Some(hist) = hist else {
                self.out.drop_points(reason::EXPONENTIAL_HISTOGRAM_SCALE, 1);
                continue;
            };
            let hist = if temporality == Temporality::Delta {
                let key = named(&base, name);
                let start = p.start_time_unix_nano;
                match self.delta.accumulate(
                    &key,
                    start,
                    p.time_unix_nano,
                    Total::Exponential(hist.clone()),
                    max_buckets,
                ) {
                    Ok(Total::Exponential(total)) => total.clone(),
                    Ok(_) => hist,
                    Err(reason) => {
                        self.out.drop_points(reason, 1);
                        continue;
                    }
                }
            } else {
                hist
            };
            let classic = Classic { buckets: hist.classic_buckets(), count: hist.count, sum: hist.sum };
            self.push_histogram(&base, name, t, &classic, &p.exemplars);
        }
        latest
    }

    fn summaries(&mut self, points: &[SummaryDataPoint], name: &str, ctx: &Context<'_>) -> u64 {
        let mut latest = 0;
        for p in points {
            let Some(t) = self.point_time(p.time_unix_nano) else { continue };
            latest = latest.max(p.time_unix_nano);
            let base = ctx.point_labels(&p.attributes);
            let is_stale = stale(p.flags);
            let val = |v: f64| if is_stale { stale_nan() } else { v };
            self.out.push(named(&base, &format!("{name}_sum")), t, val(p.sum));
            self.out.push(named(&base, &format!("{name}_count")), t, val(p.count as f64));
            for q in &p.quantile_values {
                self.out.push(named_with(&base, name, "quantile", &format_le(q.quantile)), t, val(q.value));
            }
        }
        latest
    }

    fn push_histogram(&mut self, base: &Labels, name: &str, t: i64, h: &Classic, exemplars: &[OtlpExemplar]) {
        if let Some(sum) = h.sum {
            self.out.push(named(base, &format!("{name}_sum")), t, sum);
        }
        self.out.push(named(base, &format!("{name}_count")), t, h.count as f64);
        let bucket = format!("{name}_bucket");
        for (le, cumulative) in &h.buckets {
            self.out.push(named_with(base, &bucket, "le", &format_le(*le)), t, *cumulative as f64);
        }
        self.out.push(named_with(base, &bucket, "le", "+Inf"), t, h.count as f64);
        for e in exemplars {
            let Some(ex) = convert_exemplar(e, t) else { continue };
            let le = h.buckets.iter().map(|(le, _)| *le).find(|le| ex.value <= *le);
            let le = le.map_or_else(|| "+Inf".to_owned(), format_le);
            self.out.exemplars.push((named_with(base, &bucket, "le", &le), ex));
        }
    }

    fn push_stale_histogram(&mut self, base: &Labels, name: &str, t: i64, buckets: &[(f64, u64)], sum: bool) {
        if sum {
            self.out.push(named(base, &format!("{name}_sum")), t, stale_nan());
        }
        self.out.push(named(base, &format!("{name}_count")), t, stale_nan());
        let bucket = format!("{name}_bucket");
        for (le, _) in buckets {
            self.out.push(named_with(base, &bucket, "le", &format_le(*le)), t, stale_nan());
        }
        self.out.push(named_with(base, &bucket, "le", "+Inf"), t, stale_nan());
    }
}

/// A histogram as classic buckets: `(le, cumulative count)` without `+Inf`.
struct Classic {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: Option<f64>,
}

impl Classic {
    fn explicit(bounds: &[f64], counts: &[u64], count: u64, sum: Option<f64>) -> Self {
        let mut cumulative = 0u64;
        let buckets = bounds
            .iter()
            .zip(counts)
            .map(|(le, c)| {
                cumulative = cumulative.saturating_add(*c);
                (*le, cumulative)
            })
            .collect();
        Self { buckets, count, sum }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// An OTLP exemplar as a Prometheus exemplar; `None` without a value.
fn convert_exemplar(e: &OtlpExemplar, point_ms: i64) -> Option<Exemplar> {
    let value = match e.value? {
        exemplar::Value::AsDouble(d) => d,
        exemplar::Value::AsInt(i) => i as f64,
    };
    let mut ids: Vec<(&str, String)> = Vec::with_capacity(2);
    if e.trace_id.len() == 16 && e.trace_id.iter().any(|b| *b != 0) {
        ids.push(("trace_id", hex(&e.trace_id)));
    }
    if e.span_id.len() == 8 && e.span_id.iter().any(|b| *b != 0) {
        ids.push(("span_id", hex(&e.span_id)));
    }
    let attrs = attribute_labels(e.filtered_attributes.iter());
    let chars = |n: &str, v: &str| n.chars().count() + v.chars().count();
    let id_chars: usize = ids.iter().map(|(n, v)| chars(n, v)).sum();
    let attr_chars: usize = attrs.iter().map(|(n, v)| chars(n, v)).sum();
    let mut labels = if id_chars + attr_chars <= EXEMPLAR_MAX_LABEL_CHARS {
        Labels::from_pairs(attrs)
    } else {
        Labels::empty()
    };
    for (n, v) in ids {
        labels.set(n, &v);
    }
    let t = if e.time_unix_nano == 0 { point_ms } else { to_ms(e.time_unix_nano) };
    Some(Exemplar { labels, value, t })
}

/// The converted data of one request, grouped by series as it is built.
#[derive(Default)]
struct Output {
    index: HashMap<Labels, usize>,
    series: Vec<(Labels, Vec<Sample>)>,
    exemplars: Vec<(Labels, Exemplar)>,
    metadata_index: HashMap<String, usize>,
    metadata: Vec<(String, Metadata)>,
    dropped: BTreeMap<&'static str, u64>,
}

impl Output {
    fn push(&mut self, labels: Labels, t: i64, v: f64) {
        let sample = Sample { t, v };
        match self.index.get(&labels) {
            Some(&i) => self.series[i].1.push(sample),
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push((labels, vec![sample]));
            }
        }
    }

    fn drop_points(&mut self, reason: &'static str, n: u64) {
        if n > 0 {
            *self.dropped.entry(reason).or_insert(0) += n;
        }
    }

    fn metadata(&mut self, name: &str, kind: MetricType, help: &str, unit: &str) {
        if self.metadata_index.contains_key(name) {
            return;
        }
        self.metadata_index.insert(name.to_owned(), self.metadata.len());
        self.metadata
            .push((name.to_owned(), Metadata { kind, help: help.to_owned(), unit: unit.to_owned() }));
    }

    fn finish(mut self) -> Batch {
        for (_, samples) in &mut self.series {
            // Stable: of two samples at one time the later in the request wins.
            samples.sort_by_key(|s| s.t);
            let mut deduped: Vec<Sample> = Vec::with_capacity(samples.len());
            for s in samples.drain(..) {
                match deduped.last_mut() {
                    Some(last) if last.t == s.t => *last = s,
                    _ => deduped.push(s),
                }
            }
            *samples = deduped;
        }
        Batch {
            series: self.series,
            exemplars: self.exemplars,
            metadata: self.metadata,
            dropped: self.dropped.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests;
