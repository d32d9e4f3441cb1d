//! The shape of the generated telemetry (`--services`, `--span-depth`, ...), and the vocabulary
//! the content is drawn from.

use crate::rng::Rng;
use clap::ValueEnum;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Serialize;

/// How log bodies (and Loki lines) are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `order placed: method=GET route=/api/v1/cart ...`: a message with key=value details.
    Text,
    /// One JSON object per line: `{"level":"info","msg":"order placed",...}`.
    Json,
    /// logfmt: `level=info msg="order placed" method=GET ...`.
    Logfmt,
}

/// What the generators make; every field has a command-line flag.
#[derive(Clone, Debug, Serialize)]
pub struct Shape {
    /// Distinct services (OTLP resources, Loki `service_name` streams).
    pub services: usize,
    /// Levels of spans in a trace (1 = root spans only).
    pub span_depth: usize,
    /// Children of each span above the last level.
    pub span_fanout: usize,
    /// Extra attributes `bench.attr.<k>` on every span and log record (besides the semantic
    /// convention attributes every item has).
    pub attributes: usize,
    /// Distinct values each extra attribute takes.
    pub attribute_cardinality: u64,
    /// Log bodies are padded to at least this many bytes (0 = their natural size).
    pub log_body_size: usize,
    pub log_format: LogFormat,
    /// Active series (metrics).
    pub series: u64,
    /// Fraction of the series replaced by new series every `churn_every_s` seconds.
    pub churn: f64,
    pub churn_every_s: f64,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            services: 5,
            span_depth: 2,
            span_fanout: 7,
            attributes: 0,
            attribute_cardinality: 100,
            log_body_size: 0,
            log_format: LogFormat::Text,
            series: 100_000,
            churn: 0.0,
            churn_every_s: 60.0,
        }
    }
}

impl Shape {
    /// Spans in a whole trace: 1 + f + f^2 + ... over `span_depth` levels.
    pub fn spans_per_trace(&self) -> usize {
        let mut total = 0usize;
        let mut level = 1usize;
        for _ in 0..self.span_depth.max(1) {
            total = total.saturating_add(level);
            level = level.saturating_mul(self.span_fanout);
        }
        total
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.services > 0, "--services must be positive");
        anyhow::ensure!(self.span_depth > 0, "--span-depth must be positive");
        anyhow::ensure!(
            self.spans_per_trace() <= 100_000,
            "--span-depth {} with --span-fanout {} makes {} spans per trace (at most 100000)",
            self.span_depth,
            self.span_fanout,
            self.spans_per_trace()
        );
        anyhow::ensure!(self.attribute_cardinality > 0, "--attribute-cardinality must be positive");
        anyhow::ensure!(self.series > 0, "--series must be positive");
        anyhow::ensure!((0.0..=1.0).contains(&self.churn), "--churn is a fraction between 0 and 1");
        anyhow::ensure!(self.churn_every_s > 0.0, "--churn-every must be positive");
        Ok(())
    }

    /// The name of service `i`: a shop's services, then numbered copies of them.
    pub fn service_name(&self, i: usize) -> String {
        let base = SERVICES[i % SERVICES.len()];
        match i / SERVICES.len() {
            0 => base.to_string(),
            n => format!("{base}-{n}"),
        }
    }

    /// The extra attributes of one item.
    pub(crate) fn extra_attributes(&self, rng: &mut Rng) -> Vec<KeyValue> {
        (0..self.attributes)
            .map(|k| s(&format!("bench.attr.{k}"), format!("v{}", rng.below(self.attribute_cardinality))))
            .collect()
    }

    /// Series `slot` (of `series`) after the churn of `epoch` periods: the slot's series id.
    /// Period `e` (from 1) replaces the `churn * series` slots that follow the previous period's
    /// in a round-robin over the slots, so every slot is replaced in turn and the number of
    /// active series stays `series`.
    pub fn series_id(&self, slot: u64, epoch: u64) -> u64 {
        let per = (self.churn * self.series as f64).round() as u64;
        let replaced = epoch.saturating_mul(per);
        let generation = if replaced > slot { (replaced - slot).div_ceil(self.series) } else { 0 };
        slot + self.series * generation
    }
}

pub(crate) const SERVICES: &[&str] =
    &["checkout", "cart", "payment", "inventory", "frontend", "shipping", "auth", "search"];
pub(crate) const ROUTES: &[&str] = &[
    "/api/v1/orders/{id}",
    "/api/v1/cart",
    "/api/v1/products/{id}",
    "/api/v1/users/{id}/profile",
    "/api/v1/search",
    "/api/v1/payments",
    "/healthz",
];
pub(crate) const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
pub(crate) const DB_OPS: &[&str] = &[
    "SELECT orders WHERE id = ?",
    "SELECT products WHERE sku IN (?)",
    "UPDATE carts SET items = ? WHERE id = ?",
    "INSERT INTO payments (id, amount, currency) VALUES (?, ?, ?)",
];

pub(crate) fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
pub(crate) fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
pub(crate) fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}
pub(crate) fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}

/// The resource of service `name`: semantic-convention attributes of a Kubernetes pod.
pub(crate) fn resource(rng: &mut Rng, name: &str) -> Resource {
    let pod = rng.next_u64();
    Resource {
        attributes: vec![
            s("service.name", name),
            s("service.namespace", "shop"),
            s("service.version", format!("1.{}.{}", rng.below(20), rng.below(10))),
            s("service.instance.id", format!("{pod:016x}")),
            s("deployment.environment.name", "production"),
            s("host.name", format!("node-{:02}.eu-west-1.compute.internal", rng.below(40))),
            s("host.arch", "amd64"),
            s("os.type", "linux"),
            s("k8s.namespace.name", "shop"),
            s("k8s.pod.name", format!("{name}-{:010x}-{:05x}", pod >> 24, pod & 0xfffff)),
            s("k8s.deployment.name", name),
            s("cloud.provider", "aws"),
            s("cloud.region", "eu-west-1"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", "rust"),
            s("telemetry.sdk.version", "0.31.0"),
        ],
        ..Default::default()
    }
}

pub(crate) fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope { name: name.to_string(), version: "0.31.0".to_string(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_per_trace_counts_every_level() {
        let shape = |d, f| Shape { span_depth: d, span_fanout: f, ..Shape::default() };
        assert_eq!(shape(1, 5).spans_per_trace(), 1);
        assert_eq!(shape(2, 7).spans_per_trace(), 8);
        assert_eq!(shape(3, 3).spans_per_trace(), 13);
        assert_eq!(shape(4, 0).spans_per_trace(), 1);
    }

    #[test]
    fn churn_replaces_the_asked_fraction_each_period_and_keeps_the_active_count() {
        let shape = Shape { series: 1000, churn: 0.1, ..Shape::default() };
        let ids =
            |epoch| (0..1000).map(|s| shape.series_id(s, epoch)).collect::<std::collections::BTreeSet<_>>();
        let e0 = ids(0);
        assert_eq!(e0, (0..1000).collect());
        let mut prev = e0;
        for epoch in 1..25 {
            let now = ids(epoch);
            assert_eq!(now.len(), 1000, "active series stay at --series");
            assert_eq!(now.difference(&prev).count(), 100, "epoch {epoch} replaces 10% of the series");
            prev = now;
        }
        // No churn: the same series forever.
        let still = Shape { series: 1000, churn: 0.0, ..Shape::default() };
        assert!((0..1000).all(|s| still.series_id(s, 7) == s));
    }
}
