//! The load test in target mode against the real `smartsolar serve` (embedded defaults:
//! SQLite, the embedded time-series store, the disk bus): 1,000 units provisioned through the
//! API, ~10 s of traffic over TLS-TCP, QUIC and legacy HTTP, payment commands through the
//! API, a reconnect storm. The framed units speak protocol version 2: an MO counts as
//! acknowledged when the gateway's acknowledgement covers it. Fails on any acknowledged MO
//! lost (not stored) or any MO duplicated (database and time-series store), on MO left
//! unacknowledged, and on any command not delivered or not acknowledged, read from the
//! summary JSON.

use std::process::Stdio;

mod common;
use common::{free_port, run_load_test, smartsolar_command, Process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_units_against_serve_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp, quic, legacy) = (free_port(), free_port(), free_port(), free_port());
    let child = smartsolar_command("serve", dir.path(), (http, tcp, quic), Some(legacy))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Process(child);
    let base = format!("http://127.0.0.1:{http}");
    server.wait_ready(&reqwest::Client::new(), &base).await;

    let (units_csv, chart) = (dir.path().join("units.csv"), dir.path().join("chart.html"));
    let cert = dir.path().join("data").join("gateway-cert.pem");
    let s = run_load_test(
        dir.path(),
        &[
            ("--api", base.clone()),
            ("--gateway-tcp", format!("127.0.0.1:{tcp}")),
            ("--gateway-quic", format!("127.0.0.1:{quic}")),
            ("--gateway-http", format!("http://127.0.0.1:{legacy}")),
            ("--ca-cert", cert.display().to_string()),
            ("--server-pid", server.0.id().to_string()),
            ("--units-csv", units_csv.display().to_string()),
            ("--chart", chart.display().to_string()),
        ],
    )
    .await;
    // The units speak protocol version 2, so "acknowledged" is the gateway's acknowledgement
    // (after the disk bus's fsync), not a write that succeeded; `run_load_test` has checked
    // that every acknowledged MO is stored (lost = acknowledged and not stored = 0).
    assert_eq!(s["protocol"], 2, "version-2 units: {s}");
    assert_eq!(
        s["mo_unacknowledged"], 0,
        "every unit's window acknowledged before it left: {s}"
    );
    assert_eq!(s["mo_lost"], 0);
    assert!(
        s["burst_mo_per_sec"].as_f64().is_some(),
        "the burst rate is reported"
    );
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
