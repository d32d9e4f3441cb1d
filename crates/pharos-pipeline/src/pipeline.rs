//! Pipelines: named, ordered processors per signal, chosen per tenant, declared in the YAML
//! configuration as the OpenTelemetry Collector declares `service.pipelines`:
//!
//! ```yaml
//! processors:
//!   redaction: {}
//!   tail_sampling: { decision_wait: 10s, policies: [ ... ] }
//! pipelines:
//!   traces:                  # the default traces pipeline: every tenant not named elsewhere
//!     processors: [redaction, tail_sampling]
//!   traces/acme:             # tenant acme's traces go through this one instead
//!     tenants: [acme]
//!     processors: [redaction]
//!   traces/pci:              # no tenants: reached only through a `routing` processor
//!     processors: [redaction]
//! ```
//!
//! A pipeline's name starts with its signal (`traces`, `metrics`, `logs`), optionally followed
//! by `/name`. [`PipelinesConfig::validate`] builds every processor once and returns every
//! problem with its key path; [`Pipelines::build`] makes a fresh set of processors for one
//! queue partition (processors keep state, so each partition's runner has its own).

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use pharos_core::{Signal, Tenant};
use pharos_queue::Offset;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::{Deserialize, Serialize};

use crate::processor::{self, Batch, ConfigError, Context, Data, Processor, join_path};

/// The `processors` and `pipelines` sections of the configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelinesConfig {
    /// Processor definitions by key (`kind` or `kind/name`), each with its own configuration.
    pub processors: BTreeMap<String, serde_yaml::Value>,
    /// Pipelines by name (`signal` or `signal/name`).
    pub pipelines: BTreeMap<String, PipelineSpec>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSpec {
    /// The tenants whose data this pipeline processes. Empty on the default pipeline (named
    /// just after its signal) and on pipelines reached only through routing.
    pub tenants: Vec<String>,
    /// Processor keys, in order.
    pub processors: Vec<String>,
}

/// The signal a pipeline name starts with.
fn signal_of(name: &str) -> Option<Signal> {
    let prefix = name.split_once('/').map(|(s, _)| s).unwrap_or(name);
    Signal::ALL.into_iter().find(|s| s.as_str() == prefix)
}

/// How many routing hops a batch may take before it is dropped (a routing loop).
const MAX_ROUTES: usize = 4;

impl PipelinesConfig {
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// Every problem in the configuration, each with its key path. Builds each processor once
    /// (compiling its regexes) and drops it.
    pub fn validate(&self) -> Vec<ConfigError> {
        match Pipelines::build(self) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        }
    }
}

struct Step {
    key: String,
    processor: Box<dyn Processor>,
}

struct Pipeline {
    name: String,
    signal: Signal,
    steps: Vec<Step>,
}

/// The pipelines of one queue partition, ready to run.
pub struct Pipelines {
    pipelines: Vec<Pipeline>,
    /// Default pipeline index per signal.
    defaults: HashMap<Signal, usize>,
    /// (tenant, signal) → pipeline index.
    by_tenant: HashMap<(String, Signal), usize>,
    by_name: HashMap<String, usize>,
    telemetry: Option<ProcessorMetrics>,
    partition: Option<u32>,
}

/// The data point attribute that names the queue partition whose processors made a metric.
pub const PARTITION_ATTRIBUTE: &str = "pharos.partition";

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines").field("names", &self.by_name.keys().collect::<Vec<_>>()).finish()
    }
}

impl Pipelines {
    /// Builds every pipeline with fresh processors; on error, every problem found, each with
    /// its key path.
    pub fn build(config: &PipelinesConfig) -> Result<Pipelines, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut pipelines = Vec::new();
        let mut defaults = HashMap::new();
        let mut by_tenant = HashMap::new();
        let mut by_name = HashMap::new();
        for key in config.processors.keys() {
            let kind = processor::kind_of(key);
            if !processor::KINDS.contains(&kind) {
                errors.push(ConfigError::new(
                    format!("processors.{key}"),
                    format!("unknown processor kind {kind:?} (known: {})", processor::KINDS.join(", ")),
                ));
            }
        }
        for (name, spec) in &config.pipelines {
            let path = format!("pipelines.{name}");
            let Some(signal) = signal_of(name) else {
                errors.push(ConfigError::new(
                    &path,
                    "a pipeline name starts with its signal: traces, metrics or logs (e.g. `traces/acme`)",
                ));
                continue;
            };
            let index = pipelines.len();
            let is_default = !name.contains('/');
            if is_default {
                if !spec.tenants.is_empty() {
                    errors.push(ConfigError::new(
                        format!("{path}.tenants"),
                        format!("`{name}` is the default pipeline for every tenant; name tenant pipelines `{name}/<name>`"),
                    ));
                }
                defaults.insert(signal, index);
            }
            for (i, tenant) in spec.tenants.iter().enumerate() {
                let tpath = format!("{path}.tenants[{i}]");
                if let Err(e) = Tenant::parse(tenant) {
                    errors.push(ConfigError::new(&tpath, format!("invalid tenant {tenant:?}: {e}")));
                    continue;
                }
                if let Some(other) = by_tenant.insert((tenant.clone(), signal), index) {
                    let other: &Pipeline = &pipelines[other];
                    errors.push(ConfigError::new(
                        &tpath,
                        format!("tenant {tenant:?} is already in pipeline `{}`", other.name),
                    ));
                }
            }
            let mut steps = Vec::new();
            for (i, key) in spec.processors.iter().enumerate() {
                let ppath = format!("{path}.processors[{i}]");
                let Some(value) = config.processors.get(key) else {
                    errors.push(ConfigError::new(
                        &ppath,
                        format!("processor `{key}` is not defined under `processors`"),
                    ));
                    continue;
                };
                let kind = processor::kind_of(key);
                if !processor::KINDS.contains(&kind) {
                    continue; // reported above
                }
                match processor::build(kind, value, signal) {
                    Ok(processor) => steps.push(Step { key: key.clone(), processor }),
                    Err(e) => {
                        let message = if e.path.is_empty() {
                            format!("{} (in pipeline `{name}`)", e.message)
                        } else {
                            e.message.clone()
                        };
                        errors.push(ConfigError::new(
                            join_path(&format!("processors.{key}"), &e.path),
                            message,
                        ));
                    }
                }
            }
            by_name.insert(name.clone(), index);
            pipelines.push(Pipeline { name: name.clone(), signal, steps });
        }
        // A processor used in several pipelines reports its problem once.
        let mut seen = std::collections::HashSet::new();
        errors.retain(|e| seen.insert((e.path.clone(), e.message.clone())));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Pipelines { pipelines, defaults, by_tenant, by_name, telemetry: None, partition: None })
    }

    /// Counts items in, out and dropped per processor into these metrics.
    pub fn with_telemetry(mut self, telemetry: ProcessorMetrics) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The queue partition these pipelines run for: metrics its processors make carry it.
    pub fn for_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Whether no pipeline is configured at all.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// The pipeline a tenant's data of `signal` goes through, if any.
    fn pipeline_for(&self, tenant: &Tenant, signal: Signal) -> Option<usize> {
        self.by_tenant
            .get(&(tenant.as_str().to_string(), signal))
            .or_else(|| self.defaults.get(&signal))
            .copied()
    }

    /// Whether data of `tenant` and `signal` goes through a pipeline.
    pub fn applies(&self, tenant: &Tenant, signal: Signal) -> bool {
        self.pipeline_for(tenant, signal).is_some()
    }

    /// Runs one batch through its tenant's pipeline; returns what comes out of it (possibly
    /// nothing, or batches of other signals such as span metrics).
    /// `metadata` is what the receiver kept of the request (see [`Pipelines::metadata_keys`]).
    pub fn process(
        &mut self,
        batch: Batch,
        metadata: &[(String, String)],
        now_unix_nanos: u64,
    ) -> Vec<Output> {
        let mut done = Vec::new();
        match self.pipeline_for(&batch.tenant, batch.data.signal()) {
            Some(p) => self.run(p, 0, vec![batch], &At { now: now_unix_nanos, metadata }, &mut done, 0),
            None => done.push(Output { batch, from_records: true }),
        }
        done
    }

    /// Lets every processor release what is due, and runs it through the rest of its pipeline.
    pub fn tick(&mut self, now_unix_nanos: u64, closing: bool) -> Vec<Output> {
        let mut done = Vec::new();
        for p in 0..self.pipelines.len() {
            for i in 0..self.pipelines[p].steps.len() {
                let mut ctx = Context::at(now_unix_nanos);
                let mut out = Vec::new();
                let started = Instant::now();
                self.pipelines[p].steps[i].processor.tick(&mut ctx, closing, &mut out);
                self.observe(p, i, 0, &out, &ctx, started);
                if !out.is_empty() {
                    self.run(p, i + 1, out, &At { now: now_unix_nanos, metadata: &[] }, &mut done, 0);
                }
            }
        }
        done
    }

    /// The lowest queue offset of records whose data a processor still holds.
    pub fn held_offset(&self) -> Option<Offset> {
        self.steps().filter_map(|s| s.processor.held_offset()).min()
    }

    /// Bytes of telemetry held by processors.
    pub fn held_bytes(&self) -> u64 {
        self.steps().map(|s| s.processor.held_bytes()).sum()
    }

    /// The request headers the processors read (`from_context: metadata.<name>`), which the
    /// receivers must keep with the data.
    pub fn metadata_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.steps().flat_map(|s| s.processor.metadata_keys()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Whether a `memory_limiter` asks to stop taking data for now.
    pub fn pressure(&self) -> bool {
        self.steps().any(|s| s.processor.pressure())
    }

    fn steps(&self) -> impl Iterator<Item = &Step> {
        self.pipelines.iter().flat_map(|p| &p.steps)
    }

    /// Runs `batches` through pipeline `p` from step `from`; what leaves the pipeline lands in
    /// `done`. A batch of another signal (made by a processor) leaves at once; a routed batch
    /// starts over in its pipeline.
    fn run(
        &mut self,
        p: usize,
        from: usize,
        mut batches: Vec<Batch>,
        at: &At<'_>,
        done: &mut Vec<Output>,
        hops: usize,
    ) {
        let signal = self.pipelines[p].signal;
        for i in from..self.pipelines[p].steps.len() {
            let mut next = Vec::new();
            for batch in batches {
                if batch.data.signal() != signal {
                    self.leave(batch, signal, done);
                    continue;
                }
                let items_in = batch.data.items();
                let mut ctx = Context::at(at.now);
                ctx.metadata.extend_from_slice(at.metadata);
                let mut out = Vec::new();
                let started = Instant::now();
                self.pipelines[p].steps[i].processor.process(batch, &mut ctx, &mut out);
                self.observe(p, i, items_in, &out, &ctx, started);
                for b in out {
                    if b.route.is_some() {
                        self.reroute(b, at, done, hops);
                    } else {
                        next.push(b);
                    }
                }
            }
            batches = next;
            if batches.is_empty() {
                return;
            }
        }
        for batch in batches {
            self.leave(batch, signal, done);
        }
    }

    /// A batch leaves its pipeline. Data of another signal was made by a processor (span
    /// metrics): each partition's processors make their own series, so they carry the
    /// partition as a label (`pharos_partition`) and never collide in the metrics store.
    fn leave(&self, mut batch: Batch, signal: Signal, done: &mut Vec<Output>) {
        let from_records = batch.data.signal() == signal;
        if let (false, Some(partition), Data::Metrics(request)) =
            (from_records, self.partition, &mut batch.data)
        {
            let value = processor::otlp::string_value(partition.to_string());
            processor::otlp::for_each_point_attributes_mut(request, |_, _, attrs| {
                processor::otlp::upsert(attrs, PARTITION_ATTRIBUTE, value.clone())
            });
        }
        done.push(Output { batch, from_records });
    }

    fn reroute(&mut self, mut batch: Batch, at: &At<'_>, done: &mut Vec<Output>, hops: usize) {
        let Some(name) = batch.route.take() else { return };
        match self.by_name.get(&name).copied() {
            Some(target) if hops < MAX_ROUTES && self.pipelines[target].signal == batch.data.signal() => {
                self.run(target, 0, vec![batch], at, done, hops + 1)
            }
            _ => {
                tracing::warn!(pipeline = %name, hops, "batch routed to an unknown pipeline or in a loop, dropping it");
                if let Some(t) = &self.telemetry {
                    t.dropped
                        .get_or_create(&vec![
                            ("pipeline", name),
                            ("processor", "routing".into()),
                            ("reason", "routing_loop".into()),
                        ])
                        .inc_by(batch.data.items());
                }
            }
        }
    }

    fn observe(&self, p: usize, i: usize, items_in: u64, out: &[Batch], ctx: &Context, started: Instant) {
        let Some(t) = &self.telemetry else { return };
        let pipeline = &self.pipelines[p];
        let labels =
            || vec![("pipeline", pipeline.name.clone()), ("processor", pipeline.steps[i].key.clone())];
        let signal = pipeline.signal;
        let items_out: u64 = out.iter().filter(|b| b.data.signal() == signal).map(|b| b.data.items()).sum();
        t.items_in.get_or_create(&labels()).inc_by(items_in);
        t.items_out.get_or_create(&labels()).inc_by(items_out);
        t.seconds.get_or_create(&labels()).inc_by(started.elapsed().as_secs_f64());
        for (reason, n) in &ctx.dropped {
            let mut l = labels();
            l.push(("reason", (*reason).to_string()));
            t.dropped.get_or_create(&l).inc_by(*n);
        }
        for (what, n) in &ctx.counted {
            let mut l = labels();
            l.push(("what", (*what).to_string()));
            t.counted.get_or_create(&l).inc_by(*n);
        }
        // Each partition has its own processors: the gauge is per partition.
        let step = &pipeline.steps[i].processor;
        let mut l = labels();
        l.push(("partition", self.partition.map_or_else(String::new, |p| p.to_string())));
        t.held_bytes.get_or_create(&l).set(step.held_bytes() as i64);
        t.held_items.get_or_create(&l).set(step.held_items() as i64);
    }
}

/// The time and request metadata a batch is processed with.
struct At<'a> {
    now: u64,
    metadata: &'a [(String, String)],
}

type Labels = Vec<(&'static str, String)>;

/// What leaves a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub batch: Batch,
    /// Whether the data came from queue records (rather than being made by a processor, such
    /// as span metrics from a traces pipeline): only such data is a replay after a crash.
    pub from_records: bool,
}

/// Pharos's own metrics about processors: items in, out and dropped (by reason), other counts,
/// time spent and bytes held, per pipeline and processor.
#[derive(Clone, Default)]
pub struct ProcessorMetrics {
    items_in: Family<Labels, Counter>,
    items_out: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    counted: Family<Labels, Counter>,
    seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    held_bytes: Family<Labels, Gauge>,
    held_items: Family<Labels, Gauge>,
}

impl ProcessorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_processor_items_in",
            "Items (spans, log records, data points) given to a processor",
            self.items_in.clone(),
        );
        registry.register(
            "pharos_processor_items_out",
            "Items a processor passed on (including ones it held and released later)",
            self.items_out.clone(),
        );
        registry.register(
            "pharos_processor_items_dropped",
            "Items a processor dropped, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "pharos_processor_events",
            "Other things processors count (values redacted, traces evicted, ...), by what",
            self.counted.clone(),
        );
        registry.register("pharos_processor_seconds", "Time spent in a processor", self.seconds.clone());
        registry.register(
            "pharos_processor_held_bytes",
            "Bytes of telemetry a processor holds (tail sampling, batching), by queue partition: the encoded size (decoded in memory it takes about twice that)",
            self.held_bytes.clone(),
        );
        registry.register(
            "pharos_processor_held_items",
            "Items (spans, log records, data points) a processor holds, by queue partition",
            self.held_items.clone(),
        );
    }

    /// The dropped count of one processor and reason (tests).
    pub fn dropped(&self, pipeline: &str, processor: &str, reason: &str) -> u64 {
        self.dropped
            .get_or_create(&vec![
                ("pipeline", pipeline.to_string()),
                ("processor", processor.to_string()),
                ("reason", reason.to_string()),
            ])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> PipelinesConfig {
        serde_yaml::from_str(yaml).expect("test yaml")
    }

    #[test]
    fn pipelines_unknown_processor_and_undefined_key_are_named_by_path() {
        let errors = config(
            "processors:\n  frobnicate: {}\npipelines:\n  traces:\n    processors: [nothere]\n  spans/x:\n    processors: []\n",
        )
        .validate();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"processors.frobnicate"), "{errors:?}");
        assert!(paths.contains(&"pipelines.traces.processors[0]"), "{errors:?}");
        assert!(paths.contains(&"pipelines.spans/x"), "{errors:?}");
    }

    #[test]
    fn pipelines_tenant_in_two_pipelines_is_refused() {
        let errors = config(
            "pipelines:\n  logs/a:\n    tenants: [acme]\n  logs/b:\n    tenants: [acme]\n  logs:\n    tenants: [x]\n",
        )
        .validate();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"pipelines.logs/b.tenants[0]"), "{errors:?}");
        assert!(paths.contains(&"pipelines.logs.tenants"), "{errors:?}");
    }

    fn spans(service: &str, n: usize, trace: u8) -> processor::Data {
        use opentelemetry_proto::tonic::{
            collector::trace::v1::ExportTraceServiceRequest,
            resource::v1::Resource,
            trace::v1::{ResourceSpans, ScopeSpans, Span},
        };
        processor::Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![processor::otlp::key_value(
                        "service.name",
                        processor::otlp::string_value(service),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..n)
                        .map(|i| Span {
                            trace_id: vec![trace; 16],
                            span_id: vec![i as u8 + 1; 8],
                            name: format!("op{i}"),
                            kind: 2,
                            start_time_unix_nano: 1_000,
                            end_time_unix_nano: 2_000_000,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn pipelines_hold_offsets_until_released_and_route_between_pipelines() {
        let mut p = Pipelines::build(&config(
            r#"
processors:
  routing:
    routes:
      - resource: {service.name: '^payments$'}
        pipeline: traces/pci
  batch: {send_batch_size: 1000, timeout: 1s}
  attributes/pci:
    actions: [{key: pci, value: true, action: upsert}]
pipelines:
  traces:
    processors: [routing, batch]
  traces/pci:
    processors: [attributes/pci]
"#,
        ))
        .expect("valid")
        .with_telemetry(ProcessorMetrics::default());
        let tenant = Tenant::default_tenant();
        // payments' spans leave at once through traces/pci; the others wait in the batch.
        let out = p.process(Batch::new(tenant.clone(), 7, spans("payments", 2, 1)), &[], 0);
        assert_eq!(out.len(), 1);
        assert!(out[0].from_records);
        let processor::Data::Traces(r) = &out[0].batch.data else { panic!("traces") };
        assert!(
            r.resource_spans[0].scope_spans[0].spans.iter().all(|s| processor::otlp::get(
                &s.attributes,
                "pci"
            )
            .is_some())
        );
        assert!(p.process(Batch::new(tenant.clone(), 8, spans("checkout", 3, 2)), &[], 0).is_empty());
        assert!(p.process(Batch::new(tenant, 9, spans("checkout", 3, 3)), &[], 0).is_empty());
        assert_eq!(p.held_offset(), Some(8));
        assert!(p.tick(500_000_000, false).is_empty());
        let released = p.tick(1_000_000_000, false);
        assert_eq!(released.len(), 1);
        assert_eq!((released[0].batch.offset, released[0].batch.data.items()), (8, 6));
        assert_eq!(p.held_offset(), None);
    }

    #[test]
    fn pipelines_metrics_made_by_processors_carry_the_partition() {
        let mut p = Pipelines::build(&config(
            "processors:\n  span_metrics: {metrics_flush_interval: 1s}\npipelines:\n  traces:\n    processors: [span_metrics]\n",
        ))
        .expect("valid")
        .for_partition(3);
        let out = p.process(Batch::new(Tenant::default_tenant(), 1, spans("checkout", 2, 1)), &[], 0);
        assert_eq!(out.len(), 1);
        let made = p.tick(2_000_000_000, false);
        assert!(!made.is_empty());
        for o in made {
            assert!(!o.from_records);
            let processor::Data::Metrics(r) = o.batch.data else { panic!("metrics") };
            let mut points = 0;
            let mut copy = r.clone();
            processor::otlp::for_each_point_attributes_mut(&mut copy, |_, _, attrs| {
                points += 1;
                assert_eq!(processor::otlp::get_str(attrs, PARTITION_ATTRIBUTE), Some("3"));
            });
            assert!(points > 0);
        }
    }

    #[test]
    fn pipelines_choose_the_tenant_pipeline_then_the_default() {
        let p = Pipelines::build(&config(
            "pipelines:\n  traces:\n    processors: []\n  traces/acme:\n    tenants: [acme]\n    processors: []\n",
        ))
        .expect("valid");
        let acme = Tenant::parse("acme").expect("tenant");
        let other = Tenant::parse("other").expect("tenant");
        assert_eq!(
            p.pipeline_for(&acme, Signal::Traces).map(|i| p.pipelines[i].name.as_str()),
            Some("traces/acme")
        );
        assert_eq!(
            p.pipeline_for(&other, Signal::Traces).map(|i| p.pipelines[i].name.as_str()),
            Some("traces")
        );
        assert!(!p.applies(&acme, Signal::Logs));
    }
}
