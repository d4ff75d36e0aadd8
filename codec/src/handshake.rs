//! The unit handshake on TCP and QUIC connections (protocol §3): hello → challenge → proof →
//! welcome (or refused), and the HMAC-SHA256 proof over the server's nonce.
//!
//! The codec only encodes, decodes and verifies; the gateway draws the nonce (it owns the RNG)
//! and looks up the unit's `device_key`.

/// ALPN protocol id of the unit protocol on QUIC and TLS over TCP (`docs/rtc-protocol.md`).
pub const ALPN: &[u8] = b"smartsolar-rtc/1";

use hmac::{Hmac, Mac};
use minicbor::Decoder;
use sha2::Sha256;

use crate::cbor::{self, count_some, Writer};
use crate::mo::required;
use crate::DecodeError;

/// The highest protocol version this codec speaks. Version 2 adds MO sequence numbers and
/// acknowledgements ([`crate::ack`]); a unit that says 1 in its hello gets version 1 exactly.
pub const PROTOCOL_VERSION: u32 = 2;

/// The first version with sequenced MO frames and MO acknowledgements ([`crate::ack`]).
pub const VERSION_ACK: u32 = 2;

/// Recommended nonce length (bytes).
pub const NONCE_LEN: usize = 32;

/// Accepted nonce lengths: short nonces would make proofs replayable, long ones are waste.
pub const NONCE_LEN_RANGE: core::ops::RangeInclusive<usize> = 16..=64;

/// Domain-separation prefix of the proof input, so the device key's MAC over a nonce cannot be
/// mistaken for any other use of the same key.
pub const PROOF_CONTEXT: &[u8] = b"smartsolar-rtc-v1";

/// Handshake message type numbers (protocol §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HandshakeType {
    /// 32, unit → server.
    Hello = 32,
    /// 33, server → unit.
    Challenge = 33,
    /// 34, unit → server.
    Proof = 34,
    /// 35, server → unit.
    Welcome = 35,
    /// 36, server → unit.
    Refused = 36,
}

/// Any handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMessage<'a> {
    /// Type 32.
    Hello(Hello<'a>),
    /// Type 33.
    Challenge(Challenge<'a>),
    /// Type 34.
    Proof(Proof),
    /// Type 35.
    Welcome(Welcome),
    /// Type 36.
    Refused(Refused<'a>),
}

impl HandshakeMessage<'_> {
    /// The message's type number.
    pub const fn message_type(&self) -> HandshakeType {
        match self {
            Self::Hello(_) => HandshakeType::Hello,
            Self::Challenge(_) => HandshakeType::Challenge,
            Self::Proof(_) => HandshakeType::Proof,
            Self::Welcome(_) => HandshakeType::Welcome,
            Self::Refused(_) => HandshakeType::Refused,
        }
    }
}

/// First message of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Key 0: highest protocol version the unit speaks.
    pub version: u32,
    /// Key 1: 1–15 ASCII digits; may be absent for IP-identified units.
    pub imei: Option<&'a str>,
    /// Key 2: software version name.
    pub software_version: Option<&'a str>,
    /// Key 3 (version 2): the unit's boot id, the epoch of its MO sequence numbers. A unit
    /// draws a new one whenever its sequence restarts (a reboot that lost its unacknowledged
    /// window), so `(imei, boot, seq)` names one MO for ever ([`crate::ack`]).
    pub boot: Option<u32>,
}

/// The server's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// Key 0: version the server will speak.
    pub version: u32,
    /// Key 1: fresh random bytes, length within [`NONCE_LEN_RANGE`].
    pub nonce: &'a [u8],
}

/// The unit's answer to a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// Key 0: see [`compute_proof`].
    pub hmac: [u8; 32],
}

/// The unit is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Key 0: negotiated version.
    pub version: u32,
    /// Key 1: server clock, unix seconds.
    pub server_time: u64,
}

/// The unit is not admitted (or, with [`RefuseReason::CredentialsChanged`], no longer admitted:
/// sent after the welcome, in place of an MT message); the server closes the connection after
/// sending this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused<'a> {
    /// Key 0.
    pub reason: RefuseReason,
    /// Key 1.
    pub info: Option<&'a str>,
}

/// Why a unit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// 0: no such unit (or not RTC-enabled); also the answer for unknown codes.
    UnknownUnit,
    /// 1: the proof did not verify.
    BadProof,
    /// 2: no common protocol version.
    UnsupportedVersion,
    /// 3: too many attempts.
    RateLimited,
    /// 4: the gateway is shedding load.
    ServerBusy,
    /// 5: the unit's credentials (`device_key`) changed while its session was open; the
    /// session is closed and the unit must handshake again with its new key.
    CredentialsChanged,
}

impl RefuseReason {
    /// Label for metrics (`gateway_refused_total{reason=...}`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownUnit => "unknown_unit",
            Self::BadProof => "bad_proof",
            Self::UnsupportedVersion => "unsupported_version",
            Self::RateLimited => "rate_limited",
            Self::ServerBusy => "server_busy",
            Self::CredentialsChanged => "credentials_changed",
        }
    }

    const fn code(self) -> u64 {
        match self {
            Self::UnknownUnit => 0,
            Self::BadProof => 1,
            Self::UnsupportedVersion => 2,
            Self::RateLimited => 3,
            Self::ServerBusy => 4,
            Self::CredentialsChanged => 5,
        }
    }

    const fn from_code(c: u64) -> Self {
        match c {
            1 => Self::BadProof,
            2 => Self::UnsupportedVersion,
            3 => Self::RateLimited,
            4 => Self::ServerBusy,
            5 => Self::CredentialsChanged,
            _ => Self::UnknownUnit,
        }
    }
}

/// The version both sides will speak, or `None` if the unit's is too old for this server.
pub fn negotiate_version(unit_version: u32) -> Option<u32> {
    (unit_version >= 1).then(|| unit_version.min(PROTOCOL_VERSION))
}

/// `true` for 1–15 ASCII digits (`product.product_imei` is varchar(15)).
pub fn is_valid_imei(imei: &str) -> bool {
    (1..=15).contains(&imei.len()) && imei.bytes().all(|b| b.is_ascii_digit())
}

fn mac(device_key: &[u8], nonce: &[u8], imei: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(device_key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(PROOF_CONTEXT);
    mac.update(nonce);
    mac.update(imei.as_bytes());
    mac
}

/// `HMAC-SHA256(device_key, PROOF_CONTEXT || nonce || imei)`: what the unit sends in its proof.
pub fn compute_proof(device_key: &[u8], nonce: &[u8], imei: &str) -> [u8; 32] {
    mac(device_key, nonce, imei).finalize().into_bytes().into()
}

/// Check a proof in constant time.
pub fn verify_proof(
    device_key: &[u8],
    nonce: &[u8],
    imei: &str,
    proof: &[u8; 32],
) -> Result<(), DecodeError> {
    mac(device_key, nonce, imei)
        .verify_slice(proof)
        .map_err(|_| DecodeError::BadProof)
}

/// Decode one handshake message.
pub fn decode_handshake(input: &[u8]) -> Result<HandshakeMessage<'_>, DecodeError> {
    let d = &mut Decoder::new(input);
    let (top, ty) = cbor::open_message(d, "handshake message")?;
    let msg = match ty {
        32 => {
            const M: &str = "hello";
            let (mut version, mut imei, mut software_version, mut boot) = (None, None, None, None);
            cbor::int_map(d, |key, d| {
                match key {
                    0 => version = Some(cbor::uint32(d, M, "version")?),
                    1 => {
                        let at = d.position();
                        let s = cbor::text(d)?;
                        if !is_valid_imei(s) {
                            return Err(DecodeError::InvalidField {
                                message: M,
                                field: "imei",
                                at,
                                reason: format!("{s:?} is not 1-15 digits"),
                            });
                        }
                        imei = Some(s);
                    }
                    2 => software_version = Some(cbor::text(d)?),
                    3 => boot = Some(cbor::uint32(d, M, "boot")?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            HandshakeMessage::Hello(Hello {
                version: required(version, M, "version")?,
                imei,
                software_version,
                boot,
            })
        }
        33 => {
            const M: &str = "challenge";
            let (mut version, mut nonce) = (None, None);
            cbor::int_map(d, |key, d| {
                match key {
                    0 => version = Some(cbor::uint32(d, M, "version")?),
                    1 => {
                        let at = d.position();
                        let n = cbor::bytes(d)?;
                        if !NONCE_LEN_RANGE.contains(&n.len()) {
                            return Err(DecodeError::InvalidField {
                                message: M,
                                field: "nonce",
                                at,
                                reason: format!("{} bytes, expected 16 to 64", n.len()),
                            });
                        }
                        nonce = Some(n);
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            HandshakeMessage::Challenge(Challenge {
                version: required(version, M, "version")?,
                nonce: required(nonce, M, "nonce")?,
            })
        }
        34 => {
            const M: &str = "proof";
            let mut hmac = None;
            cbor::int_map(d, |key, d| {
                if key != 0 {
                    return Ok(false);
                }
                let at = d.position();
                let b = cbor::bytes(d)?;
                hmac = Some(
                    <[u8; 32]>::try_from(b).map_err(|_| DecodeError::InvalidField {
                        message: M,
                        field: "hmac",
                        at,
                        reason: format!("expected 32 bytes, found {}", b.len()),
                    })?,
                );
                Ok(true)
            })?;
            HandshakeMessage::Proof(Proof {
                hmac: required(hmac, M, "hmac")?,
            })
        }
        35 => {
            const M: &str = "welcome";
            let (mut version, mut server_time) = (None, None);
            cbor::int_map(d, |key, d| {
                match key {
                    0 => version = Some(cbor::uint32(d, M, "version")?),
                    1 => server_time = Some(cbor::uint(d)?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            HandshakeMessage::Welcome(Welcome {
                version: required(version, M, "version")?,
                server_time: required(server_time, M, "server_time")?,
            })
        }
        36 => {
            let mut r = Refused {
                reason: RefuseReason::UnknownUnit,
                info: None,
            };
            cbor::int_map(d, |key, d| {
                match key {
                    0 => r.reason = RefuseReason::from_code(cbor::uint(d)?),
                    1 => r.info = Some(cbor::text(d)?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            HandshakeMessage::Refused(r)
        }
        other => return Err(DecodeError::UnknownHandshakeType(other)),
    };
    cbor::close_message(d, top)?;
    Ok(msg)
}

/// Append the CBOR encoding of `msg` to `out`.
pub fn encode_handshake(msg: &HandshakeMessage<'_>, out: &mut Vec<u8>) {
    let w = &mut Writer::new(out);
    w.message(msg.message_type() as u64);
    match msg {
        HandshakeMessage::Hello(h) => {
            w.map(
                1 + count_some(&[
                    h.imei.is_some(),
                    h.software_version.is_some(),
                    h.boot.is_some(),
                ]),
            );
            w.uint(0).uint(h.version.into());
            if let Some(v) = h.imei {
                w.uint(1).text(v);
            }
            if let Some(v) = h.software_version {
                w.uint(2).text(v);
            }
            if let Some(v) = h.boot {
                w.uint(3).uint(v.into());
            }
        }
        HandshakeMessage::Challenge(c) => {
            w.map(2)
                .uint(0)
                .uint(c.version.into())
                .uint(1)
                .bytes(c.nonce);
        }
        HandshakeMessage::Proof(p) => {
            w.map(1).uint(0).bytes(&p.hmac);
        }
        HandshakeMessage::Welcome(wl) => {
            w.map(2)
                .uint(0)
                .uint(wl.version.into())
                .uint(1)
                .uint(wl.server_time);
        }
        HandshakeMessage::Refused(r) => {
            w.map(1 + count_some(&[r.info.is_some()]));
            w.uint(0).uint(r.reason.code());
            if let Some(v) = r.info {
                w.uint(1).text(v);
            }
        }
    }
}
