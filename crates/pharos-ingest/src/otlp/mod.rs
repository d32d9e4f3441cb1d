//! The OTLP receivers. [`Ingestor`] is the transport-independent part: validate, partition,
//! append to the queue, and report what was accepted; `http` and `grpc` put it on the wire.

pub mod grpc;
pub mod http;
mod signals;
pub(crate) mod validate;
mod wire;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use pharos_core::{Envelope, Metadata, PayloadFormat, Signal, Tenant};
use pharos_queue::Queue;

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use prost::Message;
pub use signals::{OtlpRequest, STREAM_RESOURCE_ATTRIBUTES};
pub use validate::Rejections;
pub use wire::WireError;

use crate::{IngestError, IngestMetrics, Limits};

/// What became of an export request that was (at least partly) accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub signal: Signal,
    pub accepted: u64,
    pub rejected: u64,
    /// Why items were rejected (set whenever `rejected > 0`), or a warning about an accepted request.
    pub message: Option<String>,
}

/// A request made ready for the queue: one envelope per partition.
pub struct Prepared {
    pub(crate) signal: Signal,
    pub(crate) tenant: Tenant,
    pub(crate) envelopes: Vec<(u32, Bytes)>,
    pub(crate) accepted: u64,
    pub(crate) rejections: Rejections,
}

pub(crate) fn now_unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// What an envelope carries: a message encoded straight into the envelope's buffer, or bytes
/// already encoded ([`EncodedBody`]).
pub(crate) trait EnvelopeBody {
    fn body_len(&self) -> usize;
    fn put(&self, buf: &mut bytes::BytesMut);
}

impl<M: prost::Message> EnvelopeBody for M {
    fn body_len(&self) -> usize {
        self.encoded_len()
    }

    fn put(&self, buf: &mut bytes::BytesMut) {
        self.encode(buf).expect("the buffer has room for the whole message");
    }
}

/// A payload already encoded.
pub(crate) struct EncodedBody<'a>(pub(crate) &'a [u8]);

impl EnvelopeBody for EncodedBody<'_> {
    fn body_len(&self) -> usize {
        self.0.len()
    }

    fn put(&self, buf: &mut bytes::BytesMut) {
        buf.extend_from_slice(self.0);
    }
}

/// Encodes `message` as the payload of an envelope, straight into the envelope's buffer.
pub(crate) fn encode_envelope(
    tenant: &Tenant,
    signal: Signal,
    format: PayloadFormat,
    received_at_unix_nanos: u64,
    items: u64,
    metadata: &[(String, String)],
    message: &impl EnvelopeBody,
) -> Bytes {
    let mut buf = Envelope::encode_header(
        tenant,
        signal,
        format,
        received_at_unix_nanos,
        items as u32,
        metadata,
        message.body_len(),
    );
    message.put(&mut buf);
    buf.freeze()
}

/// The protobuf export response for an outcome: empty, or a partial success.
pub(crate) fn encode_response(o: &Outcome) -> Vec<u8> {
    let rejected = o.rejected as i64;
    let message = o.message.clone();
    match o.signal {
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: message
                .map(|error_message| ExportTracePartialSuccess { rejected_spans: rejected, error_message }),
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: message.map(|error_message| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message,
            }),
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: message.map(|error_message| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message,
            }),
        }
        .encode_to_vec(),
    }
}

/// Validates export requests, splits them by partition and makes them durable in the queue.
pub struct Ingestor {
    queue: Arc<dyn Queue>,
    limits: Limits,
    metrics: IngestMetrics,
    metadata_keys: Vec<String>,
    sample_check: Option<Arc<dyn crate::remote_write::SampleCheck>>,
}

impl Ingestor {
    pub fn new(queue: Arc<dyn Queue>, limits: Limits, metrics: IngestMetrics) -> Ingestor {
        Ingestor { queue, limits, metrics, metadata_keys: Vec::new(), sample_check: None }
    }

    /// Lets remote write refuse, at once and as Prometheus does, the samples the metrics
    /// store would refuse (out of order, too old, duplicate): only where the store runs in
    /// the same process.
    pub fn with_sample_check(mut self, check: Arc<dyn crate::remote_write::SampleCheck>) -> Ingestor {
        self.sample_check = Some(check);
        self
    }

    pub(crate) fn sample_check(&self) -> Option<&dyn crate::remote_write::SampleCheck> {
        self.sample_check.as_deref()
    }

    /// Keeps these request headers (lowercase names; at most
    /// [`pharos_core::MAX_METADATA_ENTRIES`]) with the data of OTLP and Zipkin
    /// requests, for the processors' `from_context: metadata.<name>`.
    pub fn with_metadata_keys(mut self, keys: Vec<String>) -> Ingestor {
        self.metadata_keys = keys.into_iter().map(|k| k.to_ascii_lowercase()).collect();
        self.metadata_keys.sort();
        self.metadata_keys.dedup();
        self
    }

    /// The request metadata to keep, read with `header` (a header or gRPC metadata look-up);
    /// values that are not text are left out.
    pub fn metadata<'a>(&self, header: impl Fn(&str) -> Option<&'a [u8]>) -> Metadata {
        self.metadata_keys
            .iter()
            .filter_map(|key| {
                let value = std::str::from_utf8(header(key)?).ok()?;
                Some((key.clone(), value.to_string()))
            })
            .collect()
    }

    pub fn partitions(&self) -> u32 {
        self.queue.partitions()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// The CPU-bound half of an export: count, validate, split and encode. `body` is the
    /// protobuf encoding of an export request of `signal`.
    pub fn prepare_encoded(
        &self,
        signal: Signal,
        tenant: &Tenant,
        metadata: &[(String, String)],
        body: Bytes,
    ) -> Result<Prepared, IngestError> {
        match signal {
            Signal::Metrics => {
                self.prepare_metrics(tenant, metadata, ExportMetricsServiceRequest::decode(body)?)
            }
            Signal::Traces | Signal::Logs => self.prepare_wire(signal, tenant, metadata, &body),
        }
    }

    /// [`Ingestor::prepare_encoded`] for a request already decoded (from JSON, say).
    pub fn prepare<R: OtlpRequest>(
        &self,
        tenant: &Tenant,
        metadata: &[(String, String)],
        req: R,
    ) -> Result<Prepared, IngestError> {
        req.prepare(self, tenant, metadata)
    }

    fn check_item_count(&self, signal: Signal, tenant: &Tenant, items: usize) -> Result<(), IngestError> {
        self.metrics.received(signal, tenant, items as u64);
        if items > self.limits.max_items_per_request {
            self.metrics.rejected(signal, tenant, "too_many_items", items as u64);
            return Err(IngestError::TooManyItems {
                signal,
                count: items,
                limit: self.limits.max_items_per_request,
            });
        }
        Ok(())
    }

    /// Counts the rejections; `Err` when nothing is left to accept.
    fn settle(
        &self,
        signal: Signal,
        tenant: &Tenant,
        items: usize,
        rejections: &Rejections,
    ) -> Result<u64, IngestError> {
        for (reason, n) in &rejections.by_reason {
            self.metrics.rejected(signal, tenant, reason, *n);
        }
        let accepted = items as u64 - rejections.count;
        if accepted == 0 && rejections.count > 0 {
            return Err(IngestError::AllRejected {
                signal,
                count: rejections.count,
                message: rejections.first.clone().unwrap_or_default(),
            });
        }
        Ok(accepted)
    }

    /// Traces and logs: validated and split on the wire format, without decoding.
    fn prepare_wire(
        &self,
        signal: Signal,
        tenant: &Tenant,
        metadata: &[(String, String)],
        body: &[u8],
    ) -> Result<Prepared, IngestError> {
        let mut plan = wire::Plan::scan(signal, body)?;
        let items = plan.items();
        self.check_item_count(signal, tenant, items)?;
        let mut rejections = Rejections::default();
        plan.validate(body, &self.limits, self.queue.partitions(), &mut rejections)?;
        let accepted = self.settle(signal, tenant, items, &rejections)?;
        let received_at = now_unix_nanos();
        let mut envelopes = Vec::new();
        for p in plan.partitions() {
            let sizes = plan.sizes(p);
            let mut buf = Envelope::encode_header(
                tenant,
                signal,
                PayloadFormat::Otlp,
                received_at,
                sizes.items as u32,
                metadata,
                sizes.len,
            );
            plan.write(body, p, &sizes, &mut buf);
            envelopes.push((p, buf.freeze()));
        }
        Ok(Prepared { signal, tenant: tenant.clone(), envelopes, accepted, rejections })
    }

    fn prepare_metrics(
        &self,
        tenant: &Tenant,
        metadata: &[(String, String)],
        mut req: ExportMetricsServiceRequest,
    ) -> Result<Prepared, IngestError> {
        let signal = Signal::Metrics;
        let items = req.items();
        self.check_item_count(signal, tenant, items)?;
        let mut rejections = Rejections::default();
        signals::validate_metrics(&mut req, &self.limits, &mut rejections);
        let accepted = self.settle(signal, tenant, items, &rejections)?;
        let received_at = now_unix_nanos();
        let envelopes = if accepted == 0 {
            Vec::new()
        } else {
            signals::split_metrics(req, self.queue.partitions())
                .into_iter()
                .map(|(partition, part, n)| {
                    (
                        partition,
                        encode_envelope(tenant, signal, PayloadFormat::Otlp, received_at, n, metadata, &part),
                    )
                })
                .collect()
        };
        Ok(Prepared { signal, tenant: tenant.clone(), envelopes, accepted, rejections })
    }

    /// The I/O half: append every envelope and wait until all are durable.
    pub async fn commit(&self, prepared: Prepared) -> Result<Outcome, IngestError> {
        let Prepared { signal, tenant, envelopes, accepted, rejections } = prepared;
        let appends = envelopes.into_iter().map(|(p, env)| self.queue.append(p, vec![env]));
        let results = futures::future::join_all(appends).await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            let e = IngestError::Queue(e);
            self.metrics.rejected(signal, &tenant, e.reason(), accepted);
            return Err(e);
        }
        self.metrics.accepted(signal, &tenant, accepted);
        let message = rejections.first.map(|first| {
            format!(
                "{} of {} {} rejected; the first because: {first}",
                rejections.count,
                accepted + rejections.count,
                signal.item_name()
            )
        });
        Ok(Outcome { signal, accepted, rejected: rejections.count, message })
    }

    /// Validates `req` and makes it durable.
    pub async fn export<R: OtlpRequest>(&self, tenant: &Tenant, req: R) -> Result<Outcome, IngestError> {
        let prepared = self.prepare(tenant, &[], req)?;
        self.commit(prepared).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        },
        logs::v1::{ResourceLogs, ScopeLogs},
        metrics::v1::{Metric, ResourceMetrics, ScopeMetrics, metric::Data},
        trace::v1::{ResourceSpans, ScopeSpans},
    };
    use pharos_queue::{
        Queue,
        wal::{Wal, WalConfig},
    };

    /// Each item as a request of its own, with its resource and scope: comparing these as
    /// multisets shows that splitting lost, duplicated or detached nothing.
    trait Flatten {
        fn flatten(&self) -> Vec<Vec<u8>>;
    }

    impl Flatten for ExportTraceServiceRequest {
        fn flatten(&self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            for r in &self.resource_spans {
                for s in &r.scope_spans {
                    for span in &s.spans {
                        let one = ResourceSpans {
                            scope_spans: vec![ScopeSpans { spans: vec![span.clone()], ..s.clone() }],
                            ..r.clone()
                        };
                        out.push(one.encode_to_vec());
                    }
                }
            }
            out
        }
    }

    impl Flatten for ExportLogsServiceRequest {
        fn flatten(&self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            for r in &self.resource_logs {
                for s in &r.scope_logs {
                    for rec in &s.log_records {
                        let one = ResourceLogs {
                            scope_logs: vec![ScopeLogs { log_records: vec![rec.clone()], ..s.clone() }],
                            ..r.clone()
                        };
                        out.push(one.encode_to_vec());
                    }
                }
            }
            out
        }
    }

    impl Flatten for ExportMetricsServiceRequest {
        fn flatten(&self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            for r in &self.resource_metrics {
                for s in &r.scope_metrics {
                    for m in &s.metrics {
                        // One metric per point: rebuild the data with a single point.
                        let singles: Vec<Data> = match &m.data {
                            None => vec![],
                            Some(Data::Gauge(d)) => d
                                .data_points
                                .iter()
                                .map(|p| Data::Gauge(Gauge { data_points: vec![p.clone()] }))
                                .collect(),
                            Some(Data::Sum(d)) => d
                                .data_points
                                .iter()
                                .map(|p| Data::Sum(Sum { data_points: vec![p.clone()], ..d.clone() }))
                                .collect(),
                            Some(Data::Histogram(d)) => d
                                .data_points
                                .iter()
                                .map(|p| {
                                    Data::Histogram(Histogram { data_points: vec![p.clone()], ..d.clone() })
                                })
                                .collect(),
                            Some(Data::ExponentialHistogram(d)) => d
                                .data_points
                                .iter()
                                .map(|p| {
                                    Data::ExponentialHistogram(ExponentialHistogram {
                                        data_points: vec![p.clone()],
                                        ..d.clone()
                                    })
                                })
                                .collect(),
                            Some(Data::Summary(d)) => d
                                .data_points
                                .iter()
                                .map(|p| Data::Summary(Summary { data_points: vec![p.clone()] }))
                                .collect(),
                        };
                        for data in singles {
                            let one = ResourceMetrics {
                                scope_metrics: vec![ScopeMetrics {
                                    metrics: vec![Metric { data: Some(data), ..m.clone() }],
                                    ..s.clone()
                                }],
                                ..r.clone()
                            };
                            out.push(one.encode_to_vec());
                        }
                    }
                }
            }
            out
        }
    }

    use opentelemetry_proto::tonic::metrics::v1::{ExponentialHistogram, Gauge, Histogram, Sum, Summary};

    fn example(file: &str) -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/otlp");
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    async fn round_trip<R: OtlpRequest + Flatten + Clone>(file: &str, partitions: u32) {
        let original: R = serde_json::from_str(&example(file)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn Queue> = Arc::new(Wal::open(WalConfig::new(dir.path(), partitions)).unwrap());
        let ingestor = Ingestor::new(queue.clone(), Limits::default(), IngestMetrics::default());
        let tenant = Tenant::parse("t").unwrap();
        let outcome = ingestor.export(&tenant, original.clone()).await.unwrap();
        assert_eq!((outcome.accepted, outcome.rejected), (original.items() as u64, 0));

        let mut got = Vec::new();
        let mut items = 0;
        for p in 0..partitions {
            let mut c = queue.consumer("test", p).await.unwrap();
            for record in c.poll(100, std::time::Duration::from_millis(10)).await.unwrap() {
                let env = Envelope::decode(record.payload).unwrap();
                assert_eq!((env.tenant.as_str(), env.signal), ("t", R::SIGNAL));
                let part = R::decode(env.payload).unwrap();
                assert_eq!(env.items as usize, part.items());
                items += part.items();
                got.extend(part.flatten());
            }
        }
        let mut want = original.flatten();
        want.sort();
        got.sort();
        assert_eq!(items, original.items(), "{file}");
        assert!(got == want, "{file} did not survive the queue intact with {partitions} partitions");
    }

    #[tokio::test]
    async fn conformance_examples_reach_the_queue_intact() {
        for partitions in [1, 4] {
            round_trip::<ExportTraceServiceRequest>("trace.json", partitions).await;
            round_trip::<ExportLogsServiceRequest>("logs.json", partitions).await;
            round_trip::<ExportLogsServiceRequest>("events.json", partitions).await;
            round_trip::<ExportMetricsServiceRequest>("metrics.json", partitions).await;
        }
    }
}
