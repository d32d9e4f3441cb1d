//! Bad input gets the status the protocol defines and a message naming the problem, and the
//! server keeps serving everyone else.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use prost::Message;
use tonic_types::StatusExt;

use crate::harness::{Pharos, pipeline_items};

const TRACE_ID: &str = "5B8EFFF798038103D269B633813FC60C";
const SPAN_ID: &str = "EEE19B7EC3C1B174";

/// An OTLP/JSON traces request with one span per `(trace id, span id, extra span fields)`.
fn spans_json(spans: &[(&str, &str, &str)]) -> String {
    let spans: Vec<String> = spans
        .iter()
        .map(|(t, s, extra)| {
            format!(
                r#"{{"traceId":"{t}","spanId":"{s}","name":"op","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"{extra}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"scope":{{"name":"lib"}},"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

fn one_span(extra: &str) -> String {
    spans_json(&[(TRACE_ID, SPAN_ID, extra)])
}

struct Reply {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `message` of a JSON google.rpc.Status body.
    fn message(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not a JSON status: {}", self.text()));
        v["message"].as_str().unwrap_or_default().to_string()
    }
}

async fn post(
    pharos: &Pharos,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut req = reqwest::Client::new().post(pharos.http_url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        retry_after: resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()),
        content_type: resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

async fn post_json(pharos: &Pharos, body: impl Into<reqwest::Body>) -> Reply {
    post(pharos, "/v1/traces", &[("content-type", "application/json")], body).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn nested_array(depth: usize) -> String {
    let mut v = r#"{"intValue":"1"}"#.to_string();
    for _ in 0..depth {
        v = format!(r#"{{"arrayValue":{{"values":[{v}]}}}}"#);
    }
    format!(r#","attributes":[{{"key":"deep","value":{v}}}]"#)
}

fn small_limits() -> Vec<&'static str> {
    vec![
        "otlp.http.max_body_size=1MiB",
        "limits.max_decompressed_size=1MiB",
        "limits.max_attributes=8",
        "limits.max_nesting_depth=4",
        "otlp.http.request_timeout=1s",
        "otlp.http.read_header_timeout=1s",
        "otlp.grpc.max_message_size=64KiB",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_otlp_http_requests_get_clear_errors_and_good_ones_still_pass() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &small_limits());

    // Malformed bodies.
    let r =
        post(&pharos, "/v1/traces", &[("content-type", "application/x-protobuf")], vec![0xffu8, 0xff, 0xff])
            .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, "application/x-protobuf");
    let status = tonic_types::pb::Status::decode(&r.body[..]).unwrap();
    assert_eq!(status.code, 3);
    assert!(status.message.contains("protobuf"), "{}", status.message);
    let r = post_json(&pharos, r#"{"resourceSpans": ["#).await;
    assert_eq!((r.status, r.content_type.as_str()), (400, "application/json"));
    assert!(r.message().contains("JSON"), "{}", r.message());

    // OTLP/JSON edge cases.
    let r = post_json(&pharos, one_span("").replace(r#""kind":2"#, r#""kind":"SPAN_KIND_SERVER""#)).await;
    assert_eq!(r.status, 400, "enum names are not OTLP/JSON: {}", r.text());
    let r = post_json(&pharos, spans_json(&[("W47/95gDgQPSabYzgT/GDA==", SPAN_ID, "")])).await;
    assert_eq!(r.status, 400, "base64 trace id: {}", r.text());
    let r = post_json(&pharos, spans_json(&[("5B8EFF", SPAN_ID, "")])).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("trace_id of 3 bytes"), "{}", r.message());
    let r = post_json(&pharos, spans_json(&[("00000000000000000000000000000000", SPAN_ID, "")])).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("all-zero trace_id"), "{}", r.message());
    // One good span and one bad: partial success, the count and the reason.
    let r =
        post_json(&pharos, spans_json(&[(TRACE_ID, SPAN_ID, ""), (TRACE_ID, "0000000000000000", "")])).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");
    assert!(v["partialSuccess"]["errorMessage"].as_str().unwrap().contains("all-zero span_id"));
    // int64 as a number and as a string, lower-case hex ids, unknown fields: all fine.
    let mixed = one_span(r#","droppedAttributesCount":0,"someFutureField":{"x":1}"#)
        .replace(r#""endTimeUnixNano":"1544712661000000000""#, r#""endTimeUnixNano":1544712661000000000"#)
        .replace(TRACE_ID, &TRACE_ID.to_lowercase());
    let r = post_json(&pharos, mixed).await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    // snake_case keys are unknown fields: nothing arrives, and the answer says why.
    let r = post_json(&pharos, one_span("").replace("resourceSpans", "resource_spans")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("lowerCamelCase"), "{}", r.text());
    // Nesting: over the configured depth, and far beyond any parser's recursion limit.
    let r = post_json(&pharos, one_span(&nested_array(5))).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("max_nesting_depth"), "{}", r.message());
    assert_eq!(post_json(&pharos, one_span(&nested_array(4))).await.status, 200);
    let r = post_json(&pharos, one_span(&nested_array(500))).await;
    assert_eq!(r.status, 400);
    // Invalid UTF-8 inside a string.
    let mut bytes = one_span("").into_bytes();
    let at = bytes.windows(4).position(|w| w == b"\"op\"").unwrap() + 1;
    bytes[at] = 0xff;
    assert_eq!(post_json(&pharos, bytes).await.status, 400);
    // Too many attributes (limit 8).
    let attrs: Vec<String> =
        (0..10).map(|i| format!(r#"{{"key":"k{i}","value":{{"intValue":"{i}"}}}}"#)).collect();
    let r = post_json(&pharos, one_span(&format!(r#","attributes":[{}]"#, attrs.join(",")))).await;
    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("10 attributes") && r.message().contains("max_attributes of 8"),
        "{}",
        r.message()
    );

    // Media types and encodings.
    let r = post(&pharos, "/v1/traces", &[("content-type", "text/plain")], one_span("")).await;
    assert_eq!(r.status, 415);
    assert!(r.message().contains("text/plain"));
    let r = post(
        &pharos,
        "/v1/traces",
        &[("content-type", "application/json"), ("content-encoding", "br")],
        one_span(""),
    )
    .await;
    assert_eq!(r.status, 415);
    assert!(r.message().contains("br"));
    let r = post(
        &pharos,
        "/v1/traces",
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        gzip(one_span("").as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "gzip works: {}", r.text());
    let z = zstd::encode_all(one_span("").as_bytes(), 3).unwrap();
    let r =
        post(&pharos, "/v1/traces", &[("content-type", "application/json"), ("content-encoding", "zstd")], z)
            .await;
    assert_eq!(r.status, 200, "zstd works: {}", r.text());

    // Sizes: a body over max_body_size, and bombs that decompress past max_decompressed_size.
    let r = post_json(&pharos, vec![b' '; 2 << 20]).await;
    assert_eq!(r.status, 413);
    assert!(r.message().contains("max_body_size"), "{}", r.message());
    let gzip_bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(gzip_bomb.len() < 1 << 20);
    let r = post(
        &pharos,
        "/v1/traces",
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        gzip_bomb,
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(r.message().contains("max_decompressed_size"), "{}", r.message());
    let zstd_bomb = zstd::encode_all(&vec![b' '; 256 << 20][..], 19).unwrap();
    let r = post(
        &pharos,
        "/v1/traces",
        &[("content-type", "application/json"), ("content-encoding", "zstd")],
        zstd_bomb,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.retry_after, None, "413 must not invite a retry");

    // Tenants that could reach a file path, or break the rules.
    let long = "a".repeat(151);
    for tenant in ["..", "../../etc", "a/b", "a:b", "%2e%2e", "%252e%252e", "a|b", long.as_str()] {
        let r = post(
            &pharos,
            "/v1/traces",
            &[("content-type", "application/json"), ("x-scope-orgid", tenant)],
            one_span(""),
        )
        .await;
        assert_eq!(r.status, 400, "tenant {tenant:?}");
        assert!(r.message().contains("X-Scope-OrgID"), "{}", r.message());
        assert_eq!(r.retry_after, None);
    }
    for entry in walk(&pharos.data_dir) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.contains("..") && !name.contains('%') && !name.contains(':'),
            "suspicious file {entry:?}"
        );
    }

    // Wrong method.
    let r = reqwest::get(pharos.http_url("/v1/traces")).await.unwrap();
    assert_eq!(r.status(), 405);

    // Good requests still pass, and only they were counted.
    let r = post(
        &pharos,
        "/v1/traces",
        &[("content-type", "application/json"), ("x-scope-orgid", "good")],
        one_span(""),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(pharos.wait_for_metric(&pipeline_items("traces", "good"), 1.0).await, 1.0);
    // default tenant: 1 (partial) + 1 (mixed) + 1 (depth 4) + 1 (gzip) + 1 (zstd)
    assert_eq!(pharos.wait_for_metric(&pipeline_items("traces", "default"), 5.0).await, 5.0);
    let metrics = pharos.metrics_text().await;
    assert!(metrics.contains(r#"pharos_ingest_items_rejected_total{signal="traces",tenant="default",reason="invalid_trace_id"} 2"#), "{metrics}");
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_time_out_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &small_limits());
    // A body that never finishes.
    let mut slow_body = TcpStream::connect(pharos.http).unwrap();
    write!(slow_body, "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{").unwrap();
    // Headers that never finish.
    let mut slow_headers = TcpStream::connect(pharos.http).unwrap();
    write!(slow_headers, "POST /v1/traces HTTP/1.1\r\nHost: x\r\n").unwrap();

    let r = post_json(&pharos, one_span("")).await;
    assert_eq!(r.status, 200, "others are served meanwhile");

    slow_body.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    let _ = slow_body.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "slow body got: {reply:?}");
    assert!(reply.contains("did not arrive within 1 seconds"), "{reply}");

    slow_headers.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    let started = std::time::Instant::now();
    let n = slow_headers.read(&mut buf).unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "slow headers got {reply:?}");
    assert!(started.elapsed() < Duration::from_secs(9), "the connection was closed by the header timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn back_pressure_invites_retry_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut sets = small_limits();
    sets.extend([
        "queue.partitions=1",
        "queue.segment_size=4KiB",
        "queue.disk_budget=4KiB",
        "limits.retry_after=2s",
    ]);
    let pharos = Pharos::start(dir.path(), &sets);
    // A request bigger than what the queue may hold: the queue pushes back.
    let pad = format!(r#","attributes":[{{"key":"pad","value":{{"stringValue":"{}"}}}}]"#, "x".repeat(6000));
    let r = post_json(&pharos, one_span(&pad)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.retry_after.as_deref(), Some("2"));
    assert!(r.message().contains("queue is full"), "{}", r.message());

    // gRPC: UNAVAILABLE with RetryInfo for back-pressure.
    let req: ExportTraceServiceRequest = serde_json::from_str(&one_span(&pad)).unwrap();
    let mut client = TraceServiceClient::connect(pharos.grpc_url()).await.unwrap();
    let err = client.export(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.get_details_retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(2)));

    // gRPC: a message over max_message_size is RESOURCE_EXHAUSTED without RetryInfo (no retry).
    let big =
        format!(r#","attributes":[{{"key":"pad","value":{{"stringValue":"{}"}}}}]"#, "x".repeat(40_000));
    let mut req: ExportTraceServiceRequest = serde_json::from_str(&one_span(&big)).unwrap();
    let span = req.resource_spans[0].scope_spans[0].spans[0].clone();
    req.resource_spans[0].scope_spans[0].spans.push(span);
    let err = client.export(req).await.unwrap_err();
    assert!(matches!(err.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange), "{err:?}");
    assert!(err.get_details_retry_info().is_none());

    // gRPC: bad data is INVALID_ARGUMENT, never retried.
    let bad: ExportTraceServiceRequest =
        serde_json::from_str(&spans_json(&[("00000000000000000000000000000000", SPAN_ID, "")])).unwrap();
    let err = client.export(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.get_details_retry_info().is_none());
    let mut tenant_req =
        tonic::Request::new(serde_json::from_str::<ExportTraceServiceRequest>(&one_span("")).unwrap());
    tenant_req.metadata_mut().insert("x-scope-orgid", "../x".parse().unwrap());
    assert_eq!(client.export(tenant_req).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Small requests still fit and are acknowledged.
    let r = post_json(&pharos, one_span("")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.retry_after, None);
}
