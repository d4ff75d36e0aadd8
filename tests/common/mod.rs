//! Helpers the binary's end-to-end tests share.

#![allow(dead_code)] // Each test file uses a part.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

/// `smartsolar <role>` (`serve`, `demo`) on embedded defaults (SQLite, the embedded
/// time-series store, the disk bus) in `dir`, API on `http`, the gateway's TLS-TCP and QUIC
/// listeners on `tcp` and `quic` and the legacy HTTP one on `legacy` or off (all 127.0.0.1),
/// with the admin user `admin@example.com` / `admin-password`. The caller adds what its test
/// needs and spawns it.
pub(crate) fn smartsolar_command(
    role: &str,
    dir: &std::path::Path,
    (http, tcp, quic): (u16, u16, u16),
    legacy: Option<u16>,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smartsolar"));
    cmd.arg(role)
        .env("SMARTSOLAR_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env(
            "SMARTSOLAR_DATABASE_URL",
            format!("sqlite://{}/db.sqlite", dir.display()),
        )
        .env("SMARTSOLAR_DATA_DIR", dir.join("data"))
        .env("SMARTSOLAR_GATEWAY_TCP_ADDR", format!("127.0.0.1:{tcp}"))
        .env("SMARTSOLAR_GATEWAY_QUIC_ADDR", format!("127.0.0.1:{quic}"))
        .env(
            "SMARTSOLAR_GATEWAY_HTTP_ADDR",
            legacy.map_or("off".to_owned(), |p| format!("127.0.0.1:{p}")),
        )
        .env("SMARTSOLAR_ADMIN_USER", "admin@example.com")
        .env("SMARTSOLAR_ADMIN_PASSWORD", "admin-password");
    cmd
}

/// A port nobody listens on right now, for a server the test starts.
///
/// Ports come from 10000–17999, below the kernel's ephemeral range (32768–60999 by default),
/// so neither an outgoing connection nor another test's bind to port 0 can take one between
/// this call and the server's bind: a port from `127.0.0.1:0` could be, and the server then
/// failed to start (or another test's server answered its `/ready`). Each test process walks
/// its own sequence, seeded by its pid, and skips ports that are taken (TCP or UDP: QUIC
/// listens on UDP).
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 8_000;
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + seed.wrapping_add(n) % COUNT) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// Sends `req` and reads its answer as JSON (a transport error or a body that is not JSON
/// fails the test).
pub(crate) async fn json_of(req: reqwest::RequestBuilder) -> Json {
    req.send().await.unwrap().json().await.unwrap()
}

/// A logged-in API user.
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    /// The `Authorization` header value.
    pub(crate) auth: String,
}

impl Client {
    /// Logs in as `username` at `base` (`http://host:port`).
    pub(crate) async fn login(
        http: &reqwest::Client,
        base: &str,
        username: &str,
        password: &str,
    ) -> Self {
        let login = json_of(
            http.post(format!("{base}/v1/auth/login"))
                .form(&[("username", username), ("password", password)]),
        )
        .await;
        let token = login["message"]["login_successful"]["API_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login failed: {login}"));
        Self {
            http: http.clone(),
            base: base.to_owned(),
            auth: format!("Token token={token}"),
        }
    }

    /// `GET /v1{path}`, which must succeed.
    pub(crate) async fn get(&self, path: &str) -> Json {
        let r = self
            .http
            .get(format!("{}/v1{path}", self.base))
            .header("Authorization", &self.auth)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `method /v1{path}` with a JSON body; the status and the body.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Json,
    ) -> (u16, Json) {
        let r = self
            .http
            .request(method, format!("{}/v1{path}", self.base))
            .header("Authorization", &self.auth)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        )
    }

    /// `POST /v1{path}` with a JSON body; the status and the body.
    pub(crate) async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// Every row of a table filtered by `filters` (the `q` language), page after page.
    pub(crate) async fn rows(&self, path: &str, filters: Json) -> Vec<Json> {
        let q = json!({ "filters": filters }).to_string();
        let mut all = Vec::new();
        for page in 1.. {
            let page = page.to_string();
            let url = reqwest::Url::parse_with_params(
                &format!("{}/v1{path}", self.base),
                [
                    ("q", q.as_str()),
                    ("results_per_page", "100"),
                    ("page", page.as_str()),
                ],
            )
            .unwrap();
            let body = json_of(self.http.get(url).header("Authorization", &self.auth)).await;
            let rows = body["objects"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: {body}"));
            all.extend(rows.iter().cloned());
            if body["page"].as_u64() >= body["total_pages"].as_u64() {
                return all;
            }
        }
        unreachable!("pages are counted until the last")
    }
}

/// The `pulse_count` of a telemetry row of `rtc_mo_message_history`, read from its
/// `message_json` (`pulse_count` travels as field id 12, the batch's last field, protocol
/// §4.2); `None` for other messages.
pub(crate) fn history_pulse(row: &Json) -> Option<i64> {
    let j = row["message_json"].as_str()?;
    let at = j.find(", 12: ")? + ", 12: ".len();
    let digits: String = j[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Polls `check` every 500 ms until it gives `Ok`, or fails naming `what` with the last
/// state it saw (the `Err`).
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A child process of a test (the `smartsolar` binary): killed when dropped, so a failing
/// test leaves nothing running.
pub(crate) struct Process(pub(crate) Child);

impl Process {
    /// SIGTERM, then waits (up to 45 s) for a clean exit.
    pub(crate) async fn stop(&mut self, what: &str) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(45);
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(status.success(), "{what} exited with {status}");
    }

    /// Waits (up to 60 s) until `{base}/ready` answers 200, and fails at once, with the exit
    /// status, if the process exits first (it wrote why on its stderr, which the test shows).
    pub(crate) async fn wait_ready(&mut self, http: &reqwest::Client, base: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!("the server for {base} exited with {status} before it was ready");
            }
            let last = match http.get(format!("{base}/ready")).send().await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "{base} did not become ready within 60 s; last answer: {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9`, and waits until the process is gone.
    pub(crate) fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 30 s) until the payment command `transaction_id` is `acknowledged`.
pub(crate) async fn payment_acknowledged(api: &Client, transaction_id: &str) {
    eventually(
        "payment acknowledged",
        Duration::from_secs(30),
        || async move {
            let rows = api
                .rows(
                    "/payment_commands",
                    json!([{"name": "transaction_id", "op": "eq", "val": transaction_id}]),
                )
                .await;
            match rows.first() {
                Some(r) if r["status"] == "acknowledged" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// The `load-test` binary, built next to `smartsolar` (the README's test command builds every
/// target first); built here when missing or older than its sources (`--test load_smoke`).
pub(crate) fn load_test_binary() -> PathBuf {
    let smartsolar = PathBuf::from(env!("CARGO_BIN_EXE_smartsolar"));
    let dir = smartsolar.parent().unwrap();
    let bin = dir.join("load-test");
    let newest = |root: &Path| -> std::time::SystemTime {
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
            .unwrap_or(std::time::UNIX_EPOCH)
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = newest(&root.join("load-test/src")).max(newest(&root.join("sim/src")));
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none_or(|b| b < sources) {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "-p", "smartsolar-load-test", "--bin", "load-test"])
            .arg("--target-dir")
            .arg(dir.parent().unwrap());
        if dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        assert!(cargo.status().unwrap().success(), "building load-test");
    }
    bin
}

/// Runs `load-test run` in target mode as the admin user with `args` (flag, value), bounded
/// and quiet; fails unless it succeeded. Its summary (written to `out`) and its stderr.
pub(crate) async fn load_test_run(args: &[(&str, String)], out: &Path) -> (Json, String) {
    let t = Instant::now();
    let mut cmd = tokio::process::Command::new(load_test_binary());
    cmd.args(["run", "--api-user", "admin@example.com"])
        .args(["--api-password", "admin-password"])
        .args(["--verify-secs", "60", "--max-secs", "240", "--quiet"])
        .arg("--out")
        .arg(out);
    for (k, v) in args {
        cmd.args([k, v.as_str()]);
    }
    let output = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "load-test failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    eprintln!(
        "load-test took {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout)
    );
    let s = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    (s, stderr)
}

/// A count of a load-test summary, by name (fails when it has none).
pub(crate) fn summary_count(s: &Json) -> impl Fn(&str) -> u64 + '_ {
    move |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("summary has no {k}: {s}"))
    }
}

/// Every MO written was acknowledged, and every acknowledged one stored exactly once
/// (database and time-series store), per a target-mode summary.
pub(crate) fn assert_every_mo_stored_once(s: &Json, stderr: &str) {
    let n = summary_count(s);
    assert_eq!(n("mo_acknowledged"), n("mo_sent"), "{stderr}");
    assert_eq!(n("mo_lost"), 0, "MO lost; {stderr}");
    assert_eq!(n("mo_duplicated"), 0, "MO duplicated; {stderr}");
    assert_eq!(n("mo_stored"), n("mo_acknowledged"), "{stderr}");
    assert_eq!(n("telemetry_stored"), n("telemetry_acknowledged"));
}

/// Runs `load-test run` in target mode with the smoke's load (1,000 units for ~10 s, every
/// unit within the gateway's per-unit rate limit) and `args` (the deployment's addresses),
/// the admin user; checks that nothing was lost or duplicated, every command (payments,
/// enable/disable) delivered and every payment acknowledged; returns the summary.
pub(crate) async fn run_load_test(dir: &std::path::Path, args: &[(&str, String)]) -> Json {
    let load = [
        ("--tcp", "400"),
        ("--quic", "400"),
        ("--http", "200"),
        ("--periodic-secs", "5"),
        ("--status-secs", "5"),
        ("--telemetry-secs", "2"),
        ("--event-secs", "5"),
        ("--mo-senders", "0"),
        ("--mo-secs", "0"),
        ("--mt-rate", "100"),
        ("--mt-secs", "2"),
        ("--storm-percent", "5"),
    ];
    let args: Vec<(&str, String)> = load
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .chain(args.iter().cloned())
        .collect();
    let (s, stderr) = load_test_run(&args, &dir.join("load-test-summary.json")).await;
    let n = summary_count(&s);
    assert_eq!(n("connected"), 800, "framed units connected; {stderr}");
    assert!(n("mo_sent") > 3_000, "MO sent: {}", n("mo_sent"));
    assert_every_mo_stored_once(&s, &stderr);
    assert_eq!(n("mt_accepted"), 200, "every command accepted; {stderr}");
    assert_eq!(n("mt_switches"), 20, "every tenth an enable or disable");
    assert_eq!(n("mt_delivered"), n("mt_accepted"), "MT delivered");
    assert_eq!(n("mt_lost"), 0);
    assert_eq!(
        n("mt_acknowledged"),
        n("mt_accepted") - n("mt_switches"),
        "payment replies recorded"
    );
    drop(n);
    s
}
