//! Ingest: the bus, the ingest engine and the time-series store.
//!
//! # Layout
//! - [`bus`]: the message bus trait and its implementations: [`bus::memory`]
//!   (in-process, the embedded default) and Kafka.

pub mod bus;
