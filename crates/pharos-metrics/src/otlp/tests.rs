//! Conversion tests on realistic requests: every metric kind, resource and scope labels,
//! delta state, exemplars, staleness, and the shared OTLP conformance example.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar as OtlpExemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::model::is_stale_nan;

/// 2023-11-14T22:13:20Z in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;
const MS0: i64 = 1_700_000_000_000;
const SEC: u64 = 1_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn checkout_resource() -> Vec<KeyValue> {
    vec![
        s("service.name", "checkout"),
        s("service.namespace", "shop"),
        s("service.instance.id", "pod-7f9c"),
        s("host.name", "node-1"),
        s("k8s.namespace.name", "prod"),
    ]
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.opentelemetry.http".to_owned(),
        version: "1.2.0".to_owned(),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        description: format!("{name} help"),
        data: Some(data),
        ..Default::default()
    }
}

fn number(time: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: T0 - 60 * SEC,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(monotonic: bool, temporality: i32, points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum { data_points: points, aggregation_temporality: temporality, is_monotonic: monotonic })
}

fn delta_point(start: u64, time: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint { start_time_unix_nano: start, ..number(time, v, vec![s("http.route", "/cart")]) }
}

fn exemplar_with_ids(v: f64, time: u64) -> OtlpExemplar {
    OtlpExemplar {
        time_unix_nano: time,
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        value: Some(exemplar::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// The series as `labels → samples`, labels in Prometheus's text form.
fn series_map(c: &Batch) -> BTreeMap<String, Vec<(i64, f64)>> {
    c.series.iter().map(|(l, s)| (l.to_string(), s.iter().map(|s| (s.t, s.v)).collect())).collect()
}

const SCOPE: &str = r#"otel_scope_name="io.opentelemetry.http", otel_scope_version="1.2.0""#;

fn default_converter() -> Converter {
    Converter::new(OtlpOptions::default())
}

#[test]
fn convert_gauge_sets_job_instance_and_scope_labels() {
    let req = request(
        checkout_resource(),
        vec![metric(
            "process.memory.usage",
            "By",
            Data::Gauge(Gauge {
                data_points: vec![number(T0, 52_428_800.0, vec![s("memory.type", "heap")])],
            }),
        )],
    );
    let c = default_converter().convert(&req);
    let want = format!(
        r#"{{__name__="process_memory_usage_bytes", instance="pod-7f9c", job="shop/checkout", memory_type="heap", {SCOPE}}}"#
    );
    assert_eq!(series_map(&c).get(&want), Some(&vec![(MS0, 52_428_800.0)]), "{:#?}", series_map(&c));
    let meta = &c.metadata[0];
    assert_eq!(meta.0, "process_memory_usage_bytes");
    assert_eq!(meta.1.kind, MetricType::Gauge);
    assert_eq!(meta.1.unit, "bytes");
    assert_eq!(meta.1.help, "process.memory.usage help");
    assert!(c.dropped.is_empty());
}

#[test]
fn convert_resource_with_other_attributes_emits_target_info_at_latest_time() {
    let points = vec![number(T0, 1.0, vec![]), number(T0 + 15 * SEC, 2.0, vec![s("a", "b")])];
    let req = request(
        checkout_resource(),
        vec![metric("queue.depth", "{items}", Data::Gauge(Gauge { data_points: points }))],
    );
    let c = default_converter().convert(&req);
    let map = series_map(&c);
    let target = r#"{__name__="target_info", host_name="node-1", instance="pod-7f9c", job="shop/checkout", k8s_namespace_name="prod"}"#;
    assert_eq!(map.get(target), Some(&vec![(MS0 + 15_000, 1.0)]), "{map:#?}");
    assert!(c.metadata.iter().any(|(n, m)| n == "target_info" && m.kind == MetricType::Gauge));
    assert!(map.keys().any(|k| k.starts_with(r#"{__name__="queue_depth", "#)));
}

#[test]
fn convert_resource_with_only_service_attributes_has_no_target_info() {
    let resource = vec![s("service.name", "checkout")];
    let req = request(
        resource,
        vec![metric("up", "", Data::Gauge(Gauge { data_points: vec![number(T0, 1.0, vec![])] }))],
    );
    let c = default_converter().convert(&req);
    let map = series_map(&c);
    assert_eq!(map.len(), 1, "{map:#?}");
    let want = format!(r#"{{__name__="up", job="checkout", {SCOPE}}}"#);
    assert!(map.contains_key(&want), "{map:#?}");
}

#[test]
fn convert_promoted_resource_attribute_is_on_every_series_unless_the_point_has_it() {
    let opts = OtlpOptions {
        promote_resource_attributes: vec!["k8s.namespace.name".to_owned(), "absent.attr".to_owned()],
        promote_scope_metadata: false,
        ..OtlpOptions::default()
    };
    let points = vec![
        number(T0, 1.0, vec![]),
        number(T0, 2.0, vec![s("k8s.namespace.name", "override"), s("x", "y")]),
    ];
    let req = request(
        checkout_resource(),
        vec![metric("jobs.active", "", Data::Gauge(Gauge { data_points: points }))],
    );
    let c = Converter::new(opts).convert(&req);
    let map = series_map(&c);
    let a =
        r#"{__name__="jobs_active", instance="pod-7f9c", job="shop/checkout", k8s_namespace_name="prod"}"#;
    let b = r#"{__name__="jobs_active", instance="pod-7f9c", job="shop/checkout", k8s_namespace_name="override", x="y"}"#;
    assert_eq!(map.get(a), Some(&vec![(MS0, 1.0)]), "{map:#?}");
    assert_eq!(map.get(b), Some(&vec![(MS0, 2.0)]), "{map:#?}");
}

#[test]
fn convert_scope_metadata_off_leaves_scope_labels_out() {
    let opts = OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() };
    let req = request(
        vec![s("service.name", "api")],
        vec![metric("up", "", Data::Gauge(Gauge { data_points: vec![number(T0, 1.0, vec![])] }))],
    );
    let c = Converter::new(opts).convert(&req);
    assert_eq!(series_map(&c).keys().collect::<Vec<_>>(), vec![r#"{__name__="up", job="api"}"#]);
}

#[test]
fn convert_scope_attributes_and_schema_url_become_otel_scope_labels() {
    let mut req = request(
        vec![s("service.name", "api")],
        vec![metric("up", "", Data::Gauge(Gauge { data_points: vec![number(T0, 1.0, vec![])] }))],
    );
    let sm = &mut req.resource_metrics[0].scope_metrics[0];
    sm.schema_url = "https://opentelemetry.io/schemas/1.24.0".to_owned();
    sm.scope.as_mut().expect("scope set").attributes = vec![s("library.mode", "auto")];
    let c = default_converter().convert(&req);
    let want = Labels::from_pairs([
        ("__name__", "up"),
        ("job", "api"),
        ("otel_scope_library_mode", "auto"),
        ("otel_scope_name", "io.opentelemetry.http"),
        ("otel_scope_schema_url", "https://opentelemetry.io/schemas/1.24.0"),
        ("otel_scope_version", "1.2.0"),
    ])
    .to_string();
    assert!(series_map(&c).contains_key(&want), "{:#?}", series_map(&c));
}

#[test]
fn convert_point_attributes_are_sanitised_and_collisions_joined() {
    let attrs = vec![
        s("http.method", "GET"),
        s("http_method", "POST"),
        kv("http.status_code", any_value::Value::IntValue(200)),
        kv("retry", any_value::Value::BoolValue(false)),
        kv("ratio", any_value::Value::DoubleValue(0.25)),
        s("2xx", "yes"),
        s("job", "from-attribute"),
        s("__name__", "evil"),
    ];
    let req = request(
        vec![s("service.name", "api")],
        vec![metric("inflight", "", Data::Gauge(Gauge { data_points: vec![number(T0, 3.0, attrs)] }))],
    );
    let c =
        Converter::new(OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() }).convert(&req);
    let want = r#"{__name__="inflight", http_method="GET;POST", http_status_code="200", job="api", key_2xx="yes", key__name__="evil", ratio="0.25", retry="false"}"#;
    assert_eq!(series_map(&c).keys().collect::<Vec<_>>(), vec![want]);
}

#[test]
fn convert_monotonic_cumulative_sum_is_counter_with_exemplar() {
    let mut p = number(T0, 1027.0, vec![s("http.route", "/cart")]);
    p.exemplars = vec![exemplar_with_ids(0.3, T0 - SEC)];
    let req = request(
        checkout_resource(),
        vec![metric("http.server.requests", "{request}", sum(true, CUMULATIVE, vec![p]))],
    );
    let c = default_converter().convert(&req);
    let want = format!(
        r#"{{__name__="http_server_requests_total", http_route="/cart", instance="pod-7f9c", job="shop/checkout", {SCOPE}}}"#
    );
    assert_eq!(series_map(&c).get(&want), Some(&vec![(MS0, 1027.0)]));
    assert_eq!(c.metadata[0].0, "http_server_requests_total");
    assert_eq!(c.metadata[0].1.kind, MetricType::Counter);
    assert_eq!(c.exemplars.len(), 1);
    let (series, ex) = &c.exemplars[0];
    assert_eq!(series.to_string(), want);
    assert_eq!(ex.value, 0.3);
    assert_eq!(ex.t, MS0 - 1000);
    assert_eq!(
        ex.labels.to_string(),
        r#"{span_id="0102030405060708", trace_id="0102030405060708090a0b0c0d0e0f10"}"#
    );
}

#[test]
fn convert_non_monotonic_sum_is_gauge_without_total() {
    let req = request(
        vec![s("service.name", "db")],
        vec![metric(
            "db.client.connections.usage",
            "{connection}",
            sum(false, CUMULATIVE, vec![number(T0, 12.0, vec![])]),
        )],
    );
    let c = default_converter().convert(&req);
    assert!(series_map(&c).keys().any(|k| k.starts_with(r#"{__name__="db_client_connections_usage", "#)));
    assert_eq!(c.metadata[0].1.kind, MetricType::Gauge);
}

#[test]
fn convert_delta_sum_accumulates_across_requests_and_resets_on_earlier_start() {
    let mut conv = default_converter();
    let series = format!(
        r#"{{__name__="orders_total", http_route="/cart", instance="pod-7f9c", job="shop/checkout", {SCOPE}}}"#
    );
    let mut values = Vec::new();
    for (start, time, v) in [
        (T0, T0 + 10 * SEC, 3.0),
        (T0 + 10 * SEC, T0 + 20 * SEC, 2.0),
        (T0 + 20 * SEC, T0 + 30 * SEC, 4.0),
        // The producer restarted: its window starts before the previous point's end.
        (T0 + 25 * SEC, T0 + 40 * SEC, 1.0),
        (T0 + 40 * SEC, T0 + 50 * SEC, 5.0),
    ] {
        let req = request(
            checkout_resource(),
            vec![metric("orders", "", sum(true, DELTA, vec![delta_point(start, time, v)]))],
        );
        let c = conv.convert(&req);
        let samples = series_map(&c).remove(&series).unwrap_or_default();
        values.extend(samples.into_iter().map(|(_, v)| v));
    }
    assert_eq!(values, vec![3.0, 5.0, 9.0, 1.0, 6.0]);
    assert_eq!(conv.delta_series(), 1);
    assert_eq!(conv.forget_delta_series_before(T0 + 60 * SEC), 1);
    assert_eq!(conv.delta_series(), 0);
}

#[test]
fn convert_delta_sum_out_of_order_point_is_dropped() {
    let mut conv = default_converter();
    let points = vec![delta_point(T0, T0 + 10 * SEC, 3.0), delta_point(T0 - 10 * SEC, T0, 2.0)];
    let c = conv.convert(&request(checkout_resource(), vec![metric("orders", "", sum(true, DELTA, points))]));
    assert_eq!(c.samples(), 2, "the counter and target_info");
    assert_eq!(c.dropped, vec![(reason::DELTA_OUT_OF_ORDER, 1)]);
}

#[test]
fn convert_delta_state_full_drops_points_of_new_series() {
    let mut conv = Converter::new(OtlpOptions { max_delta_series: 2, ..OtlpOptions::default() });
    let points: Vec<NumberDataPoint> = ["/a", "/b", "/c", "/d"]
        .iter()
        .map(|r| NumberDataPoint {
            start_time_unix_nano: T0,
            ..number(T0 + SEC, 1.0, vec![s("http.route", r)])
        })
        .collect();
    let c = conv.convert(&request(
        vec![s("service.name", "api")],
        vec![metric("hits", "", sum(true, DELTA, points))],
    ));
    assert_eq!(c.series.len(), 2);
    assert_eq!(c.dropped, vec![(reason::DELTA_STATE_FULL, 2)]);
    assert_eq!(conv.delta_series(), 2);
}

fn latency_histogram(temporality: i32, counts: Vec<u64>, time: u64, start: u64) -> Metric {
    let count = counts.iter().sum();
    metric(
        "http.server.request.duration",
        "s",
        Data::Histogram(Histogram {
            aggregation_temporality: temporality,
            data_points: vec![HistogramDataPoint {
                attributes: vec![s("http.route", "/cart")],
                start_time_unix_nano: start,
                time_unix_nano: time,
                count,
                sum: Some(1.25),
                bucket_counts: counts,
                explicit_bounds: vec![0.05, 0.1, 0.5],
                exemplars: vec![exemplar_with_ids(0.07, time), exemplar_with_ids(2.5, time)],
                ..Default::default()
            }],
        }),
    )
}

#[test]
fn convert_histogram_has_cumulative_buckets_sum_count_and_bucket_exemplars() {
    let req = request(
        vec![s("service.name", "api")],
        vec![latency_histogram(CUMULATIVE, vec![4, 3, 2, 1], T0, T0 - 60 * SEC)],
    );
    let c =
        Converter::new(OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() }).convert(&req);
    let map = series_map(&c);
    let name = "http_server_request_duration_seconds";
    let l = |suffix: &str, le: Option<&str>| match le {
        Some(le) => format!(r#"{{__name__="{name}{suffix}", http_route="/cart", job="api", le="{le}"}}"#),
        None => format!(r#"{{__name__="{name}{suffix}", http_route="/cart", job="api"}}"#),
    };
    let want: BTreeMap<String, Vec<(i64, f64)>> = [
        (l("_bucket", Some("0.05")), 4.0),
        (l("_bucket", Some("0.1")), 7.0),
        (l("_bucket", Some("0.5")), 9.0),
        (l("_bucket", Some("+Inf")), 10.0),
        (l("_sum", None), 1.25),
        (l("_count", None), 10.0),
    ]
    .into_iter()
    .map(|(k, v)| (k, vec![(MS0, v)]))
    .collect();
    assert_eq!(map, want);
    assert_eq!(
        c.metadata,
        vec![(
            name.to_owned(),
            Metadata {
                kind: MetricType::Histogram,
                help: "http.server.request.duration help".to_owned(),
                unit: "seconds".to_owned()
            }
        )]
    );
    let exemplar_series: Vec<String> = c.exemplars.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(exemplar_series, vec![l("_bucket", Some("0.1")), l("_bucket", Some("+Inf"))]);
}

#[test]
fn convert_delta_histogram_accumulates_bucket_counts() {
    let mut conv = Converter::new(OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() });
    let first = conv.convert(&request(
        vec![s("service.name", "api")],
        vec![latency_histogram(DELTA, vec![1, 0, 0, 0], T0, T0 - 10 * SEC)],
    ));
    assert_eq!(first.samples(), 6);
    let second = conv.convert(&request(
        vec![s("service.name", "api")],
        vec![latency_histogram(DELTA, vec![2, 1, 0, 1], T0 + 10 * SEC, T0)],
    ));
    let map = series_map(&second);
    let get = |k: &str| map.get(k).map(|s| s[0].1);
    let base = r#"http_route="/cart", job="api""#;
    let bucket = |le: &str| {
        format!(r#"{{__name__="http_server_request_duration_seconds_bucket", {base}, le="{le}"}}"#)
    };
    assert_eq!(get(&bucket("0.05")), Some(3.0));
    assert_eq!(get(&bucket("0.1")), Some(4.0));
    assert_eq!(get(&bucket("0.5")), Some(4.0));
    assert_eq!(get(&bucket("+Inf")), Some(5.0));
    assert_eq!(
        get(&format!(r#"{{__name__="http_server_request_duration_seconds_sum", {base}}}"#)),
        Some(2.5)
    );
    assert_eq!(
        get(&format!(r#"{{__name__="http_server_request_duration_seconds_count", {base}}}"#)),
        Some(5.0)
    );
}

fn exp_histogram(
    temporality: i32,
    time: u64,
    start: u64,
    scale: i32,
    offset: i32,
    counts: Vec<u64>,
) -> Metric {
    let count = counts.iter().sum::<u64>() + 1;
    metric(
        "rpc.server.duration",
        "ms",
        Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: temporality,
            data_points: vec![ExponentialHistogramDataPoint {
                start_time_unix_nano: start,
                time_unix_nano: time,
                count,
                sum: Some(42.0),
                scale,
                zero_count: 1,
                positive: Some(Buckets { offset, bucket_counts: counts }),
                exemplars: vec![exemplar_with_ids(3.0, time)],
                ..Default::default()
            }],
        }),
    )
}

#[test]
fn convert_exponential_histogram_becomes_classic_buckets_at_upper_boundaries() {
    let req = request(
        vec![s("service.name", "rpc")],
        vec![exp_histogram(CUMULATIVE, T0, T0 - SEC, 1, 0, vec![2, 3, 4])],
    );
    let c =
        Converter::new(OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() }).convert(&req);
    let map = series_map(&c);
    let b =
        |le: &str| format!(r#"{{__name__="rpc_server_duration_milliseconds_bucket", job="rpc", le="{le}"}}"#);
    // Scale 1: base √2; index 0 covers (1, √2], 1 covers (√2, 2], 2 covers (2, 2√2].
    assert_eq!(map.get(&b("0")), Some(&vec![(MS0, 1.0)]), "{map:#?}");
    assert_eq!(map.get(&b("1.4142135623730951")), Some(&vec![(MS0, 3.0)]));
    assert_eq!(map.get(&b("2")), Some(&vec![(MS0, 6.0)]));
    assert_eq!(map.get(&b("2.8284271247461903")), Some(&vec![(MS0, 10.0)]));
    assert_eq!(map.get(&b("+Inf")), Some(&vec![(MS0, 10.0)]));
    let count = r#"{__name__="rpc_server_duration_milliseconds_count", job="rpc"}"#;
    assert_eq!(map.get(count), Some(&vec![(MS0, 10.0)]));
    assert_eq!(c.metadata[0].1.kind, MetricType::Histogram);
    // The exemplar of 3.0 lies above the last finite bound.
    assert_eq!(c.exemplars[0].0.to_string(), b("+Inf"));
}

#[test]
fn convert_delta_exponential_histogram_accumulates() {
    let mut conv = Converter::new(OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() });
    conv.convert(&request(
        vec![s("service.name", "rpc")],
        vec![exp_histogram(DELTA, T0, T0 - SEC, 0, 0, vec![1])],
    ));
    let c = conv.convert(&request(
        vec![s("service.name", "rpc")],
        vec![exp_histogram(DELTA, T0 + SEC, T0, 0, 1, vec![2])],
    ));
    let map = series_map(&c);
    let b =
        |le: &str| format!(r#"{{__name__="rpc_server_duration_milliseconds_bucket", job="rpc", le="{le}"}}"#);
    assert_eq!(map.get(&b("0")), Some(&vec![(MS0 + 1000, 2.0)]), "{map:#?}");
    assert_eq!(map.get(&b("2")), Some(&vec![(MS0 + 1000, 3.0)]));
    assert_eq!(map.get(&b("4")), Some(&vec![(MS0 + 1000, 5.0)]));
    assert_eq!(map.get(&b("+Inf")), Some(&vec![(MS0 + 1000, 5.0)]));
    let sum = r#"{__name__="rpc_server_duration_milliseconds_sum", job="rpc"}"#;
    assert_eq!(map.get(sum), Some(&vec![(MS0 + 1000, 84.0)]));
}

#[test]
fn convert_exponential_histogram_bad_scale_is_dropped() {
    let req = request(vec![s("service.name", "rpc")], vec![exp_histogram(CUMULATIVE, T0, 0, 42, 0, vec![1])]);
    let c = default_converter().convert(&req);
    assert!(c.series.is_empty());
    assert_eq!(c.dropped, vec![(reason::EXPONENTIAL_HISTOGRAM_SCALE, 1)]);
}

#[test]
fn convert_summary_has_quantiles_sum_and_count() {
    let point = SummaryDataPoint {
        time_unix_nano: T0,
        count: 200,
        sum: 31.5,
        quantile_values: vec![
            ValueAtQuantile { quantile: 0.5, value: 0.12 },
            ValueAtQuantile { quantile: 0.99, value: 0.9 },
        ],
        ..Default::default()
    };
    let req = request(
        vec![s("service.name", "legacy")],
        vec![metric("gc.pause", "s", Data::Summary(Summary { data_points: vec![point] }))],
    );
    let c =
        Converter::new(OtlpOptions { promote_scope_metadata: false, ..OtlpOptions::default() }).convert(&req);
    let got: Vec<String> = series_map(&c).into_iter().map(|(k, v)| format!("{k} {}", v[0].1)).collect();
    assert_eq!(
        got,
        vec![
            r#"{__name__="gc_pause_seconds", job="legacy", quantile="0.5"} 0.12"#,
            r#"{__name__="gc_pause_seconds", job="legacy", quantile="0.99"} 0.9"#,
            r#"{__name__="gc_pause_seconds_count", job="legacy"} 200"#,
            r#"{__name__="gc_pause_seconds_sum", job="legacy"} 31.5"#,
        ]
    );
    assert_eq!(c.metadata[0].1.kind, MetricType::Summary);
}

#[test]
fn convert_no_recorded_value_writes_staleness_markers() {
    let mut gauge_point = number(T0, 0.0, vec![]);
    gauge_point.flags = 1;
    let mut hist = latency_histogram(CUMULATIVE, vec![1, 1, 1, 1], T0, T0 - SEC);
    if let Some(Data::Histogram(h)) = &mut hist.data {
        h.data_points[0].flags = 1;
    }
    let req = request(
        vec![s("service.name", "api")],
        vec![metric("temperature", "Cel", Data::Gauge(Gauge { data_points: vec![gauge_point] })), hist],
    );
    let c = default_converter().convert(&req);
    assert_eq!(c.series.len(), 1 + 6);
    for (labels, samples) in &c.series {
        assert_eq!(samples.len(), 1);
        assert!(is_stale_nan(samples[0].v), "{labels} not stale");
    }
    assert!(c.exemplars.is_empty());
}

#[test]
fn convert_no_recorded_value_forgets_delta_total() {
    let mut conv = default_converter();
    let res = || vec![s("service.name", "api")];
    conv.convert(&request(
        res(),
        vec![metric("hits", "", sum(true, DELTA, vec![delta_point(T0, T0 + SEC, 5.0)]))],
    ));
    let mut gone = delta_point(T0 + SEC, T0 + 2 * SEC, 0.0);
    gone.flags = 1;
    let c = conv.convert(&request(res(), vec![metric("hits", "", sum(true, DELTA, vec![gone]))]));
    assert!(is_stale_nan(c.series[0].1[0].v));
    assert_eq!(conv.delta_series(), 0);
    let c = conv.convert(&request(
        res(),
        vec![metric("hits", "", sum(true, DELTA, vec![delta_point(T0 + 2 * SEC, T0 + 3 * SEC, 2.0)]))],
    ));
    assert_eq!(c.series[0].1[0].v, 2.0);
}

#[test]
fn convert_invalid_points_are_counted_by_reason() {
    let no_value = NumberDataPoint { value: None, ..number(T0, 0.0, vec![]) };
    let req = request(
        vec![s("service.name", "api")],
        vec![
            metric("a", "", Data::Gauge(Gauge { data_points: vec![number(0, 1.0, vec![]), no_value] })),
            metric("b", "", sum(true, 0, vec![number(T0, 1.0, vec![]), number(T0, 2.0, vec![])])),
            metric("...", "", Data::Gauge(Gauge { data_points: vec![number(T0, 1.0, vec![])] })),
            Metric { name: "c".to_owned(), ..Default::default() },
        ],
    );
    let c = default_converter().convert(&req);
    assert!(c.series.is_empty());
    assert_eq!(
        c.dropped,
        vec![
            (reason::INVALID_METRIC_NAME, 1),
            (reason::INVALID_TEMPORALITY, 2),
            (reason::MISSING_TIMESTAMP, 1),
            (reason::MISSING_VALUE, 1),
            (reason::NO_DATA, 1),
        ]
    );
    assert_eq!(c.dropped_points(), 6);
}

#[test]
fn convert_without_suffixes_only_sanitises_names() {
    let opts = OtlpOptions {
        add_unit_and_type_suffixes: false,
        promote_scope_metadata: false,
        ..OtlpOptions::default()
    };
    let req = request(
        vec![s("service.name", "api")],
        vec![
            metric("http.server.requests", "{request}", sum(true, CUMULATIVE, vec![number(T0, 1.0, vec![])])),
            metric("cpu.utilization", "1", Data::Gauge(Gauge { data_points: vec![number(T0, 0.5, vec![])] })),
            latency_histogram(CUMULATIVE, vec![1, 0, 0, 0], T0, T0 - SEC),
        ],
    );
    let c = Converter::new(opts).convert(&req);
    let names: std::collections::BTreeSet<String> =
        c.series.iter().map(|(l, _)| l.get(METRIC_NAME).to_owned()).collect();
    let want: std::collections::BTreeSet<String> = [
        "http_server_requests",
        "cpu_utilization",
        "http_server_request_duration_bucket",
        "http_server_request_duration_sum",
        "http_server_request_duration_count",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, want);
}

#[test]
fn convert_exemplar_with_long_attributes_keeps_only_ids() {
    let mut e = exemplar_with_ids(1.0, T0);
    e.filtered_attributes = vec![s("user.id", &"u".repeat(80))];
    let mut short = exemplar_with_ids(2.0, 0);
    short.filtered_attributes = vec![s("user.id", "42")];
    short.span_id = vec![0; 8];
    let mut p = number(T0, 9.0, vec![]);
    p.exemplars = vec![e, short, OtlpExemplar { value: None, ..Default::default() }];
    let req =
        request(vec![s("service.name", "api")], vec![metric("hits", "", sum(true, CUMULATIVE, vec![p]))]);
    let c = default_converter().convert(&req);
    let labels: Vec<String> = c.exemplars.iter().map(|(_, e)| e.labels.to_string()).collect();
    assert_eq!(
        labels,
        vec![
            r#"{span_id="0102030405060708", trace_id="0102030405060708090a0b0c0d0e0f10"}"#.to_owned(),
            r#"{trace_id="0102030405060708090a0b0c0d0e0f10", user_id="42"}"#.to_owned(),
        ]
    );
    assert_eq!(c.exemplars[1].1.t, MS0, "a zero exemplar time takes the point's");
}

#[test]
fn convert_same_series_twice_in_request_keeps_samples_in_time_order() {
    let points = vec![number(T0 + SEC, 2.0, vec![]), number(T0, 1.0, vec![]), number(T0 + SEC, 3.0, vec![])];
    let req = request(
        vec![s("service.name", "api")],
        vec![metric("g", "", Data::Gauge(Gauge { data_points: points }))],
    );
    let c = default_converter().convert(&req);
    assert_eq!(c.series.len(), 1);
    let samples: Vec<(i64, f64)> = c.series[0].1.iter().map(|s| (s.t, s.v)).collect();
    assert_eq!(samples, vec![(MS0, 1.0), (MS0 + 1000, 3.0)]);
}

#[test]
fn convert_hostile_input_does_not_panic() {
    let weird_hist = HistogramDataPoint {
        time_unix_nano: u64::MAX,
        count: u64::MAX,
        sum: Some(f64::NAN),
        bucket_counts: vec![u64::MAX, u64::MAX, 3],
        explicit_bounds: vec![f64::NAN, f64::INFINITY, -1.0, 7.0],
        exemplars: vec![OtlpExemplar {
            trace_id: vec![1; 3],
            value: Some(exemplar::Value::AsInt(i64::MIN)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let weird_exp = ExponentialHistogramDataPoint {
        time_unix_nano: T0,
        scale: -10,
        zero_threshold: f64::NAN,
        positive: Some(Buckets { offset: i32::MAX, bucket_counts: vec![u64::MAX; 300] }),
        negative: Some(Buckets { offset: i32::MIN, bucket_counts: vec![1; 300] }),
        ..Default::default()
    };
    let deep = (0..200).fold(AnyValue { value: Some(any_value::Value::IntValue(1)) }, |inner, _| AnyValue {
        value: Some(any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
            values: vec![inner],
        })),
    });
    let resource = vec![
        KeyValue { key: String::new(), value: None, ..Default::default() },
        KeyValue { key: "deep".to_owned(), value: Some(deep), ..Default::default() },
        s("service.name", ""),
    ];
    let metrics = vec![
        metric(
            "h",
            "",
            Data::Histogram(Histogram {
                aggregation_temporality: DELTA,
                data_points: vec![weird_hist.clone(), weird_hist],
            }),
        ),
        metric(
            "e",
            "",
            Data::ExponentialHistogram(ExponentialHistogram {
                aggregation_temporality: DELTA,
                data_points: vec![
                    weird_exp.clone(),
                    ExponentialHistogramDataPoint { time_unix_nano: T0 + 1, scale: 20, ..weird_exp },
                ],
            }),
        ),
        metric(
            "\u{1F600}.é",
            "{}/{}",
            sum(
                true,
                DELTA,
                vec![number(
                    T0,
                    f64::NAN,
                    vec![KeyValue { key: "\u{0}".to_owned(), value: None, ..Default::default() }],
                )],
            ),
        ),
    ];
    let mut req = request(resource, metrics);
    req.resource_metrics.push(ResourceMetrics::default());
    let c = default_converter().convert(&req);
    for (labels, _) in &c.series {
        assert!(!labels.get(METRIC_NAME).is_empty(), "{labels}");
        for l in labels.iter() {
            assert!(l.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'), "{labels}");
        }
    }
}

/// The shared OTLP conformance example: one resource (`service.name` only), one scope with
/// an attribute, a delta counter, a gauge, a delta histogram and a delta exponential
/// histogram, all of unit `1` at 2018-12-13T14:51:00.3Z.
#[test]
fn convert_conformance_example_yields_expected_series() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/otlp/metrics.json");
    let json = std::fs::read_to_string(path).expect("conformance example present");
    let req: ExportMetricsServiceRequest = serde_json::from_str(&json).expect("conformance example parses");
    let c = default_converter().convert(&req);
    let t = 1_544_712_660_300;
    let l = |name: &str, attr: &str, le: Option<&str>| {
        let mut pairs = vec![
            ("__name__", name),
            (attr, "some value"),
            ("job", "my.service"),
            ("otel_scope_my_scope_attribute", "some scope attribute"),
            ("otel_scope_name", "my.library"),
            ("otel_scope_version", "1.0.0"),
        ];
        pairs.extend(le.map(|le| ("le", le)));
        Labels::from_pairs(pairs).to_string()
    };
    let plain = |name: &str, attr: &str| l(name, attr, None);
    let hist = |suffix: &str, le: Option<&str>| l(&format!("my_histogram{suffix}"), "my_histogram_attr", le);
    let exp = |suffix: &str, le: Option<&str>| {
        l(&format!("my_exponential_histogram{suffix}"), "my_exponential_histogram_attr", le)
    };
    let want: BTreeMap<String, Vec<(i64, f64)>> = [
        (plain("my_counter_total", "my_counter_attr"), 5.0),
        (plain("my_gauge_ratio", "my_gauge_attr"), 10.0),
        (hist("_bucket", Some("1")), 1.0),
        (hist("_bucket", Some("+Inf")), 2.0),
        (hist("_sum", None), 2.0),
        (hist("_count", None), 2.0),
        (exp("_bucket", Some("0")), 1.0),
        (exp("_bucket", Some("8")), 3.0),
        (exp("_bucket", Some("+Inf")), 3.0),
        (exp("_sum", None), 10.0),
        (exp("_count", None), 3.0),
    ]
    .into_iter()
    .map(|(k, v)| (k, vec![(t, v)]))
    .collect();
    assert_eq!(series_map(&c), want);
    let meta: Vec<(&str, MetricType, &str)> =
        c.metadata.iter().map(|(n, m)| (n.as_str(), m.kind, m.help.as_str())).collect();
    assert_eq!(
        meta,
        vec![
            ("my_counter_total", MetricType::Counter, "I am a Counter"),
            ("my_gauge_ratio", MetricType::Gauge, "I am a Gauge"),
            ("my_histogram", MetricType::Histogram, "I am a Histogram"),
            ("my_exponential_histogram", MetricType::Histogram, "I am an Exponential Histogram"),
        ]
    );
    assert!(c.dropped.is_empty());
    assert!(c.exemplars.is_empty());
}
