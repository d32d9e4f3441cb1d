//! Contract tests for the trace read APIs as Grafana's Tempo and Jaeger data sources call them
//! (CONTRACTS.md A5, A6, A7), and for Zipkin ingest: each test starts `pharos serve`, sends
//! spans over OTLP/HTTP (or Zipkin) and reads them back with the requests the data sources
//! send, checking the answers field by field in the shapes the data sources parse.
//!
//! The shop dataset (`Shop`) is small and fixed: a four-span trace over three services with
//! every kind of span field (attributes of each type, events, links, statuses, trace state),
//! a one-span trace with a 64-bit id, an eleven-span trace for spans-per-spanset, and thirty
//! two-span traces for the search limit; all ten minutes old.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status, TracesData,
        span::{Event, Link},
    },
};
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::Pharos;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

const INTERNAL: i32 = 1;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const OK: i32 = 1;
const ERROR: i32 = 2;

// ---------------------------------------------------------------------------------------------
// Building spans.

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn string(key: &str, value: &str) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.to_string()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attr(key, any_value::Value::IntValue(value))
}

fn double(key: &str, value: f64) -> KeyValue {
    attr(key, any_value::Value::DoubleValue(value))
}

fn boolean(key: &str, value: bool) -> KeyValue {
    attr(key, any_value::Value::BoolValue(value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 16-byte trace id from up to 32 hex digits, left-padded with zeros.
fn trace_id(digits: &str) -> Vec<u8> {
    let padded = format!("{digits:0>32}");
    (0..16).map(|i| u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn span_id(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: &[u8],
    id: u64,
    parent: Option<u64>,
    name: &str,
    kind: i32,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: span_id(id),
        parent_span_id: parent.map(span_id).unwrap_or_default(),
        name: name.to_string(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn resource(service: &str, host: &str) -> Resource {
    Resource {
        attributes: vec![string("service.name", service), string("host.name", host)],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "shop-instrumentation".into(),
        version: "1.2.3".into(),
        attributes: vec![string("scope.attr", "x")],
        ..Default::default()
    }
}

fn resource_spans(resource: Resource, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope()),
            spans,
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
    }
}

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// A 64-bit trace id: 16 digits, the upper 64 bits zero.
const T2: &str = "a3ce929d0e0e4736";
const T3: &str = "00000000000000000000000000c0ffee";
/// Spans in the shop dataset.
const SHOP_SPANS: u64 = 4 + 1 + 11 + 2 * LOAD_TRACES;
const LOAD_TRACES: u64 = 30;

/// The fixed dataset most tests send.
struct Shop {
    /// When the data was made (unix nanoseconds); all spans are ten minutes older.
    now: u64,
    /// The start of trace T1.
    t0: u64,
    request: ExportTraceServiceRequest,
    loads: Vec<String>,
}

impl Shop {
    fn new() -> Shop {
        let now = now_ns();
        let t0 = now - 600 * SEC;
        let (t1, t2, t3) = (trace_id(T1), trace_id(T2), trace_id(T3));
        // T1: frontend → checkout (a call and a query) → payment, which fails.
        let s1 = Span {
            trace_state: "congo=t61rcWkgMzE".into(),
            flags: 0x101,
            events: vec![Event {
                time_unix_nano: t0 + 10 * MS,
                name: "cache miss".into(),
                attributes: vec![string("cache.key", "cart:42")],
                dropped_attributes_count: 1,
            }],
            links: vec![Link {
                trace_id: t2.clone(),
                span_id: span_id(0x21),
                trace_state: "link=state".into(),
                attributes: vec![string("link.kind", "follows")],
                dropped_attributes_count: 0,
                flags: 0x100,
            }],
            status: Some(Status { code: OK, message: String::new() }),
            dropped_attributes_count: 2,
            dropped_events_count: 3,
            dropped_links_count: 4,
            ..span(
                &t1,
                0x11,
                None,
                "GET /checkout",
                SERVER,
                t0,
                t0 + 250 * MS,
                vec![
                    string("http.method", "GET"),
                    int("http.response.status_code", 200),
                    string("http.route", "/checkout"),
                    boolean("sampled", true),
                    double("ratio", 0.5),
                ],
            )
        };
        let s2 = Span {
            status: Some(Status { code: ERROR, message: "card declined".into() }),
            ..span(
                &t1,
                0x12,
                Some(0x11),
                "POST /pay",
                CLIENT,
                t0 + 20 * MS,
                t0 + 200 * MS,
                vec![string("http.method", "POST"), int("http.response.status_code", 500)],
            )
        };
        let s3 = Span {
            status: Some(Status { code: ERROR, message: "card declined".into() }),
            events: vec![Event {
                time_unix_nano: t0 + 170 * MS,
                name: "exception".into(),
                attributes: vec![string("exception.message", "declined")],
                dropped_attributes_count: 0,
            }],
            ..span(
                &t1,
                0x13,
                Some(0x12),
                "charge",
                SERVER,
                t0 + 30 * MS,
                t0 + 180 * MS,
                vec![int("http.response.status_code", 500), double("payment.amount", 12.25)],
            )
        };
        let s4 = span(
            &t1,
            0x14,
            Some(0x11),
            "SELECT cart",
            INTERNAL,
            t0 + 5 * MS,
            t0 + 15 * MS,
            vec![string("db.system", "postgres")],
        );
        // T2: one short span, a 64-bit id.
        let t2_root = span(
            &t2,
            0x21,
            None,
            "GET /health",
            SERVER,
            t0 + 60 * SEC,
            t0 + 60 * SEC + 5 * MS,
            vec![string("http.method", "GET"), int("http.response.status_code", 200)],
        );
        // T3: a batch of ten items.
        let base = t0 + 90 * SEC;
        let mut worker = vec![span(&t3, 0x31, None, "batch", SERVER, base, base + 500 * MS, vec![])];
        for k in 0..10u64 {
            let start = base + (k + 1) * 10 * MS;
            worker.push(span(
                &t3,
                0x40 + k,
                Some(0x31),
                "item",
                INTERNAL,
                start,
                start + 5 * MS,
                vec![int("item.index", k as i64)],
            ));
        }
        // Load: thirty traces of two spans.
        let mut load = Vec::new();
        let mut loads = Vec::new();
        for k in 0..LOAD_TRACES {
            let id = trace_id(&format!("10ad{k:028x}"));
            loads.push(hex(&id));
            let start = t0 + 120 * SEC + k * SEC;
            load.push(span(&id, 0x100 + 2 * k, None, "load-root", SERVER, start, start + 20 * MS, vec![]));
            load.push(span(
                &id,
                0x101 + 2 * k,
                Some(0x100 + 2 * k),
                "load-child",
                CLIENT,
                start + MS,
                start + 10 * MS,
                vec![],
            ));
        }
        let mut frontend = resource("frontend", "fe-1");
        frontend.attributes.push(int("process.pid", 1201));
        frontend.dropped_attributes_count = 1;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(frontend, vec![s1, t2_root]),
                resource_spans(resource("checkout", "co-1"), vec![s2, s4]),
                resource_spans(resource("payment", "pay-1"), vec![s3]),
                resource_spans(resource("worker", "wk-1"), worker),
                resource_spans(resource("load", "ld-1"), load),
            ],
        };
        Shop { now, t0, request, loads }
    }

    /// `start` and `end` in unix seconds around all the data.
    fn range(&self) -> [(&'static str, String); 2] {
        [("start", (self.now / SEC - 3600).to_string()), ("end", (self.now / SEC + 60).to_string())]
    }
}

/// Each span of `resource_spans` with its resource and scope (and their schema URLs), by span id.
type Entry = (Resource, String, InstrumentationScope, String, Span);

fn flatten(resource_spans: Vec<ResourceSpans>) -> Vec<(Vec<u8>, Entry)> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let resource = rs.resource.unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss.scope.unwrap_or_default();
            for span in ss.spans {
                let entry =
                    (resource.clone(), rs.schema_url.clone(), scope.clone(), ss.schema_url.clone(), span);
                out.push((entry.4.span_id.clone(), entry));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The spans of one trace in `request`, flattened.
fn sent(request: &ExportTraceServiceRequest, trace: &[u8]) -> Vec<(Vec<u8>, Entry)> {
    flatten(request.resource_spans.clone()).into_iter().filter(|(_, e)| e.4.trace_id == trace).collect()
}

/// Tempo's `TraceByIDResponse` (`tempopb`): the v2 protobuf answer.
#[derive(Clone, PartialEq, Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    /// 0 COMPLETE, 1 PARTIAL.
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

// ---------------------------------------------------------------------------------------------
// Talking to pharos.

struct Api<'a> {
    client: reqwest::Client,
    pharos: &'a Pharos,
    tenant: Option<&'a str>,
}

impl<'a> Api<'a> {
    fn new(pharos: &'a Pharos, tenant: Option<&'a str>) -> Self {
        Api { client: reqwest::Client::new(), pharos, tenant }
    }

    /// GET on the API port; the status and the body.
    async fn get(&self, path: &str, query: &[(&str, String)], accept: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut request = self.client.get(format!("http://{}{path}", self.pharos.api)).query(query);
        if let Some(tenant) = self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// GET, the status and the body as text.
    async fn text(&self, path: &str, query: &[(&str, String)]) -> (StatusCode, String) {
        let (status, body) = self.get(path, query, None).await;
        (status, String::from_utf8(body).unwrap())
    }

    /// GET that must answer 200 with JSON.
    async fn json(&self, path: &str, query: &[(&str, String)]) -> Value {
        let (status, body) = self.get(path, query, Some("application/json")).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "GET {path} {query:?}: {text}");
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// Sends spans over OTLP/HTTP protobuf.
    async fn send(&self, request: &ExportTraceServiceRequest) {
        let mut post = self
            .client
            .post(self.pharos.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec());
        if let Some(tenant) = self.tenant {
            post = post.header("X-Scope-OrgID", tenant);
        }
        let response = post.send().await.unwrap();
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
    }

    /// Waits until the trace store holds `spans` spans of this tenant.
    async fn wait_stored(&self, spans: u64) {
        let series =
            format!("pharos_traces_spans_stored_total{{tenant=\"{}\"}}", self.tenant.unwrap_or("default"));
        let got = self.pharos.wait_for_metric(&series, spans as f64).await;
        assert_eq!(got, spans as f64, "spans stored:\n{}", self.pharos.log());
    }

    /// Polls trace by id until it answers 200 (10 s at most).
    async fn wait_trace(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = self.get(&format!("/api/traces/{id}"), &[], None).await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "trace {id} not visible after 10s:\n{}", self.pharos.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A Tempo search with Grafana's parameters (`limit=20&spss=3`) over the shop's range.
    async fn search(&self, shop: &Shop, q: &str) -> Value {
        let mut query = vec![("q", q.to_string()), ("limit", "20".into()), ("spss", "3".into())];
        query.extend(shop.range());
        self.json("/api/search", &query).await
    }
}

/// Starts pharos, sends the shop dataset (as the default tenant) and waits until it is stored.
async fn shop_pharos(sets: &[&str]) -> (tempfile::TempDir, Pharos, Shop) {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), sets);
    let shop = Shop::new();
    let api = Api::new(&pharos, None);
    api.send(&shop.request).await;
    api.wait_stored(SHOP_SPANS).await;
    api.wait_trace(T1).await;
    (dir, pharos, shop)
}

fn trace_ids(search: &Value) -> Vec<String> {
    search["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("no traces[] in {search}"))
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().unwrap_or_else(|| panic!("not a list: {value}")).iter().map(|v| v.to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| json!(s).to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Health check.

#[tokio::test(flavor = "multi_thread")]
async fn tempo_health_check_echo_and_buildinfo_answer_as_grafana_expects() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let api = Api::new(&pharos, None);
    let (status, body) = api.get("/api/echo", &[], None).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, b"echo".as_slice()));
    let info = api.json("/api/status/buildinfo", &[]).await;
    assert!(info["version"].as_str().is_some_and(|v| !v.is_empty()), "{info}");
}

// ---------------------------------------------------------------------------------------------
// 2. Trace by id.

#[tokio::test(flavor = "multi_thread")]
async fn trace_by_id_returns_exactly_the_spans_sent_in_v1_and_v2_json_and_protobuf() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let want = sent(&shop.request, &trace_id(T1));
    assert_eq!(want.len(), 4);

    // v1, as Grafana asks: OTLP TracesData.
    let (status, body) = api.get(&format!("/api/traces/{T1}"), &[], Some("application/protobuf")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let data = TracesData::decode(body.as_slice()).expect("v1 protobuf is OTLP TracesData");
    assert_eq!(flatten(data.resource_spans), want, "v1 protobuf");

    // v2 JSON, with start and end around the trace.
    let range = shop.range();
    let body = api.json(&format!("/api/v2/traces/{T1}"), &range).await;
    assert_eq!(body["status"], "COMPLETE", "{body}");
    assert!(body.get("message").is_none_or(|m| m.as_str() == Some("")), "{body}");
    let resource_spans: Vec<ResourceSpans> =
        serde_json::from_value(body["trace"]["resourceSpans"].clone()).expect("v2 JSON resourceSpans");
    assert_eq!(flatten(resource_spans), want, "v2 JSON");

    // v2 protobuf: TraceByIDResponse, field 1 TracesData, field 3 status.
    let (status, body) = api.get(&format!("/api/v2/traces/{T1}"), &range, Some("application/protobuf")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = TraceByIdResponse::decode(body.as_slice()).expect("v2 protobuf");
    assert_eq!(response.status, 0, "COMPLETE");
    assert_eq!(flatten(response.trace.unwrap_or_default().resource_spans), want, "v2 protobuf");

    // Upper-case hex is the same trace.
    let (status, body) =
        api.get(&format!("/api/traces/{}", T1.to_uppercase()), &[], Some("application/protobuf")).await;
    assert_eq!(status, 200);
    assert_eq!(flatten(TracesData::decode(body.as_slice()).unwrap().resource_spans), want, "upper case");

    // A 64-bit id: 16 digits (left-padded), upper case, or all 32 digits.
    let want64 = sent(&shop.request, &trace_id(T2));
    assert_eq!(want64.len(), 1);
    for id in [T2.to_string(), T2.to_uppercase(), format!("{T2:0>32}")] {
        for path in [format!("/api/traces/{id}"), format!("/api/v2/traces/{id}")] {
            let (status, body) = api.get(&path, &[], Some("application/protobuf")).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            let resource_spans = if path.contains("/v2/") {
                TraceByIdResponse::decode(body.as_slice()).unwrap().trace.unwrap_or_default().resource_spans
            } else {
                TracesData::decode(body.as_slice()).unwrap().resource_spans
            };
            assert_eq!(flatten(resource_spans), want64, "{path}");
        }
    }

    // Bad ids are 400, an unknown one 404, on both versions.
    let cases = [
        (format!("{T1}0"), 400), // 33 digits
        ("4bf92f3577b34da6a3ce929d0e0e473g".to_string(), 400),
        ("not-a-trace-id".to_string(), 400),
        ("4bf92f3577b34da6a3ce929d0e0e4737".to_string(), 404),
    ];
    for (id, want) in cases {
        for version in ["", "/v2"] {
            let (status, body) = api.text(&format!("/api{version}/traces/{id}"), &[]).await;
            assert_eq!(status.as_u16(), want, "/api{version}/traces/{id}: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_by_id_with_start_and_end_excluding_the_trace_is_not_found() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let now = shop.now / SEC;
    for version in ["", "/v2"] {
        let path = format!("/api{version}/traces/{T1}");
        let (status, body) = api.text(&path, &shop.range()).await;
        assert_eq!(status, 200, "{path} in range: {body}");
        for (start, end) in [(now - 7200, now - 3600), (now + 3600, now + 7200)] {
            let (status, body) =
                api.text(&path, &[("start", start.to_string()), ("end", end.to_string())]).await;
            assert_eq!(status, 404, "{path}?start={start}&end={end} (the trace is at {now} - 600): {body}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Search.

#[tokio::test(flavor = "multi_thread")]
async fn search_answers_traceql_with_the_fields_grafana_reads() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let t0 = shop.t0;

    let body = api.search(&shop, r#"{ resource.service.name = "payment" }"#).await;
    assert_eq!(trace_ids(&body), [T1], "{body}");
    let trace = &body["traces"][0];
    assert_eq!(trace["rootServiceName"], "frontend");
    assert_eq!(trace["rootTraceName"], "GET /checkout");
    assert_eq!(trace["startTimeUnixNano"], json!(t0.to_string()), "a string");
    assert_eq!(trace["durationMs"], json!(250), "a number");
    let sets = trace["spanSets"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "{trace}");
    assert_eq!(trace["spanSet"], sets[0], "spanSet is the first spanset");
    assert_eq!(sets[0]["matched"], 1);
    let spans = sets[0]["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["spanID"], hex(&span_id(0x13)));
    assert_eq!(spans[0]["startTimeUnixNano"], json!((t0 + 30 * MS).to_string()));
    assert_eq!(spans[0]["durationNanos"], json!((150 * MS).to_string()));
    assert!(
        spans[0]["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "service.name", "value": {"stringValue": "payment"}})),
        "the attribute the query reads: {}",
        spans[0]
    );

    // An error anywhere, the 64-bit trace, two spans of one trace.
    let body = api.search(&shop, "{ status = error }").await;
    assert_eq!(trace_ids(&body), [T1], "{body}");
    assert_eq!(body["traces"][0]["spanSets"][0]["matched"], 2);
    let body = api.search(&shop, r#"{ name = "GET /health" }"#).await;
    assert_eq!(trace_ids(&body), [format!("{T2:0>32}")], "{body}");
    assert_eq!(body["traces"][0]["durationMs"], json!(5));

    // spss cuts the spans of a spanset, not `matched`; Grafana sends 3.
    let q = r#"{ resource.service.name = "worker" && name = "item" }"#;
    let body = api.search(&shop, q).await;
    assert_eq!(trace_ids(&body), [T3]);
    let set = &body["traces"][0]["spanSets"][0];
    assert_eq!((set["spans"].as_array().unwrap().len(), &set["matched"]), (3, &json!(10)), "{set}");
    for spss in [1, 5, 10] {
        let mut query = vec![("q", q.to_string()), ("spss", spss.to_string())];
        query.extend(shop.range());
        let body = api.json("/api/search", &query).await;
        let set = &body["traces"][0]["spanSets"][0];
        assert_eq!((set["spans"].as_array().unwrap().len(), &set["matched"]), (spss, &json!(10)), "{set}");
    }

    // limit: thirty traces match, twenty (or seven) come back, each once.
    let body = api.search(&shop, r#"{ resource.service.name = "load" }"#).await;
    let ids = trace_ids(&body);
    assert_eq!(ids.len(), 20, "{body}");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 20, "distinct");
    assert!(ids.iter().all(|id| shop.loads.contains(id)), "{ids:?}");
    let mut query = vec![("q", r#"{ resource.service.name = "load" }"#.to_string()), ("limit", "7".into())];
    query.extend(shop.range());
    assert_eq!(trace_ids(&api.json("/api/search", &query).await).len(), 7);

    // start and end (seconds) before the data: nothing.
    let before = shop.now / SEC - 7200;
    let query = [("q", "{ }".to_string()), ("start", before.to_string()), ("end", (before + 60).to_string())];
    assert_eq!(trace_ids(&api.json("/api/search", &query).await), Vec::<String>::new());

    // Bad queries: 400 naming the line and column; a metrics query is not a search.
    for (q, place) in [
        ("{ span.http.method = }", "line 1, col 22"),
        ("{ name = \"a\" } &&\n{ status = }", "line 2, col 12"),
    ] {
        let (status, body) = api.text("/api/search", &[("q", q.to_string())]).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(place), "{q}: want {place} in {body}");
    }
    let (status, body) = api.text("/api/search", &[("q", "{ } | rate()".to_string())]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_with_legacy_tags_and_durations_answers_like_traceql() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let search = |params: &[(&'static str, &str)]| {
        let mut query: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.to_string())).collect();
        query.extend(shop.range());
        query
    };
    let tags = "service.name=frontend http.method=GET";
    let t2 = format!("{T2:0>32}");
    for (params, want) in [
        (search(&[("tags", tags)]), vec![T1.to_string(), t2.clone()]),
        (search(&[("tags", tags), ("minDuration", "100ms")]), vec![T1.to_string()]),
        (search(&[("tags", tags), ("maxDuration", "50ms")]), vec![t2.clone()]),
        (search(&[("tags", tags), ("minDuration", "1ms"), ("maxDuration", "1s")]), vec![T1.into(), t2]),
        (search(&[("tags", r#"name="POST /pay""#)]), vec![T1.to_string()]),
        (search(&[("tags", "http.response.status_code=500 service.name=payment")]), vec![T1.to_string()]),
    ] {
        let body = api.json("/api/search", &params).await;
        let got: BTreeSet<String> = trace_ids(&body).into_iter().collect();
        assert_eq!(got, want.into_iter().collect::<BTreeSet<_>>(), "{params:?}: {body}");
        for trace in body["traces"].as_array().unwrap() {
            assert_eq!(trace["rootServiceName"], "frontend", "{trace}");
        }
    }
    let (status, body) = api.text("/api/search", &[("minDuration", "fast".to_string())]).await;
    assert_eq!(status, 400, "{body}");
}

// ---------------------------------------------------------------------------------------------
// 4. Tags.

#[tokio::test(flavor = "multi_thread")]
async fn tags_and_tag_values_answer_in_tempo_shapes() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let range = shop.range();
    let scoped = |scope: &str| {
        let mut query = range.to_vec();
        if !scope.is_empty() {
            query.push(("scope", scope.to_string()));
        }
        query
    };
    let scopes = |body: &Value| -> BTreeMap<String, BTreeSet<String>> {
        body["scopes"]
            .as_array()
            .unwrap_or_else(|| panic!("no scopes[]: {body}"))
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), strings(&s["tags"])))
            .collect()
    };
    let span_tags = set(&[
        "http.method",
        "http.response.status_code",
        "http.route",
        "sampled",
        "ratio",
        "payment.amount",
        "db.system",
        "item.index",
    ]);
    let resource_tags = set(&["service.name", "host.name", "process.pid"]);

    let body = api.json("/api/v2/search/tags", &scoped("span")).await;
    assert_eq!(scopes(&body), BTreeMap::from([("span".to_string(), span_tags.clone())]), "{body}");
    let body = api.json("/api/v2/search/tags", &scoped("resource")).await;
    assert_eq!(scopes(&body), BTreeMap::from([("resource".to_string(), resource_tags.clone())]), "{body}");
    let body = api.json("/api/v2/search/tags", &scoped("intrinsic")).await;
    let intrinsic = scopes(&body);
    assert_eq!(intrinsic.keys().collect::<Vec<_>>(), ["intrinsic"], "{body}");
    assert!(set(&["name", "status", "duration", "kind"]).is_subset(&intrinsic["intrinsic"]), "{body}");

    // No scope: every scope.
    let body = api.json("/api/v2/search/tags", &scoped("")).await;
    let all = scopes(&body);
    assert_eq!(all.get("span"), Some(&span_tags), "{body}");
    assert_eq!(all.get("resource"), Some(&resource_tags), "{body}");
    assert_eq!(all.get("intrinsic"), intrinsic.get("intrinsic"), "{body}");
    assert_eq!(all.get("event"), Some(&set(&["cache.key", "exception.message"])), "{body}");
    assert_eq!(all.get("link"), Some(&set(&["link.kind"])), "{body}");
    assert_eq!(all.get("instrumentation"), Some(&set(&["scope.attr"])), "{body}");

    // v1: one list of names.
    let body = api.json("/api/search/tags", &range).await;
    let names = strings(&body["tagNames"]);
    assert!(span_tags.is_subset(&names) && resource_tags.is_subset(&names), "{body}");

    // Values, typed in v2.
    let typed = |body: &Value| -> BTreeSet<(String, String)> {
        body["tagValues"]
            .as_array()
            .unwrap_or_else(|| panic!("no tagValues[]: {body}"))
            .iter()
            .map(|v| (v["type"].as_str().unwrap().to_string(), v["value"].as_str().unwrap().to_string()))
            .collect()
    };
    let of = |kind: &str, values: &[&str]| -> BTreeSet<(String, String)> {
        values.iter().map(|v| (kind.to_string(), v.to_string())).collect()
    };
    let services = ["checkout", "frontend", "load", "payment", "worker"];
    let body = api.json("/api/v2/search/tag/resource.service.name/values", &range).await;
    assert_eq!(typed(&body), of("string", &services), "{body}");
    let body = api.json("/api/v2/search/tag/span.http.response.status_code/values", &range).await;
    assert_eq!(typed(&body), of("int", &["200", "500"]), "{body}");
    let mut query = range.to_vec();
    query.push(("q", "{ span.http.response.status_code = 500 }".to_string()));
    let body = api.json("/api/v2/search/tag/resource.service.name/values", &query).await;
    assert_eq!(typed(&body), of("string", &["checkout", "payment"]), "filtered by q: {body}");
    let body = api.json("/api/search/tag/service.name/values", &range).await;
    assert_eq!(strings(&body["tagValues"]), set(&services), "v1: {body}");

    let (status, body) = api.text("/api/v2/search/tags", &[("scope", "spam".to_string())]).await;
    assert_eq!(status, 400, "{body}");
}

// ---------------------------------------------------------------------------------------------
// 5. TraceQL metrics.

/// Spans per service in the shop dataset.
fn shop_counts() -> BTreeMap<String, f64> {
    [
        ("checkout", 2.0),
        ("frontend", 2.0),
        ("load", 2.0 * LOAD_TRACES as f64),
        ("payment", 1.0),
        ("worker", 11.0),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_string(), n))
    .collect()
}

fn service_label(series: &Value) -> String {
    let labels = series["labels"].as_array().unwrap_or_else(|| panic!("no labels[]: {series}"));
    assert_eq!(labels.len(), 1, "{series}");
    assert_eq!(labels[0]["key"], "resource.service.name", "{series}");
    labels[0]["value"]["stringValue"].as_str().unwrap_or_else(|| panic!("no stringValue: {series}")).into()
}

#[tokio::test(flavor = "multi_thread")]
async fn traceql_metrics_count_every_span_sent() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let (start, end) = (shop.now / SEC - 3600, shop.now / SEC + 60);
    let range = |q: &str, step: &str| {
        vec![
            ("q", q.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ]
    };

    for (function, per_second) in [("rate()", true), ("count_over_time()", false)] {
        let q = format!("{{ }} | {function} by (resource.service.name)");
        let body = api.json("/api/metrics/query_range", &range(&q, "60s")).await;
        let mut totals = BTreeMap::new();
        for series in body["series"].as_array().unwrap_or_else(|| panic!("no series[]: {body}")) {
            let samples = series["samples"].as_array().unwrap();
            let times: Vec<i64> = samples
                .iter()
                .map(|s| s["timestampMs"].as_str().expect("timestampMs is a string").parse().unwrap())
                .collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "ascending: {times:?}");
            assert!(
                times.iter().all(|t| t % 60_000 == 0
                    && *t >= (start * 1000) as i64
                    && *t <= (end * 1000 + 60_000) as i64),
                "steps of 60s within the range: {times:?}"
            );
            let sum: f64 = samples.iter().map(|s| s["value"].as_f64().expect("value is a number")).sum();
            totals.insert(service_label(series), if per_second { sum * 60.0 } else { sum });
        }
        let want = shop_counts();
        assert_eq!(totals.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{q}: {body}");
        for (service, n) in &want {
            assert!((totals[service] - n).abs() < 1e-6, "{q}: {service}: {} want {n}", totals[service]);
        }
    }

    // Instant: one value per series over the whole range.
    let q = "{ } | count_over_time() by (resource.service.name)";
    let query = [("q", q.to_string()), ("start", start.to_string()), ("end", end.to_string())];
    let body = api.json("/api/metrics/query", &query).await;
    let got: BTreeMap<String, f64> = body["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series[]: {body}"))
        .iter()
        .map(|s| (service_label(s), s["value"].as_f64().unwrap_or_else(|| panic!("no value: {s}"))))
        .collect();
    assert_eq!(got, shop_counts(), "instant {q}: {body}");

    for step in ["fast", "0", "-5s"] {
        let (status, body) = api.text("/api/metrics/query_range", &range(q, step)).await;
        assert_eq!(status, 400, "step={step}: {body}");
    }
    let (status, body) = api.text("/api/metrics/query_range", &range("{ }", "60s")).await;
    assert_eq!(status, 400, "a search is not a metrics query: {body}");
}

// ---------------------------------------------------------------------------------------------
// 6. Tenancy.

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_one_tenant_are_invisible_to_another_and_to_the_default_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let shop = Shop::new();
    let a = Api::new(&pharos, Some("a"));
    let b = Api::new(&pharos, Some("b"));
    let default = Api::new(&pharos, None);
    a.send(&shop.request).await;
    let lone = "00000000000000000000000000defa17";
    let only_default = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            Resource { attributes: vec![string("service.name", "default-only")], ..Default::default() },
            vec![span(&trace_id(lone), 1, None, "lone", SERVER, shop.t0, shop.t0 + MS, vec![])],
        )],
    };
    default.send(&only_default).await;
    a.wait_stored(SHOP_SPANS).await;
    default.wait_stored(1).await;
    a.wait_trace(T1).await;
    let range = shop.range();

    // Trace by id.
    for path in
        [format!("/api/traces/{T1}"), format!("/api/v2/traces/{T1}"), format!("/jaeger/api/traces/{T1}")]
    {
        assert_eq!(a.text(&path, &[]).await.0, 200, "{path} as a");
        assert_eq!(b.text(&path, &[]).await.0, 404, "{path} as b");
        assert_eq!(default.text(&path, &[]).await.0, 404, "{path} without a tenant");
    }
    assert_eq!(a.text(&format!("/api/traces/{lone}"), &[]).await.0, 404, "default's trace as a");
    assert_eq!(default.text(&format!("/api/traces/{lone}"), &[]).await.0, 200);

    // Search.
    assert_eq!(trace_ids(&a.search(&shop, "{ }").await).len(), 20);
    assert_eq!(trace_ids(&b.search(&shop, "{ }").await), Vec::<String>::new());
    assert_eq!(trace_ids(&default.search(&shop, "{ }").await), [lone]);

    // Tags and values.
    let mut resource = range.to_vec();
    resource.push(("scope", "resource".to_string()));
    let tags = |body: Value| strings(&body["scopes"][0]["tags"]);
    assert!(tags(a.json("/api/v2/search/tags", &resource).await).contains("\"host.name\""));
    assert_eq!(tags(b.json("/api/v2/search/tags", &resource).await), BTreeSet::new());
    assert_eq!(tags(default.json("/api/v2/search/tags", &resource).await), set(&["service.name"]));
    let names = |body: Value| strings(&body["tagNames"]);
    assert_eq!(names(b.json("/api/search/tags", &range).await), BTreeSet::new());
    assert!(!names(default.json("/api/search/tags", &range).await).contains("\"http.method\""));
    let values = "/api/search/tag/service.name/values";
    assert!(strings(&a.json(values, &range).await["tagValues"]).contains("\"payment\""));
    assert_eq!(strings(&b.json(values, &range).await["tagValues"]), BTreeSet::new());
    assert_eq!(strings(&default.json(values, &range).await["tagValues"]), set(&["default-only"]));
    let values = "/api/v2/search/tag/resource.service.name/values";
    assert_eq!(b.json(values, &range).await["tagValues"], json!([]));

    // Metrics.
    let mut metrics = range.to_vec();
    metrics.push(("q", "{ } | count_over_time()".to_string()));
    let total = |body: Value| -> f64 {
        body["series"].as_array().unwrap().iter().map(|s| s["value"].as_f64().unwrap()).sum()
    };
    assert_eq!(total(b.json("/api/metrics/query", &metrics).await), 0.0);

    // Jaeger.
    let services = |body: Value| strings(&body["data"]);
    assert!(services(a.json("/jaeger/api/services", &[]).await).contains("\"frontend\""));
    assert_eq!(services(b.json("/jaeger/api/services", &[]).await), BTreeSet::new());
    assert_eq!(services(default.json("/jaeger/api/services", &[]).await), set(&["default-only"]));
    let search = [("service", "frontend".to_string())];
    assert_eq!(b.json("/jaeger/api/traces", &search).await["data"], json!([]));
    assert_eq!(default.json("/jaeger/api/traces", &search).await["data"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// 7. Jaeger.

fn envelope(body: &Value) -> &Vec<Value> {
    for key in ["total", "limit", "offset"] {
        assert!(body[key].is_number(), "{key} in {body}");
    }
    assert_eq!(body["errors"], Value::Null, "{body}");
    let data = body["data"].as_array().unwrap_or_else(|| panic!("no data[]: {body}"));
    assert_eq!(body["total"], data.len(), "{body}");
    data
}

fn tag<'a>(tags: &'a Value, key: &str) -> &'a Value {
    tags.as_array()
        .unwrap_or_else(|| panic!("no tags[]: {tags}"))
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no tag {key} in {tags}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_query_api_answers_grafanas_jaeger_data_source() {
    let (_dir, pharos, shop) = shop_pharos(&[]).await;
    let api = Api::new(&pharos, None);
    let (t0, now) = (shop.t0, shop.now);

    let body = api.json("/jaeger/api/services", &[]).await;
    let data = envelope(&body);
    assert_eq!(strings(&json!(data)), set(&["checkout", "frontend", "load", "payment", "worker"]));
    let body = api.json("/jaeger/api/services/checkout/operations", &[]).await;
    assert_eq!(strings(&json!(envelope(&body))), set(&["POST /pay", "SELECT cart"]), "{body}");

    // Search, with µs times.
    let us = |ns: u64| (ns / 1000).to_string();
    let search = |service: &str, extra: &[(&'static str, &str)]| {
        let mut query = vec![
            ("service", service.to_string()),
            ("limit", "20".to_string()),
            ("start", us(now - 3600 * SEC)),
            ("end", us(now)),
        ];
        query.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        query
    };
    let found = |body: &Value| -> BTreeSet<String> {
        envelope(body).iter().map(|t| t["traceID"].as_str().unwrap().to_string()).collect()
    };
    let t1 = BTreeSet::from([T1.to_string()]);
    for (query, want) in [
        (
            search(
                "checkout",
                &[
                    ("operation", "POST /pay"),
                    ("tags", r#"{"http.method":"POST"}"#),
                    ("minDuration", "100ms"),
                    ("maxDuration", "1s"),
                ],
            ),
            t1.clone(),
        ),
        (search("checkout", &[("operation", "POST /pay"), ("minDuration", "190ms")]), BTreeSet::new()),
        (search("checkout", &[("tags", r#"{"http.method":"GET"}"#)]), BTreeSet::new()),
        (search("payment", &[("tags", r#"{"error":"true"}"#)]), t1.clone()),
        (search("frontend", &[("tags", r#"{"http.response.status_code":"200","host.name":"fe-1"}"#)]), {
            BTreeSet::from([T1.to_string(), format!("{T2:0>32}")])
        }),
    ] {
        let body = api.json("/jaeger/api/traces", &query).await;
        assert_eq!(found(&body), want, "{query:?}: {body}");
    }
    let mut query = search("load", &[]);
    query[1].1 = "5".into();
    assert_eq!(found(&api.json("/jaeger/api/traces", &query).await).len(), 5, "limit");
    let outside =
        [("service", "frontend".to_string()), ("start", us(now - 7200 * SEC)), ("end", us(now - 3600 * SEC))];
    assert_eq!(found(&api.json("/jaeger/api/traces", &outside).await), BTreeSet::new(), "µs range");

    // One trace in Jaeger's model.
    let body = api.json(&format!("/jaeger/api/traces/{T1}"), &[]).await;
    let data = envelope(&body);
    assert_eq!(data.len(), 1);
    let trace = &data[0];
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 4, "{trace}");
    let by_id = |n: u64| {
        spans
            .iter()
            .find(|s| s["spanID"] == hex(&span_id(n)))
            .unwrap_or_else(|| panic!("span {n:x}: {trace}"))
    };
    let service = |s: &Value| {
        let pid = s["processID"].as_str().unwrap();
        trace["processes"][pid]["serviceName"].as_str().unwrap_or_else(|| panic!("process {pid}")).to_string()
    };
    let (s1, s2, s3, s4) = (by_id(0x11), by_id(0x12), by_id(0x13), by_id(0x14));
    for s in [s1, s2, s3, s4] {
        assert_eq!(s["traceID"], T1, "{s}");
    }
    assert_eq!(
        [s1, s2, s3, s4].map(service),
        ["frontend", "checkout", "payment", "checkout"].map(String::from)
    );
    assert_eq!(
        [s1, s2, s3, s4].map(|s| s["operationName"].as_str().unwrap().to_string()),
        ["GET /checkout", "POST /pay", "charge", "SELECT cart"].map(String::from)
    );
    assert_eq!(s2["startTime"], json!((t0 + 20 * MS) / 1000), "µs");
    assert_eq!(s2["duration"], json!(180_000), "µs");
    let child_of =
        |parent: u64| json!([{ "refType": "CHILD_OF", "traceID": T1, "spanID": hex(&span_id(parent)) }]);
    assert_eq!(s2["references"], child_of(0x11), "{s2}");
    assert_eq!(s3["references"], child_of(0x12), "{s3}");
    assert_eq!(s4["references"], child_of(0x11), "{s4}");
    assert_eq!(
        s1["references"],
        json!([{ "refType": "FOLLOWS_FROM", "traceID": format!("{T2:0>32}"), "spanID": hex(&span_id(0x21)) }]),
        "a link: {s1}"
    );
    // Typed tags.
    assert_eq!(
        tag(&s1["tags"], "http.method"),
        &json!({"key": "http.method", "type": "string", "value": "GET"})
    );
    assert_eq!(
        tag(&s2["tags"], "http.response.status_code"),
        &json!({"key": "http.response.status_code", "type": "int64", "value": 500})
    );
    assert_eq!(tag(&s1["tags"], "sampled"), &json!({"key": "sampled", "type": "bool", "value": true}));
    assert_eq!(tag(&s1["tags"], "ratio"), &json!({"key": "ratio", "type": "float64", "value": 0.5}));
    assert_eq!(tag(&s3["tags"], "error"), &json!({"key": "error", "type": "bool", "value": true}));
    assert_eq!(tag(&s2["tags"], "span.kind")["value"], "client");
    assert_eq!(tag(&s3["tags"], "span.kind")["value"], "server");
    // Events as logs.
    assert_eq!(
        s1["logs"],
        json!([{ "timestamp": (t0 + 10 * MS) / 1000, "fields": [
            { "key": "event", "type": "string", "value": "cache miss" },
            { "key": "cache.key", "type": "string", "value": "cart:42" },
        ]}]),
        "{s1}"
    );
    assert_eq!(s3["logs"][0]["fields"][0]["value"], "exception");
    let pid = s1["processID"].as_str().unwrap();
    assert_eq!(tag(&trace["processes"][pid]["tags"], "host.name")["value"], "fe-1");

    // 64-bit id; unknown and bad ids.
    let body = api.json(&format!("/jaeger/api/traces/{T2}"), &[]).await;
    assert_eq!(envelope(&body)[0]["spans"][0]["operationName"], "GET /health");
    let (status, body) = api.text("/jaeger/api/traces/4bf92f3577b34da6a3ce929d0e0e4737", &[]).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.text("/jaeger/api/traces/xyz", &[]).await;
    assert_eq!(status, 400, "{body}");

    // Dependencies: calls between services (parent span in one, child in another).
    let query = [("endTs", (now / MS).to_string()), ("lookback", "3600000".to_string())];
    let body = api.json("/jaeger/api/dependencies", &query).await;
    let links: BTreeSet<(String, String, u64)> = envelope(&body)
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap().into(),
                d["child"].as_str().unwrap().into(),
                d["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        links,
        BTreeSet::from([("checkout".into(), "payment".into(), 1), ("frontend".into(), "checkout".into(), 2)]),
        "{body}"
    );
    let query = [("endTs", ((now - 3600 * SEC) / MS).to_string()), ("lookback", "3600000".to_string())];
    assert_eq!(envelope(&api.json("/jaeger/api/dependencies", &query).await).len(), 0, "ms range");

    // A search without a service is refused in the envelope.
    let (status, body) = api.text("/jaeger/api/traces", &[("limit", "20".to_string())]).await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["errors"][0]["msg"].as_str().is_some_and(|m| m.contains("service")), "{body}");
}

// ---------------------------------------------------------------------------------------------
// 8. Limits.

/// One trace of `spans` spans (a root and its children), in requests of at most 5,000 spans.
fn long_trace(id: &[u8], spans: u64, t0: u64) -> Vec<ExportTraceServiceRequest> {
    let all: Vec<Span> = (0..spans)
        .map(|k| {
            let start = t0 + k * 1000;
            span(id, k + 1, (k > 0).then_some(1), "step", INTERNAL, start, start + MS, vec![])
        })
        .collect();
    all.chunks(5_000)
        .map(|chunk| ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(resource("long", "long-1"), chunk.to_vec())],
        })
        .collect()
}

fn span_ids(resource_spans: &[ResourceSpans]) -> Vec<u64> {
    let mut ids: Vec<u64> = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap()))
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_of_100k_spans_is_returned_whole_by_v2_trace_by_id() {
    const SPANS: u64 = 100_000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let api = Api::new(&pharos, None);
    let id = "00000000000000000000000000100c00";
    for request in long_trace(&trace_id(id), SPANS, now_ns() - 600 * SEC) {
        api.send(&request).await;
    }
    api.wait_stored(SPANS).await;
    let sent = started.elapsed();

    let (status, body) = api.get(&format!("/api/v2/traces/{id}"), &[], Some("application/protobuf")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_eq!((response.status, response.message.as_str()), (0, ""), "COMPLETE");
    assert_eq!(span_ids(&response.trace.unwrap_or_default().resource_spans), (1..=SPANS).collect::<Vec<_>>());

    let body = api.json(&format!("/api/v2/traces/{id}"), &[]).await;
    assert_eq!(body["status"], "COMPLETE");
    let resource_spans: Vec<ResourceSpans> =
        serde_json::from_value(body["trace"]["resourceSpans"].clone()).unwrap();
    assert_eq!(span_ids(&resource_spans).len(), SPANS as usize);
    eprintln!("100K spans: sent and stored in {sent:?}, read back in {:?}", started.elapsed() - sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_longer_than_max_trace_spans_is_partial_with_a_message() {
    const SPANS: u64 = 60_000;
    const MAX: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["traces.max_trace_spans=50000"]);
    let api = Api::new(&pharos, None);
    let id = "00000000000000000000000000100c01";
    for request in long_trace(&trace_id(id), SPANS, now_ns() - 600 * SEC) {
        api.send(&request).await;
    }
    api.wait_stored(SPANS).await;
    // The first spans by start time.
    let first: Vec<u64> = (1..=MAX).collect();

    let body = api.json(&format!("/api/v2/traces/{id}"), &[]).await;
    assert_eq!(body["status"], "PARTIAL");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("traces.max_trace_spans"), "message: {message}");
    let resource_spans: Vec<ResourceSpans> =
        serde_json::from_value(body["trace"]["resourceSpans"].clone()).unwrap();
    assert_eq!(span_ids(&resource_spans), first);

    let (status, body) = api.get(&format!("/api/v2/traces/{id}"), &[], Some("application/protobuf")).await;
    assert_eq!(status, 200);
    let response = TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_eq!(response.status, 1, "PARTIAL");
    assert!(response.message.contains("traces.max_trace_spans"), "{}", response.message);
    assert_eq!(span_ids(&response.trace.unwrap_or_default().resource_spans), first);

    let (status, body) = api.get(&format!("/api/traces/{id}"), &[], Some("application/protobuf")).await;
    assert_eq!(status, 200);
    assert_eq!(span_ids(&TracesData::decode(body.as_slice()).unwrap().resource_spans), first, "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_tags_and_metrics_over_max_search_spans_are_refused_with_400() {
    let (_dir, pharos, shop) = shop_pharos(&["traces.max_search_spans=10"]).await;
    let api = Api::new(&pharos, None);
    let range = shop.range();
    let with = |extra: (&'static str, &str)| {
        let mut query = range.to_vec();
        query.push((extra.0, extra.1.to_string()));
        query
    };
    for (path, query) in [
        ("/api/search", with(("q", "{ }"))),
        ("/api/v2/search/tags", with(("scope", "span"))),
        ("/api/v2/search/tag/resource.service.name/values", range.to_vec()),
        ("/api/metrics/query_range", with(("q", "{ } | rate()"))),
    ] {
        let (status, body) = api.text(path, &query).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("max_search_spans"), "{path}: {body}");
    }
    // Trace by id is not a search.
    assert_eq!(api.text(&format!("/api/traces/{T1}"), &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_over_max_search_spans_names_the_key_that_sets_it() {
    let (_dir, pharos, shop) = shop_pharos(&["traces.max_search_spans=10"]).await;
    let api = Api::new(&pharos, None);
    let mut query = shop.range().to_vec();
    query.push(("q", "{ }".to_string()));
    let (status, body) = api.text("/api/search", &query).await;
    assert_eq!(status, 400, "{body}");
    // The key is `traces.max_search_spans` (`pharos config default`, `--set`), nothing else.
    let named: Vec<&str> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .filter(|word| word.ends_with("max_search_spans"))
        .collect();
    assert_eq!(named, ["traces.max_search_spans"], "{body}");
}

// ---------------------------------------------------------------------------------------------
// 9. Zipkin.

/// The messages of `zipkin.proto3` a reporter sends.
mod zipkin {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOfSpans {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        /// 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
        #[prost(int32, tag = "4")]
        pub kind: i32,
        #[prost(string, tag = "5")]
        pub name: String,
        /// Unix µs.
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        /// µs.
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        #[prost(map = "string, string", tag = "11")]
        pub tags: std::collections::HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endpoint {
        #[prost(string, tag = "1")]
        pub service_name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Annotation {
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// The spans of trace `id` read back by v1 protobuf trace by id, each with its service name.
async fn read_back(api: &Api<'_>, id: &str) -> Vec<(String, Span)> {
    let (status, body) = api.get(&format!("/api/traces/{id}"), &[], Some("application/protobuf")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut out = Vec::new();
    for rs in TracesData::decode(body.as_slice()).unwrap().resource_spans {
        let attributes = rs.resource.unwrap_or_default().attributes;
        let service = attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| kv.value.clone());
        let Some(AnyValue { value: Some(any_value::Value::StringValue(service)) }) = service else {
            panic!("no service.name in {attributes:?}")
        };
        for ss in rs.scope_spans {
            out.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    out.sort_by(|a, b| a.1.span_id.cmp(&b.1.span_id));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn zipkin_spans_in_json_and_protobuf_are_accepted_and_read_through_tempo() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &[]);
    let api = Api::new(&pharos, None);
    let client = reqwest::Client::new();
    let url = pharos.http_url("/api/v2/spans");
    let ts = (now_ns() - 600 * SEC) / 1000; // µs

    let json_spans = json!([
        {
            "traceId": "5af7183fb1d4cf5f", "id": "0000000000000001", "kind": "SERVER", "name": "get /api",
            "timestamp": ts, "duration": 150_000,
            "localEndpoint": { "serviceName": "zfront" },
            "annotations": [{ "timestamp": ts + 10, "value": "wr" }],
            "tags": { "http.path": "/api" }
        },
        {
            "traceId": "5af7183fb1d4cf5f", "parentId": "0000000000000001", "id": "0000000000000002",
            "kind": "CLIENT", "name": "select", "timestamp": ts + 1_000, "duration": 20_000,
            "localEndpoint": { "serviceName": "zback" }, "tags": { "db.system": "mysql" }
        }
    ]);
    let response = client.post(&url).header("content-type", "application/json").body(json_spans.to_string());
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());

    let proto = zipkin::ListOfSpans {
        spans: vec![zipkin::Span {
            trace_id: trace_id("463ac35c9f6413ad48485a3953bb6124"),
            id: span_id(7),
            kind: 4, // CONSUMER
            name: "consume".into(),
            timestamp: ts + 2_000,
            duration: 3_000,
            local_endpoint: Some(zipkin::Endpoint { service_name: "zproto".into() }),
            tags: [("queue".to_string(), "orders".to_string())].into(),
            ..Default::default()
        }],
    };
    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(proto.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());

    // The JSON trace (a 64-bit id) through Tempo's trace by id.
    api.wait_trace("5af7183fb1d4cf5f").await;
    api.wait_trace("463ac35c9f6413ad48485a3953bb6124").await;
    api.wait_stored(3).await;
    let spans = read_back(&api, "5af7183fb1d4cf5f").await;
    assert_eq!(spans.len(), 2);
    let (service, root) = &spans[0];
    assert_eq!((service.as_str(), root.name.as_str(), root.kind), ("zfront", "get /api", SERVER));
    assert_eq!(root.trace_id, trace_id("5af7183fb1d4cf5f"));
    assert_eq!(root.parent_span_id, Vec::<u8>::new());
    assert_eq!((root.start_time_unix_nano, root.end_time_unix_nano), (ts * 1000, (ts + 150_000) * 1000));
    assert!(root.attributes.contains(&string("http.path", "/api")), "{:?}", root.attributes);
    assert_eq!(root.events.len(), 1);
    assert_eq!((root.events[0].name.as_str(), root.events[0].time_unix_nano), ("wr", (ts + 10) * 1000));
    let (service, child) = &spans[1];
    assert_eq!((service.as_str(), child.name.as_str(), child.kind), ("zback", "select", CLIENT));
    assert_eq!(child.parent_span_id, span_id(1));
    assert_eq!(child.end_time_unix_nano - child.start_time_unix_nano, 20_000_000);

    let spans = read_back(&api, "463ac35c9f6413ad48485a3953bb6124").await;
    assert_eq!(spans.len(), 1);
    let (service, span) = &spans[0];
    assert_eq!((service.as_str(), span.name.as_str(), span.kind), ("zproto", "consume", 5));
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        ((ts + 2_000) * 1000, (ts + 5_000) * 1000)
    );
    assert!(span.attributes.contains(&string("queue", "orders")), "{:?}", span.attributes);

    // And through search.
    let query = [("q", r#"{ resource.service.name = "zback" }"#.to_string())];
    assert_eq!(trace_ids(&api.json("/api/search", &query).await), [format!("{:0>32}", "5af7183fb1d4cf5f")]);

    // Malformed JSON, and a content type Zipkin does not take.
    let response =
        client.post(&url).header("content-type", "application/json").body("[{\"traceId\": ").send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 400, "{}", response.text().await.unwrap());
    let response = client.post(&url).header("content-type", "text/plain").body("hello").send().await.unwrap();
    assert_eq!(response.status(), 415, "{}", response.text().await.unwrap());
}
