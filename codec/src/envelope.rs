//! Envelopes that carry raw unit messages inside the system (protocol §7):
//!
//! - [`BusEnvelope`]: MessagePack, what the gateway publishes per MO message and what routes an
//!   MT message to the gateway holding the unit. Decoding borrows `imei`, `ident` and `message`
//!   from the input.
//! - [`MoQueueEnvelope`]: the legacy JSON shape `{"ident", "message" (base64), "correlation_id",
//!   "timestamp", "ident_type"}` kept for `rtc_dead_letter.payload` and replay.
//! - [`DeadLetter`]: JSON, a message that could not be processed plus the reason.
//! - [`Ident`]: `Aeris/10.112.89.62`, the network + address identity of private-APN units.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ack::MoNumber;
use crate::{CorrelationId, DecodeError};

/// How the message reached (or will reach) the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC connection.
    Quic,
    /// Framed TCP (optionally TLS).
    Tcp,
    /// Legacy HTTP (`/rm_data`, `/rc_data`).
    Http,
    /// SMS (wakeup / fallback).
    Sms,
}

impl Transport {
    /// Lowercase name, as in the envelope and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Sms => "sms",
        }
    }
}

/// One unit message on the bus. Serialised as a MessagePack map with field names, so consumers
/// tolerate fields added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEnvelope<'a> {
    /// The unit.
    #[serde(borrow)]
    pub imei: &'a str,
    /// MO: assigned by the gateway on receipt. MT: the message's id, echoed in the reply.
    pub correlation_id: CorrelationId,
    /// Unix milliseconds: received by the gateway (MO) or created by the API (MT).
    pub received_at_ms: i64,
    /// How the message travelled.
    pub transport: Transport,
    /// `Aeris/10.112.89.62` for IP-identified units.
    #[serde(borrow, default)]
    pub ident: Option<&'a str>,
    /// The CBOR message, byte for byte.
    #[serde(borrow, with = "serde_bytes")]
    pub message: &'a [u8],
    /// A version-2 MO's `(boot, seq)` (protocol §8); `None` for version-1 and HTTP units, MT
    /// messages and envelopes written before the field existed. Left out of the map when
    /// `None`, so those envelopes keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mo_number: Option<MoNumber>,
}

/// Encode a bus envelope as MessagePack.
pub fn encode_bus_envelope(env: &BusEnvelope<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + env.message.len());
    // Serialising plain fields into a Vec cannot fail: rmp-serde errors only come from the
    // writer (a Vec never fails) or from types MessagePack cannot express (none here).
    if let Err(e) = rmp_serde::encode::write_named(&mut out, env) {
        unreachable!("MessagePack encoding of a BusEnvelope failed: {e}");
    }
    out
}

/// Decode a MessagePack bus envelope, borrowing strings and the message from `input`.
pub fn decode_bus_envelope(input: &[u8]) -> Result<BusEnvelope<'_>, DecodeError> {
    Ok(rmp_serde::from_slice(input)?)
}

/// How an [`MoQueueEnvelope`]'s `ident` identifies the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdentType {
    /// `ident` is `<network>/<ip>` (private APN).
    #[serde(rename = "IP")]
    Ip,
    /// `ident` is the IMEI.
    #[serde(rename = "IMEI")]
    Imei,
}

/// The legacy MO queue envelope (JSON), e.g.
/// `{"ident": "Aeris/10.112.89.62", "message": "ggSfghpaebuvaUNvbm5lY3RlZP8=",
/// "correlation_id": "d478ea0eeadc47e8aead97502235ccac", "timestamp":
/// "2018-02-06T14:29:14.349698", "ident_type": "IP"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoQueueEnvelope<'a> {
    /// IMEI, or `<network>/<ip>`.
    #[serde(borrow)]
    pub ident: Cow<'a, str>,
    /// Base64 of the CBOR message.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
    /// 32 hex digits.
    pub correlation_id: CorrelationId,
    /// `YYYY-MM-DDTHH:MM:SS.ffffff`, UTC.
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    /// What `ident` is.
    pub ident_type: IdentType,
}

impl MoQueueEnvelope<'_> {
    /// The decoded CBOR message.
    pub fn message_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        Ok(base64::engine::general_purpose::STANDARD.decode(self.message.as_bytes())?)
    }

    /// `timestamp` as unix milliseconds.
    pub fn received_at_ms(&self) -> Result<i64, DecodeError> {
        parse_timestamp(&self.timestamp)
    }

    /// Build the MO queue form of a bus envelope (for dead letters and the legacy queue).
    pub fn from_bus(env: &BusEnvelope<'_>) -> MoQueueEnvelope<'static> {
        let (ident, ident_type) = match env.ident {
            Some(ident) => (ident.to_owned(), IdentType::Ip),
            None => (env.imei.to_owned(), IdentType::Imei),
        };
        MoQueueEnvelope {
            ident: Cow::Owned(ident),
            message: Cow::Owned(base64::engine::general_purpose::STANDARD.encode(env.message)),
            correlation_id: env.correlation_id,
            timestamp: Cow::Owned(format_timestamp(env.received_at_ms)),
            ident_type,
        }
    }
}

/// Decode an MO queue envelope (JSON).
pub fn decode_mo_queue_envelope(input: &[u8]) -> Result<MoQueueEnvelope<'_>, DecodeError> {
    Ok(serde_json::from_slice(input)?)
}

/// Encode an MO queue envelope in the legacy layout (`", "` and `": "` separators, as the
/// spec's dead-letter payloads show).
pub fn encode_mo_queue_envelope(env: &MoQueueEnvelope<'_>) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    format!(
        "{{\"ident\": {}, \"message\": {}, \"correlation_id\": \"{}\", \"timestamp\": {}, \"ident_type\": \"{}\"}}",
        s(&env.ident),
        s(&env.message),
        env.correlation_id,
        s(&env.timestamp),
        match env.ident_type {
            IdentType::Ip => "IP",
            IdentType::Imei => "IMEI",
        }
    )
}

/// The queue a dead letter came from (`rtc_dead_letter.queue_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueName {
    /// MO messages.
    #[serde(rename = "RTC-MO")]
    Mo,
    /// Replies to MT messages.
    #[serde(rename = "RTC-MT.Reply")]
    MtReply,
}

impl QueueName {
    /// The spec's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mo => "RTC-MO",
            Self::MtReply => "RTC-MT.Reply",
        }
    }
}

/// A message that could not be processed, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter<'a> {
    /// Where it came from.
    pub queue_name: QueueName,
    /// The decoder's (or processor's) error text.
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    /// The MO queue envelope as a JSON string: what `rtc_dead_letter.payload` stores.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

impl DeadLetter<'static> {
    /// Dead-letter a bus message.
    pub fn from_bus(
        queue_name: QueueName,
        env: &BusEnvelope<'_>,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            queue_name,
            reason: Cow::Owned(reason.to_string()),
            payload: Cow::Owned(encode_mo_queue_envelope(&MoQueueEnvelope::from_bus(env))),
        }
    }
}

impl DeadLetter<'_> {
    /// The payload's MO queue envelope (for replay and decode).
    pub fn envelope(&self) -> Result<MoQueueEnvelope<'_>, DecodeError> {
        decode_mo_queue_envelope(self.payload.as_bytes())
    }
}

/// Encode a dead letter as JSON.
pub fn encode_dead_letter(dl: &DeadLetter<'_>) -> Vec<u8> {
    match serde_json::to_vec(dl) {
        Ok(v) => v,
        // Only non-string map keys or failing `Serialize` impls make serde_json fail.
        Err(e) => unreachable!("JSON encoding of a DeadLetter failed: {e}"),
    }
}

/// Decode a JSON dead letter.
pub fn decode_dead_letter(input: &[u8]) -> Result<DeadLetter<'_>, DecodeError> {
    Ok(serde_json::from_slice(input)?)
}

/// `<network>/<ip>`, the identity of units on private-APN SIM networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ident<'a> {
    /// `product.rtc_network_name`, e.g. `Aeris`.
    pub network: &'a str,
    /// `product.ip_address`.
    pub ip: IpAddr,
}

impl<'a> Ident<'a> {
    /// Parse `Aeris/10.112.89.62`.
    pub fn parse(s: &'a str) -> Result<Self, DecodeError> {
        let bad = || DecodeError::InvalidIdent(s.to_owned());
        let (network, ip) = s.split_once('/').ok_or_else(bad)?;
        if network.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            network,
            ip: ip.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.ip)
    }
}

/// Unix milliseconds → `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC, microseconds as in the spec).
pub fn format_timestamp(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        (ms_of_day % 1000) * 1000
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]` (a space instead of `T` is accepted) → unix milliseconds.
pub fn parse_timestamp(s: &str) -> Result<i64, DecodeError> {
    let bad = || DecodeError::InvalidTimestamp(s.to_owned());
    let b = s.as_bytes();
    if b.len() < 19
        || !s.is_ascii()
        || b[4] != b'-'
        || b[7] != b'-'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    if b[10] != b'T' && b[10] != b' ' {
        return Err(bad());
    }
    let num = |r: core::ops::Range<usize>| -> Result<i64, DecodeError> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut ms = 0;
    if b.len() > 19 {
        if b[19] != b'.' || b.len() == 20 {
            return Err(bad());
        }
        let frac = &s[20..];
        if !frac.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        // Milliseconds from the first three digits, padding short fractions.
        for (i, c) in frac
            .bytes()
            .chain(core::iter::repeat(b'0'))
            .take(3)
            .enumerate()
        {
            ms += i64::from(c - b'0') * [100, 10, 1][i];
        }
    }
    let days = days_from_civil(y, mo, d);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

// Howard Hinnant's civil-calendar algorithms: exact for the proleptic Gregorian calendar, and
// small enough that the codec needs no date crate.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
