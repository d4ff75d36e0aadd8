//! The spec's real traffic, malformed input, and every module's happy path.

use base64::Engine as _;
use smartsolar_codec::ack::{self, MoNumber};
use smartsolar_codec::envelope::{format_timestamp, parse_timestamp, IdentType};
use smartsolar_codec::frame::{self, Parsed, Status};
use smartsolar_codec::handshake::{self, Challenge, Hello, Proof};
use smartsolar_codec::legacy;
use smartsolar_codec::mo::{
    Cell, CellReport, Event, EventLog, MtReply, ReplyResult, StatusReport, TelemetryBatch,
    TelemetryRecord, TelemetryValue,
};
use smartsolar_codec::mt::{PaymentCategory, PaymentCommand, PaymentCommands};
use smartsolar_codec::*;

const SPEC_MESSAGE: &str = "ggSfghpaebuvaUNvbm5lY3RlZP8=";
const SPEC_PAYLOAD: &str = r#"{"ident": "Aeris/10.112.89.62", "message": "ggSfghpaebuvaUNvbm5lY3RlZP8=", "correlation_id": "d478ea0eeadc47e8aead97502235ccac", "timestamp": "2018-02-06T14:29:14.349698", "ident_type": "IP"}"#;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn spec_event_log_decodes() {
    let bytes = b64(SPEC_MESSAGE);
    // 0x9f: the event array is indefinite-length, as the legacy firmware sends it.
    assert_eq!(bytes[2], 0x9f);
    let msg = decode_mo(&bytes).unwrap();
    assert_eq!(msg.message_type(), MoType::EventLog);
    let MoMessage::EventLog(log) = msg else {
        panic!("{msg:?}")
    };
    let events: Vec<_> = log.events.iter().collect();
    assert_eq!(
        events,
        [Event {
            time: 1517927343,
            text: "Connected"
        }]
    );
    assert_eq!(
        render_cbor(&bytes).unwrap(),
        r#"[4, [[1517927343, "Connected"]]]"#
    );
}

#[test]
fn spec_event_log_borrows_from_input() {
    let bytes = b64(SPEC_MESSAGE);
    let MoMessage::EventLog(log) = decode_mo(&bytes).unwrap() else {
        panic!()
    };
    let text = log.events.iter().next().unwrap().text;
    let range = bytes.as_ptr_range();
    assert!(
        range.contains(&text.as_ptr()),
        "text must point into the input"
    );
}

#[test]
fn spec_two_event_log_renders_like_the_decode_endpoint() {
    let events = [
        Event {
            time: 1518543688,
            text: "Charger sn=HQ17048RPII pid=a04c",
        },
        Event {
            time: 1518543691,
            text: "Above RV",
        },
    ];
    let bytes = mo_to_vec(&MoMessage::EventLog(EventLog {
        events: Seq::new(&events),
    }));
    assert_eq!(
        render_cbor(&bytes).unwrap(),
        r#"[4, [[1518543688, "Charger sn=HQ17048RPII pid=a04c"], [1518543691, "Above RV"]]]"#
    );
    let MoMessage::EventLog(log) = decode_mo(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(log.events, Seq::new(&events));
}

#[test]
fn spec_dead_letter_payload_is_an_mo_queue_envelope() {
    let env = decode_mo_queue_envelope(SPEC_PAYLOAD.as_bytes()).unwrap();
    assert_eq!(env.ident, "Aeris/10.112.89.62");
    assert_eq!(env.ident_type, IdentType::Ip);
    assert_eq!(
        env.correlation_id.to_string(),
        "d478ea0eeadc47e8aead97502235ccac"
    );
    let ident = Ident::parse(&env.ident).unwrap();
    assert_eq!(
        (ident.network, ident.ip.to_string().as_str()),
        ("Aeris", "10.112.89.62")
    );
    assert_eq!(ident.to_string(), "Aeris/10.112.89.62");
    let bytes = env.message_bytes().unwrap();
    assert!(matches!(decode_mo(&bytes).unwrap(), MoMessage::EventLog(_)));
    assert_eq!(env.received_at_ms().unwrap(), 1517927354349);
    // Re-encoding keeps the legacy layout byte for byte.
    assert_eq!(encode_mo_queue_envelope(&env), SPEC_PAYLOAD);
}

#[test]
fn dead_letter_from_bus_round_trips() {
    let message = b64(SPEC_MESSAGE);
    let bus = BusEnvelope {
        imei: "866771029491460",
        correlation_id: CorrelationId::parse_hex("d478ea0eeadc47e8aead97502235ccac").unwrap(),
        received_at_ms: 1517927354349,
        transport: Transport::Tcp,
        ident: Some("Aeris/10.112.89.62"),
        message: &message,
        mo_number: None,
    };
    let dl = DeadLetter::from_bus(QueueName::Mo, &bus, DecodeError::UnknownMoType(99));
    assert_eq!(dl.reason, "unknown MO message type 99");
    let json = encode_dead_letter(&dl);
    let back = decode_dead_letter(&json).unwrap();
    assert_eq!(back, dl);
    assert!(std::str::from_utf8(&json)
        .unwrap()
        .contains(r#""queue_name":"RTC-MO""#));
    let env = back.envelope().unwrap();
    assert_eq!(env.message, SPEC_MESSAGE);
    assert_eq!(env.timestamp, "2018-02-06T14:29:14.349000");
}

/// A version-1 MO's envelope of `message`.
fn v1_envelope(message: &[u8]) -> BusEnvelope<'_> {
    BusEnvelope {
        imei: "866771029491460",
        correlation_id: CorrelationId([7; 16]),
        received_at_ms: 1_700_000_000_123,
        transport: Transport::Quic,
        ident: None,
        message,
        mo_number: None,
    }
}

#[test]
fn bus_envelope_round_trips_and_borrows() {
    let message = b64(SPEC_MESSAGE);
    let bus = v1_envelope(&message);
    let bytes = encode_bus_envelope(&bus);
    let back = decode_bus_envelope(&bytes).unwrap();
    assert_eq!(back, bus);
    assert!(bytes.as_ptr_range().contains(&back.message.as_ptr()));
    assert!(decode_bus_envelope(&bytes[..bytes.len() - 3]).is_err());
}

/// A version-2 MO carries its `(boot, seq)`; envelopes without it (version 1, HTTP, written
/// before the field existed) decode with `None`, and a `None` adds no bytes.
#[test]
fn bus_envelope_carries_the_mo_number_and_old_envelopes_still_decode() {
    let message = b64(SPEC_MESSAGE);
    let v1 = v1_envelope(&message);
    let number = MoNumber { boot: 7, seq: 1000 };
    let v2 = BusEnvelope {
        correlation_id: number.correlation_id(v1.imei),
        mo_number: Some(number),
        ..v1
    };
    let bytes = encode_bus_envelope(&v2);
    assert_eq!(decode_bus_envelope(&bytes).unwrap(), v2);
    assert_eq!(
        v2.correlation_id,
        ack::mo_correlation_id("866771029491460", 7, 1000)
    );

    // The map as an older gateway wrote it: the six fields, nothing more.
    #[derive(serde::Serialize)]
    struct Before<'a> {
        imei: &'a str,
        correlation_id: CorrelationId,
        received_at_ms: i64,
        transport: Transport,
        ident: Option<&'a str>,
        #[serde(with = "serde_bytes")]
        message: &'a [u8],
    }
    let mut old = Vec::new();
    rmp_serde::encode::write_named(
        &mut old,
        &Before {
            imei: v1.imei,
            correlation_id: v1.correlation_id,
            received_at_ms: v1.received_at_ms,
            transport: v1.transport,
            ident: v1.ident,
            message: v1.message,
        },
    )
    .unwrap();
    assert_eq!(decode_bus_envelope(&old).unwrap(), v1);
    assert_eq!(encode_bus_envelope(&v1), old, "None adds no field");
}

#[test]
fn timestamps() {
    assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000");
    assert_eq!(
        parse_timestamp("2000-01-01 00:00:00").unwrap(),
        946_684_800_000
    );
    for ms in [
        -86_400_001,
        0,
        951_782_400_000,
        1_517_927_354_349,
        4_102_444_799_999,
    ] {
        assert_eq!(parse_timestamp(&format_timestamp(ms)).unwrap(), ms);
    }
    for bad in [
        "",
        "2018-02-06",
        "2018-13-06T00:00:00",
        "2018-02-06T00:00:00.",
        "2018-02-06X00:00:00",
    ] {
        assert!(parse_timestamp(bad).is_err(), "{bad}");
    }
}

fn typical_status() -> StatusReport<'static> {
    StatusReport::typical(1518543688)
}

#[test]
fn status_report_round_trip_and_rendering() {
    let status = typical_status();
    let bytes = mo_to_vec(&MoMessage::StatusReport(status));
    assert_eq!(decode_mo(&bytes).unwrap(), MoMessage::StatusReport(status));
    assert_eq!(
        render_cbor(&bytes).unwrap(),
        r#"[1, {0: 1518543688, 1: true, 2: true, 3: false, 4: "3.6a", 5: 120.5, 6: 80.0, 7: 432000, 8: 1518975688}]"#
    );
}

#[test]
fn indefinite_maps_unknown_keys_and_appended_elements_are_accepted() {
    // [_ 1, {_ 1: true, 99: [1, 2], 4: "3.6a"}, "future element"] with indefinite array and map.
    let mut bytes = vec![
        0x9f, 0x01, 0xbf, 0x01, 0xf5, 0x18, 99, 0x82, 0x01, 0x02, 0x04, 0x64,
    ];
    bytes.extend_from_slice(b"3.6a");
    bytes.push(0xff);
    bytes.push(0x6e);
    bytes.extend_from_slice(b"future element");
    bytes.push(0xff);
    let MoMessage::StatusReport(s) = decode_mo(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(s.enabled, Some(true));
    assert_eq!(s.software_version, Some("3.6a"));
    assert_eq!(s.time, None);
}

#[test]
fn telemetry_accepts_ids_names_ints_and_half_floats() {
    // [2, [[1518543688, {17: 12.5 (f16), "fan_rpm": 1200}]]]
    let mut bytes = vec![0x82, 0x02, 0x81, 0x82, 0x1a];
    bytes.extend_from_slice(&1518543688u32.to_be_bytes());
    bytes.extend_from_slice(&[0xa2, 0x11, 0xf9, 0x4a, 0x40, 0x67]);
    bytes.extend_from_slice(b"fan_rpm");
    bytes.extend_from_slice(&[0x19, 0x04, 0xb0]);
    let MoMessage::Telemetry(t) = decode_mo(&bytes).unwrap() else {
        panic!()
    };
    let rec = t.records.iter().next().unwrap();
    assert_eq!(rec.time, 1518543688);
    let values: Vec<_> = rec.values.iter().collect();
    assert_eq!(
        values,
        [
            TelemetryValue {
                field: "voltage",
                value: Number::Float(12.5)
            },
            TelemetryValue {
                field: "fan_rpm",
                value: Number::Int(1200)
            },
        ]
    );
    // Known fields go out as ids.
    let values = [TelemetryValue {
        field: "voltage",
        value: Number::Float(12.5),
    }];
    let records = [TelemetryRecord {
        time: 1,
        values: Seq::new(&values),
    }];
    let bytes = mo_to_vec(&MoMessage::Telemetry(TelemetryBatch {
        records: Seq::new(&records),
    }));
    assert_eq!(render_cbor(&bytes).unwrap(), "[2, [[1, {17: 12.5}]]]");
}

#[test]
fn errors_name_the_problem() {
    let err = |bytes: &[u8]| decode_mo(bytes).unwrap_err().to_string();
    assert_eq!(err(&[0x82, 0x18, 99, 0xa0]), "unknown MO message type 99");
    let spec = b64(SPEC_MESSAGE);
    // The text header sits at byte 9; its 9 bytes are cut off.
    assert_eq!(err(&spec[..12]), "truncated CBOR at byte 9");
    assert_eq!(err(&[]), "truncated CBOR at byte 0");
    assert_eq!(
        err(&[0x64, b'a', b'b', b'c', b'd']),
        "expected an array at byte 0, found string"
    );
    assert_eq!(
        err(&[0x81, 0x01]),
        "MO message is missing required field body"
    );
    assert_eq!(
        err(&[0x82, 0x05, 0xa0]),
        "MT reply is missing required field correlation_id"
    );
    assert_eq!(
        err(&[0x82, 0x05, 0xa1, 0x00, 0x42, 1, 2]),
        "invalid correlation_id in MT reply at byte 4: expected 16 bytes, found 2"
    );
    let mut trailing = spec.clone();
    trailing.push(0);
    assert_eq!(
        err(&trailing),
        "trailing bytes after the message at byte 20"
    );
    assert_eq!(
        err(&[0x82, 0x01, 0xa1, 0x01, 0x01]),
        "expected a bool at byte 4, found u8"
    );
    // Chunked strings cannot be borrowed, so they are rejected, not joined.
    assert!(err(&[0x82, 0x04, 0x81, 0x82, 0x01, 0x7f, 0x61, b'a', 0xff]).contains("byte 5"));
}

#[test]
fn every_prefix_of_valid_messages_is_a_clean_error() {
    let cid = CorrelationId([1; 16]);
    let cells = [Cell {
        lac: 1,
        cid: 2,
        signal: -70,
        mcc: Some(639),
        mnc: Some(2),
    }];
    let msgs = [
        mo_to_vec(&MoMessage::StatusReport(typical_status())),
        mo_to_vec(&MoMessage::CellReport(CellReport {
            cells: Seq::new(&cells),
            latitude: Some(-1.25),
            ..CellReport::default()
        })),
        mo_to_vec(&MoMessage::Reply(MtReply {
            correlation_id: cid,
            result: ReplyResult::Ok,
            info: Some("ok"),
            balance: None,
            expected_expiry: None,
        })),
        b64(SPEC_MESSAGE),
    ];
    for msg in &msgs {
        assert!(decode_mo(msg).is_ok());
        for cut in 0..msg.len() {
            let e = decode_mo(&msg[..cut]).unwrap_err();
            assert!(matches!(e, DecodeError::Truncated { .. }), "{cut}: {e}");
            assert!(render_cbor(&msg[..cut]).is_err());
        }
    }
}

#[test]
fn too_many_cells_is_rejected() {
    let cells = [Cell::default(); 8];
    let bytes = mo_to_vec(&MoMessage::CellReport(CellReport {
        cells: Seq::new(&cells),
        ..CellReport::default()
    }));
    let e = decode_mo(&bytes).unwrap_err().to_string();
    assert!(e.contains("more than 7 cell items"), "{e}");
}

#[test]
fn payment_value_must_fit_category() {
    let cmds = [PaymentCommand {
        category: PaymentCategory::ZeroCommand,
        value: 5,
        transaction_id: "tx",
    }];
    let bytes = mt_to_vec(&MtMessage::PaymentCommands(PaymentCommands {
        correlation_id: CorrelationId([2; 16]),
        commands: Seq::new(&cmds),
    }));
    let e = decode_mt(&bytes).unwrap_err().to_string();
    assert!(
        e.contains("5 is not allowed for category zero-command"),
        "{e}"
    );
    assert_eq!(
        decode_mt(&[0x82, 0x04, 0xa0]).unwrap_err().to_string(),
        "unknown MT message type 4"
    );
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = vec![0x81; 100_000];
    assert!(matches!(
        render_cbor(&deep),
        Err(DecodeError::TooDeep { .. })
    ));
    // The message decoders skip unknown values iteratively: no recursion at all.
    let mut msg = vec![0x82, 0x01, 0xa1, 0x18, 99];
    msg.extend(std::iter::repeat_n(0x81, 100_000));
    msg.push(0x00);
    assert!(decode_mo(&msg).is_ok());
}

#[test]
fn render_covers_all_types() {
    // {h'00ff': [-1, null, undefined, 1.5, simple(16), 1(2)]}
    let bytes = [
        0xa1, 0x42, 0x00, 0xff, 0x86, 0x20, 0xf6, 0xf7, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xf0,
        0xc1, 0x02,
    ];
    assert_eq!(
        render_cbor(&bytes).unwrap(),
        "{h'00ff': [-1, null, undefined, 1.5, simple(16), 1(2)]}"
    );
    assert!(render_cbor(&[0xff])
        .unwrap_err()
        .to_string()
        .contains("unexpected break"));
}

#[test]
fn handshake_proof() {
    let key = b"0123456789abcdefghijklmn";
    let nonce = [9u8; 32];
    let imei = "866771029491460";
    let hello = HandshakeMessage::Hello(Hello {
        version: 1,
        imei: Some(imei),
        software_version: None,
        boot: None,
    });
    let mut buf = Vec::new();
    encode_handshake(&hello, &mut buf);
    assert_eq!(decode_handshake(&buf).unwrap(), hello);

    let mut buf = Vec::new();
    encode_handshake(
        &HandshakeMessage::Challenge(Challenge {
            version: 1,
            nonce: &nonce,
        }),
        &mut buf,
    );
    let HandshakeMessage::Challenge(ch) = decode_handshake(&buf).unwrap() else {
        panic!()
    };
    let proof = handshake::compute_proof(key, ch.nonce, imei);
    let mut buf = Vec::new();
    encode_handshake(&HandshakeMessage::Proof(Proof { hmac: proof }), &mut buf);
    let HandshakeMessage::Proof(p) = decode_handshake(&buf).unwrap() else {
        panic!()
    };
    assert!(handshake::verify_proof(key, &nonce, imei, &p.hmac).is_ok());
    assert!(matches!(
        handshake::verify_proof(b"another key", &nonce, imei, &p.hmac),
        Err(DecodeError::BadProof)
    ));
    assert!(handshake::verify_proof(key, &nonce, "866771029491461", &p.hmac).is_err());
    assert!(handshake::verify_proof(key, &[8u8; 32], imei, &p.hmac).is_err());

    // A hello with a non-numeric IMEI is malformed.
    let mut buf = Vec::new();
    encode_handshake(
        &HandshakeMessage::Hello(Hello {
            version: 1,
            imei: Some("86677x"),
            software_version: None,
            boot: None,
        }),
        &mut buf,
    );
    assert!(decode_handshake(&buf)
        .unwrap_err()
        .to_string()
        .contains("imei"));
    assert_eq!(handshake::negotiate_version(7), Some(2));
    assert_eq!(
        handshake::negotiate_version(1),
        Some(1),
        "a v1 unit gets v1"
    );
    assert_eq!(handshake::negotiate_version(0), None);
}

#[test]
fn framing_check_and_parse() {
    let mut buf = Vec::new();
    frame::encode_frame(b"hello", 16, &mut buf).unwrap();
    frame::encode_frame(b"", 16, &mut buf).unwrap();
    assert_eq!(
        frame::check(&buf[..2], 16).unwrap(),
        Status::Incomplete { needed: 2 }
    );
    assert_eq!(
        frame::check(&buf[..6], 16).unwrap(),
        Status::Incomplete { needed: 3 }
    );
    assert_eq!(
        frame::parse(&buf, 16).unwrap(),
        Parsed::Frame {
            payload: b"hello",
            consumed: 9
        }
    );
    assert_eq!(
        frame::parse(&buf[9..], 16).unwrap(),
        Parsed::Frame {
            payload: b"",
            consumed: 4
        }
    );
    let e = frame::check(&[0, 0, 1, 0], 16).unwrap_err();
    assert_eq!(
        e.to_string(),
        "frame of 256 bytes exceeds the maximum of 16"
    );
    assert!(frame::encode_frame(&[0; 17], 16, &mut buf).is_err());
}

#[test]
fn framing_tokio_codec() {
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};
    let mut codec = frame::FrameCodec::new(64);
    let mut wire = BytesMut::new();
    codec.encode(&b"abc"[..], &mut wire).unwrap();
    codec
        .encode(bytes::Bytes::from_static(b""), &mut wire)
        .unwrap();
    let mut src = BytesMut::from(&wire[..5]);
    assert!(codec.decode(&mut src).unwrap().is_none());
    src.extend_from_slice(&wire[5..]);
    assert_eq!(&codec.decode(&mut src).unwrap().unwrap()[..], b"abc");
    assert_eq!(&codec.decode(&mut src).unwrap().unwrap()[..], b"");
    assert!(codec.decode(&mut src).unwrap().is_none());
    let mut big = BytesMut::from(&[0u8, 0, 1, 0][..]);
    assert!(matches!(
        codec.decode(&mut big),
        Err(DecodeError::FrameTooLarge { len: 256, max: 64 })
    ));
}

#[test]
fn legacy_bodies() {
    let rm = br#"{"imei": "013777946874001",
        "fields": {"current": [[1472805042, 1.0], [1472805653, 1.1]],
                   "voltage": [[1472805042, 12.9]], "fan_rpm": [[1472805042, 1200]]}}"#;
    let rm = legacy::decode_rm_data(rm).unwrap();
    assert_eq!(rm.imei, "013777946874001");
    assert_eq!(rm.fields["fan_rpm"], vec![(1472805042, Number::Int(1200))]);
    assert_eq!(rm.fields["current"][1], (1472805653, Number::Float(1.1)));
    assert_eq!(
        legacy::decode_rm_data(&legacy::encode_rm_data(&rm)).unwrap(),
        rm
    );

    let rc = br#"{"imei": "013777946874001", "time": 1518543688,
        "enabled": true, "tamper_enabled": true, "tamper_triggered": false,
        "software_version": "3.6a", "energy_limit": 120.5, "capacity_limit": 80,
        "balance": 432000, "expected_expiry": 1518975688, "something_new": [1],
        "connection": {"mcc": 639, "mnc": 2, "cells": [{"lac": 1, "cid": 2, "signal": -71}],
                       "latitude": -1.2921, "longitude": 36.8219}}"#;
    let rc = legacy::decode_rc_status(rc).unwrap();
    assert_eq!(rc.status_report(), typical_status());
    let conn = rc.connection.as_ref().unwrap();
    assert_eq!(
        Cell::from(conn.cells[0]),
        Cell {
            lac: 1,
            cid: 2,
            signal: -71,
            mcc: None,
            mnc: None
        }
    );
    assert_eq!(
        legacy::decode_rc_status(&legacy::encode_rc_status(&rc)).unwrap(),
        rc
    );

    let settings = br#"{"enabled": true, "tamper_enabled": true, "energy_limit": 120.5,
        "parameters": {"lvd_voltage": "11.8"},
        "payment_commands": [{"category": "payment", "value": 2592000, "transaction_id": "eda4997b"}],
        "software": {"version": "3.6a", "url": "https://example.invalid/3.6a.bin", "size": 123456},
        "server_time": 1518543700}"#;
    let s = legacy::decode_rc_settings(settings).unwrap();
    assert_eq!(s.parameters["lvd_voltage"], "11.8");
    assert_eq!(
        PaymentCategory::from_name(&s.payment_commands[0].category),
        Some(PaymentCategory::Payment)
    );
    assert_eq!(
        legacy::decode_rc_settings(&legacy::encode_rc_settings(&s)).unwrap(),
        s
    );
    assert!(
        legacy::decode_rc_status(b"{\"enabled\": true}").is_err(),
        "imei is required"
    );

    let header = legacy::basic_auth("013777946874001", "0123456789abcdefghijklmn");
    assert_eq!(
        legacy::parse_basic_auth(&header).unwrap(),
        (
            "013777946874001".to_owned(),
            "0123456789abcdefghijklmn".to_owned()
        )
    );
    assert!(legacy::parse_basic_auth("Bearer x").is_err());
    assert!(legacy::parse_basic_auth("Basic !!!").is_err());
}

/// The bytes `docs/rtc-protocol.md` §4.4 shows for a payment-commands MT: a resend is these
/// bytes again, and the unit recognises the command by its transaction id (`"pay-1"`).
#[test]
fn a_payment_commands_mt_is_the_documented_bytes() {
    let cmds = [PaymentCommand {
        category: PaymentCategory::Payment,
        value: 86_400,
        transaction_id: "pay-1",
    }];
    let id: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
    let bytes = mt_to_vec(&MtMessage::PaymentCommands(PaymentCommands {
        correlation_id: CorrelationId(id),
        commands: Seq::new(&cmds),
    }));
    let mut expected = vec![0x82, 0x13, 0xa2, 0x00, 0x50];
    expected.extend_from_slice(&id);
    expected.extend_from_slice(&[0x01, 0x81, 0x83, 0x00, 0x1a, 0x00, 0x01, 0x51, 0x80, 0x65]);
    expected.extend_from_slice(b"pay-1");
    assert_eq!(bytes, expected);
}
