//! The `probabilistic_sampler` processor: stateless head sampling of spans and log records,
//! consistent by trace id, following the OpenTelemetry probability sampling specification
//! (W3C `tracestate` member `ot` with `th`, the 56-bit rejection threshold, and `rv`, explicit
//! 56-bit randomness).
//!
//! An item is kept when its randomness R is at least the threshold T (both in [0, 2^56); the
//! sampling probability is (2^56 − T) / 2^56). R comes from `rv` when present, else from the
//! least-significant 56 bits of the trace id (or, in `hash_seed` mode, from an FNV hash of the
//! trace id). Every instance with the same settings decides the same trace the same way.
//!
//! Kept spans get their `ot=th:` updated to the effective threshold; kept log records get the
//! `sampling.threshold` attribute (and `sampling.randomness` when the randomness did not come
//! from the trace id).

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{KeyValue, any_value::Value},
    logs::v1::LogRecord,
    trace::v1::Span,
};
use pharos_core::Signal;
use serde::Deserialize;

use super::{Batch, ConfigError, Context, Data, Processor, otlp};

/// 2^56: thresholds and randomness are 56-bit; a threshold of 2^56 samples nothing.
const MAX_ADJUSTED: u64 = 1 << 56;
const NEVER: u64 = MAX_ADJUSTED;
const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED as f64;
/// The hash modes use 14 bits of their hash (as the Collector does).
const HASH_BUCKETS: u32 = 1 << 14;

/// Log record attributes carrying the threshold and randomness (the Collector's names).
const LOG_THRESHOLD: &str = "sampling.threshold";
const LOG_RANDOMNESS: &str = "sampling.randomness";
/// The OpenTracing span attribute that forces (non-zero) or forbids (zero) sampling.
const SAMPLING_PRIORITY: &str = "sampling.priority";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    sampling_percentage: f64,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    hash_seed: Option<u32>,
    #[serde(default = "default_precision")]
    sampling_precision: u32,
    #[serde(default = "default_fail_closed")]
    fail_closed: bool,
    #[serde(default)]
    attribute_source: Option<AttributeSource>,
    #[serde(default)]
    from_attribute: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Proportional,
    Equalizing,
    HashSeed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum AttributeSource {
    #[serde(rename = "traceID")]
    TraceId,
    #[serde(rename = "record")]
    Record,
}

fn default_precision() -> u32 {
    4
}

fn default_fail_closed() -> bool {
    true
}

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    if signal == Signal::Metrics {
        return Err(super::wrong_signal("probabilistic_sampler", signal, "traces and logs"));
    }
    let cfg: Config = super::parse_config(config)?;
    Ok(Box::new(ProbabilisticSampler::new(&cfg, signal)?))
}

struct ProbabilisticSampler {
    mode: Mode,
    /// The configured probability, in [2^-56, 1] (0 when `never`).
    ratio: f64,
    /// Nothing is sampled (0%).
    never: bool,
    /// The configured threshold (equalizing and hash_seed modes).
    fixed_threshold: u64,
    precision: u32,
    seed: u32,
    fail_closed: bool,
    /// Logs: hash `from_attribute` even when the record has a trace id.
    logs_from_record: bool,
    from_attribute: Option<String>,
}

impl ProbabilisticSampler {
    fn new(cfg: &Config, signal: Signal) -> Result<Self, ConfigError> {
        let pct = cfg.sampling_percentage;
        if !pct.is_finite() || !(0.0..=100.0).contains(&pct) {
            return Err(ConfigError::new(
                "sampling_percentage",
                format!("must be between 0 and 100, not {pct}"),
            ));
        }
        let ratio = pct / 100.0;
        if ratio > 0.0 && ratio < MIN_PROBABILITY {
            return Err(ConfigError::new(
                "sampling_percentage",
                format!("{pct} is below the smallest representable probability (2^-56)"),
            ));
        }
        if !(1..=14).contains(&cfg.sampling_precision) {
            return Err(ConfigError::new(
                "sampling_precision",
                format!("must be between 1 and 14 hexadecimal digits, not {}", cfg.sampling_precision),
            ));
        }
        if signal == Signal::Traces {
            if cfg.attribute_source.is_some() {
                return Err(ConfigError::new("attribute_source", "applies to logs pipelines only"));
            }
            if cfg.from_attribute.is_some() {
                return Err(ConfigError::new("from_attribute", "applies to logs pipelines only"));
            }
        }
        let logs_from_record = cfg.attribute_source == Some(AttributeSource::Record);
        let from_attribute = cfg.from_attribute.clone().filter(|a| !a.is_empty());
        if logs_from_record && from_attribute.is_none() {
            return Err(ConfigError::new(
                "from_attribute",
                "attribute_source: record needs the attribute to hash",
            ));
        }
        // As in the Collector: without a mode, a hash seed (or hashing a record attribute)
        // chooses the hash_seed mode, anything else the proportional mode.
        let mode = cfg.mode.unwrap_or(if cfg.hash_seed.is_some() || logs_from_record {
            Mode::HashSeed
        } else {
            Mode::Proportional
        });
        let never = pct == 0.0;
        let fixed_threshold = match mode {
            _ if never => NEVER,
            Mode::HashSeed => {
                // The Collector's scaling, in 32-bit floating point, rounded down.
                let accepted = ((pct as f32) * (HASH_BUCKETS as f32 / 100.0)) as u32;
                if accepted == 0 { NEVER } else { u64::from(HASH_BUCKETS - accepted.min(HASH_BUCKETS)) << 42 }
            }
            Mode::Equalizing | Mode::Proportional => threshold_for_probability(ratio, cfg.sampling_precision),
        };
        Ok(ProbabilisticSampler {
            mode,
            ratio,
            never,
            fixed_threshold,
            precision: cfg.sampling_precision,
            seed: cfg.hash_seed.unwrap_or(0),
            fail_closed: cfg.fail_closed,
            logs_from_record,
            from_attribute,
        })
    }

    /// The threshold to apply to an item that arrives with `existing` (already checked
    /// against the item's randomness).
    fn threshold(&self, existing: Option<u64>) -> u64 {
        if self.never {
            return NEVER;
        }
        match self.mode {
            Mode::Proportional => {
                // Probabilities multiply: a span already sampled at 50% and sampled here at
                // 25% ends at 12.5%.
                let incoming = existing.map_or(1.0, probability_of);
                threshold_for_probability(incoming * self.ratio, self.precision)
            }
            Mode::Equalizing | Mode::HashSeed => self.fixed_threshold,
        }
    }

    /// Decides one item from what it carries (`state`, `Err` when malformed), the randomness
    /// of its trace id (`natural`, consistent modes) and hashed randomness (`hashed`: the
    /// hash_seed mode, or logs without a trace id).
    fn decide(
        &self,
        state: Result<Carried, ()>,
        natural: Option<u64>,
        hashed: Option<u64>,
        priority: Priority,
    ) -> Decision {
        let mut existing = None;
        let mut randomness = None;
        let mut write_rv = None;
        let mut ok = match state {
            Err(()) => false,
            Ok(carried) if self.mode == Mode::HashSeed => {
                // Items already carrying OpenTelemetry sampling data belong to a consistent
                // mode; hashing would contradict them (the Collector's rule).
                if carried.rv.is_some() || carried.th.is_some() {
                    false
                } else {
                    randomness = hashed;
                    write_rv = hashed;
                    hashed.is_some()
                }
            }
            Ok(carried) => {
                existing = carried.th;
                randomness = carried.rv.or(natural).or(hashed);
                if carried.rv.is_none() && natural.is_none() {
                    write_rv = hashed;
                }
                randomness.is_some()
            }
        };
        let mut clear_th = false;
        if let (Some(th), Some(r)) = (existing, randomness)
            && r < th
        {
            // The item should not have passed the earlier sampler: its threshold is a lie.
            ok = false;
            existing = None;
            clear_th = true;
        }
        let mut threshold = if ok {
            self.threshold(existing)
        } else if self.fail_closed {
            NEVER
        } else {
            0
        };
        match priority {
            Priority::Keep => threshold = 0,
            Priority::Drop => threshold = NEVER,
            Priority::Defer => {}
        }
        // Without randomness (only reachable failing open) everything but NEVER keeps.
        let keep = randomness.unwrap_or(MAX_ADJUSTED - 1) >= threshold;
        // A probability never rises: a higher arriving threshold stays.
        let write_th = keep.then(|| existing.map_or(threshold, |t| t.max(threshold)));
        Decision { keep, error: !ok, clear_th, write_th, write_rv: if keep { write_rv } else { None } }
    }

    fn sample_span(&self, span: &mut Span, counts: &mut Counts) -> bool {
        let priority = span_priority(&span.attributes);
        let parsed = TraceState::parse(&span.trace_state);
        let natural = randomness_from_trace_id(&span.trace_id);
        let hashed = (self.mode == Mode::HashSeed).then(|| hashed_randomness(&span.trace_id, self.seed));
        let carried = parsed.as_ref().map(|ts| Carried { th: ts.th, rv: ts.rv }).map_err(|_| ());
        let d = self.decide(carried, natural, hashed, priority);
        counts.errors += u64::from(d.error);
        if !d.keep {
            counts.dropped += 1;
            return false;
        }
        // A malformed tracestate passed through (fail open) is left as it came.
        if let Ok(mut ts) = parsed {
            if d.clear_th {
                ts.th = None;
            }
            if let Some(th) = d.write_th {
                ts.th = Some(th);
            }
            if let Some(rv) = d.write_rv {
                ts.rv = Some(rv);
            }
            span.trace_state = ts.serialize();
        }
        true
    }

    fn sample_log(&self, record: &mut LogRecord, counts: &mut Counts) -> bool {
        let carried = log_carried(&record.attributes);
        let trace_usable = !self.logs_from_record;
        let natural = if trace_usable { randomness_from_trace_id(&record.trace_id) } else { None };
        let hashed = match (self.mode, natural) {
            (Mode::HashSeed, Some(_)) => Some(hashed_randomness(&record.trace_id, self.seed)),
            (_, Some(_)) => None,
            (_, None) => self.log_hash_input(record).map(|bytes| hashed_randomness(&bytes, self.seed)),
        };
        let d = self.decide(carried, natural, hashed, Priority::Defer);
        counts.errors += u64::from(d.error);
        if !d.keep {
            counts.dropped += 1;
            return false;
        }
        if carried.is_ok() {
            if d.clear_th {
                otlp::remove(&mut record.attributes, LOG_THRESHOLD);
            }
            if let Some(th) = d.write_th {
                otlp::upsert(&mut record.attributes, LOG_THRESHOLD, otlp::string_value(encode_threshold(th)));
            }
            if let Some(rv) = d.write_rv {
                otlp::upsert(
                    &mut record.attributes,
                    LOG_RANDOMNESS,
                    otlp::string_value(format!("{rv:014x}")),
                );
            }
        }
        true
    }

    /// What a log record without a usable trace id is hashed on: `from_attribute` when set
    /// and present, else its body text and timestamp (`None` when both are empty).
    fn log_hash_input(&self, record: &LogRecord) -> Option<Vec<u8>> {
        if let Some(key) = &self.from_attribute
            && let Some(value) = otlp::get(&record.attributes, key)
        {
            return Some(match &value.value {
                Some(Value::BytesValue(b)) => b.clone(),
                _ => otlp::to_text(value).into_bytes(),
            });
        }
        let body = record.body.as_ref().map(otlp::to_text).unwrap_or_default();
        let time =
            if record.time_unix_nano != 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
        if body.is_empty() && time == 0 {
            return None;
        }
        let mut bytes = body.into_bytes();
        bytes.extend_from_slice(&time.to_le_bytes());
        Some(bytes)
    }

    fn sample_traces(&self, r: &mut ExportTraceServiceRequest, counts: &mut Counts) {
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain_mut(|span| self.sample_span(span, counts));
            }
        }
        // Drops the scopes and resources left empty.
        otlp::retain_spans(r, |_, _| true);
    }

    fn sample_logs(&self, r: &mut ExportLogsServiceRequest, counts: &mut Counts) {
        for rl in &mut r.resource_logs {
            for sl in &mut rl.scope_logs {
                sl.log_records.retain_mut(|record| self.sample_log(record, counts));
            }
        }
        otlp::retain_logs(r, |_, _| true);
    }
}

impl Processor for ProbabilisticSampler {
    fn process(&mut self, mut batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        let mut counts = Counts::default();
        match &mut batch.data {
            Data::Traces(r) => self.sample_traces(r, &mut counts),
            Data::Logs(r) => self.sample_logs(r, &mut counts),
            Data::Metrics(_) => {}
        }
        ctx.drop_items("sampled_out", counts.dropped);
        ctx.count("sampling_error", counts.errors);
        if !batch.data.is_empty() {
            out.push(batch);
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    dropped: u64,
    errors: u64,
}

/// The sampling data an item arrives with.
#[derive(Debug, Clone, Copy)]
struct Carried {
    th: Option<u64>,
    rv: Option<u64>,
}

#[derive(Debug)]
struct Decision {
    keep: bool,
    /// The item's sampling data was unusable (malformed, missing randomness, inconsistent).
    error: bool,
    clear_th: bool,
    write_th: Option<u64>,
    write_rv: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    Keep,
    Drop,
    Defer,
}

/// `sampling.priority` on a span: 0 drops it, above 0 keeps it, anything else defers.
fn span_priority(attributes: &[KeyValue]) -> Priority {
    let number = match otlp::get(attributes, SAMPLING_PRIORITY).and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(i)) => *i as f64,
        Some(Value::DoubleValue(d)) => *d,
        Some(Value::StringValue(s)) => match s.trim().parse::<f64>() {
            Ok(n) => n,
            Err(_) => return Priority::Defer,
        },
        _ => return Priority::Defer,
    };
    if number == 0.0 {
        Priority::Drop
    } else if number > 0.0 {
        Priority::Keep
    } else {
        Priority::Defer
    }
}

/// The sampling data of a log record: `sampling.threshold` and `sampling.randomness`.
fn log_carried(attributes: &[KeyValue]) -> Result<Carried, ()> {
    let read = |key: &str, parse: fn(&str) -> Option<u64>| -> Result<Option<u64>, ()> {
        match otlp::get(attributes, key) {
            None => Ok(None),
            Some(v) => otlp::as_str(v).and_then(parse).map(Some).ok_or(()),
        }
    };
    Ok(Carried { th: read(LOG_THRESHOLD, parse_threshold)?, rv: read(LOG_RANDOMNESS, parse_randomness)? })
}

/// The least-significant 56 bits of a valid trace id (16 bytes, not all zero).
fn randomness_from_trace_id(id: &[u8]) -> Option<u64> {
    let id: &[u8; 16] = id.try_into().ok()?;
    if id.iter().all(|b| *b == 0) {
        return None;
    }
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&id[9..]);
    Some(u64::from_be_bytes(low))
}

/// 56 bits of randomness from a 32-bit FNV-1a hash of the seed (4 bytes, little-endian) then
/// `bytes`, as the Collector's hash_seed mode: its 14 low bits decide (kept when below the
/// percentage of 2^14), placed on top so that the usual `R >= T` test gives the same decision;
/// the remaining bits are filled from the rest of the hash.
fn hashed_randomness(bytes: &[u8], seed: u32) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in seed.to_le_bytes().iter().chain(bytes) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let bucket = u64::from(h & (HASH_BUCKETS - 1));
    let top = u64::from(HASH_BUCKETS - 1) - bucket;
    let mut fill = u64::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    fill ^= fill >> 29;
    (top << 42) | (fill & ((1 << 42) - 1))
}

/// The sampling probability of a threshold.
fn probability_of(threshold: u64) -> f64 {
    (MAX_ADJUSTED - threshold.min(MAX_ADJUSTED)) as f64 / MAX_ADJUSTED as f64
}

/// The threshold of probability `p`, rounded to `precision` significant hexadecimal digits
/// (leading zeros of the threshold do not count); NEVER below 2^-56.
fn threshold_for_probability(p: f64, precision: u32) -> u64 {
    if p.is_nan() || p < MIN_PROBABILITY {
        return NEVER;
    }
    if p >= 1.0 {
        return 0;
    }
    let kept = ((p * MAX_ADJUSTED as f64).round() as u64).clamp(1, MAX_ADJUSTED);
    let reject = MAX_ADJUSTED - kept;
    if reject == 0 {
        return 0;
    }
    // reject < 2^56: at least 8 leading zero bits in a u64.
    let leading_digits = (reject.leading_zeros() - 8) / 4;
    let digits = leading_digits + precision;
    if digits >= 14 {
        return reject;
    }
    let shift = 4 * (14 - digits);
    let half = 1u64 << (shift - 1);
    let rounded = ((reject + half) >> shift) << shift;
    // Rounding up to 2^56 would sample nothing: round down instead.
    if rounded >= MAX_ADJUSTED { (reject >> shift) << shift } else { rounded }
}

/// `th` as written: up to 14 hex digits without trailing zeros, `0` for always.
fn encode_threshold(threshold: u64) -> String {
    if threshold == 0 {
        return "0".to_string();
    }
    let digits = format!("{:014x}", threshold.min(MAX_ADJUSTED - 1));
    digits.trim_end_matches('0').to_string()
}

/// `th`: 1 to 14 hex digits, padded with trailing zeros to 56 bits.
fn parse_threshold(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 14 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u64::from_str_radix(text, 16).ok()?;
    Some(value << (4 * (14 - text.len())))
}

/// `rv`: exactly 14 hex digits.
fn parse_randomness(text: &str) -> Option<u64> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// A W3C `tracestate` with the OpenTelemetry member (`ot=th:...;rv:...`) taken apart.
#[derive(Debug, Default, Clone, PartialEq)]
struct TraceState {
    th: Option<u64>,
    rv: Option<u64>,
    /// Other `ot` fields (`key:value`), in order.
    ot_extra: Vec<String>,
    /// Other vendors' members (`key=value`), in order.
    others: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MalformedTraceState;

impl TraceState {
    fn parse(raw: &str) -> Result<TraceState, MalformedTraceState> {
        let mut ts = TraceState::default();
        let mut seen_ot = false;
        for member in raw.split(',') {
            let member = member.trim_matches(|c| c == ' ' || c == '\t');
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=').ok_or(MalformedTraceState)?;
            if key.is_empty() {
                return Err(MalformedTraceState);
            }
            if key != "ot" {
                ts.others.push(member.to_string());
                continue;
            }
            if seen_ot {
                return Err(MalformedTraceState);
            }
            seen_ot = true;
            for field in value.split(';').filter(|f| !f.is_empty()) {
                let (name, text) = field.split_once(':').ok_or(MalformedTraceState)?;
                match name {
                    "th" if ts.th.is_none() => {
                        ts.th = Some(parse_threshold(text).ok_or(MalformedTraceState)?)
                    }
                    "rv" if ts.rv.is_none() => {
                        ts.rv = Some(parse_randomness(text).ok_or(MalformedTraceState)?)
                    }
                    "th" | "rv" | "" => return Err(MalformedTraceState),
                    _ => ts.ot_extra.push(field.to_string()),
                }
            }
        }
        Ok(ts)
    }

    /// The `ot` member first (W3C: a changed member moves to the front), then the others.
    fn serialize(&self) -> String {
        let mut ot = Vec::new();
        if let Some(th) = self.th {
            ot.push(format!("th:{}", encode_threshold(th)));
        }
        if let Some(rv) = self.rv {
            ot.push(format!("rv:{rv:014x}"));
        }
        ot.extend(self.ot_extra.iter().cloned());
        let mut members = Vec::with_capacity(self.others.len() + 1);
        if !ot.is_empty() {
            members.push(format!("ot={}", ot.join(";")));
        }
        members.extend(self.others.iter().cloned());
        members.join(",")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::{
        logs::v1::{ResourceLogs, ScopeLogs},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Status, span::Event},
    };
    use pharos_core::Tenant;

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", Value::StringValue(service.into()))],
            ..Default::default()
        })
    }

    /// A 16-byte trace id whose last 7 bytes (the randomness) are `random`.
    fn trace_id(random: u64) -> Vec<u8> {
        let mut id = vec![0x5a; 9];
        id.extend_from_slice(&random.to_be_bytes()[1..]);
        id
    }

    fn span(id: Vec<u8>, trace_state: &str) -> Span {
        Span {
            trace_id: id,
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            trace_state: trace_state.into(),
            name: "GET /api/orders".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_120_000_000,
            attributes: vec![
                kv("http.request.method", Value::StringValue("GET".into())),
                kv("http.route", Value::StringValue("/api/orders".into())),
            ],
            events: vec![Event { name: "cache.miss".into(), ..Default::default() }],
            status: Some(Status::default()),
            ..Default::default()
        }
    }

    fn traces(spans: Vec<Span>) -> Data {
        Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("orders"),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn log(id: Vec<u8>, body: &str, time: u64) -> LogRecord {
        LogRecord {
            time_unix_nano: time,
            severity_text: "INFO".into(),
            body: Some(AnyValue { value: Some(Value::StringValue(body.into())) }),
            attributes: vec![kv("http.route", Value::StringValue("/api/orders".into()))],
            trace_id: id,
            ..Default::default()
        }
    }

    fn logs(records: Vec<LogRecord>) -> Data {
        Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("orders"),
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn sampler(yaml: &str, signal: Signal) -> Box<dyn Processor> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml parses");
        build(&value, signal).expect("test config is valid")
    }

    fn config_error(yaml: &str, signal: Signal) -> ConfigError {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml parses");
        match build(&value, signal) {
            Ok(_) => panic!("config should be rejected: {yaml}"),
            Err(e) => e,
        }
    }

    fn run(p: &mut dyn Processor, data: Data) -> (Vec<Batch>, Context) {
        let mut ctx = Context::at(1_700_000_000_000_000_000);
        let mut out = Vec::new();
        p.process(Batch::new(Tenant::default_tenant(), 5, data), &mut ctx, &mut out);
        (out, ctx)
    }

    fn out_spans(out: &[Batch]) -> Vec<Span> {
        out.iter()
            .flat_map(|b| match &b.data {
                Data::Traces(r) => r
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| ss.spans.clone())
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn out_logs(out: &[Batch]) -> Vec<LogRecord> {
        out.iter()
            .flat_map(|b| match &b.data {
                Data::Logs(r) => r
                    .resource_logs
                    .iter()
                    .flat_map(|rl| &rl.scope_logs)
                    .flat_map(|sl| sl.log_records.clone())
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// A deterministic stream of random-looking 16-byte trace ids.
    fn random_ids(n: usize, mut state: u64) -> Vec<Vec<u8>> {
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..n).map(|_| [next().to_be_bytes(), next().to_be_bytes()].concat()).collect()
    }

    #[test]
    fn threshold_encoding_matches_the_specification_examples() {
        assert_eq!(encode_threshold(threshold_for_probability(0.25, 4)), "c");
        assert_eq!(encode_threshold(threshold_for_probability(0.5, 4)), "8");
        assert_eq!(encode_threshold(threshold_for_probability(1.0, 4)), "0");
        assert_eq!(encode_threshold(threshold_for_probability(0.1, 4)), "e666");
        assert_eq!(encode_threshold(threshold_for_probability(1.0 / 3.0, 4)), "aaab");
        // Leading zeros do not count as precision: 99% keeps 4 significant digits.
        assert_eq!(encode_threshold(threshold_for_probability(0.99, 4)), "028f6");
        assert_eq!(threshold_for_probability(0.0, 4), NEVER);
        assert_eq!(parse_threshold("c"), Some(0xc0_0000_0000_0000));
        assert_eq!(parse_threshold("0"), Some(0));
        assert_eq!(parse_threshold("+c"), None);
        assert_eq!(parse_threshold("123456789abcdef"), None, "15 digits");
        assert_eq!(parse_randomness("9b8233f7e3a151"), Some(0x9b_8233_f7e3_a151));
        assert_eq!(parse_randomness("9b82"), None);
    }

    #[test]
    fn proportional_ten_percent_keeps_about_ten_percent_of_traces() {
        let mut p = sampler("sampling_percentage: 10", Signal::Traces);
        let spans = random_ids(20_000, 7).into_iter().map(|id| span(id, "")).collect();
        let (out, ctx) = run(p.as_mut(), traces(spans));
        let kept = out_spans(&out).len() as u64;
        assert!((1800..=2200).contains(&kept), "kept {kept} of 20000");
        assert_eq!(ctx.dropped_for("sampled_out"), 20_000 - kept);
        assert!(out_spans(&out).iter().all(|s| s.trace_state == "ot=th:e666"));
    }

    #[test]
    fn hash_seed_ten_percent_keeps_about_ten_percent_of_traces() {
        let mut p = sampler("{sampling_percentage: 10, mode: hash_seed, hash_seed: 22}", Signal::Traces);
        let spans = random_ids(20_000, 11).into_iter().map(|id| span(id, "")).collect();
        let (out, _) = run(p.as_mut(), traces(spans));
        let kept = out_spans(&out);
        assert!((1800..=2200).contains(&kept.len()), "kept {} of 20000", kept.len());
        // The hash seed mode records the randomness it used, and the threshold.
        let first = TraceState::parse(&kept[0].trace_state).expect("written tracestate parses");
        assert_eq!(first.th, parse_threshold("e668"));
        assert!(first.rv.is_some_and(|rv| rv >= 0xe6_6800_0000_0000));
    }

    #[test]
    fn same_trace_id_gets_the_same_decision_across_batches_and_instances() {
        for config in ["sampling_percentage: 30", "{sampling_percentage: 30, mode: hash_seed, hash_seed: 7}"]
        {
            let ids = random_ids(500, 3);
            let decide = |p: &mut dyn Processor| -> HashSet<Vec<u8>> {
                let (out, _) = run(p, traces(ids.iter().map(|id| span(id.clone(), "")).collect()));
                out_spans(&out).into_iter().map(|s| s.trace_id).collect()
            };
            let mut first = sampler(config, Signal::Traces);
            let mut second = sampler(config, Signal::Traces);
            let a = decide(first.as_mut());
            let b = decide(first.as_mut());
            let c = decide(second.as_mut());
            assert!(!a.is_empty() && a.len() < ids.len());
            assert_eq!(a, b, "{config}: same instance, another batch");
            assert_eq!(a, c, "{config}: another instance");
        }
    }

    #[test]
    fn kept_span_gets_ot_threshold_and_keeps_other_vendors() {
        let mut p = sampler("sampling_percentage: 25", Signal::Traces);
        let keep = span(trace_id(0xd0_0000_0000_0000), "vendor=abc,ot=foo:bar");
        let drop = span(trace_id(0xbf_ffff_ffff_ffff), "");
        let (out, ctx) = run(p.as_mut(), traces(vec![keep, drop]));
        let kept = out_spans(&out);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].trace_state, "ot=th:c;foo:bar,vendor=abc");
        assert_eq!(ctx.dropped_for("sampled_out"), 1);
    }

    #[test]
    fn proportional_multiplies_with_an_arriving_threshold() {
        let mut p = sampler("sampling_percentage: 50", Signal::Traces);
        // Already sampled at 50% (th:8): now 25% overall (th:c).
        let kept = span(trace_id(0x5), "ot=th:8;rv:d0000000000000");
        let dropped = span(trace_id(0x5), "ot=th:8;rv:9b8233f7e3a151");
        let (out, _) = run(p.as_mut(), traces(vec![kept, dropped]));
        let spans = out_spans(&out);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].trace_state, "ot=th:c;rv:d0000000000000");
    }

    #[test]
    fn explicit_rv_takes_precedence_over_the_trace_id() {
        let mut p = sampler("sampling_percentage: 50", Signal::Traces);
        // The trace id alone would be dropped (low bits zero), rv says keep.
        let s = span(trace_id(0x1), "ot=th:0;rv:9b8233f7e3a151");
        let (out, _) = run(p.as_mut(), traces(vec![s]));
        assert_eq!(out_spans(&out)[0].trace_state, "ot=th:8;rv:9b8233f7e3a151");
    }

    #[test]
    fn equalizing_keeps_a_lower_arriving_probability() {
        let mut p = sampler("{sampling_percentage: 25, mode: equalizing}", Signal::Traces);
        // Arrived at 12.5% (th:e): passes unchanged, its probability is already below 25%.
        let low = span(trace_id(0xf0_0000_0000_0000), "ot=th:e");
        // Arrived unsampled: sampled at 25%.
        let fresh = span(trace_id(0xd0_0000_0000_0000), "");
        let (out, _) = run(p.as_mut(), traces(vec![low, fresh]));
        let states: Vec<String> = out_spans(&out).into_iter().map(|s| s.trace_state).collect();
        assert_eq!(states, ["ot=th:e", "ot=th:c"]);
    }

    #[test]
    fn inconsistent_arriving_threshold_is_refused_when_failing_closed() {
        // th:8 claims 50% sampling, but the randomness (0x10...) is below it.
        let inconsistent = || span(trace_id(0x10_0000_0000_0000), "ot=th:8");
        let mut closed = sampler("sampling_percentage: 100", Signal::Traces);
        let (out, ctx) = run(closed.as_mut(), traces(vec![inconsistent()]));
        assert!(out.is_empty());
        assert_eq!(ctx.dropped_for("sampled_out"), 1);
        assert_eq!(ctx.counted_for("sampling_error"), 1);

        let mut open = sampler("{sampling_percentage: 100, fail_closed: false}", Signal::Traces);
        let (out, _) = run(open.as_mut(), traces(vec![inconsistent()]));
        assert_eq!(out_spans(&out)[0].trace_state, "ot=th:0", "the false threshold is replaced");
    }

    #[test]
    fn malformed_tracestate_fails_closed_or_passes_untouched() {
        let states = ["ot=th:xyz", "ot=th:8;th:c", "ot=rv:123", "novalue", "ot=th:1,ot=th:2", "ot=:8"];
        let mut closed = sampler("sampling_percentage: 100", Signal::Traces);
        let spans: Vec<Span> = states.iter().map(|st| span(trace_id(0xff), st)).collect();
        let (out, ctx) = run(closed.as_mut(), traces(spans.clone()));
        assert!(out.is_empty());
        assert_eq!(ctx.counted_for("sampling_error"), states.len() as u64);

        let mut open = sampler("{sampling_percentage: 100, fail_closed: false}", Signal::Traces);
        let (out, _) = run(open.as_mut(), traces(spans));
        let kept: Vec<String> = out_spans(&out).into_iter().map(|s| s.trace_state).collect();
        assert_eq!(kept, states);
    }

    #[test]
    fn missing_randomness_fails_closed() {
        let mut p = sampler("sampling_percentage: 100", Signal::Traces);
        let (out, ctx) = run(
            p.as_mut(),
            traces(vec![span(vec![0; 16], ""), span(Vec::new(), ""), span(vec![1, 2, 3], "")]),
        );
        assert!(out.is_empty());
        assert_eq!(ctx.dropped_for("sampled_out"), 3);
    }

    #[test]
    fn hash_seed_mode_refuses_spans_carrying_otel_sampling_data() {
        let mut p = sampler("{sampling_percentage: 100, mode: hash_seed}", Signal::Traces);
        let (out, ctx) =
            run(p.as_mut(), traces(vec![span(trace_id(7), "ot=th:0"), span(trace_id(8), "vendor=x")]));
        assert_eq!(out_spans(&out).len(), 1);
        assert_eq!(ctx.counted_for("sampling_error"), 1);
    }

    #[test]
    fn sampling_priority_attribute_forces_the_decision() {
        let mut p = sampler("sampling_percentage: 1", Signal::Traces);
        let mut forced = span(trace_id(0x1), "");
        forced.attributes.push(kv("sampling.priority", Value::IntValue(1)));
        let mut forbidden = span(trace_id(0xff_ffff_ffff_ffff), "");
        forbidden.attributes.push(kv("sampling.priority", Value::StringValue("0".into())));
        let (out, _) = run(p.as_mut(), traces(vec![forced, forbidden]));
        let kept = out_spans(&out);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].trace_id, trace_id(0x1));
        assert_eq!(kept[0].trace_state, "ot=th:0");
    }

    #[test]
    fn zero_percent_drops_everything_and_pushes_nothing() {
        let mut p = sampler("sampling_percentage: 0", Signal::Traces);
        let (out, ctx) = run(p.as_mut(), traces(vec![span(trace_id(0xff_ffff_ffff_ffff), "")]));
        assert!(out.is_empty());
        assert_eq!(ctx.dropped_for("sampled_out"), 1);

        let (out, _) = run(p.as_mut(), traces(Vec::new()));
        assert!(out.is_empty(), "an empty batch is not pushed");
    }

    #[test]
    fn logs_with_trace_ids_follow_their_traces() {
        let mut spans_sampler = sampler("sampling_percentage: 40", Signal::Traces);
        let mut logs_sampler = sampler("sampling_percentage: 40", Signal::Logs);
        let ids = random_ids(400, 99);
        let (out, _) =
            run(spans_sampler.as_mut(), traces(ids.iter().map(|id| span(id.clone(), "")).collect()));
        let kept_traces: HashSet<Vec<u8>> = out_spans(&out).into_iter().map(|s| s.trace_id).collect();
        let records =
            ids.iter().map(|id| log(id.clone(), "order placed", 1_700_000_000_000_000_000)).collect();
        let (out, _) = run(logs_sampler.as_mut(), logs(records));
        let kept = out_logs(&out);
        let kept_logs: HashSet<Vec<u8>> = kept.iter().map(|l| l.trace_id.clone()).collect();
        assert_eq!(kept_logs, kept_traces);
        let th = otlp::get_str(&kept[0].attributes, LOG_THRESHOLD);
        assert_eq!(th, Some("999a"));
        assert_eq!(otlp::get(&kept[0].attributes, LOG_RANDOMNESS), None, "randomness came from the trace id");
    }

    #[test]
    fn logs_without_trace_ids_are_sampled_by_body_and_time() {
        let mut p = sampler("sampling_percentage: 50", Signal::Logs);
        let records: Vec<LogRecord> = (0..2000)
            .map(|i| log(Vec::new(), &format!("GET /api/orders/{i} 200"), 1_700_000_000_000_000_000 + i))
            .collect();
        let (out, _) = run(p.as_mut(), logs(records.clone()));
        let kept = out_logs(&out);
        assert!((800..=1200).contains(&kept.len()), "kept {}", kept.len());
        assert!(
            kept.iter()
                .all(|l| otlp::get_str(&l.attributes, LOG_RANDOMNESS).is_some_and(|rv| rv.len() == 14))
        );
        // Deterministic: the same records give the same decisions.
        let (again, _) = run(p.as_mut(), logs(records));
        assert_eq!(out_logs(&again).len(), kept.len());

        // Nothing to hash on: refused (fail closed).
        let empty = LogRecord { body: None, ..Default::default() };
        let (out, ctx) = run(p.as_mut(), logs(vec![empty]));
        assert!(out.is_empty());
        assert_eq!(ctx.counted_for("sampling_error"), 1);
    }

    #[test]
    fn logs_from_attribute_hashes_the_record_attribute() {
        let mut p = sampler(
            "{sampling_percentage: 50, attribute_source: record, from_attribute: request.id}",
            Signal::Logs,
        );
        let with_id = |i: u32, body: &str| {
            let mut l = log(trace_id(u64::from(i)), body, 0);
            l.attributes.push(kv("request.id", Value::BytesValue(i.to_be_bytes().to_vec())));
            l
        };
        let first: Vec<LogRecord> = (0..300).map(|i| with_id(i, "started")).collect();
        let second: Vec<LogRecord> = (0..300).map(|i| with_id(i, "finished")).collect();
        let ids = |records: Vec<LogRecord>| -> HashSet<Vec<u8>> {
            records.into_iter().map(|l| l.trace_id).collect()
        };
        let (a, _) = run(p.as_mut(), logs(first));
        let (b, _) = run(p.as_mut(), logs(second));
        let a = ids(out_logs(&a));
        assert!(!a.is_empty() && a.len() < 300);
        assert_eq!(a, ids(out_logs(&b)), "records of one request share the decision");
    }

    #[test]
    fn log_sampling_attributes_are_respected_or_refused() {
        let mut p = sampler("sampling_percentage: 50", Signal::Logs);
        let mut arrived = log(trace_id(0xf0_0000_0000_0000), "payment failed", 1);
        arrived.attributes.push(kv(LOG_THRESHOLD, Value::StringValue("8".into())));
        let mut malformed = log(trace_id(0xf0_0000_0000_0000), "payment failed", 1);
        malformed.attributes.push(kv(LOG_RANDOMNESS, Value::IntValue(5)));
        let (out, ctx) = run(p.as_mut(), logs(vec![arrived, malformed]));
        let kept = out_logs(&out);
        assert_eq!(kept.len(), 1);
        assert_eq!(otlp::get_str(&kept[0].attributes, LOG_THRESHOLD), Some("c"));
        assert_eq!(ctx.counted_for("sampling_error"), 1);
    }

    #[test]
    fn config_errors_name_the_key_path() {
        assert_eq!(config_error("sampling_percentage: 101", Signal::Traces).path, "sampling_percentage");
        assert_eq!(config_error("sampling_percentage: -5", Signal::Traces).path, "sampling_percentage");
        assert_eq!(config_error("sampling_percentage: .nan", Signal::Traces).path, "sampling_percentage");
        assert_eq!(
            config_error("{sampling_percentage: 10, sampling_precision: 15}", Signal::Traces).path,
            "sampling_precision"
        );
        assert_eq!(
            config_error("{sampling_percentage: 10, sampling_precision: 0}", Signal::Traces).path,
            "sampling_precision"
        );
        assert_eq!(config_error("{sampling_percentage: 10, mode: sometimes}", Signal::Traces).path, "mode");
        assert_eq!(
            config_error("{sampling_percentage: 10, hash_seed: -1}", Signal::Traces).path,
            "hash_seed"
        );
        assert_eq!(
            config_error("{sampling_percentage: 10, from_attribute: id}", Signal::Traces).path,
            "from_attribute"
        );
        assert_eq!(
            config_error("{sampling_percentage: 10, attribute_source: record}", Signal::Logs).path,
            "from_attribute"
        );
        assert_eq!(
            config_error("{sampling_percentage: 10, sampling_rate: 3}", Signal::Logs).path,
            "sampling_rate"
        );
        assert!(config_error("{}", Signal::Logs).message.contains("sampling_percentage"));
        let e = config_error("sampling_percentage: 10", Signal::Metrics);
        assert!(e.message.contains("traces and logs"));
    }

    #[test]
    fn collector_style_config_is_accepted() {
        sampler(
            "{sampling_percentage: 15.3, mode: proportional, hash_seed: 22, sampling_precision: 14, fail_closed: true}",
            Signal::Traces,
        );
        sampler("{sampling_percentage: 15.3, attribute_source: traceID, from_attribute: id}", Signal::Logs);
    }
}
