//! Metrics end to end in one process: remote write and OTLP in, PromQL out through the
//! Prometheus HTTP API, per tenant, across a SIGKILL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pharos_core::prompb::v1::{Exemplar, Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::Value;

use crate::harness::{Pharos, conformance_dir, peer};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `samples` samples per series, 15 s apart, ending at `end` ms; the value of series `i` at
/// step `k` is `i * 1000 + k`.
fn request(metric: &str, series: usize, samples: std::ops::Range<i64>, end: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: metric.into() },
                    Label { name: "instance".into(), value: format!("host-{i}") },
                ],
                samples: samples
                    .clone()
                    .map(|k| Sample {
                        value: (i as i64 * 1000 + k) as f64,
                        timestamp: end - (59 - k) * 15_000,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

async fn remote_write(pharos: &Pharos, tenant: &str, req: &WriteRequest) {
    let (status, text) = remote_write_answer(pharos, tenant, req).await;
    assert_eq!(status, 204, "{text}");
}

/// The status and body remote write answers.
async fn remote_write_answer(pharos: &Pharos, tenant: &str, req: &WriteRequest) -> (u16, String) {
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/write", pharos.api))
        .header("x-scope-orgid", tenant)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn query(pharos: &Pharos, tenant: &str, path: &str, params: &[(&str, String)]) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path}", pharos.api))
        .header("x-scope-orgid", tenant)
        .query(params)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    body["data"].clone()
}

/// The scalar value of an instant query that returns one sample.
async fn instant(pharos: &Pharos, tenant: &str, promql: &str, at_ms: i64) -> Option<f64> {
    let data = query(
        pharos,
        tenant,
        "/api/v1/query",
        &[("query", promql.into()), ("time", format!("{}", at_ms as f64 / 1e3))],
    )
    .await;
    let result = data["result"].as_array().unwrap();
    result.first().map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
}

/// Gives series `i` of a [`request`] an exemplar `{trace_id="<prefix><i>"}` on its last sample.
fn with_exemplars(mut req: WriteRequest, prefix: &str) -> WriteRequest {
    for (i, ts) in req.timeseries.iter_mut().enumerate() {
        let last = ts.samples.last().expect("samples").clone();
        ts.exemplars.push(Exemplar {
            labels: vec![Label { name: "trace_id".into(), value: format!("{prefix}{i}") }],
            value: last.value,
            timestamp: last.timestamp,
        });
    }
    req
}

/// The trace ids of the exemplars of `metric` in `[start, end]` ms, sorted.
async fn exemplar_traces(pharos: &Pharos, tenant: &str, metric: &str, start: i64, end: i64) -> Vec<String> {
    let data = query(
        pharos,
        tenant,
        "/api/v1/query_exemplars",
        &[
            ("query", metric.into()),
            ("start", format!("{}", start as f64 / 1e3)),
            ("end", format!("{}", end as f64 / 1e3)),
        ],
    )
    .await;
    let mut traces: Vec<String> = data
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["exemplars"].as_array().unwrap().iter())
        .map(|e| e["labels"]["trace_id"].as_str().unwrap().to_owned())
        .collect();
    traces.sort();
    traces
}

async fn wait_for(pharos: &Pharos, tenant: &str, promql: &str, at_ms: i64, want: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = instant(pharos, tenant, promql, at_ms).await;
        if got == Some(want) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_written_samples_are_queryable_per_tenant_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let sets = ["queue.partitions=2", "metrics.flush_interval=1s"];
    let pharos = Pharos::start(dir.path(), &sets);
    let end = now_ms() / 1000 * 1000;
    let sum_at = |series: i64, k: i64| (0..series).map(|i| (i * 1000 + k) as f64).sum::<f64>();

    // Part A: the first 40 samples of 8 series, each with an exemplar on its last sample.
    // Queryable within seconds of the acknowledgement.
    remote_write(&pharos, "team-a", &with_exemplars(request("jobs_done_total", 8, 0..40, end), "a")).await;
    let at_a = end - 20 * 15_000; // the time of sample k = 39
    assert_eq!(
        wait_for(&pharos, "team-a", "sum(jobs_done_total)", at_a, sum_at(8, 39)).await,
        Some(sum_at(8, 39))
    );
    // Another tenant sees nothing of it.
    remote_write(&pharos, "team-b", &request("jobs_done_total", 1, 0..40, end)).await;
    assert_eq!(wait_for(&pharos, "team-b", "count(jobs_done_total)", at_a, 1.0).await, Some(1.0));

    // Wait until part A is on disk, then write part B and kill the process at once: B is only
    // in the write-ahead log.
    let deadline = Instant::now() + Duration::from_secs(15);
    while pharos.metric("pharos_metrics_parts_written_total").await < 1.0 {
        assert!(Instant::now() < deadline, "no part written:\n{}", pharos.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remote_write(&pharos, "team-a", &with_exemplars(request("jobs_done_total", 8, 40..60, end), "b")).await;
    pharos.kill9();

    let pharos = Pharos::start(dir.path(), &sets);
    // Every sample, once: 60 per series, none lost, none doubled.
    let at_end = end;
    assert_eq!(
        wait_for(&pharos, "team-a", "sum(count_over_time(jobs_done_total[1h]))", at_end, 480.0).await,
        Some(480.0),
        "{}",
        pharos.log()
    );
    assert_eq!(instant(&pharos, "team-a", "sum(jobs_done_total)", at_end).await, Some(sum_at(8, 59)));
    assert_eq!(instant(&pharos, "team-a", "sum(jobs_done_total)", at_a).await, Some(sum_at(8, 39)));
    assert_eq!(instant(&pharos, "team-b", "count(jobs_done_total)", at_a).await, Some(1.0));
    // The exemplars too: part A's from its part, part B's from the write-ahead log.
    let hour = end - 3_600_000;
    let every: Vec<String> = ["a", "b"].iter().flat_map(|p| (0..8).map(move |i| format!("{p}{i}"))).collect();
    assert_eq!(exemplar_traces(&pharos, "team-a", "jobs_done_total", hour, end).await, every);
    assert!(exemplar_traces(&pharos, "team-b", "jobs_done_total", hour, end).await.is_empty());

    // The range API agrees: 60 points per series over the written hour at 15 s steps.
    let data = query(
        &pharos,
        "team-a",
        "/api/v1/query_range",
        &[
            ("query", "jobs_done_total".into()),
            ("start", format!("{}", (end - 59 * 15_000) as f64 / 1e3)),
            ("end", format!("{}", end as f64 / 1e3)),
            ("step", "15".into()),
        ],
    )
    .await;
    let series = data["result"].as_array().unwrap();
    assert_eq!(series.len(), 8);
    assert!(series.iter().all(|s| s["values"].as_array().unwrap().len() == 60), "{data}");

    // A clean restart loads the parts again and keeps the answer.
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");
    let pharos = Pharos::start(dir.path(), &sets);
    assert_eq!(
        instant(&pharos, "team-a", "sum(count_over_time(jobs_done_total[1h]))", at_end).await,
        Some(480.0)
    );
    assert_eq!(exemplar_traces(&pharos, "team-a", "jobs_done_total", hour, end).await, every);
    assert!(pharos.log().contains("metrics parts loaded"), "{}", pharos.log());
}

/// `series` counters with `n` samples each, 15 s apart, the last at `end` ms; series `i` at
/// step `k` is `i * 1000 + k`.
fn history(metric: &str, series: usize, n: i64, end: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: metric.into() },
                    Label { name: "instance".into(), value: format!("host-{i}") },
                ],
                samples: (0..n)
                    .map(|k| Sample {
                        value: (i as i64 * 1000 + k) as f64,
                        timestamp: end - (n - 1 - k) * 15_000,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_samples_move_to_blocks_and_every_sample_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // 10-minute blocks so that an hour of history is cut and merged within seconds.
    let sets = [
        "queue.partitions=2",
        "metrics.flush_interval=1s",
        "metrics.block_range=10m",
        "metrics.compaction_interval=1s",
    ];
    let pharos = Pharos::start(dir.path(), &sets);
    let end = now_ms() / 1000 * 1000;
    let (series, n) = (20usize, 240i64);
    remote_write(&pharos, "team-a", &history("requests_total", series, n, end)).await;
    let total = (series as i64 * n) as f64;
    let count = "sum(count_over_time(requests_total[2h]))";
    assert_eq!(wait_for(&pharos, "team-a", count, end, total).await, Some(total));

    // The head holds at most the last block range and a half: the rest goes into blocks, and
    // 30-minute windows are merged from three 10-minute blocks.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pharos.metric("pharos_metrics_blocks_merged_total").await < 3.0 {
        assert!(Instant::now() < deadline, "no blocks merged:\n{}", pharos.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let in_blocks = pharos.metric("pharos_metrics_block_samples").await;
    assert!(in_blocks >= total * 0.6, "{in_blocks} of {total} samples in blocks");
    let bytes = pharos.metric("pharos_metrics_block_bytes").await;
    assert!(bytes > 0.0 && bytes / in_blocks < 2.0, "{bytes} bytes for {in_blocks} samples");

    // Every sample still answers, from blocks and head together, at every point.
    let check = async |pharos: &Pharos| {
        let sum_at = |k: i64| (0..series as i64).map(|i| (i * 1000 + k) as f64).sum::<f64>();
        assert_eq!(instant(pharos, "team-a", count, end).await, Some(total), "{}", pharos.log());
        for k in [0, 1, 59, 60, 120, 200, n - 1] {
            let at = end - (n - 1 - k) * 15_000;
            assert_eq!(instant(pharos, "team-a", "sum(requests_total)", at).await, Some(sum_at(k)), "k={k}");
        }
        let labels = query(pharos, "team-a", "/api/v1/label/instance/values", &[]).await;
        assert_eq!(labels.as_array().unwrap().len(), series);
    };
    check(&pharos).await;

    // A sample older than the head's lower bound is refused (400, counted), nothing else changes.
    let (status, text) =
        remote_write_answer(&pharos, "team-a", &history("requests_total", 1, 1, end - 3_000_000 + 7)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("out of bounds"), "{text}");
    let refused =
        "pharos_ingest_items_rejected_total{signal=\"metrics\",tenant=\"team-a\",reason=\"out_of_bounds\"}";
    assert_eq!(pharos.metric(refused).await, 1.0, "{}", pharos.metrics_text().await);

    pharos.kill9();
    let pharos = Pharos::start(dir.path(), &sets);
    check(&pharos).await;
    assert!(pharos.log().contains("metrics blocks opened"), "{}", pharos.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_and_too_big_queries_get_prometheus_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["metrics.max_query_samples=100"]);
    let end = now_ms() / 1000 * 1000;
    remote_write(&pharos, "default", &request("big", 4, 0..60, end)).await;
    assert_eq!(wait_for(&pharos, "default", "count(big)", end, 4.0).await, Some(4.0));
    let ask = |query: &'static str| {
        let url = format!("http://{}/api/v1/query", pharos.api);
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .query(&[("query", query.to_string()), ("time", format!("{}", end as f64 / 1e3))])
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap())
        }
    };
    // Malformed: 400, bad_data, and where.
    let (status, body) = ask("sum(rate(big[5m])").await;
    assert_eq!((status, body["errorType"].as_str()), (400, Some("bad_data")), "{body}");
    let want = "invalid parameter \"query\": 1:4: parse error: unclosed left parenthesis";
    assert_eq!(body["error"].as_str().unwrap(), want, "{body}");
    // 240 samples in memory against a limit of 100: refused, naming the limit.
    let (status, body) = ask("count_over_time(big[1h])").await;
    assert_eq!((status, body["errorType"].as_str()), (422, Some("execution")), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("too many samples") && error.contains("100") && error.contains("max_query_samples"),
        "{error}"
    );
    // Within the limit it answers.
    let (status, _) = ask("big").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_metrics_become_prometheus_series() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["metrics.flush_interval=1s"]);
    let json = std::fs::read(conformance_dir().join("metrics.json")).unwrap();
    let resp = reqwest::Client::new()
        .post(pharos.http_url("/v1/metrics"))
        .header("x-scope-orgid", "otlp")
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The example's points are at 1544712660.3 s.
    let at = 1_544_712_660_300;
    assert_eq!(wait_for(&pharos, "otlp", r#"my_gauge_ratio{job="my.service"}"#, at, 10.0).await, Some(10.0));
    assert_eq!(instant(&pharos, "otlp", r#"my_counter_total{job="my.service"}"#, at).await, Some(5.0));
    assert_eq!(instant(&pharos, "otlp", r#"my_histogram_count{job="my.service"}"#, at).await, Some(2.0));
    assert_eq!(instant(&pharos, "otlp", r#"my_histogram_bucket{le="+Inf"}"#, at).await, Some(2.0));
    assert_eq!(instant(&pharos, "otlp", r#"my_histogram_bucket{le="1"}"#, at).await, Some(1.0));
    let data = query(&pharos, "otlp", "/api/v1/metadata", &[]).await;
    assert_eq!(data["my_counter_total"][0]["type"], "counter", "{data}");
}

/// `promtool query instant` and `promtool query range` (Debian's Prometheus package) against
/// Pharos's API port, with the default tenant.
#[tokio::test(flavor = "multi_thread")]
async fn promtool_queries_pharos_like_a_prometheus() {
    let Some(promtool) = peer("promtool", "prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let end = now_ms() / 1000 * 1000;
    remote_write(&pharos, "default", &request("promtool_probe", 3, 0..60, end)).await;
    let total = (0..3).map(|i| (i * 1000 + 59) as f64).sum::<f64>();
    assert_eq!(wait_for(&pharos, "default", "sum(promtool_probe)", end, total).await, Some(total));

    let server = format!("http://{}", pharos.api);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&promtool).args(args).output().unwrap();
        assert!(out.status.success(), "promtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let at = format!("{}", end / 1000);
    let out = run(&["query", "instant", "--time", &at, &server, "sum(promtool_probe)"]);
    assert!(out.contains(&format!("{{}} => {total} @[")), "{out}");
    let out = run(&["query", "instant", "--time", &at, &server, r#"promtool_probe{instance="host-2"}"#]);
    assert!(out.contains("promtool_probe{instance=\"host-2\"} => 2059 @["), "{out}");
    let start = format!("{}", end / 1000 - 59 * 15);
    let out = run(&[
        "query",
        "range",
        "--start",
        &start,
        "--end",
        &at,
        "--step",
        "15s",
        &server,
        r#"promtool_probe{instance="host-0"}"#,
    ]);
    // One line for the series, then one per point: 60 points.
    assert_eq!(out.lines().filter(|l| l.contains(" @[")).count(), 60, "{out}");
    assert!(out.contains("59 @["), "{out}");
}
