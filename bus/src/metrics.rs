//! Metric names of the bus (`docs/metrics.md`).
//!
//! Scheme: `smartsolar_<component>_<name>_<unit>[_total]`; label values come from closed sets
//! (bus kind) or the configuration (topic names, consumer groups), never from unit data.

// --- bus (component `bus`; label `bus`: memory | disk | kafka) ------------------------------------

/// Counter: messages published, labels `bus`, `topic`.
pub const BUS_PUBLISHED: &str = "smartsolar_bus_published_total";
/// Counter: publishes that waited for room (memory bus at capacity), labels `bus`, `topic`.
pub const BUS_PUBLISH_WAITS: &str = "smartsolar_bus_publish_waits_total";
/// Counter: publishes that failed, labels `bus`, `topic`.
pub const BUS_PUBLISH_ERRORS: &str = "smartsolar_bus_publish_errors_total";
/// Histogram: time to publish one message (Kafka: until the broker acknowledged), label `bus`.
pub const BUS_PUBLISH_DURATION: &str = "smartsolar_bus_publish_duration_seconds";
/// Counter: messages handed to a consumer, labels `bus`, `topic`, `group`.
pub const BUS_DELIVERED: &str = "smartsolar_bus_delivered_total";
/// Counter: commits (one per committed offset), labels `bus`, `topic`, `group`.
pub const BUS_COMMITTED: &str = "smartsolar_bus_committed_total";
/// Gauge: messages retained on a topic (disk bus: published and not yet trimmed; for a topic
/// no service consumes, such as the dead letters, its backlog), labels `bus`, `topic`.
pub const BUS_BACKLOG: &str = "smartsolar_bus_backlog_messages";
/// Counter: messages dropped before every group committed them because the partition went
/// over its hard cap (disk bus retention), labels `bus`, `topic`.
pub const BUS_DROPPED: &str = "smartsolar_bus_dropped_total";
