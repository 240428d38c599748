//! API errors: JSON `{"error": message}` with a fitting status. Internal detail is
//! logged, never sent: a storage failure is a 503 with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "storage error in API");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable, try again")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A free-text field from a request body: trimmed, present when `required`, at most
/// `max` bytes, and without control characters other than newline and tab.
pub fn text(name: &str, s: &str, required: bool, max: usize) -> ApiResult<String> {
    let s = s.trim();
    if required && s.is_empty() {
        return Err(ApiError::bad_request(format!("{name} is required")));
    }
    if s.len() > max {
        return Err(ApiError::bad_request(format!("{name} is longer than {max} bytes")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::bad_request(format!("{name} contains control characters")));
    }
    Ok(s.to_string())
}
