//! Live metrics: `--series` active series, split into one shard per worker (series slot `s`
//! belongs to worker `s % workers`); each worker writes its shard once per cycle (`--batch`
//! samples per request, one request in flight), one second of sample time apart, so no series
//! ever goes backwards, even with several workers in flight; `--churn` replaces a fraction of them every `--churn-every` seconds. The same series are sent
//! as Prometheus remote write 1.0, remote write 2.0 (symbols, metadata, exemplars, created
//! timestamps) or OTLP metrics (cumulative monotonic sums and gauges).

use crate::remote_write::{Sample, v2};
use crate::rng::{Rng, hex, splitmix64};
use crate::shape::Shape;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::HashMap;

/// One sample of the live stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    /// The series id (the slot, or a replacement of it after churn).
    pub(crate) id: u64,
    pub(crate) value: f64,
    pub(crate) timestamp_ms: i64,
}

/// The live stream of samples.
pub(crate) struct Live {
    pub(crate) shape: Shape,
    pub(crate) batch: u64,
    /// The workers, one shard of the series each.
    pub(crate) workers: u64,
    pub(crate) seed: u64,
    pub(crate) start_ms: i64,
}

/// The metric name, `instance` and `job` of series `id`: 100 metric names per instance.
pub(crate) fn series_name(id: u64) -> (String, String) {
    (format!("bench_metric_{}", id % 100), format!("host-{}", id / 100))
}

impl Live {
    /// Series slots in worker `w`'s shard (slots `w`, `w + workers`, ...).
    pub(crate) fn shard_len(&self, w: u64) -> u64 {
        let n = self.shape.series;
        if w >= n { 0 } else { (n - w).div_ceil(self.workers) }
    }

    /// The samples of request `k` of worker `w` at churn period `epoch`: the samples
    /// `k * batch ..` of the endless sequence of its shard's slots, cycle after cycle;
    /// time = start + cycle seconds. Only worker `w` writes its slots, one request at a time,
    /// so every series gets its samples in time order.
    pub(crate) fn points(&self, w: u64, k: u64, epoch: u64) -> Vec<Point> {
        let len = self.shard_len(w);
        if len == 0 {
            return Vec::new();
        }
        let first = k * self.batch;
        (first..first + self.batch)
            .map(|g| {
                let slot = w + (g % len) * self.workers;
                let cycle = g / len;
                let id = self.shape.series_id(slot, epoch);
                Point {
                    id,
                    // A counter: it grows by a per-series step every cycle.
                    value: (cycle * 10 + splitmix64(id ^ self.seed) % 7) as f64,
                    timestamp_ms: self.start_ms + cycle as i64 * 1000,
                }
            })
            .collect()
    }

    /// Remote write 1.0 (snappy-compressed protobuf), encoded straight into one buffer (the
    /// labels of [`series_name`]; building a `TimeSeries` of owned strings per sample made the
    /// load generator as busy as the server's receiver).
    pub(crate) fn rw1(&self, points: &[Point]) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        use std::fmt::Write;
        let mut out = Vec::with_capacity(points.len() * 72);
        let (mut series, mut text) = (Vec::with_capacity(128), String::with_capacity(32));
        for p in points {
            series.clear();
            for (name, value) in [("__name__", 0), ("instance", 1), ("job", 2)] {
                text.clear();
                let _ = match value {
                    0 => write!(text, "bench_metric_{}", p.id % 100),
                    1 => write!(text, "host-{}", p.id / 100),
                    _ => write!(text, "loadgen"),
                };
                let len = 2
                    + name.len()
                    + encoded_len_varint(name.len() as u64)
                    + text.len()
                    + encoded_len_varint(text.len() as u64);
                encode_key(1, WireType::LengthDelimited, &mut series);
                encode_varint(len as u64, &mut series);
                encode_key(1, WireType::LengthDelimited, &mut series);
                encode_varint(name.len() as u64, &mut series);
                series.extend_from_slice(name.as_bytes());
                encode_key(2, WireType::LengthDelimited, &mut series);
                encode_varint(text.len() as u64, &mut series);
                series.extend_from_slice(text.as_bytes());
            }
            let ts = p.timestamp_ms as u64;
            encode_key(2, WireType::LengthDelimited, &mut series);
            encode_varint((1 + 8 + 1 + encoded_len_varint(ts)) as u64, &mut series);
            encode_key(1, WireType::SixtyFourBit, &mut series);
            series.extend_from_slice(&p.value.to_bits().to_le_bytes());
            encode_key(2, WireType::Varint, &mut series);
            encode_varint(ts, &mut series);
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(series.len() as u64, &mut out);
            out.extend_from_slice(&series);
        }
        snappy(&out)
    }

    /// Remote write 2.0: a symbol table per request, counter metadata with help text, the start
    /// of the run as created timestamp, and an exemplar (with a trace id) on one sample in ten.
    /// Returns the body and the number of exemplars.
    pub(crate) fn rw2(&self, points: &[Point], seq: u64) -> (Vec<u8>, u64) {
        let mut symbols: Vec<String> = vec![String::new()];
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut sym = |s: String| -> u32 {
            if s.is_empty() {
                return 0;
            }
            *index.entry(s.clone()).or_insert_with(|| {
                symbols.push(s);
                (symbols.len() - 1) as u32
            })
        };
        let mut rng = Rng::derive(self.seed, 0x7277_3200_0000_0000 ^ seq);
        let mut exemplars = 0;
        let timeseries: Vec<v2::TimeSeries> = points
            .iter()
            .map(|p| {
                let (name, instance) = series_name(p.id);
                let help = sym(format!("Synthetic counter {} of pharos-loadgen.", p.id % 100));
                let labels_refs = vec![
                    sym("__name__".into()),
                    sym(name),
                    sym("instance".into()),
                    sym(instance),
                    sym("job".into()),
                    sym("loadgen".into()),
                ];
                let exemplar = (rng.below(10) == 0).then(|| {
                    exemplars += 1;
                    v2::Exemplar {
                        labels_refs: vec![sym("trace_id".into()), sym(hex(&rng.id::<16>()))],
                        value: p.value,
                        timestamp: p.timestamp_ms,
                    }
                });
                v2::TimeSeries {
                    labels_refs,
                    samples: vec![Sample { value: p.value, timestamp: p.timestamp_ms }],
                    exemplars: exemplar.into_iter().collect(),
                    metadata: Some(v2::Metadata {
                        r#type: v2::METRIC_TYPE_COUNTER,
                        help_ref: help,
                        unit_ref: 0,
                    }),
                    created_timestamp: self.start_ms,
                }
            })
            .collect();
        (snappy(&v2::Request { symbols, timeseries }.encode_to_vec()), exemplars)
    }

    /// OTLP metrics: one resource per instance (`service.name` = `loadgen`,
    /// `service.instance.id` = the instance), so the series are `job="loadgen"` and
    /// `instance` in Prometheus terms; even metric numbers are cumulative monotonic sums
    /// (`bench_metric_<k>_total` in PromQL), odd ones gauges.
    pub(crate) fn otlp(&self, points: &[Point]) -> ExportMetricsServiceRequest {
        let start_ns = self.start_ms as u64 * 1_000_000;
        let mut by_instance: Vec<(String, Vec<Metric>)> = Vec::new();
        for p in points {
            let (name, instance) = series_name(p.id);
            let dp = NumberDataPoint {
                start_time_unix_nano: start_ns,
                time_unix_nano: p.timestamp_ms as u64 * 1_000_000,
                value: Some(number_data_point::Value::AsDouble(p.value)),
                ..Default::default()
            };
            let data = if (p.id % 100).is_multiple_of(2) {
                metric::Data::Sum(Sum {
                    data_points: vec![dp],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            } else {
                metric::Data::Gauge(Gauge { data_points: vec![dp] })
            };
            let m = Metric {
                name,
                description: format!("Synthetic series {} of pharos-loadgen.", p.id % 100),
                data: Some(data),
                ..Default::default()
            };
            match by_instance.iter_mut().find(|(i, _)| *i == instance) {
                Some((_, ms)) => ms.push(m),
                None => by_instance.push((instance, vec![m])),
            }
        }
        let str_kv = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: by_instance
                .into_iter()
                .map(|(instance, metrics)| ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            str_kv("service.name", "loadgen".into()),
                            str_kv("service.instance.id", instance),
                        ],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// The PromQL selector of series `id` as written by remote write (`otlp`: as OTLP metrics
/// become in Prometheus terms).
pub(crate) fn selector(id: u64, otlp: bool) -> String {
    let (name, instance) = series_name(id);
    let suffix = if otlp && (id % 100).is_multiple_of(2) { "_total" } else { "" };
    format!("{name}{suffix}{{instance=\"{instance}\",job=\"loadgen\"}}")
}

pub(crate) fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).expect("snappy")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{Label, TimeSeries, WriteRequest};
    use std::collections::{BTreeMap, BTreeSet};

    fn live(series: u64, churn: f64) -> Live {
        live_of(series, churn, 1)
    }

    fn live_of(series: u64, churn: f64, workers: u64) -> Live {
        Live {
            shape: Shape { series, churn, ..Shape::default() },
            batch: 50,
            workers,
            seed: 1,
            start_ms: 1_000_000,
        }
    }

    #[test]
    fn each_cycle_writes_every_series_once_and_moves_on_a_second() {
        let l = live(200, 0.0);
        let pts: Vec<Point> = (0..8).flat_map(|seq| l.points(0, seq, 0)).collect();
        assert_eq!(pts.len(), 400);
        let ids: BTreeSet<u64> = pts.iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), 200, "exactly --series series");
        for id in ids {
            let mine: Vec<&Point> = pts.iter().filter(|p| p.id == id).collect();
            assert_eq!(mine.len(), 2);
            assert_eq!(mine[1].timestamp_ms - mine[0].timestamp_ms, 1000);
            assert!(mine[1].value > mine[0].value, "a counter");
        }
    }

    #[test]
    fn workers_write_disjoint_shards_so_no_series_goes_backwards() {
        // Fewer series than batch x workers: with one shared sequence, two requests in flight
        // would carry two cycles of the same series.
        let l = live_of(70, 0.0, 3);
        let mut owner: BTreeMap<u64, u64> = BTreeMap::new();
        let mut seen: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for w in 0..3 {
            for k in 0..4 {
                for p in l.points(w, k, 0) {
                    assert_eq!(*owner.entry(p.id).or_insert(w), w, "series {} in two shards", p.id);
                    seen.entry(p.id).or_default().push(p.timestamp_ms);
                }
            }
        }
        assert_eq!(seen.len(), 70, "every series written");
        for (id, ts) in &seen {
            assert!(ts.windows(2).all(|t| t[1] == t[0] + 1000), "series {id}: {ts:?}");
        }
        // Every cycle of a worker writes each series of its shard once.
        let shard: Vec<u64> = l.points(1, 0, 0).iter().map(|p| p.id).take(l.shard_len(1) as usize).collect();
        assert_eq!(shard, (0..70).filter(|s| s % 3 == 1).collect::<Vec<_>>());
    }

    #[test]
    fn churn_periods_bring_new_series() {
        let l = live(200, 0.25);
        let ids = |epoch| {
            l.points(0, 0, epoch)
                .iter()
                .chain(&l.points(0, 1, epoch))
                .chain(&l.points(0, 2, epoch))
                .chain(&l.points(0, 3, epoch))
                .map(|p| p.id)
                .collect::<BTreeSet<_>>()
        };
        let (a, b) = (ids(0), ids(1));
        assert_eq!(a.len(), 200);
        assert_eq!(b.len(), 200);
        assert_eq!(b.difference(&a).count(), 50, "a quarter of the series replaced");
    }

    #[test]
    fn remote_write_1_carries_each_point_as_a_series_of_three_labels() {
        let l = live(1000, 0.0);
        let pts = l.points(0, 3, 0);
        let raw = snap::raw::Decoder::new().decompress_vec(&l.rw1(&pts)).unwrap();
        let got = WriteRequest::decode(&raw[..]).unwrap();
        let want: Vec<TimeSeries> = pts
            .iter()
            .map(|p| {
                let (name, instance) = series_name(p.id);
                TimeSeries {
                    labels: vec![
                        Label { name: "__name__".into(), value: name },
                        Label { name: "instance".into(), value: instance },
                        Label { name: "job".into(), value: "loadgen".into() },
                    ],
                    samples: vec![Sample { value: p.value, timestamp: p.timestamp_ms }],
                }
            })
            .collect();
        assert_eq!(got, WriteRequest { timeseries: want });
    }

    #[test]
    fn remote_write_2_has_a_symbol_table_metadata_exemplars_and_created_timestamps() {
        let l = live(1000, 0.0);
        let pts = l.points(0, 0, 0);
        let (body, exemplars) = l.rw2(&pts, 0);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = v2::Request::decode(&raw[..]).unwrap();
        assert_eq!(req.symbols[0], "");
        assert_eq!(req.timeseries.len(), 50);
        let got_exemplars: usize = req.timeseries.iter().map(|t| t.exemplars.len()).sum();
        assert_eq!(got_exemplars as u64, exemplars);
        for (t, p) in req.timeseries.iter().zip(&pts) {
            let labels: Vec<&str> = t.labels_refs.iter().map(|&r| req.symbols[r as usize].as_str()).collect();
            let (name, instance) = series_name(p.id);
            assert_eq!(labels, ["__name__", name.as_str(), "instance", instance.as_str(), "job", "loadgen"]);
            let md = t.metadata.as_ref().unwrap();
            assert_eq!(md.r#type, v2::METRIC_TYPE_COUNTER);
            assert!(req.symbols[md.help_ref as usize].starts_with("Synthetic counter"));
            assert_eq!(t.created_timestamp, 1_000_000);
            assert_eq!(t.samples[0].timestamp, p.timestamp_ms);
        }
        // Same seed, same request.
        assert_eq!(l.rw2(&pts, 0).0, body);
    }

    #[test]
    fn otlp_metrics_carry_every_point_once() {
        let l = live(300, 0.0);
        let pts = l.points(0, 2, 0);
        let req = l.otlp(&pts);
        let n: usize = req
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match m.data.as_ref().unwrap() {
                metric::Data::Sum(s) => s.data_points.len(),
                metric::Data::Gauge(g) => g.data_points.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(n, 50);
        assert_eq!(selector(4, true), "bench_metric_4_total{instance=\"host-0\",job=\"loadgen\"}");
        assert_eq!(selector(105, true), "bench_metric_5{instance=\"host-1\",job=\"loadgen\"}");
    }
}
