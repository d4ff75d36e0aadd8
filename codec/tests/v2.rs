//! Protocol version 2: every new or changed message of `docs/rtc-protocol.md` §8, byte for
//! byte as the document shows it (the document's hex is copied here; if either changes, this
//! fails).

use smartsolar_codec::ack::{self, MoAck};
use smartsolar_codec::frame;
use smartsolar_codec::handshake::{Hello, Welcome};
use smartsolar_codec::mo::{Event, EventLog};
use smartsolar_codec::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.split_whitespace().collect();
    ::hex::decode(clean).unwrap()
}

const IMEI: &str = "866771029491460";

#[test]
fn the_v2_hello_is_the_documented_bytes() {
    let msg = HandshakeMessage::Hello(Hello {
        version: 2,
        imei: Some(IMEI),
        software_version: None,
        boot: Some(7),
    });
    let mut out = Vec::new();
    encode_handshake(&msg, &mut out);
    let doc = hex("82 18 20 a3 00 02 01 6f 38 36 36 37 37 31 30 32 39 34 39 31 34 36 30 03 07");
    assert_eq!(out, doc);
    assert_eq!(decode_handshake(&doc).unwrap(), msg);
}

#[test]
fn the_v2_welcome_is_the_documented_bytes() {
    let msg = HandshakeMessage::Welcome(Welcome {
        version: 2,
        server_time: 1_765_000_000,
    });
    let mut out = Vec::new();
    encode_handshake(&msg, &mut out);
    assert_eq!(out, hex("82 18 23 a2 00 02 01 1a 69 33 c3 40"));
}

#[test]
fn a_sequenced_mo_frame_is_the_documented_bytes() {
    let events = [Event {
        time: 1_517_927_343,
        text: "Connected",
    }];
    let message = mo_to_vec(&MoMessage::EventLog(EventLog {
        events: Seq::new(&events),
    }));
    let mut payload = Vec::new();
    ack::encode_sequenced(1, &message, &mut payload);
    let mut framed = Vec::new();
    frame::encode_frame(&payload, frame::DEFAULT_MAX_FRAME, &mut framed).unwrap();
    let doc = hex("00 00 00 14  01  82 04 81 82 1a 5a 79 bb af 69 43 6f 6e 6e 65 63 74 65 64");
    assert_eq!(framed, doc);
    let (seq, mo) = ack::split_sequenced(&doc[4..]).unwrap();
    assert_eq!((seq, mo), (1, &message[..]));
    // What follows the prefix is a version-1 MO message, unchanged.
    assert!(matches!(decode_mo(mo).unwrap(), MoMessage::EventLog(_)));

    // A sequence number above 23 takes more bytes: 1000 is 19 03 e8.
    payload.clear();
    ack::encode_sequenced(1000, &message, &mut payload);
    assert_eq!(payload[..3], hex("19 03 e8")[..]);
}

#[test]
fn the_ack_is_the_documented_bytes() {
    let mut out = Vec::new();
    ack::encode_ack(&MoAck { seq: 1 }, &mut out);
    let mut framed = Vec::new();
    frame::encode_frame(&out, frame::DEFAULT_MAX_FRAME, &mut framed).unwrap();
    assert_eq!(framed, hex("00 00 00 06  82 18 25 a1 00 01"));
    out.clear();
    ack::encode_ack(&MoAck { seq: 1000 }, &mut out);
    assert_eq!(out, hex("82 18 25 a1 00 19 03 e8"));
    assert_eq!(ack::decode_ack(&out).unwrap(), Some(MoAck { seq: 1000 }));
    // An ack is never mistaken for an MT, and the MT decoder says so.
    assert!(decode_mt(&out).is_err());
}

#[test]
fn the_mo_correlation_id_is_the_documented_one() {
    assert_eq!(
        ack::mo_correlation_id(IMEI, 7, 1).to_string(),
        "e1aefc6fd0674a1e9b9b759496be98a0"
    );
    assert_eq!(
        ack::mo_correlation_id(IMEI, 7, 2).to_string(),
        "5661c17b212225aa0b67bb3e02dff31b"
    );
}

#[test]
fn a_v1_hello_without_boot_still_decodes_and_negotiates_v1() {
    let doc = hex("82 18 20 a2 00 01 01 6f 38 36 36 37 37 31 30 32 39 34 39 31 34 36 30");
    let HandshakeMessage::Hello(h) = decode_handshake(&doc).unwrap() else {
        panic!("not a hello")
    };
    assert_eq!((h.version, h.boot), (1, None));
    assert_eq!(handshake::negotiate_version(h.version), Some(1));
}

proptest::proptest! {
    /// The two new parsers meet what a socket can deliver: any bytes give a value or an error,
    /// never a panic (the fuzz target `v2_frames` goes further under libFuzzer).
    #[test]
    fn any_bytes_split_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
        if let Ok((seq, rest)) = ack::split_sequenced(&bytes) {
            proptest::prop_assert!(seq >= 1 && !rest.is_empty());
        }
        let _ = ack::decode_ack(&bytes);
    }

    /// Whatever a unit numbers and sends comes apart into the same number and message.
    #[test]
    fn a_numbered_frame_splits_into_what_was_joined(
        seq in 1u64..,
        message in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
    ) {
        let mut payload = Vec::new();
        ack::encode_sequenced(seq, &message, &mut payload);
        let (got, rest) = ack::split_sequenced(&payload).unwrap();
        proptest::prop_assert_eq!((got, rest), (seq, message.as_slice()));
    }
}
