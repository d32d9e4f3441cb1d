//! Loki push into the queue: the answers Loki gives (204, 400, 413, 415) on both HTTP ports, and
//! the entries made durable (counted by the processors' counting stage).

use std::io::Write;

use pharos_core::loki::{Entry, PushRequest, Stream, Timestamp};
use prost::Message;

use crate::harness::{Pharos, pipeline_items};

struct Reply {
    status: u16,
    text: String,
}

async fn post(
    url: &str,
    content_type: Option<&str>,
    encoding: Option<&str>,
    tenant: &str,
    body: Vec<u8>,
) -> Reply {
    let mut req = reqwest::Client::new().post(url).header("x-scope-orgid", tenant).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(enc) = encoding {
        req = req.header("content-encoding", enc);
    }
    let resp = req.send().await.unwrap();
    Reply { status: resp.status().as_u16(), text: resp.text().await.unwrap() }
}

async fn json(url: &str, tenant: &str, body: &str) -> Reply {
    post(url, Some("application/json"), None, tenant, body.as_bytes().to_vec()).await
}

async fn protobuf(url: &str, tenant: &str, request: &PushRequest) -> Reply {
    post(url, Some("application/x-protobuf"), None, tenant, snappy(&request.encode_to_vec())).await
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn stream(labels: &str, lines: &[&str]) -> Stream {
    Stream {
        labels: labels.into(),
        entries: lines
            .iter()
            .enumerate()
            .map(|(i, line)| Entry {
                timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64)),
                line: line.to_string(),
                structured_metadata: vec![],
                parsed: vec![],
            })
            .collect(),
        hash: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_push_json_and_snappy_protobuf_are_acknowledged_and_made_durable() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["queue.partitions=2"]);
    let url = pharos.http_url("/loki/api/v1/push");

    let r = json(
        &url,
        "loki-json",
        r#"{"streams":[
            {"stream":{"app":"api","env":"prod"},"values":[["1700000000000000000","GET /"],["1700000000000000001","GET /a",{"trace_id":"abc"}]]},
            {"stream":{"app":"web"},"values":[["1700000000000000002","hello"]]}]}"#,
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "JSON push");

    let body = br#"{"streams":[{"stream":{"app":"api"},"values":[["1700000000000000003","a"],["1700000000000000004","b"]]}]}"#;
    let r = post(&url, Some("application/json"), Some("gzip"), "loki-json", gzip(body)).await;
    assert_eq!(r.status, 204, "gzip JSON push: {}", r.text);

    let request = PushRequest {
        streams: vec![
            stream(r#"{app="api", env="prod"}"#, &["one", "two", "three"]),
            stream(r#"{job="batch",app="worker"}"#, &["four", "five"]),
        ],
    };
    let r = protobuf(&url, "loki-proto", &request).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "snappy protobuf push");

    // The API port takes pushes too, as Loki serves push and queries on one address.
    let api_url = format!("http://{}/loki/api/v1/push", pharos.api);
    let one = PushRequest { streams: vec![stream(r#"{app="api"}"#, &["six"])] };
    let r = protobuf(&api_url, "loki-proto", &one).await;
    assert_eq!(r.status, 204, "push on the API port: {}", r.text);

    // Loki's OTLP logs path.
    let otlp = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","body":{"stringValue":"otlp line"}}]}]}]}"#;
    let r = json(&pharos.http_url("/otlp/v1/logs"), "loki-otlp", otlp).await;
    assert_eq!(r.status, 200, "OTLP logs on /otlp/v1/logs: {}", r.text);

    assert_eq!(pharos.wait_for_metric(&pipeline_items("logs", "loki-json"), 5.0).await, 5.0);
    assert_eq!(pharos.wait_for_metric(&pipeline_items("logs", "loki-proto"), 6.0).await, 6.0);
    assert_eq!(pharos.wait_for_metric(&pipeline_items("logs", "loki-otlp"), 1.0).await, 1.0);
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_push_bad_input_gets_what_loki_answers() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(
        dir.path(),
        &["limits.max_line_size=16", "otlp.http.max_body_size=4KiB", "limits.max_decompressed_size=8KiB"],
    );
    let url = pharos.http_url("/loki/api/v1/push");

    let r =
        json(&url, "bad", r#"{"streams":[{"stream":{"app":"x"},"values":[[1700000000000000000,"line"]]}]}"#)
            .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("timestamp 1700000000000000000 is a number"), "{}", r.text);

    let r = protobuf(&url, "bad", &PushRequest { streams: vec![stream(r#"{app="x""#, &["a"])] }).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains(r#"invalid labels string {app="x": expected `,` or `}`"#), "{}", r.text);

    let r = json(&url, "bad", r#"{"streams":[{"stream":{},"values":[["1","a"]]}]}"#).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("at least one label pair is required per stream"), "{}", r.text);

    let many: Vec<String> = (0..16).map(|i| format!(r#""l{i}":"v""#)).collect();
    let r = json(
        &url,
        "bad",
        &format!(r#"{{"streams":[{{"stream":{{{}}},"values":[["1","a"]]}}]}}"#, many.join(",")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("over the limit max_labels_per_stream of 15"), "{}", r.text);

    // An over-long line is refused; the valid entries of the same push are kept.
    let mixed = PushRequest {
        streams: vec![
            stream(r#"{app="x"}"#, &["ok", "this line is far too long"]),
            stream(r#"{app="y"}"#, &["fine"]),
        ],
    };
    let r = protobuf(&url, "mixed", &mixed).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.text,
        "1 of 3 log records rejected; the first because: a line of stream {app=\"x\"} is 25 bytes long, \
         over the limit max_line_size of 16 bytes\n"
    );

    // Too large as sent, and too large once decompressed.
    let big =
        format!(r#"{{"streams":[{{"stream":{{"app":"x"}},"values":[["1","{}"]]}}]}}"#, "a".repeat(10_000));
    let r = json(&url, "bad", &big).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.text.contains("max_body_size of 4096 bytes"), "{}", r.text);
    let r = post(&url, Some("application/json"), Some("gzip"), "bad", gzip(big.as_bytes())).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.text.contains("max_decompressed_size of 8192 bytes"), "{}", r.text);
    let r = post(&url, Some("application/x-protobuf"), None, "bad", vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00])
        .await;
    assert_eq!(r.status, 413, "a snappy header claiming 4 GiB: {}", r.text);

    let r = post(&url, Some("text/plain"), None, "bad", b"a line".to_vec()).await;
    assert_eq!(r.status, 415, "{}", r.text);

    assert_eq!(pharos.wait_for_metric(&pipeline_items("logs", "mixed"), 2.0).await, 2.0);
    assert_eq!(pharos.metric(&pipeline_items("logs", "bad")).await, 0.0);
}
