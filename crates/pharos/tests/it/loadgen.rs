//! The load generator against a real Pharos: a short run of each protocol family it adds
//! (OTLP/HTTP JSON, OTLP metrics, remote write 2.0, Loki push), then everything its manifest
//! says was acknowledged is read back through the query APIs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use pharos_loadgen::{Args, Summary};

use crate::harness::Pharos;

/// Runs the load generator with `flags` plus a manifest in `dir`; returns the summary and the
/// manifest's lines.
async fn load(endpoint: &str, dir: &Path, flags: &[&str]) -> (Summary, Vec<serde_json::Value>) {
    let manifest = dir.join(format!("manifest-{}.jsonl", flags.join("_").replace(['/', ' '], "")));
    let mut argv = vec!["pharos-loadgen", "--endpoint", endpoint, "--warmup", "0", "--timeout", "5"];
    argv.extend_from_slice(flags);
    argv.push("--manifest");
    let m = manifest.display().to_string();
    argv.push(&m);
    let args = Args::try_parse_from(argv).expect("flags");
    let summary = pharos_loadgen::run(args).await.expect("the load generator runs");
    let lines = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect::<Vec<serde_json::Value>>();
    assert!(summary.requests_ok > 0, "nothing acknowledged: {summary:?}");
    assert_eq!(summary.requests_err, 0, "{summary:?}");
    assert_eq!(lines.len() as u64, summary.manifest_requests);
    (summary, lines)
}

async fn get_json(url: &str, params: &[(&str, String)]) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new().get(url).query(params).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// The single value of an instant query (Prometheus or Loki API), polled until it is `want` or
/// 20 s have passed; returns the last value seen.
async fn wait_value(url: &str, query: &str, time: String, want: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = get_json(url, &[("query", query.to_string()), ("time", time.clone())]).await;
        assert_eq!(status, 200, "{query}: {v}");
        let got = v["data"]["result"][0]["value"][1].as_str().map(|s| s.parse::<f64>().unwrap());
        if got == Some(want) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_json_traces_are_all_found_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(&dir.path().join("data"), &[]);
    let endpoint = pharos.http.to_string();
    let flags = [
        "--protocol",
        "http",
        "--encoding",
        "json",
        "--signal",
        "traces",
        "--batch",
        "26",
        "--workers",
        "2",
        "--rate",
        "260",
        "--duration",
        "1.5",
        "--span-depth",
        "3",
        "--span-fanout",
        "3",
        "--services",
        "3",
        "--attributes",
        "2",
        "--seed",
        "11",
        "--pool",
        "4",
    ];
    let (summary, lines) = load(&endpoint, dir.path(), &flags).await;
    assert_eq!(summary.items_rejected, 0);
    // 13 spans per trace, 2 whole traces per request.
    let ids: Vec<String> = lines
        .iter()
        .flat_map(|l| l["trace_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(ids.len(), lines.len() * 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        let url = format!("http://{}/api/v2/traces/{id}", pharos.api);
        loop {
            let (status, v) = get_json(&url, &[]).await;
            let spans: usize = if status == 200 {
                v["trace"]["resourceSpans"]
                    .as_array()
                    .map(|rs| {
                        rs.iter()
                            .flat_map(|r| r["scopeSpans"].as_array().unwrap())
                            .map(|s| s["spans"].as_array().unwrap().len())
                            .sum()
                    })
                    .unwrap_or(0)
            } else {
                0
            };
            if spans == 13 {
                break;
            }
            assert!(Instant::now() < deadline, "trace {id}: {status} with {spans} spans of 13: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sums the manifest's sample counts: (series selector, samples), the earliest and the latest
/// timestamp. Requests with rejected samples are left out (the manifest cannot say which of
/// their samples are missing); the second value is how many were.
fn samples_of(lines: &[serde_json::Value]) -> (BTreeMap<String, u64>, u64, i64, i64) {
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped = 0;
    let mut first = i64::MAX;
    let mut last = 0;
    for l in lines {
        if l["rejected"].as_u64().unwrap() > 0 {
            skipped += 1;
            continue;
        }
        for s in l["series"].as_array().unwrap() {
            *per.entry(s.as_str().unwrap().to_string()).or_default() += 1;
        }
        first = first.min(l["from_ms"].as_i64().unwrap());
        last = last.max(l["to_ms"].as_i64().unwrap());
    }
    (per, skipped, first, last)
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_2_and_otlp_metrics_samples_are_all_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(&dir.path().join("data"), &[]);
    let endpoint = pharos.http.to_string();
    // Two workers, each writing its shard of 20 of the 40 series once per request, two
    // requests a second: every series gets its samples in time order (Pharos refuses older ones).
    let rw2 = [
        "--protocol",
        "remote-write2",
        "--signal",
        "metrics",
        "--series",
        "40",
        "--batch",
        "20",
        "--workers",
        "2",
        "--rate",
        "80",
        "--duration",
        "2",
    ];
    let (summary, lines) = load(&endpoint, dir.path(), &rw2).await;
    let w = summary.rw2_written.as_ref().unwrap();
    assert_eq!(w.answers_without_headers, 0);
    assert_eq!(summary.items_rejected, 0, "{summary:?}");
    assert_eq!(w.samples, summary.items_sent, "every sample sent written: {summary:?}");
    let (per, skipped, _, last) = samples_of(&lines);
    assert_eq!(skipped, 0, "requests with rejected samples in the manifest");
    let total: u64 = per.values().sum();
    assert_eq!(per.len(), 40);
    let url = format!("http://{}/api/v1/query", pharos.api);
    let time = format!("{}", (last + 1) as f64 / 1000.0);
    let got =
        wait_value(&url, "sum(count_over_time({job=\"loadgen\"}[10m]))", time.clone(), total as f64).await;
    assert_eq!(got, Some(total as f64), "samples the manifest lists as acknowledged");
    let (sel, n) = per.iter().next().unwrap();
    let got = wait_value(&url, &format!("count_over_time({sel}[10m])"), time, *n as f64).await;
    assert_eq!(got, Some(*n as f64), "{sel}");

    // OTLP metrics over gRPC: other series (the `_total` counters) of the same job.
    let grpc = pharos.grpc.to_string();
    let otlp = [
        "--protocol",
        "grpc",
        "--signal",
        "metrics",
        "--series",
        "30",
        "--batch",
        "30",
        "--workers",
        "1",
        "--rate",
        "30",
        "--duration",
        "2",
        "--connections",
        "1",
    ];
    let (summary, lines) = load(&grpc, dir.path(), &otlp).await;
    assert_eq!(summary.items_rejected, 0, "{summary:?}");
    let (per, skipped, first, last) = samples_of(&lines);
    assert_eq!(skipped, 0);
    assert!(per.keys().any(|s| s.starts_with("bench_metric_0_total{")), "{per:?}");
    // The gauges have the names of series remote write wrote before: count over this run's
    // time range only.
    let time = format!("{}", (last + 1) as f64 / 1000.0);
    let range = format!("{}ms", last + 2 - first);
    for (sel, n) in per.iter().take(4) {
        let got =
            wait_value(&url, &format!("count_over_time({sel}[{range}])"), time.clone(), *n as f64).await;
        assert_eq!(got, Some(*n as f64), "{sel}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_push_lines_are_all_counted_back() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(&dir.path().join("data"), &[]);
    let endpoint = pharos.http.to_string();
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = 0u64;
    for (encoding, seed, format) in [("protobuf", "1", "logfmt"), ("json", "2", "json")] {
        let flags = [
            "--protocol",
            "loki",
            "--encoding",
            encoding,
            "--signal",
            "logs",
            "--batch",
            "50",
            "--workers",
            "2",
            "--rate",
            "500",
            "--duration",
            "1",
            "--services",
            "3",
            "--seed",
            seed,
            "--log-format",
            format,
            "--log-body-size",
            "300",
        ];
        let (summary, lines) = load(&endpoint, dir.path(), &flags).await;
        assert_eq!(summary.items_rejected, 0);
        for l in &lines {
            for s in l["streams"].as_array().unwrap() {
                *per.entry(s["labels"].as_str().unwrap().to_string()).or_default() +=
                    s["count"].as_u64().unwrap();
                last = last.max(s["to_ns"].as_u64().unwrap());
            }
        }
    }
    let total: u64 = per.values().sum();
    assert!(total >= 500, "{total}");
    let url = format!("http://{}/loki/api/v1/query", pharos.api);
    let time = (last + 1_000_000_000).to_string();
    let got =
        wait_value(&url, "sum(count_over_time({namespace=\"shop\"}[10m]))", time.clone(), total as f64).await;
    assert_eq!(got, Some(total as f64), "lines the manifest lists as acknowledged");
    for (sel, n) in per.iter().take(3) {
        let got =
            wait_value(&url, &format!("sum(count_over_time({sel}[10m]))"), time.clone(), *n as f64).await;
        assert_eq!(got, Some(*n as f64), "{sel}");
    }
}
