//! The `smartsolar serve` binary end to end: one process on embedded
//! defaults (SQLite, embedded time-series store, in-process bus), driven
//! through real HTTP and a real TCP unit connection, then stopped with
//! SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_api_gateway_and_ingest_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp, quic, legacy) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_smartsolar"))
        .arg("serve")
        .env("SMARTSOLAR_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env(
            "SMARTSOLAR_DATABASE_URL",
            format!("sqlite://{}/db.sqlite", dir.path().display()),
        )
        .env("SMARTSOLAR_DATA_DIR", dir.path().join("data"))
        .env("SMARTSOLAR_GATEWAY_TCP_ADDR", format!("127.0.0.1:{tcp}"))
        .env("SMARTSOLAR_GATEWAY_QUIC_ADDR", format!("127.0.0.1:{quic}"))
        .env(
            "SMARTSOLAR_GATEWAY_HTTP_ADDR",
            format!("127.0.0.1:{legacy}"),
        )
        .env("SMARTSOLAR_ADMIN_USER", "admin@example.com")
        .env("SMARTSOLAR_ADMIN_PASSWORD", "admin-password")
        .env(
            "SMARTSOLAR_CONSOLE_TILE_URL",
            "http://tiles.test/{z}/{x}/{y}.png",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server { child };
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    // The operator console is in the binary; its tiles come from the environment.
    let page = client.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let settings: Json = client
        .get(format!("{base}/console/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["tile_url"], "http://tiles.test/{z}/{x}/{y}.png");

    // The API: log in and create a unit as the factory would.
    let login: Json = client
        .post(format!("{base}/v1/auth/login"))
        .form(&[
            ("username", "admin@example.com"),
            ("password", "admin-password"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["message"]["login_successful"]["API_token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Token token={token}");
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

    // A unit connects over TCP, proves its key and sends telemetry.
    let addr: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let mut unit = gateway::sim::UnitConn::tcp(addr).await.unwrap();
    unit.handshake(Some(imei), key).await.unwrap();
    let now = gateway::sim::now_s();
    unit.send_raw(&gateway::sim::telemetry(now, 1))
        .await
        .unwrap();

    // Ingest writes it to the embedded store; the data API reads it back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Json = client
            .get(format!("{base}/v1/products/{imei}/data?fields=*"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        let body: Json = client
            .get(format!("{base}/v1/rtc_connection_history"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["num_results"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rtc_connection_history row: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    unit.abort();

    // SIGTERM: every service drains and the process exits cleanly.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "serve exited with {status}");
}
