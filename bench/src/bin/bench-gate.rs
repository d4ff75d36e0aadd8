//! `bench-gate`: the hot paths counted in instructions under valgrind, compared with a baseline
//! committed in the repository (`bench/baseline.json`). Wall time is noisy on shared CI
//! machines; instruction counts are not (to a fraction of a percent).
//!
//! ```text
//! bench-gate gate [--baseline bench/baseline.json] [--update] [--threshold 0.25]
//! bench-gate run <case> <iterations>     # what valgrind runs
//! bench-gate list
//! ```
//!
//! `gate` runs every case twice under `valgrind --tool=cachegrind --cache-sim=no` (a short and a
//! long run of the same setup) and takes `(Ir(long) − Ir(short)) / (iterations difference)`:
//! process start, fixture setup and valgrind's own start cancel out, leaving the instructions of
//! one iteration. It fails when a case is more than `threshold` (default 25 %) above its
//! baseline; `--update` writes the measured figures as the new baseline instead.
//! `scripts/bench-gate.sh` builds this binary in release and calls `gate`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use codec::mo::TelemetryBatch;
use codec::{decode_mo, encode_mo, frame, MoMessage};
use control_plane::catalogue::Catalogue;
use control_plane::query;
use ingest::tsdb::embedded::Embedded;
use ingest::tsdb::{line, FieldValue, Point};
use sea_query::PostgresQueryBuilder;
use serde::{Deserialize, Serialize};
use smartsolar_bench::{
    imei, status_report, PRODUCT_QUERY, PRODUCT_QUERY_PAGE, PRODUCT_QUERY_VIEWER, TSDB_FIELDS,
};

/// One measured case: name, what it measures, iterations of the short and the long run.
struct Case {
    name: &'static str,
    what: &'static str,
    short: u64,
    long: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "codec_decode_status",
        what: "decode one MO status report (50 B CBOR)",
        short: 1_000,
        long: 21_000,
    },
    Case {
        name: "codec_decode_telemetry",
        what: "decode one telemetry batch (2 records x 6 values) and read every value",
        short: 1_000,
        long: 11_000,
    },
    Case {
        name: "codec_frame_parse_decode",
        what: "find a frame in a buffer and decode its telemetry payload (the gateway per frame)",
        short: 1_000,
        long: 11_000,
    },
    Case {
        name: "codec_encode_status",
        what: "encode one MO status report",
        short: 1_000,
        long: 21_000,
    },
    Case {
        name: "codec_encode_telemetry",
        what: "encode one telemetry batch",
        short: 1_000,
        long: 11_000,
    },
    Case {
        name: "ingest_telemetry_points",
        what: "decoded telemetry batch -> time-series points (the ingest engine per message)",
        short: 1_000,
        long: 6_000,
    },
    Case {
        name: "tsdb_line_encode_batch",
        what: "encode a 512-point, 8-field batch as InfluxDB line protocol",
        short: 2,
        long: 12,
    },
    Case {
        name: "tsdb_embedded_write_batch",
        what: "write a 512-point, 8-field batch into the in-memory embedded store",
        short: 2,
        long: 12,
    },
    Case {
        name: "query_parse_compile_render",
        what: "parse, compile (ENTITY scope) and render a product list filter to PostgreSQL SQL",
        short: 10,
        long: 60,
    },
    Case {
        name: "shard_routing",
        what: "IMEI -> shard/partition (FNV-1a), gateway MT shards and bus partitions",
        short: 10_000,
        long: 110_000,
    },
];

/// Batches prepared for the tsdb cases, whatever the iteration count (so setup is identical
/// in the short and the long run).
const BATCHES: usize = 12;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") if args.len() == 3 => {
            let Ok(n) = args[2].parse::<u64>() else {
                eprintln!("iterations must be a number");
                return ExitCode::from(2);
            };
            match run_case(&args[1], n) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Some("list") => {
            for c in CASES {
                println!("{:<28} {}", c.name, c.what);
            }
            ExitCode::SUCCESS
        }
        Some("gate") => gate(&args[1..]),
        _ => {
            eprintln!(
                "usage: bench-gate gate [--baseline FILE] [--update] [--threshold 0.25] [--only CASE]\n       bench-gate run CASE ITERATIONS\n       bench-gate list"
            );
            ExitCode::from(2)
        }
    }
}

// ------------------------------------------------------------------------------------------
// The cases

/// A write batch as the ingest engine makes it: 64 units x 8 points x 8 fields.
fn tsdb_batch(round: usize) -> Vec<Point> {
    const MIN: i64 = 60_000_000_000;
    let t0 = 1_700_000_000_000_000_000 + (round * 8) as i64 * MIN;
    let mut out = Vec::with_capacity(512);
    for u in 0..64 {
        for i in 0..8 {
            out.push(Point {
                measurement: "telemetry".into(),
                imei: imei(u),
                tags: BTreeMap::new(),
                fields: TSDB_FIELDS
                    .iter()
                    .enumerate()
                    .map(|(k, f)| {
                        let v = if k >= 5 {
                            FieldValue::Int((i + k) as i64)
                        } else {
                            FieldValue::Float(12.0 + i as f64 * 0.01 + k as f64)
                        };
                        ((*f).to_owned(), v)
                    })
                    .collect(),
                time_ns: t0 + i as i64 * MIN,
            });
        }
    }
    out
}

fn run_case(name: &str, n: u64) -> Result<(), String> {
    let status_msg = MoMessage::StatusReport(status_report());
    let telemetry_msg = MoMessage::Telemetry(TelemetryBatch::typical());
    let mut out = Vec::with_capacity(256);
    let mut sink = 0u64;
    match name {
        "codec_decode_status" => {
            let bytes = codec::mo_to_vec(&status_msg);
            for _ in 0..n {
                let m = decode_mo(black_box(&bytes)).map_err(|e| e.to_string())?;
                sink += m.message_type() as u64;
            }
        }
        "codec_decode_telemetry" => {
            let bytes = codec::mo_to_vec(&telemetry_msg);
            for _ in 0..n {
                let Ok(MoMessage::Telemetry(t)) = decode_mo(black_box(&bytes)) else {
                    return Err("not telemetry".into());
                };
                let sum: f64 = t
                    .records
                    .iter()
                    .flat_map(|r| r.values.iter())
                    .map(|v| v.value.as_f64())
                    .sum();
                sink += sum as u64;
            }
        }
        "codec_frame_parse_decode" => {
            let bytes = codec::mo_to_vec(&telemetry_msg);
            let mut framed = Vec::new();
            frame::encode_frame(&bytes, frame::DEFAULT_MAX_FRAME, &mut framed)
                .map_err(|e| e.to_string())?;
            for _ in 0..n {
                if let Ok(frame::Parsed::Frame { payload, .. }) =
                    frame::parse(black_box(&framed), frame::DEFAULT_MAX_FRAME)
                {
                    sink += u64::from(decode_mo(payload).is_ok());
                }
            }
        }
        "codec_encode_status" => {
            for _ in 0..n {
                out.clear();
                encode_mo(black_box(&status_msg), &mut out);
                sink += out.len() as u64;
            }
        }
        "codec_encode_telemetry" => {
            for _ in 0..n {
                out.clear();
                encode_mo(black_box(&telemetry_msg), &mut out);
                sink += out.len() as u64;
            }
        }
        "ingest_telemetry_points" => {
            let bytes = codec::mo_to_vec(&telemetry_msg);
            let Ok(MoMessage::Telemetry(t)) = decode_mo(&bytes) else {
                return Err("not telemetry".into());
            };
            let who = imei(7);
            for _ in 0..n {
                let p = ingest::engine::telemetry_points(black_box(&who), black_box(&t))
                    .map_err(|e| e.to_string())?;
                sink += p.len() as u64;
            }
        }
        "tsdb_line_encode_batch" => {
            let batches: Vec<Vec<Point>> = (0..BATCHES).map(tsdb_batch).collect();
            for i in 0..n as usize {
                let text =
                    line::encode(black_box(&batches[i % BATCHES])).map_err(|e| e.to_string())?;
                sink += text.len() as u64;
            }
        }
        "tsdb_embedded_write_batch" => {
            let batches: Vec<Vec<Point>> = (0..BATCHES).map(tsdb_batch).collect();
            let db = Embedded::in_memory();
            if n as usize > BATCHES {
                return Err(format!("at most {BATCHES} iterations"));
            }
            for b in batches.iter().take(n as usize) {
                db.write_sync(black_box(b)).map_err(|e| e.to_string())?;
            }
            sink += db.value_count() as u64;
        }
        "query_parse_compile_render" => {
            let cat = Catalogue::builtin();
            let product = cat.table("product").ok_or("no product table")?;
            let visibility = PRODUCT_QUERY_VIEWER;
            let page = PRODUCT_QUERY_PAGE;
            for _ in 0..n {
                let spec = query::parse(black_box(PRODUCT_QUERY)).map_err(|e| format!("{e:?}"))?;
                let compiled = query::compile(&cat, product, &spec, &visibility, page)
                    .map_err(|e| format!("{e:?}"))?;
                let (rows, _) = compiled.rows.build(PostgresQueryBuilder);
                let (count, _) = compiled.count.build(PostgresQueryBuilder);
                sink += (rows.len() + count.len()) as u64;
            }
        }
        "shard_routing" => {
            let imeis: Vec<String> = (0..1024).map(imei).collect();
            for i in 0..n as usize {
                let key = black_box(imeis[i & 1023].as_bytes());
                sink += u64::from(bus::partition_for(key, black_box(16)));
            }
        }
        other => return Err(format!("unknown case {other:?} (see `bench-gate list`)")),
    }
    black_box(sink);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The gate

/// `bench/baseline.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Baseline {
    /// How the figures were made (free text, for humans).
    note: String,
    /// Instructions per iteration, by case.
    cases: BTreeMap<String, f64>,
}

struct GateArgs {
    baseline: PathBuf,
    update: bool,
    threshold: f64,
    only: Option<String>,
}

fn parse_gate_args(args: &[String]) -> Result<GateArgs, String> {
    let mut a = GateArgs {
        baseline: PathBuf::from("bench/baseline.json"),
        update: false,
        threshold: 0.25,
        only: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--update" => a.update = true,
            "--baseline" => a.baseline = it.next().ok_or("--baseline FILE")?.into(),
            "--threshold" => {
                a.threshold = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .ok_or("--threshold FRACTION, e.g. 0.25")?;
            }
            "--only" => a.only = Some(it.next().ok_or("--only CASE")?.clone()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Instructions executed by `bench-gate run <case> <n>` under cachegrind.
fn instructions(case: &str, n: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(&exe)
        .args(["run", case, &n.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind (is it installed?): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{case} failed under valgrind:\n{stderr}"));
    }
    // "==123== I   refs:      1,234,567"
    stderr
        .lines()
        .find_map(|l| {
            let rest = l.split("I   refs:").nth(1)?;
            rest.trim().replace(',', "").parse().ok()
        })
        .ok_or_else(|| format!("no instruction count in valgrind's output:\n{stderr}"))
}

fn gate(args: &[String]) -> ExitCode {
    let a = match parse_gate_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let baseline: Baseline = match std::fs::read_to_string(&a.baseline) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", a.baseline.display());
                return ExitCode::from(2);
            }
        },
        Err(_) if a.update => Baseline::default(),
        Err(e) => {
            eprintln!(
                "{}: {e} (create it with `scripts/bench-gate.sh --update`)",
                a.baseline.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut measured = BTreeMap::new();
    let mut failed = Vec::new();
    println!(
        "{:<28} {:>14} {:>14} {:>8}",
        "case", "instr/iter", "baseline", "change"
    );
    for c in CASES {
        if a.only.as_deref().is_some_and(|o| o != c.name) {
            continue;
        }
        let per_iter = match (instructions(c.name, c.short), instructions(c.name, c.long)) {
            (Ok(s), Ok(l)) => l.saturating_sub(s) as f64 / (c.long - c.short) as f64,
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        measured.insert(c.name.to_owned(), per_iter);
        let base = baseline.cases.get(c.name).copied();
        let change = base.map(|b| per_iter / b - 1.0);
        let verdict = match change {
            Some(ch) if ch > a.threshold => {
                failed.push(c.name);
                "  REGRESSION"
            }
            None => "  (new)",
            _ => "",
        };
        println!(
            "{:<28} {:>14.1} {:>14} {:>8}{verdict}",
            c.name,
            per_iter,
            base.map_or("-".into(), |b| format!("{b:.1}")),
            change.map_or("-".into(), |ch| format!("{:+.1}%", ch * 100.0)),
        );
    }
    if a.update {
        let mut cases = baseline.cases;
        cases.extend(measured);
        let new = Baseline {
            note: "instructions per iteration (valgrind cachegrind Ir), release profile; \
                   update with scripts/bench-gate.sh --update"
                .into(),
            cases,
        };
        let text = serde_json::to_string_pretty(&new).expect("serialisable") + "\n";
        if let Err(e) = std::fs::write(&a.baseline, text) {
            eprintln!("{}: {e}", a.baseline.display());
            return ExitCode::from(2);
        }
        println!("baseline written to {}", a.baseline.display());
        return ExitCode::SUCCESS;
    }
    if failed.is_empty() {
        println!("bench gate: ok (threshold +{:.0}%)", a.threshold * 100.0);
        ExitCode::SUCCESS
    } else {
        println!(
            "bench gate: FAILED, more than +{:.0}% instructions: {}",
            a.threshold * 100.0,
            failed.join(", ")
        );
        ExitCode::FAILURE
    }
}
