//! The RTC protocol codec of SMARTSolar: every byte format between a unit and the platform,
//! as specified in `docs/rtc-protocol.md`.
//!
//! Pure: no I/O, no async runtime, no clock and no randomness. Callers (the gateway, ingest,
//! the control-plane and the unit simulator) pass bytes in and get values out, so everything
//! here is deterministic and unit-testable, and fuzzed in `fuzz/`.
//!
//! # Layout
//!
//! - [`mo`]: MO (unit → server) messages, [`decode_mo`] / [`encode_mo`]. Decoding borrows from
//!   the input and allocates nothing.
//! - [`mt`]: MT (server → unit) messages: status update, sync, command request, payment
//!   commands, software update; [`decode_mt`] / [`encode_mt`].
//! - [`seq`]: [`Seq`], the zero-copy sequence used for the variable-length parts of messages.
//! - [`handshake`]: hello / challenge / proof / welcome / refused, and the HMAC-SHA256 proof.
//! - [`ack`]: protocol version 2: sequenced MO frames, MO acknowledgements, and the
//!   deterministic correlation id of a sequenced MO.
//! - [`frame`]: length-prefixed framing for TCP and QUIC streams: pure [`frame::check`] /
//!   [`frame::parse`], and (feature `tokio-codec`) a `tokio_util::codec` adapter.
//! - [`envelope`]: the MessagePack bus envelope, the JSON MO-queue envelope, the JSON dead
//!   letter, and the `Aeris/10.112.89.62` ident.
//! - [`legacy`]: JSON bodies of the HTTP-only units (`POST /rm_data`, `GET`/`POST /rc_data`).
//! - [`diag`]: [`render_cbor`], human-readable CBOR for the dead-letter decode endpoint.
//! - [`error`]: [`DecodeError`], the one error type; its text is a dead letter's reason.
//!
//! # Example
//!
//! ```
//! use base64::Engine as _;
//! use smartsolar_codec::{decode_mo, render_cbor, MoMessage};
//!
//! let bytes = base64::engine::general_purpose::STANDARD
//!     .decode("ggSfghpaebuvaUNvbm5lY3RlZP8=")
//!     .unwrap();
//! let MoMessage::EventLog(log) = decode_mo(&bytes).unwrap() else { panic!() };
//! let first = log.events.iter().next().unwrap();
//! assert_eq!((first.time, first.text), (1517927343, "Connected"));
//! assert_eq!(render_cbor(&bytes).unwrap(), r#"[4, [[1517927343, "Connected"]]]"#);
//! ```

pub mod ack;
mod cbor;
pub mod diag;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod legacy;
pub mod mo;
pub mod mt;
pub mod seq;

use core::fmt;

pub use diag::render_cbor;
pub use envelope::{
    decode_bus_envelope, decode_dead_letter, decode_mo_queue_envelope, encode_bus_envelope,
    encode_dead_letter, encode_mo_queue_envelope, BusEnvelope, DeadLetter, Ident, MoQueueEnvelope,
    QueueName, Transport,
};
pub use error::DecodeError;
pub use handshake::{decode_handshake, encode_handshake, HandshakeMessage, PROTOCOL_VERSION};
pub use mo::{decode_mo, encode_mo, mo_to_vec, MoMessage, MoType};
pub use mt::{decode_mt, encode_mt, mt_to_vec, MtMessage, MtType};
pub use seq::Seq;

/// A protocol "number": an integer or a float, as the unit sent it (protocol §4.1).
///
/// Kept apart rather than always `f64` so counters like `pulse_count` stay exact.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Number {
    /// A CBOR integer.
    Int(i64),
    /// A half-, single- or double-precision CBOR float.
    Float(f64),
}

impl Number {
    /// The value as `f64` (integers beyond 2^53 lose precision, as in any float column).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }
}

/// Identifies an MT message and the MO reply to it: 16 bytes on the wire, 32 lowercase hex
/// digits in JSON (the MO queue envelope's `correlation_id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CorrelationId(pub [u8; 16]);

impl CorrelationId {
    /// Parse 32 hex digits.
    pub fn parse_hex(s: &str) -> Result<Self, DecodeError> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| DecodeError::InvalidCorrelationId(s.to_owned()))?;
        Ok(Self(id))
    }

    /// From exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, DecodeError> {
        <[u8; 16]>::try_from(b)
            .map(Self)
            .map_err(|_| DecodeError::InvalidCorrelationId(hex::encode(b)))
    }
}

/// 32 lowercase hex digits.
impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        // Cannot fail: the buffer is exactly twice the input length.
        if hex::encode_to_slice(self.0, &mut buf).is_err() {
            return Err(fmt::Error);
        }
        f.write_str(core::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({self})")
    }
}

/// As bytes in binary formats (MessagePack), as hex text in human-readable ones (JSON).
impl serde::Serialize for CorrelationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for CorrelationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CorrelationId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("16 bytes or 32 hex digits")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                CorrelationId::from_slice(v).map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                CorrelationId::parse_hex(v).map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}
