//! Protocol version 2: sequenced MO frames and cumulative MO acknowledgements (protocol §8).
//!
//! In version 2 every MO frame payload is `seq` (one CBOR unsigned integer, ≥ 1) followed by
//! the MO message exactly as in version 1. The gateway answers with an acknowledgement
//! `[37, {0: seq}]`, meaning "every MO of this session up to `seq` is durably accepted", only
//! after the bus has accepted them. The prefix is split off before anything else looks at the
//! frame, so the MO message on the bus (and its v1 decoder) is unchanged byte for byte.
//!
//! A unit numbers its MOs per boot id (the hello's key 3): `(imei, boot, seq)` names one MO for
//! ever, and [`mo_correlation_id`] turns it into the MO's correlation id, so a resend carries the
//! id of the first send and ingest's redelivery dedupe (`rtc_mo_applied`, and the unique
//! `rtc_mo_message_history.correlation_id`) drops it.

use minicbor::Decoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cbor::{self, Writer};
use crate::{CorrelationId, DecodeError};

/// Type number of the MO acknowledgement (server → unit). It is outside the MT range (16–20)
/// and next to `refused` (36), the other session message a unit can get after the welcome.
pub const ACK_TYPE: u64 = 37;

/// Domain separation of [`mo_correlation_id`]'s hash input.
const CORRELATION_CONTEXT: &[u8] = b"smartsolar-mo-v2";

/// The name of a version-2 MO: the unit's boot id (the hello's key 3) and the MO's sequence
/// number in that boot. It travels with the MO on the bus (`BusEnvelope::mo_number`) so ingest
/// can record it and still recognise a resend after its dedupe record was pruned (the per-unit
/// high-water mark, `docs/decisions.md`, "Issue 16: the pruned mark").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MoNumber {
    /// The epoch of the unit's sequence numbers.
    pub boot: u32,
    /// 1, 2, 3, … per boot.
    pub seq: u64,
}

impl MoNumber {
    /// The MO's correlation id ([`mo_correlation_id`]).
    pub fn correlation_id(self, imei: &str) -> CorrelationId {
        mo_correlation_id(imei, self.boot, self.seq)
    }
}

/// `[37, {0: seq}]`: every MO of the session numbered up to `seq` is durably accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoAck {
    /// Key 0: the highest sequence number acknowledged.
    pub seq: u64,
}

/// Splits a version-2 MO frame payload into its sequence number and the MO message.
///
/// The prefix must be one CBOR unsigned integer of at least 1 (0 is reserved: a unit that has
/// sent nothing yet has acknowledged "up to 0"), and a message must follow it.
pub fn split_sequenced(payload: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    const M: &str = "sequenced MO frame";
    let d = &mut Decoder::new(payload);
    let seq = cbor::uint(d)?;
    if seq == 0 {
        return Err(DecodeError::InvalidField {
            message: M,
            field: "seq",
            at: 0,
            reason: "sequence numbers start at 1".into(),
        });
    }
    let rest = &payload[d.position()..];
    if rest.is_empty() {
        return Err(DecodeError::MissingField {
            message: M,
            field: "message",
        });
    }
    Ok((seq, rest))
}

/// Appends a version-2 MO frame payload: `seq`, then the MO message bytes.
pub fn encode_sequenced(seq: u64, message: &[u8], out: &mut Vec<u8>) {
    Writer::new(out).uint(seq);
    out.extend_from_slice(message);
}

/// Appends the CBOR of an acknowledgement.
pub fn encode_ack(ack: &MoAck, out: &mut Vec<u8>) {
    Writer::new(out)
        .message(ACK_TYPE)
        .map(1)
        .uint(0)
        .uint(ack.seq);
}

/// Decodes an acknowledgement; `Ok(None)` when the frame holds another message type (an MT or
/// a `refused`), so a unit can try this first and hand anything else to its MT decoder.
pub fn decode_ack(input: &[u8]) -> Result<Option<MoAck>, DecodeError> {
    const M: &str = "MO acknowledgement";
    let d = &mut Decoder::new(input);
    let (top, ty) = cbor::open_message(d, M)?;
    if ty != ACK_TYPE {
        return Ok(None);
    }
    let mut seq = None;
    cbor::int_map(d, |key, d| {
        if key != 0 {
            return Ok(false);
        }
        seq = Some(cbor::uint(d)?);
        Ok(true)
    })?;
    cbor::close_message(d, top)?;
    Ok(Some(MoAck {
        seq: crate::mo::required(seq, M, "seq")?,
    }))
}

/// The correlation id of a version-2 MO: the first 16 bytes of
/// `SHA-256("smartsolar-mo-v2" || imei || 0x00 || boot (u32 big-endian) || seq (u64 big-endian))`.
///
/// Deterministic, so the same MO sent again (after a lost acknowledgement) gets the same id and
/// is recognised downstream as already applied. Version-1 MOs get random ids; 128 bits make a
/// collision between the two kinds as unlikely as between two random ones.
pub fn mo_correlation_id(imei: &str, boot: u32, seq: u64) -> CorrelationId {
    let mut h = Sha256::new();
    h.update(CORRELATION_CONTEXT);
    h.update(imei.as_bytes());
    h.update([0]);
    h.update(boot.to_be_bytes());
    h.update(seq.to_be_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    CorrelationId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequenced_frame_splits_into_seq_and_the_untouched_message() {
        let mut out = Vec::new();
        encode_sequenced(300, &[0x82, 0x04, 0x80], &mut out);
        assert_eq!(out, [0x19, 0x01, 0x2c, 0x82, 0x04, 0x80]);
        assert_eq!(
            split_sequenced(&out).unwrap(),
            (300, &[0x82, 0x04, 0x80][..])
        );
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(split_sequenced(&[]).is_err());
        assert!(split_sequenced(&[0x00, 0x82, 0x04, 0x80]).is_err(), "seq 0");
        assert!(split_sequenced(&[0x05]).is_err(), "no message");
        assert!(
            split_sequenced(&[0x82, 0x04, 0x80]).is_err(),
            "v1 message, no seq"
        );
        assert!(split_sequenced(&[0x19, 0x01]).is_err(), "truncated seq");
    }

    #[test]
    fn ack_round_trips_and_other_types_are_not_acks() {
        let mut out = Vec::new();
        encode_ack(&MoAck { seq: 7 }, &mut out);
        assert_eq!(decode_ack(&out).unwrap(), Some(MoAck { seq: 7 }));
        // A refused (36) is not an ack; neither is an MT sync request (17).
        assert_eq!(decode_ack(&[0x82, 0x18, 0x24, 0xa0]).unwrap(), None);
        assert_eq!(decode_ack(&[0x82, 0x11, 0xa0]).unwrap(), None);
        assert!(
            decode_ack(&[0x82, 0x18, 0x25, 0xa0]).is_err(),
            "seq missing"
        );
    }

    #[test]
    fn correlation_ids_are_deterministic_and_distinct() {
        let a = mo_correlation_id("013777946874001", 1, 1);
        assert_eq!(a, mo_correlation_id("013777946874001", 1, 1));
        assert_ne!(a, mo_correlation_id("013777946874001", 1, 2));
        assert_ne!(a, mo_correlation_id("013777946874001", 2, 1));
        assert_ne!(a, mo_correlation_id("013777946874002", 1, 1));
        // The separator keeps ("1", boot 0x31..) and ("13", ...) apart.
        assert_ne!(mo_correlation_id("1", 0, 1), mo_correlation_id("10", 0, 1));
    }
}
