//! The HTTP API: router, shared state, request body handling, serving.

mod auth;
mod dcm;
mod generic;
mod natural_keys;
mod openapi;
mod paging;
mod webhooks;

pub(crate) use paging::{list_body, QueryPairs};

pub(crate) use openapi::ACTION_ROUTES;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value as Json;

use crate::auth::{AuthCache, Clock};
use crate::catalogue::Catalogue;
use crate::config::ControlPlaneConfig;
use crate::db::Db;
use crate::error::ApiError;
use bus::{Bus, MemoryBus, MemoryBusConfig, Topics};
use ingest::tsdb::embedded::Embedded;
use ingest::tsdb::TimeSeries;

/// What every handler shares. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    pub db: Db,
    pub catalogue: Catalogue,
    pub config: ControlPlaneConfig,
    pub clock: Clock,
    pub auth: AuthCache,
    /// Where SMS to units go (see `actions::sms`).
    pub sms: Arc<dyn crate::actions::sms::SmsProvider>,
    /// Unit telemetry (`/products/<imei>/data`, `/upload_tool_log`).
    pub timeseries: Arc<dyn TimeSeries>,
    /// The message bus (dead-letter import and replay).
    pub bus: Arc<dyn Bus>,
    /// Topic names on [`Inner::bus`].
    pub topics: Topics,
    /// The dead-letter consumers, kept between import calls.
    pub dead_letters: crate::data::dead_letters::Importers,
    /// The unit directory's cache (`rtc::UnitDirectoryDb`), shared with the API's writes so
    /// a changed key is forgotten at once (`rtc::credentials_changed`).
    pub directory_cache: crate::rtc::DirectoryCache,
    /// The rendered SQL of a GET by primary key, per table and viewer (issue 20).
    pub get_by_pk: crate::db::RenderCache<(String, crate::query::Viewer)>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State over an open, migrated database.
    ///
    /// The time-series store defaults to a memory-only embedded store and
    /// the bus to a private in-process bus with the default topic names:
    /// enough for tests and for a control-plane alone. A process that keeps
    /// telemetry or shares the bus with ingest and the gateway passes its
    /// own with [`Self::with_timeseries`] and [`Self::with_bus`].
    pub fn new(db: Db, config: ControlPlaneConfig) -> Self {
        let sms = crate::actions::sms::provider_from_config(&config);
        Self::with_sms(db, config, sms)
    }

    /// State with a given SMS provider (tests use a recording one).
    pub fn with_sms(
        db: Db,
        config: ControlPlaneConfig,
        sms: Arc<dyn crate::actions::sms::SmsProvider>,
    ) -> Self {
        let auth = AuthCache::new(config.login_window_secs);
        let get_by_pk = crate::db::RenderCache::new(db.backend());
        Self(Arc::new(Inner {
            get_by_pk,
            db,
            catalogue: Catalogue::builtin(),
            config,
            clock: Clock::default(),
            auth,
            sms,
            timeseries: Arc::new(Embedded::in_memory()),
            bus: Arc::new(MemoryBus::new(MemoryBusConfig::default())),
            topics: Topics::default(),
            dead_letters: Default::default(),
            directory_cache: Default::default(),
        }))
    }

    /// Uses `timeseries` as the time-series store.
    ///
    /// # Panics
    /// When the state has already been cloned (configure it before serving).
    pub fn with_timeseries(mut self, timeseries: Arc<dyn TimeSeries>) -> Self {
        self.inner_mut().timeseries = timeseries;
        self
    }

    /// Uses `bus` with the topic names `topics`.
    ///
    /// # Panics
    /// When the state has already been cloned (configure it before serving).
    pub fn with_bus(mut self, bus: Arc<dyn Bus>, topics: Topics) -> Self {
        let inner = self.inner_mut();
        inner.bus = bus;
        inner.topics = topics;
        inner.dead_letters = Default::default();
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.0).expect("configure AppState before cloning it")
    }
}

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

/// Checks the database, the bus and the time-series store, in that order,
/// and names the first that does not answer. Every service process holds
/// all three (the gateway looks units up in the database and publishes on
/// the bus; ingest writes to all three), so one check serves them all.
pub async fn readiness(state: &AppState) -> Result<(), String> {
    probe("database", state.db.ping()).await?;
    probe("bus", state.bus.ping()).await?;
    probe("time-series store", state.timeseries.ping()).await
}

/// How long one dependency may take to answer a readiness check: a probe
/// (Kubernetes, a load balancer) gives up after a few seconds, and the answer
/// should then name the dependency that hangs rather than time out itself.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn probe<E: std::fmt::Display>(
    what: &str,
    ping: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what} unreachable: {e}")),
        Err(_) => Err(format!(
            "{what} unreachable: no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("The requested URL was not found on the server.".into())
}

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
