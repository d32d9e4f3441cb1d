//! The official OTLP/JSON examples are accepted as sent, and the same data as protobuf over HTTP
//! and gRPC; every item reaches the processing stage.

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, logs_service_client::LogsServiceClient},
    metrics::v1::{ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient},
    trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
};
use prost::Message;
use serde_json::Value;

use crate::harness::{Pharos, accepted_items, conformance_dir, pipeline_items};

/// (file, signal, path) for every example.
const EXAMPLES: &[(&str, &str, &str)] = &[
    ("trace.json", "traces", "/v1/traces"),
    ("logs.json", "logs", "/v1/logs"),
    ("events.json", "logs", "/v1/logs"),
    ("metrics.json", "metrics", "/v1/metrics"),
];

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Counts the items of an OTLP/JSON document by walking the JSON itself (not Pharos's code).
fn count_items(doc: &Value, signal: &str) -> u64 {
    match signal {
        "traces" => array(doc, "resourceSpans")
            .flat_map(|r| array(r, "scopeSpans"))
            .flat_map(|s| array(s, "spans"))
            .count() as u64,
        "logs" => array(doc, "resourceLogs")
            .flat_map(|r| array(r, "scopeLogs"))
            .flat_map(|s| array(s, "logRecords"))
            .count() as u64,
        "metrics" => array(doc, "resourceMetrics")
            .flat_map(|r| array(r, "scopeMetrics"))
            .flat_map(|s| array(s, "metrics"))
            .map(|m| {
                ["gauge", "sum", "histogram", "exponentialHistogram", "summary"]
                    .iter()
                    .filter_map(|k| m.get(*k))
                    .map(|d| array(d, "dataPoints").count() as u64)
                    .sum::<u64>()
            })
            .sum(),
        _ => unreachable!(),
    }
}

fn read_example(file: &str) -> String {
    std::fs::read_to_string(conformance_dir().join(file)).unwrap()
}

fn protobuf_of(signal: &str, json: &str) -> Vec<u8> {
    match signal {
        "traces" => serde_json::from_str::<ExportTraceServiceRequest>(json).unwrap().encode_to_vec(),
        "logs" => serde_json::from_str::<ExportLogsServiceRequest>(json).unwrap().encode_to_vec(),
        "metrics" => serde_json::from_str::<ExportMetricsServiceRequest>(json).unwrap().encode_to_vec(),
        _ => unreachable!(),
    }
}

async fn grpc_export(pharos: &Pharos, signal: &str, json: &str, tenant: &str) {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("x-scope-orgid", tenant.parse().unwrap());
    let url = pharos.grpc_url();
    match signal {
        "traces" => {
            let mut c = TraceServiceClient::connect(url).await.unwrap();
            let req = serde_json::from_str::<ExportTraceServiceRequest>(json).unwrap();
            let resp = c.export(tonic::Request::from_parts(metadata, Default::default(), req)).await.unwrap();
            assert_eq!(resp.into_inner().partial_success, None);
        }
        "logs" => {
            let mut c = LogsServiceClient::connect(url).await.unwrap();
            let req = serde_json::from_str::<ExportLogsServiceRequest>(json).unwrap();
            let resp = c.export(tonic::Request::from_parts(metadata, Default::default(), req)).await.unwrap();
            assert_eq!(resp.into_inner().partial_success, None);
        }
        "metrics" => {
            let mut c = MetricsServiceClient::connect(url).await.unwrap();
            let req = serde_json::from_str::<ExportMetricsServiceRequest>(json).unwrap();
            let resp = c.export(tonic::Request::from_parts(metadata, Default::default(), req)).await.unwrap();
            assert_eq!(resp.into_inner().partial_success, None);
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_examples_are_accepted_over_json_protobuf_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let mut expected: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for (file, signal, path) in EXAMPLES {
        let json = read_example(file);
        let items = count_items(&serde_json::from_str(&json).unwrap(), signal);
        assert!(items > 0, "{file} has no items?");

        let resp = client
            .post(pharos.http_url(path))
            .header("content-type", "application/json")
            .header("x-scope-orgid", "json")
            .body(json.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file} over HTTP/JSON");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.text().await.unwrap(), "{}", "{file}: full success has no partialSuccess");

        let resp = client
            .post(pharos.http_url(path))
            .header("content-type", "application/x-protobuf")
            .header("x-scope-orgid", "protobuf")
            .body(protobuf_of(signal, &json))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file} over HTTP/protobuf");
        assert_eq!(resp.headers()["content-type"], "application/x-protobuf");

        grpc_export(&pharos, signal, &json, "grpc").await;
        for tenant in ["json", "protobuf", "grpc"] {
            *expected.entry((signal, tenant)).or_default() += items;
        }
    }
    for ((signal, tenant), want) in expected {
        let got = pharos.wait_for_metric(&pipeline_items(signal, tenant), want as f64).await;
        assert_eq!(got, want as f64, "{signal} items of tenant {tenant} counted by the processors");
        assert_eq!(pharos.metric(&accepted_items(signal, tenant)).await, want as f64);
    }
    let (status, log) = pharos.terminate();
    assert!(status.success(), "exit {status:?}\n{log}");
}
