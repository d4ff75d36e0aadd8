//! The load test in target mode against the real `smartsolar serve` (embedded defaults:
//! SQLite, the embedded time-series store, the disk bus): 1,000 units provisioned through the
//! API, ~10 s of traffic over TLS-TCP, QUIC and legacy HTTP, payment commands through the
//! API, a reconnect storm. Fails on any MO lost or duplicated (database and time-series
//! store) and any command not delivered or not acknowledged, read from the summary JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value as Json;

mod common;
use common::{free_port, serve_command, wait_ready, Process};

/// The `load-test` binary, built next to `smartsolar` (the README's test command builds every
/// target first); built here when missing or older than its sources (`--test load_smoke`).
fn load_test_binary() -> PathBuf {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_units_against_serve_lose_and_duplicate_nothing() {
    let load_test = load_test_binary();
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp, quic, legacy) = (free_port(), free_port(), free_port(), free_port());
    let child = serve_command(dir.path(), http, tcp, quic, legacy)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Process(child);
    let base = format!("http://127.0.0.1:{http}");
    wait_ready(&reqwest::Client::new(), &base).await;

    let summary = dir.path().join("summary.json");
    let (units_csv, chart) = (dir.path().join("units.csv"), dir.path().join("chart.html"));
    let cert = dir.path().join("data").join("gateway-cert.pem");
    let t = Instant::now();
    let out = tokio::process::Command::new(&load_test)
        .args(["run", "--api", &base])
        .args([
            "--api-user",
            "admin@example.com",
            "--api-password",
            "admin-password",
        ])
        .args(["--gateway-tcp", &format!("127.0.0.1:{tcp}")])
        .args(["--gateway-quic", &format!("127.0.0.1:{quic}")])
        .args(["--gateway-http", &format!("http://127.0.0.1:{legacy}")])
        .arg("--ca-cert")
        .arg(&cert)
        // 1,000 units; every unit's traffic within the gateway's per-unit rate limit.
        .args(["--tcp", "400", "--quic", "400", "--http", "200"])
        .args([
            "--periodic-secs",
            "5",
            "--status-secs",
            "5",
            "--telemetry-secs",
            "2",
        ])
        .args(["--event-secs", "5", "--mo-senders", "0", "--mo-secs", "0"])
        .args(["--mt-rate", "100", "--mt-secs", "2", "--storm-percent", "5"])
        .args(["--server-pid", &server.0.id().to_string()])
        .args(["--verify-secs", "60", "--max-secs", "180", "--quiet"])
        .arg("--units-csv")
        .arg(&units_csv)
        .arg("--chart")
        .arg(&chart)
        .arg("--out")
        .arg(&summary)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "load-test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "load-test took {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout)
    );
    let s: Json = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("summary has no {k}: {s}"))
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(n("connected"), 800, "framed units connected; {stderr}");
    assert!(n("mo_sent") > 3_000, "MO sent: {}", n("mo_sent"));
    assert_eq!(n("mo_acknowledged"), n("mo_sent"), "{stderr}");
    assert_eq!(n("mo_lost"), 0, "MO lost; {stderr}");
    assert_eq!(n("mo_duplicated"), 0, "MO duplicated; {stderr}");
    assert_eq!(n("mo_stored"), n("mo_acknowledged"), "{stderr}");
    assert_eq!(n("telemetry_stored"), n("telemetry_acknowledged"));
    assert_eq!(
        n("mt_accepted"),
        200,
        "every payment command accepted; {stderr}"
    );
    assert_eq!(n("mt_delivered"), n("mt_accepted"), "MT delivered");
    assert_eq!(n("mt_lost"), 0);
    assert_eq!(n("mt_acknowledged"), n("mt_accepted"), "replies recorded");
    assert!(
        s["rss_peak_kib"].as_u64().unwrap() > 0,
        "server RSS sampled"
    );
    assert!(
        !s["series"].as_array().unwrap().is_empty(),
        "per-second series"
    );
    // The units it provisioned are listed for the next run, and the chart is written.
    let listed = std::fs::read_to_string(&units_csv).unwrap().lines().count();
    assert_eq!(listed, 1_001, "header + one line per unit");
    let page = std::fs::read_to_string(&chart).unwrap();
    assert!(
        page.contains("<svg") && !page.contains("<script"),
        "self-contained chart"
    );
}
