//! The `attributes` and `resource` processors: an ordered list of actions (insert, update,
//! upsert, delete, hash, extract, convert) applied to the attributes of every span, log record
//! and metric data point (`attributes`), or to the attributes of every resource (`resource`).
//! Both share one action engine, [`Actions`], so an action means the same thing in either.
//!
//! The configuration follows the OpenTelemetry Collector's processors of the same names:
//! `actions:` for `attributes`, `attributes:` for `resource` (`actions:` is accepted there too).

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
};
use pharos_core::{Signal, Tenant};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Batch, ConfigError, Context, Data, Processor, otlp};

/// The names `from_context` understands (`metadata.<header>` besides).
const CONTEXT_NAMES: &[&str] = &["tenant", "metadata.<request header>"];

/// What `from_context` reads: the batch's tenant and its request's metadata.
struct Origin<'a> {
    tenant: &'a Tenant,
    metadata: &'a [(String, String)],
}

/// The action names, as the configuration spells them.
const ACTION_NAMES: &str = "insert, update, upsert, delete, hash, extract, convert";

/// Builds an `attributes` processor: `actions` on span, log record and data point attributes.
pub fn build(config: &serde_yaml::Value, _signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    let config: AttributesConfig = super::parse_config(config)?;
    let actions = Actions::compile(&config.actions).map_err(|e| e.under("actions"))?;
    Ok(Box::new(AttributesProcessor { actions }))
}

/// Builds a `resource` processor: the same actions on resource attributes.
pub fn build_resource(
    config: &serde_yaml::Value,
    _signal: Signal,
) -> Result<Box<dyn Processor>, ConfigError> {
    let config: ResourceConfig = super::parse_config(config)?;
    let (field, list) = match (config.attributes, config.actions) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "actions",
                "give the actions under `attributes` or `actions`, not both",
            ));
        }
        (Some(list), None) => ("attributes", list),
        (None, Some(list)) => ("actions", list),
        (None, None) => return Err(ConfigError::new("attributes", "the list of actions is missing")),
    };
    let actions = Actions::compile(&list).map_err(|e| e.under(field))?;
    Ok(Box::new(ResourceProcessor { actions }))
}

// ---- configuration ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributesConfig {
    #[serde(default)]
    actions: Vec<ActionConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    #[serde(default)]
    attributes: Option<Vec<ActionConfig>>,
    #[serde(default)]
    actions: Option<Vec<ActionConfig>>,
}

/// One action as written in YAML; [`Actions::compile`] checks the combination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionConfig {
    #[serde(default)]
    key: Option<String>,
    action: String,
    #[serde(default)]
    value: Option<serde_yaml::Value>,
    #[serde(default)]
    from_attribute: Option<String>,
    #[serde(default)]
    from_context: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    converted_type: Option<String>,
}

// ---- the action engine ----

/// Where a new value comes from.
#[derive(Debug, Clone)]
enum Source {
    Value(AnyValue),
    Attribute(String),
    Tenant,
    /// A request header kept with the data (lowercase name).
    Metadata(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetMode {
    Insert,
    Update,
    Upsert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvertTo {
    Int,
    Double,
    String,
}

#[derive(Debug, Clone)]
enum Action {
    Set { mode: SetMode, key: String, source: Source },
    Delete { key: Option<String>, pattern: Option<Regex> },
    Hash { key: Option<String>, pattern: Option<Regex> },
    Extract { key: String, regex: Regex },
    Convert { key: String, to: ConvertTo },
}

/// What applying actions did, for the processor's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    /// `convert` actions that found a value they could not convert (left unchanged).
    convert_failed: u64,
}

/// An ordered, compiled list of attribute actions.
#[derive(Debug, Clone)]
struct Actions(Vec<Action>);

impl Actions {
    /// Checks and compiles actions; error paths start at the list (`[2].pattern`).
    fn compile(list: &[ActionConfig]) -> Result<Actions, ConfigError> {
        if list.is_empty() {
            return Err(ConfigError::new("", "at least one action is needed"));
        }
        let actions = list
            .iter()
            .enumerate()
            .map(|(i, a)| compile_action(a).map_err(|e| e.under(&format!("[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Actions(actions))
    }

    /// Applies every action in order to one attribute list.
    fn apply(&self, attrs: &mut Vec<KeyValue>, origin: &Origin<'_>, outcome: &mut Outcome) {
        for action in &self.0 {
            match action {
                Action::Set { mode, key, source } => set(attrs, *mode, key, source, origin),
                Action::Delete { key, pattern } => {
                    attrs.retain(|kv| !selects(key.as_deref(), pattern.as_ref(), &kv.key));
                }
                Action::Hash { key, pattern } => {
                    for kv in attrs.iter_mut().filter(|kv| selects(key.as_deref(), pattern.as_ref(), &kv.key))
                    {
                        let text = kv.value.as_ref().map(otlp::to_text).unwrap_or_default();
                        kv.value = Some(otlp::string_value(sha256_hex(text.as_bytes())));
                    }
                }
                Action::Extract { key, regex } => extract(attrs, key, regex),
                Action::Convert { key, to } => {
                    if let Some(value) = otlp::get_mut(attrs, key)
                        && !convert(value, *to)
                    {
                        outcome.convert_failed += 1;
                    }
                }
            }
        }
    }
}

fn compile_action(a: &ActionConfig) -> Result<Action, ConfigError> {
    let name = a.action.trim().to_ascii_lowercase();
    let key = match &a.key {
        Some(k) if k.is_empty() => return Err(ConfigError::new("key", "the key must not be empty")),
        other => other.clone(),
    };
    let sources = [a.value.is_some(), a.from_attribute.is_some(), a.from_context.is_some()];
    let source_count = sources.iter().filter(|s| **s).count();
    let takes_source = matches!(name.as_str(), "insert" | "update" | "upsert");
    if !takes_source && source_count > 0 {
        let field = if a.value.is_some() {
            "value"
        } else if a.from_attribute.is_some() {
            "from_attribute"
        } else {
            "from_context"
        };
        return Err(ConfigError::new(field, format!("the {name} action takes no value source")));
    }
    if name != "convert" && a.converted_type.is_some() {
        return Err(ConfigError::new("converted_type", "converted_type belongs to the convert action only"));
    }
    let takes_pattern = matches!(name.as_str(), "delete" | "hash" | "extract");
    if !takes_pattern && a.pattern.is_some() {
        return Err(ConfigError::new("pattern", format!("the {name} action takes no pattern")));
    }
    let need_key = |key: Option<String>| {
        key.ok_or_else(|| ConfigError::new("key", format!("the {name} action needs a key")))
    };
    match name.as_str() {
        "insert" | "update" | "upsert" => {
            let key = need_key(key)?;
            if source_count != 1 {
                return Err(ConfigError::new(
                    "",
                    format!("the {name} action needs exactly one of value, from_attribute or from_context"),
                ));
            }
            let source = if let Some(v) = &a.value {
                Source::Value(any_value(v).map_err(|e| e.under("value"))?)
            } else if let Some(from) = &a.from_attribute {
                if from.is_empty() {
                    return Err(ConfigError::new("from_attribute", "the attribute name must not be empty"));
                }
                Source::Attribute(from.clone())
            } else {
                let from = a.from_context.as_deref().unwrap_or_default();
                match from {
                    "tenant" => Source::Tenant,
                    header if header.starts_with("metadata.") && header.len() > "metadata.".len() => {
                        Source::Metadata(header["metadata.".len()..].to_ascii_lowercase())
                    }
                    other => {
                        return Err(ConfigError::new(
                            "from_context",
                            format!("unknown context {other:?} (supported: {})", CONTEXT_NAMES.join(", ")),
                        ));
                    }
                }
            };
            let mode = match name.as_str() {
                "insert" => SetMode::Insert,
                "update" => SetMode::Update,
                _ => SetMode::Upsert,
            };
            Ok(Action::Set { mode, key, source })
        }
        "delete" | "hash" => {
            let pattern = a.pattern.as_deref().map(|p| super::compile_regex("pattern", p)).transpose()?;
            if key.is_none() && pattern.is_none() {
                return Err(ConfigError::new("key", format!("the {name} action needs a key or a pattern")));
            }
            Ok(if name == "delete" { Action::Delete { key, pattern } } else { Action::Hash { key, pattern } })
        }
        "extract" => {
            let key = need_key(key)?;
            let pattern = a
                .pattern
                .as_deref()
                .ok_or_else(|| ConfigError::new("pattern", "the extract action needs a pattern"))?;
            let regex = super::compile_regex("pattern", pattern)?;
            if regex.capture_names().flatten().next().is_none() {
                return Err(ConfigError::new(
                    "pattern",
                    "the extract pattern needs at least one named group, such as (?P<name>...)",
                ));
            }
            Ok(Action::Extract { key, regex })
        }
        "convert" => {
            let key = need_key(key)?;
            let to = match a.converted_type.as_deref().map(|t| t.trim().to_ascii_lowercase()).as_deref() {
                Some("int") => ConvertTo::Int,
                Some("double") => ConvertTo::Double,
                Some("string") => ConvertTo::String,
                Some(other) => {
                    return Err(ConfigError::new(
                        "converted_type",
                        format!("unknown type {other:?} (expected int, double or string)"),
                    ));
                }
                None => {
                    return Err(ConfigError::new(
                        "converted_type",
                        "the convert action needs converted_type",
                    ));
                }
            };
            Ok(Action::Convert { key, to })
        }
        other => {
            Err(ConfigError::new("action", format!("unknown action {other:?} (expected {ACTION_NAMES})")))
        }
    }
}

/// A YAML value from configuration as an OTLP value: scalars become their own kind, sequences
/// arrays and mappings key-value lists.
fn any_value(v: &serde_yaml::Value) -> Result<AnyValue, ConfigError> {
    use serde_yaml::Value as Y;
    let value = match v {
        Y::Null => return Err(ConfigError::new("", "the value must not be null")),
        Y::Bool(b) => Value::BoolValue(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::IntValue(i)
            } else if n.is_u64() {
                return Err(ConfigError::new("", format!("{n} is too large for a 64-bit signed integer")));
            } else {
                Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Y::String(s) => Value::StringValue(s.clone()),
        Y::Sequence(items) => Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .enumerate()
                .map(|(i, item)| any_value(item).map_err(|e| e.under(&format!("[{i}]"))))
                .collect::<Result<_, _>>()?,
        }),
        Y::Mapping(map) => {
            let mut values = Vec::with_capacity(map.len());
            for (k, item) in map {
                let Some(key) = k.as_str() else {
                    return Err(ConfigError::new("", "map keys in a value must be strings"));
                };
                let value = any_value(item).map_err(|e| e.under(key))?;
                values.push(KeyValue { key: key.to_string(), value: Some(value), ..Default::default() });
            }
            Value::KvlistValue(KeyValueList { values })
        }
        Y::Tagged(_) => return Err(ConfigError::new("", "tagged YAML values are not supported")),
    };
    Ok(AnyValue { value: Some(value) })
}

/// Whether an attribute named `name` is selected by a `key` and/or a key `pattern`.
fn selects(key: Option<&str>, pattern: Option<&Regex>, name: &str) -> bool {
    key == Some(name) || pattern.is_some_and(|p| p.is_match(name))
}

fn set(attrs: &mut Vec<KeyValue>, mode: SetMode, key: &str, source: &Source, origin: &Origin<'_>) {
    let exists = attrs.iter().any(|kv| kv.key == key);
    match (mode, exists) {
        (SetMode::Insert, true) | (SetMode::Update, false) => return,
        _ => {}
    }
    let value = match source {
        Source::Value(v) => v.clone(),
        Source::Tenant => otlp::string_value(origin.tenant.as_str()),
        Source::Metadata(name) => match origin.metadata.iter().find(|(k, _)| k == name) {
            Some((_, v)) => otlp::string_value(v.as_str()),
            None => return,
        },
        Source::Attribute(from) => match otlp::get(attrs, from) {
            Some(v) => v.clone(),
            None => return,
        },
    };
    otlp::upsert(attrs, key, value);
}

/// Upserts one attribute per named group that took part in the match of `regex` on the string
/// value of `key`. Values that are not strings, and values the pattern does not match, are left
/// alone.
fn extract(attrs: &mut Vec<KeyValue>, key: &str, regex: &Regex) {
    let Some(text) = otlp::get_str(attrs, key) else { return };
    let Some(caps) = regex.captures(text) else { return };
    let found: Vec<(String, String)> = regex
        .capture_names()
        .enumerate()
        .filter_map(|(i, name)| Some((name?.to_string(), caps.get(i)?.as_str().to_string())))
        .collect();
    for (name, value) in found {
        otlp::upsert(attrs, &name, otlp::string_value(value));
    }
}

/// Converts a value in place; returns false (leaving it unchanged) when it cannot be converted.
fn convert(value: &mut AnyValue, to: ConvertTo) -> bool {
    let converted = match (to, &value.value) {
        (ConvertTo::Int, Some(Value::IntValue(_))) => return true,
        (ConvertTo::Int, Some(Value::StringValue(s))) => s.parse::<i64>().ok().map(Value::IntValue),
        (ConvertTo::Int, Some(Value::DoubleValue(d))) => {
            // Truncates toward zero; values outside i64 (and NaN) cannot be converted.
            let t = d.trunc();
            (d.is_finite() && t >= i64::MIN as f64 && t < i64::MAX as f64)
                .then_some(Value::IntValue(t as i64))
        }
        (ConvertTo::Int, Some(Value::BoolValue(b))) => Some(Value::IntValue(i64::from(*b))),
        (ConvertTo::Double, Some(Value::DoubleValue(_))) => return true,
        (ConvertTo::Double, Some(Value::StringValue(s))) => s.parse::<f64>().ok().map(Value::DoubleValue),
        (ConvertTo::Double, Some(Value::IntValue(i))) => Some(Value::DoubleValue(*i as f64)),
        (ConvertTo::Double, Some(Value::BoolValue(b))) => {
            Some(Value::DoubleValue(if *b { 1.0 } else { 0.0 }))
        }
        (ConvertTo::String, Some(Value::StringValue(_))) => return true,
        (ConvertTo::String, _) => Some(Value::StringValue(otlp::to_text(value))),
        _ => None,
    };
    match converted {
        Some(v) => {
            value.value = Some(v);
            true
        }
        None => false,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    otlp::hex(&Sha256::digest(bytes))
}

// ---- the processors ----

struct AttributesProcessor {
    actions: Actions,
}

impl Actions {
    /// The request headers `from_context: metadata.<name>` reads.
    fn metadata_keys(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|a| match a {
                Action::Set { source: Source::Metadata(name), .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Processor for AttributesProcessor {
    fn metadata_keys(&self) -> Vec<String> {
        self.actions.metadata_keys()
    }

    fn process(&mut self, mut batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        if batch.data.is_empty() {
            return;
        }
        let mut outcome = Outcome::default();
        let origin = Origin { tenant: &batch.tenant, metadata: &ctx.metadata };
        let actions = &self.actions;
        match &mut batch.data {
            Data::Traces(r) => otlp::for_each_span_mut(r, |_, span| {
                actions.apply(&mut span.attributes, &origin, &mut outcome)
            }),
            Data::Logs(r) => otlp::for_each_log_mut(r, |_, record| {
                actions.apply(&mut record.attributes, &origin, &mut outcome)
            }),
            Data::Metrics(r) => otlp::for_each_point_attributes_mut(r, |_, _, attrs| {
                actions.apply(attrs, &origin, &mut outcome)
            }),
        }
        ctx.count("convert_failed", outcome.convert_failed);
        out.push(batch);
    }
}

struct ResourceProcessor {
    actions: Actions,
}

impl Processor for ResourceProcessor {
    fn metadata_keys(&self) -> Vec<String> {
        self.actions.metadata_keys()
    }

    fn process(&mut self, mut batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        if batch.data.is_empty() {
            return;
        }
        let mut outcome = Outcome::default();
        let tenant = batch.tenant.clone();
        let origin = Origin { tenant: &tenant, metadata: &ctx.metadata };
        for attrs in otlp::resources_mut(&mut batch.data) {
            self.actions.apply(attrs, &origin, &mut outcome);
        }
        ctx.count("convert_failed", outcome.convert_failed);
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        },
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event},
    };

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        kv(key, Value::StringValue(value.into()))
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![s("service.name", service), s("deployment.environment", "prod")],
            ..Default::default()
        })
    }

    fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![1; 8],
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_050_000_000,
            attributes,
            events: vec![Event { name: "exception".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn traces(service: &str, spans: Vec<Span>) -> Data {
        Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn checkout_spans() -> Data {
        traces(
            "checkout",
            vec![
                span(
                    "GET /api/cart",
                    vec![
                        s("http.request.method", "GET"),
                        s("http.route", "/api/cart"),
                        kv("http.response.status_code", Value::IntValue(200)),
                        s("user.email", "ada@example.com"),
                    ],
                ),
                span("SELECT carts", vec![s("db.system", "postgresql")]),
                span("internal work", vec![]),
            ],
        )
    }

    fn tenant(id: &str) -> Tenant {
        Tenant::parse(id).unwrap()
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    /// Runs an `attributes` processor over one batch of `tenant`, returning what came out.
    fn run_attributes(config: &str, tenant_id: &str, data: Data) -> (Vec<Batch>, Context) {
        let mut p = build(&yaml(config), data.signal()).unwrap();
        let mut ctx = Context::at(1);
        let mut out = vec![];
        p.process(Batch::new(tenant(tenant_id), 5, data), &mut ctx, &mut out);
        (out, ctx)
    }

    fn spans_of(out: &[Batch]) -> Vec<Span> {
        let mut spans = vec![];
        for b in out {
            let Data::Traces(r) = &b.data else { panic!("not traces") };
            for rs in &r.resource_spans {
                for ss in &rs.scope_spans {
                    spans.extend(ss.spans.iter().cloned());
                }
            }
        }
        spans
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
        otlp::get(&span.attributes, key).and_then(|v| v.value.as_ref())
    }

    fn config_error(kind: &str, config: &str) -> ConfigError {
        let r = if kind == "resource" {
            build_resource(&yaml(config), Signal::Traces)
        } else {
            build(&yaml(config), Signal::Traces)
        };
        match r {
            Ok(_) => panic!("config was accepted: {config}"),
            Err(e) => e,
        }
    }

    #[test]
    fn insert_existing_key_keeps_value_and_missing_key_is_added() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: http.route, action: insert, value: /other}\n  - {key: env, action: insert, value: staging}",
            "acme",
            checkout_spans(),
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[0], "http.route"), Some(&Value::StringValue("/api/cart".into())));
        assert!(spans.iter().all(|s| attr(s, "env") == Some(&Value::StringValue("staging".into()))));
    }

    #[test]
    fn update_only_touches_spans_that_have_the_key() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: db.system, action: update, value: postgres}",
            "acme",
            checkout_spans(),
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[1], "db.system"), Some(&Value::StringValue("postgres".into())));
        assert_eq!(attr(&spans[0], "db.system"), None);
        assert_eq!(attr(&spans[2], "db.system"), None);
    }

    #[test]
    fn upsert_yaml_scalars_become_matching_value_kinds() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: sampled, action: upsert, value: true}\n  - {key: shard, action: upsert, value: 42}\n  - {key: ratio, action: upsert, value: 0.25}\n  - {key: http.route, action: upsert, value: '/x'}\n  - {key: tags, action: upsert, value: [a, 1]}",
            "acme",
            checkout_spans(),
        );
        let spans = spans_of(&out);
        for span in &spans {
            assert_eq!(attr(span, "sampled"), Some(&Value::BoolValue(true)));
            assert_eq!(attr(span, "shard"), Some(&Value::IntValue(42)));
            assert_eq!(attr(span, "ratio"), Some(&Value::DoubleValue(0.25)));
            assert_eq!(attr(span, "http.route"), Some(&Value::StringValue("/x".into())));
            let Some(Value::ArrayValue(tags)) = attr(span, "tags") else { panic!("tags is not an array") };
            assert_eq!(tags.values.len(), 2);
        }
        // Upsert does not duplicate the key.
        assert_eq!(spans[0].attributes.iter().filter(|kv| kv.key == "http.route").count(), 1);
    }

    #[test]
    fn from_attribute_copies_value_and_skips_items_without_source() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: http.status, action: insert, from_attribute: http.response.status_code}",
            "acme",
            checkout_spans(),
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[0], "http.status"), Some(&Value::IntValue(200)));
        assert_eq!(attr(&spans[1], "http.status"), None);
    }

    #[test]
    fn from_context_tenant_sets_batch_tenant_per_batch() {
        let config = yaml("actions:\n  - {key: pharos.tenant, action: upsert, from_context: tenant}");
        let mut p = build(&config, Signal::Traces).unwrap();
        let mut ctx = Context::at(1);
        let mut out = vec![];
        p.process(Batch::new(tenant("acme"), 1, checkout_spans()), &mut ctx, &mut out);
        p.process(Batch::new(tenant("globex"), 2, checkout_spans()), &mut ctx, &mut out);
        assert_eq!(out.len(), 2);
        let first = spans_of(&out[..1]);
        let second = spans_of(&out[1..]);
        assert_eq!(attr(&first[0], "pharos.tenant"), Some(&Value::StringValue("acme".into())));
        assert_eq!(attr(&second[2], "pharos.tenant"), Some(&Value::StringValue("globex".into())));
    }

    #[test]
    fn delete_by_key_and_pattern_removes_both() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: user.email, pattern: '^http\\.request\\.', action: delete}",
            "acme",
            checkout_spans(),
        );
        let spans = spans_of(&out);
        let keys: Vec<&str> = spans[0].attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["http.route", "http.response.status_code"]);
        assert_eq!(spans[1].attributes.len(), 1);
    }

    #[test]
    fn hash_string_value_gives_sha256_hex() {
        let (out, _) =
            run_attributes("actions:\n  - {key: user.email, action: hash}", "acme", checkout_spans());
        let spans = spans_of(&out);
        // sha256("ada@example.com")
        let expected = sha256_hex(b"ada@example.com");
        assert_eq!(expected.len(), 64);
        assert_eq!(attr(&spans[0], "user.email"), Some(&Value::StringValue(expected)));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn hash_non_string_values_hashes_their_text() {
        let data = traces(
            "checkout",
            vec![span(
                "upload",
                vec![
                    kv("http.response.status_code", Value::IntValue(200)),
                    kv("blob", Value::BytesValue(vec![0xff, 0xfe, 0x00])),
                ],
            )],
        );
        let (out, _) = run_attributes("actions:\n  - {pattern: '.*', action: hash}", "acme", data);
        let spans = spans_of(&out);
        assert_eq!(
            attr(&spans[0], "http.response.status_code"),
            Some(&Value::StringValue(sha256_hex(b"200")))
        );
        assert_eq!(attr(&spans[0], "blob"), Some(&Value::StringValue(sha256_hex(b"fffe00"))));
    }

    #[test]
    fn extract_named_groups_upserts_each_group() {
        let data = traces(
            "checkout",
            vec![
                span("GET", vec![s("http.url", "https://shop.example.com:8443/api/cart?id=9")]),
                span("GET", vec![s("http.url", "not a url")]),
                span("GET", vec![kv("http.url", Value::IntValue(3))]),
            ],
        );
        let (out, _) = run_attributes(
            "actions:\n  - key: http.url\n    action: extract\n    pattern: '^(?P<url_scheme>\\w+)://(?P<url_host>[^:/]+)(:(?P<url_port>\\d+))?(?P<url_path>/[^?]*)'",
            "acme",
            data,
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[0], "url_scheme"), Some(&Value::StringValue("https".into())));
        assert_eq!(attr(&spans[0], "url_host"), Some(&Value::StringValue("shop.example.com".into())));
        assert_eq!(attr(&spans[0], "url_port"), Some(&Value::StringValue("8443".into())));
        assert_eq!(attr(&spans[0], "url_path"), Some(&Value::StringValue("/api/cart".into())));
        // The source attribute stays; unmatched and non-string values add nothing.
        assert!(attr(&spans[0], "http.url").is_some());
        assert_eq!(spans[1].attributes.len(), 1);
        assert_eq!(spans[2].attributes.len(), 1);
    }

    #[test]
    fn extract_optional_group_not_taking_part_sets_nothing() {
        let data = traces("checkout", vec![span("GET", vec![s("http.url", "http://shop/cart")])]);
        let (out, _) = run_attributes(
            "actions:\n  - {key: http.url, action: extract, pattern: '^\\w+://[^:/]+(:(?P<port>\\d+))?(?P<path>/.*)$'}",
            "acme",
            data,
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[0], "port"), None);
        assert_eq!(attr(&spans[0], "path"), Some(&Value::StringValue("/cart".into())));
    }

    #[test]
    fn convert_string_to_int_and_failures_are_counted_and_left_unchanged() {
        let data = traces(
            "checkout",
            vec![
                span("a", vec![s("http.response.status_code", "503")]),
                span("b", vec![s("http.response.status_code", "five hundred")]),
                span("c", vec![kv("http.response.status_code", Value::DoubleValue(404.9))]),
                span("d", vec![kv("http.response.status_code", Value::BytesValue(vec![1]))]),
                span("e", vec![]),
            ],
        );
        let (out, ctx) = run_attributes(
            "actions:\n  - {key: http.response.status_code, action: convert, converted_type: int}",
            "acme",
            data,
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[0], "http.response.status_code"), Some(&Value::IntValue(503)));
        assert_eq!(
            attr(&spans[1], "http.response.status_code"),
            Some(&Value::StringValue("five hundred".into()))
        );
        assert_eq!(attr(&spans[2], "http.response.status_code"), Some(&Value::IntValue(404)));
        assert_eq!(attr(&spans[3], "http.response.status_code"), Some(&Value::BytesValue(vec![1])));
        assert_eq!(ctx.counted_for("convert_failed"), 2);
    }

    #[test]
    fn convert_huge_and_nan_doubles_to_int_fail_without_panic() {
        let mut v = AnyValue { value: Some(Value::DoubleValue(1e300)) };
        assert!(!convert(&mut v, ConvertTo::Int));
        let mut v = AnyValue { value: Some(Value::DoubleValue(f64::NAN)) };
        assert!(!convert(&mut v, ConvertTo::Int));
        let mut v = AnyValue { value: Some(Value::StringValue("99999999999999999999".into())) };
        assert!(!convert(&mut v, ConvertTo::Int));
        assert_eq!(v.value, Some(Value::StringValue("99999999999999999999".into())));
    }

    #[test]
    fn convert_to_double_and_string_follow_value_kinds() {
        let mut v = AnyValue { value: Some(Value::StringValue("0.5".into())) };
        assert!(convert(&mut v, ConvertTo::Double));
        assert_eq!(v.value, Some(Value::DoubleValue(0.5)));
        let mut v = AnyValue { value: Some(Value::BoolValue(true)) };
        assert!(convert(&mut v, ConvertTo::Double));
        assert_eq!(v.value, Some(Value::DoubleValue(1.0)));
        let mut v = AnyValue { value: Some(Value::IntValue(-7)) };
        assert!(convert(&mut v, ConvertTo::String));
        assert_eq!(v.value, Some(Value::StringValue("-7".into())));
        let mut v = AnyValue { value: Some(Value::BytesValue(vec![0xde, 0xad])) };
        assert!(convert(&mut v, ConvertTo::String));
        assert_eq!(v.value, Some(Value::StringValue("dead".into())));
    }

    #[test]
    fn actions_run_in_order_so_later_actions_see_earlier_results() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: user.id, action: upsert, from_attribute: user.email}\n  - {key: user.id, action: hash}\n  - {key: user.email, action: delete}",
            "acme",
            checkout_spans(),
        );
        let spans = spans_of(&out);
        assert_eq!(attr(&spans[0], "user.id"), Some(&Value::StringValue(sha256_hex(b"ada@example.com"))));
        assert_eq!(attr(&spans[0], "user.email"), None);
        assert_eq!(attr(&spans[1], "user.id"), None);
    }

    #[test]
    fn attributes_logs_change_record_attributes_not_resource() {
        let data = Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("checkout"),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        severity_number: 9,
                        body: Some(otlp::string_value("payment accepted")),
                        attributes: vec![s("user.email", "ada@example.com")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let (out, _) = run_attributes(
            "actions:\n  - {key: user.email, action: delete}\n  - {key: service.name, action: delete}",
            "acme",
            data,
        );
        let Data::Logs(r) = &out[0].data else { panic!("not logs") };
        assert!(r.resource_logs[0].scope_logs[0].log_records[0].attributes.is_empty());
        assert_eq!(
            otlp::get_str(otlp::resource_attributes(&r.resource_logs[0].resource), "service.name"),
            Some("checkout")
        );
    }

    #[test]
    fn attributes_metrics_change_data_point_attributes() {
        let point = |method: &str| NumberDataPoint {
            attributes: vec![s("http.request.method", method)],
            ..Default::default()
        };
        let data = Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("checkout"),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "http.server.active_requests".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point("GET"), point("POST")],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let (out, _) =
            run_attributes("actions:\n  - {key: region, action: insert, value: eu-west-1}", "acme", data);
        let Data::Metrics(r) = &out[0].data else { panic!("not metrics") };
        let Some(metric::Data::Gauge(g)) = &r.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("not a gauge")
        };
        assert!(g.data_points.iter().all(|p| otlp::get_str(&p.attributes, "region") == Some("eu-west-1")));
    }

    #[test]
    fn attributes_empty_batch_pushes_nothing() {
        let (out, _) = run_attributes(
            "actions:\n  - {key: env, action: upsert, value: prod}",
            "acme",
            Data::Traces(ExportTraceServiceRequest::default()),
        );
        assert!(out.is_empty());
    }

    #[test]
    fn resource_actions_apply_once_per_resource_for_every_signal() {
        let config = yaml(
            "attributes:\n  - {key: deployment.environment, action: update, value: production}\n  - {key: cloud.region, action: insert, value: eu-west-1}\n  - {key: pharos.tenant, action: upsert, from_context: tenant}",
        );
        let mut p = build_resource(&config, Signal::Traces).unwrap();
        let mut ctx = Context::at(1);
        let mut out = vec![];
        p.process(Batch::new(tenant("acme"), 1, checkout_spans()), &mut ctx, &mut out);
        let Data::Traces(r) = &out[0].data else { panic!("not traces") };
        let attrs = otlp::resource_attributes(&r.resource_spans[0].resource);
        assert_eq!(otlp::get_str(attrs, "deployment.environment"), Some("production"));
        assert_eq!(otlp::get_str(attrs, "cloud.region"), Some("eu-west-1"));
        assert_eq!(otlp::get_str(attrs, "pharos.tenant"), Some("acme"));
        assert_eq!(attrs.iter().filter(|kv| kv.key == "cloud.region").count(), 1);
        // Span attributes are untouched.
        assert_eq!(attr(&r.resource_spans[0].scope_spans[0].spans[0], "cloud.region"), None);
    }

    #[test]
    fn resource_missing_resource_gets_inserted_attributes() {
        let data = Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: None,
                scope_logs: vec![ScopeLogs { log_records: vec![LogRecord::default()], ..Default::default() }],
                ..Default::default()
            }],
        });
        let mut p = build_resource(
            &yaml("actions:\n  - {key: service.name, action: insert, value: unknown}"),
            Signal::Logs,
        )
        .unwrap();
        let mut out = vec![];
        p.process(Batch::new(tenant("acme"), 1, data), &mut Context::at(1), &mut out);
        let Data::Logs(r) = &out[0].data else { panic!("not logs") };
        assert_eq!(
            otlp::get_str(otlp::resource_attributes(&r.resource_logs[0].resource), "service.name"),
            Some("unknown")
        );
    }

    #[test]
    fn config_unknown_action_names_the_path() {
        let e = config_error(
            "attributes",
            "actions:\n  - {key: a, action: insert, value: x}\n  - {key: a, action: rename}",
        );
        assert_eq!(e.path, "actions[1].action");
        assert!(e.message.contains("rename"), "{e}");
    }

    #[test]
    fn config_bad_regex_names_the_pattern_path() {
        let e = config_error("attributes", "actions:\n  - {pattern: '(unclosed', action: delete}");
        assert_eq!(e.path, "actions[0].pattern");
    }

    #[test]
    fn config_two_value_sources_is_an_error() {
        let e =
            config_error("attributes", "actions:\n  - {key: a, action: upsert, value: x, from_attribute: b}");
        assert_eq!(e.path, "actions[0]");
        let e = config_error("attributes", "actions:\n  - {key: a, action: upsert}");
        assert_eq!(e.path, "actions[0]");
    }

    #[test]
    fn config_unknown_context_lists_supported_names() {
        let e =
            config_error("attributes", "actions:\n  - {key: a, action: upsert, from_context: auth.subject}");
        assert_eq!(e.path, "actions[0].from_context");
        assert!(e.message.contains("tenant") && e.message.contains("metadata."), "{e}");
        let e = config_error("attributes", "actions:\n  - {key: a, action: upsert, from_context: metadata.}");
        assert_eq!(e.path, "actions[0].from_context");
    }

    #[test]
    fn from_context_metadata_sets_the_request_header_and_names_it_for_the_receivers() {
        let config = yaml(
            "actions:\n  - {key: team, action: insert, from_context: metadata.X-Team}\n  - {key: region, action: upsert, from_context: metadata.x-region}",
        );
        let mut p = build(&config, Signal::Traces).unwrap();
        assert_eq!(p.metadata_keys(), vec!["x-team".to_string(), "x-region".to_string()]);
        let mut ctx = Context::at(1);
        ctx.metadata = vec![("x-team".into(), "payments".into())];
        let mut out = vec![];
        p.process(Batch::new(tenant("acme"), 1, checkout_spans()), &mut ctx, &mut out);
        let spans = spans_of(&out);
        assert!(spans.iter().all(|s| otlp::get_str(&s.attributes, "team") == Some("payments")));
        // A header the request did not carry sets nothing.
        assert!(spans.iter().all(|s| otlp::get(&s.attributes, "region").is_none()));
    }

    #[test]
    fn config_missing_key_and_misplaced_fields_name_the_key() {
        assert_eq!(
            config_error("attributes", "actions:\n  - {action: insert, value: x}").path,
            "actions[0].key"
        );
        assert_eq!(config_error("attributes", "actions:\n  - {action: delete}").path, "actions[0].key");
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: '', action: delete}").path,
            "actions[0].key"
        );
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: delete, value: x}").path,
            "actions[0].value"
        );
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: upsert, value: x, pattern: y}").path,
            "actions[0].pattern"
        );
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: convert, converted_type: float}").path,
            "actions[0].converted_type"
        );
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: convert}").path,
            "actions[0].converted_type"
        );
    }

    #[test]
    fn config_extract_without_named_group_is_an_error() {
        let e = config_error(
            "attributes",
            "actions:\n  - {key: http.url, action: extract, pattern: '^(\\w+)://'}",
        );
        assert_eq!(e.path, "actions[0].pattern");
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: http.url, action: extract}").path,
            "actions[0].pattern"
        );
    }

    #[test]
    fn config_bad_values_name_the_value_path() {
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: upsert, value: 18446744073709551615}")
                .path,
            "actions[0].value"
        );
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: upsert, value: {x: [1, null]}}").path,
            "actions[0].value.x[1]"
        );
    }

    #[test]
    fn config_unknown_field_and_empty_actions_are_errors() {
        assert_eq!(
            config_error("attributes", "actions:\n  - {key: a, action: delete, include: x}").path,
            "actions[0].include"
        );
        assert_eq!(config_error("attributes", "actions: []").path, "actions");
        assert_eq!(config_error("attributes", "{}").path, "actions");
    }

    #[test]
    fn config_resource_accepts_either_list_name_but_not_both() {
        assert!(build_resource(&yaml("actions:\n  - {key: a, action: delete}"), Signal::Metrics).is_ok());
        assert_eq!(
            config_error("resource", "attributes:\n  - {key: a, action: bogus}").path,
            "attributes[0].action"
        );
        assert_eq!(
            config_error("resource", "actions:\n  - {key: a, action: bogus}").path,
            "actions[0].action"
        );
        assert_eq!(
            config_error(
                "resource",
                "attributes:\n  - {key: a, action: delete}\nactions:\n  - {key: b, action: delete}"
            )
            .path,
            "actions"
        );
        assert_eq!(config_error("resource", "{}").path, "attributes");
    }

    #[test]
    fn config_action_names_are_case_insensitive() {
        let (out, _) =
            run_attributes("actions:\n  - {key: user.email, action: DELETE}", "acme", checkout_spans());
        assert_eq!(attr(&spans_of(&out)[0], "user.email"), None);
    }
}
