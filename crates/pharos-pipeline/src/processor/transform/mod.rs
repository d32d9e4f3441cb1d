//! The `transform` processor: changes telemetry with statements in a subset of OTTL, the
//! OpenTelemetry Transformation Language, configured as in the Collector's transform processor
//! (`trace_statements`, `log_statements`, `metric_statements`, each a list of groups with a
//! `context`, optional `conditions` and `statements`, or of plain statements whose context is
//! inferred from their path prefixes).
//!
//! Statements are parsed and checked when the processor is built (`parser`, then `compile`);
//! a bad statement is a configuration error naming the statement and the column. At run time
//! (`eval`) each group runs over the items of its context in order, and each statement runs on
//! an item when its `where` clause holds. A statement that fails on an item (a map editor on a
//! value that is not a map, an index out of range) never drops data: it is counted as
//! `statement_errors` and, depending on `error_mode`, the item's remaining statements of that
//! group run or are skipped. See `docs/processors/transform.md`.

mod compile;
mod eval;
mod parser;

use pharos_core::Signal;
use serde::Deserialize;

use self::compile::{Compiler, Level};
use self::eval::{Errors, Group};
use self::parser::{StatementError, parse_condition, parse_statement};
use super::{Batch, ConfigError, Context, Processor, parse_config, wrong_signal};

/// What happens when a statement fails on an item. The item is never dropped (unlike the
/// Collector's `propagate`, which fails the whole batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ErrorMode {
    /// Go on with the next statement; the error is counted and logged at debug level.
    #[default]
    Ignore,
    /// As `ignore`, without the log line.
    Silent,
    /// Skip the group's remaining statements for that item; counted and logged as a warning.
    Propagate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformConfig {
    #[serde(default)]
    error_mode: ErrorMode,
    #[serde(default)]
    trace_statements: Vec<serde_yaml::Value>,
    #[serde(default)]
    log_statements: Vec<serde_yaml::Value>,
    #[serde(default)]
    metric_statements: Vec<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupConfig {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    conditions: Vec<String>,
    statements: Vec<String>,
    #[serde(default)]
    error_mode: Option<ErrorMode>,
}

/// The contexts of each signal's statements, outermost first.
fn contexts(signal: Signal) -> &'static [Level] {
    match signal {
        Signal::Traces => &[Level::Resource, Level::Scope, Level::Span, Level::SpanEvent],
        Signal::Logs => &[Level::Resource, Level::Scope, Level::Log],
        Signal::Metrics => &[Level::Resource, Level::Scope, Level::Metric, Level::DataPoint],
    }
}

fn names(levels: &[Level]) -> String {
    levels.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
}

fn statement_error(path: String, e: StatementError) -> ConfigError {
    ConfigError::new(path, e.to_string())
}

/// The context a statement or condition implies when no `context` is given: the innermost
/// level its (prefixed) paths name.
fn infer(
    paths: &[(usize, &parser::PathExpr)],
    signal: Signal,
    key: &str,
) -> Result<Option<Level>, StatementError> {
    let allowed = contexts(signal);
    let mut deepest: Option<Level> = None;
    for (column, path) in paths {
        let level = compile::prefix_level(path).filter(|_| path.names.len() > 1).ok_or_else(|| {
            StatementError::new(
                *column,
                format!(
                    "`{path}` needs a context prefix ({}) because the statement has no `context`",
                    allowed.iter().map(|l| format!("{}.", l.name())).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if !allowed.contains(&level) {
            return Err(StatementError::new(*column, format!("`{path}` cannot be used in {key}")));
        }
        deepest = deepest.max(Some(level));
    }
    Ok(deepest)
}

struct Compiled {
    group: Group,
    mode: ErrorMode,
}

fn compile_groups(
    entries: &[serde_yaml::Value],
    key: &str,
    signal: Signal,
    default_mode: ErrorMode,
) -> Result<Vec<Compiled>, ConfigError> {
    let mut groups = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{key}[{i}]");
        match entry {
            serde_yaml::Value::String(text) => {
                let parsed = parse_statement(text).map_err(|e| statement_error(at.clone(), e))?;
                let mut paths = Vec::new();
                compile::statement_paths(&parsed, &mut paths);
                let context = infer(&paths, signal, key)
                    .and_then(|c| c.ok_or_else(|| StatementError::new(1, "the statement names no path")))
                    .map_err(|e| statement_error(at.clone(), e))?;
                let statement =
                    Compiler { context }.statement(&parsed).map_err(|e| statement_error(at.clone(), e))?;
                groups.push(Compiled {
                    group: Group {
                        context,
                        conditions: Vec::new(),
                        statements: vec![statement],
                        stop_on_error: default_mode == ErrorMode::Propagate,
                    },
                    mode: default_mode,
                });
            }
            serde_yaml::Value::Mapping(_) => {
                groups.push(compile_group(entry, &at, key, signal, default_mode)?)
            }
            _ => {
                return Err(ConfigError::new(
                    at,
                    "expected a statement (a string) or a group with `context` and `statements`",
                ));
            }
        }
    }
    Ok(groups)
}

fn compile_group(
    entry: &serde_yaml::Value,
    at: &str,
    key: &str,
    signal: Signal,
    default_mode: ErrorMode,
) -> Result<Compiled, ConfigError> {
    let config: GroupConfig = parse_config(entry).map_err(|e| e.under(at))?;
    if config.statements.is_empty() {
        return Err(ConfigError::new(format!("{at}.statements"), "list at least one statement"));
    }
    let statements = config
        .statements
        .iter()
        .enumerate()
        .map(|(j, text)| {
            parse_statement(text).map_err(|e| statement_error(format!("{at}.statements[{j}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = config
        .conditions
        .iter()
        .enumerate()
        .map(|(j, text)| {
            parse_condition(text).map_err(|e| statement_error(format!("{at}.conditions[{j}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let context = match &config.context {
        Some(name) => *contexts(signal).iter().find(|l| l.name() == name).ok_or_else(|| {
            ConfigError::new(
                format!("{at}.context"),
                format!("unknown context {name:?} for {key} (one of: {})", names(contexts(signal))),
            )
        })?,
        None => {
            let mut deepest = None;
            for (j, s) in statements.iter().enumerate() {
                let mut paths = Vec::new();
                compile::statement_paths(s, &mut paths);
                let level = infer(&paths, signal, key)
                    .map_err(|e| statement_error(format!("{at}.statements[{j}]"), e))?;
                deepest = deepest.max(level);
            }
            for (j, c) in conditions.iter().enumerate() {
                let mut paths = Vec::new();
                compile::condition_paths(c, &mut paths);
                let level = infer(&paths, signal, key)
                    .map_err(|e| statement_error(format!("{at}.conditions[{j}]"), e))?;
                deepest = deepest.max(level);
            }
            deepest.ok_or_else(|| {
                ConfigError::new(format!("{at}.context"), "cannot infer the context: set it")
            })?
        }
    };
    let compiler = Compiler { context };
    let statements = statements
        .iter()
        .enumerate()
        .map(|(j, s)| compiler.statement(s).map_err(|e| statement_error(format!("{at}.statements[{j}]"), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = conditions
        .iter()
        .enumerate()
        .map(|(j, c)| compiler.condition(c).map_err(|e| statement_error(format!("{at}.conditions[{j}]"), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mode = config.error_mode.unwrap_or(default_mode);
    Ok(Compiled {
        group: Group { context, conditions, statements, stop_on_error: mode == ErrorMode::Propagate },
        mode,
    })
}

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    let config: TransformConfig = parse_config(config)?;
    let mode = config.error_mode;
    let traces = compile_groups(&config.trace_statements, "trace_statements", Signal::Traces, mode)?;
    let logs = compile_groups(&config.log_statements, "log_statements", Signal::Logs, mode)?;
    let metrics = compile_groups(&config.metric_statements, "metric_statements", Signal::Metrics, mode)?;
    let with_statements: Vec<&str> = [(&traces, "traces"), (&logs, "logs"), (&metrics, "metrics")]
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(_, name)| *name)
        .collect();
    let groups = match signal {
        Signal::Traces => traces,
        Signal::Logs => logs,
        Signal::Metrics => metrics,
    };
    if groups.is_empty() && !with_statements.is_empty() {
        return Err(wrong_signal("transform", signal, &with_statements.join(" and ")));
    }
    Ok(Box::new(Transform { groups }))
}

struct Transform {
    groups: Vec<Compiled>,
}

impl Processor for Transform {
    fn process(&mut self, mut batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        if batch.data.is_empty() {
            return;
        }
        for Compiled { group, mode } in &self.groups {
            let mut errors = Errors::default();
            group.run(&mut batch.data, &mut errors);
            if errors.count == 0 {
                continue;
            }
            ctx.count("statement_errors", errors.count);
            let first = errors.first.unwrap_or_default();
            match mode {
                ErrorMode::Ignore => {
                    let (tenant, count) = (&batch.tenant, errors.count);
                    tracing::debug!(%tenant, errors = count, first_error = %first, "transform statements failed")
                }
                ErrorMode::Propagate => {
                    let (tenant, count) = (&batch.tenant, errors.count);
                    tracing::warn!(%tenant, errors = count, first_error = %first, "transform statements failed")
                }
                ErrorMode::Silent => {}
            }
        }
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
        common::v1::{AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::{
            Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
            Sum, metric, number_data_point,
        },
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event},
    };
    use pharos_core::Tenant;

    use super::*;
    use crate::processor::{Data, otlp};

    // ---- realistic data ----

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        otlp::key_value(key, value)
    }

    fn s(v: &str) -> AnyValue {
        otlp::string_value(v)
    }

    fn int(v: i64) -> AnyValue {
        AnyValue { value: Some(Value::IntValue(v)) }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", s(service)), kv("host.name", s("node-7"))],
            ..Default::default()
        })
    }

    fn scope() -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: "io.opentelemetry.http".into(),
            version: "1.2.0".into(),
            ..Default::default()
        })
    }

    fn server_span() -> Span {
        Span {
            trace_id: vec![
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
                0x36,
            ],
            span_id: vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
            name: "GET /api/cart".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s("/api/cart")),
                kv("url.path", s("/api/cart/8412")),
                kv("http.response.status_code", int(503)),
                kv("http.request.header.authorization", s("Bearer eyJhbGciOi")),
            ],
            events: vec![Event {
                name: "exception".into(),
                time_unix_nano: 1_700_000_000_100_000_000,
                attributes: vec![
                    kv("exception.type", s("TimeoutError")),
                    kv("exception.message", s("upstream cart-db timed out after 200ms")),
                ],
                ..Default::default()
            }],
            status: Some(Status { code: 0, message: String::new() }),
            ..Default::default()
        }
    }

    fn client_span() -> Span {
        Span {
            name: "SELECT carts".into(),
            kind: 3,
            attributes: vec![
                kv("db.system", s("postgresql")),
                kv("db.statement", s("SELECT * FROM carts WHERE id = 8412")),
            ],
            ..Default::default()
        }
    }

    fn traces() -> Data {
        Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: resource("checkout"),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans: vec![server_span(), client_span()],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: resource("payment"),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans: vec![Span {
                            name: "POST /charge".into(),
                            kind: 2,
                            attributes: vec![
                                kv("http.request.method", s("POST")),
                                kv("http.response.status_code", int(200)),
                            ],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        })
    }

    fn logs() -> Data {
        Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("checkout"),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: vec![
                        LogRecord {
                            severity_number: 17,
                            severity_text: "error".into(),
                            body: Some(s("payment failed for user=alice card=4111111111111111")),
                            attributes: vec![kv("user.id", s("alice"))],
                            ..Default::default()
                        },
                        LogRecord {
                            severity_number: 9,
                            body: Some(AnyValue {
                                value: Some(Value::KvlistValue(KeyValueList {
                                    values: vec![kv("msg", s("login")), kv("password", s("hunter2"))],
                                })),
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn number(attrs: Vec<KeyValue>, value: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            value: Some(value),
            time_unix_nano: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    fn metrics() -> Data {
        Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("checkout"),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(),
                    metrics: vec![
                        Metric {
                            name: "http.server.request.count".into(),
                            unit: "{request}".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: vec![
                                    number(
                                        vec![kv("http.route", s("/api/cart"))],
                                        number_data_point::Value::AsInt(12),
                                    ),
                                    number(
                                        vec![kv("http.route", s("/api/pay"))],
                                        number_data_point::Value::AsInt(3),
                                    ),
                                ],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "http.server.request.duration".into(),
                            unit: "s".into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes: vec![kv("http.route", s("/api/cart"))],
                                    count: 15,
                                    sum: Some(2.5),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "process.memory.usage".into(),
                            unit: "By".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![number(
                                    vec![],
                                    number_data_point::Value::AsInt(52_428_800),
                                )],
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    // ---- running ----

    fn processor(yaml: &str, signal: Signal) -> Box<dyn Processor> {
        let config: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        match build(&config, signal) {
            Ok(p) => p,
            Err(e) => panic!("config rejected: {e}"),
        }
    }

    fn config_error(yaml: &str, signal: Signal) -> ConfigError {
        let config: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        match build(&config, signal) {
            Ok(_) => panic!("config accepted: {yaml}"),
            Err(e) => e,
        }
    }

    fn run_with(yaml: &str, data: Data) -> (Data, Context) {
        let signal = data.signal();
        let mut p = processor(yaml, signal);
        let mut ctx = Context::at(1_700_000_000_000_000_000);
        let mut out = Vec::new();
        let tenant = Tenant::parse("acme").unwrap();
        p.process(Batch::new(tenant.clone(), 42, data), &mut ctx, &mut out);
        assert_eq!(out.len(), 1, "one batch out");
        let batch = out.remove(0);
        assert_eq!((batch.tenant.as_str(), batch.offset), ("acme", 42));
        (batch.data, ctx)
    }

    fn run(yaml: &str, data: Data) -> Data {
        run_with(yaml, data).0
    }

    fn spans(data: &Data) -> Vec<&Span> {
        let Data::Traces(r) = data else { panic!("not traces") };
        r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).collect()
    }

    fn log_records(data: &Data) -> Vec<&LogRecord> {
        let Data::Logs(r) = data else { panic!("not logs") };
        r.resource_logs.iter().flat_map(|rl| &rl.scope_logs).flat_map(|sl| &sl.log_records).collect()
    }

    fn the_metrics(data: &Data) -> Vec<&Metric> {
        let Data::Metrics(r) = data else { panic!("not metrics") };
        r.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).collect()
    }

    fn points(m: &Metric) -> Vec<&NumberDataPoint> {
        match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.iter().collect(),
            Some(metric::Data::Gauge(g)) => g.data_points.iter().collect(),
            _ => vec![],
        }
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
        otlp::get(attrs, key)
    }

    fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        otlp::get_str(attrs, key)
    }

    // ---- traces ----

    #[test]
    fn transform_set_where_resource_attribute_matches_changes_only_that_service() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["deployment.environment"], "prod") where resource.attributes["service.name"] == "checkout"
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr_str(&spans[0].attributes, "deployment.environment"), Some("prod"));
        assert_eq!(attr_str(&spans[1].attributes, "deployment.environment"), Some("prod"));
        assert_eq!(attr(&spans[2].attributes, "deployment.environment"), None, "payment span untouched");
    }

    #[test]
    fn transform_delete_key_and_keep_keys_edit_span_attributes() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - delete_key(attributes, "http.request.header.authorization")
      - keep_keys(attributes, ["http.request.method", "http.route", "db.system"]) where kind == SPAN_KIND_SERVER
"#,
            traces(),
        );
        let spans = spans(&out);
        let keys: Vec<&str> = spans[0].attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["http.request.method", "http.route"]);
        assert_eq!(spans[1].attributes.len(), 2, "client span keeps db.statement: where is false");
    }

    #[test]
    fn transform_set_from_missing_attribute_is_a_no_op() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["user.id"], attributes["enduser.id"])
      - set(name, resource.attributes["missing"])
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr(&spans[0].attributes, "user.id"), None);
        assert_eq!(spans[0].name, "GET /api/cart");
    }

    #[test]
    fn transform_status_code_is_set_from_an_int_attribute_comparison() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(status.code, STATUS_CODE_ERROR) where attributes["http.response.status_code"] >= 500
      - set(status.message, "server error") where status.code == STATUS_CODE_ERROR
      - set(attributes["slow"], true) where duration > 200000000
"#,
            traces(),
        );
        let spans = spans(&out);
        let status = spans[0].status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "server error"));
        assert_eq!(
            attr(&spans[0].attributes, "slow"),
            Some(&AnyValue { value: Some(Value::BoolValue(true)) })
        );
        assert_eq!(spans[2].status, None, "200 stays unset");
        assert_eq!(attr(&spans[1].attributes, "slow"), None);
    }

    #[test]
    fn transform_replace_pattern_expands_groups_and_keeps_literal_dollar() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - replace_pattern(attributes["url.path"], "/api/(?P<resource>[a-z]+)/\\d+", "/api/${resource}/{id}")
      - replace_pattern(name, "^(GET|POST) ", "$1 $$ ")
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr_str(&spans[0].attributes, "url.path"), Some("/api/cart/{id}"));
        assert_eq!(spans[0].name, "GET $ /api/cart");
        assert_eq!(spans[2].name, "POST $ /charge");
        assert_eq!(spans[1].name, "SELECT carts");
    }

    #[test]
    fn transform_replace_pattern_on_a_non_string_value_changes_nothing() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements: ['replace_pattern(attributes["http.response.status_code"], "5", "x")']
"#,
            traces(),
        );
        assert_eq!(attr(&spans(&out)[0].attributes, "http.response.status_code"), Some(&int(503)));
    }

    #[test]
    fn transform_replace_all_patterns_renames_keys_and_masks_values() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - replace_all_patterns(attributes, "value", "\\d{4}", "****")
      - replace_all_patterns(attributes, "key", "^http\\.request\\.", "req.")
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr_str(&spans[0].attributes, "url.path"), Some("/api/cart/****"));
        assert_eq!(attr_str(&spans[0].attributes, "req.method"), Some("GET"));
        assert_eq!(attr_str(&spans[0].attributes, "req.header.authorization"), Some("Bearer eyJhbGciOi"));
        assert_eq!(attr(&spans[0].attributes, "http.request.method"), None);
        assert_eq!(
            attr(&spans[0].attributes, "http.response.status_code"),
            Some(&int(503)),
            "ints untouched"
        );
        assert_eq!(spans[0].attributes.len(), 5);
    }

    #[test]
    fn transform_replace_match_replaces_whole_values_matching_a_glob() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - replace_match(attributes["url.path"], "/api/cart/*", "/api/cart/{cartId}")
      - replace_match(name, "SELECT *", "db query")
      - replace_all_matches(attributes, "Bearer *", "[redacted]")
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr_str(&spans[0].attributes, "url.path"), Some("/api/cart/{cartId}"));
        assert_eq!(attr_str(&spans[0].attributes, "http.request.header.authorization"), Some("[redacted]"));
        assert_eq!(spans[0].name, "GET /api/cart", "no match, no change");
        assert_eq!(spans[1].name, "db query");
    }

    #[test]
    fn transform_limit_keeps_priority_keys_then_the_first_others() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements: ['limit(attributes, 2, ["http.response.status_code"])']
"#,
            traces(),
        );
        let keys: Vec<&str> = spans(&out)[0].attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["http.request.method", "http.response.status_code"]);
        let out =
            run("trace_statements: [{context: span, statements: ['limit(attributes, 0, [])']}]", traces());
        assert!(spans(&out).iter().all(|s| s.attributes.is_empty()));
    }

    #[test]
    fn transform_truncate_all_cuts_strings_on_character_boundaries_only() {
        let mut data = traces();
        if let Data::Traces(r) = &mut data {
            let span = &mut r.resource_spans[0].scope_spans[0].spans[0];
            span.attributes.push(kv("user.name", s("Zoë Ångström")));
            span.attributes.push(kv("payload", AnyValue { value: Some(Value::BytesValue(vec![0xff; 64])) }));
        }
        let out =
            run("trace_statements: [{context: span, statements: ['truncate_all(attributes, 3)']}]", data);
        let spans = spans(&out);
        assert_eq!(attr_str(&spans[0].attributes, "http.request.method"), Some("GET"));
        assert_eq!(attr_str(&spans[0].attributes, "url.path"), Some("/ap"));
        assert_eq!(attr_str(&spans[0].attributes, "user.name"), Some("Zo"), "ë is two bytes: cut before it");
        assert_eq!(attr(&spans[0].attributes, "http.response.status_code"), Some(&int(503)));
        assert_eq!(
            attr(&spans[0].attributes, "payload").and_then(|v| v.value.clone()),
            Some(Value::BytesValue(vec![0xff; 64]))
        );
    }

    #[test]
    fn transform_converters_build_values_from_other_fields() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["endpoint"], Concat([attributes["http.request.method"], attributes["http.route"], attributes["nope"]], " "))
      - set(attributes["status_text"], String(attributes["http.response.status_code"]))
      - set(attributes["status_int"], Int("404"))
      - set(attributes["ratio"], Double(attributes["http.response.status_code"]))
      - set(attributes["not_a_number"], Int("abc"))
      - set(attributes["method_lower"], ToLowerCase(attributes["http.request.method"]))
      - set(attributes["is_api"], true) where IsMatch(attributes["url.path"], "^/api/")
      - set(attributes["trace"], trace_id.string)
      - set(attributes["service"], ToUpperCase(resource.attributes["service.name"]))
      - set(attributes["service_hash"], SHA256(resource.attributes["service.name"]))
"#,
            traces(),
        );
        let a = &spans(&out)[0].attributes;
        assert_eq!(attr_str(a, "endpoint"), Some("GET /api/cart "));
        assert_eq!(attr_str(a, "status_text"), Some("503"));
        assert_eq!(attr(a, "status_int"), Some(&int(404)));
        assert_eq!(attr(a, "ratio"), Some(&AnyValue { value: Some(Value::DoubleValue(503.0)) }));
        assert_eq!(attr(a, "not_a_number"), None, "Int of a non-number is nil, and set(nil) does nothing");
        assert_eq!(attr_str(a, "method_lower"), Some("get"));
        assert_eq!(attr(a, "is_api"), Some(&AnyValue { value: Some(Value::BoolValue(true)) }));
        assert_eq!(attr_str(a, "trace"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(attr_str(a, "service"), Some("CHECKOUT"));
        assert_eq!(
            attr_str(a, "service_hash"),
            Some("c7761e58969f7edd498186641b2021e8477e1bcd230de4cf3435242da4a40d14")
        );
    }

    #[test]
    fn transform_where_with_and_or_not_and_trace_id_selects_spans() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["picked"], 1) where (kind == SPAN_KIND_CLIENT or trace_id.string == "4bf92f3577b34da6a3ce929d0e0e4736") and not (name == "GET /api/cart")
      - set(attributes["by_bytes"], 1) where span_id == 0x00f067aa0ba902b7
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr(&spans[0].attributes, "picked"), None);
        assert_eq!(attr(&spans[1].attributes, "picked"), Some(&int(1)));
        assert_eq!(attr(&spans[2].attributes, "picked"), None);
        assert_eq!(attr(&spans[0].attributes, "by_bytes"), Some(&int(1)));
        assert_eq!(attr(&spans[1].attributes, "by_bytes"), None);
    }

    #[test]
    fn transform_group_conditions_are_ored() {
        let out = run(
            r#"
trace_statements:
  - context: span
    conditions:
      - kind == SPAN_KIND_CLIENT
      - attributes["http.request.method"] == "POST"
    statements:
      - set(attributes["selected"], true)
"#,
            traces(),
        );
        let selected: Vec<bool> =
            spans(&out).iter().map(|s| attr(&s.attributes, "selected").is_some()).collect();
        assert_eq!(selected, [false, true, true]);
    }

    #[test]
    fn transform_spanevent_context_reads_its_span_and_resource() {
        let out = run(
            r#"
trace_statements:
  - context: spanevent
    statements:
      - set(attributes["span.name"], span.name) where name == "exception"
      - set(attributes["service"], resource.attributes["service.name"])
      - delete_key(attributes, "exception.message")
"#,
            traces(),
        );
        let event = &spans(&out)[0].events[0];
        assert_eq!(attr_str(&event.attributes, "span.name"), Some("GET /api/cart"));
        assert_eq!(attr_str(&event.attributes, "service"), Some("checkout"));
        assert_eq!(attr(&event.attributes, "exception.message"), None);
        assert_eq!(spans(&out)[0].attributes.len(), 5, "the span's own attributes are untouched");
    }

    #[test]
    fn transform_resource_and_scope_contexts_change_each_once() {
        let mut data = traces();
        if let Data::Traces(r) = &mut data {
            r.resource_spans[1].resource = None;
            r.resource_spans[1].scope_spans[0].scope = None;
        }
        let out = run(
            r#"
trace_statements:
  - context: resource
    statements:
      - set(attributes["cloud.region"], "eu-west-1")
      - delete_key(attributes, "host.name")
  - context: scope
    statements:
      - set(name, "renamed") where name == "io.opentelemetry.http"
      - set(attributes["seen"], true)
"#,
            data,
        );
        let Data::Traces(r) = &out else { panic!() };
        for rs in &r.resource_spans {
            let attrs = otlp::resource_attributes(&rs.resource);
            assert_eq!(attr_str(attrs, "cloud.region"), Some("eu-west-1"), "a missing resource is created");
            assert_eq!(attr(attrs, "host.name"), None);
        }
        assert_eq!(r.resource_spans[0].scope_spans[0].scope.as_ref().unwrap().name, "renamed");
        let created = r.resource_spans[1].scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(created.name, "", "no name to match on a missing scope");
        assert!(attr(&created.attributes, "seen").is_some());
    }

    #[test]
    fn transform_flat_statements_infer_their_context_from_prefixes() {
        let out = run(
            r#"
trace_statements:
  - set(span.attributes["service"], resource.attributes["service.name"]) where span.kind == SPAN_KIND_SERVER
  - set(resource.attributes["processed"], true)
  - set(spanevent.attributes["checked"], true) where spanevent.name == "exception"
"#,
            traces(),
        );
        let spans = spans(&out);
        assert_eq!(attr_str(&spans[0].attributes, "service"), Some("checkout"));
        assert_eq!(attr(&spans[1].attributes, "service"), None);
        assert_eq!(attr_str(&spans[2].attributes, "service"), Some("payment"));
        assert!(attr(&spans[0].events[0].attributes, "checked").is_some());
        let Data::Traces(r) = &out else { panic!() };
        assert!(
            r.resource_spans
                .iter()
                .all(|rs| attr(otlp::resource_attributes(&rs.resource), "processed").is_some())
        );
    }

    #[test]
    fn transform_group_without_context_infers_the_innermost_one() {
        let out = run(
            r#"
trace_statements:
  - conditions: ['resource.attributes["service.name"] == "payment"']
    statements: ['set(span.attributes["team"], "payments")']
"#,
            traces(),
        );
        let teams: Vec<Option<&str>> = spans(&out).iter().map(|s| attr_str(&s.attributes, "team")).collect();
        assert_eq!(teams, [None, None, Some("payments")]);
    }

    #[test]
    fn transform_nested_keys_create_maps_and_merge_maps_merges() {
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["http"]["method"], attributes["http.request.method"])
      - set(attributes["http"]["route"], "/x")
      - merge_maps(attributes["http"], resource.attributes, "insert")
      - merge_maps(attributes["http"], resource.attributes, "update")
      - set(attributes["first"], attributes["http"]["method"])
"#,
            traces(),
        );
        let a = &spans(&out)[0].attributes;
        let Some(Value::KvlistValue(http)) = attr(a, "http").and_then(|v| v.value.as_ref()) else {
            panic!("no map")
        };
        let keys: Vec<&str> = http.values.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["method", "route", "service.name", "host.name"]);
        assert_eq!(attr_str(&http.values, "method"), Some("GET"));
        assert_eq!(attr_str(a, "first"), Some("GET"));
    }

    #[test]
    fn transform_failing_statement_keeps_the_item_and_is_counted() {
        let yaml = r#"
trace_statements:
  - context: span
    statements:
      - delete_key(attributes["http.route"], "x")
      - set(attributes["after"], true)
"#;
        let (out, ctx) = run_with(yaml, traces());
        assert_eq!(ctx.counted_for("statement_errors"), 1, "only the span with http.route fails");
        assert_eq!(ctx.dropped_for("statement_errors"), 0);
        assert_eq!(spans(&out).len(), 3);
        assert!(
            spans(&out).iter().all(|s| attr(&s.attributes, "after").is_some()),
            "ignore: next statement runs"
        );

        let (out, ctx) = run_with(&format!("error_mode: propagate\n{yaml}"), traces());
        assert_eq!(ctx.counted_for("statement_errors"), 1);
        let after: Vec<bool> = spans(&out).iter().map(|s| attr(&s.attributes, "after").is_some()).collect();
        assert_eq!(after, [false, true, true], "propagate: the failing item skips the rest of its group");
    }

    #[test]
    fn transform_bytes_values_that_are_not_utf8_do_not_break_statements() {
        let mut data = traces();
        if let Data::Traces(r) = &mut data {
            r.resource_spans[0].scope_spans[0].spans[0]
                .attributes
                .push(kv("raw", AnyValue { value: Some(Value::BytesValue(vec![0xc3, 0x28, 0xff])) }));
        }
        let out = run(
            r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["raw_hex"], String(attributes["raw"])) where IsMatch(attributes["raw"], "^c328")
      - replace_pattern(attributes["raw"], ".*", "x")
      - set(attributes["raw_len"], Concat([attributes["raw"], "!"], ""))
"#,
            data,
        );
        let a = &spans(&out)[0].attributes;
        assert_eq!(attr_str(a, "raw_hex"), Some("c328ff"));
        assert_eq!(
            attr(a, "raw").and_then(|v| v.value.clone()),
            Some(Value::BytesValue(vec![0xc3, 0x28, 0xff]))
        );
        assert_eq!(attr_str(a, "raw_len"), Some("c328ff!"));
    }

    #[test]
    fn transform_empty_batch_is_not_pushed() {
        let mut p = processor("trace_statements: ['set(span.name, \"x\")']", Signal::Traces);
        let mut ctx = Context::default();
        let mut out = Vec::new();
        let empty = Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { resource: resource("checkout"), ..Default::default() }],
        });
        p.process(Batch::new(Tenant::default(), 1, empty), &mut ctx, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn transform_without_statements_passes_batches_through() {
        let out = run("{}", traces());
        assert_eq!(out, traces());
    }

    // ---- logs ----

    #[test]
    fn transform_logs_mask_body_and_normalise_severity() {
        let out = run(
            r#"
log_statements:
  - context: log
    statements:
      - replace_pattern(body, "card=\\d{12}(\\d{4})", "card=************$1")
      - set(severity_text, "ERROR") where severity_number >= SEVERITY_NUMBER_ERROR and severity_number <= SEVERITY_NUMBER_ERROR4
      - set(severity_text, "INFO") where severity_number == SEVERITY_NUMBER_INFO
      - delete_key(body, "password")
      - set(attributes["msg"], body["msg"])
      - set(attributes["owner"], resource.attributes["service.name"]) where attributes["user.id"] != nil
"#,
            logs(),
        );
        let records = log_records(&out);
        assert_eq!(records[0].body, Some(s("payment failed for user=alice card=************1111")));
        assert_eq!(records[0].severity_text, "ERROR");
        assert_eq!(attr_str(&records[0].attributes, "owner"), Some("checkout"));
        assert_eq!(records[1].severity_text, "INFO");
        let Some(Value::KvlistValue(body)) = records[1].body.as_ref().and_then(|b| b.value.as_ref()) else {
            panic!("body is no longer a map")
        };
        assert_eq!(body.values.len(), 1);
        assert_eq!(attr_str(&records[1].attributes, "msg"), Some("login"));
        assert_eq!(attr(&records[1].attributes, "owner"), None);
    }

    #[test]
    fn transform_logs_map_editor_on_a_string_body_is_an_error_not_a_drop() {
        let (out, ctx) = run_with(
            "log_statements: [{context: log, statements: ['delete_key(body, \"password\")']}]",
            logs(),
        );
        assert_eq!(ctx.counted_for("statement_errors"), 1);
        assert_eq!(log_records(&out).len(), 2);
        assert_eq!(log_records(&out)[0].body, Some(s("payment failed for user=alice card=4111111111111111")));
    }

    #[test]
    fn transform_logs_set_body_and_ids_from_strings() {
        let out = run(
            r#"
log_statements:
  - set(log.body, Concat(["[", log.severity_text, "] ", log.body], "")) where log.severity_number >= 17
  - set(log.trace_id.string, "4bf92f3577b34da6a3ce929d0e0e4736") where log.severity_number == 9
"#,
            logs(),
        );
        let records = log_records(&out);
        assert_eq!(records[0].body, Some(s("[error] payment failed for user=alice card=4111111111111111")));
        assert_eq!(records[1].trace_id.len(), 16);
        assert_eq!(otlp::hex(&records[1].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    // ---- metrics ----

    #[test]
    fn transform_datapoints_read_their_metric_and_metrics_can_be_renamed() {
        let out = run(
            r#"
metric_statements:
  - context: datapoint
    statements:
      - set(attributes["service.name"], resource.attributes["service.name"]) where metric.name == "http.server.request.count"
      - set(value_int, 0) where metric.type == METRIC_DATA_TYPE_SUM and value_int < 5
      - set(attributes["many"], true) where count > 10
  - context: metric
    statements:
      - replace_pattern(name, "^http\\.server\\.", "http.")
      - set(description, "requests") where type == METRIC_DATA_TYPE_SUM and is_monotonic == true
"#,
            metrics(),
        );
        let ms = the_metrics(&out);
        assert_eq!(ms[0].name, "http.request.count");
        assert_eq!(ms[0].description, "requests");
        assert_eq!(ms[1].name, "http.request.duration");
        assert_eq!(ms[1].description, "");
        assert_eq!(ms[2].name, "process.memory.usage");
        let sum = points(ms[0]);
        assert_eq!(attr_str(&sum[0].attributes, "service.name"), Some("checkout"));
        assert_eq!(sum[0].value, Some(number_data_point::Value::AsInt(12)));
        assert_eq!(sum[1].value, Some(number_data_point::Value::AsInt(0)));
        assert!(attr(&points(ms[2])[0].attributes, "service.name").is_none());
        let Some(metric::Data::Histogram(h)) = &ms[1].data else { panic!() };
        assert!(attr(&h.data_points[0].attributes, "many").is_some());
    }

    // ---- configuration ----

    #[test]
    fn config_parse_error_names_statement_and_column() {
        let e = config_error(
            r#"
trace_statements:
  - context: span
    statements:
      - set(name, "a")
      - delete_key(attributes, "b")
      - set(attributes["x"] "y")
"#,
            Signal::Traces,
        );
        assert_eq!(e.path, "trace_statements[0].statements[2]");
        assert!(e.message.starts_with("column 21: expected `,` or `)`"), "{}", e.message);
    }

    #[test]
    fn config_unknown_function_and_bad_arguments_are_errors_at_build() {
        let e = config_error("log_statements: [{context: log, statements: ['flatten(body)']}]", Signal::Logs);
        assert_eq!(e.path, "log_statements[0].statements[0]");
        assert!(e.message.contains("unknown editor `flatten`"));
        let e = config_error(
            "log_statements: [{context: log, statements: ['set(body)', 'keep_matching_keys(attributes, \"[\")']}]",
            Signal::Logs,
        );
        assert_eq!(e.path, "log_statements[0].statements[0]");
        let e = config_error(
            "log_statements: [{context: log, statements: ['keep_matching_keys(attributes, \"[\")']}]",
            Signal::Logs,
        );
        assert_eq!(e.path, "log_statements[0].statements[0]");
        assert!(e.message.starts_with("column 32: invalid regex"), "{}", e.message);
    }

    #[test]
    fn config_unknown_keys_and_error_mode_name_their_path() {
        let e = config_error("trace_statements: [{contxt: span, statements: []}]", Signal::Traces);
        assert_eq!(e.path, "trace_statements[0].contxt");
        assert!(e.message.contains("unknown field"), "{}", e.message);
        let e = config_error("error_mode: loud", Signal::Traces);
        assert_eq!(e.path, "error_mode");
        let e = config_error("flatten_data: true", Signal::Logs);
        assert!(e.message.contains("flatten_data"));
        let e = config_error("trace_statements: [{context: span, statements: []}]", Signal::Traces);
        assert_eq!(e.path, "trace_statements[0].statements");
        let e = config_error("trace_statements: [42]", Signal::Traces);
        assert_eq!(e.path, "trace_statements[0]");
    }

    #[test]
    fn config_context_must_belong_to_the_signal() {
        let e =
            config_error("log_statements: [{context: span, statements: ['set(name, \"x\")']}]", Signal::Logs);
        assert_eq!(e.path, "log_statements[0].context");
        assert!(e.message.contains("resource, scope, log"), "{}", e.message);
        let e = config_error("log_statements: ['set(span.name, \"x\")']", Signal::Logs);
        assert_eq!(e.path, "log_statements[0]");
        assert!(e.message.contains("cannot be used in log_statements"));
    }

    #[test]
    fn config_flat_statement_without_prefix_asks_for_one() {
        let e = config_error(
            "trace_statements: ['set(span.name, \"a\")', 'set(attributes[\"x\"], \"y\")']",
            Signal::Traces,
        );
        assert_eq!(e.path, "trace_statements[1]");
        assert!(
            e.message.starts_with("column 5: `attributes[\"x\"]` needs a context prefix"),
            "{}",
            e.message
        );
    }

    #[test]
    fn config_condition_errors_name_the_condition() {
        let e = config_error(
            "metric_statements: [{context: datapoint, conditions: ['metric.name = \"x\"'], statements: ['set(attributes[\"a\"], 1)']}]",
            Signal::Metrics,
        );
        assert_eq!(e.path, "metric_statements[0].conditions[0]");
        assert!(e.message.starts_with("column 13:"), "{}", e.message);
    }

    #[test]
    fn config_statements_for_another_signal_only_is_a_wrong_signal_error() {
        let e = config_error("log_statements: ['set(log.severity_text, \"INFO\")']", Signal::Traces);
        assert_eq!(e.path, "");
        assert!(e.message.contains("applies to logs pipelines, not traces"), "{}", e.message);
        // The other signals' statements are still checked, so one config serves all pipelines.
        let e = config_error(
            "trace_statements: ['set(span.name, \"x\")']\nlog_statements: ['set(log.nme, \"x\")']",
            Signal::Traces,
        );
        assert_eq!(e.path, "log_statements[0]");
    }

    #[test]
    fn config_per_group_error_mode_overrides_the_default() {
        let yaml = r#"
error_mode: propagate
trace_statements:
  - context: span
    error_mode: ignore
    statements:
      - delete_key(attributes["http.route"], "x")
      - set(attributes["after"], true)
"#;
        let (out, _) = run_with(yaml, traces());
        assert!(spans(&out).iter().all(|s| attr(&s.attributes, "after").is_some()));
    }

    #[test]
    fn merge_maps_with_a_huge_source_map_runs_in_linear_time() {
        // A structured log body with many keys (nested kvlist entries are not bounded at ingest
        // the way attributes are), merged into the attributes: one look-up per key, not a scan.
        let n = 40_000;
        let body: Vec<KeyValue> = (0..n).map(|i| kv(&format!("k{i}"), int(i))).collect();
        let mut attributes = vec![kv("k7", s("old")), kv("keep", s("x"))];
        attributes.push(kv("k7", s("duplicate")));
        let data = Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(Value::KvlistValue(KeyValueList { values: body })),
                        }),
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let started = std::time::Instant::now();
        let out = run(
            r#"
log_statements:
  - context: log
    statements:
      - merge_maps(attributes, body, "upsert")
      - merge_maps(attributes, body, "insert")
      - merge_maps(attributes, body, "update")
"#,
            data,
        );
        // Quadratic merging takes minutes here (debug build); linear takes milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
        let a = &log_records(&out)[0].attributes;
        assert_eq!(a.len(), n as usize + 2, "every body key once, plus keep and the duplicate k7");
        assert_eq!(attr(a, "k7"), Some(&int(7)), "the first k7 is the one updated");
        assert_eq!(a[2], kv("k7", s("duplicate")), "a duplicate key is left where it was");
        assert_eq!(attr(a, "k39999"), Some(&int(39_999)));
        assert_eq!(attr_str(a, "keep"), Some("x"));
    }

    #[test]
    fn set_into_missing_list_fails_without_adding_an_empty_attribute() {
        let yaml = r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["tags"][0], "x")
      - set(attributes["labels"]["team"][0], "x")
"#;
        let before = traces();
        let (out, ctx) = run_with(yaml, before.clone());
        assert_eq!(ctx.counted_for("statement_errors"), 6, "both statements fail on each of 3 spans");
        assert_eq!(out, before, "a failing statement leaves the item as it was");
    }

    #[test]
    fn set_into_missing_body_list_fails_without_adding_an_empty_body() {
        let mut before = logs();
        if let Data::Logs(r) = &mut before {
            r.resource_logs[0].scope_logs[0].log_records[0].body = None;
        }
        let (out, ctx) = run_with("log_statements: ['set(log.body[0], \"x\")']", before.clone());
        assert!(ctx.counted_for("statement_errors") >= 1);
        assert_eq!(log_records(&out)[0].body, None);
    }

    #[test]
    fn replace_all_patterns_key_mode_without_a_match_keeps_keys_unallocated() {
        let mut data = traces();
        let Data::Traces(r) = &mut data else { unreachable!() };
        let before: Vec<*const u8> =
            r.resource_spans[0].scope_spans[0].spans[0].attributes.iter().map(|kv| kv.key.as_ptr()).collect();
        let mut p = processor(
            r#"trace_statements: ['replace_all_patterns(span.attributes, "key", "^nomatch$", "x")']"#,
            Signal::Traces,
        );
        let mut ctx = Context::default();
        let mut out = Vec::new();
        p.process(Batch::new(Tenant::parse("acme").unwrap(), 1, data), &mut ctx, &mut out);
        let Data::Traces(r) = &out[0].data else { unreachable!() };
        let after: Vec<*const u8> =
            r.resource_spans[0].scope_spans[0].spans[0].attributes.iter().map(|kv| kv.key.as_ptr()).collect();
        assert_eq!(before, after, "no key was copied");
        assert_eq!(ctx.counted_for("statement_errors"), 0);
    }
}
