//! The `tail_sampling` processor: holds the spans of each trace until `decision_wait` has passed
//! since the trace was first seen, then keeps or drops the whole trace according to policies
//! (errors, latency, attributes, probability, rate limits, and compositions of those).
//!
//! State, per (tenant, trace id): the held spans with their resource and scope, when the trace
//! was first seen, and the lowest queue offset that contributed to it. Decided trace ids are
//! remembered in two bounded caches (sampled, not sampled) so that late spans follow the
//! decision at once. Undecided traces are bounded by `num_traces`: past it, the oldest is decided
//! early on what it has.

mod policy;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans},
};
use pharos_core::{Signal, Tenant};
use pharos_queue::Offset;
use prost::Message;
use serde::Deserialize;

use self::policy::{Policy, PolicyConfig, TraceView};
use super::{Batch, ConfigError, Context, Data, Processor};

/// Released traces of one tenant go out in batches of at most this many spans.
const MAX_RELEASE_SPANS: u64 = 8192;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_decision_wait", deserialize_with = "super::duration::deserialize")]
    decision_wait: Duration,
    #[serde(default = "default_num_traces")]
    num_traces: u64,
    /// Accepted for Collector compatibility (a sizing hint there); unused.
    #[serde(default)]
    #[allow(dead_code)]
    expected_new_traces_per_sec: u64,
    #[serde(default)]
    decision_cache: DecisionCacheConfig,
    policies: Vec<PolicyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionCacheConfig {
    #[serde(default = "default_cache_size")]
    sampled_cache_size: u64,
    #[serde(default = "default_cache_size")]
    non_sampled_cache_size: u64,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: default_cache_size(),
            non_sampled_cache_size: default_cache_size(),
        }
    }
}

fn default_decision_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_num_traces() -> u64 {
    50_000
}

fn default_cache_size() -> u64 {
    100_000
}

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    if signal != Signal::Traces {
        return Err(super::wrong_signal("tail_sampling", signal, "traces"));
    }
    let cfg: Config = super::parse_config(config)?;
    Ok(Box::new(TailSampler::new(&cfg)?))
}

/// A trace, as held and remembered: the tenant and the trace id (ids that are not 16 bytes long
/// are replaced by a hash of their bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TraceKey {
    tenant: Tenant,
    id: [u8; 16],
}

fn trace_id_of(bytes: &[u8]) -> [u8; 16] {
    if let Ok(id) = <[u8; 16]>::try_from(bytes) {
        return id;
    }
    // A malformed id still groups its spans; the length is mixed in so that, say, an empty id
    // and a 16-byte id of zeros stay apart.
    let input = [&(bytes.len() as u64).to_le_bytes()[..], bytes].concat();
    let high = policy::salted_hash(b"pharos-trace-id-high", &input);
    let low = policy::salted_hash(b"pharos-trace-id-low", &input);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// The spans of one undecided trace.
#[derive(Debug)]
struct HeldTrace {
    request: ExportTraceServiceRequest,
    first_seen: u64,
    min_offset: Offset,
    spans: u64,
    bytes: u64,
    /// Where the last span was appended: (process call, resource index, scope index) in that
    /// call's batch; spans of the same scope of the same batch join the same `ScopeSpans`.
    last_group: Option<(u64, usize, usize)>,
}

/// A bounded set of decided trace keys; the oldest insertion goes first.
#[derive(Debug)]
struct DecisionCache {
    keys: HashSet<TraceKey>,
    order: VecDeque<TraceKey>,
    capacity: usize,
}

impl DecisionCache {
    fn new(capacity: u64) -> Self {
        DecisionCache {
            keys: HashSet::new(),
            order: VecDeque::new(),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    fn contains(&self, key: &TraceKey) -> bool {
        self.keys.contains(key)
    }

    fn insert(&mut self, key: TraceKey) {
        if self.capacity == 0 || !self.keys.insert(key.clone()) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }
}

struct TailSampler {
    decision_wait_nanos: u64,
    num_traces: usize,
    /// Non-drop policies: a trace is kept if any samples it.
    policies: Vec<Policy>,
    /// Drop policies: a trace is dropped if any matches, whatever the others say.
    drop_policies: Vec<Policy>,
    traces: HashMap<TraceKey, HeldTrace>,
    /// Undecided traces by arrival (every removal is of the oldest).
    arrival: VecDeque<TraceKey>,
    /// Multiset of the held traces' lowest offsets.
    offsets: BTreeMap<Offset, usize>,
    held_bytes: u64,
    /// Spans held, all undecided traces together.
    held_spans: u64,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
    /// Counts `process` calls, to recognise spans of one scope of one batch.
    calls: u64,
}

/// Kept traces of one tenant, gathered for release.
struct Release {
    tenant: Tenant,
    request: ExportTraceServiceRequest,
    offset: Offset,
    spans: u64,
}

impl TailSampler {
    fn new(cfg: &Config) -> Result<Self, ConfigError> {
        if cfg.decision_wait.is_zero() {
            return Err(ConfigError::new("decision_wait", "must be above 0"));
        }
        if cfg.num_traces == 0 {
            return Err(ConfigError::new("num_traces", "must be above 0"));
        }
        if cfg.policies.is_empty() {
            return Err(ConfigError::new("policies", "at least one policy is required"));
        }
        let mut policies = Vec::new();
        let mut drop_policies = Vec::new();
        for (i, p) in cfg.policies.iter().enumerate() {
            let compiled = policy::compile(p, &format!("policies[{i}]"), true)?;
            if compiled.is_drop() { drop_policies.push(compiled) } else { policies.push(compiled) }
        }
        Ok(TailSampler {
            decision_wait_nanos: u64::try_from(cfg.decision_wait.as_nanos()).unwrap_or(u64::MAX),
            num_traces: usize::try_from(cfg.num_traces).unwrap_or(usize::MAX),
            policies,
            drop_policies,
            traces: HashMap::new(),
            arrival: VecDeque::new(),
            offsets: BTreeMap::new(),
            held_bytes: 0,
            held_spans: 0,
            sampled: DecisionCache::new(cfg.decision_cache.sampled_cache_size),
            not_sampled: DecisionCache::new(cfg.decision_cache.non_sampled_cache_size),
            calls: 0,
        })
    }

    /// Decides one trace: dropped if a drop policy matches, else kept if any policy samples it.
    /// Drop policies go first, so that a dropped trace uses no rate-limiting budget.
    fn decide(&mut self, key: &TraceKey, trace: &HeldTrace, now: u64) -> bool {
        let view = TraceView {
            tenant: &key.tenant,
            trace_id: &key.id,
            request: &trace.request,
            spans: trace.spans,
            now_unix_nanos: now,
        };
        let mut dropped = false;
        for p in &mut self.drop_policies {
            dropped |= p.evaluate(&view);
        }
        if dropped {
            return false;
        }
        // Every policy sees every trace (no short cut), as in the Collector.
        let mut sampled = false;
        for p in &mut self.policies {
            sampled |= p.evaluate(&view);
        }
        sampled
    }

    /// Removes the oldest undecided trace and decides it; returns it when kept.
    fn settle_oldest(&mut self, ctx: &mut Context) -> Option<(TraceKey, HeldTrace)> {
        let key = self.arrival.pop_front()?;
        let trace = self.traces.remove(&key)?;
        self.forget_offset(trace.min_offset);
        self.held_bytes = self.held_bytes.saturating_sub(trace.bytes);
        self.held_spans = self.held_spans.saturating_sub(trace.spans);
        if self.decide(&key, &trace, ctx.now_unix_nanos) {
            ctx.count("sampled", 1);
            self.sampled.insert(key.clone());
            Some((key, trace))
        } else {
            ctx.count("not_sampled", 1);
            ctx.drop_items("sampled_out", trace.spans);
            self.not_sampled.insert(key);
            None
        }
    }

    fn forget_offset(&mut self, offset: Offset) {
        if let Some(n) = self.offsets.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                self.offsets.remove(&offset);
            }
        }
    }

    /// Holds `span` for the undecided trace `key`, creating the trace (and evicting the oldest
    /// one past `num_traces`) when new.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        key: TraceKey,
        span: opentelemetry_proto::tonic::trace::v1::Span,
        rs: &ResourceSpans,
        ss: &ScopeSpans,
        group: (usize, usize),
        offset: Offset,
        ctx: &mut Context,
        out: &mut Vec<Batch>,
    ) {
        if !self.traces.contains_key(&key) {
            while self.traces.len() >= self.num_traces {
                ctx.count("evicted", 1);
                if let Some((evicted_key, trace)) = self.settle_oldest(ctx) {
                    out.push(Batch::new(evicted_key.tenant, trace.min_offset, Data::Traces(trace.request)));
                }
                if self.arrival.is_empty() {
                    break;
                }
            }
            self.traces.insert(
                key.clone(),
                HeldTrace {
                    request: ExportTraceServiceRequest::default(),
                    first_seen: ctx.now_unix_nanos,
                    min_offset: offset,
                    spans: 0,
                    bytes: 0,
                    last_group: None,
                },
            );
            *self.offsets.entry(offset).or_insert(0) += 1;
            self.arrival.push_back(key.clone());
        }
        let Some(trace) = self.traces.get_mut(&key) else { return };
        if offset < trace.min_offset {
            let old = trace.min_offset;
            trace.min_offset = offset;
            *self.offsets.entry(offset).or_insert(0) += 1;
            self.forget_offset(old);
        }
        let Some(trace) = self.traces.get_mut(&key) else { return };
        let here = (self.calls, group.0, group.1);
        let mut added = span.encoded_len() as u64;
        let same_resource = trace.last_group.is_some_and(|(c, r, _)| c == here.0 && r == here.1);
        let same_scope = trace.last_group == Some(here);
        if !same_resource {
            added += rs.resource.as_ref().map_or(0, |r| r.encoded_len() as u64);
            trace.request.resource_spans.push(ResourceSpans {
                resource: rs.resource.clone(),
                scope_spans: Vec::new(),
                schema_url: rs.schema_url.clone(),
            });
        }
        let Some(target_rs) = trace.request.resource_spans.last_mut() else { return };
        if !same_scope || target_rs.scope_spans.is_empty() {
            added += ss.scope.as_ref().map_or(0, |s| s.encoded_len() as u64);
            target_rs.scope_spans.push(ScopeSpans {
                scope: ss.scope.clone(),
                spans: Vec::new(),
                schema_url: ss.schema_url.clone(),
            });
        }
        if let Some(target_ss) = target_rs.scope_spans.last_mut() {
            target_ss.spans.push(span);
        }
        trace.last_group = Some(here);
        trace.spans += 1;
        trace.bytes += added;
        self.held_bytes += added;
        self.held_spans += 1;
    }
}

impl Processor for TailSampler {
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        let Batch { tenant, offset, data, route } = batch;
        let request = match data {
            Data::Traces(r) => r,
            other => {
                // Not traces (the pipeline is checked at build): passed on untouched.
                if !other.is_empty() {
                    out.push(Batch { tenant, offset, data: other, route });
                }
                return;
            }
        };
        self.calls = self.calls.wrapping_add(1);
        let mut kept = ExportTraceServiceRequest::default();
        let mut dropped = 0u64;
        let mut released = Vec::new();
        for (ri, mut rs) in request.resource_spans.into_iter().enumerate() {
            let scopes = std::mem::take(&mut rs.scope_spans);
            let mut kept_scopes = Vec::new();
            for (si, mut ss) in scopes.into_iter().enumerate() {
                let spans = std::mem::take(&mut ss.spans);
                let mut kept_spans = Vec::new();
                for span in spans {
                    let key = TraceKey { tenant: tenant.clone(), id: trace_id_of(&span.trace_id) };
                    if self.sampled.contains(&key) {
                        kept_spans.push(span);
                    } else if self.not_sampled.contains(&key) {
                        dropped += 1;
                    } else {
                        self.hold(key, span, &rs, &ss, (ri, si), offset, ctx, &mut released);
                    }
                }
                if !kept_spans.is_empty() {
                    kept_scopes.push(ScopeSpans {
                        scope: ss.scope,
                        spans: kept_spans,
                        schema_url: ss.schema_url,
                    });
                }
            }
            if !kept_scopes.is_empty() {
                kept.resource_spans.push(ResourceSpans {
                    resource: rs.resource,
                    scope_spans: kept_scopes,
                    schema_url: rs.schema_url,
                });
            }
        }
        ctx.drop_items("sampled_out", dropped);
        out.extend(released);
        if !kept.resource_spans.is_empty() {
            out.push(Batch { tenant, offset, data: Data::Traces(kept), route });
        }
    }

    fn tick(&mut self, ctx: &mut Context, closing: bool, out: &mut Vec<Batch>) {
        if closing {
            // Undecided traces stay held: their records stay uncommitted and are read again at
            // the next start, where the decision is taken on the whole trace.
            return;
        }
        let now = ctx.now_unix_nanos;
        let mut releases: Vec<Release> = Vec::new();
        let mut open: HashMap<Tenant, usize> = HashMap::new();
        while let Some(front) = self.arrival.front() {
            let due = self
                .traces
                .get(front)
                .is_none_or(|t| now.saturating_sub(t.first_seen) >= self.decision_wait_nanos);
            if !due {
                break;
            }
            let Some((key, trace)) = self.settle_oldest(ctx) else { continue };
            let index = match open.get(&key.tenant) {
                Some(&i) => i,
                None => {
                    releases.push(Release {
                        tenant: key.tenant.clone(),
                        request: ExportTraceServiceRequest::default(),
                        offset: trace.min_offset,
                        spans: 0,
                    });
                    open.insert(key.tenant.clone(), releases.len() - 1);
                    releases.len() - 1
                }
            };
            let release = &mut releases[index];
            release.offset = release.offset.min(trace.min_offset);
            release.spans += trace.spans;
            release.request.resource_spans.extend(trace.request.resource_spans);
            if release.spans >= MAX_RELEASE_SPANS {
                open.remove(&key.tenant);
            }
        }
        out.extend(
            releases
                .into_iter()
                .filter(|r| r.spans > 0)
                .map(|r| Batch::new(r.tenant, r.offset, Data::Traces(r.request))),
        );
    }

    fn held_offset(&self) -> Option<Offset> {
        self.offsets.keys().next().copied()
    }

    fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    fn held_items(&self) -> u64 {
        self.held_spans
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
        resource::v1::Resource,
        trace::v1::{Span, Status, span::Event},
    };

    use super::*;
    use crate::processor::otlp;

    const SECOND: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000 * SECOND;

    fn tenant(name: &str) -> Tenant {
        Tenant::parse(name).expect("test tenant ids are valid")
    }

    fn id(n: u64) -> Vec<u8> {
        let mut bytes = vec![0x4b; 8];
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn str_kv(key: &str, value: &str) -> KeyValue {
        kv(key, Value::StringValue(value.into()))
    }

    /// An HTTP server span of trace `trace`, `start_ms`..`start_ms + duration_ms` after T0.
    fn span(trace: u64, route: &str, start_ms: u64, duration_ms: u64) -> Span {
        Span {
            trace_id: id(trace),
            span_id: (start_ms + 1).to_be_bytes().to_vec(),
            name: format!("GET {route}"),
            kind: 2,
            start_time_unix_nano: T0 + start_ms * MS,
            end_time_unix_nano: T0 + (start_ms + duration_ms) * MS,
            attributes: vec![
                str_kv("http.request.method", "GET"),
                str_kv("http.route", route),
                kv("http.response.status_code", Value::IntValue(200)),
            ],
            events: vec![Event {
                time_unix_nano: T0 + start_ms * MS,
                name: "request.received".into(),
                ..Default::default()
            }],
            status: Some(Status { code: 0, message: String::new() }),
            ..Default::default()
        }
    }

    fn failed(mut s: Span) -> Span {
        s.status = Some(Status { code: 2, message: "upstream timeout".into() });
        otlp::upsert(
            &mut s.attributes,
            "http.response.status_code",
            AnyValue { value: Some(Value::IntValue(503)) },
        );
        s
    }

    fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        str_kv("service.name", service),
                        str_kv("deployment.environment", "prod"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn batch(tenant_name: &str, offset: Offset, req: ExportTraceServiceRequest) -> Batch {
        Batch::new(tenant(tenant_name), offset, Data::Traces(req))
    }

    fn sampler(yaml: &str) -> Box<dyn Processor> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml parses");
        build(&value, Signal::Traces).expect("test config is valid")
    }

    fn config_error(yaml: &str) -> ConfigError {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml parses");
        match build(&value, Signal::Traces) {
            Ok(_) => panic!("config should be rejected: {yaml}"),
            Err(e) => e,
        }
    }

    fn process(p: &mut dyn Processor, b: Batch, now: u64) -> (Vec<Batch>, Context) {
        let mut ctx = Context::at(now);
        let mut out = Vec::new();
        p.process(b, &mut ctx, &mut out);
        (out, ctx)
    }

    fn tick(p: &mut dyn Processor, now: u64, closing: bool) -> (Vec<Batch>, Context) {
        let mut ctx = Context::at(now);
        let mut out = Vec::new();
        p.tick(&mut ctx, closing, &mut out);
        (out, ctx)
    }

    fn spans_of(out: &[Batch]) -> Vec<&Span> {
        out.iter()
            .flat_map(|b| match &b.data {
                Data::Traces(r) => {
                    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).collect()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    fn traces_of(out: &[Batch]) -> HashSet<Vec<u8>> {
        spans_of(out).into_iter().map(|s| s.trace_id.clone()).collect()
    }

    const ERRORS: &str = "
decision_wait: 10s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
";

    #[test]
    fn status_code_policy_error_trace_kept_and_ok_trace_dropped() {
        let mut p = sampler(ERRORS);
        let req = request(
            "checkout",
            vec![span(1, "/checkout", 0, 30), failed(span(1, "/payment", 5, 20)), span(2, "/cart", 0, 10)],
        );
        let (out, _) = process(p.as_mut(), batch("acme", 7, req), T0);
        assert!(out.is_empty(), "undecided traces are held");

        let (out, ctx) = tick(p.as_mut(), T0 + 10 * SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(1)]));
        assert_eq!(spans_of(&out).len(), 2);
        assert_eq!(out[0].offset, 7);
        assert_eq!(out[0].tenant, tenant("acme"));
        assert_eq!(ctx.counted_for("sampled"), 1);
        assert_eq!(ctx.counted_for("not_sampled"), 1);
        assert_eq!(ctx.dropped_for("sampled_out"), 1);
    }

    #[test]
    fn released_trace_keeps_resource_scope_and_span_content() {
        let mut p = sampler(ERRORS);
        let original = failed(span(1, "/checkout", 0, 30));
        process(p.as_mut(), batch("acme", 1, request("checkout", vec![original.clone()])), T0);
        let (out, _) = tick(p.as_mut(), T0 + 10 * SECOND, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, Data::Traces(request("checkout", vec![original])));
    }

    #[test]
    fn latency_policy_slow_trace_kept_and_fast_trace_dropped() {
        let mut p = sampler(
            "
decision_wait: 5s
policies:
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
",
        );
        // Trace 1: no single span reaches 500ms, but the trace spans 0..600ms.
        let req = request(
            "checkout",
            vec![span(1, "/checkout", 0, 300), span(1, "/db", 250, 350), span(2, "/cart", 0, 499)],
        );
        process(p.as_mut(), batch("acme", 1, req), T0);
        let (out, _) = tick(p.as_mut(), T0 + 5 * SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(1)]));
    }

    #[test]
    fn latency_policy_upper_threshold_bounds_the_window() {
        let mut p = sampler(
            "
decision_wait: 5s
policies:
  - {type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 1000}}
",
        );
        let req = request("api", vec![span(1, "/a", 0, 50), span(2, "/b", 0, 400), span(3, "/c", 0, 5000)]);
        process(p.as_mut(), batch("acme", 1, req), T0);
        let (out, _) = tick(p.as_mut(), T0 + 5 * SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(2)]));
    }

    /// A small deterministic generator for random-looking trace ids.
    fn random_ids(n: usize, mut state: u64) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut bytes = Vec::with_capacity(16);
                for _ in 0..2 {
                    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    bytes.extend_from_slice(&policy::mix64(state).to_be_bytes());
                }
                bytes
            })
            .collect()
    }

    #[test]
    fn probabilistic_policy_ten_percent_samples_about_ten_percent_consistently() {
        let yaml = "
decision_wait: 1s
num_traces: 100000
policies:
  - {type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: pharos}}
";
        let ids = random_ids(20_000, 42);
        let run = |ids: &[Vec<u8>]| {
            let mut p = sampler(yaml);
            let spans = ids
                .iter()
                .map(|tid| {
                    let mut s = span(0, "/search", 0, 20);
                    s.trace_id = tid.clone();
                    s
                })
                .collect();
            process(p.as_mut(), batch("acme", 1, request("search", spans)), T0);
            let (out, ctx) = tick(p.as_mut(), T0 + SECOND, false);
            (traces_of(&out), ctx)
        };
        let (first, ctx) = run(&ids);
        assert!((1800..=2200).contains(&first.len()), "sampled {} of 20000", first.len());
        assert_eq!(ctx.counted_for("sampled"), first.len() as u64);
        assert_eq!(ctx.counted_for("not_sampled"), 20_000 - first.len() as u64);
        // Another instance takes the same decisions.
        let (second, _) = run(&ids);
        assert_eq!(first, second);
    }

    #[test]
    fn trace_spans_arriving_in_three_batches_are_decided_together() {
        let mut p = sampler(ERRORS);
        process(
            p.as_mut(),
            batch("acme", 1, request("frontend", vec![span(1, "/checkout", 0, 900), span(2, "/", 0, 5)])),
            T0,
        );
        process(
            p.as_mut(),
            batch("acme", 2, request("cart", vec![span(1, "/cart", 10, 50), span(2, "/static", 1, 2)])),
            T0 + 2 * SECOND,
        );
        let (out, _) = tick(p.as_mut(), T0 + 5 * SECOND, false);
        assert!(out.is_empty(), "nothing is due before decision_wait");
        process(
            p.as_mut(),
            batch(
                "acme",
                3,
                request("payment", vec![failed(span(1, "/charge", 100, 700)), span(2, "/img", 2, 1)]),
            ),
            T0 + 4 * SECOND,
        );

        let (out, ctx) = tick(p.as_mut(), T0 + 10 * SECOND, false);
        let kept = spans_of(&out);
        assert_eq!(kept.len(), 3, "all spans of the failing trace, from all three batches");
        assert!(kept.iter().all(|s| s.trace_id == id(1)));
        assert_eq!(out[0].offset, 1, "the lowest offset that contributed to the trace");
        assert_eq!(ctx.dropped_for("sampled_out"), 3, "all spans of the healthy trace");
        let services: HashSet<&str> = match &out[0].data {
            Data::Traces(r) => r
                .resource_spans
                .iter()
                .filter_map(|rs| otlp::get_str(otlp::resource_attributes(&rs.resource), "service.name"))
                .collect(),
            _ => HashSet::new(),
        };
        assert_eq!(services, HashSet::from(["frontend", "cart", "payment"]));
    }

    #[test]
    fn late_spans_after_decision_follow_the_cached_decision() {
        let mut p = sampler(ERRORS);
        process(
            p.as_mut(),
            batch("acme", 1, request("api", vec![failed(span(1, "/a", 0, 5)), span(2, "/b", 0, 5)])),
            T0,
        );
        tick(p.as_mut(), T0 + 10 * SECOND, false);

        let late = request("worker", vec![span(1, "/a/async", 50, 5), span(2, "/b/async", 50, 5)]);
        let (out, ctx) = process(p.as_mut(), batch("acme", 9, late), T0 + 11 * SECOND);
        assert_eq!(traces_of(&out), HashSet::from([id(1)]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].offset, 9, "passed on with the incoming batch's offset");
        assert_eq!(ctx.dropped_for("sampled_out"), 1);
        assert_eq!(p.held_offset(), None, "nothing held for decided traces");
        assert_eq!(p.held_bytes(), 0);
    }

    #[test]
    fn held_offset_moves_as_traces_are_released() {
        let mut p = sampler(ERRORS);
        assert_eq!(p.held_offset(), None);
        process(p.as_mut(), batch("acme", 10, request("api", vec![failed(span(1, "/a", 0, 5))])), T0);
        process(p.as_mut(), batch("acme", 11, request("api", vec![span(2, "/b", 0, 5)])), T0 + 5 * SECOND);
        process(p.as_mut(), batch("acme", 12, request("api", vec![span(1, "/a2", 0, 5)])), T0 + 6 * SECOND);
        assert_eq!(p.held_offset(), Some(10));

        let (out, _) = tick(p.as_mut(), T0 + 10 * SECOND, false);
        assert_eq!(spans_of(&out).len(), 2);
        assert_eq!(out[0].offset, 10);
        assert_eq!(p.held_offset(), Some(11));

        tick(p.as_mut(), T0 + 15 * SECOND, false);
        assert_eq!(p.held_offset(), None);
    }

    #[test]
    fn held_bytes_grow_with_spans_and_return_to_zero_after_release() {
        let mut p = sampler(ERRORS);
        process(p.as_mut(), batch("acme", 1, request("api", vec![span(1, "/a", 0, 5)])), T0);
        let one = p.held_bytes();
        assert!(one > 0);
        process(p.as_mut(), batch("acme", 2, request("api", vec![span(1, "/b", 0, 5)])), T0);
        assert!(p.held_bytes() > one);
        assert!(p.held_items() > 0);
        tick(p.as_mut(), T0 + 10 * SECOND, false);
        assert_eq!(p.held_bytes(), 0);
    }

    #[test]
    fn closing_tick_keeps_undecided_traces_held() {
        let mut p = sampler(ERRORS);
        process(p.as_mut(), batch("acme", 4, request("api", vec![failed(span(1, "/a", 0, 5))])), T0);
        let (out, ctx) = tick(p.as_mut(), T0 + 3600 * SECOND, true);
        assert!(out.is_empty());
        assert_eq!(ctx.counted_for("sampled"), 0);
        assert_eq!(p.held_offset(), Some(4), "the record stays uncommitted");
        assert!(p.held_bytes() > 0);
    }

    #[test]
    fn num_traces_exceeded_decides_the_oldest_trace_early() {
        let mut p = sampler(
            "
decision_wait: 30s
num_traces: 2
policies:
  - {type: status_code, status_code: {status_codes: [ERROR]}}
",
        );
        process(p.as_mut(), batch("acme", 1, request("api", vec![failed(span(1, "/a", 0, 5))])), T0);
        process(p.as_mut(), batch("acme", 2, request("api", vec![span(2, "/b", 0, 5)])), T0);
        let (out, ctx) = process(p.as_mut(), batch("acme", 3, request("api", vec![span(3, "/c", 0, 5)])), T0);
        assert_eq!(ctx.counted_for("evicted"), 1);
        assert_eq!(traces_of(&out), HashSet::from([id(1)]), "the evicted failing trace is kept, not lost");
        assert_eq!(out[0].offset, 1);
        assert_eq!(p.held_offset(), Some(2));

        let (out, ctx) = process(p.as_mut(), batch("acme", 4, request("api", vec![span(4, "/d", 0, 5)])), T0);
        assert!(out.is_empty());
        assert_eq!(ctx.counted_for("evicted"), 1);
        assert_eq!(ctx.dropped_for("sampled_out"), 1);
        assert_eq!(p.held_offset(), Some(3));
    }

    #[test]
    fn tenants_with_the_same_trace_id_are_decided_separately() {
        let mut p = sampler(ERRORS);
        process(p.as_mut(), batch("acme", 1, request("api", vec![failed(span(1, "/a", 0, 5))])), T0);
        process(
            p.as_mut(),
            batch("globex", 2, request("api", vec![span(1, "/a", 0, 5), span(1, "/b", 1, 5)])),
            T0,
        );
        let (out, ctx) = tick(p.as_mut(), T0 + 10 * SECOND, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tenant, tenant("acme"));
        assert_eq!(spans_of(&out).len(), 1);
        assert_eq!(ctx.dropped_for("sampled_out"), 2);

        // The cached decisions are per tenant too.
        let (out, _) = process(
            p.as_mut(),
            batch("globex", 3, request("api", vec![span(1, "/late", 9, 1)])),
            T0 + 11 * SECOND,
        );
        assert!(out.is_empty());
        let (out, _) = process(
            p.as_mut(),
            batch("acme", 4, request("api", vec![span(1, "/late", 9, 1)])),
            T0 + 11 * SECOND,
        );
        assert_eq!(out[0].tenant, tenant("acme"));
        assert_eq!(spans_of(&out).len(), 1);
    }

    #[test]
    fn released_traces_of_one_tenant_share_a_batch_with_the_lowest_offset() {
        let mut p = sampler("policies: [{type: always_sample}]\ndecision_wait: 1s");
        process(p.as_mut(), batch("acme", 21, request("api", vec![span(1, "/a", 0, 5)])), T0);
        process(p.as_mut(), batch("acme", 20, request("api", vec![span(2, "/b", 0, 5)])), T0);
        process(p.as_mut(), batch("globex", 22, request("api", vec![span(3, "/c", 0, 5)])), T0);
        let (out, _) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(out.len(), 2);
        let acme = out.iter().find(|b| b.tenant == tenant("acme")).expect("a batch for acme");
        assert_eq!(acme.offset, 20);
        assert_eq!(acme.data.items(), 2);
    }

    const COMPOSITE: &str = "
decision_wait: 1s
policies:
  - name: slow-checkout
    type: and
    and:
      and_sub_policy:
        - {type: string_attribute, string_attribute: {key: http.route, values: [/checkout]}}
        - {type: latency, latency: {threshold_ms: 200}}
  - name: server-errors-or-debug
    type: or
    or:
      or_sub_policy:
        - {type: numeric_attribute, numeric_attribute: {key: http.response.status_code, min_value: 500, max_value: 599}}
        - {type: boolean_attribute, boolean_attribute: {key: debug, value: true}}
  - name: no-health-checks
    type: drop
    drop:
      drop_sub_policy:
        - {type: string_attribute, string_attribute: {key: http.route, values: ['^/health'], enabled_regex_matching: true}}
";

    #[test]
    fn composite_and_or_drop_policies_combine_as_documented() {
        let mut p = sampler(COMPOSITE);
        let mut debug = span(5, "/cart", 0, 5);
        debug.attributes.push(kv("debug", Value::BoolValue(true)));
        let req = request(
            "shop",
            vec![
                span(1, "/checkout", 0, 300),      // and: both match -> kept
                span(2, "/checkout", 0, 50),       // and: fast -> dropped
                span(3, "/cart", 0, 300),          // and: wrong route -> dropped
                failed(span(4, "/cart", 0, 5)),    // or: 503 -> kept
                debug,                             // or: debug -> kept
                failed(span(6, "/healthz", 0, 5)), // drop wins over the 503
            ],
        );
        process(p.as_mut(), batch("acme", 1, req), T0);
        let (out, _) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(1), id(4), id(5)]));
    }

    #[test]
    fn attribute_policies_match_resource_attributes_and_invert() {
        let mut p = sampler(
            "
decision_wait: 1s
policies:
  - {type: string_attribute, string_attribute: {key: deployment.environment, values: [prod], invert_match: true}}
",
        );
        let mut staging = request("api", vec![span(2, "/a", 0, 5)]);
        staging.resource_spans[0].resource = Some(Resource {
            attributes: vec![str_kv("deployment.environment", "staging")],
            ..Default::default()
        });
        process(p.as_mut(), batch("acme", 1, request("api", vec![span(1, "/a", 0, 5)])), T0);
        process(p.as_mut(), batch("acme", 2, staging), T0);
        let (out, _) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(2)]), "only the trace outside prod");
    }

    #[test]
    fn rate_limiting_policy_limits_spans_per_second_of_the_injected_clock() {
        let mut p = sampler(
            "
decision_wait: 1s
policies:
  - {type: rate_limiting, rate_limiting: {spans_per_second: 3}}
",
        );
        let two = |t: u64| vec![span(t, "/a", 0, 5), span(t, "/b", 1, 5)];
        process(p.as_mut(), batch("acme", 1, request("api", [two(1), two(2)].concat())), T0);
        let (out, _) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(1)]), "2 + 2 spans exceed 3 in one second");

        process(p.as_mut(), batch("acme", 2, request("api", two(3))), T0 + SECOND + SECOND / 2);
        let (out, _) = tick(p.as_mut(), T0 + 3 * SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(3)]), "a new second has a new budget");

        // Another tenant has its own budget in the same second.
        process(p.as_mut(), batch("acme", 3, request("api", two(4))), T0 + 3 * SECOND);
        process(p.as_mut(), batch("globex", 4, request("api", two(5))), T0 + 3 * SECOND);
        let (out, _) = tick(p.as_mut(), T0 + 4 * SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(4), id(5)]));
    }

    #[test]
    fn and_policy_unmatched_trace_spends_no_rate_limiting_budget() {
        // As in the Collector, `and` stops at its first unmatched sub-policy: rate limiting a
        // class of traces only spends budget on traces of that class.
        let mut p = sampler(
            "
decision_wait: 1s
policies:
  - type: and
    and:
      and_sub_policy:
        - {type: string_attribute, string_attribute: {key: http.route, values: [/checkout]}}
        - {type: rate_limiting, rate_limiting: {spans_per_second: 2}}
",
        );
        let two = |t: u64, route: &str| vec![span(t, route, 0, 5), span(t, route, 1, 5)];
        let req = request("api", [two(1, "/cart"), two(2, "/checkout")].concat());
        process(p.as_mut(), batch("acme", 1, req), T0);
        let (out, _) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(2)]), "the /cart trace used no budget");
    }

    #[test]
    fn span_count_policy_keeps_traces_within_bounds() {
        let mut p = sampler(
            "decision_wait: 1s\npolicies: [{type: span_count, span_count: {min_spans: 2, max_spans: 3}}]",
        );
        let req = request(
            "api",
            vec![
                span(1, "/a", 0, 1),
                span(2, "/a", 0, 1),
                span(2, "/b", 0, 1),
                span(3, "/a", 0, 1),
                span(3, "/b", 0, 1),
                span(3, "/c", 0, 1),
                span(3, "/d", 0, 1),
            ],
        );
        process(p.as_mut(), batch("acme", 1, req), T0);
        let (out, _) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(traces_of(&out), HashSet::from([id(2)]));
    }

    #[test]
    fn odd_input_is_held_and_decided_without_panicking() {
        let mut p = sampler("decision_wait: 1s\npolicies: [{type: always_sample}]");
        let (out, _) = process(p.as_mut(), batch("acme", 1, ExportTraceServiceRequest::default()), T0);
        assert!(out.is_empty(), "an empty batch yields nothing");

        let mut no_id = span(0, "/a", 0, 5);
        no_id.trace_id = Vec::new();
        let mut short_id = span(0, "/b", 0, 5);
        short_id.trace_id = vec![1, 2, 3];
        let mut inverted = span(7, "/c", 0, 5);
        inverted.start_time_unix_nano = u64::MAX;
        inverted.end_time_unix_nano = 0;
        inverted.attributes.push(kv("payload", Value::BytesValue(vec![0xff, 0xfe, 0x00])));
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![no_id, short_id, inverted],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        process(p.as_mut(), batch("acme", 1, req), T0);
        let (out, ctx) = tick(p.as_mut(), T0 + SECOND, false);
        assert_eq!(spans_of(&out).len(), 3);
        assert_eq!(ctx.counted_for("sampled"), 3, "malformed ids are traces of their own");
    }

    #[test]
    fn non_trace_batches_pass_through() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        let mut p = sampler(ERRORS);
        let logs = Batch::new(tenant("acme"), 3, Data::Logs(ExportLogsServiceRequest::default()));
        let (out, _) = process(p.as_mut(), logs, T0);
        assert!(out.is_empty(), "empty data is not pushed");
    }

    #[test]
    fn config_errors_name_the_key_path() {
        let e = config_error("policies:\n  - {type: always_sample}\n  - {type: sometimes_sample}");
        assert_eq!(e.path, "policies[1].type");
        assert!(e.message.contains("sometimes_sample"));

        let e = config_error("policies:\n  - {name: slow, type: latency}");
        assert_eq!(e.path, "policies[0].latency");

        let e =
            config_error("policies:\n  - {type: probabilistic, probabilistic: {sampling_percentage: 150}}");
        assert_eq!(e.path, "policies[0].probabilistic.sampling_percentage");

        let e =
            config_error("policies:\n  - {type: probabilistic, probabilistic: {sampling_percentage: -1}}");
        assert_eq!(e.path, "policies[0].probabilistic.sampling_percentage");

        let e = config_error(
            "policies:\n  - {type: and, and: {and_sub_policy: [{type: string_attribute, string_attribute: {key: k, values: ['(('], enabled_regex_matching: true}}]}}",
        );
        assert_eq!(e.path, "policies[0].and.and_sub_policy[0].string_attribute.values[0]");

        let e = config_error(
            "policies:\n  - {type: or, or: {or_sub_policy: [{type: drop, drop: {drop_sub_policy: []}}]}}",
        );
        assert_eq!(e.path, "policies[0].or.or_sub_policy[0].type");

        let e =
            config_error("policies:\n  - {type: status_code, status_code: {status_codes: [ERROR, BROKEN]}}");
        assert_eq!(e.path, "policies[0].status_code.status_codes[1]");

        let e = config_error(
            "policies:\n  - {type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}",
        );
        assert_eq!(e.path, "policies[0].latency.upper_threshold_ms");

        let e = config_error("policies:\n  - {type: rate_limiting, rate_limiting: {spans_per_second: 0}}");
        assert_eq!(e.path, "policies[0].rate_limiting.spans_per_second");

        let e = config_error(
            "policies:\n  - {type: status_code, status_code: {status_codes: [ERROR]}, latency: {threshold_ms: 1}}",
        );
        assert_eq!(e.path, "policies[0].latency");

        let e = config_error("policies:\n  - {type: latency, latency: {threshold_ms: 1, lower_ms: 2}}");
        assert_eq!(e.path, "policies[0].latency.lower_ms");

        let e = config_error("decision_wait: soon\npolicies: [{type: always_sample}]");
        assert_eq!(e.path, "decision_wait");

        let e = config_error("decision_wait: 10s\npolicies: []");
        assert_eq!(e.path, "policies");

        let e = config_error("num_traces: 0\npolicies: [{type: always_sample}]");
        assert_eq!(e.path, "num_traces");

        let value: serde_yaml::Value = serde_yaml::from_str(ERRORS).expect("yaml");
        let e = build(&value, Signal::Logs).err().expect("logs pipelines are rejected");
        assert!(e.message.contains("traces"));
    }

    #[test]
    fn collector_style_full_config_is_accepted() {
        sampler(
            "
decision_wait: 10s
num_traces: 50000
expected_new_traces_per_sec: 100
decision_cache: {sampled_cache_size: 100000, non_sampled_cache_size: 100000}
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 0}}
  - {name: sample-ok, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: ''}}
  - {name: all, type: always_sample}
  - {type: string_attribute, string_attribute: {key: http.route, values: [/checkout], enabled_regex_matching: false, invert_match: false, cache_max_size: 10}}
  - {type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}
  - {type: boolean_attribute, boolean_attribute: {key: debug, value: true}}
  - {type: rate_limiting, rate_limiting: {spans_per_second: 100}}
",
        );
    }

    #[test]
    fn decision_cache_forgets_oldest_decisions_past_its_size() {
        let mut p = sampler(
            "
decision_wait: 1s
decision_cache: {sampled_cache_size: 1, non_sampled_cache_size: 1}
policies: [{type: always_sample}]
",
        );
        process(
            p.as_mut(),
            batch("acme", 1, request("api", vec![span(1, "/a", 0, 1), span(2, "/b", 0, 1)])),
            T0,
        );
        tick(p.as_mut(), T0 + SECOND, false);
        // Trace 2 is still remembered and passes at once; trace 1 was forgotten and is held anew.
        let (out, _) = process(
            p.as_mut(),
            batch("acme", 2, request("api", vec![span(1, "/a2", 0, 1), span(2, "/b2", 0, 1)])),
            T0 + 2 * SECOND,
        );
        assert_eq!(traces_of(&out), HashSet::from([id(2)]));
        assert_eq!(p.held_offset(), Some(2));
    }
}
