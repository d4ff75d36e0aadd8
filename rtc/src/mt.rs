//! The MT enqueue API and the outcome records the gateway publishes.
//!
//! **Sending a command** (control-plane: `command_request`, `sync`, `status_update`,
//! `force_connection`, payment commands): [`MtClient::enqueue`] publishes the CBOR MT message in
//! a bus envelope on the shared MT topic (`RTC-MT`), keyed by IMEI. Whichever gateway consumes
//! it routes it to the gateway holding the unit (see `docs/architecture.md`, "Gateway").
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

/// Result code of a gateway-written reply: the command was not answered before its TTL.
pub const RESULT_EXPIRED: u64 = 64;
/// Result code of a gateway-written reply: the unit's MT queue was full.
pub const RESULT_QUEUE_FULL: u64 = 65;

/// A fresh random correlation id.
pub fn new_correlation_id() -> CorrelationId {
    CorrelationId(rand::random())
}

/// Publishes MT commands for the gateways. Cheap to clone.
#[derive(Clone)]
pub struct MtClient {
    bus: Arc<dyn Bus>,
    topics: Topics,
}

impl MtClient {
    /// A client publishing on `topics.mt`.
    pub fn new(bus: Arc<dyn Bus>, topics: Topics) -> Self {
        Self { bus, topics }
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
        self.bus
            .publish(&self.topics.mt, imei.as_bytes(), &env)
            .await
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
    })
}
