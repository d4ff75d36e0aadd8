//! The scaled topology as separate processes (`scripts/cluster.sh`): the control-plane on
//! PostgreSQL, two gateways, two ingest workers, Kafka (tansu) and InfluxDB. Units on both
//! gateways, over TLS-wrapped TCP and QUIC, send numbered telemetry; every value arrives
//! exactly once through the data API (InfluxDB, written by either ingest worker). A payment
//! command made through the API reaches a unit on each gateway through Kafka, and the unit's
//! acknowledgement comes back to the ledger. Then a gateway is killed with `kill -9`: its
//! unit reconnects to the other one and its telemetry goes on, exactly once; the gateway
//! restarts and takes units again.
//!
//! Needs what the README's test command starts: PostgreSQL on 127.0.0.1:5432, and
//! `scripts/services.sh` (which the cluster script runs itself) for tansu and InfluxDB.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use codec::mo::ReplyResult;
use codec::{decode_mt, MtMessage};
use serde_json::json;

mod common;
use common::{eventually, payment_acknowledged, run_load_test, Client};

/// A running cluster; `down --purge` when dropped (also when the test fails).
struct Cluster {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    addresses: Vec<(String, String)>,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster.sh {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a cluster; the guard runs the tests' clusters one at a time: they share the
    /// port base and database name of this process, and two clusters of ten processes at
    /// once would only measure the machine's two cores.
    async fn up() -> (tokio::sync::MutexGuard<'static, ()>, Self) {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = ONE_AT_A_TIME.lock().await;
        (turn, Self::start())
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Ports below the kernel's ephemeral range, so nothing else binds them meanwhile.
        let base = 20_000 + (std::process::id() % 90) * 100;
        let env = vec![
            (
                "SMARTSOLAR_BIN",
                env!("CARGO_BIN_EXE_smartsolar").to_owned(),
            ),
            ("SMARTSOLAR_CLUSTER_DIR", dir.path().display().to_string()),
            ("SMARTSOLAR_CLUSTER_PORT_BASE", base.to_string()),
            (
                "SMARTSOLAR_CLUSTER_DB",
                format!("smartsolar_cluster_{}", std::process::id()),
            ),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let mut cluster = Self {
            dir,
            env,
            addresses: Vec::new(),
        };
        let out = cluster.script(&["up"]);
        cluster.addresses = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        cluster
    }

    fn address(&self, name: &str) -> String {
        self.addresses
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("cluster.sh up printed no {name}: {:?}", self.addresses))
            .1
            .clone()
    }

    fn socket(&self, name: &str) -> SocketAddr {
        self.address(name).parse().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Leave the processes' logs in the test output (before `--purge` removes them).
            for role in ["cp", "gw1", "gw2", "ingest1", "ingest2"] {
                let log = self.dir.path().join(format!("{role}.log"));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    eprintln!("--- {role}.log (last lines)");
                    for line in text.lines().rev().take(25).collect::<Vec<_>>().iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(["down", "--purge"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output();
    }
}

const PER_UNIT: u64 = 40;
/// Numbered telemetry messages of the version-2 unit sent across the kill of its gateway.
const V2_MESSAGES: u64 = 60;

fn imei(n: u64) -> String {
    format!("0101012345{n:05}")
}

fn key(n: u64) -> String {
    format!("clusterkey{n:014}")
}

/// Unit `n` connected to gateway 1 or 2 over QUIC or TLS-TCP, after the handshake with `key`.
async fn try_connect(
    cluster: &Cluster,
    n: u64,
    key: &str,
    quic: bool,
    gateway: u8,
) -> Result<sim::UnitConn, sim::SimError> {
    let cert = sim::pem_certificate(&PathBuf::from(cluster.address("CLUSTER_CERT")))?;
    let mut unit = if quic {
        let ep = sim::quic_endpoint(&cert, Duration::from_secs(5))?;
        sim::UnitConn::quic(&ep, cluster.socket(&format!("CLUSTER_GW{gateway}_QUIC"))).await?
    } else {
        sim::UnitConn::tcp_tls(cluster.socket(&format!("CLUSTER_GW{gateway}_TCP")), &cert).await?
    };
    unit.handshake(Some(&imei(n)), key).await?;
    Ok(unit)
}

/// Unit `n` on gateway 1 or 2 over TLS-TCP in protocol version 2, carrying `window` (its
/// unacknowledged messages are sent again after the handshake).
async fn connect_v2(
    cluster: &Cluster,
    n: u64,
    gateway: u8,
    window: sim::MoWindow,
) -> sim::UnitConn {
    let cert = sim::pem_certificate(&PathBuf::from(cluster.address("CLUSTER_CERT"))).unwrap();
    let mut unit =
        sim::UnitConn::tcp_tls(cluster.socket(&format!("CLUSTER_GW{gateway}_TCP")), &cert)
            .await
            .unwrap_or_else(|e| panic!("unit {n} to gateway {gateway}: {e}"));
    unit.handshake_v2(Some(&imei(n)), &key(n), window)
        .await
        .unwrap_or_else(|e| panic!("unit {n} on gateway {gateway} (v2): {e}"));
    unit
}

/// Unit `n` with its own key, which must be admitted.
async fn connect(cluster: &Cluster, n: u64, quic: bool, gateway: u8) -> sim::UnitConn {
    try_connect(cluster, n, &key(n), quic, gateway)
        .await
        .unwrap_or_else(|e| panic!("unit {n} on gateway {gateway}: {e}"))
}

/// Every `pulse_count` the data API has for unit `n`, sorted.
async fn stored(api: &Client, n: u64) -> Vec<i64> {
    let body = api
        .get(&format!(
            "/products/{}/data?fields=pulse_count&start=2020-01-01T00:00:00Z&end=2030-01-01T00:00:00Z&limit=0",
            imei(n)
        ))
        .await;
    let mut v: Vec<i64> = body["data"]["pulse_count"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Waits (up to 60 s) until unit `n`'s first `count` telemetry values are stored, and checks
/// that each is there exactly once.
async fn stored_exactly_once(api: &Client, n: u64, count: u64) {
    let got = eventually(
        &format!("unit {n}'s telemetry stored"),
        Duration::from_secs(60),
        || async move {
            let got = stored(api, n).await;
            if got.len() >= count as usize {
                Ok(got)
            } else {
                Err(format!("{} of {count}: {got:?}", got.len()))
            }
        },
    )
    .await;
    assert_eq!(
        got,
        (0..count as i64).collect::<Vec<_>>(),
        "unit {n}: each value exactly once"
    );
}

/// Sends a payment for unit `n` through the API, answers the MT it gets, and waits for the
/// ledger to show the command acknowledged.
async fn pay_and_acknowledge(
    api: &Client,
    unit: &mut sim::UnitConn,
    n: u64,
    tx: &str,
    within: Duration,
) {
    let (status, body) = api
        .post(
            &format!("/products/{}/add_payment_command", imei(n)),
            &json!({"value": 86_400, "category": "payment", "transaction_id": tx}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    loop {
        let asked = std::time::Instant::now();
        let mt = tokio::time::timeout(within, unit.recv())
            .await
            .unwrap_or_else(|_| panic!("no MT for unit {n} within {within:?}"))
            .unwrap()
            .expect("the gateway closed the unit's connection");
        let is_payment = matches!(decode_mt(&mt), Ok(MtMessage::PaymentCommands(p))
            if p.commands.iter().any(|c| c.transaction_id == tx));
        unit.answer(&mt, ReplyResult::Ok).await.unwrap();
        if is_payment {
            eprintln!("unit {n}: payment {tx} after {:?}", asked.elapsed());
            break;
        }
    }
    payment_acknowledged(api, tx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaled_topology_stores_every_message_and_routes_payments_across_gateways() {
    // The turn is declared first, so it is dropped after the cluster is down.
    let (_turn, cluster) = Cluster::up().await;
    let http = reqwest::Client::new();
    let api = Client::login(
        &http,
        &cluster.address("CLUSTER_API"),
        "admin@example.com",
        "admin-password",
    )
    .await;
    let api = &api;

    // Six units as the factory makes them, with credit management on.
    let units: Vec<u64> = (1..=6).collect();
    for &n in &units {
        let (status, body) = api
            .post(
                "/products/create_hub2",
                &json!({"imei": imei(n), "imsi": format!("6390200{n:08}"), "device_key": key(n),
                        "product": {"assembler": "cluster-test", "rtc_enabled_flag": true}}),
            )
            .await;
        assert!((200..300).contains(&status), "create_hub2: {status} {body}");
        let (status, body) = api
            .send(
                reqwest::Method::PUT,
                &format!("/products/{}/set_dcm_enabled_flag", imei(n)),
                &json!({"enabled": true}),
            )
            .await;
        assert!((200..300).contains(&status), "dcm: {status} {body}");
    }

    // Units 1-3 on gateway 1 over TCP (TLS), 4-6 on gateway 2 over QUIC.
    let mut conns = Vec::new();
    for &n in &units {
        let on_gw1 = n <= 3;
        conns.push(connect(&cluster, n, !on_gw1, if on_gw1 { 1 } else { 2 }).await);
    }
    let t0 = sim::now_s() - 10 * PER_UNIT;
    for (unit, &n) in conns.iter_mut().zip(&units) {
        for i in 0..PER_UNIT {
            unit.send_raw(&sim::telemetry(t0 + i * 10 + n, i))
                .await
                .unwrap();
        }
    }
    for &n in &units {
        stored_exactly_once(api, n, PER_UNIT).await;
    }

    // Payments through the API reach a unit on each gateway (MT routed over Kafka to the
    // gateway holding the unit) and their acknowledgements reach the ledger.
    pay_and_acknowledge(
        api,
        &mut conns[0],
        1,
        "cluster-tx-1",
        Duration::from_secs(30),
    )
    .await;
    pay_and_acknowledge(
        api,
        &mut conns[3],
        4,
        "cluster-tx-4",
        Duration::from_secs(30),
    )
    .await;

    // A key rotated through the API closes the unit's session on the gateway holding it (a
    // separate process, told over Kafka); the old key is refused from then on, the new one
    // admitted.
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &format!("/products/{}", imei(5)),
            &json!({"device_key": key(105)}),
        )
        .await;
    assert!((200..300).contains(&status), "rotate: {status} {body}");
    assert!(
        conns[4].closed_within(Duration::from_secs(10)).await,
        "the session with the old key stayed open"
    );
    assert!(try_connect(&cluster, 5, &key(5), true, 2).await.is_err());
    assert!(try_connect(&cluster, 5, &key(5), false, 1).await.is_err());
    try_connect(&cluster, 5, &key(105), true, 2)
        .await
        .expect("the new key is admitted");

    // kill -9 gateway 1 in the middle of a version-2 unit's stream (issue 16, item 8 on
    // Kafka): unit 3 numbers its telemetry, gateway 1 dies after 20 of 60, the unit resends
    // its window to gateway 2 and goes on; every message ends up acknowledged and stored
    // exactly once, in the store and in the MO history.
    let t1 = t0 + 10 * PER_UNIT;
    let window = sim::MoWindow::new(std::process::id(), 64);
    let mut v2 = connect_v2(&cluster, 3, 1, window).await;
    let mut reconnects = 0;
    for i in PER_UNIT..PER_UNIT + V2_MESSAGES {
        if i == PER_UNIT + 20 {
            cluster.script(&["kill", "gw1"]);
            drop(conns.drain(..3).collect::<Vec<_>>());
        }
        let message = sim::telemetry(t1 + i * 10 + 3, i);
        while let Err(e) = v2.send_message(&message).await {
            reconnects += 1;
            assert!(reconnects <= 3, "unit 3 cannot reach gateway 2: {e}");
            // A message taken into the window before the write failed is resent with it.
            let sent = v2
                .window()
                .is_some_and(|w| w.unacked().any(|(_, m)| m == message.as_slice()));
            let window = v2
                .take_window()
                .expect("a version-2 connection has a window");
            v2 = connect_v2(&cluster, 3, 2, window).await;
            if sent {
                break;
            }
        }
    }
    assert!(
        v2.await_acks(Duration::from_secs(30)).await,
        "every message of unit 3 acknowledged"
    );
    eprintln!(
        "unit 3: {V2_MESSAGES} sent across the kill, {reconnects} reconnect(s), all acknowledged"
    );
    assert!(reconnects >= 1, "the unit noticed the kill");
    stored_exactly_once(api, 3, PER_UNIT + V2_MESSAGES).await;
    let mut history: Vec<i64> = api
        .rows(
            "/rtc_mo_message_history",
            json!([{"name": "product_imei", "op": "eq", "val": imei(3)}]),
        )
        .await
        .iter()
        .filter_map(common::history_pulse)
        .collect();
    history.sort_unstable();
    assert_eq!(
        history,
        (0..(PER_UNIT + V2_MESSAGES) as i64).collect::<Vec<_>>(),
        "unit 3: each telemetry message once in the MO history"
    );

    // Gateway 1's other units find gateway 2 and go on; a payment still reaches them.
    let mut moved = connect(&cluster, 1, false, 2).await;
    for i in PER_UNIT..PER_UNIT + 5 {
        moved
            .send_raw(&sim::telemetry(t1 + i * 10, i))
            .await
            .unwrap();
    }
    stored_exactly_once(api, 1, PER_UNIT + 5).await;
    // The dead gateway is still a member of the shared MT group until the broker expires it;
    // the API routes a command for a unit that a live gateway holds straight to that gateway
    // (docs/decisions.md, "MT straight to the holder"), so it arrives at once.
    pay_and_acknowledge(
        api,
        &mut moved,
        1,
        "cluster-tx-moved",
        Duration::from_secs(15),
    )
    .await;

    // The gateway comes back and takes units again; their telemetry is stored.
    cluster.script(&["start", "gw1"]);
    let mut back = connect(&cluster, 2, false, 1).await;
    for i in PER_UNIT..PER_UNIT + 5 {
        back.send_raw(&sim::telemetry(t1 + i * 10 + 2, i))
            .await
            .unwrap();
    }
    stored_exactly_once(api, 2, PER_UNIT + 5).await;
    // The restarted gateway reads its node topic: a payment reaches a unit it holds.
    pay_and_acknowledge(
        api,
        &mut back,
        2,
        "cluster-tx-restarted",
        Duration::from_secs(30),
    )
    .await;
}

/// The load test's smoke (`tests/load_smoke.rs`) against the scaled topology: 1,000 units
/// provisioned through the control-plane (PostgreSQL), TLS-TCP units on gateway 1, QUIC units
/// on gateway 2, HTTP units on gateway 1; every MO stored exactly once through Kafka and the
/// two ingest workers (database and InfluxDB), every payment command delivered and
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_units_against_the_cluster_lose_and_duplicate_nothing() {
    // The turn is declared first, so it is dropped after the cluster is down.
    let (_turn, cluster) = Cluster::up().await;
    let s = run_load_test(
        cluster.dir.path(),
        &[
            ("--api", cluster.address("CLUSTER_API")),
            ("--gateway-tcp", cluster.address("CLUSTER_GW1_TCP")),
            ("--gateway-quic", cluster.address("CLUSTER_GW2_QUIC")),
            (
                "--gateway-http",
                format!("http://{}", cluster.address("CLUSTER_GW1_HTTP")),
            ),
            ("--ca-cert", cluster.address("CLUSTER_CERT")),
        ],
    )
    .await;
    assert!(s["mo_stored"].as_u64().unwrap() > 3_000);
}
