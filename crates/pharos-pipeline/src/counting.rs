//! The counting stage: decodes every envelope, counts items per signal and tenant, and keeps the
//! counts durably beside the offset they cover, so that after a crash each record is counted
//! exactly once. The signal stores replace it.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use pharos_core::{Envelope, Signal, Tenant};
use pharos_queue::Offset;
use prost::Message;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::{PipelineError, PipelineMetrics, Sink};

/// Items counted per (signal, tenant).
pub type Counts = BTreeMap<(Signal, Tenant), u64>;

#[derive(Serialize, Deserialize, Default)]
struct Checkpoint {
    next_offset: Offset,
    counts: Vec<CountEntry>,
}

#[derive(Serialize, Deserialize)]
struct CountEntry {
    signal: String,
    tenant: String,
    items: u64,
}

pub struct CountingSink {
    path: PathBuf,
    next_offset: Offset,
    counts: Counts,
    metrics: PipelineMetrics,
}

fn signal_named(name: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| s.as_str() == name)
}

impl CountingSink {
    /// Opens the checkpoint of one partition under `dir`, restoring its counts.
    pub fn open(dir: &Path, partition: u32, metrics: PipelineMetrics) -> Result<CountingSink, PipelineError> {
        fs::create_dir_all(dir).map_err(PipelineError::io("create counting directory", dir))?;
        let path = dir.join(format!("partition-{partition:04}.json"));
        let checkpoint = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Checkpoint>(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "counting checkpoint is unreadable, starting from zero");
                Checkpoint::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(PipelineError::Io { op: "read counting checkpoint", path, source: e }),
        };
        let mut counts = Counts::new();
        for entry in checkpoint.counts {
            let (Some(signal), Ok(tenant)) = (signal_named(&entry.signal), Tenant::parse(&entry.tenant))
            else {
                continue;
            };
            metrics.items(signal, &tenant, entry.items);
            counts.insert((signal, tenant), entry.items);
        }
        Ok(CountingSink { path, next_offset: checkpoint.next_offset, counts, metrics })
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// Messages that mirror the nesting of the OTLP and remote-write requests down to the items and
/// declare nothing else: decoding one walks and checks the whole protobuf framing but skips every
/// field it does not count, which costs a fraction of a full decode.
mod shape {
    /// An item (span, log record, data point, sample): its fields are skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Item {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Scope {
        /// `spans`, `log_records` (tag 2 in ScopeSpans and ScopeLogs).
        #[prost(message, repeated, tag = "2")]
        pub(super) items: Vec<Item>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Resource {
        /// `scope_spans`, `scope_logs`.
        #[prost(message, repeated, tag = "2")]
        pub(super) scopes: Vec<Scope>,
    }

    /// `ExportTraceServiceRequest` and `ExportLogsServiceRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Export {
        #[prost(message, repeated, tag = "1")]
        pub(super) resources: Vec<Resource>,
    }

    /// Gauge, Sum, Histogram, ExponentialHistogram, Summary: `data_points` is tag 1 in each.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Points {
        #[prost(message, repeated, tag = "1")]
        pub(super) points: Vec<Item>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Metric {
        #[prost(message, optional, tag = "5")]
        pub(super) gauge: Option<Points>,
        #[prost(message, optional, tag = "7")]
        pub(super) sum: Option<Points>,
        #[prost(message, optional, tag = "9")]
        pub(super) histogram: Option<Points>,
        #[prost(message, optional, tag = "10")]
        pub(super) exponential_histogram: Option<Points>,
        #[prost(message, optional, tag = "11")]
        pub(super) summary: Option<Points>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct MetricScope {
        #[prost(message, repeated, tag = "2")]
        pub(super) metrics: Vec<Metric>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct MetricResource {
        #[prost(message, repeated, tag = "2")]
        pub(super) scopes: Vec<MetricScope>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct MetricsExport {
        #[prost(message, repeated, tag = "1")]
        pub(super) resources: Vec<MetricResource>,
    }

    /// A remote-write series: samples are tag 2 in 1.0 and 2.0, histograms tag 4 in 1.0 and 3 in 2.0.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct SeriesV1 {
        #[prost(message, repeated, tag = "2")]
        pub(super) samples: Vec<Item>,
        #[prost(message, repeated, tag = "4")]
        pub(super) histograms: Vec<Item>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct SeriesV2 {
        #[prost(message, repeated, tag = "2")]
        pub(super) samples: Vec<Item>,
        #[prost(message, repeated, tag = "3")]
        pub(super) histograms: Vec<Item>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct WriteV1 {
        #[prost(message, repeated, tag = "1")]
        pub(super) series: Vec<SeriesV1>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct WriteV2 {
        #[prost(message, repeated, tag = "5")]
        pub(super) series: Vec<SeriesV2>,
    }
}

/// Decodes an envelope's payload down to its items and counts them.
fn count_items(env: &Envelope) -> Result<u64, prost::DecodeError> {
    use pharos_core::PayloadFormat;
    let payload = env.payload.clone();
    let len = |v: &Option<shape::Points>| v.as_ref().map_or(0, |p| p.points.len() as u64);
    Ok(match (env.format, env.signal) {
        (PayloadFormat::PrometheusWriteV1, _) => shape::WriteV1::decode(payload)?
            .series
            .iter()
            .map(|s| (s.samples.len() + s.histograms.len()) as u64)
            .sum(),
        (PayloadFormat::PrometheusWriteV2, _) => shape::WriteV2::decode(payload)?
            .series
            .iter()
            .map(|s| (s.samples.len() + s.histograms.len()) as u64)
            .sum(),
        (PayloadFormat::LokiPush, _) => pharos_core::loki::PushRequest::decode(payload)?
            .streams
            .iter()
            .map(|s| s.entries.len() as u64)
            .sum(),
        (PayloadFormat::Otlp, Signal::Traces | Signal::Logs) => shape::Export::decode(payload)?
            .resources
            .iter()
            .flat_map(|r| &r.scopes)
            .map(|s| s.items.len() as u64)
            .sum(),
        (PayloadFormat::Otlp, Signal::Metrics) => shape::MetricsExport::decode(payload)?
            .resources
            .iter()
            .flat_map(|r| &r.scopes)
            .flat_map(|s| &s.metrics)
            .map(|m| {
                len(&m.gauge)
                    + len(&m.sum)
                    + len(&m.histogram)
                    + len(&m.exponential_histogram)
                    + len(&m.summary)
            })
            .sum(),
    })
}

#[async_trait]
impl Sink for CountingSink {
    fn resume_from(&self) -> Offset {
        self.next_offset
    }

    async fn write(&mut self, envelopes: Vec<(Offset, Envelope)>) -> Result<(), PipelineError> {
        for (offset, env) in envelopes {
            if offset < self.next_offset {
                continue; // already counted before a restart
            }
            match count_items(&env) {
                Ok(n) => {
                    if n != u64::from(env.items) {
                        warn!(
                            offset,
                            header = env.items,
                            decoded = n,
                            "envelope item count differs from its header"
                        );
                    }
                    *self.counts.entry((env.signal, env.tenant.clone())).or_default() += n;
                    self.metrics.items(env.signal, &env.tenant, n);
                }
                Err(e) => {
                    error!(offset, error = %e, "undecodable envelope payload, skipping it");
                    self.metrics.bad_record();
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self, next: Offset, _closing: bool) -> Result<Offset, PipelineError> {
        // After a restart the runner replays from the committed offset, which other stores can
        // hold behind what this stage has counted: the records it skipped are counted already,
        // so its checkpoint never moves back (else a second crash would count them again).
        self.next_offset = self.next_offset.max(next);
        let next = self.next_offset;
        let checkpoint = Checkpoint {
            next_offset: next,
            counts: self
                .counts
                .iter()
                .map(|((signal, tenant), items)| CountEntry {
                    signal: signal.as_str().into(),
                    tenant: tenant.as_str().into(),
                    items: *items,
                })
                .collect(),
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &checkpoint)).await.map_err(|e| {
            PipelineError::Io {
                op: "write counting checkpoint",
                path: self.path.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })??;
        Ok(next)
    }
}

fn write_atomically(path: &Path, checkpoint: &Checkpoint) -> Result<(), PipelineError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(checkpoint).expect("a checkpoint always serializes");
    let mut f = fs::File::create(&tmp).map_err(PipelineError::io("create counting checkpoint", &tmp))?;
    f.write_all(&bytes).map_err(PipelineError::io("write counting checkpoint", &tmp))?;
    f.sync_data().map_err(PipelineError::io("fsync counting checkpoint", &tmp))?;
    fs::rename(&tmp, path).map_err(PipelineError::io("rename counting checkpoint", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(PipelineError::io("fsync counting directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use bytes::Bytes;
    use opentelemetry_proto::tonic::{
        collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        },
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::metric::Data,
    };
    use pharos_queue::{
        Queue,
        wal::{Wal, WalConfig},
    };
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{Runner, RunnerOptions};

    fn logs_envelope(tenant: &str, n: usize) -> Bytes {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (0..n).map(|_| LogRecord::default()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Envelope {
            tenant: Tenant::parse(tenant).unwrap(),
            signal: Signal::Logs,
            format: pharos_core::PayloadFormat::Otlp,
            received_at_unix_nanos: 0,
            items: n as u32,
            metadata: Vec::new(),
            payload: req.encode_to_vec().into(),
        }
        .encode()
    }

    async fn run_until_idle(queue: Arc<dyn Queue>, dir: &Path) -> Counts {
        let sink = CountingSink::open(dir, 0, PipelineMetrics::default()).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel(); // drain what is there, then stop
        let runner = Runner {
            queue,
            partition: 0,
            options: RunnerOptions { poll_wait: Duration::from_millis(20), ..RunnerOptions::default() },
            metrics: PipelineMetrics::default(),
        };
        runner.run(sink, cancel).await.unwrap();
        CountingSink::open(dir, 0, PipelineMetrics::default()).unwrap().counts().clone()
    }

    #[tokio::test]
    async fn counting_sink_counts_each_record_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn Queue> = Arc::new(Wal::open(WalConfig::new(dir.path().join("wal"), 1)).unwrap());
        queue.append(0, vec![logs_envelope("a", 3), logs_envelope("b", 2)]).await.unwrap();
        let counts = run_until_idle(queue.clone(), &dir.path().join("counts")).await;
        let a = (Signal::Logs, Tenant::parse("a").unwrap());
        assert_eq!(counts.get(&a), Some(&3));

        // A restart: the counts come back from the checkpoint and new records add to them.
        let c = queue.consumer("processor", 0).await.unwrap();
        assert_eq!(c.committed(), 2);
        drop(c);
        queue.append(0, vec![logs_envelope("a", 4)]).await.unwrap();
        let counts = run_until_idle(queue.clone(), &dir.path().join("counts")).await;
        assert_eq!(counts.get(&a), Some(&7));
        assert_eq!(counts.get(&(Signal::Logs, Tenant::parse("b").unwrap())), Some(&2));
    }

    #[tokio::test]
    async fn a_replay_from_behind_the_checkpoint_does_not_move_it_back() {
        // Another store held the queue commit at 0 while this stage counted offsets 0..3.
        let dir = tempfile::tempdir().unwrap();
        let env = Envelope::decode(logs_envelope("a", 5)).unwrap();
        let mut sink = CountingSink::open(dir.path(), 0, PipelineMetrics::default()).unwrap();
        sink.write((0..3).map(|o| (o, env.clone())).collect()).await.unwrap();
        assert_eq!(sink.flush(3, false).await.unwrap(), 3);
        // First restart: the runner replays from 0 and flushes after offset 0.
        let mut sink = CountingSink::open(dir.path(), 0, PipelineMetrics::default()).unwrap();
        sink.write(vec![(0, env.clone())]).await.unwrap();
        assert_eq!(sink.flush(1, false).await.unwrap(), 3, "the checkpoint stays at 3");
        // Second restart: offsets 1 and 2 are still counted once.
        let mut sink = CountingSink::open(dir.path(), 0, PipelineMetrics::default()).unwrap();
        sink.write((0..4).map(|o| (o, env.clone())).collect()).await.unwrap();
        assert_eq!(sink.counts().values().sum::<u64>(), 20);
    }

    #[tokio::test]
    async fn counting_sink_skips_records_its_checkpoint_already_covers() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = CountingSink::open(dir.path(), 0, PipelineMetrics::default()).unwrap();
        let env = Envelope::decode(logs_envelope("a", 5)).unwrap();
        sink.write(vec![(0, env.clone())]).await.unwrap();
        sink.flush(1, false).await.unwrap();
        // Replay of offset 0 (the queue commit was lost) must not count it again.
        let mut sink = CountingSink::open(dir.path(), 0, PipelineMetrics::default()).unwrap();
        sink.write(vec![(0, env.clone()), (1, env)]).await.unwrap();
        assert_eq!(sink.counts().values().sum::<u64>(), 10);
    }

    fn envelope(signal: Signal, format: pharos_core::PayloadFormat, payload: Vec<u8>) -> Envelope {
        Envelope {
            tenant: Tenant::default(),
            signal,
            format,
            received_at_unix_nanos: 0,
            items: 0,
            metadata: Vec::new(),
            payload: payload.into(),
        }
    }

    #[test]
    fn count_items_agrees_with_a_full_decode_of_the_conformance_examples() {
        use pharos_core::PayloadFormat::Otlp;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/otlp");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();

        let traces: ExportTraceServiceRequest = serde_json::from_str(&read("trace.json")).unwrap();
        let full: usize =
            traces.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        let env = envelope(Signal::Traces, Otlp, traces.encode_to_vec());
        assert_eq!(count_items(&env).unwrap(), full as u64);

        for file in ["logs.json", "events.json"] {
            let logs: ExportLogsServiceRequest = serde_json::from_str(&read(file)).unwrap();
            let full: usize =
                logs.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
            let env = envelope(Signal::Logs, Otlp, logs.encode_to_vec());
            assert_eq!(count_items(&env).unwrap(), full as u64, "{file}");
        }

        let metrics: ExportMetricsServiceRequest = serde_json::from_str(&read("metrics.json")).unwrap();
        let full: usize = metrics
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(Data::Gauge(d)) => d.data_points.len(),
                Some(Data::Sum(d)) => d.data_points.len(),
                Some(Data::Histogram(d)) => d.data_points.len(),
                Some(Data::ExponentialHistogram(d)) => d.data_points.len(),
                Some(Data::Summary(d)) => d.data_points.len(),
                None => 0,
            })
            .sum();
        assert!(full > 0);
        let env = envelope(Signal::Metrics, Otlp, metrics.encode_to_vec());
        assert_eq!(count_items(&env).unwrap(), full as u64);

        let env = envelope(Signal::Traces, Otlp, vec![0x0a, 0xff, 0xff]);
        assert!(count_items(&env).is_err(), "damaged protobuf must not count");
    }

    #[test]
    fn count_items_counts_remote_write_samples_and_histograms() {
        use pharos_core::prompb::{Histogram, v1, v2};
        let series = |n: usize, h: usize| v1::TimeSeries {
            samples: vec![v1::Sample { value: 1.0, timestamp: 1 }; n],
            histograms: vec![Histogram::default(); h],
            ..Default::default()
        };
        let req = v1::WriteRequest { timeseries: vec![series(3, 0), series(0, 2)], metadata: vec![] };
        let env =
            envelope(Signal::Metrics, pharos_core::PayloadFormat::PrometheusWriteV1, req.encode_to_vec());
        assert_eq!(count_items(&env).unwrap(), 5);
        let req = v2::Request {
            symbols: vec![String::new()],
            timeseries: vec![v2::TimeSeries {
                samples: vec![v1::Sample { value: 1.0, timestamp: 1 }; 4],
                histograms: vec![Histogram::default()],
                ..Default::default()
            }],
        };
        let env =
            envelope(Signal::Metrics, pharos_core::PayloadFormat::PrometheusWriteV2, req.encode_to_vec());
        assert_eq!(count_items(&env).unwrap(), 5);
    }
}
