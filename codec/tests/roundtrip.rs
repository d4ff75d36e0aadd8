//! Property tests: encode → decode is the identity for every message type, and no input, however
//! mangled, makes any decoder panic.

use proptest::prelude::*;
use smartsolar_codec::handshake::{Challenge, Hello, Proof, RefuseReason, Refused, Welcome};
use smartsolar_codec::legacy;
use smartsolar_codec::mo::*;
use smartsolar_codec::mt::*;
use smartsolar_codec::*;

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e12..1e12f64,
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(f64::from)
    ]
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::Int),
        float().prop_map(Number::Float)
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TELEMETRY_FIELDS.to_vec()).prop_map(str::to_owned),
        "[a-z_]{1,16}",
    ]
}

fn cid() -> impl Strategy<Value = CorrelationId> {
    any::<[u8; 16]>().prop_map(CorrelationId)
}

fn cell() -> impl Strategy<Value = Cell> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<i32>(),
        any::<Option<(u32, u32)>>(),
    )
        .prop_map(|(lac, cid, signal, net)| Cell {
            lac,
            cid,
            signal,
            mcc: net.map(|n| n.0),
            mnc: net.map(|n| n.1),
        })
}

fn mo_round_trip(msg: &MoMessage<'_>) {
    let bytes = mo_to_vec(msg);
    let back = decode_mo(&bytes).unwrap_or_else(|e| panic!("{e}: {msg:?}"));
    assert_eq!(&back, msg);
    // Rendering any valid message works too.
    render_cbor(&bytes).unwrap();
}

fn mt_round_trip(msg: &MtMessage<'_>) {
    let bytes = mt_to_vec(msg);
    let back = decode_mt(&bytes).unwrap_or_else(|e| panic!("{e}: {msg:?}"));
    assert_eq!(&back, msg);
    assert_eq!(back.correlation_id(), msg.correlation_id());
}

fn hs_round_trip(msg: &HandshakeMessage<'_>) {
    let mut bytes = Vec::new();
    encode_handshake(msg, &mut bytes);
    assert_eq!(&decode_handshake(&bytes).unwrap(), msg);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn status_report(
        time in any::<Option<u64>>(), enabled in any::<Option<bool>>(),
        tamper_enabled in any::<Option<bool>>(), tamper_triggered in any::<Option<bool>>(),
        sw in proptest::option::of(".{0,20}"), energy in proptest::option::of(float()),
        capacity in proptest::option::of(float()), balance in any::<Option<i64>>(),
        expiry in any::<Option<u64>>(),
    ) {
        mo_round_trip(&MoMessage::StatusReport(StatusReport {
            time, enabled, tamper_enabled, tamper_triggered, software_version: sw.as_deref(),
            energy_limit: energy, capacity_limit: capacity, balance, expected_expiry: expiry,
        }));
    }

    #[test]
    fn telemetry(records in prop::collection::vec(
        (any::<u64>(), prop::collection::vec((field_name(), number()), 0..8)), 0..6)
    ) {
        let values: Vec<Vec<TelemetryValue<'_>>> = records.iter().map(|(_, vs)| {
            vs.iter().map(|(f, v)| TelemetryValue { field: f, value: *v }).collect()
        }).collect();
        let recs: Vec<TelemetryRecord<'_>> = records.iter().zip(&values)
            .map(|((t, _), vs)| TelemetryRecord { time: *t, values: Seq::new(vs) }).collect();
        mo_round_trip(&MoMessage::Telemetry(TelemetryBatch { records: Seq::new(&recs) }));
    }

    #[test]
    fn cell_report(
        cells in prop::collection::vec(cell(), 0..=MAX_CELLS),
        time in any::<Option<u64>>(), mcc in any::<Option<u32>>(), mnc in any::<Option<u32>>(),
        frequency in any::<Option<u32>>(), ta in any::<Option<u32>>(),
        lat in proptest::option::of(float()), lon in proptest::option::of(float()),
        radius in any::<Option<u32>>(), failed in any::<Option<bool>>(), cc in any::<Option<u32>>(),
    ) {
        mo_round_trip(&MoMessage::CellReport(CellReport {
            time, mcc, mnc, cells: Seq::new(&cells), frequency, timing_advance: ta,
            latitude: lat, longitude: lon, error_radius: radius, location_failed: failed,
            country_code: cc,
        }));
    }

    #[test]
    fn event_log(events in prop::collection::vec((any::<u64>(), ".{0,40}"), 0..10)) {
        let events: Vec<Event<'_>> = events.iter().map(|(t, s)| Event { time: *t, text: s }).collect();
        mo_round_trip(&MoMessage::EventLog(EventLog { events: Seq::new(&events) }));
    }

    #[test]
    fn reply(
        correlation_id in cid(), code in any::<u64>(), info in proptest::option::of(".{0,20}"),
        balance in any::<Option<i64>>(), expected_expiry in any::<Option<u64>>(),
    ) {
        mo_round_trip(&MoMessage::Reply(MtReply {
            correlation_id, result: ReplyResult::from_code(code % 8), info: info.as_deref(),
            balance, expected_expiry,
        }));
    }

    #[test]
    fn command_response(correlation_id in cid(), output in ".{0,80}", status in any::<Option<i64>>()) {
        mo_round_trip(&MoMessage::CommandResponse(CommandResponse { correlation_id, output: &output, status }));
    }

    #[test]
    fn final_balance(correlation_id in cid(), tx in "[a-f0-9-]{1,36}", fb in any::<i64>(), total in any::<i64>()) {
        mo_round_trip(&MoMessage::FinalBalance(FinalBalance {
            correlation_id, transaction_id: &tx, final_balance: fb, total_added: total,
        }));
    }

    #[test]
    fn offline_notice(reason in 0u8..3, info in proptest::option::of(".{0,20}")) {
        let reason = [OfflineReason::Unknown, OfflineReason::LowBatteryVoltage, OfflineReason::SleepMode][reason as usize];
        mo_round_trip(&MoMessage::OfflineNotice(OfflineNotice { reason, info: info.as_deref() }));
    }

    #[test]
    fn status_update(
        correlation_id in cid(), enabled in any::<Option<bool>>(), tamper in any::<Option<bool>>(),
        energy in proptest::option::of(float()), capacity in proptest::option::of(float()),
        params in proptest::option::of(prop::collection::vec(("[a-z_]{1,12}", ".{0,12}"), 0..5)),
        server_time in any::<Option<u64>>(),
    ) {
        let params: Option<Vec<Parameter<'_>>> = params.as_ref().map(|ps| {
            ps.iter().map(|(n, v)| Parameter { name: n, value: v }).collect()
        });
        mt_round_trip(&MtMessage::StatusUpdate(StatusUpdate {
            correlation_id, enabled, tamper_enabled: tamper, energy_limit: energy,
            capacity_limit: capacity, parameters: params.as_deref().map(Seq::new), server_time,
        }));
    }

    #[test]
    fn sync_and_command(correlation_id in cid(), command in ".{0,60}") {
        mt_round_trip(&MtMessage::Sync(SyncRequest { correlation_id }));
        mt_round_trip(&MtMessage::CommandRequest(CommandRequest { correlation_id, command: &command }));
    }

    #[test]
    fn payment_commands(correlation_id in cid(), cmds in prop::collection::vec(
        (0u8..3, 1i64..=i64::MAX, "[a-z0-9-]{1,36}"), 0..6)
    ) {
        let cmds: Vec<PaymentCommand<'_>> = cmds.iter().map(|(c, v, tx)| {
            let (category, value) = match c {
                0 => (PaymentCategory::Payment, *v),
                1 => (PaymentCategory::BadPayment, -*v),
                _ => (PaymentCategory::ZeroCommand, 0),
            };
            PaymentCommand { category, value, transaction_id: tx }
        }).collect();
        mt_round_trip(&MtMessage::PaymentCommands(PaymentCommands { correlation_id, commands: Seq::new(&cmds) }));
    }

    #[test]
    fn software_update(
        correlation_id in cid(), version in ".{1,12}", url in proptest::option::of(".{0,40}"),
        sha256 in any::<Option<[u8; 32]>>(), size in any::<Option<u64>>(),
    ) {
        mt_round_trip(&MtMessage::SoftwareUpdate(SoftwareUpdate {
            correlation_id, version: &version, url: url.as_deref(), sha256, size,
        }));
    }

    #[test]
    fn handshake(
        version in 1u32.., imei in proptest::option::of("[0-9]{15}"), sw in proptest::option::of(".{0,8}"),
        boot in proptest::option::of(any::<u32>()),
        nonce in prop::collection::vec(any::<u8>(), 16..=64), hmac in any::<[u8; 32]>(),
        time in any::<u64>(), reason in 0u8..6, info in proptest::option::of(".{0,20}"),
    ) {
        hs_round_trip(&HandshakeMessage::Hello(Hello { version, imei: imei.as_deref(), software_version: sw.as_deref(), boot }));
        hs_round_trip(&HandshakeMessage::Challenge(Challenge { version, nonce: &nonce }));
        hs_round_trip(&HandshakeMessage::Proof(Proof { hmac }));
        hs_round_trip(&HandshakeMessage::Welcome(Welcome { version, server_time: time }));
        let reason = [RefuseReason::UnknownUnit, RefuseReason::BadProof, RefuseReason::UnsupportedVersion,
            RefuseReason::RateLimited, RefuseReason::ServerBusy, RefuseReason::CredentialsChanged][reason as usize];
        hs_round_trip(&HandshakeMessage::Refused(Refused { reason, info: info.as_deref() }));
    }

    #[test]
    fn bus_envelope(
        imei in "[0-9]{15}", correlation_id in cid(), at in any::<i64>(), t in 0u8..4,
        ident in proptest::option::of("[A-Za-z-]{1,10}/10\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"),
        message in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let transport = [Transport::Quic, Transport::Tcp, Transport::Http, Transport::Sms][t as usize];
        let env = BusEnvelope { imei: &imei, correlation_id, received_at_ms: at, transport, ident: ident.as_deref(), message: &message, mo_number: None };
        let bytes = encode_bus_envelope(&env);
        prop_assert_eq!(decode_bus_envelope(&bytes).unwrap(), env);
    }

    #[test]
    fn frames(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..5)) {
        let mut wire = Vec::new();
        for p in &payloads {
            frame::encode_frame(p, 128, &mut wire).unwrap();
        }
        let mut rest = &wire[..];
        for p in &payloads {
            match frame::parse(rest, 128).unwrap() {
                frame::Parsed::Frame { payload, consumed } => {
                    prop_assert_eq!(payload, &p[..]);
                    rest = &rest[consumed..];
                }
                frame::Parsed::Incomplete { .. } => prop_assert!(false, "incomplete"),
            }
        }
        prop_assert!(rest.is_empty());
    }

    /// Arbitrary bytes: every decoder returns, none panics.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_mo(&bytes);
        let _ = decode_mt(&bytes);
        let _ = decode_handshake(&bytes);
        let _ = render_cbor(&bytes);
        let _ = decode_bus_envelope(&bytes);
        let _ = decode_mo_queue_envelope(&bytes);
        let _ = decode_dead_letter(&bytes);
        let _ = legacy::decode_rm_data(&bytes);
        let _ = legacy::decode_rc_status(&bytes);
        let _ = legacy::decode_rc_settings(&bytes);
        let _ = frame::parse(&bytes, 64);
        if let Ok(MoMessage::Telemetry(t)) = decode_mo(&bytes) {
            for r in t.records { for v in r.values { let _ = v; } }
        }
    }

    /// Valid messages with one byte changed or cut short: still no panic, and iteration of any
    /// message that does decode yields exactly `len()` items.
    #[test]
    fn mutated_messages_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let values = [TelemetryValue { field: "voltage", value: Number::Float(12.9) },
                      TelemetryValue { field: "fan_rpm", value: Number::Int(1200) }];
        let recs = [TelemetryRecord { time: 1518543688, values: Seq::new(&values) }];
        let events = [Event { time: 1, text: "Connected" }];
        for msg in [
            MoMessage::Telemetry(TelemetryBatch { records: Seq::new(&recs) }),
            MoMessage::EventLog(EventLog { events: Seq::new(&events) }),
            MoMessage::StatusReport(StatusReport { software_version: Some("3.6a"), balance: Some(-5), ..StatusReport::default() }),
        ] {
            let mut bytes = mo_to_vec(&msg);
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = render_cbor(&bytes);
            match decode_mo(&bytes) {
                Ok(MoMessage::Telemetry(t)) => {
                    prop_assert_eq!(t.records.iter().count(), t.records.len());
                    for r in t.records { prop_assert_eq!(r.values.iter().count(), r.values.len()); }
                }
                Ok(MoMessage::EventLog(l)) => prop_assert_eq!(l.events.iter().count(), l.events.len()),
                _ => {}
            }
        }
    }
}
