//! The `smartsolar serve` binary end to end: one process on embedded
//! defaults (SQLite, embedded time-series store, the disk bus), driven
//! through real HTTP and a real TCP unit connection, then stopped with
//! SIGTERM.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

mod common;
use common::{free_port, json_of, smartsolar_command, Client, Process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_api_gateway_and_ingest_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp, quic, legacy) = (free_port(), free_port(), free_port(), free_port());
    let child = smartsolar_command("serve", dir.path(), (http, tcp, quic), Some(legacy))
        .env(
            "SMARTSOLAR_CONSOLE_TILE_URL",
            "http://tiles.test/{z}/{x}/{y}.png",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Process(child);
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    server.wait_ready(&client, &base).await;

    // The operator console is in the binary; its tiles come from the environment.
    let page = client.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let settings = json_of(client.get(format!("{base}/console/config.json"))).await;
    assert_eq!(settings["tile_url"], "http://tiles.test/{z}/{x}/{y}.png");

    // The API: log in and create a unit as the factory would.
    let auth = admin_auth(&client, &base).await;
    let imei = "010101234560005";
    let key = "4ab1ab3ab1ab7ab9ab1ab4ab";
    let r = client
        .post(format!("{base}/v1/products/create_hub2"))
        .header("Authorization", &auth)
        .json(&json!({"imsi": "213514135171353", "imei": imei, "device_key": key, "product": {"assembler": "A"}}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "create_hub2: {}",
        r.text().await.unwrap()
    );

    // Without SMARTSOLAR_WEBHOOK_SECRET_KEY the server generated its webhook key, and the
    // gateway its TLS key, into the data dir, readable by the owner only.
    #[cfg(unix)]
    for file in ["webhook-secret.key", "gateway-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("data").join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
    // A unit connects over TCP, inside TLS by default, pinning the certificate the
    // gateway generated into the data dir; proves its key and sends telemetry.
    let addr: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let cert = sim::pem_certificate(&dir.path().join("data").join("gateway-cert.pem")).unwrap();
    // Plain framed TCP is not spoken on the TLS listener.
    let mut plain = sim::UnitConn::tcp(addr).await.unwrap();
    assert!(plain.handshake(Some(imei), key).await.is_err());
    let mut unit = sim::UnitConn::tcp_tls(addr, &cert).await.unwrap();
    unit.handshake(Some(imei), key).await.unwrap();
    let now = sim::now_s();
    unit.send_raw(&sim::telemetry(now, 1)).await.unwrap();

    // Ingest writes it to the embedded store; the data API reads it back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = get_json(
            &client,
            format!("{base}/v1/products/{imei}/data?fields=*"),
            &auth,
        )
        .await;
        // The simulator's telemetry carries voltage 12.9.
        if body.to_string().contains("12.9") {
            break;
        }
        assert!(Instant::now() < deadline, "telemetry never arrived: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The connection was recorded by the gateway's presence sink.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get_json(&client, format!("{base}/v1/rtc_connection_history"), &auth).await;
        if body["num_results"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rtc_connection_history row: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Rotating the key through the API closes the live session (the control message on the
    // disk bus) and the old key is refused at once.
    let new_key = "9zz9zz9zz9zz9zz9zz9zz9zz";
    let r = client
        .put(format!("{base}/v1/products/{imei}"))
        .header("Authorization", &auth)
        .json(&json!({ "device_key": new_key }))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "rotate: {}",
        r.text().await.unwrap()
    );
    // (What the unit reads before the close is checked in control-plane/tests/key_rotation.rs.)
    assert!(
        unit.closed_within(Duration::from_secs(2)).await,
        "the session is closed after the rotation"
    );
    let mut old = sim::UnitConn::tcp_tls(addr, &cert).await.unwrap();
    assert!(old.handshake(Some(imei), key).await.is_err(), "old key");
    let mut unit = sim::UnitConn::tcp_tls(addr, &cert).await.unwrap();
    unit.handshake(Some(imei), new_key).await.unwrap();
    unit.abort();

    // SIGTERM: every service drains and the process exits cleanly.
    server.stop("serve").await;
}

/// Starts `smartsolar <role>` on a fresh SQLite database with its admin
/// listener on `metrics`, the given extra environment, and every gateway
/// transport on a free port (or off).
fn start_role(role: &str, dir: &std::path::Path, metrics: u16, env: &[(&str, String)]) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smartsolar"));
    cmd.arg(role)
        .env(
            "SMARTSOLAR_DATABASE_URL",
            format!("sqlite://{}/db.sqlite", dir.display()),
        )
        .env("SMARTSOLAR_DATA_DIR", dir.join("data"))
        .env("SMARTSOLAR_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("SMARTSOLAR_GATEWAY_QUIC_ADDR", "off")
        .env("SMARTSOLAR_GATEWAY_HTTP_ADDR", "off")
        .env("RUST_LOG", "warn")
        // Where tracing writes: a failing test then shows the server's warnings and errors.
        .stdout(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Process(cmd.spawn().unwrap())
}

/// Waits until `url` answers at all, and returns its status and body.
async fn get_when_up(client: &reqwest::Client, url: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await {
            let status = r.status().as_u16();
            return (status, r.text().await.unwrap());
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_process_serves_metrics_and_probes_on_its_admin_address() {
    let dir = tempfile::tempdir().unwrap();
    let (metrics, tcp) = (free_port(), free_port());
    let _server = start_role(
        "gateway",
        dir.path(),
        metrics,
        &[
            ("SMARTSOLAR_GATEWAY_TCP_ADDR", format!("127.0.0.1:{tcp}")),
            // Plain framed TCP, by explicit configuration.
            ("SMARTSOLAR_GATEWAY_TCP_TLS", "false".into()),
        ],
    );
    let client = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{metrics}");
    assert_eq!(
        get_when_up(&client, &format!("{admin}/health")).await,
        (200, "ok".to_string())
    );
    // The embedded bus and store always answer; the database is there.
    assert_eq!(
        get_when_up(&client, &format!("{admin}/ready")).await,
        (200, "ready".to_string())
    );

    // A unit the directory does not know is refused, and the gateway counts it.
    let addr: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let mut unit = sim::UnitConn::tcp(addr).await.unwrap();
    assert!(unit
        .handshake(Some("010101234569999"), "00112233445566778899aabb")
        .await
        .is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_when_up(&client, &format!("{admin}/metrics")).await;
        assert_eq!(status, 200);
        if body.lines().any(|l| {
            l.starts_with("smartsolar_gateway_handshake_failures_total{")
                && l.contains("reason=\"unknown_unit\"")
        }) {
            // Histograms are exposed with buckets (dashboards and alerts take quantiles
            // from them): the unit lookup timed a database fetch.
            assert!(
                body.lines().any(
                    |l| l.starts_with("smartsolar_db_query_duration_seconds_bucket{")
                        && l.contains("op=\"fetch\"")
                ),
                "no histogram buckets:\n{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "refusal not counted:\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/ready` of an ingest process whose QuestDB is at `questdb_url`, once its `/health`
/// answers: (status, body).
async fn ingest_readiness_with_questdb(questdb_url: String) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let _server = start_role(
        "ingest",
        dir.path(),
        metrics,
        &[
            ("SMARTSOLAR_TSDB", "questdb".to_string()),
            ("SMARTSOLAR_QUESTDB_URL", questdb_url),
        ],
    );
    let client = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{metrics}");
    // Alive, whatever its store does.
    assert_eq!(
        get_when_up(&client, &format!("{admin}/health")).await.0,
        200
    );
    get_when_up(&client, &format!("{admin}/ready")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_process_is_not_ready_while_its_store_is_unreachable() {
    // A port nothing listens on: QuestDB is configured but down.
    let questdb = free_port();
    let (status, body) = ingest_readiness_with_questdb(format!("http://127.0.0.1:{questdb}")).await;
    // Not ready, and the answer names what is missing.
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("time-series store unreachable"), "{body}");
}

/// A store that accepts connections but never answers: `/ready` names it within the probe's
/// time limit instead of hanging with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_a_store_that_hangs_within_its_time_limit() {
    // The kernel completes connections to a listening socket nobody accepts from.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let asked = Instant::now();
    let (status, body) =
        ingest_readiness_with_questdb(format!("http://{}", silent.local_addr().unwrap())).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("time-series store unreachable: no answer within 2 s"),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
}

/// Reads every value of field `v` the data API has for `imei`.
async fn stored_values(client: &reqwest::Client, base: &str, auth: &str, imei: &str) -> Vec<i64> {
    field_values(client, base, auth, imei, "v")
        .await
        .unwrap_or_else(|| panic!("no v for {imei}"))
}

/// `GET url` with `auth`, the answer as JSON.
async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl, auth: &str) -> Json {
    json_of(client.get(url).header("Authorization", auth)).await
}

/// Every value of the integer field `field` the data API has for `imei` (asked alone, so no
/// row is null); `None` when the answer has no such field.
async fn field_values(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    imei: &str,
    field: &str,
) -> Option<Vec<i64>> {
    let url = format!(
        "{base}/v1/products/{imei}/data?fields={field}&start=2020-01-01T00:00:00Z&end=2040-01-01T00:00:00Z&limit=0"
    );
    let body = get_json(client, url, auth).await;
    let rows = body["data"][field].as_array()?;
    Some(rows.iter().map(|row| row[0].as_i64().unwrap()).collect())
}

/// kill -9 in the middle of acknowledged writes, three times over, with a
/// head so small that blocks are written and compacted all along: every
/// write `POST /v1/products/<imei>/data` acknowledged is there after each
/// restart, and the restart replays only the head's log (a few thousand
/// values), not the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_store_keeps_every_acknowledged_write_through_kill_9() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let imei = "010101234560007";
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let next = Arc::new(AtomicI64::new(0));
    for round in 0..3u64 {
        let http = free_port();
        let base = format!("http://127.0.0.1:{http}");
        let started = Instant::now();
        let mut server = start_role("serve", dir.path(), free_port(), &serve_env(http, "3000"));
        server.wait_ready(&client, &base).await;
        let ready_after = started.elapsed();
        let auth = admin_auth(&client, &base).await;
        if round == 0 {
            let r = client
                .post(format!("{base}/v1/products/create_hub2"))
                .header("Authorization", &auth)
                .json(&json!({"imsi": "213514135171354", "imei": imei,
                    "device_key": "4ab1ab3ab1ab7ab9ab1ab4ab", "product": {"assembler": "A"}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
        // Everything acknowledged before the last kill is there.
        let before = acked.lock().unwrap().clone();
        let stored: std::collections::HashSet<i64> = stored_values(&client, &base, &auth, imei)
            .await
            .into_iter()
            .collect();
        let lost: Vec<&i64> = before.iter().filter(|v| !stored.contains(v)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged values lost, e.g. {:?}",
            lost.len(),
            before.len(),
            &lost[..lost.len().min(5)]
        );
        let wal_bytes: u64 = std::fs::read_dir(dir.path().join("data/tsdb/wal"))
            .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
            .unwrap_or(0);
        eprintln!(
            "round {round}: ready after {ready_after:?}, {} values acknowledged so far, all there; log {wal_bytes} bytes",
            before.len()
        );
        // Four writers, 100 values a request, one minute apart (so they
        // spread over many days and blocks), until the kill.
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
                let (acked, next) = (Arc::clone(&acked), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let first = next.fetch_add(100, Ordering::Relaxed);
                        let pairs: Vec<Json> = (first..first + 100)
                            .map(|id| json!([1_600_000_000_000i64 + id * 60_000, id]))
                            .collect();
                        let r = client
                            .post(format!("{base}/v1/products/{imei}/data"))
                            .header("Authorization", &auth)
                            .json(&json!({"fields": {"v": pairs}}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().unwrap().extend(first..first + 100)
                            }
                            Ok(r) => panic!("write refused: {}", r.text().await.unwrap()),
                            Err(_) => return, // the server is gone
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500 + 700 * round)).await;
        server.kill9();
        for w in writers {
            w.await.unwrap();
        }
    }
    assert!(
        acked.lock().unwrap().len() > 3_000,
        "too few writes to cross the head size"
    );
    let blocks = walk_count(&dir.path().join("data/tsdb/blocks"), ".parquet");
    assert!(blocks > 0, "the head was written out as blocks");
    // The last round's kill is checked by one more start.
    let http = free_port();
    let base = format!("http://127.0.0.1:{http}");
    let mut server = start_role(
        "serve",
        dir.path(),
        free_port(),
        &serve_env(http, "4000000"),
    );
    server.wait_ready(&client, &base).await;
    let auth = admin_auth(&client, &base).await;
    let stored: std::collections::HashSet<i64> = stored_values(&client, &base, &auth, imei)
        .await
        .into_iter()
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost = acked.iter().filter(|v| !stored.contains(v)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged values lost",
        acked.len()
    );
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn walk_count(dir: &std::path::Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_count(&e.path(), suffix)
                    } else {
                        usize::from(e.file_name().to_string_lossy().ends_with(suffix))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `serve` on `http` with the gateway's TCP transport off, an admin, and a
/// time-series head of `head_values`.
fn serve_env(http: u16, head_values: &str) -> [(&'static str, String); 5] {
    [
        ("SMARTSOLAR_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("SMARTSOLAR_GATEWAY_TCP_ADDR", "off".into()),
        ("SMARTSOLAR_ADMIN_USER", "admin@example.com".into()),
        ("SMARTSOLAR_ADMIN_PASSWORD", "admin-password".into()),
        ("SMARTSOLAR_TSDB_HEAD_VALUES", head_values.into()),
    ]
}

/// Logs in as the admin; the `Authorization` header value.
async fn admin_auth(client: &reqwest::Client, base: &str) -> String {
    Client::login(client, base, "admin@example.com", "admin-password")
        .await
        .auth
}

/// `serve` keeps its bus on disk under the data directory by default: a second process on the
/// same data directory is refused with a reason (two writers would corrupt the log), and after
/// a `kill -9` the same directory opens again (the lock dies with the process, recovery runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_its_bus_on_disk_and_refuses_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let start = |metrics: u16| {
        start_role(
            "serve",
            dir.path(),
            metrics,
            &[
                ("SMARTSOLAR_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
                (
                    "SMARTSOLAR_GATEWAY_TCP_ADDR",
                    format!("127.0.0.1:{}", free_port()),
                ),
            ],
        )
    };
    let metrics = free_port();
    let mut first = start(metrics);
    let admin = format!("http://127.0.0.1:{metrics}");
    assert_eq!(
        get_when_up(&client, &format!("{admin}/ready")).await,
        (200, "ready".to_string())
    );
    let bus = dir.path().join("data").join("bus");
    assert!(bus.join("LOCK").exists(), "the disk bus is the default");
    assert!(
        bus.join("RTC-MO").join("0").is_dir(),
        "topics are on disk: {:?}",
        std::fs::read_dir(&bus).map(|d| d.count())
    );

    // Had the first server lost its metrics port to someone else, `/ready` above came from
    // another server: make sure it is this one that runs.
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first serve is still running"
    );
    let second = Command::new(env!("CARGO_BIN_EXE_smartsolar"))
        .arg("serve")
        .env(
            "SMARTSOLAR_DATABASE_URL",
            format!("sqlite://{}/db.sqlite", dir.path().display()),
        )
        .env("SMARTSOLAR_DATA_DIR", dir.path().join("data"))
        .env("SMARTSOLAR_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env(
            "SMARTSOLAR_GATEWAY_TCP_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("SMARTSOLAR_GATEWAY_QUIC_ADDR", "off")
        .env("SMARTSOLAR_GATEWAY_HTTP_ADDR", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || second.wait_with_output()),
    )
    .await
    .expect("the second serve exits")
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second serve must be refused, but it ended with {}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("open in another process"),
        "the refusal names its reason: {stderr}"
    );

    first.kill9();
    let metrics = free_port();
    let _again = start(metrics);
    let admin = format!("http://127.0.0.1:{metrics}");
    assert_eq!(
        get_when_up(&client, &format!("{admin}/ready")).await,
        (200, "ready".to_string())
    );
    let (_, body) = get_when_up(&client, &format!("{admin}/metrics")).await;
    assert!(
        body.lines()
            .any(|l| l.starts_with("smartsolar_bus_backlog_messages{")
                && l.contains("bus=\"disk\"")
                && l.contains("topic=\"RTC-MO.Dead-Letter\"")),
        "the dead-letter backlog is exported:\n{body}"
    );
}

// ------------------------------------------------------------------------------------------
// Issue 16: the database is the record of what a unit must get. A command accepted by the API
// reaches the unit after any restart of the server, and a payment reaches its ledger once.

/// One `serve` process of the redelivery tests: SQLite and the disk bus in `dir`, every unit
/// transport on a fresh port (plain framed TCP, QUIC, legacy HTTP).
struct Node {
    server: Process,
    base: String,
    admin: String,
    tcp: SocketAddr,
    quic: SocketAddr,
    legacy: SocketAddr,
}

impl Node {
    async fn start(client: &reqwest::Client, dir: &std::path::Path) -> Self {
        Self::start_with(client, dir, &[]).await
    }

    /// [`Node::start`] with more environment.
    async fn start_with(
        client: &reqwest::Client,
        dir: &std::path::Path,
        extra: &[(&'static str, String)],
    ) -> Self {
        let (http, metrics) = (free_port(), free_port());
        let (tcp, quic, legacy) = (free_port(), free_port(), free_port());
        let mut env = vec![
            ("SMARTSOLAR_HTTP_ADDR", format!("127.0.0.1:{http}")),
            ("SMARTSOLAR_GATEWAY_TCP_ADDR", format!("127.0.0.1:{tcp}")),
            ("SMARTSOLAR_GATEWAY_TCP_TLS", "false".into()),
            ("SMARTSOLAR_GATEWAY_QUIC_ADDR", format!("127.0.0.1:{quic}")),
            (
                "SMARTSOLAR_GATEWAY_HTTP_ADDR",
                format!("127.0.0.1:{legacy}"),
            ),
            ("SMARTSOLAR_ADMIN_USER", "admin@example.com".into()),
            ("SMARTSOLAR_ADMIN_PASSWORD", "admin-password".into()),
        ];
        env.extend_from_slice(extra);
        let mut server = start_role("serve", dir, metrics, &env);
        let base = format!("http://127.0.0.1:{http}");
        server.wait_ready(client, &base).await;
        let addr = |port: u16| format!("127.0.0.1:{port}").parse().unwrap();
        Self {
            server,
            base,
            admin: format!("http://127.0.0.1:{metrics}"),
            tcp: addr(tcp),
            quic: addr(quic),
            legacy: addr(legacy),
        }
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.server.kill9();
    }

    /// SIGTERM, and a clean exit.
    async fn stop(mut self) {
        self.server.stop("serve").await;
    }

    /// The value of the first sample of `metric` whose line contains `label` (0 if none).
    async fn metric(&self, client: &reqwest::Client, metric: &str, label: &str) -> f64 {
        let (_, body) = get_when_up(client, &format!("{}/metrics", self.admin)).await;
        body.lines()
            .filter(|l| l.starts_with(metric) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .next()
            .unwrap_or(0.0)
    }

    /// Waits until the gateway has taken `n` MT commands of type `ty` from the bus (so it
    /// committed them there, and only its memory and the database still have them).
    async fn wait_mt_taken(&self, client: &reqwest::Client, ty: &str, n: f64) {
        let label = format!("type=\"{ty}\"");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self
            .metric(client, "smartsolar_gateway_mt_messages_total", &label)
            .await
            < n
        {
            assert!(
                Instant::now() < deadline,
                "the gateway never took the {ty} MT"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The consumer commits right after handing the command to its shard.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    async fn call(
        &self,
        client: &reqwest::Client,
        auth: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> (u16, Json) {
        let mut req = client
            .request(method, format!("{}/v1{path}", self.base))
            .header("Authorization", auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Json::Null))
    }

    /// A unit as the factory makes it, RTC and credit managed.
    async fn provision(&self, client: &reqwest::Client, auth: &str, imei: &str, n: u32) {
        let (s, b) = self
            .call(
                client,
                auth,
                reqwest::Method::POST,
                "/products/create_hub2",
                Some(json!({"imsi": format!("2135141351{n:05}"), "imei": imei,
                    "device_key": unit_key(imei),
                    "product": {"assembler": "A", "rtc_enabled_flag": true}})),
            )
            .await;
        assert!((200..300).contains(&s), "create_hub2: {b}");
        let (s, b) = self
            .call(
                client,
                auth,
                reqwest::Method::PUT,
                &format!("/products/{imei}/set_dcm_enabled_flag"),
                Some(json!({"enabled": true})),
            )
            .await;
        assert_eq!(s, 200, "set_dcm_enabled_flag: {b}");
    }

    async fn add_payment(&self, client: &reqwest::Client, auth: &str, imei: &str, tx: &str) {
        let (s, b) = self
            .call(
                client,
                auth,
                reqwest::Method::POST,
                &format!("/products/{imei}/add_payment_command"),
                Some(json!({"category": "payment", "value": PAYMENT, "transaction_id": tx})),
            )
            .await;
        assert_eq!(s, 201, "add_payment_command: {b}");
    }

    /// `balance_and_pending_payments`: (balance, number of pending commands).
    async fn credit(&self, client: &reqwest::Client, auth: &str, imei: &str) -> (Json, usize) {
        let (s, b) = self
            .call(
                client,
                auth,
                reqwest::Method::GET,
                &format!("/products/{imei}/balance_and_pending_payments"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let pending = b["data"]["pending_payment_commands"]
            .as_array()
            .unwrap_or_else(|| panic!("no pending_payment_commands in {b}"))
            .len();
        (b["data"]["balance"].clone(), pending)
    }

    /// Waits until the unit's payment commands are all acknowledged and its balance is
    /// `balance`.
    async fn wait_acknowledged(&self, client: &reqwest::Client, auth: &str, imei: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let credit = self.credit(client, auth, imei).await;
            if credit == (json!(PAYMENT), 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "payment not acknowledged: {credit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Seconds of credit each test payment carries.
const PAYMENT: i64 = 86_400;

fn unit_key(imei: &str) -> String {
    format!("{imei}abcdefghi")
}

/// A unit's credit as its firmware keeps it (protocol §4.4): each payment command is applied
/// once, recognised by its transaction id, whichever MT carries it and however often.
#[derive(Default)]
struct UnitLedger {
    balance: i64,
    applied: std::collections::HashSet<String>,
}

impl UnitLedger {
    fn apply(&mut self, p: &codec::mt::PaymentCommands<'_>) {
        for c in p.commands.iter() {
            if self.applied.insert(c.transaction_id.to_owned()) {
                self.balance = match c.category {
                    codec::mt::PaymentCategory::ZeroCommand => 0,
                    _ => self.balance + c.value,
                };
            }
        }
    }
}

/// The next MT the unit receives within `limit`.
async fn next_mt(unit: &mut sim::UnitConn, limit: Duration) -> Option<Vec<u8>> {
    match tokio::time::timeout(limit, unit.recv()).await {
        Ok(Ok(Some(frame))) => Some(frame.to_vec()),
        _ => None,
    }
}

/// Answers an MT as the unit: `Ok`, with the unit's balance when given.
async fn reply_ok(unit: &mut sim::UnitConn, id: codec::CorrelationId, balance: Option<i64>) {
    unit.send_mo(&codec::MoMessage::Reply(codec::mo::MtReply {
        correlation_id: id,
        result: codec::mo::ReplyResult::Ok,
        info: None,
        balance,
        expected_expiry: None,
    }))
    .await
    .unwrap();
}

/// Receives MT messages for up to `limit`, answering status updates `Ok`, until a
/// payment-commands MT arrives: applies it to `ledger` as the unit does and returns its
/// correlation id and its bytes (not answered yet).
async fn next_payment(
    unit: &mut sim::UnitConn,
    ledger: &mut UnitLedger,
    limit: Duration,
) -> Option<(codec::CorrelationId, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = next_mt(unit, left).await?;
        match codec::decode_mt(&frame).unwrap() {
            codec::MtMessage::PaymentCommands(p) => {
                ledger.apply(&p);
                return Some((p.correlation_id, frame));
            }
            other => reply_ok(unit, other.correlation_id(), None).await,
        }
    }
}

/// A unit that connects now is sent nothing within 3 s.
async fn nothing_more_for(node: &Node, imei: &str) {
    let mut unit = tcp_unit(node, imei).await;
    if let Some(frame) = next_mt(&mut unit, Duration::from_secs(3)).await {
        panic!(
            "sent again after its acknowledgement: {:?}",
            codec::render_cbor(&frame)
        );
    }
}

async fn tcp_unit(node: &Node, imei: &str) -> sim::UnitConn {
    let mut unit = sim::UnitConn::tcp(node.tcp).await.unwrap();
    unit.handshake(Some(imei), &unit_key(imei)).await.unwrap();
    unit
}

/// Item 3a/3b: a payment command accepted (201) for an offline unit, then the server stops
/// (`kill -9` or SIGTERM) after its gateway took the command off the bus; restarted on the same
/// data directory, the unit connects and gets the payment within seconds, acknowledges it, and
/// it is acknowledged in the API and not sent again on the next connect. `env`: the bus.
async fn a_payment_for_an_offline_unit_survives(graceful: bool, env: &[(&'static str, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let imei = "010101234560011";
    let node = Node::start_with(&client, dir.path(), env).await;
    let auth = admin_auth(&client, &node.base).await;
    node.provision(&client, &auth, imei, 11).await;
    node.add_payment(&client, &auth, imei, "pay-offline-1")
        .await;
    node.wait_mt_taken(&client, "payment_commands", 1.0).await;
    if graceful {
        node.stop().await;
    } else {
        node.kill();
    }

    let node = Node::start_with(&client, dir.path(), env).await;
    let auth = admin_auth(&client, &node.base).await;
    let mut unit = tcp_unit(&node, imei).await;
    let mut ledger = UnitLedger::default();
    let (id, _) = next_payment(&mut unit, &mut ledger, Duration::from_secs(5))
        .await
        .expect("the payment reaches the unit after the restart");
    assert_eq!(ledger.balance, PAYMENT);
    reply_ok(&mut unit, id, Some(ledger.balance)).await;
    node.wait_acknowledged(&client, &auth, imei).await;
    unit.close().await.unwrap();
    // Acknowledged: the next connect brings nothing.
    nothing_more_for(&node, imei).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_for_an_offline_unit_survives_kill_9() {
    a_payment_for_an_offline_unit_survives(false, &[]).await;
}

/// On the disk bus (the default) the gateway's hand-back at shutdown is durable too, so this
/// one held before the record existed; it must keep holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_for_an_offline_unit_survives_a_graceful_restart() {
    a_payment_for_an_offline_unit_survives(true, &[]).await;
}

/// The record alone keeps the command: on the in-process bus, whose content (the hand-back
/// included) a restart throws away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_for_an_offline_unit_survives_a_graceful_restart_on_the_memory_bus() {
    a_payment_for_an_offline_unit_survives(true, &[("SMARTSOLAR_BUS", "memory".into())]).await;
}

/// Item 3c: a desired-state change made while the units are offline (enable) reaches them
/// when they next connect after a `kill -9`: a QUIC unit on connecting, and a legacy HTTP unit
/// on its first poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_state_change_reaches_units_that_connect_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (quic_imei, http_imei) = ("010101234560012", "010101234560013");
    let node = Node::start(&client, dir.path()).await;
    let auth = admin_auth(&client, &node.base).await;
    for (n, imei) in [(12, quic_imei), (13, http_imei)] {
        node.provision(&client, &auth, imei, n).await;
        let (s, b) = node
            .call(
                &client,
                &auth,
                reqwest::Method::PUT,
                &format!("/products/{imei}/enable"),
                None,
            )
            .await;
        assert_eq!(s, 200, "enable: {b}");
    }
    node.wait_mt_taken(&client, "status_update", 2.0).await;
    node.kill();

    let node = Node::start(&client, dir.path()).await;
    // QUIC, pinning the certificate the gateway keeps in the data directory.
    let cert = sim::pem_certificate(&dir.path().join("data").join("gateway-cert.pem")).unwrap();
    let endpoint = sim::quic_endpoint(&cert, Duration::from_secs(5)).unwrap();
    let mut unit = sim::UnitConn::quic(&endpoint, node.quic).await.unwrap();
    unit.handshake(Some(quic_imei), &unit_key(quic_imei))
        .await
        .unwrap();
    let frame = next_mt(&mut unit, Duration::from_secs(5))
        .await
        .expect("the status update reaches the QUIC unit after the crash");
    match codec::decode_mt(&frame).unwrap() {
        codec::MtMessage::StatusUpdate(u) => assert_eq!(u.enabled, Some(true)),
        other => panic!("expected a status update, got {other:?}"),
    }

    // The HTTP unit's first poll after the restart carries the change.
    let basic = codec::legacy::basic_auth(http_imei, &unit_key(http_imei));
    let (status, body) = sim::http_request(node.legacy, "GET", "/rc_data", Some(&basic), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let settings: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(settings["enabled"], json!(true), "{settings}");
}

/// Item 3d: a payment delivered twice reaches the ledger once. The unit receives it and drops
/// the connection before acknowledging; the server is killed and restarted; on reconnecting the
/// unit gets the same MT again (same correlation id and transaction id), recognises the
/// transaction id and does not apply it again, and acknowledges it, twice over. The server
/// acknowledges the command once and records the unit's balance; the next connect brings
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_delivered_twice_reaches_the_ledger_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let imei = "010101234560014";
    let node = Node::start(&client, dir.path()).await;
    let auth = admin_auth(&client, &node.base).await;
    node.provision(&client, &auth, imei, 14).await;
    let mut unit = tcp_unit(&node, imei).await;
    node.add_payment(&client, &auth, imei, "pay-twice-1").await;
    let mut ledger = UnitLedger::default();
    let (first_id, first) = next_payment(&mut unit, &mut ledger, Duration::from_secs(10))
        .await
        .expect("the payment reaches the connected unit");
    unit.abort(); // gone before acknowledging
    node.kill();

    let node = Node::start(&client, dir.path()).await;
    let auth = admin_auth(&client, &node.base).await;
    let mut unit = tcp_unit(&node, imei).await;
    let (again_id, again) = next_payment(&mut unit, &mut ledger, Duration::from_secs(5))
        .await
        .expect("the unacknowledged payment is sent again after the crash");
    assert_eq!(
        again_id,
        first_id,
        "a resend keeps the MT's correlation id: first {:?}, again {:?}",
        codec::render_cbor(&first),
        codec::render_cbor(&again)
    );
    assert_eq!(again, first, "a resend is the same bytes");
    assert_eq!(ledger.balance, PAYMENT, "the unit applied it once");
    // The unit acknowledges, and (its first reply unconfirmed) acknowledges again.
    reply_ok(&mut unit, again_id, Some(ledger.balance)).await;
    reply_ok(&mut unit, again_id, Some(ledger.balance)).await;
    node.wait_acknowledged(&client, &auth, imei).await;
    let acknowledged = node
        .metric(
            &client,
            "smartsolar_dcm_payment_command_events_total",
            "event=\"acknowledged\"",
        )
        .await;
    assert_eq!(acknowledged, 1.0, "acknowledged once in the ledger");
    unit.close().await.unwrap();
    nothing_more_for(&node, imei).await;
}

/// Protocol §6: a legacy HTTP unit deletes an upload once it got 200, so 200 must mean stored.
/// Uploads go on one after another while the server is killed with `kill -9`; after the
/// restart every upload that was answered 200 is in the time-series store. (kill -9 keeps
/// the page cache, so this proves "on the bus before 200", not the fsync: no test here cuts
/// the power; `docs/architecture.md`, "Guarantees", says what a power loss can take.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_http_upload_answered_200_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let node = Node::start(&client, dir.path()).await;
    let auth = admin_auth(&client, &node.base).await;
    let imei = "010101234560031";
    node.provision(&client, &auth, imei, 31).await;
    let basic = codec::legacy::basic_auth(imei, &unit_key(imei));
    let (legacy, t0) = (node.legacy, sim::now_s() - 100_000);
    let uploader = tokio::spawn(async move {
        let mut answered = Vec::new();
        for i in 0..100_000i64 {
            let body = format!(
                r#"{{"imei": "{imei}", "fields": {{"v": [[{}, {i}]]}}}}"#,
                t0 + i as u64
            );
            match sim::http_request(
                legacy,
                "POST",
                "/rm_data",
                Some(&basic),
                Some(body.as_bytes()),
            )
            .await
            {
                Ok((200, _)) => answered.push(i),
                _ => break, // the server is gone: the unit keeps the rest
            }
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill();
    let answered = uploader.await.unwrap();
    eprintln!("{} uploads answered 200 before the kill", answered.len());
    assert!(
        answered.len() > 10,
        "uploads before the kill: {}",
        answered.len()
    );

    let node = Node::start(&client, dir.path()).await;
    let auth = admin_auth(&client, &node.base).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = stored_values(&client, &node.base, &auth, imei).await;
        let missing: Vec<i64> = answered
            .iter()
            .filter(|i| !stored.contains(i))
            .copied()
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} uploads answered 200 are not stored: {:?}",
            missing.len(),
            answered.len(),
            &missing[..missing.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    node.stop().await;
}

// ------------------------------------------------------------------------------------------
// Issue 16 item 8: an acknowledged MO is stored exactly once, whatever happens to the server.

/// Where the current server's unit listeners are (they move with every restart).
#[derive(Clone, Copy)]
struct UnitAddrs {
    tcp: SocketAddr,
    quic: SocketAddr,
    legacy: SocketAddr,
}

/// What one unit did: numbers sent and numbers acknowledged (an MO's number is its
/// telemetry value, so the store can be checked by value).
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked: Vec<i64>,
    /// Messages sent again from the window after a reconnect.
    resent: u64,
}

/// A version-2 unit over TCP or QUIC that sends numbered telemetry (value `n`, record time
/// `t0 + n`) until `stop`, reconnecting and resending its window whenever the server goes
/// away; at the end it flushes its window to the last server. Acknowledged = what the
/// window's acknowledgements covered.
async fn v2_sender(
    imei: String,
    quic: bool,
    cert: Vec<u8>,
    addrs: std::sync::Arc<std::sync::Mutex<UnitAddrs>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Tally {
    let t0 = sim::now_s() - 200_000;
    let endpoint = sim::quic_endpoint(&cert, Duration::from_secs(2)).unwrap();
    let mut window = Some(sim::MoWindow::new(rand_boot(&imei), 64));
    let mut next = 1u64;
    let mut resent = 0u64;
    loop {
        let stopping = *stop.borrow();
        let a = *addrs.lock().unwrap();
        let conn = if quic {
            tokio::time::timeout(
                Duration::from_secs(2),
                sim::UnitConn::quic(&endpoint, a.quic),
            )
            .await
        } else {
            tokio::time::timeout(Duration::from_secs(2), sim::UnitConn::tcp(a.tcp)).await
        };
        let Ok(Ok(mut unit)) = conn else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let w = window.take().unwrap();
        let to_resend = w.len() as u64;
        let hs = tokio::time::timeout(
            Duration::from_secs(3),
            unit.handshake_v2(Some(&imei), &unit_key(&imei), w),
        )
        .await;
        if !matches!(hs, Ok(Ok(_))) {
            window = unit.take_window();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        resent += to_resend;
        if stopping {
            // The last server: everything still unacknowledged goes there.
            let flushed = unit.await_acks(Duration::from_secs(20)).await;
            let w = unit.take_window().unwrap();
            if flushed {
                let acked = (1..=w.acked() as i64).collect();
                let _ = unit.close().await;
                return Tally {
                    sent: w.last_seq(),
                    acked,
                    resent,
                };
            }
            window = Some(w);
            continue;
        }
        // Send until the connection fails or the test says stop.
        loop {
            if *stop.borrow() {
                break;
            }
            // The window numbers messages; a send cut off by the timeout may have numbered
            // one already, so the next value is always the window's next number.
            next = unit.window().map_or(next, |w| w.last_seq() + 1);
            let m = sim::telemetry(t0 + next, next);
            match tokio::time::timeout(Duration::from_secs(3), unit.send_message(&m)).await {
                Ok(Ok(seq)) => assert_eq!(seq, next, "numbers and values stay aligned"),
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        window = unit.take_window();
        unit.abort();
    }
}

/// A boot id per unit (any 32 bits; fixed here so a failure is reproducible).
fn rand_boot(imei: &str) -> u32 {
    imei.bytes()
        .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
}

/// An HTTP unit uploading numbered values (`/rm_data`, field `pulse_count`) until `stop`;
/// a 200 is its acknowledgement; anything else and it uploads the same value again.
async fn http_sender(
    imei: String,
    addrs: std::sync::Arc<std::sync::Mutex<UnitAddrs>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Tally {
    let t0 = sim::now_s() - 200_000;
    let basic = codec::legacy::basic_auth(&imei, &unit_key(&imei));
    let mut tally = Tally::default();
    let mut n = 1i64;
    while !*stop.borrow() {
        let body = format!(
            r#"{{"imei": "{imei}", "fields": {{"pulse_count": [[{}, {n}]]}}}}"#,
            t0 + n as u64
        );
        let legacy = addrs.lock().unwrap().legacy;
        tally.sent = tally.sent.max(n as u64);
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            sim::http_request(
                legacy,
                "POST",
                "/rm_data",
                Some(&basic),
                Some(body.as_bytes()),
            ),
        )
        .await;
        if let Ok(Ok((200, _))) = r {
            tally.acked.push(n);
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tally
}

/// Every value of `pulse_count` in the time-series store for `imei`, through the data API.
async fn stored_pulses(client: &reqwest::Client, node: &Node, auth: &str, imei: &str) -> Vec<i64> {
    field_values(client, &node.base, auth, imei, "pulse_count")
        .await
        .unwrap_or_default()
}

/// The `pulse_count` of every telemetry row of `rtc_mo_message_history` for `imei`, through
/// the API (one page: the node allows large pages), read from the row's `message_json`.
async fn history_pulses(client: &reqwest::Client, node: &Node, auth: &str, imei: &str) -> Vec<i64> {
    let q = json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}]}).to_string();
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/rtc_mo_message_history", node.base),
        [("q", q.as_str()), ("results_per_page", "100000")],
    )
    .unwrap();
    let body = get_json(client, url, auth).await;
    let rows = body["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("history: {body}"));
    rows.iter().filter_map(common::history_pulse).collect()
}

/// Item 8: version-2 TCP and QUIC units and an HTTP unit send numbered telemetry while the
/// real `serve` is killed with `kill -9` twice and restarted gracefully once, on the same
/// data directory. The units reconnect and resend what was not acknowledged. At the end every
/// acknowledged MO is in the time-series store and in `rtc_mo_message_history` exactly once
/// (both read through the API). Prints sent / acknowledged / stored / lost / duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_mo_survive_kill_9_and_restart_exactly_once() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let env = [("SMARTSOLAR_MAX_RESULTS_PER_PAGE", "100000".to_string())];
    let mut node = Node::start_with(&client, dir.path(), &env).await;
    let auth = admin_auth(&client, &node.base).await;
    let units: Vec<(String, &str)> = [
        (41u32, "tcp"),
        (42, "tcp"),
        (43, "quic"),
        (44, "quic"),
        (45, "http"),
    ]
    .iter()
    .map(|(n, t)| (format!("0101012345600{n}"), *t))
    .collect();
    for (i, (imei, _)) in units.iter().enumerate() {
        node.provision(&client, &auth, imei, 40 + i as u32).await;
    }
    let cert = sim::pem_certificate(&dir.path().join("data/gateway-cert.pem")).unwrap();
    let addrs = Arc::new(Mutex::new(UnitAddrs {
        tcp: node.tcp,
        quic: node.quic,
        legacy: node.legacy,
    }));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let senders: Vec<_> = units
        .iter()
        .map(|(imei, kind)| {
            let (imei, addrs, stop) = (imei.clone(), Arc::clone(&addrs), stop.clone());
            let cert = cert.clone();
            match *kind {
                "http" => tokio::spawn(http_sender(imei, addrs, stop)),
                k => tokio::spawn(v2_sender(imei, k == "quic", cert, addrs, stop)),
            }
        })
        .collect();

    // Two kill -9 and one SIGTERM, each after ~2 s of traffic.
    for graceful in [false, false, true] {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        if graceful {
            node.stop().await;
        } else {
            node.kill();
        }
        node = Node::start_with(&client, dir.path(), &env).await;
        *addrs.lock().unwrap() = UnitAddrs {
            tcp: node.tcp,
            quic: node.quic,
            legacy: node.legacy,
        };
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    let mut tallies = Vec::new();
    for s in senders {
        tallies.push(
            tokio::time::timeout(Duration::from_secs(40), s)
                .await
                .unwrap()
                .unwrap(),
        );
    }

    let auth = admin_auth(&client, &node.base).await;
    let (mut total_sent, mut total_acked, mut total_stored, mut lost, mut duplicated) =
        (0u64, 0usize, 0usize, 0usize, 0usize);
    for ((imei, kind), tally) in units.iter().zip(&tallies) {
        assert!(
            tally.acked.len() > 20,
            "{kind} unit {imei}: too little traffic: {tally:?}"
        );
        // Ingest may still be applying the last messages.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (stored, history) = loop {
            let stored = stored_pulses(&client, &node, &auth, imei).await;
            let history = if *kind == "http" {
                Vec::new()
            } else {
                history_pulses(&client, &node, &auth, imei).await
            };
            let complete = |got: &[i64]| tally.acked.iter().all(|v| got.contains(v));
            if (complete(&stored) && (*kind == "http" || complete(&history)))
                || Instant::now() > deadline
            {
                break (stored, history);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let count = |got: &[i64]| {
            let mut c = std::collections::HashMap::<i64, usize>::new();
            for v in got {
                *c.entry(*v).or_default() += 1;
            }
            c
        };
        let (in_store, in_history) = (count(&stored), count(&history));
        let unit_lost = tally
            .acked
            .iter()
            .filter(|v| {
                !in_store.contains_key(v) || (*kind != "http" && !in_history.contains_key(v))
            })
            .count();
        let unit_dup = in_store.values().filter(|&&n| n > 1).count()
            + in_history.values().filter(|&&n| n > 1).count();
        eprintln!(
            "{kind} unit {imei}: sent {} (resent from the window {}), acknowledged {}, stored {} (history {}), lost {unit_lost}, duplicated {unit_dup}",
            tally.sent,
            tally.resent,
            tally.acked.len(),
            stored.len(),
            history.len()
        );
        total_sent += tally.sent;
        total_acked += tally.acked.len();
        total_stored += stored.len();
        lost += unit_lost;
        duplicated += unit_dup;
    }
    eprintln!(
        "all units: sent {total_sent}, acknowledged {total_acked}, stored {total_stored}, lost {lost}, duplicated {duplicated}"
    );
    assert_eq!(lost, 0, "acknowledged MO lost");
    assert_eq!(duplicated, 0, "MO stored twice");
    node.stop().await;
}
