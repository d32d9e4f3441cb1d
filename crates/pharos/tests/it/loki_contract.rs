//! The Loki HTTP API as Grafana's Loki data source calls it (CONTRACTS.md A4): the requests its
//! backend and frontend send, replayed against a real pharos, and the answers checked field by
//! field; entries pushed, some flushed into blocks and some still in the head.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::Pharos;

const SEC: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

struct Loki {
    base: String,
    tenant: Option<&'static str>,
    client: reqwest::Client,
}

impl Loki {
    fn new(pharos: &Pharos, tenant: Option<&'static str>) -> Self {
        Self { base: format!("http://{}", pharos.api), tenant, client: reqwest::Client::new() }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> (u16, String) {
        let mut req = self.client.get(format!("{}{path}", self.base)).query(query);
        if let Some(t) = self.tenant {
            req = req.header("x-scope-orgid", t);
        }
        // Grafana's backend tags its queries.
        req = req.header("x-query-tags", "Source=logsample");
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn json(&self, path: &str, query: &[(&str, String)]) -> Value {
        let (status, body) = self.get(path, query).await;
        assert_eq!(status, 200, "{path} {query:?}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    async fn push(&self, streams: Value) {
        let mut req = self
            .client
            .post(format!("{}/loki/api/v1/push", self.base))
            .header("content-type", "application/json")
            .body(json!({ "streams": streams }).to_string());
        if let Some(t) = self.tenant {
            req = req.header("x-scope-orgid", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{}", resp.text().await.unwrap());
    }
}

/// The shop's lines: two streams of logfmt lines, one second apart, ending a minute ago.
struct Shop {
    t0: i64,
    /// (stream app, time, line, level)
    lines: Vec<(&'static str, i64, String, &'static str)>,
}

impl Shop {
    fn new() -> Self {
        let t0 = (now_ns() - 10 * 60 * SEC) / SEC * SEC;
        let mut lines = Vec::new();
        for k in 0..40i64 {
            let (app, level) = match k % 4 {
                0 => ("checkout", "error"),
                1 => ("checkout", "info"),
                2 => ("frontend", "info"),
                _ => ("frontend", "warn"),
            };
            let line = format!("level={level} msg=\"request {k}\" order={k} took={}ms", 10 + k);
            lines.push((app, t0 + k * SEC, line, level));
        }
        Self { t0, lines }
    }

    fn streams(&self, range: std::ops::Range<usize>) -> Value {
        let mut by: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (app, t, line, _) in &self.lines[range] {
            by.entry(app).or_default().push(json!([t.to_string(), line]));
        }
        Value::Array(
            by.into_iter()
                .map(|(app, values)| json!({ "stream": { "app": app, "env": "prod" }, "values": values }))
                .collect(),
        )
    }

    fn range(&self) -> Vec<(&'static str, String)> {
        vec![("start", (self.t0 - 60 * SEC).to_string()), ("end", now_ns().to_string())]
    }
}

/// Pharos with the shop's first half in blocks and the second half in the head.
async fn shop_pharos() -> (tempfile::TempDir, Pharos, Shop) {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["logs.flush_interval=1s", "processor.commit_interval=200ms"]);
    let shop = Shop::new();
    let loki = Loki::new(&pharos, None);
    loki.push(shop.streams(0..20)).await;
    pharos.wait_for_metric("pharos_logs_blocks_flushed_total", 1.0).await;
    loki.push(shop.streams(20..40)).await;
    // Acknowledged means durable in the queue; the processors put it in the store just after.
    let stored = pharos.wait_for_metric("pharos_logs_entries_stored_total{tenant=\"default\"}", 40.0).await;
    assert_eq!(stored, 40.0, "every pushed line in the store within 30 s");
    (dir, pharos, shop)
}

/// A request and what its answer must say: (path or query, parameters, text).
type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);

fn with(
    mut params: Vec<(&'static str, String)>,
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    params.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    params
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_log_queries_get_streams_newest_first_with_stats() {
    let (_dir, pharos, shop) = shop_pharos().await;
    let loki = Loki::new(&pharos, None);
    // What Grafana's backend sends for a logs panel.
    let body = loki
        .json(
            "/loki/api/v1/query_range",
            &with(
                shop.range(),
                &[
                    ("query", r#"{app="checkout"}"#),
                    ("direction", "backward"),
                    ("limit", "1000"),
                    ("step", "2000ms"),
                ],
            ),
        )
        .await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "streams");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(result[0]["stream"], json!({ "app": "checkout", "env": "prod" }));
    let values = result[0]["values"].as_array().unwrap();
    let want: Vec<Value> = shop
        .lines
        .iter()
        .rev()
        .filter(|l| l.0 == "checkout")
        .map(|(_, t, line, _)| json!([t.to_string(), line]))
        .collect();
    assert_eq!(values, &want, "every checkout line, from blocks and head, newest first, times as ns strings");
    let summary = &body["data"]["stats"]["summary"];
    assert_eq!(summary["totalEntriesReturned"], 20);
    assert!(summary["totalBytesProcessed"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["execTime"].is_number());

    // Forward with a limit: the oldest lines; a line filter and a parser with a label filter.
    let body = loki
        .json(
            "/loki/api/v1/query_range",
            &with(
                shop.range(),
                &[
                    ("query", r#"{env="prod"} |= "request" | logfmt | level="warn""#),
                    ("direction", "forward"),
                    ("limit", "3"),
                ],
            ),
        )
        .await;
    // logfmt extracts `order` and `took` too, so every line is a stream of its own (as in Loki);
    // the limit counts entries across streams.
    let result = body["data"]["result"].as_array().unwrap();
    let mut times: Vec<String> = Vec::new();
    for stream in result {
        assert_eq!(stream["stream"]["level"], "warn", "{stream}");
        assert_eq!(stream["stream"]["app"], "frontend", "{stream}");
        assert!(stream["stream"]["order"].is_string(), "{stream}");
        times.extend(stream["values"].as_array().unwrap().iter().map(|v| v[0].as_str().unwrap().to_string()));
    }
    times.sort();
    let want: Vec<String> =
        shop.lines.iter().filter(|l| l.3 == "warn").take(3).map(|l| l.1.to_string()).collect();
    assert_eq!(times, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_metric_queries_get_matrix_and_vector_points_as_float_seconds_and_strings() {
    let (_dir, pharos, shop) = shop_pharos().await;
    let loki = Loki::new(&pharos, None);
    let q = r#"sum by (level) (count_over_time({env="prod"} | logfmt [1m]))"#;
    let start = shop.t0 - 60 * SEC;
    let end = shop.t0 + 120 * SEC;
    let body = loki
        .json(
            "/loki/api/v1/query_range",
            &[
                ("query", q.to_string()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", "60000ms".to_string()),
            ],
        )
        .await;
    assert_eq!(body["data"]["resultType"], "matrix", "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    let levels: Vec<&str> = result.iter().map(|s| s["metric"]["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["error", "info", "warn"]);
    for series in result {
        let level = series["metric"]["level"].as_str().unwrap();
        assert_eq!(series["metric"].as_object().unwrap().len(), 1, "{series}");
        // The 60s windows tile the range: each line is counted once.
        let total: f64 = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(total, shop.lines.iter().filter(|l| l.3 == level).count() as f64, "{series}");
        for point in series["values"].as_array().unwrap() {
            let t = point[0].as_f64().expect("time in float seconds");
            let v: f64 = point[1].as_str().expect("value as a string").parse().unwrap();
            let t_ns = (t * 1e9).round() as i64;
            assert_eq!((t_ns - start) % (60 * SEC), 0, "steps of 60s from start: {point}");
            let want =
                shop.lines.iter().filter(|l| l.3 == level && l.1 > t_ns - 60 * SEC && l.1 <= t_ns).count();
            assert_eq!(v, want as f64, "{level} at {t}");
        }
    }

    // An instant query, as Grafana sends it for a stat panel.
    let time = shop.t0 + 3600 * SEC;
    let body = loki
        .json(
            "/loki/api/v1/query",
            &[
                ("query", r#"sum by (app) (count_over_time({env="prod"}[2h]))"#.into()),
                ("time", time.to_string()),
                ("limit", "100".into()),
            ],
        )
        .await;
    assert_eq!(body["data"]["resultType"], "vector", "{body}");
    let got: BTreeMap<String, String> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["metric"]["app"].as_str().unwrap().to_string(), s["value"][1].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(got, BTreeMap::from([("checkout".into(), "20".into()), ("frontend".into(), "20".into())]));
    let t = body["data"]["result"][0]["value"][0].as_f64().unwrap();
    assert_eq!((t * 1e9).round() as i64, time);
}

#[tokio::test(flavor = "multi_thread")]
async fn label_series_and_index_lookups_answer_in_loki_shapes() {
    let (_dir, pharos, shop) = shop_pharos().await;
    let loki = Loki::new(&pharos, None);
    let body = loki.json("/loki/api/v1/labels", &shop.range()).await;
    assert_eq!(body, json!({ "status": "success", "data": ["app", "env"] }));
    let body = loki.json("/loki/api/v1/label/app/values", &shop.range()).await;
    assert_eq!(body["data"], json!(["checkout", "frontend"]));
    let body = loki
        .json("/loki/api/v1/label/app/values", &with(shop.range(), &[("query", r#"{app=~"front.*"}"#)]))
        .await;
    assert_eq!(body["data"], json!(["frontend"]));
    let body =
        loki.json("/loki/api/v1/series", &with(shop.range(), &[("match[]", r#"{app="checkout"}"#)])).await;
    assert_eq!(body["data"], json!([{ "app": "checkout", "env": "prod" }]));

    let body =
        loki.json("/loki/api/v1/index/stats", &with(shop.range(), &[("query", r#"{env="prod"}"#)])).await;
    let bytes: usize = shop.lines.iter().map(|l| l.2.len()).sum();
    assert_eq!(body["streams"], 2, "{body}");
    assert_eq!(body["entries"], 40);
    assert_eq!(body["bytes"], bytes);
    assert!(body["chunks"].as_u64().unwrap() >= 2, "{body}");

    let body = loki
        .json(
            "/loki/api/v1/index/volume",
            &with(shop.range(), &[("query", r#"{app=~".+"}"#), ("limit", "10")]),
        )
        .await;
    assert_eq!(body["data"]["resultType"], "vector");
    let result = body["data"]["result"].as_array().unwrap();
    let per_app =
        |app: &str| shop.lines.iter().filter(|l| l.0 == app).map(|l| l.2.len()).sum::<usize>().to_string();
    assert_eq!(result.len(), 2);
    for series in result {
        let app = series["metric"]["app"].as_str().unwrap();
        assert_eq!(series["value"][1], per_app(app), "{series}");
    }

    // Grafana probes detected_labels first, then falls back to labels.
    let body = loki.json("/loki/api/v1/detected_labels", &with(shop.range(), &[("query", "{}")])).await;
    assert_eq!(
        body,
        json!({ "detectedLabels": [{ "label": "app", "cardinality": 2 }, { "label": "env", "cardinality": 1 }] })
    );
    let body = loki
        .json("/loki/api/v1/detected_fields", &with(shop.range(), &[("query", r#"{app="checkout"}"#)]))
        .await;
    let fields: BTreeMap<String, (String, u64)> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["label"].as_str().unwrap().into(),
                (f["type"].as_str().unwrap().into(), f["cardinality"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(fields["level"], ("string".into(), 2), "{body}");
    assert_eq!(fields["order"], ("int".into(), 20), "{body}");
    assert_eq!(fields["took"], ("duration".into(), 20), "{body}");
    let body = loki
        .json(
            "/loki/api/v1/detected_field/level/values",
            &with(shop.range(), &[("query", r#"{app="checkout"}"#)]),
        )
        .await;
    assert_eq!(body["values"], json!(["error", "info"]));
    let body =
        loki.json("/loki/api/v1/patterns", &with(shop.range(), &[("query", r#"{app="checkout"}"#)])).await;
    assert_eq!(body, json!({ "status": "success", "data": [] }));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_and_parameters_get_400_with_the_problem_named() {
    let (_dir, pharos, shop) = shop_pharos().await;
    let loki = Loki::new(&pharos, None);
    let cases: &[Case] = &[
        (
            "/loki/api/v1/query_range",
            with(shop.range(), &[("query", r#"{app="x"} | json |"#)]),
            "parse error at line 1, col 19",
        ),
        (
            "/loki/api/v1/query_range",
            with(shop.range(), &[("query", r#"{app="x"}"#), ("limit", "100000")]),
            "max entries limit",
        ),
        (
            "/loki/api/v1/query_range",
            vec![("query", r#"{app="x"}"#.into()), ("start", "20".into()), ("end", "10".into())],
            "end is before start",
        ),
        (
            "/loki/api/v1/query_range",
            with(shop.range(), &[("query", r#"{app="x"}"#), ("direction", "sideways")]),
            "direction",
        ),
        (
            "/loki/api/v1/query_range",
            vec![("query", r#"{app="x"}"#.into()), ("start", "yesterday".into())],
            "invalid start",
        ),
        (
            "/loki/api/v1/query_range",
            with(shop.range(), &[("query", r#"rate({app="x"}[1m])"#), ("step", "fast")]),
            "invalid step",
        ),
        ("/loki/api/v1/query", vec![("query", r#"{app="x"}"#.into())], "not supported as an instant query"),
        ("/loki/api/v1/query_range", with(shop.range(), &[]), "missing query"),
    ];
    for (path, params, want) in cases {
        let (status, body) = loki.get(path, params).await;
        assert_eq!(status, 400, "{path} {params:?}: {body}");
        assert!(body.contains(want), "{path} {params:?}: want {want:?} in {body:?}");
    }
}

/// Each query limit, hit through the API, answers with the limit named: bytes read and series
/// returned 400 (as Loki), time 504; a query within the limits still answers.
#[tokio::test(flavor = "multi_thread")]
async fn queries_over_a_limit_get_an_error_naming_it() {
    let shop = Shop::new();
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["logs.max_query_bytes=1KiB", "logs.max_series=1"]);
    let loki = Loki::new(&pharos, None);
    loki.push(shop.streams(0..40)).await;
    pharos.wait_for_metric("pharos_logs_entries_stored_total{tenant=\"default\"}", 40.0).await;
    // The first four seconds: two lines of each stream, about 190 bytes.
    let first = vec![("start", (shop.t0 - SEC).to_string()), ("end", (shop.t0 + 4 * SEC).to_string())];
    // (query, parameters, what the error names)
    let over: &[Case] = &[
        // 40 lines of about 46 bytes: more than 1 KiB.
        (r#"{env="prod"}"#, shop.range(), "logs.max_query_bytes"),
        // Two streams, one series each.
        (
            r#"sum by (app) (count_over_time({env="prod"}[1m]))"#,
            with(first.clone(), &[("step", "1s")]),
            "max_series",
        ),
    ];
    for (query, range, limit) in over {
        let (status, body) =
            loki.get("/loki/api/v1/query_range", &with(range.clone(), &[("query", query)])).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(limit), "{query}: want {limit:?} in {body:?}");
    }
    let within =
        loki.json("/loki/api/v1/query_range", &with(first, &[("query", r#"{app="checkout"}"#)])).await;
    assert_eq!(within["data"]["result"][0]["values"].as_array().map(Vec::len), Some(2), "{within}");
    drop(pharos);

    // Time: a deadline that has passed when the query starts; 5,000 lines to read.
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["logs.query_timeout=1ns"]);
    let loki = Loki::new(&pharos, None);
    let t0 = shop.t0;
    let values: Vec<Value> =
        (0..5000i64).map(|k| json!([(t0 + k * 1_000_000).to_string(), format!("line {k}")])).collect();
    loki.push(json!([{ "stream": { "app": "busy" }, "values": values }])).await;
    pharos.wait_for_metric("pharos_logs_entries_stored_total{tenant=\"default\"}", 5000.0).await;
    for query in [r#"{app="busy"} |= "line""#, r#"count_over_time({app="busy"}[1m])"#] {
        let (status, body) =
            loki.get("/loki/api/v1/query_range", &with(shop.range(), &[("query", query)])).await;
        assert_eq!(status, 504, "{query}: {body}");
        assert!(body.contains("query timed out") && body.contains("logs.query_timeout"), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_logs_are_invisible_to_another() {
    let (_dir, pharos, shop) = shop_pharos().await;
    let other = Loki::new(&pharos, Some("other"));
    let body =
        other.json("/loki/api/v1/query_range", &with(shop.range(), &[("query", r#"{env="prod"}"#)])).await;
    assert_eq!(body["data"]["result"], json!([]));
    let body = other.json("/loki/api/v1/labels", &shop.range()).await;
    assert_eq!(body["data"], json!([]));
    other
        .push(json!([{ "stream": { "app": "mine" }, "values": [[now_ns().to_string(), "only mine"]] }]))
        .await;
    pharos.wait_for_metric("pharos_logs_entries_stored_total{tenant=\"other\"}", 1.0).await;
    let body = other.json("/loki/api/v1/label/app/values", &shop.range()).await;
    assert_eq!(body["data"], json!(["mine"]));
    let default = Loki::new(&pharos, None);
    let body = default.json("/loki/api/v1/label/app/values", &shop.range()).await;
    assert_eq!(body["data"], json!(["checkout", "frontend"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_sends_new_lines_over_a_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let loki = Loki::new(&pharos, None);
    let before = now_ns();
    loki.push(json!([{ "stream": { "app": "tail" }, "values": [[before.to_string(), "already there"]] }]))
        .await;
    let url = format!(
        "ws://{}/loki/api/v1/tail?query={}&delay_for=0&limit=100&start={}",
        pharos.api,
        "%7Bapp%3D%22tail%22%7D",
        before - SEC
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket upgrade");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut pushed = false;
    while seen.len() < 2 && Instant::now() < deadline {
        if !seen.is_empty() && !pushed {
            loki.push(
                json!([{ "stream": { "app": "tail" }, "values": [[now_ns().to_string(), "arrived later"]] }]),
            )
            .await;
            pushed = true;
        }
        let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await else { continue };
        let frame = frame.unwrap();
        let text = frame.into_text().unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(body.get("dropped_entries").is_some(), "{body}");
        for stream in body["streams"].as_array().unwrap() {
            assert_eq!(stream["stream"], json!({ "app": "tail" }));
            for v in stream["values"].as_array().unwrap() {
                assert!(v[0].as_str().unwrap().parse::<i64>().is_ok(), "{v}");
                seen.push(v[1].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(seen, ["already there", "arrived later"], "each line once, in order");
    ws.close(None).await.unwrap();

    let (status, body) = loki
        .get("/loki/api/v1/tail", &[("query", r#"{app="tail"}"#.into()), ("delay_for", "9".into())])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("delay_for"), "{body}");
}
