//! Metric names of the bus, the ingest engine and the time-series store, in one place.
//!
//! Scheme (see `docs/metrics.md`): `smartsolar_<component>_<name>_<unit>[_total]`; label values
//! come from closed sets (bus kind, backend, message type, outcome, step) or from the
//! configuration (topic names, consumer groups, shard numbers), never from unit data.

// --- ingest engine (component `ingest`) ----------------------------------------------------

/// Counter: messages handed to a shard worker, label `shard`.
pub const INGEST_QUEUE_PUSHED: &str = "smartsolar_ingest_queue_pushed_total";
/// Counter: messages taken by a shard worker, label `shard`.
pub const INGEST_QUEUE_POPPED: &str = "smartsolar_ingest_queue_popped_total";
/// Gauge: messages received from the bus and not yet done.
pub const INGEST_IN_FLIGHT: &str = "smartsolar_ingest_in_flight_messages";
/// Histogram: messages per batch.
pub const INGEST_BATCH_SIZE: &str = "smartsolar_ingest_batch_size_messages";
/// Histogram: time to process one batch (store write, sink, history, dead letters).
pub const INGEST_BATCH_DURATION: &str = "smartsolar_ingest_batch_duration_seconds";
/// Histogram: ingest lag, from the gateway receiving a message (`received_at_ms`) to the engine
/// finishing it.
pub const INGEST_LAG: &str = "smartsolar_ingest_lag_seconds";
/// Counter: MO messages finished, labels `type` (MO type or `undecodable`) and `outcome`
/// (processed | dead_letter).
pub const INGEST_MESSAGES: &str = "smartsolar_ingest_messages_total";
/// Counter: telemetry field values stored.
pub const INGEST_TELEMETRY_VALUES: &str = "smartsolar_ingest_telemetry_values_total";
/// Counter: retries of transient failures, label `step` (sink | tsdb | history | dead_letter).
pub const INGEST_RETRIES: &str = "smartsolar_ingest_retries_total";
/// Counter: dead letters published, label `queue` (mo).
pub const INGEST_DEAD_LETTERS: &str = "smartsolar_ingest_dead_letters_total";

// --- time-series store (component `tsdb`; label `backend`: embedded | influx | questdb) -----

/// Counter: points written.
pub const TSDB_POINTS_WRITTEN: &str = "smartsolar_tsdb_points_written_total";
/// Counter: field values written (embedded store).
pub const TSDB_VALUES_WRITTEN: &str = "smartsolar_tsdb_values_written_total";
/// Counter: writes that failed.
pub const TSDB_WRITE_ERRORS: &str = "smartsolar_tsdb_write_errors_total";
/// Histogram: time of one write request.
pub const TSDB_WRITE_DURATION: &str = "smartsolar_tsdb_write_duration_seconds";
/// Histogram: time of one query.
pub const TSDB_QUERY_DURATION: &str = "smartsolar_tsdb_query_duration_seconds";
/// Counter: embedded-store files a read used, by `cached` (`true`: already open; `false`:
/// opened and its footer parsed for this read) and `file` (`values`, `1h`: a block's values or
/// hourly rollups; `1d`: a month file of daily rollups).
pub const TSDB_BLOCK_OPENS: &str = "smartsolar_tsdb_block_opens_total";

// --- histogram buckets ---------------------------------------------------------------------

/// Buckets for every `*_seconds` histogram (1 ms … 30 s). The Prometheus exporter renders a
/// histogram without buckets as a summary, which cannot be aggregated across processes; the
/// binary sets these with
/// `PrometheusBuilder::set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)`.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for size histograms (`*_messages`, e.g. the ingest batch size).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
