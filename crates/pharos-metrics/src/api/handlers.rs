//! One handler per endpoint.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pharos_core::Tenant;

use crate::query::{
    CancelToken, Engine, Matcher, QueryError, extract_selectors, parse, parse_series_selector,
};

use super::ApiState;
use super::error::ApiError;
use super::json::{push_labels, push_str, push_str_list, push_timestamp, push_value, query_data, success};
use super::params::{Params, parse_duration_ms, parse_time, unescape_label_name};
use super::reader::MetricsReader;

/// The header naming the tenant.
const TENANT_HEADER: &str = "x-scope-orgid";

fn tenant(headers: &HeaderMap) -> Result<Tenant, ApiError> {
    match headers.get(TENANT_HEADER) {
        None => Ok(Tenant::default_tenant()),
        Some(v) => Ok(Tenant::parse(String::from_utf8_lossy(v.as_bytes()).trim())?),
    }
}

fn reader(st: &ApiState, headers: &HeaderMap) -> Result<Arc<dyn MetricsReader>, ApiError> {
    Ok(st.readers.reader(&tenant(headers)?))
}

fn respond(data: &str, warnings: &[String]) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], success(data, warnings)).into_response()
}

/// A query's answer with its warnings and infos.
fn respond_annotated(data: &str, notes: &crate::query::Annotations) -> Response {
    let body = super::json::success_with_infos(data, &notes.warnings, &notes.infos);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The engine for one request: the request's `timeout` can shorten the configured one.
fn engine(st: &ApiState, p: &Params) -> Result<Engine, ApiError> {
    let mut opts = st.opts.engine.clone();
    if let Some(s) = p.get("timeout") {
        let ms = parse_duration_ms(s).map_err(|reason| ApiError::BadParam { param: "timeout", reason })?;
        let d = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        opts.timeout = Some(opts.timeout.map_or(d, |t| t.min(d)));
    }
    Ok(Engine::new(opts))
}

/// Cancels the query when the request goes away (the handler future is dropped).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs CPU-bound work on the blocking pool, cancelled if the client disconnects.
async fn run_blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&CancelToken) -> Result<T, QueryError> + Send + 'static,
{
    let cancel = CancelToken::new();
    let _guard = CancelOnDrop(cancel.clone());
    match tokio::task::spawn_blocking(move || f(&cancel)).await {
        Ok(r) => r.map_err(ApiError::Query),
        Err(_) => Err(ApiError::TaskFailed),
    }
}

fn parse_query(p: &Params) -> Result<crate::query::Expr, ApiError> {
    let q = p.required("query")?;
    parse(q).map_err(|e| ApiError::BadParam { param: "query", reason: e.to_string() })
}

fn match_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut sets = Vec::new();
    for m in p.all("match[]") {
        let parsed = parse_series_selector(m)
            .map_err(|e| ApiError::BadParam { param: "match[]", reason: e.to_string() })?;
        sets.extend(parsed);
    }
    Ok(sets)
}

fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = p.time_or("start", i64::MIN)?;
    let end = p.time_or("end", i64::MAX)?;
    if end < start {
        return Err(ApiError::BadParam {
            param: "end",
            reason: "end timestamp must not be before start time".into(),
        });
    }
    Ok((start, end))
}

/// Truncates to `limit`, returning the warning Prometheus gives when it does.
fn apply_limit<T>(items: &mut Vec<T>, limit: Option<usize>) -> Vec<String> {
    match limit {
        Some(n) if items.len() > n => {
            items.truncate(n);
            vec!["results truncated due to limit".to_owned()]
        }
        _ => Vec::new(),
    }
}

/// `GET|POST /api/v1/query`
pub(crate) async fn query(
    State(st): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let expr = parse_query(&p)?;
    let t = p.time_or("time", (st.opts.clock)())?;
    let engine = engine(&st, &p)?;
    let (value, notes) =
        run_blocking(move |cancel| engine.instant_annotated(&*reader, &expr, t, cancel)).await?;
    Ok(respond_annotated(&query_data(&value), &notes))
}

/// `GET|POST /api/v1/query_range`
pub(crate) async fn query_range(
    State(st): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let expr = parse_query(&p)?;
    let start = p
        .required("start")
        .and_then(|s| parse_time(s).map_err(|reason| ApiError::BadParam { param: "start", reason }))?;
    let end = p
        .required("end")
        .and_then(|s| parse_time(s).map_err(|reason| ApiError::BadParam { param: "end", reason }))?;
    if end < start {
        return Err(ApiError::BadParam {
            param: "end",
            reason: "end timestamp must not be before start time".into(),
        });
    }
    let step = p
        .required("step")
        .and_then(|s| parse_duration_ms(s).map_err(|reason| ApiError::BadParam { param: "step", reason }))?;
    if step <= 0 {
        return Err(ApiError::BadParam {
            param: "step",
            reason: "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .into(),
        });
    }
    let limit = st.opts.max_points_per_series;
    if (i128::from(end) - i128::from(start)) / i128::from(step) > limit as i128 {
        return Err(ApiError::TooManyPoints { limit });
    }
    let engine = engine(&st, &p)?;
    let (value, notes) =
        run_blocking(move |cancel| engine.range_annotated(&*reader, &expr, start, end, step, cancel)).await?;
    Ok(respond_annotated(&query_data(&value), &notes))
}

/// `GET|POST /api/v1/series`
pub(crate) async fn series(
    State(st): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let sets = match_sets(&p)?;
    if sets.is_empty() {
        return Err(ApiError::NoMatch);
    }
    let (start, end) = time_range(&p)?;
    let limit = p.limit("limit")?;
    let mut found = run_blocking(move |_| reader.series(&sets, start, end)).await?;
    let warnings = apply_limit(&mut found, limit);
    let mut data = String::from("[");
    for (i, l) in found.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        push_labels(&mut data, l);
    }
    data.push(']');
    Ok(respond(&data, &warnings))
}

/// `GET|POST /api/v1/labels`
pub(crate) async fn labels(
    State(st): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let sets = match_sets(&p)?;
    let (start, end) = time_range(&p)?;
    let limit = p.limit("limit")?;
    let mut names = run_blocking(move |_| reader.label_names(&sets, start, end)).await?;
    let warnings = apply_limit(&mut names, limit);
    let mut data = String::new();
    push_str_list(&mut data, &names);
    Ok(respond(&data, &warnings))
}

/// `GET /api/v1/label/{name}/values`; `name` may be `U__`-escaped.
pub(crate) async fn label_values(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let name = unescape_label_name(&name);
    if name.is_empty() {
        return Err(ApiError::BadParam { param: "name", reason: "invalid label name: \"\"".into() });
    }
    let sets = match_sets(&p)?;
    let (start, end) = time_range(&p)?;
    let limit = p.limit("limit")?;
    let mut values = run_blocking(move |_| reader.label_values(&name, &sets, start, end)).await?;
    let warnings = apply_limit(&mut values, limit);
    let mut data = String::new();
    push_str_list(&mut data, &values);
    Ok(respond(&data, &warnings))
}

/// `GET /api/v1/metadata`
pub(crate) async fn metadata(
    State(st): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let limit = p.limit("limit")?;
    let entries = reader.metadata(p.get("metric"), limit);
    let mut data = String::from("{");
    for (i, (name, md)) in entries.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        push_str(&mut data, name);
        data.push_str(r#":[{"type":"#);
        push_str(&mut data, md.kind.as_str());
        data.push_str(r#","help":"#);
        push_str(&mut data, &md.help);
        data.push_str(r#","unit":"#);
        push_str(&mut data, &md.unit);
        data.push_str("}]");
    }
    data.push('}');
    Ok(respond(&data, &[]))
}

/// `GET|POST /api/v1/query_exemplars`
pub(crate) async fn query_exemplars(
    State(st): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let reader = reader(&st, &headers)?;
    let expr = parse_query(&p)?;
    let (start, end) = time_range(&p)?;
    let sets =
        extract_selectors(&expr).map_err(|e| ApiError::BadParam { param: "query", reason: e.to_string() })?;
    let found = if sets.is_empty() {
        Vec::new()
    } else {
        run_blocking(move |_| reader.exemplars(&sets, start, end)).await?
    };
    let mut data = String::from("[");
    for (i, se) in found.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(r#"{"seriesLabels":"#);
        push_labels(&mut data, &se.series);
        data.push_str(r#","exemplars":["#);
        for (j, e) in se.exemplars.iter().enumerate() {
            if j > 0 {
                data.push(',');
            }
            data.push_str(r#"{"labels":"#);
            push_labels(&mut data, &e.labels);
            data.push_str(r#","value":"#);
            push_value(&mut data, e.value);
            data.push_str(r#","timestamp":"#);
            push_timestamp(&mut data, e.t);
            data.push('}');
        }
        data.push_str("]}");
    }
    data.push(']');
    Ok(respond(&data, &[]))
}

/// `GET /api/v1/status/buildinfo`: Prometheus's fields, without `features` (Grafana takes
/// any `features` object for Mimir and would call a ruler API we do not have).
pub(crate) async fn buildinfo(State(st): State<ApiState>) -> Response {
    let mut data = String::from(r#"{"version":"#);
    push_str(&mut data, &st.opts.version);
    data.push_str(r#","revision":"","branch":"","buildUser":"","buildDate":"","goVersion":""}"#);
    respond(&data, &[])
}

/// `GET /api/v1/rules`: no rule groups yet.
pub(crate) async fn rules() -> Response {
    respond(r#"{"groups":[]}"#, &[])
}

/// `GET /api/v1/alerts`: no alerts yet.
pub(crate) async fn alerts() -> Response {
    respond(r#"{"alerts":[]}"#, &[])
}
