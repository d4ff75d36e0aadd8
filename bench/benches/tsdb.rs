//! Criterion benches for the time-series store, with baselines measured in
//! the same run so results read as ratios:
//!
//! - **ingest**: field values per second written to the embedded store (in
//!   memory, with its log without fsync, and as shipped with fsync on),
//!   against encoding the same points as InfluxDB line protocol (the least
//!   any backend does).
//!   Target: ≥ 1,000,000 field values/s for the embedded store.
//! - **query**: 10,000 units loaded; one unit holds 7 days at 1-minute
//!   resolution (10,080 rows × 8 fields); a 7-day query downsampled to 1 h
//!   (mean) for that unit. Baseline: summing the same number of `f64`s from
//!   a plain `Vec`. Target: < 50 ms.
//!
//! Quick mode (default) gives the other 9,999 units 1 day at 10-minute
//! resolution; `SMARTSOLAR_BENCH_FULL=1` gives every unit the full 7 days at
//! 1 minute with 2 fields (≈ 200 M values, several GB of RAM, long load).
//!
//! Run: `cargo bench -p smartsolar-bench --bench tsdb -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ingest::tsdb::embedded::{Embedded, EmbeddedConfig};
use ingest::tsdb::{line, Aggregate, Downsample, FieldValue, Fields, Point, Query};
use smartsolar_bench::{imei, TSDB_FIELDS};

const MIN: i64 = 60_000_000_000;
const H: i64 = 60 * MIN;
const DAY: i64 = 24 * H;
const T0: i64 = 1_700_000_000_000_000_000;
/// `n` telemetry points of one unit, one minute apart, `nf` fields each.
fn points(unit: &str, start: i64, step: i64, n: usize, nf: usize) -> Vec<Point> {
    (0..n)
        .map(|i| Point {
            measurement: "telemetry".into(),
            imei: unit.to_owned(),
            tags: BTreeMap::new(),
            fields: TSDB_FIELDS[..nf]
                .iter()
                .enumerate()
                .map(|(k, f)| {
                    let v = if *f == "pulse_count" || *f == "state_of_charge_percent" {
                        FieldValue::Int((i + k) as i64)
                    } else {
                        FieldValue::Float(12.0 + (i % 100) as f64 * 0.01 + k as f64)
                    };
                    ((*f).to_owned(), v)
                })
                .collect(),
            time_ns: start + i as i64 * step,
        })
        .collect()
}

/// A write batch as the engine makes it: 512 messages from 64 units.
fn batch(round: usize) -> Vec<Point> {
    let mut out = Vec::with_capacity(512);
    for u in 0..64 {
        out.extend(points(
            &imei(u),
            T0 + (round * 8) as i64 * MIN,
            MIN,
            8,
            TSDB_FIELDS.len(),
        ));
    }
    out
}

fn ingest(c: &mut Criterion) {
    let b = batch(0);
    let values: usize = b.iter().map(|p| p.fields.len()).sum();
    let mut g = c.benchmark_group("tsdb_ingest");
    g.throughput(Throughput::Elements(values as u64));
    g.bench_function("baseline_line_protocol_encode", |bench| {
        bench.iter(|| black_box(line::encode(black_box(&b)).unwrap().len()))
    });
    let mem = Embedded::in_memory();
    let mut round = 0usize;
    g.bench_function("embedded_memory", |bench| {
        bench.iter_batched(
            || {
                round += 1;
                batch(round)
            },
            |p| mem.write_sync(&p).unwrap(),
            BatchSize::LargeInput,
        )
    });
    let dir = std::env::temp_dir().join(format!("tsdb-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let logged = Embedded::open(EmbeddedConfig {
        data_dir: Some(dir.clone()),
        fsync: false,
        ..Default::default()
    })
    .unwrap();
    let mut round = 0usize;
    g.bench_function("embedded_log_no_fsync", |bench| {
        bench.iter_batched(
            || {
                round += 1;
                batch(round)
            },
            |p| logged.write_sync(&p).unwrap(),
            BatchSize::LargeInput,
        )
    });
    drop(logged);
    let _ = std::fs::remove_dir_all(&dir);
    // As `serve` ships it: fsync on (one flush per batch here, one writer).
    let shipped_dir = dir.with_extension("shipped");
    let _ = std::fs::remove_dir_all(&shipped_dir);
    let shipped = Embedded::open(EmbeddedConfig {
        data_dir: Some(shipped_dir.clone()),
        ..Default::default()
    })
    .unwrap();
    g.bench_function("embedded_shipped_fsync", |bench| {
        bench.iter_batched(
            || {
                round += 1;
                batch(round)
            },
            |p| shipped.write_sync(&p).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
    drop(shipped);
    let _ = std::fs::remove_dir_all(&shipped_dir);
}

fn query(c: &mut Criterion) {
    let full = std::env::var("SMARTSOLAR_BENCH_FULL").is_ok_and(|v| v == "1");
    let db = Embedded::in_memory();
    let loaded = Instant::now();
    let week = 7 * 24 * 60;
    // The unit under query: 7 days at 1 minute, 8 fields.
    for chunk in points(&imei(0), T0, MIN, week, TSDB_FIELDS.len()).chunks(4096) {
        db.write_sync(chunk).unwrap();
    }
    for u in 1..10_000 {
        let p = if full {
            points(&imei(u), T0, MIN, week, 2)
        } else {
            points(&imei(u), T0, 10 * MIN, 144, 4)
        };
        db.write_sync(&p).unwrap();
    }
    eprintln!(
        "tsdb query bench: {} values for 10,000 units loaded in {:.1} s ({})",
        db.value_count(),
        loaded.elapsed().as_secs_f64(),
        if full { "full" } else { "quick" }
    );
    let mut q = Query::new("telemetry", &imei(0), T0, T0 + 7 * DAY - 1);
    q.fields = Fields::All;
    q.downsample = Some(Downsample {
        interval_ns: H,
        function: Aggregate::Mean,
    });
    let r = db.query_sync(&q).unwrap();
    assert_eq!(r.times.len(), 7 * 24 + 1, "buckets");
    assert_eq!(r.columns.len(), TSDB_FIELDS.len());

    let n = week * TSDB_FIELDS.len();
    let plain: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let mut g = c.benchmark_group("tsdb_query_7d_1m_to_1h");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("baseline_sum_same_values", |b| {
        b.iter(|| black_box(plain.iter().sum::<f64>()))
    });
    g.bench_function("embedded_mean_1h_all_fields", |b| {
        b.iter(|| black_box(db.query_sync(black_box(&q)).unwrap().times.len()))
    });
    let mut qm = q.clone();
    qm.downsample = Some(Downsample {
        interval_ns: H,
        function: Aggregate::Median,
    });
    g.bench_function("embedded_median_1h_all_fields", |b| {
        b.iter(|| black_box(db.query_sync(black_box(&qm)).unwrap().times.len()))
    });
    let mut qw = q.clone();
    qw.filter = Some(ingest::tsdb::parse_where("voltage > 12.5 AND current < 12.9").unwrap());
    g.bench_function("embedded_mean_1h_with_where", |b| {
        b.iter(|| black_box(db.query_sync(black_box(&qw)).unwrap().times.len()))
    });
    let mut raw = q.clone();
    raw.downsample = None;
    g.bench_function("embedded_raw_7d_all_fields", |b| {
        b.iter(|| black_box(db.query_sync(black_box(&raw)).unwrap().times.len()))
    });
    g.finish();
}

criterion_group!(benches, ingest, query);
criterion_main!(benches);
