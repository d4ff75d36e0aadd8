//! The operator console: its files served from the binary (content types,
//! ETags, 404s), its settings, `/v1/whoami`, and an end-to-end run in
//! headless Chromium (control-plane/console/e2e/console.test.mjs) against a
//! real server with a seeded fleet.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{link, set_state, Backend, TestServer, ADMIN, ADMIN_PASSWORD};
use reqwest::{header, StatusCode};
use serde_json::{json, Value as Json};

const UNIT: &str = "861234560000011";
const OTHER: &str = "861234560000029";
/// Voltage points seeded every 20 minutes over the last 12 hours.
const TELEMETRY_POINTS: i64 = 36;
const BALANCE_POINTS: i64 = 4;

async fn fetch(server: &TestServer, path: &str) -> reqwest::Response {
    server.client.get(server.url(path)).send().await.unwrap()
}

/// The status line and body of a GET of `path` sent as written: reqwest
/// would resolve a `..` segment (also `%2e%2e`) before sending.
async fn raw_get(server: &TestServer, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

fn header_of(r: &reqwest::Response, name: header::HeaderName) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn the_page_and_files_are_served_with_types_and_etags(backend: Backend) {
    let server = TestServer::start(backend).await;
    let csp = header_of(
        &fetch(&server, "/console").await,
        header::CONTENT_SECURITY_POLICY,
    );
    assert!(csp.contains("script-src 'self'"), "{csp}");
    // Every way to the page carries the same policy.
    for path in ["/console", "/console/", "/console/index.html"] {
        let r = fetch(&server, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header_of(&r, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            header_of(&r, header::CONTENT_SECURITY_POLICY),
            csp,
            "{path}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(r#"<script type="module" src="/console/app.js">"#));
    }
    for (path, ty, needle) in [
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "hashchange",
        ),
        (
            "/console/console.css",
            "text/css; charset=utf-8",
            "coord-plot",
        ),
        (
            "/console/vendor/uplot/uPlot.esm.js",
            "text/javascript; charset=utf-8",
            "export { uPlot as default }",
        ),
        (
            "/console/vendor/leaflet/leaflet.css",
            "text/css; charset=utf-8",
            ".leaflet-",
        ),
        (
            "/console/vendor/uplot/LICENSE",
            "text/plain; charset=utf-8",
            "MIT",
        ),
    ] {
        let r = fetch(&server, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&r, header::CONTENT_TYPE), ty, "{path}");
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    let png = fetch(&server, "/console/vendor/leaflet/images/layers.png").await;
    assert_eq!(header_of(&png, header::CONTENT_TYPE), "image/png");
    assert_eq!(&png.bytes().await.unwrap()[..4], b"\x89PNG");

    // A revalidation with the ETag costs a 304 without a body.
    let first = fetch(&server, "/console/app.js").await;
    let etag = header_of(&first, header::ETAG);
    assert!(etag.starts_with('"') && etag.len() > 20, "{etag}");
    let again = server
        .client
        .get(server.url("/console/app.js"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_of(&again, header::ETAG), etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = fetch(&server, "/console/api.js").await;
    assert_ne!(header_of(&other, header::ETAG), etag);

    for path in [
        "/console/nope.js",
        "/console/vendor/uplot/",
        "/console/e2e/console.test.mjs",
    ] {
        let r = fetch(&server, path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // A dot-dot segment reaches the console handler, which serves only
    // embedded files.
    for path in ["/console/../Cargo.toml", "/console/%2e%2e/Cargo.toml"] {
        let (status, body) = raw_get(&server, path).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
        assert_eq!(body, "No console file '../Cargo.toml'", "{path}");
    }
    let r = fetch(&server, "/console/nope.js").await;
    assert_eq!(r.text().await.unwrap(), "No console file 'nope.js'");
}

async fn settings_carry_tiles_and_the_level_of_each_action(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.console_tile_url = Some("http://tiles.internal:8081/{z}/{x}/{y}.png".into());
        c.console_tile_attribution = Some("© local tiles".into());
    })
    .await;
    let r = fetch(&server, "/console/config.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Json = r.json().await.unwrap();
    assert_eq!(
        body["tile_url"],
        "http://tiles.internal:8081/{z}/{x}/{y}.png"
    );
    assert_eq!(body["tile_attribution"], "© local tiles");
    assert_eq!(
        body["levels"],
        json!(["OVERVIEW", "TECHNICAL", "ADMIN", "FACTORY", "SYSTEM"])
    );
    assert_eq!(
        body["permissions"]["PUT /products/{product_imei}/enable"],
        "TECHNICAL"
    );
    assert_eq!(
        body["permissions"]["PUT /products/{product_imei}/change_state"],
        "ADMIN"
    );
    assert_eq!(body["permissions"]["GET /whoami"], "OVERVIEW");
    // The page admits images from the tile server, and nothing else remote.
    let page = fetch(&server, "/console").await;
    let csp = header_of(&page, header::CONTENT_SECURITY_POLICY);
    assert!(
        csp.contains("img-src 'self' data: http://tiles.internal:8081;"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
}

async fn a_subdomain_tile_template_admits_every_subdomain(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.console_tile_url = Some("https://{s}.host/{z}/{x}/{y}.png".into());
    })
    .await;
    for path in ["/console", "/console/index.html"] {
        let page = fetch(&server, path).await;
        let csp = header_of(&page, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("img-src 'self' data: https://*.host;"),
            "{path}: {csp}"
        );
    }
}

async fn whoami_names_the_callers_level_and_scope(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = server.get_ok("/v1/whoami").await;
    assert_eq!(body["data"]["username"], ADMIN);
    assert_eq!(body["data"]["permissions"], "SYSTEM");
    assert_eq!(body["data"]["user_product_visibility"], "GLOBAL");
    let entity = server.seed("entity", json!({"name": "Scoped Ltd"})).await;
    let token = server
        .user("scoped@example.com", "OVERVIEW", "ENTITY", entity.as_i64())
        .await;
    let (s, body) = server.get_as(&token, "/v1/whoami").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["permissions"], "OVERVIEW");
    assert_eq!(body["data"]["user_product_visibility"], "ENTITY");
    assert_eq!(body["data"]["entity_id"], entity);
    let (s, _) = server.get_as("not-a-token", "/v1/whoami").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Where screenshots go: `$CARGO_TARGET_DIR/console-screenshots/<backend>`
/// (or `target/...` in the workspace).
fn screenshot_dir(backend: Backend) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("console-screenshots")
        .join(format!("{backend:?}").to_lowercase())
}

fn stamp(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Two located units in two entities; the first disabled, with telemetry,
/// balances and an open alert; one dead letter.
async fn seed_fleet(server: &TestServer) {
    let state = server.get("/v1/state_types").await.1["objects"][0]["state_type_id"].clone();
    let acme = server.seed("entity", json!({"name": "Acme Solar"})).await;
    let other = server.seed("entity", json!({"name": "Other Power"})).await;
    let now = Utc::now();
    // The unit connected an hour ago, the other three days ago.
    for (imei, entity, lat, lon, seen) in [
        (UNIT, &acme, -1.2921, 36.8219, 1),
        (OTHER, &other, -1.9441, 30.0619, 72),
    ] {
        server
            .seed(
                "product",
                json!({"product_imei": imei, "serial_number": format!("HB000501-{}", &imei[9..]),
                       "current_enable_flag": false, "desired_enable_flag": false,
                       "current_tamper_flag": false, "desired_tamper_flag": false,
                       "rtc_enabled_flag": false, "software_lock": null}),
            )
            .await;
        link(server, imei, entity.as_i64().unwrap()).await;
        server
            .seed(
                "connection",
                json!({"product_imei": imei, "location_failed_flag": false, "date": stamp(now - Duration::hours(seen)),
                       "latitude": lat.to_string(), "longitude": lon.to_string(), "error_radius": 500}),
            )
            .await;
        set_state(server, imei, state.clone()).await;
    }
    let points: Vec<Json> = (0..TELEMETRY_POINTS)
        .map(|i| {
            let t = now - Duration::minutes(20 * i + 5);
            json!([t.timestamp_millis(), 12.0 + (i as f64 / 5.0).sin()])
        })
        .collect();
    server
        .post_ok(
            &format!("/v1/products/{UNIT}/data"),
            json!({"measurement": "telemetry", "fields": {"voltage": points}}),
        )
        .await;
    for i in 0..BALANCE_POINTS {
        server
            .seed(
                "balance",
                json!({"product_imei": UNIT, "balance": 1000 - 200 * i,
                       "created_at": stamp(now - Duration::hours(10 - 2 * i))}),
            )
            .await;
    }
    let part_type = server
        .seed("part_type", json!({"name": "Battery 17Ah"}))
        .await;
    let part = server
        .seed(
            "part",
            json!({"part_type_id": part_type, "serial_number": "BAT-0001"}),
        )
        .await;
    server
        .seed(
            "part_product_linker",
            json!({"part_id": part, "product_imei": UNIT, "date_added": stamp(now - Duration::days(30)),
                   "date_removed": null, "added_repair_id": null, "removed_repair_id": null, "replaced_part_id": null}),
        )
        .await;
    server
        .seed(
            "product_note",
            json!({"product_imei": UNIT, "note_text": "Customer asked for a call back", "created_at": stamp(now)}),
        )
        .await;
    server
        .seed(
            "alert",
            json!({"product_imei": UNIT, "start_time": stamp(now - Duration::hours(3)),
                   "dismissed_at": null, "dismissed_by": null, "dismissal_reason": null,
                   "repair_id": null, "extra_info": "battery voltage low"}),
        )
        .await;
    // Two MT the unit was sent: one it confirmed, one the gateway gave up on.
    for (kind, minutes, status, info) in [
        ("payment_commands", 50, "delivered", "ok"),
        ("status_update", 20, "failed", "gateway: expired"),
    ] {
        let sent = now - Duration::minutes(minutes);
        server
            .seed(
                "rtc_message_history",
                json!({"product_imei": UNIT, "message_reference": format!("{minutes:032x}"),
                       "message_json": json!({"type": kind}).to_string(),
                       "message_sent_time": stamp(sent), "delivery_status": status,
                       "delivery_status_time": stamp(sent + Duration::seconds(3)),
                       "delivery_status_info": info}),
            )
            .await;
    }
    server
        .seed(
            "rtc_dead_letter",
            json!({"queue_name": "rtc-mo-dead-letter", "status": "new", "replay_status": null,
                   "replay_status_text": null, "replay_status_time": null,
                   "payload": "{\"ident\": \"Aeris/10.112.89.62\", \"message\": \"ggSfghpaebuvaUNvbm5lY3RlZP8=\", \"correlation_id\": \"d478ea0eeadc47e8aead97502235ccac\", \"timestamp\": \"2018-02-06T14:29:14.349698\", \"ident_type\": \"IP\"}"}),
        )
        .await;
    // Dismissing the alert in the browser notifies this subscriber; nothing
    // listens there, so its delivery log shows failed attempts.
    server
        .post_created(
            "/v1/channels/product-alert/subscribe",
            json!({"url": "http://127.0.0.1:9/seeded-hook"}),
        )
        .await;
    // The entity user belongs to Acme; the OVERVIEW user sees everything.
    server
        .user("overview@example.com", "OVERVIEW", "GLOBAL", None)
        .await;
    server
        .user(
            "acme-tech@example.com",
            "TECHNICAL",
            "ENTITY",
            acme.as_i64(),
        )
        .await;
}

/// Fails with what to install when the browser or the e2e packages are missing.
fn browser_prerequisites(e2e: &Path) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test.sh, or apt-get install -y chromium"
    );
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/test.sh, or (cd {} && npm ci)",
        e2e.display()
    );
    chromium
}

/// Runs the browser script against `server` with `env` added; panics with
/// its output unless it exits 0.
async fn run_browser(server: &TestServer, shots: &Path, env: &[(&str, String)]) {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/e2e");
    let chromium = browser_prerequisites(&e2e);
    println!("console screenshots: {}", shots.display());
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(&e2e)
        .arg("console.test.mjs")
        .env("CONSOLE_BASE_URL", &server.base)
        .env("CONSOLE_ADMIN", ADMIN)
        .env("CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("CONSOLE_SCREENSHOTS", shots)
        .env("CHROMIUM", chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("node runs (install Node.js 18 or later)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "console e2e failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

async fn a_browser_logs_in_enables_a_unit_and_sees_its_charts(backend: Backend) {
    // The default state's time-series store is the embedded one, in memory.
    let server = TestServer::start(backend).await;
    seed_fleet(&server).await;
    // The webhook delivery worker, as `serve` runs it.
    let (stop_worker, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = control_plane::webhooks::spawn_worker(server.state.clone(), async {
        let _ = stopped.await;
    });
    let shots = screenshot_dir(backend);
    let _ = std::fs::remove_dir_all(&shots);
    let env = [
        ("CONSOLE_OVERVIEW", "overview@example.com".to_string()),
        ("CONSOLE_OVERVIEW_PASSWORD", "password-123".to_string()),
        ("CONSOLE_ENTITY", "acme-tech@example.com".to_string()),
        ("CONSOLE_ENTITY_PASSWORD", "password-123".to_string()),
        ("CONSOLE_UNIT", UNIT.to_string()),
        ("CONSOLE_OTHER_UNIT", OTHER.to_string()),
        ("CONSOLE_TELEMETRY_POINTS", TELEMETRY_POINTS.to_string()),
        ("CONSOLE_BALANCE_POINTS", BALANCE_POINTS.to_string()),
    ];
    run_browser(&server, &shots, &env).await;
    drop(stop_worker);
    worker.await.unwrap();
    // What the browser did reached the server: the unit is pending enable.
    let (_, product) = server.get(&format!("/v1/products/{UNIT}")).await;
    assert_eq!(product["desired_enable_flag"], true, "{product}");
    assert_eq!(product["current_enable_flag"], false, "{product}");
    for name in [
        "01-login",
        "02-fleet",
        "03-unit",
        "04-alerts",
        "05-dead-letters",
        "06-webhooks",
        "07-unit-overview",
        "08-fleet-entity",
    ] {
        let file = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .len();
        assert!(len > 5_000, "{} is only {len} bytes", file.display());
    }
}

/// A tile server on loopback that answers every path with the same PNG and
/// counts the requests.
async fn tile_server() -> (String, Arc<AtomicUsize>) {
    let png = control_plane::console::ASSETS
        .iter()
        .find(|a| a.path == "vendor/leaflet/images/layers-2x.png")
        .unwrap()
        .bytes;
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        async move { ([(header::CONTENT_TYPE, "image/png")], png) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (origin, served)
}

async fn a_configured_tile_server_draws_a_leaflet_map(backend: Backend) {
    let (origin, served) = tile_server().await;
    let template = format!("{origin}/tiles/{{z}}/{{x}}/{{y}}.png");
    let server = TestServer::start_with(backend, |c| c.console_tile_url = Some(template)).await;
    seed_fleet(&server).await;
    let shots = screenshot_dir(backend).join("tiles");
    let _ = std::fs::remove_dir_all(&shots);
    let env = [
        ("CONSOLE_SCENARIO", "tiles".to_string()),
        ("CONSOLE_TILE_ORIGIN", origin.clone()),
    ];
    run_browser(&server, &shots, &env).await;
    assert!(served.load(Ordering::Relaxed) > 0, "no tile was requested");
    assert!(shots.join("09-fleet-tiles.png").exists());
}

both_backends!(
    the_page_and_files_are_served_with_types_and_etags,
    settings_carry_tiles_and_the_level_of_each_action,
    a_subdomain_tile_template_admits_every_subdomain,
    whoami_names_the_callers_level_and_scope,
    a_browser_logs_in_enables_a_unit_and_sees_its_charts,
    a_configured_tile_server_draws_a_leaflet_map,
);
