//! Alert analysis, with a baseline measured in the same run so the figure
//! reads as a ratio.
//!
//! - **alerts_rules_pass**: the CPU side of one pass over 50,000 units, each
//!   with a week of 5-minute telemetry (2016 samples × state of charge,
//!   voltage, temperature; ≈ 300 M values held in memory as `f32`): the
//!   window aggregation of every unit, then all eight rules and the
//!   raise/clear decision. What is *not* in this figure: reading the
//!   telemetry from a store and the database reads and writes.
//!   Baseline: summing the same values in one plain scan.
//! - **alerts_engine_pass**: the real [`AlertEngine::run_pass`] (bucket
//!   lease, SQLite reads, one embedded-store query per unit over the full
//!   week, history rows, alerts, outbox) over 1,000 units with the same
//!   week of telemetry in the embedded store, eight alert types each, so
//!   the per-unit I/O cost can be read off and scaled. Baseline: the same
//!   telemetry reads alone (each unit's week, raw, from the same store).
//!
//! Sizes: `SMARTSOLAR_BENCH_ALERT_UNITS` (default 50,000) and
//! `SMARTSOLAR_BENCH_ALERT_ENGINE_UNITS` (default 1,000). Run without
//! `--bench` (as `cargo test --benches` does) both shrink to a smoke size.
//!
//! Run: `cargo bench -p smartsolar-bench --bench alerts -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, NaiveDateTime};
use control_plane::alerts::rules::{
    self, Action, AlertState, Credit, RuleKind, TelemetryStats, UnitSnapshot,
};
use control_plane::alerts::AlertEngine;
use control_plane::app::AppState;
use control_plane::config::{AlertThresholds, AlertsConfig};
use control_plane::db::Db;
use control_plane::ControlPlaneConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ingest::tsdb::embedded::Embedded;
use ingest::tsdb::{FieldValue, Fields, Point, Query as TsQuery, TimeSeries};
use sea_query::{Alias, Query};
use smartsolar_bench::imei;

/// A week at 5 minutes.
const SAMPLES: usize = 7 * 24 * 12;
const STEP_SECS: i64 = 300;

fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn size(var: &str, full: usize, tiny: usize) -> usize {
    if smoke() {
        return tiny;
    }
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(full)
}

fn thresholds() -> AlertThresholds {
    AlertThresholds {
        // The whole week is read and aggregated.
        telemetry_window_secs: 7 * 86_400,
        ..AlertThresholds::default()
    }
}

/// Sample `i` of unit `u`: mostly healthy, every 10th unit low on charge,
/// every 25th running hot.
fn sample(u: usize, i: usize) -> (f32, f32, f32) {
    let wave = (i % 288) as f32 / 288.0;
    let soc = if u.is_multiple_of(10) {
        12.0
    } else {
        40.0 + 50.0 * wave
    };
    let volts = 12.0 + wave;
    let temp = if u.is_multiple_of(25) {
        70.0
    } else {
        25.0 + 15.0 * wave
    };
    (soc, volts, temp)
}

/// One column per field, units back to back.
struct Columns {
    soc: Vec<f32>,
    volts: Vec<f32>,
    temp: Vec<f32>,
}

fn columns(units: usize) -> Columns {
    let n = units * SAMPLES;
    let mut c = Columns {
        soc: Vec::with_capacity(n),
        volts: Vec::with_capacity(n),
        temp: Vec::with_capacity(n),
    };
    for u in 0..units {
        for i in 0..SAMPLES {
            let (s, v, t) = sample(u, i);
            c.soc.push(s);
            c.volts.push(v);
            c.temp.push(t);
        }
    }
    c
}

fn at(secs: i64) -> NaiveDateTime {
    chrono::DateTime::UNIX_EPOCH.naive_utc() + Duration::seconds(secs)
}

/// The rules side of one pass: aggregate each unit's window, run all eight
/// rules, decide. Returns how many alerts would be raised.
fn rules_pass(c: &Columns, units: usize, t: &AlertThresholds, now: NaiveDateTime) -> usize {
    let mut raised = 0;
    let value = |v: &f32| Some(f64::from(*v));
    for u in 0..units {
        let r = u * SAMPLES..(u + 1) * SAMPLES;
        // Straight from the columns: nothing copied or allocated per unit.
        let stats = TelemetryStats::aggregate(
            c.soc[r.clone()].iter().map(value),
            c.volts[r.clone()].iter().map(value),
            c.temp[r].iter().map(value),
            std::iter::empty(),
            t,
        );
        let snapshot = UnitSnapshot {
            tamper_switch_enabled: true,
            last_seen: Some(now - Duration::hours((u % 100) as i64)),
            online: false,
            dcm_enabled: true,
            credit: Some(Credit {
                balance: (u % 50) as i64 * 3600,
                expected_expiry: now + Duration::hours((u % 50) as i64),
            }),
            telemetry: stats,
            dead_letters: (u % 7) as u32,
            failed_mts: (u % 5) as u32,
        };
        for kind in RuleKind::ALL {
            let verdict = rules::evaluate(kind, t, &snapshot, now);
            if let Action::Raise(_) = rules::decide(verdict, AlertState::default(), None, true, now)
            {
                raised += 1;
            }
        }
    }
    raised
}

fn rules_bench(c: &mut Criterion) {
    let units = size("SMARTSOLAR_BENCH_ALERT_UNITS", 50_000, 100);
    let built = Instant::now();
    let data = columns(units);
    eprintln!(
        "alerts: {units} units × {SAMPLES} samples × 3 fields built in {:.1?}",
        built.elapsed()
    );
    let t = thresholds();
    let now = at(1_800_000_000);
    let mut g = c.benchmark_group("alerts_rules_pass");
    g.sample_size(10);
    g.throughput(Throughput::Elements(units as u64));
    g.bench_function("baseline_plain_scan", |b| {
        b.iter(|| {
            let sum: f64 = data
                .soc
                .iter()
                .chain(&data.volts)
                .chain(&data.temp)
                .map(|v| f64::from(*v))
                .sum();
            black_box(sum)
        })
    });
    g.bench_function("aggregate_and_rules", |b| {
        b.iter(|| black_box(rules_pass(&data, units, &t, now)))
    });
    g.finish();
}

/// Ids of the bench's product type, state type and first alert type (clear
/// of the reference data).
const TYPE_ID: i64 = 9_001;

fn a(n: &str) -> Alias {
    Alias::new(n)
}

/// A SQLite database with `units` products, eight alert types linked to
/// them all, and a state engine-ready; plus the embedded store with a week
/// of telemetry per unit ending at `end`.
async fn engine_fixture(
    units: usize,
    end: NaiveDateTime,
) -> (AppState, Arc<Embedded>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("alerts-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = Db::connect(&format!("sqlite://{}/bench.db", dir.display()), 4)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let when = end - Duration::days(30);
    let mut tx = db.begin().await.unwrap();
    let insert = |table: &str, cols: &[&str], vals: Vec<sea_query::SimpleExpr>| {
        Query::insert()
            .into_table(a(table))
            .columns(cols.iter().map(|c| a(c)))
            .values_panic(vals)
            .to_owned()
    };
    tx.execute(&insert(
        "product_type",
        &["product_type_id", "name"],
        vec![TYPE_ID.into(), "alerts-bench".into()],
    ))
    .await
    .unwrap();
    tx.execute(&insert(
        "state_type",
        &["state_type_id", "name"],
        vec![TYPE_ID.into(), "alerts-bench".into()],
    ))
    .await
    .unwrap();
    for (i, kind) in RuleKind::ALL.iter().enumerate() {
        let id = TYPE_ID + i as i64;
        tx.execute(&insert(
            "alert_type",
            &[
                "alert_type_id",
                "name",
                "version",
                "status",
                "analysis_frequency",
                "active",
                "label",
            ],
            vec![
                id.into(),
                kind.as_str().into(),
                1.into(),
                "auto_clear".into(),
                at(3600).into(),
                true.into(),
                kind.as_str().into(),
            ],
        ))
        .await
        .unwrap();
        tx.execute(&insert(
            "alert_type_product_type_linker",
            &["alert_type_id", "product_type_id"],
            vec![id.into(), TYPE_ID.into()],
        ))
        .await
        .unwrap();
        tx.execute(&insert(
            "alert_type_state_type_linker",
            &["alert_type_id", "state_type_id"],
            vec![id.into(), TYPE_ID.into()],
        ))
        .await
        .unwrap();
    }
    for u in 0..units {
        let imei = imei(u);
        tx.execute(&insert(
            "product",
            &[
                "product_imei",
                "current_enable_flag",
                "desired_enable_flag",
                "current_tamper_flag",
                "desired_tamper_flag",
                "imsi",
                "product_type_id",
                "serial_number",
                "rtc_enabled_flag",
                "dcm_enabled_flag",
                "is_payg",
                "latest_rtc_mo_status_report_time",
            ],
            vec![
                imei.as_str().into(),
                true.into(),
                true.into(),
                true.into(),
                true.into(),
                format!("6{u:014}").into(),
                TYPE_ID.into(),
                format!("BENCH-{u}").into(),
                true.into(),
                false.into(),
                true.into(),
                (end - Duration::hours((u % 100) as i64)).into(),
            ],
        ))
        .await
        .unwrap();
        let state_id = u as i64 + 1;
        tx.execute(&insert(
            "state",
            &[
                "state_id",
                "product_imei",
                "prev_state_type",
                "current_state_type",
                "created_at",
            ],
            vec![
                state_id.into(),
                imei.as_str().into(),
                TYPE_ID.into(),
                TYPE_ID.into(),
                when.into(),
            ],
        ))
        .await
        .unwrap();
        let link = Query::update()
            .table(a("product"))
            .value(a("latest_state_id"), state_id)
            .and_where(sea_query::Expr::col(a("product_imei")).eq(imei.as_str()))
            .to_owned();
        tx.execute(&link).await.unwrap();
    }
    tx.commit().await.unwrap();
    let store = Arc::new(Embedded::in_memory());
    let end_s = end.and_utc().timestamp();
    for u in 0..units {
        let imei = imei(u);
        let points: Vec<Point> = (0..SAMPLES)
            .map(|i| {
                let (s, v, t) = sample(u, i);
                Point {
                    measurement: "telemetry".into(),
                    imei: imei.clone(),
                    tags: Default::default(),
                    fields: vec![
                        (
                            "state_of_charge_percent".into(),
                            FieldValue::Float(f64::from(s)),
                        ),
                        ("voltage".into(), FieldValue::Float(f64::from(v))),
                        ("temperature".into(), FieldValue::Float(f64::from(t))),
                    ],
                    time_ns: (end_s - (SAMPLES - i) as i64 * STEP_SECS) * 1_000_000_000,
                }
            })
            .collect();
        store.write(&points).await.unwrap();
    }
    let state = AppState::new(db, ControlPlaneConfig::default()).with_timeseries(store.clone());
    (state, store, dir)
}

fn engine_bench(c: &mut Criterion) {
    let units = size("SMARTSOLAR_BENCH_ALERT_ENGINE_UNITS", 1_000, 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let end = at(1_800_000_000);
    let built = Instant::now();
    let (state, store, dir) = rt.block_on(engine_fixture(units, end));
    eprintln!(
        "alerts: engine fixture of {units} units built in {:.1?}",
        built.elapsed()
    );
    let engine = AlertEngine::new(
        state,
        AlertsConfig {
            thresholds: thresholds(),
            ..AlertsConfig::default()
        },
        "bench",
    );
    let mut g = c.benchmark_group("alerts_engine_pass");
    g.sample_size(10);
    g.throughput(Throughput::Elements(units as u64));
    // Baseline: the same telemetry reads alone (each unit's week, the
    // three fields, raw), without the database or the rules.
    g.bench_function("baseline_telemetry_reads", |b| {
        b.iter(|| {
            let mut values = 0;
            for u in 0..units {
                let mut q = TsQuery::new("telemetry", &imei(u), 0, i64::MAX);
                q.fields = Fields::List(
                    ["state_of_charge_percent", "voltage", "temperature"]
                        .map(String::from)
                        .to_vec(),
                );
                values += store.query_sync(&q).unwrap().times.len();
            }
            black_box(values)
        })
    });
    // Each pass one analysis_frequency later, so every pair is due again.
    let mut pass = 0i64;
    g.bench_function("run_pass", |b| {
        b.iter_custom(|iters| {
            let mut total = StdDuration::ZERO;
            for _ in 0..iters {
                pass += 1;
                let now = end + Duration::hours(pass);
                let started = Instant::now();
                let r = rt.block_on(engine.run_pass(now)).unwrap();
                total += started.elapsed();
                assert_eq!(r.units_analysed, units as u64, "{r:?}");
            }
            total
        })
    });
    g.finish();
    drop(engine);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, rules_bench, engine_bench);
criterion_main!(benches);
