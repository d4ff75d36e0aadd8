//! The API's one error type and its JSON envelope.
//!
//! Bodies follow the spec: `{"status": "error" | "validation-error",
//! "message", "data", "validation_errors"}`. Server faults are logged and
//! answered with a generic 500 that leaks nothing about the database.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as Json};

use crate::db::DbError;
use crate::query::QueryError;
use crate::values::ValueError;

/// Every failure an API handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad `q`, wrong parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 400 `validation-error`: field name to problem.
    #[error(
        "Your request contained invalid data. See 'data' or 'validation_errors' for exact details"
    )]
    Validation(Map<String, Json>),
    /// 401: no token, an unknown one, or an expired one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the user's permission level or scope does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (or not visible to this user).
    #[error("{0}")]
    NotFound(String),
    /// 405: the method is not allowed at this endpoint.
    #[error("The method is not allowed for the requested URL.")]
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the configured limit.
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 429: too many failed logins.
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: a service this request needs (time-series store, bus) is
    /// unreachable for now; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault on our side; the detail is logged, not returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A validation error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut m = Map::new();
        m.insert(field.into(), Json::String(message.into()));
        Self::Validation(m)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match &err {
            DbError::Unique { field }
            | DbError::ForeignKey { field }
            | DbError::NotNull { field }
            | DbError::Check { field }
            | DbError::Text { field } => Self::field(
                field.clone().unwrap_or_else(|| "request".into()),
                err.to_string(),
            ),
            _ => Self::Internal(err.into()),
        }
    }
}

impl From<ValueError> for ApiError {
    fn from(err: ValueError) -> Self {
        Self::field(err.field().to_string(), err.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        if err.is_forbidden() {
            Self::Forbidden(err.to_string())
        } else {
            Self::BadRequest(err.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Validation(errors) => json!({
                "status": "validation-error",
                "message": self.to_string(),
                "data": errors,
                "validation_errors": errors,
            }),
            Self::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                json!({"status": "error", "message": "Internal Server Error", "data": null, "validation_errors": null})
            }
            _ => {
                json!({"status": "error", "message": self.to_string(), "data": null, "validation_errors": null})
            }
        };
        (status, axum::Json(body)).into_response()
    }
}
