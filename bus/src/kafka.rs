//! The Kafka bus, through rdkafka (librdkafka built from its bundled sources).
//!
//! - `publish` sends through a [`FutureProducer`] and resolves on the broker's
//!   delivery report (`acks=all`, idempotent producer), so an `Ok` means the
//!   message is in the log. While librdkafka's local queue is full the send
//!   waits (`Timeout::Never` on the queue) instead of failing: backpressure.
//! - Messages are keyed by the unit's IMEI; the default partitioner
//!   (murmur2, like the Java client) keeps one unit on one partition.
//! - Consumers join a group with auto-commit off; [`Consumer::commit`] commits
//!   `offset + 1` for the delivery's partition synchronously, so a crash
//!   before it means redelivery (at least once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::{Bus, BusError, Consumer, Delivery};

/// Settings of the Kafka bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaBusConfig {
    /// `bootstrap.servers`, e.g. `"127.0.0.1:9092"`.
    pub brokers: String,
    /// `client.id` prefix.
    pub client_id: String,
    /// Partitions for topics this bus creates (see `create_topics`).
    pub partitions: i32,
    /// Replication factor for topics this bus creates.
    pub replication: i32,
    /// Create the topics given to [`KafkaBus::ensure_topics`] when missing.
    pub create_topics: bool,
    /// How long a message may wait for its delivery report (`message.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka properties (security, tuning), applied last.
    pub extra: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaBusConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "smartsolar".into(),
            partitions: 16,
            replication: 1,
            create_topics: true,
            delivery_timeout_ms: 30_000,
            extra: Default::default(),
        }
    }
}

/// The Kafka bus. Cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    config: Arc<KafkaBusConfig>,
    producer: FutureProducer,
}

fn broker(e: KafkaError) -> BusError {
    BusError::Broker(e.to_string())
}

impl KafkaBus {
    /// Connects a producer (lazily: librdkafka connects in the background).
    pub fn new(config: KafkaBusConfig) -> Result<Self, BusError> {
        if config.brokers.trim().is_empty() {
            return Err(BusError::Config("kafka brokers are empty".into()));
        }
        let mut cc = base_config(&config);
        cc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string())
            .set("linger.ms", "5")
            .set("compression.type", "none");
        apply_extra(&mut cc, &config);
        let producer: FutureProducer = cc.create().map_err(|e| BusError::Config(e.to_string()))?;
        Ok(Self {
            config: Arc::new(config),
            producer,
        })
    }

    /// Creates `topics` with the configured partitions and replication if
    /// `create_topics` is set; existing topics are left alone.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), BusError> {
        if !self.config.create_topics || topics.is_empty() {
            return Ok(());
        }
        let mut cc = base_config(&self.config);
        apply_extra(&mut cc, &self.config);
        let admin: AdminClient<DefaultClientContext> =
            cc.create().map_err(|e| BusError::Config(e.to_string()))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics(&new, &opts).await.map_err(broker)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(BusError::Broker(format!("create topic {topic}: {code}")))
                }
            }
        }
        Ok(())
    }

    /// Waits until every message handed to `publish` has its delivery report.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer.flush(Timeout::After(timeout)).map_err(broker)
    }
}

fn base_config(config: &KafkaBusConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    cc
}

fn apply_extra(cc: &mut ClientConfig, config: &KafkaBusConfig) {
    for (k, v) in &config.extra {
        cc.set(k, v);
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        let started = std::time::Instant::now();
        // `Timeout::Never` only bounds the wait for room in the local queue;
        // the delivery itself is bounded by `message.timeout.ms`.
        match self.producer.send(record, Timeout::Never).await {
            Ok(_) => {
                metrics::counter!(crate::metrics::BUS_PUBLISHED, "bus" => "kafka", "topic" => topic.to_owned())
                    .increment(1);
                metrics::histogram!(crate::metrics::BUS_PUBLISH_DURATION, "bus" => "kafka")
                    .record(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err((e, _msg)) => {
                metrics::counter!(crate::metrics::BUS_PUBLISH_ERRORS, "bus" => "kafka", "topic" => topic.to_owned())
                    .increment(1);
                Err(broker(e))
            }
        }
    }

    async fn subscribe(&self, topics: &[&str], group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let consumer = self.consumer(topics, group).await?;
        consumer.subscribe(topics).map_err(broker)?;
        Ok(Box::new(KafkaConsumer {
            inner: Arc::new(consumer),
            group: group.to_owned(),
        }))
    }

    async fn subscribe_sole(
        &self,
        topics: &[&str],
        group: &str,
    ) -> Result<Box<dyn Consumer>, BusError> {
        let consumer = Arc::new(self.consumer(topics, group).await?);
        let names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let reader = Arc::clone(&consumer);
        // Metadata and the committed positions are blocking broker round trips.
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for topic in &names {
                let meta = reader
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .map_err(broker)?;
                let partitions = meta.topics().first().map_or(0, |t| t.partitions().len());
                if partitions == 0 {
                    return Err(BusError::Config(format!("topic {topic} has no partitions")));
                }
                for p in 0..partitions {
                    // The group's committed position; `auto.offset.reset` where there is none.
                    tpl.add_partition_offset(topic, p as i32, Offset::Stored)
                        .map_err(broker)?;
                }
            }
            reader.assign(&tpl).map_err(broker)
        })
        .await
        .map_err(|e| BusError::Broker(format!("assign task: {e}")))??;
        Ok(Box::new(KafkaConsumer {
            inner: consumer,
            group: group.to_owned(),
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        // librdkafka's metadata call blocks; it asks any broker for the
        // cluster's topics, which is what a producer needs to work.
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
                .map_err(broker)
        })
        .await
        .map_err(|e| BusError::Broker(format!("metadata probe: {e}")))?
    }
}

impl KafkaBus {
    /// A consumer for `group` on `topics` (created first if so configured), not yet reading.
    async fn consumer(&self, topics: &[&str], group: &str) -> Result<StreamConsumer, BusError> {
        if topics.is_empty() {
            return Err(BusError::Config(
                "subscribe needs at least one topic".into(),
            ));
        }
        self.ensure_topics(topics).await?;
        let mut cc = base_config(&self.config);
        cc.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false");
        apply_extra(&mut cc, &self.config);
        cc.create().map_err(|e| BusError::Config(e.to_string()))
    }
}

/// A member of a consumer group on Kafka.
struct KafkaConsumer {
    inner: Arc<StreamConsumer>,
    /// The group name, for metric labels.
    group: String,
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Delivery, BusError> {
        let m = self.inner.recv().await.map_err(broker)?;
        let d = Delivery {
            topic: m.topic().to_owned(),
            key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            partition: u32::try_from(m.partition()).unwrap_or_default(),
            offset: u64::try_from(m.offset()).unwrap_or_default(),
        };
        metrics::counter!(crate::metrics::BUS_DELIVERED, "bus" => "kafka", "topic" => d.topic.clone(), "group" => self.group.clone())
            .increment(1);
        Ok(d)
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        let next = i64::try_from(delivery.offset + 1)
            .map_err(|_| BusError::Config("offset out of range".into()))?;
        tpl.add_partition_offset(
            &delivery.topic,
            delivery.partition as i32,
            Offset::Offset(next),
        )
        .map_err(broker)?;
        let inner = Arc::clone(&self.inner);
        // A synchronous commit blocks on the broker round trip: run it off
        // the async worker threads.
        tokio::task::spawn_blocking(move || inner.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| BusError::Broker(format!("commit task: {e}")))?
            .map_err(broker)?;
        metrics::counter!(crate::metrics::BUS_COMMITTED, "bus" => "kafka", "topic" => delivery.topic.clone(), "group" => self.group.clone())
            .increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for a SASL_SSL cluster can be built: librdkafka was compiled with OpenSSL and
    /// SCRAM. Without them librdkafka refuses these settings when the producer is created
    /// ("Unsupported value ... OpenSSL not available at build time"), which is what happened
    /// before the `ssl-vendored` feature. No broker is needed: the producer connects lazily.
    #[test]
    fn sasl_ssl_settings_are_accepted_by_the_built_librdkafka() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let mut config = KafkaBusConfig {
                brokers: "127.0.0.1:9".into(),
                ..KafkaBusConfig::default()
            };
            for (k, v) in [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "smartsolar"),
                ("sasl.password", "secret"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ] {
                config.extra.insert(k.into(), v.into());
            }
            if let Err(e) = KafkaBus::new(config) {
                panic!("SASL_SSL with {mechanism} refused: {e}");
            }
        }
    }

    /// The check above can fail: a setting librdkafka does not know is refused at creation.
    #[test]
    fn unknown_librdkafka_settings_are_refused_at_creation() {
        let mut config = KafkaBusConfig::default();
        config
            .extra
            .insert("security.protocol".into(), "NOT_A_PROTOCOL".into());
        assert!(KafkaBus::new(config).is_err());
    }
}
