//! A short load test as part of the test suite: a few hundred units over TCP, QUIC and legacy
//! HTTP for a few seconds (every phase, a reconnect storm, capture mode on), then the capture
//! replayed with cloned units. Checks the summaries, not performance.

use std::path::PathBuf;
use std::process::Command;

use load_test::{ReplaySummary, Summary};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("load-test-smoke-{}-{name}", std::process::id()))
}

fn load_test(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_load-test"))
        .args(args)
        .output()
        .expect("load-test runs");
    assert!(
        out.status.success(),
        "load-test {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn smoke_run_then_replay_the_capture() {
    let (capture, summary, replay) = (tmp("capture.jsonl"), tmp("run.json"), tmp("replay.json"));
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    load_test(&[
        "run",
        "--tcp",
        "150",
        "--quic",
        "50",
        "--http",
        "20",
        "--periodic-secs",
        "2",
        "--status-secs",
        "1",
        "--telemetry-secs",
        "1",
        "--event-secs",
        "2",
        "--mo-senders",
        "0",
        "--mo-secs",
        "0",
        "--mt-rate",
        "200",
        "--mt-secs",
        "1",
        "--storm-percent",
        "25",
        "--capture",
        &s(&capture),
        "--max-secs",
        "120",
        "--quiet",
        "--out",
        &s(&summary),
    ]);
    let run: Summary = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(run.connected, 200, "{run:#?}");
    assert_eq!(run.connect_failures, 0);
    assert!(run.periodic_mo_sent > 200, "periodic MO: {run:#?}");
    assert_eq!(run.mt.sent, 200);
    assert_eq!(run.mt.answered, run.mt.sent, "every MT answered: {run:#?}");
    assert_eq!(run.storm_units, 50);
    assert_eq!(run.storm_reconnected, 50, "storm: {run:#?}");
    assert!(
        run.http.count > 0 && run.errors.http == 0,
        "HTTP units: {run:#?}"
    );
    assert_eq!(
        run.errors.closed_by_gateway + run.errors.send,
        0,
        "{run:#?}"
    );
    assert!(run.handshake.count >= 250 && run.handshake.p50_ms > 0.0);
    assert!(run.rss_idle_kib > 0);

    let frames = gateway::capture::read_capture(&capture).unwrap();
    assert!(
        frames.len() as u64 >= run.periodic_mo_sent,
        "captured everything"
    );
    load_test(&[
        "replay",
        &s(&capture),
        "--speed",
        "20",
        "--clones",
        "2",
        "--max-frames",
        "1000",
        "--transport",
        "tcp",
        "--max-secs",
        "120",
        "--quiet",
        "--out",
        &s(&replay),
    ]);
    let rep: ReplaySummary =
        serde_json::from_str(&std::fs::read_to_string(&replay).unwrap()).unwrap();
    assert_eq!(rep.captured_frames, 1000);
    assert_eq!(rep.sent, 2000, "{rep:#?}");
    assert_eq!(
        rep.received, rep.sent,
        "every replayed frame reached the bus: {rep:#?}"
    );
    assert_eq!(rep.connected, rep.captured_units * 2);
    for p in [capture, summary, replay] {
        let _ = std::fs::remove_file(p);
    }
}
