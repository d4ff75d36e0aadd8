//! Ingest: the bus, the ingest engine and the time-series store.
//!
//! # Layout
//! - [`bus`]: the message bus trait and its implementations: [`bus::memory`]
//!   (in-process, the embedded default) and Kafka.
//! - [`tsdb`]: the time-series store trait, its `where` parser and its
//!   backends (embedded, InfluxDB 1.x, QuestDB).

pub mod bus;
pub mod tsdb;
