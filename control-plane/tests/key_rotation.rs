//! Rotating a unit's `device_key` through the API (issue 17): the old key stops working at once
//! and the unit's live session is closed, on SQLite and on PostgreSQL.
//!
//! A real gateway (TCP, QUIC and legacy HTTP on 127.0.0.1:0) over the database-backed
//! directory, the in-process server driven through real HTTP, simulated units (`sim`). Twice:
//! - **one process** (`smartsolar serve`): the gateway's directory shares the API's state, so
//!   the API's write drops the cached key itself;
//! - **gateway apart** (the scaled topology): the gateway has a state (and a cache) of its own
//!   over the same database and bus, as a gateway process does, so only the control message on
//!   the bus can reach it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{MemoryBus, MemoryBusConfig, Topics};
use codec::handshake::{decode_handshake, HandshakeMessage, RefuseReason};
use codec::legacy::basic_auth;
use common::{metric, Backend, TestServer};
use control_plane::app::AppState;
use control_plane::rtc::{PendingMtDb, PresenceDb, UnitDirectoryDb};
use gateway::{Deps, Gateway, GatewayConfig, LocalAddrs, MemoryPresence, NoFallback};
use serde_json::json;
use sim::{SimError, UnitConn};
use tokio::sync::watch;

both_backends!(
    one_process_a_rotated_key_closes_the_session_and_stops_working_at_once,
    gateway_apart_a_rotated_key_reaches_it_over_the_bus,
);

const IMEI: &str = "013777946874001";
const K1: &str = "k1k1k1k1k1k1k1k1k1k1k1k1";
const K2: &str = "k2k2k2k2k2k2k2k2k2k2k2k2";
const REVOKED: &str = "smartsolar_gateway_sessions_revoked_total";
/// How long a closed session may take to notice (the brief: about a second).
const CLOSE_WITHIN: Duration = Duration::from_millis(1500);

struct Rig {
    server: TestServer,
    bus: MemoryBus,
    addrs: LocalAddrs,
    cert: Vec<u8>,
    stop: watch::Sender<bool>,
    gateway: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// The server and a gateway; `apart`: the gateway gets its own state over the same
    /// database and bus, as a gateway process would.
    async fn start(backend: Backend, apart: bool) -> Self {
        let bus = MemoryBus::new(MemoryBusConfig {
            partitions: 4,
            capacity: 10_000,
        });
        let b = bus.clone();
        let server = TestServer::start_with_state(backend, move |s| {
            s.with_bus(Arc::new(b), Topics::default())
        })
        .await;
        let state = if apart {
            AppState::new(server.state.db.clone(), server.state.config.clone())
                .with_bus(Arc::new(bus.clone()), Topics::default())
        } else {
            server.state.clone()
        };
        let deps = Deps {
            bus: Arc::new(bus.clone()),
            directory: Arc::new(UnitDirectoryDb::new(state.clone())),
            presence: Arc::new(PresenceDb::new(state.clone())),
            registry: Arc::new(MemoryPresence::new()),
            fallback: Arc::new(NoFallback),
            pending: Arc::new(PendingMtDb::new(state.clone())),
        };
        // The test binary's recorder, before the gateway counts anything.
        common::metrics();
        let mut config = GatewayConfig::loopback("gw-keys");
        config.shards = 2;
        let gw = Gateway::bind(config, deps).await.unwrap();
        let (addrs, cert) = (gw.local_addrs(), gw.certificate_der().to_vec());
        let (stop, mut stopped) = watch::channel(false);
        let gateway = tokio::spawn(gw.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        server.seed_unit(IMEI, K1, true, false).await;
        Self {
            server,
            bus,
            addrs,
            cert,
            stop,
            gateway,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.gateway).await;
    }

    async fn tcp(&self, key: &str) -> Result<UnitConn, SimError> {
        let mut unit = UnitConn::tcp(self.addrs.tcp.unwrap()).await?;
        unit.handshake(Some(IMEI), key).await?;
        Ok(unit)
    }

    /// The status of `GET /rc_data` with HTTP Basic `IMEI:key`.
    async fn http(&self, key: &str) -> u16 {
        let auth = basic_auth(IMEI, key);
        sim::http_request(
            self.addrs.http.unwrap(),
            "GET",
            "/rc_data",
            Some(&auth),
            None,
        )
        .await
        .unwrap()
        .0
    }

    /// `PUT /v1/products/<imei>` with a new key, as a SYSTEM user.
    async fn rotate(&self, key: &str) {
        self.server
            .put_ok(
                &format!("/v1/products/{IMEI}"),
                json!({ "device_key": key }),
            )
            .await;
    }
}

/// What the unit sees when its session is closed for a rotation: a `refused` message with
/// reason 5 (credentials changed) in place of the next MT message, then the end of the
/// stream, within [`CLOSE_WITHIN`] of `rotated` (when the API answered). Returns how long that
/// took. MT messages sent before it (a unit may be sent its pending state on connect) are
/// skipped.
async fn closed_for_rotation(unit: &mut UnitConn, rotated: Instant, what: &str) -> Duration {
    let deadline = tokio::time::Instant::from_std(rotated + CLOSE_WITHIN);
    let refused = loop {
        let frame = tokio::time::timeout_at(deadline, unit.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: the session stayed open after the rotation"))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .unwrap_or_else(|| panic!("{what}: closed without saying why"));
        if codec::decode_mt(&frame).is_ok() {
            continue;
        }
        match decode_handshake(&frame) {
            Ok(HandshakeMessage::Refused(r)) => break r.reason,
            other => panic!("{what}: expected refused(credentials changed), got {other:?}"),
        }
    };
    assert_eq!(refused, RefuseReason::CredentialsChanged, "{what}");
    assert!(
        unit.closed_within(CLOSE_WITHIN).await,
        "{what}: the connection was not closed after the refusal"
    );
    rotated.elapsed()
}

/// Everything the brief asks of a rotation; `at_once`: the old key must be refused by the
/// very first request after the API answered (same process), otherwise within a second (the
/// control message's trip over the bus).
async fn rotation_closes_sessions_and_refuses_the_old_key(rig: &Rig, at_once: bool) {
    let endpoint = sim::quic_endpoint(&rig.cert, Duration::from_secs(5)).unwrap();
    let quic_addr = rig.addrs.quic.unwrap();
    let quic = |key: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let mut unit = UnitConn::quic(&endpoint, quic_addr).await?;
            unit.handshake(Some(IMEI), key).await?;
            Ok::<_, SimError>(unit)
        }
    };
    // TCP first (a unit has one session: a second connection would replace it), with K1;
    // HTTP Basic with K1 works (and is now cached).
    let mut tcp = rig.tcp(K1).await.unwrap();
    assert_eq!(rig.http(K1).await, 200);
    let revoked_before = metric(REVOKED);

    rig.rotate(K2).await;
    let rotated = Instant::now();
    if at_once {
        assert_eq!(
            rig.http(K1).await,
            401,
            "HTTP Basic with the old key right after the rotation"
        );
    }
    let took = closed_for_rotation(&mut tcp, rotated, "TCP").await;
    eprintln!("TCP session closed {took:?} after the API answered");
    wait_for(
        || async { rig.http(K1).await == 401 },
        "HTTP Basic with K1 refused",
    )
    .await;
    assert_eq!(rig.http(K2).await, 200, "HTTP Basic with the new key");
    let refused = rig.tcp(K1).await.err();
    assert!(
        matches!(refused, Some(SimError::Refused(RefuseReason::BadProof))),
        "TCP reconnect with the old key: {refused:?}"
    );
    let tcp = rig.tcp(K2).await.unwrap();
    tcp.close().await.unwrap();

    // QUIC: connected with K2, rotated back to K1.
    let mut quic_unit = quic(K2).await.unwrap();
    rig.rotate(K1).await;
    let rotated = Instant::now();
    if at_once {
        assert_eq!(rig.http(K2).await, 401);
    }
    let took = closed_for_rotation(&mut quic_unit, rotated, "QUIC").await;
    eprintln!("QUIC session closed {took:?} after the API answered");
    let refused = quic(K2).await.err();
    assert!(
        matches!(refused, Some(SimError::Refused(RefuseReason::BadProof))),
        "QUIC reconnect with the old key: {refused:?}"
    );
    let mut quic_unit = quic(K1).await.unwrap();

    // The control message is a hint: the same message again (a duplicate, or a replay by a
    // new consumer group) leaves a session admitted with the current key alone.
    let again = rtc::GatewayControl::CredentialsChanged { imei: IMEI.into() };
    again.publish(&rig.bus, &Topics::default()).await.unwrap();
    // A write that does not touch the key closes nothing either.
    rig.server
        .put_ok(&format!("/v1/products/{IMEI}"), json!({"assembler": "B"}))
        .await;
    assert!(
        !quic_unit.closed_within(Duration::from_millis(700)).await,
        "a session with the current key was closed"
    );
    quic_unit
        .send_raw(&sim::telemetry(sim::now_s(), 1))
        .await
        .unwrap();
    quic_unit.close().await.unwrap();

    assert!(
        metric(REVOKED) - revoked_before >= 2.0,
        "{REVOKED} counts the two closed sessions"
    );
}

async fn wait_for<F: std::future::Future<Output = bool>>(f: impl Fn() -> F, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !f().await {
        assert!(Instant::now() < deadline, "not within a second: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_process_a_rotated_key_closes_the_session_and_stops_working_at_once(backend: Backend) {
    let rig = Rig::start(backend, false).await;
    rotation_closes_sessions_and_refuses_the_old_key(&rig, true).await;
    rig.stop().await;
}

async fn gateway_apart_a_rotated_key_reaches_it_over_the_bus(backend: Backend) {
    let rig = Rig::start(backend, true).await;
    rotation_closes_sessions_and_refuses_the_old_key(&rig, false).await;
    rig.stop().await;
}
