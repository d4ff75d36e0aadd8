//! Test harness: a real server on 127.0.0.1:0 over a real database (a fresh
//! SQLite file, or a fresh PostgreSQL database on the local server), driven
//! through real HTTP with reqwest.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};

use control_plane::app::AppState;
use control_plane::catalogue::{Catalogue, Column, ColumnType, Table};
use control_plane::db::Db;
use control_plane::ControlPlaneConfig;
use reqwest::{Method, StatusCode};
use sea_query::{Alias, Query, SimpleExpr};
use serde_json::{json, Map, Value as Json};

pub const ADMIN: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Postgres).await }) *
        }
    };
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub token: String,
    _dir: Option<tempfile::TempDir>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database of the backend, migrated.
pub async fn fresh_db(backend: Backend) -> (Db, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_db_url(backend).await;
    let db = Db::connect(&url, 8).await.unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

/// The URL of a fresh, empty database of the backend (a SQLite file in a
/// temporary folder, or a new PostgreSQL database), for tests that open it
/// more than once (a restart).
pub async fn fresh_db_url(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/test.db", dir.path().display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let admin_url = std::env::var("SMARTSOLAR_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!(
                "smartsolar_test_{}_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                rand_suffix()
            );
            let pool = sqlx::PgPool::connect(&admin_url)
                .await
                .expect("PostgreSQL must be running for the tests (./scripts/test.sh starts it)");
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
            (format!("{base}/{name}"), None)
        }
    }
}

/// Runs `sql` (one or more statements) on the database at `url`, outside the API's own
/// connections: the setup of tests that work on tables of their own.
pub async fn run_sql(backend: Backend, url: &str, sql: &str) {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// What a PostgreSQL restart does to a process's connections: ends every session of the
/// database at `url` but the caller's own (`pg_terminate_backend`, which sends each idle
/// session SQLSTATE 57P01), then waits for them to go. Returns how many were ended.
pub async fn end_every_session(url: &str) -> usize {
    let name = url.rsplit_once('/').unwrap().1;
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&admin)
    .await
    .unwrap();
    admin.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    ended.len()
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        Self::start_custom(backend, tweak, |state| state).await
    }

    /// A server whose state is adjusted before serving (e.g. its own
    /// time-series store or bus through `with_timeseries` / `with_bus`).
    pub async fn start_with_state(
        backend: Backend,
        wire: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        Self::start_custom(backend, |_| {}, wire).await
    }

    pub async fn start_custom(
        backend: Backend,
        tweak: impl FnOnce(&mut ControlPlaneConfig),
        wire: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        let (db, dir) = fresh_db(backend).await;
        Self::serve_db(db, dir, tweak, wire).await
    }

    /// A server over an existing database (opened and migrated again), as
    /// after a restart.
    pub async fn start_on(url: &str, tweak: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        let db = Db::connect(url, 8).await.unwrap();
        db.migrate().await.unwrap();
        Self::serve_db(db, None, tweak, |state| state).await
    }

    async fn serve_db(
        db: Db,
        dir: Option<tempfile::TempDir>,
        tweak: impl FnOnce(&mut ControlPlaneConfig),
        wire: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        control_plane::startup::ensure_user(&db, ADMIN, ADMIN_PASSWORD, "SYSTEM", "GLOBAL", None)
            .await
            .unwrap();
        let mut config = ControlPlaneConfig::default();
        // The tests' webhook receivers listen on loopback, which the
        // default deny list refuses: allowed here explicitly.
        config.webhook_deny_cidrs = control_plane::config::webhook_deny_cidrs_allowing_loopback();
        tweak(&mut config);
        let state = wire(AppState::new(db, config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        tokio::spawn(async move {
            control_plane::http::serve(listener, served, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let client = reqwest::Client::new();
        let mut server = Self {
            base,
            client,
            state,
            token: String::new(),
            _dir: dir,
            _shutdown: tx,
        };
        server.token = server.login(ADMIN, ADMIN_PASSWORD).await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Logs in with a form body, as the spec's examples do; returns the token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        self.login_successful(username, password).await["API_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Logs in with a form body, which must answer 200; returns the answer's
    /// `message.login_successful` (token, user and entity).
    pub async fn login_successful(&self, username: &str, password: &str) -> Json {
        let r = self
            .client
            .post(self.url("/v1/auth/login"))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login of {username}");
        let mut body: Json = r.json().await.unwrap();
        body["message"]["login_successful"].take()
    }

    /// A request with the admin token.
    pub async fn call(&self, method: Method, path: &str, body: Option<Json>) -> (StatusCode, Json) {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("Authorization", format!("Token token={token}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let json = if text.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Json) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Json) -> (StatusCode, Json) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Json) -> (StatusCode, Json) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Json) -> (StatusCode, Json) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Json) {
        self.call(Method::DELETE, path, None).await
    }

    /// A request with the admin token that must answer `expected`; returns the body. A
    /// failure names the request and shows the body.
    pub async fn call_expecting(
        &self,
        expected: StatusCode,
        method: Method,
        path: &str,
        body: Option<Json>,
    ) -> Json {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        answer
    }

    /// A GET that must answer 200; returns the body.
    pub async fn get_ok(&self, path: &str) -> Json {
        self.call_expecting(StatusCode::OK, Method::GET, path, None)
            .await
    }

    /// A POST that must answer 200; returns the body.
    pub async fn post_ok(&self, path: &str, body: Json) -> Json {
        self.call_expecting(StatusCode::OK, Method::POST, path, Some(body))
            .await
    }

    /// A POST that must answer 201; returns the body.
    pub async fn post_created(&self, path: &str, body: Json) -> Json {
        self.call_expecting(StatusCode::CREATED, Method::POST, path, Some(body))
            .await
    }

    /// A PUT that must answer 200; returns the body.
    pub async fn put_ok(&self, path: &str, body: Json) -> Json {
        self.call_expecting(StatusCode::OK, Method::PUT, path, Some(body))
            .await
    }

    /// A unit action without a body (`/v1/products/{imei}/{action}`) that must answer 200;
    /// returns the body.
    pub async fn unit_action(&self, method: Method, imei: &str, action: &str) -> Json {
        let path = format!("/v1/products/{imei}/{action}");
        self.call_expecting(StatusCode::OK, method, &path, None)
            .await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> (StatusCode, Json) {
        self.call_as(token, Method::GET, path, None).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Json) -> (StatusCode, Json) {
        self.call_as(token, Method::POST, path, Some(body)).await
    }

    pub async fn put_as(&self, token: &str, path: &str, body: Json) -> (StatusCode, Json) {
        self.call_as(token, Method::PUT, path, Some(body)).await
    }

    pub async fn patch_as(&self, token: &str, path: &str, body: Json) -> (StatusCode, Json) {
        self.call_as(token, Method::PATCH, path, Some(body)).await
    }

    pub async fn delete_as(&self, token: &str, path: &str) -> (StatusCode, Json) {
        self.call_as(token, Method::DELETE, path, None).await
    }

    /// GET a list with a `q` object.
    pub async fn list(&self, path: &str, q: Json) -> (StatusCode, Json) {
        self.list_as(&self.token.clone(), path, q).await
    }

    pub async fn list_as(&self, token: &str, path: &str, q: Json) -> (StatusCode, Json) {
        let url = format!("{path}?q={}", urlencode(&q.to_string()));
        self.get_as(token, &url).await
    }

    /// The rows (up to 100) a list with the `q` object answers; it must answer 200.
    pub async fn list_objects(&self, path: &str, q: Json) -> Vec<Json> {
        let url = format!(
            "{path}?results_per_page=100&q={}",
            urlencode(&q.to_string())
        );
        let b = self.get_ok(&url).await;
        b["objects"].as_array().unwrap().clone()
    }

    /// A unit's rows (up to 100) of the list at `path`, by `order` ascending.
    pub async fn unit_rows(&self, path: &str, imei: &str, order: &str) -> Vec<Json> {
        self.list_objects(
            path,
            json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}],
                   "order_by": [{"field": order, "direction": "asc"}]}),
        )
        .await
    }

    /// Creates a user through the API and logs them in.
    pub async fn user(
        &self,
        name: &str,
        permissions: &str,
        visibility: &str,
        entity_id: Option<i64>,
    ) -> String {
        let (s, b) = self
            .post("/v1/users", json!({"username": name, "password": "password-123", "permissions": permissions,
                    "user_product_visibility": visibility, "entity_id": entity_id, "display_name": name, "name": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        self.login(name, "password-123").await
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.state.catalogue
    }

    /// Inserts a row directly (for tables the API cannot create, such as
    /// products before the product-actions issue), filling required columns
    /// and creating referenced rows as needed. Returns the row's primary key.
    pub async fn seed(&self, table: &str, overrides: Json) -> Json {
        let mut n = COUNTER.fetch_add(1, Ordering::Relaxed) as i64 + 1000;
        Box::pin(seed_row(&self.state, table, overrides, &mut n)).await
    }

    /// Seeds a product (see [`Self::seed`]); returns its IMEI.
    pub async fn seed_product(&self, overrides: Json) -> String {
        self.seed("product", overrides)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Seeds an entity named `name` (not a BBOXX company); returns its id.
    pub async fn seed_entity(&self, name: &str) -> i64 {
        self.seed("entity", json!({"name": name, "bboxx_company_flag": false}))
            .await
            .as_i64()
            .unwrap()
    }

    /// A product a simulated unit can be (`device_key`, RTC and DCM flags as given), disabled,
    /// with no RTC or connection history yet.
    pub async fn seed_unit(&self, imei: &str, device_key: &str, rtc: bool, dcm: bool) {
        self.seed(
            "product",
            json!({"product_imei": imei, "device_key": device_key,
                "rtc_enabled_flag": rtc, "dcm_enabled_flag": dcm,
                "current_enable_flag": false, "desired_enable_flag": false,
                "current_tamper_flag": false, "desired_tamper_flag": false,
                "ip_address": null, "rtc_network_name": null,
                "latest_connection_id": null, "latest_connection_location_id": null,
                "latest_rtc_connection_history_id": null,
                "latest_rtc_mo_status_report_time": null,
                "latest_rtc_mt_status_update_time": null}),
        )
        .await;
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plausible value for a column, unique across the test binary (`n` only
/// seeds it).
pub fn fake_value(column: &Column, n: i64) -> Json {
    let n = n * 1000 + COUNTER.fetch_add(1, Ordering::Relaxed) as i64 % 1000;
    if let Some(options) = &column.options {
        return json!(options[0]);
    }
    match column.ty {
        ColumnType::Int => json!(n),
        ColumnType::Float => json!(n as f64 + 0.5),
        ColumnType::Boolean => json!(true),
        ColumnType::Datetime => json!("2020-01-02T03:04:05.123456"),
        ColumnType::Date => json!("2020-01-02"),
        ColumnType::Array => json!([]),
        ColumnType::String | ColumnType::Text => {
            let s = format!("{}{n:012}", column.name.chars().next().unwrap_or('x'));
            match column.max_len {
                Some(max) => json!(s[s.len().saturating_sub(max)..]),
                None => json!(format!("{}-{n}", column.name)),
            }
        }
    }
}

/// A body for creating a row of `table` through the API: every required
/// column (and every optional non-reference one) with a fake value; foreign
/// keys point at rows created directly.
pub async fn fake_body(server: &TestServer, table: &Table) -> Map<String, Json> {
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed) as i64 + 5000;
    let mut body = Map::new();
    for c in &table.columns {
        if c.is_system() {
            continue;
        }
        let v = match &c.foreign_key {
            Some(target) if c.not_null || target != &table.name => {
                Box::pin(seed_row(&server.state, target, json!({}), &mut n)).await
            }
            Some(_) => Json::Null,
            None => {
                n += 1;
                fake_value(c, n)
            }
        };
        body.insert(c.name.clone(), v);
    }
    body
}

async fn seed_row(state: &AppState, table_name: &str, overrides: Json, n: &mut i64) -> Json {
    let table = state.catalogue.table(table_name).unwrap();
    let overrides = overrides.as_object().cloned().unwrap_or_default();
    let mut values: Vec<(String, sea_query::Value)> = Vec::new();
    for c in &table.columns {
        *n += 1;
        let v = if let Some(v) = overrides.get(&c.name) {
            v.clone()
        } else if c.is_system() {
            continue;
        } else if let Some(target) = &c.foreign_key {
            // Nullable references (and self references) stay empty; required ones get a row.
            if !c.not_null || target == table_name {
                continue;
            }
            Box::pin(seed_row(state, target, json!({}), n)).await
        } else {
            fake_value(c, *n)
        };
        values.push((
            c.name.clone(),
            control_plane::values::coerce(c, &v).unwrap(),
        ));
    }
    let pk = table.primary_key();
    let stmt = Query::insert()
        .into_table(Alias::new(&table.name))
        .columns(values.iter().map(|(n, _)| Alias::new(n)))
        .values(values.iter().map(|(_, v)| SimpleExpr::Value(v.clone())))
        .unwrap()
        .returning(Query::returning().column(Alias::new(&pk.name)))
        .to_owned();
    let mut tx = state.db.begin().await.unwrap();
    let row = tx.fetch_optional(&stmt, &[pk]).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    row[&pk.name].clone()
}

/// Puts the product in `state_type`: seeds a state row (from and to that
/// type) and makes it the product's latest state. Returns the row's id.
pub async fn set_state(server: &TestServer, imei: &str, state_type: impl Into<Json>) -> Json {
    let state_type = state_type.into();
    let state = server
        .seed(
            "state",
            json!({"product_imei": imei, "prev_state_type": state_type, "current_state_type": state_type}),
        )
        .await;
    let (s, body) = server
        .put(
            &format!("/v1/products/{imei}"),
            json!({"latest_state_id": state}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    state
}

/// Links a product to an entity (as assign_entity will).
pub async fn link(server: &TestServer, imei: &str, entity_id: i64) {
    server
        .seed(
            "product_entity_linker",
            json!({"product_imei": imei, "entity_id": entity_id, "date_removed": null}),
        )
        .await;
}

/// The test binary's metrics recorder, installed on first use: a real
/// Prometheus recorder whose rendering the tests read. Counters are shared by
/// every test in the binary, so a test compares values before and after.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary")
    })
}

/// The value of the series `series` (name and labels exactly as rendered,
/// e.g. `smartsolar_x_total{event="sent"}`), 0 when it does not exist yet.
pub fn metric(series: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A loopback SMS provider speaking the HTTP provider's protocol (a real
/// HTTP server; no SMS network can run here): it records every SMS posted to
/// it and answers 200 with its own `message_reference` (`prov-123` for the
/// first SMS, then `prov-124`, ...), or 500 while `fail` is set.
pub struct SmsProvider {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Json>>>,
    pub fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

pub async fn sms_provider() -> SmsProvider {
    let received: std::sync::Arc<std::sync::Mutex<Vec<Json>>> = Default::default();
    let fail: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
    let (r, f) = (received.clone(), fail.clone());
    let app = axum::Router::new().route(
        "/sms",
        axum::routing::post(move |axum::Json(body): axum::Json<Json>| {
            let (received, fail) = (r.clone(), f.clone());
            async move {
                let n = {
                    let mut received = received.lock().unwrap();
                    received.push(body);
                    received.len()
                };
                if fail.load(Ordering::Relaxed) {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({})),
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"message_reference": format!("prov-{}", 122 + n)})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    SmsProvider {
        url,
        received,
        fail,
    }
}
