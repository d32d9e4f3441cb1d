//! Processors: the steps of a tenant's pipeline, in the style of the OpenTelemetry Collector's
//! processors. Each works on decoded OTLP requests (the model users know from the Collector and
//! OTTL) and is built from its YAML configuration.
//!
//! A processor takes one [`Batch`] at a time and pushes zero or more batches out. Most change a
//! batch in place and push it on (or push nothing when every item went). Stateful ones (tail
//! sampling, batching, span metrics) hold data back and release it from [`Processor::tick`];
//! while they hold records, [`Processor::held_offset`] names the lowest queue offset they hold,
//! and the queue is not committed past it (invariant 2: after a crash those records are read
//! again).

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod memory_limiter;
pub mod otlp;
pub mod probabilistic;
pub mod redaction;
pub mod routing;
pub mod span_metrics;
pub mod tail_sampling;
pub mod transform;

use std::fmt;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use pharos_core::{Signal, Tenant};
use pharos_queue::Offset;

/// Decoded telemetry of one signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

impl Data {
    pub fn signal(&self) -> Signal {
        match self {
            Data::Traces(_) => Signal::Traces,
            Data::Logs(_) => Signal::Logs,
            Data::Metrics(_) => Signal::Metrics,
        }
    }

    /// Spans, log records or metric data points.
    pub fn items(&self) -> u64 {
        match self {
            Data::Traces(r) => otlp::span_count(r),
            Data::Logs(r) => otlp::log_count(r),
            Data::Metrics(r) => otlp::point_count(r),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items() == 0
    }
}

/// What flows through a pipeline: one tenant's decoded telemetry and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub tenant: Tenant,
    /// The queue offset of the record the data came from (the lowest one, once merged).
    /// Data a processor made itself (span metrics) carries the offset of the newest record it
    /// had seen.
    pub offset: Offset,
    pub data: Data,
    /// Set by `routing`: the rest of the current pipeline is skipped and the batch runs through
    /// this named pipeline instead.
    pub route: Option<String>,
}

impl Batch {
    pub fn new(tenant: Tenant, offset: Offset, data: Data) -> Self {
        Batch { tenant, offset, data, route: None }
    }
}

/// What a processor is given besides the batch: the time and somewhere to count.
#[derive(Debug, Default)]
pub struct Context {
    /// Now, in nanoseconds since the Unix epoch (injected: tests set it).
    pub now_unix_nanos: u64,
    /// Items dropped, by reason (the pipeline adds them to `pharos_pipeline_items_dropped_total`).
    pub dropped: Vec<(&'static str, u64)>,
    /// Other things a processor counts, by name (`redacted`, `evicted`, ...).
    pub counted: Vec<(&'static str, u64)>,
    /// The metadata of the request the batch came from (the request headers Pharos keeps for
    /// `from_context: metadata.<name>`). Empty for data a processor releases later (after
    /// `batch` or `tail_sampling`): put processors that read it before those.
    pub metadata: pharos_core::Metadata,
}

impl Context {
    pub fn at(now_unix_nanos: u64) -> Self {
        Context { now_unix_nanos, ..Context::default() }
    }

    pub fn drop_items(&mut self, reason: &'static str, n: u64) {
        if n > 0 {
            add(&mut self.dropped, reason, n);
        }
    }

    pub fn count(&mut self, what: &'static str, n: u64) {
        if n > 0 {
            add(&mut self.counted, what, n);
        }
    }

    /// The total dropped for `reason` (tests).
    pub fn dropped_for(&self, reason: &str) -> u64 {
        self.dropped.iter().filter(|(r, _)| *r == reason).map(|(_, n)| n).sum()
    }

    /// The total counted for `what` (tests).
    pub fn counted_for(&self, what: &str) -> u64 {
        self.counted.iter().filter(|(r, _)| *r == what).map(|(_, n)| n).sum()
    }
}

fn add(list: &mut Vec<(&'static str, u64)>, key: &'static str, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, total)) => *total += n,
        None => list.push((key, n)),
    }
}

/// One step of a pipeline.
pub trait Processor: Send {
    /// Takes one batch and pushes what goes on to `out`: the batch itself (changed or not),
    /// nothing (every item dropped, or held back), or several batches.
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>);

    /// Called regularly with the time: releases what is due (tail-sampling decisions, full
    /// batches, span metrics). `closing` is set at shutdown: a processor releases what it can
    /// without changing its decisions (a tail sampler keeps undecided traces: their records
    /// stay uncommitted and are read again at the next start).
    fn tick(&mut self, _ctx: &mut Context, _closing: bool, _out: &mut Vec<Batch>) {}

    /// The lowest queue offset of the records whose data this processor still holds.
    fn held_offset(&self) -> Option<Offset> {
        None
    }

    /// Bytes of telemetry this processor holds (for `/metrics`): the encoded size.
    fn held_bytes(&self) -> u64 {
        0
    }

    /// Items (spans, log records, data points) this processor holds (for `/metrics`).
    fn held_items(&self) -> u64 {
        0
    }

    /// The request headers this processor reads (`from_context: metadata.<name>`): the
    /// receivers keep them with the data.
    fn metadata_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the pipeline should stop taking new data for now (`memory_limiter`): the
    /// processors keep ticking, and the queue holds what is not read yet.
    fn pressure(&self) -> bool {
        false
    }
}

/// A configuration problem, with the key path below the processor's own key
/// (`actions[2].pattern`); the pipeline prefixes `processors.<name>.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }

    /// The same error one level down: `field` then this error's path.
    pub fn under(mut self, field: &str) -> Self {
        self.path = join_path(field, &self.path);
        self
    }
}

pub(crate) fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (_, true) => parent.to_string(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserializes a processor's configuration from YAML, naming the key path of a wrong type or
/// an unknown key.
pub fn parse_config<T: serde::de::DeserializeOwned>(value: &serde_yaml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

/// Compiles a regular expression from configuration (the `regex` crate: linear time, no
/// backtracking), naming the key on error.
pub fn compile_regex(path: &str, pattern: &str) -> Result<regex::Regex, ConfigError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ConfigError::new(path, format!("invalid regex {pattern:?}: {e}")))
}

/// Durations in processor configuration: `30s`, `100ms`, `5m`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            de::Error::custom(format!("{text:?} is not a duration such as 500ms, 30s or 5m: {e}"))
        })
    }
}

/// The processor kinds, by the name that starts their key (`attributes/env` is an
/// `attributes` processor named `env`, as in the Collector).
pub const KINDS: &[&str] = &[
    "attributes",
    "batch",
    "filter",
    "memory_limiter",
    "probabilistic_sampler",
    "redaction",
    "resource",
    "routing",
    "service_graph",
    "span_metrics",
    "tail_sampling",
    "transform",
];

/// The kind of a processor key: `attributes/env` → `attributes`.
pub fn kind_of(key: &str) -> &str {
    key.split_once('/').map(|(kind, _)| kind).unwrap_or(key)
}

/// Builds one processor of `kind` for a pipeline of `signal` from its configuration.
pub fn build(
    kind: &str,
    config: &serde_yaml::Value,
    signal: Signal,
) -> Result<Box<dyn Processor>, ConfigError> {
    match kind {
        "attributes" => attributes::build(config, signal),
        "resource" => attributes::build_resource(config, signal),
        "batch" => batch::build(config, signal),
        "filter" => filter::build(config, signal),
        "memory_limiter" => memory_limiter::build(config, signal),
        "probabilistic_sampler" => probabilistic::build(config, signal),
        "redaction" => redaction::build(config, signal),
        "routing" => routing::build(config, signal),
        "span_metrics" => span_metrics::build(config, signal),
        "service_graph" => span_metrics::build_service_graph(config, signal),
        "tail_sampling" => tail_sampling::build(config, signal),
        "transform" => transform::build(config, signal),
        other => Err(ConfigError::new(
            "",
            format!("unknown processor kind {other:?} (known: {})", KINDS.join(", ")),
        )),
    }
}

/// The error for a processor used in a pipeline of a signal it does not apply to.
pub fn wrong_signal(kind: &str, signal: Signal, applies_to: &str) -> ConfigError {
    ConfigError::new(
        "",
        format!("the {kind} processor applies to {applies_to} pipelines, not {}", signal.as_str()),
    )
}
