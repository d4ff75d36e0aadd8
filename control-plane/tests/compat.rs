//! Issue 19: what an existing client of the original API tripped on, through
//! real HTTP on SQLite and PostgreSQL: the spec's own POST examples for
//! networks and channels, the bootstrap administrator's entity, SMS that were
//! reported sent when nothing went out, the cell locator, and reads that
//! queued behind writes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use codec::mo::{Cell, CellReport, MoType};
use codec::{CorrelationId, Seq};
use common::{Backend, TestServer, ADMIN, ADMIN_PASSWORD};
use control_plane::rtc::{locator_from_config, ControlPlaneSink};
use ingest::sink::{MoContext, MoSink};
use reqwest::{Method, StatusCode};
use sea_query::{Alias, Expr, Query};
use serde_json::{json, Value as Json};

both_backends!(
    networks_are_created_as_the_spec_shows,
    channels_get_a_name_when_the_client_sends_none,
    the_bootstrap_administrator_belongs_to_an_entity,
    sms_without_a_provider_are_recorded_as_not_sent,
    the_configured_cell_locator_places_units,
    reads_do_not_wait_for_the_writer,
);

static NEXT: AtomicU32 = AtomicU32::new(1);

fn next_imei() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("8619{:03}{n:08}", std::process::id() % 1000)
}

/// A unit without RTC (so its wakeups go by SMS).
async fn plain_unit(server: &TestServer, imei: &str) {
    server
        .seed(
            "product",
            json!({"product_imei": imei, "rtc_enabled_flag": false}),
        )
        .await;
}

async fn post(server: &TestServer, path: &str, body: Json) -> (StatusCode, Json) {
    server.post(path, body).await
}

async fn networks_are_created_as_the_spec_shows(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The spec's example, verbatim: no mccmnc.
    let (s, b) = post(
        &server,
        "/v1/networks",
        json!({"name": "test", "mcc": 1, "mnc": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["mccmnc"], 101);
    assert_eq!(b["created_by"], ADMIN);
    let b = server.get_ok("/v1/networks/101").await;
    assert_eq!(b["name"], "test");
    // Real networks (MTN Rwanda, a three-digit MNC), and an explicit key.
    for (body, mccmnc) in [
        (json!({"name": "MTN Rwanda", "mcc": 635, "mnc": 10}), 63510),
        (json!({"name": "AT&T", "mcc": 310, "mnc": 410}), 310410),
        (
            json!({"mccmnc": 90001, "name": "explicit", "mcc": 900, "mnc": 1}),
            90001,
        ),
    ] {
        let (s, b) = post(&server, "/v1/networks", body).await;
        assert_eq!(
            (s, b["mccmnc"].clone()),
            (StatusCode::CREATED, json!(mccmnc))
        );
    }
    // The spec's PUT example keeps the key.
    let (s, b) = server
        .put(
            "/v1/networks/101",
            json!({"name": "changed", "mcc": 2, "mnc": 2}),
        )
        .await;
    assert_eq!((s, b["mccmnc"].clone()), (StatusCode::OK, json!(101)));
    // The same network twice is refused, naming the key.
    let (s, b) = post(
        &server,
        "/v1/networks",
        json!({"name": "again", "mcc": 635, "mnc": 10}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.to_string().contains("mccmnc"), "{b}");
    // Nothing to derive it from: a 400 that says what is missing.
    let (s, b) = post(&server, "/v1/networks", json!({"name": "no codes"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["validation_errors"]["mccmnc"]
            .as_str()
            .unwrap()
            .contains("'mcc' and 'mnc'"),
        "{b}"
    );
    let (s, b) = post(
        &server,
        "/v1/networks",
        json!({"name": "bad", "mcc": 1000, "mnc": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["mcc"].is_string(), "{b}");
}

async fn channels_get_a_name_when_the_client_sends_none(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The spec's example sends an empty object and gets a 15-digit name.
    let (s, b) = post(&server, "/v1/channels", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "000000000000000");
    let (s, b) = post(&server, "/v1/channels", json!({})).await;
    assert_eq!(
        (s, b["name"].clone()),
        (StatusCode::CREATED, json!("000000000000001"))
    );
    // Named channels are untouched and do not disturb the numbering.
    let (s, b) = post(&server, "/v1/channels", json!({"name": "999999999999999x"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = post(&server, "/v1/channels", json!({})).await;
    assert_eq!(
        (s, b["name"].clone()),
        (StatusCode::CREATED, json!("000000000000002"))
    );
    server.get_ok("/v1/channels/000000000000001").await;
}

async fn the_bootstrap_administrator_belongs_to_an_entity(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The test server's admin is ensured as SMARTSOLAR_ADMIN_USER is at start.
    let login = &server.login_successful(ADMIN, ADMIN_PASSWORD).await;
    let entity = login["entity_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("entity_id must be an integer: {login}"));
    let b = server.get_ok(&format!("/v1/entities/{entity}")).await;
    assert_eq!(b["name"], control_plane::startup::OPERATOR_ENTITY);
    assert_eq!(b["bboxx_company_flag"], true);
    // Ensured again (a restart): same entity, no second one.
    control_plane::startup::ensure_user(
        &server.state.db,
        ADMIN,
        ADMIN_PASSWORD,
        "SYSTEM",
        "GLOBAL",
        None,
    )
    .await
    .unwrap();
    let (s, b) = server
        .list(
            "/v1/entities",
            json!({"filters": [{"name": "name", "op": "eq", "val": control_plane::startup::OPERATOR_ENTITY}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["num_results"], 1, "{b}");
    assert_eq!(b["objects"][0]["entity_id"], entity);

    // A user created through the API without an entity belongs to the operator's, and no
    // PUT can take a user out of every entity.
    let (s, b) = post(
        &server,
        "/v1/users",
        json!({"username": "agent@example.com", "password": "call-centre-1",
               "permissions": "OVERVIEW", "user_product_visibility": "GLOBAL"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["entity_id"], entity, "{b}");
    let id = b["user_id"].as_i64().unwrap();
    let (s, b) = server
        .put(&format!("/v1/users/{id}"), json!({"entity_id": null}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.to_string().contains("entity_id"), "{b}");
}

async fn sms_rows(server: &TestServer, imei: &str) -> Vec<Json> {
    server
        .unit_rows("/v1/sms_histories", imei, "sms_history_id")
        .await
}

async fn sms_without_a_provider_are_recorded_as_not_sent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = next_imei();
    plain_unit(&server, &imei).await;
    let wakeup = format!("/v1/products/{imei}/send_wakeup");
    let b = server
        .call_expecting(StatusCode::SERVICE_UNAVAILABLE, Method::POST, &wakeup, None)
        .await;
    assert!(b["message"].as_str().unwrap().contains("not sent"), "{b}");
    assert_eq!(b["data"]["status"], "NotSent");
    // force_connection of a unit without RTC sends the same SMS.
    server
        .call_expecting(
            StatusCode::SERVICE_UNAVAILABLE,
            Method::POST,
            &format!("/v1/products/{imei}/force_connection"),
            None,
        )
        .await;
    let rows = sms_rows(&server, &imei).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row["status"], "NotSent", "{row}");
        assert!(
            row["status_info"]
                .as_str()
                .unwrap()
                .contains("SMARTSOLAR_SMS_HTTP_URL"),
            "{row}"
        );
    }
    // Not sent is final: the expiry pass leaves it, a receipt cannot deliver it.
    let later = control_plane::values::now() + chrono::Duration::days(1);
    let mut tx = server.state.db.begin().await.unwrap();
    control_plane::actions::sms::expire_undelivered(&mut tx, later)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(sms_rows(&server, &imei).await[0]["status"], "NotSent");

    // With a provider that refuses: Failed, with the provider's error.
    let provider = common::sms_provider().await;
    provider.fail.store(true, Ordering::Relaxed);
    let url = provider.url.clone();
    let server = TestServer::start_with(backend, |c| c.sms_http_url = Some(url)).await;
    plain_unit(&server, &imei).await;
    let b = server
        .call_expecting(StatusCode::BAD_GATEWAY, Method::POST, &wakeup, None)
        .await;
    assert_eq!(b["data"]["status"], "Failed");
    assert!(
        b["data"]["status_info"].as_str().unwrap().contains("500"),
        "{b}"
    );
    // Once it accepts: in flight (status null), no reason.
    provider.fail.store(false, Ordering::Relaxed);
    let b = server
        .call_expecting(StatusCode::OK, Method::POST, &wakeup, None)
        .await;
    assert!(b["data"]["status"].is_null(), "{b}");
    assert!(b["data"]["status_info"].is_null(), "{b}");
}

/// A loopback OpenCellID-style lookup that knows one cell.
async fn cell_lookup() -> String {
    let app = axum::Router::new().route(
        "/cell/get",
        axum::routing::get(
            |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| async move {
                let known = q.get("mcc").map(String::as_str) == Some("635")
                    && q.get("mnc").map(String::as_str) == Some("10")
                    && q.get("lac").map(String::as_str) == Some("77")
                    && q.get("cellid").map(String::as_str) == Some("8888")
                    && q.get("key").map(String::as_str) == Some("k3y")
                    && q.get("format").map(String::as_str) == Some("json");
                if known {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"lat": -1.5, "lon": 29.6, "range": 900})),
                    )
                } else {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(json!({"error": "Cell not found", "code": 1})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cell/get", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn the_configured_cell_locator_places_units(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cells.csv");
    std::fs::write(
        &csv,
        "radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal\n\
         GSM,635,10,2010,31311,0,30.0619,-1.9441,1200,5,1,1459692939,1459692939,0\n",
    )
    .unwrap();
    let url = cell_lookup().await;
    let (csv_path, lookup) = (csv.display().to_string(), url.clone());
    let server = TestServer::start_with(backend, move |c| {
        c.cell_locator_csv = Some(csv_path);
        c.cell_locator_url = Some(lookup);
        c.cell_locator_token = Some("k3y".into());
    })
    .await;
    let locator = locator_from_config(&server.state.config).unwrap();
    let sink = ControlPlaneSink::new(server.state.clone()).with_locator(locator);
    let imei = next_imei();
    server
        .seed(
            "product",
            json!({"product_imei": imei, "latest_connection_id": null,
                   "latest_connection_location_id": null}),
        )
        .await;
    let report = |cells: &[Cell]| -> Vec<Cell> { cells.to_vec() };
    // In the CSV; only in the lookup; known nowhere.
    let cases = [
        report(&[Cell {
            lac: 2010,
            cid: 31311,
            signal: -70,
            mcc: None,
            mnc: None,
        }]),
        report(&[
            Cell {
                lac: 1,
                cid: 1,
                signal: -90,
                mcc: None,
                mnc: None,
            },
            Cell {
                lac: 77,
                cid: 8888,
                signal: -80,
                mcc: None,
                mnc: None,
            },
        ]),
        report(&[Cell {
            lac: 5,
            cid: 5,
            signal: -70,
            mcc: None,
            mnc: None,
        }]),
    ];
    for (n, cells) in cases.iter().enumerate() {
        let ctx = MoContext {
            imei: &imei,
            correlation_id: CorrelationId([n as u8 + 1; 16]),
            received_at_ms: 1_780_000_000_000 + n as i64,
            transport: codec::envelope::Transport::Tcp,
            ident: None,
            message_type: MoType::CellReport,
            message: &[],
            mo_number: None,
        };
        let report = CellReport {
            mcc: Some(635),
            mnc: Some(10),
            cells: Seq::new(cells),
            ..Default::default()
        };
        sink.cell_report(&ctx, &report).await.unwrap();
    }
    let (s, b) = server
        .list(
            "/v1/connections",
            json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}],
                   "order_by": [{"field": "connection_id", "direction": "asc"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rows = b["objects"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{b}");
    assert_eq!(rows[0]["location_failed_flag"], false, "{}", rows[0]);
    assert_eq!(rows[0]["latitude"], "-1.944100");
    assert_eq!(rows[1]["location_failed_flag"], false, "{}", rows[1]);
    assert_eq!(rows[1]["longitude"], "29.600000");
    assert_eq!(rows[2]["location_failed_flag"], true, "{}", rows[2]);
    let (_, p) = server.get(&format!("/v1/products/{imei}")).await;
    assert_eq!(p["latest_connection_location_id"], rows[1]["connection_id"]);

    // A CSV that is not one stops the start with the line that is wrong.
    std::fs::write(&csv, "mcc,mnc,lac,cid,lat,lon\n635,10,1,1,-1.9,north\n").unwrap();
    let mut config = server.state.config.clone();
    config.cell_locator_csv = Some(csv.display().to_string());
    let err = locator_from_config(&config).err().unwrap().to_string();
    assert!(err.contains("line 2"), "{err}");
}

/// On SQLite every write transaction holds the one writer connection. Reads
/// of the fleet, dashboard and RTC endpoints must not wait for it (they did:
/// they read through it). On PostgreSQL the same reads run while a write
/// transaction holds the product's row lock. And the read transaction really
/// is read-only on both.
async fn reads_do_not_wait_for_the_writer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = next_imei();
    plain_unit(&server, &imei).await;
    // A long write: holds the writer (SQLite) and the product's row (PostgreSQL).
    let mut writer = server.state.db.begin().await.unwrap();
    let stmt = Query::update()
        .table(Alias::new("product"))
        .value(Alias::new("modified_by"), "a long write")
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei.as_str()))
        .to_owned();
    writer.execute(&stmt).await.unwrap();
    for (method, path, expect) in [
        (Method::GET, "/v1/dashboard2".to_string(), StatusCode::OK),
        (
            Method::GET,
            "/v1/current_enable_status".to_string(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/v1/products/{imei}/parts"),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/v1/products/{imei}/available_networks?mcc=635"),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/v1/products/{imei}/connectivity_reliability_rate"),
            StatusCode::OK,
        ),
        // Refused as not RTC: decided by a read alone.
        (
            Method::POST,
            format!("/v1/products/{imei}/sync"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), server.call(method, &path, None)).await;
        let (s, b) = answer.unwrap_or_else(|_| panic!("{path} waited for the writer"));
        assert_eq!(s, expect, "{path}: {b}");
    }
    writer.commit().await.unwrap();
    // The read transaction refuses writes.
    let mut read = server.state.db.begin_read().await.unwrap();
    let refused = read.execute(&stmt).await;
    assert!(refused.is_err(), "a write in a read transaction must fail");
}
