//! Ingest: the ingest engine and the time-series store (the bus it reads is the `bus` crate).
//!
//! # Layout
//! - [`engine`]: the ingest engine (MO envelopes → time-series store, sink,
//!   dead letters); [`engine::run`] is its entry point.
//! - [`sink`]: [`sink::MoSink`], what the control-plane implements for the MO
//!   types that are not telemetry, and a recording implementation for tests.
//! - [`metrics`]: metric names (`docs/metrics.md`).
//! - [`tsdb`]: the time-series store trait, its `where` parser and its
//!   backends (embedded, InfluxDB 1.x, QuestDB).

pub mod engine;
pub mod metrics;
pub mod sink;
pub mod tsdb;
