//! Metric names (one place, `smartsolar_gateway_*`, bounded label values) and small helpers.

/// Gauge: live connections, label `transport`.
pub const CONNECTIONS: &str = "smartsolar_gateway_connections";
/// Counter: connections accepted, label `transport`.
pub const CONNECTIONS_ACCEPTED: &str = "smartsolar_gateway_connections_accepted_total";
/// Counter: connections refused before the handshake (over `max_connections`), `transport`.
pub const CONNECTIONS_REFUSED: &str = "smartsolar_gateway_connections_refused_total";
/// Counter: handshakes that admitted a unit, `transport`.
pub const HANDSHAKES: &str = "smartsolar_gateway_handshakes_total";
/// Counter: failed handshakes, `transport` and `reason`.
pub const HANDSHAKE_FAILURES: &str = "smartsolar_gateway_handshake_failures_total";
/// Counter: MO messages accepted, label `type`.
pub const MO_MESSAGES: &str = "smartsolar_gateway_mo_messages_total";
/// Counter: MT events, labels `type` (sent, settled, expired, unreachable, forwarded,
/// refused, invalid, http).
pub const MT_MESSAGES: &str = "smartsolar_gateway_mt_messages_total";
/// Counter: undecodable input, label `kind` (frame, mo, mt_envelope, mt).
pub const DECODE_ERRORS: &str = "smartsolar_gateway_decode_errors_total";
/// Counter: dead letters published, label `queue`.
pub const DEAD_LETTERS: &str = "smartsolar_gateway_dead_letters_total";
/// Counter: items pushed into an internal queue, label `queue`.
pub const QUEUE_PUSHED: &str = "smartsolar_gateway_queue_pushed_total";
/// Counter: items taken out of an internal queue, label `queue`.
pub const QUEUE_POPPED: &str = "smartsolar_gateway_queue_popped_total";
/// Counter: sessions ended, label `reason`.
pub const DISCONNECTS: &str = "smartsolar_gateway_disconnects_total";
/// Counter: MO messages delayed by the per-connection rate limit.
pub const RATE_LIMITED: &str = "smartsolar_gateway_rate_limited_total";
/// Counter: HTTP requests refused for bad credentials.
pub const HTTP_AUTH_FAILURES: &str = "smartsolar_gateway_http_auth_failures_total";

/// Count a push onto internal queue `queue`.
pub(crate) fn pushed(queue: &'static str) {
    metrics::counter!(QUEUE_PUSHED, "queue" => queue).increment(1);
}

/// Count a pop from internal queue `queue`.
pub(crate) fn popped(queue: &'static str) {
    metrics::counter!(QUEUE_POPPED, "queue" => queue).increment(1);
}
