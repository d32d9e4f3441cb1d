use pharos_core::{LabelCap, Signal, Tenant};
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// The processors' self-telemetry (`pharos_pipeline_*`).
#[derive(Clone)]
pub struct PipelineMetrics {
    items: Family<Labels, Counter>,
    records: Counter,
    bad_records: Counter,
    tenants: LabelCap,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            items: Family::default(),
            records: Counter::default(),
            bad_records: Counter::default(),
            tenants: LabelCap::new(1000),
        }
    }
}

impl PipelineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_pipeline_items",
            "Items processed from the queue, by signal and tenant (the counting stage keeps this \
             durably, so it survives restarts)",
            self.items.clone(),
        );
        registry.register("pharos_pipeline_records", "Queue records processed", self.records.clone());
        registry.register(
            "pharos_pipeline_bad_records",
            "Queue records that could not be decoded and were skipped",
            self.bad_records.clone(),
        );
    }

    pub(crate) fn items(&self, signal: Signal, tenant: &Tenant, n: u64) {
        let labels =
            vec![("signal", signal.as_str().to_string()), ("tenant", self.tenants.value(tenant.as_str()))];
        self.items.get_or_create(&labels).inc_by(n);
    }

    pub(crate) fn records(&self, n: u64) {
        self.records.inc_by(n);
    }

    pub(crate) fn bad_record(&self) {
        self.bad_records.inc();
    }
}
