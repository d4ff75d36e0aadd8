//! Product, part and fleet actions through real HTTP, on SQLite and
//! PostgreSQL; the unit-report and SMS-expiry service functions directly.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{Backend, TestServer};
use control_plane::actions::{sms, unit};
use control_plane::catalogue::{Column, ColumnType};
use reqwest::{Method, StatusCode};
use sea_query::{Alias, Expr, Order, Query};
use serde_json::{json, Value as Json};

both_backends!(
    pcb_creation_and_validation,
    product_creation_from_pcb,
    convenience_creation_is_all_or_nothing,
    serials_are_unique_under_parallel_creation,
    enable_disable_pending_history_and_wakeup,
    concurrent_enable_disable_keeps_one_history_chain,
    unit_report_confirms_pending_changes,
    tamper_switch_pending_states,
    software_update_lock_and_expiry,
    reports_of_other_software_count_missed_updates,
    wakeup_sms_receipts_and_expiry,
    http_sms_provider_posts_and_failures_are_recorded,
    entity_assignment_and_unknown_entity_rule,
    change_state_follows_the_transition_table,
    parts_locations_parameters_and_networks,
    connectivity_reliability_rate_and_its_400s,
    energy_limit_dcm_and_payg,
    dashboard2_and_current_enable_status,
    alert_dismissal_publishes,
    permissions_and_entity_scope_on_every_product_endpoint,
    bad_input_never_answers_500,
);

static IMEI: AtomicU64 = AtomicU64::new(100_000_000_000_000);

fn next_imei() -> String {
    format!(
        "{:015}",
        IMEI.fetch_add(1, Ordering::Relaxed) + std::process::id() as u64 * 1000
    )
}

fn pcb_body(imei: &str) -> Json {
    json!({
        "imei": imei,
        "imsi": format!("2{}", &imei[1..]),
        "device_key": format!("dk{}", &imei[..15]),
        "manufacturer": "A Factory",
    })
}

/// A hub 2 product through `create_hub2`; returns its IMEI.
async fn hub2(server: &TestServer) -> String {
    let imei = next_imei();
    server
        .post_ok("/v1/products/create_hub2", pcb_body(&imei))
        .await;
    imei
}

/// The unit's rows of the generic table `table` (served at `/v1/{table}`), oldest first.
async fn unit_table(server: &TestServer, table: &str, imei: &str) -> Vec<Json> {
    let path = format!("/v1/{table}");
    server.unit_rows(&path, imei, &format!("{table}_id")).await
}

/// Applies a unit's report in a transaction of its own, committed, as the RTC sink does.
async fn apply_report(
    server: &TestServer,
    imei: &str,
    report: &unit::UnitReport,
    now: chrono::NaiveDateTime,
) -> unit::ReportOutcome {
    let mut tx = server.state.db.begin().await.unwrap();
    let outcome = unit::apply_unit_report(&mut tx, imei, report, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outcome
}

async fn product(server: &TestServer, imei: &str) -> Json {
    server.get_ok(&format!("/v1/products/{imei}")).await
}

/// The outbox rows of a channel for a product, oldest first.
async fn notifications(server: &TestServer, channel: &str, imei: &str) -> Vec<Json> {
    let stmt = Query::select()
        .column(Alias::new("payload"))
        .from(Alias::new("notification"))
        .and_where(Expr::col(Alias::new("channel")).eq(channel))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .order_by(Alias::new("notification_id"), Order::Asc)
        .to_owned();
    let c = Column::computed("payload", ColumnType::Text);
    server
        .state
        .db
        .fetch_all(&stmt, &[&c])
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r["payload"].as_str().unwrap()).unwrap())
        .collect()
}

async fn entity(server: &TestServer, name: &str) -> i64 {
    let b = server
        .post_created(
            "/v1/entities",
            json!({"name": name, "bboxx_company_flag": false}),
        )
        .await;
    b["entity_id"].as_i64().unwrap()
}

async fn software(server: &TestServer, name: &str) -> i64 {
    let b = server
        .post_created(
            "/v1/software_version_types",
            json!({"name": name, "release_date": "2020-01-01T00:00:00"}),
        )
        .await;
    b["software_version_type_id"].as_i64().unwrap()
}

/// Puts a product into `state` along the transition table.
async fn move_to(server: &TestServer, imei: &str, path: &[i64]) {
    for s in path {
        server
            .put_ok(
                &format!("/v1/products/{imei}/change_state"),
                json!({"new_state": s}),
            )
            .await;
    }
}

// ------------------------------------------------------------ manufacturing

async fn pcb_creation_and_validation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = next_imei();
    let b = server
        .post_ok("/v1/parts/create_tiger_pcb", pcb_body(&imei))
        .await;
    assert_eq!(b["status"], "success");
    assert_eq!(b["message"], "new pcb part and sim successfully created");
    let pcb = &b["data"]["pcb"];
    assert_eq!(pcb["part_type_id"], 44);
    assert_eq!(pcb["serial_number"], json!(imei));
    assert_eq!(pcb["manufacturer"], "A Factory");
    assert_eq!(pcb["properties"]["imei"], json!(imei));
    let serial = pcb["properties"]["serial_number"].as_str().unwrap();
    assert!(
        control_plane::actions::manufacturing::is_valid_serial(serial),
        "{serial}"
    );
    assert!(serial.starts_with("HB000501-"), "{serial}");
    assert_eq!(b["data"]["sim"]["part_type_id"], 43);
    assert_eq!(b["data"]["sim"]["serial_number"], pcb_body(&imei)["imsi"]);
    // The same IMEI again: 400 naming the field.
    let (s, b) = server
        .post("/v1/parts/create_tiger_pcb", pcb_body(&imei))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["status"], "validation-error");
    assert!(b["validation_errors"]["imei"].is_string(), "{b}");
    // Every field problem at once.
    let (s, b) = server
        .post(
            "/v1/parts/create_hyena_pcb",
            json!({"imei": "12", "imsi": "abc", "pcb_part_type_id": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    for f in ["imei", "imsi", "device_key", "pcb_part_type_id"] {
        assert!(b["validation_errors"][f].is_string(), "{f}: {b}");
    }
    let mut body = pcb_body(&next_imei());
    body["pcb_part_type_id"] = json!(999_999);
    let (s, b) = server.post("/v1/parts/create_hyena_pcb", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["validation_errors"]["pcb_part_type_id"].is_string(),
        "{b}"
    );
    // Koala answers 201 (as documented), with iccid as the SIM serial.
    let mut body = pcb_body(&next_imei());
    body["iccid"] = json!("8944500102198304826");
    body["erp_code_override"] = json!("PA01040102");
    let b = server
        .post_created("/v1/parts/create_koala_pcb", body)
        .await;
    assert_eq!(b["message"], "new koala pcb successfully created.");
    assert_eq!(b["data"]["pcb"]["part_type_id"], 122);
    assert_eq!(b["data"]["sim"]["serial_number"], "8944500102198304826");
    assert_eq!(
        b["data"]["pcb"]["properties"]["erp_code_override"],
        "PA01040102"
    );
    let b = server
        .post_ok("/v1/parts/create_jackal_pcb", pcb_body(&next_imei()))
        .await;
    assert_eq!(b["message"], "new jackal pcb successfully created.");
    assert_eq!(b["data"]["pcb"]["part_type_id"], 158);
    // FACTORY is required.
    let tech = server.user("tech@pcb", "TECHNICAL", "GLOBAL", None).await;
    let (s, _) = server
        .post_as(&tech, "/v1/parts/create_tiger_pcb", pcb_body(&next_imei()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn product_creation_from_pcb(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = next_imei();
    let pcb = server
        .post_ok("/v1/parts/create_tiger_pcb", pcb_body(&imei))
        .await;
    let serial = pcb["data"]["pcb"]["properties"]["serial_number"].clone();
    // home2 needs a battery.
    let (s, b) = server
        .post(
            "/v1/products/create_product/home2",
            json!({"pcb_imei": imei}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["battery"].is_string());
    let body = json!({"pcb_imei": imei, "battery": {"part_type_id": 43, "serial_number": format!("BAT{imei}")},
                      "product": {"assembler": "Assembly House 1"}});
    let b = server
        .post_ok("/v1/products/create_product/home2", body.clone())
        .await;
    assert_eq!(
        b["message"],
        json!(format!(
            "Home2Product: {} - ({imei}) created.",
            serial.as_str().unwrap()
        ))
    );
    assert_eq!(b["data"]["product"]["product_type_id"], 6);
    assert_eq!(b["data"]["product"]["serial_number"], serial);
    assert_eq!(b["data"]["product"]["assembler"], "Assembly House 1");
    assert_eq!(
        b["data"]["battery"]["serial_number"],
        json!(format!("BAT{imei}"))
    );
    assert_eq!(b["data"]["pcb"]["serial"], json!(imei));
    assert_eq!(b["data"]["sim"]["imsi"], pcb_body(&imei)["imsi"]);
    // Disabled, STORED after a NON_EXISTANT birth, in the Unknown Entity.
    let p = product(&server, &imei).await;
    assert_eq!(p["current_enable_flag"], false);
    assert_eq!(p["desired_enable_flag"], false);
    let states = server.unit_rows("/v1/states", &imei, "state_id").await;
    let pairs: Vec<(i64, i64)> = states
        .iter()
        .map(|s| {
            (
                s["prev_state_type"].as_i64().unwrap(),
                s["current_state_type"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs, vec![(1, 1), (1, 2)]);
    assert_eq!(p["latest_state_id"], states[1]["state_id"]);
    let links = unit_table(&server, "product_entity_linker", &imei).await;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["entity_id"], 1);
    let history = unit_table(&server, "enable_history", &imei).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["prev_enable_state"], "init");
    assert_eq!(history[0]["current_enable_state"], "disabled");
    let parts = unit_table(&server, "part_product_linker", &imei).await;
    assert_eq!(parts.len(), 3, "pcb, sim, battery");
    let n = notifications(&server, "product-status", &imei).await;
    assert_eq!(n.len(), 1);
    assert_eq!(
        n[0]["data"],
        json!({"state": 2, "enabled_status": "disabled", "user": common::ADMIN})
    );
    // Twice: 400; unknown PCB: 400; unknown kind: 404.
    let (s, b) = server.post("/v1/products/create_product/home2", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = server
        .post(
            "/v1/products/create_product/hub2",
            json!({"pcb_imei": next_imei()}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["pcb_imei"].is_string(), "{b}");
    let (s, _) = server
        .post("/v1/products/create_product/toaster", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // home3 from a jackal PCB, hub2 from a hyena PCB.
    let j = next_imei();
    server
        .post("/v1/parts/create_jackal_pcb", pcb_body(&j))
        .await;
    let b = server.post_ok("/v1/products/create_product/home3", json!({"pcb_imei": j, "battery": {"part_type_id": 43, "serial_number": format!("B3{j}")}})).await;
    assert_eq!(b["message"], "new Home3 product successfully created.");
    assert_eq!(b["data"]["product"]["product_type_id"], 10);
    let h = next_imei();
    server
        .post("/v1/parts/create_hyena_pcb", pcb_body(&h))
        .await;
    let (s, b) = server
        .post(
            "/v1/products/create_product/hub2",
            json!({"pcb_imei": h, "product": {"color": "red"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown product field: {b}");
    let b = server
        .post_ok("/v1/products/create_product/hub2", json!({"pcb_imei": h}))
        .await;
    assert!(b["message"].as_str().unwrap().starts_with("Hub2Product: "));
}

async fn convenience_creation_is_all_or_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = next_imei();
    let mut body = pcb_body(&imei);
    body["battery"] = json!({"part_type_id": 999_999, "serial_number": format!("B{imei}")});
    body["solar_panel_wattage"] = json!(100);
    let (s, b) = server
        .post("/v1/products/create_enterprise", body.clone())
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Nothing is left: no PCB, no SIM, no product.
    let (_, parts) = server
        .list(
            "/v1/parts",
            json!({"filters": [{"name": "serial_number", "op": "eq", "val": imei}]}),
        )
        .await;
    assert_eq!(parts["num_results"], 0, "{parts}");
    assert_eq!(
        server.get(&format!("/v1/products/{imei}")).await.0,
        StatusCode::NOT_FOUND
    );
    body["battery"]["part_type_id"] = json!(43);
    let b = server.post_ok("/v1/products/create_enterprise", body).await;
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("EnterpriseProduct: "),
        "{b}"
    );
    assert_eq!(b["data"]["product"]["product_type_id"], 4);
    assert_eq!(b["data"]["pcb"]["part_type_id"], 77);
    let params = server
        .unit_rows("/v1/product_parameters", &imei, "product_parameter_id")
        .await;
    assert_eq!(params.len(), 1);
    assert_eq!(params[0]["value"], "100");
    // create_hub2 with a missing imsi reports it (and creates nothing).
    let (s, b) = server
        .post(
            "/v1/products/create_hub2",
            json!({"imei": next_imei(), "device_key": "k"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["imsi"].is_string(), "{b}");
}

async fn serials_are_unique_under_parallel_creation(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let imei = next_imei();
            let b = server
                .post_ok("/v1/products/create_hub2", pcb_body(&imei))
                .await;
            b["data"]["product"]["serial_number"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut serials = Vec::new();
    for t in tasks {
        serials.push(t.await.unwrap());
    }
    for s in &serials {
        assert!(
            control_plane::actions::manufacturing::is_valid_serial(s),
            "{s}"
        );
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 20);
}

// -------------------------------------------------------------- unit control

async fn enable_disable_pending_history_and_wakeup(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let sw = software(&server, "3.6").await;
    server.post_created("/v1/product_software_linker", json!({"product_imei": imei, "software_version_type_id": sw, "date_added": "2020-01-01T00:00:00"})).await;
    let b = server.unit_action(Method::PUT, &imei, "enable").await;
    assert_eq!(
        b,
        json!({"status": "success", "message": "Product enabled", "data": null})
    );
    let p = product(&server, &imei).await;
    assert_eq!(
        (
            p["current_enable_flag"].clone(),
            p["desired_enable_flag"].clone()
        ),
        (json!(false), json!(true))
    );
    let history = unit_table(&server, "enable_history", &imei).await;
    let last = history.last().unwrap();
    assert_eq!(last["prev_enable_state"], "disabled");
    assert_eq!(last["current_enable_state"], "pending_enabled");
    assert_eq!(last["user"], common::ADMIN);
    assert_eq!(p["latest_enable_history_id"], last["enable_history_id"]);
    // WAKEUP-enabled software: an SMS was recorded for this change.
    let sms_rows = server
        .unit_rows("/v1/sms_histories", &imei, "sms_history_id")
        .await;
    assert_eq!(sms_rows.len(), 1);
    assert_eq!(sms_rows[0]["trigger"], "wakeup");
    assert_eq!(sms_rows[0]["enable_history_id"], last["enable_history_id"]);
    // No SMS provider is configured here: recorded as not sent, with why.
    assert_eq!(sms_rows[0]["status"], "NotSent");
    assert!(sms_rows[0]["status_info"]
        .as_str()
        .unwrap()
        .contains("no SMS provider"));
    assert!(sms_rows[0]["message_reference"].is_string());
    // Idempotent: no new row.
    server.unit_action(Method::PUT, &imei, "enable").await;
    assert_eq!(
        unit_table(&server, "enable_history", &imei).await.len(),
        history.len()
    );
    // Disabling before the unit confirmed cancels: back to disabled.
    let b = server.unit_action(Method::PUT, &imei, "disable").await;
    assert_eq!(b["message"], "Product disabled");
    let history = unit_table(&server, "enable_history", &imei).await;
    assert_eq!(history.last().unwrap()["current_enable_state"], "disabled");
    let statuses: Vec<Json> = notifications(&server, "product-status", &imei)
        .await
        .iter()
        .map(|n| n["data"]["enabled_status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![
            json!("disabled"),
            json!("pending_enabled"),
            json!("disabled")
        ]
    );
    // Software outside the WAKEUP list: no SMS.
    let other = hub2(&server).await;
    server
        .call(Method::PUT, &format!("/v1/products/{other}/enable"), None)
        .await;
    assert!(server
        .unit_rows("/v1/sms_histories", &other, "sms_history_id")
        .await
        .is_empty());
    // TECHNICAL may; OVERVIEW may not; 404 for an unknown unit.
    let tech = server
        .user("tech@enable", "TECHNICAL", "GLOBAL", None)
        .await;
    let viewer = server.user("view@enable", "OVERVIEW", "GLOBAL", None).await;
    let path = format!("/v1/products/{imei}/enable");
    assert_eq!(
        server.call_as(&tech, Method::PUT, &path, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.call_as(&viewer, Method::PUT, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .call(Method::PUT, "/v1/products/000000000000000/enable", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

async fn concurrent_enable_disable_keeps_one_history_chain(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let imei = hub2(&server).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let server = server.clone();
        let imei = imei.clone();
        tasks.push(tokio::spawn(async move {
            let action = if i % 3 == 0 { "disable" } else { "enable" };
            server
                .call(Method::PUT, &format!("/v1/products/{imei}/{action}"), None)
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let history = unit_table(&server, "enable_history", &imei).await;
    assert!(history.len() >= 2, "{history:?}");
    for pair in history.windows(2) {
        assert_eq!(
            pair[1]["prev_enable_state"], pair[0]["current_enable_state"],
            "broken chain: {pair:?}"
        );
        assert_ne!(
            pair[1]["prev_enable_state"],
            pair[1]["current_enable_state"]
        );
    }
    let p = product(&server, &imei).await;
    let status = unit::enable_status(
        p["current_enable_flag"].as_bool().unwrap(),
        p["desired_enable_flag"].as_bool().unwrap(),
    );
    let last = history.last().unwrap();
    assert_eq!(last["current_enable_state"], json!(status));
    assert_eq!(p["latest_enable_history_id"], last["enable_history_id"]);
    // One notification per change (creation included), last one matching.
    let n = notifications(&server, "product-status", &imei).await;
    assert_eq!(n.len(), history.len());
    assert_eq!(n.last().unwrap()["data"]["enabled_status"], json!(status));
}

async fn unit_report_confirms_pending_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    server
        .call(Method::PUT, &format!("/v1/products/{imei}/enable"), None)
        .await;
    let now = control_plane::values::now();
    let report = unit::UnitReport {
        enable_flag: Some(true),
        tamper_flag: None,
        software: None,
    };
    let outcome = apply_report(&server, &imei, &report, now).await;
    assert_eq!(outcome.enable_status, Some("enabled"));
    let p = product(&server, &imei).await;
    assert_eq!(
        (
            p["current_enable_flag"].clone(),
            p["desired_enable_flag"].clone()
        ),
        (json!(true), json!(true))
    );
    let history = unit_table(&server, "enable_history", &imei).await;
    let last = history.last().unwrap();
    assert_eq!(
        (
            last["prev_enable_state"].clone(),
            last["current_enable_state"].clone(),
            last["user"].clone()
        ),
        (
            json!("pending_enabled"),
            json!("enabled"),
            json!(unit::UNIT_USER)
        )
    );
    let n = notifications(&server, "product-status", &imei).await;
    assert_eq!(n.last().unwrap()["data"]["enabled_status"], "enabled");
    assert_eq!(n.last().unwrap()["data"]["user"], unit::UNIT_USER);
    // The same report again changes nothing.
    let outcome = apply_report(&server, &imei, &report, now).await;
    assert_eq!(outcome, unit::ReportOutcome::default());
    // A unit that turns itself off while desired on is pending_enabled again.
    let off = unit::UnitReport {
        enable_flag: Some(false),
        ..Default::default()
    };
    let outcome = apply_report(&server, &imei, &off, now).await;
    assert_eq!(outcome.enable_status, Some("pending_enabled"));
    let p = product(&server, &imei).await;
    assert!(p["disable_date"].is_string());
    // Rolled back with its transaction; unknown products are 404s.
    let mut tx = server.state.db.begin().await.unwrap();
    unit::apply_unit_report(&mut tx, &imei, &report, now)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(product(&server, &imei).await["current_enable_flag"], false);
    let mut tx = server.state.db.begin().await.unwrap();
    let err = unit::apply_unit_report(&mut tx, "999999999999999", &report, now)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);
    drop(tx);
    // What the gateway sends the unit next.
    let mut tx = server.state.db.begin().await.unwrap();
    let next = unit::unit_instructions(&mut tx, &imei).await.unwrap();
    assert!(next.desired_enable_flag);
    assert_eq!(next.pending_software, None);
}

async fn tamper_switch_pending_states(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let b = server
        .unit_action(Method::PUT, &imei, "enable_tamper_switch")
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product #{imei} tamper_switch_enabled"))
    );
    server
        .unit_action(Method::PUT, &imei, "enable_tamper_switch")
        .await;
    let history = unit_table(&server, "tamper_enable_history", &imei).await;
    assert_eq!(history.len(), 1, "idempotent");
    assert_eq!(history[0]["prev_tamper_enable_state"], "disabled");
    assert_eq!(history[0]["current_tamper_enable_state"], "pending_enabled");
    assert_eq!(history[0]["user"], common::ADMIN);
    let report = unit::UnitReport {
        tamper_flag: Some(true),
        ..Default::default()
    };
    let outcome = apply_report(&server, &imei, &report, control_plane::values::now()).await;
    assert_eq!(outcome.tamper_status, Some("enabled"));
    let b = server
        .unit_action(Method::PUT, &imei, "disable_tamper_switch")
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product #{imei} tamper_switch_disabled"))
    );
    let history = unit_table(&server, "tamper_enable_history", &imei).await;
    let states: Vec<&str> = history
        .iter()
        .map(|h| h["current_tamper_enable_state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec!["pending_enabled", "enabled", "pending_disabled"]
    );
    let p = product(&server, &imei).await;
    assert_eq!(
        (
            p["current_tamper_flag"].clone(),
            p["desired_tamper_flag"].clone()
        ),
        (json!(true), json!(false))
    );
}

/// A unit that reports software other than the pending update's, once before it runs any
/// known version and once after, counts one missed attempt each time.
async fn reports_of_other_software_count_missed_updates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    software(&server, "3.5").await;
    let new = software(&server, "3.6").await;
    server
        .put_ok(
            &format!("/v1/products/{imei}/update_software"),
            json!({"software": new}),
        )
        .await;
    let report = unit::UnitReport {
        software: Some("3.5".into()),
        ..Default::default()
    };
    for _ in 0..2 {
        apply_report(&server, &imei, &report, control_plane::values::now()).await;
    }
    let links = unit_table(&server, "product_software_linker", &imei).await;
    let pending: Vec<&Json> = links
        .iter()
        .filter(|l| l["software_version_type_id"] == json!(new))
        .collect();
    assert_eq!(pending.len(), 1, "{links:?}");
    assert!(
        pending[0]["date_added"].is_null(),
        "still pending: {links:?}"
    );
    assert_eq!(pending[0]["update_attempts"], json!(2), "{links:?}");
}

async fn software_update_lock_and_expiry(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let old = software(&server, "3.5").await;
    let new = software(&server, "3.6").await;
    let base = format!("/v1/products/{imei}");
    let b = server
        .put_ok(
            &format!("{base}/update_software"),
            json!({"software": "3.5"}),
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!("#{imei} updated to software_version 3.5"))
    );
    // A newer request supersedes the pending one (by id this time).
    server
        .put_ok(&format!("{base}/update_software"), json!({"software": new}))
        .await;
    let links = unit_table(&server, "product_software_linker", &imei).await;
    assert_eq!(links.len(), 2);
    assert!(
        links[0]["date_removed"].is_string() && links[0]["date_added"].is_null(),
        "expired: {links:?}"
    );
    assert!(
        links[1]["date_removed"].is_null() && links[1]["date_added"].is_null(),
        "pending"
    );
    // The unit confirms the update.
    let report = unit::UnitReport {
        software: Some("3.6".into()),
        ..Default::default()
    };
    let outcome = apply_report(&server, &imei, &report, control_plane::values::now()).await;
    assert!(outcome.software_changed);
    let links = unit_table(&server, "product_software_linker", &imei).await;
    assert!(links[1]["date_added"].is_string(), "active now: {links:?}");
    // Unknown software, missing argument: 400.
    let (s, b) = server
        .put(
            &format!("{base}/update_software"),
            json!({"software": "9.9"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["software"].is_string());
    let (s, _) = server
        .put(&format!("{base}/update_software"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Locked: only the locked version may be scheduled.
    let b = server
        .put_ok(&format!("{base}/lock_software"), json!({"software": old}))
        .await;
    assert_eq!(
        b["message"],
        json!(format!(
            "#{imei} updated and locked to software_version 3.5"
        ))
    );
    assert_eq!(
        b["data"],
        json!({"software_lock_id": old, "software_lock_name": "3.5"})
    );
    assert_eq!(product(&server, &imei).await["software_lock"], json!(old));
    let (s, b) = server
        .put(
            &format!("{base}/update_software"),
            json!({"software": "3.6"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Expire the pending update the lock scheduled.
    let b = server
        .call_expecting(
            StatusCode::OK,
            Method::PUT,
            &format!("{base}/expire_software_updates"),
            None,
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product {imei} had 1 software update(s) expired"))
    );
    let (_, b) = server
        .call(
            Method::PUT,
            &format!("{base}/expire_software_updates"),
            None,
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product {imei} had no pending updates to expire"))
    );
    // A blank payload removes the lock.
    let b = server
        .call_expecting(
            StatusCode::OK,
            Method::PUT,
            &format!("{base}/lock_software"),
            None,
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!("#{imei} software_lock is now removed"))
    );
    assert_eq!(
        b["data"],
        json!({"software_lock_id": null, "software_lock_name": null})
    );
    server
        .put_ok(&format!("{base}/lock_software"), json!({"software": null}))
        .await;
    assert!(product(&server, &imei).await["software_lock"].is_null());
    // SYSTEM only.
    let admin = server.user("admin@sw", "ADMIN", "GLOBAL", None).await;
    for action in [
        "update_software",
        "lock_software",
        "expire_software_updates",
    ] {
        let (s, _) = server
            .put_as(
                &admin,
                &format!("{base}/{action}"),
                json!({"software": "3.5"}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{action}");
    }
}

// ---------------------------------------------------------------------- SMS

async fn wakeup_sms_receipts_and_expiry(backend: Backend) {
    let provider = common::sms_provider().await;
    let server = TestServer::start_with(backend, |c| c.sms_http_url = Some(provider.url)).await;
    let imei = hub2(&server).await;
    let b = server.unit_action(Method::POST, &imei, "send_wakeup").await;
    assert_eq!(b["message"], "sms successfully sent");
    let row = &b["data"];
    assert_eq!(row["product_imei"], json!(imei));
    assert_eq!(row["trigger"], "wakeup");
    assert_eq!(row["attempted_retries"], 0);
    assert!(row["status"].is_null());
    assert!(row["enable_history_id"].is_null());
    let sent = control_plane::values::parse_datetime(row["sent_time"].as_str().unwrap()).unwrap();
    let timeout =
        control_plane::values::parse_datetime(row["sms_timeout"].as_str().unwrap()).unwrap();
    assert_eq!((timeout - sent).num_seconds(), 3600);
    let reference = row["message_reference"].as_str().unwrap().to_string();
    // Receipt: Delivered (idempotent).
    for _ in 0..2 {
        let b = server
            .post_ok(
                "/v1/sms/delivery_receipt",
                json!({"message_reference": reference, "status": "delivered"}),
            )
            .await;
        assert_eq!(b["data"]["status"], "Delivered");
        assert!(b["data"]["modified_at"].is_string());
    }
    let (s, _) = server
        .post(
            "/v1/sms/delivery_receipt",
            json!({"message_reference": "nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = server
        .post(
            "/v1/sms/delivery_receipt",
            json!({"message_reference": reference, "status": "lost"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A second SMS expires after its timeout, not before.
    let (_, b) = server
        .call(
            Method::POST,
            &format!("/v1/products/{imei}/send_wakeup"),
            None,
        )
        .await;
    let second = b["data"]["message_reference"].as_str().unwrap().to_string();
    let now = control_plane::values::now();
    let mut tx = server.state.db.begin().await.unwrap();
    assert_eq!(sms::expire_undelivered(&mut tx, now).await.unwrap(), 0);
    assert_eq!(
        sms::expire_undelivered(&mut tx, now + chrono::Duration::seconds(3601))
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let rows = server
        .unit_rows("/v1/sms_histories", &imei, "sms_history_id")
        .await;
    assert_eq!(
        rows[0]["status"], "Delivered",
        "delivered SMS do not expire"
    );
    assert_eq!(rows[1]["status"], "Expired");
    // A late receipt leaves it Expired.
    let b = server
        .post_ok(
            "/v1/sms/delivery_receipt",
            json!({"message_reference": second}),
        )
        .await;
    assert_eq!(b["data"]["status"], "Expired");
    // ADMIN for send_wakeup, SYSTEM for receipts.
    let tech = server.user("tech@sms", "TECHNICAL", "GLOBAL", None).await;
    let admin = server.user("admin@sms", "ADMIN", "GLOBAL", None).await;
    let path = format!("/v1/products/{imei}/send_wakeup");
    assert_eq!(
        server.call_as(&tech, Method::POST, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.call_as(&admin, Method::POST, &path, None).await.0,
        StatusCode::OK
    );
    let (s, _) = server
        .post_as(
            &admin,
            "/v1/sms/delivery_receipt",
            json!({"message_reference": reference}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A SYSTEM user of another entity does not reach this unit's SMS.
    let other = entity(&server, "SMS Other").await;
    let scoped = server
        .user("system@sms", "SYSTEM", "ENTITY", Some(other))
        .await;
    let (s, _) = server
        .post_as(
            &scoped,
            "/v1/sms/delivery_receipt",
            json!({"message_reference": reference}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn http_sms_provider_posts_and_failures_are_recorded(backend: Backend) {
    let common::SmsProvider {
        url,
        received,
        fail,
    } = common::sms_provider().await;
    let server = TestServer::start_with(backend, |c| {
        c.sms_http_url = Some(url);
        c.sms_http_token = Some("secret".into());
    })
    .await;
    let imei = hub2(&server).await;
    let b = server.unit_action(Method::POST, &imei, "send_wakeup").await;
    assert_eq!(b["data"]["message_reference"], "prov-123");
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["product_imei"], json!(imei));
        assert_eq!(got[0]["message"], "WAKEUP");
        assert!(got[0]["imsi"].is_string());
    }
    fail.store(true, Ordering::Relaxed);
    let b = server
        .call_expecting(
            StatusCode::BAD_GATEWAY,
            Method::POST,
            &format!("/v1/products/{imei}/send_wakeup"),
            None,
        )
        .await;
    assert_eq!(b["data"]["status"], "Failed");
}

// ----------------------------------------------------------------- entities

async fn entity_assignment_and_unknown_entity_rule(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let a = entity(&server, "Entity A").await;
    let b_id = entity(&server, "Entity B").await;
    let base = format!("/v1/products/{imei}");
    let b = server
        .put_ok(&format!("{base}/assign_entity"), json!({"entity_id": a}))
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product #{imei} assigned to entity: {a}"))
    );
    assert_eq!(
        b["data"],
        json!({ imei.clone(): ["Entity A"] }),
        "Unknown Entity removed"
    );
    // Assigning again is a no-op; a second entity adds.
    server
        .put(&format!("{base}/assign_entity"), json!({"entity_id": a}))
        .await;
    let (_, b) = server
        .put(&format!("{base}/assign_entity"), json!({"entity_id": b_id}))
        .await;
    assert_eq!(b["data"], json!({ imei.clone(): ["Entity A", "Entity B"] }));
    let (s, b) = server
        .put(
            &format!("{base}/change_entity"),
            json!({"old_entity_id": a, "new_entity_id": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let c = entity(&server, "Entity C").await;
    let b = server
        .put_ok(
            &format!("{base}/change_entity"),
            json!({"old_entity_id": a, "new_entity_id": c}),
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product #{imei} assigned to entity: {c}"))
    );
    assert_eq!(b["data"], json!({ imei.clone(): ["Entity B", "Entity C"] }));
    let b = server
        .put_ok(&format!("{base}/remove_entity"), json!({"entity_id": b_id}))
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Entity #{b_id} removed from Product #{imei}"))
    );
    let (_, b) = server
        .put(&format!("{base}/remove_entity"), json!({"entity_id": c}))
        .await;
    assert_eq!(
        b["data"],
        json!({ imei.clone(): ["Unknown Entity"] }),
        "restored"
    );
    // Validation errors.
    for (path, body, field) in [
        ("assign_entity", json!({"entity_id": 999_999}), "entity_id"),
        ("assign_entity", json!({}), "entity_id"),
        ("assign_entity", json!({"entity_id": "x"}), "entity_id"),
        ("remove_entity", json!({"entity_id": a}), "entity_id"),
        ("remove_entity", json!({"entity_id": 1}), "entity_id"),
        (
            "change_entity",
            json!({"old_entity_id": a, "new_entity_id": c}),
            "old_entity_id",
        ),
        (
            "change_entity",
            json!({"old_entity_id": 1, "new_entity_id": 999_999}),
            "new_entity_id",
        ),
    ] {
        let (s, b) = server.put(&format!("{base}/{path}"), body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {b}");
        assert!(
            b["validation_errors"][field].is_string(),
            "{path} {body}: {b}"
        );
    }
    // History is kept: every link that ever was.
    let links = unit_table(&server, "product_entity_linker", &imei).await;
    assert_eq!(
        links.iter().filter(|l| l["date_removed"].is_null()).count(),
        1
    );
    assert!(links.len() >= 5);
}

async fn change_state_follows_the_transition_table(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let path = format!("/v1/products/{imei}/change_state");
    let b = server.put_ok(&path, json!({"new_state": 3})).await;
    assert_eq!(
        b,
        json!({"status": "success", "message": "Product state changed", "data": null})
    );
    move_to(&server, &imei, &[5, 8]).await;
    let (s, b) = server.put(&path, json!({"new_state": 2})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({
            "status": "validation-error",
            "validation_errors": {"state_transition": " A unit may not transition from state '8' to state '2'"},
            "message": "Your request contained invalid data. See 'data' or 'validation_errors' for exact details",
            "data": {"state_transition": " A unit may not transition from state '8' to state '2'"},
        })
    );
    for bad in [
        json!({}),
        json!({"new_state": 10}),
        json!({"new_state": "ACTIVATED"}),
    ] {
        let (s, b) = server.put(&path, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(
            b["validation_errors"]["new_state"].is_string(),
            "{bad}: {b}"
        );
    }
    move_to(&server, &imei, &[9]).await;
    let (s, _) = server.put(&path, json!({"new_state": 5})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "TERMINATED is final");
    let states = server.unit_rows("/v1/states", &imei, "state_id").await;
    let chain: Vec<(i64, i64)> = states
        .iter()
        .map(|s| {
            (
                s["prev_state_type"].as_i64().unwrap(),
                s["current_state_type"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(chain, vec![(1, 1), (1, 2), (2, 3), (3, 5), (5, 8), (8, 9)]);
    let n: Vec<Json> = notifications(&server, "product-status", &imei)
        .await
        .iter()
        .map(|n| n["data"]["state"].clone())
        .collect();
    assert_eq!(n, vec![json!(2), json!(3), json!(5), json!(8), json!(9)]);
    let tech = server.user("tech@state", "TECHNICAL", "GLOBAL", None).await;
    let (s, _) = server.put_as(&tech, &path, json!({"new_state": 5})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

// -------------------------------------------------------------- fleet data

async fn parts_locations_parameters_and_networks(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    // parts: current parts with their linker and type, and replacements.
    server.post_created("/v1/part_type_replacement_linker", json!({"product_type_id": 7, "existing_part_type_id": 77, "replacement_part_type_id": 44,
                        "default_part_type": true, "critical_part_type": true, "non_transferable": false})).await;
    let b = server.get_ok(&format!("/v1/products/{imei}/parts")).await;
    assert_eq!(b["message"], "Parts found.");
    let parts = b["data"].as_object().unwrap();
    assert_eq!(parts.len(), 2, "pcb and sim: {b}");
    let pcb = parts.values().find(|p| p["part_type_id"] == 77).unwrap();
    assert_eq!(pcb["part_product_linker"]["product_imei"], json!(imei));
    assert_eq!(pcb["part_type"]["name"], "BBOXX Hub 2 PCB (Hyena)");
    assert_eq!(pcb["replacement_part_types"][0]["part_type_id"], 44);
    let pcb_id = pcb["part_id"].as_i64().unwrap();
    // locations: the latest located connection per product.
    for (date, lat, failed) in [
        ("2020-01-01T00:00:00", "1.0", false),
        ("2020-01-02T00:00:00", "2.0", false),
        ("2020-01-03T00:00:00", "9.9", true),
    ] {
        server
            .seed(
                "connection",
                json!({"product_imei": imei, "date": date, "latitude": lat, "longitude": "3.0",
                       "error_radius": 10, "location_failed_flag": failed}),
            )
            .await;
    }
    let b = server.get_ok("/v1/products/locations").await;
    assert_eq!(
        b,
        json!({"data": [{"product_imei": imei, "latitude": "2.0", "longitude": "3.0", "error_radius": 10}]})
    );
    let (s, _) = server.get("/v1/products/locations?page=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, b) = server
        .get("/v1/products/locations?page=2&results_per_page=1")
        .await;
    assert_eq!(b["data"], json!([]));
    // parameters/history: full, and as of a date (body or query string).
    let pt = server.seed("parameter_type", json!({})).await;
    for (value, status, added, removed) in [
        (
            "5",
            "removed",
            Some("2020-01-01T00:00:00"),
            Some("2020-02-01T00:00:00"),
        ),
        ("6", "active", Some("2020-02-01T00:00:00"), None),
        ("7", "pending", None, None),
    ] {
        server
            .seed(
                "product_parameter",
                json!({"product_imei": imei, "parameter_type_id": pt, "value": value, "status": status,
                       "date_added": added, "date_removed": removed}),
            )
            .await;
    }
    server
        .seed(
            "part_parameter",
            json!({"part_id": pcb_id, "parameter_type_id": pt, "value": "x", "status": "active",
                   "date_added": "2020-01-15T00:00:00", "date_removed": null}),
        )
        .await;
    let hist = format!("/v1/products/{imei}/parameters/history");
    let b = server.get_ok(&hist).await;
    assert_eq!(
        b["message"],
        json!(format!(
            "Full parameter history for #{imei} returned successfully"
        ))
    );
    assert_eq!(b["data"]["product_parameters"].as_array().unwrap().len(), 3);
    assert_eq!(
        b["data"]["part_parameters"][pcb_id.to_string()]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        b["data"]["part_parameters"].as_object().unwrap().len(),
        2,
        "every part listed"
    );
    // As of a date (in the body): what was active then, shown as active;
    // the parts were only fitted when the product was built.
    let b = server
        .call_expecting(
            StatusCode::OK,
            Method::GET,
            &hist,
            Some(json!({"date": "2020-01-20 00:00:00"})),
        )
        .await;
    let set = b["data"]["product_parameters"].as_array().unwrap();
    assert_eq!(set.len(), 1, "{b}");
    assert_eq!(
        (set[0]["value"].clone(), set[0]["status"].clone()),
        (json!("5"), json!("active"))
    );
    assert_eq!(b["data"]["part_parameters"], json!({}), "{b}");
    // ...or in the query string.
    let (_, b) = server.get(&format!("{hist}?date=2999-01-01")).await;
    assert_eq!(
        b["data"]["product_parameters"].as_array().unwrap().len(),
        1,
        "{b}"
    );
    assert_eq!(b["data"]["product_parameters"][0]["value"], "6");
    assert_eq!(
        b["data"]["part_parameters"][pcb_id.to_string()][0]["value"],
        "x",
        "{b}"
    );
    let (s, _) = server.get(&format!("{hist}?date=yesterday")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // available_networks: the unit's SIM provider's networks in a country.
    let provider = server.seed("sim_provider", json!({})).await;
    server
        .seed(
            "sim_part_type_sim_provider_linker",
            json!({"sim_part_type_id": 43, "sim_provider_id": provider}),
        )
        .await;
    for (mccmnc, mcc, mnc, name) in [
        (63510, 635, 10, "Rwanda MTN"),
        (63514, 635, 14, "Rwanda Airtel"),
        (64002, 640, 2, "TZ"),
    ] {
        server
            .seed(
                "network",
                json!({"mccmnc": mccmnc, "mcc": mcc, "mnc": mnc, "name": name}),
            )
            .await;
        server
            .seed(
                "sim_provider_network_linker",
                json!({"sim_provider_id": provider, "network_id": mccmnc}),
            )
            .await;
    }
    server
        .seed(
            "network",
            json!({"mccmnc": 63513, "mcc": 635, "mnc": 13, "name": "Not ours"}),
        )
        .await;
    let b = server
        .get_ok(&format!("/v1/products/{imei}/available_networks?mcc=635"))
        .await;
    let names: Vec<&str> = b["data"]["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Rwanda MTN", "Rwanda Airtel"]);
    for bad in ["", "?mcc=abc", "?mcc=-1"] {
        let (s, b) = server
            .get(&format!("/v1/products/{imei}/available_networks{bad}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["status"], "error");
    }
}

async fn connectivity_reliability_rate_and_its_400s(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    for h in [1, 5, 9] {
        server
            .seed(
                "connection",
                json!({"product_imei": imei, "date": format!("2017-01-01T{h:02}:00:00"), "location_failed_flag": true}),
            )
            .await;
    }
    let path = format!("/v1/products/{imei}/connectivity_reliability_rate");
    // 24 hours expect 6 connections; 3 happened.
    let b = server
        .call_expecting(
            StatusCode::OK,
            Method::GET,
            &path,
            Some(json!({"start": "2017-01-01 00:00:00", "end": "2017-01-02T00:00:00"})),
        )
        .await;
    assert_eq!(
        b["message"],
        "Successfully computed product connectivity reliability rate"
    );
    assert_eq!(b["data"]["connectivity_reliability_rate"], 0.5);
    // Query string works too; 8 hours expect 2 -> capped at 1.00.
    let (_, b) = server
        .get(&format!(
            "{path}?start=2017-01-01T00:00:00&end=2017-01-01T08:00:00"
        ))
        .await;
    assert_eq!(b["data"]["connectivity_reliability_rate"], 1.0);
    // Defaults: the last 7 days, no connections.
    let b = server.get_ok(&path).await;
    assert_eq!(b["data"]["connectivity_reliability_rate"], 0.0);
    for bad in [
        json!({"start": "not a date"}),
        json!({"end": "2999-01-01T00:00:00"}),
        json!({"start": "2017-01-02T00:00:00", "end": "2017-01-01T00:00:00"}),
        json!({"start": 5}),
    ] {
        let b = server
            .call_expecting(
                StatusCode::BAD_REQUEST,
                Method::GET,
                &path,
                Some(bad.clone()),
            )
            .await;
        assert!(b["message"].as_str().unwrap().contains("'"), "{b}");
    }
}

async fn energy_limit_dcm_and_payg(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let path = format!("/v1/products/{imei}/suggest_energy_limit");
    // STORED: not allowed.
    let (s, b) = server.put(&path, json!({"energy_limit": "50"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["state"].is_string());
    move_to(&server, &imei, &[3, 5]).await;
    // No defaults: applied as requested.
    let b = server.put_ok(&path, json!({"energy_limit": "50"})).await;
    assert_eq!(b["data"]["applied"], 50.0);
    assert_eq!(b["data"]["bounded"], false);
    // The SIM's part type stands in for a battery type in the defaults table.
    server
        .seed(
            "default_energy_limit",
            json!({"battery_type_id": 43, "state_type_id": 5, "entity_id": null,
                   "energy_limit": 40.0, "max_energy_limit": 80.0, "min_energy_limit": 10.0}),
        )
        .await;
    let (_, b) = server.put(&path, json!({"energy_limit": "120"})).await;
    assert_eq!(
        b["data"],
        json!({"requested": 120.0, "applied": 80.0, "max_energy_limit": 80.0, "min_energy_limit": 10.0,
               "energy_limit_cap": null, "bounded": true}),
        "{b}"
    );
    let cap_type = server
        .seed("parameter_type", json!({"name": "energy_limit_cap"}))
        .await;
    server
        .seed("product_parameter", json!({"product_imei": imei, "parameter_type_id": cap_type, "value": "60", "status": "active"}))
        .await;
    let (_, b) = server.put(&path, json!({"energy_limit": 70})).await;
    assert_eq!(b["data"]["applied"], 60.0);
    assert_eq!(b["data"]["energy_limit_cap"], 60.0);
    let (_, b) = server.put(&path, json!({"energy_limit": "5"})).await;
    assert_eq!(b["data"]["applied"], 10.0);
    // Only the latest suggestion is pending.
    let params = server
        .unit_rows("/v1/product_parameters", &imei, "product_parameter_id")
        .await;
    assert_eq!(
        params.iter().filter(|p| p["status"] == "pending").count(),
        1
    );
    assert_eq!(
        params.iter().filter(|p| p["status"] == "expired").count(),
        3
    );
    for bad in [
        json!({}),
        json!({"energy_limit": "lots"}),
        json!({"energy_limit": "-1"}),
    ] {
        let (s, b) = server.put(&path, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b["validation_errors"]["energy_limit"].is_string());
    }
    let tae = server
        .seed("parameter_type", json!({"name": "total_accessory_energy"}))
        .await;
    server
        .seed("product_parameter", json!({"product_imei": imei, "parameter_type_id": tae, "value": "30", "status": "active"}))
        .await;
    let (s, b) = server.put(&path, json!({"energy_limit": "50"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "locked: {b}");
    // DCM flag, PAYG flag.
    let b = server
        .put_ok(
            &format!("/v1/products/{imei}/set_dcm_enabled_flag"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!("Product {imei}. DCM Enabled Flag set to True"))
    );
    assert_eq!(product(&server, &imei).await["dcm_enabled_flag"], true);
    let (s, _) = server
        .put(
            &format!("/v1/products/{imei}/set_dcm_enabled_flag"),
            json!({"enabled": "maybe"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let b = server
        .put_ok(
            &format!("/v1/products/{imei}/set_is_payg"),
            json!({"is_payg": false}),
        )
        .await;
    assert_eq!(
        b["message"],
        json!(format!(
            "is_payg for the Product {imei}, has been set to=False"
        ))
    );
    assert_eq!(product(&server, &imei).await["is_payg"], false);
    let (s, _) = server
        .put(&format!("/v1/products/{imei}/set_is_payg"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // BP20 units are DCM enabled and stay so.
    let (_, pt) = server
        .put("/v1/product_types/7", json!({"name": "BBOXX BP20 Hub"}))
        .await;
    assert_eq!(pt["name"], "BBOXX BP20 Hub");
    let (s, b) = server
        .put(
            &format!("/v1/products/{imei}/set_dcm_enabled_flag"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let bp20 = hub2(&server).await;
    assert_eq!(
        product(&server, &bp20).await["dcm_enabled_flag"],
        true,
        "created DCM enabled"
    );
}

async fn dashboard2_and_current_enable_status(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = hub2(&server).await;
    let b_imei = hub2(&server).await;
    let e = entity(&server, "Dash Entity").await;
    server
        .put(
            &format!("/v1/products/{a}/assign_entity"),
            json!({"entity_id": e}),
        )
        .await;
    server
        .call(Method::PUT, &format!("/v1/products/{a}/enable"), None)
        .await;
    server
        .seed(
            "product_note",
            json!({"product_imei": a, "note_text": "hello"}),
        )
        .await;
    server
        .seed("connection", json!({"product_imei": a, "date": "2020-05-05T05:05:05", "latitude": "1.5", "longitude": "2.5", "error_radius": 7, "location_failed_flag": false}))
        .await;
    let body = server.get_ok("/v1/dashboard2").await;
    assert_eq!(body["num_results"], 2);
    assert_eq!(body["num_results_filtered"], 2);
    let q = json!({"filters": [{"name": "entities", "op": "eq", "val": "Dash Entity"}]});
    let (s, body) = server.list("/v1/dashboard2", q).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["num_results"], 2);
    assert_eq!(body["num_results_filtered"], 1);
    let d = &body["data"][0];
    assert_eq!(d["product_imei"], json!(a));
    for key in [
        "product_imei",
        "serial_number",
        "imsi",
        "hardware_type",
        "entities",
        "hub_id",
        "shop_id",
        "location_date",
        "alerts",
        "software_lock",
        "pending_software_created_at",
        "state",
        "state_date",
        "recent_connection",
        "latitude",
        "longitude",
        "error_radius",
        "capacity_limit",
        "current_enable_flag",
        "desired_enable_flag",
        "current_tamper_flag",
        "desired_tamper_flag",
        "notes",
        "software",
        "pending_software",
        "created_at",
        "created_by",
        "modified_at",
    ] {
        assert!(d.get(key).is_some(), "missing {key}: {d}");
    }
    assert_eq!(d["hardware_type"], "BBOXX Hub 2");
    assert_eq!(d["state"], "stored");
    assert_eq!(d["entities"][0]["name"], "Dash Entity");
    assert_eq!(d["latitude"], "1.5");
    assert_eq!(d["recent_connection"], "2020-05-05T05:05:05.000000");
    assert_eq!(d["notes"][0]["note_text"], "hello");
    assert_eq!(d["desired_enable_flag"], true);
    let q = json!({"filters": [{"name": "product_imei", "op": "eq", "val": b_imei}]});
    let (_, body) = server.list("/v1/dashboard2", q).await;
    assert_eq!(body["num_results_filtered"], 1);
    assert_eq!(body["data"][0]["entities"][0]["name"], "Unknown Entity");
    let (s, _) = server
        .list(
            "/v1/dashboard2",
            json!({"filters": [{"name": "nope", "op": "eq", "val": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // current_enable_status: FACTORY, paged.
    let body = server
        .get_ok("/v1/current_enable_status?page=1&results_per_page=1")
        .await;
    assert_eq!(body["message"], "enable_histories retrieved");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let (_, body) = server
        .get("/v1/current_enable_status?results_per_page=10")
        .await;
    let row = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["product_imei"] == json!(a))
        .unwrap()
        .clone();
    assert_eq!(row["current_enable_state"], "pending_enabled");
    assert_eq!(row["prev_enable_state"], "disabled");
    assert_eq!(row["entity"], "Dash Entity");
    assert_eq!(row["entity_id"], json!(e));
    assert_eq!(row["current_state_type"], 2);
    assert_eq!(row["hardware_type"], "BBOXX Hub 2");
    assert_eq!(row["user"], common::ADMIN);
    let admin = server.user("admin@ces", "ADMIN", "GLOBAL", None).await;
    assert_eq!(
        server.get_as(&admin, "/v1/current_enable_status").await.0,
        StatusCode::FORBIDDEN
    );
    // ENTITY users see their entity's products only.
    let scoped = server.user("view@dash", "FACTORY", "ENTITY", Some(e)).await;
    let (_, body) = server.get_as(&scoped, "/v1/dashboard2").await;
    assert_eq!(body["num_results"], 1);
    let (_, body) = server.get_as(&scoped, "/v1/current_enable_status").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

async fn alert_dismissal_publishes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let alert = server
        .seed("alert", json!({"product_imei": imei, "dismissed_at": null, "dismissed_by": null, "repair_id": null}))
        .await;
    let path = format!("/v1/alerts/{alert}/dismiss");
    let (s, b) = server
        .put(
            &path,
            json!({"dismissal_reason": "fixed", "extra_info": "by phone", "repair_id": 999_999}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let b = server
        .put_ok(
            &path,
            json!({"dismissal_reason": "fixed", "extra_info": "by phone"}),
        )
        .await;
    assert_eq!(
        b,
        json!({"status": "success", "message": format!("Alert #{alert} has been dismissed"), "data": null})
    );
    let (_, row) = server.get(&format!("/v1/alerts/{alert}")).await;
    assert_eq!(row["dismissed_by"], common::ADMIN);
    assert_eq!(row["dismissal_reason"], "fixed");
    let n = notifications(&server, "product-alert", &imei).await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["data"]["alert_id"], alert);
    assert_eq!(n[0]["data"]["dismissal_reason"], "fixed");
    assert_eq!(n[0]["data"]["dismissed_at"], row["dismissed_at"]);
    // Twice: success, nothing published.
    server
        .call_expecting(StatusCode::OK, Method::PUT, &path, None)
        .await;
    assert_eq!(
        notifications(&server, "product-alert", &imei).await.len(),
        1
    );
    assert_eq!(
        server
            .call(Method::PUT, "/v1/alerts/abc/dismiss", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .call(Method::PUT, "/v1/alerts/999999/dismiss", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = server.put(&path, json!({"colour": "red"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let viewer = server.user("view@alert", "OVERVIEW", "GLOBAL", None).await;
    assert_eq!(
        server.call_as(&viewer, Method::PUT, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    let other = entity(&server, "Alert Other").await;
    let scoped = server
        .user("tech@alert", "TECHNICAL", "ENTITY", Some(other))
        .await;
    assert_eq!(
        server.call_as(&scoped, Method::PUT, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
}

// ------------------------------------------- permissions and scope, sweeping

/// Every product endpoint: a SYSTEM user scoped to another entity gets 404
/// (the product's existence is not revealed), the same user on their own
/// entity's product does not; a user below the endpoint's level gets 403.
async fn permissions_and_entity_scope_on_every_product_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mine = entity(&server, "Mine").await;
    let theirs = entity(&server, "Theirs").await;
    let own = hub2(&server).await;
    let foreign = hub2(&server).await;
    server
        .put(
            &format!("/v1/products/{own}/assign_entity"),
            json!({"entity_id": mine}),
        )
        .await;
    server
        .put(
            &format!("/v1/products/{foreign}/assign_entity"),
            json!({"entity_id": theirs}),
        )
        .await;
    let scoped = server
        .user("system@mine", "SYSTEM", "ENTITY", Some(mine))
        .await;
    let viewer = server.user("view@perm", "OVERVIEW", "GLOBAL", None).await;
    let tech = server.user("tech@perm", "TECHNICAL", "GLOBAL", None).await;
    software(&server, "1.0").await;
    // (method, path suffix, body, minimum level)
    let endpoints: Vec<(Method, &str, Option<Json>, &str)> = vec![
        (Method::PUT, "enable", None, "TECHNICAL"),
        (Method::PUT, "disable", None, "TECHNICAL"),
        (Method::PUT, "enable_tamper_switch", None, "TECHNICAL"),
        (Method::PUT, "disable_tamper_switch", None, "TECHNICAL"),
        (
            Method::PUT,
            "update_software",
            Some(json!({"software": "1.0"})),
            "SYSTEM",
        ),
        (
            Method::PUT,
            "lock_software",
            Some(json!({"software": null})),
            "SYSTEM",
        ),
        (Method::PUT, "expire_software_updates", None, "SYSTEM"),
        (Method::POST, "send_wakeup", None, "ADMIN"),
        (
            Method::PUT,
            "assign_entity",
            Some(json!({"entity_id": mine})),
            "ADMIN",
        ),
        (
            Method::PUT,
            "change_entity",
            Some(json!({"old_entity_id": mine, "new_entity_id": mine})),
            "ADMIN",
        ),
        (
            Method::PUT,
            "remove_entity",
            Some(json!({"entity_id": 999})),
            "ADMIN",
        ),
        (
            Method::PUT,
            "change_state",
            Some(json!({"new_state": 3})),
            "ADMIN",
        ),
        (Method::GET, "parts", None, "OVERVIEW"),
        (Method::GET, "parameters/history", None, "OVERVIEW"),
        (
            Method::GET,
            "connectivity_reliability_rate",
            None,
            "OVERVIEW",
        ),
        (Method::GET, "available_networks?mcc=635", None, "OVERVIEW"),
        (
            Method::PUT,
            "suggest_energy_limit",
            Some(json!({"energy_limit": "1"})),
            "TECHNICAL",
        ),
        (
            Method::PUT,
            "set_dcm_enabled_flag",
            Some(json!({"enabled": true})),
            "TECHNICAL",
        ),
        (
            Method::PUT,
            "set_is_payg",
            Some(json!({"is_payg": true})),
            "TECHNICAL",
        ),
    ];
    for (method, suffix, body, level) in endpoints {
        let path = format!("/v1/products/{foreign}/{suffix}");
        let (s, b) = server
            .call_as(&scoped, method.clone(), &path, body.clone())
            .await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "other entity's unit {suffix}: {b}"
        );
        let path = format!("/v1/products/{own}/{suffix}");
        let (s, b) = server
            .call_as(&scoped, method.clone(), &path, body.clone())
            .await;
        assert_ne!(s, StatusCode::NOT_FOUND, "own unit {suffix}: {b}");
        assert_ne!(s, StatusCode::FORBIDDEN, "own unit {suffix}: {b}");
        let below = match level {
            "TECHNICAL" => Some(&viewer),
            "ADMIN" | "SYSTEM" => Some(&tech),
            _ => None,
        };
        if let Some(token) = below {
            let (s, b) = server
                .call_as(token, method.clone(), &path, body.clone())
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{suffix} below {level}: {b}");
        }
        // No token at all.
        let r = server
            .client
            .request(method, server.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{suffix} without token"
        );
    }
    // Locations only list visible products.
    server
        .seed("connection", json!({"product_imei": foreign, "date": "2020-01-01T00:00:00", "latitude": "1", "longitude": "1", "location_failed_flag": false}))
        .await;
    let (_, b) = server.get_as(&scoped, "/v1/products/locations").await;
    assert_eq!(b["data"], json!([]));
    let (_, b) = server.get("/v1/products/locations").await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
}

/// Malformed bodies and arguments on every endpoint answer 4xx.
async fn bad_input_never_answers_500(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = hub2(&server).await;
    let bodies = [
        "[1,2]",
        "\"x\"",
        "{",
        "null",
        "{\"entity_id\": {\"a\": 1}}",
        "{\"software\": [1]}",
        "{\"new_state\": 1e30}",
        "{\"energy_limit\": true}",
        "{\"imei\": 5, \"imsi\": null}",
        "{\"pcb_imei\": \"' OR 1=1 --\"}",
        "{\"date\": 12, \"start\": [], \"end\": {}}",
    ];
    let paths: Vec<(Method, String)> = [
        "enable",
        "disable",
        "enable_tamper_switch",
        "update_software",
        "lock_software",
        "assign_entity",
        "change_entity",
        "remove_entity",
        "change_state",
        "suggest_energy_limit",
        "set_dcm_enabled_flag",
        "set_is_payg",
    ]
    .iter()
    .map(|s| (Method::PUT, format!("/v1/products/{imei}/{s}")))
    .chain(
        [
            "parts",
            "parameters/history",
            "connectivity_reliability_rate",
            "available_networks",
        ]
        .iter()
        .map(|s| (Method::GET, format!("/v1/products/{imei}/{s}"))),
    )
    .chain(
        [
            "/v1/parts/create_tiger_pcb",
            "/v1/parts/create_koala_pcb",
            "/v1/products/create_product/home2",
            "/v1/products/create_hub2",
            "/v1/products/create_enterprise",
            "/v1/sms/delivery_receipt",
        ]
        .iter()
        .map(|p| (Method::POST, p.to_string())),
    )
    .chain([(Method::PUT, "/v1/alerts/1/dismiss".to_string())])
    .collect();
    for (method, path) in &paths {
        for body in bodies {
            let r = server
                .client
                .request(method.clone(), server.url(path))
                .header("Authorization", format!("Token token={}", server.token))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(
                status.as_u16() < 500,
                "{method} {path} {body}: {status} {text}"
            );
        }
    }
    for q in [
        "%7B",
        "%5B%5D",
        "{\"filters\":[{\"name\":\"entities\",\"op\":\"zz\",\"val\":1}]}",
        "{\"filters\":[{\"name\":\"entities\"}]}",
    ] {
        let (s, b) = server.get(&format!("/v1/dashboard2?q={q}")).await;
        assert!(s.as_u16() < 500 && s != StatusCode::OK, "{q}: {s} {b}");
    }
    // Huge pages are served (capped), not failed.
    for p in [
        "/v1/dashboard2",
        "/v1/current_enable_status",
        "/v1/products/locations",
    ] {
        server
            .get_ok(&format!("{p}?results_per_page=100000000"))
            .await;
    }
    for q in ["page=x", "results_per_page=-1"] {
        for p in [
            "/v1/dashboard2",
            "/v1/current_enable_status",
            "/v1/products/locations",
        ] {
            let (s, _) = server.get(&format!("{p}?{q}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{p}?{q}");
        }
    }
}
