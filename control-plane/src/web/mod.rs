//! The HTTP helpers every handler module uses: the JSON body extractor, the
//! success envelope of the action endpoints, the query string and paging.
//! Below the handlers and the router (`http`), so the dependencies point one
//! way.

mod paging;

pub(crate) use paging::{list_body, QueryPairs};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use serde_json::Value as Json;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON request body, read with the configured size limit. Malformed JSON
/// is a 400 naming the position; an oversize body is a 413; an empty body
/// is `null` (several GETs and actions take no body).
pub struct JsonBody(pub Json);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state.config.max_body_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a body up to `limit` bytes (413 past it).
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

/// Parses a JSON body; empty means `null`.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Json, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Null);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("Malformed JSON body: {e}")))
}

/// A `{"status": "success", "message", "data"}` answer, as the action
/// endpoints of the spec return.
pub fn success(status: StatusCode, message: impl Into<String>, data: Json) -> Response {
    (
        status,
        axum::Json(
            serde_json::json!({"status": "success", "message": message.into(), "data": data}),
        ),
    )
        .into_response()
}

/// 405 in the error envelope for a method a route does not serve (axum's own
/// 405 has an empty body, which clients of the original API cannot parse).
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A router over a table of `(path, methods)`, every path answering its other
/// methods with [`method_not_allowed`].
pub(crate) fn route_table<const N: usize>(
    routes: [(&'static str, MethodRouter<AppState>); N],
) -> Router<AppState> {
    routes
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods.fallback(method_not_allowed))
        })
}
