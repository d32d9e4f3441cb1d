//! Prometheus remote write 1.0 and 2.0 into the queue: the answers the specifications define, and
//! the real Prometheus as a sender.

use std::{process::Command, time::Duration};

use pharos_core::prompb::{
    v1::{Label, Sample, TimeSeries, WriteRequest},
    v2,
};
use prost::Message;

use crate::harness::{Pharos, free_port, metric_value, peer, pipeline_items};

const V2_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

fn series(name: &str, job: &str, samples: usize) -> TimeSeries {
    TimeSeries {
        labels: vec![
            Label { name: "__name__".into(), value: name.into() },
            Label { name: "job".into(), value: job.into() },
        ],
        samples: (0..samples)
            .map(|i| Sample { value: i as f64, timestamp: 1_700_000_000_000 + i as i64 * 15_000 })
            .collect(),
        ..Default::default()
    }
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).unwrap()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn write(
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
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
    }
}

fn header(r: &Reply, name: &str) -> String {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_v1_and_v2_are_acknowledged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["queue.partitions=2"]);
    let url = pharos.http_url("/api/v1/write");

    let v1 = WriteRequest {
        timeseries: (0..6).map(|i| series("up", &format!("job{i}"), 5)).collect(),
        metadata: vec![],
    };
    let r =
        write(&url, Some("application/x-protobuf"), Some("snappy"), "rw1", snappy(&v1.encode_to_vec())).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(header(&r, "x-prometheus-remote-write-samples-written"), "30");

    // The same on the API port, where Prometheus users also point remote_write.
    let api_url = format!("http://{}/api/v1/write", pharos.api);
    let r = write(&api_url, None, None, "rw1", snappy(&v1.encode_to_vec())).await;
    assert_eq!(r.status, 204, "no content type or encoding means 1.0 and snappy: {}", r.text);

    let v2 = v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "http_requests_total".into(),
            "job".into(),
            "api".into(),
            "trace_id".into(),
            "abc".into(),
        ],
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    Sample { value: 1.0, timestamp: 1_700_000_000_000 },
                    Sample { value: 2.0, timestamp: 1_700_000_015_000 },
                ],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![5, 6],
                    value: 2.0,
                    timestamp: 1_700_000_015_000,
                }],
                created_timestamp: 1_699_999_000_000,
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 6],
                samples: vec![Sample { value: 5.0, timestamp: 1_700_000_000_000 }],
                ..Default::default()
            },
        ],
    };
    let r = write(&url, Some(V2_TYPE), Some("snappy"), "rw2", snappy(&v2.encode_to_vec())).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(header(&r, "x-prometheus-remote-write-samples-written"), "3");
    assert_eq!(header(&r, "x-prometheus-remote-write-histograms-written"), "0");
    assert_eq!(header(&r, "x-prometheus-remote-write-exemplars-written"), "1");

    assert_eq!(pharos.wait_for_metric(&pipeline_items("metrics", "rw1"), 60.0).await, 60.0);
    assert_eq!(pharos.wait_for_metric(&pipeline_items("metrics", "rw2"), 3.0).await, 3.0);
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_bad_input_gets_what_prometheus_answers() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["limits.max_decompressed_size=1MiB"]);
    let url = pharos.http_url("/api/v1/write");
    let good = WriteRequest { timeseries: vec![series("up", "a", 2)], metadata: vec![] };

    let r = write(&url, Some("application/x-protobuf"), Some("snappy"), "bad", b"not snappy at all".to_vec())
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("snappy"), "{}", r.text);
    // Framed snappy instead of block snappy.
    let mut framed = Vec::new();
    {
        use std::io::Write;
        let mut w = snap::write::FrameEncoder::new(&mut framed);
        w.write_all(&good.encode_to_vec()).unwrap();
    }
    assert_eq!(write(&url, None, Some("snappy"), "bad", framed).await.status, 400);
    // A snappy header that claims 4 GiB: refused before allocating.
    for claim in [vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00], vec![0x80, 0x80, 0x80, 0x80, 0x08, 0x00]] {
        let r = write(&url, None, Some("snappy"), "bad", claim).await;
        assert_eq!(r.status, 413, "{}", r.text);
        assert!(r.text.contains("max_decompressed_size"), "{}", r.text);
    }
    // Encodings and types: 415 for 2.0, 400 for 1.0.
    let body = snappy(&good.encode_to_vec());
    assert_eq!(write(&url, Some(V2_TYPE), Some("gzip"), "bad", body.clone()).await.status, 415);
    assert_eq!(
        write(&url, Some("application/x-protobuf"), Some("gzip"), "bad", body.clone()).await.status,
        400
    );
    assert_eq!(
        write(&url, Some("application/x-protobuf;proto=foo.Bar"), Some("snappy"), "bad", body.clone())
            .await
            .status,
        415
    );
    assert_eq!(write(&url, Some("application/json"), Some("snappy"), "bad", body).await.status, 415);

    // Bad series are refused with 400 while the good ones of the same request are kept.
    let mut unsorted = series("up", "b", 1);
    unsorted.labels.reverse();
    let mut duplicate = series("up", "c", 1);
    duplicate.labels.push(Label { name: "job".into(), value: "d".into() });
    let mut nameless = series("up", "e", 1);
    nameless.labels.remove(0);
    let mut empty = series("up", "f", 1);
    empty.labels[1].value.clear();
    for (bad, why) in [
        (unsorted, "not sorted"),
        (duplicate, "duplicate label name"),
        (nameless, "no metric name"),
        (empty, "empty value"),
    ] {
        let req = WriteRequest { timeseries: vec![series("up", "ok", 3), bad], metadata: vec![] };
        let r = write(&url, None, Some("snappy"), "mixed", snappy(&req.encode_to_vec())).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text);
        assert!(r.text.contains(why), "{why}: {}", r.text);
        assert!(r.text.starts_with("1 of 4 data points rejected; the first because: "), "{}", r.text);
        assert_eq!(header(&r, "x-prometheus-remote-write-samples-written"), "3");
    }
    // v2: a reference past the symbol table.
    let v2 = v2::Request {
        symbols: vec!["".into(), "__name__".into(), "x".into()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 9],
            samples: vec![Sample { value: 1.0, timestamp: 1 }],
            ..Default::default()
        }],
    };
    let r = write(&url, Some(V2_TYPE), Some("snappy"), "bad", snappy(&v2.encode_to_vec())).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // The good series of the mixed requests, and nothing else, were kept.
    assert_eq!(pharos.wait_for_metric(&pipeline_items("metrics", "mixed"), 12.0).await, 12.0);
    assert_eq!(pharos.metric(&pipeline_items("metrics", "bad")).await, 0.0);
}

/// The real Prometheus scrapes Pharos's own /metrics and remote-writes it to Pharos.
#[tokio::test(flavor = "multi_thread")]
async fn real_prometheus_remote_writes_to_pharos_without_failures() {
    let Some(prometheus) = peer("prometheus", "prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let prom_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pharos\n    static_configs:\n      - targets: ['{api}']\nremote_write:\n  - url: http://{http}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
        api = pharos.api,
        http = pharos.http
    );
    let config_path = prom_dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut counted = 0.0;
    while std::time::Instant::now() < deadline {
        counted = pharos.metric(&pipeline_items("metrics", "default")).await;
        if counted > 200.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let prom_metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await;
    let prom_text = match prom_metrics {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(counted > 200.0, "samples from Prometheus counted: {counted}");
    let failed: f64 = prom_text
        .lines()
        .filter(|l| l.starts_with("prometheus_remote_storage_samples_failed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 0.0, "Prometheus saw failed remote writes");
    let ok = metric_value(
        &pharos.metrics_text().await,
        "pharos_ingest_requests_total{signal=\"metrics\",protocol=\"prometheus_remote_write_v1\",outcome=\"ok\"}",
    );
    assert!(ok > 0.0, "no successful remote-write request recorded");
}

/// An instant query's single sample value for `tenant`, or `None` while the result is empty.
async fn instant(pharos: &Pharos, tenant: &str, query: &str, time_ms: i64) -> Option<f64> {
    let url = format!("http://{}/api/v1/query", pharos.api);
    let time = format!("{}", time_ms as f64 / 1000.0);
    let text = reqwest::Client::new()
        .get(url)
        .header("x-scope-orgid", tenant)
        .query(&[("query", query), ("time", time.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "success", "{query}: {v}");
    v["data"]["result"][0]["value"][1].as_str().map(|s| s.parse().unwrap())
}

async fn wait_instant(pharos: &Pharos, tenant: &str, query: &str, time_ms: i64, want: f64) -> Option<f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = instant(pharos, tenant, query, time_ms).await;
        if got == Some(want) || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Out-of-order and old samples get 400 as Prometheus answers them, the other samples of the
/// request are written, stored samples are untouched, and a retried write is accepted again.
#[tokio::test(flavor = "multi_thread")]
async fn remote_write_out_of_order_samples_get_400_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["queue.partitions=2"]);
    let url = pharos.http_url("/api/v1/write");
    let t0 = 1_700_000_000_000i64;
    let at = t0 + 60_000;

    // Three samples 0, 1, 2 at t0, t0+15s, t0+30s.
    let first = WriteRequest { timeseries: vec![series("up", "ooo", 3)], metadata: vec![] };
    let r = write(&url, None, Some("snappy"), "t", snappy(&first.encode_to_vec())).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let count = r#"count_over_time(up{job="ooo"}[5m])"#;
    assert_eq!(wait_instant(&pharos, "t", count, at, 3.0).await, Some(3.0));

    // The same request again (a retry after a lost answer): accepted, nothing doubled.
    let r = write(&url, None, Some("snappy"), "t", snappy(&first.encode_to_vec())).await;
    assert_eq!(r.status, 204, "a retried write is accepted: {}", r.text);

    // Older than the newest stored sample, with new values; beside it a good series.
    let mut late = series("up", "ooo", 0);
    late.samples = vec![
        Sample { value: 99.0, timestamp: t0 + 15_000 },
        Sample { value: 5.0, timestamp: t0 - 3_600_000 },
    ];
    let req = WriteRequest { timeseries: vec![late, series("up", "fresh", 1)], metadata: vec![] };
    let r = write(&url, None, Some("snappy"), "t", snappy(&req.encode_to_vec())).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("out of order sample"), "{}", r.text);
    assert!(r.text.contains("2 of 3 data points rejected"), "{}", r.text);
    assert_eq!(header(&r, "x-prometheus-remote-write-samples-written"), "1");
    let rejected = r#"pharos_ingest_items_rejected_total{signal="metrics",tenant="t",reason="out_of_order"}"#;
    assert_eq!(pharos.metric(rejected).await, 2.0);

    // A newer sample of the same series is fine.
    let mut next = series("up", "ooo", 0);
    next.samples = vec![Sample { value: 3.0, timestamp: t0 + 45_000 }];
    let req = WriteRequest { timeseries: vec![next], metadata: vec![] };
    let r = write(&url, None, Some("snappy"), "t", snappy(&req.encode_to_vec())).await;
    assert_eq!(r.status, 204, "{}", r.text);

    // Stored: 0, 1, 2, 3 and the good series; the refused values are nowhere.
    assert_eq!(wait_instant(&pharos, "t", count, at, 4.0).await, Some(4.0));
    assert_eq!(instant(&pharos, "t", r#"sum_over_time(up{job="ooo"}[5m])"#, at).await, Some(6.0));
    assert_eq!(
        wait_instant(&pharos, "t", r#"count_over_time(up{job="fresh"}[5m])"#, at, 1.0).await,
        Some(1.0)
    );
    assert_eq!(instant(&pharos, "t", r#"count_over_time(up{job="ooo"}[2h])"#, at).await, Some(4.0));
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");
}
