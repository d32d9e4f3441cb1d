//! The processors' sink: every record is counted; metrics records are written into the
//! metrics heads and made durable as parts; traces and logs records go into their store's
//! head and are made durable as blocks. The offset committed to the queue is the smallest of what each
//! has made durable.

use std::sync::Arc;

use pharos_core::{Envelope, PayloadFormat, Signal, Tenant};
use pharos_metrics::store::{PartStore, PartitionWriter};
use pharos_pipeline::{
    CountingSink, Output, PipelineError, Pipelines, Sink,
    processor::{Batch, Data},
};
use pharos_queue::Offset;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Pharos's own metrics about metrics ingestion into the heads.
#[derive(Clone, Default)]
pub(crate) struct MetricsStoreMetrics {
    samples: Family<Vec<(&'static str, String)>, Counter>,
    rejected: Family<Vec<(&'static str, String)>, Counter>,
    parts: Counter,
    spans: Family<Vec<(&'static str, String)>, Counter>,
    spans_rejected: Family<Vec<(&'static str, String)>, Counter>,
    trace_blocks: Counter,
    trace_block_bytes: Counter,
    log_entries: Family<Vec<(&'static str, String)>, Counter>,
    log_entries_rejected: Family<Vec<(&'static str, String)>, Counter>,
    log_blocks: Counter,
    log_block_bytes: Counter,
}

impl MetricsStoreMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_metrics_samples_appended",
            "Samples appended to the metrics heads, by tenant",
            self.samples.clone(),
        );
        registry.register(
            "pharos_metrics_samples_rejected",
            "Samples (and exemplars, metadata) the metrics heads refused, by tenant and reason",
            self.rejected.clone(),
        );
        registry.register(
            "pharos_metrics_parts_written",
            "Metrics parts written to disk",
            self.parts.clone(),
        );
        registry.register(
            "pharos_traces_spans_stored",
            "Spans put in the trace store, by tenant",
            self.spans.clone(),
        );
        registry.register(
            "pharos_traces_spans_rejected",
            "Spans the trace store refused, by tenant and reason",
            self.spans_rejected.clone(),
        );
        registry.register(
            "pharos_traces_blocks_flushed",
            "Trace blocks written from the processors' pending spans",
            self.trace_blocks.clone(),
        );
        registry.register(
            "pharos_traces_block_bytes_flushed",
            "Bytes of trace blocks written from the processors' pending spans",
            self.trace_block_bytes.clone(),
        );
        registry.register(
            "pharos_logs_entries_stored",
            "Log entries put in the log store, by tenant",
            self.log_entries.clone(),
        );
        registry.register(
            "pharos_logs_entries_rejected",
            "Log entries the log store refused, by tenant and reason",
            self.log_entries_rejected.clone(),
        );
        registry.register(
            "pharos_logs_blocks_flushed",
            "Log blocks written from the processors' pending entries",
            self.log_blocks.clone(),
        );
        registry.register(
            "pharos_logs_block_bytes_flushed",
            "Bytes of log blocks written from the processors' pending entries",
            self.log_block_bytes.clone(),
        );
    }
}

/// Pharos's own metrics about metrics blocks: cuts from the head, compaction, what is stored.
#[derive(Clone, Default)]
pub(crate) struct MetricsBlockMetrics {
    cut_blocks: Counter,
    cut_samples: Counter,
    cut_bytes: Counter,
    series_removed: Counter,
    parts_removed: Counter,
    expired: Counter,
    merged: Counter,
    compacted_bytes: Counter,
    blocks: Gauge,
    block_bytes: Gauge,
    block_samples: Gauge,
    parts: Gauge,
}

impl MetricsBlockMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "pharos_metrics_blocks_cut",
            "Metrics blocks written from the heads",
            self.cut_blocks.clone(),
        );
        r.register(
            "pharos_metrics_block_samples_cut",
            "Samples moved from the heads into blocks",
            self.cut_samples.clone(),
        );
        r.register(
            "pharos_metrics_block_bytes_cut",
            "Bytes of metrics blocks written from the heads",
            self.cut_bytes.clone(),
        );
        r.register(
            "pharos_metrics_head_series_removed",
            "Series dropped from the heads once all their samples were in blocks",
            self.series_removed.clone(),
        );
        r.register(
            "pharos_metrics_parts_removed",
            "Metrics part files deleted once all their samples were in blocks",
            self.parts_removed.clone(),
        );
        r.register(
            "pharos_metrics_blocks_expired",
            "Metrics blocks deleted for being past the retention",
            self.expired.clone(),
        );
        r.register(
            "pharos_metrics_blocks_merged",
            "Metrics blocks merged into larger ones",
            self.merged.clone(),
        );
        r.register(
            "pharos_metrics_block_bytes_compacted",
            "Bytes of metrics blocks written by merging",
            self.compacted_bytes.clone(),
        );
        r.register(
            "pharos_metrics_blocks",
            "Metrics blocks on the object store, all tenants",
            self.blocks.clone(),
        );
        r.register(
            "pharos_metrics_block_bytes",
            "Bytes of the metrics blocks on the object store",
            self.block_bytes.clone(),
        );
        r.register(
            "pharos_metrics_block_samples",
            "Samples in the metrics blocks on the object store",
            self.block_samples.clone(),
        );
        r.register("pharos_metrics_parts", "Metrics part files on disk", self.parts.clone());
    }

    pub(crate) fn cut(&self, r: &pharos_metrics::store::CutReport) {
        self.cut_blocks.inc_by(r.blocks as u64);
        self.cut_samples.inc_by(r.samples);
        self.cut_bytes.inc_by(r.bytes);
        self.series_removed.inc_by(r.series_removed as u64);
        self.parts_removed.inc_by(r.parts_removed as u64);
    }

    pub(crate) fn compacted(&self, r: &pharos_metrics::store::CompactReport) {
        self.expired.inc_by(r.expired as u64);
        self.merged.inc_by(r.merged as u64);
        self.compacted_bytes.inc_by(r.bytes);
    }

    pub(crate) fn observe(&self, store: &pharos_metrics::store::MetricsStore) {
        let (mut n, mut bytes, mut samples) = (0i64, 0i64, 0i64);
        for tenant in store.tenants() {
            for b in store.blocks(&tenant) {
                n += 1;
                bytes += b.size_bytes as i64;
                samples += b.samples as i64;
            }
        }
        self.blocks.set(n);
        self.block_bytes.set(bytes);
        self.block_samples.set(samples);
        self.parts.set(store.parts().len() as i64);
    }
}

pub(crate) struct StoresSink {
    pub(crate) counting: CountingSink,
    /// The tenants' processing pipelines (this partition's instances).
    pub(crate) pipelines: Pipelines,
    pub(crate) metrics: PartitionWriter,
    pub(crate) parts: Arc<PartStore>,
    pub(crate) traces: pharos_traces::store::PartitionWriter,
    pub(crate) logs: pharos_logs::store::PartitionWriter,
    pub(crate) telemetry: MetricsStoreMetrics,
}

fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl StoresSink {
    /// Runs one OTLP record through its tenant's pipeline and stores what comes out.
    fn process(&mut self, offset: Offset, envelope: &Envelope) {
        use opentelemetry_proto::tonic::collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        };
        use prost::Message;
        let payload = envelope.payload.as_ref();
        let data = match envelope.signal {
            Signal::Traces => ExportTraceServiceRequest::decode(payload).map(Data::Traces),
            Signal::Logs => ExportLogsServiceRequest::decode(payload).map(Data::Logs),
            Signal::Metrics => ExportMetricsServiceRequest::decode(payload).map(Data::Metrics),
        };
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(offset, error = %e, "undecodable record, skipping it");
                return;
            }
        };
        let batch = Batch::new(envelope.tenant.clone(), offset, data);
        let out = self.pipelines.process(batch, &envelope.metadata, now_unix_nanos());
        self.store_batches(out);
    }

    /// Hands pipeline output to the stores.
    fn store_batches(&mut self, outputs: Vec<Output>) {
        for Output { batch, from_records } in outputs {
            let Batch { tenant, offset, data, .. } = batch;
            match data {
                Data::Traces(request) => {
                    let stats = self.traces.write_request(offset, &tenant, request);
                    self.record_spans(&tenant, stats);
                }
                Data::Logs(request) => {
                    let stats = self.logs.write_request(offset, &tenant, request);
                    self.record_logs(&tenant, stats);
                }
                Data::Metrics(request) => {
                    let stats = self.metrics.write_request(offset, &tenant, &request, from_records);
                    self.record(&tenant, &stats);
                }
            }
        }
    }

    /// While a `memory_limiter` pushes back, takes no new records (they wait in the queue) and
    /// lets the processors release what is due; gives up waiting after a while, so that a
    /// limit the pipeline cannot get under does not stop processing for good.
    async fn wait_for_memory(&mut self) {
        let started = std::time::Instant::now();
        let mut warned = false;
        while self.pipelines.pressure() && started.elapsed() < std::time::Duration::from_secs(30) {
            if !warned {
                tracing::warn!("processing paused: memory above the memory_limiter's limit");
                warned = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let released = self.pipelines.tick(now_unix_nanos(), false);
            self.store_batches(released);
        }
    }

    fn record_spans(&self, tenant: &Tenant, stats: pharos_traces::store::WriteStats) {
        let labels = || vec![("tenant", tenant.to_string())];
        if stats.spans > 0 {
            self.telemetry.spans.get_or_create(&labels()).inc_by(stats.spans);
        }
        for (reason, n) in stats.rejected {
            let mut l = labels();
            l.push(("reason", reason.to_string()));
            self.telemetry.spans_rejected.get_or_create(&l).inc_by(n);
        }
    }

    fn record_logs(&self, tenant: &Tenant, stats: pharos_logs::store::WriteStats) {
        let labels = || vec![("tenant", tenant.to_string())];
        if stats.entries > 0 {
            self.telemetry.log_entries.get_or_create(&labels()).inc_by(stats.entries);
        }
        for (reason, n) in stats.rejected {
            let mut l = labels();
            l.push(("reason", reason.to_string()));
            self.telemetry.log_entries_rejected.get_or_create(&l).inc_by(n);
        }
    }

    fn record(&self, tenant: &Tenant, stats: &pharos_metrics::store::WriteStats) {
        if stats.accepted > 0 {
            self.telemetry
                .samples
                .get_or_create(&vec![("tenant", tenant.to_string())])
                .inc_by(stats.accepted);
        }
        for (reason, n) in &stats.rejected {
            self.telemetry
                .rejected
                .get_or_create(&vec![("tenant", tenant.to_string()), ("reason", (*reason).to_string())])
                .inc_by(*n);
        }
    }
}

#[async_trait::async_trait]
impl Sink for StoresSink {
    fn resume_from(&self) -> Offset {
        // The metrics writer needs every record after the committed offset (it skips those its
        // parts cover); the counting stage skips what it counted itself.
        0
    }

    async fn write(&mut self, envelopes: Vec<(Offset, Envelope)>) -> Result<(), PipelineError> {
        self.wait_for_memory().await;
        for (offset, envelope) in &envelopes {
            if self.pipelines.applies(&envelope.tenant, envelope.signal)
                && envelope.format == PayloadFormat::Otlp
            {
                self.process(*offset, envelope);
                continue;
            }
            let stats = self.metrics.write(*offset, envelope);
            self.record(&envelope.tenant, &stats);
            let spans = self.traces.write(*offset, envelope);
            self.record_spans(&envelope.tenant, spans);
            let logs = self.logs.write(*offset, envelope);
            self.record_logs(&envelope.tenant, logs);
        }
        self.counting.write(envelopes).await
    }

    async fn flush(&mut self, next: Offset, closing: bool) -> Result<Offset, PipelineError> {
        let counted = self.counting.flush(next, closing).await?;
        let released = self.pipelines.tick(now_unix_nanos(), closing);
        self.store_batches(released);
        // Records whose data a processor still holds (tail sampling waits, batches) are read
        // again after a crash: nothing at or above the oldest of them is reported durable.
        let held = self.pipelines.held_offset().unwrap_or(next).min(next);
        if let Some(mut flush) = self.metrics.take_flush(held, closing) {
            let parts = self.parts.clone();
            let flush = tokio::task::spawn_blocking(move || parts.write(&mut flush).map(|()| flush))
                .await
                .map_err(|e| PipelineError::Store(e.into()))?
                .map_err(|e| PipelineError::Store(e.into()))?;
            self.telemetry.parts.inc_by(flush.parts.len() as u64);
            self.metrics.flushed(&flush);
        }
        if self.traces.flush_due(closing) {
            // An object store can fail for a while (a remote one more so): the spans stay
            // pending, the offset stays behind them, and the next flush tries again.
            match self.traces.flush().await {
                Ok(flushed) => {
                    self.telemetry.trace_blocks.inc_by(flushed.blocks as u64);
                    self.telemetry.trace_block_bytes.inc_by(flushed.bytes);
                }
                Err(e) if closing => return Err(PipelineError::Store(e.into())),
                Err(e) => {
                    tracing::error!(error = %e, "writing a trace block failed; retrying at the next flush")
                }
            }
        }
        if self.logs.flush_due(closing) {
            match self.logs.flush().await {
                Ok(flushed) => {
                    self.telemetry.log_blocks.inc_by(flushed.blocks as u64);
                    self.telemetry.log_block_bytes.inc_by(flushed.bytes);
                }
                Err(e) if closing => return Err(PipelineError::Store(e.into())),
                Err(e) => {
                    tracing::error!(error = %e, "writing a log block failed; retrying at the next flush")
                }
            }
        }
        Ok(counted
            .min(held)
            .min(self.metrics.durable_below())
            .min(self.traces.durable_below(next))
            .min(self.logs.durable_below(next)))
    }
}

/// Remote write's check of samples against the metrics heads of this process, so that out of
/// order, too old and duplicate samples are answered with 400 as Prometheus answers them.
pub(crate) struct HeadSampleCheck(pub(crate) Arc<pharos_metrics::store::Heads>);

impl pharos_ingest::remote_write::SampleCheck for HeadSampleCheck {
    fn refused(
        &self,
        tenant: &pharos_core::Tenant,
        series: &[pharos_ingest::remote_write::CheckedSeries<'_>],
    ) -> Vec<pharos_ingest::remote_write::RefusedSample> {
        let to_sample = |s: &pharos_core::prompb::v1::Sample| pharos_metrics::model::Sample {
            t: s.timestamp,
            v: s.value,
        };
        self.0
            .refused_many(tenant, series.iter().map(|c| (c.hash, c.labels, c.samples.iter().map(to_sample))))
            .into_iter()
            .map(|(n, index, e)| pharos_ingest::remote_write::RefusedSample {
                series: n,
                index,
                reason: e.reason(),
                message: format!("{e} (series {{{}}})", series_text(series[n].labels)),
            })
            .collect()
    }
}

/// `name="value", ...` for messages.
fn series_text(labels: &[(&str, &str)]) -> String {
    labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect::<Vec<_>>().join(", ")
}
