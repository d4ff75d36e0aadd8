//! The admin listener every process runs on `metrics_addr`: Prometheus
//! `/metrics`, liveness `/health` and readiness `/ready`. The API listener
//! answers `/health` and `/ready` too, but a gateway- or ingest-only process
//! has no API listener, and orchestrators probe each process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use control_plane::app::AppState;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// How often histograms are compacted; the exporter's own listener does the
/// same on this period.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Installs the global Prometheus recorder. Done first thing, so metrics
/// recorded while services start are kept.
pub(crate) fn install_recorder() -> Result<PrometheusHandle> {
    // Histograms with buckets (not summaries), so dashboards and alerts can
    // aggregate them across processes with histogram_quantile.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            ingest::metrics::SECONDS_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("_messages".into()),
            ingest::metrics::SIZE_BUCKETS,
        )?
        .install_recorder()
        .context("installing the Prometheus recorder")
}

/// Binds `addr` and serves the admin routes until `shutdown`.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener to {addr}"))?;
    tracing::info!(%addr, "metrics at /metrics, probes at /health and /ready");
    let upkeep = metrics.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_PERIOD);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
        .merge(control_plane::http::probes().with_state(state));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("metrics listener")
}

async fn render_metrics(State(metrics): State<PrometheusHandle>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}
