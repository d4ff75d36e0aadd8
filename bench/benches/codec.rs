//! Criterion benches for the RTC codec: decode and encode of a typical MO status report and
//! telemetry batch, with baselines measured in the same run so results can be read as ratios:
//! a memcpy of the same bytes, and `serde_json` decoding the equivalent JSON.
//!
//! Run: `cargo bench -p smartsolar-bench --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use codec::mo::TelemetryBatch;
use codec::{decode_mo, encode_mo, frame, MoMessage};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use serde::Deserialize;
use smartsolar_bench::status_report;

/// The same status report as JSON, for the serde_json baseline.
const STATUS_JSON: &str = r#"{"time":1518543688,"enabled":true,"tamper_enabled":true,"tamper_triggered":false,"software_version":"hub-stc-6","energy_limit":120.5,"capacity_limit":80.25,"balance":432000,"expected_expiry":1518975688}"#;

#[derive(Deserialize)]
#[allow(dead_code)] // fields are only decoded, never read
struct JsonStatus<'a> {
    time: Option<u64>,
    enabled: Option<bool>,
    tamper_enabled: Option<bool>,
    tamper_triggered: Option<bool>,
    #[serde(borrow)]
    software_version: Option<&'a str>,
    energy_limit: Option<f64>,
    capacity_limit: Option<f64>,
    balance: Option<i64>,
    expected_expiry: Option<u64>,
}

fn bench_status(c: &mut Criterion) {
    let msg = MoMessage::StatusReport(status_report());
    let mut bytes = Vec::new();
    encode_mo(&msg, &mut bytes);
    println!(
        "status report: {} bytes CBOR, {} bytes JSON",
        bytes.len(),
        STATUS_JSON.len()
    );

    let mut g = c.benchmark_group("status_report");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| decode_mo(black_box(&bytes)).map(|m| m.message_type()))
    });
    bench_encode_and_copy(&mut g, &msg, &bytes);
    g.bench_function("baseline_serde_json_decode", |b| {
        b.iter(|| serde_json::from_str::<JsonStatus<'_>>(black_box(STATUS_JSON)).map(|s| s.balance))
    });
    g.finish();
}

fn bench_telemetry(c: &mut Criterion) {
    let msg = MoMessage::Telemetry(TelemetryBatch::typical());
    let mut bytes = Vec::new();
    encode_mo(&msg, &mut bytes);
    let mut framed = Vec::new();
    frame::encode_frame(&bytes, frame::DEFAULT_MAX_FRAME, &mut framed).unwrap();
    println!("telemetry batch: {} bytes CBOR", bytes.len());

    let mut g = c.benchmark_group("telemetry");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| decode_mo(black_box(&bytes)).map(|m| m.message_type()))
    });
    // What ingest does: decode, then read every value.
    g.bench_function("decode_and_iterate", |b| {
        b.iter(|| {
            let Ok(MoMessage::Telemetry(t)) = decode_mo(black_box(&bytes)) else {
                return 0.0;
            };
            t.records
                .iter()
                .flat_map(|r| r.values.iter())
                .map(|v| v.value.as_f64())
                .sum::<f64>()
        })
    });
    // What the gateway does per frame: find the frame, then decode the payload.
    g.bench_function("frame_parse_and_decode", |b| {
        b.iter(
            || match frame::parse(black_box(&framed), frame::DEFAULT_MAX_FRAME) {
                Ok(frame::Parsed::Frame { payload, .. }) => decode_mo(payload).is_ok(),
                _ => false,
            },
        )
    });
    bench_encode_and_copy(&mut g, &msg, &bytes);
    g.finish();
}

/// `encode` of `msg` and its baseline: a memcpy of its encoded `bytes` into a reused buffer.
fn bench_encode_and_copy(g: &mut BenchmarkGroup<'_, WallTime>, msg: &MoMessage<'_>, bytes: &[u8]) {
    g.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            encode_mo(black_box(msg), &mut out);
            out.len()
        })
    });
    g.bench_function("baseline_memcpy", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(bytes));
            out.len()
        })
    });
}

criterion_group!(benches, bench_status, bench_telemetry);
criterion_main!(benches);
