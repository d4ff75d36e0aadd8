//! The HTTP API: the router over every handler module, probes, the panic net,
//! serving. Shared state lives in [`crate::app`], request helpers in
//! [`crate::web`]; handler modules import those, never this one.

mod auth;
mod dcm;
mod generic;
mod natural_keys;
mod openapi;
mod webhooks;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use crate::app::{readiness, AppState, Inner};
use crate::error::ApiError;
pub use crate::web::{success, JsonBody};

/// The whole API: `/v1/...` routes and the `/console` app, with JSON 404s
/// for unknown paths.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(auth::router())
        .merge(openapi::router())
        .merge(generic::router(&state.catalogue))
        .merge(crate::actions::router())
        .merge(dcm::router())
        .merge(webhooks::router())
        .merge(crate::repairs::http::router())
        .merge(crate::data::router())
        .merge(crate::rtc::router())
        // A route layer sees the matched route template, which keeps the
        // metric labels bounded.
        .route_layer(axum::middleware::from_fn(crate::metrics::track_http));
    let app = Router::new()
        .nest("/v1", v1)
        .merge(probes())
        .merge(crate::console::router(&state.config))
        .fallback(not_found)
        .with_state(state);
    catch_panics(app)
}

/// Answers a panic in any handler with the spec's error envelope and a 500
/// (instead of a dropped connection), logs it and counts it in
/// `smartsolar_http_panics_total`. Input is validated before it can panic;
/// this is the net under that.
pub fn catch_panics(router: Router) -> Router {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        panic_response,
    ))
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    metrics::counter!("smartsolar_http_panics_total").increment(1);
    ApiError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}

/// `/health` and `/ready`: on the API, and on every process's metrics
/// listener (gateway-only and ingest-only processes serve no API).
pub fn probes() -> Router<AppState> {
    Router::new()
        .route("/health", axum::routing::get(health))
        .route("/ready", axum::routing::get(ready))
}

/// Liveness: the process answers.
async fn health() -> &'static str {
    "ok"
}

/// Readiness: the process's dependencies answer.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match readiness(&state).await {
        Ok(()) => "ready".into_response(),
        Err(why) => {
            tracing::warn!(%why, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("The requested URL was not found on the server.".into())
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address feeds the login throttle (per address and username).
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;
    use serde_json::Value as Json;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_envelope() {
        async fn boom() -> &'static str {
            panic!("capacity overflow")
        }
        // A fallback, not a documented route: the OpenAPI test scans for routes.
        let app = catch_panics(Router::new().fallback(boom));
        let response = app
            .oneshot(
                Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["message"], "Internal Server Error");
        assert!(
            !body.to_string().contains("capacity"),
            "the panic message is logged, not returned"
        );
    }
}
