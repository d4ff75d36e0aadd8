//! Ingest: the bus, the ingest engine and the time-series store.
//!
//! # Layout
//! - [`bus`]: the message bus trait (in-process and Kafka implementations).

pub mod bus;
