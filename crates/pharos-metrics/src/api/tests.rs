//! In-process tests of the routes (the router called with `oneshot`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use pharos_core::Tenant;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::model::Labels;
use crate::store::{Exemplar, Heads, Metadata, MetricType};

/// Two tenants: `default` with http requests, `other` with one series.
fn fixture() -> Router {
    let heads = Arc::new(Heads::default());
    let default = heads.head(&Tenant::default_tenant());
    for (code, slope) in [("200", 10.0), ("500", 1.0)] {
        let l = Labels::from_pairs([
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("http.status_code", code),
        ]);
        for i in 0..=20 {
            default.append(&l, i * 15_000, i as f64 * slope).expect("append");
        }
        default
            .append_exemplar(
                &l,
                Exemplar { labels: Labels::from_pairs([("trace_id", "abc")]), value: 6.0, t: 30_500 },
            )
            .expect("exemplar");
    }
    default
        .set_metadata(
            "http_requests_total",
            Metadata { kind: MetricType::Counter, help: "Requests served.".into(), unit: String::new() },
        )
        .expect("metadata");
    let other = heads.head(&Tenant::parse("other").expect("valid"));
    other.append(&Labels::from_pairs([("__name__", "secret"), ("job", "x")]), 0, 1.0).expect("append");
    let opts = ApiOptions { clock: Arc::new(|| 300_000), ..ApiOptions::default() };
    router(heads, opts)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.expect("body");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    call(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn raw_get(app: &Router, uri: &str) -> String {
    let resp =
        app.clone().oneshot(Request::get(uri).body(Body::empty()).expect("request")).await.expect("ok");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn post_form(app: &Router, uri: &str, form: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request");
    call(app, req).await
}

fn with_tenant(uri: &str, tenant: &str) -> Request<Body> {
    Request::get(uri).header("X-Scope-OrgID", tenant).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn grafana_health_check_answers_scalar_two_at_time_four() {
    let app = fixture();
    let body = raw_get(&app, "/api/v1/query?query=1%2B1&time=4").await;
    assert_eq!(body, r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#);
}

#[tokio::test]
async fn instant_query_returns_vector_with_string_values() {
    let app = fixture();
    let (status, v) = get(&app, "/api/v1/query?query=http_requests_total%7Bhttp_status_code%3D%22x%22%7D%20or%20http_requests_total&time=150.5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["resultType"], "vector");
    let result = v["data"]["result"].as_array().expect("array");
    assert_eq!(result.len(), 2);
    assert_eq!(result[0]["metric"]["__name__"], "http_requests_total");
    assert_eq!(result[0]["value"], json!([150.5, "100"]));
}

#[tokio::test]
async fn instant_query_defaults_to_the_clock() {
    let app = fixture();
    let (_, v) = get(&app, "/api/v1/query?query=time()").await;
    assert_eq!(v["data"]["result"], json!([300, "300"]));
}

#[tokio::test]
async fn range_query_returns_sorted_matrix_over_get_and_post() {
    let app = fixture();
    let q = "query=rate(http_requests_total%5B1m%5D)&start=60&end=120&step=30s";
    let (status, v) = get(&app, &format!("/api/v1/query_range?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().expect("array");
    let codes: Vec<&str> = result.iter().filter_map(|s| s["metric"]["http.status_code"].as_str()).collect();
    assert_eq!(codes, vec!["200", "500"]);
    assert_eq!(result[1]["values"][0][0], json!(60));
    let rate: f64 = result[1]["values"][0][1].as_str().and_then(|s| s.parse().ok()).expect("string value");
    assert!((rate - 1.0 / 15.0).abs() < 1e-9, "{rate}");
    assert_eq!(result[0]["values"].as_array().map(Vec::len), Some(3));
    let (status, posted) = post_form(&app, "/api/v1/query_range", q).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(posted, v);
    let (_, prom) = get(&app, &format!("/prometheus/api/v1/query_range?{q}")).await;
    assert_eq!(prom, v);
}

#[tokio::test]
async fn range_query_accepts_rfc3339_and_float_step() {
    let app = fixture();
    let uri =
        "/api/v1/query_range?query=vector(1)&start=1970-01-01T00:01:00Z&end=1970-01-01T00:02:00.000Z&step=60";
    let (status, v) = get(&app, uri).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"][0]["values"], json!([[60, "1"], [120, "1"]]));
}

#[tokio::test]
async fn range_query_over_11000_points_is_bad_data() {
    let app = fixture();
    let (status, v) = get(&app, "/api/v1/query_range?query=up&start=0&end=11001&step=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorType"], "bad_data");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("11000 points")), "{v}");
    let (status, _) = get(&app, "/api/v1/query_range?query=up&start=0&end=11000&step=1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_parameters_are_400_with_prometheus_envelope() {
    let app = fixture();
    for uri in [
        "/api/v1/query",
        "/api/v1/query?query=sum(",
        "/api/v1/query?query=up&time=yesterday",
        "/api/v1/query?query=up&timeout=soon",
        "/api/v1/query_range?query=up&start=10&end=0&step=1",
        "/api/v1/query_range?query=up&start=0&end=10&step=0",
        "/api/v1/query_range?query=up&start=0&end=10",
        "/api/v1/query_range?query=up%5B5m%5D&start=0&end=10&step=1",
        "/api/v1/series",
        "/api/v1/series?match[]=sum(up)",
        "/api/v1/labels?match[]=%7B",
        "/api/v1/label/job/values?start=x",
        "/api/v1/query_exemplars?query=(",
    ] {
        let (status, v) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["status"], "error", "{uri}");
        assert_eq!(v["errorType"], "bad_data", "{uri}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{uri}");
    }
}

#[tokio::test]
async fn execution_error_is_422_and_timeout_is_503() {
    let app = fixture();
    let (status, v) =
        get(&app, "/api/v1/query?query=http_requests_total%20%2B%20on(job)%20http_requests_total&time=100")
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errorType"], "execution");
    let (status, v) = get(&app, "/api/v1/query?query=up&timeout=0.000001").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["errorType"], "timeout");
}

#[tokio::test]
async fn tenant_header_selects_the_head_and_invalid_tenant_is_400() {
    let app = fixture();
    let (_, v) = call(&app, with_tenant("/api/v1/query?query=secret&time=1", "other")).await;
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(1));
    let (_, v) = get(&app, "/api/v1/query?query=secret&time=1").await;
    assert_eq!(v["data"]["result"], json!([]));
    let (_, v) = call(&app, with_tenant("/api/v1/labels", "nobody")).await;
    assert_eq!(v["data"], json!([]));
    for bad in ["..", "a|b", "a:b", "../etc"] {
        let (status, v) = call(&app, with_tenant("/api/v1/labels", bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(v["errorType"], "bad_data");
    }
}

#[tokio::test]
async fn series_and_labels_endpoints_answer_with_matchers_and_limits() {
    let app = fixture();
    let (status, v) = get(&app, "/api/v1/series?match[]=http_requests_total&match[]=nothing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["data"],
        json!([
            {"__name__":"http_requests_total","http.status_code":"200","job":"api"},
            {"__name__":"http_requests_total","http.status_code":"500","job":"api"}
        ])
    );
    let (_, v) = get(&app, "/api/v1/series?match[]=http_requests_total&limit=1").await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));
    let (_, v) = post_form(&app, "/api/v1/series", "match%5B%5D=http_requests_total&start=0&end=1000").await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    let (_, v) = get(&app, "/api/v1/series?match[]=http_requests_total&start=1000000").await;
    assert_eq!(v["data"], json!([]));

    let (_, v) = get(&app, "/api/v1/labels").await;
    assert_eq!(v["data"], json!(["__name__", "http.status_code", "job"]));
    let (_, v) = post_form(&app, "/api/v1/labels", "match[]=%7Bjob%3D%22api%22%7D").await;
    assert_eq!(v["data"], json!(["__name__", "http.status_code", "job"]));
    let (_, v) = get(&app, "/api/v1/labels?match[]=nothing").await;
    assert_eq!(v["data"], json!([]));
}

#[tokio::test]
async fn label_values_unescape_grafana_names() {
    let app = fixture();
    let (_, v) = get(&app, "/api/v1/label/U__http_2e_status_code/values").await;
    assert_eq!(v["data"], json!(["200", "500"]));
    let (_, v) =
        get(&app, "/api/v1/label/U__http_2e_status__code/values?match[]=%7Bjob%3D%22api%22%7D").await;
    assert_eq!(v["data"], json!(["200", "500"]));
    let (_, v) = get(&app, "/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], json!(["http_requests_total"]));
    let (_, v) = get(&app, "/prometheus/api/v1/label/job/values?start=0&end=10").await;
    assert_eq!(v["data"], json!(["api"]));
    let (_, v) = get(&app, "/api/v1/label/missing/values").await;
    assert_eq!(v["data"], json!([]));
}

#[tokio::test]
async fn metadata_exemplars_buildinfo_rules_and_alerts_have_prometheus_shapes() {
    let app = fixture();
    let (_, v) = get(&app, "/api/v1/metadata").await;
    assert_eq!(
        v["data"],
        json!({"http_requests_total":[{"type":"counter","help":"Requests served.","unit":""}]})
    );
    let (_, v) = get(&app, "/api/v1/metadata?metric=nope").await;
    assert_eq!(v["data"], json!({}));

    let (status, v) = get(&app, "/api/v1/query_exemplars?query=rate(http_requests_total%7Bhttp_status_code!%3D%22%22%7D%5B5m%5D)%20or%20http_requests_total&start=0&end=100").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let list = v["data"].as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["seriesLabels"]["http.status_code"], "200");
    assert_eq!(list[0]["exemplars"], json!([{"labels":{"trace_id":"abc"},"value":"6","timestamp":30.5}]));
    let (_, v) = get(&app, "/api/v1/query_exemplars?query=http_requests_total&start=40&end=100").await;
    assert_eq!(v["data"], json!([]));

    let (_, v) = get(&app, "/api/v1/status/buildinfo").await;
    assert_eq!(v["status"], "success");
    assert!(v["data"]["version"].is_string());
    assert!(v["data"].get("features").is_none());
    assert_eq!(raw_get(&app, "/api/v1/rules").await, r#"{"status":"success","data":{"groups":[]}}"#);
    assert_eq!(
        raw_get(&app, "/prometheus/api/v1/alerts").await,
        r#"{"status":"success","data":{"alerts":[]}}"#
    );
}

#[tokio::test]
async fn post_merges_body_and_url_parameters() {
    let app = fixture();
    let (status, v) = post_form(&app, "/api/v1/query?time=4", "query=1%2B1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["result"], json!([4, "2"]));
}

/// Annotations reach the answer as Prometheus 3 gives them: `warnings` and `infos` beside
/// `data`, absent when there are none.
#[tokio::test]
async fn query_answers_carry_warnings_and_infos() {
    let app = fixture();
    let (status, v) = get(&app, "/api/v1/query?query=rate(http_requests_total%5B1m%5D)&time=150").await;
    assert_eq!(status, StatusCode::OK);
    assert!(v.get("warnings").is_none() && v.get("infos").is_none(), "{v}");
    // A name that does not look like a counter's, made by relabelling in a subquery.
    let q =
        "rate(label_replace(http_requests_total,%22__name__%22,%22requests%22,%22%22,%22%22)%5B1m:15s%5D)";
    let (status, v) = get(&app, &format!("/api/v1/query?query={q}&time=150")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["infos"],
        json!([
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"requests\""
        ])
    );
    assert!(v.get("warnings").is_none(), "{v}");
    let (status, v) =
        get(&app, "/api/v1/query_range?query=sort(http_requests_total)&start=0&end=300&step=60").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(
        v["warnings"],
        json!([
            "PromQL warning: sort is ineffective for range queries since results are always ordered by labels"
        ])
    );
    let (_, v) = post_form(&app, "/api/v1/query", "query=quantile(1.5,http_requests_total)&time=150").await;
    assert_eq!(v["warnings"], json!(["PromQL warning: quantile value should be between 0 and 1, got 1.5"]));
}
