//! The message bus between the gateway, ingest and the control-plane.
//!
//! Its own crate so that every service depends inward on it (and on nothing of the others):
//! the gateway publishes MO and consumes MT, ingest consumes MO, the control-plane publishes MT.
//! [`partition_for`] is the one partitioning hash the bus, the gateway's MT shards, the ingest
//! shards and the alert engine's buckets agree on.
//!
//! One trait, two implementations: in-process (the embedded default, for
//! `smartsolar serve`) and Kafka through rdkafka (for the scaled topology).
//! The contract every implementation keeps:
//! - **Keyed order**: messages with the same key (a unit's IMEI) are
//!   delivered in publish order to one consumer of a group.
//! - **Groups**: every consumer group sees every message of a topic; within
//!   a group each message goes to one consumer (partitions are shared out).
//! - **At least once**: a message is delivered again unless its consumer
//!   committed it; consumers make processing idempotent (correlation ids).
//! - **Backpressure**: `publish` waits (bounded buffers) instead of dropping,
//!   and resolves only once the bus has accepted the message.

use async_trait::async_trait;
use bytes::Bytes;

pub mod disk;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
pub mod metrics;

pub use disk::{DiskBus, DiskBusConfig};
pub use memory::{partition_for, MemoryBus, MemoryBusConfig};

/// The queue names of the original system (spec: RTC dead letters), configurable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Mobile-originated messages from units (`RTC-MO`).
    pub mo: String,
    /// Mobile-terminated commands to units (`RTC-MT`).
    pub mt: String,
    /// Units' replies to MT commands (`RTC-MT.Reply`).
    pub mt_reply: String,
    /// MO messages that could not be decoded or processed (`RTC-MO.Dead-Letter`).
    pub mo_dead_letter: String,
    /// MT replies that could not be processed (`RTC-MT.Reply.Dead-Letter`).
    pub mt_reply_dead_letter: String,
    /// Instructions to every gateway (`RTC-Gateway.Control`): a unit's credentials changed,
    /// so forget them and close its session. Each gateway reads all of it (its own group).
    pub gateway_control: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            mo: "RTC-MO".into(),
            mt: "RTC-MT".into(),
            mt_reply: "RTC-MT.Reply".into(),
            mo_dead_letter: "RTC-MO.Dead-Letter".into(),
            mt_reply_dead_letter: "RTC-MT.Reply.Dead-Letter".into(),
            gateway_control: "RTC-Gateway.Control".into(),
        }
    }
}

/// A message as delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    /// The partitioning key (a unit's IMEI).
    pub key: Bytes,
    /// The MessagePack bus envelope (see `codec::envelope`).
    pub payload: Bytes,
    pub partition: u32,
    pub offset: u64,
}

/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus is shutting down or the connection is gone for good.
    #[error("bus closed")]
    Closed,
    /// The broker refused or failed an operation.
    #[error("broker error: {0}")]
    Broker(String),
    /// Configuration is unusable (unknown topic, bad broker address).
    #[error("bus configuration: {0}")]
    Config(String),
}

/// Publishing side of the bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` under `key`; resolves once the bus has accepted it
    /// (Kafka: the delivery report), waiting while buffers are full.
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError>;

    /// Publishes `messages` (topic, key, payload) in their order; resolves once the bus has
    /// accepted every one of them, or with the first error (messages before it may have
    /// been accepted). For a caller holding several messages at once: the disk bus hands them
    /// to its writer together, so they share one group commit (one `fdatasync`) instead of
    /// waiting for one each. By default they are published one after the other.
    async fn publish_all(&self, messages: &[(&str, &[u8], &[u8])]) -> Result<(), BusError> {
        for (topic, key, payload) in messages {
            self.publish(topic, key, payload).await?;
        }
        Ok(())
    }

    /// Joins consumer group `group` on `topics`.
    async fn subscribe(&self, topics: &[&str], group: &str) -> Result<Box<dyn Consumer>, BusError>;

    /// Reads every partition of `topics` as the only reader of `group`: for topics that one
    /// process at a time reads (a gateway's own node and control topics). Commits and the
    /// position after a restart are kept under `group` as with [`Bus::subscribe`], but
    /// nothing depends on group membership, so a process restarted after `kill -9` reads
    /// at once instead of waiting until the broker expires its dead predecessor's member
    /// (which tansu did not do within 200 s). Kafka: partitions assigned by the client.
    async fn subscribe_sole(
        &self,
        topics: &[&str],
        group: &str,
    ) -> Result<Box<dyn Consumer>, BusError> {
        self.subscribe(topics, group).await
    }

    /// Whether the bus answers, for readiness probes. The in-process bus
    /// always does.
    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// Consuming side: a member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// The next message for this member; waits while there is none.
    async fn recv(&mut self) -> Result<Delivery, BusError>;

    /// Marks `delivery` (and everything before it on its partition) as
    /// processed, so it is not delivered again to this group.
    async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError>;
}
