//! API errors and their one mapping to Prometheus's error envelope and HTTP status.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pharos_core::TenantError;

use crate::query::{ErrorType, QueryError};

use super::json::push_str;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A required parameter is missing.
    #[error("invalid parameter {param:?}: parameter is required")]
    MissingParam {
        /// Its name.
        param: &'static str,
    },
    /// A parameter does not parse or is out of range.
    #[error("invalid parameter {param:?}: {reason}")]
    BadParam {
        /// Its name.
        param: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The URL query or form body is not valid form encoding.
    #[error("error parsing form values: {reason}")]
    BadForm {
        /// The decoder's message.
        reason: String,
    },
    /// `/api/v1/series` without `match[]`.
    #[error("no match[] parameter provided")]
    NoMatch,
    /// The tenant header does not hold a valid tenant id.
    #[error("invalid X-Scope-OrgID: {0}")]
    Tenant(#[from] TenantError),
    /// A range query would return more points per series than allowed.
    #[error(
        "exceeded maximum resolution of {limit} points per timeseries. Try decreasing the query resolution (?step=XX)"
    )]
    TooManyPoints {
        /// The limit (11,000 as in Prometheus).
        limit: usize,
    },
    /// The query failed (parse errors are reported as [`BadParam`](Self::BadParam)).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The evaluation task panicked or was aborted.
    #[error("query evaluation task failed")]
    TaskFailed,
}

impl ApiError {
    /// The `errorType` of the envelope.
    pub fn error_type(&self) -> ErrorType {
        match self {
            Self::Query(e) => e.error_type(),
            Self::TaskFailed => ErrorType::Internal,
            _ => ErrorType::BadData,
        }
    }

    /// The HTTP status, as Prometheus maps `errorType`.
    pub fn status(&self) -> StatusCode {
        match self.error_type() {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            // Prometheus answers 499 (client closed request) for a cancelled query.
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = String::from(r#"{"status":"error","errorType":"#);
        push_str(&mut body, self.error_type().as_str());
        body.push_str(r#","error":"#);
        push_str(&mut body, &self.to_string());
        body.push('}');
        (self.status(), [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
