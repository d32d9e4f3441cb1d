//! Tail-sampling policies: their configuration, its validation, and the evaluation of one policy
//! over one whole held trace.

use std::collections::{HashMap, HashSet};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::status::StatusCode,
};
use pharos_core::Tenant;
use serde::Deserialize;

use crate::processor::{ConfigError, compile_regex, join_path, otlp};

/// The policy types, by the name used in `type`.
pub(super) const POLICY_TYPES: &[&str] = &[
    "always_sample",
    "status_code",
    "latency",
    "probabilistic",
    "string_attribute",
    "numeric_attribute",
    "boolean_attribute",
    "rate_limiting",
    "span_count",
    "and",
    "or",
    "drop",
];

/// Rate-limiting state is kept per tenant; past this many tenants, entries of past seconds go.
const RATE_STATE_PRUNE_AT: usize = 1024;

// ---- configuration ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    status_code: Option<StatusCodeConfig>,
    latency: Option<LatencyConfig>,
    probabilistic: Option<ProbabilisticConfig>,
    string_attribute: Option<StringAttributeConfig>,
    numeric_attribute: Option<NumericAttributeConfig>,
    boolean_attribute: Option<BooleanAttributeConfig>,
    rate_limiting: Option<RateLimitingConfig>,
    span_count: Option<SpanCountConfig>,
    and: Option<AndConfig>,
    or: Option<OrConfig>,
    drop: Option<DropConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusCodeConfig {
    status_codes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyConfig {
    threshold_ms: u64,
    #[serde(default)]
    upper_threshold_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbabilisticConfig {
    sampling_percentage: f64,
    #[serde(default)]
    hash_salt: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StringAttributeConfig {
    key: String,
    values: Vec<String>,
    #[serde(default)]
    enabled_regex_matching: bool,
    /// Accepted for Collector compatibility; the `regex` crate needs no match cache.
    #[serde(default)]
    #[allow(dead_code)]
    cache_max_size: Option<u64>,
    #[serde(default)]
    invert_match: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumericAttributeConfig {
    key: String,
    #[serde(default)]
    min_value: Option<f64>,
    #[serde(default)]
    max_value: Option<f64>,
    #[serde(default)]
    invert_match: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BooleanAttributeConfig {
    key: String,
    value: bool,
    #[serde(default)]
    invert_match: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitingConfig {
    spans_per_second: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanCountConfig {
    min_spans: u64,
    #[serde(default)]
    max_spans: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AndConfig {
    and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrConfig {
    or_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropConfig {
    drop_sub_policy: Vec<PolicyConfig>,
}

// ---- compiled policies ----

/// One compiled policy.
#[derive(Debug)]
pub(super) struct Policy {
    /// The configured name (informational: errors and debugging).
    #[allow(dead_code)]
    pub(super) name: String,
    rule: Rule,
}

#[derive(Debug)]
enum Rule {
    AlwaysSample,
    StatusCode(Vec<i32>),
    Latency { min_nanos: u64, max_nanos: Option<u64> },
    Probabilistic { below: u128, salt: Vec<u8> },
    StringAttribute { key: String, matcher: StringMatcher, invert: bool },
    NumericAttribute { key: String, min: f64, max: f64, invert: bool },
    BooleanAttribute { key: String, value: bool, invert: bool },
    RateLimiting { spans_per_second: u64, used: HashMap<Tenant, (u64, u64)> },
    SpanCount { min: u64, max: Option<u64> },
    And(Vec<Policy>),
    Or(Vec<Policy>),
    Drop(Vec<Policy>),
}

#[derive(Debug)]
enum StringMatcher {
    Exact(HashSet<String>),
    Regex(Vec<regex::Regex>),
}

impl StringMatcher {
    fn matches(&self, text: &str) -> bool {
        match self {
            StringMatcher::Exact(values) => values.contains(text),
            StringMatcher::Regex(patterns) => patterns.iter().any(|p| p.is_match(text)),
        }
    }
}

/// What a policy sees of one trace.
pub(super) struct TraceView<'a> {
    pub(super) tenant: &'a Tenant,
    pub(super) trace_id: &'a [u8; 16],
    pub(super) request: &'a ExportTraceServiceRequest,
    pub(super) spans: u64,
    pub(super) now_unix_nanos: u64,
}

impl Policy {
    pub(super) fn is_drop(&self) -> bool {
        matches!(self.rule, Rule::Drop(_))
    }

    /// Whether this policy samples the trace (for a `drop` policy: whether every sub-policy
    /// matched, that is whether the trace is to be dropped).
    pub(super) fn evaluate(&mut self, trace: &TraceView<'_>) -> bool {
        match &mut self.rule {
            Rule::AlwaysSample => true,
            Rule::StatusCode(codes) => any_span(trace.request, |_, span| {
                let code = span.status.as_ref().map(|s| s.code).unwrap_or(StatusCode::Unset as i32);
                codes.contains(&code)
            }),
            Rule::Latency { min_nanos, max_nanos } => {
                let duration = trace_duration(trace.request);
                duration >= *min_nanos && max_nanos.is_none_or(|max| duration <= max)
            }
            Rule::Probabilistic { below, salt } => u128::from(salted_hash(salt, trace.trace_id)) < *below,
            Rule::StringAttribute { key, matcher, invert } => {
                let found = any_attribute(trace.request, key, |v| {
                    otlp::as_str(v).is_some_and(|s| matcher.matches(s))
                });
                found != *invert
            }
            Rule::NumericAttribute { key, min, max, invert } => {
                let found = any_attribute(trace.request, key, |v| match &v.value {
                    Some(Value::IntValue(i)) => (*i as f64) >= *min && (*i as f64) <= *max,
                    Some(Value::DoubleValue(d)) => *d >= *min && *d <= *max,
                    _ => false,
                });
                found != *invert
            }
            Rule::BooleanAttribute { key, value, invert } => {
                let found = any_attribute(
                    trace.request,
                    key,
                    |v| matches!(v.value, Some(Value::BoolValue(b)) if b == *value),
                );
                found != *invert
            }
            Rule::RateLimiting { spans_per_second, used } => {
                let second = trace.now_unix_nanos / 1_000_000_000;
                if used.len() > RATE_STATE_PRUNE_AT {
                    used.retain(|_, (s, _)| *s == second);
                }
                let entry = used.entry(trace.tenant.clone()).or_insert((second, 0));
                if entry.0 != second {
                    *entry = (second, 0);
                }
                if entry.1.saturating_add(trace.spans) > *spans_per_second {
                    false
                } else {
                    entry.1 += trace.spans;
                    true
                }
            }
            Rule::SpanCount { min, max } => trace.spans >= *min && max.is_none_or(|max| trace.spans <= max),
            // As in the Collector, sub-policies run in order and stop at the first that does not
            // match: a rate limit placed after a condition spends budget only on traces that
            // meet the condition (a trace the `and` rejects is not kept, so uses no budget).
            Rule::And(subs) | Rule::Drop(subs) => subs.iter_mut().all(|p| p.evaluate(trace)),
            Rule::Or(subs) => {
                let mut any = false;
                for p in subs.iter_mut() {
                    any |= p.evaluate(trace);
                }
                any
            }
        }
    }
}

/// Compiles the policy at `path` (`policies[2]`, `policies[0].and.and_sub_policy[1]`).
pub(super) fn compile(cfg: &PolicyConfig, path: &str, top_level: bool) -> Result<Policy, ConfigError> {
    let kind = cfg.kind.as_str();
    if !POLICY_TYPES.contains(&kind) {
        return Err(ConfigError::new(
            join_path(path, "type"),
            format!("unknown policy type {kind:?} (known: {})", POLICY_TYPES.join(", ")),
        ));
    }
    if kind == "drop" && !top_level {
        return Err(ConfigError::new(
            join_path(path, "type"),
            "a drop policy is only allowed at the top level",
        ));
    }
    // A sub-configuration for another type than the one chosen is a mistake worth reporting.
    let present: [(&str, bool); 11] = [
        ("status_code", cfg.status_code.is_some()),
        ("latency", cfg.latency.is_some()),
        ("probabilistic", cfg.probabilistic.is_some()),
        ("string_attribute", cfg.string_attribute.is_some()),
        ("numeric_attribute", cfg.numeric_attribute.is_some()),
        ("boolean_attribute", cfg.boolean_attribute.is_some()),
        ("rate_limiting", cfg.rate_limiting.is_some()),
        ("span_count", cfg.span_count.is_some()),
        ("and", cfg.and.is_some()),
        ("or", cfg.or.is_some()),
        ("drop", cfg.drop.is_some()),
    ];
    if let Some((other, _)) = present.iter().find(|(name, set)| *set && *name != kind) {
        return Err(ConfigError::new(
            join_path(path, other),
            format!("the {other} settings do not apply to a policy of type {kind}"),
        ));
    }
    let sub = join_path(path, kind);
    let missing =
        || ConfigError::new(sub.clone(), format!("a policy of type {kind} needs its {kind} settings"));
    let rule = match kind {
        "always_sample" => Rule::AlwaysSample,
        "status_code" => {
            let c = cfg.status_code.as_ref().ok_or_else(missing)?;
            compile_status_codes(c, &sub)?
        }
        "latency" => {
            let c = cfg.latency.as_ref().ok_or_else(missing)?;
            if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                return Err(ConfigError::new(
                    join_path(&sub, "upper_threshold_ms"),
                    format!("must be 0 (no upper bound) or at least threshold_ms ({})", c.threshold_ms),
                ));
            }
            Rule::Latency {
                min_nanos: c.threshold_ms.saturating_mul(1_000_000),
                max_nanos: (c.upper_threshold_ms != 0)
                    .then(|| c.upper_threshold_ms.saturating_mul(1_000_000)),
            }
        }
        "probabilistic" => {
            let c = cfg.probabilistic.as_ref().ok_or_else(missing)?;
            let pct = c.sampling_percentage;
            if !(0.0..=100.0).contains(&pct) {
                return Err(ConfigError::new(
                    join_path(&sub, "sampling_percentage"),
                    format!("must be between 0 and 100, not {pct}"),
                ));
            }
            // Sampled when the 64-bit hash falls below pct% of 2^64.
            let below = ((pct / 100.0) * 18_446_744_073_709_551_616.0) as u128;
            Rule::Probabilistic { below, salt: c.hash_salt.as_bytes().to_vec() }
        }
        "string_attribute" => {
            let c = cfg.string_attribute.as_ref().ok_or_else(missing)?;
            check_key(&c.key, &sub)?;
            if c.values.is_empty() {
                return Err(ConfigError::new(join_path(&sub, "values"), "at least one value is required"));
            }
            let matcher = if c.enabled_regex_matching {
                let patterns = c
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| compile_regex(&join_path(&sub, &format!("values[{i}]")), v))
                    .collect::<Result<Vec<_>, _>>()?;
                StringMatcher::Regex(patterns)
            } else {
                StringMatcher::Exact(c.values.iter().cloned().collect())
            };
            Rule::StringAttribute { key: c.key.clone(), matcher, invert: c.invert_match }
        }
        "numeric_attribute" => {
            let c = cfg.numeric_attribute.as_ref().ok_or_else(missing)?;
            check_key(&c.key, &sub)?;
            if c.min_value.is_none() && c.max_value.is_none() {
                return Err(ConfigError::new(
                    sub.clone(),
                    "at least one of min_value and max_value is required",
                ));
            }
            let min = c.min_value.unwrap_or(f64::NEG_INFINITY);
            let max = c.max_value.unwrap_or(f64::INFINITY);
            if min.is_nan() || max.is_nan() || min > max {
                return Err(ConfigError::new(
                    join_path(&sub, "max_value"),
                    format!("must be at least min_value ({min})"),
                ));
            }
            Rule::NumericAttribute { key: c.key.clone(), min, max, invert: c.invert_match }
        }
        "boolean_attribute" => {
            let c = cfg.boolean_attribute.as_ref().ok_or_else(missing)?;
            check_key(&c.key, &sub)?;
            Rule::BooleanAttribute { key: c.key.clone(), value: c.value, invert: c.invert_match }
        }
        "rate_limiting" => {
            let c = cfg.rate_limiting.as_ref().ok_or_else(missing)?;
            if c.spans_per_second == 0 {
                return Err(ConfigError::new(join_path(&sub, "spans_per_second"), "must be above 0"));
            }
            Rule::RateLimiting { spans_per_second: c.spans_per_second, used: HashMap::new() }
        }
        "span_count" => {
            let c = cfg.span_count.as_ref().ok_or_else(missing)?;
            if c.max_spans != 0 && c.max_spans < c.min_spans {
                return Err(ConfigError::new(
                    join_path(&sub, "max_spans"),
                    format!("must be 0 (no maximum) or at least min_spans ({})", c.min_spans),
                ));
            }
            Rule::SpanCount { min: c.min_spans, max: (c.max_spans != 0).then_some(c.max_spans) }
        }
        "and" => {
            let c = cfg.and.as_ref().ok_or_else(missing)?;
            Rule::And(compile_subs(&c.and_sub_policy, &join_path(&sub, "and_sub_policy"))?)
        }
        "or" => {
            let c = cfg.or.as_ref().ok_or_else(missing)?;
            Rule::Or(compile_subs(&c.or_sub_policy, &join_path(&sub, "or_sub_policy"))?)
        }
        _ => {
            let c = cfg.drop.as_ref().ok_or_else(missing)?;
            Rule::Drop(compile_subs(&c.drop_sub_policy, &join_path(&sub, "drop_sub_policy"))?)
        }
    };
    let name = cfg.name.clone().unwrap_or_else(|| kind.to_string());
    Ok(Policy { name, rule })
}

fn compile_subs(subs: &[PolicyConfig], path: &str) -> Result<Vec<Policy>, ConfigError> {
    if subs.is_empty() {
        return Err(ConfigError::new(path, "at least one sub-policy is required"));
    }
    subs.iter().enumerate().map(|(i, c)| compile(c, &format!("{path}[{i}]"), false)).collect()
}

fn compile_status_codes(c: &StatusCodeConfig, path: &str) -> Result<Rule, ConfigError> {
    if c.status_codes.is_empty() {
        return Err(ConfigError::new(
            join_path(path, "status_codes"),
            "at least one status code is required",
        ));
    }
    let mut codes = Vec::with_capacity(c.status_codes.len());
    for (i, text) in c.status_codes.iter().enumerate() {
        let code = match text.to_ascii_uppercase().as_str() {
            "OK" => StatusCode::Ok,
            "ERROR" => StatusCode::Error,
            "UNSET" => StatusCode::Unset,
            _ => {
                return Err(ConfigError::new(
                    join_path(path, &format!("status_codes[{i}]")),
                    format!("unknown status code {text:?} (known: OK, ERROR, UNSET)"),
                ));
            }
        };
        codes.push(code as i32);
    }
    Ok(Rule::StatusCode(codes))
}

fn check_key(key: &str, path: &str) -> Result<(), ConfigError> {
    if key.is_empty() {
        return Err(ConfigError::new(join_path(path, "key"), "must not be empty"));
    }
    Ok(())
}

// ---- evaluation helpers ----

fn any_span(
    request: &ExportTraceServiceRequest,
    mut f: impl FnMut(&[KeyValue], &opentelemetry_proto::tonic::trace::v1::Span) -> bool,
) -> bool {
    request.resource_spans.iter().any(|rs| {
        let resource = otlp::resource_attributes(&rs.resource);
        rs.scope_spans.iter().flat_map(|ss| &ss.spans).any(|span| f(resource, span))
    })
}

/// Whether any span of the trace, or the resource of any span, has `key` with a value `f`
/// accepts.
fn any_attribute(request: &ExportTraceServiceRequest, key: &str, f: impl Fn(&AnyValue) -> bool) -> bool {
    any_span(request, |resource, span| {
        otlp::get(&span.attributes, key).is_some_and(&f) || otlp::get(resource, key).is_some_and(&f)
    })
}

/// The trace's duration: its latest span end minus its earliest span start (0 without spans
/// or with inverted times).
fn trace_duration(request: &ExportTraceServiceRequest) -> u64 {
    let mut start = u64::MAX;
    let mut end = 0u64;
    for span in request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
        start = start.min(span.start_time_unix_nano);
        end = end.max(span.end_time_unix_nano);
    }
    end.saturating_sub(start)
}

/// FNV-1a over the salt then the trace id, finished with a 64-bit mixer so that every output
/// bit depends on every input bit. Deterministic: every instance decides a trace the same way.
pub(super) fn salted_hash(salt: &[u8], trace_id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.iter().chain(trace_id) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
