//! The embedded time-series store at scale, as shipped (`fsync` on, default
//! head size), on disk: ingest rate, bytes per stored value, RSS, read
//! latencies and open time, each beside a baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p smartsolar-tsdb-scale -- \
//!     [--units 1000] [--days 30] [--step-secs 60] [--writers 4] [--dir /var/tmp/tsdb-scale]
//! ```
//!
//! The data is realistic telemetry: per unit, eight fields sampled every
//! `step-secs` (`voltage`, `current`, `panel_voltage`, `temperature` as
//! random walks at their sensors' resolution, `state_of_charge_percent`,
//! `fan_rpm`, an `energy_wh` counter, a `load_on` flag), written time-major
//! (the whole fleet at t, then t + step) in batches of 64 units × 8
//! records, as the ingest engine batches them, by `writers` threads.
//! Values stored = units × days × 86400 / step × 8; the default is 1,000 ×
//! 30 days at 1 min = 345.6 M. A billion: `--units 2315 --days 30` (or
//! `--units 100 --days 365 --step-secs 15`... any product).
//!
//! Baselines (same run, same machine):
//! - ingest: the same batches encoded and appended to a plain file with one
//!   `fsync` per batch and `writers` threads (the least a durable store does);
//! - reads: summing as many `f64`s from a `Vec` as the query covers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::tsdb::embedded::{Embedded, EmbeddedConfig};
use ingest::tsdb::{Aggregate, Downsample, FieldValue, Fields, Point, Query};

const S: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * S;
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200 * S;
const FIELDS: usize = 8;

#[derive(Clone)]
struct Args {
    units: usize,
    days: i64,
    step_secs: i64,
    writers: usize,
    dir: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        units: 1_000,
        days: 30,
        step_secs: 60,
        writers: 4,
        dir: PathBuf::from("/var/tmp/tsdb-scale"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--units" => a.units = v.parse().expect("--units"),
            "--days" => a.days = v.parse().expect("--days"),
            "--step-secs" => a.step_secs = v.parse().expect("--step-secs"),
            "--writers" => a.writers = v.parse().expect("--writers"),
            "--dir" => a.dir = v.into(),
            _ => panic!("unknown option {k}"),
        }
    }
    a
}

/// A unit's sensors: random walks at sensor resolution (xorshift, seeded
/// by unit, so every run writes the same data).
struct Unit {
    imei: String,
    rng: u64,
    voltage: i64,
    current: i64,
    panel: i64,
    temp: i64,
    soc: i64,
    fan: i64,
    energy: i64,
}

impl Unit {
    fn new(i: usize) -> Self {
        Self {
            imei: imei(i),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
            voltage: 1_280,
            current: 120,
            panel: 180,
            temp: 300,
            soc: 80,
            fan: 1_200,
            energy: 0,
        }
    }

    fn step(&mut self, lo: i64, hi: i64, x: i64, by: i64) -> i64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let d = (self.rng % 5) as i64 - 2; // -2..=2
        (x + d * by).clamp(lo, hi)
    }

    fn record(&mut self, t: i64) -> Point {
        self.voltage = self.step(1_100, 1_460, self.voltage, 1);
        self.current = self.step(0, 500, self.current, 1);
        self.panel = self.step(0, 220, self.panel, 1);
        self.temp = self.step(150, 450, self.temp, 1);
        self.soc = self.step(0, 100, self.soc, 1).clamp(0, 100);
        self.fan = self.step(0, 3_000, self.fan, 10);
        self.energy += self.current / 10;
        let f = |n: &str, v: FieldValue| (n.to_owned(), v);
        Point {
            measurement: "telemetry".into(),
            imei: self.imei.clone(),
            tags: BTreeMap::new(),
            fields: vec![
                f("voltage", FieldValue::Float(self.voltage as f64 / 100.0)),
                f("current", FieldValue::Float(self.current as f64 / 100.0)),
                f("panel_voltage", FieldValue::Float(self.panel as f64 / 10.0)),
                f("temperature", FieldValue::Float(self.temp as f64 / 10.0)),
                f("state_of_charge_percent", FieldValue::Int(self.soc)),
                f("fan_rpm", FieldValue::Int(self.fan)),
                f("energy_wh", FieldValue::Int(self.energy)),
                f("load_on", FieldValue::Bool(self.current > 100)),
            ],
            time_ns: t,
        }
    }
}

/// The IMEI of simulated unit `i` (15 digits).
fn imei(i: usize) -> String {
    format!("35{i:013}")
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Feeds every batch of the data set to `sink` from `writers` threads
/// (writer `w` owns units `w, w + writers, ...`); returns the elapsed time.
fn drive(a: &Args, sink: impl Fn(&[Point]) + Sync) -> Duration {
    let steps = a.days * DAY / (a.step_secs * S);
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..a.writers {
            let sink = &sink;
            s.spawn(move || {
                let mut units: Vec<Unit> = (w..a.units).step_by(a.writers).map(Unit::new).collect();
                // 8 records of each of 64 units per batch, time-major.
                let mut k = 0;
                while k < steps {
                    let n = (steps - k).min(8);
                    for group in units.chunks_mut(64) {
                        let mut batch = Vec::with_capacity(group.len() * n as usize);
                        for u in group.iter_mut() {
                            for j in 0..n {
                                batch.push(u.record(T0 + (k + j) * a.step_secs * S));
                            }
                        }
                        sink(&batch);
                    }
                    k += n;
                }
            });
        }
    });
    started.elapsed()
}

fn main() {
    let a = args();
    let values = a.units as u64 * (a.days * DAY / (a.step_secs * S)) as u64 * FIELDS as u64;
    println!(
        "tsdb-scale: {} units × {} days every {} s × {FIELDS} fields = {values} values, {} writers, dir {}",
        a.units,
        a.days,
        a.step_secs,
        a.writers,
        a.dir.display()
    );
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).unwrap();

    // Baseline: the same batches to a plain file, one fsync per batch.
    // Bounded to the first 2 days so it does not double the run.
    let base_args = Args {
        days: a.days.min(2),
        ..a.clone()
    };
    let base_values =
        a.units as u64 * (base_args.days * DAY / (a.step_secs * S)) as u64 * FIELDS as u64;
    let file = std::sync::Mutex::new(std::fs::File::create(a.dir.join("baseline.log")).unwrap());
    let base = drive(&base_args, |batch| {
        let mut buf = Vec::with_capacity(batch.len() * 200);
        for p in batch {
            buf.extend_from_slice(p.imei.as_bytes());
            buf.extend_from_slice(&p.time_ns.to_le_bytes());
            for (k, v) in &p.fields {
                buf.extend_from_slice(k.as_bytes());
                buf.extend_from_slice(format!("{v:?}").as_bytes());
            }
        }
        let mut f = file.lock().unwrap();
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
    });
    std::fs::remove_file(a.dir.join("baseline.log")).unwrap();
    println!(
        "baseline  append+fsync per batch: {:.0} values/s ({base_values} values in {:.1} s)",
        base_values as f64 / base.as_secs_f64(),
        base.as_secs_f64()
    );

    // The store, as `serve` ships it.
    let dir = a.dir.join("tsdb");
    let config = EmbeddedConfig {
        data_dir: Some(dir.clone()),
        ..EmbeddedConfig::default()
    };
    println!(
        "store     config: fsync {}, head {} values, compact at {} blocks",
        config.fsync, config.head_values, config.compact_at
    );
    let db = Embedded::open(config.clone()).unwrap();
    let peak = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let took = drive(&a, |batch| {
        db.write_sync(batch).unwrap();
        let add = (batch.len() * FIELDS) as u64;
        let n = written.fetch_add(add, Ordering::Relaxed);
        // RSS sampled once per million values.
        if n / 1_000_000 != (n + add) / 1_000_000 {
            peak.fetch_max(rss_mib() as u64, Ordering::Relaxed);
        }
    });
    println!(
        "store     ingest: {:.0} values/s ({values} values in {:.1} s), peak RSS seen {} MiB",
        values as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        peak.load(Ordering::Relaxed)
    );
    let rss_after_ingest = rss_mib();
    let blocks_before_flush = db.block_count();
    let disk = db.disk_bytes();
    println!(
        "store     disk (blocks + log, head not flushed): {disk} bytes = {:.3} bytes/value; {blocks_before_flush} blocks; RSS {rss_after_ingest:.0} MiB",
        disk as f64 / values as f64
    );

    // Reads of one unit.
    let unit = imei(a.units / 2);
    let end = T0 + a.days * DAY - 1;
    let read = |db: &Embedded, days: i64, every: i64, f: Aggregate| {
        let mut q = Query::new("telemetry", &unit, end - days * DAY + 1, end);
        q.fields = Fields::List(vec!["voltage".into()]);
        q.downsample = Some(Downsample {
            interval_ns: every,
            function: f,
        });
        // The first read opens the blocks it needs (a cold start); the best of
        // the next four finds them open, as a console or the alert engine
        // reading the same units again does.
        let t = Instant::now();
        let rows = db.query_sync(&q).unwrap().times.len();
        let first = t.elapsed();
        let mut best = Duration::MAX;
        for _ in 0..4 {
            let t = Instant::now();
            std::hint::black_box(db.query_sync(&q).unwrap());
            best = best.min(t.elapsed());
        }
        Reading { first, best, rows }
    };
    let baseline_sum = |n: usize| {
        let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let t = Instant::now();
        let s: f64 = std::hint::black_box(&v).iter().sum();
        std::hint::black_box(s);
        t.elapsed()
    };
    let per_day = (DAY / (a.step_secs * S)) as usize;
    for (label, days, every) in [
        ("7 days, 1 h mean", 7.min(a.days), 3_600 * S),
        ("whole range, 1 d mean", a.days, DAY),
    ] {
        let r = read(&db, days, every, Aggregate::Mean);
        println!(
            "read      {label}: {r}; baseline sum of {} f64: {:.3} ms",
            per_day * days as usize,
            baseline_sum(per_day * days as usize).as_secs_f64() * 1e3
        );
    }

    // Restart without a flush, as after kill -9: the head's log is replayed.
    drop(db);
    let t = Instant::now();
    let mut db = Embedded::open(config.clone()).unwrap();
    println!(
        "open      after drop without flush: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    db.flush().unwrap();
    let blocks = db.disk_bytes();
    println!(
        "store     disk after flushing the head: {blocks} bytes = {:.3} bytes/value, {} blocks; RSS {:.0} MiB",
        blocks as f64 / values as f64,
        db.block_count(),
        rss_mib()
    );
    // The flusher's hourly pass, as a running store has done by the time
    // these days are read: closed days merged into one block each, and their
    // daily rollups in a file per month.
    let t = Instant::now();
    db.maintain_now().unwrap();
    let disk = db.disk_bytes();
    println!(
        "store     hourly pass (closed days merged, months of daily rollups written): {:.0} ms; disk {disk} bytes = {:.3} bytes/value, {} blocks",
        t.elapsed().as_secs_f64() * 1e3,
        disk as f64 / values as f64,
        db.block_count()
    );
    let reads = [
        ("7 days, 1 h mean", 7.min(a.days), 3_600 * S),
        ("whole range, 1 d mean", a.days, DAY),
    ];
    for (label, days, every) in reads {
        let r = read(&db, days, every, Aggregate::Mean);
        println!("read      {label}, all in blocks: {r}");
    }
    // Same-run baselines of the reads: the same files with none kept open
    // (every read opens its files and parses their footers), and without the
    // daily level (whole days from each day's hourly rollups, as before it).
    for (baseline, config) in [
        (
            "no file kept open",
            EmbeddedConfig {
                open_blocks: 0,
                ..config.clone()
            },
        ),
        (
            "no daily rollups, hourly ones",
            EmbeddedConfig {
                daily_rollups: false,
                ..config.clone()
            },
        ),
    ] {
        drop(db);
        db = Embedded::open(config).unwrap();
        for (label, days, every) in reads {
            let r = read(&db, days, every, Aggregate::Mean);
            println!("read      {label}, all in blocks, {baseline} (baseline): {r}");
        }
    }
}

/// One read, timed cold and warm.
struct Reading {
    /// The first read of the query.
    first: Duration,
    /// The best of four more.
    best: Duration,
    rows: usize,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "first {:.2} ms, then best {:.2} ms ({} rows)",
            self.first.as_secs_f64() * 1e3,
            self.best.as_secs_f64() * 1e3,
            self.rows
        )
    }
}
