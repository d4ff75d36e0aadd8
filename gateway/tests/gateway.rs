//! The gateway with real QUIC, TCP and HTTP clients on 127.0.0.1:0.

mod common;

use std::time::Duration;

use bus::{Bus as _, Topics};
use codec::handshake::RefuseReason;
use codec::legacy::basic_auth;
use codec::mo::{MtReply, OfflineReason, ReplyResult};
use codec::mt::{CommandRequest, StatusUpdate, SyncRequest};
use codec::{decode_dead_letter, decode_mo, decode_mt, MoMessage, MtMessage, Transport};
use common::*;
use gateway::mt::{new_correlation_id, RESULT_EXPIRED};
use gateway::presence::PresenceEvent;
use gateway::{StatusReason, UnitCredentials};
use sim::UnitConn;

fn topics() -> Topics {
    Topics::default()
}

#[tokio::test]
async fn tcp_unit_handshakes_and_its_mo_reaches_the_bus_in_order() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;

    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    let welcome = unit.handshake(Some(&imei(1)), KEY).await.unwrap();
    assert_eq!(welcome.version, 1);
    for i in 0..30u64 {
        unit.send_raw(&sim::telemetry(1_700_000_000 + i, i))
            .await
            .unwrap();
    }
    unit.send_raw(&sim::event_log(1_700_000_100, "Above RV"))
        .await
        .unwrap();
    for i in 0..30i64 {
        let d = next(&mut mo).await;
        assert_eq!(&d.key[..], imei(1).as_bytes());
        assert_eq!(
            codec::decode_bus_envelope(&d.payload).unwrap().transport,
            Transport::Tcp
        );
        let (who, _, msg) = open(&d);
        assert_eq!(who, imei(1));
        let MoMessage::Telemetry(t) = decode_mo(&msg).unwrap() else {
            panic!()
        };
        let rec = t.records.iter().next().unwrap();
        let pulse = rec
            .values
            .iter()
            .find(|v| v.field == "pulse_count")
            .unwrap();
        assert_eq!(pulse.value, codec::Number::Int(i), "in order");
    }
    let (_, _, msg) = open(&next(&mut mo).await);
    assert!(matches!(decode_mo(&msg).unwrap(), MoMessage::EventLog(_)));

    unit.go_offline(OfflineReason::SleepMode).await.unwrap();
    eventually("offline record", || {
        world.presence.events().contains(&PresenceEvent::Offline(
            imei(1),
            StatusReason::SleepMode,
            None,
        ))
    })
    .await;
    assert_eq!(
        world.presence.events()[0],
        PresenceEvent::Online(imei(1), Transport::Tcp)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn quic_unit_handshakes_and_sends_mo() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;
    let mut unit = gw.quic_unit(2).await;
    for i in 0..10 {
        unit.send_raw(&sim::status_report(1_700_000_000 + i))
            .await
            .unwrap();
    }
    for _ in 0..10 {
        let d = next(&mut mo).await;
        let env = codec::decode_bus_envelope(&d.payload).unwrap();
        assert_eq!(env.transport, Transport::Quic);
        assert!(matches!(
            decode_mo(env.message).unwrap(),
            MoMessage::StatusReport(_)
        ));
    }
    unit.close().await.unwrap();
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_proof_and_unknown_units_are_refused_and_never_reach_the_bus() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;
    let ep = gw.quic_endpoint();

    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    let err = unit
        .handshake(Some(&imei(3)), "wrong-key")
        .await
        .unwrap_err();
    assert!(
        matches!(err, sim::SimError::Refused(RefuseReason::BadProof)),
        "{err}"
    );

    let mut unit = UnitConn::quic(&ep, gw.addrs.quic.unwrap()).await.unwrap();
    let err = unit
        .handshake(Some("999999999999999"), KEY)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sim::SimError::Refused(RefuseReason::UnknownUnit)),
        "{err}"
    );

    // A refused unit's frames go nowhere: the connection is closed.
    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    let _ = unit.handshake(Some("999999999999999"), KEY).await;
    let _ = unit.send_raw(&sim::status_report(1)).await;
    assert!(unit.closed_within(Duration::from_secs(2)).await);

    // MO before the handshake is not a hello: refused.
    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    unit.send_raw(&sim::status_report(1)).await.unwrap();
    assert!(unit.closed_within(Duration::from_secs(2)).await);

    assert!(nothing_within(&mut mo, Duration::from_millis(300)).await);
    assert!(world.presence.events().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_mo_becomes_a_dead_letter_and_the_session_goes_on() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;
    let mut dead = world.subscribe(&topics().mo_dead_letter).await;
    let mut unit = gw.tcp_unit(4).await;

    unit.send_raw(&[0x82, 0x18, 0x63, 0xa0]).await.unwrap(); // [99, {}]
    unit.send_raw(b"not cbor at all").await.unwrap();
    unit.send_raw(&sim::event_log(1_517_927_343, "Connected"))
        .await
        .unwrap();

    let d = next(&mut dead).await;
    let dl = decode_dead_letter(&d.payload).unwrap();
    assert_eq!(dl.reason, "unknown MO message type 99");
    assert_eq!(dl.queue_name.as_str(), "RTC-MO");
    let env = dl.envelope().unwrap();
    assert_eq!(env.ident, imei(4));
    assert_eq!(env.message_bytes().unwrap(), [0x82, 0x18, 0x63, 0xa0]);
    let d = next(&mut dead).await;
    assert!(!decode_dead_letter(&d.payload).unwrap().reason.is_empty());
    let (_, _, msg) = open(&next(&mut mo).await);
    assert!(matches!(decode_mo(&msg).unwrap(), MoMessage::EventLog(_)));
    gw.shutdown().await;
}

#[tokio::test]
async fn mt_is_delivered_in_order_and_acknowledged() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut replies = world.subscribe(&topics().mt_reply).await;
    let mut unit = gw.quic_unit(5).await;
    eventually("presence claim", || world.registry.len() == 1).await;

    let mt = world.mt_client();
    let a = mt
        .enqueue(
            &imei(5),
            &MtMessage::CommandRequest(CommandRequest {
                correlation_id: new_correlation_id(),
                command: "atc 60 AT+CPOL=?;+COPS=?",
            }),
        )
        .await
        .unwrap();
    let b = mt
        .enqueue(
            &imei(5),
            &MtMessage::Sync(SyncRequest {
                correlation_id: new_correlation_id(),
            }),
        )
        .await
        .unwrap();

    let first = unit.recv().await.unwrap().unwrap();
    assert_eq!(decode_mt(&first).unwrap().correlation_id(), a);
    unit.answer(&first, ReplyResult::Ok).await.unwrap();
    let second = unit.recv().await.unwrap().unwrap();
    assert_eq!(
        decode_mt(&second).unwrap().correlation_id(),
        b,
        "second only after the first is answered"
    );
    unit.answer(&second, ReplyResult::Ok).await.unwrap();

    // Reply to a, command response to a, reply to b.
    let (_, _, m1) = open(&next(&mut replies).await);
    let MoMessage::Reply(MtReply {
        correlation_id,
        result: ReplyResult::Ok,
        ..
    }) = decode_mo(&m1).unwrap()
    else {
        panic!()
    };
    assert_eq!(correlation_id, a);
    let (_, _, m2) = open(&next(&mut replies).await);
    assert!(
        matches!(decode_mo(&m2).unwrap(), MoMessage::CommandResponse(r) if r.correlation_id == a && r.output.contains("AT+CPOL"))
    );
    let (_, _, m3) = open(&next(&mut replies).await);
    assert_eq!(decode_mo(&m3).unwrap().correlation_id(), Some(b));
    unit.close().await.unwrap();
    gw.shutdown().await;
}

#[tokio::test]
async fn mt_to_an_offline_unit_retries_then_falls_back_then_delivers_on_connect_or_expires() {
    let world = World::new();
    let mut c = config("a");
    c.mt.ack_timeout_ms = 50;
    c.mt.backoff_max_ms = 100;
    c.mt.max_attempts = 3;
    c.mt.ttl_ms = 3_000;
    let gw = world.start(c).await;
    let mut replies = world.subscribe(&topics().mt_reply).await;
    let mt = world.mt_client();

    let id = mt
        .enqueue(
            &imei(6),
            &MtMessage::StatusUpdate(StatusUpdate {
                correlation_id: new_correlation_id(),
                enabled: Some(false),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    eventually("fallback", || world.fallback.calls() == vec![(imei(6), id)]).await;

    // The wakeup works: the unit connects and gets the command at once.
    let mut unit = gw.tcp_unit(6).await;
    let got = unit.recv().await.unwrap().unwrap();
    assert_eq!(decode_mt(&got).unwrap().correlation_id(), id);
    unit.answer(&got, ReplyResult::Ok).await.unwrap();
    let (_, _, m) = open(&next(&mut replies).await);
    assert_eq!(decode_mo(&m).unwrap().correlation_id(), Some(id));
    unit.close().await.unwrap();

    // A unit that never comes: fallback, then expiry reported on the reply topic.
    let id = mt
        .enqueue(
            &imei(7),
            &MtMessage::Sync(SyncRequest {
                correlation_id: new_correlation_id(),
            }),
        )
        .await
        .unwrap();
    let (who, _, m) = open(&next(&mut replies).await);
    assert_eq!(who, imei(7));
    let MoMessage::Reply(r) = decode_mo(&m).unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.correlation_id, r.result),
        (id, ReplyResult::Other(RESULT_EXPIRED))
    );
    assert!(r.info.unwrap().starts_with("gateway: expired"));
    assert!(world.fallback.calls().contains(&(imei(7), id)));
    gw.shutdown().await;
}

#[tokio::test]
async fn two_gateways_on_one_bus_deliver_mt_to_whichever_holds_the_unit() {
    let world = World::new();
    let a = world.start(config("a")).await;
    let b = world.start(config("b")).await;
    let mut replies = world.subscribe(&topics().mt_reply).await;

    // Units 10..14 on A (TCP), 15..19 on B (QUIC).
    let mut units = Vec::new();
    for n in 10..15 {
        let mut u = UnitConn::tcp(a.addrs.tcp.unwrap()).await.unwrap();
        u.handshake(Some(&imei(n)), KEY).await.unwrap();
        units.push((n, u));
    }
    let ep = b.quic_endpoint();
    for n in 15..20 {
        let mut u = UnitConn::quic(&ep, b.addrs.quic.unwrap()).await.unwrap();
        u.handshake(Some(&imei(n)), KEY).await.unwrap();
        units.push((n, u));
    }
    eventually("claims", || world.registry.len() == 10).await;

    let mt = world.mt_client();
    let mut sent = std::collections::HashMap::new();
    for (n, _) in &units {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                mt.enqueue(
                    &imei(*n),
                    &MtMessage::Sync(SyncRequest {
                        correlation_id: new_correlation_id(),
                    }),
                )
                .await
                .unwrap(),
            );
        }
        sent.insert(*n, ids);
    }
    for (n, u) in &mut units {
        for expected in &sent[n] {
            let f = tokio::time::timeout(Duration::from_secs(10), u.recv())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                decode_mt(&f).unwrap().correlation_id(),
                *expected,
                "unit {n} in order"
            );
            u.answer(&f, ReplyResult::Ok).await.unwrap();
        }
    }
    // Every reply (and the status report a sync triggers goes to MO) reaches the reply topic.
    let mut acked = 0;
    while acked < 30 {
        let (_, _, m) = open(&next(&mut replies).await);
        if let MoMessage::Reply(_) = decode_mo(&m).unwrap() {
            acked += 1;
        }
    }
    for (_, u) in units {
        u.close().await.unwrap();
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_unit_that_moves_gets_its_parked_commands_on_the_other_gateway() {
    let world = World::new();
    let mut c = config("a");
    c.mt.ack_timeout_ms = 100;
    let a = world.start(c).await;
    let b = world.start(config("b")).await;
    let mt = world.mt_client();
    // Offline: parked on whichever gateway consumed it.
    let ids: Vec<_> = futures_collect(&mt, 21, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Connects to B (whatever node parked them, they must arrive here, in order).
    let mut u = b.tcp_unit(21).await;
    for id in ids {
        let f = tokio::time::timeout(Duration::from_secs(10), u.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(decode_mt(&f).unwrap().correlation_id(), id);
        u.answer(&f, ReplyResult::Ok).await.unwrap();
    }
    u.close().await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

async fn futures_collect(
    mt: &gateway::MtClient,
    n: u32,
    count: usize,
) -> Vec<codec::CorrelationId> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(
            mt.enqueue(
                &imei(n),
                &MtMessage::Sync(SyncRequest {
                    correlation_id: new_correlation_id(),
                }),
            )
            .await
            .unwrap(),
        );
    }
    ids
}

#[tokio::test]
async fn idle_units_are_disconnected_for_inactivity_and_keepalives_keep_them() {
    let world = World::new();
    let mut c = config("a");
    c.idle_timeout_ms = 300;
    let gw = world.start(c).await;
    let mut idle = gw.tcp_unit(8).await;
    let mut alive = gw.tcp_unit(9).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive.keepalive().await.unwrap();
    }
    assert!(idle.closed_within(Duration::from_secs(2)).await);
    assert!(world.presence.events().contains(&PresenceEvent::Offline(
        imei(8),
        StatusReason::Inactivity,
        None
    )));
    alive.send_raw(&sim::status_report(1)).await.unwrap();
    assert!(!world
        .presence
        .events()
        .iter()
        .any(|e| matches!(e, PresenceEvent::Offline(i, ..) if *i == imei(9))));
    gw.shutdown().await;
}

#[tokio::test]
async fn oversize_frames_close_the_connection_before_buffering() {
    let world = World::new();
    let mut c = config("a");
    c.max_frame = 1024;
    let gw = world.start(c).await;
    // Before the handshake.
    let mut u = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    u.send_header_only(1_000_000_000).await.unwrap();
    assert!(u.closed_within(Duration::from_secs(2)).await);
    // After it.
    let mut u = gw.tcp_unit(11).await;
    u.send_raw(&vec![0u8; 1025]).await.unwrap();
    assert!(u.closed_within(Duration::from_secs(2)).await);
    eventually("offline record", || {
        world.presence.events().iter().any(|e| matches!(e, PresenceEvent::Offline(i, StatusReason::Unknown, Some(info)) if *i == imei(11) && info == "frame error"))
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn ip_identity_admits_private_apn_units_without_a_proof() {
    let world = World::new();
    world
        .directory
        .insert(UnitCredentials::new(imei(30), KEY).with_ip("Aeris", "127.0.0.1".parse().unwrap()));
    let mut c = config("a");
    c.ip_network = Some("Aeris".into());
    let gw = world.start(c).await;
    let mut mo = world.subscribe(&topics().mo).await;
    let mut u = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    u.handshake(None, "").await.unwrap();
    u.send_raw(&sim::event_log(1_517_927_343, "Connected"))
        .await
        .unwrap();
    let d = next(&mut mo).await;
    let env = codec::decode_bus_envelope(&d.payload).unwrap();
    assert_eq!(env.imei, imei(30));
    assert_eq!(env.ident, Some("Aeris/127.0.0.1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_sessions_and_hands_parked_commands_to_the_next_gateway() {
    let world = World::new();
    let a = world.start(config("a")).await;
    let mut u = a.tcp_unit(12).await;
    let mt = world.mt_client();
    let parked = futures_collect(&mt, 13, 2).await; // unit 13 is offline
    tokio::time::sleep(Duration::from_millis(200)).await;

    a.shutdown().await;
    assert!(
        u.closed_within(Duration::from_secs(2)).await,
        "session closed by shutdown"
    );
    assert!(world.presence.events().contains(&PresenceEvent::Offline(
        imei(12),
        StatusReason::Unknown,
        Some("shutdown".into())
    )));
    assert_eq!(world.registry.len(), 0, "claims released");

    let b = world.start(config("b")).await;
    let mut u = b.tcp_unit(13).await;
    for id in parked {
        let f = tokio::time::timeout(Duration::from_secs(10), u.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(decode_mt(&f).unwrap().correlation_id(), id);
        u.answer(&f, ReplyResult::Ok).await.unwrap();
    }
    b.shutdown().await;
}

/// A `POST /rm_data` body of unit `n` with one voltage sample.
fn one_voltage_upload(n: u32) -> String {
    format!(
        r#"{{"imei": "{}", "fields": {{"voltage": [[1472805042, 12.9]]}}}}"#,
        imei(n)
    )
}

/// Protocol §6: with `http_tls` on, legacy HTTP is HTTPS with the gateway's certificate;
/// a unit that pins another certificate, or speaks plain HTTP to it, gets nothing stored.
#[tokio::test]
async fn legacy_http_is_https_when_tls_is_on() {
    let world = World::new();
    let mut c = config("a");
    c.http_tls = Some(true);
    let gw = world.start(c).await;
    let http = gw.addrs.http.unwrap();
    let mut mo = world.subscribe(&topics().mo).await;
    let auth = basic_auth(&imei(15), KEY);
    let body = one_voltage_upload(15);

    let (status, _) = sim::https_request(
        http,
        &gw.cert,
        "POST",
        "/rm_data",
        Some(&auth),
        Some(body.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let env_bytes = next(&mut mo).await.payload;
    let env = codec::decode_bus_envelope(&env_bytes).unwrap();
    assert_eq!(
        (env.imei, env.transport),
        (imei(15).as_str(), Transport::Http)
    );

    // Plain HTTP to the HTTPS port: no HTTP answer at all.
    let plain =
        sim::http_request(http, "POST", "/rm_data", Some(&auth), Some(body.as_bytes())).await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A unit pinning another certificate refuses the server.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pinned_other = sim::https_request(
        http,
        other.cert.der(),
        "POST",
        "/rm_data",
        Some(&auth),
        Some(body.as_bytes()),
    )
    .await;
    assert!(pinned_other.is_err(), "{pinned_other:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), mo.recv())
            .await
            .is_err(),
        "nothing but the HTTPS upload reached the bus"
    );
    gw.shutdown().await;
}

/// An HTTP unit deletes its data only after a 2xx: when the bus cannot take the message
/// the answer is 503 with `Retry-After`, never 200.
#[tokio::test]
async fn legacy_http_gets_503_with_retry_after_when_the_bus_refuses() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let http = gw.addrs.http.unwrap();
    world.bus.close();
    let body = one_voltage_upload(16);
    let raw = format!(
        "POST /rm_data HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        basic_auth(&imei(16), KEY),
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 5\r\n"),
        "{answer}"
    );
    assert!(answer.contains("not stored"), "{answer}");
    gw.shutdown().await;
}

#[tokio::test]
async fn legacy_http_units_upload_and_poll_settings() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let http = gw.addrs.http.unwrap();
    let mut mo = world.subscribe(&topics().mo).await;
    let auth = basic_auth(&imei(14), KEY);

    let body = format!(
        r#"{{"imei": "{}", "fields": {{"current": [[1472805042, 1.0], [1472805653, 1.1]], "fan_rpm": [[1472805042, 1200]]}}}}"#,
        imei(14)
    );
    let (status, _) =
        sim::http_request(http, "POST", "/rm_data", Some(&auth), Some(body.as_bytes()))
            .await
            .unwrap();
    assert_eq!(status, 200);
    let d = next(&mut mo).await;
    let env = codec::decode_bus_envelope(&d.payload).unwrap();
    assert_eq!(env.transport, Transport::Http);
    let MoMessage::Telemetry(t) = decode_mo(env.message).unwrap() else {
        panic!()
    };
    assert_eq!(t.records.len(), 2, "grouped by time");

    let (status, _) = sim::http_request(
        http,
        "POST",
        "/rm_data",
        Some(&basic_auth(&imei(14), "nope")),
        Some(body.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(status, 401);

    let status_body = format!(
        r#"{{"imei": "{}", "enabled": true, "connection": {{"mcc": 639, "mnc": 2, "cells": [{{"lac": 1, "cid": 2, "signal": -71}}]}}}}"#,
        imei(14)
    );
    let (status, _) = sim::http_request(
        http,
        "POST",
        "/rc_data",
        Some(&auth),
        Some(status_body.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (_, _, m1) = open(&next(&mut mo).await);
    assert!(
        matches!(decode_mo(&m1).unwrap(), MoMessage::StatusReport(s) if s.enabled == Some(true))
    );
    let (_, _, m2) = open(&next(&mut mo).await);
    assert!(matches!(decode_mo(&m2).unwrap(), MoMessage::CellReport(c) if c.mcc == Some(639)));

    let mut replies = world.subscribe(&topics().mt_reply).await;
    let id = world
        .mt_client()
        .enqueue(
            &imei(14),
            &MtMessage::StatusUpdate(StatusUpdate {
                correlation_id: new_correlation_id(),
                enabled: Some(false),
                energy_limit: Some(99.5),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let mut settings = String::new();
    for _ in 0..100 {
        let (status, body) = sim::http_request(http, "GET", "/rc_data", Some(&auth), None)
            .await
            .unwrap();
        assert_eq!(status, 200);
        settings = String::from_utf8(body.to_vec()).unwrap();
        if settings.contains("enabled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v: serde_json::Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(v["enabled"], false);
    assert_eq!(v["energy_limit"], 99.5);
    let (_, _, m) = open(&next(&mut replies).await);
    let MoMessage::Reply(r) = decode_mo(&m).unwrap() else {
        panic!()
    };
    assert_eq!((r.correlation_id, r.result), (id, ReplyResult::Ok));
    gw.shutdown().await;
}

#[tokio::test]
async fn capture_mode_writes_what_units_send_in_order() {
    let world = World::new();
    let path = std::env::temp_dir().join(format!("gw-capture-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cfg = config("cap");
    cfg.capture_path = Some(path.clone());
    let gw = world.start(cfg).await;
    let mut mo = world.subscribe(&topics().mo).await;

    let mut unit = gw.tcp_unit(3).await;
    let sent: Vec<Vec<u8>> = (0..5u64)
        .map(|i| sim::telemetry(1_700_000_000 + i, i))
        .chain([sim::event_log(1_700_000_010, "Above RV")])
        .collect();
    for m in &sent {
        unit.send_raw(m).await.unwrap();
    }
    unit.keepalive().await.unwrap();
    for _ in &sent {
        next(&mut mo).await;
    }
    unit.close().await.unwrap();
    gw.shutdown().await;

    let frames = gateway::capture::read_capture(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        frames.len(),
        sent.len(),
        "one line per MO message, no keepalive"
    );
    for (f, m) in frames.iter().zip(&sent) {
        assert_eq!(f.imei, imei(3));
        assert_eq!(f.transport, "tcp");
        assert_eq!(&f.payload().unwrap(), m);
        assert!(f.t_ms > 1_700_000_000_000);
    }
}

/// The gateway's own QUIC driver (one task for the whole endpoint): many units on it at once,
/// each with its own stream, MO in and MT out; units that leave free their place; closing the
/// connection is the end of the unit's stream; the gateway's shutdown reaches every unit.
#[tokio::test]
async fn many_quic_units_share_the_endpoint_driver_and_come_and_go() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;
    let mut replies = world.subscribe(&topics().mt_reply).await;
    let ep = gw.quic_endpoint();
    let addr = gw.addrs.quic.unwrap();

    // Forty units connect at once over one client socket.
    let units = futures_util::future::join_all((0..40).map(|n| {
        let ep = ep.clone();
        async move {
            let mut u = UnitConn::quic(&ep, addr).await.unwrap();
            u.handshake(Some(&imei(n)), KEY).await.unwrap();
            u.send_raw(&sim::status_report(1_700_000_000 + u64::from(n)))
                .await
                .unwrap();
            (n, u)
        }
    }))
    .await;
    let mut senders = std::collections::HashSet::new();
    for _ in 0..40 {
        senders.insert(open(&next(&mut mo).await).0);
    }
    assert_eq!(senders.len(), 40, "every unit's MO, each on its own stream");
    eventually("claims", || world.registry.len() == 40).await;

    // Each unit gets the command addressed to it, and its reply reaches the bus.
    let mt = world.mt_client();
    let mut ids = std::collections::HashMap::new();
    for (n, _) in &units {
        let id = mt
            .enqueue(
                &imei(*n),
                &MtMessage::CommandRequest(CommandRequest {
                    correlation_id: new_correlation_id(),
                    command: "AT+CSQ",
                }),
            )
            .await
            .unwrap();
        ids.insert(*n, id);
    }
    let mut units: Vec<_> =
        futures_util::future::join_all(units.into_iter().map(|(n, mut u)| async move {
            let got = u.recv().await.unwrap().expect("an MT frame");
            let id = decode_mt(&got).unwrap().correlation_id();
            u.answer(&got, ReplyResult::Ok).await.unwrap();
            (n, id, u)
        }))
        .await;
    for (n, id, _) in &units {
        assert_eq!(ids[n], *id, "unit {n} got its own command");
    }
    let mut acked = std::collections::HashSet::new();
    while acked.len() < 40 {
        let (_, _, m) = open(&next(&mut replies).await);
        if let MoMessage::Reply(r) = decode_mo(&m).unwrap() {
            acked.insert(r.correlation_id);
        }
    }

    // Ten units leave: five finish their stream and close, five close the connection
    // without finishing the stream. Both are the end of the unit's stream, as a TCP FIN
    // would be, and their place is freed.
    for (i, (_, _, u)) in units.drain(..10).enumerate() {
        if i % 2 == 0 {
            u.close().await.unwrap();
        } else {
            u.abort();
        }
    }
    eventually("ten offline records", || {
        world
            .presence
            .events()
            .iter()
            .filter(|e| {
                matches!(e, PresenceEvent::Offline(_, StatusReason::Unknown, Some(info))
                    if info == "closed by unit")
            })
            .count()
            == 10
    })
    .await;
    eventually("ten released", || world.registry.len() == 30).await;

    // Connections come and go on reused driver slots: forty more short sessions.
    for round in 0..40u32 {
        let n = round % 10;
        let mut u = UnitConn::quic(&ep, addr).await.unwrap();
        u.handshake(Some(&imei(n)), KEY).await.unwrap();
        u.send_raw(&sim::status_report(1_700_001_000 + u64::from(round)))
            .await
            .unwrap();
        assert_eq!(open(&next(&mut mo).await).0, imei(n));
        u.close().await.unwrap();
    }

    // Shutdown closes the thirty still connected, and the gateway finishes its drain.
    gw.shutdown().await;
    for (n, _, mut u) in units {
        assert!(
            u.closed_within(Duration::from_secs(3)).await,
            "unit {n} sees the gateway close"
        );
    }
}

/// A QUIC client that completes the TLS handshake but never opens its stream is closed after
/// the handshake timeout and counts as a failed handshake; over `max_connections`, QUIC
/// connections are refused at once.
#[tokio::test]
async fn quic_clients_without_a_stream_time_out_and_extra_ones_are_refused() {
    let world = World::new();
    let mut c = config("a");
    c.handshake_timeout_ms = 300;
    c.max_connections = 1;
    let gw = world.start(c).await;
    let ep = gw.quic_endpoint();
    let addr = gw.addrs.quic.unwrap();

    let silent = ep.connect(addr, "localhost").unwrap().await.unwrap();
    // The only place is taken: the next unit is refused during its QUIC handshake.
    let err = UnitConn::quic(&ep, addr).await.err().expect("refused");
    assert!(err.to_string().contains("refused"), "{err}");

    let closed = tokio::time::timeout(Duration::from_secs(3), silent.closed())
        .await
        .expect("closed after the handshake timeout");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref a) if a.reason.as_ref() == b"no stream"),
        "{closed:?}"
    );
    // Its place is free again.
    let mut unit = UnitConn::quic(&ep, addr).await.unwrap();
    unit.handshake(Some(&imei(1)), KEY).await.unwrap();
    unit.close().await.unwrap();
    gw.shutdown().await;
}

/// UDP garbage at the QUIC port (random bytes, truncated and corrupted copies of a real
/// client's packets) is dropped by the endpoint driver: nothing reaches the bus, units keep
/// being served.
#[tokio::test]
async fn garbage_datagrams_at_the_quic_port_are_dropped_and_units_go_on() {
    use rand::{Rng, RngCore};
    let mut rng = rand::thread_rng();
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;
    let addr = gw.addrs.quic.unwrap();
    let mut unit = gw.quic_unit(1).await;

    // A real client's first flight, captured by a UDP socket posing as the gateway.
    let decoy = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let decoy_addr = decoy.local_addr().unwrap();
    let ep = gw.quic_endpoint();
    let _connecting = ep.connect(decoy_addr, "localhost").unwrap();
    let mut initial = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), decoy.recv_from(&mut initial))
        .await
        .unwrap()
        .unwrap();
    initial.truncate(n);

    let noise = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    for i in 0..2_000usize {
        let datagram = match i % 4 {
            0 => {
                let mut d = vec![0u8; rng.gen_range(1..1500)];
                rng.fill_bytes(&mut d);
                d
            }
            1 => initial[..rng.gen_range(1..initial.len())].to_vec(),
            2 => {
                let mut d = initial.clone();
                let at = rng.gen_range(0..d.len());
                d[at] ^= 0xff;
                d
            }
            // A short-header packet for a connection id nobody issued.
            _ => {
                let mut d = vec![0x40u8; 64];
                rng.fill_bytes(&mut d[1..]);
                d
            }
        };
        noise.send_to(&datagram, addr).await.unwrap();
    }

    // The admitted unit is still served, and only its frames reached the bus.
    unit.send_raw(&sim::status_report(1_700_000_000))
        .await
        .unwrap();
    let (who, _, msg) = open(&next(&mut mo).await);
    assert_eq!(who, imei(1));
    assert!(matches!(
        decode_mo(&msg).unwrap(),
        MoMessage::StatusReport(_)
    ));
    assert!(nothing_within(&mut mo, Duration::from_millis(300)).await);
    // A new unit still gets in.
    let mut late = gw.quic_unit(2).await;
    late.send_raw(&sim::status_report(1_700_000_001))
        .await
        .unwrap();
    assert_eq!(open(&next(&mut mo).await).0, imei(2));
    unit.close().await.unwrap();
    late.close().await.unwrap();
    gw.shutdown().await;
}

/// A credential change on the control topic reaches every gateway (each reads the topic in a
/// group of its own): each closes its unit's session if the directory no longer holds the key
/// the unit proved, telling the unit why, and leaves sessions whose key is unchanged alone.
#[tokio::test]
async fn a_credential_change_closes_the_session_on_whichever_gateway_holds_it() {
    let world = World::new();
    let (a, b) = (
        world.start(config("a")).await,
        world.start(config("b")).await,
    );
    let mut on_a = a.tcp_unit(20).await;
    let mut on_b = b.quic_unit(21).await;
    let mut unchanged = b.tcp_unit(22).await;
    let control = |n: u32| {
        let bus = world.bus.clone();
        async move {
            rtc::GatewayControl::CredentialsChanged { imei: imei(n) }
                .publish(&bus, &topics())
                .await
                .unwrap();
        }
    };
    // The key did not change (a duplicate or replayed message): nothing closes.
    control(22).await;
    assert!(!unchanged.closed_within(Duration::from_millis(300)).await);

    for n in [20, 21] {
        world
            .directory
            .insert(UnitCredentials::new(imei(n), "zyxwvutsrqponmlkjihgfedc"));
        control(n).await;
    }
    for (unit, name) in [(&mut on_a, "a"), (&mut on_b, "b")] {
        let frame = tokio::time::timeout(Duration::from_secs(2), unit.recv())
            .await
            .unwrap_or_else(|_| panic!("session on {name} stayed open"))
            .unwrap()
            .unwrap();
        let codec::handshake::HandshakeMessage::Refused(r) =
            codec::handshake::decode_handshake(&frame).unwrap()
        else {
            panic!("expected refused on {name}")
        };
        assert_eq!(r.reason, RefuseReason::CredentialsChanged);
        assert!(unit.closed_within(Duration::from_secs(2)).await, "{name}");
    }
    assert!(!unchanged.closed_within(Duration::from_millis(200)).await);
    // The old key is refused now, the new one admitted.
    let mut again = UnitConn::tcp(a.addrs.tcp.unwrap()).await.unwrap();
    let err = again.handshake(Some(&imei(20)), KEY).await.unwrap_err();
    assert!(matches!(
        err,
        sim::SimError::Refused(RefuseReason::BadProof)
    ));
    let mut again = UnitConn::tcp(a.addrs.tcp.unwrap()).await.unwrap();
    again
        .handshake(Some(&imei(20)), "zyxwvutsrqponmlkjihgfedc")
        .await
        .unwrap();
    again.close().await.unwrap();
    unchanged.close().await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

/// Protocol version 2 on both stream transports: numbered MOs reach the bus unchanged under
/// the correlation id derived from (imei, boot, seq), are acknowledged, and a window resent
/// after a reconnect carries the same ids (so ingest recognises the resend).
#[tokio::test]
async fn v2_units_get_acknowledgements_and_resend_their_window_with_the_same_ids() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut mo = world.subscribe(&topics().mo).await;
    for (n, quic) in [(40u32, false), (41, true)] {
        let ep = gw.quic_endpoint();
        let connect = || async {
            if quic {
                UnitConn::quic(&ep, gw.addrs.quic.unwrap()).await.unwrap()
            } else {
                UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap()
            }
        };
        let mut unit = connect().await;
        let welcome = unit
            .handshake_v2(Some(&imei(n)), KEY, sim::MoWindow::new(77, 8))
            .await
            .unwrap();
        assert_eq!(welcome.version, 2);
        // More than the window: sending blocks on acknowledgements and goes on.
        let mut sent = Vec::new();
        for i in 0..20u64 {
            let m = sim::telemetry(1_700_000_000 + i, i);
            let seq = tokio::time::timeout(Duration::from_secs(5), unit.send_message(&m))
                .await
                .expect("window room within 5 s")
                .unwrap();
            assert_eq!(seq, i + 1);
            sent.push(m);
        }
        assert!(
            unit.await_acks(Duration::from_secs(5)).await,
            "all acknowledged"
        );
        assert_eq!(unit.window().unwrap().acked(), 20);
        for (i, m) in sent.iter().enumerate() {
            let (who, id, msg) = open(&next(&mut mo).await);
            assert_eq!(who, imei(n));
            assert_eq!(&msg, m, "the MO without its number, byte for byte");
            assert_eq!(
                id,
                codec::ack::mo_correlation_id(&imei(n), 77, i as u64 + 1)
            );
        }

        // Three more written, the connection dropped before any ack was read: the window
        // still holds them, and the next connection sends them again with the same numbers.
        for i in 20..23u64 {
            unit.send_message(&sim::telemetry(1_700_000_000 + i, i))
                .await
                .unwrap();
        }
        // Give the frames time to arrive (a QUIC close drops stream data still unsent);
        // the acks come back too, but the unit never reads them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut window = unit.take_window().unwrap();
        unit.abort();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(open(&next(&mut mo).await).1);
        }
        assert_eq!(
            window.len(),
            3,
            "nothing acknowledged on the dead connection was read"
        );
        window = {
            let mut unit = connect().await;
            unit.handshake_v2(Some(&imei(n)), KEY, window)
                .await
                .unwrap();
            assert!(unit.await_acks(Duration::from_secs(5)).await);
            let w = unit.take_window().unwrap();
            unit.close().await.unwrap();
            w
        };
        assert!(window.is_empty());
        for (i, id) in ids.iter().enumerate() {
            let (_, again, _) = open(&next(&mut mo).await);
            assert_eq!(&again, id, "resend {i} has the first send's id");
            assert_eq!(
                again,
                codec::ack::mo_correlation_id(&imei(n), 77, 21 + i as u64)
            );
        }
    }
    gw.shutdown().await;
}

/// A keepalive read together with the MO before it: the acknowledgement goes out at once,
/// not when the unit's next message happens to come (the session first deferred the ack
/// while another frame was buffered, then skipped it for the keepalive).
#[tokio::test]
async fn v2_ack_is_not_held_back_by_a_keepalive_read_with_the_message() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    unit.handshake_v2(Some(&imei(43)), KEY, sim::MoWindow::new(5, 4))
        .await
        .unwrap();
    for i in 0..3u64 {
        unit.send_message_and_keepalive(&sim::telemetry(1_700_000_000 + i, i))
            .await
            .unwrap();
        assert!(
            unit.await_acks(Duration::from_secs(2)).await,
            "message {i} acknowledged although only a keepalive followed it"
        );
    }
    assert_eq!(unit.window().unwrap().acked(), 3);
    gw.shutdown().await;
}

/// No acknowledgement before the bus accepted: with the bus refusing, the unit gets no ack
/// and keeps its message; a v1 message on a v2 session (no number) closes the connection.
/// A version-2 unit's burst on the durable disk bus: the frames the gateway finds buffered
/// together are published together and share the bus's group commit (before, a session
/// waited for one `fdatasync` per message), in order, each under its own correlation id.
#[tokio::test]
async fn v2_burst_shares_the_disk_bus_group_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let disk = bus::DiskBus::open(dir.path(), bus::DiskBusConfig::default()).unwrap();
    let world = World::new();
    let gw = world
        .start_on(config("a"), std::sync::Arc::new(disk.clone()))
        .await;
    let mut mo = disk.subscribe(&[&topics().mo], "test").await.unwrap();
    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    unit.handshake_v2(Some(&imei(43)), KEY, sim::MoWindow::new(5, 256))
        .await
        .unwrap();
    let before = disk.batches();
    let sent: Vec<Vec<u8>> = (0..200u64)
        .map(|i| sim::telemetry(1_700_000_000 + i, i))
        .collect();
    for m in &sent {
        unit.send_message(m).await.unwrap();
    }
    assert!(
        unit.await_acks(Duration::from_secs(10)).await,
        "all acknowledged"
    );
    let syncs = disk.batches() - before;
    assert!(syncs < 100, "{syncs} syncs for 200 messages of one unit");
    for (i, m) in sent.iter().enumerate() {
        let (who, id, msg) = open(&next(&mut mo).await);
        assert_eq!(who, imei(43));
        assert_eq!(&msg, m, "in the order sent");
        assert_eq!(
            id,
            codec::ack::mo_correlation_id(&imei(43), 5, i as u64 + 1)
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn v2_gets_no_ack_when_the_bus_refuses_and_unnumbered_frames_close_the_session() {
    let world = World::new();
    let gw = world.start(config("a")).await;
    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    unit.handshake_v2(Some(&imei(42)), KEY, sim::MoWindow::new(1, 4))
        .await
        .unwrap();
    unit.send_raw(&sim::status_report(1_700_000_000))
        .await
        .unwrap();
    assert!(
        unit.closed_within(Duration::from_secs(5)).await,
        "unnumbered frame"
    );

    let mut unit = UnitConn::tcp(gw.addrs.tcp.unwrap()).await.unwrap();
    unit.handshake_v2(Some(&imei(42)), KEY, sim::MoWindow::new(2, 4))
        .await
        .unwrap();
    world.bus.close();
    unit.send_message(&sim::status_report(1_700_000_001))
        .await
        .unwrap();
    assert!(!unit.await_acks(Duration::from_secs(2)).await);
    assert_eq!(
        unit.window().unwrap().len(),
        1,
        "kept for the next connection"
    );
    assert_eq!(unit.window().unwrap().acked(), 0);
    gw.shutdown().await;
}
