//! What differs between the three signals: how items are counted, validated and partitioned.

use std::mem::take;

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::{
        Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
        SummaryDataPoint, metric::Data,
    },
    resource::v1::Resource,
};
use pharos_core::{FNV_OFFSET, PartitionKey, Signal, Tenant, fnv1a_extend, partition_of};

use super::validate::{Rejections, Violation, check_attributes, check_id};
use super::{Ingestor, Prepared};
use crate::{IngestError, Limits};

/// An OTLP export request of one signal.
pub trait OtlpRequest:
    prost::Message + Default + serde::de::DeserializeOwned + Send + Sync + 'static
{
    const SIGNAL: Signal;

    /// Spans, data points or log records in the request.
    fn items(&self) -> usize;

    /// Validates, splits and encodes a request already decoded (from JSON, say). Traces and
    /// logs take the wire-format path; metrics are split as they are.
    fn prepare(
        self,
        ingestor: &Ingestor,
        tenant: &Tenant,
        metadata: &[(String, String)],
    ) -> Result<Prepared, IngestError> {
        ingestor.prepare_encoded(Self::SIGNAL, tenant, metadata, bytes::Bytes::from(self.encode_to_vec()))
    }
}

/// The resource attributes that name a log stream (the labels of a stream). Every record of a
/// stream goes to one partition.
pub const STREAM_RESOURCE_ATTRIBUTES: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// The resource attributes that become `job` and `instance` of a metric series.
const SERIES_RESOURCE_ATTRIBUTES: &[&str] = &["service.name", "service.namespace", "service.instance.id"];

fn resource_attrs(resource: &Option<Resource>) -> &[KeyValue] {
    resource.as_ref().map_or(&[], |r| &r.attributes[..])
}

fn check_resource(resource: &Option<Resource>, limits: &Limits) -> Result<(), Violation> {
    check_attributes(resource_attrs(resource), limits, "resource")
}

fn check_scope(
    scope: &Option<opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    limits: &Limits,
) -> Result<(), Violation> {
    scope.as_ref().map_or(Ok(()), |s| check_attributes(&s.attributes, limits, "instrumentation scope"))
}

/// Hashes a value canonically (type tag, then content).
fn hash_value(h: &mut u64, v: &AnyValue) {
    match &v.value {
        None => fnv1a_extend(h, &[0]),
        Some(Value::StringValue(s)) => {
            fnv1a_extend(h, &[1]);
            fnv1a_extend(h, s.as_bytes());
        }
        Some(Value::BoolValue(b)) => fnv1a_extend(h, &[2, u8::from(*b)]),
        Some(Value::IntValue(i)) => {
            fnv1a_extend(h, &[3]);
            fnv1a_extend(h, &i.to_le_bytes());
        }
        Some(Value::DoubleValue(d)) => {
            fnv1a_extend(h, &[4]);
            fnv1a_extend(h, &d.to_bits().to_le_bytes());
        }
        Some(Value::BytesValue(b)) => {
            fnv1a_extend(h, &[5]);
            fnv1a_extend(h, b);
        }
        Some(Value::ArrayValue(a)) => {
            fnv1a_extend(h, &[6]);
            a.values.iter().for_each(|v| hash_value(h, v));
            fnv1a_extend(h, &[0xfe]);
        }
        Some(Value::StringValueStrindex(i)) => {
            fnv1a_extend(h, &[8]);
            fnv1a_extend(h, &i.to_le_bytes());
        }
        Some(Value::KvlistValue(kvs)) => {
            fnv1a_extend(h, &[7]);
            hash_attributes(h, &kvs.values, |_| true);
            fnv1a_extend(h, &[0xfe]);
        }
    }
}

/// Hashes the attributes `keep` selects, in key order, so that their order on the wire does not
/// matter.
pub(crate) fn hash_attributes(h: &mut u64, attrs: &[KeyValue], keep: impl Fn(&str) -> bool) {
    let mut sorted: Vec<&KeyValue> = attrs.iter().filter(|kv| keep(&kv.key)).collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        fnv1a_extend(h, kv.key.as_bytes());
        fnv1a_extend(h, &[0xff]);
        if let Some(v) = &kv.value {
            hash_value(h, v);
        }
        fnv1a_extend(h, &[0xff]);
    }
}

impl OtlpRequest for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;

    fn items(&self) -> usize {
        self.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
    }
}

impl OtlpRequest for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;

    fn items(&self) -> usize {
        self.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
    }
}

/// What every kind of metric data point has.
trait DataPoint: Clone {
    fn attributes(&self) -> &[KeyValue];
    fn exemplars(&self) -> &[Exemplar];
}

macro_rules! impl_data_point {
    ($t:ty, exemplars) => {
        impl DataPoint for $t {
            fn attributes(&self) -> &[KeyValue] {
                &self.attributes
            }
            fn exemplars(&self) -> &[Exemplar] {
                &self.exemplars
            }
        }
    };
    ($t:ty) => {
        impl DataPoint for $t {
            fn attributes(&self) -> &[KeyValue] {
                &self.attributes
            }
            fn exemplars(&self) -> &[Exemplar] {
                &[]
            }
        }
    };
}
impl_data_point!(NumberDataPoint, exemplars);
impl_data_point!(HistogramDataPoint, exemplars);
impl_data_point!(ExponentialHistogramDataPoint, exemplars);
impl_data_point!(SummaryDataPoint);

/// Runs `$body` with `$points` bound to the data point vector of any kind of metric data.
macro_rules! with_points {
    ($data:expr, $points:ident => $body:expr) => {
        match $data {
            Data::Gauge(d) => {
                let $points = &mut d.data_points;
                $body
            }
            Data::Sum(d) => {
                let $points = &mut d.data_points;
                $body
            }
            Data::Histogram(d) => {
                let $points = &mut d.data_points;
                $body
            }
            Data::ExponentialHistogram(d) => {
                let $points = &mut d.data_points;
                $body
            }
            Data::Summary(d) => {
                let $points = &mut d.data_points;
                $body
            }
        }
    };
}

fn metric_points(m: &Metric) -> usize {
    match &m.data {
        None => 0,
        Some(Data::Gauge(d)) => d.data_points.len(),
        Some(Data::Sum(d)) => d.data_points.len(),
        Some(Data::Histogram(d)) => d.data_points.len(),
        Some(Data::ExponentialHistogram(d)) => d.data_points.len(),
        Some(Data::Summary(d)) => d.data_points.len(),
    }
}

fn check_point<P: DataPoint>(p: &P, limits: &Limits) -> Result<(), Violation> {
    check_attributes(p.attributes(), limits, "data point")?;
    for e in p.exemplars() {
        check_id(&e.trace_id, 16, false, "exemplar", "trace_id")?;
        check_id(&e.span_id, 8, false, "exemplar", "span_id")?;
        check_attributes(&e.filtered_attributes, limits, "exemplar")?;
    }
    Ok(())
}

fn retain_points<P: DataPoint>(points: &mut Vec<P>, limits: &Limits, rej: &mut Rejections) {
    points.retain(|p| match check_point(p, limits) {
        Ok(()) => true,
        Err(v) => {
            rej.add(v, 1);
            false
        }
    });
}

/// Spreads data points over partitions by series: `series_base` hashes everything but the point's
/// attributes. `wrap` rebuilds the metric data around each partition's points.
fn spread_points<P: DataPoint>(
    points: Vec<P>,
    series_base: u64,
    partitions: u32,
    wrap: impl Fn(Vec<P>) -> Data,
) -> Vec<(u32, Data, u64)> {
    let mut per: Vec<Vec<P>> = (0..partitions).map(|_| Vec::new()).collect();
    for point in points {
        let mut h = series_base;
        hash_attributes(&mut h, point.attributes(), |_| true);
        per[partition_of(PartitionKey::Hash(h), partitions) as usize].push(point);
    }
    per.into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(p, v)| {
            let n = v.len() as u64;
            (p as u32, wrap(v), n)
        })
        .collect()
}

fn split_data(data: Data, series_base: u64, partitions: u32) -> Vec<(u32, Data, u64)> {
    use opentelemetry_proto::tonic::metrics::v1::{ExponentialHistogram, Gauge, Histogram, Sum, Summary};
    match data {
        Data::Gauge(d) => spread_points(d.data_points, series_base, partitions, |data_points| {
            Data::Gauge(Gauge { data_points })
        }),
        Data::Sum(d) => spread_points(d.data_points, series_base, partitions, |data_points| {
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: d.aggregation_temporality,
                is_monotonic: d.is_monotonic,
            })
        }),
        Data::Histogram(d) => spread_points(d.data_points, series_base, partitions, |data_points| {
            Data::Histogram(Histogram { data_points, aggregation_temporality: d.aggregation_temporality })
        }),
        Data::ExponentialHistogram(d) => {
            spread_points(d.data_points, series_base, partitions, |data_points| {
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points,
                    aggregation_temporality: d.aggregation_temporality,
                })
            })
        }
        Data::Summary(d) => spread_points(d.data_points, series_base, partitions, |data_points| {
            Data::Summary(Summary { data_points })
        }),
    }
}

impl OtlpRequest for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;

    fn items(&self) -> usize {
        self.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(metric_points)
            .sum()
    }

    fn prepare(
        self,
        ingestor: &Ingestor,
        tenant: &Tenant,
        metadata: &[(String, String)],
    ) -> Result<Prepared, IngestError> {
        ingestor.prepare_metrics(tenant, metadata, self)
    }
}

/// Removes every data point that breaks a rule, recording why; a resource, scope or metric that
/// breaks one takes all its points with it.
pub(crate) fn validate_metrics(req: &mut ExportMetricsServiceRequest, limits: &Limits, rej: &mut Rejections) {
    req.resource_metrics.retain_mut(|rm| {
        let count = |rm: &opentelemetry_proto::tonic::metrics::v1::ResourceMetrics| -> u64 {
            rm.scope_metrics.iter().flat_map(|s| &s.metrics).map(|m| metric_points(m) as u64).sum()
        };
        if let Err(v) = check_resource(&rm.resource, limits) {
            rej.add(v, count(rm));
            return false;
        }
        rm.scope_metrics.retain_mut(|sm| {
            if let Err(v) = check_scope(&sm.scope, limits) {
                rej.add(v, sm.metrics.iter().map(|m| metric_points(m) as u64).sum());
                return false;
            }
            sm.metrics.retain_mut(|m| {
                if m.name.is_empty() {
                    let v = Violation { reason: "invalid_metric", message: "metric has no name".to_string() };
                    rej.add(v, metric_points(m) as u64);
                    return false;
                }
                if let Some(data) = m.data.as_mut() {
                    with_points!(data, points => retain_points(points, limits, rej));
                }
                metric_points(m) > 0
            });
            !sm.metrics.is_empty()
        });
        !rm.scope_metrics.is_empty()
    });
}

/// Splits a metrics request by partition: `(partition, request, points)` for each partition that
/// gets something.
pub(crate) fn split_metrics(
    req: ExportMetricsServiceRequest,
    partitions: u32,
) -> Vec<(u32, ExportMetricsServiceRequest, u64)> {
    if partitions <= 1 {
        let n = req.items() as u64;
        return vec![(0, req, n)];
    }
    // Metrics nest one level deeper (metric → points), so a metric header is copied into each
    // partition that gets one of its points. A series is the resource's job/instance
    // attributes, the metric name and the point's attributes.
    let n = partitions as usize;
    let mut out: Vec<Option<ExportMetricsServiceRequest>> = vec![None; n];
    let mut counts = vec![0u64; n];
    for mut rm in req.resource_metrics {
        let mut resource_hash = FNV_OFFSET;
        hash_attributes(&mut resource_hash, resource_attrs(&rm.resource), |k| {
            SERIES_RESOURCE_ATTRIBUTES.contains(&k)
        });
        let scopes = take(&mut rm.scope_metrics);
        let mut per_r: Vec<Option<opentelemetry_proto::tonic::metrics::v1::ResourceMetrics>> = vec![None; n];
        for mut sm in scopes {
            let metrics = take(&mut sm.metrics);
            let mut per_s: Vec<Option<opentelemetry_proto::tonic::metrics::v1::ScopeMetrics>> = vec![None; n];
            for mut m in metrics {
                let Some(data) = m.data.take() else { continue };
                let mut series_base = resource_hash;
                fnv1a_extend(&mut series_base, m.name.as_bytes());
                fnv1a_extend(&mut series_base, &[0xff]);
                for (p, data, points) in split_data(data, series_base, partitions) {
                    counts[p as usize] += points;
                    let copy = Metric { data: Some(data), ..m.clone() };
                    per_s[p as usize].get_or_insert_with(|| sm.clone()).metrics.push(copy);
                }
            }
            for (p, s) in per_s.into_iter().enumerate() {
                if let Some(s) = s {
                    per_r[p].get_or_insert_with(|| rm.clone()).scope_metrics.push(s);
                }
            }
        }
        for (p, r) in per_r.into_iter().enumerate() {
            if let Some(r) = r {
                out[p].get_or_insert_with(Default::default).resource_metrics.push(r);
            }
        }
    }
    out.into_iter().enumerate().filter_map(|(p, req)| req.map(|r| (p as u32, r, counts[p]))).collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        metrics::v1::{Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics},
    };

    use super::*;

    fn kv(k: &str, v: i64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::IntValue(v)) }),
            ..Default::default()
        }
    }

    #[test]
    fn split_sends_each_metric_series_to_one_partition() {
        let point = |a: i64, t: u64| NumberDataPoint {
            attributes: vec![kv("a", a)],
            time_unix_nano: t,
            ..Default::default()
        };
        let metric = |t: u64| Metric {
            name: "m".into(),
            data: Some(Data::Gauge(Gauge { data_points: (0..16).map(|a| point(a, t)).collect() })),
            ..Default::default()
        };
        let req = |t| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric(t)], ..Default::default() }],
                ..Default::default()
            }],
        };
        let owner_of = |t| {
            let mut owner = std::collections::BTreeMap::new();
            for (p, part, _) in split_metrics(req(t), 4) {
                for m in part.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics)
                {
                    assert_eq!(m.name, "m");
                    let Some(Data::Gauge(g)) = &m.data else { panic!("kind changed") };
                    for dp in &g.data_points {
                        owner.insert(format!("{:?}", dp.attributes), p);
                    }
                }
            }
            owner
        };
        let first = owner_of(1);
        assert_eq!(first.len(), 16);
        assert!(first.values().collect::<std::collections::BTreeSet<_>>().len() > 1);
        assert_eq!(owner_of(2), first, "the same series goes to the same partition in every request");
    }
}
