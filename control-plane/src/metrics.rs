//! HTTP request metrics: one counter and one latency histogram, labelled by
//! the matched route template (bounded cardinality), method and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Records `smartsolar_http_requests_total` and
/// `smartsolar_http_request_duration_seconds` for every request.
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("smartsolar_http_requests_total", &labels).increment(1);
    metrics::histogram!("smartsolar_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
