use pharos_core::{LabelCap, Signal, Tenant};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// The receivers' self-telemetry (`pharos_ingest_*`). Tenant labels are capped.
#[derive(Clone)]
pub struct IngestMetrics {
    received: Family<Labels, Counter>,
    accepted: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    tenants: LabelCap,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            received: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            }),
            tenants: LabelCap::new(1000),
        }
    }
}

impl IngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_ingest_items_received",
            "Spans, data points and log records received, by signal and tenant",
            self.received.clone(),
        );
        registry.register(
            "pharos_ingest_items_accepted",
            "Items made durable in the queue and acknowledged, by signal and tenant",
            self.accepted.clone(),
        );
        registry.register(
            "pharos_ingest_items_rejected",
            "Items refused, by signal, tenant and reason",
            self.rejected.clone(),
        );
        registry.register(
            "pharos_ingest_requests",
            "Export requests, by signal, protocol and outcome",
            self.requests.clone(),
        );
        registry.register(
            "pharos_ingest_request_duration_seconds",
            "Time from a request's arrival to its answer, by signal and protocol",
            self.duration.clone(),
        );
    }

    fn labels(&self, signal: Signal, tenant: &Tenant) -> Labels {
        vec![("signal", signal.as_str().to_string()), ("tenant", self.tenants.value(tenant.as_str()))]
    }

    pub(crate) fn received(&self, signal: Signal, tenant: &Tenant, n: u64) {
        self.received.get_or_create(&self.labels(signal, tenant)).inc_by(n);
    }

    pub(crate) fn accepted(&self, signal: Signal, tenant: &Tenant, n: u64) {
        if n > 0 {
            self.accepted.get_or_create(&self.labels(signal, tenant)).inc_by(n);
        }
    }

    pub(crate) fn rejected(&self, signal: Signal, tenant: &Tenant, reason: &'static str, n: u64) {
        if n > 0 {
            let mut labels = self.labels(signal, tenant);
            labels.push(("reason", reason.to_string()));
            self.rejected.get_or_create(&labels).inc_by(n);
        }
    }

    /// Records one finished request.
    pub fn request(&self, signal: Signal, protocol: &'static str, outcome: &'static str, seconds: f64) {
        let labels = vec![
            ("signal", signal.as_str().to_string()),
            ("protocol", protocol.to_string()),
            ("outcome", outcome.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&vec![("signal", signal.as_str().to_string()), ("protocol", protocol.to_string())])
            .observe(seconds);
    }
}
