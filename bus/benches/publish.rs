//! Acknowledged publishes per second: the durable disk bus (fsync on) against
//! the in-process bus, in the same run, at several numbers of concurrent
//! publishers (each like one unit connection waiting for its acknowledgement).
//!
//! `cargo bench -p smartsolar-bus --bench publish` (env `BUS_BENCH_DIR` picks the
//! directory of the disk bus, default a temporary directory under /var/tmp;
//! `BUS_BENCH_MESSAGES` the messages per run, default 200000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Bus, DiskBus, DiskBusConfig, MemoryBus, MemoryBusConfig};

/// A typical MO envelope is about 200 bytes.
const PAYLOAD: usize = 200;

async fn run(bus: Arc<dyn Bus>, publishers: usize, total: usize) -> (f64, Duration) {
    // One consumer group drains and commits, as ingest does, so the in-process
    // bus never waits for room.
    let mut consumer = bus.subscribe(&["RTC-MO"], "ingest").await.unwrap();
    let drain = tokio::spawn(async move {
        for _ in 0..total {
            let d = consumer.recv().await.unwrap();
            consumer.commit(&d).await.unwrap();
        }
    });
    let each = total / publishers;
    let started = Instant::now();
    let mut joins = Vec::with_capacity(publishers);
    for p in 0..publishers {
        let bus = Arc::clone(&bus);
        joins.push(tokio::spawn(async move {
            let key = format!("8600000000{p:05}");
            let payload = vec![p as u8; PAYLOAD];
            let mut worst = Duration::ZERO;
            for _ in 0..each {
                let t = Instant::now();
                bus.publish("RTC-MO", key.as_bytes(), &payload)
                    .await
                    .unwrap();
                worst = worst.max(t.elapsed());
            }
            worst
        }));
    }
    let mut worst = Duration::ZERO;
    for j in joins {
        worst = worst.max(j.await.unwrap());
    }
    let rate = (each * publishers) as f64 / started.elapsed().as_secs_f64();
    // The remainder of total / publishers was never published.
    drop(drain);
    (rate, worst)
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: then only a smoke run
    // (that it works), not the measurement, so the test suite does not spend minutes here.
    let measuring = std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("BUS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 200_000 } else { 2_000 });
    let base = std::env::var("BUS_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("messages/run {total}, payload {PAYLOAD} B, fsync on");
    println!(
        "{:>11} {:>14} {:>14} {:>14}",
        "publishers", "memory msg/s", "disk msg/s", "disk worst ms"
    );
    for publishers in [1usize, 100, 1_000, 4_000, 10_000] {
        let runs = if publishers == 1 { total / 100 } else { total };
        if publishers > runs {
            continue; // fewer messages than publishers (the smoke run): nothing to measure
        }
        rt.block_on(async {
            let memory: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig::default()));
            let (mem, _) = run(memory, publishers, runs).await;
            let dir = tempfile::tempdir_in(&base).unwrap();
            let disk = DiskBus::open(dir.path(), DiskBusConfig::default()).unwrap();
            let (rate, worst) = run(Arc::new(disk.clone()), publishers, runs).await;
            println!(
                "{publishers:>11} {mem:>14.0} {rate:>14.0} {:>14.1}   ({} syncs)",
                worst.as_secs_f64() * 1e3,
                disk.batches()
            );
        });
    }
}
