//! The processors' sink: every record is counted, and metrics records are written into the
//! metrics heads and made durable as parts. The offset committed to the queue is the smaller of
//! what both have made durable.

use std::sync::Arc;

use pharos_core::{Envelope, Tenant};
use pharos_metrics::store::{PartStore, PartitionWriter};
use pharos_pipeline::{CountingSink, PipelineError, Sink};
use pharos_queue::Offset;
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Pharos's own metrics about metrics ingestion into the heads.
#[derive(Clone, Default)]
pub(crate) struct MetricsStoreMetrics {
    samples: Family<Vec<(&'static str, String)>, Counter>,
    rejected: Family<Vec<(&'static str, String)>, Counter>,
    parts: Counter,
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
    }
}

pub(crate) struct StoresSink {
    pub(crate) counting: CountingSink,
    pub(crate) metrics: PartitionWriter,
    pub(crate) parts: Arc<PartStore>,
    pub(crate) telemetry: MetricsStoreMetrics,
}

impl StoresSink {
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
        for (offset, envelope) in &envelopes {
            let stats = self.metrics.write(*offset, envelope);
            self.record(&envelope.tenant, &stats);
        }
        self.counting.write(envelopes).await
    }

    async fn flush(&mut self, next: Offset, closing: bool) -> Result<Offset, PipelineError> {
        let counted = self.counting.flush(next, closing).await?;
        if let Some(flush) = self.metrics.take_flush(next, closing) {
            let parts = self.parts.clone();
            let flush = tokio::task::spawn_blocking(move || parts.write(&flush).map(|()| flush))
                .await
                .map_err(|e| PipelineError::Store(e.into()))?
                .map_err(|e| PipelineError::Store(e.into()))?;
            self.telemetry.parts.inc_by(flush.parts.len() as u64);
            self.metrics.flushed(&flush);
        }
        Ok(counted.min(self.metrics.durable_below()))
    }
}
