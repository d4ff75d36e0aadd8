//! Metric names (one place, `smartsolar_gateway_*`, bounded label values) and small helpers.
//! The scheme and every metric are described in `docs/metrics.md`.

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
/// Histogram: hello to welcome, seconds, label `transport` (admitted units only).
pub const HANDSHAKE_DURATION: &str = "smartsolar_gateway_handshake_duration_seconds";
/// Counter: MO messages received from units, labels `type` (the MO type, or `invalid`) and
/// `transport`.
pub const MO_MESSAGES: &str = "smartsolar_gateway_mo_messages_total";
/// Counter: MO acknowledgements written to version-2 units (protocol §8), label `transport`.
/// One acknowledges every MO up to its number, so it is at most one per MO frame.
pub const MO_ACKS: &str = "smartsolar_gateway_mo_acks_total";
/// Counter: MO messages acknowledged to version-2 units, label `transport` (the sum of what
/// the acknowledgements newly cover; `mo_messages_total` minus this is what v1 units sent).
pub const MO_ACKED: &str = "smartsolar_gateway_mo_acked_messages_total";
/// Counter: MO payload bytes received from units, label `transport`.
pub const MO_BYTES: &str = "smartsolar_gateway_mo_bytes_total";
/// Counter: MT commands taken from the bus for delivery, label `type` (the MT type, or
/// `invalid`).
pub const MT_MESSAGES: &str = "smartsolar_gateway_mt_messages_total";
/// Counter: what happened to MT commands, label `event` (sent, settled, expired, unreachable,
/// forwarded, refused, invalid, handed_back, http, from_record).
pub const MT_EVENTS: &str = "smartsolar_gateway_mt_events_total";
/// Counter: frames written to the capture file (capture mode), label `transport`.
pub const CAPTURED: &str = "smartsolar_gateway_captured_frames_total";
/// Counter: frames the capture writer dropped because it fell behind.
pub const CAPTURE_DROPPED: &str = "smartsolar_gateway_capture_dropped_frames_total";
/// Counter: undecodable input, label `kind` (frame, mo, mt_envelope, mt).
pub const DECODE_ERRORS: &str = "smartsolar_gateway_decode_errors_total";
/// Counter: dead letters published, label `queue`.
pub const DEAD_LETTERS: &str = "smartsolar_gateway_dead_letters_total";
/// Counter: items pushed into an internal queue, label `queue` (shard, presence,
/// session_out); `pushed - popped` is the queue's depth.
pub const QUEUE_PUSHED: &str = "smartsolar_gateway_queue_pushed_total";
/// Counter: items taken out of an internal queue, label `queue`.
pub const QUEUE_POPPED: &str = "smartsolar_gateway_queue_popped_total";
/// Counter: sessions ended, label `reason`.
pub const DISCONNECTS: &str = "smartsolar_gateway_disconnects_total";
/// Counter: live sessions closed because the unit's credentials changed (its `device_key` was
/// rotated or cleared, or the unit deleted), on a control message from the control-plane.
pub const SESSIONS_REVOKED: &str = "smartsolar_gateway_sessions_revoked_total";
/// Counter: control messages read (`RTC-Gateway.Control`), label `kind`
/// (`credentials_changed`, `invalid`).
pub const CONTROL_MESSAGES: &str = "smartsolar_gateway_control_messages_total";
/// Counter: MO messages delayed by the per-connection rate limit.
pub const RATE_LIMITED: &str = "smartsolar_gateway_rate_limited_messages_total";
/// Gauge: connections the QUIC endpoint holds, handshaking and draining ones included.
pub const QUIC_ENDPOINT_CONNECTIONS: &str = "smartsolar_gateway_quic_endpoint_connections";
/// Counter: QUIC datagrams dropped because the UDP send buffer was full (QUIC resends).
pub const QUIC_SEND_DROPPED: &str = "smartsolar_gateway_quic_send_dropped_total";
/// Counter: legacy HTTP requests refused for bad credentials.
pub const HTTP_AUTH_FAILURES: &str = "smartsolar_gateway_http_auth_failures_total";

/// Count a push onto internal queue `queue`.
pub(crate) fn pushed(queue: &'static str) {
    metrics::counter!(QUEUE_PUSHED, "queue" => queue).increment(1);
}

/// Count a pop from internal queue `queue`.
pub(crate) fn popped(queue: &'static str) {
    metrics::counter!(QUEUE_POPPED, "queue" => queue).increment(1);
}
