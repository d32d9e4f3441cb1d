//! Pharos's own telemetry: logs through `tracing`, metrics on `/metrics`.

use std::sync::Arc;

use pharos_queue::Queue;
use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub(crate) fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

type PartitionLabels = Vec<(&'static str, String)>;

/// The metrics registry plus the gauges read from components when scraped.
pub(crate) struct SelfMetrics {
    registry: Registry,
    queue: Arc<dyn Queue>,
    depth: Family<PartitionLabels, Gauge>,
    disk: Gauge,
}

impl SelfMetrics {
    pub(crate) fn new(mut registry: Registry, queue: Arc<dyn Queue>) -> SelfMetrics {
        let depth = Family::<PartitionLabels, Gauge>::default();
        let disk = Gauge::default();
        registry.register(
            "pharos_queue_depth_records",
            "Records appended to a queue partition but not yet committed by the processors",
            depth.clone(),
        );
        registry.register("pharos_queue_disk_bytes", "Bytes of queue segments on disk", disk.clone());
        SelfMetrics { registry, queue, depth, disk }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut bytes = 0;
        for s in self.queue.stats() {
            self.depth.get_or_create(&vec![("partition", s.partition.to_string())]).set(s.depth() as i64);
            bytes += s.bytes;
        }
        self.disk.set(bytes as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
