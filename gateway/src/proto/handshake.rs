//! The server side of the unit handshake (protocol §3) as a state machine without I/O.
//!
//! ```text
//! AwaitHello --hello--> AwaitLookup --lookup(found)--> AwaitProof --proof ok--> Admitted
//!                            |  (IP identity found: welcome at once)   \--bad proof--> Refused
//!                            \--lookup(none)--> Refused (or an IMEI lookup after a failed IP one)
//! ```
//!
//! The driver feeds frames with [`Handshake::handle_frame`], performs the directory lookups the
//! machine asks for ([`Handshake::poll_lookup`] → [`Handshake::handle_lookup`]), writes what
//! [`Handshake::poll_transmit`] yields, and stops at [`Handshake::outcome`]. The nonce and the
//! wall-clock time are inputs, so the machine owns no RNG and no clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use codec::handshake::{
    negotiate_version, verify_proof, Challenge, HandshakeMessage, RefuseReason, Refused, Welcome,
};
use codec::{decode_handshake, encode_handshake};

use crate::directory::UnitCredentials;

/// What the machine needs looked up in the unit directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// By IMEI (challenge/proof identity).
    Imei(String),
    /// By private-APN network and source address.
    Ip {
        /// `rtc_network_name`, e.g. `Aeris`.
        network: Arc<str>,
        /// The connection's source address.
        ip: IpAddr,
    },
}

/// An admitted unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The unit's credentials as the directory returned them.
    pub unit: UnitCredentials,
    /// `Aeris/10.112.89.62` when identified by IP.
    pub ident: Option<String>,
    /// Negotiated protocol version.
    pub version: u32,
    /// Software version the hello announced.
    pub software_version: Option<String>,
    /// The hello's boot id (key 3): the epoch of the unit's MO sequence numbers. Always present
    /// when `version` is 2 or more (a v2 hello without it is malformed).
    pub boot: Option<u32>,
}

/// How the handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The unit may send MO messages now.
    Admitted(Box<Admitted>),
    /// Refused (a `refused` message is queued for transmission unless the reason is
    /// [`Failure::Malformed`] or [`Failure::TimedOut`]).
    Failed(Failure),
}

/// Why a handshake failed (metric label: [`Failure::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The unit is not in the directory (or not RTC-enabled).
    UnknownUnit,
    /// The HMAC did not verify.
    BadProof,
    /// No common protocol version.
    UnsupportedVersion,
    /// A frame that is not the expected handshake message.
    Malformed,
    /// The handshake did not finish in time.
    TimedOut,
}

impl Failure {
    /// Metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownUnit => "unknown_unit",
            Self::BadProof => "bad_proof",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Malformed => "malformed",
            Self::TimedOut => "timed_out",
        }
    }
}

#[derive(Debug)]
enum State {
    AwaitHello,
    AwaitLookup {
        pending: Lookup,
        asked: bool,
        imei: Option<String>,
    },
    AwaitProof {
        unit: UnitCredentials,
    },
    Done,
}

/// One connection's handshake.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    deadline: Instant,
    nonce: [u8; 32],
    unix_time: u64,
    ip_identity: Option<(Arc<str>, IpAddr)>,
    version: u32,
    software_version: Option<String>,
    boot: Option<u32>,
    transmit: Option<Vec<u8>>,
    outcome: Option<Outcome>,
}

impl Handshake {
    /// A handshake that must finish by `deadline`. `ip_identity` is the private-APN network this
    /// listener faces and the peer's address, when IP identity applies.
    pub fn new(
        deadline: Instant,
        nonce: [u8; 32],
        unix_time: u64,
        ip_identity: Option<(Arc<str>, IpAddr)>,
    ) -> Self {
        Self {
            state: State::AwaitHello,
            deadline,
            nonce,
            unix_time,
            ip_identity,
            version: 0,
            software_version: None,
            boot: None,
            transmit: None,
            outcome: None,
        }
    }

    /// A frame payload from the unit.
    pub fn handle_frame(&mut self, payload: &[u8], now: Instant) {
        if self.check_deadline(now) {
            return;
        }
        let msg = match decode_handshake(payload) {
            Ok(m) => m,
            Err(_) => return self.fail(Failure::Malformed, false),
        };
        match (&self.state, msg) {
            (State::AwaitHello, HandshakeMessage::Hello(hello)) => {
                let Some(version) = negotiate_version(hello.version) else {
                    return self.fail(Failure::UnsupportedVersion, true);
                };
                // Version 2 names each MO by (imei, boot, seq): without the boot id a resend
                // after a reboot could not be told from a new message.
                if version >= codec::handshake::VERSION_ACK && hello.boot.is_none() {
                    return self.fail(Failure::Malformed, false);
                }
                self.version = version;
                self.boot = hello.boot;
                self.software_version = hello.software_version.map(str::to_owned);
                let imei = hello.imei.map(str::to_owned);
                let pending = match (&self.ip_identity, &imei) {
                    (Some((network, ip)), _) => Lookup::Ip {
                        network: Arc::clone(network),
                        ip: *ip,
                    },
                    (None, Some(imei)) => Lookup::Imei(imei.clone()),
                    (None, None) => return self.fail(Failure::UnknownUnit, true),
                };
                self.state = State::AwaitLookup {
                    pending,
                    asked: false,
                    imei,
                };
            }
            (State::AwaitProof { unit }, HandshakeMessage::Proof(proof)) => {
                if verify_proof(
                    unit.device_key.as_bytes(),
                    &self.nonce,
                    &unit.imei,
                    &proof.hmac,
                )
                .is_ok()
                {
                    let unit = unit.clone();
                    self.admit(unit, None);
                } else {
                    self.fail(Failure::BadProof, true);
                }
            }
            _ => self.fail(Failure::Malformed, false),
        }
    }

    /// The directory lookup to perform, once.
    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        match &mut self.state {
            State::AwaitLookup { pending, asked, .. } if !*asked => {
                *asked = true;
                Some(pending.clone())
            }
            _ => None,
        }
    }

    /// The result of the lookup last returned by [`Self::poll_lookup`].
    pub fn handle_lookup(&mut self, found: Option<UnitCredentials>, now: Instant) {
        if self.check_deadline(now) {
            return;
        }
        let State::AwaitLookup { pending, imei, .. } = &self.state else {
            return;
        };
        match (pending, found) {
            (Lookup::Ip { network, ip }, Some(unit)) => {
                let ident = format!("{network}/{ip}");
                self.admit(unit, Some(ident));
            }
            // Not registered by address: a unit that sent its IMEI may still prove it.
            (Lookup::Ip { .. }, None) => match imei.clone() {
                Some(imei) => {
                    self.state = State::AwaitLookup {
                        pending: Lookup::Imei(imei.clone()),
                        asked: false,
                        imei: Some(imei),
                    }
                }
                None => self.fail(Failure::UnknownUnit, true),
            },
            (Lookup::Imei(_), Some(unit)) => {
                let mut out = Vec::with_capacity(48);
                encode_handshake(
                    &HandshakeMessage::Challenge(Challenge {
                        version: self.version,
                        nonce: &self.nonce,
                    }),
                    &mut out,
                );
                self.transmit = Some(out);
                self.state = State::AwaitProof { unit };
            }
            (Lookup::Imei(_), None) => self.fail(Failure::UnknownUnit, true),
        }
    }

    /// Time passed; fails the handshake once the deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_deadline(now);
    }

    /// When [`Self::handle_timeout`] must be called at the latest.
    pub const fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// A handshake message to send to the unit.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.take()
    }

    /// How it ended, once it has (send any pending transmit first).
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    fn check_deadline(&mut self, now: Instant) -> bool {
        if self.outcome.is_some() {
            return true;
        }
        if now >= self.deadline {
            self.fail(Failure::TimedOut, false);
            return true;
        }
        false
    }

    fn admit(&mut self, unit: UnitCredentials, ident: Option<String>) {
        let mut out = Vec::with_capacity(16);
        encode_handshake(
            &HandshakeMessage::Welcome(Welcome {
                version: self.version,
                server_time: self.unix_time,
            }),
            &mut out,
        );
        self.transmit = Some(out);
        self.state = State::Done;
        self.outcome = Some(Outcome::Admitted(Box::new(Admitted {
            unit,
            ident,
            version: self.version,
            software_version: self.software_version.take(),
            boot: self.boot,
        })));
    }

    fn fail(&mut self, failure: Failure, tell_unit: bool) {
        if tell_unit {
            let reason = match failure {
                Failure::BadProof => RefuseReason::BadProof,
                Failure::UnsupportedVersion => RefuseReason::UnsupportedVersion,
                _ => RefuseReason::UnknownUnit,
            };
            let mut out = Vec::with_capacity(8);
            encode_handshake(
                &HandshakeMessage::Refused(Refused { reason, info: None }),
                &mut out,
            );
            self.transmit = Some(out);
        }
        self.state = State::Done;
        self.outcome = Some(Outcome::Failed(failure));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use codec::handshake::{compute_proof, Hello, Proof};

    use super::*;

    const IMEI: &str = "013777946874001";
    const KEY: &str = "abcdefghijklmnopqrstuvwx";

    fn unit() -> UnitCredentials {
        UnitCredentials::new(IMEI, KEY)
    }

    fn enc(m: HandshakeMessage<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        encode_handshake(&m, &mut v);
        v
    }

    fn hello(imei: Option<&str>, version: u32) -> Vec<u8> {
        enc(HandshakeMessage::Hello(Hello {
            version,
            imei,
            software_version: Some("3.6a"),
            boot: (version >= 2).then_some(9),
        }))
    }

    fn setup(ip: Option<(Arc<str>, IpAddr)>) -> (Handshake, Instant) {
        let t0 = Instant::now();
        (
            Handshake::new(t0 + Duration::from_secs(10), [7; 32], 1_700_000_000, ip),
            t0,
        )
    }

    #[test]
    fn hello_challenge_proof_welcome() {
        let (mut h, t0) = setup(None);
        h.handle_frame(&hello(Some(IMEI), 1), t0);
        assert_eq!(h.poll_lookup(), Some(Lookup::Imei(IMEI.into())));
        assert_eq!(h.poll_lookup(), None, "asked once");
        h.handle_lookup(Some(unit()), t0);
        let challenge = h.poll_transmit().unwrap();
        let HandshakeMessage::Challenge(c) = decode_handshake(&challenge).unwrap() else {
            panic!()
        };
        assert_eq!(c.nonce, &[7; 32]);
        let hmac = compute_proof(KEY.as_bytes(), c.nonce, IMEI);
        h.handle_frame(&enc(HandshakeMessage::Proof(Proof { hmac })), t0);
        let welcome = h.poll_transmit().unwrap();
        assert!(matches!(
            decode_handshake(&welcome).unwrap(),
            HandshakeMessage::Welcome(Welcome {
                version: 1,
                server_time: 1_700_000_000
            })
        ));
        let Some(Outcome::Admitted(a)) = h.outcome() else {
            panic!()
        };
        assert_eq!(a.unit.imei, IMEI);
        assert_eq!(a.ident, None);
        assert_eq!(a.software_version.as_deref(), Some("3.6a"));
    }

    #[test]
    fn bad_proof_is_refused() {
        let (mut h, t0) = setup(None);
        h.handle_frame(&hello(Some(IMEI), 1), t0);
        h.poll_lookup();
        h.handle_lookup(Some(unit()), t0);
        h.poll_transmit();
        let hmac = compute_proof(b"wrong key", &[7; 32], IMEI);
        h.handle_frame(&enc(HandshakeMessage::Proof(Proof { hmac })), t0);
        let refused = h.poll_transmit().unwrap();
        assert!(matches!(
            decode_handshake(&refused).unwrap(),
            HandshakeMessage::Refused(Refused {
                reason: RefuseReason::BadProof,
                ..
            })
        ));
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::BadProof)));
    }

    #[test]
    fn unknown_unit_is_refused() {
        let (mut h, t0) = setup(None);
        h.handle_frame(&hello(Some(IMEI), 1), t0);
        h.poll_lookup();
        h.handle_lookup(None, t0);
        assert!(h.poll_transmit().is_some());
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::UnknownUnit)));
    }

    #[test]
    fn version_zero_is_unsupported() {
        let (mut h, t0) = setup(None);
        h.handle_frame(&hello(Some(IMEI), 0), t0);
        assert_eq!(
            h.outcome(),
            Some(&Outcome::Failed(Failure::UnsupportedVersion))
        );
    }

    #[test]
    fn proof_before_hello_is_malformed() {
        let (mut h, t0) = setup(None);
        h.handle_frame(&enc(HandshakeMessage::Proof(Proof { hmac: [0; 32] })), t0);
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::Malformed)));
        assert!(h.poll_transmit().is_none());
        let (mut h, t0) = setup(None);
        h.handle_frame(b"\xff\x00garbage", t0);
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::Malformed)));
    }

    #[test]
    fn times_out() {
        let (mut h, t0) = setup(None);
        h.handle_frame(&hello(Some(IMEI), 1), t0);
        h.handle_timeout(t0 + Duration::from_secs(9));
        assert!(h.outcome().is_none());
        h.handle_timeout(h.poll_timeout());
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::TimedOut)));
    }

    #[test]
    fn ip_identity_welcomes_without_challenge() {
        let ip: IpAddr = "10.112.89.62".parse().unwrap();
        let (mut h, t0) = setup(Some(("Aeris".into(), ip)));
        h.handle_frame(&hello(None, 3), t0);
        assert_eq!(
            h.poll_lookup(),
            Some(Lookup::Ip {
                network: "Aeris".into(),
                ip
            })
        );
        h.handle_lookup(Some(unit()), t0);
        let HandshakeMessage::Welcome(w) = decode_handshake(&h.poll_transmit().unwrap()).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.version, 2, "min(unit, server)");
        let Some(Outcome::Admitted(a)) = h.outcome() else {
            panic!()
        };
        assert_eq!(a.ident.as_deref(), Some("Aeris/10.112.89.62"));
        assert_eq!((a.version, a.boot), (2, Some(9)));
    }

    #[test]
    fn a_v2_hello_without_boot_id_is_malformed() {
        let (mut h, t0) = setup(None);
        h.handle_frame(
            &enc(HandshakeMessage::Hello(Hello {
                version: 2,
                imei: Some(IMEI),
                software_version: None,
                boot: None,
            })),
            t0,
        );
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::Malformed)));
    }

    #[test]
    fn unknown_ip_falls_back_to_imei_proof() {
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let (mut h, t0) = setup(Some(("Aeris".into(), ip)));
        h.handle_frame(&hello(Some(IMEI), 1), t0);
        assert!(matches!(h.poll_lookup(), Some(Lookup::Ip { .. })));
        h.handle_lookup(None, t0);
        assert_eq!(h.poll_lookup(), Some(Lookup::Imei(IMEI.into())));
        h.handle_lookup(Some(unit()), t0);
        assert!(matches!(
            decode_handshake(&h.poll_transmit().unwrap()).unwrap(),
            HandshakeMessage::Challenge(_)
        ));
        // Without an IMEI there is nothing to fall back to.
        let (mut h, t0) = setup(Some(("Aeris".into(), ip)));
        h.handle_frame(&hello(None, 1), t0);
        h.poll_lookup();
        h.handle_lookup(None, t0);
        assert_eq!(h.outcome(), Some(&Outcome::Failed(Failure::UnknownUnit)));
    }
}
