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

/// `load-test run` with `flags` (whitespace-separated) and `paths` (flag, path), bounded to
/// 120 s and quiet, and the summary it wrote to `out`.
fn run_summary(flags: &str, paths: &[(&str, &PathBuf)], out: &PathBuf) -> Summary {
    let mut args = vec!["run".to_owned()];
    args.extend(flags.split_whitespace().map(str::to_owned));
    for (flag, path) in paths {
        args.push((*flag).to_owned());
        args.push(path.to_str().unwrap().to_owned());
    }
    args.extend(["--max-secs", "120", "--quiet", "--out"].map(str::to_owned));
    args.push(out.to_str().unwrap().to_owned());
    load_test(&args.iter().map(String::as_str).collect::<Vec<_>>());
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn smoke_run_then_replay_the_capture() {
    let (capture, summary, replay) = (tmp("capture.jsonl"), tmp("run.json"), tmp("replay.json"));
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let run = run_summary(
        "--tcp 150 --quic 50 --http 20 --periodic-secs 2 --status-secs 1 --telemetry-secs 1 \
         --event-secs 2 --mo-senders 0 --mo-secs 0 --mt-rate 200 --mt-secs 1 --storm-percent 25",
        &[("--capture", &capture)],
        &summary,
    );
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

/// Version-2 units against a gateway on the durable disk bus (fsync on): every MO a unit wrote
/// is acknowledged (the gateway acknowledges only after the bus's group commit).
#[test]
fn v2_units_over_the_disk_bus_get_every_message_acknowledged() {
    let (summary, bus_dir) = (tmp("v2-disk.json"), tmp("v2-disk-bus"));
    let run = run_summary(
        "--protocol 2 --bus disk --tcp 30 --quic 20 --periodic-secs 2 --status-secs 1 \
         --telemetry-secs 0.5 --event-secs 1 --mo-senders 5 --mo-secs 2 --mt-rate 50 --mt-secs 1",
        &[("--data-dir", &bus_dir)],
        &summary,
    );
    assert_eq!((run.protocol, run.bus.as_str()), (2, "disk"), "{run:#?}");
    assert_eq!(run.connected, 50, "{run:#?}");
    assert!(run.mo_sent > 500, "MO sent: {run:#?}");
    assert_eq!(
        run.mo_acknowledged, run.mo_sent,
        "every MO acknowledged: {run:#?}"
    );
    assert!(run.mo_acked_per_sec > 0.0, "{run:#?}");
    assert!(
        run.mo_bus_batches.is_some_and(|b| b > 0),
        "the disk bus synced batches: {run:#?}"
    );
    assert_eq!(run.mt.answered, run.mt.sent, "{run:#?}");
    assert_eq!(
        (
            run.errors.connect,
            run.errors.send,
            run.errors.closed_by_gateway,
            run.errors.http
        ),
        (0, 0, 0, 0),
        "{run:#?}"
    );
    // The bus lives in the given directory (segments written there).
    assert!(bus_dir.join("LOCK").exists());
    let _ = std::fs::remove_file(summary);
    let _ = std::fs::remove_dir_all(bus_dir);
}
