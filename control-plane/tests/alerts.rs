//! Alert analysis end to end, on SQLite and on PostgreSQL: units seeded in a
//! real database, telemetry in the embedded time-series store, the engine's
//! passes run with an explicit clock, notifications delivered to a real
//! HTTP receiver by the webhook worker.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{Duration, NaiveDateTime};
use common::{link, Backend, TestServer};
use control_plane::alerts::lease::{self, bucket_of};
use control_plane::alerts::AlertEngine;
use control_plane::catalogue::{Column, ColumnType};
use control_plane::config::AlertsConfig;
use control_plane::values::format_datetime;
use ingest::tsdb::{FieldValue, Point, TELEMETRY};
use sea_query::{Alias, Expr, Query};
use serde_json::{json, Value as Json};

both_backends!(
    every_rule_raises_on_its_history_and_stays_quiet_otherwise,
    only_eligible_units_are_analysed,
    one_open_alert_per_unit_and_type,
    cooling_off_after_a_dismissal,
    the_system_clears_only_when_the_type_says_so,
    raised_and_cleared_alerts_reach_a_real_receiver,
    two_engines_never_analyse_a_unit_twice,
    a_renewed_lease_holds_and_a_lost_one_fences,
);

/// The clock the passes run at (whole seconds, so stored times compare exactly).
fn t0() -> NaiveDateTime {
    let now = control_plane::values::now();
    now - Duration::nanoseconds(i64::from(now.and_utc().timestamp_subsec_nanos()))
}

fn fmt(t: NaiveDateTime) -> String {
    format_datetime(&t)
}

/// A `datetime` column holding an interval (offset from the Unix epoch).
fn interval(secs: i64) -> String {
    fmt(interval_value(secs))
}

fn interval_value(secs: i64) -> NaiveDateTime {
    chrono::DateTime::UNIX_EPOCH.naive_utc() + Duration::seconds(secs)
}

fn config() -> AlertsConfig {
    AlertsConfig {
        buckets: 8,
        ..AlertsConfig::default()
    }
}

fn engine(server: &TestServer, worker: &str) -> AlertEngine {
    AlertEngine::new(server.state.clone(), config(), worker)
}

/// A product type and a state type every seeded unit has, unless told otherwise.
struct Fleet {
    product_type: i64,
    state_type: i64,
    n: u64,
}

impl Fleet {
    async fn new(server: &TestServer) -> Self {
        Self {
            product_type: id(server.seed("product_type", json!({})).await),
            state_type: id(server.seed("state_type", json!({})).await),
            n: 0,
        }
    }

    fn imei(&mut self) -> String {
        self.n += 1;
        format!("35{:06}{:07}", std::process::id() % 1_000_000, self.n)
    }

    /// A quiet unit: no flags, nothing heard, no telemetry.
    async fn unit(&mut self, server: &TestServer) -> String {
        let (pt, st) = (self.product_type, self.state_type);
        self.unit_of(server, pt, st).await
    }

    async fn unit_of(&mut self, server: &TestServer, product_type: i64, state_type: i64) -> String {
        let imei = self.imei();
        server
            .seed(
                "product",
                json!({
                    "product_imei": imei,
                    "product_type_id": product_type,
                    "current_tamper_flag": false,
                    "dcm_enabled_flag": false,
                    "latest_rtc_mo_status_report_time": null,
                    "latest_connection_id": null,
                    "latest_rtc_connection_history_id": null,
                }),
            )
            .await;
        common::set_state(server, &imei, state_type).await;
        imei
    }

    /// An active alert type running `rule`, linked to the fleet's types.
    async fn alert_type(
        &self,
        server: &TestServer,
        rule: &str,
        status: &str,
        cooling_off: Option<i64>,
    ) -> i64 {
        let t = id(server
            .seed(
                "alert_type",
                json!({
                    "name": rule,
                    "version": 1,
                    "status": status,
                    "analysis_frequency": interval(3600),
                    "cooling_off_period": cooling_off.map(interval),
                    "active": true,
                }),
            )
            .await);
        link_type(server, t, self.product_type, self.state_type).await;
        t
    }
}

async fn link_type(server: &TestServer, alert_type: i64, product_type: i64, state_type: i64) {
    server
        .seed(
            "alert_type_product_type_linker",
            json!({"alert_type_id": alert_type, "product_type_id": product_type}),
        )
        .await;
    server
        .seed(
            "alert_type_state_type_linker",
            json!({"alert_type_id": alert_type, "state_type_id": state_type}),
        )
        .await;
}

fn id(v: Json) -> i64 {
    v.as_i64().unwrap()
}

async fn set_product(server: &TestServer, imei: &str, column: &str, value: Json) {
    let c = server
        .catalogue()
        .table("product")
        .unwrap()
        .column(column)
        .unwrap();
    let v = control_plane::values::coerce(c, &value).unwrap();
    let stmt = Query::update()
        .table(Alias::new("product"))
        .value(Alias::new(column), v)
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .to_owned();
    let mut tx = server.state.db.begin().await.unwrap();
    tx.execute(&stmt).await.unwrap();
    tx.commit().await.unwrap();
}

/// The unit's latest status report came at `at`.
async fn heard_from(server: &TestServer, imei: &str, at: NaiveDateTime) {
    set_product(
        server,
        imei,
        "latest_rtc_mo_status_report_time",
        json!(fmt(at)),
    )
    .await;
}

/// `n` telemetry samples of one field, 5 minutes apart, ending at `end`.
async fn telemetry(
    server: &TestServer,
    imei: &str,
    field: &str,
    value: f64,
    n: i64,
    end: NaiveDateTime,
) {
    let end_ns = end.and_utc().timestamp_nanos_opt().unwrap();
    let points: Vec<Point> = (0..n)
        .map(|i| Point {
            measurement: TELEMETRY.into(),
            imei: imei.into(),
            tags: Default::default(),
            fields: vec![(field.into(), FieldValue::Float(value))],
            time_ns: end_ns - i * 300_000_000_000,
        })
        .collect();
    server.state.timeseries.write(&points).await.unwrap();
}

fn cols(names: &[(&str, ColumnType)]) -> Vec<Column> {
    names.iter().map(|(n, t)| Column::computed(n, *t)).collect()
}

/// Some columns of a unit's rows of `table`, ordered by `order`.
async fn rows_of(
    server: &TestServer,
    table: &str,
    imei: &str,
    columns: &[(&str, ColumnType)],
    order: &str,
) -> Vec<control_plane::db::Row> {
    let stmt = Query::select()
        .columns(columns.iter().map(|(n, _)| Alias::new(*n)))
        .from(Alias::new(table))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .order_by(Alias::new(order), sea_query::Order::Asc)
        .to_owned();
    let c = cols(columns);
    server
        .state
        .db
        .fetch_all(&stmt, &c.iter().collect::<Vec<_>>())
        .await
        .unwrap()
}

/// Alerts of a unit, oldest first: (alert_type_id, open, extra_info, dismissed_by).
async fn alerts_of(server: &TestServer, imei: &str) -> Vec<(i64, bool, String, Option<String>)> {
    let columns = [
        ("alert_type_id", ColumnType::Int),
        ("dismissed_at", ColumnType::Datetime),
        ("extra_info", ColumnType::String),
        ("dismissed_by", ColumnType::String),
    ];
    rows_of(server, "alert", imei, &columns, "alert_id")
        .await
        .iter()
        .map(|r| {
            (
                r["alert_type_id"].as_i64().unwrap(),
                r["dismissed_at"].is_null(),
                r["extra_info"].as_str().unwrap_or_default().to_owned(),
                r["dismissed_by"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// `analysis_history` rows of a unit, oldest first: (alert_type_id, status, timestamp).
async fn history_of(server: &TestServer, imei: &str) -> Vec<(i64, String, String)> {
    let columns = [
        ("alert_type_id", ColumnType::Int),
        ("status", ColumnType::String),
        ("timestamp", ColumnType::Datetime),
    ];
    rows_of(server, "analysis_history", imei, &columns, "timestamp")
        .await
        .iter()
        .map(|r| {
            (
                r["alert_type_id"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
                r["timestamp"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A dead letter of the unit (an MO queue envelope naming its IMEI).
async fn dead_letter(server: &TestServer, imei: &str, n: u32, at: NaiveDateTime) {
    let id = u128::from(n) + (u128::from(imei.parse::<u64>().unwrap()) << 32);
    dead_letter_from(server, imei, "IMEI", id, at).await;
}

/// A dead letter whose envelope names its unit by `ident` (`ident_type` IMEI or IP).
async fn dead_letter_from(
    server: &TestServer,
    ident: &str,
    ident_type: &str,
    id: u128,
    at: NaiveDateTime,
) {
    let payload = json!({
        "ident": ident,
        "message": "AAEC",
        "correlation_id": format!("{id:032x}"),
        "timestamp": fmt(at),
        "ident_type": ident_type,
    });
    server
        .seed(
            "rtc_dead_letter",
            json!({"queue_name": "RTC-MO", "payload": payload.to_string(), "created_at": fmt(at)}),
        )
        .await;
}

async fn mt(server: &TestServer, imei: &str, status: &str, at: NaiveDateTime) {
    server
        .seed(
            "rtc_message_history",
            json!({
                "product_imei": imei,
                "message_sent_time": fmt(at - Duration::minutes(5)),
                "delivery_status": status,
                "delivery_status_time": fmt(at),
            }),
        )
        .await;
}

async fn balance(server: &TestServer, imei: &str, secs: i64, expiry: NaiveDateTime) {
    set_product(server, imei, "dcm_enabled_flag", json!(true)).await;
    server
        .seed(
            "balance",
            json!({"product_imei": imei, "balance": secs, "expected_expiry": fmt(expiry)}),
        )
        .await;
}

async fn every_rule_raises_on_its_history_and_stays_quiet_otherwise(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    let recent = now - Duration::minutes(10);
    let mut types = std::collections::HashMap::new();
    for rule in [
        "tamper",
        "no_connection",
        "low_battery",
        "over_temperature",
        "credit_expiring",
        "credit_exhausted",
        "dead_letters",
        "failed_mt",
    ] {
        types.insert(rule, fleet.alert_type(&server, rule, "manual", None).await);
    }
    // (rule, unit that must raise it, unit with a normal history)
    let mut cases: Vec<(&str, String, String)> = Vec::new();

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    for imei in [&bad, &good] {
        set_product(&server, imei, "current_tamper_flag", json!(true)).await;
    }
    telemetry(&server, &bad, "tamper_triggered", 1.0, 1, recent).await;
    telemetry(&server, &good, "tamper_triggered", 0.0, 5, recent).await;
    cases.push(("tamper", bad, good));
    // A trip while the switch is disabled is no tamper alert.
    let disarmed = fleet.unit(&server).await;
    telemetry(&server, &disarmed, "tamper_triggered", 1.0, 1, recent).await;

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    heard_from(&server, &bad, now - Duration::days(4)).await;
    heard_from(&server, &good, now - Duration::hours(1)).await;
    cases.push(("no_connection", bad, good));

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    telemetry(&server, &bad, "state_of_charge_percent", 12.0, 24, recent).await;
    telemetry(&server, &good, "state_of_charge_percent", 85.0, 24, recent).await;
    cases.push(("low_battery", bad, good.clone()));
    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    telemetry(&server, &bad, "voltage", 10.9, 24, recent).await;
    telemetry(&server, &good, "voltage", 12.8, 24, recent).await;
    cases.push(("low_battery", bad, good));

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    telemetry(&server, &bad, "temperature", 71.0, 24, recent).await;
    telemetry(&server, &good, "temperature", 34.0, 24, recent).await;
    cases.push(("over_temperature", bad, good));

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    balance(&server, &bad, 3600, now + Duration::hours(1)).await;
    balance(&server, &good, 10 * 86_400, now + Duration::days(10)).await;
    cases.push(("credit_expiring", bad, good.clone()));
    let bad = fleet.unit(&server).await;
    balance(&server, &bad, 0, now - Duration::hours(1)).await;
    cases.push(("credit_exhausted", bad, good));

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    for i in 0..3 {
        dead_letter(&server, &bad, i, recent).await;
    }
    dead_letter(&server, &good, 9, recent).await;
    // Old dead letters are outside the window.
    for i in 10..13 {
        dead_letter(&server, &good, i, now - Duration::days(3)).await;
    }
    cases.push(("dead_letters", bad, good));
    // A private-APN unit named by its network identity: the address is
    // matched whatever its spelling; an identity two units share is nobody's.
    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    let twin = fleet.unit(&server).await;
    for (imei, ip) in [
        (&bad, "2001:db8::7"),
        (&good, "10.0.0.9"),
        (&twin, "10.0.0.9"),
    ] {
        server
            .put_ok(
                &format!("/v1/products/{imei}"),
                json!({"rtc_network_name": "Aeris", "ip_address": ip}),
            )
            .await;
    }
    for i in 0..3u128 {
        dead_letter_from(&server, "Aeris/2001:0db8:0000::0007", "IP", 100 + i, recent).await;
        dead_letter_from(&server, "Aeris/10.0.0.9", "IP", 200 + i, recent).await;
    }
    cases.push(("dead_letters", bad, good));

    let (bad, good) = (fleet.unit(&server).await, fleet.unit(&server).await);
    for _ in 0..3 {
        mt(&server, &bad, "failed", recent).await;
        mt(&server, &good, "delivered", recent).await;
    }
    mt(&server, &good, "failed", recent).await;
    cases.push(("failed_mt", bad, good));

    let report = engine(&server, "one").run_pass(now).await.unwrap();
    assert_eq!(report.buckets.len(), 8, "a lone engine holds every bucket");
    assert_eq!(report.failures, 0, "{report:?}");
    for (rule, bad, good) in &cases {
        let got = alerts_of(&server, bad).await;
        assert_eq!(got.len(), 1, "{rule}: {bad} should have one alert: {got:?}");
        let (t, open, info, _) = &got[0];
        assert_eq!(*t, types[rule], "{rule}: raised the wrong type: {info}");
        assert!(*open);
        assert!(
            !info.is_empty(),
            "{rule}: extra_info says what triggered it"
        );
        assert!(
            alerts_of(&server, good).await.is_empty(),
            "{rule}: {good} is normal"
        );
        // Every eligible type ran on every unit, successfully.
        let h = history_of(&server, good).await;
        assert_eq!(h.len(), 8, "{h:?}");
        assert!(h.iter().all(|(_, s, _)| s == "success"));
    }
    assert!(alerts_of(&server, &disarmed).await.is_empty());
    assert!(
        alerts_of(&server, &twin).await.is_empty(),
        "a shared network identity is not attributed"
    );
    let info = &alerts_of(&server, &cases[1].1).await[0].2;
    assert!(info.starts_with("no connection for 4d"), "{info}");
}

async fn only_eligible_units_are_analysed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    let t = fleet
        .alert_type(&server, "no_connection", "manual", None)
        .await;
    let other_pt = id(server.seed("product_type", json!({})).await);
    let other_st = id(server.seed("state_type", json!({})).await);
    let (pt, st) = (fleet.product_type, fleet.state_type);
    let eligible = fleet.unit(&server).await;
    let wrong_product_type = fleet.unit_of(&server, other_pt, st).await;
    let wrong_state = fleet.unit_of(&server, pt, other_st).await;
    let anti_linked = fleet.unit(&server).await;
    let entity = id(server.seed("entity", json!({})).await);
    link(&server, &anti_linked, entity).await;
    server
        .seed(
            "alert_type_entity_anti_linker",
            json!({"alert_type_id": t, "entity_id": entity}),
        )
        .await;
    // Another entity's unit stays eligible.
    let other_entity_unit = fleet.unit(&server).await;
    link(
        &server,
        &other_entity_unit,
        id(server.seed("entity", json!({})).await),
    )
    .await;
    // An inactive type runs nowhere.
    let inactive = fleet
        .alert_type(&server, "no_connection", "manual", None)
        .await;
    let stmt = Query::update()
        .table(Alias::new("alert_type"))
        .value(Alias::new("active"), false)
        .and_where(Expr::col(Alias::new("alert_type_id")).eq(inactive))
        .to_owned();
    let mut tx = server.state.db.begin().await.unwrap();
    tx.execute(&stmt).await.unwrap();
    tx.commit().await.unwrap();
    for imei in [
        &eligible,
        &wrong_product_type,
        &wrong_state,
        &anti_linked,
        &other_entity_unit,
    ] {
        heard_from(&server, imei, now - Duration::days(5)).await;
    }

    let report = engine(&server, "one").run_pass(now).await.unwrap();
    assert_eq!(report.units_analysed, 2, "{report:?}");
    for imei in [&eligible, &other_entity_unit] {
        let h = history_of(&server, imei).await;
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!((h[0].0, h[0].1.as_str()), (t, "success"));
        assert_eq!(alerts_of(&server, imei).await.len(), 1);
    }
    for imei in [&wrong_product_type, &wrong_state, &anti_linked] {
        assert!(
            history_of(&server, imei).await.is_empty(),
            "{imei} is not eligible"
        );
        assert!(alerts_of(&server, imei).await.is_empty());
    }
}

async fn one_open_alert_per_unit_and_type(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    let t = fleet
        .alert_type(&server, "no_connection", "manual", None)
        .await;
    let imei = fleet.unit(&server).await;
    heard_from(&server, &imei, now - Duration::days(5)).await;
    let engine = engine(&server, "one");
    let first = engine.run_pass(now).await.unwrap();
    assert_eq!(first.raised, 1);
    // Not due again within analysis_frequency (1 h): nothing runs.
    let early = engine.run_pass(now + Duration::minutes(30)).await.unwrap();
    assert_eq!(early.analyses, 0, "{early:?}");
    // Due again: analysed, still raising, but the open alert is kept.
    let again = engine.run_pass(now + Duration::hours(1)).await.unwrap();
    assert_eq!((again.analyses, again.raised), (1, 0), "{again:?}");
    assert_eq!(alerts_of(&server, &imei).await.len(), 1);
    assert_eq!(history_of(&server, &imei).await.len(), 2);
    // The database itself refuses a second open alert of the pair.
    let insert = Query::insert()
        .into_table(Alias::new("alert"))
        .columns(["product_imei", "alert_type_id", "start_time"].map(Alias::new))
        .values_panic([imei.as_str().into(), t.into(), now.into()])
        .to_owned();
    let mut tx = server.state.db.begin().await.unwrap();
    let err = tx.execute(&insert).await.unwrap_err();
    assert!(
        matches!(err, control_plane::db::DbError::Unique { .. }),
        "{err:?}"
    );
}

async fn dismiss(server: &TestServer, imei: &str) {
    let open: Vec<i64> = rows_of(
        server,
        "alert",
        imei,
        &[
            ("alert_id", ColumnType::Int),
            ("dismissed_at", ColumnType::Datetime),
        ],
        "alert_id",
    )
    .await
    .iter()
    .filter(|r| r["dismissed_at"].is_null())
    .map(|r| r["alert_id"].as_i64().unwrap())
    .collect();
    let alert_id = open[0];
    server
        .put_ok(
            &format!("/v1/alerts/{alert_id}/dismiss"),
            json!({"dismissal_reason": "customer called"}),
        )
        .await;
}

async fn cooling_off_after_a_dismissal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    // Cooling-off of one day.
    fleet
        .alert_type(&server, "no_connection", "manual", Some(86_400))
        .await;
    let imei = fleet.unit(&server).await;
    heard_from(&server, &imei, now - Duration::days(5)).await;
    let engine = engine(&server, "one");
    assert_eq!(engine.run_pass(now).await.unwrap().raised, 1);
    // The user dismisses it (at the real clock, a moment after t0).
    dismiss(&server, &imei).await;
    let dismissed_at = server.state.clock.now();
    // Still silent, due again, but within the cooling-off period: no new alert.
    let cooling = engine.run_pass(now + Duration::hours(2)).await.unwrap();
    assert_eq!((cooling.analyses, cooling.raised), (1, 0), "{cooling:?}");
    assert_eq!(alerts_of(&server, &imei).await.len(), 1);
    // After it: raised again.
    let after = engine
        .run_pass(dismissed_at + Duration::days(1) + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(after.raised, 1, "{after:?}");
    let got = alerts_of(&server, &imei).await;
    assert_eq!(got.len(), 2);
    assert!(!got[0].1 && got[1].1, "{got:?}");
}

async fn the_system_clears_only_when_the_type_says_so(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    let auto = fleet
        .alert_type(&server, "no_connection", "auto_clear", None)
        .await;
    let manual = fleet
        .alert_type(&server, "no-connection", "manual", None)
        .await;
    let imei = fleet.unit(&server).await;
    heard_from(&server, &imei, now - Duration::days(5)).await;
    let engine = engine(&server, "one");
    assert_eq!(engine.run_pass(now).await.unwrap().raised, 2);
    // The unit reports again: the condition clears.
    let later = now + Duration::hours(1);
    heard_from(&server, &imei, later - Duration::minutes(1)).await;
    let report = engine.run_pass(later).await.unwrap();
    assert_eq!(report.cleared, 1, "{report:?}");
    let got = alerts_of(&server, &imei).await;
    let of = |t: i64| got.iter().find(|a| a.0 == t).unwrap().clone();
    assert!(!of(auto).1, "the auto_clear alert is dismissed");
    assert_eq!(of(auto).3.as_deref(), Some("system"));
    assert!(of(manual).1, "the manual alert stays open for a user");
}

/// A subscriber's endpoint that records every notification.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(Json, String)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> &'static str {
    let signature = headers
        .get("X-BBOXX-Signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.got
        .lock()
        .unwrap()
        .push((serde_json::from_slice(&body).unwrap(), signature));
    "ok"
}

async fn raised_and_cleared_alerts_reach_a_real_receiver(backend: Backend) {
    let server = TestServer::start(backend).await;
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    server
        .post_created("/v1/channels/product-alert/subscribe", json!({"url": url}))
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = control_plane::webhooks::spawn_worker(server.state.clone(), async {
        let _ = stopped.await;
    });

    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    let t = fleet
        .alert_type(&server, "no_connection", "auto_clear", None)
        .await;
    let imei = fleet.unit(&server).await;
    heard_from(&server, &imei, now - Duration::days(5)).await;
    let engine = engine(&server, "one");
    engine.run_pass(now).await.unwrap();
    let later = now + Duration::hours(1);
    heard_from(&server, &imei, later).await;
    engine.run_pass(later).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..400 {
        got = receiver.got.lock().unwrap().clone();
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(got.len(), 2, "raised, then cleared: {got:?}");
    let (raised, signature) = &got[0];
    assert!(!signature.is_empty(), "notifications are signed");
    assert_eq!(raised["channel"], "product-alert");
    let data = &raised["data"];
    assert_eq!(data["product_imei"], imei.as_str());
    assert_eq!(data["alert_type_id"], t);
    assert!(data["dismissed_at"].is_null());
    assert!(data["extra_info"]
        .as_str()
        .unwrap()
        .starts_with("no connection for"));
    let cleared = &got[1].0["data"];
    assert_eq!(
        cleared["alert_id"], data["alert_id"],
        "the same alert, updated"
    );
    assert_eq!(cleared["dismissed_by"], "system");
    assert!(cleared["dismissed_at"].is_string());
    drop(stop);
    worker.await.unwrap();
}

async fn two_engines_never_analyse_a_unit_twice(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fleet = Fleet::new(&server).await;
    let now = t0();
    let t = fleet
        .alert_type(&server, "no_connection", "manual", None)
        .await;
    let mut units = Vec::new();
    for _ in 0..24 {
        units.push(fleet.unit(&server).await);
    }
    // Passes two minutes apart (within the 5-minute lease, as in production,
    // where passes are a minute apart), each unit due every minute.
    let stmt = Query::update()
        .table(Alias::new("alert_type"))
        .value(Alias::new("analysis_frequency"), interval_value(60))
        .and_where(Expr::col(Alias::new("alert_type_id")).eq(t))
        .to_owned();
    let mut tx = server.state.db.begin().await.unwrap();
    tx.execute(&stmt).await.unwrap();
    tx.commit().await.unwrap();
    let (a, b) = (engine(&server, "engine-a"), engine(&server, "engine-b"));
    let rounds = 3;
    let mut reports = Vec::new();
    for round in 0..rounds {
        // Both start at the same moment.
        let at = now + Duration::minutes(2 * round);
        let (ra, rb) = tokio::join!(a.run_pass(at), b.run_pass(at));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra.buckets.iter().all(|x| !rb.buckets.contains(x)),
            "round {round}: both hold a bucket: {ra:?} {rb:?}"
        );
        reports.push((ra, rb));
    }
    // Never twice in one round: a unit's analyses all have different times.
    // (A bucket given up while rebalancing may skip one round.)
    let mut rows = 0;
    for imei in &units {
        let h = history_of(&server, imei).await;
        let times: Vec<&str> = h.iter().map(|(_, _, at)| at.as_str()).collect();
        let mut distinct = times.clone();
        distinct.dedup();
        assert_eq!(distinct, times, "{imei} analysed twice at once");
        assert!(
            h.iter().all(|(at, s, _)| *at == t && s == "success"),
            "{h:?}"
        );
        rows += h.len() as u64;
    }
    let reported: u64 = reports
        .iter()
        .map(|(a, b)| a.units_analysed + b.units_analysed)
        .sum();
    assert_eq!(rows, reported);
    assert!(reported >= 2 * 24, "{reports:?}");
    // By the last round the work is shared: each holds half of the 8 buckets.
    let (last_a, last_b) = reports.last().unwrap();
    assert_eq!(
        (last_a.buckets.len(), last_b.buckets.len()),
        (4, 4),
        "{last_a:?} {last_b:?}"
    );
    assert_eq!(last_a.units_analysed + last_b.units_analysed, 24);
    // Each engine analysed exactly the units of its buckets.
    let of_a = units
        .iter()
        .filter(|i| last_a.buckets.contains(&bucket_of(i, 8)))
        .count() as u64;
    assert_eq!(last_a.units_analysed, of_a);

    // An engine that stopped renewing loses its buckets once the leases expire,
    // and cannot analyse them any more.
    let late =
        now + Duration::minutes(2 * rounds) + Duration::seconds(config().lease_secs as i64 + 1);
    let rb = b.run_pass(late).await.unwrap();
    assert_eq!(
        rb.buckets.len(),
        8,
        "b takes over a's expired buckets: {rb:?}"
    );
    let ra = a.run_pass(late).await.unwrap();
    assert_eq!((ra.buckets.len(), ra.analyses), (0, 0), "{ra:?}");
}

/// A lease renewed late in a pass outlives its first expiry; once it has
/// expired and another engine has taken the bucket, the old holder's
/// renewal fails, so its commit would roll back.
async fn a_renewed_lease_holds_and_a_lost_one_fences(backend: Backend) {
    let server = TestServer::start(backend).await;
    let db = &server.state.db;
    let ttl = Duration::seconds(config().lease_secs as i64);
    let t = t0();
    let hold = |holder: &'static str, at: NaiveDateTime| async move {
        let mut tx = db.begin().await.unwrap();
        let held = lease::hold(&mut tx, holder, 0, ttl, at).await.unwrap();
        if held {
            tx.commit().await.unwrap();
        }
        // Otherwise dropped: rolled back, as the engine does.
        held
    };
    assert_eq!(lease::claim(db, "A", 1, ttl, t).await.unwrap(), vec![0]);
    // Renewed just before it expires (a pass overrunning its lease)…
    assert!(hold("A", t + ttl - Duration::seconds(1)).await);
    // …so it is still A's after the first expiry.
    let after_first = t + ttl + Duration::seconds(1);
    assert!(lease::claim(db, "B", 1, ttl, after_first)
        .await
        .unwrap()
        .is_empty());
    // A stops renewing: B takes the bucket once the renewed lease expires,
    // and A's late renewal fails.
    let later = t + ttl * 2 + Duration::seconds(1);
    assert_eq!(lease::claim(db, "B", 1, ttl, later).await.unwrap(), vec![0]);
    assert!(!hold("A", later + Duration::seconds(1)).await);
    assert!(hold("B", later + Duration::seconds(1)).await);
}
