//! Instructions to every gateway, on their own topic (`Topics::gateway_control`,
//! `RTC-Gateway.Control`).
//!
//! Unlike MT commands, which reach **one** gateway (the shared MT group) and are routed to the
//! unit from there, a control message must reach **every** gateway: each has its own cache of
//! unit credentials, and any of them may be the one the unit reconnects to. So each gateway
//! reads the whole topic in a group of its own ([`group`]). Messages are small JSON objects,
//! keyed by IMEI; a gateway skips (and logs) a message it does not understand, so new kinds can
//! be added without breaking older gateways.
//!
//! Messages are **hints, never the truth**: a gateway acts on one by asking its directory
//! again, so a duplicate, a late or a replayed message (a new group starts at the oldest
//! retained one) changes nothing that is still valid.

use bus::{Bus, BusError, Topics};
use serde::{Deserialize, Serialize};

/// An instruction to every gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayControl {
    /// The unit's `device_key` changed (rotated, cleared) or the unit was deleted: forget its
    /// cached credentials and close its live session if it was admitted with other credentials
    /// than the directory now holds.
    CredentialsChanged {
        /// `product.product_imei`.
        imei: String,
    },
}

impl GatewayControl {
    /// The unit the message is about (the bus key).
    pub fn imei(&self) -> &str {
        match self {
            Self::CredentialsChanged { imei } => imei,
        }
    }

    /// The message as published.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a control message always serialises")
    }

    /// A published message; `Err` for anything this version does not understand.
    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Publishes the message for every gateway (keyed by IMEI); resolves once the bus has it.
    pub async fn publish(&self, bus: &dyn Bus, topics: &Topics) -> Result<(), BusError> {
        bus.publish(
            &topics.gateway_control,
            self.imei().as_bytes(),
            &self.encode(),
        )
        .await
    }
}

/// The consumer group of gateway `node_id` on the control topic: one per gateway, so every
/// gateway sees every message.
pub fn group(node_id: &str) -> String {
    format!("rtc-gateway-control.{node_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_does_not_know() {
        let m = GatewayControl::CredentialsChanged {
            imei: "013777946874001".into(),
        };
        let bytes = m.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"type":"credentials_changed","imei":"013777946874001"}"#
        );
        assert_eq!(GatewayControl::decode(&bytes).unwrap(), m);
        assert!(GatewayControl::decode(br#"{"type":"reboot_everything"}"#).is_err());
        assert!(GatewayControl::decode(b"\x00").is_err());
    }
}
