//! The one map from errors to HTTP. 4xx means the input is wrong and will stay
//! wrong (Alertmanager never retries it); 5xx means a retry could succeed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::ingest::{AuthError, PayloadError};
use crate::store::StoreError;

/// An error response in the Prometheus API's shape, plus the offending field.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short machine-readable reason, also the `reason` label of
    /// `stormcast_ingest_rejections_total`.
    pub reason: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    #[serde(rename = "errorType")]
    error_type: &'a str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_data", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            status: "error",
            error_type: self.reason,
            error: &self.message,
            field: self.field.as_deref(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            reason: "bad_payload",
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            AuthError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            AuthError::ApiToken => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "Store error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("cannot store the delivery, retry later: {e}"),
        )
    }
}

impl From<crate::notify::silence::SilenceError> for ApiError {
    fn from(e: crate::notify::silence::SilenceError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_silence", e.to_string())
    }
}
