//! The MT enqueue API and the outcome records the gateway publishes.
//!
//! **Sending a command** (control-plane: `command_request`, `sync`, `status_update`,
//! `force_connection`, payment commands): [`MtClient::enqueue`] publishes the CBOR MT message in
//! a bus envelope, keyed by IMEI: on the node topic of the gateway holding the unit when the
//! client has a presence registry and the registry knows the holder
//! ([`MtClient::with_registry`]), otherwise on the shared MT topic (`RTC-MT`), whose consumer
//! routes it to the holder (see `docs/architecture.md`, "Gateway").
//!
//! **Outcomes** arrive on the MT-reply topic (`RTC-MT.Reply`) as bus envelopes holding an MO
//! message, keyed by IMEI:
//! - the unit's own MT reply (type 5), command response (6) or final balance (7), byte for
//!   byte: settle `rtc_message_history` with `ReplyResult::delivery_status()`;
//! - an MT reply (type 5) the gateway writes itself, recognisable by `info` starting with
//!   `"gateway:"` and the result codes below (units never send codes ≥ 64): the command
//!   expired ([`RESULT_EXPIRED`]), the unit's queue was full ([`RESULT_QUEUE_FULL`]), the MT
//!   message was malformed (`Invalid`), or it was handed to an HTTP unit (`Ok`).
//!   All but the last are `delivery_status = failed`.

use std::sync::Arc;

use bus::{Bus, BusError, Topics};
use codec::mo::{MtReply, ReplyResult};
use codec::{
    encode_bus_envelope, mt_to_vec, BusEnvelope, CorrelationId, MoMessage, MtMessage, Transport,
};

use crate::PresenceRegistry;

/// Result code of a gateway-written reply: the command was not answered before its TTL.
pub const RESULT_EXPIRED: u64 = 64;
/// Result code of a gateway-written reply: the unit's MT queue was full.
pub const RESULT_QUEUE_FULL: u64 = 65;

/// A fresh random correlation id.
pub fn new_correlation_id() -> CorrelationId {
    CorrelationId(rand::random())
}

/// The topic carrying MT commands to gateway node `node_id`: `<mt>.node.<node_id>`, read by
/// that node alone (a consumer group of its own).
pub fn node_topic(topics: &Topics, node_id: &str) -> String {
    format!("{}.node.{node_id}", topics.mt)
}

/// Publishes MT commands for the gateways. Cheap to clone.
#[derive(Clone)]
pub struct MtClient {
    bus: Arc<dyn Bus>,
    topics: Topics,
    registry: Option<Arc<dyn PresenceRegistry>>,
}

impl MtClient {
    /// A client publishing on `topics.mt`.
    pub fn new(bus: Arc<dyn Bus>, topics: Topics) -> Self {
        Self {
            bus,
            topics,
            registry: None,
        }
    }

    /// Publishes a command for a unit that `registry` says a gateway holds straight on that
    /// gateway's node topic, and only the others on the shared topic.
    ///
    /// Why: the shared topic is read by one consumer group of every gateway, and a gateway
    /// killed with `kill -9` stays a member of it until the broker expires it. Meanwhile the
    /// partitions it held are read by nobody, so a command for a unit that had already moved
    /// to a live gateway waited there (seen on tansu for minutes; issue 16). A node topic is
    /// read by its own gateway alone, which is alive when it holds the unit. The gateway that
    /// takes a command from either topic still checks the registry and forwards it if the
    /// unit has moved meanwhile, so a stale answer here costs a hop, not the command.
    pub fn with_registry(mut self, registry: Arc<dyn PresenceRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Enqueues `message` for unit `imei`; returns its correlation id (the unit's reply and
    /// the outcome carry it). Resolves once the bus has accepted the command.
    pub async fn enqueue(
        &self,
        imei: &str,
        message: &MtMessage<'_>,
    ) -> Result<CorrelationId, BusError> {
        let cbor = mt_to_vec(message);
        self.enqueue_raw(imei, message.correlation_id(), &cbor, crate::unix_ms())
            .await?;
        Ok(message.correlation_id())
    }

    /// Enqueues an already encoded MT message (`created_at_ms`: when the API created it; the
    /// TTL counts from there).
    pub async fn enqueue_raw(
        &self,
        imei: &str,
        correlation_id: CorrelationId,
        cbor: &[u8],
        created_at_ms: i64,
    ) -> Result<(), BusError> {
        let env = mt_envelope(imei, correlation_id, created_at_ms, cbor);
        let holder = match &self.registry {
            Some(registry) => registry.lookup(imei).await,
            None => None,
        };
        let topic = match holder {
            Some(node) => node_topic(&self.topics, &node),
            None => self.topics.mt.clone(),
        };
        self.bus.publish(&topic, imei.as_bytes(), &env).await
    }
}

/// The bus envelope of an MT command. `transport` is not meaningful for MT (the gateway picks
/// the unit's live connection); it is written as `tcp`.
pub fn mt_envelope(
    imei: &str,
    correlation_id: CorrelationId,
    created_at_ms: i64,
    cbor: &[u8],
) -> Vec<u8> {
    encode_bus_envelope(&BusEnvelope {
        imei,
        correlation_id,
        received_at_ms: created_at_ms,
        transport: Transport::Tcp,
        ident: None,
        message: cbor,
        mo_number: None,
    })
}

/// A gateway-written outcome for the MT-reply topic.
pub fn outcome_envelope(
    imei: &str,
    correlation_id: CorrelationId,
    transport: Transport,
    result: ReplyResult,
    info: &str,
) -> Vec<u8> {
    let info = format!("gateway: {info}");
    let reply = codec::mo_to_vec(&MoMessage::Reply(MtReply {
        correlation_id,
        result,
        info: Some(&info),
        balance: None,
        expected_expiry: None,
    }));
    encode_bus_envelope(&BusEnvelope {
        imei,
        correlation_id,
        received_at_ms: crate::unix_ms(),
        transport,
        ident: None,
        message: &reply,
        mo_number: None,
    })
}

#[cfg(test)]
mod tests {
    use bus::{MemoryBus, MemoryBusConfig};
    use codec::mt::StatusUpdate;

    use super::*;
    use crate::MemoryPresence;

    /// A command for a unit a gateway holds goes to that gateway's node topic; one for a unit
    /// nobody holds goes to the shared topic, where any gateway routes it on connect.
    #[tokio::test]
    async fn a_command_goes_straight_to_the_gateway_holding_the_unit() {
        let bus = MemoryBus::new(MemoryBusConfig::default());
        let topics = Topics::default();
        let registry = MemoryPresence::new();
        registry.claim("356000000000001", "gw2").await;
        let client =
            MtClient::new(Arc::new(bus.clone()), topics.clone()).with_registry(Arc::new(registry));
        let held = node_topic(&topics, "gw2");

        let message = MtMessage::StatusUpdate(StatusUpdate::default());
        client.enqueue("356000000000001", &message).await.unwrap();
        assert_eq!((bus.backlog(&held), bus.backlog(&topics.mt)), (1, 0));

        client.enqueue("356000000000002", &message).await.unwrap();
        assert_eq!((bus.backlog(&held), bus.backlog(&topics.mt)), (1, 1));

        // Without a registry every command takes the shared topic, as before.
        let plain = MtClient::new(Arc::new(bus.clone()), topics.clone());
        plain.enqueue("356000000000001", &message).await.unwrap();
        assert_eq!((bus.backlog(&held), bus.backlog(&topics.mt)), (1, 2));
    }
}
