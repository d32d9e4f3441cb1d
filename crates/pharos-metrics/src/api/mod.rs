//! The Prometheus HTTP API (`/api/v1/...`, also under `/prometheus/api/v1/...`), as
//! Grafana's Prometheus data source calls it.
//!
//! The tenant comes from `X-Scope-OrgID` (absent: `default`; invalid: 400). PromQL runs on
//! the blocking pool. Responses use Prometheus's envelope and formatting exactly.

mod error;
mod handlers;
mod json;
mod params;
mod reader;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;

use crate::query::EngineOptions;

pub use error::ApiError;
pub use reader::{MetricsReader, TenantReaders};

/// Prometheus's limit on points per series in a range query.
pub const MAX_POINTS_PER_SERIES: usize = 11_000;

/// Reads the current time in ms since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Settings of the API.
#[derive(Clone)]
pub struct ApiOptions {
    /// Engine settings; `timeout` is the most a query may run (a request's `timeout`
    /// parameter can only shorten it).
    pub engine: EngineOptions,
    /// Most points per series a range query may ask for.
    pub max_points_per_series: usize,
    /// The version `status/buildinfo` reports.
    pub version: String,
    /// Where "now" comes from (the default time of instant queries).
    pub clock: Clock,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            max_points_per_series: MAX_POINTS_PER_SERIES,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            clock: Arc::new(system_now_ms),
        }
    }
}

impl fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiOptions")
            .field("engine", &self.engine)
            .field("max_points_per_series", &self.max_points_per_series)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn system_now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) readers: Arc<dyn TenantReaders>,
    pub(crate) opts: Arc<ApiOptions>,
}

/// The Prometheus API routes over `readers`, mounted at `/api/v1` and `/prometheus/api/v1`.
pub fn router(readers: Arc<dyn TenantReaders>, opts: ApiOptions) -> Router {
    let state = ApiState { readers, opts: Arc::new(opts) };
    let v1 = Router::new()
        .route("/query", get(handlers::query).post(handlers::query))
        .route("/query_range", get(handlers::query_range).post(handlers::query_range))
        .route("/series", get(handlers::series).post(handlers::series))
        .route("/labels", get(handlers::labels).post(handlers::labels))
        .route("/label/{name}/values", get(handlers::label_values))
        .route("/metadata", get(handlers::metadata))
        .route("/query_exemplars", get(handlers::query_exemplars).post(handlers::query_exemplars))
        .route("/status/buildinfo", get(handlers::buildinfo))
        .route("/rules", get(handlers::rules))
        .route("/alerts", get(handlers::alerts))
        .with_state(state);
    Router::new().nest("/api/v1", v1.clone()).nest("/prometheus/api/v1", v1)
}

#[cfg(test)]
mod tests;
