//! The RTC glue end to end, on SQLite and on PostgreSQL: a real gateway (TCP on
//! 127.0.0.1:0) wired to the database-backed directory, presence and fallback, the
//! real ingest engine (on the MO and the MT-reply topics) with `ControlPlaneSink`, the
//! in-process bus and the embedded time-series store; a simulated unit
//! (`gateway::sim`); and the API through real HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, MemoryBus, MemoryBusConfig, Topics};
use codec::mo::{Cell, CellReport, FinalBalance, MtReply, ReplyResult, StatusReport};
use codec::{decode_mt, CorrelationId, MoMessage, MtMessage, Seq};
use common::{Backend, TestServer};
use control_plane::catalogue::Column;
use control_plane::rtc::{
    self, ControlPlaneSink, FallbackSms, PendingMtDb, PresenceDb, UnitDirectoryDb,
};
use gateway::{Deps, Gateway, GatewayConfig, MemoryPresence};
use ingest::engine::EngineConfig;
use ingest::tsdb::embedded::Embedded;
use reqwest::{Method, StatusCode};
use sea_query::{Alias, Expr, Order, Query};
use serde_json::{json, Map, Value as Json};
use sim::{SimError, UnitConn};
use tokio::sync::watch;

both_backends!(
    enable_and_payment_reach_the_unit_and_its_answers_the_database,
    reports_telemetry_cells_and_dead_letters,
    unknown_units_are_refused_and_offline_units_get_a_wakeup,
    rtc_endpoints,
    a_reported_energy_limit_confirms_the_pending_parameter,
    an_unmatched_reply_stalls_no_other_unit,
    mt_history_is_listed_with_its_delivery_state,
    the_record_of_pending_commands_reaches_units_that_connect_or_poll,
    a_v2_units_resent_window_is_applied_once,
    a_v2_resend_after_its_dedupe_rows_were_pruned_is_applied_once,
);

/// A unit's device key (24 characters, unique like the column).
fn key(imei: &str) -> String {
    format!("{imei}abcdefghi")
}
const WAIT: Duration = Duration::from_secs(15);

struct Rig {
    server: TestServer,
    bus: MemoryBus,
    tcp: std::net::SocketAddr,
    /// Legacy HTTP, when the test's tweak turned it on.
    http: Option<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Rig {
    async fn start(backend: Backend, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let bus = MemoryBus::new(MemoryBusConfig {
            partitions: 4,
            capacity: 10_000,
        });
        let tsdb = Arc::new(Embedded::in_memory());
        let (b, t) = (bus.clone(), tsdb.clone());
        let server = TestServer::start_with_state(backend, move |s| {
            s.with_bus(Arc::new(b), Topics::default())
                .with_timeseries(t)
        })
        .await;
        let state = server.state.clone();
        let deps = Deps {
            bus: Arc::new(bus.clone()),
            directory: Arc::new(UnitDirectoryDb::new(state.clone())),
            presence: Arc::new(PresenceDb::new(state.clone())),
            registry: Arc::new(MemoryPresence::new()),
            fallback: Arc::new(FallbackSms::new(state.clone())),
            pending: Arc::new(PendingMtDb::new(state.clone())),
        };
        let mut config = GatewayConfig::loopback("gw-test");
        config.quic_listen = None;
        config.http_listen = None;
        config.shards = 2;
        config.rate_per_sec = 10_000.0;
        config.rate_burst = 10_000;
        tweak(&mut config);
        let gw = Gateway::bind(config, deps).await.unwrap();
        let tcp = gw.local_addrs().tcp.unwrap();
        let http = gw.local_addrs().http;
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = vec![tokio::spawn(gw.run(until(stopped.clone())))];
        let engine = EngineConfig {
            batch_delay_ms: 5,
            retry_initial_ms: 20,
            drain_timeout_ms: 2_000,
            ..EngineConfig::default()
        };
        for (topics, group) in [
            (Topics::default(), "ingest".to_string()),
            (
                rtc::reply_topics(&Topics::default()),
                rtc::REPLY_GROUP.into(),
            ),
        ] {
            let sink = Arc::new(ControlPlaneSink::new(state.clone()));
            let config = EngineConfig {
                group,
                ..engine.clone()
            };
            let b: Arc<dyn Bus> = Arc::new(bus.clone());
            let shutdown = until(stopped.clone());
            let ts = tsdb.clone();
            tasks.push(tokio::spawn(async move {
                ingest::engine::run(b, topics, ts, sink, config, shutdown)
                    .await
                    .unwrap();
            }));
        }
        Self {
            server,
            bus,
            tcp,
            http,
            stop,
            tasks,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }

    /// A product the unit simulator can be: RTC and DCM enabled, disabled.
    async fn product(&self, imei: &str, rtc: bool) {
        self.server.seed_unit(imei, &key(imei), rtc, true).await;
    }

    async fn unit(&self, imei: &str) -> UnitConn {
        let mut conn = UnitConn::tcp(self.tcp).await.unwrap();
        conn.handshake(Some(imei), &key(imei)).await.unwrap();
        conn
    }

    /// Rows of `table` for `imei`, oldest first, as the API would show them.
    async fn rows(&self, table: &str, imei: &str) -> Vec<Map<String, Json>> {
        let t = self.server.catalogue().table(table).unwrap();
        let cols: Vec<&Column> = t.readable_columns().collect();
        let mut sel = Query::select();
        for c in &cols {
            sel.column(Alias::new(&c.name));
        }
        sel.from(Alias::new(table))
            .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
            .order_by(Alias::new(&t.primary_key().name), Order::Asc);
        self.server.state.db.fetch_all(&sel, &cols).await.unwrap()
    }

    async fn product_row(&self, imei: &str) -> Map<String, Json> {
        self.rows("product", imei).await.remove(0)
    }

    /// Waits until `f` holds for the rows of `table`.
    async fn wait_rows(
        &self,
        what: &str,
        table: &str,
        imei: &str,
        f: impl Fn(&[Map<String, Json>]) -> bool,
    ) -> Vec<Map<String, Json>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rows = self.rows(table, imei).await;
            if f(&rows) {
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {table} = {rows:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET /v1/products/<imei>/data?fields=<fields>` until `f` accepts the
    /// response's `data` rendered as JSON text, each wait with its own deadline.
    async fn wait_data(&self, what: &str, imei: &str, fields: &str, f: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let b = self
                .server
                .get_ok(&format!("/v1/products/{imei}/data?fields={fields}"))
                .await;
            if f(&b["data"].to_string()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many points of each field of `fields` (comma-separated) the unit has in the time
    /// series, in the order asked, with the response for messages.
    async fn point_counts(&self, imei: &str, fields: &str) -> (Vec<usize>, Json) {
        let b = self
            .server
            .get_ok(&format!(
                "/v1/products/{imei}/data?fields={fields}&start=2020-01-01T00:00:00Z&end=2040-01-01T00:00:00Z&limit=0"
            ))
            .await;
        let counts = fields
            .split(',')
            .map(|field| {
                // Rows are `[value, time]` per time any asked field has; null where this one
                // has none.
                b["data"][field]
                    .as_array()
                    .unwrap_or_else(|| panic!("no {field} in {b}"))
                    .iter()
                    .filter(|p| !p[0].is_null())
                    .count()
            })
            .collect();
        (counts, b)
    }

    /// `SELECT COUNT(*) FROM <table> WHERE <where>`.
    async fn count(&self, table: &str, condition: sea_query::SimpleExpr) -> i64 {
        let sql = Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .from(Alias::new(table))
            .and_where(condition)
            .to_owned();
        self.server.state.db.fetch_i64(&sql).await.unwrap()
    }
}

/// The next MT frame the unit receives.
async fn next_mt(conn: &mut UnitConn) -> Vec<u8> {
    tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("an MT in time")
        .unwrap()
        .expect("connection open")
        .to_vec()
}

async fn reply(conn: &mut UnitConn, id: CorrelationId, balance: Option<i64>) {
    conn.send_mo(&MoMessage::Reply(MtReply {
        correlation_id: id,
        result: ReplyResult::Ok,
        info: None,
        balance,
        expected_expiry: None,
    }))
    .await
    .unwrap();
}

/// A cell report of one cell, `cid`, made at `time`.
fn cell_report(time: u64, cid: u32) -> Vec<u8> {
    let cells = [Cell {
        lac: 1001,
        cid,
        signal: -71,
        mcc: None,
        mnc: None,
    }];
    codec::mo_to_vec(&MoMessage::CellReport(CellReport {
        time: Some(time),
        mcc: Some(639),
        mnc: Some(2),
        cells: Seq::new(&cells),
        ..Default::default()
    }))
}

fn status(enabled: bool, balance: Option<i64>) -> StatusReport<'static> {
    StatusReport {
        time: Some(sim::now_s()),
        enabled: Some(enabled),
        tamper_enabled: Some(false),
        tamper_triggered: Some(false),
        software_version: None,
        energy_limit: None,
        capacity_limit: None,
        balance,
        expected_expiry: None,
    }
}

async fn enable_and_payment_reach_the_unit_and_its_answers_the_database(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874101";
    rig.product(imei, true).await;
    let mut unit = rig.unit(imei).await;
    rig.wait_rows("online record", "rtc_connection_history", imei, |r| {
        r.len() == 1
            && r[0]["connection_status"] == "online"
            && r[0]["connection_status_reason"] == "message-received"
    })
    .await;

    // Enable through the API: the unit gets a status update asking for it.
    rig.server.unit_action(Method::PUT, imei, "enable").await;
    let p = rig.product_row(imei).await;
    assert_eq!(
        (
            p["current_enable_flag"].clone(),
            p["desired_enable_flag"].clone()
        ),
        (json!(false), json!(true))
    );
    let mt = next_mt(&mut unit).await;
    let MtMessage::StatusUpdate(su) = decode_mt(&mt).unwrap() else {
        panic!("expected a status update, got {:?}", decode_mt(&mt));
    };
    assert_eq!(su.enabled, Some(true));
    assert_eq!(su.tamper_enabled, Some(false));
    // The unit applies it, confirms the MT and reports its new state.
    reply(&mut unit, su.correlation_id, None).await;
    unit.send_mo(&MoMessage::StatusReport(status(true, None)))
        .await
        .unwrap();
    let history = rig
        .wait_rows("enabled by the unit", "enable_history", imei, |r| {
            r.last()
                .is_some_and(|h| h["current_enable_state"] == "enabled")
        })
        .await;
    let states: Vec<_> = history
        .iter()
        .map(|h| {
            (
                h["prev_enable_state"].clone(),
                h["current_enable_state"].clone(),
                h["user"].clone(),
            )
        })
        .collect();
    assert_eq!(
        states[states.len() - 2..],
        [
            (
                json!("disabled"),
                json!("pending_enabled"),
                json!(common::ADMIN)
            ),
            (json!("pending_enabled"), json!("enabled"), json!("unit")),
        ]
    );
    let p = rig.product_row(imei).await;
    assert_eq!(p["current_enable_flag"], true);
    assert!(p["latest_rtc_mo_status_report_time"].is_string());
    assert!(p["latest_rtc_mt_status_update_time"].is_string());
    let reference = su.correlation_id.to_string();
    rig.wait_rows("delivered", "rtc_message_history", imei, |r| {
        r.iter().any(|m| {
            m["message_reference"] == reference.as_str() && m["delivery_status"] == "delivered"
        })
    })
    .await;

    // A payment command through the API: the unit gets it, applies it, acknowledges.
    let sent = r#"smartsolar_dcm_payment_command_events_total{event="sent"}"#;
    let acked = r#"smartsolar_dcm_payment_command_events_total{event="acknowledged"}"#;
    common::metrics();
    let (sent_before, acked_before) = (common::metric(sent), common::metric(acked));
    rig.server
        .post_created(
            &format!("/v1/products/{imei}/add_payment_command"),
            json!({"value": 86_400, "category": "payment", "transaction_id": "tx-rtc-1"}),
        )
        .await;
    let mut got_payment = false;
    while !got_payment {
        let mt = next_mt(&mut unit).await;
        match decode_mt(&mt).unwrap() {
            MtMessage::PaymentCommands(p) => {
                let cmds: Vec<_> = p
                    .commands
                    .iter()
                    .map(|c| (c.category.as_str(), c.value, c.transaction_id.to_owned()))
                    .collect();
                assert_eq!(cmds, [("payment", 86_400, "tx-rtc-1".to_owned())]);
                reply(&mut unit, p.correlation_id, Some(86_400)).await;
                got_payment = true;
            }
            other => reply(&mut unit, other.correlation_id(), None).await,
        }
    }
    let commands = rig
        .wait_rows("acknowledged", "payment_command", imei, |r| {
            r.len() == 1 && r[0]["status"] == "acknowledged"
        })
        .await;
    assert_eq!(commands[0]["transaction_id"], "tx-rtc-1");
    // Counted after commit: put on the bus, then confirmed by the unit. (The
    // other backend's test may count too, hence at least one more.)
    assert!(
        common::metric(sent) >= sent_before + 1.0,
        "sent not counted"
    );
    assert!(
        common::metric(acked) >= acked_before + 1.0,
        "ack not counted"
    );
    assert!(
        common::metric(r#"smartsolar_db_query_duration_seconds_count{op="commit"}"#) > 0.0,
        "commits not timed"
    );
    let b = rig
        .server
        .get_ok(&format!("/v1/products/{imei}/balance_and_pending_payments"))
        .await;
    assert_eq!(b["data"]["balance"], 86_400);
    assert_eq!(b["data"]["pending_payment_commands"], json!([]));
    // The balance is in the time-series store too.
    rig.wait_data("balance point", imei, "balance", |d| d.contains("86400"))
        .await;

    // The unit goes away: an offline record, and the product points at it.
    unit.close().await.unwrap();
    let rows = rig
        .wait_rows("offline record", "rtc_connection_history", imei, |r| {
            r.last()
                .is_some_and(|h| h["connection_status"] == "offline")
        })
        .await;
    let last = rows.last().unwrap();
    assert_eq!(last["connection_status_reason"], "unknown");
    let p = rig.product_row(imei).await;
    assert_eq!(
        p["latest_rtc_connection_history_id"],
        last["rtc_connection_history_id"]
    );
    rig.stop().await;
}

async fn reports_telemetry_cells_and_dead_letters(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874102";
    rig.product(imei, true).await;
    let mut dead = rig
        .bus
        .subscribe(&["RTC-MO.Dead-Letter"], "test")
        .await
        .unwrap();
    let mut unit = rig.unit(imei).await;

    // Telemetry: readable through the product data API.
    let now = sim::now_s();
    unit.send_raw(&sim::telemetry(now, 7)).await.unwrap();
    rig.wait_data("telemetry", imei, "voltage,pulse_count", |d| {
        d.contains("12.9") && d.contains('7')
    })
    .await;

    // A status report saying the tamper switch is tripped: a
    // `tamper_triggered` point the tamper alert rule reads.
    unit.send_mo(&MoMessage::StatusReport(StatusReport {
        tamper_triggered: Some(true),
        ..status(false, None)
    }))
    .await
    .unwrap();
    rig.wait_data("tamper point", imei, "tamper_triggered", |d| {
        d.contains("[1,")
    })
    .await;

    // A cell report with a position, then one without: two connection rows.
    let cells = [Cell {
        lac: 1001,
        cid: 2002,
        signal: -71,
        mcc: None,
        mnc: None,
    }];
    let located = CellReport {
        time: Some(now),
        mcc: Some(639),
        mnc: Some(2),
        cells: Seq::new(&cells),
        latitude: Some(-1.2921),
        longitude: Some(36.8219),
        error_radius: Some(120),
        ..Default::default()
    };
    unit.send_mo(&MoMessage::CellReport(located)).await.unwrap();
    unit.send_mo(&MoMessage::CellReport(CellReport {
        latitude: None,
        longitude: None,
        ..located
    }))
    .await
    .unwrap();
    let rows = rig
        .wait_rows("two connection rows", "connection", imei, |r| r.len() == 2)
        .await;
    assert_eq!(rows[0]["location_failed_flag"], false);
    assert_eq!(rows[0]["latitude"], "-1.292100");
    assert_eq!(rows[0]["cell_1_cid"], 2002);
    assert_eq!(rows[0]["mcc"], 639);
    assert_eq!(rows[1]["location_failed_flag"], true);
    assert_eq!(rows[1]["latitude"], Json::Null);
    let p = rig.product_row(imei).await;
    assert_eq!(p["latest_connection_id"], rows[1]["connection_id"]);
    assert_eq!(p["latest_connection_location_id"], rows[0]["connection_id"]);

    // An event log: in the MO history like every MO, processed.
    unit.send_raw(&sim::event_log(now, "Above RV"))
        .await
        .unwrap();
    let history = rig
        .wait_rows("event log history", "rtc_mo_message_history", imei, |r| {
            r.iter().any(|h| {
                h["message_json"]
                    .as_str()
                    .is_some_and(|j| j.contains("Above RV"))
                    && h["processing_status"] == "processed"
            })
        })
        .await;
    assert!(
        history.len() >= 4,
        "telemetry, 2 cell reports, event log: {history:#?}"
    );

    // A malformed MO: a dead letter, the session goes on.
    unit.send_raw(&[0x82, 0x18, 99, 0xa0]).await.unwrap();
    let d = tokio::time::timeout(WAIT, dead.recv())
        .await
        .unwrap()
        .unwrap();
    let letter: Json = serde_json::from_slice(&d.payload).unwrap();
    assert!(
        letter["reason"].as_str().unwrap().contains("99"),
        "{letter}"
    );
    dead.commit(&d).await.unwrap();

    // A well-formed MO the database refuses (a final balance for a transaction the
    // ledger does not know, on the reply topic): a dead letter too, and a failed
    // history row.
    let mut reply_dead = rig
        .bus
        .subscribe(&["RTC-MT.Reply.Dead-Letter"], "test")
        .await
        .unwrap();
    unit.send_mo(&MoMessage::FinalBalance(FinalBalance {
        correlation_id: CorrelationId([7; 16]),
        transaction_id: "no-such-transaction",
        final_balance: 10,
        total_added: 10,
    }))
    .await
    .unwrap();
    let d = tokio::time::timeout(WAIT, reply_dead.recv())
        .await
        .unwrap()
        .unwrap();
    let letter: Json = serde_json::from_slice(&d.payload).unwrap();
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("unknown transaction_id 'no-such-transaction'"),
        "{letter}"
    );
    rig.wait_rows("failed history row", "rtc_mo_message_history", imei, |r| {
        r.iter().any(|h| {
            h["processing_status"] == "failed"
                && h["processing_status_info"]
                    .as_str()
                    .is_some_and(|i| i.contains("no-such-transaction"))
        })
    })
    .await;

    // At-least-once delivery: an MO delivered again (same correlation id) after a
    // newer one changes nothing twice. A says "on", B says "off", then A again.
    let publish = |id: u8, enabled: bool| {
        let bus = rig.bus.clone();
        async move {
            let msg = codec::mo_to_vec(&MoMessage::StatusReport(status(enabled, None)));
            let env = codec::encode_bus_envelope(&codec::BusEnvelope {
                imei,
                correlation_id: CorrelationId([id; 16]),
                received_at_ms: chrono::Utc::now().timestamp_millis(),
                transport: codec::Transport::Tcp,
                ident: None,
                message: &msg,
                mo_number: None,
            });
            bus.publish("RTC-MO", imei.as_bytes(), &env).await.unwrap();
        }
    };
    publish(0xa1, true).await;
    publish(0xb2, false).await;
    publish(0xa1, true).await;
    let a = CorrelationId([0xa1; 16]).to_string();
    rig.wait_rows(
        "both reports recorded",
        "rtc_mo_message_history",
        imei,
        |r| {
            r.iter().any(|h| {
                h["message_json"]
                    .as_str()
                    .is_some_and(|j| j.contains("1: false"))
            })
        },
    )
    .await;
    // Let the redelivered A through the engine too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_unit: Vec<_> = rig
        .rows("enable_history", imei)
        .await
        .into_iter()
        .filter(|h| h["user"] == "unit")
        .map(|h| h["current_enable_state"].clone())
        .collect();
    assert_eq!(by_unit, [json!("pending_disabled"), json!("disabled")]);
    assert_eq!(rig.product_row(imei).await["current_enable_flag"], false);
    let sql = Query::select()
        .expr(Expr::col(Alias::new("rtc_mo_message_history_id")).count())
        .from(Alias::new("rtc_mo_message_history"))
        .and_where(Expr::col(Alias::new("correlation_id")).eq(a.as_str()))
        .to_owned();
    assert_eq!(rig.server.state.db.fetch_i64(&sql).await.unwrap(), 1);
    unit.close().await.unwrap();
    rig.stop().await;
}

async fn unknown_units_are_refused_and_offline_units_get_a_wakeup(backend: Backend) {
    let rig = Rig::start(backend, |c| {
        c.mt.ack_timeout_ms = 50;
        c.mt.backoff_max_ms = 100;
        c.mt.max_attempts = 2;
    })
    .await;
    let imei = "013777946874103";
    rig.product(imei, true).await;

    // An IMEI the database does not know, and a wrong key: refused.
    let mut conn = UnitConn::tcp(rig.tcp).await.unwrap();
    let r = conn
        .handshake(Some("013777946874999"), &key("013777946874999"))
        .await;
    assert!(matches!(r, Err(SimError::Refused(_))), "{r:?}");
    let mut conn = UnitConn::tcp(rig.tcp).await.unwrap();
    let r = conn.handshake(Some(imei), "xxxxxxxxxxxxxxxxxxxxxxxx").await;
    assert!(matches!(r, Err(SimError::Refused(_))), "{r:?}");
    assert!(rig.rows("rtc_connection_history", imei).await.is_empty());

    // A sync for the offline unit: retried, then the fallback SMS.
    let b = rig.server.unit_action(Method::POST, imei, "sync").await;
    assert_eq!(b["message"], "sync request successfully sent");
    rig.wait_rows("fallback row", "rtc_fallback_message_history", imei, |r| {
        r.len() == 1
    })
    .await;
    let sms = rig
        .wait_rows("wakeup sms", "sms_history", imei, |r| r.len() == 1)
        .await;
    assert_eq!(sms[0]["message"], "WAKEUP");
    assert_eq!(sms[0]["trigger"], "wakeup");

    // The unit connects after the SMS: the queued sync reaches it.
    let mut unit = rig.unit(imei).await;
    let mt = next_mt(&mut unit).await;
    assert!(matches!(decode_mt(&mt).unwrap(), MtMessage::Sync(_)));
    unit.answer(&mt, ReplyResult::Ok).await.unwrap();
    rig.wait_rows("sync delivered", "rtc_message_history", imei, |r| {
        r.len() == 1 && r[0]["delivery_status"] == "delivered"
    })
    .await;
    unit.close().await.unwrap();
    rig.stop().await;
}

async fn rtc_endpoints(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874104";
    let plain = "013777946874105";
    rig.product(imei, true).await;
    rig.product(plain, false).await;
    let mut unit = rig.unit(imei).await;
    rig.wait_rows("online", "rtc_connection_history", imei, |r| r.len() == 1)
        .await;

    // command_request: the unit runs it and its output is recorded.
    let b = rig
        .server
        .post_ok(
            &format!("/v1/products/{imei}/command_request"),
            json!({"command": "atc 60 AT+CPOL=?;+COPS=?"}),
        )
        .await;
    assert_eq!(b["message"], "command successfully sent");
    let mt = next_mt(&mut unit).await;
    unit.answer(&mt, ReplyResult::Ok).await.unwrap();
    rig.wait_rows("command output", "rtc_message_history", imei, |r| {
        r.iter().any(|m| {
            m["delivery_status"] == "delivered"
                && m["delivery_status_info"] == "output: OK atc 60 AT+CPOL=?;+COPS=?"
        })
    })
    .await;

    // status_update: the desired state now.
    rig.server
        .unit_action(Method::POST, imei, "status_update")
        .await;
    let mt = next_mt(&mut unit).await;
    let MtMessage::StatusUpdate(su) = decode_mt(&mt).unwrap() else {
        panic!("a status update")
    };
    assert_eq!(su.enabled, Some(false));
    unit.answer(&mt, ReplyResult::Ok).await.unwrap();

    // force_connection: a sync for an RTC unit, a WAKEUP SMS for another.
    let b = rig
        .server
        .unit_action(Method::POST, imei, "force_connection")
        .await;
    assert_eq!(b["message"], "Force connection request sent");
    let mt = next_mt(&mut unit).await;
    assert!(matches!(decode_mt(&mt).unwrap(), MtMessage::Sync(_)));
    unit.answer(&mt, ReplyResult::Ok).await.unwrap();
    let (s, b) = rig
        .server
        .call(
            Method::POST,
            &format!("/v1/products/{plain}/force_connection"),
            None,
        )
        .await;
    // No SMS provider is configured here: recorded, and answered, as not sent.
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let sms = rig.rows("sms_history", plain).await;
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0]["status"], "NotSent");

    // RTC-only endpoints refuse other units; bad bodies are 400s; unknown units 404.
    for path in ["sync", "status_update"] {
        rig.server
            .call_expecting(
                StatusCode::BAD_REQUEST,
                Method::POST,
                &format!("/v1/products/{plain}/{path}"),
                None,
            )
            .await;
    }
    let (s, _) = rig
        .server
        .post(&format!("/v1/products/{imei}/command_request"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    rig.server
        .call_expecting(
            StatusCode::NOT_FOUND,
            Method::POST,
            "/v1/products/000000000000000/sync",
            None,
        )
        .await;

    // rtc_online_status by hand: reason user-request.
    let b = rig
        .server
        .post_ok(
            &format!("/v1/products/{imei}/rtc_online_status"),
            json!({"status": "offline"}),
        )
        .await;
    assert_eq!(b["message"], "RTC online status set");
    let rows = rig.rows("rtc_connection_history", imei).await;
    let last = rows.last().unwrap();
    assert_eq!(last["connection_status"], "offline");
    assert_eq!(last["connection_status_reason"], "user-request");
    let (s, _) = rig
        .server
        .post(
            &format!("/v1/products/{imei}/rtc_online_status"),
            json!({"status": "sleeping"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Permissions: an OVERVIEW user may not send anything.
    let token = rig
        .server
        .user("viewer@example.com", "OVERVIEW", "GLOBAL", None)
        .await;
    let (s, _) = rig
        .server
        .call_as(
            &token,
            Method::POST,
            &format!("/v1/products/{imei}/sync"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    unit.close().await.unwrap();
    rig.stop().await;
}

/// A pending `energy_limit` parameter becomes active when the unit reports
/// it runs that limit; a report of another value leaves it pending.
async fn a_reported_energy_limit_confirms_the_pending_parameter(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874109";
    rig.product(imei, true).await;
    let type_id = rig
        .server
        .seed(
            "parameter_type",
            json!({"name": "energy_limit", "data_type": "float", "repeatable": false, "setting": true}),
        )
        .await;
    rig.server
        .seed(
            "product_parameter",
            json!({"product_imei": imei, "parameter_type_id": type_id, "status": "pending",
                   "value": "42.5", "date_removed": null}),
        )
        .await;
    let mut unit = rig.unit(imei).await;
    let report = |limit: f64| StatusReport {
        energy_limit: Some(limit),
        ..status(false, None)
    };
    unit.send_mo(&MoMessage::StatusReport(report(40.0)))
        .await
        .unwrap();
    unit.send_mo(&MoMessage::StatusReport(report(42.5)))
        .await
        .unwrap();
    let rows = rig
        .wait_rows("the parameter confirmed", "product_parameter", imei, |r| {
            r.len() == 1 && r[0]["status"] == "active"
        })
        .await;
    assert_eq!(rows[0]["value"], json!("42.5"));
}

/// Issue 16, item 4: a reply whose MT is unknown is dead-lettered at once on
/// `RTC-MT.Reply.Dead-Letter` (queue `RTC-MT.Reply`), and the payment replies of
/// eight other units, sent right behind it, are applied promptly. (It used to be
/// retried for 30 s in its engine shard, holding the units of that shard.)
async fn an_unmatched_reply_stalls_no_other_unit(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let bad = "013777946874200";
    let good: Vec<String> = (1..=8).map(|i| format!("0137779468742{i:02}")).collect();
    // Make sure the attack is real: some good unit shares the bad unit's engine shard.
    let shards = EngineConfig::default().shards as u32;
    assert!(
        good.iter().any(|i| bus::partition_for(i.as_bytes(), shards)
            == bus::partition_for(bad.as_bytes(), shards)),
        "no good unit shares the unknown reply's shard"
    );
    let mut reply_dead = rig
        .bus
        .subscribe(&["RTC-MT.Reply.Dead-Letter"], "test")
        .await
        .unwrap();
    rig.product(bad, true).await;
    let mut bad_unit = rig.unit(bad).await;
    let mut units = Vec::new();
    for imei in &good {
        rig.product(imei, true).await;
        units.push(rig.unit(imei).await);
    }
    // A payment command for each good unit; each receives it and holds its reply.
    let mut payments = Vec::new();
    for (imei, unit) in good.iter().zip(units.iter_mut()) {
        rig.server
            .post_created(
                &format!("/v1/products/{imei}/add_payment_command"),
                json!({"value": 3_600, "category": "payment",
                            "transaction_id": format!("tx-{imei}")}),
            )
            .await;
        loop {
            match decode_mt(&next_mt(unit).await).unwrap() {
                MtMessage::PaymentCommands(p) => {
                    payments.push(p.correlation_id);
                    break;
                }
                other => reply(unit, other.correlation_id(), None).await,
            }
        }
    }
    // The unknown reply first, and a moment for the engine to take it up.
    let unknown = CorrelationId([0x5a; 16]);
    reply(&mut bad_unit, unknown, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    for (unit, id) in units.iter_mut().zip(&payments) {
        reply(unit, *id, Some(3_600)).await;
    }
    for imei in &good {
        rig.wait_rows("acknowledged", "payment_command", imei, |r| {
            r.len() == 1 && r[0]["status"] == "acknowledged"
        })
        .await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "8 payment acknowledgements took {took:?} behind an unknown reply"
    );

    // The unknown reply: a dead letter of the reply queue, naming the correlation id,
    // and a failed MO history row.
    let d = tokio::time::timeout(WAIT, reply_dead.recv())
        .await
        .expect("a dead letter in time")
        .unwrap();
    let letter: Json = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(letter["queue_name"], "RTC-MT.Reply", "{letter}");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains(&unknown.to_string()) && reason.contains(bad),
        "{letter}"
    );
    reply_dead.commit(&d).await.unwrap();
    rig.wait_rows("failed reply row", "rtc_mo_message_history", bad, |r| {
        r.iter().any(|h| h["processing_status"] == "failed")
    })
    .await;
    bad_unit.close().await.unwrap();
    for u in units {
        u.close().await.unwrap();
    }
    rig.stop().await;
}

/// Issue 16, item 6: `GET /v1/rtc_message_history` lists every MT of a unit with
/// its delivery state (NULL while the unit has not answered), scoped like products:
/// an ENTITY user sees the MT of its own units and none of another entity's.
async fn mt_history_is_listed_with_its_delivery_state(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874300";
    let stranger = "013777946874301";
    rig.product(imei, true).await;
    rig.product(stranger, true).await;
    let mine = rig
        .server
        .seed("entity", json!({"name": "Own Solar"}))
        .await
        .as_i64()
        .unwrap();
    let theirs = rig
        .server
        .seed("entity", json!({"name": "Their Solar"}))
        .await
        .as_i64()
        .unwrap();
    common::link(&rig.server, imei, mine).await;
    common::link(&rig.server, stranger, theirs).await;
    let mut unit = rig.unit(imei).await;

    // A payment the unit confirms, then an enable it never answers.
    rig.server
        .post_created(
            &format!("/v1/products/{imei}/add_payment_command"),
            json!({"value": 60, "category": "payment", "transaction_id": "tx-history"}),
        )
        .await;
    let payment = loop {
        match decode_mt(&next_mt(&mut unit).await).unwrap() {
            MtMessage::PaymentCommands(p) => {
                reply(&mut unit, p.correlation_id, Some(60)).await;
                break p.correlation_id.to_string();
            }
            other => reply(&mut unit, other.correlation_id(), None).await,
        }
    };
    rig.wait_rows("delivered", "rtc_message_history", imei, |r| {
        r.iter().any(|m| {
            m["message_reference"] == payment.as_str() && m["delivery_status"] == "delivered"
        })
    })
    .await;
    rig.server.unit_action(Method::PUT, imei, "enable").await;
    let frame = next_mt(&mut unit).await;
    let MtMessage::StatusUpdate(enable) = decode_mt(&frame).unwrap() else {
        panic!("expected the enable status update");
    };
    let enable = enable.correlation_id.to_string();
    // An MT for the other entity's unit (offline: it stays undelivered).
    rig.server
        .unit_action(Method::PUT, stranger, "enable")
        .await;

    // Through the API, newest first, as the console asks.
    let q = json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}],
                   "order_by": [{"field": "rtc_message_history_id", "direction": "desc"}]});
    let (s, body) = rig
        .server
        .list_as(&rig.server.token, "/v1/rtc_message_history", q.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rows = body["objects"].as_array().unwrap();
    let state = |reference: &str| {
        rows.iter()
            .find(|r| r["message_reference"] == reference)
            .unwrap_or_else(|| panic!("MT {reference} not listed: {body}"))["delivery_status"]
            .clone()
    };
    assert_eq!(state(&payment), "delivered");
    assert_eq!(state(&enable), Json::Null, "the unit has not answered");
    assert_eq!(
        rows[0]["message_reference"],
        enable.as_str(),
        "newest first"
    );
    assert!(rows[0]["message_json"]
        .as_str()
        .is_some_and(|j| j.contains("status_update")));
    // One row by id.
    let id = rows[0]["rtc_message_history_id"].as_i64().unwrap();
    let one = rig
        .server
        .get_ok(&format!("/v1/rtc_message_history/{id}"))
        .await;
    assert_eq!(one["message_reference"], enable.as_str());
    // Read-only: the unit's answers write delivery states, not API callers.
    let (s, b) = rig
        .server
        .put(
            &format!("/v1/rtc_message_history/{id}"),
            json!({"delivery_status": "delivered"}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {b}");

    // Scoped like products.
    let token = rig
        .server
        .user("own@example.com", "OVERVIEW", "ENTITY", Some(mine))
        .await;
    let all = json!({"order_by": [{"field": "rtc_message_history_id", "direction": "asc"}]});
    let (s, body) = rig
        .server
        .list_as(&token, "/v1/rtc_message_history", all)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let imeis: std::collections::BTreeSet<_> = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["product_imei"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(imeis, [imei.to_owned()].into(), "{body}");
    let q = json!({"filters": [{"name": "product_imei", "op": "eq", "val": stranger}]});
    let (s, body) = rig
        .server
        .list_as(&rig.server.token, "/v1/rtc_message_history", q)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let theirs_id = body["objects"][0]["rtc_message_history_id"]
        .as_i64()
        .expect("the stranger's MT");
    let (s, body) = rig
        .server
        .get_as(&token, &format!("/v1/rtc_message_history/{theirs_id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    unit.close().await.unwrap();
    rig.stop().await;
}

/// The database's record of what a unit must still get (issue 16), on both backends: a
/// payment command the record has no MT for is recorded afresh when the unit connects; the
/// record is read again unchanged (same correlation ids, no new rows) until the unit answers;
/// then it is empty. A legacy HTTP unit's poll carries what was recorded but never put on the
/// bus (as after a crash that lost the gateway's queue).
async fn the_record_of_pending_commands_reaches_units_that_connect_or_poll(backend: Backend) {
    use base64::Engine as _;
    use gateway::PendingMt;
    let rig = Rig::start(backend, |c| {
        c.http_listen = Some(([127, 0, 0, 1], 0).into())
    })
    .await;
    let state = rig.server.state.clone();
    let record = PendingMtDb::new(state.clone());
    let (tcp_imei, http_imei) = ("013777946874201", "013777946874202");
    rig.product(tcp_imei, true).await;
    rig.product(http_imei, true).await;
    // A pending payment with no MT (as the ledger holds it after an upgrade).
    rig.server
        .seed(
            "payment_command",
            json!({"product_imei": tcp_imei, "value": 3600, "category": "payment",
                "void": false, "status": "pending", "transaction_id": "rec-1"}),
        )
        .await;
    let first = record.pending(tcp_imei).await;
    let types: Vec<&str> = first
        .iter()
        .map(|c| decode_mt(&c.message).unwrap().message_type().as_str())
        .collect();
    assert_eq!(
        types,
        ["status_update", "payment_commands"],
        "in push order"
    );
    assert_eq!(
        record.pending(tcp_imei).await,
        first,
        "read again, the same commands"
    );
    assert_eq!(rig.rows("rtc_message_history", tcp_imei).await.len(), 2);

    let mut unit = rig.unit(tcp_imei).await;
    for expected in &first {
        let frame = next_mt(&mut unit).await;
        assert_eq!(frame, expected.message, "the recorded bytes, in order");
        let balance =
            matches!(decode_mt(&frame).unwrap(), MtMessage::PaymentCommands(_)).then_some(3600);
        reply(&mut unit, expected.correlation_id, balance).await;
    }
    rig.wait_rows("acknowledged", "payment_command", tcp_imei, |r| {
        r.iter().all(|c| c["status"] == "acknowledged")
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !record.pending(tcp_imei).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "record not settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Recorded, never enqueued: the HTTP unit's poll still gets it.
    let sent = rtc::mt::record_pending(&state, http_imei).await.unwrap();
    assert_eq!(
        sent.len(),
        1,
        "a status update (no payments pending): {sent:?}"
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{http_imei}:{}", key(http_imei)))
    );
    let http = rig.http.unwrap();
    let (s, body) = sim::http_request(http, "GET", "/rc_data", Some(&auth), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let settings: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(settings["enabled"], json!(false), "{settings}");
    // Handed over HTTP (the gateway's outcome): the status update leaves the record.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !record.pending(http_imei).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "status update not settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.stop().await;
}

/// Protocol v2 (§8.5): a unit whose acknowledgements were lost sends its window again after
/// reconnecting; every MO of it is applied once: one history row each, one enable change,
/// one connection row, and one telemetry, balance and tamper point each in the time series
/// (the resend comes later, so points keyed by receipt time must not move or double).
async fn a_v2_units_resent_window_is_applied_once(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874120";
    rig.product(imei, true).await;
    let now = sim::now_s();
    let messages = [
        sim::telemetry(now - 60, 4242),
        codec::mo_to_vec(&MoMessage::StatusReport(StatusReport {
            tamper_triggered: Some(true),
            ..status(true, Some(432_000))
        })),
        cell_report(now, 2002),
        sim::event_log(now, "Resent once"),
    ];
    // The same boot id and numbering both times: the second connection is the unit that
    // never saw the acknowledgements of the first.
    let window = || {
        let mut w = sim::MoWindow::new(0x5eed, 16);
        for m in &messages {
            w.push(m.clone()).unwrap();
        }
        w
    };
    for round in 0..2 {
        let mut conn = UnitConn::tcp(rig.tcp).await.unwrap();
        let welcome = conn
            .handshake_v2(Some(imei), &key(imei), window())
            .await
            .unwrap();
        assert_eq!(welcome.version, 2);
        if round == 1 {
            // A new message after the resent window: ingest keeps one unit's MOs in order,
            // so once its row is there the resends have been through every sink step.
            assert_eq!(
                conn.send_message(&sim::event_log(now, "marker"))
                    .await
                    .unwrap(),
                5
            );
        }
        assert!(
            conn.await_acks(WAIT).await,
            "round {round}: the window is acknowledged"
        );
        rig.wait_rows("history rows", "rtc_mo_message_history", imei, |r| {
            r.len() >= messages.len() + round
        })
        .await;
        conn.close().await.unwrap();
    }

    let history = rig.rows("rtc_mo_message_history", imei).await;
    assert_eq!(history.len(), messages.len() + 1, "{history:#?}");
    for (i, h) in history.iter().enumerate() {
        assert_eq!(h["processing_status"], "processed", "row {i}: {h:?}");
        // Named by (imei, boot, seq), the id both copies carried.
        let id = codec::ack::mo_correlation_id(imei, 0x5eed, i as u64 + 1).to_string();
        let rows = rig
            .count(
                "rtc_mo_message_history",
                Expr::col(Alias::new("correlation_id")).eq(id.as_str()),
            )
            .await;
        assert_eq!(rows, 1, "seq {}", i + 1);
    }
    let by_unit = rig
        .rows("enable_history", imei)
        .await
        .into_iter()
        .filter(|h| h["user"] == "unit")
        .count();
    assert_eq!(by_unit, 1, "one enable change from the one status report");
    assert_eq!(rig.rows("connection", imei).await.len(), 1);
    let (points, b) = rig
        .point_counts(imei, "pulse_count,balance,tamper_triggered")
        .await;
    assert_eq!(
        points,
        [1, 1, 1],
        "one pulse_count, balance, tamper_triggered: {b}"
    );
    assert_eq!(b["data"]["pulse_count"][0][0], json!(4242), "{b}");
    rig.stop().await;
}

/// Issue 16: a unit offline for longer than the retention of `rtc_mo_applied` resends its
/// unacknowledged window after the rows that deduplicated it were pruned. The unit's pruned
/// mark still recognises every MO of it: nothing is applied twice (no second connection row,
/// no second balance or tamper point, no dedupe row left behind). A new MO of the same boot
/// numbered above the mark is applied, and so is a version-1 MO (no number).
async fn a_v2_resend_after_its_dedupe_rows_were_pruned_is_applied_once(backend: Backend) {
    let rig = Rig::start(backend, |_| {}).await;
    let imei = "013777946874121";
    rig.product(imei, true).await;
    let now = sim::now_s();
    let cell_report = |cid| cell_report(now, cid);
    // seq 1: status_report and balance steps; seq 2: cell_report; seq 3: no step.
    let messages = [
        codec::mo_to_vec(&MoMessage::StatusReport(StatusReport {
            tamper_triggered: Some(true),
            ..status(true, Some(432_000))
        })),
        cell_report(2002),
        sim::event_log(now, "Before a long time offline"),
    ];
    let boot = 0x0ff1;
    let window = || {
        let mut w = sim::MoWindow::new(boot, 16);
        for m in &messages {
            w.push(m.clone()).unwrap();
        }
        w
    };
    let of_unit = || Expr::col(Alias::new("product_imei")).eq(imei);

    let mut conn = UnitConn::tcp(rig.tcp).await.unwrap();
    conn.handshake_v2(Some(imei), &key(imei), window())
        .await
        .unwrap();
    assert!(conn.await_acks(WAIT).await, "the window is acknowledged");
    rig.wait_rows("history rows", "rtc_mo_message_history", imei, |r| {
        r.len() == messages.len()
    })
    .await;
    rig.wait_rows("the connection row", "connection", imei, |r| r.len() == 1)
        .await;
    conn.close().await.unwrap();

    // The retention passes: a horizon in the future prunes every dedupe row of the unit.
    let horizon = chrono::Utc::now().naive_utc() + chrono::Duration::days(1);
    let pruned = rtc::prune_applied(&rig.server.state.db, horizon)
        .await
        .unwrap();
    assert!(pruned >= 3, "status_report, balance, cell_report: {pruned}");
    assert_eq!(rig.count("rtc_mo_applied", of_unit()).await, 0);
    let mark = Query::select()
        .column(Alias::new("pruned_through_seq"))
        .from(Alias::new("rtc_mo_pruned_mark"))
        .and_where(of_unit())
        .and_where(Expr::col(Alias::new("boot")).eq(i64::from(boot)))
        .to_owned();
    assert_eq!(rig.server.state.db.fetch_i64(&mark).await.unwrap(), 2);

    // The unit never saw the acknowledgements: it sends the same window again, then a new
    // cell report (seq 4, above the mark). Ingest keeps one unit's MOs in order, so once the
    // new report's row is there the resends have been through every sink step.
    let mut conn = UnitConn::tcp(rig.tcp).await.unwrap();
    conn.handshake_v2(Some(imei), &key(imei), window())
        .await
        .unwrap();
    assert_eq!(conn.send_message(&cell_report(3003)).await.unwrap(), 4);
    assert!(
        conn.await_acks(WAIT).await,
        "the resent window is acknowledged"
    );
    rig.wait_rows("the new history row", "rtc_mo_message_history", imei, |r| {
        r.len() == messages.len() + 1
    })
    .await;
    let connections = rig
        .wait_rows("the new connection row", "connection", imei, |r| {
            r.len() >= 2
        })
        .await;
    conn.close().await.unwrap();
    assert_eq!(
        connections.len(),
        2,
        "the resent cell report is not applied again"
    );
    // Only the new MO's step is recorded: the resends' claims were refused and taken back.
    assert_eq!(rig.count("rtc_mo_applied", of_unit()).await, 1);
    let (points, b) = rig.point_counts(imei, "balance,tamper_triggered").await;
    assert_eq!(points, [1, 1], "no second balance or tamper point: {b}");

    // A version-1 MO has no number and no mark to meet: applied as before.
    let mut v1 = rig.unit(imei).await;
    let report = cell_report(4004);
    v1.send_mo(&codec::decode_mo(&report).unwrap())
        .await
        .unwrap();
    rig.wait_rows("the version-1 connection row", "connection", imei, |r| {
        r.len() == 3
    })
    .await;
    let unnumbered = of_unit().and(Expr::col(Alias::new("boot")).is_null());
    assert_eq!(rig.count("rtc_mo_applied", unnumbered).await, 1);
    v1.close().await.unwrap();

    // The unit reboots and loses its window: a new boot id, numbering from 1 again. Once
    // that boot's records are pruned too, the old boot's mark goes (its window cannot come
    // back), so the marks do not grow with every reboot.
    let new_boot = 0x0ff2;
    let mut w = sim::MoWindow::new(new_boot, 16);
    w.push(cell_report(5005)).unwrap();
    let mut conn = UnitConn::tcp(rig.tcp).await.unwrap();
    conn.handshake_v2(Some(imei), &key(imei), w).await.unwrap();
    assert!(
        conn.await_acks(WAIT).await,
        "the new boot's MO is acknowledged"
    );
    rig.wait_rows("the new boot's connection row", "connection", imei, |r| {
        r.len() == 4
    })
    .await;
    conn.close().await.unwrap();
    assert_eq!(
        rig.count("rtc_mo_pruned_mark", of_unit()).await,
        1,
        "before the next prune, only the old boot has a mark"
    );
    rtc::prune_applied(&rig.server.state.db, horizon)
        .await
        .unwrap();
    let boots = Query::select()
        .column(Alias::new("boot"))
        .from(Alias::new("rtc_mo_pruned_mark"))
        .and_where(of_unit())
        .to_owned();
    assert_eq!(
        rig.server.state.db.fetch_i64(&boots).await.unwrap(),
        i64::from(new_boot),
        "the old boot's mark is gone, the new boot's is there"
    );
    assert_eq!(rig.count("rtc_mo_pruned_mark", of_unit()).await, 1);
    rig.stop().await;
}
